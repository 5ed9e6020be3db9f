//! Device buffers: the flat parameter buffers of a model (parameters,
//! gradients and Adam's moments, laid out by the architecture, so Adam is one
//! dispatch), and the one storage-buffer constructor that checks the
//! adapter's limits.

use super::context::GpuContext;
use crate::error::{Error, Result};

/// A storage buffer of `bytes` (at least 16), refused with the sizes named
/// when the device cannot bind it whole.
pub fn storage(ctx: &GpuContext, label: &str, bytes: usize, extra: wgpu::BufferUsages) -> Result<wgpu::Buffer> {
    let size = (bytes.max(16) as u64).next_multiple_of(4);
    let limit = ctx.limits.max_storage_buffer_binding_size.min(ctx.limits.max_buffer_size);
    if size > limit {
        return Err(Error::BindingTooLarge { label: label.into(), bytes: size, limit, device: ctx.info.name.clone() });
    }
    Ok(ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | extra,
        mapped_at_creation: false,
    }))
}

/// Parameters (P) and, for training, their gradients and Adam's moments.
pub struct ParamBuffers {
    pub count: usize,
    pub params: wgpu::Buffer,
    pub grads: Option<wgpu::Buffer>,
    pub adam_m: Option<wgpu::Buffer>,
    pub adam_v: Option<wgpu::Buffer>,
}

impl ParamBuffers {
    pub fn new(ctx: &GpuContext, params: &[f32], train: bool) -> Result<ParamBuffers> {
        let f = |label: &str| storage(ctx, label, params.len() * 4, wgpu::BufferUsages::COPY_SRC);
        let params_buffer = f("params")?;
        ctx.queue.write_buffer(&params_buffer, 0, bytemuck::cast_slice(params));
        // Adam's moments start at zero; fresh buffers are zeroed by wgpu.
        let (grads, adam_m, adam_v) =
            if train { (Some(f("grads")?), Some(f("adam m")?), Some(f("adam v")?)) } else { (None, None, None) };
        Ok(ParamBuffers { count: params.len(), params: params_buffer, grads, adam_m, adam_v })
    }
}
