//! R-Score: first-order Taylor estimate of the loss change when a unit is removed,
//! |Σ over batches Σ over the unit's parameters θ·∂L/∂θ|.

use fair_runtime::{Mode, Model};
use serde::{Deserialize, Serialize};
use tch::Kind;

use crate::calibration::Calibration;
use crate::error::{ScoringError, torch};
use crate::layers::PrunableLayer;
use crate::progress::Progress;

/// Which forward mode the R-Score's passes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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
/// (cross-entropy loss, mean over the batch). Gradients accumulate over the batches, so the
/// sum over batches of θ·∂L_b/∂θ is θ·Σ_b ∂L_b/∂θ. The model's parameters, running statistics
/// and gradients are left as they were (gradients are zeroed afterwards).
pub fn r_scores(
    model: &Model,
    layers: &[PrunableLayer],
    data: &Calibration,
    settings: &RScoreSettings,
    progress: Progress,
) -> Result<Vec<Vec<f64>>, ScoringError> {
    if settings.batch_size == 0 {
        return Err(ScoringError::Setting {
            name: "batch_size",
            detail: "must be at least 1".into(),
        });
    }
    let mode = match settings.mode {
        RMode::Train => Mode::TrainFrozenStats,
        RMode::Eval => Mode::Eval,
    };
    let zero_grads = || {
        for mut v in model.var_store().trainable_variables() {
            v.zero_grad();
        }
    };
    zero_grads();
    tch::manual_seed(settings.seed as i64);
    let device = model.device();
    let batches = data.len().div_ceil(settings.batch_size);
    let bar = progress.bar(batches, "R-Score: forward + backward");
    for (b, (x, y)) in data.batches(settings.batch_size).enumerate() {
        let logits = model.forward(&x.to_device(device), mode)?;
        let loss = torch(
            logits.f_log_softmax(-1, Kind::Float).and_then(|l| {
                l.f_nll_loss::<tch::Tensor>(&y.to_device(device), None, tch::Reduction::Mean, -100)
            }),
            || format!("cross-entropy of batch {b}"),
        )?;
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            zero_grads();
            return Err(ScoringError::NonFinite(format!(
                "the loss of calibration batch {b} is {value}"
            )));
        }
        torch(loss.f_backward(), || format!("backward of batch {b}"))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mut out = Vec::with_capacity(layers.len());
    for layer in layers {
        let units = layer.units as i64;
        let contribution = |suffix: &str| -> Result<Option<tch::Tensor>, ScoringError> {
            let Ok(p) = model.tensor(&format!("{}.{suffix}", layer.name)) else {
                return Ok(None);
            };
            let g = p.grad();
            if !g.defined() {
                return Ok(None);
            }
            let c = torch(
                (p.detach().to_kind(Kind::Double) * g.to_kind(Kind::Double))
                    .f_reshape([units, -1])
                    .and_then(|t| t.f_sum_dim_intlist(1, false, Kind::Double)),
                || format!("R-Score of layer '{}'", layer.name),
            )?;
            Ok(Some(c))
        };
        let total = match (contribution("weight")?, contribution("bias")?) {
            (Some(w), Some(b)) => w + b,
            (Some(w), None) => w,
            (None, Some(b)) => b,
            (None, None) => tch::Tensor::zeros([units], (Kind::Double, device)),
        };
        let values: Vec<f64> =
            Vec::try_from(total.abs().to_device(tch::Device::Cpu)).map_err(|source| {
                ScoringError::Torch {
                    context: format!("reading R-Scores of '{}'", layer.name),
                    source,
                }
            })?;
        out.push(values);
    }
    zero_grads();
    Ok(out)
}
