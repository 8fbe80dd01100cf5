//! [`Pruner`]: the whole pipeline as one builder — score once (or reuse stored scores), turn
//! every goal into a resolved plan, apply it, evaluate and fine-tune, measure latency,
//! export, and report. [`Pruner::run`] composes the stage functions of [`crate::stages`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use fair_analysis::{Goal, GroupRule, MacCost, Method, ScoreFile, SelectOptions, WeighBy};
use fair_data::{ImageSource, Transform};
use fair_fs::OutputGuard;
use fair_runtime::Model;
use fair_scoring::{Calibration, Progress, Registry, ScoringSettings};
use fair_surgery::FinetuneSpec;
use fair_threshold::CountOptions;
use fair_train::{BnRecalibration, Distillation, Reconstruction, TrainSettings};

use crate::error::PipelineError;
use crate::latency::{LatencyOptions, Spread, measure};
use crate::latency_correct::CorrectionOptions;
use crate::latency_table::{LatencySettings, TableSource, table_for};
use crate::preset::Preset;
use crate::report::{
    Accuracy, AfterSurgerySteps, CalibrationInfo, CriterionInfo, DistillationInfo,
    LatencyTargetResult, LayerResult, MeasuredLatency, ModelFigures, PruneReport, PruneResult,
    REPORT_SCHEMA_VERSION, Reduction, RuntimeLatency, ScoringInfo, SelectionSettings, StepStatus,
};
use crate::settings::{ConfigRun, PruneSettings};
use crate::stages::{self, OnData, Scored};
use crate::timing::LatencyTimer;
use crate::torchrun::{Distill, Torchrun};

/// The libtorch version fair-pruner is built against (tch 0.24).
pub const LIBTORCH_VERSION: &str = "2.11.0";

/// Where the test split comes from, for accuracy before and after.
struct Evaluation<'a> {
    test: &'a dyn ImageSource,
    transform: Transform,
}

/// Fine-tuning after surgery.
struct Finetune<'a> {
    train: &'a dyn ImageSource,
    transform: Transform,
    settings: TrainSettings,
}

/// A step after surgery that draws training batches (BatchNorm recalibration, reader
/// reconstruction): on an explicit training source, or (`None`) on the fine-tuning's.
struct AfterSurgery<'a, S> {
    source: Option<(&'a dyn ImageSource, Transform)>,
    settings: S,
    /// Set by a preset: skipped (not an error) when no training split is known, and drawn
    /// in batches of the fine-tuning batch size with the run's seed.
    optional: bool,
}

impl<'a, S> AfterSurgery<'a, S> {
    /// An explicit step (not a preset's), on `source` (augmentation switched off) or, with
    /// `None`, on the fine-tuning's training split.
    fn asked(source: Option<(&'a dyn ImageSource, &Transform)>, settings: S) -> Self {
        AfterSurgery {
            source: source.map(|(train, t)| (train, t.for_evaluation())),
            settings,
            optional: false,
        }
    }

    /// A preset's step: on the fine-tuning's training split when there is one.
    fn preset(settings: S) -> Self {
        AfterSurgery {
            source: None,
            settings,
            optional: true,
        }
    }
}

/// Whether a step after surgery runs: as the preset says, as asked, or not at all.
enum Step<'a, S> {
    /// The preset's step, if the preset has one.
    Preset,
    /// Asked for explicitly (or by resolved settings).
    Asked(AfterSurgery<'a, S>),
    /// Turned off (an opt-out when the preset has the step).
    Off,
}

/// The batch draw of a step after surgery, which a preset's step takes from the run: the
/// fine-tuning batch size (when there is fine-tuning) and the run's seed.
trait Drawn: Clone {
    fn set_draw(&mut self, batch_size: Option<usize>, seed: u64);
}

impl Drawn for BnRecalibration {
    fn set_draw(&mut self, batch_size: Option<usize>, seed: u64) {
        self.batch_size = batch_size.unwrap_or(self.batch_size);
        self.seed = seed;
    }
}

impl Drawn for Reconstruction {
    fn set_draw(&mut self, batch_size: Option<usize>, seed: u64) {
        self.batch_size = batch_size.unwrap_or(self.batch_size);
        self.seed = seed;
    }
}

/// What a run returns: the report, the pruned models (one per goal, in order) and the scores.
pub struct PruneOutcome {
    /// The report (also written as `report.json` when there is an output directory).
    pub report: PruneReport,
    /// One pruned (and, if asked, fine-tuned) model per goal.
    pub models: Vec<Model>,
    /// The scores every goal was thresholded from.
    pub scores: ScoreFile,
}

/// The prune pipeline as a builder. Only the model, calibration data (for data-driven
/// criteria), at least one goal and a training split for the preset's steps after surgery
/// (or an explicit opt-out of them) are required; everything else has the CLI's defaults:
/// criteria `u`, `r`, `l1`, `group-l1`; ToD with remove-by `u`, protect-by `r`; the
/// [`Preset::default`]'s settings (group rule, MAC weight, exact targets, units ranked by
/// `group-l1`, reader reconstruction and BatchNorm recalibration on the training split of
/// [`Pruner::finetune`] or [`Pruner::train_split`]); no evaluation, fine-tuning, latency
/// or export unless asked for. Builder calls work in any order. [`Pruner::from_config`]
/// makes the CLI's run of a configuration.
///
/// ```no_run
/// use fair_pipeline::{Goal, GroupRule, Pruner};
/// # fn run(model: &fair_runtime::Model, calibration: &fair_scoring::Calibration) -> Result<(), fair_pipeline::PipelineError> {
/// let outcome = Pruner::new(model)
///     .no_reconstruction() // no training split: the preset's steps are turned off
///     .no_recalibration()
///     .calibration(calibration)
///     .goal(Goal::Macs(0.5))
///     .rule(GroupRule::Intersection)
///     .out("pruned")
///     .run()?;
/// println!("{:.1}% of MACs removed", 100.0 * outcome.report.results[0].achieved.macs);
/// # Ok(()) }
/// ```
pub struct Pruner<'a> {
    model: &'a Model,
    calibration: Option<&'a Calibration>,
    registry: Registry,
    /// Every setting below left `None` comes from the preset (or the defaults) when the
    /// pipeline runs, so builder calls work in any order.
    criteria: Option<Vec<String>>,
    settings: Option<ScoringSettings>,
    remove_by: Option<String>,
    protect_by: Option<String>,
    rank_by: Option<String>,
    goals: Vec<Goal>,
    method: Method,
    rule: Option<GroupRule>,
    mac_weight: Option<f64>,
    mac_cost: Option<MacCost>,
    weigh_by: Option<WeighBy>,
    exact_target: Option<bool>,
    counting: CountOptions,
    protected: Vec<String>,
    evaluation: Option<Evaluation<'a>>,
    finetune: Option<Finetune<'a>>,
    /// The training split of the steps after surgery when neither their own nor the
    /// fine-tuning's is given.
    train_split: Option<(&'a dyn ImageSource, Transform)>,
    torchrun: Option<Torchrun<'a>>,
    recalibration: Step<'a, BnRecalibration>,
    reconstruction: Step<'a, Reconstruction>,
    distill: Option<Distillation>,
    preset: Preset,
    latency: Option<LatencyOptions>,
    /// How a latency target's table is obtained (default settings when a goal is a latency
    /// target and none are given); for other goals, the runtime the pruned models are timed
    /// on (none: not timed on one).
    latency_target: Option<LatencySettings>,
    out: Option<PathBuf>,
    guard: OutputGuard,
    stored: Option<ScoreFile>,
    progress: bool,
    weights: Option<String>,
    seed: u64,
}

impl<'a> Pruner<'a> {
    /// A pipeline for `model` (left unchanged), starting from the default preset
    /// ([`Preset::FairPruner`], see [`Pruner::preset`]).
    pub fn new(model: &'a Model) -> Self {
        Pruner {
            model,
            calibration: None,
            registry: Registry::default(),
            criteria: None,
            settings: None,
            remove_by: None,
            protect_by: None,
            rank_by: None,
            goals: Vec::new(),
            method: Method::Tod,
            rule: None,
            mac_weight: None,
            mac_cost: None,
            weigh_by: None,
            exact_target: None,
            counting: CountOptions::default(),
            protected: Vec::new(),
            evaluation: None,
            finetune: None,
            train_split: None,
            torchrun: None,
            recalibration: Step::Preset,
            reconstruction: Step::Preset,
            distill: None,
            preset: Preset::default(),
            latency: None,
            latency_target: None,
            out: None,
            guard: OutputGuard::new(),
            stored: None,
            progress: false,
            weights: None,
            seed: 0,
        }
    }

    /// Applies resolved settings ([`crate::RawSettings::resolve`]): the preset, goals,
    /// method, criteria and signals, scoring and selection settings, the steps after surgery
    /// (each on the training split of [`Pruner::finetune`] or [`Pruner::train_split`]),
    /// distillation, output directory and seed. Everything except the data and the
    /// fine-tuning's training split, which [`Pruner::finetune`] (or [`Pruner::torchrun`])
    /// gives with `settings.finetune`. [`Pruner::from_config`] does all of it. These parts
    /// replace what earlier builder calls set; later calls change them again.
    pub fn settings(mut self, settings: &PruneSettings) -> Self {
        let s = settings;
        self.preset = s.preset;
        self.goals = s.goals.clone();
        self.method = s.method;
        self.criteria = Some(s.criteria.clone());
        self.settings = Some(s.scoring.clone());
        self.remove_by = Some(s.remove_by.clone());
        self.protect_by = Some(s.protect_by.clone());
        self.rank_by = Some(s.rank_by.clone());
        self.rule = Some(s.select.rule);
        self.mac_weight = Some(s.select.mac_weight);
        self.mac_cost = Some(s.select.mac_cost);
        self.weigh_by = Some(s.select.weigh_by);
        self.exact_target = Some(s.select.exact_target);
        self.counting = s.select.counting;
        self.protected = s.select.protected.clone();
        self.reconstruction = match &s.reconstruction {
            Some(r) => Step::Asked(AfterSurgery::asked(None, r.clone())),
            None => Step::Off,
        };
        self.recalibration = match &s.recalibration {
            Some(r) => Step::Asked(AfterSurgery::asked(None, r.clone())),
            None => Step::Off,
        };
        self.distill = s.distillation;
        self.latency_target = s.latency.clone();
        self.out = Some(s.out.clone());
        self.seed = s.draw.seed;
        self
    }

    /// The pipeline `fair-pruner prune --config FILE` runs on `run` (see [`ConfigRun`]): its
    /// resolved settings ([`Pruner::settings`]), calibration samples, evaluation on the test
    /// split, the in-process fine-tuning on the training split (whose split also serves the
    /// steps after surgery, even with 0 epochs), latency, the output directory and its
    /// guard, and the weights file in the report. Builder calls after it change any part.
    /// (Not run here: it needs trained weights; `examples/from_config.rs`, the README's
    /// version of it, runs in `cargo xtask test` against `fair-pruner prune`.)
    ///
    /// ```no_run
    /// use fair_pipeline::{ConfigRun, Pruner, RunConfig};
    /// let path = std::path::Path::new("configs/fashion-vgg.toml");
    /// let config = RunConfig::load(path)?;
    /// let run = ConfigRun::load(&config, Some(path), tch::Device::Cpu)?;
    /// let outcome = Pruner::from_config(&run).run()?;
    /// # Ok::<(), fair_pipeline::PipelineError>(())
    /// ```
    pub fn from_config(run: &'a ConfigRun) -> Self {
        Self::configured(run).finetune(
            &run.train,
            &run.config.transform,
            run.settings.finetune.clone(),
        )
    }

    /// [`Pruner::from_config`] with the fine-tuning on PyTorch DDP (`torchrun`, built with
    /// `run.settings.finetune`) instead of in-process; the training split still serves the
    /// steps after surgery ([`Pruner::train_split`]).
    pub fn from_config_with_torchrun(run: &'a ConfigRun, torchrun: Torchrun<'a>) -> Self {
        Self::configured(run)
            .train_split(&run.train, &run.config.transform)
            .torchrun(torchrun)
    }

    /// Everything of [`Pruner::from_config`] but the fine-tuning.
    fn configured(run: &'a ConfigRun) -> Self {
        let mut p = Pruner::new(&run.model)
            .settings(&run.settings)
            .calibration(&run.calibration)
            .evaluate_on(&run.test, &run.config.transform)
            .latency(LatencyOptions::default())
            .inputs(run.config.output_guard(run.config_path.as_deref()));
        if let Some(w) = &run.config.model.weights {
            p = p.weights_file(w);
        }
        p
    }

    /// Calibration data for the data-driven criteria (from the training split).
    pub fn calibration(mut self, data: &'a Calibration) -> Self {
        self.calibration = Some(data);
        self
    }

    /// The criterion registry (default: the built-ins). Register your own criteria in it to
    /// use them by name in [`Pruner::criteria`], [`Pruner::remove_by`], ...
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Criteria to score (default [`crate::DEFAULT_CRITERIA`]: `u`, `r`, `l1`,
    /// `group-l1`); the remove-by, protect-by and rank-by criteria are always added.
    pub fn criteria<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.criteria = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Settings of the built-in criteria (analysis point, R mode, projections, ...), in
    /// place of the preset's (default: the preset's, with
    /// [`ScoringSettings::default`]'s calibration draw, seeds and memory bound).
    pub fn scoring(mut self, settings: ScoringSettings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// ToD's removal signal (default `u`): low scores are proposed for removal. Unless
    /// [`Pruner::rank_by`] is set, units are then also ranked by it (not by the preset's
    /// ranking).
    pub fn remove_by(mut self, criterion: &str) -> Self {
        self.remove_by = Some(criterion.to_owned());
        self
    }

    /// ToD's protection signal (default `r`): high scores are protected.
    pub fn protect_by(mut self, criterion: &str) -> Self {
        self.protect_by = Some(criterion.to_owned());
        self
    }

    /// The criterion that orders the units each layer removes (default:
    /// [`Preset::rank_by`]: the remove-by one when [`Pruner::remove_by`] was called; else
    /// the preset's: `group-l1` for [`Preset::FairPruner`], the remove-by one (`u`) for
    /// [`Preset::Paper`]).
    pub fn rank_by(mut self, criterion: &str) -> Self {
        self.rank_by = Some(criterion.to_owned());
        self
    }

    /// Adds a goal (an α or a target); each gives one pruned model.
    pub fn goal(mut self, goal: Goal) -> Self {
        self.goals.push(goal);
        self
    }

    /// Adds several goals.
    pub fn goals(mut self, goals: impl IntoIterator<Item = Goal>) -> Self {
        self.goals.extend(goals);
        self
    }

    /// ToD (default) or uniform counts.
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// How coupled layers settle on one set of units (default: the preset's; `summed` for the
    /// `fair-pruner` preset, the authors' `package` rule for `paper`).
    pub fn rule(mut self, rule: GroupRule) -> Self {
        self.rule = Some(rule);
        self
    }

    /// MAC-aware counts: each layer's ToD curve is weighted by (its MACs per unit relative
    /// to the costliest layer's)^γ (0: counts blind to MACs, as the paper); see
    /// [`fair_analysis::SelectOptions::mac_weight`].
    pub fn mac_weight(mut self, gamma: f64) -> Self {
        self.mac_weight = Some(gamma);
        self
    }

    /// What the MAC weight measures each layer's cost by (default: the preset's); see
    /// [`fair_analysis::MacCost`].
    pub fn mac_cost(mut self, cost: MacCost) -> Self {
        self.mac_cost = Some(cost);
        self
    }

    /// What the MAC weight's costs count under a latency target (default
    /// [`WeighBy::Latency`]: the latency each layer's units save on the table); see
    /// [`fair_analysis::SelectOptions::weigh_by`].
    pub fn weigh_by(mut self, by: WeighBy) -> Self {
        self.weigh_by = Some(by);
        self
    }

    /// Whether a MACs or parameters target lands on the target by blending the ToD counts
    /// at the first α past it with those at the tolerance below (default: the preset's; on
    /// for `fair-pruner`, off for `paper`); see
    /// [`fair_analysis::SelectOptions::exact_target`].
    pub fn exact_target(mut self, on: bool) -> Self {
        self.exact_target = Some(on);
        self
    }

    /// Starts from `preset` (default [`Preset::default`]): every part of it that no other
    /// builder call sets — scoring settings, group rule, MAC weight and cost, exact targets,
    /// ranking, reader reconstruction and BatchNorm recalibration — comes from it when the
    /// pipeline runs, so builder calls work in any order. A preset's reconstruction and
    /// recalibration need a training split ([`Pruner::finetune`] or
    /// [`Pruner::train_split`]): without one, [`Pruner::validate`] fails unless they are
    /// turned off ([`Pruner::no_reconstruction`], [`Pruner::no_recalibration`]), an opt-out
    /// the report records ([`crate::PruneReport::after_surgery`]).
    pub fn preset(mut self, preset: Preset) -> Self {
        self.preset = preset;
        self
    }

    /// Minimum kept units and rounding of each layer's count.
    pub fn counting(mut self, counting: CountOptions) -> Self {
        self.counting = counting;
        self
    }

    /// Layers never to prune (besides the output layer).
    pub fn protect<S: Into<String>>(mut self, layers: impl IntoIterator<Item = S>) -> Self {
        self.protected = layers.into_iter().map(Into::into).collect();
        self
    }

    /// Evaluates top-1 on `test` (transformed by `transform`, augmentation off) before and
    /// after pruning.
    pub fn evaluate_on(mut self, test: &'a dyn ImageSource, transform: &Transform) -> Self {
        self.evaluation = Some(Evaluation {
            test,
            transform: transform.for_evaluation(),
        });
        self
    }

    /// Fine-tunes every pruned model on `train` with `settings` for `settings.epochs`
    /// epochs. With 0 epochs nothing is fine-tuned and the settings are not checked
    /// ([`TrainSettings::check`] refuses 0 epochs), but `train` is still the training split of
    /// the steps after surgery, and a preset's steps draw batches of `settings.batch_size`
    /// (see [`Pruner::train_split`]).
    pub fn finetune(
        mut self,
        train: &'a dyn ImageSource,
        transform: &Transform,
        settings: TrainSettings,
    ) -> Self {
        self.finetune = Some(Finetune {
            train,
            transform: transform.clone(),
            settings,
        });
        self
    }

    /// The training split (transformed by `transform`, augmentation off) of the steps after
    /// surgery — reader reconstruction and BatchNorm recalibration — when
    /// [`Pruner::finetune`] gives none, e.g. with [`Pruner::torchrun`]. A preset's steps draw
    /// batches of the fine-tuning batch size when [`Pruner::finetune`] is set, else of
    /// their own default size, seeded with [`Pruner::seed`].
    pub fn train_split(mut self, train: &'a dyn ImageSource, transform: &Transform) -> Self {
        self.train_split = Some((train, transform.for_evaluation()));
        self
    }

    /// Fine-tunes every pruned model on PyTorch DDP instead: its export's `finetune.py` runs
    /// under torchrun in the export directory, and the weights it writes are loaded back,
    /// evaluated and exported (see [`Torchrun`]). Instead of [`Pruner::finetune`]; needs
    /// [`Pruner::out`].
    pub fn torchrun(mut self, torchrun: Torchrun<'a>) -> Self {
        self.torchrun = Some(torchrun);
        self
    }

    /// Recalibrates every pruned model's BatchNorm running statistics right after surgery —
    /// before the one-shot evaluation (so `one_shot` in the report is measured after it) and
    /// before any fine-tuning — on the training split given to [`Pruner::finetune`] (with its
    /// transform, augmentation off); see [`fair_train::recalibrate_batch_norm`]. Surgery
    /// removes channels feeding every BatchNorm downstream, so the statistics the unpruned
    /// model recorded no longer describe their inputs. Without [`Pruner::finetune`] (e.g.
    /// with [`Pruner::torchrun`]) use [`Pruner::recalibrate_on`]; [`Pruner::validate`] fails
    /// when no training split is known.
    pub fn recalibrate(mut self, settings: BnRecalibration) -> Self {
        self.recalibration = Step::Asked(AfterSurgery::asked(None, settings));
        self
    }

    /// [`Pruner::recalibrate`] on `train` (transformed by `transform`, augmentation off).
    pub fn recalibrate_on(
        mut self,
        train: &'a dyn ImageSource,
        transform: &Transform,
        settings: BnRecalibration,
    ) -> Self {
        self.recalibration = Step::Asked(AfterSurgery::asked(Some((train, transform)), settings));
        self
    }

    /// No BatchNorm recalibration (turns off a preset's: an opt-out the report records).
    pub fn no_recalibration(mut self) -> Self {
        self.recalibration = Step::Off;
        self
    }

    /// Refits every convolution and linear layer that lost input channels right after
    /// surgery — before the BatchNorm recalibration, the one-shot evaluation and any
    /// fine-tuning — by least squares against the unpruned model's output, on the training
    /// split given to [`Pruner::finetune`] (with its transform, augmentation off); see
    /// [`fair_train::reconstruct_readers`]. Without [`Pruner::finetune`] use
    /// [`Pruner::reconstruct_on`]; [`Pruner::validate`] fails when no training split is known.
    pub fn reconstruct(mut self, settings: Reconstruction) -> Self {
        self.reconstruction = Step::Asked(AfterSurgery::asked(None, settings));
        self
    }

    /// [`Pruner::reconstruct`] on `train` (transformed by `transform`, augmentation off).
    pub fn reconstruct_on(
        mut self,
        train: &'a dyn ImageSource,
        transform: &Transform,
        settings: Reconstruction,
    ) -> Self {
        self.reconstruction = Step::Asked(AfterSurgery::asked(Some((train, transform)), settings));
        self
    }

    /// No reader reconstruction (turns off a preset's: an opt-out the report records).
    pub fn no_reconstruction(mut self) -> Self {
        self.reconstruction = Step::Off;
        self
    }

    /// Fine-tuning (either engine) distils from the unpruned model: loss = (1 − w)·CE +
    /// w·T²·KL(softmax(teacher/T) ‖ softmax(student/T)), see [`fair_train::Distillation`].
    /// In-process it runs [`fair_train::train_with_teacher`]; on torchrun it replaces the
    /// [`Torchrun`]'s own distillation setting. Recorded in the report when fine-tuning runs.
    pub fn distill(mut self, distillation: Distillation) -> Self {
        self.distill = Some(distillation);
        self
    }

    /// Measures forward latency of every model, interleaved.
    pub fn latency(mut self, options: LatencyOptions) -> Self {
        self.latency = Some(options);
        self
    }

    /// How the latency table of a latency target ([`Goal::Latency`]) is obtained — a given
    /// file, the one cached in the output directory, or one measured now — and what the
    /// pruned models are timed with ([`crate::table_for`]). Without it a latency target uses
    /// [`LatencySettings::default`]. With goals other than latency targets, the runtime,
    /// batch and threads each pruned model is timed on against the unpruned model
    /// ([`crate::RuntimeLatency`] in the report; no table, no correction): latency must be
    /// measured ([`Pruner::latency`]; without it [`Pruner::validate`] refuses, unless
    /// `latency-on` came from a config file), and a table or a tolerance other than the
    /// default is refused. [`crate::RawSettings::resolve`] gives it when `latency-on` or a
    /// latency target is set.
    pub fn latency_target(mut self, settings: LatencySettings) -> Self {
        self.latency_target = Some(settings);
        self
    }

    /// No latency measurement (turns off [`Pruner::from_config`]'s). Without a latency
    /// target, refused with a `latency-on` of [`Pruner::latency_target`], except one from a
    /// config file (`[prune] latency_on`), whose timing is then skipped with a note.
    pub fn no_latency(mut self) -> Self {
        self.latency = None;
        self
    }

    /// Writes everything into the directory `dir`: `scores.json`, `report.json`,
    /// `report.md` with SVG charts, and one export per goal (`<label>/model.safetensors`,
    /// `model.toml`, `model.py`, `plan.json`). The directory is built under a temporary name
    /// and swapped into place at the end: it is always completely old or completely new.
    /// Stored scores in it are reused when they fit.
    pub fn out(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out = Some(dir.into());
        self
    }

    /// Records an input file of the run (calibration, config, ...): the output directory
    /// may not be or contain it. `what` names it in errors (e.g. `--calibration`). The
    /// model's weights file is [`Pruner::weights_file`].
    pub fn input(mut self, what: &str, path: &Path) -> Self {
        self.guard.input(what, path);
        self
    }

    /// The file the model's weights came from, recorded in the report (`weights`). Like
    /// every input file, guard it with [`Pruner::input`] (or [`Pruner::inputs`]).
    pub fn weights_file(mut self, path: &Path) -> Self {
        self.weights = Some(path.display().to_string());
        self
    }

    /// Adds every input of `guard` (e.g. [`crate::RunConfig::output_guard`]: the config, the
    /// model files, the data directory and the dataset cache) to the paths the output
    /// directory must keep off.
    pub fn inputs(mut self, guard: OutputGuard) -> Self {
        self.guard.merge(guard);
        self
    }

    /// Offers stored scores for reuse (used only if they fit the model, data and settings).
    pub fn reuse_scores(mut self, scores: ScoreFile) -> Self {
        self.stored = Some(scores);
        self
    }

    /// Shows progress bars and prints progress lines on stderr.
    pub fn progress(mut self, show: bool) -> Self {
        self.progress = show;
        self
    }

    /// The run's seed: recorded in the report, and the seed of a preset's steps after
    /// surgery (their random batches). The calibration draw, the scoring and the
    /// fine-tuning take theirs from their own settings ([`crate::DrawSettings`],
    /// [`ScoringSettings`], [`TrainSettings`]); [`Pruner::settings`] sets them all to one.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    fn remove_signal(&self) -> &str {
        self.remove_by
            .as_deref()
            .unwrap_or(crate::settings::DEFAULT_REMOVE_BY)
    }

    fn protect_signal(&self) -> &str {
        self.protect_by
            .as_deref()
            .unwrap_or(crate::settings::DEFAULT_PROTECT_BY)
    }

    fn rank(&self) -> String {
        self.preset
            .rank_by(self.rank_by.as_deref(), self.remove_by.as_deref())
    }

    /// The scoring settings: the explicit ones, else the preset's with the default draw.
    fn scoring_settings(&self) -> ScoringSettings {
        if let Some(s) = &self.settings {
            return s.clone();
        }
        let d = ScoringSettings::default();
        let mut s = self.preset.settings(d.r.batch_size).scoring;
        s.u.samples_per_class = d.u.samples_per_class;
        s.u.max_classes = d.u.max_classes;
        s.u.seed = d.u.seed;
        s.u.max_memory = d.u.max_memory;
        s.u.engine = d.u.engine;
        s.r.seed = d.r.seed;
        s.seed = d.seed;
        s
    }

    /// The selection options: the explicit ones over the preset's.
    fn select_options(&self) -> SelectOptions {
        let p = self.preset.select_options();
        SelectOptions {
            rule: self.rule.unwrap_or(p.rule),
            mac_weight: self.mac_weight.unwrap_or(p.mac_weight),
            mac_cost: self.mac_cost.unwrap_or(p.mac_cost),
            weigh_by: self.weigh_by.unwrap_or(p.weigh_by),
            exact_target: self.exact_target.unwrap_or(p.exact_target),
            counting: self.counting,
            protected: self.protected.clone(),
            grouped: p.grouped,
        }
    }

    /// A step after surgery as configured: the preset's, the asked one, or none.
    fn step<S: Clone>(&self, step: &Step<'a, S>, preset: Option<S>) -> Option<AfterSurgery<'a, S>> {
        match step {
            Step::Preset => preset.map(AfterSurgery::preset),
            Step::Asked(a) => Some(AfterSurgery {
                source: a.source.clone(),
                settings: a.settings.clone(),
                optional: a.optional,
            }),
            Step::Off => None,
        }
    }

    fn reconstruction_step(&self) -> Option<AfterSurgery<'a, Reconstruction>> {
        let preset = self.preset.settings(1).reconstruction;
        self.step(&self.reconstruction, preset)
    }

    fn recalibration_step(&self) -> Option<AfterSurgery<'a, BnRecalibration>> {
        let preset = self.preset.settings(1).recalibration;
        self.step(&self.recalibration, preset)
    }

    /// What becomes of a step after surgery: it runs, it is off (neither the preset nor the
    /// settings ask for it), or the preset's step was turned off.
    fn status<S>(step: &Step<'a, S>, preset_has: bool) -> StepStatus {
        match step {
            Step::Asked(_) => StepStatus::Ran,
            Step::Preset if preset_has => StepStatus::Ran,
            Step::Off if preset_has => StepStatus::OptedOut,
            _ => StepStatus::Off,
        }
    }

    fn after_surgery(&self) -> AfterSurgerySteps {
        let p = self.preset.settings(1);
        AfterSurgerySteps {
            reconstruction: Self::status(&self.reconstruction, p.reconstruction.is_some()),
            recalibration: Self::status(&self.recalibration, p.recalibration.is_some()),
        }
    }

    /// Every criterion to compute: the requested ones plus remove-by, protect-by, rank-by.
    fn criterion_names(&self) -> Vec<String> {
        let mut names = match &self.criteria {
            Some(c) => c.clone(),
            None => crate::settings::DEFAULT_CRITERIA
                .map(str::to_owned)
                .to_vec(),
        };
        let rank = self.rank();
        for n in [self.remove_signal(), self.protect_signal(), rank.as_str()] {
            if !names.iter().any(|c| c == n) {
                names.push(n.to_owned());
            }
        }
        names
    }

    /// Checks everything that can be checked before any expensive work: goals in range and
    /// distinct, criteria known (and data for those that need it), calibration fitting the
    /// model, counting options, protected layers, fine-tuning, recalibration and distillation
    /// settings (recalibration needs a training split), and the output directory (not an
    /// input, not a directory fair-pruner did not write).
    pub fn validate(&self) -> Result<(), PipelineError> {
        if self.goals.is_empty() {
            return Err(PipelineError::invalid(
                "goal",
                "no pruning goal: give an α (`alpha`, `alpha-sweep`) or a target (`target-macs`, `target-params`, `target-latency`)",
            ));
        }
        let mut labels = std::collections::HashSet::new();
        for g in &self.goals {
            g.check()
                .map_err(|e| PipelineError::invalid(g.flag(), e.to_string()))?;
            if self.method == Method::Uniform && matches!(g, Goal::Alpha(_)) {
                return Err(PipelineError::invalid(
                    "uniform",
                    "uniform pruning has no α: give `target-macs`, `target-params` or `target-latency`",
                ));
            }
            if !labels.insert(g.label()) {
                // Several α come from a sweep: name the flag the user wrote.
                let sweep = matches!(g, Goal::Alpha(_))
                    && self
                        .goals
                        .iter()
                        .filter(|o| matches!(o, Goal::Alpha(_)))
                        .count()
                        > 1;
                return Err(PipelineError::invalid(
                    if sweep { "alpha-sweep" } else { g.flag() },
                    format!("the goal {g} is given twice"),
                ));
            }
        }
        let criteria = self.criterion_names();
        for name in &criteria {
            crate::settings::check_known("criteria", name, &self.registry)?;
        }
        if self.counting.min_keep == 0 {
            return Err(PipelineError::invalid(
                "min-keep",
                "every layer must keep at least 1 unit",
            ));
        }
        if self.counting.round_to == 0 {
            return Err(PipelineError::invalid(
                "round-to",
                "must be at least 1 (1: no rounding)",
            ));
        }
        let graph = self.model.graph();
        for p in &self.protected {
            if !graph.prunable_layers().contains(&p.as_str()) {
                return Err(PipelineError::invalid(
                    "protect",
                    format!("'{p}' is not a prunable layer of '{}'", graph.name()),
                ));
            }
        }
        let needs_data = criteria
            .iter()
            .map(|n| self.registry.create(n, &self.scoring_settings()))
            .collect::<Result<Vec<_>, _>>()?
            .iter()
            .any(|c| c.needs_data());
        match self.calibration {
            Some(c) => {
                let classes = graph.shape_at(graph.nodes().len() - 1)[0];
                c.check_fits(graph.shape_at(0), classes)?;
            }
            None if needs_data => {
                return Err(PipelineError::invalid(
                    "calibration",
                    format!("the criteria {} need calibration data", criteria.join(", ")),
                ));
            }
            None => {}
        }
        if let Some(f) = &self.finetune
            && f.settings.epochs > 0
        {
            f.settings.check()?;
        }
        crate::settings::check_mac_weight(self.select_options().mac_weight)?;
        let recalibration = self.recalibration_step();
        if let Some(r) = &recalibration {
            r.settings.check()?;
        }
        self.check_source(
            &recalibration,
            "bn-recalibrate",
            "BatchNorm recalibration",
            "recalibrate_on",
            "no_recalibration",
        )?;
        let reconstruction = self.reconstruction_step();
        if let Some(r) = &reconstruction {
            r.settings.check()?;
        }
        self.check_source(
            &reconstruction,
            "reconstruct",
            "reader reconstruction",
            "reconstruct_on",
            "no_reconstruction",
        )?;
        if let Some(d) = &self.distill {
            d.check()?;
        }
        if let Some(t) = &self.torchrun {
            t.check(self.out.is_some())?;
            if t.epochs() > 0
                && self
                    .finetune
                    .as_ref()
                    .is_some_and(|f| f.settings.epochs > 0)
            {
                return Err(PipelineError::invalid(
                    "finetune-with",
                    "fine-tuning is set up both in-process (finetune) and on torchrun; choose one",
                ));
            }
        }
        self.check_latency()?;
        if let Some(out) = &self.out {
            self.guard.check_dir("`out`", out)?;
        }
        Ok(())
    }

    /// Whether the run skips timing the pruned models on `latency-on` (no latency target)
    /// because [`Pruner::no_latency`] turned latency off and `latency-on` came from a config
    /// file (`[prune] latency_on`, which a flag cannot unset): `--no-latency` wins then.
    fn skips_runtime_timing(&self) -> bool {
        self.latency.is_none()
            && !self.goals.iter().any(|g| matches!(g, Goal::Latency(_)))
            && self
                .latency_target
                .as_ref()
                .is_some_and(|s| s.from_config.iter().any(|n| n == "latency-on"))
    }

    /// The latency settings against the goals and the model ([`Pruner::validate`]).
    /// Without a latency target, latency settings time the pruned models on `latency-on`:
    /// that needs latency measurement ([`Pruner::no_latency`] is refused, unless
    /// `latency-on` came from a config file: [`Pruner::skips_runtime_timing`]), and a table
    /// or a tolerance of its own is refused (both belong to a latency target). The models
    /// are timed on the runtime's device whatever the model's (`libtorch-cpu` copies a model
    /// on CUDA to the CPU, `cuda` one on the CPU to the GPU).
    fn check_latency(&self) -> Result<(), PipelineError> {
        let Some(s) = &self.latency_target else {
            return Ok(());
        };
        let latency_goal = self.goals.iter().any(|g| matches!(g, Goal::Latency(_)));
        if !latency_goal {
            const ONLY: &str = "applies to a latency target only: give `target-latency` too (`latency-on` without it times the pruned models, with no table or correction)";
            if s.table.is_some() {
                return Err(PipelineError::invalid(&s.setting("latency-table"), ONLY));
            }
            if s.tolerance != crate::DEFAULT_LATENCY_TOLERANCE {
                return Err(PipelineError::invalid("latency-tolerance", ONLY));
            }
            if self.latency.is_none() && !self.skips_runtime_timing() {
                return Err(PipelineError::invalid(
                    "no-latency",
                    format!(
                        "cannot be used with {} without `target-latency` (it times the pruned models on that runtime): give one of them",
                        match s.setting("latency-on") {
                            n if n.starts_with('[') => n,
                            n => format!("`{n}`"),
                        }
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Runs the pipeline (see the type's documentation).
    pub fn run(mut self) -> Result<PruneOutcome, PipelineError> {
        if let Some(d) = self.distill {
            self.torchrun = self.torchrun.take().map(|t| {
                t.distill(Distill {
                    temperature: d.temperature,
                    weight: d.weight,
                })
            });
        }
        self.validate()?;
        if self.skips_runtime_timing()
            && let Some(s) = &self.latency_target
        {
            eprintln!(
                "note: no latency measurement (no-latency): the pruned models are not timed on {} ([prune] latency_on)",
                s.runtime
            );
        }
        // Claim the output directory before any work, so a foreign directory fails fast.
        let staged = match &self.out {
            Some(out) => Some(self.guard.dir("`out`", out)?.stage()?),
            None => None,
        };
        // The interpreter torchrun needs is checked now, not after scoring.
        let torch_version = match &self.torchrun {
            Some(t) if t.epochs() > 0 => Some(t.probe()?),
            _ => None,
        };
        let model = self.model;
        let graph = model.graph();
        let say = |msg: String| {
            if self.progress {
                eprintln!("{msg}");
            }
        };

        // A latency target timed on ONNX Runtime, or other goals timed there (`latency-on`):
        // the model is loaded there now, so a graph it cannot run (or a missing
        // onnxruntime) fails before scoring, not after.
        let latency_goal = self.goals.iter().any(|g| matches!(g, Goal::Latency(_)));
        if let Some(s) = &self.latency_target
            && (if latency_goal {
                s.table.is_none() || self.latency.is_some()
            } else {
                self.latency.is_some()
            })
            && let Ok(Some(timer)) = s.run_timer()
            && timer.runtime().through_python()
        {
            timer.check_model(model, s.batch(), s.threads())?;
        }

        let before_accuracy = self.evaluate(model)?;

        // Score once; reuse stored scores (or some of them) with the same provenance.
        let stored = self.stored.clone().or_else(|| {
            let path = self.out.as_ref()?.join("scores.json");
            ScoreFile::load(&path).ok()
        });
        let Scored {
            mut scores,
            reused,
            partly_reused,
            data_digest,
        } = stages::score(
            model,
            self.calibration,
            &self.registry,
            &self.criterion_names(),
            &self.scoring_settings(),
            stored,
            Progress {
                enabled: self.progress,
            },
        )?;
        // So that `fair-pruner ratios` on the written scores counts with the same preset.
        scores.provenance.preset = Some(self.preset.name().to_owned());

        // Uniform counts read only the ranking criterion.
        let select = self.select_options();
        let rank = self.rank();
        let selector = stages::selector(
            &scores,
            self.method,
            self.remove_signal(),
            self.protect_signal(),
            &rank,
            select.clone(),
        )?;
        // A latency target's table: given, cached in the output directory, or measured now.
        let latency_table = if latency_goal {
            let settings = self.latency_target.clone().unwrap_or_default();
            if let Some(line) = settings.announcement() {
                say(line);
            }
            let (table, source) = table_for(
                &settings,
                graph,
                select.grouped,
                &select.protected,
                &scores.provenance.model_digest,
                self.out.as_deref(),
                &mut |line| say(line),
            )?;
            if table.noisy {
                eprintln!(
                    "warning: the latency table's measurements varied by more than {:.0}% of their median; the machine was busy, so its latency target is approximate (measure again on an idle machine)",
                    LatencyOptions::default().noisy_above * 100.0
                );
            }
            let file = match &source {
                TableSource::Given(p) => p.display().to_string(),
                _ => settings.cache_name(),
            };
            if let (Some(dir), TableSource::Measured | TableSource::Cached(_)) = (&staged, &source)
            {
                table.save(&dir.path().join(&file))?;
            }
            // What the pruned models are timed with: the table's runtime when fair-pruner
            // times on it (checked before scoring), libtorch CPU otherwise.
            let timer = settings
                .timer_for(&table)
                .unwrap_or_else(LatencyTimer::libtorch_cpu);
            Some((table, source, file, timer))
        } else {
            None
        };
        let selector = match &latency_table {
            Some((table, ..)) => selector.with_latency(std::sync::Arc::new(table.clone()))?,
            None => selector,
        };
        let steps = stages::AfterSurgery {
            reconstruction: self.prepared(&self.reconstruction_step()),
            recalibration: self.prepared(&self.recalibration_step()),
        };
        let mut results = Vec::new();
        let mut models = Vec::new();
        // On a runtime timed through Python (ONNX Runtime, eager PyTorch), one timing
        // session (one helper process, the unpruned model exported once) serves every correction round and the final measurement. Not on
        // libtorch, where a session holds the thread count that the steps between would
        // run with.
        let mut shared: Option<crate::timing::Session> = None;
        let shared_session = |shared: &mut Option<crate::timing::Session>,
                              timer: &crate::LatencyTimer,
                              (batch, threads): (usize, usize),
                              options: &crate::LatencyOptions| {
            if !timer.runtime().through_python() {
                return Ok::<_, PipelineError>(false);
            }
            if shared.is_none() {
                *shared = Some(timer.session(batch, threads, options)?);
            }
            Ok(true)
        };
        for &goal in &self.goals {
            let label = goal.label();
            let announce = self.progress.then_some(label.as_str());
            let start = Instant::now();
            let first = stages::select(&selector, goal, self.method);
            let threshold_ms = start.elapsed().as_secs_f64() * 1e3;
            // A latency target on a table of a runtime timed here (every runtime
            // `latency-on` names) is corrected on measurements of the candidates; a table
            // of another runtime (a user's device) cannot be.
            let mut correction = None;
            let (selection, mut pruned_model) = match (goal, &latency_table, &self.latency) {
                (Goal::Latency(target), Some((table, _, _, timer)), Some(options))
                    if table.key.runtime == timer.runtime().name() =>
                {
                    // A target beyond what the table predicts is not an error here: the
                    // table only guides, and the correction starts at the most it reaches
                    // and measures what that candidate removes.
                    if let Err(e) = first
                        && !matches!(
                            e,
                            PipelineError::Analysis(
                                fair_analysis::AnalysisError::LatencyUnreachable { .. }
                            )
                        )
                    {
                        return Err(e);
                    }
                    let tolerance = self
                        .latency_target
                        .as_ref()
                        .map_or(crate::DEFAULT_LATENCY_TOLERANCE, |l| l.tolerance);
                    say(format!(
                        "{label}: building and timing candidates until the measured reduction is within {}% of the target (met within {}%)",
                        tolerance * 100.0 * crate::DEFAULT_LATENCY_SETTLE,
                        tolerance * 100.0
                    ));
                    let keep = shared_session(
                        &mut shared,
                        timer,
                        (table.key.batch, table.key.threads),
                        options,
                    )?;
                    let c = stages::correct_latency_target_in(
                        timer,
                        if keep { shared.as_mut() } else { None },
                        model,
                        &selector,
                        self.method,
                        target,
                        table,
                        options,
                        &CorrectionOptions {
                            tolerance,
                            ..CorrectionOptions::default()
                        },
                        |r| {
                            say(format!(
                                "  table target {:.1}%: predicted {:.1}%, measured {:.1}% [{:.1}–{:.1}]{}{}",
                                r.table_target * 100.0,
                                r.predicted * 100.0,
                                r.removed.median * 100.0,
                                r.removed.q1 * 100.0,
                                r.removed.q3 * 100.0,
                                if r.noisy { " (noisy)" } else { "" },
                                if r.reused {
                                    " (the widths of an earlier round: not timed again)"
                                } else {
                                    ""
                                }
                            ))
                        },
                    )?;
                    correction = Some((c.rounds, tolerance, c.met));
                    c.candidate
                }
                _ => {
                    let selection = first?;
                    let pruned = stages::apply(model, &selection.resolution)?;
                    (selection, pruned)
                }
            };
            let done = stages::after_surgery(
                model,
                &pruned_model,
                &selection.resolution,
                &steps,
                announce,
            )?;
            let one_shot = self.evaluate(&pruned_model)?;
            let mut epochs = 0;
            if let Some(f) = &self.finetune
                && f.settings.epochs > 0
            {
                epochs = f.settings.epochs;
                stages::finetune(
                    &mut pruned_model,
                    self.distill.as_ref().map(|d| (model, d)),
                    f.train,
                    &f.transform,
                    &f.settings,
                    announce,
                )?;
            }
            let mut torchrun = None;
            if let (Some(t), Some(version), Some(dir)) = (&self.torchrun, &torch_version, &staged) {
                epochs = t.epochs();
                torchrun = Some(t.run(
                    &mut pruned_model,
                    model,
                    dir.path(),
                    &label,
                    version,
                    self.progress,
                )?);
            }
            let accuracy = if epochs > 0 {
                self.evaluate(&pruned_model)?
            } else {
                one_shot
            };
            let widths = selection.widths();
            let (params_removed, macs_removed) = selection.reduction();
            if let Some(dir) = &staged {
                let spec = self.finetune_spec(pruned_model.graph())?;
                stages::export(
                    &pruned_model,
                    &selection.plan(),
                    &dir.path().join(&label),
                    &spec,
                )?;
            }
            let groups = selection.resolution.groups();
            results.push(PruneResult {
                label: label.clone(),
                goal,
                setting: selection.setting,
                achieved: Reduction {
                    params: params_removed,
                    macs: macs_removed,
                },
                threshold_ms,
                one_shot,
                reconstruction: done.reconstruction,
                recalibration: done.recalibration,
                finetune_epochs: epochs,
                torchrun,
                after: figures(&pruned_model, accuracy),
                export: staged.as_ref().map(|_| label),
                layers: selector
                    .layers()
                    .iter()
                    .zip(&selection.counts)
                    .map(|(l, &requested)| {
                        let map = groups
                            .group_of(l)
                            .map(|g| groups.groups()[g].map)
                            .filter(|m| m.channels_per_unit() > 1);
                        LayerResult {
                            layer: l.clone(),
                            units: graph.units(l).unwrap_or(0),
                            requested,
                            keep: widths[l],
                            unit_channels: map.map(|m| m.channels_per_unit()),
                            unit_name: map.map(|m| m.unit_name().to_owned()),
                        }
                    })
                    .collect(),
                latency_target: match (goal, &latency_table) {
                    (Goal::Latency(target), Some((table, source, file, _))) => {
                        let predicted = selector
                            .predicted_latency(&selection)
                            .transpose()?
                            .map_or(0.0, |t| 1.0 - t / table.full_seconds);
                        Some(LatencyTargetResult {
                            target,
                            runtime: table.key.runtime.clone(),
                            runtime_version: Some(table.key.runtime_version.clone())
                                .filter(|v| !v.is_empty()),
                            batch: table.key.batch,
                            threads: table.key.threads,
                            table: source.label().into(),
                            table_file: file.clone(),
                            table_noisy: table.noisy,
                            predicted,
                            mac_cut: mac_cut(macs_removed),
                            measured: None,
                            rounds: correction.as_ref().map(|c| c.0.clone()).unwrap_or_default(),
                            tolerance: correction.as_ref().map(|c| c.1),
                            met: correction.as_ref().map(|c| c.2),
                            measured_met: None,
                        })
                    }
                    _ => None,
                },
                runtime_latency: None,
            });
            models.push(pruned_model);
        }

        let mut before = figures(model, before_accuracy);
        if let Some(options) = &self.latency {
            say("measuring latency (all models interleaved)".into());
            let all: Vec<&Model> = std::iter::once(model).chain(models.iter()).collect();
            let mut timed = measure(&all, options)?.into_iter();
            before.latency = timed.next().unwrap_or_default();
            for (r, l) in results.iter_mut().zip(timed) {
                r.after.latency = l;
            }
            // Latency targets: the pruned models against the unpruned one at the table's
            // runtime, batch and threads. Other goals with `latency-on`: every pruned model
            // against the unpruned one on that runtime, at its batch and threads, the same
            // measurement (no table).
            let on_runtime = match (&latency_table, &self.latency_target) {
                (Some((table, _, _, timer)), _) => Some((
                    timer.clone(),
                    (table.key.batch, table.key.threads),
                    "the latency targets",
                )),
                (None, Some(s)) if !latency_goal => {
                    Some((s.timer(), (s.batch(), s.threads()), "the pruned models"))
                }
                _ => None,
            };
            if let Some((timer, (batch, threads), what)) = &on_runtime {
                let timed_ones: Vec<usize> = (0..results.len())
                    .filter(|&i| !latency_goal || results[i].latency_target.is_some())
                    .collect();
                let runtime = timer.runtime().name();
                say(format!(
                    "measuring {what} on {runtime} (batch {batch}, {threads} threads)"
                ));
                let all: Vec<&Model> = std::iter::once(model)
                    .chain(timed_ones.iter().map(|&i| &models[i]))
                    .collect();
                let runtime_version = timer.runtime_version()?;
                let name = |i: usize| match i {
                    0 => "the unpruned model".to_owned(),
                    _ => format!("the pruned model of {}", results[timed_ones[i - 1]].label),
                };
                let timed = if shared_session(&mut shared, timer, (*batch, *threads), options)? {
                    shared
                        .as_mut()
                        .expect("the shared session")
                        .add(&all, &name)?
                } else {
                    timer
                        .time(&[all], &|_, i| name(i), *batch, *threads, options)?
                        .remove(0)
                };
                let timed = &timed;
                for (k, &i) in timed_ones.iter().enumerate() {
                    let (b, a) = (&timed[0], &timed[k + 1]);
                    let speedup = a
                        .speedup
                        .unwrap_or(Spread::of(&[b.ms.median / a.ms.median]));
                    let measured = |mac_cut: f64| MeasuredLatency {
                        runtime: runtime.into(),
                        runtime_version: runtime_version.clone(),
                        before_ms: b.ms,
                        after_ms: a.ms,
                        speedup,
                        removed: 1.0 - 1.0 / speedup.median,
                        gain_per_mac_cut: speedup.median / mac_cut,
                        noisy: a.noisy || b.noisy,
                    };
                    let r = &mut results[i];
                    match r.latency_target.as_mut() {
                        Some(t) => {
                            let m = measured(t.mac_cut);
                            t.measured_met = t
                                .tolerance
                                .map(|tol| crate::within(t.target, m.removed, tol));
                            t.measured = Some(m);
                        }
                        None => {
                            let mac_cut = mac_cut(r.achieved.macs);
                            r.runtime_latency = Some(RuntimeLatency {
                                batch: *batch,
                                threads: *threads,
                                mac_cut,
                                measured: measured(mac_cut),
                            });
                        }
                    }
                }
            }
        }
        // The ONNX Runtime helper (and its exports) is not needed past the final
        // measurement: it ends before the report is written.
        drop(shared);

        let mut report = PruneReport {
            schema_version: REPORT_SCHEMA_VERSION,
            fair_pruner_version: env!("CARGO_PKG_VERSION").to_owned(),
            libtorch: LIBTORCH_VERSION.to_owned(),
            model: graph.name().to_owned(),
            weights: self.weights.clone(),
            data: self
                .evaluation
                .as_ref()
                .map(|e| e.test.name().trim_end_matches("/test").to_owned())
                .or_else(|| {
                    self.finetune
                        .as_ref()
                        .map(|f| f.train.name().trim_end_matches("/train").to_owned())
                }),
            seed: self.seed,
            selection: SelectionSettings {
                method: self.method,
                rule: select.rule,
                remove_by: self.remove_signal().to_owned(),
                protect_by: self.protect_signal().to_owned(),
                rank_by: rank.clone(),
                preset: Some(self.preset),
                mac_weight: select.mac_weight,
                mac_cost: select.mac_cost,
                weigh_by: selector.weighed_by().filter(|_| self.method == Method::Tod),
                exact_target: select.exact_target,
                min_keep: select.counting.min_keep,
                round_to: select.counting.round_to,
                protected: select.protected.clone(),
            },
            after_surgery: Some(self.after_surgery()),
            calibration: self.calibration.map(|c| CalibrationInfo {
                samples: c.len(),
                description: c.description().to_owned(),
                digest: data_digest.clone(),
            }),
            scoring: ScoringInfo {
                criteria: scores
                    .provenance
                    .criteria
                    .iter()
                    .map(|(k, r)| {
                        (
                            k.clone(),
                            CriterionInfo {
                                seconds: r.seconds,
                                settings: r.settings.clone(),
                                notes: r.notes.clone(),
                            },
                        )
                    })
                    .collect(),
                reused,
                partly_reused,
            },
            distillation: self
                .distill
                .filter(|d| self.finetunes() && d.weight > 0.0)
                .map(|d| DistillationInfo {
                    temperature: d.temperature,
                    weight: d.weight,
                }),
            before,
            results,
            files: Vec::new(),
        };
        if let Some(dir) = staged {
            scores.save(&dir.path().join("scores.json"))?;
            crate::charts::write(dir.path(), &report, selector.curves())?;
            let mut files = dir.files()?;
            files.push("report.json".into());
            files.sort();
            report.files = files;
            write_json(&dir.path().join("report.json"), &report)?;
            dir.commit()?;
        }
        Ok(PruneOutcome {
            report,
            models,
            scores,
        })
    }

    /// The `finetune.json` of every export: torchrun's settings and data when fine-tuning
    /// runs there, else the fine-tuning (or evaluation) transform and settings, no data.
    fn finetune_spec(&self, graph: &fair_ir::Graph) -> Result<FinetuneSpec, PipelineError> {
        if let Some(t) = &self.torchrun {
            return t.spec(graph);
        }
        let transform = self
            .finetune
            .as_ref()
            .map(|f| &f.transform)
            .or(self.evaluation.as_ref().map(|e| &e.transform));
        let settings = self.finetune.as_ref().map(|f| &f.settings);
        Ok(stages::finetune_spec(graph, transform, settings))
    }

    /// A step after surgery as it runs: its settings (a preset's draws batches of the
    /// fine-tuning batch size with the run's seed), and where it draws its batches — the
    /// explicit source, else the fine-tuning's training split (transform without
    /// augmentation). `None` when the step is off or has no data (a preset's step then
    /// does not run).
    fn prepared<S: Drawn>(&self, step: &Option<AfterSurgery<'a, S>>) -> Option<OnData<'a, S>> {
        let r = step.as_ref()?;
        let (train, transform) = match &r.source {
            Some((train, t)) => (*train, t.clone()),
            None => self.training_split()?,
        };
        let mut settings = r.settings.clone();
        if r.optional {
            let batch_size = self.finetune.as_ref().map(|f| f.settings.batch_size);
            settings.set_draw(batch_size, self.seed);
        }
        Some(OnData {
            settings,
            train,
            transform,
        })
    }

    /// The training split of the steps after surgery without their own: the fine-tuning's,
    /// else [`Pruner::train_split`]'s (augmentation off).
    fn training_split(&self) -> Option<(&'a dyn ImageSource, Transform)> {
        match &self.finetune {
            Some(f) => Some((f.train, f.transform.for_evaluation())),
            None => self.train_split.clone(),
        }
    }

    /// A step after surgery (asked for, or the preset's) needs training data: its own, the
    /// fine-tuning's or [`Pruner::train_split`]'s. Never skipped silently: without data it
    /// is an error saying how to give data or opt out.
    fn check_source<S>(
        &self,
        step: &Option<AfterSurgery<'a, S>>,
        setting: &str,
        what: &str,
        builder: &str,
        opt_out: &str,
    ) -> Result<(), PipelineError> {
        match step {
            Some(r) if r.source.is_none() && self.training_split().is_none() => {
                let whose = if r.optional {
                    format!("the preset {} asks for {what}, which", self.preset)
                } else {
                    what.to_owned()
                };
                Err(PipelineError::invalid(
                    setting,
                    format!(
                        "{whose} needs training data: none is known (give it with {builder}, \
                         train_split or the in-process fine-tuning, whose training split it then \
                         uses; or turn it off with {opt_out}, or `{setting}` set to 0)"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Whether any fine-tuning runs (in-process or on torchrun).
    fn finetunes(&self) -> bool {
        self.finetune
            .as_ref()
            .is_some_and(|f| f.settings.epochs > 0)
            || self.torchrun.as_ref().is_some_and(|t| t.epochs() > 0)
    }

    /// Top-1 and loss on the test split, if one was given.
    fn evaluate(&self, model: &Model) -> Result<Option<Accuracy>, PipelineError> {
        self.evaluation
            .as_ref()
            .map(|e| stages::evaluate(model, e.test, &e.transform))
            .transpose()
    }
}

fn figures(model: &Model, accuracy: Option<Accuracy>) -> ModelFigures {
    ModelFigures {
        params: model.graph().param_count(),
        macs: model.graph().macs(),
        accuracy,
        latency: Vec::new(),
    }
}

/// Writes `value` as pretty JSON, atomically.
pub(crate) fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), PipelineError> {
    let text = serde_json::to_string_pretty(value).expect("reports serialise");
    fair_fs::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// The MAC cut of a pruned model that removed the fraction `macs_removed` of the MACs: the
/// unpruned model's MACs over the pruned one's (2.0 for half of them removed).
fn mac_cut(macs_removed: f64) -> f64 {
    1.0 / (1.0 - macs_removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    use crate::test_data::toy as data;

    fn model() -> Model {
        let g = fair_zoo::build("vgg_compact", &[1, 8, 8], 2).unwrap();
        Model::new(g, Device::Cpu, 1).unwrap()
    }

    /// A pipeline that needs no calibration data (norm criteria only) and turns the
    /// preset's steps after surgery off (the tests ask for the ones they check).
    fn pruner(m: &Model) -> Pruner<'_> {
        Pruner::new(m)
            .no_reconstruction()
            .no_recalibration()
            .criteria(["l1"])
            .remove_by("l1")
            .protect_by("l2")
            .goal(Goal::Alpha(0.5))
    }

    fn transform() -> Transform {
        Transform {
            mean: vec![0.5],
            std: vec![0.25],
            ..Default::default()
        }
    }

    #[test]
    fn latency_on_without_a_latency_target_is_checked_against_the_other_settings() {
        let m = model();
        let on = LatencySettings {
            runtime_given: true,
            ..LatencySettings::default()
        };
        let err = |p: Pruner<'_>| p.validate().unwrap_err().to_string();
        // Timing the pruned models needs latency measurement.
        let e = err(pruner(&m).latency_target(on.clone()));
        assert!(
            e.starts_with("no-latency: cannot be used with `latency-on` without `target-latency`"),
            "{e}"
        );
        pruner(&m)
            .latency_target(on.clone())
            .latency(LatencyOptions::default())
            .validate()
            .unwrap();
        // `latency-on` from a config file: no-latency wins (the run notes it).
        let from_config = LatencySettings {
            from_config: vec!["latency-on".into()],
            ..on.clone()
        };
        let p = pruner(&m).latency_target(from_config);
        p.validate().unwrap();
        assert!(p.skips_runtime_timing());
        // A table or a tolerance belongs to a latency target.
        let timed = |s: LatencySettings| {
            pruner(&m)
                .latency_target(s)
                .latency(LatencyOptions::default())
        };
        let table = LatencySettings {
            table: Some("t.json".into()),
            ..on.clone()
        };
        let e = err(timed(table.clone()));
        assert!(
            e.starts_with("latency-table: applies to a latency target only"),
            "{e}"
        );
        let e = err(timed(LatencySettings {
            table_from_config: true,
            ..table
        }));
        assert!(e.starts_with("[prune] latency_table: applies"), "{e}");
        let e = err(timed(LatencySettings {
            tolerance: 0.2,
            ..on
        }));
        assert!(e.starts_with("latency-tolerance: applies"), "{e}");
    }

    #[test]
    fn recalibration_needs_a_training_split_and_valid_settings() {
        let m = model();
        let d = data(32);
        let e = pruner(&m)
            .recalibrate(BnRecalibration::default())
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("bn-recalibrate:") && e.contains("training data"),
            "{e}"
        );
        let s = TrainSettings {
            epochs: 0,
            ..TrainSettings::default()
        };
        pruner(&m)
            .finetune(&d, &transform(), s)
            .recalibrate(BnRecalibration::default())
            .validate()
            .unwrap();
        pruner(&m)
            .recalibrate_on(&d, &transform(), BnRecalibration::default())
            .validate()
            .unwrap();
        let zero = BnRecalibration {
            batches: 0,
            ..Default::default()
        };
        let e = pruner(&m)
            .recalibrate_on(&d, &transform(), zero)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("batches"), "{e}");
        let e = pruner(&m)
            .distill(Distillation {
                weight: 2.0,
                ..Default::default()
            })
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("distill-weight"), "{e}");
    }

    #[test]
    fn a_presets_steps_after_surgery_need_a_training_split_or_an_explicit_opt_out() {
        tch::set_num_threads(1);
        let m = model();
        let d = data(48);
        let bare = || {
            Pruner::new(&m)
                .criteria(["l1"])
                .remove_by("l1")
                .protect_by("l2")
                .goal(Goal::Alpha(0.5))
        };
        // Never skipped silently: without a training split the preset's steps are an error.
        let e = bare().validate().unwrap_err().to_string();
        assert!(
            e.starts_with("bn-recalibrate:") && e.contains("preset fair-pruner"),
            "{e}"
        );
        let e = bare()
            .no_recalibration()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("reconstruct:"), "{e}");
        // The opt-out is recorded; so are the steps that ran.
        let off = bare().no_reconstruction().no_recalibration().run().unwrap();
        assert_eq!(
            off.report.after_surgery,
            Some(AfterSurgerySteps {
                reconstruction: StepStatus::OptedOut,
                recalibration: StepStatus::OptedOut,
            })
        );
        let s = TrainSettings {
            epochs: 0,
            batch_size: 16,
            ..TrainSettings::default()
        };
        let ran = bare().finetune(&d, &transform(), s).run().unwrap();
        assert_eq!(
            ran.report.after_surgery,
            Some(AfterSurgerySteps {
                reconstruction: StepStatus::Ran,
                recalibration: StepStatus::Ran,
            })
        );
        let r = &ran.report.results[0];
        assert_eq!(r.recalibration.as_ref().unwrap().batch_size, 16);
        assert_eq!(r.reconstruction.as_ref().unwrap().batch_size, 16);
        // The paper preset has no steps after surgery: off, not opted out.
        let paper = bare().preset(Preset::Paper).run().unwrap();
        assert_eq!(
            paper.report.after_surgery,
            Some(AfterSurgerySteps {
                reconstruction: StepStatus::Off,
                recalibration: StepStatus::Off,
            })
        );
    }

    #[test]
    fn builder_calls_work_in_any_order() {
        let m = model();
        let selection = |p: Pruner| p.run().unwrap().report.selection;
        let before = selection(
            pruner(&m)
                .rule(GroupRule::Strict)
                .mac_weight(0.5)
                .preset(Preset::Paper),
        );
        let after = selection(
            pruner(&m)
                .preset(Preset::Paper)
                .mac_weight(0.5)
                .rule(GroupRule::Strict),
        );
        assert_eq!(before, after);
        assert_eq!(before.rule, GroupRule::Strict);
        assert_eq!(before.mac_weight, 0.5);
        assert_eq!(before.preset, Some(Preset::Paper));
        // The paper preset's other parts still apply.
        assert!(!before.exact_target);
    }

    #[test]
    fn recalibration_runs_before_the_one_shot_evaluation_and_is_reported() {
        tch::set_num_threads(1);
        let m = model();
        let d = data(48);
        let settings = BnRecalibration {
            batches: 3,
            batch_size: 16,
            seed: 4,
        };
        let plain = pruner(&m).evaluate_on(&d, &transform()).run().unwrap();
        let recal = pruner(&m)
            .evaluate_on(&d, &transform())
            .recalibrate_on(&d, &transform(), settings.clone())
            .run()
            .unwrap();
        assert!(plain.report.results[0].recalibration.is_none());
        let r = recal.report.results[0].recalibration.clone().unwrap();
        assert_eq!(
            (r.layers, r.batches, r.batch_size, r.samples, r.seed),
            (5, 3, 16, 48, 4),
            "{r:?}"
        );
        assert_eq!(r.data, "toy/train");
        // The returned model is the pruned model recalibrated, and it was evaluated so.
        let again = &plain.models[0];
        fair_train::recalibrate_batch_norm(again, &d, &transform(), &settings).unwrap();
        for (name, t) in recal.models[0].named_tensors() {
            assert!(t.equal(again.tensor(&name).unwrap()), "{name}");
        }
        let eval = fair_train::evaluate(again, &d, &transform(), 512).unwrap();
        let one_shot = recal.report.results[0].one_shot.unwrap();
        assert_eq!((one_shot.top1, one_shot.loss), (eval.top1, eval.loss));
        assert_ne!(
            plain.report.results[0].one_shot.unwrap().loss,
            one_shot.loss,
            "recalibration changes the one-shot figures"
        );
    }

    #[test]
    fn reconstruction_needs_a_training_split_and_valid_settings() {
        let m = model();
        let d = data(32);
        let e = pruner(&m)
            .reconstruct(Reconstruction::default())
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("reconstruct:") && e.contains("training data"),
            "{e}"
        );
        pruner(&m)
            .reconstruct_on(&d, &transform(), Reconstruction::default())
            .validate()
            .unwrap();
        let bad = Reconstruction {
            ridge: -1.0,
            ..Default::default()
        };
        let e = pruner(&m)
            .reconstruct_on(&d, &transform(), bad)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("ridge"), "{e}");
    }

    #[test]
    fn reconstruction_runs_before_the_recalibration_and_is_reported() {
        tch::set_num_threads(1);
        let m = model();
        let d = data(48);
        let recal = BnRecalibration {
            batches: 3,
            batch_size: 16,
            seed: 4,
        };
        let settings = Reconstruction {
            batches: 2,
            batch_size: 24,
            seed: 5,
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let plain = pruner(&m).out(dir.path().join("plain")).run().unwrap();
        let both = pruner(&m)
            .evaluate_on(&d, &transform())
            .reconstruct_on(&d, &transform(), settings.clone())
            .recalibrate_on(&d, &transform(), recal.clone())
            .run()
            .unwrap();
        assert!(plain.report.results[0].reconstruction.is_none());
        let r = both.report.results[0].reconstruction.clone().unwrap();
        assert_eq!(
            (r.batches, r.batch_size, r.samples, r.seed, r.ridge),
            (2, 24, 48, 5, settings.ridge),
            "{r:?}"
        );
        assert_eq!(r.data, "toy/train");
        assert!(!r.layers.is_empty());
        for l in &r.layers {
            assert!(l.error_after.unwrap() <= l.error_before.unwrap(), "{l:?}");
        }
        // The returned model is the pruned model reconstructed, then recalibrated.
        let label = plain.report.results[0].export.clone().unwrap();
        let plan =
            fair_analysis::Plan::load(&dir.path().join("plain").join(label).join("plan.json"))
                .unwrap();
        let options = fair_analysis::ResolveOptions {
            rule: Preset::default().settings(32).rule,
            ..Default::default()
        };
        let resolution = fair_analysis::Resolution::new(m.graph(), &plan, &options).unwrap();
        let again = &plain.models[0];
        let done =
            fair_train::reconstruct_readers(&m, again, &resolution, &d, &transform(), &settings)
                .unwrap();
        let layers: Vec<_> = done
            .layers
            .into_iter()
            .map(crate::ReconstructedLayer::from)
            .collect();
        assert_eq!(layers, r.layers);
        fair_train::recalibrate_batch_norm(again, &d, &transform(), &recal).unwrap();
        for (name, t) in both.models[0].named_tensors() {
            assert!(t.equal(again.tensor(&name).unwrap()), "{name}");
        }
    }

    #[test]
    fn distillation_is_used_and_recorded_by_the_in_process_fine_tuning() {
        tch::set_num_threads(1);
        let m = model();
        let d = data(32);
        let s = TrainSettings {
            epochs: 1,
            batch_size: 16,
            ..TrainSettings::default()
        };
        let run = |distill: Option<Distillation>| {
            let mut p = pruner(&m).finetune(&d, &transform(), s.clone());
            if let Some(x) = distill {
                p = p.distill(x);
            }
            p.run().unwrap()
        };
        let plain = run(None);
        let zero = run(Some(Distillation {
            weight: 0.0,
            ..Default::default()
        }));
        let half = run(Some(Distillation::default()));
        assert!(plain.report.distillation.is_none());
        assert_eq!(
            half.report.distillation,
            Some(DistillationInfo {
                temperature: 4.0,
                weight: 0.5
            })
        );
        let get = |o: &PruneOutcome| o.models[0].tensor("classifier.0.weight").unwrap().copy();
        assert!(get(&plain).equal(&get(&zero)), "weight 0 is plain training");
        assert!(
            !get(&plain).equal(&get(&half)),
            "the teacher changes training"
        );
        // Without fine-tuning nothing is distilled, and nothing is recorded.
        let none = pruner(&m).distill(Distillation::default()).run().unwrap();
        assert!(none.report.distillation.is_none());
    }
}
