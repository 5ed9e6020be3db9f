//! The device buffers of one model, sized for its largest batch. Parameters,
//! gradients and Adam's moments are one flat buffer each, laid out by the
//! architecture, so Adam is one dispatch. Each activation has its own buffer:
//! a dispatch may not bind one buffer both read-only and read-write.

use super::context::GpuContext;
use super::shaders::{MAX_PARTS, MAX_SPLIT};
use crate::error::{Error, Result};
use crate::model::Architecture;

pub struct Buffers {
    pub params: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    pub adam_m: wgpu::Buffer,
    pub adam_v: wgpu::Buffer,
    /// The gathered batch (B, D): the target, and the input without noise.
    pub clean: wgpu::Buffer,
    /// The noisy input of a denoising model (B, D).
    pub noisy: wgpu::Buffer,
    /// Output of each encoder layer (B, O).
    pub encoder: Vec<wgpu::Buffer>,
    /// VAE head output [mu | logvar] (B, 2L), its noise and sample (B, L).
    pub mulv: wgpu::Buffer,
    pub eps: wgpu::Buffer,
    pub z: wgpu::Buffer,
    /// Output of each decoder layer (B, O); the last holds the logits.
    pub decoder: Vec<wgpu::Buffer>,
    /// sigmoid(logits) for the MSE loss (B, D).
    pub probs: wgpu::Buffer,
    /// Gradient ping-pong (B, max width).
    pub grad_a: wgpu::Buffer,
    pub grad_b: wgpu::Buffer,
    /// Loss partial sums: recon at 0.., KL at MAX_PARTS...
    pub partials: wgpu::Buffer,
    /// Split-K slices (MAX_SPLIT, B, max width): only batch-row products split.
    pub split: wgpu::Buffer,
}

/// A storage buffer of `bytes` (at least 16), refused with the sizes named
/// when the device cannot bind it whole.
pub fn storage(ctx: &GpuContext, label: &str, bytes: usize, extra: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
    let size = (bytes.max(16) as u64).next_multiple_of(4);
    let limit = ctx.limits.max_storage_buffer_binding_size.min(ctx.limits.max_buffer_size);
    if size > limit {
        return Err(Error::Gpu(format!(
            "{label} needs {size} bytes, more than {}'s largest storage binding ({limit} bytes)",
            ctx.info.name
        )));
    }
    Ok(ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | extra,
        mapped_at_creation: false,
    }))
}

impl Buffers {
    pub fn new(ctx: &GpuContext, arch: &Architecture, params: &[f32], max_batch: usize) -> Result<Buffers> {
        let f = |label: &str, len: usize| storage(ctx, label, len * 4, wgpu::BufferUsages::COPY_SRC);
        let p = arch.param_count;
        let b = max_batch;
        let d = arch.config.input_dim();
        let l = arch.config.latent;
        let bufs = Buffers {
            params: f("params", p)?,
            grads: f("grads", p)?,
            adam_m: f("adam m", p)?,
            adam_v: f("adam v", p)?,
            clean: f("clean batch", b * d)?,
            noisy: f("noisy batch", b * d)?,
            encoder: arch
                .encoder
                .iter()
                .map(|layer| f("encoder activation", b * layer.outputs))
                .collect::<Result<_>>()?,
            mulv: f("mulv", b * 2 * l)?,
            eps: f("eps", b * l)?,
            z: f("z", b * l)?,
            decoder: arch
                .decoder
                .iter()
                .map(|layer| f("decoder activation", b * layer.outputs))
                .collect::<Result<_>>()?,
            probs: f("probs", b * d)?,
            grad_a: f("grad a", b * arch.max_width())?,
            grad_b: f("grad b", b * arch.max_width())?,
            partials: f("loss partials", 2 * MAX_PARTS as usize)?,
            split: f("split-k slices", MAX_SPLIT as usize * b * arch.max_width())?,
        };
        ctx.queue.write_buffer(&bufs.params, 0, bytemuck::cast_slice(params));
        // Adam's moments start at zero; fresh buffers are zeroed by wgpu.
        Ok(bufs)
    }
}
