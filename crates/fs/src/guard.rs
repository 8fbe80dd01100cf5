//! The output guard: an output path is judged where the kernel will resolve it, and written
//! through the directory it was judged in.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use crate::read::FileKind;
use crate::sys::Dir;
use crate::write::{StagedDir, write_in};
use crate::{FsError, io_err};

/// Symbolic links followed while resolving one path before giving up (Linux's limit).
const MAX_LINKS: usize = 40;

/// Directory levels of a tree ([`OutputGuard::tree`]) searched for symbolic links: as deep
/// as the ImageFolder loader searches.
pub const MAX_TREE_DEPTH: usize = 32;

/// Entries of a tree ([`OutputGuard::tree`]) looked at for symbolic links: ImageNet's
/// 1.3 million images several times over; past it, links are not looked for.
pub const MAX_TREE_ENTRIES: usize = 10_000_000;

/// Where a path leads once its missing directories are created (see [`physical`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Physical {
    /// The absolute path, free of `.`, `..` and symbolic links, except that its last
    /// component is not followed.
    pub path: PathBuf,
    /// What its last component is (not followed), or `None` when it does not exist yet.
    pub kind: Option<FileKind>,
}

/// Resolves `path` the way the kernel will once the missing directories on it are created:
/// relative to the current directory, each existing symbolic link followed (at most 40),
/// each `..` taken as the parent of the directory reached so far — so `missing/../link/x`
/// goes where `link` points, as it does after `mkdir missing` — and the components that do
/// not exist yet appended. The last component is not followed, unless the path ends in `/`
/// (`link/` names the directory the link leads to, as for the kernel); [`Physical::kind`]
/// says what it is. A file, or a symbolic link to nothing, in the middle of the path is an
/// error.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let root = dir.path().canonicalize()?;
/// # #[cfg(unix)] {
/// std::os::unix::fs::symlink(root.join("real"), root.join("link"))?;
/// std::fs::create_dir(root.join("real"))?;
/// let p = fair_fs::physical(&root.join("missing/../link/out.json"))?;
/// assert_eq!(p.path, root.join("real/out.json"));
/// assert_eq!(p.kind, None);
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn physical(path: &Path) -> Result<Physical, FsError> {
    let fail = |detail: String| FsError::Io {
        action: "cannot resolve",
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, detail),
    };
    let absolute = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir()
            .map_err(io_err("cannot resolve", path))?
            .join(path)
    };
    /// One step of the walk.
    enum Step {
        Root,
        Up,
        Name(OsString),
    }
    let steps = |p: &Path| -> Vec<Step> {
        p.components()
            .filter_map(|c| match c {
                Component::RootDir | Component::Prefix(_) => Some(Step::Root),
                Component::CurDir => None,
                Component::ParentDir => Some(Step::Up),
                Component::Normal(n) => Some(Step::Name(n.to_owned())),
            })
            .collect()
    };
    // `dir/` and `dir/.` name the directory a final link leads to.
    let trailing = ends_as_directory(path);
    // The steps still to take, last first.
    let mut pending: Vec<Step> = steps(&absolute);
    pending.reverse();
    let mut at = PathBuf::from("/");
    // How many trailing components of `at` do not exist yet.
    let mut missing = 0usize;
    let mut links = 0usize;
    while let Some(step) = pending.pop() {
        match step {
            Step::Root => {
                at = PathBuf::from("/");
                missing = 0;
            }
            Step::Up => {
                at.pop();
                missing = missing.saturating_sub(1);
            }
            Step::Name(name) => {
                let next = at.join(&name);
                if missing > 0 {
                    at = next;
                    missing += 1;
                    continue;
                }
                let meta = match std::fs::symlink_metadata(&next) {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        at = next;
                        missing = 1;
                        continue;
                    }
                    Err(e) => return Err(io_err("cannot resolve", path)(e)),
                };
                let last = pending.is_empty();
                if meta.file_type().is_symlink() && (!last || trailing) {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(fail(format!(
                            "more than {MAX_LINKS} symbolic links (a loop?) at '{}'",
                            next.display()
                        )));
                    }
                    let target =
                        std::fs::read_link(&next).map_err(io_err("cannot resolve", path))?;
                    if std::fs::metadata(&next).is_err() {
                        return Err(fail(format!(
                            "'{}' is a symbolic link to '{}', which does not exist",
                            next.display(),
                            target.display()
                        )));
                    }
                    let mut more = steps(&target);
                    more.reverse();
                    pending.extend(more);
                    continue;
                }
                if !last && !meta.is_dir() {
                    return Err(fail(format!(
                        "'{}' is {}, not a directory",
                        next.display(),
                        FileKind::of(&meta.file_type())
                    )));
                }
                at = next;
            }
        }
    }
    let kind = if missing > 0 {
        None
    } else {
        match std::fs::symlink_metadata(&at) {
            Ok(m) => Some(FileKind::of(&m.file_type())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("cannot resolve", path)(e)),
        }
    };
    // `x/` names a directory: the kernel refuses it for a file.
    if trailing && kind.is_some_and(|k| k != FileKind::Dir) {
        return Err(fail(format!(
            "'{}' is {}, but the path ends in '/', which names a directory",
            at.display(),
            kind.expect("checked")
        )));
    }
    Ok(Physical { path: at, kind })
}

/// Whether `path` ends in `/` or `/.` (or is `.`): it names a directory, and a final link
/// on it is followed.
fn ends_as_directory(path: &Path) -> bool {
    let text = path.as_os_str().to_string_lossy();
    text.ends_with('/') || text.ends_with("/.") || text == "."
}

/// A path the command reads from.
#[derive(Debug, Clone)]
struct Protected {
    what: String,
    given: PathBuf,
    real: PathBuf,
    id: Option<(u64, u64)>,
    tree: bool,
}

#[cfg(unix)]
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_path: &Path) -> Option<(u64, u64)> {
    None
}

/// The paths a command reads, and the checks every output path must pass against them.
///
/// An output is refused when, once resolved by [`physical`]:
/// - it is an input (the same path, or the same file through a hard link), or a directory
///   holding one;
/// - it is, holds or lies inside a *tree* — a directory every file of which is an input, such
///   as a dataset directory or the dataset cache;
/// - it is a symbolic link (never replaced), a FIFO, a device or a socket, or — for a file —
///   a directory, or — for a directory — a non-empty directory fair-pruner did not write
///   ([`StagedDir::check`]).
///
/// The checked output ([`OutputFile`], [`OutputDir`]) keeps the directory that will hold it
/// open, having created the missing directories on the way without following any symbolic
/// link; the write happens in that directory, so a link swapped into the path after the
/// check cannot redirect it.
#[derive(Debug, Clone, Default)]
pub struct OutputGuard {
    protected: Vec<Protected>,
}

impl OutputGuard {
    /// A guard with no inputs yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn protect(&mut self, what: &str, path: &Path, tree: bool) -> &mut Self {
        let real = path
            .canonicalize()
            .or_else(|_| physical(path).map(|p| p.path))
            .unwrap_or_else(|_| path.to_owned());
        self.protected.push(Protected {
            what: what.to_owned(),
            given: path.to_owned(),
            real,
            id: file_id(path),
            tree,
        });
        self
    }

    /// A file (or directory) the command reads, named `what` in errors (`--weights`): no
    /// output may be it or a directory holding it.
    pub fn input(&mut self, what: &str, path: &Path) -> &mut Self {
        self.protect(what, path, false)
    }

    /// A directory whose every file is an input (`--data-path`, the dataset cache): no output
    /// may be it, hold it or lie inside it. What its symbolic links lead to is read as part
    /// of it, so their targets are protected too (directories as trees, files as inputs):
    /// the tree is walked, without following links, at most [`MAX_TREE_DEPTH`] levels deep
    /// and [`MAX_TREE_ENTRIES`] entries in all.
    pub fn tree(&mut self, what: &str, path: &Path) -> &mut Self {
        self.protect(what, path, true);
        let root = self.protected.last().expect("just added").real.clone();
        let mut seen = std::collections::HashSet::from([root.clone()]);
        let mut stack = vec![(root, 0usize)];
        let mut entries = 0usize;
        while let Some((dir, depth)) = stack.pop() {
            let Ok(list) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in list.flatten() {
                entries += 1;
                if entries > MAX_TREE_ENTRIES {
                    return self;
                }
                let Ok(t) = entry.file_type() else {
                    continue;
                };
                let path = entry.path();
                if t.is_dir() && depth < MAX_TREE_DEPTH {
                    stack.push((path, depth + 1));
                } else if t.is_symlink() {
                    let Ok(real) = path.canonicalize() else {
                        continue;
                    };
                    if self
                        .protected
                        .iter()
                        .any(|p| p.tree && real.starts_with(&p.real))
                    {
                        continue;
                    }
                    let is_dir = real.is_dir();
                    self.protect(what, &path, is_dir);
                    if is_dir && depth < MAX_TREE_DEPTH && seen.insert(real.clone()) {
                        stack.push((real, depth + 1));
                    }
                }
            }
        }
        self
    }

    /// The inputs registered so far, as (what, path as given).
    pub fn inputs(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.protected
            .iter()
            .map(|p| (p.what.as_str(), p.given.as_path()))
    }

    /// Adds every input of `other`.
    pub fn merge(&mut self, other: OutputGuard) -> &mut Self {
        self.protected.extend(other.protected);
        self
    }

    /// Refuses `out` (resolved as `p`) when it clashes with an input.
    fn check_inputs(&self, what: &str, out: &Path, p: &Physical) -> Result<(), FsError> {
        // Followed: a symbolic link to an input is reported as that input.
        let out_id = p.kind.and(file_id(&p.path));
        // The directories the output would be written in, by identity: a bind mount of a
        // tree reaches the same directories under another path.
        let above: Vec<(u64, u64)> = p.path.ancestors().skip(1).filter_map(file_id).collect();
        for input in &self.protected {
            let inside_by_identity = input.tree
                && input
                    .id
                    .is_some_and(|id| above.contains(&id) || out_id == Some(id));
            let how = if p.path == input.real || (out_id.is_some() && out_id == input.id) {
                Some(format!(
                    "{what} is the same file as the input {} '{}'",
                    input.what,
                    input.given.display()
                ))
            } else if input.real.starts_with(&p.path) {
                Some(format!(
                    "{what} is a directory that holds the input {} '{}'",
                    input.what,
                    input.given.display()
                ))
            } else if input.tree && (p.path.starts_with(&input.real) || inside_by_identity) {
                Some(format!(
                    "{what} lies inside {} '{}', whose files fair-pruner only reads",
                    input.what,
                    input.given.display()
                ))
            } else {
                None
            };
            if let Some(how) = how {
                return Err(FsError::Output {
                    path: out.to_owned(),
                    detail: format!(
                        "{how}{}; writing there would destroy an input. Choose another {what}",
                        if p.path != out {
                            format!(" (it resolves to '{}')", p.path.display())
                        } else {
                            String::new()
                        }
                    ),
                });
            }
        }
        if p.kind == Some(FileKind::Symlink) {
            return Err(FsError::Output {
                path: out.to_owned(),
                detail: format!(
                    "{what} is a symbolic link; fair-pruner never replaces a symbolic link. Give the path it points to, or a new one"
                ),
            });
        }
        Ok(())
    }

    /// Opens the directory that will hold `p`, creating the missing directories of the
    /// physical path without following links; returns it and the output's file name.
    fn open_parent(what: &str, out: &Path, p: &Physical) -> Result<(Dir, OsString), FsError> {
        let (Some(parent), Some(name)) = (p.path.parent(), p.path.file_name()) else {
            return Err(FsError::Output {
                path: out.to_owned(),
                detail: format!("{what} names the root directory"),
            });
        };
        let dir = Dir::open_physical(parent, true).map_err(|e| {
            // ELOOP (a link where a directory was) or ENOTDIR (a file where one was).
            #[cfg(unix)]
            let looped = e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error());
            #[cfg(not(unix))]
            let looped = false;
            let changed = looped || e.kind() == std::io::ErrorKind::NotADirectory;
            FsError::Output {
                path: out.to_owned(),
                detail: format!(
                    "cannot create or open the directory '{}' ({e}){}",
                    parent.display(),
                    if changed {
                        "; a symbolic link or a file appeared on the path after it was checked"
                    } else {
                        ""
                    }
                ),
            }
        })?;
        Ok((dir, name.to_owned()))
    }

    /// The checks of [`OutputGuard::file`] without creating or opening anything (to fail
    /// fast before the work whose result is written later); returns the physical path.
    pub fn check_file(&self, what: &str, out: &Path) -> Result<PathBuf, FsError> {
        Ok(self.checked_file(what, out)?.path)
    }

    /// The checks of [`OutputGuard::dir`] without creating or opening anything; returns the
    /// physical path.
    pub fn check_dir(&self, what: &str, out: &Path) -> Result<PathBuf, FsError> {
        Ok(self.checked_dir(what, out)?.path)
    }

    fn checked_file(&self, what: &str, out: &Path) -> Result<Physical, FsError> {
        if ends_as_directory(out) {
            return Err(FsError::Output {
                path: out.to_owned(),
                detail: format!("{what} ends in '/', which names a directory; give a file path"),
            });
        }
        let p = physical(out)?;
        self.check_inputs(what, out, &p)?;
        match p.kind {
            None | Some(FileKind::File) => Ok(p),
            Some(kind) => Err(FsError::Output {
                path: out.to_owned(),
                detail: format!("{what} is {kind}; give a file path"),
            }),
        }
    }

    fn checked_dir(&self, what: &str, out: &Path) -> Result<Physical, FsError> {
        let p = physical(out)?;
        self.check_inputs(what, out, &p)?;
        StagedDir::check(&p.path).map_err(|e| match e {
            FsError::Output { detail, .. } => FsError::Output {
                path: out.to_owned(),
                detail: format!("{what}: {detail}"),
            },
            other => other,
        })?;
        Ok(p)
    }

    /// Checks `out` as an output *file* named `what` (`--out`) and prepares it: the missing
    /// directories are created and the one that will hold the file is opened.
    pub fn file(&self, what: &str, out: &Path) -> Result<OutputFile, FsError> {
        let p = self.checked_file(what, out)?;
        let (dir, name) = Self::open_parent(what, out, &p)?;
        Ok(OutputFile {
            dir,
            name,
            physical: p.path,
        })
    }

    /// Checks `out` as an output *directory* named `what`, replaced as a whole when written
    /// ([`OutputDir::stage`]): the checks of [`OutputGuard::file`] for a directory, plus
    /// [`StagedDir::check`] (never a non-empty directory fair-pruner did not write).
    pub fn dir(&self, what: &str, out: &Path) -> Result<OutputDir, FsError> {
        let p = self.checked_dir(what, out)?;
        let (dir, name) = Self::open_parent(what, out, &p)?;
        Ok(OutputDir {
            parent: dir,
            name,
            given: out.to_owned(),
            physical: p.path,
        })
    }
}

/// An output file that passed the [`OutputGuard`]: written atomically, in the directory it was
/// checked in.
#[derive(Debug)]
pub struct OutputFile {
    dir: Dir,
    name: OsString,
    physical: PathBuf,
}

impl OutputFile {
    /// Where the file is (absolute, physical).
    pub fn path(&self) -> &Path {
        &self.physical
    }

    /// Writes `bytes` as the whole file (temporary file and rename, in the checked directory);
    /// refuses if a symbolic link, directory or special file has appeared under its name.
    pub fn write(&self, bytes: &[u8]) -> Result<(), FsError> {
        write_in(&self.dir, &self.name, &self.physical, bytes)
    }
}

/// An output directory that passed the [`OutputGuard`]; [`OutputDir::stage`] starts writing
/// it.
#[derive(Debug)]
pub struct OutputDir {
    parent: Dir,
    name: OsString,
    given: PathBuf,
    physical: PathBuf,
}

impl OutputDir {
    /// Where the directory will be (absolute, physical).
    pub fn path(&self) -> &Path {
        &self.physical
    }

    /// Starts (re)writing the directory: a [`StagedDir`] created in, and swapped into place
    /// in, the directory that was checked. Its messages name the path as the user gave it.
    pub fn stage(self) -> Result<StagedDir, FsError> {
        StagedDir::in_dir(self.parent, self.name, self.given)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A temporary directory, canonical (so `/tmp` links do not confuse comparisons).
    fn root() -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let r = t.path().canonicalize().unwrap();
        (t, r)
    }

    #[test]
    fn physical_resolution_follows_the_kernel() {
        let (_t, r) = root();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::write(r.join("a/f"), b"").unwrap();
        symlink(r.join("a/b"), r.join("lb")).unwrap();
        symlink("a/b", r.join("rel")).unwrap();
        symlink(r.join("nowhere"), r.join("dangling")).unwrap();
        symlink(r.join("loop1"), r.join("loop2")).unwrap();
        symlink(r.join("loop2"), r.join("loop1")).unwrap();
        let p = |s: &str| physical(&r.join(s));
        assert_eq!(p("a/b/x").unwrap().path, r.join("a/b/x"));
        assert_eq!(p("lb/x").unwrap().path, r.join("a/b/x"));
        assert_eq!(p("rel/x").unwrap().path, r.join("a/b/x"));
        // `..` after a link is taken from where the link leads, as the kernel does.
        assert_eq!(p("lb/../f").unwrap().path, r.join("a/f"));
        // `..` after a missing directory returns to the directory that will hold it.
        assert_eq!(p("m1/m2/../../lb/x").unwrap().path, r.join("a/b/x"));
        assert_eq!(p("m1/../lb/x").unwrap().path, r.join("a/b/x"));
        assert_eq!(p("new/dir/x").unwrap().path, r.join("new/dir/x"));
        assert_eq!(p("new/dir/x").unwrap().kind, None);
        // The last component is not followed, unless the path ends in `/`.
        let last = p("lb").unwrap();
        assert_eq!(
            (last.path, last.kind),
            (r.join("lb"), Some(FileKind::Symlink))
        );
        let slash = physical(Path::new(&format!("{}/", r.join("lb").display()))).unwrap();
        assert_eq!(
            (slash.path, slash.kind),
            (r.join("a/b"), Some(FileKind::Dir))
        );
        assert_eq!(p("lb/.").unwrap().path, r.join("a/b"));
        // A link to a file with a trailing slash is refused, as the kernel refuses it.
        symlink(r.join("a/f"), r.join("lf")).unwrap();
        assert!(physical(Path::new(&format!("{}/", r.join("lf").display()))).is_err());
        assert!(physical(Path::new(&format!("{}/", r.join("a/f").display()))).is_err());
        assert_eq!(p("a/b/.").unwrap().kind, Some(FileKind::Dir));
        for bad in ["a/f/x", "a/f/..", "dangling/x", "loop1/x"] {
            assert!(p(bad).is_err(), "{bad}");
        }
        // Relative paths resolve from the current directory.
        let here = std::env::current_dir().unwrap().canonicalize().unwrap();
        assert_eq!(physical(Path::new("x/../y")).unwrap().path, here.join("y"));
    }

    #[test]
    fn outputs_are_refused_wherever_the_kernel_would_put_them_on_an_input() {
        let (_t, r) = root();
        let data = r.join("data");
        std::fs::create_dir_all(data.join("train")).unwrap();
        std::fs::write(data.join("train/images.idx"), b"pixels").unwrap();
        let w = r.join("w.safetensors");
        std::fs::write(&w, b"weights").unwrap();
        let cfg = r.join("cfg/run.toml");
        std::fs::create_dir_all(r.join("cfg")).unwrap();
        std::fs::write(&cfg, b"config").unwrap();
        symlink(&r, r.join("link")).unwrap();
        symlink(r.join("cfg"), r.join("cfglink")).unwrap();
        std::fs::hard_link(&w, r.join("hard")).unwrap();
        let mut g = OutputGuard::new();
        g.input("--weights", &w)
            .input("--config", &cfg)
            .tree("--data-path", &data);
        let refused = [
            "w.safetensors",
            "missing/../w.safetensors",
            "missing/../link/w.safetensors",
            "m1/m2/../../link/cfglink/run.toml",
            "cfglink/../w.safetensors",
            "hard",
            "link/hard",
            "cfg",
            "missing/../link/cfg",
            "data/train/images.idx",
            "data/new.bin",
            "missing/../link/data/train/new",
            "data",
            ".",
            "link",
        ];
        for s in refused {
            let e = g.file("--out", &r.join(s)).err();
            assert!(e.is_some(), "file {s} was allowed");
            let e = g.dir("--out", &r.join(s)).err();
            assert!(e.is_some(), "dir {s} was allowed");
            assert!(
                !r.join("missing").exists(),
                "{s}: a refused check created directories"
            );
        }
        let e = g
            .file("--out", &r.join("missing/../link/w.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--out is the same file as the input --weights"),
            "{e}"
        );
        let e = g.file("--out", &r.join("data/x")).unwrap_err().to_string();
        assert!(e.contains("lies inside --data-path"), "{e}");
        // A file output never ends in '/', even where it would be a new name.
        let e = g.file(
            "--out",
            Path::new(&format!("{}/", r.join("new.json").display())),
        );
        assert!(e.unwrap_err().to_string().contains("names a directory"));
        // Inputs are unchanged.
        assert_eq!(std::fs::read(&w).unwrap(), b"weights");
        assert_eq!(std::fs::read(&cfg).unwrap(), b"config");
        // Allowed: a sibling, a new subdirectory, through links that lead elsewhere.
        for s in [
            "scores.json",
            "runs/a/b.json",
            "missing/../link/runs/c.json",
            "cfg2/x",
        ] {
            let out = g.file("--out", &r.join(s)).unwrap();
            out.write(b"ok").unwrap();
            assert_eq!(std::fs::read(out.path()).unwrap(), b"ok", "{s}");
        }
        let d = g.dir("--out", &r.join("missing/../link/pruned")).unwrap();
        assert_eq!(d.path(), r.join("pruned"));
        let staged = d.stage().unwrap();
        std::fs::write(staged.path().join("model.toml"), b"g").unwrap();
        staged.commit().unwrap();
        assert!(r.join("pruned/model.toml").is_file());
    }

    #[test]
    fn what_links_in_a_tree_lead_to_is_protected_too() {
        let (_t, r) = root();
        // A dataset whose files and class directories are links into stores elsewhere.
        std::fs::create_dir_all(r.join("data/train")).unwrap();
        std::fs::create_dir_all(r.join("store/b/deeper")).unwrap();
        std::fs::create_dir_all(r.join("pool")).unwrap();
        std::fs::write(r.join("store/labels.idx"), b"labels").unwrap();
        std::fs::write(r.join("pool/img.png"), b"png").unwrap();
        symlink(r.join("store/labels.idx"), r.join("data/train-labels")).unwrap();
        symlink(r.join("store/b"), r.join("data/train/b")).unwrap();
        // A link inside a linked directory, leading further out.
        symlink(r.join("pool"), r.join("store/b/deeper/pool")).unwrap();
        let mut g = OutputGuard::new();
        g.tree("--data-path", &r.join("data"));
        for s in [
            "store/labels.idx",
            "store/b/0.png",
            "store/b",
            "pool/img.png",
            "pool/new.png",
            "data/train/b/0.png",
        ] {
            let e = g.file("--out", &r.join(s));
            assert!(e.is_err(), "{s} was allowed");
            assert!(e.unwrap_err().to_string().contains("--data-path"), "{s}");
        }
        // Siblings of the stores are fine.
        assert!(g.file("--out", &r.join("store/other.json")).is_ok());
        assert_eq!(
            std::fs::read(r.join("store/labels.idx")).unwrap(),
            b"labels"
        );
    }

    #[test]
    fn a_link_swapped_in_after_the_check_cannot_redirect_the_write() {
        let (_t, r) = root();
        let w = r.join("inputs/w.safetensors");
        std::fs::create_dir_all(r.join("inputs")).unwrap();
        std::fs::write(&w, b"weights").unwrap();
        let mut g = OutputGuard::new();
        g.input("--weights", &w);
        let out = g.file("--out", &r.join("runs/w.safetensors")).unwrap();
        // An attacker replaces the checked directory with a link to the inputs.
        std::fs::rename(r.join("runs"), r.join("runs-old")).unwrap();
        symlink(r.join("inputs"), r.join("runs")).unwrap();
        out.write(b"new").unwrap();
        assert_eq!(std::fs::read(&w).unwrap(), b"weights");
        assert_eq!(
            std::fs::read(r.join("runs-old/w.safetensors")).unwrap(),
            b"new"
        );
        // A link put where the file goes is refused, not followed or replaced.
        let out = g.file("--out", &r.join("runs-old/x")).unwrap();
        symlink(&w, r.join("runs-old/x")).unwrap();
        assert!(out.write(b"new").is_err());
        assert_eq!(std::fs::read(&w).unwrap(), b"weights");
        // A directory output: staged and swapped in the checked directory. Files inside the
        // staging directory are written by path, so after a swap they fail; nothing lands
        // among the inputs.
        let d = g.dir("--out", &r.join("runs-old/pruned")).unwrap();
        let s = d.stage().unwrap();
        std::fs::write(s.path().join("a"), b"1").unwrap();
        std::fs::rename(r.join("runs-old"), r.join("runs-older")).unwrap();
        symlink(r.join("inputs"), r.join("runs-old")).unwrap();
        assert!(std::fs::write(s.path().join("b"), b"2").is_err());
        assert!(s.commit().is_err());
        let inputs: Vec<_> = std::fs::read_dir(r.join("inputs")).unwrap().collect();
        assert_eq!(inputs.len(), 1);
        assert_eq!(std::fs::read(&w).unwrap(), b"weights");
    }
}
