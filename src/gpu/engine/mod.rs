//! `GpuEngine`: a model's whole training step on the device.
//!
//! Built once per model: buffers sized for the largest batch, the step program
//! (every dispatch of one step, bind groups and sizes fixed), and a step table.
//! An epoch uploads its data order and one `Step` row per batch, then records
//! `steps_per_submit` steps into one compute pass per submit; each step only
//! moves the table's dynamic offset (one `set_bind_group`) and replays the
//! program. Loss sums stay in per-step slots on the device and are read back a
//! few times per epoch (the trainer's ticks), never per step.
//!
//! Failures end in an error that names them, before anything is written,
//! so the trainer keeps the last checkpoint:
//! - sizes beyond the adapter's limits (a batch's activations, the model's
//!   parameters, the data set, the loss slots: `buffers::storage`; the step
//!   table: `ensure_steps`) are refused with the sizes and the limit when the
//!   engine is built or in `Engine::prepare`, before the first step;
//! - an allocation the driver refuses (out of memory) is caught by an
//!   `ErrorFilter::OutOfMemory` scope around building, preparing and every
//!   epoch's submits, and reported as such with the device named;
//! - a lost device fails the next poll or map; the loss callback keeps its
//!   reason, and errors after it say "the device was lost (...)";
//! - a failed buffer map (`GpuContext::map_read`) is an error, not a panic.
//!
//! Lavapipe lets the tests provoke the first (tests/gpu_resume.rs); an
//! out-of-memory or a lost device cannot be caused on purpose there.
//!
//! Per-step values come through a dynamic offset rather than a device-side
//! step counter: no extra dispatch per step to advance a counter, no atomics,
//! and every row can be checked on the host before it is uploaded.

use std::sync::{Arc, Mutex};

mod data;
mod steps;

use data::DataSet;
use steps::{add_slots, slot_buffers};

use super::buffers::{ParamBuffers, storage};
use super::context::GpuContext;
use super::fuse::{Env, Fusion, fuse};
use super::lower::{Bindings, TensorPool, emit, lower};
use super::profile::{self, Profile, TimestampMode};
use super::program::{Program, Step, StepTable};
use super::shaders::{Kernels, MAX_PARTS};
use crate::data::Images;
use crate::engine::{AdamConfig, AdamState, Engine, EngineStats, EpochPlan, EpochStart, EvalPlan, HostTimes, LossSums};
use crate::error::{Error, Result};
use crate::model::{Architecture, Graph};
use crate::rng::Stream;

/// Steps recorded into one compute pass and submit, unless changed.
pub const STEPS_PER_SUBMIT: usize = 64;
/// Progress ticks (loss readbacks) per epoch, as the CPU engine.
const TICKS: usize = 10;

/// Counts for benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct GpuStats {
    pub dispatches_per_train_step: usize,
    pub dispatches_per_eval_step: usize,
    pub steps_per_submit: usize,
    pub submits_last_epoch: usize,
    pub host: HostTimes,
}

pub struct GpuEngine {
    ctx: Arc<GpuContext>,
    kernels: Arc<Kernels>,
    arch: Architecture,
    adam: AdamConfig,
    max_batch: usize,
    params: ParamBuffers,
    /// The graph's tensors, shared by the training and evaluation programs.
    pool: TensorPool,
    /// Loss partial sums: recon at 0.., KL at MAX_PARTS...
    partials: wgpu::Buffer,
    /// Which rewrites the programs get (`set_fusion`).
    fusion: Fusion,
    /// The limits the rewrites plan for: the device's, or tighter ones (`set_fusion_limits`).
    fusion_limits: wgpu::Limits,
    /// Programs by (training, noisy input).
    programs: Vec<((bool, bool), Program)>,
    table: StepTable,
    /// Two f32 per step of the epoch: recon and KL sums.
    slots: wgpu::Buffer,
    /// Two, so that a tick's read can wait while the next submit copies.
    readback: [wgpu::Buffer; 2],
    slot_capacity: usize,
    /// The last two data sets (train and test), by `Arc` identity.
    data: Vec<DataSet>,
    pub steps_per_submit: usize,
    /// Data sets of more bytes than this are streamed rather than uploaded
    /// whole (`set_resident_limit`; `GPU_VAE_RESIDENT_BYTES` sets it).
    resident_limit: u64,
    stats: GpuStats,
    /// Adam steps taken (the next step's bias corrections come from the plan).
    adam_steps: u64,
    /// Why the device was lost, once it is (`set_device_lost_callback`).
    lost: Arc<Mutex<Option<String>>>,
}

impl GpuEngine {
    pub fn new(
        ctx: Arc<GpuContext>,
        arch: Architecture,
        params: &[f32],
        adam: AdamConfig,
        max_batch: usize,
    ) -> Result<GpuEngine> {
        if params.len() != arch.param_count {
            return Err(Error::invalid(
                "params",
                format!("{} values for {} parameters", params.len(), arch.param_count),
            ));
        }
        if max_batch == 0 {
            return Err(Error::invalid("--batch-size", "must be at least 1"));
        }
        // A lost device (driver reset, GPU removed, a watchdog) fails every
        // later call; the callback keeps the reason so that errors name it.
        // One callback per device: the engine built last on a context owns it.
        let lost = Arc::new(Mutex::new(None));
        let slot = lost.clone();
        ctx.device.set_device_lost_callback(move |reason, message| {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{reason:?}: {message}"));
        });
        // Out-of-memory is its own error filter: without this scope an
        // allocation the driver refuses would reach wgpu's default handler,
        // which panics.
        let oom = ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let kernels = ctx.kernels()?;
        let param_buffers = ParamBuffers::new(&ctx, params, true)?;
        let partials = storage(&ctx, "loss partials", 2 * MAX_PARTS as usize * 4, wgpu::BufferUsages::empty())?;
        let table = StepTable::new(&ctx.device, &kernels, 1);
        let (slots, readback) = slot_buffers(&ctx, 1)?;
        let mut engine = GpuEngine {
            kernels,
            arch,
            adam,
            max_batch,
            params: param_buffers,
            pool: TensorPool::new(max_batch),
            partials,
            fusion: ctx.fusion,
            fusion_limits: ctx.limits.clone(),
            programs: Vec::new(),
            table,
            slots,
            readback,
            slot_capacity: 1,
            data: Vec::new(),
            steps_per_submit: STEPS_PER_SUBMIT,
            resident_limit: ctx.resident_bytes.unwrap_or(u64::MAX),
            stats: GpuStats { steps_per_submit: STEPS_PER_SUBMIT, ..Default::default() },
            adam_steps: 0,
            lost,
            ctx,
        };
        // Building both programs allocates every activation buffer of
        // `max_batch` rows through `storage`, which refuses one beyond the
        // adapter's binding limit with the sizes: before any training.
        let built = engine.program(true, false).and_then(|_| engine.program(false, false));
        if let Err(Error::BindingTooLarge { label, bytes, limit, device }) = &built {
            return Err(Error::Gpu(format!(
                "a batch of {max_batch} images: {label} needs {bytes} bytes, more than {device}'s largest storage binding ({limit} bytes); use a smaller --batch-size"
            )));
        }
        built?;
        let validation = pollster::block_on(scope.pop());
        let out_of_memory = pollster::block_on(oom.pop());
        engine.check_errors("building the training step", validation, out_of_memory)?;
        Ok(engine)
    }

    /// Streams data sets of more than `bytes` bytes instead of keeping them on
    /// the device (data sets larger than a storage binding always stream).
    /// The gradients of the last training step (for tests).
    pub fn grads(&mut self) -> Result<Vec<f32>> {
        let grads = self.params.grads.as_ref().ok_or_else(|| Error::invalid("grads", "an inference engine"))?;
        self.ctx.read_f32(grads, 0, self.arch.param_count).map_err(|e| self.lost_or(e))
    }

    pub fn set_resident_limit(&mut self, bytes: u64) {
        self.resident_limit = bytes;
        self.data.clear();
    }

    /// Rebuilds the step programs with other rewrites (`GPU_VAE_FUSE` sets the default).
    pub fn set_fusion(&mut self, fusion: Fusion) {
        self.fusion = fusion;
        self.programs.clear();
    }

    /// Plans the rewrites for an adapter with `limits` (at most the device's),
    /// so that the fallbacks of smaller adapters can be tested on this one.
    pub fn set_fusion_limits(&mut self, limits: wgpu::Limits) {
        self.fusion_limits = limits;
        self.programs.clear();
    }

    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }

    pub fn stats(&self) -> GpuStats {
        GpuStats { steps_per_submit: self.steps_per_submit, ..self.stats }
    }

    /// The program for training or evaluation with clean or noisy input,
    /// built on first use: the graph lowered, fused and bound to buffers.
    /// The gather is each data set's own program (`DataSet::gather`).
    fn program(&mut self, train: bool, noisy: bool) -> Result<usize> {
        if let Some(i) = self.programs.iter().position(|(k, _)| *k == (train, noisy)) {
            return Ok(i);
        }
        let graph = if train { Graph::training(&self.arch, noisy) } else { Graph::forward(&self.arch, noisy) };
        let env = Env {
            graph: &graph,
            max_rows: self.max_batch,
            limits: &self.fusion_limits,
            param_count: self.arch.param_count,
            keep: graph.named(),
        };
        let calls = fuse(lower(&graph), self.fusion, &env);
        let p = &self.params;
        let bind = Bindings {
            params: &p.params,
            param_count: p.count,
            grads: p.grads.as_ref(),
            adam: p.adam_m.as_ref().zip(p.adam_v.as_ref()),
            losses: Some((&self.partials, &self.slots)),
            data: None,
        };
        let program = emit(&self.ctx, &self.kernels, &graph, &calls, &mut self.pool, &bind)?;
        let key =
            if train { &mut self.stats.dispatches_per_train_step } else { &mut self.stats.dispatches_per_eval_step };
        *key = program.len() + 1; // + the gather
        self.programs.push(((train, noisy), program));
        Ok(self.programs.len() - 1)
    }

    /// `e`, or the device loss that caused it: after a loss every call fails,
    /// and the loss is what the user must hear about.
    fn lost_or(&self, e: Error) -> Error {
        match self.lost.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(why) => Error::Gpu(format!("the device was lost ({why}); the last checkpoint is kept")),
            None => e,
        }
    }

    /// The errors of a popped validation scope and out-of-memory scope, named.
    fn check_errors(&self, doing: &str, validation: Option<wgpu::Error>, oom: Option<wgpu::Error>) -> Result<()> {
        if let Some(e) = oom {
            let limit = self.ctx.limits.max_buffer_size;
            return Err(self.lost_or(Error::Gpu(format!(
                "{doing}: out of device memory on {} (largest buffer allowed {limit} bytes): {e}",
                self.ctx.info.name
            ))));
        }
        if let Some(e) = validation {
            return Err(self.lost_or(Error::Gpu(format!("{doing}: {e}"))));
        }
        Ok(())
    }

    /// Profiles the first `steps` training steps of `plan` (they train the
    /// model, as `train_epoch` would) with a timestamp around every dispatch.
    /// Profiling only: `train_epoch` writes no queries.
    pub fn profile_train_steps(
        &mut self,
        images: &Arc<Images>,
        plan: &EpochPlan,
        steps: usize,
        mode: TimestampMode,
    ) -> Result<Profile> {
        self.check_batch(plan.batch_size)?;
        if let Some(&bad) = plan.order.iter().find(|&&i| i as usize >= images.count) {
            return Err(Error::invalid("order", format!("names image {bad}, but there are {} images", images.count)));
        }
        let mut rows = self.train_rows(plan);
        rows.truncate(steps);
        self.ensure_steps(rows.len())?;
        let d = self.data_set(images, plan.order.len())?;
        if self.data[d].window.is_some() {
            return Err(Error::invalid("--profile", "profiles a data set kept on the device; this one is streamed"));
        }
        let p = self.program(true, plan.noise_std > 0.0)?;
        let scope = self.ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        self.ctx.queue.write_buffer(&self.data[d].order, 0, bytemuck::cast_slice(&plan.order));
        self.table.write(&self.ctx.queue, &rows);
        let (gather, program) = (&self.data[d].gather, &self.programs[p].1);
        let labels: Vec<Vec<String>> =
            rows.iter().map(|r| [gather.labels(r.rows), program.labels(r.rows)].concat()).collect();
        let ticks = profile::record_steps(&self.ctx, mode, &self.table, &[gather, program], rows.len());
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("profiling the steps: {e}")));
        }
        let period = self.ctx.queue.get_timestamp_period() as f64;
        let flops: Vec<Vec<Option<f64>>> =
            rows.iter().map(|r| [gather.flops(r.rows), program.flops(r.rows)].concat()).collect();
        Ok(profile::aggregate(mode, &labels, &ticks?, period)?.with_flops(&flops))
    }

    /// The labels (`Dispatch::label`) of a training step of `rows` images on
    /// `images`, gather first, as `profile_train_steps` names them.
    pub fn train_step_labels(&mut self, images: &Arc<Images>, noisy: bool, rows: u32) -> Result<Vec<String>> {
        let d = self.data_set(images, images.count)?;
        let p = self.program(true, noisy)?;
        Ok([self.data[d].gather.labels(rows), self.programs[p].1.labels(rows)].concat())
    }

    fn check_batch(&self, batch: usize) -> Result<()> {
        if batch == 0 || batch > self.max_batch {
            return Err(Error::invalid(
                "batch size",
                format!("{batch} is outside 1..={} (the engine's max batch)", self.max_batch),
            ));
        }
        Ok(())
    }
}

impl Engine for GpuEngine {
    fn describe(&self) -> String {
        format!("gpu: {}", self.ctx.describe())
    }

    fn train_epoch(
        &mut self,
        images: &Arc<Images>,
        plan: &EpochPlan,
        tick: &mut dyn FnMut(usize, LossSums),
    ) -> Result<LossSums> {
        self.train_epoch_at(images, plan, &EpochStart::default(), tick)
    }

    /// The plan's rows from `start.batches_done` on (row offsets into the
    /// whole order, loss slots from 0); a stop ends it at a submit boundary.
    fn train_epoch_at(
        &mut self,
        images: &Arc<Images>,
        plan: &EpochPlan,
        start: &EpochStart,
        tick: &mut dyn FnMut(usize, LossSums),
    ) -> Result<LossSums> {
        self.check_batch(plan.batch_size)?;
        let skip = start.batches_done;
        let mut steps = self.train_rows(plan);
        if skip > steps.len() {
            return Err(Error::invalid("resume", format!("{skip} batches done of an epoch of {}", steps.len())));
        }
        steps.drain(..skip);
        steps.iter_mut().enumerate().for_each(|(i, s)| s.slot = i as u32);
        let mut sums = start.sums;
        let mut read = 0;
        let noisy = plan.noise_std > 0.0;
        let first = plan.first_step + skip as u64;
        let done = self.run_steps(images, &plan.order, &steps, (true, noisy), start.stop, |done, slots| {
            add_slots(&mut sums, slots, read, done, first)?;
            read = done;
            tick(skip + done, sums);
            Ok(())
        })?;
        self.adam_steps = first + done as u64;
        if done < steps.len() {
            return Err(start.interrupted(plan, skip + done, sums));
        }
        Ok(sums)
    }

    fn prepare(&mut self, train: &Arc<Images>, test: &Arc<Images>, batch_size: usize, noisy: bool) -> Result<()> {
        self.check_batch(batch_size)?;
        let oom = self.ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let scope = self.ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let result = (|| {
            self.ensure_steps(train.count.max(test.count).div_ceil(batch_size))?;
            self.data_set(train, train.count)?;
            self.data_set(test, test.count)?;
            self.program(true, noisy)?;
            self.program(false, noisy)?;
            Ok(())
        })();
        let validation = pollster::block_on(scope.pop());
        let out_of_memory = pollster::block_on(oom.pop());
        result?;
        self.check_errors("preparing training", validation, out_of_memory)
    }

    fn adam_state(&mut self) -> Result<Option<AdamState>> {
        let p = &self.params;
        let (Some(m), Some(v)) = (&p.adam_m, &p.adam_v) else { return Ok(None) };
        let m = self.ctx.read_f32(m, 0, p.count).map_err(|e| self.lost_or(e))?;
        let v = self.ctx.read_f32(v, 0, p.count).map_err(|e| self.lost_or(e))?;
        Ok(Some(AdamState { m, v, steps: self.adam_steps }))
    }

    fn restore_adam(&mut self, state: &AdamState) -> Result<()> {
        let p = &self.params;
        let (Some(m), Some(v)) = (&p.adam_m, &p.adam_v) else {
            return Err(Error::invalid("resume", "the engine was built without Adam's buffers"));
        };
        if state.m.len() != p.count || state.v.len() != p.count {
            return Err(Error::invalid(
                "adam state",
                format!("moments of {} and {} values for {} parameters", state.m.len(), state.v.len(), p.count),
            ));
        }
        self.ctx.queue.write_buffer(m, 0, bytemuck::cast_slice(&state.m));
        self.ctx.queue.write_buffer(v, 0, bytemuck::cast_slice(&state.v));
        self.adam_steps = state.steps;
        self.ctx.wait().map_err(|e| self.lost_or(e))
    }

    fn evaluate(&mut self, images: &Arc<Images>, plan: &EvalPlan) -> Result<LossSums> {
        self.check_batch(plan.batch_size)?;
        let n = images.count;
        let order: Vec<u32> = (0..n as u32).collect();
        let steps: Vec<Step> = (0..n.div_ceil(plan.batch_size))
            .map(|b| Step {
                rows: plan.batch_size.min(n - b * plan.batch_size) as u32,
                row_offset: (b * plan.batch_size) as u32,
                rng_step: b as u32,
                slot: b as u32,
                seed: plan.seed,
                reparam_stream: Stream::EvalReparam as u32,
                noise_stream: Stream::EvalNoise as u32,
                noise_std: plan.noise_std,
                ..Default::default()
            })
            .collect();
        let mut sums = LossSums::default();
        let mut read = 0;
        self.run_steps(images, &order, &steps, (false, plan.noise_std > 0.0), None, |done, slots| {
            // Evaluation reports sums; a non-finite one is the trainer's to judge.
            for s in read..done {
                sums += LossSums { recon: slots[2 * s] as f64, kl: slots[2 * s + 1] as f64 };
            }
            read = done;
            Ok(())
        })?;
        Ok(sums)
    }

    fn params(&mut self) -> Result<Vec<f32>> {
        self.ctx.read_f32(&self.params.params, 0, self.arch.param_count).map_err(|e| self.lost_or(e))
    }

    fn stats(&self) -> EngineStats {
        let s = GpuEngine::stats(self);
        EngineStats {
            dispatches_per_step: Some(s.dispatches_per_train_step),
            submits_per_epoch: Some(s.submits_last_epoch),
            host: Some(s.host),
        }
    }
}
