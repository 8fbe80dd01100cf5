//! timm's `Attention` (the attention of its `VisionTransformer`, ViT and DeiT): one fused
//! `qkv` linear layer on batch-first tokens, read as three `linear` layers (q, k, v: the
//! rows `0..E`, `E..2E` and `2E..3E` of the fused layer) feeding the pattern of
//! `attention.rs`.
//!
//! timm writes `qkv(x).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)` and
//! `q, k, v = qkv.unbind(0)`: a `Reshape` of the fused layer's tokens `[N, T, 3E]` to
//! `[N, T, 3, H, d]` ([`Qkv::Reshaped`]), a `Transpose` [2, 0, 3, 1, 4] to
//! `[3, N, H, T, d]` ([`Qkv::Permuted`]), and the unbind: a `Split` on axis 0 into three
//! (TorchScript) or three `Slice`s `[i, i+1)` on axis 0 (dynamo), each `[1, N, H, T, d]`
//! ([`Qkv::Part`]) and `Squeeze`d on axis 0; or a `Gather` of index 0, 1 or 2 on axis 0.
//! Each part becomes a `linear` layer of the fused layer's rows, read as heads transposed
//! to `[N, H, T, d]`, from where `F.scaled_dot_product_attention` (or the explicit
//! `q·scale @ kᵀ`, softmax, `@ v`) is the pattern of `attention.rs`. A step that leaves
//! the pattern is an error naming the node and the expected step.

use super::mha::{gather_one, squeeze_axes};
use super::{Importer, Value, dims_text};
use crate::OnnxError;
use crate::fold::{self, Int};
use crate::proto::NodeRef;

/// How timm's attention is read, for errors.
const QKV_AS_READ: &str =
    "(timm's Attention is read as qkv(x).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4).unbind(0))";

/// Where the split of timm's fused q, k, v is (carried by [`Value::Qkv`]); `x` is the IR
/// node of the fused linear layer (`[T, 3E]` per sample), `d` the head size.
#[derive(Debug, Clone)]
pub(super) enum Qkv {
    /// The fused q, k, v reshaped to `[N, T, 3, H, d]`.
    Reshaped { x: String, d: usize },
    /// Permuted to `[3, N, H, T, d]`.
    Permuted { x: String, d: usize },
    /// Part `i` (q 0, k 1, v 2) with the leading axis kept, `[1, N, H, T, d]`.
    Part { x: String, d: usize, i: usize },
}

impl Importer<'_> {
    /// What the step `q` is and which step may read it, for errors.
    fn qkv_what(q: &Qkv) -> String {
        match q {
            Qkv::Reshaped { x, d } => format!(
                "the fused q, k, v of '{x}' reshaped to [N, T, 3, H, {d}], which only a Transpose [2, 0, 3, 1, 4] may read"
            ),
            Qkv::Permuted { x, d } => format!(
                "the fused q, k, v of '{x}' permuted to [3, N, H, T, {d}], which only its unbind on axis 0 may read (a Split into three, a Slice [i, i+1) or a Gather of index 0, 1 or 2, on axis 0)"
            ),
            Qkv::Part { x, i, .. } => format!(
                "the {} of the fused q, k, v of '{x}' with its leading axis kept, [1, N, H, T, d], which only a Squeeze of axis 0 may read",
                ["q", "k", "v"][*i]
            ),
        }
    }

    /// An error for node `n` reading the step `q` in a way the pattern does not.
    pub(super) fn qkv_err(&self, n: &NodeRef, q: &Qkv) -> OnnxError {
        n.err(format!(
            "multi-head attention: unexpected use of {} {QKV_AS_READ}",
            Self::qkv_what(q)
        ))
    }

    /// `Reshape` of a linear layer's tokens `[N, T, 3E]` to `[N, T, 3, H, d]` (the fused
    /// q, k, v), or a `Reshape` of a step of the split (an error); `None` otherwise.
    pub(super) fn qkv_reshape(
        &self,
        n: &NodeRef,
        input: &Value,
        t: &[Int],
        allowzero: bool,
    ) -> Option<Result<Value, OnnxError>> {
        let x = match input {
            Value::Qkv(q) => return Some(Err(self.qkv_err(n, q))),
            Value::Act(x) => x,
            _ => return None,
        };
        self.shapes.get(x)?;
        // Per ONNX row: windowed tokens (Swin) have nW rows per sample.
        let (rows, s) = self.rows(x);
        let s = &s;
        let [tokens, width] = s[..] else { return None };
        let [tt, 3, h, d] = self.resolve_rows(t, s, allowzero, rows)?[..] else {
            return None;
        };
        if tt != tokens || h == 0 || d == 0 || 3 * h * d != width {
            return None;
        }
        let is_linear = (self.nodes.iter().find(|m| &m.name == x))
            .is_some_and(|m| matches!(m.op, fair_ir::Op::Linear(_)));
        if !is_linear {
            return Some(Err(n.err(format!(
                "multi-head attention: tokens [N, {}] reshaped to [N, {tt}, 3, {h}, {d}] must be the output of the fused qkv linear layer (MatMul by a constant, plus its bias); '{x}' is another node {QKV_AS_READ}",
                dims_text(s)
            ))));
        }
        // The fused layer is replaced by q, k and v: nothing else may read it (but a
        // `Shape`, which reads only its dimensions), under any of its ONNX values.
        if let Some(who) = self.other_reader(n, x) {
            let fused = &n.node.input[0];
            return Some(Err(n.err(format!(
                "multi-head attention: the fused q, k, v '{fused}' (of '{x}') is also read by {who}; only this Reshape (and Shape) may read it, as the fused qkv layer is split into q, k and v {QKV_AS_READ}"
            ))));
        }
        Some(Ok(Value::Qkv(Qkv::Reshaped { x: x.clone(), d })))
    }

    /// The module the fused q, k, v layer `fused` belongs to (`….attn`), which its parts
    /// are named after: from the name of the bias the exporter added to it
    /// (`….attn.qkv.bias`), else from the layer's own name (`….attn.qkv`).
    fn qkv_module(&self, fused: &str) -> String {
        let from = |name: &str| -> Option<String> {
            let m = name.strip_suffix(".bias").unwrap_or(name);
            let m = m.strip_suffix(".qkv")?;
            crate::names::is_clean(m).then(|| m.to_owned())
        };
        let bias = (self.graph.node.iter())
            .filter(|m| m.op_type == "Add")
            .filter(|m| {
                (m.output.first()).is_some_and(
                    |o| matches!(self.values.get(o), Some(Value::Act(a)) if a == fused),
                )
            })
            .flat_map(|m| m.input.iter())
            .find_map(|i| from(i));
        bias.or_else(|| from(fused))
            .unwrap_or_else(|| fused.to_owned())
    }

    /// `Transpose` [2, 0, 3, 1, 4] of the reshaped fused q, k, v; `None` when the input is
    /// no step of the split.
    pub(super) fn qkv_transpose(
        &self,
        n: &NodeRef,
        input: &Value,
        perm: &[i64],
    ) -> Option<Result<Value, OnnxError>> {
        let Value::Qkv(q) = input else { return None };
        Some(match (q, perm) {
            (Qkv::Reshaped { x, d }, [2, 0, 3, 1, 4]) => Ok(Value::Qkv(Qkv::Permuted {
                x: x.clone(),
                d: *d,
            })),
            _ => Err(n.err(format!(
                "multi-head attention: {}; found perm {perm:?} {QKV_AS_READ}",
                Self::qkv_what(q)
            ))),
        })
    }

    /// `Split` on axis 0 of the permuted fused q, k, v into three parts of 1; `None` when
    /// input 0 is no step of the split. Binds the node's outputs.
    pub(super) fn qkv_split(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<(), OnnxError>> {
        let Some(Some(Value::Qkv(q))) = inputs.first() else {
            return None;
        };
        let Qkv::Permuted { x, d } = q else {
            return Some(Err(self.qkv_err(n, q)));
        };
        let sizes = match self.opt_konst(n, inputs, 1) {
            Ok(Some(c)) => c.ints().ok(),
            Ok(None) => match n.ints("split") {
                Ok(Some(v)) => Some(v),
                // Equal parts (`num_outputs`, or none given): one each of three.
                Ok(None) => Some(vec![1; n.node.output.len()]),
                Err(e) => return Some(Err(e)),
            },
            Err(e) => return Some(Err(e)),
        };
        // The permuted q, k, v are [3, N, H, T, d]: rank 5.
        let axis = n.int_or("axis", 0).ok();
        if axis.and_then(|a| fold::axis(a, 5).ok()) != Some(0)
            || sizes.as_deref() != Some(&[1, 1, 1])
        {
            return Some(Err(n.err(format!(
                "multi-head attention: {}: expected a Split on axis 0 into three parts of 1 (q, k, v), found axis {axis:?} and sizes {sizes:?} {QKV_AS_READ}",
                Self::qkv_what(q)
            ))));
        }
        let (x, d) = (x.clone(), *d);
        for (i, out) in n.node.output.iter().enumerate() {
            let part = Value::Qkv(Qkv::Part { x: x.clone(), d, i });
            self.values.insert(out.clone(), part);
        }
        Some(Ok(()))
    }

    /// `Slice` `[i, i+1)` on axis 0 of the permuted fused q, k, v: part `i`; `None` when
    /// input 0 is no step of the split.
    pub(super) fn qkv_slice(
        &self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<Value, OnnxError>> {
        let Some(Some(Value::Qkv(q))) = inputs.first() else {
            return None;
        };
        let Qkv::Permuted { x, d } = q else {
            return Some(Err(self.qkv_err(n, q)));
        };
        let ints = |k: usize| match inputs.get(k) {
            Some(Some(Value::Const(c))) => c.ints().ok(),
            _ => None,
        };
        let (starts, ends) = (ints(1), ints(2));
        let axes = if inputs.get(3).cloned().flatten().is_some() {
            ints(3)
        } else {
            Some(vec![0])
        };
        let steps = if inputs.get(4).cloned().flatten().is_some() {
            ints(4)
        } else {
            Some(vec![1])
        };
        let fix = |v: i64| (if v < 0 { v.saturating_add(3) } else { v }).clamp(0, 3);
        let part = match (
            starts.as_deref(),
            ends.as_deref(),
            axes.as_deref(),
            steps.as_deref(),
        ) {
            (Some([s]), Some([e]), Some([a]), Some([1]))
                if fold::axis(*a, 5).ok() == Some(0) && fix(*e) == fix(*s) + 1 =>
            {
                Some(fix(*s) as usize)
            }
            _ => None,
        };
        Some(match part {
            Some(i @ 0..=2) => Ok(Value::Qkv(Qkv::Part {
                x: x.clone(),
                d: *d,
                i,
            })),
            _ => Err(n.err(format!(
                "multi-head attention: {}: expected a Slice [i, i+1) with step 1 on axis 0 (i = 0, 1, 2: q, k, v), found starts {starts:?}, ends {ends:?}, axes {axes:?}, steps {steps:?} {QKV_AS_READ}",
                Self::qkv_what(q)
            ))),
        })
    }

    /// `Squeeze` of axis 0 of part `i` of the fused q, k, v: a `linear` layer of the fused
    /// layer's rows, read as heads `[N, H, T, d]`; `None` when input 0 is no step of the
    /// split.
    pub(super) fn qkv_squeeze(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<Value, OnnxError>> {
        let Some(Some(Value::Qkv(q))) = inputs.first() else {
            return None;
        };
        // A part is [1, N, H, T, d]: rank 5.
        match (q, squeeze_axes(n, inputs, 5).as_deref()) {
            (Qkv::Part { x, d, i }, Some([0])) => {
                let (x, d, i) = (x.clone(), *d, *i);
                Some(self.qkv_part(n, &x, d, i))
            }
            _ => Some(Err(self.qkv_err(n, q))),
        }
    }

    /// `Gather` of index 0, 1 or 2 on axis 0 of the permuted fused q, k, v: q, k or v, as
    /// heads `[N, H, T, d]`; `None` when input 0 is no step of the split.
    pub(super) fn qkv_gather(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<Value, OnnxError>> {
        let Some(Some(Value::Qkv(q))) = inputs.first() else {
            return None;
        };
        let Qkv::Permuted { x, d } = q else {
            return Some(Err(self.qkv_err(n, q)));
        };
        // The permuted q, k, v are [3, N, H, T, d]: rank 5.
        let (Some(i @ 0..=2), Some(0)) = gather_one(n, inputs, 5) else {
            return Some(Err(n.err(format!(
                "multi-head attention: {}: expected a Gather of index 0, 1 or 2 (q, k, v) on axis 0 {QKV_AS_READ}",
                Self::qkv_what(q)
            ))));
        };
        let (x, d) = (x.clone(), *d);
        Some(self.qkv_part(n, &x, d, i as usize))
    }

    /// Part `i` of the fused q, k, v `fused` as heads `[N, H, T, d]`: a `linear` layer of
    /// the fused layer's rows `i·E .. (i+1)·E`, named `<module>.q_proj` (`k_proj`,
    /// `v_proj`) after the fused layer's module (`….attn.qkv` → `….attn`).
    fn qkv_part(
        &mut self,
        n: &NodeRef,
        fused: &str,
        d: usize,
        i: usize,
    ) -> Result<Value, OnnxError> {
        let module = self.qkv_module(fused);
        match self.split_fused(n, fused, i, &module, QKV_AS_READ)? {
            Value::Act(y) => {
                if i == 0 {
                    self.attend_names
                        .insert(y.clone(), format!("{module}.attend"));
                }
                Ok(Value::HeadsFirst {
                    x: y,
                    d,
                    keys: false,
                    scale: 1.0,
                })
            }
            other => Ok(other),
        }
    }
}

impl Importer<'_> {
    /// `Div` of the sum of two linear layers by a scalar constant `c` (DeiT's distilled
    /// model averages its two heads, `(head(x) + head_dist(x_dist)) / 2`): `1/c` is folded
    /// into both layers' weights and biases, and the sum is the result. `None` when input 0
    /// is not such a sum (then `Div` of computed tensors is refused as before); an error when
    /// the layers or the sum are read elsewhere, which the folding would change.
    pub(super) fn averaged_heads(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<Value, OnnxError>> {
        let (Some(Some(Value::Act(sum))), Some(Some(Value::Const(c)))) =
            (inputs.first(), inputs.get(1))
        else {
            return None;
        };
        let node = self.nodes.iter().find(|m| &m.name == sum)?;
        if !matches!(node.op, fair_ir::Op::Add(_)) || node.inputs.len() != 2 {
            return None;
        }
        let layers = node.inputs.clone();
        let linear = |name: &String| {
            (self.nodes.iter().find(|m| &m.name == name))
                .is_some_and(|m| matches!(m.op, fair_ir::Op::Linear(_)))
        };
        if !layers.iter().all(linear) || layers[0] == layers[1] {
            return None;
        }
        let refuse = |why: String| {
            Some(Err(n.err(format!(
                "dividing the sum of the linear layers '{}' and '{}' by a constant (the average of a distilled model's two heads) is supported only when it folds into both layers: {why}",
                layers[0], layers[1]
            ))))
        };
        // The divisor must not add axes: of rank at most that of the sum [N, …].
        let rank = self.shapes.get(sum).map_or(0, Vec::len) + 1;
        let value = match (&*c.data, c.scalar_f32()) {
            (crate::fold::Data::F32(_), Ok(v))
                if v != 0.0 && v.is_finite() && c.dims.len() <= rank =>
            {
                v
            }
            _ => {
                return refuse(format!(
                    "the divisor must be one non-zero float of rank at most {rank} (the sum's), found shape {:?}",
                    c.dims
                ));
            }
        };
        // Nothing but the sum reads the layers, and nothing but `n` reads the sum.
        let mut names: Vec<&str> = layers.iter().map(String::as_str).collect();
        names.push(sum);
        for name in &names {
            let ir_readers = (self.nodes.iter())
                .filter(|m| m.inputs.iter().any(|i| i == name))
                .count();
            // The layer's output before a bias `Add` (read by that `Add` only: later readers
            // are refused) is not counted.
            let onnx: Vec<&str> = (self.values.iter())
                .filter(|(k, _)| !self.pre_bias.contains_key(*k))
                .filter(|(_, v)| matches!(v, Value::Act(a) if a == name))
                .map(|(k, _)| k.as_str())
                .collect();
            let onnx_readers: usize = onnx
                .iter()
                .map(|k| self.readers.get(k).copied().unwrap_or(0))
                .sum();
            let want = if *name == sum { (0, 1) } else { (1, 1) };
            if (ir_readers, onnx_readers) != want {
                return refuse(format!("'{name}' is read elsewhere"));
            }
        }
        let factor = 1.0 / value;
        for layer in &layers {
            for p in ["weight", "bias"] {
                if let Some(t) = self.tensors.get_mut(&format!("{layer}.{p}"))
                    && let crate::TensorData::F32(d) = &mut t.data
                {
                    d.iter_mut().for_each(|w| *w *= factor);
                }
            }
        }
        self.notes.push(format!(
            "the division by {value} of '{}' was folded into the weights of '{}' and '{}'",
            n.id, layers[0], layers[1]
        ));
        Some(Ok(Value::Act(sum.to_owned())))
    }
}
