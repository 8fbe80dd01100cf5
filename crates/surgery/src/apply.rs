//! Applying a plan: a new graph and new weights, every reader sliced consistently.

use std::collections::{BTreeSet, HashMap};

use fair_ir::{Graph, Op, ParamKind};
use fair_runtime::Model;
use serde::Serialize;
use tch::Tensor;

use crate::error::SurgeryError;
use crate::groups::{ChannelGroups, analyze, positions};
use crate::plan::{GroupRule, Plan, resolve};

/// One row of the surgery report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerReport {
    /// The node.
    pub layer: String,
    /// Units before and after (prunable layers; 0 for others).
    pub units: (usize, usize),
    /// Trainable parameters before and after.
    pub params: (usize, usize),
    /// MACs per sample before and after.
    pub macs: (u64, u64),
}

/// What surgery did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Every node with parameters or MACs.
    pub layers: Vec<LayerReport>,
    /// Total parameters before and after.
    pub params: (usize, usize),
    /// Total MACs before and after.
    pub macs: (u64, u64),
    /// Units removed per group (layers of the group, units removed).
    pub groups: Vec<(Vec<String>, usize)>,
}

/// The pruned model and what changed.
pub struct Pruned {
    /// The smaller model (new graph, new parameters; the input model is untouched).
    pub model: Model,
    /// Per-layer and total figures.
    pub report: Report,
}

/// Options of [`apply`].
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// How coupled layers settle on one set of units.
    pub rule: GroupRule,
    /// Layers never to prune (besides the output layer), with everything coupled to them.
    pub protected: Vec<String>,
}

fn torch<T>(
    r: Result<T, tch::TchError>,
    context: impl FnOnce() -> String,
) -> Result<T, SurgeryError> {
    r.map_err(|source| SurgeryError::Torch {
        context: context(),
        source,
    })
}

/// The units each group keeps under `plan` (sorted), after validating the plan.
pub fn kept_units(
    graph: &Graph,
    groups: &ChannelGroups,
    plan: &Plan,
    rule: GroupRule,
) -> Result<Vec<BTreeSet<usize>>, SurgeryError> {
    for (layer, units) in &plan.remove {
        let Some(n) = graph.units(layer) else {
            return Err(SurgeryError::NotPrunable {
                layer: layer.clone(),
                detail: "it is not a conv2d or linear layer of the model".into(),
            });
        };
        if let Some(&u) = units.iter().find(|&&u| u >= n) {
            return Err(SurgeryError::UnitOutOfRange {
                layer: layer.clone(),
                unit: u,
                units: n,
            });
        }
        let Some(g) = groups.group_of(layer) else {
            return Err(SurgeryError::NotPrunable {
                layer: layer.clone(),
                detail: "it is a depthwise convolution, whose channels follow its input: prune the layer that feeds it".into(),
            });
        };
        let g = &groups.groups()[g];
        if let Some(why) = &g.fixed
            && !units.is_empty()
        {
            return Err(SurgeryError::NotPrunable {
                layer: layer.clone(),
                detail: if g.layers.len() > 1 {
                    format!(
                        "its units are coupled with {} and {why}",
                        g.layers.join(", ")
                    )
                } else {
                    why.clone()
                },
            });
        }
    }
    groups
        .groups()
        .iter()
        .map(|g| {
            let all: BTreeSet<usize> = (0..g.units).collect();
            if g.fixed.is_some() || g.layers.is_empty() {
                return Ok(all);
            }
            let requests: Vec<BTreeSet<usize>> = g
                .layers
                .iter()
                .map(|l| {
                    plan.remove
                        .get(l)
                        .map(|v| v.iter().copied().collect())
                        .unwrap_or_default()
                })
                .collect();
            let removed = resolve(rule, g.units, &g.layers, &requests)?;
            if removed.len() == g.units {
                return Err(SurgeryError::Empty {
                    layers: g.layers.clone(),
                });
            }
            Ok(all.difference(&removed).copied().collect())
        })
        .collect()
}

/// Applies `plan` to `model`: removes the units (and everything coupled to them), slices
/// every tensor that reads them (next convs' and linears' inputs, BatchNorm statistics and
/// affine parameters, concatenation offsets, flattened features), and returns a new model.
/// The input model is never modified. An empty plan gives an identical model.
pub fn apply(model: &Model, plan: &Plan, options: &ApplyOptions) -> Result<Pruned, SurgeryError> {
    let graph = model.graph();
    let protected: Vec<&str> = options.protected.iter().map(String::as_str).collect();
    let groups = analyze(graph, &protected)?;
    let kept = kept_units(graph, &groups, plan, options.rule)?;
    let keep_of = |g: usize| -> &BTreeSet<usize> { &kept[g] };
    let group_of_space = |s: usize| groups.group_of_space(s);

    let mut counts = HashMap::new();
    for layer in graph.prunable_layers() {
        // Depthwise convolutions have no units of their own: they follow their input.
        let Some(g) = groups.group_of(layer) else {
            continue;
        };
        if kept[g].len() != groups.groups()[g].units {
            counts.insert(layer.to_owned(), kept[g].len());
        }
    }
    let new_graph = graph.with_units(&counts)?;

    let index = |v: Vec<i64>| Tensor::from_slice(&v).to_device(model.device());
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for node in graph.nodes() {
        let specs = node.op.params(&node.name);
        if specs.is_empty() {
            continue;
        }
        let input_layout = node
            .inputs
            .first()
            .map(|n| &groups.layouts[graph.position(n).expect("validated")]);
        let in_idx = input_layout.map(|l| index(positions(l, &keep_of, &group_of_space)));
        let out_idx = match &node.op {
            Op::Conv2d { groups: g, .. } if *g > 1 && groups.group_of(&node.name).is_none() => {
                // Depthwise: outputs follow the input channels.
                in_idx.as_ref().map(Tensor::shallow_clone)
            }
            Op::Conv2d { .. } | Op::Linear { .. } => {
                let g = groups
                    .group_of(&node.name)
                    .expect("conv and linear layers create a space");
                Some(index(kept[g].iter().map(|&u| u as i64).collect()))
            }
            _ => None,
        };
        for spec in specs {
            let t = model.tensor(&spec.name)?.detach();
            let ctx = || format!("slicing '{}'", spec.name);
            let sliced = match (&node.op, spec.kind) {
                (_, ParamKind::NumBatchesTracked) => t.copy(),
                (Op::BatchNorm2d { .. } | Op::BatchNorm1d { .. }, _) => torch(
                    t.f_index_select(0, in_idx.as_ref().expect("batch norm reads an input")),
                    ctx,
                )?,
                (Op::Conv2d { groups: g, .. }, ParamKind::Weight) if *g == 1 => {
                    let w = torch(
                        t.f_index_select(0, out_idx.as_ref().expect("set above")),
                        ctx,
                    )?;
                    torch(
                        w.f_index_select(1, in_idx.as_ref().expect("conv reads an input")),
                        ctx,
                    )?
                }
                (Op::Linear { .. }, ParamKind::Weight) => {
                    let w = torch(
                        t.f_index_select(0, out_idx.as_ref().expect("set above")),
                        ctx,
                    )?;
                    torch(
                        w.f_index_select(1, in_idx.as_ref().expect("linear reads an input")),
                        ctx,
                    )?
                }
                // Depthwise weights [C, 1, k, k] and every bias: slice the output axis.
                (Op::Conv2d { .. } | Op::Linear { .. }, _) => torch(
                    t.f_index_select(0, out_idx.as_ref().expect("set above")),
                    ctx,
                )?,
                _ => t.copy(),
            };
            tensors.push((spec.name, sliced));
        }
    }
    let pruned = Model::from_tensors(new_graph, tensors, model.device())?;
    let report = report(graph, pruned.graph(), &groups, &kept);
    Ok(Pruned {
        model: pruned,
        report,
    })
}

fn report(
    before: &Graph,
    after: &Graph,
    groups: &ChannelGroups,
    kept: &[BTreeSet<usize>],
) -> Report {
    let a: HashMap<String, _> = after
        .summary()
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    let layers = before
        .summary()
        .into_iter()
        .filter(|r| r.params > 0 || r.macs > 0)
        .map(|r| {
            let n = &a[&r.name];
            LayerReport {
                units: (
                    before.units(&r.name).unwrap_or(0),
                    after.units(&r.name).unwrap_or(0),
                ),
                layer: r.name,
                params: (r.params, n.params),
                macs: (r.macs, n.macs),
            }
        })
        .collect();
    Report {
        layers,
        params: (before.param_count(), after.param_count()),
        macs: (before.macs(), after.macs()),
        groups: groups
            .groups()
            .iter()
            .zip(kept)
            .filter(|(g, k)| k.len() < g.units)
            .map(|(g, k)| (g.layers.clone(), g.units - k.len()))
            .collect(),
    }
}
