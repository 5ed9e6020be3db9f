//! Atomic file writes: a reader (or a crash) never sees half a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What a temporary file's name carries before the writer's process id.
pub const TEMP_MARK: &str = ".tmp-";

/// Writes `bytes` to a temporary file beside `path`, syncs it, renames it over
/// `path`, then syncs the folder, so the old contents survive any failure
/// before the rename and the new ones any crash after it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Makes a rename in `path`'s folder durable: the rename lives in the folder's
/// entry list, which a crash can lose until the folder itself is synced.
#[cfg(unix)]
fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Windows cannot open a folder as a file; NTFS journals renames anyway.
#[cfg(not(unix))]
fn sync_dir(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!("{TEMP_MARK}{}", std::process::id()));
    path.with_file_name(name)
}

/// The process id a temporary file of [`write_atomic`] was written by, when
/// `name` is one.
pub fn temp_file_owner(name: &str) -> Option<u32> {
    let (_, pid) = name.rsplit_once(TEMP_MARK)?;
    pid.parse().ok()
}

/// Whether process `pid` is running. Where that cannot be told (no `/proc`),
/// it is taken to be, so that nothing of a live writer is ever removed.
pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temporary_names_carry_the_writer() {
        assert_eq!(temp_file_owner("model.safetensors.tmp-4242"), Some(4242));
        assert_eq!(temp_file_owner("model.safetensors"), None);
        assert_eq!(temp_file_owner("x.tmp-abc"), None);
        assert!(process_alive(std::process::id()));
    }
}
