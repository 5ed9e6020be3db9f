//! What the trainer needs from a compute path, implemented by the CPU engine
//! (`cpu::CpuModel`) and the GPU engine (`gpu::GpuEngine`).

use std::sync::Arc;

use crate::cpu::engine::LossSums;
use crate::data::Images;
use crate::error::Result;

/// One epoch of training, identical on every engine.
///
/// Batch b (0-based) holds images `order[b·B .. min((b+1)·B, n)]` (the last
/// batch may be short) and is global step `s = first_step + b`: its input
/// noise is `rng::normal(seed, Stream::InputNoise, s, i)`, its
/// reparameterization noise `rng::normal(seed, Stream::Reparam, s, i)` (i the
/// flat index within the batch), and its Adam update is step `t = s + 1`.
#[derive(Clone, Debug)]
pub struct EpochPlan {
    pub order: Vec<u32>,
    pub batch_size: usize,
    pub first_step: u64,
    pub seed: u32,
    /// Standard deviation of the Gaussian input noise (0 = plain AE/VAE).
    pub noise_std: f32,
    /// Weight of the KL term in the objective this epoch (after warm-up).
    pub beta: f32,
}

impl EpochPlan {
    pub fn batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }
}

/// How test-set losses are computed: in order, VAE latents sampled with
/// `Stream::EvalReparam` and denoising inputs noised with `Stream::EvalNoise`,
/// both with step = batch index, as the reference scripts sample in eval too.
#[derive(Clone, Copy, Debug)]
pub struct EvalPlan {
    pub batch_size: usize,
    pub seed: u32,
    pub noise_std: f32,
}

pub trait Engine {
    /// The adapter or path in use, for the user.
    fn describe(&self) -> String;

    /// Trains one epoch. `tick(batches_done, sums_so_far)` is called a few
    /// times per epoch (at least at the end). A non-finite loss stops training
    /// with `Error::NonFiniteLoss` naming the step (1-based: global step s + 1).
    fn train_epoch(
        &mut self,
        images: &Arc<Images>,
        plan: &EpochPlan,
        tick: &mut dyn FnMut(usize, LossSums),
    ) -> Result<LossSums>;

    /// Loss sums over a whole data set, without training.
    fn evaluate(&mut self, images: &Arc<Images>, plan: &EvalPlan) -> Result<LossSums>;

    /// The current flat parameters (P), laid out by the architecture.
    fn params(&mut self) -> Result<Vec<f32>>;

    /// Counters for benchmarks; engines without dispatches report none.
    fn stats(&self) -> EngineStats {
        EngineStats::default()
    }
}

/// How an engine drives its device, for `gpu-vae bench`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EngineStats {
    pub dispatches_per_step: Option<usize>,
    /// Queue submits during the last training epoch.
    pub submits_per_epoch: Option<usize>,
}
