//! Errors of the analysis.

use std::path::PathBuf;

/// Everything dependency analysis, plan resolution, score files and selection can report;
/// messages name the layer, node or file and say what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalysisError {
    /// A plan or option names a layer that cannot be pruned.
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
    #[error("layers {} are coupled (they must keep the same units) but the plan removes different units from them (choose the package or intersection `rule`, or list the same units for each)", .layers.join(", "))]
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
    /// A graph construct the analysis does not handle, or inconsistent inputs.
    #[error("'{node}': {detail}")]
    Unsupported {
        /// The node (or model).
        node: String,
        /// What is unsupported.
        detail: String,
    },
    /// A plan file is unreadable.
    #[error("plan '{path}': {detail}")]
    PlanFile {
        /// The file.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A score file is unreadable or inconsistent.
    #[error("score file '{}': {detail}", .path.display())]
    ScoreFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A goal is out of range or does not fit the method.
    #[error("{0}")]
    Goal(String),
    /// A selection option is out of range.
    #[error("{option}: {detail}")]
    InvalidOption {
        /// The option (as a field name, e.g. `mac_weight`).
        option: &'static str,
        /// What is wrong and what is expected.
        detail: String,
    },
    /// A latency table is malformed or does not fit the model.
    #[error("latency table: {0}")]
    LatencyTable(String),
    /// A latency target the latency model cannot reach with this selection.
    #[error(
        "a latency reduction of {:.1}% cannot be reached: with this latency table the reachable range is 0% to {:.1}% \
         (predicted latency {:.3} ms for the unpruned model down to {:.3} ms); give a target in that range",
        .target * 100.0, .best * 100.0, .full_seconds * 1e3, .full_seconds * (1.0 - .best) * 1e3
    )]
    LatencyUnreachable {
        /// The target fraction of latency to remove.
        target: f64,
        /// The largest fraction the selection reaches on the latency model.
        best: f64,
        /// The unpruned model's latency on the latency model, seconds.
        full_seconds: f64,
    },
    /// Thresholding failed (NaN scores, unreachable target, ...).
    #[error(transparent)]
    Threshold(#[from] fair_threshold::ThresholdError),
    /// The IR rejected a graph.
    #[error(transparent)]
    Ir(#[from] fair_ir::IrError),
    /// A file could not be read or written, or an output path was refused.
    #[error(transparent)]
    Fs(#[from] fair_fs::FsError),
}
