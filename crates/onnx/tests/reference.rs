//! fair-onnx against the reference implementations: ONNX's checker and ONNX Runtime, run by
//! the reference Python (`FAIR_PRUNER_PYTHON`, provisioned by `cargo xtask setup` with onnx,
//! onnxruntime, onnxscript, torch and torchvision).
//!
//! Each test imports an ONNX file, exports the IR again, and has ONNX Runtime run the
//! original and the rewritten file on the same input: the outputs must agree to 1e-4 of the
//! output's scale, and the rewritten file must pass `onnx.checker` with full shape inference.

use std::path::{Path, PathBuf};
use std::process::Command;

use fair_onnx::ExportOptions;

/// The reference Python from `FAIR_PRUNER_PYTHON`. Without it the test fails with
/// instructions, unless `FAIR_PRUNER_SKIP_PYTHON=1` skips it knowingly (the rule of
/// fair-testkit's `reference_python`, which this pure crate cannot depend on).
fn python(what: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FAIR_PRUNER_PYTHON") {
        return Some(PathBuf::from(p));
    }
    if std::env::var_os("FAIR_PRUNER_SKIP_PYTHON").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: FAIR_PRUNER_SKIP_PYTHON=1, {what} does not run");
        return None;
    }
    panic!(
        "FAIR_PRUNER_PYTHON is not set, so {what} cannot run: run `cargo xtask setup` (or `cargo xtask test`), \
         which provisions Python with onnx and onnxruntime; set FAIR_PRUNER_SKIP_PYTHON=1 to skip it knowingly"
    );
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(name)
}

/// Imports `original`, exports it to `dir`, and compares both under ONNX Runtime:
/// returns (max |difference|, output scale).
fn round_trip(py: &Path, original: &Path, dir: &Path) -> (f64, f64, String) {
    let m = fair_onnx::import_file(original)
        .unwrap_or_else(|e| panic!("import {}: {e}", original.display()));
    let bytes = fair_onnx::export(&m.graph, &m.tensors, &ExportOptions::default())
        .unwrap_or_else(|e| panic!("export {}: {e}", original.display()));
    let stem = original.file_stem().unwrap().to_string_lossy();
    let rewritten = dir.join(format!("{stem}.fair.onnx"));
    std::fs::write(&rewritten, bytes).unwrap();
    let out = Command::new(py)
        .arg(script("ort_compare.py"))
        .arg(original)
        .arg(&rewritten)
        .output()
        .expect("run the reference Python");
    assert!(
        out.status.success(),
        "{}: ort_compare.py failed:\n{}",
        original.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{}: bad output {line}: {e}", original.display()));
    assert_eq!(v["checker"], "ok");
    let summary = format!(
        "{stem}: {} IR nodes, {} params, output {}",
        m.graph.nodes().len(),
        m.graph.param_count(),
        v["shape"]
    );
    (
        v["max_abs_diff"].as_f64().unwrap(),
        v["scale"].as_f64().unwrap(),
        summary,
    )
}

#[test]
#[ignore = "needs the reference Python (onnx, onnxruntime): run with cargo xtask test"]
fn rewritten_fixtures_match_onnx_runtime_on_the_originals() {
    let Some(py) = python("the ONNX Runtime check of the fixtures") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&fixtures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    for p in paths {
        let (diff, scale, summary) = round_trip(&py, &p, dir.path());
        eprintln!("{summary}: max |diff| {diff:.3e} (scale {scale:.3})");
        assert!(
            diff <= 1e-4 * scale.max(1e-6),
            "{}: ONNX Runtime outputs differ by {diff} (scale {scale})",
            p.display()
        );
    }
}

#[test]
#[ignore = "needs the reference Python (torch, torchvision, onnx, onnxruntime): run with cargo xtask test"]
fn torchvision_models_round_trip_through_onnx_runtime() {
    let Some(py) = python("the torchvision ONNX round trip") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let models = [
        "resnet18",
        "mobilenet_v3_small",
        "efficientnet_b0",
        "shufflenet_v2_x0_5",
    ];
    let out = Command::new(&py)
        .arg(script("export_torchvision.py"))
        .arg(dir.path())
        .arg("64")
        .args(models)
        .output()
        .expect("run the reference Python");
    assert!(
        out.status.success(),
        "export_torchvision.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut failures = Vec::new();
    for model in models {
        for exporter in ["ts", "dynamo"] {
            let path = dir.path().join(format!("{model}-{exporter}.onnx"));
            let (diff, scale, summary) = round_trip(&py, &path, dir.path());
            eprintln!("{summary}: max |diff| {diff:.3e} (scale {scale:.3})");
            if diff > 1e-4 * scale.max(1e-6) {
                failures.push(format!("{model}-{exporter}: {diff} (scale {scale})"));
            }
        }
    }
    assert!(failures.is_empty(), "outputs differ: {failures:?}");
}

#[test]
#[ignore = "needs the reference Python (torch, torchvision, onnx, onnxruntime): run with cargo xtask test"]
fn convnext_round_trips_through_onnx_runtime() {
    // Channels-last regions (LayerNorm, Linear as 1×1 convs, GELU's Erf formula) and layer
    // scales (randomised around 1, folded into the second Linear) in convnext_tiny at 64×64.
    let Some(py) = python("the ConvNeXt ONNX round trip") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(&py)
        .arg(script("export_torchvision.py"))
        .arg(dir.path())
        .arg("64")
        .arg("convnext_tiny")
        .output()
        .expect("run the reference Python");
    assert!(
        out.status.success(),
        "export_torchvision.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut failures = Vec::new();
    for exporter in ["ts", "dynamo"] {
        let path = dir.path().join(format!("convnext_tiny-{exporter}.onnx"));
        let m = fair_onnx::import_file(&path).unwrap();
        let ops: Vec<&str> = m.graph.nodes().iter().map(|n| n.op.type_name()).collect();
        let count = |op: &str| ops.iter().filter(|o| **o == op).count();
        // 18 blocks: two 1×1 convs, a gelu and a layer_norm2d each; 3 downsamplings, stem
        // and head: 5 more LayerNorm2d; no mul is left (the layer scales are folded).
        assert_eq!(
            (count("gelu"), count("layer_norm2d"), count("mul")),
            (18, 23, 0),
            "{exporter}"
        );
        assert_eq!(count("conv2d"), 1 + 18 * 3 + 3, "{exporter}");
        let (diff, scale, summary) = round_trip(&py, &path, dir.path());
        eprintln!("{summary}: max |diff| {diff:.3e} (scale {scale:.3})");
        if diff > 1e-4 * scale.max(1e-6) {
            failures.push(format!("convnext_tiny-{exporter}: {diff} (scale {scale})"));
        }
    }
    assert!(failures.is_empty(), "outputs differ: {failures:?}");
}

#[test]
#[ignore = "needs the reference Python (onnx, onnxruntime, torch): run with cargo xtask test"]
fn adaptive_pooling_of_any_sizes_exports_as_pytorch_computes_it() {
    let Some(py) = python("the adaptive pooling export check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Divisible (AveragePool), upsampling (AlexNet's 1×1 → 6×6 on small inputs) and
    // overlapping bins (5×7 → 3×4): the last two are written as two constant MatMuls.
    for (h, w, oh, ow) in [(6, 6, 3, 2), (1, 1, 6, 6), (5, 7, 3, 4), (7, 7, 7, 7)] {
        let graph = fair_ir::Graph::from_toml_str(&format!(
            r#"
            name = "pool"
            [[nodes]]
            name = "input"
            op = {{ type = "input", shape = [3, {h}, {w}] }}
            [[nodes]]
            name = "pool"
            op = {{ type = "adaptive_avg_pool2d", output_size = [{oh}, {ow}] }}
            "#
        ))
        .unwrap();
        let bytes = fair_onnx::export(&graph, &[], &ExportOptions::default()).unwrap();
        let path = dir.path().join(format!("pool-{h}x{w}-{oh}x{ow}.onnx"));
        std::fs::write(&path, bytes).unwrap();
        let out = Command::new(&py)
            .arg(script("adaptive_pool_check.py"))
            .arg(&path)
            .args([oh.to_string(), ow.to_string()])
            .output()
            .expect("run the reference Python");
        assert!(
            out.status.success(),
            "{h}x{w} → {oh}x{ow}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value =
            serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
        assert_eq!(v["shape"], v["want"], "{h}x{w} → {oh}x{ow}: {v}");
        let d = v["max_abs_diff"].as_f64().unwrap();
        assert!(d <= 1e-6, "{h}x{w} → {oh}x{ow}: max |Δ| = {d}");
    }
}
