//! The run's pictures: a grid of samples from the prior and a grid of test
//! images above their reconstructions. Drawn on the CPU from the current
//! parameters: a few dozen decodes, whichever engine trains.

use std::path::Path;

use crate::cpu::CpuModel;
use crate::cpu::adam::AdamConfig;
use crate::data::Images;
use crate::data::loader::gather_batch;
use crate::error::Result;
use crate::model::{Architecture, ModelKind};
use crate::rng::{self, Stream};
use crate::viz::{pair_rows, write_grid};

pub const GRID_COLS: usize = 8;

/// A CPU model for inference only.
pub fn inference_model(arch: &Architecture, params: Vec<f32>) -> CpuModel {
    CpuModel::new(arch.clone(), params, AdamConfig { lr: 0.0, beta1: 0.9, beta2: 0.999, eps: 1e-8 })
}

/// Decodes `n` latent draws into an image grid. VAE: z ~ N(0, I), the prior.
/// AE (no prior): z ~ N(m, s²), a diagonal Gaussian fitted to the codes of
/// `reference` images (required for an AE), the usual way to sample a plain autoencoder.
pub fn sample_grid(model: &mut CpuModel, reference: Option<&Images>, n: usize, seed: u32, path: &Path) -> Result<()> {
    let cfg = model.arch.config.clone();
    let mut z = vec![0.0; n * cfg.latent];
    rng::fill_normal(&mut z, seed, Stream::Sample, 0);
    if cfg.kind == ModelKind::Ae {
        let reference = reference.expect("an AE samples around the codes of reference images");
        let latent = cfg.latent;
        let (mean, std) = code_moments(model, reference);
        for row in z.chunks_exact_mut(latent) {
            for j in 0..latent {
                row[j] = mean[j] + std[j] * row[j];
            }
        }
    }
    let pixels = model.decode(&z, n);
    write_grid(path, &pixels, cfg.image_rows, cfg.image_cols, GRID_COLS)
}

/// The first `n` images of `images` (a multiple of the grid width) in rows
/// above their reconstructions (VAE: decoded from the posterior mean).
pub fn reconstruction_grid(model: &mut CpuModel, images: &Images, n: usize, path: &Path) -> Result<()> {
    let n = n.min(images.count);
    let indices: Vec<u32> = (0..n as u32).collect();
    let mut x = vec![0.0; n * images.dim()];
    gather_batch(images, &indices, &mut x);
    let recon = reconstruct(model, &x, n);
    write_grid(path, &pair_rows(&x, &recon, images.dim(), GRID_COLS), images.rows, images.cols, GRID_COLS)
}

/// Deterministic reconstruction: decode(mu) for a VAE, decode(z) for an AE.
pub fn reconstruct(model: &mut CpuModel, x: &[f32], rows: usize) -> Vec<f32> {
    let code = model.encode(x, rows);
    let z = posterior_mean(&model.arch, &code, rows);
    model.decode(&z, rows)
}

/// mu (B, L) out of an encoder output: mulv's first half for a VAE, z for an AE.
pub fn posterior_mean(arch: &Architecture, code: &[f32], rows: usize) -> Vec<f32> {
    let width = arch.code_width();
    let latent = arch.config.latent;
    (0..rows).flat_map(|r| code[r * width..r * width + latent].iter().copied()).collect()
}

fn code_moments(model: &mut CpuModel, images: &Images) -> (Vec<f32>, Vec<f32>) {
    let n = images.count.min(2000);
    let indices: Vec<u32> = (0..n as u32).collect();
    let mut x = vec![0.0; n * images.dim()];
    gather_batch(images, &indices, &mut x);
    let z = model.encode(&x, n);
    let latent = model.arch.config.latent;
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
    (m, s)
}
