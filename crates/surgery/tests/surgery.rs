//! Surgery on the paper's model families: dependency groups, empty plans, dead units.

mod common;

use fair_analysis::{GroupRule, GroupedConvs, Plan, ResolveOptions, analyze, analyze_with};
use fair_runtime::{Mode, Model};
use fair_surgery::apply;
use tch::{Device, Kind, Tensor};

fn model(name: &str, input: [usize; 3]) -> Model {
    let m = Model::new(common::build(name, input), Device::Cpu, 7).unwrap();
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
            let dead = m.deep_copy().unwrap();
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

#[test]
fn selections_apply_to_exactly_the_reported_widths_under_every_rule() {
    use fair_analysis::{Goal, Method, SelectOptions, Selector};
    for (name, input) in [("resnet20", [3, 16, 16]), ("densenet40", [3, 16, 16])] {
        let m = model(name, input);
        let x = self::input(input);
        let layers: Vec<String> = m
            .graph()
            .prunable_layers()
            .iter()
            .map(|l| l.to_string())
            .collect();
        // Scores from the weights themselves: L1 norms (remove-by) against a shuffled copy.
        let l1: Vec<Vec<f64>> = layers
            .iter()
            .map(|l| {
                let w = m.tensor(&format!("{l}.weight")).unwrap();
                let n = w.size()[0];
                Vec::<f64>::try_from(w.abs().reshape([n, -1]).sum_dim_intlist(
                    1,
                    false,
                    Kind::Double,
                ))
                .unwrap()
            })
            .collect();
        let r: Vec<Vec<f64>> = l1
            .iter()
            .map(|v| v.iter().rev().copied().collect())
            .collect();
        for rule in [
            GroupRule::Package,
            GroupRule::Intersection,
            GroupRule::Strict,
        ] {
            let sel = Selector::new(
                m.graph().clone(),
                layers.clone(),
                &refs(&l1),
                &refs(&r),
                &refs(&l1),
                SelectOptions {
                    rule,
                    ..Default::default()
                },
            )
            .unwrap();
            let s = sel.select(Goal::Macs(0.5), Method::Tod).unwrap();
            let pruned = fair_surgery::apply_resolution(&m, &s.resolution).unwrap();
            assert!(
                1.0 - pruned.model.graph().macs() as f64 / m.graph().macs() as f64 >= 0.5,
                "{name} {rule:?}"
            );
            for (layer, w) in s.widths() {
                assert_eq!(
                    pruned.model.graph().units(&layer),
                    Some(w),
                    "{name} {rule:?} {layer}"
                );
                assert_eq!(
                    pruned
                        .model
                        .tensor(&format!("{layer}.weight"))
                        .unwrap()
                        .size()[0],
                    w as i64
                );
            }
            // The plan written for `apply` gives the same model under any rule.
            let again = apply(
                &m,
                &s.plan(),
                &ResolveOptions {
                    rule: GroupRule::Strict,
                    ..Default::default()
                },
            )
            .unwrap();
            assert_eq!(again.model.graph(), pruned.model.graph());
            let (a, b) = (eval(&pruned.model, &x), eval(&again.model, &x));
            assert_eq!(a.size(), [2, 10]);
            assert!(a.equal(&b), "{name} {rule:?}: same plan, same outputs");
        }
    }
}

fn refs(v: &[Vec<f64>]) -> Vec<&[f64]> {
    v.iter().map(Vec::as_slice).collect()
}

/// Grouped convolutions pruned within their groups (unit j = channel j of every group, the
/// group count kept): the pruned model computes what the model with those units made
/// irrelevant computes, and its graph's MACs are the report's.
#[test]
fn grouped_convs_pruned_within_groups_keep_the_dead_unit_outputs() {
    let shape = [3, 8, 8];
    let m = model("resnext_block", shape);
    let x = input(shape);
    let groups = analyze_with(m.graph(), &[], GroupedConvs::WithinGroups).unwrap();
    for seed in 0..8 {
        let (plan, chosen) = common::random_plan_in(&groups, seed, 4);
        let dead = m.deep_copy().unwrap();
        tch::no_grad(|| {
            for (g, units) in &chosen {
                // Dense readers: input columns; grouped convs: within-group columns of axis 1
                // (the same in every group).
                for (node, cols) in groups.reading_columns(m.graph(), *g, units) {
                    let mut w = dead
                        .tensor(&format!("{node}.weight"))
                        .unwrap()
                        .shallow_clone();
                    let _ = w.index_fill_(1, &Tensor::from_slice(&cols), 0.0);
                }
            }
        });
        let options = ResolveOptions {
            rule: GroupRule::Strict,
            grouped: GroupedConvs::WithinGroups,
            ..Default::default()
        };
        let pruned = apply(&dead, &plan, &options).unwrap();
        let (before, after) = pruned.report.macs;
        assert!(after < before, "seed {seed}: no MACs removed");
        assert_eq!(pruned.model.graph().macs(), after, "seed {seed}");
        assert_eq!(pruned.model.graph().param_count(), pruned.report.params.1);
        let (a, b) = (eval(&dead, &x), eval(&pruned.model, &x));
        let d = (&a - &b).abs().max().double_value(&[]);
        let scale = a.abs().max().double_value(&[]).max(1.0);
        assert!(
            d <= 1e-5 * scale,
            "seed {seed}: max |Δ| = {d} (scale {scale})"
        );
        // Every grouped conv kept its group count.
        for name in ["b1.conv2", "proj"] {
            match (
                &m.graph().node(name).unwrap().op,
                &pruned.model.graph().node(name).unwrap().op,
            ) {
                (fair_ir::Op::Conv2d(a), fair_ir::Op::Conv2d(b)) => assert_eq!(a.groups, b.groups),
                other => panic!("{other:?}"),
            }
        }
    }
    // Without the option nothing around a grouped conv can be removed.
    let e = apply(
        &m,
        &Plan::new().remove("b1.conv1", [0]),
        &ResolveOptions::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("grouped convolution"), "{e}");
}

#[test]
fn token_mlp_hidden_neurons_are_the_only_units_and_removing_dead_ones_keeps_the_outputs() {
    // 1×16×16 with 4×4 patches: 16 tokens of 32 features, 2 blocks of 64 hidden neurons.
    let shape = [1, 16, 16];
    let m = Model::new(
        fair_zoo::build("token_mlp", &shape, 10).unwrap(),
        Device::Cpu,
        7,
    )
    .unwrap();
    tch::no_grad(|| {
        for (n, mut t) in m.named_tensors() {
            if n.ends_with(".bias") {
                t.copy_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.1));
            }
        }
    });
    let x = input(shape);
    // Only the hidden neurons are free: the patch embedding's channels are the residual
    // stream, read by layer norms, and fc2 adds into it.
    let groups = analyze(m.graph(), &[]).unwrap();
    let mut free: Vec<(Vec<String>, usize)> = groups
        .groups()
        .iter()
        .filter(|g| g.is_prunable())
        .map(|g| (g.layers.clone(), g.units))
        .collect();
    free.sort();
    assert_eq!(
        free,
        [
            (vec!["blocks.0.fc1".to_owned()], 64),
            (vec!["blocks.1.fc1".to_owned()], 64)
        ]
    );
    let removed: [(&str, Vec<i64>); 2] = [
        ("blocks.0.fc1", vec![0, 5, 17, 63]),
        ("blocks.1.fc1", vec![2, 3, 40]),
    ];
    // The dead-unit model: those neurons' rows of fc1 (weight and bias) are zero, so
    // GELU(0) = 0 reaches fc2.
    let dead = m.deep_copy().unwrap();
    tch::no_grad(|| {
        for (layer, rows) in &removed {
            let idx = Tensor::from_slice(rows);
            for p in ["weight", "bias"] {
                let mut t = dead
                    .tensor(&format!("{layer}.{p}"))
                    .unwrap()
                    .shallow_clone();
                let _ = t.index_fill_(0, &idx, 0.0);
            }
        }
    });
    let mut plan = Plan::new();
    for (layer, rows) in &removed {
        plan = plan.remove(layer, rows.iter().map(|&r| r as usize));
    }
    // What is sliced: fc1's rows (its output) and fc2's columns (its input) only; fc1 reads
    // the unpruned residual stream (tokens [16, 32]: 32 units, not 16).
    let res = fair_analysis::Resolution::new(m.graph(), &plan, &ResolveOptions::default()).unwrap();
    let at = |n: &str| res.node_slice(m.graph().position(n).unwrap());
    let kept: Vec<i64> = (0..64).filter(|j| ![0, 5, 17, 63].contains(j)).collect();
    assert_eq!(at("blocks.0.fc1").input, None);
    assert_eq!(at("blocks.0.fc1").output.as_ref(), Some(&kept));
    assert_eq!(at("blocks.0.fc2").input.as_ref(), Some(&kept));
    assert_eq!(at("blocks.0.fc2").output, None);
    assert_eq!(at("blocks.0.add").output, None);
    let pruned = apply(&dead, &plan, &ResolveOptions::default()).unwrap();
    let g = pruned.model.graph();
    assert_eq!(g.units("blocks.0.fc1"), Some(60));
    assert_eq!(g.units("blocks.1.fc1"), Some(61));
    let size = |n: &str| pruned.model.tensor(n).unwrap().size();
    assert_eq!(size("blocks.0.fc1.weight"), [60, 32]);
    assert_eq!(size("blocks.0.fc2.weight"), [32, 60]);
    assert_eq!(size("blocks.1.fc2.weight"), [32, 61]);
    // fc1 and fc2 of a block each lose T·F·k MACs: 2·16·32·(4 + 3).
    assert_eq!(m.graph().macs() - g.macs(), 2 * 16 * 32 * 7);
    // The kept columns of fc2 are the ones that read the kept neurons.
    let want = dead
        .tensor("blocks.0.fc2.weight")
        .unwrap()
        .index_select(1, &Tensor::from_slice(&kept));
    assert!(
        pruned
            .model
            .tensor("blocks.0.fc2.weight")
            .unwrap()
            .equal(&want)
    );
    let (a, b) = (eval(&dead, &x), eval(&pruned.model, &x));
    let d = (&a - &b).abs().max().double_value(&[]);
    assert!(d <= 1e-5, "max |Δ| = {d}");
    // And the unpruned model differs (the neurons were alive before zeroing).
    assert!((&eval(&m, &x) - &a).abs().max().double_value(&[]) > 1e-4);
}

#[test]
fn tiny_vit_heads_removed_whole_equal_the_dead_head_model() {
    // 1×28×28, 7×7 patches: 16 tokens of 32 features; 2 blocks of 4 heads of 8 channels.
    let shape = [1, 28, 28];
    let m = Model::new(
        fair_zoo::build("tiny_vit", &shape, 10).unwrap(),
        Device::Cpu,
        7,
    )
    .unwrap();
    tch::no_grad(|| {
        for (n, mut t) in m.named_tensors() {
            if n.ends_with(".bias") {
                t.copy_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.1));
            }
        }
    });
    let x = input(shape);
    // Heads 1 and 3 of block 0, head 0 of block 1, and MLP neurons of block 1; the plan as a
    // user writes it, in heads.
    let plan = fair_analysis::Plan::from_json_str(
        r#"{"remove": {
            "blocks.0.attn.q": [1, 3], "blocks.0.attn.k": [1, 3], "blocks.0.attn.v": [1, 3],
            "blocks.1.attn.q": [0], "blocks.1.attn.k": [0], "blocks.1.attn.v": [0],
            "blocks.1.mlp.fc1": [4, 9, 63]
        }}"#,
        "plan.json",
    )
    .unwrap();
    let heads: [(&str, &[i64]); 2] = [("blocks.0", &[1, 3]), ("blocks.1", &[0])];
    // The dead-head model: the removed heads' rows of q, k and v (weights and biases) are
    // zero, so each such head attends uniformly to zero values and contributes nothing to
    // the output projection; the removed neurons' rows of fc1 are zero (GELU(0) = 0).
    let dead = m.deep_copy().unwrap();
    let zero_rows = |param: &str, rows: &[i64]| {
        let mut t = dead.tensor(param).unwrap().shallow_clone();
        let _ = t.index_fill_(0, &Tensor::from_slice(rows), 0.0);
    };
    tch::no_grad(|| {
        for (block, hs) in heads {
            let rows: Vec<i64> = hs.iter().flat_map(|h| h * 8..(h + 1) * 8).collect();
            for l in ["q", "k", "v"] {
                for p in ["weight", "bias"] {
                    zero_rows(&format!("{block}.attn.{l}.{p}"), &rows);
                }
            }
        }
        for p in ["weight", "bias"] {
            zero_rows(&format!("blocks.1.mlp.fc1.{p}"), &[4, 9, 63]);
        }
    });
    // The dead heads matter in the unpruned model only through what they would add: the
    // dead model differs from the original (so the test can fail).
    let (orig, a) = (eval(&m, &x), eval(&dead, &x));
    assert!((&orig - &a).abs().max().double_value(&[]) > 1e-3);
    let pruned = apply(&dead, &plan, &ResolveOptions::default()).unwrap();
    let g = pruned.model.graph();
    for (block, kept_heads) in [("blocks.0", 2), ("blocks.1", 3)] {
        for l in ["q", "k", "v"] {
            assert_eq!(
                g.node(&format!("{block}.attn.{l}")).unwrap().op,
                fair_ir::Linear::new(32, kept_heads * 8).into()
            );
        }
        assert_eq!(
            g.node(&format!("{block}.attn.attend")).unwrap().op,
            fair_ir::Attention::new(8).into(),
            "the head dimension is kept"
        );
        assert_eq!(
            g.node(&format!("{block}.attn.proj")).unwrap().op,
            fair_ir::Linear::new(kept_heads * 8, 32).into()
        );
    }
    assert_eq!(
        g.node("blocks.1.mlp.fc1").unwrap().op,
        fair_ir::Linear::new(32, 61).into()
    );
    // The kept rows and columns are the original's: proj keeps columns 0..8 and 16..24.
    let cols: Vec<i64> = (0..8).chain(16..24).collect();
    let want = dead
        .tensor("blocks.0.attn.proj.weight")
        .unwrap()
        .index_select(1, &Tensor::from_slice(&cols));
    assert!(
        pruned
            .model
            .tensor("blocks.0.attn.proj.weight")
            .unwrap()
            .equal(&want)
    );
    let b = eval(&pruned.model, &x);
    let d = (&a - &b).abs().max().double_value(&[]);
    assert!(d <= 1e-5, "max |Δ| = {d}");
    // The report counts heads for the attention groups, neurons for the MLP.
    let mut removed = pruned.report.groups.clone();
    removed.sort();
    assert_eq!(
        removed,
        [
            (
                vec![
                    "blocks.0.attn.q".to_owned(),
                    "blocks.0.attn.k".to_owned(),
                    "blocks.0.attn.v".to_owned()
                ],
                2
            ),
            (
                vec![
                    "blocks.1.attn.q".to_owned(),
                    "blocks.1.attn.k".to_owned(),
                    "blocks.1.attn.v".to_owned()
                ],
                1
            ),
            (vec!["blocks.1.mlp.fc1".to_owned()], 3),
        ]
    );
}

/// A vision transformer's token ops after a pruned linear layer: `tokens` → `embed`
/// (linear 6 → 8) → `class_token` → `position_embedding` → the class token and token 2,
/// added → `head` (linear 8 → 2). Removing units of `embed` slices the class token (its
/// entries) and the position embedding (its columns) along their feature axis: the pruned
/// model computes what the model with those units dead computes (the units' rows of `embed`,
/// class-token entries and position-embedding columns zero).
#[test]
fn class_token_and_position_embedding_lose_the_features_of_a_pruned_linear() {
    let toml = r#"name = "vit-tokens"
[[nodes]]
name = "input"
op = { type = "input", shape = [6, 2, 2] }
[[nodes]]
name = "tokens"
op = { type = "tokens" }
[[nodes]]
name = "embed"
op = { type = "linear", in_features = 6, out_features = 8 }
[[nodes]]
name = "cls"
op = { type = "class_token", features = 8 }
[[nodes]]
name = "pos"
op = { type = "position_embedding", tokens = 5, features = 8 }
[[nodes]]
name = "first"
op = { type = "token_select", index = 0 }
[[nodes]]
name = "third"
op = { type = "token_select", index = 2 }
inputs = ["pos"]
[[nodes]]
name = "sum"
op = { type = "add" }
inputs = ["first", "third"]
[[nodes]]
name = "head"
op = { type = "linear", in_features = 8, out_features = 2 }
"#;
    let graph = fair_ir::Graph::from_toml_str(toml).unwrap();
    let m = Model::new(graph, Device::Cpu, 7).unwrap();
    // Every parameter random (the token parameters start at zero), so a dead unit shows.
    tch::manual_seed(11);
    tch::no_grad(|| {
        for (_, mut t) in m.named_tensors() {
            t.copy_(&Tensor::randn(t.size(), (Kind::Float, Device::Cpu)));
        }
    });
    let x = input([6, 2, 2]);
    let removed: Vec<i64> = vec![1, 4, 6];
    let kept: Vec<i64> = (0..8).filter(|j| !removed.contains(j)).collect();
    let groups = analyze(m.graph(), &[]).unwrap();
    let free: Vec<(Vec<String>, usize)> = groups
        .groups()
        .iter()
        .filter(|g| g.is_prunable())
        .map(|g| (g.layers.clone(), g.units))
        .collect();
    assert_eq!(free, [(vec!["embed".to_owned()], 8)]);

    let dead = m.deep_copy().unwrap();
    let idx = Tensor::from_slice(&removed);
    tch::no_grad(|| {
        for (param, axis) in [
            ("embed.weight", 0),
            ("embed.bias", 0),
            ("cls.weight", 0),
            ("pos.weight", 1),
        ] {
            let mut t = dead.tensor(param).unwrap().shallow_clone();
            let _ = t.index_fill_(axis, &idx, 0.0);
        }
    });
    // The dead units matter in the unpruned model (so the test can fail): through the
    // class token and the position embedding alone too, not only through `embed`.
    let (orig, a) = (eval(&m, &x), eval(&dead, &x));
    assert!((&orig - &a).abs().max().double_value(&[]) > 1e-3);
    let embed_only = m.deep_copy().unwrap();
    tch::no_grad(|| {
        for p in ["embed.weight", "embed.bias"] {
            let mut t = embed_only.tensor(p).unwrap().shallow_clone();
            let _ = t.index_fill_(0, &idx, 0.0);
        }
    });
    assert!((&eval(&embed_only, &x) - &a).abs().max().double_value(&[]) > 1e-3);

    let plan = Plan::new().remove("embed", removed.iter().map(|&r| r as usize));
    let pruned = apply(&dead, &plan, &ResolveOptions::default()).unwrap();
    let g = pruned.model.graph();
    assert_eq!(
        g.node("cls").unwrap().op,
        fair_ir::ClassToken { features: 5 }.into()
    );
    assert_eq!(
        g.node("pos").unwrap().op,
        fair_ir::PositionEmbedding {
            tokens: 5,
            features: 5
        }
        .into()
    );
    let kept_idx = Tensor::from_slice(&kept);
    for (param, axis, size) in [
        ("cls.weight", 0, vec![5]),
        ("pos.weight", 1, vec![5, 5]),
        ("head.weight", 1, vec![2, 5]),
    ] {
        let t = pruned.model.tensor(param).unwrap();
        assert_eq!(t.size(), size, "{param}");
        let want = dead.tensor(param).unwrap().index_select(axis, &kept_idx);
        assert!(t.equal(&want), "{param}: not the kept features");
    }
    let b = eval(&pruned.model, &x);
    let d = (&a - &b).abs().max().double_value(&[]);
    assert!(d <= 1e-5, "max |Δ| = {d}");
    assert_eq!(g.param_count(), pruned.report.params.1);
    // 8·6 + 8 + 8 + 5·8 + 2·8 + 2 parameters before, 5 features fewer by 3.
    assert_eq!(
        pruned.report.params,
        (122, 122 - 3 * 6 - 3 - 3 - 5 * 3 - 2 * 3)
    );
}
