//! Equal latency (`--latency-target`; issue 27, item 4): the methods compared at the same
//! *measured* latency rather than at the same MACs.
//!
//! 1. `fair-latency`: the default preset's selector priced by a latency table measured on the
//!    chosen runtime ([`fair_pipeline::table_for`], cached in `plans/latency-<…>/`), its
//!    candidates built and timed until the measured reduction is within the CLI's tolerance
//!    of the target ([`stages::correct_latency_target_on`], as `prune --target-latency`).
//!    Its measured reduction is the *aim* of every other method.
//! 2. Every other method: plans at MACs targets (ours from its selector, Torch-Pruning's from
//!    its script), each built and timed against the unpruned model, the MACs target corrected
//!    ([`fair_pipeline::correct_latency`]: secant steps, bisection once bracketed) until the
//!    measured reduction is within `--latency-tolerance` of the aim.
//! 3. One final session times the unpruned model and every method's kept model interleaved
//!    (round by round, rotating order), so the table's latency column compares them under the
//!    same load.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use fair_analysis::{Goal, Plan, Resolution, ResolveOptions};
use fair_pipeline::stages;
use fair_pipeline::{
    CorrectionOptions, Latency, LatencyOptions, LatencyRound, LatencySettings, LatencyTimer,
    correct_latency, table_for,
};
use fair_runtime::Model;

use super::experiment::{Method, Options, target_key};
use super::results::RowLatency;
use super::runner::{PlanContext, PlannedRow};
use crate::compare::create_dir;

/// The largest MACs target a method's search may try.
const MAX_MACS: f64 = 0.95;

/// Candidates a method's search builds and times at most.
const SEARCH_ROUNDS: usize = 6;

/// How each candidate of a search is timed: at least 15 interleaved rounds, about 3 s.
fn search_options() -> LatencyOptions {
    LatencyOptions {
        warmup: 5,
        min_rounds: 15,
        max_rounds: 300,
        budget_seconds: 3.0,
        ..LatencyOptions::default()
    }
}

/// How the final session times every model: at least 30 rounds, about 10 s.
fn final_options() -> LatencyOptions {
    LatencyOptions {
        warmup: 5,
        min_rounds: 30,
        max_rounds: 1000,
        budget_seconds: 10.0,
        ..LatencyOptions::default()
    }
}

/// A method's search result: its plan file, Torch-Pruning's record, the pruned model and
/// the figures of its search (the final session's are filled in after).
struct Matched {
    method: Method,
    plan: PathBuf,
    reference: Option<serde_json::Value>,
    model: Model,
    macs_target: Option<f64>,
    aim: f64,
    kept: LatencyRound,
    rounds: usize,
    met: bool,
}

/// Step 3 at equal latency: fair-latency at `target`, then every other method of `methods`
/// matched to fair-latency's measured reduction, then all timed together. A method whose
/// search fails is a failed row (its error kept); fair-latency failing fails the seed.
pub(super) fn plans(
    cx: &PlanContext,
    methods: &[Method],
    target: f64,
    o: &Options,
) -> Result<Vec<PlannedRow>> {
    let (net, seed) = (cx.net, cx.seed);
    let (batch, threads) = (o.latency_batch, o.latency_threads);
    // Plans, probes, the cached table and the stored figures of each runtime, batch and
    // thread count apart.
    let tag = format!("latency-{}-b{batch}-t{threads}", o.latency_on);
    let dir = cx.plans.join(&tag);
    create_dir(&dir)?;
    let settings = LatencySettings {
        runtime: o.latency_on,
        runtime_given: true,
        batch: Some(o.latency_batch),
        threads: Some(o.latency_threads),
        python: cx.python.map(ToOwned::to_owned),
        ..LatencySettings::default()
    };
    let timer = settings.timer();
    timer.check_available()?;
    let say = |line: String| eprintln!("  [{net} seed {seed}] {line}");

    // 1. fair-latency.
    let (selector, counts) = cx
        .selector(Method::FairLatency)
        .context("fair-latency has a selector")??;
    let options = selector.options().clone();
    say(format!(
        "fair-latency: latency table on {} (batch {batch}, {threads} threads) …",
        o.latency_on
    ));
    let (table, _) = table_for(
        &settings,
        cx.model.graph(),
        options.grouped,
        &options.protected,
        cx.model_digest,
        Some(&dir),
        &mut |line| say(format!("  {line}")),
    )?;
    table.save(&dir.join(settings.cache_name()))?;
    let selector = selector.with_latency(Arc::new(table.clone()))?;
    let c = stages::correct_latency_target_on(
        &timer,
        cx.model,
        &selector,
        counts,
        target,
        &table,
        &search_options(),
        &CorrectionOptions::default(),
        |r| {
            say(format!(
                "  fair-latency at table target {:.1}%: measured {:.1}% removed",
                100.0 * r.table_target,
                100.0 * r.removed.median
            ))
        },
    )?;
    let kept = c.rounds[c.best].clone();
    let aim = kept.removed.median;
    let (selection, model) = c.candidate;
    let plan = dir.join(format!("{}.json", Method::FairLatency.key()));
    selection.plan().save(&plan)?;
    let mut matched = vec![Matched {
        method: Method::FairLatency,
        plan,
        reference: None,
        model,
        macs_target: None,
        aim: target,
        rounds: c.rounds.len(),
        met: c.met,
        kept,
    }];

    // 2. Every other method at the MACs target whose latency matches.
    let mut failed: Vec<(Method, anyhow::Error)> = Vec::new();
    let correction = CorrectionOptions {
        tolerance: o.latency_tolerance,
        max_rounds: SEARCH_ROUNDS,
    };
    for &m in methods.iter().filter(|&&m| m != Method::FairLatency) {
        say(format!(
            "{}: searching the MACs target that removes {:.1}% of the latency …",
            m.key(),
            100.0 * aim
        ));
        match match_latency(cx, m, aim, &timer, (batch, threads), &correction, &dir) {
            Ok(found) => matched.push(found),
            Err(e) => {
                say(format!("{}: {e:#}", m.key()));
                failed.push((m, e));
            }
        }
    }

    // 3. Every kept model and the unpruned one timed together.
    say(format!(
        "timing the unpruned model and {} pruned ones together …",
        matched.len()
    ));
    let mut set: Vec<&Model> = vec![cx.model];
    set.extend(matched.iter().map(|m| &m.model));
    let name = |_: usize, i: usize| match i {
        0 => "the unpruned model".to_owned(),
        i => format!("{}'s pruned model", matched[i - 1].method.key()),
    };
    let timed: Vec<Latency> = timer
        .time(&[set], &name, batch, threads, &final_options())?
        .remove(0);
    let mut rows: Vec<PlannedRow> = matched
        .into_iter()
        .zip(&timed[1..])
        .map(|(m, l)| {
            let last = LatencyRound::timed(m.aim, m.aim, &timed[0], l);
            PlannedRow {
                target,
                method: m.method,
                plan: Ok(m.plan),
                name: format!("{tag}-{}-{}", m.method.key(), target_key(target)),
                reference: m.reference,
                latency: Some(RowLatency {
                    macs_target: m.macs_target,
                    aim: m.aim,
                    searched: m.kept.removed,
                    rounds: m.rounds,
                    met: m.met,
                    removed: last.removed,
                    ms: [timed[0].ms.median, l.ms.median],
                    noisy: last.noisy,
                }),
            }
        })
        .collect();
    rows.extend(failed.into_iter().map(|(m, e)| PlannedRow {
        target,
        method: m,
        plan: Err(e),
        name: format!("{tag}-{}-{}", m.key(), target_key(target)),
        reference: None,
        latency: None,
    }));
    Ok(rows)
}

/// A search's candidate: its plan file, Torch-Pruning's record of it, the pruned model.
type Candidate = (PathBuf, Option<serde_json::Value>, Model);

/// Searches `m`'s MACs target whose pruned model, timed against the unpruned one on
/// `timer`, removes `aim` of the latency (within `correction.tolerance`, relative).
fn match_latency(
    cx: &PlanContext,
    m: Method,
    aim: f64,
    timer: &LatencyTimer,
    (batch, threads): (usize, usize),
    correction: &CorrectionOptions,
    dir: &std::path::Path,
) -> Result<Matched> {
    let selector = cx.selector(m).transpose()?;
    let kind = m.torch_pruning();
    let probes = dir.join(format!("probes-{}", m.key()));
    create_dir(&probes)?;
    let attempt = |t: f64| -> Result<(LatencyRound, Candidate)> {
        let key = target_key(t);
        let (path, reference) = match (&selector, kind) {
            (Some((selector, counts)), _) => {
                let path = probes.join(format!("{}-{key}.json", m.key()));
                stages::select(selector, Goal::Macs(t), *counts)?
                    .plan()
                    .save(&path)?;
                (path, None)
            }
            (None, Some(kind)) => {
                let summary = cx.torch_pruning(kind, &probes, &[t])?;
                if let Some(e) = summary.error(&key) {
                    anyhow::bail!("Torch-Pruning {kind} at {:.1}% of MACs: {e}", 100.0 * t);
                }
                let path = probes.join(format!("tp-{kind}-{key}.json"));
                (path, summary.targets.get(&key).cloned())
            }
            (None, None) => anyhow::bail!("{} makes no plans", m.key()),
        };
        let plan = Plan::load(&path)?;
        let resolution = Resolution::new(cx.model.graph(), &plan, &ResolveOptions::default())?;
        let pruned = stages::apply(cx.model, &resolution)?;
        let name = |_: usize, i: usize| match i {
            0 => "the unpruned model".to_owned(),
            _ => format!("{} at {:.1}% of MACs", m.key(), 100.0 * t),
        };
        let timed = timer
            .time(
                &[vec![cx.model, &pruned]],
                &name,
                batch,
                threads,
                &search_options(),
            )?
            .remove(0);
        let round = LatencyRound::timed(t, t, &timed[0], &timed[1]);
        eprintln!(
            "    {} at {:.1}% of MACs: {:.1}% of the latency removed",
            m.key(),
            100.0 * t,
            100.0 * round.removed.median
        );
        Ok((round, (path, reference, pruned)))
    };
    let c = correct_latency(aim, MAX_MACS, correction, attempt)?;
    let kept = c.rounds[c.best].clone();
    let (plan, reference, model) = c.candidate;
    let saved = dir.join(format!("{}.json", m.key()));
    std::fs::copy(&plan, &saved)
        .with_context(|| format!("copying {} to {}", plan.display(), saved.display()))?;
    Ok(Matched {
        method: m,
        plan: saved,
        reference,
        model,
        macs_target: Some(kept.table_target),
        aim,
        rounds: c.rounds.len(),
        met: c.met,
        kept,
    })
}
