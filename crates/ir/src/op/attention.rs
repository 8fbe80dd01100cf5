//! `attention`: multi-head scaled dot-product attention over token tensors, with prunable
//! heads.

use serde::{Deserialize, Serialize};

use super::onnx::{NameBase, OnnxAttr, OnnxConst, OnnxContext, OnnxRef, OnnxSpec};
use super::roles::{AfterSurgery, Scoring};
use super::{
    Arity, Channels, Contract, Op, ParamSpec, Role, ShapeInput, bounded, checked_numel, nonzero,
    tokens,
};

/// Multi-head scaled dot-product attention (the core of `torch.nn.MultiheadAttention`,
/// without its projections): inputs `q`, `k`, `v`, token tensors `[T, E]` of one shape with
/// `E = heads · head_dim`; output `[T, E]`, head *h* of which (channels `h·d … (h+1)·d`,
/// `d = head_dim`) is `softmax(q_h k_hᵀ / √d) v_h`, the heads concatenated in order
/// (`F.scaled_dot_product_attention` on `[N, heads, T, d]`, transposed back). The head count
/// is `E / head_dim`, so it follows the width after pruning.
///
/// Channel behaviour: [`Channels::Heads`]: the three inputs are coupled channel by channel
/// in whole heads (the q, k and v projections that feed it form one prunable group whose
/// units are heads), and its output carries the same head units (the output projection that
/// reads it loses the removed heads' input columns). Its MACs are the two batched matrix
/// products, `2 · T² · E` per sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attention {
    /// Channels of one head (`d`); kept when heads are removed.
    pub head_dim: usize,
}

impl Attention {
    /// Attention with heads of `head_dim` channels.
    pub fn new(head_dim: usize) -> Self {
        Attention { head_dim }
    }

    /// The softmax scale `1/√head_dim`.
    pub fn scale(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }
}

impl Contract for Attention {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        // What autograd keeps depends on T / head_dim: see `saved_for_backward`.
        Scoring::default()
    }
    /// `3·T·E + 2·heads·T²` for an output `[T, E]`: the two matrix products save contiguous
    /// copies of q, kᵀ and v (`[heads, T, d]` each, made from the transposed views), the
    /// softmax saves the weights `[heads, T, T]` (which the second product shares), and one
    /// more `[heads, T, T]` is counted for the scores alive while the weights are formed
    /// (and the weights' gradient in the backward). In outputs' worth: `3 + 2·T/head_dim`.
    fn saved_for_backward(&self, output: &[usize]) -> u64 {
        let &[t, e] = output else {
            debug_assert!(false, "attention's output is [T, E], not {output:?}");
            return 0;
        };
        let (t, e) = (t as u64, e as u64);
        let heads = e / (self.head_dim.max(1) as u64);
        (3 * t)
            .saturating_mul(e)
            .saturating_add((2 * heads).saturating_mul(t).saturating_mul(t))
    }
    fn onnx(&self, ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        // q, k, v [N, T, E] → Reshape [N, T, H, d] → Transpose to [N, H, T, d] (k to
        // [N, H, d, T]) → MatMul → Mul by 1/√d → Softmax over the last axis → MatMul by v →
        // Transpose [N, T, H, d] → Reshape [N, T, E].
        let s = ctx.inputs.first().copied().unwrap_or(&[]);
        let [t, e] = s[..] else {
            return Err(format!("expected tokens [T, E], found {s:?}"));
        };
        let d = self.head_dim;
        if d == 0 || !e.is_multiple_of(d) {
            return Err(format!("head_dim = {d} does not divide the width {e}"));
        }
        let mut spec = OnnxSpec::default();
        let heads = spec.constant(
            ".heads",
            OnnxConst::I64(vec![0, t as i64, (e / d) as i64, d as i64]),
        );
        let back = spec.constant(".shape", OnnxConst::I64(vec![0, t as i64, e as i64]));
        let scale = spec.scalar(".scale", self.scale() as f32);
        let split = |spec: &mut OnnxSpec, i: usize, what: &str, perm: Vec<i64>| {
            let r = spec.temp(NameBase::Value, &format!(".{what}_heads"));
            let tr = spec.temp(NameBase::Value, &format!(".{what}_t"));
            spec.node(
                &format!(".{what}_heads"),
                "Reshape",
                vec![OnnxRef::Input(i), heads],
                Some(r),
                vec![],
            );
            spec.node(
                &format!(".{what}_t"),
                "Transpose",
                vec![OnnxRef::Decl(r)],
                Some(tr),
                vec![("perm", OnnxAttr::Ints(perm))],
            );
            tr
        };
        let q = split(&mut spec, 0, "q", vec![0, 2, 1, 3]);
        let k = split(&mut spec, 1, "k", vec![0, 2, 3, 1]);
        let v = split(&mut spec, 2, "v", vec![0, 2, 1, 3]);
        let steps = [".scores", ".scaled", ".weights", ".context", ".context_t"];
        let [scores, scaled, weights, context, context_t] =
            steps.map(|suffix| spec.temp(NameBase::Value, suffix));
        spec.node(
            ".scores",
            "MatMul",
            vec![OnnxRef::Decl(q), OnnxRef::Decl(k)],
            Some(scores),
            vec![],
        );
        spec.node(
            ".scaled",
            "Mul",
            vec![OnnxRef::Decl(scores), scale],
            Some(scaled),
            vec![],
        );
        spec.node(
            ".softmax",
            "Softmax",
            vec![OnnxRef::Decl(scaled)],
            Some(weights),
            vec![("axis", OnnxAttr::Int(-1))],
        );
        spec.node(
            ".context",
            "MatMul",
            vec![OnnxRef::Decl(weights), OnnxRef::Decl(v)],
            Some(context),
            vec![],
        );
        spec.node(
            ".context_t",
            "Transpose",
            vec![OnnxRef::Decl(context)],
            Some(context_t),
            vec![("perm", OnnxAttr::Ints(vec![0, 2, 1, 3]))],
        );
        spec.node(
            "",
            "Reshape",
            vec![OnnxRef::Decl(context_t), back],
            None,
            vec![],
        );
        Ok(spec)
    }
    fn arity(&self) -> Arity {
        Arity::exactly(3)
    }
    fn role(&self) -> Role {
        Role::Merge
    }
    fn check(&self) -> Result<(), String> {
        nonzero("head_dim", self.head_dim)?;
        bounded("head_dim", self.head_dim)
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let (t, e) = tokens(inputs, 0)?;
        for (i, what) in [(1, "k"), (2, "v")] {
            let (from, s) = inputs[i];
            if s != [t, e] {
                return Err(format!(
                    "q (from '{}') has shape [{t}, {e}] but {what} (from '{from}') has {s:?}: q, k and v must be tokens of one shape",
                    inputs[0].0
                ));
            }
        }
        if !e.is_multiple_of(self.head_dim) {
            return Err(format!(
                "head_dim = {} does not divide the width {e} of q, k and v (from '{}'): the width must be heads × head_dim",
                self.head_dim, inputs[0].0
            ));
        }
        // The attention weights [heads, T, T] must be representable too.
        checked_numel("the attention weights", &[e / self.head_dim, t, t])?;
        Ok(vec![t, e])
    }
    fn params(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }
    fn macs(&self, output: &[usize]) -> Option<u64> {
        // q_h k_hᵀ: T·T·d per head, the weights times v_h as many: 2·T²·E in all.
        // Graphs infer [T, E] for every attention: anything else is a caller's bug, not a
        // free op (in release builds the MACs saturate, as on overflow).
        let &[t, e] = output else {
            debug_assert!(false, "attention's output is [T, E], not {output:?}");
            return None;
        };
        2u64.checked_mul(t as u64)?
            .checked_mul(t as u64)?
            .checked_mul(e as u64)
    }
    fn channels(&self) -> Channels {
        Channels::Heads {
            head_dim: self.head_dim,
        }
    }
    fn narrowed(&self, inputs: &[&[usize]], _units: Option<usize>) -> Result<Op, String> {
        let e = super::unit_count(inputs[0]);
        if !e.is_multiple_of(self.head_dim) {
            return Err(format!(
                "q, k and v keep {e} channels, not whole heads of head_dim = {} (heads are removed whole)",
                self.head_dim
            ));
        }
        Ok(self.clone().into())
    }
    fn torch_module(&self) -> Option<String> {
        None
    }
    fn torch_forward(&self, inputs: &[String], _module: &str) -> String {
        let heads =
            |x: &String| format!("{x}.unflatten(-1, (-1, {})).transpose(1, 2)", self.head_dim);
        format!(
            "torch.nn.functional.scaled_dot_product_attention({}, {}, {}).transpose(1, 2).flatten(2)",
            heads(&inputs[0]),
            heads(&inputs[1]),
            heads(&inputs[2])
        )
    }
}
