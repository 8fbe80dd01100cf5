//! Latency tables for latency targets (`target-latency`): where they are measured
//! ([`LatencyRuntime`]), with which batch and threads ([`LatencySettings`]), how they are
//! measured on a runtime ([`measure_table_on`], with a [`LatencyTimer`]: libtorch CPU or
//! ONNX Runtime CPU), and how a run gets one
//! ([`table_for`]: the user's file, the cached table, or a fresh measurement).
//!
//! A table is measured per prunable group: the model with only that group narrowed to each
//! of a few widths (1 unit, up to four multiples of 8 units, and the full width), the
//! other groups at full width, timed interleaved with the full model ([`crate::measure`]):
//! each width's latency is the full model's over the round-by-round speed-up, so load that
//! hits a round hits both alike, and a group's latencies are made non-decreasing in the
//! width ([`monotone`]). A few widths just below a multiple of 16 are timed besides
//! ([`widths_to_time`]) to find the group's fast step ([`step_of`]: widths off it
//! measurably slower than the multiple above, by the quartiles of their round-by-round
//! ratio), which latency targets keep widths on. The weights are random: latency does not
//! depend on their values.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use fair_analysis::{
    GroupedConvs, LatencyGroup, LatencyKey, LatencyPoint, LatencyTable, analyze_with,
};
use fair_ir::Graph;
use fair_runtime::Model;
use serde::{Deserialize, Serialize};

use crate::error::PipelineError;
use crate::latency::LatencyOptions;
use crate::timing::LatencyTimer;

/// Where latency tables are measured (`latency-on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatencyRuntime {
    /// libtorch on the CPU, in this process.
    #[default]
    LibtorchCpu,
    /// ONNX Runtime on the CPU, on the models exported as ONNX, through a Python interpreter
    /// with the `onnxruntime` package ([`LatencyTimer`]).
    OnnxruntimeCpu,
    /// Eager PyTorch on the CPU, on the models exported as `model.py` with their weights
    /// (what a user who runs the export's `model.py` measures: libtorch's kernels plus
    /// Python's per-op cost, which matters for small models), through a Python interpreter
    /// with the `torch` and `safetensors` packages ([`LatencyTimer`]).
    PytorchCpu,
    /// libtorch on CUDA device 0 (fair-pruner's own executor, as `libtorch-cpu`, each pass
    /// synchronised), where libtorch sees a CUDA device.
    Cuda,
}

impl LatencyRuntime {
    /// The name used by settings, flags and table keys.
    pub fn name(self) -> &'static str {
        match self {
            LatencyRuntime::LibtorchCpu => "libtorch-cpu",
            LatencyRuntime::OnnxruntimeCpu => "onnxruntime-cpu",
            LatencyRuntime::PytorchCpu => "pytorch-cpu",
            LatencyRuntime::Cuda => "cuda",
        }
    }

    /// Whether models are timed on it through a Python interpreter (a helper process):
    /// ONNX Runtime and eager PyTorch.
    pub fn through_python(self) -> bool {
        matches!(
            self,
            LatencyRuntime::OnnxruntimeCpu | LatencyRuntime::PytorchCpu
        )
    }
}

impl fmt::Display for LatencyRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LatencyRuntime {
    type Err = String;

    /// `libtorch-cpu`, `onnxruntime-cpu`, `pytorch-cpu` or `cuda`.
    fn from_str(text: &str) -> Result<Self, String> {
        [
            LatencyRuntime::LibtorchCpu,
            LatencyRuntime::OnnxruntimeCpu,
            LatencyRuntime::PytorchCpu,
            LatencyRuntime::Cuda,
        ]
        .into_iter()
        .find(|r| r.name() == text)
        .ok_or_else(|| {
            format!(
                "unknown runtime '{text}': choose libtorch-cpu, onnxruntime-cpu, pytorch-cpu or cuda"
            )
        })
    }
}

/// How a latency target's table is obtained and what the pruned models are timed with
/// ([`crate::RawSettings::latency`] resolves it from `latency-on`, `latency-batch`,
/// `latency-threads`, `latency-table`, `latency-tolerance` and `latency-python`). The
/// default: libtorch CPU, batch 1, libtorch's current number of threads, no table given, a
/// 5% tolerance, ONNX Runtime through [`crate::default_python`].
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySettings {
    /// Where the table is measured (when none is given); a given table's runtime must be it
    /// when `runtime_given`.
    pub runtime: LatencyRuntime,
    /// Whether `runtime` was chosen (`latency-on`) rather than left at its default: a given
    /// table measured on another runtime is then refused instead of silently used.
    pub runtime_given: bool,
    /// Batch size of each timed forward pass, if given (else 1, or a given table's).
    pub batch: Option<usize>,
    /// Intra-op threads while timing, if given (else libtorch's current number, or a given
    /// table's).
    pub threads: Option<usize>,
    /// A table to use instead of measuring one (e.g. measured on the user's device).
    pub table: Option<PathBuf>,
    /// Whether `table` was named by a config file (`[prune] latency_table`) rather than the
    /// `latency-table` setting (a flag, a builder): errors about it name the one that was
    /// used ([`LatencySettings::table_setting`]).
    pub table_from_config: bool,
    /// Which of `latency-on`, `latency-batch` and `latency-threads` a config file gave
    /// (`[prune] latency_on`, ...) rather than a flag or a builder: errors about them name
    /// those keys ([`LatencySettings::setting`]).
    pub from_config: Vec<String>,
    /// The relative tolerance of the measured correction ([`crate::correct_latency`]):
    /// [`crate::DEFAULT_LATENCY_TOLERANCE`] by default.
    pub tolerance: f64,
    /// The Python interpreter that times on ONNX Runtime (with `onnxruntime`) or eager
    /// PyTorch (with `torch`), if given (else [`crate::default_python`]).
    pub python: Option<PathBuf>,
}

impl Default for LatencySettings {
    fn default() -> Self {
        LatencySettings {
            runtime: LatencyRuntime::default(),
            runtime_given: false,
            batch: None,
            threads: None,
            table: None,
            table_from_config: false,
            from_config: Vec::new(),
            tolerance: crate::DEFAULT_LATENCY_TOLERANCE,
            python: None,
        }
    }
}

impl LatencySettings {
    /// The batch size a table is measured with: the given one, else 1.
    pub fn batch(&self) -> usize {
        self.batch.unwrap_or(1)
    }

    /// The threads a table is measured with: the given number, else libtorch's current one.
    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(|| tch::get_num_threads().max(1) as usize)
    }

    /// The setting that named the given table, as errors name it: `` `latency-table` `` (the
    /// CLI prints its flag), or `[prune] latency_table` when a config file gave it.
    pub fn table_setting(&self) -> &'static str {
        if self.table_from_config {
            "[prune] latency_table"
        } else {
            "`latency-table`"
        }
    }

    /// The setting `name` (`latency-on`, `latency-batch`, `latency-threads` or
    /// `latency-table`) as errors name it: the config key (`[prune] latency_on`) when a
    /// config file gave it, else `name` itself.
    pub fn setting(&self, name: &str) -> String {
        let from_config = if name == "latency-table" {
            self.table_from_config
        } else {
            self.from_config.iter().any(|n| n == name)
        };
        if from_config {
            format!("[prune] {}", name.replace('-', "_"))
        } else {
            name.to_owned()
        }
    }

    /// The line a run prints before it looks for a table to measure (none given):
    /// `latency table on <runtime> (batch <n>, <n> threads)`; `None` when a table is given.
    /// On libtorch CPU taken by default (no runtime given), the line also says which
    /// runtime that is and where the exports run instead: `model.py` calls each op from
    /// Python, a per-op cost fair-pruner's executor does not pay, so on small models at
    /// small batches a target met here falls short in eager PyTorch.
    pub fn announcement(&self) -> Option<String> {
        self.table.is_none().then(|| {
            let default_note = if !self.runtime_given && self.runtime == LatencyRuntime::LibtorchCpu {
                " — the default: fair-pruner's own executor; the export's model.py pays a per-op Python cost it does not, so to meet the target in eager PyTorch give --latency-on pytorch-cpu (onnxruntime-cpu for model.onnx)"
            } else {
                ""
            };
            format!(
                "latency table on {} (batch {}, {} threads){default_note}",
                self.runtime,
                self.batch(),
                self.threads()
            )
        })
    }

    /// What tables are measured and models timed with on `runtime`: the given interpreter
    /// for ONNX Runtime, else [`crate::default_python`].
    pub fn timer_on(&self, runtime: LatencyRuntime) -> LatencyTimer {
        LatencyTimer::new(
            runtime,
            self.python.clone().unwrap_or_else(crate::default_python),
        )
    }

    /// What a run with these settings measures its table or times its models on, decided
    /// before anything is measured: a given table's runtime ([`LatencySettings::timer_for`],
    /// read from its file; `None` for a runtime fair-pruner does not time on, e.g. a user's
    /// device), else [`LatencySettings::timer`].
    pub fn run_timer(&self) -> Result<Option<LatencyTimer>, PipelineError> {
        match &self.table {
            Some(path) => Ok(self.timer_for(&LatencyTable::load(path)?)),
            None => Ok(Some(self.timer())),
        }
    }

    /// What tables are measured with: [`LatencySettings::timer_on`] `runtime`.
    pub fn timer(&self) -> LatencyTimer {
        self.timer_on(self.runtime)
    }

    /// What the pruned models of a latency target on `table` are timed with (the measured
    /// correction and the report): the table's runtime when it is one fair-pruner times on
    /// (libtorch CPU, ONNX Runtime CPU or eager PyTorch through
    /// [`LatencySettings::timer_on`]'s interpreter, CUDA where libtorch sees a CUDA device);
    /// `None` for a table of another runtime (e.g. a user's device, or a CUDA table on a
    /// machine without one).
    pub fn timer_for(&self, table: &LatencyTable) -> Option<LatencyTimer> {
        match table.key.runtime.parse::<LatencyRuntime>() {
            Ok(LatencyRuntime::Cuda) if !tch::Cuda::is_available() => None,
            Ok(r) => Some(self.timer_on(r)),
            Err(_) => None,
        }
    }

    /// The key of a table measured with these settings for the model of `model_digest`,
    /// with the runtime's library at `runtime_version` ([`LatencyTimer::runtime_version`]:
    /// the `onnxruntime` version, `None` for libtorch).
    pub fn key(&self, model_digest: &str, runtime_version: Option<&str>) -> LatencyKey {
        LatencyKey {
            model_digest: model_digest.to_owned(),
            runtime: self.runtime.name().to_owned(),
            runtime_version: runtime_version.unwrap_or_default().to_owned(),
            threads: self.threads(),
            batch: self.batch(),
        }
    }

    /// The file name a measured table is cached under in the output directory:
    /// `latency-<runtime>-b<batch>-t<threads>.json` (the model digest is checked inside).
    pub fn cache_name(&self) -> String {
        format!(
            "latency-{}-b{}-t{}.json",
            self.runtime.name(),
            self.batch(),
            self.threads()
        )
    }
}

/// Where a run's latency table came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableSource {
    /// The file the user gave.
    Given(PathBuf),
    /// A table cached in the output directory by an earlier run with the same key.
    Cached(PathBuf),
    /// Measured now.
    Measured,
}

impl TableSource {
    /// How reports name it: `given`, `cached` or `measured`.
    pub fn label(&self) -> &'static str {
        match self {
            TableSource::Given(_) => "given",
            TableSource::Cached(_) => "cached",
            TableSource::Measured => "measured",
        }
    }
}

/// The widths a group of `units` units is measured at, in units: 1,
/// up to four multiples of 8 evenly spread below the full width, and the full width.
pub fn grid(units: usize) -> Vec<usize> {
    let eights: Vec<usize> = (1..).map(|k| 8 * k).take_while(|&w| w < units).collect();
    let mut points = vec![1];
    if eights.len() <= 4 {
        points.extend(&eights);
    } else {
        // The narrowest, the widest and two between, evenly by index.
        let last = eights.len() - 1;
        points.extend((0..4).map(|i| eights[i * last / 3]));
    }
    points.push(units);
    points.sort_unstable();
    points.dedup();
    points
}

/// What a group is timed at ([`widths_to_time`]), in output channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedWidths {
    /// The table's points: [`grid`], with the probes' reference width, ascending, the full
    /// width last.
    pub points: Vec<usize>,
    /// The reference width and the widths probed below it ([`fair_analysis::step_probes`]),
    /// or `None` when the step is not probed: a group of fewer than 2 channels, or one whose
    /// unit is several channels (a grouped convolution pruned within its groups). The
    /// latter's step is simply not measured (recorded as 1): the probes are single channels
    /// below a multiple of 16, which such a group cannot be narrowed to, and probing it
    /// would take probes in whole units, which is not done.
    pub probes: Option<(usize, Vec<usize>)>,
    /// The narrowed models timed, ascending: every point but the full width, and the
    /// probes (a width both is timed once).
    pub timed: Vec<usize>,
}

/// The widths a group of `units` units of `per` channels each is timed at: [`grid`] (in
/// channels), and, when a unit is one channel (only then: a group of wider units is not
/// probed, its step not measured), the fast step's probes
/// ([`fair_analysis::step_probes`]): a multiple `w` of 16 (of 8, 4 or 2 below 16 channels)
/// joins the points, and three or four widths just below it (`w − 8`, `w − 4`, `w − 2`,
/// `w − 1`) are timed besides. A group of 96 channels: points 1, 8, 32, 56, 88, 96 (96 is
/// its own reference), probes 88, 92, 94, 95: 8 narrowed models instead of 5.
pub fn widths_to_time(units: usize, per: usize) -> TimedWidths {
    let mut points: Vec<usize> = grid(units).into_iter().map(|k| k * per).collect();
    let full = units * per;
    let probes = if per == 1 {
        fair_analysis::step_probes(full)
    } else {
        None
    };
    if let Some((w, _)) = &probes {
        points.push(*w);
        points.sort_unstable();
        points.dedup();
    }
    let mut timed: Vec<usize> = points[..points.len() - 1].to_vec();
    if let Some((_, below)) = &probes {
        timed.extend(below);
    }
    timed.sort_unstable();
    timed.dedup();
    TimedWidths {
        points,
        probes,
        timed,
    }
}

/// [`measure_table_on`] libtorch CPU.
pub fn measure_table(
    graph: &Graph,
    grouped: GroupedConvs,
    protected: &[String],
    key: LatencyKey,
    options: &LatencyOptions,
) -> Result<LatencyTable, PipelineError> {
    measure_table_on(
        &LatencyTimer::libtorch_cpu(),
        graph,
        grouped,
        protected,
        key,
        options,
        &mut |_| {},
    )
}

/// Times one forward pass per group and width on `timer`'s runtime: a table keyed by `key`
/// for `graph`'s prunable groups (those of at least two units that are not `protected` or
/// fixed), each narrowed alone to the widths of [`widths_to_time`] (the points of [`grid`]
/// and the probes of its fast step, [`step_of`], which every group records: 1 when not
/// probed), timed interleaved with the full model at `key.batch` with `key.threads` threads
/// ([`LatencyTimer::time`]). `options` gives the rounds and budget per group (its batch
/// sizes are ignored); the table is flagged noisy when the figure of the full model or of
/// any point is (the probes' noise is not counted: it enters their quartiles, which decide
/// the step, and no figure is read from a probe). `key.runtime` is recorded as given
/// (normally `timer`'s runtime).
/// `progress` is told each group before it is timed (`  group 2/5 (layer1.conv1): 4 widths`).
pub fn measure_table_on(
    timer: &LatencyTimer,
    graph: &Graph,
    grouped: GroupedConvs,
    protected: &[String],
    key: LatencyKey,
    options: &LatencyOptions,
    progress: &mut dyn FnMut(String),
) -> Result<LatencyTable, PipelineError> {
    if key.batch == 0 || key.threads == 0 {
        return Err(PipelineError::invalid(
            if key.batch == 0 {
                "latency-batch"
            } else {
                "latency-threads"
            },
            "must be at least 1",
        ));
    }
    let protected: Vec<&str> = protected.iter().map(String::as_str).collect();
    let groups = analyze_with(graph, &protected, grouped)?;
    let device = tch::Device::Cpu;
    let full = Model::new(graph.clone(), device, 0)?;
    {
        // Per group: its layers, full width and widths; its narrowed models are timed
        // interleaved with the full model in one timing session (one helper process on
        // ONNX Runtime, the set's files deleted once timed) and dropped once timed.
        let prunable: Vec<_> = groups
            .groups()
            .iter()
            .filter(|g| g.is_prunable() && g.units >= 2)
            .collect();
        let mut groups_widths = Vec::new();
        let mut session = timer.session(key.batch, key.threads, options)?;
        for (k, g) in prunable.iter().enumerate() {
            let per = g.map.channels_per_unit();
            let plan = widths_to_time(g.units, per);
            progress(format!(
                "  group {}/{} ({}): {} widths",
                k + 1,
                prunable.len(),
                g.layers.join(", "),
                plan.timed.len()
            ));
            let mut models = Vec::new();
            for &w in &plan.timed {
                let narrowed: HashMap<String, usize> =
                    g.layers.iter().map(|l| (l.clone(), w)).collect();
                models.push(Model::new(graph.with_units(&narrowed)?, device, 0)?);
            }
            let set: Vec<&Model> = std::iter::once(&full).chain(models.iter()).collect();
            session.add(&set, &|i| {
                if i == 0 {
                    "the full model".to_owned()
                } else {
                    format!(
                        "group {} at width {}",
                        g.layers.join(", "),
                        plan.timed[i - 1]
                    )
                }
            })?;
            groups_widths.push((g.layers.clone(), g.channels(), plan));
        }
        if groups_widths.is_empty() {
            session.add(&[&full], &|_| "the full model".to_owned())?;
        }
        let timed = session.finish();
        // The full model's and the points' figures, not the probes' (see the doc comment).
        let noisy = timed.iter().enumerate().any(|(k, t)| {
            t[0].noisy
                || groups_widths.get(k).is_some_and(|(_, _, plan)| {
                    plan.timed
                        .iter()
                        .zip(&t[1..])
                        .any(|(w, l)| l.noisy && plan.points.contains(w))
                })
        });
        let full_medians: Vec<f64> = timed.iter().map(|t| t[0].ms.median / 1e3).collect();
        let full_seconds = crate::latency::Spread::of(&full_medians).median;
        // Each width's latency is the full latency over its round-by-round speed-up (load
        // that hits a round hits both models alike, so the ratio is steadier than either
        // time), at most the full latency, made non-decreasing in the width: narrower is
        // never slower. The full width stays at the full latency (pooling a narrower width
        // measured slower into it would raise it and invent a saving). Probes keep their
        // figures as measured (off the fast step a width may be slower than the full
        // model), and their ratios to the reference width decide the step (step_of).
        let out = groups_widths
            .into_iter()
            .zip(&timed)
            .map(|((layers, width, plan), t)| {
                let speedup = |w: usize| -> crate::latency::Spread {
                    plan.timed
                        .iter()
                        .position(|&x| x == w)
                        .and_then(|i| t[i + 1].speedup)
                        .unwrap_or(crate::latency::Spread::of(&[1.0]))
                };
                let mut seconds: Vec<f64> = plan.points[..plan.points.len() - 1]
                    .iter()
                    .map(|&w| (full_seconds / speedup(w).median).min(full_seconds))
                    .collect();
                seconds.push(full_seconds);
                let (step, probes) = match &plan.probes {
                    Some((_, below)) => (
                        step_of(&plan, width, t),
                        below
                            .iter()
                            .map(|&p| LatencyPoint {
                                width: p,
                                seconds: full_seconds / speedup(p).median,
                            })
                            .collect(),
                    ),
                    None => (1, Vec::new()),
                };
                LatencyGroup {
                    layers,
                    width,
                    points: plan
                        .points
                        .iter()
                        .zip(monotone(&seconds))
                        .map(|(&width, seconds)| LatencyPoint { width, seconds })
                        .collect(),
                    step: Some(step),
                    probes,
                }
            })
            .collect();
        let mut table = LatencyTable::new(key, full_seconds, out)?;
        table.noisy = noisy;
        Ok(table)
    }
}

/// The fast step of a group from its timed set: `plan` what it was timed at
/// ([`widths_to_time`]), `full` its full width, `set` its figures (the full model first,
/// then one per width of `plan.timed`). Every probe is judged against the reference width
/// `w` alike, whether `w` is the full width (the full model) or a narrower one: by the
/// round-by-round speed-up `time(w) / time(probe)` (load that hits a round hits both
/// alike), the probe being measurably slower than `w` when the third quartile of that
/// speed-up is below 1 ([`fair_analysis::fast_step`] on the latency relative to `w`, the
/// interval 1 / third quartile to 1 / first quartile, against exactly 1). 1 when the plan
/// probes nothing or a figure has no rounds.
pub fn step_of(plan: &TimedWidths, full: usize, set: &[crate::Latency]) -> usize {
    let Some((w, below)) = &plan.probes else {
        return 1;
    };
    let rounds = |width: usize| -> Option<&[f64]> {
        let i = if width == full {
            0
        } else {
            plan.timed.iter().position(|&x| x == width)? + 1
        };
        set.get(i)
            .map(|l| l.round_ms.as_slice())
            .filter(|r| !r.is_empty())
    };
    let Some(reference) = rounds(*w) else {
        return 1;
    };
    let mut probed = Vec::new();
    for &p in below {
        let Some(times) = rounds(p) else {
            return 1;
        };
        let speedups: Vec<f64> = reference.iter().zip(times).map(|(r, x)| r / x).collect();
        let s = crate::latency::Spread::of(&speedups);
        probed.push((p, (1.0 / s.q3, 1.0 / s.q1)));
    }
    fair_analysis::fast_step(*w, (1.0, 1.0), &probed)
}

/// The non-decreasing sequence closest to `values` in the sum of absolute differences
/// (isotonic regression with median pooling: adjacent values that decrease are pooled into
/// a block that takes their median, until no block exceeds the next). A single slow outlier
/// is thus outvoted by the widths around it instead of dragging them up, as a mean would.
pub fn monotone(values: &[f64]) -> Vec<f64> {
    // Blocks of (pooled values, their median).
    let mut blocks: Vec<(Vec<f64>, f64)> = Vec::new();
    for &v in values {
        blocks.push((vec![v], v));
        while blocks.len() > 1 && blocks[blocks.len() - 2].1 > blocks[blocks.len() - 1].1 {
            let (last, _) = blocks.pop().expect("two blocks");
            let prev = blocks.last_mut().expect("two blocks");
            prev.0.extend(last);
            prev.1 = crate::latency::Spread::of(&prev.0).median;
        }
    }
    blocks
        .into_iter()
        .flat_map(|(v, m)| std::iter::repeat_n(m, v.len()))
        .collect()
}

/// The rounds a table is measured with: 2 warm-up passes, then at least 9 rounds, and up to
/// 200 within about half a second per group (a small model's table takes seconds; the many
/// rounds of a small, fast model keep its speed-ups' medians steady).
pub fn table_options() -> LatencyOptions {
    LatencyOptions {
        batch_sizes: vec![1],
        warmup: 2,
        min_rounds: 9,
        max_rounds: 200,
        budget_seconds: 0.5,
        noisy_above: LatencyOptions::default().noisy_above,
    }
}

/// The layer sets of the groups [`measure_table`] measures for these settings (a cached
/// table measured with other protected layers or another grouped-conv rule lists others).
fn measured_groups(
    graph: &Graph,
    grouped: GroupedConvs,
    protected: &[String],
) -> Result<Vec<Vec<String>>, PipelineError> {
    let protected: Vec<&str> = protected.iter().map(String::as_str).collect();
    let groups = analyze_with(graph, &protected, grouped)?;
    let mut sets: Vec<Vec<String>> = groups
        .groups()
        .iter()
        .filter(|g| g.is_prunable() && g.units >= 2)
        .map(|g| g.layers.clone())
        .collect();
    sets.sort();
    Ok(sets)
}

/// The layer sets of a table's groups, in the order of [`measured_groups`].
fn table_groups(table: &LatencyTable) -> Vec<Vec<String>> {
    let mut sets: Vec<Vec<String>> = table.groups.iter().map(|g| g.layers.clone()).collect();
    sets.sort();
    sets
}

/// The latency table of a run: the file `settings.table` names (its key's model digest,
/// when not empty, must be `model_digest`, and a batch or threads given in `settings` must
/// be its key's), else the table cached as [`LatencySettings::cache_name`] in `cache_dir`
/// when its key is this one, it is not flagged noisy, it lists the groups a measurement
/// would (the same protected layers and grouped-conv rule) and every group records its
/// fast step (a table cached before steps were measured has none), else one measured on
/// `settings.runtime` ([`measure_table_on`] with [`table_options`], telling `progress` each
/// group). The table is checked against `graph`.
pub fn table_for(
    settings: &LatencySettings,
    graph: &Graph,
    grouped: GroupedConvs,
    protected: &[String],
    model_digest: &str,
    cache_dir: Option<&Path>,
    progress: &mut dyn FnMut(String),
) -> Result<(LatencyTable, TableSource), PipelineError> {
    if let Some(path) = &settings.table {
        let table = LatencyTable::load(path)?;
        let k = &table.key;
        let file = path.display();
        let named = settings.table_setting();
        if !k.model_digest.is_empty() && k.model_digest != model_digest {
            return Err(PipelineError::invalid(
                named.trim_matches('`'),
                format!(
                    "'{file}' was measured for the model {}, not this one ({model_digest}); measure it again, or leave its model_digest empty to use it anyway",
                    k.model_digest
                ),
            ));
        }
        if settings.runtime_given && k.runtime != settings.runtime.name() {
            let on = settings.setting("latency-on");
            let leave_out = if on.starts_with('[') {
                on.clone()
            } else {
                format!("`{on}`")
            };
            return Err(PipelineError::invalid(
                &on,
                format!(
                    "{} was given but the table '{file}' ({named}) was measured on {}; leave out {leave_out} to use the table as it is, or leave out the table to measure one on {}",
                    settings.runtime, k.runtime, settings.runtime
                ),
            ));
        }
        for (name, given, have) in [
            ("latency-batch", settings.batch, k.batch),
            ("latency-threads", settings.threads, k.threads),
        ] {
            if let Some(want) = given
                && want != have
            {
                return Err(PipelineError::invalid(
                    &settings.setting(name),
                    format!(
                        "{want} was given but the table '{file}' ({named}) was measured with {have}"
                    ),
                ));
            }
        }
        table.check_graph(graph)?;
        return Ok((table, TableSource::Given(path.clone())));
    }
    // The runtime is probed (once per run) for its version: a cached table measured with
    // another onnxruntime is another key, measured again.
    let timer = settings.timer();
    let version = timer.runtime_version()?;
    let key = settings.key(model_digest, version.as_deref());
    if let Some(dir) = cache_dir {
        let path = dir.join(settings.cache_name());
        if path.is_file()
            && let Ok(table) = LatencyTable::load(&path)
            && table.key == key
            && !table.noisy
            // Measured before fast steps were: measured again (its step would be taken
            // as 1, silently keeping widths the runtime runs slowly).
            && table.groups.iter().all(|g| g.step.is_some())
            && table.check_graph(graph).is_ok()
            && table_groups(&table) == measured_groups(graph, grouped, protected)?
        {
            return Ok((table, TableSource::Cached(path)));
        }
    }
    let table = measure_table_on(
        &timer,
        graph,
        grouped,
        protected,
        key,
        &table_options(),
        progress,
    )?;
    Ok((table, TableSource::Measured))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_is_one_unit_multiples_of_eight_and_the_full_width() {
        assert_eq!(grid(2), [1, 2]);
        assert_eq!(grid(8), [1, 8]);
        assert_eq!(grid(20), [1, 8, 16, 20]);
        assert_eq!(grid(64), [1, 8, 24, 40, 56, 64]);
        assert_eq!(grid(512).len(), 6);
        assert_eq!(grid(512)[5], 512);
    }

    #[test]
    fn the_timed_widths_are_the_grid_and_the_probes_below_a_multiple_of_sixteen() {
        let t = widths_to_time(96, 1);
        assert_eq!(t.points, [1, 8, 32, 56, 88, 96]);
        assert_eq!(t.probes, Some((96, vec![88, 92, 94, 95])));
        assert_eq!(t.timed, [1, 8, 32, 56, 88, 92, 94, 95]);
        // The reference 80 is not a grid point of 90 channels: it joins the points.
        let t = widths_to_time(90, 1);
        assert_eq!(t.points, [1, 8, 32, 56, 80, 88, 90]);
        assert_eq!(t.probes, Some((80, vec![72, 76, 78, 79])));
        assert_eq!(t.timed, [1, 8, 32, 56, 72, 76, 78, 79, 80, 88]);
        let t = widths_to_time(12, 1);
        assert_eq!(t.points, [1, 8, 12]);
        assert_eq!(t.timed, [1, 4, 6, 7, 8]);
        // A unit of several channels (a grouped convolution pruned within its groups): the
        // grid in channels, no probes.
        let t = widths_to_time(6, 4);
        assert_eq!(t.points, [4, 24]);
        assert_eq!(t.probes, None);
        assert_eq!(t.timed, [4]);
    }

    /// A fake ONNX Runtime helper: the full model (index 0 of each set) takes 4 ms, the
    /// narrowed models at indices 3, 4 and 5 of each set take 5 ms (or, `noisy`, alternately
    /// 0.5 ms and 5 ms), the others 1 ms.
    fn fake_stepped_onnxruntime(dir: &Path, noisy: bool) -> PathBuf {
        let fake = dir.join(format!("python-stepped-{noisy}"));
        let slow = if noisy {
            r#"n=$((n + 1)); if [ $((n % 2)) = 0 ]; then echo '{"ms": [0.5]}'; else echo '{"ms": [5.0]}'; fi"#
        } else {
            r#"echo '{"ms": [5.0]}'"#
        };
        std::fs::write(
            &fake,
            format!(
                r#"#!/bin/sh
echo '{{"onnxruntime": "1.0.0"}}'
n=0
while read -r line; do
  case "$line" in
    *'"op":"load"'*) k=$(echo "$line" | grep -o '\.onnx' | wc -l); echo "{{\"loaded\": $k}}" ;;
    *'"model":0,'*) echo '{{"ms": [4.0]}}' ;;
    *'"model":3,'*|*'"model":4,'*|*'"model":5,'*) {slow} ;;
    *) echo '{{"ms": [1.0]}}' ;;
  esac
done
"#
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        fake
    }

    #[test]
    fn the_fast_step_of_a_group_is_measured_from_its_probes_against_their_noise() {
        let dir = tempfile::tempdir().unwrap();
        let graph = fair_zoo::mlp(vec![1, 4, 4], &[24, 12], 3).unwrap();
        let measure_on = |graph: &Graph, noisy: bool| {
            let settings = LatencySettings {
                runtime: LatencyRuntime::OnnxruntimeCpu,
                threads: Some(1),
                python: Some(fake_stepped_onnxruntime(dir.path(), noisy)),
                ..Default::default()
            };
            table_for(
                &settings,
                graph,
                GroupedConvs::WithinGroups,
                &[],
                "sha256:x",
                None,
                &mut |_| {},
            )
            .unwrap()
            .0
        };
        let measure = |noisy: bool| measure_on(&graph, noisy);
        let table = measure(false);
        assert!(!table.noisy);
        // layers.0 (24 channels) times 1, 8, 12, 14, 15, 16: 12, 14 and 15 are slower than
        // 16, 8 is not: a step of 8. layers.2 (12) times 1, 4, 6, 7, 8: the reference 8 is
        // as slow as 6 and 7, and 4 is fast: no step.
        assert_eq!(table.groups[0].step, Some(8));
        assert_eq!(table.groups[1].step, Some(1));
        let probes: Vec<(usize, f64)> = table.groups[0]
            .probes
            .iter()
            .map(|p| (p.width, p.seconds))
            .collect();
        // 4 ms over a speed-up of 4/5 (5 ms): slower than the full model, kept as measured.
        assert_eq!(probes, [(8, 0.001), (12, 0.005), (14, 0.005), (15, 0.005)]);
        // The points stay the grid's, non-decreasing.
        let points: Vec<(usize, f64)> = table.groups[0]
            .points
            .iter()
            .map(|p| (p.width, p.seconds))
            .collect();
        assert_eq!(points, [(1, 0.001), (8, 0.001), (16, 0.001), (24, 0.004)]);
        use fair_analysis::LatencyModel;
        // Width 9 to 15 read as 16; 17 as 24 (the full width).
        assert_eq!(table.cost("layers.0", 12).unwrap(), 0.001 - 0.004);
        assert_eq!(table.groups[0].fast_width(17), 24);
        // The same runtime with the slow widths' rounds spread around the reference: their
        // quartiles overlap it, so no step is measured.
        let noisy = measure(true);
        assert_eq!(noisy.groups[0].step, Some(1));
        assert_eq!(noisy.groups[1].step, Some(1));
        // The table is flagged noisy: layers.2's noisy widths include the point 8.
        assert!(noisy.noisy);
        // Two groups of 24 channels: the noisy widths 12, 14 and 15 are probes only, whose
        // noise decides the step but does not flag the table.
        let probes_only = measure_on(&fair_zoo::mlp(vec![1, 4, 4], &[24, 24], 3).unwrap(), true);
        assert!(probes_only.groups.iter().all(|g| g.step == Some(1)));
        assert!(!probes_only.noisy);
    }

    /// The figures of a set timed over 12 rounds: the full model at `full_ms` (times the
    /// load factor of each round when `full_loaded`), then one model per width of `timed`
    /// at `ms(width)` times the load factor of each round, which varies by up to 3×.
    fn set_of(
        timed: &[usize],
        full_ms: f64,
        full_loaded: bool,
        ms: impl Fn(usize) -> f64,
    ) -> Vec<crate::Latency> {
        let load: Vec<f64> = (0..12).map(|k| 1.0 + (k % 4) as f64 * 0.7).collect();
        let mut times = vec![
            load.iter()
                .map(|f| if full_loaded { full_ms * f } else { full_ms })
                .collect::<Vec<f64>>(),
        ];
        for &w in timed {
            times.push(load.iter().map(|f| ms(w) * f).collect());
        }
        crate::latency::summarize(1, &times, 0.25)
    }

    #[test]
    fn probes_are_judged_by_their_ratio_to_the_reference_whether_it_is_full_or_not() {
        // Widths off a multiple of 8 take 1.1 ms, the reference and 88 take 1 ms and
        // 0.9 ms, in every round times a load that hits them all alike.
        let ms = |slow: f64| {
            move |w: usize| match w {
                96 => 1.0,
                88 => 0.9,
                92 | 94 | 95 => slow,
                _ => 0.5,
            }
        };
        // The reference 96 is the full width: the full model is it (loaded alike).
        let at_full = widths_to_time(96, 1);
        assert_eq!(at_full.probes, Some((96, vec![88, 92, 94, 95])));
        let set = set_of(&at_full.timed, 1.0, true, ms(1.1));
        assert_eq!(step_of(&at_full, 96, &set), 8);
        // The reference 96 is below the full width 100, whose model the load misses: each
        // width's speed-up over the full model spreads 3×, the probes' ratio to 96 not; the
        // same step.
        let below = widths_to_time(100, 1);
        assert_eq!(below.probes, Some((96, vec![88, 92, 94, 95])));
        let set = set_of(&below.timed, 1.2, false, ms(1.1));
        assert!(set[1].speedup.unwrap().relative_iqr() > 0.5);
        assert_eq!(step_of(&below, 100, &set), 8);
        // Probes as fast as the reference: no step, in both cases alike.
        let set = set_of(&at_full.timed, 1.0, true, ms(1.0));
        assert_eq!(step_of(&at_full, 96, &set), 1);
        let set = set_of(&below.timed, 1.2, false, ms(1.0));
        assert_eq!(step_of(&below, 100, &set), 1);
        // Nothing probed (units of several channels): 1.
        let grouped = widths_to_time(6, 4);
        let set = set_of(&grouped.timed, 1.0, true, |_| 2.0);
        assert_eq!(step_of(&grouped, 24, &set), 1);
    }

    #[test]
    fn a_cached_table_measured_before_fast_steps_is_measured_again() {
        let graph = fair_zoo::mlp(vec![1, 4, 4], &[24, 12], 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let settings = LatencySettings {
            runtime: LatencyRuntime::OnnxruntimeCpu,
            threads: Some(1),
            python: Some(fake_onnxruntime(dir.path(), "1.17.0")),
            ..Default::default()
        };
        let lookup = || {
            table_for(
                &settings,
                &graph,
                GroupedConvs::WithinGroups,
                &[],
                "sha256:x",
                Some(dir.path()),
                &mut |_| {},
            )
            .unwrap()
        };
        let (table, source) = lookup();
        assert_eq!(source, TableSource::Measured);
        assert!(table.groups.iter().all(|g| g.step == Some(1)));
        let path = dir.path().join(settings.cache_name());
        table.save(&path).unwrap();
        let (_, source) = lookup();
        assert!(matches!(source, TableSource::Cached(_)), "{source:?}");
        // The same table as an older fair-pruner wrote it: no steps, no probes.
        let mut old = table.clone();
        for g in &mut old.groups {
            g.step = None;
            g.probes.clear();
        }
        old.save(&path).unwrap();
        let (again, source) = lookup();
        assert_eq!(source, TableSource::Measured);
        assert!(again.groups.iter().all(|g| g.step.is_some()));
    }

    #[test]
    fn measured_latencies_are_made_non_decreasing_in_the_width_by_medians() {
        // Already non-decreasing: unchanged.
        assert_eq!(monotone(&[1.0, 2.0, 2.0, 3.0]), [1.0, 2.0, 2.0, 3.0]);
        // One slow outlier at the third width: pooled with the two after it, whose median
        // (0.742) ignores it.
        let got = monotone(&[0.715, 0.728, 4.819, 0.742, 0.781]);
        assert_eq!(got, [0.715, 0.728, 0.781, 0.781, 0.781]);
        // A narrower width measured slower than a wider one: the pair takes its mean (the
        // median of two).
        assert_eq!(monotone(&[2.0, 1.0, 5.0]), [1.5, 1.5, 5.0]);
    }

    #[test]
    fn runtimes_parse_and_the_missing_ones_say_what_is_not_available() {
        assert_eq!("libtorch-cpu".parse(), Ok(LatencyRuntime::LibtorchCpu));
        assert_eq!(
            "onnxruntime-cpu".parse(),
            Ok(LatencyRuntime::OnnxruntimeCpu)
        );
        let e = "tpu".parse::<LatencyRuntime>().unwrap_err();
        assert!(
            e.contains("libtorch-cpu, onnxruntime-cpu, pytorch-cpu or cuda"),
            "{e}"
        );
        let cuda = LatencySettings {
            runtime: LatencyRuntime::Cuda,
            ..Default::default()
        }
        .timer()
        .check_available();
        match cuda {
            Err(e) => assert!(
                !tch::Cuda::is_available()
                    && e.to_string().contains("libtorch sees no CUDA device"),
                "{e}"
            ),
            Ok(()) => assert!(tch::Cuda::is_available()),
        }
        assert!(LatencySettings::default().timer().check_available().is_ok());
    }

    /// The interpreter the ONNX Runtime tests use ([`crate::default_python`]), or `None`
    /// (with a message saying the test is skipped) when it cannot import onnxruntime.
    fn onnxruntime_python() -> Option<std::path::PathBuf> {
        let python = crate::default_python();
        match LatencyTimer::new(LatencyRuntime::OnnxruntimeCpu, &python).check_available() {
            Ok(()) => Some(python),
            Err(e) => {
                eprintln!(
                    "SKIPPED: ONNX Runtime cannot be imported by '{}' (set FAIR_PRUNER_PYTHON to a \
                     python with `pip install onnxruntime numpy` to run this test): {e}",
                    python.display()
                );
                None
            }
        }
    }

    /// Eager PyTorch: a table measured through the helper on the exported `model.py`, keyed
    /// by the `torch` version, and a latency target corrected on it whose candidate is
    /// timed the same way.
    #[test]
    #[ignore = "needs the reference Python with torch and safetensors (cargo xtask test runs it)"]
    fn a_table_measured_on_pytorch_cpu_times_the_exported_model_py() {
        let python = crate::default_python();
        if let Err(e) = LatencyTimer::new(LatencyRuntime::PytorchCpu, &python).check_available() {
            eprintln!(
                "SKIPPED: {} has no torch and safetensors (set FAIR_PRUNER_PYTHON): {e}",
                python.display()
            );
            return;
        }
        let graph = fair_zoo::mlp(vec![1, 4, 4], &[24, 12], 3).unwrap();
        let settings = LatencySettings {
            runtime: LatencyRuntime::PytorchCpu,
            threads: Some(1),
            batch: Some(2),
            python: Some(python.clone()),
            ..Default::default()
        };
        let (table, source) = table_for(
            &settings,
            &graph,
            GroupedConvs::WithinGroups,
            &[],
            "sha256:x",
            None,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(source, TableSource::Measured);
        assert_eq!(table.key.runtime, "pytorch-cpu");
        assert_eq!(settings.cache_name(), "latency-pytorch-cpu-b2-t1.json");
        let out = std::process::Command::new(&python)
            .args(["-c", "import torch; print(torch.__version__)"])
            .output()
            .unwrap();
        assert_eq!(
            table.key.runtime_version,
            String::from_utf8(out.stdout).unwrap().trim()
        );
        assert!(table.full_seconds > 0.0 && table.full_seconds.is_finite());
        table.check_graph(&graph).unwrap();
        // The runtime through Python times models interleaved like the others.
        let model = fair_runtime::Model::new(graph, tch::Device::Cpu, 0).unwrap();
        let timed = settings
            .timer()
            .time(
                &[vec![&model, &model]],
                &|_, i| format!("model {i}"),
                2,
                1,
                &crate::LatencyOptions {
                    min_rounds: 5,
                    max_rounds: 5,
                    ..crate::LatencyOptions::default()
                },
            )
            .unwrap();
        assert_eq!(timed[0].len(), 2);
        assert_eq!(timed[0][1].rounds, 5);
        assert!(timed[0][1].speedup.is_some_and(|s| s.median > 0.0));
    }

    #[test]
    fn a_table_measured_on_onnxruntime_cpu_covers_every_group_under_its_own_key() {
        let Some(python) = onnxruntime_python() else {
            return;
        };
        let graph = fair_zoo::mlp(vec![1, 4, 4], &[24, 12], 3).unwrap();
        let settings = LatencySettings {
            runtime: LatencyRuntime::OnnxruntimeCpu,
            threads: Some(1),
            batch: Some(2),
            python: Some(python),
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let (table, source) = table_for(
            &settings,
            &graph,
            GroupedConvs::WithinGroups,
            &[],
            "sha256:x",
            Some(dir.path()),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(source, TableSource::Measured);
        assert_eq!(table.key.runtime, "onnxruntime-cpu");
        assert_eq!((table.key.batch, table.key.threads), (2, 1));
        assert_eq!(table.key.model_digest, "sha256:x");
        assert_eq!(settings.cache_name(), "latency-onnxruntime-cpu-b2-t1.json");
        let layers: Vec<&str> = table.groups.iter().map(|g| g.layers[0].as_str()).collect();
        assert_eq!(layers, ["layers.0", "layers.2"]);
        let widths: Vec<Vec<usize>> = table
            .groups
            .iter()
            .map(|g| g.points.iter().map(|p| p.width).collect())
            .collect();
        assert_eq!(widths, [vec![1, 8, 16, 24], vec![1, 8, 12]]);
        assert!(table.full_seconds > 0.0 && table.full_seconds.is_finite());
        // The onnxruntime version the interpreter has, recorded in the key.
        let out = std::process::Command::new(settings.python.as_ref().unwrap())
            .args(["-c", "import onnxruntime; print(onnxruntime.__version__)"])
            .output()
            .unwrap();
        let version = String::from_utf8(out.stdout).unwrap();
        assert_eq!(table.key.runtime_version, version.trim());
        assert!(!table.key.runtime_version.is_empty());
        for g in &table.groups {
            let s: Vec<f64> = g.points.iter().map(|p| p.seconds).collect();
            assert!(s.windows(2).all(|w| w[0] <= w[1]), "{s:?}");
            assert_eq!(*s.last().unwrap(), table.full_seconds);
            assert!(s.iter().all(|&x| x > 0.0), "{s:?}");
        }
        table.check_graph(&graph).unwrap();
        // The same settings on libtorch are another key: an ONNX Runtime table in the cache
        // is not taken for theirs.
        let mut cached = table.clone();
        cached.noisy = false;
        cached
            .save(&dir.path().join(settings.cache_name()))
            .unwrap();
        let (again, source) = table_for(
            &settings,
            &graph,
            GroupedConvs::WithinGroups,
            &[],
            "sha256:x",
            Some(dir.path()),
            &mut |_| {},
        )
        .unwrap();
        assert!(matches!(source, TableSource::Cached(_)), "{source:?}");
        assert_eq!(again, cached);
        let on_libtorch = LatencySettings {
            runtime: LatencyRuntime::LibtorchCpu,
            ..settings.clone()
        };
        assert_ne!(on_libtorch.cache_name(), settings.cache_name());
        assert_ne!(on_libtorch.key("sha256:x", None), table.key);
    }

    #[test]
    fn a_runtime_through_a_python_without_its_packages_names_what_to_install() {
        // A Python 3 that sees no site-packages (-S): it cannot import onnxruntime.
        let Ok(out) = std::process::Command::new("python3")
            .args(["-S", "-c", "print(1)"])
            .output()
        else {
            eprintln!("SKIPPED: no python3 on PATH to stand for a python without onnxruntime");
            return;
        };
        assert!(out.status.success());
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("python-without-onnxruntime");
        // -S: no site-packages; PYTHONPATH cleared, so none come back through it.
        std::fs::write(
            &fake,
            "#!/bin/sh\nunset PYTHONPATH\nexec python3 -S \"$@\"\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // Both runtimes timed through Python name their own packages.
        for (runtime, packages, pip) in [
            (
                LatencyRuntime::OnnxruntimeCpu,
                "onnxruntime and numpy",
                "onnxruntime numpy",
            ),
            (
                LatencyRuntime::PytorchCpu,
                "torch and safetensors",
                "torch safetensors",
            ),
        ] {
            let settings = LatencySettings {
                runtime,
                threads: Some(1),
                python: Some(fake.clone()),
                ..Default::default()
            };
            let graph = fair_zoo::mlp(vec![1, 4, 4], &[24, 12], 3).unwrap();
            let e = table_for(
                &settings,
                &graph,
                GroupedConvs::WithinGroups,
                &[],
                "sha256:x",
                None,
                &mut |_| {},
            )
            .unwrap_err()
            .to_string();
            let f = fake.display();
            assert!(
                e.starts_with(&format!(
                    "latency-on: {runtime}: the Python interpreter '{f}' cannot import {packages}: ModuleNotFoundError"
                )),
                "{e}"
            );
            assert!(e.contains(&format!("`{f} -m pip install {pip}`")), "{e}");
            assert!(
                e.contains("`latency-python`") && e.contains("(`latency-on` libtorch-cpu)"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_width_onnx_runtime_cannot_run_is_named_by_its_group() {
        // A fake helper: the first group's set loads and times; the second group's width
        // 1 fails to load.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-python");
        std::fs::write(
            &fake,
            r#"#!/bin/sh
echo '{"onnxruntime": "9.9.9"}'
loads=0
while read -r line; do
  case "$line" in
    *'"op":"load"'*) loads=$((loads + 1))
       if [ $loads = 2 ]; then echo '{"error": "NotImplemented: no kernel", "model": 2}'
       else n=$(echo "$line" | grep -o '\.onnx' | wc -l); echo "{\"loaded\": $n}"; fi ;;
    *) echo '{"ms": [1.0]}' ;;
  esac
done
"#,
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let settings = LatencySettings {
            runtime: LatencyRuntime::OnnxruntimeCpu,
            threads: Some(1),
            python: Some(fake),
            ..Default::default()
        };
        let graph = fair_zoo::mlp(vec![1, 4, 4], &[24, 12], 3).unwrap();
        let mut lines = Vec::new();
        let e = table_for(
            &settings,
            &graph,
            GroupedConvs::WithinGroups,
            &[],
            "sha256:x",
            None,
            &mut |l| lines.push(l),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ONNX Runtime cannot load or run group layers.2 at width 4 (NotImplemented: no kernel)"),
            "{e}"
        );
        // Grid widths and the fast step's probes (`widths_to_time`): 1, 8, 12, 14, 15, 16
        // and 1, 4, 6, 7, 8.
        assert_eq!(
            lines,
            [
                "  group 1/2 (layers.0): 6 widths",
                "  group 2/2 (layers.2): 5 widths"
            ]
        );
    }

    /// A fake ONNX Runtime helper reporting onnxruntime `version`: every set loads, the
    /// reference takes 4 ms and every width 1 ms.
    fn fake_onnxruntime(dir: &Path, version: &str) -> PathBuf {
        let fake = dir.join(format!("python-onnxruntime-{version}"));
        std::fs::write(
            &fake,
            format!(
                r#"#!/bin/sh
echo '{{"onnxruntime": "{version}"}}'
while read -r line; do
  case "$line" in
    *'"op":"load"'*) n=$(echo "$line" | grep -o '\.onnx' | wc -l); echo "{{\"loaded\": $n}}" ;;
    *'"model":0,'*) echo '{{"ms": [4.0]}}' ;;
    *) echo '{{"ms": [1.0]}}' ;;
  esac
done
"#
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        fake
    }

    #[test]
    fn a_table_records_the_onnxruntime_version_and_another_version_measures_again() {
        let dir = tempfile::tempdir().unwrap();
        let graph = fair_zoo::mlp(vec![1, 4, 4], &[24, 12], 3).unwrap();
        let on = |version: &str| LatencySettings {
            runtime: LatencyRuntime::OnnxruntimeCpu,
            threads: Some(1),
            python: Some(fake_onnxruntime(dir.path(), version)),
            ..Default::default()
        };
        let table_for = |s: &LatencySettings| {
            table_for(
                s,
                &graph,
                GroupedConvs::WithinGroups,
                &[],
                "sha256:x",
                Some(dir.path()),
                &mut |_| {},
            )
            .unwrap()
        };
        let (table, source) = table_for(&on("1.17.0"));
        assert_eq!(source, TableSource::Measured);
        assert_eq!(table.key.runtime_version, "1.17.0");
        // The fixed times: every width is 4x faster than the full model.
        assert_eq!(table.full_seconds, 0.004);
        assert_eq!(table.groups[0].points[0].seconds, 0.001);
        assert!(!table.noisy);
        let json = table.to_json_string();
        assert!(json.contains(r#""runtime_version": "1.17.0""#), "{json}");
        table
            .save(&dir.path().join(on("1.17.0").cache_name()))
            .unwrap();
        let (_, source) = table_for(&on("1.17.0"));
        assert!(matches!(source, TableSource::Cached(_)), "{source:?}");
        let (again, source) = table_for(&on("1.20.1"));
        assert_eq!(source, TableSource::Measured);
        assert_eq!(again.key.runtime_version, "1.20.1");
    }

    /// A one-group table for the MLP 1x4x4 → 24 → 12 → 3 measured on `runtime` for the model
    /// `digest`, with batch 1 and 2 threads, written into `dir`.
    fn given_table(dir: &Path, runtime: &str, digest: &str) -> PathBuf {
        let json = serde_json::json!({
            "format": "fair-pruner-latency-table/1",
            "key": {"model_digest": digest, "runtime": runtime, "threads": 2, "batch": 1},
            "full_seconds": 0.010,
            "groups": [
                {"layers": ["layers.0"], "width": 24,
                 "points": [{"width": 8, "seconds": 0.008}, {"width": 24, "seconds": 0.010}]},
                {"layers": ["layers.2"], "width": 12,
                 "points": [{"width": 8, "seconds": 0.009}, {"width": 12, "seconds": 0.010}]}
            ]
        });
        let path = dir.join("table.json");
        std::fs::write(&path, json.to_string()).unwrap();
        path
    }

    #[test]
    fn errors_about_a_given_table_name_the_setting_that_gave_it() {
        let graph = fair_zoo::mlp(vec![1, 4, 4], &[24, 12], 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = given_table(dir.path(), "my-device", "sha256:other");
        let file = path.display().to_string();
        let error = |settings: &LatencySettings| {
            let e = table_for(
                settings,
                &graph,
                GroupedConvs::WithinGroups,
                &[],
                "sha256:x",
                None,
                &mut |_| {},
            )
            .unwrap_err();
            (e.to_string(), crate::cli_text(&e))
        };
        let flag = LatencySettings {
            table: Some(path.clone()),
            ..Default::default()
        };
        let (text, cli) = error(&flag);
        assert!(text.starts_with(&format!("latency-table: '{file}' was measured for the model sha256:other, not this one (sha256:x)")), "{text}");
        assert!(cli.starts_with("--latency-table: "), "{cli}");
        let config = LatencySettings {
            table_from_config: true,
            ..flag.clone()
        };
        let (text, cli) = error(&config);
        let by_config =
            format!("[prune] latency_table: '{file}' was measured for the model sha256:other");
        assert!(text.starts_with(&by_config), "{text}");
        assert!(cli.starts_with(&by_config), "{cli}");
        assert!(!cli.contains("--latency-table"), "{cli}");
        // A batch that is not the table's names the table's setting too.
        let path = given_table(dir.path(), "my-device", "");
        let batch = |from_config| LatencySettings {
            batch: Some(4),
            table: Some(path.clone()),
            table_from_config: from_config,
            ..Default::default()
        };
        let (_, cli) = error(&batch(false));
        assert_eq!(
            cli,
            format!(
                "--latency-batch: 4 was given but the table '{file}' (--latency-table) was measured with 1"
            )
        );
        let (_, cli) = error(&batch(true));
        assert_eq!(
            cli,
            format!(
                "--latency-batch: 4 was given but the table '{file}' ([prune] latency_table) was measured with 1"
            )
        );
        // A batch, threads or runtime a config gave names its key.
        let (_, cli) = error(&LatencySettings {
            from_config: vec!["latency-batch".into()],
            ..batch(true)
        });
        assert_eq!(
            cli,
            format!(
                "[prune] latency_batch: 4 was given but the table '{file}' ([prune] latency_table) was measured with 1"
            )
        );
        let (_, cli) = error(&LatencySettings {
            batch: None,
            threads: Some(3),
            from_config: vec!["latency-threads".into()],
            ..batch(false)
        });
        assert!(
            cli.starts_with("[prune] latency_threads: 3 was given but the table"),
            "{cli}"
        );
        let on = |from_config: Vec<String>| LatencySettings {
            runtime: LatencyRuntime::OnnxruntimeCpu,
            runtime_given: true,
            from_config,
            ..batch(false)
        };
        let (_, cli) = error(&on(vec!["latency-on".into()]));
        assert_eq!(
            cli,
            format!(
                "[prune] latency_on: onnxruntime-cpu was given but the table '{file}' (--latency-table) was measured on my-device; \
                 leave out [prune] latency_on to use the table as it is, or leave out the table to measure one on onnxruntime-cpu"
            )
        );
        let (_, cli) = error(&on(Vec::new()));
        assert!(
            cli.starts_with("--latency-on: onnxruntime-cpu was given"),
            "{cli}"
        );
        assert!(cli.contains("leave out --latency-on to use"), "{cli}");
    }

    #[test]
    fn a_given_table_of_another_runtime_than_the_one_chosen_is_refused() {
        let graph = fair_zoo::mlp(vec![1, 4, 4], &[24, 12], 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = given_table(dir.path(), "my-device", "");
        let file = path.display().to_string();
        let settings = |runtime, given| LatencySettings {
            runtime,
            runtime_given: given,
            table: Some(path.clone()),
            ..Default::default()
        };
        let table_for = |s: &LatencySettings| {
            table_for(
                s,
                &graph,
                GroupedConvs::WithinGroups,
                &[],
                "sha256:x",
                None,
                &mut |_| {},
            )
        };
        // Chosen: refused, naming both runtimes and what to do.
        let e = table_for(&settings(LatencyRuntime::LibtorchCpu, true)).unwrap_err();
        assert_eq!(
            crate::cli_text(&e),
            format!(
                "--latency-on: libtorch-cpu was given but the table '{file}' (--latency-table) was measured on my-device; \
                 leave out --latency-on to use the table as it is, or leave out the table to measure one on libtorch-cpu"
            )
        );
        // Left at its default: the table is used as it is.
        let (table, source) = table_for(&settings(LatencyRuntime::LibtorchCpu, false)).unwrap();
        assert_eq!(source, TableSource::Given(path.clone()));
        assert_eq!(source.label(), "given");
        assert_eq!(table.key.runtime, "my-device");
        // The runtime the table was measured on, chosen: accepted.
        let path = given_table(dir.path(), "onnxruntime-cpu", "");
        let (table, _) = table_for(&LatencySettings {
            table: Some(path),
            ..settings(LatencyRuntime::OnnxruntimeCpu, true)
        })
        .unwrap();
        assert_eq!(table.key.runtime, "onnxruntime-cpu");
    }

    #[test]
    fn sources_and_the_measuring_line_are_named_once() {
        assert_eq!(TableSource::Measured.label(), "measured");
        assert_eq!(
            TableSource::Cached(PathBuf::from("c.json")).label(),
            "cached"
        );
        let s = LatencySettings {
            runtime: LatencyRuntime::OnnxruntimeCpu,
            batch: Some(8),
            threads: Some(3),
            ..Default::default()
        };
        assert_eq!(
            s.announcement().as_deref(),
            Some("latency table on onnxruntime-cpu (batch 8, 3 threads)")
        );
        let given = LatencySettings {
            table: Some(PathBuf::from("t.json")),
            ..s
        };
        assert_eq!(given.announcement(), None);
        // libtorch CPU by default says what it is and how to time where the export runs.
        let default = LatencySettings::default();
        assert_eq!(default.runtime, LatencyRuntime::LibtorchCpu);
        let line = default.announcement().unwrap();
        assert!(
            line.starts_with("latency table on libtorch-cpu (batch 1, ")
                && line.contains("--latency-on pytorch-cpu"),
            "{line}"
        );
        let chosen = LatencySettings {
            runtime_given: true,
            ..LatencySettings::default()
        };
        assert!(
            !chosen.announcement().unwrap().contains("pytorch-cpu"),
            "a runtime the user chose needs no note"
        );
    }

    #[test]
    fn a_measured_table_covers_every_prunable_group_and_is_cached_by_key() {
        let graph = fair_zoo::mlp(vec![1, 4, 4], &[24, 12], 3).unwrap();
        let settings = LatencySettings {
            threads: Some(1),
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        // The table of `digest` with `protected` layers, from the cache in `dir` or measured.
        let lookup = |digest: &str, protected: &[String]| {
            table_for(
                &settings,
                &graph,
                GroupedConvs::WithinGroups,
                protected,
                digest,
                Some(dir.path()),
                &mut |_| {},
            )
            .unwrap()
        };
        let (table, source) = lookup("sha256:x", &[]);
        assert_eq!(source, TableSource::Measured);
        assert_eq!(table.key, settings.key("sha256:x", None));
        assert_eq!(table.key.runtime_version, "");
        let widths: Vec<Vec<usize>> = table
            .groups
            .iter()
            .map(|g| g.points.iter().map(|p| p.width).collect())
            .collect();
        assert_eq!(widths, [vec![1, 8, 16, 24], vec![1, 8, 12]]);
        assert!(table.full_seconds > 0.0);
        // Cached under its key: read back, not measured again (unless flagged noisy, which
        // a loaded machine may do: the flag is the caller's to test below).
        let mut table = table;
        table.noisy = false;
        table.save(&dir.path().join(settings.cache_name())).unwrap();
        let (again, source) = lookup("sha256:x", &[]);
        assert!(matches!(source, TableSource::Cached(_)), "{source:?}");
        assert_eq!(again, table);
        // Another model digest is another key: measured again.
        let (_, source) = lookup("sha256:y", &[]);
        assert_eq!(source, TableSource::Measured);
        // Another protected layer: another set of groups, measured again.
        let protected = vec![table.groups[0].layers[0].clone()];
        let (other, source) = lookup("sha256:x", &protected);
        assert_eq!(source, TableSource::Measured);
        assert_eq!(other.groups.len(), table.groups.len() - 1);
        // A cached table flagged noisy is measured again, not trusted for ever.
        let mut noisy = table.clone();
        noisy.noisy = true;
        noisy.save(&dir.path().join(settings.cache_name())).unwrap();
        let (_, source) = lookup("sha256:x", &[]);
        assert_eq!(source, TableSource::Measured);
    }
}
