//! The largest class-pair distance of a unit from 16-bit summaries, with a computed bound on
//! how far it can be from the exact maximum (the U-Score's `pair-search certified`).
//!
//! At a thousand classes the exact summaries (f32 sorted projections, `[P, n]` per class)
//! of a ResNet-50 take 109 GB at 8 samples per class, and every unit has 499,500 class
//! pairs. This module halves the summaries and makes every pair cheap, at a price it states:
//!
//! - a [`Quantizer`] per unit, fitted once on some classes' summaries, maps a value `x` of
//!   row `r` to `q = round((x − o_r) / h)`, clamped to ±[`Q_MAX`] (`o_r` a per-row offset,
//!   `h` one step for the unit); the dequantised value is `o_r + h q`;
//! - [`Quantizer::quantize`] returns a class's codes and its error `E = Σ |x − (o_r + h q)|`
//!   over its `P n` values, computed from the actual values (clamping included), never
//!   assumed;
//! - for equal class sizes the sliced W1 of two classes is `‖a − b‖₁ / (P n)` of their
//!   sorted rows, and the same of the dequantised rows is `h ‖q_a − q_b‖₁ / (P n)` (the
//!   offsets cancel); the integer L1 distance is exact (no rounding), so
//!   [`certified_max`] takes the largest over **every** pair with a vectorised integer
//!   kernel;
//! - by the triangle inequality, each pair's distance moves by at most
//!   `(E_a + E_b) / (P n)`, so the exact maximum lies within
//!   `(E₁ + E₂) / (P n)` of the returned value, `E₁`, `E₂` the two largest class errors
//!   (plus a margin for the few floating-point roundings): [`CertifiedMax::gap`].
//!
//! ```
//! use fair_stats::certified::{Quantizer, certified_max};
//! use fair_stats::{PairSearch, W1, max_pair_distance};
//! use ndarray::array;
//! let classes = [
//!     array![[0.0f32, 1.0], [0.0, 2.0]],
//!     array![[0.5f32, 1.0], [0.0, 2.5]],
//!     array![[4.0f32, 5.0], [3.0, 3.0]],
//! ];
//! let views: Vec<_> = classes.iter().map(|c| c.view()).collect();
//! let q = Quantizer::fit(&views);
//! let coded: Vec<_> = views.iter().map(|c| q.quantize(*c)).collect();
//! let codes: Vec<&[i16]> = coded.iter().map(|(c, _)| c.as_slice()).collect();
//! let errors: Vec<f64> = coded.iter().map(|(_, e)| *e).collect();
//! let found = certified_max(&q, &codes, &errors, 2, 2);
//! let exact = max_pair_distance(&views, W1::Exact, PairSearch::All).value; // 3.0
//! assert!((found.value - exact).abs() <= found.gap);
//! assert!(found.gap < 1e-3);
//! ```

use ndarray::ArrayView2;

/// The largest code magnitude: codes lie in `−Q_MAX..=Q_MAX`, so the difference of two codes
/// fits an `i16` and the kernel works in 16-bit lanes.
pub const Q_MAX: i16 = 16383;

/// How much wider than the fitted classes' spread the codes reach (classes fitted later may
/// lie outside it; values beyond are clamped, and the clamp's error is counted).
pub const HEADROOM: f64 = 4.0;

/// The map of one unit's values to 16-bit codes: a per-row offset and one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantizer {
    /// Per row (projection), the value coded as 0.
    pub offsets: Vec<f32>,
    /// The value of one code step (> 0).
    pub step: f64,
}

impl Quantizer {
    /// Fits a unit's quantizer on some classes' summaries (`[P, n]` each, every class the
    /// same P): each row's offset is the middle of its range over those classes, and the
    /// step spreads [`HEADROOM`] times the largest half-range over the rows across
    /// ±[`Q_MAX`]. Non-finite values are ignored; where nothing spreads (constant rows),
    /// the step is 2⁻¹⁴ of the largest offset's magnitude (or 2⁻¹⁴).
    ///
    /// # Panics
    /// If `classes` is empty or the classes differ in their number of rows.
    pub fn fit(classes: &[ArrayView2<f32>]) -> Quantizer {
        let rows = classes.first().expect("at least one class to fit").nrows();
        let mut lo = vec![f32::INFINITY; rows];
        let mut hi = vec![f32::NEG_INFINITY; rows];
        for c in classes {
            assert_eq!(c.nrows(), rows, "every class has the same rows");
            for (r, row) in c.rows().into_iter().enumerate() {
                for &v in row.iter().filter(|v| v.is_finite()) {
                    lo[r] = lo[r].min(v);
                    hi[r] = hi[r].max(v);
                }
            }
        }
        Quantizer::from_ranges(&lo, &hi)
    }

    /// A quantizer for rows whose fitted values span `lo[r]..=hi[r]` (as [`Quantizer::fit`]
    /// computes them; a row with `lo > hi` had no finite value and gets offset 0).
    ///
    /// # Panics
    /// If `lo` and `hi` differ in length.
    pub fn from_ranges(lo: &[f32], hi: &[f32]) -> Quantizer {
        assert_eq!(lo.len(), hi.len(), "one range per row");
        let mut half = 0.0f64;
        let mut largest = 0.0f64;
        let offsets = lo
            .iter()
            .zip(hi)
            .map(|(&l, &h)| {
                if !l.is_finite() || !h.is_finite() || l > h {
                    return 0.0; // no finite value in this row
                }
                let (l, h) = (f64::from(l), f64::from(h));
                let mid = (l + (h - l) / 2.0) as f32;
                let m = f64::from(mid);
                half = half.max(h - m).max(m - l);
                largest = largest.max(m.abs());
                mid
            })
            .collect();
        let step = if half > 0.0 {
            half * HEADROOM / f64::from(Q_MAX)
        } else {
            largest.max(1.0) * (-14f64).exp2()
        };
        Quantizer { offsets, step }
    }

    /// The codes of one class's summary (`[P, n]`, P the fitted rows; row-major, `P n`
    /// values) and its error `Σ |x − (o_r + h q)|` over them, computed in f64 from the
    /// values themselves (clamped values included; a non-finite value makes it infinite).
    ///
    /// # Panics
    /// If the class's rows are not the fitted rows.
    pub fn quantize(&self, class: ArrayView2<f32>) -> (Vec<i16>, f64) {
        assert_eq!(class.nrows(), self.offsets.len(), "the fitted rows");
        let mut codes = Vec::with_capacity(class.len());
        let mut error = 0.0f64;
        // Σ |x − o|: each term's two roundings (x − o, then one fused multiply-add) are at
        // most ε (|x − o| + |term|), so 2 ε Σ |x − o| more covers them (plus the sum's own
        // rounding, which `certified_max` covers), whatever the values' common offset.
        let mut spread = 0.0f64;
        for (row, &o) in class.rows().into_iter().zip(&self.offsets) {
            let o = f64::from(o);
            for &v in row.iter() {
                let x = f64::from(v);
                if !x.is_finite() {
                    codes.push(0);
                    error = f64::INFINITY;
                    continue;
                }
                let q = ((x - o) / self.step)
                    .round()
                    .clamp(-f64::from(Q_MAX), f64::from(Q_MAX)) as i16;
                codes.push(q);
                let centred = x - o;
                error += (-self.step).mul_add(f64::from(q), centred).abs();
                spread += centred.abs();
            }
        }
        (codes, error + 4.0 * f64::EPSILON * spread)
    }
}

/// The result of [`certified_max`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CertifiedMax {
    /// The largest distance over all pairs of the dequantised summaries (0 with fewer than
    /// two classes).
    pub value: f64,
    /// A computed bound: the exact maximum (over the same pairs of the f32 summaries, as
    /// [`crate::max_pair_distance`] computes it) lies within `value ± gap`.
    pub gap: f64,
    /// Pairs compared: K (K − 1) / 2, every one.
    pub pairs: u64,
}

/// Codes per chunk of the kernel's 32-bit sums: `2¹⁶ · 2 Q_MAX < 2³²`.
const CHUNK: usize = 1 << 16;

/// `Σ |a_i − b_i|` of two code vectors (codes within ±[`Q_MAX`]), exactly.
///
/// # Panics
/// If the lengths differ.
pub fn l1_codes(a: &[i16], b: &[i16]) -> u64 {
    assert_eq!(a.len(), b.len(), "code vectors of one length");
    l1_one(a, b)
}

/// The largest `Σ |a_i − b_i|` over every pair of `classes` (codes within ±[`Q_MAX`], one
/// length), exactly: the loop nest compiled for AVX-512BW or AVX2 where the CPU has it
/// (chosen once per call), else for the baseline.
///
/// # Panics
/// If the lengths differ.
pub fn max_l1_codes(classes: &[&[i16]]) -> u64 {
    if let Some(first) = classes.first() {
        for c in classes {
            assert_eq!(c.len(), first.len(), "code vectors of one length");
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU has AVX-512BW (checked just above).
            return unsafe { max_l1_avx512(classes) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { max_l1_avx2(classes) };
        }
    }
    max_l1_portable(classes)
}

/// [`max_l1_portable`] compiled for AVX-512BW (32 codes per instruction).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw")]
fn max_l1_avx512(classes: &[&[i16]]) -> u64 {
    max_l1_portable(classes)
}

/// [`max_l1_portable`] compiled for AVX2 (16 codes per instruction).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn max_l1_avx2(classes: &[&[i16]]) -> u64 {
    max_l1_portable(classes)
}

/// Classes per tile: a tile's code vectors are compared with each later class in one
/// sweep, so the later class is read once for `TILE` pairs.
const TILE: usize = 4;

/// The loop nest of [`max_l1_codes`]: tiles of [`TILE`] classes, the pairs within a tile,
/// then each later class against the whole tile.
#[inline(always)]
fn max_l1_portable(classes: &[&[i16]]) -> u64 {
    let k = classes.len();
    let mut best = 0u64;
    for t in (0..k).step_by(TILE) {
        let end = (t + TILE).min(k);
        for a in t..end {
            for b in a + 1..end {
                best = best.max(l1_one(classes[a], classes[b]));
            }
        }
        // Only the last tile can be partial, and no class follows it.
        if end - t == TILE {
            let tile: [&[i16]; TILE] = std::array::from_fn(|i| classes[t + i]);
            for b in &classes[end..] {
                best = best.max(l1_tile(tile, b).into_iter().max().unwrap_or(0));
            }
        }
    }
    best
}

/// `Σ |a_i − b_i|` (equal lengths), in 32-bit sums per chunk of [`CHUNK`] codes.
#[inline(always)]
fn l1_one(a: &[i16], b: &[i16]) -> u64 {
    let mut total = 0u64;
    for (ca, cb) in a.chunks(CHUNK).zip(b.chunks(CHUNK)) {
        let s: u32 = ca
            .iter()
            .zip(cb)
            .map(|(&x, &y)| u32::from(x.wrapping_sub(y).unsigned_abs()))
            .sum();
        total += u64::from(s);
    }
    total
}

/// [`l1_one`] of [`TILE`] vectors against one (all of one length), in one sweep.
#[inline(always)]
fn l1_tile(a: [&[i16]; TILE], b: &[i16]) -> [u64; TILE] {
    let mut total = [0u64; TILE];
    let mut at = 0;
    while at < b.len() {
        let end = (at + CHUNK).min(b.len());
        let y = &b[at..end];
        let (x0, x1, x2, x3) = (
            &a[0][at..end],
            &a[1][at..end],
            &a[2][at..end],
            &a[3][at..end],
        );
        let (mut s0, mut s1, mut s2, mut s3) = (0u32, 0u32, 0u32, 0u32);
        let d = |x: i16, y: i16| u32::from(x.wrapping_sub(y).unsigned_abs());
        for ((((&y, &p0), &p1), &p2), &p3) in y.iter().zip(x0).zip(x1).zip(x2).zip(x3) {
            s0 += d(p0, y);
            s1 += d(p1, y);
            s2 += d(p2, y);
            s3 += d(p3, y);
        }
        for (t, s) in total.iter_mut().zip([s0, s1, s2, s3]) {
            *t += u64::from(s);
        }
        at = end;
    }
    total
}

/// The largest distance over every pair of `classes` (each the `rows · cols` codes of one
/// class's `[P, n]` summary from `q`, every class the same size) and a computed bound on how
/// far the exact maximum can lie from it; `errors[k]` is class k's error from
/// [`Quantizer::quantize`]. See the [module documentation](self).
///
/// # Panics
/// If the classes' lengths differ from `rows · cols` or `errors` has another length.
pub fn certified_max(
    q: &Quantizer,
    classes: &[&[i16]],
    errors: &[f64],
    rows: usize,
    cols: usize,
) -> CertifiedMax {
    let k = classes.len();
    assert_eq!(errors.len(), k, "one error per class");
    let len = rows * cols;
    for c in classes {
        assert_eq!(c.len(), len, "every class holds rows · cols codes");
    }
    let pairs = (k as u64) * (k.saturating_sub(1) as u64) / 2;
    if k < 2 || len == 0 {
        return CertifiedMax {
            value: 0.0,
            gap: 0.0,
            pairs,
        };
    }
    let best = max_l1_codes(classes);
    let n = len as f64;
    let value = best as f64 * q.step / n;
    let (mut e1, mut e2) = (0.0f64, 0.0f64);
    for &e in errors {
        if e.is_nan() || e > e1 {
            e2 = e1;
            e1 = if e.is_nan() { f64::INFINITY } else { e };
        } else if e > e2 {
            e2 = e;
        }
    }
    // The errors' f64 sums (≤ len roundings each), the value's two roundings and the exact
    // search's own f64 rounding (≤ rows + cols + 2 roundings) are covered several times over.
    let u = f64::EPSILON;
    let gap = (e1 + e2) / n * (1.0 + 4.0 * n * u)
        + (value + (e1 + e2) / n) * 4.0 * (rows + cols + 8) as f64 * u;
    CertifiedMax { value, gap, pairs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PairSearch, W1, max_pair_distance};
    use ndarray::Array2;
    use proptest::prelude::*;

    fn sorted_class(values: Vec<f32>, rows: usize, cols: usize) -> Array2<f32> {
        let mut m = Array2::from_shape_vec((rows, cols), values).unwrap();
        for mut row in m.rows_mut() {
            let mut v = row.to_vec();
            v.sort_by(f32::total_cmp);
            row.assign(&ndarray::Array1::from(v));
        }
        m
    }

    /// Quantizes `classes` fitted on the first `fit` of them and checks the certificate
    /// against the exact all-pairs maximum; returns (value, gap, exact).
    fn check(classes: &[Array2<f32>], fit: usize) -> (f64, f64, f64) {
        let views: Vec<_> = classes.iter().map(|c| c.view()).collect();
        let q = Quantizer::fit(&views[..fit]);
        let coded: Vec<_> = views.iter().map(|c| q.quantize(*c)).collect();
        let codes: Vec<&[i16]> = coded.iter().map(|(c, _)| c.as_slice()).collect();
        let errors: Vec<f64> = coded.iter().map(|(_, e)| *e).collect();
        let (rows, cols) = classes[0].dim();
        let found = certified_max(&q, &codes, &errors, rows, cols);
        let exact = max_pair_distance(&views, W1::Exact, PairSearch::All).value;
        assert!(
            (found.value - exact).abs() <= found.gap,
            "certified {} ± {} but exact {exact}",
            found.value,
            found.gap
        );
        assert_eq!(
            found.pairs,
            (classes.len() * (classes.len() - 1) / 2) as u64
        );
        (found.value, found.gap, exact)
    }

    #[test]
    fn the_kernel_is_the_exact_integer_l1() {
        let a: Vec<i16> = (0..1000)
            .map(|i| ((i * 7919) % 32767 - 16383) as i16)
            .collect();
        let b: Vec<i16> = (0..1000)
            .map(|i| ((i * 104729) % 32767 - 16383) as i16)
            .collect();
        let by_hand: u64 = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| (i64::from(x) - i64::from(y)).unsigned_abs())
            .sum();
        assert_eq!(l1_codes(&a, &b), by_hand);
        // The extremes: every difference 2 Q_MAX, over more than one 32-bit chunk.
        let hi = vec![Q_MAX; CHUNK + 5];
        let lo = vec![-Q_MAX; CHUNK + 5];
        assert_eq!(l1_codes(&hi, &lo), (CHUNK as u64 + 5) * 2 * Q_MAX as u64);
        let most = (CHUNK as u64 + 5) * 2 * Q_MAX as u64;
        let tile: [&[i16]; TILE] =
            std::array::from_fn(|t| if t % 2 == 0 { &hi[..] } else { &lo[..] });
        let found = l1_tile(tile, &lo);
        for (t, d) in found.iter().enumerate() {
            assert_eq!(*d, if t % 2 == 0 { most } else { 0 });
        }
    }

    /// The tiled, dispatched maximum equals a plain loop over every pair, for class counts
    /// around the tile size and lengths around the vector widths.
    #[test]
    fn the_tiled_maximum_is_the_plain_maximum() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for k in [0usize, 1, 2, 3, 4, 5, 7, 8, 9, 13] {
            for len in [1usize, 15, 16, 33, 100] {
                let classes: Vec<Vec<i16>> = (0..k)
                    .map(|_| (0..len).map(|_| rng.gen_range(-Q_MAX..=Q_MAX)).collect())
                    .collect();
                let views: Vec<&[i16]> = classes.iter().map(Vec::as_slice).collect();
                let mut plain = 0u64;
                for a in 0..k {
                    for b in a + 1..k {
                        let d: u64 = views[a]
                            .iter()
                            .zip(views[b])
                            .map(|(&x, &y)| (i64::from(x) - i64::from(y)).unsigned_abs())
                            .sum();
                        plain = plain.max(d);
                    }
                }
                assert_eq!(max_l1_codes(&views), plain, "k {k} len {len}");
                assert_eq!(max_l1_portable(&views), plain, "k {k} len {len}");
            }
        }
    }

    #[test]
    fn a_hand_worked_case() {
        // Two classes of one row of two values: 0, 1 and 4, 5 → W1 = 4.
        let classes = [
            Array2::from_shape_vec((1, 2), vec![0.0f32, 1.0]).unwrap(),
            Array2::from_shape_vec((1, 2), vec![4.0f32, 5.0]).unwrap(),
        ];
        let (value, gap, exact) = check(&classes, 2);
        assert_eq!(exact, 4.0);
        // Offset 2.5, half-range 2.5, step 5 / 16383: the codes of 0, 1, 4, 5 round.
        assert!(gap < 4.0 * 1e-3, "gap {gap}");
        assert!((value - 4.0).abs() <= gap);
    }

    #[test]
    fn equal_classes_give_zero_and_no_gap_from_clamping() {
        let c = sorted_class((0..24).map(|i| i as f32 * 0.25).collect(), 3, 8);
        let classes = vec![c.clone(), c.clone(), c];
        let (value, _, exact) = check(&classes, 3);
        assert_eq!(exact, 0.0);
        assert_eq!(value, 0.0);
    }

    #[test]
    fn an_outlier_outside_the_fitted_range_is_clamped_and_the_gap_says_so() {
        // Fitted on two close classes; the third lies far outside, its codes clamp.
        let a = sorted_class(vec![0.0, 0.1, 0.2, 0.3], 1, 4);
        let b = sorted_class(vec![0.05, 0.15, 0.25, 0.35], 1, 4);
        let far = sorted_class(vec![100.0, 101.0, 102.0, 103.0], 1, 4);
        let (value, gap, exact) = check(&[a, b, far], 2);
        // Clamped: far off, but the computed gap covers it (checked in `check`).
        assert!(gap > 50.0, "gap {gap}");
        assert!(value < exact);
    }

    #[test]
    fn a_large_common_offset_is_covered() {
        // Constant rows 1000 and 1000 + 2⁻⁷: each code rounds the other way, so the
        // triangle bound is tight; the errors' roundings (relative to 1000, not to the
        // errors) must be inside the gap.
        let classes = [
            Array2::from_elem((3, 4), 1000.0f32),
            Array2::from_elem((3, 4), 1000.0f32 + 0.007_812_5),
        ];
        let (value, gap, exact) = check(&classes, 2);
        assert_eq!(exact, 0.0078125);
        assert!((value - exact).abs() <= gap);
    }

    #[test]
    fn constant_rows_fit_a_positive_step() {
        let c = Array2::from_elem((2, 3), 7.0f32);
        let q = Quantizer::fit(&[c.view()]);
        assert!(q.step > 0.0);
        let (codes, e) = q.quantize(c.view());
        assert!(codes.iter().all(|&x| x == 0));
        assert_eq!(e, 0.0);
    }

    #[test]
    fn a_non_finite_value_makes_the_gap_infinite() {
        let a = Array2::from_shape_vec((1, 2), vec![0.0f32, 1.0]).unwrap();
        let b = Array2::from_shape_vec((1, 2), vec![f32::INFINITY, 1.0]).unwrap();
        let q = Quantizer::fit(&[a.view(), b.view()]);
        let (ca, ea) = q.quantize(a.view());
        let (cb, eb) = q.quantize(b.view());
        let found = certified_max(&q, &[&ca, &cb], &[ea, eb], 1, 2);
        assert!(found.gap.is_infinite());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Random, tied, spread and one-outlier classes, fitted on all or only the first
        /// class (a loose fit on purpose): the exact maximum lies within the gap, and with
        /// every class fitted the gap is small against the spread.
        #[test]
        fn the_exact_maximum_lies_within_the_gap(
            k in 2usize..9,
            rows in 1usize..6,
            cols in 1usize..9,
            scale in prop_oneof![Just(1e-3f32), Just(1.0f32), Just(1e4f32)],
            offset in prop_oneof![Just(0.0f32), Just(1000.0f32), Just(-3e5f32)],
            ties in any::<bool>(),
            outlier in any::<bool>(),
            fit_all in any::<bool>(),
            seed in any::<u64>(),
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let classes: Vec<Array2<f32>> = (0..k)
                .map(|c| {
                    let shift = if outlier && c == k - 1 { 50.0 } else { 0.0 };
                    let v = (0..rows * cols)
                        .map(|_| {
                            let x: f32 = if ties { f32::from(rng.gen_range(0u8..3)) } else { rng.r#gen::<f32>() };
                            (x + shift) * scale + offset
                        })
                        .collect();
                    sorted_class(v, rows, cols)
                })
                .collect();
            let (_, gap, _) = check(&classes, if fit_all { k } else { 1 });
            if fit_all {
                // Fitted on every class: only rounding, at most half a step per value.
                let (lo, hi) = classes.iter().flat_map(|c| c.iter()).fold(
                    (f64::INFINITY, f64::NEG_INFINITY),
                    |(l, h), &v| (l.min(f64::from(v)), h.max(f64::from(v))),
                );
                let spread = hi - lo;
                prop_assert!(gap <= spread * HEADROOM / f64::from(Q_MAX) + 1e-9 * (1.0 + hi.abs()));
            }
        }
    }
}
