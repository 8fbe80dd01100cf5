//! U-Score: how well each unit separates the classes (max over class pairs of the
//! Wasserstein-1 distance between the unit's output distributions).

use fair_runtime::{Mode, Model};
use fair_stats::{W1, random_directions, sliced_from_sorted};
use ndarray::{Array3, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::calibration::Calibration;
use crate::error::{ScoringError, torch};
use crate::layers::AnalysisPoint;
use crate::layers::PrunableLayer;
use crate::progress::Progress;

/// How a conv channel's output distribution is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ConvDistance {
    /// Each sample's channel map is a point in R^(H·W); sliced W1 over
    /// [`UScoreSettings::projections`] random unit directions (seeded, shared by all
    /// channels and class pairs of a layer).
    #[default]
    Sliced,
    /// Exact 1-D W1 of the spatially averaged channel (cheap).
    Pooled,
}

/// Settings of the U-Score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UScoreSettings {
    /// Where each unit's output is read (default: the layer's own output).
    pub analysis_point: AnalysisPoint,
    /// Conv channel distance (default sliced).
    pub conv: ConvDistance,
    /// Random directions P of the sliced distance (default 128).
    pub projections: usize,
    /// 1-D W1 between samples of unequal sizes (default exact).
    pub w1: Wasserstein,
    /// Compare at most this many classes, chosen with the seed (default 100).
    pub max_classes: usize,
    /// Samples per class (default 32; a class with fewer uses what it has, with a note).
    pub samples_per_class: usize,
    /// Forward batch size (default 256).
    pub batch_size: usize,
    /// Seed for class and sample choice and for the projection directions.
    pub seed: u64,
}

/// The 1-D Wasserstein variant (serialisable mirror of [`fair_stats::W1`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Wasserstein {
    /// Exact (SciPy's `wasserstein_distance`).
    #[default]
    Exact,
    /// The authors' package quantile-grid approximation (for parity runs).
    QuantileGrid,
}

impl From<Wasserstein> for W1 {
    fn from(w: Wasserstein) -> W1 {
        match w {
            Wasserstein::Exact => W1::Exact,
            Wasserstein::QuantileGrid => W1::QuantileGrid,
        }
    }
}

impl Default for UScoreSettings {
    fn default() -> Self {
        UScoreSettings {
            analysis_point: AnalysisPoint::LayerOutput,
            conv: ConvDistance::Sliced,
            projections: 128,
            w1: Wasserstein::Exact,
            max_classes: 100,
            samples_per_class: 32,
            batch_size: 256,
            seed: 0,
        }
    }
}

impl UScoreSettings {
    fn check(&self) -> Result<(), ScoringError> {
        let positive = |name: &'static str, v: usize| {
            if v == 0 {
                Err(ScoringError::Setting {
                    name,
                    detail: "must be at least 1".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("per-class", self.samples_per_class)?;
        positive("batch-size", self.batch_size)?;
        if self.max_classes < 2 {
            return Err(ScoringError::Setting {
                name: "max-classes",
                detail: format!(
                    "needs at least 2 classes to compare, found {}",
                    self.max_classes
                ),
            });
        }
        if self.conv == ConvDistance::Sliced {
            positive("projections", self.projections)?;
        }
        Ok(())
    }
}

/// The directions seed for layer `i`: decorrelated from the sampling seed.
fn layer_seed(seed: u64, i: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// Per-class summary of one layer: `[units, P, n]`, each row sorted.
type Summary = Array3<f32>;

fn summarise(
    t: &Tensor,
    layer: &PrunableLayer,
    directions: Option<&Tensor>,
) -> Result<Summary, ScoringError> {
    let ctx = || format!("summarising layer '{}'", layer.name);
    let n = t.size()[0];
    let units = layer.units as i64;
    // [n, units, P]
    let projected = match (t.dim(), directions) {
        (4, Some(d)) => torch(t.f_reshape([n, units, -1]).and_then(|x| x.f_matmul(d)), ctx)?,
        (4, None) => torch(t.f_mean_dim(&[2i64, 3][..], false, Kind::Float), ctx)?.unsqueeze(2),
        (2, _) => t.unsqueeze(2),
        (d, _) => {
            return Err(ScoringError::Setting {
                name: "analysis-point",
                detail: format!(
                    "layer '{}' is read at '{}', whose output has {d} dimensions (expected an image or a feature vector)",
                    layer.name, layer.analysis
                ),
            });
        }
    };
    let p = projected.size()[2];
    // [units, P, n], contiguous, then every row sorted on the CPU in parallel: libtorch's
    // sort is slow for millions of short rows.
    let arranged = torch(
        projected
            .f_permute([1, 2, 0])
            .map(|x| x.to_device(Device::Cpu).contiguous()),
        ctx,
    )?;
    let mut data: Vec<f32> = torch(Vec::try_from(arranged.view([-1])), ctx)?;
    data.par_chunks_mut(n as usize).for_each(sort_row);
    Ok(
        Array3::from_shape_vec((units as usize, p as usize, n as usize), data)
            .expect("the tensor has this shape"),
    )
}

/// Sorts a short row of finite floats ascending through order-preserving integer keys
/// (integer comparisons sort the millions of short rows of a sliced U-Score faster).
fn sort_row(row: &mut [f32]) {
    let key = |x: f32| {
        let b = x.to_bits();
        if b >> 31 == 1 { !b } else { b | 0x8000_0000 }
    };
    let unkey = |k: u32| f32::from_bits(if k >> 31 == 1 { k & 0x7FFF_FFFF } else { !k });
    let mut stack = [0u32; 128];
    let mut heap = Vec::new();
    let keys: &mut [u32] = if row.len() <= stack.len() {
        &mut stack[..row.len()]
    } else {
        heap.resize(row.len(), 0);
        &mut heap
    };
    for (k, &x) in keys.iter_mut().zip(row.iter()) {
        *k = key(x);
    }
    keys.sort_unstable();
    for (x, &k) in row.iter_mut().zip(keys.iter()) {
        *x = unkey(k);
    }
}

/// U-Scores of every layer (one vector per layer, in order), from one eval-mode forward pass
/// per class over its samples with every analysis point tapped. Returns notes about classes
/// with fewer samples than asked for.
pub fn u_scores(
    model: &Model,
    layers: &[PrunableLayer],
    data: &Calibration,
    settings: &UScoreSettings,
    progress: Progress,
) -> Result<(Vec<Vec<f64>>, Vec<String>), ScoringError> {
    settings.check()?;
    let (classes, notes) = data.class_samples(
        settings.max_classes,
        settings.samples_per_class,
        settings.seed,
    );
    if classes.len() < 2 {
        return Err(ScoringError::Data {
            path: None,
            detail: format!(
                "the U-Score compares classes, but the calibration data has {} class(es)",
                classes.len()
            ),
        });
    }
    let device = model.device();
    let graph = model.graph();
    // Directions per conv layer (sliced), on the model's device.
    let mut directions: Vec<Option<Tensor>> = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        let shape = graph
            .shape(&layer.analysis)
            .map_err(fair_runtime::RuntimeError::from)?;
        directions.push(match (settings.conv, shape.len()) {
            (ConvDistance::Sliced, 3) => {
                let d = random_directions(
                    shape[1] * shape[2],
                    settings.projections,
                    layer_seed(settings.seed, i),
                );
                let flat: Vec<f32> = d.iter().copied().collect();
                Some(
                    Tensor::from_slice(&flat)
                        .reshape([d.nrows() as i64, d.ncols() as i64])
                        .to_device(device),
                )
            }
            _ => None,
        });
    }
    let taps: Vec<&str> = layers.iter().map(|l| l.analysis.as_str()).collect();
    let mut summaries: Vec<Vec<Summary>> = layers
        .iter()
        .map(|_| Vec::with_capacity(classes.len()))
        .collect();
    let started = std::time::Instant::now();
    let bar = progress.bar(classes.len(), "U-Score: forward per class");
    for (class, idx) in &classes {
        let x = data.select(idx);
        let mut parts: Vec<Vec<Tensor>> = layers.iter().map(|_| Vec::new()).collect();
        for chunk in x.split(settings.batch_size as i64, 0) {
            let out = tch::no_grad(|| {
                model.forward_with_taps(&chunk.to_device(device), Mode::Eval, &taps)
            })?;
            for (i, layer) in layers.iter().enumerate() {
                parts[i].push(out.taps[&layer.analysis].shallow_clone());
            }
        }
        for (i, layer) in layers.iter().enumerate() {
            let t = Tensor::cat(&parts[i], 0);
            if t.isfinite().all().int64_value(&[]) == 0 {
                return Err(ScoringError::NonFinite(format!(
                    "the output of '{}' (analysis point of layer '{}') holds NaN or infinite values for class {class}",
                    layer.analysis, layer.name
                )));
            }
            summaries[i].push(summarise(&t, layer, directions[i].as_ref())?);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "U-Score: forward passes and per-class summaries"
    );
    let started = std::time::Instant::now();

    let method: W1 = settings.w1.into();
    let k = classes.len();
    let bar = progress.bar(layers.len(), "U-Score: distances");
    let scores = layers
        .iter()
        .zip(&summaries)
        .map(|(layer, per_class)| {
            let u = (0..layer.units)
                .into_par_iter()
                .map(|unit| {
                    let views: Vec<_> = per_class
                        .iter()
                        .map(|s| s.index_axis(Axis(0), unit))
                        .collect();
                    let mut best = 0.0f64;
                    for a in 0..k {
                        for b in a + 1..k {
                            best = best.max(sliced_from_sorted(views[a], views[b], method));
                        }
                    }
                    best
                })
                .collect();
            bar.inc(1);
            u
        })
        .collect();
    bar.finish_and_clear();
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "U-Score: class-pair distances"
    );
    Ok((scores, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn key_sort_equals_a_comparison_sort() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for n in [1usize, 2, 3, 17, 32, 128, 129, 300] {
            let mut row: Vec<f32> = (0..n).map(|_| rng.gen_range(-5.0..5.0)).collect();
            row[0] = 0.0;
            if n > 2 {
                row[1] = -0.0;
                row[2] = f32::MIN;
            }
            let mut want = row.clone();
            want.sort_by(f32::total_cmp);
            sort_row(&mut row);
            assert_eq!(row, want, "n = {n}");
        }
    }
}
