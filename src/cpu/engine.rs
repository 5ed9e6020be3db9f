//! `CpuModel`: a model on the CPU, its graphs run by the interpreter: the
//! training step, the forward pass for evaluation, and the encoder and
//! decoder slices for inference, each built on first use.

use super::interpreter::{Interpreter, ParamState, StepInputs};
use crate::engine::{AdamConfig, AdamState, Inference, LossSums, Noise, Objective, one_hot_labels};
use crate::error::{Error, Result};
use crate::model::{Architecture, Graph};

/// Which graph of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// Forward, backward and Adam; the flag: noisy input.
    Train(bool),
    /// Forward, backward, no Adam (gradient checks).
    Gradients(bool),
    /// Forward and losses.
    Eval(bool),
    /// Image -> code.
    Encode,
    /// Code -> logits.
    Decode,
}

/// A batch's inputs: the clean images (B, D), the target and, without
/// `noisy`, the input; a conditional model's one-hot `labels` (B, classes).
#[derive(Clone, Copy, Debug, Default)]
pub struct BatchRef<'a> {
    pub clean: &'a [f32],
    pub noisy: Option<&'a [f32]>,
    pub labels: Option<&'a [f32]>,
}

impl<'a> BatchRef<'a> {
    /// Clean images only: the input is the target.
    pub fn clean(clean: &'a [f32]) -> BatchRef<'a> {
        BatchRef { clean, noisy: None, labels: None }
    }
}

pub struct CpuModel {
    pub arch: Architecture,
    pub state: ParamState,
    parts: Vec<(Part, Interpreter)>,
}

impl CpuModel {
    pub fn new(arch: Architecture, params: Vec<f32>, adam: AdamConfig) -> CpuModel {
        assert_eq!(params.len(), arch.param_count, "parameter count");
        let state = ParamState { params, grads: Vec::new(), adam_m: Vec::new(), adam_v: Vec::new(), adam, steps: 0 };
        CpuModel { arch, state, parts: Vec::new() }
    }

    /// A model for inference only: it never trains, so its optimizer
    /// settings are placeholders and no gradients or moments are allocated.
    pub fn for_inference(arch: Architecture, params: Vec<f32>) -> CpuModel {
        CpuModel::new(arch, params, AdamConfig { lr: 0.0, beta1: 0.9, beta2: 0.999, eps: 1e-8 })
    }

    /// The flat parameters (P).
    pub fn params(&self) -> &[f32] {
        &self.state.params
    }

    /// The flat gradient of the last `gradients` or `train_step` (P).
    pub fn grads(&self) -> &[f32] {
        &self.state.grads
    }

    /// Adam steps taken so far.
    pub fn steps(&self) -> u64 {
        self.state.steps
    }

    /// Adam's moments (zeros before the first step) and steps taken.
    pub fn adam_state(&self) -> AdamState {
        let p = self.state.params.len();
        let moment = |v: &Vec<f32>| if v.is_empty() { vec![0.0; p] } else { v.clone() };
        AdamState { m: moment(&self.state.adam_m), v: moment(&self.state.adam_v), steps: self.state.steps }
    }

    /// Sets Adam's moments and step count, as a checkpoint saved them.
    pub fn restore_adam(&mut self, state: &AdamState) -> Result<()> {
        let p = self.state.params.len();
        if state.m.len() != p || state.v.len() != p {
            return Err(Error::invalid(
                "adam state",
                format!("moments of {} and {} values for {p} parameters", state.m.len(), state.v.len()),
            ));
        }
        self.state.adam_m.clone_from(&state.m);
        self.state.adam_v.clone_from(&state.v);
        self.state.steps = state.steps;
        Ok(())
    }

    fn part(&mut self, part: Part) -> &mut Interpreter {
        let i = match self.parts.iter().position(|(p, _)| *p == part) {
            Some(i) => i,
            None => {
                let graph = match part {
                    Part::Train(noisy) => Graph::training(&self.arch, noisy),
                    Part::Gradients(noisy) => Graph::with_backward(&self.arch, noisy),
                    Part::Eval(noisy) => Graph::forward(&self.arch, noisy),
                    Part::Encode => {
                        let g = Graph::forward(&self.arch, false);
                        g.slice(g.input, g.code)
                    }
                    Part::Decode => {
                        let g = Graph::forward(&self.arch, false);
                        g.slice(g.latent, g.logits)
                    }
                };
                self.parts.push((part, Interpreter::new(graph)));
                self.parts.len() - 1
            }
        };
        &mut self.parts[i].1
    }

    /// Runs the graph of `part` on a batch: `clean` (B, D) is the target and,
    /// without `noisy` (B, D), the input; a conditional model's `labels`
    /// (B, classes) are one-hot.
    fn run(&mut self, part: Part, batch: BatchRef, step: StepInputs) -> LossSums {
        let rows = step.rows;
        let interp = self.part(part);
        let (c, i) = (interp.graph.clean, interp.graph.input);
        interp.feed(c, rows, batch.clean);
        if let Some(noisy) = batch.noisy {
            interp.feed(i, rows, noisy);
        }
        interp.feed_labels(rows, batch.labels);
        // Borrow the interpreter and the state apart.
        let at = self.parts.iter().position(|(p, _)| *p == part).expect("just built");
        self.parts[at].1.run(&mut self.state, &step)
    }

    /// One training step: forward, backward, Adam.
    pub fn train_step(&mut self, batch: BatchRef, rows: usize, noise: Noise, beta: f32, lr: f32) -> LossSums {
        let objective = Objective::for_batch(&self.arch, rows, beta);
        let step = StepInputs { rows, reparam: noise, objective, lr };
        self.run(Part::Train(batch.noisy.is_some()), batch, step)
    }

    /// Forward and backward without updating: the gradients of `objective` into `grads`.
    pub fn gradients(&mut self, batch: BatchRef, rows: usize, noise: Noise, objective: Objective) -> LossSums {
        let step = StepInputs { rows, reparam: noise, objective, lr: 0.0 };
        self.run(Part::Gradients(batch.noisy.is_some()), batch, step)
    }

    /// The loss sums of a batch, without training.
    pub fn forward(&mut self, batch: BatchRef, rows: usize, noise: Noise) -> LossSums {
        let objective = Objective { recon_scale: 0.0, kl_scale: 0.0 };
        let step = StepInputs { rows, reparam: noise, objective, lr: 0.0 };
        self.run(Part::Eval(batch.noisy.is_some()), batch, step)
    }

    /// The output `out` of a slice `part` for its input x (rows, width) and,
    /// for a conditional model, the one-hot labels.
    fn slice_output(&mut self, part: Part, x: &[f32], labels: Option<&[f32]>, rows: usize) -> Vec<f32> {
        let noise = Noise { seed: 0, stream: crate::rng::Stream::Sample, step: 0 };
        let step =
            StepInputs { rows, reparam: noise, objective: Objective { recon_scale: 0.0, kl_scale: 0.0 }, lr: 0.0 };
        let interp = self.part(part);
        let (from, to) = match part {
            Part::Encode => (interp.graph.input, interp.graph.code),
            _ => (interp.graph.latent, interp.graph.logits),
        };
        interp.feed(from, rows, x);
        interp.feed_labels(rows, labels);
        let at = self.parts.iter().position(|(p, _)| *p == part).expect("just built");
        self.parts[at].1.run(&mut self.state, &step);
        self.parts[at].1.value(to).to_vec()
    }
}

impl Inference for CpuModel {
    fn device(&self) -> String {
        "cpu".into()
    }

    fn arch(&self) -> &Architecture {
        &self.arch
    }

    fn encode(&mut self, x: &[f32], labels: Option<&[u8]>, rows: usize) -> Result<Vec<f32>> {
        let onehot = one_hot_labels(&self.arch, labels, rows)?;
        Ok(self.slice_output(Part::Encode, x, onehot.as_deref(), rows))
    }

    fn decode_logits(&mut self, z: &[f32], labels: Option<&[u8]>, rows: usize) -> Result<Vec<f32>> {
        let onehot = one_hot_labels(&self.arch, labels, rows)?;
        Ok(self.slice_output(Part::Decode, z, onehot.as_deref(), rows))
    }
}
