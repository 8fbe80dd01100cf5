//! Standard on-disk formats a user brings: IDX (MNIST-style), CIFAR-10/100 binary batches and
//! ImageFolder trees.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dataset::Dataset;
use crate::error::{DataError, io};

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(io("read", path))?;
    if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(io("decompress", path))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Reads an IDX image file (magic 0x00000803, u8, N×H×W; `.gz` accepted) and its IDX label
/// file (magic 0x00000801): MNIST and Fashion-MNIST as distributed.
pub fn load_idx(images: &Path, labels: &Path, classes: usize) -> Result<Dataset, DataError> {
    let bad = |path: &Path, record: Option<usize>, detail: String| DataError::Malformed {
        path: path.to_owned(),
        record,
        detail,
    };
    let img = read_maybe_gz(images)?;
    if img.len() < 16 || be_u32(&img, 0) != 0x0803 {
        return Err(bad(
            images,
            None,
            "not an IDX image file (expected magic 0x00000803: unsigned bytes, 3 dimensions)"
                .into(),
        ));
    }
    let (n, h, w) = (
        be_u32(&img, 4) as usize,
        be_u32(&img, 8) as usize,
        be_u32(&img, 12) as usize,
    );
    let want = 16 + n * h * w;
    if img.len() < want {
        let complete = (img.len() - 16) / (h * w).max(1);
        return Err(bad(
            images,
            Some(complete),
            format!(
                "truncated: the header says {n} images of {h}×{w}, the file ends inside image {complete}"
            ),
        ));
    }
    let lab = read_maybe_gz(labels)?;
    if lab.len() < 8 || be_u32(&lab, 0) != 0x0801 {
        return Err(bad(
            labels,
            None,
            "not an IDX label file (expected magic 0x00000801)".into(),
        ));
    }
    let m = be_u32(&lab, 4) as usize;
    if m != n {
        return Err(bad(
            labels,
            None,
            format!("{m} labels for {n} images in '{}'", images.display()),
        ));
    }
    if lab.len() < 8 + n {
        return Err(bad(
            labels,
            Some(lab.len() - 8),
            format!("truncated: the header says {n} labels"),
        ));
    }
    let labels_v: Vec<i64> = lab[8..8 + n].iter().map(|&l| l as i64).collect();
    if let Some(i) = labels_v.iter().position(|&l| l as usize >= classes) {
        return Err(bad(
            labels,
            Some(i),
            format!("label {} is outside 0..{classes}", labels_v[i]),
        ));
    }
    let name = images
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    Dataset::new(
        name,
        [1, h, w],
        img[16..want].to_vec(),
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
    let record = label_bytes + 3072;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).map_err(io("read", f))?;
        if bytes.len() % record != 0 {
            return Err(DataError::Malformed {
                path: f.clone(),
                record: Some(bytes.len() / record),
                detail: format!(
                    "truncated: {} bytes is not a whole number of {record}-byte records",
                    bytes.len()
                ),
            });
        }
        for (i, r) in bytes.chunks_exact(record).enumerate() {
            let label = r[label_bytes - 1] as usize;
            if label >= classes {
                return Err(DataError::Malformed {
                    path: f.clone(),
                    record: Some(i),
                    detail: format!("label {label} is outside 0..{classes}"),
                });
            }
            labels.push(label as i64);
            pixels.extend_from_slice(&r[label_bytes..]);
        }
    }
    let names: Vec<String> = std::fs::read_to_string(dir.join(names_file))
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let names = if names.len() == classes {
        names
    } else {
        (0..classes).map(|c| c.to_string()).collect()
    };
    let name = format!("cifar{}/{}", classes, if train { "train" } else { "test" });
    Dataset::new(name, [3, 32, 32], pixels, labels, names)
}

/// Reads an ImageFolder tree into memory: one sub-directory per class (sorted by name), PNG
/// or JPEG images inside, each converted to `channels` (1 = grey, 3 = RGB) and resized as a
/// whole to `height × width` (bilinear). For small trees; runs stream large ones with
/// [`crate::ImageFolder`] (torchvision's resize + centre crop, memory independent of size).
pub fn load_image_folder(
    root: &Path,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Dataset, DataError> {
    if channels != 1 && channels != 3 {
        return Err(DataError::Invalid(format!(
            "ImageFolder: channels must be 1 or 3, found {channels}"
        )));
    }
    let mut classes: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(io("read", root))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(DataError::Invalid(format!(
            "ImageFolder '{}' has no class sub-directories (expected root/<class>/<image>.png)",
            root.display()
        )));
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (c, dir) in classes.iter().enumerate() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io("read", dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")
                })
            })
            .collect();
        files.sort();
        for f in files {
            let img = image::open(&f).map_err(|e| DataError::Malformed {
                path: f.clone(),
                record: None,
                detail: format!("cannot decode the image: {e}"),
            })?;
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
            labels.push(c as i64);
        }
    }
    let names = classes
        .iter()
        .map(|d| {
            d.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    Dataset::new(
        root.display().to_string(),
        [channels, height, width],
        pixels,
        labels,
        names,
    )
}
