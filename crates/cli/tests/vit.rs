//! Issue 24: torchvision's `VisionTransformer` (image 32, patch 8, 2 layers of 4 heads, width
//! 32, MLP 64, 10 classes; `tv_vit_ts17` and `tv_vit_dyn18`, fixtures of
//! `crates/onnx/tests/fixtures` exported by TorchScript at opset 17 and by dynamo at 18 with a
//! fixed batch of 2, and `tv_vit_ts17_dynbatch` and `tv_vit_dyn18_dynbatch`, the same exported
//! with a dynamic batch axis) imports (class token, position embedding, `nn.MultiheadAttention` as q, k, v linears +
//! attention + out_proj, the class token read by the head), computes what ONNX Runtime
//! computed on the file, has heads and MLP neurons as units, prunes them as the dead-unit
//! model computes, and goes through `import → score → ratios → apply`.
//! The README walk-through's `scripts/export_example_vit.py` writes, with either exporter, a
//! dynamic-batch file that imports and computes as ONNX Runtime.

mod common;

use std::path::{Path, PathBuf};

use common::transformers::{
    eval, facts, fixture, floats, load, max_abs, prunable, random_plan_gives_the_dead_unit_model,
};
use common::{run, stderr};
use fair_analysis::UnitMap;
use fair_runtime::Model;
use tch::{Device, Tensor};

const EXPORTS: [&str; 4] = [
    "tv_vit_ts17",
    "tv_vit_dyn18",
    "tv_vit_ts17_dynbatch",
    "tv_vit_dyn18_dynbatch",
];

/// The exports with a dynamic batch axis.
const DYNAMIC: [&str; 2] = ["tv_vit_ts17_dynbatch", "tv_vit_dyn18_dynbatch"];

/// The fixture's sample input, `[2, 3, 32, 32]`.
fn sample(name: &str) -> Tensor {
    Tensor::from_slice(&floats(&facts(name), "sample_input")).reshape([2, 3, 32, 32])
}

#[test]
fn torchvision_vit_of_both_exporters_computes_as_onnx_runtime_with_heads_and_neurons_as_units() {
    for name in EXPORTS {
        let m = load(name);
        let g = m.graph();
        let ops: Vec<&str> = g.nodes().iter().map(|n| n.op.type_name()).collect();
        let count = |op: &str| ops.iter().filter(|o| **o == op).count();
        assert_eq!(
            [
                count("class_token"),
                count("position_embedding"),
                count("attention"),
                count("token_select"),
                count("tokens"),
                count("linear"),
            ],
            [1, 1, 2, 1, 1, 2 * 6 + 1],
            "{name}: {ops:?}"
        );
        for n in g.nodes() {
            match &n.op {
                fair_ir::Op::Attention(a) => assert_eq!(a.head_dim, 8, "{name}"),
                fair_ir::Op::TokenSelect(t) => assert_eq!(t.index, 0, "{name}"),
                fair_ir::Op::PositionEmbedding(p) => {
                    assert_eq!((p.tokens, p.features), (17, 32), "{name}")
                }
                _ => {}
            }
        }
        // The fused in_proj becomes three linears named after the module.
        for b in 0..2 {
            let p = format!("encoder.layers.encoder_layer_{b}.self_attention");
            let attend = g.node(&format!("{p}.attend")).unwrap();
            let qkv: Vec<String> = ["q", "k", "v"]
                .iter()
                .map(|l| format!("{p}.{l}_proj"))
                .collect();
            assert_eq!(attend.inputs, qkv, "{name}");
            assert_eq!(
                g.node(&qkv[0]).unwrap().op,
                fair_ir::Linear::new(32, 32).into()
            );
        }
        // What ONNX Runtime computed on the original file, to 1e-4 of the output's scale.
        let f = facts(name);
        let want = Tensor::from_slice(&floats(&f, "ort_output")).reshape([2, 10]);
        let got = eval(&m, &sample(name));
        let d = max_abs(&(&got - &want));
        assert!(
            d <= 1e-4 * max_abs(&want),
            "{name}: max |Δ| = {d} of scale {}",
            max_abs(&want)
        );
        // Units: each attention's heads (q, k, v as one group, 4 heads of 8 channels) and
        // each MLP's hidden neurons; the residual stream is held by the layer norms.
        let groups = prunable(&m);
        let kinds: Vec<(usize, UnitMap, usize)> = groups
            .iter()
            .map(|(_, u, map, layers)| (*u, *map, layers.len()))
            .collect();
        let heads = (4, UnitMap::Chunks { size: 8 }, 3);
        let mlp = (64, UnitMap::Identity, 1);
        let mut sorted = kinds.clone();
        sorted.sort_by_key(|k| k.0);
        assert_eq!(sorted, [heads, heads, mlp, mlp], "{name}: {groups:?}");
    }
}

#[test]
fn a_dynamic_batch_export_computes_as_onnx_runtime_at_other_batch_sizes() {
    for name in DYNAMIC {
        common::transformers::computes_as_onnx_runtime_at_batches_1_and_3(name, &[3, 32, 32], 10);
    }
}

#[test]
fn a_random_plan_of_heads_and_neurons_gives_the_dead_unit_model() {
    for (seed, name) in EXPORTS.iter().enumerate() {
        let mut rng = common::transformers::Rng(0x9e37_79b9_7f4a_7c15 + seed as u64);
        random_plan_gives_the_dead_unit_model(name, &load(name), &sample(name), &mut rng, 8);
    }
}

/// `import → score --criteria l1 → ratios --target-macs 0.3 --write-plan → apply` on each
/// export (ToD by l1 alone); returns the pruned model's directory.
fn pipeline(dir: &Path, name: &str) -> PathBuf {
    let flags = &["--remove-by", "l1", "--protect-by", "l1", "--rank-by", "l1"];
    common::import_score_ratios_apply(&dir.join(name), &fixture(name), flags).1
}

#[test]
fn the_cli_imports_scores_plans_and_prunes_torchvision_vit() {
    let dir = tempfile::tempdir().unwrap();
    for name in EXPORTS {
        let out = pipeline(dir.path(), name);
        let before = load(name).graph().macs();
        let g = fair_ir::Graph::load(&out.join("model.toml")).unwrap();
        assert!(
            (g.macs() as f64) < 0.8 * before as f64,
            "{name}: {} of {before} MACs left",
            g.macs()
        );
        // Heads go whole (q, k, v keep a multiple of 8 channels, equal), the residual
        // stream keeps 32.
        for b in 0..2 {
            let p = format!("encoder.layers.encoder_layer_{b}.self_attention");
            let w = g.units(&format!("{p}.q_proj")).unwrap();
            assert_eq!(w % 8, 0, "{name}: {p}");
            assert_eq!(g.units(&format!("{p}.k_proj")), Some(w));
            assert_eq!(g.units(&format!("{p}.v_proj")), Some(w));
            assert_eq!(g.units(&format!("{p}.out_proj")), Some(32));
        }
        assert_eq!(g.units("conv_proj"), Some(32));
        // The ONNX export reads back as the same graph, and the PyTorch export names the
        // token ops.
        let back = fair_onnx::import_file(&out.join("model.onnx")).unwrap();
        assert_eq!(back.graph.nodes(), g.nodes(), "{name}");
        let py = std::fs::read_to_string(out.join("model.py")).unwrap();
        for needle in ["ClassToken(32)", "PositionEmbedding(17, 32)", "[:, 0]"] {
            assert!(py.contains(needle), "{name}: model.py lacks {needle}");
        }
    }
}

#[test]
#[ignore = "needs the reference Python (onnx, onnxruntime, torch): run with cargo xtask test"]
fn pruned_torchvision_vit_exports_pass_the_onnx_checker_and_compute_as_ours() {
    let Some(py) = fair_testkit::reference_python("the pruned ViT's ONNX and PyTorch check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for name in EXPORTS {
        let out = pipeline(dir.path(), name);
        let m = Model::from_safetensors(
            fair_ir::Graph::load(&out.join("model.toml")).unwrap(),
            &out.join("model.safetensors"),
            Device::Cpu,
        )
        .unwrap();
        let x = sample(name);
        let ours = eval(&m, &x);
        let input = dir.path().join(format!("{name}-x.safetensors"));
        Tensor::write_safetensors(&[("x", &x)], &input).unwrap();
        // onnx.checker with full shape inference, then ONNX Runtime on the exported file and
        // the exported model.py (its weights from model.safetensors) on the same input.
        let script = r#"
import json, sys
import numpy as np, onnx, onnxruntime as ort, torch
from safetensors.torch import load_file
out, inp = sys.argv[1], sys.argv[2]
onnx.checker.check_model(onnx.load(f"{out}/model.onnx"), full_check=True)
x = load_file(inp)["x"]
s = ort.InferenceSession(f"{out}/model.onnx", providers=["CPUExecutionProvider"])
y = s.run(None, {s.get_inputs()[0].name: x.numpy()})[0]
sys.path.insert(0, out)
from model import load
z = load(f"{out}/model.safetensors")(x).detach().numpy()
print(json.dumps({"ort": y.flatten().tolist(), "torch": z.flatten().tolist()}))
"#;
        let o = std::process::Command::new(&py)
            .args(["-c", script])
            .arg(&out)
            .arg(&input)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        for key in ["ort", "torch"] {
            let theirs = Tensor::from_slice(&floats(&v, key)).reshape([2, 10]);
            let d = max_abs(&(&ours - &theirs));
            assert!(
                d <= 1e-4 * max_abs(&ours),
                "{name}: {key} differs from ours by {d}"
            );
        }
    }
}

#[test]
#[ignore = "needs the reference Python (torch, torchvision, onnx, onnxruntime): run with cargo xtask test"]
fn the_readme_vit_export_script_writes_files_of_both_exporters_that_import_and_compute_as_onnx_runtime()
 {
    let Some(py) = fair_testkit::reference_python("the README's ViT export script") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/export_example_vit.py");
    // The file's opset and batch axis, and ONNX Runtime's output on 3 seeded images.
    let check = r#"
import json, sys
import numpy as np, onnx, onnxruntime as ort
f = sys.argv[1]
m = onnx.load(f)
opset = [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")][0]
batch = m.graph.input[0].type.tensor_type.shape.dim[0]
x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
s = ort.InferenceSession(f, providers=["CPUExecutionProvider"])
y = s.run(None, {s.get_inputs()[0].name: x})[0]
print(json.dumps({"opset": opset, "batch_param": batch.dim_param, "x": x.flatten().tolist(),
                  "ort": y.flatten().tolist()}))
"#;
    for (flags, opset) in [(&[][..], 17), (&["--dynamo"][..], 18)] {
        let file = dir.path().join(format!("vit{}.onnx", flags.len()));
        let o = std::process::Command::new(&py)
            .arg(&script)
            .arg(&file)
            .args(flags)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{flags:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = std::process::Command::new(&py)
            .args(["-c", check])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{flags:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["opset"], serde_json::json!(opset), "{flags:?}");
        assert_ne!(
            v["batch_param"],
            serde_json::json!(""),
            "{flags:?}: a fixed batch"
        );
        // `fair-pruner info --graph` reads it: 2 blocks of 4 heads of 8.
        let info = run(&["info", "--graph", file.to_str().unwrap()]);
        assert!(info.status.success(), "{flags:?}: {}", stderr(&info));
        let text = String::from_utf8_lossy(&info.stdout);
        assert_eq!(text.matches(" attention ").count(), 2, "{flags:?}: {text}");
        // Ours computes what ONNX Runtime computed, at a batch size the export did not see.
        let imported =
            fair_pipeline::import_onnx(&file, &fair_onnx::ImportOptions::default()).unwrap();
        let m = fair_pipeline::onnx_model(imported, Device::Cpu).unwrap();
        let x = Tensor::from_slice(&floats(&v, "x")).reshape([3, 1, 28, 28]);
        let want = Tensor::from_slice(&floats(&v, "ort")).reshape([3, 10]);
        let d = max_abs(&(&eval(&m, &x) - &want));
        assert!(d <= 1e-4 * max_abs(&want), "{flags:?}: max |Δ| = {d}");
    }
}
