//! `--device`: which engine computes, decided before any work starts.

use std::sync::Arc;

use crate::apps::{self, Inference};
use crate::cpu::CpuModel;
use crate::engine::Engine;
use crate::gpu::{GpuContext, GpuEngine, GpuOptions};
use crate::model::Architecture;
use crate::train::TrainConfig;

use super::{DeviceArgs, DeviceChoice};

/// The GPU the user asked for, `None` for the CPU path. `auto` takes a
/// hardware GPU when wgpu finds one and otherwise the CPU path, with a note (a
/// software adapter such as lavapipe is slower than the CPU path; `--device
/// gpu` still takes it).
pub fn open_gpu(device: &DeviceArgs) -> anyhow::Result<Option<Arc<GpuContext>>> {
    let options = GpuOptions { checked_shaders: device.checked_shaders, ..Default::default() };
    match device.device {
        DeviceChoice::Cpu => Ok(None),
        DeviceChoice::Gpu => Ok(Some(Arc::new(GpuContext::new(options)?))),
        DeviceChoice::Auto => match GpuContext::new(options) {
            Ok(ctx) if !ctx.is_software => Ok(Some(Arc::new(ctx))),
            Ok(ctx) => {
                eprintln!(
                    "note: only a software adapter ({}), using the CPU path; --device gpu forces it",
                    ctx.describe()
                );
                Ok(None)
            }
            Err(e) => {
                eprintln!("note: no GPU ({e}), using the CPU path");
                Ok(None)
            }
        },
    }
}

/// Opens the training engine the user asked for.
pub fn open_engine(
    device: &DeviceArgs,
    arch: &Architecture,
    params: &[f32],
    config: &TrainConfig,
) -> anyhow::Result<Box<dyn Engine>> {
    Ok(match open_gpu(device)? {
        Some(ctx) => Box::new(GpuEngine::new(ctx, arch.clone(), params, config.adam, config.batch_size)?),
        None => Box::new(CpuModel::new(arch.clone(), params.to_vec(), config.adam)),
    })
}

/// Opens a trained model for the uses of `crate::apps` on the device the user asked for.
pub fn open_inference(
    device: &DeviceArgs,
    arch: &Architecture,
    params: Vec<f32>,
) -> anyhow::Result<Box<dyn Inference>> {
    Ok(apps::open_model(arch, params, open_gpu(device)?)?)
}

/// `open_inference` for any parameters of `arch`, the device decided once.
pub fn inference_opener(
    device: &DeviceArgs,
    arch: &Architecture,
) -> anyhow::Result<impl FnMut(Vec<f32>) -> crate::error::Result<Box<dyn Inference>> + use<>> {
    let gpu = open_gpu(device)?;
    let arch = arch.clone();
    Ok(move |params| apps::open_model(&arch, params, gpu.clone()))
}
