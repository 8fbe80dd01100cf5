//! Per-unit importance scores over a model: FAIR-Pruner's U-Score (Wasserstein utilisation
//! across classes) and R-Score (first-order Taylor reconstruction), and classic criteria
//! (filter norms, BatchNorm scale, random) behind one [`Scorer`] trait.
//!
//! Status: skeleton. The trait and the L1 filter norm are here; U- and R-Scores (one forward
//! pass with taps over the calibration set, one backward pass per batch) come with the
//! scoring work.
//!
//! ```
//! use fair_scoring::{L1Norm, Scorer};
//! let graph = fair_zoo::build("mlp", &[1, 28, 28], 10)?;
//! let model = fair_runtime::Model::new(graph, tch::Device::Cpu, 0)?;
//! let scores = L1Norm.score(&model, "layers.0")?;
//! assert_eq!(scores.len(), 512);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use fair_ir::Op;
use fair_runtime::Model;

/// Errors of the scorers.
#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    /// The named layer is not a Conv2d or Linear of the model.
    #[error("'{layer}' is not a prunable layer (Conv2d or Linear) of the model '{model}'")]
    NotPrunable {
        /// The layer asked for.
        layer: String,
        /// The model's name.
        model: String,
    },
    /// The runtime failed.
    #[error(transparent)]
    Runtime(#[from] fair_runtime::RuntimeError),
}

/// A criterion that gives one score per unit (output channel or feature) of a prunable
/// layer. Higher means more important.
pub trait Scorer {
    /// Short name, used in reports (e.g. `l1`).
    fn name(&self) -> &'static str;
    /// Scores every unit of `layer`.
    fn score(&self, model: &Model, layer: &str) -> Result<Vec<f64>, ScoringError>;
}

/// L1 norm of each unit's weight slice (a filter for Conv2d, a row for Linear).
#[derive(Debug, Clone, Copy, Default)]
pub struct L1Norm;

impl Scorer for L1Norm {
    fn name(&self) -> &'static str {
        "l1"
    }

    fn score(&self, model: &Model, layer: &str) -> Result<Vec<f64>, ScoringError> {
        let node = model
            .graph()
            .node(layer)
            .ok()
            .filter(|n| n.op.is_prunable());
        let Some(node) = node else {
            return Err(ScoringError::NotPrunable {
                layer: layer.to_owned(),
                model: model.graph().name().to_owned(),
            });
        };
        let units = match node.op {
            Op::Conv2d { out_channels, .. } => out_channels,
            Op::Linear { out_features, .. } => out_features,
            _ => unreachable!("filtered to prunable ops"),
        };
        let w = model.tensor(&format!("{layer}.weight"))?;
        let norms = w
            .detach()
            .abs()
            .reshape([units as i64, -1])
            .sum_dim_intlist(1, false, tch::Kind::Double);
        Ok(Vec::<f64>::try_from(&norms).expect("a 1-D double tensor converts"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l1_norm_sums_each_filter() {
        let graph = fair_zoo::build("resnet20", &[3, 32, 32], 10).unwrap();
        let model = Model::new(graph, tch::Device::Cpu, 0).unwrap();
        let scores = L1Norm.score(&model, "conv1").unwrap();
        let w = model.tensor("conv1.weight").unwrap();
        assert_eq!(scores.len(), 16);
        let by_hand = w.get(5).abs().sum(tch::Kind::Double).double_value(&[]);
        assert!((scores[5] - by_hand).abs() < 1e-9);
        assert!(L1Norm.score(&model, "bn1").is_err());
    }
}
