//! `encode` and `decode`: a split compressed into a codes file (the format is
//! in [`super::codes`]) with what it saves, and a codes file back to images.

use std::path::PathBuf;

use super::codes::{self, Bits, Labels};
use super::{CHUNK, Inference, Split, at_least_one, decode_all, first_labels, first_pixels, latent_means};
use super::{mean, per_image_mse, psnr};
use super::{split_images, wrote};
use crate::data::{DataSet, Images, idx};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

pub struct EncodeOptions {
    pub split: Split,
    pub bits: Bits,
    /// Encode only the first n images [default: all].
    pub n: Option<usize>,
    /// The codes file.
    pub out: PathBuf,
}

impl EncodeOptions {
    pub fn check(&self) -> Result<()> {
        self.n.map_or(Ok(()), |n| at_least_one("--n", n))
    }
}

pub struct EncodeReport {
    pub split: Split,
    pub bits: Bits,
    pub count: usize,
    pub latent: usize,
    /// Values per image (channels x rows x cols, a byte each, raw).
    pub dim: usize,
    /// Size of the codes file.
    pub bytes: usize,
    /// Size of the same images as an IDX file gzipped at level 9.
    pub gzip_bytes: usize,
    /// Mean PSNR of the decoded codes read back from the file, and of the
    /// unquantized codes, in dB.
    pub psnr_quantized: f64,
    pub psnr_exact: f64,
    pub out: PathBuf,
}

/// Writes the codes of the first images of a split and measures the round trip.
pub fn encode(model: &mut dyn Inference, data: &DataSet, o: &EncodeOptions) -> Result<EncodeReport> {
    o.check()?;
    let cfg = model.arch().config.clone();
    let images = split_images(model.arch(), data, o.split)?;
    let (x, rows) = first_pixels(images, o.n);
    // A conditional model's codes go with the labels they were encoded with.
    let labels = first_labels(model, images, rows)?;
    let means = latent_means(model, &x, labels.as_deref(), rows)?;
    let tagged = labels.as_deref().map(|of_each| Labels { classes: cfg.classes, of_each });
    let shape = (cfg.channels, cfg.image_rows, cfg.image_cols);
    let bytes = codes::to_bytes_labelled(&means, cfg.latent, shape, o.bits, tagged);
    write_atomic(&o.out, &bytes)?;

    let back = codes::parse(&bytes, &o.out)?;
    let dim = cfg.input_dim();
    let mut mean_psnr = |z: &[f32]| -> Result<f64> {
        let y = decode_all(model, z, back.labels.as_deref(), rows)?;
        Ok(mean(&per_image_mse(&x, &y, dim).into_iter().map(psnr).collect::<Vec<_>>()))
    };
    let (psnr_quantized, psnr_exact) = (mean_psnr(&back.values)?, mean_psnr(&means)?);
    let gzip_bytes = codes::gzip_idx_bytes(&images.select(&(0..rows).collect::<Vec<_>>()));
    Ok(EncodeReport {
        split: o.split,
        bits: o.bits,
        count: rows,
        latent: cfg.latent,
        dim,
        bytes: bytes.len(),
        gzip_bytes,
        psnr_quantized,
        psnr_exact,
        out: o.out.clone(),
    })
}

impl std::fmt::Display for EncodeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (rows, bytes, gz) = (self.count, self.bytes, self.gzip_bytes);
        let per_image = bytes as f64 / rows as f64;
        writeln!(f, "{rows} {} images, {}-bit codes of {} values:", self.split, self.bits as u8, self.latent)?;
        writeln!(f, "  {per_image:.1} B per image ({bytes} B file)")?;
        writeln!(f, "  {:.1}x smaller than raw pixels ({} B per image)", self.dim as f64 / per_image, self.dim)?;
        writeln!(
            f,
            "  {:.1}x smaller than the gzip -9 IDX file ({gz} B, {:.1} B per image)",
            gz as f64 / bytes as f64,
            gz as f64 / rows as f64
        )?;
        writeln!(f, "  round trip PSNR {:.2} dB (unquantized codes: {:.2} dB)", self.psnr_quantized, self.psnr_exact)?;
        wrote(f, &self.out)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageFormat {
    /// One IDX image file (MNIST format); grayscale only.
    Idx,
    /// A folder of PNGs, 00000.png, 00001.png, ... (RGB for colour models)
    Png,
}

pub struct DecodeOptions {
    /// A codes file written by `encode`.
    pub codes: PathBuf,
    pub format: ImageFormat,
    /// The IDX file or PNG folder.
    pub out: PathBuf,
}

pub struct DecodeReport {
    pub count: usize,
    pub channels: usize,
    pub rows: usize,
    pub cols: usize,
    /// Classes of the labels the codes were decoded with (0: none).
    pub classes: usize,
    pub out: PathBuf,
}

/// Decodes a codes file made by a model of this shape into images.
pub fn decode(model: &mut dyn Inference, o: &DecodeOptions) -> Result<DecodeReport> {
    let c = codes::read(&o.codes)?;
    codes::check_model(&c, model.arch(), &o.codes)?;
    if o.format == ImageFormat::Idx && c.channels != 1 {
        return Err(Error::invalid(
            "--format idx",
            "IDX image files hold grayscale images and these codes are of RGB images; use --format png",
        ));
    }
    // Chunk by chunk, so that only the bytes of the images are held, not their
    // f32s; a conditional model's codes with their labels (`check_model`).
    let mut pixels = Vec::new();
    for (i, z) in c.values.chunks(CHUNK * c.latent).enumerate() {
        let rows = z.len() / c.latent;
        let labels = c.labels.as_deref().map(|l| &l[i * CHUNK..i * CHUNK + rows]);
        pixels.extend(codes::to_u8(&decode_all(model, z, labels, rows)?));
    }
    let decoded = Images {
        pixels,
        count: c.count,
        channels: c.channels,
        rows: c.image_rows,
        cols: c.image_cols,
        labels: None,
        class_names: None,
    };
    match o.format {
        ImageFormat::Idx => idx::write_idx_images(&o.out, &decoded)?,
        ImageFormat::Png => write_pngs(&o.out, &decoded)?,
    }
    Ok(DecodeReport {
        count: c.count,
        channels: c.channels,
        rows: c.image_rows,
        cols: c.image_cols,
        classes: c.classes,
        out: o.out.clone(),
    })
}

/// The images as `dir/00000.png`, `dir/00001.png`, ...: grayscale, or RGB
/// from their three planes.
fn write_pngs(dir: &std::path::Path, images: &Images) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (w, h) = (images.cols as u32, images.rows as u32);
    for i in 0..images.count {
        let path = dir.join(format!("{i:05}.png"));
        let planes = images.image(i);
        let picture = if images.channels == 3 {
            let plane = images.rows * images.cols;
            let rgb = (0..plane).flat_map(|p| [0, 1, 2].map(|c| planes[c * plane + p])).collect();
            image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, rgb).expect("one image's pixels"))
        } else {
            image::DynamicImage::ImageLuma8(
                image::GrayImage::from_raw(w, h, planes.to_vec()).expect("one image's pixels"),
            )
        };
        // Encoded in memory and written like every other output: a full disk
        // is an error, never an empty picture.
        let mut png = Vec::new();
        picture
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| Error::bad_file(&path, format!("PNG encoding failed: {e}")))?;
        write_atomic(&path, &png)?;
    }
    Ok(())
}

impl std::fmt::Display for DecodeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let colour = if self.channels == 3 { " RGB" } else { "" };
        write!(f, "decoded {} images of {}x{}{colour}", self.count, self.rows, self.cols)?;
        match self.classes {
            0 => writeln!(f)?,
            k => writeln!(f, ", each with its label (of {k} classes)")?,
        }
        wrote(f, &self.out)
    }
}
