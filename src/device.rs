//! Which engine computes, decided before any work starts: `--device` on the
//! command line, [`Device`] in the library.

use std::sync::Arc;

use crate::apps::{self, Inference};
use crate::cpu::CpuModel;
use crate::engine::Engine;
use crate::error::Result;
use crate::gpu::{GpuContext, GpuEngine, GpuOptions};
use crate::model::Architecture;
use crate::train::TrainConfig;

/// Where a model trains or runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// A real GPU when there is one, else the CPU path.
    #[default]
    Auto,
    /// wgpu on any adapter, a software one included.
    Gpu,
    /// The CPU reference path.
    Cpu,
}

/// The GPU `device` asks for, `None` for the CPU path. `Auto` takes a
/// hardware GPU when wgpu finds one and otherwise the CPU path, telling
/// `note` why (a software adapter such as lavapipe is slower than the CPU
/// path; `Gpu` still takes it).
pub fn open_gpu(
    device: Device,
    checked_shaders: bool,
    note: &mut dyn FnMut(String),
) -> Result<Option<Arc<GpuContext>>> {
    let options = GpuOptions { checked_shaders, ..Default::default() };
    match device {
        Device::Cpu => Ok(None),
        Device::Gpu => Ok(Some(Arc::new(GpuContext::new(options)?))),
        Device::Auto => match GpuContext::new(options) {
            Ok(ctx) if !ctx.is_software => Ok(Some(Arc::new(ctx))),
            Ok(ctx) => {
                note(format!(
                    "only a software adapter ({}), using the CPU path; --device gpu forces it",
                    ctx.describe()
                ));
                Ok(None)
            }
            Err(e) => {
                note(format!("no GPU ({e}), using the CPU path"));
                Ok(None)
            }
        },
    }
}

/// The training engine for `arch` with parameters `params` on `device`.
pub fn open_engine(
    device: Device,
    checked_shaders: bool,
    arch: &Architecture,
    params: &[f32],
    config: &TrainConfig,
    note: &mut dyn FnMut(String),
) -> Result<Box<dyn Engine>> {
    Ok(match open_gpu(device, checked_shaders, note)? {
        Some(ctx) => Box::new(GpuEngine::new(ctx, arch.clone(), params, config.adam, config.batch_size)?),
        None => Box::new(CpuModel::new(arch.clone(), params.to_vec(), config.adam)),
    })
}

/// A trained model for the uses of [`crate::apps`] on `device`.
pub fn open_inference(
    device: Device,
    checked_shaders: bool,
    arch: &Architecture,
    params: Vec<f32>,
    note: &mut dyn FnMut(String),
) -> Result<Box<dyn Inference>> {
    apps::open_model(arch, params, open_gpu(device, checked_shaders, note)?)
}
