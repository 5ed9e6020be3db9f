//! A run folder: one writer while it trains, then opened to be used.
//!
//! [`RunDir::open`] reads a trained run back: `config.json` validated like
//! the command line that wrote it, the checkpoint, and the two checked
//! against each other; every error is one line naming the file.
//!
//! `train --out DIR` takes `DIR/.lock` (holding its process id) for as long
//! as it trains, so a second writer stops with an error instead of mixing its
//! files with the first's; a lock whose process is gone is taken over. It
//! refuses a folder that already holds a run unless `--force`, and even then
//! the old run's files stay until the new run writes its first checkpoint
//! ([`clear_old_run`], [`write_config`]): a new run that is killed or
//! diverges in its first epoch leaves the old run loadable.

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

/// Ownership of a run folder; dropping it removes the lock file.
#[derive(Debug)]
pub struct RunDirLock {
    path: PathBuf,
}

impl Drop for RunDirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether `dir` holds a run: a configuration or a checkpoint.
pub fn holds_run(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).exists() || dir.join(MODEL_FILE).exists()
}

/// Takes the existing folder `dir` for a new run: locks it, refuses it when
/// it holds a run and `force` is off, and removes the temporary files that
/// killed writers left behind.
pub fn claim(dir: &Path, force: bool) -> Result<RunDirLock> {
    let lock = lock(dir)?;
    if !force && holds_run(dir) {
        return Err(Error::invalid(
            "--out",
            format!("{} holds a run already; pass --force to replace it, or choose another folder", dir.display()),
        ));
    }
    remove_leftovers(dir)?;
    remove_leftovers(&dir.join(EPOCHS_DIR))?;
    Ok(lock)
}

/// Takes the run in `dir` to continue it (`train --resume`): locks it,
/// refuses a folder without a run, and removes killed writers' temporary files.
pub fn reopen(dir: &Path) -> Result<RunDirLock> {
    if !dir.is_dir() {
        return Err(Error::invalid("--resume", format!("{} is not a run folder (it does not exist)", dir.display())));
    }
    let lock = lock(dir)?;
    if !holds_run(dir) {
        return Err(Error::invalid("--resume", format!("{} holds no run to resume", dir.display())));
    }
    remove_leftovers(dir)?;
    remove_leftovers(&dir.join(EPOCHS_DIR))?;
    Ok(lock)
}

/// Creates `dir/.lock` with this process's id, or takes over a lock whose
/// process is gone. The file is written beside and hard-linked into place, so
/// that the lock never exists without its id (linking fails if it exists).
fn lock(dir: &Path) -> Result<RunDirLock> {
    let path = dir.join(LOCK_FILE);
    let pid = std::process::id();
    let staged = dir.join(format!("{LOCK_FILE}{}{pid}", crate::fsutil::TEMP_MARK));
    std::fs::File::create(&staged).and_then(|mut f| writeln!(f, "{pid}")).map_err(|e| Error::io(&staged, e))?;
    // Twice: a stale lock removed on the first try is replaced on the second.
    let mut result = Err(in_use(&path, None));
    for _ in 0..2 {
        match std::fs::hard_link(&staged, &path) {
            Ok(()) => {
                result = Ok(RunDirLock { path: path.clone() });
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse::<u32>().ok());
                match holder {
                    Some(other) if process_alive(other) => {
                        result = Err(in_use(&path, Some(other)));
                        break;
                    }
                    // Its writer is gone (killed): the lock is stale. (Two
                    // takers racing here may both remove it; only one link wins.)
                    _ => {
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            Err(e) => {
                result = Err(Error::io(&path, e));
                break;
            }
        }
    }
    let _ = std::fs::remove_file(&staged);
    result
}

fn in_use(lock: &Path, pid: Option<u32>) -> Error {
    let who = pid.map_or("another process".to_string(), |p| format!("process {p}"));
    Error::bad_file(
        lock,
        format!("the run folder is in use by {who}; wait for it, or remove this file if no gpu-vae runs there"),
    )
}

/// Removes the temporary files (`*.tmp-PID`) of writers that are no longer
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

/// Removes what an older run in `out` left that the new run does not rewrite
/// at once: its configuration and optimizer state (so that they never sit
/// beside the new model) and its pictures. Called just before a run's first checkpoint.
pub fn clear_old_run(out: &Path) -> Result<()> {
    let mut stale =
        vec![out.join(CONFIG_FILE), out.join(OPTIMIZER_FILE), out.join(SAMPLES_FILE), out.join(RECONSTRUCTIONS_FILE)];
    let epochs = out.join(EPOCHS_DIR);
    if let Ok(entries) = std::fs::read_dir(&epochs) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "png") {
                stale.push(path);
            }
        }
    }
    for path in stale {
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&path, e)),
            _ => {}
        }
    }
    Ok(())
}

/// Writes the run's `config.json`; after its checkpoint, so that it describes it.
pub fn write_config(out: &Path, config: &TrainConfig) -> Result<()> {
    let json = serde_json::to_string_pretty(config).expect("config serializes");
    write_atomic(&out.join(CONFIG_FILE), json.as_bytes())
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
        let config = read_config(&dir.join(CONFIG_FILE))?;
        let model_path = dir.join(MODEL_FILE);
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
    config.validate().map_err(|e| Error::BadRunConfig { path: path.to_path_buf(), error: Box::new(e) })?;
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
        let dead = [dir.path().join("model.safetensors.tmp-0"), epochs.join("samples-001.png.tmp-0")];
        let live = dir.path().join(format!("metrics.csv.tmp-{}", std::process::id()));
        for p in dead.iter().chain([&live]) {
            std::fs::write(p, "x").unwrap();
        }
        drop(claim(dir.path(), false).unwrap());
        assert!(dead.iter().all(|p| !p.exists()));
        assert!(live.exists(), "a live writer's file stays");
    }

    #[test]
    fn clearing_removes_the_old_runs_config_and_pictures() {
        let dir = tempfile::tempdir().unwrap();
        let epochs = dir.path().join(EPOCHS_DIR);
        std::fs::create_dir(&epochs).unwrap();
        for p in [dir.path().join(CONFIG_FILE), dir.path().join(SAMPLES_FILE), epochs.join("samples-007.png")] {
            std::fs::write(p, "x").unwrap();
        }
        std::fs::write(dir.path().join(MODEL_FILE), "x").unwrap();
        clear_old_run(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(&epochs).unwrap().count(), 0);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "the checkpoint (replaced atomically next) and epochs/ stay: {left:?}");
    }
}
