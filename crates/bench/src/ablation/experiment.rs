//! The experiment's definitions: the suspects ([`Suspect`]), the methods and the FAIR
//! variants they make ([`Method`], [`Variant`]), and a run's command-line [`Options`].

use anyhow::Result;
use clap::{Args, ValueEnum};
use fair_analysis::{Goal, GroupRule, MacCost, Method as Counts, SelectOptions};
use fair_pipeline::LatencyRuntime;
use fair_scoring::{AnalysisPoint, RMode, ScoringSettings};
use fair_train::BnRecalibration;
use std::path::PathBuf;

use super::results::LatencyArm;
use crate::positive;

/// Seed of the validation split (plus the run's seed).
pub(super) const VAL_SEED: u64 = 20260301;

/// Batch size of the R-Score passes (and of the package's BatchNorm drift): the package's
/// calibration loader's, as in `bench compare`.
pub(super) const R_BATCH: usize = 64;

/// BatchNorm recalibration of every pruned model: 32 batches of 128 from the fine-tuning set.
pub(super) const RECALIBRATION: BnRecalibration = BnRecalibration {
    batches: 32,
    batch_size: 128,
    seed: 0,
};

/// One thing changed from `fair-paper`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspect {
    /// U read after the BatchNorm/activation that follow the layer
    /// (`AnalysisPoint::AfterActivation`).
    AfterActivation,
    /// R-Score passes in eval mode (`RMode::Eval`).
    REval,
    /// MAC-aware ToD counts (`SelectOptions::mac_weight` = 1).
    MacWeight,
    /// Coupled layers ranked by their summed, normalised scores (`GroupRule::Summed`).
    Summed,
    /// U without the package's BatchNorm drift, with the exact W1 (`bn_drift` off, as
    /// [`fair_pipeline::Preset::FairPruner`]; with equal class sizes the W1 is the same either way).
    NoDrift,
    /// MAC-aware ToD counts with a milder exponent (`SelectOptions::mac_weight` = 0.5).
    HalfMacWeight,
    /// The same fraction of every layer instead of ToD counts, units still chosen by lowest U
    /// (isolates FAIR's ranking from its counts).
    UniformCounts,
    /// ToD counts as they are, but each layer removes its lowest-L1 units instead of its
    /// lowest-U ones.
    RankL1,
    /// ToD counts as they are, but each layer removes the units with the lowest group L1
    /// (`group-l1`: Torch-Pruning's group magnitude over every weight slice removed with
    /// the unit).
    RankGroupL1,
    /// Counts that land on the MACs target instead of the first α past it
    /// (`SelectOptions::exact_target`).
    ExactTarget,
    /// U read after the BatchNorm that follows the layer, before its activation
    /// (`AnalysisPoint::AfterNormalization`).
    AfterNormalization,
    /// A coupled group's MAC saving shared among its members (`MacCost::Shared`).
    SharedMacs,
    /// MAC cost per fraction of the layer, shared in a group (`MacCost::Fraction`).
    FractionMacs,
}

/// What `fair-package-rule` changes from `fair-paper`: [`PREVIOUS`] with the package group
/// rule instead of the summed one (the default before the ResNet-20 rows were measured).
pub const PACKAGE_RULE: &[Suspect] = &[Suspect::REval, Suspect::MacWeight, Suspect::NoDrift];

/// The default before counts landed on the target and units were ranked by group L1
/// (`fair-previous`): U ranking, the first α past the target.
pub const PREVIOUS: &[Suspect] = &[
    Suspect::REval,
    Suspect::MacWeight,
    Suspect::NoDrift,
    Suspect::Summed,
];

/// The default before MAC costs were measured per fraction of a layer (`fair-mac-unit`):
/// [`PREVIOUS`] with counts that land on the target and units ranked by group L1, each member
/// of a residual group charged the whole group's MACs (`MacCost::Unit`).
pub const UNIT_COST: &[Suspect] = &[
    Suspect::REval,
    Suspect::MacWeight,
    Suspect::NoDrift,
    Suspect::Summed,
    Suspect::ExactTarget,
    Suspect::RankGroupL1,
];

/// What [`fair_pipeline::Preset::FairPruner`] changes from `fair-paper`, measured as
/// `fair-default` (a test checks that the two agree): [`UNIT_COST`] with MAC costs per
/// fraction of each layer (`MacCost::Fraction`).
pub const DEFAULT: &[Suspect] = &[
    Suspect::REval,
    Suspect::MacWeight,
    Suspect::NoDrift,
    Suspect::Summed,
    Suspect::ExactTarget,
    Suspect::RankGroupL1,
    Suspect::FractionMacs,
];

/// The methods, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Method {
    /// U ranking, ToD counts, the authors' package settings.
    #[value(name = "fair-paper")]
    FairPaper,
    /// fair-paper with U read after the activation.
    #[value(name = "fair-after-act")]
    FairAfterAct,
    /// fair-paper with R in eval mode.
    #[value(name = "fair-r-eval")]
    FairREval,
    /// fair-paper with MAC-aware counts (mac_weight 1).
    #[value(name = "fair-mac")]
    FairMac,
    /// fair-paper with the summed group rule.
    #[value(name = "fair-summed")]
    FairSummed,
    /// fair-paper without the BatchNorm drift (exact W1).
    #[value(name = "fair-no-drift")]
    FairNoDrift,
    /// fair-previous with the package group rule (`PACKAGE_RULE`).
    #[value(name = "fair-package-rule")]
    FairPackageRule,
    /// The default before this ablation's last changes (`PREVIOUS`).
    #[value(name = "fair-previous")]
    FairPrevious,
    /// fair-previous with the milder MAC weight γ = 0.5.
    #[value(name = "fair-mac-half")]
    FairMacHalf,
    /// fair-previous's U ranking with uniform counts (the same fraction of every layer).
    #[value(name = "fair-uniform-u")]
    FairUniformU,
    /// fair-previous's ToD counts with each layer's units ranked by L1 norm.
    #[value(name = "fair-tod-l1")]
    FairTodL1,
    /// fair-previous's ToD counts with each layer's units ranked by group L1 (`group-l1`):
    /// the default with the first α past the target.
    #[value(name = "fair-tod-group-l1")]
    FairTodGroupL1,
    /// fair-previous with counts that land on the target (`exact_target`): the default with
    /// U ranking.
    #[value(name = "fair-exact")]
    FairExact,
    /// fair-exact with U read after the BatchNorm (`AfterNormalization`).
    #[value(name = "fair-exact-after-bn")]
    FairExactAfterBn,
    /// The default before this change (`UNIT_COST`): each member of a residual group charged
    /// the whole group's MAC saving (`MacCost::Unit`).
    #[value(name = "fair-mac-unit")]
    FairMacUnit,
    /// fair-mac-unit with a residual group's MAC saving shared among its members
    /// (`MacCost::Shared`).
    #[value(name = "fair-mac-shared")]
    FairMacShared,
    /// The default preset with a latency target instead of a MACs target (`--latency-target`
    /// only): its counts price units by a latency table measured on `--latency-on`, and its
    /// candidates are timed until they remove the target's share of the measured latency.
    /// The other methods are compared with it at its measured latency.
    #[value(name = "fair-latency")]
    FairLatency,
    /// fair-pruner's default preset (`DEFAULT`, equal to [`fair_pipeline::Preset::FairPruner`]).
    #[value(name = "fair-default")]
    FairDefault,
    /// The same fraction of every layer, lowest group L1 first (fair-pruner's `group-l1`:
    /// what Torch-Pruning's uniform L1 ranks by).
    #[value(name = "uniform-group-l1")]
    UniformGroupL1,
    /// The same fraction of every layer, lowest L1 norm first (fair-pruner).
    #[value(name = "uniform-l1")]
    UniformL1,
    /// Torch-Pruning 1.6.1 uniform L1 (`MagnitudePruner`, local).
    #[value(name = "tp-l1")]
    TpL1,
    /// Torch-Pruning 1.6.1 global `GroupTaylorImportance`.
    #[value(name = "tp-taylor")]
    TpTaylor,
    /// Torch-Pruning 1.6.1 global group L2 norm (`GroupMagnitudeImportance(p=2)`, formerly
    /// `GroupNormImportance`).
    #[value(name = "tp-norm")]
    TpNorm,
    /// Torch-Pruning 1.6.1 isomorphic pruning (`isomorphic=True`, global
    /// `GroupTaylorImportance` within each set of structurally identical groups).
    #[value(name = "tp-iso")]
    TpIso,
}

impl Method {
    /// Every method, in table order.
    pub const ALL: [Method; 24] = [
        Method::FairPaper,
        Method::FairAfterAct,
        Method::FairREval,
        Method::FairMac,
        Method::FairSummed,
        Method::FairNoDrift,
        Method::FairPackageRule,
        Method::FairPrevious,
        Method::FairMacHalf,
        Method::FairUniformU,
        Method::FairTodL1,
        Method::FairTodGroupL1,
        Method::FairExact,
        Method::FairExactAfterBn,
        Method::FairMacUnit,
        Method::FairMacShared,
        Method::FairLatency,
        Method::FairDefault,
        Method::UniformGroupL1,
        Method::UniformL1,
        Method::TpL1,
        Method::TpTaylor,
        Method::TpNorm,
        Method::TpIso,
    ];

    /// The methods a MACs-target run measures by default: every method but `fair-latency`,
    /// which exists only at a latency target (`--latency-target`).
    pub fn at_macs() -> Vec<Method> {
        Method::ALL
            .into_iter()
            .filter(|&m| m != Method::FairLatency)
            .collect()
    }

    /// The method's name (`--methods`, file names, JSON).
    pub fn key(self) -> &'static str {
        match self {
            Method::FairPaper => "fair-paper",
            Method::FairAfterAct => "fair-after-act",
            Method::FairREval => "fair-r-eval",
            Method::FairMac => "fair-mac",
            Method::FairSummed => "fair-summed",
            Method::FairNoDrift => "fair-no-drift",
            Method::FairPackageRule => "fair-package-rule",
            Method::FairPrevious => "fair-previous",
            Method::FairLatency => "fair-latency",
            Method::FairDefault => "fair-default",
            Method::FairMacHalf => "fair-mac-half",
            Method::FairUniformU => "fair-uniform-u",
            Method::FairTodL1 => "fair-tod-l1",
            Method::FairTodGroupL1 => "fair-tod-group-l1",
            Method::UniformGroupL1 => "uniform-group-l1",
            Method::FairExact => "fair-exact",
            Method::FairExactAfterBn => "fair-exact-after-bn",
            Method::FairMacUnit => "fair-mac-unit",
            Method::FairMacShared => "fair-mac-shared",
            Method::UniformL1 => "uniform-l1",
            Method::TpL1 => "tp-l1",
            Method::TpTaylor => "tp-taylor",
            Method::TpNorm => "tp-norm",
            Method::TpIso => "tp-iso",
        }
    }

    /// The method named `key` ([`Method::key`]).
    pub fn from_key(key: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.key() == key)
    }

    /// What a FAIR variant changes from `fair-paper`; `None` for the baselines.
    pub fn suspects(self) -> Option<&'static [Suspect]> {
        match self {
            Method::FairPaper => Some(&[]),
            Method::FairAfterAct => Some(&[Suspect::AfterActivation]),
            Method::FairREval => Some(&[Suspect::REval]),
            Method::FairMac => Some(&[Suspect::MacWeight]),
            Method::FairSummed => Some(&[Suspect::Summed]),
            Method::FairNoDrift => Some(&[Suspect::NoDrift]),
            Method::FairPackageRule => Some(PACKAGE_RULE),
            Method::FairPrevious => Some(PREVIOUS),
            Method::FairDefault | Method::FairLatency => Some(DEFAULT),
            Method::FairMacHalf => Some(&[
                Suspect::REval,
                Suspect::NoDrift,
                Suspect::Summed,
                Suspect::HalfMacWeight,
            ]),
            Method::FairUniformU => Some(&[
                Suspect::REval,
                Suspect::NoDrift,
                Suspect::Summed,
                Suspect::UniformCounts,
            ]),
            Method::FairTodL1 => Some(&[
                Suspect::REval,
                Suspect::MacWeight,
                Suspect::NoDrift,
                Suspect::Summed,
                Suspect::RankL1,
            ]),
            Method::FairTodGroupL1 => Some(&[
                Suspect::REval,
                Suspect::MacWeight,
                Suspect::NoDrift,
                Suspect::Summed,
                Suspect::RankGroupL1,
            ]),
            Method::UniformGroupL1 => Some(&[
                Suspect::REval,
                Suspect::NoDrift,
                Suspect::Summed,
                Suspect::UniformCounts,
                Suspect::RankGroupL1,
            ]),
            Method::FairExact => Some(&[
                Suspect::REval,
                Suspect::MacWeight,
                Suspect::NoDrift,
                Suspect::Summed,
                Suspect::ExactTarget,
            ]),
            Method::FairExactAfterBn => Some(&[
                Suspect::REval,
                Suspect::MacWeight,
                Suspect::NoDrift,
                Suspect::Summed,
                Suspect::ExactTarget,
                Suspect::AfterNormalization,
            ]),
            Method::FairMacShared => Some(&[
                Suspect::REval,
                Suspect::MacWeight,
                Suspect::NoDrift,
                Suspect::Summed,
                Suspect::ExactTarget,
                Suspect::RankGroupL1,
                Suspect::SharedMacs,
            ]),
            Method::FairMacUnit => Some(UNIT_COST),
            _ => None,
        }
    }

    /// The Torch-Pruning importance the reference script runs (`l1`, `taylor`, `norm`, `iso`).
    pub(super) fn torch_pruning(self) -> Option<&'static str> {
        match self {
            Method::TpL1 => Some("l1"),
            Method::TpTaylor => Some("taylor"),
            Method::TpNorm => Some("norm"),
            Method::TpIso => Some("iso"),
            _ => None,
        }
    }
}

/// A FAIR variant's settings: where U is read, R's mode, the selector's options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Variant {
    pub(super) point: AnalysisPoint,
    pub(super) r_mode: RMode,
    /// The package's BatchNorm drift and quantile-grid W1 (else no drift, exact W1).
    pub(super) drift: bool,
    pub(super) mac_weight: f64,
    pub(super) mac_cost: MacCost,
    pub(super) rule: GroupRule,
    /// ToD counts, or the same fraction of every layer.
    pub(super) counts: Counts,
    /// The criterion that picks each layer's units (`u`, `l1` or `group-l1`).
    pub(super) rank: &'static str,
    /// Counts that land on the target (`SelectOptions::exact_target`).
    pub(super) exact_target: bool,
}

impl Variant {
    /// fair-paper (the authors' package: [`ScoringSettings::paper`], the package group rule,
    /// the paper's counts) with `suspects` changed.
    pub(super) fn of(suspects: &[Suspect]) -> Variant {
        let paper = ScoringSettings::paper(R_BATCH);
        let mut v = Variant {
            point: paper.u.analysis_point,
            r_mode: paper.r.mode,
            drift: true,
            mac_weight: 0.0,
            mac_cost: MacCost::Unit,
            rule: GroupRule::Package,
            counts: Counts::Tod,
            rank: "u",
            exact_target: false,
        };
        for s in suspects {
            match s {
                Suspect::AfterActivation => v.point = AnalysisPoint::AfterActivation,
                Suspect::REval => v.r_mode = RMode::Eval,
                Suspect::MacWeight => v.mac_weight = 1.0,
                Suspect::Summed => v.rule = GroupRule::Summed,
                Suspect::NoDrift => v.drift = false,
                Suspect::HalfMacWeight => v.mac_weight = 0.5,
                Suspect::UniformCounts => v.counts = Counts::Uniform,
                Suspect::RankL1 => v.rank = "l1",
                Suspect::RankGroupL1 => v.rank = "group-l1",
                Suspect::ExactTarget => v.exact_target = true,
                Suspect::AfterNormalization => v.point = AnalysisPoint::AfterNormalization,
                Suspect::SharedMacs => v.mac_cost = MacCost::Shared,
                Suspect::FractionMacs => v.mac_cost = MacCost::Fraction,
            }
        }
        v
    }

    /// The scoring it needs (one score file per distinct one).
    pub(super) fn scoring(&self) -> (AnalysisPoint, RMode, bool) {
        (self.point, self.r_mode, self.drift)
    }

    /// The selector's options.
    pub(super) fn select_options(&self) -> SelectOptions {
        SelectOptions {
            rule: self.rule,
            mac_weight: self.mac_weight,
            mac_cost: self.mac_cost,
            exact_target: self.exact_target,
            ..SelectOptions::default()
        }
    }
}

/// Label of a scoring setting, for file names: `package-train`, `after-activation-eval`.
pub(super) fn scoring_label((point, mode, drift): (AnalysisPoint, RMode, bool)) -> String {
    // The settings' names as they serialise (`"after-activation"`), without the quotes.
    let name = |v: serde_json::Result<String>| v.unwrap_or_default().trim_matches('"').to_owned();
    format!(
        "{}-{}{}",
        name(serde_json::to_string(&point)),
        name(serde_json::to_string(&mode)),
        if drift { "" } else { "-nodrift" }
    )
}

/// A MACs target as file names and the reference script's summary key it (`0.5000`).
pub(super) fn target_key(t: f64) -> String {
    format!("{t:.4}")
}

/// Settings of an ablation run.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct Options {
    /// Networks to measure, comma-separated (the tables keep the others' stored results).
    #[arg(long, value_delimiter = ',', value_parser = ["vgg", "resnet", "vit"], default_values = ["vgg", "resnet"])]
    pub nets: Vec<String>,
    /// Seeds, comma-separated: each trains its own model, draws its own validation split and
    /// calibration samples; figures are mean ± sample std over them.
    #[arg(long, value_delimiter = ',', default_values_t = [0u64, 1, 2])]
    pub seeds: Vec<u64>,
    /// MACs targets: fractions of the MACs removed, comma-separated (each in (0, 1)).
    #[arg(long, value_delimiter = ',', value_parser = macs_target, default_values_t = [0.3, 0.5, 0.7])]
    pub macs: Vec<f64>,
    /// Fine-tuning budgets in epochs, comma-separated; each starts from the same recalibrated
    /// pruned model.
    #[arg(long, value_delimiter = ',', value_parser = positive, default_values_t = [1usize, 5])]
    pub finetune_epochs: Vec<usize>,
    /// Methods to measure, comma-separated [default: every method but fair-latency; with
    /// --latency-target: fair-default, tp-l1, tp-norm, tp-taylor]. A seed keeps the rows of
    /// other methods and targets from earlier runs with the same settings and trained model,
    /// so runs over subsets add up to one table (at equal latency, a run replaces the rows
    /// of its target: they are matched to its own fair-latency); every measured figure is
    /// stored and reused when asked for again.
    #[arg(long, value_delimiter = ',', value_enum)]
    pub methods: Vec<Method>,
    /// Validation images per class, carved from the training split (stratified, seeded) and
    /// never used for training, calibration or fine-tuning; the default is chosen on it.
    #[arg(long, default_value_t = 500, value_parser = positive)]
    pub val_per_class: usize,
    /// Training epochs of each network (a trained model is reused while the settings are
    /// unchanged).
    #[arg(long, default_value_t = 3, value_parser = positive)]
    pub train_epochs: usize,
    /// Fraction of the training part each fine-tune sees (stratified, the same images for
    /// every method) [default: the network's, as in `bench compare`: VGG 1, ResNet 0.25].
    #[arg(long, value_parser = fraction)]
    pub finetune_fraction: Option<f64>,
    /// Calibration samples per class.
    #[arg(long, default_value_t = 32, value_parser = positive)]
    pub per_class: usize,
    /// Also fine-tune every budget with the unpruned model as teacher (suspect f):
    /// distillation weight W in (0, 1], temperature 4 (`fair_train::Distillation`); the
    /// tables then show `+ KD` columns next to the plain ones.
    #[arg(long, value_name = "W", value_parser = fraction)]
    pub distill: Option<f64>,
    /// Refit the readers of removed units by least squares against the unpruned model
    /// before the BatchNorm recalibration, for every method (`fair_train::reconstruct_readers`,
    /// default settings: 8 batches of 128 from the fine-tuning set). Its rows are labelled
    /// `<method> + recon` and add up with those of runs without it; each row carries the
    /// setting.
    #[arg(long)]
    pub reconstruct: bool,
    /// Compare at equal measured latency instead of at MACs targets (issue 27): `fair-latency`
    /// (the default preset pricing units by a latency table measured on `--latency-on`, its
    /// candidates timed until they remove this fraction of the latency) is always measured,
    /// and every other method of `--methods` is pruned at the MACs target whose measured
    /// latency matches fair-latency's (searched on measurements); at the end every pruned
    /// model is timed in one interleaved session against the unpruned one. `--macs` is not
    /// used. The rows go to their own result file per runtime, batch and threads
    /// (`result-latency-<runtime>-b<batch>-t<threads>.json`) and table.
    #[arg(long, value_name = "FRACTION", value_parser = latency_target)]
    pub latency_target: Option<f64>,
    /// The runtime latency is measured on with `--latency-target`: `libtorch-cpu` or
    /// `onnxruntime-cpu` (through `--python`, which must have `onnxruntime`).
    #[arg(long, value_name = "RUNTIME", default_value = "libtorch-cpu", value_parser = latency_runtime)]
    pub latency_on: LatencyRuntime,
    /// Batch size of every timed forward pass with `--latency-target`.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive)]
    pub latency_batch: usize,
    /// Intra-op threads while timing with `--latency-target`.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive)]
    pub latency_threads: usize,
    /// With `--latency-target`: a method's latency equals fair-latency's when the fractions
    /// of latency removed differ by at most this fraction of fair-latency's (relative).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.03, value_parser = fraction)]
    pub latency_tolerance: f64,
    /// libtorch CPU threads (ours and the references').
    #[arg(long, default_value_t = 2, value_parser = positive)]
    pub threads: usize,
    /// Do not write the table into docs/results.md nor the charts into docs/.
    #[arg(long)]
    pub no_docs: bool,
    /// Measure nothing: rebuild the summary, table and charts from stored results.
    #[arg(long)]
    pub tables_only: bool,
    /// The reference Python (Torch-Pruning 1.6.1) [default: $FAIR_PRUNER_PYTHON].
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
}

impl Options {
    /// The equal-latency arm of this run (`--latency-target` and the flags with it), `None`
    /// for a run at MACs targets.
    pub fn latency(&self) -> Option<LatencyArm> {
        self.latency_target.map(|_| LatencyArm {
            runtime: self.latency_on.name().to_owned(),
            batch: self.latency_batch,
            threads: self.latency_threads,
            tolerance: self.latency_tolerance,
            fair_tolerance: fair_pipeline::DEFAULT_LATENCY_TOLERANCE,
        })
    }

    /// The methods this run measures, in table order without repeats: with
    /// `--latency-target`, `fair-latency` and `--methods` (by default issue 27's set,
    /// [`AT_LATENCY`]); else `--methods` (by default [`Method::at_macs`]), where
    /// `fair-latency` is an error (it has no MACs target).
    pub fn methods(&self) -> Result<Vec<Method>> {
        let mut methods = match (self.methods.is_empty(), self.latency_target) {
            (false, _) => self.methods.clone(),
            (true, None) => Method::at_macs(),
            (true, Some(_)) => AT_LATENCY.to_vec(),
        };
        match self.latency_target {
            Some(_) => methods.push(Method::FairLatency),
            None if methods.contains(&Method::FairLatency) => anyhow::bail!(
                "fair-latency is pruned to a latency target: give --latency-target (e.g. 0.5) \
                 or leave it out of --methods"
            ),
            None => {}
        }
        methods.sort();
        methods.dedup();
        Ok(methods)
    }
}

/// The methods an equal-latency run compares with fair-latency by default (issue 27, item
/// 4): the MACs-targeted default, Torch-Pruning's uniform L1 and its global group norm and
/// Taylor pruning.
pub const AT_LATENCY: [Method; 4] = [
    Method::FairDefault,
    Method::TpL1,
    Method::TpNorm,
    Method::TpTaylor,
];

/// What an equal-latency run's file and directory names carry:
/// `latency-<runtime>-b<batch>-t<threads>`.
pub(super) fn latency_tag(runtime: LatencyRuntime, batch: usize, threads: usize) -> String {
    format!("latency-{runtime}-b{batch}-t{threads}")
}

fn latency_target(text: &str) -> Result<f64, String> {
    goal_fraction(text, Goal::Latency, "a fraction of the latency like 0.5")
}

fn latency_runtime(text: &str) -> Result<LatencyRuntime, String> {
    match text.parse::<LatencyRuntime>()? {
        LatencyRuntime::Cuda => {
            Err("the ablation times on the CPU: choose libtorch-cpu or onnxruntime-cpu".into())
        }
        // Its results have no docs block (docs/results.md) yet.
        LatencyRuntime::PytorchCpu => Err(
            "the ablation's equal-latency tables are kept for libtorch-cpu and onnxruntime-cpu: choose one of them"
                .into(),
        ),
        r => Ok(r),
    }
}

fn macs_target(text: &str) -> Result<f64, String> {
    goal_fraction(text, Goal::Macs, "fractions like 0.3,0.5")
}

/// A target parsed as `goal` checks it (`expected` says what was expected when `text` is no
/// number).
fn goal_fraction(text: &str, goal: fn(f64) -> Goal, expected: &str) -> Result<f64, String> {
    let t: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected {expected}, found {text}"))?;
    goal(t).check().map_err(|e| e.to_string())?;
    Ok(t)
}

fn fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("expected a fraction in (0, 1], found {text}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use fair_train::Reconstruction;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        o: Options,
    }

    fn parse(args: &[&str]) -> Result<Options, clap::Error> {
        Cli::try_parse_from(std::iter::once("ablation").chain(args.iter().copied())).map(|c| c.o)
    }

    #[test]
    fn options_default_to_the_issue_s_settings() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.nets, ["vgg", "resnet"]);
        assert_eq!(o.seeds, [0, 1, 2]);
        assert_eq!(o.macs, [0.3, 0.5, 0.7]);
        assert_eq!(o.finetune_epochs, [1, 5]);
        assert!(o.methods.is_empty(), "resolved by Options::methods");
        assert_eq!(o.methods().unwrap(), Method::at_macs());
        assert!(!o.methods().unwrap().contains(&Method::FairLatency));
        assert_eq!(o.methods().unwrap().len(), Method::ALL.len() - 1);
        assert!(o.latency_target.is_none() && o.latency().is_none());
        assert_eq!((o.val_per_class, o.train_epochs, o.per_class), (500, 3, 32));
        assert_eq!((o.finetune_fraction, o.threads), (None, 2));
        assert!(!o.no_docs && !o.tables_only && o.python.is_none());
        let o = parse(&[
            "--methods",
            "fair-paper,tp-taylor",
            "--seeds",
            "4",
            "--macs",
            "0.5",
            "--finetune-fraction",
            "0.05",
            "--finetune-epochs",
            "2",
        ])
        .unwrap();
        assert_eq!(o.methods().unwrap(), [Method::FairPaper, Method::TpTaylor]);
        assert_eq!((o.seeds, o.macs), (vec![4], vec![0.5]));
        assert_eq!(
            (o.finetune_fraction, o.finetune_epochs),
            (Some(0.05), vec![2])
        );
        for bad in [
            &["--macs", "1.0"][..],
            &["--macs", "0"],
            &["--finetune-fraction", "0"],
            &["--finetune-fraction", "1.5"],
            &["--finetune-epochs", "0"],
            &["--methods", "fair"],
            &["--nets", "lenet"],
            &["--seeds", "-1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_latency_target_adds_fair_latency_which_needs_one() {
        let o = parse(&[
            "--latency-target",
            "0.5",
            "--methods",
            "tp-norm,fair-default,tp-norm",
        ])
        .unwrap();
        assert_eq!(o.latency_target, Some(0.5));
        // fair-latency joins, in table order, once each.
        assert_eq!(
            o.methods().unwrap(),
            [Method::FairLatency, Method::FairDefault, Method::TpNorm]
        );
        assert_eq!(
            o.latency(),
            Some(LatencyArm {
                runtime: "libtorch-cpu".into(),
                batch: 1,
                threads: 1,
                tolerance: 0.03,
                fair_tolerance: 0.05,
            })
        );
        // Without --methods: fair-latency and issue 27's set, in table order.
        let o = parse(&["--latency-target", "0.5"]).unwrap();
        assert_eq!(
            o.methods().unwrap(),
            [
                Method::FairLatency,
                Method::FairDefault,
                Method::TpL1,
                Method::TpTaylor,
                Method::TpNorm
            ]
        );
        assert_eq!(
            latency_tag(LatencyRuntime::OnnxruntimeCpu, 8, 2),
            "latency-onnxruntime-cpu-b8-t2"
        );
        let o = parse(&[
            "--latency-target",
            "0.4",
            "--latency-on",
            "onnxruntime-cpu",
            "--latency-batch",
            "8",
            "--latency-threads",
            "2",
            "--latency-tolerance",
            "0.05",
        ])
        .unwrap();
        let arm = o.latency().unwrap();
        assert_eq!(
            (arm.runtime.as_str(), arm.batch, arm.threads, arm.tolerance),
            ("onnxruntime-cpu", 8, 2, 0.05)
        );
        // Without a latency target, fair-latency is an error naming the flag.
        let o = parse(&["--methods", "fair-latency,fair-default"]).unwrap();
        let err = o.methods().unwrap_err().to_string();
        assert!(err.contains("--latency-target"), "{err}");
        for bad in [
            &["--latency-target", "1"][..],
            &["--latency-target", "0"],
            &["--latency-on", "cuda"],
            &["--latency-on", "phone"],
            &["--latency-batch", "0"],
            &["--latency-tolerance", "0"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn method_keys_are_the_command_line_names_in_table_order() {
        for (i, m) in Method::ALL.into_iter().enumerate() {
            assert_eq!(m as usize, i);
            assert_eq!(m.to_possible_value().unwrap().get_name(), m.key());
            assert_eq!(Method::from_key(m.key()), Some(m));
        }
        assert_eq!(Method::FairPackageRule.suspects(), Some(PACKAGE_RULE));
        // fair-latency scores and ranks as the default; only its target differs.
        assert_eq!(Method::FairLatency.suspects(), Some(DEFAULT));
        assert!(Method::TpNorm.suspects().is_none());
    }

    #[test]
    fn each_variant_changes_one_thing_from_the_paper() {
        let paper = Variant::of(&[]);
        assert_eq!(paper.point, AnalysisPoint::Package);
        assert_eq!((paper.rule, paper.mac_weight), (GroupRule::Package, 0.0));
        for m in [
            Method::FairAfterAct,
            Method::FairREval,
            Method::FairMac,
            Method::FairSummed,
            Method::FairNoDrift,
        ] {
            let v = Variant::of(m.suspects().unwrap());
            let changed = [
                v.point != paper.point,
                v.r_mode != paper.r_mode,
                v.drift != paper.drift,
                v.mac_weight != paper.mac_weight,
                v.rule != paper.rule,
            ];
            assert_eq!(changed.iter().filter(|&&c| c).count(), 1, "{m:?}");
        }
        let package_rule = Variant::of(PACKAGE_RULE);
        assert_eq!(package_rule.r_mode, RMode::Eval);
        assert!(!package_rule.drift);
        assert_eq!(
            (package_rule.rule, package_rule.mac_weight),
            (GroupRule::Package, 1.0)
        );
        assert_eq!(scoring_label(paper.scoring()), "package-train");
        assert_eq!(
            scoring_label(Variant::of(&[Suspect::NoDrift]).scoring()),
            "package-train-nodrift"
        );
        assert_eq!(
            scoring_label(Variant::of(&[Suspect::REval]).scoring()),
            "package-eval"
        );
    }

    #[test]
    fn fair_default_is_the_default_preset() {
        let v = Variant::of(DEFAULT);
        let p = fair_pipeline::Preset::FairPruner.settings(R_BATCH);
        assert_eq!(v.point, p.scoring.u.analysis_point);
        assert_eq!(v.r_mode, p.scoring.r.mode);
        assert_eq!(v.drift, p.scoring.u.bn_drift.is_some());
        let w1 = if v.drift {
            fair_scoring::Wasserstein::QuantileGrid
        } else {
            fair_scoring::Wasserstein::Exact
        };
        assert_eq!(w1, p.scoring.u.w1);
        assert_eq!((v.rule, v.mac_weight), (p.rule, p.mac_weight));
        assert_eq!(v.mac_cost, p.mac_cost);
        assert_eq!(v.exact_target, p.exact_target);
        assert_eq!(v.rank, p.rank_by.unwrap_or("u"));
        assert_eq!(
            p.recalibration.map(|r| r.batches),
            Some(RECALIBRATION.batches)
        );
        // `--reconstruct` measures the preset's reader reconstruction.
        let d = Reconstruction::default();
        assert_eq!(
            p.reconstruction
                .map(|r| (r.batches, r.batch_size, r.ridge, r.max_inputs)),
            Some((d.batches, d.batch_size, d.ridge, d.max_inputs))
        );
    }
}
