//! The in-memory dataset: u8 images, labels and class names.

use std::collections::BTreeMap;
use std::path::Path;

use fair_safetensors::{Dtype, SafetensorsError, SafetensorsFile, TensorRef};
use sha2::{Digest, Sha256};

use crate::error::{DataError, valid_range};
use crate::formats::MAX_IN_MEMORY_BYTES;

/// The metadata key of the content digest in a saved dataset.
const DIGEST_KEY: &str = "sha256";

/// A safetensors error as a dataset error: a malformed file is a [`DataError::Malformed`]
/// ("not a dataset file: ..."), one that cannot be written a [`DataError::Invalid`], and
/// an input/output error stays one (so a missing file reads as not found).
fn dataset_error(e: SafetensorsError) -> DataError {
    match e {
        SafetensorsError::Malformed { path, message } => DataError::Malformed {
            path,
            record: None,
            detail: format!("not a dataset file: {message}"),
        },
        SafetensorsError::Io {
            action,
            path,
            source,
        } => DataError::Io {
            action,
            path,
            source,
        },
        SafetensorsError::Fs(e) => DataError::Fs(e),
        other => DataError::Invalid(other.to_string()),
    }
}

/// The bytes one label takes in a loaded [`Dataset`] (an `i64`).
const LABEL_BYTES: u128 = std::mem::size_of::<i64>() as u128;

/// The bytes `records` images of `pixels_each` bytes take in memory once loaded as a
/// [`Dataset`]: their pixels and one `i64` label each. An error, to follow a description of
/// the records ("the header declares 3 images of 28×28"), when that is more than
/// [`MAX_IN_MEMORY_BYTES`]; checked before anything of that size is allocated.
pub(crate) fn in_memory_bytes(records: u64, pixels_each: u64) -> Result<u64, String> {
    let total = u128::from(records) * (u128::from(pixels_each) + LABEL_BYTES);
    u64::try_from(total)
        .ok()
        .filter(|&t| t <= MAX_IN_MEMORY_BYTES)
        .ok_or_else(|| {
            format!(
                "which take {total} bytes in memory once loaded ({pixels_each} bytes of pixels \
                 and {LABEL_BYTES} of label per image), more than the \
                 {MAX_IN_MEMORY_BYTES}-byte ({} GiB) budget for a dataset held in memory \
                 (MAX_IN_MEMORY_BYTES)",
                MAX_IN_MEMORY_BYTES >> 30
            )
        })
}

/// Images as bytes (`[N, C, H, W]`, 0–255), one label per image, and the class names.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Name, e.g. `fashion-mnist/train`.
    pub name: String,
    /// Per-image shape `[C, H, W]`.
    pub shape: [usize; 3],
    /// All pixels, image after image.
    pub pixels: Vec<u8>,
    /// Class id of every image.
    pub labels: Vec<i64>,
    /// Class names; labels index into this.
    pub classes: Vec<String>,
}

impl Dataset {
    /// Builds a dataset, checking sizes and label range, and that pixels and labels (8 bytes
    /// each) hold at most [`MAX_IN_MEMORY_BYTES`] together.
    pub fn new(
        name: impl Into<String>,
        shape: [usize; 3],
        pixels: Vec<u8>,
        labels: Vec<i64>,
        classes: Vec<String>,
    ) -> Result<Self, DataError> {
        let name = name.into();
        let per = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&p| p > 0);
        let expected = per.and_then(|p| p.checked_mul(labels.len()));
        if expected != Some(pixels.len()) {
            return Err(DataError::Invalid(format!(
                "dataset '{name}': {} pixels for {} images of shape {shape:?} (expected {})",
                pixels.len(),
                labels.len(),
                expected.map_or_else(
                    || "a shape of at least 1×1×1 that fits in memory".into(),
                    |e| e.to_string()
                )
            )));
        }
        // `per` is known (the sizes matched); the budget before the labels are scanned.
        let per = per.unwrap_or(usize::MAX) as u64;
        if let Err(why) = in_memory_bytes(labels.len() as u64, per) {
            return Err(DataError::Invalid(format!(
                "dataset '{name}': {} images of shape {shape:?}, {why}",
                labels.len()
            )));
        }
        if let Some(i) = labels
            .iter()
            .position(|&l| l < 0 || l as usize >= classes.len())
        {
            return Err(DataError::Invalid(format!(
                "dataset '{name}': label {} of image {i} is outside {}",
                labels[i],
                valid_range(classes.len(), "classes")
            )));
        }
        Ok(Dataset {
            name,
            shape,
            pixels,
            labels,
            classes,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let per = self.shape.iter().product::<usize>();
        &self.pixels[i * per..(i + 1) * per]
    }

    /// Image indices per class id.
    pub fn class_indices(&self) -> BTreeMap<i64, Vec<usize>> {
        let mut m: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, &l) in self.labels.iter().enumerate() {
            m.entry(l).or_default().push(i);
        }
        m
    }

    /// The images at `indices`, as a new dataset.
    ///
    /// # Panics
    ///
    /// If an index is not an image of this dataset (indices come from the program, e.g. a
    /// split; [`crate::ImageFolder::subset`] is the checked form for a folder).
    pub fn subset(&self, name: impl Into<String>, indices: &[usize]) -> Dataset {
        let per = self.shape.iter().product::<usize>();
        let mut pixels = Vec::with_capacity(indices.len() * per);
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        Dataset {
            name: name.into(),
            shape: self.shape,
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes.clone(),
        }
    }

    /// A deterministic stratified split: within each class, a permutation drawn from `seed`;
    /// the first `train(n)` images of the class go to the training split, the rest to the
    /// test split. Both keep the original image order.
    pub fn split_stratified(
        &self,
        seed: u64,
        train: impl Fn(usize) -> usize,
    ) -> (Dataset, Dataset) {
        let (tr, te) = crate::source::stratified_indices(&self.labels, seed, train);
        let base = self.name.clone();
        (
            self.subset(format!("{base}/train"), &tr),
            self.subset(format!("{base}/test"), &te),
        )
    }

    /// The SHA-256 digest (hex) of the dataset's content: name, shape, class names, labels
    /// and pixels, in the framed byte layout below. [`Dataset::save`] records it in the
    /// file and [`Dataset::load`] checks it, so any change to what a file would load as —
    /// one flipped pixel, a relabelled image, a renamed class — changes the digest.
    ///
    /// Layout hashed (integers little-endian `u64`, labels `i64`): the tag
    /// `fair-data dataset v1\n`; the name's length and UTF-8 bytes; the three shape
    /// numbers; the class count, then each class name's length and bytes; the label count
    /// and the labels; the pixel count and the pixels.
    pub fn sha256(&self) -> String {
        let mut h = Sha256::new();
        let len = |h: &mut Sha256, n: usize| h.update((n as u64).to_le_bytes());
        h.update(b"fair-data dataset v1\n");
        len(&mut h, self.name.len());
        h.update(self.name.as_bytes());
        for &d in &self.shape {
            len(&mut h, d);
        }
        len(&mut h, self.classes.len());
        for c in &self.classes {
            len(&mut h, c.len());
            h.update(c.as_bytes());
        }
        len(&mut h, self.labels.len());
        for l in &self.labels {
            h.update(l.to_le_bytes());
        }
        len(&mut h, self.pixels.len());
        h.update(&self.pixels);
        hex::encode(h.finalize())
    }

    /// Writes the dataset as one safetensors file (`pixels` u8 `[N, C, H, W]`, `labels` i64,
    /// and in the metadata the name, the class names and the content digest
    /// [`Dataset::sha256`] under the key `sha256`, besides the `format = "pt"` every file
    /// gets from [`fair_safetensors::to_bytes`]), atomically ([`fair_fs::write_atomic`]):
    /// written under a fresh temporary name (created exclusively) next to `path`, then
    /// renamed into place, so concurrent writers and readers of `path` only ever see a
    /// complete file; on failure the temporary file is removed. A symbolic link, a directory
    /// or a special file at `path` is never replaced (an error names it).
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        self.save_with_digest(path, &self.sha256())
    }

    /// [`Dataset::save`] with the digest already computed.
    pub(crate) fn save_with_digest(&self, path: &Path, sha256: &str) -> Result<(), DataError> {
        let n = self.len() as u64;
        let [c, h, w] = self.shape.map(|d| d as u64);
        let label_bytes: Vec<u8> = self.labels.iter().flat_map(|l| l.to_le_bytes()).collect();
        let tensors = [
            TensorRef {
                name: "pixels",
                dtype: Dtype::U8,
                shape: &[n, c, h, w],
                data: &self.pixels,
            },
            TensorRef {
                name: "labels",
                dtype: Dtype::I64,
                shape: &[n],
                data: &label_bytes,
            },
        ];
        let meta = BTreeMap::from([
            ("name".to_owned(), self.name.clone()),
            (
                "classes".to_owned(),
                serde_json::to_string(&self.classes).expect("strings serialise"),
            ),
            (DIGEST_KEY.to_owned(), sha256.to_owned()),
        ]);
        let bytes = fair_safetensors::to_bytes(path, &tensors, &meta).map_err(dataset_error)?;
        // `fair_fs::write_atomic` itself refuses a directory or special file at `path`.
        Ok(fair_fs::write_atomic(path, &bytes)?)
    }

    /// Reads a file written by [`Dataset::save`], checking the content digest recorded in
    /// it: a mismatch (tampered or corrupted file) is a [`DataError::Digest`]. Files without
    /// a recorded digest (written before digests were recorded) load unchecked.
    ///
    /// The file must be a regular file, its header well formed (checked by
    /// [`fair_safetensors::SafetensorsFile::open`] before any data is read), and the dataset
    /// its header declares at most [`MAX_IN_MEMORY_BYTES`] in memory (pixels and 8-byte
    /// labels, one label per image), checked before any data is read; the pixels and labels
    /// are then read straight into the dataset.
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let (dataset, recorded) = Self::read(path)?;
        if let Some(recorded) = recorded {
            let found = dataset.sha256();
            if recorded != found {
                return Err(DataError::Digest {
                    path: path.to_owned(),
                    recorded: Some(recorded),
                    found,
                });
            }
        }
        Ok(dataset)
    }

    /// Like [`Dataset::load`], but a missing digest is an error too; returns the (checked)
    /// digest with the dataset.
    pub(crate) fn load_verified(path: &Path) -> Result<(Self, String), DataError> {
        let (dataset, recorded) = Self::read(path)?;
        let found = dataset.sha256();
        if recorded.as_deref() != Some(found.as_str()) {
            return Err(DataError::Digest {
                path: path.to_owned(),
                recorded,
                found,
            });
        }
        Ok((dataset, found))
    }

    /// Reads a dataset file; returns the dataset and the digest recorded in it, unchecked.
    fn read(path: &Path) -> Result<(Self, Option<String>), DataError> {
        let bad = |detail: String| DataError::Malformed {
            path: path.to_owned(),
            record: None,
            detail,
        };
        // The header alone first: everything below is checked before any data is read.
        let mut file = SafetensorsFile::open(path).map_err(dataset_error)?;
        let info = file.header().metadata().clone();
        let classes: Vec<String> = info
            .get("classes")
            .and_then(|c| serde_json::from_str(c).ok())
            .ok_or_else(|| bad("no class names in the metadata".into()))?;
        let declared = |name: &str| {
            file.header()
                .tensor(name)
                .cloned()
                .ok_or_else(|| bad(format!("not a dataset file: it has no tensor '{name}'")))
        };
        let (pixels, labels) = (declared("pixels")?, declared("labels")?);
        let s = &pixels.shape;
        if pixels.dtype != Dtype::U8 || s.len() != 4 || labels.dtype != Dtype::I64 {
            return Err(bad(
                "expected pixels u8 [N, C, H, W] and labels i64 [N]".into()
            ));
        }
        // The declared size, before anything is read from the file.
        let per = s[1..].iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        if let Some(Err(why)) = per.map(|per| in_memory_bytes(s[0], per)) {
            return Err(bad(format!(
                "the header declares {} images of shape {:?}, {why}",
                s[0],
                &s[1..]
            )));
        }
        if labels.numel() != s[0] {
            return Err(bad(format!(
                "the header declares {} labels for {} images",
                labels.numel(),
                s[0]
            )));
        }
        let dims = [s[1], s[2], s[3]].map(|d| usize::try_from(d).unwrap_or(usize::MAX));
        let read = |file: &mut SafetensorsFile, name: &str| {
            file.read_tensor(name)
                .map_err(dataset_error)?
                .ok_or_else(|| bad(format!("not a dataset file: it has no tensor '{name}'")))
        };
        let label_bytes = read(&mut file, "labels")?;
        let labels: Vec<i64> = label_bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        drop(label_bytes);
        let dataset = Dataset::new(
            info.get("name").cloned().unwrap_or_default(),
            dims,
            read(&mut file, "pixels")?,
            labels,
            classes,
        )?;
        Ok((dataset, info.get(DIGEST_KEY).cloned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_memory_budget_counts_pixels_and_labels() {
        // 1×1 images: 1 pixel byte + 8 label bytes each.
        let fit = MAX_IN_MEMORY_BYTES / 9;
        assert_eq!(in_memory_bytes(fit, 1), Ok(fit * 9));
        let e = in_memory_bytes(fit + 1, 1).unwrap_err();
        assert!(
            e.contains(&format!("which take {} bytes", (fit + 1) * 9))
                && e.contains("4294967296-byte (4 GiB) budget"),
            "{e}"
        );
        // Labels alone: 2^29 records fill the budget exactly, one more does not fit.
        assert_eq!(in_memory_bytes(1 << 29, 0), Ok(MAX_IN_MEMORY_BYTES));
        assert!(in_memory_bytes((1 << 29) + 1, 0).is_err());
        // The largest IDX header: no overflow, an error.
        assert!(in_memory_bytes(u32::MAX.into(), u64::MAX).is_err());
        assert_eq!(in_memory_bytes(0, u64::MAX - 8), Ok(0));
    }

    /// A dataset file whose header does not describe a dataset is refused from the header,
    /// in words: the numbers come from the tensors written here.
    #[test]
    fn a_file_that_is_not_a_dataset_is_refused_from_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.safetensors");
        let classes = BTreeMap::from([("classes".to_owned(), r#"["a"]"#.to_owned())]);
        let pixels = [0u8; 3 * 4];
        let labels = [0u8; 2 * 8];
        let write = |tensors: &[TensorRef<'_>]| {
            std::fs::write(
                &p,
                fair_safetensors::to_bytes(&p, tensors, &classes).unwrap(),
            )
            .unwrap();
        };
        let px = TensorRef {
            name: "pixels",
            dtype: Dtype::U8,
            shape: &[3, 1, 2, 2],
            data: &pixels,
        };
        let lb = TensorRef {
            name: "labels",
            dtype: Dtype::I64,
            shape: &[2],
            data: &labels,
        };
        write(&[px, lb]);
        let e = Dataset::load(&p).unwrap_err().to_string();
        assert!(
            e.ends_with("the header declares 2 labels for 3 images"),
            "{e}"
        );
        write(&[px]);
        let e = Dataset::load(&p).unwrap_err().to_string();
        assert!(
            e.ends_with("not a dataset file: it has no tensor 'labels'"),
            "{e}"
        );
        std::fs::write(&p, b"\x02\0\0\0\0\0\0\0{}").unwrap();
        let e = Dataset::load(&p).unwrap_err();
        assert!(matches!(e, DataError::Malformed { .. }), "{e}");
        assert!(
            e.to_string().ends_with("no class names in the metadata"),
            "{e}"
        );
        std::fs::write(&p, b"\x02\0\0\0\0\0\0\0{]").unwrap();
        let e = Dataset::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("not a dataset file: the header is not valid JSON")
                && e.contains("at byte 1 of the header"),
            "{e}"
        );
    }
}
