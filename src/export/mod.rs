//! Trained models in formats other tools run: `gpu-vae export`.

pub mod onnx;
pub mod proto;
pub mod web;
mod web_explorer;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::Architecture;

/// What `export --format` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `encoder.onnx` and `decoder.onnx`, opset 17.
    Onnx,
    /// A static folder a browser runs on WebGPU: `gpu-vae.js`, `model.json`,
    /// `weights.bin`, the latent explorer `index.html` (`export::web`).
    Web,
}

/// The files an export wrote, printed one a line.
#[derive(Debug)]
pub struct Exported {
    pub files: Vec<PathBuf>,
}

impl std::fmt::Display for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.files.iter().try_for_each(|p| crate::apps::wrote(f, p))
    }
}

/// Writes the model of `arch` with `params` into the folder `dir` (created
/// when missing). Both files are built before either is written, so a model
/// the format cannot express leaves nothing behind; each is written atomically.
/// `limits::MAX_PARAMS` (2^28 f32, 1 GiB) keeps a file under protobuf's 2 GiB,
/// so the weights stay inside it (no ONNX external data).
pub fn export(arch: &Architecture, params: &[f32], format: Format, dir: &Path) -> Result<Exported> {
    let files = match format {
        Format::Onnx => vec![
            ("encoder.onnx", onnx::to_bytes(&onnx::encoder(arch, params)?)),
            ("decoder.onnx", onnx::to_bytes(&onnx::decoder(arch, params)?)),
        ],
        Format::Web => return web::export(arch, params, None, dir),
    };
    write_files(dir, files)
}

/// Writes `files` into the folder `dir` (created when missing), each atomically.
fn write_files(dir: &Path, files: Vec<(&str, Vec<u8>)>) -> Result<Exported> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::bad_file(dir, "is not a folder: --out names the folder the files go into"));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = Vec::new();
    for (name, bytes) in files {
        let path = dir.join(name);
        write_atomic(&path, &bytes)?;
        written.push(path);
    }
    Ok(Exported { files: written })
}
