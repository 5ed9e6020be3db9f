//! `latent-plot`: the latent means of a labeled split, coloured by class.

use std::path::{Path, PathBuf};

use super::{Inference, Split, at_least_one, first_pixels, latent_means, pca, split_images, wrote};
use crate::data::DataSet;
use crate::error::{Error, Result};
use crate::model::ModelKind;
use crate::plot::{Chart, Mark, PALETTE, Series, write_chart};

pub struct LatentPlotOptions {
    pub split: Split,
    /// Plot only the first n images [default: all].
    pub n: Option<usize>,
    pub out: PathBuf,
}

impl LatentPlotOptions {
    pub fn check(&self) -> Result<()> {
        self.n.map_or(Ok(()), |n| at_least_one("--n", n))
    }
}

pub struct LatentPlotReport {
    /// Images plotted.
    pub count: usize,
    /// Whether the means were projected on their first two principal directions.
    pub projected: bool,
    pub out: PathBuf,
}

/// Plots the latent means of a labeled split.
pub fn run(model: &mut dyn Inference, data: &DataSet, o: &LatentPlotOptions) -> Result<LatentPlotReport> {
    o.check()?;
    let (latent, kind) = (model.arch().config.latent, model.arch().config.kind);
    if latent < 2 {
        return Err(Error::unsupported(
            "latent-plot",
            format!("a latent of at least 2 dimensions; this run's has {latent}"),
        ));
    }
    let images = split_images(model.arch(), data, o.split)?;
    let Some(labels) = &images.labels else {
        return Err(Error::unsupported(
            "latent-plot",
            format!("labels to colour by, and the data {} has none", data.name),
        ));
    };
    let (x, rows) = first_pixels(images, o.n);
    let classes = super::first_labels(model, images, rows)?;
    let means = latent_means(model, &x, classes.as_deref(), rows)?;
    let what = if kind == ModelKind::Vae { "posterior means" } else { "codes" };
    let title = format!("Latent {what}, {rows} {} images", o.split);
    write_latent_plot(&o.out, &means, latent, &labels[..rows], images.class_names.as_deref(), &title)?;
    Ok(LatentPlotReport { count: rows, projected: latent > 2, out: o.out.clone() })
}

impl std::fmt::Display for LatentPlotReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let projected = if self.projected { ", projected on their first two principal directions" } else { "" };
        writeln!(f, "{} images{projected}", self.count)?;
        wrote(f, &self.out)
    }
}

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
