//! Test helpers shared by fair-pruner's crates (a dev-dependency only).
//!
//! - [`reference_python`]: the Python with the independent references (PyTorch,
//!   torchvision, SciPy, network-pruner, Torch-Pruning) that `cargo xtask setup` provisions.
//! - [`randomise_batchnorm`]: non-trivial BatchNorm statistics, so eval-mode comparisons are
//!   not near-identity maps.
//! - [`max_abs_diff`]: the largest element-wise difference of two tensors of equal shape.
//! - [`noise_dataset`]: a seeded in-memory dataset of uniform-noise images, two classes.
//!
//! ```
//! use tch::Tensor;
//! let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
//! assert_eq!(fair_testkit::max_abs_diff(&a, &(&a + 0.25)), 0.25);
//! // A cross-check test starts with the reference Python (or skips knowingly).
//! let Some(python) = fair_testkit::reference_python("the torchvision cross-check") else { return };
//! assert!(python.is_file(), "no Python at {}", python.display());
//! ```

use std::path::PathBuf;

use fair_runtime::Model;
use tch::{Device, Kind, Tensor};

/// The reference Python from `FAIR_PRUNER_PYTHON` (set by `cargo xtask setup`). Without it
/// the calling test fails with instructions — unless `FAIR_PRUNER_SKIP_PYTHON=1` is set
/// explicitly, in which case it prints that `what` is skipped and returns `None`.
pub fn reference_python(what: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FAIR_PRUNER_PYTHON") {
        return Some(PathBuf::from(p));
    }
    if std::env::var_os("FAIR_PRUNER_SKIP_PYTHON").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: FAIR_PRUNER_SKIP_PYTHON=1, {what} does not run");
        return None;
    }
    panic!(
        "FAIR_PRUNER_PYTHON is not set, so {what} cannot run: run `cargo xtask setup` (or `cargo xtask test`), \
         which provisions Python with torch 2.11, torchvision 0.26, SciPy, network-pruner 2.16 and \
         torch-pruning 1.6.1; set FAIR_PRUNER_SKIP_PYTHON=1 to skip it knowingly"
    );
}

/// Draws BatchNorm running means from N(0, 0.1²) and running variances from U(0.5, 1.5),
/// seeded (libtorch's global generator), in place.
pub fn randomise_batchnorm(model: &Model, seed: i64) {
    tch::manual_seed(seed);
    tch::no_grad(|| {
        for (name, mut t) in model.named_tensors() {
            if name.ends_with("running_mean") {
                t.copy_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.1));
            } else if name.ends_with("running_var") {
                t.copy_(&(Tensor::rand(t.size(), (Kind::Float, Device::Cpu)) + 0.5));
            }
        }
    });
}

/// The largest |a − b| over all elements; panics if the shapes differ.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a - b).abs().max().double_value(&[])
}

/// A dataset named `toy` of `n` images of shape `input` (channels, height, width) whose pixels
/// are uniform random bytes drawn from `seed`, labelled `a`, `b`, `a`, … (classes 0 and 1
/// alternate), for steps that only need inputs: recalibration, reconstruction.
pub fn noise_dataset(input: [usize; 3], n: usize, seed: u64) -> fair_data::Dataset {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let pixels = (0..n * input.iter().product::<usize>())
        .map(|_| rng.r#gen::<u8>())
        .collect();
    let labels = (0..n as i64).map(|i| i % 2).collect();
    fair_data::Dataset::new("toy", input, pixels, labels, vec!["a".into(), "b".into()])
        .expect("a consistent noise dataset")
}

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Writes a two-class toy dataset as IDX files into `dir`: 8×8 grey images whose left
/// (class 0) or right (class 1) half is bright, 64 training images
/// (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`) and 32 test images (`t10k-…`).
pub fn write_idx_toy(dir: &std::path::Path) {
    let write = |name: &str, n: usize| {
        let mut img = vec![0u8, 0, 8, 3];
        for d in [n as u32, 8, 8] {
            img.extend(d.to_be_bytes());
        }
        let mut lab = vec![0u8, 0, 8, 1];
        lab.extend((n as u32).to_be_bytes());
        for i in 0..n {
            let c = (i % 2) as u8;
            for _y in 0..8 {
                for x in 0..8 {
                    img.push(if (x < 4) == (c == 0) { 200 } else { 20 } + (i % 7) as u8);
                }
            }
            lab.push(c);
        }
        std::fs::write(dir.join(format!("{name}-images-idx3-ubyte")), img).unwrap();
        std::fs::write(dir.join(format!("{name}-labels-idx1-ubyte")), lab).unwrap();
    };
    write("train", 64);
    write("t10k", 32);
}

/// The process's peak resident memory in bytes (Linux `VmHWM`), if known. Memory tests that
/// read it run alone in their test binary, so the peak is theirs.
pub fn peak_rss() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// A memory field of `/proc/self/status` in bytes, e.g. `"VmRSS:"` (the process's resident
/// memory now) or `"VmHWM:"` (its peak), if known (Linux).
pub fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
