//! `--device`: which engine computes (`crate::device`), its notes printed.

use std::sync::Arc;

use crate::apps::Inference;
use crate::device;
use crate::engine::Engine;
use crate::gpu::GpuContext;
use crate::model::Architecture;
use crate::train::TrainConfig;

use super::DeviceArgs;

fn print_note(note: String) {
    eprintln!("note: {note}");
}

/// The GPU the user asked for, `None` for the CPU path (`device::open_gpu`).
pub fn open_gpu(d: &DeviceArgs) -> anyhow::Result<Option<Arc<GpuContext>>> {
    Ok(device::open_gpu(d.device, d.checked_shaders, &mut print_note)?)
}

/// Opens the training engine the user asked for.
pub fn open_engine(
    d: &DeviceArgs,
    arch: &Architecture,
    params: &[f32],
    config: &TrainConfig,
) -> anyhow::Result<Box<dyn Engine>> {
    Ok(device::open_engine(d.device, d.checked_shaders, arch, params, config, &mut print_note)?)
}

/// Opens a trained model for the uses of `crate::apps` on the device the user asked for.
pub fn open_inference(d: &DeviceArgs, arch: &Architecture, params: Vec<f32>) -> anyhow::Result<Box<dyn Inference>> {
    Ok(device::open_inference(d.device, d.checked_shaders, arch, params, &mut print_note)?)
}

/// `open_inference` for any parameters of `arch`, the device decided once.
pub fn inference_opener(
    d: &DeviceArgs,
    arch: &Architecture,
) -> anyhow::Result<impl FnMut(Vec<f32>) -> crate::error::Result<Box<dyn Inference>> + use<>> {
    let gpu = open_gpu(d)?;
    let arch = arch.clone();
    Ok(move |params| crate::apps::open_model(&arch, params, gpu.clone()))
}
