//! Reading ONNX protobuf messages: tensors (inline or external data) and node attributes.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::{DataLocation, DataType};
use onnx_protobuf::{AttributeProto, NodeProto, TensorProto};

use crate::OnnxError;
use crate::fold::{Const, Data, Int};

/// The largest tensor read (elements): 2^31.
const MAX_TENSOR: usize = 1 << 31;

/// Where the external data of a model's tensors is read from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct External<'a> {
    /// The directory every external data file must lie in (the model's own).
    pub dir: &'a Path,
    /// The model file, named in errors (the directory itself for a model given as bytes).
    pub model: &'a Path,
}

/// Decodes a tensor into a constant. `external` says where external data files are
/// (`None` when the model was given as bytes). Errors are details for the caller to name.
pub(crate) fn decode_tensor(t: &TensorProto, external: Option<External>) -> Result<Const, String> {
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d} in {:?}", t.dims)))
        .collect::<Result<_, _>>()?;
    // Bounded over the non-zero sizes too: an empty tensor of shape [0, 2^40, 2^40] would
    // otherwise pass and make later index arithmetic overflow.
    let n = crate::fold::bounded_numel(&dims, MAX_TENSOR)
        .ok_or_else(|| format!("shape {dims:?} is too large"))?;
    let (ty, size) = match dtype(t.data_type) {
        Some(ty @ (DataType::FLOAT | DataType::INT32)) => (ty, 4),
        Some(ty @ (DataType::DOUBLE | DataType::INT64 | DataType::UINT64)) => (ty, 8),
        Some(ty @ (DataType::INT16 | DataType::UINT16)) => (ty, 2),
        Some(ty @ (DataType::INT8 | DataType::UINT8 | DataType::BOOL)) => (ty, 1),
        _ => {
            return Err(format!(
                "data type {} ({}) is not supported; expected FLOAT (float32) weights or integer constants",
                t.data_type,
                dtype_name(t.data_type)
            ));
        }
    };
    let is_external = t.data_location.enum_value() == Ok(DataLocation::EXTERNAL);
    let external_bytes;
    let raw: &[u8] = if is_external {
        // n ≤ 2^31 and size ≤ 8: no overflow in u64.
        external_bytes = read_external(t, external, n as u64 * size as u64, &dims)?;
        &external_bytes
    } else {
        &t.raw_data
    };
    let use_raw = !raw.is_empty() || is_external;
    let check_len = |found: usize, what: &str| {
        if found == n {
            Ok(())
        } else {
            Err(format!(
                "shape {dims:?} needs {n} values but {what} holds {found}"
            ))
        }
    };
    let raw_chunks = || -> Result<std::slice::ChunksExact<'_, u8>, String> {
        if raw.len() == n * size {
            Ok(raw.chunks_exact(size))
        } else {
            Err(format!(
                "shape {dims:?} needs {} bytes of data but the tensor holds {}",
                n * size,
                raw.len()
            ))
        }
    };
    let data = match ty {
        DataType::FLOAT => Data::F32(if use_raw {
            raw_chunks()?
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        } else {
            check_len(t.float_data.len(), "float_data")?;
            t.float_data.clone()
        }),
        DataType::DOUBLE => Data::F32(if use_raw {
            raw_chunks()?
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect()
        } else {
            check_len(t.double_data.len(), "double_data")?;
            t.double_data.iter().map(|&v| v as f32).collect()
        }),
        DataType::INT64 => ints(if use_raw {
            raw_chunks()?
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect()
        } else {
            check_len(t.int64_data.len(), "int64_data")?;
            t.int64_data.clone()
        }),
        DataType::UINT64 => ints(if use_raw {
            raw_chunks()?
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as i64)
                .collect()
        } else {
            check_len(t.uint64_data.len(), "uint64_data")?;
            t.uint64_data.iter().map(|&v| v as i64).collect()
        }),
        DataType::INT32 => ints(if use_raw {
            raw_chunks()?
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        } else {
            check_len(t.int32_data.len(), "int32_data")?;
            t.int32_data.iter().map(|&v| i64::from(v)).collect()
        }),
        _ => {
            // INT8, UINT8, BOOL, INT16, UINT16 (the sizes above).
            let signed = matches!(ty, DataType::INT8 | DataType::INT16);
            ints(if use_raw {
                raw_chunks()?
                    .map(|c| match (size, signed) {
                        (1, true) => i64::from(c[0] as i8),
                        (1, false) => i64::from(c[0]),
                        (_, true) => i64::from(i16::from_le_bytes([c[0], c[1]])),
                        _ => i64::from(u16::from_le_bytes([c[0], c[1]])),
                    })
                    .collect()
            } else {
                check_len(t.int32_data.len(), "int32_data")?;
                t.int32_data.iter().map(|&v| i64::from(v)).collect()
            })
        }
    };
    Ok(Const { dims, data })
}

fn ints(v: Vec<i64>) -> Data {
    Data::Int(v.into_iter().map(Int::N).collect())
}

/// A readable name for an ONNX data type number.
pub(crate) fn dtype_name(t: i32) -> String {
    dtype(t).map_or_else(|| "unknown".to_owned(), |d| format!("{d:?}"))
}

/// The data type of an ONNX type number, if known.
fn dtype(v: i32) -> Option<DataType> {
    <DataType as protobuf::Enum>::from_i32(v)
}

/// Reads the bytes of a tensor stored in an external file next to the model: exactly the
/// `expected` bytes the tensor's shape and type call for.
///
/// The location must resolve inside the model's directory ([`fair_fs::resolve_inside`]: no
/// absolute path, no `..`, no symbolic link leading out, a regular file), the file is opened
/// without blocking ([`fair_fs::open_regular`]), and `offset` + `length` are checked against
/// its size and against `expected` before anything is read.
///
/// Remaining race: the location is resolved, then the resolved path is opened; whoever can
/// swap a symbolic link into the model's directory between the two can redirect the read.
/// The opened file is still checked to be a regular file, so the read stays bounded.
fn read_external(
    t: &TensorProto,
    external: Option<External>,
    expected: u64,
    dims: &[usize],
) -> Result<Vec<u8>, String> {
    let location = external_location(t)?;
    let Some(External { dir, model }) = external else {
        return Err(format!(
            "the data is stored in the external file '{location}'; import the model with import_file (or save it with external_data=False) so the file can be found"
        ));
    };
    let entry = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    };
    let number = |key: &str| -> Result<Option<u64>, String> {
        entry(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("external data '{location}': {key} '{v}' is not a number"))
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    let declared = number("length")?;
    let path = fair_fs::resolve_inside(dir, location, model).map_err(|e| e.to_string())?;
    let (mut file, size) = fair_fs::open_regular(&path, "a file of external tensor data")
        .map_err(|e| format!("external data '{location}': {e}"))?;
    let length = declared.unwrap_or(size.saturating_sub(offset));
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(format!(
            "external data '{location}' holds {size} bytes, fewer than offset {offset} + length {length}"
        ));
    }
    if length != expected {
        return Err(format!(
            "external data '{location}' {} {length} bytes (from offset {offset}), but shape {dims:?} needs {expected}",
            if declared.is_some() {
                "declares"
            } else {
                "holds"
            }
        ));
    }
    let length = usize::try_from(length).map_err(|_| "external data is too large")?;
    let io = |e: std::io::Error| format!("cannot read external data '{}': {e}", path.display());
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = vec![0u8; length];
    file.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
}

/// The `location` of a tensor stored as external data; `None` for a tensor stored inline.
pub(crate) fn external_location_of(t: &TensorProto) -> Option<Result<&str, String>> {
    (t.data_location.enum_value() == Ok(DataLocation::EXTERNAL)).then(|| external_location(t))
}

fn external_location(t: &TensorProto) -> Result<&str, String> {
    t.external_data
        .iter()
        .find(|e| e.key == "location")
        .map(|e| e.value.as_str())
        .ok_or_else(|| "external data without a 'location'".to_owned())
}

/// A node under import, for reading attributes and naming it in errors.
pub(crate) struct NodeRef<'a> {
    pub node: &'a NodeProto,
    /// The node's name, or `#<index>` when it has none.
    pub id: String,
}

impl<'a> NodeRef<'a> {
    pub fn new(node: &'a NodeProto, index: usize) -> Self {
        let id = if node.name.is_empty() {
            format!("#{index}")
        } else {
            node.name.clone()
        };
        NodeRef { node, id }
    }

    pub fn op(&self) -> &str {
        &self.node.op_type
    }

    /// An error about this node.
    pub fn err(&self, detail: impl Into<String>) -> OnnxError {
        OnnxError::Node {
            node: self.id.clone(),
            op_type: self.node.op_type.clone(),
            detail: detail.into(),
        }
    }

    /// An error about one of this node's attributes.
    pub fn attr_err(&self, attribute: &str, detail: impl Into<String>) -> OnnxError {
        OnnxError::Attribute {
            node: self.id.clone(),
            op_type: self.node.op_type.clone(),
            attribute: attribute.to_owned(),
            detail: detail.into(),
        }
    }

    fn attr(&self, name: &str, ty: AttributeType) -> Result<Option<&'a AttributeProto>, OnnxError> {
        match self.node.attribute.iter().find(|a| a.name == name) {
            None => Ok(None),
            Some(a) if a.type_.enum_value() == Ok(ty) => Ok(Some(a)),
            Some(a) => Err(self.attr_err(
                name,
                format!(
                    "expected type {ty:?}, found {}",
                    match a.type_.enum_value() {
                        Ok(t) => format!("{t:?}"),
                        Err(v) => format!("unknown type {v}"),
                    }
                ),
            )),
        }
    }

    /// Whether the node has the attribute at all.
    pub fn has(&self, name: &str) -> bool {
        self.node.attribute.iter().any(|a| a.name == name)
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, OnnxError> {
        Ok(self.attr(name, AttributeType::INT)?.map(|a| a.i))
    }

    pub fn int_or(&self, name: &str, default: i64) -> Result<i64, OnnxError> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, OnnxError> {
        Ok(self
            .attr(name, AttributeType::INTS)?
            .map(|a| a.ints.clone()))
    }

    pub fn float(&self, name: &str) -> Result<Option<f32>, OnnxError> {
        Ok(self.attr(name, AttributeType::FLOAT)?.map(|a| a.f))
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, OnnxError> {
        Ok(self
            .attr(name, AttributeType::FLOATS)?
            .map(|a| a.floats.clone()))
    }

    pub fn string(&self, name: &str) -> Result<Option<String>, OnnxError> {
        Ok(self
            .attr(name, AttributeType::STRING)?
            .map(|a| String::from_utf8_lossy(&a.s).into_owned()))
    }

    pub fn tensor(&self, name: &str) -> Result<Option<&'a TensorProto>, OnnxError> {
        Ok(self
            .attr(name, AttributeType::TENSOR)?
            .and_then(|a| a.t.as_ref()))
    }

    /// Errors when the node has any attribute outside `known`.
    pub fn only(&self, known: &[&str]) -> Result<(), OnnxError> {
        match self
            .node
            .attribute
            .iter()
            .find(|a| !known.contains(&a.name.as_str()))
        {
            Some(a) => Err(self.attr_err(
                &a.name,
                format!(
                    "this attribute is not supported (known: {})",
                    known.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }
}
