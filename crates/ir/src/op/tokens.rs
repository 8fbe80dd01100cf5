//! Token layouts for transformer blocks: `tokens` (an image's pixels become tokens) and
//! `token_mean` (the mean over the tokens). A token tensor `[T, F]` holds its units (features)
//! on its last axis ([`super::unit_axis`]).

use serde::{Deserialize, Serialize};

use super::onnx::{NameBase, OnnxAttr, OnnxConst, OnnxContext, OnnxRef, OnnxSpec};
use super::roles::{AfterSurgery, Scoring};
use super::{
    Arity, Channels, Contract, Op, ParamSpec, Role, ShapeInput, checked_numel, image, tokens,
};

/// An image's pixels as tokens: `[C, H, W]` to `[H·W, C]`, token `h·W + w` holding the
/// channels of pixel `(h, w)` as its features (`x.flatten(2).transpose(1, 2)`, a vision
/// transformer's patch sequence after a patch-embedding convolution).
///
/// Channel behaviour: [`Channels::Follow`]: input channel `c` is feature `c` of every token,
/// so the layer that produced the channels is pruned as before and the token layers that
/// read them lose the same features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {}

impl Contract for Tokens {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        // [N, C, H, W] → Reshape [N, C, H·W] → Transpose → [N, H·W, C].
        let s = ctx.inputs.first().copied().unwrap_or(&[]);
        let [c, h, w] = s[..] else {
            return Err(format!("expected an image input, found {s:?}"));
        };
        let mut spec = OnnxSpec::default();
        let shape = spec.constant(".shape", OnnxConst::I64(vec![0, c as i64, (h * w) as i64]));
        let flat = spec.temp(NameBase::Value, ".flat");
        spec.node(
            ".flatten",
            "Reshape",
            vec![OnnxRef::Input(0), shape],
            Some(flat),
            vec![],
        );
        spec.node(
            "",
            "Transpose",
            vec![OnnxRef::Decl(flat)],
            None,
            vec![("perm", OnnxAttr::Ints(vec![0, 2, 1]))],
        );
        Ok(spec)
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
        let (c, h, w) = image(inputs, 0)?;
        Ok(vec![checked_numel("the tokens", &[h, w])?, c])
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
        None
    }
    fn torch_forward(&self, inputs: &[String], _module: &str) -> String {
        format!("{}.flatten(2).transpose(1, 2)", inputs[0])
    }
}

/// The mean over the tokens: `[T, F]` to `[F]` (`x.mean(1)`; a vision transformer's pooled
/// head input, like global average pooling of an image).
///
/// Channel behaviour: [`Channels::Follow`]: feature `f` of the output is the mean of feature
/// `f` over the tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenMean {}

impl Contract for TokenMean {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        // ReduceMean over the token axis (1 of [N, T, F]); its axes are an input from 18 on.
        let mut s = OnnxSpec::default();
        let keep = ("keepdims", OnnxAttr::Int(0));
        if ctx.opset >= 18 {
            let axes = s.constant(".axes", OnnxConst::I64(vec![1]));
            s.node(
                "",
                "ReduceMean",
                vec![OnnxRef::Input(0), axes],
                None,
                vec![keep],
            );
        } else {
            s.node(
                "",
                "ReduceMean",
                vec![OnnxRef::Input(0)],
                None,
                vec![("axes", OnnxAttr::Ints(vec![1])), keep],
            );
        }
        Ok(s)
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Pooling
    }
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let (_, f) = tokens(inputs, 0)?;
        Ok(vec![f])
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
        None
    }
    fn torch_forward(&self, inputs: &[String], _module: &str) -> String {
        format!("{}.mean(1)", inputs[0])
    }
}
