//! Tolerance of Difference (ToD): FAIR-Pruner's rule for how many units to remove from one
//! layer, given each unit's U-Score (utilisation; low means "remove") and R-Score
//! (reconstruction; high means "protect").
//!
//! For a count m, `Rm(m)` is the m units with the lowest U and `Pm(m)` the m units with the
//! highest R; `ToD(m) = |Rm(m) ∩ Pm(m)| / m`. At tolerance α the layer's count is the largest
//! m ≤ ⌊0.99·n⌋ with ToD(m) ≤ α (0 if none).
//!
//! Status: the ToD curve and the count at α; target-driven α search, uniform baselines and
//! rounding options come with the scoring work.
//!
//! ```
//! // Unit 0 has the lowest U but the highest R: removing it conflicts with protecting it.
//! let u = [0.1, 0.5, 0.2, 0.9];
//! let r = [9.0, 1.0, 0.5, 2.0];
//! let curve = fair_threshold::tod_curve(&u, &r)?;
//! assert_eq!(curve, vec![1.0, 0.5, 1.0 / 3.0, 1.0]);
//! assert_eq!(fair_threshold::count_at(&curve, 0.4)?, 3); // ⌊0.99·4⌋ = 3
//! # Ok::<(), fair_threshold::ThresholdError>(())
//! ```

/// Errors of this crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ThresholdError {
    /// U and R have different lengths.
    #[error("U-Scores have {u} units but R-Scores have {r}: both must score the same units")]
    LengthMismatch {
        /// Number of U-Scores.
        u: usize,
        /// Number of R-Scores.
        r: usize,
    },
    /// A score is NaN.
    #[error("{which}-Score of unit {unit} is NaN")]
    NaN {
        /// "U" or "R".
        which: &'static str,
        /// The unit.
        unit: usize,
    },
    /// α is outside [0, 1].
    #[error("the tolerance α must be in [0, 1], found {0}")]
    Alpha(f64),
}

/// Unit indices ordered by `key` (ascending, ties by index: a stable order).
fn order(key: &[f64], descending: bool) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..key.len()).collect();
    idx.sort_by(|&a, &b| {
        let o = key[a].total_cmp(&key[b]);
        if descending { o.reverse() } else { o }
    });
    idx
}

/// `ToD(m)` for m = 1..=n (entry m − 1), in O(n log n): sort once, then grow both sets one
/// unit at a time and count the units that have entered both.
pub fn tod_curve(u: &[f64], r: &[f64]) -> Result<Vec<f64>, ThresholdError> {
    if u.len() != r.len() {
        return Err(ThresholdError::LengthMismatch {
            u: u.len(),
            r: r.len(),
        });
    }
    for (which, s) in [("U", u), ("R", r)] {
        if let Some(unit) = s.iter().position(|v| v.is_nan()) {
            return Err(ThresholdError::NaN { which, unit });
        }
    }
    let low_u = order(u, false);
    let high_r = order(r, true);
    let mut seen = vec![0u8; u.len()];
    let mut both = 0usize;
    let mut curve = Vec::with_capacity(u.len());
    for m in 0..u.len() {
        for unit in [low_u[m], high_r[m]] {
            seen[unit] += 1;
            if seen[unit] == 2 {
                both += 1;
            }
        }
        curve.push(both as f64 / (m + 1) as f64);
    }
    Ok(curve)
}

/// The count at tolerance `alpha`: the largest m ≤ ⌊0.99·n⌋ with `ToD(m) ≤ alpha`, else 0.
pub fn count_at(curve: &[f64], alpha: f64) -> Result<usize, ThresholdError> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(ThresholdError::Alpha(alpha));
    }
    let cap = (0.99 * curve.len() as f64).floor() as usize;
    Ok((1..=cap)
        .rev()
        .find(|&m| curve[m - 1] <= alpha)
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, computed directly in O(n²) as an independent check.
    fn tod_direct(u: &[f64], r: &[f64], m: usize) -> f64 {
        let low: Vec<usize> = order(u, false)[..m].to_vec();
        let high: Vec<usize> = order(r, true)[..m].to_vec();
        low.iter().filter(|i| high.contains(i)).count() as f64 / m as f64
    }

    #[test]
    fn curve_equals_the_definition() {
        let u = [0.3, 0.1, 0.7, 0.2, 0.9, 0.4, 0.05, 0.6];
        let r = [1.0, 5.0, 0.2, 0.1, 3.0, 0.3, 4.0, 0.0];
        let curve = tod_curve(&u, &r).unwrap();
        for m in 1..=u.len() {
            assert!(
                (curve[m - 1] - tod_direct(&u, &r, m)).abs() < 1e-15,
                "m = {m}"
            );
        }
        assert_eq!(
            curve[u.len() - 1],
            1.0,
            "all units are in both sets at m = n"
        );
    }

    #[test]
    fn count_respects_the_cap_and_alpha() {
        // n = 200: cap ⌊0.99·200⌋ = 198 even if ToD(200) = 1 would... it is never reached.
        let curve = vec![0.0; 200];
        assert_eq!(count_at(&curve, 0.0).unwrap(), 198);
        let curve = [1.0, 1.0, 1.0];
        assert_eq!(count_at(&curve, 0.5).unwrap(), 0);
        assert_eq!(count_at(&curve, 1.5), Err(ThresholdError::Alpha(1.5)));
        assert_eq!(
            tod_curve(&[1.0], &[1.0, 2.0]),
            Err(ThresholdError::LengthMismatch { u: 1, r: 2 })
        );
    }
}
