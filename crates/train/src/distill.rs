//! Knowledge distillation: the loss that pulls a student towards a teacher's outputs.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::TrainError;

/// Distillation from a teacher (for fine-tuning after pruning, the unpruned model):
///
/// loss = (1 − `weight`) · CE(student, labels)
///        + `weight` · T² · KL( softmax(teacher / T) ‖ softmax(student / T) )
///
/// with T = `temperature` and the KL divergence summed over classes and averaged over the
/// batch (PyTorch's `reduction="batchmean"`) — the formula of the exported `finetune.py`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distillation {
    /// Softmax temperature T (positive, finite).
    pub temperature: f64,
    /// Weight of the distillation term, in [0, 1] (0: plain cross-entropy).
    pub weight: f64,
}

impl Default for Distillation {
    /// T = 4, weight ½.
    fn default() -> Self {
        Distillation {
            temperature: 4.0,
            weight: 0.5,
        }
    }
}

impl Distillation {
    /// Checks that the temperature is positive and finite and the weight is in [0, 1].
    pub fn check(&self) -> Result<(), TrainError> {
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(TrainError::Setting {
                name: "distill_temperature",
                detail: format!("must be positive and finite, found {}", self.temperature),
            });
        }
        if !(0.0..=1.0).contains(&self.weight) {
            return Err(TrainError::Setting {
                name: "distill_weight",
                detail: format!("must be in [0, 1], found {}", self.weight),
            });
        }
        Ok(())
    }
}

/// The distillation loss of a batch (a scalar tensor, differentiable in `student`):
/// `student` and `teacher` are logits `[B, classes]`, `labels` class ids `[B]` (see
/// [`Distillation`] for the formula).
pub fn distillation_loss(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    d: &Distillation,
) -> Result<Tensor, TrainError> {
    let (s, t) = (student.size(), teacher.size());
    if s != t || s.len() != 2 {
        return Err(TrainError::Teacher(format!(
            "student logits {s:?} and teacher logits {t:?} differ (both must be [batch, classes])"
        )));
    }
    let ce =
        student.f_cross_entropy_loss::<Tensor>(labels, None, tch::Reduction::Mean, -100, 0.0)?;
    let temp = d.temperature;
    let log_s = student.f_div_scalar(temp)?.f_log_softmax(-1, Kind::Float)?;
    let log_t = teacher.f_div_scalar(temp)?.f_log_softmax(-1, Kind::Float)?;
    // KL(p_t ‖ p_s) = Σ p_t (log p_t − log p_s), summed over classes, mean over the batch.
    let kl = log_t
        .f_exp()?
        .f_mul(&log_t.f_sub(&log_s)?)?
        .f_sum(Kind::Float)?
        .f_div_scalar(s[0].max(1) as f64)?;
    Ok(ce
        .f_mul_scalar(1.0 - d.weight)?
        .f_add(&kl.f_mul_scalar(d.weight * temp * temp)?)?)
}
