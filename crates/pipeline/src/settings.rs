//! Settings resolution, in one place: raw settings (a config's `[prune]` section and explicit
//! overrides such as command-line flags, every one optional) and the preset they name →
//! one resolved [`PruneSettings`] value that says everything a prune run does. The CLI
//! fills [`RawSettings`] from its flags and the config and calls [`RawSettings::resolve`]
//! (which also refuses unknown criteria), then [`load_model`] (the checks that need the
//! model but no data, such as a given memory bound) and [`check_classes`]; it decides
//! nothing itself. [`crate::Pruner::from_config`] resolves the same way, so a
//! Rust program that loads a config gets the run `fair-pruner prune --config` makes.
//!
//! Errors name settings by their config key with `-` for `_` (`finetune-lr`, `alpha`): the
//! key under `[prune]` with `_`, the command-line flag with `--`. Settings named inside an
//! error's text are written in backticks (`` `distill-weight` ``), so a caller can respell
//! them too.
//!
//! ```
//! use fair_pipeline::{Goal, Preset, PruneSection, RawSettings};
//! let config = RawSettings {
//!     prune: PruneSection { alpha: Some(0.3), preset: Some(Preset::Paper), ..Default::default() },
//!     ..Default::default()
//! };
//! let flags = RawSettings {
//!     prune: PruneSection { target_macs: Some(0.5), ..Default::default() },
//!     ..Default::default()
//! };
//! let s = config.overridden_by(&flags).resolve()?;
//! assert_eq!(s.goals, [Goal::Macs(0.5)]); // the flags' goal replaces the config's
//! assert_eq!(s.preset, Preset::Paper);
//! assert_eq!(s.rank_by, "u"); // the paper preset ranks by the removal signal
//! assert!(s.reconstruction.is_none() && s.recalibration.is_none());
//! # Ok::<(), fair_pipeline::PipelineError>(())
//! ```

use std::path::{Path, PathBuf};

use fair_analysis::{Goal, GroupedConvs, Method, ScoreFile, SelectOptions};
use fair_scoring::{ConvDistance, MaxMemory, Registry, ScoringSettings, Wasserstein};
use fair_threshold::CountOptions;
use fair_train::{BnRecalibration, Distillation, Reconstruction, TrainSettings};

use crate::config::{DrawSettings, PruneSection, RunConfig};
use crate::error::PipelineError;
use crate::latency_table::LatencySettings;
use crate::preset::Preset;

/// The criteria scored when none are named.
pub const DEFAULT_CRITERIA: [&str; 4] = ["u", "r", "l1", "group-l1"];

/// ToD's removal signal when none is named.
pub const DEFAULT_REMOVE_BY: &str = "u";

/// ToD's protection signal when none is named.
pub const DEFAULT_PROTECT_BY: &str = "r";

/// How `score`, `ratios`, `apply` and `prune` treat grouped convolutions that are not
/// depthwise (ResNeXt, RegNet-X): pruned within their groups with the group count kept
/// (unit *j* is channel *j* of every group; see `docs/algorithm.md`, "Grouped
/// convolutions"). Score files list grouped convolutions with one score per output channel
/// in any case; the selection takes each unit's mean over the groups.
pub const GROUPED_CONVS: GroupedConvs = GroupedConvs::WithinGroups;

/// The fine-tuning learning rate when none is given.
pub const DEFAULT_FINETUNE_LR: f64 = 0.01;

/// The output directory when none is given.
pub const DEFAULT_OUT: &str = "pruned";

/// Low-level settings: what a config's `[prune]` and `[train]` sections and explicit
/// overrides (command-line flags) give, every one optional. [`RawSettings::resolve`] turns
/// them, with the preset they name, into [`PruneSettings`].
#[derive(Debug, Clone, Default)]
pub struct RawSettings {
    /// The `[prune]` keys.
    pub prune: PruneSection,
    /// The `[train]` section: the fine-tuning's batch size, momentum, schedule, ... (its
    /// epochs, learning rate and seed come from `prune`).
    pub train: Option<TrainSettings>,
    /// How conv channels are compared for the U-Score.
    pub conv_distance: Option<ConvDistance>,
    /// The 1-D Wasserstein variant of the U-Score.
    pub w1: Option<Wasserstein>,
    /// Batch size of the R-Score passes.
    pub batch_size: Option<usize>,
    /// Layers never to prune, besides the output layer (empty: none).
    pub protect: Vec<String>,
    /// Uniform counts instead of ToD.
    pub uniform: bool,
}

/// The signals counts read from a score file ([`RawSettings::signals_for`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signals {
    /// ToD's removal signal: units with low scores are proposed for removal.
    pub remove: String,
    /// ToD's protection signal: units with high scores are protected.
    pub protect: String,
    /// The criterion that orders the units each layer removes (lowest first).
    pub rank: String,
    /// Why the signals are not the settings' (a file scored with one criterion only), to
    /// be shown to the user; `None` when they are.
    pub fallback: Option<String>,
}

/// Everything a prune run does, resolved from [`RawSettings`] and the preset: no setting is
/// left to a default decided elsewhere. [`crate::Pruner::settings`] applies it.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneSettings {
    /// The preset the settings started from.
    pub preset: Preset,
    /// The goals, one pruned model each.
    pub goals: Vec<Goal>,
    /// ToD or uniform counts.
    pub method: Method,
    /// How calibration samples are drawn from the training split.
    pub draw: DrawSettings,
    /// The criteria to score.
    pub criteria: Vec<String>,
    /// Settings of the built-in criteria.
    pub scoring: ScoringSettings,
    /// The U-Score memory bound that was given (not the default share of the available
    /// memory), when the criteria compute the U-Score: a bound to check against the model
    /// before any data is loaded.
    pub given_max_memory: Option<fair_scoring::ByteSize>,
    /// ToD's removal signal.
    pub remove_by: String,
    /// ToD's protection signal.
    pub protect_by: String,
    /// The criterion that orders the units each layer removes.
    pub rank_by: String,
    /// Selection options (group rule, MAC weight and cost, exact targets, counting,
    /// protected layers).
    pub select: SelectOptions,
    /// How the latency table of a latency target is obtained and the pruned models timed;
    /// or, for other goals, the runtime, batch and threads the pruned models are timed on
    /// against the unpruned model (`latency-on`, no table). `Some` exactly when a goal is a
    /// latency target or `latency-on` is given ([`RawSettings::latency`]).
    pub latency: Option<LatencySettings>,
    /// Fine-tuning after surgery (0 epochs: none); its seed is the draw's.
    pub finetune: TrainSettings,
    /// Reader reconstruction after surgery, if any: batches of the fine-tuning batch size,
    /// seeded with the draw's seed.
    pub reconstruction: Option<Reconstruction>,
    /// BatchNorm recalibration after surgery, if any: batches of the fine-tuning batch
    /// size, seeded with the draw's seed.
    pub recalibration: Option<BnRecalibration>,
    /// Distillation from the unpruned model during fine-tuning, if any.
    pub distillation: Option<Distillation>,
    /// The output directory.
    pub out: PathBuf,
}

impl PruneSection {
    /// These keys over `lower`'s: each key set here wins, others come from `lower`. The goal
    /// keys (`alpha`, `alpha_sweep`, `target_macs`, `target_params`, `target_latency`) count
    /// as one: when any is set here, none of `lower`'s is kept; and when that goal is not a
    /// latency target but `lower`'s is, `lower`'s latency keys (`latency_on`,
    /// `latency_batch`, `latency_threads`, `latency_table`, `latency_tolerance`,
    /// `latency_python`), which belong to its latency target, go with it. Without a latency
    /// target in `lower`, its latency keys merge like the others (its `latency_on`,
    /// `latency_batch`, `latency_threads` and `latency_python`, which time the pruned
    /// models of another goal, stay).
    pub fn overriding(&self, lower: &PruneSection) -> PruneSection {
        let goal_here = self.alpha.is_some()
            || self.alpha_sweep.is_some()
            || self.target_macs.is_some()
            || self.target_params.is_some()
            || self.target_latency.is_some();
        let goals = if goal_here { self } else { lower };
        macro_rules! or {
            ($($f:ident),*) => {
                PruneSection {
                    alpha: goals.alpha,
                    alpha_sweep: goals.alpha_sweep.clone(),
                    target_macs: goals.target_macs,
                    target_params: goals.target_params,
                    target_latency: goals.target_latency,
                    $($f: self.$f.clone().or_else(|| lower.$f.clone()),)*
                }
            };
        }
        let mut merged = or!(
            per_class,
            max_classes,
            seed,
            criteria,
            remove_by,
            protect_by,
            rank_by,
            preset,
            mac_weight,
            mac_cost,
            weigh_by,
            exact_target,
            analysis_point,
            r_mode,
            projections,
            max_memory,
            spill_dir,
            pair_search,
            finetune_epochs,
            finetune_lr,
            bn_recalibrate,
            reconstruct,
            distill_weight,
            distill_temperature,
            rule,
            min_keep,
            round_to,
            latency_on,
            latency_batch,
            latency_threads,
            latency_table,
            latency_tolerance,
            latency_python,
            out
        );
        // A lower latency target's keys go with it; a lower `latency-on` for timing the
        // pruned models of another goal (no latency target there) stays.
        if goal_here && self.target_latency.is_none() && lower.target_latency.is_some() {
            merged.latency_on = self.latency_on;
            merged.latency_batch = self.latency_batch;
            merged.latency_threads = self.latency_threads;
            merged.latency_table = self.latency_table.clone();
            merged.latency_tolerance = self.latency_tolerance;
            merged.latency_python = self.latency_python.clone();
        }
        merged
    }
}

impl RawSettings {
    /// The settings of a run configuration: its `[prune]` and `[train]` sections.
    pub fn from_config(config: &RunConfig) -> Self {
        RawSettings {
            prune: config.prune.clone(),
            train: config.train.clone(),
            ..Default::default()
        }
    }

    /// These settings overridden by `overrides` (e.g. a config's, overridden by flags):
    /// every setting `overrides` gives wins (see [`PruneSection::overriding`]); protected
    /// layers given there replace these; `uniform` is on when either turns it on.
    pub fn overridden_by(&self, overrides: &RawSettings) -> RawSettings {
        RawSettings {
            prune: overrides.prune.overriding(&self.prune),
            train: overrides.train.clone().or_else(|| self.train.clone()),
            conv_distance: overrides.conv_distance.or(self.conv_distance),
            w1: overrides.w1.or(self.w1),
            batch_size: overrides.batch_size.or(self.batch_size),
            protect: if overrides.protect.is_empty() {
                self.protect.clone()
            } else {
                overrides.protect.clone()
            },
            uniform: overrides.uniform || self.uniform,
        }
    }

    /// The preset: `[prune] preset`, else [`Preset::default`].
    pub fn preset(&self) -> Preset {
        self.prune.preset.unwrap_or_default()
    }

    /// The goals; an error when none or several kinds are given, or one is out of range.
    pub fn goals(&self) -> Result<Vec<Goal>, PipelineError> {
        let goals = self.prune.goals()?.ok_or_else(|| {
            PipelineError::invalid(
                "goal",
                "no pruning goal: give `alpha`, `alpha-sweep`, `target-macs`, `target-params` or `target-latency`",
            )
        })?;
        for g in &goals {
            g.check()
                .map_err(|e| PipelineError::invalid(g.flag(), e.to_string()))?;
        }
        Ok(goals)
    }

    /// ToD, or uniform counts.
    pub fn method(&self) -> Method {
        if self.uniform {
            Method::Uniform
        } else {
            Method::Tod
        }
    }

    /// How calibration samples are drawn (defaults: [`DrawSettings::default`]), checked.
    pub fn draw(&self) -> Result<DrawSettings, PipelineError> {
        let draw = self.draw_settings();
        draw.check()?;
        Ok(draw)
    }

    /// How calibration samples are drawn, unchecked ([`RawSettings::draw`] checks).
    pub fn draw_settings(&self) -> DrawSettings {
        let d = DrawSettings::default();
        DrawSettings {
            per_class: self.prune.per_class.unwrap_or(d.per_class),
            max_classes: self.prune.max_classes.unwrap_or(d.max_classes),
            seed: self.prune.seed.unwrap_or(d.seed),
        }
    }

    /// The criteria to score: `criteria`, else [`DEFAULT_CRITERIA`].
    pub fn criteria(&self) -> Vec<String> {
        match &self.prune.criteria {
            Some(c) if !c.is_empty() => c.clone(),
            _ => DEFAULT_CRITERIA.map(str::to_owned).to_vec(),
        }
    }

    /// The criteria to score ([`RawSettings::criteria`]), each known to `registry`; an
    /// unknown one is an error naming `criteria` and listing the known ones.
    pub fn checked_criteria(&self, registry: &Registry) -> Result<Vec<String>, PipelineError> {
        let criteria = self.criteria();
        for name in &criteria {
            check_known("criteria", name, registry)?;
        }
        Ok(criteria)
    }

    /// The criteria to score and ToD's signals, each known to `registry`: an unknown one is
    /// an error naming its setting (`criteria`, `remove-by`, `protect-by`, `rank-by`) and
    /// listing the known criteria. (The signals are scored too, so they must be known even
    /// with uniform counts.)
    pub fn check_criteria(&self, registry: &Registry) -> Result<(), PipelineError> {
        self.checked_criteria(registry)?;
        let (remove, protect, rank) = self.signals();
        for (setting, name) in [
            ("remove-by", &remove),
            ("protect-by", &protect),
            ("rank-by", &rank),
        ] {
            check_known(setting, name, registry)?;
        }
        Ok(())
    }

    /// ToD's signals and the ranking ([`RawSettings::signals`]) for counting from the scores
    /// of `file`: each must be in the file or known to `registry` (a known criterion the
    /// file lacks is left to the selector, whose error says to score it). An unknown one is
    /// an error naming its setting (`remove-by`, `protect-by`, `rank-by`) and listing the
    /// known criteria; uniform counts read only the ranking.
    ///
    /// A file scored with one criterion only (`score --criteria l1`) counts by it: where
    /// none of `remove-by`, `protect-by` and `rank-by` is given and the file lacks a signal
    /// the counts read (the defaults `u` and `r`, the preset's ranking), its one criterion
    /// removes, protects and ranks, and [`Signals::fallback`] says so.
    pub fn signals_for(
        &self,
        file: &ScoreFile,
        registry: &Registry,
    ) -> Result<Signals, PipelineError> {
        let (mut remove, mut protect, mut rank) = self.signals();
        let method = self.method();
        let p = &self.prune;
        let given = p.remove_by.is_some() || p.protect_by.is_some() || p.rank_by.is_some();
        let read = |remove: &str, protect: &str, rank: &str| -> Vec<(&'static str, String)> {
            match method {
                Method::Tod => vec![
                    ("remove-by", remove.to_owned()),
                    ("protect-by", protect.to_owned()),
                    ("rank-by", rank.to_owned()),
                ],
                Method::Uniform => vec![("rank-by", rank.to_owned())],
            }
        };
        let mut fallback = None;
        if let ([only], false) = (file.criteria().as_slice(), given) {
            let mut wanted: Vec<String> = Vec::new();
            for (_, name) in read(&remove, &protect, &rank) {
                if !wanted.contains(&name) {
                    wanted.push(name);
                }
            }
            let lacking: Vec<String> = wanted
                .iter()
                .filter(|name| file.criterion(name).is_none())
                .map(|name| format!("`{name}`"))
                .collect();
            if !lacking.is_empty() {
                let only = (*only).to_owned();
                fallback = Some(format!(
                    "the score file holds only `{only}` scores (not {}): {} by `{only}`; \
                     score with `--criteria {}` for the {} preset's counts",
                    lacking.join(", "),
                    match method {
                        Method::Tod => "ToD removes, protects and ranks",
                        Method::Uniform => "uniform counts rank",
                    },
                    wanted.join(","),
                    self.preset(),
                ));
                rank = only.clone();
                if method == Method::Tod {
                    (remove, protect) = (only.clone(), only);
                }
            }
        }
        for (setting, name) in read(&remove, &protect, &rank) {
            if file.criterion(&name).is_none() {
                check_known(setting, &name, registry)?;
            }
        }
        Ok(Signals {
            remove,
            protect,
            rank,
            fallback,
        })
    }

    /// The scoring settings: the preset's (its R batch size is `batch_size` when given),
    /// with the settings given here over them and the draw's samples per class, classes and
    /// seed.
    pub fn scoring(&self) -> ScoringSettings {
        let draw = self.draw_settings();
        let p = &self.prune;
        let batch_size = self
            .batch_size
            .unwrap_or(ScoringSettings::default().r.batch_size);
        let mut s = self.preset().settings(batch_size).scoring;
        if let Some(a) = p.analysis_point {
            s.u.analysis_point = a;
        }
        if let Some(c) = self.conv_distance {
            s.u.conv = c;
        }
        if let Some(n) = p.projections {
            s.u.projections = n;
        }
        if let Some(w) = self.w1 {
            s.u.w1 = w;
        }
        if let Some(m) = p.r_mode {
            s.r.mode = m;
        }
        if let Some(search) = p.pair_search {
            s.u.pair_search = search;
        }
        s.r.batch_size = batch_size;
        s.u.spill_dir = p.spill_dir.clone();
        s.u.max_memory = match p.max_memory {
            Some(m) => m.bytes(),
            None => fair_scoring::default_max_memory(),
        };
        // The R-Score takes a bound that was given; the default one (from the free memory)
        // only in eval mode, where running a batch in pieces leaves the scores as they are
        // up to f64 summation order. In training mode pieces change BatchNorm's statistics,
        // so the scores would depend on how much memory happened to be free.
        s.r.max_memory = match (p.max_memory, s.r.mode) {
            (Some(m), _) => m.bytes(),
            (None, fair_scoring::RMode::Eval) => s.u.max_memory,
            (None, _) => None,
        };
        s.u.samples_per_class = draw.per_class;
        s.u.max_classes = draw.max_classes;
        s.u.seed = draw.seed;
        s.r.seed = draw.seed;
        s.seed = draw.seed;
        s
    }

    /// The U-Score memory bound given (`max_memory`), when the criteria compute the
    /// U-Score: the bound to check against the model before any data is loaded. The default
    /// bound (a share of the available memory) is not checked early: it only splits the
    /// U-Score into passes.
    pub fn given_max_memory(&self) -> Option<fair_scoring::ByteSize> {
        if !self.criteria().iter().any(|c| c == "u") {
            return None;
        }
        self.prune.max_memory.and_then(MaxMemory::bytes)
    }

    /// ToD's (remove-by, protect-by) signals and the ranking criterion: see
    /// [`Preset::rank_by`].
    pub fn signals(&self) -> (String, String, String) {
        let p = &self.prune;
        let remove = p
            .remove_by
            .clone()
            .unwrap_or_else(|| DEFAULT_REMOVE_BY.into());
        let protect = p
            .protect_by
            .clone()
            .unwrap_or_else(|| DEFAULT_PROTECT_BY.into());
        let rank = self
            .preset()
            .rank_by(p.rank_by.as_deref(), p.remove_by.as_deref());
        (remove, protect, rank)
    }

    /// The selection options: the preset's ([`Preset::select_options`]) with the settings
    /// given here over them. A MAC weight that is not a finite number ≥ 0 is an error.
    pub fn select_options(&self) -> Result<SelectOptions, PipelineError> {
        let p = &self.prune;
        let preset = self.preset().select_options();
        let d = CountOptions::default();
        let mac_weight = p.mac_weight.unwrap_or(preset.mac_weight);
        check_mac_weight(mac_weight)?;
        Ok(SelectOptions {
            rule: p.rule.unwrap_or(preset.rule),
            mac_weight,
            mac_cost: p.mac_cost.unwrap_or(preset.mac_cost),
            weigh_by: p.weigh_by.unwrap_or(preset.weigh_by),
            exact_target: p.exact_target.unwrap_or(preset.exact_target),
            counting: CountOptions {
                min_keep: p.min_keep.unwrap_or(d.min_keep),
                round_to: p.round_to.unwrap_or(d.round_to),
            },
            protected: self.protect.clone(),
            grouped: preset.grouped,
        })
    }

    /// The latency settings: those of a latency target (`target-latency`), or, without
    /// one, of timing the pruned models on `latency-on`. `latency-on` (default libtorch
    /// CPU; a runtime that is not available is an error naming it, as is the runtime of a
    /// given table, [`LatencySettings::run_timer`]), `latency-batch` and `latency-threads`
    /// (≥ 1 when given), `latency-table` and `latency-tolerance` (between 0 and 1, default
    /// [`crate::DEFAULT_LATENCY_TOLERANCE`]), and `latency-python` (the interpreter ONNX
    /// Runtime and eager PyTorch are reached through).
    ///
    /// Without a latency target, `latency-on` alone decides: given, the run times each
    /// pruned model on that runtime against the unpruned model at `latency-batch` and
    /// `latency-threads`, the measurement a latency target's final figure is
    /// ([`crate::RuntimeLatency`]), with no table and no correction; `latency-batch`,
    /// `latency-threads` and `latency-python` need it, and `latency-table` and
    /// `latency-tolerance` are errors. Without either: `None`, and any latency setting is
    /// an error.
    pub fn latency(&self) -> Result<Option<LatencySettings>, PipelineError> {
        self.latency_of(true)
    }

    /// [`RawSettings::latency`] for a command that times no pruned models (`ratios`: it
    /// counts on a latency table only): without a latency target, `latency-on` is refused
    /// (it would time the pruned models), and a latency setting given alone is refused
    /// naming `target-latency` only.
    ///
    /// ```
    /// use fair_pipeline::{PruneSection, RawSettings};
    /// let raw = RawSettings {
    ///     prune: PruneSection { latency_batch: Some(4), ..PruneSection::default() },
    ///     ..RawSettings::default()
    /// };
    /// let e = raw.latency_untimed().unwrap_err().to_string();
    /// assert!(e.contains("give `target-latency` too") && !e.contains("latency-on"), "{e}");
    /// ```
    pub fn latency_untimed(&self) -> Result<Option<LatencySettings>, PipelineError> {
        self.latency_of(false)
    }

    /// [`RawSettings::latency`], where `times_models` tells whether the command times
    /// pruned models (`latency-on` without a latency target).
    fn latency_of(&self, times_models: bool) -> Result<Option<LatencySettings>, PipelineError> {
        let p = &self.prune;
        if p.target_latency.is_none() {
            if !times_models && p.latency_on.is_some() {
                return Err(PipelineError::invalid(
                    "latency-on",
                    "without `target-latency` times the pruned models, which this command does not build: give `target-latency` to count on a latency table",
                ));
            }
            let (needs, why) = if p.latency_on.is_some() {
                (
                    &[
                        ("latency-table", p.latency_table.is_some()),
                        ("latency-tolerance", p.latency_tolerance.is_some()),
                    ][..],
                    "applies to a latency target only: give `target-latency` too (`latency-on` without it times the pruned models, with no table or correction)",
                )
            } else {
                (
                    &[
                        ("latency-batch", p.latency_batch.is_some()),
                        ("latency-threads", p.latency_threads.is_some()),
                        ("latency-python", p.latency_python.is_some()),
                        ("latency-table", p.latency_table.is_some()),
                        ("latency-tolerance", p.latency_tolerance.is_some()),
                    ][..],
                    if times_models {
                        "applies to a latency target only, or with `latency-on` (timing the pruned models on it): give `target-latency` or `latency-on` too"
                    } else {
                        "applies to a latency target only: give `target-latency` too"
                    },
                )
            };
            if let Some((name, _)) = needs.iter().find(|(_, g)| *g) {
                return Err(PipelineError::invalid(name, why));
            }
            if p.latency_on.is_none() {
                return Ok(None);
            }
        }
        for (name, v) in [
            ("latency-batch", p.latency_batch),
            ("latency-threads", p.latency_threads),
        ] {
            if v == Some(0) {
                return Err(PipelineError::invalid(name, "must be at least 1"));
            }
        }
        let tolerance = p
            .latency_tolerance
            .unwrap_or(crate::DEFAULT_LATENCY_TOLERANCE);
        if !(tolerance > 0.0 && tolerance < 1.0) {
            return Err(PipelineError::invalid(
                "latency-tolerance",
                format!("must be a fraction between 0 and 1 (exclusive), found {tolerance}"),
            ));
        }
        let settings = LatencySettings {
            runtime: p.latency_on.unwrap_or_default(),
            runtime_given: p.latency_on.is_some(),
            batch: p.latency_batch,
            threads: p.latency_threads,
            table: p.latency_table.clone(),
            table_from_config: false,
            from_config: Vec::new(),
            tolerance,
            python: p.latency_python.clone(),
        };
        // The runtime the run will measure or time on (a given table's, else
        // `latency-on`'s), checked now rather than after scoring. A chosen runtime is
        // checked even when a table of another one is given (that mismatch is refused
        // later, naming both); a table that cannot be read is reported where it is used.
        if settings.runtime_given {
            settings.timer().check_available()?;
        }
        if let Ok(Some(timer)) = settings.run_timer() {
            timer.check_available()?;
        }
        Ok(Some(settings))
    }

    /// Distillation: none without a weight (a temperature alone is an error).
    pub fn distillation(&self) -> Result<Option<Distillation>, PipelineError> {
        let p = &self.prune;
        let Some(weight) = p.distill_weight else {
            if p.distill_temperature.is_some() {
                return Err(PipelineError::invalid(
                    "distill-temperature",
                    "needs `distill-weight`",
                ));
            }
            return Ok(None);
        };
        let d = Distillation {
            weight,
            temperature: p
                .distill_temperature
                .unwrap_or(Distillation::default().temperature),
        };
        d.check()?;
        Ok(Some(d))
    }

    /// The fine-tuning settings: `[train]` (else [`TrainSettings::default`]) with
    /// `finetune_epochs` (default 0), `finetune_lr` (default [`DEFAULT_FINETUNE_LR`]) and the
    /// draw's seed; checked when there are epochs to run.
    pub fn finetune(&self) -> Result<TrainSettings, PipelineError> {
        let p = &self.prune;
        let lr = p.finetune_lr.unwrap_or(DEFAULT_FINETUNE_LR);
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(PipelineError::invalid(
                "finetune-lr",
                format!("the learning rate must be a positive number, found {lr}"),
            ));
        }
        let s = TrainSettings {
            epochs: p.finetune_epochs.unwrap_or(0),
            lr,
            seed: self.draw_settings().seed,
            ..self.train.clone().unwrap_or_default()
        };
        if s.epochs > 0 {
            s.check().map_err(|e| {
                let setting = match &e {
                    fair_train::TrainError::Setting { name: "epochs", .. } => "finetune-epochs",
                    fair_train::TrainError::Setting { name: "lr", .. } => "finetune-lr",
                    _ => "train",
                };
                PipelineError::invalid(setting, e.to_string())
            })?;
        }
        Ok(s)
    }

    /// The steps after surgery: `reconstruct` and `bn_recalibrate` batches (else the
    /// preset's; 0 is off), drawn in batches of the fine-tuning batch size (`[train]
    /// batch_size`) with the draw's seed.
    pub fn after_surgery(&self) -> (Option<Reconstruction>, Option<BnRecalibration>) {
        let p = &self.prune;
        let preset = self
            .preset()
            .settings(ScoringSettings::default().r.batch_size);
        let batch_size = self.train.clone().unwrap_or_default().batch_size;
        let seed = self.draw_settings().seed;
        let reconstruct = p
            .reconstruct
            .unwrap_or_else(|| preset.reconstruction.as_ref().map_or(0, |r| r.batches));
        let recalibrate = p
            .bn_recalibrate
            .unwrap_or_else(|| preset.recalibration.as_ref().map_or(0, |r| r.batches));
        let reconstruction = (reconstruct > 0).then(|| Reconstruction {
            batches: reconstruct,
            batch_size,
            seed,
            ..preset.reconstruction.clone().unwrap_or_default()
        });
        let recalibration = (recalibrate > 0).then_some(BnRecalibration {
            batches: recalibrate,
            batch_size,
            seed,
        });
        (reconstruction, recalibration)
    }

    /// Every setting resolved: see [`PruneSettings`]. Errors name the setting. The criteria
    /// and signals must be built-in ones ([`Registry::default`]); see
    /// [`RawSettings::resolve_with`] for criteria of your own.
    pub fn resolve(&self) -> Result<PruneSettings, PipelineError> {
        self.resolve_with(&Registry::default())
    }

    /// As [`RawSettings::resolve`], with the criteria and signals known to `registry` (the
    /// one the run's [`crate::Pruner::registry`] is given).
    pub fn resolve_with(&self, registry: &Registry) -> Result<PruneSettings, PipelineError> {
        let goals = self.goals()?;
        self.check_criteria(registry)?;
        let draw = self.draw()?;
        let finetune = self.finetune()?;
        let distillation = self.distillation()?;
        let select = self.select_options()?;
        let latency = self.latency()?;
        let (remove_by, protect_by, rank_by) = self.signals();
        let (reconstruction, recalibration) = self.after_surgery();
        Ok(PruneSettings {
            preset: self.preset(),
            goals,
            method: self.method(),
            draw,
            criteria: self.criteria(),
            scoring: self.scoring(),
            given_max_memory: self.given_max_memory(),
            remove_by,
            protect_by,
            rank_by,
            select,
            latency,
            finetune,
            reconstruction,
            recalibration,
            distillation,
            out: self
                .prune
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_OUT)),
        })
    }
}

/// A prune run of a configuration, loaded: the resolved settings, the model with its
/// weights, the data and the calibration samples — what `fair-pruner prune --config FILE`
/// loads before it runs. [`crate::Pruner::from_config`] makes the CLI's pipeline of it.
/// (Not run here: it needs trained weights; `examples/from_config.rs` runs it in
/// `cargo xtask test` and compares with `fair-pruner prune`.)
///
/// ```no_run
/// use fair_pipeline::{ConfigRun, Pruner, RunConfig};
/// let config = RunConfig::load("configs/fashion-vgg.toml".as_ref())?;
/// let run = ConfigRun::load(&config, Some("configs/fashion-vgg.toml".as_ref()), tch::Device::Cpu)?;
/// let outcome = Pruner::from_config(&run).progress(true).run()?;
/// println!("{:?}", outcome.report.results[0].one_shot);
/// # Ok::<(), fair_pipeline::PipelineError>(())
/// ```
pub struct ConfigRun {
    /// The configuration, its transform completed with the model's recorded normalisation
    /// ([`crate::model_normalization`]).
    pub config: RunConfig,
    /// The config file, if the configuration came from one (an input the output directory
    /// may not overwrite).
    pub config_path: Option<PathBuf>,
    /// The resolved settings ([`RawSettings::from_config`], resolved).
    pub settings: PruneSettings,
    /// The model with its trained weights.
    pub model: fair_runtime::Model,
    /// The training split (calibration draw, steps after surgery, fine-tuning).
    pub train: fair_data::Source,
    /// The test split (evaluation before and after).
    pub test: fair_data::Source,
    /// The calibration samples, drawn from the training split with `settings.draw`.
    pub calibration: fair_scoring::Calibration,
    /// Notes about the model, the data and the draw (ONNX import notes, skipped records,
    /// classes with fewer samples, a missing input normalisation).
    pub notes: Vec<String>,
}

impl ConfigRun {
    /// Resolves the settings of `config` (read from `config_path`, if any) and loads what the
    /// run needs on `device`, in the CLI's order: every check that needs no data first (the
    /// settings, weights, a given U-Score memory bound against the model, the transform and
    /// the data section), then the data and the calibration draw.
    pub fn load(
        config: &RunConfig,
        config_path: Option<&Path>,
        device: tch::Device,
    ) -> Result<Self, PipelineError> {
        let mut settings = RawSettings::from_config(config).resolve()?;
        if let Some(l) = &mut settings.latency {
            l.table_from_config = l.table.is_some();
            l.from_config = [
                ("latency-on", l.runtime_given),
                ("latency-batch", l.batch.is_some()),
                ("latency-threads", l.threads.is_some()),
            ]
            .into_iter()
            .filter(|(_, given)| *given)
            .map(|(name, _)| name.to_owned())
            .collect();
        }
        check_weights(config)?;
        let loaded = load_model(config, settings.given_max_memory, device)?;
        let (config, model, mut notes) = (loaded.config, loaded.model, loaded.notes);
        notes.extend(loaded.warning);
        let (train, test, data_notes) = config.data(crate::image_input(model.graph())?)?;
        notes.extend(data_notes);
        check_classes(&model, &train)?;
        let (calibration, short) = settings
            .draw
            .draw(model.graph(), &train, &config.transform)?;
        notes.extend(short);
        Ok(ConfigRun {
            config,
            config_path: config_path.map(Path::to_owned),
            settings,
            model,
            train,
            test,
            calibration,
            notes,
        })
    }
}

/// A prune run needs trained weights: `[model] weights`, or an ONNX graph that carries them.
pub fn check_weights(config: &RunConfig) -> Result<(), PipelineError> {
    let onnx_graph = config.model.zoo.is_none()
        && config
            .model
            .graph
            .as_deref()
            .is_some_and(crate::onnx::is_onnx);
    if config.model.weights.is_none() && !onnx_graph {
        return Err(PipelineError::invalid(
            "weights",
            "pruning needs trained weights: `weights` FILE ([model] weights in a config), or an \
             ONNX model that carries them (`graph` model.onnx, [model] graph in a config)",
        ));
    }
    Ok(())
}

/// A run configuration's model, loaded and checked before any data is (see [`load_model`]).
pub struct LoadedModel {
    /// The configuration, its transform completed with the model's recorded normalisation
    /// and checked against the model's input, its data section checked.
    pub config: RunConfig,
    /// The model with its weights.
    pub model: fair_runtime::Model,
    /// Notes about the model (ONNX import notes).
    pub notes: Vec<String>,
    /// A warning when neither the configuration nor the model gives the input
    /// normalisation ([`crate::model_normalization`]).
    pub warning: Option<String>,
}

/// The model of `config` on `device`, and every check that needs the model but no data: a
/// given U-Score memory `bound` (e.g. [`PruneSettings::given_max_memory`]) against the model
/// ([`check_memory_bound`]), the transform completed by the model's normalisation and
/// checked against its input, and the data section. Loads no data.
pub fn load_model(
    config: &RunConfig,
    bound: Option<fair_scoring::ByteSize>,
    device: tch::Device,
) -> Result<LoadedModel, PipelineError> {
    let mut config = config.clone();
    let (model, notes) = config.model(device)?;
    check_memory_bound(model.graph(), bound)?;
    let graph = model.graph();
    let input = crate::image_input(graph)?;
    let (transform, warning) = crate::model_normalization(graph, config.transform);
    config.transform = transform;
    // Every setting that sizes an allocation, against the model's input, before loading.
    config.transform.check_input(input, 1)?;
    config.check_data()?;
    Ok(LoadedModel {
        config,
        model,
        notes,
        warning,
    })
}

/// A given U-Score memory bound (`max-memory`) must at least hold the model's parameters:
/// [`fair_scoring::check_memory_bound`], its error naming the setting. `None` (the default
/// bound, a share of the available memory) is not checked.
pub fn check_memory_bound(
    graph: &fair_ir::Graph,
    bound: Option<fair_scoring::ByteSize>,
) -> Result<(), PipelineError> {
    fair_scoring::check_memory_bound(graph, bound).map_err(|e| match e {
        fair_scoring::ScoringError::Setting { name, detail } => {
            PipelineError::invalid(name, detail)
        }
        e => e.into(),
    })
}

/// The number of classes `model` predicts: its output's size (the last node's first
/// dimension), which [`check_classes`] compares the data with.
pub fn output_classes(model: &fair_runtime::Model) -> usize {
    let g = model.graph();
    g.shape_at(g.nodes().len() - 1)[0]
}

/// The data may not have more classes than the model has outputs: an error naming `data`.
pub fn check_classes(
    model: &fair_runtime::Model,
    train: &dyn fair_data::ImageSource,
) -> Result<(), PipelineError> {
    let classes = output_classes(model);
    if train.classes().len() > classes {
        return Err(PipelineError::invalid(
            "data",
            format!(
                "the data has {} classes but the model has {classes} outputs",
                train.classes().len()
            ),
        ));
    }
    Ok(())
}

/// `name`, given as `setting`, must be known to `registry`.
pub(crate) fn check_known(
    setting: &str,
    name: &str,
    registry: &Registry,
) -> Result<(), PipelineError> {
    if registry.contains(name) {
        return Ok(());
    }
    Err(PipelineError::invalid(
        setting,
        format!(
            "unknown criterion '{name}' (known: {})",
            registry.names().join(", ")
        ),
    ))
}

/// A MAC weight γ must be a finite number ≥ 0.
pub(crate) fn check_mac_weight(gamma: f64) -> Result<(), PipelineError> {
    if gamma.is_finite() && gamma >= 0.0 {
        Ok(())
    } else {
        Err(PipelineError::invalid(
            "mac-weight",
            format!(
                "the MAC weight γ must be a finite number ≥ 0 (0 = off, the paper), found {gamma}"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fair_analysis::{GroupRule, MacCost};

    fn raw(prune: PruneSection) -> RawSettings {
        RawSettings {
            prune,
            ..Default::default()
        }
    }

    #[test]
    fn the_default_preset_fills_every_setting() {
        let s = raw(PruneSection {
            alpha: Some(0.2),
            ..Default::default()
        })
        .resolve()
        .unwrap();
        assert_eq!(s.preset, Preset::FairPruner);
        assert_eq!(s.criteria, ["u", "r", "l1", "group-l1"]);
        assert_eq!(
            (
                s.remove_by.as_str(),
                s.protect_by.as_str(),
                s.rank_by.as_str()
            ),
            ("u", "r", "group-l1")
        );
        assert_eq!(s.select.rule, GroupRule::Summed);
        assert_eq!(s.select.mac_weight, 1.0);
        assert_eq!(s.select.mac_cost, MacCost::Fraction);
        assert!(s.select.exact_target);
        assert_eq!(s.finetune.epochs, 0);
        assert_eq!(s.finetune.lr, 0.01);
        assert_eq!(s.finetune.batch_size, 128);
        let r = s.reconstruction.unwrap();
        assert_eq!((r.batches, r.batch_size, r.seed), (8, 128, 0));
        let b = s.recalibration.unwrap();
        assert_eq!((b.batches, b.batch_size, b.seed), (32, 128, 0));
        assert_eq!(s.out, PathBuf::from("pruned"));
        assert_eq!(s.scoring.u.pair_search, fair_scoring::PairSearch::Bounded);
    }

    #[test]
    fn the_pair_search_comes_from_the_config_and_the_flags() {
        let config: PruneSection = toml::from_str("alpha = 0.2\npair_search = \"all\"").unwrap();
        let s = raw(config.clone()).resolve().unwrap();
        assert_eq!(s.scoring.u.pair_search, fair_scoring::PairSearch::All);
        let flags = raw(PruneSection {
            pair_search: Some(fair_scoring::PairSearch::Bounded),
            ..Default::default()
        });
        let s = raw(config).overridden_by(&flags).resolve().unwrap();
        assert_eq!(s.scoring.u.pair_search, fair_scoring::PairSearch::Bounded);
        let e = toml::from_str::<PruneSection>("pair_search = \"some\"").unwrap_err();
        assert!(e.to_string().contains("bounded"), "{e}");
    }

    #[test]
    fn a_latency_target_resolves_its_table_settings_and_they_need_one() {
        // The config's table settings stay under the flags' latency target.
        let config = raw(PruneSection {
            target_macs: Some(0.5),
            ..Default::default()
        });
        let flags = raw(PruneSection {
            target_latency: Some(0.4),
            latency_batch: Some(8),
            latency_table: Some("t.json".into()),
            ..Default::default()
        });
        let s = config.overridden_by(&flags).resolve().unwrap();
        assert_eq!(s.goals, [Goal::Latency(0.4)]);
        let l = s.latency.expect("latency settings for a latency target");
        assert_eq!(l.runtime, crate::LatencyRuntime::LibtorchCpu);
        assert!(!l.runtime_given, "latency-on was left at its default");
        assert!(
            !l.table_from_config,
            "settings alone do not know a config file"
        );
        assert_eq!((l.batch, l.threads), (Some(8), None));
        assert_eq!(l.table.as_deref(), Some(Path::new("t.json")));
        assert_eq!(l.tolerance, 0.05, "the default tolerance is 5%");
        let with_tolerance = |t: f64| {
            raw(PruneSection {
                target_latency: Some(0.5),
                latency_tolerance: Some(t),
                ..Default::default()
            })
            .resolve()
        };
        assert_eq!(with_tolerance(0.1).unwrap().latency.unwrap().tolerance, 0.1);
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            let e = with_tolerance(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("latency-tolerance: must be a fraction"),
                "{e}"
            );
        }
        // Without a latency target: none, and a latency setting alone is an error.
        assert!(config.resolve().unwrap().latency.is_none());
        // A config's latency target with its table settings, run with a MAC target from the
        // flags: the table settings go with the config's goal.
        let config = raw(PruneSection {
            target_latency: Some(0.3),
            latency_threads: Some(4),
            latency_tolerance: Some(0.1),
            latency_table: Some("t.json".into()),
            ..Default::default()
        });
        let flags = raw(PruneSection {
            target_macs: Some(0.5),
            ..Default::default()
        });
        let s = config.overridden_by(&flags).resolve().unwrap();
        assert_eq!(s.goals, [Goal::Macs(0.5)]);
        assert!(s.latency.is_none());
        // Table settings given with the overriding latency target are kept, the lower
        // layer's fill in the rest.
        let flags = raw(PruneSection {
            target_latency: Some(0.4),
            latency_batch: Some(2),
            ..Default::default()
        });
        let l = config
            .overridden_by(&flags)
            .resolve()
            .unwrap()
            .latency
            .unwrap();
        assert_eq!((l.batch, l.threads), (Some(2), Some(4)));
        // A runtime that was chosen is marked so (a given table must be of it), and an
        // interpreter for ONNX Runtime is kept.
        let l = raw(PruneSection {
            target_latency: Some(0.4),
            latency_on: Some(crate::LatencyRuntime::LibtorchCpu),
            latency_python: Some("/opt/venv/bin/python".into()),
            ..Default::default()
        })
        .resolve()
        .unwrap()
        .latency
        .unwrap();
        assert!(l.runtime_given);
        assert_eq!(l.python.as_deref(), Some(Path::new("/opt/venv/bin/python")));
        // A given table measured on ONNX Runtime is checked at the start, with the given
        // interpreter, even without `latency-on`; a table of a user's device is not.
        let dir = tempfile::tempdir().unwrap();
        let table = |runtime: &str| {
            let path = dir.path().join(format!("{runtime}.json"));
            let json = serde_json::json!({
                "format": "fair-pruner-latency-table/1",
                "key": {"model_digest": "", "runtime": runtime, "threads": 1, "batch": 1},
                "full_seconds": 0.010,
                "groups": []
            });
            std::fs::write(&path, json.to_string()).unwrap();
            path
        };
        let with_table = |path| {
            raw(PruneSection {
                target_latency: Some(0.4),
                latency_table: Some(path),
                latency_python: Some("/nonexistent/fair-pruner/python3".into()),
                ..Default::default()
            })
            .resolve()
        };
        let e = with_table(table("onnxruntime-cpu"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("latency-on: onnxruntime-cpu: cannot run the Python interpreter '/nonexistent/fair-pruner/python3'"),
            "{e}"
        );
        assert!(with_table(table("my-device")).is_ok());
        assert!(with_table(table("libtorch-cpu")).is_ok());
        let e = raw(PruneSection {
            target_macs: Some(0.5),
            latency_python: Some("python3".into()),
            ..Default::default()
        })
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("latency-python: applies to a latency target only"),
            "{e}"
        );
        let e = raw(PruneSection {
            target_macs: Some(0.5),
            latency_threads: Some(2),
            ..Default::default()
        })
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("latency-threads: applies to a latency target only"),
            "{e}"
        );
        let e = raw(PruneSection {
            target_macs: Some(0.5),
            latency_tolerance: Some(0.1),
            ..Default::default()
        })
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("latency-tolerance: applies to a latency target only"),
            "{e}"
        );
        let e = raw(PruneSection {
            target_latency: Some(0.5),
            latency_batch: Some(0),
            ..Default::default()
        })
        .resolve()
        .unwrap_err()
        .to_string();
        assert_eq!(e, "latency-batch: must be at least 1");
        let e = raw(PruneSection {
            target_latency: Some(0.5),
            latency_on: Some(crate::LatencyRuntime::Cuda),
            ..Default::default()
        })
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("latency-on: cuda:"), "{e}");
        // Two goal kinds in one section are refused, the latency target among them.
        let e = raw(PruneSection {
            target_latency: Some(0.5),
            alpha: Some(0.1),
            ..Default::default()
        })
        .resolve()
        .unwrap_err()
        .to_string();
        assert!(e.contains("alpha and target_latency"), "{e}");
    }

    #[test]
    fn latency_on_without_a_latency_target_times_the_pruned_models() {
        use crate::LatencyRuntime::{Cuda, LibtorchCpu, OnnxruntimeCpu};
        // Any other goal with `latency-on`: its runtime, batch and threads, no table.
        for goal in [
            PruneSection {
                target_macs: Some(0.5),
                ..Default::default()
            },
            PruneSection {
                target_params: Some(0.4),
                ..Default::default()
            },
            PruneSection {
                alpha_sweep: Some(vec![0.1, 0.2]),
                ..Default::default()
            },
        ] {
            let l = raw(PruneSection {
                latency_on: Some(LibtorchCpu),
                latency_batch: Some(4),
                latency_threads: Some(2),
                ..goal
            })
            .resolve()
            .unwrap()
            .latency
            .expect("latency-on without a latency target");
            assert_eq!(l.runtime, LibtorchCpu);
            assert!(l.runtime_given);
            assert_eq!((l.batch(), l.threads()), (4, 2));
            assert_eq!(l.table, None);
        }
        let macs = |p: PruneSection| {
            raw(PruneSection {
                target_macs: Some(0.5),
                ..p
            })
            .resolve()
        };
        // No table and no correction: their settings still need a latency target.
        for (p, setting) in [
            (
                PruneSection {
                    latency_on: Some(LibtorchCpu),
                    latency_table: Some("t.json".into()),
                    ..Default::default()
                },
                "latency-table",
            ),
            (
                PruneSection {
                    latency_on: Some(LibtorchCpu),
                    latency_tolerance: Some(0.1),
                    ..Default::default()
                },
                "latency-tolerance",
            ),
        ] {
            let e = macs(p).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!(
                    "{setting}: applies to a latency target only: give `target-latency` too (`latency-on` without it"
                )),
                "{e}"
            );
        }
        // Batch, threads and interpreter need `latency-on` (or a latency target).
        let e = macs(PruneSection {
            latency_batch: Some(4),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("latency-batch: applies to a latency target only, or with `latency-on`"),
            "{e}"
        );
        // A runtime that is not available is refused now, as under a latency target.
        let e = macs(PruneSection {
            latency_on: Some(Cuda),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("latency-on: cuda:"), "{e}");
        let e = macs(PruneSection {
            latency_on: Some(OnnxruntimeCpu),
            latency_python: Some("/nonexistent/fair-pruner/python3".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("latency-on: onnxruntime-cpu: cannot run the Python interpreter '/nonexistent/fair-pruner/python3'"),
            "{e}"
        );
        // A config's `latency-on` for its MAC target stays when the flags change the goal;
        // a config latency target's settings go with it.
        let config = raw(PruneSection {
            alpha: Some(0.2),
            latency_on: Some(LibtorchCpu),
            latency_threads: Some(2),
            ..Default::default()
        });
        let flags = raw(PruneSection {
            target_params: Some(0.3),
            ..Default::default()
        });
        let l = config.overridden_by(&flags).resolve().unwrap().latency;
        assert_eq!(
            l.map(|l| (l.runtime_given, l.threads)),
            Some((true, Some(2)))
        );
        let config = raw(PruneSection {
            target_latency: Some(0.3),
            latency_on: Some(LibtorchCpu),
            latency_threads: Some(4),
            ..Default::default()
        });
        assert!(
            config
                .overridden_by(&flags)
                .resolve()
                .unwrap()
                .latency
                .is_none()
        );
        let flags = raw(PruneSection {
            target_macs: Some(0.5),
            latency_on: Some(LibtorchCpu),
            ..Default::default()
        });
        let l = config
            .overridden_by(&flags)
            .resolve()
            .unwrap()
            .latency
            .unwrap();
        assert_eq!((l.runtime_given, l.threads), (true, None));
    }

    #[test]
    fn the_spill_dir_comes_from_the_config_and_the_flags() {
        use fair_scoring::SpillDir;
        let s = raw(PruneSection {
            alpha: Some(0.2),
            ..Default::default()
        })
        .resolve()
        .unwrap();
        assert_eq!(s.scoring.u.spill_dir, None);
        let config: PruneSection =
            toml::from_str("alpha = 0.2\nspill_dir = \"/scratch/fair\"").unwrap();
        let s = raw(config.clone()).resolve().unwrap();
        assert_eq!(
            s.scoring.u.spill_dir,
            Some(SpillDir::At("/scratch/fair".into()))
        );
        let flags = raw(PruneSection {
            spill_dir: Some(SpillDir::Never),
            ..Default::default()
        });
        let s = raw(config).overridden_by(&flags).resolve().unwrap();
        assert_eq!(s.scoring.u.spill_dir, Some(SpillDir::Never));
        let config: PruneSection = toml::from_str("spill_dir = \"none\"").unwrap();
        assert_eq!(config.spill_dir, Some(SpillDir::Never));
        let e = toml::from_str::<PruneSection>("spill_dir = \"\"").unwrap_err();
        assert!(e.to_string().contains("none"), "{e}");
    }

    #[test]
    fn overrides_win_and_goals_are_replaced_as_a_whole() {
        let config = RawSettings {
            prune: PruneSection {
                alpha_sweep: Some(vec![0.1, 0.2]),
                seed: Some(3),
                reconstruct: Some(0),
                rule: Some(GroupRule::Strict),
                ..Default::default()
            },
            train: Some(TrainSettings {
                batch_size: 16,
                ..Default::default()
            }),
            ..Default::default()
        };
        let flags = raw(PruneSection {
            target_params: Some(0.4),
            seed: Some(5),
            remove_by: Some("l1".into()),
            ..Default::default()
        });
        let s = config.overridden_by(&flags).resolve().unwrap();
        assert_eq!(s.goals, [Goal::Params(0.4)]);
        assert_eq!(s.draw.seed, 5);
        assert_eq!(s.finetune.seed, 5);
        assert_eq!(s.select.rule, GroupRule::Strict);
        // An explicit removal signal is also the ranking.
        assert_eq!(s.rank_by, "l1");
        assert!(s.reconstruction.is_none());
        let b = s.recalibration.unwrap();
        assert_eq!((b.batches, b.batch_size, b.seed), (32, 16, 5));
    }

    #[test]
    fn errors_name_the_setting() {
        let err = |p: PruneSection| raw(p).resolve().unwrap_err().to_string();
        let e = err(PruneSection::default());
        assert!(
            e.starts_with("goal:") && e.contains("no pruning goal"),
            "{e}"
        );
        let e = err(PruneSection {
            alpha: Some(0.1),
            mac_weight: Some(-1.0),
            ..Default::default()
        });
        assert!(e.starts_with("mac-weight:"), "{e}");
        let e = err(PruneSection {
            alpha: Some(0.1),
            finetune_lr: Some(0.0),
            ..Default::default()
        });
        assert!(e.starts_with("finetune-lr:"), "{e}");
        let e = err(PruneSection {
            alpha: Some(0.1),
            distill_temperature: Some(2.0),
            ..Default::default()
        });
        assert!(e.starts_with("distill-temperature:"), "{e}");
        let e = err(PruneSection {
            target_macs: Some(1.5),
            ..Default::default()
        });
        assert!(e.starts_with("target-macs:"), "{e}");
        let e = err(PruneSection {
            alpha: Some(0.1),
            per_class: Some(0),
            ..Default::default()
        });
        assert!(e.starts_with("per-class:"), "{e}");
    }

    #[test]
    fn unknown_criteria_are_refused_naming_their_setting() {
        let alpha = || PruneSection {
            alpha: Some(0.2),
            ..Default::default()
        };
        let cases = [
            (
                PruneSection {
                    criteria: Some(vec!["u".into(), "nope".into()]),
                    ..alpha()
                },
                "criteria",
            ),
            (
                PruneSection {
                    remove_by: Some("nope".into()),
                    ..alpha()
                },
                "remove-by",
            ),
            (
                PruneSection {
                    protect_by: Some("nope".into()),
                    ..alpha()
                },
                "protect-by",
            ),
            (
                PruneSection {
                    rank_by: Some("nope".into()),
                    ..alpha()
                },
                "rank-by",
            ),
        ];
        for (prune, setting) in cases {
            let e = raw(prune).resolve().unwrap_err();
            let PipelineError::Invalid { setting: s, detail } = &e else {
                panic!("{e}");
            };
            assert_eq!(s, setting, "{e}");
            assert!(
                detail.starts_with("unknown criterion 'nope' (known: "),
                "{e}"
            );
            // The known criteria are listed.
            for known in ["u", "r", "l1", "group-l1"] {
                assert!(
                    detail.contains(&format!(" {known},"))
                        || detail.contains(&format!(" {known})")),
                    "{known}: {e}"
                );
            }
        }
        // A registry that knows the name accepts it.
        let mut registry = Registry::default();
        registry.register("nope", "a test criterion", |_| {
            Box::new(fair_scoring::L1Norm)
        });
        let s = raw(PruneSection {
            remove_by: Some("nope".into()),
            ..alpha()
        })
        .resolve_with(&registry)
        .unwrap();
        assert_eq!(s.remove_by, "nope");
        // The score command's check: the criteria alone.
        let e = raw(PruneSection {
            criteria: Some(vec!["zzz".into()]),
            ..Default::default()
        })
        .checked_criteria(&Registry::default())
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("criteria: unknown criterion 'zzz'"),
            "{e}"
        );
    }

    /// A score file of the `mlp` zoo model with L1 scores only.
    fn l1_scores() -> ScoreFile {
        let graph = fair_zoo::build("mlp", &[1, 8, 8], 2).unwrap();
        let model = fair_runtime::Model::new(graph, tch::Device::Cpu, 0).unwrap();
        let criteria = Registry::default()
            .create_all(&["l1"], &ScoringSettings::default())
            .unwrap();
        fair_scoring::score(
            &model,
            None,
            &criteria,
            fair_scoring::Progress { enabled: false },
        )
        .unwrap()
    }

    #[test]
    fn signals_for_stored_scores_must_be_in_the_file_or_known() {
        let file = l1_scores();
        let registry = Registry::default();
        let with = |f: fn(&mut RawSettings)| {
            let mut r = RawSettings::default();
            f(&mut r);
            r.signals_for(&file, &registry)
        };
        // Known criteria the file lacks (u, r) are left to the selector when one is given.
        let s = with(|r| r.prune.rank_by = Some("l1".into())).unwrap();
        assert_eq!(
            (s.remove.as_str(), s.protect.as_str(), s.rank.as_str()),
            ("u", "r", "l1")
        );
        assert_eq!(s.fallback, None);
        for (f, setting) in [
            (
                (|r: &mut RawSettings| r.prune.remove_by = Some("zzz".into()))
                    as fn(&mut RawSettings),
                "remove-by",
            ),
            (|r| r.prune.protect_by = Some("zzz".into()), "protect-by"),
            (|r| r.prune.rank_by = Some("zzz".into()), "rank-by"),
        ] {
            let e = with(f).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("{setting}: unknown criterion 'zzz' (known: ")),
                "{e}"
            );
        }
        // Uniform counts read only the ranking.
        let r = with(|r| {
            r.uniform = true;
            r.prune.protect_by = Some("zzz".into());
            r.prune.rank_by = Some("l1".into());
        })
        .unwrap();
        assert_eq!(r.protect, "zzz");
        let e = with(|r| {
            r.uniform = true;
            r.prune.rank_by = Some("zzz".into());
        })
        .unwrap_err();
        assert!(
            e.to_string().starts_with("rank-by: unknown criterion"),
            "{e}"
        );
    }

    #[test]
    fn a_file_with_one_criterion_counts_by_it_unless_signals_are_given() {
        let file = l1_scores();
        assert_eq!(file.criteria(), ["l1"]);
        let registry = Registry::default();
        // Nothing given: the preset's u, r and group-l1 are missing, so l1 does all three.
        let s = RawSettings::default()
            .signals_for(&file, &registry)
            .unwrap();
        assert_eq!(
            (s.remove.as_str(), s.protect.as_str(), s.rank.as_str()),
            ("l1", "l1", "l1")
        );
        let note = s.fallback.expect("a note says why");
        assert!(note.contains("only `l1`"), "{note}");
        assert!(note.contains("--criteria u,r,group-l1"), "{note}");
        // Uniform counts read the ranking only.
        let r = RawSettings {
            uniform: true,
            ..Default::default()
        };
        let s = r.signals_for(&file, &registry).unwrap();
        assert_eq!((s.rank.as_str(), s.remove.as_str()), ("l1", "u"));
        assert!(s.fallback.unwrap().contains("--criteria group-l1"));
        // Any signal given (flag or config): the settings stand, the selector reports what
        // the file lacks.
        for f in [
            (|r: &mut RawSettings| r.prune.remove_by = Some("u".into())) as fn(&mut RawSettings),
            |r| r.prune.protect_by = Some("r".into()),
            |r| r.prune.rank_by = Some("group-l1".into()),
        ] {
            let mut r = RawSettings::default();
            f(&mut r);
            let s = r.signals_for(&file, &registry).unwrap();
            assert_eq!(s.fallback, None);
            assert_ne!(
                (s.remove.as_str(), s.protect.as_str(), s.rank.as_str()),
                ("l1", "l1", "l1")
            );
        }
    }

    #[test]
    fn a_memory_bound_too_small_for_the_model_names_the_setting() {
        let graph = fair_zoo::build("mlp", &[1, 28, 28], 10).unwrap();
        let e = check_memory_bound(&graph, Some(fair_scoring::ByteSize(1))).unwrap_err();
        let PipelineError::Invalid { setting, detail } = &e else {
            panic!("{e}");
        };
        assert_eq!(setting, "max-memory");
        assert!(detail.contains("model's parameters"), "{e}");
        assert!(!e.to_string().contains("--"), "{e}");
        assert!(check_memory_bound(&graph, Some(fair_scoring::ByteSize(1 << 30))).is_ok());
        assert!(check_memory_bound(&graph, None).is_ok());
        // Only a given bound, and only when the U-Score is computed, is checked early.
        let given = |criteria: &[&str]| {
            raw(PruneSection {
                alpha: Some(0.2),
                criteria: Some(criteria.iter().map(|c| c.to_string()).collect()),
                max_memory: Some(MaxMemory::Limit(fair_scoring::ByteSize(1))),
                ..Default::default()
            })
            .resolve()
            .unwrap()
            .given_max_memory
        };
        assert_eq!(given(&["u", "r"]), Some(fair_scoring::ByteSize(1)));
        assert_eq!(given(&["r", "l1"]), None);
    }

    #[test]
    fn a_prune_run_needs_weights_named_by_setting() {
        let mut config = RunConfig::default();
        config.model.zoo = Some("mlp".into());
        let e = check_weights(&config).unwrap_err();
        let PipelineError::Invalid { setting, detail } = &e else {
            panic!("{e}");
        };
        assert_eq!(setting, "weights");
        assert!(
            detail.contains("`weights` FILE") && detail.contains("`graph` model.onnx"),
            "{e}"
        );
        assert!(!detail.contains("--"), "{e}");
        config.model.weights = Some("w.safetensors".into());
        assert!(check_weights(&config).is_ok());
    }
}
