//! Bilinear resampling of 8-bit images as Pillow does it (`Image.resize(..., BILINEAR)`, which
//! torchvision's `Resize` calls on PIL images): a triangle filter whose support widens with
//! the downscaling factor (antialiasing), separable, horizontal pass first, 8-bit
//! intermediate, fixed-point weights with 22 fractional bits and round-half-up.
//!
//! Written from the algorithm's description (support = max(scale, 1), centre of output pixel
//! `x` at `(x + 0.5)·scale`, taps from `⌊centre − support + 0.5⌋` to
//! `⌊centre + support + 0.5⌋` clamped to the image, weights normalised to sum 1); on PNG
//! input it reproduces PIL's bytes exactly (see `crates/data/tests/folder.rs`).

/// Fixed-point fraction bits of the weights (32 − 8 − 2, as in Pillow's 8-bit path).
const PRECISION_BITS: u32 = 22;

/// The taps of one axis, for the output positions `first .. first + count` only (the window
/// that is computed, so memory follows the window, not the whole resized image): for output
/// position `o`, input positions `start[o - first] .. + taps[o - first]` with weights
/// `k[(o - first) * ksize ..][.. taps[o - first]]`.
struct Axis {
    first: usize,
    start: Vec<usize>,
    taps: Vec<usize>,
    ksize: usize,
    k: Vec<i32>,
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

impl Axis {
    /// Weights mapping `input` pixels onto `output` pixels (both ≥ 1), for the output
    /// positions `first .. first + count`. The kernel is at most `2·input/output + 3` taps
    /// wide, so this holds at most `2·input + 3·count` weights.
    fn new(input: usize, output: usize, first: usize, count: usize) -> Axis {
        let scale = input as f64 / output as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale; // the triangle's support is 1
        let ksize = support.ceil() as usize * 2 + 1;
        let mut axis = Axis {
            first,
            start: Vec::with_capacity(count),
            taps: Vec::with_capacity(count),
            ksize,
            k: vec![0; count * ksize],
        };
        let mut w = vec![0f64; ksize];
        for (i, o) in (first..first + count).enumerate() {
            let centre = (o as f64 + 0.5) * scale;
            // `as` truncates toward zero, like C's (int) cast.
            let lo = ((centre - support + 0.5) as i64).max(0) as usize;
            let hi = ((centre + support + 0.5) as i64).min(input as i64) as usize;
            let n = hi.saturating_sub(lo).min(ksize);
            let mut sum = 0.0;
            for (x, wx) in w.iter_mut().enumerate().take(n) {
                *wx = triangle((x as f64 + lo as f64 - centre + 0.5) / filterscale);
                sum += *wx;
            }
            for (x, &wx) in w.iter().enumerate().take(n) {
                let v = if sum != 0.0 { wx / sum } else { wx };
                let f = v * f64::from(1u32 << PRECISION_BITS);
                axis.k[i * ksize + x] = if f < 0.0 {
                    (f - 0.5) as i32
                } else {
                    (f + 0.5) as i32
                };
            }
            axis.start.push(lo);
            axis.taps.push(n);
        }
        axis
    }

    fn weights(&self, o: usize) -> (usize, &[i32]) {
        let i = o - self.first;
        let k = &self.k[i * self.ksize..][..self.taps[i]];
        (self.start[i], k)
    }
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// A rectangle of pixels: left, top, width, height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rect {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// Resizes the `region` of `src` (interleaved, `channels` per pixel, `stride_w` pixels per
/// row) to `out_w × out_h` — as if the region had been cropped out first — and returns only
/// the output pixels inside `window` (a rectangle of the `out_w × out_h` result), interleaved.
/// Computing a window gives exactly the bytes of resizing the whole region and cropping.
pub(crate) fn resize_window(
    src: &[u8],
    stride_w: usize,
    channels: usize,
    region: Rect,
    out_w: usize,
    out_h: usize,
    window: Rect,
) -> Vec<u8> {
    debug_assert!(window.x + window.w <= out_w && window.y + window.h <= out_h);
    if window.w == 0 || window.h == 0 {
        return Vec::new();
    }
    let ax = Axis::new(region.w, out_w, window.x, window.w);
    let ay = Axis::new(region.h, out_h, window.y, window.h);
    // Region rows the window's output rows read (the taps move monotonically).
    let first = ay.start[0];
    let last = (0..window.h)
        .map(|i| ay.start[i] + ay.taps[i])
        .max()
        .unwrap_or(first);
    let row_len = window.w * channels;
    // Horizontal pass over the needed rows, window columns only.
    let mut tmp = vec![0u8; (last - first) * row_len];
    for (r, dst) in tmp.chunks_exact_mut(row_len).enumerate() {
        let y = region.y + first + r;
        let row = &src[(y * stride_w + region.x) * channels..][..region.w * channels];
        match channels {
            1 => horizontal::<1>(row, dst, &ax, window.x),
            3 => horizontal::<3>(row, dst, &ax, window.x),
            n => horizontal_n(row, dst, &ax, window.x, n),
        }
    }
    // Vertical pass: whole rows at a time (vectorises).
    let mut out = vec![0u8; window.h * row_len];
    let mut acc = vec![0i32; row_len];
    for (r, dst) in out.chunks_exact_mut(row_len).enumerate() {
        let (y0, k) = ay.weights(window.y + r);
        let y0 = y0 - first;
        acc.fill(1 << (PRECISION_BITS - 1));
        for (t, &kt) in k.iter().enumerate() {
            let row = &tmp[(y0 + t) * row_len..][..row_len];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += i32::from(p) * kt;
            }
        }
        for (o, &a) in dst.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// One row of the horizontal pass, `NC` channels per pixel.
fn horizontal<const NC: usize>(row: &[u8], dst: &mut [u8], ax: &Axis, x_offset: usize) {
    for (c, px) in dst.chunks_exact_mut(NC).enumerate() {
        let (x0, k) = ax.weights(x_offset + c);
        let taps = &row[x0 * NC..][..k.len() * NC];
        let mut acc = [1i32 << (PRECISION_BITS - 1); NC];
        for (p, &kt) in taps.chunks_exact(NC).zip(k) {
            for ch in 0..NC {
                acc[ch] += i32::from(p[ch]) * kt;
            }
        }
        for ch in 0..NC {
            px[ch] = clip8(acc[ch]);
        }
    }
}

/// [`horizontal`] for any channel count.
fn horizontal_n(row: &[u8], dst: &mut [u8], ax: &Axis, x_offset: usize, nc: usize) {
    for (c, px) in dst.chunks_exact_mut(nc).enumerate() {
        let (x0, k) = ax.weights(x_offset + c);
        for (ch, out) in px.iter_mut().enumerate() {
            let mut acc: i32 = 1 << (PRECISION_BITS - 1);
            for (t, &kt) in k.iter().enumerate() {
                acc += i32::from(row[(x0 + t) * nc + ch]) * kt;
            }
            *out = clip8(acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_the_identity() {
        let src: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let full = Rect {
            x: 0,
            y: 0,
            w: 5,
            h: 4,
        };
        assert_eq!(resize_window(&src, 5, 3, full, 5, 4, full), src);
    }

    #[test]
    fn a_window_equals_resizing_then_cropping() {
        let src: Vec<u8> = (0..37 * 23).map(|i| (i * 31 % 256) as u8).collect();
        let full = Rect {
            x: 0,
            y: 0,
            w: 37,
            h: 23,
        };
        let whole = resize_window(
            &src,
            37,
            1,
            full,
            17,
            11,
            Rect {
                w: 17,
                h: 11,
                ..full
            },
        );
        let win = Rect {
            x: 3,
            y: 2,
            w: 9,
            h: 7,
        };
        let part = resize_window(&src, 37, 1, full, 17, 11, win);
        for r in 0..7 {
            assert_eq!(part[r * 9..][..9], whole[(r + 2) * 17 + 3..][..9]);
        }
    }

    #[test]
    fn a_constant_image_stays_constant() {
        let src = vec![77u8; 40 * 30 * 3];
        let full = Rect {
            x: 0,
            y: 0,
            w: 40,
            h: 30,
        };
        for (w, h) in [(13, 9), (40, 30), (97, 61)] {
            let out = resize_window(&src, 40, 3, full, w, h, Rect { w, h, ..full });
            assert!(out.iter().all(|&p| p == 77), "{w}×{h}");
        }
    }
}
