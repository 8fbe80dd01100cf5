//! Property tests for the IR parsers: no input — random text, random but well-formed graphs
//! with extreme attributes, random narrowings — makes them panic, wrap or abort. Errors are
//! fine; crashes are not. Bounded (a few hundred cases each) so they run in CI.

use std::collections::HashMap;

use fair_ir::Graph;
use proptest::prelude::*;

/// Attribute values that stress arithmetic: small, zero, huge, near overflow.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..6,
        2 => 1u64..64,
        1 => Just(1u64 << 40),
        1 => Just((1u64 << 62) + 3),
        1 => Just(u64::MAX),
        1 => any::<u64>(),
    ]
}

/// A random op line (TOML inline table) reading the previous node.
fn op() -> impl Strategy<Value = String> {
    prop_oneof![
        (size(), size(), size(), size(), size(), size()).prop_map(|(i, o, k, s, p, g)| format!(
            "{{ type = \"conv2d\", in_channels = {i}, out_channels = {o}, kernel_size = {k}, stride = {s}, padding = {p}, groups = {g} }}"
        )),
        size().prop_map(|n| format!("{{ type = \"batch_norm2d\", num_features = {n} }}")),
        Just("{ type = \"relu\" }".to_owned()),
        (size(), size(), size()).prop_map(|(k, s, p)| format!(
            "{{ type = \"max_pool2d\", kernel_size = {k}, stride = {s}, padding = {p}, ceil_mode = true }}"
        )),
        (size(), size()).prop_map(|(k, s)| format!("{{ type = \"avg_pool2d\", kernel_size = {k}, stride = {s} }}")),
        (size(), size()).prop_map(|(h, w)| format!("{{ type = \"adaptive_avg_pool2d\", output_size = [{h}, {w}] }}")),
        Just("{ type = \"flatten\" }".to_owned()),
        (size(), size()).prop_map(|(i, o)| format!("{{ type = \"linear\", in_features = {i}, out_features = {o} }}")),
        size().prop_map(|n| format!("{{ type = \"batch_norm1d\", num_features = {n} }}")),
        Just("{ type = \"dropout\", p = 0.5 }".to_owned()),
        Just("{ type = \"clip\", min = 0.0, max = 6.0 }".to_owned()),
        Just("{ type = \"clip\", min = 1.0, max = -1e308 }".to_owned()),
        Just("{ type = \"hard_sigmoid\", alpha = 0.2 }".to_owned()),
        Just("{ type = \"hard_swish\" }".to_owned()),
        Just("{ type = \"gelu\", approximate = \"tanh\" }".to_owned()),
        Just("{ type = \"no_such_op\" }".to_owned()),
    ]
}

fn graph_text() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(size(), 1..4),
        prop::collection::vec(op(), 1..8),
    )
        .prop_map(|(shape, ops)| {
            let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
            let mut t = format!(
                "name = \"fuzz\"\n[[nodes]]\nname = \"input\"\nop = {{ type = \"input\", shape = [{}] }}\n",
                dims.join(", ")
            );
            for (i, o) in ops.iter().enumerate() {
                t += &format!("[[nodes]]\nname = \"n{i}\"\nop = {o}\n");
            }
            t
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_text_never_panics(text in ".{0,400}") {
        let _ = Graph::from_toml_str(&text);
        let _ = Graph::from_json_str(&text);
    }

    #[test]
    fn extreme_graphs_parse_or_fail_cleanly(text in graph_text()) {
        if let Ok(g) = Graph::from_toml_str(&text) {
            // Totals were checked for overflow when the graph was built.
            let _ = (g.param_count(), g.macs());
            for n in g.nodes() {
                for p in n.op.params(&n.name) {
                    prop_assert!(p.shape.iter().all(|&d| d <= 1 << 40));
                }
            }
            // Round trips through both formats.
            prop_assert_eq!(&Graph::from_toml_str(&g.to_toml_string().unwrap()).unwrap(), &g);
            prop_assert_eq!(&Graph::from_json_str(&g.to_json_string().unwrap()).unwrap(), &g);
            // Any narrowing is a graph or an error.
            let kept: HashMap<String, usize> = g
                .prunable_layers()
                .iter()
                .map(|l| (l.to_string(), g.units(l).unwrap().div_ceil(2)))
                .collect();
            let _ = g.with_units(&kept);
        }
    }

    #[test]
    fn mutated_valid_graphs_never_panic(cut in 0usize..600, byte in any::<u8>()) {
        let valid = small_net().to_json_string().unwrap();
        let mut bytes = valid.into_bytes();
        let at = cut % bytes.len();
        bytes[at] = byte;
        if let Ok(text) = String::from_utf8(bytes) {
            let _ = Graph::from_json_str(&text);
        }
    }
}

/// A residual net with every kind of op.
fn small_net() -> Graph {
    let mut b = fair_ir::GraphBuilder::new("small", "input", vec![3, 16, 16]);
    let x = b.conv("c1", "input", 8, 3, 1, 1, false).unwrap();
    let x = b.bn2d("bn1", &x).unwrap();
    let y = b.relu("r1", &x).unwrap();
    let z = b.conv("c2", &y, 8, 3, 1, 1, true).unwrap();
    let s = b.add_all("add", &[&x, &z]).unwrap();
    let c = b.concat("cat", &[&s, &y]).unwrap();
    let p = b.max_pool("pool", &c, 2, 2, 0).unwrap();
    let p = b.adaptive_avg_pool("gap", &p, 2, 2).unwrap();
    let f = b.flatten("flat", &p).unwrap();
    let f = b.linear("fc1", &f, 12, true).unwrap();
    let f = b.dropout("drop", &f, 0.1).unwrap();
    b.linear("fc2", &f, 3, true).unwrap();
    b.finish().unwrap()
}

#[test]
fn the_cases_that_used_to_wrap_or_abort_are_errors() {
    // padding = 2^63 wrapped into a wrong shape; huge channel counts overflowed MACs.
    let pad = "name = \"x\"\n[[nodes]]\nname = \"input\"\nop = { type = \"input\", shape = [3, 8, 8] }\n[[nodes]]\nname = \"c\"\nop = { type = \"conv2d\", in_channels = 3, out_channels = 4, kernel_size = 3, padding = 9223372036854775808 }\n";
    let e = Graph::from_toml_str(pad).unwrap_err().to_string();
    assert!(e.contains("padding") && e.contains("node 'c'"), "{e}");
    let big = "name = \"x\"\n[[nodes]]\nname = \"input\"\nop = { type = \"input\", shape = [3, 8, 8] }\n[[nodes]]\nname = \"c\"\nop = { type = \"conv2d\", in_channels = 3, out_channels = 4000000000000, kernel_size = 3 }\n";
    let e = Graph::from_toml_str(big).unwrap_err().to_string();
    assert!(e.contains("node 'c'") && e.contains("too large"), "{e}");
    let unknown = "name = \"x\"\n[[nodes]]\nname = \"input\"\nop = { type = \"input\", shape = [3] }\n[[nodes]]\nname = \"g\"\nop = { type = \"channel_magic\" }\n";
    let e = Graph::from_toml_str(unknown).unwrap_err().to_string();
    assert!(
        e.contains("channel_magic")
            && e.contains("hard_swish")
            && e.contains("conv2d")
            && e.contains("batch_norm2d"),
        "{e}"
    );
}

#[test]
fn oversized_and_special_graph_files_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    // A sparse 300 MiB file: over the 256 MiB limit, costs no disk.
    let huge = dir.path().join("huge.toml");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let e = Graph::load(&huge).unwrap_err().to_string();
    assert!(
        e.contains("huge.toml") && e.contains("more than a graph file"),
        "{e}"
    );
    let e = Graph::load(std::path::Path::new("/dev/zero"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("character device") && e.contains("expected a graph file"),
        "{e}"
    );
}
