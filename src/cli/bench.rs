//! `gpu-vae bench`: training throughput of the default models, one line of
//! JSON per (model, device), for side-by-side runs with the reference scripts
//! (`benches/compare.py`).

use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;

use super::device::open_gpu;
use super::{BenchArgs, DeviceChoice};
use crate::cpu::CpuModel;
use crate::data::{self, FolderOptions};
use crate::engine::{Engine, EpochPlan};
use crate::gpu::{GpuEngine, TimestampMode};
use crate::model::{Architecture, ModelKind, init_params};
use crate::rng;

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.epochs == 0 {
        bail!("invalid --epochs: must be at least 1");
    }
    let spec = data::parse_data_arg(args.data.as_deref());
    let set = data::load(&spec, &FolderOptions::default())?;
    let images = Arc::new(set.train);
    let devices: Vec<DeviceChoice> = args.device.clone();
    for &kind in &args.model {
        for &device in &devices {
            bench_one(&args, kind, device, &images, &set.name)?;
        }
    }
    Ok(())
}

fn bench_one(
    args: &BenchArgs,
    kind: ModelKind,
    device: DeviceChoice,
    images: &Arc<data::Images>,
    data_name: &str,
) -> anyhow::Result<()> {
    let train_args = super::TrainArgs::defaults_for(kind, args.arch);
    let mut config = super::train::config_from_args(&train_args)?;
    if let Some(b) = args.batch_size {
        config.batch_size = b;
    }
    config.model.image_rows = images.rows;
    config.model.image_cols = images.cols;
    config.model.channels = images.channels;
    config.validate()?;
    let arch = Architecture::new(&config.model)?;
    let params = init_params(&arch, config.init, config.seed);
    let device_args = super::DeviceArgs { device, checked_shaders: args.checked_shaders };
    // Concrete engines rather than `open_engine`'s box: `--profile` needs the GPU one.
    let (mut gpu, mut cpu) = (None, None);
    match open_gpu(&device_args)? {
        Some(ctx) => gpu = Some(GpuEngine::new(ctx, arch.clone(), &params, config.adam, config.batch_size)?),
        None => cpu = Some(CpuModel::new(arch.clone(), params.clone(), config.adam)),
    }
    let engine: &mut dyn Engine = match (&mut gpu, &mut cpu) {
        (Some(g), _) => g,
        (_, Some(c)) => c,
        _ => unreachable!("one engine is open"),
    };

    // Epoch 0 warms up (pipeline compilation, data upload, page faults) and is not counted.
    let mut seconds = Vec::new();
    let mut step = 0u64;
    let mut last_loss = f64::NAN;
    for epoch in 0..=args.epochs {
        let plan = EpochPlan {
            order: rng::permutation(images.count, config.seed, epoch as u32),
            batch_size: config.batch_size,
            first_step: step,
            seed: config.seed,
            noise_std: 0.0,
            beta: 1.0,
            lr: Default::default(),
        };
        let started = Instant::now();
        let sums = engine.train_epoch(images, &plan, &mut |_, _| {})?;
        if epoch > 0 {
            seconds.push(started.elapsed().as_secs_f64());
        }
        step += plan.batches() as u64;
        last_loss = crate::train::Losses::from_sums(&arch, sums, images.count).total;
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    let stats = engine.stats();
    let record = serde_json::json!({
        "tool": "gpu-vae",
        "model": kind,
        "arch": config.model.arch,
        "device": engine.describe(),
        "data": data_name,
        "batch": config.batch_size,
        "train": images.count,
        "epochs": args.epochs,
        "median_epoch_s": median,
        "min_epoch_s": seconds[0],
        "samples_per_s": images.count as f64 / median,
        "dispatches_per_step": stats.dispatches_per_step,
        "submits_per_epoch": stats.submits_per_epoch,
        "host_us_per_step": stats.host,
        "host_encode_us_per_dispatch": stats.host.zip(stats.dispatches_per_step).map(|(h, d)| (h.record_us + h.finish_us) / d as f64),
        "train_loss_last_epoch": last_loss,
    });
    println!("{record}");

    if args.profile {
        let plan = EpochPlan {
            order: rng::permutation(images.count, config.seed, args.epochs as u32 + 1),
            batch_size: config.batch_size,
            first_step: step,
            seed: config.seed,
            noise_std: 0.0,
            beta: 1.0,
            lr: Default::default(),
        };
        let wall_us = 1e6 * median / plan.batches() as f64;
        profile(gpu.as_mut(), images, &plan, args.profile_steps, wall_us)?;
    }
    Ok(())
}

/// `--profile`: the per-kernel table of a few training steps, or why there is none.
fn profile(
    gpu: Option<&mut GpuEngine>,
    images: &Arc<data::Images>,
    plan: &EpochPlan,
    steps: usize,
    wall_us: f64,
) -> anyhow::Result<()> {
    let Some(gpu) = gpu else {
        println!("profile: skipped: the CPU path has no kernels to time");
        return Ok(());
    };
    let Some(mode) = TimestampMode::best(gpu.context()) else {
        println!("profile: skipped: {} has no timestamp queries (TIMESTAMP_QUERY)", gpu.describe());
        return Ok(());
    };
    let p = gpu.profile_train_steps(images, plan, steps, mode)?;
    print!("{}", p.table(Some(wall_us)));
    Ok(())
}
