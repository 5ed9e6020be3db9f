//! `interpolate`: decode the walk between the posterior means of two images;
//! for a conditional model, the walk of the label between two classes at
//! each image's fixed latent mean (`--classes A:B`).

use std::path::{Path, PathBuf};

use super::{Inference, Split, at_least_one, check_class, decode_all, first_labels, first_pixels, latent_means};
use super::{pixels, require_vae, split_images, wrote};
use crate::data::DataSet;
use crate::data::folder::read_planes;
use crate::error::{Error, Result};
use crate::limits;
use crate::model::Architecture;
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
    if model.arch().config.classes > 0 {
        // Which label the points between two images would decode with has no one answer.
        return Err(Error::unsupported(
            "interpolate between images",
            "a model that is not conditional; walk this one's label between two classes with --classes A:B",
        ));
    }
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

/// `interpolate --classes A:B`: a conditional model's label walked from one
/// class to another at fixed latent points.
pub struct ClassWalkOptions {
    pub split: Split,
    /// The classes (A, B) at the two ends.
    pub classes: (u8, u8),
    /// One row for each of the first `n` images of the split.
    pub n: usize,
    /// Decoded points per walk, both ends included.
    pub steps: usize,
    pub out: PathBuf,
}

impl ClassWalkOptions {
    pub fn check(&self) -> Result<()> {
        at_least_one("--n", self.n)?;
        if self.steps < 2 {
            return Err(Error::invalid("--steps", "must be at least 2 (the two ends)"));
        }
        limits::at_most("--steps", self.steps, limits::MAX_STEPS)
    }
}

pub struct ClassWalkReport {
    pub rows: usize,
    pub steps: usize,
    pub classes: (u8, u8),
    pub out: PathBuf,
}

impl std::fmt::Display for ClassWalkReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, b) = self.classes;
        writeln!(
            f,
            "{} image(s): each latent mean decoded as the label walks from class {a} to class {b} in {} steps",
            self.rows, self.steps
        )?;
        wrote(f, &self.out)
    }
}

/// Opens a model of the run's architecture with the given parameters, on
/// the device the run's model is on.
pub type Opener<'a> = dyn FnMut(Vec<f32>) -> Result<Box<dyn Inference>> + 'a;

/// Writes one row per image: the image, then its latent mean (encoded with
/// its own label) decoded with the one-hot label (1 − t)·onehot(A) +
/// t·onehot(B) for `steps` values of t from 0 to 1. `model` holds the run's
/// `params`; `open` makes models of the same architecture with the
/// parameters of the mixed labels between the ends (`mixed_label_params`).
pub fn class_walk(
    model: &mut dyn Inference,
    open: &mut Opener,
    params: &[f32],
    data: &DataSet,
    o: &ClassWalkOptions,
) -> Result<ClassWalkReport> {
    o.check()?;
    let (a, b) = o.classes;
    check_class(model.arch(), "--classes", a)?;
    check_class(model.arch(), "--classes", b)?;
    let arch = model.arch().clone();
    let cfg = &arch.config;
    let images = split_images(&arch, data, o.split)?;
    let (x, n) = first_pixels(images, Some(o.n));
    limits::check_rows("--steps", n * (o.steps + 1), cfg)?;
    let labels = first_labels(model, images, n)?;
    let z = latent_means(model, &x, labels.as_deref(), n)?;
    // Column by column: the ends are the plain labels, the points between
    // them need a model whose decoder reads the mixed label.
    let mut columns = Vec::with_capacity(o.steps);
    for i in 0..o.steps {
        let t = i as f64 / (o.steps - 1) as f64;
        let decoded = match i {
            0 => decode_all(model, &z, Some(&vec![a; n]), n)?,
            _ if i == o.steps - 1 => decode_all(model, &z, Some(&vec![b; n]), n)?,
            _ => {
                let mut mixed = open(mixed_label_params(&arch, params, (a, b), t))?;
                decode_all(mixed.as_mut(), &z, Some(&vec![0; n]), n)?
            }
        };
        columns.push(decoded);
    }
    let dim = cfg.input_dim();
    let mut tiles = Vec::with_capacity(n * (o.steps + 1) * dim);
    for r in 0..n {
        tiles.extend_from_slice(&x[r * dim..(r + 1) * dim]);
        columns.iter().for_each(|c| tiles.extend_from_slice(&c[r * dim..(r + 1) * dim]));
    }
    write_grid(&o.out, &tiles, cfg.channels, cfg.image_rows, cfg.image_cols, o.steps + 1)?;
    Ok(ClassWalkReport { rows: n, steps: o.steps, classes: o.classes, out: o.out.clone() })
}

/// Parameters with which a conditional model given label 0 decodes as if
/// given the mixed one-hot label (1 − t)·onehot(A) + t·onehot(B). The
/// decoder's first layer reads [z | onehot] and is affine in the one-hot, so
/// the mix adds W·mix to its pre-activation; moved into the layer's bias,
/// less label 0's own column, it is what label 0 then adds.
pub fn mixed_label_params(arch: &Architecture, params: &[f32], (a, b): (u8, u8), t: f64) -> Vec<f32> {
    let (latent, classes) = (arch.config.latent, arch.config.classes);
    assert!(classes > (a.max(b) as usize), "classes {a} and {b} of {classes}");
    let tensor = |name: &str| arch.tensors.iter().find(|s| s.name == name).expect("a decoder's first layer");
    let (weight, bias) = (tensor("decoder.0.weight"), tensor("decoder.0.bias"));
    // weight is [out, latent + classes], the label's columns last.
    let (outputs, inputs) = (weight.shape[0], weight.shape[1]);
    assert_eq!(inputs, latent + classes, "decoder.0 reads [z | onehot]");
    let mut out = params.to_vec();
    for r in 0..outputs {
        let column = |k: u8| params[weight.offset + r * inputs + latent + k as usize] as f64;
        let shift = (1.0 - t) * column(a) + t * column(b) - column(0);
        out[bias.offset + r] = (params[bias.offset + r] as f64 + shift) as f32;
    }
    out
}

/// A PNG or JPEG as `channels` planes (grayscale or R, G, B) of pixels in
/// [0, 1], resized to rows x cols like the training folders are.
pub fn load_picture(path: &Path, channels: usize, rows: usize, cols: usize) -> Result<Vec<f32>> {
    Ok(read_planes(path, channels, rows, cols)?.iter().map(|&p| p as f32 / 255.0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuModel;
    use crate::model::{Activation, Arch, InitScheme, ModelConfig, ModelKind, ReconLoss, init_params};

    fn conditional(kind: ModelKind, hidden: Vec<usize>) -> (Architecture, Vec<f32>) {
        let config = ModelConfig {
            kind,
            image_rows: 2,
            image_cols: 3,
            channels: 1,
            hidden,
            latent: 3,
            loss: ReconLoss::Bce,
            activation: Activation::Relu,
            arch: Arch::Mlp,
            conv: vec![],
            classes: 4,
        };
        let arch = Architecture::new(&config).unwrap();
        let params = init_params(&arch, InitScheme::Torch, 7);
        (arch, params)
    }

    fn close(u: &[f32], v: &[f32]) -> bool {
        u.iter().zip(v).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
    }

    /// Without hidden layers the logits are affine in the label: the mixed
    /// label's are the same mix of the two classes' logits.
    #[test]
    fn a_mixed_label_decodes_as_the_mix_of_its_classes() {
        let (arch, params) = conditional(ModelKind::Ae, vec![]);
        let z = [0.4f32, -1.2, 0.7, 1.5, 0.1, -0.3];
        let mut plain = CpuModel::for_inference(arch.clone(), params.clone());
        let (one, three) =
            (plain.decode_logits(&z, Some(&[1, 1]), 2).unwrap(), plain.decode_logits(&z, Some(&[3, 3]), 2).unwrap());
        assert!(!close(&one, &three), "the label changes the logits");
        let mut mixed = CpuModel::for_inference(arch.clone(), mixed_label_params(&arch, &params, (1, 3), 0.3));
        let want: Vec<f32> = one.iter().zip(&three).map(|(a, b)| 0.7 * a + 0.3 * b).collect();
        assert!(close(&mixed.decode_logits(&z, Some(&[0, 0]), 2).unwrap(), &want));
    }

    /// Through a hidden layer: the ends of the walk are the plain labels.
    #[test]
    fn the_walk_ends_at_its_classes() {
        let (arch, params) = conditional(ModelKind::Vae, vec![5]);
        let z = [0.4f32, -1.2, 0.7];
        let mut plain = CpuModel::for_inference(arch.clone(), params.clone());
        for (t, class) in [(0.0, 2u8), (1.0, 1)] {
            let mut mixed = CpuModel::for_inference(arch.clone(), mixed_label_params(&arch, &params, (2, 1), t));
            let (got, want) = (mixed.decode(&z, Some(&[0]), 1).unwrap(), plain.decode(&z, Some(&[class]), 1).unwrap());
            assert!(close(&got, &want), "t {t}: {got:?} vs class {class}'s {want:?}");
        }
    }

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
