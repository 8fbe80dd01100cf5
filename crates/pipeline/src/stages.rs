//! The pipeline's stages as functions, each usable on its own with typed inputs and
//! outputs. [`crate::Pruner::run`] composes them in this order:
//!
//! 1. [`score`]: every criterion once, or reused (in part) from stored scores → [`Scored`];
//! 2. [`selector`]: the per-layer curves of the scores → a [`Selector`];
//! 3. [`select`]: one goal → per-layer counts and a plan resolved over coupled layers
//!    ([`Selection`]);
//! 4. [`apply`]: surgery → the pruned [`Model`];
//! 5. [`after_surgery`]: reader reconstruction, then BatchNorm recalibration →
//!    [`AfterSurgeryDone`] (what ran, as the report records it);
//! 6. [`evaluate`]: top-1 and loss on a test split (one-shot, and again after fine-tuning);
//! 7. [`finetune`]: in-process fine-tuning, optionally distilled from the unpruned model;
//! 8. [`export`]: weights, IR, PyTorch and ONNX models, `finetune.py` with `finetune.json`
//!    ([`finetune_spec`]) and `plan.json`.
//!
//! ```
//! use fair_pipeline::stages::{self, AfterSurgery};
//! use fair_pipeline::{Goal, Method};
//! use fair_runtime::Model;
//! use fair_scoring::{Progress, Registry, ScoringSettings};
//!
//! let graph = fair_zoo::build("vgg_compact", &[1, 8, 8], 2)?;
//! let model = Model::new(graph, tch::Device::Cpu, 0)?;
//! let criteria = ["l1".to_owned(), "l2".to_owned()];
//! let settings = ScoringSettings::default();
//! let scored = stages::score(&model, None, &Registry::default(), &criteria, &settings, None, Progress::QUIET)?;
//! let selector = stages::selector(&scored.scores, Method::Tod, "l1", "l2", "l1", Default::default())?;
//! let selection = stages::select(&selector, Goal::Alpha(0.5), Method::Tod)?;
//! let pruned = stages::apply(&model, &selection.resolution)?;
//! // No training split here: nothing runs after surgery.
//! let done = stages::after_surgery(&model, &pruned, &selection.resolution, &AfterSurgery::default(), None)?;
//! assert!(done.reconstruction.is_none() && done.recalibration.is_none());
//! assert!(pruned.graph().macs() < model.graph().macs());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;
use std::time::Instant;

use fair_analysis::{
    Goal, Method, Plan, Resolution, ScoreFile, SelectOptions, Selection, Selector,
};
use fair_data::{ImageSource, Transform};
use fair_runtime::Model;
use fair_scoring::{Calibration, Progress, Registry, ScoringSettings};
use fair_surgery::FinetuneSpec;
use fair_train::{BnRecalibration, Distillation, Reconstruction, TrainSettings};

use crate::error::PipelineError;
use crate::report::{Accuracy, RecalibrationInfo, ReconstructionInfo};

/// Batch size of evaluations.
const EVAL_BATCH: usize = 512;

/// What [`score`] returns: the scores and how they came about.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Scores of every requested criterion (and of any other criterion a reused stored file
    /// holds).
    pub scores: ScoreFile,
    /// Whether the stored scores were reused whole (nothing was scored).
    pub reused: bool,
    /// The criteria whose stored scores were reused while the others were scored and
    /// merged in (empty unless the stored file held only some of them).
    pub partly_reused: Vec<String>,
    /// The calibration data's digest (empty without data), which stored scores were
    /// checked against.
    pub data_digest: String,
}

/// Scores `model` with the criteria `names` (made by `registry` with `settings`) on
/// `calibration` (needed by data-driven criteria).
///
/// Stored scores (`stored`) are reused for every criterion they hold for the same model,
/// calibration data and settings ([`fair_scoring::reusable`]): when they hold them all,
/// nothing is scored; when they hold some, only the others are scored and merged in
/// ([`ScoreFile::merge`]; a stored criterion among the others, with other settings, is
/// replaced), and when the merge is refused every criterion is scored afresh. With
/// `progress` on, a line on stderr says what was reused.
#[allow(clippy::too_many_arguments)]
pub fn score(
    model: &Model,
    calibration: Option<&Calibration>,
    registry: &Registry,
    names: &[String],
    settings: &ScoringSettings,
    stored: Option<ScoreFile>,
    progress: Progress,
) -> Result<Scored, PipelineError> {
    let say = |msg: String| {
        if progress.enabled {
            eprintln!("{msg}");
        }
    };
    let criteria = registry.create_all(names, settings)?;
    let model_digest = fair_scoring::model_digest(model)?;
    let data_digest = match calibration {
        Some(c) => c.digest()?,
        None => String::new(),
    };
    // Which requested criteria the stored file already holds for this model, data and
    // settings: only the others are scored, and merged into it (`ScoreFile::merge`).
    let fit: Vec<bool> = stored.as_ref().map_or_else(Vec::new, |f| {
        (0..criteria.len())
            .map(|i| fair_scoring::reusable(f, &model_digest, &data_digest, &criteria[i..=i]))
            .collect()
    });
    let (mut kept, mut missing) = (Vec::new(), Vec::new());
    for (i, c) in criteria.iter().enumerate() {
        let list = if fit.get(i).copied().unwrap_or(false) {
            &mut kept
        } else {
            &mut missing
        };
        list.push(c.name().to_owned());
    }
    let (scores, reused, partly_reused) = match stored {
        Some(f) if missing.is_empty() => {
            say("reusing stored scores (same model, data and settings)".into());
            (f, true, Vec::new())
        }
        Some(f) if !kept.is_empty() => {
            let to_score = registry.create_all(&missing, settings)?;
            let added = fair_scoring::score(model, calibration, &to_score, progress)?;
            // Stored scores of a criterion whose settings changed are replaced.
            let mut merged = f.clone();
            for name in &missing {
                merged.remove_criterion(name);
            }
            match merged.merge(added) {
                Ok(()) => {
                    say(format!(
                        "reusing stored scores of {} (same model, data and settings); \
                         scored {}",
                        kept.join(", "),
                        missing.join(", ")
                    ));
                    (merged, false, kept)
                }
                // The stored file cannot take the new scores (e.g. data-free criteria
                // stored from another draw): score everything on this draw.
                Err(e) => {
                    say(format!("re-scoring every criterion: {e}"));
                    (
                        fair_scoring::score(model, calibration, &criteria, progress)?,
                        false,
                        Vec::new(),
                    )
                }
            }
        }
        _ => (
            fair_scoring::score(model, calibration, &criteria, progress)?,
            false,
            Vec::new(),
        ),
    };
    Ok(Scored {
        scores,
        reused,
        partly_reused,
        data_digest,
    })
}

/// The selector of `scores`: ToD with the signals `remove_by` (low scores are proposed for
/// removal) and `protect_by` (high scores are protected), or uniform counts (which read only
/// `rank_by`); units are ranked by `rank_by`. See [`Selector::from_scores_for`].
pub fn selector(
    scores: &ScoreFile,
    method: Method,
    remove_by: &str,
    protect_by: &str,
    rank_by: &str,
    options: SelectOptions,
) -> Result<Selector, PipelineError> {
    Ok(Selector::from_scores_for(
        scores,
        Path::new("scores"),
        method,
        remove_by,
        protect_by,
        rank_by,
        options,
    )?)
}

/// The per-layer counts at `goal` and the plan they make, resolved over coupled layers
/// ([`Selection::resolution`]); see [`Selector::select`]. Nothing is scored again.
pub fn select(selector: &Selector, goal: Goal, method: Method) -> Result<Selection, PipelineError> {
    Ok(selector.select(goal, method)?)
}

/// [`correct_latency_target_on`] libtorch CPU (the thread count is restored after).
#[allow(clippy::too_many_arguments)]
pub fn correct_latency_target(
    model: &Model,
    selector: &Selector,
    method: Method,
    target: f64,
    table: &fair_analysis::LatencyTable,
    options: &crate::LatencyOptions,
    correction: &crate::CorrectionOptions,
    progress: impl FnMut(&crate::LatencyRound),
) -> Result<crate::Corrected<(Selection, Model)>, PipelineError> {
    correct_latency_target_on(
        &crate::LatencyTimer::libtorch_cpu(),
        model,
        selector,
        method,
        target,
        table,
        options,
        correction,
        progress,
    )
}

/// A latency target met on measurements ([`crate::correct_latency`]): selects at table
/// target `t` on `selector` (which carries `table`, [`Selector::with_latency`]), builds the
/// candidate by surgery and times it interleaved against `model` on `timer`'s runtime at the
/// table's batch and threads ([`crate::LatencyTimer::time`]; `options` gives the rounds and
/// budget, its batch sizes are ignored), and corrects the table target until the measured
/// reduction is within `correction.tolerance` of `target`. Returns every round and the
/// closest candidate (its selection and pruned model). `progress` is told each round.
#[allow(clippy::too_many_arguments)]
pub fn correct_latency_target_on(
    timer: &crate::LatencyTimer,
    model: &Model,
    selector: &Selector,
    method: Method,
    target: f64,
    table: &fair_analysis::LatencyTable,
    options: &crate::LatencyOptions,
    correction: &crate::CorrectionOptions,
    progress: impl FnMut(&crate::LatencyRound),
) -> Result<crate::Corrected<(Selection, Model)>, PipelineError> {
    correct_latency_target_in(
        timer, None, model, selector, method, target, table, options, correction, progress,
    )
}

/// [`correct_latency_target_on`], timing every round in `session` when one is given (made
/// by `timer` at the table's batch and threads with `options`, and kept by the caller, so
/// that on ONNX Runtime or eager PyTorch one helper process, with `model` exported once, serves every round
/// and what is timed after), else in a new session per round.
#[allow(clippy::too_many_arguments)]
pub(crate) fn correct_latency_target_in(
    timer: &crate::LatencyTimer,
    mut session: Option<&mut crate::timing::Session>,
    model: &Model,
    selector: &Selector,
    method: Method,
    target: f64,
    table: &fair_analysis::LatencyTable,
    options: &crate::LatencyOptions,
    correction: &crate::CorrectionOptions,
    mut progress: impl FnMut(&crate::LatencyRound),
) -> Result<crate::Corrected<(Selection, Model)>, PipelineError> {
    // The largest table target the table reaches.
    let upper = match selector.select(Goal::Latency(0.999), method) {
        Ok(_) => 0.999,
        Err(fair_analysis::AnalysisError::LatencyUnreachable { best, .. }) => {
            (best - 1e-9).max(1e-6)
        }
        Err(e) => return Err(e.into()),
    };
    // The kept widths of every candidate timed, with its round: a table target that
    // selects the same widths again (fast steps make neighbouring targets alike) is not
    // timed again; its earlier figures, marked reused, end the search
    // ([`crate::correct_latency`]).
    let mut timed_widths: Vec<(fair_analysis::Widths, crate::LatencyRound)> = Vec::new();
    crate::correct_latency(target, upper, correction, |t| {
        let selection = selector.select(Goal::Latency(t), method)?;
        let predicted = selector
            .predicted_latency(&selection)
            .transpose()?
            .map_or(0.0, |s| 1.0 - s / table.full_seconds);
        let widths = selection.widths();
        let pruned = apply(model, &selection.resolution)?;
        if let Some((_, earlier)) = timed_widths.iter().find(|(w, _)| *w == widths) {
            let round = crate::LatencyRound {
                table_target: t,
                predicted,
                reused: true,
                ..earlier.clone()
            };
            progress(&round);
            return Ok((round, (selection, pruned)));
        }
        let name = |i: usize| {
            if i == 0 {
                "the unpruned model".to_owned()
            } else {
                format!("the candidate at table target {:.1}%", t * 100.0)
            }
        };
        let timed = match session.as_deref_mut() {
            Some(session) => session.add(&[model, &pruned], &name)?,
            None => timer
                .time(
                    &[vec![model, &pruned]],
                    &|_, i| name(i),
                    table.key.batch,
                    table.key.threads,
                    options,
                )?
                .remove(0),
        };
        let round = crate::LatencyRound::timed(t, predicted, &timed[0], &timed[1]);
        timed_widths.push((widths, round.clone()));
        progress(&round);
        Ok((round, (selection, pruned)))
    })
}

/// Surgery: the smaller model `resolution` (made for `model`'s graph, e.g.
/// [`Selection::resolution`]) leaves; `model` is unchanged. See
/// [`fair_surgery::apply_resolution`].
pub fn apply(model: &Model, resolution: &Resolution) -> Result<Model, PipelineError> {
    Ok(fair_surgery::apply_resolution(model, resolution)?.model)
}

/// One step after surgery as it runs: its settings and the training split it draws its
/// batches from.
#[derive(Clone)]
pub struct OnData<'d, S> {
    /// The step's settings (batches, batch size, seed, ...).
    pub settings: S,
    /// The training split.
    pub train: &'d dyn ImageSource,
    /// Its transform, used as given (switch augmentation off: [`Transform::for_evaluation`]).
    pub transform: Transform,
}

/// The steps [`after_surgery`] runs; `None` skips a step ([`Default`]: none).
#[derive(Clone, Default)]
pub struct AfterSurgery<'d> {
    /// Reader reconstruction ([`fair_train::reconstruct_readers`]).
    pub reconstruction: Option<OnData<'d, Reconstruction>>,
    /// BatchNorm recalibration ([`fair_train::recalibrate_batch_norm`]).
    pub recalibration: Option<OnData<'d, BnRecalibration>>,
}

/// What [`after_surgery`] ran, as the report records it
/// ([`crate::PruneResult::reconstruction`], [`crate::PruneResult::recalibration`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AfterSurgeryDone {
    /// The reader reconstruction, if it ran.
    pub reconstruction: Option<ReconstructionInfo>,
    /// The BatchNorm recalibration, if it ran.
    pub recalibration: Option<RecalibrationInfo>,
}

/// The steps right after surgery, in place on `pruned` (made from `original` by
/// `resolution`), in their order: first every convolution and linear layer that lost input
/// channels is refitted by least squares against `original`'s output
/// ([`fair_train::reconstruct_readers`]), then every BatchNorm's running statistics are
/// re-estimated ([`fair_train::recalibrate_batch_norm`]). Each step runs when `steps` has it.
/// With `progress` (the pruned model's name, e.g. a goal's label) a line on stderr announces
/// each step.
pub fn after_surgery(
    original: &Model,
    pruned: &Model,
    resolution: &Resolution,
    steps: &AfterSurgery<'_>,
    progress: Option<&str>,
) -> Result<AfterSurgeryDone, PipelineError> {
    let reconstruction = match &steps.reconstruction {
        Some(OnData {
            settings,
            train,
            transform,
        }) => {
            if let Some(label) = progress {
                eprintln!(
                    "reconstructing the readers of {label} on {} batch(es) of {}",
                    settings.batches,
                    train.name()
                );
            }
            let started = Instant::now();
            let done = fair_train::reconstruct_readers(
                original, pruned, resolution, *train, transform, settings,
            )?;
            Some(ReconstructionInfo {
                batches: settings.batches,
                batch_size: done.samples.checked_div(settings.batches).unwrap_or(0),
                samples: done.samples,
                layers: done.layers.into_iter().map(Into::into).collect(),
                ridge: settings.ridge,
                seed: settings.seed,
                data: train.name().to_owned(),
                seconds: started.elapsed().as_secs_f64(),
            })
        }
        None => None,
    };
    let recalibration = match &steps.recalibration {
        Some(OnData {
            settings,
            train,
            transform,
        }) => {
            if let Some(label) = progress {
                eprintln!(
                    "recalibrating BatchNorm of {label} on {} batch(es) of {}",
                    settings.batches,
                    train.name()
                );
            }
            let started = Instant::now();
            let done = fair_train::recalibrate_batch_norm(pruned, *train, transform, settings)?;
            Some(RecalibrationInfo {
                layers: done.layers,
                batches: done.batches,
                batch_size: done.samples.checked_div(done.batches).unwrap_or(0),
                samples: done.samples,
                seed: settings.seed,
                data: train.name().to_owned(),
                seconds: started.elapsed().as_secs_f64(),
            })
        }
        None => None,
    };
    Ok(AfterSurgeryDone {
        reconstruction,
        recalibration,
    })
}

/// Top-1 and loss of `model` on `test` (transformed by `transform`, augmentation off); an
/// error when the loss is NaN or infinite.
pub fn evaluate(
    model: &Model,
    test: &dyn ImageSource,
    transform: &Transform,
) -> Result<Accuracy, PipelineError> {
    let r = fair_train::evaluate(model, test, &transform.for_evaluation(), EVAL_BATCH)?;
    if !r.loss.is_finite() {
        return Err(PipelineError::invalid(
            "weights",
            format!(
                "the model's test loss is {}: its outputs hold NaN or infinite values",
                r.loss
            ),
        ));
    }
    Ok(Accuracy {
        top1: r.top1,
        loss: r.loss,
    })
}

/// Fine-tunes `pruned` in process on `train` (augmented by `transform`) for
/// `settings.epochs` epochs, distilled from `teacher` (the unpruned model and the
/// distillation settings) when given; see [`fair_train::train_with_teacher`]. 0 epochs does
/// nothing. With `progress` (the model's name) a line on stderr announces it and progress
/// bars show.
pub fn finetune(
    pruned: &mut Model,
    teacher: Option<(&Model, &Distillation)>,
    train: &dyn ImageSource,
    transform: &Transform,
    settings: &TrainSettings,
    progress: Option<&str>,
) -> Result<(), PipelineError> {
    if settings.epochs == 0 {
        return Ok(());
    }
    if let Some(label) = progress {
        eprintln!("fine-tuning {label} for {} epoch(s)", settings.epochs);
    }
    fair_train::train_with_teacher(
        pruned,
        teacher,
        train,
        None,
        transform,
        &transform.for_evaluation(),
        settings,
        progress.is_some(),
    )?;
    Ok(())
}

/// The `finetune.json` of an export made outside torchrun, as [`crate::Pruner::run`] writes
/// it: the model's input and classes, the fine-tuning (or evaluation) `transform` and the
/// fine-tuning `settings` when known, no data source.
pub fn finetune_spec(
    graph: &fair_ir::Graph,
    transform: Option<&Transform>,
    settings: Option<&TrainSettings>,
) -> FinetuneSpec {
    crate::torchrun::spec_for(graph, transform, settings)
}

/// Exports `model` into the directory `dir` (created if missing): `model.safetensors`,
/// `model.toml`, `model.py`, `model.onnx`, `finetune.py` and `finetune.json` (from `spec`,
/// e.g. [`finetune_spec`]; see [`fair_surgery::export_with`]), and `plan` as `plan.json`.
/// Each file is written atomically, but `dir` is taken as given: [`crate::Pruner::run`]
/// exports into a staged directory checked by its [`crate::OutputGuard`] (never onto an
/// input); a caller of this function alone should check `dir` the same way
/// ([`crate::OutputGuard::dir`]).
pub fn export(
    model: &Model,
    plan: &Plan,
    dir: &Path,
    spec: &FinetuneSpec,
) -> Result<(), PipelineError> {
    std::fs::create_dir_all(dir).map_err(|source| fair_fs::FsError::Io {
        action: "cannot create",
        path: dir.to_owned(),
        source,
    })?;
    fair_surgery::export_with(model, dir, spec)?;
    plan.save(&dir.join("plan.json"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pruner;

    use crate::test_data::toy as data;

    fn transform() -> Transform {
        Transform {
            mean: vec![0.5],
            std: vec![0.25],
            ..Default::default()
        }
    }

    #[test]
    fn the_stages_one_by_one_make_what_the_pruner_makes() {
        tch::set_num_threads(1);
        let graph = fair_zoo::build("vgg_compact", &[1, 8, 8], 2).unwrap();
        let model = Model::new(graph, tch::Device::Cpu, 1).unwrap();
        let d = data(48);
        let reconstruction = Reconstruction {
            batches: 2,
            batch_size: 24,
            seed: 5,
            ..Default::default()
        };
        let recalibration = BnRecalibration {
            batches: 3,
            batch_size: 16,
            seed: 4,
        };
        let goal = Goal::Alpha(0.5);
        let outcome = Pruner::new(&model)
            .criteria(["l1"])
            .remove_by("l1")
            .protect_by("l2")
            .rank_by("l1")
            .goal(goal)
            .evaluate_on(&d, &transform())
            .reconstruct_on(&d, &transform(), reconstruction.clone())
            .recalibrate_on(&d, &transform(), recalibration.clone())
            .run()
            .unwrap();

        let names = ["l1".to_owned(), "l2".to_owned()];
        let settings = crate::Preset::default().settings(32).scoring;
        let scored = score(
            &model,
            None,
            &Registry::default(),
            &names,
            &settings,
            None,
            Progress::QUIET,
        )
        .unwrap();
        assert!(!scored.reused && scored.partly_reused.is_empty());
        let options = crate::Preset::default().select_options();
        let selector = selector(&scored.scores, Method::Tod, "l1", "l2", "l1", options).unwrap();
        let selection = select(&selector, goal, Method::Tod).unwrap();
        let pruned = apply(&model, &selection.resolution).unwrap();
        let steps = AfterSurgery {
            reconstruction: Some(OnData {
                settings: reconstruction,
                train: &d,
                transform: transform(),
            }),
            recalibration: Some(OnData {
                settings: recalibration,
                train: &d,
                transform: transform(),
            }),
        };
        let done = after_surgery(&model, &pruned, &selection.resolution, &steps, None).unwrap();
        let one_shot = evaluate(&pruned, &d, &transform()).unwrap();

        let r = &outcome.report.results[0];
        let (mut ours, mut theirs) = (
            done.reconstruction.unwrap(),
            r.reconstruction.clone().unwrap(),
        );
        // Wall times differ from run to run.
        ours.seconds = 0.0;
        theirs.seconds = 0.0;
        assert_eq!(ours, theirs);
        let (mut ours, mut theirs) = (
            done.recalibration.unwrap(),
            r.recalibration.clone().unwrap(),
        );
        ours.seconds = 0.0;
        theirs.seconds = 0.0;
        assert_eq!(ours, theirs);
        assert_eq!((ours.layers, ours.samples), (5, 48));
        assert_eq!(Some(one_shot), r.one_shot);
        for (name, t) in outcome.models[0].named_tensors() {
            assert!(t.equal(pruned.tensor(&name).unwrap()), "{name}");
        }
    }
}
