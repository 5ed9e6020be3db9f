//! Generated kernels: what the fusion pass (`fuse.rs`) turns several calls
//! into. A fused kernel is a list of tasks, each over its own range of the
//! dispatch's workgroups, and its WGSL is written here from the tasks, with
//! every size, offset and buffer a constant:
//!
//! - `Task::Product`: a tiled product whose workgroup holds all of K (split
//!   between four thread groups and summed in a fixed order, so no second
//!   pass), with an epilogue: the layer's own (bias, the kept
//!   pre-activation, activation) and then any element-wise ops on its
//!   elements (an activation backward; the output layer's loss partials and
//!   gradient; ...); or a weight gradient with the bias gradient as an extra
//!   column of ones and, optionally, Adam on each parameter.
//! - `Task::Rows`: a chain of row-local calls (thin products, convolutions
//!   with few weights and their epilogues, the reparameterization, losses
//!   and their gradients, activations) run by workgroups that each own a few
//!   rows (images), passing tensors in workgroup memory (`ChainLayout`).
//! - `Task::LossFinish`: a loss's partials folded into the step's slot.
//!
//! Element-wise ops are printed from one table (`gpu::elementwise`) in both
//! places they run: a chain's stage and a product's epilogue.
//!
//! The CPU reference of a fused kernel is the sequence of calls it replaced
//! (the GPU-vs-CPU step tests run both).

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use super::elementwise::{self, Place, Printed};
use super::ir::{Buf, Call, ConvMap, Epilogue, Matmul, Res, Size, Task, access, matmul_params, size};
use super::shaders::{GeneratedPipeline, Kernel, Kernels, MAX_PARTS, MatmulForm, TREE_SUM};
use crate::model::{Activation, ConvGeom, Graph, TensorId};

/// Threads of every fused workgroup.
pub const THREADS: u32 = 256;
/// A product task's output tile (TILE x TILE), PER x PER per thread, K split
/// between GROUPS thread groups taking BK-deep slices in turn.
const TILE: u32 = 32;
const PER: u32 = 4;
const GROUPS: u32 = 4;
const BK: u32 = 16;
/// Workgroup memory of a product task: each group's A and B tiles, reused
/// for the sum of the groups' output tiles and for the loss reduction.
pub const PRODUCT_BYTES: u32 = 2 * GROUPS * BK * TILE * 4;
/// Where the B tiles start in the workgroup array (`red`, which the A tiles
/// begin and every reduction uses).
const FB: u32 = PRODUCT_BYTES / 8;
/// How a product's threads load an operand tile: (tile row or column, k)
/// of load e, so that neighbouring threads walk the operand's contiguous
/// axis: M (or N) for ALONG_M, K for ALONG_K.
const ALONG_M: (&str, &str) = ("e % 32u", "e / 32u");
const ALONG_K: (&str, &str) = ("e / 16u", "e % 16u");
/// An operand's load: its thread pattern (`ALONG_M`, `ALONG_K`) and the
/// expression of an element.
type Load = ((&'static str, &'static str), String);
/// Workgroup memory of the reduction scratch of row chains and loss finishes.
pub const REDUCE_BYTES: u32 = THREADS * 4;

impl Task {
    /// Workgroups of the task for at most `rows` rows.
    pub fn groups(&self, rows: usize) -> u32 {
        match self {
            Task::Product { mm, epilogue } => {
                let cols = mm.n + usize::from(epilogue.ones.is_some());
                let m = size(mm.m, rows) as u32;
                if narrow(mm, epilogue) {
                    return m.div_ceil(THREADS).max(1);
                }
                let tiles_n = (cols as u32).div_ceil(TILE).max(1);
                if let Some(ConvMap::BackwardData(g)) = mm.conv
                    && g.stride > 1
                {
                    let tiles = |c: &StrideClass| ((rows * c.pixels()) as u32).div_ceil(TILE);
                    return StrideClass::all(&g).iter().map(tiles).sum::<u32>().max(1) * tiles_n;
                }
                m.div_ceil(TILE).max(1) * tiles_n
            }
            Task::Rows { per_group, .. } => (rows as u32).div_ceil(*per_group).max(1),
            Task::LossFinish { .. } => 1,
        }
    }

    /// Multiply-adds (x2) of the task's products at `rows` rows; a
    /// convolution's useful ones (`Dispatch::flops`).
    pub fn flops(&self, rows: usize) -> f64 {
        let product = |m: &Matmul| match m.conv {
            Some(ConvMap::Forward(g) | ConvMap::BackwardData(g) | ConvMap::BackwardWeight(g)) => {
                2.0 * (rows * g.out_pixels() * g.out_c * g.patch()) as f64
            }
            Some(ConvMap::ChannelSums(_)) => 0.0,
            None => 2.0 * (size(m.m, rows) * size(m.k, rows) * m.n) as f64,
        };
        match self {
            Task::Product { mm, .. } => product(mm),
            Task::Rows { stages, .. } => {
                let stage = |s: &Call| match s {
                    Call::Matmul(m) => product(m),
                    Call::Fused(tasks) => tasks.iter().map(|t| t.flops(rows)).sum(),
                    _ => 0.0,
                };
                stages.iter().map(stage).sum()
            }
            Task::LossFinish { .. } => 0.0,
        }
    }

    /// A short name for profiles.
    pub fn label(&self, rows: u32) -> String {
        match self {
            Task::Product { mm, epilogue } => {
                let base = match mm.conv {
                    Some(map) => conv_label(map),
                    None => super::shaders::dispatch_label(
                        Kernel::Matmul(mm.variant, mm.form),
                        Some(&matmul_params(mm)),
                        rows,
                    )
                    .replacen(&format!(" {:?}", mm.variant), "", 1),
                };
                let mut extra = String::new();
                if mm.bias.is_some() {
                    extra.push_str("+bias");
                }
                if mm.act != Activation::Identity {
                    extra.push_str(&format!("+{:?}", mm.act).to_lowercase());
                }
                if epilogue.ones.is_some() {
                    extra.push_str("+bias_grad");
                }
                for op in &epilogue.ops {
                    extra.push_str(&format!("+{}", stage_name(op, rows)));
                }
                format!("{base} {extra}").trim_end().to_string()
            }
            Task::Rows { stages, .. } => {
                let names: Vec<String> = stages.iter().map(|c| stage_name(c, rows)).collect();
                format!("rows({})", names.join(", "))
            }
            Task::LossFinish { .. } => "loss_finish".into(),
        }
    }
}

/// The input gradient of a strided convolution (a transposed layer's
/// forward) as s·s products, one per class of in-space pixels (y, x) with
/// (y + pad, x + pad) = (py, px) mod s: each reads only the taps
/// (py + j·s, px + i·s) that reach its pixels, where one product over all
/// pixels would multiply zeros in (s² - 1)/s² of its terms. The classes
/// are ranges of one task's workgroups (`Gen::product`).
struct StrideClass {
    /// The class's first pixel, its pixels per column and row, its taps.
    y0: usize,
    x0: usize,
    rows: usize,
    cols: usize,
    py: usize,
    px: usize,
    taps_y: usize,
    taps_x: usize,
    /// Out-space row and column of the class's first pixel's first tap.
    by: usize,
    bx: usize,
}

impl StrideClass {
    /// The classes of `g` that have pixels.
    fn all(g: &ConvGeom) -> Vec<StrideClass> {
        let (s, p, k) = (g.stride, g.padding, g.kernel);
        let first = |py: usize, side: usize| {
            let y0 = (py + s - p % s) % s;
            (y0, if y0 < side { (side - y0).div_ceil(s) } else { 0 })
        };
        let taps = |py: usize| if py < k { (k - py).div_ceil(s) } else { 0 };
        let mut out = Vec::new();
        for py in 0..s {
            for px in 0..s {
                let ((y0, rows), (x0, cols)) = (first(py, g.in_h), first(px, g.in_w));
                if rows * cols > 0 {
                    let (by, bx) = ((y0 + p - py) / s, (x0 + p - px) / s);
                    out.push(StrideClass { y0, x0, rows, cols, py, px, taps_y: taps(py), taps_x: taps(px), by, bx });
                }
            }
        }
        out
    }

    fn pixels(&self) -> usize {
        self.rows * self.cols
    }
}

/// Whether a product has so few columns (a convolution to 1 or 3 image
/// channels) that a 32x32 tile would mostly compute nothing: it runs a row
/// per thread instead (`Gen::narrow_product`).
fn narrow(mm: &Matmul, epilogue: &Epilogue) -> bool {
    let classes = matches!(mm.conv, Some(ConvMap::BackwardData(g)) if g.stride > 1);
    mm.n <= NARROW && epilogue.ones.is_none() && matches!(mm.c.0, Buf::Tensor(_)) && !classes
}

/// The most columns of a row-per-thread product.
const NARROW: usize = 4;

/// A convolution product's name: the direct kernel it replaces, "product",
/// and the geometry in -> out.
fn conv_label(map: ConvMap) -> String {
    let (kernel, g) = match map {
        ConvMap::Forward(g) => (Kernel::Conv2dForward, g),
        ConvMap::BackwardData(g) => (Kernel::Conv2dBackwardData, g),
        ConvMap::BackwardWeight(g) => (Kernel::Conv2dBackwardWeight, g),
        ConvMap::ChannelSums(g) => (Kernel::ChannelSums, g),
    };
    let (k, s, p) = (g.kernel, g.stride, g.padding);
    format!(
        "{}_product {}x{}x{}->{}x{}x{} k{k}s{s}p{p}",
        kernel.entry(),
        g.in_c,
        g.in_h,
        g.in_w,
        g.out_c,
        g.out_h,
        g.out_w
    )
}

fn stage_name(call: &Call, rows: u32) -> String {
    match call {
        Call::Matmul(m) => Task::Product { mm: *m, epilogue: Epilogue::default() }.label(rows),
        Call::Fused(tasks) => tasks.iter().map(|t| t.label(rows)).collect::<Vec<_>>().join(" | "),
        Call::Adam => "adam".into(),
        Call::Activation { .. } => "activation_forward".into(),
        Call::ActivationBackward { .. } => "activation_backward".into(),
        Call::BiasAdd { .. } => "bias_add".into(),
        Call::Sigmoid { .. } => "sigmoid_forward".into(),
        Call::SigmoidBackward { .. } => "sigmoid_backward".into(),
        Call::LossPartials { kernel, .. } | Call::LossBackward { kernel, .. } => kernel.entry().into(),
        Call::Reparameterize { .. } => "reparameterize_forward".into(),
        Call::ReparameterizeBackward { .. } => "reparameterize_backward".into(),
        Call::KlBackward { .. } => "kl_backward".into(),
        Call::InputNoise { .. } => "add_input_noise".into(),
        Call::Columns { .. } => "copy_columns".into(),
        other => format!("{other:?}"),
    }
}

/// Whether a call can be a stage of a row chain: each output row depends
/// only on the same row of its inputs. Products qualify when their weights
/// are small enough for every workgroup to read them whole.
pub fn row_local(call: &Call) -> bool {
    if conv_stage(call) {
        return true;
    }
    const THIN_WEIGHTS: usize = 1 << 15;
    // A side of at most a tile (a conv VAE's code layers, 3136 <-> 32) is
    // one tile column as a product: as a row stage it saves the dispatch,
    // and its weights (up to 512 KB) stay in cache for every workgroup.
    const NARROW_WEIGHTS: usize = 1 << 17;
    let thin = |k: usize, n: usize| k * n <= THIN_WEIGHTS || (k.min(n) <= TILE as usize && k * n <= NARROW_WEIGHTS);
    match call {
        Call::Matmul(m) => {
            m.form != MatmulForm::Tn
                && m.m == Size::Rows
                && matches!(m.k, Size::Fixed(k) if thin(k, m.n))
                && m.b.0 == Buf::Params
                && matches!(m.a, (Buf::Tensor(_), 0))
                && matches!(m.c, (Buf::Tensor(_), 0))
                && m.slices <= 1
        }
        Call::Activation { .. }
        | Call::ActivationBackward { .. }
        | Call::BiasAdd { .. }
        | Call::Sigmoid { .. }
        | Call::SigmoidBackward { .. }
        | Call::LossBackward { .. }
        | Call::Reparameterize { .. }
        | Call::ReparameterizeBackward { .. }
        | Call::KlBackward { .. }
        | Call::InputNoise { .. }
        | Call::Columns { .. } => true,
        Call::LossPartials { .. } => true,
        _ => false,
    }
}

/// Whether a call is a convolution (or its input gradient) that a row chain
/// can run on its images (`Chain::conv`): the product of a tensor into a
/// tensor with weights few enough for every workgroup to read them whole,
/// with its epilogue's pointwise ops (`fuse::absorb`) when it is a fused one.
pub fn conv_stage(call: &Call) -> bool {
    let (mm, epilogue) = match call {
        Call::Matmul(mm) => (mm, &Epilogue::default()),
        Call::Fused(tasks) => match &tasks[..] {
            [Task::Product { mm, epilogue }] => (mm, epilogue),
            _ => return false,
        },
        _ => return false,
    };
    let Some(ConvMap::Forward(g) | ConvMap::BackwardData(g)) = mm.conv else { return false };
    const CONV_WEIGHTS: usize = 1 << 17;
    matches!((mm.a, mm.c), ((Buf::Tensor(_), 0), (Buf::Tensor(_), 0)))
        && mm.b.0 == Buf::Params
        && !mm.accumulate
        && epilogue.ones.is_none()
        && g.out_c * g.patch() <= CONV_WEIGHTS
}

/// Where a row chain keeps a tensor it writes: a range of workgroup memory
/// (`per_group` rows from a float offset), or its own buffer when no stage
/// reads it at other elements than its own (a product's input is read
/// whole, a shifted op's at an offset): a convolution's output that only
/// pointwise ops touch afterwards, written once where it is needed anyway
/// (a storage barrier after the stage: threads walk it in other orders).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Home {
    Shared(usize),
    Buffer,
}

/// A row chain's tensors and the workgroup floats they take: a tensor's
/// range is free again after the last stage touching it, so a chain through
/// several layers keeps only the live ones (a conv VAE's code chain: the
/// encoder's features, then the decoder's, in the same floats).
pub struct ChainLayout {
    homes: Vec<(TensorId, Home)>,
    pub floats: usize,
}

impl ChainLayout {
    pub fn of(stages: &[Call], graph: &Graph, per_group: u32) -> ChainLayout {
        let touches = |s: &Call, t: TensorId| {
            let (r, w) = access(s);
            r.contains(&Res::Tensor(t)) || w.contains(&Res::Tensor(t))
        };
        let mut homes = Vec::new();
        // (offset, floats, first stage, last stage) of each range taken.
        let mut taken: Vec<(usize, usize, usize, usize)> = Vec::new();
        let mut floats = 0;
        for t in chain_outputs(stages) {
            let users: Vec<usize> = (0..stages.len()).filter(|&i| touches(&stages[i], t)).collect();
            if users.iter().all(|&i| in_step(&stages[i], t, graph)) {
                homes.push((t, Home::Buffer));
                continue;
            }
            let (first, last) = (users[0], users[users.len() - 1]);
            let len = per_group as usize * graph.width(t);
            let live: Vec<(usize, usize)> =
                taken.iter().filter(|u| u.2 <= last && first <= u.3).map(|u| (u.0, u.0 + u.1)).collect();
            let at = std::iter::once(0)
                .chain(live.iter().map(|u| u.1))
                .filter(|&at| live.iter().all(|&(a, b)| at + len <= a || b <= at))
                .min()
                .expect("the end of the highest range is free");
            taken.push((at, len, first, last));
            floats = floats.max(at + len);
            homes.push((t, Home::Shared(at)));
        }
        ChainLayout { homes, floats }
    }

    fn home(&self, t: TensorId) -> Home {
        self.homes.iter().find(|(x, _)| *x == t).expect("a chain output").1
    }

    /// The tensors the chain writes straight into their buffers.
    fn buffered(&self) -> impl Iterator<Item = TensorId> + '_ {
        self.homes.iter().filter(|(_, h)| *h == Home::Buffer).map(|(t, _)| *t)
    }
}

/// Whether a chain stage touches `t` element for element: an element-wise
/// op whose tensors all have t's width, or a convolution stage's output,
/// kept pre-activation and epilogue ops (not its input, read at other pixels).
fn in_step(stage: &Call, t: TensorId, graph: &Graph) -> bool {
    let pointwise = |c: &Call| elementwise::pointwise(c, graph) && elementwise::width(c) == Some(graph.width(t));
    match stage {
        Call::Matmul(mm) => conv_stage(stage) && mm.a.0 != Buf::Tensor(t),
        Call::Fused(tasks) => match &tasks[..] {
            [Task::Product { mm, epilogue }] if conv_stage(stage) => {
                mm.a.0 != Buf::Tensor(t)
                    && epilogue.ops.iter().all(|op| {
                        let (r, w) = access(op);
                        !(r.contains(&Res::Tensor(t)) || w.contains(&Res::Tensor(t))) || pointwise(op)
                    })
            }
            _ => false,
        },
        call => pointwise(call),
    }
}

/// The tensors a row chain writes, each once, in order of first write.
fn chain_outputs(stages: &[Call]) -> Vec<TensorId> {
    let mut out = Vec::new();
    for s in stages {
        for r in access(s).1 {
            if let Res::Tensor(t) = r
                && !out.contains(&t)
            {
                out.push(t);
            }
        }
    }
    out
}

/// The buffers a kernel of `tasks` binds, from the IR alone (what `generate`
/// will bind, without writing WGSL): every buffer a product or loss fold
/// touches, and of a row chain what it reads before writing, the tensors it
/// stores or writes in place (`ChainLayout`) and the buffers that are not
/// tensors (its other intermediate tensors live in workgroup memory).
pub fn bindings(tasks: &[Task], graph: &Graph) -> BTreeSet<Res> {
    let bound = |r: Res| if let Res::Part(_) = r { Res::Partials } else { r };
    let mut out = BTreeSet::new();
    for task in tasks {
        match task {
            Task::Rows { stages, store, .. } => {
                let mut written = Vec::new();
                for stage in stages {
                    let (reads, writes) = access(stage);
                    let outside = |r: &Res| !matches!(r, Res::Tensor(_)) || !written.contains(r);
                    out.extend(reads.into_iter().filter(outside).map(bound));
                    out.extend(writes.iter().filter(|r| !matches!(r, Res::Tensor(_))).map(|&r| bound(r)));
                    written.extend(writes);
                }
                out.extend(store.iter().map(|&t| Res::Tensor(t)));
                out.extend(ChainLayout::of(stages, graph, 1).buffered().map(Res::Tensor));
            }
            task => {
                let (reads, writes) = access(&Call::Fused(vec![task.clone()]));
                out.extend(reads.into_iter().chain(writes).map(bound));
            }
        }
    }
    out
}

/// A generated kernel: its WGSL, its storage bindings in binding order
/// (with whether each is written) and its workgroups.
pub struct Generated {
    pub source: String,
    pub bindings: Vec<(Res, bool)>,
    pub groups: u32,
    pub label: String,
}

/// What a generated kernel's WGSL is a function of, and so its pipeline's
/// key: the tasks, the widths of the tensors they touch and the most rows
/// it runs. Settings are step data, not part of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelKey {
    tasks: Vec<Task>,
    widths: Vec<usize>,
    rows: usize,
}

impl KernelKey {
    pub fn new(tasks: &[Task], graph: &Graph, rows: usize) -> KernelKey {
        let (reads, writes) = access(&Call::Fused(tasks.to_vec()));
        let tensors: BTreeSet<TensorId> = reads
            .into_iter()
            .chain(writes)
            .filter_map(|r| if let Res::Tensor(t) = r { Some(t) } else { None })
            .collect();
        KernelKey { tasks: tasks.to_vec(), widths: tensors.iter().map(|&t| graph.width(t)).collect(), rows }
    }
}

/// A compiled generated kernel and what binding it takes.
pub struct Compiled {
    pub pipeline: Arc<GeneratedPipeline>,
    pub bindings: Vec<(Res, bool)>,
    pub groups: u32,
    pub label: String,
}

/// The generated pipelines of one device and shader mode, by `KernelKey`:
/// a kernel's WGSL is written and compiled on its key's first use only.
#[derive(Default)]
pub struct Pipelines {
    built: Mutex<HashMap<KernelKey, Arc<Compiled>>>,
}

impl Pipelines {
    pub fn get(&self, kernels: &Kernels, tasks: &[Task], graph: &Graph, rows: usize) -> Arc<Compiled> {
        let key = KernelKey::new(tasks, graph, rows);
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        built
            .entry(key)
            .or_insert_with(|| {
                let g = generate(tasks, graph, rows);
                let written: Vec<bool> = g.bindings.iter().map(|&(_, w)| w).collect();
                let pipeline = Arc::new(kernels.build_generated(&g.source, &written));
                Arc::new(Compiled { pipeline, bindings: g.bindings, groups: g.groups, label: g.label })
            })
            .clone()
    }

    /// Pipelines built so far: settings are step data, so a schedule adds
    /// none after a program's first step.
    pub fn len(&self) -> usize {
        self.built.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Writes the kernel of `tasks` for at most `rows` rows.
pub fn generate(tasks: &[Task], graph: &Graph, rows: usize) -> Generated {
    let mut g = Gen { graph, bindings: Vec::new(), fns: String::new() };
    let mut dispatch = String::new();
    let mut first = 0u32;
    let mut needs_product_memory = false;
    let mut needs_reduce = false;
    let mut row_floats = 0usize;
    for (id, task) in tasks.iter().enumerate() {
        let groups = task.groups(rows);
        let cond = if id + 1 == tasks.len() { String::new() } else { format!("if (wid < {}u) ", first + groups) };
        let els = if id == 0 { "" } else { "else " };
        writeln!(dispatch, "    {els}{cond}{{ task{id}(wid - {first}u, lid); }}").unwrap();
        first += groups;
        match task {
            Task::Product { mm, epilogue } => {
                needs_product_memory = true;
                g.product(id, mm, epilogue);
            }
            Task::Rows { stages, per_group, store } => {
                needs_reduce = true;
                row_floats = row_floats.max(ChainLayout::of(stages, graph, *per_group).floats);
                g.rows(id, stages, *per_group, store);
            }
            &Task::LossFinish { which, parts } => {
                needs_reduce = true;
                g.loss_finish(id, which, parts);
            }
        }
    }
    let mut s = super::shaders::prelude(None);
    for (i, (res, written)) in g.bindings.iter().enumerate() {
        let access = if *written { "read_write" } else { "read" };
        writeln!(s, "@group(0) @binding({i}) var<storage, {access}> {}: array<f32>;", var_name(*res)).unwrap();
    }
    // A workgroup runs one task: reductions use a product's tiles where there are some.
    if needs_product_memory {
        writeln!(s, "const FB: u32 = {FB}u;\nvar<workgroup> red: array<f32, {}>;", PRODUCT_BYTES / 4).unwrap();
    } else if needs_reduce {
        writeln!(s, "var<workgroup> red: array<f32, {THREADS}>;").unwrap();
    }
    if row_floats > 0 {
        writeln!(s, "var<workgroup> rowbuf: array<f32, {row_floats}>;").unwrap();
    }
    if needs_product_memory || needs_reduce {
        s.push_str(TREE_SUM);
    }
    s.push_str(&g.fns);
    writeln!(
        s,
        "@compute @workgroup_size({THREADS})\nfn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{\n    let wid = wg.x;\n{dispatch}}}"
    )
    .unwrap();
    let label = tasks.iter().map(|t| t.label(rows as u32)).collect::<Vec<_>>().join(" | ");
    Generated { source: s, bindings: g.bindings, groups: first, label }
}

fn var_name(r: Res) -> String {
    match r {
        Res::Tensor(t) => format!("t{}", t.0),
        Res::Params => "params".into(),
        Res::Grads => "grads".into(),
        Res::AdamM => "adam_m".into(),
        Res::AdamV => "adam_v".into(),
        Res::Partials => "partials".into(),
        Res::Slots => "slots".into(),
        Res::Part(_) => "partials".into(),
    }
}

fn size_expr(s: Size) -> String {
    match s {
        Size::Rows => "st.rows".into(),
        Size::Pixels(p) => format!("st.rows * {p}u"),
        Size::Fixed(n) => format!("{n}u"),
    }
}

struct Gen<'a> {
    graph: &'a Graph,
    bindings: Vec<(Res, bool)>,
    fns: String,
}

impl Gen<'_> {
    /// The variable of `res`, bound on first use; `write` marks it written.
    fn bind(&mut self, res: Res, write: bool) -> String {
        match self.bindings.iter_mut().find(|(r, _)| *r == res) {
            Some((_, w)) => *w |= write,
            None => self.bindings.push((res, write)),
        }
        var_name(res)
    }

    fn product(&mut self, id: usize, mm: &Matmul, epilogue: &Epilogue) {
        let Some(ConvMap::BackwardData(g)) = mm.conv.filter(|_| !narrow(mm, epilogue)) else {
            return self.product_fn(id, None, mm, epilogue);
        };
        if g.stride == 1 {
            return self.product_fn(id, None, mm, epilogue);
        }
        // A function per stride class, every size a constant; the task finds
        // its workgroup's class once (`cls` is uniform in the workgroup).
        let classes = StrideClass::all(&g);
        for (c, class) in classes.iter().enumerate() {
            self.product_fn(id, Some((c, class)), mm, epilogue);
        }
        let tiles_n = (mm.n as u32).div_ceil(TILE).max(1);
        let rows: Vec<String> = classes.iter().map(|c| format!("st.rows * {}u", c.pixels())).collect();
        let n = classes.len();
        let mut cases = String::new();
        for c in 0..n {
            let label = if c + 1 == n { "default".to_string() } else { format!("case {c}u") };
            writeln!(cases, "        {label}: {{ task{id}_{c}(tt, t, lid); }}").unwrap();
        }
        write!(
            self.fns,
            "
fn task{id}(t: u32, lid: u32) {{
    var class_rows = array<u32, {n}>({rows});
    var cls = 0u;
    var tt = t;
    for (; cls + 1u < {n}u; cls++) {{
        let tiles = ((class_rows[cls] + {tile_m1}u) / {TILE}u) * {tiles_n}u;
        if (tt < tiles) {{ break; }}
        tt -= tiles;
    }}
    switch cls {{
{cases}    }}
}}
",
            rows = rows.join(", "),
            tile_m1 = TILE - 1,
        )
        .unwrap();
    }

    /// A tiled product's task function: `task{id}(t, lid)`, or for stride
    /// class c `task{id}_c(tt, t, lid)` on tile tt of the class.
    fn product_fn(&mut self, id: usize, class: Option<(usize, &StrideClass)>, mm: &Matmul, epilogue: &Epilogue) {
        let a = self.bind(Res::of(mm.a.0), false);
        let b = self.bind(Res::of(mm.b.0), false);
        let (off_a, off_b, n) = (mm.a.1, mm.b.1, mm.n);
        let ones = epilogue.ones.is_some();
        let cols = n + usize::from(ones);
        let tiles_n = (cols as u32).div_ceil(TILE).max(1);
        let ((a_ip, load_a), (b_jp, load_b)) = match mm.conv {
            // Loads walk each operand's contiguous axis across neighbouring threads.
            Some(map) => self.conv_loads(id, map, class, (&a, off_a), (&b, off_b)),
            None => (
                match mm.form {
                    MatmulForm::Tn => (ALONG_M, format!("{a}[{off_a}u + kk * m + row]")),
                    _ => (ALONG_K, format!("{a}[{off_a}u + row * k + kk]")),
                },
                match mm.form {
                    MatmulForm::Nt => (ALONG_K, format!("{b}[{off_b}u + col * k + kk]")),
                    _ => (ALONG_M, format!("{b}[{off_b}u + kk * {n}u + col]")),
                },
            ),
        };
        let load_b = if ones {
            format!("if (col == {n}u) {{ v = 1.0; }} else if (col < {n}u) {{ v = {load_b}; }}")
        } else {
            format!("if (col < {n}u) {{ v = {load_b}; }}")
        };
        let (epi, part_decl, after) = match mm.c.0 {
            Buf::Tensor(c) => self.element_epilogue(class, mm, c, &epilogue.ops),
            _ => (self.gradient_epilogue(mm, epilogue), String::new(), String::new()),
        };
        if narrow(mm, epilogue) {
            return self.narrow_product(id, mm, epilogue, (&load_a, &load_b), (&epi, &part_decl, &after));
        }
        let (ai, ap) = a_ip;
        let (bj, bp) = b_jp;
        let (mut m, mut k) = (size_expr(mm.m), size_expr(mm.k));
        let (mut name, mut args, mut tile) = (format!("task{id}"), "t: u32, lid: u32", "t");
        if let (Some((c, class)), Some(ConvMap::BackwardData(g))) = (class, mm.conv) {
            m = format!("st.rows * {}u", class.pixels());
            k = format!("{}u", g.out_c * class.taps_y * class.taps_x);
            (name, args, tile) = (format!("task{id}_{c}"), "tt: u32, t: u32, lid: u32", "tt");
        }
        let group = (TILE / PER) * (TILE / PER);
        let slice = BK * TILE;
        let round = GROUPS * BK;
        let out_tile = TILE * TILE;
        write!(
            self.fns,
            "
// {label}
fn {name}({args}) {{
    let m = {m};
    let k = {k};
    let row0 = ({tile} / {tiles_n}u) * {TILE}u;
    let col0 = ({tile} % {tiles_n}u) * {TILE}u;
    let g = lid / {group}u;
    let q = lid % {group}u;
    let tx = q % {tpn}u;
    let ty = q / {tpn}u;
    let base = g * {slice}u;
    var acc: array<vec4<f32>, {PER}>;
    let rounds = (k + {round_m1}u) / {round}u;
    for (var r = 0u; r < rounds; r++) {{
        let k0 = r * {round}u + g * {BK}u;
        for (var e = q; e < {slice}u; e += {group}u) {{
            let i = {ai};
            let p = {ap};
            let row = row0 + i;
            let kk = k0 + p;
            var v = 0.0;
            if (row < m && kk < k) {{ v = {load_a}; }}
            red[base + p * {TILE}u + i] = v;
        }}
        for (var e = q; e < {slice}u; e += {group}u) {{
            let j = {bj};
            let p = {bp};
            let col = col0 + j;
            let kk = k0 + p;
            var v = 0.0;
            if (kk < k) {{ {load_b} }}
            red[FB + base + p * {TILE}u + j] = v;
        }}
        workgroupBarrier();
        for (var p = 0u; p < {BK}u; p++) {{
            let ra = base + p * {TILE}u + ty;
            let rb = FB + base + p * {TILE}u + tx;
            let bv = vec4<f32>(red[rb], red[rb + {tpn}u], red[rb + {tpn2}u], red[rb + {tpn3}u]);
            acc[0] = fma(vec4<f32>(red[ra]), bv, acc[0]);
            acc[1] = fma(vec4<f32>(red[ra + {tpn}u]), bv, acc[1]);
            acc[2] = fma(vec4<f32>(red[ra + {tpn2}u]), bv, acc[2]);
            acc[3] = fma(vec4<f32>(red[ra + {tpn3}u]), bv, acc[3]);
        }}
        workgroupBarrier();
    }}
    // The groups' tiles, summed in group order below.
    for (var i = 0u; i < {PER}u; i++) {{
        for (var j = 0u; j < {PER}u; j++) {{
            let e = (ty + i * {tpn}u) * {TILE}u + tx + j * {tpn}u;
            let v = acc[i][j];
            red[g * {out_tile}u + e] = v;
        }}
    }}
    workgroupBarrier();
    {part_decl}for (var u = 0u; u < {per_thread}u; u++) {{
        let e = lid + u * {THREADS}u;
        let row = row0 + e / {TILE}u;
        let col = col0 + e % {TILE}u;
        let s = ((red[e] + red[{out_tile}u + e]) + red[{out_tile2}u + e]) + red[{out_tile3}u + e];
        if (row < m && col < {cols}u) {{
        {epi}
        }}
    }}
{after}}}
",
            label = Task::Product { mm: *mm, epilogue: epilogue.clone() }.label(0),
            tpn = TILE / PER,
            tpn2 = 2 * TILE / PER,
            tpn3 = 3 * TILE / PER,
            round_m1 = round - 1,
            per_thread = out_tile / THREADS,
            out_tile2 = 2 * out_tile,
            out_tile3 = 3 * out_tile,
        )
        .unwrap();
    }

    /// A product of at most `NARROW` columns: a row per thread, B in
    /// workgroup memory a chunk of K at a time, each row's sums in K order.
    fn narrow_product(
        &mut self,
        id: usize,
        mm: &Matmul,
        epilogue: &Epilogue,
        (load_a, load_b): (&str, &str),
        (epi, part_decl, after): (&str, &str, &str),
    ) {
        let n = mm.n;
        let (m, k) = (size_expr(mm.m), size_expr(mm.k));
        // The chunk of K whose B rows fill the product memory.
        let chunk = PRODUCT_BYTES as usize / 4 / n.max(1);
        write!(
            self.fns,
            "
// {label}
fn task{id}(t: u32, lid: u32) {{
    let m = {m};
    let k = {k};
    let row = t * {THREADS}u + lid;
    var acc: array<f32, {n}>;
    for (var j = 0u; j < {n}u; j++) {{ acc[j] = 0.0; }}
    for (var k0 = 0u; k0 < k; k0 += {chunk}u) {{
        workgroupBarrier();
        for (var e = lid; e < {chunk_n}u; e += {THREADS}u) {{
            let kk = k0 + e / {n}u;
            let col = e % {n}u;
            var v = 0.0;
            if (kk < k) {{ {load_b} }}
            red[e] = v;
        }}
        workgroupBarrier();
        if (row < m) {{
            let kend = min(k - k0, {chunk}u);
            for (var p = 0u; p < kend; p++) {{
                let kk = k0 + p;
                let av = {load_a};
                for (var j = 0u; j < {n}u; j++) {{ acc[j] = fma(av, red[p * {n}u + j], acc[j]); }}
            }}
        }}
    }}
    {part_decl}for (var col = 0u; col < {n}u; col++) {{
        let s = acc[col];
        if (row < m) {{
        {epi}
        }}
    }}
{after}}}
",
            label = Task::Product { mm: *mm, epilogue: epilogue.clone() }.label(0),
            chunk_n = chunk * n,
        )
        .unwrap();
    }

    /// A convolution product's operand loads (`ConvMap`): each operand's
    /// thread pattern and expression for element (row, kk) of A and (kk, col)
    /// of B, through functions written here; zero outside the image.
    fn conv_loads(
        &mut self,
        id: usize,
        map: ConvMap,
        class: Option<(usize, &StrideClass)>,
        (a, off_a): (&str, usize),
        (b, off_b): (&str, usize),
    ) -> (Load, Load) {
        let (ConvMap::Forward(g) | ConvMap::BackwardData(g) | ConvMap::BackwardWeight(g) | ConvMap::ChannelSums(g)) =
            map;
        let (k, s, pad) = (g.kernel, g.stride, g.padding);
        let (pixels, in_len, out_len) = (g.out_pixels(), g.in_len(), g.out_len());
        // Element (pixel = (image, out-space pixel), (c, ki, kj)) of the patch matrix of `x`.
        let patches = |fns: &mut String, x: &str, off: usize| {
            write!(
                fns,
                "
fn patch{id}(pixel: u32, kk: u32) -> f32 {{
    let b = pixel / {pixels}u;
    let p = pixel % {pixels}u;
    let c = kk / {k2}u;
    let y = i32((p / {ow}u) * {s}u + (kk / {k}u) % {k}u) - {pad};
    let x = i32((p % {ow}u) * {s}u + kk % {k}u) - {pad};
    if (y < 0 || y >= {ih} || x < 0 || x >= {iw}) {{ return 0.0; }}
    return {x}[{off}u + b * {in_len}u + (c * {ih}u + u32(y)) * {iw}u + u32(x)];
}}
",
                k2 = k * k,
                ow = g.out_w,
                ih = g.in_h,
                iw = g.in_w,
            )
            .unwrap();
            format!("patch{id}")
        };
        // Element (channel, (image, pixel)) of an NCHW tensor of `channels` x `pixels`.
        let planes = |x: &str, off: usize, channels: usize, pixels: usize| {
            format!("{x}[{off}u + (kk / {pixels}u) * {}u + row * {pixels}u + kk % {pixels}u]", channels * pixels)
        };
        match map {
            ConvMap::Forward(_) => {
                let patch = patches(&mut self.fns, a, off_a);
                ((ALONG_M, format!("{patch}(row, kk)")), (ALONG_K, format!("{b}[{off_b}u + col * k + kk]")))
            }
            ConvMap::BackwardData(_) => {
                // Stride class c (`StrideClass`): row (image, class pixel
                // (y', x')), kk (o, j, i) for taps (py + j·s, px + i·s),
                // reading a[o, by + y' - j, bx + x' - i].
                // Stride 1 is one class: every tap of every pixel.
                let single = StrideClass::all(&g);
                let (c, cl) = class.unwrap_or((0, &single[0]));
                let (hw, wc, nk, nkx) = (cl.pixels(), cl.cols, (cl.taps_y * cl.taps_x).max(1), cl.taps_x.max(1));
                write!(
                    self.fns,
                    "
fn spread{id}_{c}(pixel: u32, kk: u32) -> f32 {{
    let b = pixel / {hw}u;
    let q = pixel % {hw}u;
    let r = kk % {nk}u;
    let oy = {by} + i32(q / {wc}u) - i32(r / {nkx}u);
    let ox = {bx} + i32(q % {wc}u) - i32(r % {nkx}u);
    if (oy < 0 || oy >= {oh} || ox < 0 || ox >= {ow}) {{ return 0.0; }}
    return {a}[{off_a}u + b * {out_len}u + ((kk / {nk}u) * {oh}u + u32(oy)) * {ow}u + u32(ox)];
}}
",
                    by = cl.by,
                    bx = cl.bx,
                    oh = g.out_h,
                    ow = g.out_w,
                )
                .unwrap();
                // W[o, c, ki, kj] for kk = (o, j, i), col = c.
                let w = format!(
                    "{b}[{off_b}u + (kk / {nk}u) * {ck2}u + col * {k2}u + ({py}u + ((kk % {nk}u) / {nkx}u) * {s}u) * {k}u + {px}u + ((kk % {nk}u) % {nkx}u) * {s}u]",
                    k2 = k * k,
                    ck2 = g.in_c * k * k,
                    py = cl.py,
                    px = cl.px,
                );
                ((ALONG_M, format!("spread{id}_{c}(row, kk)")), (ALONG_K, w))
            }
            ConvMap::BackwardWeight(_) => {
                let patch = patches(&mut self.fns, b, off_b);
                ((ALONG_K, planes(a, off_a, g.out_c, pixels)), (ALONG_K, format!("{patch}(kk, col)")))
            }
            ConvMap::ChannelSums(_) => ((ALONG_K, planes(a, off_a, g.out_c, pixels)), (ALONG_K, "0.0".into())),
        }
    }

    /// A product's epilogue on tensor `c`: its own (accumulate, bias, the
    /// kept pre-activation, activation), then `ops`, each printed from the
    /// element-wise table on the thread's element; every tensor written is
    /// stored once at the end. Returns the code, the loss sums' declarations
    /// and their reductions after the tile.
    fn element_epilogue(
        &mut self,
        class: Option<(usize, &StrideClass)>,
        mm: &Matmul,
        c: TensorId,
        ops: &[Call],
    ) -> (String, String, String) {
        let n = mm.n;
        let raw = mm.pre.unwrap_or(c);
        let mut own = Vec::new();
        if let Some(bias) = mm.bias {
            own.push(Call::BiasAdd { y: raw, width: n, bias });
        }
        if mm.pre.is_some() || mm.act != Activation::Identity {
            own.push(Call::Activation { y: c, x: mm.pre, width: n, act: mm.act });
        }
        // The element's index in tensors shaped like the output: (row, col)
        // of the product, or a convolution's (image, pixel) row and channel
        // column in NCHW.
        let index = match mm.conv {
            Some(ConvMap::Forward(g)) => nchw(g.out_c, g.out_pixels()),
            Some(ConvMap::BackwardData(g)) if let Some((_, cl)) = class => format!(
                "(row / {hw}u) * {}u + col * {}u + ({y0}u + {s}u * ((row % {hw}u) / {wc}u)) * {}u + {x0}u + {s}u * ((row % {hw}u) % {wc}u)",
                g.in_len(),
                g.in_h * g.in_w,
                g.in_w,
                hw = cl.pixels(),
                wc = cl.cols,
                y0 = cl.y0,
                x0 = cl.x0,
                s = g.stride,
            ),
            Some(ConvMap::BackwardData(g)) => nchw(g.in_c, g.in_h * g.in_w),
            _ => format!("row * {n}u + col"),
        };
        let mut el = Element { writer: self, out: (c, mm.c.1), locals: vec![raw], code: String::new() };
        let sum = if mm.accumulate { format!("s + {}", el.global(c, false)) } else { "s".into() };
        writeln!(el.code, "let idx = {index};\n        var {} = {sum};", local(raw)).unwrap();
        let mut losses = Vec::new();
        for op in own.iter().chain(ops) {
            match elementwise::print(op, &mut el) {
                Printed::Body(body) => writeln!(el.code, "        {body}").unwrap(),
                Printed::Loss { which, term } => {
                    writeln!(el.code, "        part{which} += {term};").unwrap();
                    losses.push(which);
                }
            }
        }
        for t in el.locals.clone() {
            let dst = el.global(t, true);
            writeln!(el.code, "        {dst} = {};", local(t)).unwrap();
        }
        let code = el.code.trim_end().to_string();
        let (mut decl, mut after) = (String::new(), String::new());
        for which in losses {
            let p = self.bind(Res::Partials, true);
            write!(decl, "var part{which} = 0.0;\n    ").unwrap();
            // The barrier: other threads may still read the tiles tree_sum reuses.
            write!(
                after,
                "    workgroupBarrier();\n    let total{which} = tree_sum(lid, part{which});\n    if (lid == 0u) {{ {p}[{}u + t] = total{which}; }}\n",
                which * MAX_PARTS
            )
            .unwrap();
        }
        (code, decl, after)
    }

    /// A weight gradient's epilogue: the gradient into the parameters' slots
    /// (the bias gradient from the column of ones), then each op (Adam) on it.
    fn gradient_epilogue(&mut self, mm: &Matmul, epilogue: &Epilogue) -> String {
        let (n, at) = (mm.n, mm.c.1);
        let grads = self.bind(Res::of(mm.c.0), true);
        let mut w = match epilogue.ones {
            Some(bias) => format!("let pi = select({at}u + row * {n}u + col, {bias}u + row, col == {n}u);\n"),
            None => format!("let pi = {at}u + row * {n}u + col;\n"),
        };
        let op = if mm.accumulate { "+=" } else { "=" };
        write!(w, "        {grads}[pi] {op} s;").unwrap();
        for call in &epilogue.ops {
            assert_eq!(*call, Call::Adam, "a weight gradient's epilogue is Adam or nothing");
            let (pm, m, v) = (self.bind(Res::Params, true), self.bind(Res::AdamM, true), self.bind(Res::AdamV, true));
            write!(
                w,
                "
        let u = adam({pm}[pi], {m}[pi], {v}[pi], {grads}[pi]);
        {pm}[pi] = u.x;
        {m}[pi] = u.y;
        {v}[pi] = u.z;"
            )
            .unwrap();
        }
        w
    }

    fn loss_finish(&mut self, id: usize, which: u32, parts: u32) {
        let p = self.bind(Res::Partials, false);
        let s = self.bind(Res::Slots, true);
        let at = which * MAX_PARTS;
        write!(
            self.fns,
            "
fn task{id}(t: u32, lid: u32) {{
    var s = 0.0;
    for (var i = lid; i < {parts}u; i += {THREADS}u) {{ s += {p}[{at}u + i]; }}
    let total = tree_sum(lid, s);
    if (lid == 0u) {{ {s}[2u * st.slot + {which}u] = total; }}
}}
"
        )
        .unwrap();
    }

    fn rows(&mut self, id: usize, stages: &[Call], per_group: u32, store: &[TensorId]) {
        let layout = ChainLayout::of(stages, self.graph, per_group);
        let mut chain = Chain { writer: self, layout, valid: Vec::new(), code: String::new(), per_group };
        for (i, stage) in stages.iter().enumerate() {
            chain.stage(stage);
            // Later stages may read a tensor kept in its buffer at elements
            // other threads wrote (a convolution's blocks of channels are
            // not an element loop's order).
            let buffered = |r: &Res| matches!(r, Res::Tensor(t) if chain.layout.home(*t) == Home::Buffer);
            if i + 1 < stages.len() && access(stage).1.iter().any(buffered) {
                chain.code.push_str("    storageBarrier();\n");
            }
            // A stored tensor leaves workgroup memory after its last write,
            // which frees its range for the stages after its last read.
            let written = |s: &Call, t: TensorId| access(s).1.contains(&Res::Tensor(t));
            for &t in store {
                let last = written(stage, t) && !stages[i + 1..].iter().any(|s| written(s, t));
                if last && chain.layout.home(t) != Home::Buffer {
                    let w = chain.writer.graph.width(t);
                    let dst = chain.writer.bind(Res::Tensor(t), true);
                    let src = chain.shared(t, "r", "e");
                    chain.each(w, &format!("{dst}[(row0 + r) * {w}u + e] = {src};"));
                }
            }
        }
        // Workgroups past the step's rows still write their loss partials (0).
        let mut empty = String::new();
        for stage in stages {
            for r in access(stage).1 {
                if let Res::Part(which) = r {
                    let p = chain.writer.bind(Res::Partials, true);
                    write!(empty, "if (lid == 0u) {{ {p}[{}u + t] = 0.0; }} ", which * MAX_PARTS).unwrap();
                }
            }
        }
        let code = chain.code;
        write!(
            self.fns,
            "
fn task{id}(t: u32, lid: u32) {{
    let row0 = t * {per_group}u;
    if (row0 >= st.rows) {{ {empty}return; }}
    let nrows = min({per_group}u, st.rows - row0);
{code}}}
"
        )
        .unwrap();
    }
}

/// A row chain being written: where its tensors live in workgroup memory
/// (`rowbuf`, per_group rows each) and which of them hold current values.
struct Chain<'g, 'a> {
    writer: &'g mut Gen<'a>,
    layout: ChainLayout,
    valid: Vec<TensorId>,
    code: String,
    per_group: u32,
}

impl Chain<'_, '_> {
    fn width(&self, t: TensorId) -> usize {
        self.writer.graph.width(t)
    }

    /// Element (r, e) of t where the chain keeps it.
    fn shared(&mut self, t: TensorId, r: &str, e: &str) -> String {
        let w = self.width(t);
        match self.layout.home(t) {
            Home::Shared(base) => format!("rowbuf[{base}u + ({r}) * {w}u + ({e})]"),
            Home::Buffer => format!("{}[(row0 + ({r})) * {w}u + ({e})]", self.writer.bind(Res::Tensor(t), true)),
        }
    }

    /// Element (r, e) of t: its workgroup copy when current, else its buffer.
    fn get(&mut self, t: TensorId, r: &str, e: &str) -> String {
        if self.valid.contains(&t) {
            self.shared(t, r, e)
        } else {
            let name = self.writer.bind(Res::Tensor(t), false);
            format!("{name}[(row0 + ({r})) * {}u + ({e})]", self.width(t))
        }
    }

    /// Makes t's workgroup copy current before a stage updates it in place.
    fn load(&mut self, t: TensorId) {
        if self.valid.contains(&t) {
            return;
        }
        if self.layout.home(t) == Home::Buffer {
            return self.valid.push(t);
        }
        let w = self.width(t);
        let src = self.get(t, "r", "e");
        let dst = self.shared(t, "r", "e");
        self.each(w, &format!("{dst} = {src};"));
        self.valid.push(t);
    }

    /// Marks t written in full by the coming stage.
    fn written(&mut self, t: TensorId) {
        if !self.valid.contains(&t) {
            self.valid.push(t);
        }
    }

    /// A loop over this workgroup's rows x `width`, then a barrier.
    fn each(&mut self, width: usize, body: &str) {
        writeln!(
            self.code,
            "    for (var i = lid; i < nrows * {width}u; i += {THREADS}u) {{\n        let r = i / {width}u;\n        let e = i % {width}u;\n        {body}\n    }}\n    workgroupBarrier();"
        )
        .unwrap();
    }

    fn stage(&mut self, call: &Call) {
        match call {
            Call::Matmul(m) if m.conv.is_some() => return self.conv(m, &[]),
            Call::Matmul(m) => return self.product(m),
            Call::Fused(tasks) => {
                let [Task::Product { mm, epilogue }] = &tasks[..] else { unreachable!("{call:?} is not a stage") };
                return self.conv(mm, &epilogue.ops);
            }
            _ => {}
        }
        let width = elementwise::width(call).unwrap_or_else(|| unreachable!("{call:?} is not row-local"));
        match elementwise::print(call, self) {
            Printed::Body(body) => self.each(width, &body),
            Printed::Loss { which, term } => {
                let p = self.writer.bind(Res::Partials, true);
                writeln!(
                    self.code,
                    "    {{\n        var s = 0.0;\n        for (var i = lid; i < nrows * {width}u; i += {THREADS}u) {{\n        let r = i / {width}u;\n        let e = i % {width}u;\n        s += {term};\n        }}\n        let total = tree_sum(lid, s);\n        if (lid == 0u) {{ {p}[{}u + t] = total; }}\n    }}",
                    which * MAX_PARTS
                )
                .unwrap();
            }
        }
    }

    /// A convolution (or a transposed layer's forward, `ConvMap::BackwardData`)
    /// on this workgroup's images, a thread per output pixel and block of
    /// up to 8 channels (each input value read once for the block, its
    /// weights the same for neighbouring threads), with the layer's epilogue
    /// and then `ops` on each value where it is (`Place`): what lets a chain
    /// run several layers of an image without leaving the workgroup.
    fn conv(&mut self, m: &Matmul, ops: &[Call]) {
        let (Buf::Tensor(x), Buf::Tensor(y)) = (m.a.0, m.c.0) else { unreachable!("conv stages are on tensors") };
        // Tensors the ops update in place, current before the loop (a copy is a loop of its own).
        for op in ops {
            let (reads, writes) = access(op);
            for r in reads.into_iter().filter(|r| writes.contains(r)) {
                if let Res::Tensor(t) = r {
                    self.load(t);
                }
            }
        }
        let p = self.writer.bind(Res::Params, false);
        let w0 = m.b.1;
        let input = self.get(x, "r", "xi");
        let (Some(ConvMap::Forward(g) | ConvMap::BackwardData(g)), MatmulForm::Nt | MatmulForm::Nn) = (m.conv, m.form)
        else {
            unreachable!("conv stages are forward or input-gradient maps")
        };
        let (k, s, pad) = (g.kernel, g.stride, g.padding);
        let forward = matches!(m.conv, Some(ConvMap::Forward(_)));
        // Output channels and pixels, and the weight stride between neighbouring output channels.
        let (channels, pixels, w_step) =
            if forward { (g.out_c, g.out_pixels(), g.patch()) } else { (g.in_c, g.in_h * g.in_w, k * k) };
        let block = [8, 4, 2, 1].into_iter().find(|b| channels % b == 0).unwrap();
        let items = channels / block * pixels;
        let taps = if forward {
            format!(
                "let y0 = i32((q / {ow}u) * {s}u) - {pad};
        let x0 = i32((q % {ow}u) * {s}u) - {pad};
        for (var c = 0u; c < {ic}u; c++) {{
            for (var ky = 0u; ky < {k}u; ky++) {{
                let iy = y0 + i32(ky);
                if (iy < 0 || iy >= {ih}) {{ continue; }}
                for (var kx = 0u; kx < {k}u; kx++) {{
                    let ix = x0 + i32(kx);
                    if (ix < 0 || ix >= {iw}) {{ continue; }}
                    let xi = (c * {ih}u + u32(iy)) * {iw}u + u32(ix);
                    let xv = {input};
                    let wi = {w0}u + ((ch0 * {ic}u + c) * {k}u + ky) * {k}u + kx;
                    for (var j = 0u; j < {block}u; j++) {{ acc[j] = fma(xv, {p}[wi + j * {w_step}u], acc[j]); }}
                }}
            }}
        }}",
                ow = g.out_w,
                ic = g.in_c,
                ih = g.in_h,
                iw = g.in_w,
            )
        } else {
            // In-space pixel (iy, ix) takes tap (ky, kx) from out-space
            // pixel ((iy + pad - ky) / s, ...) where s divides it. Threads
            // walk the pixels class by class (`StrideClass`), so that
            // neighbouring ones take the same taps.
            let mut pick = String::new();
            let mut start = 0;
            for (c, cl) in StrideClass::all(&g).iter().enumerate() {
                let next = start + cl.pixels();
                let cond = if c == 0 { format!("if (q < {next}u) ") } else { format!(" else if (q < {next}u) ") };
                write!(
                    pick,
                    "{cond}{{ iy = {y0}u + {s}u * ((q - {start}u) / {cols}u); ix = {x0}u + {s}u * ((q - {start}u) % {cols}u); }}",
                    y0 = cl.y0,
                    x0 = cl.x0,
                    cols = cl.cols,
                )
                .unwrap();
                start = next;
            }
            format!(
                "var iy = 0u;
        var ix = 0u;
        {pick}
        pix = iy * {iw}u + ix;
        let ty = iy + {pad}u;
        let tx = ix + {pad}u;
        for (var o = 0u; o < {oc}u; o++) {{
            for (var ky = ty % {s}u; ky < {k}u && ky <= ty; ky += {s}u) {{
                let oy = (ty - ky) / {s}u;
                if (oy >= {oh}u) {{ continue; }}
                for (var kx = tx % {s}u; kx < {k}u && kx <= tx; kx += {s}u) {{
                    let ox = (tx - kx) / {s}u;
                    if (ox >= {ow}u) {{ continue; }}
                    let xi = (o * {oh}u + oy) * {ow}u + ox;
                    let xv = {input};
                    let wi = {w0}u + ((o * {ic}u + ch0) * {k}u + ky) * {k}u + kx;
                    for (var j = 0u; j < {block}u; j++) {{ acc[j] = fma(xv, {p}[wi + j * {w_step}u], acc[j]); }}
                }}
            }}
        }}",
                iw = g.in_w,
                oc = g.out_c,
                oh = g.out_h,
                ow = g.out_w,
                ic = g.in_c,
            )
        };
        let mut body = String::from("var v = acc[j];");
        if let Some(bias) = m.bias {
            write!(body, " v += {p}[{bias}u + ch];").unwrap();
        }
        if let Some(pre) = m.pre {
            self.written(pre);
            write!(body, " {} = v;", self.shared(pre, "r", "e")).unwrap();
        }
        self.written(y);
        write!(body, " {} = activate(v, {}u);", self.shared(y, "r", "e"), m.act.code()).unwrap();
        let mut losses = Vec::new();
        for op in ops {
            match elementwise::print(op, self) {
                Printed::Body(b) => write!(body, "\n            {b}").unwrap(),
                Printed::Loss { which, term } => {
                    write!(body, "\n            part{which} += {term};").unwrap();
                    losses.push(which);
                }
            }
        }
        let c = &mut self.code;
        for which in &losses {
            writeln!(c, "    var part{which} = 0.0;").unwrap();
        }
        writeln!(
            c,
            "    for (var i = lid; i < nrows * {items}u; i += {THREADS}u) {{
        let r = i / {items}u;
        let ch0 = ((i % {items}u) / {pixels}u) * {block}u;
        let q = i % {pixels}u;
        var pix = q;
        // Zeroed by hand, as in the row products (SwiftShader).
        var acc: array<f32, {block}>;
        for (var j = 0u; j < {block}u; j++) {{ acc[j] = 0.0; }}
        {taps}
        for (var j = 0u; j < {block}u; j++) {{
            let ch = ch0 + j;
            let e = ch * {pixels}u + pix;
            {body}
        }}
    }}
    workgroupBarrier();"
        )
        .unwrap();
        for which in losses {
            let p = self.writer.bind(Res::Partials, true);
            writeln!(
                self.code,
                "    {{\n        let total = tree_sum(lid, part{which});\n        if (lid == 0u) {{ {p}[{}u + t] = total; }}\n    }}",
                which * MAX_PARTS
            )
            .unwrap();
        }
    }

    /// out[r][o] = Σ_s in[r][s]·W(o, s) for this workgroup's rows: each output
    /// by `lanes` threads that split s and add their sums in a fixed tree.
    fn product(&mut self, m: &Matmul) {
        let (Buf::Tensor(x), Buf::Tensor(y)) = (m.a.0, m.c.0) else { unreachable!("row products are on tensors") };
        let Size::Fixed(sum) = m.k else { unreachable!("row products have a fixed K") };
        let outs = m.n;
        let p = self.writer.bind(Res::Params, false);
        let w = match m.form {
            MatmulForm::Nt => format!("{p}[{}u + o * {sum}u + s]", m.b.1),
            _ => format!("{p}[{}u + s * {outs}u + o]", m.b.1),
        };
        // Rows past nrows read the last row again: in bounds, and discarded.
        let input = self.get(x, "min(r, nrows - 1u)", "s");
        if m.accumulate {
            self.load(y);
        }
        self.written(y);
        let out = self.shared(y, "r", "o");
        let mut epi = String::from("var v = sum;");
        if m.accumulate {
            write!(epi, " v += {out};").unwrap();
        }
        if let Some(bias) = m.bias {
            write!(epi, " v += {p}[{bias}u + o];").unwrap();
        }
        if let Some(pre) = m.pre {
            self.written(pre);
            write!(epi, " {} = v;", self.shared(pre, "r", "o")).unwrap();
        }
        write!(epi, " {out} = activate(v, {}u);", m.act.code()).unwrap();
        let rows = self.per_group;
        let lanes = lanes(outs);
        let c = &mut self.code;
        if lanes == 1 {
            writeln!(
                c,
                "    for (var o = lid; o < {outs}u; o += {THREADS}u) {{
        // Zeroed by hand: SwiftShader (Chromium's WebGPU without a GPU) kept
        // the last pass's sums in a `var` declared in a loop.
        var acc: array<f32, {rows}>;
        for (var r = 0u; r < {rows}u; r++) {{ acc[r] = 0.0; }}
        for (var s = 0u; s < {sum}u; s++) {{
            let w = {w};
            for (var r = 0u; r < {rows}u; r++) {{ acc[r] = fma({input}, w, acc[r]); }}
        }}
        for (var r = 0u; r < nrows; r++) {{ let sum = acc[r]; {epi} }}
    }}
    workgroupBarrier();"
            )
            .unwrap();
            return;
        }
        // Nt: a output's lanes are neighbours (its weights are a row);
        // Nn: lanes are a pass apart (neighbouring outputs read neighbouring weights).
        let per_pass = THREADS / lanes;
        let (lane, o, stride) = match m.form {
            MatmulForm::Nt => (format!("lid % {lanes}u"), format!("lid / {lanes}u"), 1),
            _ => (format!("lid / {per_pass}u"), format!("lid % {per_pass}u"), per_pass),
        };
        writeln!(
            c,
            "    {{
        let lane = {lane};
        let o = {o};
        var acc: array<f32, {rows}>;
        if (o < {outs}u) {{
            for (var s = lane; s < {sum}u; s += {lanes}u) {{
                let w = {w};
                for (var r = 0u; r < {rows}u; r++) {{ acc[r] = fma({input}, w, acc[r]); }}
            }}
        }}
        for (var r = 0u; r < {rows}u; r++) {{
            red[lid] = acc[r];
            workgroupBarrier();
            for (var h = {half}u; h > 0u; h >>= 1u) {{
                if (lane < h) {{ red[lid] += red[lid + h * {stride}u]; }}
                workgroupBarrier();
            }}
            if (lane == 0u && o < {outs}u && r < nrows) {{ let sum = red[lid]; {epi} }}
            workgroupBarrier();
        }}
    }}",
            half = lanes / 2,
        )
        .unwrap();
    }
}

impl Place for Chain<'_, '_> {
    fn read(&mut self, t: TensorId, shift: usize) -> String {
        self.get(t, "r", &column(shift))
    }

    fn write(&mut self, t: TensorId, shift: usize) -> String {
        self.written(t);
        self.shared(t, "r", &column(shift))
    }

    fn update(&mut self, t: TensorId, shift: usize) -> String {
        self.load(t);
        self.shared(t, "r", &column(shift))
    }

    fn param(&mut self, at: usize) -> String {
        format!("{}[{at}u + e]", self.writer.bind(Res::Params, false))
    }

    fn flat(&self, width: usize) -> String {
        format!("(row0 + r) * {width}u + e")
    }
}

/// Column e + shift.
fn column(shift: usize) -> String {
    if shift == 0 { "e".into() } else { format!("{shift}u + e") }
}

/// A product epilogue being written: the thread's element (row, col) of
/// tensors shaped like the output (`out`, at its offset); the tensors it has
/// written so far are locals, stored at the end.
struct Element<'g, 'a> {
    writer: &'g mut Gen<'a>,
    out: (TensorId, usize),
    locals: Vec<TensorId>,
    code: String,
}

fn local(t: TensorId) -> String {
    format!("v{}", t.0)
}

impl Element<'_, '_> {
    fn global(&mut self, t: TensorId, write: bool) -> String {
        let name = self.writer.bind(Res::Tensor(t), write);
        let at = if t == self.out.0 { self.out.1 } else { 0 };
        format!("{name}[{at}u + idx]")
    }
}

impl Place for Element<'_, '_> {
    fn read(&mut self, t: TensorId, shift: usize) -> String {
        assert_eq!(shift, 0, "a product epilogue runs pointwise ops only");
        if self.locals.contains(&t) { local(t) } else { self.global(t, false) }
    }

    fn write(&mut self, t: TensorId, shift: usize) -> String {
        assert_eq!(shift, 0, "a product epilogue runs pointwise ops only");
        if !self.locals.contains(&t) {
            writeln!(self.code, "        var {}: f32;", local(t)).unwrap();
            self.locals.push(t);
        }
        local(t)
    }

    fn update(&mut self, t: TensorId, shift: usize) -> String {
        if !self.locals.contains(&t) {
            let v = self.read(t, shift);
            writeln!(self.code, "        var {} = {v};", local(t)).unwrap();
            self.locals.push(t);
        }
        local(t)
    }

    fn param(&mut self, at: usize) -> String {
        format!("{}[{at}u + col]", self.writer.bind(Res::Params, false))
    }

    fn flat(&self, _width: usize) -> String {
        // Pointwise ops have the output's shape: their flat index is the output's.
        "idx".into()
    }
}

/// Index of (row = (image, pixel), col = channel) in an NCHW tensor.
fn nchw(channels: usize, pixels: usize) -> String {
    format!("(row / {pixels}u) * {}u + col * {pixels}u + row % {pixels}u", channels * pixels)
}

/// Threads per output of a row product with `outs` outputs: a power of two
/// that keeps most of the workgroup busy.
fn lanes(outs: usize) -> u32 {
    let mut lanes = 1;
    while lanes < 64 && outs * lanes as usize * 2 <= THREADS as usize {
        lanes *= 2;
    }
    lanes
}
