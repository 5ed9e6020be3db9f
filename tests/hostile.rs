//! Crafted inputs, tried as a user would (CPU path): every case ends in one
//! `Error:` line and exit status 1, never a panic (101), an abort or a
//! signal, and loses nothing. One test per reported case.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::LazyLock;

use assert_cmd::Command;
use gpu_vae::apps::codes;
use gpu_vae::checkpoint;
use gpu_vae::train::{CONFIG_FILE, MODEL_FILE};

/// One small run trained once for the whole test binary, copied before
/// anything is done to it.
struct Fixture {
    _dir: tempfile::TempDir,
    run: PathBuf,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = gpu_vae(&["train", "--epochs", "1", "--hidden", "16", "--latent", "4", "--quiet", "--out", s(&run)]);
    assert!(out.status.success(), "training the fixture: {}", stderr(&out));
    Fixture { _dir: dir, run }
});

/// A fresh copy of the fixture's run (config and checkpoint) in `dir`.
fn copy_run(dir: &Path) -> PathBuf {
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    for file in [CONFIG_FILE, MODEL_FILE] {
        std::fs::copy(FIXTURE.run.join(file), run.join(file)).unwrap();
    }
    run
}

fn gpu_vae(args: &[&str]) -> Output {
    let mut cmd = Command::cargo_bin("gpu-vae").unwrap();
    cmd.args(args);
    if !args.contains(&"--device") {
        cmd.args(["--device", "cpu"]);
    }
    cmd.output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs a command that must fail cleanly: exit status 1 (not a panic's 101,
/// not a signal) and exactly one `Error:` line, which is returned.
fn error_of(args: &[&str]) -> String {
    let out = gpu_vae(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{args:?} should exit with 1, status {:?}:\n{err}", out.status);
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("Error: ")).collect();
    assert_eq!(lines.len(), 1, "{args:?} should print one Error line, printed:\n{err}");
    lines[0].to_string()
}

fn assert_names(err: &str, words: &[&str]) {
    for w in words {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
}

/// Rewrites a checkpoint's `gpu_vae.model` metadata with `edit`, keeping its tensors.
fn edit_checkpoint_metadata(path: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut metadata = meta.metadata().clone().unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&metadata["gpu_vae.model"]).unwrap();
    edit(&mut config);
    metadata.insert("gpu_vae.model".into(), config.to_string());
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let file = safetensors::serialize(tensors.tensors(), Some(metadata)).unwrap();
    std::fs::write(path, file).unwrap();
}

fn edit_config(run: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let path = run.join(CONFIG_FILE);
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
}

/// The id of a process that has exited.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn sample_n_that_wraps_matmul_shapes() {
    // 2^62: n·latent wrapped to 0 and matrixmultiply wrote out of bounds (SIGSEGV).
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("s.png");
    for n in ["4611686018427387904", "100000000000"] {
        let err = error_of(&["sample", "--run", s(&FIXTURE.run), "--n", n, "--out", s(&png)]);
        assert_names(&err, &["--n", n, "limit"]);
    }
    assert!(!png.exists());
}

#[test]
fn checkpoint_declaring_a_huge_model() {
    // [1e9] aborted allocating 6.3 TB; [2^62] panicked with a capacity overflow.
    for hidden in [1_000_000_000u64, 1 << 62] {
        let dir = tempfile::tempdir().unwrap();
        let run = copy_run(dir.path());
        edit_checkpoint_metadata(&run.join(MODEL_FILE), |c| c["hidden"] = serde_json::json!([hidden]));
        let err = error_of(&["sample", "--run", s(&run), "--out", s(&dir.path().join("s.png"))]);
        assert_names(&err, &["model.safetensors", "bad model config", "parameters"]);
    }
}

#[test]
fn checkpoint_whose_tensors_do_not_match_its_model() {
    // A plausible config (hidden 17) but the tensors of hidden 16: refused
    // by shape, before the parameter buffer is allocated.
    let dir = tempfile::tempdir().unwrap();
    let run = copy_run(dir.path());
    edit_checkpoint_metadata(&run.join(MODEL_FILE), |c| c["hidden"] = serde_json::json!([17]));
    let err = error_of(&["sample", "--run", s(&run), "--out", s(&dir.path().join("s.png"))]);
    assert_names(&err, &["model.safetensors", "tensor `encoder.0.weight`", "expected F32 [17, 784]"]);
}

#[test]
fn checkpoint_of_nan_weights() {
    let dir = tempfile::tempdir().unwrap();
    let run = copy_run(dir.path());
    let path = run.join(MODEL_FILE);
    let (arch, mut params) = checkpoint::load(&path).unwrap();
    let spec = arch.tensors.iter().find(|t| t.name == "decoder.1.weight").unwrap();
    params[spec.offset + 5] = f32::NAN;
    checkpoint::save(&path, &arch, &params).unwrap();
    let err = error_of(&["reconstruct", "--run", s(&run), "--out", s(&dir.path().join("r.png"))]);
    assert_names(&err, &["model.safetensors", "tensor `decoder.1.weight`", "non-finite", "NaN at index 5"]);
}

#[test]
fn huge_batch_size_is_refused_before_training() {
    // It used to fail allocating only after a whole epoch.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let err = error_of(&["train", "--batch-size", "100000000000", "--out", s(&out)]);
    assert_names(&err, &["--batch-size", "limit"]);
    assert!(!out.exists());
}

#[test]
fn huge_image_sizes_are_refused() {
    // 100000 ate all memory; 2^32 + 1 became 1x1 images through `as u32`.
    let dir = tempfile::tempdir().unwrap();
    for size in ["100000", "4294967297"] {
        let err = error_of(&["train", "--image-size", size, "--out", s(&dir.path().join("run"))]);
        assert_names(&err, &["--image-size", size]);
    }
}

#[test]
fn huge_interpolation_steps_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("i.png");
    let err = error_of(&["interpolate", "--run", s(&FIXTURE.run), "--steps", "100000000000", "--out", s(&png)]);
    assert_names(&err, &["--steps", "limit"]);
}

#[test]
fn eval_k_that_wraps_rows_times_k() {
    // 2^58 · 2,000 images wrapped to 0 and printed "NLL <= inf" with exit 0.
    let err = error_of(&["eval", "--run", s(&FIXTURE.run), "--k", "288230376151711744"]);
    assert_names(&err, &["--k", "limit"]);
    // Within the cap for k, but not for images · k.
    let err = error_of(&["eval", "--run", s(&FIXTURE.run), "--k", "1000000"]);
    assert_names(&err, &["--k", "2000 images x 1000000 samples"]);
}

#[test]
fn zero_batch_size_in_config_json() {
    // It panicked in `chunks` ("chunk size must be non-zero").
    let dir = tempfile::tempdir().unwrap();
    let run = copy_run(dir.path());
    edit_config(&run, |c| c["batch_size"] = serde_json::json!(0));
    for command in ["eval", "anomaly"] {
        let err = error_of(&[command, "--run", s(&run)]);
        assert_names(&err, &["config.json", "--batch-size", "at least 1"]);
    }
    edit_config(&run, |c| c["batch_size"] = serde_json::json!(1u64 << 40));
    assert_names(&error_of(&["eval", "--run", s(&run)]), &["config.json", "--batch-size"]);
}

#[test]
fn non_finite_codes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.codes");
    let mut z = vec![0.5f32; 3 * 4];
    z[6] = f32::NAN;
    std::fs::write(&file, codes::to_bytes(&z, 4, (1, 28, 28), codes::Bits::Sixteen)).unwrap();
    let out = dir.path().join("out.idx");
    let err = error_of(&["decode", "--run", s(&FIXTURE.run), "--codes", s(&file), "--out", s(&out)]);
    assert_names(&err, &["c.codes", "code 2 of image 1 is NaN"]);
    z[6] = f32::INFINITY;
    std::fs::write(&file, codes::to_bytes(&z, 4, (1, 28, 28), codes::Bits::Sixteen)).unwrap();
    let err = error_of(&["decode", "--run", s(&FIXTURE.run), "--codes", s(&file), "--out", s(&out)]);
    assert_names(&err, &["c.codes", "code 2 of image 1 is inf"]);
    assert!(!out.exists());
}

#[test]
fn training_into_a_run_needs_force_and_keeps_the_old_run_until_the_first_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = copy_run(dir.path());
    std::fs::create_dir(run.join("epochs")).unwrap();
    std::fs::write(run.join("epochs/samples-009.png"), "old").unwrap();
    let before = |f: &str| std::fs::read(run.join(f)).unwrap();
    let (config, model) = (before(CONFIG_FILE), before(MODEL_FILE));

    // Without --force: refused, nothing touched.
    let err = error_of(&["train", "--epochs", "1", "--out", s(&run)]);
    assert_names(&err, &["--out", "holds a run", "--force"]);
    // With --force, another architecture diverging in epoch 1: the old run stays whole.
    let err = error_of(&["train", "--force", "--hidden", "8", "--lr", "1e30", "--epochs", "1", "--out", s(&run)]);
    assert_names(&err, &["at step", "last good checkpoint is kept"]);
    assert_eq!((before(CONFIG_FILE), before(MODEL_FILE)), (config.clone(), model.clone()));
    let png = dir.path().join("s.png");
    assert!(gpu_vae(&["sample", "--run", s(&run), "--out", s(&png)]).status.success(), "the old run still loads");
    assert!(!run.join(".lock").exists(), "the lock goes with its writer");

    // With --force and a good run: config and model replaced together, old pictures gone.
    let out = gpu_vae(&["train", "--force", "--hidden", "8", "--epochs", "1", "--quiet", "--out", s(&run)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(before(MODEL_FILE), model);
    let config: serde_json::Value = serde_json::from_slice(&before(CONFIG_FILE)).unwrap();
    assert_eq!(config["model"]["hidden"], serde_json::json!([8]));
    assert!(!run.join("epochs/samples-009.png").exists(), "stale pictures of the old run are removed");
    assert!(run.join("epochs/samples-001.png").exists());
    assert!(gpu_vae(&["sample", "--run", s(&run), "--out", s(&png)]).status.success());
}

#[test]
fn a_second_writer_is_stopped_and_stale_locks_and_leftovers_are_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    std::fs::create_dir(&out).unwrap();
    // A live writer (this test process) holds the folder.
    std::fs::write(out.join(".lock"), format!("{}\n", std::process::id())).unwrap();
    let err = error_of(&["train", "--epochs", "1", "--out", s(&out)]);
    assert_names(&err, &[".lock", "in use by process"]);
    assert!(!out.join(CONFIG_FILE).exists());

    // A killed writer: its lock and its temporary files are taken over and removed.
    let dead = dead_pid();
    std::fs::write(out.join(".lock"), format!("{dead}\n")).unwrap();
    let leftover = out.join(format!("model.safetensors.tmp-{dead}"));
    std::fs::write(&leftover, "half a file").unwrap();
    let run = gpu_vae(&["train", "--epochs", "1", "--hidden", "8", "--quiet", "--out", s(&out)]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(!leftover.exists() && !out.join(".lock").exists());
}

#[test]
fn gzip_bomb_is_refused_without_unpacking_it() {
    // A valid header for 10 images of 28x28, then 64 MiB of zeros (64 KiB gzipped).
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&[0, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28]).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    for name in ["train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"] {
        std::fs::write(data.join(name), &bomb).unwrap();
    }
    let err = error_of(&["train", "--data", s(&data), "--out", s(&dir.path().join("run"))]);
    assert_names(&err, &["train-images-idx3-ubyte.gz", "trailing data", "10x28x28 = 7840 bytes"]);
}

#[test]
fn empty_test_split_is_named() {
    // It reported "loss became NaN at step 1" (0/0 test loss).
    let dir = tempfile::tempdir().unwrap();
    let pictures = dir.path().join("pictures");
    std::fs::create_dir(&pictures).unwrap();
    image::GrayImage::from_pixel(28, 28, image::Luma([9])).save(pictures.join("only.png")).unwrap();
    let err = error_of(&["train", "--data", s(&pictures), "--out", s(&dir.path().join("run"))]);
    assert_names(&err, &["pictures", "the test split is empty"]);
}

#[test]
fn io_errors_are_printed_once() {
    // "File exists (os error 17): File exists (os error 17)".
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let err = error_of(&["train", "--out", s(&file.join("run"))]);
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    let err = error_of(&["decode", "--run", s(&FIXTURE.run), "--codes", s(&file.join("c")), "--out", "x"]);
    assert_eq!(err.matches("os error").count(), 1, "{err}");
}

#[test]
fn a_killed_writer_leaves_a_loadable_run_and_the_next_one_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("gpu-vae"))
        .args(["train", "--device", "cpu", "--epochs", "1000", "--hidden", "8", "--latent", "2", "--quiet"])
        .args(["--out", s(&out)])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !out.join(CONFIG_FILE).exists() {
        assert!(started.elapsed().as_secs() < 60, "no first checkpoint within a minute");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    assert!(out.join(".lock").exists(), "a killed writer cannot remove its lock");

    // The config and the last complete checkpoint load together.
    let png = dir.path().join("s.png");
    let sample = gpu_vae(&["sample", "--run", s(&out), "--out", s(&png)]);
    assert!(sample.status.success(), "{}", stderr(&sample));
    // The next writer takes the stale lock over and removes the leftovers.
    let run = gpu_vae(&["train", "--force", "--epochs", "1", "--hidden", "8", "--quiet", "--out", s(&out)]);
    assert!(run.status.success(), "{}", stderr(&run));
    for dir in [out.clone(), out.join("epochs")] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(!name.contains(".tmp-") && name != ".lock", "{name} left behind");
        }
    }
}
