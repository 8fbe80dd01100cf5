//! SVHN's cropped digits (`train_32x32.mat`, `test_32x32.mat`, `extra_32x32.mat`): MATLAB v5
//! MAT-files holding `X`, a uint8 array of shape (32, 32, 3, N) in MATLAB's column-major
//! order, and `y`, an (N, 1) array of labels 1..=10 where 10 means the digit 0.
//!
//! # Why a reader of our own
//!
//! The MAT v5 layout needed here is small: a 128-byte header, then top-level data elements,
//! each either a matrix (`miMATRIX`) or a zlib stream holding one (`miCOMPRESSED`); a
//! matrix is its flags, dimensions, name and data, each a tagged element. The `matfile`
//! crate reads it, but its one entry point (`MatFile::parse(reader)`) materialises every
//! numeric array of the file, inflating every compressed element to its end, with no hook
//! to bound that by what the array header declares or by a budget; a small compressed
//! file could inflate to gigabytes before any check. So this module
//! reads the layout itself with `flate2` (already used for IDX), in one bounded pass:
//!
//! - The file is opened with [`fair_fs::open_regular`] (regular files only) and read
//!   sequentially; an element's declared length must fit in what remains of the file.
//! - A variable other than `X` and `y` is skipped by seeking past it, compressed or not,
//!   without inflating it.
//! - For `X` and `y`, only the matrix header (flags, dimensions, name: a few dozen bytes,
//!   each part capped) is inflated first. The dataset the dimensions declare must fit the
//!   in-memory budget ([`MAX_IN_MEMORY_BYTES`], via the same check as every loader), the
//!   data element must hold exactly the bytes the dimensions declare, and a compressed
//!   element must be large enough to inflate to them (deflate expands at most 1032:1) —
//!   all before the data's buffer is allocated. Then exactly the declared bytes are
//!   inflated; one byte more in the stream is an error ("inflates to more than ..."), so
//!   a zlib bomb costs one read past the declared size.
//! - The pixels are reordered in place (each 32×32 plane is transposed: MATLAB's
//!   column-major (row, column, channel, image) becomes [N, 3, 32, 32] row-major), so the
//!   loader holds the dataset and nothing more.
//!
//! MATLAB v7.3 files are HDF5 containers, a different format altogether; they are
//! recognised (header text, version 0x0200 or the HDF5 signature at byte 512) and refused
//! with how to convert them. MATLAB v4 files are refused too.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use crate::dataset::{Dataset, in_memory_bytes};
use crate::error::DataError;
#[cfg(doc)]
use crate::formats::MAX_IN_MEMORY_BYTES;

/// One image: 32 × 32 pixels × 3 channels.
const IMAGE_BYTES: usize = 32 * 32 * 3;
/// One channel plane of an image.
const PLANE: usize = 32 * 32;
/// The largest variable name read (MATLAB's limit is 63 characters).
const MAX_NAME_BYTES: u64 = 4096;
/// The most dimensions read for `X` or `y`.
const MAX_DIMS: u64 = 64;
/// The most a deflate stream can expand: 258 bytes from one 2-bit length/distance pair.
const DEFLATE_MAX_RATIO: u64 = 1032;

// MAT v5 data types (the tags of data elements).
const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

// MATLAB array classes (the low byte of a matrix's flags).
const MX_DOUBLE: u8 = 6;
const MX_UINT8: u8 = 9;
const MX_UINT64: u8 = 15;
const FLAG_COMPLEX: u32 = 0x0800;

/// How to convert a v7.3 file, for the error.
const CONVERT_V73: &str = "convert it to a v7 MAT-file: in MATLAB, `save('out.mat', 'X', 'y', \
                           '-v7')`; in Python, load X and y with h5py and write them with \
                           `scipy.io.savemat('out.mat', {'X': X, 'y': y}, do_compression=True)` \
                           (h5py reads MATLAB's arrays transposed: X as (N, 3, 32, 32) — \
                           transpose it back to (32, 32, 3, N), and y to (N, 1))";

/// Reads an SVHN cropped-digits MAT-file (`train_32x32.mat`, `test_32x32.mat` or
/// `extra_32x32.mat`, as distributed: MATLAB v5, compressed or not) into a [`Dataset`] of
/// `[3, 32, 32]` images with classes `"0"`..`"9"`.
///
/// `X` must be a uint8 array of shape (32, 32, 3, N) and `y` a numeric (N, 1) (or (1, N))
/// array of whole numbers in `1..=10`; the label 10 becomes 0 (the digit it shows), the
/// others stay. Pixel (row i, column j, channel c) of image n, at MATLAB's column-major
/// index i + 32·j + 1024·c + 3072·n, lands at `pixels[3072·n + 1024·c + 32·i + j]`. Other
/// variables in the file are ignored.
///
/// The file must be a regular file; the dataset `X` declares must fit the in-memory budget
/// ([`MAX_IN_MEMORY_BYTES`]), checked from its dimensions before its data is inflated or
/// allocated, and no element is inflated past the size its header declares (see the
/// module's source documentation). Errors name the file and what was expected: a missing
/// or misshapen `X` or `y`, a label out of range (with its index), a truncated file, and a
/// MATLAB v7.3 (HDF5) file, with how to convert it.
pub fn load_svhn(path: &Path) -> Result<Dataset, DataError> {
    let (file, size) = fair_fs::open_regular(path, "an SVHN MAT-file")?;
    let mut r = BufReader::new(file);
    let big_endian = read_header(path, &mut r, size)?;
    let mut x: Option<Vec<u8>> = None;
    let mut y: Option<Vec<i64>> = None;
    let mut names: Vec<String> = Vec::new();
    let mut pos = 128u64;
    while pos < size {
        let ctx = Ctx {
            path,
            big_endian,
            at: pos,
        };
        if size - pos < 8 {
            return Err(ctx.bad(format!(
                "truncated: {} stray bytes after the last element",
                size - pos
            )));
        }
        let mut tag = [0u8; 8];
        r.read_exact(&mut tag)
            .map_err(|e| ctx.read_error("read", e))?;
        let (ty, len) = (ctx.u32(&tag[..4]), u64::from(ctx.u32(&tag[4..])));
        if len > size - pos - 8 {
            return Err(ctx.bad(format!(
                "truncated: the element declares {len} bytes, the file holds {} after its tag",
                size - pos - 8
            )));
        }
        let next = pos + 8 + len;
        let found = match ty {
            MI_MATRIX => {
                let mut m = (&mut r).take(len);
                let found = read_matrix(&ctx, &mut m, len, None, &x, &y)?;
                if matches!(found, Some(Var::X(_) | Var::Y(_))) {
                    ctx.finish_matrix(&mut m)?;
                }
                found
            }
            MI_COMPRESSED => {
                let mut z = flate2::bufread::ZlibDecoder::new((&mut r).take(len));
                let mut inner = [0u8; 8];
                z.read_exact(&mut inner)
                    .map_err(|e| ctx.read_error("inflate", e))?;
                let (ity, ilen) = (ctx.u32(&inner[..4]), u64::from(ctx.u32(&inner[4..])));
                if ity != MI_MATRIX {
                    return Err(ctx.bad(format!(
                        "the compressed element holds a data element of type {ity}, expected \
                         a matrix (type {MI_MATRIX})"
                    )));
                }
                let mut m = (&mut z).take(ilen);
                let found = read_matrix(&ctx, &mut m, ilen, Some(len), &x, &y)?;
                if matches!(found, Some(Var::X(_) | Var::Y(_))) {
                    ctx.finish_matrix(&mut m)?;
                    // The stream must end with the matrix it declares.
                    let mut extra = [0u8; 1];
                    let more = z
                        .read(&mut extra)
                        .map_err(|e| ctx.read_error("inflate", e))?;
                    if more > 0 {
                        return Err(ctx.bad(format!(
                            "the compressed element inflates to more than the {} bytes of the \
                             matrix it declares",
                            ilen + 8
                        )));
                    }
                }
                found
            }
            other => {
                return Err(ctx.bad(format!(
                    "a top-level element of type {other}, expected a matrix ({MI_MATRIX}) or \
                     a compressed element ({MI_COMPRESSED})"
                )));
            }
        };
        match found {
            Some(Var::Name(name)) => names.push(name),
            Some(Var::X(pixels)) => {
                names.push("X".into());
                x = Some(pixels);
            }
            Some(Var::Y(labels)) => {
                names.push("y".into());
                y = Some(labels);
            }
            None => {}
        }
        r.seek(SeekFrom::Start(next))
            .map_err(|e| ctx.read_error("read", e))?;
        pos = next;
    }
    if names.is_empty() {
        return Err(DataError::Malformed {
            path: path.to_owned(),
            record: None,
            detail: "holds no variables after its 128-byte header: truncated, or an empty \
                     MAT-file (an SVHN file holds X and y)"
                .into(),
        });
    }
    let missing = |var: &str, what: &str| DataError::Malformed {
        path: path.to_owned(),
        record: None,
        detail: format!(
            "holds no variable named '{var}' ({what}); found {}: not an SVHN cropped-digits \
             file (train_32x32.mat, test_32x32.mat, extra_32x32.mat)",
            names.join(", ")
        ),
    };
    let pixels = x.ok_or_else(|| missing("X", "the images, uint8 of shape (32, 32, 3, N)"))?;
    let labels = y.ok_or_else(|| missing("y", "the labels 1..=10, shape (N, 1)"))?;
    let name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    Dataset::new(
        name,
        [3, 32, 32],
        pixels,
        labels,
        (0..10).map(|c| c.to_string()).collect(),
    )
}

/// Checks the 128-byte header; returns whether the file is big-endian.
fn read_header(
    path: &Path,
    r: &mut BufReader<std::fs::File>,
    size: u64,
) -> Result<bool, DataError> {
    let bad = |detail: String| DataError::Malformed {
        path: path.to_owned(),
        record: None,
        detail,
    };
    let mut head = Vec::with_capacity(520);
    r.by_ref()
        .take(520)
        .read_to_end(&mut head)
        .map_err(crate::error::io("read", path))?;
    let text = String::from_utf8_lossy(&head[..head.len().min(116)]).into_owned();
    let version = |big: bool| {
        let b = [head[124], head[125]];
        if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let endian = head.get(126..128);
    let big = endian == Some(b"MI");
    let hdf5 = head.get(512..516) == Some(b"\x89HDF");
    let v73 = text.starts_with("MATLAB 7.3")
        || hdf5
        || (matches!(endian, Some(b"IM" | b"MI")) && version(big) == 0x0200);
    if v73 {
        return Err(bad(format!(
            "a MATLAB v7.3 MAT-file (an HDF5 container), which is not supported: only MATLAB \
             v5/v7 MAT-files are read; {CONVERT_V73}"
        )));
    }
    if head.len() < 128 {
        return Err(bad(format!(
            "truncated or not a MAT-file: {size} bytes, shorter than the 128-byte header of a \
             MATLAB v5 MAT-file"
        )));
    }
    if head[..4].contains(&0) {
        return Err(bad(
            "a MATLAB v4 MAT-file (or not a MAT-file), which is not supported: \
                        save it as a v7 MAT-file (`save(..., '-v7')` in MATLAB, \
                        `scipy.io.savemat` in Python)"
                .into(),
        ));
    }
    if !matches!(endian, Some(b"IM" | b"MI")) || version(big) != 0x0100 {
        return Err(bad(format!(
            "not a MATLAB v5 MAT-file: expected the endian indicator 'IM' or 'MI' at byte 126 \
             and version 0x0100 at byte 124 of the 128-byte header (the header text reads \
             {:?})",
            text.trim_end_matches([' ', '\0'])
        )));
    }
    r.seek(SeekFrom::Start(128))
        .map_err(crate::error::io("read", path))?;
    Ok(big)
}

/// What a matrix turned out to be.
enum Var {
    /// A variable that is neither `X` nor `y` (skipped).
    Name(String),
    /// `X`, as [N, 3, 32, 32] row-major pixels.
    X(Vec<u8>),
    /// `y`, mapped to 0..=9.
    Y(Vec<i64>),
}

/// Where an element is, for messages and byte order.
struct Ctx<'a> {
    path: &'a Path,
    big_endian: bool,
    /// The offset of the top-level element.
    at: u64,
}

impl Ctx<'_> {
    fn bad(&self, detail: String) -> DataError {
        DataError::Malformed {
            path: self.path.to_owned(),
            record: None,
            detail: format!("element at byte {}: {detail}", self.at),
        }
    }

    /// A read error inside an element: running out of bytes is "truncated", bad zlib data
    /// "corrupt".
    fn read_error(&self, action: &str, e: std::io::Error) -> DataError {
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof => self.bad(format!(
                "truncated: the data ends inside the element (cannot {action} the bytes it \
                 declares)"
            )),
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
                self.bad(format!("corrupt compressed data: {e}"))
            }
            _ => DataError::Io {
                action: if action == "inflate" {
                    "decompress"
                } else {
                    "read"
                },
                path: self.path.to_owned(),
                source: e,
            },
        }
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let b = [b[0], b[1], b[2], b[3]];
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// A matrix's sub-elements must fill it but for padding (at most 7 bytes), which is
    /// skipped.
    fn finish_matrix(&self, m: &mut std::io::Take<impl Read>) -> Result<(), DataError> {
        let left = m.limit();
        if left > 7 {
            return Err(self.bad(format!(
                "the matrix holds {left} bytes after its data (a complex part or unknown \
                 content)"
            )));
        }
        std::io::copy(m, &mut std::io::sink()).map_err(|e| self.read_error("read", e))?;
        Ok(())
    }

    /// Reads one tagged sub-element's header: (type, byte count, inline data of a small
    /// element).
    fn tag(&self, r: &mut impl Read, part: &str) -> Result<Tag, DataError> {
        let mut t = [0u8; 8];
        r.read_exact(&mut t).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => self.bad(format!(
                "the matrix ends before its {part} (truncated or malformed)"
            )),
            _ => self.read_error("read", e),
        })?;
        let first = self.u32(&t[..4]);
        if first >> 16 != 0 {
            // The small format: type and byte count in one word, up to 4 bytes of data.
            let (ty, len) = (first & 0xffff, first >> 16);
            if len > 4 {
                return Err(self.bad(format!(
                    "the {part} is a small element declaring {len} bytes (at most 4)"
                )));
            }
            let mut inline = [0u8; 4];
            inline.copy_from_slice(&t[4..]);
            return Ok(Tag {
                ty,
                len: u64::from(len),
                inline: Some(inline),
            });
        }
        Ok(Tag {
            ty: first,
            len: u64::from(self.u32(&t[4..])),
            inline: None,
        })
    }

    /// A sub-element's data, at most `limit` bytes (more is an error naming `part`),
    /// padding skipped.
    fn data(
        &self,
        r: &mut impl Read,
        tag: &Tag,
        limit: u64,
        part: &str,
    ) -> Result<Vec<u8>, DataError> {
        if tag.len > limit {
            return Err(self.bad(format!(
                "the {part} declares {} bytes, more than the {limit} expected",
                tag.len
            )));
        }
        if let Some(inline) = tag.inline {
            return Ok(inline[..tag.len as usize].to_vec());
        }
        let mut buf = Vec::with_capacity(tag.len as usize);
        r.by_ref()
            .take(tag.len)
            .read_to_end(&mut buf)
            .map_err(|e| self.read_error("read", e))?;
        if (buf.len() as u64) < tag.len {
            return Err(self.bad(format!(
                "truncated: the {part} declares {} bytes, the data ends after {}",
                tag.len,
                buf.len()
            )));
        }
        self.skip_padding(r, tag.len)?;
        Ok(buf)
    }

    fn skip_padding(&self, r: &mut impl Read, len: u64) -> Result<(), DataError> {
        let pad = (8 - len % 8) % 8;
        let mut p = [0u8; 8];
        r.read_exact(&mut p[..pad as usize])
            .map_err(|e| match e.kind() {
                // The last element of a matrix may lack its padding.
                std::io::ErrorKind::UnexpectedEof => self.bad(
                    "the matrix ends inside the padding of an element (truncated or malformed)"
                        .into(),
                ),
                _ => self.read_error("read", e),
            })
    }

    fn values(&self, bytes: &[u8], ty: u32) -> Vec<f64> {
        macro_rules! conv {
            ($t:ty, $n:expr) => {
                bytes
                    .chunks_exact($n)
                    .map(|c| {
                        let a: [u8; $n] = c.try_into().unwrap_or([0; $n]);
                        (if self.big_endian {
                            <$t>::from_be_bytes(a)
                        } else {
                            <$t>::from_le_bytes(a)
                        }) as f64
                    })
                    .collect()
            };
        }
        match ty {
            MI_INT8 => conv!(i8, 1),
            MI_UINT8 => conv!(u8, 1),
            MI_INT16 => conv!(i16, 2),
            MI_UINT16 => conv!(u16, 2),
            MI_INT32 => conv!(i32, 4),
            MI_UINT32 => conv!(u32, 4),
            MI_SINGLE => conv!(f32, 4),
            MI_DOUBLE => conv!(f64, 8),
            MI_INT64 => conv!(i64, 8),
            MI_UINT64 => conv!(u64, 8),
            _ => Vec::new(),
        }
    }
}

/// A sub-element's tag.
struct Tag {
    ty: u32,
    len: u64,
    /// The data of a small element (up to 4 bytes, inside the tag).
    inline: Option<[u8; 4]>,
}

/// The size in bytes of a numeric data type's element.
fn type_size(ty: u32) -> Option<u64> {
    Some(match ty {
        MI_INT8 | MI_UINT8 => 1,
        MI_INT16 | MI_UINT16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        _ => return None,
    })
}

fn class_name(class: u8) -> String {
    match class {
        1 => "a cell array".into(),
        2 => "a struct".into(),
        3 => "an object".into(),
        4 => "a char array".into(),
        5 => "a sparse array".into(),
        6 => "double".into(),
        7 => "single".into(),
        8 => "int8".into(),
        9 => "uint8".into(),
        10 => "int16".into(),
        11 => "uint16".into(),
        12 => "int32".into(),
        13 => "uint32".into(),
        14 => "int64".into(),
        15 => "uint64".into(),
        c => format!("class {c}"),
    }
}

fn shape(dims: &[u64]) -> String {
    let d: Vec<String> = dims.iter().map(u64::to_string).collect();
    format!("({})", d.join(", "))
}

/// Reads a matrix's header from `m` (the matrix's `len` bytes); for `X` and `y`, also its
/// data. `compressed` is the size of the compressed element holding it, if any. `x` and
/// `y` are what was read before (for duplicates and to compare counts).
fn read_matrix(
    ctx: &Ctx,
    m: &mut impl Read,
    len: u64,
    compressed: Option<u64>,
    x: &Option<Vec<u8>>,
    y: &Option<Vec<i64>>,
) -> Result<Option<Var>, DataError> {
    if len == 0 {
        // An empty matrix element (MATLAB writes one for an empty array).
        return Ok(None);
    }
    let t = ctx.tag(m, "array flags")?;
    if t.ty != MI_UINT32 || t.len != 8 {
        return Err(ctx.bad(format!(
            "the matrix's array flags are of type {} and {} bytes, expected type {MI_UINT32} \
             (uint32) and 8 bytes",
            t.ty, t.len
        )));
    }
    let flags = ctx.data(m, &t, 8, "array flags")?;
    let flags = ctx.u32(&flags[..4]);
    let class = (flags & 0xff) as u8;
    let t = ctx.tag(m, "dimensions")?;
    let dims_bytes = ctx.data(m, &t, 4 * MAX_DIMS, "dimensions")?;
    if t.ty != MI_INT32 || dims_bytes.len() % 4 != 0 {
        return Err(ctx.bad(format!(
            "the matrix's dimensions are of type {} and {} bytes, expected type {MI_INT32} \
             (int32) and a multiple of 4 bytes",
            t.ty,
            dims_bytes.len()
        )));
    }
    let dims: Vec<u64> = dims_bytes
        .chunks_exact(4)
        .map(|c| ctx.u32(c) as i32)
        .map(|d| u64::try_from(d).unwrap_or(u64::MAX))
        .collect();
    if dims.contains(&u64::MAX) {
        return Err(ctx.bad("the matrix declares a negative dimension".into()));
    }
    let t = ctx.tag(m, "name")?;
    let name_bytes = ctx.data(m, &t, MAX_NAME_BYTES, "name")?;
    let name = String::from_utf8_lossy(&name_bytes).into_owned();
    let is_x = name == "X";
    if !is_x && name != "y" {
        return Ok(Some(Var::Name(name)));
    }
    if (is_x && x.is_some()) || (!is_x && y.is_some()) {
        return Err(ctx.bad(format!("a second variable named '{name}'")));
    }
    let what = if is_x {
        "X (the images: uint8 of shape (32, 32, 3, N))"
    } else {
        "y (the labels 1..=10: shape (N, 1))"
    };
    if flags & FLAG_COMPLEX != 0 {
        return Err(ctx.bad(format!("{what} is complex")));
    }
    // The image count, from the dimensions.
    let n = if is_x {
        if class != MX_UINT8 {
            return Err(ctx.bad(format!(
                "{what} is {} of shape {}",
                class_name(class),
                shape(&dims)
            )));
        }
        match dims[..] {
            [32, 32, 3, n] => n,
            // MATLAB drops a trailing dimension of 1.
            [32, 32, 3] => 1,
            _ => {
                return Err(ctx.bad(format!("{what} has shape {}", shape(&dims))));
            }
        }
    } else {
        if !(MX_DOUBLE..=MX_UINT64).contains(&class) {
            return Err(ctx.bad(format!(
                "{what} is {} of shape {}, expected a numeric array",
                class_name(class),
                shape(&dims)
            )));
        }
        match dims[..] {
            [n, 1] | [1, n] => n,
            _ => {
                return Err(ctx.bad(format!("{what} has shape {}", shape(&dims))));
            }
        }
    };
    if n == 0 {
        return Err(ctx.bad(format!(
            "{what} has shape {}: no images (a split must hold at least one)",
            shape(&dims)
        )));
    }
    // The count must fit the in-memory budget before anything is allocated.
    in_memory_bytes(n, IMAGE_BYTES as u64).map_err(|why| {
        ctx.bad(format!(
            "{} declares {n} images of 3×32×32, {why}; use an ImageFolder for larger data",
            if is_x { "X" } else { "y" }
        ))
    })?;
    let other = if is_x {
        y.as_ref().map(|l| (l.len() as u64, "labels in y"))
    } else {
        x.as_ref()
            .map(|p| ((p.len() / IMAGE_BYTES) as u64, "images in X"))
    };
    if let Some((count, of)) = other
        && count != n
    {
        return Err(ctx.bad(format!(
            "{} declares {n} {}, for {count} {of}",
            if is_x { "X" } else { "y" },
            if is_x { "images" } else { "labels" }
        )));
    }
    let t = ctx.tag(m, "data")?;
    let elem = match (is_x, type_size(t.ty)) {
        (true, _) if t.ty == MI_UINT8 => 1,
        (false, Some(s)) => s,
        _ => {
            return Err(ctx.bad(format!(
                "the data of {what} is stored as type {}, expected {}",
                t.ty,
                if is_x { "uint8 (2)" } else { "a numeric type" }
            )));
        }
    };
    let declared = if is_x {
        n * IMAGE_BYTES as u64
    } else {
        n * elem
    };
    if t.len != declared {
        return Err(ctx.bad(format!(
            "the data of {what} holds {} bytes, its shape {} declares {declared}",
            t.len,
            shape(&dims)
        )));
    }
    if declared > len {
        return Err(ctx.bad(format!(
            "the matrix {name} holds {len} bytes, fewer than the {declared} bytes of data its \
             shape {} declares",
            shape(&dims)
        )));
    }
    if let Some(c) = compressed
        && declared > c.saturating_mul(DEFLATE_MAX_RATIO)
    {
        return Err(ctx.bad(format!(
            "{} declares {declared} bytes of data, more than its {c} compressed bytes can \
             inflate to (deflate expands at most {DEFLATE_MAX_RATIO}:1): truncated or corrupt",
            if is_x { "X" } else { "y" }
        )));
    }
    let bytes = ctx.data(m, &t, declared, &format!("data of {what}"))?;
    if is_x {
        let mut pixels = bytes;
        // Column-major (i, j, c, n) at i + 32j + 1024c + 3072n; row-major [n, c, i, j] at
        // 3072n + 1024c + 32i + j: the same planes, each transposed.
        for plane in pixels.chunks_exact_mut(PLANE) {
            for i in 0..32 {
                for j in i + 1..32 {
                    plane.swap(i + 32 * j, 32 * i + j);
                }
            }
        }
        return Ok(Some(Var::X(pixels)));
    }
    let values = ctx.values(&bytes, t.ty);
    let mut labels = Vec::with_capacity(values.len());
    for (i, &v) in values.iter().enumerate() {
        if !(v.fract() == 0.0 && (1.0..=10.0).contains(&v)) {
            return Err(DataError::Malformed {
                path: ctx.path.to_owned(),
                record: Some(i),
                detail: format!(
                    "label {v} of y (index {i}) is outside 1..=10 (SVHN's labels: 1..=9 are \
                     the digits, 10 is the digit 0)"
                ),
            });
        }
        labels.push(if v == 10.0 { 0 } else { v as i64 });
    }
    Ok(Some(Var::Y(labels)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A matrix element (uncompressed) in little- or big-endian byte order.
    fn matrix(big: bool, class: u8, dims: &[i32], name: &str, ty: u32, data: &[u8]) -> Vec<u8> {
        let w = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let pad = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(8) * 8, 0);
        let mut body = Vec::new();
        body.extend(w(MI_UINT32));
        body.extend(w(8));
        body.extend(w(u32::from(class)));
        body.extend(w(0));
        body.extend(w(MI_INT32));
        body.extend(w(4 * dims.len() as u32));
        for &d in dims {
            body.extend(w(d as u32));
        }
        pad(&mut body);
        body.extend(w(MI_INT8));
        body.extend(w(name.len() as u32));
        body.extend(name.as_bytes());
        pad(&mut body);
        body.extend(w(ty));
        body.extend(w(data.len() as u32));
        body.extend(data);
        pad(&mut body);
        let mut out = Vec::new();
        out.extend(w(MI_MATRIX));
        out.extend(w(body.len() as u32));
        out.extend(body);
        out
    }

    fn header(big: bool) -> Vec<u8> {
        let mut h = b"MATLAB 5.0 MAT-file, test".to_vec();
        h.resize(124, b' ');
        h.extend(if big { [1, 0] } else { [0, 1] });
        h.extend(if big { b"MI" } else { b"IM" });
        h
    }

    #[test]
    fn big_endian_files_with_small_label_elements_load() {
        // Two images; labels as big-endian int16 (class int16, 4 bytes of data).
        let pixels: Vec<u8> = (0..2 * IMAGE_BYTES).map(|k| (k % 251) as u8).collect();
        let mut file = header(true);
        file.extend(matrix(
            true,
            MX_UINT8,
            &[32, 32, 3, 2],
            "X",
            MI_UINT8,
            &pixels,
        ));
        file.extend(matrix(true, 10, &[2, 1], "y", MI_INT16, &[0, 10, 0, 3]));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.mat");
        std::fs::write(&path, &file).unwrap();
        let d = load_svhn(&path).unwrap();
        assert_eq!(d.labels, [0, 3]);
        // Row 1, column 0, channel 2 of image 1: column-major 1 + 0 + 2048 + 3072.
        assert_eq!(d.pixels[3072 + 2048 + 32], pixels[1 + 2048 + 3072]);
        assert_eq!(d.pixels[5], pixels[5 * 32]);
    }

    #[test]
    fn small_data_elements_are_read_from_the_tag() {
        let pixels = vec![7u8; IMAGE_BYTES];
        let mut file = header(false);
        file.extend(matrix(
            false,
            MX_UINT8,
            &[32, 32, 3],
            "X",
            MI_UINT8,
            &pixels,
        ));
        // y: one uint8 label in the small format (type 2, 1 byte, inline).
        let mut y = matrix(false, MX_DOUBLE, &[1, 1], "y", MI_UINT8, &[]);
        let data_tag = y.len() - 8;
        y.truncate(data_tag);
        y.extend((MI_UINT8 | (1 << 16)).to_le_bytes());
        y.extend([4, 0, 0, 0]);
        file.extend(y);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.mat");
        std::fs::write(&path, &file).unwrap();
        let d = load_svhn(&path).unwrap();
        assert_eq!(d.labels, [4]);
        assert!(d.pixels.iter().all(|&p| p == 7));
    }
}
