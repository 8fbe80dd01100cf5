//! `max_pool2d`, `avg_pool2d` and `adaptive_avg_pool2d`.

use serde::{Deserialize, Serialize};

use super::onnx::{NameBase, OnnxAttr, OnnxConst, OnnxContext, OnnxRef, OnnxSpec, ints_pair, pads};
use super::roles::{AfterSurgery, Scoring};
use super::{
    Arity, Channels, Contract, Op, Pair, ParamSpec, Role, ShapeInput, bounded, image, is_false,
    is_true, nonzero, out_len, py_bool, py_pair, too_small, yes,
};

/// Shared checks of the windowed poolings.
fn window_check(kernel_size: Pair, stride: Option<Pair>, padding: Pair) -> Result<(), String> {
    nonzero("kernel_size", kernel_size.min())?;
    bounded("kernel_size", kernel_size.0.max(kernel_size.1))?;
    if let Some(s) = stride {
        nonzero("stride", s.min())?;
        bounded("stride", s.0.max(s.1))?;
    }
    if padding.0.saturating_mul(2) > kernel_size.0 || padding.1.saturating_mul(2) > kernel_size.1 {
        return Err(format!(
            "padding {padding} must be at most half the kernel size {kernel_size}"
        ));
    }
    Ok(())
}

/// Shared shape rule of the windowed poolings.
fn window_infer(
    inputs: &[ShapeInput],
    kernel_size: Pair,
    stride: Option<Pair>,
    padding: Pair,
    ceil_mode: bool,
) -> Result<Vec<usize>, String> {
    let (c, h, w) = image(inputs, 0)?;
    let s = stride.unwrap_or(kernel_size);
    let oh = out_len(h, kernel_size.0, s.0, padding.0, 1, ceil_mode)?;
    let ow = out_len(w, kernel_size.1, s.1, padding.1, 1, ceil_mode)?;
    match (oh, ow) {
        (Some(oh), Some(ow)) => Ok(vec![c, oh, ow]),
        _ => Err(too_small(inputs[0], kernel_size)),
    }
}

/// Max pooling (`torch.nn.MaxPool2d`). Channel behaviour: follows its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPool2d {
    /// Window.
    pub kernel_size: Pair,
    /// Stride (default: the window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<Pair>,
    /// Padding (default 0).
    #[serde(default = "Pair::zero", skip_serializing_if = "Pair::is_zero")]
    pub padding: Pair,
    /// Round the output size up instead of down (default false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ceil_mode: bool,
}

impl MaxPool2d {
    /// A square window `k` with stride `k`, no padding.
    pub fn new(k: usize) -> Self {
        MaxPool2d {
            kernel_size: Pair::square(k),
            stride: None,
            padding: Pair::zero(),
            ceil_mode: false,
        }
    }
}

impl Contract for MaxPool2d {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring {
            saved_for_backward: 2,
            ..Scoring::default()
        }
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        Ok(OnnxSpec::single(
            "MaxPool",
            window_attrs(self.kernel_size, self.stride, self.padding, self.ceil_mode),
        ))
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Pooling
    }
    fn check(&self) -> Result<(), String> {
        window_check(self.kernel_size, self.stride, self.padding)
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        window_infer(
            inputs,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
        )
    }
    follows_its_input!();
    fn torch_module(&self) -> Option<String> {
        Some(format!(
            "nn.MaxPool2d(kernel_size={}, stride={}, padding={}, ceil_mode={})",
            py_pair(self.kernel_size),
            py_pair(self.stride.unwrap_or(self.kernel_size)),
            py_pair(self.padding),
            py_bool(self.ceil_mode)
        ))
    }
}

/// Average pooling (`torch.nn.AvgPool2d`). Channel behaviour: follows its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvgPool2d {
    /// Window.
    pub kernel_size: Pair,
    /// Stride (default: the window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<Pair>,
    /// Padding (default 0).
    #[serde(default = "Pair::zero", skip_serializing_if = "Pair::is_zero")]
    pub padding: Pair,
    /// Round the output size up instead of down (default false).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ceil_mode: bool,
    /// Count padded zeros in the average (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub count_include_pad: bool,
}

impl AvgPool2d {
    /// A square window `k` with stride `k`, no padding.
    pub fn new(k: usize) -> Self {
        AvgPool2d {
            kernel_size: Pair::square(k),
            stride: None,
            padding: Pair::zero(),
            ceil_mode: false,
            count_include_pad: true,
        }
    }
}

impl Contract for AvgPool2d {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        Ok(OnnxSpec::single(
            "AveragePool",
            [
                window_attrs(self.kernel_size, self.stride, self.padding, self.ceil_mode),
                vec![(
                    "count_include_pad",
                    OnnxAttr::Int(i64::from(self.count_include_pad)),
                )],
            ]
            .concat(),
        ))
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Pooling
    }
    fn check(&self) -> Result<(), String> {
        window_check(self.kernel_size, self.stride, self.padding)
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        window_infer(
            inputs,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
        )
    }
    follows_its_input!();
    fn torch_module(&self) -> Option<String> {
        Some(format!(
            "nn.AvgPool2d(kernel_size={}, stride={}, padding={}, ceil_mode={}, count_include_pad={})",
            py_pair(self.kernel_size),
            py_pair(self.stride.unwrap_or(self.kernel_size)),
            py_pair(self.padding),
            py_bool(self.ceil_mode),
            py_bool(self.count_include_pad)
        ))
    }
}

/// Adaptive average pooling to a fixed output size (`torch.nn.AdaptiveAvgPool2d`). Channel
/// behaviour: follows its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveAvgPool2d {
    /// Output (height, width).
    pub output_size: Pair,
}

impl Contract for AdaptiveAvgPool2d {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        if self.output_size == Pair(1, 1) {
            return Ok(OnnxSpec::single("GlobalAveragePool", vec![]));
        }
        let s = ctx.inputs.first().copied().unwrap_or(&[]);
        let (h, w) = match s {
            [_, h, w] => (*h, *w),
            _ => (0, 0),
        };
        let (oh, ow) = (self.output_size.0, self.output_size.1);
        if h == 0 || w == 0 {
            return Err(format!(
                "adaptive average pooling needs an image input [C, H, W], found {s:?}"
            ));
        }
        if h.is_multiple_of(oh) && w.is_multiple_of(ow) {
            let k = vec![(h / oh) as i64, (w / ow) as i64];
            return Ok(OnnxSpec::single(
                "AveragePool",
                vec![
                    ("kernel_shape", OnnxAttr::Ints(k.clone())),
                    ("strides", OnnxAttr::Ints(k)),
                ],
            ));
        }
        // Any other sizes (e.g. AlexNet's 1×1 → 6×6 on small inputs): adaptive average
        // pooling is linear and separable, Y = P_h · X · P_wᵀ with P[i, j] = 1 / |bin i| for
        // input j in PyTorch's bin i = [⌊i·n/m⌋, ⌈(i+1)·n/m⌉). Two MatMuls with constant
        // matrices.
        let mut spec = OnnxSpec::default();
        let p_w = spec.constant(".pool_w", pooling_matrix(w, ow, true));
        let p_h = spec.constant(".pool_h", pooling_matrix(h, oh, false));
        let rows = spec.temp(NameBase::Node, ".rows");
        spec.node(
            "/w",
            "MatMul",
            vec![OnnxRef::Input(0), p_w],
            Some(rows),
            vec![],
        );
        spec.node("", "MatMul", vec![p_h, OnnxRef::Decl(rows)], None, vec![]);
        Ok(spec)
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Pooling
    }
    fn check(&self) -> Result<(), String> {
        nonzero("output_size", self.output_size.min())?;
        bounded("output_size", self.output_size.0.max(self.output_size.1))
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let (c, _, _) = image(inputs, 0)?;
        let shape = vec![c, self.output_size.0, self.output_size.1];
        super::checked_numel("the output", &shape)?;
        Ok(shape)
    }
    follows_its_input!();
    fn torch_module(&self) -> Option<String> {
        Some(format!(
            "nn.AdaptiveAvgPool2d({})",
            py_pair(self.output_size)
        ))
    }
}

/// The `m × n` matrix of adaptive average pooling from `n` to `m` positions (its transpose,
/// `n × m`, when `transposed`).
fn pooling_matrix(n: usize, m: usize, transposed: bool) -> OnnxConst {
    let mut p = vec![0.0f32; m * n];
    for i in 0..m {
        let (start, end) = (i * n / m, ((i + 1) * n).div_ceil(m));
        for j in start..end {
            let at = if transposed { j * m + i } else { i * n + j };
            p[at] = 1.0 / (end - start) as f32;
        }
    }
    OnnxConst::F32 {
        dims: if transposed { vec![n, m] } else { vec![m, n] },
        values: p,
    }
}

/// The ONNX attributes every pooling window writes, in this order: `kernel_shape`,
/// `strides` (the kernel when no stride is given, as in PyTorch), `pads`, `ceil_mode`.
fn window_attrs(
    kernel_size: Pair,
    stride: Option<Pair>,
    padding: Pair,
    ceil_mode: bool,
) -> Vec<(&'static str, OnnxAttr)> {
    vec![
        ("kernel_shape", ints_pair(kernel_size)),
        ("strides", ints_pair(stride.unwrap_or(kernel_size))),
        ("pads", pads(padding)),
        ("ceil_mode", OnnxAttr::Int(i64::from(ceil_mode))),
    ]
}
