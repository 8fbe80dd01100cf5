//! Errors raised while building, validating, reading or writing an IR graph.

use std::path::PathBuf;

/// Everything that can be wrong with an IR graph. Each variant names the node (or file) and
/// says what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IrError {
    /// Two nodes share a name.
    #[error("duplicate node name '{name}': node names must be unique")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A node reads from a name that no node has.
    #[error("node '{node}' reads from '{input}', but no node has that name")]
    UnknownInput {
        /// The reading node.
        node: String,
        /// The missing input name.
        input: String,
    },
    /// The inputs form a cycle.
    #[error("the graph has a cycle through the nodes {}", .nodes.join(", "))]
    Cycle {
        /// Nodes that are on (or only reachable through) the cycle.
        nodes: Vec<String>,
    },
    /// A node has the wrong number of inputs for its op.
    #[error("node '{node}' ({op}) expects {expected} input(s), found {found}")]
    Arity {
        /// The node.
        node: String,
        /// Its op name.
        op: &'static str,
        /// What the op accepts, e.g. "1" or "at least 2".
        expected: String,
        /// How many inputs it has.
        found: usize,
    },
    /// An input has a shape the op cannot take (channel mismatch, too small, wrong rank).
    #[error("node '{node}': {detail}")]
    Shape {
        /// The node.
        node: String,
        /// What was expected and what was found.
        detail: String,
    },
    /// An op attribute is out of range (zero kernel, groups not dividing channels, ...).
    #[error("node '{node}': invalid attribute: {detail}")]
    Attribute {
        /// The node.
        node: String,
        /// What is wrong.
        detail: String,
    },
    /// The graph does not have exactly one `input` node.
    #[error("a graph needs exactly one node of type 'input', found {found}{}", list(.nodes))]
    InputCount {
        /// How many input nodes there are.
        found: usize,
        /// Their names.
        nodes: Vec<String>,
    },
    /// The graph does not have exactly one output (a node that no other node reads).
    #[error("a graph needs exactly one output (a node no other node reads), found {}{}", .nodes.len(), list(.nodes))]
    OutputCount {
        /// The nodes that nobody reads.
        nodes: Vec<String>,
    },
    /// A name was looked up that the graph does not have.
    #[error("the graph has no node named '{name}'")]
    NoSuchNode {
        /// The name.
        name: String,
    },
    /// A TOML or JSON document could not be parsed into a graph.
    #[error("cannot read the graph{}: {message}", at(.path))]
    Parse {
        /// The file, when reading from one.
        path: Option<PathBuf>,
        /// The parser's message (with line and column where the format gives them).
        message: String,
    },
    /// A graph could not be written as TOML or JSON.
    #[error("cannot serialise the graph: {0}")]
    Serialize(String),
    /// A file could not be read or written, or an output path was refused (see `fair_fs`).
    /// Boxed, so that every error that carries an `IrError` stays small.
    #[error(transparent)]
    Fs(Box<fair_fs::FsError>),
}

impl From<fair_fs::FsError> for IrError {
    fn from(e: fair_fs::FsError) -> Self {
        IrError::Fs(Box::new(e))
    }
}

fn list(nodes: &[String]) -> String {
    if nodes.is_empty() {
        String::new()
    } else {
        format!(" ({})", nodes.join(", "))
    }
}

fn at(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!(" from '{}'", p.display()),
        None => String::new(),
    }
}
