//! U-Score: how well each unit separates the classes (max over class pairs of the
//! Wasserstein-1 distance between the unit's output distributions).

use fair_runtime::{Mode, Model};
use fair_stats::certified::{Quantizer, certified_max};
use fair_stats::{PairMax, W1, max_pair_distance, random_directions};
use ndarray::{Array3, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::calibration::Calibration;
use crate::error::{ScoringError, torch};
use crate::layers::AnalysisPoint;
use crate::layers::PrunableLayer;
use crate::memory::{self, ByteSize, Slice};
use crate::progress::Progress;

/// How a conv channel's output distribution is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ConvDistance {
    /// Each sample's channel map is a point in R^(H·W); sliced W1 over
    /// [`UScoreSettings::projections`] random unit directions (seeded, shared by all
    /// channels and class pairs of a layer).
    #[default]
    Sliced,
    /// Exact 1-D W1 of the spatially averaged channel (cheap).
    Pooled,
}

/// The most random directions a sliced U-Score may use: each layer holds a
/// `[H·W, projections]` matrix of them, and 128 already give stable scores.
pub const MAX_PROJECTIONS: usize = 1 << 16;

/// Settings of the U-Score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UScoreSettings {
    /// Where each unit's output is read (default: the layer's own output).
    pub analysis_point: AnalysisPoint,
    /// Conv channel distance (default sliced).
    pub conv: ConvDistance,
    /// Random directions P of the sliced distance (default 128).
    pub projections: usize,
    /// 1-D W1 between samples of unequal sizes (default exact).
    pub w1: Wasserstein,
    /// Compare at most this many classes, chosen with the seed (default 100).
    pub max_classes: usize,
    /// Samples per class (default 32; a class with fewer uses what it has, with a note).
    pub samples_per_class: usize,
    /// Forward batch size (default 256). Consecutive classes share a batch while their
    /// samples fit it (a class with more runs alone, in several); each class's rows of the
    /// tapped outputs are then taken apart. libtorch's CPU kernels may round a sample's
    /// activations differently in the last bits with the batch it runs in, so the scores
    /// may differ at that level between batch sizes (measured on the zoo's small models:
    /// at most 1.2e-6 of a layer's largest score). The memory bound changes the packs only
    /// where it cannot hold them, or holds them in more passes than smaller ones: the packs
    /// then shrink (limits halving from the batch size, down to each class alone), with a
    /// note naming the layers, and the change is recorded in the scores' provenance
    /// ([`crate::UScoreRun::narrowed_packs`]), so such scores are not reused for another
    /// run. On CUDA, where the taps lie on the device, outside the estimate's measure, each
    /// class runs alone (its own batches).
    pub batch_size: usize,
    /// Seed for class and sample choice and for the projection directions.
    pub seed: u64,
    /// Reproduce the authors' package's BatchNorm drift (default: off). Its R-Score passes
    /// run in training mode over the calibration batches and move the BatchNorm running
    /// statistics; it reads layer j's U-Score after j + 1 such passes. With this set, layer
    /// j is read on a copy of the model whose statistics were moved the same way (the
    /// model itself is unchanged). Part of the `paper` preset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bn_drift: Option<BnDrift>,
    /// Bound on the memory of the U-Score, including the model's parameters and the
    /// calibration inputs (default: none). When one pass over all layers would not fit, each
    /// class's forward pass still runs once: the per-class summaries (sorted projections)
    /// that do not fit stay in a temporary file in [`UScoreSettings::spill_dir`], and the
    /// class-pair distances run in passes that each fit. Only where that file cannot be made
    /// (or the directory lacks the space) are the layers split into passes that each re-run
    /// the forward passes up to their last layer, with a note. Either way the scores are
    /// those of one pass (unless the bound cannot hold the packs of classes run together:
    /// smaller packs then run, with a note, see [`UScoreSettings::batch_size`]): bit for bit
    /// on the host engine; the device engine's f32 reductions over narrower pieces may
    /// round differently (agreement to 1e-6 relative is tested on the CPU device). See
    /// [`crate::memory`] for the estimate. Not part of the scores' provenance, except for
    /// packs it narrowed ([`crate::UScoreRun::narrowed_packs`]).
    #[serde(skip)]
    pub max_memory: Option<ByteSize>,
    /// Where the summaries that do not fit [`UScoreSettings::max_memory`] are written
    /// (default, `None`: the system's temporary directory, `TMPDIR`, or `/var/tmp` where that
    /// is held in memory, as a tmpfs `/tmp` is); [`SpillDir::Never`] keeps no file and re-runs
    /// the forward passes instead. The file has no name and is removed by the system when the
    /// run ends, also when it fails. Not part of the scores' provenance.
    #[serde(skip)]
    pub spill_dir: Option<SpillDir>,
    /// Where the sorting and the class-pair distances run (default: on the model's device
    /// when it is CUDA). Not part of the scores' provenance: both engines compute the same
    /// exact W1, the device with f32 reductions (agreeing to 1e-5 relative, tested).
    #[serde(skip)]
    pub engine: Engine,
    /// How the host engine finds each unit's largest class-pair distance (default:
    /// [`PairSearch::Bounded`]). Not part of the scores' provenance: the exact searches
    /// (`all`, `bounded`) give the same scores, bit for bit; scores of the approximate
    /// `certified` search are recorded as such by [`crate::UScore`]. The device engine always
    /// compares every pair.
    #[serde(skip)]
    pub pair_search: PairSearch,
}

/// How the host engine searches the class pairs of a unit for the largest distance: the
/// exact searches of [`fair_stats::PairSearch`] (`all`, `bounded`; the bounds and their
/// floating-point margin are explained in [`fair_stats::pairs`]) and the approximate
/// `certified` search of [`fair_stats::certified`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum PairSearch {
    /// Every pair in full (`all`): the reference, for checking.
    All,
    /// Only pairs whose distance may beat the best found so far (`bounded`, the default):
    /// the same maximum as `all`, bit for bit, with far fewer pairs computed in full. With
    /// classes of unequal sizes it computes every pair.
    #[default]
    Bounded,
    /// Approximate, with a computed bound (`certified`): the summaries are kept as 16-bit
    /// codes (half the memory and spill of the f32 summaries) and every pair is compared in
    /// exact integer arithmetic ([`fair_stats::certified`]); each unit's score comes with a
    /// computed bound on how far the exact maximum can lie from it
    /// ([`UScoreRun::gaps`], stored with the scores). Needs classes of equal size and the
    /// host engine; otherwise the bounded search runs, with a note.
    Certified,
}

impl From<PairSearch> for fair_stats::PairSearch {
    /// The exact search of a setting: [`PairSearch::Certified`] falls back to the bounded
    /// search where it cannot run.
    fn from(p: PairSearch) -> fair_stats::PairSearch {
        match p {
            PairSearch::All => fair_stats::PairSearch::All,
            PairSearch::Bounded | PairSearch::Certified => fair_stats::PairSearch::Bounded,
        }
    }
}

impl PairSearch {
    /// The names, as parsed and displayed: `all`, `bounded`, `certified`.
    pub const NAMES: [&'static str; 3] = ["all", "bounded", "certified"];

    /// Every search, in the order of [`PairSearch::NAMES`].
    pub const VARIANTS: [PairSearch; 3] =
        [PairSearch::All, PairSearch::Bounded, PairSearch::Certified];

    /// The name of this search.
    pub fn name(self) -> &'static str {
        match self {
            PairSearch::All => "all",
            PairSearch::Bounded => "bounded",
            PairSearch::Certified => "certified",
        }
    }
}

impl std::fmt::Display for PairSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A pair-search name that is none of [`PairSearch::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pair search '{0}': expected 'all', 'bounded' or 'certified'")]
pub struct ParsePairSearchError(pub String);

impl std::str::FromStr for PairSearch {
    type Err = ParsePairSearchError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PairSearch::VARIANTS
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| ParsePairSearchError(s.to_string()))
    }
}

/// Where the U-Score sorts projections and compares class pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// On the model's device when it is a CUDA device, the exact W1 is asked for and every
    /// class has the same number of samples; on the host otherwise.
    #[default]
    Auto,
    /// On the host: rows sorted and distances computed in parallel on the CPU, in f64.
    Host,
    /// On the model's device with libtorch (exact W1, equal class sizes), whatever the
    /// device; the summaries never leave it.
    Device,
}

/// The 1-D Wasserstein variant (serialisable mirror of [`fair_stats::W1`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Wasserstein {
    /// Exact (SciPy's `wasserstein_distance`).
    #[default]
    Exact,
    /// The authors' package quantile-grid approximation (for parity runs).
    QuantileGrid,
}

impl From<Wasserstein> for W1 {
    fn from(w: Wasserstein) -> W1 {
        match w {
            Wasserstein::Exact => W1::Exact,
            Wasserstein::QuantileGrid => W1::QuantileGrid,
        }
    }
}

impl Default for UScoreSettings {
    fn default() -> Self {
        UScoreSettings {
            analysis_point: AnalysisPoint::LayerOutput,
            conv: ConvDistance::Sliced,
            projections: 128,
            w1: Wasserstein::Exact,
            max_classes: 100,
            samples_per_class: 32,
            batch_size: 256,
            seed: 0,
            bn_drift: None,
            max_memory: None,
            spill_dir: None,
            engine: Engine::Auto,
            pair_search: PairSearch::Bounded,
        }
    }
}

/// The training-mode passes of the authors' package that move BatchNorm running statistics
/// before its U-Scores are read (see [`UScoreSettings::bn_drift`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BnDrift {
    /// Batch size of the passes: the package's calibration loader's (the R-Score's).
    pub batch_size: usize,
}

impl UScoreSettings {
    fn check(&self) -> Result<(), ScoringError> {
        let positive = |name: &'static str, v: usize| {
            if v == 0 {
                Err(ScoringError::Setting {
                    name,
                    detail: "must be at least 1".into(),
                })
            } else {
                Ok(())
            }
        };
        positive("per-class", self.samples_per_class)?;
        positive("batch-size", self.batch_size)?;
        if self.max_classes < 2 {
            return Err(ScoringError::Setting {
                name: "max-classes",
                detail: format!(
                    "needs at least 2 classes to compare, found {}",
                    self.max_classes
                ),
            });
        }
        if self.conv == ConvDistance::Sliced {
            positive("projections", self.projections)?;
            if self.projections > MAX_PROJECTIONS {
                return Err(ScoringError::Setting {
                    name: "projections",
                    detail: format!(
                        "must be at most {MAX_PROJECTIONS} (the default is 128), found {}",
                        self.projections
                    ),
                });
            }
        }
        if let Some(d) = self.bn_drift {
            positive("bn-drift batch-size", d.batch_size)?;
        }
        Ok(())
    }
}

/// The directions seed for layer `i`: decorrelated from the sampling seed.
fn layer_seed(seed: u64, i: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

/// Per-class summary of one layer: `[units, P, n]`, each row sorted.
type Summary = Array3<f32>;

/// The projections of one class's tap `t`: `[units, P, n]` on the tap's device.
fn project(
    t: &Tensor,
    layer: &PrunableLayer,
    directions: Option<&Tensor>,
) -> Result<Tensor, ScoringError> {
    let ctx = || format!("summarising layer '{}'", layer.name);
    let n = t.size()[0];
    let units = layer.units as i64;
    // [n, units, P]
    let projected = match (t.dim(), directions, &layer.heads) {
        // Heads: the attention's output [n, T, E] averaged over the tokens, each head's
        // head_dim channels a point projected on the directions (sliced W1 in R^head_dim).
        (3, Some(d), Some(h)) => torch(
            t.f_mean_dim(1, false, Kind::Float)
                .and_then(|x| x.f_reshape([n, units, h.head_dim as i64]))
                .and_then(|x| x.f_matmul(d)),
            ctx,
        )?,
        _ => project_units(t, n, units, directions, layer)?,
    };
    Ok(torch(projected.f_permute([1, 2, 0]), ctx)?)
}

/// [`project`] for channels, features and token units: `[n, units, P]`.
fn project_units(
    t: &Tensor,
    n: i64,
    units: i64,
    directions: Option<&Tensor>,
    layer: &PrunableLayer,
) -> Result<Tensor, ScoringError> {
    let ctx = || format!("summarising layer '{}'", layer.name);
    let projected = match (t.dim(), directions) {
        (4, Some(d)) => torch(t.f_reshape([n, units, -1]).and_then(|x| x.f_matmul(d)), ctx)?,
        (4, None) => torch(t.f_mean_dim(&[2i64, 3][..], false, Kind::Float), ctx)?.unsqueeze(2),
        (2, _) => t.unsqueeze(2),
        // Tokens [n, T, units]: each unit pooled over the tokens (as an image's over its
        // pixels under `pooled`; token layers get no directions).
        (3, _) => torch(t.f_mean_dim(1, false, Kind::Float), ctx)?.unsqueeze(2),
        (d, _) => {
            return Err(ScoringError::Setting {
                name: "analysis-point",
                detail: format!(
                    "layer '{}' is read at '{}', whose output has {d} dimensions (expected an image, tokens or a feature vector)",
                    layer.name, layer.analysis
                ),
            });
        }
    };
    Ok(projected)
}

/// The host summary of `projected` (`[units, P, n]`): copied to the CPU once and every row
/// sorted, in parallel blocks of rows ([`fair_stats::ColumnSorter`]: libtorch's CPU sort is
/// slow for millions of short rows). The values are read in the product's own sample-major
/// layout (`[n, units, P]`, of which `projected` is a permuted view), where one block's
/// rows lie side by side.
fn sort_on_host(projected: &Tensor, layer: &PrunableLayer) -> Result<Summary, ScoringError> {
    /// Rows sorted by one parallel task.
    const ROWS_PER_TASK: usize = 2048;
    let ctx = || format!("summarising layer '{}'", layer.name);
    let size = projected.size();
    let (units, p, n) = (size[0] as usize, size[1] as usize, size[2] as usize);
    let lanes = torch(projected.f_permute([2, 0, 1]), ctx)?
        .to_device(Device::Cpu)
        .contiguous();
    let values: Vec<f32> = torch(Vec::try_from(lanes.view([-1])), ctx)?;
    drop(lanes);
    let sorter = fair_stats::ColumnSorter::new(n);
    let mut data = vec![0.0f32; units * p * n];
    data.par_chunks_mut((n * ROWS_PER_TASK).max(1))
        .enumerate()
        .for_each(|(t, out)| sorter.sort_into(&values, t * ROWS_PER_TASK, out));
    Ok(Array3::from_shape_vec((units, p, n), data).expect("the tensor has this shape"))
}

/// The directions the U-Score projects the points of layer `i` (its index among the layers
/// scored together) on, `[dim, settings.projections]`: a sliced conv layer's channel maps
/// (`dim = H·W`) and attention heads (`dim = head_dim`; q, k and v of one attention share
/// the directions of the first of them). Seeded by `settings.seed` and `i` only.
pub fn u_directions(settings: &UScoreSettings, i: usize, dim: usize) -> ndarray::Array2<f32> {
    random_directions(dim, settings.projections, layer_seed(settings.seed, i))
}

/// The random directions of layer `i` (sliced conv layers and heads only), on `device`.
fn directions(
    settings: &UScoreSettings,
    layer: &PrunableLayer,
    shape: &[usize],
    i: usize,
    device: Device,
) -> Option<Tensor> {
    let dim = match (&layer.heads, settings.conv, shape.len()) {
        (Some(h), _, _) => Some(h.head_dim),
        (None, ConvDistance::Sliced, 3) => Some(shape[1] * shape[2]),
        _ => None,
    };
    match dim {
        Some(dim) => {
            let d = u_directions(settings, i, dim);
            let flat: Vec<f32> = d.iter().copied().collect();
            Some(
                Tensor::from_slice(&flat)
                    .reshape([d.nrows() as i64, d.ncols() as i64])
                    .to_device(device),
            )
        }
        _ => None,
    }
}

/// Where the U-Score's summaries that do not fit the memory bound go, as users write it
/// (`spill-dir`): a directory, or `none` for no file at all (write `./none` for a directory
/// of that name).
///
/// ```
/// use fair_scoring::SpillDir;
/// assert_eq!("none".parse::<SpillDir>(), Ok(SpillDir::Never));
/// assert_eq!("/scratch".parse::<SpillDir>(), Ok(SpillDir::At("/scratch".into())));
/// assert!("".parse::<SpillDir>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum SpillDir {
    /// A temporary file in this directory.
    At(std::path::PathBuf),
    /// No file: where the summaries do not fit, the layers are split into passes that each
    /// re-run the forward passes (with a note).
    Never,
}

impl std::str::FromStr for SpillDir {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "" => Err("expected a directory, or none".into()),
            "none" => Ok(SpillDir::Never),
            _ => Ok(SpillDir::At(text.into())),
        }
    }
}

impl TryFrom<String> for SpillDir {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

/// U-Scores of every layer (one vector per layer, in order), from eval-mode forward passes
/// over the classes' samples with the analysis points tapped (consecutive classes packed
/// into batches of [`UScoreSettings::batch_size`], their outputs taken apart per class). Without
/// [`UScoreSettings::max_memory`], or where one pass fits it, one pass taps every layer.
/// Where it does not, each class's forward pass still runs once ([`memory::forward_once`]):
/// the summaries that do not fit go to a temporary file in [`UScoreSettings::spill_dir`]
/// and the class-pair distances run in passes that fit (one forward pack's taps of all
/// layers that do not fit together are split into groups, each a forward pass of its own). Only where
/// that file cannot be had (no room, no directory, [`SpillDir::Never`]) are the layers
/// split into passes that each re-run the forward passes ([`memory::plan`]). Returns notes
/// about classes with fewer samples than asked for, and about the passes when there is
/// more than one.
///
/// With [`UScoreSettings::bn_drift`], each layer is read in its own pass on a copy of the
/// model whose BatchNorm running statistics were first moved by as many training-mode
/// passes over the calibration batches as the authors' package makes before reading it;
/// the layers read as heads of one attention (q, k and v) are read together, in the pass of
/// the first of them, so they get the same head scores.
pub fn u_scores(
    model: &Model,
    layers: &[PrunableLayer],
    data: &Calibration,
    settings: &UScoreSettings,
    progress: Progress,
) -> Result<(Vec<Vec<f64>>, Vec<String>), ScoringError> {
    let run = u_scores_measured(model, layers, data, settings, progress, None)?;
    Ok((run.scores, run.notes))
}

/// A check of the host engine's pair search against every pair, made on the same per-class
/// summaries in the same run (see [`u_scores_measured`]): on `units_per_layer` units of
/// each layer, drawn with `seed` (every unit of a layer with fewer), the maximum over all
/// pairs is computed too, timed, and compared bit for bit with the score the search gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairCheck {
    /// Units checked per layer (at least 1).
    pub units_per_layer: usize,
    /// Seed of the units' draw.
    pub seed: u64,
}

/// What a [`PairCheck`] found on one layer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LayerPairCheck {
    /// Units of the layer.
    pub units: usize,
    /// Units whose maximum over all pairs was computed (0 on the device engine, which
    /// always compares every pair).
    pub checked: usize,
    /// Checked units whose score differs from the all-pairs maximum in any bit.
    pub mismatches: usize,
    /// Wall seconds of the all-pairs maxima of the checked units (in parallel over units,
    /// as the search itself runs).
    pub all_pairs_seconds: f64,
}

impl LayerPairCheck {
    /// The all-pairs seconds scaled from the checked units to all units of the layer (0
    /// when none was checked).
    pub fn all_pairs_seconds_estimate(&self) -> f64 {
        if self.checked == 0 {
            0.0
        } else {
            self.all_pairs_seconds * self.units as f64 / self.checked as f64
        }
    }
}

/// Where a U-Score run spent its wall time, in seconds (logged at info level by every run,
/// returned by [`u_scores_measured`]). A [`PairCheck`]'s all-pairs maxima are in none of
/// them (the copies of its checked units' f32 rows are in `coding`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimeProfile {
    /// Forward passes of the first memory pass (every class once).
    pub forward: f64,
    /// Forward passes that later memory passes repeat (0 unless one forward pack's taps of all
    /// layers, or the summaries in a temporary file, do not fit: see
    /// [`UScoreSettings::max_memory`]).
    pub forward_again: f64,
    /// Projections onto the random directions (or pooling).
    pub projections: f64,
    /// Sorting the projections (and, on the host engine, copying them to the CPU).
    pub sorting: f64,
    /// Class-pair distances.
    pub pairs: f64,
    /// `pair-search certified`: the pilot's projections and ranges, fitting the quantizers,
    /// and coding every class's summaries (the pilot's forward passes are in `forward`, or
    /// `forward_again` in a later memory pass).
    pub coding: f64,
    /// Writes to and reads from the spill file under a memory bound (with the device
    /// engine, also the copies between the device and the host on either side).
    pub spill: f64,
    /// The whole run.
    pub total: f64,
}

impl TimeProfile {
    /// The time not in the parts above (data selection, copies, finiteness checks, the
    /// allocator's trims).
    pub fn other(&self) -> f64 {
        self.total
            - self.forward
            - self.forward_again
            - self.projections
            - self.sorting
            - self.pairs
            - self.coding
            - self.spill
    }

    /// The time of the run without its forward passes (first and repeated).
    pub fn without_forward(&self) -> f64 {
        self.total - self.forward - self.forward_again
    }

    /// Adds a class's forward pass of memory pass `pass` (`forward_again` after the first).
    fn add_forward(&mut self, pass: usize, seconds: f64) {
        if pass == 0 {
            self.forward += seconds;
        } else {
            self.forward_again += seconds;
        }
    }

    fn add(&mut self, o: &TimeProfile) {
        self.forward += o.forward;
        self.forward_again += o.forward_again;
        self.projections += o.projections;
        self.sorting += o.sorting;
        self.pairs += o.pairs;
        self.coding += o.coding;
        self.spill += o.spill;
        self.total += o.total;
    }
}

/// Class pairs of the host engine's units, summed over units (see [`PairMax`]; all zero
/// on the device engine).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairCounts {
    /// Class pairs of all units.
    pub total: u64,
    /// Pairs computed in full by the exact kernel.
    pub evaluated: u64,
    /// Pairs that reached the f32 screening pass.
    pub screened: u64,
    /// Pairs whose row-level bound was computed.
    pub bounded: u64,
    /// Why some unit's bounded search compared every pair, if one did.
    pub fallback: Option<fair_stats::PairFallback>,
}

impl PairCounts {
    fn add(&mut self, m: &PairMax) {
        self.total += m.pairs_total;
        self.evaluated += m.pairs_evaluated;
        self.screened += m.pairs_screened;
        self.bounded += m.pairs_bounded;
        self.fallback = self.fallback.or(m.fallback);
    }

    fn merge(&mut self, o: &PairCounts) {
        self.total += o.total;
        self.evaluated += o.evaluated;
        self.screened += o.screened;
        self.bounded += o.bounded;
        self.fallback = self.fallback.or(o.fallback);
    }

    /// The share of pairs computed in full (`NaN` without pairs).
    pub fn fraction_evaluated(&self) -> f64 {
        self.evaluated as f64 / self.total as f64
    }
}

/// A U-Score run with what it measured (see [`u_scores_measured`]).
#[derive(Debug, Clone, Default)]
pub struct UScoreRun {
    /// One score vector per layer, in order (as [`u_scores`] returns).
    pub scores: Vec<Vec<f64>>,
    /// Notes (as [`u_scores`] returns).
    pub notes: Vec<String>,
    /// Where the wall time went.
    pub profile: TimeProfile,
    /// The class pairs of the host engine's search.
    pub pairs: PairCounts,
    /// One entry per layer when a [`PairCheck`] was asked for, else empty.
    pub check: Vec<LayerPairCheck>,
    /// Forward passes over the calibration set (summed over layers with
    /// [`UScoreSettings::bn_drift`]): 1, unless the memory bound made the U-Score re-run
    /// them (see [`UScoreSettings::max_memory`]).
    pub passes: usize,
    /// Forward passes of one class's samples: the classes compared times
    /// [`UScoreRun::passes`] (consecutive classes share forward batches: see
    /// [`UScoreRun::batches`]).
    pub forwards: usize,
    /// Forward batches run, of at most [`UScoreSettings::batch_size`] samples each: on the
    /// host, consecutive classes' samples are packed into one batch while they fit it (a
    /// class larger than a batch runs alone, in several), unless the memory bound cannot
    /// hold such packs ([`UScoreRun::narrowed_packs`]); on CUDA each class runs alone.
    pub batches: usize,
    /// Bytes of summaries written to the temporary file because they did not fit the memory
    /// bound (the file's data, as written; 0 when none was).
    pub spilled: u64,
    /// The layers whose forward passes ran in smaller packs of classes than
    /// [`UScoreSettings::batch_size`] allows because of the memory bound, each with the most
    /// samples of its packs (0: each class alone); empty when none did. Their scores may
    /// differ from an unbounded run's in the last bits, so [`crate::UScore`] records this in
    /// the scores' provenance.
    pub narrowed_packs: Vec<(String, usize)>,
    /// With [`PairSearch::Certified`]: per layer, per unit, a computed bound on how far the
    /// exact score (the maximum over every pair of the f32 summaries) can lie from the
    /// score ([`fair_stats::certified::CertifiedMax::gap`]); empty when the search was exact.
    pub gaps: Vec<Vec<f64>>,
}

/// [`u_scores`] with its time profile, its class-pair counts and, with `check`, the
/// search checked against every pair on sampled units (for benchmarks: the scores are those
/// of [`u_scores`]).
pub fn u_scores_measured(
    model: &Model,
    layers: &[PrunableLayer],
    data: &Calibration,
    settings: &UScoreSettings,
    progress: Progress,
    check: Option<PairCheck>,
) -> Result<UScoreRun, ScoringError> {
    settings.check()?;
    if check.is_some_and(|c| c.units_per_layer == 0) {
        return Err(ScoringError::Setting {
            name: "pair-check units",
            detail: "must be at least 1".into(),
        });
    }
    // Layers read as heads are scored per head, then each head's score is given to its
    // channels.
    if layers.iter().any(|l| l.heads.is_some()) {
        let by_head: Vec<PrunableLayer> = layers
            .iter()
            .map(|l| PrunableLayer {
                units: l.scored_units(),
                ..l.clone()
            })
            .collect();
        let mut run = measured(model, &by_head, data, settings, progress, check)?;
        // A head's score (and certified bound) goes to each of its channels.
        for (i, layer) in layers.iter().enumerate() {
            if let Some(h) = &layer.heads {
                let spread = |v: &[f64]| -> Vec<f64> {
                    v.iter()
                        .flat_map(|&x| std::iter::repeat_n(x, h.head_dim))
                        .collect()
                };
                run.scores[i] = spread(&run.scores[i]);
                if let Some(g) = run.gaps.get_mut(i) {
                    *g = spread(g);
                }
            }
        }
        return Ok(run);
    }
    measured(model, layers, data, settings, progress, check)
}

/// [`u_scores_measured`] on layers whose units are what is compared (heads already counted
/// as units).
fn measured(
    model: &Model,
    layers: &[PrunableLayer],
    data: &Calibration,
    settings: &UScoreSettings,
    progress: Progress,
    check: Option<PairCheck>,
) -> Result<UScoreRun, ScoringError> {
    // Without BatchNorm there is nothing to drift: one ordinary pass gives the same scores.
    let has_batch_norm = model
        .graph()
        .nodes()
        .iter()
        .any(|n| n.op.role() == fair_ir::Role::Normalization);
    // q, k and v of one attention share the directions of the first of them.
    let leaders = crate::layers::attention_leaders(layers);
    let Some(drift) = settings.bn_drift.filter(|_| has_batch_norm) else {
        let all: Vec<usize> = (0..layers.len()).collect();
        return scores_of(
            model, layers, &all, &leaders, data, settings, progress, 1, check,
        );
    };
    // One guard over every layer's pass and the drift passes between them (each pass's own
    // guard nests in it), so the allocator is not restored and re-tuned per layer.
    let reuse = reuse_freed_blocks(settings);
    let drifting = model.deep_copy()?;
    let mut run = UScoreRun::default();
    let mut scores: Vec<Option<Vec<f64>>> = vec![None; layers.len()];
    let mut gaps: Vec<Option<Vec<f64>>> = vec![None; layers.len()];
    let mut checks: Vec<Option<LayerPairCheck>> = vec![None; layers.len()];
    for i in 0..layers.len() {
        drift_pass(&drifting, data, drift.batch_size, &reuse)?;
        // The layers of one attention are read together, in the pass of the first of them:
        // the same statistics and directions, so q, k and v get the same head scores.
        if leaders[i] != i {
            continue;
        }
        let members: Vec<usize> = (i..layers.len()).filter(|&j| leaders[j] == i).collect();
        let group: Vec<PrunableLayer> = members.iter().map(|&j| layers[j].clone()).collect();
        // Two copies of the parameters are held: the model's and the drifting one.
        let one = scores_of(
            &drifting, &group, &members, &leaders, data, settings, progress, 2, check,
        )?;
        for (k, g) in one.gaps.into_iter().enumerate() {
            gaps[members[k]] = Some(g);
        }
        for (k, (s, c)) in one
            .scores
            .into_iter()
            .zip(
                one.check
                    .into_iter()
                    .map(Some)
                    .chain(std::iter::repeat(None)),
            )
            .enumerate()
        {
            scores[members[k]] = Some(s);
            checks[members[k]] = c;
        }
        for note in one.notes {
            if !run.notes.contains(&note) {
                run.notes.push(note);
            }
        }
        run.profile.add(&one.profile);
        run.pairs.merge(&one.pairs);
        run.passes += one.passes;
        run.forwards += one.forwards;
        run.batches += one.batches;
        run.spilled += one.spilled;
        run.narrowed_packs.extend(one.narrowed_packs);
    }
    run.scores = scores
        .into_iter()
        .map(|s| s.expect("every layer is read in its attention's pass or its own"))
        .collect();
    run.check = checks.into_iter().flatten().collect();
    // Every layer's or none (the search is one setting for every pass).
    run.gaps = gaps.into_iter().flatten().collect();
    Ok(run)
}

/// libtorch's freed activations reused by the next batch rather than mapped afresh, while the
/// guard lives ([`fair_runtime::ReuseFreedBlocks`]). Under a bound the heap keeps at most a
/// [`memory::REUSE_SHARE`]th of it free (settled before every forward batch or pack), which
/// every plan leaves ([`memory::usable`]).
fn reuse_freed_blocks(settings: &UScoreSettings) -> fair_runtime::ReuseFreedBlocks {
    fair_runtime::ReuseFreedBlocks::within(
        settings
            .max_memory
            .map(|b| usize::try_from(b.0 / memory::REUSE_SHARE).unwrap_or(usize::MAX)),
    )
}

/// The units of each layer a [`PairCheck`] checks (ascending), drawn with its seed and the
/// layer's index among all prunable layers (`index[i]`).
fn check_units(check: &PairCheck, layers: &[PrunableLayer], index: &[usize]) -> Vec<Vec<usize>> {
    use rand::SeedableRng;
    use rand::seq::index::sample;
    layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(layer_seed(check.seed, index[i]));
            let mut units =
                sample(&mut rng, l.units, check.units_per_layer.min(l.units)).into_vec();
            units.sort_unstable();
            units
        })
        .collect()
}

/// One training-mode pass over the calibration batches in order, without gradients: as
/// PyTorch's `model.train()`, every BatchNorm's running statistics move with its momentum.
fn drift_pass(
    model: &Model,
    data: &Calibration,
    batch_size: usize,
    reuse: &fair_runtime::ReuseFreedBlocks,
) -> Result<(), ScoringError> {
    let device = model.device();
    for (x, _) in data.batches(batch_size) {
        reuse.settle(0);
        let _ = tch::no_grad(|| model.forward(&x.to_device(device), Mode::Train))?;
    }
    Ok(())
}

/// U-Scores of `layers`, layer `i` of which is the model's prunable layer number
/// `index[i]`; `leaders` holds, for every prunable layer of the model, the layer whose
/// directions it uses ([`crate::layers::attention_leaders`] over all of them), so a layer
/// scored apart from the others gets the directions it gets among all. `copies` is how many
/// copies of the parameters are held (for the memory bound). With `check`, the search is
/// checked against every pair on sampled units.
#[allow(clippy::too_many_arguments)]
fn scores_of(
    model: &Model,
    layers: &[PrunableLayer],
    index: &[usize],
    leaders: &[usize],
    data: &Calibration,
    settings: &UScoreSettings,
    progress: Progress,
    copies: u64,
    check: Option<PairCheck>,
) -> Result<UScoreRun, ScoringError> {
    let (classes, mut notes) = data.class_samples(
        settings.max_classes,
        settings.samples_per_class,
        settings.seed,
    );
    if classes.len() < 2 {
        return Err(ScoringError::Data {
            path: None,
            detail: format!(
                "the U-Score compares classes, but the calibration data has {} class(es)",
                classes.len()
            ),
        });
    }
    let device = model.device();
    let graph = model.graph();
    let mut shapes = Vec::with_capacity(layers.len());
    for layer in layers {
        shapes.push(
            graph
                .shape(&layer.analysis)
                .map_err(fair_runtime::RuntimeError::from)?,
        );
    }
    let projections: Vec<usize> = shapes
        .iter()
        .zip(layers)
        .map(|(s, l)| match (settings.conv, s.len()) {
            _ if l.heads.is_some() => settings.projections,
            (ConvDistance::Sliced, 3) => settings.projections,
            _ => 1,
        })
        .collect();
    // The layer whose directions each layer uses: itself, or for q, k and v of one
    // attention the first of them, so the three compare the heads on the same directions.
    let rep: Vec<usize> = index.iter().map(|&i| leaders[i]).collect();
    let samples: Vec<usize> = classes.iter().map(|(_, idx)| idx.len()).collect();
    let largest = samples.iter().copied().max().unwrap_or(1);
    let equal = samples.iter().all(|&n| n == samples[0]);
    let on_device = match settings.engine {
        Engine::Host => false,
        Engine::Auto => device.is_cuda() && settings.w1 == Wasserstein::Exact && equal,
        Engine::Device => {
            if settings.w1 != Wasserstein::Exact || !equal {
                notes.push(
                    "the U-Score's device engine needs the exact W1 and classes of equal size; \
                     the distances ran on the host"
                        .into(),
                );
            }
            settings.w1 == Wasserstein::Exact && equal
        }
    };
    // The certified search keeps 16-bit codes (equal class sizes, host engine only).
    let certified = settings.pair_search == PairSearch::Certified && equal && !on_device;
    if settings.pair_search == PairSearch::Certified && !certified {
        notes.push(format!(
            "the certified class-pair search needs classes of equal size on the host engine \
             ({}), so an exact search ran",
            if on_device {
                "the distances ran on the device, which compares every pair in f32; give \
                 `engine` host for the certified search"
            } else {
                "the classes differ in size"
            }
        ));
    }
    let bound = settings.max_memory.map(|b| b.0);
    let reuse = reuse_freed_blocks(settings);
    let fixed =
        4 * (copies * graph.param_count() as u64 + data.len() as u64 * data.sample_numel() as u64);
    let bound_text = settings
        .max_memory
        .map(|b| b.to_string())
        .unwrap_or_default();
    // Consecutive classes share forward batches (a class larger than a batch runs alone):
    // packs of at most `limit` samples, planned with their taps and forward batch.
    let planned = |limit: usize| -> Result<Packing, ScoringError> {
        let mut memory = memory::layer_memory(graph, layers, &projections, &samples, limit)?;
        if certified {
            // 16-bit codes instead of f32 summaries, and each class's coding error (8 bytes
            // per unit and class): both spilled together where they do not fit.
            for m in &mut memory {
                m.per_unit = m.per_unit / 2 + 8 * samples.len() as u64;
            }
        }
        let batch = settings
            .batch_size
            .min(memory::largest_pack(&samples, limit));
        let plan = memory::plan(graph, layers, &memory, batch, fixed, bound)?;
        Ok(Packing {
            limit,
            packs: memory::packs(&samples, limit),
            memory,
            batch,
            plan,
        })
    };
    // The forward groups a plan runs (its passes with `spill-dir` none; a spill file that
    // cannot be made is not foreseen).
    let runs = |p: &Packing| match settings.spill_dir {
        Some(SpillDir::Never) => p.plan.chunks.len(),
        _ => memory::forward_once(graph, layers, &p.memory, p.batch, fixed, bound)
            .map_or(p.plan.chunks.len(), |o| o.forwards.len()),
    };
    let alone = memory::packs(&samples, 0);
    let Packing {
        limit,
        packs,
        memory,
        batch,
        plan,
    } = if device.is_cuda() || bound.is_none() {
        // On CUDA the taps lie on the device, outside the estimate's measure: each class
        // runs alone there, as it always did (one class's taps at a time).
        planned(if device.is_cuda() {
            0
        } else {
            settings.batch_size
        })?
    } else {
        // Under a bound: the largest packs (limits halving from the batch size) that fit and
        // run no more forward groups or passes than each class alone; else each class alone.
        let single = planned(0);
        let mut limit = settings.batch_size;
        let mut chosen = None;
        while memory::packs(&samples, limit) != alone {
            if let Ok(p) = planned(limit)
                && single.as_ref().map_or(true, |s| runs(&p) <= runs(s))
            {
                chosen = Some(p);
                break;
            }
            limit /= 2;
        }
        // Both failing, the error is each class alone's: its figure is the smaller bound
        // that runs.
        match chosen {
            Some(p) => p,
            None => single?,
        }
    };
    // The layers whose packs the bound narrowed (recorded in the run, and so in the scores'
    // provenance), with a note.
    let mut narrowed = Vec::new();
    if packs != memory::packs(&samples, settings.batch_size) && !device.is_cuda() {
        narrowed = layers.iter().map(|l| (l.name.clone(), limit)).collect();
        let which = if index.len() < leaders.len() {
            format!(
                " of layer{} {}",
                if layers.len() == 1 { "" } else { "s" },
                layers
                    .iter()
                    .map(|l| format!("'{}'", l.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        };
        notes.push(format!(
            "the U-Score's forward passes{which} of several classes together (packs of up to \
             {} samples) do not fit the memory bound (`max-memory`) {bound_text}, or need \
             more passes under it than smaller packs, so {}; the scores may differ from \
             those of a run without the bound in the last bits of the activations (the \
             score file records the narrowed packs, so no later run reuses these scores)",
            memory::largest_pack(&samples, settings.batch_size),
            if packs == alone {
                "each class ran its own forward pass".to_string()
            } else {
                format!(
                    "they ran in packs of up to {} samples",
                    memory::largest_pack(&samples, limit)
                )
            },
        ));
    }

    // Several passes: each class's forward pass runs once instead where the summaries that
    // do not fit can go to a temporary file; the repeated passes are the fallback.
    let mut spill = None;
    let once = match memory::forward_once(graph, layers, &memory, batch, fixed, bound) {
        Some(o) if o.spill_bytes > 0 => {
            let made = match &settings.spill_dir {
                Some(SpillDir::At(dir)) => Ok(dir.clone()),
                Some(SpillDir::Never) => Err(String::new()),
                None => default_spill_dir(),
            }
            .and_then(|dir| Spill::create(&dir, o.spill_bytes, layers.len(), classes.len()));
            match made {
                Ok(s) => {
                    spill = Some(s);
                    Some(o)
                }
                Err(why) => {
                    notes.push(if settings.spill_dir == Some(SpillDir::Never) {
                        "the U-Score's summaries that do not fit the memory bound were not kept \
                         in a temporary file (`spill-dir` is none), so every pass re-ran the \
                         forward passes"
                            .to_string()
                    } else {
                        format!(
                            "the U-Score's summaries that do not fit the memory bound could not \
                             be kept in a temporary file ({why}), so every pass re-ran the \
                             forward passes"
                        )
                    });
                    None
                }
            }
        }
        o => o,
    };
    let passes_text = |n: usize| match n {
        1 => "1 pass".to_string(),
        n => format!("{n} passes"),
    };
    // Bit for bit on the host engine; the device engine's f32 reductions over narrower
    // pieces may round differently.
    let exactly = if on_device {
        "up to the device engine's f32 rounding"
    } else {
        "bit for bit"
    };
    match &once {
        Some(o) => notes.push(format!(
            "{} (one pass would need about {} plus {} for the model and calibration data): \
             {}{}the class-pair distances ran in {} (estimated peak {}); the scores are those \
             of one pass, {exactly}",
            if o.spill_bytes > 0 {
                format!(
                    "the U-Score's summaries do not fit the memory bound (`max-memory`) \
                     {bound_text} next to the forward passes"
                )
            } else {
                format!(
                    "one forward pack's U-Score taps of all layers do not fit the memory bound \
                     (`max-memory`) {bound_text} together"
                )
            },
            ByteSize(plan.unbounded),
            ByteSize(plan.fixed),
            match (o.forwards.len(), o.spill_bytes) {
                (1, _) => "each class's forward pass ran once, ".to_string(),
                (g, 0) => format!("each class's forward passes ran {g} times, "),
                (g, _) => format!(
                    "each class's forward passes ran {g} times (one forward pack's taps of all layers \
                     do not fit together), "
                ),
            },
            match &spill {
                Some(s) => format!(
                    "{} of the summaries went to an unnamed temporary file in '{}' (gone when \
                     the run ends) and ",
                    ByteSize(o.spill_bytes),
                    s.file.dir().display()
                ),
                None => String::new(),
            },
            passes_text(o.spilled.len() + usize::from(!o.resident.is_empty())),
            ByteSize(o.peak()),
        )),
        None if plan.chunks.len() > 1 => notes.push(format!(
            "the U-Score ran in {} to stay within the memory bound (`max-memory`) \
             {bound_text} (estimated peak {} plus {} for the model and calibration data; one \
             pass would need about {}); the scores are those of one pass, {exactly}",
            passes_text(plan.chunks.len()),
            ByteSize(plan.peak()),
            ByteSize(plan.fixed),
            ByteSize(plan.unbounded),
        )),
        None => {}
    }

    let checked_units = check.map(|c| check_units(&c, layers, index));
    let mut r = Reducer {
        method: settings.w1.into(),
        search: settings.pair_search.into(),
        on_device,
        scores: layers.iter().map(|l| vec![0.0; l.units]).collect(),
        gaps: layers.iter().map(|l| vec![0.0; l.units]).collect(),
        certify: certified.then(|| Certifier::new(layers, checked_units.clone())),
        pairs: PairCounts::default(),
        checked_units,
        checks: layers
            .iter()
            .map(|l| LayerPairCheck {
                units: l.units,
                ..LayerPairCheck::default()
            })
            .collect(),
        check_seconds: 0.0,
        distance_seconds: 0.0,
    };
    let started = std::time::Instant::now();
    let mut time = TimeProfile::default();
    let mut forwards = 0usize;
    let mut batches = 0usize;
    let passes;
    if let (Some(o), spill) = (&once, &mut spill) {
        // Each class's forward pass once per group of layers (once in all, but when one
        // class's taps do not fit together); every layer is summarised whole as it comes,
        // its resident units kept, the rest appended to the spill file.
        passes = o.forwards.len();
        let mut resident_units = vec![0; layers.len()];
        for s in &o.resident {
            resident_units[s.layer] = s.units.end;
        }
        let mut held: Vec<Vec<Sorted>> = o.resident.iter().map(|_| Vec::new()).collect();
        let bar = progress.bar(classes.len() * passes, "U-Score: forward per class");
        for (pass, group) in o.forwards.iter().enumerate() {
            let dirs: Vec<Option<Tensor>> = group
                .iter()
                .map(|&i| directions(settings, &layers[i], shapes[i], rep[i], device))
                .collect();
            let taps: Vec<&str> = group.iter().map(|&i| layers[i].analysis.as_str()).collect();
            let group_layers: Vec<&PrunableLayer> = group.iter().map(|&i| &layers[i]).collect();
            if let Some(c) = r.certify.as_mut() {
                let clock = std::time::Instant::now();
                let seconds = fit_pilot(
                    c, model, data, &classes, settings, batch, layers, group, &dirs, largest,
                    &reuse,
                )?;
                time.add_forward(pass, seconds);
                time.coding += clock.elapsed().as_secs_f64() - seconds;
            }
            for pack in packs.clone() {
                // Not even the last pack's activations are counted as in use: kept, they
                // measured 25% above a 3 GiB bound (fragments the next pack cannot reuse).
                reuse.settle(0);
                let clock = std::time::Instant::now();
                let packed = forward_pack(model, data, &classes[pack.clone()], settings, &taps)?;
                time.add_forward(pass, clock.elapsed().as_secs_f64());
                forwards += pack.len();
                batches += packed.batches;
                check_finite(&packed.taps, &group_layers, &classes[pack.clone()])?;
                // Layer by layer, each class's rows of the packed tap (a view), the packed
                // tap freed after its last class.
                for ((&i, tap), dir) in group.iter().zip(packed.taps).zip(&dirs) {
                    let layer = &layers[i];
                    for (k, t) in class_views(&tap, pack.clone(), &samples) {
                        let clock = std::time::Instant::now();
                        let projected = project(&t, layer, dir.as_ref())?;
                        drop(t);
                        time.projections += clock.elapsed().as_secs_f64();
                        let sorted = summarise(
                            projected,
                            layer,
                            (i, 0..layer.units),
                            on_device,
                            r.certify.as_mut(),
                            &mut time,
                        )?;
                        {
                            let keep = resident_units[i];
                            if keep < layer.units {
                                let clock = std::time::Instant::now();
                                let spill =
                                    spill.as_mut().expect("a plan that spills has a spill file");
                                match &sorted {
                                    Sorted::Quantized(q) => spill.write_codes(i, k, q, keep)?,
                                    _ => spill.write(i, k, &host_rows(&sorted, keep, layer)?)?,
                                }
                                time.spill += clock.elapsed().as_secs_f64();
                            }
                            if let Some(h) = o.resident.iter().position(|s| s.layer == i) {
                                held[h].push(sorted.rows(0..keep, layer.units));
                            }
                        }
                    }
                }
                bar.inc(pack.len() as u64);
            }
        }
        bar.finish_and_clear();
        for (slice, per_class) in o.resident.iter().zip(held) {
            r.reduce(slice, per_class)?;
        }
        for slice in o.spilled.iter().flat_map(|c| &c.slices) {
            let clock = std::time::Instant::now();
            let spill = spill.as_ref().expect("a plan that spills has a spill file");
            let (l, units) = (slice.layer, &slice.units);
            let p = projections[l];
            let per_class = samples
                .iter()
                .enumerate()
                .map(|(k, &n)| {
                    let skip = (units.start - resident_units[l]) * p * n;
                    if certified {
                        let from = units.start - resident_units[l]..units.end - resident_units[l];
                        return spill.read_codes(l, k, from, p, n).map(Sorted::Quantized);
                    }
                    let values = spill.read(l, k, skip, units.len() * p * n)?;
                    Ok(if on_device {
                        Sorted::Device(
                            Tensor::from_slice(&values)
                                .reshape([units.len() as i64, p as i64, n as i64])
                                .to_device(device),
                        )
                    } else {
                        Sorted::Host(
                            Array3::from_shape_vec((units.len(), p, n), values)
                                .expect("the spilled rows have this shape"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, ScoringError>>()?;
            time.spill += clock.elapsed().as_secs_f64();
            r.reduce(slice, per_class)?;
        }
    } else {
        // Every pass runs the forward passes of every class up to its last layer and keeps
        // the summaries of its units.
        passes = plan.chunks.len();
        let bar = progress.bar(classes.len() * passes, "U-Score: forward per class");
        for (pass, chunk) in plan.chunks.iter().enumerate() {
            // The chunk's layers, each once, in graph order, and their slices.
            let mut chunk_layers: Vec<usize> = chunk.slices.iter().map(|s| s.layer).collect();
            chunk_layers.dedup();
            let dirs: Vec<Option<Tensor>> = chunk_layers
                .iter()
                .map(|&i| directions(settings, &layers[i], shapes[i], rep[i], device))
                .collect();
            let taps: Vec<&str> = chunk_layers
                .iter()
                .map(|&i| layers[i].analysis.as_str())
                .collect();
            let chunk_layer_refs: Vec<&PrunableLayer> =
                chunk_layers.iter().map(|&i| &layers[i]).collect();
            if let Some(c) = r.certify.as_mut() {
                let clock = std::time::Instant::now();
                let seconds = fit_pilot(
                    c,
                    model,
                    data,
                    &classes,
                    settings,
                    batch,
                    layers,
                    &chunk_layers,
                    &dirs,
                    largest,
                    &reuse,
                )?;
                time.add_forward(pass, seconds);
                time.coding += clock.elapsed().as_secs_f64() - seconds;
            }
            let mut held: Vec<Vec<Sorted>> = chunk.slices.iter().map(|_| Vec::new()).collect();
            for pack in packs.clone() {
                // Not even the last pack's activations are counted as in use: kept, they
                // measured 25% above a 3 GiB bound (fragments the next pack cannot reuse).
                reuse.settle(0);
                let clock = std::time::Instant::now();
                let packed = forward_pack(model, data, &classes[pack.clone()], settings, &taps)?;
                time.add_forward(pass, clock.elapsed().as_secs_f64());
                forwards += pack.len();
                batches += packed.batches;
                check_finite(&packed.taps, &chunk_layer_refs, &classes[pack.clone()])?;
                for ((&i, tap), dir) in chunk_layers.iter().zip(packed.taps).zip(&dirs) {
                    let layer = &layers[i];
                    for (_, t) in class_views(&tap, pack.clone(), &samples) {
                        // The whole layer is projected (so every value is computed as in one
                        // pass), then only this pass's units are sorted and kept.
                        let clock = std::time::Instant::now();
                        let projected = project(&t, layer, dir.as_ref())?;
                        drop(t);
                        time.projections += clock.elapsed().as_secs_f64();
                        for (slice, h) in chunk
                            .slices
                            .iter()
                            .zip(&mut held)
                            .filter(|(s, _)| s.layer == i)
                        {
                            let units = if slice.units == (0..layer.units) {
                                projected.shallow_clone()
                            } else {
                                projected.narrow(
                                    0,
                                    slice.units.start as i64,
                                    slice.units.len() as i64,
                                )
                            };
                            h.push(summarise(
                                units,
                                layer,
                                (i, slice.units.clone()),
                                on_device,
                                r.certify.as_mut(),
                                &mut time,
                            )?);
                        }
                    }
                }
                bar.inc(pack.len() as u64);
            }
            for (slice, per_class) in chunk.slices.iter().zip(held) {
                r.reduce(slice, per_class)?;
            }
        }
        bar.finish_and_clear();
    }
    // The bytes the file holds, which the plan estimated exactly.
    let spilled = spill.as_ref().map_or(0, Spill::len);
    if let Some(o) = &once {
        debug_assert_eq!(
            spilled, o.spill_bytes,
            "the spill file holds what was planned"
        );
    }
    drop(spill);
    let Reducer {
        scores,
        gaps,
        certify,
        pairs,
        checks,
        check_seconds,
        mut distance_seconds,
        ..
    } = r;
    distance_seconds -= check_seconds;
    time.pairs = distance_seconds;
    time.total = started.elapsed().as_secs_f64() - check_seconds;
    tracing::info!(
        total = time.total,
        forward = time.forward,
        forward_repeated = time.forward_again,
        projections = time.projections,
        sorting = time.sorting,
        pairs = time.pairs,
        other = time.other(),
        coding = time.coding,
        spill = time.spill,
        passes,
        forwards,
        batches,
        "U-Score: time profile in seconds (forward passes of the first pass, forward passes \
         repeated by later passes, projections, sorting, class-pair distances, the rest, the \
         certified search's coding and the spill file's writes and reads; on CUDA the device \
         work is \
         asynchronous, so its time lands where it is next waited for)"
    );
    tracing::info!(
        seconds = time.total - distance_seconds,
        passes,
        "U-Score: forward passes and per-class summaries"
    );
    tracing::info!(seconds = distance_seconds, "U-Score: class-pair distances");
    if pairs.total > 0 {
        tracing::info!(
            search = %settings.pair_search,
            pairs = pairs.total,
            evaluated = pairs.evaluated,
            screened = pairs.screened,
            bounded = pairs.bounded,
            fraction_evaluated = pairs.evaluated as f64 / pairs.total as f64,
            "U-Score: class pairs computed in full (over all units)"
        );
    }
    if certify.is_some() {
        // The largest gap, absolute and against its unit's score.
        let (mut widest, mut relative, mut at_zero) = (0.0f64, 0.0f64, 0.0f64);
        for (g, s) in gaps.iter().flatten().zip(scores.iter().flatten()) {
            widest = widest.max(*g);
            if *s > 0.0 {
                relative = relative.max(g / s);
            } else {
                at_zero = at_zero.max(*g);
            }
        }
        notes.push(format!(
            "the certified class-pair search compared every class pair of 16-bit summaries: \
             each unit's score lies within its stored bound (`bounds.u` in the score file) of \
             the exact maximum; the largest bound is {widest:.3e}, at most {:.3}% of its \
             unit's score among units scoring above 0{}",
            100.0 * relative,
            if at_zero > 0.0 {
                format!(" (units scoring 0: bounds up to {at_zero:.3e})")
            } else {
                String::new()
            }
        ));
    }
    if let Some(why) = pairs.fallback {
        notes.push(format!(
            "the bounded class-pair search computed every class pair of some units: {why}; \
             the scores are those of `pair-search all`"
        ));
    }
    Ok(UScoreRun {
        scores,
        notes,
        profile: time,
        pairs,
        check: if check.is_some() { checks } else { Vec::new() },
        passes,
        forwards,
        batches,
        spilled,
        narrowed_packs: narrowed,
        gaps: if certify.is_some() { gaps } else { Vec::new() },
    })
}

/// The classes' packs of one U-Score run and their memory plan.
struct Packing {
    /// The most samples of a pack ([`memory::packs`]; 0: each class alone).
    limit: usize,
    /// The packs of classes, each run as one forward pass.
    packs: Vec<std::ops::Range<usize>>,
    /// Each layer's memory with these packs.
    memory: Vec<memory::LayerMemory>,
    /// The forward batch: the batch size, at most the largest pack.
    batch: usize,
    /// The plan of passes under the bound.
    plan: memory::MemoryPlan,
}

/// One class's sorted projections of some units of a layer (`[units, P, n]`, rows sorted):
/// on the host, or on the model's device for the device engine.
enum Sorted {
    Host(Summary),
    Device(Tensor),
    /// 16-bit codes of `pair-search certified` (on the host).
    Quantized(Quantized),
}

/// One class's summaries of some units as 16-bit codes ([`fair_stats::certified`]).
struct Quantized {
    /// `[units, P, n]` codes, row-major.
    codes: Vec<i16>,
    /// Per unit, the class's coding error `Σ |x − x̂|` over its `P n` values.
    errors: Vec<f64>,
    /// P.
    rows: usize,
    /// n.
    cols: usize,
}

impl Quantized {
    /// Units `units` of it.
    fn units(&self, units: std::ops::Range<usize>) -> Quantized {
        let per = self.rows * self.cols;
        Quantized {
            codes: self.codes[units.start * per..units.end * per].to_vec(),
            errors: self.errors[units].to_vec(),
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// The state of `pair-search certified`: each unit's quantizer, fitted on a pilot forward
/// pass ([`fit_pilot`]) before the classes' summaries are coded, and the f32 rows of the
/// units a [`PairCheck`] compares with the exact maximum.
struct Certifier {
    /// Per layer, per unit.
    quantizers: Vec<Vec<Option<Quantizer>>>,
    /// Per layer, the checked units' f32 rows of every class, in class order.
    exact: Vec<std::collections::BTreeMap<usize, Vec<ndarray::Array2<f32>>>>,
}

impl Certifier {
    fn new(layers: &[PrunableLayer], checked: Option<Vec<Vec<usize>>>) -> Certifier {
        Certifier {
            quantizers: layers.iter().map(|l| vec![None; l.units]).collect(),
            exact: match checked {
                Some(c) => c
                    .into_iter()
                    .map(|units| units.into_iter().map(|u| (u, Vec::new())).collect())
                    .collect(),
                None => layers.iter().map(|_| Default::default()).collect(),
            },
        }
    }

    /// The codes of a summary of `units` of `layer` (their quantizers fitted), keeping the
    /// f32 rows of checked units.
    fn quantize(
        &mut self,
        layer: usize,
        units: std::ops::Range<usize>,
        summary: ndarray::ArrayView3<f32>,
    ) -> Quantized {
        let (_, rows, cols) = summary.dim();
        let quantizers = &self.quantizers[layer][units.clone()];
        let mut codes = vec![0i16; units.len() * rows * cols];
        let mut errors = vec![0.0f64; units.len()];
        codes
            .par_chunks_mut((rows * cols).max(1))
            .zip(&mut errors)
            .enumerate()
            .for_each(|(u, (codes, error))| {
                *error = quantizers[u]
                    .as_ref()
                    .expect("fitted before coding")
                    .quantize_into(summary.index_axis(Axis(0), u), codes);
            });
        for (u, kept) in self.exact[layer].range_mut(units.clone()) {
            kept.push(summary.index_axis(Axis(0), u - units.start).to_owned());
        }
        Quantized {
            codes,
            errors,
            rows,
            cols,
        }
    }
}

/// A class's summary of units `units.1` of layer `units.0` (their projections
/// `projected`, `[units, P, n]`) as the search keeps it: its rows sorted for the exact
/// searches (on the device for the device engine), its codes for the certified search
/// (the units' quantizers fitted). The time goes to `time.sorting` and `time.coding`.
/// `projected` is taken by value and dropped once sorted, so a projection held by no one
/// else is freed before the coding.
fn summarise(
    projected: Tensor,
    layer: &PrunableLayer,
    units: (usize, std::ops::Range<usize>),
    on_device: bool,
    certify: Option<&mut Certifier>,
    time: &mut TimeProfile,
) -> Result<Sorted, ScoringError> {
    let clock = std::time::Instant::now();
    let sorted = if on_device {
        let (sorted, _) = torch(projected.f_sort(-1, false), || {
            format!("sorting the projections of layer '{}'", layer.name)
        })?;
        Sorted::Device(sorted)
    } else {
        Sorted::Host(sort_on_host(&projected, layer)?)
    };
    drop(projected);
    time.sorting += clock.elapsed().as_secs_f64();
    let Some(c) = certify else {
        return Ok(sorted);
    };
    let Sorted::Host(summary) = sorted else {
        unreachable!("the certified search runs on the host engine")
    };
    let clock = std::time::Instant::now();
    let codes = c.quantize(units.0, units.1, summary.view());
    time.coding += clock.elapsed().as_secs_f64();
    Ok(Sorted::Quantized(codes))
}

/// Samples in the certified search's pilot: at least this many (or every sample).
pub const PILOT_SAMPLES: usize = 256;

/// The pilot of the certified search: the samples its quantizers are fitted on, spread over
/// the classes so that each unit's fitted range covers many of them — `m = max(batch,
/// PILOT_SAMPLES)` samples (every sample when there are fewer): the first `m / K` of each
/// class when the K classes fit, else the first sample of `m` classes evenly spaced. One
/// entry per sample.
fn pilot(classes: &[(i64, Vec<usize>)], batch: usize) -> Vec<(i64, Vec<usize>)> {
    let k = classes.len();
    let m = batch.max(PILOT_SAMPLES);
    let chosen: Vec<(i64, &[usize])> = if k <= m {
        let each = (m / k).max(1);
        classes
            .iter()
            .map(|(c, idx)| (*c, &idx[..each.min(idx.len())]))
            .collect()
    } else {
        (0..m)
            .map(|i| {
                let (c, idx) = &classes[i * k / m];
                (*c, &idx[..1.min(idx.len())])
            })
            .collect()
    };
    chosen
        .into_iter()
        .flat_map(|(c, idx)| idx.iter().map(move |&i| (c, vec![i])))
        .collect()
}

/// Fits the certified search's quantizers of every unit of the layers `group` not yet
/// fitted, on eval-mode forward passes over the [`pilot`] samples in pieces of `batch`
/// (each unit's rows' ranges over all of them, projected on each layer's directions `dirs`
/// in slices of at most `slice` samples). A unit constant on every pilot sample takes its
/// layer's widest step. Returns the forward passes' seconds.
#[allow(clippy::too_many_arguments)]
fn fit_pilot(
    certify: &mut Certifier,
    model: &Model,
    data: &Calibration,
    classes: &[(i64, Vec<usize>)],
    settings: &UScoreSettings,
    batch: usize,
    layers: &[PrunableLayer],
    group: &[usize],
    dirs: &[Option<Tensor>],
    slice: usize,
    reuse: &fair_runtime::ReuseFreedBlocks,
) -> Result<f64, ScoringError> {
    let todo: Vec<usize> = group
        .iter()
        .copied()
        .filter(|&i| certify.quantizers[i].iter().any(Option::is_none))
        .collect();
    if todo.is_empty() {
        return Ok(0.0);
    }
    let taps: Vec<&str> = todo.iter().map(|&i| layers[i].analysis.as_str()).collect();
    // Per layer, per unit and row, the smallest and largest projected value.
    let mut ranges: Vec<Option<(Tensor, Tensor)>> = todo.iter().map(|_| None).collect();
    let mut seconds = 0.0;
    for piece in pilot(classes, batch).chunks(batch.max(1)) {
        reuse.settle(0);
        let clock = std::time::Instant::now();
        let packed = forward_pack(model, data, piece, settings, &taps)?;
        seconds += clock.elapsed().as_secs_f64();
        for ((&i, tap), range) in todo.iter().zip(packed.taps).zip(&mut ranges) {
            let layer = &layers[i];
            let dir = group
                .iter()
                .position(|&g| g == i)
                .and_then(|p| dirs[p].as_ref());
            // In slices of at most one class's samples, as the plan's working memory holds
            // them: [units, P, m] each.
            for rows in tap.split(slice.max(1) as i64, 0) {
                let projected = project(&rows, layer, dir)?;
                let ctx = || format!("fitting the certified codes of layer '{}'", layer.name);
                let lo = torch(projected.f_amin(&[-1i64][..], false), ctx)?;
                let hi = torch(projected.f_amax(&[-1i64][..], false), ctx)?;
                *range = Some(match range.take() {
                    None => (lo, hi),
                    Some((l, h)) => (l.minimum(&lo), h.maximum(&hi)),
                });
            }
        }
    }
    for (&i, range) in todo.iter().zip(ranges) {
        let layer = &layers[i];
        let (lo, hi) = range.expect("the pilot has at least one sample");
        let flat = |t: Tensor| -> Result<Vec<f32>, ScoringError> {
            Ok(torch(
                Vec::<f32>::try_from(t.to_device(Device::Cpu).contiguous().view([-1])),
                || format!("fitting the certified codes of layer '{}'", layer.name),
            )?)
        };
        let (lo, hi) = (flat(lo)?, flat(hi)?);
        let rows = lo.len() / layer.units.max(1);
        let fitted: Vec<(Quantizer, bool)> = (0..layer.units)
            .map(|u| {
                let r = u * rows..(u + 1) * rows;
                let flat = lo[r.clone()]
                    .iter()
                    .zip(&hi[r.clone()])
                    .all(|(l, h)| l == h);
                (Quantizer::from_ranges(&lo[r.clone()], &hi[r]), flat)
            })
            .collect();
        // A unit constant on every pilot sample (a ReLU unit silent there) says nothing of
        // its scale: it takes the layer's widest step, so that classes the pilot missed
        // are coded rather than clamped.
        let widest = fitted
            .iter()
            .filter(|(_, flat)| !flat)
            .map(|(q, _)| q.step)
            .fold(0.0f64, f64::max);
        for (slot, (mut q, flat)) in certify.quantizers[i].iter_mut().zip(fitted) {
            if flat && widest > 0.0 {
                q.step = widest;
            }
            *slot = Some(q);
        }
    }
    Ok(seconds)
}

impl Sorted {
    /// Its units `units` of a layer of `all` units, apart from the rest.
    fn rows(self, units: std::ops::Range<usize>, all: usize) -> Sorted {
        if units == (0..all) {
            return self;
        }
        match self {
            Sorted::Host(s) => Sorted::Host(
                s.slice_axis(Axis(0), ndarray::Slice::from(units))
                    .to_owned(),
            ),
            Sorted::Device(t) => {
                Sorted::Device(t.narrow(0, units.start as i64, units.len() as i64).copy())
            }
            Sorted::Quantized(q) => Sorted::Quantized(q.units(units)),
        }
    }
}

/// The values of units `from..` of `sorted`, in order, on the host.
fn host_rows<'a>(
    sorted: &'a Sorted,
    from: usize,
    layer: &PrunableLayer,
) -> Result<std::borrow::Cow<'a, [f32]>, ScoringError> {
    match sorted {
        Sorted::Host(s) => {
            let all = s.as_slice().expect("a summary is in standard layout");
            Ok(std::borrow::Cow::Borrowed(
                &all[from * s.shape()[1] * s.shape()[2]..],
            ))
        }
        Sorted::Quantized(_) => unreachable!("codes are written by `Spill::write_codes`"),
        Sorted::Device(t) => {
            let rows = t.narrow(0, from as i64, t.size()[0] - from as i64);
            let host = rows.to_device(Device::Cpu).contiguous();
            Ok(std::borrow::Cow::Owned(torch(
                Vec::<f32>::try_from(host.view([-1])),
                || format!("copying the summaries of layer '{}'", layer.name),
            )?))
        }
    }
}

/// The taps of one pack of classes' eval-mode forward pass.
struct Packed {
    /// For every tap, its output for the pack's samples, class after class in order.
    taps: Vec<Tensor>,
    /// Forward batches run.
    batches: usize,
}

/// The eval-mode forward pass of consecutive classes' samples (their inputs selected
/// once), in batches of `settings.batch_size`, with `taps` tapped: each tap's output for
/// all of them (the one batch's output itself when there is one).
fn forward_pack(
    model: &Model,
    data: &Calibration,
    classes: &[(i64, Vec<usize>)],
    settings: &UScoreSettings,
    taps: &[&str],
) -> Result<Packed, ScoringError> {
    let device = model.device();
    let idx: Vec<usize> = classes
        .iter()
        .flat_map(|(_, idx)| idx.iter().copied())
        .collect();
    let x = data.select(&idx);
    let mut parts: Vec<Vec<Tensor>> = taps.iter().map(|_| Vec::new()).collect();
    let mut batches = 0;
    for batch in x.split(settings.batch_size as i64, 0) {
        let out = tch::no_grad(|| model.taps(&batch.to_device(device), Mode::Eval, taps))?;
        for (part, tap) in parts.iter_mut().zip(taps) {
            part.push(out[*tap].shallow_clone());
        }
        batches += 1;
    }
    drop(x);
    let taps: Vec<Tensor> = parts
        .into_iter()
        .map(|mut part| {
            if part.len() == 1 {
                part.pop().expect("one batch")
            } else {
                Tensor::cat(&part, 0)
            }
        })
        .collect();
    for tap in &taps {
        debug_assert_eq!(
            tap.size()[0],
            idx.len() as i64,
            "a tap holds every sample's row"
        );
    }
    Ok(Packed { taps, batches })
}

/// Each class `k` of `pack` with its rows of the pack's tap (`samples[k]` rows, class after
/// class): a view, the tap itself when that is all of it.
fn class_views<'a>(
    tap: &'a Tensor,
    pack: std::ops::Range<usize>,
    samples: &'a [usize],
) -> impl Iterator<Item = (usize, Tensor)> + 'a {
    let mut at = 0;
    pack.map(move |k| {
        let n = samples[k];
        let rows = if at == 0 && n as i64 == tap.size()[0] {
            tap.shallow_clone()
        } else {
            tap.narrow(0, at as i64, n as i64)
        };
        at += n;
        (k, rows)
    })
}

/// Whether `t` holds only finite values: its largest and smallest values are (NaN
/// propagates through both), found in one pass that writes no mask of its size.
fn finite(t: &Tensor) -> bool {
    let finite = |x: Tensor| x.double_value(&[]).is_finite();
    if t.numel() == 0 {
        return true;
    }
    let (lo, hi) = t.aminmax(None::<i64>, false);
    finite(lo) && finite(hi)
}

/// Checks a pack's taps (of `layers`, for the samples of `classes` in order) are finite:
/// once per tap over the whole pack; where one is not, the error names the first class
/// whose taps are not and, of its layers, the first, as checking one class at a time would.
fn check_finite(
    taps: &[Tensor],
    layers: &[&PrunableLayer],
    classes: &[(i64, Vec<usize>)],
) -> Result<(), ScoringError> {
    let Some(bad) = taps.iter().position(|t| !finite(t)) else {
        return Ok(());
    };
    let error = |layer: &PrunableLayer, class: i64| {
        ScoringError::NonFinite(format!(
            "the output of '{}' (analysis point of layer '{}') holds NaN or infinite values for class {class}",
            layer.analysis, layer.name
        ))
    };
    let sizes: Vec<usize> = classes.iter().map(|(_, idx)| idx.len()).collect();
    let mut views: Vec<_> = taps
        .iter()
        .map(|t| class_views(t, 0..classes.len(), &sizes))
        .collect();
    for (class, _) in classes {
        for (v, layer) in views.iter_mut().zip(layers) {
            let (_, rows) = v.next().expect("every tap has every class's rows");
            if !finite(&rows) {
                return Err(error(layer, *class));
            }
        }
    }
    unreachable!(
        "tap {bad} holds a value that is not finite, so some class's rows of it hold it too"
    )
}

/// Reduces pieces of layers to scores: the largest class-pair distance of every unit, the
/// pair counts, the optional check against all pairs, and their times.
struct Reducer {
    method: W1,
    search: fair_stats::PairSearch,
    on_device: bool,
    scores: Vec<Vec<f64>>,
    /// The certified search's gaps (per layer, per unit; zeros otherwise).
    gaps: Vec<Vec<f64>>,
    /// The certified search's quantizers and checked rows (`None`: an exact search).
    certify: Option<Certifier>,
    pairs: PairCounts,
    checked_units: Option<Vec<Vec<usize>>>,
    checks: Vec<LayerPairCheck>,
    check_seconds: f64,
    distance_seconds: f64,
}

impl Reducer {
    /// The scores of the units of `slice` from their per-class summaries.
    fn reduce(&mut self, slice: &Slice, per_class: Vec<Sorted>) -> Result<(), ScoringError> {
        let d = std::time::Instant::now();
        let (mut host, mut dev, mut codes) = (Vec::new(), Vec::new(), Vec::new());
        for s in per_class {
            match s {
                Sorted::Host(h) => host.push(h),
                Sorted::Device(t) => dev.push(t),
                Sorted::Quantized(q) => codes.push(q),
            }
        }
        if let Some(c) = &self.certify {
            let found = certified_scores(slice, &codes, c);
            let units = slice.units.clone();
            for (m, (score, gap)) in found.iter().zip(
                self.scores[slice.layer][units.clone()]
                    .iter_mut()
                    .zip(&mut self.gaps[slice.layer][units]),
            ) {
                *score = m.value;
                *gap = m.gap;
                self.pairs.total += m.pairs;
                self.pairs.evaluated += m.pairs;
            }
            if self.checked_units.is_some() {
                let clock = std::time::Instant::now();
                let c = &mut self.checks[slice.layer];
                let (n, bad) = check_certified(
                    slice,
                    &self.certify.as_ref().expect("certified").exact[slice.layer],
                    &self.scores[slice.layer],
                    &self.gaps[slice.layer],
                );
                let seconds = clock.elapsed().as_secs_f64();
                c.checked += n;
                c.mismatches += bad;
                c.all_pairs_seconds += seconds;
                self.check_seconds += seconds;
            }
            self.distance_seconds += d.elapsed().as_secs_f64();
            return Ok(());
        }
        let u = if self.on_device {
            device_scores(&dev)?
        } else {
            slice_scores(slice, &host, self.method, self.search, &mut self.pairs)
        };
        if let (Some(chosen), false) = (&self.checked_units, self.on_device) {
            let clock = std::time::Instant::now();
            let c = &mut self.checks[slice.layer];
            let (n, bad) = check_slice(slice, &host, self.method, &chosen[slice.layer], &u);
            let seconds = clock.elapsed().as_secs_f64();
            c.checked += n;
            c.mismatches += bad;
            c.all_pairs_seconds += seconds;
            self.check_seconds += seconds;
        }
        self.scores[slice.layer][slice.units.clone()].copy_from_slice(&u);
        self.distance_seconds += d.elapsed().as_secs_f64();
        Ok(())
    }
}

/// The temporary file of the summaries that do not fit the memory bound
/// ([`fair_fs::ScratchFile`]: unnamed, so the system removes it when it is closed, when the
/// run ends, fails or the process dies; its space reserved when it is made). Written during
/// the forward passes, one block per (layer, class), and read back piece by piece for the
/// class-pair distances.
struct Spill {
    file: fair_fs::ScratchFile,
    /// The offset of each (layer, class) block.
    at: Vec<Vec<u64>>,
    /// With the certified search, the offset of each (layer, class) block's coding errors
    /// (one f64 per unit, after its codes).
    errors_at: Vec<Vec<u64>>,
}

impl Spill {
    /// A spill file of `bytes` in `dir`, if `dir` has the space (with a tenth of its free
    /// space to spare) and the file can be made with its space reserved; else why not.
    fn create(
        dir: &std::path::Path,
        bytes: u64,
        layers: usize,
        classes: usize,
    ) -> Result<Spill, String> {
        if let Some(free) = fair_fs::free_space(dir)
            && bytes > free - free / 10
        {
            return Err(format!(
                "they take {} and '{}' has {} free",
                ByteSize(bytes),
                dir.display(),
                ByteSize(free)
            ));
        }
        let file = fair_fs::scratch_file(dir, bytes).map_err(|e| e.to_string())?;
        Ok(Spill {
            file,
            at: vec![vec![u64::MAX; classes]; layers],
            errors_at: vec![vec![u64::MAX; classes]; layers],
        })
    }

    fn error(&self, action: &'static str) -> impl FnOnce(std::io::Error) -> ScoringError + '_ {
        move |source| ScoringError::Spill {
            dir: self.file.dir().to_owned(),
            action,
            source,
        }
    }

    /// The bytes written so far.
    fn len(&self) -> u64 {
        self.file.written()
    }

    /// Appends the block of layer `layer`, class `class`.
    fn write(&mut self, layer: usize, class: usize, values: &[f32]) -> Result<(), ScoringError> {
        self.write_values(layer, class, values)
    }

    /// Appends the codes of units `from..` of `q` as the block of layer `layer`, class
    /// `class`, and keeps their errors.
    fn write_codes(
        &mut self,
        layer: usize,
        class: usize,
        q: &Quantized,
        from: usize,
    ) -> Result<(), ScoringError> {
        self.write_values(layer, class, &q.codes[from * q.rows * q.cols..])?;
        let codes = self.at[layer][class];
        self.write_values(layer, class, &q.errors[from..])?;
        self.errors_at[layer][class] = self.at[layer][class];
        self.at[layer][class] = codes;
        Ok(())
    }

    /// Units `units` (counted from the block's first) of the codes block of (`layer`,
    /// `class`), of `rows` × `cols` codes each.
    fn read_codes(
        &self,
        layer: usize,
        class: usize,
        units: std::ops::Range<usize>,
        rows: usize,
        cols: usize,
    ) -> Result<Quantized, ScoringError> {
        let per = rows * cols;
        let codes = self.read_values(layer, class, units.start * per, units.len() * per)?;
        let start = self.errors_at[layer][class];
        assert!(
            start != u64::MAX,
            "the errors were written before they are read"
        );
        let mut errors = vec![0.0f64; units.len()];
        self.file
            .read_exact_at(
                bytemuck::cast_slice_mut(&mut errors),
                start + 8 * units.start as u64,
            )
            .map_err(self.error("reading back"))?;
        Ok(Quantized {
            codes,
            errors,
            rows,
            cols,
        })
    }

    fn write_values<T: bytemuck::Pod>(
        &mut self,
        layer: usize,
        class: usize,
        values: &[T],
    ) -> Result<(), ScoringError> {
        let start = self.len();
        self.at[layer][class] = start;
        // The values' own bytes, native-endian (the file is read back by this process only).
        let written = self.file.write_all_at(bytemuck::cast_slice(values), start);
        written.map_err(self.error("writing"))
    }

    /// `count` values of the block of (`layer`, `class`), after its first `skip` (an error
    /// past the values written).
    fn read(
        &self,
        layer: usize,
        class: usize,
        skip: usize,
        count: usize,
    ) -> Result<Vec<f32>, ScoringError> {
        self.read_values(layer, class, skip, count)
    }

    fn read_values<T: bytemuck::Pod>(
        &self,
        layer: usize,
        class: usize,
        skip: usize,
        count: usize,
    ) -> Result<Vec<T>, ScoringError> {
        let start = self.at[layer][class];
        assert!(start != u64::MAX, "the block was written before it is read");
        let mut out = vec![T::zeroed(); count];
        let at = start + (std::mem::size_of::<T>() * skip) as u64;
        self.file
            .read_exact_at(bytemuck::cast_slice_mut(&mut out), at)
            .map_err(self.error("reading back"))?;
        Ok(out)
    }
}

/// The directory of the spill file by default: the system's temporary directory, or
/// `/var/tmp` where that is held in memory (spilling there would keep the summaries in the
/// memory the bound is for); an error where both are. See [`fair_fs::scratch_dir`].
fn default_spill_dir() -> Result<std::path::PathBuf, String> {
    spill_dir_among(&std::env::temp_dir(), std::path::Path::new("/var/tmp"))
}

/// [`default_spill_dir`] with the temporary directory `temp` and the fallback `fallback`.
fn spill_dir_among(
    temp: &std::path::Path,
    fallback: &std::path::Path,
) -> Result<std::path::PathBuf, String> {
    fair_fs::scratch_dir(temp, fallback).ok_or_else(|| {
        format!(
            "the temporary directory '{}' is held in memory and '{}' is no directory on \
             disk; give `spill-dir` (or TMPDIR) a directory on disk",
            temp.display(),
            fallback.display()
        )
    })
}

/// The maximum over all pairs of the units of `chosen` (a layer's checked units) that lie
/// in `slice`, in parallel over units, compared bit for bit with `found` (the slice's
/// scores). Returns (units checked, mismatches).
fn check_slice(
    slice: &Slice,
    per_class: &[Summary],
    method: W1,
    chosen: &[usize],
    found: &[f64],
) -> (usize, usize) {
    let units: Vec<usize> = chosen
        .iter()
        .filter(|u| slice.units.contains(u))
        .map(|u| u - slice.units.start)
        .collect();
    let mismatches = units
        .par_iter()
        .filter(|&&unit| {
            let views: Vec<_> = per_class
                .iter()
                .map(|s| s.index_axis(Axis(0), unit))
                .collect();
            let all = max_pair_distance(&views, method, fair_stats::PairSearch::All);
            all.value.to_bits() != found[unit].to_bits()
        })
        .count();
    (units.len(), mismatches)
}

/// The certified search's result for every unit of `slice` from the classes' codes (units
/// of the slice first), in parallel over units.
fn certified_scores(
    slice: &Slice,
    per_class: &[Quantized],
    certify: &Certifier,
) -> Vec<fair_stats::certified::CertifiedMax> {
    let quantizers = &certify.quantizers[slice.layer][slice.units.clone()];
    (0..slice.units.len())
        .into_par_iter()
        .map(|unit| {
            let Some(first) = per_class.first() else {
                return fair_stats::certified::CertifiedMax {
                    value: 0.0,
                    gap: 0.0,
                    pairs: 0,
                };
            };
            let per = first.rows * first.cols;
            let codes: Vec<&[i16]> = per_class
                .iter()
                .map(|q| &q.codes[unit * per..(unit + 1) * per])
                .collect();
            let errors: Vec<f64> = per_class.iter().map(|q| q.errors[unit]).collect();
            certified_max(
                quantizers[unit].as_ref().expect("fitted before coding"),
                &codes,
                &errors,
                first.rows,
                first.cols,
            )
        })
        .collect()
}

/// The certified search's check: on the checked units of `slice` (their f32 rows kept in
/// `exact`), the exact maximum over all pairs must lie within each unit's gap of its score.
/// Returns (units checked, units outside their gap).
fn check_certified(
    slice: &Slice,
    exact: &std::collections::BTreeMap<usize, Vec<ndarray::Array2<f32>>>,
    scores: &[f64],
    gaps: &[f64],
) -> (usize, usize) {
    let units: Vec<(&usize, &Vec<ndarray::Array2<f32>>)> =
        exact.range(slice.units.clone()).collect();
    let outside = units
        .par_iter()
        .filter(|(u, rows)| {
            let views: Vec<_> = rows.iter().map(|r| r.view()).collect();
            let all = max_pair_distance(&views, W1::Exact, fair_stats::PairSearch::All);
            (all.value - scores[**u]).abs() > gaps[**u]
        })
        .count();
    (units.len(), outside)
}

/// The U-Score of every unit of `slice`: the largest distance over class pairs, from the
/// slice's per-class summaries (units of the slice first), by `search`; the pairs it took
/// are added to `tally`.
fn slice_scores(
    slice: &Slice,
    per_class: &[Summary],
    method: W1,
    search: fair_stats::PairSearch,
    tally: &mut PairCounts,
) -> Vec<f64> {
    let found: Vec<PairMax> = (0..slice.units.len())
        .into_par_iter()
        .map(|unit| {
            let views: Vec<_> = per_class
                .iter()
                .map(|s| s.index_axis(Axis(0), unit))
                .collect();
            max_pair_distance(&views, method, search)
        })
        .collect();
    found
        .iter()
        .map(|m| {
            tally.add(m);
            m.value
        })
        .collect()
}

/// The device engine: the U-Score of every unit from the per-class sorted projections
/// (`[units, P, n]` each, one n for all classes) without leaving their device. The exact W1
/// of two equal-size samples is the mean absolute difference of their sorted values; its
/// mean over the P directions is the sliced distance, and the maximum over class pairs the
/// score.
fn device_scores(per_class: &[Tensor]) -> Result<Vec<f64>, ScoringError> {
    let ctx = || "comparing class pairs on the device".to_string();
    let k = per_class.len();
    let mut best: Option<Tensor> = None;
    for a in 0..k {
        for b in a + 1..k {
            let d = torch(
                (&per_class[a] - &per_class[b])
                    .f_abs()
                    .and_then(|x| x.f_mean_dim(-1, false, Kind::Float))
                    .and_then(|x| x.f_mean_dim(-1, false, Kind::Double)),
                ctx,
            )?;
            best = Some(match best {
                None => d,
                Some(m) => torch(m.f_maximum(&d), ctx)?,
            });
        }
    }
    let best = best.expect("at least two classes are compared");
    Ok(torch(
        Vec::<f64>::try_from(best.to_device(Device::Cpu)),
        ctx,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_search_names_parse_to_their_variants() {
        for (search, name) in PairSearch::VARIANTS.into_iter().zip(PairSearch::NAMES) {
            assert_eq!(search.name(), name);
            assert_eq!(name.parse::<PairSearch>(), Ok(search));
        }
        let e = "exact".parse::<PairSearch>().unwrap_err().to_string();
        for name in PairSearch::NAMES {
            assert!(e.contains(&format!("'{name}'")), "{e}");
        }
    }

    #[test]
    fn slice_scores_search_as_asked_and_count_the_pairs() {
        // 30 classes of 3 units, P = 4, n = 5; class c sits around c², so a few far classes
        // decide every unit.
        let per_class: Vec<Summary> = (0..30)
            .map(|c| {
                Array3::from_shape_fn((3, 4, 5), |(u, r, i)| {
                    ((c * c) as f32) * (u + 1) as f32 + r as f32 + i as f32 * 0.5
                })
            })
            .collect();
        let slice = Slice {
            layer: 0,
            units: 0..3,
        };
        let mut all = PairCounts::default();
        let mut bounded = PairCounts::default();
        let a = slice_scores(
            &slice,
            &per_class,
            W1::Exact,
            fair_stats::PairSearch::All,
            &mut all,
        );
        let b = slice_scores(
            &slice,
            &per_class,
            W1::Exact,
            fair_stats::PairSearch::Bounded,
            &mut bounded,
        );
        // Pair (0, 29) differs by 841·(u + 1) everywhere.
        assert_eq!(a, vec![841.0, 1682.0, 2523.0]);
        assert_eq!(b, a);
        assert_eq!((all.total, all.evaluated), (3 * 435, 3 * 435));
        assert_eq!(bounded.total, 3 * 435);
        assert!(bounded.evaluated < 100, "{bounded:?}");
        assert_eq!(bounded.fallback, None);

        // The check compares the chosen units of the slice (here units 1 and 2 of a layer
        // whose units 0..3 sit at 10..13) bit for bit with the scores given.
        let later = Slice {
            layer: 0,
            units: 10..13,
        };
        assert_eq!(
            check_slice(&later, &per_class, W1::Exact, &[0, 11, 12, 20], &b),
            (2, 0)
        );
        let mut off = b.clone();
        off[2] = f64::from_bits(off[2].to_bits() + 1);
        assert_eq!(
            check_slice(&later, &per_class, W1::Exact, &[11, 12], &off),
            (2, 1)
        );
        assert_eq!(
            check_slice(&slice, &per_class, W1::Exact, &[5], &off),
            (0, 0)
        );
    }

    #[test]
    fn the_pilot_spreads_over_the_classes() {
        let classes = |k: usize, n: usize| -> Vec<(i64, Vec<usize>)> {
            (0..k)
                .map(|c| (c as i64, (c * n..(c + 1) * n).collect()))
                .collect()
        };
        // Fewer classes than samples: the first m / K of each (all of a short class).
        let p = pilot(&classes(100, 8), 8);
        assert_eq!(p.len(), 100 * 2);
        assert_eq!(&p[..3], &[(0, vec![0]), (0, vec![1]), (1, vec![8])]);
        let p = pilot(&classes(3, 4), 8);
        assert_eq!(p.len(), 12);
        // More classes than samples: the first sample of m classes evenly spaced.
        let p = pilot(&classes(1000, 8), 64);
        assert_eq!(p.len(), PILOT_SAMPLES);
        assert_eq!(p[0], (0, vec![0]));
        assert_eq!(p[1], (3, vec![24]));
        assert_eq!(p[255], (996, vec![7968]));
        // A batch larger than the pilot's floor sets its size.
        assert_eq!(pilot(&classes(1000, 8), 512).len(), 512);
    }

    #[test]
    fn checked_units_are_distinct_sorted_and_seeded() {
        let layer = |units| PrunableLayer {
            name: "conv".into(),
            units,
            conv: true,
            analysis: "conv".into(),
            heads: None,
        };
        let layers = [layer(100), layer(3)];
        let c = PairCheck {
            units_per_layer: 8,
            seed: 5,
        };
        let u = check_units(&c, &layers, &[0, 1]);
        assert_eq!(u[0].len(), 8);
        assert!(u[0].windows(2).all(|w| w[0] < w[1]) && u[0][7] < 100);
        assert_eq!(u[1], [0, 1, 2]);
        assert_eq!(check_units(&c, &layers, &[0, 1]), u);
        assert_ne!(check_units(&c, &layers, &[1, 2])[0], u[0]);
    }

    #[test]
    fn spill_blocks_read_back_bit_for_bit_and_need_room() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill = Spill::create(dir.path(), 1 << 20, 2, 2).unwrap();
        // A long block (256 KiB) and a short one.
        const SPILL_BLOCK: usize = 1 << 16;
        let a: Vec<f32> = (0..SPILL_BLOCK + 7).map(|i| i as f32 * -0.37).collect();
        let b = vec![f32::MIN_POSITIVE, -0.0, f32::MAX];
        spill.write(1, 0, &b).unwrap();
        spill.write(0, 1, &a).unwrap();
        assert_eq!(spill.read(1, 0, 0, 3).unwrap(), b);
        let back = spill.read(0, 1, 5, SPILL_BLOCK + 2).unwrap();
        assert!(
            back.iter()
                .zip(&a[5..])
                .all(|(x, y)| x.to_bits() == y.to_bits())
        );
        assert_eq!(back.len(), SPILL_BLOCK + 2);
        // The file has no name in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // The bytes written (the reserved space is not counted).
        assert_eq!(spill.len(), 4 * (3 + SPILL_BLOCK as u64 + 7));
        // Past the end of the values written (inside the reserved space).
        let e = spill
            .read(0, 1, 0, SPILL_BLOCK + 8)
            .unwrap_err()
            .to_string();
        assert!(e.contains("temporary file"), "{e}");
        if cfg!(unix) {
            let e = Spill::create(dir.path(), u64::MAX / 2, 1, 1).err().unwrap();
            assert!(e.contains("free"), "{e}");
        }
        let e = Spill::create(&dir.path().join("missing"), 8, 1, 1)
            .err()
            .unwrap();
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_default_spill_dir_avoids_memory() {
        // A directory on disk (the crate's sources, unless those are in memory) and a tmpfs
        // where one is mounted.
        let disk = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        if fair_fs::is_memory_backed(disk) {
            return;
        }
        assert_eq!(spill_dir_among(disk, disk).unwrap(), disk);
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let Some(memory) = mounts.lines().find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 2 && f[2] == "tmpfs" && std::path::Path::new(f[1]).is_dir())
                .then(|| std::path::PathBuf::from(f[1]))
        }) else {
            return;
        };
        assert_eq!(spill_dir_among(&memory, disk).unwrap(), disk);
        let e = spill_dir_among(&memory, &memory).unwrap_err();
        assert!(
            e.contains("held in memory") && e.contains("`spill-dir`") && e.contains("TMPDIR"),
            "{e}"
        );
    }

    /// The host summary equals every row sorted by `f32::total_cmp`, bit for bit: of a
    /// projection as `project` returns it (a permuted view of the sample-major product),
    /// of some of its units (a narrowed view), and with ties, both zeros and extremes.
    #[test]
    fn host_sort_equals_a_comparison_sort_of_each_row() {
        let layer = PrunableLayer {
            name: "conv".into(),
            units: 3000,
            conv: true,
            analysis: "conv".into(),
            heads: None,
        };
        for (n, units, p) in [(1i64, 5i64, 3i64), (32, 3000, 2), (7, 40, 16), (300, 4, 2)] {
            let product = Tensor::randn([n, units, p], (Kind::Float, Device::Cpu)) * 3.0;
            let product = product.round_decimals(1).contiguous(); // ties, both zeros
            let flat = product.view([-1]);
            let _ = flat.get(0).fill_(-0.0);
            let _ = flat.get(1 % (n * units * p)).fill_(f64::from(f32::MAX));
            let projected = product.permute([1, 2, 0]);
            for view in [
                projected.shallow_clone(),
                projected.narrow(0, units / 2, units - units / 2),
            ] {
                let mut want: Vec<f32> = Vec::try_from(view.contiguous().view([-1])).unwrap();
                for row in want.chunks_mut(n as usize) {
                    row.sort_by(f32::total_cmp);
                }
                let got = sort_on_host(&view, &layer).unwrap();
                assert_eq!(got.dim(), (view.size()[0] as usize, p as usize, n as usize));
                let got: Vec<u32> = got.iter().map(|x| x.to_bits()).collect();
                let want: Vec<u32> = want.iter().map(|x| x.to_bits()).collect();
                assert_eq!(got, want, "n {n}, units {units}, P {p}");
            }
        }
    }
}
