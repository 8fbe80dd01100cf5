//! torchvision's Swin Transformer (V1 and V2) from ONNX: feature maps `[N, H, W, C]` read
//! as grids of tokens, and `shifted_window_attention` read as `window_partition` → the q, k,
//! v linear layers → a windowed `attention` → the output projection → `window_merge`.
//!
//! A channels-last image (after `Transpose` [0, 2, 3, 1] of a convolution's output) that a
//! `Pad`, `Slice`, `Reshape` or `Concat` reads, or that is added to a grid, becomes tokens
//! `[H·W, C]` (`tokens`) whose ONNX layout is the grid `[N, H, W, C]` ([`Layout::Grid`]).
//! Per-token ops (layer norm, linear layers, GELU, residual adds) keep the layout. The
//! attention's steps on a grid are pending values ([`Swin`]) until they complete:
//!
//! - `Pad` at the bottom and right, the cyclic shift written as `Slice`s + `Concat` per axis
//!   (`torch.roll`), `Reshape` `[N, pH/wh, wh, pW/ww, ww, C]`, `Transpose`
//!   [0, 1, 3, 2, 4, 5] and `Reshape` `[N·nW, wh·ww, C]` are one `window_partition`, whose
//!   output is laid out as windows ([`Layout::Windows`]);
//! - the fused qkv of the windows is split as timm's (`timm.rs`), and the attention pattern
//!   of `attention.rs` runs per window (batch axis `N·nW`), with the relative position bias
//!   (`Add` of a constant `[1, H, N, N]`), the shifted-window mask (`Reshape`
//!   `[N, nW, H, N, N]`, `Add` of a constant `[1, nW, 1, N, N]` equal to the mask the
//!   geometry gives, `Reshape` back) and, in V2, cosine scores (`ReduceL2` → `Clip` →
//!   `Expand` → `Div` of q and k, `Mul` by a per-head constant);
//! - `Reshape` `[N, pH/wh, pW/ww, wh, ww, C]`, `Transpose` [0, 1, 3, 2, 4, 5], `Reshape`
//!   `[N, pH, pW, C]`, the reverse shift and the crop `Slice`s to `[N, H, W, C]` are one
//!   `window_merge`;
//! - patch merging's strided `Slice`s (`x[..., 0::2, 1::2, :]`, …) are `grid_stride`s and
//!   their `Concat` on the last axis a `concat` of tokens;
//! - `Transpose` [0, 3, 1, 2] of a grid before the pooling is `tokens_to_image`.
//!
//! A pending value read by anything else is an error naming the node and what was expected.

use std::rc::Rc;

use fair_ir::{
    Attention, AttnWindows, Concat, GridStride, Op, Pair, ParamKind, Tokens, TokensToImage,
    WindowMerge, WindowPartition,
};

use super::{Importer, Value, describe, dims_text};
use crate::OnnxError;
use crate::fold::{self, Const, Data, Int};
use crate::proto::NodeRef;

/// The ops that read a grid or windows token by token (on the last axis), as they read any
/// tokens; the steps of `swin.rs` are the others that may read them.
const PER_TOKEN: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Sum",
    "MatMul",
    "Relu",
    "Sigmoid",
    "Gelu",
    "Clip",
    "HardSwish",
    "HardSigmoid",
    "Identity",
    "Dropout",
    "LayerNormalization",
];

/// How the ONNX tensor of an IR token node `[T, F]` is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    /// `[N, H, W, F]`: a grid of `H × W` tokens (`T = H·W`, row-major).
    Grid(Pair),
    /// `[N·nW, wh·ww, F]`: the windows of a `window_partition` (`T = nW·wh·ww`).
    Windows(Geom),
    /// `[N, G, T, F]`: MaxViT's windows of an image (see `maxvit.rs`): the `nW` windows of
    /// `part` on axis 1, or, `swapped` (grid attention), the `wh·ww` places of a window.
    Groups {
        /// The partition.
        part: Geom,
        /// Windows and tokens swapped (`window_transpose`).
        swapped: bool,
    },
}

impl Layout {
    /// The blocks of consecutive tokens that attend to each other, as a partition's
    /// geometry (its count of windows and tokens per window), for a windowed layout.
    pub(super) fn blocks(&self) -> Option<Geom> {
        match *self {
            Layout::Grid(_) => None,
            Layout::Windows(g)
            | Layout::Groups {
                part: g,
                swapped: false,
            } => Some(g),
            // Each block holds one place of every window: as many tokens as windows.
            Layout::Groups {
                part,
                swapped: true,
            } => Some(Geom {
                grid: part.grid,
                window: Pair(part.grid.0 / part.window.0, part.grid.1 / part.window.1),
                shift: Pair(0, 0),
            }),
        }
    }
}

/// The geometry of a window partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geom {
    /// The grid before padding.
    pub grid: Pair,
    /// The window.
    pub window: Pair,
    /// The cyclic shift (the grid is rolled by minus it).
    pub shift: Pair,
}

/// `n` rounded up to a multiple of `k ≥ 1`.
fn ceil_to(n: usize, k: usize) -> usize {
    n.div_ceil(k) * k
}

impl Geom {
    /// The padded grid.
    fn padded(&self) -> Pair {
        WindowPartition {
            grid: self.grid,
            window: self.window,
            shift: self.shift,
        }
        .padded_grid()
    }

    /// The number of windows `nW`.
    pub(super) fn count(&self) -> usize {
        self.attention(false).count()
    }

    /// Tokens per window `N`.
    pub(super) fn per_window(&self) -> usize {
        self.attention(false).tokens()
    }

    /// The windows of the IR attention over this partition.
    fn attention(&self, bias: bool) -> AttnWindows {
        AttnWindows {
            grid: self.padded(),
            window: self.window,
            shift: self.shift,
            bias,
        }
    }
}

/// What a view of a grid is a view of.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Base {
    /// The grid tokens `x`.
    Grid { x: String, grid: Pair },
    /// The windows `x` put back in place: the padded map with the shift undone (a view
    /// rolled by the shift is the map as torchvision puts it back, before its reverse roll).
    Windows { x: String, geom: Geom },
}

/// A grid's tokens zero-padded, cyclically shifted or cropped, not yet an IR node:
/// position `(i, j)` of the view is position `((i + roll.0) mod size.0, (j + roll.1) mod
/// size.1)` of the base (padded with zeros beyond its grid).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct View {
    base: Base,
    size: Pair,
    roll: Pair,
}

impl View {
    fn x(&self) -> &str {
        match &self.base {
            Base::Grid { x, .. } | Base::Windows { x, .. } => x,
        }
    }
}

/// Windowed attention scores being built (see the module docs).
#[derive(Debug, Clone)]
pub(super) struct Scores {
    q: String,
    k: String,
    d: usize,
    /// The dot-product scale, or for cosine scores the per-head factor.
    scale: Scale,
    bias: Option<Rc<Const>>,
    masked: bool,
    /// Reshaped to `[N, nW, H, N, N]` for the mask.
    split: bool,
}

/// How scores are scaled.
#[derive(Debug, Clone)]
enum Scale {
    /// `q kᵀ` times this.
    Dot(f64),
    /// Cosine scores times these (one per head).
    Cosine(Vec<f32>),
}

/// A pending step of Swin's attention block (carried by [`Value::Swin`]).
#[derive(Debug, Clone)]
pub(super) enum Swin {
    /// A view of a grid.
    View(View),
    /// `start..end` of a view on `axis` (1: rows, 2: columns), step 1: half of a cyclic
    /// shift (a `Concat` of two such slices), or a crop when read by anything else.
    Part {
        view: View,
        axis: usize,
        start: usize,
        end: usize,
    },
    /// Every second row (`axis` 1) or column (2) of a view from `offset`: half of a
    /// patch-merging stride.
    Strided {
        view: View,
        axis: usize,
        offset: usize,
    },
    /// A view reshaped to `[N, pH/wh, wh, pW/ww, ww, F]` (`permuted`: `[N, pH/wh, pW/ww,
    /// wh, ww, F]`).
    Unfolded {
        view: View,
        window: Pair,
        permuted: bool,
    },
    /// Windowed tokens `x` reshaped to `[N, pH/wh, pW/ww, wh, ww, F]` (`permuted`:
    /// `[N, pH/wh, wh, pW/ww, ww, F]`).
    Folding {
        x: String,
        geom: Geom,
        permuted: bool,
    },
    /// The L2 norm of q's or k's heads `x` over the head's channels (`ReduceL2` with the
    /// axis kept), `clipped` from below by ε and `expanded` back to the heads' shape.
    Norm {
        x: String,
        d: usize,
        clipped: bool,
        expanded: bool,
    },
    /// q's or k's heads divided by their norm, `[N, H, T, d]` (`keys`: transposed to
    /// `[N, H, d, T]`).
    Unit { x: String, d: usize, keys: bool },
    /// Windowed scores.
    Scores(Scores),
    /// Tokens `x` transposed to `[N, F, T]`: the first half of `tokens_to_image` as
    /// fair-pruner exports it (a `Reshape` to `[N, F, H, W]` completes it).
    TokensT { x: String },
    /// MaxViT: image `x` `[N, C, H, W]` viewed as windows `[N, C, H/P, P, W/P, P]`
    /// (`permuted`: `[N, H/P, W/P, P, P, C]`), see `maxvit.rs`.
    ImgUnfolded {
        x: String,
        window: Pair,
        permuted: bool,
    },
    /// MaxViT: q's, k's or v's heads `[N, G, T, H, d]` (before moving them first).
    GroupHeads { x: String, d: usize },
    /// MaxViT: windows `x` reshaped back to `[N, H/P, W/P, P, P, C]`.
    GroupFold { x: String, part: Geom },
}

/// An IR node's parameters by kind, in the order of its specs (see `Importer::emit`).
type Params = Vec<(ParamKind, Rc<Const>)>;

impl Extra {
    /// Records a dot-product scale other than `1/√head_dim`.
    pub(super) fn set_scale(&mut self, s: f64) {
        self.scale = Some(s);
    }
}

/// What the attention pattern saw besides `softmax(q kᵀ / √d) v`, by q's IR node.
#[derive(Debug, Clone, Default)]
pub(super) struct Extra {
    bias: Option<Rc<Const>>,
    masked: bool,
    cosine: Option<Vec<f32>>,
    /// A dot-product scale other than `1/√head_dim`.
    scale: Option<f64>,
}

impl Importer<'_> {
    /// The layout of an input, if it is an IR token node with one.
    fn layout_in(&self, v: Option<&Option<Value>>) -> Option<(String, Layout)> {
        match v {
            Some(Some(Value::Act(x))) => Some((x.clone(), *self.layouts.get(x)?)),
            _ => None,
        }
    }

    /// The ONNX rows of an IR token node: the batch factor (windows per sample) and the
    /// per-row shape `[tokens, F]`.
    pub(super) fn rows(&self, x: &str) -> (usize, Vec<usize>) {
        let s = self.shapes[x].clone();
        match (self.layouts.get(x), s.as_slice()) {
            (Some(l), [_, f]) if l.blocks().is_some() => {
                let g = l.blocks().expect("checked");
                (g.count(), vec![g.per_window(), *f])
            }
            _ => (1, s),
        }
    }

    /// The tokens of the channels-last image `x` (`tokens`, made once per image).
    pub(super) fn grid_tokens(&mut self, n: &NodeRef, x: &str) -> Result<String, OnnxError> {
        if let Some(t) = self.grid_of_image.get(x) {
            return Ok(t.clone());
        }
        let s = self.shapes[x].clone();
        let [_, h, w] = s[..] else {
            return Err(n.err(format!("expected an image, found [{}]", dims_text(&s))));
        };
        let Value::Act(t) = self.emit(
            n,
            format!("{x}_tokens"),
            Tokens {}.into(),
            vec![x.to_owned()],
            vec![],
        )?
        else {
            unreachable!("emit returns an activation")
        };
        self.layouts.insert(t.clone(), Layout::Grid(Pair(h, w)));
        self.grid_of_image.insert(x.to_owned(), t.clone());
        Ok(t)
    }

    /// Reads node `n` if it is a step of Swin's layout (see the module docs); `None` when
    /// it is not, and the op's own mapping reads it.
    pub(super) fn swin(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<Value, OnnxError>> {
        let op = n.op();
        // A slice read by anything but the Concat of a shift is a crop.
        if !matches!(op, "Concat" | "Shape")
            && inputs
                .iter()
                .any(|v| matches!(v, Some(Value::Swin(Swin::Part { .. }))))
        {
            return Some(self.settled(n, inputs).and_then(|ins| self.map(n, &ins)));
        }
        let grid_read = inputs.iter().flatten().any(|v| match v {
            Value::Act(x) => matches!(self.layouts.get(x), Some(Layout::Grid(_))),
            Value::Swin(_) => true,
            _ => false,
        });
        let channels_last = |k: usize| matches!(inputs.get(k), Some(Some(Value::ChannelsLast(_))));
        if op == "Shape"
            && let Some(Some(Value::ChannelsLast(x))) = inputs.first()
        {
            let s = &self.shapes[x];
            let dims = [s[1], s[2], s[0]].map(|d| Int::N(d as i64));
            return Some(
                super::shape_slice(n, std::iter::once(Int::BATCH).chain(dims).collect())
                    .map(|c| Value::Const(Rc::new(c))),
            );
        }
        if (0..inputs.len()).any(channels_last)
            && (grid_read || matches!(op, "Pad" | "Slice" | "Reshape" | "Concat"))
        {
            let mut ins = inputs.to_vec();
            for v in ins.iter_mut() {
                if let Some(Value::ChannelsLast(x)) = v {
                    let x = x.clone();
                    match self.grid_tokens(n, &x) {
                        Ok(t) => *v = Some(Value::Act(t)),
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
            return Some(self.map(n, &ins));
        }
        if let Some(out) = self.maxvit(n, inputs) {
            return Some(out);
        }
        let out = match op {
            "Shape" => self.swin_shape(n, inputs),
            "Pad" => self.swin_pad(n, inputs),
            "Slice" => self.swin_slice(n, inputs),
            "Concat" => self.swin_concat(n, inputs),
            "Reshape" => self.swin_reshape(n, inputs),
            "Transpose" => self.swin_transpose(n, inputs),
            "ReduceL2" | "Clip" | "Expand" | "Div" | "MatMul" | "Mul" | "Add" | "Softmax" => {
                self.swin_scores(n, inputs)
            }
            _ => inputs.iter().enumerate().find_map(|(k, v)| match v {
                Some(Value::Swin(s)) => Some(Err(self.swin_err(n, k, s))),
                _ => None,
            }),
        };
        if out.is_some() {
            return out;
        }
        // A grid [N, H, W, C] or windows [N·nW, N, C] read by an op Swin's steps do not
        // cover: only ops on each token (the last axis) mean the same on the IR's tokens
        // (a ReduceMean, Slice or Softmax over another axis would not).
        let laid = (0..inputs.len()).find_map(|k| self.layout_in(inputs.get(k)).map(|l| (k, l)));
        match laid {
            Some(_) if PER_TOKEN.contains(&op) => None,
            // The fused qkv split of windows (timm.rs) reshapes them to 5 axes.
            Some((_, (_, Layout::Windows(_)))) if op == "Reshape" => None,
            Some((k, (x, layout))) => Some(Err(n.err(format!(
                "input {k} ('{}') is {}; only ops on each token (the last axis: {}) and Swin's own steps may read it",
                n.node.input.get(k).map_or("", String::as_str),
                match layout {
                    Layout::Grid(Pair(h, w)) => format!("the Swin feature map '{x}' [N, {h}, {w}, C]"),
                    Layout::Windows(g) => format!(
                        "the windows of '{x}' [N·{}, {}, C]",
                        g.count(),
                        g.per_window()
                    ),
                    Layout::Groups { .. } => "MaxViT's windows of an image [N, G, T, C]".to_owned(),
                },
                PER_TOKEN.join(", ")
            )))),
            None => None,
        }
    }

    /// The number of axes of the ONNX tensor of IR node `x`, batch axis included (a grid
    /// has four, windows three).
    pub(super) fn onnx_rank(&self, x: &str) -> usize {
        match self.layouts.get(x) {
            Some(Layout::Grid(_)) => 4,
            Some(Layout::Windows(_)) => 3,
            Some(Layout::Groups { .. }) => 4,
            None => self.shapes[x].len() + 1,
        }
    }

    /// The inputs with every pending slice settled as a crop.
    fn settled(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>, OnnxError> {
        let mut ins = inputs.to_vec();
        for v in ins.iter_mut() {
            if let Some(Value::Swin(Swin::Part {
                view,
                axis,
                start,
                end,
            })) = v
            {
                let (view, axis, start, end) = (view.clone(), *axis, *start, *end);
                *v = Some(self.crop(n, view, axis, start, end)?);
            }
        }
        Ok(ins)
    }

    /// `start..end` of `view` on `axis` as a crop (the first rows or columns, with no shift
    /// left on that axis).
    fn crop(
        &mut self,
        n: &NodeRef,
        mut view: View,
        axis: usize,
        start: usize,
        end: usize,
    ) -> Result<Value, OnnxError> {
        let a = axis - 1;
        let roll = if a == 0 { view.roll.0 } else { view.roll.1 };
        if end == 0 {
            return Err(n.err(format!(
                "an empty crop ({start}..{end} of axis {axis}) of a Swin feature map"
            )));
        }
        if start != 0 || roll != 0 {
            return Err(n.err(format!(
                "a slice {start}..{end} of axis {axis} of a Swin feature map (still shifted by {roll} on that axis) is read as a crop, which must keep the first rows or columns of an unshifted map (a cyclic shift is two slices concatenated on the same axis)"
            )));
        }
        if a == 0 {
            view.size.0 = end;
        } else {
            view.size.1 = end;
        }
        self.complete(n, view)
    }

    /// A view as a value: the IR node it equals once nothing is pending (the grid itself,
    /// or a `window_merge` of windows put back, unshifted and cropped to their grid), else
    /// the pending view.
    fn complete(&mut self, n: &NodeRef, view: View) -> Result<Value, OnnxError> {
        match &view.base {
            Base::Grid { x, grid } if view.size == *grid && zero(view.roll) => {
                Ok(Value::Act(x.clone()))
            }
            Base::Windows { x, geom } if view.size == geom.grid && zero(view.roll) => {
                let op = WindowMerge {
                    grid: geom.grid,
                    window: geom.window,
                    shift: geom.shift,
                };
                let (x, grid) = (x.clone(), geom.grid);
                let hint = self.hint(n, None);
                let out = self.emit(n, hint, op.into(), vec![x], vec![])?;
                if let Value::Act(y) = &out {
                    self.layouts.insert(y.clone(), Layout::Grid(grid));
                }
                Ok(out)
            }
            _ => Ok(Value::Swin(Swin::View(view))),
        }
    }

    /// An input as a view: a pending view, or a grid node seen whole.
    fn view_in(&self, v: Option<&Option<Value>>) -> Option<View> {
        match v {
            Some(Some(Value::Swin(Swin::View(view)))) => Some(view.clone()),
            Some(Some(Value::Act(x))) => match self.layouts.get(x) {
                Some(Layout::Grid(grid)) => Some(View {
                    base: Base::Grid {
                        x: x.clone(),
                        grid: *grid,
                    },
                    size: *grid,
                    roll: Pair(0, 0),
                }),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether `t` is `k` times the batch size in a target (the symbol, -1, or the file's
    /// fixed batch times `k`).
    pub(super) fn is_batch(&self, t: Int, k: usize) -> bool {
        self.batch_times(t, k as i64)
    }

    /// The known positive sizes of a target after its batch axis (`None` when one is not).
    pub(super) fn sizes(t: &[Int]) -> Option<Vec<usize>> {
        t.iter()
            .skip(1)
            .map(|v| match v {
                Int::N(k) if *k > 0 => Some(*k as usize),
                _ => None,
            })
            .collect()
    }

    /// `Shape` of a grid, of windows or of a pending step.
    fn swin_shape(
        &self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<Value, OnnxError>> {
        let b = |k: usize| Int::batch_times(k as i64);
        let num = |v: usize| Int::N(v as i64);
        let f = |x: &str| self.shapes[x][1];
        let dims: Vec<Int> = match inputs.first()?.as_ref()? {
            Value::Act(x) => match self.layouts.get(x)? {
                Layout::Grid(Pair(h, w)) => vec![b(1), num(*h), num(*w), num(f(x))],
                Layout::Windows(g) => vec![b(g.count()), num(g.per_window()), num(f(x))],
                l @ Layout::Groups { .. } => {
                    let g = l.blocks().expect("windowed");
                    vec![b(1), num(g.count()), num(g.per_window()), num(f(x))]
                }
            },
            Value::Swin(s) => match s {
                Swin::View(v) => vec![b(1), num(v.size.0), num(v.size.1), num(f(v.x()))],
                Swin::Part {
                    view,
                    axis,
                    start,
                    end,
                } => {
                    let mut d = vec![b(1), num(view.size.0), num(view.size.1), num(f(view.x()))];
                    d[*axis] = num(end - start);
                    d
                }
                Swin::Strided { view, axis, offset } => {
                    let mut d = vec![b(1), num(view.size.0), num(view.size.1), num(f(view.x()))];
                    let size = if *axis == 1 { view.size.0 } else { view.size.1 };
                    d[*axis] = num((size - offset).div_ceil(2));
                    d
                }
                Swin::Unfolded {
                    view,
                    window: Pair(wh, ww),
                    permuted,
                } => {
                    let (a, c) = (view.size.0 / wh, view.size.1 / ww);
                    let inner = if *permuted {
                        [a, c, *wh, *ww]
                    } else {
                        [a, *wh, c, *ww]
                    };
                    std::iter::once(b(1))
                        .chain(inner.map(num))
                        .chain([num(f(view.x()))])
                        .collect()
                }
                Swin::Folding { x, geom, permuted } => {
                    let p = geom.padded();
                    let Pair(wh, ww) = geom.window;
                    let (a, c) = (p.0 / wh, p.1 / ww);
                    let inner = if *permuted {
                        [a, wh, c, ww]
                    } else {
                        [a, c, wh, ww]
                    };
                    std::iter::once(b(1))
                        .chain(inner.map(num))
                        .chain([num(f(x))])
                        .collect()
                }
                Swin::Norm { x, d, expanded, .. } => {
                    let (k, s) = self.rows(x);
                    vec![
                        b(k),
                        num(s[1] / d),
                        num(s[0]),
                        num(if *expanded { *d } else { 1 }),
                    ]
                }
                Swin::Unit { x, d, keys } => {
                    let (k, s) = self.rows(x);
                    let (t, h) = (s[0], s[1] / d);
                    if *keys {
                        vec![b(k), num(h), num(*d), num(t)]
                    } else {
                        vec![b(k), num(h), num(t), num(*d)]
                    }
                }
                Swin::ImgUnfolded {
                    x,
                    window: Pair(ph, pw),
                    permuted,
                } => {
                    let s = &self.shapes[x];
                    let (c, a, bb) = (s[0], s[1] / ph, s[2] / pw);
                    let inner = if *permuted {
                        [a, bb, *ph, *pw, c]
                    } else {
                        [c, a, *ph, bb, *pw]
                    };
                    std::iter::once(b(1)).chain(inner.map(num)).collect()
                }
                Swin::GroupHeads { x, d } => {
                    let (k, s) = self.rows(x);
                    vec![b(1), num(k), num(s[0]), num(s[1] / d), num(*d)]
                }
                Swin::GroupFold { x, part } => {
                    let Pair(h, w) = part.grid;
                    let Pair(ph, pw) = part.window;
                    let f = self.shapes[x][1];
                    vec![b(1), num(h / ph), num(w / pw), num(ph), num(pw), num(f)]
                }
                Swin::TokensT { x } => {
                    vec![b(1), num(self.shapes[x][1]), num(self.shapes[x][0])]
                }
                Swin::Scores(sc) => {
                    let (k, s) = self.rows(&sc.q);
                    let (t, h) = (s[0], s[1] / sc.d);
                    if sc.split {
                        vec![b(1), num(k), num(h), num(t), num(t)]
                    } else {
                        vec![b(k), num(h), num(t), num(t)]
                    }
                }
            },
            _ => return None,
        };
        Some(super::shape_slice(n, dims).map(|c| Value::Const(Rc::new(c))))
    }

    /// `Pad` of a grid at the bottom and right with zeros: a padded view.
    fn swin_pad(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<Value, OnnxError>> {
        let view = self.view_in(inputs.first())?;
        Some((|| {
            n.only(&["mode"])?;
            if let Some(m) = n.string("mode")?
                && m != "constant"
            {
                return Err(n.attr_err(
                    "mode",
                    format!(
                        "a Swin feature map is padded with zeros (mode 'constant'), found '{m}'"
                    ),
                ));
            }
            let pads = self
                .konst(n, inputs, 1)?
                .short_ints()
                .map_err(|e| n.err(e))?;
            if let Some(Some(_)) = inputs.get(2) {
                let v = self
                    .konst(n, inputs, 2)?
                    .scalar_f32()
                    .map_err(|e| n.err(e))?;
                if v != 0.0 {
                    return Err(n.err(format!(
                        "a Swin feature map is padded with zeros, found the value {v}"
                    )));
                }
            }
            let mut full = [0i64; 8];
            match inputs.get(3) {
                Some(Some(_)) => {
                    let axes = self
                        .konst(n, inputs, 3)?
                        .short_ints()
                        .map_err(|e| n.err(e))?;
                    if pads.len() != 2 * axes.len() {
                        return Err(n.err(format!("{} pads for {} axes", pads.len(), axes.len())));
                    }
                    for (i, &a) in axes.iter().enumerate() {
                        let a = fold::axis(a, 4).map_err(|e| n.err(e))?;
                        full[a] = pads[i];
                        full[4 + a] = pads[axes.len() + i];
                    }
                }
                _ if pads.len() == 8 => full.copy_from_slice(&pads),
                _ => return Err(n.err(format!("expected 8 pads for [N, H, W, C], found {pads:?}"))),
            }
            let [0, 0, 0, 0, 0, bottom, right, 0] = full else {
                return Err(n.err(format!(
                    "a Swin feature map [N, H, W, C] is padded at the bottom and right only (pads [0, 0, 0, 0, 0, b, r, 0]); found {full:?}"
                )));
            };
            if bottom < 0
                || right < 0
                || !zero(view.roll)
                || !matches!(view.base, Base::Grid { .. })
                || view.size != self.grid_size(&view)
            {
                return Err(n.err(format!(
                    "only an unpadded, unshifted Swin feature map is padded, with pads ≥ 0 (found bottom {bottom}, right {right})"
                )));
            }
            let size = Pair(view.size.0 + bottom as usize, view.size.1 + right as usize);
            self.complete(n, View { size, ..view })
        })())
    }

    /// The grid of a view's base.
    fn grid_size(&self, view: &View) -> Pair {
        match &view.base {
            Base::Grid { grid, .. } => *grid,
            Base::Windows { geom, .. } => geom.padded(),
        }
    }

    /// `Slice` of a grid or view on its rows or columns: halves of a cyclic shift, crops,
    /// and patch merging's strides.
    fn swin_slice(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<Value, OnnxError>> {
        let first = inputs.first()?.as_ref()?;
        let strided = matches!(first, Value::Swin(Swin::Strided { .. }));
        if !strided && self.view_in(inputs.first()).is_none() {
            return None;
        }
        let first = first.clone();
        Some((|| {
            n.only(&[])?;
            let ints = |k: usize| -> Result<Option<Vec<i64>>, OnnxError> {
                self.opt_konst(n, inputs, k)?
                    .map(|c| c.short_ints().map_err(|e| n.err(e)))
                    .transpose()
            };
            let starts = ints(1)?.ok_or_else(|| n.err("missing starts"))?;
            let ends = ints(2)?.ok_or_else(|| n.err("missing ends"))?;
            let axes = ints(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = ints(4)?.unwrap_or_else(|| vec![1; starts.len()]);
            if [ends.len(), axes.len(), steps.len()]
                .iter()
                .any(|&l| l != starts.len())
            {
                return Err(n.err("starts, ends, axes and steps differ in length"));
            }
            let mut cur = first;
            for i in 0..starts.len() {
                let axis = fold::axis(axes[i], 4).map_err(|e| n.err(e))?;
                if !(axis == 1 || axis == 2) {
                    return Err(n.err(format!(
                        "a Swin feature map [N, H, W, C] is sliced on its rows (axis 1) or columns (axis 2) only, found axis {axis}"
                    )));
                }
                cur =
                    self.slice_step(n, cur, axis, starts[i], ends[i], steps[i], starts.len() > 1)?;
            }
            Ok(cur)
        })())
    }

    /// One axis of a `Slice` of a view (`crop`: part of a multi-axis slice, which can only
    /// be a crop or a stride).
    #[allow(clippy::too_many_arguments)]
    fn slice_step(
        &mut self,
        n: &NodeRef,
        cur: Value,
        axis: usize,
        start: i64,
        end: i64,
        step: i64,
        crop: bool,
    ) -> Result<Value, OnnxError> {
        // (A pending slice read by a Slice was settled as a crop by `swin`.)
        let view = match &cur {
            Value::Swin(Swin::Strided { view, .. }) => view.clone(),
            other => self
                .view_in(Some(&Some(other.clone())))
                .ok_or_else(|| n.err("expected a Swin feature map"))?,
        };
        let size = if axis == 1 { view.size.0 } else { view.size.1 } as i64;
        let fix = |v: i64| (if v < 0 { v.saturating_add(size) } else { v }).clamp(0, size) as usize;
        let (s, e) = (fix(start), fix(end));
        match step {
            1 => {
                if let Value::Swin(Swin::Strided { .. }) = cur {
                    return Err(n.err("a strided slice of a Swin feature map must be followed by the other axis' strided slice (patch merging)"));
                }
                if crop {
                    self.crop(n, view, axis, s, e)
                } else {
                    Ok(Value::Swin(Swin::Part {
                        view,
                        axis,
                        start: s,
                        end: e,
                    }))
                }
            }
            2 => {
                if e as i64 != size || s > 1 {
                    return Err(n.err(format!(
                        "patch merging takes every second row or column from 0 or 1 to the end; found {start}..{end} step 2 of {size}"
                    )));
                }
                match cur {
                    Value::Swin(Swin::Strided {
                        view: v,
                        axis: a,
                        offset,
                    }) if a != axis => {
                        let (r, c) = if a == 1 { (offset, s) } else { (s, offset) };
                        self.stride(n, v, Pair(r, c))
                    }
                    Value::Swin(Swin::Strided { .. }) => Err(n.err("patch merging strides each axis once")),
                    _ => Ok(Value::Swin(Swin::Strided {
                        view,
                        axis,
                        offset: s,
                    })),
                }
            }
            _ => Err(n.err(format!(
                "a Swin feature map is sliced with step 1 (shifts, crops) or 2 (patch merging), found step {step}"
            ))),
        }
    }

    /// Patch merging's `x[..., r::2, c::2, :]` of a (padded) grid: `grid_stride`.
    fn stride(&mut self, n: &NodeRef, view: View, offset: Pair) -> Result<Value, OnnxError> {
        let Base::Grid { x, grid } = &view.base else {
            return Err(n.err("patch merging strides a grid, not windows being put back"));
        };
        let even = Pair(ceil_to(grid.0, 2), ceil_to(grid.1, 2));
        if !zero(view.roll) || view.size != even {
            return Err(n.err(format!(
                "patch merging strides the grid {}×{} padded to even sizes ({}×{}); here the map is {}×{}{}",
                grid.0,
                grid.1,
                even.0,
                even.1,
                view.size.0,
                view.size.1,
                if zero(view.roll) { "" } else { " and shifted" }
            )));
        }
        let op = GridStride {
            grid: *grid,
            offset,
            stride: Pair(2, 2),
        };
        let (x, out_grid) = (x.clone(), Pair(grid.0.div_ceil(2), grid.1.div_ceil(2)));
        let hint = self.hint(n, None);
        let out = self.emit(n, hint, op.into(), vec![x], vec![])?;
        if let Value::Act(y) = &out {
            self.layouts.insert(y.clone(), Layout::Grid(out_grid));
        }
        Ok(out)
    }

    /// `Concat` of the two halves of a cyclic shift, or of grids on their features (patch
    /// merging).
    fn swin_concat(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<Value, OnnxError>> {
        let part = |v: &Option<Value>| match v {
            Some(Value::Swin(Swin::Part {
                view,
                axis,
                start,
                end,
            })) => Some((view.clone(), *axis, *start, *end)),
            _ => None,
        };
        if inputs.iter().any(|v| part(v).is_some()) {
            return Some((|| {
                n.only(&["axis"])?;
                let axis = fold::axis(
                    n.int("axis")?
                        .ok_or_else(|| n.attr_err("axis", "missing"))?,
                    4,
                )
                .map_err(|e| n.attr_err("axis", e))?;
                // A shift of 0 is written as the whole map then its empty slice
                // (TorchScript's `cat(x[-0:], x[:-0])`): the whole map is the part 0..size.
                let parts: Vec<_> = (inputs.iter())
                    .map(|v| {
                        part(v).or_else(|| {
                            let view = self.view_in(Some(v))?;
                            let size = if axis == 1 { view.size.0 } else { view.size.1 };
                            Some((view, axis, 0, size))
                        })
                    })
                    .collect();
                let ok = match parts.as_slice() {
                    [Some((v1, a1, s1, e1)), Some((v2, a2, s2, e2))] => {
                        let size = if axis == 1 { v1.size.0 } else { v1.size.1 };
                        (v1 == v2
                            && *a1 == axis
                            && *a2 == axis
                            && *e1 == size
                            && *s2 == 0
                            && e2 == s1)
                            .then(|| (v1.clone(), *s1, size))
                    }
                    _ => None,
                };
                let Some((mut view, by, size)) = ok.filter(|o| o.2 > 0) else {
                    return Err(n.err(
                        "a Concat of slices of a Swin feature map must be a cyclic shift (torch.roll): x[a:] then x[:a] of one map on the slices' axis",
                    ));
                };
                if axis == 1 {
                    view.roll.0 = (view.roll.0 + by) % size;
                } else {
                    view.roll.1 = (view.roll.1 + by) % size;
                }
                self.complete(n, view)
            })());
        }
        let grids: Vec<_> = (0..inputs.len())
            .map(|k| self.layout_in(inputs.get(k)))
            .collect();
        if !grids
            .iter()
            .all(|g| matches!(g, Some((_, Layout::Grid(_)))))
        {
            return None;
        }
        Some((|| {
            n.only(&["axis"])?;
            let axis = n
                .int("axis")?
                .ok_or_else(|| n.attr_err("axis", "missing"))?;
            if fold::axis(axis, 4).map_err(|e| n.attr_err("axis", e))? != 3 {
                return Err(n.attr_err("axis", format!("grids [N, H, W, C] are concatenated on their features (axis 3 or -1), found {axis}")));
            }
            let layouts: Vec<Layout> = grids.iter().flatten().map(|(_, l)| *l).collect();
            if layouts.windows(2).any(|w| w[0] != w[1]) {
                return Err(n.err("grids of different sizes are concatenated"));
            }
            let xs: Vec<String> = grids.into_iter().flatten().map(|(x, _)| x).collect();
            let hint = self.hint(n, None);
            let out = self.emit(n, hint, Concat {}.into(), xs, vec![])?;
            if let Value::Act(y) = &out {
                self.layouts.insert(y.clone(), layouts[0]);
            }
            Ok(out)
        })())
    }

    /// `Reshape` steps of the window partition and of putting the windows back, and of the
    /// shifted-window mask's scores.
    fn swin_reshape(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<Value, OnnxError>> {
        let first = inputs.first()?.as_ref()?.clone();
        let windowed = matches!(&first, Value::Act(x) if matches!(self.layouts.get(x), Some(Layout::Windows(_))));
        let pending = matches!(first, Value::Swin(_));
        let view = self.view_in(inputs.first());
        if view.is_none() && !pending && !windowed {
            return None;
        }
        let t = match self.konst(n, inputs, 1) {
            Ok(c) => match &*c.data {
                Data::Int(v) if v.len() <= fold::MAX_RANK => v.clone(),
                _ => return Some(Err(n.err("the target shape must be integers"))),
            },
            Err(e) => return Some(Err(e)),
        };
        // A windowed q, k, v split (5 axes) or context is the attention's (timm.rs,
        // attention.rs).
        if windowed && t.len() != 6 {
            return None;
        }
        Some((|| {
            n.only(&["allowzero"])?;
            let sizes = Self::sizes(&t);
            let wrong = |what: &str| n.err(format!("{what}; found the target [{}]", describe(&t)));
            match (&first, view) {
                (
                    Value::Swin(Swin::Unfolded {
                        view,
                        window,
                        permuted: true,
                    }),
                    _,
                ) => {
                    let Pair(wh, ww) = *window;
                    let Base::Grid { x, grid: g } = &view.base else {
                        return Err(n.err(
                            "Swin's window partition reads a grid, not windows being put back",
                        ));
                    };
                    let geom = Geom {
                        grid: *g,
                        window: *window,
                        shift: view.roll,
                    };
                    let ok = t.len() == 3
                        && self.is_batch(t[0], geom.count())
                        && sizes.as_deref() == Some(&[wh * ww, self.shapes[x][1]][..]);
                    if !ok || view.size != geom.padded() || view.roll.0 >= wh || view.roll.1 >= ww {
                        return Err(wrong(&format!(
                            "Swin's window partition reshapes the map permuted to [N, pH/wh, pW/ww, wh, ww, C] to windows [N·nW, wh·ww, C] (the map {}×{} padded to multiples of the window {wh}×{ww}, shifted by less than the window)",
                            g.0, g.1
                        )));
                    }
                    let op = WindowPartition {
                        grid: geom.grid,
                        window: geom.window,
                        shift: geom.shift,
                    };
                    let x = x.clone();
                    let hint = self.hint(n, None);
                    let out = self.emit(n, hint, op.into(), vec![x], vec![])?;
                    if let Value::Act(y) = &out {
                        self.layouts.insert(y.clone(), Layout::Windows(geom));
                    }
                    Ok(out)
                }
                (
                    Value::Swin(Swin::Folding {
                        x,
                        geom,
                        permuted: true,
                    }),
                    _,
                ) => {
                    let p = geom.padded();
                    let ok = t.len() == 4
                        && self.is_batch(t[0], 1)
                        && sizes.as_deref() == Some(&[p.0, p.1, self.shapes[x][1]][..]);
                    if !ok {
                        return Err(wrong(&format!(
                            "Swin puts its windows back as the map [N, {}, {}, C]",
                            p.0, p.1
                        )));
                    }
                    let view = View {
                        base: Base::Windows {
                            x: x.clone(),
                            geom: *geom,
                        },
                        size: p,
                        roll: geom.shift,
                    };
                    self.complete(n, view)
                }
                (Value::Swin(Swin::TokensT { x }), _) => {
                    let (tokens, f) = (self.shapes[x][0], self.shapes[x][1]);
                    let batch = t
                        .first()
                        .is_some_and(|&b| b == Int::N(0) || self.is_batch(b, 1));
                    match (
                        t.len(),
                        t.iter()
                            .skip(1)
                            .map(|v| match v {
                                Int::N(k) if *k > 0 => Some(*k as usize),
                                _ => None,
                            })
                            .collect::<Option<Vec<usize>>>()
                            .as_deref(),
                    ) {
                        (4, Some(&[c, h, w]))
                            if batch && c == f && h.checked_mul(w) == Some(tokens) =>
                        {
                            let hint = self.hint(n, None);
                            let op = TokensToImage { grid: Pair(h, w) };
                            self.emit(n, hint, op.into(), vec![x.clone()], vec![])
                        }
                        _ => Err(wrong(&format!(
                            "tokens [N, {tokens}, {f}] transposed to [N, {f}, {tokens}] are reshaped only to an image [N, {f}, H, W] with H·W = {tokens}"
                        ))),
                    }
                }
                (Value::Swin(Swin::Scores(sc)), _) => {
                    let (k, s) = self.rows(&sc.q);
                    let (tk, h) = (s[0], s[1] / sc.d);
                    let mut sc = sc.clone();
                    if !sc.split
                        && t.len() == 5
                        && self.is_batch(t[0], 1)
                        && sizes.as_deref() == Some(&[k, h, tk, tk][..])
                    {
                        sc.split = true;
                    } else if sc.split
                        && t.len() == 4
                        && self.is_batch(t[0], k)
                        && sizes.as_deref() == Some(&[h, tk, tk][..])
                    {
                        sc.split = false;
                    } else {
                        return Err(wrong(&format!(
                            "windowed attention scores [N·{k}, {h}, {tk}, {tk}] are reshaped to [N, {k}, {h}, {tk}, {tk}] for the shifted-window mask and back"
                        )));
                    }
                    Ok(Value::Swin(Swin::Scores(sc)))
                }
                (Value::Act(x), _) if windowed => {
                    let Some(Layout::Windows(geom)) = self.layouts.get(x).copied() else {
                        unreachable!()
                    };
                    let p = geom.padded();
                    let Pair(wh, ww) = geom.window;
                    let want = [p.0 / wh, p.1 / ww, wh, ww, self.shapes[x][1]];
                    if !(self.is_batch(t[0], 1) && sizes.as_deref() == Some(&want[..])) {
                        return Err(wrong(&format!(
                            "Swin puts its windows back by a reshape to [N, {}]",
                            dims_text(&want)
                        )));
                    }
                    Ok(Value::Swin(Swin::Folding {
                        x: x.clone(),
                        geom,
                        permuted: false,
                    }))
                }
                (_, Some(view)) => {
                    let f = self.shapes[view.x()][1];
                    match sizes.as_deref() {
                        Some(&[a, wh, b, ww, c])
                            if t.len() == 6
                                && self.is_batch(t[0], 1)
                                && a.checked_mul(wh) == Some(view.size.0)
                                && b.checked_mul(ww) == Some(view.size.1)
                                && c == f =>
                        {
                            Ok(Value::Swin(Swin::Unfolded {
                                view,
                                window: Pair(wh, ww),
                                permuted: false,
                            }))
                        }
                        _ => Err(wrong(&format!(
                            "a Swin feature map [N, {}, {}, {f}] is reshaped only to windows [N, H/wh, wh, W/ww, ww, {f}]",
                            view.size.0, view.size.1
                        ))),
                    }
                }
                (Value::Swin(s), _) => Err(self.swin_err(n, 0, s)),
                _ => Err(wrong("unexpected reshape of a Swin feature map")),
            }
        })())
    }

    /// `Transpose` steps: the window partition's and merge's [0, 1, 3, 2, 4, 5], the grid
    /// back to an image [0, 3, 1, 2], and the normalised keys' [0, 1, 3, 2].
    fn swin_transpose(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<Value, OnnxError>> {
        let perm = match n.ints("perm") {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => return Some(Err(e)),
        };
        let first = inputs.first()?.as_ref()?.clone();
        let swap = perm == [0, 1, 3, 2, 4, 5];
        let ours = match &first {
            Value::Swin(_) => true,
            Value::Act(x) => {
                (perm == [0, 2, 1] && self.shapes[x].len() == 2 && !self.layouts.contains_key(x))
                    || (perm == [0, 3, 1, 2]
                        && matches!(self.layouts.get(x), Some(Layout::Grid(_))))
            }
            _ => false,
        };
        if !ours {
            return None;
        }
        if let Err(e) = n.only(&["perm"]) {
            return Some(Err(e));
        }
        Some(match first {
            Value::Swin(Swin::Unfolded {
                view,
                window,
                permuted: false,
            }) if swap => Ok(Value::Swin(Swin::Unfolded {
                view,
                window,
                permuted: true,
            })),
            Value::Swin(Swin::Folding {
                x,
                geom,
                permuted: false,
            }) if swap => Ok(Value::Swin(Swin::Folding {
                x,
                geom,
                permuted: true,
            })),
            Value::Swin(Swin::Unit { x, d, keys }) if perm == [0, 1, 3, 2] => {
                Ok(Value::Swin(Swin::Unit { x, d, keys: !keys }))
            }
            Value::Act(x)
                if perm == [0, 2, 1]
                    && self.shapes[&x].len() == 2
                    && !self.layouts.contains_key(&x) =>
            {
                Ok(Value::Swin(Swin::TokensT { x }))
            }
            Value::Act(x) if perm == [0, 3, 1, 2] => {
                let Some(Layout::Grid(grid)) = self.layouts.get(&x).copied() else {
                    return None;
                };
                let hint = self.hint(n, None);
                self.emit(n, hint, TokensToImage { grid }.into(), vec![x], vec![])
            }
            Value::Swin(s) => Err(self.swin_err(n, 0, &s)),
            _ => return None,
        })
    }

    /// The steps of the windowed scores: q and k normalised (V2), their product, the
    /// scale, the relative position bias, the shifted-window mask and the softmax.
    fn swin_scores(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Option<Result<Value, OnnxError>> {
        let a = inputs.first().cloned().flatten();
        let b = inputs.get(1).cloned().flatten();
        let windowed = |x: &String| self.layouts.get(x).is_some_and(|l| l.blocks().is_some());
        let konst = |v: &Option<Value>| matches!(v, Some(Value::Const(_)));
        let op = n.op();
        Some(match (op, a, b) {
            (
                "ReduceL2",
                Some(Value::HeadsFirst {
                    x,
                    d,
                    keys: false,
                    scale,
                }),
                _,
            ) if matches!(self.layouts.get(&x), Some(Layout::Windows(_))) => (|| {
                n.only(&["axes", "keepdims", "noop_with_empty_axes"])?;
                let axes = match inputs.get(1).cloned().flatten() {
                    Some(_) => self
                        .konst(n, inputs, 1)?
                        .short_ints()
                        .map_err(|e| n.err(e))?,
                    None => n.ints("axes")?.unwrap_or_default(),
                };
                if scale != 1.0
                    || n.int_or("keepdims", 1)? == 0
                    || axes
                        .iter()
                        .map(|&a| fold::axis(a, 4))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| n.err(e))?
                        != [3]
                {
                    return Err(n.err("cosine attention normalises unscaled q or k heads [N·nW, H, N, d] over the last axis, keeping it (F.normalize)"));
                }
                Ok(Value::Swin(Swin::Norm {
                    x,
                    d,
                    clipped: false,
                    expanded: false,
                }))
            })(),
            (
                "Clip",
                Some(Value::Swin(Swin::Norm {
                    x,
                    d,
                    clipped: false,
                    expanded: false,
                })),
                _,
            ) => (|| {
                n.only(&["min", "max"])?;
                let lo = match inputs.get(1).cloned().flatten() {
                    Some(_) => self
                        .konst(n, inputs, 1)?
                        .scalar_f32()
                        .map_err(|e| n.err(e))?,
                    None => n.float("min")?.unwrap_or(f32::NEG_INFINITY),
                };
                let hi = inputs.get(2).cloned().flatten().is_some() || n.float("max")?.is_some();
                if hi || (lo - 1e-12).abs() > 1e-18 {
                    return Err(n.err(format!(
                        "F.normalize clips the norm from below by 1e-12 only; found min {lo}{}",
                        if hi { " and a max" } else { "" }
                    )));
                }
                Ok(Value::Swin(Swin::Norm {
                    x,
                    d,
                    clipped: true,
                    expanded: false,
                }))
            })(),
            (
                "Expand",
                Some(Value::Swin(Swin::Norm {
                    x,
                    d,
                    clipped: true,
                    expanded: false,
                })),
                _,
            ) => (|| {
                n.only(&[])?;
                // Back to the heads' shape [N·nW, H, N, d] (ones may stand for any axis but d).
                let c = self.konst(n, inputs, 1)?;
                let t = match &*c.data {
                    Data::Int(v) if v.len() == 4 => v.clone(),
                    _ => {
                        return Err(n.err(format!(
                            "expected a target of 4 integers, found shape {:?}",
                            c.dims
                        )));
                    }
                };
                let (k, s) = self.rows(&x);
                let want = [s[1] / d, s[0], d];
                // The batch axis (N·nW, or 1 to broadcast), then [H, N, d], where 1 may stand
                // for H or N (broadcast) but the head size d is expanded to.
                let ok = (t[0] == Int::N(1) || self.is_batch(t[0], k))
                    && t[1..]
                        .iter()
                        .zip(want)
                        .enumerate()
                        .all(|(i, (&a, b))| a == Int::N(b as i64) || (i < 2 && a == Int::N(1)));
                if !ok {
                    return Err(n.err(format!(
                        "F.normalize expands the clipped norm back to the heads' shape [N·nW, {}]; found [{}]",
                        dims_text(&want),
                        describe(&t)
                    )));
                }
                Ok(Value::Swin(Swin::Norm {
                    x,
                    d,
                    clipped: true,
                    expanded: true,
                }))
            })(),
            (
                "Div",
                Some(Value::HeadsFirst {
                    x,
                    d,
                    keys: false,
                    scale,
                }),
                Some(Value::Swin(Swin::Norm {
                    x: y,
                    clipped: true,
                    expanded: true,
                    ..
                })),
            ) if x == y && scale == 1.0 => n
                .only(&[])
                .map(|_| Value::Swin(Swin::Unit { x, d, keys: false })),
            (
                "MatMul",
                Some(Value::Swin(Swin::Unit {
                    x: q,
                    d,
                    keys: false,
                })),
                Some(Value::Swin(Swin::Unit {
                    x: k,
                    d: dk,
                    keys: true,
                })),
            ) => {
                if let Err(e) = n.only(&[]) {
                    return Some(Err(e));
                }
                if d != dk || self.shapes[&q] != self.shapes[&k] {
                    return Some(Err(n.err(
                        "cosine attention multiplies q's and k's normalised heads of one shape",
                    )));
                }
                let h = self.shapes[&q][1] / d;
                Ok(Value::Swin(Swin::Scores(Scores {
                    q,
                    k,
                    d,
                    scale: Scale::Cosine(vec![1.0; h]),
                    bias: None,
                    masked: false,
                    split: false,
                })))
            }
            ("Mul", Some(Value::Swin(Swin::Scores(mut sc))), b)
            | ("Mul", b, Some(Value::Swin(Swin::Scores(mut sc))))
                if konst(&b) =>
            {
                (|| {
                    n.only(&[])?;
                    let k = usize::from(!matches!(inputs.first(), Some(Some(Value::Const(_)))));
                    let c = self.konst(n, inputs, k)?;
                    let h = self.shapes[&sc.q][1] / sc.d;
                    let Data::F32(v) = &*c.data else {
                        return Err(n.err("the scores are scaled by floats"));
                    };
                    let per_head: Vec<f32> = match v.len() {
                    1 => vec![v[0]; h],
                    // [H, 1, 1] (with leading ones): one factor per head; a bare [H] would
                    // broadcast over the keys instead.
                    l if l == h && fits(&c.dims, &[h, 1, 1]) => v.clone(),
                    _ => return Err(n.err(format!("windowed scores [N·nW, {h}, N, N] are scaled by a scalar or one factor per head [{h}, 1, 1], found shape {:?}", c.dims))),
                };
                    if sc.bias.is_some() || sc.masked {
                        return Err(n.err("the scores are scaled before the relative position bias and the mask are added"));
                    }
                    // Dot-product scores become pending only at the bias (above), so only
                    // cosine scores are scaled here.
                    let Scale::Cosine(old) = sc.scale else {
                        return Err(n.err("dot-product windowed scores are scaled before the relative position bias is added"));
                    };
                    sc.scale =
                        Scale::Cosine(old.iter().zip(&per_head).map(|(a, b)| a * b).collect());
                    Ok(Value::Swin(Swin::Scores(sc)))
                })()
            }
            ("Add", Some(Value::Scores { q, k, d, scale }), b)
            | ("Add", b, Some(Value::Scores { q, k, d, scale }))
                if konst(&b) && windowed(&q) =>
            {
                let sc = Scores {
                    q,
                    k,
                    d,
                    scale: Scale::Dot(scale),
                    bias: None,
                    masked: false,
                    split: false,
                };
                self.scores_add(n, inputs, sc)
            }
            ("Add", Some(Value::Swin(Swin::Scores(sc))), b)
            | ("Add", b, Some(Value::Swin(Swin::Scores(sc))))
                if konst(&b) =>
            {
                self.scores_add(n, inputs, sc)
            }
            ("Softmax", Some(Value::Swin(Swin::Scores(sc))), _) => (|| {
                n.only(&["axis"])?;
                let default = if self.opset >= 13 { -1 } else { 1 };
                // Scores are [N·nW, H, N, N], or MaxViT's [N, G, H, N, N].
                let rank = if matches!(self.layouts.get(&sc.q), Some(Layout::Groups { .. })) {
                    5
                } else {
                    4
                };
                let axis = fold::axis(n.int_or("axis", default)?, rank)
                    .map_err(|e| n.attr_err("axis", e))?;
                if axis != rank - 1 || sc.split {
                    return Err(n.err("the windowed attention's softmax runs over the keys (the last axis of the scores)"));
                }
                // A dot-product scale other than 1/√head_dim (MaxViT's 1/√E) is kept.
                let (cosine, scale) = match sc.scale {
                    Scale::Dot(s) => {
                        let usual = 1.0 / (sc.d as f64).sqrt();
                        if !(s.is_finite() && s > 0.0) {
                            return Err(n.err(format!("the windowed attention scores are scaled by {s}, which is no positive scale")));
                        }
                        let s = super::f32_to_f64(s as f32);
                        (None, (((s - usual) / usual).abs() > 1e-6).then_some(s))
                    }
                    Scale::Cosine(v) => (Some(v), None),
                };
                self.attn_extra.insert(
                    sc.q.clone(),
                    Extra {
                        bias: sc.bias,
                        masked: sc.masked,
                        cosine,
                        scale,
                    },
                );
                Ok(Value::Weights {
                    q: sc.q,
                    k: sc.k,
                    d: sc.d,
                })
            })(),
            (_, a, b) => {
                for (k, v) in [a, b].iter().enumerate() {
                    if let Some(Value::Swin(s)) = v {
                        return Some(Err(self.swin_err(n, k, s)));
                    }
                }
                return None;
            }
        })
    }

    /// `Add` of a constant to windowed scores: the relative position bias `[1, H, N, N]`,
    /// or, on the scores split by window, the shifted-window mask `[1, nW, 1, N, N]`.
    fn scores_add(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
        mut sc: Scores,
    ) -> Result<Value, OnnxError> {
        n.only(&[])?;
        let k = usize::from(!matches!(inputs.first(), Some(Some(Value::Const(_)))));
        let c = self.konst(n, inputs, k)?;
        let (windows, s) = self.rows(&sc.q);
        let (t, h) = (s[0], s[1] / sc.d);
        let Some(geom) = self.layouts.get(&sc.q).and_then(Layout::blocks) else {
            return Err(n.err("expected windowed scores"));
        };
        if !matches!(&*c.data, Data::F32(_)) {
            return Err(n.err("the scores are added float constants"));
        }
        if sc.split {
            let want = geom.attention(false).mask();
            let Data::F32(v) = &*c.data else {
                unreachable!()
            };
            let ok = fits(&c.dims, &[windows, 1, t, t]) && want.as_deref() == Some(&v[..]);
            if sc.masked || !ok {
                return Err(n.err(format!(
                    "the constant [{}] added to the scores split by window [N, {windows}, {h}, {t}, {t}] must be the shifted-window mask of the partition (windows {}×{} of the {}×{} map padded to {}×{}, shifted by {}×{}): [1, {windows}, 1, {t}, {t}] of 0 within a region and −100 across regions",
                    dims_text(&c.dims),
                    geom.window.0, geom.window.1, geom.grid.0, geom.grid.1, geom.padded().0, geom.padded().1, geom.shift.0, geom.shift.1
                )));
            }
            sc.masked = true;
        } else {
            if sc.bias.is_some() || sc.masked || !fits(&c.dims, &[h, t, t]) {
                return Err(n.err(format!(
                    "a constant added to windowed scores [N·nW, {h}, {t}, {t}] is the relative position bias [1, {h}, {t}, {t}] (once, before the mask); found [{}]",
                    dims_text(&c.dims)
                )));
            }
            sc.bias = Some(Rc::new(c.view(vec![h, t, t])));
        }
        Ok(Value::Swin(Swin::Scores(sc)))
    }

    /// The IR attention for q's node `q` with heads of `d`: windowed, with its bias and
    /// cosine scale, where the pattern saw them.
    pub(super) fn attention_node(
        &mut self,
        n: &NodeRef,
        q: &str,
        d: usize,
    ) -> Result<(Op, Params), OnnxError> {
        // Read once: the attention's node takes what its pattern saw.
        let extra = self.attn_extra.remove(q).unwrap_or_default();
        let geom = self.layouts.get(q).and_then(Layout::blocks);
        let Some(geom) = geom else {
            if extra.bias.is_some() || extra.cosine.is_some() {
                return Err(n.err("a relative position bias or cosine scores are supported within Swin windows only"));
            }
            let op = Attention {
                scale: extra.scale,
                ..Attention::new(d)
            };
            return Ok((op.into(), vec![]));
        };
        if zero(geom.shift) == extra.masked {
            return Err(n.err(if extra.masked {
                "the shifted-window mask is added to windows that are not shifted"
            } else {
                "shifted windows need the shifted-window mask added to their scores"
            }));
        }
        let heads = self.shapes[q][1] / d;
        // In the order of `Attention::params` (both are weights, which `emit` matches by
        // kind in order; a swap would still be refused by their shapes).
        let mut params = Vec::new();
        if let Some(b) = &extra.bias {
            params.push((ParamKind::Weight, b.clone()));
        }
        if let Some(scale) = &extra.cosine {
            if let Some(bad) = scale
                .iter()
                .find(|&&s| !(s > 0.0 && s <= 100.0 * (1.0 + 1e-6)))
            {
                return Err(n.err(format!("a cosine attention's logit scale is exp(min(s, ln 100)) in (0, 100]; found {bad}")));
            }
            let logit: Vec<f32> = scale.iter().map(|s| s.ln()).collect();
            params.push((ParamKind::Weight, Rc::new(Const::f32(vec![heads], logit))));
        }
        let op = Attention {
            head_dim: d,
            heads: (!params.is_empty()).then_some(heads),
            windows: Some(geom.attention(extra.bias.is_some())),
            cosine: extra.cosine.is_some(),
            scale: extra.scale,
        };
        Ok((op.into(), params))
    }

    /// An error for node `n` reading the pending step `s` (input `k`) in a way the pattern
    /// does not.
    pub(super) fn swin_err(&self, n: &NodeRef, k: usize, s: &Swin) -> OnnxError {
        let what = match s {
            Swin::View(v) => format!(
                "a Swin feature map {}×{} (padded or shifted) that only the window partition (Reshape [N, pH/wh, wh, pW/ww, ww, C]), a cyclic shift or crop (Slice), or patch merging's strided slices may read",
                v.size.0, v.size.1
            ),
            Swin::Part { axis, start, end, .. } => format!("the slice {start}..{end} on axis {axis} of a Swin feature map, which only the Concat of a cyclic shift or a crop may read"),
            Swin::Strided { axis, .. } => format!("a strided slice on axis {axis} of a Swin feature map, which only the strided Slice of the other axis (patch merging) may read"),
            Swin::Unfolded { permuted, .. } => format!("a Swin feature map split into windows{}, which only {} may read", if *permuted { " and permuted" } else { "" }, if *permuted { "the Reshape to [N·nW, wh·ww, C]" } else { "a Transpose [0, 1, 3, 2, 4, 5]" }),
            Swin::Folding { permuted, .. } => format!("Swin windows being put back{}, which only {} may read", if *permuted { " and permuted" } else { "" }, if *permuted { "the Reshape to [N, pH, pW, C]" } else { "a Transpose [0, 1, 3, 2, 4, 5]" }),
            Swin::Norm { .. } => "the norm of cosine attention's q or k heads, which only Clip (min 1e-12), Expand and the Div of the heads may read".to_owned(),
            Swin::Unit { .. } => "cosine attention's normalised q or k heads, which only the Transpose of k and the MatMul of the scores may read".to_owned(),
            Swin::TokensT { .. } => "tokens transposed to [N, F, T], which only a Reshape to an image [N, F, H, W] may read".to_owned(),
            Swin::ImgUnfolded { permuted, .. } => format!("an image viewed as windows{}, which only {} may read", if *permuted { " and permuted" } else { "" }, if *permuted { "the Reshape to [N, nW, P², C] (MaxViT's partition)" } else { "a Transpose [0, 2, 4, 3, 5, 1] or a Reshape back to an image or other windows" }),
            Swin::GroupHeads { .. } => "MaxViT's heads [N, G, T, H, d], which only a Transpose [0, 1, 3, 2, 4] may read".to_owned(),
            Swin::GroupFold { .. } => "MaxViT's windows reshaped back to [N, H/P, W/P, P, P, C], which only a Transpose [0, 5, 1, 3, 2, 4] may read".to_owned(),
            Swin::Scores(_) => "windowed attention scores, which only the scale (Mul), the relative position bias and the mask (Add of constants, Reshape [N, nW, H, N, N] and back) and the Softmax may read".to_owned(),
        };
        n.err(format!(
            "input {k} ('{}') is {what}",
            n.node.input.get(k).map_or("", String::as_str)
        ))
    }
}

/// Whether both sizes of `p` are 0.
fn zero(p: Pair) -> bool {
    p == Pair(0, 0)
}

/// Whether a constant of shape `dims` is `want` with leading axes of size 1 (as it
/// broadcasts against the batch).
fn fits(dims: &[usize], want: &[usize]) -> bool {
    dims.len() >= want.len()
        && dims[..dims.len() - want.len()].iter().all(|&d| d == 1)
        && dims[dims.len() - want.len()..] == *want
}
