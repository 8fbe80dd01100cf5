//! `fair-pruner apply`: a prune plan applied to a model, exported for PyTorch.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use fair_runtime::Model;
use fair_surgery::{ApplyOptions, GroupRule, Plan};

use crate::ModelArgs;
use crate::table::{human, render, thousands};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Remove only the units every coupled layer asks to remove.
    Intersection,
    /// The authors' package rule (default): keep the most any coupled layer keeps (intersection of kept sets first).
    Package,
    /// Coupled layers must ask for exactly the same units.
    Strict,
}

/// Arguments of `fair-pruner apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The model's weights (safetensors with PyTorch state-dict names).
    #[arg(long, value_name = "FILE")]
    weights: PathBuf,
    /// The plan: JSON {"remove": {"layer": [unit, ...], ...}}.
    #[arg(long, value_name = "FILE")]
    plan: PathBuf,
    /// Output directory: model.safetensors, model.toml, model.py (plain PyTorch), report.json.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// How layers coupled by residual adds settle on one set of units.
    #[arg(long, value_enum, default_value = "package")]
    rule: Rule,
    /// Layers never to prune (comma-separated), besides the output layer.
    #[arg(long, value_delimiter = ',')]
    protect: Vec<String>,
}

pub fn apply(args: &ApplyArgs) -> Result<()> {
    let graph = args.model.load()?;
    let model = Model::from_safetensors(graph, &args.weights, tch::Device::Cpu)
        .with_context(|| format!("cannot load the weights {}", args.weights.display()))?;
    let plan = Plan::load(&args.plan)?;
    let options = ApplyOptions {
        rule: match args.rule {
            Rule::Intersection => GroupRule::Intersection,
            Rule::Package => GroupRule::Package,
            Rule::Strict => GroupRule::Strict,
        },
        protected: args.protect.clone(),
    };
    let pruned = fair_surgery::apply(&model, &plan, &options)?;
    fair_surgery::export(&pruned.model, &args.out)
        .with_context(|| format!("cannot export to {}", args.out.display()))?;
    let report = &pruned.report;
    fair_ir::write_atomic(
        &args.out.join("report.json"),
        serde_json::to_string_pretty(report)?.as_bytes(),
    )?;
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
    println!(
        "written to {} (model.safetensors, model.toml, model.py, report.json)",
        args.out.display()
    );
    Ok(())
}
