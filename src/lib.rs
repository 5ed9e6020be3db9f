//! gpu-vae: autoencoders and variational autoencoders trained with
//! hand-written WGSL kernels through wgpu, with a CPU reference path.

pub mod apps;
pub mod checkpoint;
pub mod cli;
pub mod cpu;
pub mod data;
pub mod engine;
pub mod error;
pub mod export;
pub mod fastmath;
pub mod font;
pub mod fsutil;
pub mod gpu;
pub mod limits;
pub mod model;
pub mod ops;
pub mod plot;
pub mod rng;
pub mod schedule;
pub mod train;
pub mod viz;
