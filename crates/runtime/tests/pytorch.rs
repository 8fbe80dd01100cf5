//! Cross-checks against PyTorch 2.11 + torchvision 0.26 (the independent reference).
//!
//! The Python side runs `tests/torchvision_check.py` with the interpreter named by
//! `FAIR_PRUNER_PYTHON` (set by `cargo xtask setup` to the cached environment that also
//! carries libtorch). Without it these tests fail with instructions, unless
//! `FAIR_PRUNER_SKIP_PYTHON=1` is set explicitly, in which case they say so and skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use fair_runtime::{Mode, Model, read_safetensors, write_safetensors};
use tch::{Device, Kind, Tensor};

fn python() -> Option<PathBuf> {
    fair_testkit::reference_python("the PyTorch/torchvision cross-check")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torchvision_check.py")
}

fn run_python(py: &Path, args: &[&str]) -> String {
    let out = Command::new(py)
        .arg(script())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", py.display()));
    assert!(
        out.status.success(),
        "torchvision_check.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
#[ignore = "needs the reference Python with torch/torchvision (cargo xtask test runs it)"]
fn state_dict_names_and_shapes_equal_torchvision() {
    let Some(py) = python() else { return };
    let text = run_python(&py, &["names"]);
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let models = reference.as_object().unwrap();
    assert_eq!(models.len(), 13);
    for (name, entries) in models {
        let graph = fair_zoo::build(name, &[3, 224, 224], 1000).unwrap();
        let ours: Vec<(String, Vec<usize>)> = graph
            .params()
            .into_iter()
            .map(|p| (p.name, p.shape))
            .collect();
        let theirs: Vec<(String, Vec<usize>)> = entries
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let name = e[0].as_str().unwrap().to_owned();
                let shape = e[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                (name, shape)
            })
            .collect();
        assert_eq!(
            ours.len(),
            theirs.len(),
            "{name}: number of state-dict entries"
        );
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(a, b, "{name}: state-dict entry {i} (ours vs torchvision)");
        }
    }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    fair_testkit::max_abs_diff(a, b)
}

fn cross_check(name: &str, size: usize) {
    let Some(py) = python() else { return };
    tch::set_num_threads(1);
    let classes = 10;
    let dir = tempfile::tempdir().unwrap();
    let graph = fair_zoo::build(name, &[3, size, size], classes).unwrap();
    let model = Model::new(graph.clone(), Device::Cpu, 3).unwrap();
    fair_testkit::randomise_batchnorm(&model, 11);
    model
        .save_weights(&dir.path().join("weights.safetensors"))
        .unwrap();
    let x = Tensor::randn([4, 3, size as i64, size as i64], (Kind::Float, Device::Cpu));
    write_safetensors(
        &dir.path().join("input.safetensors"),
        &[("input".into(), x.shallow_clone())],
    )
    .unwrap();
    let ours = tch::no_grad(|| model.forward(&x, Mode::Eval)).unwrap();

    run_python(
        &py,
        &[
            "run",
            dir.path().to_str().unwrap(),
            name,
            &classes.to_string(),
        ],
    );

    let read = |f: &str| {
        read_safetensors(&dir.path().join(f), Device::Cpu)
            .unwrap()
            .remove(0)
            .1
    };
    let theirs = read("torch_output.safetensors");
    let d = max_abs_diff(&ours, &theirs);
    eprintln!("{name}: fair-pruner → torchvision, max |Δ| = {d:.3e}");
    assert!(
        d <= 1e-4,
        "{name}: fair-pruner weights in torchvision differ by {d}"
    );

    // And the other way: torchvision's weights (with its own init) in fair-pruner.
    let tv_model = Model::from_safetensors(
        graph,
        &dir.path().join("tv_weights.safetensors"),
        Device::Cpu,
    )
    .unwrap();
    let ours = tch::no_grad(|| tv_model.forward(&x, Mode::Eval)).unwrap();
    let d = max_abs_diff(&ours, &read("tv_output.safetensors"));
    eprintln!("{name}: torchvision → fair-pruner, max |Δ| = {d:.3e}");
    assert!(
        d <= 1e-4,
        "{name}: torchvision weights in fair-pruner differ by {d}"
    );
}

#[test]
#[ignore = "needs the reference Python with torch/torchvision (cargo xtask test runs it)"]
fn vgg11_bn_matches_torchvision() {
    cross_check("vgg11_bn", 32);
}

#[test]
#[ignore = "needs the reference Python with torch/torchvision (cargo xtask test runs it)"]
fn resnet18_matches_torchvision() {
    cross_check("resnet18", 32);
}

#[test]
#[ignore = "needs the reference Python with torch/torchvision (cargo xtask test runs it)"]
fn densenet121_matches_torchvision() {
    cross_check("densenet121", 32);
}
