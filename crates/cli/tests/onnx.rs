//! ONNX models through the CLI: `import`, `--graph model.onnx` (weights from the file), and
//! `apply`'s `model.onnx`. The model is a fixture of `crates/onnx/tests/fixtures`: a tiny
//! residual CNN exported by `torch.onnx.export` with BatchNorm kept, whose PyTorch parameter
//! count is recorded beside it.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{run, stderr};

fn fixture() -> (PathBuf, serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../onnx/tests/fixtures/tiny_resnet_ts17_bn.onnx");
    let facts =
        serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
    (path, facts)
}

#[test]
fn import_writes_the_ir_and_the_weights_and_records_the_normalisation() {
    let (onnx, facts) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("imported");
    let o = run(&[
        "import",
        onnx.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--mean",
        "0.5",
        "--std",
        "0.25",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // PyTorch's own count (BatchNorm kept in the file, so nothing was folded away).
    assert_eq!(report["params"], facts["torch_param_count"]);
    assert_eq!(report["normalization_recorded"], true);
    // It reads back as the library's `ImportReport` (unknown keys refused), which writes the
    // same JSON.
    let typed: fair_pipeline::ImportReport = serde_json::from_value(report.clone()).unwrap();
    assert_eq!(serde_json::to_value(&typed).unwrap(), report);
    assert_eq!((typed.input, typed.out), (vec![3, 16, 16], out.clone()));
    let graph = fair_ir::Graph::load(&out.join("model.toml")).unwrap();
    let fair_ir::Op::Input(input) = &graph.input().op else {
        panic!("the first node is the input")
    };
    assert_eq!(input.mean.as_deref(), Some(&[0.5, 0.5, 0.5][..]));
    // The weights load strictly into the graph.
    fair_runtime::Model::from_safetensors(graph, &out.join("model.safetensors"), tch::Device::Cpu)
        .unwrap();

    // Not an ONNX file, and an output that is the input: clear errors, nothing written.
    let toml = out.join("model.toml");
    let o = run(&[
        "import",
        toml.to_str().unwrap(),
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is not an ONNX model"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "import",
        onnx.to_str().unwrap(),
        "--out",
        onnx.parent().unwrap().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--out"), "{}", stderr(&o));
    assert!(!dir.path().join("x").exists());
}

#[test]
fn an_onnx_graph_carries_its_weights_through_apply_and_comes_back_as_onnx() {
    let (onnx, facts) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let o = run(&["info", "--json", "--graph", onnx.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["params"], facts["torch_param_count"]);

    // Without --weights a zoo model or IR graph is refused with a hint; an ONNX one is not.
    let plan = dir.path().join("plan.json");
    std::fs::write(&plan, r#"{"remove": {}}"#).unwrap();
    let o = run(&[
        "apply",
        "--model",
        "resnet20",
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        dir.path().join("zoo").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--weights FILE is required"),
        "{}",
        stderr(&o)
    );

    let out = dir.path().join("pruned");
    let o = run(&[
        "apply",
        "--graph",
        onnx.to_str().unwrap(),
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["model.onnx", "model.py", "model.safetensors", "model.toml"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // An empty plan: the exported ONNX reads back as the same graph with the same weights.
    let a = run(&[
        "import",
        onnx.to_str().unwrap(),
        "--out",
        dir.path().join("a").to_str().unwrap(),
    ]);
    let b = run(&[
        "import",
        out.join("model.onnx").to_str().unwrap(),
        "--out",
        dir.path().join("b").to_str().unwrap(),
    ]);
    assert!(
        a.status.success() && b.status.success(),
        "{}{}",
        stderr(&a),
        stderr(&b)
    );
    let ga = fair_ir::Graph::load(&dir.path().join("a/model.toml")).unwrap();
    let gb = fair_ir::Graph::load(&dir.path().join("b/model.toml")).unwrap();
    assert_eq!(ga.nodes().len(), gb.nodes().len());
    assert_eq!(ga.param_count(), gb.param_count());
    let read = |p: &Path| fair_runtime::read_safetensors(p, tch::Device::Cpu).unwrap();
    let (ta, tb) = (
        read(&dir.path().join("a/model.safetensors")),
        read(&dir.path().join("b/model.safetensors")),
    );
    assert_eq!(ta.len(), tb.len());
    for ((na, xa), (nb, xb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        assert!(xa.equal(xb), "{na} differs after the round trip");
    }
}

/// Issue 29: the external data files an ONNX model reads are inputs of every command given
/// the model, so no output can overwrite them, and the directory holding them cannot be
/// replaced.
#[test]
fn external_data_files_are_inputs_of_every_command() {
    use protobuf::Message;
    let (onnx, _) = fixture();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The fixture with its first raw initializer moved into `w.bin`, as torch.onnx.export
    // writes large models.
    let mut m =
        onnx_protobuf::ModelProto::parse_from_bytes(&std::fs::read(&onnx).unwrap()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let t = g
        .initializer
        .iter_mut()
        .find(|t| !t.raw_data.is_empty())
        .expect("a raw initializer");
    let data = std::mem::take(&mut t.raw_data);
    std::fs::write(d.join("w.bin"), &data).unwrap();
    t.data_location = onnx_protobuf::tensor_proto::DataLocation::EXTERNAL.into();
    for (k, v) in [
        ("location", "w.bin".to_owned()),
        ("length", data.len().to_string()),
    ] {
        t.external_data.push(onnx_protobuf::StringStringEntryProto {
            key: k.into(),
            value: v,
            ..Default::default()
        });
    }
    let model = d.join("m.onnx");
    std::fs::write(&model, m.write_to_bytes().unwrap()).unwrap();
    let (model_s, w) = (model.to_str().unwrap(), d.join("w.bin"));
    let o = run(&["info", "--graph", model_s]);
    assert!(
        o.status.success(),
        "the model reads its external data: {}",
        stderr(&o)
    );
    let refused = |o: Output, says: &str| {
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains("refusing to write") && e.contains(says), "{e}");
    };
    let w_s = w.to_str().unwrap();
    refused(
        run(&[
            "score",
            "--graph",
            model_s,
            "--criteria",
            "l1",
            "--out",
            w_s,
        ]),
        "--graph external data",
    );
    refused(
        run(&["info", "--graph", model_s, "--write-graph", w_s]),
        "--graph external data",
    );
    let sub = d.join("sub");
    std::fs::create_dir(&sub).unwrap();
    refused(
        run(&["import", model_s, "--out", sub.join("..").to_str().unwrap()]),
        "holds the input",
    );
    assert_eq!(
        std::fs::read(&w).unwrap(),
        data,
        "the external data is unchanged"
    );
}
