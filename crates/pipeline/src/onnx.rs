//! ONNX models as pipeline inputs: a `.onnx` file wherever a graph file is accepted, its
//! weights loaded into a runtime [`Model`].

use std::path::{Path, PathBuf};

use fair_ir::Graph;
use fair_onnx::{ImportOptions, Imported, TensorData};
use fair_runtime::Model;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::error::PipelineError;

/// Whether `path` names an ONNX model (extension `.onnx`, any case).
pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Reads an ONNX model file into a graph, its weights and the importer's notes (see
/// [`fair_onnx::import_file_with`]).
pub fn import_onnx(path: &Path, options: &ImportOptions) -> Result<Imported, PipelineError> {
    fair_onnx::import_file_with(path, options).map_err(|e| PipelineError::Onnx {
        path: path.to_owned(),
        source: Box::new(e),
    })
}

/// An imported ONNX model written out, as `fair-pruner import --json` prints it: the graph's
/// figures, the importer's notes, and where the files went. Its JSON Schema is
/// `docs/import-schema.json` (checked by a test).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportReport {
    /// The graph's name.
    pub name: String,
    /// How many nodes the graph has.
    pub nodes: usize,
    /// Trainable parameters.
    pub params: usize,
    /// Multiply-accumulates per sample.
    pub macs: u64,
    /// How many layers may be pruned ([`Graph::prunable_layers`]).
    pub prunable_layers: usize,
    /// The per-sample input shape.
    pub input: Vec<usize>,
    /// Whether the input node records a normalisation (mean and standard deviation).
    pub normalization_recorded: bool,
    /// What the importer simplified or assumed, one sentence each ([`Imported::notes`]).
    pub notes: Vec<String>,
    /// The output directory.
    pub out: PathBuf,
    /// The files written there, relative to it.
    pub files: Vec<String>,
}

impl ImportReport {
    /// The report of `imported` (its graph as written, e.g. after
    /// [`with_normalization`](crate::with_normalization)), written to `out` as `files`.
    pub fn new(imported: &Imported, out: &Path, files: Vec<String>) -> Self {
        let g = &imported.graph;
        ImportReport {
            name: g.name().to_owned(),
            nodes: g.nodes().len(),
            params: g.param_count(),
            macs: g.macs(),
            prunable_layers: g.prunable_layers().len(),
            input: g.shape_at(0).to_vec(),
            normalization_recorded: g.input().op.as_input().is_some_and(|i| i.mean.is_some()),
            notes: imported.notes.clone(),
            out: out.to_owned(),
            files,
        }
    }
}

/// A runtime model of an imported ONNX model, on `device`.
pub fn onnx_model(imported: Imported, device: Device) -> Result<Model, PipelineError> {
    let tensors = imported
        .tensors
        .into_iter()
        .map(|t| {
            let dims: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
            let tensor = match t.data {
                TensorData::F32(v) => Tensor::from_slice(&v),
                TensorData::I64(v) => Tensor::from_slice(&v),
            };
            (t.name, tensor.reshape(&dims))
        })
        .collect();
    Ok(Model::from_tensors(imported.graph, tensors, device)?)
}

/// The graph of a model file: an IR file (`.toml`, `.json`) or an ONNX model (`.onnx`,
/// whose weights are read and dropped; use [`import_onnx`] to keep them).
pub fn load_graph(path: &Path) -> Result<Graph, PipelineError> {
    load_graph_with(path, None)
}

/// [`load_graph`] with the per-sample input shape of an ONNX model whose file leaves it
/// symbolic (`--input`); an IR file records its own, so giving one is an error.
pub fn load_graph_with(path: &Path, input: Option<Vec<usize>>) -> Result<Graph, PipelineError> {
    if is_onnx(path) {
        // Only the structure is kept: the weights' values (finite or not) do not matter.
        let options = ImportOptions {
            input_shape: input,
            allow_non_finite: true,
            ..Default::default()
        };
        Ok(import_onnx(path, &options)?.graph)
    } else if input.is_some() {
        Err(PipelineError::invalid(
            "input",
            format!(
                "'{}' is an IR graph, which records its input; the input shape applies to a \
                 zoo model or an ONNX graph",
                path.display()
            ),
        ))
    } else {
        Ok(Graph::load(path)?)
    }
}
