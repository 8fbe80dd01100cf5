//! Per-unit importance scores over a [`fair_runtime::Model`] and calibration data:
//! FAIR-Pruner's U-Score (Wasserstein utilisation across classes) and R-Score (first-order
//! Taylor reconstruction), and classic criteria (L1/L2 filter norm, BatchNorm scale, random)
//! behind one [`Criterion`] trait, found by name in a [`Registry`] that researchers extend.
//!
//! Efficient by construction: the U-Score runs one eval-mode forward pass over the classes'
//! samples (consecutive classes packed into shared batches) with every analysis point tapped
//! at once, reduces each tap to sorted projections
//! on the model's device, and compares all class pairs vectorised over units (in parallel;
//! on the host, a bounded search finds the same largest pair distance, bit for bit, while
//! computing few pairs in full: [`PairSearch`]); the R-Score runs one forward and one backward pass per calibration batch and reads every
//! layer's θ·∂L/∂θ from the same gradients. No per-layer or per-pair forward passes.
//!
//! [`score`] runs a list of criteria and returns a [`fair_analysis::ScoreFile`] with
//! provenance; thresholds and plans are then computed from it without libtorch.
//!
//! ```
//! use fair_scoring::{Calibration, Progress, Registry, ScoringSettings};
//! use fair_runtime::Model;
//! use tch::{Device, Kind, Tensor};
//!
//! // Stand-ins for a trained model and a calibration file (`inputs`, `labels`).
//! let dir = tempfile::tempdir()?;
//! let (weights, calibration) = (dir.path().join("vgg.safetensors"), dir.path().join("calibration.safetensors"));
//! let graph = fair_zoo::build("vgg_compact", &[1, 16, 16], 2)?;
//! Model::new(graph.clone(), Device::Cpu, 0)?.save_weights(&weights)?;
//! let x = Tensor::randn([16, 1, 16, 16], (Kind::Float, Device::Cpu));
//! let y = Tensor::arange(16, (Kind::Int64, Device::Cpu)).remainder(2);
//! fair_runtime::write_safetensors(&calibration, &[("inputs".into(), x), ("labels".into(), y)])?;
//!
//! let model = Model::from_safetensors(graph, &weights, Device::Cpu)?;
//! let data = Calibration::from_safetensors(&calibration)?;
//! let criteria = Registry::default().create_all(&["u", "r", "l1"], &ScoringSettings::default())?;
//! let scores = fair_scoring::score(&model, Some(&data), &criteria, Progress::QUIET)?;
//! assert_eq!(scores.criteria(), ["l1", "r", "u"]);
//! assert_eq!((scores.layers[0].layer.as_str(), scores.layers[0].units), ("features.0", 16));
//! assert_eq!(scores.layers[0].scores["u"].len(), 16);
//! scores.save(&dir.path().join("scores.json"))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod calibration;
mod criteria;
mod error;
mod layers;
pub mod memory;
mod progress;
mod r_score;
mod score;
mod u_score;

pub use calibration::Calibration;
pub use criteria::{
    BnScale, Context, Criterion, Factory, GroupMagnitude, L1Norm, L2Norm, RScore, RandomScore,
    Registry, Scored, ScoringSettings, UScore,
};
pub use error::ScoringError;
pub use layers::{AnalysisPoint, Heads, PrunableLayer, prunable_layers};
pub use memory::{ByteSize, MaxMemory, check_memory_bound, default_max_memory};
pub use progress::Progress;
pub use r_score::{RMode, RScoreMemory, RScoreSettings, r_scores};
pub use score::{model_digest, reusable, score};
pub use u_score::{
    BnDrift, ConvDistance, Engine, LayerPairCheck, MAX_PROJECTIONS, PairCheck, PairCounts,
    PairSearch, ParsePairSearchError, SpillDir, TimeProfile, UScoreRun, UScoreSettings,
    Wasserstein, u_directions, u_scores, u_scores_measured,
};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
