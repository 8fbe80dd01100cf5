//! Safetensors files for fair-pruner, in one place: every crate that reads or writes one
//! (weights in `fair-runtime` and `fair-onnx`, cached datasets in `fair-data`) goes through
//! this one, so all of them check files the same way and write the same metadata. Pure
//! Rust: no libtorch.
//!
//! - **Reading is defensive** ([`SafetensorsFile::open`]). Only a regular file is opened (a
//!   FIFO, a device such as `/dev/zero` or a directory is refused by name, unopened). The
//!   8-byte header length is checked against the file's size and safetensors' limit
//!   before the header is read, and the header is checked ([`Header::parse`]) the way the
//!   `safetensors` crate checks it — and a key given twice is refused too — before any
//!   tensor data is read. So a caller can compare the names, dtypes and shapes declared
//!   with what it wants (a graph's parameters, a dataset's layout) after reading only the
//!   header, and then read tensors one at a time, in chunks if it likes
//!   ([`SafetensorsFile::read_chunk`]). Every refusal names the file and, where one is at
//!   fault, the tensor, in plain words ([`SafetensorsError`]).
//! - **Writing has one policy** ([`write()`], [`to_bytes`]): safetensors' own layout, the
//!   metadata `format = "pt"` (so PyTorch's `safetensors.torch` accepts the file) plus
//!   whatever entries the caller adds (a digest, provenance), in key order so the same
//!   content always gives the same bytes; written atomically through
//!   [`fair_fs::write_atomic`], never replacing a directory, a special file or a symbolic
//!   link.
//!
//! ```
//! use std::collections::BTreeMap;
//! use fair_safetensors::{Dtype, SafetensorsFile, TensorRef};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("weights.safetensors");
//! let weight: Vec<u8> = [1.5f32, -2.0, 0.25].iter().flat_map(|x| x.to_le_bytes()).collect();
//! let count = 7i64.to_le_bytes();
//! let tensors = [
//!     TensorRef { name: "fc.weight", dtype: Dtype::F32, shape: &[1, 3], data: &weight },
//!     TensorRef { name: "steps", dtype: Dtype::I64, shape: &[], data: &count },
//! ];
//! let provenance = BTreeMap::from([("source".to_owned(), "example".to_owned())]);
//! fair_safetensors::write(&path, &tensors, &provenance)?;
//!
//! // The header alone first: names, dtypes, shapes and metadata, no tensor data read.
//! let mut file = SafetensorsFile::open(&path)?;
//! let w = file.header().tensor("fc.weight").unwrap();
//! assert_eq!((w.dtype, w.shape.as_slice()), (Dtype::F32, &[1u64, 3][..]));
//! assert_eq!(file.header().metadata()["format"], "pt");
//! assert_eq!(file.header().metadata()["source"], "example");
//! // Then the data.
//! assert_eq!(file.read_tensor("fc.weight")?, Some(weight));
//! assert_eq!(file.read_tensor("missing")?, None);
//!
//! // A hostile file is refused with the file and the reason named.
//! std::fs::write(&path, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"w\": nope}     ")?;
//! let e = SafetensorsFile::open(&path).unwrap_err().to_string();
//! assert!(e.contains("weights.safetensors"), "{e}");
//! assert!(e.ends_with("found 'n' at byte 6 of the header"), "{e}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dtype;
mod header;
mod json;
mod read;
mod write;

use std::path::PathBuf;

pub use dtype::{Dtype, shape_text};
pub use header::{Header, MAX_HEADER_BYTES, TensorInfo, check_header_length};
pub use read::SafetensorsFile;
pub use write::{FORMAT, FORMAT_KEY, TensorRef, check_replaceable, to_bytes, write};

/// What can go wrong reading or writing a safetensors file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SafetensorsError {
    /// The path is not a regular file, or its content is not a well-formed safetensors file
    /// (truncated, a header that is not valid JSON, offsets that do not fit, ...). The
    /// message says what is wrong and names the tensor at fault.
    #[error("cannot read safetensors file '{}': {message}", .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, e.g. "tensor 'w' declares offsets [64, 72) beyond the data
        /// section of 16 bytes".
        message: String,
    },
    /// The tensors cannot be written as a safetensors file (a name given twice, data of the
    /// wrong length, a path that is a directory or a special file). Nothing was written.
    #[error("cannot write safetensors file '{}': {message}", .path.display())]
    Unwritable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The file could not be opened or read.
    #[error("cannot {action} '{}': {source}", .path.display())]
    Io {
        /// "read".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file rules of [`fair_fs`] refused the path (a symbolic link is never replaced),
    /// or writing failed.
    #[error(transparent)]
    Fs(#[from] fair_fs::FsError),
}

impl SafetensorsError {
    /// The file the error is about (`None` for a refusal of the file rules, whose message
    /// names it).
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            SafetensorsError::Malformed { path, .. }
            | SafetensorsError::Unwritable { path, .. }
            | SafetensorsError::Io { path, .. } => Some(path),
            SafetensorsError::Fs(_) => None,
        }
    }
}

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::SafeTensors;
    use std::collections::BTreeMap;

    /// The up-front checks alone on a whole file, as [`SafetensorsFile::open`] runs them.
    fn checks(bytes: &[u8]) -> Result<Header, String> {
        let size = bytes.len() as u64;
        if size < 8 {
            return Err("short".into());
        }
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        check_header_length(header_len, size)?;
        Header::parse(&bytes[8..8 + header_len as usize], size - 8 - header_len)
    }

    /// Whatever one-byte edit, deletion or insertion is made to a good file, the checks
    /// accept it exactly when the safetensors crate does: they refuse nothing valid, and
    /// they catch everything safetensors would refuse.
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
                "{:?}: ours {:?}, safetensors {:?}",
                String::from_utf8_lossy(b),
                ours.err(),
                theirs.err()
            );
            if let Ok(h) = ours {
                accepted += 1;
                // What we read is what safetensors reads.
                let theirs = theirs.unwrap();
                assert_eq!(h.tensors().len(), theirs.names().len());
                for t in h.tensors() {
                    let view = theirs.tensor(&t.name).unwrap();
                    assert_eq!(t.dtype.name(), format!("{:?}", view.dtype()));
                    let shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
                    assert_eq!(t.shape, shape);
                    assert_eq!(t.nbytes(), view.data().len() as u64);
                }
            } else {
                refused += 1;
            }
        }
        assert!(accepted > 100 && refused > 1000, "{accepted} / {refused}");
    }

    /// Every refusal of the header check, in words, with the tensor named. The expected
    /// numbers come from the hand-written headers.
    #[test]
    fn header_refusals_name_the_tensor_and_the_problem() {
        let cases: [(&str, u64, &str); 8] = [
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[64,72]}}"#,
                16,
                "tensor 'b' declares offsets [64, 72) beyond the data section of 16 bytes",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#,
                16,
                "tensor 'a' appears more than once in the header",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"shape":[2],"data_offsets":[0,8]}}"#,
                8,
                "tensor 'a' lists \"shape\" more than once",
            ),
            (
                r#"{"__metadata__":{"format":"pt","format":"pt"}}"#,
                0,
                "the header's \"__metadata__\" lists \"format\" more than once",
            ),
            (
                r#"{"__metadata__":{"format":1}}"#,
                0,
                "the header's \"__metadata__\" must map names to strings, but \"format\" is \
                 a number",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#,
                20,
                "tensor 'a' has shape [2, 3] of dtype F32 = 24 bytes but its offsets span 20 \
                 bytes",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
                4,
                "truncated: the header declares 8 bytes of tensor data but the file has only 4",
            ),
            (
                r#"{"a":{"dtype":"F8","shape":[2],"data_offsets":[0,2]}}"#,
                2,
                "tensor 'a' has unknown dtype \"F8\" (safetensors knows BOOL, U8, I8, I16, \
                 U16, F16, BF16, I32, U32, F32, F64, I64, U64)",
            ),
        ];
        for (header, data_len, expected) in cases {
            assert_eq!(
                Header::parse(header.as_bytes(), data_len).unwrap_err(),
                expected,
                "{header}"
            );
        }
        assert_eq!(
            check_header_length(1000, 20).unwrap_err(),
            "the header length (1000 bytes) exceeds the file size (20 bytes, 12 after the \
             8-byte header length)"
        );
        assert!(
            check_header_length(MAX_HEADER_BYTES + 1, u64::MAX)
                .unwrap_err()
                .contains("exceeds safetensors' limit of 100000000 bytes")
        );
    }

    /// With only the `format` entry (no `HashMap` order to differ in), the bytes are
    /// exactly those the safetensors crate writes for the same tensors.
    #[test]
    fn the_layout_is_the_safetensors_crates_own() {
        let f32s = [0u8; 24];
        let i64s: Vec<u8> = (0..16).collect();
        let bools = [1u8, 0, 1];
        let tensors = [
            TensorRef {
                name: "z",
                dtype: Dtype::Bool,
                shape: &[3],
                data: &bools,
            },
            TensorRef {
                name: "b",
                dtype: Dtype::F32,
                shape: &[2, 3],
                data: &f32s,
            },
            TensorRef {
                name: "a",
                dtype: Dtype::F32,
                shape: &[6],
                data: &f32s,
            },
            TensorRef {
                name: "n\"q",
                dtype: Dtype::I64,
                shape: &[2],
                data: &i64s,
            },
            TensorRef {
                name: "s",
                dtype: Dtype::F16,
                shape: &[],
                data: &[0, 60],
            },
        ];
        let ours = to_bytes("x".as_ref(), &tensors, &BTreeMap::new()).unwrap();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|t| {
                let dtype: safetensors::Dtype =
                    serde_json::from_str(&format!("\"{}\"", t.dtype)).unwrap();
                let shape = t.shape.iter().map(|&d| d as usize).collect();
                let view = safetensors::tensor::TensorView::new(dtype, shape, t.data).unwrap();
                (t.name.to_owned(), view)
            })
            .collect();
        let format = std::collections::HashMap::from([("format".to_owned(), "pt".to_owned())]);
        let theirs = safetensors::tensor::serialize(views, &Some(format)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
        assert_eq!(ours, theirs);
    }

    #[test]
    fn no_tensors_make_one_json_object() {
        let bytes = to_bytes("x".as_ref(), &[], &BTreeMap::new()).unwrap();
        let header = br#"{"__metadata__":{"format":"pt"}}"#;
        let mut want = (header.len() as u64).to_le_bytes().to_vec();
        want.extend_from_slice(header);
        assert_eq!(bytes, want);
        assert!(SafeTensors::deserialize(&bytes).is_ok());
    }

    #[test]
    fn writing_refuses_what_no_reader_could_take_back() {
        let path = std::path::Path::new("dir/out.safetensors");
        let four = [0u8; 4];
        let t = |name| TensorRef {
            name,
            dtype: Dtype::F32,
            shape: &[1],
            data: &four,
        };
        let refuse = |tensors: &[TensorRef<'_>], meta: &BTreeMap<String, String>| {
            let e = to_bytes(path, tensors, meta).unwrap_err();
            assert!(matches!(e, SafetensorsError::Unwritable { .. }), "{e}");
            e.to_string()
        };
        let none = BTreeMap::new();
        assert_eq!(
            refuse(&[t("w"), t("v"), t("w")], &none),
            "cannot write safetensors file 'dir/out.safetensors': tensor 'w' is given more \
             than once"
        );
        assert!(refuse(&[t("__metadata__")], &none).contains("cannot be called \"__metadata__\""));
        let short = TensorRef {
            name: "s",
            dtype: Dtype::F64,
            shape: &[2, 2],
            data: &four,
        };
        assert!(refuse(&[short], &none).ends_with(
            "tensor 's' has shape [2, 2] of dtype F64 = 32 bytes, but 4 bytes of data \
                 were given"
        ));
        let huge = TensorRef {
            name: "h",
            dtype: Dtype::U8,
            shape: &[u64::MAX, 2],
            data: &four,
        };
        assert!(refuse(&[huge], &none).contains("whose size in bytes overflows"));
        let format = BTreeMap::from([("format".to_owned(), "np".to_owned())]);
        assert!(refuse(&[], &format).contains("sets \"format\" to \"np\""));
    }
}
