//! Grouped convolutions pruned within their groups: units map to channel *j* of every group
//! (pure: no libtorch). Expected channels, slices and MACs are worked out by hand from the
//! test network in `resnext_block.toml`.

use std::collections::{BTreeSet, HashMap};

use fair_analysis::{
    GroupRule, GroupedConvs, Plan, Resolution, ResolveOptions, UnitMap, analyze, analyze_with,
};
use fair_ir::{Graph, Op};
use rand::{Rng, SeedableRng, seq::SliceRandom};

const RESNEXT: &str = include_str!("resnext_block.toml");

fn graph() -> Graph {
    Graph::from_toml_str(RESNEXT).unwrap()
}

fn within() -> ResolveOptions {
    ResolveOptions {
        rule: GroupRule::Strict,
        grouped: GroupedConvs::WithinGroups,
        ..Default::default()
    }
}

fn conv(g: &Graph, name: &str) -> (usize, usize, usize) {
    match &g.node(name).unwrap().op {
        Op::Conv2d(c) => (c.in_channels, c.out_channels, c.groups),
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn grouped_convs_stay_fixed_by_default() {
    let g = graph();
    let groups = analyze(&g, &[]).unwrap();
    for (layer, why) in [
        ("b1.conv1", "it feeds the grouped convolution 'b1.conv2'"),
        ("b1.conv2", "'b1.conv2' is a grouped convolution"),
        ("stem", "it feeds the grouped convolution 'proj'"),
        ("proj", "'proj' is a grouped convolution"),
    ] {
        let group = &groups.groups()[groups.group_of(layer).unwrap()];
        assert_eq!(group.fixed.as_deref(), Some(why), "{layer}");
        assert_eq!(group.map, UnitMap::Identity, "{layer}");
    }
    let e = Resolution::new(
        &g,
        &Plan::new().remove("b1.conv1", [1]),
        &ResolveOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("b1.conv1") && e.contains("grouped convolution"),
        "{e}"
    );
}

#[test]
fn within_groups_a_unit_is_one_channel_of_every_group() {
    let g = graph();
    let groups = analyze_with(&g, &[], GroupedConvs::WithinGroups).unwrap();
    let of = |layer: &str| groups.groups()[groups.group_of(layer).unwrap()].clone();
    // conv1's 16 channels feed 4 groups of 4; conv2 creates 4 groups of 4.
    for layer in ["b1.conv1", "b1.conv2"] {
        let group = of(layer);
        assert!(group.is_prunable(), "{layer}: {:?}", group.fixed);
        assert_eq!((group.map, group.units), (UnitMap::Blocks { blocks: 4 }, 4));
    }
    // The residual stream (stem + conv3) feeds the 2-group projection: 2 blocks of 8.
    let stream = of("stem");
    assert_eq!(stream.layers, ["stem", "b1.conv3"]);
    assert_eq!(
        (stream.map, stream.units),
        (UnitMap::Blocks { blocks: 2 }, 8)
    );
    let proj = of("proj");
    assert_eq!(
        (proj.map, proj.units, proj.channels()),
        (UnitMap::Blocks { blocks: 2 }, 12, 24)
    );
    assert!(of("fc").fixed.is_some());

    // Stream unit 3 is channels 3 and 11: conv1 reads both (dense), the projection reads
    // within-group channel 3 of each of its 2 groups.
    let s = groups.group_of("stem").unwrap();
    let mut cols = groups.reading_columns(&g, s, &BTreeSet::from([3]));
    cols.sort();
    assert_eq!(
        cols,
        [
            ("b1.conv1".to_owned(), vec![3, 11]),
            ("proj".to_owned(), vec![3])
        ]
    );
    let c1 = groups.group_of("b1.conv1").unwrap();
    assert_eq!(
        groups.reading_columns(&g, c1, &BTreeSet::from([1])),
        [("b1.conv2".to_owned(), vec![1])]
    );
    // The slices a group criterion sees: conv2's weight axis 1 holds within-group channel 1
    // for unit 1 of conv1's group; conv1's filters 1, 5, 9, 13.
    let slices = groups.unit_slices(&g, c1);
    let find = |param: &str, reads: bool| {
        slices
            .iter()
            .find(|s| s.param == param && s.reads == reads)
            .unwrap_or_else(|| panic!("{param}"))
            .positions[1]
            .clone()
    };
    assert_eq!(find("b1.conv1.weight", false), vec![1, 5, 9, 13]);
    assert_eq!(find("b1.bn1.weight", false), vec![1, 5, 9, 13]);
    assert_eq!(find("b1.conv2.weight", true), vec![1]);
}

#[test]
fn plans_remove_the_same_within_group_channels_everywhere() {
    let g = graph();
    let plan = Plan::new()
        .remove("b1.conv1", [1])
        .remove("b1.conv2", [0, 3])
        .remove("stem", [3])
        .remove("b1.conv3", [3])
        .remove("proj", [5]);
    let r = Resolution::new(&g, &plan, &within()).unwrap();
    let p = r.pruned_graph();
    assert_eq!(conv(p, "stem"), (3, 14, 1));
    assert_eq!(conv(p, "b1.conv1"), (14, 12, 1));
    assert_eq!(conv(p, "b1.conv2"), (12, 8, 4));
    assert_eq!(conv(p, "b1.conv3"), (8, 14, 1));
    assert_eq!(conv(p, "proj"), (14, 22, 2));
    // MACs by hand: out · in/groups · k² · H·W per conv, plus the linear layer.
    let before =
        16 * 3 * 9 * 64 + 16 * 16 * 64 + 16 * 4 * 9 * 64 + 16 * 16 * 64 + 24 * 8 * 9 * 16 + 240;
    let after =
        14 * 3 * 9 * 64 + 12 * 14 * 64 + 8 * 3 * 9 * 64 + 14 * 8 * 64 + 22 * 7 * 9 * 16 + 220;
    assert_eq!(r.report().macs, (before, after));
    assert_eq!(r.widths()["b1.conv1"], 12);

    let at = |name: &str| r.node_slice(g.position(name).unwrap());
    let conv1 = at("b1.conv1");
    assert_eq!(
        conv1.output.unwrap(),
        [0, 2, 3, 4, 6, 7, 8, 10, 11, 12, 14, 15]
    );
    let no_stream: Vec<i64> = (0..16).filter(|c| ![3, 11].contains(c)).collect();
    assert_eq!(conv1.input.unwrap(), no_stream);
    assert_eq!(conv1.group_input, None);
    let conv2 = at("b1.conv2");
    assert_eq!(conv2.group_input.unwrap(), [0, 2, 3]);
    assert_eq!(conv2.output.unwrap(), [1, 2, 5, 6, 9, 10, 13, 14]);
    let proj = at("proj");
    assert_eq!(proj.group_input.unwrap(), [0, 1, 2, 4, 5, 6, 7]);
    let no_5_17: Vec<i64> = (0..24).filter(|c| ![5, 17].contains(c)).collect();
    assert_eq!(proj.output.unwrap(), no_5_17);
    assert_eq!(at("fc").input.unwrap(), no_5_17);

    // The resolved plan names within-group units.
    assert_eq!(r.plan().remove["b1.conv2"], [0, 3]);
    // Units are within-group indices: conv1 has 4.
    let e = Resolution::new(&g, &Plan::new().remove("b1.conv1", [4]), &within())
        .unwrap_err()
        .to_string();
    assert!(e.contains("b1.conv1") && e.contains('4'), "{e}");
    // Removing every within-group channel would empty the groups.
    assert!(Resolution::new(&g, &Plan::new().remove("b1.conv1", 0..4), &within()).is_err());
}

#[test]
fn random_within_group_plans_keep_the_graph_valid() {
    let g = graph();
    let groups = analyze_with(&g, &[], GroupedConvs::WithinGroups).unwrap();
    let prunable: Vec<usize> = (0..groups.groups().len())
        .filter(|&i| groups.groups()[i].is_prunable())
        .collect();
    assert_eq!(prunable.len(), 4);
    for seed in 0..32 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut plan = Plan::new();
        let mut kept: HashMap<String, usize> = HashMap::new();
        for &i in &prunable {
            let group = &groups.groups()[i];
            let k = rng.gen_range(0..group.units);
            let mut all: Vec<usize> = (0..group.units).collect();
            all.shuffle(&mut rng);
            for layer in &group.layers {
                plan = plan.remove(layer, all[..k].iter().copied());
                kept.insert(
                    layer.clone(),
                    (group.units - k) * group.map.channels_per_unit(),
                );
            }
        }
        let r = Resolution::with_groups(&g, groups.clone(), &plan, GroupRule::Strict).unwrap();
        let p = r.pruned_graph();
        let (s, c1, c2, pj) = (
            kept["stem"],
            kept["b1.conv1"],
            kept["b1.conv2"],
            kept["proj"],
        );
        assert_eq!(conv(p, "b1.conv2"), (c1, c2, 4), "seed {seed}");
        assert_eq!(conv(p, "proj"), (s, pj, 2), "seed {seed}");
        let macs = (s * 3 * 9 * 64
            + c1 * s * 64
            + c2 * (c1 / 4) * 9 * 64
            + s * c2 * 64
            + pj * (s / 2) * 9 * 16
            + 10 * pj) as u64;
        assert_eq!(p.macs(), macs, "seed {seed}");
        // Every group of a grouped conv keeps the same within-group channels.
        let slice = r.node_slice(g.position("b1.conv2").unwrap());
        if let Some(input) = slice.input {
            let within = slice.group_input.unwrap();
            let per_group: Vec<i64> = (0..4)
                .flat_map(|b| within.iter().map(move |j| b * 4 + j))
                .collect();
            assert_eq!(input, per_group, "seed {seed}");
        }
    }
}

#[test]
fn a_space_read_by_several_group_counts_takes_their_common_multiple() {
    // conv1 becomes a 4-group conv reading the stream, which the 2-group projection reads
    // too: 4 blocks of 4.
    let text = RESNEXT.replace(
        "name = \"b1.conv1\"\nop = { type = \"conv2d\", in_channels = 16, out_channels = 16, kernel_size = 1, bias = false }",
        "name = \"b1.conv1\"\nop = { type = \"conv2d\", in_channels = 16, out_channels = 16, kernel_size = 1, groups = 4, bias = false }",
    );
    assert_ne!(text, RESNEXT);
    let g = Graph::from_toml_str(&text).unwrap();
    let groups = analyze_with(&g, &[], GroupedConvs::WithinGroups).unwrap();
    let stream = &groups.groups()[groups.group_of("stem").unwrap()];
    assert_eq!(
        (stream.map, stream.units),
        (UnitMap::Blocks { blocks: 4 }, 4)
    );
    let r = Resolution::new(
        &g,
        &Plan::new().remove("stem", [1]).remove("b1.conv3", [1]),
        &within(),
    )
    .unwrap();
    // Stream unit 1 is channels 1, 5, 9, 13: within-group channel 1 of conv1's 4 groups of
    // 4, within-group channels 1 and 5 of the projection's 2 groups of 8.
    let at = |name: &str| r.node_slice(g.position(name).unwrap()).group_input.unwrap();
    assert_eq!(at("b1.conv1"), [0, 2, 3]);
    assert_eq!(at("proj"), [0, 2, 3, 4, 6, 7]);
    assert_eq!(conv(r.pruned_graph(), "proj"), (12, 24, 2));
}

/// The selector reads the map: a block-mapped unit scores the mean of its channels over the
/// groups (Torch-Pruning's `imp.view(G, -1).mean(0)`), so it removes the unit with the
/// lowest mean, not the one holding the lowest channel.
#[test]
fn the_selector_ranks_block_units_by_their_mean_over_the_groups() {
    use fair_analysis::{Goal, Method, SelectOptions, Selector, scored_layers};
    let g = graph();
    let layers: Vec<String> = scored_layers(&g, GroupedConvs::WithinGroups)
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(layers, ["stem", "b1.conv1", "b1.conv2", "b1.conv3", "proj"]);
    assert_eq!(
        scored_layers(&g, GroupedConvs::Fixed),
        ["stem", "b1.conv1", "b1.conv3"]
    );
    // b1.conv1: 16 channels in 4 groups, unit j = channels {j, j+4, j+8, j+12}. By unit:
    // 0: 0, 10, 10, 10 (mean 7.5, but the lowest channel); 1: 5 ×4 (5); 2: 3 ×4 (3);
    // 3: 1, 9, 9, 9 (7).
    let by_unit = [
        [0.0, 10.0, 10.0, 10.0],
        [5.0; 4],
        [3.0; 4],
        [1.0, 9.0, 9.0, 9.0],
    ];
    let conv1: Vec<f64> = (0..16).map(|c| by_unit[c % 4][c / 4]).collect();
    let scores: Vec<Vec<f64>> = layers
        .iter()
        .map(|l| {
            if l == "b1.conv1" {
                conv1.clone()
            } else {
                (0..g.units(l).unwrap()).map(|c| c as f64).collect()
            }
        })
        .collect();
    let refs: Vec<&[f64]> = scores.iter().map(Vec::as_slice).collect();
    let options = SelectOptions {
        rule: GroupRule::Strict,
        grouped: GroupedConvs::WithinGroups,
        ..Default::default()
    };
    let s = Selector::new(g.clone(), layers, &refs, &refs, &refs, options).unwrap();
    // Unit counts: b1.conv1 and b1.conv2 4 (4 groups), stem and b1.conv3 8 (read by the
    // 2-group projection), proj 12 (2 groups of 12).
    let units: Vec<usize> = s.curves().iter().map(|c| c.units()).collect();
    assert_eq!(units, [8, 4, 4, 8, 12]);
    assert_eq!(s.units(), units);
    let plan = s.requests(&[0, 1, 0, 0, 0]);
    assert_eq!(plan.remove.get("b1.conv1"), Some(&vec![2]));
    // Uniform widths are in units: every grouped conv keeps its groups and whole units.
    let sel = s.select(Goal::Macs(0.3), Method::Uniform).unwrap();
    let widths = sel.widths();
    for (layer, blocks) in [("b1.conv1", 4), ("b1.conv2", 4), ("stem", 2), ("proj", 2)] {
        assert_eq!(widths[layer] % blocks, 0, "{layer}: {}", widths[layer]);
    }
    let pruned = sel.resolution.pruned_graph();
    assert_eq!((conv(pruned, "b1.conv2").2, conv(pruned, "proj").2), (4, 2));
    assert!(sel.reduction().1 >= 0.3);
}
