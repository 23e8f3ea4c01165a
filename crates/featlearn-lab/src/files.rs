//! Writing a results folder safely: one writer at a time ([`FolderLock`]), and files that appear
//! whole or not at all ([`write_atomic`]), with errors that say what could not be written, where
//! and why.

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The file inside a results folder that `run` and `merge` hold locked while they write.
pub const LOCK_FILE: &str = ".featlearn.lock";

/// An exclusive lock on a results folder (`flock` on [`LOCK_FILE`]), held until it is dropped or
/// the process dies: a killed writer leaves nothing to clean up. The file names its holder (pid,
/// host, command) for the message a second writer gets.
pub struct FolderLock {
    _file: File,
}

impl FolderLock {
    /// Takes the folder's lock for `what` ("run", "merge"), or refuses at once, naming the holder.
    pub fn take(dir: &Path, what: &str) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error("open the lock file", &path, &e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() { "another featlearn process".to_string() } else { holder.to_string() };
                bail!(
                    "{} is being written by {holder}; wait for it to finish (or stop it), or choose another --out folder",
                    dir.display()
                );
            }
            Err(TryLockError::Error(e)) => return Err(io_error("lock", &path, &e)),
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "this host".into());
        let note = format!("featlearn {what} (pid {} on {host})\n", std::process::id());
        // the note is informational: a failure to write it does not release the lock
        let _ = file.set_len(0).and_then(|_| file.seek(SeekFrom::Start(0))).and_then(|_| file.write_all(note.as_bytes()));
        Ok(FolderLock { _file: file })
    }
}

/// "cannot {action} {path}: {reason}", one line, the OS error's own words.
pub fn io_error(action: &str, path: &Path, e: &std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot {action} {}: {}", path.display(), e)
}

/// Refuses an output file whose folder does not exist, in one line naming `flag`: checked before
/// any work, so a typo in the folder costs nothing and leaves no set of files half written.
pub fn check_folder_exists(flag: &str, path: &Path) -> Result<()> {
    match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => bail!("{flag}: the folder {} does not exist", dir.display()),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` whole or not at all: into a temporary file in the same folder, synced,
/// then renamed over `path`. On failure the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    via_temporary(path, |out| out.write_all(bytes).map_err(|e| io_error("write", path, &e)))
}

/// Streams a large file to `path` whole or not at all: `write` fills a buffered temporary file in
/// the same folder, which is then synced and renamed over `path`; on any failure it is removed.
pub fn write_streamed(path: &Path, write: impl FnOnce(&mut std::io::BufWriter<File>) -> Result<()>) -> Result<()> {
    via_temporary(path, write).with_context(|| format!("{} was not written", path.display()))
}

/// The temporary file, its sync and rename, and its removal on failure, for both writers above;
/// an I/O error reads "cannot write PATH: reason".
fn via_temporary(path: &Path, write: impl FnOnce(&mut std::io::BufWriter<File>) -> Result<()>) -> Result<()> {
    let tmp = temporary_name(path);
    let done = File::create(&tmp).map_err(|e| io_error("write", path, &e)).and_then(|file| {
        let mut out = std::io::BufWriter::new(file);
        write(&mut out)?;
        let file = out.into_inner().map_err(|e| io_error("write", path, e.error()))?;
        file.sync_data().map_err(|e| io_error("write", path, &e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_error("write", path, &e))
    });
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// `.NAME.tmp-PID` beside `path`.
fn temporary_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_folder_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = std::env::temp_dir().join(format!("featlearn-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = FolderLock::take(&dir, "run").unwrap();
        let err = FolderLock::take(&dir, "merge").err().expect("a second writer is refused").to_string();
        assert!(err.contains(&format!("pid {}", std::process::id())) && err.contains("featlearn run"), "{err}");
        drop(first);
        FolderLock::take(&dir, "merge").expect("the lock is free once its holder is gone");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_atomic_write_that_fails_leaves_neither_a_partial_file_nor_a_temporary() {
        let dir = std::env::temp_dir().join(format!("featlearn-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.txt");
        write_atomic(&path, b"whole").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
        // renaming a file over a folder fails: the old contents stay, no temporary is left
        let blocked = dir.join("sub");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        let err = write_atomic(&blocked, b"new").unwrap_err().to_string();
        assert!(err.starts_with(&format!("cannot write {}", blocked.display())), "{err}");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert!(left.iter().all(|n| !n.contains(".tmp-")), "{left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
