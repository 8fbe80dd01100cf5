//! Ops: what each node computes, its shape rule, its parameters and its MAC count.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A (height, width) pair. In TOML/JSON it is written `[h, w]`; a single integer `k` means
/// `[k, k]`, as in PyTorch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pair(pub usize, pub usize);

impl Pair {
    /// `[k, k]`.
    pub const fn square(k: usize) -> Self {
        Pair(k, k)
    }
    fn one() -> Self {
        Pair(1, 1)
    }
    fn zero() -> Self {
        Pair(0, 0)
    }
    fn is_one(&self) -> bool {
        *self == Pair(1, 1)
    }
    fn is_zero(&self) -> bool {
        *self == Pair(0, 0)
    }
}

impl fmt::Display for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {}]", self.0, self.1)
    }
}

impl Serialize for Pair {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        [self.0, self.1].serialize(s)
    }
}

impl<'de> Deserialize<'de> for Pair {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Pair;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative integer k or a pair [h, w]")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Pair, E> {
                Ok(Pair::square(v as usize))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Pair, E> {
                usize::try_from(v)
                    .map(Pair::square)
                    .map_err(|_| E::custom(format!("expected a non-negative integer, found {v}")))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Pair, A::Error> {
                use serde::de::Error;
                let h: usize = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let w: usize = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                if seq.next_element::<usize>()?.is_some() {
                    return Err(A::Error::invalid_length(3, &self));
                }
                Ok(Pair(h, w))
            }
        }
        d.deserialize_any(V)
    }
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn one() -> usize {
    1
}
fn is_one(v: &usize) -> bool {
    *v == 1
}
fn bn_eps() -> f64 {
    1e-5
}
fn bn_momentum() -> f64 {
    0.1
}
fn half() -> f64 {
    0.5
}

/// What a node computes. Shapes exclude the batch dimension: `[C, H, W]` for images,
/// `[F]` for feature vectors. Defaults follow PyTorch's constructors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// The network input, e.g. `shape = [3, 32, 32]`.
    Input {
        /// Per-sample shape.
        shape: Vec<usize>,
    },
    /// 2-D convolution (`torch.nn.Conv2d`). Units are output channels.
    Conv2d {
        /// Channels read.
        in_channels: usize,
        /// Channels produced.
        out_channels: usize,
        /// Kernel size.
        kernel_size: Pair,
        /// Stride (default 1).
        #[serde(default = "Pair::one", skip_serializing_if = "Pair::is_one")]
        stride: Pair,
        /// Zero padding (default 0).
        #[serde(default = "Pair::zero", skip_serializing_if = "Pair::is_zero")]
        padding: Pair,
        /// Dilation (default 1).
        #[serde(default = "Pair::one", skip_serializing_if = "Pair::is_one")]
        dilation: Pair,
        /// Groups (default 1).
        #[serde(default = "one", skip_serializing_if = "is_one")]
        groups: usize,
        /// Whether there is a bias (default true).
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        bias: bool,
    },
    /// Batch normalisation over channels of `[C, H, W]` (`torch.nn.BatchNorm2d`).
    BatchNorm2d {
        /// Channels.
        num_features: usize,
        /// Epsilon (default 1e-5).
        #[serde(default = "bn_eps")]
        eps: f64,
        /// Running-statistics momentum (default 0.1).
        #[serde(default = "bn_momentum")]
        momentum: f64,
    },
    /// Batch normalisation over features of `[F]` (`torch.nn.BatchNorm1d`).
    BatchNorm1d {
        /// Features.
        num_features: usize,
        /// Epsilon (default 1e-5).
        #[serde(default = "bn_eps")]
        eps: f64,
        /// Running-statistics momentum (default 0.1).
        #[serde(default = "bn_momentum")]
        momentum: f64,
    },
    /// Rectified linear unit.
    Relu,
    /// Max pooling (`torch.nn.MaxPool2d`).
    MaxPool2d {
        /// Window.
        kernel_size: Pair,
        /// Stride (default: the window).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<Pair>,
        /// Padding (default 0).
        #[serde(default = "Pair::zero", skip_serializing_if = "Pair::is_zero")]
        padding: Pair,
        /// Round the output size up instead of down (default false).
        #[serde(default, skip_serializing_if = "is_false")]
        ceil_mode: bool,
    },
    /// Average pooling (`torch.nn.AvgPool2d`).
    AvgPool2d {
        /// Window.
        kernel_size: Pair,
        /// Stride (default: the window).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<Pair>,
        /// Padding (default 0).
        #[serde(default = "Pair::zero", skip_serializing_if = "Pair::is_zero")]
        padding: Pair,
        /// Round the output size up instead of down (default false).
        #[serde(default, skip_serializing_if = "is_false")]
        ceil_mode: bool,
        /// Count padded zeros in the average (default true).
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        count_include_pad: bool,
    },
    /// Adaptive average pooling to a fixed output size.
    AdaptiveAvgPool2d {
        /// Output (height, width).
        output_size: Pair,
    },
    /// Flattens `[C, H, W]` to `[C·H·W]` (channel-major, as `torch.flatten(x, 1)`).
    Flatten,
    /// Fully connected layer (`torch.nn.Linear`). Units are output features.
    Linear {
        /// Features read.
        in_features: usize,
        /// Features produced.
        out_features: usize,
        /// Whether there is a bias (default true).
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        bias: bool,
    },
    /// Dropout (identity in eval mode).
    Dropout {
        /// Drop probability (default 0.5).
        #[serde(default = "half")]
        p: f64,
    },
    /// Element-wise sum of two or more tensors of the same shape (residual connections).
    Add,
    /// Concatenation along the channel axis (DenseNet).
    Concat,
}

/// The role of a parameter tensor; decides whether it is trained and how it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// A weight (conv kernel, linear matrix, BatchNorm scale).
    Weight,
    /// A bias (BatchNorm shift included).
    Bias,
    /// BatchNorm running mean (a buffer).
    RunningMean,
    /// BatchNorm running variance (a buffer).
    RunningVar,
    /// BatchNorm's int64 step counter (a buffer), kept for PyTorch state-dict compatibility.
    NumBatchesTracked,
}

impl ParamKind {
    /// Trainable parameters count towards the parameter total; buffers do not.
    pub fn is_trainable(self) -> bool {
        matches!(self, ParamKind::Weight | ParamKind::Bias)
    }
    /// The suffix after the node name (`weight`, `bias`, `running_mean`, ...).
    pub fn suffix(self) -> &'static str {
        match self {
            ParamKind::Weight => "weight",
            ParamKind::Bias => "bias",
            ParamKind::RunningMean => "running_mean",
            ParamKind::RunningVar => "running_var",
            ParamKind::NumBatchesTracked => "num_batches_tracked",
        }
    }
}

/// One tensor a node owns, named `<node>.<suffix>` as in a PyTorch state dict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// Full name, e.g. `features.0.weight`.
    pub name: String,
    /// Its role.
    pub kind: ParamKind,
    /// Its shape (empty for a scalar).
    pub shape: Vec<usize>,
}

impl ParamSpec {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

fn out_len(input: usize, k: usize, s: usize, p: usize, d: usize, ceil: bool) -> Option<usize> {
    let span = d * (k - 1) + 1;
    let padded = input + 2 * p;
    if padded < span {
        return None;
    }
    let mut out = if ceil {
        (padded - span).div_ceil(s) + 1
    } else {
        (padded - span) / s + 1
    };
    // PyTorch: with ceil_mode the last window must start inside the input or left padding.
    if ceil && (out - 1) * s >= input + p {
        out -= 1;
    }
    Some(out)
}

impl Op {
    /// The op's name as written in TOML/JSON (`conv2d`, `batch_norm2d`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Conv2d { .. } => "conv2d",
            Op::BatchNorm2d { .. } => "batch_norm2d",
            Op::BatchNorm1d { .. } => "batch_norm1d",
            Op::Relu => "relu",
            Op::MaxPool2d { .. } => "max_pool2d",
            Op::AvgPool2d { .. } => "avg_pool2d",
            Op::AdaptiveAvgPool2d { .. } => "adaptive_avg_pool2d",
            Op::Flatten => "flatten",
            Op::Linear { .. } => "linear",
            Op::Dropout { .. } => "dropout",
            Op::Add => "add",
            Op::Concat => "concat",
        }
    }

    /// How many inputs the op takes: (minimum, maximum, description).
    fn arity(&self) -> (usize, usize, &'static str) {
        match self {
            Op::Input { .. } => (0, 0, "0"),
            Op::Add => (2, usize::MAX, "at least 2"),
            Op::Concat => (1, usize::MAX, "at least 1"),
            _ => (1, 1, "1"),
        }
    }

    /// Whether the op's units (output channels / features) can be pruned.
    pub fn is_prunable(&self) -> bool {
        matches!(self, Op::Conv2d { .. } | Op::Linear { .. })
    }

    /// The parameter tensors a node with this op owns, in PyTorch state-dict order.
    pub fn params(&self, node: &str) -> Vec<ParamSpec> {
        let p = |kind: ParamKind, shape: Vec<usize>| ParamSpec {
            name: format!("{node}.{}", kind.suffix()),
            kind,
            shape,
        };
        match *self {
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel_size,
                groups,
                bias,
                ..
            } => {
                let mut v = vec![p(
                    ParamKind::Weight,
                    vec![
                        out_channels,
                        in_channels / groups.max(1),
                        kernel_size.0,
                        kernel_size.1,
                    ],
                )];
                if bias {
                    v.push(p(ParamKind::Bias, vec![out_channels]));
                }
                v
            }
            Op::Linear {
                in_features,
                out_features,
                bias,
            } => {
                let mut v = vec![p(ParamKind::Weight, vec![out_features, in_features])];
                if bias {
                    v.push(p(ParamKind::Bias, vec![out_features]));
                }
                v
            }
            Op::BatchNorm2d { num_features, .. } | Op::BatchNorm1d { num_features, .. } => vec![
                p(ParamKind::Weight, vec![num_features]),
                p(ParamKind::Bias, vec![num_features]),
                p(ParamKind::RunningMean, vec![num_features]),
                p(ParamKind::RunningVar, vec![num_features]),
                p(ParamKind::NumBatchesTracked, vec![]),
            ],
            _ => Vec::new(),
        }
    }

    /// Number of trainable parameters.
    pub fn param_count(&self) -> usize {
        self.params("")
            .iter()
            .filter(|p| p.kind.is_trainable())
            .map(ParamSpec::numel)
            .sum()
    }

    /// Multiply-accumulate operations for one sample. Only convolutions and linear layers
    /// count (bias additions, normalisation, activations and pooling are not MACs); this is
    /// the convention behind the usual published figures (ResNet-50 ≈ 4.1 G at 224²).
    pub fn macs(&self, output: &[usize]) -> u64 {
        match *self {
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel_size,
                groups,
                ..
            } => {
                let spatial: usize = output[1..].iter().product();
                (spatial
                    * out_channels
                    * (in_channels / groups.max(1))
                    * kernel_size.0
                    * kernel_size.1) as u64
            }
            Op::Linear {
                in_features,
                out_features,
                ..
            } => (in_features * out_features) as u64,
            _ => 0,
        }
    }

    /// Checks the op's attributes (independent of inputs).
    pub(crate) fn check_attributes(&self) -> Result<(), String> {
        let nonzero = |what: &str, v: usize| {
            if v == 0 {
                Err(format!("{what} must be at least 1"))
            } else {
                Ok(())
            }
        };
        match self {
            Op::Input { shape } => {
                if shape.is_empty() || shape.contains(&0) {
                    return Err(format!(
                        "input shape must be non-empty with positive sizes, e.g. [3, 32, 32]; found {shape:?}"
                    ));
                }
            }
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel_size,
                stride,
                dilation,
                groups,
                ..
            } => {
                nonzero("in_channels", *in_channels)?;
                nonzero("out_channels", *out_channels)?;
                nonzero("kernel_size", kernel_size.0.min(kernel_size.1))?;
                nonzero("stride", stride.0.min(stride.1))?;
                nonzero("dilation", dilation.0.min(dilation.1))?;
                nonzero("groups", *groups)?;
                if in_channels % groups != 0 || out_channels % groups != 0 {
                    return Err(format!(
                        "groups = {groups} must divide in_channels = {in_channels} and out_channels = {out_channels}"
                    ));
                }
            }
            Op::BatchNorm2d {
                num_features, eps, ..
            }
            | Op::BatchNorm1d {
                num_features, eps, ..
            } => {
                nonzero("num_features", *num_features)?;
                if eps.is_nan() || *eps <= 0.0 {
                    return Err(format!("eps must be positive, found {eps}"));
                }
            }
            Op::MaxPool2d {
                kernel_size,
                stride,
                padding,
                ..
            }
            | Op::AvgPool2d {
                kernel_size,
                stride,
                padding,
                ..
            } => {
                nonzero("kernel_size", kernel_size.0.min(kernel_size.1))?;
                if let Some(s) = stride {
                    nonzero("stride", s.0.min(s.1))?;
                }
                if padding.0 * 2 > kernel_size.0 || padding.1 * 2 > kernel_size.1 {
                    return Err(format!(
                        "padding {padding} must be at most half the kernel size {kernel_size}"
                    ));
                }
            }
            Op::AdaptiveAvgPool2d { output_size } => {
                nonzero("output_size", output_size.0.min(output_size.1))?
            }
            Op::Linear {
                in_features,
                out_features,
                ..
            } => {
                nonzero("in_features", *in_features)?;
                nonzero("out_features", *out_features)?;
            }
            Op::Dropout { p } => {
                if !(0.0..1.0).contains(p) {
                    return Err(format!("dropout p must be in [0, 1), found {p}"));
                }
            }
            Op::Relu | Op::Flatten | Op::Add | Op::Concat => {}
        }
        Ok(())
    }

    /// Infers the output shape from the input shapes (attributes already checked).
    pub(crate) fn infer(&self, inputs: &[(&str, &[usize])]) -> Result<Vec<usize>, ShapeProblem> {
        let (lo, hi, expected) = self.arity();
        if inputs.len() < lo || inputs.len() > hi {
            return Err(ShapeProblem::Arity {
                expected,
                found: inputs.len(),
            });
        }
        let image = |i: usize| -> Result<(usize, usize, usize), ShapeProblem> {
            let (from, s) = inputs[i];
            match s {
                [c, h, w] => Ok((*c, *h, *w)),
                _ => Err(ShapeProblem::Detail(format!(
                    "expected an image-shaped input [C, H, W], found {s:?} from '{from}'"
                ))),
            }
        };
        let shape = match self {
            Op::Input { shape } => shape.clone(),
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                dilation,
                ..
            } => {
                let (c, h, w) = image(0)?;
                if c != *in_channels {
                    return Err(ShapeProblem::Detail(format!(
                        "in_channels is {in_channels} but the input '{}' has {c} channels (shape {:?})",
                        inputs[0].0, inputs[0].1
                    )));
                }
                let oh = out_len(h, kernel_size.0, stride.0, padding.0, dilation.0, false);
                let ow = out_len(w, kernel_size.1, stride.1, padding.1, dilation.1, false);
                match (oh, ow) {
                    (Some(oh), Some(ow)) => vec![*out_channels, oh, ow],
                    _ => return Err(too_small(inputs[0], *kernel_size)),
                }
            }
            Op::BatchNorm2d { num_features, .. } => {
                let (c, _, _) = image(0)?;
                if c != *num_features {
                    return Err(ShapeProblem::Detail(format!(
                        "num_features is {num_features} but the input '{}' has {c} channels",
                        inputs[0].0
                    )));
                }
                inputs[0].1.to_vec()
            }
            Op::BatchNorm1d { num_features, .. } => match inputs[0].1 {
                [f] if f == num_features => vec![*f],
                s => {
                    return Err(ShapeProblem::Detail(format!(
                        "expected a feature vector [{num_features}], found {s:?} from '{}'",
                        inputs[0].0
                    )));
                }
            },
            Op::Relu | Op::Dropout { .. } => inputs[0].1.to_vec(),
            Op::MaxPool2d {
                kernel_size,
                stride,
                padding,
                ceil_mode,
            }
            | Op::AvgPool2d {
                kernel_size,
                stride,
                padding,
                ceil_mode,
                ..
            } => {
                let (c, h, w) = image(0)?;
                let s = stride.unwrap_or(*kernel_size);
                let oh = out_len(h, kernel_size.0, s.0, padding.0, 1, *ceil_mode);
                let ow = out_len(w, kernel_size.1, s.1, padding.1, 1, *ceil_mode);
                match (oh, ow) {
                    (Some(oh), Some(ow)) => vec![c, oh, ow],
                    _ => return Err(too_small(inputs[0], *kernel_size)),
                }
            }
            Op::AdaptiveAvgPool2d { output_size } => {
                let (c, _, _) = image(0)?;
                vec![c, output_size.0, output_size.1]
            }
            Op::Flatten => vec![inputs[0].1.iter().product()],
            Op::Linear {
                in_features,
                out_features,
                ..
            } => match inputs[0].1 {
                [f] if f == in_features => vec![*out_features],
                s => {
                    return Err(ShapeProblem::Detail(format!(
                        "in_features is {in_features} but the input '{}' has shape {s:?}{}",
                        inputs[0].0,
                        if s.len() > 1 {
                            " (add a flatten node before a linear layer)"
                        } else {
                            ""
                        }
                    )));
                }
            },
            Op::Add => {
                let (first, s0) = inputs[0];
                for (from, s) in &inputs[1..] {
                    if s != &s0 {
                        return Err(ShapeProblem::Detail(format!(
                            "add needs equal shapes, but '{first}' is {s0:?} and '{from}' is {s:?}"
                        )));
                    }
                }
                s0.to_vec()
            }
            Op::Concat => {
                let (_, h, w) = image(0)?;
                let mut channels = 0;
                for (i, (from, s)) in inputs.iter().enumerate() {
                    let (c, hi, wi) = image(i)?;
                    if (hi, wi) != (h, w) {
                        return Err(ShapeProblem::Detail(format!(
                            "concat needs equal spatial sizes, but '{}' is {:?} and '{from}' is {s:?}",
                            inputs[0].0, inputs[0].1
                        )));
                    }
                    channels += c;
                }
                vec![channels, h, w]
            }
        };
        Ok(shape)
    }
}

fn too_small((from, s): (&str, &[usize]), k: Pair) -> ShapeProblem {
    ShapeProblem::Detail(format!(
        "the input '{from}' of shape {s:?} is too small for kernel {k} (the output would be empty); use a larger input size"
    ))
}

/// Why shape inference failed (turned into an [`crate::IrError`] naming the node).
pub(crate) enum ShapeProblem {
    Arity {
        expected: &'static str,
        found: usize,
    },
    Detail(String),
}
