//! Standard on-disk formats a user brings: IDX (MNIST-style), CIFAR-10/100 binary batches and
//! ImageFolder trees.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, in_memory_bytes};
use crate::error::{DataError, io, valid_range};
use crate::folder::{FolderOptions, ImageFolder, decode_image};
use crate::source::ImageSource;

/// The most bytes a [`Dataset`] may hold in memory: its pixels (one byte each) and its
/// labels (an `i64`, 8 bytes, each). 4 GiB holds e.g. 5.4 million 28×28 images (792 bytes
/// each), or 477 million 1×1 images (9 bytes each). Every way a dataset is built checks it
/// from the declared record count before allocating: [`load_idx`] (from the IDX headers,
/// before anything is decompressed), [`load_cifar`] (from the batch files' sizes),
/// [`load_image_folder`] (from the index), [`Dataset::load`] (from the file's header) and
/// [`Dataset::new`].
///
/// 4 GiB is seven times the largest IDX set in use (EMNIST ByClass: 697,932 images of
/// 28×28, 0.55 GB loaded) and 27 times CIFAR-100's training split; larger data belongs in an
/// [`ImageFolder`], which streams it. While a loader runs, it may hold a little more than
/// the dataset: [`load_idx`] the label file's bytes (1 per image), [`load_cifar`] one batch
/// file, [`Dataset::load`] the file it reads.
pub const MAX_IN_MEMORY_BYTES: u64 = 4 << 30;

/// The largest class-names file of a CIFAR directory (`batches.meta.txt`,
/// `fine_label_names.txt`): the official ones are under 1 KB; 1 MiB leaves room for any list
/// of names without reading an arbitrary file whole.
const MAX_CLASS_NAMES_BYTES: u64 = 1 << 20;

/// The two IDX files of a dataset.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IdxKind {
    /// Magic 0x00000803: unsigned bytes, 3 dimensions (N × H × W).
    Images,
    /// Magic 0x00000801: unsigned bytes, 1 dimension (N).
    Labels,
}

impl IdxKind {
    fn dims(self) -> usize {
        match self {
            IdxKind::Images => 3,
            IdxKind::Labels => 1,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            IdxKind::Images => {
                "not an IDX image file (expected magic 0x00000803: unsigned bytes, 3 dimensions)"
            }
            IdxKind::Labels => "not an IDX label file (expected magic 0x00000801)",
        }
    }

    /// What the header declares, for messages: "3 images of 28×28", "3 labels".
    fn declared(self, dims: &[usize]) -> String {
        match (self, dims) {
            (IdxKind::Images, [n, h, w]) => format!("{n} images of {h}×{w}"),
            (_, dims) => format!("{} labels", dims[0]),
        }
    }
}

/// Reads an IDX file of `kind` (`.gz`: gzip, decompressed as it is read): its dimensions and
/// exactly the bytes they declare. Only the header is read before the declared size is
/// computed (checked arithmetic, at most [`MAX_IN_MEMORY_BYTES`]; `check` applies the
/// dataset's in-memory budget, which counts the labels too); the data is then read
/// through [`fair_fs::read_at_most`], so a stream longer than the header promises (a gzip
/// bomb) is an error after one byte more than declared, and a shorter one is "truncated".
/// `check` sees the dimensions before any data is read (to apply the in-memory budget and
/// to compare counts between files).
fn read_idx(
    path: &Path,
    kind: IdxKind,
    check: impl FnOnce(&[usize]) -> Result<(), DataError>,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let bad = |record: Option<usize>, detail: String| DataError::Malformed {
        path: path.to_owned(),
        record,
        detail,
    };
    let what = match kind {
        IdxKind::Images => "an IDX image file",
        IdxKind::Labels => "an IDX label file",
    };
    let (file, _) = fair_fs::open_regular(path, what)?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    let mut reader: Box<dyn Read> = if gz {
        // Every gzip member, as `zcat` and Python's `gzip` read them.
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let action = if gz { "decompress" } else { "read" };
    let header_len = 4 + 4 * kind.dims();
    let mut header = Vec::with_capacity(header_len);
    (&mut reader)
        .take(header_len as u64)
        .read_to_end(&mut header)
        .map_err(io(action, path))?;
    let magic = 0x0800 | kind.dims() as u32;
    if header.len() < header_len || be_u32(&header, 0) != magic {
        return Err(bad(None, kind.describe().into()));
    }
    let dims: Vec<usize> = (0..kind.dims())
        .map(|d| be_u32(&header, 4 + 4 * d) as usize)
        .collect();
    check(&dims)?;
    let declared = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&bytes| bytes <= MAX_IN_MEMORY_BYTES)
        .ok_or_else(|| {
            bad(
                None,
                format!(
                    "the header declares {}, more than the {MAX_IN_MEMORY_BYTES}-byte limit for \
                     data loaded into memory (use an ImageFolder for larger data)",
                    kind.declared(&dims)
                ),
            )
        })?;
    let data = fair_fs::read_at_most(reader, declared)
        .map_err(io(action, path))?
        .ok_or_else(|| {
            let verb = if gz { "decompresses to" } else { "holds" };
            bad(
                None,
                format!(
                    "{verb} more than the {declared} bytes its header declares ({})",
                    kind.declared(&dims)
                ),
            )
        })?;
    if (data.len() as u64) < declared {
        // The record the file ends in: an image of h·w bytes, or a label byte.
        let record = dims[1..].iter().product::<usize>().max(1);
        let complete = data.len() / record;
        let detail = match kind {
            IdxKind::Images => format!(
                "truncated: the header says {}, the file ends inside image {complete}",
                kind.declared(&dims)
            ),
            IdxKind::Labels => format!("truncated: the header says {}", kind.declared(&dims)),
        };
        return Err(bad(Some(complete), detail));
    }
    Ok((dims, data))
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Reads an IDX image file (magic 0x00000803, u8, N×H×W; `.gz` accepted) and its IDX label
/// file (magic 0x00000801): MNIST and Fashion-MNIST as distributed.
///
/// Both must be regular files (a FIFO or a device is refused by name, unopened). The
/// dataset the image header declares — its pixels and an 8-byte label per image — may hold
/// at most [`MAX_IN_MEMORY_BYTES`] in memory, checked from the header before anything else
/// is read. Each file is read no further than its header declares: a file (or a gzip
/// stream) longer than its header promises is an error, as is a shorter one. A header
/// declaring 0 images is an error naming the file (a split with no images would make every
/// accuracy on it undefined).
pub fn load_idx(images: &Path, labels: &Path, classes: usize) -> Result<Dataset, DataError> {
    let (dims, pixels) = read_idx(images, IdxKind::Images, |dims| {
        let (n, h, w) = (dims[0] as u64, dims[1] as u64, dims[2] as u64);
        if n == 0 {
            return Err(DataError::Malformed {
                path: images.to_owned(),
                record: None,
                detail: format!(
                    "holds no images (the header declares {}): a split must hold at least one",
                    IdxKind::Images.declared(dims)
                ),
            });
        }
        match in_memory_bytes(n, h * w) {
            Ok(_) => Ok(()),
            Err(why) => Err(DataError::Malformed {
                path: images.to_owned(),
                record: None,
                detail: format!(
                    "the header declares {}, {why}; use an ImageFolder for larger data",
                    IdxKind::Images.declared(dims)
                ),
            }),
        }
    })?;
    let (n, h, w) = (dims[0], dims[1], dims[2]);
    // The counts are compared from the label header, before its data is read.
    let (_, lab) = read_idx(labels, IdxKind::Labels, |ldims| {
        if ldims[0] == n {
            return Ok(());
        }
        Err(DataError::Malformed {
            path: labels.to_owned(),
            record: None,
            detail: format!(
                "{} labels for {n} images in '{}'",
                ldims[0],
                images.display()
            ),
        })
    })?;
    let labels_v: Vec<i64> = lab.iter().map(|&l| i64::from(l)).collect();
    if let Some(i) = labels_v.iter().position(|&l| l as usize >= classes) {
        return Err(DataError::Malformed {
            path: labels.to_owned(),
            record: Some(i),
            detail: format!(
                "label {} is outside {}",
                labels_v[i],
                valid_range(classes, "classes")
            ),
        });
    }
    let name = images
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    Dataset::new(
        name,
        [1, h, w],
        pixels,
        labels_v,
        (0..classes).map(|c| c.to_string()).collect(),
    )
}

/// Which CIFAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cifar {
    /// CIFAR-10: records of 1 label byte + 3,072 pixel bytes.
    Ten,
    /// CIFAR-100: records of a coarse and a fine label byte + 3,072 pixel bytes (fine labels
    /// are used).
    Hundred,
}

/// Reads CIFAR binary batches from the extracted directory (`cifar-10-batches-bin` or
/// `cifar-100-binary`): `train` selects `data_batch_1..5.bin` / `train.bin`, else
/// `test_batch.bin` / `test.bin`. Class names come from `batches.meta.txt` /
/// `fine_label_names.txt` when present.
///
/// Every file must be a regular file (a FIFO or a device is refused by name, unopened). The
/// records of a split's batches, once loaded (3,072 pixel bytes and an 8-byte label each),
/// hold at most [`MAX_IN_MEMORY_BYTES`] together, checked from the files' sizes before any
/// is read; a class-names file holds at most 1 MiB. A split whose batches hold no records
/// (an empty `test_batch.bin`) is an error naming the directory and the files.
pub fn load_cifar(dir: &Path, which: Cifar, train: bool) -> Result<Dataset, DataError> {
    let (files, label_bytes, classes, names_file): (Vec<PathBuf>, usize, usize, &str) = match which
    {
        Cifar::Ten => (
            if train {
                (1..=5)
                    .map(|i| dir.join(format!("data_batch_{i}.bin")))
                    .collect()
            } else {
                vec![dir.join("test_batch.bin")]
            },
            1,
            10,
            "batches.meta.txt",
        ),
        Cifar::Hundred => (
            vec![dir.join(if train { "train.bin" } else { "test.bin" })],
            2,
            100,
            "fine_label_names.txt",
        ),
    };
    const PIXELS: usize = 3072;
    let record = label_bytes + PIXELS;
    let truncated = |f: &Path, len: u64| DataError::Malformed {
        path: f.to_owned(),
        record: Some((len / record as u64) as usize),
        detail: format!("truncated: {len} bytes is not a whole number of {record}-byte records"),
    };
    // The records the files hold, from their sizes, within the budget before any is read.
    let mut sizes = Vec::with_capacity(files.len());
    let mut records = 0u64;
    for f in &files {
        let size = fair_fs::check_regular(f, "a CIFAR batch")?.len();
        if size % record as u64 != 0 {
            return Err(truncated(f, size));
        }
        records += size / record as u64;
        if let Err(why) = in_memory_bytes(records, PIXELS as u64) {
            return Err(DataError::Malformed {
                path: f.clone(),
                record: None,
                detail: format!(
                    "with this batch the split holds {records} records of 3×32×32, {why}; use \
                     an ImageFolder for larger data"
                ),
            });
        }
        sizes.push(size);
    }
    if records == 0 {
        let names: Vec<String> = files
            .iter()
            .map(|f| {
                f.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        return Err(DataError::Malformed {
            path: dir.to_owned(),
            record: None,
            detail: format!(
                "the {} split holds no images ({} {} empty): a split must hold at least one",
                if train { "training" } else { "test" },
                names.join(", "),
                if names.len() == 1 { "is" } else { "are" }
            ),
        });
    }
    let mut pixels = Vec::with_capacity(records as usize * PIXELS);
    let mut labels = Vec::with_capacity(records as usize);
    for (f, &size) in files.iter().zip(&sizes) {
        // No more than the size the budget was checked for (the file may have changed).
        let bytes = fair_fs::read_bounded(f, size, "a CIFAR batch")?;
        if bytes.len() % record != 0 {
            return Err(truncated(f, bytes.len() as u64));
        }
        for (i, r) in bytes.chunks_exact(record).enumerate() {
            let label = r[label_bytes - 1] as usize;
            if label >= classes {
                return Err(DataError::Malformed {
                    path: f.clone(),
                    record: Some(i),
                    detail: format!(
                        "label {label} is outside {}",
                        valid_range(classes, "classes")
                    ),
                });
            }
            labels.push(label as i64);
            pixels.extend_from_slice(&r[label_bytes..]);
        }
    }
    let names_path = dir.join(names_file);
    // A missing names file means numbered classes; one that is there must be readable.
    let names: Vec<String> = match fair_fs::read_string_bounded(
        &names_path,
        MAX_CLASS_NAMES_BYTES,
        "a class-names file",
    )
    .map_err(DataError::from)
    {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(e),
    };
    let names = if names.len() == classes {
        names
    } else {
        (0..classes).map(|c| c.to_string()).collect()
    };
    let name = format!("cifar{}/{}", classes, if train { "train" } else { "test" });
    Dataset::new(name, [3, 32, 32], pixels, labels, names)
}

/// Reads an ImageFolder tree into memory: one sub-directory per class (sorted by name), PNG
/// or JPEG images inside (found and checked as [`ImageFolder`] finds them: `options` says
/// whether directory links are followed and how many pixels an image may have), each
/// converted to `channels` (1 = grey, 3 = RGB) and resized as a whole to `height × width`
/// (bilinear). For small trees; runs stream large ones with [`ImageFolder`] (torchvision's
/// resize + centre crop, memory independent of size).
///
/// `height × width` may not exceed `options.max_pixels`, and the loaded dataset (all images'
/// pixels and an 8-byte label each) at most [`MAX_IN_MEMORY_BYTES`]; both are checked before
/// any image is decoded. Entries the index skipped (links that lead out of their class) are
/// in [`ImageFolder::notes`]; this function logs them as warnings.
pub fn load_image_folder(
    root: &Path,
    channels: usize,
    height: usize,
    width: usize,
    options: &FolderOptions,
) -> Result<Dataset, DataError> {
    if channels != 1 && channels != 3 {
        return Err(DataError::Invalid(format!(
            "ImageFolder: channels must be 1 or 3, found {channels}"
        )));
    }
    let pixels_each = (height as u64).checked_mul(width as u64);
    let sides_fit = u32::try_from(height).is_ok() && u32::try_from(width).is_ok();
    if height == 0 || width == 0 || !sides_fit || pixels_each.is_none_or(|p| p > options.max_pixels)
    {
        return Err(DataError::Invalid(format!(
            "ImageFolder: the image size {height}×{width} must be at least 1×1 and at most \
             {} pixels (max_pixels)",
            options.max_pixels
        )));
    }
    let folder = ImageFolder::open_with(root, None, options)?;
    for note in folder.notes() {
        tracing::warn!("{note}");
    }
    // Saturated only far beyond the budget (`max_pixels` set near u64::MAX).
    let image_bytes = pixels_each
        .unwrap_or(u64::MAX)
        .saturating_mul(channels as u64);
    in_memory_bytes(folder.len() as u64, image_bytes).map_err(|why| {
        DataError::Invalid(format!(
            "ImageFolder '{}': {} images of {channels}×{height}×{width}, {why}; stream it with \
             ImageFolder instead",
            root.display(),
            folder.len()
        ))
    })?;
    let mut pixels = Vec::with_capacity(folder.len() * image_bytes as usize);
    for i in 0..folder.len() {
        let img = decode_image(&folder.path(i)?, options.max_pixels)?;
        let img = img.resize_exact(
            width as u32,
            height as u32,
            image::imageops::FilterType::Triangle,
        );
        if channels == 1 {
            pixels.extend_from_slice(img.to_luma8().as_raw());
        } else {
            // HWC → CHW.
            let rgb = img.to_rgb8();
            let raw = rgb.as_raw();
            for ch in 0..3 {
                pixels.extend(raw.iter().skip(ch).step_by(3));
            }
        }
    }
    Dataset::new(
        root.display().to_string(),
        [channels, height, width],
        pixels,
        folder.labels().to_vec(),
        folder.classes().to_vec(),
    )
}
