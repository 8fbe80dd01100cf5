//! Issue 26, item 6: the shipped 1000-class config (`configs/imagenet1k-resnet50-defaults.toml`)
//! run through `prune` on a synthetic 1000-class ImageFolder of tiny images, with a small
//! model in place of ResNet-50 and every other setting as the file has it.

mod common;
use common::{run, stderr};
use std::path::Path;

/// 1000 classes (`c0000` … `c0999`), `train` images per class in `train/` and one in
/// `test/`: 8×8 RGB PNGs whose colour is the class's, with a little per-image variation.
fn thousand_classes(root: &Path, train: u8) {
    for c in 0..1000u32 {
        let base = [(c % 10) * 25, (c / 10 % 10) * 25, (c / 100) * 25];
        for (split, count) in [("train", train), ("test", 1)] {
            let dir = root.join(split).join(format!("c{c:04}"));
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..count {
                image::RgbImage::from_fn(8, 8, |x, y| {
                    let v = |b: u32, k: u32| (b + (x * k + y + u32::from(i) * 3) % 5) as u8;
                    image::Rgb([v(base[0], 1), v(base[1], 2), v(base[2], 3)])
                })
                .save(dir.join(format!("{i}.png")))
                .unwrap();
            }
        }
    }
}

#[test]
fn a_1000_class_folder_prunes_with_the_shipped_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("imagenet");
    thousand_classes(&data, 3);
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../configs/imagenet1k-resnet50-defaults.toml"
    );
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let weights = dir.path().join("mlp.safetensors");
    let out = dir.path().join("pruned");
    let (data_s, weights_s, out_s) = (s(&data), s(&weights), s(&out));
    // The small model in place of ResNet-50 (same input layout and 1000 classes).
    let model = ["--model", "mlp", "--input", "3x8x8", "--data-path", &data_s];
    let mut args = vec!["train", "--config", config];
    args.extend(model);
    args.extend(["--epochs", "1", "--out", &weights_s, "-q"]);
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));

    let mut args = vec!["prune", "--config", config];
    args.extend(model);
    args.extend(["--weights", &weights_s, "--out", &out_s, "-q"]);
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));

    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.join(name)).unwrap()).unwrap()
    };
    // The calibration covers all 1000 classes (max_classes = 1000), 3 of the 32 asked for
    // per class, as the folder has.
    let scores = read("scores.json");
    let data_desc = scores["provenance"]["data"].as_str().unwrap();
    assert!(
        data_desc.contains("1000 classes × up to 32 per class"),
        "{data_desc}"
    );
    assert_eq!(scores["provenance"]["samples"], 3000);
    let criteria = scores["provenance"]["criteria"].as_object().unwrap();
    assert!(
        criteria.contains_key("u") && criteria.contains_key("r"),
        "{criteria:?}"
    );
    // A thousand short classes are one note, not a thousand.
    let u_notes = criteria["u"]["notes"].as_array().unwrap();
    assert_eq!(u_notes.len(), 1, "{u_notes:?}");
    assert!(
        u_notes[0]
            .as_str()
            .unwrap()
            .starts_with("1000 of 1000 classes have fewer calibration samples than the 32"),
        "{u_notes:?}"
    );
    let short_lines = stderr(&o)
        .lines()
        .filter(|l| l.contains("fewer") && l.contains("samples"))
        .count();
    assert!(short_lines <= 2, "{}", stderr(&o));
    // The goal of the file, at least 40% of the MACs removed, is met.
    let report = read("report.json");
    assert_eq!(report["calibration"]["samples"], 3000);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    let removed = results[0]["achieved"]["macs"].as_f64().unwrap();
    assert!(
        removed >= 0.4,
        "removed {removed} of the MACs: {}",
        results[0]
    );
    assert!(
        out.join(results[0]["export"].as_str().unwrap())
            .join("model.safetensors")
            .exists()
    );
}
