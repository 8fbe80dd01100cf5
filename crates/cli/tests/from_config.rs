//! The library's config path (`ConfigRun::load` + `Pruner::from_config`) makes the run
//! `fair-pruner prune --config` makes: same counts, MACs, accuracies and steps after surgery.

use std::path::Path;

use fair_pipeline::{ConfigRun, PruneReport, Pruner, RunConfig, StepStatus};

mod common;
use common::{run, stderr};

fn report(out: &Path) -> PruneReport {
    serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap()
}

#[test]
fn the_library_and_the_cli_make_the_same_run_of_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    fair_testkit::write_idx_toy(&data);
    let weights = dir.path().join("m.safetensors");
    let model = common::toy_flags("vgg_compact", &data);
    let mut args = vec!["train"];
    args.extend(model.iter().map(String::as_str));
    args.extend([
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--threads",
        "1",
        "--out",
        weights.to_str().unwrap(),
        "-q",
    ]);
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));

    // The default preset's steps after surgery (reconstruction, recalibration) need the
    // training split: the library path must run them as the CLI does.
    let cli_out = dir.path().join("cli");
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[model]
zoo = "vgg_compact"
input = [1, 8, 8]
classes = 2
weights = {weights:?}

[data]
source = "idx"
path = {data:?}

[train]
epochs = 1
batch_size = 8
lr = 0.05
momentum = 0.9
weight_decay = 0.0005
schedule = {{ kind = "cosine" }}
seed = 0

[prune]
alpha = 0.5
per_class = 8
seed = 3
reconstruct = 2
bn_recalibrate = 2
out = {cli_out:?}
"#
        ),
    )
    .unwrap();
    let o = run(&[
        "prune",
        "--config",
        config.to_str().unwrap(),
        "--threads",
        "1",
        "--no-latency",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cli = report(&cli_out);

    tch::set_num_threads(1);
    let loaded = RunConfig::load(&config).unwrap();
    let run = ConfigRun::load(&loaded, Some(&config), tch::Device::Cpu).unwrap();
    let lib_out = dir.path().join("lib");
    let lib = Pruner::from_config(&run)
        .no_latency()
        .out(&lib_out)
        .run()
        .unwrap()
        .report;

    assert_eq!(lib.selection, cli.selection);
    assert_eq!(lib.seed, 3);
    assert_eq!(lib.seed, cli.seed);
    assert_eq!(lib.weights, cli.weights);
    assert_eq!(lib.calibration, cli.calibration);
    assert_eq!(lib.before.accuracy, cli.before.accuracy);
    assert_eq!(lib.after_surgery, cli.after_surgery);
    let steps = cli.after_surgery.unwrap();
    assert_eq!(
        (steps.reconstruction, steps.recalibration),
        (StepStatus::Ran, StepStatus::Ran)
    );
    assert_eq!(lib.results.len(), 1);
    let (l, c) = (&lib.results[0], &cli.results[0]);
    assert_eq!(l.label, "alpha-0.5");
    assert_eq!(l.layers, c.layers);
    assert_eq!(l.achieved, c.achieved);
    assert_eq!(
        (l.after.macs, l.after.params),
        (c.after.macs, c.after.params)
    );
    assert!(c.one_shot.is_some());
    assert_eq!(l.one_shot, c.one_shot);
    assert_eq!(l.after.accuracy, c.after.accuracy);
    let (lr, cr) = (
        l.recalibration.as_ref().unwrap(),
        c.recalibration.as_ref().unwrap(),
    );
    assert_eq!(
        (lr.batches, lr.batch_size, lr.seed),
        (cr.batches, cr.batch_size, cr.seed)
    );
    assert_eq!((cr.batches, cr.batch_size, cr.seed), (2, 8, 3));
    let (lr, cr) = (
        l.reconstruction.as_ref().unwrap(),
        c.reconstruction.as_ref().unwrap(),
    );
    assert_eq!(lr.layers, cr.layers);
    assert_eq!((cr.batches, cr.batch_size, cr.seed), (2, 8, 3));
}
