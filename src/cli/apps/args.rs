//! The arguments of the subcommands that use a trained run (`--run DIR`).

use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::{ArgGroup, Args, Subcommand, ValueEnum};

use crate::apps::anomaly::{AnomalyOptions, Score, ThresholdRule};
use crate::apps::codes::Bits;
use crate::apps::compress::{DecodeOptions, EncodeOptions};
use crate::apps::denoise::{Corruption, DenoiseOptions};
use crate::apps::eval::EvalOptions;
use crate::apps::interpolate::{ClassWalkOptions, InterpolateOptions};
use crate::apps::latent_plot::LatentPlotOptions;
use crate::apps::manifold::ManifoldOptions;
use crate::apps::reconstruct::ReconstructOptions;
use crate::cli::DeviceArgs;
use crate::error::{Error, Result};

pub use crate::apps::Split;
pub use crate::apps::compress::ImageFormat;

#[derive(Subcommand, Debug)]
pub enum AppCommand {
    /// A grid of images above their reconstructions, with per-image MSE and PSNR.
    Reconstruct(ReconstructArgs),
    /// Decode the latent walk between pairs of images, one row per pair.
    Interpolate(InterpolateArgs),
    /// Decode a grid over a plane of the latent space (the "digit manifold").
    Manifold(ManifoldArgs),
    /// Scatter of the latent means coloured by label (PCA to 2-D when larger).
    LatentPlot(LatentPlotArgs),
    /// Compress a split into a file of quantized latent codes.
    Encode(EncodeArgs),
    /// Turn a codes file back into images.
    Decode(DecodeArgs),
    /// Corrupt images with noise and reconstruct them: noisy / denoised / clean rows.
    Denoise(DenoiseArgs),
    /// Anomaly scores, a threshold, and ROC-AUC, precision and recall against labels.
    Anomaly(AnomalyArgs),
    /// ELBO (reconstruction + KL) and a VAE's importance-weighted NLL bound.
    Eval(EvalArgs),
}

/// The run, the images, the device.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// A run directory written by `gpu-vae train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Which split of the run's data to use.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Number of images (the first ones of the split), 8 per grid row.
    #[arg(long, default_value_t = 32)]
    pub n: usize,
    /// PNG file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Write per-image MSE and PSNR here instead of printing them.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// A conditional run: one row per image, the image, its reconstruction
    /// and its latent mean decoded as class K (a number or name, or `all`
    /// for every class in turn).
    #[arg(long, value_name = "K")]
    pub as_class: Option<String>,
}

#[derive(Args, Debug)]
pub struct InterpolateArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Index of the first image of a pair in the split (with --to).
    #[arg(long, requires = "to")]
    pub from: Option<usize>,
    #[arg(long, requires = "from")]
    pub to: Option<usize>,
    /// Pairs of image indices, e.g. 0:1,2:3 [default without --from or files: 0:1,2:3,4:5,6:7].
    #[arg(long, value_delimiter = ',', value_parser = parse_pair)]
    pub pairs: Vec<(usize, usize)>,
    /// A PNG/JPEG for the first end (with --to-file); resized to the model's size.
    #[arg(long, requires = "to_file")]
    pub from_file: Option<PathBuf>,
    #[arg(long, requires = "from_file")]
    pub to_file: Option<PathBuf>,
    /// Decoded points per walk, both ends included.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Also walk the great circle (VAE): a second row per pair.
    #[arg(long)]
    pub slerp: bool,
    /// A conditional run: walk the one-hot label linearly from class A to
    /// class B (numbers or names) at each image's latent mean, a row per image.
    #[arg(long, value_name = "A:B", conflicts_with_all = ["from", "to", "pairs", "from_file", "to_file", "slerp"])]
    pub classes: Option<String>,
    /// Rows of --classes: the first N images of the split [default: 8].
    #[arg(long, requires = "classes")]
    pub n: Option<usize>,
    /// PNG file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ManifoldArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Tiles per side of the grid.
    #[arg(long, default_value_t = 30)]
    pub n: usize,
    /// Two latent dimensions to span, e.g. 0,1 [default: a 2-D latent's own,
    /// else the split's first two principal directions].
    #[arg(long, value_delimiter = ',')]
    pub dims: Option<Vec<usize>>,
    /// A conditional run's class to decode the plane as (a number or name).
    #[arg(long, value_name = "K")]
    pub class: Option<String>,
    /// PNG file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct LatentPlotArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Plot only the first N images [default: all].
    #[arg(long)]
    pub n: Option<usize>,
    /// PNG file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct EncodeArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Bits per latent value: 16 (f16) or 8 (per-dimension affine).
    #[arg(long, default_value_t = 16, value_parser = clap::builder::PossibleValuesParser::new(["8", "16"]).map(|s| s.parse::<u8>().expect("8 or 16")))]
    pub bits: u8,
    /// Encode only the first N images [default: all].
    #[arg(long)]
    pub n: Option<usize>,
    /// Codes file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct DecodeArgs {
    /// A run directory written by `gpu-vae train` (the model that encoded).
    #[arg(long)]
    pub run: PathBuf,
    /// A codes file written by `gpu-vae encode`.
    #[arg(long)]
    pub codes: PathBuf,
    #[arg(long, value_enum, default_value_t = ImageFormat::Idx)]
    pub format: ImageFormat,
    /// IDX file or PNG folder to write.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("noise").required(true).args(["std", "salt_pepper"])))]
pub struct DenoiseArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Gaussian noise of this standard deviation (clipped to [0, 1]).
    #[arg(long, allow_negative_numbers = true)]
    pub std: Option<f32>,
    /// Salt-and-pepper noise: each pixel black or white with this probability.
    #[arg(long, allow_negative_numbers = true)]
    pub salt_pepper: Option<f32>,
    /// Number of images (the first ones of the split), 8 per grid row.
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    /// Seed of the noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u32,
    /// PNG file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScoreArg {
    /// Negative ELBO (VAE).
    Elbo,
    /// Reconstruction MSE.
    Recon,
}

#[derive(Args, Debug)]
pub struct AnomalyArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Anomaly score [default: elbo for a VAE, recon for an AE].
    #[arg(long, value_enum)]
    pub score: Option<ScoreArg>,
    /// Flag images scoring above this [default: mean + k·std of the normal training images' scores].
    #[arg(long, allow_negative_numbers = true)]
    pub threshold: Option<f64>,
    /// Standard deviations above the mean for the default threshold.
    #[arg(long, default_value_t = 3.0, allow_negative_numbers = true)]
    pub k: f64,
    /// The normal class; every other label is an anomaly [default: the run's --normal-class].
    #[arg(long)]
    pub normal_class: Option<u8>,
    /// Write the ROC curve here (PNG); needs labels and a normal class.
    #[arg(long)]
    pub roc: Option<PathBuf>,
    /// Write per-image scores here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Evaluate only the first N images [default: all].
    #[arg(long)]
    pub n: Option<usize>,
    /// Importance samples per image for the IWAE bound (VAE) [default: 100; Burda et al. use 5000].
    #[arg(long)]
    pub k: Option<usize>,
}

fn parse_pair(s: &str) -> std::result::Result<(usize, usize), String> {
    let (a, b) = s.split_once(':').ok_or_else(|| format!("{s:?} is not a pair I:J"))?;
    let index = |v: &str| v.trim().parse::<usize>().map_err(|_| format!("{v:?} is not an image index"));
    Ok((index(a)?, index(b)?))
}

// The arguments as the options of `crate::apps`, checked before any run is opened.

impl ReconstructArgs {
    pub fn options(&self) -> Result<ReconstructOptions> {
        // --as-class is resolved once the run (its class names) is open.
        let o = ReconstructOptions {
            split: self.run.split,
            n: self.n,
            out: self.out.clone(),
            csv: self.csv.clone(),
            as_classes: Vec::new(),
        };
        o.check()?;
        Ok(o)
    }
}

impl InterpolateArgs {
    pub fn options(&self) -> Result<InterpolateOptions> {
        let o = InterpolateOptions {
            split: self.run.split,
            pairs: self.from.zip(self.to).into_iter().chain(self.pairs.iter().copied()).collect(),
            files: self.from_file.clone().zip(self.to_file.clone()),
            steps: self.steps,
            slerp: self.slerp,
            out: self.out.clone(),
        };
        o.check()?;
        Ok(o)
    }
}

impl InterpolateArgs {
    /// `--classes A:B`'s options, the classes (A, B) filled in once the run is open.
    pub fn class_walk_options(&self) -> Result<Option<(ClassWalkOptions, (String, String))>> {
        let Some(spec) = &self.classes else { return Ok(None) };
        let (a, b) = spec
            .split_once(':')
            .ok_or_else(|| Error::invalid("--classes", format!("{spec:?} is not a pair of classes A:B")))?;
        let o = ClassWalkOptions {
            split: self.run.split,
            classes: (0, 0),
            n: self.n.unwrap_or(8),
            steps: self.steps,
            out: self.out.clone(),
        };
        o.check()?;
        Ok(Some((o, (a.to_string(), b.to_string()))))
    }
}

impl ManifoldArgs {
    pub fn options(&self) -> Result<ManifoldOptions> {
        let dims = match self.dims.as_deref() {
            None => None,
            Some(&[a, b]) => Some((a, b)),
            Some(d) => {
                return Err(Error::invalid("--dims", format!("two different dimensions a,b are needed, got {d:?}")));
            }
        };
        // --class is resolved once the run (its class names) is open.
        let o = ManifoldOptions { split: self.run.split, n: self.n, dims, class: None, out: self.out.clone() };
        o.check()?;
        Ok(o)
    }
}

impl LatentPlotArgs {
    pub fn options(&self) -> Result<LatentPlotOptions> {
        let o = LatentPlotOptions { split: self.run.split, n: self.n, out: self.out.clone() };
        o.check()?;
        Ok(o)
    }
}

impl EncodeArgs {
    pub fn options(&self) -> Result<EncodeOptions> {
        let bits = if self.bits == 8 { Bits::Eight } else { Bits::Sixteen };
        let o = EncodeOptions { split: self.run.split, bits, n: self.n, out: self.out.clone() };
        o.check()?;
        Ok(o)
    }
}

impl DecodeArgs {
    pub fn options(&self) -> DecodeOptions {
        DecodeOptions { codes: self.codes.clone(), format: self.format, out: self.out.clone() }
    }
}

impl DenoiseArgs {
    pub fn options(&self) -> Result<DenoiseOptions> {
        let corruption = match (self.std, self.salt_pepper) {
            (Some(std), _) => Corruption::Gaussian { std },
            (_, Some(p)) => Corruption::SaltPepper { p },
            (None, None) => unreachable!("clap requires --std or --salt-pepper"),
        };
        let o = DenoiseOptions { split: self.run.split, corruption, n: self.n, seed: self.seed, out: self.out.clone() };
        o.check()?;
        Ok(o)
    }
}

impl AnomalyArgs {
    /// Without `--normal-class` the run's own is filled in once it is open.
    pub fn options(&self) -> Result<AnomalyOptions> {
        let o = AnomalyOptions {
            split: self.run.split,
            score: self.score.map(|s| match s {
                ScoreArg::Elbo => Score::Elbo,
                ScoreArg::Recon => Score::Recon,
            }),
            threshold: match self.threshold {
                Some(t) => ThresholdRule::Given(t),
                None => ThresholdRule::AboveNormal { k: self.k },
            },
            normal_class: self.normal_class,
            roc: self.roc.clone(),
            csv: self.csv.clone(),
        };
        o.threshold.check()?;
        Ok(o)
    }
}

impl EvalArgs {
    pub fn options(&self) -> Result<EvalOptions> {
        let o = EvalOptions { split: self.run.split, n: self.n, k: self.k };
        o.check()?;
        Ok(o)
    }
}
