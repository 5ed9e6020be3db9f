//! A run folder: one writer while it trains, then opened to be used.
//!
//! [`RunDir::open`] reads a trained run back: `config.json` validated like
//! the command line that wrote it, the checkpoint, and the two checked
//! against each other; every error is one line naming the file.
//!
//! `train --out DIR` takes `DIR/.lock` (holding its process id, and locked
//! with `flock` for as long as it trains, so that the kernel releases it
//! when the writer dies, however it dies), so a second writer stops with an
//! error instead of mixing its files with the first's. It takes a missing or
//! empty folder, or a run with `--force`; a folder of other files only with
//! `--force`, and then it replaces only the run's own file names
//! ([`claim`]). Checkpoints are staged and committed by one rename
//! (`super::state`), so the folder holds one whole run at every instant.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE, RECONSTRUCTIONS_FILE, SAMPLES_FILE, TrainConfig};
use crate::apps::{Draws, check_image_size};
use crate::checkpoint;
use crate::data::{self, DataSet, FolderOptions};
use crate::error::{Error, Result};
use crate::fsutil::{process_alive, temp_file_owner, write_atomic};
use crate::model::Architecture;

pub const LOCK_FILE: &str = ".lock";
/// The folder of per-epoch pictures inside a run.
pub const EPOCHS_DIR: &str = "epochs";

/// Ownership of a run folder; dropping it removes the lock file, then
/// releases its lock.
#[derive(Debug)]
pub struct RunDirLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl Drop for RunDirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The names a run writes at its top level, which `--force` may replace.
const RUN_FILES: [&str; 7] = [
    CONFIG_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    super::METRICS_FILE,
    SAMPLES_FILE,
    RECONSTRUCTIONS_FILE,
    super::LOSS_PLOT_FILE,
];

/// Whether `name` is one of a run's per-epoch pictures (`samples-007.png`).
fn is_epoch_picture(name: &str) -> bool {
    [SAMPLES_FILE, RECONSTRUCTIONS_FILE].iter().any(|file| {
        let stem = file.trim_end_matches(".png");
        name.strip_prefix(stem)
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|rest| rest.strip_suffix(".png"))
            .is_some_and(|n| n.len() >= 3 && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Whether `name` is a file a run or its writer keeps in the run's folder.
fn is_run_file(name: &str) -> bool {
    let base = name.strip_suffix(super::state::STAGED).unwrap_or(name);
    name == LOCK_FILE
        || RUN_FILES.contains(&base)
        || super::tensorboard::is_event_file(name)
        || temp_file_owner(name).is_some()
}

/// Whether `dir` holds a run: a configuration or a checkpoint.
pub fn holds_run(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).exists() || dir.join(MODEL_FILE).exists()
}

/// Takes the existing folder `dir` for a new run: locks it, refuses it when
/// it holds a run and `force` is off, and removes the temporary files that
/// killed writers left behind.
///
/// A folder that holds no run but other files is refused without `--force`
/// (the run's pictures would overwrite or sit among them); with it, only
/// the run's own names are written there and nothing else is touched.
/// `epochs/` must be a folder of its own, never a link to another.
pub fn claim(dir: &Path, force: bool) -> Result<RunDirLock> {
    let lock = lock(dir)?;
    check_epochs_dir(dir)?;
    if !force && holds_run(dir) {
        return Err(Error::invalid(
            "--out",
            format!("{} holds a run already; pass --force to replace it, or choose another folder", dir.display()),
        ));
    }
    if !force && let Some(other) = foreign_entry(dir)? {
        return Err(Error::invalid(
            "--out",
            format!(
                "{} holds files that are not a run's ({}); choose a new or empty folder, \
                 or pass --force to write the run's files among them",
                dir.display(),
                other.display()
            ),
        ));
    }
    settle(dir)?;
    remove_leftovers(dir)?;
    remove_leftovers(&dir.join(EPOCHS_DIR))?;
    Ok(lock)
}

/// Refuses an `--out` inside the `--data` folder: the run's pictures would
/// become training data (and `--force` would replace pictures of the data).
pub fn check_out_outside_data(out: &Path, config: &TrainConfig) -> Result<()> {
    let data::DataSpec::Path(data) = data::parse_data_arg(Some(&config.data)) else { return Ok(()) };
    if let (Ok(out_real), Ok(data_real)) = (std::fs::canonicalize(out), std::fs::canonicalize(&data))
        && out_real.starts_with(&data_real)
    {
        return Err(Error::invalid(
            "--out",
            format!(
                "{} is inside the data folder {}; the run's pictures would mix with its data",
                out.display(),
                data.display()
            ),
        ));
    }
    Ok(())
}

/// Refuses an `epochs` that is not a folder of the run's own (a link would
/// put the run's pictures, and their removal, somewhere else).
fn check_epochs_dir(dir: &Path) -> Result<()> {
    let epochs = dir.join(EPOCHS_DIR);
    match std::fs::symlink_metadata(&epochs) {
        Ok(meta) if !meta.is_dir() => Err(Error::bad_file(
            &epochs,
            "is not a folder (a symbolic link or a file); a run's epochs/ must be its own",
        )),
        _ => Ok(()),
    }
}

/// The first entry of `dir` that a run did not write, if any.
fn foreign_entry(dir: &Path) -> Result<Option<PathBuf>> {
    let entries = |d: &Path| -> Result<Vec<(String, PathBuf)>> {
        match std::fs::read_dir(d) {
            Ok(list) => list
                .map(|e| e.map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())))
                .collect::<std::io::Result<_>>()
                .map_err(|e| Error::io(d, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io(d, e)),
        }
    };
    for (name, path) in entries(dir)? {
        if name == EPOCHS_DIR {
            let other = entries(&path)?.into_iter().find(|(n, _)| !is_epoch_picture(n) && temp_file_owner(n).is_none());
            if let Some((_, path)) = other {
                return Ok(Some(path));
            }
        } else if !is_run_file(&name) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Takes the run in `dir` to continue it (`train --resume`): locks it,
/// refuses a folder without a run, and removes killed writers' temporary files.
pub fn reopen(dir: &Path) -> Result<RunDirLock> {
    if !dir.is_dir() {
        let why = if dir.exists() { "it is not a folder" } else { "it does not exist" };
        return Err(Error::invalid("--resume", format!("{} is not a run folder ({why})", dir.display())));
    }
    let lock = lock(dir)?;
    check_epochs_dir(dir)?;
    if !holds_run(dir) {
        return Err(Error::invalid("--resume", format!("{} holds no run to resume", dir.display())));
    }
    settle(dir)?;
    remove_leftovers(dir)?;
    remove_leftovers(&dir.join(EPOCHS_DIR))?;
    Ok(lock)
}

/// Takes `dir/.lock`: opens (or creates) it and locks it with `flock`. The
/// kernel drops a dead writer's lock, so a stale file is simply locked again,
/// and of two processes taking it at once only one gets it. A file naming a
/// live process that holds no lock (an older gpu-vae) counts as held too.
fn lock(dir: &Path) -> Result<RunDirLock> {
    let path = dir.join(LOCK_FILE);
    let holder = || std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<u32>().ok());
    loop {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(in_use(&path, holder())),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        // The last holder removes the file before it unlocks: a lock on a
        // file no longer in the folder guards nothing, so take the new one.
        if !same_file(&file, &path) {
            continue;
        }
        if let Some(other) = holder().filter(|&p| p != std::process::id() && process_alive(p)) {
            return Err(in_use(&path, Some(other)));
        }
        let pid = std::process::id();
        file.set_len(0).and_then(|()| writeln!(file, "{pid}")).map_err(|e| Error::io(&path, e))?;
        return Ok(RunDirLock { path, _file: file });
    }
}

#[cfg(unix)]
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &std::fs::File, path: &Path) -> bool {
    path.exists()
}

fn in_use(lock: &Path, pid: Option<u32>) -> Error {
    let who = pid.map_or("another process".to_string(), |p| format!("process {p}"));
    Error::bad_file(
        lock,
        format!("the run folder is in use by {who}; wait for it, or remove this file if no gpu-vae runs there"),
    )
}

/// Removes the temporary files (`*.gpu-vae-tmp-PID`) of writers that are no longer
/// running; those of live processes (a `sample --out` into the folder) stay.
fn remove_leftovers(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if let Some(pid) = temp_file_owner(&name)
            && !process_alive(pid)
            && path.is_file()
        {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// Removes the pictures an older run in `out` left (its own names only);
/// called once the new run's first checkpoint is committed.
pub fn clear_old_pictures(out: &Path) -> Result<()> {
    let mut stale = vec![out.join(SAMPLES_FILE), out.join(RECONSTRUCTIONS_FILE)];
    let epochs = out.join(EPOCHS_DIR);
    if let Ok(entries) = std::fs::read_dir(&epochs) {
        stale
            .extend(entries.flatten().filter(|e| is_epoch_picture(&e.file_name().to_string_lossy())).map(|e| e.path()));
    }
    for path in stale {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&path, e)),
            _ => {}
        }
    }
    Ok(())
}

/// Removes the TensorBoard event files an older run in `out` left, all but
/// `keep` (the new run's own); called with `clear_old_pictures`.
pub fn clear_old_events(out: &Path, keep: Option<&Path>) -> Result<()> {
    let entries = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if super::tensorboard::is_event_file(&entry.file_name().to_string_lossy()) && Some(path.as_path()) != keep {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&path, e)),
                _ => {}
            }
        }
    }
    Ok(())
}

/// The text of a run's `config.json`.
pub fn config_text(config: &TrainConfig) -> String {
    serde_json::to_string_pretty(config).expect("config serializes")
}

/// Writes the run's `config.json`.
pub fn write_config(out: &Path, config: &TrainConfig) -> Result<()> {
    write_atomic(&out.join(CONFIG_FILE), config_text(config).as_bytes())
}

/// Finishes a checkpoint whose model was committed: the staged files
/// (`config.json.next`, `optimizer.safetensors.next`) that belong with the
/// model take their places; those of a checkpoint never committed go.
/// Called by the writer after each commit and, under the lock, on each start.
pub fn settle(dir: &Path) -> Result<()> {
    let model = dir.join(MODEL_FILE);
    let position = if model.exists() { super::state::model_position(&model).ok() } else { None };
    let config = dir.join(CONFIG_FILE);
    let optimizer = dir.join(OPTIMIZER_FILE);
    for (file, belongs) in [
        (&config, staged_config_belongs(&super::state::staged(&config), position.as_ref())),
        (&optimizer, staged_state_belongs(&super::state::staged(&optimizer), position.as_ref())),
    ] {
        let staged = super::state::staged(file);
        let done = if belongs { std::fs::rename(&staged, file) } else { std::fs::remove_file(&staged) };
        match done {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&staged, e)),
            _ => {}
        }
    }
    if position.is_some() { crate::fsutil::sync_dir(&model).map_err(|e| Error::io(dir, e)) } else { Ok(()) }
}

fn staged_config_belongs(staged: &Path, position: Option<&super::state::Position>) -> bool {
    let Some(p) = position else { return false };
    std::fs::read_to_string(staged)
        .ok()
        .and_then(|text| serde_json::from_str::<TrainConfig>(&text).ok())
        .is_some_and(|c| super::state::config_fingerprint(&c) == p.config)
}

fn staged_state_belongs(staged: &Path, position: Option<&super::state::Position>) -> bool {
    let Some(p) = position else { return false };
    let Ok(bytes) = std::fs::read(staged) else { return false };
    safetensors::SafeTensors::read_metadata(&bytes).ok().is_some_and(|(_, meta)| {
        meta.metadata()
            .as_ref()
            .and_then(|m| m.get(checkpoint::POSITION_KEY))
            .and_then(|text| serde_json::from_str::<super::state::Position>(text).ok())
            .is_some_and(|q| q == *p)
    })
}

/// A trained run: its configuration, architecture and parameters.
#[derive(Clone, Debug)]
pub struct RunDir {
    path: PathBuf,
    config: TrainConfig,
    arch: Architecture,
    params: Vec<f32>,
}

impl RunDir {
    /// Reads and checks the run in `dir`: `config.json` must parse and pass
    /// [`TrainConfig::validate`] (the caps of `crate::limits` included), the
    /// checkpoint must load, and its model must be the configuration's.
    pub fn open(dir: &Path) -> Result<RunDir> {
        if !dir.is_dir() {
            return Err(Error::bad_file(dir, "not a run directory (it does not exist)"));
        }
        let model_path = dir.join(MODEL_FILE);
        // A writer stopped between its model's commit and the rename of its
        // staged config leaves the config that belongs with the model staged.
        let staged = super::state::staged(&dir.join(CONFIG_FILE));
        let position = super::state::model_position(&model_path).ok();
        let file = if staged_config_belongs(&staged, position.as_ref()) { staged } else { dir.join(CONFIG_FILE) };
        let config = read_config(&file)?;
        let (arch, params) = checkpoint::load(&model_path)?;
        if arch.config != config.model {
            return Err(Error::bad_file(model_path, format!("the checkpoint's model differs from {CONFIG_FILE}")));
        }
        Ok(RunDir { path: dir.to_path_buf(), config, arch, params })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    pub fn arch(&self) -> &Architecture {
        &self.arch
    }

    /// The flat parameters (`arch`'s layout).
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// The batch size and seed the ELBO's draws follow.
    pub fn draws(&self) -> Draws {
        Draws { batch_size: self.config.batch_size, seed: self.config.seed }
    }

    pub fn into_parts(self) -> (TrainConfig, Architecture, Vec<f32>) {
        (self.config, self.arch, self.params)
    }

    /// The data set the run was trained on ([`load_data`]), its images
    /// checked against the model's size.
    pub fn load_data(&self) -> Result<DataSet> {
        let set = load_data(&self.config)?;
        check_image_size(&self.arch, &set.test, &set.name)?;
        check_image_size(&self.arch, &set.train, &set.name)?;
        Ok(set)
    }
}

/// Reads a run's `config.json` and validates it; errors name the file.
pub fn read_config(path: &Path) -> Result<TrainConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let config: TrainConfig = serde_json::from_str(&text)
        .map_err(|e| Error::bad_file(path, format!("not a gpu-vae run configuration: {e}")))?;
    let betas = || {
        // Not flags, so not checked with them: Adam needs 0 <= beta < 1.
        for (name, beta) in [("adam.beta1", config.adam.beta1), ("adam.beta2", config.adam.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(Error::invalid(name, format!("{beta} is not in [0, 1)")));
            }
        }
        Ok(())
    };
    config
        .validate()
        .and_then(|()| betas())
        .map_err(|e| Error::BadRunConfig { path: path.to_path_buf(), error: Box::new(e) })?;
    Ok(config)
}

/// The data set a configuration names (`data`, with its image size, channel
/// count, test fraction and seed for a folder of pictures). Every use needs
/// test images (training reports test losses), so an empty test split is an error.
pub fn load_data(config: &TrainConfig) -> Result<DataSet> {
    load_data_with_channels(config, Some(config.model.channels))
}

/// [`load_data`] with a folder of pictures read as `channels` planes
/// (`None`: 3 if any picture has colour, else 1), as a new run's `--channels` asks.
pub fn load_data_with_channels(config: &TrainConfig, channels: Option<usize>) -> Result<DataSet> {
    let spec = data::parse_data_arg(Some(&config.data));
    let folder = FolderOptions {
        image_size: Some(config.model.image_rows),
        test_fraction: config.test_fraction,
        seed: config.seed,
        channels,
    };
    let set = data::load(&spec, &folder)?;
    // Without test images the test loss was 0/0, reported as a NaN loss at step 1.
    if set.test.count == 0 {
        return Err(Error::bad_file(
            &set.name,
            format!(
                "the test split is empty ({} image(s) in all); a folder of pictures needs at least 2",
                set.train.count
            ),
        ));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_writer_at_a_time_and_stale_locks_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let first = claim(dir.path(), false).unwrap();
        let e = claim(dir.path(), false).unwrap_err().to_string();
        assert!(e.contains(".lock") && e.contains("in use by process"), "{e}");
        drop(first);
        assert!(!dir.path().join(LOCK_FILE).exists());
        // A lock left by a process that is gone (pid 0 is never a user process).
        std::fs::write(dir.path().join(LOCK_FILE), "0\n").unwrap();
        let taken = claim(dir.path(), false).unwrap();
        let holder = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(holder.trim(), std::process::id().to_string());
        drop(taken);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no staged lock file is left");
    }

    #[test]
    fn a_run_is_replaced_only_with_force() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "{}").unwrap();
        let e = claim(dir.path(), false).unwrap_err().to_string();
        assert!(e.contains("holds a run") && e.contains("--force"), "{e}");
        assert!(!dir.path().join(LOCK_FILE).exists(), "a refused claim releases its lock");
        drop(claim(dir.path(), true).unwrap());
        assert!(dir.path().join(CONFIG_FILE).exists(), "--force keeps the old run until the first checkpoint");
    }

    #[test]
    fn leftovers_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let epochs = dir.path().join(EPOCHS_DIR);
        std::fs::create_dir(&epochs).unwrap();
        let dead = [dir.path().join("model.safetensors.gpu-vae-tmp-0"), epochs.join("samples-001.png.gpu-vae-tmp-0")];
        let live = dir.path().join(format!("metrics.csv.gpu-vae-tmp-{}", std::process::id()));
        for p in dead.iter().chain([&live]) {
            std::fs::write(p, "x").unwrap();
        }
        drop(claim(dir.path(), false).unwrap());
        assert!(dead.iter().all(|p| !p.exists()));
        assert!(live.exists(), "a live writer's file stays");
    }

    #[test]
    fn clearing_removes_only_the_old_runs_pictures() {
        let dir = tempfile::tempdir().unwrap();
        let epochs = dir.path().join(EPOCHS_DIR);
        std::fs::create_dir(&epochs).unwrap();
        for p in
            [dir.path().join(SAMPLES_FILE), epochs.join("samples-007.png"), epochs.join("reconstructions-1234.png")]
        {
            std::fs::write(p, "x").unwrap();
        }
        let kept = [dir.path().join(CONFIG_FILE), epochs.join("holiday.png"), epochs.join("samples-x.png")];
        for p in &kept {
            std::fs::write(p, "x").unwrap();
        }
        clear_old_pictures(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(&epochs).unwrap().count(), 2);
        assert!(kept.iter().all(|p| p.exists()));
        assert!(!dir.path().join(SAMPLES_FILE).exists());
    }
}
