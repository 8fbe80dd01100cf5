//! From stored scores to a resolved plan: ToD counts at an α or a target size, removal sets
//! by a ranking, coupled layers settled by a [`GroupRule`], and the cost model (parameters
//! and MACs of the narrowed graph) — all without recomputing a score.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use fair_ir::Graph;
use fair_threshold::{CountOptions, TodCurve, counts_at, lowest};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::AnalysisError;
use crate::groups::{ChannelGroups, GroupedConvs, analyze_with, scored_layers};
use crate::latency::LatencyModel;
use crate::plan::{GroupRule, Plan};
use crate::resolution::Resolution;
use crate::scores::{ScoreFile, graph_digest};

/// What decides the per-layer counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum Goal {
    /// A tolerance α ∈ [0, 1] (larger removes more).
    Alpha(f64),
    /// Remove at least this fraction ∈ (0, 1) of the MACs.
    Macs(f64),
    /// Remove at least this fraction ∈ (0, 1) of the parameters.
    Params(f64),
    /// Remove at least this fraction ∈ (0, 1) of the latency, as the selector's latency
    /// model predicts it ([`Selector::with_latency`]).
    Latency(f64),
}

impl Goal {
    /// Checks the value's range: α in [0, 1], targets in (0, 1).
    pub fn check(&self) -> Result<(), AnalysisError> {
        let bad = |detail: String| Err(AnalysisError::Goal(detail));
        match *self {
            Goal::Alpha(a) if !(0.0..=1.0).contains(&a) => {
                bad(format!("the tolerance α must be in [0, 1], found {a}"))
            }
            Goal::Macs(f) | Goal::Params(f) | Goal::Latency(f) if !(f > 0.0 && f < 1.0) => {
                bad(format!(
                    "a target {} reduction must be a fraction in (0, 1) (e.g. 0.5 removes half), found {f}",
                    match self {
                        Goal::Macs(_) => "MACs",
                        Goal::Params(_) => "parameters",
                        _ => "latency",
                    }
                ))
            }
            _ => Ok(()),
        }
    }

    /// The setting that gives this goal, as a command-line flag without dashes (`alpha`,
    /// `target-macs`, `target-params`, `target-latency`) and config key (with `_`).
    pub fn flag(&self) -> &'static str {
        match self {
            Goal::Alpha(_) => "alpha",
            Goal::Macs(_) => "target-macs",
            Goal::Params(_) => "target-params",
            Goal::Latency(_) => "target-latency",
        }
    }

    /// A short label usable as a file name (export directories are named by it): `alpha-0.05`,
    /// `macs-0.5`, `params-0.3`, `latency-0.5`, `alpha-1e-320`. The value is written in the shortest form
    /// that reads back as exactly that number (a decimal when one has at most
    /// [`Goal::VALUE_CHARS`] characters, else an exponent form), with -0 written as 0. So
    /// goals that are equal get the same label, distinct goals get distinct labels, and a
    /// label has at most [`Goal::LABEL_BYTES`] bytes of `a-z`, `A-Z`, `0-9`, `.` and `-`,
    /// starting with a letter.
    pub fn label(&self) -> String {
        let (name, v) = match *self {
            Goal::Alpha(a) => ("alpha", a),
            Goal::Macs(f) => ("macs", f),
            Goal::Params(f) => ("params", f),
            Goal::Latency(f) => ("latency", f),
        };
        format!("{name}-{}", short(v))
    }

    /// The longest value a [`Goal::label`] writes as a plain decimal; longer ones (such as
    /// `0.000000000000000000000001`) are written in exponent form (`1e-24`).
    pub const VALUE_CHARS: usize = 24;

    /// The most bytes a [`Goal::label`] has: `latency-` and a value of at most
    /// [`Goal::VALUE_CHARS`] characters (the longest exponent form,
    /// `-2.2250738585072014e-308`, has 24).
    pub const LABEL_BYTES: usize = 8 + Self::VALUE_CHARS;
}

/// `v` in the shortest form that reads back as exactly `v`: the shortest round-trip decimal
/// (`0.05`, `0.30000000000000004`) when it has at most [`Goal::VALUE_CHARS`] characters, else
/// the shortest round-trip exponent form (`1e-320`); -0 is written as 0.
fn short(v: f64) -> String {
    // -0.0 + 0.0 is +0.0; every other value is unchanged.
    let v = v + 0.0;
    let plain = v.to_string();
    if plain.len() <= Goal::VALUE_CHARS {
        plain
    } else {
        format!("{v:e}")
    }
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Goal::Alpha(a) => write!(f, "α = {}", short(*a)),
            Goal::Macs(v) => write!(f, "remove {:.1}% of MACs", v * 100.0),
            Goal::Params(v) => write!(f, "remove {:.1}% of parameters", v * 100.0),
            Goal::Latency(v) => write!(f, "remove {:.1}% of latency", v * 100.0),
        }
    }
}

/// How per-layer counts are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Method {
    /// Tolerance of Difference: each layer its own count (FAIR-Pruner).
    #[default]
    Tod,
    /// The same fraction of every layer (the usual baseline); targets only.
    Uniform,
}

/// The cost c_l behind a layer's MAC weight w_l = (c_l / c_max)^γ
/// ([`SelectOptions::mac_weight`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum MacCost {
    /// The MACs one unit saves together with everything coupled to it: each member of a
    /// residual group is charged the whole group's saving.
    ///
    /// This is [`Selector::unit_macs`].
    #[default]
    Unit,
    /// That saving divided among the k scored members of the layer's group (unchanged for a
    /// lone layer).
    ///
    /// Under [`GroupRule::Summed`] one ToD curve stands for all k members, so a group's unit
    /// then pays for the k layers that lose it, as k lone layers would.
    Shared,
    /// The shared saving times the layer's width n: the MACs saved per fraction of the layer.
    ///
    /// ToD counts behave like fractions of a layer, so this compares layers by what removing
    /// the same fraction saves. In a net whose stages keep their MACs level (width doubles as
    /// resolution halves) every layer then weighs about the same.
    Fraction,
}

impl MacCost {
    /// The name used by the CLI, config files and reports (`unit`, `shared`, `fraction`).
    pub fn name(self) -> &'static str {
        match self {
            MacCost::Unit => "unit",
            MacCost::Shared => "shared",
            MacCost::Fraction => "fraction",
        }
    }
}

/// What the MAC weight's cost c_l counts under a latency target
/// ([`SelectOptions::weigh_by`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum WeighBy {
    /// The latency the attached latency model says the layer's units save
    /// ([`Selector::latency_costs`]), measured per unit, shared or per fraction as
    /// [`MacCost`] says; MACs where no latency model is attached.
    #[default]
    Latency,
    /// MACs ([`Selector::unit_macs`]), as for every other goal.
    Macs,
}

impl WeighBy {
    /// The name used by the CLI, config files and reports (`latency`, `macs`).
    pub fn name(self) -> &'static str {
        match self {
            WeighBy::Latency => "latency",
            WeighBy::Macs => "macs",
        }
    }
}

/// Options of a [`Selector`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SelectOptions {
    /// How coupled layers settle on one set of units.
    pub rule: GroupRule,
    /// Post-processing of each layer's count (minimum kept, rounding).
    pub counting: CountOptions,
    /// Layers never to prune (besides the output layer), with everything coupled to them.
    pub protected: Vec<String>,
    /// MAC-aware counts, γ ≥ 0 (default 0: off, the paper). With γ > 0 each layer's ToD
    /// curve is [weighted](TodCurve::weighted) by w_l = (c_l / c_max)^γ ∈ (0, 1], where c_l is
    /// the layer's MAC cost as `mac_cost` measures it (by default the MACs saved by removing
    /// one unit of the layer together with everything coupled to it, [`Selector::unit_macs`])
    /// and c_max the largest over the scored layers: the layer
    /// removes the largest m with ToD(m)^w_l ≤ α (ToD(m) ≤ α^(1/w_l)), so the layers whose
    /// units cost the most MACs keep the tolerance α and cheaper ones tolerate less conflict
    /// and give up fewer units. No layer's tolerance exceeds α, and α = 0 and α = 1 give the
    /// unweighted counts. A fair-pruner extension, not in the paper or the authors' package.
    pub mac_weight: f64,
    /// What the MAC weight measures each layer's cost by (used only with `mac_weight` > 0):
    /// see [`MacCost`]. Default [`MacCost::Unit`].
    pub mac_cost: MacCost,
    /// What the weight's costs count once a latency model is attached
    /// ([`Selector::with_latency`], a latency target): the latency each layer's units save
    /// (default) or MACs. Used only with `mac_weight` > 0.
    pub weigh_by: WeighBy,
    /// With a MACs or parameters target, land on it instead of taking the first α that
    /// passes it: the counts blend between the ToD counts at that α and at the tolerance just
    /// below ([`fair_threshold::alpha_for_target_exact`]). Off by default (every layer's
    /// count is then a ToD count at one α, as in the paper); the `fair-pruner` preset turns
    /// it on. A fair-pruner extension.
    pub exact_target: bool,
    /// How grouped convolutions are treated (held fixed by default). Under
    /// [`GroupedConvs::WithinGroups`] the scored layers include the grouped convolutions
    /// ([`scored_layers`]), scores are still given per output channel, and every layer's
    /// scores become unit scores through its group's map ([`crate::UnitMap::unit_scores`]:
    /// a block-mapped unit scores the mean of its channels over the groups); counts, unit
    /// MACs and uniform widths are in units.
    pub grouped: GroupedConvs,
}

/// The outcome of [`Selector::select`].
#[derive(Debug, Clone)]
pub struct Selection {
    /// The goal it was made for.
    pub goal: Goal,
    /// The method.
    pub method: Method,
    /// The α (ToD) or ratio (uniform) that produced it.
    pub setting: f64,
    /// What each scored layer asked to remove (its count, options applied), in layer order.
    pub counts: Vec<usize>,
    /// The plan resolved against the graph.
    pub resolution: Resolution,
    graph_digest: String,
    model_digest: Option<String>,
}

impl Selection {
    /// The resolved plan (every member of a coupled group lists the same units), carrying
    /// the digests of the model it was made for.
    pub fn plan(&self) -> Plan {
        Plan {
            graph_digest: Some(self.graph_digest.clone()),
            model_digest: self.model_digest.clone(),
            ..self.resolution.plan()
        }
    }

    /// Kept units per prunable layer after resolution, in graph order (as reports list
    /// layers): exactly the pruned model's widths.
    pub fn widths(&self) -> crate::Widths {
        self.resolution.widths()
    }

    /// The fractions of parameters and MACs removed.
    pub fn reduction(&self) -> (f64, f64) {
        let r = self.resolution.report();
        (
            1.0 - r.params.1 as f64 / r.params.0 as f64,
            1.0 - r.macs.1 as f64 / r.macs.0 as f64,
        )
    }
}

/// ToD curves and rankings of a scored model, with its groups: turns goals into resolved
/// plans. Scores are never recomputed; every goal is a re-scan.
#[derive(Debug, Clone)]
pub struct Selector {
    graph: Graph,
    groups: ChannelGroups,
    layers: Vec<String>,
    /// `None` for a selector made for uniform counts only (no ToD scores read).
    curves: Option<Vec<TodCurve>>,
    /// Unit scores by which units are removed (lowest first), per scored layer.
    ranking: Vec<Vec<f64>>,
    /// Units of each scored layer (its output channels through its group's map).
    units: Vec<usize>,
    unit_macs: Vec<u64>,
    weights: Vec<f64>,
    /// The curves before weighting (kept only when `mac_weight` > 0, to weigh them again
    /// by latency costs when a latency model is attached).
    unweighted: Option<Vec<TodCurve>>,
    /// Each scored layer's latency cost, when the weights were taken from a latency model.
    latency_costs: Option<Vec<f64>>,
    options: SelectOptions,
    model_digest: Option<String>,
    /// The latency model behind [`Goal::Latency`], if one is attached.
    latency: Option<Arc<dyn LatencyModel>>,
}

impl Selector {
    /// A selector over `layers` of `graph` (the scored layers, [`scored_layers`], in order:
    /// the graph's prunable layers unless grouped convolutions are pruned within groups): ToD
    /// curves from `remove_by` (low = remove) and `protect_by` (high = protect), units removed
    /// in order of `rank_by` (lowest first). One score vector per layer in each, one score per
    /// output channel (a unit, unless the layer's group maps units to several channels; the
    /// selector then takes each unit's mean). Under [`GroupRule::Summed`] the members of
    /// each coupled group get the group's normalised sums of all three first; with `options.mac_weight` > 0 the curves are
    /// weighted by [`Selector::weights`].
    pub fn new(
        graph: Graph,
        layers: Vec<String>,
        remove_by: &[&[f64]],
        protect_by: &[&[f64]],
        rank_by: &[&[f64]],
        options: SelectOptions,
    ) -> Result<Self, AnalysisError> {
        Self::build(
            graph,
            layers,
            Some([remove_by, protect_by]),
            rank_by,
            options,
        )
    }

    /// [`Selector::new`] with the ToD scores (`tod`: remove-by, protect-by) optional: without
    /// them the selector makes uniform counts only.
    fn build(
        graph: Graph,
        layers: Vec<String>,
        tod: Option<[&[&[f64]]; 2]>,
        rank_by: &[&[f64]],
        options: SelectOptions,
    ) -> Result<Self, AnalysisError> {
        let gamma = options.mac_weight;
        if !(gamma.is_finite() && gamma >= 0.0) {
            return Err(AnalysisError::InvalidOption {
                option: "mac_weight",
                detail: format!(
                    "the MAC weight γ must be a finite number ≥ 0 (0 = off, the paper), found {gamma}"
                ),
            });
        }
        let expected = scored_layers(&graph, options.grouped);
        if layers
            .iter()
            .map(String::as_str)
            .ne(expected.iter().copied())
        {
            return Err(AnalysisError::Unsupported {
                node: graph.name().to_owned(),
                detail: format!(
                    "the scored layers must be the model's {} in order ({}), found ({})",
                    match options.grouped {
                        GroupedConvs::Fixed => "prunable layers",
                        GroupedConvs::WithinGroups =>
                            "prunable layers and grouped convolutions (grouped convolutions pruned within groups)",
                    },
                    expected.join(", "),
                    layers.join(", ")
                ),
            });
        }
        let mut given = vec![("rank-by", rank_by)];
        if let Some([remove_by, protect_by]) = tod {
            given.extend([("remove-by", remove_by), ("protect-by", protect_by)]);
        }
        for &(what, v) in &given {
            if v.len() != layers.len() {
                return Err(AnalysisError::Unsupported {
                    node: graph.name().to_owned(),
                    detail: format!(
                        "{} {what} score vectors for {} layers",
                        v.len(),
                        layers.len()
                    ),
                });
            }
            for (l, scores) in layers.iter().zip(v) {
                let units = graph.units(l).unwrap_or(0);
                if scores.len() != units {
                    return Err(AnalysisError::Unsupported {
                        node: l.clone(),
                        detail: format!(
                            "{} {what} scores for {units} output channels",
                            scores.len()
                        ),
                    });
                }
            }
        }
        let protected: Vec<&str> = options.protected.iter().map(String::as_str).collect();
        let groups = analyze_with(&graph, &protected, options.grouped)?;
        // Each layer's group map: per-channel scores become unit scores through it.
        let maps: Vec<crate::UnitMap> = layers
            .iter()
            .map(|l| {
                groups
                    .group_of(l)
                    .map_or(crate::UnitMap::Identity, |g| groups.groups()[g].map)
            })
            .collect();
        let units: Vec<usize> = layers
            .iter()
            .zip(&maps)
            .map(|(l, m)| m.units(graph.units(l).unwrap_or(0)))
            .collect();
        let index = layer_index(&layers);
        // Scored members of each group with more than one.
        let coupled: Vec<Vec<usize>> = groups
            .groups()
            .iter()
            .map(|g| {
                g.layers
                    .iter()
                    .filter_map(|l| index.get(l.as_str()).copied())
                    .collect::<Vec<_>>()
            })
            .filter(|m| m.len() > 1)
            .collect();
        // Under the summed rule each coupled group's members get the group's normalised sums.
        let prepare = |v: &[&[f64]]| -> Vec<Vec<f64>> {
            let mut scores: Vec<Vec<f64>> =
                v.iter().zip(&maps).map(|(s, m)| m.unit_scores(s)).collect();
            if options.rule == GroupRule::Summed {
                for members in &coupled {
                    let sum = normalised_sum(members.iter().map(|&i| scores[i].as_slice()));
                    for &i in members {
                        scores[i].clone_from(&sum);
                    }
                }
            }
            scores
        };
        let ranking = prepare(rank_by);
        let mut curves = match tod {
            Some([remove_by, protect_by]) => {
                let (remove, protect) = (prepare(remove_by), prepare(protect_by));
                Some(
                    layers
                        .iter()
                        .zip(remove.iter().zip(&protect))
                        .map(|(l, (u, r))| TodCurve::new(l, u, r))
                        .collect::<Result<Vec<_>, _>>()?,
                )
            }
            None => None,
        };
        let unit_macs = unit_macs(&graph, &groups, &index)?;
        let members = group_members(&groups, &index);
        let costs: Vec<f64> = unit_macs
            .iter()
            .zip(&members)
            .zip(&units)
            .map(|((&c, &k), &n)| match options.mac_cost {
                MacCost::Unit => c as f64,
                MacCost::Shared => c as f64 / k as f64,
                MacCost::Fraction => c as f64 * n.max(1) as f64 / k as f64,
            })
            .collect();
        let weights = mac_weights(&costs, gamma);
        let unweighted = (gamma > 0.0).then(|| curves.clone()).flatten();
        if let Some(plain) = &unweighted {
            curves = Some(weighted_curves(plain, &weights, &layers, gamma)?);
        }
        Ok(Selector {
            graph,
            groups,
            layers,
            curves,
            ranking,
            units,
            unit_macs,
            weights,
            unweighted,
            latency_costs: None,
            options,
            model_digest: None,
            latency: None,
        })
    }

    /// A selector over a score file's layers: ToD from its `remove_by` and `protect_by`
    /// criteria (FAIR-Pruner: `u` and `r`), removal order by `rank_by` (usually the same as
    /// `remove_by`; e.g. `l1` for "ToD counts + L1 ranking"). `path` names the file in errors.
    /// It selects with either [`Method`]; [`Selector::from_scores_for`] reads only what one
    /// method needs.
    pub fn from_scores(
        file: &ScoreFile,
        path: &Path,
        remove_by: &str,
        protect_by: &str,
        rank_by: &str,
        options: SelectOptions,
    ) -> Result<Self, AnalysisError> {
        Self::from_scores_for(
            file,
            path,
            Method::Tod,
            remove_by,
            protect_by,
            rank_by,
            options,
        )
    }

    /// [`Selector::from_scores`] for one `method`: [`Method::Tod`] reads the `remove_by`,
    /// `protect_by` and `rank_by` scores; [`Method::Uniform`] reads only `rank_by` (uniform
    /// counts use no ToD curve, so the file need not hold the other two, which are ignored)
    /// and the selector then selects uniform counts only ([`Selector::curves`] is empty and
    /// [`Selector::select`] with [`Method::Tod`] is an error).
    pub fn from_scores_for<'a>(
        file: &'a ScoreFile,
        path: &Path,
        method: Method,
        remove_by: &str,
        protect_by: &str,
        rank_by: &str,
        options: SelectOptions,
    ) -> Result<Self, AnalysisError> {
        let tod = match method {
            Method::Tod => Some([
                file.require(remove_by, path)?,
                file.require(protect_by, path)?,
            ]),
            Method::Uniform => None,
        };
        let rank = file.require(rank_by, path)?;
        let graph = file.graph()?;
        // With grouped convolutions held fixed, the scores of grouped convolutions (which
        // files list since they are pruned within groups by default) are not used.
        let expected = scored_layers(&graph, options.grouped);
        let used: Vec<usize> = (0..file.layers.len())
            .filter(|&i| {
                options.grouped == GroupedConvs::WithinGroups
                    || expected.contains(&file.layers[i].layer.as_str())
            })
            .collect();
        let pick = |v: Vec<&'a [f64]>| -> Vec<&'a [f64]> { used.iter().map(|&i| v[i]).collect() };
        let layers = used.iter().map(|&i| file.layers[i].layer.clone()).collect();
        let tod = tod.map(|[u, r]| [pick(u), pick(r)]);
        let rank = pick(rank);
        let tod = tod.as_ref().map(|[u, r]| [u.as_slice(), r.as_slice()]);
        let mut s = Self::build(graph, layers, tod, &rank, options)?;
        s.model_digest = Some(file.provenance.model_digest.clone());
        Ok(s)
    }

    /// This selector with a latency model, which latency targets ([`Goal::Latency`]) are met
    /// on: the fraction of latency removed is 1 − total(widths) / full. With MAC-aware
    /// counts (`mac_weight` > 0) and [`WeighBy::Latency`] (the default), the weights are
    /// taken again from the latency each layer's units save
    /// ([`Selector::latency_costs`]) instead of their MACs. An error when the model has no
    /// figure for a prunable group (one of at least two units that is not protected or
    /// fixed).
    pub fn with_latency(mut self, model: Arc<dyn LatencyModel>) -> Result<Self, AnalysisError> {
        let full = model.full_seconds();
        if !(full.is_finite() && full > 0.0) {
            return Err(AnalysisError::LatencyTable(format!(
                "the unpruned model's latency must be a finite number > 0, found {full}"
            )));
        }
        let missing: Vec<String> = self
            .groups
            .groups()
            .iter()
            .filter(|g| g.is_prunable() && g.units >= 2)
            .filter(|g| model.cost(&g.layers[0], g.channels()).is_err())
            .map(|g| g.layers.join("+"))
            .collect();
        if !missing.is_empty() {
            return Err(AnalysisError::LatencyTable(format!(
                "no figures for the prunable group(s) {} of the model '{}'",
                missing.join(", "),
                self.graph.name()
            )));
        }
        if self.options.weigh_by == WeighBy::Latency
            && let Some(plain) = &self.unweighted
        {
            let costs = self.latency_costs_from(model.as_ref())?;
            let gamma = self.options.mac_weight;
            self.weights = mac_weights(&costs, gamma);
            self.curves = Some(weighted_curves(plain, &self.weights, &self.layers, gamma)?);
            self.latency_costs = Some(costs);
        }
        self.latency = Some(model);
        Ok(self)
    }

    /// Each scored layer's latency cost as [`SelectOptions::mac_cost`] measures costs, in
    /// seconds, when the weights were taken from a latency model ([`Selector::with_latency`]
    /// with `mac_weight` > 0 and [`WeighBy::Latency`]); `None` otherwise (MAC costs).
    ///
    /// Per unit, a layer's latency cost is the mean latency saved per unit over the upper
    /// half of its group's width: −cost(group at ⌊n/2⌋ channels) / (n − ⌊n/2⌋) channels,
    /// times the channels per unit ([`LatencyModel::cost`]: the whole model's change with
    /// that group alone narrowed, so every member of a group is charged the group's saving,
    /// as [`MacCost::Unit`] charges MACs). [`MacCost::Shared`] divides it among the group's
    /// k scored members and [`MacCost::Fraction`] multiplies that by the layer's units. A
    /// layer that cannot lose a unit (0 unit MACs) costs 0 (weight 1, as with MACs); a layer
    /// whose narrowing the model says saves nothing costs the least positive amount, so its
    /// weight is the smallest (1e-9) and it gives up units only at α = 1 or where its ToD
    /// is 0.
    pub fn latency_costs(&self) -> Option<&[f64]> {
        self.latency_costs.as_deref()
    }

    /// What the MAC weights' costs counted once a latency model is attached: `Latency` when
    /// they were taken from it ([`Selector::latency_costs`]), `Macs` when they stayed MAC
    /// costs ([`WeighBy::Macs`]); `None` without a latency model, without a MAC weight
    /// (γ = 0) or without ToD curves (a selector for uniform counts).
    pub fn weighed_by(&self) -> Option<WeighBy> {
        if self.latency.is_none() || self.unweighted.is_none() {
            return None;
        }
        Some(if self.latency_costs.is_some() {
            WeighBy::Latency
        } else {
            WeighBy::Macs
        })
    }

    /// [`Selector::latency_costs`] from `model`.
    fn latency_costs_from(&self, model: &dyn LatencyModel) -> Result<Vec<f64>, AnalysisError> {
        let index = layer_index(&self.layers);
        let members = group_members(&self.groups, &index);
        let mut costs = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            let g = match self.groups.group_of(l) {
                Some(g) if self.unit_macs[i] > 0 => &self.groups.groups()[g],
                _ => {
                    costs.push(0.0);
                    continue;
                }
            };
            let channels = g.channels();
            let half = channels / 2;
            // Through the group's first layer, as `with_latency` checks the model has it: a
            // table may name a coupled group by one of its members.
            let saved = (-model.cost(&g.layers[0], half)?).max(0.0);
            let per_channel = saved / (channels - half) as f64;
            let per_unit = per_channel * (channels as f64 / g.units.max(1) as f64);
            let cost = match self.options.mac_cost {
                MacCost::Unit => per_unit,
                MacCost::Shared => per_unit / members[i] as f64,
                MacCost::Fraction => per_unit * self.units[i].max(1) as f64 / members[i] as f64,
            };
            costs.push(if cost > 0.0 { cost } else { f64::MIN_POSITIVE });
        }
        Ok(costs)
    }

    /// The attached latency model ([`Selector::with_latency`]).
    pub fn latency(&self) -> Option<&Arc<dyn LatencyModel>> {
        self.latency.as_ref()
    }

    /// The latency (seconds) the attached latency model predicts for `selection`'s widths;
    /// `None` without a latency model.
    pub fn predicted_latency(&self, selection: &Selection) -> Option<Result<f64, AnalysisError>> {
        self.latency.as_ref().map(|m| m.total(&selection.widths()))
    }

    /// The scored graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The scored layers, in graph order.
    pub fn layers(&self) -> &[String] {
        &self.layers
    }

    /// One ToD curve per scored layer: the curves the counts come from. Under
    /// [`GroupRule::Summed`] they are built from the group's summed scores (identical for
    /// the members of a group); with `mac_weight` > 0 they are
    /// [weighted](TodCurve::weighted) by [`Selector::weights`] (values ToD(m)/w_l). Empty
    /// for a selector made for uniform counts only ([`Selector::from_scores_for`]).
    pub fn curves(&self) -> &[TodCurve] {
        self.curves.as_deref().unwrap_or_default()
    }

    /// The units of each scored layer: its output channels divided by the channels per unit
    /// of its group's map (fewer than its channels only for a group around a grouped
    /// convolution pruned within its groups). Counts are in these units.
    pub fn units(&self) -> &[usize] {
        &self.units
    }

    /// The MACs per sample saved by removing one unit of each scored layer together with
    /// everything coupled to it: c = MACs(graph) − MACs(graph with every member of the
    /// layer's group narrowed by one unit). It counts the layer's own MACs per unit, its
    /// readers' MACs per input channel (or per H·W features after a flatten), and the same
    /// for every coupled member; members of one group share one value. 0 for a layer that
    /// cannot lose a unit (a fixed group, or a single unit), whose weight is then 1.
    pub fn unit_macs(&self) -> &[u64] {
        &self.unit_macs
    }

    /// The MAC weight of each scored layer, w_l = (c_l / c_max)^γ (at least 1e-9) with c_l its
    /// cost as the options' `mac_cost` measures it from [`Selector::unit_macs`] (per unit,
    /// shared in a group, or per fraction of the layer: [`MacCost`]), c_max the largest c_l
    /// and γ the options' `mac_weight`: all 1 when γ = 0 (the paper), and 1 for layers with
    /// c_l = 0.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The options.
    pub fn options(&self) -> &SelectOptions {
        &self.options
    }

    /// The plan each layer's own count asks for, before coupled groups settle: every layer of
    /// a prunable group proposes its `count` lowest-ranked units (under the summed rule the
    /// members share one ranking and one count, so they agree). Under the strict rule the
    /// members are made to agree: the group removes the smallest of its members' counts, of
    /// the units with the lowest summed ranking (each member's scores divided by their mean,
    /// so layers of different scale weigh alike).
    pub fn requests(&self, counts: &[usize]) -> Plan {
        let index = layer_index(&self.layers);
        let mut plan = Plan::new();
        for g in self.groups.groups().iter().filter(|g| g.is_prunable()) {
            let members: Vec<usize> = g
                .layers
                .iter()
                .filter_map(|l| index.get(l.as_str()).copied())
                .collect();
            if members.is_empty() {
                continue;
            }
            if self.options.rule == GroupRule::Strict && members.len() > 1 {
                let k = members.iter().map(|&i| counts[i]).min().unwrap_or(0);
                if k == 0 {
                    continue;
                }
                let summed = normalised_sum(members.iter().map(|&i| self.ranking[i].as_slice()));
                let removal = lowest(&summed, k);
                for &i in &members {
                    plan.remove.insert(self.layers[i].clone(), removal.clone());
                }
            } else {
                for &i in &members {
                    if counts[i] > 0 {
                        plan.remove
                            .insert(self.layers[i].clone(), lowest(&self.ranking[i], counts[i]));
                    }
                }
            }
        }
        plan
    }

    /// Resolves per-layer counts into a [`Resolution`] (requests, then the group rule).
    pub fn resolve(&self, counts: &[usize]) -> Result<Resolution, AnalysisError> {
        Resolution::with_groups(
            &self.graph,
            self.groups.clone(),
            &self.requests(counts),
            self.options.rule,
        )
    }

    /// The kept-unit step of `group` under a latency target: its fast step in channels
    /// ([`LatencyModel::step`]) turned into units ([`step_in_units`]), combined with the
    /// options' `round_to` (their least common multiple); 1 without a latency model, for a
    /// group that cannot be pruned, and for a group whose fast step is 1 (its counts are
    /// then left as `round_to` made them, the group rule's result unsnapped, as without
    /// steps).
    fn latency_step(&self, group: &crate::Group) -> usize {
        let Some(model) = &self.latency else {
            return 1;
        };
        if !group.is_prunable() || group.units < 2 {
            return 1;
        }
        let step = model.step(&group.layers[0]);
        if step <= 1 {
            return 1;
        }
        let units = step_in_units(step, group.map.channels_per_unit());
        crate::groups::lcm(units, self.options.counting.round_to.max(1))
    }

    /// `counts` snapped to each group's fast step ([`Selector::select`]): the kept units of
    /// each scored layer rounded up to a multiple of [`Selector::latency_step`], at most all
    /// of them (the full width is always allowed).
    fn snap_counts(&self, counts: &[usize]) -> Vec<usize> {
        counts
            .iter()
            .enumerate()
            .map(|(i, &count)| {
                let units = self.units[i];
                let step = self
                    .groups
                    .group_of(&self.layers[i])
                    .map_or(1, |g| self.latency_step(&self.groups.groups()[g]));
                let kept = units.saturating_sub(count);
                if step <= 1 || kept >= units {
                    return count;
                }
                units - fair_threshold::round_up(kept, step, units)
            })
            .collect()
    }

    /// `resolution` with every prunable group's kept units a multiple of its
    /// [`Selector::latency_step`] (or all of them): snapped counts already give that under
    /// the package, strict and summed rules, but the intersection of the members' requests
    /// can leave any number. A group off its step gets back the removed units ranked
    /// highest (its scored members' rankings summed, each divided by its mean: the
    /// [`normalised_sum`] the strict rule ranks a group by; ties to the lower index), and
    /// the plan is resolved again.
    fn snap_resolution(&self, resolution: Resolution) -> Result<Resolution, AnalysisError> {
        let index = layer_index(&self.layers);
        let mut plan = resolution.plan();
        let mut changed = false;
        for g in self.groups.groups() {
            let step = self.latency_step(g);
            if step <= 1 {
                continue;
            }
            let Some(kept) = resolution.kept_units(&g.layers[0]) else {
                continue;
            };
            let want = fair_threshold::round_up(kept.len(), step, g.units);
            if want == kept.len() {
                continue;
            }
            let members: Vec<usize> = g
                .layers
                .iter()
                .filter_map(|l| index.get(l.as_str()).copied())
                .collect();
            let summed = normalised_sum(members.iter().map(|&i| self.ranking[i].as_slice()));
            let rank = |u: usize| summed.get(u).copied().unwrap_or(0.0);
            let mut removed: Vec<usize> = (0..g.units).filter(|u| !kept.contains(u)).collect();
            // Highest ranked first, ties to the lower index; the first ones come back.
            removed.sort_by(|&a, &b| rank(b).total_cmp(&rank(a)).then(a.cmp(&b)));
            let mut still: Vec<usize> = removed.split_off(want - kept.len());
            still.sort_unstable();
            for l in &g.layers {
                if still.is_empty() {
                    plan.remove.remove(l);
                } else {
                    plan.remove.insert(l.clone(), still.clone());
                }
            }
            changed = true;
        }
        if !changed {
            return Ok(resolution);
        }
        Resolution::with_groups(&self.graph, self.groups.clone(), &plan, self.options.rule)
    }

    /// The counts and resolution a latency target takes from `counts`: snapped to the fast
    /// steps ([`Selector::snap_counts`], [`Selector::snap_resolution`]).
    fn snapped(&self, counts: &[usize]) -> Result<(Vec<usize>, Resolution), AnalysisError> {
        let counts = self.snap_counts(counts);
        let resolution = self.snap_resolution(self.resolve(&counts)?)?;
        Ok((counts, resolution))
    }

    /// The fraction of MACs, parameters or latency (as `goal` measures) removed by
    /// `counts`, after resolution (and, for latency, snapped to the fast steps).
    fn reduction(&self, counts: &[usize], goal: Goal) -> Result<f64, String> {
        if let Goal::Latency(_) = goal {
            let (_, r) = self.snapped(counts).map_err(|e| e.to_string())?;
            let model = self.latency.as_ref().ok_or("no latency model")?;
            let total = model.total(&r.widths()).map_err(|e| e.to_string())?;
            return Ok(1.0 - total / model.full_seconds());
        }
        let r = self.resolve(counts).map_err(|e| e.to_string())?;
        let after = r.pruned_graph();
        Ok(if let Goal::Macs(_) = goal {
            1.0 - after.macs() as f64 / self.graph.macs() as f64
        } else {
            1.0 - after.param_count() as f64 / self.graph.param_count() as f64
        })
    }

    /// Counts, plan and resolution for `goal`. With [`Method::Tod`], an α gives each layer
    /// its ToD count; a target searches the smallest α whose *resolved* model (after the
    /// group rule) removes at least the target. With [`Method::Uniform`], a target searches
    /// the smallest common ratio. A latency target ([`Goal::Latency`]) is met on the
    /// attached latency model ([`Selector::with_latency`]) the same way, its fraction of
    /// latency removed in place of the fraction of MACs; one it cannot reach is
    /// [`AnalysisError::LatencyUnreachable`], which states the reachable range.
    ///
    /// Under a latency target every group keeps a multiple of its fast step
    /// ([`LatencyModel::step`]: the widths the runtime runs fastest) or all its units: each
    /// layer's kept units are rounded *up* to the step, after `round_to` (so with both the
    /// kept units are a multiple of their least common multiple), and a group the group
    /// rule still leaves off its step (the intersection rule can) gets back its highest
    /// ranked removed units up to the next multiple. The search runs on the snapped counts,
    /// so the target is met on the table by what is returned, by a larger α where rounding
    /// up kept units that the α asked to remove. The result's widths are exactly what
    /// surgery produces.
    pub fn select(&self, goal: Goal, method: Method) -> Result<Selection, AnalysisError> {
        goal.check()?;
        if let Goal::Latency(target) = goal {
            let Some(model) = &self.latency else {
                return Err(AnalysisError::InvalidOption {
                    option: "target_latency",
                    detail: "a latency target needs a latency model (a measured or given latency table: Selector::with_latency)".into(),
                });
            };
            return self.select_inner(goal, method).map_err(|e| match e {
                AnalysisError::Threshold(fair_threshold::ThresholdError::Unreachable {
                    best,
                    ..
                }) => AnalysisError::LatencyUnreachable {
                    target,
                    best: best.max(0.0),
                    full_seconds: model.full_seconds(),
                },
                e => e,
            });
        }
        self.select_inner(goal, method)
    }

    /// [`Selector::select`] without the latency goal's checks and error.
    fn select_inner(&self, goal: Goal, method: Method) -> Result<Selection, AnalysisError> {
        let counting = self.options.counting;
        let curves = || {
            self.curves.as_deref().ok_or_else(|| AnalysisError::InvalidOption {
                option: "method",
                detail: "this selector was made for uniform counts from the ranking scores alone; ToD counts need the remove-by and protect-by scores too (Selector::from_scores)".into(),
            })
        };
        let (setting, counts) = match (method, goal) {
            (Method::Tod, Goal::Alpha(a)) => (a, counts_at(curves()?, a, counting)?),
            (Method::Tod, Goal::Macs(t) | Goal::Params(t) | Goal::Latency(t)) => {
                let reduction = |c: &[usize]| self.reduction(c, goal);
                let r = if self.options.exact_target {
                    fair_threshold::alpha_for_target_exact(curves()?, counting, t, reduction)?
                } else {
                    fair_threshold::alpha_for_target(curves()?, counting, t, reduction)?
                };
                (r.setting, r.counts)
            }
            (Method::Uniform, Goal::Alpha(_)) => {
                return Err(AnalysisError::Goal(
                    "uniform pruning has no α: give a MACs or parameters target".into(),
                ));
            }
            (Method::Uniform, Goal::Macs(t) | Goal::Params(t) | Goal::Latency(t)) => {
                let r = fair_threshold::uniform_for_target(&self.units, counting, t, |c| {
                    self.reduction(c, goal)
                })?;
                (r.setting, r.counts)
            }
        };
        let (counts, resolution) = if let Goal::Latency(_) = goal {
            self.snapped(&counts)?
        } else {
            let resolution = self.resolve(&counts)?;
            (counts, resolution)
        };
        Ok(Selection {
            goal,
            method,
            setting,
            counts,
            resolution,
            graph_digest: graph_digest(&self.graph),
            model_digest: self.model_digest.clone(),
        })
    }
}

/// A fast step of `step` channels in units of `per` channels: the fewest units whose
/// channels are a multiple of `step` (`step / gcd(step, per)`; a unit of 3 channels and a
/// step of 8 give 8 units, 24 channels).
fn step_in_units(step: usize, per: usize) -> usize {
    let (step, per) = (step.max(1), per.max(1));
    step / crate::groups::gcd(step, per)
}

/// The sum over `members` of each member's scores divided by the absolute value of its mean
/// score (1 if that is 0), unit by unit: how the strict rule ranks a coupled group's units
/// ([`Selector::requests`]) and how a group is snapped back onto its fast step. All members
/// have the same number of units.
fn normalised_sum<'a>(members: impl Iterator<Item = &'a [f64]>) -> Vec<f64> {
    let mut sum: Vec<f64> = Vec::new();
    for scores in members {
        if sum.is_empty() {
            sum = vec![0.0; scores.len()];
        }
        let mean = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
        let scale = if mean.abs() > 0.0 { mean.abs() } else { 1.0 };
        for (s, v) in sum.iter_mut().zip(scores) {
            *s += v / scale;
        }
    }
    sum
}

/// MACs saved by removing one unit from every member of each scored layer's group (0 where
/// the group is fixed or has a single unit), per scored layer.
fn unit_macs(
    graph: &Graph,
    groups: &ChannelGroups,
    index: &HashMap<&str, usize>,
) -> Result<Vec<u64>, AnalysisError> {
    let mut costs = vec![0; index.len()];
    let total = graph.macs();
    for g in groups.groups() {
        if !g.is_prunable() || g.units < 2 {
            continue;
        }
        let narrowed: HashMap<String, usize> = g
            .layers
            .iter()
            .map(|l| (l.clone(), (g.units - 1) * g.map.channels_per_unit()))
            .collect();
        let c = total.saturating_sub(graph.with_units(&narrowed)?.macs());
        for l in &g.layers {
            if let Some(&i) = index.get(l.as_str()) {
                costs[i] = c;
            }
        }
    }
    Ok(costs)
}

/// The smallest MAC weight: a layer whose units are this much cheaper than the costliest
/// ones only loses units whose ToD is 0.
const MIN_WEIGHT: f64 = 1e-9;

/// Each scored layer's position in `layers`, by name.
fn layer_index(layers: &[String]) -> HashMap<&str, usize> {
    layers
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect()
}

/// The number of scored members of each scored layer's channel group (1 for a lone layer).
fn group_members(groups: &ChannelGroups, index: &HashMap<&str, usize>) -> Vec<usize> {
    let mut members = vec![1; index.len()];
    for g in groups.groups() {
        let scored: Vec<usize> = g
            .layers
            .iter()
            .filter_map(|l| index.get(l.as_str()).copied())
            .collect();
        for &i in &scored {
            members[i] = scored.len().max(1);
        }
    }
    members
}

/// `plain` weighted by `weights` (γ names the MAC weight in errors).
fn weighted_curves(
    plain: &[TodCurve],
    weights: &[f64],
    layers: &[String],
    gamma: f64,
) -> Result<Vec<TodCurve>, AnalysisError> {
    plain
        .iter()
        .zip(weights)
        .zip(layers)
        .map(|((curve, &w), l)| {
            if !(w.is_finite() && w > 0.0) {
                return Err(AnalysisError::InvalidOption {
                    option: "mac_weight",
                    detail: format!(
                        "γ = {gamma} is too large: layer '{l}' would get the MAC weight {w} (it must be finite and > 0)"
                    ),
                });
            }
            Ok(curve.weighted(w)?)
        })
        .collect()
}

/// w_l = (c_l / c_max)^γ ∈ (0, 1], c_max the largest cost; 1 where c_l = 0 or γ = 0.
fn mac_weights(costs: &[f64], gamma: f64) -> Vec<f64> {
    let max_log = costs
        .iter()
        .filter(|&&c| c > 0.0)
        .map(|&c| c.ln())
        .fold(f64::NEG_INFINITY, f64::max);
    if gamma == 0.0 || max_log == f64::NEG_INFINITY {
        return vec![1.0; costs.len()];
    }
    costs
        .iter()
        .map(|&c| {
            if c == 0.0 {
                1.0
            } else {
                (gamma * (c.ln() - max_log)).exp().max(MIN_WEIGHT)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_step_in_channels_becomes_the_fewest_units_that_fill_it() {
        // Units of 3 channels, step 8: 8 units (24 channels, the first multiple of both).
        assert_eq!(step_in_units(8, 3), 8);
        // Units of 2 or 4 channels: 4 or 2 units (8 channels).
        assert_eq!(step_in_units(8, 2), 4);
        assert_eq!(step_in_units(8, 4), 2);
        // A unit as wide as the step or wider, a multiple of it: every unit count.
        assert_eq!(step_in_units(8, 8), 1);
        assert_eq!(step_in_units(8, 16), 1);
        // Units of 6 channels, step 16: 8 units (48 channels).
        assert_eq!(step_in_units(16, 6), 8);
        assert_eq!(step_in_units(1, 3), 1);
    }

    #[test]
    fn the_normalised_sum_divides_each_member_by_the_size_of_its_mean() {
        // Means 2 and −4: divided by 2 and by 4.
        let a = [1.0, 3.0];
        let b = [-2.0, -6.0];
        let sum = normalised_sum([&a[..], &b[..]].into_iter());
        assert_eq!(sum, vec![0.5 - 0.5, 1.5 - 1.5]);
        // A member whose mean is 0 is taken as it is.
        let z = [1.0, -1.0];
        assert_eq!(normalised_sum([&z[..]].into_iter()), vec![1.0, -1.0]);
    }
}
