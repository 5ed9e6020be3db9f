//! TensorBoard event files: TFRecord framing of `Event` protocol buffers.
//!
//! Each record is the payload's length (u64, little-endian), the masked
//! CRC32C of those 8 bytes, the payload (an `Event`), and the masked CRC32C
//! of the payload. Records go out as they happen through a buffer that is
//! flushed and synced at every epoch's end; TensorBoard skips a truncated
//! last record, so a crash leaves a readable file.
//!
//! One file per training session, named as TensorFlow names them
//! (`events.out.tfevents.<unix secs>.<hostname>.<pid>`), in the run folder
//! itself so that `tensorboard --logdir runs` shows each run under its
//! folder's name. Steps are optimizer steps (batches trained since the
//! run began), so a resumed run's new file continues the old ones.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::error::{Error, Result};

/// What every event file's name starts with; TensorBoard looks for `tfevents`.
pub const EVENTS_PREFIX: &str = "events.out.tfevents.";

/// The messages of TensorFlow's `event.proto`, `summary.proto`,
/// `tensor.proto` and `tensor_shape.proto` that the files use, with their
/// field numbers (tensorboard/compat/proto). Fields never written are left out.
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(double, tag = "1")]
        pub wall_time: f64,
        #[prost(int64, tag = "2")]
        pub step: i64,
        #[prost(oneof = "What", tags = "3, 5, 7")]
        pub what: Option<What>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        /// "brain.Event:2", the first event of every file.
        #[prost(string, tag = "3")]
        FileVersion(String),
        #[prost(message, tag = "5")]
        Summary(Summary),
        #[prost(message, tag = "7")]
        SessionLog(SessionLog),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SessionLog {
        /// `SessionStatus`: START (1) marks a restart; TensorBoard then drops
        /// older events at or after its step (a crashed session's last ticks).
        #[prost(int32, tag = "1")]
        pub status: i32,
    }

    pub const SESSION_START: i32 = 1;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        #[prost(message, repeated, tag = "1")]
        pub value: Vec<Value>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        #[prost(string, tag = "1")]
        pub tag: String,
        #[prost(message, optional, tag = "9")]
        pub metadata: Option<SummaryMetadata>,
        #[prost(oneof = "Kind", tags = "2, 4, 8")]
        pub value: Option<Kind>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(float, tag = "2")]
        SimpleValue(f32),
        #[prost(message, tag = "4")]
        Image(Image),
        #[prost(message, tag = "8")]
        Tensor(TensorProto),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Image {
        #[prost(int32, tag = "1")]
        pub height: i32,
        #[prost(int32, tag = "2")]
        pub width: i32,
        /// 1 grayscale, 2 grayscale and alpha, 3 RGB, 4 RGBA.
        #[prost(int32, tag = "3")]
        pub colorspace: i32,
        #[prost(bytes = "vec", tag = "4")]
        pub encoded_image_string: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SummaryMetadata {
        #[prost(message, optional, tag = "1")]
        pub plugin_data: Option<PluginData>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PluginData {
        #[prost(string, tag = "1")]
        pub plugin_name: String,
        #[prost(bytes = "vec", tag = "2")]
        pub content: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        /// `DataType` (types.proto).
        #[prost(int32, tag = "1")]
        pub dtype: i32,
        #[prost(message, optional, tag = "2")]
        pub tensor_shape: Option<TensorShapeProto>,
        #[prost(bytes = "vec", repeated, tag = "8")]
        pub string_val: Vec<Vec<u8>>,
    }

    pub const DT_STRING: i32 = 7;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {
        #[prost(message, repeated, tag = "2")]
        pub dim: Vec<Dim>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        #[prost(int64, tag = "1")]
        pub size: i64,
    }
}

use proto::{Event, Kind, What};

/// TFRecord's masked CRC32C: a CRC stored beside the data it covers is
/// rotated and offset, so that the CRC of data holding CRCs stays strong.
pub fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One record's bytes: the framing around `payload`.
pub fn record(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc(payload).to_le_bytes());
    out
}

/// An open event file that records are appended to.
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Creates a new event file in `dir` and writes its version record. An
    /// existing file is never opened: a name already taken (a second
    /// session of this process within the same second) gets a suffix.
    pub fn create(dir: &Path) -> Result<EventWriter> {
        let secs = wall_time() as u64;
        let base = format!("{EVENTS_PREFIX}{secs:010}.{}.{}", hostname(), std::process::id());
        let mut n = 0;
        let (path, file) = loop {
            let name = if n == 0 { base.clone() } else { format!("{base}.{n}") };
            let path = dir.join(name);
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(Error::io(path, e)),
            }
        };
        let mut writer = EventWriter { path, file: BufWriter::new(file) };
        writer.write(0, What::FileVersion("brain.Event:2".into()))?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Scalars `(tag, value)` at `step`, in one event.
    pub fn scalars(&mut self, step: u64, values: &[(&str, f32)]) -> Result<()> {
        let value = values.iter().map(|&(tag, v)| value(tag, None, Kind::SimpleValue(v))).collect();
        self.write(step, What::Summary(proto::Summary { value }))
    }

    /// A PNG image at `step`; `source` names the file it came from in errors.
    pub fn png(&mut self, step: u64, tag: &str, png: Vec<u8>, source: &Path) -> Result<()> {
        use image::ImageDecoder;
        let bad = |e: image::ImageError| Error::bad_file(source, format!("not a PNG TensorBoard can show: {e}"));
        let decoder = image::codecs::png::PngDecoder::new(std::io::Cursor::new(&png)).map_err(bad)?;
        let (width, height) = decoder.dimensions();
        let colorspace = i32::from(decoder.color_type().channel_count());
        let image = proto::Image { height: height as i32, width: width as i32, colorspace, encoded_image_string: png };
        self.write(step, What::Summary(proto::Summary { value: vec![value(tag, None, Kind::Image(image))] }))
    }

    /// Text at `step`, for TensorBoard's text plugin (which reads it as Markdown).
    pub fn text(&mut self, step: u64, tag: &str, text: &str) -> Result<()> {
        let metadata = proto::SummaryMetadata {
            plugin_data: Some(proto::PluginData { plugin_name: "text".into(), content: Vec::new() }),
        };
        let tensor = proto::TensorProto {
            dtype: proto::DT_STRING,
            // A scalar: the text plugin shows a rank-1 tensor as a table.
            tensor_shape: Some(proto::TensorShapeProto { dim: Vec::new() }),
            string_val: vec![text.as_bytes().to_vec()],
        };
        self.write(
            step,
            What::Summary(proto::Summary { value: vec![value(tag, Some(metadata), Kind::Tensor(tensor))] }),
        )
    }

    /// Marks a resumed session that goes on from `step`.
    pub fn session_start(&mut self, step: u64) -> Result<()> {
        self.write(step, What::SessionLog(proto::SessionLog { status: proto::SESSION_START }))
    }

    /// Hands the records written so far to the disk.
    pub fn flush(&mut self) -> Result<()> {
        self.file.flush().and_then(|()| self.file.get_ref().sync_data()).map_err(|e| Error::io(&self.path, e))
    }

    fn write(&mut self, step: u64, what: What) -> Result<()> {
        let event = Event { wall_time: wall_time(), step: step as i64, what: Some(what) };
        self.file.write_all(&record(&event.encode_to_vec())).map_err(|e| Error::io(&self.path, e))
    }
}

fn value(tag: &str, metadata: Option<proto::SummaryMetadata>, kind: Kind) -> proto::Value {
    proto::Value { tag: tag.into(), metadata, value: Some(kind) }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The machine's name for the file name, reduced to characters safe there.
fn hostname() -> String {
    let name = raw_hostname();
    let safe: String =
        name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).take(64).collect();
    if safe.is_empty() { "localhost".into() } else { safe }
}

#[cfg(unix)]
fn raw_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; POSIX may leave it
    // unterminated when the name is cut, so the last byte stays 0.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
    if ok { String::from_utf8_lossy(&buf[..end]).into_owned() } else { String::new() }
}

#[cfg(not(unix))]
fn raw_hostname() -> String {
    std::env::var("COMPUTERNAME").unwrap_or_default()
}

/// Whether `name` is an event file's name.
pub fn is_event_file(name: &str) -> bool {
    name.starts_with(EVENTS_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from TensorBoard's own `masked_crc32c`
    /// (tensorboard.compat.tensorflow_stub.pywrap_tensorflow).
    const MASKED_CHECK: u32 = 0xc78a_b0e5;
    const MASKED_LEN_24: u32 = 0x224b_7fa3;

    #[test]
    fn crcs_are_masked_as_tfrecord_masks_them() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283, "the CRC32C check value");
        assert_eq!(masked_crc(b"123456789"), MASKED_CHECK);
        assert_eq!(masked_crc(&24u64.to_le_bytes()), MASKED_LEN_24);
    }

    #[test]
    fn records_frame_their_payload() {
        let r = record(b"abc");
        assert_eq!(r.len(), 3 + 16);
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[8..12], &masked_crc(&3u64.to_le_bytes()).to_le_bytes());
        assert_eq!(&r[12..15], b"abc");
        assert_eq!(&r[15..], &masked_crc(b"abc").to_le_bytes());
    }
}
