//! A vision transformer with multi-head attention through the CLI: `prune --model tiny_vit
//! --target-macs 0.5` removes whole heads (q, k, v rows and the output projection's input
//! columns, the head dimension kept) and MLP neurons, and the report counts heads for the
//! attention groups.

mod common;

use common::{run, stderr, train_idx_toy};
use fair_runtime::{Mode, Model};
use tch::{Device, Kind, Tensor};

#[test]
fn prune_tiny_vit_with_a_macs_target_removes_heads_and_neurons() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("w.safetensors");
    let (flags, _) = train_idx_toy(dir.path(), "tiny_vit", "1", &weights);
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
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let before = report["before"]["macs"].as_u64().unwrap();
    let r = &report["results"][0];
    let after = r["after"]["macs"].as_u64().unwrap();
    // 1×8×8 with 2×2 patches: 16 tokens of 32 features; conv 16·32·4, per block four
    // 16·32·32 projections, attention 2·16²·32, fc1 and fc2 16·32·64; head 32·2.
    let block = 4 * 16 * 32 * 32 + 2 * 256 * 32 + 2 * 16 * 32 * 64;
    assert_eq!(before, 16 * 32 * 4 + 2 * block + 64);
    assert!(
        after as f64 <= 0.5 * before as f64,
        "{after} of {before} MACs left"
    );
    let export = out.join(r["export"].as_str().unwrap());
    let g = fair_ir::Graph::load(&export.join("model.toml")).unwrap();
    assert_eq!(g.macs(), after);
    // Heads go whole: q, k and v keep one multiple of the head size (8), the attention keeps
    // head_dim 8, and the output projection reads what v keeps; the residual stream keeps 32.
    let mut heads_left = 0;
    for b in 0..2 {
        let p = format!("blocks.{b}.attn");
        let w = g.units(&format!("{p}.q")).unwrap();
        assert_eq!(w % 8, 0, "{p}: {w} channels");
        assert_eq!(g.units(&format!("{p}.k")), Some(w));
        assert_eq!(g.units(&format!("{p}.v")), Some(w));
        assert_eq!(
            g.node(&format!("{p}.attend")).unwrap().op,
            fair_ir::Attention::new(8).into()
        );
        assert_eq!(
            g.node(&format!("{p}.proj")).unwrap().op,
            fair_ir::Linear::new(w, 32).into()
        );
        heads_left += w / 8;
    }
    assert_eq!(g.units("patch_embed"), Some(32));
    // The report counts heads for the attention layers (8 channels each) and neurons for
    // the MLPs: `requested` in units, `units` and `keep` in channels.
    let hidden: usize = (0..2)
        .map(|b| g.units(&format!("blocks.{b}.mlp.fc1")).unwrap())
        .sum();
    assert!(
        heads_left < 8 && hidden < 128,
        "{heads_left} heads and {hidden} neurons left"
    );
    for l in r["layers"].as_array().unwrap() {
        let name = l["layer"].as_str().unwrap();
        if name.contains(".attn.") && !name.ends_with(".proj") {
            assert_eq!(l["unit_channels"], 8, "{l}");
            assert_eq!(l["unit_name"], "head", "{l}");
            assert!(l["requested"].as_u64().unwrap() < 4, "{l}");
        } else {
            assert!(l.get("unit_channels").is_none(), "{l}");
        }
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| blocks.0.attn.q | 32 (4 heads of 8) |"),
        "{md}"
    );
    assert!(md.contains("| blocks.0.mlp.fc1 | 64 |"), "{md}");
    eprintln!("{heads_left} of 8 heads and {hidden} of 128 neurons left");
    // The exported weights run as the exported graph says.
    let m = Model::from_safetensors(g, &export.join("model.safetensors"), Device::Cpu).unwrap();
    let x = Tensor::randn([3, 1, 8, 8], (Kind::Float, Device::Cpu));
    let y = tch::no_grad(|| m.forward(&x, Mode::Eval)).unwrap();
    assert_eq!(y.size(), [3, 2]);
    let py = std::fs::read_to_string(export.join("model.py")).unwrap();
    assert!(py.contains("scaled_dot_product_attention"));
    let onnx = std::fs::read(export.join("model.onnx")).unwrap();
    let has = |s: &str| onnx.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(has("Softmax") && has("MatMul"));
    // The ONNX export reads back as the same graph.
    let back = fair_onnx::import(&onnx).unwrap();
    assert_eq!(back.graph.macs(), after);
}
