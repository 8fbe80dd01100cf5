//! Constants and constant folding.
//!
//! Exporters write shape arithmetic into the graph: `Shape → Gather → Unsqueeze → Concat →
//! Reshape` to flatten, `Constant` nodes for axes, `Cast`s and divisions. The importer
//! evaluates every node whose inputs are all constants here, so that what reaches the op
//! mapping is a plain constant (`Reshape(x, [batch, -1])`). Integers carry one symbol, the
//! batch size, which `Shape` of a computed tensor produces: `Shape(x)[0]` folds to
//! [`Int::Batch`], and a reshape target `[batch, -1]` is recognised as a flatten without
//! knowing the batch size.

/// The largest constant the folder builds (elements); far above any shape computation.
const MAX_FOLDED: usize = 1 << 26;

/// One integer of a constant: a number, or the (symbolic) batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Int {
    /// A known number.
    N(i64),
    /// The batch size of the network input.
    Batch,
}

/// The elements of a constant.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Data {
    /// Floating-point data (float32; doubles are narrowed).
    F32(Vec<f32>),
    /// Integer (and boolean) data.
    Int(Vec<Int>),
}

/// A constant tensor: dimensions and row-major data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Const {
    pub dims: Vec<usize>,
    pub data: Data,
}

impl Const {
    /// A float constant.
    pub fn f32(dims: Vec<usize>, v: Vec<f32>) -> Self {
        Const {
            dims,
            data: Data::F32(v),
        }
    }

    /// An integer constant of known values.
    pub fn i64(dims: Vec<usize>, v: impl IntoIterator<Item = i64>) -> Self {
        Const {
            dims,
            data: Data::Int(v.into_iter().map(Int::N).collect()),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            Data::F32(v) => v.len(),
            Data::Int(v) => v.len(),
        }
    }

    /// The values as known integers (error for floats or a symbolic batch size).
    pub fn ints(&self) -> Result<Vec<i64>, String> {
        match &self.data {
            Data::Int(v) => v
                .iter()
                .map(|i| match i {
                    Int::N(n) => Ok(*n),
                    Int::Batch => Err(
                        "the value depends on the batch size, which is not known when importing"
                            .to_owned(),
                    ),
                })
                .collect(),
            Data::F32(_) => Err("expected integers, found floating-point data".to_owned()),
        }
    }

    /// The values as floats (integers of known value are converted).
    pub fn floats(&self) -> Result<Vec<f32>, String> {
        match &self.data {
            Data::F32(v) => Ok(v.clone()),
            Data::Int(_) => Ok(self.ints()?.into_iter().map(|v| v as f32).collect()),
        }
    }

    /// The single value of a one-element constant, as a float.
    pub fn scalar_f32(&self) -> Result<f32, String> {
        match self.floats()?.as_slice() {
            [v] => Ok(*v),
            v => Err(format!(
                "expected a single value, found {} values (shape {:?})",
                v.len(),
                self.dims
            )),
        }
    }

    /// The elements at flat positions `idx`, as a constant of shape `dims`.
    fn pick(&self, dims: Vec<usize>, idx: &[usize]) -> Const {
        let data = match &self.data {
            Data::F32(v) => Data::F32(idx.iter().map(|&i| v[i]).collect()),
            Data::Int(v) => Data::Int(idx.iter().map(|&i| v[i]).collect()),
        };
        Const { dims, data }
    }
}

/// The number of elements of `dims`, bounded by [`MAX_FOLDED`]. The bound also holds for the
/// product of the non-zero sizes, so an empty constant with huge sizes (`[0, 2^40, 2^40]`)
/// is refused too and no stride or index computation over `dims` can overflow.
pub(crate) fn numel(dims: &[usize]) -> Result<usize, String> {
    bounded_numel(dims, MAX_FOLDED)
        .ok_or_else(|| format!("a constant of shape {dims:?} is too large to fold"))
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

/// Every multi-index of `dims` in row-major order, mapped through `f`.
fn for_each_index(dims: &[usize], mut f: impl FnMut(&[usize])) {
    let n: usize = dims.iter().product();
    let mut idx = vec![0usize; dims.len()];
    for _ in 0..n {
        f(&idx);
        for a in (0..dims.len()).rev() {
            idx[a] += 1;
            if idx[a] < dims[a] {
                break;
            }
            idx[a] = 0;
        }
    }
}

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

/// Element-wise `Add`, `Sub`, `Mul` or `Div` with NumPy broadcasting.
pub(crate) fn binary(op: &str, a: &Const, b: &Const) -> Result<Const, String> {
    let rank = a.dims.len().max(b.dims.len());
    let pad = |d: &[usize]| -> Vec<usize> {
        let mut v = vec![1; rank - d.len()];
        v.extend_from_slice(d);
        v
    };
    let (da, db) = (pad(&a.dims), pad(&b.dims));
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
    numel(&out)?;
    let (sa, sb) = (strides(&da), strides(&db));
    let (mut ia, mut ib) = (Vec::new(), Vec::new());
    for_each_index(&out, |idx| {
        let pos = |d: &[usize], s: &[usize]| -> usize {
            idx.iter()
                .zip(d)
                .zip(s)
                .map(|((&i, &n), &st)| if n == 1 { 0 } else { i * st })
                .sum()
        };
        ia.push(pos(&da, &sa));
        ib.push(pos(&db, &sb));
    });
    let data = match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => {
            let f = match op {
                "Add" => |p: f32, q: f32| p + q,
                "Sub" => |p: f32, q: f32| p - q,
                "Mul" => |p: f32, q: f32| p * q,
                _ => |p: f32, q: f32| p / q,
            };
            Data::F32(ia.iter().zip(&ib).map(|(&i, &j)| f(x[i], y[j])).collect())
        }
        (Data::Int(x), Data::Int(y)) => Data::Int(
            ia.iter()
                .zip(&ib)
                .map(|(&i, &j)| int_op(op, x[i], y[j]))
                .collect::<Result<_, _>>()?,
        ),
        _ => {
            return Err(format!(
                "{op} of a floating-point and an integer constant (insert a Cast)"
            ));
        }
    };
    Ok(Const { dims: out, data })
}

/// Integer arithmetic, keeping the batch symbol through the identities `B·1`, `B/1`, `B±0`.
fn int_op(op: &str, x: Int, y: Int) -> Result<Int, String> {
    match (x, y) {
        (Int::N(p), Int::N(q)) => {
            let v = match op {
                "Add" => p.checked_add(q),
                "Sub" => p.checked_sub(q),
                "Mul" => p.checked_mul(q),
                _ if q == 0 => return Err("integer division by zero".to_owned()),
                _ => p.checked_div(q),
            };
            v.map(Int::N)
                .ok_or_else(|| format!("{op} of {p} and {q} overflows"))
        }
        (Int::Batch, Int::N(1)) if matches!(op, "Mul" | "Div") => Ok(Int::Batch),
        (Int::N(1), Int::Batch) if op == "Mul" => Ok(Int::Batch),
        (Int::Batch, Int::N(0)) if matches!(op, "Add" | "Sub") => Ok(Int::Batch),
        (Int::N(0), Int::Batch) if op == "Add" => Ok(Int::Batch),
        _ => Err(format!(
            "{op} involving the batch size cannot be evaluated when importing"
        )),
    }
}

/// `Expand`: broadcasts `data` against `shape` (NumPy rules, either side may be 1).
pub(crate) fn expand(data: &Const, shape: &[i64]) -> Result<Const, String> {
    let dims: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative size {d} in {shape:?}")))
        .collect::<Result<_, _>>()?;
    numel(&dims)?;
    let rank = data.dims.len().max(dims.len());
    let pad = |d: &[usize]| -> Vec<usize> {
        let mut v = vec![1; rank - d.len()];
        v.extend_from_slice(d);
        v
    };
    let (from, to) = (pad(&data.dims), pad(&dims));
    let mut out = Vec::with_capacity(rank);
    for (&a, &b) in from.iter().zip(&to) {
        out.push(match (a, b) {
            _ if a == b => a,
            (1, b) => b,
            (a, 1) => a,
            _ => return Err(format!("cannot expand {:?} to {shape:?}", data.dims)),
        });
    }
    numel(&out)?;
    let st = strides(&from);
    let mut pos = Vec::new();
    for_each_index(&out, |idx| {
        pos.push(
            idx.iter()
                .zip(&from)
                .zip(&st)
                .map(|((&i, &n), &s)| if n == 1 { 0 } else { i * s })
                .sum(),
        )
    });
    Ok(data.pick(out, &pos))
}

/// `Gather` along `axis` with integer `indices`.
pub(crate) fn gather(data: &Const, indices: &Const, ax: i64) -> Result<Const, String> {
    let a = axis(ax, data.dims.len())?;
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
    let mut dims = data.dims[..a].to_vec();
    dims.extend_from_slice(&indices.dims);
    dims.extend_from_slice(&data.dims[a + 1..]);
    numel(&dims)?;
    let mut pos = Vec::new();
    for o in 0..outer {
        for &i in &idx {
            let base = (o * data.dims[a] + i) * inner;
            pos.extend(base..base + inner);
        }
    }
    Ok(data.pick(dims, &pos))
}

/// `Concat` along `axis`.
pub(crate) fn concat(inputs: &[&Const], ax: i64) -> Result<Const, String> {
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
        dims[a] += c.dims[a];
    }
    numel(&dims)?;
    let outer: usize = first.dims[..a].iter().product();
    let mut data = match &first.data {
        Data::F32(_) => Data::F32(Vec::new()),
        Data::Int(_) => Data::Int(Vec::new()),
    };
    for o in 0..outer {
        for c in inputs {
            let block: usize = c.dims[a..].iter().product();
            match (&mut data, &c.data) {
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
    Ok(Const { dims, data })
}

/// `Slice` with ONNX's clamping rules.
pub(crate) fn slice(
    data: &Const,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Const, String> {
    // Bounds the per-axis index lists below by the folding limit.
    numel(&data.dims)?;
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
    let mut picks: Vec<Vec<usize>> = data.dims.iter().map(|&d| (0..d).collect()).collect();
    for k in 0..starts.len() {
        let a = axis(axes[k], rank)?;
        let n = data.dims[a] as i64;
        let step = steps[k];
        if step == 0 {
            return Err("a slice step of 0".to_owned());
        }
        let clamp = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
        let fix = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
        let (s, e) = if step > 0 {
            (clamp(fix(starts[k]), 0, n), clamp(fix(ends[k]), 0, n))
        } else {
            (
                clamp(fix(starts[k]), -1, n - 1),
                clamp(fix(ends[k]), -1, n - 1),
            )
        };
        let mut sel = Vec::new();
        let mut i = s;
        while (step > 0 && i < e) || (step < 0 && i > e) {
            sel.push(i as usize);
            match i.checked_add(step) {
                Some(next) => i = next,
                None => break,
            }
        }
        picks[a] = sel;
    }
    let dims: Vec<usize> = picks.iter().map(Vec::len).collect();
    numel(&dims)?;
    let st = strides(&data.dims);
    let mut pos = Vec::new();
    for_each_index(&dims, |idx| {
        pos.push(
            idx.iter()
                .enumerate()
                .map(|(a, &i)| picks[a][i] * st[a])
                .sum(),
        )
    });
    Ok(data.pick(dims, &pos))
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

/// `Unsqueeze` at `axes` (of the output).
pub(crate) fn unsqueeze(data: &Const, axes: &[i64]) -> Result<Const, String> {
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
    Ok(Const {
        dims,
        data: data.data.clone(),
    })
}

/// `Squeeze` at `axes` (all size-1 axes when `None`).
pub(crate) fn squeeze(data: &Const, axes: Option<&[i64]>) -> Result<Const, String> {
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
    let dims = (0..rank)
        .filter(|i| !drop.contains(i))
        .map(|i| data.dims[i])
        .collect();
    Ok(Const {
        dims,
        data: data.data.clone(),
    })
}

/// `Transpose` by `perm` (reversed axes when `None`).
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
    let mut pos = Vec::with_capacity(data.len());
    for_each_index(&dims, |idx| {
        pos.push(idx.iter().zip(&perm).map(|(&i, &p)| i * st[p]).sum())
    });
    Ok(data.pick(dims, &pos))
}

/// `Cast` to an ONNX data type.
pub(crate) fn cast(data: &Const, to: i32) -> Result<Const, String> {
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
    let out = if float.contains(&to) {
        Data::F32(data.floats()?)
    } else if int.contains(&to) {
        match &data.data {
            Data::Int(v) => Data::Int(v.clone()),
            Data::F32(v) => Data::Int(v.iter().map(|&x| Int::N(x.trunc() as i64)).collect()),
        }
    } else if to == T::BOOL as i32 {
        let vals = data.floats()?;
        Data::Int(vals.iter().map(|&x| Int::N(i64::from(x != 0.0))).collect())
    } else {
        return Err(format!(
            "casting constants to data type {to} is not supported"
        ));
    };
    Ok(Const {
        dims: data.dims.clone(),
        data: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_concat_and_reshape_fold_a_flatten_target() {
        // Shape(x) of a [B, 8, 2, 2] tensor, then [Shape(x)[0], -1].
        let shape = Const {
            dims: vec![4],
            data: Data::Int(vec![Int::Batch, Int::N(8), Int::N(2), Int::N(2)]),
        };
        let b = gather(&shape, &Const::i64(vec![], [0]), 0).unwrap();
        assert_eq!(b.dims, Vec::<usize>::new());
        let b = unsqueeze(&b, &[0]).unwrap();
        let target = concat(&[&b, &Const::i64(vec![1], [-1])], 0).unwrap();
        assert_eq!(target.data, Data::Int(vec![Int::Batch, Int::N(-1)]));
        assert!(target.ints().is_err());
    }

    #[test]
    fn arithmetic_broadcasts_and_keeps_the_batch_symbol_only_through_identities() {
        let a = Const::i64(vec![2], [6, 9]);
        let c = binary("Div", &a, &Const::i64(vec![], [3])).unwrap();
        assert_eq!(c.ints().unwrap(), vec![2, 3]);
        let batch = Const {
            dims: vec![1],
            data: Data::Int(vec![Int::Batch]),
        };
        assert_eq!(
            binary("Mul", &batch, &Const::i64(vec![1], [1]))
                .unwrap()
                .data,
            Data::Int(vec![Int::Batch])
        );
        assert!(binary("Mul", &batch, &Const::i64(vec![1], [2])).is_err());
        assert!(binary("Div", &a, &Const::i64(vec![], [0])).is_err());
        let f = binary(
            "Add",
            &Const::f32(vec![2, 1], vec![1.0, 2.0]),
            &Const::f32(vec![3], vec![10.0, 20.0, 30.0]),
        )
        .unwrap();
        assert_eq!(f.dims, vec![2, 3]);
        assert_eq!(f.floats().unwrap(), vec![11., 21., 31., 12., 22., 32.]);
    }

    #[test]
    fn slice_transpose_and_reshape_follow_onnx() {
        let x = Const::i64(vec![2, 3], [0, 1, 2, 3, 4, 5]);
        let s = slice(&x, &[1], &[i64::MAX], Some(&[1]), None).unwrap();
        assert_eq!(
            (s.dims.clone(), s.ints().unwrap()),
            (vec![2, 2], vec![1, 2, 4, 5])
        );
        let r = slice(&x, &[-1], &[i64::MIN], Some(&[1]), Some(&[-1])).unwrap();
        assert_eq!(r.ints().unwrap(), vec![2, 1, 0, 5, 4, 3]);
        let t = transpose(&x, None).unwrap();
        assert_eq!(
            (t.dims.clone(), t.ints().unwrap()),
            (vec![3, 2], vec![0, 3, 1, 4, 2, 5])
        );
        assert_eq!(reshape_dims(&[2, 3, 4], &[0, -1], false), Ok(vec![2, 12]));
        assert!(reshape_dims(&[2, 3, 4], &[5, -1], false).is_err());
        assert!(reshape_dims(&[2, 3], &[-1, -1], false).is_err());
        assert!(squeeze(&x, Some(&[0])).is_err());
        let e = expand(&Const::i64(vec![2, 1], [1, 2]), &[3]).unwrap();
        assert_eq!(
            (e.dims.clone(), e.ints().unwrap()),
            (vec![2, 3], vec![1, 1, 1, 2, 2, 2])
        );
        assert!(expand(&x, &[3, 3]).is_err());
    }
}
