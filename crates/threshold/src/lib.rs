//! Tolerance of Difference (ToD): FAIR-Pruner's rule for how many units to remove from each
//! layer, from each unit's U-Score (utilisation; low means "remove") and R-Score
//! (reconstruction; high means "protect"). Pure Rust.
//!
//! For a count m, `Rm(m)` is the m units with the lowest U and `Pm(m)` the m units with the
//! highest R; `ToD(m) = |Rm(m) ∩ Pm(m)| / m`. At tolerance α ∈ [0, 1] the layer's count is
//! the largest m ≤ ⌊0.99·n⌋ with ToD(m) ≤ α (0 if none). A [`TodCurve`] holds ToD(1..n) for
//! one layer (O(n log n) to build); every α, target or baseline is then a cheap re-scan that
//! never recomputes scores.
//!
//! ```
//! use fair_threshold::{CountOptions, TodCurve, counts_at};
//! // Unit 0 has the lowest U but the highest R: removing it conflicts with protecting it.
//! let curve = TodCurve::new("fc1", &[0.1, 0.5, 0.2, 0.9], &[9.0, 1.0, 0.5, 2.0])?;
//! assert_eq!(curve.tod(), &[1.0, 0.5, 2.0 / 3.0, 1.0]);
//! // m ≤ ⌊0.99·4⌋ = 3; ToD(3) = 2/3 > 0.5 but ToD(2) = 0.5 ≤ 0.5.
//! assert_eq!(curve.count_at(0.5)?, 2);
//! assert_eq!(curve.count_at(0.4)?, 0);
//! let counts = counts_at(&[curve], 0.7, CountOptions::default())?;
//! assert_eq!(counts, vec![3]);
//! # Ok::<(), fair_threshold::ThresholdError>(())
//! ```

use fair_stats::{overlap_curve, stable_argsort};
use serde::{Deserialize, Serialize};

/// Errors of this crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ThresholdError {
    /// U and R have different lengths.
    #[error("layer '{layer}': {u} U-Scores but {r} R-Scores; both must score the same units")]
    LengthMismatch {
        /// The layer.
        layer: String,
        /// Number of U-Scores.
        u: usize,
        /// Number of R-Scores.
        r: usize,
    },
    /// A layer has no units.
    #[error("layer '{0}' has no units")]
    Empty(String),
    /// A score is NaN.
    #[error("layer '{layer}': the {which}-Score of unit {unit} is NaN")]
    NaN {
        /// The layer.
        layer: String,
        /// "U", "R" or the criterion's name.
        which: String,
        /// The unit.
        unit: usize,
    },
    /// α is outside [0, 1].
    #[error("the tolerance α must be in [0, 1], found {0}")]
    Alpha(f64),
    /// A target or ratio is outside [0, 1).
    #[error("{what} must be in [0, 1), found {value}")]
    Fraction {
        /// What was given ("the target reduction", "the uniform ratio").
        what: &'static str,
        /// The value.
        value: f64,
    },
    /// The target cannot be met even at α = 1 (or the largest uniform ratio).
    #[error(
        "a reduction of {:.2}% cannot be reached: the most this method removes is {:.2}%",
        .target * 100.0, .best * 100.0
    )]
    Unreachable {
        /// The target reduction.
        target: f64,
        /// The largest reduction reachable.
        best: f64,
    },
    /// The caller's cost model failed.
    #[error("cost model: {0}")]
    Cost(String),
    /// A curve's weight is not a finite number > 0 (see [`TodCurve::weighted`]).
    #[error("layer '{layer}': a ToD curve's weight must be finite and > 0, found {weight}")]
    Weight {
        /// The layer.
        layer: String,
        /// The weight given.
        weight: f64,
    },
}

fn check_scores(layer: &str, which: &str, s: &[f64]) -> Result<(), ThresholdError> {
    match s.iter().position(|v| v.is_nan()) {
        Some(unit) => Err(ThresholdError::NaN {
            layer: layer.to_owned(),
            which: which.to_owned(),
            unit,
        }),
        None => Ok(()),
    }
}

/// The ToD curve of one layer and its removal order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TodCurve {
    layer: String,
    tod: Vec<f64>,
    removal_order: Vec<usize>,
}

impl TodCurve {
    /// Whether `other` has the same ToD values and removal order, whatever the layers'
    /// names: coupled layers ranked as one (a summed group rule) do, and must keep equal
    /// counts.
    pub fn same_curve(&self, other: &TodCurve) -> bool {
        self.tod == other.tod && self.removal_order == other.removal_order
    }

    /// Builds the curve from one layer's U- and R-Scores in O(n log n): both orders are
    /// sorted once (stably: ties keep unit order), then the two sets grow by one unit per
    /// step. `Pm(m)` is the last m units of the ascending R order, as in the authors' package.
    pub fn new(layer: &str, u: &[f64], r: &[f64]) -> Result<Self, ThresholdError> {
        if u.len() != r.len() {
            return Err(ThresholdError::LengthMismatch {
                layer: layer.to_owned(),
                u: u.len(),
                r: r.len(),
            });
        }
        if u.is_empty() {
            return Err(ThresholdError::Empty(layer.to_owned()));
        }
        check_scores(layer, "U", u)?;
        check_scores(layer, "R", r)?;
        let low_u = stable_argsort(u);
        let mut high_r = stable_argsort(r);
        high_r.reverse();
        let tod = overlap_curve(&low_u, &high_r)
            .into_iter()
            .enumerate()
            .map(|(i, both)| both as f64 / (i + 1) as f64)
            .collect();
        Ok(TodCurve {
            layer: layer.to_owned(),
            tod,
            removal_order: low_u,
        })
    }

    /// The layer's name.
    pub fn layer(&self) -> &str {
        &self.layer
    }

    /// Number of units n.
    pub fn units(&self) -> usize {
        self.tod.len()
    }

    /// ToD(m) for m = 1..=n (entry m − 1).
    pub fn tod(&self) -> &[f64] {
        &self.tod
    }

    /// Units in removal order (lowest U first; ties by unit index).
    pub fn removal_order(&self) -> &[usize] {
        &self.removal_order
    }

    /// The same curve with every ToD value raised to the power `weight` (finite, > 0): its
    /// [`TodCurve::count_at`]`(α)` is the largest m ≤ ⌊0.99·n⌋ with ToD(m)^weight ≤ α, i.e.
    /// ToD(m) ≤ α^(1/weight). A layer with weight < 1 tolerates less conflict (gives up fewer
    /// units) at the same α, one with weight > 1 more; at α = 0 and α = 1 every weight gives
    /// the unweighted count, so the values stay in [0, 1] and everything reachable without
    /// weights stays reachable. The removal order is unchanged. [`counts_at`],
    /// [`candidate_alphas`] and [`alpha_for_target`] work on weighted curves unchanged: per
    /// layer, the count at α is the unweighted curve's count at α^(1/weight) (up to rounding
    /// exactly at a threshold). This is fair-pruner's MAC-aware extension (`fair-analysis`'s
    /// `SelectOptions::mac_weight`), not part of the paper.
    ///
    /// ```
    /// use fair_threshold::TodCurve;
    /// let curve = TodCurve::new("fc1", &[0.1, 0.5, 0.2, 0.9], &[9.0, 1.0, 0.5, 2.0])?;
    /// assert_eq!(curve.tod(), &[1.0, 0.5, 2.0 / 3.0, 1.0]);
    /// assert_eq!(curve.count_at(0.5)?, 2);
    /// // Weight ½: ToD(m) ≤ α², so at α = 0.5 only ToD ≤ 0.25 passes: nothing is removed.
    /// let cheap = curve.weighted(0.5)?;
    /// assert_eq!(cheap.count_at(0.5)?, 0);
    /// // At α = 1 the weight does not matter.
    /// assert_eq!(cheap.count_at(1.0)?, curve.count_at(1.0)?);
    /// assert!(curve.weighted(0.0).is_err());
    /// # Ok::<(), fair_threshold::ThresholdError>(())
    /// ```
    pub fn weighted(&self, weight: f64) -> Result<TodCurve, ThresholdError> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(ThresholdError::Weight {
                layer: self.layer.clone(),
                weight,
            });
        }
        Ok(TodCurve {
            layer: self.layer.clone(),
            tod: self.tod.iter().map(|t| t.powf(weight)).collect(),
            removal_order: self.removal_order.clone(),
        })
    }

    /// The largest m ≤ ⌊0.99·n⌋ with ToD(m) ≤ α, or 0.
    pub fn count_at(&self, alpha: f64) -> Result<usize, ThresholdError> {
        if !(0.0..=1.0).contains(&alpha) {
            return Err(ThresholdError::Alpha(alpha));
        }
        let cap = (0.99 * self.units() as f64).floor() as usize;
        Ok((1..=cap)
            .rev()
            .find(|&m| self.tod[m - 1] <= alpha)
            .unwrap_or(0))
    }
}

/// Post-processing of a layer's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountOptions {
    /// Every layer keeps at least this many units (default 1).
    pub min_keep: usize,
    /// Kept units are rounded up to a multiple of this (default 1: no rounding), never above
    /// the layer's size.
    pub round_to: usize,
}

impl Default for CountOptions {
    fn default() -> Self {
        CountOptions {
            min_keep: 1,
            round_to: 1,
        }
    }
}

impl CountOptions {
    /// Applies the options to a raw count of units to remove from a layer of `units`.
    pub fn apply(&self, units: usize, count: usize) -> usize {
        let kept = units.saturating_sub(count).max(self.min_keep);
        units - round_up(kept, self.round_to, units)
    }
}

/// `kept` rounded up to a multiple of `step` (unchanged for a step of 0 or 1), at most
/// `units`: how `round_to` and a latency target's fast step round kept units (or widths).
///
/// ```
/// assert_eq!(fair_threshold::round_up(10, 8, 64), 16);
/// assert_eq!(fair_threshold::round_up(60, 8, 62), 62);
/// assert_eq!(fair_threshold::round_up(7, 1, 64), 7);
/// ```
pub fn round_up(kept: usize, step: usize, units: usize) -> usize {
    if step <= 1 {
        return kept.min(units);
    }
    kept.div_ceil(step).saturating_mul(step).min(units)
}

/// Counts to remove per layer at tolerance `alpha`, options applied.
pub fn counts_at(
    curves: &[TodCurve],
    alpha: f64,
    options: CountOptions,
) -> Result<Vec<usize>, ThresholdError> {
    curves
        .iter()
        .map(|c| Ok(options.apply(c.units(), c.count_at(alpha)?)))
        .collect()
}

/// The tolerances at which some layer's count changes (every distinct ToD value in [0, 1]),
/// with 0 and 1, ascending. Counts are constant between consecutive values. Values above 1
/// (only [weighted](TodCurve::weighted) curves have them) are left out: α never exceeds 1.
pub fn candidate_alphas(curves: &[TodCurve]) -> Vec<f64> {
    let mut a: Vec<f64> = curves
        .iter()
        .flat_map(|c| c.tod.iter().copied())
        .filter(|t| *t <= 1.0)
        .collect();
    a.push(0.0);
    a.push(1.0);
    a.sort_by(f64::total_cmp);
    a.dedup();
    a
}

/// The outcome of a target search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetResult {
    /// The tolerance found (for ToD) or the ratio (for uniform pruning).
    pub setting: f64,
    /// Counts to remove per layer.
    pub counts: Vec<usize>,
    /// The reduction the counts achieve, as returned by the cost model.
    pub achieved: f64,
}

fn check_fraction(what: &'static str, value: f64) -> Result<(), ThresholdError> {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        Err(ThresholdError::Fraction { what, value })
    }
}

/// Smallest index in `0..len` whose reduction meets `target`, by binary search (the
/// reduction is non-decreasing in the index).
fn search<F>(len: usize, target: f64, mut reduction_at: F) -> Result<(usize, f64), ThresholdError>
where
    F: FnMut(usize) -> Result<f64, ThresholdError>,
{
    let best = reduction_at(len - 1)?;
    if best < target {
        return Err(ThresholdError::Unreachable { target, best });
    }
    let (mut lo, mut hi, mut achieved) = (0, len - 1, best);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let r = reduction_at(mid)?;
        if r >= target {
            hi = mid;
            achieved = r;
        } else {
            lo = mid + 1;
        }
    }
    if lo != len - 1 && hi == lo && achieved < target {
        achieved = reduction_at(lo)?;
    }
    Ok((lo, achieved))
}

/// Finds the smallest α whose counts reach `target` (a fraction in [0, 1) of parameters or
/// MACs to remove). `reduction` maps counts (one per curve) to the fraction they remove —
/// the caller's cost model. Counts grow with α, so the search is a binary search over
/// [`candidate_alphas`]; no score is recomputed.
pub fn alpha_for_target<F>(
    curves: &[TodCurve],
    options: CountOptions,
    target: f64,
    mut reduction: F,
) -> Result<TargetResult, ThresholdError>
where
    F: FnMut(&[usize]) -> Result<f64, String>,
{
    check_fraction("the target reduction", target)?;
    let alphas = candidate_alphas(curves);
    let mut eval = |i: usize| -> Result<f64, ThresholdError> {
        let counts = counts_at(curves, alphas[i], options)?;
        reduction(&counts).map_err(ThresholdError::Cost)
    };
    let (i, achieved) = search(alphas.len(), target, &mut eval)?;
    Ok(TargetResult {
        setting: alphas[i],
        counts: counts_at(curves, alphas[i], options)?,
        achieved,
    })
}

/// Steps of the blend between two tolerances in [`alpha_for_target_exact`].
const BLEND_STEPS: usize = 1000;

/// [`alpha_for_target`], landing on the target instead of jumping past it. Counts change
/// only at the candidate tolerances, and at each one every layer whose ToD curve has that
/// value gains units at once, so the smallest α that reaches the target can remove far more
/// (e.g. 36 % of the MACs for a 30 % target). Here the counts at that α (`hi`) and at the
/// candidate just below (`lo`, short of the target) are blended: each layer removes
/// lo + ⌊λ·(hi − lo)⌋ units (options applied), with λ the smallest multiple of 1/1000 that
/// reaches the target. Every layer's count stays between its ToD counts at the two
/// tolerances, so the layers that ToD lets grow still grow, in proportion to their step.
/// Where that blend still passes the target (a layer whose step is a few large units moves
/// only as λ reaches 1), units are given back one at a time while the target stays met,
/// each time where the least is left above it (never below `lo`). Below the smallest
/// candidate (α = 0) `lo` removes nothing. `setting` is the α found; where it reaches the
/// target exactly, the result is [`alpha_for_target`]'s.
pub fn alpha_for_target_exact<F>(
    curves: &[TodCurve],
    options: CountOptions,
    target: f64,
    mut reduction: F,
) -> Result<TargetResult, ThresholdError>
where
    F: FnMut(&[usize]) -> Result<f64, String>,
{
    let found = alpha_for_target(curves, options, target, &mut reduction)?;
    if found.achieved <= target {
        return Ok(found);
    }
    let alphas = candidate_alphas(curves);
    let lo = match alphas.iter().rposition(|&a| a < found.setting) {
        Some(below) => counts_at(curves, alphas[below], options)?,
        // Below the smallest tolerance nothing is removed.
        None => curves.iter().map(|c| options.apply(c.units(), 0)).collect(),
    };
    let blend = |step: usize| -> Vec<usize> {
        lo.iter()
            .zip(&found.counts)
            .zip(curves)
            .map(|((&l, &h), c)| {
                options.apply(c.units(), l + h.saturating_sub(l) * step / BLEND_STEPS)
            })
            .collect()
    };
    let (step, achieved) = search(BLEND_STEPS + 1, target, |step| {
        reduction(&blend(step)).map_err(ThresholdError::Cost)
    })?;
    let (counts, achieved) = trim(curves, options, &lo, blend(step), achieved, target, |c| {
        reduction(c).map_err(ThresholdError::Cost)
    })?;
    Ok(TargetResult {
        setting: found.setting,
        counts,
        achieved,
    })
}

/// Evaluations of the cost model [`trim`] may spend.
const TRIM_EVALUATIONS: usize = 4096;

/// Gives back units of a blend that overshoots `target`: the blend moves a layer whose step
/// between the two tolerances is a few large units (a transformer's heads) only at the end,
/// so it can pass the target by several such units. While some layer can remove one unit
/// fewer (options applied, never below `lo`) and still reach the target, the one that leaves
/// the smallest reduction does (ties: the first layer). Layers with the same curve and the
/// same count give back together: coupled layers ranked as one share one curve and must
/// keep equal counts. A candidate the cost model refuses is skipped. At most
/// [`TRIM_EVALUATIONS`] evaluations. Returns the counts and what they achieve.
fn trim<F>(
    curves: &[TodCurve],
    options: CountOptions,
    lo: &[usize],
    mut counts: Vec<usize>,
    mut achieved: f64,
    target: f64,
    mut reduction: F,
) -> Result<(Vec<usize>, f64), ThresholdError>
where
    F: FnMut(&[usize]) -> Result<f64, ThresholdError>,
{
    let mut budget = TRIM_EVALUATIONS;
    while achieved > target && budget > 0 {
        let mut best: Option<(Vec<usize>, f64)> = None;
        for (j, c) in curves.iter().enumerate() {
            // Each set of tied layers once, from its first member.
            let tied = |k: usize| counts[k] == counts[j] && curves[k].same_curve(c);
            if (0..j).any(tied) {
                continue;
            }
            let Some(fewer) = counts[j].checked_sub(1) else {
                continue;
            };
            let fewer = options.apply(c.units(), fewer);
            if fewer >= counts[j] || fewer < lo[j] || budget == 0 {
                continue;
            }
            let mut candidate = counts.clone();
            for k in (j..curves.len()).filter(|&k| tied(k)) {
                candidate[k] = fewer;
            }
            budget -= 1;
            let Ok(r) = reduction(&candidate) else {
                continue;
            };
            if r >= target && best.as_ref().is_none_or(|(_, b)| r < *b) {
                best = Some((candidate, r));
            }
        }
        let Some((candidate, r)) = best else { break };
        counts = candidate;
        achieved = r;
    }
    Ok((counts, achieved))
}

/// Uniform baseline: remove ⌊ratio·n⌋ units from every layer (options applied).
pub fn uniform_counts(
    units: &[usize],
    ratio: f64,
    options: CountOptions,
) -> Result<Vec<usize>, ThresholdError> {
    check_fraction("the uniform ratio", ratio)?;
    Ok(units
        .iter()
        .map(|&n| options.apply(n, (ratio * n as f64).floor() as usize))
        .collect())
}

/// Uniform baseline at a target: the smallest ratio (searched on a grid of 1/1000 steps up to
/// 0.999) whose counts reach `target` under the caller's cost model.
pub fn uniform_for_target<F>(
    units: &[usize],
    options: CountOptions,
    target: f64,
    mut reduction: F,
) -> Result<TargetResult, ThresholdError>
where
    F: FnMut(&[usize]) -> Result<f64, String>,
{
    check_fraction("the target reduction", target)?;
    let ratio = |i: usize| i as f64 / 1000.0;
    let mut eval = |i: usize| -> Result<f64, ThresholdError> {
        reduction(&uniform_counts(units, ratio(i), options)?).map_err(ThresholdError::Cost)
    };
    let (i, achieved) = search(1000, target, &mut eval)?;
    Ok(TargetResult {
        setting: ratio(i),
        counts: uniform_counts(units, ratio(i), options)?,
        achieved,
    })
}

/// The units to remove from one layer: the `count` lowest-scoring units by `ranking` (any
/// criterion's scores, higher = more important; ties by unit index), sorted by index. With
/// the U-Scores as ranking this is FAIR-Pruner's removal set; with, say, L1 norms it is
/// "ToD counts + L1 ranking".
pub fn lowest(ranking: &[f64], count: usize) -> Vec<usize> {
    let mut chosen: Vec<usize> = stable_argsort(ranking).into_iter().take(count).collect();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, computed directly in O(n²) as an independent check.
    fn tod_direct(u: &[f64], r: &[f64], m: usize) -> f64 {
        let mut low: Vec<usize> = (0..u.len()).collect();
        low.sort_by(|&a, &b| u[a].total_cmp(&u[b]).then(a.cmp(&b)));
        let mut asc: Vec<usize> = (0..r.len()).collect();
        asc.sort_by(|&a, &b| r[a].total_cmp(&r[b]).then(a.cmp(&b)));
        let high = &asc[r.len() - m..];
        low[..m].iter().filter(|i| high.contains(i)).count() as f64 / m as f64
    }

    #[test]
    fn curve_equals_the_definition() {
        let u = [0.3, 0.1, 0.7, 0.2, 0.9, 0.4, 0.05, 0.6, 0.2];
        let r = [1.0, 5.0, 0.2, 0.1, 3.0, 0.3, 4.0, 0.0, 0.3];
        let c = TodCurve::new("l", &u, &r).unwrap();
        for m in 1..=u.len() {
            assert!(
                (c.tod()[m - 1] - tod_direct(&u, &r, m)).abs() < 1e-15,
                "m = {m}"
            );
        }
        assert_eq!(
            c.tod()[u.len() - 1],
            1.0,
            "all units are in both sets at m = n"
        );
    }

    #[test]
    fn count_respects_the_cap_and_alpha() {
        let n = 200;
        let u: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let c = TodCurve::new("l", &u, &u).unwrap(); // low U = low R: no conflict until the end
        assert_eq!(
            c.count_at(0.0).unwrap(),
            100,
            "ToD(m) = 0 exactly while m ≤ n/2"
        );
        assert_eq!(c.count_at(1.0).unwrap(), 198, "⌊0.99·200⌋");
        let anti: Vec<f64> = u.iter().map(|v| -v).collect();
        let c = TodCurve::new("l", &u, &anti).unwrap(); // lowest U = highest R: always conflict
        assert_eq!(c.count_at(0.5).unwrap(), 0);
        assert_eq!(c.count_at(1.5), Err(ThresholdError::Alpha(1.5)));
        assert!(matches!(
            TodCurve::new("x", &[1.0], &[1.0, 2.0]),
            Err(ThresholdError::LengthMismatch { u: 1, r: 2, .. })
        ));
        let e = TodCurve::new("conv3", &[1.0, f64::NAN], &[1.0, 2.0]).unwrap_err();
        assert_eq!(e.to_string(), "layer 'conv3': the U-Score of unit 1 is NaN");
    }

    #[test]
    fn options_keep_units_and_round() {
        let o = CountOptions {
            min_keep: 1,
            round_to: 8,
        };
        assert_eq!(o.apply(64, 60), 56, "4 kept → rounded up to 8");
        assert_eq!(o.apply(64, 64), 56, "at least one kept, rounded to 8");
        assert_eq!(o.apply(6, 2), 0, "kept 4 → 8 > 6 → capped at 6");
        assert_eq!(CountOptions::default().apply(10, 10), 9);
    }

    #[test]
    fn target_search_finds_the_smallest_alpha() {
        let u: Vec<f64> = (0..50).map(|i| ((i * 37) % 50) as f64).collect();
        let r: Vec<f64> = (0..50).map(|i| ((i * 11) % 50) as f64).collect();
        let a = TodCurve::new("a", &u, &r).unwrap();
        let b = TodCurve::new("b", &r, &u).unwrap();
        let curves = [a, b];
        // Toy cost model: fraction of units removed.
        let frac = |c: &[usize]| Ok::<f64, String>(c.iter().sum::<usize>() as f64 / 100.0);
        let t = alpha_for_target(&curves, CountOptions::default(), 0.3, frac).unwrap();
        assert!(t.achieved >= 0.3);
        // Any smaller candidate α falls short.
        for &alpha in candidate_alphas(&curves).iter().filter(|&&x| x < t.setting) {
            let c = counts_at(&curves, alpha, CountOptions::default()).unwrap();
            assert!(
                frac(&c).unwrap() < 0.3,
                "α = {alpha} already reaches the target"
            );
        }
        let e = alpha_for_target(&curves, CountOptions::default(), 0.995, frac).unwrap_err();
        assert!(matches!(e, ThresholdError::Unreachable { .. }), "{e}");
        let u = uniform_for_target(&[50, 50], CountOptions::default(), 0.3, frac).unwrap();
        assert_eq!(u.counts, vec![15, 15]);
        assert_eq!(u.setting, 0.3);
    }

    #[test]
    fn lowest_picks_by_any_ranking() {
        assert_eq!(lowest(&[5.0, 1.0, 3.0, 1.0], 2), vec![1, 3]);
        assert_eq!(lowest(&[5.0, 1.0, 3.0, 1.0], 0), Vec::<usize>::new());
    }
}

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
