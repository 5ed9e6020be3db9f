//! CIFAR-10 and CIFAR-100 in their binary versions: files of fixed-size
//! records, each the label byte(s) then a 32x32 colour image as its R, G and
//! B planes (1024 bytes each, rows top to bottom). No header: a file's size
//! must be a whole number of records.
//!
//! - CIFAR-10: `data_batch_1.bin` .. `data_batch_5.bin` (train) and
//!   `test_batch.bin`, records of 1 label byte + 3072 pixel bytes; class
//!   names from `batches.meta.txt`, one a line, when present.
//! - CIFAR-100: `train.bin` and `test.bin`, records of 2 label bytes (coarse,
//!   fine) + 3072; the fine label is used, class names from
//!   `fine_label_names.txt` when present.

use std::path::{Path, PathBuf};

use super::{DataSet, Images};
use crate::error::{Error, Result};

/// Side of a CIFAR image.
pub const SIDE: usize = 32;
/// Pixel bytes of one record: 3 planes of 32x32.
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;

/// Which of the two layouts a folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// 1 label byte per record.
    Cifar10,
    /// 2 label bytes per record (coarse, fine); the fine one is kept.
    Cifar100,
}

impl Variant {
    pub fn label_bytes(self) -> usize {
        match self {
            Variant::Cifar10 => 1,
            Variant::Cifar100 => 2,
        }
    }

    pub fn record_bytes(self) -> usize {
        self.label_bytes() + IMAGE_BYTES
    }

    /// How many classes each label byte of a record counts (CIFAR-100: 20
    /// coarse, then 100 fine).
    fn classes(self) -> &'static [u8] {
        match self {
            Variant::Cifar10 => &[10],
            Variant::Cifar100 => &[20, 100],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Variant::Cifar10 => "CIFAR-10",
            Variant::Cifar100 => "CIFAR-100",
        }
    }
}

const CIFAR10_TRAIN_BATCHES: usize = 5;

/// Loads a CIFAR-10 or CIFAR-100 folder, or `None` when it holds none of
/// their files (it is then another kind of folder).
pub fn load_dir(dir: &Path) -> Result<Option<DataSet>> {
    let file = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
    let batches: Vec<Option<PathBuf>> =
        (1..=CIFAR10_TRAIN_BATCHES).map(|i| file(&format!("data_batch_{i}.bin"))).collect();
    let test10 = file("test_batch.bin");
    let (train100, test100) = (file("train.bin"), file("test.bin"));
    let missing =
        |variant: Variant, name: &str| Error::bad_file(dir, format!("holds {} files but no {name}", variant.name()));
    let (variant, train_files, test_file, names_file) = if test10.is_some() || batches.iter().any(Option::is_some) {
        let mut train = Vec::new();
        for (i, b) in batches.into_iter().enumerate() {
            train.push(b.ok_or_else(|| missing(Variant::Cifar10, &format!("data_batch_{}.bin", i + 1)))?);
        }
        let test = test10.ok_or_else(|| missing(Variant::Cifar10, "test_batch.bin"))?;
        (Variant::Cifar10, train, test, "batches.meta.txt")
    } else if train100.is_some() || test100.is_some() {
        let train = train100.ok_or_else(|| missing(Variant::Cifar100, "train.bin"))?;
        let test = test100.ok_or_else(|| missing(Variant::Cifar100, "test.bin"))?;
        (Variant::Cifar100, vec![train], test, "fine_label_names.txt")
    } else {
        return Ok(None);
    };
    let mut train = read_files(&train_files, variant)?;
    let mut test = read_files(&[test_file], variant)?;
    let names = match file(names_file) {
        Some(path) => Some(class_names(&path)?),
        None => None,
    };
    train.class_names = names.clone();
    test.class_names = names;
    Ok(Some(DataSet { name: dir.display().to_string(), train, test }))
}

/// The records of `files`, one after the other, as 3x32x32 images with labels.
pub fn read_files(files: &[PathBuf], variant: Variant) -> Result<Images> {
    let record = variant.record_bytes();
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for path in files {
        let len = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
        let count = check_size(len, variant, path)?;
        // The count is bounded by the file's size, and the memory asked for
        // is checked before it is taken.
        let too_many = || Error::bad_file(path, format!("{count} records do not fit in memory"));
        let more = count.checked_mul(IMAGE_BYTES).ok_or_else(too_many)?;
        pixels.try_reserve_exact(more).map_err(|_| too_many())?;
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        // The file may have changed since its size was read.
        check_size(bytes.len() as u64, variant, path)?;
        for (i, r) in bytes.chunks_exact(record).enumerate() {
            if let Some((label, classes)) = r.iter().zip(variant.classes()).find(|(l, c)| l >= c) {
                return Err(Error::bad_file(
                    path,
                    format!(
                        "record {i} has label {label}, but {} has {classes} classes (0 to {})",
                        variant.name(),
                        classes - 1
                    ),
                ));
            }
            labels.push(r[variant.label_bytes() - 1]);
            pixels.extend_from_slice(&r[variant.label_bytes()..]);
        }
    }
    let count = labels.len();
    Ok(Images { pixels, count, channels: 3, rows: SIDE, cols: SIDE, labels: Some(labels), class_names: None })
}

/// The number of records in a file of `len` bytes; errors unless it is a
/// whole, non-zero number of them.
pub fn check_size(len: u64, variant: Variant, path: &Path) -> Result<usize> {
    let record = variant.record_bytes() as u64;
    let (count, over) = (len / record, len % record);
    if len == 0 {
        return Err(Error::bad_file(path, format!("empty: a {} file holds {record}-byte records", variant.name())));
    }
    if over != 0 {
        return Err(Error::bad_file(
            path,
            format!(
                "truncated record: {len} bytes is not a whole number of {record}-byte {} records \
                 ({count} records and {over} bytes over)",
                variant.name()
            ),
        ));
    }
    usize::try_from(count).map_err(|_| Error::bad_file(path, format!("{count} records do not fit in memory")))
}

/// Non-empty lines of a names file, at most 256 (labels are bytes).
fn class_names(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() > 256 {
        return Err(Error::bad_file(path, format!("{} class names, at most 256 fit u8 labels", names.len())));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_whole_records() {
        let p = Path::new("test_batch.bin");
        assert_eq!(check_size(3 * 3073, Variant::Cifar10, p).unwrap(), 3);
        assert_eq!(check_size(2 * 3074, Variant::Cifar100, p).unwrap(), 2);
        let e = check_size(3073 + 5, Variant::Cifar10, p).unwrap_err().to_string();
        assert_eq!(
            e,
            "test_batch.bin: truncated record: 3078 bytes is not a whole number of 3073-byte CIFAR-10 records \
             (1 records and 5 bytes over)"
        );
        assert!(check_size(0, Variant::Cifar100, p).unwrap_err().to_string().contains("empty"));
        // 3073 bytes read as CIFAR-100 records: a CIFAR-10 file under a CIFAR-100 name.
        assert!(check_size(3073, Variant::Cifar100, p).unwrap_err().to_string().contains("3074-byte"));
    }
}
