//! `--device`: which engine trains.

use crate::cpu::CpuModel;
use crate::engine::Engine;
use crate::model::Architecture;
use crate::train::TrainConfig;

use super::DeviceChoice;

/// Opens the engine the user asked for and says which one it is.
pub fn open_engine(
    device: DeviceChoice,
    _checked_shaders: bool,
    arch: &Architecture,
    params: &[f32],
    config: &TrainConfig,
) -> anyhow::Result<Box<dyn Engine>> {
    match device {
        DeviceChoice::Cpu | DeviceChoice::Auto => {
            Ok(Box::new(CpuModel::new(arch.clone(), params.to_vec(), config.adam)))
        }
        DeviceChoice::Gpu => anyhow::bail!("--device gpu: the GPU engine is not built yet"),
    }
}
