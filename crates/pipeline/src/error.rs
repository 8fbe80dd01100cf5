//! Errors of the pipeline.

use std::path::PathBuf;

/// Everything a pipeline run can report. Settings are named as on the command line
/// (`--finetune-lr`), which is also the name of the builder method or config key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A setting is out of range or settings contradict each other.
    #[error("--{setting}: {detail}")]
    Invalid {
        /// The setting, as its command-line flag without dashes (e.g. `finetune-lr`).
        setting: String,
        /// What is wrong and what is expected.
        detail: String,
    },
    /// A run configuration file is unusable.
    #[error("config{}: {detail}", .path.as_ref().map(|p| format!(" '{}'", p.display())).unwrap_or_default())]
    Config {
        /// The file.
        path: Option<PathBuf>,
        /// What is wrong.
        detail: String,
    },
    /// Drawing a chart failed.
    #[error("drawing the chart {chart}: {detail}")]
    Chart {
        /// The chart file.
        chart: String,
        /// What failed.
        detail: String,
    },
    /// The model zoo refused.
    #[error(transparent)]
    Zoo(#[from] fair_zoo::ZooError),
    /// The IR refused, or a file could not be written.
    #[error(transparent)]
    Ir(#[from] fair_ir::IrError),
    /// Data could not be loaded.
    #[error(transparent)]
    Data(#[from] fair_data::DataError),
    /// The runtime (libtorch) failed.
    #[error(transparent)]
    Runtime(#[from] fair_runtime::RuntimeError),
    /// Scoring failed.
    #[error(transparent)]
    Scoring(#[from] fair_scoring::ScoringError),
    /// Analysis, selection or a score/plan file failed.
    #[error(transparent)]
    Analysis(#[from] fair_analysis::AnalysisError),
    /// Surgery failed.
    #[error(transparent)]
    Surgery(#[from] fair_surgery::SurgeryError),
    /// Training or evaluation failed.
    #[error(transparent)]
    Train(#[from] fair_train::TrainError),
}

impl PipelineError {
    /// An [`PipelineError::Invalid`] for `setting`.
    pub fn invalid(setting: &str, detail: impl Into<String>) -> Self {
        PipelineError::Invalid {
            setting: setting.to_owned(),
            detail: detail.into(),
        }
    }
}
