//! `group-l1` / `group-l2` (Torch-Pruning's group magnitude): against a direct computation on
//! the compact VGG, and against Torch-Pruning itself on a chain, a residual and a dense net.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use fair_runtime::Model;
use fair_scoring::{AnalysisPoint, Context, Criterion, GroupMagnitude, Progress, prunable_layers};
use tch::{Device, Kind, Tensor};

fn model(name: &str, shape: &[usize], seed: i64) -> Model {
    let g = fair_zoo::build(name, shape, 10).unwrap();
    let m = Model::new(g, Device::Cpu, seed as u64).unwrap();
    fair_testkit::randomise_batchnorm(&m, seed);
    m
}

/// The criterion's scores by layer name.
fn scores(m: &Model, p: f64) -> BTreeMap<String, Vec<f64>> {
    let layers = prunable_layers(m.graph(), AnalysisPoint::LayerOutput);
    let ctx = Context {
        model: m,
        layers: &layers,
        data: None,
        progress: Progress::QUIET,
    };
    let scored = GroupMagnitude { p }.score(&ctx).unwrap();
    layers
        .iter()
        .map(|l| l.name.clone())
        .zip(scored.scores)
        .collect()
}

fn t(m: &Model, name: &str) -> Tensor {
    m.tensor(name).unwrap().detach().to_kind(Kind::Double)
}

/// Σ|x|ᵖ over every dimension but `keep`.
fn per(x: &Tensor, keep: i64, p: f64) -> Tensor {
    let dims: Vec<i64> = (0..x.dim() as i64).filter(|&d| d != keep).collect();
    let y = x.abs().pow_tensor_scalar(p);
    if dims.is_empty() {
        y
    } else {
        y.sum_dim_intlist(dims.as_slice(), false, Kind::Double)
    }
}

fn close(a: &[f64], b: &Tensor, what: &str) {
    let b = Vec::<f64>::try_from(b).unwrap();
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (u, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-9 * y.abs().max(1.0),
            "{what}, unit {u}: {x} vs {y}"
        );
    }
}

#[test]
fn group_magnitude_of_the_compact_vgg_is_the_mean_over_the_slices_removed_with_a_unit() {
    let m = model("vgg_compact", &[1, 28, 28], 3);
    for p in [1.0, 2.0] {
        let s = scores(&m, p);
        // A conv: its filter, its BatchNorm's scale, the next conv's input channel.
        let want = (per(&t(&m, "features.0.weight"), 0, p)
            + per(&t(&m, "features.1.weight"), 0, p)
            + per(&t(&m, "features.3.weight"), 1, p))
            / 3.0;
        close(&s["features.0"], &want, "features.0");
        // The last conv: read by the first linear layer through a flatten, H·W columns each.
        let w = t(&m, "classifier.0.weight");
        let channels = t(&m, "features.14.weight").size()[0];
        let spatial = w.size()[1] / channels;
        let read = per(&w.reshape([w.size()[0], channels, spatial]), 1, p);
        let want = (per(&t(&m, "features.14.weight"), 0, p)
            + per(&t(&m, "features.15.weight"), 0, p)
            + read)
            / 3.0;
        close(&s["features.14"], &want, "features.14");
        // A hidden linear layer: its row and the output layer's column.
        let want = (per(&t(&m, "classifier.0.weight"), 0, p)
            + per(&t(&m, "classifier.2.weight"), 1, p))
            / 2.0;
        close(&s["classifier.0"], &want, "classifier.0");
    }
}

#[test]
fn coupled_layers_share_their_group_score() {
    let m = model("resnet20", &[3, 32, 32], 5);
    let s = scores(&m, 1.0);
    let groups = fair_analysis::analyze(m.graph(), &[]).unwrap();
    let mut coupled = 0;
    for g in groups.groups().iter().filter(|g| g.layers.len() > 1) {
        coupled += 1;
        for l in &g.layers[1..] {
            assert_eq!(s[l], s[&g.layers[0]], "{l} and {}", g.layers[0]);
        }
    }
    assert!(coupled > 0, "ResNet-20 has residual groups");
    // And they differ from a layer's own L1 norm.
    let own = per(&t(&m, "conv1.weight"), 0, 1.0);
    let own = Vec::<f64>::try_from(&own).unwrap();
    assert_ne!(s["conv1"], own);
}

#[test]
#[ignore = "needs the reference Python with torch-pruning 1.6.1 (cargo xtask test runs it)"]
fn group_magnitude_equals_torch_pruning_group_magnitude_importance() {
    let Some(py) = fair_testkit::reference_python("the Torch-Pruning importance cross-check")
    else {
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/parity/tp_group_importance.py");
    for (name, shape) in [
        ("vgg_compact", [1usize, 28, 28]),
        ("resnet20", [3, 32, 32]),
        ("densenet40", [3, 32, 32]),
    ] {
        let m = model(name, &shape, 7);
        let dir = tempfile::tempdir().unwrap();
        fair_surgery::export(&m, dir.path()).unwrap();
        let ours: BTreeMap<u32, BTreeMap<String, Vec<f64>>> =
            [(1, scores(&m, 1.0)), (2, scores(&m, 2.0))].into();
        let layers: Vec<&String> = ours[&1].keys().collect();
        std::fs::write(
            dir.path().join("layers.json"),
            serde_json::to_string(&layers).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("input_shape.json"),
            serde_json::to_string(&shape).unwrap(),
        )
        .unwrap();
        let out = Command::new(&py)
            .arg(&script)
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tp_group_importance.py failed on {name}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reference: BTreeMap<String, BTreeMap<String, Vec<f64>>> = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("reference.json")).unwrap(),
        )
        .unwrap();
        let mut worst = 0.0f64;
        for (p, by_layer) in &ours {
            for (layer, s) in by_layer {
                let r = &reference[&p.to_string()][layer];
                assert_eq!(s.len(), r.len(), "{name} {layer}");
                for (u, (a, b)) in s.iter().zip(r).enumerate() {
                    let rel = (a - b).abs() / b.abs().max(1e-12);
                    worst = worst.max(rel);
                    // Torch-Pruning sums in float32.
                    assert!(
                        rel <= 1e-4,
                        "{name}, p = {p}, {layer} unit {u}: ours {a}, Torch-Pruning {b}"
                    );
                }
            }
        }
        eprintln!(
            "{name}: group-l1/group-l2 of {} layers equal Torch-Pruning's, max rel. diff {worst:.1e}",
            layers.len()
        );
    }
}
