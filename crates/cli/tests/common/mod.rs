//! Helpers shared by the CLI's integration tests: running the binary, reading its output,
//! and the trained toy model on the IDX toy data. Each test file uses only some of them.
#![allow(dead_code)]

pub mod transformers;

use std::path::Path;
use std::process::{Command, Output};

/// Runs `fair-pruner` with `args`.
pub fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

/// Runs `fair-pruner` with `args` and the environment variables `env` set.
pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fair-pruner"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the binary runs")
}

/// What a run printed on stdout.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What a run printed on stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The flags that name the toy run: the zoo `model` at 1x8x8 with 2 classes, and the IDX
/// data in `data`.
pub fn toy_flags(model: &str, data: &Path) -> Vec<String> {
    [
        "--model",
        model,
        "--input",
        "1x8x8",
        "--classes",
        "2",
        "--data",
        "idx",
        "--data-path",
        data.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Writes the IDX toy data (`fair_testkit::write_idx_toy`) into `dir/data` (its own
/// directory: no file inside a data directory may be written) and trains `model` on it for
/// `epochs` epochs at batch size 8 into `weights`. Returns the flags naming the model and the
/// data ([`toy_flags`]) and the training run's output, which succeeded.
pub fn train_idx_toy(
    dir: &Path,
    model: &str,
    epochs: &str,
    weights: &Path,
) -> (Vec<String>, Output) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    fair_testkit::write_idx_toy(&data);
    let flags = toy_flags(model, &data);
    let mut args = vec!["train"];
    args.extend(flags.iter().map(String::as_str));
    args.extend([
        "--epochs",
        epochs,
        "--batch-size",
        "8",
        "--out",
        weights.to_str().unwrap(),
        "-q",
    ]);
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    (flags, o)
}

/// Issue 24's check pipeline on the ONNX file `onnx`, in `dir`: `import → score --criteria
/// l1 → ratios --target-macs 0.3 [ratios_flags] --write-plan → apply`, each step asserted
/// to succeed (naming `onnx` and the step). Returns the imported and the pruned model's
/// directories (`model.toml`, `model.safetensors`, and the exports).
pub fn import_score_ratios_apply(
    dir: &Path,
    onnx: &Path,
    ratios_flags: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf) {
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let what = onnx.display();
    let imported = dir.join("imported");
    let o = run(&["import", &s(onnx), "--out", &s(&imported)]);
    assert!(o.status.success(), "{what}: import: {}", stderr(&o));
    let (graph, weights) = (
        s(&imported.join("model.toml")),
        s(&imported.join("model.safetensors")),
    );
    let scores = s(&dir.join("scores.json"));
    let o = run(&[
        "score",
        "--graph",
        &graph,
        "--weights",
        &weights,
        "--criteria",
        "l1",
        "--out",
        &scores,
    ]);
    assert!(o.status.success(), "{what}: score: {}", stderr(&o));
    let plan = s(&dir.join("plan.json"));
    let mut args = vec!["ratios", "--scores", &scores, "--target-macs", "0.3"];
    args.extend_from_slice(ratios_flags);
    args.extend(["--write-plan", &plan]);
    let o = run(&args);
    assert!(o.status.success(), "{what}: ratios: {}", stderr(&o));
    let pruned = dir.join("pruned");
    let o = run(&[
        "apply",
        "--graph",
        &graph,
        "--weights",
        &weights,
        "--plan",
        &plan,
        "--out",
        &s(&pruned),
    ]);
    assert!(o.status.success(), "{what}: apply: {}", stderr(&o));
    (imported, pruned)
}
