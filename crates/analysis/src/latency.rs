//! Latency models: what narrowing a prunable group costs (or saves) in measured latency, so
//! that a selection can aim at a latency target ([`crate::Goal::Latency`]) instead of a MAC
//! count.
//!
//! [`LatencyModel`] is the interface a selection uses; [`LatencyTable`] is the measured
//! implementation: per prunable group, the latency of the whole model with only that group
//! narrowed to each of a few widths (the others at full width), interpolated linearly
//! between the measured widths. The prediction for a width assignment is a product: the
//! full model's latency times, for each group, the fraction of it left with that group
//! narrowed alone ([`LatencyGroup::fraction`]). A sum of each group's change would count
//! twice what narrowing a layer and its reader together saves (each alone removes the
//! reader's share for its own channels; together they remove less than both), and it runs
//! past the whole latency (predicts a negative time) on deep cuts, so a target beyond it
//! could not be asked for; the product never reaches zero, and on measured candidates it
//! was the closer of the two (docs/results.md, "A product, not a sum"). A table is JSON, so one measured on another
//! device (a phone, an accelerator) can be loaded from a file; it is keyed by the model
//! digest, the runtime, the threads and the batch it was measured with ([`LatencyKey`]).
//!
//! A group may also have a *fast step* ([`LatencyGroup::fast_step`]): runtimes often run
//! widths that are multiples of 8 or 16 much faster than the widths between (their kernels
//! are vectorised by 8 or 16 channels). A measured table finds it from a few widths just
//! below a multiple of 16 ([`LatencyGroup::probes`], [`fast_step`]); a latency target then
//! keeps each group's width at a multiple of its step ([`Selector::select`]), and the
//! table prices a width off the step no lower than the next multiple above (its figure
//! there: a lower bound, since such a width can run slower still).
//!
//! [`Selector::select`]: crate::Selector::select

use std::fmt;
use std::path::Path;

use fair_ir::Graph;
use serde::{Deserialize, Serialize};

use crate::error::AnalysisError;
use crate::resolution::Widths;

/// The `format` a [`LatencyTable`] file is written with. Version 2 added a group's `step`
/// and `probes` (a fair-pruner that reads only version 1 refuses those fields).
pub const LATENCY_TABLE_FORMAT: &str = "fair-pruner-latency-table/2";

/// The older `format` a [`LatencyTable`] file may have: still read (a table of this format
/// normally has no `step` or `probes`; those of a fair-pruner that wrote them under version
/// 1 are read too).
pub const LATENCY_TABLE_FORMAT_V1: &str = "fair-pruner-latency-table/1";

/// A latency model: the latency of the model and how narrowing each prunable group changes
/// it. Widths are output channels of a layer (as [`Widths`] lists them); every member of a
/// coupled group has the group's width.
pub trait LatencyModel: fmt::Debug + Send + Sync {
    /// The latency of the unpruned model, in seconds (> 0).
    fn full_seconds(&self) -> f64;

    /// The latency change, in seconds, of narrowing the group that `layer` belongs to from
    /// its full width to `width`, every other group at full width (negative: faster; 0 at
    /// the full width). An error when the model has no figure for the layer.
    fn cost(&self, layer: &str, width: usize) -> Result<f64, AnalysisError>;

    /// The predicted latency, in seconds, of the model at `widths` (layers not listed stay
    /// at full width).
    fn total(&self, widths: &Widths) -> Result<f64, AnalysisError>;

    /// The fast step, in output channels, of the group that `layer` belongs to: widths that
    /// are multiples of it run faster than the widths between, so a latency target keeps
    /// the group's width at a multiple of it (or at the full width). 1 (any width) by
    /// default and for a layer the model has no figure for.
    fn step(&self, layer: &str) -> usize {
        let _ = layer;
        1
    }
}

/// What a [`LatencyTable`] was measured for: a table is only valid for the same model,
/// runtime, threads and batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyKey {
    /// The model's digest as score files record it (`fair_scoring::model_digest`: its
    /// graph and every tensor); a user's table may leave it empty to skip the comparison.
    pub model_digest: String,
    /// The runtime it was measured on (`libtorch-cpu`, or any name for a user's device).
    pub runtime: String,
    /// The version of the runtime's library where it is not linked into fair-pruner (the
    /// `onnxruntime` version for `onnxruntime-cpu`, the `torch` version for `pytorch-cpu`),
    /// or the GPU's name for `cuda`; empty when not recorded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub runtime_version: String,
    /// Intra-op threads.
    pub threads: usize,
    /// Batch size of each timed forward pass.
    pub batch: usize,
}

/// One measured width of a group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyPoint {
    /// Kept output channels of every member of the group.
    pub width: usize,
    /// The latency of the whole model with the group at this width (others full), seconds
    /// (median).
    pub seconds: f64,
}

/// A prunable group's measured latencies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyGroup {
    /// The group's prunable layers (coupled: they keep the same channels).
    pub layers: Vec<String>,
    /// The group's full width (output channels of each member).
    pub width: usize,
    /// Measured widths, in increasing order, the full width among them.
    pub points: Vec<LatencyPoint>,
    /// The group's fast step in output channels ([`LatencyGroup::fast_step`]), as the
    /// measurer decided it from [`LatencyGroup::probes`] against their noise. Absent from
    /// tables measured before steps were (the table then derives it from its probes, or
    /// takes 1: [`LatencyGroup::fast_step`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<usize>,
    /// Widths measured just below a multiple of 16 (or of 8, 4, 2 for a narrow group) to
    /// find the fast step, in increasing order: recorded apart from `points` (they may be
    /// slower than wider widths, even than the full width; a probe may share a width with a
    /// point). The multiple itself is one of `points`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<LatencyPoint>,
}

/// The steps a fast step is chosen among, largest first.
pub const STEPS: [usize; 4] = [16, 8, 4, 2];

/// The widths probed below `full` output channels to find a group's fast step: the
/// reference `w`, the largest multiple of `p` not above `full` (`p` the largest of
/// [`STEPS`] with `p ≤ full`), and `w − p/2`, `w − p/4`, … `w − 1` below it (each off one
/// more step), ascending; `None` below 2 channels. For 96 channels: 96 and 88, 92, 94, 95;
/// for 24: 16 and 8, 12, 14, 15.
///
/// ```
/// assert_eq!(fair_analysis::step_probes(100), Some((96, vec![88, 92, 94, 95])));
/// assert_eq!(fair_analysis::step_probes(6), Some((4, vec![2, 3])));
/// assert_eq!(fair_analysis::step_probes(1), None);
/// ```
pub fn step_probes(full: usize) -> Option<(usize, Vec<usize>)> {
    let p = STEPS.into_iter().find(|&p| p <= full)?;
    let w = full / p * p;
    let mut below: Vec<usize> = std::iter::successors(Some(p / 2), |d| (*d > 1).then(|| d / 2))
        .map(|d| w - d)
        .collect();
    below.sort_unstable();
    Some((w, below))
}

/// The fast step of a group from probed latencies: `reference` is the latency interval
/// (low, high, seconds) at a multiple `w` of 16 (or of the largest step probed), `probes`
/// the intervals at widths just below it ([`step_probes`]). A probe is *measurably slower*
/// than the reference when its low end is above the reference's high end (so noise
/// that makes the intervals overlap decides nothing). The step is the largest `s` of
/// [`STEPS`] dividing `w` such that every probe whose width is not a multiple of `s` is
/// measurably slower; 1 when there is none (a probe one below `w` that is not slower
/// means any width runs as fast as its neighbours).
///
/// ```
/// use fair_analysis::fast_step;
/// let exact = |s: f64| (s, s);
/// // Widths off a multiple of 8 are slower than 96; 88 (a multiple of 8) is not.
/// let probes = [(88, exact(0.9)), (92, exact(1.3)), (94, exact(1.3)), (95, exact(1.3))];
/// assert_eq!(fast_step(96, exact(1.0), &probes), 8);
/// // Every narrower width faster: no step.
/// let flat = [(88, exact(0.9)), (92, exact(0.95)), (94, exact(0.97)), (95, exact(0.99))];
/// assert_eq!(fast_step(96, exact(1.0), &flat), 1);
/// ```
pub fn fast_step(w: usize, reference: (f64, f64), probes: &[(usize, (f64, f64))]) -> usize {
    let slower = |(lo, _): (f64, f64)| lo > reference.1;
    STEPS
        .into_iter()
        .filter(|&s| w.is_multiple_of(s))
        .find(|&s| {
            let off: Vec<_> = probes
                .iter()
                .filter(|(p, _)| !p.is_multiple_of(s))
                .collect();
            !off.is_empty() && off.iter().all(|(_, i)| slower(*i))
        })
        .unwrap_or(1)
}

impl LatencyGroup {
    /// The group's fast step in output channels: widths that are multiples of it run
    /// faster than the widths between. The measured `step` when the table has one; else
    /// derived from the table's `probes` ([`fast_step`], with each figure as an exact
    /// interval: a file records no noise) against the figure at the width one above the
    /// widest probe (the multiple they were taken below, [`step_probes`]); else 1.
    pub fn fast_step(&self) -> usize {
        if let Some(s) = self.step {
            return s.max(1);
        }
        let Some(widest) = self.probes.last() else {
            return 1;
        };
        let w = widest.width + 1;
        let reference = self.interpolated(w.min(self.width));
        let probes: Vec<(usize, (f64, f64))> = self
            .probes
            .iter()
            .map(|p| (p.width, (p.seconds, p.seconds)))
            .collect();
        fast_step(w, (reference, reference), &probes)
    }

    /// The fast width for `width`: `width` rounded up to a multiple of the fast step, at
    /// most the full width.
    pub fn fast_width(&self, width: usize) -> usize {
        fair_threshold::round_up(width, self.fast_step(), self.width)
    }

    /// The latency (seconds) of the model with this group at `width`: the interpolated
    /// figure at [`LatencyGroup::fast_width`], linear between the two measured widths around
    /// it; below the narrowest measured width, the narrowest's figure (no saving beyond what
    /// was measured is assumed). A width off the fast step is thus priced no lower than the
    /// next multiple above: a lower bound, not an estimate (probes show such a width can run
    /// slower than that multiple, even slower than the full width). The points must not be
    /// empty ([`LatencyTable::check`]).
    pub fn seconds_at(&self, width: usize) -> f64 {
        self.interpolated(self.fast_width(width))
    }

    /// [`LatencyGroup::seconds_at`] without the fast step: linear between the points.
    fn interpolated(&self, width: usize) -> f64 {
        let p = &self.points;
        let w = width as f64;
        if width <= p[0].width {
            return p[0].seconds;
        }
        for pair in p.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if width <= b.width {
                let t = (w - a.width as f64) / (b.width - a.width) as f64;
                return a.seconds + t * (b.seconds - a.seconds);
            }
        }
        p[p.len() - 1].seconds
    }

    /// The latency change (seconds) of narrowing the group from full width to `width`.
    pub fn cost(&self, width: usize) -> f64 {
        self.seconds_at(width) - self.seconds_at(self.width)
    }

    /// The fraction of the model's latency left when the group is narrowed from full width
    /// to `width` (every other group full): [`LatencyGroup::seconds_at`] `width` over the
    /// figure at the full width; 1 at the full width, at most 1 below it.
    pub fn fraction(&self, width: usize) -> f64 {
        self.seconds_at(width) / self.seconds_at(self.width)
    }
}

/// A measured latency table (see the module documentation): serialised as JSON with
/// [`LATENCY_TABLE_FORMAT`].
///
/// ```
/// use fair_analysis::{LatencyGroup, LatencyKey, LatencyModel, LatencyPoint, LatencyTable};
/// let p = |width, seconds| LatencyPoint { width, seconds };
/// let table = LatencyTable::new(
///     LatencyKey { model_digest: "abc".into(), runtime: "my-phone".into(), runtime_version: String::new(), threads: 4, batch: 1 },
///     0.010,
///     vec![LatencyGroup { layers: vec!["conv1".into()], width: 32, points: vec![p(8, 0.006), p(32, 0.010)], step: None, probes: vec![] }],
/// )?;
/// // Halfway between 8 and 32 channels: halfway between 6 ms and 10 ms.
/// assert!((table.cost("conv1", 20)? - (-0.002)).abs() < 1e-12);
/// let back = LatencyTable::from_json(&table.to_json_string())?;
/// assert_eq!(back, table);
/// # Ok::<(), fair_analysis::AnalysisError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyTable {
    /// [`LATENCY_TABLE_FORMAT`].
    pub format: String,
    /// What it was measured for.
    pub key: LatencyKey,
    /// The unpruned model's latency, seconds (median).
    pub full_seconds: f64,
    /// Whether any measurement's spread was too wide to trust (the measurer's flag; a table
    /// that is noisy should be measured again).
    #[serde(default)]
    pub noisy: bool,
    /// One entry per prunable group.
    pub groups: Vec<LatencyGroup>,
}

impl LatencyTable {
    /// A checked table ([`LatencyTable::check`]), not flagged noisy.
    pub fn new(
        key: LatencyKey,
        full_seconds: f64,
        groups: Vec<LatencyGroup>,
    ) -> Result<Self, AnalysisError> {
        let table = LatencyTable {
            format: LATENCY_TABLE_FORMAT.into(),
            key,
            full_seconds,
            noisy: false,
            groups,
        };
        table.check()?;
        Ok(table)
    }

    /// Checks the table on its own: the format ([`LATENCY_TABLE_FORMAT`] or
    /// [`LATENCY_TABLE_FORMAT_V1`]), a full latency and every figure finite and positive,
    /// each group's layers not empty and in no other group, its widths ≥ 1, strictly
    /// increasing and ending at the full width, its seconds never falling as the width
    /// grows; a `step`, when given, 1 or one of [`STEPS`] and at most the full width; probes
    /// at widths from 1 to the full width − 1, strictly increasing, and, without a `step`,
    /// just below a multiple `w` of 2 or more (the widest probe `w − 1`, as
    /// [`step_probes`] places them), since the step is then derived against `w`.
    pub fn check(&self) -> Result<(), AnalysisError> {
        let bad = |detail: String| Err(AnalysisError::LatencyTable(detail));
        if self.format != LATENCY_TABLE_FORMAT && self.format != LATENCY_TABLE_FORMAT_V1 {
            return bad(format!(
                "the format is '{}', expected '{LATENCY_TABLE_FORMAT}' (or '{LATENCY_TABLE_FORMAT_V1}')",
                self.format
            ));
        }
        if !(self.full_seconds.is_finite() && self.full_seconds > 0.0) {
            return bad(format!(
                "full_seconds must be a finite number > 0, found {}",
                self.full_seconds
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for g in &self.groups {
            let name = g.layers.join(", ");
            if g.layers.is_empty() {
                return bad("a group lists no layers".into());
            }
            for l in &g.layers {
                if !seen.insert(l.as_str()) {
                    return bad(format!("the layer '{l}' is in more than one group"));
                }
            }
            if g.points.is_empty() {
                return bad(format!("group {name}: no measured widths"));
            }
            for p in &g.points {
                if p.width == 0 || !(p.seconds.is_finite() && p.seconds > 0.0) {
                    return bad(format!(
                        "group {name}: a point must have a width ≥ 1 and finite seconds > 0, found width {} and {} s",
                        p.width, p.seconds
                    ));
                }
            }
            if g.points.windows(2).any(|w| w[0].width >= w[1].width) {
                return bad(format!("group {name}: widths must be strictly increasing"));
            }
            // A wider group that runs faster would make the latency removed go down as more
            // units are removed, and the target search assumes it never does.
            if let Some(w) = g.points.windows(2).find(|w| w[1].seconds < w[0].seconds) {
                return bad(format!(
                    "group {name}: latency must not fall as the width grows, found {} s at width {} and {} s at width {}",
                    w[0].seconds, w[0].width, w[1].seconds, w[1].width
                ));
            }
            if let Some(step) = g.step {
                if step != 1 && !STEPS.contains(&step) {
                    return bad(format!(
                        "group {name}: the step must be 1, 2, 4, 8 or 16, found {step}"
                    ));
                }
                if step > g.width {
                    return bad(format!(
                        "group {name}: the step {step} is larger than the group's width {}",
                        g.width
                    ));
                }
            }
            if let Some(p) = g.probes.iter().find(|p| {
                p.width == 0 || p.width >= g.width || !(p.seconds.is_finite() && p.seconds > 0.0)
            }) {
                return bad(format!(
                    "group {name}: a probe must have a width from 1 to {} and finite seconds > 0, found width {} and {} s",
                    g.width.saturating_sub(1),
                    p.width,
                    p.seconds
                ));
            }
            if g.probes.windows(2).any(|w| w[0].width >= w[1].width) {
                return bad(format!(
                    "group {name}: probe widths must be strictly increasing"
                ));
            }
            if g.step.is_none()
                && let Some(widest) = g.probes.last()
                && (widest.width + 1) % 2 != 0
            {
                let expected = match step_probes(g.width) {
                    Some((w, below)) => format!(
                        "e.g. {} below {w}",
                        below
                            .iter()
                            .map(usize::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    None => "none for this width".into(),
                };
                return bad(format!(
                    "group {name}: without a step, probes must lie just below a multiple of 2 or more (the widest one below it), found the widest at {}; expected probes: {expected}",
                    widest.width
                ));
            }
            let last = g.points[g.points.len() - 1].width;
            if last != g.width {
                return bad(format!(
                    "group {name}: the widest point must be the full width {}, found {last}",
                    g.width
                ));
            }
        }
        Ok(())
    }

    /// Checks the table against `graph`: every listed layer is one of its prunable layers
    /// with the group's full width.
    pub fn check_graph(&self, graph: &Graph) -> Result<(), AnalysisError> {
        for g in &self.groups {
            for l in &g.layers {
                match graph.units(l) {
                    Some(n) if n == g.width => {}
                    Some(n) => {
                        return Err(AnalysisError::LatencyTable(format!(
                            "the layer '{l}' has {n} output channels in the model, the table says {}",
                            g.width
                        )));
                    }
                    None => {
                        return Err(AnalysisError::LatencyTable(format!(
                            "the layer '{l}' is not a prunable layer of the model '{}'",
                            graph.name()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The group `layer` belongs to.
    pub fn group(&self, layer: &str) -> Option<&LatencyGroup> {
        self.groups
            .iter()
            .find(|g| g.layers.iter().any(|l| l == layer))
    }

    /// Reads a table from JSON text, checked.
    pub fn from_json(text: &str) -> Result<Self, AnalysisError> {
        let table: LatencyTable = serde_json::from_str(text)
            .map_err(|e| AnalysisError::LatencyTable(format!("not a latency table: {e}")))?;
        table.check()?;
        Ok(table)
    }

    /// Loads a table from a JSON file, checked; errors name the file.
    pub fn load(path: &Path) -> Result<Self, AnalysisError> {
        let text = fair_fs::read_string_bounded(path, crate::MAX_TEXT_FILE, "a latency table")?;
        Self::from_json(&text).map_err(|e| {
            AnalysisError::LatencyTable(format!("latency table '{}': {e}", path.display()))
        })
    }

    /// The table as pretty JSON.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(self).expect("a latency table serialises")
    }

    /// Writes the table as JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<(), AnalysisError> {
        fair_fs::write_atomic(path, self.to_json_string().as_bytes())?;
        Ok(())
    }
}

impl LatencyModel for LatencyTable {
    fn full_seconds(&self) -> f64 {
        self.full_seconds
    }

    fn cost(&self, layer: &str, width: usize) -> Result<f64, AnalysisError> {
        let g = self.group(layer).ok_or_else(|| {
            AnalysisError::LatencyTable(format!("the table has no figures for the layer '{layer}'"))
        })?;
        Ok(g.cost(width))
    }

    /// The full latency times each group's [`LatencyGroup::fraction`] at its width (see the
    /// module documentation for why a product and not a sum).
    fn total(&self, widths: &Widths) -> Result<f64, AnalysisError> {
        let mut total = self.full_seconds;
        for g in &self.groups {
            let w = g
                .layers
                .iter()
                .find_map(|l| widths.get(l))
                .unwrap_or(g.width);
            total *= g.fraction(w);
        }
        Ok(total)
    }

    fn step(&self, layer: &str) -> usize {
        self.group(layer).map_or(1, LatencyGroup::fast_step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(points: &[(usize, f64)]) -> LatencyGroup {
        LatencyGroup {
            layers: vec!["a".into()],
            width: points[points.len() - 1].0,
            points: points
                .iter()
                .map(|&(width, seconds)| LatencyPoint { width, seconds })
                .collect(),
            step: None,
            probes: Vec::new(),
        }
    }

    #[test]
    fn interpolation_is_linear_between_points_and_flat_below_the_narrowest() {
        let g = group(&[(8, 2.0), (16, 4.0), (32, 10.0)]);
        assert_eq!(g.seconds_at(8), 2.0);
        assert_eq!(g.seconds_at(12), 3.0);
        assert_eq!(g.seconds_at(16), 4.0);
        assert_eq!(g.seconds_at(24), 7.0);
        assert_eq!(g.seconds_at(32), 10.0);
        // Below the grid: the narrowest measured figure.
        assert_eq!(g.seconds_at(3), 2.0);
        assert_eq!(g.cost(24), -3.0);
        assert_eq!(g.cost(32), 0.0);
    }

    #[test]
    fn the_prediction_multiplies_what_each_group_leaves() {
        let g = |layer: &str, points: &[(usize, f64)]| LatencyGroup {
            layers: vec![layer.into()],
            ..group(points)
        };
        // 10 ms in all; "a" at 8 of 16 channels leaves 6 ms (0.6), "b" at 4 of 8 leaves 8 ms
        // (0.8), "c" at 1 of 4 leaves 3 ms (0.3).
        let table = LatencyTable::new(
            key(),
            0.010,
            vec![
                g("a", &[(8, 0.006), (16, 0.010)]),
                g("b", &[(4, 0.008), (8, 0.010)]),
                g("c", &[(1, 0.003), (4, 0.010)]),
            ],
        )
        .unwrap();
        let widths =
            |w: &[(&str, usize)]| -> Widths { w.iter().map(|&(l, n)| (l.to_owned(), n)).collect() };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-15;
        assert!(close(table.total(&widths(&[])).unwrap(), 0.010));
        assert!(close(table.total(&widths(&[("a", 8)])).unwrap(), 0.006));
        // Both: 10 × 0.6 × 0.8 = 4.8 ms (a sum of the changes would say 4 ms).
        assert!(close(
            table.total(&widths(&[("a", 8), ("b", 4)])).unwrap(),
            0.0048
        ));
        // All three: 10 × 0.6 × 0.8 × 0.3 = 1.44 ms, where a sum would fall to −3 ms.
        let all = table
            .total(&widths(&[("a", 8), ("b", 4), ("c", 1)]))
            .unwrap();
        assert!(close(all, 0.00144), "{all}");
        assert!(close(table.groups[2].fraction(1), 0.3));
        assert_eq!(table.groups[2].fraction(4), 1.0);
    }

    fn key() -> LatencyKey {
        LatencyKey {
            model_digest: "d".into(),
            runtime: "r".into(),
            runtime_version: String::new(),
            threads: 1,
            batch: 1,
        }
    }

    type Case = (Vec<(usize, f64)>, usize, &'static str);

    #[test]
    fn bad_tables_are_refused_with_the_reason() {
        let cases: [Case; 5] = [
            (vec![(16, 1.0), (8, 2.0)], 8, "strictly increasing"),
            (
                vec![(8, 2.0), (16, 1.0)],
                16,
                "must not fall as the width grows",
            ),
            (vec![(8, 1.0), (16, 2.0)], 32, "full width 32"),
            (vec![(0, 1.0), (16, 2.0)], 16, "width ≥ 1"),
            (vec![(8, f64::NAN), (16, 2.0)], 16, "finite seconds"),
        ];
        for (points, width, expected) in cases {
            let g = LatencyGroup {
                width,
                ..group(&points)
            };
            let e = LatencyTable::new(key(), 1.0, vec![g])
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{e}");
        }
        let e = LatencyTable::new(key(), 0.0, vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("full_seconds"), "{e}");
    }
}
