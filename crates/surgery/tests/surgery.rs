//! Surgery on the paper's model families: dependency groups, empty plans, dead units.

use std::collections::BTreeSet;

mod common;

use fair_analysis::{GroupRule, Plan, ResolveOptions, analyze};
use fair_runtime::{Mode, Model};
use fair_surgery::apply;
use tch::{Device, Kind, Tensor};

fn model(name: &str, input: [usize; 3]) -> Model {
    let m = Model::new(fair_zoo::build(name, &input, 10).unwrap(), Device::Cpu, 7).unwrap();
    fair_testkit::randomise_batchnorm(&m, 3);
    // Non-zero biases too, so a removed unit's constant output would show.
    tch::no_grad(|| {
        for (n, mut t) in m.named_tensors() {
            if n.ends_with(".bias") && t.dim() == 1 {
                t.copy_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.1));
            }
        }
    });
    m
}

fn input(shape: [usize; 3]) -> Tensor {
    tch::manual_seed(5);
    let [c, h, w] = shape.map(|d| d as i64);
    Tensor::randn([2, c, h, w], (Kind::Float, Device::Cpu))
}

fn eval(m: &Model, x: &Tensor) -> Tensor {
    tch::no_grad(|| m.forward(x, Mode::Eval)).unwrap()
}

#[test]
fn groups_follow_residual_adds_and_concatenations() {
    let g = fair_zoo::build("resnet56", &[3, 32, 32], 10).unwrap();
    let groups = analyze(&g, &[]).unwrap();
    let stem = &groups.groups()[groups.group_of("conv1").unwrap()];
    let want: Vec<String> = std::iter::once("conv1".to_owned())
        .chain((0..9).map(|i| format!("layer1.{i}.conv2")))
        .collect();
    assert_eq!(
        stem.layers, want,
        "the stem and every stage-1 block output share one channel space"
    );
    let s2 = &groups.groups()[groups.group_of("layer2.0.downsample.0").unwrap()];
    assert!(
        s2.layers.contains(&"layer2.0.conv2".to_owned()) && s2.layers.len() == 10,
        "{:?}",
        s2.layers
    );
    assert_eq!(
        groups.groups()[groups.group_of("layer2.3.conv1").unwrap()].layers,
        ["layer2.3.conv1"]
    );
    assert_eq!(
        groups.groups()[groups.group_of("fc").unwrap()]
            .fixed
            .as_deref(),
        Some("it is the output layer")
    );

    let d = fair_zoo::build("densenet40", &[3, 32, 32], 10).unwrap();
    let dg = analyze(&d, &[]).unwrap();
    for layer in d.prunable_layers() {
        assert_eq!(
            dg.groups()[dg.group_of(layer).unwrap()].layers,
            [layer],
            "concatenation couples nothing"
        );
    }
    // Layer 3 of block 1 reads the block input (16), layer 1 (12) and layer 2 (12): the new
    // features of layer 2 sit at channels 28..40 of its input.
    let l2 = dg
        .group_of("features.denseblock1.denselayer2.conv1")
        .unwrap();
    let cols = dg.reading_columns(&d, l2, &BTreeSet::from([0, 11]));
    let of = |n: &str| {
        cols.iter()
            .find(|(name, _)| name == n)
            .map(|(_, c)| c.clone())
    };
    assert_eq!(
        of("features.denseblock1.denselayer3.conv1"),
        Some(vec![28, 39])
    );
    assert_eq!(
        of("features.denseblock1.denselayer12.conv1"),
        Some(vec![28, 39])
    );
    // After the transition, the block output is re-encoded: nothing downstream reads it.
    assert_eq!(of("features.denseblock2.denselayer1.conv1"), None);
}

#[test]
fn empty_plan_gives_bit_identical_outputs() {
    for (name, shape) in common::MODELS {
        let m = model(name, shape);
        let x = input(shape);
        let pruned = apply(&m, &Plan::new(), &ResolveOptions::default()).unwrap();
        assert_eq!(pruned.report.params.0, pruned.report.params.1, "{name}");
        assert!(
            eval(&m, &x).equal(&eval(&pruned.model, &x)),
            "{name}: outputs differ after an empty plan"
        );
    }
}

#[test]
fn removing_provably_dead_units_keeps_the_outputs() {
    for (name, shape) in common::MODELS {
        let m = model(name, shape);
        let x = input(shape);
        let groups = analyze(m.graph(), &[]).unwrap();
        for seed in 0..4 {
            let (plan, chosen) = common::random_plan(&m, seed, 6);
            // Make the chosen units irrelevant: zero every weight column that reads them.
            let dead = Model::from_tensors(
                m.graph().clone(),
                m.named_tensors()
                    .into_iter()
                    .map(|(n, t)| (n, t.copy()))
                    .collect(),
                Device::Cpu,
            )
            .unwrap();
            tch::no_grad(|| {
                for (g, units) in &chosen {
                    for (node, cols) in groups.reading_columns(m.graph(), *g, units) {
                        let w = dead.tensor(&format!("{node}.weight")).unwrap();
                        let idx = Tensor::from_slice(&cols);
                        let _ = w.index_select(1, &idx); // the columns exist
                        let mut w = w.shallow_clone();
                        let _ = w.index_fill_(1, &idx, 0.0);
                    }
                }
            });
            let pruned = apply(
                &dead,
                &plan,
                &ResolveOptions {
                    rule: GroupRule::Strict,
                    ..Default::default()
                },
            )
            .unwrap();
            assert!(
                pruned.report.params.1 < pruned.report.params.0,
                "{name} seed {seed}: nothing removed"
            );
            let (a, b) = (eval(&dead, &x), eval(&pruned.model, &x));
            let d = (&a - &b).abs().max().double_value(&[]);
            let scale = a.abs().max().double_value(&[]).max(1.0);
            assert!(
                d <= 1e-5 * scale,
                "{name} seed {seed}: max |Δ| = {d} (scale {scale})"
            );
            // The graph of the pruned model is what the report says.
            assert_eq!(pruned.model.graph().param_count(), pruned.report.params.1);
        }
    }
}

#[test]
fn the_input_model_is_never_modified_and_errors_name_the_layer() {
    let m = model("resnet20", [3, 32, 32]);
    let before: Vec<Tensor> = m
        .named_tensors()
        .into_iter()
        .map(|(_, t)| t.copy())
        .collect();
    let plan = Plan::new().remove("layer1.0.conv1", [0, 3]);
    let pruned = apply(&m, &plan, &ResolveOptions::default()).unwrap();
    assert_eq!(pruned.model.graph().units("layer1.0.conv1"), Some(14));
    for ((_, t), b) in m.named_tensors().iter().zip(&before) {
        assert!(t.equal(b));
    }
    assert_eq!(m.graph().units("layer1.0.conv1"), Some(16));

    let e = apply(
        &m,
        &Plan::new().remove("fc", [0]),
        &ResolveOptions::default(),
    )
    .err()
    .unwrap();
    assert_eq!(e.to_string(), "cannot prune 'fc': it is the output layer");
    let e = apply(
        &m,
        &Plan::new().remove("layer1.0.conv1", [16]),
        &ResolveOptions::default(),
    )
    .err()
    .unwrap();
    assert_eq!(
        e.to_string(),
        "plan for 'layer1.0.conv1': unit 16 does not exist (the layer has 16 units)"
    );
    let e = apply(
        &m,
        &Plan::new().remove("layer1.0.conv1", 0..16),
        &ResolveOptions::default(),
    )
    .err()
    .unwrap();
    assert!(
        e.to_string()
            .contains("removes every unit of layer1.0.conv1"),
        "{e}"
    );
    let opts = ResolveOptions {
        protected: vec!["layer1.0.conv1".into()],
        ..Default::default()
    };
    let e = apply(&m, &plan, &opts).err().unwrap();
    assert!(
        e.to_string().contains("'layer1.0.conv1' is protected"),
        "{e}"
    );
    // Coupled layers: one member alone removes nothing under the default rule, everything
    // asked under the package rule only if every member agrees on the count.
    let one = Plan::new().remove("layer1.0.conv2", [1]);
    let p = apply(&m, &one, &ResolveOptions::default()).unwrap();
    assert_eq!(
        p.report.params.0, p.report.params.1,
        "intersection with members that keep everything"
    );
    let e = apply(
        &m,
        &one,
        &ResolveOptions {
            rule: GroupRule::Strict,
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("coupled"), "{e}");
}
