//! Every export carries `finetune.py` and its settings, `finetune.json`.

use std::process::Command;

use fair_surgery::{FINETUNE_PY, FinetuneSpec, ScriptData};
use tch::Device;

#[test]
fn every_export_carries_the_finetune_script_and_its_settings() {
    let graph = fair_zoo::build("resnet20", &[3, 16, 16], 4).unwrap();
    let model = fair_runtime::Model::new(graph, Device::Cpu, 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    fair_surgery::export(&model, dir.path()).unwrap();
    let script = std::fs::read_to_string(dir.path().join("finetune.py")).unwrap();
    assert_eq!(script, FINETUNE_PY);
    let text = std::fs::read_to_string(dir.path().join("finetune.json")).unwrap();
    let spec: FinetuneSpec = serde_json::from_str(&text).unwrap();
    assert_eq!(spec, FinetuneSpec::for_graph(model.graph()));
    assert_eq!((spec.input.as_slice(), spec.classes), (&[3, 16, 16][..], 4));
    assert!(spec.data.is_none());

    // A recorded data source round-trips with its tag.
    let with_data = FinetuneSpec {
        data: Some(ScriptData::Fair {
            train: "../finetune-data/train.safetensors".into(),
            test: "../finetune-data/test.safetensors".into(),
        }),
        ..spec
    };
    fair_surgery::export_with(&model, dir.path(), &with_data).unwrap();
    let text = std::fs::read_to_string(dir.path().join("finetune.json")).unwrap();
    assert!(text.contains("\"source\": \"fair\""), "{text}");
    assert_eq!(
        serde_json::from_str::<FinetuneSpec>(&text).unwrap(),
        with_data
    );
}

#[test]
#[ignore = "needs the reference Python (cargo xtask test runs it)"]
fn the_finetune_script_compiles_and_shows_its_help() {
    let Some(python) = fair_testkit::reference_python("the finetune.py syntax check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("finetune.py");
    std::fs::write(&path, FINETUNE_PY).unwrap();
    let out = Command::new(&python)
        .args(["-m", "py_compile"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&python)
        .arg(&path)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for flag in [
        "--resume",
        "--teacher",
        "--max-steps",
        "--label-smoothing",
        "--no-amp",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}
