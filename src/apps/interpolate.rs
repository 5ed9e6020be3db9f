//! `interpolate`: decode the walk between the posterior means of two images.

use std::path::{Path, PathBuf};

use super::{Inference, Split, decode_all, latent_means, pixels, require_vae, split_images, wrote};
use crate::data::DataSet;
use crate::data::folder::read_planes;
use crate::error::{Error, Result};
use crate::limits;
use crate::viz::write_grid;

/// The pairs walked when none are given.
pub const DEFAULT_PAIRS: [(usize, usize); 4] = [(0, 1), (2, 3), (4, 5), (6, 7)];

pub struct InterpolateOptions {
    pub split: Split,
    /// Pairs of image indices in the split; [`DEFAULT_PAIRS`] when empty and
    /// there are no `files`.
    pub pairs: Vec<(usize, usize)>,
    /// Two PNG/JPEG files, resized to the model's size: the first pair.
    pub files: Option<(PathBuf, PathBuf)>,
    /// Decoded points per walk, both ends included.
    pub steps: usize,
    /// Also walk the great circle (VAE): a second row per pair.
    pub slerp: bool,
    pub out: PathBuf,
}

impl InterpolateOptions {
    pub fn check(&self) -> Result<()> {
        if self.steps < 2 {
            return Err(Error::invalid("--steps", "must be at least 2 (the two ends)"));
        }
        limits::at_most("--steps", self.steps, limits::MAX_STEPS)
    }

    /// The index pairs walked: the given ones, or the default ones without files.
    pub fn index_pairs(&self) -> Vec<(usize, usize)> {
        if self.pairs.is_empty() && self.files.is_none() { DEFAULT_PAIRS.to_vec() } else { self.pairs.clone() }
    }

    /// Whether `run` reads images of the data set (not only files).
    pub fn needs_data(&self) -> bool {
        !self.index_pairs().is_empty()
    }
}

pub struct InterpolateReport {
    pub pairs: usize,
    pub steps: usize,
    pub slerp: bool,
    pub out: PathBuf,
}

/// Writes one row per pair and walk. `data` is needed when
/// [`InterpolateOptions::needs_data`].
pub fn run(model: &mut dyn Inference, data: Option<&DataSet>, o: &InterpolateOptions) -> Result<InterpolateReport> {
    o.check()?;
    if o.slerp {
        require_vae(model.arch(), "--slerp")?;
    }
    let cfg = model.arch().config.clone();
    let mut pairs = Vec::new();
    if let Some((from, to)) = &o.files {
        pairs.push((
            load_picture(from, cfg.channels, cfg.image_rows, cfg.image_cols)?,
            load_picture(to, cfg.channels, cfg.image_rows, cfg.image_cols)?,
        ));
    }
    let index_pairs = o.index_pairs();
    if !index_pairs.is_empty() {
        let data = data.ok_or_else(|| Error::unsupported("interpolate", "the run's data for image indices"))?;
        let images = split_images(model.arch(), data, o.split)?;
        for &(i, j) in &index_pairs {
            if let Some(&bad) = [i, j].iter().find(|&&k| k >= images.count) {
                let why = format!("{bad}: the {} split has {} images", o.split, images.count);
                return Err(Error::invalid("image index", why));
            }
            pairs.push((pixels(images, &[i]), pixels(images, &[j])));
        }
    }
    let walks: &[Walk] = if o.slerp { &[Walk::Linear, Walk::Spherical] } else { &[Walk::Linear] };
    // Every tile of the picture is one image of the model's size.
    limits::check_rows("--steps", pairs.len() * walks.len() * (o.steps + 2), &cfg)?;
    let tiles = interpolation_rows(model, &pairs, o.steps, walks)?;
    write_grid(&o.out, &tiles, cfg.channels, cfg.image_rows, cfg.image_cols, o.steps + 2)?;
    Ok(InterpolateReport { pairs: pairs.len(), steps: o.steps, slerp: o.slerp, out: o.out.clone() })
}

impl std::fmt::Display for InterpolateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let walks = if self.slerp { "linear then spherical rows" } else { "linear" };
        writeln!(f, "{} pair(s), {} steps between the posterior means, {walks}", self.pairs, self.steps)?;
        wrote(f, &self.out)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// Straight line: (1 - t)·a + t·b.
    Linear,
    /// Great circle (White 2016, "Sampling Generative Networks"): it keeps the
    /// norm typical of a Gaussian prior, where the straight line dips towards 0.
    Spherical,
}

/// The point at fraction t of the walk from a to b.
pub fn walk_point(walk: Walk, a: &[f32], b: &[f32], t: f64) -> Vec<f32> {
    let (wa, wb) = match walk {
        Walk::Linear => (1.0 - t, t),
        Walk::Spherical => {
            let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let norm = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
            let cos = (dot / (norm(a) * norm(b))).clamp(-1.0, 1.0);
            let omega = cos.acos();
            // Parallel vectors (or a zero one): the arc is the line.
            if omega.sin().abs() < 1e-6 || !omega.is_finite() {
                (1.0 - t, t)
            } else {
                (((1.0 - t) * omega).sin() / omega.sin(), (t * omega).sin() / omega.sin())
            }
        }
    };
    a.iter().zip(b).map(|(&x, &y)| (wa * x as f64 + wb * y as f64) as f32).collect()
}

/// One row per pair and walk: image A, `steps` decoded points from A's mean to
/// B's (both ends included), image B. Pairs are (A, B) images of D pixels.
/// Returns (rows · (steps + 2), D) pixels, ready for a grid `steps + 2` wide.
pub fn interpolation_rows(
    model: &mut dyn Inference,
    pairs: &[(Vec<f32>, Vec<f32>)],
    steps: usize,
    walks: &[Walk],
) -> Result<Vec<f32>> {
    assert!(steps >= 2, "a walk has at least its two ends");
    let latent = model.arch().config.latent;
    let ends: Vec<f32> = pairs.iter().flat_map(|(a, b)| a.iter().chain(b).copied()).collect();
    let means = latent_means(model, &ends, None, 2 * pairs.len())?;
    let mut out = Vec::new();
    for ((a, b), m) in pairs.iter().zip(means.chunks_exact(2 * latent)) {
        let (ma, mb) = m.split_at(latent);
        for &walk in walks {
            let z: Vec<f32> =
                (0..steps).flat_map(|i| walk_point(walk, ma, mb, i as f64 / (steps - 1) as f64)).collect();
            out.extend_from_slice(a);
            out.extend(decode_all(model, &z, None, steps)?);
            out.extend_from_slice(b);
        }
    }
    Ok(out)
}

/// A PNG or JPEG as `channels` planes (grayscale or R, G, B) of pixels in
/// [0, 1], resized to rows x cols like the training folders are.
pub fn load_picture(path: &Path, channels: usize, rows: usize, cols: usize) -> Result<Vec<f32>> {
    Ok(read_planes(path, channels, rows, cols)?.iter().map(|&p| p as f32 / 255.0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_start_and_end_at_the_ends() {
        let (a, b) = ([1.0f32, 0.0], [0.0f32, 2.0]);
        for walk in [Walk::Linear, Walk::Spherical] {
            let close = |u: &[f32], v: &[f32]| u.iter().zip(v).all(|(x, y)| (x - y).abs() < 1e-6);
            assert!(close(&walk_point(walk, &a, &b, 0.0), &a));
            assert!(close(&walk_point(walk, &a, &b, 1.0), &b));
        }
        assert_eq!(walk_point(Walk::Linear, &a, &b, 0.5), [0.5, 1.0]);
        // Halfway along the arc between orthogonal vectors: each weighted sin(π/4)/sin(π/2).
        let h = walk_point(Walk::Spherical, &a, &b, 0.5);
        let w = std::f32::consts::FRAC_1_SQRT_2;
        assert!((h[0] - w).abs() < 1e-6 && (h[1] - 2.0 * w).abs() < 1e-6, "{h:?}");
        // Parallel vectors fall back to the line.
        assert_eq!(walk_point(Walk::Spherical, &[1.0, 1.0], &[2.0, 2.0], 0.5), [1.5, 1.5]);
    }
}
