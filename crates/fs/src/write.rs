//! Writing: atomic files, atomically replaced directories, temporary directories.
//!
//! For crash-consistency tests, setting `FAIR_PRUNER_FAIL_AT_WRITE=N` makes the process exit
//! with status 86 (as if killed) just before its N-th write step (1-based), without cleaning
//! up. Each [`write_atomic`] (or [`crate::OutputFile::write`]) and each [`StagedDir::commit`]
//! is one step.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::read::FileKind;
use crate::sys::{Dir, Lock, lock_file};
use crate::{FsError, io_err};

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

/// A fresh hidden name next to `name`: `.<name>.<tag>-<pid>-<n>-<salt>`, unique per process
/// and call; the salt (clock nanoseconds) keeps processes of different PID namespaces that
/// share a directory apart. Creation with `O_EXCL` settles any remaining collision.
fn temp_name(name: &OsStr, tag: &str) -> OsString {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::SeqCst);
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut s = OsString::from(".");
    s.push(name);
    s.push(format!(".{tag}-{}-{n}-{salt:08x}", std::process::id()));
    s
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn file_name<'a>(path: &'a Path, action: &'static str) -> Result<&'a OsStr, FsError> {
    path.file_name().ok_or_else(|| FsError::Io {
        action,
        path: path.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path names no file (it ends in '..' or is a root)",
        ),
    })
}

/// Writes `bytes` to `path` through a fresh temporary file in the same directory and a
/// rename, so a reader never sees a half-written file, and a failed write leaves the old file
/// intact and no temporary file behind. Refuses to replace anything but a regular file (a
/// symbolic link, a directory, a FIFO, a device): the error names what is there.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let name = file_name(path, "cannot write")?;
    let dir = Dir::open(parent_dir(path)).map_err(io_err("cannot write", path))?;
    write_in(&dir, name, path, bytes)
}

/// Refuses to replace `name` in `dir` unless it is missing or a regular file.
fn check_replaceable(dir: &Dir, name: &OsStr, shown: &Path) -> Result<(), FsError> {
    match dir
        .child_kind(name)
        .map_err(io_err("cannot write", shown))?
    {
        None | Some(FileKind::File) => Ok(()),
        Some(kind) => Err(FsError::Output {
            path: shown.to_owned(),
            detail: format!(
                "it is {kind}; fair-pruner only ever replaces regular files it can rewrite whole{}",
                if kind == FileKind::Symlink {
                    " (a symbolic link is never replaced or followed for writing: give the path it points to)"
                } else {
                    ""
                }
            ),
        }),
    }
}

/// [`write_atomic`] into the open directory `dir` (`shown` names the file in errors).
pub(crate) fn write_in(dir: &Dir, name: &OsStr, shown: &Path, bytes: &[u8]) -> Result<(), FsError> {
    check_replaceable(dir, name, shown)?;
    write_step(shown);
    let (tmp, mut file) = loop {
        let tmp = temp_name(name, "tmp");
        match dir.create_new(&tmp) {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("cannot write", shown)(e)),
        }
    };
    // Locked while it is written and renamed, so another run's clean-up never takes it for
    // a stale file (where locks are not supported, the write goes on without one).
    let _ = lock_file(&file);
    let result = file
        .write_all(bytes)
        .and_then(|()| file.flush())
        .and_then(|()| dir.rename(&tmp, name));
    drop(file);
    if result.is_err() {
        let _ = dir.remove_file(&tmp);
    }
    result.map_err(io_err("cannot write", shown))
}

/// An output directory built under a temporary name and swapped into place by
/// [`StagedDir::commit`]. Dropping it uncommitted removes the temporary directory.
///
/// The directory that will hold it is opened once; the staging directory is created in it,
/// and the swap happens in it, whatever happens to its path in between.
#[derive(Debug)]
pub struct StagedDir {
    parent: Dir,
    name: OsString,
    staging_name: OsString,
    target: PathBuf,
    staging: PathBuf,
    committed: bool,
    /// Held while the directory is staged: another run's clean-up only removes staging
    /// directories whose lock it can take, i.e. whose writer is gone.
    _lock: Option<Lock>,
}

/// Why the directory `target` may not be replaced as a whole, if it may not: it is a symbolic
/// link or not a directory, or it is non-empty and fair-pruner did not write it (no marker),
/// or it holds files that its marker does not list (added by someone else since).
fn foreign(target: &Path) -> Result<Option<String>, FsError> {
    let meta = match std::fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("cannot read", target)(e)),
    };
    let kind = FileKind::of(&meta.file_type());
    if kind == FileKind::Symlink {
        return Ok(Some(
            "it is a symbolic link; fair-pruner never replaces a symbolic link: give the directory it points to, or a new path".into(),
        ));
    }
    if kind != FileKind::Dir {
        return Ok(Some(format!(
            "it exists and is {kind}, not a directory; choose a directory path"
        )));
    }
    let mut present = Vec::new();
    list_files(target, Path::new(""), &mut present).map_err(io_err("cannot read", target))?;
    if present.is_empty() {
        return Ok(None);
    }
    let marker = target.join(OUTPUT_MARKER);
    if !present.iter().any(|f| f == OUTPUT_MARKER) {
        return Ok(Some(format!(
            "it is a non-empty directory that fair-pruner did not write (no {OUTPUT_MARKER}); \
             it would be replaced as a whole, so choose a new or empty directory"
        )));
    }
    let listed: Vec<String> = crate::read_bounded(&marker, 64 << 20, "an output marker")
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v.get("files")?
                .as_array()?
                .iter()
                .map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let extra: Vec<&String> = present
        .iter()
        .filter(|f| *f != OUTPUT_MARKER && !listed.contains(f))
        .collect();
    if let Some(first) = extra.first() {
        return Ok(Some(format!(
            "it holds {} file(s) that fair-pruner did not write (e.g. '{first}'), which replacing \
             the directory would delete; move them out or choose another directory",
            extra.len()
        )));
    }
    Ok(None)
}

impl StagedDir {
    /// Checks, without touching anything, that `target` can be (re)written as a staged
    /// directory: it does not exist, or is an empty directory, or one fair-pruner wrote and
    /// nobody added files to since; never a symbolic link or a file.
    pub fn check(target: &Path) -> Result<(), FsError> {
        match foreign(target)? {
            None => Ok(()),
            Some(detail) => Err(FsError::Output {
                path: target.to_owned(),
                detail,
            }),
        }
    }

    /// Prepares to (re)write the directory `target` (see [`StagedDir::check`] for what is
    /// refused), creating its parent directories. Removes staging directories that earlier,
    /// killed runs left next to `target`. For outputs a user names, prefer
    /// [`crate::OutputGuard::dir`], which also keeps the directory off the inputs.
    pub fn new(target: &Path) -> Result<Self, FsError> {
        Self::check(target)?;
        let parent = parent_dir(target);
        std::fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
        let name = file_name(target, "cannot stage")?.to_owned();
        let dir = Dir::open(parent).map_err(io_err("cannot open", parent))?;
        Self::in_dir(dir, name, target.to_owned())
    }

    /// Stages `name` inside the open directory `parent`; `target` names it in messages.
    pub(crate) fn in_dir(parent: Dir, name: OsString, target: PathBuf) -> Result<Self, FsError> {
        let physical = parent.path().join(&name);
        Self::check(&physical).map_err(|e| match e {
            FsError::Output { detail, .. } => FsError::Output {
                path: target.clone(),
                detail,
            },
            other => other,
        })?;
        remove_stale_staging(&parent, &name);
        let staging_name = loop {
            let s = temp_name(&name, "staging");
            match parent.mkdir(&s) {
                Ok(()) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("cannot stage", &target)(e)),
            }
        };
        let staging = parent.path().join(&staging_name);
        let lock = parent.try_lock(&staging_name).ok().flatten();
        Ok(StagedDir {
            parent,
            name,
            staging_name,
            target,
            staging,
            committed: false,
            _lock: lock,
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
    pub fn files(&self) -> Result<Vec<String>, FsError> {
        let mut out = Vec::new();
        list_files(&self.staging, Path::new(""), &mut out)
            .map_err(io_err("cannot list", &self.staging))?;
        out.retain(|f| f != OUTPUT_MARKER);
        out.sort();
        Ok(out)
    }

    /// Writes the marker (listing every file) and swaps the directory into place: with an
    /// atomic exchange where the platform has one (Linux `renameat2`), else by two renames.
    /// The old directory, if any, is then deleted — after checking again that it is still one
    /// fair-pruner may replace. Returns the files it holds.
    pub fn commit(mut self) -> Result<Vec<String>, FsError> {
        let files = self.files()?;
        write_atomic(
            &self.staging.join(OUTPUT_MARKER),
            format!(
                "{}\n",
                serde_json::json!({"written_by": "fair-pruner", "files": files})
            )
            .as_bytes(),
        )?;
        let io = io_err("cannot move into place", &self.target);
        let physical = self.parent.path().join(&self.name);
        if let Some(detail) = foreign(&physical)? {
            return Err(FsError::Output {
                path: self.target.clone(),
                detail: format!("it changed while the output was being written: {detail}"),
            });
        }
        write_step(&self.target);
        match self
            .parent
            .child_kind(&self.name)
            .map_err(io_err("cannot read", &self.target))?
        {
            None => {
                self.parent
                    .rename_new(&self.staging_name, &self.name)
                    .map_err(io)?;
                self.committed = true;
            }
            Some(_) => match self.parent.exchange(&self.staging_name, &self.name) {
                Ok(()) => {
                    // The staging name now holds the old directory.
                    self.committed = true;
                    let _ = std::fs::remove_dir_all(&self.staging);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                    // No atomic exchange: move the old directory aside first.
                    let old = temp_name(&self.name, "old");
                    self.parent.rename(&self.name, &old).map_err(io)?;
                    let io = io_err("cannot move into place", &self.target);
                    self.parent
                        .rename(&self.staging_name, &self.name)
                        .map_err(io)?;
                    self.committed = true;
                    let _ = std::fs::remove_dir_all(self.parent.path().join(old));
                }
                Err(e) => return Err(io(e)),
            },
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

/// Every file under `root/rel`, as relative paths with `/`; symbolic links are listed as
/// files, never followed.
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

/// Removes `.<name>.staging-…` / `.old-` / `.tmp-` siblings of `name` that runs killed
/// part-way left behind: those whose lock can be taken (a live writer, in this or any other
/// PID namespace, holds its lock).
fn remove_stale_staging(parent: &Dir, name: &OsStr) {
    let Ok(entries) = std::fs::read_dir(parent.path()) else {
        return;
    };
    let name = name.to_string_lossy();
    let prefixes = ["staging", "old", "tmp"].map(|tag| format!(".{name}.{tag}-"));
    for entry in entries.flatten() {
        let file = entry.file_name();
        if !prefixes
            .iter()
            .any(|p| file.to_string_lossy().starts_with(p.as_str()))
        {
            continue;
        }
        let Ok(Some(_lock)) = parent.try_lock(&file) else {
            continue;
        };
        let path = entry.path();
        let _ = match entry.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
            _ => std::fs::remove_file(&path),
        };
    }
}

/// A new directory next to a path, removed with everything in it when dropped (for
/// unpacking an archive before its contents are checked, say).
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh hidden directory next to `path` (in its parent directory).
    pub fn next_to(path: &Path) -> Result<Self, FsError> {
        let name = file_name(path, "cannot create a temporary directory for")?;
        let parent = parent_dir(path);
        loop {
            let dir = parent.join(temp_name(name, "tmp"));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(TempDir(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("cannot create", &dir)(e)),
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
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
        // Nor is a file the user added to fair-pruner's own directory, e.g. a checkpoint.
        std::fs::create_dir(target.join("finetune")).unwrap();
        std::fs::write(target.join("finetune/checkpoint.pt"), b"90 epochs").unwrap();
        let e = StagedDir::new(&target).unwrap_err().to_string();
        assert!(
            e.contains("finetune/checkpoint.pt") && e.contains("did not write"),
            "{e}"
        );
        // A file added between the check and the commit is noticed before the swap.
        std::fs::remove_dir_all(target.join("finetune")).unwrap();
        let s = StagedDir::new(&target).unwrap();
        std::fs::write(target.join("late.txt"), b"!").unwrap();
        let e = s.commit().unwrap_err().to_string();
        assert!(e.contains("changed while") && e.contains("late.txt"), "{e}");
        assert!(target.join("late.txt").is_file() && target.join("c.txt").is_file());
    }

    #[test]
    fn only_staging_left_by_finished_writers_is_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        // A run still writing (here, in this process; the lock works the same across
        // processes and PID namespaces).
        let live = StagedDir::new(&target).unwrap();
        std::fs::write(live.path().join("a"), b"1").unwrap();
        // Left by a killed run: nobody holds its lock, whatever pid its name carries.
        let stale = dir
            .path()
            .join(format!(".out.staging-{}-0-0", std::process::id()));
        std::fs::create_dir(&stale).unwrap();
        let stale_tmp = dir.path().join(".out.tmp-4000000-0-0");
        std::fs::write(&stale_tmp, b"").unwrap();
        let other = StagedDir::new(&target).unwrap();
        assert!(
            live.path().join("a").is_file(),
            "a live staging directory was removed"
        );
        assert!(
            !stale.exists() && !stale_tmp.exists(),
            "stale staging was kept"
        );
        drop(other);
        live.commit().unwrap();
        assert!(target.join("a").is_file());
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_links_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = StagedDir::new(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let file = dir.path().join("f.json");
        std::fs::write(&file, b"mine").unwrap();
        let flink = dir.path().join("l.json");
        std::os::unix::fs::symlink(&file, &flink).unwrap();
        let e = write_atomic(&flink, b"x").unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"mine");
        assert!(std::fs::symlink_metadata(&flink).unwrap().is_symlink());
        let fifo = dir.path().join("p");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let e = write_atomic(&fifo, b"x").unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        let e = write_atomic(&real, b"x").unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
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
        // Many writers at once: every name distinct, the last complete content wins.
        std::thread::scope(|s| {
            for t in 0..8u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(p, &[t; 64]).unwrap();
                    }
                });
            }
        });
        let last = std::fs::read(&p).unwrap();
        assert!(last.len() == 64 && last.iter().all(|&b| b == last[0]));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let t = TempDir::next_to(&p).unwrap();
        assert!(t.path().is_dir() && t.path().parent() == Some(dir.path()));
        let kept = t.path().to_owned();
        drop(t);
        assert!(!kept.exists());
    }
}
