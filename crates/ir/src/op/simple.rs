//! Ops without parameters: `input`, `relu`, `flatten`, `dropout`, `add`, `concat`.

use serde::{Deserialize, Serialize};

use super::{Arity, Channels, Contract, Op, ParamSpec, Role, ShapeInput, checked_numel, image};

/// The network input, e.g. `shape = [3, 32, 32]`. Channel behaviour: a fixed source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Per-sample shape.
    pub shape: Vec<usize>,
}

impl Contract for Input {
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
        checked_numel("the input", &self.shape).map(|_| ())
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

/// Rectified linear unit. Channel behaviour: follows its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relu {}

impl Contract for Relu {
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Activation
    }
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        Ok(inputs[0].1.to_vec())
    }
    fn params(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }
    fn macs(&self, _output: &[usize]) -> Option<u64> {
        Some(0)
    }
    fn channels(&self) -> Channels {
        Channels::Follow
    }
    fn narrowed(&self, _inputs: &[&[usize]], _units: Option<usize>) -> Result<Op, String> {
        Ok(self.clone().into())
    }
    fn torch_module(&self) -> Option<String> {
        Some("nn.ReLU()".to_owned())
    }
}

/// Flattens `[C, H, W]` to `[C·H·W]` (channel-major, as `torch.flatten(x, 1)`). Channel
/// behaviour: each input channel becomes H·W consecutive features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flatten {}

impl Contract for Flatten {
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
    fn params(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }
    fn macs(&self, _output: &[usize]) -> Option<u64> {
        Some(0)
    }
    fn channels(&self) -> Channels {
        Channels::Follow
    }
    fn narrowed(&self, _inputs: &[&[usize]], _units: Option<usize>) -> Result<Op, String> {
        Ok(self.clone().into())
    }
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

/// Concatenation along the channel axis (DenseNet). Channel behaviour: the output holds the
/// inputs' channels one after another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concat {}

impl Contract for Concat {
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
}
