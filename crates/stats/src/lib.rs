//! Distances and order statistics behind FAIR-Pruner's U-Score and Tolerance of Difference,
//! usable on their own (no libtorch):
//!
//! - [`wasserstein_1d`]: exact Wasserstein-1 between two samples of any sizes (equal to
//!   `scipy.stats.wasserstein_distance`), and [`wasserstein_1d_sorted`] for pre-sorted data;
//! - [`wasserstein_1d_quantile_grid`]: the authors' package variant for unequal sizes
//!   (quantiles at max(n, m) evenly spaced levels), kept for parity runs;
//! - [`sliced_wasserstein`]: the mean 1-D W1 over seeded random unit directions
//!   ([`random_directions`]) between two point clouds in R^d;
//! - [`quantile_sorted`] / [`quantile`]: empirical quantiles with linear interpolation (NumPy's
//!   and `torch.quantile`'s default);
//! - [`stable_argsort`] and [`overlap_curve`]: ranks and |bottom-k ∩ top-k| for k = 1..n;
//! - [`max_pair_distance`]: the largest sliced distance over all pairs of classes (a unit's
//!   U-Score), by every pair or by a bounded search that returns the same `f64` bit for bit
//!   ([`PairSearch`]);
//! - [`certified`]: the same maximum from 16-bit codes of the summaries, every pair compared
//!   in exact integer arithmetic, with a computed bound on its distance to the exact one;
//! - [`ColumnSorter`]: many short samples sorted at once (the columns of a sample-major
//!   matrix, as a projection comes out of its matrix product), bit for bit as
//!   `sort_by(f32::total_cmp)` per sample.
//!
//! ```
//! use ndarray::array;
//! // Exact 1-D distance between samples of different sizes.
//! let d = fair_stats::wasserstein_1d(&[0.0, 1.0, 3.0], &[5.0, 6.0])?;
//! assert!((d - 25.0 / 6.0).abs() < 1e-12);
//!
//! // Sliced distance between two clouds in R², 64 seeded directions. A translation by t
//! // moves every projection by ⟨t, θ⟩, so the distance is the mean |⟨t, θ⟩|.
//! let x = array![[0.0f32, 0.0], [1.0, 0.0], [0.0, 1.0]];
//! let y = &x + &array![[2.0f32, 0.0]];
//! let dirs = fair_stats::random_directions(2, 64, 7);
//! let s = fair_stats::sliced_wasserstein(x.view(), y.view(), dirs.view(), fair_stats::W1::Exact)?;
//! assert!(s > 0.0 && s <= 2.0);
//! # Ok::<(), fair_stats::StatsError>(())
//! ```

use ndarray::{Array2, ArrayView2};

pub mod certified;
pub mod columns;
pub mod pairs;
pub use columns::ColumnSorter;
pub use pairs::{PairFallback, PairMax, PairSearch, ParsePairSearchError, max_pair_distance};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// Errors of this crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
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
    /// A quantile level outside [0, 1].
    #[error("quantile level {0} is outside [0, 1]")]
    Level(f64),
    /// Point clouds and directions disagree on the dimension.
    #[error(
        "dimension mismatch: the clouds have {x} and {y} columns and the directions {directions} rows"
    )]
    Dimension {
        /// Columns of x.
        x: usize,
        /// Columns of y.
        y: usize,
        /// Rows of the direction matrix.
        directions: usize,
    },
}

/// Which 1-D Wasserstein-1 to use between samples of unequal sizes (with equal sizes both are
/// exact and agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum W1 {
    /// Exact: ∫ |F_a − F_b| (SciPy's `wasserstein_distance`).
    #[default]
    Exact,
    /// The authors' package: mean |Q_a(q) − Q_b(q)| over q at max(n, m) evenly spaced levels
    /// in [0, 1], with linearly interpolated quantiles Q.
    QuantileGrid,
}

fn checked_sorted(x: &[f64], which: &'static str) -> Result<Vec<f64>, StatsError> {
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
/// sizes: ∫ |F_a − F_b| over the real line (equivalently ∫₀¹ |Q_a − Q_b|), as
/// `scipy.stats.wasserstein_distance`. Samples need not be sorted; NaN and infinities are
/// errors.
pub fn wasserstein_1d(a: &[f64], b: &[f64]) -> Result<f64, StatsError> {
    let a = checked_sorted(a, "a")?;
    let b = checked_sorted(b, "b")?;
    Ok(wasserstein_1d_sorted(&a, &b))
}

/// Σ |a_i − b_i| in f64 over equal-length slices, in eight interleaved partial sums (added
/// pairwise at the end) so that the additions do not wait on each other and vectorise; the
/// result differs from a left-to-right sum only by rounding.
fn sum_abs_differences<T: Copy + Into<f64>>(a: &[T], b: &[T]) -> f64 {
    const LANES: usize = 8;
    let mut acc = [0.0f64; LANES];
    let (a8, b8) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (a8.remainder(), b8.remainder());
    for (x, y) in a8.zip(b8) {
        for k in 0..LANES {
            acc[k] += (x[k].into() - y[k].into()).abs();
        }
    }
    for (k, (&x, &y)) in ra.iter().zip(rb).enumerate() {
        acc[k] += (x.into() - y.into()).abs();
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// [`wasserstein_1d`] for samples already sorted ascending (not checked), without allocating.
/// Equal sizes take the O(n) shortcut mean |a_i − b_i|.
pub fn wasserstein_1d_sorted<T: Copy + Into<f64>>(a: &[T], b: &[T]) -> f64 {
    let (na, nb) = (a.len(), b.len());
    assert!(
        na > 0 && nb > 0,
        "wasserstein_1d_sorted needs non-empty samples"
    );
    if na == nb {
        return sum_abs_differences(a, b) / na as f64;
    }
    // Sweep the merged values; between consecutive values both CDFs are constant.
    let (fa, fb) = (na as f64, nb as f64);
    let (mut i, mut j) = (0, 0);
    let mut prev = a[0].into().min(b[0].into());
    let mut total = 0.0;
    while i < na || j < nb {
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.into().min(y.into()),
            (Some(&x), None) => x.into(),
            (None, Some(&y)) => y.into(),
            (None, None) => unreachable!("the loop condition"),
        };
        total += (i as f64 / fa - j as f64 / fb).abs() * (next - prev);
        while i < na && a[i].into() == next {
            i += 1;
        }
        while j < nb && b[j].into() == next {
            j += 1;
        }
        prev = next;
    }
    total
}

/// Quantile of a sorted sample at level `q` ∈ [0, 1] with linear interpolation between order
/// statistics (position q·(n − 1)), as NumPy's default and `torch.quantile`.
pub fn quantile_sorted<T: Copy + Into<f64>>(sorted: &[T], q: f64) -> f64 {
    let h = q * (sorted.len() - 1) as f64;
    let lo = h.floor() as usize;
    let x = sorted[lo].into();
    match sorted.get(lo + 1) {
        Some(&next) => x + (h - lo as f64) * (next.into() - x),
        None => x,
    }
}

/// [`quantile_sorted`] of an unsorted sample (checked).
pub fn quantile(sample: &[f64], q: f64) -> Result<f64, StatsError> {
    if !(0.0..=1.0).contains(&q) {
        return Err(StatsError::Level(q));
    }
    Ok(quantile_sorted(&checked_sorted(sample, "a")?, q))
}

/// The authors' package variant of W1 ([`W1::QuantileGrid`]) on sorted samples. With equal
/// sizes it equals the exact distance.
pub fn wasserstein_1d_quantile_grid<T: Copy + Into<f64>>(a: &[T], b: &[T]) -> f64 {
    let n = a.len().max(b.len());
    if a.len() == b.len() {
        return wasserstein_1d_sorted(a, b);
    }
    let step = if n > 1 { 1.0 / (n - 1) as f64 } else { 0.0 };
    let s: f64 = (0..n)
        .map(|i| {
            let q = (i as f64 * step).min(1.0);
            (quantile_sorted(a, q) - quantile_sorted(b, q)).abs()
        })
        .sum();
    s / n as f64
}

/// W1 of two sorted samples by `method`.
pub fn wasserstein_1d_sorted_by<T: Copy + Into<f64>>(a: &[T], b: &[T], method: W1) -> f64 {
    match method {
        W1::Exact => wasserstein_1d_sorted(a, b),
        W1::QuantileGrid => wasserstein_1d_quantile_grid(a, b),
    }
}

/// `count` random unit directions in R^`dim` as the columns of a `[dim, count]` matrix:
/// standard normal vectors normalised to length 1 (uniform on the sphere), from a seeded
/// generator — the same seed gives the same directions.
pub fn random_directions(dim: usize, count: usize, seed: u64) -> Array2<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut m = Array2::<f32>::zeros((dim, count));
    for mut col in m.columns_mut() {
        loop {
            col.mapv_inplace(|_| {
                let v: f64 = StandardNormal.sample(&mut rng);
                v as f32
            });
            let norm = col
                .iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
                .sqrt();
            if norm > 1e-12 {
                col.mapv_inplace(|v| (f64::from(v) / norm) as f32);
                break;
            }
        }
    }
    m
}

/// Projects the rows of `x` (`[n, d]`) onto each direction (columns of `[d, P]`) and sorts
/// every projection: the result is `[P, n]`, row p the sorted projections on direction p.
pub fn project_sorted(x: ArrayView2<f32>, directions: ArrayView2<f32>) -> Array2<f32> {
    // The [n, P] product is sample-major: projection p is its column p.
    let product = x.dot(&directions);
    let (n, count) = product.dim();
    let product = product.as_standard_layout(); // no copy when it already is
    let values = product
        .as_slice()
        .expect("a standard-layout array is contiguous");
    Array2::from_shape_vec((count, n), ColumnSorter::new(n).sorted(values))
        .expect("one sorted row per projection")
}

/// Mean over rows of the 1-D W1 between matching rows of two `[P, n]` and `[P, m]` matrices
/// of sorted samples (as returned by [`project_sorted`]).
pub fn sliced_from_sorted(a: ArrayView2<f32>, b: ArrayView2<f32>, method: W1) -> f64 {
    pairs::sliced_rows(a, b, method, |_, _| true).expect("never stopped")
}

/// Sliced Wasserstein-1 distance between point clouds `x` (`[n, d]`) and `y` (`[m, d]`): the
/// mean over the given unit directions (`[d, P]`) of the 1-D W1 of the projected samples.
pub fn sliced_wasserstein(
    x: ArrayView2<f32>,
    y: ArrayView2<f32>,
    directions: ArrayView2<f32>,
    method: W1,
) -> Result<f64, StatsError> {
    let d = directions.nrows();
    if x.ncols() != d || y.ncols() != d {
        return Err(StatsError::Dimension {
            x: x.ncols(),
            y: y.ncols(),
            directions: d,
        });
    }
    for (which, m) in [("a", x.view()), ("b", y.view())] {
        if m.nrows() == 0 {
            return Err(StatsError::Empty { which });
        }
        if let Some(index) = m.iter().position(|v| !v.is_finite()) {
            return Err(StatsError::NonFinite { which, index });
        }
    }
    Ok(sliced_from_sorted(
        project_sorted(x, directions).view(),
        project_sorted(y, directions).view(),
        method,
    ))
}

/// Indices that sort `x` ascending; equal values keep their index order (stable). NaN sorts
/// after every number.
pub fn stable_argsort(x: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    idx
}

/// For k = 1..=n, the size of the intersection of the first k entries of two orderings of
/// the same n units (entry k − 1), in O(n): both prefixes grow by one unit per step and a
/// unit counts once it has entered both. Panics if the orderings are not permutations of
/// `0..n` of equal length.
pub fn overlap_curve(first: &[usize], second: &[usize]) -> Vec<usize> {
    assert_eq!(first.len(), second.len(), "orderings of the same units");
    let mut seen = vec![0u8; first.len()];
    let mut both = 0;
    first
        .iter()
        .zip(second)
        .map(|(&a, &b)| {
            for unit in [a, b] {
                seen[unit] += 1;
                if seen[unit] == 2 {
                    both += 1;
                }
            }
            both
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_distances() {
        assert_eq!(wasserstein_1d(&[0.0], &[2.0]).unwrap(), 2.0);
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
        assert_eq!(quantile(&[1.0], 1.5), Err(StatsError::Level(1.5)));
    }

    #[test]
    fn quantiles_interpolate_linearly() {
        let s = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(quantile_sorted(&s, 0.0), 1.0);
        assert_eq!(quantile_sorted(&s, 1.0), 8.0);
        // Position 0.5·3 = 1.5: halfway between 2 and 4.
        assert_eq!(quantile_sorted(&s, 0.5), 3.0);
        assert_eq!(quantile_sorted(&[5.0], 0.3), 5.0);
    }

    #[test]
    fn directions_are_seeded_unit_vectors() {
        let a = random_directions(5, 16, 1);
        assert_eq!(a, random_directions(5, 16, 1));
        assert_ne!(a, random_directions(5, 16, 2));
        for col in a.columns() {
            let n: f32 = col.iter().map(|v| v * v).sum();
            assert!((n - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn overlap_counts_shared_prefix_units() {
        assert_eq!(
            overlap_curve(&[0, 1, 2, 3], &[3, 1, 0, 2]),
            vec![0, 1, 2, 4]
        );
        assert_eq!(stable_argsort(&[2.0, 1.0, 2.0, 0.5]), vec![3, 1, 0, 2]);
    }
}

/// A stratified draw: per class, the chosen sample indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StratifiedDraw {
    /// (class, chosen indices ascending), ascending by class.
    pub classes: Vec<(i64, Vec<usize>)>,
    /// Classes with fewer samples than asked for: (class, how many it has).
    pub short: Vec<(i64, usize)>,
}

/// Up to this many short classes get a note each in [`StratifiedDraw::short_notes`]; more
/// share one note.
pub const SHORT_CLASS_NOTES: usize = 5;

impl StratifiedDraw {
    /// Notes about the classes with fewer samples than `per_class`: one per class
    /// (`class 3 (cat) has 2 calibration sample(s), fewer than the 32 asked for`), or, with
    /// more than [`SHORT_CLASS_NOTES`] such classes, one note for all of them naming the
    /// first few, so that a draw over a thousand classes does not print a thousand lines.
    /// `name` describes a class (`"3 (cat)"`), `what` the samples (`"calibration"`).
    ///
    /// ```
    /// let labels: Vec<i64> = (0..10).flat_map(|c| std::iter::repeat(c).take(2)).collect();
    /// let draw = fair_stats::stratified_sample(&labels, 3, 10, 0);
    /// let notes = draw.short_notes(3, |c| c.to_string(), "training");
    /// assert_eq!(notes.len(), 1);
    /// assert!(notes[0].starts_with("10 of 10 classes have fewer training samples than the 3"));
    /// ```
    pub fn short_notes(
        &self,
        per_class: usize,
        name: impl Fn(i64) -> String,
        what: &str,
    ) -> Vec<String> {
        if self.short.len() <= SHORT_CLASS_NOTES {
            return self
                .short
                .iter()
                .map(|&(c, n)| {
                    format!(
                        "class {} has {n} {what} sample(s), fewer than the {per_class} asked for",
                        name(c)
                    )
                })
                .collect();
        }
        let named: Vec<String> = self
            .short
            .iter()
            .take(SHORT_CLASS_NOTES)
            .map(|&(c, n)| format!("class {}: {n}", name(c)))
            .collect();
        let fewest = self.short.iter().map(|&(_, n)| n).min().unwrap_or(0);
        vec![format!(
            "{} of {} classes have fewer {what} samples than the {per_class} asked for (as few \
             as {fewest}; {}, ...)",
            self.short.len(),
            self.classes.len(),
            named.join(", ")
        )]
    }
}

/// Draws up to `per_class` sample indices of each class, from at most `max_classes` classes,
/// with `seed`: the one sampling rule behind calibration draws and the U-Score's class
/// choice. `labels[i]` is sample i's class. When there are more classes than `max_classes`,
/// the classes are chosen at random (seeded); within a class with more than `per_class`
/// samples, the samples are; a class with fewer keeps all it has and is reported in
/// [`StratifiedDraw::short`]. The same inputs give the same draw.
///
/// ```
/// let labels = [0, 1, 0, 1, 0, 2];
/// let d = fair_stats::stratified_sample(&labels, 2, 10, 7);
/// assert_eq!(d.classes.len(), 3);
/// assert_eq!(d.classes[0].1.len(), 2); // two of the three class-0 samples
/// assert_eq!(d.short, vec![(2, 1)]); // class 2 has only one
/// ```
pub fn stratified_sample(
    labels: &[i64],
    per_class: usize,
    max_classes: usize,
    seed: u64,
) -> StratifiedDraw {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut by_class: std::collections::BTreeMap<i64, Vec<usize>> = Default::default();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let mut classes: Vec<i64> = by_class.keys().copied().collect();
    if classes.len() > max_classes {
        classes.shuffle(&mut rng);
        classes.truncate(max_classes);
        classes.sort_unstable();
    }
    let mut short = Vec::new();
    let classes = classes
        .into_iter()
        .map(|c| {
            let mut idx = by_class.remove(&c).unwrap_or_default();
            if idx.len() > per_class {
                idx.shuffle(&mut rng);
                idx.truncate(per_class);
                idx.sort_unstable();
            } else if idx.len() < per_class {
                short.push((c, idx.len()));
            }
            (c, idx)
        })
        .collect();
    StratifiedDraw { classes, short }
}

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
