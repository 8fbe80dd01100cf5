//! `fair-pruner train`, `finetune`, `eval` and `calib`: run configurations (TOML in
//! `configs/`, or flags) over datasets.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use fair_data::{Builtin, Cifar, Dataset, Transform};
use fair_ir::Graph;
use fair_runtime::Model;
use fair_scoring::Calibration;
use fair_train::TrainSettings;
use serde::Deserialize;

/// A run configuration (`configs/*.toml`). Relative paths are relative to the working
/// directory.
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

/// `[prune]`: what `fair-pruner prune` does when run with this config. Every key is
/// optional and the command-line flag of the same name overrides it.
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
    /// Calibration samples per class (from the training split).
    pub per_class: Option<usize>,
    /// At most this many classes are compared.
    pub max_classes: Option<usize>,
    /// Seed of the calibration draw, projections and fine-tuning.
    pub seed: Option<u64>,
    /// Fine-tuning epochs after pruning.
    pub finetune_epochs: Option<usize>,
    /// Fine-tuning learning rate.
    pub finetune_lr: Option<f64>,
    /// Residual-group rule: `package`, `intersection` or `strict`.
    pub rule: Option<crate::apply::Rule>,
    /// Every layer keeps at least this many units.
    pub min_keep: Option<usize>,
    /// Round kept units up to a multiple of this.
    pub round_to: Option<usize>,
    /// Output directory.
    pub out: Option<PathBuf>,
}

impl PruneSection {
    /// The goals set here (at most one kind may be given).
    pub fn goals(&self) -> Result<Option<Vec<crate::score::Goal>>> {
        use crate::score::Goal;
        let mut found = Vec::new();
        if let Some(a) = self.alpha {
            found.push(("alpha", vec![Goal::Alpha(a)]));
        }
        if let Some(s) = &self.alpha_sweep {
            if s.is_empty() {
                bail!("[prune] alpha_sweep is empty; give at least one α");
            }
            found.push(("alpha_sweep", s.iter().map(|&a| Goal::Alpha(a)).collect()));
        }
        if let Some(f) = self.target_macs {
            found.push(("target_macs", vec![Goal::Macs(f)]));
        }
        if let Some(f) = self.target_params {
            found.push(("target_params", vec![Goal::Params(f)]));
        }
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop().map(|(_, g)| g)),
            _ => bail!(
                "[prune] sets {}; give only one of alpha, alpha_sweep, target_macs, target_params",
                found
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ),
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
    /// Input `[C, H, W]` of a zoo model.
    pub input: Option<[usize; 3]>,
    /// Classes of a zoo model.
    pub classes: Option<usize>,
    /// Initial weights (safetensors).
    pub weights: Option<PathBuf>,
    /// Seed of the initial parameters when no weights are given.
    #[serde(default)]
    pub seed: u64,
}

/// `[data]`: where the images come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// `fashion-mnist`, `mnist` (fetched by the project), `idx`, `cifar10`, `cifar100` or
    /// `folder` (from `path`).
    pub source: Option<String>,
    /// Directory of an `idx`, `cifar10`, `cifar100` or `folder` source.
    pub path: Option<PathBuf>,
}

/// `[output]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// Where trained weights are written.
    pub weights: Option<PathBuf>,
}

impl RunConfig {
    /// Reads a config file; unknown keys are errors naming the key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))
    }

    /// The model's graph.
    pub fn graph(&self) -> Result<Graph> {
        match (&self.model.zoo, &self.model.graph) {
            (Some(_), Some(_)) => {
                bail!("[model] names both a zoo model and a graph file; choose one")
            }
            (None, Some(g)) => {
                Graph::load(g).with_context(|| format!("cannot load the graph {}", g.display()))
            }
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
            (None, None) => bail!(
                "no model: give --model NAME (or --graph FILE), or [model] zoo = \"...\" in a config"
            ),
        }
    }

    /// The train and test splits.
    pub fn data(&self, input: [usize; 3]) -> Result<(Dataset, Dataset)> {
        let source = self
            .data
            .source
            .as_deref()
            .context("no data: give --data fashion-mnist|mnist|idx|cifar10|cifar100|folder, or [data] source in a config")?;
        let path = || {
            self.data.path.clone().with_context(|| {
                format!("data source '{source}' needs a path (--data-path or [data] path)")
            })
        };
        if let Some(b) = Builtin::parse(source) {
            let (train, test, notes) = fair_data::load_builtin(b, &fair_data::cache_dir())?;
            for n in notes {
                eprintln!("note: {n}");
            }
            return Ok((train, test));
        }
        Ok(match source {
            "idx" => {
                let dir = path()?;
                let find = |stem: &str| {
                    [dir.join(stem), dir.join(format!("{stem}.gz"))]
                        .into_iter()
                        .find(|p| p.exists())
                        .with_context(|| format!("no {stem}[.gz] in {}", dir.display()))
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
            "cifar10" | "cifar100" => {
                let which = if source == "cifar10" {
                    Cifar::Ten
                } else {
                    Cifar::Hundred
                };
                let dir = path()?;
                (
                    fair_data::load_cifar(&dir, which, true)?,
                    fair_data::load_cifar(&dir, which, false)?,
                )
            }
            "folder" => {
                let dir = path()?;
                let [c, h, w] = input;
                (
                    fair_data::load_image_folder(&dir.join("train"), c, h, w)?,
                    fair_data::load_image_folder(&dir.join("test"), c, h, w)?,
                )
            }
            other => bail!(
                "unknown data source '{other}' (expected fashion-mnist, mnist, idx, cifar10, cifar100 or folder)"
            ),
        })
    }
}

/// Seed of `--train-fraction` subsets (fixed, so every run sees the same images).
const SUBSET_SEED: u64 = 20260102;

/// Flags shared by the data-driven commands; they override the config.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A run configuration (see configs/).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Zoo model (overrides [model] zoo).
    #[arg(long)]
    model: Option<String>,
    /// IR graph file, e.g. a pruned model's model.toml (overrides [model]).
    #[arg(long, value_name = "FILE", conflicts_with = "model")]
    graph: Option<PathBuf>,
    /// Input CxHxW of a zoo model.
    #[arg(long, value_name = "CxHxW")]
    input: Option<String>,
    /// Classes of a zoo model.
    #[arg(long)]
    classes: Option<usize>,
    /// Data source: fashion-mnist, mnist, idx, cifar10, cifar100, folder.
    #[arg(long)]
    data: Option<String>,
    /// Directory of an idx, cifar or folder source.
    #[arg(long, value_name = "DIR")]
    data_path: Option<PathBuf>,
    /// Weights to start from (safetensors).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// libtorch CPU threads.
    #[arg(long)]
    threads: Option<i32>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Use only this fraction of the training split (stratified by class, seeded), e.g.
    /// 0.25 for a quick fine-tune. The test split is never reduced.
    #[arg(long, value_name = "FRACTION")]
    train_fraction: Option<f64>,
    /// No progress output.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

impl RunArgs {
    fn config(&self) -> Result<RunConfig> {
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
            c.data.source = self.data.clone();
        }
        if self.data_path.is_some() {
            c.data.path = self.data_path.clone();
        }
        if self.weights.is_some() {
            c.model.weights = self.weights.clone();
        }
        Ok(c)
    }

    pub(crate) fn setup(&self) -> Result<(RunConfig, Model, Dataset, Dataset)> {
        if let Some(t) = self.threads {
            tch::set_num_threads(t);
        }
        let config = self.config()?;
        let device = fair_runtime::parse_device(&self.device)?;
        let graph = config.graph()?;
        let input = match graph.shape_at(0) {
            &[c, h, w] => [c, h, w],
            s => bail!("the model input {s:?} is not an image [C, H, W]"),
        };
        let model = match &config.model.weights {
            Some(w) => Model::from_safetensors(graph, w, device)
                .with_context(|| format!("cannot load {}", w.display()))?,
            None => Model::new(graph, device, config.model.seed)?,
        };
        let (mut train, test) = config.data(input)?;
        if let Some(f) = self.train_fraction {
            if !(f > 0.0 && f <= 1.0) {
                bail!("--train-fraction must be in (0, 1], found {f}");
            }
            let name = format!("{} ({:.0}%)", train.name, 100.0 * f);
            let (part, _) =
                train.split_stratified(SUBSET_SEED, |n| ((f * n as f64).round() as usize).max(1));
            train = Dataset { name, ..part };
        }
        let classes = model.graph().shape_at(model.graph().nodes().len() - 1)[0];
        if train.classes.len() > classes {
            bail!(
                "the data has {} classes but the model has {classes} outputs",
                train.classes.len()
            );
        }
        Ok((config, model, train, test))
    }
}

/// Arguments of `train` and `finetune`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Epochs (overrides [train] epochs).
    #[arg(long)]
    epochs: Option<usize>,
    /// Batch size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Base learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Seed for shuffling and augmentation.
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write the trained weights (overrides [output] weights).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Runs `train` (or `finetune`, which requires starting weights).
pub fn train(args: &TrainArgs, finetune: bool) -> Result<()> {
    if finetune && args.run.weights.is_none() {
        bail!(
            "finetune needs --weights (the pruned model's model.safetensors) and usually --graph (its model.toml)"
        );
    }
    let (config, mut model, train, test) = args.run.setup()?;
    let mut settings = config.train.clone().unwrap_or_else(|| {
        if finetune {
            TrainSettings {
                epochs: 3,
                lr: 0.01,
                ..Default::default()
            }
        } else {
            TrainSettings::default()
        }
    });
    if let Some(e) = args.epochs {
        settings.epochs = e;
    }
    if let Some(b) = args.batch_size {
        settings.batch_size = b;
    }
    if let Some(l) = args.lr {
        settings.lr = l;
    }
    if let Some(s) = args.seed {
        settings.seed = s;
    }
    let out = args
        .out
        .clone()
        .or(config.output.weights.clone())
        .unwrap_or_else(|| PathBuf::from("model.safetensors"));
    if Some(&out) == config.model.weights.as_ref() {
        bail!(
            "refusing to overwrite the input weights {}; choose another --out",
            out.display()
        );
    }
    let eval_transform = Transform {
        augment: None,
        ..config.transform.clone()
    };
    if !args.run.quiet {
        eprintln!(
            "{} '{}' on {} ({} train / {} test images), {} epochs",
            if finetune { "fine-tuning" } else { "training" },
            model.graph().name(),
            train.name.trim_end_matches("/train"),
            train.len(),
            test.len(),
            settings.epochs
        );
    }
    let start = std::time::Instant::now();
    let reports = fair_train::train(
        &mut model,
        &train,
        Some(&test),
        &config.transform,
        &eval_transform,
        &settings,
        !args.run.quiet,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    model.save_weights(&out)?;
    let last = reports.last().expect("at least one epoch");
    let samples: f64 = reports
        .iter()
        .map(|r| r.samples_per_second * r.seconds)
        .sum();
    let train_seconds: f64 = reports.iter().map(|r| r.seconds).sum();
    println!(
        "test top-1 {:.2}% (loss {:.4}) after {} epochs in {:.1} s ({:.0} training samples/s) → {}",
        100.0 * last.test.map_or(0.0, |t| t.top1),
        last.test.map_or(f64::NAN, |t| t.loss),
        reports.len(),
        seconds,
        samples / train_seconds,
        out.display()
    );
    Ok(())
}

/// Arguments of `eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Which split to evaluate: test or train.
    #[arg(long, default_value = "test")]
    split: String,
}

/// Runs `eval`.
pub fn eval(args: &EvalArgs) -> Result<()> {
    if args.run.weights.is_none() {
        bail!("eval needs --weights");
    }
    let (config, model, train, test) = args.run.setup()?;
    let data = match args.split.as_str() {
        "test" => &test,
        "train" => &train,
        other => bail!("--split must be test or train, found {other}"),
    };
    let t = Transform {
        augment: None,
        ..config.transform
    };
    let e = fair_train::evaluate(&model, data, &t, 512)?;
    println!(
        "{}: top-1 {:.2}%, loss {:.4} on {} images",
        data.name,
        100.0 * e.top1,
        e.loss,
        data.len()
    );
    Ok(())
}

/// How calibration samples are drawn (shared by `calib` and `prune`).
#[derive(Debug, Args)]
pub struct CalibrationDraw {
    /// Calibration samples per class (from the training split) [default: 32].
    #[arg(long)]
    pub per_class: Option<usize>,
    /// At most this many classes (chosen with --seed) [default: 100].
    #[arg(long)]
    pub max_classes: Option<usize>,
    /// Seed of the draw (and, for prune, of projections and fine-tuning) [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
}

/// A [`CalibrationDraw`] with every setting decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrawSettings {
    /// Samples per class.
    pub per_class: usize,
    /// Classes at most.
    pub max_classes: usize,
    /// Seed.
    pub seed: u64,
}

impl CalibrationDraw {
    /// The flags, else the config's `[prune]` values, else the defaults (32, 100, 0).
    pub fn settings(&self, config: &PruneSection) -> DrawSettings {
        DrawSettings {
            per_class: self.per_class.or(config.per_class).unwrap_or(32),
            max_classes: self.max_classes.or(config.max_classes).unwrap_or(100),
            seed: self.seed.or(config.seed).unwrap_or(0),
        }
    }
}

impl DrawSettings {
    /// Draws the samples from `train` and transforms them for `model` with the evaluation
    /// transform (no augmentation); reports classes with fewer samples.
    pub fn draw(
        &self,
        model: &Model,
        train: &Dataset,
        transform: &Transform,
    ) -> Result<Calibration> {
        let draw =
            fair_data::calibration_sample(train, self.per_class, self.max_classes, self.seed);
        for n in &draw.short {
            eprintln!("note: {n}");
        }
        let input = match model.graph().shape_at(0) {
            &[c, h, w] => [c, h, w],
            s => bail!("the model input {s:?} is not an image [C, H, W]"),
        };
        let eval_t = Transform {
            augment: None,
            ..transform.clone()
        };
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(self.seed);
        let (x, y) = eval_t.batch(train, &draw.indices, input, false, &mut rng)?;
        let description = format!(
            "{} ({} classes × up to {} per class, seed {})",
            train.name,
            draw.classes.len(),
            self.per_class,
            self.seed
        );
        Ok(Calibration::new(x, &y, description)?)
    }
}

/// Arguments of `calib`.
#[derive(Debug, Args)]
pub struct CalibArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    draw: CalibrationDraw,
    /// Output: safetensors with `inputs` (transformed to the model's input) and `labels`.
    #[arg(long, value_name = "FILE", default_value = "calibration.safetensors")]
    out: PathBuf,
}

/// Runs `calib`: draws calibration samples from the training split.
pub fn calib(args: &CalibArgs) -> Result<()> {
    let (config, model, train, _test) = args.run.setup()?;
    let calibration = args
        .draw
        .settings(&config.prune)
        .draw(&model, &train, &config.transform)?;
    let (x, y) = calibration.tensors();
    fair_runtime::write_safetensors(&args.out, &[("inputs".into(), x), ("labels".into(), y)])?;
    println!(
        "{} calibration samples: {} → {}",
        calibration.len(),
        calibration.description(),
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_config_parses_and_fits_the_zoo() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let c = RunConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            let g = c
                .graph()
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            let channels = g.shape_at(0)[0];
            c.transform
                .check(channels)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                c.data.source.is_some(),
                "{}: no data source",
                path.display()
            );
            assert!(
                c.train.is_some() && c.output.weights.is_some(),
                "{}",
                path.display()
            );
            if let Some(goals) = c
                .prune
                .goals()
                .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
            {
                for g in goals {
                    let ok = match g {
                        crate::score::Goal::Alpha(a) => (0.0..=1.0).contains(&a),
                        crate::score::Goal::Macs(f) | crate::score::Goal::Params(f) => {
                            (0.0..1.0).contains(&f)
                        }
                    };
                    assert!(ok, "{}: goal {g:?} out of range", path.display());
                }
            }
            let expected_classes = match c.data.source.as_deref() {
                Some("cifar10" | "fashion-mnist" | "mnist") => Some(10),
                Some("cifar100") => Some(100),
                _ => None,
            };
            if let Some(k) = expected_classes {
                assert_eq!(
                    g.shape_at(g.nodes().len() - 1),
                    &[k],
                    "{}: the model's outputs do not match the data's classes",
                    path.display()
                );
            }
            names.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                c,
                g,
            ));
        }
        assert!(names.len() >= 6, "configs/ holds the shipped configs");
        // The configs for users with their own data: the zoo model the file name promises,
        // at its usual input, with its parameter count from torchvision or the original papers.
        let expect = [
            // VGG-16-BN with the 512→512 head; ResNet-56 and DenseNet-40 are checked
            // against their papers in fair-zoo's tests.
            (
                "cifar10-vgg16-bn.toml",
                "vgg16_bn_cifar",
                "cifar10",
                Some(14_990_922),
            ),
            ("cifar10-resnet56.toml", "resnet56", "cifar10", None),
            ("cifar10-densenet40.toml", "densenet40", "cifar10", None),
            (
                "imagenet-resnet50.toml",
                "resnet50",
                "folder",
                Some(25_557_032),
            ),
        ];
        for (file, zoo, source, params) in expect {
            let (_, c, g) = names
                .iter()
                .find(|(n, _, _)| n == file)
                .unwrap_or_else(|| panic!("configs/{file} is missing"));
            assert_eq!(c.model.zoo.as_deref(), Some(zoo), "{file}");
            assert_eq!(c.data.source.as_deref(), Some(source), "{file}");
            assert_eq!(
                g.shape_at(0),
                &fair_zoo::info(zoo).unwrap().default_input[..],
                "{file}"
            );
            let path = c.data.path.as_ref().expect("a data path placeholder");
            assert!(
                path.starts_with("/path/to"),
                "{file}: the data path is a documented placeholder"
            );
            assert!(
                c.prune.goals().unwrap().is_some(),
                "{file}: holds a pruning goal"
            );
            if let Some(p) = params {
                assert_eq!(g.param_count() as u64, p, "{file}");
            }
        }
    }

    #[test]
    fn prune_section_takes_one_goal_and_known_rules() {
        let parse = |text: &str| toml::from_str::<RunConfig>(text).map_err(|e| e.to_string());
        let c = parse("[prune]\nalpha_sweep = [0.1, 0.3]\nrule = \"intersection\"\n").unwrap();
        assert_eq!(
            c.prune.goals().unwrap(),
            Some(vec![
                crate::score::Goal::Alpha(0.1),
                crate::score::Goal::Alpha(0.3)
            ])
        );
        assert_eq!(c.prune.rule, Some(crate::apply::Rule::Intersection));
        let two = parse("[prune]\nalpha = 0.1\ntarget_macs = 0.5\n").unwrap();
        let e = format!("{:#}", two.prune.goals().unwrap_err());
        assert!(e.contains("alpha and target_macs"), "{e}");
        let e = parse("[prune]\nrule = \"loose\"\n").unwrap_err();
        assert!(e.contains("loose") && e.contains("package"), "{e}");
        assert_eq!(parse("").unwrap().prune.goals().unwrap(), None);
    }

    #[test]
    fn unknown_config_keys_are_errors_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[train]\nepochs = 1\nbatch_size = 2\nlr = 0.1\nmomentum = 0.9\nweight_decay = 0.0\nschedule = { kind = \"cosine\" }\nseed = 0\nlearning_rate = 3\n").unwrap();
        let e = format!("{:#}", RunConfig::load(&p).unwrap_err());
        assert!(e.contains("learning_rate"), "{e}");
    }
}
