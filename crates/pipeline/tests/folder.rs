//! A `folder` data source is streamed: the run config indexes it, and a calibration draw
//! decodes only the drawn files.

use fair_data::{ImageSource, Source};
use fair_pipeline::{DrawSettings, RunConfig};

#[test]
fn a_folder_source_is_streamed_and_calibration_reads_only_the_drawn_files() {
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "test"] {
        for class in ["a", "b", "c"] {
            let d = dir.path().join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..6u8 {
                image::RgbImage::from_pixel(20 + u32::from(i), 14, image::Rgb([i * 30, 90, 10]))
                    .save(d.join(format!("{i}.png")))
                    .unwrap();
            }
        }
    }
    let config: RunConfig = toml::from_str(&format!(
        "[data]\nsource = \"folder\"\npath = {:?}\n[transform]\nmean = [0.5]\nstd = [0.25]\n",
        dir.path().display().to_string()
    ))
    .unwrap();
    let (train, test, _) = config.data([3, 16, 16]).unwrap();
    assert!(matches!(train, Source::Folder(_)) && matches!(test, Source::Folder(_)));
    assert_eq!(
        (train.len(), test.len(), train.classes().len()),
        (18, 18, 3)
    );
    let Source::Folder(folder) = &train else {
        unreachable!()
    };
    let draw = DrawSettings {
        per_class: 2,
        max_classes: 100,
        seed: 4,
    };
    let sample = fair_data::calibration_sample(&train, 2, 100, 4);
    for i in (0..folder.len()).filter(|i| !sample.indices.contains(i)) {
        std::fs::write(folder.path(i).unwrap(), b"not an image any more").unwrap();
    }
    let graph = fair_zoo::mlp(vec![3, 16, 16], &[8], 3).unwrap();
    let (calibration, notes) = draw.draw(&graph, &train, &config.transform).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(calibration.len(), 6);
    assert!(calibration.description().contains("3 classes"));
    assert!(
        config.data([4, 16, 16]).is_err(),
        "folders give grey or RGB images"
    );
}

#[test]
fn the_test_split_takes_the_training_splits_class_list() {
    let dir = tempfile::tempdir().unwrap();
    let put = |split: &str, class: &str| {
        let d = dir.path().join(split).join(class);
        std::fs::create_dir_all(&d).unwrap();
        image::RgbImage::from_pixel(12, 10, image::Rgb([40, 80, 120]))
            .save(d.join("0.png"))
            .unwrap();
    };
    for class in ["a", "b", "c"] {
        put("train", class);
    }
    // test/ lacks "a": its "b" and "c" keep labels 1 and 2 (not 0 and 1).
    put("test", "b");
    put("test", "c");
    let config: RunConfig = toml::from_str(&format!(
        "[data]\nsource = \"folder\"\npath = {:?}\n",
        dir.path().display().to_string()
    ))
    .unwrap();
    let (train, test, _) = config.data([3, 8, 8]).unwrap();
    assert_eq!(test.classes(), train.classes());
    assert_eq!(test.labels(), [1, 2]);
    // A class that train/ lacks: an error naming its directory.
    put("test", "zebra");
    let e = config.data([3, 8, 8]).unwrap_err().to_string();
    let zebra = dir.path().join("test").join("zebra");
    assert!(e.contains(&*zebra.display().to_string()), "{e}");
}

#[test]
fn a_calibration_set_larger_than_a_chunk_equals_one_batch_of_the_drawn_images() {
    // 3 classes × 100 images: 300 drawn, built as chunks of 256 and 44.
    let dir = tempfile::tempdir().unwrap();
    for class in ["a", "b", "c"] {
        let d = dir.path().join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..100u32 {
            image::RgbImage::from_fn(6 + i % 3, 5, |x, y| {
                image::Rgb([(i * 2 + x) as u8, (y * 40) as u8, class.as_bytes()[0]])
            })
            .save(d.join(format!("{i:03}.png")))
            .unwrap();
        }
    }
    let folder = fair_data::ImageFolder::open(dir.path()).unwrap();
    let transform = fair_data::Transform {
        mean: vec![0.5],
        std: vec![0.25],
        ..Default::default()
    };
    let draw = DrawSettings {
        per_class: 100,
        max_classes: 100,
        seed: 1,
    };
    let graph = fair_zoo::mlp(vec![3, 4, 4], &[8], 3).unwrap();
    let (calibration, _) = draw.draw(&graph, &folder, &transform).unwrap();
    let sample = fair_data::calibration_sample(&folder, 100, 100, 1);
    assert_eq!(sample.indices.len(), 300);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let (x, y) = folder
        .batch(&transform, &sample.indices, [3, 4, 4], false, &mut rng)
        .unwrap();
    let (cx, cy) = calibration.tensors();
    assert_eq!(cx.size(), [300, 3, 4, 4]);
    assert!(cx.equal(&x) && cy.equal(&y));
}
