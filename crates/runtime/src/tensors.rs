//! Reading and writing named tensors as safetensors files.
//!
//! Reading is defensive. Anything that is not a regular file (`/dev/zero`, a FIFO, a
//! directory) is refused before it is opened. The 8-byte header length is read first and
//! checked against the file size, and the header is parsed and checked against the size of
//! the data section before any tensor data is read ([`crate::Model`] also compares the
//! declared names, dtypes and shapes with its graph at that point, so a file that does not
//! fit is refused after reading only its header). Tensors are then read one at a time,
//! straight into the tensors returned, so a corrupt or hostile file costs at most its
//! tensor data in memory (plus a few MiB), and every problem is reported in plain words
//! naming the file and the tensor (never as a `safetensors` error code).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, FileType};
use std::io::Read;
use std::path::{Path, PathBuf};

use safetensors::SafeTensorError;
use safetensors::tensor::{Dtype, View};
use tch::{Device, Kind, Tensor};

use crate::error::{RuntimeError, tch_context as torch};

/// The largest header safetensors 0.3 accepts (`MAX_HEADER_SIZE` in its source).
const HEADER_LIMIT: u64 = 100_000_000;

/// Every dtype name safetensors 0.3 knows, with its size in bytes.
const DTYPES: [(&str, u64); 13] = [
    ("BOOL", 1),
    ("U8", 1),
    ("I8", 1),
    ("I16", 2),
    ("U16", 2),
    ("F16", 2),
    ("BF16", 2),
    ("I32", 4),
    ("U32", 4),
    ("F32", 4),
    ("F64", 8),
    ("I64", 8),
    ("U64", 8),
];

/// The dtypes fair-pruner can turn into libtorch tensors, with the kind each becomes.
const LOADABLE: [(&str, Kind); 10] = [
    ("BOOL", Kind::Bool),
    ("U8", Kind::Uint8),
    ("I8", Kind::Int8),
    ("I16", Kind::Int16),
    ("I32", Kind::Int),
    ("I64", Kind::Int64),
    ("F16", Kind::Half),
    ("BF16", Kind::BFloat16),
    ("F32", Kind::Float),
    ("F64", Kind::Double),
];

/// The libtorch kind of a loadable safetensors dtype.
fn kind_named(dtype: &str) -> Option<Kind> {
    LOADABLE.iter().find(|(d, _)| *d == dtype).map(|(_, k)| *k)
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

/// "is a directory", "is a character device", ... for anything that is not a regular file.
fn not_a_file(file_type: FileType) -> Option<String> {
    let kind = fair_fs::FileKind::of(&file_type);
    (kind != fair_fs::FileKind::File).then(|| format!("is {kind}"))
}

/// Bytes read from the file at a time while filling a tensor. Small: the process keeps about
/// fifteen freed chunks' worth of memory cached (with 8 MiB chunks, loading 256 MiB of
/// weights peaked 110 MiB higher than with 1 MiB ones).
const CHUNK: usize = 1 << 20;

/// A safetensors file whose header has been read and checked (against the file's size, the
/// layout rules of safetensors and the dtypes fair-pruner loads); none of its tensor data
/// has been read yet, so what it declares can be compared with what is wanted first.
pub(crate) struct TensorFile {
    path: PathBuf,
    file: File,
    /// The file's size when it was opened.
    size: u64,
    /// Every tensor, in the order of its data in the file.
    entries: Vec<Entry>,
}

impl TensorFile {
    /// Opens `path` and reads and checks its header; reads no tensor data. Allocates at
    /// most the header's size, which is checked against the file's size first.
    pub(crate) fn open(path: &Path) -> Result<Self, RuntimeError> {
        let io = |source| RuntimeError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        };
        let bad = |message: String| RuntimeError::BadTensorFile {
            path: path.to_owned(),
            message,
        };
        let refuse = |what: &str| bad(format!("{what}, expected a safetensors file"));
        // Checked before opening (opening a FIFO for reading would block until a writer
        // appears), opened without blocking, and checked again on the opened file.
        let (mut file, size) = match fair_fs::open_regular(path, "a safetensors file") {
            Ok(opened) => opened,
            Err(fair_fs::FsError::NotRegular { kind, .. }) => {
                return Err(refuse(&format!("is {kind}")));
            }
            Err(fair_fs::FsError::Io { source, .. }) => return Err(io(source)),
            Err(e) => return Err(e.into()),
        };
        if size < 8 {
            return Err(bad(format!(
                "truncated: the file has only {size} byte(s), fewer than the 8-byte header \
                 length"
            )));
        }
        let mut length = [0u8; 8];
        file.read_exact(&mut length)
            .map_err(|e| shrank(path, size, e))?;
        let header_len = u64::from_le_bytes(length);
        check_length(header_len, size).map_err(bad)?;
        // At most `HEADER_LIMIT` bytes, and no more than the file holds.
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)
            .map_err(|e| shrank(path, size, e))?;
        let entries = check_header(&header, size - 8 - header_len).map_err(bad)?;
        Ok(TensorFile {
            path: path.to_owned(),
            file,
            size,
            entries,
        })
    }

    /// Every tensor the header declares, sorted by name: its name, libtorch kind and shape.
    pub(crate) fn declared(&self) -> Vec<(&str, Kind, Vec<usize>)> {
        let mut out: Vec<(&str, Kind, Vec<usize>)> = self
            .entries
            .iter()
            .map(|e| {
                let kind = kind_named(e.dtype).expect("the header check refuses other dtypes");
                // Each dimension is at most the data section's size (or a tensor of 0 bytes,
                // whose other dimensions may be anything); saturate on a 32-bit machine.
                let shape = e
                    .shape
                    .iter()
                    .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
                    .collect();
                (e.name.as_str(), kind, shape)
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
        let data_len: u64 = self.entries.iter().map(|e| e.nbytes).sum();
        if let Some(available) = crate::model::available_memory()
            && data_len > available
        {
            return Err(RuntimeError::BadTensorFile {
                path: self.path.clone(),
                message: format!(
                    "its tensor data ({}) is more than the {} of memory available; nothing \
                     was read",
                    crate::error::human_bytes(data_len.into()),
                    crate::error::human_bytes(available.into())
                ),
            });
        }
        let entries = std::mem::take(&mut self.entries);
        let mut buffer = Vec::new();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let t = self.read_tensor(&e, &mut buffer)?;
            let t = torch(t.f_to_device(device), || {
                format!(
                    "moving tensor '{}' of '{}' to {device:?}",
                    e.name,
                    self.path.display()
                )
            })?;
            out.push((e.name, t));
        }
        Ok(out)
    }

    /// The next tensor of the file (`e`, whose data starts where the previous one's ends),
    /// on the CPU. `buffer` is reused from tensor to tensor.
    fn read_tensor(&mut self, e: &Entry, buffer: &mut Vec<u8>) -> Result<Tensor, RuntimeError> {
        let context = || format!("tensor '{}' in '{}'", e.name, self.path.display());
        let kind = kind_named(e.dtype).expect("the header check refuses other dtypes");
        let shape: Vec<i64> = e.shape.iter().map(|&d| d as i64).collect();
        let t = torch(
            Tensor::f_empty(shape.as_slice(), (kind, Device::Cpu)),
            context,
        )?;
        if e.nbytes == 0 {
            return Ok(t);
        }
        // The tensor's bytes, as a flat view of its storage (little-endian, as the file).
        let bytes = torch(
            t.f_view([-1i64].as_slice())
                .and_then(|flat| flat.f_view_dtype(Kind::Uint8)),
            context,
        )?;
        let mut done = 0u64;
        while done < e.nbytes {
            let n = (e.nbytes - done).min(CHUNK as u64) as usize;
            buffer.resize(n, 0);
            self.file
                .read_exact(buffer)
                .map_err(|err| shrank(&self.path, self.size, err))?;
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

/// A read that ended early: the file shrank after it was opened (its size was checked
/// then); any other failure is an input/output error.
fn shrank(path: &Path, size: u64, e: std::io::Error) -> RuntimeError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        RuntimeError::BadTensorFile {
            path: path.to_owned(),
            message: format!(
                "truncated: the file shrank while being read (it had {size} bytes when opened)"
            ),
        }
    } else {
        RuntimeError::Io {
            action: "read",
            path: path.to_owned(),
            source: e,
        }
    }
}

/// Checks the header length read from the first 8 bytes of a file of `size` (≥ 8) bytes.
fn check_length(header_len: u64, size: u64) -> Result<(), String> {
    if header_len > size - 8 {
        return Err(format!(
            "the header length ({header_len} bytes) exceeds the file size ({size} bytes, {} \
             after the 8-byte header length)",
            size - 8
        ));
    }
    if header_len > HEADER_LIMIT {
        return Err(format!(
            "the header length ({header_len} bytes) exceeds safetensors' limit of \
             {HEADER_LIMIT} bytes"
        ));
    }
    Ok(())
}

/// One tensor as the header declares it.
struct Entry {
    name: String,
    dtype: &'static str,
    shape: Vec<u64>,
    /// `shape` × the dtype's size.
    nbytes: u64,
    begin: u64,
    end: u64,
}

fn shape_text(shape: &[u64]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}

/// Checks a header against a data section of `data_len` bytes the way safetensors 0.3 does
/// (every tensor's offsets span exactly its shape × dtype size, tensors are packed from
/// byte 0 without gaps or overlaps, and the last one ends where the file ends), and that
/// every dtype is one fair-pruner loads; says which tensor is wrong and how. Returns the
/// tensors in the order of their data.
fn check_header(header: &[u8], data_len: u64) -> Result<Vec<Entry>, String> {
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
                "the header is not valid JSON: it must be a JSON object starting with '{{', \
                 but it starts with {c:?}"
            ));
        }
        None => return Err("the header is not valid JSON: it is empty".to_owned()),
    }
    let root = json::parse(text).map_err(|e| format!("the header is not valid JSON: {e}"))?;
    let json::Value::Object(fields) = root else {
        unreachable!("a header starting with '{{' parses as an object")
    };
    let mut entries: Vec<Entry> = Vec::with_capacity(fields.len());
    let mut seen = std::collections::HashSet::new();
    for (name, value) in fields {
        let first = seen.insert(name.clone());
        if name == "__metadata__" {
            if !first {
                return Err("\"__metadata__\" appears more than once in the header".to_owned());
            }
            check_metadata(&value)?;
        } else if !first {
            return Err(format!(
                "tensor '{name}' appears more than once in the header"
            ));
        } else {
            entries.push(entry(name, value)?);
        }
    }
    entries.sort_by(|a, b| (a.begin, a.end, &a.name).cmp(&(b.begin, b.end, &b.name)));

    let packed = entries
        .iter()
        .all(|e| e.end >= e.begin && e.end - e.begin == e.nbytes)
        && entries.first().is_none_or(|e| e.begin == 0)
        && entries.windows(2).all(|w| w[1].begin == w[0].end);
    let declared = entries.last().map_or(0, |e| e.end);
    if packed && declared > data_len {
        return Err(format!(
            "truncated: the header declares {declared} bytes of tensor data but the file has \
             only {data_len}"
        ));
    }
    for e in &entries {
        let (name, begin, end) = (&e.name, e.begin, e.end);
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
        if end - begin != e.nbytes {
            return Err(format!(
                "tensor '{name}' has shape {} of dtype {} = {} bytes but its offsets span {} \
                 bytes",
                shape_text(&e.shape),
                e.dtype,
                e.nbytes,
                end - begin
            ));
        }
    }
    let mut previous: Option<&Entry> = None;
    for e in &entries {
        match previous {
            None if e.begin != 0 => {
                return Err(format!(
                    "tensor '{}' begins at byte {} of the data section, but the first tensor \
                     must begin at byte 0",
                    e.name, e.begin
                ));
            }
            Some(p) if e.begin > p.end => {
                return Err(format!(
                    "{} unused byte(s) lie between tensor '{}' (offsets [{}, {})) and tensor \
                     '{}' (offsets [{}, {})); tensors must be packed without gaps",
                    e.begin - p.end,
                    p.name,
                    p.begin,
                    p.end,
                    e.name,
                    e.begin,
                    e.end
                ));
            }
            Some(p) if e.begin < p.end => {
                return Err(format!(
                    "tensor '{}' (offsets [{}, {})) overlaps tensor '{}' (offsets [{}, {}))",
                    e.name, e.begin, e.end, p.name, p.begin, p.end
                ));
            }
            _ => {}
        }
        previous = Some(e);
    }
    if declared < data_len {
        return Err(format!(
            "the file has {} unexpected byte(s) after the last tensor: the header declares \
             {declared} bytes of tensor data, the file holds {data_len}",
            data_len - declared
        ));
    }
    if let Some(e) = entries.iter().find(|e| kind_named(e.dtype).is_none()) {
        let loadable: Vec<&str> = LOADABLE.iter().map(|(d, _)| *d).collect();
        return Err(format!(
            "tensor '{}' has dtype {}, which fair-pruner cannot load (it loads {})",
            e.name,
            e.dtype,
            loadable.join(", ")
        ));
    }
    Ok(entries)
}

/// `"__metadata__"` must be `null` or map names to strings.
fn check_metadata(value: &json::Value) -> Result<(), String> {
    match value {
        json::Value::Null => Ok(()),
        json::Value::Object(pairs) => match pairs
            .iter()
            .find(|(_, v)| !matches!(v, json::Value::Str(_)))
        {
            None => Ok(()),
            Some((key, v)) => Err(format!(
                "the header's \"__metadata__\" must map names to strings, but \"{key}\" is {}",
                v.what()
            )),
        },
        v => Err(format!(
            "the header's \"__metadata__\" must be an object of strings, but it is {}",
            v.what()
        )),
    }
}

/// One tensor's entry: `{"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}`
/// (other fields are ignored, as safetensors does).
fn entry(name: String, value: json::Value) -> Result<Entry, String> {
    let json::Value::Object(fields) = value else {
        return Err(format!(
            "tensor '{name}' must be described by an object with \"dtype\", \"shape\" and \
             \"data_offsets\", but it is {}",
            value.what()
        ));
    };
    let mut dtype = None;
    let mut shape = None;
    let mut offsets = None;
    for (key, v) in &fields {
        let slot = match key.as_str() {
            "dtype" => &mut dtype,
            "shape" => &mut shape,
            "data_offsets" => &mut offsets,
            _ => continue,
        };
        if slot.replace(v).is_some() {
            return Err(format!("tensor '{name}' lists \"{key}\" more than once"));
        }
    }
    let missing = |key: &str| format!("tensor '{name}' has no \"{key}\"");
    let dtype = match dtype.ok_or_else(|| missing("dtype"))? {
        json::Value::Str(s) => DTYPES
            .iter()
            .find(|(d, _)| *d == s.as_str())
            .ok_or_else(|| {
                let known: Vec<&str> = DTYPES.iter().map(|(d, _)| *d).collect();
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
    let counts = |v: &json::Value| match v {
        json::Value::Array(items) => items.iter().map(json::Value::count).collect(),
        _ => None,
    };
    let shape: Vec<u64> = counts(shape.ok_or_else(|| missing("shape"))?).ok_or_else(|| {
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
    let nbytes = shape
        .iter()
        .try_fold(dtype.1, |n, &d| n.checked_mul(d))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(|| {
            format!(
                "tensor '{name}' has shape {} of dtype {}, whose size in bytes overflows",
                shape_text(&shape),
                dtype.0
            )
        })?;
    Ok(Entry {
        name,
        dtype: dtype.0,
        shape,
        nbytes,
        begin,
        end,
    })
}

/// Plain words for every error safetensors 0.3 can return. Our own checks run first and
/// give more precise messages; this covers whatever still reaches safetensors.
fn describe(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::InvalidHeader => "the header is not valid UTF-8".to_owned(),
        SafeTensorError::InvalidHeaderStart => {
            "the header is not valid JSON: it does not start with '{'".to_owned()
        }
        SafeTensorError::InvalidHeaderDeserialization => {
            "the header is not valid JSON, or does not describe each tensor by \"dtype\", \
             \"shape\" and \"data_offsets\""
                .to_owned()
        }
        SafeTensorError::HeaderTooLarge => {
            format!("the header length exceeds safetensors' limit of {HEADER_LIMIT} bytes")
        }
        SafeTensorError::HeaderTooSmall => {
            "truncated: the file is shorter than the 8-byte header length".to_owned()
        }
        SafeTensorError::InvalidHeaderLength => {
            "the header length exceeds the file size".to_owned()
        }
        SafeTensorError::TensorNotFound(name) => format!("the file has no tensor '{name}'"),
        SafeTensorError::TensorInvalidInfo => {
            "a tensor's shape and dtype do not match the size of its data offsets".to_owned()
        }
        SafeTensorError::InvalidOffset(name) => format!(
            "tensor '{name}' declares offsets that end before they begin, leave a gap or \
             overlap another tensor"
        ),
        SafeTensorError::IoError(e) => format!("input/output error: {e}"),
        SafeTensorError::JsonError(e) => format!("the header is not valid JSON: {e}"),
        SafeTensorError::InvalidTensorView(dtype, shape, len) => {
            let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            let needed = shape
                .iter()
                .try_fold(dtype.size() as u64, |n, &d| n.checked_mul(d));
            match needed {
                Some(n) => format!(
                    "a tensor of shape {} and dtype {dtype:?} needs {n} bytes, but {len} were \
                     given",
                    shape_text(&shape)
                ),
                None => format!(
                    "a tensor of shape {} and dtype {dtype:?} is too large ({len} bytes were \
                     given)",
                    shape_text(&shape)
                ),
            }
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "the tensors' offsets do not cover the data section exactly (a truncated file, or \
             bytes after the last tensor)"
                .to_owned()
        }
        SafeTensorError::ValidationOverflow => {
            "a tensor's shape is so large that its size in bytes overflows".to_owned()
        }
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
/// rename), so a reader never sees a half-written file. The header carries `format = "pt"`
/// so PyTorch tools accept it.
///
/// Refuses to replace anything but a regular file: a directory, a device such as
/// `/dev/null`, a FIFO or a socket at `path` is a [`RuntimeError::BadTensorWrite`], a
/// symbolic link is refused by `fair_fs::write_atomic`, and a tensor kind safetensors cannot
/// hold is a [`RuntimeError::BadTensorWrite`].
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), RuntimeError> {
    // The rename would replace a device node or FIFO by a regular file; refuse instead.
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.file_type().is_symlink()
        && let Some(what) = not_a_file(meta.file_type())
    {
        return Err(RuntimeError::BadTensorWrite {
            path: path.to_owned(),
            message: format!("{what}; refusing to replace it with a safetensors file"),
        });
    }
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
    let bad = |message: String| RuntimeError::BadTensorWrite {
        path: path.to_owned(),
        message,
    };
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let kind = t.kind();
        let dtype = dtype_of(kind).ok_or_else(|| {
            bad(format!(
                "tensor '{name}' has kind {kind:?}, which safetensors cannot hold"
            ))
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
    let bytes = if owned.is_empty() {
        // safetensors 0.3 writes `{},"__metadata__":…}` for an empty map (it closes the
        // map before adding the metadata), which no reader accepts; write the header here.
        let header = br#"{"__metadata__":{"format":"pt"}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        bytes
    } else {
        let meta = HashMap::from([("format".to_owned(), "pt".to_owned())]);
        safetensors::tensor::serialize(owned.iter().map(|(n, b)| (n.as_str(), b)), &Some(meta))
            .map_err(|e| bad(format!("cannot serialise: {}", describe(&e))))?
    };
    Ok(bytes)
}

/// A small, strict JSON parser (RFC 8259) for safetensors headers, so that a malformed
/// header is reported with what is wrong and where. (`serde_json`, which safetensors uses,
/// is not a dependency of this crate, and safetensors does not pass its message on.)
mod json {
    /// Nesting deeper than this is refused (as `serde_json` does), so a header of
    /// `[[[[…` cannot overflow the stack.
    const MAX_DEPTH: usize = 128;

    /// A JSON value. Objects keep their pairs in order, duplicates included.
    pub(super) enum Value {
        Null,
        Bool,
        /// The number's text.
        Number(String),
        Str(String),
        Array(Vec<Value>),
        Object(Vec<(String, Value)>),
    }

    impl Value {
        /// "a string", "an array", ... for messages.
        pub(super) fn what(&self) -> &'static str {
            match self {
                Value::Null => "null",
                Value::Bool => "a boolean",
                Value::Number(_) => "a number",
                Value::Str(_) => "a string",
                Value::Array(_) => "an array",
                Value::Object(_) => "an object",
            }
        }

        /// A non-negative integer that fits in 64 bits (as `serde_json` reads a `usize`).
        pub(super) fn count(&self) -> Option<u64> {
            match self {
                Value::Number(s) if s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
                _ => None,
            }
        }
    }

    /// Parses one JSON value followed only by whitespace. The error says what was expected
    /// and at which byte of `text`.
    pub(super) fn parse(text: &str) -> Result<Value, String> {
        let mut p = Parser {
            text,
            bytes: text.as_bytes(),
            pos: 0,
            depth: 0,
        };
        let value = p.value()?;
        p.skip_ws();
        if p.pos < p.bytes.len() {
            return Err(p.error("unexpected characters after the end of the JSON object"));
        }
        Ok(value)
    }

    struct Parser<'a> {
        text: &'a str,
        bytes: &'a [u8],
        pos: usize,
        depth: usize,
    }

    impl Parser<'_> {
        fn error(&self, what: &str) -> String {
            match self.text[self.pos..].chars().next() {
                Some(c) => format!("{what}, found {c:?} at byte {} of the header", self.pos),
                None => format!("{what}, but the header ends at byte {}", self.pos),
            }
        }

        fn peek(&self) -> Option<u8> {
            self.bytes.get(self.pos).copied()
        }

        fn skip_ws(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.pos += 1;
            }
        }

        fn eat(&mut self, byte: u8, what: &str) -> Result<(), String> {
            if self.peek() == Some(byte) {
                self.pos += 1;
                Ok(())
            } else {
                Err(self.error(what))
            }
        }

        fn value(&mut self) -> Result<Value, String> {
            self.skip_ws();
            match self.peek() {
                Some(b'{') => self.nested(Self::object),
                Some(b'[') => self.nested(Self::array),
                Some(b'"') => Ok(Value::Str(self.string()?)),
                Some(b't') => self.literal("true", Value::Bool),
                Some(b'f') => self.literal("false", Value::Bool),
                Some(b'n') => self.literal("null", Value::Null),
                Some(b'-' | b'0'..=b'9') => self.number(),
                _ => Err(self.error("expected a value")),
            }
        }

        fn nested(&mut self, f: fn(&mut Self) -> Result<Value, String>) -> Result<Value, String> {
            if self.depth == MAX_DEPTH {
                return Err(self.error(&format!("nesting deeper than {MAX_DEPTH} levels")));
            }
            self.depth += 1;
            let value = f(self);
            self.depth -= 1;
            value
        }

        fn literal(&mut self, word: &str, value: Value) -> Result<Value, String> {
            if self.bytes[self.pos..].starts_with(word.as_bytes()) {
                self.pos += word.len();
                Ok(value)
            } else {
                Err(self.error("expected a value"))
            }
        }

        fn object(&mut self) -> Result<Value, String> {
            self.pos += 1; // '{'
            let mut pairs = Vec::new();
            self.skip_ws();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(Value::Object(pairs));
            }
            loop {
                self.skip_ws();
                if self.peek() != Some(b'"') {
                    return Err(self.error("expected a key in double quotes"));
                }
                let key = self.string()?;
                self.skip_ws();
                self.eat(b':', "expected ':' after a key")?;
                let value = self.value()?;
                pairs.push((key, value));
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        return Ok(Value::Object(pairs));
                    }
                    _ => return Err(self.error("expected ',' or '}'")),
                }
            }
        }

        fn array(&mut self) -> Result<Value, String> {
            self.pos += 1; // '['
            let mut items = Vec::new();
            self.skip_ws();
            if self.peek() == Some(b']') {
                self.pos += 1;
                return Ok(Value::Array(items));
            }
            loop {
                items.push(self.value()?);
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b']') => {
                        self.pos += 1;
                        return Ok(Value::Array(items));
                    }
                    _ => return Err(self.error("expected ',' or ']'")),
                }
            }
        }

        fn string(&mut self) -> Result<String, String> {
            self.pos += 1; // '"'
            let mut out = String::new();
            loop {
                let start = self.pos;
                while let Some(b) = self.peek() {
                    if b == b'"' || b == b'\\' || b < 0x20 {
                        break;
                    }
                    self.pos += 1;
                }
                // `text` is valid UTF-8 and the stops are ASCII, so this is a char boundary.
                out.push_str(&self.text[start..self.pos]);
                match self.peek() {
                    Some(b'"') => {
                        self.pos += 1;
                        return Ok(out);
                    }
                    Some(b'\\') => {
                        self.pos += 1;
                        out.push(self.escape()?);
                    }
                    Some(_) => return Err(self.error("control character in a string")),
                    None => return Err(self.error("unterminated string")),
                }
            }
        }

        fn escape(&mut self) -> Result<char, String> {
            let c = match self.peek() {
                Some(b'"') => '"',
                Some(b'\\') => '\\',
                Some(b'/') => '/',
                Some(b'b') => '\u{8}',
                Some(b'f') => '\u{c}',
                Some(b'n') => '\n',
                Some(b'r') => '\r',
                Some(b't') => '\t',
                Some(b'u') => {
                    self.pos += 1;
                    let first = self.hex4()?;
                    let code = match first {
                        0xD800..=0xDBFF => {
                            if !self.bytes[self.pos..].starts_with(b"\\u") {
                                return Err(self.error("lone leading surrogate in a \\u escape"));
                            }
                            self.pos += 2;
                            let second = self.hex4()?;
                            if !(0xDC00..=0xDFFF).contains(&second) {
                                return Err(self.error("invalid surrogate pair in a \\u escape"));
                            }
                            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                        }
                        0xDC00..=0xDFFF => {
                            return Err(self.error("lone trailing surrogate in a \\u escape"));
                        }
                        _ => first,
                    };
                    return char::from_u32(code).ok_or_else(|| self.error("invalid \\u escape"));
                }
                _ => return Err(self.error("invalid escape in a string")),
            };
            self.pos += 1;
            Ok(c)
        }

        fn hex4(&mut self) -> Result<u32, String> {
            let digits = self
                .bytes
                .get(self.pos..self.pos + 4)
                .filter(|d| d.iter().all(u8::is_ascii_hexdigit))
                .ok_or_else(|| self.error("expected four hex digits in a \\u escape"))?;
            let code = digits
                .iter()
                .fold(0, |n, &d| n * 16 + (d as char).to_digit(16).unwrap_or(0));
            self.pos += 4;
            Ok(code)
        }

        fn digits(&mut self) -> usize {
            let start = self.pos;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.pos += 1;
            }
            self.pos - start
        }

        fn number(&mut self) -> Result<Value, String> {
            let start = self.pos;
            if self.peek() == Some(b'-') {
                self.pos += 1;
            }
            match self.peek() {
                Some(b'0') => self.pos += 1,
                Some(b'1'..=b'9') => {
                    self.digits();
                }
                _ => return Err(self.error("expected a digit in a number")),
            }
            if self.peek() == Some(b'.') {
                self.pos += 1;
                if self.digits() == 0 {
                    return Err(self.error("expected a digit after the decimal point"));
                }
            }
            if matches!(self.peek(), Some(b'e' | b'E')) {
                self.pos += 1;
                if matches!(self.peek(), Some(b'+' | b'-')) {
                    self.pos += 1;
                }
                if self.digits() == 0 {
                    return Err(self.error("expected a digit in the exponent"));
                }
            }
            Ok(Value::Number(self.text[start..self.pos].to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::SafeTensors;

    /// Every variant of the safetensors 0.3 error, each described without its Rust name.
    #[test]
    fn every_safetensors_error_reads_as_plain_text() {
        let json_error = serde_json::from_str::<u32>("").unwrap_err();
        let errors = [
            (SafeTensorError::InvalidHeader, "InvalidHeader"),
            (SafeTensorError::InvalidHeaderStart, "InvalidHeaderStart"),
            (
                SafeTensorError::InvalidHeaderDeserialization,
                "InvalidHeaderDeserialization",
            ),
            (SafeTensorError::HeaderTooLarge, "HeaderTooLarge"),
            (SafeTensorError::HeaderTooSmall, "HeaderTooSmall"),
            (SafeTensorError::InvalidHeaderLength, "InvalidHeaderLength"),
            (
                SafeTensorError::TensorNotFound("w.x".into()),
                "TensorNotFound",
            ),
            (SafeTensorError::TensorInvalidInfo, "TensorInvalidInfo"),
            (
                SafeTensorError::InvalidOffset("w.x".into()),
                "InvalidOffset",
            ),
            (
                SafeTensorError::IoError(std::io::Error::other("disk on fire")),
                "IoError",
            ),
            (SafeTensorError::JsonError(json_error), "JsonError"),
            (
                SafeTensorError::InvalidTensorView(Dtype::F32, vec![2, 3], 20),
                "InvalidTensorView",
            ),
            (
                SafeTensorError::MetadataIncompleteBuffer,
                "MetadataIncompleteBuffer",
            ),
            (SafeTensorError::ValidationOverflow, "ValidationOverflow"),
        ];
        for (e, variant) in &errors {
            let text = describe(e);
            assert!(!text.contains(variant), "{variant}: {text}");
            assert!(text.len() > 20, "{variant}: {text}");
        }
        let text = |i: usize| describe(&errors[i].0);
        assert!(text(6).contains("'w.x'") && text(8).contains("'w.x'"));
        assert!(text(9).contains("disk on fire"));
        assert!(text(10).contains("EOF"), "{}", text(10));
        let view = text(11);
        assert!(view.contains("[2, 3]") && view.contains(&(2 * 3 * 4).to_string()));
        assert!(view.contains("20"), "{view}");
        // All distinct: no two errors collapse into the same words.
        let all: std::collections::HashSet<String> = (0..errors.len()).map(text).collect();
        assert_eq!(all.len(), errors.len());
    }

    /// The up-front checks alone (without safetensors behind them) on a whole file.
    fn checks(bytes: &[u8]) -> Result<(), String> {
        let size = bytes.len() as u64;
        if size < 8 {
            return Err("short".into());
        }
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        check_length(header_len, size)?;
        check_header(&bytes[8..8 + header_len as usize], size - 8 - header_len).map(drop)
    }

    /// Whatever one-byte edit, deletion or insertion is made to a good file, the up-front
    /// checks accept it exactly when safetensors does: they refuse nothing valid, and they
    /// catch everything safetensors would refuse (so its terse errors are never the ones
    /// shown).
    #[test]
    fn the_checks_agree_with_safetensors_on_every_one_byte_edit() {
        let header = r#"{"__metadata__":{"format":"pt"},"alpha":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"beta":{"dtype":"I64","shape":[2],"data_offsets":[24,40]},"gamma":{"dtype":"BOOL","shape":[0],"data_offsets":[40,40]},"d":{"dtype":"F16","shape":[],"data_offsets":[40,42]}}   "#;
        let mut good = (header.len() as u64).to_le_bytes().to_vec();
        good.extend_from_slice(header.as_bytes());
        good.extend_from_slice(&[7u8; 42]);
        assert!(checks(&good).is_ok() && SafeTensors::deserialize(&good).is_ok());
        let mut files: Vec<Vec<u8>> = Vec::new();
        let length = |b: &mut Vec<u8>, n: usize| b[..8].copy_from_slice(&(n as u64).to_le_bytes());
        for i in 0..good.len() {
            for r in b" 0124689\",:{}[]x\\.-+eE\x01\x7f\xff".iter().copied() {
                let mut b = good.clone();
                b[i] = r;
                files.push(b);
            }
            for insert in [None, Some(b'1'), Some(b','), Some(b' ')] {
                let mut b = good.clone();
                match insert {
                    Some(byte) => b.insert(i, byte),
                    None => drop(b.remove(i)),
                }
                files.push(b.clone());
                if i >= 8 {
                    let n = if insert.is_some() {
                        header.len() + 1
                    } else {
                        header.len() - 1
                    };
                    length(&mut b, n);
                    files.push(b);
                }
            }
            files.push(good[..i].to_vec());
        }
        let (mut accepted, mut refused) = (0, 0);
        for b in &files {
            let ours = checks(b);
            let theirs = SafeTensors::deserialize(b);
            assert_eq!(
                ours.is_ok(),
                theirs.is_ok(),
                "{:?}: ours {ours:?}, safetensors {:?}",
                String::from_utf8_lossy(b),
                theirs.err().map(|e| describe(&e))
            );
            if ours.is_ok() {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        assert!(accepted > 100 && refused > 1000, "{accepted} / {refused}");
    }

    #[test]
    fn json_parser_accepts_standard_json_and_locates_errors() {
        let ok = [
            r#"{}"#,
            r#"{"a":[1,-2.5e+3,0,true,false,null,"x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00"]}  "#,
            "{ \"k\" : { \"n\" : [ ] } }\n",
        ];
        for text in ok {
            assert!(json::parse(text).is_ok(), "{text}");
        }
        let bad = [
            (r#"{"a":1,}"#, 7),
            (r#"{"a" 1}"#, 5),
            (r#"{"a":01}"#, 6),
            (r#"{"a":[1 2]}"#, 8),
            (r#"{"a":tru}"#, 5),
            (r#"{"a":"\ud800"}"#, 12),
            (r#"{"a":1} x"#, 8),
            (r#"{"a":"x"#, 7),
        ];
        for (text, at) in bad {
            let e = json::parse(text).err().unwrap_or_else(|| panic!("{text}"));
            let here = format!("byte {at}");
            assert!(
                e.contains(&format!("{here} ")) || e.ends_with(&here),
                "{text}: {e}"
            );
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        let e = json::parse(&deep).err().unwrap();
        assert!(e.contains("nesting deeper than 128"), "{e}");
    }
}
