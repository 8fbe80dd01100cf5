//! `conv2d`: 2-D convolution.

use serde::{Deserialize, Serialize};

use super::onnx::{OnnxAttr, OnnxContext, OnnxSpec, ints_pair, pads};
use super::roles::{AfterSurgery, Refit, Scoring, Window};
use super::{
    Arity, Channels, Contract, Init, Op, Pair, ParamKind, ParamSpec, Reads, Role, ShapeInput,
    bounded, checked_numel, image, is_one, is_true, nonzero, one, out_len, py_bool, py_pair,
    too_small, yes,
};

/// 2-D convolution (`torch.nn.Conv2d`). Units are output channels.
///
/// Channel behaviour: a dense convolution (`groups = 1`) creates its output channels as
/// prunable units and reads every input channel (its weight's axis 1 follows the input). A
/// depthwise convolution (`groups = in_channels = out_channels`, channel multiplier 1; the
/// MobileNet/EfficientNet block) maps channel *c* to channel *c*, so its channels follow its
/// input: it is not a prunable layer of its own, and removing channel *c* of its input
/// removes its filter *c* (weight axis 0) and bias *c*, and narrows `in_channels`,
/// `out_channels` and `groups` together. It still counts as a layer ([`Role::Layer`]) with
/// MACs. Any other grouped convolution — ResNeXt and RegNet's grouped 3×3 convs, or a
/// depthwise conv with a channel multiplier (`groups = in_channels`, `out_channels = k ·
/// in_channels`, k > 1) — reads its input by groups ([`Reads::Grouped`]): its weight's axis
/// 1 indexes the input channels within a group ([`ParamSpec::group_in_axis`]), and narrowing
/// keeps `groups` (the input and output channels must stay divisible by it). The analysis
/// decides whether such a conv is held fixed or pruned within its groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2d {
    /// Channels read.
    pub in_channels: usize,
    /// Channels produced.
    pub out_channels: usize,
    /// Kernel size.
    pub kernel_size: Pair,
    /// Stride (default 1).
    #[serde(default = "Pair::one", skip_serializing_if = "Pair::is_one")]
    pub stride: Pair,
    /// Zero padding (default 0).
    #[serde(default = "Pair::zero", skip_serializing_if = "Pair::is_zero")]
    pub padding: Pair,
    /// Dilation (default 1).
    #[serde(default = "Pair::one", skip_serializing_if = "Pair::is_one")]
    pub dilation: Pair,
    /// Groups (default 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub groups: usize,
    /// Whether there is a bias (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub bias: bool,
}

impl Conv2d {
    /// A square-kernel convolution with PyTorch's defaults (stride 1, no padding, dilation
    /// 1, groups 1, bias).
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Conv2d {
            in_channels,
            out_channels,
            kernel_size: Pair::square(kernel),
            stride: Pair::one(),
            padding: Pair::zero(),
            dilation: Pair::one(),
            groups: 1,
            bias: true,
        }
    }

    /// The same convolution with square padding `p`.
    pub fn with_padding(self, p: usize) -> Self {
        Conv2d {
            padding: Pair::square(p),
            ..self
        }
    }

    /// Whether channel *c* reads only input channel *c* (depthwise).
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_channels && self.out_channels == self.in_channels
    }

    fn weight_shape(&self) -> Vec<usize> {
        vec![
            self.out_channels,
            self.in_channels / self.groups.max(1),
            self.kernel_size.0,
            self.kernel_size.1,
        ]
    }
}

impl Contract for Conv2d {
    fn after_surgery(&self) -> AfterSurgery {
        AfterSurgery::Refit(Refit {
            weight_inputs: self.in_channels / self.groups.max(1)
                * self.kernel_size.0
                * self.kernel_size.1,
            bias: self.bias,
            window: Some(Window {
                kernel: self.kernel_size,
                stride: self.stride,
                padding: self.padding,
                dilation: self.dilation,
            }),
            groups: self.groups,
        })
    }
    fn scoring(&self) -> Scoring {
        Scoring::default()
    }
    fn with_bias(&self, bias: bool) -> Option<Op> {
        Some(
            Conv2d {
                bias,
                ..self.clone()
            }
            .into(),
        )
    }
    fn folds_output_scale(&self) -> bool {
        true
    }
    fn onnx(&self, _ctx: &OnnxContext) -> Result<OnnxSpec, String> {
        Ok(OnnxSpec::with_params(
            "Conv",
            vec![
                ("kernel_shape", ints_pair(self.kernel_size)),
                ("strides", ints_pair(self.stride)),
                ("pads", pads(self.padding)),
                ("dilations", ints_pair(self.dilation)),
                ("group", OnnxAttr::Int(self.groups as i64)),
            ],
        ))
    }
    fn arity(&self) -> Arity {
        Arity::exactly(1)
    }

    fn role(&self) -> Role {
        Role::Layer
    }

    fn check(&self) -> Result<(), String> {
        nonzero("in_channels", self.in_channels)?;
        nonzero("out_channels", self.out_channels)?;
        nonzero("kernel_size", self.kernel_size.min())?;
        nonzero("stride", self.stride.min())?;
        nonzero("dilation", self.dilation.min())?;
        nonzero("groups", self.groups)?;
        for (what, p) in [
            ("kernel_size", self.kernel_size),
            ("stride", self.stride),
            ("padding", self.padding),
            ("dilation", self.dilation),
        ] {
            bounded(what, p.0.max(p.1))?;
        }
        if !self.in_channels.is_multiple_of(self.groups)
            || !self.out_channels.is_multiple_of(self.groups)
        {
            return Err(format!(
                "groups = {} must divide in_channels = {} and out_channels = {}",
                self.groups, self.in_channels, self.out_channels
            ));
        }
        checked_numel("the weight", &self.weight_shape())?;
        Ok(())
    }

    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String> {
        let (c, h, w) = image(inputs, 0)?;
        if c != self.in_channels {
            return Err(format!(
                "in_channels is {} but the input '{}' has {c} channels (shape {:?})",
                self.in_channels, inputs[0].0, inputs[0].1
            ));
        }
        let (k, s, p, d) = (self.kernel_size, self.stride, self.padding, self.dilation);
        let oh = out_len(h, k.0, s.0, p.0, d.0, false)?;
        let ow = out_len(w, k.1, s.1, p.1, d.1, false)?;
        match (oh, ow) {
            (Some(oh), Some(ow)) => {
                let shape = vec![self.out_channels, oh, ow];
                checked_numel("the output", &shape)?;
                Ok(shape)
            }
            _ => Err(too_small(inputs[0], k)),
        }
    }

    fn params(&self, node: &str) -> Vec<ParamSpec> {
        let mut weight = ParamSpec::new(
            node,
            ParamKind::Weight,
            self.weight_shape(),
            Init::KaimingNormalFanOut,
        )
        .out_axis(0);
        if self.groups == 1 {
            weight = weight.in_axis(1);
        } else if !self.is_depthwise() {
            weight = weight.group_in_axis(1);
        }
        let mut v = vec![weight];
        if self.bias {
            v.push(
                ParamSpec::new(node, ParamKind::Bias, vec![self.out_channels], Init::Zeros)
                    .out_axis(0),
            );
        }
        v
    }

    fn macs(&self, output: &[usize]) -> Option<u64> {
        let per_position = checked_numel("", &self.weight_shape()).ok()? as u64;
        let spatial: u64 = output[1..]
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))?;
        spatial.checked_mul(per_position)
    }

    fn channels(&self) -> Channels {
        if self.is_depthwise() {
            Channels::Follow
        } else {
            Channels::Create {
                units: self.out_channels,
                reads: if self.groups == 1 {
                    Reads::All
                } else {
                    Reads::Grouped {
                        groups: self.groups,
                    }
                },
            }
        }
    }

    fn narrowed(&self, inputs: &[&[usize]], units: Option<usize>) -> Result<Op, String> {
        let new_in = inputs[0][0];
        let mut op = self.clone();
        if self.is_depthwise() {
            op.in_channels = new_in;
            op.out_channels = new_in;
            op.groups = new_in;
        } else {
            op.in_channels = new_in;
            if let Some(u) = units {
                op.out_channels = u;
            }
            if !op.in_channels.is_multiple_of(self.groups)
                || !op.out_channels.is_multiple_of(self.groups)
            {
                return Err(format!(
                    "a grouped convolution (groups = {}) must keep a multiple of {} input and output channels, not {} and {} (every group keeps as many)",
                    self.groups, self.groups, op.in_channels, op.out_channels
                ));
            }
        }
        Ok(op.into())
    }

    fn torch_module(&self) -> Option<String> {
        Some(format!(
            "nn.Conv2d({}, {}, kernel_size={}, stride={}, padding={}, dilation={}, groups={}, bias={})",
            self.in_channels,
            self.out_channels,
            py_pair(self.kernel_size),
            py_pair(self.stride),
            py_pair(self.padding),
            py_pair(self.dilation),
            self.groups,
            py_bool(self.bias)
        ))
    }
}
