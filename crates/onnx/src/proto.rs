//! Reading ONNX protobuf messages: tensors (inline or external data) and node attributes.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::{DataLocation, DataType};
use onnx_protobuf::{AttributeProto, NodeProto, TensorProto};

use crate::OnnxError;
use crate::fold::{Const, Data, Int};

/// The largest tensor read (elements): 2^31.
const MAX_TENSOR: usize = 1 << 31;

/// Decodes a tensor into a constant. `base` is the directory holding external data files
/// (`None` when the model was given as bytes). Errors are details for the caller to name.
pub(crate) fn decode_tensor(t: &TensorProto, base: Option<&Path>) -> Result<Const, String> {
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dimension {d} in {:?}", t.dims)))
        .collect::<Result<_, _>>()?;
    // Bounded over the non-zero sizes too: an empty tensor of shape [0, 2^40, 2^40] would
    // otherwise pass and make later index arithmetic overflow.
    let n = crate::fold::bounded_numel(&dims, MAX_TENSOR)
        .ok_or_else(|| format!("shape {dims:?} is too large"))?;
    let external;
    let raw: &[u8] = if t.data_location.enum_value() == Ok(DataLocation::EXTERNAL) {
        external = read_external(t, base)?;
        &external
    } else {
        &t.raw_data
    };
    let use_raw = !raw.is_empty() || t.data_location.enum_value() == Ok(DataLocation::EXTERNAL);
    let ty = dtype(t.data_type);
    let check_len = |found: usize, what: &str| {
        if found == n {
            Ok(())
        } else {
            Err(format!(
                "shape {dims:?} needs {n} values but {what} holds {found}"
            ))
        }
    };
    let raw_chunks = |size: usize| -> Result<std::slice::ChunksExact<'_, u8>, String> {
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
        Some(DataType::FLOAT) => Data::F32(if use_raw {
            raw_chunks(4)?
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        } else {
            check_len(t.float_data.len(), "float_data")?;
            t.float_data.clone()
        }),
        Some(DataType::DOUBLE) => Data::F32(if use_raw {
            raw_chunks(8)?
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect()
        } else {
            check_len(t.double_data.len(), "double_data")?;
            t.double_data.iter().map(|&v| v as f32).collect()
        }),
        Some(DataType::INT64) => ints(if use_raw {
            raw_chunks(8)?
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect()
        } else {
            check_len(t.int64_data.len(), "int64_data")?;
            t.int64_data.clone()
        }),
        Some(DataType::UINT64) => ints(if use_raw {
            raw_chunks(8)?
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as i64)
                .collect()
        } else {
            check_len(t.uint64_data.len(), "uint64_data")?;
            t.uint64_data.iter().map(|&v| v as i64).collect()
        }),
        Some(DataType::INT32) => ints(if use_raw {
            raw_chunks(4)?
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        } else {
            check_len(t.int32_data.len(), "int32_data")?;
            t.int32_data.iter().map(|&v| i64::from(v)).collect()
        }),
        Some(
            ty @ (DataType::INT8
            | DataType::UINT8
            | DataType::BOOL
            | DataType::INT16
            | DataType::UINT16),
        ) => {
            let signed = matches!(ty, DataType::INT8 | DataType::INT16);
            let size = if matches!(ty, DataType::INT16 | DataType::UINT16) {
                2
            } else {
                1
            };
            ints(if use_raw {
                raw_chunks(size)?
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
        _ => {
            return Err(format!(
                "data type {} ({}) is not supported; expected FLOAT (float32) weights or integer constants",
                t.data_type,
                dtype_name(t.data_type)
            ));
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

/// Reads the bytes of a tensor stored in an external file next to the model.
fn read_external(t: &TensorProto, base: Option<&Path>) -> Result<Vec<u8>, String> {
    let entry = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    };
    let location = entry("location").ok_or("external data without a 'location'")?;
    let Some(base) = base else {
        return Err(format!(
            "the data is stored in the external file '{location}'; import the model with import_file (or save it with external_data=False) so the file can be found"
        ));
    };
    let rel = Path::new(location);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "external data location '{location}' must be a relative path inside the model's directory"
        ));
    }
    let number = |key: &str| -> Result<Option<u64>, String> {
        entry(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("external data {key} '{v}' is not a number"))
            })
            .transpose()
    };
    let offset = number("offset")?.unwrap_or(0);
    let path = base.join(rel);
    let io = |e: std::io::Error| format!("cannot read external data '{}': {e}", path.display());
    let mut file = std::fs::File::open(&path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let length = match number("length")? {
        Some(l) => l,
        None => size.saturating_sub(offset),
    };
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(format!(
            "external data '{}' holds {size} bytes, fewer than offset {offset} + length {length}",
            path.display()
        ));
    }
    let length = usize::try_from(length)
        .ok()
        .filter(|&l| l <= MAX_TENSOR * 8)
        .ok_or("external data is too large")?;
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = vec![0u8; length];
    file.read_exact(&mut buf).map_err(io)?;
    Ok(buf)
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
