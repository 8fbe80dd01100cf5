//! Token tensors `[T, F]` (a vision transformer's tokens × features): `tokens`, a linear
//! layer and `layer_norm` on the last axis, `token_mean`, and where the units of a tensor lie
//! (`unit_axis`). Expected shapes and counts are worked out by hand from PyTorch's formulas.

use std::collections::HashMap;

use fair_ir::{Channels, Graph, Role};

/// Patch embedding (4×4 patches of an 8×8 image: 2×2 = 4 tokens of 6 features), one pre-LN
/// MLP block with 12 hidden neurons, the mean over the tokens and a head of 3.
const TOKEN_MLP: &str = r#"
    name = "token-mlp"
    [[nodes]]
    name = "input"
    op = { type = "input", shape = [3, 8, 8] }
    [[nodes]]
    name = "embed"
    op = { type = "conv2d", in_channels = 3, out_channels = 6, kernel_size = 4, stride = 4 }
    [[nodes]]
    name = "tokens"
    op = { type = "tokens" }
    [[nodes]]
    name = "norm"
    op = { type = "layer_norm", num_features = 6 }
    [[nodes]]
    name = "fc1"
    op = { type = "linear", in_features = 6, out_features = 12 }
    [[nodes]]
    name = "act"
    op = { type = "gelu" }
    [[nodes]]
    name = "fc2"
    op = { type = "linear", in_features = 12, out_features = 6 }
    [[nodes]]
    name = "res"
    inputs = ["fc2", "tokens"]
    op = { type = "add" }
    [[nodes]]
    name = "pool"
    op = { type = "token_mean" }
    [[nodes]]
    name = "head"
    op = { type = "linear", in_features = 6, out_features = 3 }
"#;

fn graph() -> Graph {
    Graph::from_toml_str(TOKEN_MLP).unwrap()
}

#[test]
fn shapes_params_and_macs_of_a_token_mlp_block() {
    let g = graph();
    assert_eq!(g.shape("embed").unwrap(), &[6, 2, 2]);
    assert_eq!(g.shape("tokens").unwrap(), &[4, 6]);
    assert_eq!(g.shape("norm").unwrap(), &[4, 6]);
    assert_eq!(g.shape("fc1").unwrap(), &[4, 12]);
    assert_eq!(g.shape("fc2").unwrap(), &[4, 6]);
    assert_eq!(g.shape("res").unwrap(), &[4, 6]);
    assert_eq!(g.shape("pool").unwrap(), &[6]);
    assert_eq!(g.shape("head").unwrap(), &[3]);
    // Conv 6·3·16 + 6; LN 6 + 6; fc1 12·6 + 12; fc2 6·12 + 6; head 3·6 + 3.
    assert_eq!(g.param_count(), 294 + 12 + 84 + 78 + 21);
    // Conv: 4 positions · 6 · 3·16; a token linear T·F·H: 4·6·12 and 4·12·6; head 6·3.
    assert_eq!(g.macs(), 4 * 6 * 48 + 4 * 6 * 12 + 4 * 12 * 6 + 6 * 3);
    let norm = &g.node("norm").unwrap().op;
    assert_eq!(norm.role(), Role::LayerNormalization);
    assert_eq!(norm.channels(), Channels::Fixed);
    assert_eq!(g.prunable_layers(), ["embed", "fc1", "fc2"]);
}

#[test]
fn the_unit_axis_is_the_channels_of_images_and_the_last_axis_of_tokens() {
    let g = graph();
    for (name, axis) in [
        ("input", 0),
        ("embed", 0),
        ("tokens", 1),
        ("fc1", 1),
        ("res", 1),
        ("pool", 0),
        ("head", 0),
    ] {
        assert_eq!(g.unit_axis(name).unwrap(), axis, "{name}");
    }
    assert_eq!(fair_ir::unit_count(&[4, 12]), 12);
    assert_eq!(fair_ir::unit_count(&[12, 4, 4]), 12);
}

#[test]
fn narrowing_the_hidden_neurons_narrows_the_second_linear_on_the_last_axis() {
    let g = graph();
    let kept = HashMap::from([("fc1".to_owned(), 5)]);
    let n = g.with_units(&kept).unwrap();
    assert_eq!(n.shape("fc1").unwrap(), &[4, 5]);
    assert_eq!(n.shape("fc2").unwrap(), &[4, 6]);
    match &n.node("fc2").unwrap().op {
        fair_ir::Op::Linear(l) => assert_eq!((l.in_features, l.out_features), (5, 6)),
        other => panic!("{other:?}"),
    }
    // fc1 and fc2 lose 7 · 6 weights, 7 biases and 4·7·6 MACs each.
    assert_eq!(g.param_count() - n.param_count(), 7 * 6 + 7 + 7 * 6);
    assert_eq!(g.macs() - n.macs(), 2 * 4 * 7 * 6);
}

/// The error of `input (shape) → op`.
fn one_op_error(shape: &str, op: &str) -> String {
    Graph::from_toml_str(&format!(
        "name = \"one\"\n[[nodes]]\nname = \"x\"\nop = {{ type = \"input\", shape = {shape} }}\n[[nodes]]\nname = \"y\"\nop = {op}\n"
    ))
    .unwrap_err()
    .to_string()
}

#[test]
fn vit_token_ops_check_their_input_naming_it() {
    let e = one_op_error("[4, 6]", "{ type = \"class_token\", features = 5 }");
    assert!(
        e.contains("class_token has 5 features") && e.contains("'x'"),
        "{e}"
    );
    let e = one_op_error("[6, 2, 2]", "{ type = \"class_token\", features = 6 }");
    assert!(e.contains("expected tokens [T, F]"), "{e}");
    let e = one_op_error(
        "[4, 6]",
        "{ type = \"position_embedding\", tokens = 5, features = 6 }",
    );
    assert!(
        e.contains("position_embedding is [5, 6], but its input is [4, 6]"),
        "{e}"
    );
    let e = one_op_error("[4, 6]", "{ type = \"token_select\", index = 4 }");
    assert!(e.contains("takes token 4 of 4 tokens"), "{e}");
    let e = one_op_error("[4, 6]", "{ type = \"class_token\", features = 0 }");
    assert!(e.contains("features must be at least 1"), "{e}");
    // Shapes and parameters: a class token adds one token; the features are its units.
    let g = Graph::from_toml_str(
        "name = \"one\"\n[[nodes]]\nname = \"x\"\nop = { type = \"input\", shape = [4, 6] }\n\
         [[nodes]]\nname = \"cls\"\nop = { type = \"class_token\", features = 6 }\n\
         [[nodes]]\nname = \"pos\"\nop = { type = \"position_embedding\", tokens = 5, features = 6 }\n\
         [[nodes]]\nname = \"sel\"\nop = { type = \"token_select\" }\n",
    )
    .unwrap();
    assert_eq!(g.shape("cls").unwrap(), &[5, 6]);
    assert_eq!(g.shape("sel").unwrap(), &[6]);
    assert_eq!(g.param_count(), 6 + 5 * 6);
    assert_eq!(g.macs(), 0);
}

#[test]
fn token_ops_reject_other_shapes_naming_the_input() {
    let e = one_op_error("[6, 2, 2]", "{ type = \"token_mean\" }");
    assert!(
        e.contains("expected tokens [T, F]") && e.contains("'x'"),
        "{e}"
    );
    let e = one_op_error("[4, 6]", "{ type = \"layer_norm\", num_features = 5 }");
    assert!(e.contains("layer_norm expects tokens [T, 5]"), "{e}");
    let e = one_op_error("[6, 2, 2]", "{ type = \"layer_norm\", num_features = 2 }");
    assert!(e.contains("layer_norm expects tokens [T, 2]"), "{e}");
    let e = one_op_error(
        "[4, 6]",
        "{ type = \"linear\", in_features = 7, out_features = 2 }",
    );
    assert!(
        e.contains("in_features is 7") && e.contains("[4, 6]"),
        "{e}"
    );
    let e = one_op_error("[6]", "{ type = \"tokens\" }");
    assert!(e.contains("expected an image-shaped input"), "{e}");
}
