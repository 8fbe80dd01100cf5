//! Applying a plan: a new graph and new weights, every tensor sliced by its op's contract.

use std::path::{Path, PathBuf};

use fair_analysis::{Plan, Resolution, ResolveOptions, SizeReport};
use fair_runtime::{Model, tch_context};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::error::SurgeryError;

/// The pruned model and what changed.
pub struct Pruned {
    /// The smaller model (new graph, new parameters; the input model is untouched).
    pub model: Model,
    /// Per-layer and total figures.
    pub report: SizeReport,
}

/// A pruned model's export, as `fair-pruner apply --json` prints it: the output directory,
/// the files written there, and the sizes before and after. Its JSON Schema is
/// `docs/apply-schema.json` (checked by a test).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplyReport {
    /// The output directory.
    pub out: PathBuf,
    /// The files written there, relative to it.
    pub files: Vec<String>,
    /// Per-layer and total figures ([`Pruned::report`]).
    pub report: SizeReport,
}

impl ApplyReport {
    /// The report of `pruned`, exported to `out` as `files` (e.g. what
    /// `fair_fs::OutputDir`'s commit returns).
    pub fn new(pruned: &Pruned, out: &Path, files: Vec<String>) -> Self {
        ApplyReport {
            out: out.to_owned(),
            files,
            report: pruned.report.clone(),
        }
    }
}

/// Applies `plan` to `model`: resolves it (coupled layers settle by `options.rule`), then
/// slices every parameter along the axes its op's contract names — the axis that follows the
/// node's output channels and the axis that follows its input's channels (next convs' and
/// linears' inputs, BatchNorm statistics and affine parameters, concatenation offsets,
/// flattened features), a grouped convolution's within-group input axis (the same kept
/// within-group channels in every group), and an attention's per-head axis (its relative
/// position bias and logit scale keep the kept heads). The input model is never modified; an empty plan gives an identical
/// model.
pub fn apply(model: &Model, plan: &Plan, options: &ResolveOptions) -> Result<Pruned, SurgeryError> {
    let resolution = Resolution::new(model.graph(), plan, options)?;
    apply_resolution(model, &resolution)
}

/// Applies an already resolved plan (see [`fair_analysis::Resolution`]) to `model`, whose
/// graph must be the one the resolution was made for.
pub fn apply_resolution(model: &Model, resolution: &Resolution) -> Result<Pruned, SurgeryError> {
    let graph = model.graph();
    let index = |v: &[i64]| Tensor::from_slice(v).to_device(model.device());
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (position, node) in graph.nodes().iter().enumerate() {
        let specs = node.op.params(&node.name);
        if specs.is_empty() {
            continue;
        }
        let slice = resolution.node_slice(position);
        let out_idx = slice.output.as_deref().map(index);
        let in_idx = slice.input.as_deref().map(index);
        let group_idx = slice.group_input.as_deref().map(index);
        // An attention's per-head tensors keep the heads whose channels are kept.
        let head_idx = match (node.op.channels(), slice.output.as_deref()) {
            (fair_ir::Channels::Heads { head_dim }, Some(out)) => {
                Some(index(&fair_ir::ParamSpec::kept_heads(out, head_dim)))
            }
            _ => None,
        };
        for spec in specs {
            let mut t = model.tensor(&spec.name)?.detach().copy();
            let axes = [
                (spec.out_axis, &out_idx),
                (spec.in_axis, &in_idx),
                (spec.group_in_axis, &group_idx),
                (spec.head_axis, &head_idx),
            ];
            for (axis, idx) in axes {
                if let (Some(axis), Some(idx)) = (axis, idx) {
                    t = tch_context(t.f_index_select(axis as i64, idx), || {
                        format!("slicing '{}' along axis {axis}", spec.name)
                    })?;
                }
            }
            tensors.push((spec.name, t));
        }
    }
    let pruned = Model::from_tensors(resolution.pruned_graph().clone(), tensors, model.device())?;
    Ok(Pruned {
        model: pruned,
        report: resolution.report(),
    })
}
