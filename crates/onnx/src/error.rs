//! [`OnnxError`]: everything that can go wrong reading or writing ONNX.

use std::path::PathBuf;

/// An error while importing or exporting ONNX. Every variant names what it is about — the
/// ONNX node (name and op type), the initializer, the attribute or the IR node — and says what
/// was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnnxError {
    /// The bytes are not an ONNX `ModelProto`.
    #[error("cannot decode the ONNX model: {detail} (is this an .onnx file?)")]
    Decode {
        /// The protobuf decoder's message.
        detail: String,
    },
    /// A file could not be read or written.
    #[error("{action} '{}': {source}", .path.display())]
    Io {
        /// What was being done ("cannot read", "cannot write").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The model as a whole does not fit: no graph, several inputs or outputs, an input that
    /// is not a float image or feature vector, symbolic sizes, an unsupported opset.
    #[error("{detail}")]
    Model {
        /// What is wrong and what was expected.
        detail: String,
    },
    /// A node's op type has no mapping to fair-pruner's IR.
    #[error(
        "node '{node}' has op type '{op_type}'{}, which fair-pruner cannot import; supported ONNX ops: {}",
        domain_note(.domain),
        .supported.join(", ")
    )]
    UnsupportedOp {
        /// The node's name (or `#<index>` when it has none).
        node: String,
        /// The op type.
        op_type: String,
        /// The op's domain (empty for the default ONNX domain).
        domain: String,
        /// Every op type the importer supports.
        supported: Vec<&'static str>,
    },
    /// A supported op is used in a way the IR cannot express, or its inputs are wrong.
    #[error("node '{node}' ({op_type}): {detail}")]
    Node {
        /// The node's name (or `#<index>`).
        node: String,
        /// Its op type.
        op_type: String,
        /// What was expected and what was found.
        detail: String,
    },
    /// An attribute has the wrong type or an unsupported value.
    #[error("node '{node}' ({op_type}), attribute '{attribute}': {detail}")]
    Attribute {
        /// The node's name (or `#<index>`).
        node: String,
        /// Its op type.
        op_type: String,
        /// The attribute.
        attribute: String,
        /// What was expected and what was found.
        detail: String,
    },
    /// A node reads a value that no node, initializer or graph input produces.
    #[error(
        "node '{node}' ({op_type}) reads '{input}', which is neither an initializer, a graph input nor the output of an earlier node"
    )]
    MissingInput {
        /// The node's name (or `#<index>`).
        node: String,
        /// Its op type.
        op_type: String,
        /// The missing value.
        input: String,
    },
    /// An initializer (or constant) cannot be decoded: unsupported data type, data of the
    /// wrong length, unreadable external data.
    #[error("initializer '{name}': {detail}")]
    Initializer {
        /// The initializer's name.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// Two values of the ONNX graph have the same name (two initializers, two node outputs,
    /// a node output named like an initializer or a graph input): ONNX graphs are in SSA
    /// form, and reading either copy would silently ignore the other.
    #[error(
        "the ONNX graph defines '{name}' twice, as {first} and as {second}; ONNX names every value once, so one of them would be silently ignored"
    )]
    DuplicateName {
        /// The duplicated name.
        name: String,
        /// What defines it first (`initializer #0`, `graph input #1`, `an output of node ...`).
        first: String,
        /// What defines it again.
        second: String,
    },
    /// A weight holds NaN or infinite values (refused unless
    /// `ImportOptions::allow_non_finite` is set).
    #[error(
        "tensor '{name}' holds {nan} NaN and {infinite} infinite value(s) (of {total}); a model with non-finite weights gives meaningless scores and outputs, so it is not imported: fix the model, or pass --allow-non-finite (ImportOptions::allow_non_finite in Rust) to import it anyway"
    )]
    NonFinite {
        /// The tensor (IR parameter name, e.g. `conv1.weight`).
        name: String,
        /// How many values are NaN.
        nan: usize,
        /// How many values are +∞ or −∞.
        infinite: usize,
        /// How many values the tensor holds.
        total: usize,
    },
    /// The IR rejected the imported graph, or the graph to export is invalid.
    #[error("{context}: {source}")]
    Ir {
        /// What was being built (e.g. "node 'conv1' (Conv) as IR node 'conv1'").
        context: String,
        /// The IR's error.
        #[source]
        source: fair_ir::IrError,
    },
    /// A file could not be read or written, or a path in the model leads outside its
    /// directory.
    #[error(transparent)]
    Fs(#[from] fair_fs::FsError),
    /// A safetensors file could not be written (a directory or special file in the way, or
    /// tensors it cannot hold); the message names the file.
    #[error(transparent)]
    Safetensors(#[from] fair_safetensors::SafetensorsError),
    /// A tensor does not have the shape the IR's parameter spec says.
    #[error("tensor '{name}' has shape {found:?}, but the IR expects {expected:?}")]
    TensorShape {
        /// The tensor (IR parameter name).
        name: String,
        /// The IR's shape.
        expected: Vec<usize>,
        /// The tensor's shape.
        found: Vec<usize>,
    },
    /// A tensor's data does not fit its declared shape or dtype.
    #[error("tensor '{name}': {detail}")]
    TensorData {
        /// The tensor.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// Export was given no tensor for one of the graph's parameters.
    #[error("no tensor named '{name}' was given, but the graph's parameters include it")]
    MissingTensor {
        /// The parameter name.
        name: String,
    },
    /// An IR node has no ONNX form (yet), or its attributes cannot be written as ONNX.
    #[error("cannot export IR node '{node}' ({op}) to ONNX: {detail}")]
    Export {
        /// The IR node.
        node: String,
        /// Its op type name.
        op: String,
        /// Why.
        detail: String,
    },
}

fn domain_note(domain: &str) -> String {
    if domain.is_empty() || domain == "ai.onnx" {
        String::new()
    } else {
        format!(" in domain '{domain}'")
    }
}
