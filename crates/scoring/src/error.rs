//! Errors of the scorers.

use std::path::PathBuf;

/// Everything scoring can report; messages name the layer, class, file or setting.
#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    /// The named layer is not a prunable layer of the model.
    #[error(
        "'{layer}' is not a prunable layer (a Conv2d or Linear other than the output layer) of the model '{model}'"
    )]
    NotPrunable {
        /// The layer asked for.
        layer: String,
        /// The model's name.
        model: String,
    },
    /// The calibration data is unusable.
    #[error("calibration data{}: {detail}", at(.path))]
    Data {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// What is wrong.
        detail: String,
    },
    /// A criterion needs calibration data and none was given.
    #[error("the {0} criterion needs calibration data")]
    NeedsData(String),
    /// A setting is out of range.
    #[error("invalid setting {name}: {detail}")]
    Setting {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Activations or the loss became NaN or infinite.
    #[error("non-finite values: {0}")]
    NonFinite(String),
    /// BN-scale scoring on a layer without a BatchNorm right after it.
    #[error(
        "layer '{0}' is not followed by a BatchNorm, so it has no BN scale to score (leave bn out of the criteria for this model)"
    )]
    NoBatchNorm(String),
    /// A stored score file does not fit.
    #[error("score file '{}': {detail}", .path.display())]
    ScoreFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
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

fn at(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" '{}'", p.display()))
        .unwrap_or_default()
}

pub(crate) fn torch<T>(
    r: Result<T, tch::TchError>,
    context: impl FnOnce() -> String,
) -> Result<T, ScoringError> {
    r.map_err(|source| ScoringError::Torch {
        context: context(),
        source,
    })
}
