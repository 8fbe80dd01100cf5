//! `fair-pruner ratios`: per-layer counts and widths from stored scores (libtorch runs only to
//! measure a latency table for `--target-latency`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use fair_analysis::{Goal, Method, RatiosLatency, RatiosReport, ScoreFile, Selector};
use fair_pipeline::charts::{human, thousands};
use fair_pipeline::{PipelineError, Preset, PruneSection, RawSettings, TableSource, table_for};

use crate::args::{LatencyArgs, cli_error};
use crate::score::SelectArgs;
use crate::table::render;

/// Arguments of `fair-pruner ratios`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("how").required(true).args(["alpha", "target_macs", "target_params", "target_latency"])))]
pub struct RatiosArgs {
    /// Scores written by `fair-pruner score` or `prune`.
    #[arg(long, value_name = "FILE", default_value = "scores.json")]
    scores: PathBuf,
    /// Tolerance of Difference α in [0, 1]: larger removes more.
    #[arg(long, allow_negative_numbers = true)]
    alpha: Option<f64>,
    /// Remove at least this fraction of MACs (e.g. 0.5): the smallest α that reaches it, its
    /// counts blended down to the target with --exact-target (the `fair-pruner` preset's).
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true)]
    target_macs: Option<f64>,
    /// Remove at least this fraction of parameters (as --target-macs).
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true)]
    target_params: Option<f64>,
    /// The latency target (`--target-latency`) and its table: measured here on
    /// --latency-on (cached next to the score file) or given with --latency-table.
    #[command(flatten)]
    latency: LatencyArgs,
    /// Starting configuration of the counts (its group rule, MAC weight, exact target and
    /// ranking): `fair-pruner` or `paper`; --rule, --mac-weight, --exact-target and --rank-by
    /// override it [default: the preset the score file records, else fair-pruner]. The
    /// preset used is printed on stderr.
    #[arg(long, value_enum)]
    preset: Option<Preset>,
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

/// Runs `ratios`: counts and widths from stored scores (a latency target may measure a
/// latency table).
pub fn ratios(args: &RatiosArgs) -> Result<()> {
    let goal = match (
        args.alpha,
        args.target_macs,
        args.target_params,
        args.latency.target_latency,
    ) {
        (Some(a), ..) => Goal::Alpha(a),
        (None, Some(f), ..) => Goal::Macs(f),
        (None, None, Some(f), _) => Goal::Params(f),
        (None, None, None, Some(f)) => Goal::Latency(f),
        (None, None, None, None) => {
            anyhow::bail!("give one of --alpha, --target-macs, --target-params, --target-latency")
        }
    };
    goal.check()
        .map_err(|e| cli_error(PipelineError::invalid(goal.flag(), e.to_string()).into()))?;
    // The library resolves the latency settings (a runtime that is not available, latency
    // flags without a latency target, ...).
    if args.latency.latency_tolerance.is_some() {
        anyhow::bail!(
            "--latency-tolerance applies to `prune` only: `ratios` builds no pruned model to time"
        );
    }
    // Without a latency target, `--latency-on` times the pruned models `prune` exports;
    // `ratios` has none.
    if args.latency.target_latency.is_none() && args.latency.latency_on.is_some() {
        anyhow::bail!(
            "--latency-on without --target-latency applies to `prune` only (it times the exported models): `ratios` builds no pruned model to time; give --target-latency to count on a latency table"
        );
    }
    let mut latency_section = PruneSection::default();
    args.latency.fill(&mut latency_section);
    let latency = RawSettings {
        prune: latency_section,
        ..Default::default()
    }
    .latency_untimed()
    .map_err(|e| cli_error(e.into()))?;
    // What ratios writes (the plan, a measured latency table) may not be what it reads.
    let mut guard = fair_pipeline::output_guard();
    guard.input("--scores", &args.scores);
    if let Some(t) = latency.as_ref().and_then(|l| l.table.as_ref()) {
        guard.input("--latency-table", t);
    }
    let plan_out = match &args.write_plan {
        Some(p) => Some(guard.file("--write-plan", p)?),
        None => None,
    };
    let start = Instant::now();
    let file = ScoreFile::load(&args.scores)?;
    let (preset, source) = choose_preset(args, &file)?;
    eprintln!("preset: {preset} ({source})");
    let section = PruneSection::default();
    let method = args.select.method();
    let fair_pipeline::Signals {
        remove,
        protect,
        rank,
        fallback,
    } = args.select.criteria(&section, preset, &file)?;
    if let Some(note) = &fallback {
        eprintln!("note: {note}");
    }
    let options = args.select.options(&section, preset)?;
    let gamma = options.mac_weight;
    let (grouped, protected) = (options.grouped, options.protected.clone());
    let exact = options.exact_target && !matches!(goal, Goal::Alpha(_));
    let selector = match Selector::from_scores_for(
        &file,
        &args.scores,
        method,
        &remove,
        &protect,
        &rank,
        options,
    ) {
        Err(e) if args.select.rank_by.is_none() && file.criterion(&rank).is_none() => {
            // Ranking by U is the paper's ranking whatever the preset; the counts stay the
            // preset's.
            let by_u = if rank != "u" && file.criterion("u").is_some() {
                format!(
                    "pass --rank-by u to rank by U as the paper does (the counts stay the {preset} preset's; \
                     --preset paper also counts as the paper does), or "
                )
            } else {
                String::new()
            };
            return Err(anyhow::Error::from(e).context(format!(
                "the {preset} preset ranks each layer's units by `{rank}`, which this score file lacks: \
                 {by_u}score again with `--criteria u,r,{rank}`"
            )));
        }
        r => r.map_err(|e| cli_error(e.into()))?,
    };
    // A latency target's table: given, cached next to the score file, or measured now on
    // the scored graph (random weights: latency does not depend on them).
    let mut table = None;
    let selector = match &latency {
        Some(settings) => {
            let dir = args.scores.parent().map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            });
            // A table measured now is written next to the score file: refused now, before
            // measuring, if that path is an input (the score file itself, ...).
            let what = "the latency table file";
            if let (None, Some(dir)) = (&settings.table, dir) {
                guard.check_file(what, &dir.join(settings.cache_name()))?;
            }
            if let Some(line) = settings.announcement() {
                eprintln!("{line}");
            }
            let (t, source) = table_for(
                settings,
                selector.graph(),
                grouped,
                &protected,
                &file.provenance.model_digest,
                dir,
                &mut |line| eprintln!("{line}"),
            )
            .map_err(|e| cli_error(e.into()))?;
            if let (TableSource::Measured, Some(dir)) = (&source, dir) {
                let path = dir.join(settings.cache_name());
                guard
                    .file(what, &path)?
                    .write(t.to_json_string().as_bytes())?;
                eprintln!("latency table written to {}", path.display());
            }
            if t.noisy {
                eprintln!(
                    "warning: the latency table's measurements were noisy (the machine was busy): its latency target is approximate"
                );
            }
            let selector = selector
                .with_latency(Arc::new(t.clone()))
                .map_err(|e| cli_error(e.into()))?;
            table = Some((t, source));
            selector
        }
        None => selector,
    };
    let selection = selector
        .select(goal, method)
        .map_err(|e| cli_error(e.into()))?;
    let elapsed = start.elapsed();
    if let (Some(out), Some(path)) = (&plan_out, &args.write_plan) {
        out.write(selection.plan().to_json_string().as_bytes())?;
        eprintln!("plan written to {}", path.display());
    }
    let latency_figures = match &table {
        Some((t, source)) => {
            let after = selector
                .predicted_latency(&selection)
                .transpose()
                .map_err(|e| cli_error(e.into()))?
                .unwrap_or(t.full_seconds);
            Some(RatiosLatency {
                runtime: t.key.runtime.clone(),
                batch: t.key.batch,
                threads: t.key.threads,
                table: source.label().into(),
                before_ms: t.full_seconds * 1e3,
                after_ms: after * 1e3,
                removed: 1.0 - after / t.full_seconds,
                noisy: t.noisy,
            })
        }
        None => None,
    };
    if args.json {
        let mut report = RatiosReport::new(&selector, &selection, preset.name(), elapsed);
        report.latency = latency_figures;
        report.signals = Some(fair_analysis::RatiosSignals {
            remove_by: remove.clone(),
            protect_by: protect.clone(),
            rank_by: rank.clone(),
        });
        report.notes = fallback.into_iter().collect();
        return crate::print_json(&report);
    }
    let graph = selector.graph();
    let widths = selection.widths();
    let report = selection.resolution.report();
    let weighted = gamma > 0.0;
    let per_layer = || {
        selector
            .layers()
            .iter()
            .zip(&selection.counts)
            .zip(selector.unit_macs().iter().zip(selector.weights()))
    };
    let rows: Vec<Vec<String>> = per_layer()
        .map(|((l, &k), (_, &w))| {
            let units = graph.units(l).unwrap_or(0);
            let keep = widths[l];
            let mut row = vec![l.clone(), units.to_string()];
            if weighted {
                row.push(format!("{w:.3}"));
            }
            row.extend([
                k.to_string(),
                keep.to_string(),
                format!("{:.1}%", 100.0 * keep as f64 / units as f64),
            ]);
            row
        })
        .collect();
    let rule = selector.options().rule.name();
    let mut gamma_note = if weighted {
        format!(
            ", MAC weight γ = {gamma} (costs: {} {})",
            if selector.latency_costs().is_some() {
                "latency saved"
            } else {
                "MACs"
            },
            match selector.options().mac_cost {
                fair_analysis::MacCost::Unit => "per unit",
                fair_analysis::MacCost::Shared => "per unit, shared in groups",
                fair_analysis::MacCost::Fraction => "per fraction of a layer",
            }
        )
    } else {
        String::new()
    };
    if exact && matches!(method, Method::Tod) {
        gamma_note.push_str(
            ", exact target: counts between the ToD counts at α and at the tolerance below",
        );
    }
    match method {
        Method::Tod => println!("α = {} ({rule} rule{gamma_note})\n", selection.setting),
        Method::Uniform => println!("uniform ratio = {} ({rule} rule)\n", selection.setting),
    }
    let (headers, right): (Vec<&str>, Vec<usize>) = if weighted {
        (
            vec![
                "layer",
                "units",
                "weight",
                "asked to remove",
                "keep",
                "kept %",
            ],
            vec![1, 2, 3, 4, 5],
        )
    } else {
        (
            vec!["layer", "units", "asked to remove", "keep", "kept %"],
            vec![1, 2, 3, 4],
        )
    };
    print!("{}", render(&headers, &rows, &right));
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
    if let Some(l) = &latency_figures {
        println!(
            "latency {:.3} ms → {:.3} ms ({:.1}% removed) on the {} table ({}, batch {}, {} threads{})",
            l.before_ms,
            l.after_ms,
            100.0 * l.removed,
            l.table,
            l.runtime,
            l.batch,
            l.threads,
            if l.noisy { ", noisy" } else { "" }
        );
    }
    println!(
        "computed from stored scores in {:.2} ms ({} layers, {} units)",
        elapsed.as_secs_f64() * 1e3,
        selector.layers().len(),
        // Units of the groups' maps (a grouped conv's within-group units), as counted.
        thousands(selector.units().iter().map(|&u| u as u64).sum())
    );
    Ok(())
}

/// The preset the counts start from, and where it came from: `--preset`, else the one the
/// score file records, else the default.
fn choose_preset(args: &RatiosArgs, file: &ScoreFile) -> Result<(Preset, String)> {
    if let Some(p) = args.preset {
        return Ok((p, "--preset".into()));
    }
    match file.provenance.preset.as_deref() {
        Some(name) => {
            let p = Preset::ALL
                .into_iter()
                .find(|p| p.name() == name)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "score file '{}' records the preset '{name}', which this fair-pruner does not know (known: {}); choose one with --preset",
                        args.scores.display(),
                        Preset::ALL.map(Preset::name).join(", ")
                    )
                })?;
            Ok((
                p,
                format!("recorded in {}; --preset overrides", args.scores.display()),
            ))
        }
        None => Ok((
            Preset::default(),
            "default; the score file records none".into(),
        )),
    }
}
