//! `fair-pruner`: prune convolutional and fully connected networks with FAIR-Pruner.
//!
//! A thin shell over the libraries: argument parsing, printing, and the output guards. The
//! pipeline itself is `fair_pipeline::Pruner`; scoring is `fair_scoring`, thresholds and
//! plans `fair_analysis`, surgery and export `fair_surgery`. Run `fair-pruner --help` or
//! `fair-pruner <command> --help`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

mod apply;
mod args;
mod import;
mod notes;
mod prune;
mod ratios;
mod score;
mod table;
mod train;

use args::ModelArgs;

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
    /// Read an ONNX model (e.g. from torch.onnx.export) into an IR file and safetensors
    /// weights. Every --graph also accepts the .onnx file directly.
    Import(import::ImportArgs),
    /// List the built-in model zoo with default input sizes.
    Models,
    /// List the scoring criteria (names for --criteria, --remove-by, --protect-by, --rank-by).
    Criteria,
    /// Score every prunable unit (U, R, L1, ...) over calibration data; writes a score file.
    Score(score::ScoreArgs),
    /// Per-layer pruning counts at a tolerance α or a target size, from a score file.
    Ratios(ratios::RatiosArgs),
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
    Prune(Box<prune::PruneArgs>),
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
    write_graph: Option<std::path::PathBuf>,
}

fn info(args: &InfoArgs) -> Result<()> {
    let graph = args.model.load()?;
    if let Some(path) = &args.write_graph {
        let mut guard = fair_pipeline::output_guard();
        if let Some(input) = &args.model.graph {
            fair_pipeline::guard_model_file(&mut guard, "--graph", input);
        }
        let out = guard.file("--write-graph", path)?;
        out.write(graph.to_string_for(path)?.as_bytes())?;
    }
    if args.json {
        print_json(&fair_ir::InfoReport::new(&graph))?;
    } else {
        print!("{}", table::info_table(&graph));
    }
    Ok(())
}

/// Prints `value` as pretty JSON with its keys in alphabetical order at every level (as the
/// untyped output of earlier versions had them).
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let value = serde_json::to_value(value)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
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

fn criteria() {
    let registry = fair_scoring::Registry::default();
    let rows: Vec<Vec<String>> = registry
        .describe()
        .into_iter()
        .map(|(n, d)| vec![n.to_owned(), d.to_owned()])
        .collect();
    print!(
        "{}",
        table::render(&["criterion", "description"], &rows, &[])
    );
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`fair-pruner models | head`), as Unix tools do, instead
    // of panicking on the failed write.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FAIR_PRUNER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let result = match &cli.command {
        Command::Score(args) => score::score(args),
        Command::Ratios(args) => ratios::ratios(args),
        Command::Apply(args) => apply::apply(args),
        Command::Train(args) => train::train(args, false),
        Command::Finetune(args) => train::train(args, true),
        Command::Eval(args) => train::eval(args),
        Command::Calib(args) => train::calib(args),
        Command::Prune(args) => prune::prune(args),
        Command::Info(args) => info(args),
        Command::Import(args) => import::import(args),
        Command::Models => {
            models();
            Ok(())
        }
        Command::Criteria => {
            criteria();
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", fair_pipeline::error_text(&*e));
            ExitCode::FAILURE
        }
    }
}
