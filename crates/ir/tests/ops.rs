//! The ops torchvision's mobile CNNs need: activations (clip/ReLU6, sigmoid, hard sigmoid,
//! hard swish, SiLU, GELU), the broadcast `mul` of a squeeze-and-excitation gate, depthwise
//! convolutions, and the input's recorded normalisation. Expected shapes and counts are
//! worked out by hand from PyTorch's formulas.

use std::collections::HashMap;

use fair_ir::{Graph, Op};

/// An inverted-residual block with an SE gate, as in MobileNetV3 (every new op appears).
const SE_BLOCK: &str = r#"
name = "se-block"

[[nodes]]
name = "input"
op = { type = "input", shape = [3, 8, 8], mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }

[[nodes]]
name = "expand"
op = { type = "conv2d", in_channels = 3, out_channels = 16, kernel_size = 1, bias = false }

[[nodes]]
name = "expand.act"
op = { type = "hard_swish" }

[[nodes]]
name = "dw"
op = { type = "conv2d", in_channels = 16, out_channels = 16, kernel_size = 3, stride = 2, padding = 1, groups = 16 }

[[nodes]]
name = "dw.act"
op = { type = "clip", min = 0.0, max = 6.0 }

[[nodes]]
name = "se.pool"
op = { type = "adaptive_avg_pool2d", output_size = 1 }

[[nodes]]
name = "se.fc1"
op = { type = "conv2d", in_channels = 16, out_channels = 4, kernel_size = 1 }

[[nodes]]
name = "se.act"
op = { type = "silu" }

[[nodes]]
name = "se.fc2"
op = { type = "conv2d", in_channels = 4, out_channels = 16, kernel_size = 1 }

[[nodes]]
name = "se.gate"
op = { type = "hard_sigmoid" }

[[nodes]]
name = "se.mul"
inputs = ["dw.act", "se.gate"]
op = { type = "mul" }

[[nodes]]
name = "gelu"
op = { type = "gelu", approximate = "tanh" }

[[nodes]]
name = "sig"
op = { type = "sigmoid" }

[[nodes]]
name = "gap"
op = { type = "adaptive_avg_pool2d", output_size = 1 }

[[nodes]]
name = "flat"
op = { type = "flatten" }

[[nodes]]
name = "fc"
op = { type = "linear", in_features = 16, out_features = 5 }
"#;

fn se_block() -> Graph {
    Graph::from_toml_str(SE_BLOCK).unwrap()
}

#[test]
fn shapes_params_and_macs_of_an_se_block() {
    let g = se_block();
    assert_eq!(g.shape("dw").unwrap(), &[16, 4, 4]);
    assert_eq!(g.shape("se.gate").unwrap(), &[16, 1, 1]);
    // The [16, 1, 1] gate broadcasts over [16, 4, 4].
    assert_eq!(g.shape("se.mul").unwrap(), &[16, 4, 4]);
    assert_eq!(g.shape("fc").unwrap(), &[5]);
    // Depthwise weight [16, 1, 3, 3]: torch.nn.Conv2d(16, 16, 3, groups=16).weight.shape.
    assert_eq!(
        g.node("dw").unwrap().op.params("dw")[0].shape,
        vec![16, 1, 3, 3]
    );
    // sum(p.numel()) of the PyTorch modules: 3·16 + (16·9 + 16) + (16·4 + 4) + (4·16 + 16)
    // + (16·5 + 5); activations and mul own nothing.
    assert_eq!(
        g.param_count(),
        48 + (144 + 16) + (64 + 4) + (64 + 16) + (80 + 5)
    );
    // MACs: expand 8·8·16·3, depthwise 4·4·16·9, fc1 16·4, fc2 4·16, fc 16·5.
    assert_eq!(
        g.macs(),
        (64 * 16 * 3 + 16 * 16 * 9 + 16 * 4 + 4 * 16 + 16 * 5) as u64
    );
}

#[test]
fn se_block_round_trips_through_toml_and_json() {
    let g = se_block();
    let toml = g.to_toml_string().unwrap();
    assert_eq!(Graph::from_toml_str(&toml).unwrap(), g);
    assert!(toml.contains("mean = [0.485, 0.456, 0.406]"), "{toml}");
    assert!(toml.contains("approximate = \"tanh\""), "{toml}");
    let json = g.to_json_string().unwrap();
    assert_eq!(Graph::from_json_str(&json).unwrap(), g);
    // The defaults are written out and read back unchanged.
    let Op::HardSigmoid(h) = &g.node("se.gate").unwrap().op else {
        panic!("hard_sigmoid")
    };
    assert_eq!((h.alpha, h.beta), (1.0 / 6.0, 0.5));
    assert!(h.is_pytorch());
}

#[test]
fn an_input_without_normalisation_serialises_as_before() {
    let text = SE_BLOCK.replace(
        ", mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225]",
        "",
    );
    let g = Graph::from_toml_str(&text).unwrap();
    let toml = g.to_toml_string().unwrap();
    assert!(!toml.contains("mean") && !toml.contains("std"), "{toml}");
    assert_eq!(Graph::from_toml_str(&toml).unwrap(), g);
    let Op::Input(i) = &g.input().op else {
        panic!("input")
    };
    assert_eq!((i.mean.as_ref(), i.std.as_ref()), (None, None));
}

fn with_input(input: &str) -> String {
    SE_BLOCK.replace(
        "{ type = \"input\", shape = [3, 8, 8], mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225] }",
        input,
    )
}

#[test]
fn bad_normalisation_is_rejected_naming_the_rule() {
    for (input, expect) in [
        (
            "{ type = \"input\", shape = [3, 8, 8], mean = [0.5, 0.5, 0.5] }",
            "mean and std must be given together",
        ),
        (
            "{ type = \"input\", shape = [3, 8, 8], std = [0.5, 0.5, 0.5] }",
            "mean and std must be given together",
        ),
        (
            "{ type = \"input\", shape = [3, 8, 8], mean = [0.5], std = [0.5] }",
            "mean has 1 values but the input has 3 channels",
        ),
        (
            "{ type = \"input\", shape = [3, 8, 8], mean = [0.5, 0.5, 0.5], std = [0.5, 0.5] }",
            "std has 2 values but the input has 3 channels",
        ),
        (
            "{ type = \"input\", shape = [3, 8, 8], mean = [0.5, 0.5, 0.5], std = [0.5, 0.0, 0.5] }",
            "std values must be positive, found 0",
        ),
        (
            "{ type = \"input\", shape = [3, 8, 8], mean = [0.5, 0.5, 0.5], std = [0.5, -1.0, 0.5] }",
            "std values must be positive, found -1",
        ),
        (
            "{ type = \"input\", shape = [3, 8, 8], mean = [0.5, nan, 0.5], std = [0.5, 0.5, 0.5] }",
            "mean must be finite, found NaN",
        ),
        (
            "{ type = \"input\", shape = [3, 8, 8], mean = [0.5, 0.5, 0.5], std = [0.5, inf, 0.5] }",
            "std must be finite, found inf",
        ),
    ] {
        let e = Graph::from_toml_str(&with_input(input))
            .unwrap_err()
            .to_string();
        assert!(e.contains("'input'") && e.contains(expect), "{input}: {e}");
    }
}

fn replace_op(name: &str, op: &str) -> String {
    let start = SE_BLOCK.find(&format!("name = \"{name}\"\n")).unwrap();
    let line = start + SE_BLOCK[start..].find("op = ").unwrap();
    let end = line + SE_BLOCK[line..].find('\n').unwrap();
    format!("{}op = {op}{}", &SE_BLOCK[..line], &SE_BLOCK[end..])
}

#[test]
fn bad_activation_attributes_are_rejected_naming_the_node() {
    for (node, op, expect) in [
        (
            "dw.act",
            "{ type = \"clip\", min = 6.0, max = 0.0 }",
            "finite bounds with min < max",
        ),
        (
            "dw.act",
            "{ type = \"clip\", min = -inf, max = 6.0 }",
            "finite bounds with min < max",
        ),
        (
            "se.gate",
            "{ type = \"hard_sigmoid\", alpha = 0.0 }",
            "non-zero alpha",
        ),
        (
            "gelu",
            "{ type = \"gelu\", approximate = \"fast\" }",
            "\"none\" or \"tanh\", found \"fast\"",
        ),
    ] {
        let e = Graph::from_toml_str(&replace_op(node, op))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("'{node}'")) && e.contains(expect),
            "{op}: {e}"
        );
    }
    // Unknown attributes are parse errors.
    let e = Graph::from_toml_str(&replace_op("sig", "{ type = \"sigmoid\", alpha = 1.0 }"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("alpha"), "{e}");
}

#[test]
fn mul_on_tokens_compares_units_on_the_last_axis() {
    // torch: (a * b).shape for per-sample token tensors [T, F] (batch dim left out).
    let mul = Op::Mul(fair_ir::Mul {});
    let infer = |a: &[usize], b: &[usize]| mul.contract().infer(&[("a", a), ("b", b)]);
    assert_eq!(infer(&[1, 8], &[4, 8]), Ok(vec![4, 8]));
    assert_eq!(infer(&[4, 8], &[4, 8]), Ok(vec![4, 8]));
    // One value per token is not one per unit: [4, 1] times [4, 8] is refused, by name.
    let e = infer(&[4, 1], &[4, 8]).unwrap_err();
    assert!(e.contains("equal units") && e.contains("[4, 1]"), "{e}");
}

#[test]
fn mul_broadcasts_a_gate_and_rejects_everything_else() {
    // torch: (a * b).shape for a of [16, 4, 4] and b of each shape (batch dim left out).
    let ok = |b: &str| {
        let text = replace_op(
            "se.gate",
            &format!("{{ type = \"adaptive_avg_pool2d\", output_size = {b} }}"),
        );
        Graph::from_toml_str(&text).map(|g| g.shape("se.mul").unwrap().to_vec())
    };
    assert_eq!(ok("1").unwrap(), vec![16, 4, 4]);
    assert_eq!(ok("[4, 1]").unwrap(), vec![16, 4, 4]);
    assert_eq!(ok("[1, 4]").unwrap(), vec![16, 4, 4]);
    assert_eq!(ok("4").unwrap(), vec![16, 4, 4]);
    // [16, 2, 2] does not broadcast over [16, 4, 4].
    let e = ok("2").unwrap_err().to_string();
    assert!(
        e.contains("'se.mul'") && e.contains("[16, 4, 4]") && e.contains("[16, 2, 2]"),
        "{e}"
    );
    // Different channels: fc2 makes 8 channels, the main path has 16.
    let text = replace_op(
        "se.fc2",
        "{ type = \"conv2d\", in_channels = 4, out_channels = 8, kernel_size = 1 }",
    );
    let e = Graph::from_toml_str(&text).unwrap_err().to_string();
    assert!(e.contains("'se.mul'") && e.contains("equal units"), "{e}");
    // Different ranks: an image times a feature vector.
    let text = replace_op("se.gate", "{ type = \"flatten\" }");
    let e = Graph::from_toml_str(&text).unwrap_err().to_string();
    assert!(e.contains("'se.mul'") && e.contains("[16]"), "{e}");
    // Exactly two inputs.
    let text = SE_BLOCK.replace(
        "inputs = [\"dw.act\", \"se.gate\"]",
        "inputs = [\"dw.act\", \"se.gate\", \"se.gate\"]",
    );
    let e = Graph::from_toml_str(&text).unwrap_err().to_string();
    assert!(e.contains("'se.mul'") && e.contains('2'), "{e}");
}

#[test]
fn depthwise_conv_follows_its_input_and_narrows_with_it() {
    let g = se_block();
    let dw = &g.node("dw").unwrap().op;
    assert!(!dw.is_prunable() && dw.units().is_none());
    assert_eq!(dw.channels(), fair_ir::Channels::Follow);
    assert_eq!(dw.role(), fair_ir::Role::Layer);
    assert_eq!(
        g.prunable_layers(),
        vec!["expand", "se.fc1", "se.fc2"],
        "the depthwise conv is pruned with its input's layer, not on its own"
    );
    // The weight's axis 0 and the bias follow the channels; there is no input axis.
    let p = dw.params("dw");
    assert_eq!((p[0].out_axis, p[0].in_axis), (Some(0), None));
    assert_eq!((p[1].out_axis, p[1].in_axis), (Some(0), None));
    // The SE gate's last conv and the expand conv are coupled by the mul.
    let kept: HashMap<String, usize> = [("expand".into(), 10), ("se.fc2".into(), 10)].into();
    let small = g.with_units(&kept).unwrap();
    let Op::Conv2d(c) = &small.node("dw").unwrap().op else {
        panic!("conv")
    };
    assert_eq!((c.in_channels, c.out_channels, c.groups), (10, 10, 10));
    assert_eq!(small.shape("se.mul").unwrap(), &[10, 4, 4]);
    assert_eq!(
        small.param_count(),
        30 + (90 + 10) + (40 + 4) + (40 + 10) + (50 + 5)
    );
    let e = g
        .with_units(&[("se.fc2".to_string(), 10)].into())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'se.mul'") && e.contains("layers feeding a mul are coupled"),
        "{e}"
    );
}

#[test]
fn depthwise_with_a_channel_multiplier_and_grouped_convs_read_by_groups() {
    for (out, groups) in [(32, 16), (16, 4)] {
        let text = replace_op(
            "dw",
            &format!(
                "{{ type = \"conv2d\", in_channels = 16, out_channels = {out}, kernel_size = 3, stride = 2, padding = 1, groups = {groups} }}"
            ),
        )
        .replace(
            "{ type = \"conv2d\", in_channels = 16, out_channels = 4, kernel_size = 1 }",
            &format!("{{ type = \"conv2d\", in_channels = {out}, out_channels = 4, kernel_size = 1 }}"),
        )
        .replace(
            "{ type = \"conv2d\", in_channels = 4, out_channels = 16, kernel_size = 1 }",
            &format!("{{ type = \"conv2d\", in_channels = 4, out_channels = {out}, kernel_size = 1 }}"),
        )
        .replace("in_features = 16", &format!("in_features = {out}"));
        let g = Graph::from_toml_str(&text).unwrap();
        let dw = &g.node("dw").unwrap().op;
        assert_eq!(
            dw.channels(),
            fair_ir::Channels::Create {
                units: out,
                reads: fair_ir::Reads::Grouped { groups }
            },
            "groups {groups}, out {out}"
        );
        assert!(!dw.is_prunable());
        assert!(!g.prunable_layers().contains(&"dw"));
        // The weight's axis 1 is the input channel within a group.
        let w = &dw.params("dw")[0];
        assert_eq!((w.in_axis, w.group_in_axis), (None, Some(1)));
        // Narrowing its input keeps the group count: 8 channels in 4 groups is fine, in 16
        // groups it is not.
        let narrowed = g.with_units(&[("expand".to_string(), 8)].into());
        if groups == 4 {
            let small = narrowed.unwrap();
            match &small.node("dw").unwrap().op {
                fair_ir::Op::Conv2d(c) => assert_eq!((c.in_channels, c.groups), (8, 4)),
                other => panic!("{other:?}"),
            }
        } else {
            let e = narrowed.unwrap_err().to_string();
            assert!(
                e.contains("'dw'")
                    && e.contains("grouped convolution")
                    && e.contains("multiple of 16"),
                "{e}"
            );
        }
    }
}
