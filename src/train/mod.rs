//! A training run: epochs on an engine, then per epoch the test loss, the
//! checkpoint, `metrics.csv` and the pictures, all written atomically.

mod config;
pub mod loss_plot;
mod metrics;
pub mod pictures;
pub mod run_dir;

pub use config::TrainConfig;
pub use metrics::{EpochRecord, Losses};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::checkpoint;
use crate::data::Images;
use crate::engine::{Engine, EpochPlan, EvalPlan};
use crate::error::{Error, Result};
use crate::model::Architecture;
use crate::rng;

/// File names inside a run directory.
pub const CONFIG_FILE: &str = "config.json";
pub const MODEL_FILE: &str = "model.safetensors";
pub const METRICS_FILE: &str = "metrics.csv";
pub const SAMPLES_FILE: &str = "samples.png";
pub const RECONSTRUCTIONS_FILE: &str = "reconstructions.png";
pub const LOSS_PLOT_FILE: &str = "loss.png";

/// How the trainer reports progress.
pub trait Progress {
    fn epoch_started(&mut self, epoch: usize, batches: usize);
    fn tick(&mut self, batches_done: usize, train_loss: f64);
    fn epoch_done(&mut self, record: &EpochRecord);
}

pub struct Run<'a> {
    pub config: &'a TrainConfig,
    pub arch: &'a Architecture,
    pub train: Arc<Images>,
    pub test: Arc<Images>,
    pub out: &'a Path,
}

/// Trains `config.epochs` epochs. On a non-finite loss it stops with an error
/// naming the step; the checkpoint of the last good epoch stays as it was.
pub fn train(run: &Run, engine: &mut dyn Engine, progress: &mut dyn Progress) -> Result<Vec<EpochRecord>> {
    let (cfg, arch) = (run.config, run.arch);
    prepare_out_dir(run.out)?;
    // config.json is written with the first checkpoint (below), so that an older
    // run in `out` stays whole until then.
    std::fs::create_dir_all(run.out.join("epochs")).map_err(|e| Error::io(run.out.join("epochs"), e))?;

    let n = run.train.count;
    let mut step = 0u64;
    let mut records = Vec::new();
    for epoch in 1..=cfg.epochs {
        let plan = EpochPlan {
            order: rng::permutation(n, cfg.seed, epoch as u32),
            batch_size: cfg.batch_size,
            first_step: step,
            seed: cfg.seed,
            noise_std: cfg.noise_std,
            beta: cfg.beta_at(epoch),
        };
        progress.epoch_started(epoch, plan.batches());
        let started = Instant::now();
        let mut tick = |done: usize, sums| {
            let seen = (done * cfg.batch_size).min(n);
            progress.tick(done, Losses::from_sums(arch, sums, seen).total)
        };
        let sums = engine.train_epoch(&run.train, &plan, &mut tick).map_err(|e| match e {
            Error::NonFiniteLoss { value, step, .. } => Error::NonFiniteLoss { value, step, epoch },
            other => other,
        })?;
        let seconds = started.elapsed().as_secs_f64();
        step += plan.batches() as u64;

        let eval = EvalPlan { batch_size: cfg.batch_size, seed: cfg.seed, noise_std: cfg.noise_std };
        let test = engine.evaluate(&run.test, &eval)?;
        let record = EpochRecord {
            epoch,
            train: Losses::from_sums(arch, sums, n),
            test: Losses::from_sums(arch, test, run.test.count),
            seconds,
            samples_per_s: n as f64 / seconds,
        };
        if !record.test.total.is_finite() {
            return Err(Error::NonFiniteLoss { value: record.test.total as f32, step, epoch });
        }
        let params = engine.params()?;
        if epoch == 1 {
            run_dir::clear_old_run(run.out)?;
        }
        checkpoint::save(&run.out.join(MODEL_FILE), arch, &params)?;
        if epoch == 1 {
            run_dir::write_config(run.out, cfg)?;
        }
        records.push(record);
        metrics::write_csv(&run.out.join(METRICS_FILE), &records)?;
        loss_plot::write_loss_plot(&run.out.join(LOSS_PLOT_FILE), &records)?;
        write_pictures(run, params, &run.out.join("epochs"), &format!("-{epoch:03}"))?;
        progress.epoch_done(records.last().expect("just pushed"));
    }
    if !records.is_empty() {
        write_pictures(run, engine.params()?, run.out, "")?;
    }
    Ok(records)
}

fn write_pictures(run: &Run, params: Vec<f32>, dir: &Path, suffix: &str) -> Result<()> {
    let mut model = pictures::inference_model(run.arch, params);
    let grid = pictures::GRID_COLS * pictures::GRID_COLS;
    let named = |file: &str| -> PathBuf {
        let (stem, ext) = file.rsplit_once('.').expect("file names have extensions");
        dir.join(format!("{stem}{suffix}.{ext}"))
    };
    pictures::sample_grid(&mut model, Some(&run.test), grid, run.config.seed, &named(SAMPLES_FILE))?;
    pictures::reconstruction_grid(&mut model, &run.test, grid / 2, &named(RECONSTRUCTIONS_FILE))
}

/// Creates the output directory and proves it writable before any training.
pub fn prepare_out_dir(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let probe = out.join(".write-test");
    std::fs::write(&probe, b"").map_err(|e| Error::io(out, e))?;
    std::fs::remove_file(&probe).map_err(|e| Error::io(&probe, e))
}
