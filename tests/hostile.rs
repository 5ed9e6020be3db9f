//! Crafted inputs, tried as a user would (CPU path): every case ends in one
//! `Error:` line and exit status 1, never a panic (101), an abort or a
//! signal, and loses nothing. One test per reported case.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::LazyLock;

use assert_cmd::Command;
use gpu_vae::advanced::apps::codes;
use gpu_vae::advanced::checkpoint;
use gpu_vae::advanced::train::{CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE, state};

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

/// A fresh copy of the fixture's whole run, optimizer state included.
fn copy_full_run(dir: &Path) -> PathBuf {
    let run = copy_run(dir);
    std::fs::copy(FIXTURE.run.join(OPTIMIZER_FILE), run.join(OPTIMIZER_FILE)).unwrap();
    run
}

/// The fixture's command line, with `extra` flags, into `out`.
fn train_small(out: &Path, extra: &[&str]) -> Output {
    let args =
        [&["train", "--epochs", "1", "--hidden", "16", "--latent", "4", "--quiet", "--out", s(out)], extra].concat();
    gpu_vae(&args)
}

/// Runs gpu-vae under `sh -c`, with `setup` (ulimit, trap) before its `exec`.
fn gpu_vae_under(setup: &str, args: &[&str]) -> Output {
    let bin = assert_cmd::cargo::cargo_bin("gpu-vae");
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!("{setup}; exec '{}' {} --device cpu", bin.display(), quoted.join(" "));
    std::process::Command::new("sh").args(["-c", &script]).output().unwrap()
}

/// Every file in `dir` (recursively, not following links) with its contents.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            files.extend(snapshot(&path));
        } else if meta.is_file() {
            files.push((path.clone(), std::fs::read(&path).unwrap()));
        } else {
            files.push((path, Vec::new()));
        }
    }
    files.sort();
    files
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
    let leftover = out.join(format!("model.safetensors{}{dead}", gpu_vae::advanced::fsutil::TEMP_MARK));
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
            assert!(!name.contains(gpu_vae::advanced::fsutil::TEMP_MARK) && name != ".lock", "{name} left behind");
        }
    }
}

#[cfg(unix)]
#[test]
fn outputs_that_are_not_regular_files_are_refused_and_links_are_written_through() {
    // The atomic write renamed a regular file over device nodes, FIFOs and
    // links to /proc/self/fd/1 (as root, over /dev/null).
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let (to_null, to_stdout) = (dir.path().join("null"), dir.path().join("stdout"));
    std::os::unix::fs::symlink("/dev/null", &to_null).unwrap();
    std::os::unix::fs::symlink("/proc/self/fd/1", &to_stdout).unwrap();
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let cases =
        [(&fifo, "is a FIFO"), (&to_null, "a symbolic link to a device"), (&to_stdout, "a symbolic link to a FIFO")];
    for (out, what) in cases.iter().chain([&(&folder, "is a folder")]) {
        for command in ["sample", "encode"] {
            let err = error_of(&[command, "--run", s(&FIXTURE.run), "--out", s(out)]);
            assert_names(&err, &[s(out), what, "not a regular file: refusing to replace it"]);
        }
    }
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO stays");
    assert!(std::fs::symlink_metadata(&to_null).unwrap().file_type().is_symlink(), "the link stays");
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 4, "no temporary file is left");

    // A link to a regular file: written through, the link stays.
    let (target, link) = (dir.path().join("target.png"), dir.path().join("link.png"));
    std::fs::write(&target, "old").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = gpu_vae(&["sample", "--run", s(&FIXTURE.run), "--out", s(&link)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(std::fs::read(&target).unwrap().starts_with(b"\x89PNG"));
}

#[cfg(unix)]
#[test]
fn a_force_run_failing_or_killed_at_its_first_checkpoint_leaves_the_old_run() {
    // --force deleted the old config and optimizer before the new pair was
    // on disk: ENOSPC or SIGKILL there left no loadable run. The file size
    // limit makes the first checkpoint's write fail (EFBIG, SIGXFSZ ignored)
    // or kills the writer in it (SIGXFSZ): the new run's optimizer state
    // (3 MB) is over the limit, the old run (hidden 16) well under it.
    let dir = tempfile::tempdir().unwrap();
    for setup in ["trap '' XFSZ; ulimit -f 2048", "ulimit -f 2048"] {
        let run = copy_full_run(dir.path());
        let before = snapshot(&run);
        let out = gpu_vae_under(
            setup,
            &["train", "--force", "--hidden", "256", "--epochs", "1", "--quiet", "--out", s(&run)],
        );
        assert!(!out.status.success(), "{setup}: the first checkpoint should fail");
        let png = dir.path().join("s.png");
        let sample = gpu_vae(&["sample", "--run", s(&run), "--out", s(&png)]);
        assert!(sample.status.success(), "{setup}: the old run should still load: {}", stderr(&sample));
        let resume = gpu_vae(&["train", "--resume", s(&run), "--epochs", "2", "--quiet"]);
        assert!(resume.status.success(), "{setup}: the old run should resume: {}", stderr(&resume));
        assert_ne!(snapshot(&run), before);
        std::fs::remove_dir_all(&run).unwrap();
    }
}

#[test]
fn a_run_stopped_between_its_checkpoint_writes_stays_resumable() {
    // optimizer.safetensors was already the new one, model.safetensors still
    // the old: every later --resume refused the pair. Now the state is
    // staged (optimizer.safetensors.next) and the model's rename commits it.
    let dir = tempfile::tempdir().unwrap();
    let two = copy_full_run(&dir.path().join("two"));
    let out = gpu_vae(&["train", "--resume", s(&two), "--epochs", "2", "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let staged = |run: &Path| run.join(format!("{OPTIMIZER_FILE}.next"));
    // Stopped after the commit: the new model, the old state, the new state staged.
    let after = copy_full_run(&dir.path().join("after"));
    std::fs::copy(two.join(MODEL_FILE), after.join(MODEL_FILE)).unwrap();
    std::fs::copy(two.join(OPTIMIZER_FILE), staged(&after)).unwrap();
    // Stopped before it: the old pair, the new state staged.
    let before = copy_full_run(&dir.path().join("before"));
    std::fs::copy(two.join(OPTIMIZER_FILE), staged(&before)).unwrap();
    for (run, at) in [(&after, "after epoch 2"), (&before, "after epoch 1")] {
        let out = gpu_vae(&["train", "--resume", s(run), "--epochs", "3", "--quiet"]);
        assert!(out.status.success(), "{at}: {}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains(at), "{}", String::from_utf8_lossy(&out.stdout));
        assert!(!staged(run).exists());
    }
    // A pair from two moments with nothing staged (an older version's crash): refused, naming both.
    let mixed = copy_full_run(&dir.path().join("mixed"));
    std::fs::copy(two.join(MODEL_FILE), mixed.join(MODEL_FILE)).unwrap();
    let err = error_of(&["train", "--resume", s(&mixed), "--epochs", "3"]);
    assert_names(&err, &[OPTIMIZER_FILE, "epoch 2 batch 0", "epoch 3 batch 0", "stopped between the two writes"]);
}

#[test]
fn killed_runs_are_always_resumable() {
    // SIGKILL at any moment, a checkpoint's writes included, leaves a pair
    // that resumes.
    let dir = tempfile::tempdir().unwrap();
    let run = copy_full_run(dir.path());
    for delay_ms in [150, 230, 310, 390, 470, 550] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("gpu-vae"))
            .args(["train", "--device", "cpu", "--resume", s(&run), "--epochs", "1000", "--quiet"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let done = state::load(&run, checkpoint::load(&run.join(MODEL_FILE)).unwrap().1.len());
        assert!(done.is_ok(), "after {delay_ms} ms: {}", done.unwrap_err());
    }
}

#[test]
fn a_folder_of_other_files_is_not_touched_without_force_and_kept_with_it() {
    // Files of a folder that is not a run were deleted or overwritten.
    let dir = tempfile::tempdir().unwrap();
    let u = dir.path().join("u");
    std::fs::create_dir_all(u.join("epochs")).unwrap();
    for name in ["samples.png", "epochs/holiday.png", "notes.tmp-12345", "epochs/samples-x.png"] {
        std::fs::write(u.join(name), "k").unwrap();
    }
    let before = snapshot(&u);
    let err = error_of(&["train", "--epochs", "1", "--out", s(&u)]);
    assert_names(&err, &["--out", s(&u), "not a run's", "--force"]);
    assert_eq!(snapshot(&u), before, "nothing is touched");
    // With --force the run's own names are written, nothing else is touched.
    let out = train_small(&u, &["--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for name in ["epochs/holiday.png", "notes.tmp-12345", "epochs/samples-x.png"] {
        assert_eq!(std::fs::read(u.join(name)).unwrap(), b"k", "{name}");
    }
    assert_ne!(std::fs::read(u.join("samples.png")).unwrap(), b"k", "the run's own name is the run's");
}

#[cfg(unix)]
#[test]
fn an_epochs_link_and_out_inside_the_data_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("samples-001.png"), "k").unwrap();
    let run = copy_full_run(dir.path());
    std::os::unix::fs::symlink(&elsewhere, run.join("epochs")).unwrap();
    let err = error_of(&["train", "--force", "--epochs", "1", "--out", s(&run)]);
    assert_names(&err, &["epochs", "not a folder"]);
    let err = error_of(&["train", "--resume", s(&run), "--epochs", "2"]);
    assert_names(&err, &["epochs", "not a folder"]);
    assert_eq!(std::fs::read(elsewhere.join("samples-001.png")).unwrap(), b"k");

    // --out equal to --data, or inside it: the run's PNGs would become data.
    let pictures = dir.path().join("pictures");
    std::fs::create_dir(&pictures).unwrap();
    for i in 0..4 {
        image::GrayImage::from_pixel(28, 28, image::Luma([i * 9])).save(pictures.join(format!("{i}.png"))).unwrap();
    }
    let before = snapshot(&pictures);
    for out in [pictures.clone(), pictures.join("run")] {
        let err = error_of(&["train", "--force", "--data", s(&pictures), "--epochs", "1", "--out", s(&out)]);
        assert_names(&err, &["--out", "inside the data folder"]);
    }
    assert_eq!(snapshot(&pictures), before);
}

#[cfg(unix)]
#[test]
fn decode_png_write_errors_are_errors() {
    // With the disk full it said "wrote" and exited 0, its PNGs empty.
    let dir = tempfile::tempdir().unwrap();
    let codes = dir.path().join("c.codes");
    let out = gpu_vae(&["encode", "--run", s(&FIXTURE.run), "--n", "10", "--out", s(&codes)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pngs = dir.path().join("pngs");
    let args = ["decode", "--run", s(&FIXTURE.run), "--codes", s(&codes), "--format", "png", "--out", s(&pngs)];
    let out = gpu_vae_under("trap '' XFSZ; ulimit -f 0", &args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_names(&err, &["00000.png", "File too large"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("wrote"));
    assert_eq!(std::fs::read_dir(&pngs).unwrap().count(), 0, "no partial picture");
}

#[test]
fn resume_refuses_another_runs_state_and_changed_settings_or_data() {
    let dir = tempfile::tempdir().unwrap();
    // State of another run: another --lr, another --seed.
    for (flag, value) in [("--lr", "0.002"), ("--seed", "7")] {
        let other = dir.path().join(format!("other{flag}"));
        let out = train_small(&other, &[flag, value]);
        assert!(out.status.success(), "{}", stderr(&out));
        let run = copy_full_run(&dir.path().join(flag));
        std::fs::copy(other.join(OPTIMIZER_FILE), run.join(OPTIMIZER_FILE)).unwrap();
        let err = error_of(&["train", "--resume", s(&run), "--epochs", "2"]);
        assert_names(&err, &[OPTIMIZER_FILE, "written by another run"]);
    }
    // config.json edited: the setting is named.
    let run = copy_full_run(&dir.path().join("edited"));
    edit_config(&run, |c| c["batch_size"] = serde_json::json!(127));
    let err = error_of(&["train", "--resume", s(&run), "--epochs", "2"]);
    assert_names(&err, &[CONFIG_FILE, "settings changed", "batch_size: 128 -> 127"]);

    // One picture of sixty removed from a folder run's data.
    let pictures = dir.path().join("pictures");
    std::fs::create_dir(&pictures).unwrap();
    for i in 0..60u8 {
        image::GrayImage::from_pixel(28, 28, image::Luma([i * 4])).save(pictures.join(format!("{i:02}.png"))).unwrap();
    }
    let run = dir.path().join("folder-run");
    let out = train_small(&run, &["--data", s(&pictures)]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::remove_file(pictures.join("17.png")).unwrap();
    let err = error_of(&["train", "--resume", s(&run), "--epochs", "2"]);
    assert_names(&err, &["pictures", "not those the run was trained on"]);
}

#[test]
fn optimizer_state_and_adam_settings_out_of_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let params = checkpoint::load(&FIXTURE.run.join(MODEL_FILE)).unwrap().1.len();
    type Edit = fn(&mut gpu_vae::advanced::train::TrainState);
    let edits: [(Edit, &[&str]); 3] = [
        (|s| s.adam.v[3] = -1.0, &["tensor `adam.v` holds -1 at index 3"]),
        (|s| s.partial_seconds = f64::NAN, &["gpu_vae.seconds", "NaN is not a finite number"]),
        (
            |s| {
                let mut lines: Vec<String> = s.metrics.lines().map(String::from).collect();
                let row: Vec<&str> = lines[1].split(',').collect();
                lines[1] = [&row[..1], &["NaN"], &row[2..]].concat().join(",");
                s.metrics = lines.join("\n") + "\n";
            },
            &["line 2", "`NaN` is not a finite number"],
        ),
    ];
    for (i, (edit, words)) in edits.into_iter().enumerate() {
        let run = copy_full_run(&dir.path().join(i.to_string()));
        let path = run.join(OPTIMIZER_FILE);
        let mut st = state::parse(&std::fs::read(&path).unwrap(), &path, params).unwrap();
        edit(&mut st);
        state::save(&path, &st).unwrap();
        let err = error_of(&["train", "--resume", s(&run), "--epochs", "2"]);
        assert_names(&err, &[OPTIMIZER_FILE]);
        assert_names(&err, words);
    }
    for (key, value) in [("beta2", 1.0), ("beta1", -3.0)] {
        let run = copy_run(&dir.path().join(key));
        edit_config(&run, |c| c["adam"][key] = serde_json::json!(value));
        let err = error_of(&["sample", "--run", s(&run), "--out", s(&dir.path().join("s.png"))]);
        assert_names(&err, &[CONFIG_FILE, &format!("adam.{key}"), "not in [0, 1)"]);
    }
}

#[test]
fn small_ones_zero_epochs_huge_strings_and_resume_of_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("zero");
    let err = error_of(&["train", "--epochs", "0", "--out", s(&out)]);
    assert_names(&err, &["--epochs", "at least 1"]);
    assert!(!out.exists());

    // A 50 MB string in config.json was echoed in full.
    let run = copy_run(dir.path());
    edit_config(&run, |c| c["init"] = serde_json::json!("A".repeat(50 << 20)));
    let err = error_of(&["sample", "--run", s(&run), "--out", s(&dir.path().join("s.png"))]);
    assert_names(&err, &[CONFIG_FILE, "more bytes"]);
    assert!(err.len() < 1000, "{} bytes", err.len());

    let file = dir.path().join("some-file");
    std::fs::write(&file, "x").unwrap();
    let err = error_of(&["train", "--resume", s(&file)]);
    assert_names(&err, &["--resume", "it is not a folder"]);
}

/// Spawns `train` into `out` (`epochs` epochs of a small model, `extra` flags).
fn spawn_train(out: &Path, epochs: &str, extra: &[&str]) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("gpu-vae"))
        .args(["train", "--device", "cpu", "--epochs", epochs, "--hidden", "8", "--latent", "2", "--quiet"])
        .args(["--out", s(out)])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(path: &Path) {
    let started = std::time::Instant::now();
    while !path.exists() {
        assert!(started.elapsed().as_secs() < 60, "{} did not appear within a minute", path.display());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(unix)]
#[test]
fn timeout_sighup_and_signals_while_loading_stop_with_a_checkpoint() {
    // GNU timeout signals the process and its group: two SIGINTs at once
    // were taken for two Ctrl-Cs (exit at once, no checkpoint, stale lock).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let bin = assert_cmd::cargo::cargo_bin("gpu-vae");
    let timed = std::process::Command::new("timeout")
        .args(["--preserve-status", "-s", "INT", "1.5", s(&bin), "train", "--device", "cpu", "--epochs", "1000"])
        .args(["--hidden", "8", "--latent", "2", "--quiet", "--out", s(&out)])
        .output()
        .unwrap();
    assert_eq!(timed.status.code(), Some(130), "{}", stderr(&timed));
    assert!(stderr(&timed).contains("continue with: gpu-vae train --resume"), "{}", stderr(&timed));
    assert!(!out.join(".lock").exists(), "the lock goes with its writer");
    let params = checkpoint::load(&out.join(MODEL_FILE)).unwrap().1.len();
    state::load(&out, params).expect("the stopped run resumes");

    // SIGHUP (the terminal closed) is a stop request too.
    let out = dir.path().join("hup");
    let child = spawn_train(&out, "1000", &[]);
    wait_for(&out.join(CONFIG_FILE));
    assert!(std::process::Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    let done = child.wait_with_output().unwrap();
    assert_eq!(done.status.code(), Some(130), "{}", stderr(&done));
    assert!(stderr(&done).contains("continue with"), "{}", stderr(&done));

    // A signal while the data loads (a folder of 3000 pictures) stops the
    // run before its first step, with a message, and no lock is left.
    let pictures = dir.path().join("pictures");
    std::fs::create_dir(&pictures).unwrap();
    let mut png = Vec::new();
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * y) as u8]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    for i in 0..3000 {
        std::fs::write(pictures.join(format!("{i:04}.png")), &png).unwrap();
    }
    let out = dir.path().join("loading");
    let child = spawn_train(&out, "1000", &["--data", s(&pictures)]);
    wait_for(&out.join(".lock"));
    assert!(std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let done = child.wait_with_output().unwrap();
    assert_eq!(done.status.code(), Some(130), "{}", stderr(&done));
    assert!(stderr(&done).contains("interrupted before the first step"), "{}", stderr(&done));
    assert!(!out.join(".lock").exists());
}

#[test]
fn writers_racing_for_a_stale_lock_train_one_at_a_time() {
    // Two takers of a dead writer's lock: the slower removed the lock the
    // faster had just taken, and both trained into the folder.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join(".lock"), format!("{}\n", dead_pid())).unwrap();
    let children: Vec<_> = (0..6).map(|_| spawn_train(&out, "2", &[])).collect();
    let outputs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
    let won: Vec<&Output> = outputs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(won.len(), 1, "exactly one writer trains: {:?}", outputs.iter().map(stderr).collect::<Vec<_>>());
    for lost in outputs.iter().filter(|o| !o.status.success()) {
        let err = stderr(lost);
        assert!(err.contains("in use by") || err.contains("holds a run already"), "{err}");
    }
    assert!(!out.join(".lock").exists());
}
