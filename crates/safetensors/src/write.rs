//! Writing: one layout (safetensors' own) and one metadata policy, atomically.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use crate::SafetensorsError;
use crate::dtype::{Dtype, shape_text};

/// The metadata key every file written here carries, with the value [`FORMAT`].
pub const FORMAT_KEY: &str = "format";

/// The value of [`FORMAT_KEY`]: `"pt"`, so PyTorch's `safetensors.torch` accepts the file.
pub const FORMAT: &str = "pt";

/// One tensor to write: its name, dtype, shape and bytes (little-endian, row-major).
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    /// Its name (unique in the file, and not `__metadata__`).
    pub name: &'a str,
    /// Its element type.
    pub dtype: Dtype,
    /// Its dimensions (none for a scalar).
    pub shape: &'a [u64],
    /// Its bytes: exactly the shape's element count times the dtype's size.
    pub data: &'a [u8],
}

/// The bytes of a safetensors file holding `tensors`, with `metadata` plus
/// `format = "pt"` ([`FORMAT_KEY`], [`FORMAT`]) in its header; `path` names the file in
/// errors (for a checked output written with `fair_fs::OutputFile::write`).
///
/// The layout is safetensors' own: tensors sorted by dtype (largest in safetensors' order
/// first), then by name, packed from byte 0; the header padded with spaces to a multiple
/// of 8 bytes. The metadata is written in key order, so the same tensors and metadata
/// always give the same bytes.
///
/// A name given twice or called `__metadata__`, data whose length is not the shape's size,
/// or a caller's metadata that sets `format` is a [`SafetensorsError::Unwritable`].
pub fn to_bytes(
    path: &Path,
    tensors: &[TensorRef<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, SafetensorsError> {
    let bad = |message: String| SafetensorsError::Unwritable {
        path: path.to_owned(),
        message,
    };
    if let Some(value) = metadata.get(FORMAT_KEY) {
        return Err(bad(format!(
            "the metadata sets \"{FORMAT_KEY}\" to {value:?}, but that key is always \
             \"{FORMAT}\" (it is written for every file)"
        )));
    }
    let mut seen = HashSet::new();
    for t in tensors {
        if t.name == "__metadata__" {
            return Err(bad(
                "a tensor cannot be called \"__metadata__\" (the header's metadata key)".to_owned(),
            ));
        }
        if !seen.insert(t.name) {
            return Err(bad(format!("tensor '{}' is given more than once", t.name)));
        }
        let nbytes = t.dtype.nbytes(t.shape).ok_or_else(|| {
            bad(format!(
                "tensor '{}' has shape {} of dtype {}, whose size in bytes overflows",
                t.name,
                shape_text(t.shape),
                t.dtype
            ))
        })?;
        if nbytes != t.data.len() as u64 {
            return Err(bad(format!(
                "tensor '{}' has shape {} of dtype {} = {nbytes} bytes, but {} bytes of data \
                 were given",
                t.name,
                shape_text(t.shape),
                t.dtype,
                t.data.len()
            )));
        }
    }
    let mut order: Vec<&TensorRef<'_>> = tensors.iter().collect();
    order.sort_by(|a, b| b.dtype.cmp(&a.dtype).then(a.name.cmp(b.name)));

    let quoted = |s: &str| serde_json::to_string(s).expect("a string serialises");
    let mut all = metadata.clone();
    all.insert(FORMAT_KEY.to_owned(), FORMAT.to_owned());
    let pairs: Vec<String> = all
        .iter()
        .map(|(k, v)| format!("{}:{}", quoted(k), quoted(v)))
        .collect();
    let mut entries = vec![format!("\"__metadata__\":{{{}}}", pairs.join(","))];
    let mut offset = 0u64;
    for t in &order {
        let dims: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        let end = offset + t.data.len() as u64;
        entries.push(format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            quoted(t.name),
            t.dtype,
            dims.join(",")
        ));
        offset = end;
    }
    let mut header = format!("{{{}}}", entries.join(",")).into_bytes();
    // Padded so the data section starts 8-byte aligned, as safetensors writes it.
    header.resize(header.len().next_multiple_of(8), b' ');

    let mut bytes = Vec::with_capacity(8 + header.len() + offset as usize);
    bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&header);
    for t in &order {
        bytes.extend_from_slice(t.data);
    }
    Ok(bytes)
}

/// Writes [`to_bytes`]'s file to `path`, atomically ([`fair_fs::write_atomic`]: a fresh
/// temporary file in the same directory, renamed into place), so a reader never sees a
/// half-written file and a failed write leaves the old file intact.
///
/// Refuses to replace anything but a regular file: a directory, a device such as
/// `/dev/null`, a FIFO or a socket at `path` is a [`SafetensorsError::Unwritable`] naming
/// it, and a symbolic link is refused by `fair_fs::write_atomic` ([`SafetensorsError::Fs`]).
pub fn write(
    path: &Path,
    tensors: &[TensorRef<'_>],
    metadata: &BTreeMap<String, String>,
) -> Result<(), SafetensorsError> {
    check_replaceable(path)?;
    let bytes = to_bytes(path, tensors, metadata)?;
    fair_fs::write_atomic(path, &bytes)?;
    Ok(())
}

/// Refuses a `path` that is a directory, a device, a FIFO or a socket: the rename would
/// replace it with a regular file. (A symbolic link is left to `fair_fs::write_atomic`.)
pub fn check_replaceable(path: &Path) -> Result<(), SafetensorsError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        let kind = fair_fs::FileKind::of(&meta.file_type());
        if !matches!(kind, fair_fs::FileKind::File | fair_fs::FileKind::Symlink) {
            return Err(SafetensorsError::Unwritable {
                path: path.to_owned(),
                message: format!("is {kind}; refusing to replace it with a safetensors file"),
            });
        }
    }
    Ok(())
}
