//! The GPU path's intermediate representation: what lowering produces,
//! the fusion pass rewrites, code generation writes WGSL for and `emit`
//! binds. Kernel calls on the graph's tensors (`Call`), the tasks of a
//! generated kernel (`Task`, `Epilogue`), the buffers they touch (`Res`) and
//! each call's read and write sets (`access`), from which fusion plans.
//! Everything else in `gpu` builds on this module; it builds on none of them
//! but the kernel table.

use super::params::{ConvParams, ElementwiseParams, MatmulParams};
use super::shaders::{Kernel, MatmulForm, MatmulVariant, flags};
use crate::model::Graph;
use crate::model::{Activation, ConvGeom, TensorId};

/// A product's M or K: the step's batch rows, the rows times a
/// convolution's pixels per image, or fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Size {
    Rows,
    Pixels(usize),
    Fixed(usize),
}

/// A product over a convolution's implicit matrices (implicit GEMM, no
/// im2col buffer): how its operands and output map onto the layer's NCHW
/// tensors, for the convolution `g` from in-space (C, H, W) to out-space
/// (O, Ho, Wo) with weights [O, C, k, k] (a transposed layer runs as that
/// convolution's adjoint, as the direct kernels do, `shaders/conv.wgsl`).
/// A pixel axis is (image, pixel); a patch axis (channel, ki, kj).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvMap {
    /// Out-space y = W ⋆ x: M = rows·Ho·Wo, N = O, K = C·k·k; `a` the
    /// in-space image read as patches, `b` the weights [O, C·k·k].
    Forward(ConvGeom),
    /// In-space y = Wᵀ ⋆ a: M = rows·H·W, N = C, K = O·k·k; `a` the
    /// out-space tensor spread by the stride, `b` the weights.
    BackwardData(ConvGeom),
    /// dW [O, C·k·k] = Σ a ⊗ patches(x): M = O, N = C·k·k, K = rows·Ho·Wo;
    /// `a` out-space, `b` the in-space image read as patches.
    BackwardWeight(ConvGeom),
    /// db = Σ a per channel of g's out-space: M = O, N = 0 (only the column
    /// of ones), K = rows·Ho·Wo.
    ChannelSums(ConvGeom),
}

/// Where a product's operand lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Buf {
    Tensor(TensorId),
    Params,
    Grads,
}

/// c (M,N) = [c +] form(a, b) [+ bias] then act; the bias is at a parameter offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Matmul {
    pub form: MatmulForm,
    pub variant: MatmulVariant,
    pub m: Size,
    pub k: Size,
    pub n: usize,
    pub a: (Buf, usize),
    pub b: (Buf, usize),
    pub c: (Buf, usize),
    pub bias: Option<usize>,
    pub act: Activation,
    /// Where the epilogue also stores the pre-activation (sum + bias), for
    /// an activation whose backward reads it (generated products only).
    pub pre: Option<TensorId>,
    pub accumulate: bool,
    /// K slices (1: not split); each >1 product is followed by its finish.
    pub slices: u32,
    /// A convolution's index map (generated products only).
    pub conv: Option<ConvMap>,
}

impl Matmul {
    /// The product of a convolution map: its sizes from the geometry, `a`,
    /// `b` and `c` as the map says (`ConvMap`).
    pub fn conv(map: ConvMap, [a, b, c]: [(Buf, usize); 3], bias: Option<usize>, act: Activation) -> Matmul {
        let (form, m, k, n) = match map {
            ConvMap::Forward(g) => (MatmulForm::Nt, Size::Pixels(g.out_pixels()), Size::Fixed(g.patch()), g.out_c),
            ConvMap::BackwardData(g) => {
                let k = Size::Fixed(g.out_c * g.kernel * g.kernel);
                (MatmulForm::Nn, Size::Pixels(g.in_h * g.in_w), k, g.in_c)
            }
            ConvMap::BackwardWeight(g) => {
                (MatmulForm::Tn, Size::Fixed(g.out_c), Size::Pixels(g.out_pixels()), g.patch())
            }
            ConvMap::ChannelSums(g) => (MatmulForm::Tn, Size::Fixed(g.out_c), Size::Pixels(g.out_pixels()), 0),
        };
        let variant = MatmulVariant::Naive;
        Matmul { form, variant, m, k, n, a, b, c, bias, act, pre: None, accumulate: false, slices: 1, conv: Some(map) }
    }

    /// Whether the product writes its output tensor whole, element for
    /// element of an element-wise call on it (what an epilogue op needs).
    pub fn covers(&self, graph: &Graph) -> bool {
        match (self.c, self.conv) {
            ((Buf::Tensor(_), 0), Some(ConvMap::Forward(_) | ConvMap::BackwardData(_))) => true,
            ((Buf::Tensor(c), 0), None) => self.m == Size::Rows && graph.width(c) == self.n,
            _ => false,
        }
    }
}

/// One kernel call on the graph's tensors. Element-wise calls cover (rows, width).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    /// The batch's images into `out`; a conditional model's labels one-hot
    /// into `labels` (the tensor, the class count) in the same dispatch.
    Gather {
        out: TensorId,
        width: usize,
        labels: Option<(TensorId, usize)>,
    },
    InputNoise {
        out: TensorId,
        clean: TensorId,
        width: usize,
    },
    Matmul(Matmul),
    /// Sums a split product's slices and applies its epilogue.
    SplitFinish(Matmul),
    BiasAdd {
        y: TensorId,
        width: usize,
        bias: usize,
    },
    /// y = act(y) in place, or y = act(x) when the layer keeps x.
    Activation {
        y: TensorId,
        x: Option<TensorId>,
        width: usize,
        act: Activation,
    },
    /// d *= act'(x) from y = act(x) and, where the activation needs it, x.
    ActivationBackward {
        d: TensorId,
        y: TensorId,
        x: Option<TensorId>,
        width: usize,
        act: Activation,
    },
    /// dst[r, dst_at + e] = (or, with `accumulate`, +=) src[r, src_at + e]
    /// for e < width: one input of a concatenation, or its backward's slice.
    Columns {
        dst: TensorId,
        dst_at: usize,
        src: TensorId,
        src_at: usize,
        width: usize,
        accumulate: bool,
    },
    /// grads[at..at + width] = Σ_rows a.
    ColumnSums {
        a: TensorId,
        width: usize,
        at: usize,
    },
    Sigmoid {
        y: TensorId,
        x: TensorId,
        width: usize,
    },
    SigmoidBackward {
        d: TensorId,
        y: TensorId,
        width: usize,
    },
    /// Partial sums of a loss (BCE, MSE or KL forward) into slot `which`'s partials.
    LossPartials {
        kernel: Kernel,
        inputs: Vec<TensorId>,
        width: usize,
        which: u32,
    },
    /// The partials of slot `which` folded into the step's loss slot: those
    /// of a loss kernel over (rows, width), or `parts` of them.
    LossFinish {
        width: usize,
        which: u32,
        parts: Option<u32>,
    },
    /// BCE or MSE backward: out = recon_scale · (...).
    LossBackward {
        kernel: Kernel,
        out: TensorId,
        inputs: [TensorId; 2],
        width: usize,
    },
    Reparameterize {
        z: TensorId,
        eps: TensorId,
        mulv: TensorId,
        latent: usize,
    },
    ReparameterizeBackward {
        d: TensorId,
        dz: TensorId,
        mulv: TensorId,
        eps: TensorId,
        latent: usize,
        accumulate: bool,
    },
    KlBackward {
        d: TensorId,
        mulv: TensorId,
        latent: usize,
        accumulate: bool,
    },
    /// A convolution kernel (`Kernel::Conv2d*`, `ChannelSums`) on the
    /// geometry `geom`: `a` and `x` its tensor operands, the weights and bias
    /// at parameter offsets, the output a tensor or the gradients at `out_at`.
    Conv {
        kernel: Kernel,
        geom: ConvGeom,
        a: TensorId,
        x: Option<TensorId>,
        out: Buf,
        out_at: usize,
        weight: usize,
        bias: Option<usize>,
        act: Activation,
    },
    Adam,
    /// A generated kernel (`gpu::fused`): tasks over ranges of its workgroups.
    Fused(Vec<Task>),
}

/// What a product task does with each output element after the product's
/// own epilogue (accumulate, bias, the kept pre-activation, activation):
/// `ops`, element-wise calls whose every tensor is shaped like the output
/// (`elementwise::pointwise`), run in order on the thread's element with the
/// output in a register: an activation backward, a loss and its gradient,
/// whatever the fusion pass found next. A weight gradient's ops are Adam on
/// each parameter, and with `ones` B gets a column of ones whose outputs,
/// the bias gradient, go to the parameters at that offset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Epilogue {
    pub ops: Vec<Call>,
    pub ones: Option<usize>,
}

impl Epilogue {
    pub fn of(ops: Vec<Call>) -> Epilogue {
        Epilogue { ops, ones: None }
    }
}

// A product (with a convolution's geometry) outweighs the other tasks; a
// kernel holds a handful of tasks, so boxing would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Task {
    Product {
        mm: Matmul,
        epilogue: Epilogue,
    },
    /// Row-local calls on `per_group` rows per workgroup; `store` lists the
    /// tensors they write that are read after the chain.
    Rows {
        stages: Vec<Call>,
        per_group: u32,
        store: Vec<TensorId>,
    },
    LossFinish {
        which: u32,
        parts: u32,
    },
}

/// A buffer a fused kernel binds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Res {
    Tensor(TensorId),
    Params,
    Grads,
    AdamM,
    AdamV,
    Partials,
    Slots,
    /// One loss's region of the partials buffer (for ordering; bound as `Partials`).
    Part(u32),
}

impl Res {
    pub fn of(b: Buf) -> Res {
        match b {
            Buf::Tensor(t) => Res::Tensor(t),
            Buf::Params => Res::Params,
            Buf::Grads => Res::Grads,
        }
    }
}

/// What a call reads and what it writes.
pub fn access(call: &Call) -> (Vec<Res>, Vec<Res>) {
    let t = Res::Tensor;
    let b = |x: Buf| Res::of(x);
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    match call {
        &Call::Gather { out, labels, .. } => {
            writes.extend([Some(out), labels.map(|l| l.0)].into_iter().flatten().map(t))
        }
        &Call::Columns { dst, src, accumulate, .. } => {
            reads.push(t(src));
            if accumulate {
                reads.push(t(dst));
            }
            writes.push(t(dst));
        }
        &Call::InputNoise { out, clean, .. } => (reads, writes) = (vec![t(clean)], vec![t(out)]),
        Call::Matmul(m) | Call::SplitFinish(m) => product_access(m, &mut reads, &mut writes),
        &Call::BiasAdd { y, .. } => (reads, writes) = (vec![t(y), Res::Params], vec![t(y)]),
        &Call::Activation { y, x, .. } => (reads, writes) = (vec![t(x.unwrap_or(y))], vec![t(y)]),
        &Call::ActivationBackward { d, y, x, .. } => {
            (reads, writes) = ([Some(d), Some(y), x].into_iter().flatten().map(t).collect(), vec![t(d)])
        }
        &Call::SigmoidBackward { d, y, .. } => (reads, writes) = (vec![t(d), t(y)], vec![t(d)]),
        &Call::ColumnSums { a, .. } => (reads, writes) = (vec![t(a)], vec![Res::Grads]),
        &Call::Sigmoid { y, x, .. } => (reads, writes) = (vec![t(x)], vec![t(y)]),
        Call::LossPartials { inputs, which, .. } => {
            (reads, writes) = (inputs.iter().map(|&i| t(i)).collect(), vec![Res::Part(*which)])
        }
        &Call::LossFinish { which, .. } => (reads, writes) = (vec![Res::Part(which)], vec![Res::Slots]),
        &Call::LossBackward { out, inputs: [x, target], .. } => (reads, writes) = (vec![t(x), t(target)], vec![t(out)]),
        &Call::Reparameterize { z, eps, mulv, .. } => (reads, writes) = (vec![t(mulv)], vec![t(z), t(eps)]),
        &Call::ReparameterizeBackward { d, dz, mulv, eps, accumulate, .. } => {
            reads = vec![t(dz), t(mulv), t(eps)];
            if accumulate {
                reads.push(t(d));
            }
            writes.push(t(d));
        }
        &Call::KlBackward { d, mulv, accumulate, .. } => {
            reads = vec![t(mulv)];
            if accumulate {
                reads.push(t(d));
            }
            writes.push(t(d));
        }
        &Call::Conv { a, x, out, .. } => {
            reads = vec![t(a), Res::Params];
            reads.extend(x.map(t));
            writes.push(b(out));
        }
        Call::Adam => {
            reads = vec![Res::Grads, Res::Params, Res::AdamM, Res::AdamV];
            writes = vec![Res::Params, Res::AdamM, Res::AdamV];
        }
        Call::Fused(tasks) => {
            for task in tasks {
                match task {
                    Task::Product { mm, epilogue } => {
                        product_access(mm, &mut reads, &mut writes);
                        for op in &epilogue.ops {
                            let (r, w) = access(op);
                            reads.extend(r);
                            writes.extend(w);
                        }
                    }
                    Task::Rows { stages, .. } => {
                        for s in stages {
                            let (r, w) = access(s);
                            reads.extend(r);
                            writes.extend(w);
                        }
                    }
                    &Task::LossFinish { which, .. } => {
                        reads.push(Res::Part(which));
                        writes.push(Res::Slots);
                    }
                }
            }
        }
    }
    (reads, writes)
}

fn product_access(m: &Matmul, reads: &mut Vec<Res>, writes: &mut Vec<Res>) {
    reads.extend([Res::of(m.a.0), Res::of(m.b.0)]);
    if m.bias.is_some() {
        reads.push(Res::Params);
    }
    if m.accumulate {
        reads.push(Res::of(m.c.0));
    }
    writes.push(Res::of(m.c.0));
    writes.extend(m.pre.map(Res::Tensor));
}

/// A product's kernel parameters.
pub fn matmul_params(m: &Matmul) -> MatmulParams {
    let mut fl = 0;
    fl |= if m.m == Size::Rows { flags::ROWS_M } else { 0 };
    fl |= if m.k == Size::Rows { flags::ROWS_K } else { 0 };
    fl |= if m.bias.is_some() { flags::BIAS } else { 0 };
    fl |= if m.accumulate { flags::ACCUMULATE } else { 0 };
    MatmulParams {
        m: fixed(m.m),
        k: fixed(m.k),
        n: m.n as u32,
        flags: fl,
        off_a: m.a.1 as u32,
        off_b: m.b.1 as u32,
        off_c: m.c.1 as u32,
        off_bias: m.bias.unwrap_or(0) as u32,
        slices: if m.slices > 1 { m.slices } else { 0 },
        act: m.act.code(),
    }
}

/// A convolution call's kernel parameters (`Call::Conv`'s fields).
pub fn conv_params(g: &ConvGeom, weight: usize, bias: Option<usize>, act: Activation, out_at: usize) -> ConvParams {
    ConvParams {
        in_c: g.in_c as u32,
        in_h: g.in_h as u32,
        in_w: g.in_w as u32,
        out_c: g.out_c as u32,
        out_h: g.out_h as u32,
        out_w: g.out_w as u32,
        kernel: g.kernel as u32,
        stride: g.stride as u32,
        padding: g.padding as u32,
        flags: if bias.is_some() { flags::BIAS } else { 0 },
        act: act.code(),
        off_w: weight as u32,
        off_bias: bias.unwrap_or(0) as u32,
        off_out: out_at as u32,
        ..Default::default()
    }
}

/// A `Call::Columns`'s kernel parameters: `width` columns of `src` from
/// `src_at` into `dst` from `dst_at`.
pub fn columns_params(
    graph: &Graph,
    (dst, dst_at): (TensorId, usize),
    (src, src_at): (TensorId, usize),
    width: usize,
    accumulate: bool,
) -> ElementwiseParams {
    ElementwiseParams {
        n: width as u32,
        off_in: src_at as u32,
        off_out: dst_at as u32,
        width_in: graph.width(src) as u32,
        width_out: graph.width(dst) as u32,
        flags: if accumulate { flags::ACCUMULATE } else { 0 },
        ..Default::default()
    }
}

/// A size at the largest batch.
pub fn size(s: Size, rows: usize) -> usize {
    match s {
        Size::Rows => rows,
        Size::Pixels(p) => rows * p,
        Size::Fixed(n) => n,
    }
}

/// A fixed size for `Dims` (0 when it comes from the step's rows).
fn fixed(s: Size) -> u32 {
    match s {
        Size::Rows => 0,
        Size::Pixels(_) => unreachable!("convolution products are generated"),
        Size::Fixed(n) => n as u32,
    }
}
