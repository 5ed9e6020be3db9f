//! The WGSL kernels: one table of sources, the constants they share (defined
//! here once and handed to WGSL in a generated prelude), and their pipelines.
//!
//! Each family's pipelines share one layout: group 0 = {0: the family's
//! parameter struct (`gpu::params`), 1..: its storage bindings, in the
//! order it declares them}, group 1 = {0: `Step` with a dynamic offset}.
//! The WGSL of both is generated from the Rust declarations; bindings a
//! dispatch leaves unbound get small dummy buffers.

use std::collections::HashMap;
use std::fmt::Write;

use super::params::{
    self, AdamParams, Binding, ConvParams, ElementwiseParams, GatherParams, KernelParams, LossParams, MatmulParams,
    RandomParams, ReduceParams, ReparamParams, Step,
};
use crate::error::{Error, Result};
use crate::model::{Activation, ConvGeom};

/// Threads per workgroup of the element-wise and reduction kernels.
pub const WG: u32 = 256;
/// Most workgroups a grid-stride kernel is dispatched with.
pub const MAX_GROUPS: u32 = 4096;
/// Most partial sums a loss kernel produces (one per workgroup).
pub const LOSS_GROUPS: u32 = 256;
/// Room for each loss's partial sums: a fused output layer writes one per
/// output tile (800 at batch 1024 on 784 pixels; a convolution's, whose
/// tiles are 32 pixels of one channel, 25,088 at batch 1024 on 28x28).
pub const MAX_PARTS: u32 = 1 << 15;
/// Columns per workgroup of `column_sums` (a warp's worth, for coalesced
/// loads) and thread rows splitting the matrix rows between them.
pub const COLSUM_COLS: u32 = 32;
pub const COLSUM_GROUPS: u32 = WG / COLSUM_COLS;
/// Most K slices of a split-K product.
pub const MAX_SPLIT: u32 = 8;
/// Shallowest K slice worth a workgroup.
const MIN_SLICE: u32 = 64;

/// Bits of `Dims::flags`.
pub mod flags {
    /// c += result instead of c = result.
    pub const ACCUMULATE: u32 = 1;
    /// Add `bias[col]` (matmul epilogue).
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

    /// K slices for an M x K x N product to reach about `target`
    /// workgroups: batch-128 layers give a few dozen workgroups, each walking
    /// all of a K of 400-784 alone; splitting K multiplies the workgroups
    /// (at the price of one more dispatch).
    pub fn split_k(self, m: usize, k: usize, n: usize, target: u32) -> u32 {
        if self == MatmulVariant::Naive || target == 0 {
            return 1;
        }
        let [x, y, _] = self.workgroups(m, n);
        (target / (x * y)).min(k as u32 / MIN_SLICE).clamp(1, MAX_SPLIT)
    }

    /// The variant for an M x N output on an adapter with `limits`: 64-tiles
    /// only when they still give enough workgroups to fill a GPU (batch-128
    /// layers are small), and only tiles whose workgroup fits the limits; the
    /// naive variant when none does.
    pub fn for_shape(m: usize, n: usize, limits: &wgpu::Limits) -> MatmulVariant {
        let [x, y, _] = MatmulVariant::Tile64.workgroups(m, n);
        let wide = m >= 64 && n >= 64 && x * y >= 64;
        let candidates: &[MatmulVariant] =
            if wide { &[MatmulVariant::Tile64, MatmulVariant::Tile32] } else { &[MatmulVariant::Tile32] };
        let fits = |v: &&MatmulVariant| fits(Family::Matmul(**v), limits);
        candidates.iter().find(fits).copied().unwrap_or(MatmulVariant::Naive)
    }
}

/// One shader module: a family of kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Matmul(MatmulVariant),
    Conv,
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
    Conv2dForward,
    Conv2dBackwardData,
    Conv2dBackwardWeight,
    ChannelSums,
    ActivationForward,
    ActivationForwardFrom,
    ActivationBackward,
    BiasAdd,
    SigmoidForward,
    SigmoidBackward,
    ColumnSums,
    CopyColumns,
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
            ActivationForward
            | ActivationForwardFrom
            | ActivationBackward
            | BiasAdd
            | SigmoidForward
            | SigmoidBackward
            | CopyColumns => Family::Activation,
            ColumnSums => Family::Reduce,
            Conv2dForward | Conv2dBackwardData | Conv2dBackwardWeight | ChannelSums => Family::Conv,
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
            Conv2dForward => "conv2d_forward",
            Conv2dBackwardData => "conv2d_backward_data",
            Conv2dBackwardWeight => "conv2d_backward_weight",
            ChannelSums => "channel_sums",
            ActivationForward => "activation_forward",
            ActivationForwardFrom => "activation_forward_from",
            ActivationBackward => "activation_backward",
            BiasAdd => "bias_add",
            SigmoidForward => "sigmoid_forward",
            SigmoidBackward => "sigmoid_backward",
            ColumnSums => "column_sums",
            CopyColumns => "copy_columns",
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
            Conv2dForward,
            Conv2dBackwardData,
            Conv2dBackwardWeight,
            ChannelSums,
            ActivationForward,
            ActivationForwardFrom,
            ActivationBackward,
            BiasAdd,
            SigmoidForward,
            SigmoidBackward,
            ColumnSums,
            CopyColumns,
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
/// The element-wise ops, twins of `crate::ops`: every module includes them.
const OPS: &str = include_str!("../../shaders/ops.wgsl");
/// The workgroup sum, for modules that declare its scratch `red`.
pub const TREE_SUM: &str = include_str!("../../shaders/tree_sum.wgsl");
const MATMUL_COMMON: &str = include_str!("../../shaders/matmul_common.wgsl");

impl Family {
    pub const ALL: [Family; 11] = [
        Family::Matmul(MatmulVariant::Naive),
        Family::Matmul(MatmulVariant::Tile32),
        Family::Matmul(MatmulVariant::Tile64),
        Family::Conv,
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
            Family::Conv => ("conv.wgsl", include_str!("../../shaders/conv.wgsl")),
            Family::Activation => ("activation.wgsl", include_str!("../../shaders/activation.wgsl")),
            Family::Reduce => ("reduce.wgsl", include_str!("../../shaders/reduce.wgsl")),
            Family::Loss => ("loss.wgsl", include_str!("../../shaders/loss.wgsl")),
            Family::Reparam => ("reparam.wgsl", include_str!("../../shaders/reparam.wgsl")),
            Family::Gather => ("gather.wgsl", include_str!("../../shaders/gather.wgsl")),
            Family::Adam => ("adam.wgsl", include_str!("../../shaders/adam.wgsl")),
            Family::Random => ("random.wgsl", include_str!("../../shaders/random.wgsl")),
        }
    }

    /// The family's parameter struct: its name, generated WGSL and size in bytes.
    pub fn params(self) -> (&'static str, &'static str, usize) {
        fn of<P: KernelParams>() -> (&'static str, &'static str, usize) {
            (P::NAME, P::WGSL, std::mem::size_of::<P>())
        }
        match self {
            Family::Matmul(_) => of::<MatmulParams>(),
            Family::Conv => of::<ConvParams>(),
            Family::Activation => of::<ElementwiseParams>(),
            Family::Reduce => of::<ReduceParams>(),
            Family::Loss => of::<LossParams>(),
            Family::Reparam => of::<ReparamParams>(),
            Family::Gather => of::<GatherParams>(),
            Family::Adam => of::<AdamParams>(),
            Family::Random => of::<RandomParams>(),
        }
    }

    /// The family's storage bindings, in binding order from 1.
    pub fn bindings(self) -> &'static [Binding] {
        match self {
            Family::Matmul(_) => params::MATMUL,
            Family::Conv => params::CONV,
            Family::Activation => params::ACTIVATION,
            Family::Reduce => params::REDUCE,
            Family::Loss => params::LOSS,
            Family::Reparam => params::REPARAM,
            Family::Gather => params::GATHER,
            Family::Adam => params::ADAM,
            Family::Random => params::RANDOM,
        }
    }

    /// The complete WGSL source: generated constants, shared declarations,
    /// the generated interface (parameters and bindings), the body.
    pub fn source(self) -> String {
        let mut s = prelude(Some(self));
        let (name, wgsl, _) = self.params();
        s.push_str("// Generated by gpu::params from the Rust declarations.\n");
        s.push_str(&params::wgsl_interface(name, wgsl, self.bindings()));
        match self {
            Family::Matmul(_) => s.push_str(MATMUL_COMMON),
            Family::Loss => s.push_str(TREE_SUM),
            _ => {}
        }
        s.push_str(self.body().1);
        s
    }
}

/// What every module starts with: the generated constants (a matmul
/// family's tile sizes too), `Step`, common.wgsl, rng.wgsl and ops.wgsl.
pub fn prelude(family: Option<Family>) -> String {
    let mut s = String::from("// Generated by gpu::shaders: constants defined once in Rust.\n");
    let mut c = |name: &str, v: u32| writeln!(s, "const {name}: u32 = {v}u;").expect("write to String");
    c("WG", WG);
    c("COLSUM_COLS", COLSUM_COLS);
    c("COLSUM_GROUPS", COLSUM_GROUPS);
    c("FLAG_ACCUMULATE", flags::ACCUMULATE);
    c("FLAG_BIAS", flags::BIAS);
    for act in Activation::ALL {
        c(&format!("ACT_{}", act.constant_name()), act.code());
    }
    c("FLAG_ROWS_M", flags::ROWS_M);
    c("FLAG_ROWS_K", flags::ROWS_K);
    if let Some(Family::Matmul(v)) = family {
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
    s.push_str(Step::WGSL);
    s.push_str(COMMON);
    s.push_str(RNG);
    s.push_str(OPS);
    s
}

/// A name for profiles: the entry, and for products the variant, M x K x N
/// (batch-sized ones at `rows`, the step's) and the split-K slices, e.g.
/// `matmul_nt Tile32 128x784x400 /4`; a split-K finish carries its product's
/// shape, so the finishes of two products of one shape share a name. Other
/// kernels are named by entry alone.
pub fn dispatch_label(kernel: Kernel, matmul: Option<&MatmulParams>, rows: u32) -> String {
    let (Family::Matmul(variant), Some(p)) = (kernel.family(), matmul) else {
        return kernel.entry().to_string();
    };
    let m = if p.flags & flags::ROWS_M != 0 { rows } else { p.m };
    let k = if p.flags & flags::ROWS_K != 0 { rows } else { p.k };
    let split = if p.slices > 1 { format!(" /{}", p.slices) } else { String::new() };
    format!("{} {variant:?} {m}x{k}x{}{split}", kernel.entry(), p.n)
}

/// Workgroups for a grid-stride kernel over `len` elements.
pub fn grid_1d(len: usize) -> [u32; 3] {
    [(len.div_ceil(WG as usize) as u32).clamp(1, MAX_GROUPS), 1, 1]
}

/// Workgroups of a convolution kernel on `rows` images: a thread per output
/// value, or for the gradient sums a workgroup per weight or channel.
pub fn conv_groups(kernel: Kernel, g: &ConvGeom, rows: usize) -> [u32; 3] {
    let per_group = |n: usize| [(n as u32).clamp(1, MAX_GROUPS), 1, 1];
    match kernel {
        Kernel::Conv2dForward => grid_1d(g.out_len() * rows),
        Kernel::Conv2dBackwardData => grid_1d(g.in_len() * rows),
        Kernel::Conv2dBackwardWeight => per_group(g.out_c * g.patch()),
        Kernel::ChannelSums => per_group(g.out_c),
        _ => unreachable!("{kernel:?} is not a convolution kernel"),
    }
}

/// Workgroups of `column_sums` over `n` columns.
pub fn column_sums_groups(n: usize) -> [u32; 3] {
    [(n as u32).div_ceil(COLSUM_COLS).max(1), 1, 1]
}

/// Workgroups of a loss reduction over `len` elements: one partial each.
pub fn loss_parts(len: usize) -> u32 {
    (len.div_ceil(WG as usize) as u32).clamp(1, LOSS_GROUPS)
}

/// All pipelines, built once per context.
/// A shader module from WGSL source, trusted unless checked mode is on.
fn shader_module(device: &wgpu::Device, checked: bool, label: &str, source: &str) -> wgpu::ShaderModule {
    let desc = wgpu::ShaderModuleDescriptor { label: Some(label), source: wgpu::ShaderSource::Wgsl(source.into()) };
    if checked {
        device.create_shader_module(desc)
    } else {
        // SAFETY: every kernel guards its own indices against the sizes it is
        // given, and each is cross-checked against its CPU twin in both modes
        // (tests/gpu_kernels.rs); loops are bounded by those sizes.
        unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
    }
}

/// All pipelines, built once per context (`GpuContext::kernels`).
pub struct Kernels {
    /// Group 0 of each family: its parameters and storage bindings.
    layouts: HashMap<Family, wgpu::BindGroupLayout>,
    pub step_layout: wgpu::BindGroupLayout,
    pipelines: HashMap<Kernel, wgpu::ComputePipeline>,
    /// Stand-ins for unbound storage bindings, one per binding number: a
    /// read-write binding may not share its buffer with another binding.
    pub dummies: Vec<wgpu::Buffer>,
    /// Byte alignment of uniform offsets (parameter slots, step-table rows).
    pub uniform_align: u64,
    /// For generated kernels: the device and the shader mode.
    device: wgpu::Device,
    checked: bool,
}

/// A generated kernel's pipeline and the layout of its storage bindings.
pub struct GeneratedPipeline {
    pub layout: wgpu::BindGroupLayout,
    pub pipeline: wgpu::ComputePipeline,
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
    /// The pipelines of `device`, whose adapter has `limits`, with wgpu's
    /// runtime checks in every module when `checked`.
    pub fn new(device: &wgpu::Device, limits: &wgpu::Limits, checked: bool) -> Result<Kernels> {
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        check_limits(limits)?;
        let step_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("step table"),
            entries: &[uniform(0, true)],
        });
        let mut layouts = HashMap::new();
        for family in Family::ALL {
            let mut entries = vec![uniform(0, false)];
            entries.extend(family.bindings().iter().zip(1..).map(|(b, i)| storage(i, b.read_only)));
            let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(family.params().0),
                entries: &entries,
            });
            layouts.insert(family, layout);
        }
        let mut pipelines = HashMap::new();
        for family in Family::ALL.into_iter().filter(|&f| fits(f, limits)) {
            let label = format!("{family:?} ({})", family.body().0);
            let module = shader_module(device, checked, &label, &family.source());
            let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&label),
                bind_group_layouts: &[Some(&layouts[&family]), Some(&step_layout)],
                immediate_size: 0,
            });
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
                        zero_initialize_workgroup_memory: checked,
                    },
                    cache: None,
                });
                pipelines.insert(kernel, pipeline);
            }
        }
        let most = Family::ALL.iter().map(|f| f.bindings().len()).max().unwrap_or(0);
        let dummies = (0..most)
            .map(|_| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("unbound"),
                    size: 16,
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                })
            })
            .collect();
        let kernels = Kernels {
            dummies,
            uniform_align: limits.min_uniform_buffer_offset_alignment as u64,
            device: device.clone(),
            checked,
            layouts,
            step_layout,
            pipelines,
        };
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("building the kernels: {e}")));
        }
        Ok(kernels)
    }

    pub fn layout(&self, family: Family) -> &wgpu::BindGroupLayout {
        &self.layouts[&family]
    }

    /// The pipeline of a generated kernel whose bindings are storage buffers
    /// in order (`written[i]`: read-write); `fused::Pipelines` builds each
    /// kernel's once.
    pub fn build_generated(&self, source: &str, written: &[bool]) -> GeneratedPipeline {
        let device = &self.device;
        let entries: Vec<_> = written.iter().zip(0..).map(|(&w, i)| storage(i, !w)).collect();
        let layout = device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some("fused"), entries: &entries });
        let module = shader_module(device, self.checked, "fused", source);
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("fused"),
            bind_group_layouts: &[Some(&layout), Some(&self.step_layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some("fused"),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some("main"),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &[],
                zero_initialize_workgroup_memory: self.checked,
            },
            cache: None,
        });
        GeneratedPipeline { layout, pipeline }
    }

    pub fn pipeline(&self, kernel: Kernel) -> &wgpu::ComputePipeline {
        self.pipelines.get(&kernel).unwrap_or_else(|| panic!("no kernel {kernel:?}"))
    }
}

/// What a family's workgroup needs: invocations and workgroup memory (bytes).
pub fn workgroup_needs(family: Family) -> (u32, u32) {
    match family {
        Family::Matmul(MatmulVariant::Naive) => (NAIVE_X * NAIVE_Y, 0),
        Family::Matmul(v) => {
            let t = v.tile();
            ((t.tile_m / t.per_m) * (t.tile_n / t.per_n), 4 * t.bk * (t.tile_m + t.tile_n))
        }
        Family::Reduce => (COLSUM_COLS * COLSUM_GROUPS, 4 * COLSUM_COLS * COLSUM_GROUPS),
        Family::Loss | Family::Conv => (WG, 4 * WG),
        _ => (WG, 0),
    }
}

/// Whether a family's workgroup fits an adapter's limits.
pub fn fits(family: Family, limits: &wgpu::Limits) -> bool {
    let (threads, bytes) = workgroup_needs(family);
    threads <= limits.max_compute_invocations_per_workgroup && bytes <= limits.max_compute_workgroup_storage_size
}

/// Refuses an adapter whose limits a kernel the engines cannot do without
/// outgrows, naming both; tiled products that do not fit are not built and
/// never chosen (`MatmulVariant::for_shape`). Every kernel fits WebGPU's
/// defaults (256 invocations, 16 KiB), which every adapter offers (a test
/// checks).
pub fn check_limits(limits: &wgpu::Limits) -> Result<()> {
    for family in Family::ALL {
        let optional = matches!(family, Family::Matmul(v) if v != MatmulVariant::Naive);
        if !optional && !fits(family, limits) {
            let (threads, bytes) = workgroup_needs(family);
            return Err(Error::Gpu(format!(
                "{family:?} needs {threads} invocations and {bytes} bytes of workgroup memory; the adapter allows {} and {}",
                limits.max_compute_invocations_per_workgroup, limits.max_compute_workgroup_storage_size
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_fits_the_webgpu_default_limits() {
        check_limits(&wgpu::Limits::default()).unwrap();
        check_limits(&wgpu::Limits::downlevel_defaults()).unwrap();
    }

    #[test]
    fn tiles_are_chosen_from_the_limits() {
        let full = wgpu::Limits::default();
        assert_eq!(MatmulVariant::for_shape(1024, 784, &full), MatmulVariant::Tile64);
        assert_eq!(MatmulVariant::for_shape(128, 400, &full), MatmulVariant::Tile32);
        // 4 KiB of workgroup memory: 64-tiles (8 KiB) do not fit, 32-tiles do.
        let small = wgpu::Limits { max_compute_workgroup_storage_size: 4096, ..full.clone() };
        assert_eq!(MatmulVariant::for_shape(1024, 784, &small), MatmulVariant::Tile32);
        let tiny = wgpu::Limits { max_compute_workgroup_storage_size: 1024, ..full.clone() };
        assert_eq!(MatmulVariant::for_shape(1024, 784, &tiny), MatmulVariant::Naive);
        // The losses' reduction trees need 1 KiB: below that, refused by name.
        let none = wgpu::Limits { max_compute_workgroup_storage_size: 512, ..full };
        let err = check_limits(&none).unwrap_err().to_string();
        assert!(err.contains("1024 bytes"), "{err}");
    }
}
