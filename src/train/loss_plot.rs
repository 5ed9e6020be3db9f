//! `loss.png`: a run's train and test loss per epoch.

use std::path::Path;

use super::EpochRecord;
use crate::error::Result;
use crate::plot::{Chart, Mark, PALETTE, Series, write_chart};

/// Train and test loss per epoch (`loss.png` of a run).
pub fn write_loss_plot(path: &Path, records: &[EpochRecord]) -> Result<()> {
    let curve = |name: &str, color, f: fn(&EpochRecord) -> f64| Series {
        name: name.into(),
        color,
        mark: Mark::LineDots,
        points: records.iter().map(|r| (r.epoch as f64, f(r))).collect(),
    };
    let chart = Chart {
        title: "Loss per epoch".into(),
        x_label: "epoch".into(),
        y_label: "loss".into(),
        series: vec![curve("train", PALETTE[0], |r| r.train.total), curve("test", PALETTE[1], |r| r.test.total)],
        ..Chart::default()
    };
    write_chart(path, &chart)
}
