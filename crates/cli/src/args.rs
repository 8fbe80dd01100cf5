//! Argument groups shared by several commands, and how they resolve against a config and the
//! libraries' defaults (defaults are never restated here: they come from the `Default`
//! impls of the settings they fill).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Args};
use fair_data::ImageSource;
use fair_ir::Graph;
use fair_pipeline::{DrawSettings, PipelineError, Preset, PruneSection, RawSettings, RunConfig};
use fair_scoring::{
    AnalysisPoint, ConvDistance, MaxMemory, PairSearch, RMode, ScoringSettings, Wasserstein,
};

/// Which model: a zoo name or an IR file.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["model", "graph"])))]
pub struct ModelArgs {
    /// Zoo model name (see `fair-pruner models`), e.g. resnet50, vgg16_bn_cifar, densenet40.
    #[arg(long)]
    pub model: Option<String>,
    /// Per-sample input shape CxHxW (or F) for a zoo model, e.g. 3x224x224 [default: the
    /// model's usual size], or for an ONNX --graph whose file leaves it symbolic.
    #[arg(long, value_name = "CxHxW")]
    pub input: Option<String>,
    /// Number of classes for a zoo model [default: the model's usual count].
    #[arg(long, requires = "model")]
    pub classes: Option<usize>,
    /// A model file: an IR graph (.toml or .json, e.g. one written by --write-graph or by
    /// `apply`) or an ONNX model (.onnx, e.g. from torch.onnx.export), whose weights are used
    /// unless --weights is given.
    #[arg(long, value_name = "FILE")]
    pub graph: Option<PathBuf>,
    /// Accept NaN or infinite weights in an ONNX --graph (refused by default, naming the
    /// tensor).
    #[arg(long, requires = "graph")]
    pub allow_non_finite: bool,
}

impl ModelArgs {
    /// `--input`, parsed.
    fn input_shape(&self) -> Result<Option<Vec<usize>>> {
        self.input
            .as_deref()
            .map(|text| {
                fair_ir::parse_shape(text)
                    .map_err(anyhow::Error::msg)
                    .context("--input")
            })
            .transpose()
    }

    /// How an ONNX --graph is imported: `--input` and `--allow-non-finite`.
    fn import_options(&self) -> Result<fair_onnx::ImportOptions> {
        Ok(fair_onnx::ImportOptions {
            input_shape: self.input_shape()?,
            allow_non_finite: self.allow_non_finite,
            ..Default::default()
        })
    }

    /// The graph named by the flags.
    pub fn load(&self) -> Result<Graph> {
        if let Some(path) = &self.graph {
            return Ok(fair_pipeline::load_graph_with(path, self.input_shape()?)?);
        }
        let name = self
            .model
            .as_deref()
            .expect("clap requires --model or --graph");
        let Some(info) = fair_zoo::info(name) else {
            bail!("{}", fair_zoo::ZooError::UnknownModel { name: name.into() });
        };
        let input = self
            .input_shape()?
            .unwrap_or_else(|| info.default_input.to_vec());
        let classes = self.classes.unwrap_or(info.default_classes);
        Ok(fair_zoo::build(name, &input, classes)?)
    }
}

impl ModelArgs {
    /// The model with its weights: `weights` (safetensors) when given, else the weights of an
    /// ONNX `--graph`. A zoo model or an IR graph needs `weights`.
    pub fn load_model(
        &self,
        weights: Option<&std::path::Path>,
        device: tch::Device,
    ) -> Result<fair_runtime::Model> {
        if let Some(path) = &self.graph
            && fair_pipeline::is_onnx(path)
        {
            let imported = fair_pipeline::import_onnx(path, &self.import_options()?)?;
            crate::notes::print(&imported.notes);
            return Ok(match weights {
                Some(w) => fair_runtime::Model::from_safetensors(imported.graph, w, device)?,
                None => fair_pipeline::onnx_model(imported, device)?,
            });
        }
        let Some(weights) = weights else {
            bail!(
                "--weights FILE is required: the model's trained weights (safetensors). An ONNX \
                 model (--graph model.onnx) carries its own"
            );
        };
        Ok(fair_runtime::Model::from_safetensors(
            self.load()?,
            weights,
            device,
        )?)
    }
}

/// Shared by the commands that run a model: libtorch threads and the device.
#[derive(Debug, Args)]
pub struct ComputeArgs {
    /// libtorch CPU threads [default: libtorch's choice].
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub threads: Option<i32>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ComputeArgs {
    /// Applies the thread count (at most the machine's cores, with a note) and parses the
    /// device.
    pub fn apply(&self) -> Result<tch::Device> {
        if let Some(t) = self.threads {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            let t = if t as usize > cores {
                crate::notes::print(&[format!(
                    "--threads {t} is more than the {cores} core(s) of this machine; using {cores}"
                )]);
                cores as i32
            } else {
                t
            };
            tch::set_num_threads(t);
        }
        Ok(fair_runtime::parse_device(&self.device)?)
    }
}

fn default_help(what: &str, value: impl std::fmt::Display) -> String {
    format!("{what} [default: {value}]")
}

/// The command-line spelling of an enum value.
fn name<T: clap::ValueEnum>(v: T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

/// Settings of the built-in criteria (score and prune). Unset flags fall back to the config
/// (prune) and then to `fair_scoring::ScoringSettings::default()`.
#[derive(Debug, Args)]
pub struct ScoringArgs {
    /// Criteria to compute, comma-separated (see `fair-pruner criteria`)
    /// [default: u,r,l1,group-l1].
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub criteria: Vec<String>,
    /// Starting configuration of the scoring, the counts and the steps after surgery:
    /// `fair-pruner` (the default, chosen on a validation split: docs/results.md) or
    /// `paper` (the authors' package network-pruner 2.16 as exactly as fair-pruner reproduces
    /// it). Every flag or config key below overrides its part; docs/algorithm.md, "Presets",
    /// lists what each sets [default: fair-pruner]
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    #[arg(
        long,
        value_enum,
        help = "Where the U-Score reads each unit's output [default: from --preset]"
    )]
    pub analysis_point: Option<AnalysisPoint>,
    #[arg(long, value_enum, help = default_help("How conv channels are compared for the U-Score", name(ScoringSettings::default().u.conv)))]
    pub conv_distance: Option<ConvDistance>,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), help = default_help("Random directions of the sliced U-Score", ScoringSettings::default().u.projections))]
    pub projections: Option<u64>,
    #[arg(
        long,
        value_enum,
        help = "1-D Wasserstein variant for unequal sample sizes [default: from --preset]"
    )]
    pub w1: Option<Wasserstein>,
    #[arg(
        long,
        value_enum,
        help = "Forward mode of the R-Score passes [default: from --preset]"
    )]
    pub r_mode: Option<RMode>,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), help = default_help("Batch size of the R-Score passes (calibration samples in order)", ScoringSettings::default().r.batch_size))]
    pub batch_size: Option<u64>,
    /// Memory bound of the U- and R-Scores, e.g. 4GiB, 512MiB, 8G, or none (model and
    /// calibration data included): U-Score layers that do not fit in one pass are scored in
    /// several, with identical scores; R-Score batches that do not fit run in pieces
    /// [default: 80% of the available memory]
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<MaxMemory>,
    /// Where the U-Score keeps the summaries that do not fit --max-memory, so that each
    /// class's forward pass runs once: an unnamed temporary file with its space reserved up
    /// front, removed when the run ends. `none` keeps no file: the layers are scored in
    /// passes that each re-run the forward passes, with a note (also what happens when the
    /// directory lacks the room) [default: TMPDIR, or /var/tmp where that is held in memory]
    #[arg(long, value_name = "DIR|none")]
    pub spill_dir: Option<fair_scoring::SpillDir>,
    /// How the U-Score finds each unit's largest class-pair distance: `bounded` computes in
    /// full only the pairs that bounds cannot rule out (the same scores as `all`, bit for
    /// bit; classes of unequal sizes fall back to all pairs), `all` computes every pair, for
    /// checking; `certified` (for hundreds to thousands of classes) keeps 16-bit summaries
    /// (half the memory and spill) and compares every pair in exact integer arithmetic: each
    /// score is approximate and the score file stores, per unit, a computed bound on how far
    /// it can lie from the exact maximum (`bounds.u`; needs classes of equal size on the
    /// host, else `bounded` runs, with a note) [default: bounded]
    #[arg(long, value_enum)]
    pub pair_search: Option<PairSearch>,
}

impl ScoringArgs {
    /// Puts the flags given into `raw` (the settings the library resolves).
    pub fn fill(&self, raw: &mut RawSettings) {
        let p = &mut raw.prune;
        if !self.criteria.is_empty() {
            p.criteria = Some(self.criteria.clone());
        }
        p.preset = self.preset;
        p.analysis_point = self.analysis_point;
        p.projections = self.projections.map(|n| n as usize);
        p.r_mode = self.r_mode;
        p.max_memory = self.max_memory;
        p.spill_dir = self.spill_dir.clone();
        p.pair_search = self.pair_search;
        raw.conv_distance = self.conv_distance;
        raw.w1 = self.w1;
        raw.batch_size = self.batch_size.map(|b| b as usize);
    }
}

/// A latency target and how its latency table is obtained (`prune` and `ratios`).
#[derive(Debug, Args)]
pub struct LatencyArgs {
    /// Remove at least this fraction of latency (e.g. 0.5), as a latency table measured on
    /// --latency-on (or given with --latency-table) predicts it: the smallest α that reaches
    /// it, like --target-macs with latency in place of MACs.
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true)]
    pub target_latency: Option<f64>,
    /// Where the latency table is measured and the pruned models timed: libtorch-cpu
    /// (fair-pruner's own libtorch executor, in this process), onnxruntime-cpu (ONNX Runtime
    /// on the exported ONNX models, through a Python with the `onnxruntime` and `numpy`
    /// packages), or pytorch-cpu (the exported `model.py` in eager PyTorch, through a Python
    /// with `torch` and `safetensors`: what a user running `model.py` measures, including
    /// Python's per-op cost, which matters for small models at small batches; see
    /// --latency-python), or cuda (fair-pruner's libtorch executor on CUDA device 0, each
    /// pass synchronised; needs an NVIDIA GPU and a CUDA build of libtorch). Models are
    /// timed on the runtime's device wherever they were loaded.
    /// With --latency-table it must be the table's runtime. Without --target-latency
    /// (`prune` only; `ratios` refuses it): every exported model of the goal (--target-macs,
    /// --target-params, --alpha) is timed on this runtime against the unpruned model at
    /// --latency-batch and --latency-threads, as a latency target's final figure is (no
    /// table, no correction) [default: libtorch-cpu, or the given table's].
    #[arg(long, value_name = "RUNTIME")]
    pub latency_on: Option<fair_pipeline::LatencyRuntime>,
    /// Batch size the latency table is measured and the pruned models timed at (with
    /// --target-latency or --latency-on) [default: 1, or the given table's].
    #[arg(long, value_name = "N")]
    pub latency_batch: Option<usize>,
    /// Threads the latency table is measured and the pruned models timed with (with
    /// --target-latency or --latency-on) [default: libtorch's, or the given table's].
    #[arg(long, value_name = "N")]
    pub latency_threads: Option<usize>,
    /// A latency table (JSON, e.g. measured on the target device) to use instead of
    /// measuring one; see docs/algorithm.md, "Latency targets".
    #[arg(long, value_name = "FILE")]
    pub latency_table: Option<std::path::PathBuf>,
    /// The relative tolerance of a latency target measured on a runtime fair-pruner times on
    /// (any --latency-on runtime): candidates are rebuilt with a corrected table target (at most
    /// 4) until the measured reduction is within half this fraction of the target, and the
    /// target is met when the candidate kept is within it [default: 0.05].
    #[arg(long, value_name = "FRACTION")]
    pub latency_tolerance: Option<f64>,
    /// The Python interpreter that runs ONNX Runtime for --latency-on onnxruntime-cpu (it
    /// needs `pip install onnxruntime numpy`) or eager PyTorch for --latency-on pytorch-cpu
    /// (`pip install torch safetensors`); fair-pruner itself needs no Python [default:
    /// $FAIR_PRUNER_PYTHON, else python3].
    #[arg(long, value_name = "PATH")]
    pub latency_python: Option<std::path::PathBuf>,
}

impl LatencyArgs {
    /// Puts the flags given into `prune` (the settings the library resolves).
    pub fn fill(&self, prune: &mut PruneSection) {
        prune.target_latency = self.target_latency;
        prune.latency_on = self.latency_on;
        prune.latency_batch = self.latency_batch;
        prune.latency_threads = self.latency_threads;
        prune.latency_table = self.latency_table.clone();
        prune.latency_tolerance = self.latency_tolerance;
        prune.latency_python = self.latency_python.clone();
    }

    /// `e` naming the config key (`[prune] latency_tolerance`) when it is about a latency
    /// setting that `config` (the config file's `[prune]` keys) gave and none of these
    /// flags did.
    pub fn config_named(&self, e: PipelineError, config: &PruneSection) -> PipelineError {
        let PipelineError::Invalid { setting, detail } = e else {
            return e;
        };
        let c = config;
        let (flag, key) = match setting.as_str() {
            "target-latency" => (self.target_latency.is_some(), c.target_latency.is_some()),
            "latency-on" => (self.latency_on.is_some(), c.latency_on.is_some()),
            "latency-batch" => (self.latency_batch.is_some(), c.latency_batch.is_some()),
            "latency-threads" => (self.latency_threads.is_some(), c.latency_threads.is_some()),
            "latency-table" => (self.latency_table.is_some(), c.latency_table.is_some()),
            "latency-tolerance" => (
                self.latency_tolerance.is_some(),
                c.latency_tolerance.is_some(),
            ),
            "latency-python" => (self.latency_python.is_some(), c.latency_python.is_some()),
            _ => (true, false),
        };
        let setting = if key && !flag {
            format!("[prune] {}", setting.replace('-', "_"))
        } else {
            setting
        };
        PipelineError::Invalid { setting, detail }
    }
}

/// How calibration samples are drawn (and, for the U-Score, compared).
#[derive(Debug, Args)]
pub struct DrawArgs {
    #[arg(long, alias = "samples-per-class", value_parser = clap::value_parser!(u64).range(1..), help = default_help("Calibration samples per class", DrawSettings::default().per_class))]
    pub per_class: Option<u64>,
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..), help = default_help("At most this many classes, chosen with --seed", DrawSettings::default().max_classes))]
    pub max_classes: Option<u64>,
    #[arg(long, help = default_help("Seed of the draw, the projections and fine-tuning", DrawSettings::default().seed))]
    pub seed: Option<u64>,
}

impl DrawArgs {
    /// Puts the flags given into `raw` (the settings the library resolves).
    pub fn fill(&self, raw: &mut RawSettings) {
        raw.prune.per_class = self.per_class.map(|v| v as usize);
        raw.prune.max_classes = self.max_classes.map(|v| v as usize);
        raw.prune.seed = self.seed;
    }

    /// The flags, else the config's `[prune]` values, else the defaults.
    pub fn settings(&self, section: &PruneSection) -> DrawSettings {
        let mut flags = RawSettings::default();
        self.fill(&mut flags);
        let config = RawSettings {
            prune: section.clone(),
            ..Default::default()
        };
        config.overridden_by(&flags).draw_settings()
    }
}

/// A library error as the CLI prints it: the setting it names (`finetune-lr`) becomes the
/// flag that sets it (`--finetune-lr`), and so do the settings its text names in backticks:
/// in a setting's error, a refused output path (whose inputs the library names by setting,
/// `` `weights` ``), a scoring or training setting's error, torchrun's, and coupled layers
/// that disagree (`` `rule` ``). Other errors pass through unchanged.
pub fn cli_error(e: anyhow::Error) -> anyhow::Error {
    // The texts are the library's (`fair_pipeline::flag_text`), which bindings print too.
    let e = match e.downcast::<PipelineError>() {
        Ok(p) => {
            return match fair_pipeline::flag_text(&p) {
                Some(text) => anyhow::anyhow!("{text}"),
                None => p.into(),
            };
        }
        Err(e) => e,
    };
    // Respelled only when the error is the whole message (no context around it).
    if e.chain().count() == 1
        && let Some(text) = fair_pipeline::flag_text(e.as_ref())
    {
        return anyhow::anyhow!("{text}");
    }
    e
}

/// Seed of `--train-fraction` subsets (fixed, so every run sees the same images).
const SUBSET_SEED: u64 = 20260102;

/// Flags shared by the data-driven commands; they override the config.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A run configuration (see configs/).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Zoo model (overrides [model] zoo).
    #[arg(long)]
    pub model: Option<String>,
    /// Model file: an IR graph, e.g. a pruned model's model.toml, or an ONNX model whose
    /// weights are used unless --weights is given (overrides [model]).
    #[arg(long, value_name = "FILE", conflicts_with = "model")]
    pub graph: Option<PathBuf>,
    /// Accept NaN or infinite weights in an ONNX --graph (refused by default, naming the
    /// tensor).
    #[arg(long)]
    pub allow_non_finite: bool,
    /// Input CxHxW of a zoo model, or of an ONNX --graph whose file leaves it symbolic.
    #[arg(long, value_name = "CxHxW")]
    pub input: Option<String>,
    /// Classes of a zoo model.
    #[arg(long)]
    pub classes: Option<usize>,
    /// Data source: fashion-mnist, mnist (fetched and cached), or idx, cifar10, cifar100,
    /// svhn (train_32x32.mat, test_32x32.mat), folder (train/<class>/*, test/<class>/*) read
    /// from --data-path.
    #[arg(long, value_name = "SOURCE")]
    pub data: Option<fair_pipeline::DataSource>,
    /// Directory of an idx, cifar10, cifar100, svhn or folder source. No file inside it is ever
    /// written.
    #[arg(long, value_name = "DIR")]
    pub data_path: Option<PathBuf>,
    /// folder source: follow no link to a directory (overrides [data] follow_links); a class
    /// directory that is a link is then an error. Links that lead back into the dataset are
    /// never followed, and are reported.
    #[arg(long)]
    pub no_follow_links: bool,
    /// folder source: the most pixels an image may declare before it is decoded (overrides
    /// [data] max_pixels) [default: 178956970, PIL's decompression-bomb limit]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=fair_pipeline::MAX_PIXELS_SETTING))]
    pub max_pixels: Option<u64>,
    /// Weights to start from (safetensors).
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Use only this fraction of the training split (stratified by class, seeded), e.g.
    /// 0.25 for a quick fine-tune. The test split is never reduced.
    #[arg(long, value_name = "FRACTION")]
    pub train_fraction: Option<f64>,
    /// Per-channel mean subtracted after scaling pixels to [0, 1], e.g. 0.485,0.456,0.406
    /// (overrides [transform] mean) [default: the model's recorded preprocessing, else 0]
    #[arg(long, value_delimiter = ',', value_name = "M,...", requires = "std")]
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by, e.g. 0.229,0.224,0.225 (overrides
    /// [transform] std) [default: the model's recorded preprocessing, else 1]
    #[arg(long, value_delimiter = ',', value_name = "S,...", requires = "mean")]
    pub std: Vec<f32>,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

/// What [`RunArgs::setup`] loads.
pub struct Setup {
    /// The merged configuration.
    pub config: RunConfig,
    /// The model (with its weights, if given).
    pub model: fair_runtime::Model,
    /// Training split (in memory, or streamed from an ImageFolder).
    pub train: fair_data::Source,
    /// Test split.
    pub test: fair_data::Source,
}

impl RunArgs {
    /// The config file merged with the flags (cheap: nothing is loaded but the config).
    pub fn config(&self) -> Result<RunConfig> {
        self.merged_config().map_err(cli_error)
    }

    fn merged_config(&self) -> Result<RunConfig> {
        let mut c = match &self.config {
            Some(p) => RunConfig::load(p)?,
            None => RunConfig::default(),
        };
        if let Some(m) = &self.model {
            c.model.zoo = Some(m.clone());
            c.model.graph = None;
        }
        if let Some(g) = &self.graph {
            c.model.graph = Some(g.clone());
            c.model.zoo = None;
        }
        if self.allow_non_finite {
            c.model.allow_non_finite = true;
        }
        if let Some(i) = &self.input {
            let s = fair_ir::parse_shape(i)
                .map_err(anyhow::Error::msg)
                .context("--input")?;
            let [a, b, d] = s[..] else {
                bail!("--input needs CxHxW, found {i}")
            };
            c.model.input = Some([a, b, d]);
        }
        if self.classes.is_some() {
            c.model.classes = self.classes;
        }
        if self.data.is_some() {
            c.data.source = self.data;
        }
        if self.data_path.is_some() {
            c.data.path = self.data_path.clone();
        }
        if self.no_follow_links {
            c.data.follow_links = Some(false);
        }
        if self.max_pixels.is_some() {
            c.data.max_pixels = self.max_pixels;
        }
        if self.weights.is_some() {
            c.model.weights = self.weights.clone();
        }
        if !self.mean.is_empty() {
            c.transform.mean = self.mean.clone();
            c.transform.std = self.std.clone();
        }
        if let Some(f) = self.train_fraction
            && !(f > 0.0 && f <= 1.0)
        {
            bail!("--train-fraction must be in (0, 1], found {f}");
        }
        Ok(c)
    }

    /// Loads the model and the data of `config` (from [`RunArgs::config`]). With a U-Score
    /// `memory_bound`, a bound too small for the model fails before the data is loaded.
    pub fn setup(
        &self,
        config: RunConfig,
        memory_bound: Option<fair_scoring::ByteSize>,
    ) -> Result<Setup> {
        self.load(config, memory_bound).map_err(cli_error)
    }

    fn load(
        &self,
        config: RunConfig,
        memory_bound: Option<fair_scoring::ByteSize>,
    ) -> Result<Setup> {
        let device = self.compute.apply()?;
        // The model, and every check that needs it but no data (the memory bound, the
        // transform against its input, the data section), in the library.
        let loaded = fair_pipeline::load_model(&config, memory_bound, device)?;
        crate::notes::print(&loaded.notes);
        if let Some(w) = loaded.warning {
            eprintln!(
                "warning: {}",
                fair_pipeline::printable(&fair_pipeline::flags_in(&w))
            );
        }
        let (config, model) = (loaded.config, loaded.model);
        let input = fair_pipeline::image_input(model.graph())?;
        let (mut train, test, notes) = config.data(input)?;
        crate::notes::print(&notes);
        if let Some(f) = self.train_fraction {
            let name = format!("{} ({:.0}%)", train.name(), 100.0 * f);
            let (part, _) =
                train.split_stratified(SUBSET_SEED, |n| ((f * n as f64).round() as usize).max(1));
            train = part.with_name(name);
        }
        fair_pipeline::check_classes(&model, &train)?;
        Ok(Setup {
            config,
            model,
            train,
            test,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_are_printed_with_flags() {
        let e = cli_error(PipelineError::invalid("finetune-lr", "must be positive").into());
        assert_eq!(e.to_string(), "--finetune-lr: must be positive");
        let e = cli_error(
            PipelineError::invalid("distill-temperature", "needs `distill-weight`").into(),
        );
        assert_eq!(
            e.to_string(),
            "--distill-temperature: needs --distill-weight"
        );
        let e = cli_error(PipelineError::invalid("goal", "no pruning goal: give `alpha`").into());
        assert_eq!(e.to_string(), "no pruning goal: give --alpha");
        // Backticks around something that is not a setting name stay as they are.
        assert_eq!(
            fair_pipeline::flags_in("a `b c` and `` end`"),
            "a `b c` and `` end`"
        );
        // Inputs of a refused output and training settings are named by setting; the CLI
        // prints their flags.
        let e = cli_error(
            PipelineError::Fs(fair_fs::FsError::Output {
                path: "w".into(),
                detail: "`out` is the same file as the input `weights` 'w'".into(),
            })
            .into(),
        );
        assert_eq!(
            e.to_string(),
            "refusing to write 'w': --out is the same file as the input --weights 'w'"
        );
        let e = cli_error(
            fair_train::TrainError::Setting {
                name: "distill_weight",
                detail: "must be in [0, 1], found 2".into(),
            }
            .into(),
        );
        assert_eq!(
            e.to_string(),
            "invalid training setting --distill-weight ([prune] distill_weight): must be in [0, 1], found 2"
        );
        let e = cli_error(
            PipelineError::Scoring(fair_scoring::ScoringError::Setting {
                name: "max-memory",
                detail: "too small; raise `max-memory`, or lower `per-class`".into(),
            })
            .into(),
        );
        assert_eq!(
            e.to_string(),
            "--max-memory: too small; raise --max-memory, or lower --per-class"
        );
        let e = cli_error(
            fair_surgery::SurgeryError::Analysis(fair_analysis::AnalysisError::Disagreement {
                layers: vec!["a".into(), "b".into()],
            })
            .into(),
        );
        assert!(
            e.to_string()
                .contains("choose the package or intersection --rule, or"),
            "{e}"
        );
        // Other errors pass through.
        let e = cli_error(anyhow::anyhow!("plain"));
        assert_eq!(e.to_string(), "plain");
    }
}
