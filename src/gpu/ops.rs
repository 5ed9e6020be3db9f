//! One kernel on host data, for the GPU-vs-CPU tests and kernel benchmarks:
//! upload, one dispatch, read back. Slow by design (fresh buffers each call).

use std::sync::Arc;

use wgpu::util::DeviceExt;

use super::context::GpuContext;
use super::ir::{Res, Task};
use super::params::{KernelParams, Slot};
use super::program::{Program, ProgramBuilder, Step, StepTable};
use super::shaders::{Kernel, Kernels};
use crate::error::{Error, Result};
use crate::model::Graph;

/// A buffer's initial contents, as f32 or u32 words.
#[derive(Clone, Copy, Debug)]
pub enum Host<'a> {
    F32(&'a [f32]),
    U32(&'a [u32]),
}

impl Host<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Host::F32(x) => bytemuck::cast_slice(x),
            Host::U32(x) => bytemuck::cast_slice(x),
        }
    }
}

fn upload(ctx: &GpuContext, data: Host<'_>) -> wgpu::Buffer {
    let mut bytes = data.bytes().to_vec();
    // Bindings cannot be empty; a few spare words also catch stray writes.
    bytes.resize(bytes.len().max(16), 0);
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("ops"),
        contents: &bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    })
}

/// One dispatch: the kernel, its parameters, the step row it sees, its grid.
#[derive(Clone, Copy, Debug)]
pub struct Launch<P: KernelParams> {
    pub kernel: Kernel,
    pub params: P,
    pub step: Step,
    pub groups: [u32; 3],
}

/// Runs a launch on buffers initialised from `bindings` (by name) and
/// returns every bound buffer's contents, in the order given, as f32
/// (reinterpret with `to_bits` for u32 results).
pub fn run_once<P: KernelParams>(
    ctx: &GpuContext,
    kernels: &Kernels,
    launch: Launch<P>,
    bindings: &[(Slot, Host<'_>)],
) -> Result<Vec<Vec<f32>>> {
    let Launch { kernel, params, step, groups } = launch;
    let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let buffers: Vec<wgpu::Buffer> = bindings.iter().map(|&(_, d)| upload(ctx, d)).collect();
    let named: Vec<(Slot, &wgpu::Buffer)> = bindings.iter().zip(&buffers).map(|(&(s, _), b)| (s, b)).collect();
    let mut builder = ProgramBuilder::default();
    builder.push(kernel, params, &named, groups);
    let program = builder.build(&ctx.device, kernels);
    submit_once(ctx, kernels, &program, step);
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(Error::Gpu(format!("{}: {e}", kernel.entry())));
    }
    bindings.iter().zip(&buffers).map(|(&(_, d), b)| ctx.read_f32(b, 0, d.bytes().len() / 4)).collect()
}

/// Runs a generated kernel (`gpu::fused`) made for at most `rows` rows, for
/// one step, on buffers initialised from `bindings` (by what each holds;
/// `graph` names the tensors' widths). Returns every given buffer's contents,
/// in the order given; one the kernel does not bind comes back as it went in.
pub fn run_generated(
    ctx: &GpuContext,
    kernels: &Kernels,
    tasks: &[Task],
    graph: &Graph,
    rows: usize,
    step: Step,
    bindings: &[(Res, Host<'_>)],
) -> Result<Vec<Vec<f32>>> {
    let generated = ctx.generated.get(kernels, tasks, graph, rows);
    let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let buffers: Vec<wgpu::Buffer> = bindings.iter().map(|&(_, d)| upload(ctx, d)).collect();
    let holding = |res: Res| {
        let res = if let Res::Part(_) = res { Res::Partials } else { res };
        let at = bindings.iter().position(|&(r, _)| r == res);
        at.map(|i| buffers[i].clone()).ok_or_else(|| Error::Gpu(format!("{}: no buffer for {res:?}", generated.label)))
    };
    let bound = generated.bindings.iter().map(|&(res, _)| holding(res)).collect::<Result<Vec<_>>>()?;
    let mut builder = ProgramBuilder::default();
    builder.push_generated(generated.pipeline.clone(), bound, tasks.to_vec(), generated.groups);
    let program = builder.build(&ctx.device, kernels);
    submit_once(ctx, kernels, &program, step);
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(Error::Gpu(format!("{}: {e}", generated.label)));
    }
    bindings.iter().zip(&buffers).map(|(&(_, d), b)| ctx.read_f32(b, 0, d.bytes().len() / 4)).collect()
}

/// Runs a module of our own WGSL (after `shaders::prelude`: constants,
/// `Step`, the ops) whose entry point `main` binds `bindings.len()`
/// read-write f32 arrays at group 0, for one step on `groups` workgroups.
/// Returns the arrays' contents: the ops' GPU-vs-CPU test runs them so.
pub fn run_wgsl(
    ctx: &GpuContext,
    kernels: &Kernels,
    source: &str,
    groups: u32,
    step: Step,
    bindings: &[Host<'_>],
) -> Result<Vec<Vec<f32>>> {
    let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let buffers: Vec<wgpu::Buffer> = bindings.iter().map(|&d| upload(ctx, d)).collect();
    let pipeline = Arc::new(kernels.build_generated(source, &vec![true; bindings.len()]));
    let mut builder = ProgramBuilder::default();
    builder.push_generated(pipeline, buffers.clone(), Vec::new(), groups);
    let program = builder.build(&ctx.device, kernels);
    submit_once(ctx, kernels, &program, step);
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(Error::Gpu(format!("run_wgsl: {e}")));
    }
    bindings.iter().zip(&buffers).map(|(d, b)| ctx.read_f32(b, 0, d.bytes().len() / 4)).collect()
}

/// Records `program` for one step row and submits it.
fn submit_once(ctx: &GpuContext, kernels: &Kernels, program: &Program, step: Step) {
    let table = StepTable::new(&ctx.device, kernels, 1);
    table.write(&ctx.queue, &[step]);
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_bind_group(1, &table.bind, &[table.offset(0)]);
        program.record(&mut pass);
    }
    ctx.queue.submit([enc.finish()]);
}
