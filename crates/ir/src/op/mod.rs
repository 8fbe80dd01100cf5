//! Ops and their pruning contract.
//!
//! Every op is a small struct (in this module's files) that implements [`Contract`], which
//! says, in one place, everything the toolkit needs to know about the op:
//!
//! - its attribute checks, shape inference, parameters and MAC count;
//! - its channel behaviour ([`Channels`]): whether it creates prunable units, passes its
//!   input's channels through, couples several inputs, concatenates or flattens them, takes
//!   a sub-range of them, or holds them fixed (channel shuffle, layer norm);
//! - how each of its tensors is sliced when channels are removed ([`ParamSpec::out_axis`],
//!   [`ParamSpec::in_axis`]) and initialised ([`Init`]);
//! - how its attributes follow when its inputs or its own units shrink
//!   ([`Contract::narrowed`]);
//! - how it is written as PyTorch ([`Contract::torch_module`], [`Contract::torch_forward`])
//!   and as ONNX ([`Contract::onnx`], op-neutral data that `fair-onnx` encodes);
//! - what the ONNX importer may rewrite into it: a constant bias added to its output
//!   ([`Contract::with_bias`]), a per-unit scale of its output ([`Contract::folds_output_scale`]),
//!   a product of its input with itself as a gate ([`Contract::self_gated`]).
//!
//! [`Op`] is the closed, serialisable set of ops, generated from one list by the `ops!`
//! macro. `docs/architecture.md`'s add-an-op checklist lists what else names ops (the
//! runtime's kernel, the ONNX importer's table).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Inside an `impl Contract`: the four answers of an op without parameters and MACs whose
/// output units are its input's and whose attributes do not depend on the widths
/// (pooling, dropout, activations, token reshuffles): `params` none, `macs` 0, `channels`
/// [`Channels::Follow`], `narrowed` the op unchanged. Each op still opts in by writing it,
/// so no op gets these answers by default.
macro_rules! follows_its_input {
    () => {
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
    };
}

mod activation;
mod attention;
mod channel;
mod conv;
mod linear;
mod norm;
mod onnx;
mod pool;
mod roles;
mod simple;
mod tokens;
mod window;

pub use activation::{Clip, Gelu, HardSigmoid, HardSwish, Relu, Sigmoid, Silu, Tanh};
pub use attention::{Attention, AttnWindows};
pub use channel::{ChannelShuffle, Slice};
pub use conv::Conv2d;
pub use linear::Linear;
pub use norm::{BatchNorm1d, BatchNorm2d, LayerNorm, LayerNorm2d};
pub use onnx::{NameBase, OnnxAttr, OnnxConst, OnnxContext, OnnxDecl, OnnxNode, OnnxRef, OnnxSpec};
pub use pool::{AdaptiveAvgPool2d, AvgPool2d, MaxPool2d};
pub use roles::{AfterSurgery, Refit, Scoring, Window};
pub use simple::{Add, Concat, Dropout, Flatten, Input, Mul};
pub use tokens::{
    ClassToken, PositionEmbedding, TokenMean, TokenRange, TokenSelect, Tokens, TokensToImage,
};
pub use window::{GridStride, WindowMerge, WindowPartition, WindowTranspose};

/// A (height, width) pair. In TOML/JSON it is written `[h, w]`; a single integer `k` means
/// `[k, k]`, as in PyTorch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pair(pub usize, pub usize);

impl Pair {
    /// `[k, k]`.
    pub const fn square(k: usize) -> Self {
        Pair(k, k)
    }
    pub(crate) fn one() -> Self {
        Pair(1, 1)
    }
    pub(crate) fn zero() -> Self {
        Pair(0, 0)
    }
    pub(crate) fn is_one(&self) -> bool {
        *self == Pair(1, 1)
    }
    pub(crate) fn is_zero(&self) -> bool {
        *self == Pair(0, 0)
    }
    /// The smaller of the two values.
    pub(crate) fn min(&self) -> usize {
        self.0.min(self.1)
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
                usize::try_from(v)
                    .map(Pair::square)
                    .map_err(|_| E::custom(format!("{v} is too large")))
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

/// How a fresh parameter tensor is initialised (torchvision's rules).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Normal with std √(2 / fan-out), fan-out = `shape[0]` × receptive field (Kaiming, ReLU
    /// gain; torchvision's rule for convolutions).
    KaimingNormalFanOut,
    /// Uniform in ±1/√fan_in (PyTorch's default for linear layers, weight and bias).
    UniformFanIn {
        /// The fan-in.
        fan_in: usize,
    },
    /// All ones (BatchNorm scale, running variance).
    Ones,
    /// All zeros (biases, running mean, counters).
    Zeros,
    /// Every element `value` (Swin V2's logit scale, ln 10).
    Constant {
        /// The value.
        value: f64,
    },
}

/// One tensor a node owns, named `<node>.<suffix>` as in a PyTorch state dict, with how it
/// is initialised and sliced.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// Full name, e.g. `features.0.weight`.
    pub name: String,
    /// Its role.
    pub kind: ParamKind,
    /// Its shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// How a fresh tensor is initialised.
    pub init: Init,
    /// The axis indexed by the node's *output* channels (or features), if any: sliced with
    /// the output channels that are kept.
    pub out_axis: Option<usize>,
    /// The axis indexed by the channels (or features) of the node's *first input*, if any:
    /// sliced with the input channels that are kept.
    pub in_axis: Option<usize>,
    /// The axis indexed by the input channels *within one group* of a grouped convolution
    /// (its weight's axis 1, of size `in_channels / groups`), if any: sliced with the kept
    /// input channels of the first group. Only valid when every group keeps the same
    /// within-group channels, which the analysis guarantees (a grouped convolution's input
    /// units map to channel *j* of every group).
    pub group_in_axis: Option<usize>,
    /// The axis indexed by the node's output *heads*, if any (an attention's relative
    /// position bias `[heads, N, N]` and logit scale `[heads]`): for an op whose channels
    /// are [`Channels::Heads`] of `head_dim`, head *h* is output channels
    /// `h·head_dim … (h+1)·head_dim`; sliced with the heads that are kept
    /// ([`ParamSpec::kept_heads`]).
    pub head_axis: Option<usize>,
}

impl ParamSpec {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// A spec for `<node>.<kind>`, with no slicing axes.
    pub(crate) fn new(node: &str, kind: ParamKind, shape: Vec<usize>, init: Init) -> Self {
        ParamSpec {
            name: format!("{node}.{}", kind.suffix()),
            kind,
            shape,
            init,
            out_axis: None,
            in_axis: None,
            group_in_axis: None,
            head_axis: None,
        }
    }

    /// A spec named `<node>.<suffix>` (a parameter whose name is not its kind's, e.g.
    /// `relative_position_bias`), with no slicing axes.
    pub(crate) fn named(
        node: &str,
        suffix: &str,
        kind: ParamKind,
        shape: Vec<usize>,
        init: Init,
    ) -> Self {
        ParamSpec {
            name: format!("{node}.{suffix}"),
            ..Self::new(node, kind, shape, init)
        }
    }

    /// Sets the axis that follows the node's output heads.
    pub(crate) fn head_axis(mut self, axis: usize) -> Self {
        self.head_axis = Some(axis);
        self
    }

    /// The kept heads (ascending) given the kept output channels `channels` (ascending) of
    /// an op whose heads are `head_dim` channels each: head *h* is kept when its first
    /// channel `h·head_dim` is (heads are kept or removed whole).
    ///
    /// ```
    /// assert_eq!(fair_ir::ParamSpec::kept_heads(&[0, 1, 4, 5], 2), [0, 2]);
    /// ```
    pub fn kept_heads(channels: &[i64], head_dim: usize) -> Vec<i64> {
        let d = head_dim.max(1) as i64;
        channels
            .iter()
            .filter(|&&c| c % d == 0)
            .map(|&c| c / d)
            .collect()
    }

    /// Sets the axis that follows the node's output channels.
    pub(crate) fn out_axis(mut self, axis: usize) -> Self {
        self.out_axis = Some(axis);
        self
    }

    /// Sets the axis that follows the node's first input's channels.
    pub(crate) fn in_axis(mut self, axis: usize) -> Self {
        self.in_axis = Some(axis);
        self
    }

    /// Sets the axis that follows the input channels within one group.
    pub(crate) fn group_in_axis(mut self, axis: usize) -> Self {
        self.group_in_axis = Some(axis);
        self
    }
}

/// How an op's output channels relate to its inputs' channels: what dependency analysis and
/// surgery need to know about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channels {
    /// The network input: a fixed set of channels that is never pruned.
    Source,
    /// Creates `units` new units (a convolution's output channels, a linear layer's output
    /// features) that can be pruned. `reads` says how it reads its input's channels.
    Create {
        /// Number of units.
        units: usize,
        /// How the input's channels are read.
        reads: Reads,
    },
    /// Output channel *c* is computed from input channel *c* only (BatchNorm, activations,
    /// pooling, dropout, depthwise convolution): the output has the input's channels.
    Follow,
    /// Element-wise over several inputs with equal channels (residual add; a gating mul,
    /// whose `[C, 1, 1]` gate broadcasts over `[C, H, W]`): the inputs' channels are coupled
    /// position by position and must be kept or removed together; the output has the first
    /// input's channels.
    Couple,
    /// The output is the inputs' channels one after another (DenseNet).
    Concat,
    /// `[C, H, W]` to `[C·H·W]`, channel-major: each input channel becomes H·W features.
    Flatten,
    /// The output has the input's channel count, but no channel can be removed: every
    /// channel of the input is held fixed (whatever produced it keeps all its units), and the
    /// output is a new fixed set of channels, like the network input. For ops whose result
    /// per channel depends on which other channels exist: a channel shuffle (its permutation
    /// only exists for a channel count divisible by its groups, and removing channels
    /// reorders the rest), a layer norm over the channels (its mean and variance mix them).
    Fixed,
    /// The contiguous sub-range `start..end` of the input's channels (or features), e.g. one
    /// half of a ShuffleNet unit's `chunk(2, dim=1)`. The output holds those channels in
    /// order; the input's channels are held fixed, so the range never moves.
    Slice {
        /// First channel taken.
        start: usize,
        /// One past the last channel taken.
        end: usize,
    },
    /// Multi-head attention: like [`Channels::Couple`], the inputs' channels (q, k, v) are
    /// coupled position by position and the output has the same channels, but units are
    /// whole heads of `head_dim` consecutive channels (the analysis maps them with a chunk
    /// map): a head's q, k and v channels are kept or removed together, and the head
    /// dimension is kept.
    Heads {
        /// Channels per head.
        head_dim: usize,
    },
}

/// How a unit-creating op reads its input's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Every output unit reads every input channel (or feature): input channels can be
    /// removed by slicing the input axis of the weights.
    All,
    /// A grouped convolution: output group *g* reads input group *g* only, through the
    /// weight axis [`ParamSpec::group_in_axis`]. Its input channels and its units are `groups`
    /// blocks; the analysis either holds them fixed (its default) or maps each unit to
    /// channel *j* of every block, so that every group loses the same within-group channels
    /// and the group count is kept.
    Grouped {
        /// The number of groups.
        groups: usize,
    },
}

/// What kind of computation an op is; lets scorers find "the BatchNorm after a layer" or
/// "the activation after it" without naming ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The network input.
    Input,
    /// A layer with weights that creates units (convolution, linear).
    Layer,
    /// A per-channel normalisation with running statistics (BatchNorm): what scorers take as
    /// "the BatchNorm after a layer".
    Normalization,
    /// A normalisation over each position's channel vector without running statistics
    /// (ConvNeXt's `LayerNorm2d`): its statistics mix channels, so it is never taken as "the
    /// BatchNorm after a layer".
    LayerNormalization,
    /// An element-wise activation (ReLU, clip/ReLU6, sigmoid, hard sigmoid, hard swish,
    /// SiLU, GELU).
    Activation,
    /// Pooling: over an image's positions (max, average pooling), or over tokens (their
    /// mean, one chosen token).
    Pooling,
    /// A change of layout only (flatten, channel shuffle, channel slice, an image's pixels
    /// as tokens).
    Reshape,
    /// Combines several inputs (add, mul, concat; attention's queries, keys and values).
    Merge,
    /// Puts a learned tensor into its one input without creating units: each parameter holds
    /// one value per unit of its input and loses the units its input loses (a vision
    /// transformer's class token, put before the tokens, and position embedding, added to
    /// them). Never taken as a layer, a normalisation or an activation by scorers.
    Embedding,
    /// The identity at inference time (dropout).
    Regularization,
}

/// How many inputs an op takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arity {
    /// At least this many.
    pub min: usize,
    /// At most this many.
    pub max: usize,
}

impl Arity {
    /// Exactly `n` inputs.
    pub const fn exactly(n: usize) -> Self {
        Arity { min: n, max: n }
    }
    /// `n` or more inputs.
    pub const fn at_least(n: usize) -> Self {
        Arity {
            min: n,
            max: usize::MAX,
        }
    }
    fn describe(&self) -> String {
        if self.max == usize::MAX {
            format!("at least {}", self.min)
        } else if self.min == self.max {
            self.min.to_string()
        } else {
            format!("{} to {}", self.min, self.max)
        }
    }
}

/// One input as shape inference sees it: the reading node's name and its output shape.
pub type ShapeInput<'a> = (&'a str, &'a [usize]);

/// Everything the toolkit needs to know about an op, in one place.
///
/// Implementations must not panic on any attribute values: [`Contract::check`] runs first and
/// rejects out-of-range attributes, and [`Contract::infer`] uses checked arithmetic so huge
/// sizes become errors, not wrapped numbers.
pub trait Contract {
    /// How many inputs the op takes.
    fn arity(&self) -> Arity;

    /// What kind of computation it is.
    fn role(&self) -> Role;

    /// Checks the attributes on their own (independent of the inputs): positive sizes,
    /// groups dividing channels, probabilities in range, sizes that do not overflow.
    fn check(&self) -> Result<(), String>;

    /// The output shape (without the batch dimension) for `inputs`; attributes are checked.
    fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, String>;

    /// The tensors a node called `node` with this op owns, in PyTorch state-dict order.
    fn params(&self, node: &str) -> Vec<ParamSpec>;

    /// Multiply-accumulates per sample, given the op's output shape (`None` on overflow).
    /// Only convolutions, linear layers and attention's two matrix products count.
    fn macs(&self, output: &[usize]) -> Option<u64>;

    /// How the output channels relate to the inputs' channels.
    fn channels(&self) -> Channels;

    /// The same op after its inputs changed to `inputs` (new shapes) and, for an op that
    /// creates units, after its units became `units`: channel attributes follow.
    fn narrowed(&self, inputs: &[&[usize]], units: Option<usize>) -> Result<Op, String>;

    /// How the op is written in ONNX: the ONNX nodes, their attributes and what they read
    /// (see [`OnnxSpec`]). No default: an op without an ONNX spelling says so with an
    /// `Err` explaining why, which the exporter reports naming the node and the op.
    fn onnx(&self, ctx: &OnnxContext) -> Result<OnnxSpec, String>;

    /// What the op needs after surgery: a refit of its weights (reader reconstruction), a
    /// re-estimate of its running statistics (BatchNorm recalibration), or nothing. No
    /// default: every op says it.
    fn after_surgery(&self) -> AfterSurgery;

    /// What scorers need to know about the op (see [`Scoring`]). No default: every op says
    /// it.
    fn scoring(&self) -> Scoring;

    /// Numbers per sample that autograd keeps for the backward pass besides the output
    /// itself (the R-Score's memory estimate), given the op's output shape. Default:
    /// [`Scoring::saved_for_backward`] tensors of the output's size; an op whose saved
    /// tensors are not a multiple of its output (attention's `[heads, T, T]` weights)
    /// overrides it.
    fn saved_for_backward(&self, output: &[usize]) -> u64 {
        let numel = output.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64));
        self.scoring().saved_for_backward.saturating_mul(numel)
    }

    /// Import rewrites: the same op with its optional bias present (`bias = true`) or absent,
    /// for an op whose output is `f(x) + bias` with one bias value per unit (the
    /// [`ParamKind::Bias`] tensor of [`Contract::params`], along the output's unit axis).
    /// The ONNX importer folds `Add(layer(x), constant)` into a bias-free layer through
    /// `with_bias(true)`. Default `None`: the op has no optional bias. Every
    /// [`Role::Layer`] answers (a test checks it).
    fn with_bias(&self, _bias: bool) -> Option<Op> {
        None
    }

    /// Import rewrites: whether multiplying the op's output by one constant per unit folds
    /// into its parameters, that is, scaling every parameter along its
    /// [`ParamSpec::out_axis`] by the unit's factor scales the output unit by it (an op
    /// linear in its weight and bias). The ONNX importer folds layer scales (ConvNeXt's `Mul`
    /// by γ) into such ops. Default `false`. Every [`Role::Layer`] answers (a test checks
    /// it).
    fn folds_output_scale(&self) -> bool {
        false
    }

    /// Import rewrites: for an element-wise gate `g`, the op that computes `x · g(x)` (the
    /// gate applied to its own input), when the IR has one: sigmoid's is SiLU. The ONNX
    /// importer fuses `Mul(x, g(x))` into it. Default `None`.
    fn self_gated(&self) -> Option<Op> {
        None
    }

    /// The `torch.nn` module that computes the op (`None` for ops written as an expression
    /// in `forward`).
    fn torch_module(&self) -> Option<String>;

    /// The Python expression that computes the op in `forward`, given the inputs' variable
    /// names and `module`, the expression that fetches the node's module.
    fn torch_forward(&self, inputs: &[String], module: &str) -> String {
        format!("{module}({})", inputs[0])
    }

    /// [`Contract::torch_forward`] for an op whose Python depends on its inputs' shapes
    /// (`shapes`, without the batch dimension, in input order): a concat of tokens joins the
    /// last axis, of images axis 1. The exporter calls this one. Default:
    /// [`Contract::torch_forward`].
    fn torch_forward_shaped(&self, inputs: &[String], shapes: &[&[usize]], module: &str) -> String {
        let _ = shapes;
        self.torch_forward(inputs, module)
    }

    /// Python source the exported `model.py` needs at module level before the model class
    /// (a helper `nn.Module` its [`Contract::torch_module`] names), or `None`. Ops that
    /// return the same text share one copy.
    fn torch_prelude(&self) -> Option<&'static str> {
        None
    }
}

/// Generates [`Op`] from one list of (variant, struct, type name), and [`with_ops!`], which
/// hands the same list to another crate's macro (the runtime's kernel dispatch).
/// `$d` is a literal `$`, for the nested macro's own metavariables.
macro_rules! ops {
    ($d:tt; $( $(#[$doc:meta])* $variant:ident($ty:ident) = $name:literal, )*) => {
        /// Calls `$callback! { Variant(Struct), ... }` with every op of [`Op`], in the op
        /// list's order, so that other crates generate per-op code (e.g. the runtime's kernel
        /// dispatch) from the one list instead of writing a `match` by hand: an op added to
        /// the list without its part there fails to compile.
        ///
        /// ```
        /// macro_rules! count {
        ///     ($($variant:ident($ty:ident),)*) => { [$(stringify!($variant)),*].len() };
        /// }
        /// assert_eq!(fair_ir::with_ops!(count), fair_ir::Op::TYPE_NAMES.len());
        /// ```
        #[macro_export]
        macro_rules! with_ops {
            ($d callback:ident) => {
                $d callback! { $( $variant($ty), )* }
            };
        }

        /// What a node computes: one of the op structs, tagged by its `type` in TOML/JSON
        /// (e.g. `op = { type = "conv2d", in_channels = 3, out_channels = 64, kernel_size = 3 }`).
        /// Shapes exclude the batch dimension: `[C, H, W]` for images, `[F]` for feature
        /// vectors. Defaults follow PyTorch's constructors. Every op implements [`Contract`].
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        #[non_exhaustive]
        pub enum Op {
            $( $(#[$doc])* #[serde(rename = $name)] $variant($ty), )*
        }

        impl Op {
            /// Every op's name as written in TOML/JSON, in the order of the op list.
            pub const TYPE_NAMES: &'static [&'static str] = &[$($name),*];

            /// The op's contract.
            pub fn contract(&self) -> &dyn Contract {
                match self { $( Op::$variant(op) => op, )* }
            }

            /// The op's name as written in TOML/JSON (`conv2d`, `batch_norm2d`, ...).
            pub fn type_name(&self) -> &'static str {
                match self { $( Op::$variant(_) => $name, )* }
            }
        }

        $( impl From<$ty> for Op {
            fn from(op: $ty) -> Op {
                Op::$variant(op)
            }
        } )*
    };
}

ops! {
    $;
    /// The network input.
    Input(Input) = "input",
    /// 2-D convolution (`torch.nn.Conv2d`).
    Conv2d(Conv2d) = "conv2d",
    /// Batch normalisation over image channels (`torch.nn.BatchNorm2d`).
    BatchNorm2d(BatchNorm2d) = "batch_norm2d",
    /// Batch normalisation over features (`torch.nn.BatchNorm1d`).
    BatchNorm1d(BatchNorm1d) = "batch_norm1d",
    /// Rectified linear unit.
    Relu(Relu) = "relu",
    /// Max pooling (`torch.nn.MaxPool2d`).
    MaxPool2d(MaxPool2d) = "max_pool2d",
    /// Average pooling (`torch.nn.AvgPool2d`).
    AvgPool2d(AvgPool2d) = "avg_pool2d",
    /// Adaptive average pooling to a fixed size (`torch.nn.AdaptiveAvgPool2d`).
    AdaptiveAvgPool2d(AdaptiveAvgPool2d) = "adaptive_avg_pool2d",
    /// Flattens `[C, H, W]` to `[C·H·W]`.
    Flatten(Flatten) = "flatten",
    /// Fully connected layer (`torch.nn.Linear`).
    Linear(Linear) = "linear",
    /// Dropout (the identity in eval mode).
    Dropout(Dropout) = "dropout",
    /// Element-wise sum of equal-shaped inputs (residual connections).
    Add(Add) = "add",
    /// Concatenation along the channel axis (DenseNet).
    Concat(Concat) = "concat",
    /// Clamp to `[min, max]` (ReLU6 is `[0, 6]`).
    Clip(Clip) = "clip",
    /// Logistic sigmoid.
    Sigmoid(Sigmoid) = "sigmoid",
    /// The hyperbolic tangent (`torch.nn.Tanh`).
    Tanh(Tanh) = "tanh",
    /// `clamp(alpha·x + beta, 0, 1)` (PyTorch's `Hardsigmoid` by default).
    HardSigmoid(HardSigmoid) = "hard_sigmoid",
    /// `x · hardsigmoid(x)` (`torch.nn.Hardswish`).
    HardSwish(HardSwish) = "hard_swish",
    /// `x · sigmoid(x)` (`torch.nn.SiLU`).
    Silu(Silu) = "silu",
    /// Gaussian error linear unit (`torch.nn.GELU`).
    Gelu(Gelu) = "gelu",
    /// Element-wise product of two inputs, with a `[C, 1, 1]` gate broadcast over `[C, H, W]`
    /// (squeeze-and-excitation).
    Mul(Mul) = "mul",
    /// Channel shuffle (`torch.nn.ChannelShuffle`; ShuffleNet).
    ChannelShuffle(ChannelShuffle) = "channel_shuffle",
    /// The channel sub-range `start..end` (`x[:, start:end]`; one part of a channel split).
    Slice(Slice) = "slice",
    /// Layer normalisation over the channels of each pixel (ConvNeXt's `LayerNorm2d`).
    LayerNorm2d(LayerNorm2d) = "layer_norm2d",
    /// An image's pixels as tokens, `[C, H, W]` to `[H·W, C]` (a vision transformer's patches).
    Tokens(Tokens) = "tokens",
    /// The mean over the tokens, `[T, F]` to `[F]`.
    TokenMean(TokenMean) = "token_mean",
    /// Layer normalisation over the last axis (`torch.nn.LayerNorm`; a transformer's).
    LayerNorm(LayerNorm) = "layer_norm",
    /// Multi-head scaled dot-product attention of q, k, v tokens `[T, E]` with prunable heads.
    Attention(Attention) = "attention",
    /// A learned token put before the tokens, `[T, F]` to `[T+1, F]` (a class token).
    ClassToken(ClassToken) = "class_token",
    /// A learned `[T, F]` tensor added to the tokens (a position embedding).
    PositionEmbedding(PositionEmbedding) = "position_embedding",
    /// One token of the tokens, `[T, F]` to `[F]` (`x[:, index]`; the class token).
    TokenSelect(TokenSelect) = "token_select",
    /// Tokens `start..end` of the tokens, `[T, F]` to `[end − start, F]` (`x[:, 1:]`).
    TokenRange(TokenRange) = "token_range",
    /// Tokens of a grid back to an image, `[H·W, F]` to `[F, H, W]` (the inverse of
    /// `tokens`; Swin Transformer's permute before its pooling).
    TokensToImage(TokensToImage) = "tokens_to_image",
    /// A grid of tokens zero-padded, cyclically shifted and regrouped window by window,
    /// `[H·W, F]` to `[nW·wh·ww, F]` (Swin Transformer's window partition).
    WindowPartition(WindowPartition) = "window_partition",
    /// Blocks of tokens transposed, `[B·S, F]` to `[S·B, F]` (MaxViT's grid attention).
    WindowTranspose(WindowTranspose) = "window_transpose",
    /// The inverse of `window_partition`, `[nW·wh·ww, F]` to `[H·W, F]`.
    WindowMerge(WindowMerge) = "window_merge",
    /// Every `stride`-th row and column of a zero-padded grid of tokens (one quarter of Swin
    /// Transformer's patch merging).
    GridStride(GridStride) = "grid_stride",
}

impl Op {
    /// The network input's attributes (its shape and recorded normalisation) when this is
    /// the input op.
    pub fn as_input(&self) -> Option<&Input> {
        match self {
            Op::Input(i) => Some(i),
            _ => None,
        }
    }

    /// The parameter tensors a node called `node` with this op owns, in state-dict order.
    pub fn params(&self, node: &str) -> Vec<ParamSpec> {
        self.contract().params(node)
    }

    /// Number of trainable parameters (saturating; graphs reject sizes that overflow).
    pub fn param_count(&self) -> usize {
        self.params("")
            .iter()
            .filter(|p| p.kind.is_trainable())
            .map(ParamSpec::numel)
            .fold(0usize, usize::saturating_add)
    }

    /// Multiply-accumulates for one sample given the op's output shape (saturating; graphs
    /// reject sizes that overflow). Only convolutions, linear layers and attention's
    /// matrix products count (bias additions, normalisation, softmax, activations and
    /// pooling are not MACs); this is the
    /// convention behind the usual published figures (ResNet-50 ≈ 4.1 G at 224²).
    pub fn macs(&self, output: &[usize]) -> u64 {
        self.contract().macs(output).unwrap_or(u64::MAX)
    }

    /// How the output channels relate to the inputs' (see [`Channels`]).
    pub fn channels(&self) -> Channels {
        self.contract().channels()
    }

    /// The number of units of an op that creates them (conv, linear), else `None`.
    pub fn units(&self) -> Option<usize> {
        match self.channels() {
            Channels::Create { units, .. } => Some(units),
            Channels::Source
            | Channels::Follow
            | Channels::Couple
            | Channels::Concat
            | Channels::Flatten
            | Channels::Fixed
            | Channels::Slice { .. }
            | Channels::Heads { .. } => None,
        }
    }

    /// Whether the op's units (output channels / features) can be pruned: it creates units
    /// and reads its input densely. Grouped convolutions answer `false` here: their units are
    /// pruned within their groups through `fair_analysis`'s index maps (`UnitMap::Blocks`).
    pub fn is_prunable(&self) -> bool {
        matches!(
            self.channels(),
            Channels::Create {
                reads: Reads::All,
                ..
            }
        )
    }

    /// What kind of computation it is.
    pub fn role(&self) -> Role {
        self.contract().role()
    }

    /// What it needs after surgery (see [`Contract::after_surgery`]).
    pub fn after_surgery(&self) -> AfterSurgery {
        self.contract().after_surgery()
    }

    /// What scorers need to know about it (see [`Contract::scoring`]).
    pub fn scoring(&self) -> Scoring {
        self.contract().scoring()
    }

    /// Numbers per sample autograd keeps for its backward besides the output of shape
    /// `output` (see [`Contract::saved_for_backward`]).
    pub fn saved_for_backward(&self, output: &[usize]) -> u64 {
        self.contract().saved_for_backward(output)
    }

    /// Checks the attributes (see [`Contract::check`]).
    pub(crate) fn check_attributes(&self) -> Result<(), String> {
        self.contract().check()
    }

    /// Infers the output shape from the input shapes, checking the arity first.
    pub(crate) fn infer(&self, inputs: &[ShapeInput]) -> Result<Vec<usize>, ShapeProblem> {
        let arity = self.contract().arity();
        if inputs.len() < arity.min || inputs.len() > arity.max {
            return Err(ShapeProblem::Arity {
                expected: arity.describe(),
                found: inputs.len(),
            });
        }
        self.contract().infer(inputs).map_err(ShapeProblem::Detail)
    }
}

/// Why shape inference failed (turned into an [`crate::IrError`] naming the node).
pub(crate) enum ShapeProblem {
    Arity { expected: String, found: usize },
    Detail(String),
}

// ---- helpers shared by the op files ----

pub(crate) fn yes() -> bool {
    true
}
pub(crate) fn is_true(b: &bool) -> bool {
    *b
}
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}
pub(crate) fn one() -> usize {
    1
}
pub(crate) fn is_one(v: &usize) -> bool {
    *v == 1
}

/// `Err("<what> must be at least 1")` when `v` is 0.
pub(crate) fn nonzero(what: &str, v: usize) -> Result<(), String> {
    if v == 0 {
        Err(format!("{what} must be at least 1"))
    } else {
        Ok(())
    }
}

/// The largest size any single dimension or element count may have: 2^40. Far above any
/// real network, low enough that products of a few such sizes cannot overflow silently.
pub(crate) const MAX_SIZE: usize = 1 << 40;

/// `Err` when `v` exceeds [`MAX_SIZE`].
pub(crate) fn bounded(what: &str, v: usize) -> Result<(), String> {
    if v > MAX_SIZE {
        Err(format!(
            "{what} = {v} is larger than the supported maximum {MAX_SIZE}"
        ))
    } else {
        Ok(())
    }
}

/// The product of `dims`, or an error naming `what` when it exceeds [`MAX_SIZE`].
pub(crate) fn checked_numel(what: &str, dims: &[usize]) -> Result<usize, String> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_SIZE)
        .ok_or_else(|| {
            format!("{what} of shape {dims:?} has more than {MAX_SIZE} elements (too large)")
        })
}

/// The axis of a per-sample tensor (shape without the batch dimension) that holds its units,
/// i.e. the channels or features that pruning removes: axis 0 of an image `[C, H, W]` and of
/// features `[F]`, the last axis (1) of tokens `[T, F]` (a transformer's tokens × features,
/// every linear layer and layer norm acting on the features). Every part of the toolkit that
/// needs "the channel axis" of a value asks this function (or [`crate::Graph::unit_axis`]);
/// on the batched tensor it is one more.
///
/// ```
/// assert_eq!(fair_ir::unit_axis(&[3, 32, 32]), 0);
/// assert_eq!(fair_ir::unit_axis(&[10]), 0);
/// assert_eq!(fair_ir::unit_axis(&[196, 64]), 1);
/// ```
pub fn unit_axis(shape: &[usize]) -> usize {
    if shape.len() == 2 { 1 } else { 0 }
}

/// The number of units of a per-sample tensor: its size along [`unit_axis`] (0 for a scalar).
pub fn unit_count(shape: &[usize]) -> usize {
    shape.get(unit_axis(shape)).copied().unwrap_or(0)
}

/// The tokens `[T, F]` of input `i`, or an error naming the input.
pub(crate) fn tokens(inputs: &[ShapeInput], i: usize) -> Result<(usize, usize), String> {
    let (from, s) = inputs[i];
    match s {
        [t, f] => Ok((*t, *f)),
        _ => Err(format!("expected tokens [T, F], found {s:?} from '{from}'")),
    }
}

/// The image `[C, H, W]` of input `i`, or an error naming the input.
pub(crate) fn image(inputs: &[ShapeInput], i: usize) -> Result<(usize, usize, usize), String> {
    let (from, s) = inputs[i];
    match s {
        [c, h, w] => Ok((*c, *h, *w)),
        _ => Err(format!(
            "expected an image-shaped input [C, H, W], found {s:?} from '{from}'"
        )),
    }
}

/// Output length of a sliding window (convolution or pooling), with PyTorch's rules, or
/// `Ok(None)` when the window does not fit. Errors on arithmetic overflow.
pub(crate) fn out_len(
    input: usize,
    k: usize,
    s: usize,
    p: usize,
    d: usize,
    ceil: bool,
) -> Result<Option<usize>, String> {
    let overflow = || "the window arithmetic overflows (sizes too large)".to_owned();
    let span = d
        .checked_mul(k - 1)
        .and_then(|v| v.checked_add(1))
        .ok_or_else(overflow)?;
    let padded = p
        .checked_mul(2)
        .and_then(|v| v.checked_add(input))
        .ok_or_else(overflow)?;
    if padded < span {
        return Ok(None);
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
    Ok(Some(out))
}

/// The error for a window that does not fit its input.
pub(crate) fn too_small((from, s): ShapeInput, k: Pair) -> String {
    format!(
        "the input '{from}' of shape {s:?} is too small for kernel {k} (the output would be empty); use a larger input size"
    )
}

/// Formats a pair as a Python tuple.
pub(crate) fn py_pair(p: Pair) -> String {
    format!("({}, {})", p.0, p.1)
}

/// Formats a bool as Python.
pub(crate) fn py_bool(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// Per-op examples: one instance of every op with a fitting input, for tests that must
/// cover every op (shape inference, runtime kernels, export). Inputs are
/// `(shape of each input)`; every example's inputs are images `[4, 6, 6]` or features `[8]`,
/// but the last ones', which are tokens: `[5, 8]`, and for the window ops a `3 × 4` grid of
/// tokens `[12, 8]` (or its windows `[16, 8]`), appended so that earlier examples keep their
/// index in the ONNX golden hashes.
pub fn examples() -> Vec<(Op, Vec<Vec<usize>>)> {
    let img = || vec![4, 6, 6];
    let tok = || vec![5, 8];
    let grid = || vec![12, 8];
    vec![
        (Input::new(img()).into(), vec![]),
        (
            Input::new(img())
                .with_normalization(vec![0.5, 0.4, 0.3, 0.2], vec![0.25, 0.5, 1.0, 2.0])
                .into(),
            vec![],
        ),
        (Conv2d::new(4, 5, 3).with_padding(1).into(), vec![img()]),
        (
            Conv2d {
                groups: 4,
                ..Conv2d::new(4, 4, 3)
            }
            .into(),
            vec![img()],
        ),
        (BatchNorm2d::new(4).into(), vec![img()]),
        (BatchNorm1d::new(8).into(), vec![vec![8]]),
        (Relu {}.into(), vec![img()]),
        (MaxPool2d::new(2).into(), vec![img()]),
        (AvgPool2d::new(2).into(), vec![img()]),
        (
            AdaptiveAvgPool2d {
                output_size: Pair(1, 1),
            }
            .into(),
            vec![img()],
        ),
        (Flatten {}.into(), vec![img()]),
        (Linear::new(8, 3).into(), vec![vec![8]]),
        (Dropout { p: 0.5 }.into(), vec![img()]),
        (Add {}.into(), vec![img(), img()]),
        (Concat {}.into(), vec![img(), img()]),
        (Clip { min: 0.0, max: 6.0 }.into(), vec![img()]),
        (
            Clip {
                min: -0.5,
                max: 0.25,
            }
            .into(),
            vec![img()],
        ),
        (Sigmoid {}.into(), vec![img()]),
        (HardSigmoid::default().into(), vec![img()]),
        (
            HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            }
            .into(),
            vec![img()],
        ),
        (HardSwish {}.into(), vec![img()]),
        (Silu {}.into(), vec![vec![8]]),
        (Gelu::default().into(), vec![img()]),
        (
            Gelu {
                approximate: "tanh".into(),
            }
            .into(),
            vec![img()],
        ),
        (Mul {}.into(), vec![img(), img()]),
        (Mul {}.into(), vec![img(), vec![4, 1, 1]]),
        (Mul {}.into(), vec![vec![4, 1, 1], img()]),
        (Mul {}.into(), vec![vec![8], vec![8]]),
        (ChannelShuffle { groups: 2 }.into(), vec![img()]),
        (Slice { start: 1, end: 3 }.into(), vec![img()]),
        (Slice { start: 0, end: 8 }.into(), vec![vec![8]]),
        (LayerNorm2d::new(4).into(), vec![img()]),
        (
            LayerNorm2d {
                eps: 1e-5,
                affine: false,
                ..LayerNorm2d::new(4)
            }
            .into(),
            vec![img()],
        ),
        (Tokens {}.into(), vec![img()]),
        (TokenMean {}.into(), vec![tok()]),
        (LayerNorm::new(8).into(), vec![tok()]),
        (
            LayerNorm {
                eps: 1e-6,
                affine: false,
                ..LayerNorm::new(8)
            }
            .into(),
            vec![vec![8]],
        ),
        (Linear::new(8, 3).into(), vec![tok()]),
        (Gelu::default().into(), vec![tok()]),
        (Add {}.into(), vec![tok(), tok()]),
        (Attention::new(4).into(), vec![tok(), tok(), tok()]),
        (ClassToken { features: 8 }.into(), vec![tok()]),
        (
            PositionEmbedding {
                tokens: 5,
                features: 8,
            }
            .into(),
            vec![tok()],
        ),
        (TokenSelect { index: 0 }.into(), vec![tok()]),
        (TokenSelect { index: 4 }.into(), vec![tok()]),
        (TokenRange { start: 1, end: 5 }.into(), vec![tok()]),
        (TokenRange { start: 0, end: 2 }.into(), vec![tok()]),
        (
            WindowPartition {
                grid: Pair(3, 4),
                window: Pair(2, 2),
                shift: Pair(1, 1),
            }
            .into(),
            vec![grid()],
        ),
        (
            WindowPartition {
                grid: Pair(3, 4),
                window: Pair(3, 2),
                shift: Pair(0, 0),
            }
            .into(),
            vec![grid()],
        ),
        (
            WindowMerge {
                grid: Pair(3, 4),
                window: Pair(2, 2),
                shift: Pair(1, 1),
            }
            .into(),
            vec![vec![16, 8]],
        ),
        (Concat {}.into(), vec![grid(), grid()]),
        (
            Attention {
                heads: Some(2),
                windows: Some(AttnWindows {
                    grid: Pair(4, 4),
                    window: Pair(2, 2),
                    shift: Pair(1, 1),
                    bias: true,
                }),
                cosine: true,
                ..Attention::new(4)
            }
            .into(),
            vec![vec![16, 8]; 3],
        ),
        (
            Attention {
                windows: Some(AttnWindows {
                    grid: Pair(4, 4),
                    window: Pair(2, 4),
                    shift: Pair(0, 0),
                    bias: false,
                }),
                ..Attention::new(4)
            }
            .into(),
            vec![vec![16, 8]; 3],
        ),
        (
            Attention {
                heads: Some(2),
                cosine: true,
                ..Attention::new(4)
            }
            .into(),
            vec![tok(), tok(), tok()],
        ),
        (
            GridStride {
                grid: Pair(3, 4),
                offset: Pair(1, 0),
                stride: Pair(2, 2),
            }
            .into(),
            vec![grid()],
        ),
        (TokensToImage { grid: Pair(3, 4) }.into(), vec![grid()]),
        (Tanh {}.into(), vec![tok()]),
        (WindowTranspose { blocks: 3, size: 4 }.into(), vec![grid()]),
        // MaxViT's scale 1/√E (not 1/√d): windowed with a bias, and plain.
        (
            Attention {
                heads: Some(2),
                windows: Some(AttnWindows {
                    grid: Pair(4, 4),
                    window: Pair(2, 2),
                    shift: Pair(0, 0),
                    bias: true,
                }),
                scale: Some(0.25),
                ..Attention::new(4)
            }
            .into(),
            vec![vec![16, 8]; 3],
        ),
        (
            Attention {
                scale: Some(0.3),
                ..Attention::new(4)
            }
            .into(),
            vec![tok(), tok(), tok()],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_an_example_and_a_consistent_contract() {
        let ex = examples();
        let mut seen: Vec<&str> = ex.iter().map(|(op, _)| op.type_name()).collect();
        seen.sort_unstable();
        seen.dedup();
        let mut all = Op::TYPE_NAMES.to_vec();
        all.sort_unstable();
        assert_eq!(seen, all, "examples() must cover every op");
        for (op, inputs) in ex {
            op.check_attributes()
                .unwrap_or_else(|e| panic!("{}: {e}", op.type_name()));
            let named: Vec<ShapeInput> = inputs.iter().map(|s| ("x", s.as_slice())).collect();
            let out = match op.infer(&named) {
                Ok(s) => s,
                Err(ShapeProblem::Detail(d)) => panic!("{}: {d}", op.type_name()),
                Err(ShapeProblem::Arity { expected, found }) => {
                    panic!("{}: arity {expected} vs {found}", op.type_name())
                }
            };
            // Narrowing to the same inputs and units gives back the same op.
            let refs: Vec<&[usize]> = inputs.iter().map(Vec::as_slice).collect();
            assert_eq!(
                op.contract().narrowed(&refs, op.units()).unwrap(),
                op,
                "{}",
                op.type_name()
            );
            // Slicing axes lie inside each tensor, and only unit creators own an output axis
            // that is not also their input's channel axis.
            for p in op.params("n") {
                for axis in [p.out_axis, p.in_axis].into_iter().flatten() {
                    assert!(axis < p.shape.len(), "{}: {}", op.type_name(), p.name);
                }
                if let Some(a) = p.out_axis {
                    assert_eq!(
                        p.shape[a],
                        unit_count(&out),
                        "{}: {}",
                        op.type_name(),
                        p.name
                    );
                }
                if let Some(a) = p.head_axis {
                    let Channels::Heads { head_dim } = op.channels() else {
                        panic!("{}: a head axis without heads", op.type_name());
                    };
                    assert!(a < p.shape.len(), "{}: {}", op.type_name(), p.name);
                    assert_eq!(
                        p.shape[a] * head_dim,
                        unit_count(&out),
                        "{}",
                        op.type_name()
                    );
                }
                if let Some(a) = p.in_axis {
                    let units_in = unit_count(&inputs[0]);
                    assert_eq!(p.shape[a], units_in, "{}: {}", op.type_name(), p.name);
                }
                if let Some(a) = p.group_in_axis {
                    assert!(p.in_axis.is_none(), "{}: {}", op.type_name(), p.name);
                    let groups = match op.channels() {
                        Channels::Create {
                            reads: Reads::Grouped { groups },
                            ..
                        } => groups,
                        other => panic!("{}: group axis with {other:?}", op.type_name()),
                    };
                    assert_eq!(p.shape[a] * groups, inputs[0][0], "{}", op.type_name());
                }
            }
            // Serialisation round trip through the tagged form.
            let json = serde_json::to_string(&op).unwrap();
            assert!(
                json.contains(&format!("\"type\":\"{}\"", op.type_name())),
                "{json}"
            );
            assert_eq!(serde_json::from_str::<Op>(&json).unwrap(), op);
        }
    }

    /// Every op has an ONNX spelling at every opset written, and it is well formed: its
    /// references point at declarations or inputs that exist, each temp is written by exactly
    /// one node before it is read, and exactly one node writes the op's value.
    #[test]
    fn every_op_has_a_well_formed_onnx_spec() {
        for (op, inputs) in examples() {
            let shapes: Vec<&[usize]> = inputs.iter().map(Vec::as_slice).collect();
            for opset in [14, 17, 20, 23] {
                let what = format!("{} at opset {opset}", op.type_name());
                let spec = op
                    .contract()
                    .onnx(&OnnxContext {
                        opset,
                        inputs: &shapes,
                    })
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                if op.role() == Role::Input {
                    assert!(spec.nodes.is_empty() && spec.decls.is_empty(), "{what}");
                    continue;
                }
                let mut written = vec![false; spec.decls.len()];
                let mut finals = 0;
                for n in &spec.nodes {
                    assert!(!n.op_type.is_empty(), "{what}");
                    for r in &n.inputs {
                        match *r {
                            OnnxRef::Input(i) => assert!(i < inputs.len(), "{what}"),
                            OnnxRef::Inputs => {}
                            OnnxRef::Param(j, k) => {
                                assert!(matches!(spec.decls[j], OnnxDecl::Params), "{what}");
                                let count = op
                                    .params("n")
                                    .iter()
                                    .filter(|p| p.kind != ParamKind::NumBatchesTracked)
                                    .count();
                                assert!(k < count, "{what}: parameter {k} of {count}");
                            }
                            OnnxRef::Decl(j) => {
                                let is_temp = matches!(spec.decls[j], OnnxDecl::Temp { .. });
                                assert!(!is_temp || written[j], "{what}: reads temp {j} early");
                            }
                        }
                    }
                    match n.output {
                        None => finals += 1,
                        Some(j) => {
                            assert!(matches!(spec.decls[j], OnnxDecl::Temp { .. }), "{what}");
                            assert!(!written[j], "{what}: temp {j} written twice");
                            written[j] = true;
                        }
                    }
                }
                assert_eq!(finals, 1, "{what}: nodes writing the op's value");
                let params = spec
                    .decls
                    .iter()
                    .filter(|d| matches!(d, OnnxDecl::Params))
                    .count();
                let trainable = op.params("n").iter().any(|p| p.kind.is_trainable());
                assert_eq!(params, usize::from(trainable), "{what}: parameters read");
            }
        }
    }

    /// Every op's after-surgery and scoring answers agree with the rest of its contract:
    /// exactly the unit-creating layers are refitted, with as many unknowns per unit as their
    /// weight has; exactly the normalisations with running statistics are recalibrated, and
    /// those depend on the batch in training mode; an embedding (class token, position
    /// embedding) follows its one input and slices every parameter by its units.
    #[test]
    fn every_op_has_consistent_after_surgery_and_scoring_roles() {
        for (op, _) in examples() {
            let what = op.type_name();
            match op.after_surgery() {
                AfterSurgery::Refit(r) => {
                    assert_eq!(op.role(), Role::Layer, "{what}");
                    let weight = op
                        .params("n")
                        .into_iter()
                        .find(|p| p.kind == ParamKind::Weight)
                        .unwrap_or_else(|| panic!("{what}: refitted without a weight"));
                    assert_eq!(r.weight_inputs * weight.shape[0], weight.numel(), "{what}");
                    let has_bias = op.params("n").iter().any(|p| p.kind == ParamKind::Bias);
                    assert_eq!(r.bias, has_bias, "{what}");
                    assert!(r.groups == 1 || !op.is_prunable(), "{what}");
                    // A window exactly for weights over a window ([out, in, kh, kw]).
                    assert_eq!(r.window.is_some(), weight.shape.len() == 4, "{what}");
                }
                AfterSurgery::Recalibrate => {
                    assert_eq!(op.role(), Role::Normalization, "{what}");
                    assert!(op.scoring().batch_dependent, "{what}");
                }
                AfterSurgery::Nothing => {
                    assert!(
                        op.units().is_none(),
                        "{what}: creates units but is not refitted"
                    );
                    assert_ne!(op.role(), Role::Normalization, "{what}: not recalibrated");
                }
            }
            if op.scoring().analysis_activation {
                assert_eq!(op.role(), Role::Activation, "{what}");
            }
            if op.role() == Role::Embedding {
                // One input whose units it follows; every parameter sliced by them.
                assert_eq!(op.contract().arity(), Arity::exactly(1), "{what}");
                assert_eq!(op.channels(), Channels::Follow, "{what}");
                assert!(op.units().is_none(), "{what}");
                let params = op.params("n");
                assert!(!params.is_empty(), "{what}: no learned tensor");
                for p in &params {
                    assert!(p.out_axis.is_some(), "{what}: {} is not sliced", p.name);
                }
            }
        }
        let embeddings: Vec<&str> = examples()
            .iter()
            .filter(|(op, _)| op.role() == Role::Embedding)
            .map(|(op, _)| op.type_name())
            .collect();
        assert_eq!(embeddings, ["class_token", "position_embedding"]);
    }

    /// Every layer answers the ONNX importer's rewrites, and every answer agrees with the
    /// rest of the contract: `with_bias` toggles exactly one bias tensor of one value per
    /// unit and changes nothing else; an op whose output scale folds has every trainable
    /// tensor sliced by its units; a self-gated form is an activation like its gate.
    #[test]
    fn every_layer_answers_the_import_rewrites_consistently() {
        let mut layers = 0;
        for (op, _) in examples() {
            let what = op.type_name();
            let c = op.contract();
            if op.role() == Role::Layer {
                layers += 1;
                assert!(c.with_bias(true).is_some(), "{what}: no with_bias answer");
                assert!(c.with_bias(false).is_some(), "{what}: no with_bias answer");
                assert!(
                    c.folds_output_scale(),
                    "{what}: no folds_output_scale answer"
                );
            }
            if let (Some(with), Some(without)) = (c.with_bias(true), c.with_bias(false)) {
                let (pw, pwo) = (with.params("n"), without.params("n"));
                let bias: Vec<&ParamSpec> =
                    pw.iter().filter(|p| p.kind == ParamKind::Bias).collect();
                assert_eq!(bias.len(), 1, "{what}: biases of with_bias(true)");
                assert!(pwo.iter().all(|p| p.kind != ParamKind::Bias), "{what}");
                let rest: Vec<&ParamSpec> =
                    pw.iter().filter(|p| p.kind != ParamKind::Bias).collect();
                assert_eq!(
                    rest,
                    pwo.iter().collect::<Vec<_>>(),
                    "{what}: other tensors"
                );
                // One value per unit, on the units' axis of the weight.
                let weight = pwo.iter().find(|p| p.kind == ParamKind::Weight).unwrap();
                let units = weight.shape[weight.out_axis.unwrap()];
                assert_eq!(bias[0].shape, vec![units], "{what}");
                assert_eq!(bias[0].out_axis, Some(0), "{what}");
                // The answers keep every other attribute: toggling back gives the op.
                let has_bias = op.params("n").iter().any(|p| p.kind == ParamKind::Bias);
                assert_eq!(c.with_bias(has_bias), Some(op.clone()), "{what}");
                assert_eq!(with.contract().with_bias(false), Some(without), "{what}");
            } else {
                assert!(c.with_bias(true).is_none() && c.with_bias(false).is_none());
            }
            if c.folds_output_scale() {
                for p in op.params("n").iter().filter(|p| p.kind.is_trainable()) {
                    assert!(p.out_axis.is_some(), "{what}: {} is not scaled", p.name);
                }
            }
            if let Some(fused) = c.self_gated() {
                for o in [&op, &fused] {
                    assert_eq!(o.role(), Role::Activation, "{what}");
                    assert_eq!(o.channels(), Channels::Follow, "{what}");
                    assert_eq!(o.contract().arity(), Arity::exactly(1), "{what}");
                }
                assert_ne!(fused, op, "{what}");
            }
        }
        assert!(
            layers >= 3,
            "examples() covers conv, grouped conv and linear"
        );
    }

    #[test]
    fn window_arithmetic_never_wraps() {
        assert_eq!(out_len(8, 3, 1, 1, 1, false), Ok(Some(8)));
        assert_eq!(out_len(2, 5, 1, 0, 1, false), Ok(None));
        assert!(out_len(8, 3, 1, usize::MAX / 2 + 1, 1, false).is_err());
        assert!(out_len(8, usize::MAX, 1, 0, 2, false).is_err());
        assert!(checked_numel("w", &[1 << 30, 1 << 30, 2]).is_err());
    }
}
