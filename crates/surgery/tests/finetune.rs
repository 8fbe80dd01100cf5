//! Every export carries `finetune.py` and its settings, `finetune.json`.

use std::path::Path;
use std::process::{Command, Output};

use fair_surgery::{FINETUNE_PY, FinetuneSpec, ScriptAugment, ScriptData, ScriptTransform};
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
    // SGD, the default, is not written, and a finetune.json without an optimizer reads as SGD.
    assert!(!text.contains("optimizer"), "{text}");
    assert_eq!(spec.train.optimizer, "sgd");

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
        "--reset-schedule",
        "--stop-after",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

/// A tiny export whose `finetune.json` reads a synthetic IDX directory (4 classes of 8×8
/// grey images, 64 to train, 32 to test) with fair-pruner's random crop and flip, so the
/// augmentation generator matters. Returns (temporary directory, export directory).
fn tiny_export() -> (tempfile::TempDir, std::path::PathBuf) {
    use rand::{Rng, SeedableRng};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("idx");
    std::fs::create_dir_all(&data).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for (prefix, n) in [("train", 64u32), ("t10k", 32)] {
        let mut images = [0x0803u32, n, 8, 8]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect::<Vec<u8>>();
        let mut labels = [0x0801u32, n]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect::<Vec<u8>>();
        for i in 0..n {
            let class = (i % 4) as usize;
            labels.push(class as u8);
            for y in 0..8 {
                for x in 0..8 {
                    let bright = (y / 4) * 2 + x / 4 == class;
                    let base: u8 = if bright { 180 } else { 30 };
                    images.push(base.saturating_add(rng.gen_range(0..60)));
                }
            }
        }
        std::fs::write(data.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(data.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
    let graph = fair_zoo::build("mlp", &[1, 8, 8], 4).unwrap();
    let model = fair_runtime::Model::new(graph, Device::Cpu, 0).unwrap();
    let mut spec = FinetuneSpec::for_graph(model.graph());
    spec.data = Some(ScriptData::Idx {
        path: data.display().to_string(),
    });
    spec.transform = ScriptTransform {
        mean: vec![0.4],
        std: vec![0.3],
        augment: Some(ScriptAugment {
            crop_padding: 1,
            flip: true,
        }),
        resize: None,
    };
    spec.train.epochs = 2;
    spec.train.batch_size = 16;
    spec.train.lr = 0.1;
    spec.train.seed = 5;
    let export = dir.path().join("export");
    fair_surgery::export_with(&model, &export, &spec).unwrap();
    (dir, export)
}

/// Runs `python finetune.py ARGS` (one CPU process, one thread) in `dir`; the output.
fn finetune(python: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(python)
        .arg("finetune.py")
        .args(["--device", "cpu", "--threads", "1"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn succeeded(out: &Output) {
    assert!(
        out.status.success(),
        "finetune.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn result(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path.join("result.json")).unwrap()).unwrap()
}

fn figures(r: &serde_json::Value, key: &str) -> Vec<f64> {
    r["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[key].as_f64().unwrap())
        .collect()
}

#[test]
#[ignore = "needs the reference Python (cargo xtask test runs it)"]
fn a_resumed_run_ends_as_the_uninterrupted_run_and_its_schedule_never_jumps() {
    let Some(python) = fair_testkit::reference_python("the finetune.py resume check") else {
        return;
    };
    let (_tmp, export) = tiny_export();
    // Uninterrupted: two epochs.
    succeeded(&finetune(&python, &export, &["--out", "a"]));
    let a = result(&export.join("a"));
    // Interrupted after epoch 1, then resumed (--epochs from the checkpoint).
    succeeded(&finetune(
        &python,
        &export,
        &["--out", "b", "--stop-after", "1"],
    ));
    let b1 = result(&export.join("b"));
    assert_eq!(
        (b1["epochs"].as_u64(), b1["steps"].as_u64()),
        (Some(1), Some(4))
    );
    let ck1 = export.join("epoch1.pt");
    std::fs::copy(export.join("b/checkpoint.pt"), &ck1).unwrap();
    succeeded(&finetune(&python, &export, &["--out", "b", "--resume"]));
    let b = result(&export.join("b"));
    let (la, lb) = (figures(&a, "train_loss"), figures(&b, "train_loss"));
    eprintln!("train loss per epoch: uninterrupted {la:?}, resumed {lb:?}");
    assert_eq!((la.len(), lb.len()), (2, 2));
    for (x, y) in la.iter().zip(&lb) {
        assert!(
            (x - y).abs() <= 1e-6,
            "uninterrupted {la:?}, resumed {lb:?}"
        );
    }
    assert_eq!(figures(&a, "lr"), figures(&b, "lr"));
    assert_eq!(
        (b["epochs"].as_u64(), b["steps"].as_u64()),
        (Some(2), Some(8))
    );
    let (ta, tb) = (&a["test"]["loss"], &b["test"]["loss"]);
    assert!(
        (ta.as_f64().unwrap() - tb.as_f64().unwrap()).abs() <= 1e-6,
        "test loss {ta} vs {tb}"
    );

    // A longer total: the cosine continues from the rate reached (0.05 at epoch 2 of 2), no
    // jump back up to the 4-epoch schedule's 0.085; --reset-schedule restarts it at --lr.
    let ck1 = ck1.display().to_string();
    let extend = ["--epochs", "4", "--stop-after", "2", "--resume", &ck1];
    succeeded(&finetune(
        &python,
        &export,
        &[&extend[..], &["--out", "c"]].concat(),
    ));
    let lr = figures(&result(&export.join("c")), "lr");
    eprintln!(
        "lr per epoch, extended to 4 epochs: {lr:?}; uninterrupted 2: {:?}",
        figures(&a, "lr")
    );
    assert_eq!(lr[0], 0.1);
    assert!((lr[1] - figures(&a, "lr")[1]).abs() < 1e-12, "{lr:?}");
    let reset = [&extend[..], &["--out", "d", "--reset-schedule"]].concat();
    succeeded(&finetune(&python, &export, &reset));
    let lr = figures(&result(&export.join("d")), "lr");
    assert_eq!(lr, [0.1, 0.1]);
}

#[test]
#[ignore = "needs the reference Python (cargo xtask test runs it)"]
fn a_data_source_without_its_path_names_the_missing_flag() {
    let Some(python) = fair_testkit::reference_python("the finetune.py flag check") else {
        return;
    };
    let (_tmp, export) = tiny_export();
    let out = finetune(&python, &export, &["--data-source", "idx"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--data-source idx needs --data-path") && !stderr.contains("Traceback"),
        "{stderr}"
    );
}

/// Folder sources train with fair-pruner's ImageFolder transform: the evaluation transform
/// without an augmentation, RandomResizedCrop (+ flip only with `flip`) with one.
#[test]
#[ignore = "needs the reference Python (cargo xtask test runs it)"]
fn folder_sources_train_with_the_recorded_augmentation_only() {
    let Some(python) = fair_testkit::reference_python("the finetune.py folder check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("finetune.py"), FINETUNE_PY).unwrap();
    let check = r#"
import os, sys, torch
from PIL import Image
sys.path.insert(0, os.getcwd())
import finetune as f
for k, cls in enumerate(["a", "b"]):
    os.makedirs(f"tree/{cls}")
    g = torch.Generator().manual_seed(k)
    px = torch.randint(0, 256, (14, 20, 3), generator=g, dtype=torch.uint8).numpy()
    Image.fromarray(px, "RGB").save(f"tree/{cls}/{k}.png")
names = lambda ds: [type(t).__name__ for t in ds.transform.transforms]
for shape in ([3, 8, 8], [1, 8, 8]):
    spec = {"mean": [0.5], "std": [0.25], "augment": None}
    tr, te = f.folder_sets("tree", "tree", spec, shape)
    for i in range(2):
        assert tr[i][0].shape == (shape[0], 8, 8), tr[i][0].shape
        assert torch.equal(tr[i][0], te[i][0]), "no augmentation: training is the evaluation transform"
    assert "RandomResizedCrop" not in names(tr) and "RandomHorizontalFlip" not in names(tr), names(tr)
    tr, _ = f.folder_sets("tree", "tree", dict(spec, augment={"crop_padding": 0, "flip": False}), shape)
    assert "RandomResizedCrop" in names(tr) and "RandomHorizontalFlip" not in names(tr), names(tr)
    tr, _ = f.folder_sets("tree", "tree", dict(spec, augment={"crop_padding": 0, "flip": True}), shape)
    assert "RandomResizedCrop" in names(tr) and "RandomHorizontalFlip" in names(tr), names(tr)
    assert tr[0][0].shape == (shape[0], 8, 8)
# Missing paths name their flags.
for argv, flag in ((["--data-source", "folder", "--train-data", "tree"], "--test-data"),
                   (["--data-source", "fair", "--test-data", "x"], "--train-data"),
                   (["--data-source", "cifar10"], "--data-path")):
    a = f.parse_args(argv)
    a.config_dir = os.getcwd()
    try:
        f.data_config(a, {})
        raise AssertionError(f"{argv}: no error")
    except SystemExit as e:
        assert flag in str(e), (argv, str(e))
print("OK")
"#;
    let out = Command::new(&python)
        .args(["-c", check])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("OK"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `finetune.json`'s `"optimizer": "adamw"` builds `torch.optim.AdamW` with decoupled weight
/// decay: one full-batch step from p₀ lands on p₀·(1 − lr·wd) − lr·g/(|g| + ε) (the first
/// bias-corrected Adam step), i.e. every parameter with a gradient well above ε sits exactly
/// lr away from p₀·(1 − lr·wd) and none further (ReLU units dead on the whole batch sit on it). SGD would
/// move each parameter by lr·|g + wd·p₀|, coupled Adam (L2 decay in the gradient) by exactly
/// lr from p₀. An unknown optimizer is refused by name.
#[test]
#[ignore = "needs the reference Python (cargo xtask test runs it)"]
fn an_adamw_spec_takes_a_decoupled_bias_corrected_adamw_step() {
    let Some(python) = fair_testkit::reference_python("the finetune.py AdamW check") else {
        return;
    };
    let (_tmp, export) = tiny_export();
    let json = export.join("finetune.json");
    let mut spec: FinetuneSpec =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(spec.train.optimizer, "sgd");
    let (lr, wd) = (0.01, 2.0);
    spec.train.optimizer = "adamw".into();
    spec.train.lr = lr;
    spec.train.weight_decay = wd;
    spec.train.epochs = 1;
    spec.train.batch_size = 64; // the whole training set in one step
    spec.train.schedule = serde_json::json!({ "kind": "constant" });
    spec.transform.augment = None;
    let text = serde_json::to_string_pretty(&spec).unwrap();
    assert!(text.contains("\"optimizer\": \"adamw\""), "{text}");
    std::fs::write(&json, text).unwrap();
    let out = finetune(&python, &export, &["--out", "adamw", "--max-steps", "1"]);
    succeeded(&out);
    let r = result(&export.join("adamw"));
    assert_eq!(
        (r["optimizer"].as_str(), r["steps"].as_u64()),
        (Some("adamw"), Some(1))
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("optimizer adamw")
            || String::from_utf8_lossy(&out.stdout).contains("optimizer adamw")
    );

    let read = |path: &Path| fair_runtime::read_safetensors(path, Device::Cpu).unwrap();
    let before = read(&export.join("model.safetensors"));
    let after = read(&export.join("adamw/finetuned.safetensors"));
    assert_eq!(before.len(), after.len());
    let tol = 1e-5;
    let (mut moved, mut still, mut coupled_differs) = (0usize, 0usize, false);
    for ((name, p0), (name1, p1)) in before.iter().zip(&after) {
        assert_eq!(name, name1);
        let p0 = Vec::<f64>::try_from(p0.flatten(0, -1).to_kind(tch::Kind::Double)).unwrap();
        let p1 = Vec::<f64>::try_from(p1.flatten(0, -1).to_kind(tch::Kind::Double)).unwrap();
        for (a, b) in p0.iter().zip(&p1) {
            let off = (b - a * (1.0 - lr * wd)).abs();
            if (off - lr).abs() < tol {
                moved += 1;
                // Coupled Adam would put it lr from p₀ itself.
                coupled_differs |= ((b - a).abs() - lr).abs() > 100.0 * tol;
            } else {
                // |g| ≲ ε moves less than lr: never more.
                assert!(off < lr, "{name}: {a} → {b}, {off} off p₀·(1 − lr·wd)");
                still += 1;
            }
        }
    }
    assert!(moved > 4 * still, "{moved} moved by lr, {still} did not");
    assert!(
        coupled_differs,
        "no parameter tells AdamW from coupled Adam"
    );

    // Unknown optimizers are refused by name, without a traceback.
    spec.train.optimizer = "adam".into();
    std::fs::write(&json, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
    let out = finetune(&python, &export, &["--out", "adam"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("unknown optimizer 'adam'") && stderr.contains("sgd, adamw"),
        "{stderr}"
    );
    assert!(!stderr.contains("Traceback"), "{stderr}");
}
