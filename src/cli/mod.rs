//! The `gpu-vae` command line: arguments are parsed and validated into
//! configurations before any data is read or any device is opened.

pub mod apps;
mod bench;
mod classes;
mod device;
mod export;
mod progress;
mod sample;
mod train;
mod view;

pub(crate) use train::config_from_args;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::model::{Activation, Arch, InitScheme, ModelKind, ReconLoss};

#[derive(Parser, Debug)]
#[command(
    name = "gpu-vae",
    version,
    about = "Train and use autoencoders and VAEs on a GPU (WGSL through wgpu) or the CPU"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train an AE, denoising AE or VAE; writes config, checkpoint, metrics and pictures.
    Train(TrainArgs),
    /// Decode draws from the prior of a trained run into an image grid.
    Sample(SampleArgs),
    /// Training throughput of the default VAE and AE per device, as JSON lines.
    Bench(BenchArgs),
    /// List the wgpu adapters with their backend and limits.
    Devices,
    /// Write a trained run's encoder and decoder as ONNX models, or as a WebGPU page (--format web).
    Export(ExportArgs),
    /// Serve a trained run's web export (latent explorer) on 127.0.0.1.
    View(ViewArgs),
    #[command(flatten)]
    Apps(apps::AppCommand),
}

/// `--device`: the library's `Device`, under the name the command line
/// has always used.
pub use crate::device::Device as DeviceChoice;

#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// Where to compute (WGPU_BACKEND and WGPU_ADAPTER_NAME pick among GPUs).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Turn wgpu's shader runtime checks back on (slow; for debugging kernels).
    #[arg(long)]
    pub checked_shaders: bool,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Data: a folder of IDX files (MNIST layout, raw or .gz) or of images,
    /// `fashion-mnist` for Debian's dataset-fashion-mnist, or `embedded` (default).
    #[arg(long)]
    pub data: Option<String>,
    /// Model family.
    #[arg(long, value_enum, default_value_t = ModelKind::Vae)]
    pub model: ModelKind,
    /// Encoder and decoder: dense layers, or convolutions (CPU only for now).
    #[arg(long, value_enum, default_value = "mlp")]
    pub arch: Arch,
    /// Channels of the stride-2 3x3 convolutions of `--arch conv`, mirrored by the decoder.
    #[arg(long, num_args = 1.., value_delimiter = ',', default_value = "32,64")]
    pub conv: Vec<usize>,
    /// Encoder hidden widths, mirrored by the decoder [default: vae 400, ae none; none with --arch conv].
    #[arg(long, num_args = 0.., value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// Latent width [default: vae 20, ae 64; 16 with --arch conv].
    #[arg(long)]
    pub latent: Option<usize>,
    /// Reconstruction loss [default: vae bce, ae mse].
    #[arg(long, value_enum)]
    pub loss: Option<ReconLoss>,
    /// Activation of the hidden layers (stored in the checkpoint).
    #[arg(long, value_enum, default_value = "relu")]
    pub activation: Activation,
    /// Weight initialization [default: vae torch, ae glorot].
    #[arg(long, value_enum)]
    pub init: Option<InitScheme>,
    /// Epochs to train [default: 10]; with --resume, the run's total (its
    /// config's when not given).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size [default: vae 128, ae 256].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    pub lr: f32,
    /// Learning-rate schedule over the run's steps: constant, cosine
    /// (PyTorch's CosineAnnealingLR down to --lr-min at the last step) or
    /// step (StepLR: times --lr-gamma every --lr-step-epochs epochs).
    #[arg(long, value_enum, default_value = "constant")]
    pub lr_schedule: crate::schedule::ScheduleKind,
    /// Steps of linear warm-up of the learning rate from 0.
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: u64,
    /// The cosine schedule's final learning rate.
    #[arg(long, allow_negative_numbers = true)]
    pub lr_min: Option<f32>,
    /// The step schedule's period, in epochs [default: 1].
    #[arg(long)]
    pub lr_step_epochs: Option<usize>,
    /// The step schedule's decay factor [default: 0.1].
    #[arg(long, allow_negative_numbers = true)]
    pub lr_gamma: Option<f32>,
    /// Adam epsilon [default: 1e-8 with torch init, 1e-7 with glorot (Keras)].
    #[arg(long, allow_negative_numbers = true)]
    pub adam_eps: Option<f32>,
    /// Weight of the KL term (VAE).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub beta: f32,
    /// Ramp beta up linearly over this many epochs (0 = off).
    #[arg(long, default_value_t = 0)]
    pub kl_warmup: usize,
    /// Std of Gaussian noise added to inputs (clipped to [0, 1]): a denoising model.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub noise: f32,
    /// Train on one class only (one-class anomaly detection).
    #[arg(long)]
    pub normal_class: Option<u8>,
    /// A conditional model: each image's label, one-hot, joins the encoder's
    /// first dense layer and the decoder's first layer (labelled data only).
    #[arg(long)]
    pub conditional: bool,
    /// Seed of every random draw (init, order, noise).
    #[arg(long, default_value_t = 1)]
    pub seed: u32,
    /// Side of the square images a folder of pictures is resized to.
    #[arg(long, default_value_t = 28)]
    pub image_size: usize,
    /// Channels a folder of pictures is read as: 1 (grayscale) or 3 (RGB)
    /// [default: 3 if any picture has colour, else 1]; IDX and CIFAR data set their own.
    #[arg(long, value_parser = parse_channels)]
    pub channels: Option<u8>,
    /// Share of a folder of pictures held out for testing.
    #[arg(long, default_value_t = 1.0 / 6.0)]
    pub test_fraction: f32,
    /// Output directory [default: runs/MODEL-TIMESTAMP].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace the run already in --out; its files go when the new run's first checkpoint is written.
    #[arg(long)]
    pub force: bool,
    /// Plain per-epoch lines even on a terminal.
    #[arg(long)]
    pub quiet: bool,
    /// Write no TensorBoard event file (`events.out.tfevents.*`) into the run folder.
    #[arg(long)]
    pub no_tensorboard: bool,
    /// Continue the run in this folder from its last checkpoint, exactly as if
    /// it had not stopped; every setting but --epochs (the new total),
    /// --device, --checked-shaders, --quiet and --no-tensorboard comes from
    /// its config.json. A new event file continues the earlier ones.
    #[arg(long, value_name = "RUN", conflicts_with_all = RESUME_CONFLICTS)]
    pub resume: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// The `train` flags a run's config.json sets: `--resume` refuses them rather
/// than ignore them or train a run whose config.json no longer describes it.
const RESUME_CONFLICTS: [&str; 28] = [
    "data",
    "model",
    "arch",
    "conv",
    "hidden",
    "latent",
    "loss",
    "activation",
    "init",
    "batch_size",
    "lr",
    "adam_eps",
    "lr_schedule",
    "warmup_steps",
    "lr_min",
    "lr_step_epochs",
    "lr_gamma",
    "beta",
    "kl_warmup",
    "noise",
    "normal_class",
    "conditional",
    "seed",
    "image_size",
    "channels",
    "test_fraction",
    "out",
    "force",
];

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Data, as for `train` (the reference numbers use `fashion-mnist`).
    #[arg(long)]
    pub data: Option<String>,
    /// Models to time, each with its `train` defaults.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [ModelKind::Vae, ModelKind::Ae])]
    pub model: Vec<ModelKind>,
    /// Dense or convolutional models (`train --arch`).
    #[arg(long, value_enum, default_value = "mlp")]
    pub arch: Arch,
    /// Devices to time.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [DeviceChoice::Cpu])]
    pub device: Vec<DeviceChoice>,
    /// Timed epochs after one warm-up epoch; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Override the model's default batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Turn wgpu's shader runtime checks back on (slow; for debugging).
    #[arg(long)]
    pub checked_shaders: bool,
    /// After the timed epochs, time every kernel of a few GPU training steps
    /// with timestamp queries and print a table after the JSON line.
    #[arg(long)]
    pub profile: bool,
    /// Training steps `--profile` records.
    #[arg(long, default_value_t = 20, requires = "profile")]
    pub profile_steps: usize,
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// A run directory written by `gpu-vae train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Number of images (laid out 8 per row); with `--class all`, per class
    /// [default: 64, or 8 per class].
    #[arg(long)]
    pub n: Option<usize>,
    #[arg(long, default_value_t = 1)]
    pub seed: u32,
    /// A conditional run's class to draw: its number or name, or `all` for a
    /// row per class named at the left margin [default: the classes in turn, a row each].
    #[arg(long)]
    pub class: Option<String>,
    /// `png`: a grid; `idx`: the decoded means as one u8 IDX image file
    /// (grayscale models), in grid order, for other tools.
    #[arg(long, value_enum, default_value = "png")]
    pub format: SampleFormat,
    /// File to write.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// A run directory written by `gpu-vae train`.
    #[arg(long)]
    pub run: PathBuf,
    /// File format.
    #[arg(long, value_enum, default_value = "onnx")]
    pub format: crate::export::Format,
    /// Folder to write the files into (created when missing).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ViewArgs {
    /// A run directory written by `gpu-vae train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Port on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SampleFormat {
    Png,
    Idx,
}

/// `--channels`: 1 or 3.
fn parse_channels(s: &str) -> Result<u8, String> {
    match s {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err("1 (grayscale) or 3 (RGB)".into()),
    }
}

impl TrainArgs {
    /// `train`'s defaults for a model, exactly as if typed on the command line.
    pub fn defaults_for(kind: ModelKind, arch: Arch) -> TrainArgs {
        let name = kind.to_possible_value().expect("every model has a name").get_name().to_string();
        let arch = arch.to_possible_value().expect("every arch has a name").get_name().to_string();
        match Cli::parse_from(["gpu-vae", "train", "--model", &name, "--arch", &arch]).command {
            Command::Train(args) => args,
            _ => unreachable!("parsed a train command"),
        }
    }
}

/// Runs the command line; the binary prints the error.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => train::run(args),
        Command::Sample(args) => sample::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Devices => {
            for adapter in crate::gpu::list_adapters() {
                println!("{adapter}");
            }
            Ok(())
        }
        Command::Export(args) => export::run(args),
        Command::View(args) => view::run(args),
        Command::Apps(command) => apps::run(command),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
