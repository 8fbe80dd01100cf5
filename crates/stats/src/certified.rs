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
        let mut codes = vec![0; class.len()];
        let error = self.quantize_into(class, &mut codes);
        (codes, error)
    }

    /// [`Quantizer::quantize`] into `out` (the class's `P n` codes, row-major), returning
    /// the error: the loop compiled for AVX-512F or AVX2 with FMA where the CPU has them
    /// (chosen once per call), else for the baseline, with the same result on every path
    /// (the error's partial sums are kept in fixed lanes).
    ///
    /// # Panics
    /// If the class's rows are not the fitted rows, or `out` does not hold one code per
    /// value.
    pub fn quantize_into(&self, class: ArrayView2<f32>, out: &mut [i16]) -> f64 {
        assert_eq!(class.nrows(), self.offsets.len(), "the fitted rows");
        assert_eq!(out.len(), class.len(), "one code per value");
        let (Some(values), cols) = (class.as_slice(), class.ncols()) else {
            return self.quantize_values(class, out);
        };
        if values.is_empty() {
            return 0.0;
        }
        let lanes = code_dispatched(values, cols, &self.offsets, self.step, out);
        match lanes {
            Some(error) => error,
            // A value that is not finite: coded one by one (its code 0, the error infinite).
            None => self.quantize_values(class, out),
        }
    }

    /// [`Quantizer::quantize_into`] one value at a time, in row order (any layout; a
    /// non-finite value is coded 0 and makes the error infinite).
    fn quantize_values(&self, class: ArrayView2<f32>, out: &mut [i16]) -> f64 {
        let mut error = [0.0f64; LANES];
        let mut spread = [0.0f64; LANES];
        let mut infinite = false;
        let mut at = 0;
        for (row, &o) in class.rows().into_iter().zip(&self.offsets) {
            let o = f64::from(o);
            for (i, &v) in row.iter().enumerate() {
                let lane = i % LANES;
                if v.is_finite() {
                    let (q, e, c) = code_one(v, o, self.step);
                    out[at] = q;
                    error[lane] += e;
                    spread[lane] += c;
                } else {
                    out[at] = 0;
                    infinite = true;
                }
                at += 1;
            }
        }
        if infinite {
            f64::INFINITY
        } else {
            total(&error, &spread)
        }
    }
}

/// Lanes of the coding loop's partial sums: value `i` of a row adds to lane `i % LANES`.
const LANES: usize = 8;

/// One value's code `q`, its coding error `|x − o − h q|` and `|x − o|` (`x` finite; the
/// code is garbage, and the error not finite, where it is not).
#[inline(always)]
fn code_one(x: f32, o: f64, step: f64) -> (i16, f64, f64) {
    let centred = f64::from(x) - o;
    let q = round_code(centred, step);
    let error = (-step).mul_add(q, centred).abs();
    (to_code(q), error, centred.abs())
}

/// The code of a centred value as an `f64`: `round(centred / step)` within ±[`Q_MAX`].
#[inline(always)]
fn round_code(centred: f64, step: f64) -> f64 {
    // `max`/`min` rather than `clamp`: a NaN becomes a bound, so the code is always an
    // integer of at most 15 bits.
    (centred / step)
        .round()
        .max(-f64::from(Q_MAX))
        .min(f64::from(Q_MAX))
}

/// The `i16` of an integral `q` within ±[`Q_MAX`], exactly: added to 1.5 · 2⁵², `q` lies in
/// the low bits of the sum's mantissa (a conversion that vectorises, where `as` does not).
#[inline(always)]
fn to_code(q: f64) -> i16 {
    const SHIFT: f64 = 6_755_399_441_055_744.0; // 1.5 · 2⁵²
    (q + SHIFT).to_bits() as i16
}

/// The error of a class from its lanes' partial sums. Σ |x − o|: each term's two roundings
/// (x − o, then one fused multiply-add) are at most ε (|x − o| + |term|), so 2 ε Σ |x − o|
/// more covers them (plus the sum's own rounding, which `certified_max` covers), whatever
/// the values' common offset.
fn total(error: &[f64; LANES], spread: &[f64; LANES]) -> f64 {
    let error: f64 = error.iter().sum();
    let spread: f64 = spread.iter().sum();
    error + 4.0 * f64::EPSILON * spread
}

/// The codes of `values` (rows of `cols`, row `r` offset by `offsets[r]`) into `out` and
/// their error, or `None` where a value is not finite (`out` then partly written).
fn code_dispatched(
    values: &[f32],
    cols: usize,
    offsets: &[f32],
    step: f64,
    out: &mut [i16],
) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { code_avx512(values, cols, offsets, step, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { code_avx2(values, cols, offsets, step, out) };
        }
    }
    code_portable(values, cols, offsets, step, out)
}

/// [`code_portable`] compiled for AVX-512F (8 values per instruction, fused multiply-add).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn code_avx512(
    values: &[f32],
    cols: usize,
    offsets: &[f32],
    step: f64,
    out: &mut [i16],
) -> Option<f64> {
    code_portable(values, cols, offsets, step, out)
}

/// [`code_portable`] compiled for AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn code_avx2(
    values: &[f32],
    cols: usize,
    offsets: &[f32],
    step: f64,
    out: &mut [i16],
) -> Option<f64> {
    code_portable(values, cols, offsets, step, out)
}

/// The loop of [`code_dispatched`]: row by row, [`LANES`] values at a time.
#[inline(always)]
fn code_portable(
    values: &[f32],
    cols: usize,
    offsets: &[f32],
    step: f64,
    out: &mut [i16],
) -> Option<f64> {
    let mut error = [0.0f64; LANES];
    let mut spread = [0.0f64; LANES];
    for ((row, codes), &o) in values
        .chunks_exact(cols)
        .zip(out.chunks_exact_mut(cols))
        .zip(offsets)
    {
        let o = f64::from(o);
        let mut xs = row.chunks_exact(LANES);
        let mut qs = codes.chunks_exact_mut(LANES);
        for (x, q) in (&mut xs).zip(&mut qs) {
            for i in 0..LANES {
                let (c, e, s) = code_one(x[i], o, step);
                q[i] = c;
                error[i] += e;
                spread[i] += s;
            }
        }
        for (i, (&x, q)) in xs.remainder().iter().zip(qs.into_remainder()).enumerate() {
            let (c, e, s) = code_one(x, o, step);
            *q = c;
            error[i] += e;
            spread[i] += s;
        }
    }
    // A value that is not finite left its lane's error infinite or NaN.
    let error = total(&error, &spread);
    error.is_finite().then_some(error)
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

/// Codes per chunk of the kernel's 32-bit sums: `2¹⁶ · 2 Q_MAX < 2³¹`.
const CHUNK: usize = 1 << 16;
const _: () = assert!(CHUNK as u64 * 2 * Q_MAX as u64 <= i32::MAX as u64);

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
/// (chosen once per call), else for the baseline. Codes outside ±[`Q_MAX`] (which
/// [`Quantizer::quantize`] never gives) make the result unspecified (checked in debug
/// builds).
///
/// # Panics
/// If the lengths differ.
pub fn max_l1_codes(classes: &[&[i16]]) -> u64 {
    if let Some(first) = classes.first() {
        for c in classes {
            assert_eq!(c.len(), first.len(), "code vectors of one length");
            debug_assert!(
                c.iter().all(|q| (-Q_MAX..=Q_MAX).contains(q)),
                "codes within ±Q_MAX"
            );
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

/// [`max_l1_codes`] with AVX-512BW kernels: 32 codes per instruction, their absolute
/// differences summed pairwise into 32-bit lanes by one multiply-add with ones
/// ([`avx512`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw")]
fn max_l1_avx512(classes: &[&[i16]]) -> u64 {
    // Closures inherit this function's target features, so the kernels are called safely.
    max_l1_nest(
        classes,
        |a, b| avx512::l1_one(a, b),
        |a, b| avx512::l1_tile(a, b),
    )
}

/// [`max_l1_portable`] compiled for AVX2 (16 codes per instruction).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn max_l1_avx2(classes: &[&[i16]]) -> u64 {
    max_l1_portable(classes)
}

/// The AVX-512BW kernels of [`max_l1_avx512`]: the same sums as [`l1_one`] and
/// [`l1_tile`]. The absolute difference of two codes within ±[`Q_MAX`] is at most
/// 2 [`Q_MAX`] < 2¹⁵, so it is a non-negative `i16`, and two of them summed fit an `i32`
/// lane. Over a chunk of [`CHUNK`] codes each of the 16 lanes adds at most 2¹² · 2
/// [`Q_MAX`], and their sum, at most 2¹⁶ · 2 [`Q_MAX`] = 2,147,352,576, is below 2³¹ (read
/// as a `u32`, it would be exact up to 2³²).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{CHUNK, TILE};
    use std::arch::x86_64::{
        __m512i, _mm512_abs_epi16, _mm512_add_epi32, _mm512_loadu_si512, _mm512_madd_epi16,
        _mm512_reduce_add_epi32, _mm512_set1_epi16, _mm512_setzero_si512, _mm512_sub_epi16,
    };

    /// Codes per vector.
    const LANES: usize = 32;

    /// The 32 codes of `s[at..at + 32]`.
    #[inline]
    #[target_feature(enable = "avx512bw")]
    fn load(s: &[i16], at: usize) -> __m512i {
        let codes: &[i16; LANES] = s[at..at + LANES].try_into().expect("32 codes");
        // SAFETY: `codes` is 64 readable bytes; the load needs no alignment.
        unsafe { _mm512_loadu_si512(codes.as_ptr().cast()) }
    }

    /// The 16 pairwise sums of `|x − y|` as `i32` lanes.
    #[inline]
    #[target_feature(enable = "avx512bw")]
    fn distance(x: __m512i, y: __m512i) -> __m512i {
        _mm512_madd_epi16(
            _mm512_abs_epi16(_mm512_sub_epi16(x, y)),
            _mm512_set1_epi16(1),
        )
    }

    /// `Σ |a_i − b_i|` of the codes from `from` to the end, one at a time.
    fn tail(a: &[i16], b: &[i16], from: usize) -> u64 {
        a[from..]
            .iter()
            .zip(&b[from..])
            .map(|(&x, &y)| u64::from(x.wrapping_sub(y).unsigned_abs()))
            .sum()
    }

    /// [`super::l1_one`].
    #[inline]
    #[target_feature(enable = "avx512bw")]
    pub(super) fn l1_one(a: &[i16], b: &[i16]) -> u64 {
        let full = b.len() / LANES * LANES;
        let mut total = 0u64;
        let mut at = 0;
        while at < full {
            let end = (at + CHUNK).min(full);
            let mut sum = _mm512_setzero_si512();
            while at < end {
                sum = _mm512_add_epi32(sum, distance(load(a, at), load(b, at)));
                at += LANES;
            }
            total += u64::from(_mm512_reduce_add_epi32(sum) as u32);
        }
        total + tail(a, b, full)
    }

    /// [`super::l1_tile`].
    #[inline]
    #[target_feature(enable = "avx512bw")]
    pub(super) fn l1_tile(a: [&[i16]; TILE], b: &[i16]) -> [u64; TILE] {
        let full = b.len() / LANES * LANES;
        let mut total = [0u64; TILE];
        let mut at = 0;
        while at < full {
            let end = (at + CHUNK).min(full);
            let mut sums = [_mm512_setzero_si512(); TILE];
            while at < end {
                let y = load(b, at);
                for (sum, x) in sums.iter_mut().zip(a) {
                    *sum = _mm512_add_epi32(*sum, distance(load(x, at), y));
                }
                at += LANES;
            }
            for (t, sum) in total.iter_mut().zip(sums) {
                *t += u64::from(_mm512_reduce_add_epi32(sum) as u32);
            }
        }
        for (t, x) in total.iter_mut().zip(a) {
            *t += tail(x, b, full);
        }
        total
    }
}

/// Classes per tile: a tile's code vectors are compared with each later class in one
/// sweep, so the later class is read once for `TILE` pairs.
const TILE: usize = 4;

/// The loop nest of [`max_l1_codes`] with the baseline kernels [`l1_one`] and [`l1_tile`].
#[inline(always)]
fn max_l1_portable(classes: &[&[i16]]) -> u64 {
    max_l1_nest(classes, l1_one, l1_tile)
}

/// The loop nest of [`max_l1_codes`]: tiles of [`TILE`] classes, the pairs within a tile
/// (`one`), then each later class against the whole tile (`tile`).
#[inline(always)]
fn max_l1_nest(
    classes: &[&[i16]],
    one: impl Fn(&[i16], &[i16]) -> u64,
    tile: impl Fn([&[i16]; TILE], &[i16]) -> [u64; TILE],
) -> u64 {
    let k = classes.len();
    let mut best = 0u64;
    for t in (0..k).step_by(TILE) {
        let end = (t + TILE).min(k);
        for a in t..end {
            for b in a + 1..end {
                best = best.max(one(classes[a], classes[b]));
            }
        }
        // Only the last tile can be partial, and no class follows it.
        if end - t == TILE {
            let tiled: [&[i16]; TILE] = std::array::from_fn(|i| classes[t + i]);
            for b in &classes[end..] {
                best = best.max(tile(tiled, b).into_iter().max().unwrap_or(0));
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
        // The dispatched kernels (AVX-512BW here where the CPU has it) at the extremes:
        // within a tile, and a tile against a later class.
        assert_eq!(max_l1_codes(&[&hi, &lo]), most);
        assert_eq!(max_l1_codes(&[&lo, &lo, &lo, &lo, &hi]), most);
        assert_eq!(max_l1_codes(&[&lo, &lo, &lo, &lo, &lo]), 0);
    }

    /// The tiled, dispatched maximum equals a plain loop over every pair, for class counts
    /// around the tile size and lengths around the vector widths.
    #[test]
    fn the_tiled_maximum_is_the_plain_maximum() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for k in [0usize, 1, 2, 3, 4, 5, 7, 8, 9, 13] {
            for len in [1usize, 15, 16, 31, 32, 33, 64, 65, 100] {
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

    /// The codes and error of one value at a time in row order, as the coding is defined
    /// (independent of the lanes): `q = round((x − o_r) / h)` clamped, `E = Σ |x − o_r − h q|`.
    fn reference(q: &Quantizer, class: ArrayView2<f32>) -> (Vec<i16>, f64) {
        let mut codes = Vec::new();
        let mut error = 0.0f64;
        for (row, &o) in class.rows().into_iter().zip(&q.offsets) {
            for &v in row {
                let centred = f64::from(v) - f64::from(o);
                let c = (centred / q.step).round().clamp(-16383.0, 16383.0);
                codes.push(c as i16);
                error += (centred - q.step * c).abs();
            }
        }
        (codes, error)
    }

    #[test]
    fn a_non_finite_value_is_coded_zero_and_the_error_is_infinite() {
        let fit = Array2::from_shape_vec((2, 9), (0..18).map(|i| i as f32).collect()).unwrap();
        let q = Quantizer::fit(&[fit.view()]);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut c = fit.clone();
            c[[1, 3]] = bad;
            let (codes, e) = q.quantize(c.view());
            assert_eq!(e, f64::INFINITY, "{bad}");
            let (want, _) = reference(&q, fit.view());
            for (i, (&got, &w)) in codes.iter().zip(&want).enumerate() {
                assert_eq!(got, if i == 9 + 3 { 0 } else { w }, "value {i} with {bad}");
            }
        }
    }

    /// Every compiled build of the coding loop this CPU can run gives the baseline's bits
    /// (on an AVX-512 machine the AVX2 build is otherwise never reached).
    #[test]
    fn every_build_of_the_coding_loop_gives_the_same_bits() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for (rows, cols) in [(1usize, 1usize), (3, 8), (5, 13), (128, 8), (2, 40)] {
            let fit = Array2::from_shape_fn((rows, cols), |_| rng.r#gen::<f32>() - 0.5);
            let q = Quantizer::fit(&[fit.view()]);
            let class = Array2::from_shape_fn((rows, cols), |_| (rng.r#gen::<f32>() - 0.5) * 3.0);
            let values = class.as_slice().unwrap();
            let mut want = vec![0i16; values.len()];
            let e = code_portable(values, cols, &q.offsets, q.step, &mut want).unwrap();
            #[cfg(target_arch = "x86_64")]
            {
                let mut got = vec![0i16; values.len()];
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    let g = unsafe { code_avx2(values, cols, &q.offsets, q.step, &mut got) };
                    assert_eq!((&got, g.map(f64::to_bits)), (&want, Some(e.to_bits())));
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F (checked just above).
                    let g = unsafe { code_avx512(values, cols, &q.offsets, q.step, &mut got) };
                    assert_eq!((&got, g.map(f64::to_bits)), (&want, Some(e.to_bits())));
                }
            }
        }
    }

    #[test]
    fn an_empty_class_has_no_codes_and_no_error() {
        for (rows, cols) in [(0usize, 4usize), (3, 0)] {
            let q = Quantizer::from_ranges(&vec![0.0; rows], &vec![1.0; rows]);
            let class = Array2::<f32>::zeros((rows, cols));
            assert_eq!(q.quantize(class.view()), (vec![], 0.0));
        }
    }

    #[test]
    fn codes_convert_exactly() {
        for q in -Q_MAX..=Q_MAX {
            assert_eq!(to_code(f64::from(q)), q);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// The dispatched coding (AVX-512F or AVX2 here where the CPU has them), the
        /// baseline loop and the one-value-at-a-time path of a strided view give the same
        /// codes and error bit for bit; the codes are the definition's, and the error is its
        /// sum up to the order of summation, values clamped or not.
        #[test]
        fn every_coding_path_agrees_with_the_definition(
            rows in 1usize..6,
            cols in 1usize..20,
            spread in prop_oneof![Just(1.0f32), Just(3.0f32), Just(40.0f32)],
            seed in any::<u64>(),
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let fit = Array2::from_shape_fn((rows, cols), |_| rng.r#gen::<f32>() - 0.5);
            let q = Quantizer::fit(&[fit.view()]);
            // Beyond the fitted range by up to `spread` times it: some values clamped.
            let class = Array2::from_shape_fn((rows, cols), |_| (rng.r#gen::<f32>() - 0.5) * spread);
            let (codes, error) = q.quantize(class.view());
            let (want, sum) = reference(&q, class.view());
            prop_assert_eq!(&codes, &want);
            prop_assert!((error - sum).abs() <= 1e-9 * (1.0 + sum), "{} against {}", error, sum);
            let values = class.as_slice().unwrap();
            let mut portable = vec![0i16; values.len()];
            let e = code_portable(values, cols, &q.offsets, q.step, &mut portable);
            prop_assert_eq!(&portable, &codes);
            prop_assert_eq!(e.map(f64::to_bits), Some(error.to_bits()));
            // The same values in a column-major array: a strided view, coded one by one.
            let strided = class.t().as_standard_layout().into_owned().reversed_axes();
            prop_assert!(strided.as_slice().is_none() || rows == 1 || cols == 1);
            let (c, e) = q.quantize(strided.view());
            prop_assert_eq!(&c, &codes);
            prop_assert_eq!(e.to_bits(), error.to_bits());
        }
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
