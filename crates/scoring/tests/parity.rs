//! Parity with the authors' package `network-pruner` 2.16 on a small trained CNN, with the
//! same calibration samples (see `parity/network_pruner_parity.py`; the Python side runs with
//! `FAIR_PRUNER_PYTHON`, provisioned by `cargo xtask setup`).

use std::path::{Path, PathBuf};
use std::process::Command;

use fair_ir::Graph;
use fair_runtime::Model;
use fair_scoring::{
    AnalysisPoint, Calibration, ConvDistance, Progress, RScoreSettings, UScoreSettings,
    prunable_layers, r_scores, u_scores,
};
use fair_threshold::{CountOptions, TodCurve, counts_at};
use serde_json::Value;

fn python() -> Option<PathBuf> {
    fair_testkit::reference_python("the network-pruner parity test")
}

struct Reference {
    dir: tempfile::TempDir,
    json: Value,
}

/// Runs the reference script `tests/parity/<script>` into a fresh directory and reads the
/// `reference.json` it writes.
fn run_reference(py: &Path, script: &str) -> Reference {
    let dir = tempfile::tempdir().unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/parity")
        .join(script);
    let out = Command::new(py)
        .arg(&path)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("reference.json")).unwrap())
            .unwrap();
    Reference { dir, json }
}

fn reference(py: &Path) -> Reference {
    run_reference(py, "network_pruner_parity.py")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Spearman rank correlation (average ranks for ties).
fn spearman(a: &[f64], b: &[f64]) -> f64 {
    fn ranks(x: &[f64]) -> Vec<f64> {
        let order = fair_stats::stable_argsort(x);
        let mut r = vec![0.0; x.len()];
        let mut i = 0;
        while i < order.len() {
            let mut j = i;
            while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
                j += 1;
            }
            for k in i..=j {
                r[order[k]] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

fn setup(r: &Reference) -> (Model, Calibration) {
    let graph =
        Graph::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/net.toml")).unwrap();
    let model = Model::from_safetensors(
        graph,
        &r.dir.path().join("weights.safetensors"),
        tch::Device::Cpu,
    )
    .unwrap();
    let data =
        Calibration::from_safetensors(&r.dir.path().join("calibration.safetensors")).unwrap();
    (model, data)
}

#[test]
#[ignore = "needs the reference Python with network-pruner 2.16 (cargo xtask test runs it)"]
fn scores_and_counts_match_the_authors_package() {
    let Some(py) = python() else { return };
    tch::set_num_threads(1);
    let r = reference(&py);
    let (model, data) = setup(&r);
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
    let want: Vec<String> = r.json["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().into())
        .collect();
    assert_eq!(names, want, "the same prunable layers, in the same order");

    // R-Scores: same batches, training-mode BatchNorm, cross-entropy.
    let batch_size = r.json["batch_size"].as_u64().unwrap() as usize;
    let settings = RScoreSettings {
        batch_size,
        ..Default::default()
    };
    let (ours, _) = r_scores(&model, &layers, &data, &settings, Progress::QUIET).unwrap();
    let theirs: Vec<Vec<f64>> = r.json["r"].as_array().unwrap().iter().map(floats).collect();
    let scale = theirs.iter().flatten().fold(0.0f64, |m, v| m.max(*v));
    for (l, (a, b)) in layers.iter().zip(ours.iter().zip(&theirs)) {
        for (j, (x, y)) in a.iter().zip(b).enumerate() {
            // Relative to the unit's own value where it is meaningful. A conv followed by
            // training-mode BatchNorm has R = 0 in exact arithmetic (scale invariance, see
            // docs/algorithm.md): both sides then hold round-off noise, which must stay below
            // 1e-5 of the network's largest R.
            let noise = 1e-5 * scale;
            let ok = (x - y).abs() <= 1e-4 * y.abs() || (x.abs() <= noise && y.abs() <= noise);
            assert!(
                ok,
                "R-Score of {} unit {j}: ours {x} vs package {y}",
                l.name
            );
        }
    }
    // The linear layer (no BatchNorm after it) carries real R-Scores: every unit that is not
    // dead (R = 0 when its ReLU never fires) agrees to 1e-4 relative.
    let (fc, fc_ref) = (&ours[2], &theirs[2]);
    let fc_max = fc_ref.iter().fold(0.0f64, |m, v| m.max(*v));
    let live: Vec<usize> = (0..fc_ref.len())
        .filter(|&j| fc_ref[j] > 1e-4 * fc_max)
        .collect();
    assert!(
        live.len() >= fc_ref.len() / 2,
        "most fc units are live: {live:?}"
    );
    for &j in &live {
        let (x, y) = (fc[j], fc_ref[j]);
        assert!(
            (x - y).abs() <= 1e-4 * y,
            "fc unit {j} R: ours {x} vs package {y}"
        );
    }

    // U-Scores. Linear layer: exact 1-D W1, equal class sizes → equal to 1e-4 relative.
    let (u, notes) = u_scores(
        &model,
        &layers,
        &data,
        &UScoreSettings {
            conv: ConvDistance::Sliced,
            projections: 128,
            ..Default::default()
        },
        Progress::QUIET,
    )
    .unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    let u_ref: Vec<Vec<f64>> = r.json["u"].as_array().unwrap().iter().map(floats).collect();
    for (x, y) in u[2].iter().zip(&u_ref[2]) {
        assert!(
            (x - y).abs() <= 1e-4 * y.abs(),
            "linear U: ours {x} vs package {y}"
        );
    }
    // Conv layers: sliced distances with random directions on both sides. One package run
    // is noisy (fresh directions per channel and class pair; its runs agree with each other
    // at Spearman 0.66–0.95 here), so ours is ranked against the mean of its runs.
    for i in 0..2 {
        let runs: Vec<Vec<f64>> = r.json["u_runs"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(floats)
            .collect();
        let mean: Vec<f64> = (0..layers[i].units)
            .map(|j| runs.iter().map(|run| run[j]).sum::<f64>() / runs.len() as f64)
            .collect();
        let rho = spearman(&u[i], &mean);
        let single: Vec<f64> = runs.iter().map(|run| spearman(&u[i], run)).collect();
        eprintln!(
            "{}: Spearman ρ(ours, package mean of {}) = {rho:.3}; against single runs {single:.3?}",
            layers[i].name,
            runs.len()
        );
        assert!(rho >= 0.9, "{}: Spearman {rho} < 0.9", layers[i].name);
    }

    // Pooled variant against an independent NumPy/SciPy computation.
    let pooled = UScoreSettings {
        conv: ConvDistance::Pooled,
        ..Default::default()
    };
    let (u_pooled, _) = u_scores(&model, &layers, &data, &pooled, Progress::QUIET).unwrap();
    for i in 0..2 {
        let want = floats(&r.json["pooled"][&layers[i].name]);
        for (x, y) in u_pooled[i].iter().zip(&want) {
            assert!(
                (x - y).abs() <= 1e-4 * y.abs().max(1e-6),
                "{} pooled U: {x} vs SciPy {y}",
                layers[i].name
            );
        }
    }

    // Counts: fed the package's own scores, our ToD counts equal get_ratios exactly.
    let curves: Vec<TodCurve> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| TodCurve::new(&l.name, &u_ref[i], &theirs[i]).unwrap())
        .collect();
    let no_options = CountOptions {
        min_keep: 0,
        round_to: 1,
    };
    for (alpha, want) in r.json["ratios"].as_object().unwrap() {
        let a: f64 = alpha.parse().unwrap();
        let want: Vec<usize> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(counts_at(&curves, a, no_options).unwrap(), want, "α = {a}");
    }
}

#[test]
#[ignore = "needs the reference Python with torch/torchvision (cargo xtask test runs it)"]
fn scoring_leaves_the_model_untouched() {
    let Some(py) = python() else { return };
    let r = reference(&py);
    let (model, data) = setup(&r);
    let before = fair_scoring::model_digest(&model).unwrap();
    let layers = prunable_layers(model.graph(), AnalysisPoint::AfterActivation);
    assert_eq!(
        layers[0].analysis, "features.2",
        "conv → BN → ReLU is read after the ReLU"
    );
    assert_eq!(layers[2].analysis, "classifier.1");
    r_scores(
        &model,
        &layers,
        &data,
        &RScoreSettings::default(),
        Progress::QUIET,
    )
    .unwrap();
    u_scores(
        &model,
        &layers,
        &data,
        &UScoreSettings::default(),
        Progress::QUIET,
    )
    .unwrap();
    assert_eq!(
        fair_scoring::model_digest(&model).unwrap(),
        before,
        "weights and BN statistics unchanged"
    );
    for v in model.var_store().trainable_variables() {
        let g = v.grad();
        assert!(
            !g.defined() || g.abs().max().double_value(&[]) == 0.0,
            "gradients are cleared"
        );
    }
}

/// The `paper` preset against the authors' package on an MLP of Linear → ReLU(inplace=True)
/// layers behind an input BatchNorm1d (see `parity/paper_preset_parity.py`): the package
/// reads the U-Scores after the in-place ReLU, with BatchNorm statistics moved by its
/// training-mode R-Score passes, and the preset does the same.
#[test]
#[ignore = "needs the reference Python with network-pruner 2.16 (cargo xtask test runs it)"]
fn paper_preset_matches_the_authors_package() {
    let Some(py) = python() else { return };
    tch::set_num_threads(1);
    let Reference { dir, json } = run_reference(&py, "paper_preset_parity.py");
    let graph =
        Graph::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/mlp.toml")).unwrap();
    let model = Model::from_safetensors(
        graph,
        &dir.path().join("weights.safetensors"),
        tch::Device::Cpu,
    )
    .unwrap();
    let data = Calibration::from_safetensors(&dir.path().join("calibration.safetensors")).unwrap();
    let before = fair_scoring::model_digest(&model).unwrap();
    let batch_size = json["batch_size"].as_u64().unwrap() as usize;
    let settings = fair_scoring::ScoringSettings::paper(batch_size);
    let layers = prunable_layers(model.graph(), settings.u.analysis_point);
    let analysis: Vec<&str> = layers.iter().map(|l| l.analysis.as_str()).collect();
    assert_eq!(
        analysis,
        ["classifier.1", "classifier.3", "classifier.5"],
        "each Linear is read after the ReLU that overwrites its output in place"
    );

    let (u, _) = u_scores(&model, &layers, &data, &settings.u, Progress::QUIET).unwrap();
    let (r, _) = r_scores(&model, &layers, &data, &settings.r, Progress::QUIET).unwrap();
    assert_eq!(
        fair_scoring::model_digest(&model).unwrap(),
        before,
        "the drift runs on a copy: the model's statistics are unchanged"
    );
    let u_ref: Vec<Vec<f64>> = json["u"].as_array().unwrap().iter().map(floats).collect();
    let r_ref: Vec<Vec<f64>> = json["r"].as_array().unwrap().iter().map(floats).collect();
    for (i, l) in layers.iter().enumerate() {
        let u_max = u_ref[i].iter().fold(0.0f64, |m, v| m.max(*v));
        for (j, (x, y)) in u[i].iter().zip(&u_ref[i]).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * y.abs().max(1e-3 * u_max),
                "U of {} unit {j}: ours {x} vs package {y}",
                l.name
            );
        }
        let r_max = r_ref[i].iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (j, (x, y)) in r[i].iter().zip(&r_ref[i]).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * y.abs().max(1e-3 * r_max),
                "R of {} unit {j}: ours {x} vs package {y}",
                l.name
            );
        }
    }

    // Without the drift the U-Scores of this model differ: the test can tell.
    let mut no_drift = settings.u.clone();
    no_drift.bn_drift = None;
    let (plain, _) = u_scores(&model, &layers, &data, &no_drift, Progress::QUIET).unwrap();
    let moved = plain
        .iter()
        .flatten()
        .zip(u_ref.iter().flatten())
        .filter(|(x, y)| (*x - *y).abs() > 1e-3 * y.abs().max(1e-9))
        .count();
    assert!(moved > 10, "only {moved} U-Scores depend on the drift");

    // Counts from our own scores equal get_ratios at every α.
    let curves: Vec<TodCurve> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| TodCurve::new(&l.name, &u[i], &r[i]).unwrap())
        .collect();
    let ratios = json["ratios"].as_object().unwrap();
    assert_eq!(ratios.len(), 7);
    for (alpha, want) in ratios {
        let a: f64 = alpha.parse().unwrap();
        let want: Vec<usize> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(
            counts_at(&curves, a, CountOptions::default()).unwrap(),
            want,
            "α = {a}"
        );
    }
}
