//! `train --resume` and Ctrl-C on the CPU path: a run stopped (between
//! epochs, mid-epoch, by SIGINT or SIGTERM) and resumed ends with the same
//! `model.safetensors`, byte for byte, and the same loss columns in
//! `metrics.csv` as a run that never stopped. Small VAEs (hidden 16, latent
//! 4) on the embedded data.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use gpu_vae::advanced::checkpoint;
use gpu_vae::advanced::cpu::CpuModel;
use gpu_vae::advanced::data::{self, DataSpec};
use gpu_vae::advanced::engine::AdamConfig;
use gpu_vae::advanced::error::Error;
use gpu_vae::advanced::model::{Activation, Architecture, InitScheme, ModelConfig, ModelKind, ReconLoss, init_params};
use gpu_vae::advanced::schedule::{LrSchedule, ScheduleKind};
use gpu_vae::advanced::train::{
    self, EpochRecord, METRICS_FILE, MODEL_FILE, OPTIMIZER_FILE, Progress, Run, TrainConfig,
};

const SMALL: [&str; 5] = ["--hidden", "16", "--latent", "4", "--quiet"];

fn gpu_vae(args: &[&str]) -> Output {
    let mut cmd = Command::cargo_bin("gpu-vae").unwrap();
    cmd.args(args);
    if !args.contains(&"--device") {
        cmd.args(["--device", "cpu"]);
    }
    cmd.output().unwrap()
}

fn ok(args: &[&str]) {
    let out = gpu_vae(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The epoch and loss columns of metrics.csv (not seconds and samples/s).
fn losses(run: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run.join(METRICS_FILE)).unwrap();
    text.lines().map(|l| l.split(',').take(7).collect::<Vec<_>>().join(",")).collect()
}

/// Both runs' checkpoints equal byte for byte and their loss columns equal.
fn assert_same_run(resumed: &Path, straight: &Path) {
    let model = |d: &Path| std::fs::read(d.join(MODEL_FILE)).unwrap();
    assert!(model(resumed) == model(straight), "model.safetensors differ");
    assert_eq!(losses(resumed), losses(straight));
}

#[test]
fn resumed_after_two_epochs_equals_four_epochs_straight() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, resumed) = (dir.path().join("straight"), dir.path().join("resumed"));
    ok(&[&["train", "--epochs", "4", "--out", s(&straight)], &SMALL[..]].concat());
    ok(&[&["train", "--epochs", "2", "--out", s(&resumed)], &SMALL[..]].concat());
    assert_eq!(losses(&resumed).len(), 3, "header and two epochs");
    // --epochs with --resume is the new total: epochs 3 and 4 are trained.
    ok(&["train", "--resume", s(&resumed), "--epochs", "4", "--quiet"]);
    assert_same_run(&resumed, &straight);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(resumed.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["epochs"], 4, "config.json records the new total");
    assert!(resumed.join("epochs/samples-004.png").exists());
}

/// Raises the stop flag when epoch `epoch` has done `batches` batches.
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

fn small_config(epochs: usize) -> TrainConfig {
    TrainConfig {
        model: ModelConfig {
            kind: ModelKind::Vae,
            image_rows: 28,
            image_cols: 28,
            channels: 1,
            hidden: vec![16],
            latent: 4,
            loss: ReconLoss::Bce,
            activation: Activation::Relu,
            arch: gpu_vae::advanced::model::Arch::Mlp,
            conv: vec![],
            classes: 0,
        },
        init: InitScheme::Torch,
        adam: AdamConfig { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 },
        lr_schedule: Default::default(),
        batch_size: 128,
        epochs,
        beta: 1.0,
        kl_warmup: 2,
        noise_std: 0.1,
        seed: 4,
        normal_class: None,
        data: "embedded".into(),
        test_fraction: 1.0 / 6.0,
        class_names: vec![],
    }
}

/// In the library, with a denoising VAE and a KL warm-up (every per-step and
/// per-epoch input of the step): a stop mid-epoch writes a checkpoint of that
/// step, and continuing from it gives the uninterrupted run exactly.
#[test]
fn stopped_mid_epoch_and_resumed_equals_straight() {
    stopped_mid_epoch_and_resumed(small_config(3));
}

/// The same with a cosine schedule after a warm-up that outlasts the stop:
/// the resumed steps get the rates the uninterrupted ones did, bit for bit.
#[test]
fn a_scheduled_run_stopped_mid_epoch_resumes_exactly() {
    let lr_schedule = LrSchedule { kind: ScheduleKind::Cosine, warmup_steps: 120, lr_min: 1e-4, ..Default::default() };
    let cfg = TrainConfig { lr_schedule, ..small_config(3) };
    stopped_mid_epoch_and_resumed(cfg);
}

fn stopped_mid_epoch_and_resumed(cfg: TrainConfig) {
    let set = data::load(&DataSpec::Embedded, &Default::default()).unwrap();
    let (train_images, test_images) = (Arc::new(set.train), Arc::new(set.test));
    let arch = Architecture::new(&cfg.model).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (straight, resumed) = (dir.path().join("straight"), dir.path().join("resumed"));
    let run_in = |out| Run {
        config: &cfg,
        arch: &arch,
        train: train_images.clone(),
        test: test_images.clone(),
        out,
        tensorboard: false,
    };

    let fresh = || CpuModel::new(arch.clone(), init_params(&arch, cfg.init, cfg.seed), cfg.adam);
    let stop = AtomicBool::new(false);
    let mut never = StopAt { epoch: 0, batches: 0, current: 0, stop: &stop };
    train::train_from(&run_in(straight.as_path()), &mut fresh(), &mut never, None, Some(&stop)).unwrap();

    // 79 batches per epoch; ticks come every 2, so it stops after batch 32 or so.
    let mut at = StopAt { epoch: 2, batches: 31, current: 0, stop: &stop };
    let err = train::train_from(&run_in(resumed.as_path()), &mut fresh(), &mut at, None, Some(&stop)).unwrap_err();
    let Error::Interrupted { epoch, batches_done, step, .. } = err else { panic!("{err}") };
    assert_eq!(epoch, 2);
    assert!((31..79).contains(&batches_done), "stopped mid-epoch: {batches_done}");
    assert_eq!(step, 79 + batches_done as u64);
    assert_eq!(losses(&resumed).len(), 2, "metrics.csv holds epoch 1 only");

    let state = train::state::load(&resumed, arch.param_count).unwrap();
    assert_eq!(state.position.batches_done, batches_done);
    let (_, params) = checkpoint::load(&resumed.join(MODEL_FILE)).unwrap();
    let mut engine = CpuModel::new(arch.clone(), params, cfg.adam);
    stop.store(false, Ordering::SeqCst);
    train::train_from(&run_in(resumed.as_path()), &mut engine, &mut never, Some(state), Some(&stop)).unwrap();
    assert_same_run(&resumed, &straight);
}

/// Spawns `train` and waits until `metrics.csv` has `rows` epoch rows.
fn spawn_until(args: &[&str], run: &Path, rows: usize) -> std::process::Child {
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("gpu-vae"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::fs::read_to_string(run.join(METRICS_FILE)).map_or(0, |t| t.lines().count().saturating_sub(1)) < rows {
        assert!(started.elapsed() < Duration::from_secs(120), "no epoch {rows} within two minutes");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Into the next epoch (an epoch takes a second or more here).
    std::thread::sleep(Duration::from_millis(100));
    child
}

/// Sends `signal` and returns the child's stderr, after checking exit status 130.
fn signal(child: std::process::Child, signal: &str) -> String {
    let status = std::process::Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill {signal}");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "exit status after {signal}: {:?}\n{err}", out.status);
    err
}

#[cfg(unix)]
#[test]
fn sigint_and_sigterm_checkpoint_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (straight, run) = (dir.path().join("straight"), dir.path().join("run"));
    // Batches of 4: 2,500 steps, a second or more per epoch.
    let train = |out: &Path| -> Vec<String> {
        let head = ["train", "--device", "cpu", "--epochs", "3", "--batch-size", "4", "--out", s(out)];
        head.iter().chain(&SMALL).map(|a| a.to_string()).collect()
    };
    let run_args = train(&run);
    let run_args: Vec<&str> = run_args.iter().map(String::as_str).collect();
    let err = signal(spawn_until(&run_args, &run, 1), "-INT");
    let line = err.lines().find(|l| l.starts_with("interrupted at epoch")).unwrap_or_else(|| panic!("{err}"));
    let continue_with = format!("; continue with: gpu-vae train --resume {}", run.display());
    assert!(line.starts_with("interrupted at epoch ") && line.ends_with(&continue_with), "{line}");
    assert!(!err.contains("Error:"), "{err}");
    assert!(!run.join(".lock").exists(), "the lock goes with its writer");
    let state = train::state::load(&run, checkpoint::load(&run.join(MODEL_FILE)).unwrap().1.len()).unwrap();
    let (epoch, step) =
        line["interrupted at epoch ".len()..line.len() - continue_with.len()].split_once(", step ").unwrap();
    assert_eq!(state.position.epochs_done + 1, epoch.parse::<usize>().unwrap(), "{line}");
    assert_eq!(state.position.step, step.parse::<u64>().unwrap(), "{line}");
    assert!(state.position.epochs_done < 3, "{line}");

    // Resumed, then stopped again by SIGTERM in epoch 3.
    let resume = ["train", "--resume", s(&run), "--device", "cpu", "--quiet"];
    let err = signal(spawn_until(&resume, &run, 2), "-TERM");
    assert!(err.contains("interrupted at epoch ") && err.contains("continue with"), "{err}");

    ok(&resume);
    assert_eq!(losses(&run).len(), 4);
    let straight_args = train(&straight);
    ok(&straight_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_same_run(&run, &straight);
}

#[test]
fn resume_refuses_settings_and_a_torn_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    ok(&[&["train", "--epochs", "1", "--out", s(&run)], &SMALL[..]].concat());

    // A setting of the run's config.json: refused by the argument parser.
    let out = gpu_vae(&["train", "--resume", s(&run), "--hidden", "32"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--resume") && err.contains("--hidden"), "{err}");

    // Nothing left to train.
    let out = gpu_vae(&["train", "--resume", s(&run), "--epochs", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("has trained 1 epoch(s)") && err.contains("larger total"), "{err}");

    // The optimizer state of epoch 1 beside the model of epoch 2, as a crash
    // between the two writes would leave them: refused, nothing changed.
    let epoch1 = std::fs::read(run.join(OPTIMIZER_FILE)).unwrap();
    ok(&["train", "--resume", s(&run), "--epochs", "2", "--quiet"]);
    std::fs::write(run.join(OPTIMIZER_FILE), &epoch1).unwrap();
    let model = std::fs::read(run.join(MODEL_FILE)).unwrap();
    let out = gpu_vae(&["train", "--resume", s(&run), "--epochs", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("optimizer.safetensors") && err.contains("stopped between the two writes"), "{err}");
    assert!(std::fs::read(run.join(MODEL_FILE)).unwrap() == model);

    // No optimizer state at all (a run from before --resume).
    std::fs::remove_file(run.join(OPTIMIZER_FILE)).unwrap();
    let out = gpu_vae(&["train", "--resume", s(&run), "--epochs", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("optimizer.safetensors: missing"), "{err}");
}

/// The second signal does not wait for the step in flight: with steps of a
/// second or more (4,096 images through 3,000 hidden units, about 116 GFLOP,
/// on one thread), the process is gone well before the first step ends,
/// without a checkpoint.
#[cfg(unix)]
#[test]
fn a_second_sigint_quits_at_once() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("gpu-vae"))
        .args(["train", "--device", "cpu", "--epochs", "1", "--hidden", "3000", "--batch-size", "4096", "--quiet"])
        .arg("--out")
        .arg(&out)
        .env("RAYON_NUM_THREADS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The "data: ..." line comes just before training (and the handlers).
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("data:"), "{line}");
    std::thread::sleep(Duration::from_millis(300));
    let kill = || std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill().success());
    std::thread::sleep(Duration::from_millis(20));
    let sent = Instant::now();
    assert!(kill().success());
    let result = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(130), "{err}");
    assert!(sent.elapsed() < Duration::from_millis(500), "took {:?}", sent.elapsed());
    assert!(err.contains("press Ctrl-C again") && !err.contains("interrupted at epoch"), "{err}");
    assert!(!out.join(MODEL_FILE).exists());
}
