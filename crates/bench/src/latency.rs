//! `fair-bench latency`: latency targets against MAC targets at equal MACs (issue 27, item 4),
//! through the `fair-pruner` binary as a user runs it.
//!
//! For every model × runtime × batch of the run:
//!
//! 1. `fair-pruner prune --target-latency T --latency-on RUNTIME --latency-batch B
//!    --latency-threads N` (T = `--target`, 0.5 by default); from its `report.json`
//!    (`results[0].latency_target`): the export's measured latency against the unpruned
//!    model (interleaved on that runtime, median \[IQR\]), the fraction removed against the
//!    target, the correction rounds and `met`, the MACs removed and the latency gain / MAC
//!    cut ratio;
//! 2. `fair-pruner prune --target-macs M --latency-on RUNTIME --latency-batch B
//!    --latency-threads N` with M the fraction of MACs run 1 removed: its MACs removed and,
//!    from `results[0].runtime_latency`, its export's latency against the unpruned model
//!    measured the same way on the same runtime, batch and threads (no table, no
//!    correction), with its latency gain / MAC cut ratio.
//!
//! 3. on libtorch CPU and PyTorch CPU rows, the latency run's export timed as a user who
//!    runs its `model.py` times it: eager PyTorch, interleaved against fair-pruner's export
//!    of the unpruned model (`apply` with an empty plan) and, for torchvision models,
//!    against torchvision's module (`xtask/bench/pytorch_timing.py`, the same batch and
//!    threads, with the Python of `--python`).
//!
//! Runtimes (`--runtimes`): libtorch-cpu, onnxruntime-cpu and pytorch-cpu (the export's
//! `model.py` in eager PyTorch, timed by the CLI through Python).
//!
//! Models: the quick set (default) is the zoo's CIFAR ResNet-20 and VGG-16-BN at 3×32×32
//! (10 classes), batch 1; `--full` is issue 27's set: ResNet-50 at 224² (batch 1 and 32),
//! the zoo's CIFAR ResNet-56, and VGG-16-BN and MobileNetV2 at 224² imported from ONNX.
//! Zoo models get random weights (seed 0) written as safetensors; the ImageNet models
//! (ResNet-50 included) are torchvision's with random weights, written to ONNX by
//! `xtask/bench/latency_models.py` with the reference Python. Latency does not depend on
//! the weights' values. Calibration and test images are a small synthetic folder (32×32
//! PNGs, `--classes` classes, a colour per class plus noise; the folder source resizes
//! them to the model's input). Everything lives under the output directory
//! (`target/bench/latency/` by default): `models/`, `data/`, `runs/<row>/{latency,macs}/`
//! (the CLI's output directories) and the results, `results.json` and `table.md`, written
//! atomically after every row.
//!
//! Goals (issue 27): the achieved latency within 5 % of the target (relative: 50 % ± 2.5
//! points), and a latency gain of at least 0.9 of the MAC cut. A row is "not evaluated"
//! where the 1-minute load average before or after it was above [`MAX_LOAD`], or the CLI
//! flagged its measurement or its latency table noisy.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::workspace_root;

/// Load average above which no goal is judged.
pub const MAX_LOAD: f64 = 1.5;

/// Relative tolerance of the latency goal (within 5 % of the target).
pub const LATENCY_GOAL_TOLERANCE: f64 = 0.05;

/// The latency gain a row must reach, as a fraction of its MAC cut.
pub const GAIN_GOAL: f64 = 0.9;

/// Where a latency target is measured (`fair-pruner prune --latency-on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
// The names are the CLI's (`libtorch-cpu`, …): every runtime the bench times on is a CPU one.
#[allow(clippy::enum_variant_names)]
pub enum Runtime {
    /// libtorch on the CPU.
    LibtorchCpu,
    /// ONNX Runtime's CPU execution provider, through a Python with `onnxruntime`.
    OnnxruntimeCpu,
    /// The export's `model.py` in eager PyTorch, through a Python with `torch`.
    PytorchCpu,
}

impl Runtime {
    /// The CLI's name of the runtime.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::LibtorchCpu => "libtorch-cpu",
            Runtime::OnnxruntimeCpu => "onnxruntime-cpu",
            Runtime::PytorchCpu => "pytorch-cpu",
        }
    }
}

/// Where a model of the bench comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A zoo model with random weights (seed 0): name, input `[C, H, W]`, classes.
    Zoo(&'static str, [usize; 3], usize),
    /// A torchvision model with random weights written to ONNX at 3 × side²: name, side.
    Torchvision(&'static str, usize),
}

/// One model of a set, with the batch sizes it is run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpec {
    /// The name rows and `--models` use.
    pub name: &'static str,
    /// Where the model comes from.
    pub source: Source,
    /// Batch sizes of the latency measurement.
    pub batches: &'static [usize],
}

impl ModelSpec {
    /// The input `[C, H, W]`.
    pub fn input(&self) -> [usize; 3] {
        match self.source {
            Source::Zoo(_, input, _) => input,
            Source::Torchvision(_, side) => [3, side, side],
        }
    }
}

/// The default, quick set: CIFAR-size zoo models, batch 1 (a few minutes on 2 cores).
pub const QUICK: &[ModelSpec] = &[
    ModelSpec {
        name: "resnet20",
        source: Source::Zoo("resnet20", [3, 32, 32], 10),
        batches: &[1],
    },
    ModelSpec {
        name: "vgg16_bn_cifar",
        source: Source::Zoo("vgg16_bn_cifar", [3, 32, 32], 10),
        batches: &[1],
    },
];

/// The `--full` set: issue 27's models.
pub const FULL: &[ModelSpec] = &[
    ModelSpec {
        name: "resnet50",
        source: Source::Torchvision("resnet50", 224),
        batches: &[1, 32],
    },
    ModelSpec {
        name: "resnet56",
        source: Source::Zoo("resnet56", [3, 32, 32], 10),
        batches: &[1],
    },
    ModelSpec {
        name: "vgg16_bn",
        source: Source::Torchvision("vgg16_bn", 224),
        batches: &[1],
    },
    ModelSpec {
        name: "mobilenet_v2",
        source: Source::Torchvision("mobilenet_v2", 224),
        batches: &[1],
    },
];

/// A fraction strictly between 0 and 1 (command-line values).
fn fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!("expected a fraction in (0, 1), found {text}")),
    }
}

/// Options of `fair-bench latency`.
#[derive(Debug, Args)]
pub struct Options {
    /// Issue 27's models (ResNet-50 at 224² batch 1 and 32, ResNet-56, VGG-16-BN and
    /// MobileNetV2 from ONNX; hours on 2 cores) instead of the quick set (the zoo's CIFAR
    /// ResNet-20 and VGG-16-BN, batch 1).
    #[arg(long)]
    pub full: bool,
    /// Only these models of the set, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub models: Vec<String>,
    /// Runtimes, comma-separated; onnxruntime-cpu rows are skipped (and say why) where the
    /// Python cannot import onnxruntime and numpy, pytorch-cpu rows where it cannot import
    /// torch and safetensors.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Runtime::LibtorchCpu, Runtime::OnnxruntimeCpu, Runtime::PytorchCpu])]
    pub runtimes: Vec<Runtime>,
    /// The latency target: the fraction of latency to remove.
    #[arg(long, default_value_t = 0.5, value_parser = fraction)]
    pub target: f64,
    /// Threads of the latency measurement (`--latency-threads`, and `--threads` of every
    /// run).
    #[arg(long, default_value_t = 1, value_parser = crate::positive)]
    pub threads: usize,
    /// Classes of the synthetic image folder.
    #[arg(long, default_value_t = 4, value_parser = crate::positive)]
    pub classes: usize,
    /// Calibration samples per class (`--per-class`).
    #[arg(long, default_value_t = 4, value_parser = crate::positive)]
    pub per_class: usize,
    /// The `fair-pruner` binary [default: target/release/fair-pruner of this workspace,
    /// which `cargo xtask bench latency` builds].
    #[arg(long, value_name = "PATH")]
    pub fair_pruner: Option<PathBuf>,
    /// The Python for ONNX Runtime (`--latency-python`) and the torchvision exports
    /// [default: $FAIR_PRUNER_PYTHON, else python3].
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Output directory [default: target/bench/latency].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// `--weigh-by` of the latency runs: what the MAC-aware weights' costs count under the
    /// latency target, `latency` (the CLI's default) or `macs` (the counts before
    /// latency-weighted counts, to compare in a run of its own) [default: the CLI's].
    #[arg(long, value_name = "COST", value_parser = ["latency", "macs"])]
    pub weigh_by: Option<String>,
}

/// A median with its quartiles, as `report.json` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// First quartile.
    pub q1: f64,
    /// Third quartile.
    pub q3: f64,
}

/// The latency-targeted run of a row, from its `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyRun {
    /// The target (fraction of latency to remove).
    pub target: f64,
    /// The measured fraction removed (1 − 1 / median speed-up), the final measurement.
    pub removed: f64,
    /// The round-by-round speed-up, unpruned / pruned.
    pub speedup: Spread,
    /// The unpruned model, milliseconds per pass.
    pub before_ms: Spread,
    /// The export, milliseconds per pass.
    pub after_ms: Spread,
    /// Fraction of MACs removed.
    pub macs_removed: f64,
    /// MACs before / after.
    pub mac_cut: f64,
    /// Median speed-up / MAC cut, as the report gives it.
    pub gain_per_mac_cut: f64,
    /// Correction rounds run.
    pub rounds: usize,
    /// Whether the kept candidate met the target within the CLI's tolerance.
    pub met: Option<bool>,
    /// The final measurement was flagged noisy.
    pub noisy: bool,
    /// The latency table was flagged noisy.
    pub table_noisy: bool,
}

/// The MAC-targeted run's latency, as the CLI measured it (`results[0].runtime_latency`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MacLatency {
    /// The round-by-round speed-up over the unpruned model.
    pub speedup: Spread,
    /// The unpruned model, milliseconds per pass.
    pub before_ms: Spread,
    /// The export, milliseconds per pass.
    pub after_ms: Spread,
    /// 1 − 1 / median speed-up.
    pub removed: f64,
    /// Median speed-up / MAC cut.
    pub gain_per_mac_cut: f64,
    /// Flagged noisy by the CLI.
    pub noisy: bool,
}

/// The MAC-targeted run of a row, from its `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MacRun {
    /// The `--target-macs` given: the latency run's fraction of MACs removed.
    pub target_macs: f64,
    /// Fraction of MACs removed.
    pub macs_removed: f64,
    /// MACs before / after.
    pub mac_cut: f64,
    /// The latency on the row's runtime, batch and threads.
    pub latency: MacLatency,
}

/// The latency run's export timed in plain PyTorch (its `model.py`, eager, by
/// `xtask/bench/pytorch_timing.py`) against a reference, interleaved: what a user who runs
/// the export in PyTorch measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PytorchTiming {
    /// The reference: `unpruned export` (fair-pruner's export of the unpruned model, by
    /// `apply` with an empty plan) or `torchvision:NAME` (the original module).
    pub reference: String,
    /// The round-by-round speed-up, reference / export.
    pub speedup: Spread,
    /// 1 − 1 / median speed-up.
    pub removed: f64,
    /// The spread of the speed-up or of either model's times was wider than a quarter of
    /// its median (the CLI's rule).
    pub noisy: bool,
    /// The PyTorch version that ran it.
    pub torch: String,
}

/// The references an export is timed against in plain PyTorch, with their
/// `pytorch_timing.py` arguments: the unpruned export (`unpruned`), and torchvision's module
/// for a torchvision model.
fn pytorch_references(spec: &ModelSpec, unpruned: &Path) -> Vec<(String, String)> {
    let mut refs = vec![(
        "unpruned export".to_string(),
        unpruned.display().to_string(),
    )];
    if let Source::Torchvision(name, _) = spec.source {
        refs.push((format!("torchvision:{name}"), format!("torchvision:{name}")));
    }
    refs
}

/// The timings of `pytorch_timing.py`'s answer `answer`, whose models are `references` (in
/// order, by their names) followed by the export: one [`PytorchTiming`] per reference.
pub fn pytorch_timings_of(answer: &Value, references: &[String]) -> Result<Vec<PytorchTiming>> {
    let models = answer["models"]
        .as_array()
        .context("pytorch_timing.py: no `models` in its answer")?;
    if models.len() != references.len() + 1 {
        bail!(
            "pytorch_timing.py: {} models in its answer, expected {}",
            models.len(),
            references.len() + 1
        );
    }
    let rounds = |i: usize| -> Result<Vec<f64>> {
        models[i]["round_ms"]
            .as_array()
            .and_then(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>())
            .filter(|v| !v.is_empty())
            .with_context(|| format!("pytorch_timing.py: model {i} has no `round_ms`"))
    };
    let export = rounds(references.len())?;
    let wide = |s: &fair_pipeline::Spread| s.relative_iqr() > NOISY_ABOVE;
    let export_noisy = wide(&fair_pipeline::Spread::of(&export));
    let torch = answer["torch"].as_str().unwrap_or("?").to_string();
    references
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let reference = rounds(i)?;
            if reference.len() != export.len() {
                bail!("pytorch_timing.py: models {i} and the export have different round counts");
            }
            let ratios: Vec<f64> = reference.iter().zip(&export).map(|(r, e)| r / e).collect();
            let s = fair_pipeline::Spread::of(&ratios);
            Ok(PytorchTiming {
                reference: name.clone(),
                speedup: Spread {
                    median: s.median,
                    q1: s.q1,
                    q3: s.q3,
                },
                removed: 1.0 - 1.0 / s.median,
                noisy: export_noisy || wide(&s) || wide(&fair_pipeline::Spread::of(&reference)),
                torch: torch.clone(),
            })
        })
        .collect()
}

/// A relative spread (IQR / median) above this flags a plain-PyTorch timing noisy, as the
/// CLI flags its own (`LatencyOptions::noisy_above`).
pub const NOISY_ABOVE: f64 = 0.25;

/// One model × runtime × batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The model's name.
    pub model: String,
    /// Input `CxHxW`.
    pub input: String,
    /// The runtime's CLI name.
    pub runtime: String,
    /// Batch size of the latency measurement.
    pub batch: usize,
    /// Threads of the latency measurement.
    pub threads: usize,
    /// The latency-targeted run.
    pub latency_run: Option<LatencyRun>,
    /// The MAC-targeted run at the latency run's MACs.
    pub mac_run: Option<MacRun>,
    /// The latency run's export timed in plain PyTorch against each reference (libtorch
    /// CPU and PyTorch CPU rows; empty where not timed).
    #[serde(default)]
    pub pytorch: Vec<PytorchTiming>,
    /// Why the export was not timed in plain PyTorch, or what failed.
    #[serde(default)]
    pub pytorch_note: Option<String>,
    /// Why the row was not run.
    pub skipped: Option<String>,
    /// What failed.
    pub error: Option<String>,
    /// 1-minute load average before the row.
    pub load_before: Option<f64>,
    /// 1-minute load average after the row.
    pub load_after: Option<f64>,
    /// Wall-clock seconds of the row (both runs).
    pub seconds: f64,
}

/// The verdict on one goal.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Judged and met.
    Met,
    /// Judged and missed.
    Missed,
    /// Not judged, for the reason given.
    NotEvaluated(String),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Met => f.write_str("met"),
            Verdict::Missed => f.write_str("**missed**"),
            Verdict::NotEvaluated(why) => write!(f, "not evaluated ({why})"),
        }
    }
}

impl Row {
    /// The larger of the load averages before and after, where read.
    pub fn load(&self) -> Option<f64> {
        match (self.load_before, self.load_after) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Issue 27's two goals for this row, with their verdicts (none for a row that did not
    /// produce a latency run), and where the export was timed in plain PyTorch, the first
    /// goal again on that timing against the unpruned export.
    pub fn goals(&self) -> Vec<(String, Verdict)> {
        let Some(l) = &self.latency_run else {
            return Vec::new();
        };
        let why = match self.load() {
            Some(load) if load > MAX_LOAD => Some(format!("load {load:.2} > {MAX_LOAD}")),
            None => Some("load average unknown".to_string()),
            _ if l.noisy || l.table_noisy => Some("flagged noisy".to_string()),
            _ => None,
        };
        let verdict = |met: bool| match &why {
            Some(w) => Verdict::NotEvaluated(w.clone()),
            None if met => Verdict::Met,
            None => Verdict::Missed,
        };
        let within = (l.removed - l.target).abs() <= LATENCY_GOAL_TOLERANCE * l.target;
        let mut goals = vec![
            (
                format!(
                    "latency within 5% ({:.1}% vs {:.1}%)",
                    100.0 * l.removed,
                    100.0 * l.target
                ),
                verdict(within),
            ),
            (
                format!("gain ≥ {GAIN_GOAL} MAC cut ({:.2})", l.gain_per_mac_cut),
                verdict(l.gain_per_mac_cut >= GAIN_GOAL),
            ),
        ];
        // The export as a PyTorch user times it, against the unpruned export.
        if let Some(p) = self.pytorch.first() {
            let within = (p.removed - l.target).abs() <= LATENCY_GOAL_TOLERANCE * l.target;
            goals.push((
                format!(
                    "in plain PyTorch within 5% ({:.1}% vs {:.1}%)",
                    100.0 * p.removed,
                    100.0 * l.target
                ),
                match &why {
                    None if p.noisy => Verdict::NotEvaluated("flagged noisy".to_string()),
                    _ => verdict(within),
                },
            ));
        }
        goals
    }
}

/// The 1-minute load average of the machine (`/proc/loadavg`), `None` where unreadable.
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn spread(v: &Value, what: &str) -> Result<Spread> {
    serde_json::from_value(v.clone()).with_context(|| format!("report.json: no {what} spread"))
}

fn number(v: &Value, what: &str) -> Result<f64> {
    v.as_f64()
        .with_context(|| format!("report.json: no number at {what}"))
}

/// The MAC cut of the first result of a report: the unpruned model's MACs over the pruned
/// model's.
fn mac_cut_of(report: &Value) -> Result<f64> {
    let before = number(&report["before"]["macs"], "before.macs")?;
    let after = number(
        &report["results"][0]["after"]["macs"],
        "results[0].after.macs",
    )?;
    if after <= 0.0 {
        bail!("report.json: the pruned model has no MACs");
    }
    Ok(before / after)
}

/// The latency-targeted run's figures from its `report.json`.
pub fn latency_run_of(report: &Value) -> Result<LatencyRun> {
    let r = &report["results"][0];
    let t = &r["latency_target"];
    if t.is_null() {
        bail!("report.json: results[0] has no latency_target");
    }
    let m = &t["measured"];
    if m.is_null() {
        bail!("report.json: the latency target was not measured (latency_target.measured)");
    }
    Ok(LatencyRun {
        target: number(&t["target"], "latency_target.target")?,
        removed: number(&m["removed"], "latency_target.measured.removed")?,
        speedup: spread(&m["speedup"], "measured.speedup")?,
        before_ms: spread(&m["before_ms"], "measured.before_ms")?,
        after_ms: spread(&m["after_ms"], "measured.after_ms")?,
        macs_removed: number(&r["achieved"]["macs"], "results[0].achieved.macs")?,
        mac_cut: number(&t["mac_cut"], "latency_target.mac_cut")?,
        gain_per_mac_cut: number(&m["gain_per_mac_cut"], "measured.gain_per_mac_cut")?,
        rounds: t["rounds"].as_array().map_or(0, Vec::len),
        met: t["met"].as_bool(),
        noisy: m["noisy"].as_bool().unwrap_or(false),
        table_noisy: t["table_noisy"].as_bool().unwrap_or(false),
    })
}

/// The MAC-targeted run's figures from its `report.json`: its MACs and its export's latency
/// as the CLI timed it with `--latency-on` (`results[0].runtime_latency`), which must be on
/// `runtime` at `batch` with `threads` threads.
pub fn mac_run_of(
    report: &Value,
    target_macs: f64,
    runtime: Runtime,
    batch: usize,
    threads: usize,
) -> Result<MacRun> {
    let r = &report["results"][0];
    let macs_removed = number(&r["achieved"]["macs"], "results[0].achieved.macs")?;
    let mac_cut = mac_cut_of(report)?;
    let l = &r["runtime_latency"];
    if l.is_null() {
        bail!(
            "report.json: the MAC-targeted run was not timed on {} (results[0].runtime_latency; a fair-pruner that times a MAC target with --latency-on is needed)",
            runtime.name()
        );
    }
    let m = &l["measured"];
    let (on, at, with) = (
        m["runtime"].as_str(),
        l["batch"].as_u64(),
        l["threads"].as_u64(),
    );
    if on != Some(runtime.name()) || at != Some(batch as u64) || with != Some(threads as u64) {
        let or_unknown = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
        bail!(
            "report.json: the MAC-targeted run was timed on {} at batch {} with {} threads, not on {} at batch {batch} with {threads} threads",
            on.unwrap_or("?"),
            or_unknown(at),
            or_unknown(with),
            runtime.name()
        );
    }
    Ok(MacRun {
        target_macs,
        macs_removed,
        mac_cut,
        latency: MacLatency {
            speedup: spread(&m["speedup"], "runtime_latency.measured.speedup")?,
            before_ms: spread(&m["before_ms"], "runtime_latency.measured.before_ms")?,
            after_ms: spread(&m["after_ms"], "runtime_latency.measured.after_ms")?,
            removed: number(&m["removed"], "runtime_latency.measured.removed")?,
            gain_per_mac_cut: number(
                &m["gain_per_mac_cut"],
                "runtime_latency.measured.gain_per_mac_cut",
            )?,
            noisy: m["noisy"].as_bool().unwrap_or(false),
        },
    })
}

/// How a run prunes: at a latency target or at a MAC target; either way its export is
/// timed on `runtime` at `batch` (`--latency-on`, `--latency-batch`), ONNX Runtime through
/// `python`.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal<'a> {
    /// What the run aims at.
    pub target: Target,
    /// Where the export is timed (and a latency target's table measured).
    pub runtime: Runtime,
    /// Batch size of the timing.
    pub batch: usize,
    /// The Python for ONNX Runtime, if given.
    pub python: Option<&'a Path>,
}

/// What a run of the bench aims at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// `--target-latency`: the fraction of latency to remove.
    Latency(f64),
    /// `--target-macs`: the fraction of MACs to remove.
    Macs(f64),
}

/// The model's flags: a zoo model with its weights, or an ONNX file.
pub fn model_flags(spec: &ModelSpec, file: &Path) -> Vec<String> {
    let [c, h, w] = spec.input();
    match spec.source {
        Source::Zoo(name, _, classes) => vec![
            "--model".into(),
            name.into(),
            "--input".into(),
            format!("{c}x{h}x{w}"),
            "--classes".into(),
            classes.to_string(),
            "--weights".into(),
            file.display().to_string(),
        ],
        // ImageNet normalisation (the export records none): silences the CLI's warning.
        Source::Torchvision(..) => vec![
            "--graph".into(),
            file.display().to_string(),
            "--mean".into(),
            "0.485,0.456,0.406".into(),
            "--std".into(),
            "0.229,0.224,0.225".into(),
        ],
    }
}

/// The `fair-pruner` arguments of one run: `prune`, the model, the synthetic folder in
/// `data`, the goal, `threads` threads, no reconstruction or recalibration (they change
/// neither MACs nor latency), output into `out`.
pub fn prune_args(
    model: &[String],
    data: &Path,
    per_class: usize,
    threads: usize,
    goal: &Goal<'_>,
    out: &Path,
) -> Vec<String> {
    let mut a: Vec<String> = vec!["prune".into()];
    a.extend(model.iter().cloned());
    for (k, v) in [
        ("--data", "folder".to_string()),
        ("--data-path", data.display().to_string()),
        ("--per-class", per_class.to_string()),
        ("--threads", threads.to_string()),
        ("--reconstruct", "0".into()),
        ("--bn-recalibrate", "0".into()),
    ] {
        a.extend([k.to_string(), v]);
    }
    let (flag, target) = match goal.target {
        Target::Latency(t) => ("--target-latency", t),
        Target::Macs(m) => ("--target-macs", m),
    };
    a.extend([
        flag.into(),
        target.to_string(),
        "--latency-on".into(),
        goal.runtime.name().into(),
        "--latency-batch".into(),
        goal.batch.to_string(),
        "--latency-threads".into(),
        threads.to_string(),
    ]);
    if let (Runtime::OnnxruntimeCpu | Runtime::PytorchCpu, Some(p)) = (goal.runtime, goal.python) {
        a.extend(["--latency-python".into(), p.display().to_string()]);
    }
    a.extend(["--out".into(), out.display().to_string(), "-q".into()]);
    a
}

fn spread_cell(s: &Spread, digits: usize) -> String {
    format!("{:.d$} [{:.d$}–{:.d$}]", s.median, s.q1, s.q3, d = digits)
}

fn loads(r: &Row) -> String {
    let one = |l: Option<f64>| l.map_or("?".to_string(), |l| format!("{l:.2}"));
    format!("{} → {}", one(r.load_before), one(r.load_after))
}

/// The Markdown table of `rows` at latency target `target`.
pub fn table(rows: &[Row], target: f64) -> String {
    let mut t = format!(
        "Latency target {:.0}% (`prune --target-latency {target}`), against `--target-macs` at \
         the MACs the latency run removed (`--latency-on` times its export the same way). \
         Latency, both runs: the export timed interleaved against the \
         unpruned model on the row's runtime, batch and threads (median [IQR] of the \
         round-by-round speed-up; \"removed\" is 1 − 1/speed-up). \"gain / MAC cut\" is the \
         median speed-up over MACs before/after. \"rounds (met)\": the CLI's measured \
         correction (candidates built and timed; met: the kept candidate's reduction, in its \
         round, within the CLI's tolerance); \"removed\" is its separate final measurement \
         of the export, which can differ on a busy machine. \"load\" is the 1-minute load average \
         before → after the row. Goals (issue 27): latency within 5% of the target; gain ≥ \
         {GAIN_GOAL} of the MAC cut; not evaluated above load {MAX_LOAD} or where the CLI \
         flagged the measurement or table noisy. \"plain PyTorch\" (libtorch and pytorch rows): the \
         latency run's export (its `model.py`, eager) timed interleaved in PyTorch against \
         fair-pruner's export of the unpruned model and, for torchvision models, against \
         torchvision's module (`xtask/bench/pytorch_timing.py`, same batch and threads); its \
         goal is the first one again, against the unpruned export.\n\n\
         | model | input | runtime | batch | latency run: removed (speed-up) | ms unpruned → pruned | \
         rounds (met) | MACs removed (cut) | gain / MAC cut | MAC run: MACs removed (cut) | \
         MAC run: removed (speed-up) | MAC run: gain / MAC cut | plain PyTorch: removed (speed-up) | load | goals |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        100.0 * target
    );
    for r in rows {
        let head = format!(
            "| {} | {} | {} | {} |",
            r.model, r.input, r.runtime, r.batch
        );
        if let Some(why) = r.skipped.as_ref().or(r.error.as_ref()) {
            let label = if r.skipped.is_some() {
                "skipped"
            } else {
                "**error**"
            };
            let why: String = why
                .chars()
                .take(200)
                .collect::<String>()
                .replace('|', "\\|");
            let _ = writeln!(
                t,
                "{head} {label}: {why} | | | | | | | | | {} | |",
                loads(r)
            );
            continue;
        }
        let Some(l) = &r.latency_run else { continue };
        let noisy = if l.noisy { " (noisy)" } else { "" };
        let met = match l.met {
            Some(true) => "met",
            Some(false) => "not met",
            None => "–",
        };
        let (mac_macs, mac_removed, mac_gain) = match &r.mac_run {
            Some(m) => (
                format!("{:.1}% ({:.2}×)", 100.0 * m.macs_removed, m.mac_cut),
                format!(
                    "{:.1}% ({}×){}",
                    100.0 * m.latency.removed,
                    spread_cell(&m.latency.speedup, 2),
                    if m.latency.noisy { " (noisy)" } else { "" }
                ),
                format!("{:.2}", m.latency.gain_per_mac_cut),
            ),
            None => ("–".into(), "–".into(), "–".into()),
        };
        let goals = r
            .goals()
            .into_iter()
            .map(|(g, v)| format!("{g}: {v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            t,
            "{head} {:.1}% ({}×){noisy} | {} → {} | {}{} | {:.1}% ({:.2}×) | {:.2} | {mac_macs} | \
             {mac_removed} | {mac_gain} | {} | {} | {goals} |",
            100.0 * l.removed,
            spread_cell(&l.speedup, 2),
            spread_cell(&l.before_ms, 3),
            spread_cell(&l.after_ms, 3),
            l.rounds,
            if l.rounds > 0 {
                format!(" ({met})")
            } else {
                String::new()
            },
            100.0 * l.macs_removed,
            l.mac_cut,
            l.gain_per_mac_cut,
            pytorch_cell(r),
            loads(r),
        );
    }
    t
}

/// The plain-PyTorch cell of a row: per reference, the fraction removed with the speed-up's
/// median \[IQR\] (and "noisy"), or why it was not timed.
fn pytorch_cell(r: &Row) -> String {
    if r.pytorch.is_empty() {
        return match &r.pytorch_note {
            Some(n) => format!(
                "not timed: {}",
                n.chars().take(120).collect::<String>().replace('|', "\\|")
            ),
            None => "–".into(),
        };
    }
    r.pytorch
        .iter()
        .map(|p| {
            format!(
                "{:.1}% ({}×){} vs {}",
                100.0 * p.removed,
                spread_cell(&p.speedup, 2),
                if p.noisy { " (noisy)" } else { "" },
                p.reference
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The Python to use: `--python`, else `$FAIR_PRUNER_PYTHON`, else `python3`.
fn python(o: &Options) -> PathBuf {
    o.python
        .clone()
        .or_else(|| std::env::var_os("FAIR_PRUNER_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// Why ONNX Runtime cannot be used through `python`, or `None` where it can.
fn onnxruntime_missing(python: &Path) -> Option<String> {
    cannot_import(python, &["onnxruntime", "numpy"])
}

/// Why `python` cannot import every one of `modules` (what to install, or `--python`), or
/// `None` where it can.
fn cannot_import(python: &Path, modules: &[&str]) -> Option<String> {
    let out = Command::new(python)
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output();
    match out {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "{} cannot import {} ({}); pip install {}, or pass --python",
            python.display(),
            modules.join(" and "),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
                .trim(),
            modules.join(" ")
        )),
        Err(e) => Some(format!("cannot run {}: {e}", python.display())),
    }
}

/// Runs `command` (the program `program`) to its end: its output when it succeeded, else an
/// error `<what> failed: <the last line of its stderr>`.
fn run_to_end(command: &mut Command, program: &Path, what: &str) -> Result<std::process::Output> {
    let o = command
        .output()
        .with_context(|| format!("cannot run {}", program.display()))?;
    if !o.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    Ok(o)
}

/// fair-pruner's export of the unpruned model of `spec` (`apply` with an empty plan) under
/// `models`: the plain-PyTorch reference in the same `model.py` form as the pruned exports.
/// Written by the run's own `fair-pruner` (once per run: `done` holds the models exported
/// so far), so a `model.py` of an earlier build is never timed against this one's.
fn unpruned_export(
    fair_pruner: &Path,
    spec: &ModelSpec,
    file: &Path,
    models: &Path,
    done: &mut Vec<&'static str>,
) -> Result<PathBuf> {
    let dir = models.join(format!("{}-unpruned", spec.name));
    if done.contains(&spec.name) {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let plan = models.join("empty-plan.json");
    fair_fs::write_atomic(&plan, br#"{"remove": {}}"#)?;
    let mut args: Vec<String> = vec!["apply".into()];
    args.extend(match spec.source {
        Source::Zoo(..) => model_flags(spec, file),
        Source::Torchvision(..) => vec!["--graph".into(), file.display().to_string()],
    });
    args.extend([
        "--plan".into(),
        plan.display().to_string(),
        "--out".into(),
        dir.display().to_string(),
    ]);
    run_to_end(
        Command::new(fair_pruner).args(&args),
        fair_pruner,
        &format!("fair-pruner apply (the unpruned export of {})", spec.name),
    )?;
    done.push(spec.name);
    Ok(dir)
}

/// Times `export` (a directory fair-pruner wrote) in plain PyTorch through `python`,
/// interleaved with the references of `spec` (see [`pytorch_references`]), at `batch` with
/// `threads` threads.
fn time_in_pytorch(
    python: &Path,
    spec: &ModelSpec,
    unpruned: &Path,
    export: &Path,
    batch: usize,
    threads: usize,
) -> Result<Vec<PytorchTiming>> {
    let script = workspace_root().join("xtask/bench/pytorch_timing.py");
    let refs = pytorch_references(spec, unpruned);
    let [c, h, w] = spec.input();
    let mut command = Command::new(python);
    command
        .arg(&script)
        .args([
            batch.to_string(),
            threads.to_string(),
            format!("{c}x{h}x{w}"),
        ])
        .args(refs.iter().map(|(_, a)| a))
        .arg(export);
    let o = run_to_end(&mut command, python, &script.display().to_string())?;
    let answer: Value = serde_json::from_slice(&o.stdout)
        .with_context(|| format!("{}: its answer is not JSON", script.display()))?;
    let names: Vec<String> = refs.into_iter().map(|(n, _)| n).collect();
    pytorch_timings_of(&answer, &names)
}

/// Writes the synthetic image folder (32×32 PNGs: `classes` classes, `per_class` + 2
/// training and 2 test images per class) into `dir` unless a complete one is there.
fn synthetic_folder(dir: &Path, classes: usize, per_class: usize) -> Result<()> {
    let done = dir.join("done.json");
    let want = serde_json::json!({"classes": classes, "per_class": per_class + 2});
    if crate::read_json(&done).ok().as_ref() == Some(&want) {
        return Ok(());
    }
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    for (split, n) in [("train", per_class + 2), ("test", 2)] {
        for c in 0..classes {
            let class_dir = partial.join(split).join(format!("class_{c:03}"));
            std::fs::create_dir_all(&class_dir)?;
            let base: [u8; 3] = rng.r#gen();
            for i in 0..n {
                let img = image::RgbImage::from_fn(32, 32, |_, _| {
                    image::Rgb(base.map(|b| b.saturating_add(rng.gen_range(0..64))))
                });
                img.save(class_dir.join(format!("{i}.png")))
                    .with_context(|| format!("cannot write {}", class_dir.display()))?;
            }
        }
    }
    crate::write_json(&partial.join("done.json"), &want)?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&partial, dir)
        .with_context(|| format!("cannot move {} into place", partial.display()))?;
    Ok(())
}

/// The model's file: random zoo weights (safetensors) or a torchvision ONNX export, made
/// once under `models`.
fn model_file(spec: &ModelSpec, models: &Path, python: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(models)?;
    match spec.source {
        Source::Zoo(name, input, classes) => {
            let path = models.join(format!(
                "{name}-{}x{}x{}.safetensors",
                input[0], input[1], input[2]
            ));
            if !path.exists() {
                let graph = fair_zoo::build(name, &input, classes)?;
                let model = fair_runtime::Model::new(graph, tch::Device::Cpu, 0)?;
                fair_runtime::write_safetensors(&path, &model.named_tensors())?;
            }
            Ok(path)
        }
        Source::Torchvision(name, side) => {
            let path = models.join(format!("{name}-{side}.onnx"));
            if !path.exists() {
                let script = workspace_root().join("xtask/bench/latency_models.py");
                run_to_end(
                    Command::new(python)
                        .arg(&script)
                        .args(["export", name, &side.to_string()])
                        .arg(&path),
                    python,
                    &format!(
                        "{} export {name} (torch and torchvision needed: --python)",
                        script.display()
                    ),
                )?;
            }
            Ok(path)
        }
    }
}

/// Runs `fair-pruner` with `args` and reads the report it wrote into `out`.
fn prune(fair_pruner: &Path, args: &[String], out: &Path) -> Result<Value> {
    let o = Command::new(fair_pruner)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", fair_pruner.display()))?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        bail!(
            "fair-pruner {} failed: {}",
            args.iter()
                .filter(|a| a.starts_with("--target"))
                .cloned()
                .collect::<Vec<_>>()
                .join(" "),
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        );
    }
    crate::read_json(&out.join("report.json"))
}

/// What every row of a run shares.
struct Shared<'a> {
    options: &'a Options,
    fair_pruner: &'a Path,
    data: &'a Path,
    python: &'a Path,
}

/// One row: the latency run, then the MAC run at its MACs, each into its own directory
/// under `dir`; with the directory of the latency run's export.
fn row_runs(
    shared: &Shared<'_>,
    model: &[String],
    dir: &Path,
    runtime: Runtime,
    batch: usize,
) -> Result<(LatencyRun, MacRun, PathBuf)> {
    let o = shared.options;
    let out = dir.join("latency");
    let mut goal = Goal {
        target: Target::Latency(o.target),
        runtime,
        batch,
        python: Some(shared.python),
    };
    let mut args = prune_args(model, shared.data, o.per_class, o.threads, &goal, &out);
    if let Some(by) = &o.weigh_by {
        args.extend(["--weigh-by".into(), by.clone()]);
    }
    let report = prune(shared.fair_pruner, &args, &out)?;
    let lat = latency_run_of(&report)?;
    let export = out.join(
        report["results"][0]["export"]
            .as_str()
            .context("report.json: results[0] has no export")?,
    );
    let out = dir.join("macs");
    goal.target = Target::Macs(lat.macs_removed);
    let report = prune(
        shared.fair_pruner,
        &prune_args(model, shared.data, o.per_class, o.threads, &goal, &out),
        &out,
    )?;
    let mac = mac_run_of(&report, lat.macs_removed, runtime, batch, o.threads)?;
    Ok((lat, mac, export))
}

/// Runs `fair-bench latency`.
pub fn run(o: &Options) -> Result<()> {
    let set = if o.full { FULL } else { QUICK };
    for m in &o.models {
        if !set.iter().any(|s| s.name == m) {
            bail!(
                "--models: '{m}' is not in the {} set ({})",
                if o.full { "--full" } else { "quick" },
                set.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
            );
        }
    }
    let fair_pruner = o
        .fair_pruner
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/release/fair-pruner"));
    if !fair_pruner.is_file() {
        bail!(
            "no fair-pruner binary at {} (build it with `cargo build --release -p fair-cli`, \
             or pass --fair-pruner PATH)",
            fair_pruner.display()
        );
    }
    let python = python(o);
    let out = o
        .out
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/bench/latency"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let data = out
        .join("data")
        .join(format!("folder-{}x{}", o.classes, o.per_class));
    synthetic_folder(&data, o.classes, o.per_class)?;
    let ort_missing = o
        .runtimes
        .contains(&Runtime::OnnxruntimeCpu)
        .then(|| onnxruntime_missing(&python))
        .flatten();
    let torch_missing = o
        .runtimes
        .iter()
        .any(|&r| r != Runtime::OnnxruntimeCpu)
        .then(|| cannot_import(&python, &["torch", "safetensors"]))
        .flatten();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let shared = Shared {
        options: o,
        fair_pruner: &fair_pruner,
        data: &data,
        python: &python,
    };
    let load_start = load_average();
    let mut rows: Vec<Row> = Vec::new();
    let mut exported: Vec<&'static str> = Vec::new();
    for spec in set
        .iter()
        .filter(|s| o.models.is_empty() || o.models.iter().any(|m| m == s.name))
    {
        let [c, h, w] = spec.input();
        let file = model_file(spec, &out.join("models"), &python);
        for &runtime in &o.runtimes {
            for &batch in spec.batches {
                let started = Instant::now();
                let mut row = Row {
                    model: spec.name.into(),
                    input: format!("{c}x{h}x{w}"),
                    runtime: runtime.name().into(),
                    batch,
                    threads: o.threads,
                    latency_run: None,
                    mac_run: None,
                    pytorch: Vec::new(),
                    pytorch_note: None,
                    skipped: None,
                    error: None,
                    load_before: load_average(),
                    load_after: None,
                    seconds: 0.0,
                };
                eprintln!(
                    "latency bench: {} {} batch {batch} (load {})",
                    spec.name,
                    runtime.name(),
                    row.load_before.map_or("?".into(), |l| format!("{l:.2}"))
                );
                match (&file, runtime, &ort_missing, &torch_missing) {
                    (Err(e), ..) => row.error = Some(format!("{e:#}")),
                    (Ok(_), Runtime::OnnxruntimeCpu, Some(why), _)
                    | (Ok(_), Runtime::PytorchCpu, _, Some(why)) => row.skipped = Some(why.clone()),
                    (Ok(f), ..) => {
                        let dir = out.join("runs").join(format!(
                            "{}-{}-b{batch}",
                            spec.name,
                            runtime.name()
                        ));
                        match row_runs(&shared, &model_flags(spec, f), &dir, runtime, batch) {
                            Ok((l, m, export)) => {
                                row.latency_run = Some(l);
                                row.mac_run = Some(m);
                                // libtorch and PyTorch rows: the export as a PyTorch
                                // user times it.
                                if runtime != Runtime::OnnxruntimeCpu {
                                    let timed = match &torch_missing {
                                        Some(why) => Err(anyhow::anyhow!("{why}")),
                                        None => unpruned_export(
                                            &fair_pruner,
                                            spec,
                                            f,
                                            &out.join("models"),
                                            &mut exported,
                                        )
                                        .and_then(|u| {
                                            time_in_pytorch(
                                                &python, spec, &u, &export, batch, o.threads,
                                            )
                                        }),
                                    };
                                    match timed {
                                        Ok(t) => row.pytorch = t,
                                        Err(e) => row.pytorch_note = Some(format!("{e:#}")),
                                    }
                                }
                            }
                            Err(e) => row.error = Some(format!("{e:#}")),
                        }
                    }
                }
                row.load_after = load_average();
                row.seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
                rows.push(row);
                // Written after every row: an interrupted run keeps what it measured.
                write_results(&out, o, &command, load_start, &rows)?;
            }
        }
    }
    let md = write_results(&out, o, &command, load_start, &rows)?;
    print!("{md}");
    println!("written to {}", out.display());
    if let Some(r) = rows.iter().find(|r| r.error.is_some()) {
        bail!(
            "{} {} batch {}: {}",
            r.model,
            r.runtime,
            r.batch,
            r.error.as_deref().unwrap_or_default()
        );
    }
    Ok(())
}

/// Writes `results.json` and `table.md` into `out` (atomically); returns the table.
fn write_results(
    out: &Path,
    o: &Options,
    command: &str,
    load_start: Option<f64>,
    rows: &[Row],
) -> Result<String> {
    let md = table(rows, o.target);
    let goals: Vec<Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!(
                r.goals()
                    .into_iter()
                    .map(|(g, v)| format!("{g}: {v}"))
                    .collect::<Vec<_>>()
            )
        })
        .collect();
    crate::write_json(
        &out.join("results.json"),
        &serde_json::json!({
            "set": if o.full { "full" } else { "quick" },
            "target": o.target,
            "threads": o.threads,
            "classes": o.classes,
            "per_class": o.per_class,
            "command": command,
            "load_before": load_start,
            "load_after": load_average(),
            "max_load_for_goals": MAX_LOAD,
            "rows": rows,
            "goals": goals,
        }),
    )?;
    fair_fs::write_atomic(&out.join("table.md"), md.as_bytes())?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(median: f64, q1: f64, q3: f64) -> Value {
        json!({"median": median, "q1": q1, "q3": q3})
    }

    /// A latency run's report as the CLI writes it (the fields the bench reads).
    fn latency_report() -> Value {
        json!({
            "before": {"macs": 40_000_000u64, "latency": []},
            "results": [{
                "achieved": {"params": 0.5, "macs": 0.6},
                "after": {"macs": 16_000_000u64, "latency": []},
                "latency_target": {
                    "target": 0.5, "runtime": "libtorch-cpu", "batch": 1, "threads": 1,
                    "table": "measured", "table_file": "t.json", "table_noisy": false,
                    "predicted": 0.55, "mac_cut": 2.5,
                    "measured": {"runtime": "libtorch-cpu", "before_ms": s(2.0, 1.9, 2.1),
                        "after_ms": s(1.0, 0.95, 1.05), "speedup": s(2.0, 1.9, 2.1),
                        "removed": 0.5, "gain_per_mac_cut": 0.8, "noisy": false},
                    "rounds": [{}, {}], "tolerance": 0.05, "met": true
                }
            }]
        })
    }

    /// A MAC run's report as the CLI writes it with `--latency-on runtime --latency-batch
    /// batch` (the fields the bench reads; its default libtorch timing is not read).
    fn mac_report(runtime: &str, batch: usize, noisy: bool) -> Value {
        json!({
            "before": {"macs": 40_000_000u64, "latency": [
                {"batch": 1, "ms": s(9.0, 8.0, 10.0), "rounds": 9, "noisy": false}]},
            "results": [{
                "achieved": {"params": 0.5, "macs": 0.75},
                "after": {"macs": 10_000_000u64, "latency": [
                    {"batch": 1, "ms": s(3.0, 2.0, 4.0), "rounds": 9, "noisy": false,
                     "speedup": s(3.0, 2.0, 4.0)}]},
                "runtime_latency": {
                    "batch": batch, "threads": 1, "mac_cut": 4.0,
                    "measured": {"runtime": runtime, "before_ms": s(2.0, 1.8, 2.2),
                        "after_ms": s(1.6, 1.5, 1.7), "speedup": s(1.25, 1.2, 1.3),
                        "removed": 0.2, "gain_per_mac_cut": 0.3125, "noisy": noisy}
                }
            }]
        })
    }

    fn row(load: Option<f64>) -> Row {
        let report = latency_report();
        Row {
            model: "resnet20".into(),
            input: "3x32x32".into(),
            runtime: "libtorch-cpu".into(),
            batch: 1,
            threads: 1,
            latency_run: Some(latency_run_of(&report).unwrap()),
            mac_run: Some(
                mac_run_of(
                    &mac_report("libtorch-cpu", 1, false),
                    0.6,
                    Runtime::LibtorchCpu,
                    1,
                    1,
                )
                .unwrap(),
            ),
            pytorch: Vec::new(),
            pytorch_note: None,
            skipped: None,
            error: None,
            load_before: load,
            load_after: load,
            seconds: 1.0,
        }
    }

    #[test]
    fn a_latency_report_gives_the_rows_figures() {
        let l = latency_run_of(&latency_report()).unwrap();
        assert_eq!((l.target, l.removed, l.macs_removed), (0.5, 0.5, 0.6));
        assert_eq!((l.mac_cut, l.gain_per_mac_cut, l.rounds), (2.5, 0.8, 2));
        assert_eq!(l.met, Some(true));
        assert_eq!(
            l.speedup,
            Spread {
                median: 2.0,
                q1: 1.9,
                q3: 2.1
            }
        );
        assert!(!l.noisy && !l.table_noisy);
        let mut r = latency_report();
        r["results"][0]["latency_target"]["measured"] = Value::Null;
        assert!(
            latency_run_of(&r)
                .unwrap_err()
                .to_string()
                .contains("not measured")
        );
        r["results"][0]["latency_target"] = Value::Null;
        assert!(latency_run_of(&r).is_err());
    }

    #[test]
    fn a_mac_report_gives_its_latency_on_the_rows_runtime_and_batch() {
        let m = mac_run_of(
            &mac_report("onnxruntime-cpu", 32, true),
            0.6,
            Runtime::OnnxruntimeCpu,
            32,
            1,
        )
        .unwrap();
        assert_eq!((m.target_macs, m.macs_removed, m.mac_cut), (0.6, 0.75, 4.0));
        // The report's `runtime_latency`, not the CLI's default libtorch timing (3×).
        let l = m.latency;
        assert_eq!((l.removed, l.gain_per_mac_cut), (0.2, 0.3125));
        assert_eq!(
            l.speedup,
            Spread {
                median: 1.25,
                q1: 1.2,
                q3: 1.3
            }
        );
        assert_eq!((l.before_ms.median, l.after_ms.median), (2.0, 1.6));
        assert!(l.noisy);
        // Timed on another runtime, batch or thread count than the row's, or not at all:
        // an error.
        for (runtime, batch, threads) in [
            (Runtime::LibtorchCpu, 32, 1),
            (Runtime::OnnxruntimeCpu, 1, 1),
            (Runtime::OnnxruntimeCpu, 32, 4),
        ] {
            let e = mac_run_of(
                &mac_report("onnxruntime-cpu", 32, false),
                0.6,
                runtime,
                batch,
                threads,
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("timed on onnxruntime-cpu at batch 32 with 1 threads, not on"),
                "{e}"
            );
        }
        let mut r = mac_report("libtorch-cpu", 1, false);
        r["results"][0]["runtime_latency"] = Value::Null;
        let e = mac_run_of(&r, 0.6, Runtime::LibtorchCpu, 1, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("was not timed on libtorch-cpu"), "{e}");
    }

    /// `pytorch_timing.py`'s answer for two references and the export, with these round
    /// times.
    fn pytorch_answer(unpruned: &[f64], tv: &[f64], export: &[f64]) -> Value {
        let m = |name: &str, t: &[f64]| json!({"model": name, "round_ms": t});
        json!({"torch": "2.11.0", "models": [m("u", unpruned), m("tv", tv), m("e", export)]})
    }

    #[test]
    fn plain_pytorch_timings_are_taken_round_by_round_against_each_reference() {
        let refs = [
            "unpruned export".to_string(),
            "torchvision:resnet50".to_string(),
        ];
        // By hand: ratios against the unpruned export 2, 2, 2.5, 1.5 → median 2 (removed
        // 50%), quartiles 1.875 and 2.125 (linear interpolation); against torchvision
        // 2.2, 2.2, 2.75, 1.65 → median 2.2.
        let answer = pytorch_answer(
            &[10.0, 10.0, 10.0, 9.0],
            &[11.0, 11.0, 11.0, 9.9],
            &[5.0, 5.0, 4.0, 6.0],
        );
        let t = pytorch_timings_of(&answer, &refs).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].reference, "unpruned export");
        assert_eq!(
            (t[0].speedup.median, t[0].speedup.q1, t[0].speedup.q3),
            (2.0, 1.875, 2.125)
        );
        assert!((t[0].removed - 0.5).abs() < 1e-12);
        assert!((t[1].speedup.median - 2.2).abs() < 1e-12);
        assert_eq!(t[1].torch, "2.11.0");
        // The export's times: IQR 4.75–5.25 of 5 (0.1): not noisy; widen them: noisy.
        assert!(!t[0].noisy);
        let wide = pytorch_answer(&[10.0; 4], &[10.0; 4], &[2.0, 5.0, 5.0, 9.0]);
        assert!(pytorch_timings_of(&wide, &refs).unwrap()[0].noisy);
        // Answers that do not fit: errors naming what is wrong.
        let e = pytorch_timings_of(&answer, &refs[..1])
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 models in its answer, expected 2"), "{e}");
        let short = pytorch_answer(&[10.0; 4], &[10.0; 3], &[5.0; 4]);
        let e = pytorch_timings_of(&short, &refs).unwrap_err().to_string();
        assert!(e.contains("different round counts"), "{e}");
    }

    #[test]
    fn the_plain_pytorch_timing_is_a_goal_and_a_column() {
        let mut r = row(Some(0.4));
        let refs = ["unpruned export".to_string()];
        // 44% removed in PyTorch (speed-up 1/0.56) where the CLI measured 50%: missed.
        let answer = json!({"torch": "2.11.0", "models": [
            {"round_ms": [10.0, 10.0, 10.0]}, {"round_ms": [5.6, 5.6, 5.6]}]});
        r.pytorch = pytorch_timings_of(&answer, &refs).unwrap();
        let goals = r.goals();
        assert_eq!(goals.len(), 3);
        assert!(
            goals[2]
                .0
                .contains("in plain PyTorch within 5% (44.0% vs 50.0%)"),
            "{}",
            goals[2].0
        );
        assert_eq!(goals[2].1, Verdict::Missed);
        let md = table(std::slice::from_ref(&r), 0.5);
        assert!(
            md.contains("| 44.0% (1.79 [1.79–1.79]×) vs unpruned export |"),
            "{md}"
        );
        // Noisy in PyTorch: not evaluated; not timed: the note in the column, no goal.
        r.pytorch[0].noisy = true;
        assert!(matches!(&r.goals()[2].1, Verdict::NotEvaluated(w) if w == "flagged noisy"));
        r.pytorch.clear();
        r.pytorch_note = Some("python3 cannot import torch".into());
        assert_eq!(r.goals().len(), 2);
        let md = table(std::slice::from_ref(&r), 0.5);
        assert!(
            md.contains("| not timed: python3 cannot import torch |"),
            "{md}"
        );
        // Every row has as many cells as the header.
        let cells = |line: &str| line.matches(" |").count();
        let lines: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        assert!(lines.iter().all(|l| cells(l) == cells(lines[0])), "{md}");
    }

    #[test]
    fn goals_are_judged_only_on_a_quiet_machine_and_a_quiet_measurement() {
        let goals = row(Some(0.4)).goals();
        assert_eq!(goals.len(), 2);
        // 50.0% removed at a 50% target: met; gain 0.8 < 0.9: missed.
        assert_eq!(goals[0].1, Verdict::Met);
        assert!(goals[0].0.contains("50.0% vs 50.0%"), "{}", goals[0].0);
        assert_eq!(goals[1].1, Verdict::Missed);
        assert!(goals[1].0.contains("0.80"), "{}", goals[1].0);
        // 47.4% is outside 50% ± 2.5 points.
        let mut r = row(Some(0.4));
        r.latency_run.as_mut().unwrap().removed = 0.474;
        assert_eq!(r.goals()[0].1, Verdict::Missed);
        r.latency_run.as_mut().unwrap().removed = 0.476;
        assert_eq!(r.goals()[0].1, Verdict::Met);
        // Loaded, noisy, or load unknown: not evaluated.
        let r = row(Some(1.6));
        assert!(
            r.goals()
                .iter()
                .all(|(_, v)| matches!(v, Verdict::NotEvaluated(w) if w.contains("load 1.60")))
        );
        let mut r = row(Some(0.2));
        r.load_after = Some(2.0);
        assert!(matches!(&r.goals()[0].1, Verdict::NotEvaluated(_)));
        let mut r = row(Some(0.2));
        r.latency_run.as_mut().unwrap().table_noisy = true;
        assert_eq!(
            r.goals()[1].1,
            Verdict::NotEvaluated("flagged noisy".into())
        );
        assert!(matches!(&row(None).goals()[0].1, Verdict::NotEvaluated(_)));
        let mut r = row(Some(0.2));
        r.latency_run = None;
        assert!(r.goals().is_empty());
    }

    #[test]
    fn the_table_renders_fixed_rows() {
        let mut skipped = row(Some(3.0));
        skipped.runtime = "onnxruntime-cpu".into();
        skipped.latency_run = None;
        skipped.mac_run = None;
        skipped.skipped = Some("python3 cannot import onnxruntime | x".into());
        let mut ort = row(Some(0.5));
        ort.runtime = "onnxruntime-cpu".into();
        ort.mac_run = Some(
            mac_run_of(
                &mac_report("onnxruntime-cpu", 1, true),
                0.6,
                Runtime::OnnxruntimeCpu,
                1,
                1,
            )
            .unwrap(),
        );
        let md = table(&[row(Some(0.5)), skipped, ort], 0.5);
        assert!(
            md.starts_with("Latency target 50% (`prune --target-latency 0.5`)"),
            "{md}"
        );
        assert!(
            md.contains(
                "| resnet20 | 3x32x32 | libtorch-cpu | 1 | 50.0% (2.00 [1.90–2.10]×) | \
                 2.000 [1.900–2.100] → 1.000 [0.950–1.050] | 2 (met) | 60.0% (2.50×) | 0.80 | \
                 75.0% (4.00×) | 20.0% (1.25 [1.20–1.30]×) | 0.31 | – | 0.50 → 0.50 | \
                 latency within 5% (50.0% vs 50.0%): met; gain ≥ 0.9 MAC cut (0.80): **missed** |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| onnxruntime-cpu | 1 | skipped: python3 cannot import onnxruntime \\| x |"
            ),
            "{md}"
        );
        // The ONNX Runtime row's MAC run is timed there too (flagged noisy in its report).
        assert!(
            md.contains("| onnxruntime-cpu | 1 | 50.0% (2.00 [1.90–2.10]×) |")
                && md.contains(
                    "| 75.0% (4.00×) | 20.0% (1.25 [1.20–1.30]×) (noisy) | 0.31 | – | 0.50 → 0.50 |"
                ),
            "{md}"
        );
        assert!(!md.contains("not timed"), "{md}");
        assert_eq!(
            md.lines().filter(|l| l.starts_with("| resnet20")).count(),
            3
        );
    }

    #[test]
    fn prune_arguments_name_the_goal_and_the_runtime() {
        let spec = QUICK[0];
        let model = model_flags(&spec, Path::new("/m/w.safetensors"));
        assert_eq!(
            model,
            [
                "--model",
                "resnet20",
                "--input",
                "3x32x32",
                "--classes",
                "10",
                "--weights",
                "/m/w.safetensors"
            ]
        );
        let goal = Goal {
            target: Target::Latency(0.5),
            runtime: Runtime::OnnxruntimeCpu,
            batch: 32,
            python: Some(Path::new("/py")),
        };
        let a = prune_args(&model, Path::new("/d"), 4, 1, &goal, Path::new("/o"));
        let text = a.join(" ");
        assert!(text.starts_with("prune --model resnet20"), "{text}");
        assert!(
            text.contains("--data folder --data-path /d --per-class 4 --threads 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "--target-latency 0.5 --latency-on onnxruntime-cpu --latency-batch 32 \
                 --latency-threads 1 --latency-python /py --out /o -q"
            ),
            "{text}"
        );
        // The MAC run is timed the same way.
        let macs = Goal {
            target: Target::Macs(0.625),
            ..goal.clone()
        };
        let text = prune_args(&model, Path::new("/d"), 4, 1, &macs, Path::new("/o")).join(" ");
        assert!(
            text.contains(
                "--target-macs 0.625 --latency-on onnxruntime-cpu --latency-batch 32 \
                 --latency-threads 1 --latency-python /py --out /o -q"
            ),
            "{text}"
        );
        assert!(!text.contains("--target-latency"), "{text}");
        let goal = Goal {
            target: Target::Macs(0.625),
            runtime: Runtime::LibtorchCpu,
            batch: 1,
            python: Some(Path::new("/py")),
        };
        let text = prune_args(&model, Path::new("/d"), 4, 2, &goal, Path::new("/o")).join(" ");
        assert!(!text.contains("--latency-python"), "{text}");
        assert!(
            text.contains(
                "--target-macs 0.625 --latency-on libtorch-cpu --latency-batch 1 \
                 --latency-threads 2 --out /o"
            ),
            "{text}"
        );
        let onnx = model_flags(&FULL[0], Path::new("/m/r.onnx"));
        assert_eq!(&onnx[..2], ["--graph", "/m/r.onnx"]);
    }

    #[test]
    fn the_sets_hold_the_issues_models() {
        let names: Vec<&str> = FULL.iter().map(|s| s.name).collect();
        assert_eq!(names, ["resnet50", "resnet56", "vgg16_bn", "mobilenet_v2"]);
        assert_eq!(FULL[0].batches, [1, 32]);
        assert_eq!(FULL[0].input(), [3, 224, 224]);
        assert_eq!(FULL[1].input(), [3, 32, 32]);
        assert!(
            QUICK
                .iter()
                .all(|s| s.batches == [1] && s.input() == [3, 32, 32])
        );
    }

    #[test]
    fn the_synthetic_folder_is_written_once_with_every_class() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        synthetic_folder(&data, 3, 2).unwrap();
        for split in ["train", "test"] {
            let classes = std::fs::read_dir(data.join(split)).unwrap().count();
            assert_eq!(classes, 3, "{split}");
        }
        let train = std::fs::read_dir(data.join("train/class_000"))
            .unwrap()
            .count();
        assert_eq!(train, 4);
        let img = image::open(data.join("test/class_002/1.png")).unwrap();
        assert_eq!((img.width(), img.height()), (32, 32));
        // A second call keeps the folder; other sizes rewrite it.
        let marker = data.join("train/class_000/extra");
        std::fs::write(&marker, b"").unwrap();
        synthetic_folder(&data, 3, 2).unwrap();
        assert!(marker.exists());
        synthetic_folder(&data, 2, 2).unwrap();
        assert!(!marker.exists());
        assert_eq!(std::fs::read_dir(data.join("train")).unwrap().count(), 2);
    }
}
