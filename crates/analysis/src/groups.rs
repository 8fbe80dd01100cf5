//! Channel dependency analysis: which units of which layers must be removed together, and
//! where every node reads every unit.
//!
//! Every tensor in the graph has a *layout*: its channel (or feature) axis is a list of
//! segments, each a run of channels from one *space*. The analysis reads each op's
//! [`Channels`] rule from its contract and nothing else:
//!
//! - `Create` (conv, linear) makes a new space of units; `Source` (the input) a fixed one;
//! - `Follow` (BatchNorm, activations, pooling, dropout, depthwise conv) passes the input's
//!   layout through;
//! - `Concat` joins its inputs' segments (DenseNet);
//! - `Flatten` keeps the segments and records how many features each channel expands to;
//! - `Couple` (residual add, gating mul) couples the spaces that meet position by position
//!   (union–find), so a ResNet stage's convs and projections share one group, and a
//!   squeeze-and-excitation gate's last conv shares the group of the channels it scales. A
//!   broadcast gate (`[C, 1, 1]` times `[C, H, W]`) has the same channel layout as the path
//!   it scales; only the spatial sizes differ, which the analysis never looks at.
//!
//! - `Heads` (multi-head attention) couples its q, k and v inputs like `Couple`, in whole
//!   heads: each must be one layer's whole output (else they are held fixed), their group's
//!   units map to chunks of `head_dim` channels ([`UnitMap::Chunks`]), and the output carries
//!   v's layout, so the output projection reading it loses a removed head's input columns;
//!
//! - `Slice` (one part of a channel split) takes the sub-range `start..end` of its input's
//!   layout, cutting segments where the range begins and ends; the input's spaces are held
//!   fixed (removing a channel would move the range);
//! - `Fixed` (channel shuffle, layer norm over the channels) holds every space of its input
//!   fixed and starts a new fixed space, like the network input: a shuffle's permutation and
//!   a layer norm's statistics depend on every channel, so none can be removed.
//!
//! A group can be pruned unless it contains a fixed space: the network input, the output
//! layer, a layer the user protects, the channels around a grouped convolution that is
//! not depthwise (ResNeXt, RegNet, a depthwise conv with a channel multiplier) under
//! [`GroupedConvs::Fixed`] (the default); the channels that reach a slice, a channel
//! shuffle or a layer norm; and the output of a shuffle or a layer norm. Where part of a
//! space (a slice's output) meets another layer's channels in a `Couple`, both are held
//! fixed instead of being coupled.
//!
//! Units and channels: a group's units map to the channels of each of its spaces by one
//! [`UnitMap`]. It is the identity unless a grouped convolution reads or creates the space
//! and the analysis prunes within groups ([`GroupedConvs::WithinGroups`]): then the space's
//! channels are `G` blocks (the convolution's groups) and unit *j* is channel *j* of every
//! block, so every group of the convolution loses the same within-group channels and
//! `groups` is kept. A group whose spaces meet grouped convolutions of several group counts
//! takes their least common multiple as its block count (a block map of `k·G` blocks also
//! removes the same within-group channels from each of `G` groups); if its channels are
//! not divisible by it, or a grouped convolution reads anything but one whole space, those
//! channels are held fixed.
//!
//! A group whose spaces meet an attention maps units to heads ([`UnitMap::Chunks`] of the
//! head size); it is held fixed when its spaces meet attentions of several head sizes, or
//! a grouped convolution as well.

use std::collections::{BTreeMap, BTreeSet};

use fair_ir::{Channels, Graph, ParamKind, ParamSpec, Reads};

use crate::error::AnalysisError;
use crate::unit_map::UnitMap;

/// How the analysis treats grouped convolutions that are not depthwise (ResNeXt, RegNet-X).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupedConvs {
    /// Their input channels and their outputs are held fixed (the library default, and
    /// what [`analyze`] does; `score`, `ratios`, `apply` and `prune` use
    /// [`GroupedConvs::WithinGroups`]).
    #[default]
    Fixed,
    /// Prune within groups, keeping the group count: the channels they read and create are
    /// mapped to units by [`UnitMap::Blocks`] (unit *j* is channel *j* of every group).
    /// Torch-Pruning's `in_channel_groups` / `out_channel_groups` do the same (see
    /// `docs/algorithm.md`). Plans name within-group unit indices; a [`crate::Selector`]
    /// (`SelectOptions::grouped`) turns per-channel scores into unit scores by the mean over
    /// the groups.
    WithinGroups,
}

/// The layers that get scores under `grouped`, in graph order: the graph's prunable layers
/// ([`Graph::prunable_layers`]) and, under [`GroupedConvs::WithinGroups`], also the grouped
/// convolutions that are not depthwise (every unit-creating layer but the output layer).
/// Scores are given per output channel; a [`crate::Selector`] turns them into unit scores
/// through the layer's group map ([`UnitMap::unit_scores`]).
pub fn scored_layers(graph: &Graph, grouped: GroupedConvs) -> Vec<&str> {
    match grouped {
        GroupedConvs::Fixed => graph.prunable_layers(),
        GroupedConvs::WithinGroups => {
            let output = graph.output().name.as_str();
            graph
                .nodes()
                .iter()
                .filter(|n| n.op.units().is_some() && n.name != output)
                .map(|n| n.name.as_str())
                .collect()
        }
    }
}

/// A run of `len` consecutive channels of one space, starting at `start` within that space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub space: usize,
    pub start: usize,
    pub len: usize,
}

/// The channel axis of one tensor: segments, and how many features each channel occupies
/// (1 for images; H·W after a flatten).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub segments: Vec<Segment>,
    pub per_channel: usize,
}

impl Layout {
    fn single(space: usize, len: usize) -> Self {
        Layout {
            segments: vec![Segment {
                space,
                start: 0,
                len,
            }],
            per_channel: 1,
        }
    }

    fn channels(&self) -> usize {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Every channel of this layout with the feature positions that carry it: `(space,
    /// channel of that space, positions)`, in layout order (one position per channel, H·W after
    /// a flatten).
    fn channel_positions(
        &self,
    ) -> impl Iterator<Item = (usize, usize, std::ops::Range<usize>)> + '_ {
        let per = self.per_channel;
        self.segments
            .iter()
            .scan(0, move |offset, seg| {
                let first = *offset;
                *offset += seg.len;
                Some((0..seg.len).map(move |c| {
                    let base = (first + c) * per;
                    (seg.space, seg.start + c, base..base + per)
                }))
            })
            .flatten()
    }

    /// The feature positions of this layout whose channel is kept, given whether channel
    /// `c` of space `s` is kept (`keep(s, c)`).
    pub(crate) fn positions(&self, keep: &dyn Fn(usize, usize) -> bool) -> Vec<i64> {
        self.channel_positions()
            .filter(|(space, channel, _)| keep(*space, *channel))
            .flat_map(|(_, _, range)| range.map(|f| f as i64))
            .collect()
    }
}

/// A set of units that must be kept or removed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Number of units (every member has this many): the channels of each of its spaces
    /// divided by [`UnitMap::channels_per_unit`].
    pub units: usize,
    /// How each unit maps to the channels of each member's space (the identity, unless a
    /// grouped convolution is pruned within its groups).
    pub map: UnitMap,
    /// The prunable layers whose units form this group, in graph order.
    pub layers: Vec<String>,
    /// Why the group cannot be pruned, if it cannot.
    pub fixed: Option<String>,
}

impl Group {
    /// The number of channels of each of its spaces (a member's output channels).
    pub fn channels(&self) -> usize {
        self.units * self.map.channels_per_unit()
    }

    /// Whether units of this group can be removed.
    pub fn is_prunable(&self) -> bool {
        self.fixed.is_none() && !self.layers.is_empty()
    }
}

/// The result of [`analyze`]: groups, and how every node's output is laid out.
#[derive(Debug, Clone)]
pub struct ChannelGroups {
    groups: Vec<Group>,
    /// Group of each space.
    space_group: Vec<usize>,
    /// Space created by each unit-creating layer.
    layer_space: BTreeMap<String, usize>,
    /// Layout of each node's output, by node position.
    pub(crate) layouts: Vec<Layout>,
    /// Whether grouped convolutions are pruned within their groups.
    within_groups: bool,
}

impl ChannelGroups {
    /// How grouped convolutions were treated.
    pub fn grouped(&self) -> GroupedConvs {
        if self.within_groups {
            GroupedConvs::WithinGroups
        } else {
            GroupedConvs::Fixed
        }
    }

    /// All groups (prunable or not), in the order their first space appears.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The group a unit-creating layer's units belong to (`None` for other nodes).
    pub fn group_of(&self, layer: &str) -> Option<usize> {
        self.layer_space.get(layer).map(|&s| self.space_group[s])
    }

    /// The group and the unit that channel `channel` of space `space` belongs to.
    pub(crate) fn unit_of(&self, space: usize, channel: usize) -> (usize, usize) {
        let g = self.space_group[space];
        let group = &self.groups[g];
        (g, group.map.unit(channel, group.channels()))
    }

    /// The input positions a grouped reader's within-group axis keeps: the kept positions of
    /// its input that fall in the first group (`within` = input channels per group). The
    /// block map makes every group keep the same within-group channels.
    pub(crate) fn within_group(positions: &[i64], within: usize) -> Vec<i64> {
        positions
            .iter()
            .map(|&p| p % within as i64)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// Where the units `units` of group `group` are read: for every node whose weights read
    /// their input densely (dense convs, linear layers), the input columns (channels, or
    /// features after a flatten) that carry them, and, when grouped convolutions are pruned
    /// within groups, for every grouped convolution the within-group columns of its weight's
    /// axis 1 (the same in every group). Zeroing these columns (axis 1 of the weight) makes
    /// the units provably irrelevant to the output.
    pub fn reading_columns(
        &self,
        graph: &Graph,
        group: usize,
        units: &BTreeSet<usize>,
    ) -> Vec<(String, Vec<i64>)> {
        let chosen = |s: usize, c: usize| {
            let (g, u) = self.unit_of(s, c);
            g == group && units.contains(&u)
        };
        graph
            .nodes()
            .iter()
            .filter_map(|n| {
                let params = n.op.params(&n.name);
                let dense = params.iter().any(|p| p.in_axis.is_some());
                let within = params
                    .iter()
                    .find_map(|p| Some(p.shape[p.group_in_axis?]))
                    .filter(|_| self.within_groups);
                if !dense && within.is_none() {
                    return None;
                }
                let layout = &self.layouts[graph.position(&n.inputs[0]).ok()?];
                let mut cols = layout.positions(&chosen);
                if let Some(w) = within {
                    cols = Self::within_group(&cols, w);
                }
                (!cols.is_empty()).then(|| (n.name.clone(), cols))
            })
            .collect()
    }
}

/// Where one parameter tensor holds the units of a group: see [`ChannelGroups::unit_slices`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSlices {
    /// The parameter's full name (`features.0.weight`).
    pub param: String,
    /// Its kind (weight, bias, running statistics).
    pub kind: ParamKind,
    /// The axis that indexes channels (or features): the node's output axis, or its
    /// first input's; or, for a per-head tensor ([`fair_ir::ParamSpec::head_axis`]), its
    /// heads.
    pub axis: usize,
    /// Whether `axis` follows the node's input (a reader's slice) rather than its output.
    pub reads: bool,
    /// For every unit of the group (`0..units`), the positions along `axis` that carry it:
    /// one for a channel, H·W after a flatten, one head for a per-head tensor, none where
    /// this tensor does not see the unit.
    pub positions: Vec<Vec<i64>>,
}

impl ChannelGroups {
    /// Every parameter slice that belongs to the units of `group`: the producing layers'
    /// output slices (conv filters, linear rows, biases), the per-channel parameters of the
    /// nodes they pass through (BatchNorm scale, shift and statistics, depthwise filters),
    /// and the input slices of the dense layers that read them (a conv's input channels, a
    /// linear layer's input features, H·W per channel after a flatten), and an attention's
    /// per-head tensors (a head's relative position bias and logit scale). These are the
    /// slices surgery removes with a unit, so group-level criteria (Torch-Pruning's group
    /// norms) can be computed from them.
    pub fn unit_slices(&self, graph: &Graph, group: usize) -> Vec<UnitSlices> {
        let units = self.groups.get(group).map_or(0, |g| g.units);
        let mut out = Vec::new();
        for (i, node) in graph.nodes().iter().enumerate() {
            for spec in node.op.params(&node.name) {
                let within = spec
                    .group_in_axis
                    .filter(|_| self.within_groups)
                    .map(|a| spec.shape[a]);
                let axes = [
                    (spec.out_axis, Some(i), false),
                    (spec.in_axis, None, true),
                    (spec.group_in_axis.filter(|_| within.is_some()), None, true),
                ];
                for (axis, position, reads) in axes {
                    let Some(axis) = axis else { continue };
                    let position = match position {
                        Some(p) => p,
                        None => match node.inputs.first().map(|n| graph.position(n)) {
                            Some(Ok(p)) => p,
                            _ => continue,
                        },
                    };
                    let layout = &self.layouts[position];
                    let mut positions = vec![Vec::new(); units];
                    for (space, channel, range) in layout.channel_positions() {
                        let (g, unit) = self.unit_of(space, channel);
                        if g == group
                            && let Some(p) = positions.get_mut(unit)
                        {
                            p.extend(range.map(|f| f as i64));
                        }
                    }
                    if let (Some(w), Some(a)) = (within, spec.group_in_axis)
                        && a == axis
                    {
                        for p in &mut positions {
                            *p = Self::within_group(p, w);
                        }
                    }
                    if positions.iter().any(|p| !p.is_empty()) {
                        out.push(UnitSlices {
                            param: spec.name.clone(),
                            kind: spec.kind,
                            axis,
                            reads,
                            positions,
                        });
                    }
                }
                // A per-head tensor (an attention's relative position bias, logit scale):
                // head h is the unit of the output's channel h·head_dim.
                if let (Some(axis), Channels::Heads { head_dim }) =
                    (spec.head_axis, node.op.channels())
                {
                    let mut positions = vec![Vec::new(); units];
                    for (space, channel, range) in self.layouts[i].channel_positions() {
                        // The head of the channel's first position, as surgery keeps it.
                        let Some(&head) =
                            ParamSpec::kept_heads(&[range.start as i64], head_dim).first()
                        else {
                            continue;
                        };
                        let (g, unit) = self.unit_of(space, channel);
                        if g == group
                            && let Some(p) = positions.get_mut(unit)
                        {
                            p.push(head);
                        }
                    }
                    if positions.iter().any(|p| !p.is_empty()) {
                        out.push(UnitSlices {
                            param: spec.name.clone(),
                            kind: spec.kind,
                            axis,
                            reads: false,
                            positions,
                        });
                    }
                }
            }
        }
        out
    }
}

/// The channels `start..end` of a layout's segments, cut where the range begins and ends.
fn cut(segments: &[Segment], start: usize, end: usize) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut offset = 0;
    for seg in segments {
        let (lo, hi) = (start.max(offset), end.min(offset + seg.len));
        if lo < hi {
            out.push(Segment {
                space: seg.space,
                start: seg.start + (lo - offset),
                len: hi - lo,
            });
        }
        offset += seg.len;
    }
    out
}

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn find(&mut self, x: usize) -> usize {
        let mut r = x;
        while self.0[r] != r {
            r = self.0[r];
        }
        let mut y = x;
        while self.0[y] != r {
            let next = self.0[y];
            self.0[y] = r;
            y = next;
        }
        r
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[ra.max(rb)] = ra.min(rb);
        }
    }
}

/// The spaces found so far: size, why fixed, which layer created it.
#[derive(Default)]
struct Spaces {
    sizes: Vec<usize>,
    fixed: Vec<Option<String>>,
    producer: Vec<Option<String>>,
}

impl Spaces {
    fn add(&mut self, size: usize, why: Option<String>, layer: Option<String>) -> usize {
        self.sizes.push(size);
        self.fixed.push(why);
        self.producer.push(layer);
        self.sizes.len() - 1
    }
}

/// Derives the channel groups of `graph` from each op's channel rule. Layers named in
/// `protected` are never pruned (nor is anything coupled to them). Grouped convolutions are
/// held fixed ([`GroupedConvs::Fixed`]; see [`analyze_with`]).
pub fn analyze(graph: &Graph, protected: &[&str]) -> Result<ChannelGroups, AnalysisError> {
    analyze_with(graph, protected, GroupedConvs::Fixed)
}

/// As [`analyze`], with grouped convolutions treated as `grouped` says.
pub fn analyze_with(
    graph: &Graph,
    protected: &[&str],
    grouped: GroupedConvs,
) -> Result<ChannelGroups, AnalysisError> {
    let within_groups = grouped == GroupedConvs::WithinGroups;
    let output = graph.output().name.clone();
    for p in protected {
        if graph.units(p).is_none() {
            return Err(AnalysisError::NotPrunable {
                layer: (*p).to_owned(),
                detail: "only conv2d and linear layers can be protected".into(),
            });
        }
    }
    let mut spaces = Spaces::default();
    let mut layer_space = BTreeMap::new();
    let mut layouts: Vec<Layout> = Vec::with_capacity(graph.nodes().len());
    let mut couplings: Vec<(usize, usize)> = Vec::new();
    let mut extra_fixed: Vec<(usize, String)> = Vec::new();
    // (space, block count) for the spaces a grouped convolution reads or creates.
    let mut blocks: Vec<(usize, usize)> = Vec::new();
    // (space, head size) for the spaces an attention reads as q, k or v.
    let mut chunks: Vec<(usize, usize)> = Vec::new();
    for (i, node) in graph.nodes().iter().enumerate() {
        let shape = graph.shape_at(i);
        // The output's units: channels of an image, features of a vector or of tokens.
        let width = fair_ir::unit_count(shape);
        let input =
            |k: usize| -> &Layout { &layouts[graph.position(&node.inputs[k]).expect("validated")] };
        let layout = match node.op.channels() {
            Channels::Source => Layout::single(
                spaces.add(width, Some("it is the network input".into()), None),
                width,
            ),
            Channels::Create { units, reads } => {
                let mut grouped_fixed = false;
                if let Reads::Grouped { groups } = reads {
                    let l = input(0);
                    let whole = match l.segments.as_slice() {
                        [seg]
                            if l.per_channel == 1
                                && seg.start == 0
                                && seg.len == spaces.sizes[seg.space] =>
                        {
                            Some(seg.space)
                        }
                        _ => None,
                    };
                    match whole.filter(|_| within_groups) {
                        Some(space) => blocks.push((space, groups)),
                        None => {
                            grouped_fixed = true;
                            for s in &l.segments {
                                extra_fixed.push((
                                    s.space,
                                    format!("it feeds the grouped convolution '{}'", node.name),
                                ));
                            }
                        }
                    }
                }
                let why = if node.name == output {
                    Some("it is the output layer".to_owned())
                } else if protected.contains(&node.name.as_str()) {
                    Some(format!("'{}' is protected", node.name))
                } else if grouped_fixed {
                    Some(format!("'{}' is a grouped convolution", node.name))
                } else {
                    None
                };
                let s = spaces.add(units, why, Some(node.name.clone()));
                if let Reads::Grouped { groups } = reads
                    && !grouped_fixed
                {
                    blocks.push((s, groups));
                }
                layer_space.insert(node.name.clone(), s);
                Layout::single(s, units)
            }
            Channels::Follow => input(0).clone(),
            Channels::Fixed => {
                for s in &input(0).segments {
                    extra_fixed.push((
                        s.space,
                        format!(
                            "it feeds the {} '{}', whose channels cannot be removed",
                            node.op.type_name(),
                            node.name
                        ),
                    ));
                }
                let why = format!(
                    "it is the output of the {} '{}'",
                    node.op.type_name(),
                    node.name
                );
                Layout::single(spaces.add(width, Some(why), None), width)
            }
            Channels::Slice { start, end } => {
                let l = input(0);
                for s in &l.segments {
                    extra_fixed
                        .push((s.space, format!("it is split by the slice '{}'", node.name)));
                }
                Layout {
                    segments: cut(&l.segments, start, end),
                    per_channel: l.per_channel,
                }
            }
            Channels::Flatten => {
                let l = input(0);
                let from = graph.shape(&node.inputs[0]).expect("validated");
                if fair_ir::unit_axis(from) != 0 {
                    return Err(AnalysisError::Unsupported {
                        node: node.name.clone(),
                        detail: format!(
                            "it flattens tokens {from:?}, whose features are not channel-major; pool the tokens (token_mean) instead"
                        ),
                    });
                }
                let spatial: usize = from[1..].iter().product();
                Layout {
                    segments: l.segments.clone(),
                    per_channel: l.per_channel * spatial.max(1),
                }
            }
            Channels::Concat => Layout {
                segments: (0..node.inputs.len())
                    .flat_map(|k| input(k).segments.iter().copied())
                    .collect(),
                per_channel: 1,
            },
            Channels::Heads { head_dim } => {
                // q, k and v coupled position by position in whole heads: each must be one
                // layer's whole output (a head's channels are a chunk of one space), else
                // every space that reaches it is held fixed.
                let whole = |l: &Layout| match l.segments.as_slice() {
                    [seg]
                        if l.per_channel == 1
                            && seg.start == 0
                            && seg.len == spaces.sizes[seg.space] =>
                    {
                        Some(seg.space)
                    }
                    _ => None,
                };
                let ins: Vec<&Layout> = (0..node.inputs.len()).map(input).collect();
                let found: Vec<Option<usize>> = ins.iter().map(|l| whole(l)).collect();
                if found.iter().all(Option::is_some) {
                    let found: Vec<usize> = found.into_iter().flatten().collect();
                    for &s in &found {
                        chunks.push((s, head_dim));
                    }
                    for w in found.windows(2) {
                        couplings.push((w[0], w[1]));
                    }
                } else {
                    for l in &ins {
                        for s in &l.segments {
                            extra_fixed.push((
                                s.space,
                                format!(
                                    "it reaches the attention '{}' as part of its q, k or v (only one layer's whole output is pruned in heads)",
                                    node.name
                                ),
                            ));
                        }
                    }
                }
                // The output's head h is v's head h.
                ins[ins.len() - 1].clone()
            }
            Channels::Couple => {
                let first = input(0).clone();
                for k in 1..node.inputs.len() {
                    let other = input(k);
                    let same_cut = other.per_channel == first.per_channel
                        && other.segments.len() == first.segments.len()
                        && other
                            .segments
                            .iter()
                            .zip(&first.segments)
                            .all(|(a, b)| a.len == b.len);
                    if !same_cut {
                        return Err(AnalysisError::Unsupported {
                            node: node.name.clone(),
                            detail: format!(
                                "the inputs of this {} are concatenated differently; coupling them is not supported",
                                node.op.type_name()
                            ),
                        });
                    }
                    for (a, b) in other.segments.iter().zip(&first.segments) {
                        let whole = |g: &Segment| g.start == 0 && g.len == spaces.sizes[g.space];
                        if whole(a) && whole(b) {
                            couplings.push((a.space, b.space));
                        } else {
                            // Part of a space (after a slice, whose input is fixed): hold
                            // both sides fixed rather than couple spaces of unequal sizes.
                            for g in [a, b] {
                                extra_fixed.push((
                                    g.space,
                                    format!(
                                        "part of its channels meet another layer's in the {} '{}'",
                                        node.op.type_name(),
                                        node.name
                                    ),
                                ));
                            }
                        }
                    }
                }
                first
            }
        };
        if layout.channels() * layout.per_channel != width {
            return Err(AnalysisError::Unsupported {
                node: node.name.clone(),
                detail: format!(
                    "its {} channel rule gives {} channels but its output has {}",
                    node.op.type_name(),
                    layout.channels() * layout.per_channel,
                    width
                ),
            });
        }
        layouts.push(layout);
    }
    // Whatever reaches the network's output unchanged is the output: a layer read through
    // activations, pooling or a flatten (SqueezeNet's classifier conv) is as fixed as a final
    // linear layer.
    let out_position = graph.position(&output).expect("validated");
    for s in &layouts[out_position].segments {
        extra_fixed.push((s.space, "its units are the network's outputs".to_owned()));
    }
    let Spaces {
        sizes,
        mut fixed,
        producer,
    } = spaces;
    for (s, why) in extra_fixed {
        fixed[s].get_or_insert(why);
    }
    // Couplings join whole spaces only (segments that cover part of a space are held fixed
    // above), so every group's spaces have one size.
    let mut uf = UnionFind((0..sizes.len()).collect());
    for (a, b) in couplings {
        uf.union(a, b);
    }
    // The block count of each union-find root: the least common multiple of the group
    // counts of the grouped convolutions its spaces meet.
    let mut root_blocks: BTreeMap<usize, usize> = BTreeMap::new();
    for (s, b) in blocks {
        let r = uf.find(s);
        let e = root_blocks.entry(r).or_insert(1);
        *e = lcm(*e, b);
    }
    // The head size of each union-find root that meets an attention: one size, or a reason
    // to hold it fixed.
    let mut root_chunks: BTreeMap<usize, Result<usize, String>> = BTreeMap::new();
    for (s, d) in chunks {
        let r = uf.find(s);
        match root_chunks.get(&r) {
            None => {
                root_chunks.insert(r, Ok(d));
            }
            Some(Ok(e)) if *e != d => {
                root_chunks.insert(
                    r,
                    Err(format!(
                        "its channels meet attentions of head sizes {e} and {d}"
                    )),
                );
            }
            Some(_) => {}
        }
    }
    let mut root_group: BTreeMap<usize, usize> = BTreeMap::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut space_group = vec![0; sizes.len()];
    for s in 0..sizes.len() {
        let r = uf.find(s);
        let g = *root_group.entry(r).or_insert_with(|| {
            let b = root_blocks.get(&r).copied().unwrap_or(1);
            let heads = root_chunks.get(&r).cloned();
            let (map, fixed) = if let Some(heads) = heads {
                match heads {
                    Err(why) => (UnitMap::Identity, Some(why)),
                    Ok(_) if b > 1 => (
                        UnitMap::Identity,
                        Some(
                            "its channels meet both an attention's heads and a grouped convolution's groups"
                                .to_owned(),
                        ),
                    ),
                    Ok(d) if sizes[s].is_multiple_of(d) => (UnitMap::Chunks { size: d }, None),
                    Ok(d) => (
                        UnitMap::Identity,
                        Some(format!(
                            "its {} channels are not whole heads of {d}",
                            sizes[s]
                        )),
                    ),
                }
            } else if b == 1 {
                (UnitMap::Identity, None)
            } else if sizes[s].is_multiple_of(b) {
                (UnitMap::Blocks { blocks: b }, None)
            } else {
                (
                    UnitMap::Identity,
                    Some(format!(
                        "its {} channels meet grouped convolutions whose group counts have the least common multiple {b}, which does not divide them",
                        sizes[s]
                    )),
                )
            };
            groups.push(Group {
                units: map.units(sizes[s]),
                map,
                layers: Vec::new(),
                fixed,
            });
            groups.len() - 1
        });
        space_group[s] = g;
        if let Some(l) = &producer[s] {
            groups[g].layers.push(l.clone());
        }
        if groups[g].fixed.is_none() {
            groups[g].fixed = fixed[s].clone();
        }
    }
    Ok(ChannelGroups {
        groups,
        space_group,
        layer_space,
        layouts,
        within_groups,
    })
}

pub(crate) fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

pub(crate) fn lcm(a: usize, b: usize) -> usize {
    a / gcd(a, b) * b
}
