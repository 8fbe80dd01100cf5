//! `fair-pruner prune`: the pipeline (`fair_pipeline::Pruner`) from flags and a config.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use fair_data::{Source, Transform};
use fair_pipeline::charts::{summary_headers, summary_rows};
use fair_pipeline::{ConfigRun, PruneSection, Pruner, RawSettings, Torchrun, TorchrunData};
use fair_scoring::Calibration;
use fair_train::TrainSettings;

use crate::args::{DrawArgs, LatencyArgs, RunArgs, ScoringArgs, cli_error};
use crate::score::SelectArgs;
use crate::table::render;

/// Arguments of `fair-pruner prune`. Flags override the config's `[prune]` section.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("how").args(["alpha", "target_macs", "target_params", "target_latency", "alpha_sweep"])))]
pub struct PruneArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Tolerance of Difference α in [0, 1] (larger removes more).
    #[arg(long, allow_negative_numbers = true)]
    alpha: Option<f64>,
    /// Remove at least this fraction of MACs (the smallest α that does).
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true)]
    target_macs: Option<f64>,
    /// Remove at least this fraction of parameters.
    #[arg(long, value_name = "FRACTION", allow_negative_numbers = true)]
    target_params: Option<f64>,
    #[command(flatten)]
    latency: LatencyArgs,
    /// Several α, comma-separated: scores once, one pruned model per α.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "A,B,...",
        allow_negative_numbers = true
    )]
    alpha_sweep: Vec<f64>,
    /// Calibration samples from a file (`inputs` [N, ...], `labels` [N], e.g. from
    /// `fair-pruner calib`) instead of a draw from the training split.
    #[arg(long, value_name = "FILE")]
    calibration: Option<PathBuf>,
    #[command(flatten)]
    draw: DrawArgs,
    #[command(flatten)]
    scoring: ScoringArgs,
    #[command(flatten)]
    select: SelectArgs,
    /// Fine-tuning epochs after pruning (0: one-shot only) [default: 0].
    #[arg(long)]
    finetune_epochs: Option<usize>,
    /// Fine-tuning learning rate [default: 0.01].
    #[arg(long, allow_negative_numbers = true)]
    finetune_lr: Option<f64>,
    /// Recalibrate BatchNorm after surgery: re-estimate every BatchNorm's running mean and
    /// variance as the average batch statistics of its input over N random batches (of the
    /// fine-tuning batch size, no augmentation, seeded by --seed) of the training split,
    /// before the one-shot evaluation and any fine-tuning; 0 turns it off [default: from
    /// --preset: 32 for fair-pruner, 0 for paper].
    #[arg(long, value_name = "N")]
    bn_recalibrate: Option<usize>,
    /// Reconstruct the readers after surgery: refit every convolution and linear layer that
    /// lost input channels by least squares (ridge 1e-3 towards the sliced weights) so that
    /// its output matches the unpruned model's on N random batches (of the fine-tuning batch
    /// size, no augmentation, seeded by --seed) of the training split, before the BatchNorm
    /// recalibration, the one-shot evaluation and any fine-tuning; 0 turns it off [default:
    /// from --preset: 8 for fair-pruner, 0 for paper].
    #[arg(long, value_name = "N")]
    reconstruct: Option<usize>,
    /// Fine-tuning (either engine) distils from the unpruned model with this weight in
    /// [0, 1]: loss = (1 − w)·CE + w·T²·KL(softmax(teacher/T) ‖ softmax(student/T)); with
    /// torchrun the teacher is exported to OUT/teacher/ [default: no distillation].
    #[arg(long, value_name = "WEIGHT", allow_negative_numbers = true)]
    distill_weight: Option<f64>,
    /// Distillation temperature T (needs --distill-weight) [default: 4].
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    distill_temperature: Option<f64>,
    #[command(flatten)]
    engine: EngineArgs,
    /// Do not measure CPU latency. Without --target-latency, refused with --latency-on
    /// (which times the pruned models); wins over a config's [prune] latency_on (noted).
    #[arg(long)]
    no_latency: bool,
    /// Output directory: scores.json, report.json, report.md with SVG charts, one exported
    /// model per goal. Replaced as a whole, never half-written; stored scores in it are
    /// reused when they fit [default: pruned].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    json: bool,
}

/// Where fine-tuning runs: in this process (tch) or on PyTorch DDP (torchrun).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
enum Engine {
    /// In this process, with libtorch (CPU or one GPU).
    #[default]
    Tch,
    /// The export's finetune.py under torchrun: several processes, GPUs or nodes.
    Torchrun,
}

/// How fine-tuning runs (`--finetune-with` and the torchrun settings).
#[derive(Debug, Args)]
struct EngineArgs {
    /// Fine-tune in this process (tch) or with the export's finetune.py on PyTorch DDP
    /// (torchrun: multi-GPU, multi-node; see the README).
    #[arg(long, value_enum, default_value_t = Engine::Tch)]
    finetune_with: Engine,
    /// torchrun: processes per node (GPUs per node on CUDA).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    nproc: u64,
    /// torchrun: the Python interpreter with torch and safetensors [default:
    /// $FAIR_PRUNER_PYTHON, else python3].
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// torchrun: extra torchrun arguments, one string, e.g. "--nnodes 2 --node_rank 0
    /// --master_addr host0 --master_port 29500" (then --standalone is not added).
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    torchrun_args: Option<String>,
    /// torchrun: extra finetune.py arguments, one string, e.g. "--max-steps 100 --workers 8".
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    finetune_args: Option<String>,
    /// torchrun: label smoothing of the cross-entropy [default: 0].
    #[arg(long, value_name = "EPS")]
    label_smoothing: Option<f64>,
}

impl EngineArgs {
    /// Refuses torchrun settings without `--finetune-with torchrun`.
    fn check(&self) -> Result<()> {
        if self.finetune_with == Engine::Tch {
            let given = [
                ("--nproc", self.nproc != 1),
                ("--python", self.python.is_some()),
                ("--torchrun-args", self.torchrun_args.is_some()),
                ("--finetune-args", self.finetune_args.is_some()),
                ("--label-smoothing", self.label_smoothing.is_some()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
                bail!("{flag} applies to --finetune-with torchrun");
            }
        }
        Ok(())
    }

    /// Where the script reads the data: the user's directory for CIFAR, IDX and folders,
    /// else (built-in data, a --train-fraction subset) the in-memory splits.
    fn data<'a>(
        &self,
        config: &fair_pipeline::RunConfig,
        fraction: bool,
        train: &'a Source,
        test: &'a Source,
    ) -> Result<TorchrunData<'a>> {
        use fair_pipeline::DataSource;
        Ok(
            match (&config.data.path, config.data.source, fraction, train, test) {
                (Some(dir), Some(s @ (DataSource::Cifar10 | DataSource::Cifar100)), false, ..) => {
                    TorchrunData::Cifar {
                        dir: dir.clone(),
                        hundred: s == DataSource::Cifar100,
                    }
                }
                (Some(dir), Some(DataSource::Idx), false, ..) => {
                    TorchrunData::Idx { dir: dir.clone() }
                }
                (_, _, _, Source::Memory(train), Source::Memory(test)) => {
                    TorchrunData::Datasets { train, test }
                }
                (Some(dir), Some(DataSource::Folder), false, ..) => TorchrunData::Folder {
                    train: dir.join("train"),
                    test: dir.join("test"),
                },
                _ => bail!(
                    "--finetune-with torchrun reads folder sources whole: instead of --train-fraction, \
                 pass --finetune-args \"--limit-train N\""
                ),
            },
        )
    }

    /// The torchrun settings.
    fn torchrun<'a>(
        &self,
        data: TorchrunData<'a>,
        transform: &Transform,
        settings: TrainSettings,
    ) -> Torchrun<'a> {
        let split = |s: &Option<String>| -> Vec<String> {
            s.as_deref()
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        };
        let mut t = Torchrun::new(data, transform, settings)
            .nproc(self.nproc as usize)
            .torchrun_args(split(&self.torchrun_args))
            .script_args(split(&self.finetune_args))
            .label_smoothing(self.label_smoothing.unwrap_or(0.0));
        if let Some(p) = &self.python {
            t = t.python(p);
        }
        t
    }
}

impl PruneArgs {
    /// The settings the flags give (every one optional), for the library to resolve over
    /// the config's.
    fn flags(&self) -> RawSettings {
        let mut raw = RawSettings {
            prune: PruneSection {
                alpha: self.alpha,
                alpha_sweep: (!self.alpha_sweep.is_empty()).then(|| self.alpha_sweep.clone()),
                target_macs: self.target_macs,
                target_params: self.target_params,
                finetune_epochs: self.finetune_epochs,
                finetune_lr: self.finetune_lr,
                bn_recalibrate: self.bn_recalibrate,
                reconstruct: self.reconstruct,
                distill_weight: self.distill_weight,
                distill_temperature: self.distill_temperature,
                out: self.out.clone(),
                ..PruneSection::default()
            },
            ..RawSettings::default()
        };
        self.draw.fill(&mut raw);
        self.scoring.fill(&mut raw);
        self.select.fill(&mut raw);
        self.latency.fill(&mut raw.prune);
        raw
    }
}

/// Runs `prune`.
pub fn prune(args: &PruneArgs) -> Result<()> {
    run(args).map_err(cli_error)
}

fn run(args: &PruneArgs) -> Result<()> {
    // Everything cheap first: config, settings, paths. The library resolves the settings
    // (flags over the config over the preset); this command only fills them in.
    let config = args.run.config()?;
    fair_pipeline::check_weights(&config)?;
    args.engine.check()?;
    let from_config = RawSettings::from_config(&config);
    let mut settings = from_config
        .overridden_by(&args.flags())
        .resolve()
        .map_err(|e| args.latency.config_named(e, &from_config.prune))?;
    // Latency settings the flags did not give came from the config: errors name its keys.
    if let Some(l) = &mut settings.latency {
        l.table_from_config = l.table.is_some() && args.latency.latency_table.is_none();
        let a = &args.latency;
        l.from_config = [
            ("latency-on", l.runtime_given && a.latency_on.is_none()),
            (
                "latency-batch",
                l.batch.is_some() && a.latency_batch.is_none(),
            ),
            (
                "latency-threads",
                l.threads.is_some() && a.latency_threads.is_none(),
            ),
        ]
        .into_iter()
        .filter(|(_, from_config)| *from_config)
        .map(|(name, _)| name.to_owned())
        .collect();
    }
    let mut guard = config.output_guard(args.run.config.as_deref());
    if let Some(c) = &args.calibration {
        guard.input("--calibration", c);
    }
    // A given latency table is an input too: the output directory must not hold it.
    let latency_table = settings.latency.as_ref().and_then(|l| {
        l.table
            .clone()
            .map(|t| (t, fair_pipeline::flags_in(l.table_setting())))
    });
    if let Some((t, named)) = &latency_table {
        guard.input(named, t);
    }
    // Refuses an input or a foreign directory now, not after the work.
    let what = match (&args.out, &config.prune.out) {
        (None, Some(_)) => "[prune] out",
        _ => "--out",
    };
    guard.check_dir(what, &settings.out)?;

    // Load the model and data; draw (or read) the calibration samples.
    let setup = args.run.setup(config, settings.given_max_memory)?;
    let (calibration, notes) = match &args.calibration {
        Some(p) => (Calibration::from_safetensors(p)?, Vec::new()),
        None => settings
            .draw
            .draw(setup.model.graph(), &setup.train, &setup.config.transform)?,
    };
    crate::notes::print(&notes);
    let out = settings.out.clone();
    let run = ConfigRun {
        config: setup.config,
        config_path: args.run.config.clone(),
        settings,
        model: setup.model,
        train: setup.train,
        test: setup.test,
        calibration,
        notes: Vec::new(),
    };
    let mut pruner = match args.engine.finetune_with {
        Engine::Tch => Pruner::from_config(&run),
        Engine::Torchrun => {
            let data = args.engine.data(
                &run.config,
                args.run.train_fraction.is_some(),
                &run.train,
                &run.test,
            )?;
            let torchrun =
                args.engine
                    .torchrun(data, &run.config.transform, run.settings.finetune.clone());
            Pruner::from_config_with_torchrun(&run, torchrun)
        }
    };
    // Pruner::from_config guards the config's inputs; the calibration file is the one input
    // it does not know.
    if let Some(c) = &args.calibration {
        pruner = pruner.input("--calibration", c);
    }
    if let Some((t, named)) = &latency_table {
        pruner = pruner.input(named, t);
    }
    pruner = pruner.progress(!args.run.quiet && !args.json);
    if args.no_latency {
        pruner = pruner.no_latency();
    }
    let outcome = pruner.run()?;
    let report = &outcome.report;
    crate::notes::print(&report.notes());
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let headers = summary_headers(report);
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let right: Vec<usize> = (1..headers.len()).collect();
    print!("{}", render(&header_refs, &summary_rows(report), &right));
    if report
        .results
        .iter()
        .any(|r| r.after.latency.iter().any(|l| l.noisy))
        || report.before.latency.iter().any(|l| l.noisy)
    {
        println!(
            "\n(noisy) latency figures varied by more than a quarter of their median; the machine was busy."
        );
    }
    for line in fair_pipeline::charts::latency_target_lines(report) {
        println!("{line}");
    }
    println!(
        "\nreport: {} (charts: {})",
        out.join("report.md").display(),
        out.join("*.svg").display()
    );
    Ok(())
}
