//! `prune --finetune-with torchrun`: the flags reach the pipeline, the script reads the
//! user's IDX directory itself, and misuse is refused before any work.

mod common;
use common::{run, stderr};

/// Writes the IDX toy into `dir/data` (no file inside a data directory may be written) and
/// trains the MLP on it for one epoch into `weights`.
fn train_toy(dir: &std::path::Path, weights: &std::path::Path) {
    common::train_idx_toy(dir, "mlp", "1", weights);
}

fn prune_args<'a>(data: &'a str, weights: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "prune",
        "--model",
        "mlp",
        "--input",
        "1x8x8",
        "--classes",
        "2",
        "--data",
        "idx",
        "--data-path",
        data,
        "--weights",
        weights,
        "--alpha",
        "0.3",
        "--per-class",
        "8",
        "--finetune-epochs",
        "1",
        "--no-latency",
        "--out",
        out,
        "-q",
    ]
}

#[test]
fn torchrun_flags_are_refused_without_torchrun_and_a_missing_python_fails_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let out = dir.path().join("out");
    let w = dir.path().join("w.safetensors"); // never read: both runs stop before
    let base = prune_args(d, w.to_str().unwrap(), out.to_str().unwrap());
    let o = run(&[&base[..], &["--nproc", "2"]].concat());
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--nproc applies to --finetune-with torchrun"),
        "{}",
        stderr(&o)
    );

    train_toy(dir.path(), &w);
    let missing = dir.path().join("no-python");
    let o = run(&[
        &base[..],
        &[
            "--finetune-with",
            "torchrun",
            "--python",
            missing.to_str().unwrap(),
        ],
    ]
    .concat());
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--python"), "{}", stderr(&o));
    assert!(!out.exists(), "a failed run left {}", out.display());
}

#[test]
#[ignore = "needs the reference Python (cargo xtask test runs it)"]
fn prune_finetunes_with_torchrun_on_an_idx_directory() {
    let Some(py) = fair_testkit::reference_python("the torchrun CLI test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let w = dir.path().join("w.safetensors");
    train_toy(dir.path(), &w);
    let out = dir.path().join("out");
    let base = prune_args(d, w.to_str().unwrap(), out.to_str().unwrap());
    let o = run(&[
        &base[..],
        &[
            "--finetune-with",
            "torchrun",
            "--nproc",
            "2",
            "--python",
            py.to_str().unwrap(),
            "--finetune-args",
            "--batch-size 16",
            "--label-smoothing",
            "0.1",
        ],
    ]
    .concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let r = &report["results"][0];
    let t = &r["torchrun"];
    assert_eq!(t["world_size"], 2);
    assert_eq!(t["epochs"], 1);
    assert_eq!(t["test_samples"], 32);
    // The script read the IDX files itself, with the same transform: same accuracy.
    assert_eq!(t["test"]["top1"], r["after"]["accuracy"]["top1"]);
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("alpha-0.3/finetune.json")).unwrap())
            .unwrap();
    assert_eq!(spec["data"]["source"], "idx");
    assert_eq!(spec["train"]["label_smoothing"], 0.1);
    assert!(!out.join("finetune-data").exists());
}
