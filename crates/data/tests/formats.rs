//! Loaders on small files made here, in the formats' own byte layouts.

use fair_data::{
    Cifar, DataError, Dataset, FolderOptions, Transform, calibration_sample, load_cifar, load_idx,
    load_image_folder,
};

fn idx_images(n: u32, h: u32, w: u32, fill: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, h, w] {
        v.extend(d.to_be_bytes());
    }
    v.extend((0..(n * h * w) as usize).map(fill));
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend((labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

#[test]
fn idx_files_load_and_bad_ones_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (im, lb) = (dir.path().join("img"), dir.path().join("lab"));
    std::fs::write(&im, idx_images(3, 2, 2, |i| i as u8)).unwrap();
    std::fs::write(&lb, idx_labels(&[2, 0, 1])).unwrap();
    let d = load_idx(&im, &lb, 3).unwrap();
    assert_eq!((d.len(), d.shape), (3, [1, 2, 2]));
    assert_eq!(d.image(1), &[4, 5, 6, 7]);
    assert_eq!(d.labels, vec![2, 0, 1]);

    // gzip is accepted.
    let gz = dir.path().join("img.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &idx_images(3, 2, 2, |i| i as u8)).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let g = load_idx(&gz, &lb, 3).unwrap();
    assert_eq!((g.pixels, g.labels), (d.pixels.clone(), d.labels.clone()));

    let mut cut = idx_images(3, 2, 2, |i| i as u8);
    cut.truncate(16 + 9);
    std::fs::write(&im, cut).unwrap();
    let e = load_idx(&im, &lb, 3).unwrap_err().to_string();
    assert!(
        e.contains("img") && e.contains("record 2") && e.contains("truncated"),
        "{e}"
    );

    std::fs::write(&im, idx_images(3, 2, 2, |_| 0)).unwrap();
    std::fs::write(&lb, idx_labels(&[0, 7, 1])).unwrap();
    let e = load_idx(&im, &lb, 3).unwrap_err().to_string();
    assert!(
        e.contains("record 1") && e.contains("label 7 is outside 0..=2 (3 classes)"),
        "{e}"
    );
    std::fs::write(&lb, idx_labels(&[0, 1])).unwrap();
    assert!(
        load_idx(&im, &lb, 3)
            .unwrap_err()
            .to_string()
            .contains("2 labels for 3 images")
    );
}

#[test]
fn cifar_batches_load_with_class_names() {
    let dir = tempfile::tempdir().unwrap();
    let record = |label: u8, v: u8| {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(v, 3072));
        r
    };
    for i in 1..=5u8 {
        std::fs::write(
            dir.path().join(format!("data_batch_{i}.bin")),
            [record(i, i), record(0, 9)].concat(),
        )
        .unwrap();
    }
    std::fs::write(dir.path().join("test_batch.bin"), record(3, 1)).unwrap();
    let names: String = (0..10).map(|i| format!("class{i}\n")).collect();
    std::fs::write(dir.path().join("batches.meta.txt"), names).unwrap();
    let train = load_cifar(dir.path(), Cifar::Ten, true).unwrap();
    assert_eq!((train.len(), train.shape), (10, [3, 32, 32]));
    assert_eq!(train.labels[..4], [1, 0, 2, 0]);
    assert_eq!(train.classes[3], "class3");
    assert!(train.image(2).iter().all(|&p| p == 2));
    let test = load_cifar(dir.path(), Cifar::Ten, false).unwrap();
    assert_eq!(test.labels, vec![3]);

    std::fs::write(dir.path().join("test_batch.bin"), &record(3, 1)[..1000]).unwrap();
    let e = load_cifar(dir.path(), Cifar::Ten, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("test_batch.bin") && e.contains("truncated"),
        "{e}"
    );
    // CIFAR-100: coarse + fine label bytes; the fine one is used.
    let mut r = vec![4u8, 77];
    r.extend(std::iter::repeat_n(0u8, 3072));
    std::fs::write(dir.path().join("train.bin"), &r).unwrap();
    let c100 = load_cifar(dir.path(), Cifar::Hundred, true).unwrap();
    assert_eq!((c100.labels.clone(), c100.classes.len()), (vec![77], 100));
}

#[test]
fn image_folders_load_resized() {
    let dir = tempfile::tempdir().unwrap();
    for (class, value) in [("cat", 10u8), ("dog", 200u8)] {
        std::fs::create_dir_all(dir.path().join(class)).unwrap();
        for i in 0..2 {
            let img = image::RgbImage::from_pixel(8, 6, image::Rgb([value, value, 255 - value]));
            img.save(dir.path().join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let d = load_image_folder(dir.path(), 3, 4, 4, &FolderOptions::default()).unwrap();
    assert_eq!(
        (d.len(), d.shape, d.classes.clone()),
        (4, [3, 4, 4], vec!["cat".to_string(), "dog".to_string()])
    );
    assert_eq!(d.labels, vec![0, 0, 1, 1]);
    // Channel-major: the blue plane of a dog is 55 everywhere.
    assert!(d.image(2)[32..48].iter().all(|&p| p == 55));
    std::fs::write(dir.path().join("dog").join("broken.png"), b"not a png").unwrap();
    let e = load_image_folder(dir.path(), 3, 4, 4, &FolderOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("broken.png") && e.contains("cannot decode"),
        "{e}"
    );
    let e =
        load_image_folder(&dir.path().join("cat"), 1, 4, 4, &FolderOptions::default()).unwrap_err();
    assert!(matches!(e, DataError::Invalid(_)), "{e}");
}

fn toy(n_per_class: &[usize]) -> Dataset {
    let mut labels = Vec::new();
    for (c, &n) in n_per_class.iter().enumerate() {
        labels.extend(std::iter::repeat_n(c as i64, n));
    }
    let pixels = (0..labels.len() * 4).map(|i| (i % 251) as u8).collect();
    Dataset::new(
        "toy",
        [1, 2, 2],
        pixels,
        labels,
        (0..n_per_class.len()).map(|c| c.to_string()).collect(),
    )
    .unwrap()
}

#[test]
fn splits_are_stratified_deterministic_and_disjoint() {
    let d = toy(&[10, 20, 30]);
    let (a, b) = d.split_stratified(7, |n| n * 4 / 5);
    let (a2, _) = d.split_stratified(7, |n| n * 4 / 5);
    assert_eq!(a, a2, "same seed, same split");
    assert_eq!((a.len(), b.len()), (48, 12));
    let counts = |x: &Dataset| x.class_indices().values().map(Vec::len).collect::<Vec<_>>();
    assert_eq!(counts(&a), vec![8, 16, 24]);
    assert_eq!(counts(&b), vec![2, 4, 6]);
    // Saved and loaded back exactly.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.safetensors");
    a.save(&p).unwrap();
    assert_eq!(Dataset::load(&p).unwrap(), a);
}

#[test]
fn calibration_draws_from_the_given_split_and_reports_short_classes() {
    let d = toy(&[10, 3, 10, 10]);
    let draw = calibration_sample(&d, 5, 100, 1);
    assert_eq!(draw.indices.len(), 5 + 3 + 5 + 5);
    assert_eq!(draw.short.len(), 1);
    assert!(
        draw.short[0].contains("class 1") && draw.short[0].contains("3 training sample(s)"),
        "{:?}",
        draw.short
    );
    assert_eq!(calibration_sample(&d, 5, 100, 1), draw, "seeded");
    let capped = calibration_sample(&d, 2, 2, 1);
    assert_eq!(capped.classes.len(), 2);
    assert_eq!(capped.indices.len(), 4);
}

#[test]
fn transforms_pad_normalise_convert_and_augment() {
    let d = toy(&[2, 2]);
    let t = Transform {
        mean: vec![0.5],
        std: vec![0.5],
        augment: None,
        ..Default::default()
    };
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let (x, y) = t.batch(&d, &[0, 3], [3, 4, 4], false, &mut rng).unwrap();
    assert_eq!(x.size(), [2, 3, 4, 4]);
    assert_eq!(Vec::<i64>::try_from(&y).unwrap(), vec![0, 1]);
    // Centre of image 0 is pixels 0,1,2,3 → (p/255 − 0.5)/0.5; the pad ring is (0 − 0.5)/0.5 = −1.
    let v = |c: i64, h: i64, w: i64| x.double_value(&[0, c, h, w]);
    assert!((v(0, 1, 1) - (0.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6);
    assert!(
        (v(2, 2, 2) - (3.0 / 255.0 - 0.5) / 0.5).abs() < 1e-6,
        "grey copied to all channels"
    );
    assert_eq!(v(1, 0, 0), -1.0);
    let aug = Transform {
        augment: Some(fair_data::Augment {
            crop_padding: 1,
            flip: true,
        }),
        ..t.clone()
    };
    let (xa, _) = aug
        .batch(&d, &[0, 1, 2, 3], [1, 2, 2], true, &mut rng)
        .unwrap();
    assert_eq!(xa.size(), [4, 1, 2, 2]);
    let (xe, _) = aug.batch(&d, &[0], [1, 2, 2], false, &mut rng).unwrap();
    let (xp, _) = t.batch(&d, &[0], [1, 2, 2], false, &mut rng).unwrap();
    assert!(xe.equal(&xp), "no augmentation outside training");
    let bad = Transform {
        std: vec![0.0],
        ..t
    };
    assert!(
        bad.batch(&d, &[0], [1, 2, 2], false, &mut rng)
            .unwrap_err()
            .to_string()
            .contains("std[0]")
    );
}

#[test]
fn normalisation_must_be_finite_and_positive_and_keep_inputs_finite() {
    let t = |mean: Vec<f32>, std: Vec<f32>| Transform {
        mean,
        std,
        ..Default::default()
    };
    let refused = |t: Transform, says: &[&str]| {
        let e = t.check_input([3, 4, 4], 2).unwrap_err().to_string();
        assert!(says.iter().all(|s| e.contains(s)), "{e}");
    };
    // An infinite std made every input 0; a NaN, zero or negative one is no better.
    refused(
        t(vec![0.5], vec![f32::INFINITY]),
        &["std[0] = inf", "finite positive"],
    );
    refused(t(vec![], vec![1.0, 1.0, f32::INFINITY]), &["std[2] = inf"]);
    refused(t(vec![], vec![f32::NEG_INFINITY]), &["std[0] = -inf"]);
    refused(t(vec![], vec![f32::NAN]), &["std[0] = NaN"]);
    refused(t(vec![], vec![0.0]), &["std[0] = 0"]);
    refused(t(vec![], vec![-0.5]), &["std[0] = -0.5"]);
    refused(t(vec![f32::INFINITY], vec![]), &["mean[0] = inf", "finite"]);
    refused(t(vec![0.1, f32::NAN, 0.2], vec![]), &["mean[1] = NaN"]);
    // Finite settings whose normalised pixels overflow to ±inf: a subnormal std, a huge mean.
    refused(
        t(vec![0.5], vec![1e-40]),
        &["mean = 0.5 and std = 0.0000", "channel 0", "to infinity"],
    );
    refused(
        t(vec![0.0, 0.0, -3e38], vec![0.5]),
        &[
            "mean = -300000000000000000000000000000000000000",
            "channel 2",
        ],
    );
    // Ordinary settings, and extreme but finite ones, pass.
    for ok in [
        t(vec![], vec![]),
        t(vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]),
        t(vec![-1e30], vec![1e-3]),
        t(vec![0.5], vec![f32::MAX]),
    ] {
        ok.check_input([3, 4, 4], 2).unwrap();
    }
    // Batches refuse them too (the in-memory path; folders call the same check).
    let d = Dataset::new("d", [1, 1, 1], vec![7], vec![0], vec!["a".into()]).unwrap();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let e = t(vec![0.5], vec![f32::INFINITY])
        .batch(&d, &[0], [1, 1, 1], false, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(e.contains("std[0] = inf"), "{e}");
}

#[test]
fn an_empty_split_is_an_error_naming_its_files() {
    let dir = tempfile::tempdir().unwrap();
    // IDX: headers declaring 0 images and 0 labels, plain and gzip.
    let (im, lb) = (
        dir.path().join("t10k-images"),
        dir.path().join("t10k-labels"),
    );
    std::fs::write(&im, idx_images(0, 28, 28, |_| 0)).unwrap();
    std::fs::write(&lb, idx_labels(&[])).unwrap();
    let e = load_idx(&im, &lb, 10).unwrap_err().to_string();
    assert!(
        e.contains("t10k-images")
            && e.contains("holds no images (the header declares 0 images of 28×28)"),
        "{e}"
    );
    let gz = |bytes: Vec<u8>| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &bytes).unwrap();
        enc.finish().unwrap()
    };
    let im_gz = dir.path().join("t10k-images.gz");
    std::fs::write(&im_gz, gz(idx_images(0, 28, 28, |_| 0))).unwrap();
    let e = load_idx(&im_gz, &lb, 10).unwrap_err().to_string();
    assert!(
        e.contains("t10k-images.gz") && e.contains("holds no images"),
        "{e}"
    );

    // CIFAR-10: an empty test batch; an empty training split (five empty batches).
    let cifar = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&cifar).unwrap();
    std::fs::write(cifar.join("test_batch.bin"), []).unwrap();
    let e = load_cifar(&cifar, Cifar::Ten, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cifar-10-batches-bin")
            && e.contains("the test split holds no images (test_batch.bin is empty)"),
        "{e}"
    );
    for i in 1..=5 {
        std::fs::write(cifar.join(format!("data_batch_{i}.bin")), []).unwrap();
    }
    let e = load_cifar(&cifar, Cifar::Ten, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("the training split holds no images (data_batch_1.bin")
            && e.contains("data_batch_5.bin are empty)"),
        "{e}"
    );
    // Some empty batches are fine while the split holds images.
    let mut record = vec![3u8];
    record.extend([9u8; 3072]);
    std::fs::write(cifar.join("data_batch_4.bin"), &record).unwrap();
    assert_eq!(load_cifar(&cifar, Cifar::Ten, true).unwrap().len(), 1);
    // CIFAR-100.
    let c100 = dir.path().join("cifar-100-binary");
    std::fs::create_dir(&c100).unwrap();
    std::fs::write(c100.join("test.bin"), []).unwrap();
    let e = load_cifar(&c100, Cifar::Hundred, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cifar-100-binary") && e.contains("test.bin is empty"),
        "{e}"
    );

    // ImageFolder: class directories without images, indexed alone or against the training
    // split's classes, streamed or loaded into memory.
    let test = dir.path().join("test");
    std::fs::create_dir_all(test.join("cat")).unwrap();
    std::fs::write(test.join("cat/notes.txt"), "not an image").unwrap();
    let classes = vec!["cat".to_owned(), "dog".to_owned()];
    for e in [
        fair_data::ImageFolder::open(&test).unwrap_err(),
        fair_data::ImageFolder::open_with_classes(&test, &classes).unwrap_err(),
        load_image_folder(&test, 1, 4, 4, &FolderOptions::default()).unwrap_err(),
    ] {
        let e = e.to_string();
        assert!(
            e.contains("test") && e.contains("holds no PNG or JPEG images"),
            "{e}"
        );
    }
    // A dataset built in memory may still be empty (callers test how they refuse one).
    assert!(
        Dataset::new("e", [1, 2, 2], vec![], vec![], vec!["a".into()])
            .unwrap()
            .is_empty()
    );
}
