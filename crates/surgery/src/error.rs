//! Errors of model surgery.

/// Everything surgery can report; messages name the layer, node or file and say what is
/// wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SurgeryError {
    /// The plan does not fit the model (see [`fair_analysis::AnalysisError`]).
    #[error(transparent)]
    Analysis(#[from] fair_analysis::AnalysisError),
    /// The IR rejected a graph or a file could not be written.
    #[error(transparent)]
    Ir(#[from] fair_ir::IrError),
    /// A file could not be read or written, or an output path was refused.
    #[error(transparent)]
    Fs(#[from] fair_fs::FsError),
    /// The runtime (libtorch) failed.
    #[error(transparent)]
    Runtime(#[from] fair_runtime::RuntimeError),
    /// The model could not be written as ONNX.
    #[error("writing the ONNX model: {0}")]
    Onnx(Box<fair_onnx::OnnxError>),
}

impl From<fair_onnx::OnnxError> for SurgeryError {
    fn from(e: fair_onnx::OnnxError) -> Self {
        SurgeryError::Onnx(Box::new(e))
    }
}
