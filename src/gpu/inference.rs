//! `GpuInference`: a trained model's encoder and decoder on the device, the
//! GPU implementation of `engine::Inference`.
//!
//! Parameters are uploaded once. Each half is a slice of the model's graph
//! (image -> code, code -> logits), lowered and fused as the training step
//! is. A half's dispatch list is built once per row bucket, the next power
//! of two of a call's rows up to `max_rows`: the tiled products compute whole
//! tiles even past the last row, so grids sized for 1024 rows would make
//! every 10-row call cost a 1024-row one. A call writes its rows and the step
//! row, records the program into one pass, copies the output to a staging
//! buffer in the same submit, and maps it.

use std::sync::Arc;

use super::buffers::ParamBuffers;
use super::context::GpuContext;
use super::fuse::{Env, Fusion, fuse};
use super::lower::{Bindings, TensorPool, emit, lower};
use super::program::{Program, Step, StepTable};
use super::shaders::Kernels;
use crate::engine::Inference;
use crate::error::{Error, Result};
use crate::model::{Architecture, Graph, TensorId};

pub struct GpuInference {
    ctx: Arc<GpuContext>,
    kernels: Arc<Kernels>,
    arch: Architecture,
    max_rows: usize,
    params: ParamBuffers,
    table: StepTable,
    /// MAP_READ staging for the widest output of `max_rows` rows.
    readback: wgpu::Buffer,
    encoder: Half,
    decoder: Half,
    fusion: Fusion,
}

/// A slice of the graph from its input tensor to its output tensor.
struct Half {
    graph: Graph,
    input: TensorId,
    output: TensorId,
    /// Tensors and programs by row bucket, built on first use.
    programs: Vec<(usize, TensorPool, Program)>,
}

impl Half {
    fn new(graph: Graph, input: TensorId, output: TensorId) -> Half {
        Half { graph: graph.slice(input, output), input, output, programs: Vec::new() }
    }
}

impl GpuInference {
    /// The model `arch` with `params` on the device; calls of more than
    /// `max_rows` rows run in chunks of `max_rows`.
    pub fn new(ctx: Arc<GpuContext>, arch: Architecture, params: &[f32], max_rows: usize) -> Result<GpuInference> {
        if params.len() != arch.param_count {
            return Err(Error::invalid(
                "params",
                format!("{} values for {} parameters", params.len(), arch.param_count),
            ));
        }
        if max_rows == 0 {
            return Err(Error::invalid("max_rows", "must be at least 1"));
        }
        let kernels = ctx.kernels()?;
        let params = ParamBuffers::new(&ctx, params, false)?;
        let graph = Graph::forward(&arch, false);
        let encoder = Half::new(graph.clone(), graph.input, graph.code);
        let decoder = Half::new(graph.clone(), graph.latent, graph.logits);
        let widest = [graph.code, graph.logits].iter().map(|&t| graph.width(t)).max().unwrap_or(1);
        let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("inference readback"),
            size: (max_rows * widest * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let table = StepTable::new(&ctx.device, &kernels, 1);
        Ok(GpuInference { fusion: ctx.fusion, ctx, kernels, arch, max_rows, params, table, readback, encoder, decoder })
    }

    /// The half's output for x (rows, in width) and, for a conditional
    /// model, the rows' one-hot labels; `max_rows` rows per submit.
    fn run(&mut self, encoder: bool, x: &[f32], onehot: Option<&[f32]>, rows: usize) -> Result<Vec<f32>> {
        let half = if encoder { &self.encoder } else { &self.decoder };
        let (width_in, width_out) = (half.graph.width(half.input), half.graph.width(half.output));
        if x.len() != rows * width_in {
            return Err(Error::invalid("rows", format!("{} values are not {rows} rows of {width_in}", x.len())));
        }
        let classes = self.arch.config.classes;
        let mut out = Vec::with_capacity(rows * width_out);
        for (i, part) in x.chunks(self.max_rows * width_in).enumerate() {
            let n = part.len() / width_in;
            let labels = onehot.map(|l| &l[i * self.max_rows * classes..][..n * classes]);
            out.extend(self.run_chunk(encoder, part, labels, n)?);
        }
        Ok(out)
    }

    fn run_chunk(&mut self, encoder: bool, x: &[f32], onehot: Option<&[f32]>, rows: usize) -> Result<Vec<f32>> {
        let GpuInference { ctx, kernels, params, table, readback, max_rows, fusion, .. } = self;
        let half = if encoder { &mut self.encoder } else { &mut self.decoder };
        let bucket = rows.next_power_of_two().min(*max_rows);
        let i = match half.programs.iter().position(|(b, ..)| *b == bucket) {
            Some(i) => i,
            None => {
                let mut pool = TensorPool::new(bucket);
                let env = Env {
                    graph: &half.graph,
                    max_rows: bucket,
                    limits: &ctx.limits,
                    param_count: params.count,
                    keep: [half.graph.named(), vec![half.input, half.output]].concat(),
                };
                let calls = fuse(lower(&half.graph), *fusion, &env);
                let bind = Bindings {
                    params: &params.params,
                    param_count: params.count,
                    grads: None,
                    adam: None,
                    losses: None,
                    data: None,
                };
                let program = emit(ctx, kernels, &half.graph, &calls, &mut pool, &bind)?;
                half.programs.push((bucket, pool, program));
                half.programs.len() - 1
            }
        };
        let (_, pool, program) = &mut half.programs[i];
        let input = pool.get(ctx, &half.graph, half.input)?;
        let output = pool.get(ctx, &half.graph, half.output)?;
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        // Queue writes land before the next submit.
        ctx.queue.write_buffer(&input, 0, bytemuck::cast_slice(x));
        if let (Some(onehot), Some(labels)) = (onehot, half.graph.labels) {
            let labels = pool.get(ctx, &half.graph, labels)?;
            ctx.queue.write_buffer(&labels, 0, bytemuck::cast_slice(onehot));
        }
        table.write(&ctx.queue, &[Step { rows: rows as u32, ..Default::default() }]);
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("inference"), timestamp_writes: None });
            pass.set_bind_group(1, &table.bind, &[table.offset(0)]);
            program.record(&mut pass);
        }
        let bytes = (rows * half.graph.width(half.output) * 4) as u64;
        enc.copy_buffer_to_buffer(&output, 0, readback, 0, bytes);
        ctx.queue.submit([enc.finish()]);
        let out = ctx.map_read(readback, bytes)?;
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("inference: {e}")));
        }
        Ok(out)
    }
}

impl Inference for GpuInference {
    fn device(&self) -> String {
        format!("gpu: {}", self.ctx.describe())
    }

    fn arch(&self) -> &Architecture {
        &self.arch
    }

    fn encode(&mut self, x: &[f32], labels: Option<&[u8]>, rows: usize) -> Result<Vec<f32>> {
        let onehot = crate::engine::one_hot_labels(&self.arch, labels, rows)?;
        self.run(true, x, onehot.as_deref(), rows)
    }

    fn decode_logits(&mut self, z: &[f32], labels: Option<&[u8]>, rows: usize) -> Result<Vec<f32>> {
        let onehot = crate::engine::one_hot_labels(&self.arch, labels, rows)?;
        self.run(false, z, onehot.as_deref(), rows)
    }
}
