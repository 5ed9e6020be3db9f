//! Trains a VAE on the embedded Fashion-MNIST subset for two epochs on the
//! CPU, then writes 32 draws from its prior as one picture.
//!
//!     cargo run --release --example train_and_sample -- [RUN_DIR] [SAMPLES_PNG]

use std::path::Path;

use gpu_vae::{Config, Device, Image, ModelKind};

fn main() -> gpu_vae::Result<()> {
    let mut args = std::env::args().skip(1);
    let run_dir = args.next().unwrap_or_else(|| "runs/example".into());
    let samples = args.next().unwrap_or_else(|| "runs/example-samples.png".into());
    train_and_sample(Path::new(&run_dir), Path::new(&samples))
}

pub fn train_and_sample(run_dir: &Path, samples: &Path) -> gpu_vae::Result<()> {
    let config = Config::new(ModelKind::Vae).epochs(2).device(Device::Cpu).force(true);
    let run = gpu_vae::train(&config, run_dir)?;
    println!("trained a {} into {}", run.describe(), run_dir.display());
    Image::save_grid(samples, &run.sample(32, 7)?, 8)?;
    println!("wrote {}", samples.display());
    Ok(())
}
