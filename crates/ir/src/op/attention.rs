//! `attention`: multi-head scaled dot-product attention over token tensors, with prunable
//! heads; optionally within windows of tokens with a learned relative position bias and
//! Swin Transformer's shifted-window mask ([`AttnWindows`]), and with scaled cosine
//! scores (Swin Transformer V2).

use serde::{Deserialize, Serialize};

use super::onnx::{NameBase, OnnxAttr, OnnxConst, OnnxContext, OnnxRef, OnnxSpec};
use super::roles::{AfterSurgery, Scoring};
use super::{
    Arity, Channels, Contract, Init, Op, Pair, ParamKind, ParamSpec, Role, ShapeInput, bounded,
    checked_numel, is_false, nonzero, tokens,
};

/// Attention within windows (Swin Transformer's `shifted_window_attention`): q, k and v are
/// the tokens of `window_partition` over the padded grid `grid`, `nW` windows of
/// `N = wh·ww` consecutive tokens, and each token attends only to the tokens of its window.
///
/// If `bias`, the parameter `<node>.relative_position_bias` (`[heads, N, N]`) is added to
/// every window's scores (torchvision's gathered relative position bias; for V2 its
/// `16·sigmoid(cpb_mlp(table))`). If `shift` is not `[0, 0]`, the shifted-window mask is
/// added too: −100 where two tokens of a window lie in different regions of the rolled grid,
/// the regions being rows `[0, pH−wh)`, `[pH−wh, pH−sh)`, `[pH−sh, pH)` by the same cut of
/// the columns ([`AttnWindows::mask`], computed from the geometry, never stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttnWindows {
    /// The padded grid `[pH, pW]` the windows cover (multiples of the window).
    pub grid: Pair,
    /// The window `[wh, ww]`.
    pub window: Pair,
    /// The cyclic shift `[sh, sw]` of the grid before the partition, each below the window.
    #[serde(default = "Pair::zero", skip_serializing_if = "Pair::is_zero")]
    pub shift: Pair,
    /// Whether a learned relative position bias `[heads, N, N]` is added.
    #[serde(default, skip_serializing_if = "is_false")]
    pub bias: bool,
}

impl AttnWindows {
    /// Tokens per window, `N = wh·ww`.
    pub fn tokens(&self) -> usize {
        self.window.0 * self.window.1
    }

    /// The number of windows, `nW = (pH/wh)·(pW/ww)`.
    pub fn count(&self) -> usize {
        (self.grid.0 / self.window.0.max(1)) * (self.grid.1 / self.window.1.max(1))
    }

    /// The shifted-window mask `[nW, N, N]` (row-major), or `None` without a shift: for
    /// window *w* and tokens *i*, *j* of it, −100 where their region labels differ, else 0.
    pub fn mask(&self) -> Option<Vec<f32>> {
        // Also `None` for a geometry the op's check refuses (an empty window, a grid that is
        // no multiple of it, a shift not below it), so unchecked values never panic here.
        let (Pair(ph, pw), Pair(wh, ww), Pair(sh, sw)) = (self.grid, self.window, self.shift);
        let fits = |g: usize, w: usize, s: usize| w > 0 && g >= w && g.is_multiple_of(w) && s < w;
        if self.shift.is_zero() || !fits(ph, wh, sh) || !fits(pw, ww, sw) {
            return None;
        }
        // The region of a row (column) of the rolled, padded grid: 0, 1 or 2.
        let region = |x: usize, n: usize, w: usize, s: usize| {
            if x < n - w {
                0
            } else if x < n - s {
                1
            } else {
                2
            }
        };
        let n = self.tokens();
        let mut out = Vec::with_capacity(self.count() * n * n);
        for a in 0..ph / wh {
            for b in 0..pw / ww {
                let labels: Vec<usize> = (0..n)
                    .map(|t| {
                        let (r, c) = (a * wh + t / ww, b * ww + t % ww);
                        3 * region(r, ph, wh, sh) + region(c, pw, ww, sw)
                    })
                    .collect();
                for &li in &labels {
                    for &lj in &labels {
                        out.push(if li == lj { 0.0 } else { -100.0 });
                    }
                }
            }
        }
        Some(out)
    }

    fn check(&self) -> Result<(), String> {
        for (what, v) in [
            ("windows.grid", self.grid.0),
            ("windows.grid", self.grid.1),
            ("windows.window", self.window.0),
            ("windows.window", self.window.1),
        ] {
            nonzero(what, v)?;
            bounded(what, v)?;
        }
        if !self.grid.0.is_multiple_of(self.window.0) || !self.grid.1.is_multiple_of(self.window.1)
        {
            return Err(format!(
                "the windows' grid {} must be the padded grid, a multiple of the window {}",
                self.grid, self.window
            ));
        }
        if self.shift.0 >= self.window.0 || self.shift.1 >= self.window.1 {
            return Err(format!(
                "the windows' shift {} must be below the window {} in both directions",
                self.shift, self.window
            ));
        }
        checked_numel("the windows' grid", &[self.grid.0, self.grid.1])?;
        checked_numel("a window's scores", &[self.tokens(), self.tokens()]).map(|_| ())
    }
}

/// Multi-head scaled dot-product attention (the core of `torch.nn.MultiheadAttention`,
/// without its projections): inputs `q`, `k`, `v`, token tensors `[T, E]` of one shape with
/// `E = heads · head_dim`; output `[T, E]`, head *h* of which (channels `h·d … (h+1)·d`,
/// `d = head_dim`) is `softmax(q_h k_hᵀ · scale) v_h` (`scale` = 1/√d unless set), the heads concatenated in order
/// (`F.scaled_dot_product_attention` on `[N, heads, T, d]`, transposed back). The head count
/// is `E / head_dim`, so it follows the width after pruning.
///
/// With `windows` ([`AttnWindows`]), each token attends only within its window of `N`
/// consecutive tokens, with the window's relative position bias and shift mask added to the
/// scores. With `cosine` (Swin V2), the scores are
/// `normalize(q_h)·normalize(k_h)ᵀ · exp(min(logit_scale_h, ln 100))` (`F.normalize`, eps
/// 1e-12, over the head's channels), with the parameter `<node>.logit_scale` (`[heads]`;
/// torchvision's `[heads, 1, 1]`), instead of `q_h k_hᵀ / √d`. Order: the scores, plus
/// the bias, plus the mask, softmax, times v. The parameters' axis 0 follows the heads
/// ([`ParamSpec::head_axis`]), and `heads` records their count (set whenever there are
/// parameters).
///
/// Channel behaviour: [`Channels::Heads`]: the three inputs are coupled channel by channel
/// in whole heads (the q, k and v projections that feed it form one prunable group whose
/// units are heads), and its output carries the same head units (the output projection that
/// reads it loses the removed heads' input columns). Its MACs are the two batched matrix
/// products, `2 · T² · E` per sample (`2 · nW · N² · E` within windows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attention {
    /// Channels of one head (`d`); kept when heads are removed.
    pub head_dim: usize,
    /// The number of heads, `E / head_dim`: required when the op has parameters (a
    /// relative position bias or cosine scores), which have one slice per head; follows the
    /// width after pruning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<usize>,
    /// Attention within windows (Swin Transformer), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<AttnWindows>,
    /// Scaled cosine scores with a learned per-head logit scale (Swin Transformer V2).
    #[serde(default, skip_serializing_if = "is_false")]
    pub cosine: bool,
    /// The scores' scale when it is not `1/√head_dim` (MaxViT scales by `1/√E`, E the
    /// width); unused with `cosine`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
}

impl Attention {
    /// Attention with heads of `head_dim` channels.
    pub fn new(head_dim: usize) -> Self {
        Attention {
            head_dim,
            heads: None,
            windows: None,
            cosine: false,
            scale: None,
        }
    }

    /// Whether it has a relative position bias.
    pub fn has_bias(&self) -> bool {
        self.windows.as_ref().is_some_and(|w| w.bias)
    }

    /// Whether it is plain scaled dot-product attention over all tokens (no windows, no
    /// cosine scores).
    pub fn is_plain(&self) -> bool {
        self.windows.is_none() && !self.cosine
    }

    /// Tokens per attention block for `t` tokens: a window's `N`, or all `t`.
    pub fn block(&self, t: usize) -> usize {
        self.windows.as_ref().map_or(t, AttnWindows::tokens)
    }

    /// The scores' scale: `1/√head_dim` unless `scale` says otherwise.
    pub fn scale(&self) -> f64 {
        self.scale
            .unwrap_or_else(|| 1.0 / (self.head_dim as f64).sqrt())
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
        let n = self.block(t) as u64;
        let (t, e) = (t as u64, e as u64);
        let heads = e / (self.head_dim.max(1) as u64);
        (3 * t)
            .saturating_mul(e)
            .saturating_add((2 * heads).saturating_mul(t).saturating_mul(n))
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
        if !self.is_plain() {
            return self.onnx_blocks(ctx, t, e);
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
        bounded("head_dim", self.head_dim)?;
        if let Some(s) = self.scale
            && !(s.is_finite() && s > 0.0)
        {
            return Err(format!(
                "scale = {s}: the scores' scale must be finite and positive"
            ));
        }
        if self.cosine && self.scale.is_some() {
            return Err(
                "scale is for dot-product scores; cosine scores are scaled by the logit scale"
                    .to_owned(),
            );
        }
        if let Some(w) = &self.windows {
            w.check()?;
        }
        match self.heads {
            Some(h) => {
                nonzero("heads", h)?;
                bounded("heads", h)?;
            }
            None if self.has_bias() || self.cosine => {
                return Err(
                    "heads must be given for an attention with a relative position bias or cosine scores (its parameters have one slice per head)"
                        .into(),
                );
            }
            None => {}
        }
        Ok(())
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
        if let Some(h) = self.heads
            && h * self.head_dim != e
        {
            return Err(format!(
                "heads = {h} of head_dim = {} make {} channels, but q, k and v (from '{}') have {e}",
                self.head_dim,
                h * self.head_dim,
                inputs[0].0
            ));
        }
        if let Some(w) = &self.windows
            && w.grid.0 * w.grid.1 != t
        {
            return Err(format!(
                "the windows cover the padded grid {} = {} tokens, but q, k and v (from '{}') have {t}: attention within windows reads window_partition's tokens",
                w.grid,
                w.grid.0 * w.grid.1,
                inputs[0].0
            ));
        }
        // The attention weights [heads, T, N] must be representable too.
        checked_numel(
            "the attention weights",
            &[e / self.head_dim, t, self.block(t)],
        )?;
        Ok(vec![t, e])
    }
    fn params(&self, node: &str) -> Vec<ParamSpec> {
        let heads = self.heads.unwrap_or(0);
        let mut out = Vec::new();
        if let Some(w) = self.windows.as_ref().filter(|w| w.bias) {
            let n = w.tokens();
            out.push(
                ParamSpec::named(
                    node,
                    "relative_position_bias",
                    ParamKind::Weight,
                    vec![heads, n, n],
                    Init::Zeros,
                )
                .head_axis(0),
            );
        }
        if self.cosine {
            out.push(
                ParamSpec::named(
                    node,
                    "logit_scale",
                    ParamKind::Weight,
                    vec![heads],
                    Init::Constant { value: 10f64.ln() },
                )
                .head_axis(0),
            );
        }
        out
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
            .checked_mul(self.block(t) as u64)?
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
        Ok(Attention {
            heads: self.heads.map(|_| e / self.head_dim),
            ..self.clone()
        }
        .into())
    }
    fn torch_module(&self) -> Option<String> {
        if self.is_plain() {
            return None;
        }
        let py = |p: Pair| format!("({}, {})", p.0, p.1);
        let w = self.windows.as_ref();
        Some(format!(
            "BlockAttention({}, {}, {}, {}, {}, {}, {}, {})",
            self.head_dim,
            self.heads.unwrap_or(0),
            w.map_or("None".into(), |w| py(w.grid)),
            w.map_or("None".into(), |w| py(w.window)),
            w.map_or("(0, 0)".into(), |w| py(w.shift)),
            super::py_bool(self.has_bias()),
            super::py_bool(self.cosine),
            self.scale
                .map_or_else(|| "None".to_owned(), |s| format!("{s:?}")),
        ))
    }
    fn torch_prelude(&self) -> Option<&'static str> {
        (!self.is_plain()).then_some(BLOCK_ATTENTION_PY)
    }
    fn torch_forward(&self, inputs: &[String], module: &str) -> String {
        if !self.is_plain() {
            return format!("{module}({}, {}, {})", inputs[0], inputs[1], inputs[2]);
        }
        let heads =
            |x: &String| format!("{x}.unflatten(-1, (-1, {})).transpose(1, 2)", self.head_dim);
        let scale = self
            .scale
            .map_or_else(String::new, |s| format!(", scale={s:?}"));
        format!(
            "torch.nn.functional.scaled_dot_product_attention({}, {}, {}{scale}).transpose(1, 2).flatten(2)",
            heads(&inputs[0]),
            heads(&inputs[1]),
            heads(&inputs[2])
        )
    }
}

/// Adds the node `op_type` writing a fresh temp named `suffix`; returns the reference to it.
fn step(
    spec: &mut OnnxSpec,
    suffix: &str,
    op_type: &'static str,
    inputs: Vec<OnnxRef>,
    attributes: Vec<(&'static str, OnnxAttr)>,
) -> OnnxRef {
    let t = spec.temp(NameBase::Value, suffix);
    spec.node(suffix, op_type, inputs, Some(t), attributes);
    OnnxRef::Decl(t)
}

impl Attention {
    /// ONNX of attention within blocks of `N` tokens (windows, or all `T` tokens) and/or
    /// with cosine scores: q, k, v `[B, T, E]` → `[B, nW, heads, N, d]`; scores (cosine:
    /// `x / max(‖x‖₂, 1e-12)` of q and k, times `exp(min(logit_scale, ln 100))` as
    /// `[heads, 1, 1]`; else times `1/√d`), plus the relative position bias
    /// `[heads, N, N]`, plus the mask `[nW, 1, N, N]`; softmax; times v; back to `[B, T, E]`.
    fn onnx_blocks(&self, ctx: &OnnxContext, t: usize, e: usize) -> Result<OnnxSpec, String> {
        let d = self.head_dim;
        let n = self.block(t);
        if n == 0 || !t.is_multiple_of(n) {
            return Err(format!("{t} tokens are not whole windows of {n}"));
        }
        let (nw, heads) = (t / n, e / d);
        let mut spec = OnnxSpec::default();
        let params = (self.has_bias() || self.cosine).then(|| spec.params());
        let split = spec.constant(
            ".heads",
            OnnxConst::I64(vec![0, nw as i64, n as i64, heads as i64, d as i64]),
        );
        let back = spec.constant(".shape", OnnxConst::I64(vec![0, t as i64, e as i64]));
        let perm = |p: &[i64]| vec![("perm", OnnxAttr::Ints(p.to_vec()))];
        let to_heads = |spec: &mut OnnxSpec, i: usize, what: &str| {
            let r = step(
                spec,
                &format!(".{what}_heads"),
                "Reshape",
                vec![OnnxRef::Input(i), split],
                vec![],
            );
            step(
                spec,
                &format!(".{what}_t"),
                "Transpose",
                vec![r],
                perm(&[0, 1, 3, 2, 4]),
            )
        };
        let mut q = to_heads(&mut spec, 0, "q");
        let mut k = to_heads(&mut spec, 1, "k");
        let v = to_heads(&mut spec, 2, "v");
        if self.cosine {
            let eps = spec.scalar(".eps", 1e-12);
            let normalize = |spec: &mut OnnxSpec, x: OnnxRef, what: &str| {
                let keep = ("keepdims", OnnxAttr::Int(1));
                let norm = if ctx.opset >= 18 {
                    let axes = spec.constant(&format!(".{what}_axes"), OnnxConst::I64(vec![-1]));
                    step(
                        spec,
                        &format!(".{what}_norm"),
                        "ReduceL2",
                        vec![x, axes],
                        vec![keep],
                    )
                } else {
                    step(
                        spec,
                        &format!(".{what}_norm"),
                        "ReduceL2",
                        vec![x],
                        vec![("axes", OnnxAttr::Ints(vec![-1])), keep],
                    )
                };
                let clamped = step(
                    spec,
                    &format!(".{what}_clamped"),
                    "Max",
                    vec![norm, eps],
                    vec![],
                );
                step(
                    spec,
                    &format!(".{what}_unit"),
                    "Div",
                    vec![x, clamped],
                    vec![],
                )
            };
            q = normalize(&mut spec, q, "q");
            k = normalize(&mut spec, k, "k");
        }
        let kt = step(
            &mut spec,
            ".k_tt",
            "Transpose",
            vec![k],
            perm(&[0, 1, 2, 4, 3]),
        );
        let scores = step(&mut spec, ".scores", "MatMul", vec![q, kt], vec![]);
        let mut x = if self.cosine {
            let OnnxRef::Decl(p) = params.expect("declared with cosine") else {
                unreachable!("params() returns a declaration")
            };
            let logit_scale = OnnxRef::Param(p, usize::from(self.has_bias()));
            let max = spec.scalar(".max_logit", 100f32.ln());
            let clamped = step(
                &mut spec,
                ".logit_clamped",
                "Min",
                vec![logit_scale, max],
                vec![],
            );
            let factor = step(&mut spec, ".logit_exp", "Exp", vec![clamped], vec![]);
            let per_head = spec.constant(".per_head", OnnxConst::I64(vec![-1, 1, 1]));
            let factor = step(
                &mut spec,
                ".logit_per_head",
                "Reshape",
                vec![factor, per_head],
                vec![],
            );
            step(&mut spec, ".scaled", "Mul", vec![scores, factor], vec![])
        } else {
            let scale = spec.scalar(".scale", self.scale() as f32);
            step(&mut spec, ".scaled", "Mul", vec![scores, scale], vec![])
        };
        if self.has_bias() {
            let OnnxRef::Decl(p) = params.expect("declared with a bias") else {
                unreachable!("params() returns a declaration")
            };
            x = step(
                &mut spec,
                ".biased",
                "Add",
                vec![x, OnnxRef::Param(p, 0)],
                vec![],
            );
        }
        if let Some(mask) = self.windows.as_ref().and_then(AttnWindows::mask) {
            let mask = spec.constant(
                ".mask",
                OnnxConst::F32 {
                    dims: vec![nw, 1, n, n],
                    values: mask,
                },
            );
            x = step(&mut spec, ".masked", "Add", vec![x, mask], vec![]);
        }
        let weights = step(
            &mut spec,
            ".softmax",
            "Softmax",
            vec![x],
            vec![("axis", OnnxAttr::Int(-1))],
        );
        let context = step(&mut spec, ".context", "MatMul", vec![weights, v], vec![]);
        let context_t = step(
            &mut spec,
            ".context_t",
            "Transpose",
            vec![context],
            perm(&[0, 1, 3, 2, 4]),
        );
        spec.node("", "Reshape", vec![context_t, back], None, vec![]);
        Ok(spec)
    }
}

/// Python for an attention with windows or cosine scores in an exported `model.py`
/// (written independently of the runtime's kernel: the mask is built as torchvision builds
/// it).
const BLOCK_ATTENTION_PY: &str = "class BlockAttention(nn.Module):
    \"\"\"Multi-head attention of q, k, v [N, T, E] within windows of consecutive tokens
    (Swin Transformer), with an optional relative position bias [heads, n, n], the
    shifted-window mask, and optional scaled cosine scores (Swin Transformer V2).\"\"\"

    def __init__(self, head_dim, heads, grid, window, shift, bias, cosine, scale):
        super().__init__()
        self.head_dim, self.window, self.cosine = head_dim, window, cosine
        self.scale = head_dim ** -0.5 if scale is None else scale
        n = window[0] * window[1] if window is not None else None
        if bias:
            self.relative_position_bias = nn.Parameter(torch.zeros(heads, n, n))
        else:
            self.relative_position_bias = None
        if cosine:
            self.logit_scale = nn.Parameter(torch.zeros(heads))
        mask = None
        if window is not None and shift[0] + shift[1] > 0:
            (ph, pw), (wh, ww), (sh, sw) = grid, window, shift
            labels = torch.zeros(ph, pw)
            count = 0
            for h in ((0, -wh), (-wh, -sh), (-sh, None)):
                for w in ((0, -ww), (-ww, -sw), (-sw, None)):
                    labels[h[0]:h[1], w[0]:w[1]] = count
                    count += 1
            labels = labels.view(ph // wh, wh, pw // ww, ww).permute(0, 2, 1, 3).reshape(-1, n)
            mask = labels.unsqueeze(1) - labels.unsqueeze(2)
            mask = mask.masked_fill(mask != 0, -100.0).unsqueeze(1)
        self.register_buffer(\"mask\", mask, persistent=False)

    def forward(self, q, k, v):
        b, t, e = q.shape
        n = t if self.window is None else self.window[0] * self.window[1]

        def heads(x):
            return x.reshape(b, t // n, n, -1, self.head_dim).transpose(2, 3)

        q, k, v = heads(q), heads(k), heads(v)
        if self.cosine:
            nq = torch.nn.functional.normalize(q, dim=-1)
            nk = torch.nn.functional.normalize(k, dim=-1)
            scale = torch.clamp(self.logit_scale, max=4.605170185988092).exp()  # ln 100
            attn = (nq @ nk.transpose(-2, -1)) * scale[:, None, None]
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale
        if self.relative_position_bias is not None:
            attn = attn + self.relative_position_bias
        if self.mask is not None:
            attn = attn + self.mask
        attn = attn.softmax(-1)
        return (attn @ v).transpose(2, 3).reshape(b, t, e)
";

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4 × 4 padded grid, windows 2 × 2, shift [1, 1]: rows (and columns) 0–1 are region
    /// 0, row 2 region 1, row 3 region 2. Written out by hand per window.
    #[test]
    fn the_shift_mask_separates_the_regions_of_each_window() {
        let w = AttnWindows {
            grid: Pair(4, 4),
            window: Pair(2, 2),
            shift: Pair(1, 1),
            bias: false,
        };
        let mask = w.mask().unwrap();
        assert_eq!(mask.len(), 4 * 4 * 4);
        let x = -100.0;
        // Window (0, 0): rows 0–1, columns 0–1, one region.
        assert_eq!(mask[..16], [0.0; 16]);
        // Window (0, 1): columns 2 (region 1) and 3 (region 2); tokens 0, 2 are column 2.
        let expected = [
            0.0, x, 0.0, x, //
            x, 0.0, x, 0.0, //
            0.0, x, 0.0, x, //
            x, 0.0, x, 0.0,
        ];
        assert_eq!(mask[16..32], expected);
        // Window (1, 0): rows 2 (region 1) and 3 (region 2); tokens 0, 1 are row 2.
        let expected = [
            0.0, 0.0, x, x, //
            0.0, 0.0, x, x, //
            x, x, 0.0, 0.0, //
            x, x, 0.0, 0.0,
        ];
        assert_eq!(mask[32..48], expected);
        // Window (1, 1): four regions, each token alone.
        for i in 0..4 {
            for j in 0..4 {
                let want = if i == j { 0.0 } else { x };
                assert_eq!(mask[48 + 4 * i + j], want, "{i} {j}");
            }
        }
        let unshifted = AttnWindows {
            shift: Pair(0, 0),
            ..w
        };
        assert_eq!(unshifted.mask(), None);
    }

    #[test]
    fn parameters_need_the_head_count_and_windows_count_their_macs() {
        let mut a = Attention {
            windows: Some(AttnWindows {
                grid: Pair(4, 6),
                window: Pair(2, 3),
                shift: Pair(1, 1),
                bias: true,
            }),
            ..Attention::new(4)
        };
        assert!(a.check().unwrap_err().contains("heads"));
        a.heads = Some(2);
        a.cosine = true;
        a.check().unwrap();
        let p = a.params("blk.attn");
        assert_eq!(p[0].name, "blk.attn.relative_position_bias");
        assert_eq!(
            (p[0].shape.clone(), p[0].head_axis),
            (vec![2, 6, 6], Some(0))
        );
        assert_eq!(p[1].name, "blk.attn.logit_scale");
        assert_eq!((p[1].shape.clone(), p[1].head_axis), (vec![2], Some(0)));
        // 4 windows of 6 tokens, E = 8: 2 · 4 · 6² · 8.
        assert_eq!(a.macs(&[24, 8]), Some(2 * 4 * 36 * 8));
        assert_eq!(Attention::new(4).macs(&[24, 8]), Some(2 * 24 * 24 * 8));
        // A grid that is not whole windows is not the padded grid.
        let mut b = a.clone();
        b.windows.as_mut().unwrap().grid = Pair(5, 6);
        assert!(b.check().unwrap_err().contains("multiple"));
        // Plain attention serialises as before.
        let json = serde_json::to_string(&Op::from(Attention::new(4))).unwrap();
        assert_eq!(json, r#"{"type":"attention","head_dim":4}"#);
    }
}
