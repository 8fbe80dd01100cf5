//! Atomic writes for the data crate: every file is written under a temporary name unique to
//! this process and call, then renamed into place; a failed write leaves nothing behind.
//!
//! (The same idea as `fair_ir::write_atomic`, kept private here so the data crate does not
//! depend on the IR crate.) Temporary names are `.<file name>.<pid>-<counter>-<random>.tmp`
//! in the target's own directory (so the rename never crosses file systems) and are created
//! with `create_new`, so two writers — threads of one process, or processes that share a
//! cache directory, even from different PID namespaces — never write into the same
//! temporary file. A reader therefore sees either the old file or a complete new one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{DataError, io};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary name next to `path` (nothing is created).
pub(crate) fn temp_name(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    dir.join(format!(
        ".{file}.{}-{}-{:08x}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    ))
}

/// Creates a new, empty temporary file next to `path`; never reuses an existing name.
fn create_temp(path: &Path) -> Result<(PathBuf, File), DataError> {
    loop {
        let tmp = temp_name(path);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io("create", &tmp)(e)),
        }
    }
}

/// Writes `bytes` to `path` atomically: temporary file, then rename. On any failure the
/// temporary file is removed and `path` is left as it was.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let (tmp, mut file) = create_temp(path)?;
    let result = file
        .write_all(bytes)
        .and_then(|()| file.flush())
        .map_err(io("write", &tmp))
        .and_then(|()| {
            drop(file);
            std::fs::rename(&tmp, path).map_err(io("write", path))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A temporary directory next to `path`, removed with everything in it when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// Creates a new temporary directory next to `path`.
    pub(crate) fn next_to(path: &Path) -> Result<Self, DataError> {
        loop {
            let dir = temp_name(path);
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(TempDir(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io("create", &dir)(e)),
            }
        }
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_unique_hidden_next_to_the_target_and_carry_the_pid() {
        let target = Path::new("/some/cache/fashion-mnist.safetensors");
        let names: Vec<PathBuf> = (0..1000).map(|_| temp_name(target)).collect();
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "temporary names repeat");
        let pid = format!(".{}-", std::process::id());
        for n in &names {
            assert_eq!(n.parent(), target.parent(), "{}", n.display());
            let f = n.file_name().unwrap().to_string_lossy();
            assert!(
                f.starts_with(".fashion-mnist.safetensors.") && f.ends_with(".tmp"),
                "{f}"
            );
            assert!(f.contains(&pid), "{f} lacks the pid");
        }
        // Threads of one process get distinct names too.
        let a = std::thread::spawn(|| temp_name(Path::new("x")));
        let b = std::thread::spawn(|| temp_name(Path::new("x")));
        assert_ne!(a.join().unwrap(), b.join().unwrap());
    }

    #[test]
    fn a_taken_temporary_name_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        let (t1, _) = create_temp(&target).unwrap();
        let (t2, _) = create_temp(&target).unwrap();
        assert_ne!(t1, t2);
        assert!(t1.exists() && t2.exists());
    }
}
