//! `gpu-vae train`, and loading a saved run back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;

use super::TrainArgs;
use super::progress::ConsoleProgress;
use crate::data::DataSet;
use crate::engine::AdamConfig;
use crate::error::Error;
use crate::limits;
use crate::model::{Arch, Architecture, InitScheme, ModelConfig, ModelKind, ReconLoss};
use crate::schedule::LrSchedule;
use crate::train::begin::{self, NewRunOptions};
use crate::train::run_dir;
use crate::train::{self, Run, TrainConfig};

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    // Before the data loads: a signal then stops the run before its first step.
    train::interrupt::install();
    if let Some(dir) = &args.resume {
        return resume(&args, dir);
    }
    let config = config_from_args(&args)?;
    let out = args.out.clone().unwrap_or_else(|| default_out_dir(config.model.kind));
    let options =
        NewRunOptions { force: args.force, channels: args.channels.map(usize::from), conditional: args.conditional };
    // Holds the folder until training ends: a second writer into `out` stops here.
    let new = begin::new_run(config, &out, &options)?;
    fit(&args, &new.config, &new.arch, &new.params, new.data, &out, None)
}

/// `train --resume DIR`: the run's settings, parameters and optimizer state,
/// trained on to `--epochs` epochs in all (the config's total without it).
fn resume(args: &TrainArgs, dir: &Path) -> anyhow::Result<()> {
    let _owner = run_dir::reopen(dir)?;
    let (mut config, arch, params) = run_dir::RunDir::open(dir)?.into_parts();
    let state = train::state::load(dir, arch.param_count)?;
    if let Some(epochs) = args.epochs {
        config.epochs = epochs;
    }
    let p = state.position;
    if config.epochs <= p.epochs_done {
        bail!(
            "invalid --epochs: {} has trained {} epoch(s) already, a total of {} leaves nothing to do; \
             pass a larger total (--epochs {} or more)",
            dir.display(),
            p.epochs_done,
            config.epochs,
            p.epochs_done + 1
        );
    }
    let data = load_data(&config)?;
    if (data.train.rows, data.train.cols) != (config.model.image_rows, config.model.image_cols) {
        bail!(
            "data {}: its images are {}x{} now, the run's model was trained on {}x{}",
            config.data,
            data.train.rows,
            data.train.cols,
            config.model.image_rows,
            config.model.image_cols
        );
    }
    crate::apps::check_image_size(&arch, &data.train, &config.data)?;
    let at = if p.batches_done == 0 {
        format!("after epoch {}", p.epochs_done)
    } else {
        format!("at epoch {}, batch {}", p.epochs_done + 1, p.batches_done)
    };
    println!("resuming {} {at} (step {}) up to epoch {}", dir.display(), p.step, config.epochs);
    fit(args, &config, &arch, &params, data, dir, Some(state))
}

/// Trains a new or resumed run into `out`; SIGINT and SIGTERM stop it with a
/// checkpoint and a line that says how to go on.
fn fit(
    args: &TrainArgs,
    config: &TrainConfig,
    arch: &Architecture,
    params: &[f32],
    data: DataSet,
    out: &Path,
    resume: Option<train::TrainState>,
) -> anyhow::Result<()> {
    let train_images = begin::training_images(data.train, config.normal_class)?;
    let mut engine = super::device::open_engine(&args.device, arch, params, config)?;
    println!(
        "data: {} ({} train, {} test, {}x{}{}); model: {}; device: {}",
        data.name,
        train_images.count,
        data.test.count,
        data.test.rows,
        data.test.cols,
        if data.test.channels == 3 { " RGB" } else { "" },
        config.describe_model(arch.param_count),
        engine.describe()
    );
    let run = Run {
        config,
        arch,
        train: Arc::new(train_images),
        test: Arc::new(data.test),
        out,
        tensorboard: !args.no_tensorboard,
    };
    let mut progress = ConsoleProgress::new(args.quiet, config.epochs);
    let stop = train::interrupt::install();
    match train::train_from(&run, engine.as_mut(), &mut progress, resume, Some(stop)) {
        Ok(_) => {
            println!("wrote {}", out.display());
            if !stop.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(());
            }
            // Stopped during the last pictures, which were finished: the run is whole.
            eprintln!("interrupted after the last epoch; the run is complete");
            Err(Error::Interrupted { epoch: config.epochs, batches_done: 0, step: 0, recon: 0.0, kl: 0.0 }.into())
        }
        Err(e @ Error::Interrupted { epoch, step, .. }) => {
            if step == 0 && args.resume.is_none() {
                eprintln!("interrupted before the first step; nothing was written");
            } else {
                eprintln!(
                    "interrupted at epoch {epoch}, step {step}; continue with: gpu-vae train --resume {}",
                    out.display()
                );
            }
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Resolves the per-model defaults (pytorch/examples VAE, the seed article's AE).
pub(crate) fn config_from_args(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let vae = args.model == ModelKind::Vae;
    let conv = args.arch == Arch::Conv;
    let init = args.init.unwrap_or(if vae { InitScheme::Torch } else { InitScheme::Glorot });
    let default_eps = if init == InitScheme::Glorot { 1e-7 } else { 1e-8 };
    if args.image_size == 0 {
        bail!("invalid --image-size: must be at least 1");
    }
    limits::at_most("--image-size", args.image_size, limits::MAX_IMAGE_SIDE)?;
    Ok(TrainConfig {
        lr_schedule: lr_schedule(args)?,
        model: ModelConfig {
            kind: args.model,
            image_rows: args.image_size,
            image_cols: args.image_size,
            channels: 1,
            hidden: args.hidden.clone().unwrap_or(if vae && !conv { vec![400] } else { vec![] }),
            latent: args.latent.unwrap_or(match (conv, vae) {
                (true, _) => 16,
                (false, true) => 20,
                (false, false) => 64,
            }),
            loss: args.loss.unwrap_or(if vae { ReconLoss::Bce } else { ReconLoss::Mse }),
            activation: args.activation,
            arch: args.arch,
            conv: if conv { args.conv.clone() } else { vec![] },
            classes: 0,
        },
        init,
        adam: AdamConfig { lr: args.lr, beta1: 0.9, beta2: 0.999, eps: args.adam_eps.unwrap_or(default_eps) },
        batch_size: args.batch_size.unwrap_or(if vae { 128 } else { 256 }),
        epochs: args.epochs.unwrap_or(10),
        beta: args.beta,
        kl_warmup: args.kl_warmup,
        noise_std: args.noise,
        seed: args.seed,
        normal_class: args.normal_class,
        data: args.data.clone().unwrap_or_else(|| "embedded".into()),
        test_fraction: args.test_fraction,
        class_names: vec![],
    })
}

/// The schedule the flags describe; a flag of another schedule is refused.
fn lr_schedule(args: &TrainArgs) -> anyhow::Result<LrSchedule> {
    use crate::schedule::ScheduleKind::{self, Cosine, Step};
    let kind = args.lr_schedule;
    let misplaced = [
        ("--lr-min", args.lr_min.is_some(), Cosine),
        ("--lr-step-epochs", args.lr_step_epochs.is_some(), Step),
        ("--lr-gamma", args.lr_gamma.is_some(), Step),
    ];
    for (flag, given, of) in misplaced {
        if given && kind != of {
            let name = |k: ScheduleKind| format!("{k:?}").to_lowercase();
            bail!("invalid {flag}: it sets --lr-schedule {}, not {}", name(of), name(kind));
        }
    }
    let d = LrSchedule::default();
    Ok(LrSchedule {
        kind,
        warmup_steps: args.warmup_steps,
        lr_min: args.lr_min.unwrap_or(d.lr_min),
        step_epochs: args.lr_step_epochs.unwrap_or(d.step_epochs),
        gamma: args.lr_gamma.unwrap_or(d.gamma),
    })
}

fn default_out_dir(kind: ModelKind) -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let name = match kind {
        ModelKind::Ae => "ae",
        ModelKind::Vae => "vae",
    };
    PathBuf::from("runs").join(format!("{name}-{secs}"))
}

/// The data set a configuration names (`train::run_dir::load_data`).
pub fn load_data(config: &TrainConfig) -> anyhow::Result<DataSet> {
    Ok(run_dir::load_data(config)?)
}
