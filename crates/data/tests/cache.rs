//! The verified dataset cache ([`load_cached`], [`Dataset::save`]/[`Dataset::load`]) on small
//! synthetic datasets: digests recorded and checked, tampered, digest-less and unloadable
//! caches rebuilt with a note, atomic writes under unique temporary names, concurrent first
//! builds. No network needed; `builtin.rs` runs the same paths on the npm datasets.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};

use fair_data::{DataError, Dataset, load_cached};

/// A small dataset whose content depends on `seed`.
fn toy(seed: u8) -> Dataset {
    let n = 30;
    let pixels = (0..n * 2 * 3 * 3)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect();
    let labels = (0..n).map(|i| (i % 3) as i64).collect();
    Dataset::new(
        "toy",
        [2, 3, 3],
        pixels,
        labels,
        vec!["a".into(), "b".into(), "c".into()],
    )
    .unwrap()
}

/// The byte range of tensor `name`'s data in a safetensors file.
fn tensor_range(bytes: &[u8], name: &str) -> std::ops::Range<usize> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let off = &header[name]["data_offsets"];
    let (a, b) = (off[0].as_u64().unwrap(), off[1].as_u64().unwrap());
    8 + n + a as usize..8 + n + b as usize
}

/// Flips some bytes in the pixel data of the dataset file at `path`.
fn flip_pixels(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let r = tensor_range(&bytes, "pixels");
    for i in [r.start, r.start + 17, r.end - 1] {
        bytes[i] ^= 0xff;
    }
    std::fs::write(path, bytes).unwrap();
}

/// Replaces `from` by `to` (same length) in the header of the file at `path`.
fn edit_header(path: &Path, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let mut bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = &mut bytes[8..8 + n];
    let at = header
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("{from} not in the header"));
    header[at..at + to.len()].copy_from_slice(to.as_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// Files in `dir` that look like temporary files.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with('.') || f.contains("tmp"))
        .collect()
}

/// A `build` closure returning `d` with one note, counting its calls.
fn builder<'a>(
    d: &'a Dataset,
    calls: &'a AtomicUsize,
) -> impl FnOnce() -> Result<(Dataset, Vec<String>), DataError> + 'a {
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok((d.clone(), vec!["skipped record 3".into()]))
    }
}

#[test]
fn saved_files_record_the_content_digest_and_load_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.safetensors");
    let d = toy(1);
    d.save(&p).unwrap();
    let text = String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned();
    assert!(
        text.contains(&format!("\"sha256\":\"{}\"", d.sha256())),
        "{text}"
    );
    assert_eq!(Dataset::load(&p).unwrap(), d);
    // The digest is of the content: any change to it changes the digest.
    let mut e = d.clone();
    e.pixels[5] ^= 1;
    assert_ne!(e.sha256(), d.sha256());
    let mut e = d.clone();
    e.labels[0] = 1;
    assert_ne!(e.sha256(), d.sha256());
    let mut e = d.clone();
    e.classes[2] = "C".into();
    assert_ne!(e.sha256(), d.sha256());
    assert_eq!(d.clone().sha256(), d.sha256());

    // A tampered file is an error, naming the file, not a silently different dataset.
    flip_pixels(&p);
    let err = Dataset::load(&p).unwrap_err();
    assert!(
        matches!(&err, DataError::Digest { recorded: Some(r), found, .. }
            if *r == d.sha256() && *found != d.sha256()),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("d.safetensors") && text.contains("does not match its recorded sha256"),
        "{text}"
    );
    // A file without a digest (written before digests were recorded) still loads.
    d.save(&p).unwrap();
    edit_header(&p, "\"sha256\"", "\"zzzzzz\"");
    assert_eq!(Dataset::load(&p).unwrap(), d);
}

#[test]
fn a_tampered_cache_is_detected_and_rebuilt_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("toy.safetensors");
    let d = toy(2);
    let calls = AtomicUsize::new(0);
    // First use: built, saved, the build's notes only.
    let (got, notes) = load_cached(&p, None, "the source", builder(&d, &calls)).unwrap();
    assert_eq!(
        (got, notes),
        (d.clone(), vec!["skipped record 3".to_owned()])
    );
    // Second use: from the cache, no build, no notes.
    let (got, notes) = load_cached(&p, None, "the source", builder(&d, &calls)).unwrap();
    assert_eq!(
        (&got, notes.len(), calls.load(Ordering::SeqCst)),
        (&d, 0, 1)
    );

    // Tampered pixels: detected, rebuilt, said so; the data equals the original.
    flip_pixels(&p);
    assert_ne!(std::fs::read(&p).unwrap(), Vec::<u8>::new());
    let (got, notes) = load_cached(&p, None, "the source", builder(&d, &calls)).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "not rebuilt");
    assert_eq!(got, d);
    assert_eq!(
        notes,
        vec![
            "the cached toy.safetensors did not match its recorded digest; rebuilt from the source"
                .to_owned(),
            "skipped record 3".to_owned(),
        ]
    );
    // The rebuilt file is good again.
    assert_eq!(Dataset::load(&p).unwrap(), d);
    let (_, notes) = load_cached(&p, None, "the source", builder(&d, &calls)).unwrap();
    assert!(notes.is_empty() && calls.load(Ordering::SeqCst) == 2);
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        temp_files(dir.path())
    );
}

/// A `tracing` layer that records the fields of every event at WARN level or above.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            let mut text = String::new();
            event.record(
                &mut |field: &tracing::field::Field, value: &dyn std::fmt::Debug| {
                    text.push_str(&format!("{}={value:?} ", field.name()));
                },
            );
            self.0.lock().unwrap().push(text);
        }
    }
}

impl Warnings {
    /// Runs `f` with this layer as the thread's subscriber.
    fn during<T>(&self, f: impl FnOnce() -> T) -> T {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(self.clone());
        tracing::subscriber::with_default(subscriber, f)
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

#[test]
fn the_reason_for_a_rebuild_is_returned_once_and_not_logged_as_well() {
    let warnings = Warnings::default();
    // The recorder sees warnings and errors, not information.
    warnings.during(|| {
        tracing::info!("fine");
        tracing::warn!("probe");
        tracing::error!("probe");
    });
    assert_eq!(warnings.take().len(), 2);

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("toy.safetensors");
    let d = toy(4);
    let calls = AtomicUsize::new(0);
    load_cached(&p, None, "the source", builder(&d, &calls)).unwrap();
    flip_pixels(&p);
    let (got, notes) = warnings
        .during(|| load_cached(&p, None, "the source", builder(&d, &calls)))
        .unwrap();
    assert_eq!((got, calls.load(Ordering::SeqCst)), (d, 2), "not rebuilt");
    // The reason is in the notes exactly once (the caller prints them) ...
    let reason = "did not match its recorded digest";
    assert_eq!(
        notes.iter().filter(|n| n.contains(reason)).count(),
        1,
        "{notes:?}"
    );
    // ... and nothing is logged besides, or the user would read it twice.
    assert_eq!(warnings.take(), Vec::<String>::new());
}

#[test]
fn a_missing_or_corrupt_digest_is_rebuilt_like_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("toy.safetensors");
    let d = toy(3);
    let calls = AtomicUsize::new(0);
    let hex = d.sha256();

    // No digest at all (e.g. a cache written by an older version).
    d.save(&p).unwrap();
    edit_header(&p, "\"sha256\"", "\"zzzzzz\"");
    let (got, notes) = load_cached(&p, None, "the source", builder(&d, &calls)).unwrap();
    assert_eq!((got, calls.load(Ordering::SeqCst)), (d.clone(), 1));
    assert_eq!(
        notes[0],
        "the cached toy.safetensors had no recorded digest; rebuilt from the source"
    );
    assert_eq!(Dataset::load(&p).unwrap(), d);
    assert!(
        load_cached(&p, None, "", builder(&d, &calls))
            .unwrap()
            .1
            .is_empty()
    );

    // A corrupt digest (not hex), the data untouched.
    edit_header(&p, &hex, &"z".repeat(hex.len()));
    let (got, notes) = load_cached(&p, None, "the source", builder(&d, &calls)).unwrap();
    assert_eq!((got, calls.load(Ordering::SeqCst)), (d.clone(), 2));
    assert!(
        notes[0].contains("did not match its recorded digest; rebuilt from the source"),
        "{notes:?}"
    );
    assert!(
        load_cached(&p, None, "", builder(&d, &calls))
            .unwrap()
            .1
            .is_empty()
    );
}

#[test]
fn an_unloadable_cache_is_rebuilt_and_a_failed_rebuild_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("toy.safetensors");
    let d = toy(4);
    let calls = AtomicUsize::new(0);
    d.save(&p).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap(); // truncated
    let (got, notes) = load_cached(&p, None, "the source", builder(&d, &calls)).unwrap();
    assert_eq!(got, d);
    assert!(
        notes[0].starts_with("the cached toy.safetensors could not be loaded (")
            && notes[0].ends_with("; rebuilt from the source"),
        "{notes:?}"
    );
    assert_eq!(std::fs::read(&p).unwrap().len(), bytes.len());

    // When the rebuild fails, the error comes out and nothing is written.
    std::fs::write(&p, b"garbage").unwrap();
    let e = load_cached(&p, None, "the source", || {
        Err(DataError::Invalid("no source".into()))
    })
    .unwrap_err();
    assert!(
        matches!(e, DataError::Invalid(ref m) if m == "no source"),
        "{e}"
    );
    assert_eq!(std::fs::read(&p).unwrap(), b"garbage");
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        temp_files(dir.path())
    );
}

#[test]
fn an_expected_digest_is_enforced_on_load_and_on_build() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("toy.safetensors");
    let (d, other) = (toy(5), toy(6));
    let calls = AtomicUsize::new(0);
    let want = d.sha256();
    // A self-consistent file with the wrong data (its own correct digest) is replaced.
    other.save(&p).unwrap();
    let (got, notes) = load_cached(&p, Some(&want), "the source", builder(&d, &calls)).unwrap();
    assert_eq!(got, d);
    assert!(
        notes[0].starts_with("the cached toy.safetensors is not the expected data")
            && notes[0].contains(&want),
        "{notes:?}"
    );
    // The right data verifies without a build.
    let (_, notes) = load_cached(&p, Some(&want), "", builder(&d, &calls)).unwrap();
    assert!(notes.is_empty() && calls.load(Ordering::SeqCst) == 1);
    // A build giving other data than expected is an error and is not saved.
    std::fs::remove_file(&p).unwrap();
    let e = load_cached(&p, Some(&want), "the source", builder(&other, &calls)).unwrap_err();
    assert!(
        e.to_string().contains(&want) && e.to_string().contains("not saved"),
        "{e}"
    );
    assert!(!p.exists());
}

#[test]
fn concurrent_saves_use_unique_temp_files_and_leave_none() {
    // Writers racing on one path must each write their own temporary file: with a shared
    // temporary name, one writer's rename would fail or the file would mix two writes.
    let dir = tempfile::tempdir().unwrap();
    let p = Arc::new(dir.path().join("race.safetensors"));
    let versions: Arc<Vec<Dataset>> = Arc::new((0..8).map(|s| toy(10 + s)).collect());
    let start = Arc::new(Barrier::new(versions.len()));
    let threads: Vec<_> = (0..versions.len())
        .map(|t| {
            let (p, versions, start) = (p.clone(), versions.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..25 {
                    versions[t].save(&p).unwrap();
                    // Whatever is there is always one complete, verified version.
                    let now = Dataset::load(&p).unwrap();
                    assert!(versions.contains(&now));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(versions.contains(&Dataset::load(&p).unwrap()));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "{:?}",
        temp_files(dir.path())
    );
}

#[test]
fn a_failed_save_removes_its_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    // The target is a non-empty directory: it is never replaced, the error says what is
    // there, and no temporary file is left.
    let p = dir.path().join("blocked.safetensors");
    std::fs::create_dir(&p).unwrap();
    std::fs::write(p.join("keep"), b"x").unwrap();
    let e = toy(7).save(&p).unwrap_err();
    assert!(
        matches!(e, DataError::Fs(_)) && e.to_string().contains("a directory"),
        "{e}"
    );
    assert!(p.join("keep").is_file());
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        temp_files(dir.path())
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    // The same through the cache: the build ran, the save failed, nothing left behind.
    let calls = AtomicUsize::new(0);
    let d = toy(7);
    assert!(load_cached(&p, None, "the source", builder(&d, &calls)).is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(
        temp_files(dir.path()).is_empty(),
        "{:?}",
        temp_files(dir.path())
    );
    // A directory that cannot be written: an error, no file.
    let missing = dir.path().join("no-such-dir").join("x.safetensors");
    assert!(toy(7).save(&missing).is_err());
    assert!(!dir.path().join("no-such-dir").exists());
}

#[test]
fn concurrent_first_builds_into_one_cache_do_not_corrupt_it() {
    // Two "processes" load the same cache for the first time at once: both find no file,
    // both build and save. Each gets its data, and the cache is one complete, verified file.
    let dir = tempfile::tempdir().unwrap();
    let p = Arc::new(dir.path().join("toy.safetensors"));
    let d = Arc::new(toy(8));
    let both_building = Arc::new(Barrier::new(2));
    let calls = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (p, d, b, calls) = (p.clone(), d.clone(), both_building.clone(), calls.clone());
            std::thread::spawn(move || {
                load_cached(&p, Some(&d.sha256()), "the source", || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    b.wait(); // neither saves before both have started building
                    Ok(((*d).clone(), vec![]))
                })
                .unwrap()
            })
        })
        .collect();
    for t in threads {
        let (got, notes) = t.join().unwrap();
        assert_eq!((&got, notes.len()), (&*d, 0));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let (got, notes) = load_cached(&p, Some(&d.sha256()), "", || {
        panic!("the cache should verify")
    })
    .unwrap();
    assert_eq!((got, notes.len()), ((*d).clone(), 0));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
