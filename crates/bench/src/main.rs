//! `fair-bench`: fair-pruner's benchmarks, run in-process through the libraries.
//!
//! - `fair-bench scoring` — fair-pruner's U+R scoring (`fair_scoring::score`) against the
//!   authors' `network-pruner` 2.16 `get_metrics` on CIFAR VGG16-BN, same weights, samples,
//!   threads and machine; prints the ratio and writes `target/bench/scoring/summary.json`.
//! - `fair-bench compare` — FAIR-Pruner against the authors' package, uniform L1 pruning (ours
//!   and Torch-Pruning's) and ToD counts with L1 ranking on Fashion-MNIST; every plan goes
//!   through the same surgery, evaluation and fine-tuning. Writes
//!   `target/bench/compare/summary.json` and the tables in `docs/results.md`.
//! - `fair-bench ablation` — FAIR-Pruner's settings one at a time (`fair-paper` and a variant
//!   per suspect) against uniform L1 (ours, Torch-Pruning's) and Torch-Pruning's global
//!   Taylor and group-norm pruning at equal MACs, over seeds: one-shot, after BatchNorm
//!   recalibration, fine-tuned per budget (validation and test). Writes
//!   `target/bench/ablation/summary.json`, a table in `docs/results.md` and
//!   `docs/ablation-<net>.svg`. With `--latency-target` it compares at equal *measured*
//!   latency instead (`fair-latency` against every other method at the MACs target whose
//!   latency matches): `summary-latency-<runtime>-b<batch>-t<threads>.json`, its own table
//!   and charts.
//! - `fair-bench gpu-check` — scoring, surgery, a fine-tuning step and latency on CUDA and
//!   on the CPU (CIFAR VGG16-BN, ResNet-50); writes `target/bench/gpu-check/summary.json`.
//!
//! - `fair-bench loader` — the streamed ImageFolder (`fair_data::ImageFolder` with prefetch)
//!   against torchvision's `ImageFolder` + `DataLoader` on a synthetic folder of JPEGs
//!   (generated once under `target/bench/loader/`): images/s and peak memory of each process
//!   tree; writes `target/bench/loader/summary.json` and a block of `docs/results.md`.
//!
//! - `fair-bench onnx-coverage` — every classification model of `torchvision.models`
//!   exported to ONNX: imported by `fair_onnx`, outputs equal to ONNX Runtime, prunable
//!   groups, a random plan verified (dead units, `onnx.checker`, ONNX Runtime on the pruned
//!   export); writes `target/bench/onnx-coverage/summary.json` and the table in `docs/onnx.md`.
//!
//! - `fair-bench scale-classes` — the U-Score of ResNet-50 (random weights) at 100 to 1000
//!   classes on synthetic data with class structure, bounded class-pair search against all
//!   pairs (estimated from sampled units, checked bit for bit), against issue 26's goals;
//!   writes `target/bench/scale-classes/results.json` and `table.md`.
//!
//! - `fair-bench latency` — `fair-pruner prune --target-latency 0.5` on libtorch CPU and ONNX
//!   Runtime CPU against `--target-macs` at the MACs it removed, through the built
//!   `fair-pruner` binary (report.json): achieved latency against the target, MACs removed,
//!   latency gain / MAC cut, issue 27's goals; writes `target/bench/latency/results.json`
//!   and `table.md`.
//!
//! Layout: one module per benchmark (`scoring`, `compare` with its tables in `tables`,
//! `loader`, `onnx_coverage`, `scale_classes`, `gpu_check`); the ablation is a module directory with one job
//! per file: `ablation/experiment.rs` (suspects, methods, variants, options),
//! `ablation/runner.rs` (one network and seed measured), `ablation/results.rs` (the typed
//! `result.json` of a seed and `summary.json`, and how a seed's runs add up),
//! `ablation/stats.rs` (mean ± std over seeds, the per-network aggregate) and
//! `ablation/tables.rs` (Markdown table, SVG chart). The pruning steps the benchmarks measure
//! run through `fair_pipeline::stages` (score, selector, select, apply, after_surgery,
//! evaluate, finetune), so no bench restates the pipeline's order; plans made by the
//! references (the authors' package, Torch-Pruning) join at `stages::apply`.
//!
//! `cargo xtask bench scoring|compare|ablation|loader|onnx-coverage|scale-classes` provisions libtorch and the reference
//! Python, then runs this binary (`cargo run --release -p fair-bench`). The reference side
//! runs the Python scripts in `xtask/bench/` with the Python given by `--python` or `FAIR_PRUNER_PYTHON`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

mod ablation;
mod compare;
mod gpu_check;
mod latency;
mod loader;
mod onnx_coverage;
mod scale_classes;
mod scoring;
mod tables;

/// fair-pruner's benchmarks (run by `cargo xtask bench`).
#[derive(Debug, Parser)]
#[command(name = "fair-bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Time fair-pruner's U+R scoring against the authors' get_metrics on CIFAR VGG16-BN.
    Scoring(scoring::Options),
    /// FAIR-Pruner vs network-pruner 2.16, uniform L1 (ours and Torch-Pruning) and ToD + L1 on
    /// Fashion-MNIST, same fine-tuning budget; tables into docs/results.md.
    Compare(compare::Options),
    /// FAIR-Pruner variants (one suspect changed each) against uniform L1 and Torch-Pruning's
    /// uniform L1, global Taylor and global group norm at equal MACs, mean ± std over seeds:
    /// one-shot, after BatchNorm recalibration and fine-tuned (validation and test).
    Ablation(ablation::Options),
    /// Score (U+R), surgery, a fine-tuning step and latency on CUDA and on the CPU for CIFAR
    /// VGG16-BN and ResNet-50, timed in the same run (CUDA figures pending without a GPU).
    GpuCheck(gpu_check::Options),
    /// The streamed ImageFolder (fair-data) against torchvision's ImageFolder + DataLoader on a
    /// synthetic folder of JPEGs: images/s and peak memory; figures into docs/results.md.
    Loader(loader::Options),
    /// Every torchvision classification model through ONNX: imported? outputs equal to ONNX
    /// Runtime? prunable groups? a random plan verified (dead units, onnx.checker, ONNX
    /// Runtime on the pruned export)? Table into docs/onnx.md.
    OnnxCoverage(onnx_coverage::Options),
    /// The U-Score of ResNet-50 (random weights) at 100 to 1000 classes on synthetic data
    /// with class structure: bounded class-pair search against all pairs (estimated from
    /// sampled units), time profile, one forward pass, peak memory, goals of issue 26.
    ScaleClasses(scale_classes::Options),
    /// `fair-pruner prune --target-latency` on libtorch CPU and ONNX Runtime CPU against
    /// `--target-macs` at equal MACs, through the built binary: achieved latency against the
    /// target, MACs removed, latency gain / MAC cut, issue 27's goals.
    Latency(latency::Options),
}

/// The workspace root (this crate lives in `crates/bench`).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("fair-bench lives in crates/bench of the workspace")
        .to_owned()
}

/// The reference Python: `--python`, else `FAIR_PRUNER_PYTHON`; `what` says who needs it.
pub(crate) fn reference_python(flag: Option<&Path>, what: &str) -> Result<PathBuf> {
    flag.map(Path::to_owned)
        .or_else(|| std::env::var_os("FAIR_PRUNER_PYTHON").map(PathBuf::from))
        .with_context(|| {
            format!(
                "{what} needs the reference Python: pass --python PATH or set FAIR_PRUNER_PYTHON \
                 (`cargo xtask bench` does this after `cargo xtask setup`)"
            )
        })
}

/// The process's peak resident set size in KiB (Linux `VmHWM`), if known. Not
/// `fair_testkit::peak_rss`: fair-testkit is a dev-dependency only (its docs and
/// docs/architecture.md say so), and this binary would link its test helpers.
pub(crate) fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the process's peak resident set size to its current one (Linux: writing 5 to
/// `/proc/self/clear_refs`), so [`peak_rss_kib`] measures from here; false where it cannot.
pub(crate) fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// A positive integer (command-line values).
pub(crate) fn positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(format!("expected a positive integer, found {text}")),
    }
}

/// Reads a JSON file.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    read_as(path)
}

/// Reads a JSON file into `T`.
pub(crate) fn read_as<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON of the expected form", path.display()))
}

/// Writes pretty JSON atomically.
pub(crate) fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    fair_fs::write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Scoring(o) => scoring::run(o),
        Command::Compare(o) => compare::run(o),
        Command::Ablation(o) => ablation::run(o),
        Command::GpuCheck(o) => gpu_check::run(o),
        Command::Loader(o) => loader::run(o),
        Command::OnnxCoverage(o) => onnx_coverage::run(o),
        Command::ScaleClasses(o) => scale_classes::run(o),
        Command::Latency(o) => latency::run(o),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fair-bench error: {}", fair_pipeline::error_text(&*e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("fair-bench").chain(args.iter().copied()))
    }

    #[test]
    fn scoring_options_parse_with_defaults_and_reject_bad_values() {
        let Command::Scoring(o) = parse(&["scoring"]).unwrap().command else {
            panic!("scoring expected")
        };
        assert_eq!((o.threads, o.classes, o.per_class), (2, 10, 32));
        assert!(o.python.is_none());
        let Command::Scoring(o) = parse(&[
            "scoring",
            "--threads",
            "4",
            "--classes",
            "5",
            "--per-class",
            "8",
            "--python",
            "/x/python",
        ])
        .unwrap()
        .command
        else {
            panic!("scoring expected")
        };
        assert_eq!((o.threads, o.classes, o.per_class), (4, 5, 8));
        assert_eq!(o.python.as_deref(), Some(Path::new("/x/python")));
        assert!(parse(&["scoring", "--threads", "0"]).is_err());
        assert!(parse(&["scoring", "--classes", "1"]).is_err());
        assert!(parse(&["scoring", "--per-class"]).is_err());
        assert!(parse(&["scoring", "--speed", "1"]).is_err());
        assert!(parse(&["bogus"]).is_err());
    }

    #[test]
    fn compare_options_parse_and_reject_unknown_ones() {
        let Command::Compare(o) = parse(&["compare"]).unwrap().command else {
            panic!("compare expected")
        };
        assert_eq!(o.alphas, vec![0.05, 0.2, 0.4, 0.6]);
        assert_eq!(o.nets, vec!["vgg".to_string(), "resnet".to_string()]);
        assert_eq!((o.train_epochs, o.finetune_epochs), (3, 1));
        assert_eq!((o.per_class, o.threads), (32, 2));
        assert!(!o.no_docs && !o.tables_only);
        let Command::Compare(o) = parse(&[
            "compare",
            "--alphas",
            "0.1, 0.3",
            "--nets",
            "vgg",
            "--no-docs",
            "--tables-only",
            "--train-epochs",
            "2",
        ])
        .unwrap()
        .command
        else {
            panic!("compare expected")
        };
        assert_eq!(o.alphas, vec![0.1, 0.3]);
        assert_eq!(o.nets, vec!["vgg".to_string()]);
        assert_eq!(o.train_epochs, 2);
        assert!(o.no_docs && o.tables_only);
        assert!(parse(&["compare", "--nets", "lenet"]).is_err());
        assert!(parse(&["compare", "--alphas", "0.1,x"]).is_err());
        assert!(parse(&["compare", "--alphas", "1.5"]).is_err());
        assert!(parse(&["compare", "--finetune-epochs", "0"]).is_err());
        assert!(parse(&["compare", "--speed", "1"]).is_err());
    }

    #[test]
    fn scale_classes_and_gpu_check_options_parse() {
        let Command::ScaleClasses(o) = parse(&["scale-classes"]).unwrap().command else {
            panic!("scale-classes expected")
        };
        let rows: Vec<(usize, usize)> = o.rows.iter().map(|r| (r.classes, r.per_class)).collect();
        assert_eq!(rows, [(100, 32), (1000, 8), (1000, 32)]);
        assert_eq!((o.size, o.model.as_str(), o.noise), (224, "resnet50", 1.0));
        assert_eq!(o.all_pairs_units, scale_classes::AllPairs::Units(8));
        assert!(o.max_memory.is_none());
        let Command::ScaleClasses(o) = parse(&[
            "scale-classes",
            "--rows",
            "100x8,10x4",
            "--size",
            "64",
            "--all-pairs-units",
            "all",
            "--max-memory",
            "6GiB",
        ])
        .unwrap()
        .command
        else {
            panic!("scale-classes expected")
        };
        assert_eq!((o.rows.len(), o.rows[1].classes, o.size), (2, 10, 64));
        assert_eq!(o.all_pairs_units, scale_classes::AllPairs::Full);
        assert_eq!(o.max_memory.map(|b| b.0), Some(6 << 30));
        assert!(parse(&["scale-classes", "--rows", "100"]).is_err());
        assert!(parse(&["scale-classes", "--all-pairs-units", "0"]).is_err());
        assert!(parse(&["scale-classes", "--python", "/p"]).is_err());
        let Command::GpuCheck(o) = parse(&["gpu-check"]).unwrap().command else {
            panic!("gpu-check expected")
        };
        assert_eq!(
            (o.pairs_row.classes, o.pairs_row.per_class, o.pairs_size),
            (100, 8, 64)
        );
        assert!(parse(&["gpu-check", "--pairs-row", "1x8"]).is_err());
    }

    #[test]
    fn latency_options_parse_with_defaults_and_reject_bad_values() {
        let Command::Latency(o) = parse(&["latency"]).unwrap().command else {
            panic!("latency expected")
        };
        assert!(!o.full && o.models.is_empty());
        assert_eq!(
            o.runtimes,
            [
                latency::Runtime::LibtorchCpu,
                latency::Runtime::OnnxruntimeCpu,
                latency::Runtime::PytorchCpu
            ]
        );
        assert_eq!(
            (o.target, o.threads, o.classes, o.per_class),
            (0.5, 1, 4, 4)
        );
        assert!(o.fair_pruner.is_none() && o.python.is_none() && o.out.is_none());
        let Command::Latency(o) = parse(&[
            "latency",
            "--full",
            "--models",
            "resnet50,vgg16_bn",
            "--runtimes",
            "onnxruntime-cpu",
            "--target",
            "0.3",
            "--threads",
            "2",
            "--fair-pruner",
            "/b/fair-pruner",
            "--python",
            "/p",
            "--out",
            "/o",
        ])
        .unwrap()
        .command
        else {
            panic!("latency expected")
        };
        assert!(o.full);
        assert_eq!(o.models, ["resnet50", "vgg16_bn"]);
        assert_eq!(o.runtimes, [latency::Runtime::OnnxruntimeCpu]);
        assert_eq!((o.target, o.threads), (0.3, 2));
        assert_eq!(o.fair_pruner.as_deref(), Some(Path::new("/b/fair-pruner")));
        assert_eq!(o.out.as_deref(), Some(Path::new("/o")));
        assert!(parse(&["latency", "--target", "1"]).is_err());
        assert!(parse(&["latency", "--target", "0"]).is_err());
        assert!(parse(&["latency", "--target", "x"]).is_err());
        assert!(parse(&["latency", "--runtimes", "cuda"]).is_err());
        assert!(parse(&["latency", "--threads", "0"]).is_err());
        assert!(parse(&["latency", "--per-class", "0"]).is_err());
        assert!(parse(&["latency", "--batch", "4"]).is_err());
    }

    #[test]
    fn a_later_python_flag_wins() {
        // xtask passes its Python first; one the user gives after it takes precedence.
        let Command::Compare(o) = parse(&["compare", "--python", "/a", "--python", "/b"])
            .unwrap()
            .command
        else {
            panic!("compare expected")
        };
        assert_eq!(o.python.as_deref(), Some(Path::new("/b")));
        assert_eq!(
            reference_python(Some(Path::new("/c")), "x").unwrap(),
            PathBuf::from("/c")
        );
    }

    #[test]
    fn errors_print_each_cause_once() {
        let e = anyhow::anyhow!("inner").context("outer: inner");
        assert_eq!(fair_pipeline::error_text(&*e), "outer: inner");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(fair_pipeline::error_text(&*e), "outer: inner");
    }

    #[test]
    fn the_workspace_root_holds_the_reference_scripts() {
        let root = workspace_root();
        assert!(root.join("xtask/bench/compare_reference.py").is_file());
        assert!(root.join("xtask/bench/ablation_reference.py").is_file());
        assert!(root.join("xtask/bench/scoring_reference.py").is_file());
        assert!(root.join("xtask/bench/loader_reference.py").is_file());
        assert!(root.join("xtask/bench/latency_models.py").is_file());
        assert!(root.join("configs/fashion-vgg.toml").is_file());
    }
}
