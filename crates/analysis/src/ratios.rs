//! The typed per-layer counts and widths that `fair-pruner ratios --json` prints. Its JSON
//! Schema is generated from these types (`docs/ratios-schema.json`, checked by a test) and
//! versioned by [`RATIOS_SCHEMA_VERSION`].

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::plan::GroupRule;
use crate::select::{Goal, MacCost, Method, Selection, Selector};

/// The version of [`RatiosReport`]'s schema. Version 1 has the fields `ratios --json`
/// printed before it was typed, and `schema_version`. Any change that removes or renames a
/// field, or changes its meaning, bumps it.
pub const RATIOS_SCHEMA_VERSION: u32 = 2;

/// A [`Selection`] as `fair-pruner ratios --json` prints it: the setting that produced it,
/// what each scored layer asked to remove and keeps after coupled groups settled, and the
/// parameters and MACs before and after.
///
/// Exactly one of `alpha` (ToD counts) and `ratio` (uniform counts) is present. `mac_weight`,
/// `mac_cost` and each layer's `unit_macs` and `weight` are present only when the MAC weight
/// γ is above 0; `exact_target` only when a size target was blended to exactly (then `true`).
/// Made by [`RatiosReport::new`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RatiosReport {
    /// [`RATIOS_SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// The tolerance α that produced the counts (ToD counts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// The fraction of every layer asked to be removed (uniform counts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// The name of the preset the counts started from (`fair-pruner`, `paper`).
    pub preset: String,
    /// How coupled layers settled on one set of units.
    pub rule: GroupRule,
    /// One entry per scored layer, in graph order.
    pub layers: Vec<RatiosLayer>,
    /// Parameters of the whole model before and after.
    pub params: BeforeAfter,
    /// MACs per sample of the whole model before and after.
    pub macs: BeforeAfter,
    /// Milliseconds the selection took (from loading the scores to the resolved plan, as the
    /// caller measured it).
    pub milliseconds: f64,
    /// The MAC weight γ (only when above 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_weight: Option<f64>,
    /// What the MAC weight's cost measures (only when γ is above 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_cost: Option<MacCost>,
    /// What the weights' costs counted under a latency target with γ above 0 (ToD counts):
    /// `latency` (the table's savings) or `macs` ([`Selector::weighed_by`]); absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weigh_by: Option<crate::WeighBy>,
    /// `true` when the counts were blended down to a size target exactly; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact_target: Option<bool>,
    /// A latency target's table and its prediction (only for a latency target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<RatiosLatency>,
    /// The criteria the counts read, when the writer records them (schema 2 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signals: Option<RatiosSignals>,
    /// What the writer chose on the user's behalf, one sentence each (e.g. counting by the
    /// one criterion a score file holds); absent when nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The criteria a [`RatiosReport`]'s counts read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RatiosSignals {
    /// ToD's removal signal (unused by uniform counts).
    pub remove_by: String,
    /// ToD's protection signal (unused by uniform counts).
    pub protect_by: String,
    /// The criterion that orders the units each layer removes.
    pub rank_by: String,
}

/// The latency table a latency target was met on, and what it predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RatiosLatency {
    /// The runtime the table was measured on.
    pub runtime: String,
    /// Its batch size.
    pub batch: usize,
    /// Its threads.
    pub threads: usize,
    /// Where it came from: `measured`, `cached` or `given`.
    pub table: String,
    /// The unpruned model's latency on the table, milliseconds.
    pub before_ms: f64,
    /// The pruned model's latency the table predicts, milliseconds.
    pub after_ms: f64,
    /// The fraction of latency removed, as the table predicts it.
    pub removed: f64,
    /// Whether the table's measurement was too noisy to trust.
    pub noisy: bool,
}

/// One scored layer of a [`RatiosReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RatiosLayer {
    /// The layer's name.
    pub layer: String,
    /// Its units (output channels or features) before pruning.
    pub units: usize,
    /// How many units its own count asked to remove, before coupled groups settled.
    pub requested: usize,
    /// How many units it loses after coupled groups settled.
    pub remove: usize,
    /// How many units it keeps: the pruned model's width.
    pub keep: usize,
    /// The MACs per sample one unit saves with everything coupled to it
    /// ([`Selector::unit_macs`]; only when γ is above 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_macs: Option<u64>,
    /// The layer's MAC weight ([`Selector::weights`]; only when γ is above 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

/// A count before and after pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BeforeAfter {
    /// Before pruning.
    pub before: u64,
    /// After pruning.
    pub after: u64,
}

impl RatiosReport {
    /// The report of `selection`, made by `selector`, with counts that started from the
    /// preset called `preset` and took `elapsed` to compute.
    ///
    /// ```
    /// use fair_analysis::{Goal, GroupRule, Method, RatiosReport, SelectOptions, Selector};
    /// use std::time::Duration;
    ///
    /// let graph = fair_zoo::build("vgg11_bn_cifar", &[3, 32, 32], 10)?;
    /// let layers: Vec<String> = graph.prunable_layers().iter().map(|l| l.to_string()).collect();
    /// let u: Vec<Vec<f64>> = layers
    ///     .iter()
    ///     .map(|l| (0..graph.units(l).unwrap()).map(|i| i as f64).collect())
    ///     .collect();
    /// let u: Vec<&[f64]> = u.iter().map(Vec::as_slice).collect();
    /// let options = SelectOptions { rule: GroupRule::Intersection, ..Default::default() };
    /// let selector = Selector::new(graph, layers, &u, &u, &u, options)?;
    /// let selection = selector.select(Goal::Macs(0.5), Method::Uniform)?;
    /// let report = RatiosReport::new(&selector, &selection, "fair-pruner", Duration::ZERO);
    /// assert_eq!(report.ratio, Some(selection.setting));
    /// assert!(report.alpha.is_none());
    /// assert!(report.macs.after <= report.macs.before / 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(
        selector: &Selector,
        selection: &Selection,
        preset: &str,
        elapsed: Duration,
    ) -> Self {
        let options = selector.options();
        let weighted = options.mac_weight > 0.0;
        let exact = options.exact_target && !matches!(selection.goal, Goal::Alpha(_));
        let graph = selector.graph();
        let widths = selection.widths();
        let layers = selector
            .layers()
            .iter()
            .zip(&selection.counts)
            .zip(selector.unit_macs().iter().zip(selector.weights()))
            .map(|((l, &requested), (&c, &w))| {
                let units = graph.units(l).unwrap_or(0);
                let keep = widths[l];
                RatiosLayer {
                    layer: l.clone(),
                    units,
                    requested,
                    remove: units - keep,
                    keep,
                    unit_macs: weighted.then_some(c),
                    weight: weighted.then_some(w),
                }
            })
            .collect();
        let size = selection.resolution.report();
        let (alpha, ratio) = match selection.method {
            Method::Tod => (Some(selection.setting), None),
            Method::Uniform => (None, Some(selection.setting)),
        };
        RatiosReport {
            schema_version: RATIOS_SCHEMA_VERSION,
            alpha,
            ratio,
            preset: preset.to_owned(),
            rule: options.rule,
            layers,
            params: BeforeAfter {
                before: size.params.0 as u64,
                after: size.params.1 as u64,
            },
            macs: BeforeAfter {
                before: size.macs.0,
                after: size.macs.1,
            },
            milliseconds: elapsed.as_secs_f64() * 1e3,
            mac_weight: weighted.then_some(options.mac_weight),
            mac_cost: weighted.then_some(options.mac_cost),
            weigh_by: selector
                .weighed_by()
                .filter(|_| selection.method == Method::Tod),
            exact_target: exact.then_some(true),
            latency: None,
            signals: None,
            notes: Vec::new(),
        }
    }
}

/// The JSON Schema of [`RatiosReport`], pretty-printed (what `docs/ratios-schema.json`
/// holds).
pub fn ratios_schema() -> String {
    let schema = schemars::schema_for!(RatiosReport);
    serde_json::to_string_pretty(&schema).expect("schemas serialise") + "\n"
}
