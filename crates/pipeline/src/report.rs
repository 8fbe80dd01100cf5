//! The typed result of a pipeline run, written as `report.json`. Its JSON Schema is
//! generated from these types (`docs/report-schema.json`, checked by a test) and versioned
//! by [`REPORT_SCHEMA_VERSION`].

use std::collections::BTreeMap;

use fair_analysis::{Goal, GroupRule, MacCost, Method};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::latency::{Latency, Spread};
use crate::preset::Preset;

/// The version of the report's schema. Version 1 was the untyped `report.json` of
/// fair-pruner before the pipeline became a library; version 2 is [`PruneReport`]. Any
/// change that removes or renames a field, or changes its meaning, bumps it.
pub const REPORT_SCHEMA_VERSION: u32 = 2;

/// Everything a prune run did and measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneReport {
    /// [`REPORT_SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// fair-pruner version.
    pub fair_pruner_version: String,
    /// libtorch version the binary was built against.
    pub libtorch: String,
    /// The model's name.
    pub model: String,
    /// The weights file, if the model came from one.
    pub weights: Option<String>,
    /// The dataset, if one was used for evaluation or fine-tuning.
    pub data: Option<String>,
    /// The run's seed.
    pub seed: u64,
    /// How counts and units were chosen.
    pub selection: SelectionSettings,
    /// The calibration data, if any.
    pub calibration: Option<CalibrationInfo>,
    /// How the scores were obtained.
    pub scoring: ScoringInfo,
    /// Distillation from the unpruned model during fine-tuning (either engine); absent when
    /// no fine-tuning ran or it used the plain cross-entropy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distillation: Option<DistillationInfo>,
    /// What became of the steps after surgery (reader reconstruction, BatchNorm
    /// recalibration): run, off, or turned off where the preset asks for them. Absent in
    /// reports written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_surgery: Option<AfterSurgerySteps>,
    /// The unpruned model.
    pub before: ModelFigures,
    /// One entry per goal, in the order given.
    pub results: Vec<PruneResult>,
    /// Every file of the output directory, relative to it (empty without an output
    /// directory).
    pub files: Vec<String>,
}

/// What became of each step after surgery. Each goal's result has the step's figures
/// ([`PruneResult::reconstruction`], [`PruneResult::recalibration`]) when it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AfterSurgerySteps {
    /// Reader reconstruction.
    pub reconstruction: StepStatus,
    /// BatchNorm recalibration.
    pub recalibration: StepStatus,
}

/// What became of a step after surgery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// It ran after every surgery.
    Ran,
    /// Neither the preset nor the settings ask for it.
    Off,
    /// The preset asks for it and the settings turned it off (e.g. `reconstruct = 0`,
    /// [`crate::Pruner::no_reconstruction`]).
    OptedOut,
}

/// How counts and units were chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectionSettings {
    /// ToD or uniform counts.
    pub method: Method,
    /// How coupled layers settle on one set of units.
    pub rule: GroupRule,
    /// ToD's removal signal (low = remove).
    pub remove_by: String,
    /// ToD's protection signal (high = protect).
    pub protect_by: String,
    /// The criterion ordering the units each layer removes (lowest first).
    pub rank_by: String,
    /// The preset the settings started from (individual settings may override it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// Exponent γ of the MAC-aware counts (0: blind to MACs).
    #[serde(default)]
    pub mac_weight: f64,
    /// What the MAC weight measured each layer's cost by.
    #[serde(default)]
    pub mac_cost: MacCost,
    /// What the MAC weight's costs counted under a latency target (ToD counts): `latency`
    /// (the table's savings) or `macs`; absent for other goals, uniform counts and without
    /// a MAC weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weigh_by: Option<fair_analysis::WeighBy>,
    /// Whether a target was met by blending two ToD solutions (`exact_target`).
    #[serde(default)]
    pub exact_target: bool,
    /// Every layer keeps at least this many units.
    pub min_keep: usize,
    /// Kept units are rounded up to a multiple of this.
    pub round_to: usize,
    /// Layers never pruned (besides the output layer).
    pub protected: Vec<String>,
}

/// The calibration data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CalibrationInfo {
    /// Number of samples.
    pub samples: usize,
    /// Where they came from.
    pub description: String,
    /// SHA-256 of the samples and labels.
    pub digest: String,
}

/// How the scores were obtained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoringInfo {
    /// Every criterion: its time, settings and notes.
    pub criteria: BTreeMap<String, CriterionInfo>,
    /// Whether stored scores (same model, data and settings) were reused instead of computed.
    pub reused: bool,
    /// When only some criteria were stored: the ones reused, while the others were computed
    /// and merged in (`ScoreFile::merge`). Empty when all or none were reused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partly_reused: Vec<String>,
}

/// One criterion's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CriterionInfo {
    /// Wall-clock seconds it took when it was computed.
    pub seconds: f64,
    /// Its settings.
    pub settings: serde_json::Value,
    /// Notes it raised.
    pub notes: Vec<String>,
}

/// Top-1 accuracy and mean loss on the test split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Accuracy {
    /// Fraction correct.
    pub top1: f64,
    /// Mean cross-entropy.
    pub loss: f64,
}

/// Size, accuracy and latency of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelFigures {
    /// Trainable parameters.
    pub params: usize,
    /// Multiply-accumulates per sample.
    pub macs: u64,
    /// Accuracy on the test split, if evaluated.
    pub accuracy: Option<Accuracy>,
    /// Forward latency per batch size, measured interleaved with the other models of the
    /// run (empty when not measured).
    pub latency: Vec<Latency>,
}

/// Fractions removed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reduction {
    /// Fraction of parameters removed.
    pub params: f64,
    /// Fraction of MACs removed.
    pub macs: f64,
}

/// One pruned model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PruneResult {
    /// A short label, also the export directory's name (`alpha-0.05`, `macs-0.5`, ...).
    pub label: String,
    /// The goal.
    pub goal: Goal,
    /// The α (ToD) or common ratio (uniform) that met it.
    pub setting: f64,
    /// What the pruned model removes.
    pub achieved: Reduction,
    /// Milliseconds spent turning the stored scores into the plan.
    pub threshold_ms: f64,
    /// Accuracy right after surgery, before any fine-tuning — after reader reconstruction
    /// and BatchNorm recalibration when `reconstruction` and `recalibration` are present.
    pub one_shot: Option<Accuracy>,
    /// Reader reconstruction after surgery (before the recalibration, the one-shot
    /// evaluation and any fine-tuning), when it was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconstruction: Option<ReconstructionInfo>,
    /// BatchNorm recalibration after surgery (before the one-shot evaluation and any
    /// fine-tuning), when it was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalibration: Option<RecalibrationInfo>,
    /// Fine-tuning epochs run after surgery (0: none).
    pub finetune_epochs: usize,
    /// The fine-tuning run on PyTorch DDP (`--finetune-with torchrun`), as its
    /// `finetune/result.json` reported it; absent when fine-tuning ran in-process (tch) or
    /// not at all. `after.accuracy` is fair-pruner's own evaluation of the weights it wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torchrun: Option<TorchrunRun>,
    /// The final model (after fine-tuning, if any).
    pub after: ModelFigures,
    /// The export directory, relative to the output directory.
    pub export: Option<String>,
    /// Per prunable layer: units, the count its own ToD curve asked to remove, and the units
    /// the exported model keeps (after coupled layers settled).
    pub layers: Vec<LayerResult>,
    /// A latency target's figures: the table's prediction and the measured latency against
    /// the target; absent for other goals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_target: Option<LatencyTargetResult>,
    /// A goal other than a latency target run with `latency-on`: the pruned model timed
    /// against the unpruned one on that runtime, as a latency target's final figure is
    /// (no table, no correction); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_latency: Option<RuntimeLatency>,
}

/// A pruned model timed on the runtime of `latency-on` without a latency target: the same
/// measurement as a latency target's [`LatencyTargetResult::measured`], at `latency-batch`
/// and `latency-threads`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeLatency {
    /// The batch size of the measurement.
    pub batch: usize,
    /// The threads of the measurement.
    pub threads: usize,
    /// The MAC cut: the unpruned model's MACs over the pruned model's.
    pub mac_cut: f64,
    /// The pruned model timed against the unpruned one, interleaved; its
    /// `gain_per_mac_cut` is over [`RuntimeLatency::mac_cut`].
    pub measured: MeasuredLatency,
}

/// A latency target ([`Goal::Latency`]) against its table and the measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyTargetResult {
    /// The fraction of latency to remove.
    pub target: f64,
    /// The runtime the table was measured on (as its key says).
    pub runtime: String,
    /// The version of the table's runtime library, as its key records it (the `onnxruntime`
    /// version for `onnxruntime-cpu`, the `torch` version for `pytorch-cpu`); absent when
    /// not recorded (libtorch is
    /// [`PruneReport::libtorch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    /// The batch size of the table and of the measurement.
    pub batch: usize,
    /// The threads of the table and of the measurement.
    pub threads: usize,
    /// Where the table came from: `measured`, `cached` (an earlier run's, same key) or
    /// `given` (a file).
    pub table: String,
    /// The table's file: the given one, or its name in the output directory.
    pub table_file: String,
    /// Whether the table's measurement was too noisy to trust.
    pub table_noisy: bool,
    /// The fraction of latency removed as the table predicts it.
    pub predicted: f64,
    /// The MAC cut: the unpruned model's MACs over the pruned model's.
    pub mac_cut: f64,
    /// The pruned model timed against the unpruned one, interleaved, on the table's runtime
    /// (libtorch CPU where fair-pruner does not time on it) at the table's batch and
    /// threads; absent when latency was not measured.
    pub measured: Option<MeasuredLatency>,
    /// The measured correction ([`crate::correct_latency`]): every candidate built and
    /// timed, the first selected at the target itself, the next ones at corrected table
    /// targets; the exported model is the candidate closest to the target. Empty when no
    /// correction ran (latency not measured, or a table of another runtime than libtorch CPU).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<LatencyRound>,
    /// The relative tolerance the correction aimed at (`latency-tolerance`); absent when no
    /// correction ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// Whether the kept candidate's measured reduction (in its round) is within
    /// `tolerance` of the target; absent when no correction ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
    /// Whether the final measurement (`measured`, timed again after the correction) is
    /// within `tolerance` of the target; absent when either is. It can differ from `met`
    /// where timings vary from one measurement to the next by more than the tolerance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_met: Option<bool>,
}

/// One round of a latency target's measured correction: a candidate selected at a table
/// target, built and timed against the unpruned model (interleaved).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyRound {
    /// The fraction of latency the selection aimed at on the table.
    pub table_target: f64,
    /// The fraction the table predicts for the candidate selected.
    pub predicted: f64,
    /// The measured fraction of latency removed, 1 − 1 / speed-up, with the quartiles of
    /// the round-by-round speed-ups.
    pub removed: Spread,
    /// The measured round-by-round speed-up (unpruned time / candidate time).
    pub speedup: Spread,
    /// Whether the measurement was too noisy to trust.
    pub noisy: bool,
    /// The candidate had the kept widths of an earlier round: its figures are that round's,
    /// not timed again (and the correction stopped there).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
}

impl LatencyRound {
    /// The round of a candidate timed interleaved against the unpruned model
    /// (`reference`, `candidate`: the two [`crate::Latency`] of one set): the speed-up's
    /// round-by-round spread (the ratio of the medians when the candidate has none), the
    /// reduction `1 − 1 / speed-up` at each of its quartiles, noisy when either was.
    pub fn timed(
        table_target: f64,
        predicted: f64,
        reference: &crate::Latency,
        candidate: &crate::Latency,
    ) -> LatencyRound {
        let speedup = candidate.speedup.unwrap_or(crate::Spread::of(&[
            reference.ms.median / candidate.ms.median
        ]));
        let removed = |s: f64| 1.0 - 1.0 / s;
        LatencyRound {
            table_target,
            predicted,
            removed: crate::Spread {
                median: removed(speedup.median),
                q1: removed(speedup.q1),
                q3: removed(speedup.q3),
            },
            speedup,
            noisy: candidate.noisy || reference.noisy,
            reused: false,
        }
    }
}

/// The pruned model's latency measured against the unpruned model's (interleaved rounds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MeasuredLatency {
    /// Where it was measured (`libtorch-cpu`, `onnxruntime-cpu`, `pytorch-cpu` or `cuda`;
    /// reports written before `cuda` could be measured on may say `libtorch-cuda`).
    pub runtime: String,
    /// The version of the runtime library it was measured with (the `onnxruntime` version
    /// for `onnxruntime-cpu`, the `torch` version for `pytorch-cpu`, the GPU's name for
    /// `cuda`); absent for libtorch CPU ([`PruneReport::libtorch`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    /// The unpruned model, milliseconds per forward pass.
    pub before_ms: Spread,
    /// The pruned model, milliseconds per forward pass.
    pub after_ms: Spread,
    /// The latency gain: the round-by-round speed-up (unpruned time / pruned time).
    pub speedup: Spread,
    /// The fraction of latency removed, 1 − 1 / median speed-up: compare with the target.
    pub removed: f64,
    /// The latency gain over the MAC cut (median speed-up / [`LatencyTargetResult::mac_cut`]):
    /// 1 when latency falls as fast as MACs.
    pub gain_per_mac_cut: f64,
    /// Whether the times or the speed-up are too noisy to trust.
    pub noisy: bool,
}

/// BatchNorm recalibration of a pruned model ([`fair_train::recalibrate_batch_norm`]): every
/// BatchNorm's running mean and variance re-estimated as the average batch statistics of its
/// input over training batches, nothing else changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecalibrationInfo {
    /// BatchNorm layers recalibrated (0: the model has none and was left alone).
    pub layers: usize,
    /// Batches averaged over.
    pub batches: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// Samples in all batches.
    pub samples: usize,
    /// Seed of the batch draw.
    pub seed: u64,
    /// The training split the batches came from (no augmentation).
    pub data: String,
    /// Wall time of the recalibration (decoding the batches included).
    #[serde(default)]
    pub seconds: f64,
}

/// Reader reconstruction of a pruned model ([`fair_train::reconstruct_readers`]): every
/// convolution and linear layer that lost input channels refitted by least squares to the
/// unpruned model's output on training batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconstructionInfo {
    /// Every layer that lost input channels, in graph order.
    pub layers: Vec<ReconstructedLayer>,
    /// Batches each layer was fitted on.
    pub batches: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// Samples in all batches.
    pub samples: usize,
    /// Ridge strength towards the surgery's weights (relative to the mean diagonal of the
    /// layer's input Gram matrix).
    pub ridge: f64,
    /// Seed of the batch draw.
    pub seed: u64,
    /// The training split the batches came from (no augmentation).
    pub data: String,
    /// Wall time of the reconstruction (decoding the batches included).
    pub seconds: f64,
}

/// One layer of a [`ReconstructionInfo`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconstructedLayer {
    /// The layer.
    pub layer: String,
    /// Unknowns per output channel (input channels × kernel area, + 1 for a bias).
    pub inputs: usize,
    /// Squared error of its output against the unpruned model's on the batches, relative to
    /// the unpruned output's squared norm, with the surgery's weights (absent when skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_before: Option<f64>,
    /// The same after the refit (absent when skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_after: Option<f64>,
    /// Why it was left as the surgery sliced it, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl From<fair_train::LayerFit> for ReconstructedLayer {
    fn from(f: fair_train::LayerFit) -> Self {
        ReconstructedLayer {
            layer: f.layer,
            inputs: f.inputs,
            error_before: f.error_before,
            error_after: f.error_after,
            skipped: f.skipped,
        }
    }
}

/// Distillation settings of the fine-tuning ([`fair_train::Distillation`]): loss =
/// (1 − weight)·CE + weight·T²·KL(softmax(teacher/T) ‖ softmax(student/T)), the teacher
/// being the unpruned model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DistillationInfo {
    /// Softmax temperature T.
    pub temperature: f64,
    /// Weight of the distillation term.
    pub weight: f64,
}

/// A fine-tuning run on PyTorch DDP launched by torchrun.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TorchrunRun {
    /// Processes per node (`--nproc`).
    pub nproc: usize,
    /// Processes in all (nodes × processes per node), as the script saw it.
    pub world_size: usize,
    /// The process-group backend (`gloo`, `nccl`; absent for a single process).
    pub backend: Option<String>,
    /// `cpu` or `cuda`.
    pub device: String,
    /// Whether the forward pass ran under autocast (CUDA only).
    pub amp: bool,
    /// The PyTorch version of the interpreter.
    pub torch: String,
    /// Epochs done.
    pub epochs: usize,
    /// Optimiser steps done.
    pub steps: u64,
    /// Mean training loss of every epoch.
    pub train_loss: Vec<f64>,
    /// Top-1 and loss on the test split, as the script measured them.
    pub test: Accuracy,
    /// Test samples the script evaluated.
    pub test_samples: usize,
    /// Wall-clock seconds of the torchrun process.
    pub seconds: f64,
    /// The command that ran, in the export directory.
    pub command: Vec<String>,
}

/// One layer of a [`PruneResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LayerResult {
    /// The layer.
    pub layer: String,
    /// Units before pruning.
    pub units: usize,
    /// Units its own count asked to remove (ToD count or uniform share, options applied).
    pub requested: usize,
    /// Units the pruned model keeps: exactly its width in the export.
    pub keep: usize,
    /// Where a unit that `requested` counts stands for several of the layer's channels (or
    /// features): how many (an attention head's `head_dim`; a grouped convolution's
    /// within-group unit, one channel in each group). `units` and `keep` stay in channels,
    /// so `keep / unit_channels` units are kept. Absent when a unit is one channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_channels: Option<usize>,
    /// What such a unit is (`head`, `within-group channel`); absent with `unit_channels`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_name: Option<String>,
}

impl PruneReport {
    /// Every criterion's notes (e.g. classes with few samples), in criterion order.
    pub fn notes(&self) -> Vec<&str> {
        self.scoring
            .criteria
            .values()
            .flat_map(|c| c.notes.iter().map(String::as_str))
            .collect()
    }
}

/// The JSON Schema of [`PruneReport`], pretty-printed (what `docs/report-schema.json` holds).
pub fn report_schema() -> String {
    let schema = schemars::schema_for!(PruneReport);
    serde_json::to_string_pretty(&schema).expect("schemas serialise") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Latency, Spread};

    fn latency(ms: f64, speedup: Option<Spread>, noisy: bool) -> Latency {
        Latency {
            batch: 1,
            ms: Spread {
                median: ms,
                q1: ms,
                q3: ms,
            },
            rounds: 9,
            speedup,
            noisy,
            round_ms: Vec::new(),
        }
    }

    #[test]
    fn a_timed_round_takes_its_reduction_from_the_speed_up_quartiles() {
        let reference = latency(10.0, None, false);
        let speedup = Spread {
            median: 2.0,
            q1: 1.6,
            q3: 2.5,
        };
        let r = LatencyRound::timed(0.4, 0.45, &reference, &latency(5.0, Some(speedup), true));
        assert_eq!((r.table_target, r.predicted), (0.4, 0.45));
        assert_eq!(r.speedup, speedup);
        // 1 − 1/2, 1 − 1/1.6, 1 − 1/2.5.
        assert!((r.removed.median - 0.5).abs() < 1e-12);
        assert!((r.removed.q1 - 0.375).abs() < 1e-12);
        assert!((r.removed.q3 - 0.6).abs() < 1e-12);
        assert!(r.noisy, "the candidate's flag");
        // Without round-by-round speed-ups: the ratio of the medians, 10 / 4.
        let r = LatencyRound::timed(
            0.4,
            0.4,
            &latency(10.0, None, true),
            &latency(4.0, None, false),
        );
        assert!((r.removed.median - 0.6).abs() < 1e-12);
        assert_eq!(r.removed.q1, r.removed.median);
        assert!(r.noisy, "the reference's flag");
    }
}
