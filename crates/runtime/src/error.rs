//! Errors of the runtime.

use std::path::PathBuf;

/// Everything the runtime can report. Messages name the node, tensor or file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// Tensors could not be written as a safetensors file (a kind safetensors cannot hold, or
    /// a path that is not a regular file). Nothing was written.
    #[error("cannot write safetensors file '{}': {message}", .path.display())]
    BadTensorWrite {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Floating-point tensors hold NaN or infinite values. Lists every offending tensor at
    /// once.
    #[error("weights file '{}' holds non-finite values in {} tensor(s):\n  {}", .path.display(), .problems.len(), .problems.join("\n  "))]
    NonFiniteWeights {
        /// The file the tensors came from.
        path: PathBuf,
        /// One line per tensor: its name and how many NaN and infinite values it holds.
        problems: Vec<String>,
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
    /// The model's parameters would not fit in memory.
    #[error("the model '{graph}' needs {} of parameters, more than the {} of memory available; nothing was allocated", human_bytes(*.bytes), human_bytes(*.available))]
    TooLarge {
        /// The graph's name.
        graph: String,
        /// Bytes the parameters need (f32).
        bytes: u128,
        /// Bytes available.
        available: u128,
    },
    /// An IR error (e.g. while writing).
    #[error(transparent)]
    Ir(#[from] fair_ir::IrError),
    /// A file could not be read or written, or an output path was refused.
    #[error(transparent)]
    Fs(#[from] fair_fs::FsError),
}

fn human_bytes(b: u128) -> String {
    let gib = b as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.1} GiB")
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

/// Adds context to a libtorch error: `tch_context(t.f_relu(), || format!("node '{name}'"))`.
/// The one helper every crate uses to turn a `tch` result into a [`RuntimeError`] that names
/// the node, tensor or file.
pub fn tch_context<T>(
    r: Result<T, tch::TchError>,
    context: impl FnOnce() -> String,
) -> Result<T, RuntimeError> {
    r.map_err(|source| RuntimeError::Torch {
        context: context(),
        source,
    })
}
