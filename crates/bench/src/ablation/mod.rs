//! `fair-bench ablation`: which of FAIR-Pruner's settings make the default, measured against
//! baselines at equal MACs over several seeds.
//!
//! Per network and seed: one model trained on the training split minus a stratified validation
//! split (never used for training, calibration or fine-tuning), one calibration draw from the
//! training part, scores computed once per scoring setting, then every method chooses a plan
//! at each MACs target. All plans go through the same surgery; every pruned model is measured
//! one-shot, after BatchNorm recalibration, and after fine-tuning from the recalibrated model
//! for each budget (validation and test top-1), with `--distill W` also fine-tuned with the
//! unpruned model as teacher. With `--reconstruct` every pruned model's readers are refitted
//! ([`fair_train::reconstruct_readers`], the `fair-pruner` preset's settings) before the
//! recalibration, for every method alike; those rows are labelled `<method> + recon` in the
//! tables and charts, next to the rows without it. A seed's rows add up over runs with the
//! same settings, so a run may measure a subset of methods or targets, with or without
//! `--reconstruct`. The per-seed figures are averaged into `target/bench/ablation/summary.json`,
//! a table in `docs/results.md` (between the `bench ablation` markers) and one chart per
//! network (`docs/ablation-<net>.svg`).
//!
//! The methods: `fair-paper` (the authors' package settings) and one variant per suspect, each
//! changing one thing ([`Suspect`](experiment::Suspect)); the default (`fair-default`,
//! [`DEFAULT`](experiment::DEFAULT)); the default before its last two changes (`fair-previous`,
//! [`PREVIOUS`](experiment::PREVIOUS)) and changes of it (`fair-package-rule`: the package
//! group rule, [`PACKAGE_RULE`](experiment::PACKAGE_RULE); `fair-mac-half`: MAC weight γ = 0.5;
//! `fair-uniform-u`: uniform counts, U ranking; `fair-tod-l1` and `fair-tod-group-l1`: ToD
//! counts, L1 or group-L1 ranking; `fair-exact`: counts that land on the target;
//! `fair-exact-after-bn`: that with U read after the BatchNorm); the default before its MAC
//! costs were measured per fraction of a layer (`fair-mac-unit`,
//! [`UNIT_COST`](experiment::UNIT_COST)) and its shared-cost change (`fair-mac-shared`); the
//! baselines `uniform-l1` and `uniform-group-l1` (ours) and Torch-Pruning's uniform L1, global
//! Taylor, global group-norm and isomorphic pruning (`xtask/bench/ablation_reference.py`).
//!
//! The networks: the compact VGG and ResNet-20 of `bench compare` and, with `--nets vit`, a
//! small vision transformer (`configs/fashion-vit.toml`), where Torch-Pruning removes whole
//! attention heads and MLP neurons (the units fair-pruner prunes there) and every plan it
//! writes is checked against its own pruned model (parameters and MACs).
//!
//! With `--latency-target F` the methods are compared at equal *measured* latency instead
//! of equal MACs (issue 27): `fair-latency`, the default preset pruned to remove F of the
//! latency on `--latency-on`, sets the latency; every other method is pruned at the MACs
//! target whose measured latency matches it. Those rows go to files of their own per
//! runtime, batch and threads (`result-latency-<runtime>-b<batch>-t<threads>.json`,
//! `summary-latency-<…>.json`, `ablation-latency-<…>-<net>.svg`) and to the runtime's block
//! of `docs/results.md` (`latency`).
//!
//! The module, one job per file:
//!
//! - `experiment`: the definitions: the suspects, the methods, the FAIR variant each makes,
//!   a run's [`Options`];
//! - `runner`: one network and seed trained, carved, calibrated, scored, planned and
//!   measured (`run_seed`), plans through `fair_pipeline::stages`;
//! - `latency`: the plans at equal latency (`--latency-target`);
//! - `results`: the typed `result.json` of a seed (`SeedResult`, its rows) and
//!   `summary.json` (`Summary`), and `merge_results`, which adds a seed's runs up;
//! - `stats`: mean ± sample std (`mean_std`) and `aggregate` (a network's seeds into its
//!   `Summary`);
//! - `tables`: the Markdown table and the SVG chart of a `Summary`.
//!
//! This file runs them ([`run`]) and rebuilds the table and charts from stored results.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use fair_pipeline::LatencyRuntime;

use crate::compare::{NETS, create_dir};
use crate::tables::Markers;
use crate::{read_as, reference_python, workspace_root, write_json};

mod experiment;
mod latency;
mod results;
mod runner;
mod stats;
mod tables;

pub use experiment::Options;

use results::{SeedResult, Summaries, merge_results};
use stats::aggregate;
use tables::{chart_svg, markdown};

/// The markers around the generated block of `docs/results.md`.
pub const BEGIN: &str = "<!-- bench ablation: begin -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- bench ablation: end -->";
/// The markers of `cargo xtask bench ablation`'s block (the CNNs).
pub const ABLATION: Markers<'static> = Markers {
    begin: BEGIN,
    end: END,
    tool: "cargo xtask bench ablation",
};

/// The markers of the vision transformer's block (`--nets vit`), in its own section of
/// `docs/results.md`.
pub const ABLATION_VIT: Markers<'static> = Markers {
    begin: "<!-- bench ablation vit: begin -->",
    end: "<!-- bench ablation vit: end -->",
    tool: "cargo xtask bench ablation --nets vit",
};

/// The markers of the equal-latency block timed on libtorch CPU (`--latency-target`), in
/// the latency section of `docs/results.md`.
pub const ABLATION_LATENCY_LIBTORCH: Markers<'static> = Markers {
    begin: "<!-- bench ablation latency libtorch-cpu: begin -->",
    end: "<!-- bench ablation latency libtorch-cpu: end -->",
    tool: "cargo xtask bench ablation --latency-target F --latency-on libtorch-cpu",
};

/// The markers of the equal-latency block timed on ONNX Runtime CPU.
pub const ABLATION_LATENCY_ORT: Markers<'static> = Markers {
    begin: "<!-- bench ablation latency onnxruntime-cpu: begin -->",
    end: "<!-- bench ablation latency onnxruntime-cpu: end -->",
    tool: "cargo xtask bench ablation --latency-target F --latency-on onnxruntime-cpu",
};

/// Which results a run reads and writes: at MACs targets, or at equal latency
/// (`--latency-target`) on one runtime, batch and thread count, each in its own files,
/// table and charts (a latency run on another runtime never replaces these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arm {
    Macs,
    Latency {
        runtime: LatencyRuntime,
        batch: usize,
        threads: usize,
    },
}

impl Arm {
    fn of(o: &Options) -> Arm {
        match o.latency_target {
            Some(_) => Arm::Latency {
                runtime: o.latency_on,
                batch: o.latency_batch,
                threads: o.latency_threads,
            },
            None => Arm::Macs,
        }
    }

    /// What the arm's file names carry: nothing at MACs targets,
    /// `-latency-<runtime>-b<batch>-t<threads>` at equal latency.
    fn tag(self) -> String {
        match self {
            Arm::Macs => String::new(),
            Arm::Latency {
                runtime,
                batch,
                threads,
            } => format!("-{}", experiment::latency_tag(runtime, batch, threads)),
        }
    }

    /// A seed's result file: `result.json`, `result-latency-libtorch-cpu-b1-t1.json`.
    fn result_file(self) -> String {
        format!("result{}.json", self.tag())
    }

    /// The summary's file name.
    fn summary_file(self) -> String {
        format!("summary{}.json", self.tag())
    }

    /// A network's chart file name.
    fn chart_file(self, net: &str) -> String {
        format!("ablation{}-{net}.svg", self.tag())
    }

    /// The block of `docs/results.md` that holds `net`'s table: at equal latency, one per
    /// runtime (its table states the batch and threads; a run with others replaces it).
    fn block(self, net: &str) -> Markers<'static> {
        match self {
            Arm::Macs => block_of(net),
            Arm::Latency {
                runtime: LatencyRuntime::OnnxruntimeCpu,
                ..
            } => ABLATION_LATENCY_ORT,
            Arm::Latency { .. } => ABLATION_LATENCY_LIBTORCH,
        }
    }
}

/// Each network's Markdown, with its key, in table order.
type NetBlocks = Vec<(&'static str, String)>;

/// The block of `docs/results.md` that holds `net`'s table.
fn block_of(net: &str) -> Markers<'static> {
    if net == "vit" { ABLATION_VIT } else { ABLATION }
}

/// The stored result of `net` and `seed` under `dir`, `None` when there is none. A file
/// that is there but does not read as a result is an error (naming it), never skipped or
/// overwritten.
fn stored_result(dir: &Path, net: &str, seed: u64, arm: Arm) -> Result<Option<SeedResult>> {
    let path = dir
        .join(net)
        .join(format!("seed-{seed}"))
        .join(arm.result_file());
    if !path.exists() {
        return Ok(None);
    }
    read_as(&path).map(Some).with_context(|| {
        format!(
            "bench ablation: {} holds no readable result (move it aside to measure afresh)",
            path.display()
        )
    })
}

/// Reads the stored per-seed results of `arm` of every network for `seeds`, aggregates
/// them, writes the arm's summary (`dir/summary.json` at MACs targets) and charts
/// (`dir/ablation-<net>.svg`), and returns the Markdown of every network that has results
/// (with its key) and the chart files written.
fn rebuild(dir: &Path, seeds: &[u64], arm: Arm) -> Result<(PathBuf, NetBlocks, Vec<PathBuf>)> {
    let mut nets = Vec::new();
    let mut blocks = Vec::new();
    let mut charts = Vec::new();
    for net in &NETS {
        let mut md = String::new();
        let mut results = Vec::new();
        for &seed in seeds {
            results.extend(stored_result(dir, net.key, seed, arm)?);
        }
        if results.is_empty() {
            continue;
        }
        let agg = aggregate(&results).with_context(|| format!("bench ablation: {}", net.key))?;
        md += &markdown(&agg)?;
        match chart_svg(&agg) {
            Ok(svg) => {
                let name = arm.chart_file(net.key);
                let path = dir.join(&name);
                fair_fs::write_atomic(&path, svg.as_bytes())?;
                writeln!(
                    md,
                    "\n![{}: test top-1 against MACs removed]({name})",
                    net.key
                )?;
                charts.push(path);
            }
            Err(e) => eprintln!("  no chart for {}: {e:#}", net.key),
        }
        md += "\n";
        nets.push(agg);
        blocks.push((net.key, md));
    }
    create_dir(dir)?;
    let out = dir.join(arm.summary_file());
    write_json(&out, &Summaries { nets })?;
    Ok((out, blocks, charts))
}

/// The Markdown of `blocks` grouped by the `docs/results.md` block each net goes in, in
/// order of first appearance.
fn by_block(blocks: &[(&str, String)], arm: Arm) -> Vec<(Markers<'static>, String)> {
    let mut out: Vec<(Markers<'static>, String)> = Vec::new();
    for (net, md) in blocks {
        let markers = arm.block(net);
        match out.iter_mut().find(|(m, _)| m.begin == markers.begin) {
            Some((_, all)) => all.push_str(md),
            None => out.push((markers, md.clone())),
        }
    }
    out
}

/// Runs the ablation (or, with `--tables-only`, only rebuilds its table and charts).
pub fn run(o: &Options) -> Result<()> {
    let start = Instant::now();
    let root = workspace_root();
    let dir = root.join("target/bench/ablation");
    let arm = Arm::of(o);
    let methods = o.methods()?;
    if !o.tables_only {
        let python = if methods.iter().any(|m| m.torch_pruning().is_some())
            || matches!(
                arm,
                Arm::Latency {
                    runtime: LatencyRuntime::OnnxruntimeCpu,
                    ..
                }
            ) {
            Some(reference_python(
                o.python.as_deref(),
                "the ablation's Torch-Pruning baselines (and its timing on ONNX Runtime)",
            )?)
        } else {
            None
        };
        if o.latency_target.is_some() {
            // Checked before any seed is trained and scored.
            latency::settings(o, python.as_deref())
                .timer()
                .check_available()
                .with_context(|| format!("bench ablation: timing on {}", o.latency_on))?;
        }
        tch::set_num_threads(i32::try_from(o.threads).context("--threads is too large")?);
        for net in NETS.iter().filter(|n| o.nets.iter().any(|k| k == n.key)) {
            for &seed in &o.seeds {
                eprintln!("bench ablation: {}, seed {seed}", net.title);
                // Read before measuring: a stored result that does not read stops the run
                // before hours are spent, rather than after.
                let previous = stored_result(&dir, net.key, seed, arm)?;
                let result = runner::run_seed(net, seed, &root, python.as_deref(), o)
                    .with_context(|| format!("bench ablation: {} seed {seed}", net.title))?;
                let path = dir
                    .join(net.key)
                    .join(format!("seed-{seed}"))
                    .join(arm.result_file());
                let result = match previous {
                    Some(previous) => merge_results(&previous, result),
                    None => result,
                };
                write_json(&path, &result)?;
            }
        }
    }
    let (summary, blocks, charts) = rebuild(&dir, &o.seeds, arm)?;
    let md: String = blocks.iter().map(|(_, md)| md.as_str()).collect();
    println!("{md}");
    println!(
        "summary: {} (this run: {:.1} min)",
        summary.display(),
        start.elapsed().as_secs_f64() / 60.0
    );
    if !o.no_docs {
        let docs = root.join("docs/results.md");
        // Each network's table goes in its block; a block without results is left as is.
        for (markers, md) in by_block(&blocks, arm) {
            crate::tables::write_block(&docs, &md, markers)?;
        }
        for chart in &charts {
            let name = chart.file_name().context("a chart has a file name")?;
            std::fs::copy(chart, root.join("docs").join(name))
                .with_context(|| format!("cannot copy {} into docs/", chart.display()))?;
        }
        println!("table and charts written to {}", docs.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use results::{Outcome, Row, reconstructed};
    use serde_json::{Value, json};

    /// A seed's result as stored (JSON), read into the typed result.
    fn typed(v: Value) -> SeedResult {
        serde_json::from_value(v).expect("a stored result")
    }

    /// Typed results of stored ones.
    fn all(vs: &[Value]) -> Vec<SeedResult> {
        vs.iter().cloned().map(typed).collect()
    }

    fn fake_result(seed: u64, shift: f64) -> Value {
        let row = |method: &str, v: f64| {
            json!({"target": 0.5, "method": method, "params": 1000, "macs": 2000000, "macs_removed": 0.5 + shift / 10.0,
                   "one_shot": {"val": v - 0.3, "test": v - 0.3}, "recalibrated": {"val": v - 0.1, "test": v - 0.1},
                   "finetuned": {"1": {"val": v, "test": v - 0.01}}})
        };
        let mut tp = row("tp-l1", 0.80 + shift);
        tp["reference"] = json!({"params": 1000});
        json!({
            "net": "vgg", "title": "toy VGG", "seed": seed, "threads": 2, "minutes": 1.0,
            "settings": {"train_epochs": 1, "val_per_class": 50, "finetune_fraction": 0.05, "per_class": 8,
                         "recalibration": {"batches": 32, "batch_size": 128, "seed": seed}},
            "unpruned": {"params": 110000, "macs": 5600000, "top1": {"val": 0.9, "test": 0.89}},
            "results": [row("fair-paper", 0.85 + shift), row("uniform-l1", 0.86 - shift), tp,
                        {"target": 0.5, "method": "tp-taylor", "error": "boom"}],
        })
    }

    #[test]
    fn tables_show_mean_and_std_over_seeds_and_the_best_on_validation() {
        let agg = aggregate(&all(&[fake_result(0, 0.0), fake_result(1, 0.02)])).unwrap();
        let md = markdown(&agg).unwrap();
        assert!(md.starts_with("#### toy VGG\n\nn = 2 seeds (0, 1)"), "{md}");
        assert!(
            md.contains("| MACs target | method | MACs removed | one-shot | + BN recal | FT 1 ep (val) | FT 1 ep (test) |"),
            "{md}"
        );
        // fair-paper: val 85 and 87 → 86.00 ± 1.41; MACs removed 50 and 50.2.
        assert!(
            md.contains("| 50% | fair-paper | 50.10 ± 0.14 | 56.00 ± 1.41 | 76.00 ± 1.41 | 86.00 ± 1.41 | 85.00 ± 1.41 |"),
            "{md}"
        );
        // uniform-l1: 86 and 84 → 85; the best on validation is fair-paper (86).
        assert!(md.contains("| 50% | uniform-l1 |"), "{md}");
        assert!(md.contains("50% / 1 ep → fair-paper (86.00)"), "{md}");
        assert!(
            md.contains("Failed (no figure): tp-taylor at 50% (boom)"),
            "{md}"
        );
        assert!(md.contains("in 2 of 2 cases"), "{md}");
        let (fp, ul) = (
            md.find("| fair-paper |").unwrap(),
            md.find("| uniform-l1 |").unwrap(),
        );
        assert!(fp < ul, "table order");
        // One seed: no std, and a chart.
        let one = aggregate(&all(&[fake_result(3, 0.0)])).unwrap();
        let md = markdown(&one).unwrap();
        assert!(
            md.contains("| 50% | fair-paper | 50.00 | 55.00 | 75.00 | 85.00 | 84.00 |"),
            "{md}"
        );
        let svg = chart_svg(&one).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("fair-paper"),
            "chart"
        );
        // The block goes between the ablation markers, which docs/results.md holds.
        let docs = std::fs::read_to_string(workspace_root().join("docs/results.md")).unwrap();
        let new = crate::tables::splice(&docs, &md, ABLATION).unwrap();
        assert!(new.contains(&format!(
            "{BEGIN}\n<!-- Written by `cargo xtask bench ablation`"
        )));
        assert!(new.contains(&format!("{md}{END}")) && new.contains(crate::tables::BEGIN));
        // Settings that differ between seeds are refused.
        let mut other = fake_result(1, 0.0);
        other["settings"]["train_epochs"] = json!(3);
        assert!(aggregate(&all(&[fake_result(0, 0.0), other])).is_err());
    }

    /// A seed's equal-latency result: fair-latency removing `removed` of the latency, tp-norm
    /// 0.49, its final measurement `noisy` and its search `met` or not.
    fn latency_result(seed: u64, removed: f64, noisy: bool, met: bool) -> Value {
        let spread = |m: f64| json!({"median": m, "q1": m - 0.01, "q3": m + 0.01});
        let latency = |macs_target: Value, r: f64, noisy: bool, met: bool| {
            json!({"macs_target": macs_target, "aim": 0.5, "searched": spread(r), "rounds": 3,
                   "met": met, "removed": spread(r), "ms": [2.0, 2.0 * (1.0 - r)], "noisy": noisy})
        };
        let mut r = fake_result(seed, 0.0);
        r["settings"]["latency"] =
            json!({"runtime": "libtorch-cpu", "batch": 1, "threads": 1, "tolerance": 0.03});
        let mut fair = r["results"][0].clone();
        fair["method"] = json!("fair-latency");
        fair["latency"] = latency(Value::Null, removed, false, true);
        fair["latency"]["table_noisy"] = json!(noisy);
        let mut tp = r["results"][2].clone();
        tp["method"] = json!("tp-norm");
        tp["latency"] = latency(json!(0.74), 0.49, noisy, met);
        r["results"] = json!([fair, tp]);
        r
    }

    #[test]
    fn an_equal_latency_run_has_its_own_files_table_and_block() {
        let arm = |runtime| Arm::Latency {
            runtime,
            batch: 1,
            threads: 1,
        };
        let libtorch = arm(LatencyRuntime::LibtorchCpu);
        let tmp = tempfile::tempdir().unwrap();
        for (seed, removed, noisy, met) in [(0, 0.50, false, false), (1, 0.52, true, true)] {
            let path = tmp.path().join(format!("vgg/seed-{seed}"));
            create_dir(&path).unwrap();
            write_json(
                &path.join("result-latency-libtorch-cpu-b1-t1.json"),
                &latency_result(seed, removed, noisy, met),
            )
            .unwrap();
        }
        // The MACs arm reads `result.json`, and ONNX Runtime's arm its own file; neither is
        // there.
        for other in [Arm::Macs, arm(LatencyRuntime::OnnxruntimeCpu)] {
            let (_, blocks, _) = rebuild(tmp.path(), &[0, 1], other).unwrap();
            assert!(blocks.is_empty(), "{other:?}");
        }
        let (summary, blocks, charts) = rebuild(tmp.path(), &[0, 1], libtorch).unwrap();
        assert_eq!(
            summary,
            tmp.path().join("summary-latency-libtorch-cpu-b1-t1.json")
        );
        assert_eq!(
            charts,
            [tmp.path()
                .join("ablation-latency-libtorch-cpu-b1-t1-vgg.svg")]
        );
        let md = &blocks[0].1;
        assert!(
            md.contains("| latency target | method | MACs removed | latency removed | one-shot | + BN recal |"),
            "{md}"
        );
        assert!(md.contains("Equal latency: `fair-latency` prunes to the latency target on libtorch-cpu (batch 1, 1 thread(s))"), "{md}");
        // fair-latency: 50 and 52 % of the latency → 51.00 ± 1.41; MACs 50 % on both seeds.
        assert!(
            md.contains("| 50% | fair-latency | 50.00 ± 0.00 | 51.00 ± 1.41 | 55.00 ± 0.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| 50% | tp-norm | 50.00 ± 0.00 | 49.00 ± 0.00 |"),
            "{md}"
        );
        assert!(
            md.find("| fair-latency |").unwrap() < md.find("| tp-norm |").unwrap(),
            "table order"
        );
        assert!(
            md.contains("Final latency measurement flagged noisy: tp-norm (1 of 2)."),
            "{md}"
        );
        assert!(
            md.contains("Search ended outside its tolerance: tp-norm (1 of 2)."),
            "{md}"
        );
        assert!(
            md.contains("(latency target / fine-tuning budget → method)"),
            "{md}"
        );
        assert!(
            md.contains("Latency table flagged noisy: fair-latency (1 of 2)."),
            "{md}"
        );
        // Its block is the runtime's in the latency section; docs/results.md holds both.
        let grouped = by_block(&blocks, libtorch);
        assert_eq!(grouped[0].0.begin, ABLATION_LATENCY_LIBTORCH.begin);
        let ort = by_block(&blocks, arm(LatencyRuntime::OnnxruntimeCpu));
        assert_eq!(ort[0].0.begin, ABLATION_LATENCY_ORT.begin);
        let docs = std::fs::read_to_string(workspace_root().join("docs/results.md")).unwrap();
        for markers in [ABLATION_LATENCY_LIBTORCH, ABLATION_LATENCY_ORT] {
            let new = crate::tables::splice(&docs, md, markers).unwrap();
            assert!(new.contains(&format!("{md}{}", markers.end)));
        }
        // A row's latency figures read back as written.
        let back: SeedResult = read_as(
            &tmp.path()
                .join("vgg/seed-1/result-latency-libtorch-cpu-b1-t1.json"),
        )
        .unwrap();
        let l = back.results[1]
            .measured()
            .unwrap()
            .latency
            .as_ref()
            .unwrap();
        assert_eq!((l.macs_target, l.noisy, l.met), (Some(0.74), true, true));
        assert_eq!(
            back.settings.latency.as_ref().unwrap().runtime,
            "libtorch-cpu"
        );
        // A later run at the same target replaces every row of it (they match its own
        // fair-latency), with the same reconstruction only; rows of other targets stay.
        let mut later = latency_result(1, 0.47, false, true);
        later["results"] = json!([later["results"][0].clone()]);
        let mut earlier = back.clone();
        earlier.results[1].target = 0.4;
        let merged = merge_results(&earlier, typed(later.clone()));
        let rows: Vec<(&str, f64)> = merged
            .results
            .iter()
            .map(|r| (r.method.as_str(), r.target))
            .collect();
        assert_eq!(rows, [("fair-latency", 0.5), ("tp-norm", 0.4)]);
        let merged = merge_results(&back, typed(later.clone()));
        assert_eq!(
            merged.results.len(),
            1,
            "tp-norm at 50 % was matched to another run"
        );
        assert_eq!(
            merged.minutes, 1.0,
            "the replaced run's minutes do not count"
        );
        later["results"][0]["reconstructed"] = json!(true);
        assert_eq!(merge_results(&back, typed(later)).results.len(), 3);
        // Rows timed on another runtime are another arm's: not added up with these.
        let mut other = latency_result(1, 0.52, false, true);
        other["settings"]["latency"]["runtime"] = json!("onnxruntime-cpu");
        other["results"] = json!([]);
        assert!(merge_results(&back, typed(other)).results.is_empty());
    }

    #[test]
    fn the_vit_table_goes_in_its_own_block_of_the_results() {
        let blocks = [
            ("vgg", "vgg table\n".to_owned()),
            ("vit", "vit table\n".to_owned()),
            ("resnet", "resnet table\n".to_owned()),
        ];
        let grouped = by_block(&blocks, Arm::Macs);
        assert_eq!(grouped.len(), 2);
        assert_eq!(grouped[0].0.begin, BEGIN);
        assert_eq!(grouped[0].1, "vgg table\nresnet table\n");
        assert_eq!(grouped[1].0.begin, ABLATION_VIT.begin);
        assert_eq!(grouped[1].1, "vit table\n");
        // docs/results.md holds both blocks, so each splices.
        let docs = std::fs::read_to_string(workspace_root().join("docs/results.md")).unwrap();
        for (markers, md) in grouped {
            let new = crate::tables::splice(&docs, &md, markers).unwrap();
            assert!(
                new.contains(&format!("{md}{}", markers.end)),
                "{}",
                markers.begin
            );
        }
    }

    #[test]
    fn a_run_over_some_methods_keeps_the_other_rows_of_the_same_settings() {
        let previous = fake_result(0, 0.0);
        let mut new = fake_result(0, 0.0);
        new["results"] = json!([{"target": 0.5, "method": "fair-paper", "error": "marker 1"},
                                {"target": 0.7, "method": "tp-l1", "error": "marker 2"}]);
        let new = typed(new);
        let merged = merge_results(&typed(previous.clone()), new.clone());
        let rows = &merged.results;
        // fair-paper at 50% is the new row; uniform-l1, tp-l1 and tp-taylor at 50% are kept.
        assert_eq!(rows.len(), 5);
        let methods: Vec<(&str, f64)> =
            rows.iter().map(|r| (r.method.as_str(), r.target)).collect();
        assert_eq!(
            methods,
            [
                ("fair-paper", 0.5),
                ("tp-l1", 0.7),
                ("uniform-l1", 0.5),
                ("tp-l1", 0.5),
                ("tp-taylor", 0.5)
            ]
        );
        assert_eq!(
            rows[0].outcome,
            Outcome::Failed {
                error: "marker 1".into()
            }
        );
        // The runs' times add up (1 min each).
        assert_eq!(merged.minutes, 2.0);
        // Other settings, another trained model or another seed: nothing is kept.
        for (field, value) in [
            ("settings", json!({"train_epochs": 9})),
            ("unpruned", json!({"params": 1})),
            ("seed", json!(7)),
        ] {
            let mut other = previous.clone();
            match field {
                "seed" => other[field] = value,
                _ => {
                    other[field][value.as_object().unwrap().keys().next().unwrap()] =
                        value.as_object().unwrap().values().next().unwrap().clone()
                }
            }
            assert_eq!(merge_results(&typed(other), new.clone()), new, "{field}");
        }
    }

    #[test]
    fn reconstructed_rows_add_up_with_plain_ones_and_are_labelled() {
        // A seed measured without, then with `--reconstruct` (fair-paper at 50 % only).
        let with_recon = |seed: u64, v: f64| {
            let mut new = fake_result(seed, 0.0);
            let mut row = new["results"][0].clone();
            row["finetuned"] = json!({"1": {"val": v, "test": v - 0.01}});
            row["reconstruction"] = json!({"layers": [], "samples": 1024, "seconds": 1.5,
                "settings": {"batches": 8, "batch_size": 128, "ridge": 0.001, "seed": seed}});
            new["results"] = json!([row]);
            merge_results(&typed(fake_result(seed, 0.0)), typed(new))
        };
        let merged = with_recon(0, 0.95);
        let rows = &merged.results;
        // The reconstructed fair-paper row joins all four plain rows (fair-paper kept).
        assert_eq!(rows.len(), 5);
        assert_eq!(rows.iter().filter(|r| reconstructed(r)).count(), 1);
        assert_eq!(rows.iter().filter(|r| r.method == "fair-paper").count(), 2);
        // A failed row of a run with reconstruction does not replace the plain one.
        let mut failed = fake_result(0, 0.0);
        failed["results"] = json!([{"target": 0.5, "method": "uniform-l1", "error": "boom", "reconstructed": true}]);
        let rows = merge_results(&typed(fake_result(0, 0.0)), typed(failed)).results;
        assert_eq!(rows.len(), 5);
        assert!(
            rows.iter()
                .any(|r| r.method == "uniform-l1" && !reconstructed(r))
        );
        // Results written when the setting sat among the settings still merge.
        let mut old = fake_result(0, 0.0);
        old["settings"]["reconstruction"] = Value::Null;
        let mut new = fake_result(0, 0.0);
        new["results"] = json!([]);
        assert_eq!(merge_results(&typed(old), typed(new)).results.len(), 4);

        let agg = aggregate(&[merged, with_recon(1, 0.97)]).unwrap();
        let md = markdown(&agg).unwrap();
        // Plain fair-paper (85 on both seeds) and, right after it, the reconstructed one
        // (95 and 97 → 96.00 ± 1.41), which is the best on validation.
        let plain = md.find("| 50% | fair-paper | ").expect("plain row");
        let recon = md
            .find("| 50% | fair-paper + recon | 50.00 ± 0.00 | 55.00 ± 0.00 | 75.00 ± 0.00 | 96.00 ± 1.41 | 95.00 ± 1.41 |")
            .unwrap_or_else(|| panic!("{md}"));
        assert!(
            plain < recon && recon < md.find("| 50% | uniform-l1 |").unwrap(),
            "{md}"
        );
        assert!(
            md.contains("50% / 1 ep → fair-paper + recon (96.00)"),
            "{md}"
        );
        assert!(
            md.contains("(8 batches of 128 from the fine-tuning set"),
            "{md}"
        );
        assert!(chart_svg(&agg).unwrap().contains("fair-paper + recon"));
        // Reconstructed rows with other settings (not just another seed) are refused.
        let mut other = with_recon(1, 0.97);
        for row in other.results.iter_mut() {
            if reconstructed(row) {
                set_reconstruction_batches(row, 16);
            }
        }
        let err = aggregate(&[with_recon(0, 0.95), other]).unwrap_err();
        assert!(
            format!("{err:#}").contains("reconstructed with other settings"),
            "{err:#}"
        );
        // Without reconstructed rows, no such sentence.
        let plain_only = markdown(&aggregate(&all(&[fake_result(0, 0.0)])).unwrap()).unwrap();
        assert!(!plain_only.contains("+ recon"), "{plain_only}");
    }

    #[test]
    fn distilled_fine_tunes_get_their_own_columns() {
        let with_kd = |seed: u64, v: f64| {
            let mut r = fake_result(seed, 0.0);
            r["results"][0]["distilled"] = json!({"0.5": {"1": {"val": v, "test": v - 0.02}}});
            r
        };
        let agg = aggregate(&all(&[with_kd(0, 0.88), with_kd(1, 0.90)])).unwrap();
        assert_eq!(agg.distilled, ["1@0.5"]);
        let md = markdown(&agg).unwrap();
        assert!(
            md.contains("| FT 1 ep (val) | FT 1 ep (test) | FT 1 ep + KD 0.5 (val) | FT 1 ep + KD 0.5 (test) |"),
            "{md}"
        );
        // fair-paper: plain 85/85 → 85.00; distilled 88 and 90 → 89.00 ± 1.41 (test 87.00).
        assert!(
            md.contains("| 85.00 ± 0.00 | 84.00 ± 0.00 | 89.00 ± 1.41 | 87.00 ± 1.41 |"),
            "{md}"
        );
        // A method without a distilled run shows a dash there.
        assert!(
            md.contains("| 50% | uniform-l1 |") && md.contains("| — | — |"),
            "{md}"
        );
    }

    /// Results stored in every format the writer has had (`crates/bench/tests/fixtures/
    /// ablation/<net>/seed-<seed>/result.json`: rows with and without the `reconstructed`
    /// flag, the reconstruction among the settings, distilled budgets, failed rows,
    /// Torch-Pruning's records) and what the `serde_json::Value` code before the typed
    /// results made of them (`expected.md`, `expected-summary.json`,
    /// `expected-ablation-<net>.svg`).
    fn fixtures() -> PathBuf {
        workspace_root().join("crates/bench/tests/fixtures/ablation")
    }

    #[test]
    fn every_stored_result_loads_and_writes_the_same_fields_back() {
        let mut files = 0;
        for net in ["vgg", "resnet"] {
            for seed in 0..3 {
                let path = fixtures()
                    .join(net)
                    .join(format!("seed-{seed}"))
                    .join("result.json");
                if !path.exists() {
                    continue;
                }
                files += 1;
                let stored: Value = crate::read_json(&path).unwrap();
                let result: SeedResult = read_as(&path).unwrap();
                assert_eq!((result.net.as_str(), result.seed), (net, seed));
                // Written back: the same fields, but for `null`s left out (which read the
                // same) and the older files' `reconstruction: null` among the settings.
                let mut back = serde_json::to_value(&result).unwrap();
                let mut stored = stored;
                for v in [&mut back, &mut stored] {
                    drop_nulls(v);
                }
                assert_eq!(back, stored, "{}", path.display());
                assert_eq!(typed(back), result);
            }
        }
        assert_eq!(files, 4, "the fixtures");
    }

    /// `v` without the object fields that are `null`.
    fn drop_nulls(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.retain(|_, x| !x.is_null());
                map.values_mut().for_each(drop_nulls);
            }
            Value::Array(items) => items.iter_mut().for_each(drop_nulls),
            _ => {}
        }
    }

    #[test]
    fn stored_results_rebuild_the_table_charts_and_summary_the_value_code_made() {
        let tmp = tempfile::tempdir().unwrap();
        for net in ["vgg", "resnet"] {
            for seed in 0..3 {
                let rel = Path::new(net)
                    .join(format!("seed-{seed}"))
                    .join("result.json");
                if fixtures().join(&rel).exists() {
                    create_dir(tmp.path().join(&rel).parent().unwrap()).unwrap();
                    std::fs::copy(fixtures().join(&rel), tmp.path().join(&rel)).unwrap();
                }
            }
        }
        let (summary, blocks, charts) = rebuild(tmp.path(), &[0, 1, 2], Arm::Macs).unwrap();
        let md: String = blocks.iter().map(|(_, md)| md.as_str()).collect();
        let expected = |name: &str| std::fs::read_to_string(fixtures().join(name)).unwrap();
        assert_eq!(md, expected("expected.md"));
        // Both CNNs go in the one ablation block.
        let grouped = by_block(&blocks, Arm::Macs);
        assert_eq!(grouped.len(), 1);
        assert_eq!(grouped[0].0.begin, BEGIN);
        assert_eq!(charts.len(), 2);
        for chart in charts {
            let name = chart.file_name().unwrap().to_str().unwrap().to_owned();
            let svg = std::fs::read_to_string(&chart).unwrap();
            assert!(
                svg == expected(&format!("expected-{name}")),
                "{name} differs"
            );
        }
        // The summary holds the same JSON (the typed one reads back into `Summaries`).
        let ours: Value = crate::read_json(&summary).unwrap();
        let theirs: Value = serde_json::from_str(&expected("expected-summary.json")).unwrap();
        assert_eq!(ours, theirs);
        let _: Summaries = read_as(&fixtures().join("expected-summary.json")).unwrap();
        // A seed missing from the store is skipped; a file that does not read is an error.
        let (_, blocks, _) = rebuild(tmp.path(), &[0, 7], Arm::Macs).unwrap();
        let md: String = blocks.iter().map(|(_, md)| md.as_str()).collect();
        assert!(md.contains("n = 1 seeds (0)"), "{md}");
        std::fs::write(tmp.path().join("vgg/seed-1/result.json"), "{}").unwrap();
        let err = rebuild(tmp.path(), &[0, 1], Arm::Macs).unwrap_err();
        assert!(
            format!("{err:#}").contains("seed-1/result.json holds no readable result"),
            "{err:#}"
        );
    }

    #[test]
    fn the_committed_ablation_table_is_generated_text() {
        // No per-seed results behind docs/results.md's ablation table are committed (they
        // live under target/bench/ablation on the machine that measured them), so the
        // table cannot be regenerated here; its block holds the generated form.
        let docs = std::fs::read_to_string(workspace_root().join("docs/results.md")).unwrap();
        let block = docs
            .split(BEGIN)
            .nth(1)
            .and_then(|b| b.split(END).next())
            .unwrap();
        assert!(block.contains("| MACs target | method | MACs removed | one-shot | + BN recal |"));
        assert!(block.contains("Best mean **validation** top-1"));
    }

    fn set_reconstruction_batches(row: &mut Row, batches: usize) {
        let Outcome::Measured(m) = &mut row.outcome else {
            panic!("a measured row")
        };
        let r = m.figures.reconstruction.as_mut().expect("reconstructed");
        r.settings.as_mut().expect("its settings").batches = batches;
    }
}
