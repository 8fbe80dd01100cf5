//! Attention heads as units: the q, k and v projections of an attention are one group whose
//! units are heads (a chunk map of `head_dim` channels), the output projection reads them,
//! and plans, resolutions, slices and MACs are in heads. Pure: no libtorch.

use std::collections::BTreeSet;

use fair_analysis::{Plan, Resolution, ResolveOptions, UnitMap, analyze};
use fair_ir::{Attention, GraphBuilder};

fn vit() -> fair_ir::Graph {
    fair_zoo::build("tiny_vit", &[1, 28, 28], 10).unwrap()
}

#[test]
fn q_k_v_are_one_group_of_heads_and_the_mlp_neurons_another() {
    let g = vit();
    let groups = analyze(&g, &[]).unwrap();
    for b in 0..2 {
        let p = format!("blocks.{b}");
        let heads = &groups.groups()[groups.group_of(&format!("{p}.attn.q")).unwrap()];
        assert_eq!(
            heads.layers,
            [
                format!("{p}.attn.q"),
                format!("{p}.attn.k"),
                format!("{p}.attn.v")
            ]
        );
        assert_eq!(
            (heads.units, heads.map, heads.fixed.as_deref()),
            (4, UnitMap::Chunks { size: 8 }, None)
        );
        assert_eq!(heads.channels(), 32);
        let mlp = &groups.groups()[groups.group_of(&format!("{p}.mlp.fc1")).unwrap()];
        assert_eq!(
            (mlp.units, mlp.map, mlp.fixed.as_deref()),
            (64, UnitMap::Identity, None)
        );
    }
    // The residual stream (patch embedding, every proj and fc2) is held fixed by the norms.
    let stream = &groups.groups()[groups.group_of("patch_embed").unwrap()];
    assert_eq!(stream.layers.len(), 5);
    assert!(stream.layers.contains(&"blocks.1.attn.proj".to_owned()));
    assert!(!stream.is_prunable());
    // Head 2 is read by the output projection's input columns 16..24, and nowhere else.
    let q = groups.group_of("blocks.0.attn.q").unwrap();
    let cols = groups.reading_columns(&g, q, &BTreeSet::from([2]));
    assert_eq!(
        cols,
        [(
            "blocks.0.attn.proj".to_owned(),
            (16..24).collect::<Vec<i64>>()
        )]
    );
    // Slices of head 2: 8 rows of q, k and v (weights and biases), 8 columns of proj.
    let slices = groups.unit_slices(&g, q);
    let names: Vec<&str> = slices.iter().map(|s| s.param.as_str()).collect();
    assert_eq!(
        names,
        [
            "blocks.0.attn.q.weight",
            "blocks.0.attn.q.bias",
            "blocks.0.attn.k.weight",
            "blocks.0.attn.k.bias",
            "blocks.0.attn.v.weight",
            "blocks.0.attn.v.bias",
            "blocks.0.attn.proj.weight",
        ]
    );
    for s in &slices {
        assert_eq!(s.positions.len(), 4);
        assert_eq!(
            s.positions[2],
            (16..24).collect::<Vec<i64>>(),
            "{}",
            s.param
        );
        assert_eq!(
            (s.axis, s.reads),
            if s.param.contains("proj") {
                (1, true)
            } else {
                (0, false)
            }
        );
    }
}

#[test]
fn plans_remove_whole_heads_and_the_macs_follow() {
    let g = vit();
    // Under the default (package) rule a group loses the units all its members ask for:
    // naming q alone removes nothing.
    let only_q = Plan::new().remove("blocks.0.attn.q", [1, 3]);
    let r = Resolution::new(&g, &only_q, &ResolveOptions::default()).unwrap();
    assert_eq!(r.pruned_graph().macs(), g.macs());
    let plan = Plan::new()
        .remove("blocks.0.attn.q", [1, 3])
        .remove("blocks.0.attn.k", [1, 3])
        .remove("blocks.0.attn.v", [1, 3])
        .remove("blocks.1.mlp.fc1", [0, 5, 9]);
    let r = Resolution::new(&g, &plan, &ResolveOptions::default()).unwrap();
    let after = r.pruned_graph();
    for l in ["q", "k", "v", "attend"] {
        assert_eq!(
            after.shape(&format!("blocks.0.attn.{l}")).unwrap(),
            &[16, 16]
        );
    }
    assert_eq!(
        after.node("blocks.0.attn.attend").unwrap().op,
        Attention::new(8).into()
    );
    assert_eq!(
        after.node("blocks.0.attn.proj").unwrap().op.params("p")[0].shape,
        vec![32, 16]
    );
    let widths = r.widths();
    assert_eq!(
        (widths["blocks.0.attn.k"], widths["blocks.1.attn.k"]),
        (16, 32)
    );
    assert_eq!(widths["blocks.1.mlp.fc1"], 61);
    // The kept heads' channels slice q, k, v and the projection's columns.
    let keep: Vec<i64> = (0..8).chain(16..24).collect();
    let q = g.position("blocks.0.attn.v").unwrap();
    assert_eq!(r.node_slice(q).output, Some(keep.clone()));
    let proj = g.position("blocks.0.attn.proj").unwrap();
    assert_eq!(r.node_slice(proj).input, Some(keep));
    assert_eq!(r.node_slice(proj).output, None);
    // MACs: three 16×32→16 projections lose half, proj's input halves, the attention
    // halves (2·16²·16 instead of 2·16²·32); fc1 loses 3 neurons (fc1 rows, fc2 columns).
    let saved = 3 * 16 * 32 * 16 + 16 * 16 * 32 + 2 * 256 * 16 + 2 * 16 * 32 * 3;
    let report = r.report();
    assert_eq!(report.macs.0 - report.macs.1, saved as u64);
    // The report counts removed units in heads for the attention group.
    let heads = report
        .groups
        .iter()
        .find(|(layers, _)| layers[0] == "blocks.0.attn.q")
        .unwrap();
    assert_eq!(heads.1, 2);
    let mlp = report
        .groups
        .iter()
        .find(|(layers, _)| layers[0] == "blocks.1.mlp.fc1")
        .unwrap();
    assert_eq!(mlp.1, 3);
    // The resolved plan names heads for every member.
    assert_eq!(r.plan().remove["blocks.0.attn.v"], vec![1, 3]);
    // Units are heads: 4 of them.
    let e = Resolution::new(
        &g,
        &Plan::new().remove("blocks.0.attn.q", [4]),
        &ResolveOptions::default(),
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(e.contains("blocks.0.attn.q") && e.contains('4'), "{e}");
    // Every head removed is an error naming the layers.
    let all = ["q", "k", "v"].into_iter().fold(Plan::new(), |p, l| {
        p.remove(&format!("blocks.0.attn.{l}"), [0, 1, 2, 3])
    });
    let e = Resolution::new(&g, &all, &ResolveOptions::default())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("blocks.0.attn.q"), "{e}");
}

/// Two attentions of different head sizes on the same projections: their channels cannot
/// be whole heads of both, so the group is held fixed, saying why.
#[test]
fn attentions_of_several_head_sizes_on_one_group_hold_it_fixed() {
    let mut b = GraphBuilder::new("sizes", "input", vec![2, 2, 2]);
    b.conv("embed", "input", 8, 1, 1, 0, true).unwrap();
    b.add("tokens", fair_ir::Tokens {}.into(), &["embed"])
        .unwrap();
    for l in ["q", "k"] {
        b.linear(l, "tokens", 8, true).unwrap();
    }
    b.add("a1", Attention::new(4).into(), &["q", "k", "q"])
        .unwrap();
    b.add("a2", Attention::new(2).into(), &["q", "k", "k"])
        .unwrap();
    b.add("sum", fair_ir::Add {}.into(), &["a1", "a2"]).unwrap();
    b.add("pool", fair_ir::TokenMean {}.into(), &["sum"])
        .unwrap();
    b.linear("head", "pool", 3, true).unwrap();
    let g = b.finish().unwrap();
    let groups = analyze(&g, &[]).unwrap();
    let qk = &groups.groups()[groups.group_of("q").unwrap()];
    assert_eq!(qk.layers, ["q", "k"]);
    assert!(!qk.is_prunable());
    assert_eq!(
        qk.fixed.as_deref(),
        Some("its channels meet attentions of head sizes 4 and 2")
    );
    // One head size alone: heads of 4.
    let mut b = GraphBuilder::new("one", "input", vec![2, 2, 2]);
    b.conv("embed", "input", 8, 1, 1, 0, true).unwrap();
    b.add("tokens", fair_ir::Tokens {}.into(), &["embed"])
        .unwrap();
    for l in ["q", "k"] {
        b.linear(l, "tokens", 8, true).unwrap();
    }
    b.add("a1", Attention::new(4).into(), &["q", "k", "q"])
        .unwrap();
    b.add("pool", fair_ir::TokenMean {}.into(), &["a1"])
        .unwrap();
    b.linear("head", "pool", 3, true).unwrap();
    let groups = analyze(&b.finish().unwrap(), &[]).unwrap();
    let qk = &groups.groups()[groups.group_of("q").unwrap()];
    assert_eq!(
        (qk.map, qk.units, qk.fixed.as_deref()),
        (UnitMap::Chunks { size: 4 }, 2, None)
    );
}
