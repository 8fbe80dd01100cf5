//! The plug-in criterion through the whole library: scored, stored, used by ToD, reported.

use fair_example_apoz::register;
use fair_pipeline::{Goal, Pruner};
use fair_runtime::Model;
use fair_scoring::{Calibration, Progress, Registry, ScoringSettings};
use tch::{Device, Kind, Tensor};

fn setup() -> (Model, Calibration) {
    let model = Model::new(
        fair_zoo::build("vgg11_bn_cifar", &[3, 32, 32], 4).unwrap(),
        Device::Cpu,
        0,
    )
    .unwrap();
    tch::manual_seed(2);
    let x = Tensor::randn([16, 3, 32, 32], (Kind::Float, Device::Cpu));
    let y = Tensor::arange(16, (Kind::Int64, Device::Cpu)).remainder(4);
    (model, Calibration::new(x, &y, "random").unwrap())
}

#[test]
fn apoz_is_a_fraction_and_counts_zeros_exactly() {
    let (model, cal) = setup();
    let mut registry = Registry::default();
    register(&mut registry);
    let criteria = registry
        .create_all(&["apoz"], &ScoringSettings::default())
        .unwrap();
    let file = fair_scoring::score(&model, Some(&cal), &criteria, Progress::QUIET).unwrap();
    let apoz = file.criterion("apoz").unwrap();
    assert!(
        apoz.iter()
            .flat_map(|v| v.iter())
            .all(|&v| (0.0..=1.0).contains(&v))
    );
    // Independent check on the first layer: features.0 → BN → ReLU, counted directly.
    let (x, _) = cal.tensors();
    let out = model
        .forward_with_taps(&x, fair_runtime::Mode::Eval, &["features.2"])
        .unwrap();
    let t = &out.taps["features.2"];
    let direct: Vec<f64> = Vec::try_from(t.gt(0.0).to_kind(Kind::Double).mean_dim(
        &[0i64, 2, 3][..],
        false,
        Kind::Double,
    ))
    .unwrap();
    for (a, b) in apoz[0].iter().zip(&direct) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }
    assert_eq!(file.provenance.criteria["apoz"].settings["batch_size"], 64);
}

#[test]
fn apoz_drives_tod_through_the_pipeline() {
    let (model, cal) = setup();
    let mut registry = Registry::default();
    register(&mut registry);
    let dir = tempfile_dir();
    let outcome = Pruner::new(&model)
        .registry(registry)
        // Random calibration images and no training split: the preset's steps after surgery
        // (reconstruction, BatchNorm recalibration) are turned off, explicitly.
        .no_reconstruction()
        .no_recalibration()
        .calibration(&cal)
        .criteria(["apoz", "r"])
        .remove_by("apoz")
        .protect_by("r")
        .goal(Goal::Macs(0.3))
        .out(&dir)
        .run()
        .unwrap();
    let report = &outcome.report;
    assert_eq!(report.selection.remove_by, "apoz");
    assert_eq!(report.selection.rank_by, "apoz");
    assert!(report.scoring.criteria.contains_key("apoz"));
    assert!(report.results[0].achieved.macs >= 0.3);
    let stored = fair_pipeline_scores(&dir);
    assert!(stored.contains("\"apoz\""));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("fair-apoz-test-{}", std::process::id()))
}

fn fair_pipeline_scores(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("scores.json")).unwrap()
}
