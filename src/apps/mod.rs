//! Putting trained models to work: reconstruction, interpolation, manifolds,
//! latent plots, compression, denoising, anomaly detection and evaluation.
//!
//! Every use goes through [`Inference`], so a GPU implementation can replace
//! the CPU one without touching the uses. Each use has a `run` taking the
//! opened model, the run's data and its options, writing its files and
//! returning a report that prints as the command line shows it
//! (`train::run_dir::RunDir` opens a run).

pub mod anomaly;
pub mod codes;
pub mod compress;
pub mod denoise;
pub mod eval;
pub mod interpolate;
pub mod latent_plot;
pub mod manifold;
pub mod pca;
pub mod reconstruct;

pub use crate::engine::Inference;

use std::path::Path;
use std::sync::Arc;

use crate::cpu::CpuModel;
use crate::data::{DataSet, Images};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, GpuInference};
use crate::model::{Architecture, ModelKind};

/// Rows per encoder or decoder call, so that activations stay a few MB
/// whatever the data set's size.
pub const CHUNK: usize = 1024;

/// Steps of `rng::Stream::Sample` each use draws at (with the run's seed),
/// so that no two uses share random numbers; `sample_grid` uses step 0.
pub mod sample_steps {
    pub const DENOISE_GAUSSIAN: u32 = 1;
    pub const DENOISE_SALT_PEPPER: u32 = 2;
    /// Plus the image's index in its split.
    pub const IWAE: u32 = 1 << 24;
}

/// Which split of a run's data a use reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    Train,
    Test,
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// A run's batch size and seed: the ELBO's draws (`eval`, `anomaly`) are
/// then the trainer's test-loss draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Draws {
    pub batch_size: usize,
    pub seed: u32,
}

impl Draws {
    pub fn check(&self) -> Result<()> {
        at_least_one("--batch-size", self.batch_size)
    }
}

/// The images of `split`, checked against the model's image size.
pub fn split_images<'a>(arch: &Architecture, data: &'a DataSet, split: Split) -> Result<&'a Images> {
    let images = match split {
        Split::Train => &data.train,
        Split::Test => &data.test,
    };
    check_image_size(arch, images, &data.name)?;
    Ok(images)
}

/// The pixels of the first `n` images (all when `None`) and how many there are.
pub fn first_pixels(images: &Images, n: Option<usize>) -> (Vec<f32>, usize) {
    let indices: Vec<usize> = (0..n.unwrap_or(images.count).min(images.count)).collect();
    (pixels(images, &indices), indices.len())
}

/// A trained model for inference: on the GPU of `gpu`, or the CPU path when `None`.
pub fn open_model(arch: &Architecture, params: Vec<f32>, gpu: Option<Arc<GpuContext>>) -> Result<Box<dyn Inference>> {
    Ok(match gpu {
        Some(ctx) => Box::new(GpuInference::new(ctx, arch.clone(), &params, CHUNK)?),
        None => Box::new(CpuModel::for_inference(arch.clone(), params)),
    })
}

/// Errors unless a count option (`name`) is at least 1.
pub fn at_least_one(name: &'static str, n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid(name, "must be at least 1"));
    }
    Ok(())
}

/// The report line of a file a use wrote.
pub(crate) fn wrote(f: &mut std::fmt::Formatter<'_>, path: &Path) -> std::fmt::Result {
    writeln!(f, "wrote {}", path.display())
}

/// Errors unless the run is a VAE: `what` names the option or use that needs one.
pub fn require_vae(arch: &Architecture, what: &'static str) -> Result<()> {
    match arch.config.kind {
        ModelKind::Vae => Ok(()),
        ModelKind::Ae => Err(Error::invalid(what, "needs a VAE (a posterior and a prior); this run is an AE")),
    }
}

/// Errors unless the model is conditional and `class` one of its classes:
/// `flag` names the option that asked for it.
pub fn check_class(arch: &Architecture, flag: &'static str, class: u8) -> Result<()> {
    match arch.config.classes {
        0 => Err(Error::invalid(flag, "needs a conditional model (train --conditional); this one is not")),
        k if class as usize >= k => {
            Err(Error::invalid(flag, format!("class {class}, but the model has {k} classes (0 to {})", k - 1)))
        }
        _ => Ok(()),
    }
}

/// Errors unless the images have the size and channels the model was trained on.
pub fn check_image_size(arch: &Architecture, images: &Images, source: &str) -> Result<()> {
    let (rows, cols) = (arch.config.image_rows, arch.config.image_cols);
    if (images.rows, images.cols) != (rows, cols) {
        return Err(Error::bad_file(
            source,
            format!("images are {}x{}, the model takes {rows}x{cols}", images.rows, images.cols),
        ));
    }
    let channels = arch.config.channels;
    if images.channels != channels {
        return Err(Error::bad_file(
            source,
            format!(
                "images have {} channel(s) ({}), the model was trained on {channels} ({})",
                images.channels,
                colour_name(images.channels),
                colour_name(channels)
            ),
        ));
    }
    Ok(())
}

/// "grayscale" or "RGB".
pub fn colour_name(channels: usize) -> &'static str {
    if channels == 3 { "RGB" } else { "grayscale" }
}

/// The pixels of images `indices` scaled to [0, 1] (N, D).
pub fn pixels(images: &Images, indices: &[usize]) -> Vec<f32> {
    let dim = images.dim();
    let mut out = Vec::with_capacity(indices.len() * dim);
    for &i in indices {
        out.extend(images.image(i).iter().map(|&p| p as f32 / 255.0));
    }
    out
}

/// `f` applied to x (rows, width_in) and its rows' labels in chunks of
/// [`CHUNK`] rows, outputs concatenated.
fn chunked(
    x: &[f32],
    labels: Option<&[u8]>,
    rows: usize,
    mut f: impl FnMut(&[f32], Option<&[u8]>, usize) -> Result<Vec<f32>>,
) -> Result<Vec<f32>> {
    if rows == 0 {
        return Ok(Vec::new());
    }
    let width = x.len() / rows;
    let mut out = Vec::new();
    for (i, part) in x.chunks(CHUNK * width).enumerate() {
        let r = part.len() / width;
        let labels = labels.map(|l| &l[(i * CHUNK).min(l.len())..(i * CHUNK + r).min(l.len())]);
        out.extend(f(part, labels, r)?);
    }
    Ok(out)
}

/// The encoder's outputs (N, code width) for x (N, D) (and, for a
/// conditional model, each image's class).
pub fn encode_all(model: &mut dyn Inference, x: &[f32], labels: Option<&[u8]>, rows: usize) -> Result<Vec<f32>> {
    chunked(x, labels, rows, |part, l, r| model.encode(part, l, r))
}

/// Pixel probabilities (N, D) for z (N, L) (and each row's class).
pub fn decode_all(model: &mut dyn Inference, z: &[f32], labels: Option<&[u8]>, rows: usize) -> Result<Vec<f32>> {
    chunked(z, labels, rows, |part, l, r| model.decode(part, l, r))
}

/// Posterior means (VAE) or codes (AE) (N, L) of x (N, D).
pub fn latent_means(model: &mut dyn Inference, x: &[f32], labels: Option<&[u8]>, rows: usize) -> Result<Vec<f32>> {
    let (width, latent) = (model.arch().code_width(), model.arch().config.latent);
    let code = encode_all(model, x, labels, rows)?;
    Ok(code.chunks_exact(width).flat_map(|row| row[..latent].iter().copied()).collect())
}

/// The deterministic reconstruction decode(mean) (N, D) of x (N, D), with
/// the same labels at both ends.
pub fn reconstruct(model: &mut dyn Inference, x: &[f32], labels: Option<&[u8]>, rows: usize) -> Result<Vec<f32>> {
    let z = latent_means(model, x, labels, rows)?;
    decode_all(model, &z, labels, rows)
}

/// The labels of the first `rows` of `images` for `model` (see `labels_for`).
pub fn first_labels(model: &dyn Inference, images: &Images, rows: usize) -> Result<Option<Vec<u8>>> {
    labels_for(model, images, &(0..rows).collect::<Vec<_>>())
}

/// The labels of `images` at `indices` for `model`: `None` unless it is
/// conditional; a conditional model needs labelled images.
pub fn labels_for(model: &dyn Inference, images: &Images, indices: &[usize]) -> Result<Option<Vec<u8>>> {
    if model.arch().config.classes == 0 {
        return Ok(None);
    }
    let labels = images
        .labels
        .as_ref()
        .ok_or_else(|| Error::invalid("data", "the model is conditional but these images have no labels"))?;
    Ok(Some(indices.iter().map(|&i| labels[i]).collect()))
}

/// Mean squared error per pixel between two images of the same size.
pub fn mse(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "images of different sizes");
    a.iter().zip(b).map(|(&x, &y)| ((x - y) as f64).powi(2)).sum::<f64>() / a.len() as f64
}

/// Peak signal-to-noise ratio in dB of pixels in [0, 1]: 10·log10(1 / MSE)
/// (infinite for identical images).
pub fn psnr(mse: f64) -> f64 {
    -10.0 * mse.log10()
}

/// Per-image MSE of x against y, both (N, D).
pub fn per_image_mse(x: &[f32], y: &[f32], dim: usize) -> Vec<f64> {
    x.chunks_exact(dim).zip(y.chunks_exact(dim)).map(|(a, b)| mse(a, b)).collect()
}

/// Mean of a list of numbers (NaN when empty).
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Population standard deviation.
pub fn std_dev(xs: &[f64]) -> f64 {
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / xs.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, InitScheme, ModelConfig, ReconLoss, init_params};

    #[test]
    fn decode_logits_are_the_logits_of_decode() {
        let config = ModelConfig {
            kind: ModelKind::Vae,
            image_rows: 4,
            image_cols: 3,
            channels: 1,
            hidden: vec![5],
            latent: 2,
            loss: ReconLoss::Bce,
            activation: Activation::Relu,
            arch: crate::model::Arch::Mlp,
            conv: vec![],
            classes: 0,
        };
        let arch = Architecture::new(&config).unwrap();
        let mut model = CpuModel::for_inference(arch.clone(), init_params(&arch, InitScheme::Torch, 3));
        let z = [0.3, -1.0, 2.0, 0.5];
        let logits = model.decode_logits(&z, None, 2).unwrap();
        let probs = model.decode(&z, None, 2).unwrap();
        let squashed: Vec<f32> = logits.iter().map(|&v| crate::ops::sigmoid(v)).collect();
        assert_eq!(probs, squashed);
    }

    #[test]
    fn psnr_of_known_errors() {
        assert_eq!(psnr(1.0), 0.0);
        assert!((psnr(0.01) - 20.0).abs() < 1e-12);
        assert_eq!(psnr(0.0), f64::INFINITY);
    }
}
