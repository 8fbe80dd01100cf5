//! Grouped convolutions through the CLI: `score`, `ratios`, `apply` and `prune` prune them
//! within their groups (unit j = channel j of every group, the group count kept).

mod common;

use std::path::Path;

use common::{run, stderr, stdout};
use fair_analysis::{GroupedConvs, Plan, analyze_with};
use fair_runtime::{Mode, Model};
use tch::{Device, Kind, Tensor};

/// The ResNeXt-like block of the surgery tests (a grouped 3×3 conv with 4 groups inside a
/// residual block, a grouped projection with 2 groups) at 1×8×8, so it runs
/// on the IDX toy data (10 classes).
fn toy_graph(dir: &Path) -> std::path::PathBuf {
    let text = include_str!("../../surgery/tests/common/resnext_block.toml")
        .replace("shape = [3, 8, 8]", "shape = [1, 8, 8]")
        .replace("in_channels = 3,", "in_channels = 1,");
    let path = dir.join("resnext.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The graph and random weights (seed 0) written to `dir`.
fn toy_model(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, Model) {
    let graph = toy_graph(dir);
    let g = fair_ir::Graph::load(&graph).unwrap();
    let model = Model::new(g, Device::Cpu, 0).unwrap();
    let weights = dir.join("w.safetensors");
    model.save_weights(&weights).unwrap();
    (graph, weights, model)
}

fn conv(g: &fair_ir::Graph, name: &str) -> fair_ir::Conv2d {
    match &g.node(name).unwrap().op {
        fair_ir::Op::Conv2d(c) => c.clone(),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn prune_with_a_macs_target_prunes_grouped_convs_within_their_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (graph, weights, _) = toy_model(dir.path());
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    fair_testkit::write_idx_toy(&data);
    let out = dir.path().join("pruned");
    let o = run(&[
        "prune",
        "--graph",
        graph.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--data",
        "idx",
        "--data-path",
        data.to_str().unwrap(),
        "--target-macs",
        "0.5",
        "--per-class",
        "8",
        "--finetune-epochs",
        "0",
        "--no-latency",
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let before = report["before"]["macs"].as_u64().unwrap();
    let r = &report["results"][0];
    let after = r["after"]["macs"].as_u64().unwrap();
    assert!(
        after as f64 <= 0.5 * before as f64,
        "{after} of {before} MACs left"
    );
    let g =
        fair_ir::Graph::load(&out.join(r["export"].as_str().unwrap()).join("model.toml")).unwrap();
    assert_eq!(g.macs(), after);
    // The grouped convs kept their group counts and lost channels within their groups:
    // the 4-group conv's input and output (16 channels each), the projection's input (the
    // residual stream).
    let (b, p) = (conv(&g, "b1.conv2"), conv(&g, "proj"));
    assert_eq!((b.groups, p.groups), (4, 2));
    assert!(
        b.in_channels < 16 || b.out_channels < 16 || p.in_channels < 16,
        "{b:?} {p:?}"
    );
    assert!(b.in_channels % 4 == 0 && b.out_channels % 4 == 0 && p.in_channels % 2 == 0);
    // report.md counts within-group units as units × groups: b1.conv1 feeds, and b1.conv2
    // is, the 4-group conv of 16 channels.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for l in ["b1.conv1", "b1.conv2"] {
        assert!(md.contains(&format!("| {l} | 16 (4 × 4 groups) |")), "{md}");
    }
}

#[test]
fn score_ratios_apply_give_the_dead_unit_model_with_within_group_units() {
    let dir = tempfile::tempdir().unwrap();
    let (graph, weights, model) = toy_model(dir.path());
    let (g, w) = (graph.to_str().unwrap(), weights.to_str().unwrap());
    tch::manual_seed(0);
    let labels =
        Tensor::arange(2, (Kind::Int64, Device::Cpu)).repeat_interleave_self_int(6, 0, None);
    let inputs = Tensor::randn([12, 1, 8, 8], (Kind::Float, Device::Cpu));
    let cal = dir.path().join("cal.safetensors");
    fair_runtime::write_safetensors(
        &cal,
        &[("inputs".into(), inputs), ("labels".into(), labels)],
    )
    .unwrap();
    let scores = dir.path().join("s.json");
    let o = run(&[
        "score",
        "--graph",
        g,
        "--weights",
        w,
        "--calibration",
        cal.to_str().unwrap(),
        "--out",
        scores.to_str().unwrap(),
        "--samples-per-class",
        "6",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Score files list the grouped convs too (per output channel).
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&scores).unwrap()).unwrap();
    let listed: Vec<&str> = file["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["layer"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["stem", "b1.conv1", "b1.conv2", "b1.conv3", "proj"]);
    let plan = dir.path().join("plan.json");
    let o = run(&[
        "ratios",
        "--scores",
        scores.to_str().unwrap(),
        "--target-macs",
        "0.5",
        "--write-plan",
        plan.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Units in the maps' terms: stem and b1.conv3 8 (2 blocks), b1.conv1 and b1.conv2 4
    // (4 blocks), proj 12 (2 blocks).
    assert!(
        stdout(&o).contains("b1.conv2") && stdout(&o).contains("(5 layers, 36 units)"),
        "{}",
        stdout(&o)
    );
    let p = Plan::load(&plan).unwrap();
    // Within-group unit indices: the 4-group conv's 16 channels are 4 units, the stream
    // read by the 2-group projection (and by nothing with 4 groups) 8 units.
    assert!(!p.remove.is_empty(), "{p:?}");
    let limits = [
        ("b1.conv1", 4),
        ("b1.conv2", 4),
        ("stem", 8),
        ("b1.conv3", 8),
        ("proj", 24),
    ];
    for (layer, units) in &p.remove {
        let limit = limits.iter().find(|(l, _)| l == layer).unwrap().1;
        assert!(units.iter().all(|&u| u < limit), "{layer}: {units:?}");
    }
    let out = dir.path().join("applied");
    let o = run(&[
        "apply",
        "--graph",
        g,
        "--weights",
        w,
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let pruned = Model::from_safetensors(
        fair_ir::Graph::load(&out.join("model.toml")).unwrap(),
        &out.join("model.safetensors"),
        Device::Cpu,
    )
    .unwrap();
    let (before, after) = (model.graph().macs(), pruned.graph().macs());
    assert!(after as f64 <= 0.5 * before as f64, "{after} of {before}");
    // The dead-unit model: the removed units' reading columns zeroed in the original.
    let groups = analyze_with(model.graph(), &[], GroupedConvs::WithinGroups).unwrap();
    tch::no_grad(|| {
        for (gi, group) in groups.groups().iter().enumerate() {
            let Some(units) = group.layers.iter().find_map(|l| p.remove.get(l)) else {
                continue;
            };
            let units: std::collections::BTreeSet<usize> = units.iter().copied().collect();
            for (node, cols) in groups.reading_columns(model.graph(), gi, &units) {
                let mut t = model
                    .tensor(&format!("{node}.weight"))
                    .unwrap()
                    .shallow_clone();
                let _ = t.index_fill_(1, &Tensor::from_slice(&cols), 0.0);
            }
        }
    });
    let x = Tensor::randn([2, 1, 8, 8], (Kind::Float, Device::Cpu));
    let eval = |m: &Model| tch::no_grad(|| m.forward(&x, Mode::Eval)).unwrap();
    let (a, b) = (eval(&model), eval(&pruned));
    let d = (&a - &b).abs().max().double_value(&[]);
    let scale = a.abs().max().double_value(&[]).max(1.0);
    assert!(d <= 1e-5 * scale, "max |Δ| = {d} (scale {scale})");
}
