//! The CPU engine runs a `model::Graph` node by node, each op through the
//! `cpu::` functions that are the GPU kernels' reference twins.

use super::activation::{activation_backward, activation_forward_from, sigmoid_backward, sigmoid_forward};
use super::adam::adam_update;
use super::concat::{concat_backward, concat_forward};
use super::conv::{conv_transpose2d_backward, conv_transpose2d_forward_act, conv2d_backward, conv2d_forward_act};
use super::loss::{
    bce_with_logits_backward, bce_with_logits_forward, bce_with_logits_forward_backward, kl_backward, kl_forward,
    mse_backward, mse_forward, sigmoid_mse_forward_backward,
};
use super::matmul::{bias_activation, column_sums, matmul_nn, matmul_nt, matmul_tn};
use super::reparam::{reparameterize_backward, reparameterize_forward};
use crate::engine::{AdamConfig, LossSums, Noise, Objective};
use crate::model::{Activation, Graph, Layer, LayerKind, LossTerm, Node, Op, TensorId};
use crate::rng;

/// Parameters with their gradients and Adam's moments, one flat buffer each
/// (P), laid out by `Architecture::tensors`. Gradients and moments are
/// allocated on first use, so a model used for inference holds only its weights.
pub struct ParamState {
    pub params: Vec<f32>,
    pub grads: Vec<f32>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
    pub adam: AdamConfig,
    /// Adam steps taken so far.
    pub steps: u64,
}

/// What one step reads besides the tensors: the interpreter's twin of the GPU's step row.
#[derive(Clone, Copy, Debug)]
pub struct StepInputs {
    pub rows: usize,
    pub reparam: Noise,
    pub objective: Objective,
    /// Adam's learning rate for this step (a schedule's, or the config's).
    pub lr: f32,
}

/// A graph and the values of its tensors for the current batch size.
pub struct Interpreter {
    pub graph: Graph,
    values: Vec<Vec<f32>>,
    rows: usize,
    /// Whether the graph has convolution gradients, which add to cleared ones
    /// (dense layers write theirs).
    clears_grads: bool,
    /// The grads buffer is sized on the first run of a graph with a backward pass.
    has_backward: bool,
    /// Loss nodes run with their backward in one pass: start node -> nodes taken.
    fused_losses: Vec<Option<FusedLoss>>,
}

impl Interpreter {
    pub fn new(graph: Graph) -> Interpreter {
        let has_backward =
            graph.nodes.iter().any(|n| matches!(n.op, Op::DenseBackward { .. } | Op::ConvBackward { .. }));
        let clears_grads = graph.nodes.iter().any(|n| matches!(n.op, Op::ConvBackward { .. }));
        let values = vec![Vec::new(); graph.tensors.len()];
        let fused_losses = (0..graph.nodes.len()).map(|i| FusedLoss::at(&graph.nodes, i)).collect();
        Interpreter { graph, values, rows: 0, clears_grads, has_backward, fused_losses }
    }

    /// Sizes every tensor for `rows` images.
    fn resize(&mut self, rows: usize) {
        if self.rows != rows {
            self.rows = rows;
            for (v, t) in self.values.iter_mut().zip(&self.graph.tensors) {
                v.resize(rows * t.width, 0.0);
            }
        }
    }

    /// Sets a source tensor (rows, width) before `run`; the CPU twins of
    /// `Gather` and `InputNoise` run on the loader thread, ahead of the step,
    /// and their outputs are fed here.
    pub fn feed(&mut self, t: TensorId, rows: usize, data: &[f32]) {
        self.resize(rows);
        assert_eq!(data.len(), self.values[t.0].len(), "{}: fed {} values", self.graph.tensors[t.0].name, data.len());
        self.values[t.0].copy_from_slice(data);
    }

    /// Sets a conditional graph's one-hot labels (rows, classes); refuses a
    /// graph that reads labels when none are given, and labels it does not read.
    pub fn feed_labels(&mut self, rows: usize, labels: Option<&[f32]>) {
        match (self.graph.labels, labels) {
            (Some(t), Some(labels)) => self.feed(t, rows, labels),
            (None, None) => {}
            (Some(_), None) => panic!("a conditional model's step needs the batch's labels"),
            (None, Some(_)) => panic!("labels given to a model that is not conditional"),
        }
    }

    pub fn value(&self, t: TensorId) -> &[f32] {
        &self.values[t.0]
    }

    /// Runs every node for the batch fed last; returns the loss sums.
    pub fn run(&mut self, state: &mut ParamState, step: &StepInputs) -> LossSums {
        self.resize(step.rows);
        if self.has_backward {
            state.grads.resize(state.params.len(), 0.0);
            if self.clears_grads {
                state.grads.fill(0.0);
            }
        }
        let mut sums = LossSums::default();
        let rows = step.rows;
        let mut skip = 0;
        for (i, node) in self.graph.nodes.iter().enumerate() {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            if let Some(fused) = self.fused_losses[i] {
                skip = fused.run(&self.graph.nodes[i..], &mut self.values, step, &mut sums);
                continue;
            }
            let (ins, outs) = (&node.inputs, &node.outputs);
            let mut out = outs.iter().map(|t| std::mem::take(&mut self.values[t.0])).collect::<Vec<_>>();
            let v = &self.values;
            let x = |i: usize| v[ins[i].0].as_slice();
            let mut add = |term: LossTerm, s: f64| match term {
                LossTerm::Recon => sums.recon += s,
                LossTerm::Kl => sums.kl += s,
            };
            match &node.op {
                Op::Gather | Op::InputNoise | Op::Labels => {} // fed
                Op::Concat => concat_forward(&mut out[0], x(0), x(1), rows),
                Op::Dense(layer) | Op::Conv(layer) => {
                    // With a second output the layer keeps its pre-activation
                    // and activates out of place.
                    let (y, pre) = out.split_at_mut(1);
                    let (target, act) = match pre.first_mut() {
                        Some(pre) => (pre, Activation::Identity),
                        None => (&mut y[0], layer.activation),
                    };
                    match node.op {
                        Op::Dense(_) => dense_forward(target, x(0), &state.params, layer, rows, act),
                        _ => conv_forward(target, x(0), &state.params, layer, rows, act),
                    }
                    if let Some(pre) = pre.first() {
                        activation_forward_from(&mut y[0], pre, layer.activation);
                    }
                }
                &Op::Reparameterize { latent } => {
                    let (z, eps) = out.split_at_mut(1);
                    rng::fill_normal(&mut eps[0], step.reparam.seed, step.reparam.stream, step.reparam.step);
                    reparameterize_forward(&mut z[0], x(0), &eps[0], latent);
                }
                Op::Sigmoid => sigmoid_forward(&mut out[0], x(0)),
                &Op::BceWithLogits(term) => add(term, bce_with_logits_forward(x(0), x(1))),
                &Op::Mse(term) => add(term, mse_forward(x(0), x(1))),
                &Op::Kl { term, latent } => add(term, kl_forward(x(0), latent)),

                &Op::BceWithLogitsBackward { accumulate } => {
                    assert!(!accumulate, "BCE's gradient is written, not added");
                    bce_with_logits_backward(&mut out[0], x(0), x(1), step.objective.recon_scale);
                }
                &Op::MseBackward { accumulate } => {
                    assert!(!accumulate, "MSE's gradient is written, not added");
                    mse_backward(&mut out[0], x(0), x(1), step.objective.recon_scale);
                }
                Op::SigmoidBackward => sigmoid_backward(&mut out[0], x(0)),
                &Op::ActivationBackward(act) => {
                    activation_backward(&mut out[0], ins.get(1).map(|t| v[t.0].as_slice()), x(0), act)
                }
                Op::DenseBackward { layer, accumulate } => {
                    let dx = out.first_mut().map(|d| d.as_mut_slice());
                    dense_backward(dx, *accumulate, x(0), x(1), &state.params, &mut state.grads, layer, rows);
                }
                Op::ConvBackward { layer, accumulate } => {
                    assert!(!accumulate, "a convolution's input gradient is written");
                    let dx = out.first_mut().map(|d| d.as_mut_slice());
                    conv_backward(dx, x(0), x(1), &state.params, &mut state.grads, layer, rows);
                }
                &Op::ReparameterizeBackward { latent, accumulate } => {
                    if !accumulate {
                        out[0].fill(0.0);
                    }
                    reparameterize_backward(&mut out[0], x(0), x(1), x(2), latent);
                }
                &Op::ConcatBackward { at, accumulate } => concat_backward(&mut out[0], x(0), at, rows, accumulate),
                &Op::KlBackward { latent, accumulate } => {
                    if !accumulate {
                        out[0].fill(0.0);
                    }
                    kl_backward(&mut out[0], x(0), latent, step.objective.kl_scale);
                }
                Op::AdamUpdate => {
                    let p = state.params.len();
                    state.adam_m.resize(p, 0.0);
                    state.adam_v.resize(p, 0.0);
                    state.steps += 1;
                    let s = &mut *state;
                    let settings = s.adam.step(s.steps, step.lr);
                    adam_update(&mut s.params, &mut s.adam_m, &mut s.adam_v, &s.grads, &settings);
                }
            }
            for (t, value) in outs.iter().zip(out) {
                self.values[t.0] = value;
            }
        }
        sums
    }
}

/// A loss and the first steps of its backward pass, run as one pass over
/// the batch by `cpu::loss` (the same values, bit for bit, as node by node).
#[derive(Clone, Copy, Debug)]
enum FusedLoss {
    /// BceWithLogits, BceWithLogitsBackward.
    Bce,
    /// Mse, MseBackward, SigmoidBackward (the MSE of a sigmoid's output).
    SigmoidMse,
}

impl FusedLoss {
    fn at(nodes: &[Node], i: usize) -> Option<FusedLoss> {
        let op = |j: usize| nodes.get(i + j).map(|n| &n.op);
        let ins = |j: usize| &nodes[i + j].inputs;
        let outs = |j: usize| &nodes[i + j].outputs;
        match (op(0)?, op(1)?, op(2)) {
            (Op::BceWithLogits(_), Op::BceWithLogitsBackward { accumulate: false }, _) if ins(0) == ins(1) => {
                Some(FusedLoss::Bce)
            }
            (Op::Mse(_), Op::MseBackward { accumulate: false }, Some(Op::SigmoidBackward))
                if ins(0) == ins(1) && outs(1) == outs(2) && ins(2)[..] == ins(0)[..1] =>
            {
                Some(FusedLoss::SigmoidMse)
            }
            _ => None,
        }
    }

    /// Runs the fused nodes from `nodes[0]`; returns how many more it took.
    fn run(self, nodes: &[Node], values: &mut [Vec<f32>], step: &StepInputs, sums: &mut LossSums) -> usize {
        let (Op::BceWithLogits(term) | Op::Mse(term)) = nodes[0].op else {
            unreachable!("a fused loss starts with its loss")
        };
        let (x, target, d) = (nodes[0].inputs[0], nodes[0].inputs[1], nodes[1].outputs[0]);
        let mut out = std::mem::take(&mut values[d.0]);
        let scale = step.objective.recon_scale;
        let sum = match self {
            FusedLoss::Bce => bce_with_logits_forward_backward(&mut out, &values[x.0], &values[target.0], scale),
            FusedLoss::SigmoidMse => sigmoid_mse_forward_backward(&mut out, &values[x.0], &values[target.0], scale),
        };
        values[d.0] = out;
        match term {
            LossTerm::Recon => sums.recon += sum,
            LossTerm::Kl => sums.kl += sum,
        }
        match self {
            FusedLoss::Bce => 1,
            FusedLoss::SigmoidMse => 2,
        }
    }
}

/// out (B,O) = act(x (B,I) · Wᵀ + b).
fn dense_forward(out: &mut [f32], x: &[f32], params: &[f32], layer: &Layer, rows: usize, act: Activation) {
    let (i, o) = (layer.inputs, layer.outputs);
    matmul_nt(out, x, &params[layer.weight..layer.weight + o * i], rows, i, o, false);
    bias_activation(out, &params[layer.bias..layer.bias + o], rows, o, act);
}

/// dW = dyᵀ·x, db = Σ dy (a layer's parameters have one Dense node), and
/// dx (+)= dy·W when asked. dy is the gradient of
/// the layer's pre-activation (the activation's backward has run).
#[allow(clippy::too_many_arguments)]
fn dense_backward(
    dx: Option<&mut [f32]>,
    accumulate: bool,
    dy: &[f32],
    x: &[f32],
    params: &[f32],
    grads: &mut [f32],
    layer: &Layer,
    rows: usize,
) {
    let (i, o) = (layer.inputs, layer.outputs);
    matmul_tn(&mut grads[layer.weight..layer.weight + o * i], dy, x, o, rows, i, false);
    column_sums(&mut grads[layer.bias..layer.bias + o], dy, rows, o);
    if let Some(dx) = dx {
        matmul_nn(dx, dy, &params[layer.weight..layer.weight + o * i], rows, o, i, accumulate);
    }
}

/// out (B, O) = act(conv(x (B, I)) + b), either kind of convolution.
fn conv_forward(out: &mut [f32], x: &[f32], params: &[f32], layer: &Layer, rows: usize, act: Activation) {
    let w = &params[layer.weight..layer.bias];
    let b_len = match layer.kind {
        LayerKind::Conv2d(g) => g.out_c,
        LayerKind::ConvTranspose2d(g) => g.in_c,
        LayerKind::Dense => unreachable!("a Conv node holds a convolution"),
    };
    let b = &params[layer.bias..layer.bias + b_len];
    match layer.kind {
        LayerKind::Conv2d(g) => conv2d_forward_act(out, x, w, b, &g, rows, act),
        LayerKind::ConvTranspose2d(g) => conv_transpose2d_forward_act(out, x, w, b, &g, rows, act),
        LayerKind::Dense => unreachable!(),
    }
}

/// dW += .., db += .., dx = .. when asked, from dy (the pre-activation's gradient).
fn conv_backward(
    dx: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    params: &[f32],
    grads: &mut [f32],
    layer: &Layer,
    rows: usize,
) {
    let w = &params[layer.weight..layer.bias];
    let (dw, db) = grads[layer.weight..].split_at_mut(layer.bias - layer.weight);
    match layer.kind {
        LayerKind::Conv2d(g) => conv2d_backward(dx, dw, &mut db[..g.out_c], dy, x, w, &g, rows),
        LayerKind::ConvTranspose2d(g) => conv_transpose2d_backward(dx, dw, &mut db[..g.in_c], dy, x, w, &g, rows),
        LayerKind::Dense => unreachable!("a Conv node holds a convolution"),
    }
}
