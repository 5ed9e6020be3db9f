//! The CPU engine's epoch loop: batches come from the loader thread, so the
//! model never waits on gathering or noise.

use std::sync::Arc;

use super::engine::{BatchRef, CpuModel};
use crate::data::Images;
use crate::data::loader::{BatchPlan, add_input_noise, gather_batch, one_hot, spawn_batches};
use crate::engine::{AdamState, Engine, EpochPlan, EpochStart, EvalPlan, LossSums, Noise};
use crate::error::{Error, Result};
use crate::rng::Stream;

/// Progress ticks per epoch.
const TICKS: usize = 50;

impl Engine for CpuModel {
    fn describe(&self) -> String {
        let products = if super::gemm::available() { "avx-512 products" } else { "matrixmultiply" };
        format!("cpu ({products}, threads: {})", rayon::current_num_threads())
    }

    fn train_epoch(
        &mut self,
        images: &Arc<Images>,
        plan: &EpochPlan,
        tick: &mut dyn FnMut(usize, LossSums),
    ) -> Result<LossSums> {
        self.train_epoch_at(images, plan, &EpochStart::default(), tick)
    }

    /// Batches `start.batches_done..` of the plan, each at its own global step:
    /// the loader gets the rest of the order and the step of its first batch,
    /// so skipped batches draw no noise and the others draw what they would have.
    fn train_epoch_at(
        &mut self,
        images: &Arc<Images>,
        plan: &EpochPlan,
        start: &EpochStart,
        tick: &mut dyn FnMut(usize, LossSums),
    ) -> Result<LossSums> {
        let skip = start.batches_done;
        if skip > plan.batches() {
            return Err(Error::invalid("resume", format!("{skip} batches done of an epoch of {}", plan.batches())));
        }
        let batches = spawn_batches(
            images.clone(),
            BatchPlan {
                order: plan.order[(skip * plan.batch_size).min(plan.order.len())..].to_vec(),
                batch_size: plan.batch_size,
                noise_std: plan.noise_std,
                seed: plan.seed,
                first_step: plan.first_step + skip as u64,
                classes: self.arch.config.classes,
            },
        );
        let every = plan.batches().div_ceil(TICKS).max(1);
        let mut sums = start.sums;
        for batch in batches {
            let index = skip + batch.index;
            if start.stopping() {
                return Err(start.interrupted(plan, index, sums));
            }
            let step = plan.first_step + index as u64;
            let noise = Noise { seed: plan.seed, stream: Stream::Reparam, step: step as u32 };
            // The step runs on a pool thread: its parallel loops then split
            // by work stealing, where a call from outside the pool would
            // block this thread and wake a worker for each of them.
            let lr = plan.lr.lr(self.state.adam.lr, step);
            let inputs =
                BatchRef { clean: &batch.clean, noisy: batch.input.as_deref(), labels: batch.labels.as_deref() };
            let loss = rayon::scope(|_| self.train_step(inputs, batch.rows, noise, plan.beta, lr));
            let total = (loss.recon + loss.kl) as f32;
            if !total.is_finite() {
                return Err(Error::NonFiniteLoss { value: total, step: step + 1, epoch: 0 });
            }
            sums += loss;
            if (index + 1).is_multiple_of(every) {
                tick(index + 1, sums);
            }
        }
        tick(plan.batches(), sums);
        Ok(sums)
    }

    fn adam_state(&mut self) -> Result<Option<AdamState>> {
        Ok(Some(CpuModel::adam_state(self)))
    }

    fn restore_adam(&mut self, state: &AdamState) -> Result<()> {
        CpuModel::restore_adam(self, state)
    }

    fn evaluate(&mut self, images: &Arc<Images>, plan: &EvalPlan) -> Result<LossSums> {
        let dim = images.dim();
        let mut clean = vec![0.0; plan.batch_size * dim];
        let mut noisy = vec![0.0; plan.batch_size * dim];
        let mut sums = LossSums::default();
        let order: Vec<u32> = (0..images.count as u32).collect();
        for (b, indices) in order.chunks(plan.batch_size).enumerate() {
            let rows = indices.len();
            let clean = &mut clean[..rows * dim];
            gather_batch(images, indices, clean);
            let noisy = (plan.noise_std > 0.0).then(|| {
                let noisy = &mut noisy[..rows * dim];
                add_input_noise(clean, noisy, plan.noise_std, plan.seed, Stream::EvalNoise, b as u32);
                &*noisy
            });
            let noise = Noise { seed: plan.seed, stream: Stream::EvalReparam, step: b as u32 };
            let classes = self.arch.config.classes;
            let labels = (classes > 0).then(|| one_hot(images, indices, classes));
            let inputs = BatchRef { clean, noisy, labels: labels.as_deref() };
            sums += rayon::scope(|_| self.forward(inputs, rows, noise));
        }
        Ok(sums)
    }

    fn params(&mut self) -> Result<Vec<f32>> {
        Ok(CpuModel::params(self).to_vec())
    }
}
