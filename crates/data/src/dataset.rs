//! The in-memory dataset: u8 images, labels and class names.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use sha2::{Digest, Sha256};

use crate::error::{DataError, valid_range};
use crate::formats::MAX_IN_MEMORY_BYTES;

/// The metadata key of the content digest in a saved dataset.
const DIGEST_KEY: &str = "sha256";

/// Room for the header of a saved dataset (tensor table, name, class names): safetensors'
/// own limit for a header.
const MAX_DATASET_HEADER_BYTES: u64 = 100_000_000;

/// The largest file [`Dataset::load`] reads: its pixels and labels are stored as they are
/// held in memory (u8 pixels, i64 labels), so at most [`MAX_IN_MEMORY_BYTES`], plus the
/// header's length (8 bytes) and the header (Fashion-MNIST's cache is 55 MB).
const MAX_DATASET_FILE_BYTES: u64 = MAX_IN_MEMORY_BYTES + 8 + MAX_DATASET_HEADER_BYTES;

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
    /// [`Dataset::sha256`] under the key `sha256`), atomically ([`fair_fs::write_atomic`]):
    /// written under a fresh temporary name (created exclusively) next to `path`, then
    /// renamed into place, so concurrent writers and readers of `path` only ever see a
    /// complete file; on failure the temporary file is removed. A symbolic link, a directory
    /// or a special file at `path` is never replaced (an error names it).
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        self.save_with_digest(path, &self.sha256())
    }

    /// [`Dataset::save`] with the digest already computed.
    pub(crate) fn save_with_digest(&self, path: &Path, sha256: &str) -> Result<(), DataError> {
        let n = self.len();
        let [c, h, w] = self.shape;
        let label_bytes: Vec<u8> = self.labels.iter().flat_map(|l| l.to_le_bytes()).collect();
        let views = [
            (
                "pixels",
                TensorView::new(Dtype::U8, vec![n, c, h, w], &self.pixels)
                    .map_err(|e| DataError::Invalid(format!("{e:?}")))?,
            ),
            (
                "labels",
                TensorView::new(Dtype::I64, vec![n], &label_bytes)
                    .map_err(|e| DataError::Invalid(format!("{e:?}")))?,
            ),
        ];
        let meta = std::collections::HashMap::from([
            ("name".to_owned(), self.name.clone()),
            (
                "classes".to_owned(),
                serde_json::to_string(&self.classes).expect("strings serialise"),
            ),
            (DIGEST_KEY.to_owned(), sha256.to_owned()),
        ]);
        let bytes = safetensors::tensor::serialize(views, &Some(meta))
            .map_err(|e| DataError::Invalid(format!("{e:?}")))?;
        Ok(fair_fs::write_atomic(path, &bytes)?)
    }

    /// Reads a file written by [`Dataset::save`], checking the content digest recorded in
    /// it: a mismatch (tampered or corrupted file) is a [`DataError::Digest`]. Files without
    /// a recorded digest (written before digests were recorded) load unchecked.
    ///
    /// The file must be a regular file of at most [`MAX_IN_MEMORY_BYTES`] plus 100 MB for its
    /// header, and the dataset its header declares at most [`MAX_IN_MEMORY_BYTES`] in memory
    /// (pixels and 8-byte labels), checked before the data is copied out of the file; while
    /// loading, the file's bytes are held next to the dataset.
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
        let bytes = fair_fs::read_bounded(path, MAX_DATASET_FILE_BYTES, "a dataset file")?;
        let bad = |detail: String| DataError::Malformed {
            path: path.to_owned(),
            record: None,
            detail,
        };
        let (_, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a dataset file: {e:?}")))?;
        let file = SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a dataset file: {e:?}")))?;
        let info = meta.metadata().clone().unwrap_or_default();
        let classes: Vec<String> = info
            .get("classes")
            .and_then(|c| serde_json::from_str(c).ok())
            .ok_or_else(|| bad("no class names in the metadata".into()))?;
        let pixels = file.tensor("pixels").map_err(|e| bad(format!("{e:?}")))?;
        let labels = file.tensor("labels").map_err(|e| bad(format!("{e:?}")))?;
        let s = pixels.shape();
        if pixels.dtype() != Dtype::U8 || s.len() != 4 || labels.dtype() != Dtype::I64 {
            return Err(bad(
                "expected pixels u8 [N, C, H, W] and labels i64 [N]".into()
            ));
        }
        // The declared size, before anything is copied out of the file.
        let per = s[1..]
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
        if let Some(Err(why)) = per.map(|per| in_memory_bytes(s[0] as u64, per)) {
            return Err(bad(format!(
                "the header declares {} images of shape {:?}, {why}",
                s[0],
                &s[1..]
            )));
        }
        let labels: Vec<i64> = labels
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        let dataset = Dataset::new(
            info.get("name").cloned().unwrap_or_default(),
            [s[1], s[2], s[3]],
            pixels.data().to_vec(),
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
}
