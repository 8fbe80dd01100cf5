//! Typed results: one seed's `result.json` ([`SeedResult`], its [`Row`]s) as the runner writes
//! it and [`merge_results`] adds runs up, and one network's averaged [`Summary`] (written to
//! `summary.json` and drawn by the tables and charts).
//!
//! The JSON field names are those the `serde_json::Value` code before wrote, so results stored
//! by it load (fields it left out in older files are optional or defaulted) and new and old
//! files mix. Files stored before are not refused for fields they hold that are no longer
//! written (no `deny_unknown_fields`), but a rewrite drops such fields.

use std::collections::BTreeMap;

use fair_pipeline::Spread;
use fair_train::{BnRecalibration, LayerFit, RecalibrationReport, Reconstruction};
use serde::{Deserialize, Serialize};

/// Top-1 (a fraction) on the validation split and on the test split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Top1 {
    /// On the validation split carved from the training split.
    pub val: f64,
    /// On the test split.
    pub test: f64,
}

/// The top-1 of one fine-tune and its wall time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tuned {
    /// On the validation split.
    pub val: f64,
    /// On the test split.
    pub test: f64,
    /// Seconds the fine-tuning took (absent in hand-made files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// A reader reconstruction's settings as a row stores them ([`Reconstruction`]'s fields;
/// `ridge`, `max_inputs` and `seed` are optional, as older files may lack them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconstructionSettings {
    /// Batches each layer was fitted on.
    pub batches: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// Ridge strength.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ridge: Option<f64>,
    /// Largest fit per output channel refitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_inputs: Option<usize>,
    /// Seed of the batch draw (`null` in a [`Summary`], where it follows the seed).
    #[serde(default)]
    pub seed: Option<u64>,
}

impl From<&Reconstruction> for ReconstructionSettings {
    fn from(r: &Reconstruction) -> Self {
        ReconstructionSettings {
            batches: r.batches,
            batch_size: r.batch_size,
            ridge: Some(r.ridge),
            max_inputs: Some(r.max_inputs),
            seed: Some(r.seed),
        }
    }
}

/// What a row's reader reconstruction did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconstructionFigures {
    /// Every layer that lost input channels, in graph order.
    pub layers: Vec<LayerFit>,
    /// Samples each layer was fitted on.
    pub samples: usize,
    /// Wall time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    /// Its settings (set on every row of a run with `--reconstruct`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<ReconstructionSettings>,
}

/// One plan measured (the runner's `bench.json` cache holds these): size, top-1 one-shot,
/// after the steps after surgery, and fine-tuned per budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Parameters of the pruned model.
    pub params: usize,
    /// Its MACs.
    pub macs: u64,
    /// Top-1 right after surgery.
    pub one_shot: Top1,
    /// Top-1 after the reconstruction (if any) and the BatchNorm recalibration.
    pub recalibrated: Top1,
    /// The recalibration's report (`null` when none ran).
    #[serde(default)]
    pub recalibration: Option<RecalibrationReport>,
    /// The reader reconstruction (`null` without `--reconstruct`).
    #[serde(default)]
    pub reconstruction: Option<ReconstructionFigures>,
    /// Fine-tuned from the recalibrated model, by budget in epochs (`"1"`, `"5"`).
    #[serde(default)]
    pub finetuned: BTreeMap<String, Tuned>,
    /// Fine-tuned with the unpruned model as teacher (`--distill`): by distillation weight
    /// (`"0.5"`), then by budget.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub distilled: BTreeMap<String, BTreeMap<String, Tuned>>,
    /// Budgets whose figures were reused from an earlier run (not in the cache).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_budgets: Option<usize>,
}

/// A measured row: the plan's [`Figures`] and how they compare with the unpruned model and
/// with the reference's own pruned model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// The figures.
    #[serde(flatten)]
    pub figures: Figures,
    /// Fraction of the unpruned model's MACs removed.
    pub macs_removed: f64,
    /// Torch-Pruning methods: the reference script's own record of this target
    /// (`ratio`, `macs`, `params`, `macs_removed`, and `matmul_macs` for models with
    /// attention), stored verbatim. A `Value` because it is the external Python script's
    /// free-form JSON; only `params` and `matmul_macs` are read (cross-checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<serde_json::Value>,
    /// Equal-latency runs (`--latency-target`): how the plan was matched and its measured
    /// latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<RowLatency>,
}

/// Where and how an equal-latency run (`--latency-target`) timed its models; part of the
/// [`Settings`], so rows timed otherwise never mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyArm {
    /// The runtime (`libtorch-cpu`, `onnxruntime-cpu`).
    pub runtime: String,
    /// Batch size of each timed forward pass.
    pub batch: usize,
    /// Intra-op threads while timing.
    pub threads: usize,
    /// Relative tolerance of "equal latency" in each method's search.
    pub tolerance: f64,
    /// Relative tolerance of fair-latency's own correction towards the latency target
    /// (`prune --target-latency`'s default; results written before it was stored read 5 %).
    #[serde(default = "default_fair_tolerance")]
    pub fair_tolerance: f64,
}

fn default_fair_tolerance() -> f64 {
    0.05
}

/// How a row of an equal-latency run was matched and what it measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowLatency {
    /// The MACs target the search ended at (`null` for `fair-latency`, whose target is a
    /// latency one).
    pub macs_target: Option<f64>,
    /// The fraction of latency the search aimed at: the target for `fair-latency`, else
    /// fair-latency's measured reduction.
    pub aim: f64,
    /// The fraction of latency the kept candidate removed when the search timed it
    /// (median and quartiles of `1 − 1/speed-up` over the rounds).
    pub searched: Spread,
    /// Candidates built and timed by the search.
    pub rounds: usize,
    /// Whether the search's kept candidate was within the tolerance of `aim`.
    pub met: bool,
    /// The fraction removed in the final session, where every method's model and the
    /// unpruned one were timed together (what the table shows).
    pub removed: Spread,
    /// Milliseconds per forward pass in that session (median): unpruned, then this model.
    pub ms: [f64; 2],
    /// Whether that measurement was too spread to trust.
    pub noisy: bool,
    /// fair-latency's row: whether its latency table was flagged noisy (absent on other
    /// rows and in results written before it was stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_noisy: Option<bool>,
}

/// How a row ended: failed (no figure) or measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Outcome {
    /// No plan or no measurement: the error.
    Failed {
        /// What went wrong.
        error: String,
    },
    /// Measured.
    Measured(Box<Measured>),
}

/// One (target, method) of one seed, with or without reader reconstruction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The MACs target (fraction removed); in an equal-latency run, the latency target.
    pub target: f64,
    /// The method's key ([`super::experiment::Method::key`]).
    pub method: String,
    /// Whether the readers were reconstructed (`--reconstruct`); absent in rows written
    /// before the flag (see [`reconstructed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconstructed: Option<bool>,
    /// Failed or measured.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Row {
    /// The measurement, unless the row failed.
    pub fn measured(&self) -> Option<&Measured> {
        match &self.outcome {
            Outcome::Measured(m) => Some(m),
            Outcome::Failed { .. } => None,
        }
    }
}

/// The settings every row of a seed (and every seed of a table) shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Training epochs of the network.
    pub train_epochs: usize,
    /// Validation images per class.
    pub val_per_class: usize,
    /// Fraction of the training part each fine-tune sees.
    pub finetune_fraction: f64,
    /// Calibration samples per class.
    pub per_class: usize,
    /// The BatchNorm recalibration (its seed follows the run's seed).
    pub recalibration: BnRecalibration,
    /// Results written before the reconstruction was kept per row carried it here (`null`
    /// without it); kept as read, never compared ([`shared_settings`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconstruction: Option<ReconstructionSettings>,
    /// Equal-latency runs (`--latency-target`): where latency was measured (absent for
    /// runs at MACs targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyArm>,
}

/// The unpruned model of a seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unpruned {
    /// Parameters.
    pub params: usize,
    /// MACs.
    pub macs: u64,
    /// Top-1 on validation and test.
    pub top1: Top1,
}

/// One network and seed: `target/bench/ablation/<net>/seed-<seed>/result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedResult {
    /// The network's key (`vgg`, `resnet`).
    pub net: String,
    /// Its table's title.
    pub title: String,
    /// The seed.
    pub seed: u64,
    /// Settings shared by the rows.
    pub settings: Settings,
    /// libtorch CPU threads.
    pub threads: usize,
    /// The trained, unpruned model.
    pub unpruned: Unpruned,
    /// Every measured (target, method).
    pub results: Vec<Row>,
    /// Minutes of the runs whose rows add up here.
    pub minutes: f64,
}

/// Whether a result row was measured with reader reconstruction (`--reconstruct`): its
/// `reconstructed` flag (set on every row, failed ones included), or for rows written
/// before the flag, a reconstruction report. Such rows are labelled `<method> + recon`.
pub fn reconstructed(row: &Row) -> bool {
    row.reconstructed.unwrap_or_else(|| {
        row.measured()
            .is_some_and(|m| m.figures.reconstruction.is_some())
    })
}

/// A result's settings as rows of different runs must share them: without the reader
/// reconstruction, which is a property of each row (results written before it was kept
/// per row carried it among the settings).
pub fn shared_settings(result: &SeedResult) -> Settings {
    Settings {
        reconstruction: None,
        ..result.settings.clone()
    }
}

/// A seed's new result with the rows of its previous one that this run did not measure
/// (other methods, targets, or with/without reader reconstruction), kept only when both
/// were measured with the same settings and the same trained model; otherwise the new
/// result alone. So runs over subsets of methods and targets, with and without
/// `--reconstruct`, add up to one table; their `minutes` add up too (while a row of the
/// earlier runs is kept). At equal latency
/// (`settings.latency`) rows match fair-latency's latency of their own run and were timed
/// in its final session, so a run replaces *every* row of the targets it measured (with the
/// same reconstruction), not only its methods'.
pub fn merge_results(previous: &SeedResult, mut new: SeedResult) -> SeedResult {
    let same = shared_settings(previous) == shared_settings(&new)
        && previous.unpruned == new.unpruned
        && previous.seed == new.seed;
    if !same {
        return new;
    }
    let by_run = new.settings.latency.is_some();
    let key = |r: &Row| {
        let method = if by_run {
            String::new()
        } else {
            r.method.clone()
        };
        (method, r.target.to_bits(), reconstructed(r))
    };
    let measured: Vec<_> = new.results.iter().map(key).collect();
    let kept: Vec<Row> = previous
        .results
        .iter()
        .filter(|r| !measured.contains(&key(r)))
        .cloned()
        .collect();
    // The earlier runs' minutes count while any of their rows is kept.
    if !kept.is_empty() {
        new.minutes += previous.minutes;
    }
    new.results.extend(kept);
    new
}

/// One metric of one summary row over the seeds: mean, sample std (`null` for one value)
/// and how many seeds have it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (`null` for fewer than two values).
    pub std: Option<f64>,
    /// Values.
    pub n: usize,
}

/// One (target, method) of a [`Summary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// The MACs target (the latency target at equal latency).
    pub target: f64,
    /// The method as the tables name it (`fair-default + recon`).
    pub method: String,
    /// Measured with reader reconstruction.
    pub reconstructed: bool,
    /// By metric: `macs_removed`, `latency_removed` (equal-latency runs: the final
    /// session's median), `latency_noisy`, `latency_missed` and `latency_table_noisy` (1
    /// where that measurement was flagged noisy, where the search ended outside its
    /// tolerance, where fair-latency's table was flagged noisy; else 0), `params`, `one_shot` (test), `one_shot_val`,
    /// `recalibrated`, `recalibrated_val`, `val@<budget>`, `test@<budget>`,
    /// `kd-val@<budget>@<weight>`, `kd-test@<budget>@<weight>`.
    pub metrics: BTreeMap<String, Stat>,
    /// The errors of the seeds where it failed.
    pub errors: Vec<String>,
}

/// The best mean validation top-1 at one (target, budget).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    /// The MACs target (the latency target at equal latency).
    pub target: f64,
    /// The fine-tuning budget in epochs.
    pub budget: usize,
    /// The method as the tables name it.
    pub method: String,
    /// Its mean validation top-1.
    pub val: f64,
}

/// The unpruned model of a [`Summary`]: its size and top-1 over the seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnprunedSummary {
    /// Parameters.
    pub params: usize,
    /// MACs.
    pub macs: u64,
    /// Validation top-1.
    pub val: Option<Stat>,
    /// Test top-1.
    pub test: Option<Stat>,
}

/// How often Torch-Pruning's own pruned models have the parameter count of our surgery
/// applying their plans.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CrossCheck {
    /// Equal counts.
    pub equal: usize,
    /// Rows compared.
    pub compared: usize,
}

/// One network's per-seed results averaged ([`super::stats::aggregate`]); `summary.json`
/// holds one per network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The network's key.
    pub net: String,
    /// Its title.
    pub title: String,
    /// The seeds, in the order read.
    pub seeds: Vec<u64>,
    /// How many.
    pub n: usize,
    /// The first seed's settings (the others agree but for the recalibration seed).
    pub settings: Settings,
    /// libtorch CPU threads (the first seed's).
    pub threads: usize,
    /// The unpruned model.
    pub unpruned: UnprunedSummary,
    /// Fine-tuning budgets, ascending.
    pub budgets: Vec<usize>,
    /// Distilled columns, `<budget>@<weight>`, sorted.
    pub distilled: Vec<String>,
    /// Rows in table order.
    pub rows: Vec<SummaryRow>,
    /// The best method on validation per (target, budget).
    pub best: Vec<Best>,
    /// The reconstruction settings of the reconstructed rows (seed `null`), if any.
    pub reconstruction: Option<ReconstructionSettings>,
    /// Torch-Pruning's parameter counts against ours.
    pub cross_check: CrossCheck,
    /// Minutes summed over the seeds.
    pub minutes: f64,
}

/// `summary.json`: every network's [`Summary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summaries {
    /// In table order.
    pub nets: Vec<Summary>,
}
