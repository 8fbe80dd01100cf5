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
//! whose text is the CLI's error chain ([`fair_pipeline::error_text`]). `fair_pruner._native`
//! is private: its functions take raw data pointers, which only the wrapper passes safely.
//!
//! The functions with the work ([`prune_onnx`], [`score_onnx`], [`ratios_of`]) are plain
//! Rust, so they can be called and tested without Python:
//!
//! ```no_run
//! use fair_pruner::{Calib, prune_onnx};
//! # fn run(onnx: &[u8], x: tch::Tensor, y: tch::Tensor) -> Result<(), String> {
//! let out = prune_onnx(onnx, Calib { inputs: x, labels: y }, "macs", 0.5, None, false, 0)?;
//! assert!(out.module_source.contains("class Model(nn.Module)"));
//! # Ok(()) }
//! ```

use std::error::Error as StdError;

use fair_analysis::{Goal, Method, ScoreFile, Selector};
use fair_onnx::{ImportOptions, TensorData};
use fair_pipeline::{Preset, Pruner, RawSettings, error_text, stages};
use fair_scoring::{Calibration, Progress, Registry};
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

/// The error text of `e` and its causes, as the CLI prints it after `error: `.
fn text(e: &(dyn StdError + 'static)) -> String {
    error_text(e)
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
        .map_err(|e| format!("--{}: {}", goal.flag(), text(&e)))?;
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
/// default preset, scoring on `data` with `criteria` (default: the CLI's `u`, `r`, `l1`,
/// `group-l1`). No training split comes from Python, so the preset's steps after surgery
/// (reader reconstruction, BatchNorm recalibration) are turned off; the report records it.
pub fn prune_onnx(
    onnx: &[u8],
    data: Calib,
    goal_kind: &str,
    goal_value: f64,
    criteria: Option<Vec<String>>,
    progress: bool,
    seed: u64,
) -> Result<PrunedModel, String> {
    let goal = goal_of(goal_kind, goal_value)?;
    let (model, notes) = import(onnx)?;
    let calibration = calibration(data)?;
    let mut pruner = Pruner::new(&model)
        .no_reconstruction()
        .no_recalibration()
        .calibration(&calibration)
        .goal(goal)
        .progress(progress)
        .seed(seed);
    if let Some(c) = criteria {
        pruner = pruner.criteria(c);
    }
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
/// CLI's default scoring settings: the score file (`fair-pruner score`'s format) as JSON.
pub fn score_onnx(
    onnx: &[u8],
    data: Calib,
    criteria: Option<Vec<String>>,
    progress: bool,
) -> Result<String, String> {
    let (model, _) = import(onnx)?;
    let calibration = calibration(data)?;
    let raw = RawSettings::default();
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
fn check_lent(x: usize, x_shape: &[i64], y: usize, y_shape: &[i64]) -> PyResult<()> {
    let bad = |what: &str| Err(pyo3::exceptions::PyValueError::new_err(what.to_owned()));
    if x == 0 || y == 0 {
        return bad("calibration data pointers must not be null");
    }
    if x_shape.is_empty() || x_shape.iter().chain(y_shape).any(|&d| d < 0) {
        return bad("calibration shapes must be non-empty with non-negative sizes");
    }
    if y_shape.len() != 1 || y_shape[0] != x_shape[0] {
        return bad("calibration labels must be one per input");
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

/// `prune_onnx` for Python: the calibration tensors come as data pointers and shapes of
/// CPU-contiguous float32 inputs and int64 labels, which the caller keeps alive.
#[pyfunction]
#[pyo3(signature = (onnx, x, x_shape, y, y_shape, goal, value, criteria=None, progress=false, seed=0))]
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
) -> PyResult<(
    String,
    Vec<(String, Vec<usize>, &'static str, Bound<'py, PyBytes>)>,
    String,
    Vec<String>,
)> {
    check_lent(x, &x_shape, y, &y_shape)?;
    let out = py
        .detach(|| {
            // SAFETY: the Python wrapper passes its own contiguous CPU tensors and holds
            // them until this call returns.
            let data = unsafe { lent(x, &x_shape, y, &y_shape) };
            prune_onnx(onnx, data, goal, value, criteria, progress, seed)
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
#[pyo3(signature = (onnx, x, x_shape, y, y_shape, criteria=None, progress=false))]
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
) -> PyResult<String> {
    check_lent(x, &x_shape, y, &y_shape)?;
    py.detach(|| {
        // SAFETY: as in `prune`.
        let data = unsafe { lent(x, &x_shape, y, &y_shape) };
        score_onnx(onnx, data, criteria, progress)
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
