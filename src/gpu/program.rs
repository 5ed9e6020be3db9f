//! A step program: the list of dispatches of one training (or evaluation) step,
//! with their bind groups and sizes built once, replayed for every step inside
//! one compute pass. What differs between steps lives in a `StepTable`: one
//! `Step` row per step, selected with a dynamic offset on bind group 1.

use wgpu::util::DeviceExt;

use std::sync::Arc;

use super::ir::Task;
use super::params::{ConvParams, KernelParams, MatmulParams, PARAMS_SLOT, Slot};
use super::shaders::{GeneratedPipeline, Kernel, Kernels, dispatch_label, flags};

pub use super::params::Step;

/// A generated kernel's pipeline, its buffers in binding order and its tasks.
struct PendingGenerated {
    pipeline: Arc<GeneratedPipeline>,
    buffers: Vec<wgpu::Buffer>,
    tasks: Vec<Task>,
    groups: u32,
}

/// One dispatch before its bind group exists.
struct Pending {
    kernel: Kernel,
    /// The parameters' bytes, in the dispatch's uniform slot.
    params: Vec<u8>,
    matmul: Option<MatmulParams>,
    conv: Option<ConvParams>,
    bindings: Vec<(Slot, wgpu::Buffer)>,
    groups: [u32; 3],
}

pub struct Dispatch {
    /// The kernel, or for a generated one the tasks it runs.
    pub kernel: Result<Kernel, Vec<Task>>,
    /// A product's parameters, so profiles can name it by shape.
    pub matmul: Option<MatmulParams>,
    /// A direct convolution's parameters, so profiles can count its work.
    pub conv: Option<ConvParams>,
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

    /// The multiply-adds (x2) of its products and convolutions at `rows`
    /// rows, counting a convolution's useful terms whatever the kernel
    /// (a stride-2 input gradient's implicit GEMM also multiplies zeros);
    /// `None` for other kernels.
    pub fn flops(&self, rows: u32) -> Option<f64> {
        let rows = rows as usize;
        match (&self.kernel, self.matmul, self.conv) {
            (Ok(Kernel::Matmul(..)), Some(p), _) => {
                let m = if p.flags & flags::ROWS_M != 0 { rows } else { p.m as usize };
                let k = if p.flags & flags::ROWS_K != 0 { rows } else { p.k as usize };
                Some(2.0 * (m * k * p.n as usize) as f64)
            }
            (Ok(Kernel::Conv2dForward | Kernel::Conv2dBackwardData | Kernel::Conv2dBackwardWeight), _, Some(p)) => {
                let out = (p.out_c * p.out_h * p.out_w) as usize;
                Some(2.0 * (rows * out * (p.in_c * p.kernel * p.kernel) as usize) as f64)
            }
            (Err(tasks), ..) => {
                let flops: f64 = tasks.iter().map(|t| t.flops(rows)).sum();
                (flops > 0.0).then_some(flops)
            }
            _ => None,
        }
    }

    /// This dispatch's `dispatch_label`.
    pub fn label(&self, rows: u32) -> String {
        match &self.kernel {
            Ok(kernel) => dispatch_label(*kernel, self.matmul.as_ref(), rows),
            Err(tasks) => format!("fused[{}]", tasks.iter().map(|t| t.label(rows)).collect::<Vec<_>>().join(" | ")),
        }
    }
}

/// Collects dispatches; `build` packs their parameters into one uniform
/// buffer and makes their bind groups.
#[derive(Default)]
pub struct ProgramBuilder {
    /// Dispatches in order: a family kernel or a generated one.
    pending: Vec<Result<Pending, PendingGenerated>>,
}

impl ProgramBuilder {
    /// Adds a dispatch of `kernel` with its family's parameter struct and
    /// buffers bound by name; bindings the kernel does not use may be left
    /// out. A parameter type or binding name foreign to the family panics,
    /// naming the kernel: the programs of every model are built in the tests.
    pub fn push<P: KernelParams>(
        &mut self,
        kernel: Kernel,
        params: P,
        bindings: &[(Slot, &wgpu::Buffer)],
        groups: [u32; 3],
    ) {
        let family = kernel.family();
        assert_eq!(P::NAME, family.params().0, "{kernel:?} takes {}", family.params().0);
        for (slot, _) in bindings {
            assert!(
                family.bindings().iter().any(|b| b.slot == *slot),
                "{kernel:?} has no binding {slot:?}; it has {:?}",
                family.bindings().iter().map(|b| b.slot).collect::<Vec<_>>()
            );
        }
        let bytes = bytemuck::bytes_of(&params).to_vec();
        let matmul = (P::NAME == MatmulParams::NAME).then(|| bytemuck::pod_read_unaligned(&bytes));
        let conv = (P::NAME == ConvParams::NAME).then(|| bytemuck::pod_read_unaligned(&bytes));
        self.pending.push(Ok(Pending {
            kernel,
            params: bytes,
            matmul,
            conv,
            bindings: bindings.iter().map(|&(s, b)| (s, b.clone())).collect(),
            groups,
        }));
    }

    /// Adds a dispatch of a generated kernel on `groups` workgroups, its
    /// buffers in binding order.
    pub fn push_generated(
        &mut self,
        pipeline: Arc<GeneratedPipeline>,
        buffers: Vec<wgpu::Buffer>,
        tasks: Vec<Task>,
        groups: u32,
    ) {
        self.pending.push(Err(PendingGenerated { pipeline, buffers, tasks, groups }));
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn build(self, device: &wgpu::Device, kernels: &Kernels) -> Program {
        let stride = (PARAMS_SLOT as u64).next_multiple_of(kernels.uniform_align);
        let mut bytes = vec![0u8; (stride * self.pending.len().max(1) as u64) as usize];
        for (i, d) in self.pending.iter().enumerate() {
            let Ok(d) = d else { continue };
            let at = i * stride as usize;
            bytes[at..at + d.params.len()].copy_from_slice(&d.params);
        }
        let params_buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("kernel parameters"),
            contents: &bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });

        let dispatches = self
            .pending
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let d = match d {
                    Ok(d) => d,
                    Err(g) => {
                        let entries: Vec<_> = g
                            .buffers
                            .iter()
                            .zip(0..)
                            .map(|(b, i)| wgpu::BindGroupEntry { binding: i, resource: b.as_entire_binding() })
                            .collect();
                        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                            label: Some("fused"),
                            layout: &g.pipeline.layout,
                            entries: &entries,
                        });
                        return Dispatch {
                            kernel: Err(g.tasks),
                            matmul: None,
                            conv: None,
                            pipeline: g.pipeline.pipeline.clone(),
                            bind,
                            groups: [g.groups, 1, 1],
                        };
                    }
                };
                let family = d.kernel.family();
                let mut entries = vec![wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &params_buffer,
                        offset: i as u64 * stride,
                        size: wgpu::BufferSize::new(PARAMS_SLOT as u64),
                    }),
                }];
                for (j, b) in family.bindings().iter().enumerate() {
                    let bound = d.bindings.iter().find(|(s, _)| *s == b.slot).map(|(_, buf)| buf);
                    let buffer = bound.unwrap_or(&kernels.dummies[j]);
                    entries.push(wgpu::BindGroupEntry { binding: j as u32 + 1, resource: buffer.as_entire_binding() });
                }
                let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(d.kernel.entry()),
                    layout: kernels.layout(family),
                    entries: &entries,
                });
                Dispatch {
                    kernel: Ok(d.kernel),
                    matmul: d.matmul,
                    conv: d.conv,
                    pipeline: kernels.pipeline(d.kernel).clone(),
                    bind,
                    groups: d.groups,
                }
            })
            .collect();
        Program { _params: params_buffer, dispatches }
    }
}

/// Dispatches built once, recorded again for each step.
pub struct Program {
    _params: wgpu::Buffer,
    pub dispatches: Vec<Dispatch>,
}

impl Program {
    /// Records every dispatch; the caller has set group 1 (the step row).
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.dispatches {
            d.record(pass);
        }
    }

    /// Every dispatch's `Dispatch::flops` for a step of `rows` images.
    pub fn flops(&self, rows: u32) -> Vec<Option<f64>> {
        self.dispatches.iter().map(|d| d.flops(rows)).collect()
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
    use crate::gpu::shaders::{MatmulForm, flags};

    #[test]
    fn labels_name_products_by_shape() {
        let fwd = MatmulParams { k: 784, n: 400, slices: 4, flags: flags::ROWS_M | flags::BIAS, ..Default::default() };
        let nt = Kernel::Matmul(Tile32, MatmulForm::Nt);
        assert_eq!(dispatch_label(nt, Some(&fwd), 128), "matmul_nt Tile32 128x784x400 /4");
        let finish = Kernel::MatmulSplitFinish(Tile32);
        assert_eq!(dispatch_label(finish, Some(&fwd), 96), "matmul_split_finish Tile32 96x784x400 /4");
        let dw = MatmulParams { m: 400, n: 784, flags: flags::ROWS_K, ..Default::default() };
        let tn = Kernel::Matmul(Tile64, MatmulForm::Tn);
        assert_eq!(dispatch_label(tn, Some(&dw), 128), "matmul_tn Tile64 400x128x784");
        assert_eq!(dispatch_label(Kernel::ActivationBackward, None, 128), "activation_backward");
    }
}
