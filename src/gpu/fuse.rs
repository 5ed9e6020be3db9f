//! Rewrites of the lowered call list. Each keeps the results of the unfused
//! list, whose calls are the CPU interpreter's functions one for one, so the
//! CPU reference of a fused kernel is the sequence it replaced (the
//! GPU-vs-CPU step tests run both, `tests/gpu_steps.rs`).
//!
//! By default the calls become generated kernels (`gpu::fused`): weight
//! gradients and loss folds sink to the end of the step, a large product
//! takes the element-wise ops that follow it into its epilogue, runs of row-local calls become one row-owned kernel, and the
//! weight gradients of all layers become one grouped kernel with Adam in
//! its epilogue. Every rewrite checks the adapter's limits and otherwise
//! leaves the calls as they were.

use super::elementwise;
use super::fused::{self, REDUCE_BYTES};
use super::ir::{Buf, Call, ConvMap, Epilogue, Matmul, Res, Size, Task, access, size};
use super::shaders::{Kernel, MAX_PARTS, MatmulForm, MatmulVariant};
use crate::model::{Activation, Graph, TensorId};

/// Which rewrites run: all by default; `NONE` turns them off (the unfused
/// list, one dispatch per CPU function, products on the naive variant) and
/// `TILES` keeps the family kernels (epilogues, tiles and split-K, no
/// generated kernels), for debugging and A/B runs (`GpuOptions::with_env`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Fusion {
    pub epilogues: bool,
    pub tiles: bool,
    /// Workgroups a family product should have: fewer, and split-K adds
    /// slices along K (0: no splitting).
    pub split_k: u32,
    /// Generated kernels (`gpu::fused`); the three above apply without them.
    pub kernels: bool,
    /// Convolutions as generated products (implicit GEMM) where generated
    /// kernels run; otherwise the direct kernels of `shaders/conv.wgsl`.
    pub conv_products: bool,
    /// Convolution products with weights small enough as stages of row
    /// chains (`fused::conv_stage`): a workgroup takes its images through
    /// several layers, trading the batch's parallelism for dispatches.
    pub conv_rows: bool,
}

impl Fusion {
    pub const ALL: Fusion = Fusion {
        epilogues: true,
        tiles: true,
        split_k: SPLIT_K_TARGET,
        kernels: true,
        conv_products: true,
        conv_rows: true,
    };
    pub const TILES: Fusion = Fusion { kernels: false, ..Fusion::ALL };
    pub const NONE: Fusion =
        Fusion { epilogues: false, tiles: false, split_k: 0, kernels: false, conv_products: false, conv_rows: false };
}

impl Default for Fusion {
    fn default() -> Fusion {
        Fusion::ALL
    }
}

/// The split-K target: on an H200, 512 and 1024 workgroups beat 256 by 4-5%
/// at batch 128 and 1024 (two rounds of 5 epochs each).
const SPLIT_K_TARGET: u32 = 512;

/// What the rewrites need to know besides the calls.
pub struct Env<'a> {
    pub graph: &'a Graph,
    /// The most rows a step has.
    pub max_rows: usize,
    pub limits: &'a wgpu::Limits,
    pub param_count: usize,
    /// Tensors read after the program (by the host or another program).
    pub keep: Vec<TensorId>,
}

/// The rewrites of `fusion` for a program on `env`.
pub fn fuse(calls: Vec<Call>, fusion: Fusion, env: &Env) -> Vec<Call> {
    let mut calls = calls;
    let generated = fusion.kernels && generated_kernels_fit(env.limits);
    if generated && fusion.conv_products {
        calls = calls.into_iter().map(|c| conv_product(c, env)).collect();
    }
    if fusion.epilogues {
        calls = epilogues(calls, generated);
    }
    if generated {
        calls = sink_gradients(calls);
        calls = absorb(calls, env);
        calls = row_chains(calls, env, fusion.conv_rows);
        calls = count_parts(calls, env);
        calls = group_gradients(calls, env);
        return products(calls);
    }
    if fusion.tiles {
        calls = tiles(calls, env.max_rows, env.limits);
    }
    if fusion.split_k > 0 {
        calls = split_k(calls, env.max_rows, fusion.split_k);
    }
    calls
}

/// A convolution call as the product over its implicit matrices
/// (`ConvMap`), where its workgroups fit in a dispatch; other calls as they are.
fn conv_product(call: Call, env: &Env) -> Call {
    let Call::Conv { kernel, geom: g, a, x, out, out_at, weight, bias, act } = call else { return call };
    let (map, b) = match kernel {
        Kernel::Conv2dForward => (ConvMap::Forward(g), (Buf::Params, weight)),
        Kernel::Conv2dBackwardData => (ConvMap::BackwardData(g), (Buf::Params, weight)),
        Kernel::Conv2dBackwardWeight => (ConvMap::BackwardWeight(g), (Buf::Tensor(x.expect("the in-space input")), 0)),
        // Only the column of ones: B is never read.
        Kernel::ChannelSums => (ConvMap::ChannelSums(g), (Buf::Tensor(a), 0)),
        _ => return call,
    };
    let mm = Matmul::conv(map, [(Buf::Tensor(a), 0), b, (out, out_at)], bias, act);
    let groups = Task::Product { epilogue: own_epilogue(&mm), mm }.groups(env.max_rows);
    if groups <= env.limits.max_compute_workgroups_per_dimension { Call::Matmul(mm) } else { call }
}

/// The epilogue a product has of its own: a channel sum is all ones column.
pub fn own_epilogue(mm: &Matmul) -> Epilogue {
    let ones = matches!(mm.conv, Some(ConvMap::ChannelSums(_))).then_some(mm.c.1);
    Epilogue { ops: Vec::new(), ones }
}

/// Whether an adapter can run generated products (workgroups of 256 and
/// 16 KiB, up to 6 storage bindings): WebGPU's defaults, so every adapter.
fn generated_kernels_fit(limits: &wgpu::Limits) -> bool {
    limits.max_compute_invocations_per_workgroup >= fused::THREADS
        && limits.max_compute_workgroup_storage_size >= fused::PRODUCT_BYTES
        && limits.max_storage_buffers_per_shader_stage >= 6
}

/// Whether `first`, run after `second` instead of before, could change a result.
fn conflict(first: &Call, second: &Call) -> bool {
    let (r1, w1) = access(first);
    let (r2, w2) = access(second);
    w1.iter().any(|x| r2.contains(x) || w2.contains(x)) || r1.iter().any(|x| w2.contains(x))
}

/// Calls whose results only Adam or the host read.
fn sinkable(call: &Call) -> bool {
    match call {
        Call::Matmul(m) => m.c.0 == Buf::Grads,
        Call::Conv { out, .. } => *out == Buf::Grads,
        Call::ColumnSums { .. } | Call::LossFinish { .. } => true,
        _ => false,
    }
}

/// Weight gradients and loss folds move to just before Adam (or the end),
/// past every call they do not conflict with, keeping their order: there
/// they can share one dispatch.
fn sink_gradients(calls: Vec<Call>) -> Vec<Call> {
    let end = calls.iter().position(|c| matches!(c, Call::Adam)).unwrap_or(calls.len());
    let mut stays = vec![true; end];
    for i in (0..end).rev() {
        if sinkable(&calls[i]) && (i + 1..end).filter(|&j| stays[j]).all(|j| !conflict(&calls[i], &calls[j])) {
            stays[i] = false;
        }
    }
    let mut calls = calls;
    let tail = calls.split_off(end);
    let (mut kept, mut sunk) = (Vec::new(), Vec::new());
    for (call, stays) in calls.into_iter().zip(stays) {
        if stays { kept.push(call) } else { sunk.push(call) }
    }
    kept.extend(sunk);
    kept.extend(tail);
    kept
}

/// Bytes of workgroup memory of a kernel of `tasks`.
fn kernel_bytes(tasks: &[Task], graph: &Graph) -> u32 {
    let product = tasks.iter().any(|t| matches!(t, Task::Product { .. }));
    let reduce = tasks.iter().any(|t| !matches!(t, Task::Product { .. }));
    let rows = tasks
        .iter()
        .filter_map(|t| match t {
            Task::Rows { stages, per_group, .. } => {
                Some(4 * fused::ChainLayout::of(stages, graph, *per_group).floats as u32)
            }
            _ => None,
        })
        .max()
        .unwrap_or(0);
    // Reductions share a product's tiles where there is one (`fused::generate`).
    (if product {
        fused::PRODUCT_BYTES
    } else if reduce {
        REDUCE_BYTES
    } else {
        0
    }) + rows
}

/// Whether a kernel of `tasks` fits the adapter: bindings, memory, workgroups.
/// Counted from the IR: no WGSL is written to measure.
fn fits(tasks: &[Task], env: &Env) -> bool {
    let groups: u32 = tasks.iter().map(|t| t.groups(env.max_rows)).sum();
    fused::bindings(tasks, env.graph).len() as u32 <= env.limits.max_storage_buffers_per_shader_stage
        && kernel_bytes(tasks, env.graph) <= env.limits.max_compute_workgroup_storage_size
        && groups <= env.limits.max_compute_workgroups_per_dimension
}

/// A large product (not row-local) on a tensor takes the element-wise ops
/// that follow it into its epilogue (`Epilogue::ops`) while each is
/// pointwise on the product's elements, reads what the product or an op
/// before it wrote, writes nothing else the product reads, and the kernel
/// fits: an activation backward, the output layer's loss and its gradient.
fn absorb(calls: Vec<Call>, env: &Env) -> Vec<Call> {
    let mut out = Vec::with_capacity(calls.len());
    let mut i = 0;
    while i < calls.len() {
        let call = &calls[i];
        i += 1;
        let Call::Matmul(m) = call else {
            out.push(call.clone());
            continue;
        };
        let task = |ops: Vec<Call>| Task::Product { mm: *m, epilogue: Epilogue { ops, ..own_epilogue(m) } };
        let mut ops: Vec<Call> = Vec::new();
        // Thin products take their ops as stages of a row chain; a
        // convolution keeps them with it in either form.
        if let (Buf::Tensor(c), 0) = m.c
            && m.covers(env.graph)
            && (!fused::row_local(call) || m.conv.is_some())
        {
            let (product_reads, mut written) = access(call);
            while let Some(next) = calls.get(i) {
                let (reads, writes) = access(next);
                let takes = elementwise::pointwise(next, env.graph)
                    && elementwise::width(next) == Some(env.graph.width(c))
                    && reads.iter().any(|r| written.contains(r))
                    && !writes.iter().any(|w| *w != Res::Tensor(c) && product_reads.contains(w))
                    && {
                        let candidate = task([ops.as_slice(), std::slice::from_ref(next)].concat());
                        let partials =
                            !matches!(next, Call::LossPartials { .. }) || candidate.groups(env.max_rows) <= MAX_PARTS;
                        partials && fits(&[candidate], env)
                    };
                if !takes {
                    break;
                }
                written.extend(writes);
                ops.push(next.clone());
                i += 1;
            }
        }
        out.push(if ops.is_empty() { call.clone() } else { Call::Fused(vec![task(ops)]) });
    }
    out
}

/// Rows per workgroup of a row chain: enough workgroups at small batches,
/// fewer weight reads at large ones.
fn rows_per_group(max_rows: usize) -> u32 {
    match max_rows {
        0..256 => 1,
        256..512 => 2,
        _ => 4,
    }
}

/// The row chain of `stages`, storing what `rest` or the host reads, if it fits.
fn chain(stages: &[Call], rest: &[Call], env: &Env) -> Option<Task> {
    let read_later: Vec<Res> = rest.iter().flat_map(|c| access(c).0).collect();
    let mut store = Vec::new();
    for s in stages {
        for r in access(s).1 {
            if let Res::Tensor(t) = r
                && !store.contains(&t)
                && (read_later.contains(&r) || env.keep.contains(&t))
            {
                store.push(t);
            }
        }
    }
    let mut per_group = rows_per_group(env.max_rows);
    loop {
        let task = Task::Rows { stages: stages.to_vec(), per_group, store: store.clone() };
        if fits(std::slice::from_ref(&task), env) {
            return Some(task);
        }
        if per_group == 1 {
            return None;
        }
        per_group /= 2;
    }
}

/// Runs of row-local calls become one row-owned kernel each (the longest
/// run from each start that fits the adapter).
fn row_chains(calls: Vec<Call>, env: &Env, convs: bool) -> Vec<Call> {
    let stage = |c: &Call| fused::row_local(c) && (convs || !fused::conv_stage(c));
    let mut out = Vec::with_capacity(calls.len());
    let mut i = 0;
    while i < calls.len() {
        let mut best = None;
        let mut j = i;
        while j < calls.len() && stage(&calls[j]) {
            match chain(&calls[i..=j], &calls[j + 1..], env) {
                Some(task) => best = Some((j, task)),
                None => break,
            }
            j += 1;
        }
        match best {
            Some((j, task)) if j > i => {
                out.push(Call::Fused(vec![task]));
                i = j + 1;
            }
            _ => {
                out.push(calls[i].clone());
                i += 1;
            }
        }
    }
    out
}

/// Each loss fold learns how many partials its loss's fused kernel wrote.
fn count_parts(mut calls: Vec<Call>, env: &Env) -> Vec<Call> {
    for i in 0..calls.len() {
        let Call::LossFinish { which, .. } = calls[i] else { continue };
        let producer = calls[..i].iter().rev().find(|c| access(c).1.contains(&Res::Part(which)));
        let parts = match producer {
            Some(Call::Fused(tasks)) => {
                tasks.iter().find(|t| access(&Call::Fused(vec![(*t).clone()])).1.contains(&Res::Part(which)))
            }
            _ => None,
        }
        .map(|t| t.groups(env.max_rows));
        if let Call::LossFinish { parts: p, .. } = &mut calls[i] {
            *p = parts.or(*p);
        }
    }
    calls
}

/// The weight gradients and loss folds at the end of the step (before Adam)
/// become one grouped kernel: a product per layer with the bias gradient as
/// a column of ones, each loss fold a workgroup. When these products write
/// every parameter's gradient exactly once, Adam runs in their epilogue and
/// its own dispatch goes. Kernels that outgrow the adapter's bindings are
/// split (and Adam stays separate).
fn group_gradients(calls: Vec<Call>, env: &Env) -> Vec<Call> {
    let end = calls.iter().position(|c| matches!(c, Call::Adam)).unwrap_or(calls.len());
    let mut start = end;
    while start > 0 && sinkable(&calls[start - 1]) {
        start -= 1;
    }
    let run = &calls[start..end];
    let mut tasks = Vec::new();
    let mut others = Vec::new();
    let mut paired = vec![false; run.len()];
    let channel_sums = |c: &Call| matches!(c, Call::Matmul(m) if matches!(m.conv, Some(ConvMap::ChannelSums(_))));
    for (i, call) in run.iter().enumerate() {
        match call {
            Call::Matmul(m) if m.form == MatmulForm::Tn && m.c.0 == Buf::Grads && !channel_sums(call) => {
                // The bias gradient sums the same `a` over the same rows: a column of ones.
                let bias = run.iter().enumerate().find_map(|(j, c)| match c {
                    &Call::ColumnSums { a, width, at }
                        if !paired[j] && m.a == (Buf::Tensor(a), 0) && m.m == Size::Fixed(width) =>
                    {
                        Some((j, at))
                    }
                    Call::Matmul(sums)
                        if !paired[j] && channel_sums(c) && m.conv.is_some() && (sums.a, sums.m) == (m.a, m.m) =>
                    {
                        Some((j, sums.c.1))
                    }
                    _ => None,
                });
                if let Some((j, _)) = bias {
                    paired[j] = true;
                }
                let epilogue = Epilogue { ops: Vec::new(), ones: bias.map(|(_, at)| at) };
                tasks.push(Task::Product { mm: *m, epilogue });
            }
            &Call::LossFinish { which, parts: Some(parts), .. } => tasks.push(Task::LossFinish { which, parts }),
            _ => others.push(i),
        }
    }
    // Channel sums no weight gradient took (a transposed layer's bias), each a task.
    others.retain(|&i| match &run[i] {
        Call::Matmul(mm) if channel_sums(&run[i]) && !paired[i] => {
            tasks.push(Task::Product { mm: *mm, epilogue: own_epilogue(mm) });
            false
        }
        _ => true,
    });
    let others: Vec<Call> = others.into_iter().filter(|&i| !paired[i]).map(|i| run[i].clone()).collect();
    if tasks.is_empty() {
        return calls;
    }
    // Adam fuses when the products cover the parameters exactly and nothing else writes gradients.
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut exact = others.iter().all(|c| !access(c).1.contains(&Res::Grads))
        && calls[..start].iter().all(|c| !access(c).1.contains(&Res::Grads));
    for task in &tasks {
        if let Task::Product { mm, epilogue: Epilogue { ones: bias, .. } } = task {
            exact &= !mm.accumulate;
            let (rows, cols) = (size(mm.m, env.max_rows), mm.n);
            ranges.push((mm.c.1, rows * cols));
            if let Some(b) = bias {
                ranges.push((*b, rows));
            }
        }
    }
    ranges.sort_unstable();
    let mut next = 0;
    for (at, len) in ranges {
        exact &= at == next;
        next = at + len;
    }
    exact &= next == env.param_count && end < calls.len();
    // Pack the tasks into as few kernels as the limits allow.
    let mut kernels: Vec<Vec<Task>> = Vec::new();
    for task in tasks {
        let mut candidate = kernels.last().cloned().unwrap_or_default();
        candidate.push(task.clone());
        match kernels.last_mut() {
            Some(last) if fits(&candidate, env) => *last = candidate,
            _ => kernels.push(vec![task]),
        }
    }
    let adam = exact && kernels.len() == 1 && {
        let mut with_adam = kernels[0].clone();
        set_adam(&mut with_adam);
        fits(&with_adam, env)
    };
    if adam {
        set_adam(&mut kernels[0]);
    }
    let mut out: Vec<Call> = calls[..start].to_vec();
    out.extend(others);
    out.extend(kernels.into_iter().map(Call::Fused));
    out.extend(calls[end..].iter().filter(|c| !(adam && matches!(c, Call::Adam))).cloned());
    out
}

fn set_adam(tasks: &mut [Task]) {
    for task in tasks {
        if let Task::Product { mm, epilogue } = task
            && mm.c.0 == Buf::Grads
        {
            epilogue.ops = vec![Call::Adam];
        }
    }
}

/// Every remaining product becomes a generated one with its own epilogue.
fn products(calls: Vec<Call>) -> Vec<Call> {
    calls
        .into_iter()
        .map(|call| match call {
            Call::Matmul(mm) => Call::Fused(vec![Task::Product { epilogue: own_epilogue(&mm), mm }]),
            call => call,
        })
        .collect()
}

/// A product followed by a bias add and an activation of its output becomes
/// one product with the bias and activation in its epilogue (the epilogue
/// applies them in the CPU's order: sum, + bias, activation). With
/// `keep_pre` (generated products) an activation out of place joins too:
/// the product stores the pre-activation and writes the activation's output.
fn epilogues(calls: Vec<Call>, keep_pre: bool) -> Vec<Call> {
    let mut out: Vec<Call> = Vec::with_capacity(calls.len());
    for call in calls {
        // A convolution's activation, into the kernel writing its output.
        if let (Some(Call::Conv { out: prev_out, act: prev_act, kernel, .. }), Call::Activation { y, x: None, act, .. }) =
            (out.last_mut(), &call)
            && *prev_out == Buf::Tensor(*y)
            && *prev_act == Activation::Identity
            && matches!(kernel, Kernel::Conv2dForward | Kernel::Conv2dBackwardData)
        {
            *prev_act = *act;
            continue;
        }
        let Some(Call::Matmul(prev)) = out.last_mut() else {
            out.push(call);
            continue;
        };
        let plain_output = |y| !prev.accumulate && prev.c == (Buf::Tensor(y), 0);
        match call {
            Call::BiasAdd { y, bias, .. }
                if plain_output(y) && prev.bias.is_none() && prev.act == Activation::Identity =>
            {
                prev.bias = Some(bias);
            }
            Call::Activation { y, x: None, act, .. } if plain_output(y) && prev.act == Activation::Identity => {
                prev.act = act
            }
            Call::Activation { y, x: Some(x), act, .. }
                if keep_pre && plain_output(x) && prev.act == Activation::Identity =>
            {
                (prev.pre, prev.c, prev.act) = (Some(x), (Buf::Tensor(y), 0), act);
            }
            call => out.push(call),
        }
    }
    out
}

/// Each product gets the tiled variant its shape and the adapter's limits
/// call for (`MatmulVariant::for_shape`).
fn tiles(calls: Vec<Call>, max_rows: usize, limits: &wgpu::Limits) -> Vec<Call> {
    calls
        .into_iter()
        .map(|call| match call {
            Call::Matmul(m) => {
                Call::Matmul(Matmul { variant: MatmulVariant::for_shape(size(m.m, max_rows), m.n, limits), ..m })
            }
            call => call,
        })
        .collect()
}

/// Products with too few output tiles to fill a GPU are split along K into
/// slices, each a workgroup layer of the same dispatch, and a finish pass
/// adds the slices in order (deterministic) and applies the epilogue.
fn split_k(calls: Vec<Call>, max_rows: usize, target: u32) -> Vec<Call> {
    let mut out = Vec::with_capacity(calls.len());
    for call in calls {
        match call {
            Call::Matmul(m) => {
                let slices = m.variant.split_k(size(m.m, max_rows), size(m.k, max_rows), m.n, target);
                if slices > 1 {
                    let split = Matmul { slices, ..m };
                    out.push(Call::Matmul(split));
                    out.push(Call::SplitFinish(split));
                } else {
                    out.push(Call::Matmul(m));
                }
            }
            call => out.push(call),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::lower::lower;
    use crate::model::{Architecture, ModelConfig, ModelKind, ReconLoss};

    fn default_vae() -> Architecture {
        Architecture::new(&ModelConfig::pytorch_vae()).unwrap()
    }

    fn plan(limits: &wgpu::Limits, rows: usize) -> Vec<Call> {
        plan_of(&default_vae(), limits, rows)
    }

    fn plan_of(arch: &Architecture, limits: &wgpu::Limits, rows: usize) -> Vec<Call> {
        plan_with(arch, limits, rows, Fusion::ALL)
    }

    fn plan_with(arch: &Architecture, limits: &wgpu::Limits, rows: usize, fusion: Fusion) -> Vec<Call> {
        let graph = Graph::training(arch, false);
        let env = Env { graph: &graph, max_rows: rows, limits, param_count: arch.param_count, keep: graph.named() };
        let calls = fuse(lower(&graph), fusion, &env);
        for call in &calls {
            if let Call::Fused(tasks) = call {
                let bindings = fused::generate(tasks, &graph, rows).bindings.len() as u32;
                assert!(bindings <= limits.max_storage_buffers_per_shader_stage, "{bindings} bindings: {tasks:?}");
                assert!(kernel_bytes(tasks, &graph) <= limits.max_compute_workgroup_storage_size);
            }
        }
        calls
    }

    #[test]
    fn the_default_step_fuses_adam_where_bindings_allow() {
        let roomy = wgpu::Limits { max_storage_buffers_per_shader_stage: 16, ..wgpu::Limits::default() };
        for rows in [128, 1024] {
            let calls = plan(&roomy, rows);
            assert_eq!(calls.len(), 7, "the gather and 6 kernels: {calls:#?}");
            assert!(!calls.contains(&Call::Adam));
        }
        // WebGPU's defaults (8 storage buffers): the gradients split, Adam stays.
        let calls = plan(&wgpu::Limits::default(), 128);
        assert!(calls.contains(&Call::Adam), "{calls:#?}");
        assert!(calls.len() <= 10, "{calls:#?}");
    }

    #[test]
    fn adapters_below_the_webgpu_defaults_keep_the_family_kernels() {
        let small = wgpu::Limits { max_compute_workgroup_storage_size: 8192, ..wgpu::Limits::default() };
        let calls = plan(&small, 128);
        assert!(!calls.iter().any(|c| matches!(c, Call::Fused(_))), "{calls:#?}");
    }

    #[test]
    fn gradients_sink_past_what_they_do_not_touch() {
        let graph = Graph::training(&default_vae(), false);
        let calls = sink_gradients(lower(&graph));
        let adam = calls.iter().position(|c| matches!(c, Call::Adam)).unwrap();
        let first_sunk = calls.iter().position(sinkable).unwrap();
        assert!(calls[first_sunk..adam].iter().all(sinkable), "{calls:#?}");
        assert_eq!(calls.iter().filter(|c| sinkable(c)).count(), 10, "4 products, 4 column sums, 2 loss folds");
    }

    /// The open epilogue at work: the seed AE's output product takes the
    /// sigmoid, the MSE and both gradients (a row chain of its own before).
    #[test]
    fn the_seed_aes_output_layer_takes_its_loss_into_the_epilogue() {
        let mut c = ModelConfig::pytorch_vae();
        (c.kind, c.loss, c.hidden, c.latent) = (ModelKind::Ae, ReconLoss::Mse, vec![], 64);
        let roomy = wgpu::Limits { max_storage_buffers_per_shader_stage: 16, ..wgpu::Limits::default() };
        let calls = plan_of(&Architecture::new(&c).unwrap(), &roomy, 256);
        assert_eq!(calls.len(), 5, "the gather and 4 kernels (6 before): {calls:#?}");
        let output = calls.iter().find_map(|c| match c {
            Call::Fused(tasks) => match &tasks[..] {
                [Task::Product { mm, epilogue }] if mm.n == 784 && mm.form == MatmulForm::Nt => Some(epilogue),
                _ => None,
            },
            _ => None,
        });
        let ops: Vec<String> = output.expect("the output product").ops.iter().map(|op| format!("{op:?}")).collect();
        let kinds: Vec<&str> = ops.iter().map(|op| op.split([' ', '{']).next().unwrap()).collect();
        assert_eq!(kinds, ["Sigmoid", "LossPartials", "LossBackward", "SigmoidBackward"], "{ops:#?}");
    }

    fn conv_vae() -> Architecture {
        let mut c = ModelConfig::pytorch_vae();
        (c.arch, c.conv, c.hidden, c.latent) = (crate::model::Arch::Conv, vec![32, 64], vec![], 16);
        Architecture::new(&c).unwrap()
    }

    fn labels(calls: &[Call]) -> Vec<String> {
        calls
            .iter()
            .map(|c| match c {
                Call::Fused(tasks) => tasks.iter().map(|t| t.label(128)).collect::<Vec<_>>().join(" | "),
                c => format!("{:?}", c).chars().take(60).collect(),
            })
            .collect()
    }

    /// The default conv VAE's step with every convolution a product of its
    /// own (`GPU_VAE_CONV=products`): the code layers (3136 <-> 32,
    /// 16 <-> 3136) a row chain each way, the BCE and its gradient in the
    /// last transposed convolution's epilogue, the weight gradients with Adam
    /// in one kernel where the bindings allow.
    #[test]
    fn the_conv_vae_step_runs_convolutions_as_products() {
        let products = Fusion { conv_rows: false, ..Fusion::ALL };
        for (bindings, want) in [(32, 13), (16, 15)] {
            let limits = wgpu::Limits { max_storage_buffers_per_shader_stage: bindings, ..wgpu::Limits::default() };
            let calls = plan_with(&conv_vae(), &limits, 128, products);
            let labels = labels(&calls);
            assert!(!calls.iter().any(|c| matches!(c, Call::Conv { .. })), "{labels:#?}");
            assert_eq!(calls.len(), want, "the gather and {} kernels: {labels:#?}", want - 1);
            assert!(labels.iter().any(|l| l.contains("k3s1p1 +bias+bce_with_logits_forward+bce_with_logits_backward")));
        }
    }

    /// By default the convolutions next to the code layers join their row
    /// chains and the last transposed layer its own input gradient, each
    /// image in one workgroup through those layers (in WebGPU's 16 KiB of
    /// workgroup memory: a chain's ranges are reused once their tensor is
    /// dead): 8 dispatches where there were 13, 7 with more memory.
    #[test]
    fn the_conv_vae_step_runs_layers_per_image() {
        for (bindings, want) in [(32, 8), (16, 10)] {
            let limits = wgpu::Limits { max_storage_buffers_per_shader_stage: bindings, ..wgpu::Limits::default() };
            let calls = plan_of(&conv_vae(), &limits, 128);
            let labels = labels(&calls);
            assert_eq!(calls.len(), want, "the gather and {} kernels: {labels:#?}", want - 1);
            let chains: Vec<&String> = labels.iter().filter(|l| l.starts_with("rows(conv2d")).collect();
            assert_eq!(chains.len(), 3, "{labels:#?}");
            assert!(chains[0].contains("matmul_nt 128x3136x32") && chains[0].ends_with("k3s2p1 +bias+relu)"));
            assert!(chains[1].contains("bce_with_logits_backward, conv2d_forward_product"), "{}", chains[1]);
            assert!(chains[2].contains("matmul_nn 128x32x3136"), "{}", chains[2]);
        }
        // lavapipe's 32 KiB take the encoder's first convolution into its
        // chain too; NVIDIA's 48 KiB the whole encoder and decoder's
        // dense layer in one chain (7 dispatches).
        for (bytes, want) in [(32768, 8), (49152, 7)] {
            let limits = wgpu::Limits {
                max_storage_buffers_per_shader_stage: 32,
                max_compute_workgroup_storage_size: bytes,
                ..wgpu::Limits::default()
            };
            let calls = plan_of(&conv_vae(), &limits, 128);
            let labels = labels(&calls);
            assert_eq!(calls.len(), want, "{bytes} bytes: {labels:#?}");
            assert!(labels[1].starts_with("rows(conv2d_forward_product 1x28x28->32x14x14"), "{labels:#?}");
        }
    }
}
