//! `gpu-vae` end to end on the embedded data: the files a run writes, what
//! they contain, and a clear one-line error for every bad input.

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use gpu_vae::advanced::checkpoint;
use gpu_vae::advanced::engine::{Engine, EvalPlan};
use gpu_vae::advanced::viz::grid_size;

fn gpu_vae(args: &[&str]) -> Output {
    Command::cargo_bin("gpu-vae").unwrap().args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command that must fail and returns its one-line error.
fn error_of(args: &[&str]) -> String {
    let out = gpu_vae(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("Error: ")).collect();
    assert_eq!(lines.len(), 1, "{args:?} should print one Error line, printed:\n{err}");
    lines[0].to_string()
}

fn png_size(path: &Path) -> (u32, u32) {
    image::image_dimensions(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn last_csv_row(path: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().last().unwrap().split(',').map(|v| v.parse().unwrap()).collect()
}

#[test]
fn train_writes_every_file_and_the_checkpoint_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    let run = gpu_vae(&["train", "--epochs", "2", "--device", "cpu", "--out", out_s]);
    assert!(run.status.success(), "{}", stderr(&run));
    // The model as users name it, not a Rust type's name.
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("; model: VAE (MLP), 652,824 parameters; device: "), "{stdout}");

    for file in ["config.json", "model.safetensors", "metrics.csv", "samples.png", "reconstructions.png", "loss.png"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    image::open(out.join("loss.png")).expect("loss.png decodes");
    for epoch in ["001", "002"] {
        assert!(out.join(format!("epochs/samples-{epoch}.png")).is_file());
        assert!(out.join(format!("epochs/reconstructions-{epoch}.png")).is_file());
    }
    // 8x8 tiles of 28x28 with 2-pixel padding; reconstructions: 4 input rows + 4 output rows.
    assert_eq!(png_size(&out.join("samples.png")), grid_size(8, 8, 28, 28));
    assert_eq!(png_size(&out.join("reconstructions.png")), grid_size(8, 8, 28, 28));

    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "header + 2 epochs:\n{csv}");
    let last = last_csv_row(&out.join("metrics.csv"));

    // The saved model alone reproduces the logged test loss.
    let (arch, params) = checkpoint::load(&out.join("model.safetensors")).unwrap();
    let mut model = gpu_vae::advanced::cpu::CpuModel::for_inference(arch.clone(), params);
    let test = std::sync::Arc::new(
        gpu_vae::advanced::data::load(&gpu_vae::advanced::data::DataSpec::Embedded, &Default::default()).unwrap().test,
    );
    let sums = model.evaluate(&test, &EvalPlan { batch_size: 128, seed: 1, noise_std: 0.0 }).unwrap();
    let test_loss = (sums.recon + sums.kl) / test.count as f64;
    assert!((test_loss - last[4]).abs() < 1e-5 * last[4], "reloaded {test_loss} vs logged {}", last[4]);

    let sample = dir.path().join("s.png");
    let s = gpu_vae(&["sample", "--run", out_s, "--n", "20", "--seed", "3", "--out", sample.to_str().unwrap()]);
    assert!(s.status.success(), "{}", stderr(&s));
    assert_eq!(png_size(&sample), grid_size(3, 8, 28, 28));
}

#[test]
fn denoising_ae_trains_and_samples() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ae");
    let out_s = out.to_str().unwrap();
    let run =
        gpu_vae(&["train", "--model", "ae", "--noise", "0.3", "--epochs", "1", "--device", "cpu", "--out", out_s]);
    assert!(run.status.success(), "{}", stderr(&run));
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(config.contains("\"noise_std\": 0.3"), "{config}");
    let sample = dir.path().join("s.png");
    let s = gpu_vae(&["sample", "--run", out_s, "--out", sample.to_str().unwrap()]);
    assert!(s.status.success(), "{}", stderr(&s));
}

#[test]
fn bad_arguments_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never");
    let o = out.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--batch-size", "0"], "--batch-size"),
        (&["--latent", "0"], "--latent"),
        (&["--lr", "-0.001"], "--lr"),
        (&["--lr", "inf"], "--lr"),
        (&["--lr", "NaN"], "--lr"),
        (&["--noise", "-1"], "--noise"),
    ];
    for (args, name) in cases {
        let mut all = vec!["train", "--out", o];
        all.extend_from_slice(args);
        let err = error_of(&all);
        assert!(err.contains(name), "{args:?}: {err}");
    }
    assert!(!out.exists(), "a rejected run must not create its output directory");
}

#[test]
fn unwritable_output_and_missing_data_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let bad_out = file.join("run");
    let err = error_of(&["train", "--out", bad_out.to_str().unwrap()]);
    assert!(err.contains("a-file"), "{err}");

    let missing = dir.path().join("no-such-data");
    let err =
        error_of(&["train", "--data", missing.to_str().unwrap(), "--out", dir.path().join("r").to_str().unwrap()]);
    assert!(err.contains("no-such-data"), "{err}");

    let err = error_of(&["sample", "--run", missing.to_str().unwrap(), "--out", "x.png"]);
    assert!(err.contains("no-such-data"), "{err}");
}

#[test]
fn corrupt_idx_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // A labels header (magic 2049) where images are expected.
    std::fs::write(data.join("train-images-idx3-ubyte"), [0u8, 0, 8, 1, 0, 0, 0, 1, 7]).unwrap();
    std::fs::write(data.join("t10k-images-idx3-ubyte"), [0u8, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4])
        .unwrap();
    let err = error_of(&["train", "--data", data.to_str().unwrap(), "--out", dir.path().join("r").to_str().unwrap()]);
    assert!(err.contains("train-images-idx3-ubyte"), "{err}");
}

#[test]
fn diverging_training_stops_with_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let err = error_of(&["train", "--lr", "1e30", "--epochs", "1", "--device", "cpu", "--out", out.to_str().unwrap()]);
    assert!(err.contains("at step") && err.contains("epoch 1"), "{err}");
    assert!(!out.join("model.safetensors").exists(), "no epoch finished, so no checkpoint");
}

/// The schedule flags: a run's `lr` column follows StepLR, and a flag of
/// another schedule, or a floor above the rate, is one line naming the flag.
#[test]
fn lr_schedules_are_recorded_and_their_flags_checked() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args = ["train", "--model", "ae", "--epochs", "3", "--device", "cpu", "--quiet"];
    let step = ["--lr-schedule", "step", "--lr-step-epochs", "1", "--lr-gamma", "0.5", "--out"];
    let run = gpu_vae(&[&args[..], &step[..], &[out.to_str().unwrap()]].concat());
    assert!(run.status.success(), "{}", stderr(&run));
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(csv.lines().next().unwrap().ends_with(",lr"), "{csv}");
    let lr: Vec<f64> = csv.lines().skip(1).map(|l| l.rsplit(',').next().unwrap().parse().unwrap()).collect();
    assert_eq!(lr, [1e-3, 5e-4, 2.5e-4], "each epoch's last rate");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["lr_schedule"]["kind"], "step");

    let e = error_of(&["train", "--lr-min", "1e-4", "--epochs", "1"]);
    assert!(e.contains("--lr-min") && e.contains("cosine"), "{e}");
    let e = error_of(&["train", "--lr-schedule", "cosine", "--lr-min", "0.01", "--epochs", "1"]);
    assert!(e.contains("--lr-min") && e.contains("0.01"), "{e}");
    let e = error_of(&["train", "--lr-schedule", "step", "--lr-gamma", "2", "--epochs", "1"]);
    assert!(e.contains("--lr-gamma"), "{e}");
}
