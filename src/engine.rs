//! The vocabulary shared by the compute paths, one level below `cpu/` and
//! `gpu/`: what the trainer needs from an engine (`Engine`), what the uses of
//! a trained model need (`Inference`), and the numbers of a step (objective,
//! noise, Adam settings, loss sums).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::data::Images;
use crate::error::{Error, Result};
use crate::model::{Architecture, ModelKind};
use crate::rng::Stream;

/// Loss sums over one batch; the trainer turns them into per-sample numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossSums {
    pub recon: f64,
    pub kl: f64,
}

impl std::ops::AddAssign for LossSums {
    fn add_assign(&mut self, o: LossSums) {
        self.recon += o.recon;
        self.kl += o.kl;
    }
}

/// Where the reparameterization noise of a forward pass comes from.
#[derive(Clone, Copy, Debug)]
pub struct Noise {
    pub seed: u32,
    pub stream: Stream,
    pub step: u32,
}

/// Weights of the training objective: `recon_scale·recon + kl_scale·kl`.
#[derive(Clone, Copy, Debug)]
pub struct Objective {
    pub recon_scale: f32,
    pub kl_scale: f32,
}

impl Objective {
    /// VAE: summed over the batch (pytorch/examples); AE: mean over batch and pixels (Keras).
    pub fn for_batch(arch: &Architecture, rows: usize, beta: f32) -> Objective {
        match arch.config.kind {
            ModelKind::Vae => Objective { recon_scale: 1.0, kl_scale: beta },
            ModelKind::Ae => Objective { recon_scale: 1.0 / (rows * arch.config.input_dim()) as f32, kl_scale: 0.0 },
        }
    }
}

/// Adam (Kingma & Ba) in PyTorch's form: eps is added to the bias-corrected sqrt(v̂).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

impl AdamConfig {
    /// The bias corrections for step `t` (1-based): (1/(1-β1^t), 1/sqrt(1-β2^t)),
    /// computed in f64 once per step and shared by every engine.
    pub fn corrections(&self, t: u64) -> (f32, f32) {
        let c1 = 1.0 / (1.0 - (self.beta1 as f64).powf(t as f64));
        let c2 = 1.0 / (1.0 - (self.beta2 as f64).powf(t as f64)).sqrt();
        (c1 as f32, c2 as f32)
    }

    /// The settings of step `t` (1-based) at learning rate `lr`.
    pub fn step(&self, t: u64, lr: f32) -> crate::ops::AdamStep {
        let (c1, c2) = self.corrections(t);
        crate::ops::AdamStep { lr, beta1: self.beta1, beta2: self.beta2, eps: self.eps, c1, c2 }
    }
}

/// What the uses need from a trained model, whatever computes it.
pub trait Inference {
    /// The device in use, for the user.
    fn device(&self) -> String;
    fn arch(&self) -> &Architecture;
    /// The encoder's output for x (B, D): mulv (B, 2L) for a VAE, z (B, L)
    /// for an AE. `labels`: each row's class, for a conditional model (and
    /// only for one: `check_labels`).
    fn encode(&mut self, x: &[f32], labels: Option<&[u8]>, rows: usize) -> Result<Vec<f32>>;
    /// The decoder's logits (B, D) for z (B, L); likelihoods need them unsquashed.
    fn decode_logits(&mut self, z: &[f32], labels: Option<&[u8]>, rows: usize) -> Result<Vec<f32>>;

    /// Pixel probabilities sigmoid(logits) (B, D).
    fn decode(&mut self, z: &[f32], labels: Option<&[u8]>, rows: usize) -> Result<Vec<f32>> {
        let mut out = self.decode_logits(z, labels, rows)?;
        out.iter_mut().for_each(|v| *v = crate::ops::sigmoid(*v));
        Ok(out)
    }
}

/// The one-hot rows (B, classes) of `labels` for `arch`: `None` for a model
/// that is not conditional; refuses missing labels, labels given to a model
/// that takes none, and a class beyond the model's.
pub fn one_hot_labels(arch: &Architecture, labels: Option<&[u8]>, rows: usize) -> Result<Option<Vec<f32>>> {
    let classes = arch.config.classes;
    match labels {
        None if classes == 0 => Ok(None),
        None => Err(Error::invalid(
            "labels",
            format!("the model is conditional ({classes} classes): give each image's class"),
        )),
        Some(_) if classes == 0 => {
            Err(Error::invalid("--class", "the model is not conditional (trained without --conditional)"))
        }
        Some(labels) => {
            if labels.len() != rows {
                return Err(Error::invalid("labels", format!("{} labels for {rows} rows", labels.len())));
            }
            if let Some(&bad) = labels.iter().find(|&&l| l as usize >= classes) {
                return Err(Error::invalid(
                    "labels",
                    format!("class {bad}, but the model has {classes} (0 to {})", classes - 1),
                ));
            }
            let mut out = vec![0.0; rows * classes];
            for (row, &l) in out.chunks_exact_mut(classes).zip(labels) {
                row[l as usize] = 1.0;
            }
            Ok(Some(out))
        }
    }
}

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
    /// Adam's learning rate at each step: the engine's rate, scheduled.
    pub lr: crate::schedule::LrPlan,
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

/// Where an epoch starts and what may stop it: a resumed run skips the
/// batches its checkpoint has trained and continues their loss sums, so the
/// epoch's numbers equal those of an uninterrupted one.
#[derive(Clone, Copy, Debug, Default)]
pub struct EpochStart<'a> {
    /// Batches of the epoch already trained; batch b of the plan is skipped for b < this.
    pub batches_done: usize,
    /// Their loss sums, which this epoch's sums continue (in the same order of additions).
    pub sums: LossSums,
    /// Checked between steps: once set, the epoch stops after the step in
    /// flight with `Error::Interrupted`.
    pub stop: Option<&'a AtomicBool>,
}

impl EpochStart<'_> {
    /// Whether a stop was requested.
    pub fn stopping(&self) -> bool {
        self.stop.is_some_and(|s| s.load(Ordering::SeqCst))
    }

    /// The error an engine returns when it stops after `batches_done` of the plan's batches.
    pub fn interrupted(&self, plan: &EpochPlan, batches_done: usize, sums: LossSums) -> Error {
        let step = plan.first_step + batches_done as u64;
        Error::Interrupted { epoch: 0, batches_done, step, recon: sums.recon, kl: sums.kl }
    }
}

/// Adam's state besides the parameters: both moments (P each) and the number
/// of steps taken, which sets the bias corrections of the next step.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub steps: u64,
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

    /// `train_epoch` from a point within the epoch, stoppable between steps
    /// (see `EpochStart`); `tick` gets batch counts of the whole epoch. The
    /// default serves engines that only train whole epochs.
    fn train_epoch_at(
        &mut self,
        images: &Arc<Images>,
        plan: &EpochPlan,
        start: &EpochStart,
        tick: &mut dyn FnMut(usize, LossSums),
    ) -> Result<LossSums> {
        if start.batches_done != 0 {
            return Err(Error::invalid("resume", format!("{} cannot start an epoch mid-way", self.describe())));
        }
        if start.stopping() {
            return Err(start.interrupted(plan, 0, LossSums::default()));
        }
        self.train_epoch(images, plan, tick)
    }

    /// Allocates and checks everything training on these data sets will use
    /// (data on the device, programs, buffers), so that a batch, model or
    /// data set beyond the device's limits is refused before the first step.
    fn prepare(&mut self, _train: &Arc<Images>, _test: &Arc<Images>, _batch_size: usize, _noisy: bool) -> Result<()> {
        Ok(())
    }

    /// Adam's moments and step count, for a checkpoint that can be resumed;
    /// `None` from engines that cannot give them.
    fn adam_state(&mut self) -> Result<Option<AdamState>> {
        Ok(None)
    }

    /// Continues from a checkpoint's Adam state (the parameters are given
    /// when the engine is built).
    fn restore_adam(&mut self, _state: &AdamState) -> Result<()> {
        Err(Error::invalid("resume", format!("{} cannot restore Adam's state", self.describe())))
    }

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
    /// Where the host's time went, per step of the last training epoch.
    pub host: Option<HostTimes>,
}

/// Host time per training step, in µs: recording the step's commands,
/// `CommandEncoder::finish` (where wgpu does most of its encoding work),
/// `Queue::submit`, and the rest: waiting for loss readbacks (GPU time the
/// host could not overlap) and handling them.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct HostTimes {
    pub record_us: f64,
    pub finish_us: f64,
    pub submit_us: f64,
    pub wait_us: f64,
}
