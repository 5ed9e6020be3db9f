//! Writes of files: atomic (a reader, or a crash, never sees half a file),
//! and only where a careful Unix tool would write.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What a temporary file's name carries before the writer's process id:
/// distinct enough that no file of the user's is ever taken for one.
pub const TEMP_MARK: &str = ".gpu-vae-tmp-";

/// Writes `bytes` to the file `path` names: to a temporary file beside it,
/// synced, renamed over it, then the folder synced, so the old contents
/// survive any failure before the rename and the new ones any crash after it.
/// Every file the user names, and every file of a run, is written here, so
/// the rules of [`write_target`] hold for all of them.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let path = &write_target(path)?;
    let tmp = temp_path(path);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        // A replaced file keeps its permissions, as an edit in place would.
        if let Ok(old) = std::fs::metadata(path) {
            file.set_permissions(old.permissions())?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// The file a write to `path` replaces: `path` when it is missing or a
/// regular file; when it is a symbolic link to a regular file, that file (the
/// write goes through the link, as `cp` does, and the link stays). Anything
/// else is refused, never replaced: a device (`/dev/null`), a FIFO, a socket,
/// a folder, a link to one of those (`/proc/self/fd/1`), a dangling link.
pub fn write_target(path: &Path) -> Result<PathBuf> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(path.to_path_buf()),
        Err(e) => return Err(Error::io(path, e)),
        Ok(meta) => meta,
    };
    if meta.is_file() {
        return Ok(path.to_path_buf());
    }
    let refuse = |what: String| Error::bad_file(path, format!("{what}, not a regular file: refusing to replace it"));
    if !meta.file_type().is_symlink() {
        return Err(refuse(format!("is {}", kind(&meta))));
    }
    match std::fs::metadata(path) {
        Ok(target) if target.is_file() => std::fs::canonicalize(path).map_err(|e| Error::io(path, e)),
        Ok(target) => Err(refuse(format!("is a symbolic link to {}", kind(&target)))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::bad_file(path, "is a symbolic link to nothing: refusing to write through it"))
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        } else if t.is_fifo() {
            return "a FIFO";
        } else if t.is_socket() {
            return "a socket";
        }
    }
    if meta.is_dir() { "a folder" } else { "a special file" }
}

/// Makes a rename in `path`'s folder durable: the rename lives in the folder's
/// entry list, which a crash can lose until the folder itself is synced.
#[cfg(unix)]
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Windows cannot open a folder as a file; NTFS journals renames anyway.
#[cfg(not(unix))]
pub fn sync_dir(_path: &Path) -> std::io::Result<()> {
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
        assert_eq!(temp_file_owner("model.safetensors.gpu-vae-tmp-4242"), Some(4242));
        assert_eq!(temp_file_owner("model.safetensors"), None);
        assert_eq!(temp_file_owner("notes.tmp-4242"), None, "a user's file is not ours");
        assert_eq!(temp_file_owner("x.gpu-vae-tmp-abc"), None);
        assert!(process_alive(std::process::id()));
    }

    #[cfg(unix)]
    #[test]
    fn only_regular_files_are_replaced_and_links_are_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        let link = dir.path().join("link");
        std::fs::write(&file, "old").unwrap();
        std::os::unix::fs::symlink(&file, &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
        for (path, what) in
            [(&fifo, "is a FIFO"), (&dangling, "symbolic link to nothing"), (&dir.path().to_path_buf(), "is a folder")]
        {
            let e = write_atomic(path, b"x").unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO stays");
        assert!(!dir.path().join("nothing").exists());
    }
}
