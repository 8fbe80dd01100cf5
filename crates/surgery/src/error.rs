//! Errors of model surgery.

/// Everything surgery can report; messages name the layer or node and say what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum SurgeryError {
    /// A plan names a layer that cannot be pruned.
    #[error("cannot prune '{layer}': {detail}")]
    NotPrunable {
        /// The layer.
        layer: String,
        /// Why.
        detail: String,
    },
    /// A plan's unit index is out of range.
    #[error("plan for '{layer}': unit {unit} does not exist (the layer has {units} units)")]
    UnitOutOfRange {
        /// The layer.
        layer: String,
        /// The index given.
        unit: usize,
        /// Units of the layer.
        units: usize,
    },
    /// Coupled layers ask for different units under the strict rule.
    #[error("layers {} are coupled (they must keep the same units) but the plan removes different units from them", .layers.join(", "))]
    Disagreement {
        /// The coupled layers.
        layers: Vec<String>,
    },
    /// A plan would remove every unit of a group.
    #[error("the plan removes every unit of {}; at least one must stay", .layers.join(", "))]
    Empty {
        /// The group's layers.
        layers: Vec<String>,
    },
    /// A graph construct the surgery does not handle.
    #[error("node '{node}': {detail}")]
    Unsupported {
        /// The node.
        node: String,
        /// What is unsupported.
        detail: String,
    },
    /// The plan file is unreadable.
    #[error("plan '{path}': {detail}")]
    PlanFile {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The IR rejected the narrowed graph.
    #[error(transparent)]
    Ir(#[from] fair_ir::IrError),
    /// The runtime failed.
    #[error(transparent)]
    Runtime(#[from] fair_runtime::RuntimeError),
    /// libtorch failed.
    #[error("{context}: {source}")]
    Torch {
        /// Where.
        context: String,
        /// libtorch's error.
        #[source]
        source: tch::TchError,
    },
}
