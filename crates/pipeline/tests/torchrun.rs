//! Fine-tuning on PyTorch DDP: two CPU processes (gloo) fine-tune a pruned Fashion-MNIST
//! model with the export's own `finetune.py` under torchrun; the weights come back into the
//! report and the export, `--resume` continues from the checkpoint (read by rank 0 and
//! broadcast), and a failing torchrun is an error with its output, never a finished run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use fair_data::{Builtin, Dataset, Transform};
use fair_pipeline::{DrawSettings, Goal, Pruner, Torchrun, TorchrunData};
use fair_runtime::Model;
use fair_scoring::ScoringSettings;
use fair_train::TrainSettings;
use tch::Device;

fn python() -> Option<PathBuf> {
    fair_testkit::reference_python("the torchrun fine-tuning test")
}

/// A stratified part of Fashion-MNIST: `train` and `test` images per class.
fn data(train: usize, test: usize) -> (Dataset, Dataset) {
    let (tr, te, _) = fair_data::load_builtin(Builtin::FashionMnist, &fair_data::cache_dir())
        .expect("Fashion-MNIST (cargo xtask test fetches it)");
    let (tr, _) = tr.split_stratified(1, |_| train);
    let (te, _) = te.split_stratified(2, |_| test);
    (tr, te)
}

fn transform() -> Transform {
    Transform {
        mean: vec![0.286],
        std: vec![0.353],
        ..Transform::default()
    }
}

fn settings() -> TrainSettings {
    TrainSettings {
        epochs: 1,
        batch_size: 64,
        lr: 0.05,
        seed: 3,
        ..TrainSettings::default()
    }
}

fn quick() -> ScoringSettings {
    let mut s = ScoringSettings::default();
    s.u.projections = 8;
    s
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
#[ignore = "needs the reference Python (cargo xtask test runs it)"]
fn two_gloo_processes_finetune_an_export_and_resume_from_its_checkpoint() {
    let Some(py) = python() else { return };
    let (train, test) = data(200, 100); // 2,000 / 1,000 images
    let t = transform();
    let graph = fair_zoo::build("vgg_compact", &[1, 28, 28], 10).unwrap();
    let model = Model::new(graph, Device::Cpu, 0).unwrap();
    let draw = DrawSettings {
        per_class: 8,
        ..DrawSettings::default()
    };
    let (calibration, _) = draw.draw(model.graph(), &train, &t).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");

    let start = Instant::now();
    let outcome = Pruner::new(&model)
        .no_reconstruction()
        .no_recalibration()
        .calibration(&calibration)
        .scoring(quick())
        .criteria(["u", "r"])
        .goal(Goal::Alpha(0.3))
        .evaluate_on(&test, &t)
        .torchrun(
            Torchrun::new(
                TorchrunData::Datasets {
                    train: &train,
                    test: &test,
                },
                &t,
                settings(),
            )
            .nproc(2)
            .python(&py)
            .script_args(["--max-steps", "12"]),
        )
        .out(&out)
        .run()
        .unwrap_or_else(|e| panic!("{}", fair_pipeline::error_text(&e)));
    let seconds = start.elapsed().as_secs_f64();
    let r = &outcome.report.results[0];
    let run = r
        .torchrun
        .as_ref()
        .expect("torchrun's result is in the report");
    let before = r.one_shot.unwrap().top1;
    let after = r.after.accuracy.unwrap().top1;
    eprintln!(
        "torchrun: top-1 {:.2}% → {:.2}% (script: {:.2}%), {} steps, torchrun {:.1} s, whole run {seconds:.1} s",
        100.0 * before,
        100.0 * after,
        100.0 * run.test.top1,
        run.steps,
        run.seconds
    );
    assert_eq!((run.world_size, run.backend.as_deref()), (2, Some("gloo")));
    assert_eq!((run.epochs, run.steps, r.finetune_epochs), (1, 12, 1));
    assert_eq!(run.test_samples, test.len());
    assert!(
        after > before + 0.2,
        "fine-tuning did not help: {before} → {after}"
    );
    // fair-pruner's evaluation of the weights it read back is the script's own figure.
    assert!(
        (after - run.test.top1).abs() <= 0.005,
        "fair-pruner measures {after}, the script {}",
        run.test.top1
    );

    // The export holds the fine-tuned weights; the run's files are listed in the report.
    let export = out.join(r.export.as_ref().unwrap());
    let reloaded = Model::from_safetensors(
        fair_ir::Graph::load(&export.join("model.toml")).unwrap(),
        &export.join("model.safetensors"),
        Device::Cpu,
    )
    .unwrap();
    let e = fair_train::evaluate(&reloaded, &test, &t, 256).unwrap();
    assert_eq!(e.top1, after);
    for f in [
        "finetune-data/train.safetensors",
        "alpha-0.3/finetune.py",
        "alpha-0.3/finetune.json",
        "alpha-0.3/finetune/checkpoint.pt",
        "alpha-0.3/finetune/result.json",
        "alpha-0.3/finetune/torchrun.log",
    ] {
        assert!(
            outcome.report.files.iter().any(|g| g == f),
            "{f} not listed"
        );
    }
    let spec = read_json(&export.join("finetune.json"));
    assert_eq!(spec["data"]["source"], "fair");
    assert_eq!(spec["transform"]["mean"][0].as_f64().unwrap() as f32, 0.286);

    // --resume continues at epoch 2 and step 13: the optimiser's steps carry on. Rank 0
    // reads the checkpoint and broadcasts it, with both processes' random state; extending
    // the finished cosine run with --reset-schedule restarts it at the base rate.
    let first = read_json(&export.join("finetune/result.json"));
    let status = Command::new(&py)
        .args([
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
        ])
        .args([
            "finetune.py",
            "--epochs",
            "2",
            "--max-steps",
            "12",
            "--resume",
            "--reset-schedule",
        ])
        .current_dir(&export)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(!stderr.contains("is not restored"), "{stderr}");
    let second = read_json(&export.join("finetune/result.json"));
    let lr: Vec<f64> = second["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["lr"].as_f64().unwrap())
        .collect();
    assert_eq!(lr, [settings().lr, settings().lr]);
    assert_eq!(second["resumed_from"]["epoch"], 1);
    assert_eq!(second["resumed_from"]["step"], 12);
    assert_eq!(
        (second["epochs"].as_u64(), second["steps"].as_u64()),
        (Some(2), Some(24))
    );
    assert_eq!(second["train_loss"][0], first["train_loss"][0]);
    assert_eq!(second["train_loss"].as_array().unwrap().len(), 2);
    eprintln!(
        "resumed: epoch 2 train loss {} (epoch 1: {}), test top-1 {}",
        second["train_loss"][1], second["train_loss"][0], second["test"]["top1"]
    );
}

#[test]
#[ignore = "needs the reference Python (cargo xtask test runs it)"]
fn a_failing_torchrun_is_an_error_with_its_output_and_leaves_no_output() {
    let Some(py) = python() else { return };
    let (train, test) = data(20, 10);
    let t = transform();
    let graph = fair_zoo::build("mlp", &[1, 28, 28], 10).unwrap();
    let model = Model::new(graph, Device::Cpu, 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let e = Pruner::new(&model)
        .no_reconstruction()
        .no_recalibration()
        .criteria(["l1"])
        .remove_by("l1")
        .protect_by("l1")
        .goal(Goal::Alpha(0.3))
        .torchrun(
            Torchrun::new(
                TorchrunData::Datasets {
                    train: &train,
                    test: &test,
                },
                &t,
                settings(),
            )
            .python(&py)
            .script_args(["--no-such-flag"]),
        )
        .out(&out)
        .run()
        .err()
        .expect("a failing torchrun fails the run");
    let text = fair_pipeline::error_text(&e);
    assert!(text.contains("torchrun failed"), "{text}");
    assert!(text.contains("--no-such-flag"), "{text}");
    assert!(!out.exists(), "a failed run left {}", out.display());

    // A missing interpreter is reported before any work.
    let e = Pruner::new(&model)
        .no_reconstruction()
        .no_recalibration()
        .criteria(["l1"])
        .remove_by("l1")
        .protect_by("l1")
        .goal(Goal::Alpha(0.3))
        .torchrun(
            Torchrun::new(
                TorchrunData::Datasets {
                    train: &train,
                    test: &test,
                },
                &t,
                settings(),
            )
            .python(dir.path().join("no-python")),
        )
        .out(&out)
        .run()
        .err()
        .unwrap();
    assert!(fair_pipeline::error_text(&e).contains("`python`"), "{e}");
}

#[test]
fn torchrun_needs_an_output_directory() {
    let (train, test) = (
        Dataset::new(
            "x/train",
            [1, 2, 2],
            vec![0; 8],
            vec![0, 1],
            vec!["a".into(), "b".into()],
        )
        .unwrap(),
        Dataset::new(
            "x/test",
            [1, 2, 2],
            vec![0; 8],
            vec![0, 1],
            vec!["a".into(), "b".into()],
        )
        .unwrap(),
    );
    let graph = fair_zoo::build("mlp", &[1, 2, 2], 2).unwrap();
    let model = Model::new(graph, Device::Cpu, 0).unwrap();
    let pruner = Pruner::new(&model)
        .no_reconstruction()
        .no_recalibration()
        .criteria(["l1"])
        .remove_by("l1")
        .protect_by("l1")
        .goal(Goal::Alpha(0.3))
        .torchrun(Torchrun::new(
            TorchrunData::Datasets {
                train: &train,
                test: &test,
            },
            &transform(),
            settings(),
        ));
    let e = pruner.validate().unwrap_err().to_string();
    assert!(e.contains("(`out`)") && !e.contains("--"), "{e}");
}
