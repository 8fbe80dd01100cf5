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

impl From<fair_safetensors::SafetensorsError> for RuntimeError {
    fn from(e: fair_safetensors::SafetensorsError) -> Self {
        use fair_safetensors::SafetensorsError as E;
        match e {
            E::Malformed { path, message } => RuntimeError::BadTensorFile { path, message },
            E::Unwritable { path, message } => RuntimeError::BadTensorWrite { path, message },
            E::Io {
                action,
                path,
                source,
            } => RuntimeError::Io {
                action,
                path,
                source,
            },
            E::Fs(e) => RuntimeError::Fs(e),
            // `SafetensorsError` is non-exhaustive: a future variant still names its file.
            other => RuntimeError::BadTensorFile {
                path: other.path().map(PathBuf::from).unwrap_or_default(),
                message: other.to_string(),
            },
        }
    }
}

/// "1.5 GiB", "12.0 MiB".
pub(crate) fn human_bytes(b: u128) -> String {
    let gib = b as f64 / (1u64 << 30) as f64;
    if gib >= 1.0 {
        format!("{gib:.1} GiB")
    } else {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    }
}

/// Adds context to a libtorch error: `tch_context(t.f_relu(), || format!("node '{name}'"))`.
/// The one helper every crate uses to turn a `tch` result into a [`RuntimeError`] that names
/// the node, tensor or file. libtorch's C++ backtrace is dropped from the message (see
/// [`without_backtrace`]).
pub fn tch_context<T>(
    r: Result<T, tch::TchError>,
    context: impl FnOnce() -> String,
) -> Result<T, RuntimeError> {
    r.map_err(|source| RuntimeError::Torch {
        context: context(),
        source: without_backtrace(source),
    })
}

/// A libtorch error reduced to its message, for a one-line report.
///
/// libtorch appends to its message where the exception was raised (`Exception raised from
/// … (most recent call first):`) and a C++ backtrace (`frame #0: …`, often 40 lines); some
/// messages also add paragraphs of detail after a blank line (the backends an operator is
/// registered for). Only the message's first paragraph is kept, its lines joined by a
/// space; the rest is logged with `tracing::debug!` (target `fair_runtime::libtorch`), so
/// running with debug logging shows it. Errors that did not come from libtorch's C++ code
/// are returned unchanged.
pub fn without_backtrace(e: tch::TchError) -> tch::TchError {
    match e {
        tch::TchError::Torch(text) => {
            let (message, rest) = split_message(&text);
            if !rest.is_empty() {
                tracing::debug!(target: "fair_runtime::libtorch", "libtorch error \"{message}\", in full:\n{text}");
            }
            tch::TchError::Torch(message)
        }
        other => other,
    }
}

/// libtorch's text split into its first paragraph (lines joined by a space) and whatever
/// follows (the backtrace and further detail; empty if there is none).
fn split_message(text: &str) -> (String, &str) {
    let mut kept = Vec::new();
    let mut end = text.len();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        let stop = trimmed.starts_with("Exception raised from")
            || trimmed.starts_with("frame #")
            || (trimmed.is_empty() && !kept.is_empty());
        if stop {
            end = offset;
            break;
        }
        if !trimmed.is_empty() {
            kept.push(trimmed);
        }
        offset += line.len();
    }
    let rest = text[end..].trim();
    if kept.is_empty() {
        // Nothing before the backtrace: say where libtorch raised it.
        let first = rest.lines().next().unwrap_or("").trim();
        return (first.to_owned(), rest);
    }
    (kept.join(" "), rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A libtorch error as tch 0.24 reports it (message, raise site, backtrace).
    const CONV: &str = "expected scalar type Long but found Float\n\
        Exception raised from check_type at /pytorch/aten/src/ATen/core/TensorMethods.cpp:12 \
        (most recent call first):\n\
        frame #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x9d (0x7f in libc10.so)\n\
        frame #1: <unknown function> + 0x3946ebf (0x7f in libtorch_cpu.so)\n";

    fn message(text: &str) -> String {
        match without_backtrace(tch::TchError::Torch(text.to_owned())) {
            tch::TchError::Torch(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_backtrace_and_raise_site_are_dropped() {
        assert_eq!(message(CONV), "expected scalar type Long but found Float");
        // A backtrace without the raise-site line (other libtorch builds).
        assert_eq!(
            message("out of memory\nframe #0: a + 0x1 (0x2 in b.so)\nframe #1: c\n"),
            "out of memory"
        );
    }

    #[test]
    fn a_multi_line_message_becomes_one_line_and_later_paragraphs_are_dropped() {
        let cuda = "CUDA error: out of memory\nCUDA kernel errors might be asynchronously \
                    reported at some other API call.\nFor debugging consider passing \
                    CUDA_LAUNCH_BLOCKING=1\n\nException raised from c10_cuda_check at \
                    CUDAException.cpp:43 (most recent call first):\nframe #0: x\n";
        assert_eq!(
            message(cuda),
            "CUDA error: out of memory CUDA kernel errors might be asynchronously reported at \
             some other API call. For debugging consider passing CUDA_LAUNCH_BLOCKING=1"
        );
        let dispatch = "Could not run 'aten::foo' with arguments from the 'CUDA' backend.\n\n\
                        CPU: registered at RegisterCPU.cpp:1\nMeta: registered at x.cpp:2\n\n\
                        Exception raised from reportError at Dispatch.cpp:1 (most recent call \
                        first):\nframe #0: y\n";
        assert_eq!(
            message(dispatch),
            "Could not run 'aten::foo' with arguments from the 'CUDA' backend."
        );
    }

    #[test]
    fn a_message_without_a_backtrace_is_kept_and_other_errors_are_untouched() {
        assert_eq!(
            message("shape '[2, 3]' is invalid"),
            "shape '[2, 3]' is invalid"
        );
        // Only a raise site and a backtrace: the raise site is the message.
        assert_eq!(
            message("Exception raised from f at a.cpp:1 (most recent call first):\nframe #0: z"),
            "Exception raised from f at a.cpp:1 (most recent call first):"
        );
        let kind = without_backtrace(tch::TchError::Kind(
            "frame #0\nException raised from".into(),
        ));
        assert!(
            matches!(kind, tch::TchError::Kind(ref k) if k == "frame #0\nException raised from")
        );
    }

    #[test]
    fn tch_context_names_the_context_and_keeps_only_the_message() {
        let e = tch_context::<()>(Err(tch::TchError::Torch(CONV.to_owned())), || {
            "node 'conv1' (conv2d)".to_owned()
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "node 'conv1' (conv2d): Internal torch error: expected scalar type Long but found \
             Float"
        );
    }
}
