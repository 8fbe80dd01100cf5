//! Pruned models against PyTorch: the exported standalone module in plain PyTorch, and
//! Torch-Pruning (`torch-pruning` 1.6) applying the same unit indices.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use fair_analysis::{GroupRule, ResolveOptions, analyze};
use fair_runtime::{Mode, Model, read_safetensors, write_safetensors};
use fair_surgery::{apply, export};
use tch::{Device, Kind, Tensor};

fn python() -> Option<PathBuf> {
    fair_testkit::reference_python("the PyTorch / Torch-Pruning cross-checks")
}

fn run(py: &Path, command: &str, dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pytorch_reference.py");
    let out = Command::new(py)
        .arg(script)
        .arg(command)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pytorch_reference.py {command} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(dir: &Path, file: &str) -> Tensor {
    read_safetensors(&dir.join(file), Device::Cpu)
        .unwrap()
        .remove(0)
        .1
}

fn setup(name: &str, shape: [usize; 3]) -> (Model, Tensor) {
    let m = Model::new(fair_zoo::build(name, &shape, 10).unwrap(), Device::Cpu, 11).unwrap();
    fair_testkit::randomise_batchnorm(&m, 4);
    let [c, h, w] = shape.map(|d| d as i64);
    (m, Tensor::randn([2, c, h, w], (Kind::Float, Device::Cpu)))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    fair_testkit::max_abs_diff(a, b)
}

#[test]
#[ignore = "needs the reference Python with torch-pruning 1.6.1 (cargo xtask test runs it)"]
fn pruned_models_match_torch_pruning_and_run_in_plain_pytorch() {
    let Some(py) = python() else { return };
    for (name, shape) in common::MODELS {
        let (m, x) = setup(name, shape);
        let (plan, chosen) = common::random_plan(&m, 1, 5);
        let groups = analyze(m.graph(), &[]).unwrap();
        let pruned = apply(
            &m,
            &plan,
            &ResolveOptions {
                rule: GroupRule::Strict,
                ..Default::default()
            },
        )
        .unwrap();
        let ours = tch::no_grad(|| pruned.model.forward(&x, Mode::Eval)).unwrap();

        // Torch-Pruning on the unpruned model, same indices.
        let dir = tempfile::tempdir().unwrap();
        export(&m, dir.path()).unwrap();
        write_safetensors(
            &dir.path().join("input.safetensors"),
            &[("input".into(), x.shallow_clone())],
        )
        .unwrap();
        let groups: Vec<serde_json::Value> = chosen
            .iter()
            .map(|(g, units)| serde_json::json!([groups.groups()[*g].layers[0], units]))
            .collect();
        std::fs::write(
            dir.path().join("plan.json"),
            serde_json::json!({ "groups": groups }).to_string(),
        )
        .unwrap();
        run(&py, "torch-pruning", dir.path());
        // Random weights with random BatchNorm statistics give outputs up to ~1e3 on the
        // deep models, so the tolerance is 1e-4 relative to the output scale (at least 1).
        let scale = ours.abs().max().double_value(&[]).max(1.0);
        let d = max_diff(&ours, &read(dir.path(), "tp_output.safetensors"));
        eprintln!(
            "{name}: fair-pruner vs Torch-Pruning, max |Δ| = {d:.2e} (outputs up to {scale:.2e})"
        );
        assert!(
            d <= 1e-4 * scale,
            "{name}: fair-pruner and Torch-Pruning differ by {d}"
        );

        // The exported pruned model in plain PyTorch.
        let out = tempfile::tempdir().unwrap();
        export(&pruned.model, out.path()).unwrap();
        write_safetensors(
            &out.path().join("input.safetensors"),
            &[("input".into(), x.shallow_clone())],
        )
        .unwrap();
        run(&py, "export", out.path());
        let d = max_diff(&ours, &read(out.path(), "torch_output.safetensors"));
        eprintln!("{name}: exported module in PyTorch, max |Δ| = {d:.2e}");
        assert!(
            d <= 1e-4 * scale,
            "{name}: exported model differs in PyTorch by {d}"
        );
        let reread = fair_ir::Graph::load(&out.path().join("model.toml")).unwrap();
        assert_eq!(&reread, pruned.model.graph());
    }
}
