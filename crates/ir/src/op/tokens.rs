//! Token layouts for transformer blocks: `tokens` (an image's pixels become tokens),
//! `token_mean` (the mean over the tokens), `class_token` (a learned token put first),
//! `position_embedding` (a learned tensor added), `token_select` (one token),
//! `token_range` (a run of tokens) and `tokens_to_image` (a grid of tokens back to an
//! image). A token tensor `[T, F]` holds its units (features) on its
//! last axis ([`super::unit_axis`]).

use serde::{Deserialize, Serialize};

use super::onnx::{NameBase, OnnxAttr, OnnxConst, OnnxContext, OnnxRef, OnnxSpec};
use super::roles::{AfterSurgery, Scoring};
use super::{
    Arity, Channels, Contract, Init, Op, Pair, ParamKind, ParamSpec, Role, ShapeInput,
    checked_numel, image, tokens, unit_count,
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
    follows_its_input!();
    fn torch_module(&self) -> Option<String> {
        None
    }
    fn torch_forward(&self, inputs: &[String], _module: &str) -> String {
        format!("{}.flatten(2).transpose(1, 2)", inputs[0])
    }
}

/// Tokens of a grid back to an image: `[H·W, F]` to `[F, H, W]`, the inverse of
/// [`Tokens`] (token `h·W + w` becomes pixel `(h, w)`; a channels-last feature map
/// `[N, H, W, C]` permuted to `[N, C, H, W]`, as Swin Transformer does before its pooling).
///
/// Channel behaviour: [`Channels::Follow`]: feature `f` of every token is channel `f`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensToImage {
    /// The grid `[H, W]` of the tokens (`H·W` tokens, row-major).
    pub grid: Pair,
}

impl Contract for TokensToImage {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        // [N, H·W, F] → Transpose → [N, F, H·W] → Reshape [N, F, H, W].
        let s = ctx.inputs.first().copied().unwrap_or(&[]);
        let [_, f] = s[..] else {
            return Err(format!("expected tokens [T, F], found {s:?}"));
        };
        let Pair(h, w) = self.grid;
        let mut spec = OnnxSpec::default();
        let shape = spec.constant(
            ".shape",
            OnnxConst::I64(vec![0, f as i64, h as i64, w as i64]),
        );
        let t = spec.temp(NameBase::Value, ".t");
        spec.node(
            ".transpose",
            "Transpose",
            vec![OnnxRef::Input(0)],
            Some(t),
            vec![("perm", OnnxAttr::Ints(vec![0, 2, 1]))],
        );
        spec.node("", "Reshape", vec![OnnxRef::Decl(t), shape], None, vec![]);
        Ok(spec)
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Reshape
    }
    fn check(&self) -> Result<(), String> {
        let Pair(h, w) = self.grid;
        super::nonzero("grid height", h)?;
        super::nonzero("grid width", w)?;
        super::bounded("grid height", h)?;
        super::bounded("grid width", w)
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let (t, f) = tokens(inputs, 0)?;
        let Pair(h, w) = self.grid;
        if h.checked_mul(w) != Some(t) {
            return Err(format!(
                "tokens_to_image of a {h}×{w} grid needs {} tokens, but '{}' has {t}",
                h.saturating_mul(w),
                inputs[0].0
            ));
        }
        Ok(vec![f, h, w])
    }
    follows_its_input!();
    fn torch_module(&self) -> Option<String> {
        None
    }
    fn torch_forward(&self, inputs: &[String], _module: &str) -> String {
        let Pair(h, w) = self.grid;
        format!("{}.transpose(1, 2).unflatten(2, ({h}, {w}))", inputs[0])
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
    follows_its_input!();
    fn torch_module(&self) -> Option<String> {
        None
    }
    fn torch_forward(&self, inputs: &[String], _module: &str) -> String {
        format!("{}.mean(1)", inputs[0])
    }
}

/// Python for [`ClassToken`] and [`PositionEmbedding`] in an exported `model.py`.
const TOKEN_PARAMS_PY: &str = "class ClassToken(nn.Module):
    \"\"\"A learned token put before the tokens [N, T, F] (a vision transformer's class token).\"\"\"

    def __init__(self, features):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(features))

    def forward(self, x):
        return torch.cat([self.weight.expand(x.shape[0], 1, -1), x], dim=1)


class PositionEmbedding(nn.Module):
    \"\"\"A learned tensor [T, F] added to the tokens [N, T, F] (a position embedding).\"\"\"

    def __init__(self, tokens, features):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(tokens, features))

    def forward(self, x):
        return x + self.weight
";

/// A learned token put before the tokens: `[T, F]` to `[T+1, F]`, token 0 being the
/// parameter `weight` (`[F]`), token `t + 1` input token `t` (a vision transformer's class
/// token, `torch.cat([class_token.expand(n, -1, -1), x], dim=1)`).
///
/// Channel behaviour: [`Channels::Follow`]: feature `f` of every output token is feature `f`
/// of an input token or of the parameter, which loses the features its input loses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassToken {
    /// Features per token.
    pub features: usize,
}

impl Contract for ClassToken {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        // The parameter expanded to [N, 1, F] (N from the input's shape), then put first.
        let mut s = OnnxSpec::default();
        let p = s.params();
        let shape = s.temp(NameBase::Node, ".shape");
        s.node(
            ".shape",
            "Shape",
            vec![OnnxRef::Input(0)],
            Some(shape),
            vec![],
        );
        let zero = s.constant(".start", OnnxConst::I64(vec![0]));
        let one = s.constant(".end", OnnxConst::I64(vec![1]));
        let batch = s.temp(NameBase::Node, ".batch");
        s.node(
            ".batch",
            "Slice",
            vec![OnnxRef::Decl(shape), zero, one],
            Some(batch),
            vec![],
        );
        let rest = s.constant(
            ".token_shape",
            OnnxConst::I64(vec![1, self.features as i64]),
        );
        let target = s.temp(NameBase::Node, ".target");
        s.node(
            ".target",
            "Concat",
            vec![OnnxRef::Decl(batch), rest],
            Some(target),
            vec![("axis", OnnxAttr::Int(0))],
        );
        let token = s.temp(NameBase::Node, ".token");
        s.node(
            ".expand",
            "Expand",
            vec![p, OnnxRef::Decl(target)],
            Some(token),
            vec![],
        );
        s.node(
            "",
            "Concat",
            vec![OnnxRef::Decl(token), OnnxRef::Input(0)],
            None,
            vec![("axis", OnnxAttr::Int(1))],
        );
        Ok(s)
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Embedding
    }
    fn check(&self) -> Result<(), String> {
        super::nonzero("features", self.features)?;
        super::bounded("features", self.features)
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let (t, f) = tokens(inputs, 0)?;
        if f != self.features {
            return Err(format!(
                "class_token has {} features, but its input has {f} (from '{}')",
                self.features, inputs[0].0
            ));
        }
        let t = t
            .checked_add(1)
            .ok_or_else(|| "too many tokens".to_owned())?;
        Ok(vec![t, f])
    }
    fn params(&self, node: &str) -> Vec<ParamSpec> {
        vec![ParamSpec::new(node, ParamKind::Weight, vec![self.features], Init::Zeros).out_axis(0)]
    }
    fn macs(&self, _output: &[usize]) -> Option<u64> {
        Some(0)
    }
    fn channels(&self) -> Channels {
        Channels::Follow
    }
    fn narrowed(&self, inputs: &[&[usize]], _units: Option<usize>) -> Result<Op, String> {
        Ok(ClassToken {
            features: unit_count(inputs[0]),
        }
        .into())
    }
    fn torch_module(&self) -> Option<String> {
        Some(format!("ClassToken({})", self.features))
    }
    fn torch_prelude(&self) -> Option<&'static str> {
        Some(TOKEN_PARAMS_PY)
    }
}

/// A learned tensor added to the tokens: `[T, F]` plus the parameter `weight` (`[T, F]`),
/// a vision transformer's position embedding (`x + pos_embedding`).
///
/// Channel behaviour: [`Channels::Follow`]: the parameter loses the features its input
/// loses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PositionEmbedding {
    /// Tokens.
    pub tokens: usize,
    /// Features per token.
    pub features: usize,
}

impl Contract for PositionEmbedding {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        Ok(OnnxSpec::with_params("Add", vec![]))
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Embedding
    }
    fn check(&self) -> Result<(), String> {
        super::nonzero("tokens", self.tokens)?;
        super::nonzero("features", self.features)?;
        checked_numel("the position embedding", &[self.tokens, self.features]).map(|_| ())
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let (t, f) = tokens(inputs, 0)?;
        if [t, f] != [self.tokens, self.features] {
            return Err(format!(
                "position_embedding is [{}, {}], but its input is [{t}, {f}] (from '{}')",
                self.tokens, self.features, inputs[0].0
            ));
        }
        Ok(vec![t, f])
    }
    fn params(&self, node: &str) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new(
                node,
                ParamKind::Weight,
                vec![self.tokens, self.features],
                Init::Zeros,
            )
            .out_axis(1),
        ]
    }
    fn macs(&self, _output: &[usize]) -> Option<u64> {
        Some(0)
    }
    fn channels(&self) -> Channels {
        Channels::Follow
    }
    fn narrowed(&self, inputs: &[&[usize]], _units: Option<usize>) -> Result<Op, String> {
        Ok(PositionEmbedding {
            features: unit_count(inputs[0]),
            ..self.clone()
        }
        .into())
    }
    fn torch_module(&self) -> Option<String> {
        Some(format!(
            "PositionEmbedding({}, {})",
            self.tokens, self.features
        ))
    }
    fn torch_prelude(&self) -> Option<&'static str> {
        Some(TOKEN_PARAMS_PY)
    }
}

/// One token of the tokens: `[T, F]` to `[F]`, token `index` (`x[:, index]`; a vision
/// transformer's class token read by the head).
///
/// Channel behaviour: [`Channels::Follow`]: feature `f` of the output is feature `f` of the
/// token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSelect {
    /// Which token (from 0).
    #[serde(default)]
    pub index: usize,
}

impl Contract for TokenSelect {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        // Gather [N, 1, F] of the token, Reshape to [N, F].
        let mut s = OnnxSpec::default();
        let index = s.constant(".index", OnnxConst::I64(vec![self.index as i64]));
        let token = s.temp(NameBase::Value, ".token");
        s.node(
            ".gather",
            "Gather",
            vec![OnnxRef::Input(0), index],
            Some(token),
            vec![("axis", OnnxAttr::Int(1))],
        );
        let shape = s.constant(".shape", OnnxConst::I64(vec![0, -1]));
        s.node(
            "",
            "Reshape",
            vec![OnnxRef::Decl(token), shape],
            None,
            vec![],
        );
        Ok(s)
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Pooling
    }
    fn check(&self) -> Result<(), String> {
        super::bounded("index", self.index)
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let (t, f) = tokens(inputs, 0)?;
        if self.index >= t {
            return Err(format!(
                "token_select takes token {} of {t} tokens (from '{}')",
                self.index, inputs[0].0
            ));
        }
        Ok(vec![f])
    }
    follows_its_input!();
    fn torch_module(&self) -> Option<String> {
        None
    }
    fn torch_forward(&self, inputs: &[String], _module: &str) -> String {
        format!("{}[:, {}]", inputs[0], self.index)
    }
}

/// Tokens `start..end` of the tokens, `[T, F]` to `[end − start, F]` (`x[:, start:end]`; e.g.
/// `x[:, 1:]`, the patch tokens after a class token, before a mean over them).
///
/// Channel behaviour: [`Channels::Follow`]: every kept token keeps all its features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRange {
    /// The first token kept (from 0).
    pub start: usize,
    /// One past the last token kept.
    pub end: usize,
}

impl Contract for TokenRange {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        // Slice along the token axis (1 of [N, T, F]).
        let mut s = OnnxSpec::default();
        let starts = s.constant(".starts", OnnxConst::I64(vec![self.start as i64]));
        let ends = s.constant(".ends", OnnxConst::I64(vec![self.end as i64]));
        let axes = s.constant(".axes", OnnxConst::I64(vec![1]));
        s.node(
            "",
            "Slice",
            vec![OnnxRef::Input(0), starts, ends, axes],
            None,
            vec![],
        );
        Ok(s)
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Pooling
    }
    fn check(&self) -> Result<(), String> {
        super::bounded("start", self.start)?;
        super::bounded("end", self.end)?;
        if self.start >= self.end {
            return Err(format!(
                "token_range {}..{} keeps no token: start must be below end",
                self.start, self.end
            ));
        }
        Ok(())
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let (t, f) = tokens(inputs, 0)?;
        if self.end > t {
            return Err(format!(
                "token_range {}..{} does not fit the {t} tokens of '{}'",
                self.start, self.end, inputs[0].0
            ));
        }
        Ok(vec![self.end - self.start, f])
    }
    follows_its_input!();
    fn torch_module(&self) -> Option<String> {
        None
    }
    fn torch_forward(&self, inputs: &[String], _module: &str) -> String {
        format!("{}[:, {}:{}]", inputs[0], self.start, self.end)
    }
}
