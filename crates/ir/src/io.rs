//! Writing outputs safely: atomic files, atomically replaced directories, and the guard that
//! keeps a command from writing over its own inputs.
//!
//! - [`write_atomic`] writes a file through a uniquely named temporary file in the same
//!   directory and a rename: a reader sees the old file or the new one, never half of one.
//! - [`StagedDir`] builds a whole output directory under a temporary name and swaps it into
//!   place in one step ([`StagedDir::commit`]), so a directory is always completely old or
//!   completely new, and a re-run never leaves files of an earlier run behind. It refuses to
//!   replace a directory that fair-pruner did not write.
//! - [`check_outputs`] refuses output paths that are, or contain, one of the inputs — after
//!   resolving symbolic links, hard links and `.`/`..`.
//!
//! For crash-consistency tests, setting `FAIR_PRUNER_FAIL_AT_WRITE=N` makes the process exit
//! with status 86 (as if killed) just before its N-th write step (1-based), without cleaning
//! up.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::IrError;

/// The marker file that identifies a directory written by [`StagedDir`]; it lists the files
/// the directory holds.
pub const OUTPUT_MARKER: &str = ".fair-pruner-output";

static WRITE_STEPS: AtomicUsize = AtomicUsize::new(0);
static TEMP_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Counts one write step and, under `FAIR_PRUNER_FAIL_AT_WRITE=N`, exits at the N-th.
fn write_step(what: &Path) {
    let step = WRITE_STEPS.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(n) = std::env::var("FAIR_PRUNER_FAIL_AT_WRITE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        && n == step
    {
        eprintln!(
            "FAIR_PRUNER_FAIL_AT_WRITE={n}: exiting before writing {}",
            what.display()
        );
        std::process::exit(86);
    }
}

/// A name for a temporary sibling of `path`, unique per process and call:
/// `.<name>.<tag>-<pid>-<n>`.
fn temp_sibling(path: &Path, tag: &str) -> Result<PathBuf, std::io::Error> {
    let dir = parent_dir(path);
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path has no file name",
        )
    })?;
    let n = TEMP_COUNTER.fetch_add(1, Ordering::SeqCst);
    Ok(dir.join(format!(
        ".{}.{tag}-{}-{n}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes `bytes` to `path` through a temporary file in the same directory (unique per
/// process and call) and a rename, so a reader never sees a half-written file and a failed
/// write leaves the old file intact and no temporary file behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IrError> {
    let io = |source| IrError::Io {
        action: "cannot write",
        path: path.to_owned(),
        source,
    };
    let tmp = temp_sibling(path, "tmp").map_err(io)?;
    write_step(path);
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// An output directory built under a temporary name and swapped into place by
/// [`StagedDir::commit`]. Dropping it uncommitted removes the temporary directory.
#[derive(Debug)]
pub struct StagedDir {
    target: PathBuf,
    staging: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Checks, without touching anything, that `target` can be (re)written as a staged
    /// directory: it does not exist, or is an empty directory, or one fair-pruner wrote.
    pub fn check(target: &Path) -> Result<(), IrError> {
        let refuse = |detail: String| IrError::Output {
            path: target.to_owned(),
            detail,
        };
        if let Ok(meta) = std::fs::symlink_metadata(target) {
            if !meta.is_dir() {
                return Err(refuse(
                    "it exists and is not a directory; choose a directory path".into(),
                ));
            }
            let mut entries = std::fs::read_dir(target).map_err(|source| IrError::Io {
                action: "cannot read",
                path: target.to_owned(),
                source,
            })?;
            let empty = entries.next().is_none();
            if !empty && !target.join(OUTPUT_MARKER).is_file() {
                return Err(refuse(format!(
                    "it is a non-empty directory that fair-pruner did not write (no {OUTPUT_MARKER}); \
                     it would be replaced as a whole, so choose a new or empty directory"
                )));
            }
        }
        Ok(())
    }

    /// Prepares to (re)write the directory `target`. Refuses when `target` exists and is not
    /// a directory, or is a non-empty directory without fair-pruner's marker (so a mistyped
    /// `--out` never deletes a user's files). Removes staging directories that earlier,
    /// killed runs left next to `target`.
    pub fn new(target: &Path) -> Result<Self, IrError> {
        Self::check(target)?;
        let parent = parent_dir(target);
        std::fs::create_dir_all(parent).map_err(|source| IrError::Io {
            action: "cannot create",
            path: parent.to_owned(),
            source,
        })?;
        remove_stale_staging(target);
        let staging = temp_sibling(target, "staging").map_err(|source| IrError::Io {
            action: "cannot stage",
            path: target.to_owned(),
            source,
        })?;
        std::fs::create_dir(&staging).map_err(|source| IrError::Io {
            action: "cannot create",
            path: staging.clone(),
            source,
        })?;
        Ok(StagedDir {
            target: target.to_owned(),
            staging,
            committed: false,
        })
    }

    /// Where to write the directory's files now.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The directory it will become.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Every file under the staging directory (relative paths, sorted), marker excluded.
    pub fn files(&self) -> Result<Vec<String>, IrError> {
        let mut out = Vec::new();
        list_files(&self.staging, Path::new(""), &mut out).map_err(|source| IrError::Io {
            action: "cannot list",
            path: self.staging.clone(),
            source,
        })?;
        out.retain(|f| f != OUTPUT_MARKER);
        out.sort();
        Ok(out)
    }

    /// Writes the marker (listing every file) and swaps the directory into place: with an
    /// atomic exchange where the platform has one (Linux `renameat2`), else by two renames.
    /// The old directory, if any, is then deleted. Returns the files it holds.
    pub fn commit(mut self) -> Result<Vec<String>, IrError> {
        let files = self.files()?;
        write_atomic(
            &self.staging.join(OUTPUT_MARKER),
            format!(
                "{}\n",
                serde_json::json!({"written_by": "fair-pruner", "files": files})
            )
            .as_bytes(),
        )?;
        let io = |source| IrError::Io {
            action: "cannot move into place",
            path: self.target.clone(),
            source,
        };
        write_step(&self.target);
        if self.target.exists() {
            if exchange(&self.staging, &self.target).is_err() {
                // No atomic exchange: move the old directory aside first.
                let old = temp_sibling(&self.target, "old").map_err(io)?;
                std::fs::rename(&self.target, &old).map_err(io)?;
                std::fs::rename(&self.staging, &self.target).map_err(io)?;
                let _ = std::fs::remove_dir_all(&old);
                self.committed = true;
                return Ok(files);
            }
            // The staging path now holds the old directory.
            self.committed = true;
            let _ = std::fs::remove_dir_all(&self.staging);
        } else {
            std::fs::rename(&self.staging, &self.target).map_err(io)?;
            self.committed = true;
        }
        Ok(files)
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths; renameat2 only reads them.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

fn list_files(root: &Path, rel: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let rel_path = rel.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            list_files(root, &rel_path, out)?;
        } else {
            out.push(rel_path.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

/// Removes `.<name>.staging-<pid>-<n>` / `.old-` siblings of `target` whose process is gone
/// (left by a run that was killed).
fn remove_stale_staging(target: &Path) {
    let (Some(name), Ok(entries)) = (
        target.file_name().map(|n| n.to_string_lossy().into_owned()),
        std::fs::read_dir(parent_dir(target)),
    ) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        for tag in ["staging", "old", "tmp"] {
            let prefix = format!(".{name}.{tag}-");
            if let Some(rest) = file.strip_prefix(&prefix)
                && let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok())
                && pid != std::process::id()
                && !Path::new(&format!("/proc/{pid}")).exists()
                && Path::new("/proc/self").exists()
            {
                let path = entry.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
    }
}

/// `path` made absolute and normal: the longest existing prefix canonicalised (symbolic
/// links and `..` resolved), the rest appended component by component.
pub fn resolve_path(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut existing = absolute.clone();
    let mut rest: Vec<OsString> = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for part in rest.iter().rev() {
                match Path::new(part).components().next() {
                    Some(Component::ParentDir) => {
                        out.pop();
                    }
                    Some(Component::CurDir) | None => {}
                    _ => out.push(part),
                }
            }
            return out;
        }
        match (
            existing.file_name().map(|n| n.to_owned()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_owned();
            }
            _ => {
                // Only `..` components left at the end: fall back to a lexical normalisation.
                let mut out = PathBuf::new();
                for c in absolute.components() {
                    match c {
                        Component::ParentDir => {
                            out.pop();
                        }
                        Component::CurDir => {}
                        other => out.push(other),
                    }
                }
                return out;
            }
        }
    }
}

#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_a: &Path, _b: &Path) -> bool {
    false
}

/// Refuses to write any of `outputs` when it is one of `inputs` (the same file after
/// resolving symbolic links, hard links and `.`/`..`) or a directory that contains one of
/// them (an output directory is replaced as a whole). Each entry is (what it is, path), e.g.
/// `("--out", path)`; the error names both flags.
pub fn check_outputs(outputs: &[(&str, &Path)], inputs: &[(&str, &Path)]) -> Result<(), IrError> {
    for (out_flag, out) in outputs {
        let out_resolved = resolve_path(out);
        for (in_flag, input) in inputs {
            let in_resolved = resolve_path(input);
            let clash = if in_resolved == out_resolved || same_file(out, input) {
                Some("is the same file as")
            } else if in_resolved.starts_with(&out_resolved) {
                Some("is a directory that holds")
            } else {
                None
            };
            if let Some(how) = clash {
                return Err(IrError::Output {
                    path: out.to_path_buf(),
                    detail: format!(
                        "{out_flag} {how} the input {in_flag} '{}'; writing there would destroy an input. Choose another {out_flag}",
                        input.display()
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_that_are_inputs_are_refused_in_every_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let w = d.join("w.safetensors");
        std::fs::write(&w, b"x").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        let dotted = d.join("sub/../w.safetensors");
        let hard = d.join("hard.safetensors");
        std::fs::hard_link(&w, &hard).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&w, d.join("link.safetensors")).unwrap();
        for out in [
            w.clone(),
            dotted,
            hard,
            d.join("link.safetensors"),
            d.to_path_buf(),
            d.join("."),
        ] {
            let e = check_outputs(&[("--out", &out)], &[("--weights", &w)]);
            assert!(e.is_err(), "{} was allowed", out.display());
            let msg = e.unwrap_err().to_string();
            assert!(msg.contains("--out") && msg.contains("--weights"), "{msg}");
        }
        assert!(check_outputs(&[("--out", &d.join("new.json"))], &[("--weights", &w)]).is_ok());
        assert!(check_outputs(&[("--out", &d.join("sub"))], &[("--weights", &w)]).is_ok());
    }

    #[test]
    fn staged_directories_replace_whole_and_refuse_foreign_ones() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let s = StagedDir::new(&target).unwrap();
        std::fs::write(s.path().join("a.txt"), b"1").unwrap();
        std::fs::create_dir(s.path().join("sub")).unwrap();
        std::fs::write(s.path().join("sub/b.txt"), b"2").unwrap();
        assert_eq!(s.commit().unwrap(), vec!["a.txt", "sub/b.txt"]);
        assert!(target.join(OUTPUT_MARKER).is_file());
        // A re-run replaces the directory as a whole: the stale file is gone.
        let s = StagedDir::new(&target).unwrap();
        std::fs::write(s.path().join("c.txt"), b"3").unwrap();
        s.commit().unwrap();
        assert!(!target.join("a.txt").exists() && target.join("c.txt").is_file());
        // Nothing but the target is left in the parent.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out")]);
        // Dropped without commit: no trace.
        let s = StagedDir::new(&target).unwrap();
        std::fs::write(s.path().join("d.txt"), b"4").unwrap();
        drop(s);
        assert!(!target.join("d.txt").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A user's directory is never replaced.
        let mine = dir.path().join("mine");
        std::fs::create_dir(&mine).unwrap();
        std::fs::write(mine.join("thesis.tex"), b"!").unwrap();
        let e = StagedDir::new(&mine).unwrap_err().to_string();
        assert!(e.contains("did not write"), "{e}");
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(StagedDir::new(&file).is_err());
    }

    #[test]
    fn atomic_writes_leave_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_atomic(&p, b"1").unwrap();
        write_atomic(&p, b"22").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"22");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Writing into a missing directory fails and leaves nothing.
        assert!(write_atomic(&dir.path().join("no/x.json"), b"1").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
