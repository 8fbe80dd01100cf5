//! What a small file can make the importer allocate, measured as the growth of the process's
//! peak resident memory (Linux: `VmHWM`, reset through `/proc/self/clear_refs`). The cases
//! run one after the other in one test, so that no other test's memory is counted.

use fair_onnx::OnnxError;
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::{DataLocation, DataType};
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};
use protobuf::{EnumOrUnknown, MessageField};

const MIB: u64 = 1 << 20;

/// A float input or output `[N, features]`.
fn features(name: &str, features: i64) -> ValueInfoProto {
    let dim = |v: dimension::Value| Dimension {
        value: Some(v),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.into(),
        type_: MessageField::some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::FLOAT as i32,
                shape: MessageField::some(TensorShapeProto {
                    dim: vec![
                        dim(dimension::Value::DimParam("N".into())),
                        dim(dimension::Value::DimValue(features)),
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        type_: EnumOrUnknown::new(AttributeType::INT),
        i: v,
        ..Default::default()
    }
}

fn int64s(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: vec![v.len() as i64],
        data_type: DataType::INT64 as i32,
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

/// `nodes` and `initializers`, then `Relu(from)` → y: input x [N, `width`], output
/// [N, `width`].
fn model(
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    from: &str,
    width: i64,
) -> ModelProto {
    let mut node_list = nodes;
    node_list.push(node("Relu", "/act", &[from], "y"));
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            version: 17,
            ..Default::default()
        }],
        graph: MessageField::some(GraphProto {
            name: "probe".into(),
            node: node_list,
            initializer: initializers,
            input: vec![features("x", width)],
            output: vec![features("y", width)],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The growth of the peak resident memory while `f` runs, in bytes (`None` where
/// `/proc/self` cannot reset and report it).
fn peak_growth<T>(f: impl FnOnce() -> T) -> (T, Option<u64>) {
    let field = |key: &str| -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with(key))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = field("VmRSS:");
    let out = f();
    let growth = match (reset, before, field("VmHWM:")) {
        (true, Some(b), Some(p)) => Some(p.saturating_sub(b)),
        _ => None,
    };
    (out, growth)
}

/// Asserts that `growth` (when measured) is below `limit`, and reports it.
fn check_peak(what: &str, growth: Option<u64>, limit: u64) {
    let Some(g) = growth else {
        eprintln!("{what}: peak memory not measured (no /proc/self/clear_refs)");
        return;
    };
    eprintln!("{what}: the peak resident memory grew by {} MiB", g / MIB);
    assert!(
        g < limit,
        "{what}: the peak resident memory grew by {} MiB, more than {} MiB",
        g / MIB,
        limit / MIB
    );
}

#[test]
fn small_files_cannot_make_the_importer_allocate_gigabytes() {
    // Four int64 ConstantOfShape of 2^26 zeros (a file of about a kilobyte): each takes
    // 1 GiB in memory (16 bytes an element), so the first is refused before it is built.
    let inits = vec![int64s("size", &[1 << 26])];
    let mut nodes = Vec::new();
    for k in 0..4 {
        let mut fill = node(
            "ConstantOfShape",
            &format!("/fill{k}"),
            &["size"],
            &format!("f{k}"),
        );
        fill.attribute.push(AttributeProto {
            name: "value".into(),
            type_: EnumOrUnknown::new(AttributeType::TENSOR),
            t: MessageField::some(int64s("", &[0])),
            ..Default::default()
        });
        nodes.push(fill);
    }
    let bytes = model(nodes, inits, "x", 4).write_to_bytes().unwrap();
    assert!(bytes.len() < 1024, "{} bytes", bytes.len());
    let (r, growth) = peak_growth(|| fair_onnx::import(&bytes));
    let e = r.unwrap_err();
    assert!(
        matches!(&e, OnnxError::Node { node, .. } if node == "/fill0")
            && e.to_string().contains("MAX_FOLDED_BYTES"),
        "{e}"
    );
    check_peak("int64 ConstantOfShape", growth, 64 * MIB);

    // Two million empty nodes (4 MB): decoding makes a struct of about 230 bytes for each
    // 2-byte message (about 450 MB), so the file is refused from its wire format before it is
    // decoded.
    let mut graph = Vec::new();
    for _ in 0..2_000_000 {
        graph.extend([0x0a, 0x00]);
    }
    let mut bytes = vec![0x3a];
    let mut len = graph.len();
    while len >= 0x80 {
        bytes.push(len as u8 | 0x80);
        len >>= 7;
    }
    bytes.push(len as u8);
    bytes.extend(graph);
    let (r, growth) = peak_growth(|| fair_onnx::import(&bytes));
    let e = r.unwrap_err();
    assert!(
        matches!(&e, OnnxError::Model { .. }) && e.to_string().contains("tiny protobuf messages"),
        "{e}"
    );
    check_peak("two million empty nodes", growth, 64 * MIB);
    assert_eq!(
        ModelProto::parse_from_bytes(&bytes)
            .unwrap()
            .graph
            .node
            .len(),
        2_000_000,
        "the file is a valid ModelProto"
    );

    // An initializer of 2^27 floats (a sparse 512 MiB external data file) read through four
    // Identity nodes: decoded once, in blocks (no second buffer of its bytes), and shared by
    // the Identity nodes, not copied.
    let dir = tempfile::tempdir().unwrap();
    let n = 1i64 << 27;
    std::fs::File::create(dir.path().join("big.bin"))
        .unwrap()
        .set_len(4 * n as u64)
        .unwrap();
    let big = TensorProto {
        name: "big".into(),
        dims: vec![n],
        data_type: DataType::FLOAT as i32,
        data_location: EnumOrUnknown::new(DataLocation::EXTERNAL),
        external_data: vec![StringStringEntryProto {
            key: "location".into(),
            value: "big.bin".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let ids = (0..4)
        .map(|k| {
            let from = if k == 0 {
                "big".to_owned()
            } else {
                format!("i{}", k - 1)
            };
            node("Identity", &format!("/id{k}"), &[&from], &format!("i{k}"))
        })
        .collect();
    let path = dir.path().join("m.onnx");
    std::fs::write(
        &path,
        model(ids, vec![big], "x", 4).write_to_bytes().unwrap(),
    )
    .unwrap();
    let (r, growth) = peak_growth(|| fair_onnx::import_file(&path));
    r.unwrap();
    check_peak("Identity of a 512 MiB initializer", growth, 640 * MIB);

    // One 16 MiB weight read by 100 Gemm layers: each layer gets its own copy, and the
    // copies beyond the first are paid for from the budget, so the 66th is refused (64
    // copies fill 1 GiB) instead of 1.6 GB of copies being made.
    let w = 2048i64;
    let weight = TensorProto {
        name: "w".into(),
        dims: vec![w, w],
        data_type: DataType::FLOAT as i32,
        float_data: vec![0.01; (w * w) as usize],
        ..Default::default()
    };
    let gemms = (0..100)
        .map(|k| {
            let from = if k == 0 {
                "x".to_owned()
            } else {
                format!("g{}", k - 1)
            };
            let mut g = node(
                "Gemm",
                &format!("/gemm{k}"),
                &[&from, "w"],
                &format!("g{k}"),
            );
            g.attribute.push(int_attr("transB", 1));
            g
        })
        .collect();
    let bytes = model(gemms, vec![weight], "g99", w)
        .write_to_bytes()
        .unwrap();
    let (r, growth) = peak_growth(|| fair_onnx::import(&bytes));
    let e = r.unwrap_err();
    assert!(
        matches!(&e, OnnxError::Node { node, .. } if node == "/gemm65")
            && e.to_string().contains("MAX_FOLDED_BYTES"),
        "{e}"
    );
    check_peak(
        "a weight shared by 100 layers",
        growth,
        1024 * MIB + 256 * MIB,
    );
}
