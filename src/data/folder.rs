//! A folder of PNG/JPEG images. With sub-folders, each sub-folder is a class
//! (labels follow the sorted folder names); without, the images are unlabeled.
//! Images become 8-bit grayscale; a seeded permutation holds out the test split.

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
    let (files, class_names) = list(dir)?;
    if files.is_empty() {
        return Err(Error::bad_file(dir, "no IDX files and no PNG/JPEG images found"));
    }
    let all = decode_all(&files, options.image_size, class_names)?;

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
    class_names: Option<Vec<String>>,
) -> Result<Images> {
    let mut pixels = Vec::new();
    // The first image fixes the native size that all others must match.
    let mut first: Option<(&Path, u32, u32)> = None;
    for (path, _) in files {
        let gray = read_gray(path)?;
        let gray = match size {
            Some(n) => resize_gray(gray, n, n),
            None => gray,
        };
        let (w, h) = gray.dimensions();
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
        pixels.extend_from_slice(gray.as_raw());
    }
    let (_, cols, rows) = first.expect("decode_all is given at least one file");
    // Every file has a label when there are classes, none when there are not.
    let labels = files.iter().map(|&(_, label)| label).collect::<Option<Vec<u8>>>();
    Ok(Images { pixels, count: files.len(), rows: rows as usize, cols: cols as usize, labels, class_names })
}

/// A PNG or JPEG (recognised by its contents) as 8-bit grayscale.
pub fn read_gray(path: &Path) -> Result<image::GrayImage> {
    Ok(image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| Error::bad_file(path, format!("cannot decode image: {e}")))?
        .to_luma8())
}

/// `gray` at rows x cols (unchanged when it already is), as training folders are resized.
pub fn resize_gray(gray: image::GrayImage, rows: usize, cols: usize) -> image::GrayImage {
    if gray.dimensions() == (cols as u32, rows as u32) {
        gray
    } else {
        imageops::resize(&gray, cols as u32, rows as u32, FilterType::Triangle)
    }
}
