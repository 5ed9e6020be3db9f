//! The CPU reference path: one plain function per op, forward and backward,
//! each the twin of the WGSL entry point of the same name in `shaders/`.
//!
//! Conventions (as in llm.c): outputs first, gradients prefixed `d`, a shape
//! comment on every slice. B = batch rows, I/O = a layer's input/output width,
//! D = pixels per image, L = latent width.

pub mod activation;
pub mod adam;
pub mod conv;
pub mod engine;
mod epoch;
pub mod interpreter;
pub mod loss;
pub mod matmul;
pub mod reparam;

pub use engine::CpuModel;
