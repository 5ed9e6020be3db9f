//! The run's pictures: a grid of samples from the prior and a grid of test
//! images above their reconstructions, through any `Inference` (the trainer
//! draws them on the CPU from the current parameters: a few dozen decodes).

use std::path::Path;

use crate::apps::{Inference, labels_for, latent_means, pixels, reconstruct};
use crate::data::Images;
use crate::error::Result;
use crate::model::ModelKind;
use crate::rng::{self, Stream};
use crate::viz::{pair_rows, write_grid};

pub use crate::viz::GRID_COLS;

/// Decodes `n` latent draws into an image grid. VAE: z ~ N(0, I), the prior.
/// AE (no prior): z ~ N(m, s²), a diagonal Gaussian fitted to the codes of
/// `reference` images (required for an AE), the usual way to sample a plain autoencoder.
pub fn sample_grid(
    model: &mut dyn Inference,
    reference: Option<&Images>,
    n: usize,
    seed: u32,
    path: &Path,
) -> Result<()> {
    let cfg = model.arch().config.clone();
    // A conditional model draws each grid row from one class, in turn.
    let labels: Option<Vec<u8>> =
        (cfg.classes > 0).then(|| (0..n).map(|i| ((i / GRID_COLS) % cfg.classes) as u8).collect());
    let images = samples(model, reference, n, labels.as_deref(), seed)?;
    write_grid(path, &images, cfg.channels, cfg.image_rows, cfg.image_cols, GRID_COLS)
}

/// `n` decoded latent draws (N, D), as `sample_grid` draws them; for a
/// conditional model, row i decoded as class `labels[i]`.
pub fn samples(
    model: &mut dyn Inference,
    reference: Option<&Images>,
    n: usize,
    labels: Option<&[u8]>,
    seed: u32,
) -> Result<Vec<f32>> {
    let cfg = model.arch().config.clone();
    let latent = cfg.latent;
    let mut z = vec![0.0; n * latent];
    rng::fill_normal(&mut z, seed, Stream::Sample, 0);
    if cfg.kind == ModelKind::Ae {
        let reference = reference.expect("an AE samples around the codes of reference images");
        let (mean, std) = code_moments(model, reference)?;
        for row in z.chunks_exact_mut(latent) {
            for j in 0..latent {
                row[j] = mean[j] + std[j] * row[j];
            }
        }
    }
    crate::apps::decode_all(model, &z, labels, n)
}

/// The first `n` images of `images` (a multiple of the grid width) in rows
/// above their reconstructions (VAE: decoded from the posterior mean).
pub fn reconstruction_grid(model: &mut dyn Inference, images: &Images, n: usize, path: &Path) -> Result<()> {
    let n = n.min(images.count);
    let indices: Vec<usize> = (0..n).collect();
    let x = pixels(images, &indices);
    let labels = labels_for(model, images, &indices)?;
    let recon = reconstruct(model, &x, labels.as_deref(), n)?;
    let (c, h, w) = (images.channels, images.rows, images.cols);
    write_grid(path, &pair_rows(&x, &recon, images.dim(), GRID_COLS), c, h, w, GRID_COLS)
}

/// Per-dimension mean and standard deviation of the codes of up to 2,000 images.
fn code_moments(model: &mut dyn Inference, images: &Images) -> Result<(Vec<f32>, Vec<f32>)> {
    let n = images.count.min(2000);
    let indices: Vec<usize> = (0..n).collect();
    let x = pixels(images, &indices);
    let labels = labels_for(model, images, &indices)?;
    let z = latent_means(model, &x, labels.as_deref(), n)?;
    let latent = model.arch().config.latent;
    let mut mean = vec![0.0f64; latent];
    let mut sq = vec![0.0f64; latent];
    for row in z.chunks_exact(latent) {
        for j in 0..latent {
            mean[j] += row[j] as f64;
            sq[j] += (row[j] as f64).powi(2);
        }
    }
    let m: Vec<f32> = mean.iter().map(|s| (s / n as f64) as f32).collect();
    let s = sq.iter().zip(&m).map(|(q, &m)| ((q / n as f64) - (m as f64).powi(2)).max(0.0).sqrt() as f32).collect();
    Ok((m, s))
}
