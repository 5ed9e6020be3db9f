//! One wgpu device, built once and shared (`Arc`) by everything on the GPU path.

use super::fuse::Fusion;
use super::fused::Pipelines;
use crate::error::{Error, Result};

/// How to pick and drive the device. The environment switches are read here
/// once (`with_env`, when a context is made) and nowhere else.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Create shader modules with wgpu's runtime checks (bounds clamping,
    /// bounded loops). Off by default: they cost 17-50x on NVIDIA, and every
    /// kernel guards its own indices. `GPU_VAE_CHECKED_SHADERS=1` turns it on.
    pub checked_shaders: bool,
    /// Substring of the adapter's name (case-insensitive); `WGPU_ADAPTER_NAME`
    /// when `None`.
    pub adapter_name: Option<String>,
    /// The programs' rewrites: `GPU_VAE_FUSE=0` none, `GPU_VAE_FUSE=tiles`
    /// the family kernels; `GPU_VAE_SPLIT_K=N` the family products' split-K
    /// target (0: off); `GPU_VAE_CONV=direct` the direct convolution
    /// kernels instead of the generated products, `GPU_VAE_CONV=products`
    /// every convolution a product of its own (no row chains through them).
    pub fusion: Fusion,
    /// The most bytes of a data set kept on the device whole; larger ones
    /// are streamed (`GPU_VAE_RESIDENT_BYTES`; `None`: the device's limits).
    pub resident_bytes: Option<u64>,
}

impl GpuOptions {
    /// The options after the environment variables have had their say.
    pub fn with_env(mut self) -> GpuOptions {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if var("GPU_VAE_CHECKED_SHADERS").is_some_and(|v| v != "0") {
            self.checked_shaders = true;
        }
        if self.adapter_name.is_none() {
            self.adapter_name = var("WGPU_ADAPTER_NAME");
        }
        match var("GPU_VAE_FUSE").as_deref() {
            Some("0") => self.fusion = Fusion::NONE,
            Some("tiles") => self.fusion = Fusion::TILES,
            _ => {}
        }
        match var("GPU_VAE_CONV").as_deref() {
            Some("direct") => self.fusion.conv_products = false,
            Some("products") => self.fusion.conv_rows = false,
            _ => {}
        }
        if let Some(target) = var("GPU_VAE_SPLIT_K").and_then(|v| v.parse().ok()) {
            self.fusion.split_k = target;
        }
        if let Some(bytes) = var("GPU_VAE_RESIDENT_BYTES").and_then(|v| v.parse().ok()) {
            self.resident_bytes = Some(bytes);
        }
        self
    }
}

/// An adapter as `gpu-vae devices` lists it.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b / (1 << 20);
        write!(
            f,
            "{} ({:?}, {:?}, driver {:?}): storage binding {} MiB, buffer {} MiB, workgroup memory {} KiB, {} invocations",
            self.name,
            self.backend,
            self.device_type,
            self.driver,
            mib(self.max_storage_buffer_binding_size),
            mib(self.max_buffer_size),
            self.max_compute_workgroup_storage_size / 1024,
            self.max_compute_invocations_per_workgroup
        )
    }
}

impl AdapterSummary {
    fn of(adapter: &wgpu::Adapter) -> AdapterSummary {
        let info = adapter.get_info();
        let limits = adapter.limits();
        AdapterSummary {
            name: info.name,
            backend: info.backend,
            device_type: info.device_type,
            driver: info.driver,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        }
    }
}

pub struct GpuContext {
    pub instance: wgpu::Instance,
    pub adapter: wgpu::Adapter,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// The limits the device was created with: the adapter's own.
    pub limits: wgpu::Limits,
    /// A CPU implementation such as lavapipe: correct but slow.
    pub is_software: bool,
    pub checked_shaders: bool,
    /// The rewrites and data residency every engine on this context starts with.
    pub fusion: Fusion,
    pub resident_bytes: Option<u64>,
    /// The timestamp features the device was opened with (those of
    /// `TIMESTAMP_QUERY | TIMESTAMP_QUERY_INSIDE_PASSES` the adapter has), for
    /// `gpu::profile`. Enabling them costs nothing until a query is written.
    pub timestamps: wgpu::Features,
    /// Every pipeline, compiled on first use and shared by training,
    /// evaluation and inference on this context.
    kernels: std::sync::OnceLock<std::sync::Arc<super::shaders::Kernels>>,
    /// The generated kernels' pipelines, by structure.
    pub generated: std::sync::Arc<Pipelines>,
}

fn instance() -> wgpu::Instance {
    // Honours WGPU_BACKEND (and the WGPU_* debug flags).
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter the instance sees, for `gpu-vae devices`.
pub fn list_adapters() -> Vec<AdapterSummary> {
    let instance = instance();
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    pollster::block_on(instance.enumerate_adapters(backends)).iter().map(AdapterSummary::of).collect()
}

/// `Some(description)` of the adapter `GpuContext::new` would use, `None`
/// with the reason printed when there is none: for tests that skip loudly.
pub fn gpu_available() -> std::result::Result<String, String> {
    match pick_adapter(&instance(), &GpuOptions::default().with_env()) {
        Ok(a) => {
            let info = a.get_info();
            Ok(format!("{} ({:?})", info.name, info.backend))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn pick_adapter(instance: &wgpu::Instance, opts: &GpuOptions) -> Result<wgpu::Adapter> {
    if let Some(want) = &opts.adapter_name {
        let want_lc = want.to_lowercase();
        let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
        let adapters = pollster::block_on(instance.enumerate_adapters(backends));
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&want_lc))
            .ok_or_else(|| Error::Gpu(format!("no adapter named like {want:?}; found {names:?}")));
    }
    let options = wgpu::RequestAdapterOptions {
        power_preference: wgpu::PowerPreference::from_env().unwrap_or(wgpu::PowerPreference::HighPerformance),
        ..Default::default()
    };
    pollster::block_on(instance.request_adapter(&options)).map_err(|e| Error::Gpu(format!("no wgpu adapter: {e}")))
}

/// The timestamp features to request: inside-passes only with the base
/// feature (wgpu refuses it alone).
fn timestamp_features(adapter: wgpu::Features) -> wgpu::Features {
    if !adapter.contains(wgpu::Features::TIMESTAMP_QUERY) {
        return wgpu::Features::empty();
    }
    adapter & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
}

impl GpuContext {
    pub fn new(opts: GpuOptions) -> Result<GpuContext> {
        let opts = opts.with_env();
        let instance = instance();
        let adapter = pick_adapter(&instance, &opts)?;
        let info = adapter.get_info();
        // The adapter's own limits: the defaults (128 MiB per storage binding)
        // are too small for a data set kept on the device.
        let limits = adapter.limits();
        let timestamps = timestamp_features(adapter.features());
        let desc = wgpu::DeviceDescriptor {
            label: Some("gpu-vae"),
            required_features: timestamps,
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&desc))
            .map_err(|e| Error::Gpu(format!("{}: cannot open the device: {e}", info.name)))?;
        Ok(GpuContext {
            is_software: info.device_type == wgpu::DeviceType::Cpu,
            checked_shaders: opts.checked_shaders,
            fusion: opts.fusion,
            resident_bytes: opts.resident_bytes,
            timestamps,
            kernels: Default::default(),
            generated: Default::default(),
            instance,
            adapter,
            device,
            queue,
            info,
            limits,
        })
    }

    /// A copy of this context's device handles with another shader mode, so
    /// tests can run both modes on one device.
    pub fn with_checked_shaders(&self, checked: bool) -> GpuContext {
        GpuContext {
            instance: self.instance.clone(),
            adapter: self.adapter.clone(),
            device: self.device.clone(),
            queue: self.queue.clone(),
            info: self.info.clone(),
            limits: self.limits.clone(),
            is_software: self.is_software,
            checked_shaders: checked,
            fusion: self.fusion,
            resident_bytes: self.resident_bytes,
            timestamps: self.timestamps,
            kernels: Default::default(),
            generated: Default::default(),
        }
    }

    /// The context's pipelines, built on the first call.
    pub fn kernels(&self) -> Result<std::sync::Arc<super::shaders::Kernels>> {
        if let Some(k) = self.kernels.get() {
            return Ok(k.clone());
        }
        let built =
            std::sync::Arc::new(super::shaders::Kernels::new(&self.device, &self.limits, self.checked_shaders)?);
        Ok(self.kernels.get_or_init(|| built).clone())
    }

    pub fn describe(&self) -> String {
        let soft = if self.is_software { ", software" } else { "" };
        let checked = if self.checked_shaders { ", checked shaders" } else { "" };
        format!("{} ({:?}{soft}{checked})", self.info.name, self.info.backend)
    }

    /// Waits for all submitted work.
    pub fn wait(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| Error::Gpu(format!("poll: {e}")))?;
        Ok(())
    }

    /// Reads `len` f32 from `buffer` at element `offset` (blocking).
    pub fn read_f32(&self, buffer: &wgpu::Buffer, offset: u64, len: usize) -> Result<Vec<f32>> {
        let bytes = (len * 4) as u64;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes.next_multiple_of(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buffer, offset * 4, &staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        self.map_read(&staging, bytes)
    }

    /// Reads `bytes` of a MAP_READ buffer once all submitted work is done (blocking).
    pub fn map_read(&self, staging: &wgpu::Buffer, bytes: u64) -> Result<Vec<f32>> {
        self.finish_read(staging, self.start_read(staging, bytes, None))
    }

    /// Asks for `bytes` of a MAP_READ buffer to be mapped once `submission`
    /// (by default all submitted work) is done, without waiting for it.
    pub fn start_read(
        &self,
        staging: &wgpu::Buffer,
        bytes: u64,
        submission: Option<wgpu::SubmissionIndex>,
    ) -> PendingRead {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..bytes).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        PendingRead { rx, bytes, submission }
    }

    /// Waits for a `start_read` (for its submission only: later submits may
    /// still be running) and returns the buffer's contents.
    pub fn finish_read(&self, staging: &wgpu::Buffer, read: PendingRead) -> Result<Vec<f32>> {
        let wait = wgpu::PollType::Wait { submission_index: read.submission, timeout: None };
        self.device.poll(wait).map_err(|e| Error::Gpu(format!("poll: {e}")))?;
        read.rx
            .recv()
            .map_err(|_| Error::Gpu("readback callback was dropped".into()))?
            .map_err(|e| Error::Gpu(format!("readback: {e}")))?;
        let slice = staging.slice(..read.bytes);
        let out = {
            let view = slice.get_mapped_range().map_err(|e| Error::Gpu(format!("readback: {e}")))?;
            bytemuck::cast_slice::<u8, f32>(&view).to_vec()
        };
        staging.unmap();
        Ok(out)
    }
}

/// A readback in flight (`GpuContext::start_read`).
pub struct PendingRead {
    rx: std::sync::mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
    bytes: u64,
    submission: Option<wgpu::SubmissionIndex>,
}
