//! Issue 24's checks on configurations no fixture has: `tests/py/export_variants.py` exports
//! torchvision's `VisionTransformer` with other head counts, head widths, depths, patch and
//! image sizes (one head included), hand-written batch-first attention (PyTorch's
//! `scaled_dot_product_attention`, and the explicit product with `d ** 0.5`), ResNeXt-style
//! grouped convolutions of 3, 4 and 8 groups, depthwise-separable convolutions, timm's ViT
//! (3 heads, one-channel input; and with two register tokens and the mean over the patch tokens)
//! and DeiT's distilled class (2 heads, LayerScale, no qkv bias), torchvision's Swin V1 and
//! V2 (padding, 3×5 windows, a shift on one axis only) and a small MaxViT (block and grid
//! attention), each with both exporters
//! (TorchScript at opset 17, dynamo at 18 with its external data file) and a dynamic batch
//! axis. For each file: the import computes what ONNX Runtime computed on it;
//! `import → score --criteria l1 → ratios --target-macs 0.3 --write-plan → apply`, spelled
//! as the issue spells it, removes at least 30% of the MACs; and on every pruned export
//! `onnx.checker` passes and ONNX Runtime on `model.onnx`, PyTorch on `model.py` and
//! fair-pruner agree.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::transformers::{eval, floats, max_abs};
use fair_runtime::Model;
use tch::{Device, Tensor};

/// How far `theirs` may be from `ours`: 1e-4 of the output's scale, and a hundredth of
/// how much the output varies over the batch, so that a model whose output hardly depends
/// on its input cannot pass with its input path wrong.
fn tolerance(ours: &Tensor) -> f64 {
    let spread = max_abs(&(ours - ours.mean_dim(0, true, tch::Kind::Float)));
    assert!(
        spread > 1e-6 * max_abs(ours),
        "the output hardly varies over the batch"
    );
    (1e-4 * max_abs(ours)).min(1e-2 * spread)
}

/// The sample batch of 3 and ONNX Runtime's output on it, from the file's JSON.
fn reference(onnx: &Path) -> (Tensor, Tensor) {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(onnx.with_extension("json")).unwrap()).unwrap();
    let mut shape = vec![3i64];
    shape.extend(
        v["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap()),
    );
    let x = Tensor::from_slice(&floats(&v, "sample_input")).reshape(&shape);
    let outputs = v["outputs"].as_i64().unwrap();
    let y = Tensor::from_slice(&floats(&v, "onnxruntime")).reshape([3, outputs]);
    (x, y)
}

#[test]
#[ignore = "needs the reference Python (torch, torchvision, onnx, onnxruntime): run with cargo xtask test"]
fn transformers_and_grouped_convs_in_unnamed_configurations_import_prune_and_export() {
    let Some(py) = fair_testkit::reference_python("the exported variants") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/export_variants.py");
    let o = Command::new(&py)
        .arg(&script)
        .arg(dir.path().join("onnx"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files: Vec<PathBuf> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("wrote "))
        .map(PathBuf::from)
        .collect();
    assert_eq!(files.len(), 30, "15 variants × 2 exporters: {files:?}");
    let mut checks = Vec::new();
    for onnx in &files {
        let name = onnx.file_stem().unwrap().to_str().unwrap().to_owned();
        let work = dir.path().join(&name);
        let (imported, pruned) = common::import_score_ratios_apply(&work, onnx, &[]);
        // The import computes what ONNX Runtime computed on the file.
        let load = |d: &Path| {
            Model::from_safetensors(
                fair_ir::Graph::load(&d.join("model.toml")).unwrap(),
                &d.join("model.safetensors"),
                Device::Cpu,
            )
            .unwrap()
        };
        let (x, y) = reference(onnx);
        let before = load(&imported);
        let ours = eval(&before, &x);
        let d = max_abs(&(&ours - &y));
        assert!(
            d <= tolerance(&y),
            "{name}: imported model differs from ONNX Runtime by {d} (tolerance {})",
            tolerance(&y)
        );
        // At least 30% of the MACs are gone.
        let after = load(&pruned);
        let (m0, m1) = (before.graph().macs(), after.graph().macs());
        let removed = 1.0 - m1 as f64 / m0 as f64;
        assert!(removed >= 0.3 - 1e-9, "{name}: {m0} → {m1} MACs");
        let out = eval(&after, &x);
        let input = work.join("x.safetensors");
        Tensor::write_safetensors(&[("x", &x)], &input).unwrap();
        checks.push((name, pruned, input, out));
    }
    // Every pruned export: onnx.checker (full), then ONNX Runtime on model.onnx and PyTorch
    // on model.py with its model.safetensors, on the sample batch; one Python for all.
    let script = r#"
import json, sys
import numpy as np, onnx, onnxruntime as ort
from safetensors.torch import load_file
import importlib.util
result = {}
for out, inp in zip(sys.argv[1::2], sys.argv[2::2]):
    onnx.checker.check_model(onnx.load(f"{out}/model.onnx"), full_check=True)
    x = load_file(inp)["x"]
    s = ort.InferenceSession(f"{out}/model.onnx", providers=["CPUExecutionProvider"])
    y = s.run(None, {s.get_inputs()[0].name: x.numpy()})[0]
    spec = importlib.util.spec_from_file_location(f"m{len(result)}", f"{out}/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    z = module.load(f"{out}/model.safetensors")(x).detach().numpy()
    result[out] = {"ort": y.flatten().tolist(), "torch": z.flatten().tolist()}
print(json.dumps(result))
"#;
    let mut cmd = Command::new(&py);
    cmd.args(["-c", script]);
    for (_, pruned, input, _) in &checks {
        cmd.arg(pruned).arg(input);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for (name, pruned, _, ours) in &checks {
        let got = &v[pruned.to_str().unwrap()];
        let ort = Tensor::from_slice(&floats(got, "ort")).reshape(ours.size());
        let torch = Tensor::from_slice(&floats(got, "torch")).reshape(ours.size());
        let tol = tolerance(ours);
        for (what, t) in [("ONNX Runtime", &ort), ("PyTorch", &torch)] {
            let d = max_abs(&(ours - t));
            assert!(
                d <= tol,
                "{name}: {what} on the export differs by {d} (> {tol})"
            );
        }
        let d = max_abs(&(&ort - &torch));
        assert!(
            d <= tol,
            "{name}: ONNX Runtime and PyTorch differ by {d} (> {tol})"
        );
    }
}
