//! Prunes a zoo ResNet-20 to half its MACs through the library, in a few lines.
//!
//! Run with `cargo run --release -p fair-pipeline --example prune_resnet [OUT_DIR]`. The
//! model has random weights and the calibration data are random images with labels 0..9, so
//! it runs anywhere in seconds; put your trained weights and real calibration samples in
//! their place (`Model::from_safetensors`, `Calibration::from_safetensors`).

use fair_pipeline::{Goal, GroupRule, Pruner};
use fair_runtime::Model;
use fair_scoring::Calibration;
use tch::{Device, Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "resnet20-pruned".into());
    let graph = fair_zoo::build("resnet20", &[3, 32, 32], 10)?;
    let model = Model::new(graph, Device::Cpu, 0)?;
    tch::manual_seed(0);
    let images = Tensor::randn([160, 3, 32, 32], (Kind::Float, Device::Cpu));
    let labels = Tensor::arange(160, (Kind::Int64, Device::Cpu)).remainder(10);
    let calibration = Calibration::new(images, &labels, "random images")?;

    // No training split here: the default preset's steps after surgery (reader
    // reconstruction, BatchNorm recalibration) cannot run, so they are turned off
    // explicitly (the report records it); with a split, give it with `.train_split(..)`.
    let outcome = Pruner::new(&model)
        .no_reconstruction()
        .no_recalibration()
        .calibration(&calibration)
        .goal(Goal::Macs(0.5))
        .rule(GroupRule::Intersection)
        .out(&out)
        .run()?;

    let r = &outcome.report.results[0];
    println!(
        "{}: α = {:.4}, MACs {} → {} ({:.1}% removed); exported to {out}/{}",
        outcome.report.model,
        r.setting,
        outcome.report.before.macs,
        r.after.macs,
        100.0 * r.achieved.macs,
        r.label
    );
    Ok(())
}
