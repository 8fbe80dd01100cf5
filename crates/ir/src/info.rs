//! The typed summary of a graph that `fair-pruner info --json` prints. Its JSON Schema is
//! generated from these types (`docs/info-schema.json`, checked by a test) and versioned by
//! [`INFO_SCHEMA_VERSION`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::graph::Graph;

/// The version of [`InfoReport`]'s schema. Version 1 has the fields `info --json` printed
/// before it was typed, and `schema_version`. Any change that removes or renames a field, or
/// changes its meaning, bumps it.
pub const INFO_SCHEMA_VERSION: u32 = 1;

/// A graph's nodes with their output shapes, parameters and MACs, and the totals: what
/// `fair-pruner info --json` prints ([`InfoReport::new`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InfoReport {
    /// [`INFO_SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// The graph's name.
    pub name: String,
    /// Every node, in topological order.
    pub nodes: Vec<InfoNode>,
    /// Trainable parameters in total.
    pub params: usize,
    /// Multiply-accumulates per sample in total (convolutions and linear layers).
    pub macs: u64,
}

/// One node of an [`InfoReport`]: a `fair_ir::NodeSummary` that owns its op name, so that
/// it reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InfoNode {
    /// Node name.
    pub name: String,
    /// Op type name (`conv2d`, `linear`, ...).
    pub op: String,
    /// Output shape (without the batch dimension).
    pub shape: Vec<usize>,
    /// Trainable parameters.
    pub params: usize,
    /// Multiply-accumulates per sample.
    pub macs: u64,
}

impl InfoReport {
    /// The summary of `graph`: [`Graph::summary`] and the totals
    /// ([`Graph::param_count`], [`Graph::macs`]).
    ///
    /// ```
    /// let mut b = fair_ir::GraphBuilder::new("tiny", "input", vec![4]);
    /// b.linear("fc", "input", 2, true)?;
    /// let report = fair_ir::InfoReport::new(&b.finish()?);
    /// assert_eq!(report.name, "tiny");
    /// assert_eq!(report.params, 4 * 2 + 2);
    /// assert_eq!(report.nodes[1].op, "linear");
    /// # Ok::<(), fair_ir::IrError>(())
    /// ```
    pub fn new(graph: &Graph) -> Self {
        InfoReport {
            schema_version: INFO_SCHEMA_VERSION,
            name: graph.name().to_owned(),
            nodes: graph
                .summary()
                .into_iter()
                .map(|n| InfoNode {
                    name: n.name,
                    op: n.op.to_owned(),
                    shape: n.shape,
                    params: n.params,
                    macs: n.macs,
                })
                .collect(),
            params: graph.param_count(),
            macs: graph.macs(),
        }
    }
}

/// The JSON Schema of [`InfoReport`], pretty-printed (what `docs/info-schema.json` holds).
pub fn info_schema() -> String {
    let schema = schemars::schema_for!(InfoReport);
    serde_json::to_string_pretty(&schema).expect("schemas serialise") + "\n"
}
