//! The WGSL kernels: one table of sources, the constants they share (defined
//! here once and handed to WGSL in a generated prelude), and their pipelines.
//!
//! Every pipeline has the same layout, so bind groups stay valid across kernels:
//! group 0 = {0: `Dims` uniform, 1-3: read-write storage, 4-6: read-only
//! storage}, group 1 = {0: `Step` uniform with a dynamic offset}. A kernel
//! declares only the bindings it uses; unused slots get small dummy buffers.

use std::collections::HashMap;
use std::fmt::Write;

use super::context::GpuContext;
use crate::error::{Error, Result};
use crate::model::Activation;

/// Threads per workgroup of the element-wise and reduction kernels.
pub const WG: u32 = 256;
/// Most workgroups a grid-stride kernel is dispatched with.
pub const MAX_GROUPS: u32 = 4096;
/// Most partial sums a loss reduction produces (one per workgroup).
pub const MAX_PARTS: u32 = 256;
/// Columns per workgroup of `column_sums` (a warp's worth, for coalesced
/// loads) and thread rows splitting the matrix rows between them.
pub const COLSUM_COLS: u32 = 32;
pub const COLSUM_GROUPS: u32 = WG / COLSUM_COLS;
/// Most K slices of a split-K product.
pub const MAX_SPLIT: u32 = 8;
/// Workgroups a product should have to keep a large GPU busy; fewer, and
/// split-K adds workgroups along K. `GPU_VAE_SPLIT_K=N` sets it for
/// benchmarks (0 turns splitting off). On an H200, 512 and 1024 beat 256 by
/// 4-5% at batch 128 and 1024 (two rounds of 5 epochs each).
const TARGET_GROUPS: u32 = 512;
/// Shallowest K slice worth a workgroup.
const MIN_SLICE: u32 = 64;

/// Bits of `Dims::flags`.
pub mod flags {
    /// c += result instead of c = result.
    pub const ACCUMULATE: u32 = 1;
    /// Add bias[col] (matmul epilogue).
    pub const BIAS: u32 = 2;
    /// The M size is this step's batch rows, not `Dims::m`.
    pub const ROWS_M: u32 = 8;
    /// The K size is this step's batch rows, not `Dims::k`.
    pub const ROWS_K: u32 = 16;
}

/// How a matrix product is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulVariant {
    /// Variant 1: a thread per output. Baseline and fallback.
    Naive,
    /// 32x32 tiles, 2x2 outputs per thread: narrow or short products.
    Tile32,
    /// 64x64 tiles, 4x4 outputs per thread.
    Tile64,
}

/// A tiled variant's shape.
#[derive(Clone, Copy, Debug)]
pub struct MatmulTile {
    pub tile_m: u32,
    pub tile_n: u32,
    pub per_m: u32,
    pub per_n: u32,
    pub bk: u32,
}

/// Workgroup shape of the naive variant.
const NAIVE_X: u32 = 16;
const NAIVE_Y: u32 = 16;

impl MatmulVariant {
    pub const ALL: [MatmulVariant; 3] = [MatmulVariant::Naive, MatmulVariant::Tile32, MatmulVariant::Tile64];

    /// The tile of a tiled variant; the naive one's "tile" is its workgroup.
    pub fn tile(self) -> MatmulTile {
        match self {
            MatmulVariant::Naive => MatmulTile { tile_m: NAIVE_Y, tile_n: NAIVE_X, per_m: 1, per_n: 1, bk: 1 },
            MatmulVariant::Tile32 => MatmulTile { tile_m: 32, tile_n: 32, per_m: 2, per_n: 2, bk: 16 },
            MatmulVariant::Tile64 => MatmulTile { tile_m: 64, tile_n: 64, per_m: 4, per_n: 4, bk: 16 },
        }
    }

    /// Workgroups covering an M x N output.
    pub fn workgroups(self, m: usize, n: usize) -> [u32; 3] {
        let t = self.tile();
        [(n as u32).div_ceil(t.tile_n).max(1), (m as u32).div_ceil(t.tile_m).max(1), 1]
    }

    /// K slices for an M x K x N product: batch-128 layers give a few dozen
    /// workgroups, each walking all of a K of 400-784 alone; splitting K
    /// multiplies the workgroups (at the price of one more dispatch).
    pub fn split_k(self, m: usize, k: usize, n: usize) -> u32 {
        let target = std::env::var("GPU_VAE_SPLIT_K").ok().and_then(|v| v.parse().ok()).unwrap_or(TARGET_GROUPS);
        if self == MatmulVariant::Naive || target == 0 {
            return 1;
        }
        let [x, y, _] = self.workgroups(m, n);
        (target / (x * y)).min(k as u32 / MIN_SLICE).clamp(1, MAX_SPLIT)
    }

    /// The variant for an M x N output: 64-tiles only when they still give
    /// enough workgroups to fill a GPU (batch-128 layers are small).
    pub fn for_shape(m: usize, n: usize) -> MatmulVariant {
        let [x, y, _] = MatmulVariant::Tile64.workgroups(m, n);
        if m >= 64 && n >= 64 && x * y >= 64 { MatmulVariant::Tile64 } else { MatmulVariant::Tile32 }
    }
}

/// One shader module: a family of kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Matmul(MatmulVariant),
    Activation,
    Reduce,
    Loss,
    Reparam,
    Gather,
    Adam,
    Random,
}

/// A matrix product's operand layout (see shaders/matmul_common.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulForm {
    /// c = a·bᵀ: forward x·Wᵀ.
    Nt,
    /// c = aᵀ·b: weight gradient dYᵀ·X.
    Tn,
    /// c = a·b: input gradient dY·W.
    Nn,
}

/// Every kernel, by name: an entry point of a family's module. Typed, so a
/// misspelt kernel does not compile; `entry` names its WGSL function, and a
/// test checks that each resolves in its module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Matmul(MatmulVariant, MatmulForm),
    MatmulSplitFinish(MatmulVariant),
    ActivationForward,
    ActivationBackward,
    BiasAdd,
    SigmoidForward,
    SigmoidBackward,
    ColumnSums,
    BceWithLogitsForward,
    BceWithLogitsBackward,
    MseForward,
    MseBackward,
    KlForward,
    KlBackward,
    LossFinish,
    ReparameterizeForward,
    ReparameterizeBackward,
    GatherBatch,
    AddInputNoise,
    AdamUpdate,
    Pcg4dWords,
    FillUniform,
    FillNormal,
}

impl Kernel {
    pub fn family(self) -> Family {
        use Kernel::*;
        match self {
            Matmul(v, _) | MatmulSplitFinish(v) => Family::Matmul(v),
            ActivationForward | ActivationBackward | BiasAdd | SigmoidForward | SigmoidBackward => Family::Activation,
            ColumnSums => Family::Reduce,
            BceWithLogitsForward
            | BceWithLogitsBackward
            | MseForward
            | MseBackward
            | KlForward
            | KlBackward
            | LossFinish => Family::Loss,
            ReparameterizeForward | ReparameterizeBackward => Family::Reparam,
            GatherBatch | AddInputNoise => Family::Gather,
            AdamUpdate => Family::Adam,
            Pcg4dWords | FillUniform | FillNormal => Family::Random,
        }
    }

    /// The WGSL entry point; the CPU twin has the same name.
    pub fn entry(self) -> &'static str {
        use Kernel::*;
        match self {
            Matmul(_, MatmulForm::Nt) => "matmul_nt",
            Matmul(_, MatmulForm::Tn) => "matmul_tn",
            Matmul(_, MatmulForm::Nn) => "matmul_nn",
            MatmulSplitFinish(_) => "matmul_split_finish",
            ActivationForward => "activation_forward",
            ActivationBackward => "activation_backward",
            BiasAdd => "bias_add",
            SigmoidForward => "sigmoid_forward",
            SigmoidBackward => "sigmoid_backward",
            ColumnSums => "column_sums",
            BceWithLogitsForward => "bce_with_logits_forward",
            BceWithLogitsBackward => "bce_with_logits_backward",
            MseForward => "mse_forward",
            MseBackward => "mse_backward",
            KlForward => "kl_forward",
            KlBackward => "kl_backward",
            LossFinish => "loss_finish",
            ReparameterizeForward => "reparameterize_forward",
            ReparameterizeBackward => "reparameterize_backward",
            GatherBatch => "gather_batch",
            AddInputNoise => "add_input_noise",
            AdamUpdate => "adam_update",
            Pcg4dWords => "pcg4d_words",
            FillUniform => "fill_uniform",
            FillNormal => "fill_normal",
        }
    }

    /// Every kernel of every family.
    pub fn all() -> Vec<Kernel> {
        use Kernel::*;
        let mut all = Vec::new();
        for v in MatmulVariant::ALL {
            all.extend([MatmulForm::Nt, MatmulForm::Tn, MatmulForm::Nn].map(|f| Matmul(v, f)));
            all.push(MatmulSplitFinish(v));
        }
        all.extend([
            ActivationForward,
            ActivationBackward,
            BiasAdd,
            SigmoidForward,
            SigmoidBackward,
            ColumnSums,
            BceWithLogitsForward,
            BceWithLogitsBackward,
            MseForward,
            MseBackward,
            KlForward,
            KlBackward,
            LossFinish,
            ReparameterizeForward,
            ReparameterizeBackward,
            GatherBatch,
            AddInputNoise,
            AdamUpdate,
            Pcg4dWords,
            FillUniform,
            FillNormal,
        ]);
        all
    }
}

const COMMON: &str = include_str!("../../shaders/common.wgsl");
const RNG: &str = include_str!("../../shaders/rng.wgsl");
const MATMUL_COMMON: &str = include_str!("../../shaders/matmul_common.wgsl");

impl Family {
    pub const ALL: [Family; 10] = [
        Family::Matmul(MatmulVariant::Naive),
        Family::Matmul(MatmulVariant::Tile32),
        Family::Matmul(MatmulVariant::Tile64),
        Family::Activation,
        Family::Reduce,
        Family::Loss,
        Family::Reparam,
        Family::Gather,
        Family::Adam,
        Family::Random,
    ];

    /// The family's own file (after the prelude, common.wgsl and rng.wgsl).
    pub fn body(self) -> (&'static str, &'static str) {
        match self {
            Family::Matmul(MatmulVariant::Naive) => {
                ("matmul_naive.wgsl", include_str!("../../shaders/matmul_naive.wgsl"))
            }
            Family::Matmul(_) => ("matmul.wgsl", include_str!("../../shaders/matmul.wgsl")),
            Family::Activation => ("activation.wgsl", include_str!("../../shaders/activation.wgsl")),
            Family::Reduce => ("reduce.wgsl", include_str!("../../shaders/reduce.wgsl")),
            Family::Loss => ("loss.wgsl", include_str!("../../shaders/loss.wgsl")),
            Family::Reparam => ("reparam.wgsl", include_str!("../../shaders/reparam.wgsl")),
            Family::Gather => ("gather.wgsl", include_str!("../../shaders/gather.wgsl")),
            Family::Adam => ("adam.wgsl", include_str!("../../shaders/adam.wgsl")),
            Family::Random => ("random.wgsl", include_str!("../../shaders/random.wgsl")),
        }
    }

    /// The complete WGSL source: generated constants, shared declarations, the body.
    pub fn source(self) -> String {
        let mut s = String::from("// Generated by gpu::shaders: constants defined once in Rust.\n");
        let mut c = |name: &str, v: u32| writeln!(s, "const {name}: u32 = {v}u;").expect("write to String");
        c("WG", WG);
        c("COLSUM_COLS", COLSUM_COLS);
        c("COLSUM_GROUPS", COLSUM_GROUPS);
        c("FLAG_ACCUMULATE", flags::ACCUMULATE);
        c("FLAG_BIAS", flags::BIAS);
        c("ACT_IDENTITY", act_code(Activation::Identity));
        c("ACT_RELU", act_code(Activation::Relu));
        c("ACT_LEAKY_RELU", act_code(Activation::LeakyRelu));
        c("ACT_TANH", act_code(Activation::Tanh));
        c("FLAG_ROWS_M", flags::ROWS_M);
        c("FLAG_ROWS_K", flags::ROWS_K);
        if let Family::Matmul(v) = self {
            let t = v.tile();
            c("NAIVE_X", NAIVE_X);
            c("NAIVE_Y", NAIVE_Y);
            c("TILE_M", t.tile_m);
            c("TILE_N", t.tile_n);
            c("PER_M", t.per_m);
            c("PER_N", t.per_n);
            c("BK", t.bk);
            c("THREADS_M", t.tile_m / t.per_m);
            c("THREADS_N", t.tile_n / t.per_n);
            c("THREADS", (t.tile_m / t.per_m) * (t.tile_n / t.per_n));
        }
        writeln!(s, "const LEAKY_SLOPE: f32 = {:?};", Activation::LEAKY_SLOPE).expect("write to String");
        s.push_str(COMMON);
        s.push_str(RNG);
        if let Family::Matmul(_) = self {
            s.push_str(MATMUL_COMMON);
        }
        s.push_str(self.body().1);
        s
    }
}

/// The `ACT_*` code of an activation (`Dims::u1` of the matmul epilogue and
/// the activation kernels).
pub fn act_code(act: Activation) -> u32 {
    match act {
        Activation::Identity => 0,
        Activation::Relu => 1,
        Activation::LeakyRelu => 2,
        Activation::Tanh => 3,
    }
}

/// Workgroups for a grid-stride kernel over `len` elements.
pub fn grid_1d(len: usize) -> [u32; 3] {
    [(len.div_ceil(WG as usize) as u32).clamp(1, MAX_GROUPS), 1, 1]
}

/// Workgroups of `column_sums` over `n` columns.
pub fn column_sums_groups(n: usize) -> [u32; 3] {
    [(n as u32).div_ceil(COLSUM_COLS).max(1), 1, 1]
}

/// Workgroups of a loss reduction over `len` elements: one partial each.
pub fn loss_parts(len: usize) -> u32 {
    (len.div_ceil(WG as usize) as u32).clamp(1, MAX_PARTS)
}

/// All pipelines, built once per context.
pub struct Kernels {
    pub dims_layout: wgpu::BindGroupLayout,
    pub step_layout: wgpu::BindGroupLayout,
    pipelines: HashMap<Kernel, wgpu::ComputePipeline>,
    /// Stand-ins for unused storage bindings (three read-write, one read-only).
    pub dummy_rw: [wgpu::Buffer; 3],
    pub dummy_ro: wgpu::Buffer,
    /// Byte alignment of uniform offsets (dims slots, step-table rows).
    pub uniform_align: u64,
}

fn storage(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

fn uniform(binding: u32, dynamic: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: dynamic,
            min_binding_size: None,
        },
        count: None,
    }
}

impl Kernels {
    pub fn new(ctx: &GpuContext) -> Result<Kernels> {
        let device = &ctx.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let dims_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("dims + buffers"),
            entries: &[
                uniform(0, false),
                storage(1, false),
                storage(2, false),
                storage(3, false),
                storage(4, true),
                storage(5, true),
                storage(6, true),
            ],
        });
        let step_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("step table"),
            entries: &[uniform(0, true)],
        });
        let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("gpu-vae kernels"),
            bind_group_layouts: &[Some(&dims_layout), Some(&step_layout)],
            immediate_size: 0,
        });
        let mut pipelines = HashMap::new();
        for family in Family::ALL {
            let label = format!("{family:?} ({})", family.body().0);
            let module = ctx.shader_module(&label, &family.source());
            for kernel in Kernel::all().into_iter().filter(|k| k.family() == family) {
                let entry = kernel.entry();
                let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: Some(&layout),
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &[],
                        // Every kernel writes workgroup memory before reading it.
                        zero_initialize_workgroup_memory: ctx.checked_shaders,
                    },
                    cache: None,
                });
                pipelines.insert(kernel, pipeline);
            }
        }
        let dummy = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage,
                mapped_at_creation: false,
            })
        };
        let rw = wgpu::BufferUsages::STORAGE;
        let kernels = Kernels {
            dummy_rw: [dummy("dummy rw 1", rw), dummy("dummy rw 2", rw), dummy("dummy rw 3", rw)],
            dummy_ro: dummy("dummy ro", rw),
            uniform_align: ctx.limits.min_uniform_buffer_offset_alignment as u64,
            dims_layout,
            step_layout,
            pipelines,
        };
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("building the kernels: {e}")));
        }
        Ok(kernels)
    }

    pub fn pipeline(&self, kernel: Kernel) -> &wgpu::ComputePipeline {
        self.pipelines.get(&kernel).unwrap_or_else(|| panic!("no kernel {kernel:?}"))
    }
}
