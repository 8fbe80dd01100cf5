//! ONNX export bytes do not change: every op's example (alone after the input, at opsets 14,
//! 17, 20 and 23), a few cases the examples miss (adaptive pooling that is not a plain
//! window, a three-input sum, fresh names that collide with node names) and every committed
//! fixture are exported, and a 64-bit FNV-1a hash of each export (or its error message) is
//! compared with `fixtures/export_golden.txt`. The golden file was written by the exporter
//! as it was before op emission moved into the op contracts (one hand-written match in
//! `export.rs`); it changes only when an export is meant to change. Regenerate it with
//! `FAIR_UPDATE_GOLDEN=1 cargo test -p fair-onnx --test golden` and review the diff.

mod common;
use common::tensors_for;

use std::path::Path;

use fair_ir::{Graph, Input, Node, Op};
use fair_onnx::ExportOptions;

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn node(name: &str, inputs: &[&str], op: Op) -> Node {
    Node {
        name: name.into(),
        inputs: inputs.iter().map(|s| (*s).to_owned()).collect(),
        op,
    }
}

/// `op` alone after the input, reading it `readers` times.
fn one_op(op: Op, shape: Vec<usize>, readers: usize) -> Graph {
    Graph::new(
        "one-op",
        vec![
            node("input", &[], Input::new(shape).into()),
            node("layer", &vec!["input"; readers], op),
        ],
    )
    .unwrap()
}

fn record(lines: &mut Vec<String>, case: &str, g: &Graph, opset: i64) {
    let t = tensors_for(g);
    let line = match fair_onnx::export(g, &t, &ExportOptions { opset }) {
        Ok(bytes) => format!("{case} opset {opset}: {:016x}", fnv1a(&bytes)),
        Err(e) => format!("{case} opset {opset}: error {e}"),
    };
    lines.push(line);
}

fn cases() -> Vec<String> {
    let mut lines = Vec::new();
    for (i, (op, inputs)) in fair_ir::examples().into_iter().enumerate() {
        if inputs.is_empty() {
            continue;
        }
        // Ops with inputs of different shapes read one input twice; the first shape decides.
        let g = one_op(op.clone(), inputs[0].clone(), inputs.len());
        for opset in [14, 17, 20, 23] {
            record(
                &mut lines,
                &format!("example {i} {}", op.type_name()),
                &g,
                opset,
            );
        }
    }
    let extra: Vec<(&str, Graph)> = vec![
        (
            "adaptive 6x6 to 3x3 (a window)",
            one_op(
                fair_ir::AdaptiveAvgPool2d {
                    output_size: fair_ir::Pair(3, 3),
                }
                .into(),
                vec![2, 6, 6],
                1,
            ),
        ),
        (
            "adaptive 6x5 to 4x3 (matrices)",
            one_op(
                fair_ir::AdaptiveAvgPool2d {
                    output_size: fair_ir::Pair(4, 3),
                }
                .into(),
                vec![2, 6, 5],
                1,
            ),
        ),
        (
            "three-input sum",
            one_op(fair_ir::Add {}.into(), vec![2, 3, 3], 3),
        ),
        (
            "colliding names",
            Graph::new(
                "collide",
                vec![
                    node("input", &[], Input::new(vec![4, 6, 6]).into()),
                    node("c", &["input"], fair_ir::Clip { min: 0.0, max: 6.0 }.into()),
                    node("c.min", &["c"], fair_ir::Silu {}.into()),
                    node("c.min.sigmoid", &["c.min"], fair_ir::Gelu::default().into()),
                    node(
                        "c.min.sigmoid.1",
                        &["c.min.sigmoid"],
                        fair_ir::LayerNorm2d {
                            affine: false,
                            ..fair_ir::LayerNorm2d::new(4)
                        }
                        .into(),
                    ),
                    node(
                        "s",
                        &["c.min.sigmoid.1"],
                        fair_ir::ChannelShuffle { groups: 2 }.into(),
                    ),
                    node(
                        "s.grouped",
                        &["s"],
                        fair_ir::Slice { start: 1, end: 3 }.into(),
                    ),
                    node("output", &["s.grouped", "input"], fair_ir::Concat {}.into()),
                ],
            )
            .unwrap(),
        ),
    ];
    for (case, g) in &extra {
        for opset in [17, 20] {
            record(&mut lines, case, g, opset);
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    for path in files {
        let m = fair_onnx::import_file(&path).unwrap();
        let case = path.file_name().unwrap().to_string_lossy().into_owned();
        for opset in [17, 20] {
            let line = match fair_onnx::export(&m.graph, &m.tensors, &ExportOptions { opset }) {
                Ok(bytes) => format!("{case} opset {opset}: {:016x}", fnv1a(&bytes)),
                Err(e) => format!("{case} opset {opset}: error {e}"),
            };
            lines.push(line);
        }
    }
    lines
}

#[test]
fn export_bytes_match_the_golden_hashes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/export_golden.txt");
    let now = cases().join("\n") + "\n";
    if std::env::var_os("FAIR_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &now).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap();
    for (a, b) in golden.lines().zip(now.lines()) {
        assert_eq!(b, a, "export bytes changed (left: now, right: golden)");
    }
    assert_eq!(now.lines().count(), golden.lines().count());
}
