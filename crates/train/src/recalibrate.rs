//! BatchNorm recalibration: re-estimating every BatchNorm's running statistics on training
//! data, e.g. after surgery removed channels upstream of it.

use fair_data::{ImageSource, Loader, Transform};
use fair_ir::AfterSurgery;
use fair_runtime::{Mode, Model};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::{PREFETCH, TrainError, input_shape};

/// How [`recalibrate_batch_norm`] draws its batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BnRecalibration {
    /// Batches to average over (at least 1).
    pub batches: usize,
    /// Samples per batch (at least 1; at most the size of the data).
    pub batch_size: usize,
    /// Seed of the random order the batches are drawn in.
    pub seed: u64,
}

impl Default for BnRecalibration {
    /// 32 batches of 128 samples, seed 0.
    fn default() -> Self {
        BnRecalibration {
            batches: 32,
            batch_size: 128,
            seed: 0,
        }
    }
}

impl BnRecalibration {
    /// Checks that `batches` and `batch_size` are at least 1.
    pub fn check(&self) -> Result<(), TrainError> {
        for (name, value) in [("batches", self.batches), ("batch_size", self.batch_size)] {
            if value == 0 {
                return Err(TrainError::Setting {
                    name,
                    detail: "BatchNorm recalibration needs at least 1".into(),
                });
            }
        }
        if self
            .batches
            .checked_mul(self.batch_size)
            .is_none_or(|n| n > MAX_SAMPLES)
        {
            return Err(TrainError::Setting {
                name: "batches",
                detail: format!(
                    "{} batches of {} samples is more than BatchNorm recalibration draws \
                     ({MAX_SAMPLES} samples at most; a few thousand are plenty)",
                    self.batches, self.batch_size
                ),
            });
        }
        Ok(())
    }
}

/// The most samples (batches × batch size) one recalibration draws.
pub const MAX_SAMPLES: usize = 10_000_000;

/// What [`recalibrate_batch_norm`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecalibrationReport {
    /// BatchNorm layers (1d and 2d) whose running statistics were re-estimated; 0 for a
    /// model without BatchNorm, which is left as it was.
    pub layers: usize,
    /// Batches the statistics were averaged over (0 when there was nothing to do).
    pub batches: usize,
    /// Samples in those batches (a sample is counted once per batch it is in).
    pub samples: usize,
}

/// Bytes of BatchNorm inputs one forward pass may hold at once; more BatchNorm layers than
/// fit are handled in several passes over the same batch.
const TAP_BUDGET: usize = 1 << 30;

/// Re-estimates the running mean and variance of every BatchNorm (1d and 2d) of `model` on
/// `settings.batches` batches of `settings.batch_size` samples of `data`, leaving every
/// other tensor untouched. Nothing is trained and no gradient is computed.
///
/// The result equals PyTorch's `reset_running_stats()` followed by training-mode forward
/// passes over the same batches with `momentum = None` (a cumulative average): for each
/// batch the model runs in [`Mode::TrainFrozenStats`] (every BatchNorm normalises with the
/// batch's own statistics, so no layer's input depends on running statistics), each
/// BatchNorm's input gives its per-channel batch mean and unbiased batch variance, and the
/// running mean and variance become the plain average of those over the batches;
/// `num_batches_tracked` becomes the number of batches.
///
/// The batches are consecutive chunks of random permutations of `data` drawn from
/// `settings.seed` (a fresh permutation follows when one is used up, so every batch holds
/// `min(batch_size, data.len())` distinct samples). Images are transformed by `transform`
/// with augmentation off. Dropout layers before a BatchNorm drop as in training (libtorch's
/// generator is seeded with `settings.seed`).
///
/// A model without BatchNorm is left alone (the report's `layers` is 0). Errors: a zero
/// setting ([`TrainError::Setting`]), empty data, and a statistic that is NaN or infinite
/// ([`TrainError::NonFinite`], naming the layer; nothing is written then).
pub fn recalibrate_batch_norm(
    model: &Model,
    data: &dyn ImageSource,
    transform: &Transform,
    settings: &BnRecalibration,
) -> Result<RecalibrationReport, TrainError> {
    settings.check()?;
    let graph = model.graph();
    // (BatchNorm node, its input node, bytes of its input per sample)
    let layers: Vec<(String, String, usize)> = graph
        .nodes()
        .iter()
        .filter(|n| n.op.after_surgery() == AfterSurgery::Recalibrate)
        .map(|n| {
            let input = n.inputs[0].clone();
            let per_sample = graph
                .position(&input)
                .map(|p| graph.shape_at(p).iter().product::<usize>() * 4)
                .unwrap_or(0);
            (n.name.clone(), input, per_sample)
        })
        .collect();
    if layers.is_empty() {
        return Ok(RecalibrationReport {
            layers: 0,
            batches: 0,
            samples: 0,
        });
    }
    let (order, batch_size) = draw_order(
        data,
        settings.batches,
        settings.batch_size,
        settings.seed,
        "BatchNorm recalibration",
    )?;
    let needed = order.len();

    // Layers in groups whose inputs fit the memory budget together.
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut used = 0usize;
    for (i, (_, _, per_sample)) in layers.iter().enumerate() {
        let bytes = per_sample.saturating_mul(batch_size);
        match chunks.last_mut() {
            Some(c) if used.saturating_add(bytes) <= TAP_BUDGET => {
                c.push(i);
                used += bytes;
            }
            _ => {
                chunks.push(vec![i]);
                used = bytes;
            }
        }
    }

    let eval_t = transform.for_evaluation();
    let loader = Loader {
        source: data,
        transform: &eval_t,
        input: input_shape(model),
        train: false,
    };
    let device = model.device();
    tch::manual_seed(settings.seed as i64);
    let mut sums: Vec<Option<(Tensor, Tensor)>> = (0..layers.len()).map(|_| None).collect();
    let mut batch_rng = rand::rngs::StdRng::seed_from_u64(settings.seed);
    std::thread::scope(|s| -> Result<(), TrainError> {
        for batch in loader.prefetch(s, &order, batch_size, PREFETCH, &mut batch_rng) {
            let (x, _) = batch?;
            let x = x.to_device(device);
            tch::no_grad(|| -> Result<(), TrainError> {
                for chunk in &chunks {
                    let names: Vec<&str> = chunk.iter().map(|&i| layers[i].1.as_str()).collect();
                    let taps = model.taps(&x, Mode::TrainFrozenStats, &names)?;
                    for &i in chunk {
                        let (mean, var) = batch_moments(&taps[&layers[i].1])?;
                        sums[i] = Some(match sums[i].take() {
                            None => (mean, var),
                            Some((m, v)) => (m.f_add(&mean)?, v.f_add(&var)?),
                        });
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    })?;

    // Everything is computed and checked before anything is written.
    let n = settings.batches as f64;
    let mut stats = Vec::with_capacity(layers.len());
    for ((bn, _, _), sum) in layers.iter().zip(sums) {
        let (m, v) = sum.expect("every layer saw every batch");
        let (mean, var) = ((m / n).to_kind(Kind::Float), (v / n).to_kind(Kind::Float));
        for (what, t) in [("mean", &mean), ("variance", &var)] {
            if t.f_isfinite()?.f_all()?.int64_value(&[]) == 0 {
                return Err(TrainError::NonFinite {
                    layer: bn.clone(),
                    detail: format!(
                        "its recalibrated running {what} holds NaN or infinite values (its \
                         input does, or a batch has a single value per channel)"
                    ),
                });
            }
        }
        stats.push((bn, mean, var));
    }
    tch::no_grad(|| -> Result<(), TrainError> {
        for (bn, mean, var) in stats {
            model
                .tensor(&format!("{bn}.running_mean"))?
                .shallow_clone()
                .f_copy_(&mean)?;
            model
                .tensor(&format!("{bn}.running_var"))?
                .shallow_clone()
                .f_copy_(&var)?;
            let _ = model
                .tensor(&format!("{bn}.num_batches_tracked"))?
                .shallow_clone()
                .f_fill_(settings.batches as i64)?;
        }
        Ok(())
    })?;
    Ok(RecalibrationReport {
        layers: layers.len(),
        batches: settings.batches,
        samples: needed,
    })
}

/// The sample order of `batches` batches of `batch_size` (at most the data's size, which is
/// returned with the order) drawn from `data`: random permutations of all samples, one after
/// the other (each batch holds distinct samples), cut to `batches · batch_size`. Empty data
/// is an error naming `what` needs it.
pub(crate) fn draw_order(
    data: &dyn ImageSource,
    batches: usize,
    batch_size: usize,
    seed: u64,
    what: &str,
) -> Result<(Vec<usize>, usize), TrainError> {
    if data.is_empty() {
        return Err(TrainError::Setting {
            name: "data",
            detail: format!("{what} needs samples, but '{}' is empty", data.name()),
        });
    }
    let len = data.len();
    let batch_size = batch_size.min(len);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let needed = batches * batch_size;
    let mut order = Vec::with_capacity(needed + len);
    while order.len() < needed {
        let mut perm: Vec<usize> = (0..len).collect();
        perm.shuffle(&mut rng);
        order.extend(perm);
    }
    order.truncate(needed);
    Ok((order, batch_size))
}

/// Per-channel mean and unbiased variance (f64) of a BatchNorm input `[N, C, ...]`, over
/// every dimension but the channel one.
fn batch_moments(x: &Tensor) -> Result<(Tensor, Tensor), TrainError> {
    let c = x.size()[1];
    let flat = x
        .f_to_kind(Kind::Double)?
        .f_transpose(0, 1)?
        .f_reshape([c, -1])?;
    let mean = flat.f_mean_dim(1, false, Kind::Double)?;
    let var = flat.f_var_dim(1, true, false)?;
    Ok((mean, var))
}
