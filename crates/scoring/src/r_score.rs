//! R-Score: first-order Taylor estimate of the loss change when a unit is removed,
//! |Σ over batches Σ over the unit's parameters θ·∂L/∂θ|.

use fair_runtime::{Mode, Model};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::calibration::Calibration;
use crate::error::{ScoringError, torch};
use crate::layers::PrunableLayer;
use crate::progress::Progress;

/// Which forward mode the R-Score's passes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum RMode {
    /// Training mode as in the authors' package (BatchNorm batch statistics, dropout active)
    /// but without touching BatchNorm's running statistics.
    #[default]
    Train,
    /// Eval mode (running statistics, no dropout).
    Eval,
}

/// Settings of the R-Score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RScoreSettings {
    /// Forward mode (default training-mode BatchNorm).
    pub mode: RMode,
    /// Batch size over the calibration samples, in their order (default 64).
    pub batch_size: usize,
    /// Seed for dropout during the passes.
    pub seed: u64,
}

impl Default for RScoreSettings {
    fn default() -> Self {
        RScoreSettings {
            mode: RMode::Train,
            batch_size: 64,
            seed: 0,
        }
    }
}

/// R-Scores of every layer, from one forward and one backward pass per calibration batch
/// (cross-entropy loss, mean over the batch).
///
/// A unit's output y_j is linear and homogeneous in its own weights and bias, so
/// Σ_{θ ∈ unit j} θ·∂L/∂θ = Σ over samples and positions of y_j·∂L/∂y_j (Euler's theorem).
/// The backward pass therefore only computes gradients with respect to the prunable layers'
/// outputs (no weight gradients are formed or stored), and every layer's R-Score is read
/// from the same pass. The model's parameters, running statistics and gradients are left
/// as they were.
pub fn r_scores(
    model: &Model,
    layers: &[PrunableLayer],
    data: &Calibration,
    settings: &RScoreSettings,
    progress: Progress,
) -> Result<Vec<Vec<f64>>, ScoringError> {
    if settings.batch_size == 0 {
        return Err(ScoringError::Setting {
            name: "batch-size",
            detail: "must be at least 1".into(),
        });
    }
    let mode = match settings.mode {
        RMode::Train => Mode::TrainFrozenStats,
        RMode::Eval => Mode::Eval,
    };
    tch::manual_seed(settings.seed as i64);
    let device = model.device();
    let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
    let mut sums: Vec<Tensor> = layers
        .iter()
        .map(|l| Tensor::zeros([l.units as i64], (Kind::Double, device)))
        .collect();
    let batches = data.len().div_ceil(settings.batch_size);
    let bar = progress.bar(batches, "R-Score: forward + backward");
    for (b, (x, y)) in data.batches(settings.batch_size).enumerate() {
        let out = model.forward_with_taps(&x.to_device(device), mode, &names)?;
        let loss = torch(
            out.output.f_log_softmax(-1, Kind::Float).and_then(|l| {
                l.f_nll_loss::<Tensor>(&y.to_device(device), None, tch::Reduction::Mean, -100)
            }),
            || format!("cross-entropy of batch {b}"),
        )?;
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            return Err(ScoringError::NonFinite(format!(
                "the loss of calibration batch {b} is {value}"
            )));
        }
        let outputs: Vec<&Tensor> = layers.iter().map(|l| &out.taps[&l.name]).collect();
        let grads = torch(
            Tensor::f_run_backward(&[&loss], &outputs, false, false),
            || format!("backward of batch {b}"),
        )?;
        tch::no_grad(|| -> Result<(), ScoringError> {
            for ((layer, (yv, g)), sum) in layers
                .iter()
                .zip(outputs.iter().zip(&grads))
                .zip(sums.iter_mut())
            {
                // Sum y·∂L/∂y over every axis but the unit axis (1).
                let dims: Vec<i64> = (0..yv.dim() as i64).filter(|&d| d != 1).collect();
                let c = torch(
                    (yv.detach().to_kind(Kind::Double) * g.to_kind(Kind::Double))
                        .f_sum_dim_intlist(dims.as_slice(), false, Kind::Double),
                    || format!("R-Score of layer '{}'", layer.name),
                )?;
                *sum += c;
            }
            Ok(())
        })?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    sums.into_iter()
        .zip(layers)
        .map(|(s, layer)| {
            Ok(torch(
                Vec::<f64>::try_from(s.abs().to_device(tch::Device::Cpu)),
                || format!("reading R-Scores of '{}'", layer.name),
            )?)
        })
        .collect()
}
