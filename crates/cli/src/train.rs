//! `fair-pruner train`, `finetune`, `eval` and `calib`: run configurations (TOML in
//! `configs/`, or flags) over datasets.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use clap::Args;
use fair_data::ImageSource;
use fair_fs::OutputFile;
use fair_pipeline::RunConfig;

use crate::args::{DrawArgs, RunArgs, cli_error};

/// Arguments of `train` and `finetune`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Epochs (overrides [train] epochs).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    epochs: Option<u64>,
    /// Batch size.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: Option<u64>,
    /// Base learning rate.
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    /// Seed for shuffling and augmentation.
    #[arg(long)]
    seed: Option<u64>,
    /// Where to write the trained weights (overrides [output] weights) [default: model.safetensors].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Print the epochs' figures as JSON.
    #[arg(long)]
    json: bool,
}

/// Checks the output file before any work, against every input of the run (config, model
/// files, data directory, dataset cache), and creates its directory. `what` names where the
/// path came from (`--out`, or `[output] weights` of the config).
fn out_file(
    what: &str,
    out: &Path,
    config: &RunConfig,
    config_path: Option<&Path>,
) -> Result<OutputFile> {
    config
        .output_guard(config_path)
        .file(what, out)
        .map_err(|e| cli_error(e.into()))
}

/// Runs `train` (or `finetune`, which requires starting weights).
pub fn train(args: &TrainArgs, finetune: bool) -> Result<()> {
    let config = args.run.config()?;
    if finetune && !config.model.has_weights() {
        bail!(
            "finetune needs --weights (the pruned model's model.safetensors) and usually --graph \
             (its model.toml), or an ONNX --graph, which carries its weights"
        );
    }
    let mut settings = config.train_settings(finetune);
    if let Some(e) = args.epochs {
        settings.epochs = e as usize;
    }
    if let Some(b) = args.batch_size {
        settings.batch_size = b as usize;
    }
    if let Some(l) = args.lr {
        settings.lr = l;
    }
    if let Some(s) = args.seed {
        settings.seed = s;
    }
    settings.check().map_err(|e| cli_error(e.into()))?;
    let (what, out) = match (&args.out, &config.output.weights) {
        (Some(o), _) => ("--out", o.clone()),
        (None, Some(w)) => ("[output] weights", w.clone()),
        (None, None) => ("--out", PathBuf::from("model.safetensors")),
    };
    let out_file = out_file(what, &out, &config, args.run.config.as_deref())?;
    let setup = args.run.setup(config, None)?;
    let (config, mut model, train, test) = (setup.config, setup.model, setup.train, setup.test);
    let eval_transform = config.transform.for_evaluation();
    if !args.run.quiet && !args.json {
        eprintln!(
            "{} '{}' on {} ({} train / {} test images), {} epochs",
            if finetune { "fine-tuning" } else { "training" },
            model.graph().name(),
            train.name().trim_end_matches("/train"),
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
        !args.run.quiet && !args.json,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    out_file.write(&model.weights_bytes(&out)?)?;
    let report = fair_train::TrainReport::new(&out, seconds, reports);
    if args.json {
        return crate::print_json(&report);
    }
    let last = report.epochs.last().expect("at least one epoch");
    println!(
        "test top-1 {:.2}% (loss {:.4}) after {} epochs in {:.1} s ({:.0} training samples/s) → {}",
        100.0 * last.test.map_or(0.0, |t| t.top1),
        last.test.map_or(f64::NAN, |t| t.loss),
        report.epochs.len(),
        seconds,
        report.samples_per_second,
        out.display()
    );
    Ok(())
}

/// Arguments of `eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Which split to evaluate.
    #[arg(long, value_parser = ["test", "train"], default_value = "test")]
    split: String,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `eval`.
pub fn eval(args: &EvalArgs) -> Result<()> {
    let config = args.run.config()?;
    if !config.model.has_weights() {
        bail!("eval needs --weights, or an ONNX --graph, which carries its weights");
    }
    let setup = args.run.setup(config, None)?;
    let data = if args.split == "train" {
        &setup.train
    } else {
        &setup.test
    };
    let t = setup.config.transform.for_evaluation();
    let e = fair_train::evaluate(&setup.model, data, &t, 512)?;
    if !e.loss.is_finite() {
        bail!(
            "the loss on {} is {}: the model's outputs hold NaN or infinite values (check the weights)",
            data.name(),
            e.loss
        );
    }
    if args.json {
        return crate::print_json(&fair_train::EvalReport::new(data, &e));
    }
    println!(
        "{}: top-1 {:.2}%, loss {:.4} on {} images",
        data.name(),
        100.0 * e.top1,
        e.loss,
        data.len()
    );
    Ok(())
}

/// Arguments of `calib`.
#[derive(Debug, Args)]
pub struct CalibArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    draw: DrawArgs,
    /// Output: safetensors with `inputs` (transformed to the model's input) and `labels`.
    #[arg(long, value_name = "FILE", default_value = "calibration.safetensors")]
    out: PathBuf,
}

/// Runs `calib`: draws calibration samples from the training split.
pub fn calib(args: &CalibArgs) -> Result<()> {
    let config = args.run.config()?;
    let out_file = out_file("--out", &args.out, &config, args.run.config.as_deref())?;
    let draw = args.draw.settings(&config.prune);
    draw.check().map_err(|e| cli_error(e.into()))?;
    let setup = args.run.setup(config, None)?;
    let (calibration, notes) =
        draw.draw(setup.model.graph(), &setup.train, &setup.config.transform)?;
    crate::notes::print(&notes);
    let (x, y) = calibration.tensors();
    out_file.write(&fair_runtime::safetensors_bytes(
        &args.out,
        &[("inputs".into(), x), ("labels".into(), y)],
    )?)?;
    println!(
        "{} calibration samples: {} → {}",
        calibration.len(),
        calibration.description(),
        args.out.display()
    );
    Ok(())
}
