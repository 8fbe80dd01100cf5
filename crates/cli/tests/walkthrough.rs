//! The README's walk-throughs "Prune your own PyTorch model" and "Prune a vision
//! transformer", run line for line: the shell block between `<!-- walkthrough: NAME begin -->`
//! and `<!-- walkthrough: NAME end -->` (NAME `onnx` or `vit`) runs in a temporary directory
//! (with a copy of `scripts/`), where `fair-pruner` is this build's binary and `python` the
//! reference Python.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_owned()
}

/// The commands of the README's fenced block between the walk-through `name`'s markers.
fn walkthrough(name: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let begin = readme
        .find(&format!("<!-- walkthrough: {name} begin -->"))
        .unwrap_or_else(|| panic!("README has the walk-through {name}'s begin marker"));
    let end = readme
        .find(&format!("<!-- walkthrough: {name} end -->"))
        .unwrap_or_else(|| panic!("README has the walk-through {name}'s end marker"));
    let block = &readme[begin..end];
    let start = block.find("```sh\n").expect("a ```sh block") + "```sh\n".len();
    let stop = block[start..].find("```").expect("the block is closed") + start;
    block[start..stop].to_owned()
}

#[test]
fn the_readme_block_is_found_and_prunes_an_onnx_model() {
    let commands = walkthrough("onnx");
    assert!(
        commands.contains("fair-pruner prune --graph model.onnx"),
        "{commands}"
    );
    assert!(commands.contains("pruned/macs-0.5"), "{commands}");
    let commands = walkthrough("vit");
    assert!(
        commands.contains("fair-pruner prune --graph vit.onnx"),
        "{commands}"
    );
    assert!(commands.contains("pruned-vit/macs-0.5"), "{commands}");
}

/// Runs the README's walk-through `name` in a fresh directory with `scripts/`, this build's
/// `fair-pruner` and the reference Python on the `PATH`; fails with its output unless every
/// line succeeds. Returns the directory and the standard output.
fn run_walkthrough(name: &str, python: &Path) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir(&scripts).unwrap();
    for entry in std::fs::read_dir(repo().join("scripts")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), scripts.join(entry.file_name())).unwrap();
    }
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fair-pruner"), bin.join("fair-pruner")).unwrap();
    // A wrapper, not a symlink: a virtual environment's Python finds its packages from the
    // path it was started by.
    let wrapper = bin.join("python");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec '{}' \"$@\"\n", python.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &walkthrough(name)])
        .current_dir(dir.path())
        .env("PATH", path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let stdout = stdout.into_owned();
    (dir, stdout)
}

/// The check script's verdict: the last JSON line of the walk-through's output.
fn verdict(stdout: &str) -> serde_json::Value {
    serde_json::from_str(
        stdout
            .lines()
            .rfind(|l| l.starts_with('{'))
            .expect("the check script prints JSON"),
    )
    .unwrap()
}

/// The MACs `fair-pruner info` reads from an ONNX file.
fn macs_of_onnx(path: &Path) -> u64 {
    let info = Command::new(env!("CARGO_BIN_EXE_fair-pruner"))
        .args(["info", "--json", "--graph"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    info["macs"].as_u64().unwrap()
}

#[test]
#[ignore = "needs the reference Python (torch, onnx, onnxruntime) and Fashion-MNIST: run with cargo xtask test"]
fn the_readme_walkthrough_runs_line_for_line() {
    let Some(python) = fair_testkit::reference_python("the README walk-through") else {
        return;
    };
    let (dir, stdout) = run_walkthrough("onnx", &python);
    let export = dir.path().join("pruned/macs-0.5");
    for f in ["model.onnx", "model.py", "model.safetensors", "model.toml"] {
        assert!(export.join(f).is_file(), "{f} missing; stdout:\n{stdout}");
    }
    // The check script's verdict: same outputs, the normalisation recorded in the ONNX file.
    let verdict = verdict(&stdout);
    assert_eq!(verdict["input"], serde_json::json!([1, 28, 28]));
    assert_eq!(verdict["mean"], serde_json::json!([0.286]));
    assert_eq!(verdict["std"], serde_json::json!([0.353]));
    assert!(verdict["onnxruntime_vs_pytorch"].as_f64().unwrap() <= 1e-4);
    // The pruned model has at most half the MACs of the ONNX model it came from, and its IR
    // export records the normalisation too.
    let before = macs_of_onnx(&dir.path().join("model.onnx"));
    let pruned = fair_ir::Graph::load(&export.join("model.toml")).unwrap();
    assert!(
        pruned.macs() * 2 <= before,
        "{} of {before} MACs left",
        pruned.macs()
    );
    let fair_ir::Op::Input(input) = &pruned.input().op else {
        panic!("the first node is the input")
    };
    assert_eq!(input.mean.as_deref(), Some(&[0.286][..]));
}

#[test]
#[ignore = "needs the reference Python (torch, torchvision, onnx, onnxruntime) and Fashion-MNIST: run with cargo xtask test"]
fn the_readme_vit_walkthrough_runs_line_for_line() {
    let Some(python) =
        fair_testkit::reference_python("the README's vision transformer walk-through")
    else {
        return;
    };
    let (dir, stdout) = run_walkthrough("vit", &python);
    let export = dir.path().join("pruned-vit/macs-0.5");
    for f in ["model.onnx", "model.py", "model.safetensors", "model.toml"] {
        assert!(export.join(f).is_file(), "{f} missing; stdout:\n{stdout}");
    }
    // ONNX Runtime on the export and plain PyTorch on model.py agree.
    let verdict = verdict(&stdout);
    assert_eq!(verdict["input"], serde_json::json!([1, 28, 28]));
    assert!(verdict["onnxruntime_vs_pytorch"].as_f64().unwrap() <= 1e-4);
    // At most half the MACs are left, and attention heads were among what was removed.
    let before = macs_of_onnx(&dir.path().join("vit.onnx"));
    let pruned = fair_ir::Graph::load(&export.join("model.toml")).unwrap();
    assert!(
        pruned.macs() * 2 <= before,
        "{} of {before} MACs left",
        pruned.macs()
    );
    // scripts/export_example_vit.py builds 2 blocks of 4 heads.
    let heads: usize = pruned
        .nodes()
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match &n.op {
            fair_ir::Op::Attention(a) => Some(pruned.shape_at(i).last().unwrap() / a.head_dim),
            _ => None,
        })
        .sum();
    assert!(
        heads < 2 * 4,
        "no attention head removed: {heads} of 8 left"
    );
}
