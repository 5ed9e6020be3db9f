//! The interface of each kernel family, declared once in Rust: its
//! parameters (a `#[repr(C)]` struct whose WGSL twin is generated from the
//! same field list) and its storage bindings (names, access, element type;
//! the WGSL declarations are generated too). Programs bind buffers by
//! `Slot` name, checked against the family's list when a program is built.

use bytemuck::{Pod, Zeroable};

/// Bytes of the uniform slot each dispatch's parameters live in.
pub const PARAMS_SLOT: usize = 64;

/// A family's parameter struct; `NAME` and `WGSL` come from `kernel_params!`.
pub trait KernelParams: Pod {
    const NAME: &'static str;
    const WGSL: &'static str;
}

/// Declares a parameter struct and its WGSL twin from one field list.
macro_rules! kernel_params {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ident),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty),* }

        impl KernelParams for $name {
            const NAME: &'static str = stringify!($name);
            const WGSL: &'static str =
                concat!("struct ", stringify!($name), " {\n", $("    ", stringify!($field), ": ", stringify!($ty), ",\n",)* "}\n");
        }
    };
}

kernel_params! {
    /// Matrix products: c (M,N) = [c +] form(a, b) [+ bias] then act.
    MatmulParams {
        /// M and K, unless FLAG_ROWS_M / FLAG_ROWS_K take them from the step.
        m: u32, k: u32, n: u32,
        /// FLAG_ACCUMULATE, FLAG_BIAS, FLAG_ROWS_M, FLAG_ROWS_K.
        flags: u32,
        /// Element offsets into a, b, c and bias.
        off_a: u32, off_b: u32, off_c: u32, off_bias: u32,
        /// K slices of a split product (0 or 1: not split).
        slices: u32,
        /// The epilogue's activation (ACT_*).
        act: u32,
    }
}

kernel_params! {
    /// Convolutions: the geometry of one from `in` (C x H x W) to `out`
    /// (O x Ho x Wo), weights [O, C, k, k] (`model::ConvGeom`), and where
    /// the operands start.
    ConvParams {
        in_c: u32, in_h: u32, in_w: u32,
        out_c: u32, out_h: u32, out_w: u32,
        kernel: u32, stride: u32, padding: u32,
        /// FLAG_BIAS, FLAG_ACCUMULATE.
        flags: u32,
        /// The epilogue's activation (ACT_*).
        act: u32,
        off_a: u32, off_x: u32, off_w: u32, off_bias: u32, off_out: u32,
    }
}

kernel_params! {
    /// Element-wise kernels over (rows, n), rows from the step;
    /// `copy_columns` reads rows of `width_in` and writes rows of `width_out`
    /// (offsets are then columns), adding with FLAG_ACCUMULATE.
    ElementwiseParams { n: u32, off_in: u32, off_out: u32, act: u32, width_in: u32, width_out: u32, flags: u32 }
}

kernel_params! {
    /// Column sums over (rows, n) into `out[off_out..][..n]`.
    ReduceParams { n: u32, flags: u32, off_in: u32, off_out: u32 }
}

kernel_params! {
    /// Losses over (rows, n) (n = L for KL), their gradients and the fold into the step's slot.
    LossParams { n: u32, flags: u32, off_x: u32, off_target: u32, off_out: u32, parts: u32, which: u32 }
}

kernel_params! {
    /// The reparameterization over (rows, latent): mulv (rows, 2·latent) at
    /// off_mulv, the (rows, latent) tensors (z, eps, dz, noise) at off_rows.
    ReparamParams { latent: u32, flags: u32, off_mulv: u32, off_rows: u32 }
}

kernel_params! {
    /// Batch assembly: n pixels per image; a conditional model's labels
    /// one-hot over `classes` (0: none).
    GatherParams { n: u32, off_in: u32, off_out: u32, classes: u32 }
}

kernel_params! {
    /// Adam over `count` parameters (its settings come with the step).
    AdamParams { count: u32 }
}

kernel_params! {
    /// RNG test kernels: counters (seed, stream, step, i) for i < count.
    RandomParams { count: u32, seed: u32, stream: u32, step: u32 }
}

kernel_params! {
    /// What changes from one step to the next, bound at group 1 with a
    /// dynamic offset into the step table; every family sees it as `st`.
    Step {
        /// Images in this batch (the last of an epoch may be short).
        rows: u32,
        /// Index of the batch's first image in the order buffer.
        row_offset: u32,
        /// RNG step counter: the global step (training) or batch index (evaluation).
        rng_step: u32,
        /// Loss slot: the step's index within the epoch.
        slot: u32,
        seed: u32,
        reparam_stream: u32,
        noise_stream: u32,
        pad0: u32,
        noise_std: f32,
        /// Adam's settings for this step (`ops::AdamStep`): a schedule's
        /// learning rate, betas, eps and the bias corrections, as data, so
        /// that no setting is compiled into a kernel.
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        c1: f32,
        c2: f32,
        /// Objective weights from `Objective::for_batch`.
        recon_scale: f32,
        kl_scale: f32,
        pad1: f32,
        pad2: f32,
        pad3: f32,
    }
}

impl Step {
    /// This row with Adam's settings of its step.
    pub fn with_adam(self, a: &crate::ops::AdamStep) -> Step {
        Step { lr: a.lr, beta1: a.beta1, beta2: a.beta2, eps: a.eps, c1: a.c1, c2: a.c2, ..self }
    }
}

// Each family's parameters fit the uniform slot every dispatch gets (the
// step table has rows of its own size).
const _: () = {
    use std::mem::size_of;
    let sizes = [
        size_of::<MatmulParams>(),
        size_of::<ConvParams>(),
        size_of::<ElementwiseParams>(),
        size_of::<ReduceParams>(),
        size_of::<LossParams>(),
        size_of::<ReparamParams>(),
        size_of::<GatherParams>(),
        size_of::<AdamParams>(),
        size_of::<RandomParams>(),
    ];
    let mut i = 0;
    while i < sizes.len() {
        assert!(sizes[i] <= PARAMS_SLOT, "parameters outgrow their uniform slot");
        i += 1;
    }
};

/// A storage binding of some family, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    C,
    Partial,
    A,
    B,
    W,
    Bias,
    Out,
    Inp,
    X,
    Target,
    Z,
    Eps,
    Dmulv,
    Mulv,
    Dz,
    Noise,
    Pixels,
    Order,
    Clean,
    Labels,
    Onehot,
    Params,
    AdamM,
    AdamV,
    Grads,
    Words,
}

impl Slot {
    /// The WGSL variable's name.
    pub fn wgsl(self) -> &'static str {
        use Slot::*;
        match self {
            C => "c",
            Partial => "partial",
            A => "a",
            B => "b",
            W => "w",
            Bias => "bias",
            Out => "out",
            Inp => "inp",
            X => "x",
            Target => "truth",
            Z => "z",
            Eps => "eps",
            Dmulv => "dmulv",
            Mulv => "mulv",
            Dz => "dz",
            Noise => "noise",
            Pixels => "pixels",
            Order => "order",
            Clean => "clean",
            Labels => "labels",
            Onehot => "onehot",
            Params => "params",
            AdamM => "adam_m",
            AdamV => "adam_v",
            Grads => "grads",
            Words => "words",
        }
    }
}

/// One storage binding of a family: binding number = 1 + its index.
#[derive(Clone, Copy, Debug)]
pub struct Binding {
    pub slot: Slot,
    pub read_only: bool,
    /// WGSL element type.
    pub elem: &'static str,
}

const fn rw(slot: Slot) -> Binding {
    Binding { slot, read_only: false, elem: "f32" }
}

const fn ro(slot: Slot) -> Binding {
    Binding { slot, read_only: true, elem: "f32" }
}

pub const MATMUL: &[Binding] = &[rw(Slot::C), rw(Slot::Partial), ro(Slot::A), ro(Slot::B), ro(Slot::Bias)];
pub const CONV: &[Binding] = &[rw(Slot::Out), ro(Slot::A), ro(Slot::X), ro(Slot::W), ro(Slot::Bias)];
pub const ACTIVATION: &[Binding] = &[rw(Slot::Out), ro(Slot::Inp), ro(Slot::X)];
pub const REDUCE: &[Binding] = &[rw(Slot::Out), ro(Slot::A)];
pub const LOSS: &[Binding] = &[rw(Slot::Out), ro(Slot::X), ro(Slot::Target)];
pub const REPARAM: &[Binding] =
    &[rw(Slot::Z), rw(Slot::Eps), rw(Slot::Dmulv), ro(Slot::Mulv), ro(Slot::Dz), ro(Slot::Noise)];
pub const GATHER: &[Binding] = &[
    rw(Slot::Out),
    Binding { slot: Slot::Pixels, read_only: true, elem: "u32" },
    Binding { slot: Slot::Order, read_only: true, elem: "u32" },
    ro(Slot::Clean),
    Binding { slot: Slot::Labels, read_only: true, elem: "u32" },
    rw(Slot::Onehot),
];
pub const ADAM: &[Binding] = &[rw(Slot::Params), rw(Slot::AdamM), rw(Slot::AdamV), ro(Slot::Grads)];
pub const RANDOM: &[Binding] = &[Binding { slot: Slot::Words, read_only: false, elem: "u32" }];

/// The WGSL declarations of a family's interface: `args`, its parameters at
/// group 0 binding 0, and its storage bindings from 1 on.
pub fn wgsl_interface(params: &str, params_wgsl: &str, bindings: &[Binding]) -> String {
    let mut s = String::from(params_wgsl);
    s.push_str(&format!("@group(0) @binding(0) var<uniform> args: {params};\n"));
    for (i, b) in bindings.iter().enumerate() {
        let access = if b.read_only { "read" } else { "read_write" };
        s.push_str(&format!(
            "@group(0) @binding({}) var<storage, {access}> {}: array<{}>;\n",
            i + 1,
            b.slot.wgsl(),
            b.elem
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wgsl_twin_lists_the_rust_fields_in_order() {
        assert_eq!(
            ReduceParams::WGSL,
            "struct ReduceParams {\n    n: u32,\n    flags: u32,\n    off_in: u32,\n    off_out: u32,\n}\n"
        );
        assert!(Step::WGSL.contains("lr: f32,"));
        assert_eq!(std::mem::size_of::<MatmulParams>(), 40);
    }
}
