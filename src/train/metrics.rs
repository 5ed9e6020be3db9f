//! Per-epoch numbers, kept in memory and rewritten to `metrics.csv` each epoch.

use std::fmt::Write;
use std::path::Path;

use crate::engine::LossSums;
use crate::error::Result;
use crate::fsutil::write_atomic;
use crate::model::{Architecture, ModelKind};

/// Losses of one pass over a data set, per sample (VAE: nats summed over
/// pixels; AE: mean per pixel, as Keras reports it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Losses {
    pub total: f64,
    pub recon: f64,
    pub kl: f64,
}

impl Losses {
    pub fn from_sums(arch: &Architecture, sums: LossSums, samples: usize) -> Losses {
        let per = match arch.config.kind {
            ModelKind::Vae => samples as f64,
            ModelKind::Ae => (samples * arch.config.input_dim()) as f64,
        };
        Losses { total: (sums.recon + sums.kl) / per, recon: sums.recon / per, kl: sums.kl / per }
    }
}

#[derive(Clone, Debug)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train: Losses,
    pub test: Losses,
    pub seconds: f64,
    pub samples_per_s: f64,
}

const HEADER: &str = "epoch,train_loss,train_recon,train_kl,test_loss,test_recon,test_kl,seconds,samples_per_s\n";

pub fn write_csv(path: &Path, records: &[EpochRecord]) -> Result<()> {
    let mut csv = String::from(HEADER);
    for r in records {
        let (a, b) = (r.train, r.test);
        writeln!(
            csv,
            "{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.3},{:.0}",
            r.epoch, a.total, a.recon, a.kl, b.total, b.recon, b.kl, r.seconds, r.samples_per_s
        )
        .expect("writing to a String");
    }
    write_atomic(path, csv.as_bytes())
}
