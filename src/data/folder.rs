//! A folder of PNG/JPEG images. With sub-folders, each sub-folder is a class
//! (labels follow the sorted folder names); without, the images are unlabeled.
//! Images become 8-bit grayscale (1 channel) or RGB (3 channel planes):
//! `FolderOptions::channels`, by default 3 if any image has colour (a pixel
//! whose R, G and B differ), else 1. Alpha is composited on black (each
//! colour scaled by alpha/255), so a transparent pixel is black in both.
//! A seeded permutation holds out the test split.

use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};

use super::{DataSet, FolderOptions, Images};
use crate::error::{Error, Result};
use crate::limits;
use crate::rng;

pub fn load(dir: &Path, options: &FolderOptions) -> Result<DataSet> {
    let f = options.test_fraction;
    if !(0.0..1.0).contains(&f) {
        return Err(Error::invalid("test fraction", format!("{f} is not in [0, 1)")));
    }
    if options.image_size == Some(0) {
        return Err(Error::invalid("image size", "must be at least 1"));
    }
    if let Some(n) = options.image_size {
        limits::at_most("image size", n, limits::MAX_IMAGE_SIDE)?;
    }
    if let Some(c) = options.channels.filter(|c| !matches!(c, 1 | 3)) {
        return Err(Error::invalid("--channels", format!("{c} is not 1 (grayscale) or 3 (RGB)")));
    }
    let (files, class_names) = list(dir)?;
    if files.is_empty() {
        return Err(Error::bad_file(dir, "no IDX files and no PNG/JPEG images found"));
    }
    let all = decode_all(&files, options.image_size, options.channels, class_names)?;

    // At least one test image when there are two, and always one to train on.
    let count = all.count;
    let wanted = (count as f64 * f as f64).ceil() as usize;
    let test_count = if count >= 2 { wanted.clamp(1, count - 1) } else { 0 };
    let order: Vec<usize> = rng::permutation(count, options.seed, 0).into_iter().map(|i| i as usize).collect();
    let (test, train) = order.split_at(test_count);
    // Sorted, so each split keeps the folder's (class) order.
    let sorted = |s: &[usize]| {
        let mut s = s.to_vec();
        s.sort_unstable();
        s
    };
    Ok(DataSet { name: dir.display().to_string(), train: all.select(&sorted(train)), test: all.select(&sorted(test)) })
}

/// Image files with their labels, sorted by class then file name, and the class names.
type Listing = (Vec<(PathBuf, Option<u8>)>, Option<Vec<String>>);

fn list(dir: &Path) -> Result<Listing> {
    let (subdirs, loose) = entries(dir)?;
    if subdirs.is_empty() {
        return Ok((loose.into_iter().map(|p| (p, None)).collect(), None));
    }
    if let Some(stray) = loose.first() {
        return Err(Error::bad_file(stray, "image beside class sub-folders; put every image in its class's folder"));
    }
    if subdirs.len() > 256 {
        return Err(Error::bad_file(dir, format!("{} class sub-folders, at most 256 fit u8 labels", subdirs.len())));
    }
    let mut files = Vec::new();
    let mut names = Vec::new();
    for (label, sub) in subdirs.iter().enumerate() {
        names.push(sub.file_name().unwrap_or_default().to_string_lossy().into_owned());
        files.extend(entries(sub)?.1.into_iter().map(|p| (p, Some(label as u8))));
    }
    Ok((files, Some(names)))
}

/// A folder's sub-folders and image files, each sorted by name; hidden entries
/// and other files are skipped.
fn entries(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let read = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let (mut subdirs, mut images) = (Vec::new(), Vec::new());
    for entry in read {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let ext = path.extension().unwrap_or_default().to_string_lossy().to_ascii_lowercase();
        if path.is_dir() {
            subdirs.push(path);
        } else if matches!(ext.as_str(), "png" | "jpg" | "jpeg") {
            images.push(path);
        }
    }
    subdirs.sort();
    images.sort();
    Ok((subdirs, images))
}

fn decode_all(
    files: &[(PathBuf, Option<u8>)],
    size: Option<usize>,
    channels: Option<usize>,
    class_names: Option<Vec<String>>,
) -> Result<Images> {
    // Both reductions of every image, so that one decode serves either
    // channel count; the choice is made once all images are seen.
    let (mut gray_pixels, mut rgb_pixels) = (Vec::new(), Vec::new());
    let mut colour = false;
    // The first image fixes the native size that all others must match.
    let mut first: Option<(&Path, u32, u32)> = None;
    for (path, _) in files {
        let picture = read_picture(path)?;
        colour |= has_colour(&picture);
        let (w, h) = match size {
            Some(n) => (n as u32, n as u32),
            None => (picture.width(), picture.height()),
        };
        match first {
            None => first = Some((path, w, h)),
            Some((first_path, fw, fh)) if (fw, fh) != (w, h) => {
                return Err(Error::bad_file(
                    path,
                    format!(
                        "image is {w}x{h}, but {} is {fw}x{fh}; set an image size to resize them all",
                        first_path.display()
                    ),
                ));
            }
            Some(_) => {}
        }
        if channels != Some(3) {
            gray_pixels.extend_from_slice(resize_gray(picture.to_luma8(), h as usize, w as usize).as_raw());
        }
        if channels != Some(1) {
            rgb_pixels.extend(rgb_planes(&resize_rgb(picture.to_rgb8(), h as usize, w as usize)));
        }
    }
    let (_, cols, rows) = first.expect("decode_all is given at least one file");
    let channels = channels.unwrap_or(if colour { 3 } else { 1 });
    let pixels = if channels == 3 { rgb_pixels } else { gray_pixels };
    // Every file has a label when there are classes, none when there are not.
    let labels = files.iter().map(|&(_, label)| label).collect::<Option<Vec<u8>>>();
    Ok(Images { pixels, count: files.len(), channels, rows: rows as usize, cols: cols as usize, labels, class_names })
}

/// A PNG or JPEG (recognised by its contents), alpha composited on black.
/// Its size is read from its header and capped (`limits::MAX_PICTURE_PIXELS`)
/// before anything is decoded, and a JPEG cut short is refused (the decoder
/// would fill what is missing with gray), as a truncated PNG is.
pub fn read_picture(path: &Path) -> Result<image::DynamicImage> {
    let bytes = read_capped(path, limits::MAX_PICTURE_FILE_BYTES)?;
    let reader = || -> Result<image::ImageReader<std::io::Cursor<&[u8]>>> {
        image::ImageReader::new(std::io::Cursor::new(&bytes[..])).with_guessed_format().map_err(|e| Error::io(path, e))
    };
    let bad = |e: image::ImageError| Error::bad_file(path, format!("cannot decode image: {e}"));
    let (w, h) = reader()?.into_dimensions().map_err(bad)?;
    let pixels = w as u64 * h as u64;
    if pixels > limits::MAX_PICTURE_PIXELS {
        return Err(Error::bad_file(
            path,
            format!(
                "its header says {w}x{h} = {pixels} pixels, more than the limit of {}; resize it first",
                limits::MAX_PICTURE_PIXELS
            ),
        ));
    }
    let mut reader = reader()?;
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_is_whole(&bytes) {
        return Err(Error::bad_file(path, "the JPEG is truncated: its last scan has no end-of-image marker"));
    }
    let mut caps = image::Limits::default();
    caps.max_alloc = Some(8 * limits::MAX_PICTURE_PIXELS);
    reader.limits(caps);
    let picture = reader.decode().map_err(bad)?;
    if !picture.color().has_alpha() {
        return Ok(picture);
    }
    // Each colour scaled by alpha/255, rounded.
    let over_black = |v: u8, a: u8| ((v as u32 * a as u32 + 127) / 255) as u8;
    Ok(if picture.color().has_color() {
        let rgba = picture.to_rgba8();
        let rgb = image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
            let p = rgba.get_pixel(x, y);
            image::Rgb([0, 1, 2].map(|k| over_black(p[k], p[3])))
        });
        image::DynamicImage::ImageRgb8(rgb)
    } else {
        let la = picture.to_luma_alpha8();
        let gray = image::GrayImage::from_fn(la.width(), la.height(), |x, y| {
            let p = la.get_pixel(x, y);
            image::Luma([over_black(p[0], p[1])])
        });
        image::DynamicImage::ImageLuma8(gray)
    })
}

/// Whether a JPEG's last scan is followed by an end-of-image marker (FF D9).
/// Inside a scan an FF byte is always followed by 00 or a restart marker, so
/// neither marker occurs by chance; an embedded thumbnail's end comes before
/// the main image's scans.
fn jpeg_is_whole(bytes: &[u8]) -> bool {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
    matches!((last(0xD9), last(0xDA)), (Some(end), Some(scan)) if end > scan)
}

/// A file's bytes, refused without being read when it is larger than `max`.
pub fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len > max {
        return Err(Error::bad_file(path, format!("{len} bytes, more than the limit of {max} for this file")));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// Whether any pixel's R, G and B differ.
pub fn has_colour(picture: &image::DynamicImage) -> bool {
    picture.color().has_color() && picture.to_rgb8().pixels().any(|p| p[0] != p[1] || p[1] != p[2])
}

/// The picture at `path` as `channels` planes of rows x cols (NCHW), as training folders are read.
pub fn read_planes(path: &Path, channels: usize, rows: usize, cols: usize) -> Result<Vec<u8>> {
    let picture = read_picture(path)?;
    Ok(match channels {
        3 => rgb_planes(&resize_rgb(picture.to_rgb8(), rows, cols)),
        _ => resize_gray(picture.to_luma8(), rows, cols).into_raw(),
    })
}

/// `gray` at rows x cols (unchanged when it already is), as training folders are resized.
pub fn resize_gray(gray: image::GrayImage, rows: usize, cols: usize) -> image::GrayImage {
    if gray.dimensions() == (cols as u32, rows as u32) {
        gray
    } else {
        imageops::resize(&gray, cols as u32, rows as u32, FilterType::Triangle)
    }
}

/// `rgb` at rows x cols (unchanged when it already is).
pub fn resize_rgb(rgb: image::RgbImage, rows: usize, cols: usize) -> image::RgbImage {
    if rgb.dimensions() == (cols as u32, rows as u32) {
        rgb
    } else {
        imageops::resize(&rgb, cols as u32, rows as u32, FilterType::Triangle)
    }
}

/// Interleaved RGB as three planes: all R, then all G, then all B.
pub fn rgb_planes(rgb: &image::RgbImage) -> Vec<u8> {
    let raw = rgb.as_raw();
    (0..3).flat_map(|k| raw.iter().skip(k).step_by(3).copied()).collect()
}
