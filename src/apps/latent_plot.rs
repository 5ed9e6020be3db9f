//! `latent-plot`: the latent means of a labeled split, coloured by class.

use std::path::Path;

use super::pca;
use crate::error::Result;
use crate::plot::{Chart, Mark, PALETTE, Series, write_chart};

/// Scatter of the means (N, L), L ≥ 2, projected on their first two principal
/// directions when L > 2; one colour and legend entry per label present,
/// named by `class_names` when known.
pub fn write_latent_plot(
    path: &Path,
    means: &[f32],
    latent: usize,
    labels: &[u8],
    class_names: Option<&[String]>,
    title: &str,
) -> Result<()> {
    assert!(latent >= 2, "a 2-D scatter needs at least two latent dimensions");
    let (xy, x_label, y_label) = if latent == 2 {
        (means.to_vec(), "z0".to_string(), "z1".to_string())
    } else {
        let fitted = pca::fit(means, latent);
        let total: f64 = fitted.variances.iter().sum();
        let share = |k: usize| 100.0 * fitted.variances[k] / total;
        (fitted.project(means, 2), format!("PC1 ({:.0}% of variance)", share(0)), format!("PC2 ({:.0}%)", share(1)))
    };
    let mut present: Vec<u8> = labels.to_vec();
    present.sort_unstable();
    present.dedup();
    let series = present
        .iter()
        .map(|&label| Series {
            name: class_names.and_then(|n| n.get(label as usize)).cloned().unwrap_or_else(|| label.to_string()),
            color: PALETTE[label as usize % PALETTE.len()],
            mark: Mark::Dots,
            points: xy
                .chunks_exact(2)
                .zip(labels)
                .filter(|&(_, &l)| l == label)
                .map(|(p, _)| (p[0] as f64, p[1] as f64))
                .collect(),
        })
        .collect();
    write_chart(path, &Chart { title: title.into(), x_label, y_label, series, ..Chart::default() })
}
