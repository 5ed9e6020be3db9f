//! Compression: latent codes (posterior means, or an AE's codes) quantized
//! into a small file, and back.
//!
//! # The codes file (version 3), little-endian
//!
//! | offset | size | field                                                        |
//! |-------:|-----:|--------------------------------------------------------------|
//! | 0      | 8    | magic `GVAECODE`                                             |
//! | 8      | 2    | version, u16 = 3                                             |
//! | 10     | 1    | bits per value: 16 (f16) or 8 (affine u8)                    |
//! | 11     | 1    | image channels of the model: 1 (grayscale) or 3 (RGB)        |
//! | 12     | 4    | count of images, u32 ≥ 1                                     |
//! | 16     | 4    | latent width L, u32 ≥ 1                                      |
//! | 20     | 4    | image rows of the model, u32                                 |
//! | 24     | 4    | image cols of the model, u32                                 |
//! | 28     | 4    | classes K of a conditional model, u32 ≤ 256; 0: no labels    |
//! | 32     | 8·L  | 8 bits only: per dimension j, `min_j` f32 then `scale_j` f32  |
//! | …      |      | count·L codes, image by image: f16, or u8 `q`                 |
//! | …      |      | K > 0 only: count labels, u8 each, below K                   |
//!
//! An 8-bit code decodes to `min_j + scale_j·q`, with `scale_j =
//! (max_j - min_j)/255` over the file's codes, so each value is off by at most
//! `scale_j/2`; an f16 by at most 2⁻¹¹ of its magnitude, or by 2⁻²⁵ below
//! 2⁻¹⁴ ≈ 6.1·10⁻⁵, where f16 is subnormal.
//!
//! A conditional model's codes only mean something with the label they were
//! encoded with, so the file carries each image's label and `decode` decodes
//! with it.
//!
//! Version 2 files are the same without bytes 28-31 (a 28-byte header) and
//! without labels; version 1 files are version 2 but for byte 11, which was
//! reserved (0): they are read as 1 channel.

use std::io::Write;
use std::path::Path;

use half::f16;

use crate::data::Images;
use crate::error::{Error, Result};
use crate::limits;
use crate::model::Architecture;

pub const MAGIC: &[u8; 8] = b"GVAECODE";
pub const VERSION: u16 = 3;
/// The version before labels: a 28-byte header without the class count.
pub const VERSION_UNLABELLED: u16 = 2;
/// The version before the channel count: byte 11 was reserved, images grayscale.
pub const VERSION_GRAY: u16 = 1;
pub const HEADER_BYTES: usize = 32;
/// The header of versions 1 and 2.
pub const OLD_HEADER_BYTES: usize = 28;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bits {
    Eight = 8,
    Sixteen = 16,
}

/// A parsed codes file, its values dequantized.
#[derive(Clone, Debug, PartialEq)]
pub struct Codes {
    pub bits: Bits,
    pub count: usize,
    pub latent: usize,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    pub image_rows: usize,
    pub image_cols: usize,
    /// (count, latent).
    pub values: Vec<f32>,
    /// Classes of the conditional model that encoded, 0 when there are no labels.
    pub classes: usize,
    /// Each image's label when `classes > 0`.
    pub labels: Option<Vec<u8>>,
}

/// Each image's class, for the codes of a conditional model.
#[derive(Clone, Copy, Debug)]
pub struct Labels<'a> {
    pub classes: usize,
    pub of_each: &'a [u8],
}

/// The file's bytes for `codes` (count, latent) of a model taking images of
/// `shape` (channels, rows, cols), without labels.
pub fn to_bytes(codes: &[f32], latent: usize, shape: (usize, usize, usize), bits: Bits) -> Vec<u8> {
    to_bytes_labelled(codes, latent, shape, bits, None)
}

/// `to_bytes`, with each image's label when the model is conditional.
pub fn to_bytes_labelled(
    codes: &[f32],
    latent: usize,
    shape: (usize, usize, usize),
    bits: Bits,
    labels: Option<Labels>,
) -> Vec<u8> {
    let (channels, image_rows, image_cols) = shape;
    assert!(matches!(channels, 1 | 3), "{channels} channels");
    let count = codes.len() / latent;
    assert!(count > 0 && codes.len() == count * latent, "{} codes in rows of {latent}", codes.len());
    let classes = labels.map_or(0, |l| l.classes);
    if let Some(l) = labels {
        assert!((1..=256).contains(&classes), "{classes} classes");
        assert_eq!(l.of_each.len(), count, "a label per image");
        assert!(l.of_each.iter().all(|&k| (k as usize) < classes), "labels below {classes}");
    }
    let mut out = Vec::with_capacity(HEADER_BYTES + 8 * latent + codes.len() * 2 + count);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&[bits as u8, channels as u8]);
    for v in [count, latent, image_rows, image_cols, classes] {
        out.extend_from_slice(&u32::try_from(v).expect("sizes fit u32").to_le_bytes());
    }
    match bits {
        Bits::Sixteen => codes.iter().for_each(|&z| out.extend_from_slice(&f16::from_f32(z).to_le_bytes())),
        Bits::Eight => {
            let ranges = affine_ranges(codes, latent);
            for &(min, scale) in &ranges {
                out.extend_from_slice(&min.to_le_bytes());
                out.extend_from_slice(&scale.to_le_bytes());
            }
            for row in codes.chunks_exact(latent) {
                for (&z, &(min, scale)) in row.iter().zip(&ranges) {
                    let q = if scale > 0.0 { ((z - min) / scale).round().clamp(0.0, 255.0) } else { 0.0 };
                    out.push(q as u8);
                }
            }
        }
    }
    if let Some(l) = labels {
        out.extend_from_slice(l.of_each);
    }
    out
}

/// Per dimension (min, (max - min)/255).
fn affine_ranges(codes: &[f32], latent: usize) -> Vec<(f32, f32)> {
    (0..latent)
        .map(|j| {
            let column = codes.chunks_exact(latent).map(|r| r[j]);
            let (lo, hi) = column.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
            (lo, (hi - lo) / 255.0)
        })
        .collect()
}

/// Parses a codes file of any version; `path` names it in errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Codes> {
    let bad = |what: String| Error::bad_file(path, what);
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(bad("not a gpu-vae codes file (it does not start with GVAECODE)".into()));
    }
    if bytes.len() < 10 {
        return Err(bad(format!("truncated: {} bytes, the header takes {HEADER_BYTES}", bytes.len())));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    let header = match version {
        VERSION_GRAY | VERSION_UNLABELLED => OLD_HEADER_BYTES,
        VERSION => HEADER_BYTES,
        _ => {
            return Err(bad(format!(
                "codes file version {version}, this build reads versions {VERSION_GRAY} to {VERSION}"
            )));
        }
    };
    if bytes.len() < header {
        return Err(bad(format!("truncated: {} bytes, the header takes {header}", bytes.len())));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
    let channels = match (version, bytes[11]) {
        (VERSION_GRAY, _) => 1,
        (_, c @ (1 | 3)) => c as usize,
        (_, c) => return Err(bad(format!("header says {c} image channels, expected 1 or 3"))),
    };
    let bits = match bytes[10] {
        8 => Bits::Eight,
        16 => Bits::Sixteen,
        other => return Err(bad(format!("header says {other} bits per value, expected 8 or 16"))),
    };
    let (count, latent, image_rows, image_cols) = (u32_at(12), u32_at(16), u32_at(20), u32_at(24));
    let classes = if version == VERSION { u32_at(28) } else { 0 };
    if count == 0 || latent == 0 {
        return Err(bad(format!("header says {count} images of {latent} latent values: nothing to decode")));
    }
    if classes > 256 {
        return Err(bad(format!("header says {classes} classes; labels are bytes, at most 256")));
    }
    let table = if bits == Bits::Eight { 8 * latent } else { 0 };
    let per_value = if bits == Bits::Eight { 1 } else { 2 };
    let label_bytes = if classes > 0 { count as u128 } else { 0 };
    let want = header as u128 + table as u128 + (count as u128) * (latent as u128) * per_value + label_bytes;
    if want != bytes.len() as u128 {
        let problem = if want > bytes.len() as u128 { "truncated" } else { "trailing data" };
        let labelled = if classes > 0 { " and their labels" } else { "" };
        return Err(bad(format!(
            "{problem}: header says {count} images x {latent} values at {bits} bits{labelled} = {want} bytes, file has {}",
            bytes.len(),
            bits = bits as u8
        )));
    }
    let body_end = bytes.len() - label_bytes as usize;
    let body = &bytes[header + table..body_end];
    let values: Vec<f32> = match bits {
        Bits::Sixteen => body.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        Bits::Eight => {
            let f32_at = |at: usize| f32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
            let ranges: Vec<(f32, f32)> =
                (0..latent).map(|j| (f32_at(header + 8 * j), f32_at(header + 8 * j + 4))).collect();
            body.chunks_exact(latent)
                .flat_map(|row| row.iter().zip(&ranges).map(|(&q, &(min, scale))| min + scale * q as f32))
                .collect()
        }
    };
    // A NaN or infinite code (or an 8-bit range that makes one) decodes to
    // plausible grey images: refuse it, naming the first.
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("code {} of image {} is {}: codes must be finite", i % latent, i / latent, values[i])));
    }
    let labels = (classes > 0).then(|| bytes[body_end..].to_vec());
    if let Some((i, &k)) = labels.iter().flatten().enumerate().find(|&(_, &k)| k as usize >= classes) {
        return Err(bad(format!("label of image {i} is {k}, but the header says {classes} classes")));
    }
    Ok(Codes { bits, count, latent, channels, image_rows, image_cols, values, classes, labels })
}

/// Reads and parses a codes file.
pub fn read(path: &Path) -> Result<Codes> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes, path)
}

/// Errors unless the codes were made by a model of this shape.
pub fn check_model(codes: &Codes, arch: &Architecture, path: &Path) -> Result<()> {
    let cfg = &arch.config;
    if codes.latent != cfg.latent {
        return Err(Error::bad_file(
            path,
            format!("codes have {} latent dimensions, the run's model has {}", codes.latent, cfg.latent),
        ));
    }
    let pixels = codes.count.checked_mul(cfg.input_dim()).filter(|&p| p <= limits::MAX_DECODED_PIXELS);
    if pixels.is_none() {
        return Err(Error::bad_file(
            path,
            format!(
                "{} images of {} pixels exceed the limit of {} decoded pixels",
                codes.count,
                cfg.input_dim(),
                limits::MAX_DECODED_PIXELS
            ),
        ));
    }
    if (codes.image_rows, codes.image_cols) != (cfg.image_rows, cfg.image_cols) {
        return Err(Error::bad_file(
            path,
            format!(
                "codes are for {}x{} images, the run's model makes {}x{}",
                codes.image_rows, codes.image_cols, cfg.image_rows, cfg.image_cols
            ),
        ));
    }
    if codes.channels != cfg.channels {
        return Err(Error::bad_file(
            path,
            format!(
                "codes are for images of {} channel(s) ({}), the run's model makes {} ({})",
                codes.channels,
                super::colour_name(codes.channels),
                cfg.channels,
                super::colour_name(cfg.channels)
            ),
        ));
    }
    match (codes.classes, cfg.classes) {
        (k, m) if k == m => {}
        (0, m) => {
            return Err(Error::bad_file(
                path,
                format!(
                    "codes carry no labels (from a model that is not conditional, or a file before version 3), \
                     the run's model is conditional ({m} classes) and decodes each code with its label"
                ),
            ));
        }
        (k, 0) => {
            return Err(Error::bad_file(
                path,
                format!(
                    "codes carry labels of {k} classes (a conditional model's), the run's model is not conditional"
                ),
            ));
        }
        (k, m) => {
            return Err(Error::bad_file(path, format!("codes carry labels of {k} classes, the run's model has {m}")));
        }
    }
    Ok(())
}

/// Size of the images as a raw IDX file gzipped at level 9: the baseline a
/// codes file has to beat.
pub fn gzip_idx_bytes(images: &Images) -> usize {
    // Colour as a 4-dimensional file: count x channels x rows x cols.
    let dims = match images.channels {
        1 => vec![images.count, images.rows, images.cols],
        c => vec![images.count, c, images.rows, images.cols],
    };
    let mut idx = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        idx.extend_from_slice(&(d as u32).to_be_bytes());
    }
    idx.extend_from_slice(&images.pixels);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&idx).expect("writing to memory");
    gz.finish().expect("writing to memory").len()
}

/// Pixels in [0, 1] rounded to bytes, as images are stored.
pub fn to_u8(pixels: &[f32]) -> Vec<u8> {
    pixels.iter().map(|&v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes() -> Vec<f32> {
        (0..60).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.37).collect()
    }

    #[test]
    fn round_trips_within_the_documented_error() {
        let z = codes();
        let bytes = to_bytes(&z, 3, (1, 28, 28), Bits::Eight);
        assert_eq!(bytes.len(), HEADER_BYTES + 8 * 3 + 60);
        let back = parse(&bytes, Path::new("c")).unwrap();
        assert_eq!((back.count, back.latent, back.image_rows, back.bits), (20, 3, 28, Bits::Eight));
        let ranges = affine_ranges(&z, 3);
        for (k, (&a, &b)) in z.iter().zip(&back.values).enumerate() {
            assert!((a - b).abs() <= ranges[k % 3].1 / 2.0 * 1.0001, "{a} -> {b}");
        }
        let bytes = to_bytes(&z, 3, (1, 28, 28), Bits::Sixteen);
        assert_eq!(bytes.len(), HEADER_BYTES + 2 * 60);
        let back = parse(&bytes, Path::new("c")).unwrap();
        assert!(z.iter().zip(&back.values).all(|(&a, &b)| (a - b).abs() <= a.abs() / 2048.0));
    }

    #[test]
    fn a_constant_dimension_survives_8_bits() {
        let z = [1.5f32, 2.0, 1.5, 3.0];
        let back = parse(&to_bytes(&z, 2, (1, 2, 2), Bits::Eight), Path::new("c")).unwrap();
        assert_eq!(back.values[0], 1.5);
        assert_eq!(back.values[2], 1.5);
    }

    #[test]
    fn bad_files_are_named() {
        let bytes = to_bytes(&codes(), 3, (1, 28, 28), Bits::Sixteen);
        let err = |b: &[u8]| parse(b, Path::new("x.codes")).unwrap_err().to_string();
        assert!(err(&bytes[..bytes.len() - 1]).starts_with("x.codes: truncated: header says 20 images"));
        assert!(err(&bytes[..20]).contains("truncated: 20 bytes, the header takes 32"));
        assert!(err(b"PK\x03\x04 hello").contains("not a gpu-vae codes file"));
        let mut wrong = bytes.clone();
        wrong[10] = 12;
        assert!(err(&wrong).contains("12 bits per value"));
        wrong = bytes.clone();
        wrong[8] = 9;
        assert!(err(&wrong).contains("version 9"));
        wrong = bytes.clone();
        wrong.push(0);
        assert!(err(&wrong).contains("trailing data"));
    }

    /// A version 3 file as a version 2 one: the 28-byte header, no labels.
    fn as_version_2(v3: &[u8]) -> Vec<u8> {
        assert_eq!(v3[28..32], [0; 4], "no labels");
        let mut old = [&v3[..28], &v3[32..]].concat();
        old[8] = 2;
        old
    }

    #[test]
    fn the_channel_count_round_trips_and_version_1_files_are_gray() {
        let bytes = to_bytes(&codes(), 3, (3, 32, 32), Bits::Sixteen);
        assert_eq!((bytes[8], bytes[11]), (3, 3));
        let back = parse(&bytes, Path::new("c")).unwrap();
        assert_eq!((back.channels, back.image_rows, back.image_cols), (3, 32, 32));
        // A version 1 file: byte 11 reserved (0).
        let mut old = as_version_2(&to_bytes(&codes(), 3, (1, 28, 28), Bits::Eight));
        old[8] = 1;
        old[11] = 0;
        assert_eq!(parse(&old, Path::new("c")).unwrap().channels, 1);
        let mut wrong = bytes.clone();
        wrong[11] = 2;
        let err = parse(&wrong, Path::new("x.codes")).unwrap_err().to_string();
        assert_eq!(err, "x.codes: header says 2 image channels, expected 1 or 3");
    }

    #[test]
    fn labels_round_trip_after_the_codes() {
        let (z, labels) = (codes(), (0..20).map(|i| (i * 7 % 10) as u8).collect::<Vec<_>>());
        for bits in [Bits::Sixteen, Bits::Eight] {
            let of = Labels { classes: 10, of_each: &labels };
            let bytes = to_bytes_labelled(&z, 3, (1, 28, 28), bits, Some(of));
            assert_eq!(bytes[28..32], 10u32.to_le_bytes());
            assert_eq!(bytes[bytes.len() - 20..], labels[..]);
            let back = parse(&bytes, Path::new("c")).unwrap();
            assert_eq!((back.classes, back.labels.as_deref()), (10, Some(&labels[..])));
            // The codes are those of the same file without labels.
            assert_eq!(back.values, parse(&to_bytes(&z, 3, (1, 28, 28), bits), Path::new("c")).unwrap().values);
        }
        let bytes =
            to_bytes_labelled(&z, 3, (1, 28, 28), Bits::Sixteen, Some(Labels { classes: 10, of_each: &labels }));
        let err = |b: &[u8]| parse(b, Path::new("x.codes")).unwrap_err().to_string();
        let mut wrong = bytes.clone();
        *wrong.last_mut().unwrap() = 10;
        assert_eq!(err(&wrong), "x.codes: label of image 19 is 10, but the header says 10 classes");
        assert!(
            err(&bytes[..bytes.len() - 1])
                .contains("truncated: header says 20 images x 3 values at 16 bits and their labels")
        );
        wrong = bytes.clone();
        wrong[28..32].copy_from_slice(&257u32.to_le_bytes());
        assert!(err(&wrong).contains("257 classes"));
    }

    /// Files written by gpu-vae before labels (version 2, commit cb50890):
    /// three test images' codes from a 20-dimensional VAE, 16 and 8 bits.
    #[test]
    fn version_2_files_still_read() {
        let fixture = |name: &str| {
            let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/codes-v2").join(name);
            std::fs::read(path).unwrap()
        };
        for (name, bits) in [("plain-16bit.codes", Bits::Sixteen), ("plain-8bit.codes", Bits::Eight)] {
            let old = fixture(name);
            assert_eq!(old[8..10], [2, 0], "{name} is a version 2 file");
            let back = parse(&old, Path::new(name)).unwrap();
            assert_eq!((back.count, back.latent, back.channels, back.image_rows), (3, 20, 1, 28));
            assert_eq!((back.bits, back.classes, back.labels.as_deref()), (bits, 0, None));
            // Written again as version 3, the same bytes but for the version and the class count.
            let new = to_bytes(&back.values, 20, (1, 28, 28), bits);
            if bits == Bits::Sixteen {
                assert_eq!(as_version_2(&new), old);
            }
            assert_eq!(parse(&new, Path::new(name)).unwrap().values, back.values);
        }
    }

    #[test]
    fn non_finite_codes_are_refused() {
        let err = |b: &[u8]| parse(b, Path::new("x.codes")).unwrap_err().to_string();
        let mut bytes = to_bytes(&codes(), 3, (1, 28, 28), Bits::Sixteen);
        // Image 1, code 2: value 5, at 2 bytes each.
        bytes[HEADER_BYTES + 2 * 5..HEADER_BYTES + 2 * 6].copy_from_slice(&f16::NAN.to_le_bytes());
        assert_eq!(err(&bytes), "x.codes: code 2 of image 1 is NaN: codes must be finite");
        bytes[HEADER_BYTES + 2 * 5..HEADER_BYTES + 2 * 6].copy_from_slice(&f16::INFINITY.to_le_bytes());
        assert!(err(&bytes).contains("is inf"));
        let mut bytes = to_bytes(&codes(), 3, (1, 28, 28), Bits::Eight);
        // Dimension 1's minimum.
        bytes[HEADER_BYTES + 8..HEADER_BYTES + 12].copy_from_slice(&f32::NAN.to_le_bytes());
        assert_eq!(err(&bytes), "x.codes: code 1 of image 0 is NaN: codes must be finite");
    }
}
