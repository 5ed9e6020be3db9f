//! Per-epoch numbers, kept in memory and rewritten to `metrics.csv` each epoch.

use std::fmt::Write;
use std::path::Path;

use crate::engine::LossSums;
use crate::error::{Error, Result};
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
    /// The learning rate of the epoch's last step.
    pub lr: f32,
}

const HEADER: &str = "epoch,train_loss,train_recon,train_kl,test_loss,test_recon,test_kl,seconds,samples_per_s,lr\n";
/// The header of runs from before schedules, whose rate was constant.
const HEADER_BEFORE_LR: &str =
    "epoch,train_loss,train_recon,train_kl,test_loss,test_recon,test_kl,seconds,samples_per_s\n";

pub fn write_csv(path: &Path, records: &[EpochRecord]) -> Result<()> {
    write_atomic(path, csv(records).as_bytes())
}

/// The text of `metrics.csv`.
pub fn csv(records: &[EpochRecord]) -> String {
    let mut csv = String::from(HEADER);
    for r in records {
        csv.push_str(&row(r));
        csv.push('\n');
    }
    csv
}

/// One record's line of `metrics.csv`, without its line end.
fn row(r: &EpochRecord) -> String {
    let (a, b) = (r.train, r.test);
    let mut row = String::new();
    write!(
        row,
        "{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.6},{:.3},{:.0},{}",
        r.epoch, a.total, a.recon, a.kl, b.total, b.recon, b.kl, r.seconds, r.samples_per_s, r.lr
    )
    .expect("writing to a String");
    row
}

/// The record's columns as `metrics.csv` holds them: each header name with
/// its value as printed there, read back (so that other views of a run,
/// TensorBoard's, show the file's numbers).
pub fn columns(r: &EpochRecord) -> Vec<(&'static str, f64)> {
    let values = row(r).split(',').map(|text| text.parse().expect("printed numbers parse")).collect::<Vec<f64>>();
    HEADER.trim_end().split(',').zip(values).collect()
}

/// Reads back what `csv` wrote (a resumed run continues its rows); `path`
/// only names the file in errors. Printing the parsed rows again gives the
/// same text. Files from before the `lr` column get `constant_lr`.
pub fn parse_csv(text: &str, path: &Path, constant_lr: f32) -> Result<Vec<EpochRecord>> {
    let bad = |line: usize, what: String| Error::bad_file(path, format!("line {line}: {what}"));
    let mut lines = text.lines();
    let width = match lines.next() {
        Some(h) if h == HEADER.trim_end() => 10,
        Some(h) if h == HEADER_BEFORE_LR.trim_end() => 9,
        _ => return Err(bad(1, "not the header of a gpu-vae metrics file".into())),
    };
    let mut records = Vec::new();
    for (i, line) in lines.enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != width {
            return Err(bad(i + 2, format!("{} fields, expected {width}", fields.len())));
        }
        let num = |k: usize| match fields[k].parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            Ok(_) => Err(bad(i + 2, format!("`{}` is not a finite number", fields[k]))),
            Err(e) => Err(bad(i + 2, format!("`{}`: {e}", fields[k]))),
        };
        let epoch = fields[0].parse::<usize>().map_err(|e| bad(i + 2, format!("epoch `{}`: {e}", fields[0])))?;
        if epoch != records.len() + 1 {
            return Err(bad(i + 2, format!("epoch {epoch}, expected {}", records.len() + 1)));
        }
        records.push(EpochRecord {
            epoch,
            train: Losses { total: num(1)?, recon: num(2)?, kl: num(3)? },
            test: Losses { total: num(4)?, recon: num(5)?, kl: num(6)? },
            seconds: num(7)?,
            samples_per_s: num(8)?,
            lr: if width == 10 { num(9)? as f32 } else { constant_lr },
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_back_print_the_same() {
        let l = |t: f64| Losses { total: t, recon: t / 3.0, kl: t / 7.0 };
        let records: Vec<EpochRecord> = (1..=3)
            .map(|e| EpochRecord {
                epoch: e,
                train: l(100.0 / e as f64),
                test: l(1.0 / 3.0 + e as f64),
                seconds: 0.1234 * e as f64,
                samples_per_s: 12345.678,
                lr: 1e-3 / e as f32,
            })
            .collect();
        let text = csv(&records);
        let back = parse_csv(&text, Path::new("metrics.csv"), 0.0).unwrap();
        assert_eq!(csv(&back), text);
        // A run from before the lr column: its constant rate fills it.
        let old: String = text.lines().map(|l| l.rsplit_once(',').unwrap().0.to_string() + "\n").collect();
        let back = parse_csv(&old, Path::new("metrics.csv"), 5e-4).unwrap();
        assert!(back.iter().all(|r| r.lr == 5e-4));
        let (name, value) = columns(&records[2])[6];
        assert_eq!((name, value), ("test_kl", 0.476190));
        let e = parse_csv("epoch,x\n", Path::new("m.csv"), 0.0).unwrap_err().to_string();
        assert!(e.contains("m.csv: line 1"), "{e}");
    }
}
