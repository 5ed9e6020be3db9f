//! The dispatch list of one step, op for op the same as `CpuModel::forward`,
//! `backward` and the Adam update (src/cpu/engine.rs).
//!
//! Batch-shaped sizes are flagged ROWS_M / ROWS_K and read from the step row,
//! so one program serves full and short batches; grids are sized for the
//! largest batch and the kernels' guards skip the rest.

use super::buffers::Buffers;
use super::program::{Dims, Program, ProgramBuilder};
use super::shaders::{
    Family, Kernel, Kernels, MAX_PARTS, MatmulVariant, column_sums_groups, flags, grid_1d, loss_parts,
};
use crate::engine::AdamConfig;
use crate::model::{Activation, Architecture, Layer, ReconLoss};

pub struct Recipe<'a> {
    pub arch: &'a Architecture,
    pub adam: &'a AdamConfig,
    pub max_batch: usize,
    /// Backward and Adam too, or only forward and losses.
    pub train: bool,
    /// Input is the noisy batch (denoising), else the clean one.
    pub noisy: bool,
}

/// The gather dispatch for one data set: clean batch from pixels and order.
pub fn build_gather(
    device: &wgpu::Device,
    kernels: &Kernels,
    bufs: &Buffers,
    pixels: &wgpu::Buffer,
    order: &wgpu::Buffer,
    arch: &Architecture,
) -> Program {
    let mut p = ProgramBuilder::default();
    let d = arch.config.input_dim();
    let groups = grid_1d(bufs_rows(bufs, d) * d);
    let dims = Dims { n: d as u32, ..Default::default() };
    p.push(Kernel::new(Family::Gather, "gather_batch"), dims, &[&bufs.clean], &[pixels, order], groups);
    p.build(device, kernels)
}

/// The largest batch the buffers hold, from the clean batch's size.
fn bufs_rows(bufs: &Buffers, dim: usize) -> usize {
    (bufs.clean.size() as usize / 4 / dim).max(1)
}

/// Dense layers recorded into a program: the forward products shared by the
/// step programs and `GpuInference`. Grids (and split-K) are sized for `rows`,
/// the largest batch; the products read the actual rows from the step row.
pub struct Dense<'a> {
    p: ProgramBuilder,
    params: &'a wgpu::Buffer,
    /// Split-K slices: at least MAX_SPLIT x rows x the widest output.
    split: &'a wgpu::Buffer,
    rows: usize,
}

impl<'a> Dense<'a> {
    pub fn new(params: &'a wgpu::Buffer, split: &'a wgpu::Buffer, rows: usize) -> Dense<'a> {
        Dense { p: ProgramBuilder::default(), params, split, rows }
    }

    /// out (B,O) = act(x (B,I) · Wᵀ + b).
    pub fn forward(&mut self, out: &wgpu::Buffer, x: &wgpu::Buffer, layer: &Layer) {
        let (i, o) = (layer.inputs, layer.outputs);
        let relu = if layer.activation == Activation::Relu { flags::RELU } else { 0 };
        let dims = Dims {
            k: i as u32,
            n: o as u32,
            flags: flags::BIAS | relu | flags::ROWS_M,
            off_b: layer.weight as u32,
            off_d: layer.bias as u32,
            ..Default::default()
        };
        let params = self.params;
        self.matmul("matmul_nt", self.rows, i, o, dims, out, &[x, params, params]);
    }

    /// c (M,N) from an M x K x N product (sizes at the largest batch), split
    /// along K when the output alone gives too few workgroups.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &mut self,
        entry: &'static str,
        m: usize,
        k: usize,
        n: usize,
        dims: Dims,
        c: &wgpu::Buffer,
        ro: &[&wgpu::Buffer],
    ) {
        let variant = MatmulVariant::for_shape(m, n);
        let family = Family::Matmul(variant);
        let slices = variant.split_k(m, k, n);
        let [x, y, _] = variant.workgroups(m, n);
        if slices == 1 {
            self.p.push(Kernel::new(family, entry), dims, &[c], ro, [x, y, 1]);
            return;
        }
        assert!(slices as u64 * (m * n * 4) as u64 <= self.split.size(), "split-k scratch too small");
        let dims = Dims { u0: slices, ..dims };
        let split = self.split;
        self.p.push(Kernel::new(family, entry), dims, &[c, split], ro, [x, y, slices]);
        self.p.push(Kernel::new(family, "matmul_split_finish"), dims, &[c, split], ro, grid_1d(m * n));
    }

    pub fn build(self, device: &wgpu::Device, kernels: &Kernels) -> Program {
        self.p.build(device, kernels)
    }
}

struct Builder<'a> {
    d: Dense<'a>,
    bufs: &'a Buffers,
}

impl Builder<'_> {
    fn elementwise(&mut self, entry: &'static str, dims: Dims, rw: &[&wgpu::Buffer], ro: &[&wgpu::Buffer]) {
        let family = match entry {
            "relu_backward" | "sigmoid_forward" | "sigmoid_backward" => Family::Activation,
            "reparameterize_forward" | "reparameterize_backward" => Family::Reparam,
            "add_input_noise" => Family::Gather,
            "column_sums" => Family::Reduce,
            _ => Family::Loss,
        };
        let dims = Dims { flags: dims.flags | flags::ROWS_M, ..dims };
        let groups = match entry {
            "column_sums" => column_sums_groups(dims.n as usize),
            _ => grid_1d(self.d.rows * dims.n as usize),
        };
        self.d.p.push(Kernel::new(family, entry), dims, rw, ro, groups);
    }

    /// dW = dyᵀ·x, db = Σ dy (both overwrite: each is written once per step,
    /// so the gradients need no clearing), and dx = dy·W when asked.
    fn dense_backward(&mut self, dx: Option<&wgpu::Buffer>, dy: &wgpu::Buffer, x: &wgpu::Buffer, layer: &Layer) {
        let (i, o) = (layer.inputs, layer.outputs);
        let (rows, grads) = (self.d.rows, &self.bufs.grads);
        let dw =
            Dims { m: o as u32, n: i as u32, flags: flags::ROWS_K, off_c: layer.weight as u32, ..Default::default() };
        self.d.matmul("matmul_tn", o, rows, i, dw, grads, &[dy, x]);
        let db = Dims { n: o as u32, off_c: layer.bias as u32, ..Default::default() };
        self.elementwise("column_sums", db, &[grads], &[dy]);
        if let Some(dx) = dx {
            let d = Dims {
                k: o as u32,
                n: i as u32,
                flags: flags::ROWS_M,
                off_b: layer.weight as u32,
                ..Default::default()
            };
            self.d.matmul("matmul_nn", rows, o, i, d, dx, &[dy, &self.bufs.params]);
        }
    }

    /// A loss forward kernel and its fold into slot `which` of the step.
    fn loss(&mut self, entry: &'static str, width: usize, which: u32, slots: &wgpu::Buffer, ro: &[&wgpu::Buffer]) {
        let parts = loss_parts(self.d.rows * width);
        let off = which * MAX_PARTS;
        let dims = Dims { n: width as u32, flags: flags::ROWS_M, off_c: off, ..Default::default() };
        self.d.p.push(Kernel::new(Family::Loss, entry), dims, &[&self.bufs.partials], ro, [parts, 1, 1]);
        let finish = Dims { parts, off_a: off, which, ..Default::default() };
        self.d.p.push(Kernel::new(Family::Loss, "loss_finish"), finish, &[slots], &[&self.bufs.partials], [1, 1, 1]);
    }
}

/// Everything after the gather: forward, losses, and for training backward and Adam.
pub fn build_program(
    device: &wgpu::Device,
    kernels: &Kernels,
    bufs: &Buffers,
    slots: &wgpu::Buffer,
    recipe: &Recipe,
) -> Program {
    let arch = recipe.arch;
    let d = arch.config.input_dim();
    let latent = arch.config.latent;
    let mut b = Builder { d: Dense::new(&bufs.params, &bufs.split, recipe.max_batch), bufs };

    // Forward.
    let input = if recipe.noisy {
        let dims = Dims { n: d as u32, ..Default::default() };
        b.elementwise("add_input_noise", dims, &[&bufs.noisy], &[&bufs.clean]);
        &bufs.noisy
    } else {
        &bufs.clean
    };
    let mut x = input;
    for (layer, out) in arch.encoder.iter().zip(&bufs.encoder) {
        b.d.forward(out, x, layer);
        x = out;
    }
    if let Some(head) = &arch.head {
        b.d.forward(&bufs.mulv, x, head);
        let dims = Dims { n: latent as u32, ..Default::default() };
        b.elementwise("reparameterize_forward", dims, &[&bufs.z, &bufs.eps], &[&bufs.mulv]);
        b.loss("kl_forward", latent, 1, slots, &[&bufs.mulv]);
        x = &bufs.z;
    }
    for (layer, out) in arch.decoder.iter().zip(&bufs.decoder) {
        b.d.forward(out, x, layer);
        x = out;
    }
    let logits = x;
    let pixels = Dims { n: d as u32, ..Default::default() };
    match arch.config.loss {
        ReconLoss::Bce => b.loss("bce_with_logits_forward", d, 0, slots, &[logits, &bufs.clean]),
        ReconLoss::Mse => {
            b.elementwise("sigmoid_forward", pixels, &[&bufs.probs], &[logits]);
            b.loss("mse_forward", d, 0, slots, &[&bufs.probs, &bufs.clean]);
        }
    }
    if !recipe.train {
        return b.d.build(device, kernels);
    }

    // Backward: `cur` holds the gradient flowing down, `other` receives the next.
    let (mut cur, mut other) = (&bufs.grad_a, &bufs.grad_b);
    match arch.config.loss {
        ReconLoss::Bce => b.elementwise("bce_with_logits_backward", pixels, &[cur], &[logits, &bufs.clean]),
        ReconLoss::Mse => {
            b.elementwise("mse_backward", pixels, &[cur], &[&bufs.probs, &bufs.clean]);
            b.elementwise("sigmoid_backward", pixels, &[cur], &[&bufs.probs]);
        }
    }
    let code = if arch.head.is_some() { &bufs.z } else { bufs.encoder.last().expect("AE encoder") };
    for (k, layer) in arch.decoder.iter().enumerate().rev() {
        let x = if k == 0 { code } else { &bufs.decoder[k - 1] };
        b.dense_backward(Some(other), cur, x, layer);
        std::mem::swap(&mut cur, &mut other);
        if k > 0 {
            let dims = Dims { n: layer.inputs as u32, ..Default::default() };
            b.elementwise("relu_backward", dims, &[cur], &[x]);
        }
    }
    if let Some(head) = &arch.head {
        // dmulv is written by the reparameterization's backward, then KL's adds.
        let dims = Dims { n: latent as u32, ..Default::default() };
        b.elementwise("reparameterize_backward", dims, &[other], &[cur, &bufs.mulv, &bufs.eps]);
        b.elementwise("kl_backward", dims, &[other], &[&bufs.mulv]);
        std::mem::swap(&mut cur, &mut other);
        let h = bufs.encoder.last().unwrap_or(input);
        let dx = (!arch.encoder.is_empty()).then_some(other);
        b.dense_backward(dx, cur, h, head);
        std::mem::swap(&mut cur, &mut other);
    }
    for (k, layer) in arch.encoder.iter().enumerate().rev() {
        let dims = Dims { n: layer.outputs as u32, ..Default::default() };
        b.elementwise("relu_backward", dims, &[cur], &[&bufs.encoder[k]]);
        let x = if k == 0 { input } else { &bufs.encoder[k - 1] };
        b.dense_backward((k > 0).then_some(other), cur, x, layer);
        std::mem::swap(&mut cur, &mut other);
    }

    // Adam over the flat buffer; c1, c2 come from the step row.
    let p = arch.param_count;
    let a = recipe.adam;
    let dims = Dims { m: p as u32, f0: a.lr, f1: a.beta1, f2: a.beta2, f3: a.eps, ..Default::default() };
    b.d.p.push(
        Kernel::new(Family::Adam, "adam_update"),
        dims,
        &[&bufs.params, &bufs.adam_m, &bufs.adam_v],
        &[&bufs.grads],
        grid_1d(p),
    );
    b.d.build(device, kernels)
}
