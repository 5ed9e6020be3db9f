//! `--device`: which engine computes, decided before any work starts.

use std::sync::Arc;

use crate::cpu::CpuModel;
use crate::engine::Engine;
use crate::gpu::{GpuContext, GpuEngine, GpuOptions};
use crate::model::Architecture;
use crate::train::TrainConfig;

use super::{DeviceArgs, DeviceChoice};

/// Opens the engine the user asked for. `auto` takes a hardware GPU when wgpu
/// finds one and otherwise the CPU path (a software adapter such as lavapipe
/// is slower than the CPU path; `--device gpu` still takes it).
pub fn open_engine(
    device: &DeviceArgs,
    arch: &Architecture,
    params: &[f32],
    config: &TrainConfig,
) -> anyhow::Result<Box<dyn Engine>> {
    let cpu = || -> Box<dyn Engine> { Box::new(CpuModel::new(arch.clone(), params.to_vec(), config.adam)) };
    let options = GpuOptions { checked_shaders: device.checked_shaders, adapter_name: None };
    let gpu = |ctx: GpuContext| -> anyhow::Result<Box<dyn Engine>> {
        let engine = GpuEngine::new(Arc::new(ctx), arch.clone(), params, config.adam, config.batch_size)?;
        Ok(Box::new(engine))
    };
    match device.device {
        DeviceChoice::Cpu => Ok(cpu()),
        DeviceChoice::Gpu => gpu(GpuContext::new(options)?),
        DeviceChoice::Auto => match GpuContext::new(options) {
            Ok(ctx) if !ctx.is_software => gpu(ctx),
            Ok(ctx) => {
                eprintln!(
                    "note: only a software adapter ({}), using the CPU path; --device gpu forces it",
                    ctx.describe()
                );
                Ok(cpu())
            }
            Err(e) => {
                eprintln!("note: no GPU ({e}), using the CPU path");
                Ok(cpu())
            }
        },
    }
}
