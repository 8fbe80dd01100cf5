//! Reading and writing named tensors as safetensors files.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, View};
use tch::{Device, Kind, Tensor};

use crate::error::{RuntimeError, torch};

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        _ => return None,
    })
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Bool => Dtype::BOOL,
        Kind::Uint8 => Dtype::U8,
        Kind::Int8 => Dtype::I8,
        Kind::Int16 => Dtype::I16,
        Kind::Int => Dtype::I32,
        Kind::Int64 => Dtype::I64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        _ => return None,
    })
}

/// Reads every tensor of a safetensors file onto `device`, sorted by name. A corrupt or
/// truncated file, or an unsupported dtype, is an error naming the file (and tensor).
pub fn read_safetensors(
    path: &Path,
    device: Device,
) -> Result<Vec<(String, Tensor)>, RuntimeError> {
    let bytes = std::fs::read(path).map_err(|source| RuntimeError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    let bad = |message: String| RuntimeError::BadTensorFile {
        path: path.to_owned(),
        message,
    };
    let file = SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("{e:?}")))?;
    let mut out = Vec::with_capacity(file.len());
    for (name, view) in file.tensors() {
        let kind = kind_of(view.dtype()).ok_or_else(|| {
            bad(format!(
                "tensor '{name}' has unsupported dtype {:?}",
                view.dtype()
            ))
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = torch(Tensor::f_from_data_size(view.data(), &shape, kind), || {
            format!("tensor '{name}' in '{}'", path.display())
        })?;
        out.push((name, t.to_device(device)));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Writes named tensors (any device) to a safetensors file, atomically (temporary file +
/// rename). The header carries `format = "pt"` so PyTorch tools accept it.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), RuntimeError> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let kind = t.kind();
        let dtype = dtype_of(kind).ok_or_else(|| RuntimeError::BadTensorFile {
            path: path.to_owned(),
            message: format!("tensor '{name}' has kind {kind:?}, which safetensors cannot hold"),
        })?;
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let numel = t.numel();
        let mut data = vec![0u8; numel * kind.elt_size_in_bytes()];
        torch(t.f_copy_data_u8(&mut data, numel), || {
            format!("tensor '{name}'")
        })?;
        owned.push((
            name.clone(),
            Bytes {
                dtype,
                shape: t.size().iter().map(|&d| d as usize).collect(),
                data,
            },
        ));
    }
    let meta = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    let bytes =
        safetensors::tensor::serialize(owned.iter().map(|(n, b)| (n.as_str(), b)), &Some(meta))
            .map_err(|e| RuntimeError::BadTensorFile {
                path: path.to_owned(),
                message: format!("cannot serialise: {e:?}"),
            })?;
    fair_ir::write_atomic(path, &bytes)?;
    Ok(())
}
