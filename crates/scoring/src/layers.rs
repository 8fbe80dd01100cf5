//! Which layers are scored and where their units are read.

use fair_ir::{Graph, Role};
use serde::{Deserialize, Serialize};

/// Where a unit's output is read for the U-Score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum AnalysisPoint {
    /// The layer's own output, before any BatchNorm or activation.
    #[default]
    LayerOutput,
    /// Where the authors' package reads: its forward hook keeps the layer's output tensor,
    /// which a directly following in-place ReLU (`nn.ReLU(inplace=True)`, as in
    /// torchvision's models and the authors' examples) then overwrites. So a layer whose
    /// only reader is a ReLU is read after that ReLU; any other layer (e.g. a conv followed
    /// by BatchNorm) at its own output. Used by both presets.
    Package,
    /// After the BatchNorm and/or activation that directly follow the layer, when they do
    /// (the authors' VGG example).
    AfterActivation,
    /// After the BatchNorm that directly follows the layer, before its activation: the
    /// channel as the rest of the network sees it up to the non-linearity, with BatchNorm's
    /// scale γ/σ applied (a conv's own output scale is cancelled by its BatchNorm, so W1
    /// there does not say how large the channel is). A layer without a BatchNorm is read
    /// where [`AnalysisPoint::Package`] reads it. A fair-pruner extension.
    AfterNormalization,
}

/// A prunable layer as the scorers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrunableLayer {
    /// The Conv2d or Linear node.
    pub name: String,
    /// Its units (output channels or features).
    pub units: usize,
    /// Whether its units are channels of an image (a convolution) rather than features.
    pub conv: bool,
    /// The node whose output is read for the U-Score.
    pub analysis: String,
    /// Set when the layer's units are attention heads (it is q, k or v of an attention, and
    /// its dependency group maps units to heads): scorers compute one score per head and
    /// give it to each of the head's channels (see docs/algorithm.md, "Heads").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<Heads>,
}

/// How a layer's units are read as attention heads ([`PrunableLayer::heads`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heads {
    /// The `attention` node the layer feeds (as q, k or v); its output is the heads' output
    /// (the U-Score's analysis node).
    pub attention: String,
    /// Channels per head.
    pub head_dim: usize,
}

impl PrunableLayer {
    /// The number of units the scorers compare: heads for a layer read as heads, else its
    /// units.
    pub fn scored_units(&self) -> usize {
        match &self.heads {
            Some(h) if h.head_dim > 0 => self.units / h.head_dim,
            _ => self.units,
        }
    }
}

/// The layers that share an attention: for each layer of `layers`, the index of the first
/// layer read as heads of the same attention ([`PrunableLayer::heads`]; q, k and v of one
/// attention all map to the first of them), or its own index for a layer not read as heads.
/// The U-Score's directions, its BatchNorm-drift passes and the R-Score's head sums are
/// shared through it.
pub(crate) fn attention_leaders(layers: &[PrunableLayer]) -> Vec<usize> {
    layers
        .iter()
        .enumerate()
        .map(|(i, l)| match &l.heads {
            Some(h) => layers
                .iter()
                .position(|o| o.heads.as_ref().is_some_and(|g| g.attention == h.attention))
                .unwrap_or(i),
            None => i,
        })
        .collect()
}

/// The attention each layer feeds as q, k or v when the analysis gives the layer's group
/// whole heads of that attention's size (`None` for other layers, or when the graph is not
/// analysable: its scores then stay per channel).
fn head_readers(graph: &Graph, names: &[&str]) -> Vec<Option<Heads>> {
    let groups =
        fair_analysis::analyze_with(graph, &[], fair_analysis::GroupedConvs::WithinGroups).ok();
    names
        .iter()
        .map(|name| {
            let groups = groups.as_ref()?;
            let map = groups.groups()[groups.group_of(name)?].map;
            graph
                .readers(name)
                .into_iter()
                .find_map(|r| match r.op.channels() {
                    fair_ir::Channels::Heads { head_dim }
                        if map == (fair_analysis::UnitMap::Chunks { size: head_dim }) =>
                    {
                        Some(Heads {
                            attention: r.name.clone(),
                            head_dim,
                        })
                    }
                    _ => None,
                })
        })
        .collect()
}

/// The single reader of `name`, when there is exactly one.
fn only_reader<'g>(graph: &'g Graph, name: &str) -> Option<&'g fair_ir::Node> {
    match graph.readers(name).as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// Every layer that gets scores (all Conv2d and Linear but the output layer and depthwise
/// convolutions: the graph's prunable layers and the grouped convolutions, which are pruned
/// within their groups, [`fair_analysis::scored_layers`] under
/// [`fair_analysis::GroupedConvs::WithinGroups`]), with its analysis node for `point`. Its
/// units are its output channels: a grouped convolution's scores are per channel, and the
/// selector takes each within-group unit's mean over the groups. The q, k and v projections
/// of an attention whose group is pruned in heads are read as heads ([`PrunableLayer::heads`]:
/// analysis node the attention, whatever `point` says).
pub fn prunable_layers(graph: &Graph, point: AnalysisPoint) -> Vec<PrunableLayer> {
    let names = fair_analysis::scored_layers(graph, fair_analysis::GroupedConvs::WithinGroups);
    let heads = head_readers(graph, &names);
    names
        .into_iter()
        .zip(heads)
        .map(|(name, heads)| {
            let conv = graph.shape(name).expect("listed by the graph").len() == 3;
            let mut analysis = name.to_owned();
            if matches!(
                point,
                AnalysisPoint::Package | AnalysisPoint::AfterNormalization
            ) && let Some(n) =
                only_reader(graph, name).filter(|n| n.op.scoring().analysis_activation)
            {
                analysis = n.name.clone();
            }
            if point == AnalysisPoint::AfterNormalization
                && let Some(n) =
                    only_reader(graph, &analysis).filter(|n| n.op.role() == Role::Normalization)
            {
                analysis = n.name.clone();
            }
            if point == AnalysisPoint::AfterActivation {
                if let Some(n) =
                    only_reader(graph, &analysis).filter(|n| n.op.role() == Role::Normalization)
                {
                    analysis = n.name.clone();
                }
                if let Some(n) =
                    only_reader(graph, &analysis).filter(|n| n.op.role() == Role::Activation)
                {
                    analysis = n.name.clone();
                }
            }
            // Heads are read where they are: the attention's output (see docs/algorithm.md).
            if let Some(h) = &heads {
                analysis = h.attention.clone();
            }
            PrunableLayer {
                name: name.to_owned(),
                units: graph.units(name).expect("prunable"),
                conv,
                analysis,
                heads,
            }
        })
        .collect()
}
