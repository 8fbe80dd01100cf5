//! The shared language of fair-pruner: a small intermediate representation (IR) of the
//! convolutional and fully connected networks it prunes.
//!
//! A [`Graph`] is a list of named [`Node`]s, each with an [`Op`] and the names of the nodes it
//! reads. Building a graph validates it (unique names, known inputs, no cycle, one input, one
//! output, consistent channel counts) and infers every node's output shape, so the rest of
//! the toolkit — the runtime, the scorers, model surgery, the CLI — can rely on it. Parameter
//! names follow PyTorch state-dict names (`<node>.weight`, `<node>.running_mean`, ...), so
//! weights move between PyTorch and fair-pruner without a mapping table. The crate has no
//! libtorch dependency.
//!
//! Graphs read and write TOML and JSON. A hand-written TOML model can leave out `inputs` for
//! nodes that read the node listed just before them:
//!
//! ```
//! let g = fair_ir::Graph::from_toml_str(r#"
//!     name = "tiny-mlp"
//!     [[nodes]]
//!     name = "input"
//!     op = { type = "input", shape = [1, 28, 28] }
//!     [[nodes]]
//!     name = "flatten"
//!     op = { type = "flatten" }
//!     [[nodes]]
//!     name = "fc1"
//!     op = { type = "linear", in_features = 784, out_features = 64 }
//!     [[nodes]]
//!     name = "relu"
//!     op = { type = "relu" }
//!     [[nodes]]
//!     name = "fc2"
//!     op = { type = "linear", in_features = 64, out_features = 10 }
//! "#)?;
//! assert_eq!(g.param_count(), 784 * 64 + 64 + 64 * 10 + 10);
//! assert_eq!(g.macs(), 784 * 64 + 64 * 10);
//! assert_eq!(g.shape("fc2")?, &[10]);
//! // Round trip.
//! assert_eq!(fair_ir::Graph::from_toml_str(&g.to_toml_string()?)?, g);
//! # Ok::<(), fair_ir::IrError>(())
//! ```
//!
//! [`InfoReport`] is a graph's per-node summary with its totals, as `fair-pruner info --json`
//! prints it (typed, read back with serde; its JSON Schema, [`info_schema`], is
//! `docs/info-schema.json`, versioned by [`INFO_SCHEMA_VERSION`]).
//!
//! Counting conventions: parameters are trainable tensors only (BatchNorm running statistics
//! are buffers), as `sum(p.numel() for p in model.parameters())` in PyTorch; MACs count
//! convolutions, linear layers and attention's two matrix products only, per sample.

mod builder;
mod error;
mod graph;
mod info;
mod op;

pub use builder::GraphBuilder;
pub use error::IrError;
pub use graph::{Graph, GraphSpec, Node, NodeSummary};
pub use info::{INFO_SCHEMA_VERSION, InfoNode, InfoReport, info_schema};
pub use op::{
    AdaptiveAvgPool2d, Add, AfterSurgery, Arity, Attention, AttnWindows, AvgPool2d, BatchNorm1d,
    BatchNorm2d, ChannelShuffle, Channels, ClassToken, Clip, Concat, Contract, Conv2d, Dropout,
    Flatten, Gelu, GridStride, HardSigmoid, HardSwish, Init, Input, LayerNorm, LayerNorm2d, Linear,
    MaxPool2d, Mul, NameBase, OnnxAttr, OnnxConst, OnnxContext, OnnxDecl, OnnxNode, OnnxRef,
    OnnxSpec, Op, Pair, ParamKind, ParamSpec, PositionEmbedding, Reads, Refit, Relu, Role, Scoring,
    ShapeInput, Sigmoid, Silu, Slice, Tanh, TokenMean, TokenRange, TokenSelect, Tokens,
    TokensToImage, Window, WindowMerge, WindowPartition, WindowTranspose, examples, unit_axis,
    unit_count,
};

/// Parses a per-sample shape written `CxHxW` (e.g. `3x224x224`) or `F` (e.g. `784`).
///
/// ```
/// assert_eq!(fair_ir::parse_shape("3x32x32"), Ok(vec![3, 32, 32]));
/// assert!(fair_ir::parse_shape("3x0x32").is_err());
/// ```
pub fn parse_shape(text: &str) -> Result<Vec<usize>, String> {
    let dims: Result<Vec<usize>, _> = text.split(['x', 'X']).map(|d| d.trim().parse()).collect();
    match dims {
        Ok(d) if !d.is_empty() && !d.contains(&0) => Ok(d),
        _ => Err(format!(
            "'{text}' is not a shape: expected positive sizes joined by 'x', e.g. 3x224x224"
        )),
    }
}

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
