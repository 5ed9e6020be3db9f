//! A training run: epochs on an engine, then per epoch the test loss, the
//! checkpoint, `metrics.csv` and the pictures, all written atomically, and
//! the same numbers and pictures appended to a TensorBoard event file.

pub mod begin;
mod config;
pub mod interrupt;
pub mod loss_plot;
pub mod metrics;
pub mod pictures;
pub mod run_dir;
pub mod state;
pub mod tensorboard;

pub use config::TrainConfig;
pub use metrics::{EpochRecord, Losses};
pub use state::{OPTIMIZER_FILE, TrainState};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::checkpoint;
use crate::data::Images;
use crate::engine::{Engine, EpochPlan, EpochStart, EvalPlan, LossSums};
use crate::error::{Error, Result};
use crate::model::Architecture;
use crate::rng;
use tensorboard::EventWriter;

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
    /// Whether to write a TensorBoard event file (`tensorboard`) into `out`.
    pub tensorboard: bool,
}

/// Trains `config.epochs` epochs. On a non-finite loss it stops with an error
/// naming the step; the checkpoint of the last good epoch stays as it was.
pub fn train(run: &Run, engine: &mut dyn Engine, progress: &mut dyn Progress) -> Result<Vec<EpochRecord>> {
    train_from(run, engine, progress, None, None)
}

/// `train`, continuing the run in `run.out` from its last checkpoint's
/// `resume` state when given (the engine was built with that checkpoint's
/// parameters), up to `config.epochs` epochs in all. When `stop` is set
/// (SIGINT, SIGTERM) the epoch ends after the step in flight, a checkpoint
/// of that position is written (optimizer state, then model) and the result
/// is `Error::Interrupted`; `train_from` with that state continues exactly.
pub fn train_from(
    run: &Run,
    engine: &mut dyn Engine,
    progress: &mut dyn Progress,
    resume: Option<TrainState>,
    stop: Option<&AtomicBool>,
) -> Result<Vec<EpochRecord>> {
    let (cfg, arch) = (run.config, run.arch);
    prepare_out_dir(run.out)?;
    // config.json is written with the first checkpoint (below), so that an older
    // run in `out` stays whole until then.
    std::fs::create_dir_all(run.out.join("epochs")).map_err(|e| Error::io(run.out.join("epochs"), e))?;
    engine.prepare(&run.train, &run.test, cfg.batch_size, cfg.noise_std > 0.0)?;

    let n = run.train.count;
    let batches = n.div_ceil(cfg.batch_size);
    // Fingerprints of the settings and data, stamped on every checkpoint.
    let (config_id, data_id) = (state::config_fingerprint(cfg), state::data_fingerprint(&run.train));
    let at = |epochs_done, batches_done, step| state::Position {
        epochs_done,
        batches_done,
        step,
        seed: cfg.seed,
        config: config_id,
        data: data_id,
    };
    let mut writer = CheckpointWriter { run, fresh: resume.is_none(), wrote: false, events: None };
    let mut records = Vec::new();
    // Where the first epoch of this session starts.
    let (mut first_epoch, mut batches_done, mut partial, mut partial_seconds) = (1, 0, LossSums::default(), 0.0);
    let resumed_at = resume.as_ref().map(|state| state.position.step);
    if let Some(state) = resume {
        let p = state.position;
        if p.config != 0 && p.config != config_id {
            let what = state.config.as_deref().and_then(|then| state::changed_setting(then, cfg));
            return Err(Error::bad_file(
                run.out.join(CONFIG_FILE),
                format!(
                    "its settings changed since the checkpoint ({}); a run goes on only with the settings it began with",
                    what.unwrap_or_else(|| "not those recorded in optimizer.safetensors".into())
                ),
            ));
        }
        if p.data != 0 && p.data != data_id {
            return Err(Error::bad_file(
                &cfg.data,
                format!(
                    "its {n} training images are not those the run was trained on \
                     (the data changed since its checkpoint); a run goes on only with its own data"
                ),
            ));
        }
        let expected = (p.epochs_done * batches + p.batches_done) as u64;
        if p.seed != cfg.seed || p.batches_done >= batches.max(1) || p.step != expected {
            return Err(Error::bad_file(
                run.out.join(state::OPTIMIZER_FILE),
                format!(
                    "its position ({} epochs and {} batches, step {}, seed {}) does not fit {n} images in batches of {} \
                     with seed {}: the data or the configuration changed",
                    p.epochs_done, p.batches_done, p.step, p.seed, cfg.batch_size, cfg.seed
                ),
            ));
        }
        let file = run.out.join(state::OPTIMIZER_FILE);
        records = metrics::parse_csv(&state.metrics, &file, cfg.adam.lr)?;
        if records.len() != p.epochs_done {
            let rows = records.len();
            return Err(Error::bad_file(
                file,
                format!("its metrics hold {rows} epochs, its position {}", p.epochs_done),
            ));
        }
        engine.restore_adam(&state.adam)?;
        (first_epoch, batches_done, partial, partial_seconds) =
            (p.epochs_done + 1, p.batches_done, state.partial, state.partial_seconds);
    }
    // After the checks above: a refused resume leaves no new file.
    if run.tensorboard {
        writer.events = Some(start_events(run, resumed_at)?);
    }
    let stopping = || stop.is_some_and(|s| s.load(Ordering::SeqCst));
    // An engine may tick twice at an epoch's last batch; TensorBoard gets one point a step.
    let mut last_tick = None;
    for epoch in first_epoch..=cfg.epochs {
        let first_step = ((epoch - 1) * batches) as u64;
        let plan = EpochPlan {
            order: rng::permutation(n, cfg.seed, epoch as u32),
            batch_size: cfg.batch_size,
            first_step,
            seed: cfg.seed,
            noise_std: cfg.noise_std,
            beta: cfg.beta_at(epoch),
            lr: cfg.lr_schedule.plan(batches, cfg.epochs),
        };
        progress.epoch_started(epoch, plan.batches());
        let started = Instant::now();
        // The tick cannot fail the engine's loop: its first error waits for the epoch's end.
        let mut tick_error = None;
        let mut tick = |done: usize, sums| {
            let seen = (done * cfg.batch_size).min(n);
            let loss = Losses::from_sums(arch, sums, seen).total;
            progress.tick(done, loss);
            let step = first_step + done as u64;
            if let Some(events) = writer.events.as_mut()
                && last_tick.replace(step) != Some(step)
                && let Err(e) = events.scalars(step, &[(RUNNING_LOSS_TAG, loss as f32)])
            {
                tick_error.get_or_insert(e);
            }
        };
        let start = EpochStart { batches_done, sums: partial, stop };
        let result = engine.train_epoch_at(&run.train, &plan, &start, &mut tick);
        let seconds = partial_seconds + started.elapsed().as_secs_f64();
        if let Some(events) = writer.events.as_mut() {
            // Whatever stops the run here, the records so far stay readable;
            // a failure to write them is not what the user needs to hear then.
            let _ = events.flush();
        }
        if let (Ok(_), Some(e)) = (&result, tick_error) {
            return Err(e);
        }
        let sums = match result {
            Ok(sums) => sums,
            Err(Error::NonFiniteLoss { value, step, .. }) => return Err(Error::NonFiniteLoss { value, step, epoch }),
            Err(Error::Interrupted { batches_done, step, recon, kl, .. }) => {
                // Nothing trained yet in a new run: nothing to keep.
                if !(writer.fresh && step == 0) {
                    let position = at(epoch - 1, batches_done, step);
                    let partial = LossSums { recon, kl };
                    writer.save(engine, &records, position, partial, seconds)?;
                }
                return Err(Error::Interrupted { epoch, batches_done, step, recon, kl });
            }
            Err(other) => return Err(other),
        };
        let step = first_step + plan.batches() as u64;
        (batches_done, partial, partial_seconds) = (0, LossSums::default(), 0.0);

        let eval = EvalPlan { batch_size: cfg.batch_size, seed: cfg.seed, noise_std: cfg.noise_std };
        let test = engine.evaluate(&run.test, &eval)?;
        let record = EpochRecord {
            epoch,
            train: Losses::from_sums(arch, sums, n),
            test: Losses::from_sums(arch, test, run.test.count),
            seconds,
            samples_per_s: n as f64 / seconds,
            lr: plan.lr.lr(cfg.adam.lr, step - 1),
        };
        if !record.test.total.is_finite() {
            return Err(Error::NonFiniteLoss { value: record.test.total as f32, step, epoch });
        }
        records.push(record);
        let position = at(epoch, 0, step);
        let params = writer.save(engine, &records, position, LossSums::default(), 0.0)?;
        metrics::write_csv(&run.out.join(METRICS_FILE), &records)?;
        loss_plot::write_loss_plot(&run.out.join(LOSS_PLOT_FILE), &records)?;
        let pictures = write_pictures(run, params, &run.out.join("epochs"), &format!("-{epoch:03}"))?;
        if let Some(events) = writer.events.as_mut() {
            log_epoch(events, step, records.last().expect("just pushed"), &pictures)?;
        }
        progress.epoch_done(records.last().expect("just pushed"));
        if stopping() && epoch < cfg.epochs {
            // Stopped between epochs: the checkpoint just written is the place.
            return Err(Error::Interrupted { epoch: epoch + 1, batches_done: 0, step, recon: 0.0, kl: 0.0 });
        }
    }
    if !records.is_empty() {
        write_pictures(run, engine.params()?, run.out, "")?;
    }
    Ok(records)
}

/// Writes a run's checkpoints, each staged and committed by one rename
/// (`state`'s module documentation): Adam's state and (the first time in this
/// process) the configuration to their staged names, then the model into
/// place, then the staged files over theirs. A new run then removes an older
/// run's pictures (`run_dir::clear_old_pictures`) and event files. It holds
/// this session's event file, which a new run keeps only once its first
/// checkpoint is committed: one that fails, diverges or is stopped before
/// then leaves the folder as it found it.
struct CheckpointWriter<'a, 'r> {
    run: &'r Run<'a>,
    /// A new run, not a resumed one.
    fresh: bool,
    /// Whether this process has written a checkpoint yet.
    wrote: bool,
    /// This session's TensorBoard event file.
    events: Option<EventWriter>,
}

impl Drop for CheckpointWriter<'_, '_> {
    fn drop(&mut self) {
        if let Some(events) = &self.events
            && self.fresh
            && !self.wrote
        {
            let _ = std::fs::remove_file(events.path());
        }
    }
}

impl CheckpointWriter<'_, '_> {
    /// Saves the engine's state at `position`; returns the parameters saved.
    fn save(
        &mut self,
        engine: &mut dyn Engine,
        records: &[EpochRecord],
        position: state::Position,
        partial: LossSums,
        partial_seconds: f64,
    ) -> Result<Vec<f32>> {
        let out = self.run.out;
        let params = engine.params()?;
        let adam = engine.adam_state()?;
        let optimizer = out.join(state::OPTIMIZER_FILE);
        let config = run_dir::config_text(self.run.config);
        let has_adam = adam.is_some();
        if let Some(adam) = adam {
            let metrics = metrics::csv(records);
            let state = TrainState { position, adam, partial, partial_seconds, metrics, config: Some(config.clone()) };
            state::save(&state::staged(&optimizer), &state)?;
        }
        if !self.wrote {
            // A resumed run's total of epochs may have changed.
            crate::fsutil::write_atomic(&state::staged(&out.join(CONFIG_FILE)), config.as_bytes())?;
        }
        // The commit: from here on the staged files are the model's.
        let names = &self.run.config.class_names;
        checkpoint::save_at(&out.join(MODEL_FILE), self.run.arch, &params, Some(&position.to_json()), names)?;
        run_dir::settle(out)?;
        if !has_adam {
            // An engine without Adam's state: the run cannot be resumed, and
            // no older state may pass for this one's.
            match std::fs::remove_file(&optimizer) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(optimizer, e)),
                _ => {}
            }
        }
        if self.fresh && !self.wrote {
            run_dir::clear_old_pictures(out)?;
            run_dir::clear_old_events(out, self.events.as_ref().map(EventWriter::path))?;
        }
        self.wrote = true;
        Ok(params)
    }
}

/// Writes the sample and reconstruction grids; returns their paths, in that order.
fn write_pictures(run: &Run, params: Vec<f32>, dir: &Path, suffix: &str) -> Result<[PathBuf; 2]> {
    let mut model = crate::cpu::CpuModel::for_inference(run.arch.clone(), params);
    let grid = pictures::GRID_COLS * pictures::GRID_COLS;
    let named = |file: &str| -> PathBuf {
        let (stem, ext) = file.rsplit_once('.').expect("file names have extensions");
        dir.join(format!("{stem}{suffix}.{ext}"))
    };
    let paths = [named(SAMPLES_FILE), named(RECONSTRUCTIONS_FILE)];
    pictures::sample_grid(&mut model, Some(&run.test), grid, run.config.seed, &paths[0])?;
    pictures::reconstruction_grid(&mut model, &run.test, grid / 2, &paths[1])?;
    Ok(paths)
}

/// The tag of the running mean of the epoch's training loss, at every progress tick.
pub const RUNNING_LOSS_TAG: &str = "train/running_loss";
/// The tag of the configuration (`config.json`) as text.
pub const CONFIG_TAG: &str = "config";

/// A new event file for this session: after a resume, a restart mark at the
/// first step to come; then the configuration (config.json's text, indented
/// as a Markdown code block so that the text plugin shows it as written).
fn start_events(run: &Run, resumed_at: Option<u64>) -> Result<EventWriter> {
    let mut events = EventWriter::create(run.out)?;
    if let Some(step) = resumed_at {
        events.session_start(step + 1)?;
    }
    let text: String = run_dir::config_text(run.config).lines().map(|line| format!("    {line}\n")).collect();
    events.text(resumed_at.unwrap_or(0), CONFIG_TAG, &text)?;
    events.flush()?;
    Ok(events)
}

/// An epoch's scalars (every column of `metrics.csv`, as printed there;
/// `train_loss` becomes `train/loss`) and pictures at the epoch's last step.
fn log_epoch(events: &mut EventWriter, step: u64, record: &EpochRecord, pictures: &[PathBuf; 2]) -> Result<()> {
    let tags: Vec<(String, f32)> =
        metrics::columns(record).into_iter().map(|(name, v)| (tag_of(name), v as f32)).collect();
    let scalars: Vec<(&str, f32)> = tags.iter().map(|(tag, v)| (tag.as_str(), *v)).collect();
    events.scalars(step, &scalars)?;
    for (path, tag) in pictures.iter().zip(PICTURE_TAGS) {
        let png = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        events.png(step, tag, png, path)?;
    }
    events.flush()
}

/// The image tags, in `write_pictures`' order.
pub const PICTURE_TAGS: [&str; 2] = ["samples", "reconstructions"];

/// The scalar tag of a `metrics.csv` column: `train_kl` is `train/kl`.
pub fn tag_of(column: &str) -> String {
    match column.split_once('_') {
        Some((set @ ("train" | "test"), part)) => format!("{set}/{part}"),
        _ => column.to_string(),
    }
}

/// Creates the output directory and proves it writable before any training.
pub fn prepare_out_dir(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    // Named for this process, so that two writers starting at once do not
    // remove each other's probe, and a killed one's is cleared as a leftover.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, Ordering::SeqCst);
    let probe = out.join(format!(".write-test-{n}{}{}", crate::fsutil::TEMP_MARK, std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| Error::io(out, e))?;
    std::fs::remove_file(&probe).map_err(|e| Error::io(&probe, e))
}
