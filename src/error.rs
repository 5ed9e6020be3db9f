//! The library's one error type: every message is one line that names what is
//! wrong and where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file exists but its contents are not what they should be.
    #[error("{path}: {what}")]
    BadFile { path: PathBuf, what: String },
    /// Reading or writing a file failed. The field is not called `source`:
    /// thiserror would chain it, and `{:#}` would print the OS error twice.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    /// A command-line or configuration value is out of range.
    #[error("invalid {name}: {why}")]
    InvalidArg { name: &'static str, why: String },
    /// Training diverged at training step `step` (1-based, counted over the
    /// whole run); the last checkpoint on disk is left as it was.
    #[error("loss became {value} at step {step} (epoch {epoch}); stopped, the last good checkpoint is kept")]
    NonFiniteLoss { value: f32, step: u64, epoch: usize },
    /// A run's `config.json` parses but fails validation; `error` says why.
    /// (Not `source`, for the reason given at `Io`.)
    #[error("{path}: not a valid run configuration: {error}")]
    BadRunConfig { path: PathBuf, error: Box<Error> },
    /// A use (`what`: a subcommand or an option) that this run or its data
    /// cannot serve.
    #[error("{what} needs {needs}")]
    Unsupported { what: &'static str, needs: String },
    /// A model the exporter cannot write in `format` (`ONNX`); `what` names
    /// the op or input.
    #[error("cannot export as {format}: {what}")]
    Unexportable { format: &'static str, what: String },
    /// The GPU path could not be set up or failed.
    #[error("gpu: {0}")]
    Gpu(String),
    /// A buffer larger than the device can bind whole.
    #[error("gpu: {label} needs {bytes} bytes, more than {device}'s largest storage binding ({limit} bytes)")]
    BindingTooLarge { label: String, bytes: u64, limit: u64, device: String },
    /// Training stopped on request (SIGINT, SIGTERM) between two steps:
    /// `batches_done` batches of epoch `epoch` (1-based) were trained, `step`
    /// steps in all, with loss sums `recon` and `kl` over that epoch's
    /// batches so far. Engines report `epoch` 0; the trainer fills it in and
    /// writes a checkpoint that `--resume` continues from exactly there.
    #[error("interrupted at epoch {epoch}, step {step}")]
    Interrupted { epoch: usize, batches_done: usize, step: u64, recon: f64, kl: f64 },
}

pub type Result<T> = std::result::Result<T, Error>;

/// The most characters of detail an error message carries.
pub const MAX_DETAIL: usize = 400;

/// `text` cut to [`MAX_DETAIL`] characters, saying how much was left out.
pub fn clip(text: String) -> String {
    match text.char_indices().nth(MAX_DETAIL) {
        Some((end, _)) => format!("{}... ({} more bytes)", &text[..end], text.len() - end),
        None => text,
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io { path: path.into(), error }
    }

    /// `what` is clipped to [`MAX_DETAIL`] characters: it may quote the
    /// file (a parser's message), and the error stays one readable line.
    pub fn bad_file(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::BadFile { path: path.into(), what: clip(what.into()) }
    }

    pub fn invalid(name: &'static str, why: impl Into<String>) -> Self {
        Error::InvalidArg { name, why: why.into() }
    }

    pub fn unsupported(what: &'static str, needs: impl Into<String>) -> Self {
        Error::Unsupported { what, needs: needs.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// anyhow's `{:#}` prints the chain of sources: the OS error must not be one.
    #[test]
    fn io_errors_print_once() {
        let e = Error::io("out", std::io::Error::from(std::io::ErrorKind::AlreadyExists));
        let text = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(text.matches("exists").count(), 1, "{text}");
    }
}
