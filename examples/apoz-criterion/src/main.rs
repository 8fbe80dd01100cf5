//! Prunes a VGG-11 to 40% fewer MACs with ToD counts from APoZ (remove-by) and the R-Score
//! (protect-by), APoZ ranking the units: a criterion defined outside fair-pruner, used end to
//! end through the library. `cargo run -p fair-example-apoz [OUT_DIR]`.

use fair_pipeline::{Goal, Pruner};
use fair_runtime::Model;
use fair_scoring::{Calibration, Registry};
use tch::{Device, Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "vgg11-apoz".into());
    let model = Model::new(
        fair_zoo::build("vgg11_bn_cifar", &[3, 32, 32], 10)?,
        Device::Cpu,
        0,
    )?;
    tch::manual_seed(0);
    let x = Tensor::randn([80, 3, 32, 32], (Kind::Float, Device::Cpu));
    let y = Tensor::arange(80, (Kind::Int64, Device::Cpu)).remainder(10);
    let calibration = Calibration::new(x, &y, "random images")?;
    let mut registry = Registry::default();
    fair_example_apoz::register(&mut registry);

    let outcome = Pruner::new(&model)
        .registry(registry)
        // Random calibration images and no training split: the preset's steps after surgery
        // (reconstruction, BatchNorm recalibration) are turned off, explicitly.
        .no_reconstruction()
        .no_recalibration()
        .calibration(&calibration)
        .criteria(["apoz", "r"])
        .remove_by("apoz")
        .protect_by("r")
        .goal(Goal::Macs(0.4))
        .out(&out)
        .run()?;
    let r = &outcome.report.results[0];
    println!(
        "APoZ + ToD: α = {:.4}, {:.1}% of MACs removed; export in {out}/{}",
        r.setting,
        100.0 * r.achieved.macs,
        r.label
    );
    Ok(())
}
