//! Errors of the scorers.

use std::path::PathBuf;

/// Everything scoring can report; messages name the layer, class, file or setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// A setting is out of range, named by its setting with `-` for `_` (`max-memory`: the
    /// config key under `[prune]` with `_`, the command-line flag with `--`). Settings named
    /// in the detail are written in backticks (`` `per-class` ``), so a caller can respell
    /// them.
    #[error("{name}: {detail}")]
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
    /// A criterion name that the registry does not know.
    #[error("unknown criterion '{name}' (known: {})", .known.join(", "))]
    UnknownCriterion {
        /// The name asked for.
        name: String,
        /// The registered names.
        known: Vec<String>,
    },
    /// A criterion produced a NaN or infinite score.
    #[error("the {criterion} score of unit {unit} of layer '{layer}' is {value}{hint}")]
    BadScore {
        /// The criterion.
        criterion: String,
        /// The layer.
        layer: String,
        /// The unit.
        unit: usize,
        /// The value.
        value: f64,
        /// A hint about the likely cause.
        hint: String,
    },
    /// The score file could not be assembled or written.
    #[error(transparent)]
    ScoreFile(#[from] fair_analysis::AnalysisError),
    /// The temporary file of the U-Score's summaries that do not fit the memory bound could
    /// not be written or read.
    #[error(
        "the U-Score's temporary file of summaries in '{}' failed {action}: {source} (`spill-dir` \
         names another directory for it, or none to re-run the forward passes instead of \
         keeping one; a larger `max-memory` keeps more of the summaries in memory)",
        .dir.display()
    )]
    Spill {
        /// The directory of the file.
        dir: PathBuf,
        /// What failed: "writing" or "reading back".
        action: &'static str,
        /// The failure.
        source: std::io::Error,
    },
    /// The runtime failed.
    #[error(transparent)]
    Runtime(#[from] fair_runtime::RuntimeError),
}

fn at(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" '{}'", p.display()))
        .unwrap_or_default()
}

/// The workspace's one helper that attaches context to a libtorch error.
pub(crate) use fair_runtime::tch_context as torch;
