//! Errors of the runtime.

use std::path::PathBuf;

/// Everything the runtime can report. Messages name the node, tensor or file involved.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// libtorch failed while running a node or creating a tensor.
    #[error("{context}: {source}")]
    Torch {
        /// Where it happened (e.g. "node 'layer1.0.conv1'").
        context: String,
        /// libtorch's error.
        #[source]
        source: tch::TchError,
    },
    /// A weights file does not match the graph. Lists every problem at once; nothing was
    /// loaded.
    #[error("weights file '{}' does not match the graph '{graph}' ({} problem(s)); nothing was loaded:\n  {}", .path.display(), .problems.len(), .problems.join("\n  "))]
    WeightsMismatch {
        /// The file.
        path: PathBuf,
        /// The graph's name.
        graph: String,
        /// One line per missing, unexpected or wrong-shaped tensor.
        problems: Vec<String>,
    },
    /// A safetensors file is corrupt, truncated or holds an unsupported dtype.
    #[error("cannot read safetensors file '{}': {message}", .path.display())]
    BadTensorFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read or written.
    #[error("cannot {action} '{}': {source}", .path.display())]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The forward input does not have the graph's input shape.
    #[error("the input has shape {found:?}, but the graph '{graph}' expects [batch, {}]", .expected.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))]
    InputShape {
        /// The graph's name.
        graph: String,
        /// Per-sample shape the graph expects.
        expected: Vec<usize>,
        /// Shape of the tensor given (with batch dimension).
        found: Vec<i64>,
    },
    /// A tap or parameter name that the graph does not have.
    #[error("the graph '{graph}' has no {what} named '{name}'")]
    NoSuch {
        /// The graph's name.
        graph: String,
        /// "node" or "parameter".
        what: &'static str,
        /// The name asked for.
        name: String,
    },
    /// A device string could not be used.
    #[error("{0}")]
    Device(String),
    /// An IR error (e.g. while writing).
    #[error(transparent)]
    Ir(#[from] fair_ir::IrError),
}

/// Adds context to a libtorch error.
pub(crate) fn torch<T>(
    r: Result<T, tch::TchError>,
    context: impl FnOnce() -> String,
) -> Result<T, RuntimeError> {
    r.map_err(|source| RuntimeError::Torch {
        context: context(),
        source,
    })
}
