//! Ops without parameters: `input`, `flatten`, `dropout`, `add`, `mul`, `concat`.

use serde::{Deserialize, Serialize};

use super::onnx::{OnnxAttr, OnnxContext, OnnxSpec};
use super::roles::{AfterSurgery, Scoring};
use super::{Arity, Channels, Contract, Op, ParamSpec, Role, ShapeInput, checked_numel, image};

/// The network input, e.g. `shape = [3, 32, 32]`, with the preprocessing the model
/// expects when it is known. Channel behaviour: a fixed source.
///
/// `mean` and `std` are the per-channel normalisation the model was trained with, as
/// torchvision's `Normalize`: a pixel value `p` in 0..=255 of channel `c` is fed as
/// `x = (p / 255 − mean[c]) / std[c]` (ImageNet models: mean `[0.485, 0.456, 0.406]`, std
/// `[0.229, 0.224, 0.225]`). Both are given or neither, one value per channel (`shape[0]`).
/// They describe the data the model wants; the graph itself does not apply them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Per-sample shape.
    pub shape: Vec<usize>,
    /// Per-channel mean subtracted after scaling pixels to [0, 1] (`None`: unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f64>>,
    /// Per-channel standard deviation divided by after subtracting `mean` (`None`:
    /// unknown); every value positive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f64>>,
}

impl Input {
    /// An input of `shape` with no preprocessing recorded.
    pub fn new(shape: Vec<usize>) -> Self {
        Input {
            shape,
            mean: None,
            std: None,
        }
    }

    /// The same input with per-channel normalisation `mean` and `std` recorded (checked when
    /// the graph is built).
    pub fn with_normalization(self, mean: Vec<f64>, std: Vec<f64>) -> Self {
        Input {
            mean: Some(mean),
            std: Some(std),
            ..self
        }
    }

    fn check_normalization(&self) -> Result<(), String> {
        let (mean, std) = match (&self.mean, &self.std) {
            (None, None) => return Ok(()),
            (Some(m), Some(s)) => (m, s),
            _ => {
                return Err(
                    "input mean and std must be given together (or neither), one value per channel"
                        .into(),
                );
            }
        };
        let channels = self.shape[0];
        for (what, v) in [("mean", mean), ("std", std)] {
            if v.len() != channels {
                return Err(format!(
                    "input {what} has {} values but the input has {channels} channels (shape {:?}); give one per channel",
                    v.len(),
                    self.shape
                ));
            }
            if let Some(x) = v.iter().find(|x| !x.is_finite()) {
                return Err(format!("input {what} must be finite, found {x}"));
            }
        }
        if let Some(x) = std.iter().find(|&&x| x <= 0.0) {
            return Err(format!(
                "input std values must be positive, found {x} in {std:?}"
            ));
        }
        Ok(())
    }
}

impl Contract for Input {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        Ok(OnnxSpec::nothing())
    }
    fn arity(&self) -> Arity {
        Arity::exactly(0)
    }
    fn role(&self) -> Role {
        Role::Input
    }
    fn check(&self) -> Result<(), String> {
        if self.shape.is_empty() || self.shape.contains(&0) {
            return Err(format!(
                "input shape must be non-empty with positive sizes, e.g. [3, 32, 32]; found {:?}",
                self.shape
            ));
        }
        checked_numel("the input", &self.shape)?;
        self.check_normalization()
    }
    fn infer(&self, _inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        Ok(self.shape.clone())
    }
    fn params(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }
    fn macs(&self, _output: &[usize]) -> Option<u64> {
        Some(0)
    }
    fn channels(&self) -> Channels {
        Channels::Source
    }
    fn narrowed(&self, _inputs: &[&[usize]], _units: Option<usize>) -> Result<Op, String> {
        Ok(self.clone().into())
    }
    fn torch_module(&self) -> Option<String> {
        None
    }
    fn torch_forward(&self, _inputs: &[String], _module: &str) -> String {
        "x".to_owned()
    }
}

/// Flattens `[C, H, W]` to `[C·H·W]` (channel-major, as `torch.flatten(x, 1)`). Channel
/// behaviour: each input channel becomes H·W consecutive features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flatten {}

impl Contract for Flatten {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        Ok(OnnxSpec::single(
            "Flatten",
            vec![("axis", OnnxAttr::Int(1))],
        ))
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Reshape
    }
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        Ok(vec![checked_numel("the flattened input", inputs[0].1)?])
    }
    fn params(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }
    fn macs(&self, _output: &[usize]) -> Option<u64> {
        Some(0)
    }
    fn channels(&self) -> Channels {
        Channels::Flatten
    }
    fn narrowed(&self, _inputs: &[&[usize]], _units: Option<usize>) -> Result<Op, String> {
        Ok(self.clone().into())
    }
    fn torch_module(&self) -> Option<String> {
        None
    }
    fn torch_forward(&self, inputs: &[String], _module: &str) -> String {
        format!("torch.flatten({}, 1)", inputs[0])
    }
}

fn half() -> f64 {
    0.5
}

/// Dropout (the identity in eval mode). Channel behaviour: follows its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dropout {
    /// Drop probability (default 0.5).
    #[serde(default = "half")]
    pub p: f64,
}

impl Contract for Dropout {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring {
            saved_for_backward: 1,
            batch_dependent: true,
            ..Scoring::default()
        }
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        Ok(OnnxSpec::single("Identity", vec![]))
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Regularization
    }
    fn check(&self) -> Result<(), String> {
        if !(0.0..1.0).contains(&self.p) {
            return Err(format!("dropout p must be in [0, 1), found {}", self.p));
        }
        Ok(())
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        Ok(inputs[0].1.to_vec())
    }
    follows_its_input!();
    fn torch_module(&self) -> Option<String> {
        Some(format!("nn.Dropout(p={:?})", self.p))
    }
}

/// Element-wise sum of two or more tensors of the same shape (residual connections).
/// Channel behaviour: couples its inputs' channels position by position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Add {}

impl Contract for Add {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        let op = if ctx.inputs.len() == 2 { "Add" } else { "Sum" };
        Ok(OnnxSpec::single(op, vec![]))
    }
    fn arity(&self) -> Arity {
        Arity::at_least(2)
    }
    fn role(&self) -> Role {
        Role::Merge
    }
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let (first, s0) = inputs[0];
        for (from, s) in &inputs[1..] {
            if s != &s0 {
                return Err(format!(
                    "add needs equal shapes, but '{first}' is {s0:?} and '{from}' is {s:?}"
                ));
            }
        }
        Ok(s0.to_vec())
    }
    fn params(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }
    fn macs(&self, _output: &[usize]) -> Option<u64> {
        Some(0)
    }
    fn channels(&self) -> Channels {
        Channels::Couple
    }
    fn narrowed(&self, _inputs: &[&[usize]], _units: Option<usize>) -> Result<Op, String> {
        Ok(self.clone().into())
    }
    fn torch_module(&self) -> Option<String> {
        None
    }
    fn torch_forward(&self, inputs: &[String], _module: &str) -> String {
        inputs.join(" + ")
    }
}

/// Element-wise product of two tensors (squeeze-and-excitation gates, SiLU written as
/// `x · sigmoid(x)`). The shapes are equal, or have the same rank and the same channel count
/// with the other sizes broadcast where one of them is 1: a gate `[C, 1, 1]` times an image
/// `[C, H, W]` gives `[C, H, W]`. Channel broadcasting (`[1, H, W]`) is not supported.
///
/// Channel behaviour: couples its inputs' channels position by position (an SE block's last
/// convolution is pruned with the main path it scales); the output has the first input's
/// channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mul {}

impl Contract for Mul {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        Ok(OnnxSpec::single("Mul", vec![]))
    }
    fn arity(&self) -> Arity {
        Arity::exactly(2)
    }
    fn role(&self) -> Role {
        Role::Merge
    }
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let ((a_name, a), (b_name, b)) = (inputs[0], inputs[1]);
        let mismatch = || {
            format!(
                "mul needs equal shapes, or equal units with the other sizes of 1 broadcast (a gate [C, 1, 1] times [C, H, W], or [1, F] times tokens [T, F]), but '{a_name}' is {a:?} and '{b_name}' is {b:?}"
            )
        };
        if a.len() != b.len() || super::unit_count(a) != super::unit_count(b) {
            return Err(mismatch());
        }
        a.iter()
            .zip(b)
            .map(|(&x, &y)| match (x, y) {
                _ if x == y => Ok(x),
                (1, y) => Ok(y),
                (x, 1) => Ok(x),
                _ => Err(mismatch()),
            })
            .collect()
    }
    fn params(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }
    fn macs(&self, _output: &[usize]) -> Option<u64> {
        Some(0)
    }
    fn channels(&self) -> Channels {
        Channels::Couple
    }
    fn narrowed(&self, _inputs: &[&[usize]], _units: Option<usize>) -> Result<Op, String> {
        Ok(self.clone().into())
    }
    fn torch_module(&self) -> Option<String> {
        None
    }
    fn torch_forward(&self, inputs: &[String], _module: &str) -> String {
        format!("{} * {}", inputs[0], inputs[1])
    }
}

/// Concatenation along the unit axis: images `[C_i, H, W]` of one spatial size on the
/// channels (DenseNet; `torch.cat(xs, 1)`), or tokens `[T, F_i]` of one token count on the
/// features (Swin Transformer's patch merging; `torch.cat(xs, -1)`). Channel behaviour: the
/// output holds the inputs' channels (or features) one after another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concat {}

impl Contract for Concat {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        // The unit axis of the batched tensor: 1 of [N, C, H, W], 2 of [N, T, F].
        let tokens = ctx.inputs.first().is_some_and(|s| s.len() == 2);
        let axis = if tokens { 2 } else { 1 };
        Ok(OnnxSpec::single(
            "Concat",
            vec![("axis", OnnxAttr::Int(axis))],
        ))
    }
    fn arity(&self) -> Arity {
        Arity::at_least(1)
    }
    fn role(&self) -> Role {
        Role::Merge
    }
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        if inputs[0].1.len() == 2 {
            // Tokens [T, F_i] of one token count: [T, ΣF_i].
            let (t, _) = super::tokens(inputs, 0)?;
            let mut features = 0usize;
            for (i, (from, s)) in inputs.iter().enumerate() {
                let (ti, f) = super::tokens(inputs, i)?;
                if ti != t {
                    return Err(format!(
                        "concat of tokens needs equal token counts, but '{}' is {:?} and '{from}' is {s:?}",
                        inputs[0].0, inputs[0].1
                    ));
                }
                features = features
                    .checked_add(f)
                    .ok_or("the concatenated features overflow")?;
            }
            let shape = vec![t, features];
            checked_numel("the output", &shape)?;
            return Ok(shape);
        }
        let (_, h, w) = image(inputs, 0)?;
        let mut channels = 0usize;
        for (i, (from, s)) in inputs.iter().enumerate() {
            let (c, hi, wi) = image(inputs, i)?;
            if (hi, wi) != (h, w) {
                return Err(format!(
                    "concat needs equal spatial sizes, but '{}' is {:?} and '{from}' is {s:?}",
                    inputs[0].0, inputs[0].1
                ));
            }
            channels = channels
                .checked_add(c)
                .ok_or("the concatenated channels overflow")?;
        }
        let shape = vec![channels, h, w];
        checked_numel("the output", &shape)?;
        Ok(shape)
    }
    fn params(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }
    fn macs(&self, _output: &[usize]) -> Option<u64> {
        Some(0)
    }
    fn channels(&self) -> Channels {
        Channels::Concat
    }
    fn narrowed(&self, _inputs: &[&[usize]], _units: Option<usize>) -> Result<Op, String> {
        Ok(self.clone().into())
    }
    fn torch_module(&self) -> Option<String> {
        None
    }
    fn torch_forward(&self, inputs: &[String], _module: &str) -> String {
        format!("torch.cat([{}], 1)", inputs.join(", "))
    }
    fn torch_forward_shaped(&self, inputs: &[String], shapes: &[&[usize]], module: &str) -> String {
        if shapes.first().is_some_and(|s| s.len() == 2) {
            format!("torch.cat([{}], -1)", inputs.join(", "))
        } else {
            self.torch_forward(inputs, module)
        }
    }
}
