//! A step program: the list of dispatches of one training (or evaluation) step,
//! with their bind groups and sizes built once, replayed for every step inside
//! one compute pass. What differs between steps lives in a `StepTable`: one
//! `Step` row per step, selected with a dynamic offset on bind group 1.

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

#[cfg(test)]
use super::shaders::MatmulForm;
use super::shaders::{Family, Kernel, Kernels, flags};

/// Sizes and offsets of one dispatch (`struct Dims` in shaders/common.wgsl).
/// Offsets are in elements; each kernel family documents the fields it reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Dims {
    pub m: u32,
    pub k: u32,
    pub n: u32,
    pub flags: u32,
    pub off_a: u32,
    pub off_b: u32,
    pub off_c: u32,
    pub off_d: u32,
    pub parts: u32,
    pub which: u32,
    pub u0: u32,
    pub u1: u32,
    pub f0: f32,
    pub f1: f32,
    pub f2: f32,
    pub f3: f32,
}

/// What changes from one step to the next (`struct Step` in shaders/common.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct Step {
    /// Images in this batch (the last of an epoch may be short).
    pub rows: u32,
    /// Index of the batch's first image in the order buffer.
    pub row_offset: u32,
    /// RNG step counter: the global step (training) or batch index (evaluation).
    pub rng_step: u32,
    /// Loss slot: the step's index within the epoch.
    pub slot: u32,
    pub seed: u32,
    pub reparam_stream: u32,
    pub noise_stream: u32,
    pub pad0: u32,
    pub noise_std: f32,
    /// Adam bias corrections from `AdamConfig::corrections(t)`.
    pub c1: f32,
    pub c2: f32,
    /// Objective weights from `Objective::for_batch`.
    pub recon_scale: f32,
    pub kl_scale: f32,
    pub pad1: f32,
    pub pad2: f32,
    pub pad3: f32,
}

struct Pending {
    kernel: Kernel,
    dims: Dims,
    rw: Vec<wgpu::Buffer>,
    ro: Vec<wgpu::Buffer>,
    groups: [u32; 3],
}

pub struct Dispatch {
    pub kernel: Kernel,
    /// A copy of what the uniform holds, so profiles can name the dispatch.
    pub dims: Dims,
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    pub groups: [u32; 3],
}

impl Dispatch {
    /// Records this dispatch alone; the caller has set group 1 (the step row).
    #[inline]
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind, &[]);
        let [x, y, z] = self.groups;
        pass.dispatch_workgroups(x, y, z);
    }

    /// This dispatch's `dispatch_label`.
    pub fn label(&self, rows: u32) -> String {
        dispatch_label(self.kernel, &self.dims, rows)
    }
}

/// A name for profiles: the entry, and for products the variant, M x K x N
/// (batch-sized ones at `rows`, the step's) and the split-K slices, e.g.
/// `matmul_nt Tile32 128x784x400 /4`; a split-K finish carries its product's
/// shape, so the finishes of two products of one shape share a name. Other
/// kernels are named by entry alone.
pub fn dispatch_label(kernel: Kernel, dims: &Dims, rows: u32) -> String {
    let Family::Matmul(variant) = kernel.family() else {
        return kernel.entry().to_string();
    };
    let m = if dims.flags & flags::ROWS_M != 0 { rows } else { dims.m };
    let k = if dims.flags & flags::ROWS_K != 0 { rows } else { dims.k };
    let split = if dims.u0 > 1 { format!(" /{}", dims.u0) } else { String::new() };
    format!("{} {variant:?} {m}x{k}x{}{split}", kernel.entry(), dims.n)
}

/// Collects dispatches; `build` packs their `Dims` into one uniform buffer.
#[derive(Default)]
pub struct ProgramBuilder {
    dims: Vec<Dims>,
    pending: Vec<Pending>,
}

impl ProgramBuilder {
    /// Adds a dispatch. `rw` go to bindings 1.., `ro` to bindings 4...
    pub fn push(&mut self, kernel: Kernel, dims: Dims, rw: &[&wgpu::Buffer], ro: &[&wgpu::Buffer], groups: [u32; 3]) {
        assert!(rw.len() <= 3 && ro.len() <= 3, "{kernel:?}: too many bindings");
        self.dims.push(dims);
        let rw = rw.iter().map(|&b| b.clone()).collect();
        let ro = ro.iter().map(|&b| b.clone()).collect();
        self.pending.push(Pending { kernel, dims, rw, ro, groups });
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn build(self, device: &wgpu::Device, kernels: &Kernels) -> Program {
        let size = std::mem::size_of::<Dims>() as u64;
        let stride = size.next_multiple_of(kernels.uniform_align);
        let mut bytes = vec![0u8; (stride * self.dims.len().max(1) as u64) as usize];
        for (i, d) in self.dims.iter().enumerate() {
            let at = i * stride as usize;
            bytes[at..at + size as usize].copy_from_slice(bytemuck::bytes_of(d));
        }
        let dims_buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("dims"),
            contents: &bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });

        let dispatches = self
            .pending
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let dims = wgpu::BufferBinding {
                    buffer: &dims_buffer,
                    offset: i as u64 * stride,
                    size: wgpu::BufferSize::new(size),
                };
                let rw = |j: usize| p.rw.get(j).unwrap_or(&kernels.dummy_rw[j]).as_entire_binding();
                let ro = |j: usize| p.ro.get(j).unwrap_or(&kernels.dummy_ro).as_entire_binding();
                let entry = |binding, resource| wgpu::BindGroupEntry { binding, resource };
                let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(p.kernel.entry()),
                    layout: &kernels.dims_layout,
                    entries: &[
                        entry(0, wgpu::BindingResource::Buffer(dims)),
                        entry(1, rw(0)),
                        entry(2, rw(1)),
                        entry(3, rw(2)),
                        entry(4, ro(0)),
                        entry(5, ro(1)),
                        entry(6, ro(2)),
                    ],
                });
                Dispatch {
                    kernel: p.kernel,
                    dims: p.dims,
                    pipeline: kernels.pipeline(p.kernel).clone(),
                    bind,
                    groups: p.groups,
                }
            })
            .collect();
        Program { _dims: dims_buffer, dispatches }
    }
}

/// Dispatches built once, recorded again for each step.
pub struct Program {
    _dims: wgpu::Buffer,
    pub dispatches: Vec<Dispatch>,
}

impl Program {
    /// Records every dispatch; the caller has set group 1 (the step row).
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.dispatches {
            d.record(pass);
        }
    }

    /// Every dispatch's `Dispatch::label` for a step of `rows` images.
    pub fn labels(&self, rows: u32) -> Vec<String> {
        self.dispatches.iter().map(|d| d.label(rows)).collect()
    }

    pub fn len(&self) -> usize {
        self.dispatches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }
}

/// One `Step` row per step, 256-byte (uniform-offset) aligned, bound once per
/// step with `set_bind_group(1, .., &[offset])`.
pub struct StepTable {
    buffer: wgpu::Buffer,
    pub bind: wgpu::BindGroup,
    stride: u64,
    capacity: usize,
}

impl StepTable {
    pub fn new(device: &wgpu::Device, kernels: &Kernels, capacity: usize) -> StepTable {
        let size = std::mem::size_of::<Step>() as u64;
        let stride = size.next_multiple_of(kernels.uniform_align);
        let capacity = capacity.max(1);
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("step table"),
            size: stride * capacity as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("step table"),
            layout: &kernels.step_layout,
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &buffer,
                    offset: 0,
                    size: wgpu::BufferSize::new(size),
                }),
            }],
        });
        StepTable { buffer, bind, stride, capacity }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Uploads the rows (the table must hold them: see `ensure`).
    pub fn write(&self, queue: &wgpu::Queue, steps: &[Step]) {
        assert!(steps.len() <= self.capacity, "step table holds {} rows, not {}", self.capacity, steps.len());
        let mut bytes = vec![0u8; steps.len() * self.stride as usize];
        for (i, s) in steps.iter().enumerate() {
            let at = i * self.stride as usize;
            bytes[at..at + std::mem::size_of::<Step>()].copy_from_slice(bytemuck::bytes_of(s));
        }
        queue.write_buffer(&self.buffer, 0, &bytes);
    }

    /// The dynamic offset of row `i`.
    pub fn offset(&self, i: usize) -> u32 {
        (i as u64 * self.stride) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::shaders::MatmulVariant::{Tile32, Tile64};

    #[test]
    fn labels_name_products_by_shape() {
        let fwd = Dims { k: 784, n: 400, u0: 4, flags: flags::ROWS_M | flags::BIAS, ..Default::default() };
        assert_eq!(
            dispatch_label(Kernel::Matmul(Tile32, MatmulForm::Nt), &fwd, 128),
            "matmul_nt Tile32 128x784x400 /4"
        );
        assert_eq!(
            dispatch_label(Kernel::MatmulSplitFinish(Tile32), &fwd, 96),
            "matmul_split_finish Tile32 96x784x400 /4"
        );
        let dw = Dims { m: 400, n: 784, flags: flags::ROWS_K, ..Default::default() };
        assert_eq!(dispatch_label(Kernel::Matmul(Tile64, MatmulForm::Tn), &dw, 128), "matmul_tn Tile64 400x128x784");
        let relu = Dims { n: 400, flags: flags::ROWS_M, ..Default::default() };
        assert_eq!(dispatch_label(Kernel::ActivationBackward, &relu, 128), "activation_backward");
    }
}
