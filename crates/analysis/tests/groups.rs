//! Channel dependency groups of the paper's model families (pure: no libtorch).

use std::collections::BTreeSet;

use fair_analysis::analyze;

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

/// An inverted-residual block with a squeeze-and-excitation gate (MobileNetV3), a second
/// gate multiplied gate-first, and a depthwise conv with a channel multiplier of 2.
const MOBILE: &str = r#"
name = "mobile"
[[nodes]]
name = "input"
op = { type = "input", shape = [3, 8, 8] }
[[nodes]]
name = "stem"
op = { type = "conv2d", in_channels = 3, out_channels = 4, kernel_size = 3, padding = 1 }
[[nodes]]
name = "expand"
op = { type = "conv2d", in_channels = 4, out_channels = 6, kernel_size = 1 }
[[nodes]]
name = "expand.act"
op = { type = "clip", min = 0.0, max = 6.0 }
[[nodes]]
name = "dw"
op = { type = "conv2d", in_channels = 6, out_channels = 6, kernel_size = 3, padding = 1, groups = 6 }
[[nodes]]
name = "dw.bn"
op = { type = "batch_norm2d", num_features = 6 }
[[nodes]]
name = "dw.act"
op = { type = "hard_swish" }
[[nodes]]
name = "se.pool"
op = { type = "adaptive_avg_pool2d", output_size = 1 }
[[nodes]]
name = "se.fc1"
op = { type = "conv2d", in_channels = 6, out_channels = 2, kernel_size = 1 }
[[nodes]]
name = "se.act"
op = { type = "silu" }
[[nodes]]
name = "se.fc2"
op = { type = "conv2d", in_channels = 2, out_channels = 6, kernel_size = 1 }
[[nodes]]
name = "se.gate"
op = { type = "hard_sigmoid" }
[[nodes]]
name = "se.mul"
inputs = ["se.gate", "dw.act"]
op = { type = "mul" }
[[nodes]]
name = "project"
op = { type = "conv2d", in_channels = 6, out_channels = 4, kernel_size = 1 }
[[nodes]]
name = "add"
inputs = ["stem", "project"]
op = { type = "add" }
[[nodes]]
name = "mid"
op = { type = "conv2d", in_channels = 4, out_channels = 5, kernel_size = 1 }
[[nodes]]
name = "mid.act"
op = { type = "gelu" }
[[nodes]]
name = "dw2"
op = { type = "conv2d", in_channels = 5, out_channels = 10, kernel_size = 3, groups = 5 }
[[nodes]]
name = "gap"
op = { type = "adaptive_avg_pool2d", output_size = 1 }
[[nodes]]
name = "flat"
op = { type = "flatten" }
[[nodes]]
name = "fc"
op = { type = "linear", in_features = 10, out_features = 3 }
"#;

#[test]
fn depthwise_convs_pass_channels_through_and_se_gates_couple_them() {
    let g = fair_ir::Graph::from_toml_str(MOBILE).unwrap();
    let groups = analyze(&g, &[]).unwrap();
    let group = |l: &str| &groups.groups()[groups.group_of(l).unwrap()];
    // The gate's last conv scales the expand conv's channels (through the depthwise conv):
    // one group, pruned together.
    assert_eq!(group("expand").layers, ["expand", "se.fc2"]);
    assert!(group("expand").is_prunable());
    assert_eq!(group("se.fc1").layers, ["se.fc1"]);
    assert_eq!(group("stem").layers, ["stem", "project"]);
    // The depthwise conv creates no units of its own.
    assert_eq!(groups.group_of("dw"), None);
    // A depthwise conv with a channel multiplier is a grouped conv: held fixed, with the
    // layer that feeds it.
    assert_eq!(
        group("mid").fixed.as_deref(),
        Some("it feeds the grouped convolution 'dw2'")
    );
    assert_eq!(
        group("dw2").fixed.as_deref(),
        Some("'dw2' is a grouped convolution")
    );
    // Removing expand's channels 1 and 4: the squeeze conv and the projection read them at
    // those input columns; the depthwise conv is sliced along its own output axis only.
    let e = groups.group_of("expand").unwrap();
    let cols = groups.reading_columns(&g, e, &BTreeSet::from([1, 4]));
    let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["se.fc1", "project"]);
    assert!(cols.iter().all(|(_, c)| c == &[1, 4]));
    let plan = fair_analysis::Plan::new()
        .remove("expand", [1, 4])
        .remove("se.fc2", [1, 4]);
    let r = fair_analysis::Resolution::new(&g, &plan, &Default::default()).unwrap();
    let slice = |n: &str| r.node_slice(g.position(n).unwrap());
    assert_eq!(slice("dw").output, Some(vec![0, 2, 3, 5]));
    assert_eq!(slice("dw").input, Some(vec![0, 2, 3, 5]));
    assert_eq!(slice("dw.bn").output, Some(vec![0, 2, 3, 5]));
    assert_eq!(slice("se.fc2").output, Some(vec![0, 2, 3, 5]));
    assert_eq!(slice("se.fc2").input, None);
    assert_eq!(slice("project").input, Some(vec![0, 2, 3, 5]));
    let after = r.pruned_graph();
    assert_eq!(after.shape("se.mul").unwrap(), &[4, 8, 8]);
    let fair_ir::Op::Conv2d(dw) = &after.node("dw").unwrap().op else {
        panic!("conv")
    };
    assert_eq!((dw.in_channels, dw.out_channels, dw.groups), (4, 4, 4));
}

/// The surgery tests' ShuffleNetV2 unit + ConvNeXt block (channel split, shuffle, layer norm).
const SHUFFLE_LN: &str = include_str!("../../surgery/tests/common/shuffle_ln.toml");

#[test]
fn splits_shuffles_and_layer_norms_hold_their_streams_fixed() {
    let g = fair_ir::Graph::from_toml_str(SHUFFLE_LN).unwrap();
    let groups = analyze(&g, &[]).unwrap();
    let prunable: Vec<&[String]> = groups
        .groups()
        .iter()
        .filter(|g| g.is_prunable())
        .map(|g| g.layers.as_slice())
        .collect();
    // The branch's inner conv (through its depthwise conv) and the ConvNeXt MLP expansion.
    assert_eq!(prunable, [["branch2.0"], ["block.pw1"]]);
    let why = |l: &str| {
        groups.groups()[groups.group_of(l).unwrap()]
            .fixed
            .clone()
            .unwrap_or_default()
    };
    // The split's input, the branch's output (it reaches the shuffle), the residual stream
    // after the shuffle, and the output layer.
    assert_eq!(why("stem"), "it is split by the slice 'split.0'");
    assert_eq!(
        why("branch2.5"),
        "it feeds the channel_shuffle 'shuffle', whose channels cannot be removed"
    );
    assert_eq!(
        why("block.pw2"),
        "it is the output of the channel_shuffle 'shuffle'"
    );
    assert_eq!(
        groups.groups()[groups.group_of("block.pw2").unwrap()].layers,
        ["block.pw2"]
    );
    assert_eq!(why("fc"), "it is the output layer");
    // Removing units 1 and 4 of branch2.0: the last 1x1 conv of the branch reads them at
    // those columns (through the depthwise conv); pw1's units are read by pw2.
    let b = groups.group_of("branch2.0").unwrap();
    assert_eq!(
        groups.reading_columns(&g, b, &BTreeSet::from([1, 4])),
        [("branch2.5".to_owned(), vec![1, 4])]
    );
    let m = groups.group_of("block.pw1").unwrap();
    assert_eq!(
        groups.reading_columns(&g, m, &BTreeSet::from([0, 63])),
        [("block.pw2".to_owned(), vec![0, 63])]
    );
    // A plan on a fixed stream is refused, naming why.
    let bad = fair_analysis::Plan::new().remove("stem", [0]);
    let e = fair_analysis::Resolution::new(&g, &bad, &Default::default()).unwrap_err();
    assert!(e.to_string().contains("split by the slice"), "{e}");
    // Pruning both prunable groups narrows only their readers.
    let plan = fair_analysis::Plan::new()
        .remove("branch2.0", [1, 4])
        .remove("block.pw1", (0..64).step_by(2));
    let r = fair_analysis::Resolution::new(&g, &plan, &Default::default()).unwrap();
    let slice = |n: &str| r.node_slice(g.position(n).unwrap());
    for fixed in [
        "stem",
        "split.1",
        "cat",
        "shuffle",
        "block.dw",
        "block.norm",
        "block.add",
    ] {
        assert_eq!(slice(fixed), Default::default(), "{fixed}");
    }
    assert_eq!(slice("branch2.3").output.unwrap().len(), 10);
    assert_eq!(slice("branch2.5").input.unwrap().len(), 10);
    assert_eq!(slice("block.pw2").input, Some((1..64).step_by(2).collect()));
    let after = r.pruned_graph();
    assert_eq!(after.shape("branch2.4").unwrap(), &[10, 16, 16]);
    assert_eq!(after.shape("block.act").unwrap(), &[32, 16, 16]);
    assert_eq!(
        after.node("shuffle").unwrap().op,
        g.node("shuffle").unwrap().op
    );
}

#[test]
fn a_slice_cuts_its_inputs_segments_and_a_partial_coupling_is_held_fixed() {
    let g = fair_ir::Graph::from_toml_str(
        r#"
        name = "cut"
        [[nodes]]
        name = "input"
        op = { type = "input", shape = [3, 8, 8] }
        [[nodes]]
        name = "a"
        inputs = ["input"]
        op = { type = "conv2d", in_channels = 3, out_channels = 8, kernel_size = 1 }
        [[nodes]]
        name = "b"
        inputs = ["input"]
        op = { type = "conv2d", in_channels = 3, out_channels = 8, kernel_size = 1 }
        [[nodes]]
        name = "cat"
        inputs = ["a", "b"]
        op = { type = "concat" }
        [[nodes]]
        name = "mid"
        op = { type = "slice", start = 4, end = 12 }
        [[nodes]]
        name = "c"
        op = { type = "conv2d", in_channels = 8, out_channels = 4, kernel_size = 1 }
        [[nodes]]
        name = "head"
        inputs = ["a"]
        op = { type = "slice", start = 0, end = 4 }
        [[nodes]]
        name = "d"
        inputs = ["input"]
        op = { type = "conv2d", in_channels = 3, out_channels = 4, kernel_size = 1 }
        [[nodes]]
        name = "sum"
        inputs = ["head", "d", "c"]
        op = { type = "add" }
        "#,
    )
    .unwrap();
    let groups = analyze(&g, &[]).unwrap();
    // a's channels 4..8 are mid's 0..4, b's channels 0..4 are mid's 4..8.
    let a = groups.group_of("a").unwrap();
    let b = groups.group_of("b").unwrap();
    let cols = |group, units: &[usize]| {
        groups
            .reading_columns(&g, group, &units.iter().copied().collect())
            .into_iter()
            .find(|(n, _)| n == "c")
            .map(|(_, c)| c)
    };
    assert_eq!(cols(a, &[5, 6]), Some(vec![1, 2]));
    assert_eq!(cols(a, &[0, 3]), None);
    assert_eq!(cols(b, &[0, 3, 7]), Some(vec![4, 7]));
    // `head` is part of a's space: the add holds d (and c, coupled to d) fixed instead of
    // coupling spaces of different sizes.
    for l in ["a", "b"] {
        assert!(
            groups.groups()[groups.group_of(l).unwrap()].fixed.is_some(),
            "{l}"
        );
    }
    let d = &groups.groups()[groups.group_of("d").unwrap()];
    assert_eq!(d.units, 4);
    assert_eq!(
        d.fixed.as_deref(),
        Some("part of its channels meet another layer's in the add 'sum'")
    );
    assert!(groups.groups().iter().all(|g| !g.is_prunable()));
}

#[test]
fn token_mlp_groups_free_only_the_hidden_neurons_and_a_flatten_of_tokens_is_refused() {
    let g = fair_zoo::build("token_mlp", &[1, 8, 8], 10).unwrap();
    let groups = analyze(&g, &[]).unwrap();
    // The residual stream: the patch embedding and both fc2, one fixed space of 32.
    let stream = &groups.groups()[groups.group_of("patch_embed").unwrap()];
    assert_eq!(
        stream.layers,
        ["patch_embed", "blocks.0.fc2", "blocks.1.fc2"]
    );
    assert_eq!(stream.units, 32);
    assert!(
        stream.fixed.as_deref().unwrap().contains("layer_norm"),
        "{:?}",
        stream.fixed
    );
    for b in 0..2 {
        let h = &groups.groups()[groups.group_of(&format!("blocks.{b}.fc1")).unwrap()];
        assert_eq!((h.units, h.fixed.as_deref()), (64, None));
    }
    // Flattening tokens [T, F] is token-major: not a channel layout the analysis knows.
    let t = fair_ir::Graph::from_toml_str(
        r#"
        name = "flat-tokens"
        [[nodes]]
        name = "input"
        op = { type = "input", shape = [3, 2, 2] }
        [[nodes]]
        name = "embed"
        op = { type = "conv2d", in_channels = 3, out_channels = 4, kernel_size = 1 }
        [[nodes]]
        name = "tokens"
        op = { type = "tokens" }
        [[nodes]]
        name = "flatten"
        op = { type = "flatten" }
        [[nodes]]
        name = "head"
        op = { type = "linear", in_features = 16, out_features = 2 }
        "#,
    )
    .unwrap();
    let e = analyze(&t, &[]).unwrap_err().to_string();
    assert!(
        e.contains("flatten") && e.contains("flattens tokens [4, 4]"),
        "{e}"
    );
}
