//! A token model through the CLI: `prune --model token_mlp` with a MACs target prunes the
//! hidden neurons of its MLP blocks (units on the last axis of tokens) end to end.

mod common;

use common::{run, stderr, train_idx_toy};
use fair_runtime::{Mode, Model};
use tch::{Device, Kind, Tensor};

#[test]
fn prune_token_mlp_with_a_macs_target_prunes_only_hidden_neurons() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    let (flags, _) = train_idx_toy(dir.path(), "token_mlp", "1", &weights);
    let out = dir.path().join("pruned");
    let mut args = vec!["prune".to_owned()];
    args.extend(flags);
    args.extend(
        [
            "--weights",
            weights.to_str().unwrap(),
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
        ]
        .map(str::to_owned),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&refs);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let before = report["before"]["macs"].as_u64().unwrap();
    let r = &report["results"][0];
    let after = r["after"]["macs"].as_u64().unwrap();
    // 1×8×8 with 4×4 patches: 4 tokens of 32 features; conv 4·32·16, two blocks of two
    // token linears 4·32·64, head 32·2.
    assert_eq!(before, 4 * 32 * 16 + 2 * 2 * 4 * 32 * 64 + 64);
    assert!(
        after as f64 <= 0.5 * before as f64,
        "{after} of {before} MACs left"
    );
    let export = out.join(r["export"].as_str().unwrap());
    let g = fair_ir::Graph::load(&export.join("model.toml")).unwrap();
    assert_eq!(g.macs(), after);
    // Only hidden neurons can go: the residual stream (patch embedding, fc2) keeps 32.
    assert_eq!(g.units("patch_embed"), Some(32));
    for b in 0..2 {
        assert_eq!(g.units(&format!("blocks.{b}.fc2")), Some(32));
        assert_eq!(g.shape(&format!("blocks.{b}.add")).unwrap(), &[4, 32]);
    }
    let hidden: usize = (0..2)
        .map(|b| g.units(&format!("blocks.{b}.fc1")).unwrap())
        .sum();
    assert!(hidden < 128, "{hidden} hidden neurons left");
    // The PyTorch and ONNX exports spell the token ops (their numbers are checked where
    // Python with torch / onnxruntime exists: the ignored export tests and `cargo xtask`).
    let py = std::fs::read_to_string(export.join("model.py")).unwrap();
    for needle in ["nn.LayerNorm(32", ".flatten(2).transpose(1, 2)", ".mean(1)"] {
        assert!(py.contains(needle), "model.py lacks {needle}:\n{py}");
    }
    let onnx = std::fs::read(export.join("model.onnx")).unwrap();
    let has = |s: &str| onnx.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(has("LayerNormalization") && has("ReduceMean") && has("Transpose"));
    // The exported weights run as the exported graph says.
    let m = Model::from_safetensors(g, &export.join("model.safetensors"), Device::Cpu).unwrap();
    let x = Tensor::randn([3, 1, 8, 8], (Kind::Float, Device::Cpu));
    let y = tch::no_grad(|| m.forward(&x, Mode::Eval)).unwrap();
    assert_eq!(y.size(), [3, 2]);
}

/// Issue 24: a token model exported by PyTorch's TorchScript exporter (`tiny_tokens_ts17`, a
/// fixture of `crates/onnx/tests/fixtures`: patch conv, `flatten(2).transpose(1, 2)`, two
/// pre-LN GELU MLP blocks of nn.LayerNorm and nn.Linear on [N, T, F], `mean(1)`, a head) and
/// by its dynamo exporter (`tiny_tokens_dyn18`) computes what PyTorch computed, and
/// `prune --graph tiny_tokens_ts17.onnx` prunes its hidden neurons.
#[test]
fn a_torchscript_token_model_from_onnx_computes_as_pytorch_and_prunes_hidden_neurons() {
    let fixture = |name: &str| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../onnx/tests/fixtures/{name}.onnx"))
    };
    // Both exporters' files (TorchScript at opset 17, dynamo at 18) compute PyTorch's output.
    for name in ["tiny_tokens_ts17", "tiny_tokens_dyn18"] {
        let onnx = fixture(name);
        let facts: serde_json::Value =
            serde_json::from_slice(&std::fs::read(onnx.with_extension("json")).unwrap()).unwrap();
        let floats = |k: &str| -> Vec<f32> {
            facts[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        };
        let imported =
            fair_pipeline::import_onnx(&onnx, &fair_onnx::ImportOptions::default()).unwrap();
        let model = fair_pipeline::onnx_model(imported, Device::Cpu).unwrap();
        let x = Tensor::from_slice(&floats("sample_input")).reshape([-1, 1, 8, 8]);
        let y = tch::no_grad(|| model.forward(&x, Mode::Eval))
            .unwrap()
            .flatten(0, -1);
        let want = floats("torch_output");
        let got: Vec<f32> = Vec::try_from(&y).unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        let d = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            d <= 1e-5,
            "{name}: max |Δ| = {d}: {got:?} vs PyTorch's {want:?}"
        );
    }
    let onnx = fixture("tiny_tokens_ts17");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    fair_testkit::write_idx_toy(&data);
    let out = dir.path().join("pruned");
    let o = run(&[
        "prune",
        "--graph",
        onnx.to_str().unwrap(),
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
    // 1×8×8 in 4×2 patches: 8 tokens of 8 features; conv 8·8·(4·2), two blocks of two token
    // linears 8·8·16, head 8·10.
    assert_eq!(before, 8 * 8 * 8 + 2 * 2 * 8 * 8 * 16 + 8 * 10);
    assert!(
        after as f64 <= 0.5 * before as f64,
        "{after} of {before} MACs left"
    );
    let export = out.join(r["export"].as_str().unwrap());
    let g = fair_ir::Graph::load(&export.join("model.toml")).unwrap();
    assert_eq!(g.macs(), after);
    // Only the hidden neurons (the first linear of each block) can go: the residual stream
    // (patch embedding, the second linear of each block) keeps its 8 features.
    let units = |pick: &dyn Fn(&fair_ir::Op) -> bool| -> Vec<usize> {
        g.nodes()
            .iter()
            .filter(|n| pick(&n.op))
            .map(|n| g.units(&n.name).unwrap())
            .collect()
    };
    assert_eq!(units(&|op| matches!(op, fair_ir::Op::Conv2d(_))), [8]);
    let linears = units(&|op| matches!(op, fair_ir::Op::Linear(_)));
    assert_eq!(linears.len(), 5, "{linears:?}");
    assert_eq!([linears[1], linears[3], linears[4]], [8, 8, 10]);
    assert!(linears[0] + linears[2] < 32, "{linears:?}");
    // The pruned model's ONNX export reads back as the same graph.
    let back = fair_onnx::import_file(&export.join("model.onnx")).unwrap();
    assert_eq!(back.graph.nodes(), g.nodes());
}
