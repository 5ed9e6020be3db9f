//! `GpuInference`: a trained model's encoder and decoder on the device, the
//! GPU implementation of `apps::Inference`.
//!
//! Parameters are uploaded once. Each half (encoder with the VAE head, and
//! decoder) is a chain of dense layers from its own input buffer through one
//! buffer per layer, recorded with the step programs' `Dense` builder (the
//! same products, epilogues and split-K). A chain's dispatch list is built once
//! per row bucket, the next power of two of a call's rows up to `max_rows`:
//! the tiled products compute whole tiles even past the last row, so grids
//! sized for 1024 rows would make every 10-row call cost a 1024-row one. A
//! call writes its rows and the step row, records the program into one pass,
//! copies the output to a staging buffer in the same submit, and maps it.

use std::sync::Arc;

use super::buffers::storage;
use super::context::GpuContext;
use super::program::{Program, Step, StepTable};
use super::shaders::{Kernels, MAX_SPLIT};
use super::steps::Dense;
use crate::engine::Inference;
use crate::error::{Error, Result};
use crate::model::{Architecture, Layer};

pub struct GpuInference {
    ctx: Arc<GpuContext>,
    kernels: Kernels,
    arch: Architecture,
    max_rows: usize,
    params: wgpu::Buffer,
    /// Split-K slices, shared by every product (one runs at a time).
    split: wgpu::Buffer,
    table: StepTable,
    /// MAP_READ staging for the widest output of `max_rows` rows.
    readback: wgpu::Buffer,
    encoder: Chain,
    decoder: Chain,
}

#[derive(Clone, Copy)]
enum Half {
    /// Encoder layers and the VAE head: x (B, D) to mulv (B, 2L) or z (B, L).
    Encoder,
    /// z (B, L) to logits (B, D).
    Decoder,
}

/// Dense layers from `input` through one output buffer per layer.
struct Chain {
    layers: Vec<Layer>,
    input: wgpu::Buffer,
    outputs: Vec<wgpu::Buffer>,
    /// Programs by row bucket, built on first use.
    programs: Vec<(usize, Program)>,
}

impl Chain {
    fn new(ctx: &GpuContext, name: &str, layers: Vec<Layer>, max_rows: usize) -> Result<Chain> {
        let f = |label: String, width: usize| storage(ctx, &label, max_rows * width * 4, wgpu::BufferUsages::COPY_SRC);
        let input = f(format!("{name} input"), layers[0].inputs)?;
        let outputs = layers.iter().map(|l| f(format!("{name} activation"), l.outputs)).collect::<Result<_>>()?;
        Ok(Chain { layers, input, outputs, programs: Vec::new() })
    }

    fn in_width(&self) -> usize {
        self.layers[0].inputs
    }

    fn out_width(&self) -> usize {
        self.layers.last().expect("a chain has layers").outputs
    }

    fn output(&self) -> &wgpu::Buffer {
        self.outputs.last().expect("a chain has layers")
    }

    fn program(
        &mut self,
        ctx: &GpuContext,
        kernels: &Kernels,
        params: &wgpu::Buffer,
        split: &wgpu::Buffer,
        bucket: usize,
    ) -> &Program {
        let i = match self.programs.iter().position(|(b, _)| *b == bucket) {
            Some(i) => i,
            None => {
                let mut dense = Dense::new(params, split, bucket);
                let mut x = &self.input;
                for (layer, out) in self.layers.iter().zip(&self.outputs) {
                    dense.forward(out, x, layer);
                    x = out;
                }
                self.programs.push((bucket, dense.build(&ctx.device, kernels)));
                self.programs.len() - 1
            }
        };
        &self.programs[i].1
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
        let kernels = Kernels::new(&ctx)?;
        let bytes = |len: usize| len * 4;
        let params_buffer = storage(&ctx, "params", bytes(params.len()), wgpu::BufferUsages::empty())?;
        ctx.queue.write_buffer(&params_buffer, 0, bytemuck::cast_slice(params));
        let split_len = MAX_SPLIT as usize * max_rows * arch.max_width();
        let split = storage(&ctx, "split-k slices", bytes(split_len), wgpu::BufferUsages::empty())?;
        let encoder =
            Chain::new(&ctx, "encoder", arch.encoder.iter().chain(arch.head.iter()).cloned().collect(), max_rows)?;
        let decoder = Chain::new(&ctx, "decoder", arch.decoder.clone(), max_rows)?;
        let widest = encoder.out_width().max(decoder.out_width());
        let readback = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("inference readback"),
            size: bytes(max_rows * widest) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let table = StepTable::new(&ctx.device, &kernels, 1);
        Ok(GpuInference {
            ctx,
            kernels,
            arch,
            max_rows,
            params: params_buffer,
            split,
            table,
            readback,
            encoder,
            decoder,
        })
    }

    /// The chain's output for x (rows, in width), `max_rows` rows per submit.
    fn run(&mut self, half: Half, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let chain = match half {
            Half::Encoder => &self.encoder,
            Half::Decoder => &self.decoder,
        };
        let (width_in, width_out) = (chain.in_width(), chain.out_width());
        if x.len() != rows * width_in {
            return Err(Error::invalid("rows", format!("{} values are not {rows} rows of {width_in}", x.len())));
        }
        let mut out = Vec::with_capacity(rows * width_out);
        for part in x.chunks(self.max_rows * width_in) {
            out.extend(self.run_chunk(half, part, part.len() / width_in)?);
        }
        Ok(out)
    }

    fn run_chunk(&mut self, half: Half, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let GpuInference { ctx, kernels, params, split, table, readback, max_rows, encoder, decoder, .. } = self;
        let chain = match half {
            Half::Encoder => encoder,
            Half::Decoder => decoder,
        };
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        // Queue writes land before the next submit.
        ctx.queue.write_buffer(&chain.input, 0, bytemuck::cast_slice(x));
        table.write(&ctx.queue, &[Step { rows: rows as u32, ..Default::default() }]);
        let bucket = rows.next_power_of_two().min(*max_rows);
        let program = chain.program(ctx, kernels, params, split, bucket);
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("inference"), timestamp_writes: None });
            pass.set_bind_group(1, &table.bind, &[table.offset(0)]);
            program.record(&mut pass);
        }
        let bytes = (rows * chain.out_width() * 4) as u64;
        enc.copy_buffer_to_buffer(chain.output(), 0, readback, 0, bytes);
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

    fn encode(&mut self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.run(Half::Encoder, x, rows)
    }

    fn decode_logits(&mut self, z: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.run(Half::Decoder, z, rows)
    }
}
