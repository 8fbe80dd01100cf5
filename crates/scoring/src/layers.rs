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
/// selector takes each within-group unit's mean over the groups.
pub fn prunable_layers(graph: &Graph, point: AnalysisPoint) -> Vec<PrunableLayer> {
    fair_analysis::scored_layers(graph, fair_analysis::GroupedConvs::WithinGroups)
        .into_iter()
        .map(|name| {
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
            PrunableLayer {
                name: name.to_owned(),
                units: graph.units(name).expect("prunable"),
                conv,
                analysis,
            }
        })
        .collect()
}
