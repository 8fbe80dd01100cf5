//! Sorting many short samples at once: the columns of a sample-major matrix.
//!
//! The sliced U-Score projects every sample of a class onto `P` directions for each unit and
//! sorts each unit-direction's `n` values: millions of rows of a few dozen values. A
//! projection comes out of the matrix product *sample-major* (`[n, columns]`: value `i` of
//! column `c` at `i · columns + c`), so the values of one sort are strided. [`ColumnSorter`]
//! sorts a block of neighbouring columns together with one fixed sequence of
//! compare-exchanges (Batcher's merge-exchange network, Knuth TAOCP vol. 3 §5.2.2
//! Algorithm M), applied lane-wise over the block: each step is a branch-free minimum and
//! maximum over contiguous memory, which the compiler vectorises. The values are compared
//! through integer keys that order them exactly as [`f32::total_cmp`], so the result is the
//! same, bit for bit, as sorting each column with `sort_by(f32::total_cmp)`.
//!
//! ```
//! // Three samples (rows) of two columns; each column comes back as a sorted row.
//! let values = [3.0f32, -1.0, 1.0, 5.0, 2.0, 0.0];
//! let sorter = fair_stats::ColumnSorter::new(3);
//! let mut rows = vec![0.0; 6];
//! sorter.sort_into(&values, 0, &mut rows);
//! assert_eq!(rows, [1.0, 2.0, 3.0, -1.0, 0.0, 5.0]);
//! ```

/// The largest sample size sorted by the network; longer columns are sorted one by one
/// (the network's cost grows as `n · log² n`).
const NETWORK_MAX: usize = 256;

/// Bytes of keys a block of columns holds while it is sorted (about an L1 data cache).
const BLOCK_BYTES: usize = 16 * 1024;

/// Sorts the columns of sample-major matrices with `n` rows (see the module docs).
#[derive(Debug, Clone)]
pub struct ColumnSorter {
    n: usize,
    /// The compare-exchanges `(i, j)`, `i < j`, in order; empty when `n` is above
    /// [`NETWORK_MAX`] (the columns are then sorted one by one).
    steps: Vec<(usize, usize)>,
}

impl ColumnSorter {
    /// A sorter for columns of `n` values.
    pub fn new(n: usize) -> Self {
        let steps = if n <= NETWORK_MAX {
            merge_exchange(n)
        } else {
            Vec::new()
        };
        ColumnSorter { n, steps }
    }

    /// The number of values in each column.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the columns are empty (`n = 0`).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Sorts columns `first .. first + out.len() / n` of `values` (`n` rows of
    /// `values.len() / n` columns, row-major) ascending in [`f32::total_cmp`] order and writes
    /// them as rows: `out[c·n .. (c+1)·n]` is column `first + c`.
    ///
    /// Independent calls on disjoint `out` blocks may run in parallel (e.g. over
    /// `par_chunks_mut`), sharing `values`.
    ///
    /// # Panics
    /// When `values.len()` or `out.len()` is not a multiple of `n`, or the columns asked for
    /// lie outside `values`.
    pub fn sort_into(&self, values: &[f32], first: usize, out: &mut [f32]) {
        let n = self.n;
        if n == 0 {
            assert!(out.is_empty(), "columns of no values have no output");
            return;
        }
        assert!(
            values.len().is_multiple_of(n) && out.len().is_multiple_of(n),
            "{} values and an output of {} do not split into columns of {n}",
            values.len(),
            out.len()
        );
        let columns = values.len() / n;
        let count = out.len() / n;
        assert!(
            first + count <= columns,
            "columns {first}..{} asked of {columns}",
            first + count
        );
        if self.steps.is_empty() && n > 1 {
            let mut keys = vec![0; n];
            for (c, row) in out.chunks_exact_mut(n).enumerate() {
                for (i, k) in keys.iter_mut().enumerate() {
                    *k = key(values[i * columns + first + c]);
                }
                keys.sort_unstable();
                for (x, &k) in row.iter_mut().zip(&keys) {
                    *x = unkey(k);
                }
            }
            return;
        }
        let block = (BLOCK_BYTES / 4 / n).clamp(8, 1024);
        let mut keys = vec![0i32; n * block.min(count)];
        for (b, out) in out.chunks_mut(n * block).enumerate() {
            let width = out.len() / n;
            let start = first + b * block;
            let keys = &mut keys[..n * width];
            // Lane layout: value i of the block's column c at i · width + c.
            for (i, lane) in keys.chunks_exact_mut(width).enumerate() {
                let row = &values[i * columns + start..i * columns + start + width];
                for (k, &x) in lane.iter_mut().zip(row) {
                    *k = key(x);
                }
            }
            for &(i, j) in &self.steps {
                let (low, high) = keys.split_at_mut(j * width);
                let a = &mut low[i * width..(i + 1) * width];
                let b = &mut high[..width];
                for (x, y) in a.iter_mut().zip(b.iter_mut()) {
                    let (p, q) = (*x, *y);
                    *x = p.min(q);
                    *y = p.max(q);
                }
            }
            for (c, row) in out.chunks_exact_mut(n).enumerate() {
                for (i, x) in row.iter_mut().enumerate() {
                    *x = unkey(keys[i * width + c]);
                }
            }
        }
    }

    /// All columns of `values` (`n` rows, row-major) sorted, as rows of a new
    /// `[values.len() / n, n]` buffer (row-major).
    pub fn sorted(&self, values: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; values.len()];
        self.sort_into(values, 0, &mut out);
        out
    }
}

/// The signed integer whose order is [`f32::total_cmp`]'s order of the floats (negative
/// floats have their magnitude bits flipped).
fn key(x: f32) -> i32 {
    let b = x.to_bits() as i32;
    b ^ ((((b >> 31) as u32) >> 1) as i32)
}

/// The float of [`key`] (the map is its own inverse).
fn unkey(k: i32) -> f32 {
    f32::from_bits((k ^ ((((k >> 31) as u32) >> 1) as i32)) as u32)
}

/// Batcher's merge-exchange sorting network for `n` inputs (Knuth, TAOCP vol. 3, §5.2.2,
/// Algorithm M): the compare-exchanges `(i, i + d)` in the order they are applied.
fn merge_exchange(n: usize) -> Vec<(usize, usize)> {
    let mut steps = Vec::new();
    if n < 2 {
        return steps;
    }
    let t = usize::BITS - (n - 1).leading_zeros(); // ⌈log2 n⌉
    let mut p = 1usize << (t - 1);
    while p > 0 {
        let (mut q, mut r, mut d) = (1usize << (t - 1), 0usize, p);
        loop {
            for i in 0..n - d {
                if i & p == r {
                    steps.push((i, i + d));
                }
            }
            if q == p {
                break;
            }
            d = q - p;
            q >>= 1;
            r = p;
        }
        p >>= 1;
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every 0/1 input of `n` values is sorted by the network (the 0-1 principle: a
    /// comparator network that sorts all of them sorts every input).
    #[test]
    fn network_sorts_every_zero_one_input_up_to_16() {
        for n in 0..=16usize {
            let steps = merge_exchange(n);
            for bits in 0u32..(1 << n) {
                let mut v: Vec<u32> = (0..n).map(|i| (bits >> i) & 1).collect();
                for &(i, j) in &steps {
                    if v[i] > v[j] {
                        v.swap(i, j);
                    }
                }
                assert!(v.windows(2).all(|w| w[0] <= w[1]), "n {n}, input {bits:b}");
            }
        }
    }

    /// Batcher's network for 32 inputs has 191 comparators (Knuth's table).
    #[test]
    fn network_size_matches_knuth() {
        assert_eq!(merge_exchange(32).len(), 191);
        assert_eq!(merge_exchange(16).len(), 63);
        assert_eq!(merge_exchange(8).len(), 19);
    }

    #[test]
    fn keys_order_as_total_cmp_and_invert() {
        let xs = [
            f32::NEG_INFINITY,
            -f32::MAX,
            -1.0,
            -f32::MIN_POSITIVE,
            -1e-45,
            -0.0,
            0.0,
            1e-45,
            f32::MIN_POSITIVE,
            1.0,
            f32::MAX,
            f32::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(key(w[0]) < key(w[1]), "{} vs {}", w[0], w[1]);
        }
        for x in xs {
            assert_eq!(unkey(key(x)).to_bits(), x.to_bits());
        }
    }

    /// Many columns: several blocks, the last one short.
    #[test]
    fn many_columns_span_blocks() {
        let (n, columns) = (5, 3001);
        let values: Vec<f32> = (0..n * columns)
            .map(|i| ((i * 7919) % 13) as f32 - 6.0)
            .collect();
        let out = ColumnSorter::new(n).sorted(&values);
        for c in 0..columns {
            let mut want: Vec<f32> = (0..n).map(|i| values[i * columns + c]).collect();
            want.sort_by(f32::total_cmp);
            assert_eq!(&out[c * n..(c + 1) * n], &want[..], "column {c}");
        }
    }

    /// Values with many ties, both zeros, extremes and NaNs.
    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![
            (-3i32..3).prop_map(|v| v as f32 * 0.5),
            Just(-0.0f32),
            Just(0.0f32),
            Just(f32::MAX),
            Just(-f32::MAX),
            Just(1e-45f32),
            any::<f32>(),
        ]
    }

    proptest! {
        /// Equal, bit for bit, to each column sorted with `sort_by(f32::total_cmp)`, for
        /// network and long columns, whole or from an offset.
        #[test]
        fn columns_sort_as_total_cmp(
            (n, columns, values) in (0usize..300, 1usize..40).prop_flat_map(|(n, c)| {
                (Just(n), Just(c), proptest::collection::vec(value(), n * c))
            }),
            from in 0usize..40,
        ) {
            let sorter = ColumnSorter::new(n);
            let first = from % columns;
            let mut out = vec![f32::NAN; (columns - first) * n];
            sorter.sort_into(&values, first, &mut out);
            for c in first..columns {
                let mut want: Vec<f32> = (0..n).map(|i| values[i * columns + c]).collect();
                want.sort_by(f32::total_cmp);
                let got = &out[(c - first) * n..(c - first + 1) * n];
                prop_assert_eq!(
                    got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "column {}", c
                );
            }
        }
    }
}
