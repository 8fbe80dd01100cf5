//! The ops torchvision's ShuffleNetV2 and ConvNeXt need: `channel_shuffle`, the channel
//! `slice` a split becomes, and `layer_norm2d`. Expected shapes and counts are worked out by
//! hand from PyTorch's formulas.

use fair_ir::{ChannelShuffle, Channels, Contract, Graph, LayerNorm2d, Op, Role, Slice};

/// The surgery tests' ShuffleNetV2 unit + ConvNeXt block.
const SHUFFLE_LN: &str = include_str!("../../surgery/tests/common/shuffle_ln.toml");

fn graph() -> Graph {
    Graph::from_toml_str(SHUFFLE_LN).unwrap()
}

#[test]
fn shapes_params_and_macs_of_a_shuffle_unit_and_a_convnext_block() {
    let g = graph();
    assert_eq!(g.shape("split.0").unwrap(), &[8, 16, 16]);
    assert_eq!(g.shape("split.1").unwrap(), &[8, 16, 16]);
    assert_eq!(g.shape("cat").unwrap(), &[16, 16, 16]);
    assert_eq!(g.shape("shuffle").unwrap(), &[16, 16, 16]);
    assert_eq!(g.shape("block.norm").unwrap(), &[16, 16, 16]);
    assert_eq!(g.shape("block.pw1").unwrap(), &[64, 16, 16]);
    assert_eq!(g.shape("fc").unwrap(), &[10]);
    // LayerNorm2d: weight and bias of 16; no buffers.
    let ln: Vec<(String, Vec<usize>)> = g
        .node("block.norm")
        .unwrap()
        .op
        .params("block.norm")
        .into_iter()
        .map(|p| (p.name, p.shape))
        .collect();
    assert_eq!(
        ln,
        [
            ("block.norm.weight".to_owned(), vec![16]),
            ("block.norm.bias".to_owned(), vec![16])
        ]
    );
    let convs =
        3 * 16 * 9 + 8 * 12 + 12 * 9 + 12 * 8 + (16 * 49 + 16) + (16 * 64 + 64) + (64 * 16 + 16);
    let bns = 2 * (16 + 12 + 12 + 8);
    assert_eq!(g.param_count(), convs + bns + 2 * 16 + 16 * 10 + 10);
    let hw = 16 * 16;
    let macs = hw * (3 * 16 * 9 + 8 * 12 + 12 * 9 + 12 * 8 + 16 * 49 + 16 * 64 + 64 * 16) + 16 * 10;
    assert_eq!(g.macs(), macs as u64);
    // The new ops carry no MACs or parameters of their own (but the norm's).
    for name in ["split.0", "split.1", "shuffle"] {
        let n = g.node(name).unwrap();
        assert_eq!(n.op.param_count(), 0, "{name}");
        assert_eq!(n.op.macs(g.shape(name).unwrap()), 0, "{name}");
    }
}

#[test]
fn the_new_ops_round_trip_through_toml_and_json_with_their_names() {
    let g = graph();
    assert_eq!(
        Graph::from_toml_str(&g.to_toml_string().unwrap()).unwrap(),
        g
    );
    assert_eq!(
        Graph::from_json_str(&g.to_json_string().unwrap()).unwrap(),
        g
    );
    for (op, name) in [
        (Op::from(ChannelShuffle { groups: 2 }), "channel_shuffle"),
        (Slice { start: 0, end: 8 }.into(), "slice"),
        (LayerNorm2d::new(16).into(), "layer_norm2d"),
    ] {
        assert_eq!(op.type_name(), name);
        assert!(Op::TYPE_NAMES.contains(&name));
    }
    // Defaults: eps 1e-6 and affine.
    let ln: Op = serde_json::from_str(r#"{"type": "layer_norm2d", "num_features": 4}"#).unwrap();
    assert_eq!(ln, LayerNorm2d::new(4).into());
    assert_eq!(
        ln,
        LayerNorm2d {
            num_features: 4,
            eps: 1e-6,
            affine: true
        }
        .into()
    );
    let no_affine: Op =
        serde_json::from_str(r#"{"type": "layer_norm2d", "num_features": 4, "affine": false}"#)
            .unwrap();
    assert!(no_affine.params("n").is_empty());
    assert!(
        serde_json::to_string(&no_affine)
            .unwrap()
            .contains("\"affine\":false")
    );
}

fn replace_op(name: &str, op: &str) -> String {
    let start = SHUFFLE_LN.find(&format!("name = \"{name}\"\n")).unwrap();
    let line = start + SHUFFLE_LN[start..].find("op = ").unwrap();
    let end = line + SHUFFLE_LN[line..].find('\n').unwrap();
    format!("{}op = {op}{}", &SHUFFLE_LN[..line], &SHUFFLE_LN[end..])
}

#[test]
fn bad_attributes_and_shapes_are_rejected_naming_the_node() {
    let cases = [
        (
            "shuffle",
            "{ type = \"channel_shuffle\", groups = 0 }",
            "at least 1",
        ),
        (
            "shuffle",
            "{ type = \"channel_shuffle\", groups = 3 }",
            "divisible by groups = 3",
        ),
        (
            "shuffle",
            "{ type = \"channel_shuffle\", groups = 2, axis = 1 }",
            "unknown field",
        ),
        (
            "split.0",
            "{ type = \"slice\", start = 4, end = 4 }",
            "start < end",
        ),
        (
            "split.0",
            "{ type = \"slice\", start = 5, end = 2 }",
            "start < end",
        ),
        (
            "split.1",
            "{ type = \"slice\", start = 8, end = 17 }",
            "does not fit the 16 channels",
        ),
        (
            "split.1",
            "{ type = \"slice\", start = 0, end = 18446744073709551615 }",
            "larger than the supported maximum",
        ),
        (
            "block.norm",
            "{ type = \"layer_norm2d\", num_features = 8 }",
            "has 16 channels",
        ),
        (
            "block.norm",
            "{ type = \"layer_norm2d\", num_features = 16, eps = 0.0 }",
            "eps must be positive",
        ),
        (
            "block.norm",
            "{ type = \"layer_norm2d\", num_features = 16, eps = -1.0 }",
            "eps must be positive",
        ),
        (
            "block.norm",
            "{ type = \"layer_norm2d\", num_features = 0 }",
            "at least 1",
        ),
    ];
    for (node, op, needle) in cases {
        let text = replace_op(node, op);
        let e = match Graph::from_toml_str(&text) {
            Ok(_) => panic!("{node}: {op} was accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(e.contains(needle), "{node}: {op}: {e}");
        if needle != "unknown field" {
            assert!(e.contains(node), "{node}: {op}: {e}");
        }
    }
}

#[test]
fn shapes_on_their_own() {
    let shuffle = ChannelShuffle { groups: 4 };
    assert_eq!(shuffle.infer(&[("x", &[8, 3, 5])]).unwrap(), [8, 3, 5]);
    assert!(shuffle.infer(&[("x", &[8])]).unwrap_err().contains("image"));
    assert!(shuffle.infer(&[("x", &[6, 3, 5])]).is_err());
    let slice = Slice { start: 2, end: 5 };
    assert_eq!(slice.infer(&[("x", &[8, 3, 5])]).unwrap(), [3, 3, 5]);
    assert_eq!(slice.infer(&[("x", &[5])]).unwrap(), [3]);
    assert!(slice.infer(&[("x", &[4])]).is_err());
    assert!(slice.infer(&[("x", &[8, 3])]).is_err());
    let ln = LayerNorm2d::new(8);
    assert_eq!(ln.infer(&[("x", &[8, 3, 5])]).unwrap(), [8, 3, 5]);
    assert!(ln.infer(&[("x", &[8])]).is_err());
}

#[test]
fn channel_rules_roles_and_torch_spellings() {
    let shuffle = ChannelShuffle { groups: 2 };
    assert_eq!(shuffle.channels(), Channels::Fixed);
    assert_eq!(shuffle.role(), Role::Reshape);
    assert_eq!(shuffle.torch_module().unwrap(), "nn.ChannelShuffle(2)");
    let slice = Slice { start: 3, end: 7 };
    assert_eq!(slice.channels(), Channels::Slice { start: 3, end: 7 });
    assert_eq!(slice.torch_module(), None);
    assert_eq!(slice.torch_forward(&["t1".into()], "m"), "t1[:, 3:7]");
    let ln = LayerNorm2d::new(16);
    assert_eq!(ln.channels(), Channels::Fixed);
    // Not a BatchNorm: scorers looking for "the BatchNorm after a layer" must not find it.
    assert_eq!(ln.role(), Role::LayerNormalization);
    assert_ne!(ln.role(), Role::Normalization);
    assert_eq!(
        ln.torch_module().unwrap(),
        "LayerNorm2d(16, eps=1e-6, elementwise_affine=True)"
    );
    assert!(
        ln.torch_prelude()
            .unwrap()
            .contains("class LayerNorm2d(nn.LayerNorm)")
    );
    assert_eq!(shuffle.torch_prelude(), None);
    // None of them create units.
    for op in [Op::from(shuffle), slice.into(), ln.into()] {
        assert_eq!(op.units(), None);
        assert!(!op.is_prunable());
    }
}

#[test]
fn narrowing_the_prunable_layers_leaves_the_new_ops_alone() {
    let g = graph();
    let small = g
        .with_units(&[("branch2.0".to_string(), 5), ("block.pw1".to_string(), 40)].into())
        .unwrap();
    assert_eq!(small.shape("branch2.3").unwrap(), &[5, 16, 16]);
    assert_eq!(small.shape("block.pw1").unwrap(), &[40, 16, 16]);
    for name in ["split.0", "split.1", "shuffle", "block.norm"] {
        assert_eq!(
            small.node(name).unwrap().op,
            g.node(name).unwrap().op,
            "{name}"
        );
    }
}
