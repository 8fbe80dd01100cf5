//! The [`Scorer`] trait and its implementations.

use fair_ir::Op;
use fair_runtime::Model;
use rand::{Rng, SeedableRng};
use tch::Kind;

use crate::calibration::Calibration;
use crate::error::{ScoringError, torch};
use crate::layers::PrunableLayer;
use crate::progress::Progress;
use crate::r_score::{RScoreSettings, r_scores};
use crate::u_score::{UScoreSettings, u_scores};

/// What a scorer may use.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The model (left unchanged by every scorer).
    pub model: &'a Model,
    /// The layers to score.
    pub layers: &'a [PrunableLayer],
    /// Calibration data, for data-driven criteria.
    pub data: Option<&'a Calibration>,
    /// Progress display.
    pub progress: Progress,
}

/// A criterion that gives one score per unit of each layer. For the classic criteria higher
/// means more important; the U-Score is a removal signal (low = remove) and the R-Score a
/// protection signal (high = protect).
pub trait Scorer {
    /// Short name used in score files and reports (`u`, `r`, `l1`, ...).
    fn name(&self) -> &'static str;
    /// One vector per layer of `ctx.layers`, one entry per unit.
    fn score(&self, ctx: &Context) -> Result<Vec<Vec<f64>>, ScoringError>;
}

/// FAIR-Pruner's U-Score (see [`crate::u_scores`]).
#[derive(Debug, Clone, Default)]
pub struct UScore(pub UScoreSettings);

impl Scorer for UScore {
    fn name(&self) -> &'static str {
        "u"
    }
    fn score(&self, ctx: &Context) -> Result<Vec<Vec<f64>>, ScoringError> {
        let data = ctx
            .data
            .ok_or_else(|| ScoringError::NeedsData("U-Score".into()))?;
        Ok(u_scores(ctx.model, ctx.layers, data, &self.0, ctx.progress)?.0)
    }
}

/// FAIR-Pruner's R-Score (see [`crate::r_scores`]).
#[derive(Debug, Clone, Default)]
pub struct RScore(pub RScoreSettings);

impl Scorer for RScore {
    fn name(&self) -> &'static str {
        "r"
    }
    fn score(&self, ctx: &Context) -> Result<Vec<Vec<f64>>, ScoringError> {
        let data = ctx
            .data
            .ok_or_else(|| ScoringError::NeedsData("R-Score".into()))?;
        r_scores(ctx.model, ctx.layers, data, &self.0, ctx.progress)
    }
}

/// p-norm of each unit's weight slice (a filter of a Conv2d, a row of a Linear).
fn weight_norms(ctx: &Context, p: f64) -> Result<Vec<Vec<f64>>, ScoringError> {
    ctx.layers
        .iter()
        .map(|layer| {
            let w = ctx.model.tensor(&format!("{}.weight", layer.name))?;
            let norms = torch(
                w.detach()
                    .to_kind(Kind::Double)
                    .f_reshape([layer.units as i64, -1])
                    .and_then(|t| t.f_norm_scalaropt_dim(p, [1i64].as_slice(), false)),
                || format!("weight norms of '{}'", layer.name),
            )?;
            Vec::<f64>::try_from(norms.to_device(tch::Device::Cpu)).map_err(|source| {
                ScoringError::Torch {
                    context: format!("reading norms of '{}'", layer.name),
                    source,
                }
            })
        })
        .collect()
}

/// L1 norm of each unit's weights.
#[derive(Debug, Clone, Copy, Default)]
pub struct L1Norm;

impl Scorer for L1Norm {
    fn name(&self) -> &'static str {
        "l1"
    }
    fn score(&self, ctx: &Context) -> Result<Vec<Vec<f64>>, ScoringError> {
        weight_norms(ctx, 1.0)
    }
}

/// L2 norm of each unit's weights.
#[derive(Debug, Clone, Copy, Default)]
pub struct L2Norm;

impl Scorer for L2Norm {
    fn name(&self) -> &'static str {
        "l2"
    }
    fn score(&self, ctx: &Context) -> Result<Vec<Vec<f64>>, ScoringError> {
        weight_norms(ctx, 2.0)
    }
}

/// |γ| of the BatchNorm that directly reads the layer (network slimming's criterion).
#[derive(Debug, Clone, Copy, Default)]
pub struct BnScale;

impl Scorer for BnScale {
    fn name(&self) -> &'static str {
        "bn"
    }
    fn score(&self, ctx: &Context) -> Result<Vec<Vec<f64>>, ScoringError> {
        let graph = ctx.model.graph();
        ctx.layers
            .iter()
            .map(|layer| {
                let bn = graph
                    .readers(&layer.name)
                    .into_iter()
                    .find(|n| matches!(n.op, Op::BatchNorm2d { .. } | Op::BatchNorm1d { .. }))
                    .ok_or_else(|| ScoringError::NoBatchNorm(layer.name.clone()))?;
                let g = ctx.model.tensor(&format!("{}.weight", bn.name))?;
                Vec::<f64>::try_from(
                    g.detach()
                        .abs()
                        .to_kind(Kind::Double)
                        .to_device(tch::Device::Cpu),
                )
                .map_err(|source| ScoringError::Torch {
                    context: format!("reading BN scale of '{}'", bn.name),
                    source,
                })
            })
            .collect()
    }
}

/// Uniform random scores (seeded): the control every criterion should beat.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomScore {
    /// Seed.
    pub seed: u64,
}

impl Scorer for RandomScore {
    fn name(&self) -> &'static str {
        "random"
    }
    fn score(&self, ctx: &Context) -> Result<Vec<Vec<f64>>, ScoringError> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        Ok(ctx
            .layers
            .iter()
            .map(|l| (0..l.units).map(|_| rng.r#gen::<f64>()).collect())
            .collect())
    }
}
