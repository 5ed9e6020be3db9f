//! Training data: u8 images of 1 (grayscale) or 3 (RGB) channels with
//! optional labels, loaded from the embedded Fashion-MNIST subset, a folder
//! of IDX files, a CIFAR-10/100 folder, or a folder of PNG/JPEG images, and
//! fed to training by a background batch thread.

pub mod cifar;
pub mod embedded;
pub mod folder;
pub mod idx;
pub mod loader;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where Debian's `dataset-fashion-mnist` package installs the full data set.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Images of `channels` planes (1: grayscale, 3: R, G, B), u8, all the same
/// size, optional labels.
///
/// Layout (NCHW): `pixels[((i * channels + k) * rows + r) * cols + c]` is
/// channel `k`, row `r`, column `c` of image `i`.
#[derive(Clone, PartialEq, Eq)]
pub struct Images {
    pub pixels: Vec<u8>,
    pub count: usize,
    /// Planes per image: 1 or 3.
    pub channels: usize,
    pub rows: usize,
    pub cols: usize,
    /// One label per image, when the source has them.
    pub labels: Option<Vec<u8>>,
    /// Names of labels `0..`, when known.
    pub class_names: Option<Vec<String>>,
}

impl Images {
    /// Values per image: channels x rows x cols.
    pub fn dim(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let dim = self.dim();
        &self.pixels[i * dim..(i + 1) * dim]
    }

    /// The images at `indices`, in that order, with their labels.
    pub fn select(&self, indices: &[usize]) -> Images {
        let mut pixels = Vec::with_capacity(indices.len() * self.dim());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        Images {
            pixels,
            count: indices.len(),
            channels: self.channels,
            rows: self.rows,
            cols: self.cols,
            labels: self.labels.as_ref().map(|l| indices.iter().map(|&i| l[i]).collect()),
            class_names: self.class_names.clone(),
        }
    }

    /// The images of one class, for one-class training. Unlabeled images
    /// belong to no class, so the result is empty for them.
    pub fn with_label(&self, label: u8) -> Images {
        let indices: Vec<usize> = match &self.labels {
            Some(labels) => (0..self.count).filter(|&i| labels[i] == label).collect(),
            None => Vec::new(),
        };
        self.select(&indices)
    }
}

// Summarises instead of dumping megabytes of pixels into test failures and logs.
impl std::fmt::Debug for Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Images")
            .field("count", &self.count)
            .field("channels", &self.channels)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("labeled", &self.labels.is_some())
            .field("class_names", &self.class_names)
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct DataSet {
    pub name: String,
    pub train: Images,
    pub test: Images,
}

/// The `--data` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSpec {
    /// The Fashion-MNIST subset compiled into the binary.
    Embedded,
    /// A folder of IDX files or of images.
    Path(PathBuf),
}

/// How to read a folder of images; IDX folders ignore these.
#[derive(Clone, Debug)]
pub struct FolderOptions {
    /// Resize every image to `n x n`; `None` keeps native sizes, which must then agree.
    pub image_size: Option<usize>,
    /// Share of the images held out as the test split.
    pub test_fraction: f32,
    /// Seeds the train/test split.
    pub seed: u32,
    /// 1 (grayscale) or 3 (RGB); `None`: 3 if any image has colour, else 1.
    pub channels: Option<usize>,
}

impl Default for FolderOptions {
    fn default() -> Self {
        FolderOptions { image_size: Some(28), test_fraction: 0.1667, seed: 0, channels: None }
    }
}

/// `None` and `"embedded"` mean the embedded subset, `"fashion-mnist"` the
/// Debian package's folder; anything else is a folder path (write
/// `./fashion-mnist` for a local folder of that name).
pub fn parse_data_arg(arg: Option<&str>) -> DataSpec {
    match arg {
        None | Some("embedded") => DataSpec::Embedded,
        Some("fashion-mnist") => DataSpec::Path(PathBuf::from(FASHION_MNIST_DIR)),
        Some(path) => DataSpec::Path(PathBuf::from(path)),
    }
}

pub fn load(spec: &DataSpec, folder: &FolderOptions) -> Result<DataSet> {
    match spec {
        DataSpec::Embedded => embedded::load(),
        DataSpec::Path(dir) if dir == Path::new(FASHION_MNIST_DIR) => load_fashion_mnist(dir),
        DataSpec::Path(dir) => {
            let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
            if !meta.is_dir() {
                return Err(Error::bad_file(
                    dir,
                    "not a directory; --data takes a folder of IDX files, of CIFAR binaries or of PNG/JPEG images",
                ));
            }
            if let Some(set) = idx::load_dir(dir)? {
                return Ok(set);
            }
            match cifar::load_dir(dir)? {
                Some(set) => Ok(set),
                None => folder::load(dir, folder),
            }
        }
    }
}

fn load_fashion_mnist(dir: &Path) -> Result<DataSet> {
    let missing = || {
        let why = "Fashion-MNIST is not installed here: `apt-get install dataset-fashion-mnist`, \
                   or pass --data DIR";
        Error::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, why))
    };
    if !dir.is_dir() {
        return Err(missing());
    }
    let mut set = idx::load_dir(dir)?.ok_or_else(missing)?;
    set.name = "fashion-mnist".into();
    let names: Vec<String> = embedded::FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect();
    set.train.class_names = Some(names.clone());
    set.test.class_names = Some(names);
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labeled() -> Images {
        Images {
            pixels: (0..12).collect(),
            count: 3,
            channels: 1,
            rows: 2,
            cols: 2,
            labels: Some(vec![5, 7, 5]),
            class_names: None,
        }
    }

    #[test]
    fn select_keeps_labels_in_order() {
        let s = labeled().select(&[2, 0]);
        assert_eq!(s.count, 2);
        assert_eq!(s.pixels, [8, 9, 10, 11, 0, 1, 2, 3]);
        assert_eq!(s.labels, Some(vec![5, 5]));
    }

    #[test]
    fn with_label_keeps_one_class() {
        let images = labeled();
        assert_eq!(images.with_label(5).pixels, images.select(&[0, 2]).pixels);
        assert_eq!(images.with_label(9).count, 0);
        let unlabeled = Images { labels: None, ..images };
        assert_eq!(unlabeled.with_label(5).count, 0);
    }

    #[test]
    fn data_arg_keywords() {
        assert_eq!(parse_data_arg(None), DataSpec::Embedded);
        assert_eq!(parse_data_arg(Some("embedded")), DataSpec::Embedded);
        assert_eq!(parse_data_arg(Some("fashion-mnist")), DataSpec::Path(FASHION_MNIST_DIR.into()));
        assert_eq!(parse_data_arg(Some("./fashion-mnist")), DataSpec::Path("./fashion-mnist".into()));
    }

    #[test]
    fn missing_fashion_mnist_says_how_to_get_it() {
        let message = load_fashion_mnist(Path::new("/nonexistent/fashion-mnist")).unwrap_err().to_string();
        assert!(message.starts_with("/nonexistent/fashion-mnist: "), "{message}");
        assert!(message.contains("apt-get install dataset-fashion-mnist") && message.contains("--data DIR"));
    }
}
