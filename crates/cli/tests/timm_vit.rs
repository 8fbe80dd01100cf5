//! Issue 24: timm's `VisionTransformer` (the class of timm's ViT and DeiT; image 32, patch 8,
//! 2 blocks of 4 heads, width 32, MLP 64, 10 classes) and DeiT's distilled variant
//! (`VisionTransformerDistilled`: a class and a distillation token, two heads averaged), as
//! the fixtures `timm_vit_*` and `timm_deit_*` of `crates/onnx/tests/fixtures` (timm 1.0.15,
//! exported by TorchScript at opset 17 and by dynamo at 18; the ViT also with a dynamic
//! batch axis), and a ViT with timm's other spellings (`timm_vit_ls_avg_*`: LayerScale, the
//! explicit attention of `fused_attn = False`, no class token, `global_pool="avg"`). timm's
//! attention computes q, k and v with one fused `qkv` linear layer, split by
//! `reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4).unbind(0)`: it imports as three q, k, v
//! linears + `attention` + the output projection, computes what ONNX Runtime computed on the
//! file, has heads and MLP neurons as units, prunes them as the dead-unit model computes, and
//! goes through `import → score → ratios → apply`.

mod common;

use std::path::{Path, PathBuf};

use common::transformers::{
    eval, facts, fixture, floats, load, max_abs, prunable, random_plan_gives_the_dead_unit_model,
};
use fair_analysis::UnitMap;
use fair_runtime::Model;
use tch::{Device, Tensor};

/// Which timm model a fixture is.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// `VisionTransformer`: a class token read by the head.
    Vit,
    /// `VisionTransformerDistilled`: a class and a distillation token, two heads averaged.
    Deit,
    /// `VisionTransformer` with LayerScale, the explicit attention, no class token and the
    /// mean over the tokens.
    Variant,
}

impl Kind {
    /// The tokens put before the patches (class, distillation).
    fn prefix(self) -> usize {
        match self {
            Kind::Vit => 1,
            Kind::Deit => 2,
            Kind::Variant => 0,
        }
    }
}

/// Every export.
const EXPORTS: [(&str, Kind); 8] = [
    ("timm_vit_ts17", Kind::Vit),
    ("timm_vit_dyn18", Kind::Vit),
    ("timm_vit_ts17_dynbatch", Kind::Vit),
    ("timm_vit_dyn18_dynbatch", Kind::Vit),
    ("timm_deit_ts17", Kind::Deit),
    ("timm_deit_dyn18", Kind::Deit),
    ("timm_vit_ls_avg_ts17", Kind::Variant),
    ("timm_vit_ls_avg_dyn18", Kind::Variant),
];

/// The exports with a dynamic batch axis.
const DYNAMIC: [&str; 2] = ["timm_vit_ts17_dynbatch", "timm_vit_dyn18_dynbatch"];

/// The fixture's sample input, `[2, 3, 32, 32]`.
fn sample(name: &str) -> Tensor {
    Tensor::from_slice(&floats(&facts(name), "sample_input")).reshape([2, 3, 32, 32])
}

/// The one IR node reading `name`.
fn reader<'g>(g: &'g fair_ir::Graph, name: &str) -> &'g fair_ir::Node {
    let r = g.readers(name);
    assert_eq!(r.len(), 1, "{name} has readers {r:?}");
    r[0]
}

#[test]
fn timm_vit_and_deit_of_both_exporters_compute_as_onnx_runtime_with_heads_and_neurons_as_units() {
    for (name, kind) in EXPORTS {
        let m = load(name);
        let g = m.graph();
        let ops: Vec<&str> = g.nodes().iter().map(|n| n.op.type_name()).collect();
        let count = |op: &str| ops.iter().filter(|o| **o == op).count();
        // DeiT: two tokens before the patches, two tokens read by two heads; the variant:
        // none, and the mean over the tokens.
        let prefix = kind.prefix();
        let heads = if kind == Kind::Deit { 2 } else { 1 };
        let mean = usize::from(kind == Kind::Variant);
        assert_eq!(
            [
                count("class_token"),
                count("position_embedding"),
                count("attention"),
                count("token_select"),
                count("token_mean"),
                count("tokens"),
                count("linear"),
                count("mul"),
            ],
            [prefix, 1, 2, prefix, mean, 1, 2 * 6 + heads, 0],
            "{name}: {ops:?}"
        );
        let mut selected = Vec::new();
        for n in g.nodes() {
            match &n.op {
                fair_ir::Op::Attention(a) => assert_eq!(a.head_dim, 8, "{name}"),
                fair_ir::Op::TokenSelect(t) => selected.push(t.index),
                fair_ir::Op::PositionEmbedding(p) => {
                    assert_eq!((p.tokens, p.features), (16 + prefix, 32), "{name}")
                }
                _ => {}
            }
        }
        selected.sort_unstable();
        assert_eq!(selected, (0..prefix).collect::<Vec<_>>(), "{name}");
        // The fused qkv becomes three linears named after the module, read by the attention,
        // whose output projection keeps the width 32.
        for b in 0..2 {
            let p = format!("blocks.{b}.attn");
            let attend = g.node(&format!("{p}.attend")).unwrap();
            let qkv: Vec<String> = ["q", "k", "v"]
                .iter()
                .map(|l| format!("{p}.{l}_proj"))
                .collect();
            assert_eq!(attend.inputs, qkv, "{name}");
            for l in &qkv {
                assert_eq!(
                    g.node(l).unwrap().op,
                    fair_ir::Linear::new(32, 32).into(),
                    "{name}: {l}"
                );
            }
            let proj = reader(g, &attend.name);
            assert_eq!(proj.op, fair_ir::Linear::new(32, 32).into(), "{name}");
        }
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
        // Units: each attention's heads (q, k, v as one group, 4 heads of 8 channels) and
        // each MLP's hidden neurons; the residual stream is held by the layer norms.
        let groups = prunable(&m);
        let mut kinds: Vec<(usize, UnitMap, usize)> = groups
            .iter()
            .map(|(_, u, map, layers)| (*u, *map, layers.len()))
            .collect();
        kinds.sort_by_key(|k| k.0);
        let heads = (4, UnitMap::Chunks { size: 8 }, 3);
        let mlp = (64, UnitMap::Identity, 1);
        assert_eq!(kinds, [heads, heads, mlp, mlp], "{name}: {groups:?}");
    }
}

#[test]
fn a_dynamic_batch_timm_export_computes_as_onnx_runtime_at_other_batch_sizes() {
    for name in DYNAMIC {
        common::transformers::computes_as_onnx_runtime_at_batches_1_and_3(name, &[3, 32, 32], 10);
    }
}

#[test]
fn a_random_plan_of_timm_heads_and_neurons_gives_the_dead_unit_model() {
    for (seed, (name, _)) in EXPORTS.iter().enumerate() {
        let mut rng = common::transformers::Rng(0x2545_f491_4f6c_dd1d + seed as u64);
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
fn the_cli_imports_scores_plans_and_prunes_timm_vit_and_deit() {
    let dir = tempfile::tempdir().unwrap();
    for (name, kind) in EXPORTS {
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
            let p = format!("blocks.{b}.attn");
            let w = g.units(&format!("{p}.q_proj")).unwrap();
            assert_eq!(w % 8, 0, "{name}: {p}");
            assert_eq!(g.units(&format!("{p}.k_proj")), Some(w));
            assert_eq!(g.units(&format!("{p}.v_proj")), Some(w));
            let proj = reader(&g, &format!("{p}.attend"));
            assert_eq!(g.units(&proj.name), Some(32), "{name}");
        }
        assert_eq!(g.units("patch_embed.proj"), Some(32));
        // The ONNX export reads back as the same graph, and the PyTorch export names the
        // token ops.
        let back = fair_onnx::import_file(&out.join("model.onnx")).unwrap();
        assert_eq!(back.graph.nodes(), g.nodes(), "{name}");
        let py = std::fs::read_to_string(out.join("model.py")).unwrap();
        let pos = format!("PositionEmbedding({}, 32)", 16 + kind.prefix());
        assert!(py.contains(&pos), "{name}: model.py lacks {pos}");
        for needle in ["ClassToken(32)", "[:, 0]"] {
            assert_eq!(
                py.contains(needle),
                kind.prefix() > 0,
                "{name}: model.py and {needle}"
            );
        }
    }
}

#[test]
#[ignore = "needs the reference Python (onnx, onnxruntime, torch): run with cargo xtask test"]
fn pruned_timm_vit_and_deit_exports_pass_the_onnx_checker_and_compute_as_ours() {
    let Some(py) = fair_testkit::reference_python("the pruned timm ViT's ONNX and PyTorch check")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (name, _) in EXPORTS {
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
            eprintln!("{name}: max |ours - {key}| = {d:e}");
            assert!(
                d <= 1e-4 * max_abs(&ours),
                "{name}: {key} differs from ours by {d}"
            );
        }
    }
}
