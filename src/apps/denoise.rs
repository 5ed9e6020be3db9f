//! `denoise`: corrupt clean images, reconstruct them, and measure the gain.

use std::path::{Path, PathBuf};

use super::reconstruct::grid_cols;
use super::{Inference, Split, at_least_one, first_pixels, mean, per_image_mse, psnr, sample_steps};
use super::{split_images, wrote};
use crate::data::DataSet;
use crate::data::loader::add_input_noise;
use crate::error::{Error, Result};
use crate::rng::{self, Stream};
use crate::viz::write_grid;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Corruption {
    /// Additive N(0, std²) per pixel, clipped to [0, 1] (as denoising training does).
    Gaussian { std: f32 },
    /// Each pixel with probability p turns black or white, half and half.
    SaltPepper { p: f32 },
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corruption::Gaussian { std } => write!(f, "Gaussian noise of std {std}"),
            Corruption::SaltPepper { p } => write!(f, "salt-and-pepper noise on {p} of the pixels"),
        }
    }
}

impl Corruption {
    /// Errors unless the noise is of a positive finite std, or a probability in (0, 1].
    pub fn check(&self) -> Result<()> {
        match *self {
            Corruption::Gaussian { std } if !std.is_finite() || std <= 0.0 => {
                Err(Error::invalid("--std", format!("{std} is not a positive finite number")))
            }
            Corruption::SaltPepper { p } if !(p > 0.0 && p <= 1.0) => {
                Err(Error::invalid("--salt-pepper", format!("{p} is not a probability in (0, 1]")))
            }
            _ => Ok(()),
        }
    }
}

pub struct DenoiseOptions {
    pub split: Split,
    pub corruption: Corruption,
    /// The first `n` images of the split, 8 per grid row.
    pub n: usize,
    /// Seed of the noise.
    pub seed: u32,
    /// The PNG of noisy / denoised / clean rows.
    pub out: PathBuf,
}

impl DenoiseOptions {
    pub fn check(&self) -> Result<()> {
        at_least_one("--n", self.n)?;
        self.corruption.check()
    }
}

pub struct DenoiseReport {
    pub split: Split,
    pub corruption: Corruption,
    pub count: usize,
    /// Mean per-image PSNR against the clean images, in dB.
    pub psnr_noisy: f64,
    pub psnr_denoised: f64,
    pub out: PathBuf,
}

/// Corrupts the first images of a split, reconstructs them, writes the picture.
pub fn run(model: &mut dyn Inference, data: &DataSet, o: &DenoiseOptions) -> Result<DenoiseReport> {
    o.check()?;
    let images = split_images(model.arch(), data, o.split)?;
    let (clean, rows) = first_pixels(images, Some(o.n));
    let labels = super::first_labels(model, images, rows)?;
    let d = denoise(model, &clean, labels.as_deref(), rows, o.corruption, o.seed)?;
    write_triples(&o.out, &d, &clean, (images.channels, images.rows, images.cols), grid_cols(rows))?;
    Ok(DenoiseReport {
        split: o.split,
        corruption: o.corruption,
        count: rows,
        psnr_noisy: d.psnr_noisy,
        psnr_denoised: d.psnr_denoised,
        out: o.out.clone(),
    })
}

impl std::fmt::Display for DenoiseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} {} images, {}: PSNR {:.2} dB noisy, {:.2} dB denoised",
            self.count, self.split, self.corruption, self.psnr_noisy, self.psnr_denoised
        )?;
        wrote(f, &self.out)
    }
}

/// `noisy` (N, D) = `clean` corrupted, from `Stream::Sample` draws of `seed`.
pub fn corrupt(noisy: &mut [f32], clean: &[f32], corruption: Corruption, seed: u32) {
    match corruption {
        Corruption::Gaussian { std } => {
            add_input_noise(clean, noisy, std, seed, Stream::Sample, sample_steps::DENOISE_GAUSSIAN)
        }
        Corruption::SaltPepper { p } => {
            for (i, (n, &c)) in noisy.iter_mut().zip(clean).enumerate() {
                // One uniform decides both whether and which: u ≤ p/2 pepper, p/2 < u ≤ p salt.
                let u = rng::uniform(seed, Stream::Sample, sample_steps::DENOISE_SALT_PEPPER, i as u32);
                *n = if u > p {
                    c
                } else if u <= p / 2.0 {
                    0.0
                } else {
                    1.0
                };
            }
        }
    }
}

pub struct Denoised {
    /// (N, D) each.
    pub noisy: Vec<f32>,
    pub denoised: Vec<f32>,
    /// Mean over images of the per-image PSNR against the clean image, in dB.
    pub psnr_noisy: f64,
    pub psnr_denoised: f64,
}

pub fn denoise(
    model: &mut dyn Inference,
    clean: &[f32],
    labels: Option<&[u8]>,
    rows: usize,
    corruption: Corruption,
    seed: u32,
) -> Result<Denoised> {
    let dim = clean.len() / rows;
    let mut noisy = vec![0.0; clean.len()];
    corrupt(&mut noisy, clean, corruption, seed);
    let denoised = super::reconstruct(model, &noisy, labels, rows)?;
    let mean_psnr = |y: &[f32]| mean(&per_image_mse(y, clean, dim).into_iter().map(psnr).collect::<Vec<_>>());
    Ok(Denoised { psnr_noisy: mean_psnr(&noisy), psnr_denoised: mean_psnr(&denoised), noisy, denoised })
}

/// Images shown at most: the PSNRs cover every image, the picture the first ones.
pub const MAX_SHOWN: usize = 64;

/// Groups of three rows of `per_row` images of `shape` (channels, rows,
/// cols): noisy, denoised, clean (the first [`MAX_SHOWN`] images).
pub fn write_triples(
    path: &Path,
    d: &Denoised,
    clean: &[f32],
    shape: (usize, usize, usize),
    per_row: usize,
) -> Result<()> {
    let (channels, rows, cols) = shape;
    let tile = channels * rows * cols;
    let shown = clean.len().min(MAX_SHOWN * tile);
    let (d_noisy, d_denoised, clean) = (&d.noisy[..shown], &d.denoised[..shown], &clean[..shown]);
    let padded = |v: &[f32]| {
        let mut v = v.to_vec();
        v.resize(v.len().div_ceil(tile * per_row) * tile * per_row, 0.5);
        v
    };
    let (noisy, denoised, clean) = (padded(d_noisy), padded(d_denoised), padded(clean));
    let mut out = Vec::with_capacity(3 * noisy.len());
    for ((a, b), c) in
        noisy.chunks(tile * per_row).zip(denoised.chunks(tile * per_row)).zip(clean.chunks(tile * per_row))
    {
        out.extend_from_slice(a);
        out.extend_from_slice(b);
        out.extend_from_slice(c);
    }
    write_grid(path, &out, channels, rows, cols, per_row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salt_and_pepper_hits_about_p_of_the_pixels() {
        let clean = vec![0.5f32; 100_000];
        let mut noisy = vec![0.0; clean.len()];
        corrupt(&mut noisy, &clean, Corruption::SaltPepper { p: 0.2 }, 3);
        let black = noisy.iter().filter(|&&v| v == 0.0).count() as f64 / 1e5;
        let white = noisy.iter().filter(|&&v| v == 1.0).count() as f64 / 1e5;
        // Binomial standard error: sqrt(0.1·0.9/1e5) ≈ 0.001.
        assert!((black - 0.1).abs() < 0.005 && (white - 0.1).abs() < 0.005, "{black} {white}");
        assert!(noisy.iter().all(|&v| v == 0.0 || v == 1.0 || v == 0.5));
    }
}
