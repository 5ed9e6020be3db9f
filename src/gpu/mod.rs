//! The GPU path: hand-written WGSL kernels (shaders/*.wgsl) driven through
//! wgpu, each the twin of a CPU function of the same name in `cpu`.
//!
//! - `context`: the device, built once.
//! - `shaders`: the kernel table, shared constants and pipelines.
//! - `params`: each family's parameter struct and bindings (WGSL generated from them).
//! - `lower`: a `model::Graph` lowered to kernel calls and bound to buffers.
//! - `fuse`: rewrites of the lowered calls (epilogues, row chains, grouped
//!   gradients with Adam; or tiles and split-K on the family kernels).
//! - `fused`: the WGSL of the generated kernels those rewrites make;
//!   `elementwise`: the table their element-wise ops are printed from.
//! - `program`: step programs (dispatch lists built once, replayed) and step tables.
//! - `ops`: one kernel on host data, for tests and benchmarks.
//! - `buffers`: storage buffers within the adapter's limits; the flat parameters.
//! - `engine`: `GpuEngine`, the `Engine` for training.
//! - `inference`: `GpuInference`, the `apps::Inference` for using a trained model.
//! - `profile`: per-kernel GPU time of training steps from timestamp queries.

pub mod buffers;
pub mod context;
pub mod elementwise;
pub mod engine;
pub mod fuse;
pub mod fused;
pub mod inference;
pub mod ir;
pub mod lower;
pub mod ops;
pub mod params;
pub mod profile;
pub mod program;
pub mod shaders;

pub use context::{AdapterSummary, GpuContext, GpuOptions, gpu_available, list_adapters};
pub use engine::{GpuEngine, GpuStats};
pub use inference::GpuInference;
pub use profile::{Profile, TimestampMode};
pub use shaders::{Family, Kernel, Kernels, MatmulForm, MatmulVariant};
