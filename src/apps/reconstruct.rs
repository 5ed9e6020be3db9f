//! `reconstruct`: inputs above their reconstructions, with the error of each;
//! for a conditional model, also each image decoded as other classes.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::{Inference, Split, at_least_one, check_class, mean, per_image_mse, pixels, psnr, split_images, wrote};
use crate::data::{DataSet, Images};
use crate::error::Result;
use crate::fsutil::write_atomic;
use crate::viz::GRID_COLS;
use crate::viz::{pair_rows, write_grid};

pub struct ReconstructOptions {
    pub split: Split,
    /// The first `n` images of the split, 8 per grid row.
    pub n: usize,
    /// The PNG of inputs above their reconstructions.
    pub out: PathBuf,
    /// Per-image MSE and PSNR go here instead of into the report's lines.
    pub csv: Option<PathBuf>,
    /// A conditional model's classes to decode each image as (`--as-class`):
    /// then one row per image, the image, its reconstruction (its own
    /// label at both ends) and its latent mean decoded with each of these.
    pub as_classes: Vec<u8>,
}

impl ReconstructOptions {
    pub fn check(&self) -> Result<()> {
        at_least_one("--n", self.n)
    }
}

pub struct ReconstructReport {
    pub split: Split,
    /// Mean squared error per pixel of each image.
    pub mse: Vec<f64>,
    pub out: PathBuf,
    pub csv: Option<PathBuf>,
    pub as_classes: Vec<u8>,
}

/// Reconstructs the first images of a split: writes the picture (and the CSV).
pub fn run(model: &mut dyn Inference, data: &DataSet, o: &ReconstructOptions) -> Result<ReconstructReport> {
    o.check()?;
    for &k in &o.as_classes {
        check_class(model.arch(), "--as-class", k)?;
    }
    let images = split_images(model.arch(), data, o.split)?;
    let r = reconstruct_first(model, images, o.n)?;
    if let Some(path) = &o.csv {
        write_csv(path, &r.mse)?;
    }
    let shape = (images.channels, images.rows, images.cols);
    if o.as_classes.is_empty() {
        write_pairs(&o.out, &r, shape)?;
    } else {
        let rows = as_class_rows(model, images, &r, &o.as_classes)?;
        write_grid(&o.out, &rows, shape.0, shape.1, shape.2, 2 + o.as_classes.len())?;
    }
    Ok(ReconstructReport {
        split: o.split,
        mse: r.mse,
        out: o.out.clone(),
        csv: o.csv.clone(),
        as_classes: o.as_classes.clone(),
    })
}

/// One row per image of `r`: the image, its reconstruction, then its latent
/// mean (encoded with its own label) decoded with each class of `classes`.
pub fn as_class_rows(
    model: &mut dyn Inference,
    images: &Images,
    r: &Reconstruction,
    classes: &[u8],
) -> Result<Vec<f32>> {
    let (n, dim) = (r.mse.len(), images.dim());
    let indices: Vec<usize> = (0..n).collect();
    let labels = super::labels_for(model, images, &indices)?;
    let z = super::latent_means(model, &r.inputs, labels.as_deref(), n)?;
    let mut decoded = Vec::with_capacity(classes.len());
    for &k in classes {
        decoded.push(super::decode_all(model, &z, Some(&vec![k; n]), n)?);
    }
    let mut out = Vec::with_capacity(n * (2 + classes.len()) * dim);
    for i in 0..n {
        let tile = |v: &[f32]| v[i * dim..(i + 1) * dim].to_vec();
        out.extend(tile(&r.inputs));
        out.extend(tile(&r.outputs));
        decoded.iter().for_each(|d| out.extend(tile(d)));
    }
    Ok(out)
}

impl std::fmt::Display for ReconstructReport {
    /// Per-image lines (or where the CSV went), the means, the picture.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.csv {
            Some(path) => wrote(f, path)?,
            None => {
                for (i, &m) in self.mse.iter().enumerate() {
                    writeln!(f, "image {i}: MSE {m:.6}, PSNR {:.2} dB", psnr(m))?;
                }
            }
        }
        let psnrs: Vec<f64> = self.mse.iter().map(|&m| psnr(m)).collect();
        writeln!(
            f,
            "{} {} images: mean MSE {:.6}, mean PSNR {:.2} dB",
            self.mse.len(),
            self.split,
            mean(&self.mse),
            mean(&psnrs)
        )?;
        if !self.as_classes.is_empty() {
            let classes: Vec<String> = self.as_classes.iter().map(u8::to_string).collect();
            writeln!(f, "rows: image, reconstruction, as class {}", classes.join(", "))?;
        }
        wrote(f, &self.out)
    }
}

/// The first `n` images of a split and their deterministic reconstructions.
pub struct Reconstruction {
    /// (N, D) in [0, 1].
    pub inputs: Vec<f32>,
    pub outputs: Vec<f32>,
    /// Mean squared error per pixel of each image.
    pub mse: Vec<f64>,
}

pub fn reconstruct_first(model: &mut dyn Inference, images: &Images, n: usize) -> Result<Reconstruction> {
    let indices: Vec<usize> = (0..n.min(images.count)).collect();
    let inputs = pixels(images, &indices);
    let labels = super::labels_for(model, images, &indices)?;
    let outputs = super::reconstruct(model, &inputs, labels.as_deref(), indices.len())?;
    let mse = per_image_mse(&inputs, &outputs, images.dim());
    Ok(Reconstruction { inputs, outputs, mse })
}

/// Columns of a grid of `n` images: [`GRID_COLS`], or fewer when there are fewer images.
pub fn grid_cols(n: usize) -> usize {
    n.clamp(1, GRID_COLS)
}

/// Rows of up to 8 inputs, each above its reconstructions: 2·⌈n/8⌉ rows of tiles.
/// A short last row is padded with mid-gray tiles so that pairs stay aligned.
/// `shape` is the images' (channels, rows, cols).
pub fn write_pairs(path: &Path, r: &Reconstruction, shape: (usize, usize, usize)) -> Result<()> {
    let (channels, rows, cols) = shape;
    let (dim, n) = (channels * rows * cols, r.mse.len());
    let per_row = grid_cols(n);
    let padded = |v: &[f32]| {
        let mut v = v.to_vec();
        v.resize(n.div_ceil(per_row) * per_row * dim, 0.5);
        v
    };
    let grid = pair_rows(&padded(&r.inputs), &padded(&r.outputs), dim, per_row);
    write_grid(path, &grid, channels, rows, cols, per_row)
}

/// `index,mse,psnr_db`, one line per image.
pub fn write_csv(path: &Path, mse: &[f64]) -> Result<()> {
    let mut csv = String::from("index,mse,psnr_db\n");
    for (i, &m) in mse.iter().enumerate() {
        writeln!(csv, "{i},{m:.8},{:.4}", psnr(m)).expect("writing to a String");
    }
    write_atomic(path, csv.as_bytes())
}
