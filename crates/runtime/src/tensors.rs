//! Reading and writing named libtorch tensors as safetensors files: the tch adapter over
//! [`fair_safetensors`], which owns the file format (the header checks, the bounded reads,
//! the atomic writes and the metadata written). This module maps safetensors dtypes to
//! libtorch kinds and back, refuses dtypes libtorch tensors cannot hold, and fills tensors
//! straight from the file.
//!
//! Reading is defensive. Anything that is not a regular file (`/dev/zero`, a FIFO, a
//! directory) is refused before it is opened. The header is read and checked against the
//! file's size before any tensor data is read ([`crate::Model`] also compares the declared
//! names, dtypes and shapes with its graph at that point, so a file that does not fit is
//! refused after reading only its header). Tensors are then read one at a time, straight
//! into the tensors returned, so a corrupt or hostile file costs at most its tensor data in
//! memory (plus a few MiB), and every problem is reported in plain words naming the file
//! and the tensor.

use std::collections::BTreeMap;
use std::path::Path;

use fair_safetensors::{Dtype, SafetensorsFile, TensorInfo, TensorRef};
use tch::{Device, Kind, Tensor};

use crate::error::{RuntimeError, tch_context as torch};

/// The dtypes fair-pruner can turn into libtorch tensors, with the kind each becomes.
const LOADABLE: [(Dtype, Kind); 10] = [
    (Dtype::Bool, Kind::Bool),
    (Dtype::U8, Kind::Uint8),
    (Dtype::I8, Kind::Int8),
    (Dtype::I16, Kind::Int16),
    (Dtype::I32, Kind::Int),
    (Dtype::I64, Kind::Int64),
    (Dtype::F16, Kind::Half),
    (Dtype::BF16, Kind::BFloat16),
    (Dtype::F32, Kind::Float),
    (Dtype::F64, Kind::Double),
];

/// The libtorch kind of a loadable safetensors dtype.
fn kind_of(dtype: Dtype) -> Option<Kind> {
    LOADABLE.iter().find(|(d, _)| *d == dtype).map(|(_, k)| *k)
}

/// The safetensors dtype of a libtorch kind, if safetensors can hold it.
fn dtype_of(kind: Kind) -> Option<Dtype> {
    LOADABLE.iter().find(|(_, k)| *k == kind).map(|(d, _)| *d)
}

/// Reads every tensor of a safetensors file onto `device`, sorted by name.
///
/// Refuses anything that is not a regular file (a directory, a device such as `/dev/zero`,
/// a FIFO, a socket) without opening it, so nothing blocks or reads forever. The header
/// length and the header are checked against the file size before the tensor data is read,
/// and the tensors are then read one at a time straight into libtorch tensors, so nothing
/// larger than the file's tensor data (plus a few MiB of buffer) is allocated, and a file
/// whose tensor data exceeds the memory available is refused before any of it is read. A
/// corrupt or truncated file, or an unsupported dtype, is a [`RuntimeError::BadTensorFile`]
/// naming the file (and the tensor) and saying in plain words what is wrong; a file that
/// cannot be opened or read is a [`RuntimeError::Io`].
pub fn read_safetensors(
    path: &Path,
    device: Device,
) -> Result<Vec<(String, Tensor)>, RuntimeError> {
    let mut out = TensorFile::open(path)?.read(device)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Bytes read from the file at a time while filling a tensor. Small: the process keeps about
/// fifteen freed chunks' worth of memory cached (with 8 MiB chunks, loading 256 MiB of
/// weights peaked 110 MiB higher than with 1 MiB ones).
const CHUNK: usize = 1 << 20;

/// A safetensors file whose header has been read and checked (by [`SafetensorsFile::open`],
/// and here for the dtypes fair-pruner loads); none of its tensor data has been read yet, so
/// what it declares can be compared with what is wanted first.
pub(crate) struct TensorFile {
    file: SafetensorsFile,
}

impl TensorFile {
    /// Opens `path` and reads and checks its header; reads no tensor data. Allocates at
    /// most the header's size, which is checked against the file's size first.
    pub(crate) fn open(path: &Path) -> Result<Self, RuntimeError> {
        let file = SafetensorsFile::open(path)?;
        if let Some(t) = file.tensors().iter().find(|t| kind_of(t.dtype).is_none()) {
            let loadable: Vec<&str> = LOADABLE.iter().map(|(d, _)| d.name()).collect();
            return Err(RuntimeError::BadTensorFile {
                path: path.to_owned(),
                message: format!(
                    "tensor '{}' has dtype {}, which fair-pruner cannot load (it loads {})",
                    t.name,
                    t.dtype,
                    loadable.join(", ")
                ),
            });
        }
        Ok(TensorFile { file })
    }

    /// Every tensor the header declares, sorted by name: its name, libtorch kind and shape.
    pub(crate) fn declared(&self) -> Vec<(&str, Kind, Vec<usize>)> {
        let mut out: Vec<(&str, Kind, Vec<usize>)> = self
            .file
            .tensors()
            .iter()
            .map(|t| {
                let kind = kind_of(t.dtype).expect("`open` refuses other dtypes");
                // Each dimension is at most the data section's size (or a tensor of 0 bytes,
                // whose other dimensions may be anything); saturate on a 32-bit machine.
                let shape = t
                    .shape
                    .iter()
                    .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
                    .collect();
                (t.name.as_str(), kind, shape)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// Reads every tensor onto `device`, in file order. Each tensor is allocated once and
    /// filled from the file a chunk at a time, so the memory used is the tensor data plus
    /// one chunk. Refuses (before reading any) a file whose tensor data exceeds the
    /// machine's available memory.
    pub(crate) fn read(mut self, device: Device) -> Result<Vec<(String, Tensor)>, RuntimeError> {
        let path = self.file.path().to_owned();
        let data_len = self.file.header().data_len();
        if let Some(available) = crate::model::available_memory()
            && data_len > available
        {
            return Err(RuntimeError::BadTensorFile {
                path,
                message: format!(
                    "its tensor data ({}) is more than the {} of memory available; nothing \
                     was read",
                    crate::error::human_bytes(data_len.into()),
                    crate::error::human_bytes(available.into())
                ),
            });
        }
        let infos: Vec<TensorInfo> = self.file.tensors().to_vec();
        let mut buffer = Vec::new();
        let mut out = Vec::with_capacity(infos.len());
        for (index, info) in infos.into_iter().enumerate() {
            let t = self.read_tensor(index, &info, &mut buffer)?;
            let t = torch(t.f_to_device(device), || {
                format!(
                    "moving tensor '{}' of '{}' to {device:?}",
                    info.name,
                    path.display()
                )
            })?;
            out.push((info.name, t));
        }
        Ok(out)
    }

    /// Tensor `index` of the file (`info`), on the CPU. `buffer` is reused from tensor to
    /// tensor.
    fn read_tensor(
        &mut self,
        index: usize,
        info: &TensorInfo,
        buffer: &mut Vec<u8>,
    ) -> Result<Tensor, RuntimeError> {
        let path = self.file.path().to_owned();
        let context = || format!("tensor '{}' in '{}'", info.name, path.display());
        let kind = kind_of(info.dtype).expect("`open` refuses other dtypes");
        let shape: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
        let t = torch(
            Tensor::f_empty(shape.as_slice(), (kind, Device::Cpu)),
            context,
        )?;
        let nbytes = info.nbytes();
        if nbytes == 0 {
            return Ok(t);
        }
        // The tensor's bytes, as a flat view of its storage (little-endian, as the file).
        let bytes = torch(
            t.f_view([-1i64].as_slice())
                .and_then(|flat| flat.f_view_dtype(Kind::Uint8)),
            context,
        )?;
        let mut done = 0u64;
        while done < nbytes {
            let n = (nbytes - done).min(CHUNK as u64) as usize;
            buffer.resize(n, 0);
            self.file.read_chunk(index, done, buffer)?;
            torch(
                bytes
                    .f_narrow(0, done as i64, n as i64)
                    .and_then(|mut dst| dst.f_copy_(&Tensor::f_from_slice(buffer.as_slice())?)),
                context,
            )?;
            done += n as u64;
        }
        Ok(t)
    }
}

/// Checks that no floating-point tensor holds NaN or ±Inf.
///
/// `source` names where the tensors came from (the weights file) for the message. Every
/// offending tensor is listed at once, by name and with its counts, as in "tensor
/// 'features.0.weight' holds 3 NaN and 1 infinite value(s) (of 864)", in a
/// [`RuntimeError::NonFiniteWeights`]. Integer and boolean tensors cannot hold such values
/// and are skipped. Tensors may live on any device; nothing is modified.
pub fn check_finite(tensors: &[(String, Tensor)], source: &Path) -> Result<(), RuntimeError> {
    let mut problems = Vec::new();
    for (name, t) in tensors {
        if !t.is_floating_point() {
            continue;
        }
        let context = || format!("tensor '{name}' from '{}'", source.display());
        // NaN propagates through `max`, and ±Inf is the max or the min, so a tensor whose
        // max and min are finite has no value to count; this costs no allocation, unlike
        // the masks below (which then only run for an offending tensor).
        let extreme = |r: Result<Tensor, tch::TchError>| {
            torch(r.and_then(|m| m.f_double_value(&[])), context)
        };
        if t.numel() == 0 || (extreme(t.f_max())?.is_finite() && extreme(t.f_min())?.is_finite()) {
            continue;
        }
        let count = |mask: Result<Tensor, tch::TchError>| {
            torch(
                mask.and_then(|m| m.f_sum(Kind::Int64))
                    .and_then(|n| n.f_int64_value(&[])),
                context,
            )
        };
        let nan = count(t.f_isnan())?;
        let inf = count(t.f_isinf())?;
        if nan > 0 || inf > 0 {
            problems.push(format!(
                "tensor '{name}' holds {nan} NaN and {inf} infinite value(s) (of {})",
                t.numel()
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RuntimeError::NonFiniteWeights {
            path: source.to_owned(),
            problems,
        })
    }
}

/// Writes named tensors (any device) to a safetensors file, atomically (temporary file +
/// rename), so a reader never sees a half-written file. The header carries `format = "pt"`
/// so PyTorch tools accept it (the policy of [`fair_safetensors::write()`]).
///
/// Refuses to replace anything but a regular file: a directory, a device such as
/// `/dev/null`, a FIFO or a socket at `path` is a [`RuntimeError::BadTensorWrite`], a
/// symbolic link is refused by `fair_fs::write_atomic`, and a tensor kind safetensors cannot
/// hold is a [`RuntimeError::BadTensorWrite`].
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), RuntimeError> {
    // Checked first: the rename would replace a device node or FIFO by a regular file.
    fair_safetensors::check_replaceable(path)?;
    let bytes = safetensors_bytes(path, tensors)?;
    fair_fs::write_atomic(path, &bytes)?;
    Ok(())
}

/// The bytes of the safetensors file [`write_safetensors`] writes (for a checked output,
/// `fair_fs::OutputFile::write`); `path` names the file in errors.
pub fn safetensors_bytes(
    path: &Path,
    tensors: &[(String, Tensor)],
) -> Result<Vec<u8>, RuntimeError> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let kind = t.kind();
        let dtype = dtype_of(kind).ok_or_else(|| RuntimeError::BadTensorWrite {
            path: path.to_owned(),
            message: format!("tensor '{name}' has kind {kind:?}, which safetensors cannot hold"),
        })?;
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let numel = t.numel();
        let mut data = vec![0u8; numel * kind.elt_size_in_bytes()];
        torch(t.f_copy_data_u8(&mut data, numel), || {
            format!("tensor '{name}'")
        })?;
        let shape: Vec<u64> = t.size().iter().map(|&d| d as u64).collect();
        owned.push((name.as_str(), dtype, shape, data));
    }
    let refs: Vec<TensorRef<'_>> = owned
        .iter()
        .map(|(name, dtype, shape, data)| TensorRef {
            name,
            dtype: *dtype,
            shape,
            data,
        })
        .collect();
    Ok(fair_safetensors::to_bytes(path, &refs, &BTreeMap::new())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every loadable dtype maps to a kind and back, and the kinds have the dtype's size.
    #[test]
    fn kinds_and_dtypes_map_both_ways() {
        for (dtype, kind) in LOADABLE {
            assert_eq!(kind_of(dtype), Some(kind));
            assert_eq!(dtype_of(kind), Some(dtype));
            assert_eq!(kind.elt_size_in_bytes() as u64, dtype.size(), "{dtype}");
        }
        for dtype in [Dtype::U16, Dtype::U32, Dtype::U64] {
            assert_eq!(kind_of(dtype), None);
        }
        assert_eq!(dtype_of(Kind::ComplexFloat), None);
    }
}
