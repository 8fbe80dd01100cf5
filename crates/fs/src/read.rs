//! Reading: regular files only, and never more than a stated limit.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::{FsError, io_err};

/// What a path is, in the words an error message uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (only reported where links are not followed).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device such as `/dev/zero`.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A Unix socket.
    Socket,
    /// Anything else.
    Other,
}

impl FileKind {
    /// The kind of a file type from `std::fs` metadata.
    pub fn of(t: &std::fs::FileType) -> FileKind {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if t.is_fifo() {
                return FileKind::Fifo;
            }
            if t.is_char_device() {
                return FileKind::CharDevice;
            }
            if t.is_block_device() {
                return FileKind::BlockDevice;
            }
            if t.is_socket() {
                return FileKind::Socket;
            }
        }
        if t.is_symlink() {
            FileKind::Symlink
        } else if t.is_dir() {
            FileKind::Dir
        } else if t.is_file() {
            FileKind::File
        } else {
            FileKind::Other
        }
    }
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileKind::File => "a regular file",
            FileKind::Dir => "a directory",
            FileKind::Symlink => "a symbolic link",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Socket => "a socket",
            FileKind::Other => "not a regular file",
        })
    }
}

/// Checks that `path` (symbolic links followed) is a regular file, without opening it;
/// returns its metadata. `expected` names what the caller wants, for the error ("an ONNX
/// model file").
pub fn check_regular(path: &Path, expected: &str) -> Result<std::fs::Metadata, FsError> {
    let meta = std::fs::metadata(path).map_err(io_err("cannot read", path))?;
    if !meta.is_file() {
        return Err(FsError::NotRegular {
            path: path.to_owned(),
            kind: FileKind::of(&meta.file_type()),
            expected: expected.to_owned(),
        });
    }
    Ok(meta)
}

/// Opens `path` for reading once it is known to be a regular file ([`check_regular`]); the
/// open itself does not block, so a FIFO swapped in after the check cannot hang the caller,
/// and the opened file is checked again. Returns the file and its size.
pub fn open_regular(path: &Path, expected: &str) -> Result<(File, u64), FsError> {
    check_regular(path, expected)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a
        // writer. It changes nothing for regular files.
        options.custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    }
    let file = options.open(path).map_err(io_err("cannot read", path))?;
    let meta = file.metadata().map_err(io_err("cannot read", path))?;
    if !meta.is_file() {
        return Err(FsError::NotRegular {
            path: path.to_owned(),
            kind: FileKind::of(&meta.file_type()),
            expected: expected.to_owned(),
        });
    }
    Ok((file, meta.len()))
}

/// Reads the regular file `path` whole, refusing one larger than `limit` bytes (from its
/// metadata, before reading, and again while reading in case it grows). `what` names the
/// kind of file in errors ("a graph file").
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, FsError> {
    let (file, size) = open_regular(path, what)?;
    let too_large = |size| FsError::TooLarge {
        path: path.to_owned(),
        size,
        limit,
        what: what.to_owned(),
    };
    if size > limit {
        return Err(too_large(size));
    }
    match read_at_most(file, limit).map_err(io_err("cannot read", path))? {
        Some(bytes) => Ok(bytes),
        None => Err(FsError::Grew {
            path: path.to_owned(),
            size,
            limit,
            what: what.to_owned(),
        }),
    }
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_string_bounded(path: &Path, limit: u64, what: &str) -> Result<String, FsError> {
    let bytes = read_bounded(path, limit, what)?;
    String::from_utf8(bytes).map_err(|e| FsError::Io {
        action: "cannot read",
        path: path.to_owned(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text (at byte {})", e.utf8_error().valid_up_to()),
        ),
    })
}

/// Reads `reader` to its end if it yields at most `limit` bytes; `Ok(None)` when it yields
/// more (only `limit + 1` bytes are ever read). For streams whose size a header promises,
/// such as a decompressor.
pub fn read_at_most(reader: impl Read, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    reader.take(limit.saturating_add(1)).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= limit).then_some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_by_kind_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_bounded(dir.path(), 10, "a graph file").unwrap_err();
        assert!(
            e.to_string()
                .contains("is a directory, expected a graph file"),
            "{e}"
        );
        #[cfg(unix)]
        {
            let e = read_bounded(Path::new("/dev/zero"), 10, "a model").unwrap_err();
            assert!(e.to_string().contains("a character device"), "{e}");
            let fifo = dir.path().join("pipe.png");
            rustix::fs::mkfifoat(
                rustix::fs::CWD,
                &fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
            )
            .unwrap();
            let e = read_bounded(&fifo, 10, "an image").unwrap_err();
            assert!(e.to_string().contains("a FIFO"), "{e}");
            let link = dir.path().join("link");
            std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
            assert!(matches!(
                read_bounded(&link, 10, "x"),
                Err(FsError::NotRegular {
                    kind: FileKind::CharDevice,
                    ..
                })
            ));
        }
    }

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_bounded(&p, 5, "x").unwrap(), b"12345");
        let e = read_bounded(&p, 4, "a plan file").unwrap_err().to_string();
        assert!(
            e.contains("5 bytes") && e.contains("4-byte limit for a plan file"),
            "{e}"
        );
        assert_eq!(read_at_most(&b"abc"[..], 3).unwrap().unwrap(), b"abc");
        assert!(read_at_most(&b"abcd"[..], 3).unwrap().is_none());
        // An endless stream is cut after limit + 1 bytes.
        assert!(read_at_most(std::io::repeat(0), 1 << 20).unwrap().is_none());
        // A file whose size reads as 0 but which holds bytes (as in /proc) grows past it.
        #[cfg(target_os = "linux")]
        {
            let e = read_bounded(Path::new("/proc/self/status"), 0, "a config")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("grew while being read") && e.contains("0 bytes"),
                "{e}"
            );
        }
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        let e = read_string_bounded(&p, 5, "x").unwrap_err().to_string();
        assert!(e.contains("not UTF-8"), "{e}");
    }
}
