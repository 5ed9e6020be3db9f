//! `model.safetensors`: the flat parameter buffer cut into tensors named and
//! shaped like PyTorch `nn.Linear` modules (`weight [out, in]`, `bias [out]`),
//! with the model's configuration in the metadata so the file stands alone;
//! a conditional model's also names its classes.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::limits;
use crate::model::{Architecture, ModelConfig};

const CONFIG_KEY: &str = "gpu_vae.model";
/// Where in its run a training checkpoint was written (`train::state::Position`),
/// also stored in the optimizer state written with it, so that a pair from
/// two different moments is recognized.
pub const POSITION_KEY: &str = "gpu_vae.position";
/// A conditional model's class count, in decimal (also in the model's
/// configuration; here for readers that do not parse it). Absent otherwise.
pub const CLASSES_KEY: &str = "gpu_vae.classes";
/// A conditional model's class names, label by label, as a JSON array of
/// strings; absent when the data names none (or the model is not conditional).
pub const CLASS_NAMES_KEY: &str = "gpu_vae.class_names";

/// Writes the parameters atomically: the previous checkpoint survives a crash.
pub fn save(path: &Path, arch: &Architecture, params: &[f32]) -> Result<()> {
    save_at(path, arch, params, None, &[])
}

/// `save`, with the run's position (`POSITION_KEY`) and a conditional
/// model's class names (`CLASS_NAMES_KEY`, when there are any) in the metadata.
pub fn save_at(
    path: &Path,
    arch: &Architecture,
    params: &[f32],
    position: Option<&str>,
    class_names: &[String],
) -> Result<()> {
    assert_eq!(params.len(), arch.param_count);
    let bytes: &[u8] = bytemuck::cast_slice(params);
    let views = arch.tensors.iter().map(|t| {
        let data = &bytes[4 * t.offset..4 * (t.offset + t.len())];
        let view = TensorView::new(Dtype::F32, t.shape.clone(), data).expect("tensor spec matches its bytes");
        (t.name.clone(), view)
    });
    let config = serde_json::to_string(&arch.config).expect("config serializes");
    let mut metadata = HashMap::from([(CONFIG_KEY.to_string(), config)]);
    if let Some(position) = position {
        metadata.insert(POSITION_KEY.to_string(), position.to_string());
    }
    // Only for conditional models, so that other checkpoints keep their bytes.
    let classes = arch.config.classes;
    if classes > 0 {
        metadata.insert(CLASSES_KEY.to_string(), classes.to_string());
        if !class_names.is_empty() {
            assert_eq!(class_names.len(), classes, "a name per class");
            let names = serde_json::to_string(class_names).expect("strings serialize");
            metadata.insert(CLASS_NAMES_KEY.to_string(), names);
        }
    }
    let file = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::bad_file(path, format!("cannot serialize checkpoint: {e}")))?;
    write_atomic(path, &canonical(file))
}

/// A safetensors file with the keys of its header sorted. The library writes
/// its metadata map in hash order, which differs from one process to the
/// next, and the same parameters must give the same bytes (a resumed run is
/// compared with an uninterrupted one byte for byte). Only the header
/// changes: tensor offsets count from the end of the header.
pub(crate) fn canonical(file: Vec<u8>) -> Vec<u8> {
    type Sorted = std::collections::BTreeMap<String, serde_json::Value>;
    let n = u64::from_le_bytes(file[..8].try_into().expect("8 bytes")) as usize;
    let mut header: Sorted = serde_json::from_slice(&file[8..8 + n]).expect("safetensors writes a JSON object");
    if let Some(meta) = header.get_mut("__metadata__") {
        let sorted: Sorted = serde_json::from_value(meta.take()).expect("metadata is an object");
        *meta = serde_json::to_value(sorted).expect("strings serialize");
    }
    let mut json = serde_json::to_vec(&header).expect("a header serializes");
    // safetensors pads the header with spaces so that the data stays 8-aligned.
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + file.len() - 8 - n);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(&file[8 + n..]);
    out
}

/// Reads a checkpoint back into its architecture and flat parameters.
pub fn load(path: &Path) -> Result<(Architecture, Vec<f32>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes, path)
}

/// The position a training checkpoint was written at (`POSITION_KEY`), if any.
pub fn position(path: &Path) -> Result<Option<String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::bad_file(path, format!("not a safetensors file: {e}")))?;
    Ok(metadata.metadata().as_ref().and_then(|m| m.get(POSITION_KEY)).cloned())
}

/// A conditional model's class names from its checkpoint's metadata (empty
/// when it records none).
pub fn class_names(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::bad_file(path, format!("not a safetensors file: {e}")))?;
    match metadata.metadata().as_ref().and_then(|m| m.get(CLASS_NAMES_KEY)) {
        None => Ok(Vec::new()),
        Some(json) => serde_json::from_str(json)
            .map_err(|e| Error::bad_file(path, format!("bad `{CLASS_NAMES_KEY}` metadata: {e}"))),
    }
}

/// Parses a checkpoint's bytes; `path` only names the file in errors.
///
/// Nothing is sized from the file before it is checked: the metadata's model
/// must pass `limits::check_model` (checked arithmetic) before its layout is
/// built, and every tensor must be present with its exact type and shape (so
/// the file holds every parameter it declares) and hold finite values before
/// the parameter buffer is allocated.
pub fn parse(bytes: &[u8], path: &Path) -> Result<(Architecture, Vec<f32>)> {
    let bad = |what: String| Error::bad_file(path, what);
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let config_json = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CONFIG_KEY))
        .ok_or_else(|| bad(format!("no `{CONFIG_KEY}` metadata: not written by gpu-vae")))?;
    let config: ModelConfig =
        serde_json::from_str(config_json).map_err(|e| bad(format!("bad `{CONFIG_KEY}` metadata: {e}")))?;
    let declared = limits::check_model(&config).map_err(|e| bad(format!("bad model config: {e}")))?;
    let arch = Architecture::new(&config).map_err(|e| bad(format!("bad model config: {e}")))?;
    debug_assert_eq!(declared, arch.param_count, "limits::check_model mirrors the layout");

    let tensors = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let mut views = Vec::with_capacity(arch.tensors.len());
    for spec in &arch.tensors {
        let view = tensors.tensor(&spec.name).map_err(|_| bad(format!("tensor `{}` is missing", spec.name)))?;
        if view.dtype() != Dtype::F32 || view.shape() != spec.shape.as_slice() || view.data().len() != 4 * spec.len() {
            return Err(bad(format!(
                "tensor `{}` is {:?} {:?}, expected F32 {:?}",
                spec.name,
                view.dtype(),
                view.shape(),
                spec.shape
            )));
        }
        let values = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")));
        if let Some((i, v)) = values.enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(bad(format!("tensor `{}` holds a non-finite value: {v} at index {i}", spec.name)));
        }
        views.push(view);
    }
    // Every tensor matched its spec, and the specs tile `param_count`: the file
    // holds all of them, so this allocation is bounded by its size.
    let mut params = vec![0.0f32; arch.param_count];
    for (spec, view) in arch.tensors.iter().zip(&views) {
        let out = &mut params[spec.offset..spec.offset + spec.len()];
        for (o, chunk) in out.iter_mut().zip(view.data().chunks_exact(4)) {
            *o = f32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        }
    }
    Ok((arch, params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Activation, ModelKind, ReconLoss};

    /// The metadata map's hash order changes from map to map; the bytes must not.
    #[test]
    fn the_same_checkpoint_is_the_same_bytes() {
        let config = ModelConfig {
            kind: ModelKind::Vae,
            image_rows: 3,
            image_cols: 5,
            channels: 1,
            hidden: vec![4],
            latent: 2,
            loss: ReconLoss::Bce,
            activation: Activation::Relu,
            arch: crate::model::Arch::Mlp,
            conv: vec![],
            classes: 0,
        };
        let arch = Architecture::new(&config).unwrap();
        let params: Vec<f32> = (0..arch.param_count).map(|i| i as f32 / 7.0).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let mut files = Vec::new();
        for _ in 0..8 {
            save_at(&path, &arch, &params, Some("{\"step\":3}"), &[]).unwrap();
            files.push(std::fs::read(&path).unwrap());
        }
        assert!(files.iter().all(|f| *f == files[0]), "checkpoints of the same parameters differ");
        assert_eq!(load(&path).unwrap().1, params);
        assert_eq!(position(&path).unwrap().as_deref(), Some("{\"step\":3}"));
    }

    /// A conditional model's checkpoint names its classes; others carry no class keys.
    #[test]
    fn class_names_are_in_a_conditional_checkpoints_metadata() {
        let mut config =
            ModelConfig { hidden: vec![4], latent: 2, image_rows: 3, image_cols: 5, ..ModelConfig::pytorch_vae() };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let keys = |path: &Path| {
            let bytes = std::fs::read(path).unwrap();
            let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
            let mut keys: Vec<String> = meta.metadata().as_ref().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        let arch = Architecture::new(&config).unwrap();
        save_at(&path, &arch, &vec![0.5; arch.param_count], None, &[]).unwrap();
        assert_eq!(keys(&path), [CONFIG_KEY]);
        assert!(class_names(&path).unwrap().is_empty());

        config.classes = 3;
        let arch = Architecture::new(&config).unwrap();
        let names = ["cat".to_string(), "dog".into(), "Ankle \"boot\"".into()];
        save_at(&path, &arch, &vec![0.5; arch.param_count], None, &names).unwrap();
        assert_eq!(keys(&path), [CLASS_NAMES_KEY, CLASSES_KEY, CONFIG_KEY]);
        assert_eq!(class_names(&path).unwrap(), names);
        assert_eq!(load(&path).unwrap().0.config.classes, 3);
        // Without names, the count alone.
        save_at(&path, &arch, &vec![0.5; arch.param_count], None, &[]).unwrap();
        assert_eq!(keys(&path), [CLASSES_KEY, CONFIG_KEY]);
    }
}
