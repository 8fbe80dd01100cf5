//! A plan resolved against a graph: the units every group keeps, the narrowed graph, and the
//! indices every tensor is sliced with. This is the one place where coupled layers settle on
//! their units; target search, `ratios`, `apply` and `prune` all go through it.

use std::collections::{BTreeSet, HashMap};

use fair_ir::Graph;
use serde::{Deserialize, Serialize};

use crate::error::AnalysisError;
use crate::groups::{ChannelGroups, GroupedConvs, analyze_with};
use crate::plan::{GroupRule, Plan, resolve};

/// How a plan is resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolveOptions {
    /// How coupled layers settle on one set of units.
    pub rule: GroupRule,
    /// Layers never to prune (besides the output layer), with everything coupled to them.
    pub protected: Vec<String>,
    /// How grouped convolutions are treated (held fixed by default). Under
    /// [`GroupedConvs::WithinGroups`] a plan names the units of a grouped convolution's
    /// spaces by within-group index (see [`crate::UnitMap::Blocks`]).
    pub grouped: GroupedConvs,
}

/// The indices one node's tensors are sliced with (see `fair_ir::ParamSpec::out_axis` and
/// `in_axis`). `None` means "keep everything".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSlice {
    /// Kept positions of the node's output channels (or features).
    pub output: Option<Vec<i64>>,
    /// Kept positions of the node's first input's channels (or features).
    pub input: Option<Vec<i64>>,
    /// Kept input channels within one group, for a grouped convolution's
    /// `fair_ir::ParamSpec::group_in_axis` (the same in every group).
    pub group_input: Option<Vec<i64>>,
}

/// A plan resolved against a graph.
#[derive(Debug, Clone)]
pub struct Resolution {
    groups: ChannelGroups,
    /// Kept units of each group, ascending.
    kept: Vec<BTreeSet<usize>>,
    before: Graph,
    after: Graph,
}

/// One row of a [`SizeReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LayerSize {
    /// The node.
    pub layer: String,
    /// Units before and after (unit-creating layers; 0 for others).
    pub units: (usize, usize),
    /// Trainable parameters before and after.
    pub params: (usize, usize),
    /// MACs per sample before and after.
    pub macs: (u64, u64),
}

/// Sizes before and after a resolution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SizeReport {
    /// Every node with parameters or MACs.
    pub layers: Vec<LayerSize>,
    /// Total parameters before and after.
    pub params: (usize, usize),
    /// Total MACs before and after.
    pub macs: (u64, u64),
    /// Units removed per group that lost any: the group's layers and the count, in units of
    /// the group's map (a within-group unit of a grouped convolution's space stands for one
    /// channel in every group; `layers` gives the widths in channels).
    pub groups: Vec<(Vec<String>, usize)>,
}

impl Resolution {
    /// Validates `plan` against `graph` and settles every coupled group by `options.rule`.
    /// Errors name the layer: unknown or non-prunable layers, unit indices out of range,
    /// units of a fixed group, a group left empty, or (strict rule) members that disagree.
    pub fn new(
        graph: &Graph,
        plan: &Plan,
        options: &ResolveOptions,
    ) -> Result<Self, AnalysisError> {
        let protected: Vec<&str> = options.protected.iter().map(String::as_str).collect();
        let groups = analyze_with(graph, &protected, options.grouped)?;
        Self::with_groups(graph, groups, plan, options.rule)
    }

    /// As [`Resolution::new`], with groups already analysed (for repeated resolutions).
    pub fn with_groups(
        graph: &Graph,
        groups: ChannelGroups,
        plan: &Plan,
        rule: GroupRule,
    ) -> Result<Self, AnalysisError> {
        check_plan(graph, &groups, plan)?;
        let kept = groups
            .groups()
            .iter()
            .map(|g| {
                let all: BTreeSet<usize> = (0..g.units).collect();
                if !g.is_prunable() {
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
                    return Err(AnalysisError::Empty {
                        layers: g.layers.clone(),
                    });
                }
                Ok(all.difference(&removed).copied().collect())
            })
            .collect::<Result<Vec<_>, AnalysisError>>()?;
        // Every unit-creating layer of a group that lost units narrows to the kept units'
        // channels.
        let mut widths = HashMap::new();
        for (group, kept) in groups.groups().iter().zip(&kept) {
            if kept.len() != group.units {
                for layer in &group.layers {
                    widths.insert(layer.clone(), kept.len() * group.map.channels_per_unit());
                }
            }
        }
        let after = graph.with_units(&widths)?;
        Ok(Resolution {
            groups,
            kept,
            before: graph.clone(),
            after,
        })
    }

    /// The channel groups.
    pub fn groups(&self) -> &ChannelGroups {
        &self.groups
    }

    /// The graph after removal.
    pub fn pruned_graph(&self) -> &Graph {
        &self.after
    }

    /// Kept units of a unit-creating layer (ascending), or `None` for other nodes. A unit
    /// is a channel unless the layer's group maps units to several channels
    /// ([`crate::Group::map`]).
    pub fn kept_units(&self, layer: &str) -> Option<&BTreeSet<usize>> {
        self.groups.group_of(layer).map(|g| &self.kept[g])
    }

    /// Kept width (output channels or features) of every scored layer
    /// ([`crate::scored_layers`]: the prunable layers, and the grouped convolutions when they
    /// are pruned within groups), in graph order (as reports list layers), indexable by layer
    /// name.
    pub fn widths(&self) -> Widths {
        Widths(
            crate::groups::scored_layers(&self.before, self.groups.grouped())
                .into_iter()
                .filter_map(|l| {
                    let g = self.groups.group_of(l)?;
                    let per = self.groups.groups()[g].map.channels_per_unit();
                    Some((l.to_owned(), self.kept[g].len() * per))
                })
                .collect(),
        )
    }

    /// The resolved plan: every member of a group lists exactly the group's removed units,
    /// so any rule applied to it gives this resolution again.
    pub fn plan(&self) -> Plan {
        let mut plan = Plan::new();
        for (g, kept) in self.groups.groups().iter().zip(&self.kept) {
            if kept.len() == g.units {
                continue;
            }
            let removed: Vec<usize> = (0..g.units).filter(|u| !kept.contains(u)).collect();
            for l in &g.layers {
                plan.remove.insert(l.clone(), removed.clone());
            }
        }
        plan
    }

    /// The slicing indices of the node at `position` of the original graph.
    pub fn node_slice(&self, position: usize) -> NodeSlice {
        let graph = &self.before;
        let node = &graph.nodes()[position];
        let keep = |s: usize, c: usize| {
            let (g, u) = self.groups.unit_of(s, c);
            self.kept[g].contains(&u)
        };
        let unchanged = |v: &Vec<i64>, n: usize| v.len() == n;
        let output = self.groups.layouts[position].positions(&keep);
        let output =
            (!unchanged(&output, fair_ir::unit_count(graph.shape_at(position)))).then_some(output);
        let input = node.inputs.first().and_then(|i| {
            let p = graph.position(i).expect("validated");
            let v = self.groups.layouts[p].positions(&keep);
            (!unchanged(&v, fair_ir::unit_count(graph.shape_at(p)))).then_some(v)
        });
        let within = node
            .op
            .params(&node.name)
            .iter()
            .find_map(|p| Some(p.shape[p.group_in_axis?]));
        let group_input = match (&input, within) {
            (Some(v), Some(w)) => Some(ChannelGroups::within_group(v, w)),
            _ => None,
        };
        NodeSlice {
            output,
            input,
            group_input,
        }
    }

    /// Parameters, MACs and units before and after, per layer and in total.
    pub fn report(&self) -> SizeReport {
        let (before, after) = (&self.before, &self.after);
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
                LayerSize {
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
        SizeReport {
            layers,
            params: (before.param_count(), after.param_count()),
            macs: (before.macs(), after.macs()),
            groups: self
                .groups
                .groups()
                .iter()
                .zip(&self.kept)
                .filter(|(g, k)| k.len() < g.units)
                .map(|(g, k)| (g.layers.clone(), g.units - k.len()))
                .collect(),
        }
    }
}

/// Checks every layer and unit the plan names.
fn check_plan(graph: &Graph, groups: &ChannelGroups, plan: &Plan) -> Result<(), AnalysisError> {
    for (layer, units) in &plan.remove {
        let Some(channels) = graph.units(layer) else {
            return Err(AnalysisError::NotPrunable {
                layer: layer.clone(),
                detail: match graph.node(layer) {
                    Ok(node) => format!(
                        "it is a {} node, which has no units of its own (plans name conv2d and linear layers)",
                        node.op.type_name()
                    ),
                    Err(_) => format!("the model '{}' has no node of that name", graph.name()),
                },
            });
        };
        // A layer's units are its channels, or fewer where its group maps a unit to several.
        let n = groups
            .group_of(layer)
            .map_or(channels, |g| groups.groups()[g].units);
        if let Some(&u) = units.iter().find(|&&u| u >= n) {
            return Err(AnalysisError::UnitOutOfRange {
                layer: layer.clone(),
                unit: u,
                units: n,
            });
        }
        let Some(g) = groups.group_of(layer) else {
            return Err(AnalysisError::NotPrunable {
                layer: layer.clone(),
                detail: "its channels follow its input: prune the layer that feeds it".into(),
            });
        };
        let g = &groups.groups()[g];
        if let Some(why) = &g.fixed
            && !units.is_empty()
        {
            return Err(AnalysisError::NotPrunable {
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
    Ok(())
}

/// Kept widths of prunable layers, in graph order (`features.3` before `features.10`):
/// iterate for `(layer, width)` pairs, or index by layer name (`widths["conv1"]`, which
/// panics for a layer not listed; [`Widths::get`] does not).
///
/// ```
/// use fair_analysis::{GroupRule, Plan, Resolution, ResolveOptions};
/// let graph = fair_zoo::build("vgg16_bn_cifar", &[3, 32, 32], 10)?;
/// let plan = Plan::new().remove("features.0", [0, 1]);
/// let r = Resolution::new(&graph, &plan, &ResolveOptions::default())?;
/// let widths = r.widths();
/// assert_eq!(widths["features.0"], 62);
/// let layers: Vec<&str> = widths.iter().map(|(l, _)| l.as_str()).collect();
/// assert_eq!(layers, graph.prunable_layers()); // graph order, not by name
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Widths(Vec<(String, usize)>);

impl Widths {
    /// The width of `layer`, if it is listed.
    pub fn get(&self, layer: &str) -> Option<usize> {
        self.0.iter().find(|(l, _)| l == layer).map(|&(_, w)| w)
    }

    /// `(layer, width)` pairs in graph order.
    pub fn iter(&self) -> std::slice::Iter<'_, (String, usize)> {
        self.0.iter()
    }

    /// The number of layers listed.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no layer is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: AsRef<str> + ?Sized> std::ops::Index<&K> for Widths {
    type Output = usize;

    fn index(&self, layer: &K) -> &usize {
        let layer = layer.as_ref();
        self.0
            .iter()
            .find(|(l, _)| l == layer)
            .map(|(_, w)| w)
            .unwrap_or_else(|| panic!("no width for the layer '{layer}'"))
    }
}

/// Widths from `(layer, width)` pairs, in the order given: e.g. to ask a latency model
/// ([`crate::LatencyModel::total`]) about widths no selection produced. A layer listed twice
/// has its first width.
impl FromIterator<(String, usize)> for Widths {
    fn from_iter<I: IntoIterator<Item = (String, usize)>>(pairs: I) -> Self {
        Widths(pairs.into_iter().collect())
    }
}

impl IntoIterator for Widths {
    type Item = (String, usize);
    type IntoIter = std::vec::IntoIter<(String, usize)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a Widths {
    type Item = &'a (String, usize);
    type IntoIter = std::slice::Iter<'a, (String, usize)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
