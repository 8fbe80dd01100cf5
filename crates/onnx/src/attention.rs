//! Multi-head attention written out in ONNX, read back as one `attention` node.
//!
//! fair-pruner exports `attention` decomposed (see `fair_ir::Attention`'s contract): q, k
//! and v tokens `[N, T, E]` are each reshaped to heads `[N, T, H, d]` and transposed to
//! `[N, H, T, d]` (k to `[N, H, d, T]`, or `[N, H, T, d]` then its last two axes swapped);
//! `MatMul(q, k)` gives the scores, which a `Mul` by `1/√d` (or a `Div` by `√d`) scales;
//! `Softmax` over the last axis gives the weights; `MatMul(weights, v)` the context, which
//! `Transpose` `[0, 2, 1, 3]` and `Reshape` `[N, T, E]` turn back into tokens. Each step
//! marks its value ([`Value::Heads`] … [`Value::Context`]) and the last one emits the IR
//! node. A step that leaves the pattern is an error naming the node and what was expected.

use super::{Importer, Value, dims_text};
use crate::OnnxError;
use crate::fold::{self, Data};
use crate::proto::NodeRef;

/// Where an attention step is in the pattern (carried by [`Value`]).
impl Importer<'_> {
    /// `Reshape` of tokens `[N, T, E]` to heads `[N, T, E/d, d]` (the target's `t`), or of
    /// the transposed context back to tokens; `None` when `x` is not such a reshape.
    pub(super) fn attention_reshape(
        &mut self,
        n: &NodeRef,
        input: &Value,
        t: &[fold::Int],
        allowzero: bool,
    ) -> Option<Result<Value, OnnxError>> {
        match input {
            Value::Act(x) => {
                // Per ONNX row: windowed tokens (Swin) have nW rows per sample.
                let (rows, s) = self.rows(x);
                let [tokens, width] = s[..] else { return None };
                match self.resolve_rows(t, &s, allowzero, rows)?.as_slice() {
                    [tt, h, d] if *tt == tokens && h * d == width && *d > 0 && *h > 0 => {
                        Some(Ok(Value::Heads {
                            x: x.clone(),
                            d: *d,
                        }))
                    }
                    // One head, already head-first `[N, 1, T, E]` (the dynamo exporter drops
                    // torch.nn.MultiheadAttention's `[T, N·1, d]` view, which changes
                    // nothing with one head, and writes this reshape in its place).
                    [1, tt, d] if *tt == tokens && *d == width && width > 0 => {
                        Some(Ok(Value::HeadsFirst {
                            x: x.clone(),
                            d: width,
                            keys: false,
                            scale: 1.0,
                        }))
                    }
                    _ => None,
                }
            }
            // Heads with the batch and head axes merged ([N·H, T, d]) and back: the dynamo
            // exporter's transpose of k.
            Value::HeadsFirst { x, d, keys, scale } if *scale == 1.0 => {
                let (rows, s) = self.rows(x);
                let (tokens, heads) = (s[0] as i64, (s[1] / d) as i64);
                // The two axes after the merged one: [T, d], or [d, T] for the keys.
                let inner = if *keys {
                    [*d as i64, tokens]
                } else {
                    [tokens, *d as i64]
                };
                let merged = match t {
                    [nh, fold::Int::N(a), fold::Int::N(b)] => {
                        self.batch_times(*nh, heads * rows as i64) && [*a, *b] == inner
                    }
                    _ => false,
                };
                merged.then(|| {
                    Ok(Value::MergedHeads {
                        x: x.clone(),
                        d: *d,
                        keys: *keys,
                    })
                })
            }
            Value::MergedHeads { x, d, keys } => {
                let (rows, s) = self.rows(x);
                let (tokens, heads) = (s[0], s[1] / d);
                let want = if *keys {
                    vec![heads, *d, tokens]
                } else {
                    vec![heads, tokens, *d]
                };
                Some(
                    if self.resolve_rows(t, &want, allowzero, rows).as_ref() == Some(&want) {
                        Ok(Value::HeadsFirst {
                            x: x.clone(),
                            d: *d,
                            keys: *keys,
                            scale: 1.0,
                        })
                    } else {
                        Err(n.err(format!(
                        "heads with the batch and head axes merged must be reshaped back to [N, {}]; here they are reshaped to [{}]",
                        dims_text(&want),
                        super::describe(t)
                    )))
                    },
                )
            }
            Value::Context {
                q,
                k,
                v,
                d,
                transposed,
            } => {
                let (rows, s) = self.rows(q);
                let heads = [s[0], s[1] / d, *d];
                let back = self.resolve_rows(t, &heads, allowzero, rows);
                if !*transposed || back.as_deref() != Some(&s) {
                    return Some(Err(n.err(format!(
                        "the attention context must be transposed to [N, T, heads, d] (perm [0, 2, 1, 3]) and reshaped back to tokens [N, {}]; here it is reshaped to [{}]",
                        dims_text(&s),
                        super::describe(t)
                    ))));
                }
                let hint =
                    (self.attend_names.get(q).cloned()).unwrap_or_else(|| self.hint(n, None));
                let ins = vec![q.clone(), k.clone(), v.clone()];
                // Windowed (Swin), with a bias or cosine scores where the pattern saw them.
                let (op, params) = match self.attention_node(n, q, *d) {
                    Ok(o) => o,
                    Err(e) => return Some(Err(e)),
                };
                Some(self.emit(n, hint, op, ins, params))
            }
            _ => None,
        }
    }

    /// `Transpose` of heads to `[N, H, T, d]` (q, v) or `[N, H, d, T]` (k), of q-like heads'
    /// last two axes (k), or of the context back to `[N, T, H, d]`.
    pub(super) fn attention_transpose(&self, input: &Value, perm: &[i64]) -> Option<Value> {
        let first = |x: &String, d: usize, keys: bool, scale: f64| Value::HeadsFirst {
            x: x.clone(),
            d,
            keys,
            scale,
        };
        match (input, perm) {
            (Value::Heads { x, d }, [0, 2, 1, 3]) => Some(first(x, *d, false, 1.0)),
            (Value::Heads { x, d }, [0, 2, 3, 1]) => Some(first(x, *d, true, 1.0)),
            (Value::HeadsFirst { x, d, keys, scale }, [0, 1, 3, 2]) => {
                Some(first(x, *d, !keys, *scale))
            }
            (Value::MergedHeads { x, d, keys }, [0, 2, 1]) => Some(Value::MergedHeads {
                x: x.clone(),
                d: *d,
                keys: !keys,
            }),
            (
                Value::Context {
                    q,
                    k,
                    v,
                    d,
                    transposed: false,
                },
                [0, 2, 1, 3],
            ) => Some(Value::Context {
                q: q.clone(),
                k: k.clone(),
                v: v.clone(),
                d: *d,
                transposed: true,
            }),
            _ => None,
        }
    }

    /// `MatMul` of q's heads by k's transposed heads (the scores), or of the softmax weights
    /// by v's heads (the context); `None` when neither operand is an attention step.
    pub(super) fn attention_matmul(
        &self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<Value, OnnxError>> {
        let (a, b) = (inputs.first()?.as_ref()?, inputs.get(1)?.as_ref()?);
        let step = |v: &Value| {
            matches!(
                v,
                Value::Heads { .. }
                    | Value::HeadsFirst { .. }
                    | Value::MergedHeads { .. }
                    | Value::Scores { .. }
                    | Value::Weights { .. }
                    | Value::Context { .. }
            )
        };
        if !step(a) && !step(b) {
            return None;
        }
        Some(match (a, b) {
            (
                Value::HeadsFirst {
                    x: q,
                    d,
                    keys: false,
                    scale: sq,
                },
                Value::HeadsFirst {
                    x: k,
                    d: dk,
                    keys: true,
                    scale: sk,
                },
            ) if d == dk && self.shapes[q] == self.shapes[k] => Ok(Value::Scores {
                q: q.clone(),
                k: k.clone(),
                d: *d,
                scale: sq * sk,
            }),
            (
                Value::Weights { q, k, d },
                Value::HeadsFirst {
                    x: v,
                    d: dv,
                    keys: false,
                    scale,
                },
            ) if d == dv && *scale == 1.0 && self.shapes[q] == self.shapes[v] => {
                Ok(Value::Context {
                    q: q.clone(),
                    k: k.clone(),
                    v: v.clone(),
                    d: *d,
                    transposed: false,
                })
            }
            _ => Err(n.err(format!(
                "a MatMul in multi-head attention must multiply q's heads [N, H, T, d] by k's transposed heads [N, H, d, T] (the scores), or the softmax weights by v's unscaled heads [N, H, T, d] (the context), with one head size and token count; here it multiplies {} by {}",
                self.attention_step(a),
                self.attention_step(b)
            ))),
        })
    }

    /// What an input was read as, for errors: which attention step (the Reshape that split
    /// tokens into heads, named as such, and the steps after it), or a plain tensor.
    pub(super) fn attention_step(&self, v: &Value) -> String {
        let heads = |x: &String, d: &usize| {
            format!(
                "the heads of '{x}' (a Reshape of its tokens [N, {}] to [N, T, H, d] with d = {d}, read as the heads of multi-head attention)",
                self.shapes
                    .get(x)
                    .map_or_else(String::new, |s| dims_text(s))
            )
        };
        match v {
            Value::Heads { x, d } => heads(x, d),
            Value::HeadsFirst { x, d, keys, scale } => format!(
                "{}, transposed to {}{}",
                heads(x, d),
                if *keys {
                    "[N, H, d, T] (the keys' layout, perm [0, 2, 3, 1])"
                } else {
                    "[N, H, T, d] (perm [0, 2, 1, 3])"
                },
                if *scale == 1.0 {
                    String::new()
                } else {
                    format!(" and scaled by {scale}")
                }
            ),
            Value::MergedHeads { x, d, .. } => {
                format!("{} with the batch and head axes merged", heads(x, d))
            }
            Value::Scores { q, k, .. } => format!("the scores of '{q}' and '{k}'"),
            Value::Weights { q, k, .. } => format!("the softmax weights of '{q}' and '{k}'"),
            Value::Context { v, .. } => format!("the attention context of '{v}'"),
            Value::Const(_) => "a constant".into(),
            _ => "a tensor that is no attention step".into(),
        }
    }

    /// `Mul` or `Div` of the scores, or of q's or k's heads (PyTorch's export scales both by
    /// √(1/√d)), by a scalar constant: the scale; `None` when no operand is one of them.
    pub(super) fn attention_scale(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
        divide: bool,
    ) -> Option<Result<Value, OnnxError>> {
        let k = inputs
            .iter()
            .position(|v| matches!(v, Some(Value::Scores { .. } | Value::HeadsFirst { .. })))?;
        let operand = inputs[k].clone()?;
        if divide && k != 0 {
            return Some(Err(n.err(
                "dividing by the attention's scores or heads is not supported",
            )));
        }
        let c = match self.konst(n, inputs, 1 - k) {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        let value = match (&*c.data, c.scalar_f32()) {
            (Data::F32(_), Ok(v)) => f64::from(v),
            _ => {
                return Some(Err(n.err(format!(
                    "the attention scores may only be scaled by one float constant, found shape {:?}",
                    c.dims
                ))));
            }
        };
        let times = |scale: f64| if divide { scale / value } else { scale * value };
        Some(Ok(match operand {
            Value::Scores { q, k, d, scale } => Value::Scores {
                q,
                k,
                d,
                scale: times(scale),
            },
            Value::HeadsFirst { x, d, keys, scale } => Value::HeadsFirst {
                x,
                d,
                keys,
                scale: times(scale),
            },
            other => other,
        }))
    }

    /// The shape of an attention step, batch axis included (for `Shape`, which PyTorch's
    /// export reads to compute the scale and the final reshape), or `None` when input 0 is
    /// not one.
    pub(super) fn attention_shape(&self, inputs: &[Option<Value>]) -> Option<Vec<fold::Int>> {
        // Per ONNX row (windowed tokens have nW rows per sample).
        let rows = |x: &String| self.shapes.get(x).map(|_| self.rows(x).0).unwrap_or(1);
        let tokens = |x: &String| -> Option<(usize, usize)> {
            self.shapes.get(x)?;
            match self.rows(x).1.as_slice() {
                [t, e] => Some((*t, *e)),
                _ => None,
            }
        };
        // MaxViT's heads and scores keep the batch axis apart ([N, G, H, T, d]): their shape
        // is not read (an error names the node instead of a wrong shape).
        let grouped = |x: &String| {
            matches!(
                self.layouts.get(x),
                Some(super::swin::Layout::Groups { .. })
            )
        };
        match inputs.first()?.as_ref()? {
            Value::Heads { x, .. } | Value::HeadsFirst { x, .. } | Value::MergedHeads { x, .. }
                if grouped(x) =>
            {
                return None;
            }
            Value::Scores { q, .. } | Value::Weights { q, .. } | Value::Context { q, .. }
                if grouped(q) =>
            {
                return None;
            }
            _ => {}
        }
        let factor = match inputs.first()?.as_ref()? {
            Value::Heads { x, .. } | Value::HeadsFirst { x, .. } | Value::MergedHeads { x, .. } => {
                rows(x)
            }
            Value::Scores { q, .. } | Value::Weights { q, .. } | Value::Context { q, .. } => {
                rows(q)
            }
            _ => 1,
        };
        let (merged, dims) = match inputs.first()?.as_ref()? {
            Value::Heads { x, d } => {
                let (t, e) = tokens(x)?;
                (false, vec![t, e / d, *d])
            }
            Value::HeadsFirst { x, d, keys, .. } => {
                let (t, e) = tokens(x)?;
                (
                    false,
                    if *keys {
                        vec![e / d, *d, t]
                    } else {
                        vec![e / d, t, *d]
                    },
                )
            }
            // [N·H, T, d] ([N·H, d, T] for the keys).
            Value::MergedHeads { x, d, keys } => {
                let (t, e) = tokens(x)?;
                (
                    true,
                    if *keys {
                        vec![e / d, *d, t]
                    } else {
                        vec![e / d, t, *d]
                    },
                )
            }
            Value::Scores { q, d, .. } | Value::Weights { q, d, .. } => {
                let (t, e) = tokens(q)?;
                (false, vec![e / d, t, t])
            }
            Value::Context {
                q, d, transposed, ..
            } => {
                let (t, e) = tokens(q)?;
                (
                    false,
                    if *transposed {
                        vec![t, e / d, *d]
                    } else {
                        vec![e / d, t, *d]
                    },
                )
            }
            _ => return None,
        };
        let ints = dims.iter().map(|&v| fold::Int::N(v as i64));
        Some(if merged {
            // The batch axis merged with the first one.
            std::iter::once(fold::Int::batch_times((dims[0] * factor) as i64))
                .chain(ints.skip(1))
                .collect()
        } else {
            std::iter::once(fold::Int::batch_times(factor as i64))
                .chain(ints)
                .collect()
        })
    }

    /// `Softmax` over the last axis of the scaled scores: the weights. A scale other than
    /// `1/√d` is kept for the attention node (`fair_ir::Attention::scale`).
    pub(super) fn attention_softmax(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Result<Value, OnnxError> {
        n.only(&["axis"])?;
        let Some(Some(Value::Scores { q, k, d, scale })) = inputs.first() else {
            return Err(n.err(
                "Softmax is supported only over the scaled scores of multi-head attention (MatMul of q's heads by k's transposed heads, times 1/√head_dim)",
            ));
        };
        let default = if self.opset >= 13 { -1 } else { 1 };
        let axis = fold::axis(n.int_or("axis", default)?, 4).map_err(|e| n.attr_err("axis", e))?;
        if axis != 3 {
            return Err(n.attr_err(
                "axis",
                format!("the attention softmax must run over the keys (the last axis, 3 of [N, H, T, T]), found {axis}"),
            ));
        }
        let want = 1.0 / (*d as f64).sqrt();
        if !(scale.is_finite() && *scale > 0.0) {
            return Err(n.err(format!(
                "the attention scores are scaled by {scale}, which is no positive scale"
            )));
        }
        if ((scale - want) / want).abs() > 1e-6 {
            // In the file's precision, written back as it reads (e.g. 0.3, not 0.30000001).
            let s = super::f32_to_f64(*scale as f32);
            self.attn_extra.entry(q.clone()).or_default().set_scale(s);
            self.notes.push(format!(
                "the attention reading '{q}' scales its scores by {s}, not by 1/√head_dim = {want}; kept as its scale"
            ));
        }
        Ok(Value::Weights {
            q: q.clone(),
            k: k.clone(),
            d: *d,
        })
    }
}
