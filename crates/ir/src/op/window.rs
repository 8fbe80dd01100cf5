//! Windows over a grid of tokens (Swin Transformer): `window_partition` (a feature map's
//! tokens, zero-padded and cyclically shifted, regrouped window by window), `window_merge`
//! (its inverse) and `grid_stride` (every `stride`-th row and column of a zero-padded grid,
//! one quarter of a patch merging). A feature map `[H, W, C]` is tokens `[H·W, C]` in
//! row-major order; each op only moves (or zero-fills) whole tokens, so its channels follow
//! its input ([`Channels::Follow`]).
//!
//! Every op here is a fixed gather of tokens: [`WindowPartition::source_tokens`],
//! [`WindowMerge::source_tokens`] and [`GridStride::source_tokens`] say, for each output
//! token, which input token it is (`None`: a zero of the padding). The runtime and the ONNX
//! export gather by these indices; the PyTorch export writes torchvision's pad, roll and
//! view/permute instead, so the two are checked against each other.

use serde::{Deserialize, Serialize};

use super::onnx::{NameBase, OnnxAttr, OnnxConst, OnnxContext, OnnxRef, OnnxSpec};
use super::roles::{AfterSurgery, Scoring};
use super::{
    Arity, Channels, Contract, Op, Pair, ParamSpec, Role, ShapeInput, bounded, checked_numel,
    nonzero, tokens,
};

/// `ceil(n / k) · k`: `n` zero-padded to a multiple of `k` (`k ≥ 1`).
fn padded(n: usize, k: usize) -> usize {
    n.div_ceil(k) * k
}

/// Checks a grid and a window (or stride) and that `shift` (or `offset`) is below it.
fn check_grid(grid: Pair, window: Pair, shift: Pair, names: [&str; 3]) -> Result<(), String> {
    let [g, w, s] = names;
    for (what, v) in [(g, grid.0), (g, grid.1), (w, window.0), (w, window.1)] {
        nonzero(what, v)?;
        bounded(what, v)?;
    }
    if shift.0 >= window.0 || shift.1 >= window.1 {
        return Err(format!(
            "{s} {shift} must be below the {w} {window} in both directions"
        ));
    }
    let padded_grid = [padded(grid.0, window.0), padded(grid.1, window.1)];
    checked_numel("the padded grid", &padded_grid).map(|_| ())
}

/// The tokens `[H·W, F]` of input 0, checked against `grid`; returns `F`.
fn grid_tokens(inputs: &[ShapeInput], grid: Pair, op: &str) -> Result<usize, String> {
    let (t, f) = tokens(inputs, 0)?;
    if t != grid.0 * grid.1 {
        return Err(format!(
            "{op} reads a grid of {grid} = {} tokens, but '{}' has {t}",
            grid.0 * grid.1,
            inputs[0].0
        ));
    }
    Ok(f)
}

/// ONNX for a gather of tokens by `index` (`None`: a zero token): `[N, T, F]`, padded with
/// one zero token at the end when some output token is a zero (`Pad`), then `Gather` on the
/// token axis.
fn onnx_gather(index: &[Option<usize>], tokens: usize) -> OnnxSpec {
    let mut s = OnnxSpec::default();
    let zeros = index.iter().any(Option::is_none);
    let idx = s.constant(
        ".index",
        OnnxConst::I64(index.iter().map(|i| i.unwrap_or(tokens) as i64).collect()),
    );
    let source = if zeros {
        let pads = s.constant(".pads", OnnxConst::I64(vec![0, 0, 0, 0, 1, 0]));
        let padded = s.temp(NameBase::Value, ".padded");
        s.node(
            ".pad",
            "Pad",
            vec![OnnxRef::Input(0), pads],
            Some(padded),
            vec![],
        );
        OnnxRef::Decl(padded)
    } else {
        OnnxRef::Input(0)
    };
    s.node(
        "",
        "Gather",
        vec![source, idx],
        None,
        vec![("axis", OnnxAttr::Int(1))],
    );
    s
}

/// Python that zero-pads `x` (`[N, H, W, F]`) at the bottom and right to `[N, pH, pW, F]`.
fn py_pad(x: String, grid: Pair, to: Pair) -> String {
    if grid == to {
        x
    } else {
        format!(
            "torch.nn.functional.pad({x}, (0, 0, 0, {}, 0, {}))",
            to.1 - grid.1,
            to.0 - grid.0
        )
    }
}

/// Python that rolls `x` (`[N, H, W, F]`) by `(dh, dw)` over (rows, columns).
fn py_roll(x: String, dh: i64, dw: i64) -> String {
    if dh == 0 && dw == 0 {
        x
    } else {
        format!("torch.roll({x}, shifts=({dh}, {dw}), dims=(1, 2))")
    }
}

/// Swin Transformer's window partition: tokens `[H·W, F]` of a grid `[H, W]` (row-major) to
/// `[nW·wh·ww, F]`. The grid is zero-padded at the bottom and right to `pH = ceil(H/wh)·wh`
/// rows and `pW = ceil(W/ww)·ww` columns, rolled by `(−sh, −sw)` over (rows, columns)
/// (`torch.roll` semantics: padded-and-rolled position `(R, C)` holds grid position
/// `((R + sh) mod pH, (C + sw) mod pW)`), and cut into `nW = (pH/wh)·(pW/ww)` windows of
/// `wh × ww` tokens: windows in row-major window order, the tokens of a window row-major.
/// Exactly torchvision's `shifted_window_attention` before its qkv projection
/// (`F.pad`, `torch.roll`, `view`/`permute`/`reshape`). Note that torchvision sets a shift to
/// 0 where the window covers the padded grid; the importer writes that shift here.
///
/// Channel behaviour: [`Channels::Follow`]: every output token is an input token or zeros.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowPartition {
    /// The grid `[H, W]` of the input tokens.
    pub grid: Pair,
    /// The window `[wh, ww]`.
    pub window: Pair,
    /// The cyclic shift `[sh, sw]`, each below the window.
    #[serde(default = "Pair::zero", skip_serializing_if = "Pair::is_zero")]
    pub shift: Pair,
}

impl WindowPartition {
    /// The padded grid `[pH, pW]`.
    pub fn padded_grid(&self) -> Pair {
        Pair(
            padded(self.grid.0, self.window.0),
            padded(self.grid.1, self.window.1),
        )
    }

    /// For every output token, the input token it is (`None`: a zero of the padding).
    pub fn source_tokens(&self) -> Vec<Option<usize>> {
        let Pair(h, w) = self.grid;
        let Pair(ph, pw) = self.padded_grid();
        let Pair(wh, ww) = self.window;
        let Pair(sh, sw) = self.shift;
        let mut out = Vec::with_capacity(ph * pw);
        for a in 0..ph / wh {
            for b in 0..pw / ww {
                for i in 0..wh {
                    for j in 0..ww {
                        let r = (a * wh + i + sh) % ph;
                        let c = (b * ww + j + sw) % pw;
                        out.push((r < h && c < w).then_some(r * w + c));
                    }
                }
            }
        }
        out
    }
}

impl Contract for WindowPartition {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        Ok(onnx_gather(
            &self.source_tokens(),
            self.grid.0 * self.grid.1,
        ))
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Reshape
    }
    fn check(&self) -> Result<(), String> {
        check_grid(
            self.grid,
            self.window,
            self.shift,
            ["grid", "window", "shift"],
        )
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let f = grid_tokens(inputs, self.grid, "window_partition")?;
        let Pair(ph, pw) = self.padded_grid();
        Ok(vec![ph * pw, f])
    }
    follows_its_input!();
    fn torch_module(&self) -> Option<String> {
        None
    }
    fn torch_forward(&self, inputs: &[String], _module: &str) -> String {
        // [N, H·W, F] → [N, H, W, F] → pad → roll → [N, pH/wh, wh, pW/ww, ww, F] → windows.
        let (grid, to, win) = (self.grid, self.padded_grid(), self.window);
        let x = format!("{}.unflatten(1, ({}, {}))", inputs[0], grid.0, grid.1);
        let x = py_roll(
            py_pad(x, grid, to),
            -(self.shift.0 as i64),
            -(self.shift.1 as i64),
        );
        format!(
            "{x}.unflatten(2, ({}, {})).unflatten(1, ({}, {})).permute(0, 1, 3, 2, 4, 5).flatten(1, 4)",
            to.1 / win.1,
            win.1,
            to.0 / win.0,
            win.0
        )
    }
}

/// The inverse of [`WindowPartition`] with the same attributes: tokens `[nW·wh·ww, F]` of
/// windows to the grid's tokens `[H·W, F]`: the windows put back in place, the grid rolled by
/// `(+sh, +sw)` and cropped to `H × W` (torchvision's `shifted_window_attention` after its
/// output projection).
///
/// Channel behaviour: [`Channels::Follow`]: every output token is an input token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowMerge {
    /// The grid `[H, W]` of the output tokens.
    pub grid: Pair,
    /// The window `[wh, ww]`.
    pub window: Pair,
    /// The cyclic shift `[sh, sw]` undone, each below the window.
    #[serde(default = "Pair::zero", skip_serializing_if = "Pair::is_zero")]
    pub shift: Pair,
}

impl WindowMerge {
    fn partition(&self) -> WindowPartition {
        WindowPartition {
            grid: self.grid,
            window: self.window,
            shift: self.shift,
        }
    }

    /// For every output token (grid position `r·W + c`), the input token it is.
    pub fn source_tokens(&self) -> Vec<Option<usize>> {
        let mut out = vec![None; self.grid.0 * self.grid.1];
        for (position, source) in self.partition().source_tokens().into_iter().enumerate() {
            if let Some(t) = source {
                out[t] = Some(position);
            }
        }
        out
    }
}

impl Contract for WindowMerge {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        let Pair(ph, pw) = self.partition().padded_grid();
        Ok(onnx_gather(&self.source_tokens(), ph * pw))
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Reshape
    }
    fn check(&self) -> Result<(), String> {
        check_grid(
            self.grid,
            self.window,
            self.shift,
            ["grid", "window", "shift"],
        )
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let (t, f) = tokens(inputs, 0)?;
        let Pair(ph, pw) = self.partition().padded_grid();
        if t != ph * pw {
            return Err(format!(
                "window_merge reads the {} tokens of the windows of {} over the padded grid [{ph}, {pw}], but '{}' has {t}",
                ph * pw,
                self.window,
                inputs[0].0
            ));
        }
        Ok(vec![self.grid.0 * self.grid.1, f])
    }
    follows_its_input!();
    fn torch_module(&self) -> Option<String> {
        None
    }
    fn torch_forward(&self, inputs: &[String], _module: &str) -> String {
        // [N, nW·N, F] → [N, pH/wh, pW/ww, wh, ww, F] → [N, pH, pW, F] → roll back → crop.
        let (grid, to, win) = (self.grid, self.partition().padded_grid(), self.window);
        let x = format!(
            "{}.unflatten(1, ({}, {}, {}, {})).permute(0, 1, 3, 2, 4, 5).flatten(3, 4).flatten(1, 2)",
            inputs[0],
            to.0 / win.0,
            to.1 / win.1,
            win.0,
            win.1
        );
        let x = py_roll(x, self.shift.0 as i64, self.shift.1 as i64);
        if grid == to {
            format!("{x}.flatten(1, 2)")
        } else {
            format!("{x}[:, :{}, :{}].flatten(1, 2)", grid.0, grid.1)
        }
    }
}

/// Every `stride`-th row and column of a grid of tokens, from `offset`: tokens `[H·W, F]` of
/// a grid `[H, W]` (row-major), zero-padded at the bottom and right to multiples of the
/// stride, keeping rows `r, r + sr, …` and columns `c, c + sc, …` (row-major) →
/// `[ceil(H/sr)·ceil(W/sc), F]`. Torchvision's `PatchMerging` is four of these (offsets
/// `[0, 0]`, `[1, 0]`, `[0, 1]`, `[1, 1]` with stride `[2, 2]`: `x[..., 0::2, 0::2, :]`, …)
/// concatenated on the features.
///
/// Channel behaviour: [`Channels::Follow`]: every output token is an input token or zeros.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridStride {
    /// The grid `[H, W]` of the input tokens.
    pub grid: Pair,
    /// The first row and column kept, each below the stride.
    #[serde(default = "Pair::zero", skip_serializing_if = "Pair::is_zero")]
    pub offset: Pair,
    /// The step `[sr, sc]` between kept rows and columns.
    pub stride: Pair,
}

impl GridStride {
    /// The output grid `[ceil(H/sr), ceil(W/sc)]`.
    pub fn out_grid(&self) -> Pair {
        Pair(
            self.grid.0.div_ceil(self.stride.0),
            self.grid.1.div_ceil(self.stride.1),
        )
    }

    /// For every output token, the input token it is (`None`: a zero of the padding).
    pub fn source_tokens(&self) -> Vec<Option<usize>> {
        let Pair(h, w) = self.grid;
        let Pair(oh, ow) = self.out_grid();
        let mut out = Vec::with_capacity(oh * ow);
        for i in 0..oh {
            for j in 0..ow {
                let r = self.offset.0 + i * self.stride.0;
                let c = self.offset.1 + j * self.stride.1;
                out.push((r < h && c < w).then_some(r * w + c));
            }
        }
        out
    }
}

impl Contract for GridStride {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        Ok(onnx_gather(
            &self.source_tokens(),
            self.grid.0 * self.grid.1,
        ))
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Reshape
    }
    fn check(&self) -> Result<(), String> {
        check_grid(
            self.grid,
            self.stride,
            self.offset,
            ["grid", "stride", "offset"],
        )
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let f = grid_tokens(inputs, self.grid, "grid_stride")?;
        let Pair(oh, ow) = self.out_grid();
        Ok(vec![oh * ow, f])
    }
    follows_its_input!();
    fn torch_module(&self) -> Option<String> {
        None
    }
    fn torch_forward(&self, inputs: &[String], _module: &str) -> String {
        let grid = self.grid;
        let to = Pair(padded(grid.0, self.stride.0), padded(grid.1, self.stride.1));
        let x = format!("{}.unflatten(1, ({}, {}))", inputs[0], grid.0, grid.1);
        format!(
            "{}[:, {}::{}, {}::{}].flatten(1, 2)",
            py_pad(x, grid, to),
            self.offset.0,
            self.stride.0,
            self.offset.1,
            self.stride.1
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3 × 3 grid (tokens 0..9), windows 2 × 2, shift [1, 1]: padded to 4 × 4, rolled by
    /// (−1, −1). Written out by hand: padded-and-rolled position (R, C) holds grid position
    /// ((R + 1) mod 4, (C + 1) mod 4), a zero where that row or column is 3.
    #[test]
    fn window_partition_pads_rolls_and_cuts_as_written_by_hand() {
        let p = WindowPartition {
            grid: Pair(3, 3),
            window: Pair(2, 2),
            shift: Pair(1, 1),
        };
        let z = None;
        let s = Some;
        // Rolled grid rows (R = 0..4) as grid tokens:
        // R0: (1,1)=4 (1,2)=5 (1,3)=z (1,0)=3
        // R1: (2,1)=7 (2,2)=8 z        (2,0)=6
        // R2: z        z       z        z
        // R3: (0,1)=1 (0,2)=2 z        (0,0)=0
        let expected = vec![
            s(4),
            s(5),
            s(7),
            s(8), // window (0, 0)
            z,
            s(3),
            z,
            s(6), // window (0, 1)
            z,
            z,
            s(1),
            s(2), // window (1, 0)
            z,
            z,
            z,
            s(0), // window (1, 1)
        ];
        assert_eq!(p.source_tokens(), expected);
        let m = WindowMerge {
            grid: Pair(3, 3),
            window: Pair(2, 2),
            shift: Pair(1, 1),
        };
        assert_eq!(
            m.source_tokens(),
            [15, 10, 11, 5, 0, 1, 7, 2, 3].map(Some).to_vec()
        );
    }

    /// Merging after partitioning gives every grid token back, for grids that need padding
    /// in either direction, shifts in either direction, and windows as large as the grid.
    #[test]
    fn window_merge_after_window_partition_is_the_identity() {
        for (grid, window, shift) in [
            (Pair(3, 3), Pair(2, 2), Pair(1, 1)),
            (Pair(10, 10), Pair(4, 4), Pair(2, 2)),
            (Pair(7, 5), Pair(3, 2), Pair(2, 0)),
            (Pair(4, 6), Pair(4, 6), Pair(0, 3)),
            (Pair(1, 9), Pair(1, 4), Pair(0, 1)),
        ] {
            let p = WindowPartition {
                grid,
                window,
                shift,
            };
            let m = WindowMerge {
                grid,
                window,
                shift,
            };
            let windows = p.source_tokens();
            let back: Vec<Option<usize>> = m
                .source_tokens()
                .into_iter()
                .map(|s| windows[s.expect("every grid token is in a window")])
                .collect();
            let all: Vec<Option<usize>> = (0..grid.0 * grid.1).map(Some).collect();
            assert_eq!(back, all, "{grid} {window} {shift}");
            // Every grid token appears exactly once among the windows; the rest is padding.
            let Pair(ph, pw) = p.padded_grid();
            assert_eq!(windows.len(), ph * pw);
            let zeros = windows.iter().filter(|s| s.is_none()).count();
            assert_eq!(zeros, ph * pw - grid.0 * grid.1, "{grid} {window} {shift}");
        }
    }

    #[test]
    fn window_partition_without_shift_or_padding_is_a_plain_regrouping() {
        let p = WindowPartition {
            grid: Pair(2, 4),
            window: Pair(2, 2),
            shift: Pair(0, 0),
        };
        assert_eq!(
            p.source_tokens(),
            [0, 1, 4, 5, 2, 3, 6, 7].map(Some).to_vec()
        );
    }

    #[test]
    fn grid_stride_keeps_every_other_row_and_column_with_zero_padding() {
        let g = |r, c| GridStride {
            grid: Pair(3, 3),
            offset: Pair(r, c),
            stride: Pair(2, 2),
        };
        assert_eq!(g(0, 0).source_tokens(), [0, 2, 6, 8].map(Some).to_vec());
        assert_eq!(g(1, 0).source_tokens(), vec![Some(3), Some(5), None, None]);
        assert_eq!(g(1, 1).source_tokens(), vec![Some(4), None, None, None]);
    }

    #[test]
    fn shifts_and_offsets_must_be_below_the_window() {
        let p = WindowPartition {
            grid: Pair(4, 4),
            window: Pair(2, 2),
            shift: Pair(2, 0),
        };
        assert!(p.check().unwrap_err().contains("below"));
        let g = GridStride {
            grid: Pair(4, 4),
            offset: Pair(0, 0),
            stride: Pair(0, 2),
        };
        assert!(g.check().unwrap_err().contains("at least 1"));
    }
}

/// The tokens of `blocks` consecutive blocks of `size` tokens each, transposed: `[B·S, F]` →
/// `[S·B, F]`, output token `s·B + b` being input token `b·S + s` (`x.unflatten(1, (B, S))
/// .transpose(1, 2).flatten(1, 2)`). After a [`WindowPartition`] it groups the tokens at the
/// same place of every window (MaxViT's grid attention: the windows' `SwapAxes(-2, -3)`); the
/// same op with `blocks` and `size` swapped is its inverse.
///
/// Channel behaviour: [`Channels::Follow`]: every output token is an input token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowTranspose {
    /// The number of blocks `B` of the input.
    pub blocks: usize,
    /// The tokens `S` of each input block.
    pub size: usize,
}

impl Contract for WindowTranspose {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        // [N, B·S, F] → Reshape [N, B, S, F] → Transpose [0, 2, 1, 3] → Reshape [N, S·B, F].
        let s = ctx.inputs.first().copied().unwrap_or(&[]);
        let [t, f] = s[..] else {
            return Err(format!("expected tokens [T, F], found {s:?}"));
        };
        let (b, n) = (self.blocks as i64, self.size as i64);
        let mut spec = OnnxSpec::default();
        let split = spec.constant(".blocks", OnnxConst::I64(vec![0, b, n, f as i64]));
        let back = spec.constant(".shape", OnnxConst::I64(vec![0, t as i64, f as i64]));
        let [r, tr] = [".split", ".t"].map(|suffix| spec.temp(NameBase::Value, suffix));
        spec.node(
            ".split",
            "Reshape",
            vec![OnnxRef::Input(0), split],
            Some(r),
            vec![],
        );
        spec.node(
            ".t",
            "Transpose",
            vec![OnnxRef::Decl(r)],
            Some(tr),
            vec![("perm", OnnxAttr::Ints(vec![0, 2, 1, 3]))],
        );
        spec.node("", "Reshape", vec![OnnxRef::Decl(tr), back], None, vec![]);
        Ok(spec)
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Reshape
    }
    fn check(&self) -> Result<(), String> {
        nonzero("blocks", self.blocks)?;
        nonzero("size", self.size)?;
        bounded("blocks", self.blocks)?;
        bounded("size", self.size)
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let (t, f) = tokens(inputs, 0)?;
        if self.blocks.checked_mul(self.size) != Some(t) {
            return Err(format!(
                "window_transpose of {} blocks of {} tokens, but '{}' has {t} tokens",
                self.blocks, self.size, inputs[0].0
            ));
        }
        Ok(vec![t, f])
    }
    follows_its_input!();
    fn torch_module(&self) -> Option<String> {
        None
    }
    fn torch_forward(&self, inputs: &[String], _module: &str) -> String {
        format!(
            "{}.unflatten(1, ({}, {})).transpose(1, 2).flatten(1, 2)",
            inputs[0], self.blocks, self.size
        )
    }
}
