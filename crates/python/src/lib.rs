//! The native half of fair-pruner's Python package (`fair_pruner._native`): the Rust
//! pipeline behind `fair_pruner.prune`, `fair_pruner.score` and `fair_pruner.ratios`.
//!
//! The Python side (`python/fair_pruner/__init__.py`) exports the user's `torch.nn.Module`
//! to ONNX in memory and lends the calibration tensors' memory (CPU, contiguous; their data
//! pointers and shapes, no copy). Here the model is imported ([`fair_onnx::import_with`]),
//! scored, thresholded and cut by [`fair_pipeline`] exactly as `fair-pruner prune` does,
//! and the pruned model goes back as the source of a standalone PyTorch module
//! ([`fair_surgery::pytorch_module`]) plus its state dict as raw little-endian bytes, which
//! the Python side turns into an `nn.Module`. Every error is a `fair_pruner.FairPrunerError`
//! whose text is the CLI's ([`fair_pipeline::cli_text`]: settings named as its flags).
//! `fair_pruner._native` is private: its functions take raw data pointers, which only the
//! wrapper passes safely.
//!
//! The functions with the work ([`prune_onnx`], [`score_onnx`], [`ratios_of`]) are plain
//! Rust, so they can be called and tested without Python:
//!
//! ```no_run
//! use fair_pruner::{Calib, PruneOptions, prune_onnx};
//! # fn run(onnx: &[u8], x: tch::Tensor, y: tch::Tensor) -> Result<(), String> {
//! let out = prune_onnx(onnx, Calib { inputs: x, labels: y }, "macs", 0.5, PruneOptions::default())?;
//! assert!(out.module_source.contains("class Model(nn.Module)"));
//! # Ok(()) }
//! ```

use std::error::Error as StdError;
use std::sync::Mutex;

use fair_analysis::{Goal, Method, ScoreFile, Selector};
use fair_data::{DataError, ImageSource, Transform};
use fair_onnx::{ImportOptions, TensorData};
use fair_pipeline::{PipelineError, Preset, PruneSection, Pruner, RawSettings, cli_text, stages};
use fair_scoring::{Calibration, MaxMemory, Progress, Registry};
use pyo3::create_exception;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tch::{Device, Kind, Tensor};

create_exception!(
    _native,
    FairPrunerError,
    PyRuntimeError,
    "An error of fair-pruner's pipeline; its text is the `fair-pruner` command's error chain."
);

/// The error text of `e` and its causes as the CLI prints it after `error: `, settings
/// named as its flags ([`fair_pipeline::cli_text`]).
fn text(e: &(dyn StdError + 'static)) -> String {
    cli_text(e)
}

/// Calibration data: inputs `[N, ...]` (float) and labels `[N]` (integer class ids).
pub struct Calib {
    /// The inputs.
    pub inputs: Tensor,
    /// One class id per input.
    pub labels: Tensor,
}

/// A pruned model as the Python side rebuilds it.
pub struct PrunedModel {
    /// Python source of a standalone `torch.nn.Module` named `Model`
    /// ([`fair_surgery::pytorch_module`]).
    pub module_source: String,
    /// The state dict: name, shape, dtype (`float32` or `int64`) and little-endian bytes.
    pub tensors: Vec<(String, Vec<usize>, &'static str, Vec<u8>)>,
    /// The report (`report.json`'s schema) as JSON.
    pub report_json: String,
    /// What the ONNX importer simplified or assumed, one sentence each.
    pub notes: Vec<String>,
}

/// Fine-tuning after surgery with the library's own training loop
/// ([`fair_pipeline::stages::finetune`], as `fair-pruner prune --finetune-epochs`).
pub struct Finetune {
    /// The training data: inputs `[N, ...]` as the model takes them (no transform or
    /// augmentation is applied) and their class ids.
    pub train: Calib,
    /// Epochs (`--finetune-epochs`).
    pub epochs: usize,
    /// Learning rate (`--finetune-lr`; default the CLI's).
    pub lr: Option<f64>,
}

/// The optional parts of a [`prune_onnx`] run; the default is the CLI's.
#[derive(Default)]
pub struct PruneOptions {
    /// The criteria to score (default: the CLI's `u`, `r`, `l1`, `group-l1`).
    pub criteria: Option<Vec<String>>,
    /// Progress bars and lines on stderr.
    pub progress: bool,
    /// The run's seed (`--seed`): calibration draw, scoring, fine-tuning.
    pub seed: u64,
    /// The scores' memory bound as `--max-memory` takes it (`4GiB`, `none`, ...); default
    /// the CLI's (a share of the available memory).
    pub max_memory: Option<String>,
    /// Fine-tuning after surgery, if any.
    pub finetune: Option<Finetune>,
}

/// The raw settings of a run from Python, as the CLI's flags give them: goal, criteria,
/// seed, memory bound and fine-tuning. `max_memory` is parsed as `--max-memory` is (by
/// [`MaxMemory`]'s `FromStr`, the CLI's value parser).
fn raw_settings(
    goal: Option<Goal>,
    criteria: Option<Vec<String>>,
    seed: u64,
    max_memory: Option<&str>,
    finetune: Option<(usize, Option<f64>)>,
) -> Result<RawSettings, String> {
    let max_memory = max_memory
        .map(|m| {
            m.parse::<MaxMemory>().map_err(|e| {
                text(&PipelineError::invalid(
                    "max-memory",
                    format!("invalid value '{m}': {e}"),
                ))
            })
        })
        .transpose()?;
    let mut prune = PruneSection {
        seed: Some(seed),
        criteria,
        max_memory,
        finetune_epochs: finetune.map(|f| f.0),
        finetune_lr: finetune.and_then(|f| f.1),
        ..Default::default()
    };
    match goal {
        Some(Goal::Alpha(a)) => prune.alpha = Some(a),
        Some(Goal::Macs(m)) => prune.target_macs = Some(m),
        Some(Goal::Params(p)) => prune.target_params = Some(p),
        Some(Goal::Latency(l)) => prune.target_latency = Some(l),
        _ => {}
    }
    Ok(RawSettings {
        prune,
        ..Default::default()
    })
}

/// Training tensors from Python as an [`ImageSource`]: batches are rows of the inputs as
/// given (the transform is not applied: the caller passes what the model takes).
struct TensorSource {
    /// `[N, C, H, W]` float32 (a [`Mutex`]: a tensor is not `Sync`).
    inputs: Mutex<Tensor>,
    labels: Vec<i64>,
    classes: Vec<String>,
}

impl TensorSource {
    /// Checks `data` (floats, one integer label per input, finite, fitting `model`'s input
    /// and outputs) with the calibration's messages, prefixed by `train`.
    fn new(data: Calib, model: &fair_runtime::Model) -> Result<Self, String> {
        let bad = |e: fair_scoring::ScoringError| format!("train: {}", text(&e));
        let checked = Calibration::new(data.inputs, &data.labels, "training tensors from Python")
            .map_err(bad)?;
        let outputs = fair_pipeline::output_classes(model);
        let input = model.graph().shape_at(0);
        if input.len() != 3 {
            return Err(format!(
                "train: fine-tuning needs an image model (input [C, H, W]), found input {input:?}"
            ));
        }
        checked.check_fits(input, outputs).map_err(bad)?;
        let (inputs, labels) = checked.tensors();
        let labels = Vec::<i64>::try_from(labels).map_err(|e| format!("train: {e}"))?;
        let classes = (0..=labels.iter().copied().max().unwrap_or(0))
            .map(|c| c.to_string())
            .collect();
        Ok(TensorSource {
            inputs: Mutex::new(inputs),
            labels,
            classes,
        })
    }
}

impl ImageSource for TensorSource {
    fn name(&self) -> &str {
        "training tensors from Python"
    }

    fn len(&self) -> usize {
        self.labels.len()
    }

    fn labels(&self) -> &[i64] {
        &self.labels
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn batch(
        &self,
        _transform: &Transform,
        indices: &[usize],
        _input: [usize; 3],
        _train: bool,
        _rng: &mut dyn rand::RngCore,
    ) -> Result<(Tensor, Tensor), DataError> {
        let rows: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let labels: Vec<i64> = indices.iter().map(|&i| self.labels[i]).collect();
        let inputs = self
            .inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .index_select(0, &Tensor::from_slice(&rows));
        Ok((inputs, Tensor::from_slice(&labels)))
    }
}

/// The goal named `kind` (`alpha`, `macs` or `params`, as `--alpha`, `--target-macs`,
/// `--target-params`) with `value`, range-checked with the CLI's message.
pub fn goal_of(kind: &str, value: f64) -> Result<Goal, String> {
    let goal = match kind {
        "alpha" => Goal::Alpha(value),
        "macs" => Goal::Macs(value),
        "params" => Goal::Params(value),
        other => {
            return Err(format!(
                "unknown goal kind '{other}' (alpha, macs or params)"
            ));
        }
    };
    goal.check()
        .map_err(|e| text(&PipelineError::invalid(goal.flag(), e.to_string())))?;
    Ok(goal)
}

/// Imports `onnx` (as `fair-pruner import` does, weights checked finite) into a CPU model.
fn import(onnx: &[u8]) -> Result<(fair_runtime::Model, Vec<String>), String> {
    let imported = fair_onnx::import_with(onnx, &ImportOptions::default()).map_err(|e| text(&e))?;
    let notes = imported.notes.clone();
    let model = fair_pipeline::onnx_model(imported, Device::Cpu).map_err(|e| text(&e))?;
    Ok((model, notes))
}

/// Wraps the calibration tensors for the scoring criteria.
fn calibration(data: Calib) -> Result<Calibration, String> {
    Calibration::new(data.inputs, &data.labels, "calibration tensors from Python")
        .map_err(|e| text(&e))
}

/// Prunes the ONNX model `onnx` to `goal_kind`/`goal_value` ([`goal_of`]) with the
/// default preset and the CLI's settings (criteria, seed, memory bound: see
/// [`PruneOptions`]), scoring on `data`. Without [`PruneOptions::finetune`] no training split
/// comes from Python, so the preset's steps after surgery (reader reconstruction, BatchNorm
/// recalibration) are turned off (the report records it) and the model is returned right
/// after surgery. With it, those steps run on its training data and the pruned model is
/// fine-tuned in-process, as `fair-pruner prune --finetune-epochs N` does.
pub fn prune_onnx(
    onnx: &[u8],
    data: Calib,
    goal_kind: &str,
    goal_value: f64,
    options: PruneOptions,
) -> Result<PrunedModel, String> {
    let goal = goal_of(goal_kind, goal_value)?;
    let finetune = options.finetune.as_ref().map(|f| (f.epochs, f.lr));
    if finetune.is_some_and(|f| f.0 == 0) {
        let e = PipelineError::invalid("finetune-epochs", "must be at least 1 to fine-tune");
        return Err(text(&e));
    }
    let settings = raw_settings(
        Some(goal),
        options.criteria,
        options.seed,
        options.max_memory.as_deref(),
        finetune,
    )?
    .resolve()
    .map_err(|e| text(&e))?;
    let (model, notes) = import(onnx)?;
    fair_pipeline::check_memory_bound(model.graph(), settings.given_max_memory)
        .map_err(|e| text(&e))?;
    let calibration = calibration(data)?;
    let train = match options.finetune {
        Some(f) => Some(TensorSource::new(f.train, &model)?),
        None => None,
    };
    let transform = Transform::default();
    let mut pruner = Pruner::new(&model)
        .calibration(&calibration)
        .goals(settings.goals.clone())
        .criteria(settings.criteria.clone())
        .scoring(settings.scoring.clone())
        .progress(options.progress)
        .seed(settings.draw.seed);
    pruner = match &train {
        Some(source) => {
            pruner = pruner.finetune(source, &transform, settings.finetune.clone());
            pruner = match &settings.reconstruction {
                Some(r) => pruner.reconstruct(r.clone()),
                None => pruner.no_reconstruction(),
            };
            match &settings.recalibration {
                Some(r) => pruner.recalibrate(r.clone()),
                None => pruner.no_recalibration(),
            }
        }
        None => pruner.no_reconstruction().no_recalibration(),
    };
    let outcome = pruner.run().map_err(|e| text(&e))?;
    let pruned = outcome
        .models
        .into_iter()
        .next()
        .ok_or("the pipeline returned no model")?;
    let module_source = fair_surgery::pytorch_module(pruned.graph());
    let tensors = fair_surgery::onnx_tensors(&pruned)
        .map_err(|e| text(&e))?
        .into_iter()
        .map(|t| {
            let (dtype, bytes) = match t.data {
                TensorData::F32(v) => ("float32", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                TensorData::I64(v) => ("int64", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            };
            (t.name, t.shape, dtype, bytes)
        })
        .collect();
    let report_json = serde_json::to_string(&outcome.report).map_err(|e| e.to_string())?;
    Ok(PrunedModel {
        module_source,
        tensors,
        report_json,
        notes,
    })
}

/// Scores the ONNX model `onnx` on `data` with `criteria` (default: the CLI's), with the
/// CLI's default scoring settings and its rule for the memory bound `max_memory` (as
/// `--max-memory`; default a share of the available memory): the score file
/// (`fair-pruner score`'s format) as JSON.
pub fn score_onnx(
    onnx: &[u8],
    data: Calib,
    criteria: Option<Vec<String>>,
    max_memory: Option<&str>,
    progress: bool,
) -> Result<String, String> {
    let raw = raw_settings(None, criteria.clone(), 0, max_memory, None)?;
    let (model, _) = import(onnx)?;
    fair_pipeline::check_memory_bound(model.graph(), raw.given_max_memory())
        .map_err(|e| text(&e))?;
    let calibration = calibration(data)?;
    let names = criteria.unwrap_or_else(|| raw.criteria());
    let scored = stages::score(
        &model,
        Some(&calibration),
        &Registry::default(),
        &names,
        &raw.scoring(),
        None,
        Progress { enabled: progress },
    )
    .map_err(|e| format!("scoring: {}", text(&e)))?;
    let mut file = scored.scores;
    file.provenance.preset = Some(raw.preset().name().to_owned());
    serde_json::to_string(&file).map_err(|e| e.to_string())
}

/// Per-layer counts of units to remove at `goal_kind`/`goal_value` from a score file in
/// JSON ([`score_onnx`]), with the default preset's selection (ToD, remove by `u`, protect
/// by `r`), as `fair-pruner ratios` counts: `(layer, units, remove)` in layer order.
pub fn ratios_of(
    scores_json: &str,
    goal_kind: &str,
    goal_value: f64,
) -> Result<Vec<(String, usize, usize)>, String> {
    let goal = goal_of(goal_kind, goal_value)?;
    let file: ScoreFile =
        serde_json::from_str(scores_json).map_err(|e| format!("reading the scores: {e}"))?;
    let preset = Preset::default();
    // Counts do not depend on the ranking; rank by `u` when the file lacks the preset's.
    let rank = if file.criterion("group-l1").is_some() {
        "group-l1"
    } else {
        "u"
    };
    let selector = Selector::from_scores_for(
        &file,
        std::path::Path::new("scores"),
        Method::Tod,
        "u",
        "r",
        rank,
        preset.select_options(),
    )
    .map_err(|e| text(&e))?;
    let selection = selector.select(goal, Method::Tod).map_err(|e| text(&e))?;
    Ok(file
        .layers
        .iter()
        .zip(&selection.counts)
        .map(|(l, &c)| (l.layer.clone(), l.units, c))
        .collect())
}

/// A CPU tensor over memory the Python caller owns and keeps alive for the call.
///
/// # Safety
/// `ptr` must point to a contiguous array of `shape`'s product elements of `kind`, valid
/// and unchanged while the returned tensor is used.
unsafe fn borrowed(ptr: usize, shape: &[i64], kind: Kind) -> Tensor {
    let mut strides = vec![1i64; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1].max(1);
    }
    // SAFETY: as the caller promises.
    unsafe { Tensor::from_blob(ptr as *const u8, shape, &strides, kind, Device::Cpu) }
}

/// Refuses pointers and shapes that cannot be the wrapper's tensors (a null pointer,
/// negative sizes, labels that are not one per input): `_native` is private, and these
/// checks stop a direct call from crashing the interpreter on the obvious mistakes.
/// `what` names the data in the messages (`calibration`, `train`).
fn check_lent(what: &str, x: usize, x_shape: &[i64], y: usize, y_shape: &[i64]) -> PyResult<()> {
    let bad = |problem: &str| {
        Err(pyo3::exceptions::PyValueError::new_err(format!(
            "{what} {problem}"
        )))
    };
    if x == 0 || y == 0 {
        return bad("data pointers must not be null");
    }
    if x_shape.is_empty() || x_shape.iter().chain(y_shape).any(|&d| d < 0) {
        return bad("shapes must be non-empty with non-negative sizes");
    }
    if y_shape.len() != 1 || y_shape[0] != x_shape[0] {
        return bad("labels must be one per input");
    }
    Ok(())
}

/// The calibration tensors over the Python caller's memory.
///
/// # Safety
/// As [`borrowed`], for `(x, x_shape)` (float32) and `(y, y_shape)` (int64).
unsafe fn lent(x: usize, x_shape: &[i64], y: usize, y_shape: &[i64]) -> Calib {
    // SAFETY: as the caller promises.
    unsafe {
        Calib {
            inputs: borrowed(x, x_shape, Kind::Float),
            labels: borrowed(y, y_shape, Kind::Int64),
        }
    }
}

/// Training data as the wrapper lends it: the inputs' data pointer and shape (contiguous
/// CPU float32) and the labels' (int64).
type Lent = (usize, Vec<i64>, usize, Vec<i64>);

/// `prune_onnx` for Python: the calibration tensors (and the training tensors of `train`)
/// come as data pointers and shapes of CPU-contiguous float32 inputs and int64 labels,
/// which the caller keeps alive. `finetune` (epochs) needs `train`.
#[pyfunction]
#[pyo3(signature = (onnx, x, x_shape, y, y_shape, goal, value, criteria=None, progress=false, seed=0, max_memory=None, finetune=None, finetune_lr=None, train=None))]
#[allow(clippy::too_many_arguments)]
#[allow(clippy::type_complexity)]
fn prune<'py>(
    py: Python<'py>,
    onnx: &[u8],
    x: usize,
    x_shape: Vec<i64>,
    y: usize,
    y_shape: Vec<i64>,
    goal: &str,
    value: f64,
    criteria: Option<Vec<String>>,
    progress: bool,
    seed: u64,
    max_memory: Option<String>,
    finetune: Option<usize>,
    finetune_lr: Option<f64>,
    train: Option<Lent>,
) -> PyResult<(
    String,
    Vec<(String, Vec<usize>, &'static str, Bound<'py, PyBytes>)>,
    String,
    Vec<String>,
)> {
    check_lent("calibration", x, &x_shape, y, &y_shape)?;
    if let Some((tx, tx_shape, ty, ty_shape)) = &train {
        check_lent("train", *tx, tx_shape, *ty, ty_shape)?;
    }
    if finetune.is_some() != train.is_some() {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "finetune (epochs) and train (data) go together",
        ));
    }
    if finetune_lr.is_some() && finetune.is_none() {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "finetune_lr (learning rate) is given without finetune (epochs): it only applies \
             to fine-tuning",
        ));
    }
    let out = py
        .detach(|| {
            // SAFETY: the Python wrapper passes its own contiguous CPU tensors and holds
            // them until this call returns.
            let data = unsafe { lent(x, &x_shape, y, &y_shape) };
            let finetune = match (finetune, &train) {
                (Some(epochs), Some((tx, tx_shape, ty, ty_shape))) => Some(Finetune {
                    // SAFETY: as for the calibration tensors.
                    train: unsafe { lent(*tx, tx_shape, *ty, ty_shape) },
                    epochs,
                    lr: finetune_lr,
                }),
                _ => None,
            };
            let options = PruneOptions {
                criteria,
                progress,
                seed,
                max_memory,
                finetune,
            };
            prune_onnx(onnx, data, goal, value, options)
        })
        .map_err(FairPrunerError::new_err)?;
    let tensors = out
        .tensors
        .into_iter()
        .map(|(n, s, d, b)| (n, s, d, PyBytes::new(py, &b)))
        .collect();
    Ok((out.module_source, tensors, out.report_json, out.notes))
}

/// `score_onnx` for Python, with calibration tensors as in `prune`.
#[pyfunction]
#[pyo3(signature = (onnx, x, x_shape, y, y_shape, criteria=None, progress=false, max_memory=None))]
#[allow(clippy::too_many_arguments)]
fn score(
    py: Python<'_>,
    onnx: &[u8],
    x: usize,
    x_shape: Vec<i64>,
    y: usize,
    y_shape: Vec<i64>,
    criteria: Option<Vec<String>>,
    progress: bool,
    max_memory: Option<String>,
) -> PyResult<String> {
    check_lent("calibration", x, &x_shape, y, &y_shape)?;
    py.detach(|| {
        // SAFETY: as in `prune`.
        let data = unsafe { lent(x, &x_shape, y, &y_shape) };
        score_onnx(onnx, data, criteria, max_memory.as_deref(), progress)
    })
    .map_err(FairPrunerError::new_err)
}

/// `ratios_of` for Python.
#[pyfunction]
fn ratios(scores_json: &str, goal: &str, value: f64) -> PyResult<Vec<(String, usize, usize)>> {
    ratios_of(scores_json, goal, value).map_err(FairPrunerError::new_err)
}

/// The module `fair_pruner._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("FairPrunerError", m.py().get_type::<FairPrunerError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("LIBTORCH_VERSION", fair_pipeline::LIBTORCH_VERSION)?;
    m.add_function(wrap_pyfunction!(prune, m)?)?;
    m.add_function(wrap_pyfunction!(score, m)?)?;
    m.add_function(wrap_pyfunction!(ratios, m)?)?;
    Ok(())
}
