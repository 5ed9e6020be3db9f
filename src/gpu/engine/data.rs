//! A data set on the device: uploaded whole, or streamed through a window
//! refilled before each submit when it outgrows a binding (or the resident
//! limit).

use std::sync::Arc;

use super::GpuEngine;
use crate::data::Images;
use crate::error::{Error, Result};
use crate::gpu::buffers::storage;
use crate::gpu::lower::{Bindings, DataBindings, emit, gather};
use crate::gpu::program::{Program, Step};
use crate::model::Graph;

/// A data set on the device: u8 pixels packed four per u32, and its order.
pub(super) struct DataSet {
    pub(super) images: Arc<Images>,
    pub(super) pixels: wgpu::Buffer,
    pub(super) order: wgpu::Buffer,
    pub(super) order_len: usize,
    /// A conditional model's labels, u8 packed as the pixels are (a window
    /// of them when streamed); one word otherwise.
    pub(super) labels: wgpu::Buffer,
    /// `Some(images)` for a streamed data set: `pixels` is a window of that
    /// many images, refilled before each submit with the images of its steps
    /// in step order, and `order` is the identity over the window.
    pub(super) window: Option<usize>,
    /// The gather dispatch, bound to these buffers.
    pub(super) gather: Program,
}

impl GpuEngine {
    /// Index of the data set in the cache, uploading it on first use.
    pub(super) fn data_set(&mut self, images: &Arc<Images>, order_len: usize) -> Result<usize> {
        let dim = self.arch.config.input_dim();
        if images.dim() != dim {
            return Err(Error::invalid(
                "data",
                format!(
                    "images are {}x{}x{} (channels x rows x cols), the model expects {dim} values",
                    images.channels, images.rows, images.cols
                ),
            ));
        }
        let window = self.steps_per_submit.saturating_mul(self.max_batch);
        let i = match self.data.iter().position(|d| Arc::ptr_eq(&d.images, images)) {
            // A streamed set whose window is now too small for a submit is rebuilt.
            Some(i) if self.data[i].window.is_some_and(|w| w < window) => {
                self.data[i] = self.stream(images, window)?;
                i
            }
            Some(i) => i,
            None if self.streams(images) => {
                if self.data.len() >= 2 {
                    self.data.remove(0);
                }
                let streamed = self.stream(images, window)?;
                self.data.push(streamed);
                self.data.len() - 1
            }
            None => {
                if self.data.len() >= 2 {
                    self.data.remove(0);
                }
                let uploaded = self.upload(images, order_len.max(images.count))?;
                self.data.push(uploaded);
                self.data.len() - 1
            }
        };
        if self.data[i].window.is_none() && self.data[i].order_len < order_len {
            let (pixels, labels) = (self.data[i].pixels.clone(), self.data[i].labels.clone());
            let d = self.upload_order(images.clone(), pixels, labels, order_len)?;
            self.data[i] = d;
        }
        Ok(i)
    }

    /// Whether a data set is streamed: larger than the resident limit or than
    /// what one storage binding holds.
    pub(super) fn streams(&self, images: &Images) -> bool {
        let binding = self.ctx.limits.max_storage_buffer_binding_size.min(self.ctx.limits.max_buffer_size);
        let bytes = images.pixels.len() as u64;
        bytes > self.resident_limit || bytes > binding || bytes >= 1 << 32
    }

    /// A streamed data set: a window of `window` images and the identity order over it.
    pub(super) fn stream(&mut self, images: &Arc<Images>, window: usize) -> Result<DataSet> {
        let bytes = window.saturating_mul(images.dim());
        let pixels = storage(&self.ctx, "pixel window", bytes.div_ceil(4) * 4, wgpu::BufferUsages::empty())?;
        let labels = self.labels_buffer(images, window)?;
        let mut d = self.upload_order(images.clone(), pixels, labels, window)?;
        let identity: Vec<u32> = (0..window as u32).collect();
        self.ctx.queue.write_buffer(&d.order, 0, bytemuck::cast_slice(&identity));
        d.window = Some(window);
        Ok(d)
    }

    /// The window's contents for `steps`: their images in step order, and
    /// their labels when the model is conditional.
    pub(super) fn fill_window(&self, images: &Images, order: &[u32], steps: &[Step]) -> (Vec<u32>, Option<Vec<u32>>) {
        let rows = || steps.iter().flat_map(|s| &order[s.row_offset as usize..][..s.rows as usize]);
        let mut bytes = Vec::new();
        for &i in rows() {
            bytes.extend_from_slice(images.image(i as usize));
        }
        let labels = match (&images.labels, self.arch.config.classes) {
            (Some(labels), 1..) => Some(pack_words(&rows().map(|&i| labels[i as usize]).collect::<Vec<_>>())),
            _ => None,
        };
        (pack_words(&bytes), labels)
    }

    /// A conditional model's labels buffer: `images`' labels (checked
    /// against its classes), or room for a window of `window`; a placeholder
    /// word for other models.
    fn labels_buffer(&self, images: &Images, window: usize) -> Result<wgpu::Buffer> {
        let classes = self.arch.config.classes;
        if classes == 0 {
            return storage(&self.ctx, "no labels", 4, wgpu::BufferUsages::empty());
        }
        let Some(labels) = &images.labels else {
            return Err(Error::invalid("data", "the model is conditional and these images have no labels"));
        };
        if let Some((i, &l)) = labels.iter().enumerate().find(|&(_, &l)| l as usize >= classes) {
            return Err(Error::invalid(
                "data",
                format!("image {i} has label {l}, beyond the model's {classes} classes"),
            ));
        }
        let mut words = if self.streams(images) { vec![0; window.div_ceil(4)] } else { pack_words(labels) };
        words.resize(words.len().max(1), 0);
        let buffer = storage(&self.ctx, "labels", words.len() * 4, wgpu::BufferUsages::empty())?;
        self.ctx.queue.write_buffer(&buffer, 0, bytemuck::cast_slice(&words));
        Ok(buffer)
    }

    pub(super) fn upload(&mut self, images: &Arc<Images>, order_len: usize) -> Result<DataSet> {
        let bytes = images.pixels.len();
        let limit = self.ctx.limits.max_storage_buffer_binding_size.min(self.ctx.limits.max_buffer_size);
        if bytes as u64 > limit || bytes as u64 >= 1 << 32 {
            return Err(Error::Gpu(format!(
                "the data set ({} images of {}x{}x{} = {bytes} bytes) does not fit {}'s largest storage binding ({limit} bytes)",
                images.count, images.channels, images.rows, images.cols, self.ctx.info.name
            )));
        }
        let mut words = pack_words(&images.pixels);
        words.resize(words.len().max(4), 0);
        let pixels = storage(&self.ctx, "pixels", words.len() * 4, wgpu::BufferUsages::empty())?;
        self.ctx.queue.write_buffer(&pixels, 0, bytemuck::cast_slice(&words));
        let labels = self.labels_buffer(images, 0)?;
        self.upload_order(images.clone(), pixels, labels, order_len)
    }

    pub(super) fn upload_order(
        &mut self,
        images: Arc<Images>,
        pixels: wgpu::Buffer,
        labels: wgpu::Buffer,
        order_len: usize,
    ) -> Result<DataSet> {
        let order = storage(&self.ctx, "order", order_len.max(1) * 4, wgpu::BufferUsages::empty())?;
        let graph = Graph::forward(&self.arch, false);
        let gather = [gather(&graph, graph.clean)];
        let bind = Bindings {
            params: &self.params.params,
            param_count: self.params.count,
            grads: None,
            adam: None,
            losses: None,
            data: Some(DataBindings { pixels: &pixels, order: &order, labels: &labels }),
        };
        let gather = emit(&self.ctx, &self.kernels, &graph, &gather, &mut self.pool, &bind)?;
        Ok(DataSet { images, pixels, order, order_len, labels, window: None, gather })
    }
}

/// u8 pixels packed four per u32 word, the first in the low byte (as the
/// gather kernel unpacks them).
pub(super) fn pack_words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| {
            let mut b = [0u8; 4];
            b[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(b)
        })
        .collect()
}
