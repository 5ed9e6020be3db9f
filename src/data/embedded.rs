//! The Fashion-MNIST subset compiled into the binary (10,000 train and 2,000
//! test images; see `assets/fashion-mnist-subset/LICENSE`), so that training
//! works with no download.

use std::path::Path;

use super::{DataSet, Images, idx};
use crate::error::Result;

pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// An asset's name for error messages, and its gzipped bytes.
type Asset = (&'static str, &'static [u8]);

macro_rules! asset {
    ($name:literal) => {
        (concat!("<embedded>/", $name), include_bytes!(concat!("../../assets/fashion-mnist-subset/", $name)).as_slice())
    };
}

pub fn load() -> Result<DataSet> {
    let train = split(asset!("train-images-idx3-ubyte.gz"), asset!("train-labels-idx1-ubyte.gz"))?;
    let test = split(asset!("t10k-images-idx3-ubyte.gz"), asset!("t10k-labels-idx1-ubyte.gz"))?;
    Ok(DataSet { name: "fashion-mnist-subset (embedded)".into(), train, test })
}

fn split(images: Asset, labels: Asset) -> Result<Images> {
    let parse = |(name, gz): Asset| {
        let path = Path::new(name);
        idx::parse_idx_file(gz, path)
    };
    let (images_path, labels_path) = (Path::new(images.0), Path::new(labels.0));
    let pixels = parse(images)?.into_images(images_path)?;
    let labels = parse(labels)?.into_labels(labels_path)?;
    let mut images = idx::with_labels(pixels, images_path, labels, labels_path)?;
    images.class_names = Some(FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect());
    Ok(images)
}
