//! An open directory and the operations relative to it. On Unix it holds a file descriptor,
//! so every operation acts on the directory that was opened, whatever happens to its path
//! afterwards; elsewhere it holds the path.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::read::FileKind;

/// An open directory.
#[derive(Debug)]
pub(crate) struct Dir {
    #[cfg(unix)]
    fd: std::os::fd::OwnedFd,
    path: PathBuf,
}

#[cfg(unix)]
mod imp {
    use super::*;
    use rustix::fs::{AtFlags, CWD, Mode, OFlags, RenameFlags};

    fn kind_of(mode: rustix::fs::RawMode) -> FileKind {
        use rustix::fs::FileType as T;
        match T::from_raw_mode(mode) {
            T::RegularFile => FileKind::File,
            T::Directory => FileKind::Dir,
            T::Symlink => FileKind::Symlink,
            T::Fifo => FileKind::Fifo,
            T::CharacterDevice => FileKind::CharDevice,
            T::BlockDevice => FileKind::BlockDevice,
            T::Socket => FileKind::Socket,
            _ => FileKind::Other,
        }
    }

    /// A directory handle for `*at` calls. On Linux `O_PATH`, which needs only search (x)
    /// permission on the directory, as plain path traversal does; elsewhere read-only.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const DIR_FLAGS: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const DIR_FLAGS: OFlags = OFlags::DIRECTORY
        .union(OFlags::RDONLY)
        .union(OFlags::CLOEXEC);

    impl Dir {
        /// Opens the directory `path`, following symbolic links.
        pub(crate) fn open(path: &Path) -> io::Result<Dir> {
            let fd = rustix::fs::openat(CWD, path, DIR_FLAGS, Mode::empty())?;
            Ok(Dir {
                fd,
                path: path.to_owned(),
            })
        }

        /// Opens the absolute `path` one component at a time without following any symbolic
        /// link, creating missing directories on the way when `create` is set. A symbolic
        /// link anywhere on the path is an error (`ELOOP`/`ENOTDIR`), so the directory
        /// opened is the one the path names physically.
        pub(crate) fn open_physical(path: &Path, create: bool) -> io::Result<Dir> {
            let mut dir = Dir::open(Path::new("/"))?;
            let mut at = PathBuf::from("/");
            for c in path.components() {
                match c {
                    Component::RootDir | Component::CurDir => {}
                    Component::Normal(name) => {
                        at.push(name);
                        dir = dir.child_dir(name, create, &at)?;
                    }
                    Component::ParentDir | Component::Prefix(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "not a physical path (it holds '..')",
                        ));
                    }
                }
            }
            Ok(dir)
        }

        fn child_dir(&self, name: &OsStr, create: bool, at: &Path) -> io::Result<Dir> {
            let open =
                || rustix::fs::openat(&self.fd, name, DIR_FLAGS | OFlags::NOFOLLOW, Mode::empty());
            let fd = match open() {
                Err(rustix::io::Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o777)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    open()?
                }
                other => other?,
            };
            Ok(Dir {
                fd,
                path: at.to_owned(),
            })
        }

        /// What `name` is in this directory, without following a symbolic link; `None` when
        /// it does not exist.
        pub(crate) fn child_kind(&self, name: &OsStr) -> io::Result<Option<FileKind>> {
            match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Ok(Some(kind_of(st.st_mode))),
                Err(rustix::io::Errno::NOENT) => Ok(None),
                Err(e) => Err(e.into()),
            }
        }

        /// Creates `name` as a new file for writing; fails if anything has that name.
        pub(crate) fn create_new(&self, name: &OsStr) -> io::Result<File> {
            let fd = rustix::fs::openat(
                &self.fd,
                name,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o666),
            )?;
            Ok(File::from(fd))
        }

        /// Creates the directory `name`.
        pub(crate) fn mkdir(&self, name: &OsStr) -> io::Result<()> {
            Ok(rustix::fs::mkdirat(
                &self.fd,
                name,
                Mode::from_raw_mode(0o777),
            )?)
        }

        /// Renames `from` to `to`, replacing a file `to`.
        pub(crate) fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
            Ok(rustix::fs::renameat(&self.fd, from, &self.fd, to)?)
        }

        /// Renames `from` to `to`; fails if `to` exists.
        pub(crate) fn rename_new(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            match rustix::fs::renameat_with(&self.fd, from, &self.fd, to, RenameFlags::NOREPLACE) {
                Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {}
                other => return Ok(other?),
            }
            if self.child_kind(to)?.is_some() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            self.rename(from, to)
        }

        /// Swaps `a` and `b` in one step (Linux `renameat2(RENAME_EXCHANGE)`); `Unsupported`
        /// where the platform or file system has no such call.
        pub(crate) fn exchange(&self, a: &OsStr, b: &OsStr) -> io::Result<()> {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            {
                match rustix::fs::renameat_with(&self.fd, a, &self.fd, b, RenameFlags::EXCHANGE) {
                    Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                        Err(io::Error::from(io::ErrorKind::Unsupported))
                    }
                    other => Ok(other?),
                }
            }
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            {
                let _ = (a, b, RenameFlags::empty());
                Err(io::Error::from(io::ErrorKind::Unsupported))
            }
        }

        /// Removes the file `name`.
        pub(crate) fn remove_file(&self, name: &OsStr) -> io::Result<()> {
            Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?)
        }

        /// Opens `name` (a file or directory, not followed if it is a link) and takes an
        /// exclusive lock on it without waiting: `Ok(Some(lock))` while held, `Ok(None)` when
        /// another process holds it. Staging directories and temporary files are locked by
        /// the process writing them, so a stale one (its writer gone, in whatever PID
        /// namespace) is exactly one whose lock can be taken.
        pub(crate) fn try_lock(&self, name: &OsStr) -> io::Result<Option<Lock>> {
            let fd = rustix::fs::openat(
                &self.fd,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
                Mode::empty(),
            )?;
            match rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => Ok(Some(Lock { _fd: fd })),
                Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    }

    /// An exclusive lock on a file or directory, held until dropped.
    #[derive(Debug)]
    pub(crate) struct Lock {
        _fd: std::os::fd::OwnedFd,
    }

    /// Takes an exclusive lock on the open `file` (a temporary file being written).
    pub(crate) fn lock_file(file: &File) -> io::Result<()> {
        Ok(rustix::fs::flock(
            file,
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        )?)
    }
}

#[cfg(not(unix))]
mod imp {
    use super::*;

    fn kind_of(meta: &std::fs::Metadata) -> FileKind {
        FileKind::of(&meta.file_type())
    }

    impl Dir {
        pub(crate) fn open(path: &Path) -> io::Result<Dir> {
            if !std::fs::metadata(path)?.is_dir() {
                return Err(io::Error::new(io::ErrorKind::Other, "not a directory"));
            }
            Ok(Dir {
                path: path.to_owned(),
            })
        }

        pub(crate) fn open_physical(path: &Path, create: bool) -> io::Result<Dir> {
            if create {
                std::fs::create_dir_all(path)?;
            }
            Dir::open(path)
        }

        pub(crate) fn child_kind(&self, name: &OsStr) -> io::Result<Option<FileKind>> {
            match std::fs::symlink_metadata(self.path.join(name)) {
                Ok(m) => Ok(Some(kind_of(&m))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        }

        pub(crate) fn create_new(&self, name: &OsStr) -> io::Result<File> {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.path.join(name))
        }

        pub(crate) fn mkdir(&self, name: &OsStr) -> io::Result<()> {
            std::fs::create_dir(self.path.join(name))
        }

        pub(crate) fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
            std::fs::rename(self.path.join(from), self.path.join(to))
        }

        pub(crate) fn rename_new(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
            if self.child_kind(to)?.is_some() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            self.rename(from, to)
        }

        pub(crate) fn exchange(&self, _a: &OsStr, _b: &OsStr) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::Unsupported))
        }

        pub(crate) fn remove_file(&self, name: &OsStr) -> io::Result<()> {
            std::fs::remove_file(self.path.join(name))
        }

        /// Without file locks, a temporary entry counts as stale when no process with the
        /// pid in its name runs here.
        pub(crate) fn try_lock(&self, name: &OsStr) -> io::Result<Option<Lock>> {
            let pid = name
                .to_string_lossy()
                .rsplit_once(|c| c == '.')
                .and_then(|(_, tail)| tail.split('-').nth(1)?.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            Ok((!alive).then_some(Lock))
        }
    }

    /// A stand-in for a lock where the platform has none.
    #[derive(Debug)]
    pub(crate) struct Lock;

    pub(crate) fn lock_file(_file: &File) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) use imp::{Lock, lock_file};

impl Dir {
    /// The path the directory was opened by (for messages and for writes inside it).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}
