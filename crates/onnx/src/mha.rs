//! `torch.nn.MultiheadAttention` (self-attention, `batch_first`, fused `in_proj`) as both
//! PyTorch exporters write it, read as three `linear` layers (q, k, v: the rows of the
//! fused projection), one `attention` node and the output projection; and the token ops of
//! torchvision's `VisionTransformer` (class token, position embedding, class-token select).
//!
//! The module runs on sequence-first tokens: `Transpose` [1, 0, 2] makes `[T, N, E]` of the
//! tokens ([`Mha::SeqFirst`]); `MatMul` by `in_proj_weight`ᵀ plus `Add` of `in_proj_bias`
//! gives the fused q, k, v `[T, N, 3E]`; `Reshape` `[T, N, 3, E]`, `Unsqueeze` 0,
//! `Transpose` [3, 1, 2, 0, 4] and `Squeeze` 3 give `[3, T, N, E]` ([`Mha::Packed`]), whose
//! `Gather` 0, 1, 2 on axis 0 are q, k and v (each becomes a `linear` layer of the fused
//! projection's rows). Each is reshaped to `[T, N·H, d]` ([`Mha::SeqHeads`]) and transposed
//! [1, 0, 2] to `[N·H, T, d]`, from where the scaled dot-product attention is the pattern of
//! `attention.rs`. Its context `[N, H, T, d]` is transposed [2, 0, 1, 3] to `[T, N, H, d]`
//! ([`Mha::SeqContext`]) and reshaped to rows `[T·N, E]` (the `attention` node,
//! [`Mha::SeqRows`]); the output projection's `Gemm` runs on the rows, `Reshape` `[T, N, E]`
//! and `Transpose` [1, 0, 2] give tokens back. A step that leaves the pattern is an error
//! naming the node.

use std::collections::HashSet;
use std::rc::Rc;

use fair_ir::{Attention, ClassToken, Linear, ParamKind, PositionEmbedding, TokenSelect};

use super::{Importer, Value, describe};
use crate::OnnxError;
use crate::TensorData;
use crate::fold::{self, Const, Data, Int};
use crate::proto::NodeRef;

/// How `torch.nn.MultiheadAttention` is read, for errors.
const MHA_AS_READ: &str = "(torch.nn.MultiheadAttention is read as exported with batch_first=True, self-attention, a fused in_proj and need_weights=False)";

/// Where a sequence-first multi-head attention is (carried by [`Value::Mha`]).
#[derive(Debug, Clone)]
pub(super) enum Mha {
    /// The IR node's tokens `[N, T, F]` transposed to `[T, N, F]`.
    SeqFirst(String),
    /// The fused q, k, v projection's output `[T, N, 3E]` (IR node `x`, `[T, 3E]`) on its
    /// way to `[3, T, N, E]`: `stage` 0 after `Reshape` `[T, N, 3, E]`, 1 after `Unsqueeze`
    /// 0, 2 after `Transpose` [3, 1, 2, 0, 4], 3 after `Squeeze` 3.
    Packed { x: String, stage: u8 },
    /// Sequence-first q, k or v (IR node `x`, `[T, E]`) reshaped to `[T, N·H, d]`.
    SeqHeads { x: String, d: usize },
    /// The attention context transposed to `[T, N, H, d]`.
    SeqContext {
        q: String,
        k: String,
        v: String,
        d: usize,
    },
    /// The IR node's tokens as sequence-first rows `[T·N, F]`.
    SeqRows(String),
}

impl Importer<'_> {
    /// Whether `t` is a merged axis of `k` per sample (`N·k`) in a `Reshape` target: `k`
    /// times the batch symbol, the inferred axis (-1), or `k` times the file's batch size.
    pub(super) fn batch_times(&self, t: Int, k: i64) -> bool {
        match t {
            Int::Batch(m) => m == k,
            Int::N(-1) => true,
            Int::N(m) => self
                .batch
                .is_some_and(|b| Some(m) == k.checked_mul(b as i64)),
        }
    }

    /// The shape of sequence-first tokens `[T, N, F]` or rows `[T·N, F]` (for `Shape`),
    /// or `None` when input 0 is neither.
    pub(super) fn mha_shape(&self, inputs: &[Option<Value>]) -> Option<Vec<Int>> {
        let n = |v: usize| Int::N(v as i64);
        match inputs.first()?.as_ref()? {
            Value::Mha(Mha::SeqFirst(x)) => {
                let (t, f) = self.token_shape(x)?;
                Some(vec![n(t), Int::BATCH, n(f)])
            }
            Value::Mha(Mha::SeqRows(x)) => {
                let (t, f) = self.token_shape(x)?;
                Some(vec![Int::batch_times(t as i64), n(f)])
            }
            _ => None,
        }
    }

    /// The tokens `[T, F]` of IR node `x`.
    fn token_shape(&self, x: &str) -> Option<(usize, usize)> {
        match self.shapes.get(x)?.as_slice() {
            [t, f] => Some((*t, *f)),
            _ => None,
        }
    }

    /// Who reads IR node `layer` besides node `n` and `Shape`s (which read only its
    /// dimensions), under any of its ONNX values: the nodes whose outputs are `layer` again
    /// (`Identity`, `Dropout`, its bias `Add`, a `Transpose` to or from sequence-first) are
    /// not readers, but their readers are. `None` when nothing else reads it; else the
    /// reader, quoted (`a graph output`, an IR node).
    pub(super) fn other_reader(&self, n: &NodeRef, layer: &str) -> Option<String> {
        self.other_reader_but(n, layer, &["Shape"])
    }

    /// [`Importer::other_reader`] with the ONNX nodes of op types `allowed` (besides `n`)
    /// not counted as readers (the three `Slice`s of a chunk).
    pub(super) fn other_reader_but(
        &self,
        n: &NodeRef,
        layer: &str,
        allowed: &[&str],
    ) -> Option<String> {
        let aliases: HashSet<&str> = (self.values.iter())
            .filter(|(_, v)| {
                matches!(v, Value::Act(a) | Value::ChannelsLast(a) | Value::Mha(Mha::SeqFirst(a))
                    if a == layer)
            })
            .map(|(k, _)| k.as_str())
            .collect();
        let onnx = self.graph.node.iter().find(|m| {
            !std::ptr::eq(*m, n.node)
                && !allowed.contains(&m.op_type.as_str())
                && m.input.iter().any(|i| aliases.contains(i.as_str()))
                && !(m.output.first()).is_some_and(|o| aliases.contains(o.as_str()))
        });
        if let Some(m) = onnx {
            let name = if m.name.is_empty() {
                &m.op_type
            } else {
                &m.name
            };
            return Some(format!("'{name}'"));
        }
        if let Some(m) = self
            .nodes
            .iter()
            .find(|m| m.inputs.iter().any(|i| i == layer))
        {
            return Some(format!("the IR node '{}'", m.name));
        }
        (self.graph.output.iter())
            .find(|o| aliases.contains(o.name.as_str()))
            .map(|o| format!("the graph output '{}'", o.name))
    }

    /// `Transpose` of sequence-first steps and of tokens to sequence-first; `None` when
    /// the input is none of them.
    pub(super) fn mha_transpose(
        &self,
        n: &NodeRef,
        input: &Value,
        perm: &[i64],
    ) -> Option<Result<Value, OnnxError>> {
        Some(Ok(match (input, perm) {
            (Value::Act(x), [1, 0, 2]) if self.token_shape(x).is_some() => {
                Value::Mha(Mha::SeqFirst(x.clone()))
            }
            (Value::Mha(Mha::SeqFirst(x)), [1, 0, 2]) => Value::Act(x.clone()),
            (Value::Mha(Mha::Packed { x, stage: 1 }), [3, 1, 2, 0, 4]) => Value::Mha(Mha::Packed {
                x: x.clone(),
                stage: 2,
            }),
            (Value::Mha(Mha::SeqHeads { x, d }), [1, 0, 2]) => Value::MergedHeads {
                x: x.clone(),
                d: *d,
                keys: false,
            },
            (
                Value::Context {
                    q,
                    k,
                    v,
                    d,
                    transposed: false,
                },
                [2, 0, 1, 3],
            ) => Value::Mha(Mha::SeqContext {
                q: q.clone(),
                k: k.clone(),
                v: v.clone(),
                d: *d,
            }),
            (Value::Mha(_), _) => return Some(Err(self.mha_err(n, input))),
            _ => return None,
        }))
    }

    /// What the step `v` is and which steps may read it, for errors.
    fn mha_what(&self, v: &Value) -> String {
        match v {
            Value::Mha(Mha::SeqFirst(x)) => format!(
                "the sequence-first tokens [T, N, F] of '{x}' (torch.nn.MultiheadAttention's layout), which only a MatMul by a constant (the fused in_proj), an Add of its bias, a Reshape [T, N, 3, E] or a Transpose [1, 0, 2] back may read"
            ),
            Value::Mha(Mha::Packed { x, stage }) => format!(
                "the fused q, k, v of '{x}' at step {stage} of Reshape [T, N, 3, E] → Unsqueeze 0 → Transpose [3, 1, 2, 0, 4] → Squeeze 3 → Gather 0, 1, 2"
            ),
            Value::Mha(Mha::SeqHeads { x, d }) => format!(
                "the heads [T, N·H, {d}] of '{x}', which only a Transpose [1, 0, 2] may read"
            ),
            Value::Mha(Mha::SeqContext { v, .. }) => format!(
                "the attention context of '{v}' transposed to [T, N, H, d], which only a Reshape to rows [T·N, E] may read"
            ),
            Value::Mha(Mha::SeqRows(x)) => format!(
                "the sequence-first rows [T·N, F] of '{x}', which only a Gemm (the out_proj) or a Reshape [T, N, F] may read"
            ),
            _ => "a tensor".to_owned(),
        }
    }

    /// An error for node `n` reading the step `v` in a way the pattern does not.
    pub(super) fn mha_err(&self, n: &NodeRef, v: &Value) -> OnnxError {
        n.err(format!(
            "multi-head attention: unexpected use of {} {MHA_AS_READ}",
            self.mha_what(v)
        ))
    }

    /// `Reshape` of sequence-first steps; `None` when the input is none of them.
    pub(super) fn mha_reshape(
        &mut self,
        n: &NodeRef,
        input: &Value,
        t: &[Int],
        allowzero: bool,
    ) -> Option<Result<Value, OnnxError>> {
        let Value::Mha(step) = input else {
            return None;
        };
        // `want`: the expected targets, each in brackets.
        let bad = |this: &Self, want: String| {
            Err(n.err(format!(
                "multi-head attention: {}: expected a Reshape to {want}, found [{}] {MHA_AS_READ}",
                this.mha_what(input),
                describe(t)
            )))
        };
        Some(match step {
            Mha::SeqFirst(x) => {
                let (tokens, f) = self.token_shape(x)?;
                match t {
                    [Int::N(tt), b, Int::N(3), Int::N(e)]
                        if *tt == tokens as i64
                            && self.batch_dim(*b, allowzero, true)
                            && *e > 0
                            && 3 * *e as usize == f =>
                    {
                        // The fused projection is replaced by q, k and v: nothing else may
                        // read it (but a `Shape`, which reads only its dimensions).
                        if let Some(who) = self.other_reader(n, x) {
                            let fused = &n.node.input[0];
                            return Some(Err(n.err(format!(
                                "multi-head attention: the fused q, k, v '{fused}' (of '{x}') is also read by {who}; only this Reshape (and Shape) may read it, as the fused in_proj is split into q, k and v {MHA_AS_READ}"
                            ))));
                        }
                        Ok(Value::Mha(Mha::Packed {
                            x: x.clone(),
                            stage: 0,
                        }))
                    }
                    [Int::N(tt), nh, Int::N(d)]
                        if *tt == tokens as i64
                            && *d > 0
                            && f % *d as usize == 0
                            && self.batch_times(*nh, (f / *d as usize) as i64) =>
                    {
                        Ok(Value::Mha(Mha::SeqHeads {
                            x: x.clone(),
                            d: *d as usize,
                        }))
                    }
                    _ => {
                        let heads = format!("[{tokens}, N·H, d] (the heads, {f} = H·d)");
                        let want = if f % 3 == 0 {
                            format!("[{tokens}, N, 3, {}] (the fused q, k, v) or {heads}", f / 3)
                        } else {
                            heads
                        };
                        bad(self, want)
                    }
                }
            }
            Mha::SeqContext { q, k, v, d } => {
                let (tokens, e) = self.token_shape(q)?;
                let rows = match t {
                    [r, Int::N(f)] => *f == e as i64 && self.batch_times(*r, tokens as i64),
                    _ => false,
                };
                if !rows {
                    return Some(bad(self, format!("[T·N, {e}]")));
                }
                let base = q
                    .strip_suffix(".q_proj")
                    .map_or_else(|| self.hint(n, None), |m| format!("{m}.attend"));
                let ins = vec![q.clone(), k.clone(), v.clone()];
                self.emit(n, base, Attention::new(*d).into(), ins, vec![])
                    .map(|a| match a {
                        Value::Act(a) => Value::Mha(Mha::SeqRows(a)),
                        other => other,
                    })
            }
            Mha::SeqRows(x) => {
                let (tokens, f) = self.token_shape(x)?;
                match t {
                    // The rows' axis 1 is F, not the batch: a copied `0` is refused.
                    [Int::N(tt), b, Int::N(ff)]
                        if *tt == tokens as i64
                            && self.batch_dim(*b, allowzero, false)
                            && *ff == f as i64 =>
                    {
                        Ok(Value::Mha(Mha::SeqFirst(x.clone())))
                    }
                    _ => bad(self, format!("[{tokens}, N, {f}]")),
                }
            }
            _ => Err(self.mha_err(n, input)),
        })
    }

    /// `Unsqueeze` 0 and `Squeeze` 3 of the fused q, k, v on their way to `[3, T, N, E]`.
    pub(super) fn mha_squeeze(
        &self,
        n: &NodeRef,
        inputs: &[Option<Value>],
        unsqueeze: bool,
    ) -> Option<Result<Value, OnnxError>> {
        let v @ Value::Mha(step) = inputs.first()?.as_ref()? else {
            return None;
        };
        // Both act at rank 5 ([1, T, N, 3, E] and [3, T, N, 1, E]): negative axes count from
        // there.
        let axes = squeeze_axes(n, inputs, 5);
        Some(match (step, axes.as_deref(), unsqueeze) {
            (Mha::Packed { x, stage: 0 }, Some([0]), true) => Ok(Value::Mha(Mha::Packed {
                x: x.clone(),
                stage: 1,
            })),
            (Mha::Packed { x, stage: 2 }, Some([3]), false) => Ok(Value::Mha(Mha::Packed {
                x: x.clone(),
                stage: 3,
            })),
            _ => Err(self.mha_err(n, v)),
        })
    }

    /// `Gather` on axis 0 of the fused q, k, v `[3, T, N, E]`: q (0), k (1) or v (2), a
    /// `linear` layer of the fused projection's rows.
    pub(super) fn mha_gather(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<Value, OnnxError>> {
        let v @ Value::Mha(step) = inputs.first()?.as_ref()? else {
            return None;
        };
        let Mha::Packed { x, stage: 3 } = step else {
            return Some(Err(self.mha_err(n, v)));
        };
        // The packed q, k, v are [3, T, N, E]: rank 4.
        let (Some(i @ 0..=2), Some(0)) = gather_one(n, inputs, 4) else {
            return Some(Err(n.err(format!(
                "multi-head attention: {}: expected a Gather of index 0, 1 or 2 (q, k, v) on axis 0 {MHA_AS_READ}",
                self.mha_what(v)
            ))));
        };
        let module = self
            .mha_modules
            .get(x.as_str())
            .cloned()
            .unwrap_or_else(|| x.clone());
        let x = x.clone();
        Some(
            self.split_fused(n, &x, i as usize, &module, MHA_AS_READ)
                .map(|v| match v {
                    Value::Act(y) => Value::Mha(Mha::SeqFirst(y)),
                    other => other,
                }),
        )
    }

    /// Part `i` (q 0, k 1, v 2) of the fused projection `fused`: a `linear` layer of its
    /// rows `i·E .. (i+1)·E`, reading the fused projection's input, named
    /// `<module>.q_proj` (`k_proj`, `v_proj`); `as_read` says how the pattern is read, for
    /// errors. The fused layer itself is left without readers (dropped after import).
    pub(super) fn split_fused(
        &mut self,
        n: &NodeRef,
        fused: &str,
        i: usize,
        module: &str,
        as_read: &str,
    ) -> Result<Value, OnnxError> {
        if !self.mha_split.insert((fused.to_owned(), i)) {
            return Err(n.err(format!(
                "multi-head attention: the {} of the fused q, k, v '{fused}' is taken a second time (each of q, k and v must be taken once) {as_read}",
                ["q", "k", "v"][i]
            )));
        }
        let node = self.nodes.iter().find(|m| m.name == fused);
        let Some((fair_ir::Op::Linear(l), input)) =
            node.map(|m| (m.op.clone(), m.inputs[0].clone()))
        else {
            return Err(n.err(format!(
                "the fused q, k, v '{fused}' must come from a MatMul by a constant (the fused projection's weight transposed), found another node {as_read}"
            )));
        };
        let e = l.out_features / 3;
        if (0..3)
            .filter(|&j| self.mha_split.contains(&(fused.to_owned(), j)))
            .count()
            == 1
        {
            // The parts hold the fused layer's values, which is dropped: its parameters are
            // paid for once, by the parts.
            let bytes = l.out_features * (l.in_features + usize::from(l.bias)) * fold::F32_BYTES;
            self.budget.unweight(bytes);
        }
        let rows = |name: &str, width: usize| -> Option<Rc<Const>> {
            let t = self.tensors.get(name)?;
            let TensorData::F32(v) = &t.data else {
                return None;
            };
            let part = v[i * e * width..(i + 1) * e * width].to_vec();
            let dims = if width == 1 { vec![e] } else { vec![e, width] };
            Some(Rc::new(Const::f32(dims, part)))
        };
        let w = rows(&format!("{fused}.weight"), l.in_features)
            .ok_or_else(|| n.err(format!("no weight for '{fused}'")))?;
        let mut params = vec![(ParamKind::Weight, w)];
        if l.bias {
            let b = rows(&format!("{fused}.bias"), 1)
                .ok_or_else(|| n.err(format!("no bias for '{fused}'")))?;
            params.push((ParamKind::Bias, b));
        }
        let hint = format!("{module}.{}_proj", ["q", "k", "v"][i]);
        let op = Linear {
            in_features: l.in_features,
            out_features: e,
            bias: l.bias,
        };
        self.emit(n, hint, op.into(), vec![input], params)
    }

    /// `Concat` on the token axis of constants of k tokens `[1, k, F]` and tokens
    /// `[N, T, F]`, in that order: one `class_token` node per token, the last one first (a
    /// class token; timm's distilled DeiT's class and distillation tokens; timm's register
    /// tokens); `None` when the inputs are not such a list.
    pub(super) fn class_token(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<Value, OnnxError>> {
        // One sample's value of a constant expanded over the batch must be a class token.
        let folded = (inputs.iter()).any(|v| matches!(v, Some(Value::PerSample(_))));
        let refuse = || {
            folded.then(|| {
                Err(n.err(
                    "a constant expanded over the dynamic batch is read only as a class token: a Concat on axis 1 of it (or of several constant tokens: class, distillation, register tokens) and tokens [N, T, F], in that order",
                ))
            })
        };
        let Some((Some(Value::Act(x)), consts)) = inputs.split_last() else {
            return refuse();
        };
        let consts: Option<Vec<Rc<Const>>> = (consts.iter())
            .map(|v| match v {
                Some(Value::Const(c) | Value::PerSample(c)) => Some(c.clone()),
                _ => None,
            })
            .collect();
        let Some(consts) = consts.filter(|c| !c.is_empty()) else {
            return refuse();
        };
        let on_tokens = (|| {
            let (_, f) = self.token_shape(x)?;
            let axis = n.int("axis").ok().flatten()?;
            (fold::axis(axis, 3).ok()? == 1).then_some(f)
        })();
        let Some(f) = on_tokens else {
            return refuse();
        };
        // (input, token of that input, its value), in the order they are put first.
        let mut tokens = Vec::new();
        for (i, c) in consts.iter().enumerate() {
            let Data::F32(v) = &*c.data else { return None };
            // k tokens [1, k, F] (with a dynamic batch or batch 1, or one sample's value of
            // an `expand(N, -1, -1)`), or the file's fixed batch of copies of them [N, k, F]
            // (that `expand` folded for the fixed batch).
            let (copies, k) = match c.dims[..] {
                [1, k, ff]
                    if k > 0 && ff == f && (folded || matches!(self.batch, None | Some(1))) =>
                {
                    (1, k)
                }
                [b, k, ff] if k > 0 && ff == f && self.batch == Some(b) => (b, k),
                _ => (0, 0),
            };
            if copies == 0 {
                let want = match self.batch {
                    Some(b) if b > 1 => {
                        format!("[1, k, {f}] expanded to the batch, [{b}, k, {f}]")
                    }
                    _ => format!("[1, k, {f}]"),
                };
                return Some(Err(n.err(format!(
                    "a constant put before tokens [N, T, {f}] must be k ≥ 1 tokens {want} (a class token, register tokens); found shape {:?}",
                    c.dims
                ))));
            }
            let one = &v[..k * f];
            if let Some(copy) = v.chunks(k * f).position(|copy| copy != one) {
                return Some(Err(n.err(format!(
                    "a constant put before tokens [N, T, {f}] must be the same tokens for every sample (a class token, register tokens); sample {copy} of {:?} differs from sample 0",
                    c.dims
                ))));
            }
            for (j, token) in one.chunks(f).enumerate() {
                tokens.push((i, j, k, token.to_vec()));
            }
        }
        // The exporters name the node after the concatenation (`/Concat`, `cat`).
        let hint = Some(self.hint(n, None))
            .filter(|h| !exporter_concat_name(h))
            .unwrap_or_else(|| "class_token".to_owned());
        let mut y = x.clone();
        for (i, j, k, one) in tokens.into_iter().rev() {
            let w = Rc::new(Const::f32(vec![f], one));
            let op = ClassToken { features: f };
            // The first input's one token is the class token; the others are named after
            // their parameter (DeiT's `dist_token`, a ViT's `reg_token`, numbered when it
            // holds several tokens), else DeiT's distillation token (a second single token)
            // or `prefix_token`.
            let param = self.token_param_name(&n.node.input[i]);
            let name = if i == 0 && k == 1 {
                hint.clone()
            } else {
                let base = param.unwrap_or_else(|| {
                    if i == 1 && k == 1 {
                        "dist_token".to_owned()
                    } else {
                        format!("prefix_token_{i}")
                    }
                });
                if k == 1 { base } else { format!("{base}_{j}") }
            };
            match self.emit(n, name, op.into(), vec![y], vec![(ParamKind::Weight, w)]) {
                Ok(Value::Act(z)) => y = z,
                other => return Some(other),
            }
        }
        Some(Ok(Value::Act(y)))
    }

    /// The name of the parameter behind the constant token `value`: the initializer it is
    /// (or that an `Expand`, `Identity`, `Cast` or `Unsqueeze` made it from), when it is a
    /// valid IR node name and not a name the exporter made up (`expand_1`, `onnx::…`).
    fn token_param_name(&self, value: &str) -> Option<String> {
        let mut name = value;
        // A few pass-throughs at most: the exporters write one `Expand`.
        for _ in 0..4 {
            if self.inits.contains_key(name) {
                break;
            }
            let m = (self.graph.node.iter()).find(|m| m.output.iter().any(|o| o == name))?;
            if !["Expand", "Identity", "Cast", "Unsqueeze"].contains(&m.op_type.as_str()) {
                return None;
            }
            name = m.input.first()?;
        }
        if !self.inits.contains_key(name) || exporter_op_name(name) {
            return None;
        }
        crate::names::is_clean(name).then(|| name.to_owned())
    }

    /// `Add` of tokens `[N, T, F]` and a constant `[T, F]` or `[1, T, F]` with `T > 1`: a
    /// position embedding; `None` otherwise.
    pub(super) fn position_embedding(
        &mut self,
        n: &NodeRef,
        x: &str,
        value: &str,
        c: &Const,
    ) -> Option<Result<Value, OnnxError>> {
        let (t, f) = self.token_shape(x)?;
        let dims = c.dims.strip_prefix(&[1]).filter(|d| d.len() == 2);
        let dims = dims.unwrap_or(&c.dims);
        if t < 2 || dims != [t, f] {
            return None;
        }
        let Data::F32(v) = &*c.data else { return None };
        let w = Rc::new(Const::f32(vec![t, f], v.clone()));
        let hint = value
            .strip_suffix(".weight")
            .filter(|m| crate::names::is_clean(m))
            .or_else(|| Some(value).filter(|m| crate::names::is_clean(m)))
            .map_or_else(|| "pos_embedding".to_owned(), str::to_owned);
        let op = PositionEmbedding {
            tokens: t,
            features: f,
        };
        Some(self.emit(
            n,
            hint,
            op.into(),
            vec![x.to_owned()],
            vec![(ParamKind::Weight, w)],
        ))
    }

    /// `Gather` on axis 1 of tokens `[N, T, F]` by one index: `token_select` (a scalar
    /// index gives `[N, F]`; a one-element list keeps the token axis, `[N, 1, F]`, which a
    /// `Reshape` or `Flatten` to `[N, F]` completes); `None` when the input is not tokens.
    pub(super) fn token_select(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<Value, OnnxError>> {
        let Some(Some(Value::Act(x))) = inputs.first() else {
            return None;
        };
        let (t, _) = self.token_shape(x)?;
        let axis = fold::axis(n.int_or("axis", 0).ok()?, 3).ok()?;
        if axis != 1 {
            return None;
        }
        let Some(Some(Value::Const(c))) = inputs.get(1) else {
            return None;
        };
        let (Ok(idx), true) = (c.ints(), c.dims.len() <= 1 && c.len() == 1) else {
            return Some(Err(n.err(format!(
                "a Gather on the token axis must take one token (a class token), found indices of shape {:?}",
                c.dims
            ))));
        };
        let i = if idx[0] < 0 {
            idx[0] + t as i64
        } else {
            idx[0]
        };
        let Some(index) = usize::try_from(i).ok().filter(|&i| i < t) else {
            return Some(Err(n.err(format!(
                "the token index {} is out of range for {t} tokens",
                idx[0]
            ))));
        };
        if !c.dims.is_empty() {
            return Some(Ok(Value::Token {
                x: x.clone(),
                index,
            }));
        }
        Some(self.select_token(n, x.clone(), index))
    }

    /// Emits `token_select` of token `index` of `x` for node `n`.
    pub(super) fn select_token(
        &mut self,
        n: &NodeRef,
        x: String,
        index: usize,
    ) -> Result<Value, OnnxError> {
        let hint = self.hint(n, None);
        self.emit(n, hint, TokenSelect { index }.into(), vec![x], vec![])
    }

    /// Records that the fused projection `layer` got its bias from `value`: named after its
    /// module (`…self_attention.in_proj_bias` → `…self_attention`).
    pub(super) fn note_in_proj(&mut self, layer: &str, value: &str) {
        if let Some(m) = value.strip_suffix(".in_proj_bias")
            && crate::names::is_clean(m)
        {
            self.mha_modules.insert(layer.to_owned(), m.to_owned());
        }
    }
}

/// The axes of `Squeeze` (or `Unsqueeze`) `n` (its input 1, or its `axes` attribute before
/// opset 13), counted at rank `rank` (negative ones from the end); `None` when they are not
/// constant integers or out of range.
pub(super) fn squeeze_axes(
    n: &NodeRef,
    inputs: &[Option<Value>],
    rank: usize,
) -> Option<Vec<usize>> {
    let axes = match inputs.get(1).cloned().flatten() {
        Some(Value::Const(c)) => c.ints().ok(),
        _ => n.ints("axes").ok().flatten(),
    };
    axes?.iter().map(|&a| fold::axis(a, rank).ok()).collect()
}

/// The index and axis of `Gather` `n` of a rank-`rank` tensor by one scalar index: the
/// index when input 1 is a scalar integer constant, the axis (0 when not given) counted at
/// rank `rank` (negative ones from the end) when it is in range.
pub(super) fn gather_one(
    n: &NodeRef,
    inputs: &[Option<Value>],
    rank: usize,
) -> (Option<i64>, Option<usize>) {
    let index = match inputs.get(1).cloned().flatten() {
        Some(Value::Const(c)) if c.dims.is_empty() => c.ints().ok().map(|i| i[0]),
        _ => None,
    };
    let axis = (n.int_or("axis", 0).ok()).and_then(|a| fold::axis(a, rank).ok());
    (index, axis)
}

/// Whether `h` is a name the exporters give a concatenation (`cat`, `cat_1`, `concat`,
/// `Concat_3`, …), not a module's name.
fn exporter_concat_name(h: &str) -> bool {
    numbered_op(h, &["cat", "concat"])
}

/// Whether `h` is a name the exporters give the value of an op that makes a constant token
/// (`expand_1`, `unsqueeze`, TorchScript's `onnx::Expand_12`, dynamo's `val_3`), not a
/// parameter's name.
fn exporter_op_name(h: &str) -> bool {
    h.starts_with("onnx::")
        || crate::names::is_numbered(h, 'n')
        || h.strip_prefix("val_")
            .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        || numbered_op(h, &["expand", "identity", "cast", "unsqueeze", "constant"])
}

/// Whether `h` is one of `ops` (any case), alone or followed by `_` and digits.
fn numbered_op(h: &str, ops: &[&str]) -> bool {
    let h = h.to_ascii_lowercase();
    ops.iter().any(|p| {
        h.strip_prefix(p).is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix('_')
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::{exporter_concat_name, exporter_op_name};

    #[test]
    fn only_the_exporters_token_names_are_not_parameter_names() {
        for h in [
            "expand",
            "expand_1",
            "Expand_3",
            "onnx::Expand_12",
            "val_7",
            "n0_18",
        ] {
            assert!(exporter_op_name(h), "{h}");
        }
        for h in [
            "dist_token",
            "reg_token",
            "expanded",
            "val",
            "value_1",
            "cls_token",
        ] {
            assert!(!exporter_op_name(h), "{h}");
        }
    }

    #[test]
    fn only_the_exporters_concat_names_are_replaced() {
        for h in ["cat", "cat_1", "concat", "Concat", "concat_12"] {
            assert!(exporter_concat_name(h), "{h}");
        }
        for h in [
            "category_token",
            "cat_",
            "cat_x",
            "concatenated",
            "class_cat",
            "catalog_1",
        ] {
            assert!(!exporter_concat_name(h), "{h}");
        }
    }
}
