//! `fair-pruner`: prune convolutional and fully connected networks with FAIR-Pruner.
//!
//! Commands: `info` (per-node table of a zoo model or an IR file), `models` (the zoo),
//! `score` (U/R and other criteria over calibration data, stored with provenance) and
//! `ratios` (per-layer counts at an α or a target size, from stored scores) and `apply`
//! (a prune plan applied and exported for plain PyTorch), `train`, `finetune`, `eval` and
//! `calib` (datasets, training, calibration samples). Run
//! `fair-pruner --help` or `fair-pruner <command> --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{ArgGroup, Args, Parser, Subcommand};
use fair_ir::Graph;

mod apply;
mod prune;
mod report;
mod score;
mod table;
mod train;

/// FAIR-Pruner: layer-wise structured pruning with Wasserstein utilisation, Taylor
/// reconstruction and Tolerance of Difference.
#[derive(Debug, Parser)]
#[command(name = "fair-pruner", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show a model's nodes: output shape, parameters and MACs per node, and totals.
    Info(InfoArgs),
    /// List the built-in model zoo with default input sizes.
    Models,
    /// Score every prunable unit (U, R, L1, ...) over calibration data; writes a score file.
    Score(score::ScoreArgs),
    /// Per-layer pruning counts at a tolerance α or a target size, from a score file.
    Ratios(score::RatiosArgs),
    /// Apply a prune plan (unit indices per layer) and export the smaller model for PyTorch.
    Apply(apply::ApplyArgs),
    /// Train a model (flags or a config from configs/); writes safetensors weights.
    Train(train::TrainArgs),
    /// Fine-tune trained or pruned weights (as train, starting from --weights).
    Finetune(train::TrainArgs),
    /// Top-1 accuracy and loss of weights on a dataset split.
    Eval(train::EvalArgs),
    /// Draw n calibration samples per class from the training split (for `score`).
    Calib(train::CalibArgs),
    /// Score once, prune at α / a target / an α sweep, optionally fine-tune, evaluate, export, report.
    Prune(prune::PruneArgs),
}

/// Which model to describe: a zoo name or an IR file.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["model", "graph"])))]
pub(crate) struct ModelArgs {
    /// Zoo model name (see `fair-pruner models`), e.g. resnet50, vgg16_bn_cifar, densenet40.
    #[arg(long)]
    model: Option<String>,
    /// Per-sample input shape CxHxW for a zoo model, e.g. 3x224x224 [default: the model's usual size].
    #[arg(long, value_name = "CxHxW", requires = "model")]
    input: Option<String>,
    /// Number of classes for a zoo model [default: the model's usual count].
    #[arg(long, requires = "model")]
    classes: Option<usize>,
    /// An IR graph file (.toml or .json), e.g. one written by --write-graph or by `apply`.
    #[arg(long, value_name = "FILE")]
    graph: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print the table as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the graph as an IR file (.toml or .json by extension), e.g. to edit by hand.
    #[arg(long, value_name = "FILE")]
    write_graph: Option<PathBuf>,
}

impl ModelArgs {
    pub(crate) fn load(&self) -> Result<Graph> {
        if let Some(path) = &self.graph {
            return Graph::load(path)
                .with_context(|| format!("cannot load the graph {}", path.display()));
        }
        let name = self
            .model
            .as_deref()
            .expect("clap requires --model or --graph");
        let Some(info) = fair_zoo::info(name) else {
            bail!("{}", fair_zoo::ZooError::UnknownModel { name: name.into() });
        };
        let input = match &self.input {
            Some(text) => fair_ir::parse_shape(text)
                .map_err(anyhow::Error::msg)
                .context("--input")?,
            None => info.default_input.to_vec(),
        };
        let classes = self.classes.unwrap_or(info.default_classes);
        Ok(fair_zoo::build(name, &input, classes)?)
    }
}

fn info(args: &InfoArgs) -> Result<()> {
    let graph = args.model.load()?;
    if let Some(path) = &args.write_graph {
        graph
            .save(path)
            .with_context(|| format!("cannot write the graph to {}", path.display()))?;
    }
    if args.json {
        let report = serde_json::json!({
            "name": graph.name(),
            "nodes": graph.summary(),
            "params": graph.param_count(),
            "macs": graph.macs(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table::info_table(&graph));
    }
    Ok(())
}

fn models() {
    let rows: Vec<Vec<String>> = fair_zoo::MODELS
        .iter()
        .map(|m| {
            vec![
                m.name.to_owned(),
                m.default_input.map(|d| d.to_string()).join("x"),
                m.default_classes.to_string(),
                m.description.to_owned(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(&["model", "input", "classes", "description"], &rows, &[])
    );
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FAIR_PRUNER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match &cli.command {
        Command::Score(args) => score::score(args),
        Command::Ratios(args) => score::ratios(args),
        Command::Apply(args) => apply::apply(args),
        Command::Train(args) => train::train(args, false),
        Command::Finetune(args) => train::train(args, true),
        Command::Eval(args) => train::eval(args),
        Command::Calib(args) => train::calib(args),
        Command::Prune(args) => prune::prune(args),
        Command::Info(args) => info(args),
        Command::Models => {
            models();
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
