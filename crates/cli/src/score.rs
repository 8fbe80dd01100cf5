//! `fair-pruner score` and `fair-pruner ratios`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use fair_analysis::{Goal, GroupRule, Method, ScoreFile, SelectOptions, Selector};
use fair_pipeline::charts::{human, thousands};
use fair_pipeline::{CountOptions, DrawSettings, PruneSection};
use fair_runtime::Model;
use fair_scoring::{Calibration, Progress, Registry};

use crate::args::{ComputeArgs, DrawArgs, ModelArgs, ScoringArgs};
use crate::table::render;

/// Arguments of `fair-pruner score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Trained weights (safetensors with PyTorch state-dict names).
    #[arg(long, value_name = "FILE")]
    weights: PathBuf,
    /// Calibration data: a safetensors file with `inputs` [N, C, H, W] (float) and `labels`
    /// [N] (integer), e.g. written by `fair-pruner calib`.
    #[arg(long, value_name = "FILE")]
    calibration: Option<PathBuf>,
    /// Where to write the scores (JSON with provenance).
    #[arg(long, value_name = "FILE", default_value = "scores.json")]
    out: PathBuf,
    #[command(flatten)]
    scoring: ScoringArgs,
    #[command(flatten)]
    draw: DrawArgs,
    #[command(flatten)]
    compute: ComputeArgs,
    /// Print the score file's provenance and timings as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

/// Arguments of `fair-pruner ratios`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("how").required(true).args(["alpha", "target_macs", "target_params"])))]
pub struct RatiosArgs {
    /// Scores written by `fair-pruner score` or `prune`.
    #[arg(long, value_name = "FILE", default_value = "scores.json")]
    scores: PathBuf,
    /// Tolerance of Difference α in [0, 1]: larger removes more.
    #[arg(long, allow_negative_numbers = true)]
    alpha: Option<f64>,
    /// Find the smallest α that removes at least this fraction of MACs (e.g. 0.5).
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true)]
    target_macs: Option<f64>,
    /// Find the smallest α that removes at least this fraction of parameters.
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true)]
    target_params: Option<f64>,
    #[command(flatten)]
    select: SelectArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the resolved plan for `fair-pruner apply` (every coupled layer lists the
    /// same units, so apply reproduces exactly these widths).
    #[arg(long, value_name = "FILE")]
    write_plan: Option<PathBuf>,
}

/// How counts and units are chosen (ratios and prune).
#[derive(Debug, Args)]
pub struct SelectArgs {
    /// ToD's removal signal: units with low scores are proposed for removal [default: u].
    #[arg(long, value_name = "CRITERION")]
    pub remove_by: Option<String>,
    /// ToD's protection signal: units with high scores are protected [default: r].
    #[arg(long, value_name = "CRITERION")]
    pub protect_by: Option<String>,
    /// Which criterion orders the units each layer removes (lowest first), e.g. `l1` for
    /// "ToD counts + L1 ranking" [default: the --remove-by criterion].
    #[arg(long, value_name = "CRITERION")]
    pub rank_by: Option<String>,
    /// How layers coupled by residual adds settle on one set of units [default: package].
    #[arg(long, value_enum)]
    pub rule: Option<GroupRule>,
    /// Every layer keeps at least this many units [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub min_keep: Option<u64>,
    /// Round kept units up to a multiple of this, e.g. 8 for faster kernels [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub round_to: Option<u64>,
    /// Baseline instead of ToD counts: remove the same fraction of every layer, the smallest
    /// that reaches the target (with --rank-by l1: uniform L1 pruning).
    #[arg(long, conflicts_with = "alpha")]
    pub uniform: bool,
    /// Layers never to prune (comma-separated), besides the output layer.
    #[arg(long, value_delimiter = ',', value_name = "LAYER,...")]
    pub protect: Vec<String>,
}

impl SelectArgs {
    /// (remove-by, protect-by, rank-by) after the config and defaults.
    pub fn criteria(&self, section: &PruneSection) -> (String, String, String) {
        let remove = self
            .remove_by
            .clone()
            .or(section.remove_by.clone())
            .unwrap_or_else(|| "u".into());
        let protect = self
            .protect_by
            .clone()
            .or(section.protect_by.clone())
            .unwrap_or_else(|| "r".into());
        let rank = self
            .rank_by
            .clone()
            .or(section.rank_by.clone())
            .unwrap_or_else(|| remove.clone());
        (remove, protect, rank)
    }

    /// The selection options after the config and defaults.
    pub fn options(&self, section: &PruneSection) -> SelectOptions {
        let d = CountOptions::default();
        SelectOptions {
            rule: self.rule.or(section.rule).unwrap_or_default(),
            counting: CountOptions {
                min_keep: self
                    .min_keep
                    .map(|v| v as usize)
                    .or(section.min_keep)
                    .unwrap_or(d.min_keep),
                round_to: self
                    .round_to
                    .map(|v| v as usize)
                    .or(section.round_to)
                    .unwrap_or(d.round_to),
            },
            protected: self.protect.clone(),
        }
    }

    /// ToD or uniform.
    pub fn method(&self) -> Method {
        if self.uniform {
            Method::Uniform
        } else {
            Method::Tod
        }
    }
}

/// Runs `score`.
pub fn score(args: &ScoreArgs) -> Result<()> {
    // Cheap checks first: the output must not be an input.
    let mut inputs = vec![("--weights", args.weights.clone())];
    if let Some(c) = &args.calibration {
        inputs.push(("--calibration", c.clone()));
    }
    if let Some(g) = &args.model.graph {
        inputs.push(("--graph", g.clone()));
    }
    let refs: Vec<(&str, &std::path::Path)> =
        inputs.iter().map(|(w, p)| (*w, p.as_path())).collect();
    fair_ir::check_outputs(&[("--out", &args.out)], &refs)?;
    let section = PruneSection::default();
    let draw: DrawSettings = args.draw.settings(&section);
    let settings = args.scoring.settings(&section, &draw);
    let registry = Registry::default();
    let criteria = registry.create_all(&args.scoring.criteria(None), &settings)?;

    let device = args.compute.apply()?;
    let graph = args.model.load()?;
    let model = Model::from_safetensors(graph, &args.weights, device)?;
    let data = match &args.calibration {
        Some(p) => Some(Calibration::from_safetensors(p)?),
        None => None,
    };
    let file = fair_scoring::score(
        &model,
        data.as_ref(),
        &criteria,
        Progress {
            enabled: !args.quiet,
        },
    )
    .with_context(|| match &args.calibration {
        Some(p) => format!("scoring with the calibration data {}", p.display()),
        None => "scoring".to_owned(),
    })?;
    file.save(&args.out)?;
    crate::notes::print(&file.notes());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "out": args.out,
                "layers": file.layers.len(),
                "provenance": file.provenance,
                "peak_rss_mib": peak_rss_kib().map(|k| k as f64 / 1024.0),
            }))?
        );
        return Ok(());
    }
    println!(
        "scored {} layers of '{}' ({}) → {}",
        file.layers.len(),
        model.graph().name(),
        file.timing(),
        args.out.display()
    );
    if let Some(kib) = peak_rss_kib() {
        println!("peak memory (resident): {:.1} MiB", kib as f64 / 1024.0);
    }
    Ok(())
}

/// The process's peak resident set size (Linux `VmHWM`), if known.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `ratios`: counts and widths from stored scores, no libtorch work.
pub fn ratios(args: &RatiosArgs) -> Result<()> {
    let goal = match (args.alpha, args.target_macs, args.target_params) {
        (Some(a), _, _) => Goal::Alpha(a),
        (None, Some(f), _) => Goal::Macs(f),
        (None, None, Some(f)) => Goal::Params(f),
        (None, None, None) => unreachable!("clap requires one of them"),
    };
    goal.check()
        .map_err(|e| anyhow::anyhow!("--{}: {e}", goal.flag()))?;
    if let Some(p) = &args.write_plan {
        fair_ir::check_outputs(&[("--write-plan", p)], &[("--scores", &args.scores)])?;
    }
    let start = Instant::now();
    let file = ScoreFile::load(&args.scores)?;
    let section = PruneSection::default();
    let (remove, protect, rank) = args.select.criteria(&section);
    let selector = Selector::from_scores(
        &file,
        &args.scores,
        &remove,
        &protect,
        &rank,
        args.select.options(&section),
    )?;
    let selection = selector.select(goal, args.select.method())?;
    let elapsed = start.elapsed();
    if let Some(path) = &args.write_plan {
        selection.plan().save(path)?;
        eprintln!("plan written to {}", path.display());
    }
    let graph = selector.graph();
    let widths = selection.widths();
    let report = selection.resolution.report();
    let what = match args.select.method() {
        Method::Tod => "alpha",
        Method::Uniform => "ratio",
    };
    if args.json {
        let layers: Vec<_> = selector
            .layers()
            .iter()
            .zip(&selection.counts)
            .map(|(l, &k)| {
                let units = graph.units(l).unwrap_or(0);
                let keep = widths[l];
                serde_json::json!({"layer": l, "units": units, "requested": k, "remove": units - keep, "keep": keep})
            })
            .collect();
        let out = serde_json::json!({
            what: selection.setting,
            "rule": selector.options().rule,
            "layers": layers,
            "params": {"before": report.params.0, "after": report.params.1},
            "macs": {"before": report.macs.0, "after": report.macs.1},
            "milliseconds": elapsed.as_secs_f64() * 1e3,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = selector
        .layers()
        .iter()
        .zip(&selection.counts)
        .map(|(l, &k)| {
            let units = graph.units(l).unwrap_or(0);
            let keep = widths[l];
            vec![
                l.clone(),
                units.to_string(),
                k.to_string(),
                keep.to_string(),
                format!("{:.1}%", 100.0 * keep as f64 / units as f64),
            ]
        })
        .collect();
    match args.select.method() {
        Method::Tod => println!(
            "α = {} ({} rule)\n",
            selection.setting,
            selector.options().rule.name()
        ),
        Method::Uniform => println!(
            "uniform ratio = {} ({} rule)\n",
            selection.setting,
            selector.options().rule.name()
        ),
    }
    print!(
        "{}",
        render(
            &["layer", "units", "asked to remove", "keep", "kept %"],
            &rows,
            &[1, 2, 3, 4]
        )
    );
    let (p, m) = (report.params, report.macs);
    println!(
        "\nparameters {} → {} ({:.1}% removed); MACs {} → {} ({:.1}% removed)",
        human(p.0 as u64),
        human(p.1 as u64),
        100.0 * (1.0 - p.1 as f64 / p.0 as f64),
        human(m.0),
        human(m.1),
        100.0 * (1.0 - m.1 as f64 / m.0 as f64)
    );
    println!(
        "computed from stored scores in {:.2} ms ({} layers, {} units)",
        elapsed.as_secs_f64() * 1e3,
        selector.layers().len(),
        thousands(selector.curves().iter().map(|c| c.units() as u64).sum())
    );
    Ok(())
}
