//! The pure-Rust half of pruning: from a graph and stored scores to a resolved plan, with no
//! libtorch.
//!
//! - [`analyze`] derives channel dependency groups from each op's channel rule (residual adds
//!   couple, concatenations place channels at offsets, flatten expands channels to features,
//!   and a [`UnitMap`] says which channels of a space each unit stands for: one channel, or
//!   channel *j* of every group of a grouped convolution).
//! - [`Plan`] says which units to remove; [`Resolution`] settles coupled layers by a
//!   [`GroupRule`] — the one alignment implementation behind targets, `ratios`, `apply` and
//!   `prune` — and gives the narrowed graph and the indices every tensor is sliced with.
//! - [`ScoreFile`] stores per-unit scores with provenance (versioned JSON).
//! - [`Selector`] turns stored scores into a resolved plan at an α or a MACs/parameters
//!   target (ToD or uniform counts), never recomputing a score.
//! - [`LatencyModel`] predicts the latency of a width assignment; [`LatencyTable`] is one
//!   measured per group on a runtime (JSON, so a table measured on any device can be
//!   loaded), behind the latency target [`Goal::Latency`].
//! - [`RatiosReport`] is a selection's per-layer counts and widths as `fair-pruner ratios
//!   --json` prints them (typed, read back with serde; its JSON Schema, [`ratios_schema`], is
//!   `docs/ratios-schema.json`, versioned by [`RATIOS_SCHEMA_VERSION`]).
//!
//! ```
//! use fair_analysis::{Goal, Method, SelectOptions, Selector, GroupRule};
//! let graph = fair_zoo::build("resnet20", &[3, 32, 32], 10)?;
//! let layers: Vec<String> = graph.prunable_layers().iter().map(|l| l.to_string()).collect();
//! // Made-up scores: U rises with the unit index, R falls (no conflict until late).
//! let u: Vec<Vec<f64>> = layers.iter().map(|l| {
//!     (0..graph.units(l).unwrap()).map(|i| i as f64).collect()
//! }).collect();
//! let r: Vec<Vec<f64>> = u.iter().map(|v| v.iter().map(|x| -x).collect()).collect();
//! fn refs(v: &[Vec<f64>]) -> Vec<&[f64]> { v.iter().map(Vec::as_slice).collect() }
//! let options = SelectOptions { rule: GroupRule::Intersection, ..Default::default() };
//! let selector = Selector::new(graph.clone(), layers, &refs(&u), &refs(&r), &refs(&u), options)?;
//! let selection = selector.select(Goal::Macs(0.5), Method::Tod)?;
//! let (_, macs_removed) = selection.reduction();
//! assert!(macs_removed >= 0.5);
//! // The widths are exactly the pruned graph's.
//! let pruned = selection.resolution.pruned_graph();
//! for (layer, width) in selection.widths() {
//!     assert_eq!(pruned.units(&layer), Some(width));
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod groups;
mod latency;
mod plan;
mod ratios;
mod resolution;
mod scores;
mod select;
mod strict;
mod unit_map;

pub use error::AnalysisError;
pub use groups::{
    ChannelGroups, Group, GroupedConvs, UnitSlices, analyze, analyze_with, scored_layers,
};
pub use latency::{
    LATENCY_TABLE_FORMAT, LATENCY_TABLE_FORMAT_V1, LatencyGroup, LatencyKey, LatencyModel,
    LatencyPoint, LatencyTable, STEPS, fast_step, step_probes,
};
pub use plan::{GroupRule, Plan};
pub use ratios::{
    BeforeAfter, RATIOS_SCHEMA_VERSION, RatiosLatency, RatiosLayer, RatiosReport, RatiosSignals,
    ratios_schema,
};
pub use resolution::{LayerSize, NodeSlice, Resolution, ResolveOptions, SizeReport, Widths};
pub use scores::{
    CriterionRecord, LayerScores, Provenance, SCORE_FILE_FORMAT, ScoreFile, ScoreReport,
    graph_digest,
};
pub use select::{Goal, MacCost, Method, SelectOptions, Selection, Selector, WeighBy};
pub use unit_map::UnitMap;

/// The largest JSON file (plan or score file) read: 1 GiB (a larger one, or one that is not a
/// regular file, is refused before reading).
const MAX_TEXT_FILE: u64 = 1 << 30;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
