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
    if options.min_rounds == 0 || options.max_rounds < options.min_rounds {
        return Err(PipelineError::invalid(
            "latency",
            "rounds must satisfy 1 ≤ min_rounds ≤ max_rounds",
        ));
    }
    let mut out: Vec<Vec<Latency>> = vec![Vec::new(); models.len()];
    for &b in &options.batch_sizes {
        let inputs: Vec<tch::Tensor> = models
            .iter()
            .map(|m| {
                let mut shape = vec![b as i64];
                shape.extend(m.graph().shape_at(0).iter().map(|&d| d as i64));
                tch::Tensor::randn(&shape, (tch::Kind::Float, m.device()))
            })
            .collect();
        let run = |i: usize| -> Result<f64, PipelineError> {
            let t = Instant::now();
            let _ = tch::no_grad(|| models[i].forward(&inputs[i], Mode::Eval))?;
            Ok(t.elapsed().as_secs_f64() * 1e3)
        };
        for i in 0..models.len() {
            for _ in 0..options.warmup {
                run(i)?;
            }
        }
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); models.len()];
        let start = Instant::now();
        let mut round = 0;
        while round < options.max_rounds
            && (round < options.min_rounds
                || start.elapsed().as_secs_f64() < options.budget_seconds)
        {
            for k in 0..models.len() {
                let i = (k + round) % models.len();
                times[i].push(run(i)?);
            }
            round += 1;
        }
        for (i, t) in times.iter().enumerate() {
            let ms = Spread::of(t);
            let speedup = (i > 0).then(|| {
                let ratios: Vec<f64> = times[0].iter().zip(t).map(|(r, x)| r / x).collect();
                Spread::of(&ratios)
            });
            let noisy = ms.relative_iqr() > options.noisy_above
                || speedup.is_some_and(|s| s.relative_iqr() > options.noisy_above);
            out[i].push(Latency {
                batch: b,
                ms,
                rounds: t.len(),
                speedup,
                noisy,
            });
        }
    }
    Ok(out)
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
}
