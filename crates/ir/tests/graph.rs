//! Validation, shape inference and serialisation of IR graphs.

use fair_ir::{Graph, GraphBuilder, IrError, Node, Op, Pair};
use proptest::prelude::*;

fn node(name: &str, inputs: &[&str], op: Op) -> Node {
    Node {
        name: name.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        op,
    }
}

fn input(shape: &[usize]) -> Node {
    node("input", &[], Op::Input(fair_ir::Input::new(shape.to_vec())))
}

fn conv(cin: usize, cout: usize) -> Op {
    Op::Conv2d(fair_ir::Conv2d {
        in_channels: cin,
        out_channels: cout,
        kernel_size: Pair(3, 3),
        stride: Pair(1, 1),
        padding: Pair(1, 1),
        dilation: Pair(1, 1),
        groups: 1,
        bias: true,
    })
}

/// A graph that uses every op once.
fn every_op() -> Graph {
    let mut b = GraphBuilder::new("every-op", "input", vec![3, 17, 17]);
    let a = b.conv("a", "input", 8, 3, 1, 1, true).unwrap();
    let a = b.bn2d("a.bn", &a).unwrap();
    let a = b.relu("a.relu", &a).unwrap();
    let c = b
        .add(
            "c",
            Op::Conv2d(fair_ir::Conv2d {
                in_channels: 8,
                out_channels: 8,
                kernel_size: Pair(3, 1),
                stride: Pair(1, 1),
                padding: Pair(2, 0),
                dilation: Pair(2, 1),
                groups: 4,
                bias: false,
            }),
            &[&a],
        )
        .unwrap();
    let s = b.add_all("sum", &[&a, &c]).unwrap();
    let cat = b.concat("cat", &[&s, &a]).unwrap();
    let p = b
        .add(
            "pool",
            Op::MaxPool2d(fair_ir::MaxPool2d {
                kernel_size: Pair(3, 3),
                stride: Some(Pair(2, 2)),
                padding: Pair(1, 1),
                ceil_mode: true,
            }),
            &[&cat],
        )
        .unwrap();
    let p = b
        .add(
            "avg",
            Op::AvgPool2d(fair_ir::AvgPool2d {
                kernel_size: Pair(2, 2),
                stride: None,
                padding: Pair(0, 0),
                ceil_mode: false,
                count_include_pad: false,
            }),
            &[&p],
        )
        .unwrap();
    let p = b.adaptive_avg_pool("gap", &p, 2, 2).unwrap();
    let f = b.flatten("flatten", &p).unwrap();
    let f = b.linear("fc1", &f, 16, false).unwrap();
    let f = b
        .add(
            "bn1d",
            Op::BatchNorm1d(fair_ir::BatchNorm1d {
                num_features: 16,
                eps: 1e-3,
                momentum: 0.01,
            }),
            &[&f],
        )
        .unwrap();
    let f = b.dropout("drop", &f, 0.25).unwrap();
    b.linear("fc2", &f, 5, true).unwrap();
    b.finish().unwrap()
}

#[test]
fn shapes_follow_pytorch_formulas() {
    let g = every_op();
    assert_eq!(g.shape("a").unwrap(), &[8, 17, 17]);
    // (17 + 2·2 − 2·(3 − 1) − 1) / 1 + 1 = 17 rows; width kernel 1 keeps 17.
    assert_eq!(g.shape("c").unwrap(), &[8, 17, 17]);
    assert_eq!(g.shape("cat").unwrap(), &[16, 17, 17]);
    // ceil((17 + 2 − 3) / 2) + 1 = 9, and the last window starts inside the input.
    assert_eq!(g.shape("pool").unwrap(), &[16, 9, 9]);
    assert_eq!(g.shape("avg").unwrap(), &[16, 4, 4]);
    assert_eq!(g.shape("flatten").unwrap(), &[64]);
    assert_eq!(g.shape("fc2").unwrap(), &[5]);
    // Grouped conv weight: [out, in / groups, kh, kw].
    assert_eq!(
        g.node("c").unwrap().op.params("c")[0].shape,
        vec![8, 2, 3, 1]
    );
    // MACs: grouped conv = 17·17·8·2·3·1.
    let c = g.summary().into_iter().find(|r| r.name == "c").unwrap();
    assert_eq!(c.macs, 17 * 17 * 8 * 2 * 3);
}

#[test]
fn ceil_mode_drops_a_window_that_starts_in_the_padding() {
    // PyTorch: MaxPool2d(2, stride=2, padding=1, ceil_mode=True) on 4×4 gives 3×3, not 4×4.
    let g = Graph::new(
        "p",
        vec![
            input(&[1, 4, 4]),
            node(
                "pool",
                &["input"],
                Op::MaxPool2d(fair_ir::MaxPool2d {
                    kernel_size: Pair(2, 2),
                    stride: None,
                    padding: Pair(1, 1),
                    ceil_mode: true,
                }),
            ),
        ],
    )
    .unwrap();
    assert_eq!(g.shape("pool").unwrap(), &[1, 3, 3]);
}

#[test]
fn toml_and_json_round_trip_exactly() {
    let g = every_op();
    let toml = g.to_toml_string().unwrap();
    assert_eq!(Graph::from_toml_str(&toml).unwrap(), g);
    let json = g.to_json_string().unwrap();
    assert_eq!(Graph::from_json_str(&json).unwrap(), g);
    // And through files, atomically written.
    let dir = tempfile::tempdir().unwrap();
    for file in ["g.toml", "g.json"] {
        let path = dir.path().join(file);
        g.save(&path).unwrap();
        assert_eq!(Graph::load(&path).unwrap(), g);
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 2, "no temporary files are left behind");
}

#[test]
fn hand_written_toml_with_defaults_and_implicit_inputs() {
    let g = Graph::from_toml_str(
        r#"
        name = "hand"
        [[nodes]]
        name = "input"
        op = { type = "input", shape = [1, 8, 8] }
        [[nodes]]
        name = "conv"
        op = { type = "conv2d", in_channels = 1, out_channels = 4, kernel_size = 3, padding = 1 }
        [[nodes]]
        name = "pool"
        op = { type = "max_pool2d", kernel_size = [2, 2] }
        [[nodes]]
        name = "flat"
        op = { type = "flatten" }
        [[nodes]]
        name = "fc"
        inputs = ["flat"]
        op = { type = "linear", in_features = 64, out_features = 3 }
        "#,
    )
    .unwrap();
    assert_eq!(g.node("pool").unwrap().inputs, vec!["conv"]);
    assert_eq!(g.shape("pool").unwrap(), &[4, 4, 4]);
    match &g.node("conv").unwrap().op {
        Op::Conv2d(fair_ir::Conv2d {
            stride,
            groups,
            bias,
            ..
        }) => {
            assert_eq!((*stride, *groups, *bias), (Pair(1, 1), 1, true));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(g.param_count(), 4 * 9 + 4 + 64 * 3 + 3);
}

#[test]
fn nodes_may_be_listed_in_any_order() {
    let g = Graph::new(
        "shuffled",
        vec![
            node(
                "fc",
                &["flat"],
                Op::Linear(fair_ir::Linear {
                    in_features: 12,
                    out_features: 2,
                    bias: true,
                }),
            ),
            node("flat", &["input"], Op::Flatten(fair_ir::Flatten {})),
            input(&[3, 2, 2]),
        ],
    )
    .unwrap();
    let order: Vec<&str> = g.nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(order, ["input", "flat", "fc"]);
    assert_eq!(g.output().name, "fc");
}

fn err(nodes: Vec<Node>) -> String {
    Graph::new("bad", nodes).unwrap_err().to_string()
}

#[test]
fn errors_name_the_node_and_what_was_expected() {
    let e = err(vec![input(&[3, 8, 8]), node("c", &["input"], conv(4, 8))]);
    assert!(
        e.contains("node 'c'") && e.contains("in_channels is 4") && e.contains("3 channels"),
        "{e}"
    );

    let e = err(vec![input(&[3, 8, 8]), node("c", &["nope"], conv(3, 8))]);
    assert_eq!(e, "node 'c' reads from 'nope', but no node has that name");

    let e = err(vec![
        input(&[3, 8, 8]),
        node("c", &["input"], conv(3, 8)),
        node("c", &["c"], Op::Relu(fair_ir::Relu {})),
    ]);
    assert!(e.contains("duplicate node name 'c'"), "{e}");

    let e = err(vec![
        input(&[3, 8, 8]),
        node("a", &["input", "b"], Op::Add(fair_ir::Add {})),
        node("b", &["a"], Op::Relu(fair_ir::Relu {})),
        node("out", &["b"], Op::Relu(fair_ir::Relu {})),
    ]);
    assert!(
        e.contains("cycle") && e.contains('a') && e.contains('b'),
        "{e}"
    );

    let e = err(vec![
        input(&[3, 8, 8]),
        node("s", &["input"], Op::Add(fair_ir::Add {})),
    ]);
    assert!(
        e.contains("node 's' (add) expects at least 2 input(s), found 1"),
        "{e}"
    );

    let e = err(vec![
        input(&[3, 8, 8]),
        node("r1", &["input"], Op::Relu(fair_ir::Relu {})),
        node("r2", &["input"], Op::Relu(fair_ir::Relu {})),
    ]);
    assert!(
        e.contains("exactly one output") && e.contains("r1, r2"),
        "{e}"
    );

    let e = err(vec![
        input(&[3, 8, 8]),
        node(
            "fc",
            &["input"],
            Op::Linear(fair_ir::Linear {
                in_features: 192,
                out_features: 2,
                bias: true,
            }),
        ),
    ]);
    assert!(
        e.contains("node 'fc'") && e.contains("add a flatten node"),
        "{e}"
    );

    let mut bad_groups = conv(3, 8);
    if let Op::Conv2d(fair_ir::Conv2d { groups, .. }) = &mut bad_groups {
        *groups = 2;
    }
    let e = err(vec![input(&[3, 8, 8]), node("c", &["input"], bad_groups)]);
    assert!(
        e.contains("node 'c': invalid attribute") && e.contains("groups = 2"),
        "{e}"
    );

    let e = err(vec![node("r", &[], Op::Relu(fair_ir::Relu {}))]);
    assert!(e.contains("exactly one node of type 'input'"), "{e}");
}

#[test]
fn parse_errors_say_where() {
    let e = Graph::from_toml_str(
        r#"
        name = "typo"
        [[nodes]]
        name = "input"
        op = { type = "input", shape = [1, 4, 4] }
        [[nodes]]
        name = "c"
        op = { type = "conv2d", in_channels = 1, out_channels = 2, kernal_size = 3 }
        "#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("kernal_size") && e.contains("line"), "{e}");

    let e =
        Graph::from_toml_str("name = \"x\"\n[[nodes]]\nname = \"i\"\nop = { type = \"lstm\" }\n")
            .unwrap_err()
            .to_string();
    assert!(e.contains("lstm") && e.contains("conv2d"), "{e}");

    let e = Graph::from_toml_str(
        "name = \"x\"\n[[nodes]]\nname = \"i\"\nop = { type = \"max_pool2d\", kernel_size = [1, 2, 3] }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("pair"), "{e}");

    let e = Graph::load(std::path::Path::new("/nonexistent/model.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/model.toml"), "{e}");
}

proptest! {
    /// Random conv/pool/linear stacks: serialisation round-trips, and the parameter count is
    /// the sum of the weight and bias sizes computed independently here.
    #[test]
    fn random_sequential_graphs_round_trip(
        c0 in 1usize..4,
        size in 8usize..20,
        layers in proptest::collection::vec((1usize..6, 1usize..4, any::<bool>(), any::<bool>()), 1..5),
        classes in 1usize..7,
    ) {
        let mut b = GraphBuilder::new("random", "input", vec![c0, size, size]);
        let mut x = "input".to_string();
        let mut expected_params = 0usize;
        let mut c = c0;
        for (i, (out, k, bias, pool)) in layers.iter().enumerate() {
            let k = 2 * k - 1; // odd kernel with same padding keeps the size
            x = b.conv(&format!("conv{i}"), &x, *out, k, 1, k / 2, *bias).unwrap();
            expected_params += out * c * k * k + if *bias { *out } else { 0 };
            c = *out;
            if *pool && b.shape(&x).unwrap()[1] >= 2 {
                x = b.max_pool(&format!("pool{i}"), &x, 2, 2, 0).unwrap();
            }
        }
        let features: usize = b.shape(&x).unwrap().iter().product();
        let f = b.flatten("flatten", &x).unwrap();
        b.linear("fc", &f, classes, true).unwrap();
        expected_params += features * classes + classes;
        let g = b.finish().unwrap();
        prop_assert_eq!(g.param_count(), expected_params);
        prop_assert_eq!(Graph::from_toml_str(&g.to_toml_string().unwrap()).unwrap(), g.clone());
        prop_assert_eq!(Graph::from_json_str(&g.to_json_string().unwrap()).unwrap(), g);
    }
}

#[test]
fn builder_reports_errors_at_the_node() {
    let mut b = GraphBuilder::new("b", "input", vec![3, 4, 4]);
    let e = b.max_pool("pool", "input", 5, 5, 0).unwrap_err();
    assert!(
        matches!(e, IrError::Shape { ref node, .. } if node == "pool"),
        "{e}"
    );
    assert!(e.to_string().contains("too small"), "{e}");
}

#[test]
fn narrowing_layers_updates_every_reader() {
    let mut b = GraphBuilder::new("net", "input", vec![3, 8, 8]);
    let x = b.conv("c1", "input", 16, 3, 1, 1, true).unwrap();
    let x = b.bn2d("bn1", &x).unwrap();
    let x = b.relu("r1", &x).unwrap();
    let x = b.conv("c2", &x, 32, 3, 2, 1, false).unwrap();
    let x = b.flatten("flat", &x).unwrap();
    let x = b.linear("fc1", &x, 20, true).unwrap();
    b.linear("fc2", &x, 5, true).unwrap();
    let g = b.finish().unwrap();
    let kept = std::collections::HashMap::from([
        ("c1".to_string(), 10),
        ("c2".to_string(), 7),
        ("fc1".to_string(), 4),
    ]);
    let small = g.with_units(&kept).unwrap();
    assert_eq!(small.shape("bn1").unwrap(), &[10, 8, 8]);
    assert_eq!(small.shape("c2").unwrap(), &[7, 4, 4]);
    assert_eq!(small.shape("flat").unwrap(), &[7 * 16]);
    // Parameters computed by hand for the narrowed network.
    let expected = (3 * 9 * 10 + 10) + 2 * 10 + (10 * 9 * 7) + (7 * 16 * 4 + 4) + (4 * 5 + 5);
    assert_eq!(small.param_count(), expected);
    // Nothing kept → the same graph.
    assert_eq!(g.with_units(&Default::default()).unwrap(), g);
    let e = g
        .with_units(&[("bn1".to_string(), 3)].into())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'bn1'") && e.contains("only conv2d and linear"),
        "{e}"
    );
    let e = g
        .with_units(&[("c1".to_string(), 17)].into())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot keep 17 of its 16 units"), "{e}");
}

#[test]
fn narrowing_one_side_of_a_residual_add_is_an_error_naming_the_add() {
    let mut b = GraphBuilder::new("res", "input", vec![4, 8, 8]);
    let x = b.conv("c1", "input", 4, 3, 1, 1, false).unwrap();
    let s = b.add_all("add", &["input", &x]).unwrap();
    let f = b.flatten("flat", &s).unwrap();
    b.linear("fc", &f, 2, true).unwrap();
    let g = b.finish().unwrap();
    let e = g
        .with_units(&[("c1".to_string(), 2)].into())
        .unwrap_err()
        .to_string();
    assert!(e.contains("node 'add'") && e.contains("coupled"), "{e}");
}
