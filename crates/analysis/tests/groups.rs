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
