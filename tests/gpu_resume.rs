//! `--resume` and stops on the GPU path, and the GPU's limits: a GPU run
//! stopped mid-epoch, continued on the CPU, stopped again and finished on the
//! GPU matches an uninterrupted GPU run (and the CPU run) within the
//! GPU-vs-CPU tolerance of tests/gpu_steps.rs; a batch whose activations
//! exceed the adapter's largest storage binding is refused before any step,
//! with the sizes named.

#[path = "common/gpu.rs"]
mod gpu_common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use assert_cmd::Command;
use gpu_common::{assert_close, gpu};
use gpu_vae::advanced::checkpoint;
use gpu_vae::advanced::cpu::CpuModel;
use gpu_vae::advanced::engine::{AdamConfig, Engine};
use gpu_vae::advanced::error::Error;
use gpu_vae::advanced::gpu::GpuEngine;
use gpu_vae::advanced::model::{Activation, Architecture, InitScheme, ModelConfig, ModelKind, ReconLoss, init_params};
use gpu_vae::advanced::train::{self, EpochRecord, MODEL_FILE, Progress, Run, TrainConfig, TrainState};

const ROWS: usize = 13;
const COLS: usize = 20;
const BATCH: usize = 8;
/// 48 training images: 6 batches per epoch.
const TRAIN: usize = 48;
const EPOCHS: usize = 4;

fn config() -> TrainConfig {
    TrainConfig {
        model: ModelConfig {
            kind: ModelKind::Vae,
            image_rows: ROWS,
            image_cols: COLS,
            channels: 1,
            hidden: vec![13],
            latent: 5,
            loss: ReconLoss::Bce,
            activation: Activation::Relu,
            arch: gpu_vae::advanced::model::Arch::Mlp,
            conv: vec![],
            classes: 0,
        },
        init: InitScheme::Torch,
        adam: AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 },
        lr_schedule: Default::default(),
        batch_size: BATCH,
        epochs: EPOCHS,
        beta: 0.7,
        kl_warmup: 0,
        noise_std: 0.2,
        seed: 5,
        normal_class: None,
        data: "test images".into(),
        test_fraction: 0.25,
        class_names: vec![],
    }
}

/// Raises the stop flag once epoch `epoch` has done `batches` batches.
struct StopAt<'a> {
    epoch: usize,
    batches: usize,
    current: usize,
    stop: &'a AtomicBool,
}

impl Progress for StopAt<'_> {
    fn epoch_started(&mut self, epoch: usize, _: usize) {
        self.current = epoch;
    }
    fn tick(&mut self, done: usize, _: f64) {
        if self.current == self.epoch && done >= self.batches {
            self.stop.store(true, Ordering::SeqCst);
        }
    }
    fn epoch_done(&mut self, _: &EpochRecord) {}
}

/// The losses of metrics.csv (epochs 1..) as numbers.
fn losses(run: &Path) -> Vec<f32> {
    let text = std::fs::read_to_string(run.join(train::METRICS_FILE)).unwrap();
    text.lines()
        .skip(1)
        .flat_map(|l| l.split(',').skip(1).take(6).map(|v| v.parse::<f32>().unwrap()).collect::<Vec<_>>())
        .collect()
}

fn params(run: &Path) -> Vec<f32> {
    checkpoint::load(&run.join(MODEL_FILE)).unwrap().1
}

#[test]
fn gpu_run_stopped_and_resumed_on_cpu_and_back_matches_an_uninterrupted_one() {
    let Some(gpu) = gpu("gpu_run_stopped_and_resumed_on_cpu_and_back_matches_an_uninterrupted_one") else { return };
    let ctx = gpu.modes[0].ctx.clone();
    let cfg = config();
    let arch = Architecture::new(&cfg.model).unwrap();
    let images = gpu_common::random_images(TRAIN + 16, ROWS, COLS);
    let split = |from: usize, to: usize| Arc::new(images.select(&(from..to).collect::<Vec<_>>()));
    let (train_images, test_images) = (split(0, TRAIN), split(TRAIN, TRAIN + 16));
    let dir = tempfile::tempdir().unwrap();
    let run_in = |out| Run {
        config: &cfg,
        arch: &arch,
        train: train_images.clone(),
        test: test_images.clone(),
        out,
        tensorboard: false,
    };
    let init = init_params(&arch, cfg.init, cfg.seed);
    let gpu_engine = |params: &[f32]| {
        let mut e = GpuEngine::new(ctx.clone(), arch.clone(), params, cfg.adam, BATCH).unwrap();
        e.steps_per_submit = 1; // a stop ends an epoch at a submit boundary
        e
    };
    let stop = AtomicBool::new(false);
    let mut never = StopAt { epoch: 0, batches: 0, current: 0, stop: &stop };

    let (straight, cpu_only, run) = (dir.path().join("gpu"), dir.path().join("cpu"), dir.path().join("run"));
    train::train_from(&run_in(straight.as_path()), &mut gpu_engine(&init), &mut never, None, None).unwrap();
    let mut cpu = CpuModel::new(arch.clone(), init.clone(), cfg.adam);
    train::train_from(&run_in(cpu_only.as_path()), &mut cpu, &mut never, None, None).unwrap();

    // GPU, stopped in epoch 2; CPU, stopped in epoch 3; GPU to the end.
    let legs: [(bool, usize); 3] = [(true, 2), (false, 3), (true, 0)];
    let mut state: Option<TrainState> = None;
    for (on_gpu, stop_in) in legs {
        let params = if state.is_some() { params(&run) } else { init.clone() };
        let mut engine: Box<dyn Engine> = if on_gpu {
            Box::new(gpu_engine(&params))
        } else {
            Box::new(CpuModel::new(arch.clone(), params, cfg.adam))
        };
        stop.store(false, Ordering::SeqCst);
        let mut at = StopAt { epoch: stop_in, batches: 2, current: 0, stop: &stop };
        let result = train::train_from(&run_in(run.as_path()), engine.as_mut(), &mut at, state.take(), Some(&stop));
        if stop_in == 0 {
            result.unwrap();
            break;
        }
        match result {
            Err(Error::Interrupted { epoch, batches_done, .. }) => {
                assert_eq!(epoch, stop_in);
                assert!((2..6).contains(&batches_done), "stopped mid-epoch: {batches_done} of 6 batches");
            }
            other => panic!("expected a stop in epoch {stop_in}, got {other:?}"),
        }
        state = Some(train::state::load(&run, arch.param_count).unwrap());
    }
    // GPU only: two epochs, then resumed to four (between epochs).
    let two = dir.path().join("two");
    let cfg2 = TrainConfig { epochs: 2, ..cfg.clone() };
    let run2 = Run { config: &cfg2, ..run_in(two.as_path()) };
    train::train_from(&run2, &mut gpu_engine(&init), &mut never, None, None).unwrap();
    let state2 = train::state::load(&two, arch.param_count).unwrap();
    assert_eq!((state2.position.epochs_done, state2.position.batches_done), (2, 0));
    train::train_from(&run_in(two.as_path()), &mut gpu_engine(&params(&two)), &mut never, Some(state2), None).unwrap();

    // As tests/gpu_steps.rs: 4e-8 per step on the parameters; losses as
    // metrics.csv prints them (6 decimals), relative 1e-4.
    let steps = (EPOCHS * TRAIN.div_ceil(BATCH)) as f32;
    assert_close("GPU 2 + 2 vs 4 epochs params", &params(&two), &params(&straight), 4e-8 * steps, 1e-5);
    assert_close("GPU 2 + 2 vs 4 epochs losses", &losses(&two), &losses(&straight), 1e-5, 1e-4);
    assert_close("resumed vs straight GPU params", &params(&run), &params(&straight), 4e-8 * steps, 1e-5);
    assert_close("resumed vs CPU params", &params(&run), &params(&cpu_only), 4e-8 * steps, 1e-5);
    assert_close("resumed vs straight GPU losses", &losses(&run), &losses(&straight), 1e-5, 1e-4);
    assert_close("resumed vs CPU losses", &losses(&run), &losses(&cpu_only), 1e-5, 1e-4);
    assert_eq!(losses(&run).len(), 6 * EPOCHS);
}

/// `train --resume --device`: a run started on the GPU, continued on the
/// CPU and finished on the GPU, through the command line, on a folder of
/// tiny pictures.
#[test]
fn resume_switches_devices_on_the_command_line() {
    let Some(gpu) = gpu("resume_switches_devices_on_the_command_line") else { return };
    let _ = gpu;
    let dir = tempfile::tempdir().unwrap();
    let pictures = dir.path().join("pictures");
    std::fs::create_dir(&pictures).unwrap();
    let images = gpu_common::random_images(36, 8, 8);
    for i in 0..images.count {
        let pixels = images.image(i).to_vec();
        image::GrayImage::from_raw(8, 8, pixels).unwrap().save(pictures.join(format!("{i:02}.png"))).unwrap();
    }
    let run = |args: &[&str]| {
        let out = Command::cargo_bin("gpu-vae").unwrap().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (straight, resumed) = (s(&dir.path().join("straight")), s(&dir.path().join("resumed")));
    let new_run = |out: &str, device: &str, epochs: &str| {
        let data = s(&pictures);
        let args =
            ["train", "--data", &data, "--image-size", "8", "--hidden", "8", "--latent", "2", "--batch-size", "8"];
        run(&[&args[..], &["--epochs", epochs, "--device", device, "--quiet", "--out", out]].concat());
    };
    new_run(&straight, "gpu", "3");
    new_run(&resumed, "gpu", "1");
    run(&["train", "--resume", &resumed, "--epochs", "2", "--device", "cpu", "--quiet"]);
    run(&["train", "--resume", &resumed, "--epochs", "3", "--device", "gpu", "--quiet"]);
    let (resumed, straight) = (Path::new(&resumed), Path::new(&straight));
    let steps = 3.0 * 4.0; // 30 training pictures in batches of 8
    assert_close("params", &params(resumed), &params(straight), 4e-8 * steps, 1e-5);
    assert_close("losses", &losses(resumed), &losses(straight), 1e-5, 1e-4);
}

/// Activations of a batch this large do not fit one storage binding: the
/// engine is refused when it is built, before any step, naming the batch,
/// the buffer's size and the adapter's limit.
#[test]
fn a_batch_beyond_the_storage_binding_limit_is_refused_before_training() {
    let Some(gpu) = gpu("a_batch_beyond_the_storage_binding_limit_is_refused_before_training") else { return };
    let ctx = gpu.modes[0].ctx.clone();
    let limit = ctx.limits.max_storage_buffer_binding_size.min(ctx.limits.max_buffer_size);
    let mut model = config().model;
    (model.image_rows, model.image_cols) = (28, 28);
    let arch = Architecture::new(&model).unwrap();
    let rows = (limit / (784 * 4)) as usize + 1;
    let params = init_params(&arch, InitScheme::Torch, 1);
    let adam = config().adam;
    let err = GpuEngine::new(ctx.clone(), arch, &params, adam, rows).err().expect("refused").to_string();
    let bytes = rows * 784 * 4;
    for words in [format!("a batch of {rows} images"), format!("needs {bytes} bytes"), format!("({limit} bytes)")] {
        assert!(err.contains(&words), "{words:?} not in: {err}");
    }

    // Through the command line, where the batch cap allows such a batch
    // (lavapipe: 128 MiB bindings; 65,536 rows of 784 pixels take 196 MiB).
    let batch = gpu_vae::advanced::limits::MAX_BATCH;
    if (batch * 784 * 4) as u64 <= limit {
        eprintln!("the adapter binds {limit} bytes: a batch of {batch} fits; the command-line half is skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let b = batch.to_string();
    let args = ["train", "--device", "gpu", "--batch-size", &b, "--hidden", "16", "--latent", "4", "--out"];
    let run = Command::cargo_bin("gpu-vae").unwrap().args(args).arg(&out).output().unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("a batch of {batch} images")) && err.contains("largest storage binding"), "{err}");
    assert!(!out.join(MODEL_FILE).exists() && !out.join(train::CONFIG_FILE).exists());
}
