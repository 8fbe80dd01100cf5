//! Reading: the header first and alone, then the tensor data on request.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::SafetensorsError;
use crate::header::{Header, TensorInfo, check_header_length};

/// A safetensors file whose header has been read and checked ([`Header::parse`], against
/// the file's size); none of its tensor data has been read yet, so what it declares (names,
/// dtypes, shapes, metadata) can be compared with what is wanted first.
///
/// Only a regular file is opened (a directory, a device such as `/dev/zero`, a FIFO or a
/// socket is refused by name, unopened, so nothing blocks or reads forever), and nothing
/// larger than the header is allocated by [`SafetensorsFile::open`]; the header's length is
/// checked against the file's size before the header is read.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    file: File,
    /// The file's size when it was opened.
    size: u64,
    /// Where the data section begins in the file.
    data_start: u64,
    /// Where the next read starts, in the file.
    position: u64,
    header: Header,
}

impl SafetensorsFile {
    /// Opens `path` and reads and checks its header; reads no tensor data.
    ///
    /// A path that is not a regular file, or whose content is not a well-formed safetensors
    /// file, is a [`SafetensorsError::Malformed`] naming the file and saying what is wrong
    /// (and which tensor); one that cannot be opened or read is a [`SafetensorsError::Io`].
    pub fn open(path: &Path) -> Result<Self, SafetensorsError> {
        let bad = |message: String| SafetensorsError::Malformed {
            path: path.to_owned(),
            message,
        };
        // Checked before opening (opening a FIFO for reading would block until a writer
        // appears), opened without blocking, and checked again on the opened file.
        let (mut file, size) = match fair_fs::open_regular(path, "a safetensors file") {
            Ok(opened) => opened,
            Err(fair_fs::FsError::NotRegular { kind, .. }) => {
                return Err(bad(format!("is {kind}, expected a safetensors file")));
            }
            Err(fair_fs::FsError::Io { source, .. }) => {
                return Err(SafetensorsError::Io {
                    action: "read",
                    path: path.to_owned(),
                    source,
                });
            }
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
        check_header_length(header_len, size).map_err(bad)?;
        // At most `MAX_HEADER_BYTES`, and no more than the file holds.
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)
            .map_err(|e| shrank(path, size, e))?;
        let data_start = 8 + header_len;
        let header = Header::parse(&header, size - data_start).map_err(bad)?;
        Ok(SafetensorsFile {
            path: path.to_owned(),
            file,
            size,
            data_start,
            position: data_start,
            header,
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The checked header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The tensors the header declares, in the order of their data.
    pub fn tensors(&self) -> &[TensorInfo] {
        self.header.tensors()
    }

    /// Fills `buf` with the bytes of tensor `index` (of [`SafetensorsFile::tensors`])
    /// starting `start` bytes into the tensor. Reading a file's tensors in order, chunk by
    /// chunk, reads it front to back without seeking.
    ///
    /// # Panics
    ///
    /// If `index` is not a tensor of the file, or the range is not inside the tensor (both
    /// come from the caller, not from the file).
    pub fn read_chunk(
        &mut self,
        index: usize,
        start: u64,
        buf: &mut [u8],
    ) -> Result<(), SafetensorsError> {
        let t = &self.header.tensors()[index];
        let end = start
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= t.nbytes());
        assert!(
            end.is_some(),
            "bytes [{start}, +{}) are not inside tensor '{}' ({} bytes)",
            buf.len(),
            t.name,
            t.nbytes()
        );
        let at = self.data_start + t.begin + start;
        if at != self.position {
            self.file
                .seek(SeekFrom::Start(at))
                .map_err(|e| shrank(&self.path, self.size, e))?;
            self.position = at;
        }
        self.file
            .read_exact(buf)
            .map_err(|e| shrank(&self.path, self.size, e))?;
        self.position += buf.len() as u64;
        Ok(())
    }

    /// The bytes of tensor `name` (little-endian, as stored), or `None` when the header
    /// declares no such tensor. Allocates the tensor's size, which the header check bounds
    /// by the file's size.
    pub fn read_tensor(&mut self, name: &str) -> Result<Option<Vec<u8>>, SafetensorsError> {
        let Some(index) = self.tensors().iter().position(|t| t.name == name) else {
            return Ok(None);
        };
        let mut data = vec![0u8; self.tensors()[index].nbytes() as usize];
        self.read_chunk(index, 0, &mut data)?;
        Ok(Some(data))
    }
}

/// A read that ended early: the file shrank after it was opened (its size was checked
/// then); any other failure is an input/output error.
fn shrank(path: &Path, size: u64, e: std::io::Error) -> SafetensorsError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        SafetensorsError::Malformed {
            path: path.to_owned(),
            message: format!(
                "truncated: the file shrank while being read (it had {size} bytes when opened)"
            ),
        }
    } else {
        SafetensorsError::Io {
            action: "read",
            path: path.to_owned(),
            source: e,
        }
    }
}
