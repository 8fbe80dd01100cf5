//! The header: what a safetensors file declares, checked the way safetensors 0.3 checks it
//! (and a little stricter: a key given twice is refused), with a plain-words reason for
//! every refusal.

use std::collections::BTreeMap;

use crate::dtype::{Dtype, shape_text};
use crate::json::{self, Value};

/// The largest header safetensors 0.3 accepts (`MAX_HEADER_SIZE` in its source), in bytes.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor as the header declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name.
    pub name: String,
    /// Its element type.
    pub dtype: Dtype,
    /// Its dimensions (none for a scalar).
    pub shape: Vec<u64>,
    /// Where its bytes begin in the data section (after the header).
    pub begin: u64,
    /// Where its bytes end in the data section (exclusive).
    pub end: u64,
}

impl TensorInfo {
    /// Its size in bytes (`end - begin`, which the checks make equal to the shape's element
    /// count times the dtype's size).
    pub fn nbytes(&self) -> u64 {
        self.end.saturating_sub(self.begin)
    }

    /// Its number of elements.
    pub fn numel(&self) -> u64 {
        self.nbytes() / self.dtype.size()
    }
}

/// A checked header: the tensors in the order of their data, and the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    tensors: Vec<TensorInfo>,
    metadata: BTreeMap<String, String>,
}

impl Header {
    /// Parses and checks a header (the JSON text after the 8-byte length) for a data
    /// section of `data_len` bytes, as safetensors 0.3 does: valid UTF-8 JSON, one object;
    /// every tensor described by `"dtype"` (a known one), `"shape"` and `"data_offsets"`
    /// (other fields are ignored); the offsets of each tensor span exactly its shape ×
    /// dtype size, the tensors are packed from byte 0 without gaps or overlaps, and the last
    /// one ends where the data section ends; `"__metadata__"`, if present, is `null` or
    /// maps names to strings. Stricter than safetensors, a key given twice in any object is
    /// refused. The error says in plain words which tensor is wrong and how.
    pub fn parse(header: &[u8], data_len: u64) -> Result<Header, String> {
        let text = std::str::from_utf8(header).map_err(|e| {
            format!(
                "the header is not valid UTF-8 (bad byte at offset {} of the header)",
                e.valid_up_to()
            )
        })?;
        match text.chars().next() {
            Some('{') => {}
            Some(c) => {
                return Err(format!(
                    "the header is not valid JSON: it must be a JSON object starting with \
                     '{{', but it starts with {c:?}"
                ));
            }
            None => return Err("the header is not valid JSON: it is empty".to_owned()),
        }
        let Value::Object(fields) = json::parse(text)? else {
            unreachable!("a header starting with '{{' parses as an object")
        };
        let mut tensors: Vec<TensorInfo> = Vec::with_capacity(fields.len());
        let mut metadata = BTreeMap::new();
        // The parser refuses a key given twice, so each name comes once.
        for (name, value) in fields {
            if name == "__metadata__" {
                metadata = check_metadata(value)?;
            } else {
                tensors.push(entry(name, value)?);
            }
        }
        tensors.sort_by(|a, b| (a.begin, a.end, &a.name).cmp(&(b.begin, b.end, &b.name)));
        check_layout(&tensors, data_len)?;
        Ok(Header { tensors, metadata })
    }

    /// The tensors, in the order of their data in the file.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`, if the header declares one.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The metadata (`"__metadata__"`); empty when the header has none.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The size of the data section: the sum of the tensors' sizes.
    pub fn data_len(&self) -> u64 {
        self.tensors.last().map_or(0, |t| t.end)
    }
}

/// Checks the header length read from the first 8 bytes of a file of `size` (≥ 8) bytes:
/// the header must fit in the file and in safetensors' limit ([`MAX_HEADER_BYTES`]).
pub fn check_header_length(header_len: u64, size: u64) -> Result<(), String> {
    let room = size.saturating_sub(8);
    if header_len > room {
        return Err(format!(
            "the header length ({header_len} bytes) exceeds the file size ({size} bytes, \
             {room} after the 8-byte header length)"
        ));
    }
    if header_len > MAX_HEADER_BYTES {
        return Err(format!(
            "the header length ({header_len} bytes) exceeds safetensors' limit of \
             {MAX_HEADER_BYTES} bytes"
        ));
    }
    Ok(())
}

/// Checks that the tensors (sorted by offsets) span exactly their sizes and are packed from
/// byte 0 to `data_len` without gaps or overlaps.
fn check_layout(tensors: &[TensorInfo], data_len: u64) -> Result<(), String> {
    let nbytes = |t: &TensorInfo| {
        t.dtype
            .nbytes(&t.shape)
            .expect("`entry` refuses sizes that overflow")
    };
    let packed = tensors
        .iter()
        .all(|t| t.end >= t.begin && t.end - t.begin == nbytes(t))
        && tensors.first().is_none_or(|t| t.begin == 0)
        && tensors.windows(2).all(|w| w[1].begin == w[0].end);
    let declared = tensors.last().map_or(0, |t| t.end);
    if packed && declared > data_len {
        return Err(format!(
            "truncated: the header declares {declared} bytes of tensor data but the file has \
             only {data_len}"
        ));
    }
    for t in tensors {
        let (name, begin, end) = (&t.name, t.begin, t.end);
        if end < begin {
            return Err(format!(
                "tensor '{name}' declares offsets [{begin}, {end}) that end before they begin"
            ));
        }
        if end > data_len {
            return Err(format!(
                "tensor '{name}' declares offsets [{begin}, {end}) beyond the data section of \
                 {data_len} bytes"
            ));
        }
        if end - begin != nbytes(t) {
            return Err(format!(
                "tensor '{name}' has shape {} of dtype {} = {} bytes but its offsets span {} \
                 bytes",
                shape_text(&t.shape),
                t.dtype,
                nbytes(t),
                end - begin
            ));
        }
    }
    let mut previous: Option<&TensorInfo> = None;
    for t in tensors {
        match previous {
            None if t.begin != 0 => {
                return Err(format!(
                    "tensor '{}' begins at byte {} of the data section, but the first tensor \
                     must begin at byte 0",
                    t.name, t.begin
                ));
            }
            Some(p) if t.begin > p.end => {
                return Err(format!(
                    "{} unused byte(s) lie between tensor '{}' (offsets [{}, {})) and tensor \
                     '{}' (offsets [{}, {})); tensors must be packed without gaps",
                    t.begin - p.end,
                    p.name,
                    p.begin,
                    p.end,
                    t.name,
                    t.begin,
                    t.end
                ));
            }
            Some(p) if t.begin < p.end => {
                return Err(format!(
                    "tensor '{}' (offsets [{}, {})) overlaps tensor '{}' (offsets [{}, {}))",
                    t.name, t.begin, t.end, p.name, p.begin, p.end
                ));
            }
            _ => {}
        }
        previous = Some(t);
    }
    if declared < data_len {
        return Err(format!(
            "the file has {} unexpected byte(s) after the last tensor: the header declares \
             {declared} bytes of tensor data, the file holds {data_len}",
            data_len - declared
        ));
    }
    Ok(())
}

/// `"__metadata__"` must be `null` or map names to strings.
fn check_metadata(value: Value) -> Result<BTreeMap<String, String>, String> {
    match value {
        Value::Null => Ok(BTreeMap::new()),
        Value::Object(pairs) => pairs
            .into_iter()
            .map(|(key, v)| match v {
                Value::Str(s) => Ok((key, s)),
                v => Err(format!(
                    "the header's \"__metadata__\" must map names to strings, but \"{key}\" \
                     is {}",
                    v.what()
                )),
            })
            .collect(),
        v => Err(format!(
            "the header's \"__metadata__\" must be an object of strings, but it is {}",
            v.what()
        )),
    }
}

/// One tensor's entry: `{"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}`
/// (other fields are ignored, as safetensors does).
fn entry(name: String, value: Value) -> Result<TensorInfo, String> {
    let Value::Object(fields) = value else {
        return Err(format!(
            "tensor '{name}' must be described by an object with \"dtype\", \"shape\" and \
             \"data_offsets\", but it is {}",
            value.what()
        ));
    };
    let mut dtype = None;
    let mut shape = None;
    let mut offsets = None;
    // The parser refuses a key given twice, so each slot is filled at most once.
    for (key, v) in fields {
        match key.as_str() {
            "dtype" => dtype = Some(v),
            "shape" => shape = Some(v),
            "data_offsets" => offsets = Some(v),
            _ => {}
        }
    }
    let missing = |key: &str| format!("tensor '{name}' has no \"{key}\"");
    let dtype = match dtype.ok_or_else(|| missing("dtype"))? {
        Value::Str(s) => Dtype::from_name(&s).ok_or_else(|| {
            let known: Vec<&str> = Dtype::ALL.iter().map(|d| d.name()).collect();
            format!(
                "tensor '{name}' has unknown dtype \"{s}\" (safetensors knows {})",
                known.join(", ")
            )
        })?,
        v => {
            return Err(format!(
                "tensor '{name}' has a dtype that is {}, not a string such as \"F32\"",
                v.what()
            ));
        }
    };
    let counts = |v: Value| match v {
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Count(n) => Some(n),
                _ => None,
            })
            .collect::<Option<Vec<u64>>>(),
        _ => None,
    };
    let shape = counts(shape.ok_or_else(|| missing("shape"))?).ok_or_else(|| {
        format!("tensor '{name}' has a shape that is not a list of non-negative integers")
    })?;
    let (begin, end) = match counts(offsets.ok_or_else(|| missing("data_offsets"))?) {
        Some(pair) if pair.len() == 2 => (pair[0], pair[1]),
        _ => {
            return Err(format!(
                "tensor '{name}' has \"data_offsets\" that are not a pair [begin, end] of \
                 non-negative integers"
            ));
        }
    };
    if dtype.nbytes(&shape).is_none() {
        return Err(format!(
            "tensor '{name}' has shape {} of dtype {dtype}, whose size in bytes overflows",
            shape_text(&shape)
        ));
    }
    Ok(TensorInfo {
        name,
        dtype,
        shape,
        begin,
        end,
    })
}
