//! The file rules of fair-pruner, in one place: every crate reads and writes files through
//! this one.
//!
//! - **Reading** ([`read_bounded`], [`open_regular`]): only regular files are opened. A FIFO,
//!   a device, a socket or a directory is refused by name before it is opened for reading,
//!   so nothing blocks on a pipe or reads `/dev/zero` forever, and every read is bounded by a
//!   limit the caller states (a file larger than the limit is refused from its metadata).
//!   [`read_at_most`] bounds a stream, e.g. a decompressor.
//! - **Confinement** ([`resolve_inside`]): a path read from a model file (ONNX external data)
//!   must stay inside the model's directory: no absolute paths, no `..`, no symbolic link that
//!   leads out.
//! - **Writing** ([`write_atomic`], [`StagedDir`]): a file is written under a fresh temporary
//!   name in its own directory and renamed into place; an output directory is built under a
//!   temporary name and swapped in whole. Neither ever replaces a symbolic link, a directory
//!   or a special file, nor a non-empty directory that fair-pruner did not write.
//! - **The output guard** ([`OutputGuard`]): an output path is resolved the way the kernel
//!   will resolve it ([`physical`]: symbolic links followed and `..` taken from the directory
//!   it is in, including directories that do not exist yet), checked against every input
//!   (files, and whole directories such as a dataset or the dataset cache), and then written
//!   through the directory it was checked in, so a symbolic link swapped in afterwards cannot
//!   redirect the write.
//! - **Scratch files** ([`scratch_file`]): an unnamed temporary file with its space reserved
//!   when it is made, read and written at offsets; [`free_space`], [`is_memory_backed`] and
//!   [`scratch_dir`] choose where it goes.
//!
//! ```
//! use fair_fs::OutputGuard;
//! let dir = tempfile::tempdir()?;
//! let weights = dir.path().join("model.safetensors");
//! std::fs::write(&weights, b"weights")?;
//! std::fs::create_dir(dir.path().join("data"))?;
//!
//! let mut guard = OutputGuard::new();
//! guard.input("--weights", &weights).tree("--data-path", &dir.path().join("data"));
//! // `missing/..` is the directory itself once `missing` exists: still the input.
//! let spelled = dir.path().join("missing/../model.safetensors");
//! assert!(guard.file("--out", &spelled).is_err());
//! // Nothing inside the dataset may be written.
//! assert!(guard.file("--out", &dir.path().join("data/new.bin")).is_err());
//! // A new file is fine; it is written atomically through the checked directory.
//! let out = guard.file("--out", &dir.path().join("runs/scores.json"))?;
//! out.write(b"{}")?;
//! assert_eq!(std::fs::read(dir.path().join("runs/scores.json"))?, b"{}");
//! assert_eq!(fair_fs::read_bounded(out.path(), 16, "a score file")?, b"{}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod confine;
mod guard;
mod read;
mod scratch;
mod sys;
mod write;

use std::path::PathBuf;

pub use confine::resolve_inside;
pub use guard::{
    MAX_TREE_DEPTH, MAX_TREE_ENTRIES, OutputDir, OutputFile, OutputGuard, Physical, physical,
};
pub use read::{
    FileKind, check_regular, open_regular, read_at_most, read_bounded, read_string_bounded,
};
pub use scratch::{ScratchFile, free_space, is_memory_backed, scratch_dir, scratch_file};
pub use write::{OUTPUT_MARKER, StagedDir, TempDir, write_atomic};

/// What can go wrong reading or writing a file. Every variant names the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// An operating-system error.
    #[error("{action} '{}': {source}", .path.display())]
    Io {
        /// What was being done ("cannot read", "cannot write", ...).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The path is not a regular file (a FIFO, a device, a socket, a directory).
    #[error("'{}' is {kind}, expected {expected}; it was not opened", .path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: FileKind,
        /// What was expected, e.g. "a regular file" or "an ONNX model file".
        expected: String,
    },
    /// The file is larger than the limit for its kind.
    #[error("'{}' is {size} bytes, more than the {limit}-byte limit for {what}", .path.display())]
    TooLarge {
        /// The path.
        path: PathBuf,
        /// Its size (or the bytes read before the limit was passed).
        size: u64,
        /// The limit.
        limit: u64,
        /// What kind of file it is ("a graph file").
        what: String,
    },
    /// The file held more than its size said when it was opened, and more than the limit
    /// (a file being written to, or a special file such as those in `/proc`, whose size
    /// reads as 0).
    #[error(
        "'{}' grew while being read: it had {size} bytes when opened, and more than the \
         {limit}-byte limit for {what} were read (a file being written to, or a special file \
         such as those in /proc?)",
        .path.display()
    )]
    Grew {
        /// The path.
        path: PathBuf,
        /// Its size when it was opened.
        size: u64,
        /// The limit that was passed.
        limit: u64,
        /// What kind of file it is.
        what: String,
    },
    /// A path read from a file leads outside the directory it must stay in.
    #[error("'{location}' (from '{}') {detail}", .file.display())]
    Outside {
        /// The path as written in the file.
        location: String,
        /// The file that names it.
        file: PathBuf,
        /// Why it is refused.
        detail: String,
    },
    /// An output path cannot be used: it is an input, holds one, lies inside a directory that
    /// is only read, is a symbolic link, or is a directory fair-pruner did not write.
    #[error("refusing to write '{}': {detail}", .path.display())]
    Output {
        /// The output path as given.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

pub(crate) fn io_err<'a>(
    action: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> FsError + 'a {
    move |source| FsError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
