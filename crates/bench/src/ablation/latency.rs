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
//!    measured reduction is within `--latency-tolerance` of the aim. A target the method
//!    cannot reach is lowered by 0.03 (at most 3 times) and becomes the search's upper bound.
//! 3. One final session times the unpruned model and every method's kept model interleaved
//!    (round by round, rotating order), so the table's latency column compares them under the
//!    same load.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use fair_analysis::{Goal, Plan, Resolution, ResolveOptions};
use fair_pipeline::stages;
use fair_pipeline::{
    CorrectionOptions, Latency, LatencyOptions, LatencyRound, LatencySettings, LatencyTimer,
    TableSource, correct_latency, table_for,
};
use fair_runtime::Model;

use super::experiment::{Method, Options, latency_tag, target_key};
use super::results::RowLatency;
use super::runner::{PlanContext, PlannedRow};
use crate::compare::create_dir;

/// The largest MACs target a method's search may try.
const MAX_MACS: f64 = 0.95;

/// Candidates a method's search builds and times at most.
const SEARCH_ROUNDS: usize = 6;

/// A MACs target a method cannot reach is lowered by this much, at most [`LOWER_TRIES`]
/// times, before its search fails.
const LOWER_STEP: f64 = 0.03;

/// See [`LOWER_STEP`].
const LOWER_TRIES: usize = 3;

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

/// A method's search: its plan file, Torch-Pruning's record of it, and what the search
/// measured (the final session's figures come after).
#[derive(Debug)]
struct Search {
    method: Method,
    plan: PathBuf,
    reference: Option<serde_json::Value>,
    /// The MACs target the search kept (`None` for fair-latency).
    macs_target: Option<f64>,
    aim: f64,
    kept: LatencyRound,
    rounds: usize,
    met: bool,
    /// fair-latency: whether its latency table was flagged noisy.
    table_noisy: Option<bool>,
}

/// The latency settings of a run (`--latency-on`, `--latency-batch`, `--latency-threads`;
/// ONNX Runtime through `python`): what [`plans`] measures tables and times models with.
pub(super) fn settings(o: &Options, python: Option<&Path>) -> LatencySettings {
    LatencySettings {
        runtime: o.latency_on,
        runtime_given: true,
        batch: Some(o.latency_batch),
        threads: Some(o.latency_threads),
        python: python.map(ToOwned::to_owned),
        ..LatencySettings::default()
    }
}

/// Step 3 at equal latency: fair-latency at `target`, then every other method of `methods`
/// matched to fair-latency's measured reduction, then all timed together. A method whose
/// search fails is a failed row (its error kept), and so is every row when the final
/// session fails; fair-latency failing fails the seed (nothing has its latency to match).
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
    let tag = latency_tag(o.latency_on, batch, threads);
    let dir = cx.plans.join(&tag);
    create_dir(&dir)?;
    let settings = settings(o, cx.python);
    let timer = settings.timer();
    let say = |line: String| eprintln!("  [{net} seed {seed}] {line}");

    // 1. fair-latency.
    let arm = o.latency().context("an equal-latency run")?;
    let fair = fair_latency(cx, target, arm.fair_tolerance, &settings, &dir, &say)
        .with_context(|| format!("fair-latency at {:.0}% of the latency", 100.0 * target))?;
    let aim = fair.0.kept.removed.median;
    let mut searches = vec![fair.0];
    let mut models = vec![fair.1];

    // 2. Every other method at the MACs target whose latency matches.
    let mut failed: Vec<(Method, anyhow::Error)> = Vec::new();
    // The first MACs target within the tolerance of the aim ends a search (as the stored
    // results were measured): the tolerance is the match, not an edge to stay clear of.
    let correction = CorrectionOptions {
        tolerance: o.latency_tolerance,
        settle: 1.0,
        max_rounds: SEARCH_ROUNDS,
    };
    for &m in methods.iter().filter(|&&m| m != Method::FairLatency) {
        say(format!(
            "{}: searching the MACs target that removes {:.1}% of the latency …",
            m.key(),
            100.0 * aim
        ));
        match match_latency(cx, m, aim, &timer, (batch, threads), &correction, &dir) {
            Ok((search, model)) => {
                searches.push(search);
                models.push(model);
            }
            Err(e) => {
                say(format!("{}: {e:#}", m.key()));
                failed.push((m, e));
            }
        }
    }

    // 3. Every kept model and the unpruned one timed together.
    say(format!(
        "timing the unpruned model and {} pruned ones together …",
        models.len()
    ));
    let mut set: Vec<&Model> = vec![cx.model];
    set.extend(&models);
    let name = |_: usize, i: usize| match i {
        0 => "the unpruned model".to_owned(),
        i => format!("{}'s pruned model", searches[i - 1].method.key()),
    };
    let timed = timer
        .time(&[set], &name, batch, threads, &final_options())
        .map(|mut sets| sets.remove(0))
        .context("timing the pruned models together")
        .and_then(|timed| {
            anyhow::ensure!(
                timed.len() == searches.len() + 1,
                "timing the pruned models together gave {} figures for {} models",
                timed.len(),
                searches.len() + 1
            );
            Ok(timed)
        });
    Ok(rows(searches, timed, failed, &tag, target))
}

/// The rows of [`plans`]: each search with its model's figures from the final session
/// (`timed`: the unpruned model first, then the searches' models in order), or failed with
/// the session's error; then the methods whose search failed. A row's figures are stored
/// under `<tag>-<method>-<target>`.
fn rows(
    searches: Vec<Search>,
    timed: Result<Vec<Latency>>,
    failed: Vec<(Method, anyhow::Error)>,
    tag: &str,
    target: f64,
) -> Vec<PlannedRow> {
    let name = |m: Method| format!("{tag}-{}-{}", m.key(), target_key(target));
    let mut rows: Vec<PlannedRow> = match &timed {
        Ok(timed) => searches
            .into_iter()
            .zip(&timed[1..])
            .map(|(s, l)| {
                // The final session's reduction of this model against the unpruned one.
                let last = LatencyRound::timed(s.aim, s.aim, &timed[0], l);
                PlannedRow {
                    target,
                    method: s.method,
                    plan: Ok(s.plan),
                    name: name(s.method),
                    reference: s.reference,
                    latency: Some(RowLatency {
                        macs_target: s.macs_target,
                        aim: s.aim,
                        searched: s.kept.removed,
                        rounds: s.rounds,
                        met: s.met,
                        removed: last.removed,
                        ms: [timed[0].ms.median, l.ms.median],
                        noisy: last.noisy,
                        table_noisy: s.table_noisy,
                    }),
                }
            })
            .collect(),
        Err(e) => searches
            .into_iter()
            .map(|s| PlannedRow {
                target,
                method: s.method,
                plan: Err(anyhow::anyhow!("{e:#}")),
                name: name(s.method),
                reference: s.reference,
                latency: None,
            })
            .collect(),
    };
    rows.extend(failed.into_iter().map(|(m, e)| PlannedRow {
        target,
        method: m,
        plan: Err(e),
        name: name(m),
        reference: None,
        latency: None,
    }));
    rows
}

/// fair-latency: the default's selector priced by a latency table (measured, or cached in
/// `dir` for this model, runtime, batch and threads), its candidates corrected on
/// measurements as `prune --target-latency` does, within `fair_tolerance` (relative; the
/// run's [`super::results::LatencyArm::fair_tolerance`], the CLI's default).
fn fair_latency(
    cx: &PlanContext,
    target: f64,
    fair_tolerance: f64,
    settings: &LatencySettings,
    dir: &Path,
    say: &dyn Fn(String),
) -> Result<(Search, Model)> {
    let (selector, counts) = cx
        .selector(Method::FairLatency)
        .context("fair-latency has a selector")??;
    let options = selector.options().clone();
    say(format!(
        "fair-latency: latency table on {} (batch {}, {} threads) …",
        settings.runtime,
        settings.batch(),
        settings.threads()
    ));
    let (table, source) = table_for(
        settings,
        cx.model.graph(),
        options.grouped,
        &options.protected,
        cx.model_digest,
        Some(dir),
        &mut |line| say(format!("  {line}")),
    )
    .context("the latency table")?;
    if table.noisy {
        say("warning: the latency table was flagged noisy (the machine was busy)".into());
    } else if source == TableSource::Measured {
        // Kept for the seed's next run (a noisy table is measured again).
        table.save(&dir.join(settings.cache_name()))?;
    }
    let selector = selector.with_latency(Arc::new(table.clone()))?;
    let c = stages::correct_latency_target_on(
        &settings.timer(),
        cx.model,
        &selector,
        counts,
        target,
        &table,
        &search_options(),
        // As the stored results were measured: the first round within the tolerance.
        &CorrectionOptions {
            tolerance: fair_tolerance,
            settle: 1.0,
            ..CorrectionOptions::default()
        },
        |r| {
            say(format!(
                "  fair-latency at table target {:.1}%: measured {:.1}% removed",
                100.0 * r.table_target,
                100.0 * r.removed.median
            ))
        },
    )
    .context("correcting the latency target on measurements")?;
    let kept = c.rounds[c.best].clone();
    let (selection, model) = c.candidate;
    let plan = dir.join(format!("{}.json", Method::FairLatency.key()));
    selection.plan().save(&plan)?;
    Ok((
        Search {
            method: Method::FairLatency,
            plan,
            reference: None,
            macs_target: None,
            aim: target,
            rounds: c.rounds.len(),
            met: c.met,
            kept,
            table_noisy: Some(table.noisy),
        },
        model,
    ))
}

/// A search's candidate: its plan file, Torch-Pruning's record of it, the pruned model.
type Candidate = (PathBuf, Option<serde_json::Value>, Model);

/// Searches `m`'s MACs target whose pruned model, timed against the unpruned one on
/// `timer`, removes `aim` of the latency (within `correction.tolerance`, relative). Each
/// candidate's plan is written to a directory of its own (`probes-<method>/<round>/`), so
/// the one kept is the one timed.
fn match_latency(
    cx: &PlanContext,
    m: Method,
    aim: f64,
    timer: &LatencyTimer,
    (batch, threads): (usize, usize),
    correction: &CorrectionOptions,
    dir: &Path,
) -> Result<(Search, Model)> {
    let selector = cx.selector(m).transpose()?;
    let kind = m.torch_pruning();
    let probes = dir.join(format!("probes-{}", m.key()));
    let mut round = 0;
    // The plan at MACs target `t`, written into `out`, with Torch-Pruning's record of it;
    // the inner `Err` when the method cannot reach `t` (Torch-Pruning's ratio cap, a goal our
    // selector refuses), the outer one for anything else.
    type Made = std::result::Result<(PathBuf, Option<serde_json::Value>), String>;
    let plan_at = |t: f64, out: &Path| -> Result<Made> {
        let key = target_key(t);
        Ok(match (&selector, kind) {
            (Some((selector, counts)), _) => {
                let path = out.join(format!("{}-{key}.json", m.key()));
                match stages::select(selector, Goal::Macs(t), *counts) {
                    Ok(selection) => {
                        selection.plan().save(&path)?;
                        Ok((path, None))
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
            (None, Some(kind)) => {
                let summary = cx.torch_pruning(kind, out, &[t])?;
                match summary.error(&key) {
                    Some(e) => Err(format!("Torch-Pruning {kind}: {e}")),
                    None => Ok((
                        out.join(format!("tp-{kind}-{key}.json")),
                        summary.targets.get(&key).cloned(),
                    )),
                }
            }
            (None, None) => anyhow::bail!("{} makes no plans", m.key()),
        })
    };
    // The candidate built and timed at the reachable target `t`.
    let build = |t: f64, (path, reference): (PathBuf, Option<serde_json::Value>)| {
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
        // The MACs target stands where the correction keeps its table target.
        let round = LatencyRound::timed(t, t, &timed[0], &timed[1]);
        eprintln!(
            "    {} at {:.1}% of MACs: {:.1}% of the latency removed",
            m.key(),
            100.0 * t,
            100.0 * round.removed.median
        );
        anyhow::Ok((round, (path, reference, pruned)))
    };
    let mut attempt = |asked: f64| -> Result<(LatencyRound, Candidate)> {
        round += 1;
        let out = probes.join(round.to_string());
        // A round's directory holds only its own plans (runs before left theirs).
        if out.exists() {
            std::fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
        }
        create_dir(&out)?;
        // A target the method cannot reach is lowered a step at a time; the round is
        // recorded at the target that made the plan (which `correct_latency` then takes as
        // its upper bound).
        let (mut t, mut lowered) = (asked, 0);
        let made = loop {
            match plan_at(t, &out)
                .with_context(|| format!("{} at {:.1}% of MACs", m.key(), 100.0 * t))?
            {
                Ok(made) => break made,
                Err(e) if lowered < LOWER_TRIES && t - LOWER_STEP > 0.0 => {
                    eprintln!(
                        "    {} at {:.1}% of MACs: {e}; trying {:.1}%",
                        m.key(),
                        100.0 * t,
                        100.0 * (t - LOWER_STEP)
                    );
                    t -= LOWER_STEP;
                    lowered += 1;
                }
                Err(e) => anyhow::bail!("{} at {:.1}% of MACs: {e}", m.key(), 100.0 * t),
            }
        };
        build(t, made).with_context(|| format!("{} at {:.1}% of MACs", m.key(), 100.0 * t))
    };
    let c = correct_latency(aim, MAX_MACS, correction, &mut attempt)?;
    let kept = c.rounds[c.best].clone();
    let (plan, reference, model) = c.candidate;
    let saved = dir.join(format!("{}.json", m.key()));
    // Written through the plan's own (atomic) save, not a file copy.
    Plan::load(&plan)?.save(&saved)?;
    Ok((
        Search {
            method: m,
            plan: saved,
            reference,
            macs_target: Some(kept.table_target),
            aim,
            rounds: c.rounds.len(),
            met: c.met,
            kept,
            table_noisy: None,
        },
        model,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fair_pipeline::Spread;

    fn spread(v: f64) -> Spread {
        Spread {
            median: v,
            q1: v,
            q3: v,
        }
    }

    /// A model's figures in a session: `ms` per pass, its speed-up over the first model.
    fn timed(ms: f64, speedup: Option<f64>) -> Latency {
        Latency {
            batch: 1,
            ms: spread(ms),
            rounds: 30,
            speedup: speedup.map(spread),
            noisy: false,
            round_ms: Vec::new(),
        }
    }

    fn search(method: Method, macs_target: Option<f64>, searched: f64) -> Search {
        let kept = LatencyRound {
            table_target: macs_target.unwrap_or(0.5),
            predicted: 0.5,
            removed: spread(searched),
            speedup: spread(1.0 / (1.0 - searched)),
            noisy: false,
            reused: false,
        };
        Search {
            method,
            plan: PathBuf::from(format!("{}.json", method.key())),
            reference: None,
            macs_target,
            aim: 0.5,
            kept,
            rounds: 3,
            met: true,
            table_noisy: macs_target.is_none().then_some(false),
        }
    }

    #[test]
    fn each_search_gets_its_own_models_figures_from_the_final_session() {
        let searches = vec![
            search(Method::FairLatency, None, 0.49),
            search(Method::FairDefault, Some(0.7), 0.51),
        ];
        // The unpruned model at 10 ms, fair-latency's at 5 ms (2×), fair-default's at 4 ms
        // (2.5×).
        let session = vec![
            timed(10.0, None),
            timed(5.0, Some(2.0)),
            timed(4.0, Some(2.5)),
        ];
        let failed = vec![(Method::TpNorm, anyhow::anyhow!("no plan at 95%"))];
        let rows = rows(searches, Ok(session), failed, "latency-x-b1-t1", 0.5);
        let methods: Vec<Method> = rows.iter().map(|r| r.method).collect();
        assert_eq!(
            methods,
            [Method::FairLatency, Method::FairDefault, Method::TpNorm]
        );
        let l = |i: usize| rows[i].latency.as_ref().unwrap();
        assert!((l(0).removed.median - 0.5).abs() < 1e-12);
        assert_eq!(l(0).ms, [10.0, 5.0]);
        assert_eq!((l(0).macs_target, l(0).table_noisy), (None, Some(false)));
        assert!((l(1).removed.median - 0.6).abs() < 1e-12);
        assert_eq!(l(1).ms, [10.0, 4.0]);
        assert_eq!(l(1).macs_target, Some(0.7));
        assert!(
            (l(1).searched.median - 0.51).abs() < 1e-12,
            "the search's own"
        );
        assert_eq!(rows[1].name, "latency-x-b1-t1-fair-default-0.5000");
        assert_eq!(
            rows[1].plan.as_ref().unwrap(),
            &PathBuf::from("fair-default.json")
        );
        let err = rows[2].plan.as_ref().unwrap_err().to_string();
        assert!(err.contains("no plan at 95%"), "{err}");
        assert!(rows[2].latency.is_none());
    }

    #[test]
    fn a_failed_final_session_fails_every_row_with_its_error() {
        let searches = vec![
            search(Method::FairLatency, None, 0.49),
            search(Method::TpL1, Some(0.8), 0.5),
        ];
        let e: Result<Vec<Latency>> =
            Err(anyhow::anyhow!("the helper died")).context("timing the pruned models together");
        let rows = rows(searches, e, Vec::new(), "t", 0.5);
        assert_eq!(rows.len(), 2);
        for r in &rows {
            let err = format!("{:#}", r.plan.as_ref().unwrap_err());
            assert!(
                err.contains("timing the pruned models together")
                    && err.contains("the helper died"),
                "{err}"
            );
            assert!(r.latency.is_none());
        }
    }
}
