//! The training step as a graph: a table of tensors and a list of nodes in
//! execution order. The model builders (`Graph::forward`) write the forward
//! pass once; `Graph::training` (in `autodiff.rs`) appends the backward pass
//! (a reverse sweep of per-op rules) and the Adam update. The CPU engine interprets
//! the nodes with the `cpu::` functions; the GPU engine lowers them to
//! dispatches. Inference runs slices of the same graph (`Graph::slice`).
//!
//! Every tensor is a (rows, width) matrix of f32 whose rows are the batch's
//! images; parameters are not tensors of the graph but ranges of the one
//! flat parameter buffer (`Architecture::tensors`), named by the ops.

use super::{Activation, Architecture, Layer, LayerKind, ModelKind, ReconLoss};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub usize);

/// A (rows, width) tensor of the step.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub width: usize,
}

/// Which loss sum a loss node adds to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossTerm {
    Recon,
    Kl,
}

/// What a node computes. Inputs and outputs are listed per op; "in place"
/// ops update their (only) output, which they also read. `accumulate` means
/// the op adds to its output instead of overwriting it.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `[] -> [clean]`: the step's images, pixels / 255.
    Gather,
    /// `[clean] -> [noisy]`: clamp(clean + std·N(0, 1), 0, 1), std from the step.
    InputNoise,
    /// `[] -> [onehot]`: the step's labels, one-hot over the classes (a
    /// conditional model's second input, gathered like the images).
    Labels,
    /// `[a, b] -> [y]`: y = `[a | b]`, each row a's then b's.
    Concat,
    /// `[x] -> [y]` or `[y, pre]`: y = act(pre), pre = x·Wᵀ + b, kept as a
    /// tensor when the activation's backward needs its input.
    Dense(Layer),
    /// `[x] -> [y]` or `[y, pre]`: as `Dense` with pre = conv(x) + b, a
    /// `Conv2d` or `ConvTranspose2d` layer.
    Conv(Layer),
    /// `[mulv] -> [z, eps]`: z = mu + e^(logvar/2)·eps, eps ~ N(0, 1) from the step.
    Reparameterize { latent: usize },
    /// `[x] -> [y]`: y = sigmoid(x).
    Sigmoid,
    /// `[logits, target]` -> the term's sum of BCE(sigmoid(logits), target).
    BceWithLogits(LossTerm),
    /// `[y, target]` -> the term's sum of (y - target)².
    Mse(LossTerm),
    /// `[mulv]` -> the term's sum of KL(N(mu, e^logvar) ‖ N(0, I)).
    Kl { term: LossTerm, latent: usize },

    /// `[logits, target] -> [dlogits]`: recon_scale·(sigmoid(logits) - target).
    BceWithLogitsBackward { accumulate: bool },
    /// `[y, target] -> [dy]`: recon_scale·2(y - target).
    MseBackward { accumulate: bool },
    /// `[y] -> [d]` in place: d *= y(1 - y).
    SigmoidBackward,
    /// `[y]` or `[y, x] -> [d]` in place: d *= act'(x), from the activation's
    /// output y and, for an activation that needs it, its input x.
    ActivationBackward(Activation),
    /// `[dy, x] -> [dx]` (or `[]` when x needs no gradient): dW += dyᵀ·x and
    /// db += Σ dy into the flat gradient buffer, dx = dy·W.
    DenseBackward { layer: Layer, accumulate: bool },
    /// `[dy, x] -> [dx]` (or `[]`): a convolution's dW, db and dx, as `DenseBackward`.
    ConvBackward { layer: Layer, accumulate: bool },
    /// `[dz, mulv, eps] -> [dmulv]`.
    ReparameterizeBackward { latent: usize, accumulate: bool },
    /// `[mulv] -> [dmulv]`: kl_scale·(mu, ½(e^logvar - 1)).
    KlBackward { latent: usize, accumulate: bool },
    /// `[dy] -> [dx]`: dx = columns `at..` of dy, as wide as dx: the gradient
    /// of one of a `Concat`'s inputs.
    ConcatBackward { at: usize, accumulate: bool },
    /// `[] -> []`: one Adam step over the flat parameters from the flat gradients.
    AdamUpdate,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<TensorId>,
    pub outputs: Vec<TensorId>,
}

/// The nodes of one step and the tensors they pass, with the tensors that
/// inference and the trainer name.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub tensors: Vec<TensorInfo>,
    pub nodes: Vec<Node>,
    /// The clean images (the target).
    pub clean: TensorId,
    /// The encoder's input: the clean images, or their noisy copy.
    pub input: TensorId,
    /// The encoder's output: [mu | logvar] (2L) for a VAE, the code z (L) for an AE.
    pub code: TensorId,
    /// The decoder's input z (L).
    pub latent: TensorId,
    /// The decoder's output (D).
    pub logits: TensorId,
    /// A conditional model's one-hot labels (classes).
    pub labels: Option<TensorId>,
}

impl Graph {
    /// The forward pass and losses of `arch`; with `noisy` the encoder sees
    /// the images with input noise (denoising).
    pub fn forward(arch: &Architecture, noisy: bool) -> Graph {
        let cfg = &arch.config;
        let mut g = Builder::default();
        let clean = g.node(Op::Gather, &[], &[("images", cfg.input_dim())])[0];
        let input =
            if noisy { g.node(Op::InputNoise, &[clean], &[("noisy images", cfg.input_dim())])[0] } else { clean };
        let labels = (cfg.classes > 0).then(|| g.node(Op::Labels, &[], &[("labels", cfg.classes)])[0]);
        let mut x = input;
        for layer in &arch.encoder {
            x = g.dense(layer, x, labels);
        }
        let (code, latent) = match (cfg.kind, &arch.head) {
            (ModelKind::Vae, Some(head)) => {
                let mulv = g.dense(head, x, labels);
                // KL before the sample, so that the backward sweep writes
                // dmulv from the sample's gradient and then adds KL's.
                g.node(Op::Kl { term: LossTerm::Kl, latent: cfg.latent }, &[mulv], &[]);
                let z = g.node(
                    Op::Reparameterize { latent: cfg.latent },
                    &[mulv],
                    &[("z", cfg.latent), ("eps", cfg.latent)],
                );
                (mulv, z[0])
            }
            _ => (x, x),
        };
        let mut x = latent;
        for layer in &arch.decoder {
            x = g.dense(layer, x, labels);
        }
        let logits = x;
        match cfg.loss {
            ReconLoss::Bce => {
                g.node(Op::BceWithLogits(LossTerm::Recon), &[logits, clean], &[]);
            }
            ReconLoss::Mse => {
                let probs = g.node(Op::Sigmoid, &[logits], &[("probs", cfg.input_dim())])[0];
                g.node(Op::Mse(LossTerm::Recon), &[probs, clean], &[]);
            }
        }
        Graph { tensors: g.tensors, nodes: g.nodes, clean, input, code, latent, logits, labels }
    }

    /// The nodes that compute `to` from `from` (which becomes an input the
    /// caller provides): image -> code is `slice(input, code)`, code ->
    /// logits `slice(latent, logits)`. Loss nodes are left out.
    pub fn slice(&self, from: TensorId, to: TensorId) -> Graph {
        let mut needed = vec![false; self.tensors.len()];
        needed[to.0] = true;
        let mut keep = vec![false; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate().rev() {
            if node.outputs.iter().any(|t| needed[t.0]) && !node.outputs.contains(&from) {
                keep[i] = true;
                node.inputs.iter().for_each(|t| needed[t.0] = true);
            }
        }
        let nodes = self.nodes.iter().zip(&keep).filter(|(_, k)| **k).map(|(n, _)| n.clone()).collect();
        Graph { nodes, ..self.clone() }
    }

    /// The tensors the trainer and inference name (read after a step).
    pub fn named(&self) -> Vec<TensorId> {
        let mut named = vec![self.clean, self.input, self.code, self.latent, self.logits];
        named.extend(self.labels);
        named
    }

    pub fn width(&self, t: TensorId) -> usize {
        self.tensors[t.0].width
    }

    /// Tensors no node of this graph produces: what a caller must provide.
    pub fn sources(&self) -> Vec<TensorId> {
        let mut produced = vec![false; self.tensors.len()];
        let mut used = vec![false; self.tensors.len()];
        for node in &self.nodes {
            node.inputs.iter().filter(|t| !produced[t.0]).for_each(|t| used[t.0] = true);
            node.outputs.iter().for_each(|t| produced[t.0] = true);
        }
        (0..self.tensors.len()).filter(|&i| used[i]).map(TensorId).collect()
    }
}

#[derive(Default)]
pub(super) struct Builder {
    pub tensors: Vec<TensorInfo>,
    pub nodes: Vec<Node>,
}

impl Builder {
    pub fn tensor(&mut self, name: &str, width: usize) -> TensorId {
        self.tensors.push(TensorInfo { name: name.to_string(), width });
        TensorId(self.tensors.len() - 1)
    }

    /// Adds a node with new output tensors (name, width); returns them.
    fn node(&mut self, op: Op, inputs: &[TensorId], outputs: &[(&str, usize)]) -> Vec<TensorId> {
        let outputs: Vec<TensorId> = outputs.iter().map(|&(name, width)| self.tensor(name, width)).collect();
        self.nodes.push(Node { op, inputs: inputs.to_vec(), outputs: outputs.clone() });
        outputs
    }

    /// A layer of any kind: `Dense` or `Conv`, with its pre-activation as a
    /// second output when the activation's backward reads it; a layer that
    /// reads the label gets [x | labels].
    fn dense(&mut self, layer: &Layer, x: TensorId, labels: Option<TensorId>) -> TensorId {
        let name = layer.name.clone();
        let x = match labels {
            Some(labels) if layer.labels > 0 => {
                self.node(Op::Concat, &[x, labels], &[(&format!("{name} (input)"), layer.inputs)])[0]
            }
            _ => x,
        };
        let op = match layer.kind {
            LayerKind::Dense => Op::Dense(layer.clone()),
            LayerKind::Conv2d(_) | LayerKind::ConvTranspose2d(_) => Op::Conv(layer.clone()),
        };
        let pre = format!("{name} (pre-activation)");
        let mut outputs = vec![(name.as_str(), layer.outputs)];
        if layer.activation.needs_input() {
            outputs.push((&pre, layer.outputs));
        }
        self.node(op, &[x], &outputs)[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelConfig, ModelKind};

    fn arch(kind: ModelKind, loss: ReconLoss) -> Architecture {
        Architecture::new(&ModelConfig {
            kind,
            image_rows: 4,
            image_cols: 5,
            channels: 1,
            hidden: vec![6, 3],
            latent: 2,
            loss,
            activation: Activation::Tanh,
            arch: crate::model::Arch::Mlp,
            conv: vec![],
            classes: 0,
        })
        .unwrap()
    }

    #[test]
    fn slices_are_the_encoder_and_the_decoder() {
        let a = arch(ModelKind::Vae, ReconLoss::Mse);
        let g = Graph::training(&a, true);
        let enc = g.slice(g.input, g.code);
        let dense = |g: &Graph| g.nodes.iter().filter(|n| matches!(n.op, Op::Dense(_))).count();
        assert_eq!(dense(&enc), 3, "two hidden layers and the head");
        assert_eq!(enc.sources(), vec![g.input]);
        let dec = g.slice(g.latent, g.logits);
        assert_eq!(dense(&dec), 3);
        assert_eq!(dec.sources(), vec![g.latent]);
    }

    #[test]
    fn training_ends_with_adam_and_every_layer_gets_gradients() {
        for kind in [ModelKind::Ae, ModelKind::Vae] {
            let a = arch(kind, ReconLoss::Bce);
            let g = Graph::training(&a, false);
            assert_eq!(g.nodes.last().map(|n| &n.op), Some(&Op::AdamUpdate));
            let backward = g.nodes.iter().filter(|n| matches!(n.op, Op::DenseBackward { .. })).count();
            assert_eq!(backward, a.layers().count(), "{kind:?}");
            // The first layer's input is data: no gradient for it.
            let first = g.nodes.iter().rev().find(|n| matches!(n.op, Op::DenseBackward { .. })).unwrap();
            assert!(first.outputs.is_empty(), "{kind:?}: {first:?}");
        }
    }
}
