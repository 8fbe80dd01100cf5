//! Reader reconstruction: a reader of removed units that were copies of kept ones is refitted
//! exactly, the reported errors are the ones a forward pass measures, a fit never raises a
//! layer's error, and bad settings are refused by name.

use fair_analysis::{Plan, Resolution, ResolveOptions};
use fair_data::{Dataset, ImageSource, Transform};
use fair_ir::GraphBuilder;
use fair_runtime::{Mode, Model};
use fair_testkit::max_abs_diff;
use fair_train::{Reconstruction, TrainError, reconstruct_readers};
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

const INPUT: [usize; 3] = [3, 6, 6];

/// conv1 → relu1 → conv2 → relu2 → flatten → fc → relu3 → head.
fn net(seed: u64) -> Model {
    let mut b = GraphBuilder::new("recon-net", "input", INPUT.to_vec());
    b.conv("conv1", "input", 4, 3, 1, 1, true).unwrap();
    b.relu("relu1", "conv1").unwrap();
    b.conv("conv2", "relu1", 3, 3, 1, 1, true).unwrap();
    b.relu("relu2", "conv2").unwrap();
    b.flatten("flatten", "relu2").unwrap();
    b.linear("fc", "flatten", 5, true).unwrap();
    b.relu("relu3", "fc").unwrap();
    b.linear("head", "relu3", 2, true).unwrap();
    Model::new(b.finish().unwrap(), Device::Cpu, seed).unwrap()
}

fn data(n: usize, seed: u64) -> Dataset {
    fair_testkit::noise_dataset(INPUT, n, seed)
}

fn transform() -> Transform {
    Transform {
        mean: vec![0.5],
        std: vec![0.25],
        ..Default::default()
    }
}

/// Every sample of `d` as one batch.
fn all(d: &Dataset) -> Tensor {
    let order: Vec<usize> = (0..d.len()).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    d.batch(&transform(), &order, INPUT, false, &mut rng)
        .unwrap()
        .0
}

fn copy_row(m: &Model, name: &str, from: i64, to: i64, factor: f64) {
    tch::no_grad(|| {
        let t = m.tensor(name).unwrap().shallow_clone();
        let src = t.get(from) * factor;
        t.get(to).copy_(&src);
    });
}

/// Removes conv1's unit 3 (a copy of unit 0) and fc's unit 4 (twice unit 1).
fn duplicated() -> (Model, Resolution, Model) {
    let model = net(1);
    for p in ["conv1.weight", "conv1.bias"] {
        copy_row(&model, p, 0, 3, 1.0);
    }
    for p in ["fc.weight", "fc.bias"] {
        copy_row(&model, p, 1, 4, 2.0);
    }
    let plan = Plan::new().remove("conv1", [3]).remove("fc", [4]);
    let resolution = Resolution::new(model.graph(), &plan, &ResolveOptions::default()).unwrap();
    let pruned = fair_surgery::apply_resolution(&model, &resolution)
        .unwrap()
        .model;
    (model, resolution, pruned)
}

#[test]
fn readers_of_removed_copies_are_refitted_exactly() {
    let (model, resolution, pruned) = duplicated();
    let d = data(64, 3);
    let x = all(&d);
    let want = model.forward(&x, Mode::Eval).unwrap();
    let before = pruned.forward(&x, Mode::Eval).unwrap();
    let scale = want.abs().max().double_value(&[]);
    assert!(
        max_abs_diff(&want, &before) > 1e-2 * scale,
        "the surgery alone must change the output, or the test proves nothing"
    );
    let settings = Reconstruction {
        batches: 2,
        batch_size: 32,
        ridge: 0.0,
        ..Default::default()
    };
    let report =
        reconstruct_readers(&model, &pruned, &resolution, &d, &transform(), &settings).unwrap();
    let layers: Vec<&str> = report.layers.iter().map(|l| l.layer.as_str()).collect();
    assert_eq!(
        layers,
        ["conv2", "head"],
        "the readers of the removed units, in order"
    );
    assert_eq!(report.samples, 64);
    // conv2: 3 kept channels × 3 × 3 + bias; head: 4 kept features + bias.
    assert_eq!(report.layers[0].inputs, 28);
    assert_eq!(report.layers[1].inputs, 5);
    for l in &report.layers {
        assert!(l.skipped.is_none());
        assert!(l.error_before.unwrap() > 1e-4, "{l:?}");
        // Products are summed in f32 before the f64 accumulation: round-off, not misfit.
        assert!(l.error_after.unwrap() < 1e-5, "{l:?}");
    }
    let after = pruned.forward(&x, Mode::Eval).unwrap();
    assert!(
        max_abs_diff(&want, &after) < 1e-4 * scale.max(1.0),
        "refitted output differs by {}",
        max_abs_diff(&want, &after)
    );
    // The merged weights are the sums the copies imply: conv2's channel 0 reads 0 + 3.
    let w = model.tensor("conv2.weight").unwrap();
    let expect = w.get(0).get(0) + w.get(0).get(3);
    let got = pruned.tensor("conv2.weight").unwrap().get(0).get(0);
    assert!(max_abs_diff(&expect, &got) < 1e-4);
}

#[test]
fn reported_errors_are_what_a_forward_pass_measures_and_never_rise() {
    let model = net(7);
    let plan = Plan::new().remove("conv1", [0, 2]).remove("fc", [1, 3]);
    let resolution = Resolution::new(model.graph(), &plan, &ResolveOptions::default()).unwrap();
    let pruned = fair_surgery::apply_resolution(&model, &resolution)
        .unwrap()
        .model;
    let d = data(48, 5);
    let x = all(&d);
    let relative = |layer: &str| {
        let want = model.taps(&x, Mode::Eval, &[layer]).unwrap()[layer].shallow_clone();
        let got = pruned.taps(&x, Mode::Eval, &[layer]).unwrap()[layer].shallow_clone();
        let err = (&want - &got).square().sum(Kind::Double).double_value(&[]);
        err / want.square().sum(Kind::Double).double_value(&[])
    };
    let conv2_before = relative("conv2");
    // One batch holding every sample: the fit sees exactly `x`.
    let settings = Reconstruction {
        batches: 1,
        batch_size: 48,
        ..Default::default()
    };
    let report =
        reconstruct_readers(&model, &pruned, &resolution, &d, &transform(), &settings).unwrap();
    let conv2 = &report.layers[0];
    let head = &report.layers[1];
    assert_eq!(
        (conv2.layer.as_str(), head.layer.as_str()),
        ("conv2", "head")
    );
    assert!((conv2.error_before.unwrap() - conv2_before).abs() < 1e-6 * conv2_before.max(1.0));
    for (fit, layer) in [(conv2, "conv2"), (head, "head")] {
        let measured = relative(layer);
        let reported = fit.error_after.unwrap();
        assert!(
            (measured - reported).abs() < 1e-4 * measured.max(1e-3),
            "{layer}: reported {reported}, a forward pass gives {measured}"
        );
        assert!(reported <= fit.error_before.unwrap(), "{fit:?}");
    }
    assert!(conv2.error_after.unwrap() < 0.9 * conv2.error_before.unwrap());
}

#[test]
fn nothing_to_refit_when_no_reader_lost_inputs() {
    let model = net(2);
    // Only the head's outputs are fixed; removing nothing leaves every reader whole.
    let resolution =
        Resolution::new(model.graph(), &Plan::new(), &ResolveOptions::default()).unwrap();
    let pruned = fair_surgery::apply_resolution(&model, &resolution)
        .unwrap()
        .model;
    let report = reconstruct_readers(
        &model,
        &pruned,
        &resolution,
        &data(8, 1),
        &transform(),
        &Reconstruction::default(),
    )
    .unwrap();
    assert!(report.layers.is_empty());
    assert_eq!(report.samples, 0);
}

#[test]
fn bad_settings_and_mismatched_models_are_refused_by_name() {
    let (model, resolution, pruned) = duplicated();
    let d = data(8, 1);
    for (settings, name) in [
        (
            Reconstruction {
                ridge: -1.0,
                ..Default::default()
            },
            "ridge",
        ),
        (
            Reconstruction {
                ridge: f64::NAN,
                ..Default::default()
            },
            "ridge",
        ),
        (
            Reconstruction {
                batches: 0,
                ..Default::default()
            },
            "reconstruct_batches",
        ),
        (
            Reconstruction {
                max_inputs: 0,
                ..Default::default()
            },
            "max_inputs",
        ),
    ] {
        match reconstruct_readers(&model, &pruned, &resolution, &d, &transform(), &settings) {
            Err(TrainError::Setting { name: got, .. }) => assert_eq!(got, name),
            other => panic!("{name}: expected a setting error, got {other:?}"),
        }
    }
    // The unpruned model is not what the resolution made.
    let err = reconstruct_readers(
        &model,
        &model,
        &resolution,
        &d,
        &transform(),
        &Reconstruction::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("not the one the resolution made"),
        "{err}"
    );
}

#[test]
fn layers_too_wide_to_fit_are_left_as_the_surgery_sliced_them() {
    let (model, resolution, pruned) = duplicated();
    let before = pruned.tensor("conv2.weight").unwrap().copy();
    let settings = Reconstruction {
        max_inputs: 10,
        batches: 1,
        batch_size: 8,
        ..Default::default()
    };
    let report = reconstruct_readers(
        &model,
        &pruned,
        &resolution,
        &data(8, 1),
        &transform(),
        &settings,
    )
    .unwrap();
    let conv2 = &report.layers[0];
    assert!(
        conv2
            .skipped
            .as_deref()
            .unwrap()
            .contains("max_inputs = 10"),
        "{conv2:?}"
    );
    assert!(conv2.error_after.is_none());
    assert_eq!(
        max_abs_diff(&before, pruned.tensor("conv2.weight").unwrap()),
        0.0
    );
    // The head (5 unknowns) is still refitted.
    assert!(report.layers[1].skipped.is_none());
}

#[test]
fn a_token_linear_reader_is_refitted_per_token() {
    // Patches 2×2 of 6×6: 9 tokens of 8 features; fc1's hidden unit 4 copies unit 1, so
    // fc2, which reads every token's hidden neurons, is refitted exactly from 9 rows per
    // sample.
    let mut b = GraphBuilder::new("token-recon", "input", INPUT.to_vec());
    b.conv("embed", "input", 8, 2, 2, 0, true).unwrap();
    b.add("tokens", fair_ir::Tokens {}.into(), &["embed"])
        .unwrap();
    b.linear("fc1", "tokens", 6, true).unwrap();
    b.add("act", fair_ir::Gelu::default().into(), &["fc1"])
        .unwrap();
    b.linear("fc2", "act", 8, true).unwrap();
    b.add("pool", fair_ir::TokenMean {}.into(), &["fc2"])
        .unwrap();
    b.linear("head", "pool", 2, true).unwrap();
    let model = Model::new(b.finish().unwrap(), Device::Cpu, 3).unwrap();
    for p in ["fc1.weight", "fc1.bias"] {
        copy_row(&model, p, 1, 4, 1.0);
    }
    let plan = Plan::new().remove("fc1", [4]);
    let resolution = Resolution::new(model.graph(), &plan, &ResolveOptions::default()).unwrap();
    let pruned = fair_surgery::apply_resolution(&model, &resolution)
        .unwrap()
        .model;
    let d = data(32, 4);
    let x = all(&d);
    let want = model.forward(&x, Mode::Eval).unwrap();
    let scale = want.abs().max().double_value(&[]).max(1.0);
    assert!(max_abs_diff(&want, &pruned.forward(&x, Mode::Eval).unwrap()) > 1e-3 * scale);
    let settings = Reconstruction {
        batches: 1,
        batch_size: 32,
        ridge: 0.0,
        ..Default::default()
    };
    let report =
        reconstruct_readers(&model, &pruned, &resolution, &d, &transform(), &settings).unwrap();
    assert_eq!(report.layers.len(), 1, "{:?}", report.layers);
    let l = &report.layers[0];
    assert_eq!(l.layer, "fc2");
    // 5 kept hidden neurons + bias.
    assert_eq!(l.inputs, 6);
    assert!(l.error_after.unwrap() < 1e-5, "{l:?}");
    let after = pruned.forward(&x, Mode::Eval).unwrap();
    assert!(
        max_abs_diff(&want, &after) < 1e-4 * scale,
        "refitted output differs by {}",
        max_abs_diff(&want, &after)
    );
}
