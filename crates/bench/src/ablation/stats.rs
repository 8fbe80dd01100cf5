//! Statistics over seeds: mean ± sample std ([`mean_std`]) and the per-network [`aggregate`]
//! of the per-seed results into a [`Summary`].

use std::collections::BTreeMap;

use anyhow::{Result, bail};

use super::experiment::{Method, target_key};
use super::results::{
    Best, CrossCheck, SeedResult, Settings, Stat, Summary, SummaryRow, UnprunedSummary,
    reconstructed, shared_settings,
};
use super::tables::row_label;

/// Mean and sample standard deviation (n − 1 in the denominator; `None` for fewer than two
/// values) of `xs`; `None` when `xs` is empty.
pub fn mean_std(xs: &[f64]) -> Option<(f64, Option<f64>)> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let std = (xs.len() > 1)
        .then(|| (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    Some((mean, std))
}

/// One metric of one row over the seeds (`None` without values).
pub fn stat(values: &[f64]) -> Option<Stat> {
    mean_std(values).map(|(mean, std)| Stat {
        mean,
        std,
        n: values.len(),
    })
}

/// Averages the per-seed results of one network (`results`: their `result.json`s) into
/// rows of mean ± std per (target, method).
pub fn aggregate(results: &[SeedResult]) -> Result<Summary> {
    let Some(first) = results.first() else {
        bail!("no results to aggregate");
    };
    // Settings must agree, except the recalibration seed (which follows the seed).
    let settings = |r: &SeedResult| {
        let mut s = shared_settings(r);
        s.recalibration.seed = 0;
        s
    };
    let json = |s: &Settings| serde_json::to_string(s).unwrap_or_else(|e| e.to_string());
    for r in results {
        if settings(r) != settings(first) {
            bail!(
                "{} seed {} was measured with other settings ({}) than seed {} ({}): rerun them alike",
                r.net,
                r.seed,
                json(&r.settings),
                first.seed,
                json(&first.settings)
            );
        }
    }
    // Rows: (target, method's table order, reconstructed).
    type Key = (String, usize, bool);
    let mut rows: BTreeMap<Key, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let mut errors: BTreeMap<Key, Vec<String>> = BTreeMap::new();
    let mut budgets: Vec<usize> = Vec::new();
    let mut distilled: Vec<String> = Vec::new();
    let mut checks = CrossCheck {
        equal: 0,
        compared: 0,
    };
    // The reconstruction settings of the first reconstructed row (its seed follows the seed).
    let mut reconstruction = None;
    for r in results {
        for x in &r.results {
            let (t, m) = (x.target, x.method.as_str());
            let order = Method::from_key(m).map_or(usize::MAX, |m| m as usize);
            let row = (target_key(t), order, reconstructed(x));
            let measured = x.measured();
            // Reconstructed rows must share their settings (the seed aside), as the
            // settings above must: they are averaged and described together.
            let recon_settings = measured
                .and_then(|m| m.figures.reconstruction.as_ref())
                .and_then(|r| r.settings.clone());
            if let Some(mut s) = recon_settings {
                s.seed = None;
                match &reconstruction {
                    None => reconstruction = Some(s),
                    Some(earlier) if *earlier != s => {
                        let json = |s| serde_json::to_string(s).unwrap_or_default();
                        bail!(
                            "{} seed {}: {m} at {t} was reconstructed with other settings ({}) \
                             than an earlier row ({}): rerun them alike with --reconstruct",
                            r.net,
                            r.seed,
                            json(&s),
                            json(earlier)
                        );
                    }
                    Some(_) => {}
                }
            }
            let metrics = rows.entry(row.clone()).or_default();
            let Some(x) = measured else {
                if let super::results::Outcome::Failed { error } = &x.outcome {
                    errors.entry(row).or_default().push(error.clone());
                }
                continue;
            };
            let f = &x.figures;
            let mut push = |name: String, v: f64| metrics.entry(name).or_default().push(v);
            push("macs_removed".into(), x.macs_removed);
            if let Some(l) = &x.latency {
                push("latency_removed".into(), l.removed.median);
                push("latency_noisy".into(), f64::from(u8::from(l.noisy)));
                push("latency_missed".into(), f64::from(u8::from(!l.met)));
                if let Some(noisy) = l.table_noisy {
                    push("latency_table_noisy".into(), f64::from(u8::from(noisy)));
                }
            }
            push("params".into(), f.params as f64);
            push("one_shot".into(), f.one_shot.test);
            push("one_shot_val".into(), f.one_shot.val);
            push("recalibrated".into(), f.recalibrated.test);
            push("recalibrated_val".into(), f.recalibrated.val);
            for (b, tuned) in &f.finetuned {
                if let Ok(b) = b.parse::<usize>() {
                    if !budgets.contains(&b) {
                        budgets.push(b);
                    }
                    push(format!("val@{b}"), tuned.val);
                    push(format!("test@{b}"), tuned.test);
                }
            }
            // Fine-tuned with the unpruned model as teacher: by weight, then by budget.
            for (w, per_budget) in &f.distilled {
                for (b, tuned) in per_budget {
                    let column = format!("{b}@{w}");
                    if !distilled.contains(&column) {
                        distilled.push(column.clone());
                    }
                    push(format!("kd-val@{column}"), tuned.val);
                    push(format!("kd-test@{column}"), tuned.test);
                }
            }
            let reference = x.reference.as_ref();
            if let Some(p) = reference.and_then(|r| r.get("params")?.as_f64()) {
                checks.compared += 1;
                if p == f.params as f64 {
                    checks.equal += 1;
                }
            }
        }
    }
    budgets.sort_unstable();
    distilled.sort();
    let rows: Vec<SummaryRow> = rows
        .into_iter()
        .map(|((t, order, recon), metrics)| {
            let stats = metrics
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), stat(v)?)))
                .collect();
            let errs = errors
                .get(&(t.clone(), order, recon))
                .cloned()
                .unwrap_or_default();
            SummaryRow {
                target: t.parse::<f64>().unwrap_or(f64::NAN),
                method: row_label(Method::ALL.get(order), recon),
                reconstructed: recon,
                metrics: stats,
                errors: errs,
            }
        })
        .collect();
    // The best method on validation at each (target, budget).
    let mut best = Vec::new();
    let mut targets: Vec<f64> = rows.iter().map(|r| r.target).collect();
    targets.dedup();
    for &t in &targets {
        for &b in &budgets {
            let metric = format!("val@{b}");
            let winner = rows
                .iter()
                .filter(|r| r.target == t)
                .filter_map(|r| Some((&r.method, r.metrics.get(&metric)?.mean)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((method, val)) = winner {
                best.push(Best {
                    target: t,
                    budget: b,
                    method: method.clone(),
                    val,
                });
            }
        }
    }
    let unpruned = |top1: fn(&SeedResult) -> f64| {
        let v: Vec<f64> = results.iter().map(top1).collect();
        stat(&v)
    };
    Ok(Summary {
        net: first.net.clone(),
        title: first.title.clone(),
        seeds: results.iter().map(|r| r.seed).collect(),
        n: results.len(),
        settings: first.settings.clone(),
        threads: first.threads,
        unpruned: UnprunedSummary {
            params: first.unpruned.params,
            macs: first.unpruned.macs,
            val: unpruned(|r| r.unpruned.top1.val),
            test: unpruned(|r| r.unpruned.top1.test),
        },
        budgets,
        distilled,
        rows,
        best,
        reconstruction,
        cross_check: checks,
        minutes: results.iter().map(|r| r.minutes).sum::<f64>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std_match_hand_values() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((m - 2.5).abs() < 1e-12);
        // Σ(x − 2.5)² = 5, / (4 − 1) → √(5/3).
        assert!((s.unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[0.9]), Some((0.9, None)));
        assert_eq!(mean_std(&[]), None);
        let (_, s) = mean_std(&[0.5, 0.5]).unwrap();
        assert_eq!(s, Some(0.0));
    }
}
