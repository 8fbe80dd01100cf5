//! Channel rearrangements without parameters: `channel_shuffle` and `slice`.

use serde::{Deserialize, Serialize};

use super::onnx::{NameBase, OnnxAttr, OnnxConst, OnnxContext, OnnxRef, OnnxSpec};
use super::roles::{AfterSurgery, Scoring};
use super::{Arity, Channels, Contract, Op, ParamSpec, Role, ShapeInput, bounded, image, nonzero};

/// Channel shuffle (`torch.nn.ChannelShuffle(groups)`; ShuffleNet): `[C, H, W]` to
/// `[C, H, W]`, the channels viewed as `[groups, C / groups]`, transposed and flattened, so
/// output channel `j` is input channel `(j % groups) · (C / groups) + j / groups`. `C` must be
/// divisible by `groups`.
///
/// Channel behaviour: [`Channels::Fixed`]. The permutation only exists for whole groups and
/// removing an input channel changes where every later one lands, so the channels that
/// reach a shuffle are never pruned, and its output is a new fixed set of channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelShuffle {
    /// Number of groups (at least 1; 1 is the identity).
    pub groups: usize,
}

impl Contract for ChannelShuffle {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        // [N, C, H, W] → [N, g, C/g, H, W] → swap axes 1, 2 → [N, C, H, W].
        let s = ctx.inputs.first().copied().unwrap_or(&[]);
        let [c, h, w] = s[..] else {
            return Err(format!("expected an image input, found {s:?}"));
        };
        let g = self.groups.max(1);
        let (c, h, w, g) = (c as i64, h as i64, w as i64, g as i64);
        let mut spec = OnnxSpec::default();
        let grouped = spec.constant(".grouped", OnnxConst::I64(vec![0, g, c / g, h, w]));
        let flat = spec.constant(".shape", OnnxConst::I64(vec![0, c, h, w]));
        let a = spec.temp(NameBase::Value, ".grouped");
        let b = spec.temp(NameBase::Value, ".transposed");
        spec.node(
            ".group",
            "Reshape",
            vec![OnnxRef::Input(0), grouped],
            Some(a),
            vec![],
        );
        spec.node(
            ".transpose",
            "Transpose",
            vec![OnnxRef::Decl(a)],
            Some(b),
            vec![("perm", OnnxAttr::Ints(vec![0, 2, 1, 3, 4]))],
        );
        spec.node("", "Reshape", vec![OnnxRef::Decl(b), flat], None, vec![]);
        Ok(spec)
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }
    fn role(&self) -> Role {
        Role::Reshape
    }
    fn check(&self) -> Result<(), String> {
        nonzero("channel_shuffle groups", self.groups)?;
        bounded("channel_shuffle groups", self.groups)
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let (c, _, _) = image(inputs, 0)?;
        if c % self.groups != 0 {
            return Err(format!(
                "channel_shuffle needs channels divisible by groups = {}, but the input '{}' has {c} channels",
                self.groups, inputs[0].0
            ));
        }
        Ok(inputs[0].1.to_vec())
    }
    fn params(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }
    fn macs(&self, _output: &[usize]) -> Option<u64> {
        Some(0)
    }
    fn channels(&self) -> Channels {
        Channels::Fixed
    }
    fn narrowed(&self, _inputs: &[&[usize]], _units: Option<usize>) -> Result<Op, String> {
        // Its input's channels are held fixed, so they never change.
        Ok(self.clone().into())
    }
    fn torch_module(&self) -> Option<String> {
        Some(format!("nn.ChannelShuffle({})", self.groups))
    }
}

/// The channels (or features) `start..end` of the input, in order: `[C, H, W]` to
/// `[end − start, H, W]`, `[F]` to `[end − start]` (`x[:, start:end]`). A channel split
/// (`x.chunk(2, dim=1)`, ONNX `Split`) is one `slice` node per part, all reading the same
/// input. Needs `start < end ≤ C`.
///
/// Channel behaviour: [`Channels::Slice`]. The output carries exactly the input's channels
/// `start..end` (layers after it are sliced correctly), but the input's channels are held
/// fixed: removing one of them would move `start` and `end`, which narrowing a graph by
/// widths alone cannot express.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slice {
    /// First channel taken.
    pub start: usize,
    /// One past the last channel taken.
    pub end: usize,
}

impl Contract for Slice {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Nothing
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
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
        Role::Reshape
    }
    fn check(&self) -> Result<(), String> {
        bounded("slice end", self.end)?;
        if self.start >= self.end {
            return Err(format!(
                "slice needs start < end (a non-empty range of channels), found start = {}, end = {}",
                self.start, self.end
            ));
        }
        Ok(())
    }
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let (from, s) = inputs[0];
        let c = match s {
            [c, _, _] | [c] => *c,
            _ => {
                return Err(format!(
                    "slice expects an image [C, H, W] or features [F], found {s:?} from '{from}'"
                ));
            }
        };
        if self.end > c {
            return Err(format!(
                "slice {}..{} does not fit the {c} channels of '{from}'",
                self.start, self.end
            ));
        }
        let mut out = s.to_vec();
        out[0] = self.end - self.start;
        Ok(out)
    }
    fn params(&self, _node: &str) -> Vec<ParamSpec> {
        Vec::new()
    }
    fn macs(&self, _output: &[usize]) -> Option<u64> {
        Some(0)
    }
    fn channels(&self) -> Channels {
        Channels::Slice {
            start: self.start,
            end: self.end,
        }
    }
    fn narrowed(&self, _inputs: &[&[usize]], _units: Option<usize>) -> Result<Op, String> {
        // Its input's channels are held fixed, so the range never moves.
        Ok(self.clone().into())
    }
    fn torch_module(&self) -> Option<String> {
        None
    }
    fn torch_forward(&self, inputs: &[String], _module: &str) -> String {
        format!("{}[:, {}:{}]", inputs[0], self.start, self.end)
    }
}
