//! `fair-bench ablation`: which of FAIR-Pruner's settings make the default, measured against
//! baselines at equal MACs over several seeds.
//!
//! Per network and seed: one model trained on the training split minus a stratified validation
//! split (never used for training, calibration or fine-tuning), one calibration draw from the
//! training part, scores computed once per scoring setting, then every method chooses a plan
//! at each MACs target. All plans go through the same surgery; every pruned model is measured
//! one-shot, after BatchNorm recalibration, and after fine-tuning from the recalibrated model
//! for each budget (validation and test top-1), with `--distill W` also fine-tuned with the
//! unpruned model as teacher. With `--reconstruct` every pruned model's readers are refitted
//! ([`fair_train::reconstruct_readers`], the `fair-pruner` preset's settings) before the
//! recalibration, for every method alike; those rows are labelled `<method> + recon` in the
//! tables and charts, next to the rows without it. A seed's rows add up over runs with the
//! same settings, so a run may measure a subset of methods or targets, with or without
//! `--reconstruct`. The per-seed figures are averaged into `target/bench/ablation/summary.json`,
//! a table in `docs/results.md` (between the `bench ablation` markers) and one chart per
//! network (`docs/ablation-<net>.svg`).
//!
//! The methods: `fair-paper` (the authors' package settings) and one variant per suspect,
//! each changing one thing ([`Suspect`]); the default (`fair-default`, [`DEFAULT`]); the
//! default before its last two changes (`fair-previous`, [`PREVIOUS`]) and changes of it
//! (`fair-package-rule`: the package group rule, [`PACKAGE_RULE`]; `fair-mac-half`: MAC
//! weight γ = 0.5; `fair-uniform-u`: uniform counts, U ranking; `fair-tod-l1` and
//! `fair-tod-group-l1`: ToD counts, L1 or group-L1 ranking; `fair-exact`: counts that land on
//! the target; `fair-exact-after-bn`: that with U read after the BatchNorm); the default
//! before its MAC costs were measured per fraction of a layer (`fair-mac-unit`, [`UNIT_COST`])
//! and its shared-cost change (`fair-mac-shared`); the baselines
//! `uniform-l1` and `uniform-group-l1` (ours) and Torch-Pruning's uniform L1, global Taylor and
//! global group-norm pruning (`xtask/bench/ablation_reference.py`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use fair_analysis::{
    Goal, GroupRule, MacCost, Method as Counts, Plan, Resolution, ResolveOptions, ScoreFile,
    SelectOptions, Selector,
};
use fair_data::{ImageSource, Source, Transform};
use fair_pipeline::stages::{self, AfterSurgery, OnData};
use fair_pipeline::{DrawSettings, RunConfig};
use fair_runtime::Model;
use fair_scoring::{AnalysisPoint, Progress, RMode, Registry, ScoringSettings};
use fair_train::{BnRecalibration, Distillation, Reconstruction, TrainSettings};
use plotters::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};

use crate::compare::{
    EVAL_BATCH, FINETUNE_LR, NETS, Net, SUBSET_SEED, check_digests, create_dir, run_python,
};
use crate::tables::Markers;
use crate::{positive, read_json, reference_python, workspace_root, write_json};

/// The markers around the generated block of `docs/results.md`.
pub const BEGIN: &str = "<!-- bench ablation: begin -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- bench ablation: end -->";
/// The markers of `cargo xtask bench ablation`'s block.
pub const ABLATION: Markers<'static> = Markers {
    begin: BEGIN,
    end: END,
    tool: "cargo xtask bench ablation",
};

/// Seed of the validation split (plus the run's seed).
const VAL_SEED: u64 = 20260301;

/// Batch size of the R-Score passes (and of the package's BatchNorm drift): the package's
/// calibration loader's, as in `bench compare`.
const R_BATCH: usize = 64;

/// BatchNorm recalibration of every pruned model: 32 batches of 128 from the fine-tuning set.
const RECALIBRATION: BnRecalibration = BnRecalibration {
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
}

impl Method {
    /// Every method, in table order.
    pub const ALL: [Method; 22] = [
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
        Method::FairDefault,
        Method::UniformGroupL1,
        Method::UniformL1,
        Method::TpL1,
        Method::TpTaylor,
        Method::TpNorm,
    ];

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
        }
    }

    fn from_key(key: &str) -> Option<Method> {
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
            Method::FairDefault => Some(DEFAULT),
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

    /// The Torch-Pruning importance the reference script runs (`l1`, `taylor`, `norm`).
    fn torch_pruning(self) -> Option<&'static str> {
        match self {
            Method::TpL1 => Some("l1"),
            Method::TpTaylor => Some("taylor"),
            Method::TpNorm => Some("norm"),
            _ => None,
        }
    }
}

/// A FAIR variant's settings: where U is read, R's mode, the selector's options.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Variant {
    point: AnalysisPoint,
    r_mode: RMode,
    /// The package's BatchNorm drift and quantile-grid W1 (else no drift, exact W1).
    drift: bool,
    mac_weight: f64,
    mac_cost: MacCost,
    rule: GroupRule,
    /// ToD counts, or the same fraction of every layer.
    counts: Counts,
    /// The criterion that picks each layer's units (`u`, `l1` or `group-l1`).
    rank: &'static str,
    /// Counts that land on the target (`SelectOptions::exact_target`).
    exact_target: bool,
}

impl Variant {
    /// fair-paper (the authors' package: [`ScoringSettings::paper`], the package group rule,
    /// the paper's counts) with `suspects` changed.
    fn of(suspects: &[Suspect]) -> Variant {
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
    fn scoring(&self) -> (AnalysisPoint, RMode, bool) {
        (self.point, self.r_mode, self.drift)
    }

    fn select_options(&self) -> SelectOptions {
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
fn scoring_label((point, mode, drift): (AnalysisPoint, RMode, bool)) -> String {
    let name = |v: Value| v.as_str().unwrap_or("?").to_owned();
    format!(
        "{}-{}{}",
        name(json!(point)),
        name(serde_json::to_value(mode).unwrap_or_default()),
        if drift { "" } else { "-nodrift" }
    )
}

/// Settings of an ablation run.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct Options {
    /// Networks to measure, comma-separated (the tables keep the others' stored results).
    #[arg(long, value_delimiter = ',', value_parser = ["vgg", "resnet"], default_values = ["vgg", "resnet"])]
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
    /// Methods to measure, comma-separated. A seed keeps the rows of other methods and targets
    /// from earlier runs with the same settings and trained model, so runs over subsets add
    /// up to one table; every measured figure is stored and reused when asked for again.
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = Method::ALL)]
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

fn macs_target(text: &str) -> Result<f64, String> {
    let t: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected fractions like 0.3,0.5, found {text}"))?;
    Goal::Macs(t).check().map_err(|e| e.to_string())?;
    Ok(t)
}

fn fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("expected a fraction in (0, 1], found {text}")),
    }
}

/// Mean and sample standard deviation (n − 1 in the denominator; `None` for fewer than two
/// values) of `xs`; `None` when `xs` is empty.
pub fn mean_std(xs: &[f64]) -> Option<(f64, Option<f64>)> {
    if xs.is_empty() {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let std = (xs.len() > 1)
        .then(|| (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    Some((mean, std))
}

/// The validation carve-out: per class (ascending id), a permutation drawn from `seed`; its
/// first `per_class` images are the validation split, the rest the training part. Both lists
/// ascending. An error when a class has no image left for training.
pub fn carve_indices(
    labels: &[i64],
    per_class: usize,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let mut by_class: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut val, mut rest) = (Vec::new(), Vec::new());
    for (class, mut idx) in by_class {
        if idx.len() <= per_class {
            bail!(
                "class {class} has {} training images: a validation split of {per_class} per class leaves none to train on (lower --val-per-class)",
                idx.len()
            );
        }
        idx.shuffle(&mut rng);
        val.extend_from_slice(&idx[..per_class]);
        rest.extend_from_slice(&idx[per_class..]);
    }
    val.sort_unstable();
    rest.sort_unstable();
    Ok((val, rest))
}

fn subset(source: &Source, name: String, indices: &[usize]) -> Result<Source> {
    Ok(match source {
        Source::Memory(d) => Source::Memory(d.subset(name, indices)),
        Source::Folder(f) => Source::Folder(f.subset(name, indices)?),
    })
}

/// `train` split into (validation, training part) by [`carve_indices`].
fn carve(train: &Source, per_class: usize, seed: u64) -> Result<(Source, Source)> {
    let (val, rest) = carve_indices(train.labels(), per_class, seed)?;
    let base = train.name().to_owned();
    Ok((
        subset(train, format!("{base} (validation)"), &val)?,
        subset(train, format!("{base} (minus validation)"), &rest)?,
    ))
}

/// Top-1 on the validation split and the test split.
fn top1(model: &Model, val: &Source, test: &Source, t: &Transform) -> Result<Value> {
    let v = fair_train::evaluate(model, val, t, EVAL_BATCH)?.top1;
    let te = fair_train::evaluate(model, test, t, EVAL_BATCH)?.top1;
    Ok(json!({"val": v, "test": te}))
}

/// What every plan of one network and seed is measured with.
struct Seeded<'a> {
    dir: PathBuf,
    model: Model,
    model_digest: String,
    /// The key of the trained model (`trained.json`).
    trained: Value,
    finetune: Source,
    finetune_fraction: f64,
    val: &'a Source,
    test: &'a Source,
    train_transform: Transform,
    eval_transform: Transform,
    /// Fine-tuning settings (epochs set per budget).
    finetune_settings: TrainSettings,
    recalibration: BnRecalibration,
    /// Reader reconstruction before the recalibration (`--reconstruct`).
    reconstruction: Option<Reconstruction>,
    /// Distillation from the unpruned model, fine-tuned as an extra column per budget.
    distill: Option<Distillation>,
}

impl Seeded<'_> {
    /// One plan measured: one-shot, after BatchNorm recalibration (preceded by reader
    /// reconstruction with `--reconstruct`), and fine-tuned from the recalibrated model for
    /// every budget. Reuses the figures of an identical earlier run (same trained model, plan,
    /// fine-tuning set, reconstruction and recalibration) budget by budget.
    fn evaluate_plan(&self, plan_path: &Path, name: &str, budgets: &[usize]) -> Result<Value> {
        let name = match self.reconstruction {
            Some(_) => format!("{name}-reconstructed"),
            None => name.to_owned(),
        };
        let out = self.dir.join("runs").join(name);
        create_dir(&out)?;
        let plan = Plan::load(plan_path)?;
        let key = json!({
            "trained": self.trained,
            "plan": serde_json::to_value(&plan)?,
            "finetune_fraction": self.finetune_fraction,
            "finetune": {"lr": self.finetune_settings.lr, "seed": self.finetune_settings.seed,
                         "batch_size": self.finetune_settings.batch_size},
            "train_settings": serde_json::to_value(&self.finetune_settings)?,
            "transforms": [serde_json::to_value(&self.train_transform)?,
                           serde_json::to_value(&self.eval_transform)?],
            "recalibration": serde_json::to_value(&self.recalibration)?,
            "reconstruction": serde_json::to_value(&self.reconstruction)?,
        });
        let stored = out.join("bench.json");
        let start = out.join("start.safetensors");
        let mut reused = 0;
        let mut figures = match read_json(&stored) {
            Ok(v) if v["key"] == key && start.exists() => v["figures"].clone(),
            _ => {
                check_digests(&plan, plan_path, &self.model, &self.model_digest)?;
                let resolution =
                    Resolution::new(self.model.graph(), &plan, &ResolveOptions::default())?;
                let model = stages::apply(&self.model, &resolution)?;
                let (params, macs) = (model.graph().param_count(), model.graph().macs());
                let one_shot = top1(&model, self.val, self.test, &self.eval_transform)?;
                // The pipeline's steps after surgery, in its order: reconstruction (with
                // `--reconstruct`), then the BatchNorm recalibration.
                let steps = AfterSurgery {
                    reconstruction: self.reconstruction.clone().map(|settings| OnData {
                        settings,
                        train: &self.finetune,
                        transform: self.eval_transform.clone(),
                    }),
                    recalibration: Some(OnData {
                        settings: self.recalibration.clone(),
                        train: &self.finetune,
                        transform: self.eval_transform.clone(),
                    }),
                };
                let done = stages::after_surgery(&self.model, &model, &resolution, &steps, None)?;
                // Stored as before: the reconstruction's layers, samples and time, and the
                // recalibration's `fair_train::RecalibrationReport`.
                let reconstruction = match done.reconstruction {
                    Some(r) => json!({"layers": r.layers, "samples": r.samples,
                                      "seconds": r.seconds}),
                    None => Value::Null,
                };
                let report = match done.recalibration {
                    Some(r) => serde_json::to_value(fair_train::RecalibrationReport {
                        layers: r.layers,
                        batches: r.batches,
                        samples: r.samples,
                    })?,
                    None => Value::Null,
                };
                let recalibrated = top1(&model, self.val, self.test, &self.eval_transform)?;
                model.save_weights(&start)?;
                let figures = json!({
                    "params": params, "macs": macs, "one_shot": one_shot,
                    "recalibrated": recalibrated, "recalibration": report,
                    "reconstruction": reconstruction, "finetuned": {},
                });
                write_json(&stored, &json!({"key": key, "figures": figures}))?;
                figures
            }
        };
        let mut graph = None;
        let mut jobs: Vec<(usize, Option<&Distillation>)> = Vec::new();
        for &epochs in budgets {
            jobs.push((epochs, None));
            if let Some(d) = &self.distill {
                jobs.push((epochs, Some(d)));
            }
        }
        for (epochs, distill) in jobs {
            let b = epochs.to_string();
            let done = match distill {
                None => &figures["finetuned"][&b],
                Some(d) => &figures["distilled"][d.weight.to_string()][&b],
            };
            if !done.is_null() {
                reused += 1;
                continue;
            }
            let graph = match &graph {
                Some(g) => g,
                None => graph.insert(
                    fair_surgery::apply(&self.model, &plan, &ResolveOptions::default())?
                        .model
                        .graph()
                        .clone(),
                ),
            };
            let mut model = Model::from_safetensors(graph.clone(), &start, tch::Device::Cpu)?;
            let settings = TrainSettings {
                epochs,
                ..self.finetune_settings.clone()
            };
            let t = Instant::now();
            fair_train::train_with_teacher(
                &mut model,
                distill.map(|d| (&self.model, d)),
                &self.finetune,
                None,
                &self.train_transform,
                &self.eval_transform,
                &settings,
                false,
            )?;
            let mut r = top1(&model, self.val, self.test, &self.eval_transform)?;
            r["seconds"] = json!(t.elapsed().as_secs_f64());
            match distill {
                None => figures["finetuned"][&b] = r,
                Some(d) => figures["distilled"][d.weight.to_string()][&b] = r,
            }
            write_json(&stored, &json!({"key": key, "figures": figures}))?;
        }
        figures["reused_budgets"] = json!(reused);
        Ok(figures)
    }
}

/// Trains the network for `seed` on the training part (reused when trained with the same
/// settings); returns the stamp (settings and unpruned top-1 on validation and test).
#[allow(clippy::too_many_arguments)]
fn trained(
    net: &Net,
    dir: &Path,
    config: &RunConfig,
    (train, val, test): (&Source, &Source, &Source),
    eval_transform: &Transform,
    epochs: usize,
    seed: u64,
    val_per_class: usize,
) -> Result<Value> {
    let weights = dir.join("model.safetensors");
    let stamp = dir.join("trained.json");
    let want = json!({
        "config": net.config, "epochs": epochs, "seed": seed,
        "val_per_class": val_per_class, "val_seed": VAL_SEED.wrapping_add(seed),
    });
    let previous = read_json(&stamp).ok();
    if !weights.exists() || previous.as_ref().map(|t| &t["settings"]) != Some(&want) {
        eprintln!("  [{} seed {seed}] training {epochs} epochs …", net.key);
        let mut model = Model::new(
            config.graph()?,
            tch::Device::Cpu,
            config.model.seed.wrapping_add(seed),
        )?;
        let base = config.train.clone().unwrap_or_default();
        let settings = TrainSettings {
            epochs,
            seed: base.seed.wrapping_add(seed),
            ..base
        };
        fair_train::train(
            &mut model,
            train,
            None,
            &config.transform,
            eval_transform,
            &settings,
            false,
        )?;
        model.save_weights(&weights)?;
        let top1 = top1(&model, val, test, eval_transform)?;
        write_json(&stamp, &json!({"settings": want, "top1": top1}))?;
    }
    read_json(&stamp)
}

/// The score files a run needs: one per distinct scoring setting of the selected FAIR
/// variants, plus the paper's (with L1, for the uniform baseline).
fn score_all(
    model: &Model,
    calibration: &fair_scoring::Calibration,
    methods: &[Method],
    draw: &DrawSettings,
    dir: &Path,
) -> Result<BTreeMap<String, (ScoreFile, PathBuf)>> {
    let paper = Variant::of(&[]).scoring();
    let mut wanted = vec![paper];
    for m in methods {
        if let Some(s) = m.suspects() {
            let scoring = Variant::of(s).scoring();
            if !wanted.contains(&scoring) {
                wanted.push(scoring);
            }
        }
    }
    let mut files = BTreeMap::new();
    for scoring in wanted {
        let mut s = ScoringSettings::paper(R_BATCH);
        s.u.analysis_point = scoring.0;
        s.r.mode = scoring.1;
        if !scoring.2 {
            s.u.bn_drift = None;
            s.u.w1 = fair_scoring::Wasserstein::Exact;
        }
        s.u.samples_per_class = draw.per_class;
        s.u.max_classes = draw.max_classes;
        (s.u.seed, s.r.seed, s.seed) = (draw.seed, draw.seed, draw.seed);
        let criteria = Registry::default().create_all(&["u", "r", "l1", "group-l1"], &s)?;
        let label = scoring_label(scoring);
        let file = fair_scoring::score(model, Some(calibration), &criteria, Progress::QUIET)
            .with_context(|| format!("scoring ({label})"))?;
        let path = dir.join(format!("scores-{label}.json"));
        file.save(&path)?;
        files.insert(label, (file, path));
    }
    Ok(files)
}

/// A digest of a text (to notice that a reference script changed; not for security).
fn text_digest(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:016x}", h.finish())
}

fn target_key(t: f64) -> String {
    format!("{t:.4}")
}

/// One network and seed: train, carve, calibrate, score, plan, measure.
fn run_seed(
    net: &Net,
    seed: u64,
    root: &Path,
    python: Option<&Path>,
    o: &Options,
) -> Result<Value> {
    let start = Instant::now();
    let dir = root
        .join("target/bench/ablation")
        .join(net.key)
        .join(format!("seed-{seed}"));
    create_dir(&dir)?;
    let config = RunConfig::load(&root.join(net.config))?;
    let graph = config.graph()?;
    let input = fair_pipeline::image_input(&graph)?;
    config.transform.check_input(input, 1)?;
    let (full_train, test, _) = config.data(input)?;
    let (val, train) = carve(&full_train, o.val_per_class, VAL_SEED.wrapping_add(seed))?;
    drop(full_train);
    let eval_transform = config.transform.for_evaluation();

    // 1. The trained model of this seed.
    let stamp = trained(
        net,
        &dir,
        &config,
        (&train, &val, &test),
        &eval_transform,
        o.train_epochs,
        seed,
        o.val_per_class,
    )?;
    let model = Model::from_safetensors(graph, &dir.join("model.safetensors"), tch::Device::Cpu)?;
    let f = o.finetune_fraction.unwrap_or(net.finetune_fraction);
    let (part, _) =
        train.split_stratified(SUBSET_SEED, |n| ((f * n as f64).round() as usize).max(1));
    let finetune = part.with_name(format!("{} ({:.0}%)", train.name(), 100.0 * f));
    let base = config.train.clone().unwrap_or(TrainSettings {
        epochs: 3,
        lr: FINETUNE_LR,
        ..Default::default()
    });
    let bench = Seeded {
        dir: dir.clone(),
        model_digest: fair_scoring::model_digest(&model)?,
        model,
        trained: stamp.clone(),
        finetune,
        finetune_fraction: f,
        val: &val,
        test: &test,
        train_transform: config.transform.clone(),
        eval_transform,
        finetune_settings: TrainSettings {
            lr: FINETUNE_LR,
            seed: base.seed.wrapping_add(seed),
            ..base
        },
        recalibration: BnRecalibration {
            seed: SUBSET_SEED.wrapping_add(seed),
            ..RECALIBRATION
        },
        reconstruction: o.reconstruct.then(|| Reconstruction {
            seed: SUBSET_SEED.wrapping_add(seed),
            ..Reconstruction::default()
        }),
        distill: o.distill.map(|weight| Distillation {
            weight,
            ..Distillation::default()
        }),
    };

    // 2. The unpruned export (for Torch-Pruning), calibration samples, scores.
    let unpruned = dir.join("unpruned");
    {
        let staged = fair_fs::StagedDir::new(&unpruned)?;
        fair_surgery::export(&bench.model, staged.path())?;
        staged.commit()?;
    }
    let (params0, macs0) = (
        bench.model.graph().param_count(),
        bench.model.graph().macs(),
    );
    let d = DrawSettings::default();
    let draw = DrawSettings {
        per_class: o.per_class,
        max_classes: config.prune.max_classes.unwrap_or(d.max_classes),
        seed: config.prune.seed.unwrap_or(d.seed).wrapping_add(seed),
    };
    let (calibration, _) = draw.draw(bench.model.graph(), &train, &config.transform)?;
    drop(train);
    let calibration_path = dir.join("calibration.safetensors");
    let (x, y) = calibration.tensors();
    fair_runtime::write_safetensors(
        &calibration_path,
        &[("inputs".into(), x), ("labels".into(), y)],
    )?;
    eprintln!("  [{} seed {seed}] scoring …", net.key);
    let scores = score_all(&bench.model, &calibration, &o.methods, &draw, &dir)?;
    let paper_label = scoring_label(Variant::of(&[]).scoring());

    // 3. Plans at every target: ours from the scores, Torch-Pruning's from the script.
    let plans = dir.join("plans");
    create_dir(&plans)?;
    let mut rows: Vec<(f64, Method, Result<PathBuf>)> = Vec::new();
    let mut methods = o.methods.clone();
    methods.sort();
    methods.dedup();
    for &m in &methods {
        let selector = match (m.suspects(), m) {
            (Some(s), _) => {
                let v = Variant::of(s);
                let (file, path) = &scores[&scoring_label(v.scoring())];
                Selector::from_scores(file, path, "u", "r", v.rank, v.select_options())
                    .map(|s| (s, v.counts))
            }
            (None, Method::UniformL1) => {
                let (file, path) = &scores[&paper_label];
                Selector::from_scores(file, path, "u", "r", "l1", SelectOptions::default())
                    .map(|s| (s, Counts::Uniform))
            }
            _ => continue,
        };
        let selector = selector.with_context(|| format!("{}: selector", m.key()))?;
        for &t in &o.macs {
            let path = plans.join(format!("{}-{}.json", m.key(), target_key(t)));
            let made = selector
                .0
                .select(Goal::Macs(t), selector.1)
                .map_err(anyhow::Error::from)
                .and_then(|s| Ok(s.plan().save(&path)?))
                .map(|_| path);
            rows.push((t, m, made));
        }
    }
    let mut torch_pruning = serde_json::Map::new();
    for &m in &methods {
        let Some(kind) = m.torch_pruning() else {
            continue;
        };
        let python = python.context("Torch-Pruning methods need the reference Python")?;
        let script = root.join("xtask/bench/ablation_reference.py");
        // The script's plans depend on the trained model, the calibration draw and the script
        // itself: with all three unchanged and every target in its last summary, the stored
        // plans are reused.
        let stamp = json!({
            "model": bench.model_digest, "draw": [draw.per_class, draw.max_classes, draw.seed],
            "script": text_digest(&std::fs::read_to_string(&script).unwrap_or_default()),
        });
        let stamp_path = plans.join(format!("tp-{kind}.stamp.json"));
        let summary_path = plans.join(format!("tp-{kind}.json"));
        let stored = read_json(&stamp_path).is_ok_and(|s| s == stamp)
            && read_json(&summary_path).is_ok_and(|summary| {
                o.macs.iter().all(|&t| {
                    let key = target_key(t);
                    !summary["targets"][&key].is_null()
                        && (summary["targets"][&key]["error"].is_string()
                            || plans.join(format!("tp-{kind}-{key}.json")).exists())
                })
            });
        let ran = if stored {
            eprintln!(
                "  [{} seed {seed}] Torch-Pruning ({kind}): stored plans",
                net.key
            );
            read_json(&summary_path)
        } else {
            eprintln!("  [{} seed {seed}] Torch-Pruning ({kind}) …", net.key);
            let mut cmd = Command::new(python);
            cmd.env("BENCH_THREADS", o.threads.to_string())
                .arg(&script)
                .arg(kind)
                .arg(&unpruned)
                .arg(&calibration_path)
                .arg(&plans)
                .args(o.macs.iter().map(|&t| target_key(t)));
            run_python(cmd, &format!("Torch-Pruning {kind}"))
                .and_then(|_| read_json(&summary_path))
                .and_then(|summary| {
                    write_json(&stamp_path, &stamp)?;
                    Ok(summary)
                })
        };
        match ran {
            Ok(summary) => {
                for &t in &o.macs {
                    let key = target_key(t);
                    let path = plans.join(format!("tp-{kind}-{key}.json"));
                    let made = match summary["targets"][&key]["error"].as_str() {
                        Some(e) => Err(anyhow::anyhow!("Torch-Pruning {kind}: {e}")),
                        None => Ok(path),
                    };
                    rows.push((t, m, made));
                }
                torch_pruning.insert(kind.into(), summary);
            }
            Err(e) => {
                eprintln!("  [{} seed {seed}] {}: {e:#}", net.key, m.key());
                for &t in &o.macs {
                    rows.push((t, m, Err(anyhow::anyhow!("{e:#}"))));
                }
            }
        }
    }

    // 4. Every plan through the same surgery, recalibration, evaluation and fine-tuning.
    rows.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let total = rows.len();
    let mut results = Vec::new();
    for (i, (t, m, plan)) in rows.into_iter().enumerate() {
        eprintln!(
            "  [{} seed {seed}] {}/{total}: {} at {:.0}% of MACs …",
            net.key,
            i + 1,
            m.key(),
            100.0 * t
        );
        let name = format!("{}-{}", m.key(), target_key(t));
        let measured = plan.and_then(|p| bench.evaluate_plan(&p, &name, &o.finetune_epochs));
        let mut r = match measured {
            Ok(mut r) => {
                r["macs_removed"] =
                    json!(1.0 - r["macs"].as_f64().unwrap_or(f64::NAN) / macs0 as f64);
                if let Some(kind) = m.torch_pruning() {
                    r["reference"] = torch_pruning[kind]["targets"][target_key(t)].clone();
                }
                if let Some(settings) = &bench.reconstruction {
                    r["reconstruction"]["settings"] = serde_json::to_value(settings)?;
                }
                r
            }
            Err(e) => {
                eprintln!("    failed: {e:#}");
                json!({"error": format!("{e:#}")})
            }
        };
        r["target"] = json!(t);
        r["method"] = json!(m.key());
        r["reconstructed"] = json!(bench.reconstruction.is_some());
        results.push(r);
    }
    Ok(json!({
        "net": net.key, "title": net.title, "seed": seed,
        "settings": {
            "train_epochs": o.train_epochs, "val_per_class": o.val_per_class,
            "finetune_fraction": f, "per_class": o.per_class,
            "recalibration": serde_json::to_value(&bench.recalibration)?,
        },
        "threads": o.threads,
        "unpruned": {"params": params0, "macs": macs0, "top1": stamp["top1"]},
        "results": results,
        "minutes": start.elapsed().as_secs_f64() / 60.0,
    }))
}

/// Whether a result row was measured with reader reconstruction (`--reconstruct`): its
/// `reconstructed` flag (set on every row, failed ones included), or for rows written
/// before the flag, a reconstruction report. Such rows are labelled `<method> + recon`.
fn reconstructed(row: &Value) -> bool {
    row["reconstructed"]
        .as_bool()
        .unwrap_or_else(|| row["reconstruction"].is_object())
}

/// A result's settings as rows of different runs must share them: without the reader
/// reconstruction, which is a property of each row (results written before it was kept
/// per row carried it among the settings).
fn shared_settings(result: &Value) -> Value {
    let mut s = result["settings"].clone();
    if let Some(map) = s.as_object_mut() {
        map.remove("reconstruction");
    }
    s
}

/// A seed's new result with the rows of its previous one that this run did not measure
/// (other methods, targets, or with/without reader reconstruction), kept only when both
/// were measured with the same settings and the same trained model; otherwise the new
/// result alone. So runs over subsets of methods and targets, with and without
/// `--reconstruct`, add up to one table; their `minutes` add up too.
pub fn merge_results(previous: &Value, mut new: Value) -> Value {
    let same = shared_settings(previous) == shared_settings(&new)
        && previous["unpruned"] == new["unpruned"]
        && previous["seed"] == new["seed"];
    if !same {
        return new;
    }
    let key = |r: &Value| {
        (
            r["method"].to_string(),
            r["target"].to_string(),
            reconstructed(r),
        )
    };
    let measured: Vec<_> = new["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(key)
        .collect();
    let kept: Vec<Value> = previous["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| !measured.contains(&key(r)))
        .cloned()
        .collect();
    if let Some(rows) = new["results"].as_array_mut() {
        rows.extend(kept);
    }
    let minutes = |r: &Value| r["minutes"].as_f64().unwrap_or(0.0);
    new["minutes"] = json!(minutes(previous) + minutes(&new));
    new
}

/// A row's method as the tables and charts name it: the method's key, `+ recon` when its
/// readers were reconstructed (`--reconstruct`).
fn row_label(method: Option<&Method>, reconstructed: bool) -> String {
    let key = method.map_or("?", |m| m.key());
    if reconstructed {
        format!("{key} + recon")
    } else {
        key.to_owned()
    }
}

/// One metric of one row over the seeds.
fn stat(values: &[f64]) -> Value {
    match mean_std(values) {
        Some((mean, std)) => json!({"mean": mean, "std": std, "n": values.len()}),
        None => json!(null),
    }
}

/// Averages the per-seed results of one network (`results`: their `result.json`s) into
/// rows of mean ± std per (target, method).
pub fn aggregate(results: &[Value]) -> Result<Value> {
    let Some(first) = results.first() else {
        bail!("no results to aggregate");
    };
    // Settings must agree, except the recalibration seed (which follows the seed).
    let settings = |r: &Value| {
        let mut s = shared_settings(r);
        if s["recalibration"].is_object() {
            s["recalibration"]["seed"] = json!(null);
        }
        s
    };
    for r in results {
        if settings(r) != settings(first) {
            bail!(
                "{} seed {} was measured with other settings ({}) than seed {} ({}): rerun them alike",
                r["net"],
                r["seed"],
                r["settings"],
                first["seed"],
                first["settings"]
            );
        }
    }
    // Rows: (target, method's table order, reconstructed).
    type Row = (String, usize, bool);
    let mut rows: BTreeMap<Row, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let mut errors: BTreeMap<Row, Vec<String>> = BTreeMap::new();
    let mut budgets: Vec<usize> = Vec::new();
    let mut distilled: Vec<String> = Vec::new();
    let mut checks = (0, 0);
    // The reconstruction settings of the first reconstructed row (its seed follows the seed).
    let mut reconstruction = Value::Null;
    for r in results {
        for x in r["results"].as_array().into_iter().flatten() {
            let t = x["target"].as_f64().unwrap_or(f64::NAN);
            let m = x["method"].as_str().unwrap_or("?");
            let order = Method::from_key(m).map_or(usize::MAX, |m| m as usize);
            let row = (target_key(t), order, reconstructed(x));
            // Reconstructed rows must share their settings (the seed aside), as the
            // settings above must: they are averaged and described together.
            if x["reconstruction"]["settings"].is_object() {
                let mut settings = x["reconstruction"]["settings"].clone();
                settings["seed"] = Value::Null;
                if reconstruction.is_null() {
                    reconstruction = settings;
                } else if settings != reconstruction {
                    bail!(
                        "{} seed {}: {m} at {t} was reconstructed with other settings ({settings}) \
                         than an earlier row ({reconstruction}): rerun them alike with --reconstruct",
                        r["net"],
                        r["seed"]
                    );
                }
            }
            let metrics = rows.entry(row.clone()).or_default();
            if let Some(e) = x["error"].as_str() {
                errors.entry(row).or_default().push(e.to_owned());
                continue;
            }
            let mut push = |name: String, v: &Value| {
                if let Some(v) = v.as_f64() {
                    metrics.entry(name).or_default().push(v);
                }
            };
            push("macs_removed".into(), &x["macs_removed"]);
            push("params".into(), &x["params"]);
            push("one_shot".into(), &x["one_shot"]["test"]);
            push("one_shot_val".into(), &x["one_shot"]["val"]);
            push("recalibrated".into(), &x["recalibrated"]["test"]);
            push("recalibrated_val".into(), &x["recalibrated"]["val"]);
            for (b, f) in x["finetuned"].as_object().into_iter().flatten() {
                if let Ok(b) = b.parse::<usize>() {
                    if !budgets.contains(&b) {
                        budgets.push(b);
                    }
                    push(format!("val@{b}"), &f["val"]);
                    push(format!("test@{b}"), &f["test"]);
                }
            }
            // Fine-tuned with the unpruned model as teacher: "distilled": {weight: {budget: …}}.
            for (w, per_budget) in x["distilled"].as_object().into_iter().flatten() {
                for (b, f) in per_budget.as_object().into_iter().flatten() {
                    let column = format!("{b}@{w}");
                    if !distilled.contains(&column) {
                        distilled.push(column.clone());
                    }
                    push(format!("kd-val@{column}"), &f["val"]);
                    push(format!("kd-test@{column}"), &f["test"]);
                }
            }
            if let Some(p) = x["reference"]["params"].as_f64() {
                checks.1 += 1;
                if Some(p) == x["params"].as_f64() {
                    checks.0 += 1;
                }
            }
        }
    }
    budgets.sort_unstable();
    distilled.sort();
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|((t, order, recon), metrics)| {
            let stats: serde_json::Map<String, Value> =
                metrics.iter().map(|(k, v)| (k.clone(), stat(v))).collect();
            let errs = errors
                .get(&(t.clone(), order, recon))
                .cloned()
                .unwrap_or_default();
            json!({"target": t.parse::<f64>().unwrap_or(f64::NAN),
                   "method": row_label(Method::ALL.get(order), recon),
                   "reconstructed": recon, "metrics": stats, "errors": errs})
        })
        .collect();
    // The best method on validation at each (target, budget).
    let mut best = Vec::new();
    let mut targets: Vec<f64> = rows.iter().filter_map(|r| r["target"].as_f64()).collect();
    targets.dedup();
    for &t in &targets {
        for &b in &budgets {
            let metric = format!("val@{b}");
            let winner = rows
                .iter()
                .filter(|r| r["target"].as_f64() == Some(t))
                .filter_map(|r| {
                    Some((r["method"].clone(), r["metrics"][&metric]["mean"].as_f64()?))
                })
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((method, val)) = winner {
                best.push(json!({"target": t, "budget": b, "method": method, "val": val}));
            }
        }
    }
    let seeds: Vec<Value> = results.iter().map(|r| r["seed"].clone()).collect();
    let unpruned = |k: &str| {
        let v: Vec<f64> = results
            .iter()
            .filter_map(|r| r["unpruned"]["top1"][k].as_f64())
            .collect();
        stat(&v)
    };
    Ok(json!({
        "net": first["net"], "title": first["title"], "seeds": seeds, "n": results.len(),
        "settings": first["settings"], "threads": first["threads"],
        "unpruned": {"params": first["unpruned"]["params"], "macs": first["unpruned"]["macs"],
                     "val": unpruned("val"), "test": unpruned("test")},
        "budgets": budgets, "distilled": distilled, "rows": rows, "best": best,
        "reconstruction": reconstruction,
        "cross_check": {"equal": checks.0, "compared": checks.1},
        "minutes": results.iter().filter_map(|r| r["minutes"].as_f64()).sum::<f64>(),
    }))
}

/// A percentage cell: `90.12 ± 0.34` (the std omitted for one seed; `(n = k)` added when
/// fewer seeds than the table's `n` have the figure).
fn cell(stat: &Value, n: usize, scale: f64) -> String {
    let Some(mean) = stat["mean"].as_f64() else {
        return "—".into();
    };
    let mut s = format!("{:.2}", scale * mean);
    if let Some(std) = stat["std"].as_f64() {
        write!(s, " ± {:.2}", scale * std).expect("writing to a String");
    }
    let k = stat["n"].as_u64().unwrap_or(0) as usize;
    if k != n {
        write!(s, " (n = {k})").expect("writing to a String");
    }
    s
}

/// The Markdown of one network's aggregate (see [`aggregate`]).
pub fn markdown(net: &Value) -> Result<String> {
    let mut s = String::new();
    let n = net["n"].as_u64().unwrap_or(0) as usize;
    let seeds: Vec<String> = net["seeds"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.to_string())
        .collect();
    let st = &net["settings"];
    let u = &net["unpruned"];
    let budgets: Vec<usize> = net["budgets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b.as_u64().map(|b| b as usize))
        .collect();
    writeln!(
        s,
        "#### {}\n\nn = {n} seeds ({}); every figure is the mean ± sample std over them (top-1 in %). Unpruned: {:.1} K params, {:.2} M MACs, validation top-1 {}, test top-1 {}. Trained {} epochs on the training split minus {} validation images per class; calibration {} samples per class from the training part; BatchNorm recalibration {} batches of {}; fine-tuning SGD lr 0.01 cosine over {:.0}% of the training part, each budget from the recalibrated model. {} CPU threads, {:.1} min in all (summed over the runs whose rows add up).\n",
        net["title"].as_str().unwrap_or("?"),
        seeds.join(", "),
        u["params"].as_f64().unwrap_or(f64::NAN) / 1e3,
        u["macs"].as_f64().unwrap_or(f64::NAN) / 1e6,
        cell(&u["val"], n, 100.0),
        cell(&u["test"], n, 100.0),
        st["train_epochs"],
        st["val_per_class"],
        st["per_class"],
        st["recalibration"]["batches"],
        st["recalibration"]["batch_size"],
        100.0 * st["finetune_fraction"].as_f64().unwrap_or(f64::NAN),
        net["threads"],
        net["minutes"].as_f64().unwrap_or(f64::NAN),
    )?;
    let rec = &net["reconstruction"];
    if rec.is_object() {
        writeln!(
            s,
            "`+ recon` rows: the readers of removed units refitted by least squares against the unpruned model ({} batches of {} from the fine-tuning set, `fair_train::reconstruct_readers`) before the BatchNorm recalibration; their `+ BN recal` column is after both.\n",
            rec["batches"], rec["batch_size"]
        )?;
    }
    write!(
        s,
        "| MACs target | method | MACs removed | one-shot | + BN recal |"
    )?;
    // Distilled columns: "<budget>@<weight>".
    let distilled: Vec<(String, String)> = net["distilled"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|c| c.split_once('@'))
        .map(|(b, w)| (b.to_owned(), w.to_owned()))
        .collect();
    for b in &budgets {
        write!(s, " FT {b} ep (val) | FT {b} ep (test) |")?;
    }
    for (b, w) in &distilled {
        write!(s, " FT {b} ep + KD {w} (val) | FT {b} ep + KD {w} (test) |")?;
    }
    writeln!(s)?;
    writeln!(
        s,
        "| ---: | --- | ---: | ---: | ---: |{}",
        " ---: | ---: |".repeat(budgets.len() + distilled.len())
    )?;
    let rows = net["rows"].as_array().context("no rows")?;
    for r in rows {
        let m = &r["metrics"];
        write!(
            s,
            "| {:.0}% | {} | {} | {} | {} |",
            100.0 * r["target"].as_f64().unwrap_or(f64::NAN),
            r["method"].as_str().unwrap_or("?"),
            cell(&m["macs_removed"], n, 100.0),
            cell(&m["one_shot"], n, 100.0),
            cell(&m["recalibrated"], n, 100.0),
        )?;
        for b in &budgets {
            write!(
                s,
                " {} | {} |",
                cell(&m[format!("val@{b}")], n, 100.0),
                cell(&m[format!("test@{b}")], n, 100.0)
            )?;
        }
        for (b, w) in &distilled {
            write!(
                s,
                " {} | {} |",
                cell(&m[format!("kd-val@{b}@{w}")], n, 100.0),
                cell(&m[format!("kd-test@{b}@{w}")], n, 100.0)
            )?;
        }
        writeln!(s)?;
    }
    let failed: Vec<String> = rows
        .iter()
        .filter(|r| r["errors"].as_array().is_some_and(|e| !e.is_empty()))
        .map(|r| {
            format!(
                "{} at {:.0}% ({})",
                r["method"].as_str().unwrap_or("?"),
                100.0 * r["target"].as_f64().unwrap_or(f64::NAN),
                r["errors"][0].as_str().unwrap_or("?")
            )
        })
        .collect();
    if !failed.is_empty() {
        writeln!(s, "\nFailed (no figure): {}.", failed.join("; "))?;
    }
    let best: Vec<String> = net["best"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            format!(
                "{:.0}% / {} ep → {} ({:.2})",
                100.0 * b["target"].as_f64().unwrap_or(f64::NAN),
                b["budget"],
                b["method"].as_str().unwrap_or("?"),
                100.0 * b["val"].as_f64().unwrap_or(f64::NAN)
            )
        })
        .collect();
    if !best.is_empty() {
        writeln!(
            s,
            "\nBest mean **validation** top-1 (MACs target / fine-tuning budget → method): {}.",
            best.join("; ")
        )?;
    }
    let (equal, compared) = (
        net["cross_check"]["equal"].as_u64().unwrap_or(0),
        net["cross_check"]["compared"].as_u64().unwrap_or(0),
    );
    if compared > 0 {
        writeln!(
            s,
            "\nCross-check: Torch-Pruning's own pruned models have the parameter counts of fair-pruner's surgery applying their plans in {equal} of {compared} cases."
        )?;
    }
    Ok(s)
}

/// Series colours (Okabe–Ito, then three more), one per method.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0, 0, 0),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 158, 115),
    RGBColor(240, 228, 66),
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(120, 120, 120),
    RGBColor(140, 80, 20),
];

/// A point of the chart: (MACs removed, mean top-1, its std), in %.
type ChartPoint = (f64, f64, f64);

/// The chart of one network's aggregate: test top-1 after the largest budget against the
/// MACs removed, one line per method, error bars = std over seeds.
pub fn chart_svg(net: &Value) -> Result<String> {
    let err = |e: &dyn std::fmt::Debug| anyhow::anyhow!("drawing the ablation chart: {e:?}");
    let budget = net["budgets"]
        .as_array()
        .and_then(|b| b.iter().filter_map(Value::as_u64).max())
        .context("no fine-tuning budget")?;
    let metric = format!("test@{budget}");
    let rows = net["rows"].as_array().context("no rows")?;
    // (label, colour index, dashed, points): a method's `+ recon` line is dashed, in its
    // method's colour.
    let mut series: Vec<(String, usize, bool, Vec<ChartPoint>)> = Vec::new();
    let mut colours: Vec<&Method> = Vec::new();
    for (m, recon) in Method::ALL.iter().flat_map(|m| [(m, false), (m, true)]) {
        let label = row_label(Some(m), recon);
        let mut points: Vec<ChartPoint> = rows
            .iter()
            .filter(|r| r["method"] == json!(label))
            .filter_map(|r| {
                let x = r["metrics"]["macs_removed"]["mean"].as_f64()?;
                let y = &r["metrics"][&metric];
                Some((
                    100.0 * x,
                    100.0 * y["mean"].as_f64()?,
                    100.0 * y["std"].as_f64().unwrap_or(0.0),
                ))
            })
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        if !points.is_empty() {
            let colour = match colours.iter().position(|&c| c == m) {
                Some(i) => i,
                None => {
                    colours.push(m);
                    colours.len() - 1
                }
            };
            series.push((label, colour, recon, points));
        }
    }
    let all = series.iter().flat_map(|s| &s.3);
    let (x0, x1) = all
        .clone()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = all.fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(p.1 - p.2), b.max(p.1 + p.2))
    });
    if series.is_empty() {
        bail!("no figures after {budget} epochs to chart");
    }
    let pad_x = ((x1 - x0) * 0.08).max(2.0);
    // Room right of the data for the legend (about a quarter of the plot's width), so it
    // never hides a line.
    let legend_x = (x1 - x0 + 2.0 * pad_x) * 0.4;
    let pad_y = ((y1 - y0) * 0.1).max(0.5);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{}: test top-1 after {budget} fine-tuning epoch(s), mean ± std over {} seed(s)",
                    net["net"].as_str().unwrap_or("?"),
                    net["n"]
                ),
                ("sans-serif", 15),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(
                (x0 - pad_x)..(x1 + pad_x + legend_x),
                (y0 - pad_y)..(y1 + pad_y * 2.0),
            )
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("MACs removed (%)")
            .y_desc("test top-1 (%)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .draw()
            .map_err(|e| err(&e))?;
        for (label, colour, dashed, points) in &series {
            let c = PALETTE[colour % PALETTE.len()];
            let line = points.iter().map(|p| (p.0, p.1));
            let drawn = if *dashed {
                chart.draw_series(DashedLineSeries::new(line, 6, 4, c.stroke_width(2)))
            } else {
                chart.draw_series(LineSeries::new(line, c.stroke_width(2)))
            };
            let dashed = *dashed;
            drawn
                .map_err(|e| err(&e))?
                .label(label.clone())
                .legend(move |(x, y)| {
                    // Two segments, with a gap between them for a dashed line.
                    let (end, start) = if dashed { (6, 10) } else { (8, 8) };
                    let style = c.stroke_width(2);
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (end, 0)], style)
                        + PathElement::new(vec![(start, 0), (16, 0)], style)
                });
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|p| Circle::new((p.0, p.1), 3, c.filled())),
                )
                .map_err(|e| err(&e))?;
            chart
                .draw_series(points.iter().filter(|p| p.2 > 0.0).map(|p| {
                    PathElement::new(vec![(p.0, p.1 - p.2), (p.0, p.1 + p.2)], c.stroke_width(1))
                }))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}

/// Reads the stored per-seed results of every network for `seeds`, aggregates them, writes
/// `dir/summary.json` and the charts (`dir/ablation-<net>.svg`), and returns the Markdown of
/// all networks with the chart files written.
fn rebuild(dir: &Path, seeds: &[u64]) -> Result<(PathBuf, String, Vec<PathBuf>)> {
    let mut nets = Vec::new();
    let mut md = String::new();
    let mut charts = Vec::new();
    for net in &NETS {
        let results: Vec<Value> = seeds
            .iter()
            .filter_map(|s| {
                read_json(
                    &dir.join(net.key)
                        .join(format!("seed-{s}"))
                        .join("result.json"),
                )
                .ok()
            })
            .collect();
        if results.is_empty() {
            continue;
        }
        let agg = aggregate(&results).with_context(|| format!("bench ablation: {}", net.key))?;
        md += &markdown(&agg)?;
        match chart_svg(&agg) {
            Ok(svg) => {
                let path = dir.join(format!("ablation-{}.svg", net.key));
                fair_fs::write_atomic(&path, svg.as_bytes())?;
                writeln!(
                    md,
                    "\n![{}: test top-1 against MACs removed](ablation-{}.svg)",
                    net.key, net.key
                )?;
                charts.push(path);
            }
            Err(e) => eprintln!("  no chart for {}: {e:#}", net.key),
        }
        md += "\n";
        nets.push(agg);
    }
    create_dir(dir)?;
    let out = dir.join("summary.json");
    write_json(&out, &json!({ "nets": nets }))?;
    Ok((out, md, charts))
}

/// Runs the ablation (or, with `--tables-only`, only rebuilds its table and charts).
pub fn run(o: &Options) -> Result<()> {
    let start = Instant::now();
    let root = workspace_root();
    let dir = root.join("target/bench/ablation");
    if !o.tables_only {
        let python = if o.methods.iter().any(|m| m.torch_pruning().is_some()) {
            Some(reference_python(
                o.python.as_deref(),
                "the ablation's Torch-Pruning baselines",
            )?)
        } else {
            None
        };
        tch::set_num_threads(i32::try_from(o.threads).context("--threads is too large")?);
        for net in NETS.iter().filter(|n| o.nets.iter().any(|k| k == n.key)) {
            for &seed in &o.seeds {
                eprintln!("bench ablation: {}, seed {seed}", net.title);
                let result = run_seed(net, seed, &root, python.as_deref(), o)
                    .with_context(|| format!("bench ablation: {} seed {seed}", net.title))?;
                let path = dir
                    .join(net.key)
                    .join(format!("seed-{seed}"))
                    .join("result.json");
                let result = match read_json(&path) {
                    Ok(previous) => merge_results(&previous, result),
                    Err(_) => result,
                };
                write_json(&path, &result)?;
            }
        }
    }
    let (summary, md, charts) = rebuild(&dir, &o.seeds)?;
    println!("{md}");
    println!(
        "summary: {} (this run: {:.1} min)",
        summary.display(),
        start.elapsed().as_secs_f64() / 60.0
    );
    if !o.no_docs {
        let docs = root.join("docs/results.md");
        crate::tables::write_block(&docs, &md, ABLATION)?;
        for chart in &charts {
            let name = chart.file_name().context("a chart has a file name")?;
            std::fs::copy(chart, root.join("docs").join(name))
                .with_context(|| format!("cannot copy {} into docs/", chart.display()))?;
        }
        println!("table and charts written to {}", docs.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

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
        assert_eq!(o.methods, Method::ALL);
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
        assert_eq!(o.methods, [Method::FairPaper, Method::TpTaylor]);
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
    fn method_keys_are_the_command_line_names_in_table_order() {
        for (i, m) in Method::ALL.into_iter().enumerate() {
            assert_eq!(m as usize, i);
            assert_eq!(m.to_possible_value().unwrap().get_name(), m.key());
            assert_eq!(Method::from_key(m.key()), Some(m));
        }
        assert_eq!(Method::FairPackageRule.suspects(), Some(PACKAGE_RULE));
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

    #[test]
    fn mean_and_sample_std_match_hand_values() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((m - 2.5).abs() < 1e-12);
        // Σ(x − 2.5)² = 5, / (4 − 1) → √(5/3).
        assert!((s.unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[0.9]), Some((0.9, None)));
        assert_eq!(mean_std(&[]), None);
        let (_, s) = mean_std(&[0.5, 0.5]).unwrap();
        assert_eq!(s, Some(0.0));
    }

    #[test]
    fn the_validation_carve_out_is_disjoint_and_stratified() {
        // Classes 0, 1, 2 interleaved (7 images each), then 8 more of class 2.
        let labels: Vec<i64> = (0..29).map(|i| if i < 21 { i % 3 } else { 2 }).collect();
        let (val, rest) = carve_indices(&labels, 3, 7).unwrap();
        let mut all: Vec<usize> = val.iter().chain(&rest).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..labels.len()).collect::<Vec<_>>(), "a partition");
        for c in 0..3 {
            assert_eq!(
                val.iter().filter(|&&i| labels[i] == c).count(),
                3,
                "class {c}"
            );
        }
        assert!(val.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(carve_indices(&labels, 3, 7).unwrap().0, val, "seeded");
        assert_ne!(
            carve_indices(&labels, 3, 8).unwrap().0,
            val,
            "the seed matters"
        );
        assert!(carve_indices(&labels, 7, 0).is_err(), "class 0 has only 7");

        // Through a Source: the validation images are not in the training part.
        let pixels: Vec<u8> = (0..labels.len()).map(|i| i as u8).collect();
        let classes = vec!["a".into(), "b".into(), "c".into()];
        let d = fair_data::Dataset::new("toy", [1, 1, 1], pixels, labels, classes).unwrap();
        let (v, r) = carve(&Source::Memory(d), 3, 7).unwrap();
        let (Source::Memory(v), Source::Memory(r)) = (v, r) else {
            panic!("in memory")
        };
        assert_eq!((v.len(), r.len()), (9, 20));
        assert_eq!(v.labels.iter().filter(|&&l| l == 2).count(), 3);
        assert!(v.pixels.iter().all(|p| !r.pixels.contains(p)));
    }

    fn fake_result(seed: u64, shift: f64) -> Value {
        let row = |method: &str, v: f64| {
            json!({"target": 0.5, "method": method, "params": 1000.0, "macs": 2.0e6, "macs_removed": 0.5 + shift / 10.0,
                   "one_shot": {"val": v - 0.3, "test": v - 0.3}, "recalibrated": {"val": v - 0.1, "test": v - 0.1},
                   "finetuned": {"1": {"val": v, "test": v - 0.01}}})
        };
        let mut tp = row("tp-l1", 0.80 + shift);
        tp["reference"] = json!({"params": 1000.0});
        json!({
            "net": "vgg", "title": "toy VGG", "seed": seed, "threads": 2, "minutes": 1.0,
            "settings": {"train_epochs": 1, "val_per_class": 50, "finetune_fraction": 0.05, "per_class": 8,
                         "recalibration": {"batches": 32, "batch_size": 128, "seed": seed}},
            "unpruned": {"params": 110000.0, "macs": 5.6e6, "top1": {"val": 0.9, "test": 0.89}},
            "results": [row("fair-paper", 0.85 + shift), row("uniform-l1", 0.86 - shift), tp,
                        {"target": 0.5, "method": "tp-taylor", "error": "boom"}],
        })
    }

    #[test]
    fn tables_show_mean_and_std_over_seeds_and_the_best_on_validation() {
        let agg = aggregate(&[fake_result(0, 0.0), fake_result(1, 0.02)]).unwrap();
        let md = markdown(&agg).unwrap();
        assert!(md.starts_with("#### toy VGG\n\nn = 2 seeds (0, 1)"), "{md}");
        assert!(
            md.contains("| MACs target | method | MACs removed | one-shot | + BN recal | FT 1 ep (val) | FT 1 ep (test) |"),
            "{md}"
        );
        // fair-paper: val 85 and 87 → 86.00 ± 1.41; MACs removed 50 and 50.2.
        assert!(
            md.contains("| 50% | fair-paper | 50.10 ± 0.14 | 56.00 ± 1.41 | 76.00 ± 1.41 | 86.00 ± 1.41 | 85.00 ± 1.41 |"),
            "{md}"
        );
        // uniform-l1: 86 and 84 → 85; the best on validation is fair-paper (86).
        assert!(md.contains("| 50% | uniform-l1 |"), "{md}");
        assert!(md.contains("50% / 1 ep → fair-paper (86.00)"), "{md}");
        assert!(
            md.contains("Failed (no figure): tp-taylor at 50% (boom)"),
            "{md}"
        );
        assert!(md.contains("in 2 of 2 cases"), "{md}");
        let (fp, ul) = (
            md.find("| fair-paper |").unwrap(),
            md.find("| uniform-l1 |").unwrap(),
        );
        assert!(fp < ul, "table order");
        // One seed: no std, and a chart.
        let one = aggregate(&[fake_result(3, 0.0)]).unwrap();
        let md = markdown(&one).unwrap();
        assert!(
            md.contains("| 50% | fair-paper | 50.00 | 55.00 | 75.00 | 85.00 | 84.00 |"),
            "{md}"
        );
        let svg = chart_svg(&one).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("fair-paper"),
            "chart"
        );
        // The block goes between the ablation markers, which docs/results.md holds.
        let docs = std::fs::read_to_string(workspace_root().join("docs/results.md")).unwrap();
        let new = crate::tables::splice(&docs, &md, ABLATION).unwrap();
        assert!(new.contains(&format!(
            "{BEGIN}\n<!-- Written by `cargo xtask bench ablation`"
        )));
        assert!(new.contains(&format!("{md}{END}")) && new.contains(crate::tables::BEGIN));
        // Settings that differ between seeds are refused.
        let mut other = fake_result(1, 0.0);
        other["settings"]["train_epochs"] = json!(3);
        assert!(aggregate(&[fake_result(0, 0.0), other]).is_err());
    }

    #[test]
    fn a_run_over_some_methods_keeps_the_other_rows_of_the_same_settings() {
        let previous = fake_result(0, 0.0);
        let mut new = fake_result(0, 0.0);
        new["results"] = json!([{"target": 0.5, "method": "fair-paper", "marker": 1},
                                {"target": 0.7, "method": "tp-l1", "marker": 2}]);
        let merged = merge_results(&previous, new.clone());
        let rows = merged["results"].as_array().unwrap();
        // fair-paper at 50% is the new row; uniform-l1, tp-l1 and tp-taylor at 50% are kept.
        assert_eq!(rows.len(), 5);
        let methods: Vec<(&str, f64)> = rows
            .iter()
            .map(|r| (r["method"].as_str().unwrap(), r["target"].as_f64().unwrap()))
            .collect();
        assert_eq!(
            methods,
            [
                ("fair-paper", 0.5),
                ("tp-l1", 0.7),
                ("uniform-l1", 0.5),
                ("tp-l1", 0.5),
                ("tp-taylor", 0.5)
            ]
        );
        assert_eq!(rows[0]["marker"], 1);
        // The runs' times add up (1 min each).
        assert_eq!(merged["minutes"], 2.0);
        // Other settings, another trained model or another seed: nothing is kept.
        for (field, value) in [
            ("settings", json!({"train_epochs": 9})),
            ("unpruned", json!({"params": 1.0})),
            ("seed", json!(7)),
        ] {
            let mut other = previous.clone();
            other[field] = value;
            assert_eq!(merge_results(&other, new.clone()), new, "{field}");
        }
    }

    #[test]
    fn reconstructed_rows_add_up_with_plain_ones_and_are_labelled() {
        // A seed measured without, then with `--reconstruct` (fair-paper at 50 % only).
        let with_recon = |seed: u64, v: f64| {
            let mut new = fake_result(seed, 0.0);
            let mut row = new["results"][0].clone();
            row["finetuned"] = json!({"1": {"val": v, "test": v - 0.01}});
            row["reconstruction"] = json!({"layers": [], "samples": 1024, "seconds": 1.5,
                "settings": {"batches": 8, "batch_size": 128, "ridge": 0.001, "seed": seed}});
            new["results"] = json!([row]);
            merge_results(&fake_result(seed, 0.0), new)
        };
        let merged = with_recon(0, 0.95);
        let rows = merged["results"].as_array().unwrap();
        // The reconstructed fair-paper row joins all four plain rows (fair-paper kept).
        assert_eq!(rows.len(), 5);
        assert_eq!(rows.iter().filter(|r| reconstructed(r)).count(), 1);
        assert_eq!(
            rows.iter().filter(|r| r["method"] == "fair-paper").count(),
            2
        );
        // A failed row of a run with reconstruction does not replace the plain one.
        let mut failed = fake_result(0, 0.0);
        failed["results"] = json!([{"target": 0.5, "method": "uniform-l1", "error": "boom", "reconstructed": true}]);
        let rows = merge_results(&fake_result(0, 0.0), failed)["results"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(rows.len(), 5);
        assert!(
            rows.iter()
                .any(|r| r["method"] == "uniform-l1" && !reconstructed(r))
        );
        // Results written when the setting sat among the settings still merge.
        let mut old = fake_result(0, 0.0);
        old["settings"]["reconstruction"] = Value::Null;
        let mut new = fake_result(0, 0.0);
        new["results"] = json!([]);
        assert_eq!(
            merge_results(&old, new)["results"]
                .as_array()
                .unwrap()
                .len(),
            4
        );

        let agg = aggregate(&[merged, with_recon(1, 0.97)]).unwrap();
        let md = markdown(&agg).unwrap();
        // Plain fair-paper (85 on both seeds) and, right after it, the reconstructed one
        // (95 and 97 → 96.00 ± 1.41), which is the best on validation.
        let plain = md.find("| 50% | fair-paper | ").expect("plain row");
        let recon = md
            .find("| 50% | fair-paper + recon | 50.00 ± 0.00 | 55.00 ± 0.00 | 75.00 ± 0.00 | 96.00 ± 1.41 | 95.00 ± 1.41 |")
            .unwrap_or_else(|| panic!("{md}"));
        assert!(
            plain < recon && recon < md.find("| 50% | uniform-l1 |").unwrap(),
            "{md}"
        );
        assert!(
            md.contains("50% / 1 ep → fair-paper + recon (96.00)"),
            "{md}"
        );
        assert!(
            md.contains("(8 batches of 128 from the fine-tuning set"),
            "{md}"
        );
        assert!(chart_svg(&agg).unwrap().contains("fair-paper + recon"));
        // Reconstructed rows with other settings (not just another seed) are refused.
        let mut other = with_recon(1, 0.97);
        for row in other["results"].as_array_mut().unwrap() {
            if reconstructed(row) {
                row["reconstruction"]["settings"]["batches"] = json!(16);
            }
        }
        let err = aggregate(&[with_recon(0, 0.95), other]).unwrap_err();
        assert!(
            format!("{err:#}").contains("reconstructed with other settings"),
            "{err:#}"
        );
        // Without reconstructed rows, no such sentence.
        let plain_only = markdown(&aggregate(&[fake_result(0, 0.0)]).unwrap()).unwrap();
        assert!(!plain_only.contains("+ recon"), "{plain_only}");
    }

    #[test]
    fn distilled_fine_tunes_get_their_own_columns() {
        let with_kd = |seed: u64, v: f64| {
            let mut r = fake_result(seed, 0.0);
            r["results"][0]["distilled"] = json!({"0.5": {"1": {"val": v, "test": v - 0.02}}});
            r
        };
        let agg = aggregate(&[with_kd(0, 0.88), with_kd(1, 0.90)]).unwrap();
        assert_eq!(agg["distilled"], json!(["1@0.5"]));
        let md = markdown(&agg).unwrap();
        assert!(
            md.contains("| FT 1 ep (val) | FT 1 ep (test) | FT 1 ep + KD 0.5 (val) | FT 1 ep + KD 0.5 (test) |"),
            "{md}"
        );
        // fair-paper: plain 85/85 → 85.00; distilled 88 and 90 → 89.00 ± 1.41 (test 87.00).
        assert!(
            md.contains("| 85.00 ± 0.00 | 84.00 ± 0.00 | 89.00 ± 1.41 | 87.00 ± 1.41 |"),
            "{md}"
        );
        // A method without a distilled run shows a dash there.
        assert!(
            md.contains("| 50% | uniform-l1 |") && md.contains("| — | — |"),
            "{md}"
        );
    }
}
