//! Constants and constant folding.
//!
//! Exporters write shape arithmetic into the graph: `Shape → Gather → Unsqueeze → Concat →
//! Reshape` to flatten, `Constant` nodes for axes, `Cast`s and divisions. The importer
//! evaluates every node whose inputs are all constants here, so that what reaches the op
//! mapping is a plain constant (`Reshape(x, [batch, -1])`). Integers carry one symbol, the
//! batch size, which `Shape` of a computed tensor produces: `Shape(x)[0]` folds to
//! [`Int::BATCH`], and a reshape target `[batch, -1]` is recognised as a flatten without
//! knowing the batch size. The symbol may carry a known factor, [`Int::Batch`]`(k)` for
//! `k · batch`: the exporters compute `batch · heads` (`torch.nn.MultiheadAttention`'s
//! `[T, N·H, d]`) or `tokens · batch` (rows `[T·N, E]`) from a dynamic batch size, and the
//! readers of such targets compare the factor. Arithmetic that leaves this form (`batch +
//! 1`, `batch · batch`, `batch / 3`) is an error naming what was computed.
//!
//! Every constant the folder builds is paid for from a [`Budget`] before it is allocated,
//! in the bytes it holds in memory. Ops that only change the dimensions (`Identity`,
//! `Reshape`, `Squeeze`, a `Cast` to the same kind) share the data of their input.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::MAX_FOLDED_BYTES;

/// The most elements one folded constant may hold (2^26); far above any shape computation.
const MAX_FOLDED: usize = 1 << 26;

/// The largest tensor read from a file (elements): 2^31. Also bounds the non-zero sizes of
/// a view, which holds no elements of its own.
pub(crate) const MAX_TENSOR: usize = 1 << 31;

/// The highest rank of a folded constant (NumPy 2's limit); also the longest shape, axes or
/// perm a node may give.
pub(crate) const MAX_RANK: usize = 64;

/// One integer of a constant: a number, or a known multiple of the (symbolic) batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Int {
    /// A known number.
    N(i64),
    /// `k` times the batch size of the network input (`k` is never 0: `0 · batch` is
    /// `N(0)`).
    Batch(i64),
}

impl Int {
    /// The batch size itself.
    pub const BATCH: Int = Int::Batch(1);

    /// `k · batch`, or the number 0 when `k` is 0: the only way to build a multiple of the
    /// batch size from a computed `k`.
    pub(crate) fn batch_times(k: i64) -> Int {
        if k == 0 { Int::N(0) } else { Int::Batch(k) }
    }
}

/// Bytes one float element takes in memory.
pub(crate) const F32_BYTES: usize = size_of::<f32>();
/// Bytes one integer element takes in memory (an [`Int`]: 16, whatever the ONNX type).
pub(crate) const INT_BYTES: usize = size_of::<Int>();

/// The elements of a constant.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Data {
    /// Floating-point data (float32; doubles are narrowed).
    F32(Vec<f32>),
    /// Integer (and boolean) data.
    Int(Vec<Int>),
}

impl Data {
    /// Bytes one element takes in memory.
    pub fn elem_bytes(&self) -> usize {
        match self {
            Data::F32(_) => F32_BYTES,
            Data::Int(_) => INT_BYTES,
        }
    }
}

/// A constant tensor: dimensions and row-major data. The data is shared between constants
/// that differ only in their dimensions (a `Reshape` of an initializer copies nothing).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Const {
    pub dims: Vec<usize>,
    pub data: Rc<Data>,
}

impl Const {
    /// A float constant.
    pub fn f32(dims: Vec<usize>, v: Vec<f32>) -> Self {
        Const {
            dims,
            data: Rc::new(Data::F32(v)),
        }
    }

    /// An integer constant of known values.
    pub fn i64(dims: Vec<usize>, v: impl IntoIterator<Item = i64>) -> Self {
        Const::ints_of(dims, v.into_iter().map(Int::N).collect())
    }

    /// An integer constant.
    pub fn ints_of(dims: Vec<usize>, v: Vec<Int>) -> Self {
        Const {
            dims,
            data: Rc::new(Data::Int(v)),
        }
    }

    /// The same data under other dimensions (as many elements).
    pub fn view(&self, dims: Vec<usize>) -> Self {
        Const {
            dims,
            data: Rc::clone(&self.data),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &*self.data {
            Data::F32(v) => v.len(),
            Data::Int(v) => v.len(),
        }
    }

    /// The values as known integers (error for floats or a symbolic batch size).
    pub fn ints(&self) -> Result<Vec<i64>, String> {
        match &*self.data {
            Data::Int(v) => v.iter().map(|&i| known(i)).collect(),
            Data::F32(_) => Err("expected integers, found floating-point data".to_owned()),
        }
    }

    /// The values of a shape, axes or starts/ends list: known integers, at most
    /// [`MAX_RANK`] of them (checked before anything is converted).
    pub fn short_ints(&self) -> Result<Vec<i64>, String> {
        if self.len() > MAX_RANK {
            return Err(format!(
                "expected a list of at most {MAX_RANK} values (a shape, axes or positions), found {} values (shape {:?})",
                self.len(),
                self.dims
            ));
        }
        self.ints()
    }

    /// The single value of a one-element constant, as a float.
    pub fn scalar_f32(&self) -> Result<f32, String> {
        let v = match &*self.data {
            Data::F32(v) if v.len() == 1 => v[0],
            Data::Int(v) if v.len() == 1 => known(v[0])? as f32,
            _ => {
                return Err(format!(
                    "expected a single value, found {} values (shape {:?})",
                    self.len(),
                    self.dims
                ));
            }
        };
        Ok(v)
    }

    /// The elements at the flat positions `idx`, as a constant of shape `dims` (as many
    /// elements as `idx` yields; the output is allocated once).
    fn pick(&self, dims: Vec<usize>, idx: impl Iterator<Item = usize>) -> Const {
        let n = dims.iter().product();
        let data = match &*self.data {
            Data::F32(v) => {
                let mut out = Vec::with_capacity(n);
                out.extend(idx.map(|i| v[i]));
                Data::F32(out)
            }
            Data::Int(v) => {
                let mut out = Vec::with_capacity(n);
                out.extend(idx.map(|i| v[i]));
                Data::Int(out)
            }
        };
        Const {
            dims,
            data: Rc::new(data),
        }
    }
}

/// The words of every error about a value that depends on the symbolic batch size (the
/// importer adds a hint to export with a fixed batch when the file's batch is dynamic).
pub(crate) const BATCH_UNKNOWN: &str = "the batch size, which is not known";

/// A known integer, or the error for a multiple of the symbolic batch size.
fn known(i: Int) -> Result<i64, String> {
    match i {
        Int::N(n) => Ok(n),
        Int::Batch(_) => Err(format!(
            "the value depends on {BATCH_UNKNOWN} when importing"
        )),
    }
}

/// What one import may allocate beyond the float tensors the file stores: see
/// [`MAX_FOLDED_BYTES`]. Charges are made before the memory is allocated.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    /// Bytes of the constants folded so far, and of integer tensors read from the file.
    folded: usize,
    /// Bytes of the float tensors read from the file (the model's own size).
    stored: usize,
    /// Bytes of the layers' parameters.
    weights: usize,
    /// Bytes read so far from each external data file.
    external: HashMap<PathBuf, u64>,
}

impl Budget {
    /// Bytes charged so far: the folded constants, and the parameters beyond the float
    /// tensors the file stores (a tensor shared by several layers is copied for each).
    pub fn used(&self) -> usize {
        self.folded
            .saturating_add(self.weights.saturating_sub(self.stored))
    }

    /// Pays for a new constant of shape `dims` whose elements take `elem` bytes each: its
    /// dimensions and elements. Errors, before anything is allocated, when the product of
    /// its non-zero sizes passes 2^26 elements (which also keeps every stride and index
    /// computation from overflowing), when its rank passes [`MAX_RANK`], or when it does not
    /// fit in the budget. Returns its number of elements.
    pub fn take(&mut self, dims: &[usize], elem: usize) -> Result<usize, String> {
        let n = bounded_numel(dims, MAX_FOLDED).ok_or_else(|| {
            format!(
                "a constant of shape {dims:?} is too large to fold (more than {MAX_FOLDED} elements)"
            )
        })?;
        self.charge(dims, n * elem)?;
        Ok(n)
    }

    /// Pays for `bytes` of elements and for the dimensions `dims` (rank at most
    /// [`MAX_RANK`]).
    fn charge(&mut self, dims: &[usize], bytes: usize) -> Result<(), String> {
        if dims.len() > MAX_RANK {
            return Err(format!(
                "a constant of rank {} is more than the {MAX_RANK} dimensions fair-pruner folds",
                dims.len()
            ));
        }
        let bytes = bytes.saturating_add(size_of_val(dims));
        let left = MAX_FOLDED_BYTES.saturating_sub(self.used());
        if bytes > left {
            return Err(format!(
                "a constant of shape {dims:?} takes {bytes} bytes in memory, more than the {left} bytes left of the budget of {MAX_FOLDED_BYTES} bytes (MAX_FOLDED_BYTES) for folded constants, integer tensors and copies of shared weights; shape computations need a few kilobytes"
            ));
        }
        self.folded += bytes;
        Ok(())
    }

    /// Pays for a view of shape `dims` that shares existing data (its dimensions only).
    /// Errors when its rank passes [`MAX_RANK`], or when the product of its non-zero sizes
    /// passes [`MAX_TENSOR`] (so that no stride computation over it can overflow).
    pub fn take_view(&mut self, dims: &[usize]) -> Result<(), String> {
        if bounded_numel(dims, MAX_TENSOR).is_none() {
            return Err(format!("shape {dims:?} is too large"));
        }
        self.charge(dims, 0)
    }

    /// Records that a tensor reads `length` bytes of the external data file `path`, which
    /// holds `size`: errors when the tensors read more than `size` from it together (tensors
    /// that share bytes, which would decode one small file many times over).
    pub fn read_external(&mut self, path: &Path, size: u64, length: u64) -> Result<(), String> {
        let read = self.external.entry(path.to_owned()).or_default();
        *read = read.saturating_add(length);
        if *read > size {
            return Err(format!(
                "the tensors read {read} bytes of this {size}-byte file together, so some of them share bytes; fair-pruner reads each byte of external data once"
            ));
        }
        Ok(())
    }

    /// Records `bytes` of float data read from the file: the model's own size, not charged.
    pub fn store(&mut self, bytes: usize) {
        self.stored = self.stored.saturating_add(bytes);
    }

    /// Takes back a layer parameter of `bytes` recorded by [`Budget::weight`]: a layer that
    /// others replace with its own values (a fused projection split into parts).
    pub fn unweight(&mut self, bytes: usize) {
        self.weights = self.weights.saturating_sub(bytes);
    }

    /// Records a layer parameter of `bytes`; errors when the parameters pass the float
    /// tensors read from the file by more than the budget leaves.
    pub fn weight(&mut self, bytes: usize) -> Result<(), String> {
        self.weights = self.weights.saturating_add(bytes);
        if self.used() > MAX_FOLDED_BYTES {
            return Err(format!(
                "the parameters take {} bytes, {} more than the {} bytes of float tensors the file stores (a tensor that several layers share is copied for each), and with {} bytes of folded constants this passes the budget of {MAX_FOLDED_BYTES} bytes (MAX_FOLDED_BYTES)",
                self.weights,
                self.weights.saturating_sub(self.stored),
                self.stored,
                self.folded
            ));
        }
        Ok(())
    }
}

/// The number of elements of `dims` when the product of its non-zero sizes is at most
/// `limit`, else `None`.
pub(crate) fn bounded_numel(dims: &[usize], limit: usize) -> Option<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d.max(1)))
        .filter(|&n| n <= limit)?;
    Some(dims.iter().product())
}

/// Row-major strides.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// The strides that read a tensor of (padded) shape `from` broadcast to the same rank:
/// 0 along the axes of size 1.
fn broadcast_strides(from: &[usize]) -> Vec<isize> {
    strides(from)
        .iter()
        .zip(from)
        .map(|(&s, &n)| if n == 1 { 0 } else { s as isize })
        .collect()
}

/// The flat positions of a strided view, in row-major order over `dims`: `base` plus the
/// sum over the axes of index × stride. Yields exactly the product of `dims` positions,
/// without storing them.
struct Walk {
    dims: Vec<usize>,
    strides: Vec<isize>,
    idx: Vec<usize>,
    pos: isize,
    left: usize,
}

impl Walk {
    fn new(dims: &[usize], strides: Vec<isize>, base: isize) -> Self {
        Walk {
            dims: dims.to_vec(),
            idx: vec![0; dims.len()],
            strides,
            pos: base,
            left: dims.iter().product(),
        }
    }
}

impl Iterator for Walk {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let here = self.pos as usize;
        for a in (0..self.dims.len()).rev() {
            self.idx[a] += 1;
            self.pos += self.strides[a];
            if self.idx[a] < self.dims[a] {
                break;
            }
            self.pos -= self.strides[a] * self.dims[a] as isize;
            self.idx[a] = 0;
        }
        Some(here)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Walk {}

/// Normalises a possibly negative axis for a tensor of rank `rank`.
pub(crate) fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r).contains(&v) {
        Ok(v as usize)
    } else {
        Err(format!("axis {a} is out of range for rank {rank}"))
    }
}

/// Pads `d` with leading ones to rank `rank`.
fn pad(d: &[usize], rank: usize) -> Vec<usize> {
    let mut v = vec![1; rank - d.len()];
    v.extend_from_slice(d);
    v
}

/// Element-wise `Add`, `Sub`, `Mul`, `Div`, `Mod` or `Pow` with NumPy broadcasting. `Pow`
/// raises floats to float or integer exponents (ONNX lets the exponent's type differ) and
/// integers to exponents 0..=63.
pub(crate) fn binary(op: &str, a: &Const, b: &Const, budget: &mut Budget) -> Result<Const, String> {
    let rank = a.dims.len().max(b.dims.len());
    let (da, db) = (pad(&a.dims, rank), pad(&b.dims, rank));
    let mut out = Vec::with_capacity(rank);
    for (&x, &y) in da.iter().zip(&db) {
        out.push(match (x, y) {
            _ if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(format!(
                    "shapes {:?} and {:?} do not broadcast",
                    a.dims, b.dims
                ));
            }
        });
    }
    let ia = Walk::new(&out, broadcast_strides(&da), 0);
    let ib = Walk::new(&out, broadcast_strides(&db), 0);
    let data = match (&*a.data, &*b.data) {
        (Data::F32(x), Data::F32(y)) => {
            budget.take(&out, F32_BYTES)?;
            let f = match op {
                "Add" => |p: f32, q: f32| p + q,
                "Sub" => |p: f32, q: f32| p - q,
                "Mul" => |p: f32, q: f32| p * q,
                "Mod" => return Err("Mod of floating-point constants is not evaluated".into()),
                "Pow" => |p: f32, q: f32| p.powf(q),
                _ => |p: f32, q: f32| p / q,
            };
            Data::F32(ia.zip(ib).map(|(i, j)| f(x[i], y[j])).collect())
        }
        (Data::F32(x), Data::Int(y)) if op == "Pow" => {
            budget.take(&out, F32_BYTES)?;
            let mut v = Vec::with_capacity(x.len().max(y.len()));
            for (i, j) in ia.zip(ib) {
                let Int::N(q) = y[j] else {
                    return Err("Pow with the batch size as exponent is not evaluated".into());
                };
                v.push(x[i].powf(q as f32));
            }
            Data::F32(v)
        }
        (Data::Int(x), Data::Int(y)) => {
            let mut v = Vec::with_capacity(budget.take(&out, INT_BYTES)?);
            for (i, j) in ia.zip(ib) {
                v.push(int_op(op, x[i], y[j])?);
            }
            Data::Int(v)
        }
        _ => {
            return Err(format!(
                "{op} of a floating-point and an integer constant (insert a Cast)"
            ));
        }
    };
    Ok(Const {
        dims: out,
        data: Rc::new(data),
    })
}

/// Integer arithmetic. A multiple of the batch size `a · batch` stays one through `Mul`
/// by a number, `Div` by a divisor of `a`, `Add`/`Sub` of 0 or of another multiple, and
/// `Mod` by a divisor of `a` is 0; anything else is an error (the value is not a multiple
/// of the batch size, or not known).
fn int_op(op: &str, x: Int, y: Int) -> Result<Int, String> {
    let overflow = || format!("{op} of {} and {} overflows", int_text(x), int_text(y));
    match (x, y) {
        (Int::N(p), Int::N(q)) => {
            let v = match op {
                "Add" => p.checked_add(q),
                "Sub" => p.checked_sub(q),
                "Mul" => p.checked_mul(q),
                "Pow" => match u32::try_from(q) {
                    Ok(e @ 0..=63) => p.checked_pow(e),
                    _ => return Err(format!("Pow of integers with exponent {q} (0..=63 only)")),
                },
                _ if q == 0 => return Err("integer division by zero".to_owned()),
                // ONNX's integer Mod (fmod = 0): the remainder takes the divisor's sign.
                "Mod" => p.checked_rem(q).map(|r| {
                    if r != 0 && (r < 0) != (q < 0) {
                        r + q
                    } else {
                        r
                    }
                }),
                _ => p.checked_div(q),
            };
            v.map(Int::N)
                .ok_or_else(|| format!("{op} of {p} and {q} overflows"))
        }
        (Int::Batch(a), Int::N(q)) | (Int::N(q), Int::Batch(a)) if op == "Mul" => {
            a.checked_mul(q).map(Int::batch_times).ok_or_else(overflow)
        }
        (Int::Batch(_), Int::N(0)) if matches!(op, "Div" | "Mod") => {
            Err("integer division by zero".to_owned())
        }
        (Int::Batch(a), Int::N(q)) if op == "Div" && a.checked_rem(q) == Some(0) => {
            a.checked_div(q).map(Int::Batch).ok_or_else(overflow)
        }
        // `a · batch` mod q is 0 when q divides a; mod -1 is always 0 (`i64::MIN % -1`
        // overflows in `checked_rem`, but the remainder is 0).
        (Int::Batch(a), Int::N(q)) if op == "Mod" && (q == -1 || a % q == 0) => Ok(Int::N(0)),
        (Int::Batch(_), Int::N(0)) if matches!(op, "Add" | "Sub") => Ok(x),
        (Int::N(0), Int::Batch(_)) if op == "Add" => Ok(y),
        (Int::N(0), Int::Batch(a)) if op == "Sub" => {
            a.checked_neg().map(Int::Batch).ok_or_else(overflow)
        }
        (Int::Batch(a), Int::Batch(b)) if matches!(op, "Add" | "Sub") => {
            let v = if op == "Add" {
                a.checked_add(b)
            } else {
                a.checked_sub(b)
            };
            v.map(Int::batch_times).ok_or_else(overflow)
        }
        _ => Err(format!(
            "{op} of {} and {} cannot be evaluated when importing: the result is not a known multiple of {BATCH_UNKNOWN} (shapes computed from the batch size are read when they are the batch size times a known number, e.g. torch.nn.MultiheadAttention's batch × heads)",
            int_text(x),
            int_text(y)
        )),
    }
}

/// An integer as text: the number, `batch` or `k·batch`.
pub(crate) fn int_text(i: Int) -> String {
    match i {
        Int::N(k) => k.to_string(),
        Int::Batch(1) => "batch".to_owned(),
        Int::Batch(k) => format!("{k}·batch"),
    }
}

/// Whether two integers are equal; a multiple of the batch size (at least 1) differs from
/// a number it cannot reach (`a · batch = m` needs `m / a` a whole number ≥ 1), else the
/// answer is not known.
fn int_eq(x: Int, y: Int) -> Result<bool, String> {
    match (x, y) {
        (Int::N(p), Int::N(q)) => Ok(p == q),
        (Int::Batch(a), Int::Batch(b)) => Ok(a == b),
        (Int::Batch(a), Int::N(m)) | (Int::N(m), Int::Batch(a)) => {
            // `checked_*` is `None` only for i64::MIN / -1, whose quotient is ≥ 1.
            let whole = m.checked_rem(a).is_none_or(|r| r == 0);
            if !whole || m.checked_div(a).is_some_and(|q| q < 1) {
                Ok(false)
            } else {
                Err(format!(
                    "whether {} equals {m} depends on the batch size, which is not known when importing",
                    int_text(Int::Batch(a))
                ))
            }
        }
    }
}

/// `Expand`: broadcasts `data` against `shape` (NumPy rules, either side may be 1).
pub(crate) fn expand(data: &Const, shape: &[i64], budget: &mut Budget) -> Result<Const, String> {
    let dims: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative size {d} in {shape:?}")))
        .collect::<Result<_, _>>()?;
    let rank = data.dims.len().max(dims.len());
    let (from, to) = (pad(&data.dims, rank), pad(&dims, rank));
    let mut out = Vec::with_capacity(rank);
    for (&a, &b) in from.iter().zip(&to) {
        out.push(match (a, b) {
            _ if a == b => a,
            (1, b) => b,
            (a, 1) => a,
            _ => return Err(format!("cannot expand {:?} to {shape:?}", data.dims)),
        });
    }
    budget.take(&out, data.data.elem_bytes())?;
    let walk = Walk::new(&out, broadcast_strides(&from), 0);
    Ok(data.pick(out, walk))
}

/// `Gather` along `axis` with integer `indices`.
pub(crate) fn gather(
    data: &Const,
    indices: &Const,
    ax: i64,
    budget: &mut Budget,
) -> Result<Const, String> {
    let a = axis(ax, data.dims.len())?;
    let mut dims = data.dims[..a].to_vec();
    dims.extend_from_slice(&indices.dims);
    dims.extend_from_slice(&data.dims[a + 1..]);
    budget.take(&dims, data.data.elem_bytes())?;
    let n = data.dims[a] as i64;
    let idx: Vec<usize> = indices
        .ints()?
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + n } else { i };
            if (0..n).contains(&j) {
                Ok(j as usize)
            } else {
                Err(format!("index {i} is out of range for a dimension of {n}"))
            }
        })
        .collect::<Result<_, _>>()?;
    let outer: usize = data.dims[..a].iter().product();
    let inner: usize = data.dims[a + 1..].iter().product();
    let rows = data.dims[a];
    let pos = (0..outer).flat_map(|o| {
        idx.iter().flat_map(move |&i| {
            let base = (o * rows + i) * inner;
            base..base + inner
        })
    });
    Ok(data.pick(dims, pos))
}

/// `Concat` along `axis`.
pub(crate) fn concat(inputs: &[&Const], ax: i64, budget: &mut Budget) -> Result<Const, String> {
    let first = inputs.first().ok_or("concat of no inputs")?;
    let rank = first.dims.len();
    let a = axis(ax, rank)?;
    let mut dims = first.dims.clone();
    dims[a] = 0;
    for c in inputs {
        let same = c.dims.len() == rank
            && c.dims
                .iter()
                .zip(&first.dims)
                .enumerate()
                .all(|(i, (x, y))| i == a || x == y);
        if !same {
            return Err(format!(
                "cannot concatenate shapes {:?} and {:?} on axis {a}",
                first.dims, c.dims
            ));
        }
        if c.data.elem_bytes() != first.data.elem_bytes() {
            return Err("cannot concatenate floats with integers".to_owned());
        }
        dims[a] = dims[a]
            .checked_add(c.dims[a])
            .ok_or("the concatenation is too large")?;
    }
    let n = budget.take(&dims, first.data.elem_bytes())?;
    let outer: usize = first.dims[..a].iter().product();
    let mut data = match &*first.data {
        Data::F32(_) => Data::F32(Vec::with_capacity(n)),
        Data::Int(_) => Data::Int(Vec::with_capacity(n)),
    };
    for o in 0..outer {
        for c in inputs {
            let block: usize = c.dims[a..].iter().product();
            match (&mut data, &*c.data) {
                (Data::F32(out), Data::F32(v)) => {
                    out.extend_from_slice(&v[o * block..(o + 1) * block])
                }
                (Data::Int(out), Data::Int(v)) => {
                    out.extend_from_slice(&v[o * block..(o + 1) * block])
                }
                _ => return Err("cannot concatenate floats with integers".to_owned()),
            }
        }
    }
    Ok(Const {
        dims,
        data: Rc::new(data),
    })
}

/// `Slice` with ONNX's clamping rules.
pub(crate) fn slice(
    data: &Const,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
    budget: &mut Budget,
) -> Result<Const, String> {
    let rank = data.dims.len();
    if starts.len() != ends.len() {
        return Err(format!("{} starts but {} ends", starts.len(), ends.len()));
    }
    let default_axes: Vec<i64> = (0..starts.len() as i64).collect();
    let axes = axes.unwrap_or(&default_axes);
    let ones = vec![1i64; starts.len()];
    let steps = steps.unwrap_or(&ones);
    if axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps must have the same length".to_owned());
    }
    // Each sliced axis is an arithmetic progression: first index, step and count.
    let st = strides(&data.dims);
    let mut dims = data.dims.clone();
    let mut walk: Vec<isize> = st.iter().map(|&s| s as isize).collect();
    let mut base = 0isize;
    let mut seen = vec![false; rank];
    for k in 0..starts.len() {
        let a = axis(axes[k], rank)?;
        if std::mem::replace(&mut seen[a], true) {
            return Err(format!("axis {a} is sliced twice"));
        }
        let n = data.dims[a] as i64;
        let step = steps[k];
        if step == 0 {
            return Err("a slice step of 0".to_owned());
        }
        let fix = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
        let (s, count) = if step > 0 {
            let (s, e) = (fix(starts[k]).clamp(0, n), fix(ends[k]).clamp(0, n));
            (
                s,
                if e > s {
                    ((e - s) as u64).div_ceil(step as u64)
                } else {
                    0
                },
            )
        } else {
            let (s, e) = (
                fix(starts[k]).clamp(-1, n - 1),
                fix(ends[k]).clamp(-1, n - 1),
            );
            let count = if s > e {
                ((s - e) as u64).div_ceil(step.unsigned_abs())
            } else {
                0
            };
            (s, count)
        };
        // count ≤ n, and |step| < n whenever count > 1: no overflow below.
        dims[a] = count as usize;
        if count > 0 {
            base += s as isize * st[a] as isize;
        }
        walk[a] = if count > 1 {
            step as isize * st[a] as isize
        } else {
            0
        };
    }
    budget.take(&dims, data.data.elem_bytes())?;
    let pos = Walk::new(&dims, walk, base);
    Ok(data.pick(dims, pos))
}

/// The dimensions of `Reshape(data, shape)` (0 copies a dimension unless `allowzero`, -1 is
/// inferred).
pub(crate) fn reshape_dims(
    input: &[usize],
    shape: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>, String> {
    let total: usize = input.iter().product();
    let mut dims = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &s) in shape.iter().enumerate() {
        match s {
            -1 if infer.is_none() => {
                infer = Some(i);
                dims.push(1);
            }
            0 if !allowzero => dims.push(
                *input
                    .get(i)
                    .ok_or_else(|| format!("shape {shape:?} copies dimension {i} of {input:?}"))?,
            ),
            s if s >= 0 => dims.push(s as usize),
            _ => return Err(format!("invalid reshape target {shape:?}")),
        }
    }
    let known = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("reshape target overflows")?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot reshape {input:?} to {shape:?}"));
        }
        dims[i] = total / known;
    } else if known != total {
        return Err(format!("cannot reshape {input:?} to {shape:?}"));
    }
    Ok(dims)
}

/// `Unsqueeze` at `axes` (of the output): a view.
pub(crate) fn unsqueeze(data: &Const, axes: &[i64], budget: &mut Budget) -> Result<Const, String> {
    let rank = data.dims.len() + axes.len();
    let mut ax: Vec<usize> = axes
        .iter()
        .map(|&a| axis(a, rank))
        .collect::<Result<_, _>>()?;
    ax.sort_unstable();
    let mut dims = data.dims.clone();
    for a in ax {
        dims.insert(a.min(dims.len()), 1);
    }
    budget.take_view(&dims)?;
    Ok(data.view(dims))
}

/// `Squeeze` at `axes` (all size-1 axes when `None`): a view.
pub(crate) fn squeeze(
    data: &Const,
    axes: Option<&[i64]>,
    budget: &mut Budget,
) -> Result<Const, String> {
    let rank = data.dims.len();
    let drop: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&x| axis(x, rank)).collect::<Result<_, _>>()?,
        None => (0..rank).filter(|&i| data.dims[i] == 1).collect(),
    };
    if drop.iter().any(|&a| data.dims[a] != 1) {
        return Err(format!(
            "cannot squeeze axes {drop:?} of shape {:?}",
            data.dims
        ));
    }
    let dims: Vec<usize> = (0..rank)
        .filter(|i| !drop.contains(i))
        .map(|i| data.dims[i])
        .collect();
    budget.take_view(&dims)?;
    Ok(data.view(dims))
}

/// `Transpose` by `perm` (reversed axes when `None`). Not charged to a budget: the caller
/// pays for a folded transpose, and a transposed weight replaces the weight it comes from.
pub(crate) fn transpose(data: &Const, perm: Option<&[i64]>) -> Result<Const, String> {
    let rank = data.dims.len();
    let perm: Vec<usize> = match perm {
        Some(p) => p.iter().map(|&a| axis(a, rank)).collect::<Result<_, _>>()?,
        None => (0..rank).rev().collect(),
    };
    let mut seen = perm.clone();
    seen.sort_unstable();
    if seen != (0..rank).collect::<Vec<_>>() {
        return Err(format!("{perm:?} is not a permutation of {rank} axes"));
    }
    let dims: Vec<usize> = perm.iter().map(|&p| data.dims[p]).collect();
    let st = strides(&data.dims);
    let walk = Walk::new(&dims, perm.iter().map(|&p| st[p] as isize).collect(), 0);
    Ok(data.pick(dims, walk))
}

/// `Cast` to an ONNX data type. A cast that keeps the kind of data (float to float, integer
/// to integer) shares the data.
pub(crate) fn cast(data: &Const, to: i32, budget: &mut Budget) -> Result<Const, String> {
    use onnx_protobuf::tensor_proto::DataType as T;
    let float = [T::FLOAT as i32, T::DOUBLE as i32, T::FLOAT16 as i32];
    let int = [
        T::INT64 as i32,
        T::INT32 as i32,
        T::INT16 as i32,
        T::INT8 as i32,
        T::UINT8 as i32,
        T::UINT16 as i32,
        T::UINT32 as i32,
        T::UINT64 as i32,
    ];
    let dims = data.dims.clone();
    let out = match &*data.data {
        Data::F32(_) if float.contains(&to) => {
            budget.take_view(&dims)?;
            return Ok(data.view(dims));
        }
        Data::Int(_) if int.contains(&to) => {
            budget.take_view(&dims)?;
            return Ok(data.view(dims));
        }
        Data::Int(v) if float.contains(&to) => {
            let mut out = Vec::with_capacity(budget.take(&dims, F32_BYTES)?);
            for &i in v {
                out.push(known(i)? as f32);
            }
            Data::F32(out)
        }
        Data::F32(v) if int.contains(&to) => {
            budget.take(&dims, INT_BYTES)?;
            Data::Int(v.iter().map(|&x| Int::N(x.trunc() as i64)).collect())
        }
        Data::F32(v) if to == T::BOOL as i32 => {
            budget.take(&dims, INT_BYTES)?;
            Data::Int(v.iter().map(|&x| Int::N(i64::from(x != 0.0))).collect())
        }
        Data::Int(v) if to == T::BOOL as i32 => {
            let mut out = Vec::with_capacity(budget.take(&dims, INT_BYTES)?);
            for &i in v {
                out.push(Int::N(i64::from(known(i)? != 0)));
            }
            Data::Int(out)
        }
        _ => {
            return Err(format!(
                "casting constants to data type {to} is not supported"
            ));
        }
    };
    Ok(Const {
        dims,
        data: Rc::new(out),
    })
}

/// The broadcast shape of `shapes` (NumPy rules), or an error naming them.
fn broadcast(shapes: &[&[usize]]) -> Result<Vec<usize>, String> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1; rank];
    for s in shapes {
        for (o, &d) in out.iter_mut().zip(&pad(s, rank)) {
            *o = match (*o, d) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => return Err(format!("shapes {shapes:?} do not broadcast")),
            };
        }
    }
    Ok(out)
}

/// `Equal` of two integer constants (NumPy broadcasting): 1 where equal. A multiple of
/// the batch size compares where the answer holds for every batch size ≥ 1 (TorchScript's
/// `expand(batch, -1, -1)` asks whether the batch size is -1).
pub(crate) fn equal(a: &Const, b: &Const, budget: &mut Budget) -> Result<Const, String> {
    let out = broadcast(&[&a.dims, &b.dims])?;
    let rank = out.len();
    let ia = Walk::new(&out, broadcast_strides(&pad(&a.dims, rank)), 0);
    let ib = Walk::new(&out, broadcast_strides(&pad(&b.dims, rank)), 0);
    let mut v = Vec::with_capacity(budget.take(&out, INT_BYTES)?);
    match (&*a.data, &*b.data) {
        (Data::Int(x), Data::Int(y)) => {
            for (i, j) in ia.zip(ib) {
                v.push(i64::from(int_eq(x[i], y[j])?));
            }
        }
        // Exact IEEE equality, as ONNX defines it (Swin's shifted-window mask compares
        // region labels held as floats).
        (Data::F32(x), Data::F32(y)) => {
            v.extend(ia.zip(ib).map(|(i, j)| i64::from(x[i] == y[j])));
        }
        _ => {
            return Err(
                "Equal of a floating-point and an integer constant (insert a Cast)".to_owned(),
            );
        }
    }
    Ok(Const::i64(out, v))
}

/// `Where(cond, a, b)` of constants (NumPy broadcasting): `a` where `cond` is non-zero.
pub(crate) fn where_(
    c: &Const,
    a: &Const,
    b: &Const,
    budget: &mut Budget,
) -> Result<Const, String> {
    let out = broadcast(&[&c.dims, &a.dims, &b.dims])?;
    let cond = c.ints()?;
    let rank = out.len();
    let walk = |d: &[usize]| Walk::new(&out, broadcast_strides(&pad(d, rank)), 0);
    let picks = walk(&c.dims).zip(walk(&a.dims).zip(walk(&b.dims)));
    let data = match (&*a.data, &*b.data) {
        (Data::F32(x), Data::F32(y)) => {
            budget.take(&out, F32_BYTES)?;
            Data::F32(
                picks
                    .map(|(k, (i, j))| if cond[k] != 0 { x[i] } else { y[j] })
                    .collect(),
            )
        }
        (Data::Int(x), Data::Int(y)) => {
            budget.take(&out, INT_BYTES)?;
            Data::Int(
                picks
                    .map(|(k, (i, j))| if cond[k] != 0 { x[i] } else { y[j] })
                    .collect(),
            )
        }
        _ => return Err("Where of a floating-point and an integer constant".to_owned()),
    };
    Ok(Const {
        dims: out,
        data: Rc::new(data),
    })
}

/// `Not` of a boolean constant (stored as integers: non-zero is true).
pub(crate) fn not(c: &Const, budget: &mut Budget) -> Result<Const, String> {
    let v = c
        .ints()
        .map_err(|e| format!("Not of a non-boolean constant: {e}"))?;
    budget.take(&c.dims, INT_BYTES)?;
    Ok(Const::i64(
        c.dims.clone(),
        v.into_iter().map(|x| i64::from(x == 0)),
    ))
}

/// `Range(start, limit, delta)` of scalar constants: `max(⌈(limit − start) / delta⌉, 0)`
/// values `start + i·delta`, integers when all three are integers, else floats.
pub(crate) fn range(
    start: &Const,
    limit: &Const,
    delta: &Const,
    budget: &mut Budget,
) -> Result<Const, String> {
    for (what, c) in [("start", start), ("limit", limit), ("delta", delta)] {
        if c.len() != 1 {
            return Err(format!(
                "Range's {what} must be a scalar, found shape {:?}",
                c.dims
            ));
        }
    }
    let ints = [start, limit, delta]
        .iter()
        .all(|c| matches!(*c.data, Data::Int(_)));
    if ints {
        let (s, l, d) = (start.ints()?[0], limit.ints()?[0], delta.ints()?[0]);
        if d == 0 {
            return Err("Range with delta 0".to_owned());
        }
        let span = i128::from(l) - i128::from(s);
        let d128 = i128::from(d);
        let n = ((span + d128 - d128.signum()) / d128).max(0);
        let n = usize::try_from(n).map_err(|_| format!("Range({s}, {l}, {d}) is too long"))?;
        budget.take(&[n], INT_BYTES)?;
        return Ok(Const::i64(vec![n], (0..n as i64).map(|i| s + i * d)));
    }
    let (s, l, d) = (
        start.scalar_f32()?,
        limit.scalar_f32()?,
        delta.scalar_f32()?,
    );
    if d == 0.0 || !(s.is_finite() && l.is_finite() && d.is_finite()) {
        return Err(format!("Range({s}, {l}, {d}) has no finite length"));
    }
    let n = ((l - s) / d).ceil().max(0.0);
    if n > MAX_FOLDED as f32 {
        return Err(format!("Range({s}, {l}, {d}) is too long"));
    }
    let n = n as usize;
    budget.take(&[n], F32_BYTES)?;
    Ok(Const::f32(
        vec![n],
        (0..n).map(|i| s + i as f32 * d).collect(),
    ))
}

/// The positions of `indices`' last axis as flat offsets into `data` (ScatterND and
/// GatherND): one offset per index tuple, each the start of a slice of `inner` elements.
fn nd_offsets(data: &Const, indices: &Const) -> Result<(Vec<usize>, usize, usize), String> {
    let Some((&k, outer)) = indices.dims.split_last() else {
        return Err("the indices must have at least one axis".to_owned());
    };
    if k == 0 || k > data.dims.len() {
        return Err(format!(
            "index tuples of {k} values do not address a tensor of rank {}",
            data.dims.len()
        ));
    }
    let idx = indices.ints()?;
    let st = strides(&data.dims);
    let inner: usize = data.dims[k..].iter().product();
    let mut offsets = Vec::with_capacity(outer.iter().product());
    for tuple in idx.chunks(k) {
        let mut at = 0usize;
        for (a, &i) in tuple.iter().enumerate() {
            let n = data.dims[a] as i64;
            let j = if i < 0 { i + n } else { i };
            if !(0..n).contains(&j) {
                return Err(format!(
                    "index {i} on axis {a} is out of range for a dimension of {n}"
                ));
            }
            at += j as usize * st[a];
        }
        offsets.push(at);
    }
    Ok((offsets, inner, k))
}

/// `ScatterND(data, indices, updates)` without reduction: a copy of `data` with the slices
/// that `indices` address replaced by `updates` (later tuples win, as in the reference).
pub(crate) fn scatter_nd(
    data: &Const,
    indices: &Const,
    updates: &Const,
    budget: &mut Budget,
) -> Result<Const, String> {
    let (offsets, inner, k) = nd_offsets(data, indices)?;
    let mut want = indices.dims[..indices.dims.len() - 1].to_vec();
    want.extend_from_slice(&data.dims[k..]);
    if updates.dims != want {
        return Err(format!(
            "the updates have shape {:?}, but the indices and data need {want:?}",
            updates.dims
        ));
    }
    budget.take(&data.dims, data.data.elem_bytes())?;
    let dims = data.dims.clone();
    fn put<T: Copy>(d: &[T], u: &[T], offsets: &[usize], inner: usize) -> Vec<T> {
        let mut out = d.to_vec();
        for (n, &o) in offsets.iter().enumerate() {
            out[o..o + inner].copy_from_slice(&u[n * inner..(n + 1) * inner]);
        }
        out
    }
    let out = match (&*data.data, &*updates.data) {
        (Data::F32(d), Data::F32(u)) => Data::F32(put(d, u, &offsets, inner)),
        (Data::Int(d), Data::Int(u)) => Data::Int(put(d, u, &offsets, inner)),
        _ => return Err("ScatterND of data and updates of different types".to_owned()),
    };
    Ok(Const {
        dims,
        data: Rc::new(out),
    })
}

/// `GatherND(data, indices)` with `batch_dims = 0`: the slices of `data` that the index
/// tuples address, shape `indices.shape[..-1] + data.shape[k..]`.
pub(crate) fn gather_nd(
    data: &Const,
    indices: &Const,
    budget: &mut Budget,
) -> Result<Const, String> {
    let (offsets, inner, k) = nd_offsets(data, indices)?;
    let mut dims = indices.dims[..indices.dims.len() - 1].to_vec();
    dims.extend_from_slice(&data.dims[k..]);
    budget.take(&dims, data.data.elem_bytes())?;
    Ok(data.pick(dims, offsets.into_iter().flat_map(move |o| o..o + inner)))
}

/// Element-wise float functions of a constant: `Relu`, `Sigmoid`, `Exp`, `Neg`, `Abs`
/// (Swin V2's continuous position bias and logit scale, computed from parameters).
pub(crate) fn unary(op: &str, c: &Const, budget: &mut Budget) -> Result<Const, String> {
    let f: fn(f32) -> f32 = match op {
        // NaN stays NaN, as ONNX defines it (`f32::max` would drop it).
        "Relu" => |x| if x.is_nan() { x } else { x.max(0.0) },
        "Sigmoid" => |x| 1.0 / (1.0 + (-x).exp()),
        "Exp" => f32::exp,
        "Neg" => |x| -x,
        "Abs" => f32::abs,
        other => return Err(format!("{other} is not evaluated on constants")),
    };
    let Data::F32(v) = &*c.data else {
        return Err(format!(
            "{op} is evaluated on floating-point constants only"
        ));
    };
    budget.take(&c.dims, F32_BYTES)?;
    Ok(Const::f32(
        c.dims.clone(),
        v.iter().map(|&x| f(x)).collect(),
    ))
}

/// `Clip(x, min, max)` of a float constant (a missing bound does not clip).
pub(crate) fn clip(
    c: &Const,
    min: Option<&Const>,
    max: Option<&Const>,
    budget: &mut Budget,
) -> Result<Const, String> {
    let Data::F32(v) = &*c.data else {
        return Err("Clip is evaluated on floating-point constants only".to_owned());
    };
    let lo = min
        .map(Const::scalar_f32)
        .transpose()?
        .unwrap_or(f32::NEG_INFINITY);
    let hi = max
        .map(Const::scalar_f32)
        .transpose()?
        .unwrap_or(f32::INFINITY);
    budget.take(&c.dims, F32_BYTES)?;
    Ok(Const::f32(
        c.dims.clone(),
        v.iter()
            .map(|&x| if x.is_nan() { x } else { x.max(lo).min(hi) })
            .collect(),
    ))
}

/// `MatMul` of float constants (NumPy semantics: batch axes broadcast, a 1-D operand is a
/// row or column vector whose axis is dropped from the result). Sums in f64.
pub(crate) fn matmul(a: &Const, b: &Const, budget: &mut Budget) -> Result<Const, String> {
    let (Data::F32(x), Data::F32(y)) = (&*a.data, &*b.data) else {
        return Err("MatMul is evaluated on floating-point constants only".to_owned());
    };
    if a.dims.is_empty() || b.dims.is_empty() {
        return Err("MatMul of a scalar".to_owned());
    }
    let da = if a.dims.len() == 1 {
        vec![1, a.dims[0]]
    } else {
        a.dims.clone()
    };
    let db = if b.dims.len() == 1 {
        vec![b.dims[0], 1]
    } else {
        b.dims.clone()
    };
    let (n, k) = (da[da.len() - 2], da[da.len() - 1]);
    let (k2, m) = (db[db.len() - 2], db[db.len() - 1]);
    if k != k2 {
        return Err(format!(
            "MatMul of shapes {:?} and {:?}: inner sizes {k} and {k2} differ",
            a.dims, b.dims
        ));
    }
    let batch = broadcast(&[&da[..da.len() - 2], &db[..db.len() - 2]])?;
    let mut dims = batch.clone();
    dims.extend([n, m]);
    let count = budget.take(&dims, F32_BYTES)?;
    let rank = batch.len();
    let outer = |d: &[usize]| {
        let mut s: Vec<usize> = d[..d.len() - 2].to_vec();
        s = pad(&s, rank);
        Walk::new(&batch, broadcast_strides(&s), 0)
    };
    let mut out = Vec::with_capacity(count);
    for (i, j) in outer(&da).zip(outer(&db)) {
        let (pa, pb) = (i * n * k, j * k * m);
        for r in 0..n {
            for c in 0..m {
                let mut s = 0f64;
                for t in 0..k {
                    s += f64::from(x[pa + r * k + t]) * f64::from(y[pb + t * m + c]);
                }
                out.push(s as f32);
            }
        }
    }
    let mut dims_out = batch;
    if a.dims.len() > 1 {
        dims_out.push(n);
    }
    if b.dims.len() > 1 {
        dims_out.push(m);
    }
    Ok(Const::f32(dims_out, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pow_is_evaluated_on_floats_and_small_integer_exponents() {
        // A hand-written attention's `d ** 0.5` as the TorchScript exporter writes it: a
        // Cast of the head width to float, raised to a float constant.
        let bu = &mut Budget::default();
        let data = |c: Const| (*c.data).clone();
        let d = Const::f32(vec![], vec![16.0]);
        let half = Const::f32(vec![], vec![0.5]);
        assert_eq!(
            data(binary("Pow", &d, &half, bu).unwrap()),
            Data::F32(vec![4.0])
        );
        // Broadcast, and an integer exponent of a float base (ONNX lets them differ).
        let base = Const::f32(vec![3], vec![2.0, 3.0, -1.5]);
        assert_eq!(
            data(binary("Pow", &base, &Const::i64(vec![], [2]), bu).unwrap()),
            Data::F32(vec![4.0, 9.0, 2.25])
        );
        // Integers: exponents 0..=63, overflow and negative exponents refused.
        let i = Const::i64(vec![2], [3, -2]);
        assert_eq!(
            binary("Pow", &i, &Const::i64(vec![], [3]), bu)
                .unwrap()
                .ints()
                .unwrap(),
            vec![27, -8]
        );
        let e = binary("Pow", &i, &Const::i64(vec![], [-1]), bu).unwrap_err();
        assert!(e.contains("exponent -1"), "{e}");
        let e = binary(
            "Pow",
            &Const::i64(vec![], [10]),
            &Const::i64(vec![], [40]),
            bu,
        )
        .unwrap_err();
        assert!(e.contains("overflows"), "{e}");
        // An integer base with a float exponent needs a Cast, as the other arithmetic.
        let e = binary("Pow", &i, &half, bu).unwrap_err();
        assert!(e.contains("insert a Cast"), "{e}");
    }

    #[test]
    fn equal_refuses_mixed_integer_and_float_constants() {
        let bu = &mut Budget::default();
        let f = Const::f32(vec![2], vec![1.0, 2.0]);
        let i = Const::i64(vec![2], [1, 2]);
        let g = Const::f32(vec![1], vec![2.0]);
        // Floats compare exactly (broadcast).
        assert_eq!(equal(&f, &g, bu).unwrap().ints().unwrap(), vec![0, 1]);
        // An integer against a float: the fix is a Cast, as for the arithmetic.
        for (x, y) in [(&i, &f), (&f, &i)] {
            let e = equal(x, y, bu).unwrap_err();
            assert!(
                e.contains("Equal of a floating-point and an integer constant (insert a Cast)"),
                "{e}"
            );
        }
    }

    #[test]
    fn equal_and_where_fold_torchscripts_expand_shape() {
        // TorchScript's `expand(n, -1, -1)` target: Where(Equal(s, -1), ones, s).
        let bu = &mut Budget::default();
        let s = Const::i64(vec![3], [2, -1, -1]);
        let minus = Const::i64(vec![], [-1]);
        let eq = equal(&s, &minus, bu).unwrap();
        assert_eq!(eq.ints().unwrap(), vec![0, 1, 1]);
        let ones = Const::i64(vec![3], [1, 1, 1]);
        let w = where_(&eq, &ones, &s, bu).unwrap();
        assert_eq!(
            (w.dims.clone(), w.ints().unwrap()),
            (vec![3], vec![2, 1, 1])
        );
        // Floats broadcast against the condition.
        let f = where_(
            &eq,
            &Const::f32(vec![], vec![7.0]),
            &Const::f32(vec![1], vec![0.5]),
            bu,
        )
        .unwrap();
        assert_eq!(*f.data, Data::F32(vec![0.5, 7.0, 7.0]));
        assert!(where_(&eq, &ones, &Const::f32(vec![], vec![1.0]), bu).is_err());
        assert!(
            equal(
                &Const::i64(vec![2], [1, 2]),
                &Const::i64(vec![3], [1, 2, 3]),
                bu
            )
            .is_err()
        );
        // The batch size is at least 1: never -1 or 0, but perhaps 4.
        let batch = Const::ints_of(vec![3], vec![Int::BATCH, Int::Batch(4), Int::Batch(4)]);
        let other = Const::ints_of(vec![3], vec![Int::N(-1), Int::N(0), Int::Batch(2)]);
        assert_eq!(
            equal(&batch, &other, bu).unwrap().ints().unwrap(),
            [0, 0, 0]
        );
        let same = Const::ints_of(vec![3], vec![Int::BATCH, Int::N(6), Int::Batch(4)]);
        assert_eq!(equal(&batch, &same, bu).unwrap().ints().unwrap(), [1, 0, 1]);
        let neg = Const::ints_of(vec![2], vec![Int::Batch(-1), Int::Batch(i64::MIN)]);
        assert_eq!(
            equal(&neg, &Const::i64(vec![2], [2, 0]), bu)
                .unwrap()
                .ints()
                .unwrap(),
            [0, 0]
        );
        assert!(equal(&neg, &Const::i64(vec![2], [-2, i64::MIN]), bu).is_err());
        assert!(equal(&Const::i64(vec![], [i64::MIN]), &neg, bu).is_err());
        for m in [1, 8] {
            let e = equal(&batch, &Const::i64(vec![], [m]), bu).unwrap_err();
            assert!(e.contains("depends on the batch size"), "{e}");
        }
        // Where keeps the batch symbol it picks (TorchScript's `expand(batch, -1, -1)`).
        let s = Const::ints_of(vec![3], vec![Int::BATCH, Int::N(-1), Int::N(-1)]);
        let w = where_(&equal(&s, &minus, bu).unwrap(), &ones, &s, bu).unwrap();
        assert_eq!(*w.data, Data::Int(vec![Int::BATCH, Int::N(1), Int::N(1)]));
    }

    #[test]
    fn gather_concat_and_reshape_fold_a_flatten_target() {
        // Shape(x) of a [B, 8, 2, 2] tensor, then [Shape(x)[0], -1].
        let b = &mut Budget::default();
        let shape = Const::ints_of(vec![4], vec![Int::BATCH, Int::N(8), Int::N(2), Int::N(2)]);
        let g = gather(&shape, &Const::i64(vec![], [0]), 0, b).unwrap();
        assert_eq!(g.dims, Vec::<usize>::new());
        let g = unsqueeze(&g, &[0], b).unwrap();
        let target = concat(&[&g, &Const::i64(vec![1], [-1])], 0, b).unwrap();
        assert_eq!(*target.data, Data::Int(vec![Int::BATCH, Int::N(-1)]));
        assert!(target.ints().is_err());
    }

    #[test]
    fn arithmetic_broadcasts_and_keeps_multiples_of_the_batch_symbol() {
        let bu = &mut Budget::default();
        let a = Const::i64(vec![2], [6, 9]);
        let c = binary("Div", &a, &Const::i64(vec![], [3]), bu).unwrap();
        assert_eq!(c.ints().unwrap(), vec![2, 3]);
        assert!(binary("Div", &a, &Const::i64(vec![], [0]), bu).is_err());
        let b = |k: i64| Const::ints_of(vec![1], vec![Int::Batch(k)]);
        let n = |v: i64| Const::i64(vec![1], [v]);
        let mut op = |o: &str, x: &Const, y: &Const| binary(o, x, y, bu).map(|c| (*c.data).clone());
        let one = |i: Int| Ok(Data::Int(vec![i]));
        // MultiheadAttention's batch × heads and rows tokens × batch, and back.
        assert_eq!(op("Mul", &b(1), &n(4)), one(Int::Batch(4)));
        assert_eq!(op("Mul", &n(17), &b(1)), one(Int::Batch(17)));
        assert_eq!(op("Mul", &b(4), &n(0)), one(Int::N(0)));
        assert_eq!(op("Div", &b(12), &n(4)), one(Int::Batch(3)));
        assert_eq!(op("Div", &b(12), &n(-12)), one(Int::Batch(-1)));
        assert_eq!(op("Mod", &b(12), &n(4)), one(Int::N(0)));
        assert_eq!(op("Mod", &b(3), &n(-1)), one(Int::N(0)));
        assert_eq!(op("Mod", &b(i64::MIN), &n(-1)), one(Int::N(0)));
        for o in ["Div", "Mod"] {
            assert_eq!(
                op(o, &b(2), &n(0)),
                Err("integer division by zero".to_owned())
            );
        }
        assert_eq!(op("Add", &b(2), &n(0)), one(Int::Batch(2)));
        assert_eq!(op("Sub", &n(0), &b(2)), one(Int::Batch(-2)));
        assert_eq!(op("Add", &b(2), &b(3)), one(Int::Batch(5)));
        assert_eq!(op("Sub", &b(2), &b(2)), one(Int::N(0)));
        // What is not a known multiple of the batch size is an error naming the operands.
        for (o, x, y, text) in [
            ("Div", b(1), n(2), "Div of batch and 2"),
            ("Div", b(6), n(4), "Div of 6·batch and 4"),
            ("Div", n(8), b(1), "Div of 8 and batch"),
            ("Mul", b(2), b(1), "Mul of 2·batch and batch"),
            ("Add", b(1), n(1), "Add of batch and 1"),
            ("Mod", b(3), n(2), "Mod of 3·batch and 2"),
        ] {
            let e = op(o, &x, &y).unwrap_err();
            assert!(
                e.contains(text) && e.contains(BATCH_UNKNOWN) && !e.contains("fixed batch"),
                "{e}"
            );
        }
        let big = op("Mul", &b(i64::MAX), &n(2)).unwrap_err();
        assert!(big.contains("overflows"), "{big}");
        // i64::MIN / -1 overflows: an error, not a panic (its Mod is 0, above).
        assert!(op("Div", &b(i64::MIN), &n(-1)).is_err());
        // A multiple of the batch size is not a known number.
        assert!(b(4).ints().is_err());
        assert!(
            cast(
                &b(4),
                onnx_protobuf::tensor_proto::DataType::FLOAT as i32,
                bu
            )
            .is_err()
        );
        // Mod takes the divisor's sign, as ONNX's integer Mod (and Python's %).
        let mut m = |p: i64, q: i64| {
            let c = binary(
                "Mod",
                &Const::i64(vec![], [p]),
                &Const::i64(vec![], [q]),
                bu,
            );
            c.unwrap().ints().unwrap()[0]
        };
        assert_eq!(
            (m(7, 3), m(-7, 3), m(7, -3), m(2, 3), m(-6, 3)),
            (1, 2, -2, 2, 0)
        );
        let f = binary(
            "Add",
            &Const::f32(vec![2, 1], vec![1.0, 2.0]),
            &Const::f32(vec![3], vec![10.0, 20.0, 30.0]),
            bu,
        )
        .unwrap();
        assert_eq!(f.dims, vec![2, 3]);
        assert_eq!(*f.data, Data::F32(vec![11., 21., 31., 12., 22., 32.]));
    }

    #[test]
    fn slice_transpose_and_reshape_follow_onnx() {
        let b = &mut Budget::default();
        let x = Const::i64(vec![2, 3], [0, 1, 2, 3, 4, 5]);
        let s = slice(&x, &[1], &[i64::MAX], Some(&[1]), None, b).unwrap();
        assert_eq!(
            (s.dims.clone(), s.ints().unwrap()),
            (vec![2, 2], vec![1, 2, 4, 5])
        );
        let r = slice(&x, &[-1], &[i64::MIN], Some(&[1]), Some(&[-1]), b).unwrap();
        assert_eq!(r.ints().unwrap(), vec![2, 1, 0, 5, 4, 3]);
        let t = transpose(&x, None).unwrap();
        assert_eq!(
            (t.dims.clone(), t.ints().unwrap()),
            (vec![3, 2], vec![0, 3, 1, 4, 2, 5])
        );
        assert_eq!(reshape_dims(&[2, 3, 4], &[0, -1], false), Ok(vec![2, 12]));
        assert!(reshape_dims(&[2, 3, 4], &[5, -1], false).is_err());
        assert!(reshape_dims(&[2, 3], &[-1, -1], false).is_err());
        assert!(squeeze(&x, Some(&[0]), b).is_err());
        let e = expand(&Const::i64(vec![2, 1], [1, 2]), &[3], b).unwrap();
        assert_eq!(
            (e.dims.clone(), e.ints().unwrap()),
            (vec![2, 3], vec![1, 1, 1, 2, 2, 2])
        );
        assert!(expand(&x, &[3, 3], b).is_err());
    }

    /// 0, 1, 2, ... as an int constant of shape `dims`.
    fn arange(dims: &[usize]) -> Const {
        Const::i64(dims.to_vec(), 0..dims.iter().product::<usize>() as i64)
    }

    #[test]
    fn strided_folds_match_explicit_loops() {
        let b = &mut Budget::default();
        let x = arange(&[2, 3, 4]);
        let at = |i: usize, j: usize, k: usize| (i * 12 + j * 4 + k) as i64;
        // Transpose [2, 3, 4] by [2, 0, 1] → [4, 2, 3].
        let t = transpose(&x, Some(&[2, 0, 1])).unwrap();
        let mut want = Vec::new();
        for k in 0..4 {
            for i in 0..2 {
                for j in 0..3 {
                    want.push(at(i, j, k));
                }
            }
        }
        assert_eq!((t.dims.clone(), t.ints().unwrap()), (vec![4, 2, 3], want));
        // Slice axis 2 from 3 down to 0 exclusive by -2, axis 1 from 0 by 2.
        let s = slice(&x, &[3, 0], &[0, 3], Some(&[2, 1]), Some(&[-2, 2]), b).unwrap();
        let mut want = Vec::new();
        for i in 0..2 {
            for j in [0, 2] {
                for k in [3, 1] {
                    want.push(at(i, j, k));
                }
            }
        }
        assert_eq!((s.dims.clone(), s.ints().unwrap()), (vec![2, 2, 2], want));
        // An empty slice, and an axis sliced twice.
        let e = slice(&x, &[2], &[1], Some(&[1]), None, b).unwrap();
        assert_eq!((e.dims.clone(), e.len()), (vec![2, 0, 4], 0));
        assert!(slice(&x, &[0, 0], &[1, 1], Some(&[1, -2]), None, b).is_err());
        // Expand [3, 1] to [2, 3, 4]: x3[j] repeated.
        let e = expand(&Const::i64(vec![3, 1], [7, 8, 9]), &[2, 1, 4], b).unwrap();
        let mut want = Vec::new();
        for _ in 0..2 {
            for v in [7, 8, 9] {
                want.extend([v; 4]);
            }
        }
        assert_eq!((e.dims.clone(), e.ints().unwrap()), (vec![2, 3, 4], want));
        // [2, 1, 3] + [4, 1] → [2, 4, 3].
        let p = arange(&[2, 1, 3]);
        let q = Const::i64(vec![4, 1], [0, 10, 20, 30]);
        let sum = binary("Add", &p, &q, b).unwrap();
        let mut want = Vec::new();
        for i in 0..2 {
            for j in 0..4 {
                for k in 0..3 {
                    want.push((i * 3 + k) as i64 + 10 * j as i64);
                }
            }
        }
        assert_eq!(
            (sum.dims.clone(), sum.ints().unwrap()),
            (vec![2, 4, 3], want)
        );
        // Gather on axis 1 with [2, 2] indices → [2, 2, 2, 4].
        let g = gather(&x, &Const::i64(vec![2, 2], [2, 0, -1, 1]), 1, b).unwrap();
        let mut want = Vec::new();
        for i in 0..2 {
            for j in [2, 0, 2, 1] {
                for k in 0..4 {
                    want.push(at(i, j, k));
                }
            }
        }
        assert_eq!(
            (g.dims.clone(), g.ints().unwrap()),
            (vec![2, 2, 2, 4], want)
        );
    }

    #[test]
    fn the_budget_counts_bytes_in_memory_and_views_share_data() {
        let mut b = Budget::default();
        // Integers take 16 bytes an element, floats 4, and every dimension 8.
        assert_eq!(INT_BYTES, 16);
        assert_eq!(b.take(&[2, 3], INT_BYTES), Ok(6));
        assert_eq!(b.used(), 6 * 16 + 2 * 8);
        assert_eq!(b.take(&[5], F32_BYTES), Ok(5));
        assert_eq!(b.used(), 6 * 16 + 2 * 8 + 5 * 4 + 8);
        // Stored float tensors are the model's own: parameters up to their size are free,
        // beyond it they are charged.
        b.store(100);
        b.weight(100).unwrap();
        assert_eq!(b.used(), 6 * 16 + 2 * 8 + 5 * 4 + 8);
        b.weight(40).unwrap();
        assert_eq!(b.used(), 6 * 16 + 2 * 8 + 5 * 4 + 8 + 40);
        assert!(b.weight(MAX_FOLDED_BYTES).is_err());
        // Refused before anything is built: too many elements, too high a rank, too many
        // bytes together.
        let mut b = Budget::default();
        assert!(b.take(&[MAX_FOLDED + 1], 0).is_err());
        assert!(b.take(&[1; MAX_RANK + 1], 0).is_err());
        assert!(b.take_view(&[0, 1 << 40, 1 << 40]).is_err());
        assert!(b.take(&[MAX_FOLDED], INT_BYTES).is_err());
        assert_eq!(b.used(), 0);
        // Views (Squeeze, Unsqueeze, a Cast to the same kind) share their input's data.
        let x = Const::f32(vec![1, 3], vec![1.0, 2.0, 3.0]);
        let s = squeeze(&x, None, &mut b).unwrap();
        let u = unsqueeze(&s, &[1], &mut b).unwrap();
        let c = cast(
            &u,
            onnx_protobuf::tensor_proto::DataType::DOUBLE as i32,
            &mut b,
        )
        .unwrap();
        assert_eq!((s.dims.clone(), u.dims.clone()), (vec![3], vec![3, 1]));
        assert!(Rc::ptr_eq(&x.data, &c.data));
        let i = cast(
            &x,
            onnx_protobuf::tensor_proto::DataType::INT64 as i32,
            &mut b,
        )
        .unwrap();
        assert!(!Rc::ptr_eq(&x.data, &i.data));
        assert_eq!(i.ints().unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn swin_mask_and_bias_ops_are_evaluated_by_hand_values() {
        let bu = &mut Budget::default();
        let data = |c: Const| (*c.data).clone();
        // Not, and Equal of floats (exact).
        let b = Const::i64(vec![3], [0, 1, 5]);
        assert_eq!(
            data(not(&b, bu).unwrap()),
            Data::Int(vec![Int::N(1), Int::N(0), Int::N(0)])
        );
        let f = Const::f32(vec![3], vec![0.0, -0.0, 2.5]);
        let z = Const::f32(vec![], vec![0.0]);
        assert_eq!(
            data(equal(&f, &z, bu).unwrap()),
            Data::Int(vec![Int::N(1), Int::N(1), Int::N(0)])
        );
        // Range: integers (negative step, empty) and floats.
        let i = |v: i64| Const::i64(vec![], [v]);
        assert_eq!(
            range(&i(0), &i(5), &i(2), bu).unwrap().ints().unwrap(),
            vec![0, 2, 4]
        );
        assert_eq!(
            range(&i(5), &i(0), &i(-2), bu).unwrap().ints().unwrap(),
            vec![5, 3, 1]
        );
        assert_eq!(range(&i(3), &i(3), &i(1), bu).unwrap().len(), 0);
        assert!(
            range(&i(0), &i(3), &i(0), bu)
                .unwrap_err()
                .contains("delta 0")
        );
        let x = |v: f32| Const::f32(vec![], vec![v]);
        assert_eq!(
            data(range(&x(-1.0), &x(0.5), &x(0.5), bu).unwrap()),
            Data::F32(vec![-1.0, -0.5, 0.0])
        );
        // ScatterND: rows of a [3, 2] replaced; later tuples win.
        let d = Const::f32(vec![3, 2], vec![0.0; 6]);
        let idx = Const::i64(vec![3, 1], [2, 0, 2]);
        let up = Const::f32(vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(
            data(scatter_nd(&d, &idx, &up, bu).unwrap()),
            Data::F32(vec![3.0, 4.0, 0.0, 0.0, 5.0, 6.0])
        );
        // Single elements by full index tuples, a negative index.
        let idx = Const::i64(vec![2, 2], [0, 1, -1, 0]);
        let up = Const::f32(vec![2], vec![7.0, 8.0]);
        assert_eq!(
            data(scatter_nd(&d, &idx, &up, bu).unwrap()),
            Data::F32(vec![0.0, 7.0, 0.0, 0.0, 8.0, 0.0])
        );
        let e = scatter_nd(&d, &idx, &Const::f32(vec![3], vec![0.0; 3]), bu).unwrap_err();
        assert!(e.contains("updates have shape [3]"), "{e}");
        let e = scatter_nd(
            &d,
            &Const::i64(vec![1, 1], [3]),
            &Const::f32(vec![1, 2], vec![0.0; 2]),
            bu,
        )
        .unwrap_err();
        assert!(e.contains("index 3 on axis 0 is out of range"), "{e}");
        // GatherND: a [2, 3] table, pairs and rows.
        let t = Const::f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let idx = Const::i64(vec![2, 2], [1, 2, 0, 0]);
        let g = gather_nd(&t, &idx, bu).unwrap();
        assert_eq!(
            (g.dims.clone(), data(g)),
            (vec![2], Data::F32(vec![6.0, 1.0]))
        );
        let g = gather_nd(&t, &Const::i64(vec![1, 1], [1]), bu).unwrap();
        assert_eq!(
            (g.dims.clone(), data(g)),
            (vec![1, 3], Data::F32(vec![4.0, 5.0, 6.0]))
        );
        // Element-wise floats and Clip.
        let v = Const::f32(vec![3], vec![-1.0, 0.0, 2.0]);
        assert_eq!(
            data(unary("Relu", &v, bu).unwrap()),
            Data::F32(vec![0.0, 0.0, 2.0])
        );
        assert_eq!(
            data(unary("Neg", &v, bu).unwrap()),
            Data::F32(vec![1.0, -0.0, -2.0])
        );
        let Data::F32(s) = data(unary("Sigmoid", &v, bu).unwrap()) else {
            panic!()
        };
        let want = [0.268_941_42_f32, 0.5, 0.880_797_1];
        assert!(
            s.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{s:?}"
        );
        let Data::F32(s) = data(unary("Exp", &v, bu).unwrap()) else {
            panic!()
        };
        let want = [0.367_879_44_f32, 1.0, 7.389_056];
        assert!(
            s.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-5),
            "{s:?}"
        );
        assert!(unary("Exp", &b, bu).unwrap_err().contains("floating-point"));
        // NaN stays NaN through Relu and Clip, as in ONNX.
        let nan = Const::f32(vec![1], vec![f32::NAN]);
        let Data::F32(r) = data(unary("Relu", &nan, bu).unwrap()) else {
            panic!()
        };
        assert!(r[0].is_nan());
        let Data::F32(r) = data(clip(&nan, Some(&x(0.0)), Some(&x(1.0)), bu).unwrap()) else {
            panic!()
        };
        assert!(r[0].is_nan());
        assert_eq!(
            data(clip(&v, None, Some(&x(1.5)), bu).unwrap()),
            Data::F32(vec![-1.0, 0.0, 1.5])
        );
        assert_eq!(
            data(clip(&v, Some(&x(-0.5)), None, bu).unwrap()),
            Data::F32(vec![-0.5, 0.0, 2.0])
        );
        // MatMul: [2, 2, 3] batch × [3, 2] broadcast, and vectors.
        let a = Const::f32(vec![2, 2, 3], (1..=12).map(|v| v as f32).collect());
        let w = Const::f32(vec![3, 2], vec![1.0, 0.0, 0.0, 1.0, 1.0, -1.0]);
        let m = matmul(&a, &w, bu).unwrap();
        assert_eq!(m.dims, vec![2, 2, 2]);
        // Row [1, 2, 3]: [1 + 3, 2 − 3]; [4, 5, 6]: [10, −1]; [7, 8, 9]: [16, −1]; …
        assert_eq!(
            data(m),
            Data::F32(vec![4.0, -1.0, 10.0, -1.0, 16.0, -1.0, 22.0, -1.0])
        );
        let r = Const::f32(vec![3], vec![1.0, 1.0, 1.0]);
        let m = matmul(&r, &w, bu).unwrap();
        assert_eq!(
            (m.dims.clone(), data(m)),
            (vec![2], Data::F32(vec![2.0, 0.0]))
        );
        let e = matmul(&w, &w, bu).unwrap_err();
        assert!(e.contains("inner sizes 2 and 3 differ"), "{e}");
    }
}
