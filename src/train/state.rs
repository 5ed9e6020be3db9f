//! `optimizer.safetensors`: everything a resumed run needs besides the
//! parameters, written atomically just before each `model.safetensors`.
//!
//! Tensors: `adam.m` and `adam.v`, F32 `[P]` (Adam's moments, laid out like
//! the parameters), and `epoch.sums`, F64 `[2]`: the reconstruction and KL
//! loss sums of the batches trained of an unfinished epoch (zeros at an
//! epoch's end), kept in f64 so that the resumed epoch's sums continue bit
//! for bit. Metadata (strings):
//!
//! | key | value |
//! |---|---|
//! | `gpu_vae.format` | `optimizer/1` |
//! | `gpu_vae.position` | JSON `{"epochs_done", "batches_done", "step", "seed", "config", "data"}`, also in `model.safetensors` |
//! | `gpu_vae.seconds` | seconds spent on the unfinished epoch so far |
//! | `gpu_vae.metrics` | the text of `metrics.csv` at this checkpoint (rows of the finished epochs) |
//! | `gpu_vae.config` | the run's `config.json` at this checkpoint, to name a setting changed since |
//!
//! The data order of epoch e is `rng::permutation(n, seed, e)` and every
//! noise draw is keyed by the global step, so the position and Adam's state
//! are all the next step needs. The position also carries fingerprints of
//! the run's settings and training data, so that state of another run, or of
//! this run with other settings or data, is never resumed.
//!
//! A checkpoint is staged, then committed by one rename: the state is written
//! to `optimizer.safetensors.next` (and a new `config.json` to
//! `config.json.next`), then `model.safetensors` is renamed into place, then
//! the staged files are renamed over theirs. Until the model's rename the old
//! pair is whole; after it, the staged files are the model's, and readers
//! ([`load`], `run_dir`) take a staged file whose position is the model's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use super::TrainConfig;
use crate::checkpoint::{self, POSITION_KEY};
use crate::data::Images;
use crate::engine::{AdamState, LossSums};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// What a staged file's name carries after the name it will take.
pub const STAGED: &str = ".next";
const CONFIG_KEY: &str = "gpu_vae.config";
const FORMAT_KEY: &str = "gpu_vae.format";
const FORMAT: &str = "optimizer/1";
const SECONDS_KEY: &str = "gpu_vae.seconds";
const METRICS_KEY: &str = "gpu_vae.metrics";

/// Where a run stands: `step` steps taken in all, `epochs_done` epochs
/// finished and `batches_done` batches of the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub epochs_done: usize,
    pub batches_done: usize,
    pub step: u64,
    pub seed: u32,
    /// [`config_fingerprint`] of the run's settings (0: not recorded).
    #[serde(default)]
    pub config: u64,
    /// [`data_fingerprint`] of its training images (0: not recorded).
    #[serde(default)]
    pub data: u64,
}

impl Position {
    /// The form stored in both files' metadata.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a position serializes")
    }
}

/// A 64-bit FNV-1a-style hash taken a word at a time: a fingerprint that
/// tells settings or data apart, stable across builds (std's hashers are not).
pub fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for chunk in part.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(word)).wrapping_mul(0x0100_0000_01b3);
        }
        h = (h ^ part.len() as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The settings that must stay as they were for a run to go on: all of
/// `config.json` but `epochs` (a resumed run may change its total) and
/// `data` (the files may move; [`data_fingerprint`] checks what they hold).
pub fn config_fingerprint(config: &TrainConfig) -> u64 {
    let text = serde_json::to_string(config).expect("a config serializes");
    fingerprint(&[lasting_settings(&text).unwrap_or_default().to_string().as_bytes()])
}

/// A config's JSON text without `epochs` and `data`, read through the text
/// so that an f32 reads the same whether it was just written or read back.
fn lasting_settings(text: &str) -> Option<serde_json::Value> {
    let mut value: serde_json::Value = serde_json::from_str(text).ok()?;
    let map = value.as_object_mut()?;
    map.remove("epochs");
    map.remove("data");
    Some(value)
}

/// The training images' fingerprint: sizes, pixels and labels.
pub fn data_fingerprint(images: &Images) -> u64 {
    let sizes = [images.count, images.channels, images.rows, images.cols].map(|n| n as u64);
    let labels = images.labels.as_deref().unwrap_or_default();
    fingerprint(&[bytemuck::cast_slice(&sizes), &images.pixels, labels])
}

/// The first setting in which `now` differs from the `then` a checkpoint
/// recorded, as `name: then -> now`.
pub fn changed_setting(then: &str, now: &TrainConfig) -> Option<String> {
    fn first(path: &str, a: &serde_json::Value, b: &serde_json::Value) -> Option<String> {
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => x.keys().chain(y.keys()).find_map(|k| {
                let null = serde_json::Value::Null;
                let name = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                first(&name, x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null))
            }),
            _ if a != b => Some(format!("{path}: {a} -> {b}")),
            _ => None,
        }
    }
    first("", &lasting_settings(then)?, &lasting_settings(&serde_json::to_string(now).ok()?)?)
}

/// A run's state at a checkpoint, besides the parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    pub position: Position,
    /// Adam's moments; `steps` equals `position.step`.
    pub adam: AdamState,
    /// Loss sums of the unfinished epoch's batches done.
    pub partial: LossSums,
    /// Seconds spent on them.
    pub partial_seconds: f64,
    /// `metrics.csv` as it was at this checkpoint.
    pub metrics: String,
    /// The run's `config.json` then (None in files written before it was kept).
    pub config: Option<String>,
}

/// Writes the state atomically.
pub fn save(path: &Path, state: &TrainState) -> Result<()> {
    let p = state.adam.m.len();
    assert_eq!(state.adam.v.len(), p, "both moments have one value per parameter");
    let sums = [state.partial.recon, state.partial.kl];
    let tensors = [
        ("adam.m", Dtype::F32, vec![p], bytemuck::cast_slice::<f32, u8>(&state.adam.m)),
        ("adam.v", Dtype::F32, vec![p], bytemuck::cast_slice(&state.adam.v)),
        ("epoch.sums", Dtype::F64, vec![2], bytemuck::cast_slice(&sums)),
    ];
    let views = tensors.into_iter().map(|(name, dtype, shape, data)| {
        (name.to_string(), TensorView::new(dtype, shape, data).expect("shape matches the bytes"))
    });
    let mut metadata = HashMap::from([
        (FORMAT_KEY.to_string(), FORMAT.to_string()),
        (POSITION_KEY.to_string(), state.position.to_json()),
        (SECONDS_KEY.to_string(), state.partial_seconds.to_string()),
        (METRICS_KEY.to_string(), state.metrics.clone()),
    ]);
    if let Some(config) = &state.config {
        metadata.insert(CONFIG_KEY.to_string(), config.clone());
    }
    let file = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::bad_file(path, format!("cannot serialize the optimizer state: {e}")))?;
    write_atomic(path, &checkpoint::canonical(file))
}

/// Reads the state of the run in `dir` for a model of `params` parameters,
/// and checks that `model.safetensors` was written at the same position.
pub fn load(dir: &Path, params: usize) -> Result<TrainState> {
    let model = dir.join(super::MODEL_FILE);
    let model_position = model_position(&model)?;
    // A checkpoint committed (its model renamed into place) by a writer
    // stopped before it renamed its staged state: that state is the model's.
    let staged = staged(&dir.join(OPTIMIZER_FILE));
    if let Ok(bytes) = std::fs::read(&staged)
        && let Ok(state) = parse(&bytes, &staged, params)
        && state.position == model_position
    {
        return Ok(state);
    }
    let path = dir.join(OPTIMIZER_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::bad_file(
                &path,
                "missing: the run cannot be resumed exactly (it was written before --resume existed)",
            ));
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    let state = parse(&bytes, &path, params)?;
    let (p, q) = (&state.position, &model_position);
    if (p.config, p.data, p.seed) != (q.config, q.data, q.seed) {
        return Err(Error::bad_file(
            &path,
            format!(
                "written by another run than {} (other settings, seed or training data): \
                 an optimizer state belongs with the model it was saved with",
                super::MODEL_FILE
            ),
        ));
    }
    if model_position != state.position {
        return Err(Error::bad_file(
            &path,
            format!(
                "written at {} but {} at {}: the run stopped between the two writes; \
                 it cannot be resumed exactly (train it again, or use the model as it is)",
                describe(&state.position),
                super::MODEL_FILE,
                describe(&model_position)
            ),
        ));
    }
    Ok(state)
}

/// The position in a checkpoint's metadata.
pub fn model_position(model: &Path) -> Result<Position> {
    let position = checkpoint::position(model)?.ok_or_else(|| {
        Error::bad_file(model, "no training position in its metadata: written before --resume existed")
    })?;
    serde_json::from_str(&position).map_err(|e| Error::bad_file(model, format!("bad `{POSITION_KEY}` metadata: {e}")))
}

/// Where the next checkpoint stages the file `path`.
pub fn staged(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(STAGED);
    PathBuf::from(name)
}

fn describe(p: &Position) -> String {
    format!("epoch {} batch {} (step {})", p.epochs_done + 1, p.batches_done, p.step)
}

/// Parses the file's bytes; every size is checked against `params` before use.
pub fn parse(bytes: &[u8], path: &Path, params: usize) -> Result<TrainState> {
    let bad = |what: String| Error::bad_file(path, what);
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let empty = HashMap::new();
    let meta = meta.metadata().as_ref().unwrap_or(&empty);
    let get = |key: &str| meta.get(key).ok_or_else(|| bad(format!("no `{key}` metadata")));
    let format = get(FORMAT_KEY)?;
    if format != FORMAT {
        return Err(bad(format!("format {format:?}, this version reads {FORMAT:?}")));
    }
    let position: Position =
        serde_json::from_str(get(POSITION_KEY)?).map_err(|e| bad(format!("bad `{POSITION_KEY}` metadata: {e}")))?;
    let seconds: f64 = get(SECONDS_KEY)?.parse().map_err(|e| bad(format!("bad `{SECONDS_KEY}` metadata: {e}")))?;
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(bad(format!("bad `{SECONDS_KEY}` metadata: {seconds} is not a finite number >= 0")));
    }
    let metrics = get(METRICS_KEY)?.clone();
    let config = meta.get(CONFIG_KEY).cloned();

    let tensors = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let tensor = |name: &str, dtype: Dtype, len: usize| -> Result<Vec<u8>> {
        let view = tensors.tensor(name).map_err(|_| bad(format!("tensor `{name}` is missing")))?;
        if view.dtype() != dtype || view.shape() != [len] || view.data().len() != len * dtype.bitsize() / 8 {
            return Err(bad(format!(
                "tensor `{name}` is {:?} {:?}, expected {dtype:?} [{len}]",
                view.dtype(),
                view.shape()
            )));
        }
        Ok(view.data().to_vec())
    };
    let moment = |name: &str| -> Result<Vec<f32>> {
        let values: Vec<f32> = tensor(name, Dtype::F32, params)?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4")))
            .collect();
        // The second moment is a running mean of squares: never negative.
        let out_of_range = |v: &f32| !v.is_finite() || (name == "adam.v" && *v < 0.0);
        match values.iter().position(out_of_range) {
            Some(i) => Err(bad(format!("tensor `{name}` holds {} at index {i}, out of its range", values[i]))),
            None => Ok(values),
        }
    };
    let (m, v) = (moment("adam.m")?, moment("adam.v")?);
    let sums: Vec<f64> = tensor("epoch.sums", Dtype::F64, 2)?
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().expect("8")))
        .collect();
    if let Some(i) = sums.iter().position(|s| !s.is_finite()) {
        return Err(bad(format!("tensor `epoch.sums` holds {} at index {i}, not a finite sum", sums[i])));
    }
    Ok(TrainState {
        position,
        adam: AdamState { m, v, steps: position.step },
        partial: LossSums { recon: sums[0], kl: sums[1] },
        partial_seconds: seconds,
        metrics,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> TrainState {
        TrainState {
            position: Position { epochs_done: 2, batches_done: 7, step: 87, seed: 3, config: 5, data: 6 },
            adam: AdamState { m: vec![0.5, -1.0, 1e-9], v: vec![1.0, 2.0, 3.0], steps: 87 },
            partial: LossSums { recon: 0.1 + 0.2, kl: 1.0 / 3.0 },
            partial_seconds: 1.5,
            metrics: "epoch,train_loss\n1,2.0\n".into(),
            config: Some("{}".into()),
        }
    }

    #[test]
    fn round_trips_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OPTIMIZER_FILE);
        save(&path, &state()).unwrap();
        let back = parse(&std::fs::read(&path).unwrap(), &path, 3).unwrap();
        assert_eq!(back, state());
        let e = parse(&std::fs::read(&path).unwrap(), &path, 4).unwrap_err().to_string();
        assert!(e.contains("tensor `adam.m` is F32 [3], expected F32 [4]"), "{e}");
    }
}
