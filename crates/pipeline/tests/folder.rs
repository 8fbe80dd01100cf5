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
        std::fs::write(folder.path(i), b"not an image any more").unwrap();
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
