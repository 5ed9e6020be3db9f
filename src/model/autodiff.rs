//! The backward pass, derived: one reverse sweep over the forward nodes, each
//! op contributing its backward rule. A tensor's gradient is a new tensor
//! `d(name)`; its first contribution writes it and later ones accumulate, so
//! nothing needs clearing. Element-wise backward rules (activations, sigmoid)
//! work in place on the gradient of their output, which then becomes the
//! gradient of their input.

use super::graph::{Builder, Graph, Node, Op, TensorId};
use super::{Activation, Architecture};

impl Graph {
    /// Forward and backward: the objective's gradients for every parameter.
    pub fn with_backward(arch: &Architecture, noisy: bool) -> Graph {
        let mut g = Graph::forward(arch, noisy);
        append_backward(&mut g);
        g
    }

    /// The whole training step: forward, backward, Adam.
    pub fn training(arch: &Architecture, noisy: bool) -> Graph {
        let mut g = Graph::with_backward(arch, noisy);
        g.nodes.push(Node { op: Op::AdamUpdate, inputs: vec![], outputs: vec![] });
        g
    }
}

fn append_backward(g: &mut Graph) {
    let forward = std::mem::take(&mut g.nodes);
    let mut b = Builder { tensors: std::mem::take(&mut g.tensors), nodes: forward.clone() };

    // A tensor needs a gradient when it depends on parameters.
    let mut needs = vec![false; b.tensors.len()];
    for node in &forward {
        if matches!(node.op, Op::Dense(_) | Op::Conv(_)) || node.inputs.iter().any(|t| needs[t.0]) {
            node.outputs.iter().for_each(|t| needs[t.0] = true);
        }
    }
    let mut grad: Vec<Option<TensorId>> = vec![None; b.tensors.len()];
    let push = |b: &mut Builder, op: Op, inputs: Vec<TensorId>, outputs: Vec<TensorId>| {
        b.nodes.push(Node { op, inputs, outputs })
    };

    for node in forward.iter().rev() {
        let ins = &node.inputs;
        match &node.op {
            Op::BceWithLogits(_) | Op::Mse(_) => {
                if needs[ins[0].0] {
                    let (d, accumulate) = grad_of(&mut b, &mut grad, ins[0]);
                    let op = match node.op {
                        Op::BceWithLogits(_) => Op::BceWithLogitsBackward { accumulate },
                        _ => Op::MseBackward { accumulate },
                    };
                    push(&mut b, op, ins.clone(), vec![d]);
                }
            }
            &Op::Kl { latent, .. } => {
                let (d, accumulate) = grad_of(&mut b, &mut grad, ins[0]);
                push(&mut b, Op::KlBackward { latent, accumulate }, ins.clone(), vec![d]);
            }
            Op::Sigmoid => {
                let y = node.outputs[0];
                if let Some(dy) = in_place_input_grad(&mut grad, y, ins[0]) {
                    push(&mut b, Op::SigmoidBackward, vec![y], vec![dy]);
                }
            }
            Op::Dense(layer) | Op::Conv(layer) => {
                let (x, y) = (ins[0], node.outputs[0]);
                let Some(dy) = grad[y.0] else { continue };
                if layer.activation != Activation::Identity {
                    // [y] and, when the node kept it, the pre-activation.
                    let inputs = node.outputs.clone();
                    push(&mut b, Op::ActivationBackward(layer.activation), inputs, vec![dy]);
                }
                let (dx, accumulate) = if needs[x.0] {
                    let (d, acc) = grad_of(&mut b, &mut grad, x);
                    (vec![d], acc)
                } else {
                    (vec![], false)
                };
                let op = match node.op {
                    Op::Dense(_) => Op::DenseBackward { layer: layer.clone(), accumulate },
                    _ => Op::ConvBackward { layer: layer.clone(), accumulate },
                };
                push(&mut b, op, vec![dy, x], dx);
            }
            &Op::Reparameterize { latent } => {
                let (z, eps) = (node.outputs[0], node.outputs[1]);
                let Some(dz) = grad[z.0] else { continue };
                let (d, accumulate) = grad_of(&mut b, &mut grad, ins[0]);
                push(&mut b, Op::ReparameterizeBackward { latent, accumulate }, vec![dz, ins[0], eps], vec![d]);
            }
            Op::Concat => {
                let Some(dy) = grad[node.outputs[0].0] else { continue };
                let mut at = 0;
                for &x in ins {
                    if needs[x.0] {
                        let (d, accumulate) = grad_of(&mut b, &mut grad, x);
                        push(&mut b, Op::ConcatBackward { at, accumulate }, vec![dy], vec![d]);
                    }
                    at += b.tensors[x.0].width;
                }
            }
            Op::Gather | Op::InputNoise | Op::Labels => {}
            op => panic!("append_backward: {op:?} is not a forward op"),
        }
    }
    g.tensors = b.tensors;
    g.nodes = b.nodes;
}

/// The gradient of t, made on first use; true when it already has a contribution.
fn grad_of(b: &mut Builder, grad: &mut [Option<TensorId>], t: TensorId) -> (TensorId, bool) {
    match grad[t.0] {
        Some(d) => (d, true),
        None => {
            let info = b.tensors[t.0].clone();
            let d = b.tensor(&format!("d({})", info.name), info.width);
            grad[t.0] = Some(d);
            (d, false)
        }
    }
}

/// For an element-wise op y = f(x) whose backward runs in place on dy: dy
/// becomes dx. Only valid when x has no other consumer (none of our
/// builders' graphs has one); then x had no gradient yet.
fn in_place_input_grad(grad: &mut [Option<TensorId>], y: TensorId, x: TensorId) -> Option<TensorId> {
    let dy = grad[y.0]?;
    assert!(grad[x.0].is_none(), "an in-place backward rule needs its input to have one consumer");
    grad[x.0] = Some(dy);
    Some(dy)
}
