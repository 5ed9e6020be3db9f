//! The library's one error type: every message is one line that names what is
//! wrong and where.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file exists but its contents are not what they should be.
    #[error("{path}: {what}")]
    BadFile { path: PathBuf, what: String },
    /// Reading or writing a file failed.
    /// (The source is shown in the message, not chained, so it is printed once.)
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A command-line or configuration value is out of range.
    #[error("invalid {name}: {why}")]
    InvalidArg { name: &'static str, why: String },
    /// Training diverged at training step `step` (1-based, counted over the
    /// whole run); the last checkpoint on disk is left as it was.
    #[error("loss became {value} at step {step} (epoch {epoch}); stopped, the last good checkpoint is kept")]
    NonFiniteLoss { value: f32, step: u64, epoch: usize },
    /// The GPU path could not be set up or failed.
    #[error("gpu: {0}")]
    Gpu(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub fn bad_file(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::BadFile { path: path.into(), what: what.into() }
    }

    pub fn invalid(name: &'static str, why: impl Into<String>) -> Self {
        Error::InvalidArg { name, why: why.into() }
    }
}
