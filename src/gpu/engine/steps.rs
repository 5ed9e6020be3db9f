//! Recording an epoch's steps: the step table and loss slots, the submits
//! (a short first one, then full ones), and the ticks' loss readbacks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{GpuEngine, TICKS};
use crate::data::Images;
use crate::engine::{EpochPlan, HostTimes, LossSums, Objective};
use crate::error::{Error, Result};
use crate::gpu::buffers::storage;
use crate::gpu::context::{GpuContext, PendingRead};
use crate::gpu::program::{Step, StepTable};
use crate::rng::Stream;

impl GpuEngine {
    /// Makes room for `steps` rows in the step table and loss slots, or says
    /// why the device cannot hold them (the loss slots are checked by `storage`).
    pub(super) fn ensure_steps(&mut self, steps: usize) -> Result<()> {
        if self.table.capacity() < steps {
            let stride = (std::mem::size_of::<Step>() as u64).next_multiple_of(self.kernels.uniform_align);
            let bytes = (steps.next_power_of_two() as u64).saturating_mul(stride);
            if bytes > self.ctx.limits.max_buffer_size {
                return Err(Error::Gpu(format!(
                    "an epoch of {steps} steps needs a step table of {bytes} bytes, more than {}'s largest buffer ({} bytes); use a larger --batch-size",
                    self.ctx.info.name, self.ctx.limits.max_buffer_size
                )));
            }
            self.table = StepTable::new(&self.ctx.device, &self.kernels, steps.next_power_of_two());
        }
        if self.slot_capacity < steps {
            let cap = steps.next_power_of_two();
            (self.slots, self.readback) = slot_buffers(&self.ctx, cap)?;
            self.slot_capacity = cap;
            self.programs.clear(); // their loss_finish dispatches bind the old slots
        }
        Ok(())
    }

    /// Runs `steps` over `order` with the program of (training, noisy input),
    /// handing the per-step (recon, kl) slots to `on_tick` a few times. When
    /// `stop` is raised it ends at the next submit boundary, after reading
    /// the slots of the steps done; returns how many steps ran.
    pub(super) fn run_steps(
        &mut self,
        images: &Arc<Images>,
        order: &[u32],
        steps: &[Step],
        (train, noisy): (bool, bool),
        stop: Option<&AtomicBool>,
        mut on_tick: impl FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<usize> {
        if let Some(&bad) = order.iter().find(|&&i| i as usize >= images.count) {
            return Err(Error::invalid("order", format!("names image {bad}, but there are {} images", images.count)));
        }
        // Scopes first: the buffers made below on first use (usually made
        // already by `prepare`) report a refused allocation here, not to
        // wgpu's default handler, which panics.
        let oom = self.ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let scope = self.ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        self.ensure_steps(steps.len())?;
        let d = self.data_set(images, order.len())?;
        let p = self.program(train, noisy)?;
        let queue = &self.ctx.queue;
        let streamed = self.data[d].window.is_some();
        self.write_steps(d, order, steps);
        let every = steps.len().div_ceil(TICKS).max(1);
        let mut submits = 0;
        let mut next_tick = every;
        let mut done = 0;
        let mut read = 0;
        // A tick's losses are read after the next submit has gone out, so
        // the GPU runs while the host waits for them and encodes: (the read,
        // the steps it covers, its readback buffer).
        let mut pending: Option<(PendingRead, usize, usize)> = None;
        let mut spare = 0;
        let mut host = HostTimes::default();
        let mut clock = Instant::now();
        let mut lap = |into: &mut f64| {
            let now = Instant::now();
            *into += (now - clock).as_secs_f64() * 1e6;
            clock = now;
        };
        for range in submit_ranges(steps.len(), self.steps_per_submit) {
            // A stop request ends the epoch at a submit boundary: the steps
            // submitted are complete, and their losses are read below.
            if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                break;
            }
            let end = range.end;
            if streamed {
                // Written before this submit, after the previous one's reads (queue order).
                let (words, labels) = self.fill_window(images, order, &steps[done..end]);
                queue.write_buffer(&self.data[d].pixels, 0, bytemuck::cast_slice(&words));
                if let Some(labels) = labels {
                    queue.write_buffer(&self.data[d].labels, 0, bytemuck::cast_slice(&labels));
                }
            }
            lap(&mut host.wait_us);
            let tick = end >= next_tick || end == steps.len();
            let bytes = (end * 2 * 4) as u64;
            let enc = self.record(d, p, done..end, tick.then_some(spare));
            lap(&mut host.record_us);
            let commands = enc.finish();
            lap(&mut host.finish_us);
            let submission = queue.submit([commands]);
            lap(&mut host.submit_us);
            submits += 1;
            done = end;
            if let Some((r, at, buffer)) = pending.take() {
                let sums = self.finish_read(buffer, r)?;
                lap(&mut host.wait_us);
                on_tick(at, &sums)?;
                read = at;
            }
            if tick {
                pending = Some((self.ctx.start_read(&self.readback[spare], bytes, Some(submission)), done, spare));
                spare = 1 - spare;
                while next_tick <= done {
                    next_tick += every;
                }
            }
        }
        if let Some((r, at, buffer)) = pending.take() {
            let sums = self.finish_read(buffer, r)?;
            lap(&mut host.wait_us);
            on_tick(at, &sums)?;
            read = at;
        }
        if read < done {
            // Stopped between ticks: the losses of the steps since the last one.
            let bytes = (done * 2 * 4) as u64;
            let mut enc = self.ctx.device.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(&self.slots, 0, &self.readback[0], 0, bytes);
            queue.submit([enc.finish()]);
            let sums = self.map_read(&self.readback[0], bytes)?;
            on_tick(done, &sums)?;
        }
        if train {
            self.stats.submits_last_epoch = submits;
            let per_step = |us: f64| us / done.max(1) as f64;
            self.stats.host = HostTimes {
                record_us: per_step(host.record_us),
                finish_us: per_step(host.finish_us),
                submit_us: per_step(host.submit_us),
                wait_us: per_step(host.wait_us),
            };
        }
        let validation = pollster::block_on(scope.pop());
        let out_of_memory = pollster::block_on(oom.pop());
        self.check_errors("running the steps", validation, out_of_memory)?;
        Ok(done)
    }

    /// The epoch's step rows into the table and, for a data set on the
    /// device, its order; a streamed one's rows are placed at their offsets
    /// in their submit's window.
    fn write_steps(&self, d: usize, order: &[u32], steps: &[Step]) {
        let queue = &self.ctx.queue;
        if self.data[d].window.is_none() {
            queue.write_buffer(&self.data[d].order, 0, bytemuck::cast_slice(order));
            self.table.write(queue, steps);
            return;
        }
        let mut local = steps.to_vec();
        for range in submit_ranges(steps.len(), self.steps_per_submit) {
            let mut offset = 0;
            for s in &mut local[range] {
                s.row_offset = offset;
                offset += s.rows;
            }
        }
        self.table.write(queue, &local);
    }

    /// The commands of one submit: steps `range` of program `p` on data set
    /// `d` in one compute pass (the loss slots cleared before the epoch's
    /// first), then, for a tick, the slots so far copied to readback buffer
    /// `tick`.
    fn record(&self, d: usize, p: usize, range: std::ops::Range<usize>, tick: Option<usize>) -> wgpu::CommandEncoder {
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        if range.start == 0 {
            enc.clear_buffer(&self.slots, 0, None);
        }
        let end = range.end;
        {
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("steps"), timestamp_writes: None });
            for s in range {
                pass.set_bind_group(1, &self.table.bind, &[self.table.offset(s)]);
                self.data[d].gather.record(&mut pass);
                self.programs[p].1.record(&mut pass);
            }
        }
        if let Some(buffer) = tick {
            enc.copy_buffer_to_buffer(&self.slots, 0, &self.readback[buffer], 0, (end * 2 * 4) as u64);
        }
        enc
    }

    /// `GpuContext::map_read`, its failure named as a lost device when it was one.
    pub(super) fn map_read(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<Vec<f32>> {
        self.ctx.map_read(buffer, bytes).map_err(|e| self.lost_or(e))
    }

    /// `GpuContext::finish_read` of readback buffer `buffer`, failures named likewise.
    pub(super) fn finish_read(&self, buffer: usize, read: PendingRead) -> Result<Vec<f32>> {
        self.ctx.finish_read(&self.readback[buffer], read).map_err(|e| self.lost_or(e))
    }

    /// One `Step` row per batch of a training epoch.
    pub(super) fn train_rows(&self, plan: &EpochPlan) -> Vec<Step> {
        let n = plan.order.len();
        (0..plan.batches())
            .map(|b| {
                let rows = plan.batch_size.min(n - b * plan.batch_size);
                let s = plan.first_step + b as u64;
                let adam = self.adam.step(s + 1, plan.lr.lr(self.adam.lr, s));
                let obj = Objective::for_batch(&self.arch, rows, plan.beta);
                Step {
                    rows: rows as u32,
                    row_offset: (b * plan.batch_size) as u32,
                    rng_step: s as u32,
                    slot: b as u32,
                    seed: plan.seed,
                    reparam_stream: Stream::Reparam as u32,
                    noise_stream: Stream::InputNoise as u32,
                    noise_std: plan.noise_std,
                    recon_scale: obj.recon_scale,
                    kl_scale: obj.kl_scale,
                    ..Default::default()
                }
                .with_adam(&adam)
            })
            .collect()
    }
}

/// Steps in an epoch's first submit: few, so that the GPU starts while the
/// host encodes the next, full one.
const FIRST_SUBMIT: usize = 4;

/// The step ranges of an epoch's submits: a short first one, then
/// `per_submit` steps each.
pub(super) fn submit_ranges(steps: usize, per_submit: usize) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut start = 0;
    while start < steps {
        let len = if start == 0 { per_submit.min(FIRST_SUBMIT) } else { per_submit };
        ranges.push(start..(start + len).min(steps));
        start += len;
    }
    ranges
}

pub(super) fn slot_buffers(ctx: &GpuContext, steps: usize) -> Result<(wgpu::Buffer, [wgpu::Buffer; 2])> {
    let bytes = steps * 2 * 4;
    let slots = storage(ctx, "loss slots", bytes, wgpu::BufferUsages::COPY_SRC)?;
    let readback = || {
        ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("loss readback"),
            size: bytes as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    };
    Ok((slots, [readback(), readback()]))
}

/// Sums per-step slots `from..to` into `sums`; the first non-finite step is an error.
pub(super) fn add_slots(sums: &mut LossSums, slots: &[f32], from: usize, to: usize, first_step: u64) -> Result<()> {
    for s in from..to {
        let (recon, kl) = (slots[2 * s], slots[2 * s + 1]);
        let total = recon + kl;
        if !total.is_finite() {
            return Err(Error::NonFiniteLoss { value: total, step: first_step + s as u64 + 1, epoch: 0 });
        }
        *sums += LossSums { recon: recon as f64, kl: kl as f64 };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::submit_ranges;

    #[test]
    fn an_epoch_submits_a_short_chunk_first_then_full_ones() {
        let lengths: Vec<usize> = submit_ranges(469, 64).iter().map(|r| r.len()).collect();
        assert_eq!(lengths, [4, 64, 64, 64, 64, 64, 64, 64, 17]);
        assert_eq!(submit_ranges(5, 2), [0..2, 2..4, 4..5]);
        assert_eq!(submit_ranges(3, 64).first(), Some(&(0..3)));
        assert_eq!(submit_ranges(3, 64).len(), 1);
        assert!(submit_ranges(0, 64).is_empty());
    }
}
