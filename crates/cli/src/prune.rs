//! `fair-pruner prune`: score once (or reuse stored scores), per-layer counts at α or a
//! target (or several α), surgery, optional fine-tuning, evaluation before and after,
//! export and `report.json`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use fair_data::Transform;
use fair_runtime::{Mode, Model};
use fair_scoring::{AnalysisPoint, Progress, RScoreSettings, ScoreFile, UScoreSettings};
use fair_surgery::{ApplyOptions, GroupRule};
use fair_threshold::CountOptions;
use fair_train::{Evaluation, TrainSettings};
use serde_json::json;

use crate::apply::Rule;
use crate::report::Outcome;
use crate::score::{Criterion, Thresholder, compute_scores};
use crate::table::render;
use crate::train::{CalibrationDraw, PruneSection, RunArgs};

/// Arguments of `fair-pruner prune`. Flags override the config's `[prune]` section.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("how").args(["alpha", "target_macs", "target_params", "alpha_sweep"])))]
pub struct PruneArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Tolerance of Difference α in [0, 1] (larger removes more).
    #[arg(long)]
    alpha: Option<f64>,
    /// Remove at least this fraction of MACs (the smallest α that does).
    #[arg(long, value_name = "FRACTION")]
    target_macs: Option<f64>,
    /// Remove at least this fraction of parameters.
    #[arg(long, value_name = "FRACTION")]
    target_params: Option<f64>,
    /// Several α, comma-separated: scores once, one pruned model per α.
    #[arg(long, value_delimiter = ',', value_name = "A,B,...")]
    alpha_sweep: Vec<f64>,
    #[command(flatten)]
    calibration: CalibrationDraw,
    /// Fine-tuning epochs after pruning (0: one-shot only) [default: 0].
    #[arg(long)]
    finetune_epochs: Option<usize>,
    /// Fine-tuning learning rate [default: 0.01].
    #[arg(long)]
    finetune_lr: Option<f64>,
    /// How layers coupled by residual adds settle on one set of units [default: package].
    #[arg(long, value_enum)]
    rule: Option<Rule>,
    /// Every layer keeps at least this many units [default: 1].
    #[arg(long)]
    min_keep: Option<usize>,
    /// Round kept units up to a multiple of this, e.g. 8 for faster kernels [default: 1].
    #[arg(long)]
    round_to: Option<usize>,
    /// Output directory: scores.json, report.json, report.md with SVG charts, one exported
    /// model per α [default: pruned].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Median forward latency in milliseconds at batch `b` (eval mode, no gradients): 3 warm-up
/// passes, then at least 5 and at most 50 timed passes, stopping after about a second.
fn latency_ms(model: &Model, b: i64) -> Result<f64> {
    let mut shape = vec![b];
    shape.extend(model.graph().shape_at(0).iter().map(|&d| d as i64));
    let x = tch::Tensor::randn(&shape, (tch::Kind::Float, model.device()));
    for _ in 0..3 {
        let _ = tch::no_grad(|| model.forward(&x, Mode::Eval))?;
    }
    let budget = Instant::now();
    let mut times = Vec::new();
    while times.len() < 5 || (times.len() < 50 && budget.elapsed().as_secs_f64() < 1.0) {
        let t = Instant::now();
        let _ = tch::no_grad(|| model.forward(&x, Mode::Eval))?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Size, accuracy (`e`, the model's evaluation on the test split) and latency.
fn figures(model: &Model, e: Evaluation) -> Result<serde_json::Value> {
    Ok(json!({
        "params": model.graph().param_count(),
        "macs": model.graph().macs(),
        "top1": e.top1,
        "loss": e.loss,
        "latency_ms": {"batch1": latency_ms(model, 1)?, "batch64": latency_ms(model, 64)?},
    }))
}

/// Runs `prune`.
pub fn prune(args: &PruneArgs) -> Result<()> {
    let quiet = args.run.quiet;
    let (config, model, train, test) = args.run.setup()?;
    if config.model.weights.is_none() {
        bail!("prune needs trained weights: --weights FILE (or [model] weights in the config)");
    }
    let section = &config.prune;
    // Goals from the flags (clap allows one kind), else from the config's [prune].
    let flags = PruneSection {
        alpha: args.alpha,
        alpha_sweep: (!args.alpha_sweep.is_empty()).then(|| args.alpha_sweep.clone()),
        target_macs: args.target_macs,
        target_params: args.target_params,
        ..PruneSection::default()
    };
    let goals = match flags.goals()? {
        Some(g) => g,
        None => section.goals()?.context(
            "no pruning goal: give --alpha, --alpha-sweep, --target-macs or --target-params \
             (or alpha, alpha_sweep, target_macs or target_params under [prune] in the config)",
        )?,
    };
    let finetune_epochs = args
        .finetune_epochs
        .or(section.finetune_epochs)
        .unwrap_or(0);
    let finetune_lr = args.finetune_lr.or(section.finetune_lr).unwrap_or(0.01);
    let rule = args.rule.or(section.rule).unwrap_or(Rule::Package);
    let min_keep = args.min_keep.or(section.min_keep).unwrap_or(1);
    let round_to = args.round_to.or(section.round_to).unwrap_or(1);
    let out = args
        .out
        .clone()
        .or(section.out.clone())
        .unwrap_or_else(|| PathBuf::from("pruned"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let eval_t = Transform {
        augment: None,
        ..config.transform.clone()
    };
    let before = figures(&model, fair_train::evaluate(&model, &test, &eval_t, 512)?)?;

    // Calibration samples from the training split, transformed as for evaluation.
    let draw = args.calibration.settings(section);
    let calibration = draw.draw(&model, &train, &config.transform)?;
    let (per_class, max_classes, seed) = (draw.per_class, draw.max_classes, draw.seed);

    // Score once; reuse stored scores with the same provenance.
    let u_settings = UScoreSettings {
        max_classes,
        samples_per_class: per_class,
        seed,
        ..Default::default()
    };
    let r_settings = RScoreSettings {
        seed,
        ..Default::default()
    };
    let scores_path = out.join("scores.json");
    let digest = fair_scoring::model_digest(&model)?;
    let data_digest = calibration.digest()?;
    let stored = ScoreFile::load(&scores_path).ok().filter(|f| {
        f.provenance.model_digest == digest
            && f.provenance.data_digest == data_digest
            && f.provenance.u_settings == u_settings
            && f.provenance.r_settings == r_settings
    });
    let reused = stored.is_some();
    let file = match stored {
        Some(f) => {
            if !quiet {
                eprintln!(
                    "reusing {} (same model, data and settings)",
                    scores_path.display()
                );
            }
            f
        }
        None => {
            let f = compute_scores(
                &model,
                Some(&calibration),
                &[Criterion::U, Criterion::R, Criterion::L1],
                AnalysisPoint::LayerOutput,
                u_settings,
                r_settings,
                seed,
                Progress { enabled: !quiet },
            )?;
            f.save(&scores_path)?;
            f
        }
    };
    let t = Thresholder::new(&file, &scores_path)?;
    let options = ApplyOptions {
        rule: match rule {
            Rule::Intersection => GroupRule::Intersection,
            Rule::Package => GroupRule::Package,
            Rule::Strict => GroupRule::Strict,
        },
        protected: Vec::new(),
    };
    let mut results = Vec::new();
    let mut all_counts = Vec::new();
    for goal in goals {
        let start = Instant::now();
        let counting = CountOptions {
            min_keep,
            round_to: round_to.max(1),
        };
        let (alpha, counts) = t.solve(goal, counting)?;
        let plan = t.plan(&file, &counts, "u")?;
        let threshold_ms = start.elapsed().as_secs_f64() * 1e3;
        let mut pruned = fair_surgery::apply(&model, &plan, &options)?;
        let one_shot = fair_train::evaluate(&pruned.model, &test, &eval_t, 512)?;
        if finetune_epochs > 0 {
            let settings = TrainSettings {
                epochs: finetune_epochs,
                lr: finetune_lr,
                seed,
                ..config.train.clone().unwrap_or_default()
            };
            fair_train::train(
                &mut pruned.model,
                &train,
                None,
                &config.transform,
                &eval_t,
                &settings,
                !quiet,
            )?;
        }
        // Without fine-tuning the model after is the one-shot model: evaluate once.
        let evaluation = if finetune_epochs > 0 {
            fair_train::evaluate(&pruned.model, &test, &eval_t, 512)?
        } else {
            one_shot
        };
        let after = figures(&pruned.model, evaluation)?;
        let dir = out.join(format!("alpha-{alpha:.4}"));
        fair_surgery::export(&pruned.model, &dir)?;
        fair_ir::write_atomic(
            &dir.join("report.json"),
            serde_json::to_string_pretty(&pruned.report)?.as_bytes(),
        )?;
        let kept = t.kept(&counts);
        results.push(json!({
            "goal": format!("{goal:?}"),
            "alpha": alpha,
            "threshold_ms": threshold_ms,
            "one_shot": {"top1": one_shot.top1, "loss": one_shot.loss},
            "after": after,
            "finetune_epochs": finetune_epochs,
            "export": dir.display().to_string(),
            "layers": t.curves.iter().zip(&counts).map(|(c, &k)| json!({"layer": c.layer(), "units": c.units(), "tod_count": k, "keep": kept[c.layer()]})).collect::<Vec<_>>(),
        }));
        all_counts.push(counts);
    }
    let report = json!({
        "fair_pruner_version": env!("CARGO_PKG_VERSION"),
        "libtorch": "2.11.0",
        "model": model.graph().name(),
        "weights": config.model.weights,
        "data": train.name.trim_end_matches("/train"),
        "seed": seed,
        "rule": format!("{:?}", options.rule),
        "min_keep": min_keep,
        "round_to": round_to,
        "calibration": {"per_class": per_class, "samples": calibration.len(), "description": calibration.description()},
        "scoring_seconds": file.provenance.seconds,
        "scores_reused": reused,
        "before": before,
        "results": results,
    });
    fair_ir::write_atomic(
        &out.join("report.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    let outcomes: Vec<Outcome> = report["results"]
        .as_array()
        .expect("written above")
        .iter()
        .zip(&all_counts)
        .map(|(result, counts)| Outcome { result, counts })
        .collect();
    crate::report::write(&out, &report, &t.curves, &outcomes)?;
    print!(
        "{}",
        render(
            &crate::report::SUMMARY_HEADERS,
            &crate::report::summary_rows(&report),
            &[1, 2, 3, 4, 5, 6]
        )
    );
    println!(
        "\nreport: {} (charts: {})",
        out.join("report.md").display(),
        out.join("*.svg").display()
    );
    Ok(())
}
