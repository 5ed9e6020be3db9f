//! Graph -> kernel calls -> dispatches.
//!
//! `lower` turns each node of a `model::Graph` into kernel calls, one call
//! per CPU function of the node (a dense layer is a product, a bias add and
//! an activation), so that the unfused list is op for op the CPU
//! interpreter's work. `fuse::fuse` then rewrites the list (epilogues,
//! generated kernels, or split-K), and `emit` binds each call to buffers:
//! the graph's tensors get a buffer each from a `TensorPool` (by name, so
//! that the training and evaluation programs of a model share them),
//! parameters and their gradients live in the flat buffers.

use std::collections::HashMap;

use super::buffers::storage;
use super::context::GpuContext;
use super::ir::{Buf, Call, Matmul, Res, Size, columns_params, conv_params, matmul_params, size};
use super::params::{AdamParams, ElementwiseParams, GatherParams, LossParams, ReduceParams, ReparamParams, Slot};
use super::program::{Program, ProgramBuilder};
use super::shaders::{
    Kernel, Kernels, MAX_PARTS, MatmulForm, MatmulVariant, column_sums_groups, conv_groups, flags, grid_1d, loss_parts,
};
use crate::error::Result;
use crate::model::{Activation, ConvGeom, Graph, LayerKind, LossTerm, Op, TensorId};

fn which(term: LossTerm) -> u32 {
    match term {
        LossTerm::Recon => 0,
        LossTerm::Kl => 1,
    }
}

/// The unfused calls of a graph, node for node as the CPU interpreter runs
/// it; products start as the naive variant (`fuse` picks tiles).
pub fn lower(graph: &Graph) -> Vec<Call> {
    let mut calls = Vec::new();
    let w = |t: TensorId| graph.width(t);
    for node in &graph.nodes {
        let (ins, outs) = (&node.inputs, &node.outputs);
        match &node.op {
            Op::Gather => calls.push(gather(graph, outs[0])),
            // Gathered with the images (`Call::Gather`), or written by the caller.
            Op::Labels => {}
            Op::InputNoise => calls.push(Call::InputNoise { out: outs[0], clean: ins[0], width: w(outs[0]) }),
            Op::Concat => {
                let mut dst_at = 0;
                for &src in ins {
                    let width = w(src);
                    calls.push(Call::Columns { dst: outs[0], dst_at, src, src_at: 0, width, accumulate: false });
                    dst_at += width;
                }
            }
            &Op::ConcatBackward { at, accumulate } => {
                let (dst, src, width) = (outs[0], ins[0], w(outs[0]));
                calls.push(Call::Columns { dst, dst_at: 0, src, src_at: at, width, accumulate });
            }
            Op::Dense(l) => {
                // The product and bias go to the pre-activation where the layer keeps one.
                let (y, pre) = (outs[0], outs.get(1).copied());
                let sum = pre.unwrap_or(y);
                calls.push(Call::Matmul(product(
                    MatmulForm::Nt,
                    (Size::Rows, Size::Fixed(l.inputs), l.outputs),
                    [(Buf::Tensor(ins[0]), 0), (Buf::Params, l.weight), (Buf::Tensor(sum), 0)],
                    false,
                )));
                calls.push(Call::BiasAdd { y: sum, width: l.outputs, bias: l.bias });
                if l.activation != Activation::Identity {
                    calls.push(Call::Activation { y, x: pre, width: l.outputs, act: l.activation });
                }
            }
            &Op::Reparameterize { latent } => {
                calls.push(Call::Reparameterize { z: outs[0], eps: outs[1], mulv: ins[0], latent })
            }
            Op::Sigmoid => calls.push(Call::Sigmoid { y: outs[0], x: ins[0], width: w(outs[0]) }),
            &Op::BceWithLogits(term) => loss(&mut calls, Kernel::BceWithLogitsForward, ins, w(ins[0]), term),
            &Op::Mse(term) => loss(&mut calls, Kernel::MseForward, ins, w(ins[0]), term),
            &Op::Kl { term, latent } => loss(&mut calls, Kernel::KlForward, ins, latent, term),
            Op::BceWithLogitsBackward { accumulate } | Op::MseBackward { accumulate } => {
                assert!(!accumulate, "the loss kernels write their gradient");
                let kernel = match node.op {
                    Op::BceWithLogitsBackward { .. } => Kernel::BceWithLogitsBackward,
                    _ => Kernel::MseBackward,
                };
                let width = w(outs[0]);
                calls.push(Call::LossBackward { kernel, out: outs[0], inputs: [ins[0], ins[1]], width });
            }
            Op::SigmoidBackward => calls.push(Call::SigmoidBackward { d: outs[0], y: ins[0], width: w(outs[0]) }),
            &Op::ActivationBackward(act) => calls.push(Call::ActivationBackward {
                d: outs[0],
                y: ins[0],
                x: ins.get(1).copied(),
                width: w(outs[0]),
                act,
            }),
            Op::DenseBackward { layer: l, accumulate } => {
                let (dy, x) = (ins[0], ins[1]);
                // Overwrites dW: each layer's parameters have one Dense node.
                calls.push(Call::Matmul(product(
                    MatmulForm::Tn,
                    (Size::Fixed(l.outputs), Size::Rows, l.inputs),
                    [(Buf::Tensor(dy), 0), (Buf::Tensor(x), 0), (Buf::Grads, l.weight)],
                    false,
                )));
                calls.push(Call::ColumnSums { a: dy, width: l.outputs, at: l.bias });
                if let Some(&dx) = outs.first() {
                    calls.push(Call::Matmul(product(
                        MatmulForm::Nn,
                        (Size::Rows, Size::Fixed(l.outputs), l.inputs),
                        [(Buf::Tensor(dy), 0), (Buf::Params, l.weight), (Buf::Tensor(dx), 0)],
                        *accumulate,
                    )));
                }
            }
            &Op::ReparameterizeBackward { latent, accumulate } => calls.push(Call::ReparameterizeBackward {
                d: outs[0],
                dz: ins[0],
                mulv: ins[1],
                eps: ins[2],
                latent,
                accumulate,
            }),
            &Op::KlBackward { latent, accumulate } => {
                calls.push(Call::KlBackward { d: outs[0], mulv: ins[0], latent, accumulate })
            }
            Op::AdamUpdate => calls.push(Call::Adam),
            Op::Conv(l) => {
                let (x, y, pre) = (ins[0], outs[0], outs.get(1).copied());
                let (kernel, geom) = match l.kind {
                    LayerKind::Conv2d(g) => (Kernel::Conv2dForward, g),
                    LayerKind::ConvTranspose2d(g) => (Kernel::Conv2dBackwardData, g),
                    LayerKind::Dense => unreachable!("a Conv node holds a convolution"),
                };
                let (out, out_at, weight, bias, act) =
                    (Buf::Tensor(pre.unwrap_or(y)), 0, l.weight, Some(l.bias), Activation::Identity);
                calls.push(Call::Conv { kernel, geom, a: x, x: None, out, out_at, weight, bias, act });
                if l.activation != Activation::Identity {
                    calls.push(Call::Activation { y, x: pre, width: l.outputs, act: l.activation });
                }
            }
            Op::ConvBackward { layer: l, accumulate } => {
                assert!(!accumulate, "a convolution's input gradient is written");
                let (dy, x) = (ins[0], ins[1]);
                let act = Activation::Identity;
                // Transposed: the adjoint's roles swap (see shaders/conv.wgsl).
                let (geom, transposed) = match l.kind {
                    LayerKind::Conv2d(g) => (g, false),
                    LayerKind::ConvTranspose2d(g) => (g, true),
                    LayerKind::Dense => unreachable!("a Conv node holds a convolution"),
                };
                let (out_space, in_space) = if transposed { (x, dy) } else { (dy, x) };
                calls.push(Call::Conv {
                    kernel: Kernel::Conv2dBackwardWeight,
                    geom,
                    a: out_space,
                    x: Some(in_space),
                    out: Buf::Grads,
                    out_at: l.weight,
                    weight: l.weight,
                    bias: None,
                    act,
                });
                // The bias gradient sums dy over the layer's own output channels.
                let channels = if transposed {
                    ConvGeom { out_c: geom.in_c, out_h: geom.in_h, out_w: geom.in_w, ..geom }
                } else {
                    geom
                };
                calls.push(Call::Conv {
                    kernel: Kernel::ChannelSums,
                    geom: channels,
                    a: dy,
                    x: None,
                    out: Buf::Grads,
                    out_at: l.bias,
                    weight: l.weight,
                    bias: None,
                    act,
                });
                if let Some(&dx) = outs.first() {
                    let kernel = if transposed { Kernel::Conv2dForward } else { Kernel::Conv2dBackwardData };
                    let (out, weight) = (Buf::Tensor(dx), l.weight);
                    calls.push(Call::Conv { kernel, geom, a: dy, x: None, out, out_at: 0, weight, bias: None, act });
                }
            }
        }
    }
    calls
}

/// The batch's images into `out`, with the labels of a conditional model.
pub fn gather(graph: &Graph, out: TensorId) -> Call {
    let labels = graph.labels.map(|l| (l, graph.width(l)));
    Call::Gather { out, width: graph.width(out), labels }
}

fn product(form: MatmulForm, (m, k, n): (Size, Size, usize), [a, b, c]: [(Buf, usize); 3], accumulate: bool) -> Matmul {
    let variant = MatmulVariant::Naive;
    let act = Activation::Identity;
    Matmul { form, variant, m, k, n, a, b, c, bias: None, act, pre: None, accumulate, slices: 1, conv: None }
}

fn loss(calls: &mut Vec<Call>, kernel: Kernel, ins: &[TensorId], width: usize, term: LossTerm) {
    let which = which(term);
    calls.push(Call::LossPartials { kernel, inputs: ins.to_vec(), width, which });
    calls.push(Call::LossFinish { width, which, parts: None });
}

/// A model's tensors on the device, sized for `rows` images, by name.
pub struct TensorPool {
    pub rows: usize,
    buffers: HashMap<String, wgpu::Buffer>,
}

impl TensorPool {
    pub fn new(rows: usize) -> TensorPool {
        TensorPool { rows, buffers: HashMap::new() }
    }

    /// The buffer of `t`, made on first use.
    pub fn get(&mut self, ctx: &GpuContext, graph: &Graph, t: TensorId) -> Result<wgpu::Buffer> {
        let info = &graph.tensors[t.0];
        if let Some(b) = self.buffers.get(&info.name) {
            return Ok(b.clone());
        }
        let bytes = self.rows.checked_mul(info.width).and_then(|n| n.checked_mul(4)).unwrap_or(usize::MAX);
        let b = storage(ctx, &info.name, bytes, wgpu::BufferUsages::COPY_SRC)?;
        self.buffers.insert(info.name.clone(), b.clone());
        Ok(b)
    }
}

/// The buffers a program binds besides the graph's tensors.
pub struct Bindings<'a> {
    pub params: &'a wgpu::Buffer,
    pub param_count: usize,
    pub grads: Option<&'a wgpu::Buffer>,
    /// Adam's moments (its settings come with each step).
    pub adam: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>,
    /// Loss partials (2 x MAX_PARTS) and the per-step loss slots.
    pub losses: Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>,
    /// The data set's pixels, order and labels, for `Gather`; without them
    /// gathers are skipped.
    pub data: Option<DataBindings<'a>>,
}

/// A data set's buffers on the device (`labels` packed as the pixels are;
/// any buffer for an unlabelled set).
#[derive(Clone, Copy)]
pub struct DataBindings<'a> {
    pub pixels: &'a wgpu::Buffer,
    pub order: &'a wgpu::Buffer,
    pub labels: &'a wgpu::Buffer,
}

/// Binds the calls to buffers: one dispatch per call. The split-K scratch
/// is sized here for the largest split product.
pub fn emit(
    ctx: &GpuContext,
    kernels: &Kernels,
    graph: &Graph,
    calls: &[Call],
    pool: &mut TensorPool,
    bind: &Bindings,
) -> Result<Program> {
    let rows = pool.rows;
    let split_len = calls
        .iter()
        .filter_map(|c| match c {
            Call::Matmul(p) if p.slices > 1 => Some(p.slices as usize * size(p.m, rows) * p.n),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let split = storage(ctx, "split-k slices", split_len * 4, wgpu::BufferUsages::empty())?;
    let mut p = ProgramBuilder::default();
    let mut t = |id: TensorId| pool.get(ctx, graph, id);
    let grid = |width: usize| grid_1d(rows * width);
    let ew = |n: usize, off_in: usize, act: Activation| ElementwiseParams {
        n: n as u32,
        off_in: off_in as u32,
        act: act.code(),
        ..Default::default()
    };
    for call in calls {
        match call {
            &Call::Gather { out, width, labels } => {
                let Some(data) = bind.data else { continue };
                let classes = labels.map_or(0, |l| l.1);
                let params = GatherParams { n: width as u32, classes: classes as u32, ..Default::default() };
                let (out, onehot) = (t(out)?, labels.map(|l| t(l.0)).transpose()?);
                let mut b = vec![(Slot::Out, &out), (Slot::Pixels, data.pixels), (Slot::Order, data.order)];
                if let Some(onehot) = &onehot {
                    b.extend([(Slot::Labels, data.labels), (Slot::Onehot, onehot)]);
                }
                p.push(Kernel::GatherBatch, params, &b, grid(width.max(classes)));
            }
            &Call::Columns { dst, dst_at, src, src_at, width, accumulate } => {
                let params = columns_params(graph, (dst, dst_at), (src, src_at), width, accumulate);
                p.push(Kernel::CopyColumns, params, &[(Slot::Out, &t(dst)?), (Slot::Inp, &t(src)?)], grid(width));
            }
            &Call::InputNoise { out, clean, width } => {
                let params = GatherParams { n: width as u32, ..Default::default() };
                p.push(Kernel::AddInputNoise, params, &[(Slot::Out, &t(out)?), (Slot::Clean, &t(clean)?)], grid(width))
            }
            Call::Matmul(m) | Call::SplitFinish(m) => {
                let (a, b, c) =
                    (resolve(&mut t, bind, m.a.0)?, resolve(&mut t, bind, m.b.0)?, resolve(&mut t, bind, m.c.0)?);
                let params = matmul_params(m);
                let mut bound = vec![(Slot::C, &c), (Slot::A, &a), (Slot::B, &b)];
                if m.bias.is_some() {
                    bound.push((Slot::Bias, bind.params));
                }
                if m.slices > 1 {
                    bound.push((Slot::Partial, &split));
                }
                let m_max = size(m.m, rows);
                if let Call::SplitFinish(_) = call {
                    p.push(Kernel::MatmulSplitFinish(m.variant), params, &bound, grid_1d(m_max * m.n));
                } else {
                    let [x, y, _] = m.variant.workgroups(m_max, m.n);
                    p.push(Kernel::Matmul(m.variant, m.form), params, &bound, [x, y, m.slices.max(1)]);
                }
            }
            &Call::BiasAdd { y, width, bias } => {
                let params = ew(width, bias, Activation::Identity);
                p.push(Kernel::BiasAdd, params, &[(Slot::Out, &t(y)?), (Slot::Inp, bind.params)], grid(width));
            }
            &Call::Activation { y, x: None, width, act } => {
                p.push(Kernel::ActivationForward, ew(width, 0, act), &[(Slot::Out, &t(y)?)], grid(width));
            }
            &Call::Activation { y, x: Some(x), width, act } => {
                let b = [(Slot::Out, &t(y)?), (Slot::Inp, &t(x)?)];
                p.push(Kernel::ActivationForwardFrom, ew(width, 0, act), &b, grid(width));
            }
            &Call::ActivationBackward { d, y, x, width, act } => {
                // Activations that need only y get it for x too (`ops::d_activate`).
                let b = [(Slot::Out, &t(d)?), (Slot::Inp, &t(y)?), (Slot::X, &t(x.unwrap_or(y))?)];
                p.push(Kernel::ActivationBackward, ew(width, 0, act), &b, grid(width));
            }
            &Call::ColumnSums { a, width, at } => {
                let params = ReduceParams { n: width as u32, off_out: at as u32, ..Default::default() };
                let grads = need(bind.grads, "grads");
                p.push(
                    Kernel::ColumnSums,
                    params,
                    &[(Slot::Out, &grads), (Slot::A, &t(a)?)],
                    column_sums_groups(width),
                );
            }
            &Call::Sigmoid { y, x, width } => {
                let b = [(Slot::Out, &t(y)?), (Slot::Inp, &t(x)?)];
                p.push(Kernel::SigmoidForward, ew(width, 0, Activation::Identity), &b, grid(width))
            }
            &Call::SigmoidBackward { d, y, width } => {
                let b = [(Slot::Out, &t(d)?), (Slot::Inp, &t(y)?)];
                p.push(Kernel::SigmoidBackward, ew(width, 0, Activation::Identity), &b, grid(width))
            }
            Call::LossPartials { kernel, inputs, width, which } => {
                let (partials, _) = bind.losses.expect("losses bound");
                let parts = loss_parts(rows * width);
                let params = LossParams { n: *width as u32, off_out: which * MAX_PARTS, ..Default::default() };
                let x = t(inputs[0])?;
                let target = inputs.get(1).map(|&i| t(i)).transpose()?;
                let mut b = vec![(Slot::Out, partials), (Slot::X, &x)];
                if let Some(target) = &target {
                    b.push((Slot::Target, target));
                }
                p.push(*kernel, params, &b, [parts, 1, 1]);
            }
            &Call::LossFinish { width, which, parts } => {
                let (partials, slots) = bind.losses.expect("losses bound");
                let parts = parts.unwrap_or_else(|| loss_parts(rows * width));
                let params = LossParams { parts, off_x: which * MAX_PARTS, which, ..Default::default() };
                p.push(Kernel::LossFinish, params, &[(Slot::Out, slots), (Slot::X, partials)], [1, 1, 1]);
            }
            &Call::LossBackward { kernel, out, inputs: [x, target], width } => {
                let params = LossParams { n: width as u32, ..Default::default() };
                let b = [(Slot::Out, &t(out)?), (Slot::X, &t(x)?), (Slot::Target, &t(target)?)];
                p.push(kernel, params, &b, grid(width))
            }
            &Call::Reparameterize { z, eps, mulv, latent } => {
                let params = ReparamParams { latent: latent as u32, ..Default::default() };
                let b = [(Slot::Z, &t(z)?), (Slot::Eps, &t(eps)?), (Slot::Mulv, &t(mulv)?)];
                p.push(Kernel::ReparameterizeForward, params, &b, grid(latent));
            }
            &Call::ReparameterizeBackward { d, dz, mulv, eps, latent, accumulate } => {
                let params =
                    ReparamParams { latent: latent as u32, flags: accumulate_flag(accumulate), ..Default::default() };
                let b = [(Slot::Dmulv, &t(d)?), (Slot::Dz, &t(dz)?), (Slot::Mulv, &t(mulv)?), (Slot::Noise, &t(eps)?)];
                p.push(Kernel::ReparameterizeBackward, params, &b, grid(latent));
            }
            &Call::KlBackward { d, mulv, latent, accumulate } => {
                let params = LossParams { n: latent as u32, flags: accumulate_flag(accumulate), ..Default::default() };
                p.push(Kernel::KlBackward, params, &[(Slot::Out, &t(d)?), (Slot::X, &t(mulv)?)], grid(latent));
            }
            &Call::Conv { kernel, geom: g, a, x, out, out_at, weight, bias, act } => {
                let params = conv_params(&g, weight, bias, act, out_at);
                let out = resolve(&mut t, bind, out)?;
                let a = t(a)?;
                let x = x.map(&mut t).transpose()?;
                let mut b = vec![(Slot::Out, &out), (Slot::A, &a), (Slot::W, bind.params)];
                if bias.is_some() {
                    b.push((Slot::Bias, bind.params));
                }
                if let Some(x) = &x {
                    b.push((Slot::X, x));
                }
                p.push(kernel, params, &b, conv_groups(kernel, &g, rows));
            }
            Call::Fused(tasks) => {
                let generated = ctx.generated.get(kernels, tasks, graph, rows);
                let buffers = generated
                    .bindings
                    .iter()
                    .map(|&(res, _)| {
                        Ok(match res {
                            Res::Tensor(id) => t(id)?,
                            Res::Params => bind.params.clone(),
                            Res::Grads => need(bind.grads, "grads"),
                            Res::AdamM => bind.adam.expect("Adam's moments bound").0.clone(),
                            Res::AdamV => bind.adam.expect("Adam's moments bound").1.clone(),
                            Res::Partials | Res::Part(_) => bind.losses.expect("losses bound").0.clone(),
                            Res::Slots => bind.losses.expect("losses bound").1.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                p.push_generated(generated.pipeline.clone(), buffers, tasks.clone(), generated.groups);
            }
            Call::Adam => {
                let (m, v) = bind.adam.expect("Adam's moments bound");
                let grads = need(bind.grads, "grads");
                let n = bind.param_count;
                let params = AdamParams { count: n as u32 };
                let b = [(Slot::Params, bind.params), (Slot::AdamM, m), (Slot::AdamV, v), (Slot::Grads, &grads)];
                p.push(Kernel::AdamUpdate, params, &b, grid_1d(n));
            }
        }
    }
    Ok(p.build(&ctx.device, kernels))
}

fn resolve(tensor: &mut impl FnMut(TensorId) -> Result<wgpu::Buffer>, bind: &Bindings, b: Buf) -> Result<wgpu::Buffer> {
    Ok(match b {
        Buf::Tensor(id) => tensor(id)?,
        Buf::Params => bind.params.clone(),
        Buf::Grads => bind.grads.expect("grads bound").clone(),
    })
}

fn accumulate_flag(accumulate: bool) -> u32 {
    if accumulate { flags::ACCUMULATE } else { 0 }
}

fn need(b: Option<&wgpu::Buffer>, what: &str) -> wgpu::Buffer {
    b.cloned().unwrap_or_else(|| panic!("{what} not bound"))
}
