//! `fair-pruner apply`: a prune plan applied to a model, exported for PyTorch.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use fair_analysis::{GroupRule, Plan, ResolveOptions, graph_digest};
use fair_pipeline::charts::{human, thousands};

use crate::args::{ModelArgs, cli_error};
use crate::table::render;

/// Arguments of `fair-pruner apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The model's weights (safetensors with PyTorch state-dict names); required unless
    /// --graph is an ONNX model, which carries its own.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// The plan: JSON {"remove": {"layer": [unit, ...], ...}} (plans written by `ratios` and
    /// `prune` also carry the digests of the model they were made for, which are checked).
    #[arg(long, value_name = "FILE")]
    plan: PathBuf,
    /// Output directory: model.safetensors, model.toml, model.py (plain PyTorch),
    /// report.json. Replaced as a whole (never half-written); it may not hold the inputs.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// How layers coupled by residual adds settle on one set of units.
    #[arg(long, value_enum, default_value_t = GroupRule::default())]
    rule: GroupRule,
    /// Layers never to prune (comma-separated), besides the output layer.
    #[arg(long, value_delimiter = ',', value_name = "LAYER,...")]
    protect: Vec<String>,
    /// Apply the plan even if it was made for another model (its digests differ).
    #[arg(long)]
    force: bool,
    /// Print the size report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `apply`.
pub fn apply(args: &ApplyArgs) -> Result<()> {
    let mut guard = fair_pipeline::output_guard();
    guard.input("--plan", &args.plan);
    if let Some(w) = &args.weights {
        guard.input("--weights", w);
    }
    if let Some(g) = &args.model.graph {
        fair_pipeline::guard_model_file(&mut guard, "--graph", g);
    }
    let out = guard.dir("--out", &args.out)?;
    let plan = Plan::load(&args.plan)?;
    let model = args
        .model
        .load_model(args.weights.as_deref(), tch::Device::Cpu)?;
    if !args.force {
        if let Some(d) = &plan.graph_digest
            && *d != graph_digest(model.graph())
        {
            bail!(
                "the plan {} was made for another architecture (its graph digest differs from the model's); use --force to apply it anyway",
                args.plan.display()
            );
        }
        if let Some(d) = &plan.model_digest
            && *d != fair_scoring::model_digest(&model)?
        {
            bail!(
                "the plan {} was made for other weights (its model digest differs from {}'s); use --force to apply it anyway",
                args.plan.display(),
                args.weights
                    .as_ref()
                    .or(args.model.graph.as_ref())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
        }
    }
    let staged = out.stage()?;
    let options = ResolveOptions {
        rule: args.rule,
        protected: args.protect.clone(),
        grouped: fair_pipeline::GROUPED_CONVS,
    };
    let pruned = fair_surgery::apply(&model, &plan, &options).map_err(|e| cli_error(e.into()))?;
    fair_surgery::export(&pruned.model, staged.path())?;
    let report = &pruned.report;
    fair_fs::write_atomic(
        &staged.path().join("report.json"),
        serde_json::to_string_pretty(report)?.as_bytes(),
    )?;
    let files = staged.commit()?;
    if args.json {
        return crate::print_json(&fair_surgery::ApplyReport::new(&pruned, &args.out, files));
    }
    let rows: Vec<Vec<String>> = report
        .layers
        .iter()
        .filter(|l| l.params.0 != l.params.1 || l.units.0 != l.units.1)
        .map(|l| {
            vec![
                l.layer.clone(),
                format!("{} → {}", l.units.0, l.units.1),
                format!(
                    "{} → {}",
                    thousands(l.params.0 as u64),
                    thousands(l.params.1 as u64)
                ),
                format!("{} → {}", human(l.macs.0), human(l.macs.1)),
            ]
        })
        .collect();
    print!(
        "{}",
        render(&["layer", "units", "params", "MACs"], &rows, &[])
    );
    println!(
        "\ntotal: parameters {} → {} ({:.1}% removed), MACs {} → {} ({:.1}% removed)",
        human(report.params.0 as u64),
        human(report.params.1 as u64),
        100.0 * (1.0 - report.params.1 as f64 / report.params.0 as f64),
        human(report.macs.0),
        human(report.macs.1),
        100.0 * (1.0 - report.macs.1 as f64 / report.macs.0 as f64)
    );
    println!("written to {} ({})", args.out.display(), files.join(", "));
    Ok(())
}
