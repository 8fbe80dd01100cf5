//! Scratch files: unnamed temporary files with their space reserved up front, and the
//! questions asked of the directory they go to (its free space, whether it is held in
//! memory).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::{FsError, io_err};

/// An unnamed temporary file whose space was reserved when it was made (see
/// [`scratch_file`]). The system removes it when it is dropped, also when the process dies.
/// Reads and writes are positional, so a shared reference can read.
#[derive(Debug)]
pub struct ScratchFile {
    file: File,
    dir: PathBuf,
    reserved: u64,
    written: u64,
}

/// An unnamed temporary file in `dir` with `bytes` of space reserved, so that a file system
/// without the room fails here (`ENOSPC`) rather than in a write later. File systems that
/// cannot reserve space (`EOPNOTSUPP`) give an unreserved file.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let mut f = fair_fs::scratch_file(dir.path(), 8)?;
/// f.write_all_at(&[1, 2, 3, 4], 4)?;
/// let mut back = [0; 2];
/// f.read_exact_at(&mut back, 5)?;
/// assert_eq!(back, [2, 3]);
/// assert_eq!(f.written(), 8);
/// // The file has no name.
/// assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn scratch_file(dir: &Path, bytes: u64) -> Result<ScratchFile, FsError> {
    let file =
        tempfile::tempfile_in(dir).map_err(io_err("cannot make a temporary file in", dir))?;
    reserve(&file, bytes).map_err(io_err(
        "cannot reserve the space of a temporary file in",
        dir,
    ))?;
    Ok(ScratchFile {
        file,
        dir: dir.to_owned(),
        reserved: bytes,
        written: 0,
    })
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn reserve(file: &File, bytes: u64) -> io::Result<()> {
    use rustix::io::Errno;
    if bytes == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, bytes) {
        Ok(()) | Err(Errno::OPNOTSUPP | Errno::NOSYS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn reserve(_file: &File, _bytes: u64) -> io::Result<()> {
    Ok(())
}

impl ScratchFile {
    /// The directory the file was made in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bytes reserved when it was made.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// The end of the furthest write so far: the bytes of the file that hold data.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        #[cfg(unix)]
        std::os::unix::fs::FileExt::write_all_at(&self.file, buf, offset)?;
        #[cfg(not(unix))]
        {
            use std::io::{Seek, SeekFrom, Write};
            self.file.seek(SeekFrom::Start(offset))?;
            self.file.write_all(buf)?;
        }
        self.written = self.written.max(offset + buf.len() as u64);
        Ok(())
    }

    /// Fills `buf` from `offset`. Reading past the data written is an error
    /// (`UnexpectedEof`), also inside the reserved space (which reads as zeros).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset.saturating_add(buf.len() as u64) > self.written {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the data written",
            ));
        }
        #[cfg(unix)]
        std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)?;
        #[cfg(not(unix))]
        {
            use std::io::{Read, Seek, SeekFrom};
            let mut file = &self.file;
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(buf)?;
        }
        Ok(())
    }
}

/// The bytes free to an unprivileged user in the file system of `dir` (`None` where
/// unknown).
pub fn free_space(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let stat = rustix::fs::statvfs(dir).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Whether `path` lies in a file system held in memory (Linux tmpfs or ramfs), where a
/// scratch file takes memory, not disk. False where unknown (another system, or a path that
/// cannot be queried).
pub fn is_memory_backed(path: &Path) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        const TMPFS_MAGIC: u64 = 0x0102_1994;
        const RAMFS_MAGIC: u64 = 0x8584_58f6;
        let Ok(stat) = rustix::fs::statfs(path) else {
            return false;
        };
        // `f_type`'s integer type differs between targets; the magic numbers are 32-bit.
        #[allow(clippy::unnecessary_cast)]
        let kind = stat.f_type as u64 & 0xFFFF_FFFF;
        kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = path;
        false
    }
}

/// Where scratch files go by default, given the system's temporary directory `temp` and a
/// `fallback` (`/var/tmp`): `temp` unless it is held in memory ([`is_memory_backed`]), else
/// `fallback` where that is a directory not held in memory; `None` where neither will do.
pub fn scratch_dir(temp: &Path, fallback: &Path) -> Option<PathBuf> {
    if !is_memory_backed(temp) {
        return Some(temp.to_owned());
    }
    (fallback.is_dir() && !is_memory_backed(fallback)).then(|| fallback.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_files_are_unnamed_reserved_and_positional() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = scratch_file(dir.path(), 1 << 20).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(f.dir(), dir.path());
        assert_eq!(f.reserved(), 1 << 20);
        if cfg!(target_os = "linux") {
            // Every Linux file system the tests run on can reserve.
            assert_eq!(f.file.metadata().unwrap().len(), 1 << 20);
        }
        assert_eq!(f.written(), 0);
        f.write_all_at(b"later", 100).unwrap();
        f.write_all_at(b"first", 0).unwrap();
        assert_eq!(f.written(), 105);
        let mut b = [0u8; 5];
        f.read_exact_at(&mut b, 100).unwrap();
        assert_eq!(&b, b"later");
        f.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(&b, b"first");
        // Past the data written, inside the reserved space.
        let e = f.read_exact_at(&mut b, 101).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_reservation_without_room_fails_when_the_file_is_made() {
        let dir = tempfile::tempdir().unwrap();
        // More than any file system holds (EFBIG or ENOSPC).
        let e = scratch_file(dir.path(), i64::MAX as u64).unwrap_err();
        assert!(e.to_string().contains("cannot reserve"), "{e}");
        assert!(
            e.to_string().contains(&*dir.path().to_string_lossy()),
            "{e}"
        );
        let e = scratch_file(&dir.path().join("missing"), 8).unwrap_err();
        assert!(e.to_string().contains("cannot make"), "{e}");
    }

    #[test]
    fn free_space_is_known_on_unix() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(free_space(dir.path()).is_some(), cfg!(unix));
        assert_eq!(free_space(&dir.path().join("missing")), None);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn memory_file_systems_are_recognised_and_avoided() {
        let disk = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert!(!is_memory_backed(Path::new("/proc")));
        assert!(!is_memory_backed(Path::new("/no/such/directory")));
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut memory = None;
        for line in mounts.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 2 && f[2] == "tmpfs" && Path::new(f[1]).is_dir() {
                assert!(is_memory_backed(Path::new(f[1])), "{line}");
                memory = Some(PathBuf::from(f[1]));
            }
        }
        if is_memory_backed(disk) {
            return; // the sources themselves are in memory: nothing to choose between
        }
        assert_eq!(scratch_dir(disk, Path::new("/none")), Some(disk.into()));
        if let Some(m) = memory {
            assert_eq!(scratch_dir(&m, disk), Some(disk.into()));
            assert_eq!(scratch_dir(&m, &m), None);
            assert_eq!(scratch_dir(&m, Path::new("/no/such/directory")), None);
        }
    }
}
