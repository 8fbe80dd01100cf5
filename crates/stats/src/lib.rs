//! Distances and order statistics behind FAIR-Pruner's U-Score, usable on their own.
//!
//! Status: this crate starts with the exact 1-D Wasserstein-1 distance; sliced Wasserstein,
//! quantile functions, ranks and overlap curves follow with the scoring work.
//!
//! ```
//! // Two empirical distributions of different sizes.
//! let a = [0.0, 1.0, 3.0];
//! let b = [5.0, 6.0];
//! let d = fair_stats::wasserstein_1d(&a, &b)?;
//! assert!((d - 25.0 / 6.0).abs() < 1e-12);
//! # Ok::<(), fair_stats::StatsError>(())
//! ```

/// Errors of this crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// A sample is empty.
    #[error("sample '{which}' is empty: a distance needs at least one value on each side")]
    Empty {
        /// Which argument ("a" or "b").
        which: &'static str,
    },
    /// A sample holds NaN or an infinity.
    #[error("sample '{which}' holds a non-finite value at index {index}")]
    NonFinite {
        /// Which argument ("a" or "b").
        which: &'static str,
        /// Position of the first bad value.
        index: usize,
    },
}

fn sorted(x: &[f64], which: &'static str) -> Result<Vec<f64>, StatsError> {
    if x.is_empty() {
        return Err(StatsError::Empty { which });
    }
    if let Some(index) = x.iter().position(|v| !v.is_finite()) {
        return Err(StatsError::NonFinite { which, index });
    }
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    Ok(v)
}

/// Exact Wasserstein-1 distance between the empirical distributions of two samples of any
/// sizes: the integral of |F_a − F_b| over the real line (equivalently, of the difference of
/// the quantile functions over (0, 1)), as `scipy.stats.wasserstein_distance`.
pub fn wasserstein_1d(a: &[f64], b: &[f64]) -> Result<f64, StatsError> {
    let a = sorted(a, "a")?;
    let b = sorted(b, "b")?;
    let (na, nb) = (a.len() as f64, b.len() as f64);
    // Sweep the merged values; between consecutive values both CDFs are constant.
    let (mut i, mut j) = (0, 0);
    let mut prev = a[0].min(b[0]);
    let mut total = 0.0;
    while i < a.len() || j < b.len() {
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => unreachable!(),
        };
        total += (i as f64 / na - j as f64 / nb).abs() * (next - prev);
        while i < a.len() && a[i] == next {
            i += 1;
        }
        while j < b.len() && b[j] == next {
            j += 1;
        }
        prev = next;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_distances() {
        // Point masses: |0 − 2| = 2.
        assert_eq!(wasserstein_1d(&[0.0], &[2.0]).unwrap(), 2.0);
        // Shift by c: W1 = |c|.
        assert!((wasserstein_1d(&[1.0, 2.0, 7.0], &[4.0, 5.0, 10.0]).unwrap() - 3.0).abs() < 1e-12);
        // {0, 1, 3} vs {5, 6}: CDF gaps 1/3 on [0,1), 2/3 on [1,3), 1 on [3,5), 1/2 on [5,6).
        let d = wasserstein_1d(&[0.0, 1.0, 3.0], &[5.0, 6.0]).unwrap();
        assert!(
            (d - (1.0 / 3.0 + 4.0 / 3.0 + 2.0 + 0.5)).abs() < 1e-12,
            "{d}"
        );
        assert_eq!(wasserstein_1d(&[3.0, 1.0], &[1.0, 3.0]).unwrap(), 0.0);
    }

    #[test]
    fn bad_samples_are_errors() {
        assert_eq!(
            wasserstein_1d(&[], &[1.0]),
            Err(StatsError::Empty { which: "a" })
        );
        assert_eq!(
            wasserstein_1d(&[1.0], &[0.0, f64::NAN]),
            Err(StatsError::NonFinite {
                which: "b",
                index: 1
            })
        );
    }
}
