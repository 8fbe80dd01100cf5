//! Forward latency of several models measured *interleaved*: every round runs each model once
//! (in a rotating order) on the same input size, so load on a shared machine hits all models
//! alike, and the speed-up is taken round by round. Figures are medians with their
//! inter-quartile range; a spread too wide to trust is flagged.

use std::time::Instant;

use fair_runtime::{Mode, Model};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::PipelineError;

/// How latency is measured.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyOptions {
    /// Batch sizes to time (default 1 and 64).
    pub batch_sizes: Vec<usize>,
    /// Untimed passes per model before timing (default 3).
    pub warmup: usize,
    /// At least this many rounds (default 7).
    pub min_rounds: usize,
    /// At most this many rounds (default 50).
    pub max_rounds: usize,
    /// Stop after about this many seconds per batch size once `min_rounds` are done
    /// (default 2).
    pub budget_seconds: f64,
    /// A relative spread (IQR / median) above this flags a figure as noisy (default 0.25).
    pub noisy_above: f64,
}

impl Default for LatencyOptions {
    fn default() -> Self {
        LatencyOptions {
            batch_sizes: vec![1, 64],
            warmup: 3,
            min_rounds: 7,
            max_rounds: 50,
            budget_seconds: 2.0,
            noisy_above: 0.25,
        }
    }
}

impl LatencyOptions {
    /// An error unless 1 ≤ `min_rounds` ≤ `max_rounds` and `budget_seconds` is a finite
    /// number ≥ 0.
    pub fn check(&self) -> Result<(), PipelineError> {
        if self.min_rounds == 0 || self.max_rounds < self.min_rounds {
            return Err(PipelineError::invalid(
                "latency",
                "rounds must satisfy 1 ≤ min_rounds ≤ max_rounds",
            ));
        }
        if !(self.budget_seconds.is_finite() && self.budget_seconds >= 0.0) {
            return Err(PipelineError::invalid(
                "latency",
                format!(
                    "budget_seconds must be a finite number of seconds ≥ 0, found {}",
                    self.budget_seconds
                ),
            ));
        }
        Ok(())
    }
}

/// A median with its quartiles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// First quartile.
    pub q1: f64,
    /// Third quartile.
    pub q3: f64,
}

impl Spread {
    /// Median and quartiles (linear interpolation) of `values` (not empty).
    pub fn of(values: &[f64]) -> Spread {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let pos = p * (v.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        };
        Spread {
            median: q(0.5),
            q1: q(0.25),
            q3: q(0.75),
        }
    }

    /// IQR / median.
    pub fn relative_iqr(&self) -> f64 {
        if self.median > 0.0 {
            (self.q3 - self.q1) / self.median
        } else {
            f64::INFINITY
        }
    }
}

/// One model's latency at one batch size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// Batch size.
    pub batch: usize,
    /// Milliseconds per forward pass.
    pub ms: Spread,
    /// Rounds timed.
    pub rounds: usize,
    /// Speed-up over the first (reference) model, round by round (absent for the
    /// reference itself).
    pub speedup: Option<Spread>,
    /// Whether the spread of the time or of the speed-up is too wide to trust.
    pub noisy: bool,
    /// The milliseconds of each round, in order (round `k` of every model of a set was
    /// timed in the same rotation): what ratios against a model other than the reference
    /// are taken from. Not serialised (reports keep the summary above).
    #[serde(skip)]
    #[schemars(skip)]
    pub round_ms: Vec<f64>,
}

/// Times every model in `models` at every batch size, interleaved; the first model is the
/// reference for speed-ups. Returns, per model, one [`Latency`] per batch size.
pub fn measure(
    models: &[&Model],
    options: &LatencyOptions,
) -> Result<Vec<Vec<Latency>>, PipelineError> {
    if models.is_empty() {
        return Ok(Vec::new());
    }
    options.check()?;
    let inputs_for = |b: usize| -> Vec<tch::Tensor> {
        models
            .iter()
            .map(|m| {
                let mut shape = vec![b as i64];
                shape.extend(m.graph().shape_at(0).iter().map(|&d| d as i64));
                tch::Tensor::randn(&shape, (tch::Kind::Float, m.device()))
            })
            .collect()
    };
    let mut inputs: Option<(usize, Vec<tch::Tensor>)> = None;
    schedule(models.len(), options, |i, b| {
        if inputs.as_ref().is_none_or(|(batch, _)| *batch != b) {
            inputs = Some((b, inputs_for(b)));
        }
        let x = &inputs.as_ref().expect("inputs were just made").1[i];
        let t = Instant::now();
        let _ = tch::no_grad(|| models[i].forward(x, Mode::Eval))?;
        // CUDA runs kernels asynchronously: a pass ends when its device is done.
        if let tch::Device::Cuda(d) = models[i].device() {
            tch::Cuda::synchronize(d as i64);
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    })
}

/// The measuring schedule behind [`measure`], independent of what is timed: `run(i, batch)`
/// times model `i` once at `batch` and returns milliseconds. Per batch size: warm-up passes
/// for every model, then rounds in which every model runs once, the order rotating by one
/// each round; the speed-up of model `i` is the median of the per-round ratios
/// `time(0) / time(i)`.
pub(crate) fn schedule(
    n: usize,
    options: &LatencyOptions,
    mut run: impl FnMut(usize, usize) -> Result<f64, PipelineError>,
) -> Result<Vec<Vec<Latency>>, PipelineError> {
    let mut out: Vec<Vec<Latency>> = vec![Vec::new(); n];
    for &b in &options.batch_sizes {
        for i in 0..n {
            for _ in 0..options.warmup {
                run(i, b)?;
            }
        }
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); n];
        let start = Instant::now();
        let mut round = 0;
        while round < options.max_rounds
            && (round < options.min_rounds
                || start.elapsed().as_secs_f64() < options.budget_seconds)
        {
            for k in 0..n {
                let i = (k + round) % n;
                times[i].push(run(i, b)?);
            }
            round += 1;
        }
        for (i, l) in summarize(b, &times, options.noisy_above)
            .into_iter()
            .enumerate()
        {
            out[i].push(l);
        }
    }
    Ok(out)
}

/// The figures of models timed interleaved at batch `batch`: `times[i]` holds model `i`'s
/// milliseconds round by round (every model has a time in every round; model 0 is the
/// reference). Each model's [`Latency`]: the median and quartiles of its times, its
/// speed-up as the median of the per-round ratios `time(0) / time(i)`, and flagged noisy
/// when either spread's IQR / median exceeds `noisy_above`. Every runtime's timings go
/// through here, so they are summarised and flagged alike.
pub(crate) fn summarize(batch: usize, times: &[Vec<f64>], noisy_above: f64) -> Vec<Latency> {
    times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let ms = Spread::of(t);
            let speedup = (i > 0).then(|| {
                let ratios: Vec<f64> = times[0].iter().zip(t).map(|(r, x)| r / x).collect();
                Spread::of(&ratios)
            });
            let noisy = ms.relative_iqr() > noisy_above
                || speedup.is_some_and(|s| s.relative_iqr() > noisy_above);
            Latency {
                batch,
                ms,
                rounds: t.len(),
                speedup,
                noisy,
                round_ms: t.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_interpolate_like_numpy() {
        // numpy.percentile([1, 2, 3, 4, 10], [25, 50, 75]) = [2, 3, 4]
        let s = Spread::of(&[10.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!((s.q1, s.median, s.q3), (2.0, 3.0, 4.0));
        // numpy.percentile([1, 2, 3, 4], [25, 50, 75]) = [1.75, 2.5, 3.25]
        let s = Spread::of(&[4.0, 3.0, 2.0, 1.0]);
        assert_eq!((s.q1, s.median, s.q3), (1.75, 2.5, 3.25));
        assert!((s.relative_iqr() - 0.6).abs() < 1e-12);
    }

    fn fixed_rounds(rounds: usize) -> LatencyOptions {
        LatencyOptions {
            batch_sizes: vec![1, 8],
            warmup: 2,
            min_rounds: rounds,
            max_rounds: rounds,
            budget_seconds: 0.0,
            noisy_above: 0.25,
        }
    }

    #[test]
    fn rounds_interleave_models_in_a_rotating_order() {
        let mut calls = Vec::new();
        let out = schedule(3, &fixed_rounds(3), |i, b| {
            calls.push((i, b));
            Ok(1.0)
        })
        .unwrap();
        // Per batch size: 2 warm-up passes per model, then rounds 0 1 2 | 1 2 0 | 2 0 1.
        let timed: Vec<usize> = calls[6..15].iter().map(|c| c.0).collect();
        assert_eq!(timed, [0, 1, 2, 1, 2, 0, 2, 0, 1]);
        assert!(calls[..15].iter().all(|c| c.1 == 1));
        assert!(calls[15..].iter().all(|c| c.1 == 8));
        assert_eq!(calls.len(), 30);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|m| m.len() == 2 && m[0].rounds == 3));
        assert!(out[0][0].speedup.is_none());
    }

    #[test]
    fn load_that_hits_all_models_alike_leaves_the_speedup_steady_but_flags_the_time() {
        // Every third round the machine is 10x slower for every model; the pruned model
        // (1) is always 4x faster than the reference (0) within a round.
        let mut call = 0usize;
        let out = schedule(2, &fixed_rounds(12), |i, _| {
            call += 1;
            let round = call.saturating_sub(5) / 2; // calls 1-4 are the warm-up
            let load = if round.is_multiple_of(3) { 10.0 } else { 1.0 };
            Ok(load * if i == 0 { 4.0 } else { 1.0 })
        })
        .unwrap();
        let pruned = &out[1][0];
        let speedup = pruned.speedup.expect("speed-up against model 0");
        assert_eq!((speedup.q1, speedup.median, speedup.q3), (4.0, 4.0, 4.0));
        assert!(pruned.ms.relative_iqr() > 0.25, "{:?}", pruned.ms);
        assert!(pruned.noisy, "a time spread this wide must be flagged");
        // Steady times are not flagged.
        let steady = schedule(2, &fixed_rounds(5), |i, _| {
            Ok(if i == 0 { 2.0 } else { 1.0 })
        })
        .unwrap();
        assert!(!steady[1][0].noisy && !steady[0][0].noisy);
        assert_eq!(steady[1][0].speedup.unwrap().median, 2.0);
    }
}
