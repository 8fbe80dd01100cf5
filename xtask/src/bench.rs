//! `cargo xtask bench`: benchmarks reported as ratios against a baseline measured in the same
//! run on the same machine (never asserted as wall-clock in tests).
//!
//! The benchmarks live in the `fair-bench` crate (`crates/bench`), which calls fair-pruner's
//! libraries directly; xtask itself must build before libtorch exists, so it only provisions
//! libtorch and the reference Python (`setup`), then runs
//! `cargo run --release -p fair-bench -- <scoring|compare|ablation|loader|onnx-coverage|scale-classes|latency> --python PYTHON ARGS`.
//! `latency` runs the `fair-pruner` binary as a user does, so the release CLI
//! (`cargo build --release -p fair-cli`) is built first.
//! `cargo xtask bench python` measures the Python package instead: the reference Python runs
//! `crates/python/bench/bench_python.py ARGS` (it builds the release wheel itself).

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{Setup, cargo, workspace_root};

/// The Python package's benchmark script, relative to the workspace root.
const PYTHON_BENCH: &str = "crates/python/bench/bench_python.py";

/// Builds the release `fair-pruner` binary that `fair-bench latency` runs.
const CLI_BUILD: [&str; 5] = ["build", "--release", "--quiet", "-p", "fair-cli"];

const USAGE: &str = "usage: cargo xtask bench scoring [--threads N --classes K --per-class N]
       cargo xtask bench compare [--alphas A,B --nets vgg,resnet --train-epochs N --finetune-epochs N --per-class N --threads N --no-docs --tables-only]
       cargo xtask bench ablation [--nets vgg,resnet,vit --seeds 0,1,2 --macs 0.3,0.5,0.7 --finetune-epochs 1,5 --methods M,... --val-per-class N --train-epochs N --finetune-fraction F --per-class N --threads N --distill W --reconstruct --latency-target F --latency-on libtorch-cpu|onnxruntime-cpu --latency-batch N --latency-threads N --latency-tolerance F --no-docs --tables-only]
       cargo xtask bench loader [--images N --classes K --workers N --batch-size B --no-docs]
       cargo xtask bench onnx-coverage [--models M,... --exporter ts|dynamo --size N --seed S --threads N --cache DIR --grouped-convs fixed|within-groups --no-docs]
       cargo xtask bench scale-classes [--rows 100x32,1000x8,1000x32 --size N --noise F --all-pairs-units N|all --max-memory B --model M --seed S --threads N --out DIR]
       cargo xtask bench latency [--full --models M,... --runtimes libtorch-cpu,onnxruntime-cpu,pytorch-cpu --target F --threads N --classes K --per-class N --fair-pruner PATH --out DIR]
       cargo xtask bench python [--repeats N --threads N --classes K --per-class N --no-reference]
       (cargo xtask bench <scoring|compare|ablation|loader|onnx-coverage|scale-classes|latency|python> --help lists every option)";

/// The `cargo` arguments that run `fair-bench` for `args` (`args[0]` is the benchmark),
/// passing the reference Python first so an explicit `--python` in `args` wins.
fn cargo_args<'a>(python: Option<&'a str>, args: &[&'a str]) -> Result<Vec<&'a str>> {
    let Some((&bench, rest)) = args.split_first() else {
        bail!("{USAGE}");
    };
    if !matches!(
        bench,
        "scoring"
            | "compare"
            | "ablation"
            | "loader"
            | "onnx-coverage"
            | "scale-classes"
            | "latency"
    ) {
        bail!("unknown benchmark '{bench}'\n{USAGE}");
    }
    let mut v = vec![
        "run",
        "--release",
        "--quiet",
        "-p",
        "fair-bench",
        "--",
        bench,
    ];
    // scale-classes runs no reference.
    if let Some(p) = python.filter(|_| bench != "scale-classes") {
        v.extend(["--python", p]);
    }
    v.extend(rest);
    Ok(v)
}

pub(crate) fn run(setup: &Setup, args: &[&str]) -> Result<()> {
    if let Some((&"python", rest)) = args.split_first() {
        return python_bench(setup, rest);
    }
    let python = setup.python.as_ref().map(|p| p.display().to_string());
    let cargo_args = cargo_args(python.as_deref(), args)?;
    if args.first() == Some(&"latency") {
        // The latency bench runs the release CLI as a subprocess.
        cargo(&CLI_BUILD)?;
    }
    cargo(&cargo_args)
}

/// `cargo xtask bench python`: the reference Python runs [`PYTHON_BENCH`] with `args`.
fn python_bench(setup: &Setup, args: &[&str]) -> Result<()> {
    let Some(python) = &setup.python else {
        bail!(
            "the Python benchmark needs the reference Python (torch, maturin, network-pruner): \
             run `cargo xtask setup`, or set FAIR_PRUNER_PYTHON"
        );
    };
    let status = Command::new(python)
        .arg(PYTHON_BENCH)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot run {} {PYTHON_BENCH}", python.display()))?;
    if !status.success() {
        bail!("the Python benchmark ({PYTHON_BENCH}) failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_fair_bench_with_the_reference_python() {
        assert_eq!(
            cargo_args(Some("/py"), &["compare", "--no-docs"]).unwrap(),
            [
                "run",
                "--release",
                "--quiet",
                "-p",
                "fair-bench",
                "--",
                "compare",
                "--python",
                "/py",
                "--no-docs"
            ]
        );
        assert_eq!(
            cargo_args(None, &["scoring"]).unwrap()[5..],
            ["--", "scoring"]
        );
        assert_eq!(
            cargo_args(None, &["loader", "--images", "500"]).unwrap()[6..],
            ["loader", "--images", "500"]
        );
        assert_eq!(
            cargo_args(Some("/py"), &["ablation", "--seeds", "0"]).unwrap()[6..],
            ["ablation", "--python", "/py", "--seeds", "0"]
        );
        assert_eq!(
            cargo_args(Some("/py"), &["scale-classes", "--rows", "100x8"]).unwrap()[6..],
            ["scale-classes", "--rows", "100x8"]
        );
        assert_eq!(
            cargo_args(Some("/py"), &["latency", "--full"]).unwrap()[6..],
            ["latency", "--python", "/py", "--full"]
        );
        assert_eq!(CLI_BUILD[CLI_BUILD.len() - 1], "fair-cli");
        assert!(USAGE.contains("cargo xtask bench latency"));
        assert!(cargo_args(None, &[]).is_err());
        assert!(cargo_args(None, &["speed"]).is_err());
    }

    #[test]
    fn the_python_bench_script_exists_and_is_listed() {
        assert!(workspace_root().join(PYTHON_BENCH).is_file());
        assert!(USAGE.contains("cargo xtask bench python"));
    }
}
