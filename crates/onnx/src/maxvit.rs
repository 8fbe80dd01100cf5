//! torchvision's MaxViT from ONNX: its block and grid attention on windows of an image.
//!
//! A MaxViT block partitions an image `[N, C, H, W]` into windows of `P × P` pixels:
//! `Reshape` `[N, C, H/P, P, W/P, P]` → `Transpose` [0, 2, 4, 3, 5, 1] → `Reshape`
//! `[N, nW, P², C]`, read as `tokens` + `window_partition` (no shift), whose ONNX tensor keeps
//! the batch axis and holds the windows on axis 1 ([`Layout::Groups`]). Grid attention swaps
//! the two middle axes (`Transpose` [0, 2, 1, 3], `window_transpose`): each group then holds
//! the pixels at one place of every window. The attention (`RelativePositionalMultiHeadAttention`)
//! splits its fused qkv on the last axis (`Split` into three, or three `Slice`s; the fused
//! layer's rows become q, k and v linears), moves heads first (`Reshape` `[N, G, T, H, d]`,
//! `Transpose` [0, 1, 3, 2, 4]), scales k, and multiplies with `Einsum`
//! (`bghid,bghjd->bghij` and `bghij,bghjd->bghid`) around the relative position bias and the
//! softmax of `swin.rs`; the context goes back (`Transpose`, `Reshape` `[N, G, T, E]`) as one
//! windowed `attention`. The windows go back to an image (`Reshape` `[N, H/P, W/P, P, P, C]`
//! → `Transpose` [0, 5, 1, 3, 2, 4]: `window_merge` + `tokens_to_image`), which the exporters
//! often reshape straight into the next partition. A step that leaves the pattern is an
//! error naming the node.

use fair_ir::{Pair, TokensToImage, WindowMerge, WindowPartition, WindowTranspose};

use super::swin::{Geom, Layout, Swin};
use super::{Importer, Value, describe};
use crate::OnnxError;
use crate::fold::{self, Data, Int};
use crate::proto::NodeRef;

/// How MaxViT's attention is read, for errors.
const MAXVIT_AS_READ: &str = "(MaxViT's attention is read as chunk(to_qkv(x), 3, dim=-1), heads moved first, einsum of q and k, bias, softmax, einsum with v)";

impl Importer<'_> {
    /// The target of a `Reshape` (input 1) as integers.
    fn target(&self, n: &NodeRef, inputs: &[Option<Value>]) -> Result<Vec<Int>, OnnxError> {
        let c = self.konst(n, inputs, 1)?;
        match &*c.data {
            Data::Int(v) if v.len() <= fold::MAX_RANK => Ok(v.clone()),
            _ => Err(n.err("the target shape must be a short list of integers")),
        }
    }

    /// Whether `t` is the batch axis followed by `rest`.
    fn batch_then(&self, t: &[Int], rest: &[usize]) -> bool {
        t.len() == rest.len() + 1
            && self.is_batch(t[0], 1)
            && t[1..]
                .iter()
                .zip(rest)
                .all(|(&a, &b)| a == Int::N(b as i64))
    }

    /// Reads node `n` if it is a step of MaxViT's layout (see the module docs).
    pub(super) fn maxvit(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<Value, OnnxError>> {
        let first = inputs.first()?.as_ref()?.clone();
        let groups = |x: &String| match self.layouts.get(x) {
            Some(Layout::Groups { part, swapped }) => Some((*part, *swapped)),
            _ => None,
        };
        match (n.op(), &first) {
            ("Reshape", Value::Act(x)) if self.shapes[x].len() == 3 => {
                // Only a constant target into windows is MaxViT's; anything else is the
                // generic Reshape's to read or refuse.
                let t = self.target(n, inputs).ok()?;
                let s = self.shapes[x].clone();
                let p = self.unfolded_window(&t, &s)?;
                Some(n.only(&["allowzero"]).map(|_| {
                    Value::Swin(Swin::ImgUnfolded {
                        x: x.clone(),
                        window: p,
                        permuted: false,
                    })
                }))
            }
            (
                "Reshape",
                Value::Swin(Swin::ImgUnfolded {
                    x,
                    window,
                    permuted,
                }),
            ) => {
                let (x, window, permuted) = (x.clone(), *window, *permuted);
                Some((|| {
                    n.only(&["allowzero"])?;
                    let t = self.target(n, inputs)?;
                    let s = self.shapes[&x].clone();
                    let (c, h, w) = (s[0], s[1], s[2]);
                    if !permuted {
                        if self.batch_then(&t, &s) {
                            return Ok(Value::Act(x));
                        }
                        if let Some(p) = self.unfolded_window(&t, &s) {
                            return Ok(Value::Swin(Swin::ImgUnfolded {
                                x,
                                window: p,
                                permuted: false,
                            }));
                        }
                        return Err(n.err(format!(
                            "an image [N, {c}, {h}, {w}] split into windows is reshaped back to the image or into other windows [N, C, H/P, P, W/P, P]; found the target [{}]",
                            describe(&t)
                        )));
                    }
                    let Pair(ph, pw) = window;
                    let count = (h / ph) * (w / pw);
                    if !self.batch_then(&t, &[count, ph * pw, c]) {
                        return Err(n.err(format!(
                            "MaxViT's window partition reshapes the permuted windows to [N, {count}, {}, {c}]; found the target [{}]",
                            ph * pw,
                            describe(&t)
                        )));
                    }
                    let tokens = self.image_tokens(n, &x)?;
                    let part = Geom {
                        grid: Pair(h, w),
                        window,
                        shift: Pair(0, 0),
                    };
                    let op = WindowPartition {
                        grid: part.grid,
                        window,
                        shift: part.shift,
                    };
                    let hint = self.hint(n, None);
                    let out = self.emit(n, hint, op.into(), vec![tokens], vec![])?;
                    if let Value::Act(y) = &out {
                        self.layouts.insert(
                            y.clone(),
                            Layout::Groups {
                                part,
                                swapped: false,
                            },
                        );
                    }
                    Ok(out)
                })())
            }
            (
                "Transpose",
                Value::Swin(Swin::ImgUnfolded {
                    x,
                    window,
                    permuted: false,
                }),
            ) => {
                let (x, window) = (x.clone(), *window);
                Some((|| {
                    n.only(&["perm"])?;
                    if n.ints("perm")?.as_deref() != Some(&[0, 2, 4, 3, 5, 1]) {
                        return Err(n.err("an image split into windows [N, C, H/P, P, W/P, P] is transposed only to [N, H/P, W/P, P, P, C] (perm [0, 2, 4, 3, 5, 1])"));
                    }
                    Ok(Value::Swin(Swin::ImgUnfolded {
                        x,
                        window,
                        permuted: true,
                    }))
                })())
            }
            ("Transpose", Value::Act(x)) if groups(x).is_some() => {
                let (part, swapped) = groups(x)?;
                let x = x.clone();
                Some((|| {
                    n.only(&["perm"])?;
                    let perm = n.ints("perm")?.unwrap_or_default();
                    if perm != [0, 2, 1, 3] {
                        return Err(n.err(format!(
                            "MaxViT's windows [N, G, T, C] are transposed only to swap the windows and the tokens (perm [0, 2, 1, 3]); found {perm:?}"
                        )));
                    }
                    let (k, s) = self.rows(&x);
                    let op = WindowTranspose {
                        blocks: k,
                        size: s[0],
                    };
                    let hint = self.hint(n, None);
                    let out = self.emit(n, hint, op.into(), vec![x], vec![])?;
                    if let Value::Act(y) = &out {
                        self.layouts.insert(
                            y.clone(),
                            Layout::Groups {
                                part,
                                swapped: !swapped,
                            },
                        );
                    }
                    Ok(out)
                })())
            }
            ("Reshape", Value::Act(x)) if groups(x).is_some() => {
                let (part, swapped) = groups(x)?;
                let x = x.clone();
                let t = match self.target(n, inputs) {
                    Ok(t) => t,
                    Err(e) => return Some(Err(e)),
                };
                let (k, s) = self.rows(&x);
                let (tk, f) = (s[0], s[1]);
                // Heads of q, k or v: [N, G, T, H, d].
                if t.len() == 5
                    && self.is_batch(t[0], 1)
                    && t[1] == Int::N(k as i64)
                    && t[2] == Int::N(tk as i64)
                {
                    let d = match t[4] {
                        Int::N(d) if d > 0 && f % d as usize == 0 && t[3] == Int::N((f / d as usize) as i64) => d as usize,
                        _ => return Some(Err(n.err(format!("q, k or v [N, {k}, {tk}, {f}] is split into heads [N, {k}, {tk}, H, d] with H·d = {f}; found the target [{}]", describe(&t))))),
                    };
                    return Some(
                        n.only(&["allowzero"])
                            .map(|_| Value::Swin(Swin::GroupHeads { x, d })),
                    );
                }
                // The windows back in place: [N, H/P, W/P, P, P, C].
                let Pair(h, w) = part.grid;
                let Pair(ph, pw) = part.window;
                if !swapped && self.batch_then(&t, &[h / ph, w / pw, ph, pw, f]) {
                    return Some(
                        n.only(&["allowzero"])
                            .map(|_| Value::Swin(Swin::GroupFold { x, part })),
                    );
                }
                Some(Err(n.err(format!(
                    "MaxViT's windows [N, {k}, {tk}, {f}] are reshaped only into heads [N, {k}, {tk}, H, d] or, unswapped, back to [N, H/P, W/P, P, P, C]; found the target [{}]",
                    describe(&t)
                ))))
            }
            ("Transpose", Value::Swin(Swin::GroupHeads { x, d })) => {
                let (x, d) = (x.clone(), *d);
                Some((|| {
                    n.only(&["perm"])?;
                    if n.ints("perm")?.as_deref() != Some(&[0, 1, 3, 2, 4]) {
                        return Err(n.err(format!("heads [N, G, T, H, d] are moved first only by perm [0, 1, 3, 2, 4] {MAXVIT_AS_READ}")));
                    }
                    Ok(Value::HeadsFirst {
                        x,
                        d,
                        keys: false,
                        scale: 1.0,
                    })
                })())
            }
            ("Transpose", Value::Swin(Swin::GroupFold { x, part })) => {
                let (x, part) = (x.clone(), *part);
                Some((|| {
                    n.only(&["perm"])?;
                    if n.ints("perm")?.as_deref() != Some(&[0, 5, 1, 3, 2, 4]) {
                        return Err(n.err("MaxViT's windows put back [N, H/P, W/P, P, P, C] are transposed only to the image's windows [N, C, H/P, P, W/P, P] (perm [0, 5, 1, 3, 2, 4])"));
                    }
                    let merge = WindowMerge {
                        grid: part.grid,
                        window: part.window,
                        shift: part.shift,
                    };
                    let hint = self.hint(n, None);
                    let Value::Act(m) =
                        self.emit(n, format!("{hint}_merge"), merge.into(), vec![x], vec![])?
                    else {
                        unreachable!("emit returns an activation")
                    };
                    // Tokens of the image in raster order now, not windows.
                    self.layouts.remove(&m);
                    let image = TokensToImage { grid: part.grid };
                    let Value::Act(z) = self.emit(n, hint, image.into(), vec![m], vec![])? else {
                        unreachable!("emit returns an activation")
                    };
                    Ok(Value::Swin(Swin::ImgUnfolded {
                        x: z,
                        window: part.window,
                        permuted: false,
                    }))
                })())
            }
            (
                "Transpose",
                Value::Context {
                    q,
                    k,
                    v,
                    d,
                    transposed: false,
                },
            ) if groups(q).is_some() => {
                let value = Value::Context {
                    q: q.clone(),
                    k: k.clone(),
                    v: v.clone(),
                    d: *d,
                    transposed: true,
                };
                Some((|| {
                    n.only(&["perm"])?;
                    if n.ints("perm")?.as_deref() != Some(&[0, 1, 3, 2, 4]) {
                        return Err(n.err(format!("the context [N, G, H, T, d] is moved back by perm [0, 1, 3, 2, 4] {MAXVIT_AS_READ}")));
                    }
                    Ok(value)
                })())
            }
            (
                "Reshape",
                Value::Context {
                    q,
                    k,
                    v,
                    d,
                    transposed,
                },
            ) if groups(q).is_some() => {
                let (q, k, v, d, transposed) = (q.clone(), k.clone(), v.clone(), *d, *transposed);
                Some((|| {
                    n.only(&["allowzero"])?;
                    let t = self.target(n, inputs)?;
                    let (g, s) = self.rows(&q);
                    if !transposed || !self.batch_then(&t, &[g, s[0], s[1]]) {
                        return Err(n.err(format!(
                            "the context is moved back (perm [0, 1, 3, 2, 4]) and reshaped to [N, {g}, {}, {}]; found the target [{}] {MAXVIT_AS_READ}",
                            s[0],
                            s[1],
                            describe(&t)
                        )));
                    }
                    let hint = self.hint(n, None);
                    let (op, params) = self.attention_node(n, &q, d)?;
                    self.emit(n, hint, op, vec![q, k, v], params)
                })())
            }
            ("Einsum", _) => Some(self.einsum(n, inputs)),
            ("Slice", Value::Act(x)) if groups(x).is_some() => {
                let x = x.clone();
                Some(self.fused_slice(n, inputs, &x))
            }
            _ => None,
        }
    }

    /// The window `[P, P']` of a target `[N, C, H/P, P, W/P', P']` of an image of shape `s`.
    fn unfolded_window(&self, t: &[Int], s: &[usize]) -> Option<Pair> {
        let [c, h, w] = *s else { return None };
        let sizes = Self::sizes(t)?;
        match sizes[..] {
            [cc, a, ph, b, pw]
                if t.len() == 6
                    && self.is_batch(t[0], 1)
                    && cc == c
                    && a.checked_mul(ph) == Some(h)
                    && b.checked_mul(pw) == Some(w) =>
            {
                Some(Pair(ph, pw))
            }
            _ => None,
        }
    }

    /// The tokens of image `x` (shared with Swin's channels-last maps: made once).
    fn image_tokens(&mut self, n: &NodeRef, x: &str) -> Result<String, OnnxError> {
        self.grid_tokens(n, x)
    }

    /// `Einsum` of MaxViT's attention: q's by k's heads (`bghid,bghjd->bghij`), the scores,
    /// or the softmax weights by v's heads (`bghij,bghjd->bghid`), the context.
    fn einsum(&mut self, n: &NodeRef, inputs: &[Option<Value>]) -> Result<Value, OnnxError> {
        n.only(&["equation"])?;
        // The labels renamed by order of first appearance (case kept: ONNX labels are
        // case-sensitive), so any letters spell the same product.
        let raw: String = n
            .string("equation")?
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let mut seen: Vec<char> = Vec::new();
        let eq: String = raw
            .chars()
            .map(|c| {
                if !c.is_ascii_alphabetic() {
                    return c;
                }
                let i = seen.iter().position(|&s| s == c).unwrap_or_else(|| {
                    seen.push(c);
                    seen.len() - 1
                });
                (b'a' + i as u8) as char
            })
            .collect();
        let same = |a: &str, b: &str| {
            let l = self.layouts.get(a);
            matches!(l, Some(Layout::Groups { .. })) && l == self.layouts.get(b)
        };
        let (a, b) = (
            inputs.first().cloned().flatten(),
            inputs.get(1).cloned().flatten(),
        );
        match (eq.as_str(), a, b) {
            (
                "abcde,abcfe->abcdf",
                Some(Value::HeadsFirst {
                    x: q,
                    d,
                    keys: false,
                    scale: sq,
                }),
                Some(Value::HeadsFirst {
                    x: k,
                    d: dk,
                    keys: false,
                    scale: sk,
                }),
            ) if d == dk && self.shapes[&q] == self.shapes[&k] && same(&q, &k) => Ok(Value::Scores {
                q,
                k,
                d,
                scale: sq * sk,
            }),
            (
                "abcde,abcef->abcdf",
                Some(Value::Weights { q, k, d }),
                Some(Value::HeadsFirst {
                    x: v,
                    d: dv,
                    keys: false,
                    scale,
                }),
            ) if d == dv && scale == 1.0 && self.shapes[&q] == self.shapes[&v] && same(&q, &v) => {
                Ok(Value::Context {
                    q,
                    k,
                    v,
                    d,
                    transposed: false,
                })
            }
            _ => Err(n.err(format!(
                "Einsum is read only in MaxViT's attention: 'bghid,bghjd->bghij' of q's and k's heads, or 'bghij,bghjd->bghid' of the softmax weights and v's heads, all of one window layout; found '{raw}' {MAXVIT_AS_READ}"
            ))),
        }
    }

    /// A `Slice` of a third of the last axis of MaxViT's fused qkv `x` (TorchScript's
    /// `chunk(3, dim=-1)`): q, k or v, a linear layer of the fused layer's rows.
    fn fused_slice(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
        x: &str,
    ) -> Result<Value, OnnxError> {
        n.only(&[])?;
        let ints = |k: usize| -> Result<Option<Vec<i64>>, OnnxError> {
            self.opt_konst(n, inputs, k)?
                .map(|c| c.short_ints().map_err(|e| n.err(e)))
                .transpose()
        };
        let f = self.shapes[x][1] as i64;
        let (starts, ends) = (ints(1)?.unwrap_or_default(), ints(2)?.unwrap_or_default());
        let axes = ints(3)?.unwrap_or_else(|| vec![0]);
        let steps = ints(4)?.unwrap_or_else(|| vec![1]);
        let fix = |v: i64| (if v < 0 { v.saturating_add(f) } else { v }).clamp(0, f);
        let part = match (
            starts.as_slice(),
            ends.as_slice(),
            axes.as_slice(),
            steps.as_slice(),
        ) {
            (&[s], &[e], &[a], &[1]) if fold::axis(a, 4) == Ok(3) && f > 0 && f % 3 == 0 => {
                let (s, e, third) = (fix(s), fix(e), f / 3);
                (s % third == 0 && e == s + third).then_some((s / third) as usize)
            }
            _ => None,
        };
        let Some(i) = part else {
            return Err(n.err(format!(
                "MaxViT's windows [N, G, T, {f}] are sliced only into thirds of the last axis (the fused q, k, v) {MAXVIT_AS_READ}"
            )));
        };
        self.fused_part(n, x, i, &["Shape", "Slice"])
    }

    /// Part `i` of MaxViT's fused qkv `x`, named after its module (`….to_qkv` → `…`); ONNX
    /// nodes of op types `parts` (the other parts, `Shape`) may read the fused layer too.
    fn fused_part(
        &mut self,
        n: &NodeRef,
        x: &str,
        i: usize,
        parts: &[&str],
    ) -> Result<Value, OnnxError> {
        let first = !(0..3).any(|j| self.mha_split.contains(&(x.to_owned(), j)));
        if first && let Some(who) = self.other_reader_but(n, x, parts) {
            return Err(n.err(format!(
                "MaxViT's fused q, k, v '{x}' is also read by {who}; only its three parts may read it {MAXVIT_AS_READ}"
            )));
        }
        let module = x.strip_suffix(".to_qkv").unwrap_or(x).to_owned();
        self.split_fused(n, x, i, &module, MAXVIT_AS_READ)
    }

    /// `Split` of MaxViT's fused qkv into three on its last axis (the dynamo exporter's
    /// `chunk`); `None` when input 0 is not such a tensor.
    pub(super) fn maxvit_split(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<(), OnnxError>> {
        let Some(Some(Value::Act(x))) = inputs.first() else {
            return None;
        };
        if !matches!(self.layouts.get(x), Some(Layout::Groups { .. })) {
            return None;
        }
        let x = x.clone();
        Some((|| {
            n.only(&["axis", "split", "num_outputs"])?;
            let f = self.shapes[&x][1];
            let sizes = match self.opt_konst(n, inputs, 1)? {
                Some(c) => c.short_ints().map_err(|e| n.err(e))?,
                None => n.ints("split")?.unwrap_or_else(|| vec![(f / 3) as i64; 3]),
            };
            let axis = fold::axis(n.int_or("axis", 0)?, 4).map_err(|e| n.attr_err("axis", e))?;
            if axis != 3
                || n.node.output.len() != 3
                || !f.is_multiple_of(3)
                || sizes != [(f / 3) as i64; 3]
            {
                return Err(n.err(format!(
                    "MaxViT's windows [N, G, T, {f}] are split only into three equal parts of the last axis (the fused q, k, v) {MAXVIT_AS_READ}"
                )));
            }
            for (i, out) in n.node.output.iter().enumerate() {
                let v = self.fused_part(n, &x, i, &["Shape"])?;
                self.values.insert(out.clone(), v);
            }
            Ok(())
        })())
    }
}
