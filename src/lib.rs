//! gpu-vae: autoencoders and variational autoencoders trained with
//! hand-written WGSL kernels through wgpu, with a CPU reference path.
//!
//! # The library
//!
//! A trained run is a folder (`gpu-vae train --out DIR`, or [`train()`]);
//! [`Run::open`] loads it and puts the model to work on [`Image`]s:
//! [`Run::encode`] gives [`Latents`] (posterior means and log-variances, or
//! an AE's codes), [`Run::decode`] and [`Run::sample`] give images back,
//! [`Run::reconstruct`] and [`Run::score`] (anomaly scores) do both. A
//! conditional run (`--conditional`) takes each image's class through the
//! `_labelled` twin of each method. Every error is an [`Error`], one line.
//!
//! ```
//! # fn main() -> gpu_vae::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let out = dir.path().join("run");
//! use gpu_vae::{Config, Device, ModelKind, Run};
//!
//! // The embedded Fashion-MNIST subset, a small VAE, one epoch on the CPU.
//! let config = Config::new(ModelKind::Vae).hidden(&[64]).latent(4).epochs(1).device(Device::Cpu);
//! let run = gpu_vae::train(&config, &out)?;
//! assert_eq!(run.describe(), "VAE (MLP), 102,040 parameters");
//!
//! let samples = run.sample(8, 1)?; // 8 decoded draws from the prior
//! let latents = run.encode(&samples)?; // their posterior means and log-variances
//! assert_eq!(latents.mean[0].len(), 4);
//! let again = Run::open(&out)?.decode(&latents.mean)?;
//! assert_eq!((again[0].rows(), again[0].cols()), (28, 28));
//! # Ok(())
//! # }
//! ```
//!
//! `examples/` holds three short programs on this API (README, "Library").
//!
//! # Everything else: [`advanced`]
//!
//! The engines, the model graph, the data loaders, the uses of
//! `gpu-vae`'s subcommands and the command line itself live in one module,
//! [`advanced`], for programs that need more than the front door (the
//! tests use it). Their files stay where they were (`#[path = "."]` on
//! `advanced` makes `src/` its folder, so `src/cpu/mod.rs` is
//! `advanced::cpu`) rather than move under `src/advanced/`, which would
//! touch every file's history for a word of path; and the crate re-exports
//! them to itself (`pub(crate) use advanced::{cpu, ...}`), so the code
//! inside still writes `crate::cpu::...`.

mod facade;

pub use device::Device;
pub use error::{Error, Result};
pub use facade::{Config, Image, Latents, Run, train};
pub use model::{Arch, ModelKind};

// The modules' files stay in src/ (see above).
#[path = "."]
pub mod advanced {
    //! The crate's inner modules, for advanced use: training engines
    //! ([`engine::Engine`], [`cpu`], [`gpu`]), the model ([`model`]), data
    //! sets ([`data`]), the uses of a trained model ([`apps`]), run folders
    //! ([`train`]), ONNX export ([`export`]) and the command line ([`cli`]).
    //! Their items change more often than the crate root's.

    pub mod apps;
    pub mod checkpoint;
    pub mod cli;
    pub mod cpu;
    pub mod data;
    pub mod device;
    pub mod engine;
    pub mod error;
    pub mod export;
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
}

// Inside the crate the modules keep their short paths (`crate::cpu::...`).
pub(crate) use advanced::{
    apps, checkpoint, cli, cpu, data, device, engine, error, export, font, fsutil, gpu, limits, model, ops, plot, rng,
    schedule, train, viz,
};

/// Fast exp and log1p for the CPU loops; nothing outside needs them.
mod fastmath;
