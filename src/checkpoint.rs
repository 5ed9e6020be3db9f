//! `model.safetensors`: the flat parameter buffer cut into tensors named and
//! shaped like PyTorch `nn.Linear` modules (`weight` [out, in], `bias` [out]),
//! with the model's configuration in the metadata so the file stands alone.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;
use crate::model::{Architecture, ModelConfig};

const CONFIG_KEY: &str = "gpu_vae.model";

/// Writes the parameters atomically: the previous checkpoint survives a crash.
pub fn save(path: &Path, arch: &Architecture, params: &[f32]) -> Result<()> {
    assert_eq!(params.len(), arch.param_count);
    let bytes: &[u8] = bytemuck::cast_slice(params);
    let views = arch.tensors.iter().map(|t| {
        let data = &bytes[4 * t.offset..4 * (t.offset + t.len())];
        let view = TensorView::new(Dtype::F32, t.shape.clone(), data).expect("tensor spec matches its bytes");
        (t.name.clone(), view)
    });
    let config = serde_json::to_string(&arch.config).expect("config serializes");
    let metadata = HashMap::from([(CONFIG_KEY.to_string(), config)]);
    let file = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::bad_file(path, format!("cannot serialize checkpoint: {e}")))?;
    write_atomic(path, &file)
}

/// Reads a checkpoint back into its architecture and flat parameters,
/// checking every tensor's name, type and shape.
pub fn load(path: &Path) -> Result<(Architecture, Vec<f32>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |what: String| Error::bad_file(path, what);
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let config_json = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CONFIG_KEY))
        .ok_or_else(|| bad(format!("no `{CONFIG_KEY}` metadata: not written by gpu-vae")))?;
    let config: ModelConfig =
        serde_json::from_str(config_json).map_err(|e| bad(format!("bad `{CONFIG_KEY}` metadata: {e}")))?;
    let arch = Architecture::new(&config).map_err(|e| bad(format!("bad model config: {e}")))?;

    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let mut params = vec![0.0f32; arch.param_count];
    for spec in &arch.tensors {
        let view = tensors.tensor(&spec.name).map_err(|_| bad(format!("tensor `{}` is missing", spec.name)))?;
        if view.dtype() != Dtype::F32 || view.shape() != spec.shape.as_slice() {
            return Err(bad(format!(
                "tensor `{}` is {:?} {:?}, expected F32 {:?}",
                spec.name,
                view.dtype(),
                view.shape(),
                spec.shape
            )));
        }
        let out = &mut params[spec.offset..spec.offset + spec.len()];
        for (o, chunk) in out.iter_mut().zip(view.data().chunks_exact(4)) {
            *o = f32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        }
    }
    Ok((arch, params))
}
