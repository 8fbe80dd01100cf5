//! Training on small synthetic data: it learns, it is reproducible, settings are checked.

use fair_data::{Dataset, Transform};
use fair_runtime::Model;
use fair_train::{Optimizer, Schedule, TrainError, TrainSettings, evaluate, train};

/// Two classes of 6×6 grey images: bright top half vs bright bottom half, with noise.
fn data(n: usize, seed: u64) -> Dataset {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let c = (i % 2) as i64;
        for y in 0..6 {
            for _ in 0..6 {
                let bright = (y < 3) == (c == 0);
                let base: i32 = if bright { 180 } else { 60 };
                pixels.push((base + rng.gen_range(-50..50)).clamp(0, 255) as u8);
            }
        }
        labels.push(c);
    }
    Dataset::new(
        "synthetic",
        [1, 6, 6],
        pixels,
        labels,
        vec!["top".into(), "bottom".into()],
    )
    .unwrap()
}

fn model(seed: u64) -> Model {
    let g = fair_zoo::mlp(vec![1, 6, 6], &[16], 2).unwrap();
    Model::new(g, tch::Device::Cpu, seed).unwrap()
}

fn settings() -> TrainSettings {
    TrainSettings {
        epochs: 4,
        batch_size: 16,
        lr: 0.05,
        schedule: Schedule::Cosine,
        ..Default::default()
    }
}

#[test]
fn training_learns_a_separable_problem() {
    tch::set_num_threads(1);
    let (tr, te) = (data(256, 1), data(128, 2));
    let t = Transform {
        mean: vec![0.5],
        std: vec![0.25],
        augment: None,
        ..Default::default()
    };
    let mut m = model(0);
    let before = evaluate(&m, &te, &t, 64).unwrap();
    let reports = train(&mut m, &tr, Some(&te), &t, &t, &settings(), false).unwrap();
    assert_eq!(reports.len(), 4);
    let after = reports.last().unwrap().test.unwrap();
    assert!(
        after.top1 >= 0.95,
        "test top-1 {} (before {})",
        after.top1,
        before.top1
    );
    assert!(after.loss < before.loss);
    assert_eq!(
        evaluate(&m, &te, &t, 64).unwrap(),
        after,
        "evaluation is deterministic"
    );
}

#[test]
fn same_seed_same_weights() {
    tch::set_num_threads(1);
    let tr = data(128, 3);
    let t = Transform {
        mean: vec![0.5],
        std: vec![0.25],
        augment: Some(fair_data::Augment {
            crop_padding: 1,
            flip: true,
        }),
        ..Default::default()
    };
    let run = |seed: u64| {
        let mut m = model(0);
        train(
            &mut m,
            &tr,
            None,
            &t,
            &t,
            &TrainSettings { seed, ..settings() },
            false,
        )
        .unwrap();
        m.tensor("layers.0.weight").unwrap().copy()
    };
    assert!(run(5).equal(&run(5)));
    assert!(!run(5).equal(&run(6)));
}

#[test]
fn bad_settings_are_named() {
    let tr = data(8, 4);
    let t = Transform::default();
    let mut m = model(0);
    for (s, name) in [
        (
            TrainSettings {
                epochs: 0,
                ..settings()
            },
            "epochs",
        ),
        (
            TrainSettings {
                lr: -1.0,
                ..settings()
            },
            "lr",
        ),
        (
            TrainSettings {
                momentum: 1.0,
                ..settings()
            },
            "momentum",
        ),
        // AdamW's decoupled decay would flip the weights' sign.
        (
            TrainSettings {
                optimizer: Optimizer::Adamw,
                lr: 0.5,
                weight_decay: 2.0,
                ..settings()
            },
            "weight_decay",
        ),
        // Issue 29: values that used to abort (per-epoch storage of 2^32 epochs) or panic
        // inside libtorch (rates beyond float32).
        (
            TrainSettings {
                epochs: 1 << 32,
                ..settings()
            },
            "epochs",
        ),
        (
            TrainSettings {
                lr: 1e39,
                ..settings()
            },
            "lr",
        ),
        (
            TrainSettings {
                lr: f64::INFINITY,
                ..settings()
            },
            "lr",
        ),
        (
            TrainSettings {
                weight_decay: 1e39,
                ..settings()
            },
            "weight_decay",
        ),
        (
            TrainSettings {
                schedule: Schedule::Step {
                    every: 0,
                    gamma: 0.1,
                },
                ..settings()
            },
            "schedule",
        ),
    ] {
        let e = train(&mut m, &tr, None, &t, &t, &s, false).unwrap_err();
        assert!(
            matches!(e, TrainError::Setting { name: n, .. } if n == name),
            "{e}"
        );
    }
    let diverge = TrainSettings {
        lr: 1e30,
        ..settings()
    };
    let e = train(&mut m, &tr, None, &t, &t, &diverge, false).unwrap_err();
    assert!(matches!(e, TrainError::Diverged { .. }), "{e}");
    // An empty split is an error naming it, never a NaN accuracy.
    let empty = Dataset::new(
        "empty/test",
        [1, 6, 6],
        vec![],
        vec![],
        vec!["a".into(), "b".into()],
    )
    .unwrap();
    let e = train(&mut m, &tr, Some(&empty), &t, &t, &settings(), false).unwrap_err();
    assert!(
        e.to_string().contains("'empty/test' holds no images"),
        "{e}"
    );
    let e = evaluate(&m, &empty, &t, 8).unwrap_err();
    assert!(
        e.to_string().contains("'empty/test' holds no images"),
        "{e}"
    );
}

/// An ImageFolder of two classes, reddish vs bluish, `n` PNGs each of varying sizes.
fn folder(dir: &std::path::Path, n: u32) -> fair_data::ImageFolder {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for (class, tint) in [("blue", [40u8, 60, 200]), ("red", [200u8, 60, 40])] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..n {
            let (w, h) = (rng.gen_range(12..30), rng.gen_range(12..30));
            let img = image::RgbImage::from_fn(w, h, |_, _| {
                image::Rgb(tint.map(|v| (v as i32 + rng.gen_range(-40..40)).clamp(0, 255) as u8))
            });
            img.save(dir.join(class).join(format!("{i:03}.png")))
                .unwrap();
        }
    }
    fair_data::ImageFolder::open(dir).unwrap()
}

#[test]
fn training_and_evaluation_stream_an_image_folder() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let f = folder(dir.path(), 24);
    let t = Transform {
        mean: vec![0.5],
        std: vec![0.25],
        augment: Some(fair_data::Augment {
            crop_padding: 0,
            flip: true,
        }),
        ..Default::default()
    };
    let eval_t = Transform {
        augment: None,
        ..t.clone()
    };
    let run = |seed: u64| {
        let g = fair_zoo::mlp(vec![3, 8, 8], &[16], 2).unwrap();
        let mut m = Model::new(g, tch::Device::Cpu, 0).unwrap();
        let reports = train(
            &mut m,
            &f,
            Some(&f),
            &t,
            &eval_t,
            &TrainSettings {
                epochs: 3,
                batch_size: 8,
                seed,
                ..settings()
            },
            false,
        )
        .unwrap();
        (reports.last().unwrap().test.unwrap(), m)
    };
    let (after, m) = run(1);
    assert!(after.top1 >= 0.9, "top-1 {}", after.top1);
    let small = evaluate(&m, &f, &eval_t, 5).unwrap();
    assert_eq!(small.top1, after.top1, "batch size does not matter");
    assert!((small.loss - after.loss).abs() < 1e-5);
    let (again, m2) = run(1);
    assert_eq!(again, after, "same seed, same run");
    assert!(
        m.tensor("layers.0.weight")
            .unwrap()
            .equal(m2.tensor("layers.0.weight").unwrap())
    );
}

/// One AdamW step over the whole (tiny) set is the first bias-corrected Adam step with
/// decoupled decay, p₁ = p₀·(1 − lr·wd) − lr·g/(|g| + ε), with g the gradient at p₀ computed
/// here on a second copy of the model: not coupled Adam (−lr·sign(g + wd·p₀)), not an
/// uncorrected step.
#[test]
fn adamw_takes_the_decoupled_bias_corrected_first_step() {
    use fair_runtime::Mode;
    use tch::Tensor;
    tch::set_num_threads(1);
    let n = 16;
    let tr = data(n, 3);
    let t = Transform {
        mean: vec![0.5],
        std: vec![0.25],
        augment: None,
        ..Default::default()
    };
    let (lr, wd) = (0.1, 0.5);
    let s = TrainSettings {
        epochs: 1,
        batch_size: n,
        lr,
        weight_decay: wd,
        schedule: Schedule::Constant,
        optimizer: Optimizer::Adamw,
        ..settings()
    };
    // The gradient at p₀: the mean cross-entropy over the set, inputs (x/255 − 0.5)/0.25.
    let probe = model(0);
    let x: Vec<f32> = (0..n)
        .flat_map(|i| tr.image(i).iter().map(|&p| (p as f32 / 255.0 - 0.5) / 0.25))
        .collect::<Vec<_>>();
    let x = Tensor::from_slice(&x).view([n as i64, 1, 6, 6]);
    let y = Tensor::from_slice(&(0..n as i64).map(|i| i % 2).collect::<Vec<_>>());
    probe
        .forward(&x, Mode::Train)
        .unwrap()
        .cross_entropy_for_logits(&y)
        .backward();

    let mut m = model(0);
    train(&mut m, &tr, None, &t, &t, &s, false).unwrap();
    let mut coupled_differs = false;
    for (name, p0) in probe.named_tensors() {
        let g = p0.grad();
        let p0 = p0.detach();
        let expected = &p0 * (1.0 - lr * wd) - (&g / (g.abs() + 1e-8)) * lr;
        let got = m.tensor(&name).unwrap();
        let off = (got - &expected).abs().max().double_value(&[]);
        assert!(off < 1e-5, "{name}: {off} off the AdamW step");
        let coupled = &p0 - (&g + &p0 * wd).sign() * lr;
        coupled_differs |= (got - coupled).abs().max().double_value(&[]) > 1e-3;
    }
    assert!(
        coupled_differs,
        "no parameter tells AdamW from coupled Adam"
    );
}

#[test]
fn adamw_learns_and_takes_other_steps_than_sgd() {
    tch::set_num_threads(1);
    let (tr, te) = (data(256, 1), data(128, 2));
    let t = Transform {
        mean: vec![0.5],
        std: vec![0.25],
        augment: None,
        ..Default::default()
    };
    let adamw = TrainSettings {
        optimizer: Optimizer::Adamw,
        lr: 0.01,
        weight_decay: 0.05,
        ..settings()
    };
    let mut m = model(0);
    let reports = train(&mut m, &tr, Some(&te), &t, &t, &adamw, false).unwrap();
    let after = reports.last().unwrap().test.unwrap();
    assert!(after.top1 >= 0.95, "AdamW: test top-1 {}", after.top1);
    // The same run with SGD at the same rate ends elsewhere.
    let mut sgd = model(0);
    let same = TrainSettings {
        optimizer: Optimizer::Sgd,
        ..adamw.clone()
    };
    train(&mut sgd, &tr, None, &t, &t, &same, false).unwrap();
    let w = |m: &Model| m.tensor("layers.0.weight").unwrap().copy();
    assert!(!w(&m).allclose(&w(&sgd), 1e-4, 1e-4, false));
    // Settings: SGD, the default, is left out when written (stored keys keep their form);
    // AdamW is written and read back.
    let sgd_json = serde_json::to_value(TrainSettings::default()).unwrap();
    assert!(sgd_json.get("optimizer").is_none(), "{sgd_json}");
    let json = serde_json::to_value(&adamw).unwrap();
    assert_eq!(json["optimizer"], "adamw");
    let back: TrainSettings = serde_json::from_value(json).unwrap();
    assert_eq!(back, adamw);
    let mut unknown = serde_json::to_value(&adamw).unwrap();
    unknown["optimizer"] = "adam".into();
    assert!(serde_json::from_value::<TrainSettings>(unknown).is_err());
    // Settings written before the optimizer existed (no key) read as SGD, the default.
    let old_json = r#"{"epochs": 10, "batch_size": 128, "lr": 0.05, "momentum": 0.9,
        "weight_decay": 0.0005, "schedule": {"kind": "cosine"}, "seed": 0}"#;
    assert_eq!(
        serde_json::from_str::<TrainSettings>(old_json).unwrap(),
        TrainSettings::default()
    );
    let old_toml = "epochs = 10\nbatch_size = 128\nlr = 0.05\nmomentum = 0.9\n\
        weight_decay = 0.0005\nschedule = { kind = \"cosine\" }\nseed = 0\n";
    assert_eq!(
        toml::from_str::<TrainSettings>(old_toml).unwrap(),
        TrainSettings::default()
    );
}
