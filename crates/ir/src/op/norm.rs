//! `batch_norm2d`, `batch_norm1d`, `layer_norm2d` and `layer_norm`.

use serde::{Deserialize, Serialize};

use super::onnx::{NameBase, OnnxAttr, OnnxConst, OnnxContext, OnnxRef, OnnxSpec};
use super::roles::{AfterSurgery, Scoring};
use super::{
    Arity, Channels, Contract, Init, Op, ParamKind, ParamSpec, Role, ShapeInput, bounded, image,
    is_true, nonzero, unit_count, yes,
};

fn bn_eps() -> f64 {
    1e-5
}
fn bn_momentum() -> f64 {
    0.1
}

/// The parameters and buffers of a BatchNorm over `n` channels: every tensor but the step
/// counter follows the channels (output = input channels).
fn bn_params(node: &str, n: usize) -> Vec<ParamSpec> {
    vec![
        ParamSpec::new(node, ParamKind::Weight, vec![n], Init::Ones).out_axis(0),
        ParamSpec::new(node, ParamKind::Bias, vec![n], Init::Zeros).out_axis(0),
        ParamSpec::new(node, ParamKind::RunningMean, vec![n], Init::Zeros).out_axis(0),
        ParamSpec::new(node, ParamKind::RunningVar, vec![n], Init::Ones).out_axis(0),
        ParamSpec::new(node, ParamKind::NumBatchesTracked, vec![], Init::Zeros),
    ]
}

fn bn_check(num_features: usize, eps: f64, momentum: f64) -> Result<(), String> {
    nonzero("num_features", num_features)?;
    if eps.is_nan() || eps <= 0.0 || eps.is_infinite() {
        return Err(format!("eps must be positive and finite, found {eps}"));
    }
    if !(0.0..=1.0).contains(&momentum) {
        return Err(format!("momentum must be in [0, 1], found {momentum}"));
    }
    Ok(())
}

/// Batch normalisation over the channels of `[C, H, W]` (`torch.nn.BatchNorm2d`).
///
/// Channel behaviour: follows its input; every tensor is sliced with the kept channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchNorm2d {
    /// Channels.
    pub num_features: usize,
    /// Epsilon (default 1e-5).
    #[serde(default = "bn_eps")]
    pub eps: f64,
    /// Running-statistics momentum (default 0.1).
    #[serde(default = "bn_momentum")]
    pub momentum: f64,
}

impl BatchNorm2d {
    /// PyTorch's defaults (eps 1e-5, momentum 0.1).
    pub fn new(num_features: usize) -> Self {
        BatchNorm2d {
            num_features,
            eps: bn_eps(),
            momentum: bn_momentum(),
        }
    }
}

impl Contract for BatchNorm2d {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Recalibrate
    }
    fn scoring(&self) -> Scoring {
        Scoring {
            batch_dependent: true,
            ..Scoring::default()
        }
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        Ok(batch_norm_onnx(self.eps, self.momentum))
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Normalization
    }
    fn check(&self) -> Result<(), String> {
        bn_check(self.num_features, self.eps, self.momentum)
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let (c, _, _) = image(inputs, 0)?;
        if c != self.num_features {
            return Err(format!(
                "num_features is {} but the input '{}' has {c} channels",
                self.num_features, inputs[0].0
            ));
        }
        Ok(inputs[0].1.to_vec())
    }
    fn params(&self, node: &str) -> Vec<ParamSpec> {
        bn_params(node, self.num_features)
    }
    fn macs(&self, _output: &[usize]) -> Option<u64> {
        Some(0)
    }
    fn channels(&self) -> Channels {
        Channels::Follow
    }
    fn narrowed(&self, inputs: &[&[usize]], _units: Option<usize>) -> Result<Op, String> {
        Ok(BatchNorm2d {
            num_features: inputs[0][0],
            ..self.clone()
        }
        .into())
    }
    fn torch_module(&self) -> Option<String> {
        Some(format!(
            "nn.BatchNorm2d({}, eps={:?}, momentum={:?})",
            self.num_features, self.eps, self.momentum
        ))
    }
}

/// Batch normalisation over the features of `[F]` (`torch.nn.BatchNorm1d`).
///
/// Channel behaviour: follows its input; every tensor is sliced with the kept features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchNorm1d {
    /// Features.
    pub num_features: usize,
    /// Epsilon (default 1e-5).
    #[serde(default = "bn_eps")]
    pub eps: f64,
    /// Running-statistics momentum (default 0.1).
    #[serde(default = "bn_momentum")]
    pub momentum: f64,
}

impl BatchNorm1d {
    /// PyTorch's defaults (eps 1e-5, momentum 0.1).
    pub fn new(num_features: usize) -> Self {
        BatchNorm1d {
            num_features,
            eps: bn_eps(),
            momentum: bn_momentum(),
        }
    }
}

impl Contract for BatchNorm1d {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Recalibrate
    }
    fn scoring(&self) -> Scoring {
        Scoring {
            batch_dependent: true,
            ..Scoring::default()
        }
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        Ok(batch_norm_onnx(self.eps, self.momentum))
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Normalization
    }
    fn check(&self) -> Result<(), String> {
        bn_check(self.num_features, self.eps, self.momentum)
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        match inputs[0].1 {
            [f] if *f == self.num_features => Ok(vec![*f]),
            s => Err(format!(
                "expected a feature vector [{}], found {s:?} from '{}'",
                self.num_features, inputs[0].0
            )),
        }
    }
    fn params(&self, node: &str) -> Vec<ParamSpec> {
        bn_params(node, self.num_features)
    }
    fn macs(&self, _output: &[usize]) -> Option<u64> {
        Some(0)
    }
    fn channels(&self) -> Channels {
        Channels::Follow
    }
    fn narrowed(&self, inputs: &[&[usize]], _units: Option<usize>) -> Result<Op, String> {
        Ok(BatchNorm1d {
            num_features: inputs[0][0],
            ..self.clone()
        }
        .into())
    }
    fn torch_module(&self) -> Option<String> {
        Some(format!(
            "nn.BatchNorm1d({}, eps={:?}, momentum={:?})",
            self.num_features, self.eps, self.momentum
        ))
    }
}

fn ln_eps() -> f64 {
    1e-6
}

/// The Python class the exported `model.py` defines for [`LayerNorm2d`]: torchvision's
/// `LayerNorm2d` (permute to channels-last, layer norm over the channels, permute back).
const LAYER_NORM2D_PY: &str = "class LayerNorm2d(nn.LayerNorm):
    \"\"\"LayerNorm over the channels of each pixel of an NCHW tensor (ConvNeXt).\"\"\"

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
";

/// Layer normalisation over the channels of each pixel of `[C, H, W]` (ConvNeXt's
/// `LayerNorm2d`, `torchvision.models.convnext.LayerNorm2d`): for every position `(h, w)`,
/// `y[c] = (x[c] − mean) / √(var + eps) · weight[c] + bias[c]`, the mean and (biased)
/// variance taken over the `C` channels at that position. `weight` and `bias` (`[C]`) exist
/// when `affine` is true. No running statistics: the same in training and evaluation.
///
/// Channel behaviour: [`Channels::Fixed`]. Its statistics mix the channels, so removing one
/// changes every other output; the channels reaching it are never pruned, and its output is a
/// new fixed set of channels. Role: [`Role::LayerNormalization`], so scorers never mistake it
/// for the BatchNorm after a layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerNorm2d {
    /// Channels.
    pub num_features: usize,
    /// Epsilon (default 1e-6, ConvNeXt's).
    #[serde(default = "ln_eps")]
    pub eps: f64,
    /// Whether it has a per-channel `weight` and `bias` (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub affine: bool,
}

impl LayerNorm2d {
    /// ConvNeXt's defaults (eps 1e-6, affine).
    pub fn new(num_features: usize) -> Self {
        LayerNorm2d {
            num_features,
            eps: ln_eps(),
            affine: true,
        }
    }
}

impl Contract for LayerNorm2d {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring {
            saved_for_backward: 1,
            ..Scoring::default()
        }
    }
    fn onnx(&self, ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        // Channels-last, LayerNormalization over the channels, channels-first again.
        let _ = ctx;
        let mut s = OnnxSpec::default();
        let nhwc = s.temp(NameBase::Value, ".nhwc");
        let normed = s.temp(NameBase::Value, ".normed");
        let scale = ln_scale(&mut s, self.num_features, self.affine);
        s.node(
            ".to_nhwc",
            "Transpose",
            vec![OnnxRef::Inputs],
            Some(nhwc),
            vec![("perm", OnnxAttr::Ints(vec![0, 2, 3, 1]))],
        );
        s.node(
            "",
            "LayerNormalization",
            vec![OnnxRef::Decl(nhwc), scale],
            Some(normed),
            vec![
                ("axis", OnnxAttr::Int(-1)),
                ("epsilon", OnnxAttr::Float(self.eps as f32)),
            ],
        );
        s.node(
            ".to_nchw",
            "Transpose",
            vec![OnnxRef::Decl(normed)],
            None,
            vec![("perm", OnnxAttr::Ints(vec![0, 3, 1, 2]))],
        );
        s.min_opset = Some((17, "LayerNormalization"));
        Ok(s)
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::LayerNormalization
    }
    fn check(&self) -> Result<(), String> {
        ln_check(self.num_features, self.eps)
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let (c, _, _) = image(inputs, 0)?;
        if c != self.num_features {
            return Err(format!(
                "num_features is {} but the input '{}' has {c} channels",
                self.num_features, inputs[0].0
            ));
        }
        Ok(inputs[0].1.to_vec())
    }
    fn params(&self, node: &str) -> Vec<ParamSpec> {
        ln_params(node, self.num_features, self.affine)
    }
    fn macs(&self, _output: &[usize]) -> Option<u64> {
        Some(0)
    }
    fn channels(&self) -> Channels {
        Channels::Fixed
    }
    fn narrowed(&self, inputs: &[&[usize]], _units: Option<usize>) -> Result<Op, String> {
        Ok(LayerNorm2d {
            num_features: inputs[0][0],
            ..self.clone()
        }
        .into())
    }
    fn torch_module(&self) -> Option<String> {
        Some(format!(
            "LayerNorm2d({}, eps={:?}, elementwise_affine={})",
            self.num_features,
            self.eps,
            super::py_bool(self.affine)
        ))
    }
    fn torch_prelude(&self) -> Option<&'static str> {
        Some(LAYER_NORM2D_PY)
    }
}

/// A layer norm's checks: at least one feature, a bounded count, a positive finite eps.
fn ln_check(num_features: usize, eps: f64) -> Result<(), String> {
    nonzero("num_features", num_features)?;
    bounded("num_features", num_features)?;
    if !eps.is_finite() || eps <= 0.0 {
        return Err(format!("eps must be positive and finite, found {eps}"));
    }
    Ok(())
}

/// A layer norm's tensors: a per-feature weight and bias when `affine`, none otherwise.
fn ln_params(node: &str, n: usize, affine: bool) -> Vec<ParamSpec> {
    if !affine {
        return Vec::new();
    }
    vec![
        ParamSpec::new(node, ParamKind::Weight, vec![n], Init::Ones).out_axis(0),
        ParamSpec::new(node, ParamKind::Bias, vec![n], Init::Zeros).out_axis(0),
    ]
}

/// What ONNX `LayerNormalization` reads after its input: the parameters (scale and bias), or
/// a constant scale of ones when there are none.
fn ln_scale(s: &mut OnnxSpec, n: usize, affine: bool) -> OnnxRef {
    if affine {
        s.params()
    } else {
        s.constant(
            ".ones",
            OnnxConst::F32 {
                dims: vec![n],
                values: vec![1.0; n],
            },
        )
    }
}

fn ln_eps_torch() -> f64 {
    1e-5
}

/// Layer normalisation over the last axis (`torch.nn.LayerNorm(F)`): over the features of
/// each token of `[T, F]`, or of a feature vector `[F]`: `y[f] = (x[f] − mean) / √(var + eps)
/// · weight[f] + bias[f]`, the mean and (biased) variance taken over the `F` features.
/// `weight` and `bias` (`[F]`) exist when `affine` is true. No running statistics.
///
/// Channel behaviour: [`Channels::Fixed`], as [`LayerNorm2d`]: its statistics mix the
/// features, so the features reaching it (a transformer's residual stream) are never pruned,
/// and its output is a new fixed set of features. Role: [`Role::LayerNormalization`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerNorm {
    /// Features (the size of the last axis).
    pub num_features: usize,
    /// Epsilon (default 1e-5, PyTorch's).
    #[serde(default = "ln_eps_torch")]
    pub eps: f64,
    /// Whether it has a per-feature `weight` and `bias` (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub affine: bool,
}

impl LayerNorm {
    /// PyTorch's defaults (eps 1e-5, affine).
    pub fn new(num_features: usize) -> Self {
        LayerNorm {
            num_features,
            eps: ln_eps_torch(),
            affine: true,
        }
    }
}

impl Contract for LayerNorm {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring {
            saved_for_backward: 1,
            ..Scoring::default()
        }
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        let mut s = OnnxSpec::default();
        let scale = ln_scale(&mut s, self.num_features, self.affine);
        s.node(
            "",
            "LayerNormalization",
            vec![OnnxRef::Input(0), scale],
            None,
            vec![
                ("axis", OnnxAttr::Int(-1)),
                ("epsilon", OnnxAttr::Float(self.eps as f32)),
            ],
        );
        s.min_opset = Some((17, "LayerNormalization"));
        Ok(s)
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::LayerNormalization
    }
    fn check(&self) -> Result<(), String> {
        ln_check(self.num_features, self.eps)
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let (from, s) = inputs[0];
        match s {
            [.., f] if s.len() <= 2 && *f == self.num_features => Ok(s.to_vec()),
            _ => Err(format!(
                "layer_norm expects tokens [T, {n}] or features [{n}], found {s:?} from '{from}'",
                n = self.num_features
            )),
        }
    }
    fn params(&self, node: &str) -> Vec<ParamSpec> {
        ln_params(node, self.num_features, self.affine)
    }
    fn macs(&self, _output: &[usize]) -> Option<u64> {
        Some(0)
    }
    fn channels(&self) -> Channels {
        Channels::Fixed
    }
    fn narrowed(&self, inputs: &[&[usize]], _units: Option<usize>) -> Result<Op, String> {
        Ok(LayerNorm {
            num_features: unit_count(inputs[0]),
            ..self.clone()
        }
        .into())
    }
    fn torch_module(&self) -> Option<String> {
        Some(format!(
            "nn.LayerNorm({}, eps={:?}, elementwise_affine={})",
            self.num_features,
            self.eps,
            super::py_bool(self.affine)
        ))
    }
}

/// BatchNorm in ONNX: `BatchNormalization` reading the input, then weight, bias, running
/// mean and running variance; ONNX's momentum weighs the old statistic (PyTorch's the new).
fn batch_norm_onnx(eps: f64, momentum: f64) -> OnnxSpec {
    OnnxSpec::with_params(
        "BatchNormalization",
        vec![
            ("epsilon", OnnxAttr::Float(eps as f32)),
            ("momentum", OnnxAttr::Float((1.0 - momentum) as f32)),
        ],
    )
}
