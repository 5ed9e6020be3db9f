//! `gpu-vae train`, and loading a saved run back.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};

use super::TrainArgs;
use super::progress::ConsoleProgress;
use crate::data::DataSet;
use crate::engine::AdamConfig;
use crate::limits;
use crate::model::{Arch, Architecture, InitScheme, ModelConfig, ModelKind, ReconLoss, init_params};
use crate::train::run_dir;
use crate::train::{self, Run, TrainConfig};

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let mut config = config_from_args(&args)?;
    config.validate()?;
    let out = args.out.clone().unwrap_or_else(|| default_out_dir(config.model.kind));
    train::prepare_out_dir(&out)?;
    // Held until training ends: a second writer into `out` stops here.
    let _owner = run_dir::claim(&out, args.force)?;

    let data = load_data(&config)?;
    config.model.image_rows = data.train.rows;
    config.model.image_cols = data.train.cols;
    // Again with the data's image size, which IDX files choose.
    config.validate().with_context(|| format!("data {}", config.data))?;
    let mut train_images = data.train;
    if let Some(class) = config.normal_class {
        train_images = train_images.with_label(class);
        if train_images.count == 0 {
            bail!("--normal-class {class}: no training images have this label");
        }
    }
    let arch = Architecture::new(&config.model)?;
    let params = init_params(&arch, config.init, config.seed);
    let mut engine = super::device::open_engine(&args.device, &arch, &params, &config)?;
    println!(
        "data: {} ({} train, {} test, {}x{}); model: {:?} {} params; device: {}",
        data.name,
        train_images.count,
        data.test.count,
        data.test.rows,
        data.test.cols,
        config.model.kind,
        arch.param_count,
        engine.describe()
    );
    let run = Run { config: &config, arch: &arch, train: Arc::new(train_images), test: Arc::new(data.test), out: &out };
    let mut progress = ConsoleProgress::new(args.quiet, config.epochs);
    train::train(&run, engine.as_mut(), &mut progress)?;
    println!("wrote {}", out.display());
    Ok(())
}

/// Resolves the per-model defaults (pytorch/examples VAE, the seed article's AE).
pub(super) fn config_from_args(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let vae = args.model == ModelKind::Vae;
    let conv = args.arch == Arch::Conv;
    let init = args.init.unwrap_or(if vae { InitScheme::Torch } else { InitScheme::Glorot });
    let default_eps = if init == InitScheme::Glorot { 1e-7 } else { 1e-8 };
    if args.image_size == 0 {
        bail!("invalid --image-size: must be at least 1");
    }
    limits::at_most("--image-size", args.image_size, limits::MAX_IMAGE_SIDE)?;
    Ok(TrainConfig {
        model: ModelConfig {
            kind: args.model,
            image_rows: args.image_size,
            image_cols: args.image_size,
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
        },
        init,
        adam: AdamConfig { lr: args.lr, beta1: 0.9, beta2: 0.999, eps: args.adam_eps.unwrap_or(default_eps) },
        batch_size: args.batch_size.unwrap_or(if vae { 128 } else { 256 }),
        epochs: args.epochs,
        beta: args.beta,
        kl_warmup: args.kl_warmup,
        noise_std: args.noise,
        seed: args.seed,
        normal_class: args.normal_class,
        data: args.data.clone().unwrap_or_else(|| "embedded".into()),
        test_fraction: args.test_fraction,
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
