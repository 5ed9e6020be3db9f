//! IDX files (the MNIST format): a 4-byte magic `00 00 08 NN` (u8 elements,
//! `NN` dimensions), `NN` big-endian u32 sizes, then the elements row-major.
//! Files may be gzipped.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{DataSet, Images};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::limits;

/// The element-type byte for unsigned bytes, the only type images use.
const U8: u8 = 0x08;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// A parsed IDX file: `data` holds exactly `dims.iter().product()` bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

impl Idx {
    /// The file as images; it must be 3-dimensional (count x rows x cols).
    pub fn into_images(self, path: &Path) -> Result<Images> {
        match self.dims[..] {
            [count, rows, cols] => {
                Ok(Images { pixels: self.data, count, channels: 1, rows, cols, labels: None, class_names: None })
            }
            _ => Err(Error::bad_file(path, "expected images (magic 00 00 08 03), found labels (00 00 08 01)")),
        }
    }

    /// The file as labels; it must be 1-dimensional.
    pub fn into_labels(self, path: &Path) -> Result<Vec<u8>> {
        match self.dims[..] {
            [_] => Ok(self.data),
            _ => Err(Error::bad_file(path, "expected labels (magic 00 00 08 01), found images (00 00 08 03)")),
        }
    }
}

/// What an IDX header says: the sizes, the header's length and the element
/// bytes that must follow it.
struct Header {
    dims: Vec<usize>,
    len: usize,
    /// The product of `dims`, in u128: up to three u32 sizes cannot overflow it.
    data_len: u128,
}

impl Header {
    /// "60000x28x28".
    fn shape(&self) -> String {
        self.dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
    }

    /// "60000x28x28 = 47040000 bytes of pixels", for messages.
    fn describe(&self) -> String {
        let noun = if self.dims.len() == 1 { "labels" } else { "pixels" };
        format!("{} = {} bytes of {noun}", self.shape(), self.data_len)
    }
}

/// Parses the header at the start of `bytes`, which hold at least all of it
/// when the file does; `path` only names the file in errors.
fn parse_header(bytes: &[u8], path: &Path) -> Result<Header> {
    let bad = |what: String| Error::bad_file(path, what);
    let Some(magic) = bytes.first_chunk::<4>() else {
        return Err(bad(format!("truncated: {} bytes, an IDX header needs at least 4", bytes.len())));
    };
    if magic[..3] != [0, 0, U8] || !matches!(magic[3], 1 | 3) {
        let hint = if magic[..2] == GZIP_MAGIC { " (gzip data that was not unpacked)" } else { "" };
        return Err(bad(format!(
            "not a u8 IDX file: magic bytes {}{hint}, expected 00 00 08 01 (labels) or 00 00 08 03 (images)",
            hex(magic)
        )));
    }
    let ndim = magic[3] as usize;
    let len = 4 + 4 * ndim;
    if bytes.len() < len {
        return Err(bad(format!(
            "truncated: the header of a {ndim}-dimensional IDX file takes {len} bytes, file has {}",
            bytes.len()
        )));
    }
    let dims: Vec<usize> =
        bytes[4..len].chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).collect();
    let kind = if ndim == 1 { "labels" } else { "images" };
    if dims[0] == 0 {
        return Err(bad(format!("header says zero {kind}")));
    }
    let data_len = dims.iter().map(|&d| d as u128).product::<u128>();
    let header = Header { dims, len, data_len };
    if header.dims.contains(&0) {
        return Err(bad(format!("header says {}: images of zero size", header.shape())));
    }
    // Before any pixel is read or unpacked: the models' side cap.
    if let [_, rows, cols] = header.dims[..]
        && rows.max(cols) > limits::MAX_IMAGE_SIDE
    {
        return Err(bad(format!(
            "header says {}: images of {rows}x{cols}, more than the limit of {} per side",
            header.shape(),
            limits::MAX_IMAGE_SIDE
        )));
    }
    Ok(header)
}

/// Parses raw (not gzipped) IDX bytes; `path` only names the file in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<Idx> {
    let header = parse_header(bytes, path)?;
    check_data_len(&header, (bytes.len() - header.len) as u64, path)?;
    Ok(Idx { dims: header.dims, data: bytes[header.len..].to_vec() })
}

/// Errors unless `have` bytes follow the header, as it declares.
fn check_data_len(header: &Header, have: u64, path: &Path) -> Result<()> {
    if header.data_len != have as u128 {
        let problem = if header.data_len > have as u128 { "truncated" } else { "trailing data" };
        return Err(Error::bad_file(path, format!("{problem}: header says {}, file has {have}", header.describe())));
    }
    Ok(())
}

/// Reads and parses an IDX file, gunzipping it when it starts with the gzip
/// magic `1f 8b`. An IDX file starts with `00 00`, so the bytes decide, not
/// the name: a raw file called `.gz` still loads.
pub fn read_idx(path: &Path) -> Result<Idx> {
    // A raw file's header is checked against the file's length before the
    // rest is read: a huge file with a small header is refused unread.
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut head = Vec::new();
    (&mut file).take(4 + 4 * 255).read_to_end(&mut head).map_err(|e| Error::io(path, e))?;
    if !head.starts_with(&GZIP_MAGIC) {
        let header = parse_header(&head, path)?;
        check_data_len(&header, len - header.len as u64, path)?;
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_idx_file(&bytes, path)
}

/// Parses the bytes of an IDX file, raw or gzipped.
pub fn parse_idx_file(bytes: &[u8], path: &Path) -> Result<Idx> {
    if bytes.starts_with(&GZIP_MAGIC) { parse_idx_gz(bytes, path) } else { parse_idx(bytes, path) }
}

/// Deflate expands at most 1032-fold; a header declaring more than that
/// of its file is truncated, whatever the stream holds.
const MAX_GZIP_RATIO: u128 = 1032;

/// Parses gzipped IDX bytes, unpacking incrementally: the header first, then
/// exactly the bytes it declares, then one byte more to detect trailing data.
/// A small file of gigabytes of zeros (a gzip bomb) is refused after
/// unpacking what the header declares, not all of it.
pub fn parse_idx_gz(gz: &[u8], path: &Path) -> Result<Idx> {
    let mut unpacked = flate2::read::MultiGzDecoder::new(gz);
    let mut read = |n: u128, into: &mut Vec<u8>| -> Result<()> {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        (&mut unpacked)
            .take(n)
            .read_to_end(into)
            .map(|_| ())
            .map_err(|e| Error::bad_file(path, format!("gunzip failed: {e}")))
    };
    let mut head = Vec::new();
    read(4, &mut head)?;
    // The magic's last byte is the dimension count (up to 255; a wrong magic
    // is refused by `parse_header` whatever follows it).
    if let Some(&ndim) = head.get(3) {
        read(4 * ndim as u128, &mut head)?;
    }
    let header = parse_header(&head, path)?;
    let truncated =
        |have: usize| Error::bad_file(path, format!("truncated: header says {}, file has {have}", header.describe()));
    if header.data_len > MAX_GZIP_RATIO * gz.len() as u128 {
        return Err(Error::bad_file(
            path,
            format!("truncated: header says {}, more than {} gzipped bytes can hold", header.describe(), gz.len()),
        ));
    }
    // No capacity from the header: the buffer grows only as data arrives.
    let mut data = Vec::new();
    read(header.data_len, &mut data)?;
    if (data.len() as u128) < header.data_len {
        return Err(truncated(data.len()));
    }
    let mut extra = Vec::new();
    read(1, &mut extra)?;
    if !extra.is_empty() {
        return Err(Error::bad_file(
            path,
            format!("trailing data: header says {}, the unpacked file holds more", header.describe()),
        ));
    }
    Ok(Idx { dims: header.dims, data })
}

/// Writes images as a raw IDX file (magic 00 00 08 03).
pub fn write_idx_images(path: &Path, images: &Images) -> Result<()> {
    if images.channels != 1 {
        return Err(Error::invalid("IDX images", format!("{path:?}: IDX image files hold grayscale images, not RGB")));
    }
    if images.pixels.len() != images.count * images.dim() {
        return Err(Error::invalid(
            "images",
            format!("{} pixels for {}x{}x{}", images.pixels.len(), images.count, images.rows, images.cols),
        ));
    }
    write_idx(path, &[images.count, images.rows, images.cols], &images.pixels)
}

/// Writes labels as a raw IDX file (magic 00 00 08 01).
pub fn write_idx_labels(path: &Path, labels: &[u8]) -> Result<()> {
    write_idx(path, &[labels.len()], labels)
}

/// Writes atomically, so a reader never sees half a file.
fn write_idx(path: &Path, dims: &[usize], data: &[u8]) -> Result<()> {
    if dims.contains(&0) {
        return Err(Error::invalid("IDX data", format!("{path:?}: nothing to write (a size is zero)")));
    }
    let mut bytes = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    bytes.extend_from_slice(&[0, 0, U8, dims.len() as u8]);
    for &d in dims {
        let d = u32::try_from(d)
            .map_err(|_| Error::invalid("IDX data", format!("{path:?}: size {d} does not fit in u32")))?;
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    write_atomic(path, &bytes)
}

/// The four standard MNIST file names, each raw or `.gz`.
const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Loads a folder of MNIST-named IDX files, or `None` when it holds none of
/// them (it is then an image folder). Label files are optional.
pub fn load_dir(dir: &Path) -> Result<Option<DataSet>> {
    let find =
        |name: &str| [name.to_string(), format!("{name}.gz")].into_iter().map(|n| dir.join(n)).find(|p| p.is_file());
    let files = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS].map(find);
    if files.iter().all(Option::is_none) {
        return Ok(None);
    }
    let [train_images, train_labels, test_images, test_labels] = files;
    let require = |found: Option<PathBuf>, name: &str| {
        found.ok_or_else(|| Error::bad_file(dir, format!("holds IDX files but no {name} (raw or .gz)")))
    };
    let train_images = require(train_images, TRAIN_IMAGES)?;
    let test_images = require(test_images, TEST_IMAGES)?;
    let train = read_split(&train_images, train_labels.as_deref())?;
    let test = read_split(&test_images, test_labels.as_deref())?;
    check_same_size(&train, &train_images, &test, &test_images)?;
    Ok(Some(DataSet { name: dir.display().to_string(), train, test }))
}

fn read_split(images_path: &Path, labels_path: Option<&Path>) -> Result<Images> {
    let images = read_idx(images_path)?.into_images(images_path)?;
    match labels_path {
        Some(labels_path) => {
            let labels = read_idx(labels_path)?.into_labels(labels_path)?;
            with_labels(images, images_path, labels, labels_path)
        }
        None => Ok(images),
    }
}

/// Attaches labels after checking there is one per image.
pub(crate) fn with_labels(
    mut images: Images,
    images_path: &Path,
    labels: Vec<u8>,
    labels_path: &Path,
) -> Result<Images> {
    if labels.len() != images.count {
        return Err(Error::bad_file(
            labels_path,
            format!("{} labels, but {} has {} images", labels.len(), images_path.display(), images.count),
        ));
    }
    images.labels = Some(labels);
    Ok(images)
}

/// Train and test images must have one size, since one model sees both.
pub(crate) fn check_same_size(train: &Images, train_path: &Path, test: &Images, test_path: &Path) -> Result<()> {
    if (train.rows, train.cols) != (test.rows, test.cols) {
        return Err(Error::bad_file(
            test_path,
            format!(
                "images are {}x{}, but {} has {}x{}",
                test.rows,
                test.cols,
                train_path.display(),
                train.rows,
                train.cols
            ),
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(magic: [u8; 4], dims: &[u32]) -> Vec<u8> {
        let mut b = magic.to_vec();
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    fn err(bytes: &[u8]) -> String {
        parse_idx(bytes, Path::new("f.idx")).unwrap_err().to_string()
    }

    #[test]
    fn parses_images_and_labels() {
        let mut b = header([0, 0, 8, 3], &[2, 1, 3]);
        b.extend(0..6);
        let idx = parse_idx(&b, Path::new("f")).unwrap();
        assert_eq!(idx, Idx { dims: vec![2, 1, 3], data: (0..6).collect() });
        let mut b = header([0, 0, 8, 1], &[2]);
        b.extend([4, 9]);
        assert_eq!(parse_idx(&b, Path::new("f")).unwrap().into_labels(Path::new("f")).unwrap(), [4, 9]);
    }

    #[test]
    fn rejects_bad_headers() {
        assert_eq!(err(&[0, 0]), "f.idx: truncated: 2 bytes, an IDX header needs at least 4");
        let e = err(&header([0, 0, 0x0d, 3], &[1, 1, 1]));
        assert!(e.contains("magic bytes 00 00 0d 03") && e.contains("expected 00 00 08 01"), "{e}");
        assert!(err(&[0x1f, 0x8b, 8, 0]).contains("gzip"));
        assert!(err(&header([0, 0, 8, 2], &[1, 1])).contains("00 00 08 02"));
        assert!(err(&[0, 0, 8, 3, 0, 0]).contains("takes 16 bytes, file has 6"));
        assert_eq!(err(&header([0, 0, 8, 3], &[0, 28, 28])), "f.idx: header says zero images");
        assert_eq!(err(&header([0, 0, 8, 1], &[0])), "f.idx: header says zero labels");
        assert!(err(&header([0, 0, 8, 3], &[5, 0, 28])).contains("5x0x28"));
    }

    #[test]
    fn size_must_match_header_exactly() {
        let mut b = header([0, 0, 8, 3], &[60000, 28, 28]);
        b.extend([0; 1234]);
        assert_eq!(err(&b), "f.idx: truncated: header says 60000x28x28 = 47040000 bytes of pixels, file has 1234");
        let mut b = header([0, 0, 8, 1], &[2]);
        b.extend([1, 2, 3]);
        assert_eq!(err(&b), "f.idx: trailing data: header says 2 = 2 bytes of labels, file has 3");
        // Sides beyond the cap are refused from the header (no product can overflow).
        let b = header([0, 0, 8, 3], &[u32::MAX; 3]);
        assert!(
            err(&b).contains("images of 4294967295x4294967295, more than the limit of 1024 per side"),
            "{}",
            err(&b)
        );
        let b = header([0, 0, 8, 3], &[u32::MAX, 1024, 1024]);
        assert!(err(&b).starts_with("f.idx: truncated"));
    }

    fn gzip(parts: &[&[u8]]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        parts.iter().for_each(|p| gz.write_all(p).unwrap());
        gz.finish().unwrap()
    }

    #[test]
    fn gzip_is_unpacked_only_as_far_as_the_header_declares() {
        let head = header([0, 0, 8, 3], &[2, 1, 3]);
        let gz = gzip(&[&head, &[1, 2, 3, 4, 5, 6]]);
        assert_eq!(parse_idx_file(&gz, Path::new("f")).unwrap(), Idx { dims: vec![2, 1, 3], data: (1..7).collect() });
        let gz_err = |gz: &[u8]| parse_idx_file(gz, Path::new("f.gz")).unwrap_err().to_string();
        assert_eq!(
            gz_err(&gzip(&[&head, &[1, 2]])),
            "f.gz: truncated: header says 2x1x3 = 6 bytes of pixels, file has 2"
        );
        // One byte past the declared data is trailing data; a corrupt stream
        // after it is never reached, which proves the rest stays packed.
        let mut bomb = gzip(&[&head, &[0; 7]]);
        bomb.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(
            gz_err(&bomb),
            "f.gz: trailing data: header says 2x1x3 = 6 bytes of pixels, the unpacked file holds more"
        );
        // More than deflate can expand the file to.
        let e = gz_err(&gzip(&[&header([0, 0, 8, 3], &[60000, 280, 280])]));
        assert!(e.contains("truncated") && e.contains("gzipped bytes can hold"), "{e}");
        assert!(gz_err(&gzip(&[&[0, 0, 8]])).contains("truncated: 3 bytes"));
        assert!(gz_err(&[0x1f, 0x8b, 8, 0, 1]).contains("gunzip failed"));
    }

    #[test]
    fn kind_must_match_use() {
        let mut b = header([0, 0, 8, 1], &[1]);
        b.push(3);
        let idx = parse_idx(&b, Path::new("f")).unwrap();
        assert!(idx.into_images(Path::new("f")).unwrap_err().to_string().contains("found labels"));
    }
}
