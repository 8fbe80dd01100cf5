//! Reading ONNX protobuf messages: tensors (inline or external data) and node attributes.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::rc::Rc;

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::{DataLocation, DataType};
use onnx_protobuf::{AttributeProto, NodeProto, TensorProto};

use crate::OnnxError;
use crate::fold::{Budget, Const, Data, F32_BYTES, INT_BYTES, Int, MAX_TENSOR};

/// Where the external data of a model's tensors is read from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct External<'a> {
    /// The directory every external data file must lie in (the model's own).
    pub dir: &'a Path,
    /// The model file, named in errors (the directory itself for a model given as bytes).
    pub model: &'a Path,
}

/// Decodes a tensor into a constant. `external` says where external data files are
/// (`None` when the model was given as bytes). The decoded data is recorded in `budget`
/// before it is allocated: float data is the model's own size ([`Budget::store`]), integer
/// data (16 bytes an element in memory) is paid for ([`Budget::take`]). Errors are details
/// for the caller to name.
pub(crate) fn decode_tensor(
    t: &TensorProto,
    external: Option<External>,
    budget: &mut Budget,
) -> Result<Const, String> {
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
    let float = matches!(ty, DataType::FLOAT | DataType::DOUBLE);
    if float {
        budget.store(n * F32_BYTES);
    } else {
        budget.take(&dims, INT_BYTES)?;
    }
    let data = if t.data_location.enum_value() == Ok(DataLocation::EXTERNAL) {
        // n ≤ 2^31 and size ≤ 8: no overflow in u64.
        let (path, file) = open_external(t, external, n as u64 * size as u64, &dims, budget)?;
        read_elements(file, ty, n, size)
            .map_err(|e| format!("cannot read external data '{}': {e}", path.display()))?
    } else if !t.raw_data.is_empty() {
        if t.raw_data.len() != n * size {
            return Err(format!(
                "shape {dims:?} needs {} bytes of data but the tensor holds {}",
                n * size,
                t.raw_data.len()
            ));
        }
        read_elements(&t.raw_data[..], ty, n, size).map_err(|e| e.to_string())?
    } else {
        typed_fields(t, ty, n, &dims)?
    };
    Ok(Const {
        dims,
        data: Rc::new(data),
    })
}

/// The `n` little-endian elements of type `ty` (`size` bytes each) that `r` holds, read
/// in blocks: nothing but the decoded data and one block is held.
fn read_elements(mut r: impl Read, ty: DataType, n: usize, size: usize) -> std::io::Result<Data> {
    const BLOCK: usize = 1 << 14;
    let mut buf = vec![0u8; BLOCK.min(n) * size];
    let mut left = n;
    let mut data = match ty {
        DataType::FLOAT | DataType::DOUBLE => Data::F32(Vec::with_capacity(n)),
        _ => Data::Int(Vec::with_capacity(n)),
    };
    let signed = matches!(
        ty,
        DataType::INT8 | DataType::INT16 | DataType::INT32 | DataType::INT64
    );
    while left > 0 {
        let k = left.min(BLOCK);
        let block = &mut buf[..k * size];
        r.read_exact(block)?;
        let elements = block.chunks_exact(size);
        match &mut data {
            Data::F32(v) if size == 4 => {
                v.extend(elements.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            }
            Data::F32(v) => v.extend(elements.map(|c| f64::from_le_bytes(eight(c)) as f32)),
            Data::Int(v) => v.extend(elements.map(|c| {
                Int::N(match (size, signed) {
                    (1, true) => i64::from(c[0] as i8),
                    (1, false) => i64::from(c[0]),
                    (2, true) => i64::from(i16::from_le_bytes([c[0], c[1]])),
                    (2, false) => i64::from(u16::from_le_bytes([c[0], c[1]])),
                    (4, _) => i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    // INT64, and UINT64 read as its two's-complement bits.
                    _ => i64::from_le_bytes(eight(c)),
                })
            })),
        }
        left -= k;
    }
    Ok(data)
}

/// The first eight bytes of `c` (which has eight).
fn eight(c: &[u8]) -> [u8; 8] {
    let mut b = [0; 8];
    b.copy_from_slice(&c[..8]);
    b
}

/// The data of a tensor stored in its typed fields (`float_data`, `int64_data`, ...).
fn typed_fields(t: &TensorProto, ty: DataType, n: usize, dims: &[usize]) -> Result<Data, String> {
    let check_len = |found: usize, what: &str| {
        if found == n {
            Ok(())
        } else {
            Err(format!(
                "shape {dims:?} needs {n} values but {what} holds {found}"
            ))
        }
    };
    let ints = |v: &mut dyn Iterator<Item = i64>| Data::Int(v.map(Int::N).collect());
    Ok(match ty {
        DataType::FLOAT => {
            check_len(t.float_data.len(), "float_data")?;
            Data::F32(t.float_data.clone())
        }
        DataType::DOUBLE => {
            check_len(t.double_data.len(), "double_data")?;
            Data::F32(t.double_data.iter().map(|&v| v as f32).collect())
        }
        DataType::INT64 => {
            check_len(t.int64_data.len(), "int64_data")?;
            ints(&mut t.int64_data.iter().copied())
        }
        DataType::UINT64 => {
            check_len(t.uint64_data.len(), "uint64_data")?;
            ints(&mut t.uint64_data.iter().map(|&v| v as i64))
        }
        _ => {
            // INT32, INT16, UINT16, INT8, UINT8 and BOOL are stored in int32_data.
            check_len(t.int32_data.len(), "int32_data")?;
            ints(&mut t.int32_data.iter().map(|&v| i64::from(v)))
        }
    })
}

/// A readable name for an ONNX data type number.
pub(crate) fn dtype_name(t: i32) -> String {
    dtype(t).map_or_else(|| "unknown".to_owned(), |d| format!("{d:?}"))
}

/// The data type of an ONNX type number, if known.
fn dtype(v: i32) -> Option<DataType> {
    <DataType as protobuf::Enum>::from_i32(v)
}

/// Opens the external file of a tensor stored next to the model, positioned at the tensor's
/// bytes and limited to the `expected` bytes its shape and type call for: the resolved path
/// and the reader.
///
/// The location must resolve inside the model's directory ([`fair_fs::resolve_inside`]: no
/// absolute path, no `..`, no symbolic link leading out, a regular file), the file is opened
/// without blocking ([`fair_fs::open_regular`]), and `offset` + `length` are checked against
/// its size and against `expected` before anything is read. The tensors of one import may
/// read at most each file's size from it together ([`Budget::read_external`]): tensors that
/// share bytes would otherwise decode one file many times over.
///
/// Remaining race: the location is resolved, then the resolved path is opened; whoever can
/// swap a symbolic link into the model's directory between the two can redirect the read.
/// The opened file is still checked to be a regular file, so the read stays bounded.
fn open_external(
    t: &TensorProto,
    external: Option<External>,
    expected: u64,
    dims: &[usize],
    budget: &mut Budget,
) -> Result<(std::path::PathBuf, std::io::Take<std::fs::File>), String> {
    let entries = external_entries(t)?;
    let location = external_location(t)?;
    let Some(External { dir, model }) = external else {
        return Err(format!(
            "the data is stored in the external file '{location}'; import the model with import_file (or save it with external_data=False) so the file can be found"
        ));
    };
    let number = |key: &str| -> Result<Option<u64>, String> {
        entries
            .get(key)
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
    budget
        .read_external(&path, size, length)
        .map_err(|e| format!("external data '{location}': {e}"))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("cannot read external data '{}': {e}", path.display()))?;
    Ok((path, file.take(length)))
}

/// The `location` of a tensor stored as external data; `None` for a tensor stored inline.
pub(crate) fn external_location_of(t: &TensorProto) -> Option<Result<&str, String>> {
    (t.data_location.enum_value() == Ok(DataLocation::EXTERNAL)).then(|| external_location(t))
}

fn external_location(t: &TensorProto) -> Result<&str, String> {
    external_entries(t)?
        .get("location")
        .copied()
        .ok_or_else(|| "external data without a 'location'".to_owned())
}

/// The `external_data` entries of a tensor by key. A key given twice is an error: readers
/// disagree on which copy counts (`onnx.load` takes the last, a first-match reader the
/// first), so the bytes read would depend on the reader.
fn external_entries(t: &TensorProto) -> Result<HashMap<&str, &str>, String> {
    let mut entries = HashMap::new();
    for e in &t.external_data {
        if entries.insert(e.key.as_str(), e.value.as_str()).is_some() {
            return Err(format!(
                "external data gives the key '{}' twice; each key of external_data must appear once",
                e.key
            ));
        }
    }
    Ok(entries)
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
