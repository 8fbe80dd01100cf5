//! Per-unit importance scores over a [`fair_runtime::Model`] and calibration data:
//! FAIR-Pruner's U-Score (Wasserstein utilisation across classes) and R-Score (first-order
//! Taylor reconstruction), and classic criteria (L1/L2 filter norm, BatchNorm scale, random)
//! behind one [`Scorer`] trait.
//!
//! Efficient by construction: the U-Score runs one eval-mode forward pass per class over its
//! samples with every analysis point tapped at once, reduces each tap to sorted projections
//! on the model's device, and compares all class pairs vectorised over units (in parallel);
//! the R-Score runs one forward and one backward pass per calibration batch and reads every
//! layer's θ·∂L/∂θ from the same gradients. No per-layer or per-pair forward passes.
//!
//! ```no_run
//! use fair_scoring::{AnalysisPoint, Calibration, Progress, RScoreSettings, UScoreSettings};
//! use fair_runtime::Model;
//! use std::path::Path;
//!
//! let graph = fair_zoo::build("vgg11_bn_cifar", &[3, 32, 32], 10)?;
//! let model = Model::from_safetensors(graph, Path::new("vgg.safetensors"), tch::Device::Cpu)?;
//! let data = Calibration::from_safetensors(Path::new("calibration.safetensors"))?;
//! let layers = fair_scoring::prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
//! let (u, _notes) = fair_scoring::u_scores(&model, &layers, &data, &UScoreSettings::default(), Progress::default())?;
//! let r = fair_scoring::r_scores(&model, &layers, &data, &RScoreSettings::default(), Progress::default())?;
//! let curve = fair_threshold::TodCurve::new(&layers[0].name, &u[0], &r[0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod calibration;
mod criteria;
mod error;
mod layers;
mod progress;
mod r_score;
mod scores;
mod u_score;

pub use calibration::Calibration;
pub use criteria::{BnScale, Context, L1Norm, L2Norm, RScore, RandomScore, Scorer, UScore};
pub use error::ScoringError;
pub use layers::{AnalysisPoint, PrunableLayer, prunable_layers};
pub use progress::Progress;
pub use r_score::{RMode, RScoreSettings, r_scores};
pub use scores::{LayerScores, Provenance, ScoreFile, model_digest};
pub use u_score::{ConvDistance, UScoreSettings, Wasserstein, u_scores};
