//! The pipeline README's "From a config" example (the README shows this file as written; a
//! test keeps them equal). `cargo xtask test` runs it next to `fair-pruner prune` on the same
//! config and weights and checks that the two reports agree.
//!
//! `cargo run -p fair-pipeline --example from_config -- [CONFIG [WEIGHTS [OUT]]]`

use fair_pipeline::{ConfigRun, Pruner, RunConfig};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Defaults: the config and the weights `fair-pruner train --config ...` writes.
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().unwrap_or("configs/fashion-vgg.toml".into()));
    let weights = args
        .next()
        .unwrap_or("runs/fashion-vgg/model.safetensors".into());
    let mut config = RunConfig::load(&path)?;
    config.model.weights = Some(weights.into());
    config.prune.alpha_sweep = Some(vec![0.05, 0.2, 0.4]);
    config.prune.out = args.next().map(PathBuf::from).or(config.prune.out);
    let run = ConfigRun::load(&config, Some(&path), tch::Device::Cpu)?;
    for note in &run.notes {
        eprintln!("note: {note}");
    }

    let outcome = Pruner::from_config(&run).progress(true).run()?;
    for r in &outcome.report.results {
        println!(
            "{}: {:.1}% of MACs removed, one-shot top-1 {:.2}%",
            r.label,
            100.0 * r.achieved.macs,
            100.0 * r.one_shot.map_or(f64::NAN, |a| a.top1)
        );
    }
    Ok(())
}
