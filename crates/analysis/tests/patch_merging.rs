//! A concat of four token tensors from the same channel space (Swin Transformer's patch
//! merging: four `grid_stride` views of one layer's tokens, concatenated on the features):
//! every channel of the producer appears at four positions of the concat, so the reader
//! loses four input columns per removed unit. Pure: no libtorch.

use std::collections::BTreeSet;

use fair_analysis::{Plan, Resolution, ResolveOptions, analyze};
use fair_ir::{Concat, GraphBuilder, GridStride, Linear, Pair, TokenMean, Tokens};

/// input [3, 4, 4] → tokens [16, 3] → `fc1` (6 features) → four strides of the 4 × 4 grid →
/// concat [4, 24] → `fc2` (5) → token mean → `head` (2).
fn patch_merging() -> fair_ir::Graph {
    let mut b = GraphBuilder::new("patch_merging", "input", vec![3, 4, 4]);
    b.add("tokens", Tokens {}.into(), &["input"]).unwrap();
    b.add("fc1", Linear::new(3, 6).into(), &["tokens"]).unwrap();
    let mut parts = Vec::new();
    for (k, offset) in [Pair(0, 0), Pair(1, 0), Pair(0, 1), Pair(1, 1)]
        .into_iter()
        .enumerate()
    {
        let name = format!("x{k}");
        let op = GridStride {
            grid: Pair(4, 4),
            offset,
            stride: Pair(2, 2),
        };
        b.add(&name, op.into(), &["fc1"]).unwrap();
        parts.push(name);
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    b.add("cat", Concat {}.into(), &refs).unwrap();
    b.add("fc2", Linear::new(24, 5).into(), &["cat"]).unwrap();
    b.add("mean", TokenMean {}.into(), &["fc2"]).unwrap();
    b.add("head", Linear::new(5, 2).into(), &["mean"]).unwrap();
    b.finish().unwrap()
}

#[test]
fn a_concat_of_one_space_four_times_slices_four_columns_per_unit() {
    let g = patch_merging();
    assert_eq!(g.shape("cat").unwrap(), [4, 24]);
    let groups = analyze(&g, &[]).unwrap();
    let fc1 = groups.group_of("fc1").unwrap();
    let group = &groups.groups()[fc1];
    assert_eq!(group.layers, ["fc1"]);
    assert!(group.is_prunable(), "{:?}", group.fixed);
    // Units 1 and 4 of fc1 (C = 6) sit at c, C + c, 2C + c, 3C + c of the concat.
    let removed = [1, 4];
    let plan = Plan::new().remove("fc1", removed);
    let r = Resolution::new(&g, &plan, &ResolveOptions::default()).unwrap();
    let gone: BTreeSet<i64> = [1, 7, 13, 19, 4, 10, 16, 22].into();
    let kept: Vec<i64> = (0..24).filter(|c| !gone.contains(c)).collect();
    let fc2 = g.position("fc2").unwrap();
    let slice = r.node_slice(fc2);
    assert_eq!(slice.input.as_deref(), Some(kept.as_slice()));
    assert_eq!(slice.output, None);
    let fc1_slice = r.node_slice(g.position("fc1").unwrap());
    assert_eq!(fc1_slice.output.as_deref(), Some(&[0, 2, 3, 5][..]));
    // The pruned graph: fc1 has 4 features, the concat 16, fc2 reads 16.
    let after = r.pruned_graph();
    assert_eq!(after.shape("cat").unwrap(), [4, 16]);
    assert_eq!(after.units("fc1"), Some(4));
    // The group's slices: unit 1 is fc1's row 1 and bias 1, and fc2's columns 1, 7, 13, 19.
    let slices = groups.unit_slices(&g, fc1);
    let fc2_w = slices
        .iter()
        .find(|s| s.param == "fc2.weight")
        .expect("fc2 reads the group");
    assert!(fc2_w.reads);
    assert_eq!(fc2_w.axis, 1);
    assert_eq!(fc2_w.positions[1], [1, 7, 13, 19]);
    assert_eq!(fc2_w.positions[5], [5, 11, 17, 23]);
    let fc1_w = slices.iter().find(|s| s.param == "fc1.weight").unwrap();
    assert_eq!(fc1_w.positions[1], [1]);
    let cols = groups.reading_columns(&g, fc1, &BTreeSet::from([4]));
    assert_eq!(cols, [("fc2".to_owned(), vec![4, 10, 16, 22])]);
}
