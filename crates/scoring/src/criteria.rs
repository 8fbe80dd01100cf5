//! The [`Criterion`] trait, the built-in criteria, and the [`Registry`] that finds criteria
//! by name.

use std::collections::BTreeMap;

use fair_ir::Role;
use fair_runtime::Model;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tch::Kind;

use crate::calibration::Calibration;
use crate::error::{ScoringError, torch};
use crate::layers::{AnalysisPoint, PrunableLayer, prunable_layers};
use crate::progress::Progress;
use crate::r_score::{RScoreSettings, r_scores};
use crate::u_score::{PairSearch, UScoreSettings};

/// What a criterion may use.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The model (a criterion must leave it unchanged).
    pub model: &'a Model,
    /// The layers to score: the model's prunable layers, in graph order (their `analysis`
    /// node is the layer itself; a criterion that reads elsewhere picks its own nodes, e.g.
    /// with [`crate::prunable_layers`]).
    pub layers: &'a [PrunableLayer],
    /// Calibration data, for data-driven criteria.
    pub data: Option<&'a Calibration>,
    /// Progress display.
    pub progress: Progress,
}

/// What a criterion returns: one score per unit of every layer, and notes for the user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scored {
    /// One vector per layer of [`Context::layers`], one entry per unit.
    pub scores: Vec<Vec<f64>>,
    /// Notes worth showing (e.g. classes with few samples); stored in the score file.
    pub notes: Vec<String>,
    /// The settings to store in the scores' provenance instead of [`Criterion::settings`],
    /// where the run chose something that changes the scores from what the settings alone
    /// give (e.g. the U-Score's smaller packs of classes under a memory bound); `None`: the
    /// criterion's settings. Such scores are not reused ([`crate::reusable`] compares with
    /// [`Criterion::settings`]).
    pub recorded_settings: Option<serde_json::Value>,
    /// Where the scores are approximate: per layer, per unit, a computed bound on how far
    /// each can lie from the exact score (the U-Score's certified pair search); stored in the
    /// score file's `bounds`. `None`: exact.
    pub bounds: Option<Vec<Vec<f64>>>,
}

impl From<Vec<Vec<f64>>> for Scored {
    fn from(scores: Vec<Vec<f64>>) -> Self {
        Scored {
            scores,
            notes: Vec::new(),
            recorded_settings: None,
            bounds: None,
        }
    }
}

/// A per-unit importance criterion. Scores are any finite numbers; what they mean is up to
/// the criterion: the classic criteria and the R-Score rank "higher = more important", the
/// U-Score too (a unit that separates no classes scores 0 and goes first). Tolerance of
/// Difference takes any pair of criteria (remove-by, protect-by).
///
/// A criterion is found by name in a [`Registry`]; its [`Criterion::settings`] are stored in
/// the score file's provenance, so stored scores are reused only when they match.
pub trait Criterion: Send + Sync {
    /// Short name used in score files, reports and on the command line (`u`, `r`, `l1`, ...).
    fn name(&self) -> &str;
    /// The settings that determine the scores, as a JSON object (default: none).
    fn settings(&self) -> serde_json::Value {
        serde_json::json!({})
    }
    /// Whether it needs calibration data.
    fn needs_data(&self) -> bool;
    /// Scores every layer of `ctx.layers`.
    fn score(&self, ctx: &Context) -> Result<Scored, ScoringError>;
}

/// The knobs the built-in criteria read; a registry hands them to every factory, so a
/// plug-in criterion can read them too (e.g. the seed or the R-Score's batch size).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScoringSettings {
    /// U-Score settings (analysis point, distance, classes, samples, seed).
    pub u: UScoreSettings,
    /// R-Score settings (mode, batch size, seed).
    pub r: RScoreSettings,
    /// Seed of the random criterion (and of plug-ins that draw numbers).
    pub seed: u64,
}

impl ScoringSettings {
    /// The authors' package `network-pruner` 2.16 as exactly as fair-pruner reproduces it
    /// (the `paper` preset's scoring): U read where its hook reads
    /// ([`AnalysisPoint::Package`]: after a ReLU that directly follows the layer), after the
    /// BatchNorm drift of its R-Score passes ([`crate::BnDrift`], batches of
    /// `batch_size`), its quantile-grid W1 for classes of unequal size; R in training mode
    /// over batches of `batch_size` (its calibration loader's).
    pub fn paper(batch_size: usize) -> Self {
        let mut s = ScoringSettings::default();
        s.u.analysis_point = AnalysisPoint::Package;
        s.u.w1 = crate::Wasserstein::QuantileGrid;
        s.u.bn_drift = Some(crate::BnDrift { batch_size });
        s.r.mode = crate::RMode::Train;
        s.r.batch_size = batch_size;
        s
    }
}

fn settings_json<T: Serialize>(s: &T) -> serde_json::Value {
    serde_json::to_value(s).expect("settings serialise")
}

/// FAIR-Pruner's U-Score (see [`crate::u_scores`]).
#[derive(Debug, Clone, Default)]
pub struct UScore(pub UScoreSettings);

impl Criterion for UScore {
    fn name(&self) -> &str {
        "u"
    }
    /// The U-Score's settings; with the approximate certified pair search, that too (the
    /// exact searches give the same scores and are not recorded).
    fn settings(&self) -> serde_json::Value {
        let mut s = settings_json(&self.0);
        if self.0.pair_search == PairSearch::Certified {
            s["pair_search"] = PairSearch::Certified.name().into();
        }
        s
    }
    fn needs_data(&self) -> bool {
        true
    }
    fn score(&self, ctx: &Context) -> Result<Scored, ScoringError> {
        let data = ctx
            .data
            .ok_or_else(|| ScoringError::NeedsData("U-Score".into()))?;
        let layers = prunable_layers(ctx.model.graph(), self.0.analysis_point);
        let run = crate::u_scores_measured(ctx.model, &layers, data, &self.0, ctx.progress, None)?;
        // Packs the memory bound narrowed are recorded: the bound is no setting of the
        // scores, so without the record they would be reused for an unbounded run.
        let certified = !run.gaps.is_empty();
        let recorded_settings = (!run.narrowed_packs.is_empty()).then(|| {
            let mut s = self.settings();
            s["narrowed_packs"] = serde_json::Value::Object(
                run.narrowed_packs
                    .iter()
                    .map(|(layer, limit)| (layer.clone(), (*limit).into()))
                    .collect(),
            );
            s
        });
        Ok(Scored {
            scores: run.scores,
            notes: run.notes,
            recorded_settings,
            bounds: certified.then_some(run.gaps),
        })
    }
}

/// FAIR-Pruner's R-Score (see [`crate::r_scores`]).
#[derive(Debug, Clone, Default)]
pub struct RScore(pub RScoreSettings);

impl Criterion for RScore {
    fn name(&self) -> &str {
        "r"
    }
    fn settings(&self) -> serde_json::Value {
        settings_json(&self.0)
    }
    fn needs_data(&self) -> bool {
        true
    }
    fn score(&self, ctx: &Context) -> Result<Scored, ScoringError> {
        let data = ctx
            .data
            .ok_or_else(|| ScoringError::NeedsData("R-Score".into()))?;
        let (scores, notes) = r_scores(ctx.model, ctx.layers, data, &self.0, ctx.progress)?;
        Ok(Scored {
            scores,
            notes,
            recorded_settings: None,
            bounds: None,
        })
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
            Ok(torch(
                Vec::<f64>::try_from(norms.to_device(tch::Device::Cpu)),
                || format!("reading norms of '{}'", layer.name),
            )?)
        })
        .collect()
}

/// L1 norm of each unit's weights.
#[derive(Debug, Clone, Copy, Default)]
pub struct L1Norm;

impl Criterion for L1Norm {
    fn name(&self) -> &str {
        "l1"
    }
    fn needs_data(&self) -> bool {
        false
    }
    fn score(&self, ctx: &Context) -> Result<Scored, ScoringError> {
        Ok(weight_norms(ctx, 1.0)?.into())
    }
}

/// L2 norm of each unit's weights.
#[derive(Debug, Clone, Copy, Default)]
pub struct L2Norm;

impl Criterion for L2Norm {
    fn name(&self) -> &str {
        "l2"
    }
    fn needs_data(&self) -> bool {
        false
    }
    fn score(&self, ctx: &Context) -> Result<Scored, ScoringError> {
        Ok(weight_norms(ctx, 2.0)?.into())
    }
}

/// |γ| of the BatchNorm that directly reads the layer (network slimming's criterion).
#[derive(Debug, Clone, Copy, Default)]
pub struct BnScale;

impl Criterion for BnScale {
    fn name(&self) -> &str {
        "bn"
    }
    fn needs_data(&self) -> bool {
        false
    }
    fn score(&self, ctx: &Context) -> Result<Scored, ScoringError> {
        let graph = ctx.model.graph();
        let scores = ctx
            .layers
            .iter()
            .map(|layer| {
                let bn = graph
                    .readers(&layer.name)
                    .into_iter()
                    .find(|n| n.op.role() == Role::Normalization)
                    .ok_or_else(|| ScoringError::NoBatchNorm(layer.name.clone()))?;
                let g = ctx.model.tensor(&format!("{}.weight", bn.name))?;
                Ok(torch(
                    Vec::<f64>::try_from(
                        g.detach()
                            .abs()
                            .to_kind(Kind::Double)
                            .to_device(tch::Device::Cpu),
                    ),
                    || format!("reading BN scale of '{}'", bn.name),
                )?)
            })
            .collect::<Result<Vec<_>, ScoringError>>()?;
        Ok(scores.into())
    }
}

/// Torch-Pruning's group magnitude (`GroupMagnitudeImportance(p)` with mean group
/// reduction): for each unit, Σ|w|ᵖ over every weight slice removed with it — the producing
/// layers' filters or rows, the BatchNorm scales and depthwise filters it passes through,
/// the readers' input slices (all H·W features after a flatten) — averaged over those
/// slices. Biases and running statistics are not counted. Every layer of a coupled group
/// (a residual stage) gets the group's scores. Unlike [`L1Norm`], it sees what BatchNorm
/// does to a channel (its scale) and how much the next layer uses it, so the scale a
/// BatchNorm cancels does not decide the ranking.
#[derive(Debug, Clone, Copy)]
pub struct GroupMagnitude {
    /// The exponent p (1: `group-l1`, 2: `group-l2`); Σ|w|ᵖ, no root, as Torch-Pruning.
    pub p: f64,
}

impl Criterion for GroupMagnitude {
    fn name(&self) -> &str {
        match self.p {
            1.0 => "group-l1",
            2.0 => "group-l2",
            _ => "group-magnitude",
        }
    }
    fn settings(&self) -> serde_json::Value {
        serde_json::json!({ "p": self.p })
    }
    fn needs_data(&self) -> bool {
        false
    }
    fn score(&self, ctx: &Context) -> Result<Scored, ScoringError> {
        let graph = ctx.model.graph();
        // The scored layers include grouped convolutions pruned within their groups; their
        // groups' units are channel j of every group.
        let groups =
            fair_analysis::analyze_with(graph, &[], fair_analysis::GroupedConvs::WithinGroups)?;
        let mut by_group: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
        let mut scores = Vec::with_capacity(ctx.layers.len());
        for layer in ctx.layers {
            let group = groups
                .group_of(&layer.name)
                .ok_or_else(|| ScoringError::NotPrunable {
                    layer: layer.name.clone(),
                    model: graph.name().to_owned(),
                })?;
            let s = match by_group.entry(group) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let slices = groups.unit_slices(graph, group);
                    let g = &groups.groups()[group];
                    let units = group_magnitude(ctx.model, &slices, g.units, self.p)?;
                    // Scores are stored per output channel: each channel gets its unit's.
                    let channels = g.channels();
                    e.insert(
                        (0..channels)
                            .map(|c| units[g.map.unit(c, channels)])
                            .collect(),
                    )
                }
            };
            scores.push(s.clone());
        }
        Ok(scores.into())
    }
}

/// Mean over `slices` (weights only) of each unit's Σ|w|ᵖ.
fn group_magnitude(
    model: &Model,
    slices: &[fair_analysis::UnitSlices],
    units: usize,
    p: f64,
) -> Result<Vec<f64>, ScoringError> {
    let (mut sum, mut count) = (vec![0.0; units], vec![0usize; units]);
    for slice in slices
        .iter()
        .filter(|s| s.kind == fair_ir::ParamKind::Weight)
    {
        let w = model.tensor(&slice.param)?;
        let along = torch(
            w.detach()
                .to_kind(Kind::Double)
                .f_movedim([slice.axis as i64].as_slice(), [0i64].as_slice())
                .and_then(|t| t.f_reshape([w.size().get(slice.axis).copied().unwrap_or(1), -1]))
                .and_then(|t| t.f_abs())
                .and_then(|t| t.f_pow_tensor_scalar(p))
                .and_then(|t| t.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Double)),
            || format!("|w|^p of '{}'", slice.param),
        )?;
        let along = torch(
            Vec::<f64>::try_from(along.to_device(tch::Device::Cpu)),
            || format!("reading '{}'", slice.param),
        )?;
        for (u, positions) in slice.positions.iter().enumerate().take(units) {
            if positions.is_empty() {
                continue;
            }
            sum[u] += positions.iter().map(|&i| along[i as usize]).sum::<f64>();
            count[u] += 1;
        }
    }
    Ok(sum
        .iter()
        .zip(&count)
        .map(|(s, &n)| if n == 0 { 0.0 } else { s / n as f64 })
        .collect())
}

/// Uniform random scores (seeded): the control every criterion should beat.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomScore {
    /// Seed.
    pub seed: u64,
}

impl Criterion for RandomScore {
    fn name(&self) -> &str {
        "random"
    }
    fn settings(&self) -> serde_json::Value {
        serde_json::json!({ "seed": self.seed })
    }
    fn needs_data(&self) -> bool {
        false
    }
    fn score(&self, ctx: &Context) -> Result<Scored, ScoringError> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        Ok(ctx
            .layers
            .iter()
            .map(|l| (0..l.units).map(|_| rng.r#gen::<f64>()).collect())
            .collect::<Vec<_>>()
            .into())
    }
}

/// Makes a criterion from the shared settings.
pub type Factory = Box<dyn Fn(&ScoringSettings) -> Box<dyn Criterion> + Send + Sync>;

struct Entry {
    description: String,
    factory: Factory,
}

/// Criteria by name. [`Registry::default`] holds the built-ins (`u`, `r`, `l1`, `l2`,
/// `group-l1`, `group-l2`, `bn`, `random`); a researcher adds a criterion with
/// [`Registry::register`] and it is then usable everywhere a name is: scoring, ToD's
/// remove-by/protect-by, ranking, the pipeline.
///
/// ```
/// use fair_scoring::{Context, Criterion, Registry, Scored, ScoringError};
/// struct Ones;
/// impl Criterion for Ones {
///     fn name(&self) -> &str { "ones" }
///     fn needs_data(&self) -> bool { false }
///     fn score(&self, ctx: &Context) -> Result<Scored, ScoringError> {
///         Ok(ctx.layers.iter().map(|l| vec![1.0; l.units]).collect::<Vec<_>>().into())
///     }
/// }
/// let mut registry = Registry::default();
/// registry.register("ones", "every unit scores 1", |_| Box::new(Ones));
/// assert!(registry.names().contains(&"ones"));
/// assert!(registry.create("l1", &Default::default()).is_ok());
/// assert!(registry.create("nope", &Default::default()).is_err());
/// ```
pub struct Registry {
    entries: BTreeMap<String, Entry>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("criteria", &self.names())
            .finish()
    }
}

impl Registry {
    /// A registry without criteria.
    pub fn empty() -> Self {
        Registry {
            entries: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) the criterion `name`.
    pub fn register(
        &mut self,
        name: &str,
        description: &str,
        factory: impl Fn(&ScoringSettings) -> Box<dyn Criterion> + Send + Sync + 'static,
    ) -> &mut Self {
        self.entries.insert(
            name.to_owned(),
            Entry {
                description: description.to_owned(),
                factory: Box::new(factory),
            },
        );
        self
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// (name, description) of every criterion, sorted by name.
    pub fn describe(&self) -> Vec<(&str, &str)> {
        self.entries
            .iter()
            .map(|(n, e)| (n.as_str(), e.description.as_str()))
            .collect()
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// The criterion `name`, made with `settings`.
    pub fn create(
        &self,
        name: &str,
        settings: &ScoringSettings,
    ) -> Result<Box<dyn Criterion>, ScoringError> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| ScoringError::UnknownCriterion {
                name: name.to_owned(),
                known: self.names().into_iter().map(str::to_owned).collect(),
            })?;
        Ok((entry.factory)(settings))
    }

    /// Every criterion in `names` (duplicates removed, order kept).
    pub fn create_all<S: AsRef<str>>(
        &self,
        names: &[S],
        settings: &ScoringSettings,
    ) -> Result<Vec<Box<dyn Criterion>>, ScoringError> {
        let mut seen = std::collections::HashSet::new();
        names
            .iter()
            .map(AsRef::as_ref)
            .filter(|n| seen.insert(n.to_string()))
            .map(|n| self.create(n, settings))
            .collect()
    }
}

impl Default for Registry {
    /// The built-in criteria.
    fn default() -> Self {
        let mut r = Registry::empty();
        r.register(
            "u",
            "U-Score: Wasserstein utilisation across classes (needs calibration data)",
            |s| Box::new(UScore(s.u.clone())),
        )
        .register(
            "r",
            "R-Score: first-order Taylor reconstruction (needs calibration data)",
            |s| Box::new(RScore(s.r.clone())),
        )
        .register("l1", "L1 norm of each unit's weights", |_| Box::new(L1Norm))
        .register("l2", "L2 norm of each unit's weights", |_| Box::new(L2Norm))
        .register(
            "group-l1",
            "Torch-Pruning's group L1: mean Σ|w| over every weight slice removed with the unit",
            |_| Box::new(GroupMagnitude { p: 1.0 }),
        )
        .register(
            "group-l2",
            "Torch-Pruning's group norm: mean Σw² over every weight slice removed with the unit",
            |_| Box::new(GroupMagnitude { p: 2.0 }),
        )
        .register("bn", "|γ| of the BatchNorm right after the layer", |_| {
            Box::new(BnScale)
        })
        .register("random", "seeded random scores (a control)", |s| {
            Box::new(RandomScore { seed: s.seed })
        });
        r
    }
}
