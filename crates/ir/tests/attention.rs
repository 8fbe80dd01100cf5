//! Multi-head attention (`attention`): shapes, the errors naming the node, MACs, channel
//! behaviour, narrowing to fewer heads. Expected values are worked out by hand.

use std::collections::HashMap;

use fair_ir::{Attention, Channels, Graph, GraphBuilder, IrError, Role};

/// 4 tokens of 8 features, q/k/v projections to 12 = 3 heads × 4, attention, output
/// projection back to 8.
fn graph(head_dim: usize) -> Result<Graph, IrError> {
    let mut b = GraphBuilder::new("attn", "input", vec![2, 4, 2]);
    b.conv("embed", "input", 8, 1, 1, 0, true)?;
    b.add("tokens", fair_ir::Tokens {}.into(), &["embed"])?;
    for p in ["q", "k", "v"] {
        b.linear(p, "tokens", 12, true)?;
    }
    b.add("attn", Attention::new(head_dim).into(), &["q", "k", "v"])?;
    b.linear("proj", "attn", 8, true)?;
    b.finish()
}

#[test]
fn shapes_macs_and_channels() {
    let g = graph(4).unwrap();
    // A 1×1 conv on a 4×2 image: T = 8 tokens of 8 features.
    assert_eq!(g.shape("tokens").unwrap(), &[8, 8]);
    assert_eq!(g.shape("attn").unwrap(), &[8, 12]);
    assert_eq!(g.shape("proj").unwrap(), &[8, 8]);
    let op = &g.node("attn").unwrap().op;
    assert_eq!(op.channels(), Channels::Heads { head_dim: 4 });
    assert_eq!(op.role(), Role::Merge);
    assert_eq!(op.param_count(), 0);
    // q kᵀ: 3 heads × 8 × 8 × 4; weights · v as many: 2 · 8² · 12.
    assert_eq!(op.macs(&[8, 12]), 2 * 64 * 12);
    let linears = 3 * (8 * 8 * 12) + 8 * 12 * 8;
    let conv = 8 * 8 * 2;
    assert_eq!(g.macs(), (conv + linears + 2 * 64 * 12) as u64);
}

#[test]
fn errors_name_the_node_and_what_was_expected() {
    // A head size that does not divide the width.
    let e = graph(5).unwrap_err().to_string();
    assert!(e.contains("'attn'"), "{e}");
    assert!(
        e.contains("head_dim = 5 does not divide the width 12"),
        "{e}"
    );
    // k of another width.
    let mut b = GraphBuilder::new("attn", "input", vec![2, 4, 2]);
    b.conv("embed", "input", 8, 1, 1, 0, true).unwrap();
    b.add("tokens", fair_ir::Tokens {}.into(), &["embed"])
        .unwrap();
    b.linear("q", "tokens", 12, true).unwrap();
    b.linear("k", "tokens", 8, true).unwrap();
    let e = b
        .add("attn", Attention::new(4).into(), &["q", "k", "q"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("'attn'") && e.contains("from 'k'"), "{e}");
    assert!(e.contains("q, k and v must be tokens of one shape"), "{e}");
    // Two inputs.
    let e = b
        .add("attn2", Attention::new(4).into(), &["q", "q"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("'attn2'") && e.contains('3'), "{e}");
    // An image input.
    let e = b
        .add(
            "attn3",
            Attention::new(4).into(),
            &["embed", "embed", "embed"],
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'attn3'") && e.contains("expected tokens"),
        "{e}"
    );
    // head_dim 0 is refused by the attribute check.
    let e = Graph::from_toml_str(
        r#"
        name = "z"
        [[nodes]]
        name = "input"
        op = { type = "input", shape = [4] }
        [[nodes]]
        name = "a"
        inputs = ["input", "input", "input"]
        op = { type = "attention", head_dim = 0 }
    "#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("'a'") && e.contains("head_dim must be at least 1"),
        "{e}"
    );
}

#[test]
fn narrowing_to_fewer_whole_heads_keeps_the_head_dim() {
    let g = graph(4).unwrap();
    let kept: HashMap<String, usize> = ["q", "k", "v"]
        .into_iter()
        .map(|l| (l.to_owned(), 8))
        .collect();
    let n = g.with_units(&kept).unwrap();
    assert_eq!(n.shape("attn").unwrap(), &[8, 8]);
    assert_eq!(n.node("attn").unwrap().op, Attention::new(4).into());
    assert_eq!(n.node("proj").unwrap().op.params("p")[0].shape, vec![8, 8]);
    // Part of a head is an error naming the attention.
    let part: HashMap<String, usize> = ["q", "k", "v"]
        .into_iter()
        .map(|l| (l.to_owned(), 10))
        .collect();
    let e = g.with_units(&part).unwrap_err().to_string();
    assert!(e.contains("'attn'") && e.contains("whole heads"), "{e}");
    // Only q narrowed: the shapes disagree, named at the attention.
    let e = g
        .with_units(&HashMap::from([("q".to_owned(), 8)]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("'attn'"), "{e}");
    assert!(
        e.contains(
            "(the layers feeding an attention are coupled in whole heads of 4: \
             q, k and v must keep the same heads)"
        ),
        "{e}"
    );
}

#[test]
fn toml_round_trip() {
    let g = graph(4).unwrap();
    let text = g.to_toml_string().unwrap();
    assert!(text.contains("type = \"attention\""), "{text}");
    assert!(text.contains("head_dim = 4"), "{text}");
    assert_eq!(Graph::from_toml_str(&text).unwrap(), g);
}

#[test]
fn saved_for_backward_grows_with_tokens_per_head_channel() {
    // Output [8, 12], heads of 4: copies of q, kᵀ and v 3 · 8 · 12, the weights and one more
    // [3, 8, 8]: 2 · 3 · 64.
    let op = fair_ir::Op::from(Attention::new(4));
    assert_eq!(op.saved_for_backward(&[8, 12]), 3 * 96 + 2 * 3 * 64);
    // One head of 12: 3 · 8 · 12 + 2 · 64.
    let op = fair_ir::Op::from(Attention::new(12));
    assert_eq!(op.saved_for_backward(&[8, 12]), 3 * 96 + 2 * 64);
    // 64 tokens, heads of 4 (T / d = 16): 3 · 64 · 12 + 2 · 3 · 64²; in outputs' worth
    // 3 + 2 · 16.
    let op = fair_ir::Op::from(Attention::new(4));
    assert_eq!(op.saved_for_backward(&[64, 12]), (3 + 2 * 16) * 64 * 12);
    // Other ops: their Scoring count times the output's size (a dropout keeps its mask).
    let dropout: fair_ir::Op = fair_ir::Dropout { p: 0.5 }.into();
    assert_eq!(dropout.saved_for_backward(&[3, 4, 4]), 48);
    let relu: fair_ir::Op = fair_ir::Relu {}.into();
    assert_eq!(relu.saved_for_backward(&[3, 4, 4]), 0);
}

#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "attention's output is [T, E], not [8]")]
fn macs_of_an_output_that_is_not_tokens_are_a_bug() {
    let op = fair_ir::Op::from(Attention::new(4));
    let _ = op.macs(&[8]);
}
