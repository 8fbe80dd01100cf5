//! Issue 24: torchvision's `SwinTransformer`, V1 and V2 (patch 4 on 28², width 16, two stages
//! of two blocks with 2 and 4 heads of 8, 4×4 windows, 10 classes), as the fixtures
//! `tv_swin_*` and `tv_swinv2_*` of `crates/onnx/tests/fixtures` (exported by TorchScript
//! at opset 17 with a dynamic batch axis and by dynamo at 18). The 7×7 map is padded to 8×8
//! and cut into four windows (the second block's shifted by 2, with the shifted-window
//! mask), patch merging pads it to 8×8 and strides it to 4×4, where one window covers the
//! map (torchvision drops the shift). It imports as `window_partition` → q, k, v linears →
//! windowed `attention` (relative position bias; V2: cosine scores with a logit scale) →
//! output projection → `window_merge`, computes what ONNX Runtime computed on the file, has
//! heads and MLP neurons as units, prunes them as the dead-unit model computes, and goes
//! through `import → score → ratios → apply`.

mod common;

use common::transformers::{
    eval, facts, fixture, floats, load, max_abs, prunable, random_plan_gives_the_dead_unit_model,
};
use fair_analysis::UnitMap;
use fair_ir::{Op, Pair};
use tch::Tensor;

/// Every export, and whether it is V2.
const EXPORTS: [(&str, bool); 4] = [
    ("tv_swin_ts17", false),
    ("tv_swin_dyn18", false),
    ("tv_swinv2_ts17", true),
    ("tv_swinv2_dyn18", true),
];

/// The fixture's sample input, `[2, 3, 28, 28]`.
fn sample(name: &str) -> Tensor {
    Tensor::from_slice(&floats(&facts(name), "sample_input")).reshape([2, 3, 28, 28])
}

#[test]
fn swin_v1_and_v2_of_both_exporters_compute_as_onnx_runtime_with_windows_and_heads() {
    for (name, v2) in EXPORTS {
        let m = load(name);
        let g = m.graph();
        let ops: Vec<&str> = g.nodes().iter().map(|n| n.op.type_name()).collect();
        let count = |op: &str| ops.iter().filter(|o| **o == op).count();
        // Four blocks of pad/shift/partition … merge; patch merging's four strides and their
        // concat; the map back to an image before the pooling; per block q, k, v, proj and
        // the MLP's two linears, plus the merging's reduction and the head.
        assert_eq!(
            [
                count("window_partition"),
                count("window_merge"),
                count("attention"),
                count("grid_stride"),
                count("concat"),
                count("tokens_to_image"),
                count("linear"),
            ],
            [4, 4, 4, 4, 1, 1, 4 * 6 + 2],
            "{name}: {ops:?}"
        );
        // The windows: 7×7 padded to 8×8 (the second block shifted by 2), then 4×4 in one
        // window, unshifted.
        let mut seen = Vec::new();
        for n in g.nodes() {
            match &n.op {
                Op::WindowPartition(w) => seen.push((w.grid, w.window, w.shift)),
                Op::Attention(a) => {
                    let w = a.windows.as_ref().expect("windowed");
                    assert!(w.bias, "{name}: {} has its relative position bias", n.name);
                    assert_eq!(a.cosine, v2, "{name}: {}", n.name);
                    assert_eq!(a.head_dim, 8, "{name}");
                    assert_eq!(a.heads, Some(g.shape(&n.name).unwrap()[1] / 8), "{name}");
                }
                _ => {}
            }
        }
        let (p77, p44, w) = (Pair(7, 7), Pair(4, 4), Pair(4, 4));
        assert_eq!(
            seen,
            [
                (p77, w, Pair(0, 0)),
                (p77, w, Pair(2, 2)),
                (p44, w, Pair(0, 0)),
                (p44, w, Pair(0, 0))
            ],
            "{name}"
        );
        // What ONNX Runtime computed on the original file, to 1e-4 of the output's scale.
        let f = facts(name);
        let want = Tensor::from_slice(&floats(&f, "ort_output")).reshape([2, 10]);
        let got = eval(&m, &sample(name));
        let d = max_abs(&(&got - &want));
        eprintln!(
            "{name}: max |ours - ONNX Runtime| = {d:e} of scale {}",
            max_abs(&want)
        );
        assert!(
            d <= 1e-4 * max_abs(&want),
            "{name}: max |Δ| = {d} of scale {}",
            max_abs(&want)
        );
        // Units: each attention's heads (q, k, v as one group, 2 or 4 heads of 8 channels)
        // and each MLP's hidden neurons; the residual stream is held by the layer norms.
        let mut kinds: Vec<(usize, UnitMap, usize)> = prunable(&m)
            .iter()
            .map(|(_, u, map, layers)| (*u, *map, layers.len()))
            .collect();
        kinds.sort_by_key(|k| k.0);
        let heads = |h| (h, UnitMap::Chunks { size: 8 }, 3);
        let mlp = |u| (u, UnitMap::Identity, 1);
        assert_eq!(
            kinds,
            [
                heads(2),
                heads(2),
                heads(4),
                heads(4),
                mlp(64),
                mlp(64),
                mlp(128),
                mlp(128)
            ],
            "{name}"
        );
    }
}

#[test]
fn a_dynamic_batch_swin_export_computes_as_onnx_runtime_at_other_batch_sizes() {
    for name in ["tv_swin_ts17", "tv_swinv2_ts17"] {
        common::transformers::computes_as_onnx_runtime_at_batches_1_and_3(name, &[3, 28, 28], 10);
    }
}

#[test]
fn a_random_plan_of_swin_heads_and_neurons_gives_the_dead_unit_model() {
    for (seed, (name, _)) in EXPORTS.iter().enumerate() {
        let mut rng = common::transformers::Rng(0x9e37_79b9_7f4a_7c15 + seed as u64);
        random_plan_gives_the_dead_unit_model(name, &load(name), &sample(name), &mut rng, 8);
    }
}

#[test]
fn the_cli_imports_scores_plans_and_prunes_swin() {
    let dir = tempfile::tempdir().unwrap();
    let flags = &["--remove-by", "l1", "--protect-by", "l1", "--rank-by", "l1"];
    for (name, v2) in EXPORTS {
        let out =
            common::import_score_ratios_apply(&dir.path().join(name), &fixture(name), flags).1;
        let before = load(name).graph().macs();
        let g = fair_ir::Graph::load(&out.join("model.toml")).unwrap();
        assert!(
            (g.macs() as f64) < 0.8 * before as f64,
            "{name}: {} of {before} MACs left",
            g.macs()
        );
        // Heads go whole (q, k, v keep a multiple of 8 channels, equal), and the attention's
        // bias (and V2's logit scale) keep one slice per kept head.
        for n in g.nodes() {
            if let Op::Attention(a) = &n.op {
                let q = &n.inputs[0];
                let w = g.units(q).unwrap();
                assert_eq!(w % 8, 0, "{name}: {q}");
                assert!(n.inputs.iter().all(|i| g.units(i) == Some(w)), "{name}");
                assert_eq!(a.heads, Some(w / 8), "{name}: {}", n.name);
                assert_eq!(a.cosine, v2, "{name}");
            }
        }
        let py = std::fs::read_to_string(out.join("model.py")).unwrap();
        assert!(py.contains("BlockAttention"), "{name}: model.py");
    }
}
