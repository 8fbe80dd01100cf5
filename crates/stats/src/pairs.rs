//! The largest sliced distance over all pairs of classes (the U-Score of one unit), either by
//! evaluating every pair or by a bounded search that returns the same `f64`, bit for bit,
//! while evaluating few pairs in full.
//!
//! # The bounded search
//!
//! Every class is a `[P, n]` matrix; the distance of a pair is [`crate::sliced_from_sorted`],
//! with equal sizes `v(a, b) = (1/P) Σ_r w_r(a, b)`, `w_r = (1/n) Σ_i |a_ri − b_ri|`. From
//! the triangle inequality on each coordinate, for any centres `c_a`, `c_b`,
//! `|a_i − b_i| ≤ |a_i − c_a| + |c_a − c_b| + |c_b − b_i|`, for any data (sorted or not).
//! The search keeps two sketches of every class:
//!
//! - per row, its middle element `c_r`, `d_r = (1/n) Σ_i |a_ri − c_r|` and its mean; summed
//!   over the row, the inequality gives `w_r(a, b) ≤ |c_ar − c_br| + d_ar + d_br`, and
//!   through a reference centre `z_r` (the median of the classes' `c_r`) the O(1) bound
//!   `P v(a, b) ≤ R_a + R_b` with the radius `R_a = Σ_r |c_ar − z_r| + d_ar`;
//! - per block of `s` consecutive values of a row (s = 4 when n ≥ 16 and 4 divides n, else
//!   s = 2 when n is even and at least 4, else s = 1), its middle element `c_rj` and
//!   `e_rj = Σ_{i in block j} |a_ri − c_rj|`; summed over the block,
//!   `n w_r(a, b) ≤ Σ_j s |c_arj − c_brj| + e_arj + e_brj =: n u_r(a, b)` (P·n/s operations,
//!   and tight when the quantile functions are smooth on the scale of a block).
//!
//! The search
//!
//! 1. evaluates a few promising pairs in full to get a first best (the class with the
//!    largest `R`, its partner with the largest mean difference `Σ_r |mean_ar − mean_br|` — a
//!    lower bound of the distance — and that partner's own farthest class by the same
//!    measure);
//! 2. visits pairs in decreasing `R_a + R_b` (by tiles of 16 classes, so that a tile stays
//!    in cache while the other classes stream through) and stops a
//!    row of pairs as soon as that O(1) bound falls below the best; for the others it
//!    computes the row-level bound `Σ_r |c_ar − c_br| + d_ar + d_br` (P operations), then
//!    the block bound `Σ_r u_r` and its suffix sums over groups of sixteen rows, and skips the
//!    pair as soon as a bound falls below the best;
//! 3. sends the other pairs through a screening pass: the sum of the same |a_ri − b_ri|,
//!    per group of sixteen rows in sixteen independent `f32` accumulators (vectorisable, unlike
//!    the kernel's single ordered `f64` sum) added into an `f64` total, which before each
//!    group stops if its partial sum plus `Σ_{r ≥ t} u_r` falls below the best, and at the
//!    end drops the pair if its total does. A pair the screen does not drop is evaluated by
//!    the very same code as [`crate::sliced_from_sorted`] (shared kernel, same summation
//!    order) and compared as in the all-pairs loop.
//!
//! # Why the result is bit-identical
//!
//! The all-pairs result is the largest computed distance `v̂` over all pairs (starting from
//! 0). The bounded search computes the distances it evaluates with the same kernel, so they
//! are the same `f64`s, and it skips a pair only when `v̂` of that pair is provably strictly
//! below a distance it has computed: the pair with the largest `v̂` is therefore never
//! skipped, and both searches return its `v̂`.
//!
//! The bounds and the screen are computed in floating point, so a pair is skipped only when
//! `fl(B · (1 + δ)) < fl(best · P)`, where `B` is a computed bound or screen value (in
//! sum-over-rows units: P times a distance) and
//!
//! ```text
//! δ = 8 (n + P + 16) ε₆₄ + 8 (n + 8) ε₃₂,   ε₆₄ = 2⁻⁵², ε₃₂ = 2⁻²³ (the EPSILONs).
//! ```
//!
//! Why this suffices, with `u = 2⁻⁵³` and `w = 2⁻²⁴` the unit roundoffs: every quantity is
//! a sum of non-negative terms computed from finite `f32` inputs. In `f64` nothing
//! underflows or overflows (nonzero differences are at least 2⁻¹⁴⁹, magnitudes at most
//! 2¹²⁹·P·n); in `f32` a difference or sum that lands in the subnormal range is exact, and
//! one that overflows gives +∞, which never skips. So every operation has relative error at
//! most `u` (`w` in `f32`), and a sum of non-negative terms computed along chains of at most
//! `m` roundings lies within `(1 ± u)^m` of the exact sum. The kernel's chains have
//! `m ≤ n + P + 2`, so `v̂ ≤ v (1 + u)^(n + P + 2)` for the exact distance `v`. Every bound
//! `B` has an exact value of at least `P v` and is computed with at most `n + 2P + 8` `f64`
//! roundings (the row-level bound and the radius: deviations `n + 1`, their sum over rows
//! `+ P`, the centres' distances `≤ P / 4 + 4`; the block bound and the screen: converting
//! their `f32` group sums, the division by n and the sum over groups `≤ P / 16 + 3`) and at
//! most `n + 7` `f32` roundings (per group of sixteen rows a lane adds at most n terms of at
//! most three roundings each, then four halving levels; the blocks' deviations are rounded
//! up from `f64`, and `s` is a power of two, so `s |c_a − c_b|` is exact). Hence
//! `P v̂ ≤ B (1 + u)^(2n + 3P + 10) (1 + w)^(n + 7)` up to second-order terms, and
//! the two roundings of the comparison add `(1 + u)²`. As long as `(n + P) u` and `n w` are
//! small (the search falls back to all pairs when `n > 2¹⁶` or `P n ≥ 2⁴⁰`),
//! `(1 + x)^m ≤ 1 + 1.01 m x`, and `1 + δ = 1 + 16 (n + P + 16) u + 16 (n + 8) w` exceeds
//! the needed factor several times over: `fl(B (1 + δ)) < fl(best P)` implies `v̂ < best`.
//!
//! # Fallbacks
//!
//! The bounds are stated for equal sizes, where the exact W1 and the package's quantile-grid
//! W1 ([`W1::QuantileGrid`]) are the same function (the quantile grid of equal-size samples
//! *is* the mean absolute difference; the kernel calls the same code), so both methods are
//! searched exactly. When the classes' matrices differ in shape (unequal class sizes, or a
//! different P), when a matrix is empty or has more than [`MAX_SAMPLES`] columns, or when it
//! holds a non-finite value, the bounded search evaluates all pairs and says so in
//! [`PairMax::fallback`].

use ndarray::{ArrayView2, Axis};

use crate::{W1, wasserstein_1d_sorted_by};

/// How the maximum over class pairs is searched. The names are `all` and `bounded`
/// ([`std::str::FromStr`] and [`std::fmt::Display`] use them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PairSearch {
    /// Every pair in full (the reference path, `all`).
    All,
    /// The bounded search (`bounded`, the default): the same `f64` as [`PairSearch::All`], bit
    /// for bit, skipping pairs whose distance provably stays below the best one found.
    #[default]
    Bounded,
}

impl PairSearch {
    /// Every variant, in the order of [`PairSearch::NAMES`].
    pub const VARIANTS: [PairSearch; 2] = [PairSearch::All, PairSearch::Bounded];
    /// The names, as parsed and displayed: `all`, `bounded`.
    pub const NAMES: [&'static str; 2] = ["all", "bounded"];

    /// The name of this search (`all` or `bounded`).
    pub fn name(self) -> &'static str {
        match self {
            PairSearch::All => "all",
            PairSearch::Bounded => "bounded",
        }
    }
}

impl std::fmt::Display for PairSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A pair-search name that is neither `all` nor `bounded`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pair search '{0}': expected 'all' or 'bounded'")]
pub struct ParsePairSearchError(pub String);

impl std::str::FromStr for PairSearch {
    type Err = ParsePairSearchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PairSearch::VARIANTS
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| ParsePairSearchError(s.to_string()))
    }
}

/// Why a [`PairSearch::Bounded`] search evaluated all pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PairFallback {
    /// The classes' matrices differ in shape (unequal class sizes or numbers of rows), are
    /// empty, or have more than [`MAX_SAMPLES`] columns: the bounds are stated for equal
    /// sizes only, and the margin for rows of at most [`MAX_SAMPLES`] values.
    UnequalShapes,
    /// A class holds NaN or an infinity: the bounds need finite values.
    NonFinite,
}

impl std::fmt::Display for PairFallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PairFallback::UnequalShapes => write!(
                f,
                "the classes differ in size (or are empty, hold more than {MAX_SAMPLES} samples, \
                 or have 2^40 or more values per class)"
            ),
            PairFallback::NonFinite => f.write_str("a class holds non-finite values"),
        }
    }
}

/// The result of [`max_pair_distance`] and what it cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairMax {
    /// The largest distance over all pairs (0 with fewer than two classes).
    pub value: f64,
    /// Pairs of classes: K (K − 1) / 2.
    pub pairs_total: u64,
    /// Pairs whose distance was computed in full.
    pub pairs_evaluated: u64,
    /// Pairs that went through the screening pass (a vectorisable sum of the same
    /// differences, stopped early once its partial sum plus the bound of the remaining rows
    /// falls below the best); only those it cannot rule out are evaluated in full.
    pub pairs_screened: u64,
    /// Pairs whose per-row bound (P operations) was computed; the others were skipped by
    /// the O(1) bound or never reached.
    pub pairs_bounded: u64,
    /// Set when a bounded search evaluated all pairs, and why.
    pub fallback: Option<PairFallback>,
}

impl PairMax {
    /// The fraction of pairs computed in full (1 for [`PairSearch::All`]).
    pub fn fraction_evaluated(&self) -> f64 {
        if self.pairs_total == 0 {
            0.0
        } else {
            self.pairs_evaluated as f64 / self.pairs_total as f64
        }
    }
}

/// The shared kernel of [`crate::sliced_from_sorted`] and the bounded search: the mean over
/// rows of the 1-D W1 of matching rows, summed in row order. Before row `t` it asks
/// `go_on(t, partial sum of the rows before t)`, and stops with `None` on `false`.
pub(crate) fn sliced_rows(
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    method: W1,
    mut go_on: impl FnMut(usize, f64) -> bool,
) -> Option<f64> {
    let rows = a.len_of(Axis(0));
    let mut total = 0.0f64;
    for (t, (ra, rb)) in a.rows().into_iter().zip(b.rows()).enumerate() {
        if !go_on(t, total) {
            return None;
        }
        total += match (ra.to_slice(), rb.to_slice()) {
            (Some(sa), Some(sb)) => wasserstein_1d_sorted_by(sa, sb, method),
            _ => wasserstein_1d_sorted_by(&ra.to_vec(), &rb.to_vec(), method),
        };
    }
    Some(total / rows as f64)
}

/// The distance of pair `(a, b)`, `a < b`, exactly as the all-pairs loop computes it.
fn full(classes: &[ArrayView2<f32>], a: usize, b: usize, method: W1) -> f64 {
    let (lo, hi) = (a.min(b), a.max(b));
    sliced_rows(classes[lo], classes[hi], method, |_, _| true).expect("never stopped")
}

/// The largest sliced distance ([`crate::sliced_from_sorted`]) over all pairs of `classes`
/// (each a `[P, n]` matrix of sorted rows, as from [`crate::project_sorted`]), by `search`.
///
/// [`PairSearch::All`] evaluates pairs (a, b), a < b, in order and keeps the largest, from
/// 0. [`PairSearch::Bounded`] returns the same `f64`, bit for bit, evaluating only pairs that
/// may beat the best found so far; see the [module documentation](self) for the bounds, the
/// floating-point margin, and the cases (unequal shapes, non-finite values) in which it
/// falls back to all pairs.
///
/// ```
/// use fair_stats::{PairSearch, W1, max_pair_distance};
/// use ndarray::array;
/// let classes = [
///     array![[0.0f32, 1.0], [0.0, 2.0]],
///     array![[0.5f32, 1.0], [0.0, 2.5]],
///     array![[4.0f32, 5.0], [3.0, 3.0]],
/// ];
/// let views: Vec<_> = classes.iter().map(|c| c.view()).collect();
/// let all = max_pair_distance(&views, W1::Exact, PairSearch::All);
/// let bounded = max_pair_distance(&views, W1::Exact, PairSearch::Bounded);
/// // Pair (0, 2): rows |0−4|,|1−5| → 4 and |0−3|,|2−3| → 2, mean 3.
/// assert_eq!(all.value, 3.0);
/// assert_eq!(bounded.value.to_bits(), all.value.to_bits());
/// assert_eq!(all.pairs_evaluated, 3);
/// ```
pub fn max_pair_distance(classes: &[ArrayView2<f32>], method: W1, search: PairSearch) -> PairMax {
    let k = classes.len();
    let pairs_total = (k as u64) * (k.saturating_sub(1) as u64) / 2;
    let all = |fallback| {
        let mut best = 0.0f64;
        for a in 0..k {
            for b in a + 1..k {
                best = best.max(full(classes, a, b, method));
            }
        }
        PairMax {
            value: best,
            pairs_total,
            pairs_evaluated: pairs_total,
            pairs_screened: 0,
            pairs_bounded: 0,
            fallback,
        }
    };
    if search == PairSearch::All || k < 2 {
        return all(None);
    }
    let (p, n) = classes[0].dim();
    if p == 0
        || n == 0
        || n > MAX_SAMPLES
        || p.saturating_mul(n) as u64 >= 1u64 << 40
        || classes.iter().any(|c| c.dim() != (p, n))
    {
        return all(Some(PairFallback::UnequalShapes));
    }
    match Sketch::new(classes) {
        Some(sketch) => bounded(classes, &sketch, method, pairs_total),
        None => all(Some(PairFallback::NonFinite)),
    }
}

/// The two sketches of every class (see the module documentation): per block of a row, its
/// centre and deviation; per row, its mean; per class, its radius.
struct Sketch {
    p: usize,
    n: usize,
    /// Values per block of a row: 4 when that divides n and n ≥ 16, else 2 when n is even
    /// and at least 4, else 1.
    block: usize,
    /// `[K, P, n / block]`: each block's middle element.
    centre: Vec<f32>,
    /// `[K, P, n / block]`: Σ |x_i − centre| over the block, rounded up to `f32`.
    dev: Vec<f32>,
    /// `[K, P]`: each row's middle element.
    row_centre: Vec<f32>,
    /// `[K]`: Σ_r (1/n) Σ_i |x_ri − row_centre_r|.
    row_dev: Vec<f64>,
    /// `[K, P]`: each row's mean.
    mean: Vec<f64>,
    /// `[K]`: Σ_r |centre_r − z_r| + dev_r, z_r the median of the classes' centres.
    radius: Vec<f64>,
    /// 1 + δ, the floating-point margin.
    scale: f64,
}

impl Sketch {
    /// `None` if a value is not finite.
    fn new(classes: &[ArrayView2<f32>]) -> Option<Sketch> {
        let (p, n) = classes[0].dim();
        let k = classes.len();
        // Measured on class-structured data (examples/pair_search.rs): blocks of 4 at
        // n = 32, of 2 at n = 8. A power of two, so that s·|c_a − c_b| is exact in f32.
        let block = [4, 2]
            .into_iter()
            .find(|&b| n % b == 0 && n >= 4 * b)
            .unwrap_or(if n % 2 == 0 && n >= 4 { 2 } else { 1 });
        let (mut centre, mut dev, mut mean) = (
            Vec::with_capacity(k * p * (n / block)),
            Vec::with_capacity(k * p * (n / block)),
            Vec::with_capacity(k * p),
        );
        // Per row, for the radius: the middle element and Σ_r (1/n) Σ_i |x_i − middle|.
        let (mut row_centre, mut row_dev) = (Vec::with_capacity(k * p), vec![0.0f64; k]);
        for (c, rd) in classes.iter().zip(&mut row_dev) {
            for row in c.rows() {
                if row.iter().any(|v| !v.is_finite()) {
                    return None;
                }
                let mid = row[n / 2];
                let (mut d, mut s) = (0.0f64, 0.0f64);
                for &v in row {
                    d += (f64::from(v) - f64::from(mid)).abs();
                    s += f64::from(v);
                }
                row_centre.push(mid);
                *rd += d / n as f64;
                mean.push(s / n as f64);
                let values: Vec<f32> = row.to_vec();
                for chunk in values.chunks_exact(block) {
                    let mid = chunk[block / 2];
                    let d: f64 = chunk
                        .iter()
                        .map(|&v| (f64::from(v) - f64::from(mid)).abs())
                        .sum();
                    // Rounded up, so that the f32 is at least the f64 sum.
                    let mut up = d as f32;
                    if f64::from(up) < d {
                        up = up.next_up();
                    }
                    centre.push(mid);
                    dev.push(up);
                }
            }
        }
        let mut column = vec![0.0f32; k];
        let z: Vec<f32> = (0..p)
            .map(|r| {
                for (slot, c) in column.iter_mut().zip(row_centre.chunks_exact(p)) {
                    *slot = c[r];
                }
                *column.select_nth_unstable_by(k / 2, f32::total_cmp).1
            })
            .collect();
        let radius = row_centre
            .chunks_exact(p)
            .zip(&row_dev)
            .map(|(c, d)| l1(c, &z) + d)
            .collect();
        // The margin δ of the module documentation.
        let scale = 1.0
            + 8.0 * (n + p + 16) as f64 * f64::EPSILON
            + 8.0 * (n + 8) as f64 * f64::from(f32::EPSILON);
        Some(Sketch {
            p,
            n,
            block,
            row_centre,
            row_dev,
            centre,
            dev,
            mean,
            radius,
            scale,
        })
    }

    /// Into `suffix[g]`, a bound of Σ_{r ≥ g·ROWS_PER_CHECK} w_r(a, b) for every group g of
    /// rows (and 0 past the last): per block of a row, `|a_i − b_i| ≤ |a_i − c_a| + |c_a −
    /// c_b| + |c_b − b_i|` summed over the block, divided by n. `suffix[0]` bounds P times
    /// the pair's distance.
    fn suffix_bounds(&self, a: usize, b: usize, suffix: &mut [f64]) {
        let per_class = self.p * self.n / self.block;
        let (ca, cb) = (
            &self.centre[a * per_class..(a + 1) * per_class],
            &self.centre[b * per_class..(b + 1) * per_class],
        );
        let (da, db) = (
            &self.dev[a * per_class..(a + 1) * per_class],
            &self.dev[b * per_class..(b + 1) * per_class],
        );
        let size = self.block as f32;
        let inv = self.n as f64;
        let group = ROWS_PER_CHECK * self.n / self.block;
        let groups = suffix.len() - 1;
        suffix[groups] = 0.0;
        for g in (0..groups).rev() {
            let (lo, hi) = (g * group, ((g + 1) * group).min(per_class));
            let mut acc = [0.0f32; LANES];
            let whole = lo + (hi - lo) / LANES * LANES;
            for c in (lo..whole).step_by(LANES) {
                let (xa, xb, ya, yb) = (
                    &ca[c..c + LANES],
                    &cb[c..c + LANES],
                    &da[c..c + LANES],
                    &db[c..c + LANES],
                );
                for l in 0..LANES {
                    acc[l] += (xa[l] - xb[l]).abs() * size + (ya[l] + yb[l]);
                }
            }
            for (l, c) in (whole..hi).enumerate() {
                acc[l] += (ca[c] - cb[c]).abs() * size + (da[c] + db[c]);
            }
            suffix[g] = suffix[g + 1] + f64::from(halve(&mut acc)) / inv;
        }
    }

    /// Σ_r |c_ar − c_br| + d_ar + d_br: the row-level bound of P times the pair's
    /// distance (P operations).
    fn row_bound(&self, a: usize, b: usize) -> f64 {
        let p = self.p;
        l1(
            &self.row_centre[a * p..(a + 1) * p],
            &self.row_centre[b * p..(b + 1) * p],
        ) + (self.row_dev[a] + self.row_dev[b])
    }

    /// Σ_r |mean_ar − mean_br|: P times a lower bound of the distance.
    fn mean_gap(&self, a: usize, b: usize) -> f64 {
        let (ma, mb) = (
            &self.mean[a * self.p..(a + 1) * self.p],
            &self.mean[b * self.p..(b + 1) * self.p],
        );
        ma.iter().zip(mb).map(|(x, y)| (x - y).abs()).sum()
    }
}

/// Σ |x_i − y_i| in f64, four lanes (the order does not matter for a bound).
fn l1(x: &[f32], y: &[f32]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (xc, yc) = (x.chunks_exact(4), y.chunks_exact(4));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for l in 0..4 {
            acc[l] += (f64::from(a[l]) - f64::from(b[l])).abs();
        }
    }
    let tail: f64 = xr
        .iter()
        .zip(yr)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
        .sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Lanes of the screening pass.
const LANES: usize = 16;
/// The most samples per class the bounded search takes (the margin of its `f32` screen
/// assumes short chains); beyond, it evaluates all pairs.
pub const MAX_SAMPLES: usize = 1 << 16;
/// Classes per tile of the pair loop.
const TILE: usize = 16;
/// Rows between two early-exit checks of the screening pass.
const ROWS_PER_CHECK: usize = 16;

/// The screening pass of pair (a, b) on contiguous `[P, n]` data: per group of
/// `ROWS_PER_CHECK` rows, the sum of |a − b| in `LANES` independent `f32` accumulators
/// (vectorisable, unlike the kernel's single ordered `f64` sum), added into an `f64` total;
/// before each group after the first it asks `go_on(t, total / n)`. Returns the sum over
/// rows of the per-row W1 (P times the distance, from below within the margin), or `None`
/// when stopped.
fn screen(
    a: &[f32],
    b: &[f32],
    n: usize,
    mut go_on: impl FnMut(usize, f64) -> bool,
) -> Option<f64> {
    let block = ROWS_PER_CHECK * n;
    let inv = n as f64;
    let mut total = 0.0f64;
    for (t, (xa, xb)) in a.chunks(block).zip(b.chunks(block)).enumerate() {
        if t > 0 && !go_on(t * ROWS_PER_CHECK, total / inv) {
            return None;
        }
        let mut acc = [0.0f32; LANES];
        let whole = xa.len() / LANES * LANES;
        for c in (0..whole).step_by(LANES) {
            let (x, y) = (&xa[c..c + LANES], &xb[c..c + LANES]);
            for l in 0..LANES {
                acc[l] += (x[l] - y[l]).abs();
            }
        }
        for (l, (x, y)) in xa[whole..].iter().zip(&xb[whole..]).enumerate() {
            acc[l] += (x - y).abs();
        }
        total += f64::from(halve(&mut acc));
    }
    Some(total / inv)
}

/// The sum of the lanes by a tree of halves (vectorisable): four more f32 roundings per
/// chain.
fn halve(acc: &mut [f32; LANES]) -> f32 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    acc[0]
}

/// The search state: the best distance so far and its threshold in sum-over-rows units.
struct Best {
    value: f64,
    /// fl(value · P): a bound B skips a pair iff fl(B · scale) < limit.
    limit: f64,
    p: f64,
    scale: f64,
}

impl Best {
    fn skips(&self, bound: f64) -> bool {
        bound * self.scale < self.limit
    }

    fn offer(&mut self, v: f64) {
        if v > self.value {
            self.value = v;
            self.limit = v * self.p;
        }
    }
}

fn bounded(classes: &[ArrayView2<f32>], sketch: &Sketch, method: W1, pairs_total: u64) -> PairMax {
    let k = classes.len();
    let (p, n) = classes[0].dim();
    let mut best = Best {
        value: 0.0,
        limit: 0.0,
        p: p as f64,
        scale: sketch.scale,
    };
    let (mut evaluated, mut screened, mut bounded_pairs) = (0u64, 0u64, 0u64);

    // 1. A first best: the class with the largest radius, its farthest class by the mean
    // gap, and that one's farthest.
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| sketch.radius[b].total_cmp(&sketch.radius[a]));
    let mut seeded: Vec<(usize, usize)> = Vec::with_capacity(2);
    let mut from = order[0];
    for _ in 0..2 {
        let to = (0..k)
            .filter(|&b| b != from)
            .max_by(|&x, &y| {
                sketch
                    .mean_gap(from, x)
                    .total_cmp(&sketch.mean_gap(from, y))
            })
            .expect("at least two classes");
        let pair = (from.min(to), from.max(to));
        if seeded.contains(&pair) {
            break;
        }
        best.offer(full(classes, pair.0, pair.1, method));
        evaluated += 1;
        seeded.push(pair);
        from = to;
    }

    // 2. Pairs in decreasing radius sum, while that O(1) bound reaches the best.
    // Each class's values as one slice (a copy only where a view is not in standard
    // layout).
    let data: Vec<_> = classes.iter().map(|c| c.as_standard_layout()).collect();
    let of = |i: usize| data[order[i]].as_slice().expect("standard layout");
    let groups = p.div_ceil(ROWS_PER_CHECK);
    let mut suffix = vec![0.0f64; groups + 1];
    // Tiles of TILE classes meet every later class in turn, so that the tile stays in cache
    // while the later classes stream by. A tile's rows of pairs end where the radius bound
    // skips (with the best at the tile's start: later pairs are only looked at more).
    let mut ends = [0usize; TILE];
    for i0 in (0..k).step_by(TILE) {
        let tile = i0..(i0 + TILE).min(k);
        for (i, end) in tile.clone().zip(&mut ends) {
            let ra = sketch.radius[order[i]];
            *end = (i + 1..k)
                .find(|&j| best.skips(ra + sketch.radius[order[j]]))
                .unwrap_or(k);
        }
        let last = ends[..tile.len()].iter().copied().max().unwrap_or(0);
        for j in i0 + 1..last {
            let b = order[j];
            for (i, &end) in tile.clone().zip(&ends) {
                if i >= j || j >= end {
                    continue;
                }
                let a = order[i];
                let pair = (a.min(b), a.max(b));
                if seeded.contains(&pair) {
                    continue;
                }
                // 3. The row-level bound (P operations); then the block bound, summed from
                // the last group of rows: suffix[g] bounds the rows from g · ROWS_PER_CHECK
                // on, and suffix[0] the whole pair.
                bounded_pairs += 1;
                if best.skips(sketch.row_bound(a, b)) {
                    continue;
                }
                sketch.suffix_bounds(a, b, &mut suffix);
                if best.skips(suffix[0]) {
                    continue;
                }
                // 4. The screening pass, then the kernel if the screen cannot rule it out.
                screened += 1;
                let passes = screen(of(i), of(j), n, |t, partial| {
                    !best.skips(partial + suffix[t / ROWS_PER_CHECK])
                })
                .is_some_and(|sum| !best.skips(sum));
                if passes {
                    evaluated += 1;
                    best.offer(full(classes, pair.0, pair.1, method));
                }
            }
        }
    }
    PairMax {
        value: best.value,
        pairs_total,
        pairs_evaluated: evaluated,
        pairs_screened: screened,
        pairs_bounded: bounded_pairs,
        fallback: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use proptest::prelude::*;

    /// Classes of sorted rows, scaled about their row means by 0, 0.5, 1 or 1.5 (flat
    /// classes), some with few distinct values: pairs for which the block bounds are tight.
    fn classes() -> impl Strategy<Value = Vec<Array2<f32>>> {
        (2usize..12, 1usize..20, 1usize..34, any::<bool>()).prop_flat_map(|(k, p, n, q)| {
            (
                proptest::collection::vec(-50.0f32..50.0, k * p * n).prop_map(move |v| {
                    // Few distinct values: ties within blocks make the bounds tight.
                    v.into_iter()
                        .map(|x| if q { (x.abs() as u32 % 3) as f32 } else { x })
                        .collect::<Vec<f32>>()
                }),
                proptest::collection::vec(0u8..4, k),
            )
                .prop_map(move |(pool, scales)| {
                    (0..k)
                        .map(|c| {
                            let mut m = Array2::from_shape_fn((p, n), |(r, i)| {
                                let row = &pool[(c * p + r) * n..(c * p + r + 1) * n];
                                let mean = row.iter().sum::<f32>() / n as f32;
                                mean * 0.1 + (row[i] - mean) * f32::from(scales[c]) * 0.5
                            });
                            for mut row in m.rows_mut() {
                                row.as_slice_mut().unwrap().sort_by(f32::total_cmp);
                            }
                            m
                        })
                        .collect()
                })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// No bound, partial bound or screen value would skip a pair against a best equal
        /// to the pair's own computed distance: every skip the search makes is sound.
        #[test]
        fn no_bound_skips_a_pair_against_its_own_distance(classes in classes()) {
            let views: Vec<_> = classes.iter().map(|c| c.view()).collect();
            let (p, n) = views[0].dim();
            let sketch = Sketch::new(&views).unwrap();
            let groups = p.div_ceil(ROWS_PER_CHECK);
            let mut suffix = vec![0.0; groups + 1];
            for a in 0..views.len() {
                for b in a + 1..views.len() {
                    let v = full(&views, a, b, W1::Exact);
                    let mut best = Best { value: 0.0, limit: 0.0, p: p as f64, scale: sketch.scale };
                    best.offer(v);
                    if v == 0.0 {
                        continue;
                    }
                    prop_assert!(!best.skips(sketch.radius[a] + sketch.radius[b]), "radius ({a}, {b})");
                    prop_assert!(!best.skips(sketch.row_bound(a, b)), "row bound ({a}, {b})");
                    sketch.suffix_bounds(a, b, &mut suffix);
                    // Kernel partial sums plus the bound of the remaining rows.
                    let mut partial = vec![0.0; p];
                    sliced_rows(views[a], views[b], W1::Exact, |t, s| {
                        partial[t] = s;
                        true
                    });
                    for (g, rest) in suffix[..groups].iter().enumerate() {
                        let t = g * ROWS_PER_CHECK;
                        prop_assert!(
                            !best.skips(partial[t] + rest),
                            "rows from {t} of ({a}, {b}): {} + {rest} vs {v}",
                            partial[t]
                        );
                    }
                    let flat: Vec<Vec<f32>> =
                        [a, b].iter().map(|&c| views[c].iter().copied().collect()).collect();
                    let screened = screen(&flat[0], &flat[1], n, |t, s| {
                        !best.skips(s + suffix[t / ROWS_PER_CHECK])
                    });
                    prop_assert!(screened.is_some_and(|s| !best.skips(s)), "screen ({a}, {b})");
                }
            }
        }
    }
}
