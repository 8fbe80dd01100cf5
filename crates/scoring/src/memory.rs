//! The U-Score's memory: what it holds, how much, and how it is split into passes that fit
//! a budget ([`UScoreSettings::max_memory`](crate::UScoreSettings::max_memory)).
//!
//! The U-Score keeps, for every unit, the sorted projections of its output for every
//! compared class: `P × Σₖ nₖ` f32 values per unit (P projections for a sliced conv layer,
//! 1 for a linear layer or a pooled conv), so all layers together take
//! `4 · Σₗ uₗ · Pₗ · Σₖ nₖ` bytes. When one pass does not fit a budget, [`forward_once`]
//! still runs each class's eval-mode forward pass once with every analysis point tapped: the
//! summaries of a prefix of the (layer, unit range) pieces stay in memory, the rest go to a
//! temporary file, and the class-pair distances then run piece by piece in passes that fit
//! (the forward passes are split into groups, each re-run up to its last layer, only where
//! one forward pack's taps of all layers do not fit together). Where no such file can be made,
//! [`plan`] splits the pieces into chunks; each chunk runs its own eval-mode forward pass per
//! class, stopping after the chunk's last analysis point, and is reduced to scores before the
//! next chunk starts. Either way the arithmetic on every unit is the same as in one pass
//! (every layer is projected whole, its rows sorted one by one, the file holds the f32
//! values bit for bit), so the scores are identical.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use fair_ir::Graph;
use serde::{Deserialize, Serialize};

use crate::error::ScoringError;
use crate::layers::PrunableLayer;

const F32: u64 = 4;

/// The share of a budget left for what the estimate does not count — libtorch's runtime and
/// the allocator's slack: R-Score plans fill at most `1 − 1/RUNTIME_SHARE` of it, U-Score
/// plans [`usable`] bytes (measured: the runtime takes ≈ 0.3 GiB next to a 4 GiB plan).
pub const RUNTIME_SHARE: u64 = 10;

/// The share of a U-Score budget left free for the blocks the allocator keeps for reuse
/// during the forward passes ([`fair_runtime::ReuseFreedBlocks`], whose slack it is): plans
/// also leave a `1/REUSE_SHARE` of it.
pub const REUSE_SHARE: u64 = 20;

/// The bytes a U-Score plan may fill under `budget`: all of it less a [`RUNTIME_SHARE`]th for
/// libtorch's runtime and a [`REUSE_SHARE`]th for the allocator's free blocks.
///
/// ```
/// use fair_scoring::memory::{budget_for, usable};
/// assert_eq!(usable(1000), 850);
/// let b = budget_for(12_345);
/// assert!(usable(b) >= 12_345 && usable(b - 1) < 12_345);
/// ```
pub fn usable(budget: u64) -> u64 {
    // One floor over both shares (3/20 of the budget), so a larger budget never leaves less.
    let parts = RUNTIME_SHARE * REUSE_SHARE;
    let aside = u128::from(budget) * u128::from(RUNTIME_SHARE + REUSE_SHARE) / u128::from(parts);
    budget - aside as u64
}

/// The smallest budget whose [`usable`] bytes hold `room` (saturating at `u64::MAX`): for
/// choosing bounds.
pub fn budget_for(room: u64) -> u64 {
    let parts = RUNTIME_SHARE * REUSE_SHARE;
    let mut b = (u128::from(room) * u128::from(parts)
        / u128::from(parts - RUNTIME_SHARE - REUSE_SHARE))
    .min(u128::from(u64::MAX)) as u64;
    while usable(b) < room && b < u64::MAX {
        b += 1;
    }
    while b > 0 && usable(b - 1) >= room {
        b -= 1;
    }
    b
}

/// A size in bytes, written like `4GiB`, `512MiB`, `8G` or `1500000` (see [`FromStr`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    /// Parses a number (decimals allowed) with an optional unit: `B`; `KiB`, `MiB`, `GiB`,
    /// `TiB` and the short `K`, `M`, `G`, `T` (powers of 1024); `KB`, `MB`, `GB`, `TB`
    /// (powers of 1000). Units are case-insensitive.
    fn from_str(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let bad = || {
            format!(
                "'{text}' is not a size: expected a number with an optional unit, e.g. 4GiB, 512MiB, 8G"
            )
        };
        let value: f64 = number.parse().map_err(|_| bad())?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kib" => 1 << 10,
            "m" | "mib" => 1 << 20,
            "g" | "gib" => 1 << 30,
            "t" | "tib" => 1 << 40,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            "tb" => 1_000_000_000_000,
            _ => return Err(bad()),
        };
        let bytes = value * scale as f64;
        if bytes.is_nan() || bytes < 1.0 {
            return Err(format!(
                "'{text}' is out of range: expected at least 1 byte"
            ));
        }
        if bytes >= u64::MAX as f64 {
            return Err(format!(
                "'{text}' is out of range: expected at most 16EiB (2^64 bytes), or none for no bound"
            ));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl TryFrom<String> for ByteSize {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<ByteSize> for String {
    fn from(b: ByteSize) -> String {
        b.to_string()
    }
}

impl fmt::Display for ByteSize {
    /// Binary units with up to two decimals (`4GiB`, `1.5MiB`, `812B`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0 as f64;
        let mut u = 0;
        while v >= 1024.0 && u + 1 < units.len() {
            v /= 1024.0;
            u += 1;
        }
        let text = format!("{v:.2}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        write!(f, "{text}{}", units[u])
    }
}

/// A memory bound as users write it: a size, or `none` (also `unbounded`) for no bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum MaxMemory {
    /// No bound: one pass over all layers.
    Unbounded,
    /// At most this much.
    Limit(ByteSize),
}

impl MaxMemory {
    /// The bound in bytes (`None` when unbounded).
    pub fn bytes(self) -> Option<ByteSize> {
        match self {
            MaxMemory::Unbounded => None,
            MaxMemory::Limit(b) => Some(b),
        }
    }
}

impl FromStr for MaxMemory {
    type Err = String;

    /// `none` or `unbounded` (any case), else a [`ByteSize`].
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "none" | "unbounded" => Ok(MaxMemory::Unbounded),
            _ => text
                .parse()
                .map(MaxMemory::Limit)
                .map_err(|e| format!("{e}, or none")),
        }
    }
}

impl TryFrom<String> for MaxMemory {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<MaxMemory> for String {
    fn from(m: MaxMemory) -> String {
        match m {
            MaxMemory::Unbounded => "none".into(),
            MaxMemory::Limit(b) => b.to_string(),
        }
    }
}

/// The default U-Score budget: 80% of the machine's available memory (Linux
/// `MemAvailable`), or `None` (unbounded) where that is unknown.
pub fn default_max_memory() -> Option<ByteSize> {
    fair_runtime::available_memory().map(|b| ByteSize(b / 5 * 4))
}

/// What one layer of the U-Score holds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerMemory {
    /// One unit's sorted projections over all compared classes: `4 · P · Σₖ nₖ`.
    pub per_unit: u64,
    /// The layer's tapped output for one forward pass over a pack of classes ([`packs`]):
    /// `4 · m · numel(analysis output)`, `m` the most samples of a pack.
    pub tap: u64,
    /// Working memory while one class's rows of the tap are reduced: room for a copy of
    /// them (`4 · n · numel`), the projections, their unit-major copy and the sorted rows
    /// (`3 · 4 · n · u · P`), `n` the largest class. Not counted: the copy of a pack's
    /// selected inputs, alive through its forward pass (`4 · m · numel(input)`, at most a
    /// batch size's share of the calibration data, whose bytes the plan's fixed part
    /// counts once), and the batches a pack's tap is concatenated from, alive next to it
    /// until the concatenation ends.
    pub work: u64,
    /// Position of the analysis node in the graph (a pass runs up to it).
    pub position: usize,
}

/// Units `units` of layer `layer` (an index into the scored layers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// Index of the layer in the scored list.
    pub layer: usize,
    /// Its units scored in this chunk.
    pub units: Range<usize>,
}

/// One pass of the U-Score: a forward pass per class up to the last analysis point of its
/// slices, then the distances of those units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The units scored in this pass, in graph order.
    pub slices: Vec<Slice>,
    /// Estimated peak bytes of this pass (summaries, taps, forward activations, work).
    pub peak: u64,
}

/// How the U-Score is run: its chunks and the memory estimates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    /// The passes, in order; one when everything fits.
    pub chunks: Vec<Chunk>,
    /// Estimated peak of the U-Score's own data in one pass over all layers.
    pub unbounded: u64,
    /// Bytes outside the budget's control, already subtracted from it: the model's
    /// parameters and the calibration inputs.
    pub fixed: u64,
}

impl MemoryPlan {
    /// The largest chunk's estimated peak.
    pub fn peak(&self) -> u64 {
        self.chunks.iter().map(|c| c.peak).max().unwrap_or(0)
    }
}

/// Numbers (f32 elements, not bytes) per sample of the largest set of tensors alive at once
/// in an eval-mode pass over
/// nodes `0..end`, freeing each value after its last reader (as [`fair_runtime::Model`]
/// does): for every prefix length, the running peak.
pub(crate) fn forward_peaks(graph: &Graph) -> Vec<u64> {
    let nodes = graph.nodes();
    let numel = |i: usize| graph.shape_at(i).iter().product::<usize>() as u64;
    let mut last = vec![usize::MAX; nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        for name in &node.inputs {
            if let Ok(j) = graph.position(name) {
                last[j] = i;
            }
        }
    }
    let mut live = 0u64;
    let mut peak = 0u64;
    let mut peaks = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        live += numel(i);
        peak = peak.max(live);
        peaks.push(peak);
        for name in &node.inputs {
            if let Ok(j) = graph.position(name)
                && last[j] == i
            {
                live -= numel(j);
            }
        }
    }
    peaks
}

/// Consecutive classes packed into one forward pass each, for `samples[k]` samples of class
/// `k` and forward batches of `batch_size`: ranges of classes whose samples total at most
/// `batch_size` (one batch), or one class alone where it has more (run in several batches).
///
/// ```
/// use fair_scoring::memory::packs;
/// assert_eq!(packs(&[2, 1, 5, 3, 1, 1, 4], 3), vec![0..2, 2..3, 3..4, 4..6, 6..7]);
/// assert_eq!(packs(&[8; 4], 256), vec![0..4]);
/// assert_eq!(packs(&[2, 2], 1), vec![0..1, 1..2]);
/// ```
pub fn packs(samples: &[usize], batch_size: usize) -> Vec<Range<usize>> {
    let mut packs: Vec<Range<usize>> = Vec::new();
    let mut total = 0usize;
    for (k, &n) in samples.iter().enumerate() {
        match packs.last_mut() {
            Some(p) if total.saturating_add(n) <= batch_size => {
                p.end = k + 1;
                total += n;
            }
            _ => {
                packs.push(k..k + 1);
                total = n;
            }
        }
    }
    packs
}

/// The most samples one forward pass of [`packs`] holds (0 without classes).
pub fn largest_pack(samples: &[usize], batch_size: usize) -> usize {
    packs(samples, batch_size)
        .into_iter()
        .map(|p| samples[p].iter().sum::<usize>())
        .max()
        .unwrap_or(0)
}

/// The memory of each scored layer, for `samples[k]` samples of each compared class,
/// `projections[l]` projections of layer `l` (1 for pooled or linear layers) and forward
/// passes over the [`packs`] of forward batches of `batch_size` samples.
pub fn layer_memory(
    graph: &Graph,
    layers: &[PrunableLayer],
    projections: &[usize],
    samples: &[usize],
    batch_size: usize,
) -> Result<Vec<LayerMemory>, ScoringError> {
    let total = samples
        .iter()
        .fold(0u64, |a, &n| a.saturating_add(n as u64));
    let n = samples.iter().copied().max().unwrap_or(0) as u64;
    let pack = largest_pack(samples, batch_size) as u64;
    layers
        .iter()
        .zip(projections)
        .map(|(layer, &p)| {
            let position = graph
                .position(&layer.analysis)
                .map_err(fair_runtime::RuntimeError::from)?;
            let numel = graph.shape_at(position).iter().product::<usize>() as u64;
            let p = p as u64;
            let u = layer.units as u64;
            // Saturating: absurd settings give sizes no budget holds, never an overflow.
            let times = |xs: &[u64]| xs.iter().fold(1u64, |a, &x| a.saturating_mul(x));
            Ok(LayerMemory {
                per_unit: times(&[F32, p, total]),
                tap: times(&[F32, pack, numel]),
                work: times(&[F32, n, numel]).saturating_add(times(&[3, F32, n, u, p])),
                position,
            })
        })
        .collect()
}

/// Checks, before any data is loaded, that the U-Score's memory bound can hold at least the
/// model's parameters next to libtorch's runtime share: the cheap half of the check
/// [`plan`] makes once the calibration data is known. `None` (unbounded) always passes.
///
/// ```
/// use fair_scoring::{ByteSize, check_memory_bound};
/// let graph = fair_zoo::build("mlp", &[1, 28, 28], 10)?;
/// assert!(check_memory_bound(&graph, Some(ByteSize(1))).is_err());
/// assert!(check_memory_bound(&graph, Some(ByteSize(1 << 30))).is_ok());
/// assert!(check_memory_bound(&graph, None).is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn check_memory_bound(graph: &Graph, bound: Option<ByteSize>) -> Result<(), ScoringError> {
    let Some(ByteSize(budget)) = bound else {
        return Ok(());
    };
    let params = F32 * graph.param_count() as u64;
    if usable(budget) < params {
        return Err(ScoringError::Setting {
            name: "max-memory",
            detail: format!(
                "{} does not even hold the model's parameters ({}) next to libtorch's runtime \
                 and the allocator's free blocks (1/{RUNTIME_SHARE} and 1/{REUSE_SHARE} of the \
                 bound); checked before loading any data",
                ByteSize(budget),
                ByteSize(params)
            ),
        });
    }
    Ok(())
}

/// Splits the U-Score of `layers` into passes whose estimated peak fits the [`usable`] bytes
/// of `budget` (`None`: one pass). `batch` is the forward batch (at most the largest of the [`packs`]), `fixed`
/// the bytes already taken by the model and the calibration data (subtracted from the
/// budget). A layer that does not fit is split by units; a budget too small for even one
/// unit of a layer is an error naming the layer and the size it needs.
pub fn plan(
    graph: &Graph,
    layers: &[PrunableLayer],
    memory: &[LayerMemory],
    batch: usize,
    fixed: u64,
    budget: Option<u64>,
) -> Result<MemoryPlan, ScoringError> {
    let peaks = forward_peaks(graph);
    let forward = |end: usize| (F32 * batch as u64).saturating_mul(peaks[end]);
    let mut order: Vec<usize> = (0..layers.len()).collect();
    order.sort_by_key(|&l| (memory[l].position, l));

    // The peak of a pass holding `held` summary bytes over the layers `ls`.
    // (Saturating throughout: absurd settings give a peak no budget holds.)
    let peak_of = |held: u64, ls: &[usize]| {
        let taps = ls
            .iter()
            .fold(0u64, |a, &l| a.saturating_add(memory[l].tap));
        let work = ls.iter().map(|&l| memory[l].work).max().unwrap_or(0);
        let end = ls.iter().map(|&l| memory[l].position).max().unwrap_or(0);
        held.saturating_add(taps)
            .saturating_add(work)
            .saturating_add(forward(end))
    };
    let unbounded = peak_of(
        order.iter().fold(0u64, |a, &l| {
            a.saturating_add(memory[l].per_unit.saturating_mul(layers[l].units as u64))
        }),
        &order,
    );
    let Some(budget) = budget else {
        return Ok(MemoryPlan {
            chunks: vec![Chunk {
                slices: order
                    .iter()
                    .map(|&l| Slice {
                        layer: l,
                        units: 0..layers[l].units,
                    })
                    .collect(),
                peak: unbounded,
            }],
            unbounded,
            fixed,
        });
    };
    let room = usable(budget)
        .checked_sub(fixed)
        .ok_or_else(|| ScoringError::Setting {
            name: "max-memory",
            detail: format!(
                "{} does not even hold the model's parameters and the calibration inputs ({}) \
                 next to libtorch's runtime and the allocator's free blocks (1/{RUNTIME_SHARE} \
                 and 1/{REUSE_SHARE} of the bound)",
                ByteSize(budget),
                ByteSize(fixed)
            ),
        })?;

    let mut chunks = Vec::new();
    let (mut slices, mut ls, mut held) = (Vec::<Slice>::new(), Vec::<usize>::new(), 0u64);
    for &l in &order {
        let mut start = 0;
        let units = layers[l].units;
        while start < units {
            let mut with = ls.clone();
            with.push(l);
            // Units of `l` that fit next to what the chunk holds.
            let base = peak_of(held, &with);
            let fit = if base >= room {
                0
            } else {
                (((room - base) / memory[l].per_unit.max(1)) as usize).min(units - start)
            };
            if fit == 0 {
                if slices.is_empty() {
                    return Err(ScoringError::Setting {
                        name: "max-memory",
                        detail: format!(
                            "{} is too small for the U-Score of layer '{}': one unit needs about {} \
                             next to the model and calibration data ({}); raise `max-memory`, or \
                             lower `per-class`, `max-classes` or `projections`",
                            ByteSize(budget),
                            layers[l].name,
                            ByteSize(base.saturating_add(memory[l].per_unit)),
                            ByteSize(fixed)
                        ),
                    });
                }
                chunks.push(Chunk {
                    slices: std::mem::take(&mut slices),
                    peak: peak_of(held, &ls),
                });
                ls.clear();
                held = 0;
                continue;
            }
            slices.push(Slice {
                layer: l,
                units: start..start + fit,
            });
            ls = with;
            held = held.saturating_add(memory[l].per_unit.saturating_mul(fit as u64));
            start += fit;
        }
    }
    if !slices.is_empty() {
        chunks.push(Chunk {
            slices,
            peak: peak_of(held, &ls),
        });
    }
    Ok(MemoryPlan {
        chunks,
        unbounded,
        fixed,
    })
}

/// The U-Score under a bound with each class's forward pass run once ([`forward_once`]):
/// every layer is summarised as its forward pass goes, the summaries that do not fit stay in
/// a temporary file, and the class-pair distances then run piece by piece.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardOnce {
    /// The forward passes over every class: groups of scored layers (indices, graph order)
    /// whose taps of one forward pack ([`packs`]) fit together, each pass stopping after its group's last analysis
    /// point. One group, i.e. one forward pass per pack, unless one forward pack's taps of all
    /// layers do not fit next to each other.
    pub forwards: Vec<Vec<usize>>,
    /// The pieces whose summaries stay in memory from the forward passes to their
    /// distances (a prefix in graph order; may be empty).
    pub resident: Vec<Slice>,
    /// The pieces whose summaries are written to the spill file, in the passes of
    /// distances that read them back (each `peak` is the summaries it holds).
    pub spilled: Vec<Chunk>,
    /// Bytes of the spill file: the summaries of [`ForwardOnce::spilled`].
    pub spill_bytes: u64,
    /// Estimated peak of the forward passes: the resident summaries, then per class the
    /// taps, the largest reduction and the forward activations of the largest group.
    pub forward_peak: u64,
}

impl ForwardOnce {
    /// The estimated peak of the run: the forward passes' or the largest pass of distances'.
    pub fn peak(&self) -> u64 {
        self.spilled
            .iter()
            .map(|c| c.peak)
            .fold(self.forward_peak, u64::max)
    }
}

/// The plan that runs each class's forward pass once under the bound `budget`, for a run
/// whose [`plan`] (same arguments) needed several passes: `None` without a bound or when
/// one pass fits. Everything [`plan`] fits, this fits too: a forward group needs a layer's
/// taps, reduction and forward activations (as [`plan`]'s pass of that layer alone, without
/// its summaries), a pass of distances only its summaries. The resident summaries take what
/// the largest forward group leaves of the room; the rest is spilled.
pub fn forward_once(
    graph: &Graph,
    layers: &[PrunableLayer],
    memory: &[LayerMemory],
    batch: usize,
    fixed: u64,
    budget: Option<u64>,
) -> Option<ForwardOnce> {
    let budget = budget?;
    let room = usable(budget).checked_sub(fixed)?;
    let peaks = forward_peaks(graph);
    let forward = |end: usize| (F32 * batch as u64).saturating_mul(peaks[end]);
    let mut order: Vec<usize> = (0..layers.len()).collect();
    order.sort_by_key(|&l| (memory[l].position, l));
    // One class's working memory over the layers `ls`: their taps, the largest reduction
    // and the forward activations up to the last of them.
    let cost = |ls: &[usize]| {
        let taps = ls
            .iter()
            .fold(0u64, |a, &l| a.saturating_add(memory[l].tap));
        let work = ls.iter().map(|&l| memory[l].work).max().unwrap_or(0);
        let end = ls.iter().map(|&l| memory[l].position).max().unwrap_or(0);
        taps.saturating_add(work).saturating_add(forward(end))
    };
    let mut forwards: Vec<Vec<usize>> = Vec::new();
    for &l in &order {
        match forwards.last_mut() {
            Some(g) if cost(&[g.as_slice(), &[l]].concat()) <= room => g.push(l),
            _ => forwards.push(vec![l]),
        }
    }
    let working = forwards.iter().map(|g| cost(g)).max().unwrap_or(0);
    let held: u64 = order.iter().fold(0u64, |a, &l| {
        a.saturating_add(memory[l].per_unit.saturating_mul(layers[l].units as u64))
    });
    if forwards.len() == 1 && held.saturating_add(working) <= room {
        return None;
    }
    // Pieces in graph order: the first `resident_room` bytes stay in memory, the rest are
    // packed into passes of distances of at most `room` bytes each.
    let resident_room = room.saturating_sub(working);
    let (mut resident, mut resident_bytes) = (Vec::new(), 0u64);
    let mut spilled: Vec<Chunk> = Vec::new();
    let mut spill_bytes = 0u64;
    for &l in &order {
        let units = layers[l].units;
        let per_unit = memory[l].per_unit.max(1);
        let mut start = 0;
        if spilled.is_empty() {
            let fit = (((resident_room - resident_bytes) / per_unit) as usize).min(units);
            if fit > 0 {
                resident.push(Slice {
                    layer: l,
                    units: 0..fit,
                });
                resident_bytes += per_unit * fit as u64;
                start = fit;
            }
        }
        while start < units {
            let free = match spilled.last() {
                Some(c) => room - c.peak,
                None => 0,
            };
            let fit = ((free / per_unit) as usize).min(units - start);
            if fit == 0 {
                spilled.push(Chunk {
                    slices: Vec::new(),
                    peak: 0,
                });
                if room < per_unit {
                    // Not reached after `plan` succeeded: it holds a unit next to more.
                    return None;
                }
                continue;
            }
            let c = spilled.last_mut().expect("a pass was pushed");
            c.slices.push(Slice {
                layer: l,
                units: start..start + fit,
            });
            c.peak += per_unit * fit as u64;
            spill_bytes += per_unit * fit as u64;
            start += fit;
        }
    }
    Some(ForwardOnce {
        forwards,
        resident,
        spilled,
        spill_bytes,
        forward_peak: resident_bytes.saturating_add(working),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_grows_with_the_budget_and_budget_for_is_its_smallest_inverse() {
        let mut last = 0;
        for b in (0..5_000u64).chain(u64::MAX - 40..u64::MAX) {
            let u = usable(b);
            assert!(u <= b && u >= b - b / 6, "{b}: {u}");
            if b > 0 && b < 5_000 {
                assert!(u >= last, "usable({b}) = {u} < usable({}) = {last}", b - 1);
            }
            last = u;
        }
        // 15% aside: a tenth for the runtime, a twentieth for the allocator.
        assert_eq!(usable(1 << 30), (1 << 30) - (3 << 30) / 20);
        for room in (0..3_000u64).chain([1 << 40, u64::MAX / 2]) {
            let b = budget_for(room);
            assert!(usable(b) >= room, "{room}: {b}");
            assert!(
                b == 0 || usable(b - 1) < room,
                "{room}: {b} is not the smallest"
            );
        }
        assert_eq!(budget_for(u64::MAX), u64::MAX);
    }

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        let p = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(p("4GiB"), Ok(4 << 30));
        assert_eq!(p("4g"), Ok(4 << 30));
        assert_eq!(p("512 MiB"), Ok(512 << 20));
        assert_eq!(p("1.5K"), Ok(1536));
        assert_eq!(p("2GB"), Ok(2_000_000_000));
        assert_eq!(p("1000"), Ok(1000));
        for bad in ["", "GiB", "4 parsecs", "-1G", "0", "1e3"] {
            assert!(p(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(ByteSize(4 << 30).to_string(), "4GiB");
        assert_eq!(ByteSize(1536).to_string(), "1.5KiB");
        assert_eq!(ByteSize(812).to_string(), "812B");
        assert_eq!("None".parse::<MaxMemory>(), Ok(MaxMemory::Unbounded));
        assert_eq!(
            "2GiB".parse::<MaxMemory>(),
            Ok(MaxMemory::Limit(ByteSize(2 << 30)))
        );
        assert!("lots".parse::<MaxMemory>().unwrap_err().contains("or none"));
    }
}
