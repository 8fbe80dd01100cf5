//! The importer's and exporter's documented errors, on models built here message by message.

mod common;
use common::tensors_for;

use fair_ir::{Graph, GraphBuilder, Input, Node, Op};
use fair_onnx::{ExportOptions, ImportOptions, OnnxError, Tensor};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};
use protobuf::{EnumOrUnknown, MessageField};

fn dim(d: &str) -> Dimension {
    Dimension {
        value: Some(match d.parse::<i64>() {
            Ok(v) => dimension::Value::DimValue(v),
            Err(_) => dimension::Value::DimParam(d.to_owned()),
        }),
        ..Default::default()
    }
}

fn value(name: &str, dims: &[&str]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_owned(),
        type_: MessageField::some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: DataType::FLOAT as i32,
                shape: MessageField::some(TensorShapeProto {
                    dim: dims.iter().map(|d| dim(d)).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn floats(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_owned(),
        dims: dims.to_vec(),
        data_type: DataType::FLOAT as i32,
        float_data: v.to_vec(),
        ..Default::default()
    }
}

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        type_: EnumOrUnknown::new(AttributeType::INTS),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: op.to_owned(),
        name: name.to_owned(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_owned()],
        ..Default::default()
    }
}

/// x [N, 3, 8, 8] → Conv (4 filters, 3×3, pad 1) → Relu → y [N, 4, 8, 8].
fn model() -> ModelProto {
    let mut conv = node(
        "Conv",
        "/stem/Conv",
        &["x", "stem.weight", "stem.bias"],
        "c",
    );
    conv.attribute.push(ints_attr("pads", &[1, 1, 1, 1]));
    conv.attribute.push(ints_attr("kernel_shape", &[3, 3]));
    let graph = GraphProto {
        name: "tiny".to_owned(),
        node: vec![conv, node("Relu", "/act/Relu", &["c"], "y")],
        initializer: vec![
            floats("stem.weight", &[4, 3, 3, 3], &[0.1; 108]),
            floats("stem.bias", &[4], &[0.5; 4]),
        ],
        input: vec![value("x", &["N", "3", "8", "8"])],
        output: vec![value("y", &["N", "4", "8", "8"])],
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            version: 17,
            ..Default::default()
        }],
        graph: MessageField::some(graph),
        ..Default::default()
    }
}

fn import(m: &ModelProto) -> Result<fair_onnx::Imported, OnnxError> {
    fair_onnx::import(&m.write_to_bytes().unwrap())
}

fn graph(m: &mut ModelProto) -> &mut GraphProto {
    m.graph.as_mut().unwrap()
}

#[test]
fn the_base_model_imports() {
    let m = import(&model()).unwrap();
    assert_eq!(m.graph.name(), "tiny");
    let names: Vec<&str> = m.graph.nodes().iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["input", "stem", "act"]);
    assert_eq!(m.graph.param_count(), 108 + 4);
    assert_eq!(m.graph.shape("act").unwrap(), &[4, 8, 8]);
}

#[test]
fn malformed_bytes_are_a_decode_error() {
    let e = fair_onnx::import(b"\x0a\xff\xff\xff\xff\xff").unwrap_err();
    assert!(matches!(e, OnnxError::Decode { .. }), "{e}");
    assert!(
        e.to_string().contains("cannot decode the ONNX model"),
        "{e}"
    );
}

#[test]
fn an_unsupported_op_names_the_op_the_node_and_the_supported_ops() {
    let mut m = model();
    graph(&mut m).node[1].op_type = "LeakyRelu".into();
    let e = import(&m).unwrap_err();
    match &e {
        OnnxError::UnsupportedOp {
            node,
            op_type,
            supported,
            ..
        } => {
            assert_eq!(
                (node.as_str(), op_type.as_str()),
                ("/act/Relu", "LeakyRelu")
            );
            assert!(supported.contains(&"Conv") && supported.contains(&"Relu"));
        }
        other => panic!("{other}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("LeakyRelu")
            && text.contains("/act/Relu")
            && text.contains("BatchNormalization"),
        "{text}"
    );
    // Ops of other domains are unsupported too, and say so.
    let mut m = model();
    graph(&mut m).node[1].domain = "com.microsoft".into();
    let text = import(&m).unwrap_err().to_string();
    assert!(text.contains("com.microsoft"), "{text}");
}

#[test]
fn a_missing_initializer_names_the_node_and_the_value() {
    let mut m = model();
    graph(&mut m).initializer.remove(0);
    match import(&m).unwrap_err() {
        OnnxError::MissingInput {
            node,
            op_type,
            input,
        } => assert_eq!(
            (node.as_str(), op_type.as_str(), input.as_str()),
            ("/stem/Conv", "Conv", "stem.weight")
        ),
        other => panic!("{other}"),
    }
}

#[test]
fn bad_tensor_data_names_the_initializer() {
    // Too few values for the shape.
    let mut m = model();
    graph(&mut m).initializer[1].float_data.pop();
    let e = import(&m).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Initializer { name, .. } if name == "stem.bias"),
        "{e}"
    );
    // Raw data of the wrong length.
    let mut m = model();
    let t = &mut graph(&mut m).initializer[1];
    t.float_data.clear();
    t.raw_data = vec![0; 15];
    let e = import(&m).unwrap_err();
    assert!(e.to_string().contains("16 bytes"), "{e}");
    // Unsupported data type.
    let mut m = model();
    graph(&mut m).initializer[0].data_type = DataType::COMPLEX64 as i32;
    let e = import(&m).unwrap_err();
    assert!(e.to_string().contains("COMPLEX64"), "{e}");
    // Integer weights where floats are needed.
    let mut m = model();
    let t = &mut graph(&mut m).initializer[1];
    t.float_data.clear();
    t.data_type = DataType::INT64 as i32;
    t.int64_data = vec![1; 4];
    let e = import(&m).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Node { node, .. } if node == "/stem/Conv"),
        "{e}"
    );
    assert!(e.to_string().contains("float32"), "{e}");
    // External data needs the model's directory.
    let mut m = model();
    let t = &mut graph(&mut m).initializer[1];
    t.float_data.clear();
    t.data_location = EnumOrUnknown::new(onnx_protobuf::tensor_proto::DataLocation::EXTERNAL);
    t.external_data.push(onnx_protobuf::StringStringEntryProto {
        key: "location".into(),
        value: "../../etc/passwd".into(),
        ..Default::default()
    });
    let e = import(&m).unwrap_err();
    assert!(e.to_string().contains("import_file"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, m.write_to_bytes().unwrap()).unwrap();
    let e = fair_onnx::import_file(&path).unwrap_err();
    assert!(e.to_string().contains("relative path inside"), "{e}");
}

#[test]
fn external_data_is_read_next_to_the_model() {
    let mut m = model();
    let t = &mut graph(&mut m).initializer[1];
    t.float_data.clear();
    t.data_location = EnumOrUnknown::new(onnx_protobuf::tensor_proto::DataLocation::EXTERNAL);
    for (k, v) in [("location", "w.bin"), ("offset", "4"), ("length", "16")] {
        t.external_data.push(onnx_protobuf::StringStringEntryProto {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let mut data = vec![9u8; 4];
    for v in [1.0f32, 2.0, 3.0, 4.0] {
        data.extend(v.to_le_bytes());
    }
    std::fs::write(dir.path().join("w.bin"), &data).unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, m.write_to_bytes().unwrap()).unwrap();
    let imported = fair_onnx::import_file(&path).unwrap();
    assert_eq!(
        imported.tensors[1].data,
        fair_onnx::TensorData::F32(vec![1.0, 2.0, 3.0, 4.0])
    );
    // Too short a file is an error naming the initializer.
    std::fs::write(dir.path().join("w.bin"), &data[..12]).unwrap();
    let e = fair_onnx::import_file(&path).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Initializer { name, .. } if name == "stem.bias"),
        "{e}"
    );
}

#[test]
fn attributes_the_ir_cannot_express_are_named() {
    let mut m = model();
    graph(&mut m).node[0].attribute[0] = ints_attr("pads", &[0, 0, 1, 1]);
    let e = import(&m).unwrap_err();
    match &e {
        OnnxError::Attribute {
            node, attribute, ..
        } => assert_eq!((node.as_str(), attribute.as_str()), ("/stem/Conv", "pads")),
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("asymmetric"), "{e}");
    // A kernel_shape that disagrees with the weight.
    let mut m = model();
    graph(&mut m).node[0].attribute[1] = ints_attr("kernel_shape", &[5, 5]);
    let e = import(&m).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Attribute { attribute, .. } if attribute == "kernel_shape"),
        "{e}"
    );
    // An attribute of the wrong type.
    let mut m = model();
    graph(&mut m).node[0].attribute.push(AttributeProto {
        name: "group".into(),
        type_: EnumOrUnknown::new(AttributeType::FLOAT),
        f: 1.0,
        ..Default::default()
    });
    let e = import(&m).unwrap_err();
    assert!(
        e.to_string().contains("group") && e.to_string().contains("INT"),
        "{e}"
    );
    // An unknown attribute.
    let mut m = model();
    graph(&mut m).node[1]
        .attribute
        .push(ints_attr("mystery", &[1]));
    let e = import(&m).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Attribute { attribute, .. } if attribute == "mystery"),
        "{e}"
    );
}

#[test]
fn shapes_that_disagree_with_the_irs_inference_are_errors() {
    // A weight for 5 input channels on a 3-channel input.
    let mut m = model();
    graph(&mut m).initializer[0] = floats("stem.weight", &[4, 5, 3, 3], &[0.1; 180]);
    graph(&mut m).node[0].attribute.remove(1);
    let e = import(&m).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Node { node, .. } if node == "/stem/Conv"),
        "{e}"
    );
    // A bias of the wrong length.
    let mut m = model();
    graph(&mut m).initializer[1] = floats("stem.bias", &[3], &[0.5; 3]);
    let e = import(&m).unwrap_err();
    assert!(e.to_string().contains("bias"), "{e}");
    // An output declared with a different shape than the graph computes.
    let mut m = model();
    graph(&mut m).output[0] = value("y", &["N", "4", "7", "8"]);
    let e = import(&m).unwrap_err();
    assert!(matches!(e, OnnxError::Model { .. }), "{e}");
    assert!(e.to_string().contains("[4, 8, 8]"), "{e}");
}

#[test]
fn inputs_and_outputs_must_be_one_each_with_fixed_sizes() {
    let mut m = model();
    graph(&mut m).input.push(value("z", &["1", "3"]));
    let e = import(&m).unwrap_err();
    assert!(
        matches!(e, OnnxError::Model { .. }) && e.to_string().contains("'z'"),
        "{e}"
    );
    let mut m = model();
    graph(&mut m).output.push(value("c", &["N", "4", "8", "8"]));
    let e = import(&m).unwrap_err();
    assert!(e.to_string().contains("exactly one output"), "{e}");
    // Symbolic spatial sizes need an explicit input shape.
    let mut m = model();
    graph(&mut m).input[0] = value("x", &["N", "3", "H", "W"]);
    graph(&mut m).output.clear();
    graph(&mut m).output.push(value("y", &["N", "4", "H", "W"]));
    let e = import(&m).unwrap_err();
    assert!(
        e.to_string().contains("'H'") && e.to_string().contains("input_shape"),
        "{e}"
    );
    let options = ImportOptions {
        input_shape: Some(vec![3, 10, 10]),
        ..Default::default()
    };
    let ok = fair_onnx::import_with(&m.write_to_bytes().unwrap(), &options).unwrap();
    assert_eq!(ok.graph.shape("act").unwrap(), &[4, 10, 10]);
    // A graph without the opset of the default domain.
    let mut m = model();
    m.opset_import.clear();
    assert!(matches!(import(&m).unwrap_err(), OnnxError::Model { .. }));
    // No graph at all.
    let m = ModelProto::default();
    assert!(import(&m).unwrap_err().to_string().contains("no graph"));
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

#[test]
fn channel_shuffles_import_and_other_reshapes_are_refused_with_the_shapes() {
    // y [N, 4, 8, 8] → [N, 2, 2, 8, 8] → swap axes 1, 2 → [N, 4, 8, 8]: a shuffle of 2 groups.
    let mut m = model();
    let g = graph(&mut m);
    g.initializer.push(int64s("grouped", &[0, 2, 2, 8, 8]));
    g.initializer.push(int64s("back", &[0, -1, 8, 8]));
    g.node
        .push(node("Reshape", "group", &["y", "grouped"], "g"));
    let mut t = node("Transpose", "swap", &["g"], "t");
    t.attribute.push(ints_attr("perm", &[0, 2, 1, 3, 4]));
    g.node.push(t);
    g.node.push(node("Reshape", "shuffle", &["t", "back"], "z"));
    g.output[0] = value("z", &["N", "4", "8", "8"]);
    let imported = import(&m).unwrap();
    assert!(matches!(
        imported.graph.node("shuffle").unwrap().op,
        Op::ChannelShuffle(fair_ir::ChannelShuffle { groups: 2 })
    ));
    // Stopping half way leaves a regrouped output.
    let mut half = m.clone();
    graph(&mut half).node.truncate(3);
    graph(&mut half).output[0] = value("g", &["N", "2", "2", "8", "8"]);
    let e = import(&half).unwrap_err();
    assert!(e.to_string().contains("regrouped"), "{e}");
    // A reshape that mixes channels and rows is refused, naming the node and the shapes.
    let mut bad = model();
    let g = graph(&mut bad);
    g.initializer.push(int64s("shape", &[0, 8, 2, 16]));
    g.node.push(node("Reshape", "mix", &["y", "shape"], "z"));
    g.output[0] = value("z", &["N", "8", "2", "16"]);
    let e = import(&bad).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Node { node, .. } if node == "mix"),
        "{e}"
    );
    assert!(
        e.to_string().contains("[N, 4, 8, 8]") && e.to_string().contains("[0, 8, 2, 16]"),
        "{e}"
    );
}

#[test]
fn channel_splits_become_slices() {
    let mut m = model();
    let g = graph(&mut m);
    let mut split = node("Split", "chunk", &["y"], "a");
    split.output.push("b".into());
    split.attribute.push(AttributeProto {
        name: "axis".into(),
        type_: EnumOrUnknown::new(AttributeType::INT),
        i: 1,
        ..Default::default()
    });
    g.node.push(split);
    let mut cat = node("Concat", "cat", &["b", "a"], "z");
    cat.attribute.push(AttributeProto {
        name: "axis".into(),
        type_: EnumOrUnknown::new(AttributeType::INT),
        i: 1,
        ..Default::default()
    });
    g.node.push(cat);
    g.output[0] = value("z", &["N", "4", "8", "8"]);
    let imported = import(&m).unwrap();
    let slices: Vec<(usize, usize)> = imported
        .graph
        .nodes()
        .iter()
        .filter_map(|n| match &n.op {
            Op::Slice(s) => Some((s.start, s.end)),
            _ => None,
        })
        .collect();
    assert_eq!(slices, [(0, 2), (2, 4)]);
}

#[test]
fn shape_subgraphs_fold_into_a_flatten() {
    // y → Shape → Gather(0) → Unsqueeze → Concat([-1]) → Reshape(y, ·): a flatten.
    let mut m = model();
    let g = graph(&mut m);
    g.initializer.push(TensorProto {
        name: "zero".into(),
        data_type: DataType::INT64 as i32,
        int64_data: vec![0],
        ..Default::default()
    });
    g.initializer.push(TensorProto {
        name: "minus_one".into(),
        dims: vec![1],
        data_type: DataType::INT64 as i32,
        int64_data: vec![-1],
        ..Default::default()
    });
    g.initializer.push(TensorProto {
        name: "axes".into(),
        dims: vec![1],
        data_type: DataType::INT64 as i32,
        int64_data: vec![0],
        ..Default::default()
    });
    g.node.push(node("Shape", "shape", &["y"], "s"));
    let mut gather = node("Gather", "gather", &["s", "zero"], "b");
    gather.attribute.push(AttributeProto {
        name: "axis".into(),
        type_: EnumOrUnknown::new(AttributeType::INT),
        i: 0,
        ..Default::default()
    });
    g.node.push(gather);
    g.node
        .push(node("Unsqueeze", "unsqueeze", &["b", "axes"], "b1"));
    let mut concat = node("Concat", "concat", &["b1", "minus_one"], "target");
    concat.attribute.push(AttributeProto {
        name: "axis".into(),
        type_: EnumOrUnknown::new(AttributeType::INT),
        i: 0,
        ..Default::default()
    });
    g.node.push(concat);
    g.node.push(node("Reshape", "flat", &["y", "target"], "z"));
    g.output[0] = value("z", &["N", "256"]);
    let imported = import(&m).unwrap();
    let ops: Vec<&str> = imported
        .graph
        .nodes()
        .iter()
        .map(|n| n.op.type_name())
        .collect();
    assert_eq!(ops, ["input", "conv2d", "relu", "flatten"]);
    assert_eq!(imported.graph.shape("flat").unwrap(), &[256]);
}

#[test]
fn every_ir_op_exports_and_reads_back() {
    for (op, inputs) in fair_ir::examples() {
        if matches!(op, Op::Input(_)) {
            continue;
        }
        let shape = inputs[0].clone();
        let nodes = vec![
            Node {
                name: "input".into(),
                inputs: vec![],
                op: Input::new(shape).into(),
            },
            Node {
                name: "layer".into(),
                inputs: vec!["input".into(); inputs.len()],
                op: op.clone(),
            },
        ];
        let g = Graph::new("one-op", nodes).unwrap();
        let t = tensors_for(&g);
        let opset = if matches!(op, Op::Gelu(_)) { 20 } else { 17 };
        let bytes = fair_onnx::export(&g, &t, &ExportOptions { opset })
            .unwrap_or_else(|e| panic!("{}: {e}", op.type_name()));
        // fair-pruner writes Swin Transformer's window ops as token gathers and windowed
        // attention with its bias and mask as initializers; import reads torchvision's
        // spelling of them (swin.rs), not these: it refuses them, naming the node.
        let not_read_back = matches!(
            &op,
            Op::WindowPartition(_)
                | Op::WindowMerge(_)
                | Op::GridStride(_)
                | Op::WindowTranspose(_)
        ) || matches!(&op, Op::Attention(a) if !a.is_plain());
        if not_read_back {
            let e = fair_onnx::import(&bytes).unwrap_err().to_string();
            assert!(
                ["(Pad)", "(Gather)", "(Reshape)"]
                    .iter()
                    .any(|o| e.contains(o)),
                "{}: {e}",
                op.type_name()
            );
            continue;
        }
        let back = fair_onnx::import(&bytes).unwrap_or_else(|e| panic!("{}: {e}", op.type_name()));
        if matches!(op, Op::Dropout(_)) {
            // Dropout is written as Identity, which import removes.
            assert_eq!(back.graph.nodes().len(), 1);
            continue;
        }
        assert_eq!(back.graph, g, "{}", op.type_name());
        // num_batches_tracked is not stored in ONNX: it reads back as 0.
        for (a, b) in t.iter().zip(&back.tensors) {
            if a.name.ends_with("num_batches_tracked") {
                assert_eq!(b.data, fair_onnx::TensorData::I64(vec![0]));
            } else {
                assert_eq!(a, b, "{}", op.type_name());
            }
        }
    }
}

#[test]
fn gelu_below_opset_20_is_written_as_its_formula() {
    for approximate in ["none", "tanh"] {
        let mut b = GraphBuilder::new("g", "input", vec![4]);
        b.add(
            "gelu",
            fair_ir::Gelu {
                approximate: approximate.into(),
            }
            .into(),
            &["input"],
        )
        .unwrap();
        let g = b.finish().unwrap();
        let bytes = fair_onnx::export(&g, &[], &ExportOptions::default()).unwrap();
        let m = ModelProto::parse_from_bytes(&bytes).unwrap();
        let ops: Vec<&str> = m.graph.node.iter().map(|n| n.op_type.as_str()).collect();
        assert!(
            ops.contains(&if approximate == "tanh" { "Tanh" } else { "Erf" }),
            "{ops:?}"
        );
        assert!(!ops.contains(&"Gelu"));
        // The formula reads back as gelu.
        if approximate == "none" {
            assert_eq!(fair_onnx::import(&bytes).unwrap().graph, g);
        }
    }
}

#[test]
fn metadata_carries_the_name_and_the_normalisation() {
    let nodes = vec![
        Node {
            name: "input".into(),
            inputs: vec![],
            op: Input::new(vec![3, 4, 4])
                .with_normalization(vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225])
                .into(),
        },
        Node {
            name: "relu".into(),
            inputs: vec!["input".into()],
            op: fair_ir::Relu {}.into(),
        },
    ];
    let g = Graph::new("normalised", nodes).unwrap();
    let bytes = fair_onnx::export(&g, &[], &ExportOptions::default()).unwrap();
    let m = ModelProto::parse_from_bytes(&bytes).unwrap();
    assert_eq!(m.ir_version, 8);
    assert_eq!(m.opset_import[0].version, 17);
    let meta = |k: &str| {
        m.metadata_props
            .iter()
            .find(|p| p.key == k)
            .map(|p| p.value.clone())
    };
    assert_eq!(meta("fair_pruner.name").as_deref(), Some("normalised"));
    assert_eq!(
        meta("fair_pruner.mean").as_deref(),
        Some("[0.485,0.456,0.406]")
    );
    let gp = m.graph.as_ref().unwrap();
    assert_eq!(
        (gp.input[0].name.as_str(), gp.output[0].name.as_str()),
        ("input", "output")
    );
    let back = fair_onnx::import(&bytes).unwrap();
    assert_eq!(back.graph, g);
    // Unparseable metadata is an error naming the key.
    let mut m = m;
    m.metadata_props
        .iter_mut()
        .find(|p| p.key == "fair_pruner.std")
        .unwrap()
        .value = "[0.2, oops]".into();
    let e = import(&m).unwrap_err();
    assert!(e.to_string().contains("fair_pruner.std"), "{e}");
}

#[test]
fn export_checks_the_tensors_against_the_graph() {
    let mut b = GraphBuilder::new("t", "input", vec![3, 4, 4]);
    b.conv("conv", "input", 2, 3, 1, 1, true).unwrap();
    let g = b.finish().unwrap();
    let mut t = tensors_for(&g);
    t[0].shape = vec![2, 3, 3, 2];
    let e = fair_onnx::export(&g, &t, &ExportOptions::default()).unwrap_err();
    assert!(
        matches!(&e, OnnxError::TensorShape { name, .. } if name == "conv.weight"),
        "{e}"
    );
    let t = tensors_for(&g);
    let e = fair_onnx::export(&g, &t[..1], &ExportOptions::default()).unwrap_err();
    assert!(
        matches!(&e, OnnxError::MissingTensor { name } if name == "conv.bias"),
        "{e}"
    );
    let mut t = tensors_for(&g);
    t[1].data = fair_onnx::TensorData::F32(vec![1.0]);
    let e = fair_onnx::export(&g, &t, &ExportOptions::default()).unwrap_err();
    assert!(matches!(&e, OnnxError::TensorData { .. }), "{e}");
    let e = fair_onnx::export(&g, &tensors_for(&g), &ExportOptions { opset: 9 }).unwrap_err();
    assert!(e.to_string().contains("opset 9"), "{e}");
}

#[test]
fn empty_tensors_with_huge_sizes_and_folds_of_them_are_errors_not_panics() {
    // [0, 2^40, 2^40] holds no element, but indexing over it overflows or allocates
    // terabytes: refused when decoded (here for a Transpose that folds it).
    let mut m = model();
    let g = graph(&mut m);
    g.initializer
        .push(floats("huge", &[0, 1 << 40, 1 << 40], &[]));
    g.node.insert(0, node("Transpose", "/t", &["huge"], "t"));
    let e = import(&m).unwrap_err();
    assert!(e.to_string().contains("too large"), "{e}");
    // A folded Slice of a constant larger than any folded constant may be (2^26 elements)
    // builds only its output (here one element), and a folded copy of all of it is refused
    // before it is built.
    let mut m = model();
    let g = graph(&mut m);
    g.initializer.push(int64s("starts", &[0]));
    g.initializer.push(int64s("ends", &[1]));
    g.initializer.push(TensorProto {
        name: "big".into(),
        dims: vec![(1 << 26) + 1],
        data_type: DataType::FLOAT as i32,
        raw_data: vec![0; 4 << 26 | 4],
        ..Default::default()
    });
    g.node
        .insert(0, node("Slice", "/slice", &["big", "starts", "ends"], "s"));
    assert!(import(&m).is_ok());
    graph(&mut m).node[0] = node("Slice", "/slice", &["big", "starts", "big_end"], "s");
    let n = (1i64 << 26) + 1;
    graph(&mut m).initializer.push(int64s("big_end", &[n]));
    let e = import(&m).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Node { node, .. } if node == "/slice")
            && e.to_string().contains("too large to fold"),
        "{e}"
    );
}

#[test]
fn export_refuses_duplicate_and_integer_parameters() {
    let g = Graph::from_toml_str(
        r#"
        name = "fc"
        [[nodes]]
        name = "input"
        op = { type = "input", shape = [3] }
        [[nodes]]
        name = "fc"
        op = { type = "linear", in_features = 3, out_features = 2 }
        "#,
    )
    .unwrap();
    let good = tensors_for(&g);
    assert!(fair_onnx::export(&g, &good, &ExportOptions::default()).is_ok());
    let mut twice = good.clone();
    twice.push(Tensor::f32("fc.weight", vec![1], vec![0.0]));
    let e = fair_onnx::export(&g, &twice, &ExportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("given twice"), "{e}");
    let mut ints = good.clone();
    ints[0] = Tensor::i64("fc.weight", vec![2, 3], vec![0; 6]);
    let e = fair_onnx::export(&g, &ints, &ExportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("float32"), "{e}");
}

#[test]
fn a_bias_is_folded_only_when_nothing_else_reads_the_layer() {
    // Conv without bias → Identity → Add(bias): the Add becomes the conv's bias.
    let biased = |also_read_before_bias: bool| {
        let mut m = model();
        let g = graph(&mut m);
        g.node[0].input.truncate(2);
        g.initializer.retain(|t| t.name != "stem.bias");
        g.initializer.push(floats("b", &[4, 1, 1], &[0.5; 4]));
        g.node[1] = node("Identity", "/alias", &["c"], "c2");
        g.node.push(node("Add", "/bias", &["c2", "b"], "cb"));
        if also_read_before_bias {
            // ...and the conv's output without the bias is used as well.
            g.node.push(node("Relu", "/plain", &["c"], "r"));
            g.node.push(node("Add", "/sum", &["cb", "r"], "y"));
        } else {
            g.node.push(node("Relu", "/act", &["cb"], "y"));
        }
        m
    };
    let ok = import(&biased(false)).unwrap();
    assert!(ok.tensors.iter().any(|t| t.name == "stem.bias"));
    let e = import(&biased(true)).unwrap_err();
    assert!(e.to_string().contains("before an Add"), "{e}");
}

#[test]
fn layer_scales_fold_into_the_layer_before_them_or_are_refused() {
    // c = Conv(x) → s = γ · c → Relu: γ [4, 1, 1] folds into the conv's weight and bias.
    let gamma = [0.5f32, 2.0, -1.0, 3.0];
    let mut m = model();
    let g = graph(&mut m);
    g.initializer.push(floats("gamma", &[4, 1, 1], &gamma));
    g.node[1] = node("Relu", "/act/Relu", &["s"], "y");
    g.node
        .insert(1, node("Mul", "/scale/Mul", &["gamma", "c"], "s"));
    let imported = import(&m).unwrap();
    let ops: Vec<&str> = imported
        .graph
        .nodes()
        .iter()
        .map(|n| n.op.type_name())
        .collect();
    assert_eq!(ops, ["input", "conv2d", "relu"]);
    let w = imported
        .tensors
        .iter()
        .find(|t| t.name == "stem.weight")
        .unwrap();
    let b = imported
        .tensors
        .iter()
        .find(|t| t.name == "stem.bias")
        .unwrap();
    let (fair_onnx::TensorData::F32(w), fair_onnx::TensorData::F32(b)) = (&w.data, &b.data) else {
        panic!("float tensors")
    };
    for (c, &g) in gamma.iter().enumerate() {
        assert!(
            w[c * 27..(c + 1) * 27].iter().all(|&v| v == 0.1 * g),
            "weight row {c}"
        );
        assert_eq!(b[c], 0.5 * g, "bias {c}");
    }
    // When the conv's output is also read elsewhere (here a residual Add), folding would change
    // that reader: an error naming the Mul and the other reader.
    let mut shared = m.clone();
    let g = graph(&mut shared);
    g.node[2] = node("Add", "/res/Add", &["s", "c"], "y");
    let e = import(&shared).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Node { node, .. } if node == "/scale/Mul"),
        "{e}"
    );
    assert!(
        e.to_string().contains("/res/Add") && e.to_string().contains("layer scale"),
        "{e}"
    );
    // A constant that is not per channel is refused with its shape.
    let mut bad = m.clone();
    graph(&mut bad).initializer[2] = floats("gamma", &[1, 8, 8], &[1.0; 64]);
    let e = import(&bad).unwrap_err();
    assert!(e.to_string().contains("[1, 8, 8]"), "{e}");
}

#[test]
fn channels_last_regions_become_channels_first_ops() {
    // y → Transpose [0, 2, 3, 1] → MatMul [4, 6] → Add [6] → Erf-formula GELU → Transpose back.
    let mut m = model();
    let g = graph(&mut m);
    let w: Vec<f32> = (0..24).map(|i| i as f32 * 0.1).collect();
    g.initializer.push(floats("mm", &[4, 6], &w));
    g.initializer.push(floats("fc.bias", &[6], &[0.25; 6]));
    g.initializer
        .push(floats("sqrt2", &[], &[std::f32::consts::SQRT_2]));
    g.initializer.push(floats("one", &[], &[1.0]));
    g.initializer.push(floats("half", &[], &[0.5]));
    let mut to_last = node("Transpose", "to_last", &["y"], "t");
    to_last.attribute.push(ints_attr("perm", &[0, 2, 3, 1]));
    g.node.push(to_last);
    g.node.push(node("MatMul", "/fc/MatMul", &["t", "mm"], "p"));
    g.node.push(node("Add", "/fc/Add", &["fc.bias", "p"], "q"));
    g.node.push(node("Div", "/gelu/Div", &["q", "sqrt2"], "d"));
    g.node.push(node("Erf", "/gelu/Erf", &["d"], "e"));
    g.node.push(node("Add", "/gelu/Add", &["e", "one"], "a"));
    g.node.push(node("Mul", "/gelu/Mul", &["half", "a"], "h"));
    g.node.push(node("Mul", "/gelu/Mul_1", &["q", "h"], "r"));
    let mut to_first = node("Transpose", "to_first", &["r"], "z");
    to_first.attribute.push(ints_attr("perm", &[0, 3, 1, 2]));
    g.node.push(to_first);
    g.output[0] = value("z", &["N", "6", "8", "8"]);
    let imported = import(&m).unwrap();
    let ops: Vec<&str> = imported
        .graph
        .nodes()
        .iter()
        .map(|n| n.op.type_name())
        .collect();
    assert_eq!(ops, ["input", "conv2d", "relu", "conv2d", "gelu"]);
    let fc = imported.graph.node("fc").unwrap();
    assert!(matches!(&fc.op, Op::Conv2d(c) if c.kernel_size == fair_ir::Pair(1, 1) && c.bias));
    // The 1×1 conv's weight [6, 4, 1, 1] is the matrix transposed.
    let t = imported
        .tensors
        .iter()
        .find(|t| t.name == "fc.weight")
        .unwrap();
    assert_eq!(t.shape, [6, 4, 1, 1]);
    let fair_onnx::TensorData::F32(v) = &t.data else {
        panic!()
    };
    assert_eq!(v[1], w[6], "row 0 of the conv is column 0 of the matrix");
    assert_eq!(
        imported.graph.shape("gelu").unwrap(),
        &[6, 8, 8],
        "named after the scope"
    );
    // Anything but a per-pixel op inside the region is an error naming it.
    let mut bad = m.clone();
    let g = graph(&mut bad);
    let mut flat = node("Flatten", "flat", &["t"], "f");
    flat.attribute.clear();
    g.node.insert(3, flat);
    g.node[4].input[0] = "f".into();
    let e = import(&bad).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Node { node, .. } if node == "flat")
            && e.to_string().contains("channels-last"),
        "{e}"
    );
}

#[test]
fn a_sigmoid_that_is_the_output_is_not_fused_into_silu() {
    // y = Sigmoid(c) is the graph's output; Mul(c, y) is computed but unused. Fusing the pair
    // would delete the output.
    let mut m = model();
    let g = graph(&mut m);
    g.node[1] = node("Sigmoid", "/gate", &["c"], "y");
    g.node.push(node("Mul", "/unused", &["c", "y"], "z"));
    // The unused Mul is dropped and the output stays the sigmoid.
    let imported = import(&m).unwrap();
    let out = imported.graph.output();
    assert!(matches!(out.op, Op::Sigmoid(_)), "the output is {out:?}");
}

// ---- hostile files (issue 29) ----

/// Stores `t` as external data with these `external_data` entries (location, offset, length).
fn make_external(t: &mut TensorProto, entries: &[(&str, &str)]) {
    t.float_data.clear();
    t.raw_data.clear();
    t.data_location = EnumOrUnknown::new(onnx_protobuf::tensor_proto::DataLocation::EXTERNAL);
    t.external_data = entries
        .iter()
        .map(|(k, v)| onnx_protobuf::StringStringEntryProto {
            key: (*k).into(),
            value: (*v).into(),
            ..Default::default()
        })
        .collect();
}

/// Little-endian float32 bytes.
fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `m` as `dir/m.onnx` and returns the path.
fn write_model(dir: &std::path::Path, m: &ModelProto) -> std::path::PathBuf {
    let path = dir.join("m.onnx");
    std::fs::write(&path, m.write_to_bytes().unwrap()).unwrap();
    path
}

/// Runs `f` on another thread and fails the test if it takes more than ten seconds (a read
/// that blocks on a FIFO or never ends on a device).
fn within_seconds<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} did not return within 10 s"))
}

#[cfg(unix)]
fn mkfifo(path: &std::path::Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

#[cfg(unix)]
#[test]
fn external_data_must_stay_inside_the_models_directory() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("model");
    std::fs::create_dir(&dir).unwrap();
    // 16 bytes outside the model's directory: exactly what stem.bias [4] needs.
    std::fs::write(root.path().join("secret"), le_bytes(&[7.0; 4])).unwrap();
    let link = |name: &str, to: &std::path::Path| {
        std::os::unix::fs::symlink(to, dir.join(name)).unwrap();
    };
    link("passwd", std::path::Path::new("/etc/passwd"));
    link("secret_link", &root.path().join("secret"));
    link("outside", root.path());
    link("zero", std::path::Path::new("/dev/zero"));
    mkfifo(&dir.join("pipe"));
    std::fs::create_dir(dir.join("subdir")).unwrap();
    for (location, says) in [
        ("../secret", "relative path inside the model's directory"),
        ("/etc/passwd", "relative path inside the model's directory"),
        ("passwd", "leads outside the model's directory"),
        ("secret_link", "leads outside the model's directory"),
        ("outside/secret", "leads outside the model's directory"),
        ("zero", "leads outside the model's directory"),
        ("pipe", "FIFO"),
        ("subdir", "directory"),
        ("missing.bin", "cannot be read"),
    ] {
        let mut m = model();
        make_external(&mut graph(&mut m).initializer[1], &[("location", location)]);
        let path = write_model(&dir, &m);
        let e =
            within_seconds(location, move || fair_onnx::import_file(&path)).expect_err(location);
        assert!(
            matches!(&e, OnnxError::Initializer { name, .. } if name == "stem.bias"),
            "{location}: {e}"
        );
        let text = e.to_string();
        assert!(
            text.contains(says) && text.contains(&format!("'{location}'")),
            "{location}: {text}"
        );
        assert!(text.contains("m.onnx"), "the model file is named: {text}");
    }
    // The same bytes inside the directory, directly or through a link that stays inside,
    // import.
    std::fs::write(dir.join("w.bin"), le_bytes(&[7.0; 4])).unwrap();
    link("inside_link", &dir.join("w.bin"));
    for location in ["w.bin", "./w.bin", "inside_link"] {
        let mut m = model();
        make_external(&mut graph(&mut m).initializer[1], &[("location", location)]);
        let imported = fair_onnx::import_file(&write_model(&dir, &m)).unwrap();
        assert_eq!(
            imported.tensors[1].data,
            fair_onnx::TensorData::F32(vec![7.0; 4]),
            "{location}"
        );
    }
    // A model reached through a link reads its data next to the model itself, never next
    // to the link: the same location resolves in the model's real directory.
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("w.bin"), le_bytes(&[5.0; 4])).unwrap();
    std::os::unix::fs::symlink(dir.join("m.onnx"), elsewhere.join("m.onnx")).unwrap();
    let imported = fair_onnx::import_file(&elsewhere.join("m.onnx")).unwrap();
    assert_eq!(
        imported.tensors[1].data,
        fair_onnx::TensorData::F32(vec![7.0; 4]),
        "read next to the link instead of the model"
    );
    assert_eq!(
        fair_onnx::external_data_files(&elsewhere.join("m.onnx")).unwrap(),
        vec![dir.canonicalize().unwrap().join("w.bin")]
    );
}

#[test]
fn external_data_offsets_and_lengths_are_checked_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    // 4 filler bytes, then the 16 bytes of stem.bias.
    let mut data = vec![9u8; 4];
    data.extend(le_bytes(&[1.0, 2.0, 3.0, 4.0]));
    std::fs::write(dir.path().join("w.bin"), &data).unwrap();
    let huge = u64::MAX.to_string();
    for (entries, says) in [
        (
            vec![("offset", "8"), ("length", "16")],
            "fewer than offset 8 + length 16",
        ),
        (vec![("offset", "30")], "fewer than offset 30"),
        (
            vec![("offset", huge.as_str()), ("length", "16")],
            "fewer than offset",
        ),
        (
            vec![("offset", "4"), ("length", huge.as_str())],
            "fewer than offset 4",
        ),
        // The file has room, but the length is not what shape [4] of float32 needs.
        (vec![("offset", "0"), ("length", "20")], "declares 20 bytes"),
        (vec![("offset", "4"), ("length", "8")], "declares 8 bytes"),
        // Without a length, the rest of the file must be the tensor.
        (vec![], "holds 20 bytes"),
        (vec![("offset", "-4")], "is not a number"),
    ] {
        let mut m = model();
        let mut all = vec![("location", "w.bin")];
        all.extend(entries.iter().copied());
        make_external(&mut graph(&mut m).initializer[1], &all);
        let e = fair_onnx::import_file(&write_model(dir.path(), &m)).unwrap_err();
        assert!(
            matches!(&e, OnnxError::Initializer { name, .. } if name == "stem.bias"),
            "{entries:?}: {e}"
        );
        let text = e.to_string();
        assert!(
            text.contains(says) && text.contains("'w.bin'"),
            "{entries:?}: {text}"
        );
    }
    // The declared range is read, nothing around it.
    let mut m = model();
    make_external(
        &mut graph(&mut m).initializer[1],
        &[("location", "w.bin"), ("offset", "4"), ("length", "16")],
    );
    let imported = fair_onnx::import_file(&write_model(dir.path(), &m)).unwrap();
    assert_eq!(
        imported.tensors[1].data,
        fair_onnx::TensorData::F32(vec![1.0, 2.0, 3.0, 4.0])
    );
}

#[cfg(unix)]
#[test]
fn special_files_given_as_the_model_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.onnx");
    mkfifo(&fifo);
    let link = dir.path().join("zero.onnx");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    for (path, says) in [
        (std::path::PathBuf::from("/dev/zero"), "a character device"),
        (link, "a character device"),
        (fifo, "a FIFO"),
        (dir.path().to_owned(), "a directory"),
    ] {
        let shown = path.display().to_string();
        let (p, q) = (path.clone(), path.clone());
        let e = within_seconds(&shown, move || fair_onnx::import_file(&p)).unwrap_err();
        assert!(matches!(e, OnnxError::Fs(_)), "{shown}: {e}");
        let text = e.to_string();
        assert!(
            text.contains(says) && text.contains("an ONNX model file") && text.contains(&shown),
            "{shown}: {text}"
        );
        let e = within_seconds(&shown, move || fair_onnx::external_data_files(&q)).unwrap_err();
        assert!(e.to_string().contains(says), "{shown}: {e}");
    }
}

#[test]
fn duplicate_value_names_are_refused() {
    let dup = |m: &ModelProto| match import(m).unwrap_err() {
        OnnxError::DuplicateName {
            name,
            first,
            second,
        } => (name, first, second),
        other => panic!("expected a duplicate name, got: {other}"),
    };
    // Two initializers of the same name (different values: one would silently win).
    let mut m = model();
    graph(&mut m)
        .initializer
        .push(floats("stem.bias", &[4], &[-1.0; 4]));
    let (name, first, second) = dup(&m);
    assert_eq!(
        (name.as_str(), first.as_str(), second.as_str()),
        ("stem.bias", "initializer #1", "initializer #2")
    );
    let text = import(&m).unwrap_err().to_string();
    assert!(text.contains("'stem.bias' twice"), "{text}");
    // Two nodes writing the same value (ONNX graphs are SSA).
    let mut m = model();
    graph(&mut m)
        .node
        .insert(1, node("Relu", "/shadow/Relu", &["x"], "c"));
    let (name, first, second) = dup(&m);
    assert_eq!(name, "c");
    assert!(
        first.contains("/stem/Conv") && second.contains("/shadow/Relu"),
        "{first} / {second}"
    );
    // A node output named like an initializer, or like the graph input.
    let mut m = model();
    graph(&mut m).node[1].output[0] = "stem.weight".into();
    graph(&mut m).output[0].name = "stem.weight".into();
    let (name, first, second) = dup(&m);
    assert_eq!(name, "stem.weight");
    assert!(
        first == "initializer #0" && second.contains("/act/Relu"),
        "{first} / {second}"
    );
    let mut m = model();
    graph(&mut m).node[1].output[0] = "x".into();
    graph(&mut m).output[0].name = "x".into();
    assert_eq!(dup(&m).0, "x");
    // Two graph inputs of the same name.
    let mut m = model();
    let again = graph(&mut m).input[0].clone();
    graph(&mut m).input.push(again);
    assert_eq!(dup(&m).0, "x");
    // An initializer listed as a graph input too is its default value, as ONNX allows (older
    // exporters list every initializer as an input): still imported.
    let mut m = model();
    graph(&mut m).input.push(value("stem.bias", &["4"]));
    assert_eq!(import(&m).unwrap().graph.param_count(), 108 + 4);
}

#[test]
fn non_finite_weights_are_refused_unless_allowed() {
    let mut m = model();
    let mut w = vec![0.1f32; 108];
    w[3] = f32::NAN;
    w[50] = f32::NAN;
    w[51] = -f32::NAN;
    w[107] = f32::NEG_INFINITY;
    graph(&mut m).initializer[0] = floats("stem.weight", &[4, 3, 3, 3], &w);
    let e = import(&m).unwrap_err();
    assert!(
        matches!(
            &e,
            OnnxError::NonFinite { name, nan: 3, infinite: 1, total: 108 } if name == "stem.weight"
        ),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("tensor 'stem.weight' holds 3 NaN and 1 infinite value(s) (of 108)")
            && text.contains("allow_non_finite"),
        "{text}"
    );
    // Allowed explicitly, the values are imported as they are.
    let options = ImportOptions {
        allow_non_finite: true,
        ..Default::default()
    };
    let imported = fair_onnx::import_with(&m.write_to_bytes().unwrap(), &options).unwrap();
    let fair_onnx::TensorData::F32(v) = &imported.tensors[0].data else {
        panic!("float weights")
    };
    assert_eq!(v.iter().filter(|x| x.is_nan()).count(), 3);
    assert_eq!(v[107], f32::NEG_INFINITY);
    // A non-finite layer scale ends up in the weights it is folded into: refused too.
    let mut m = model();
    let g = graph(&mut m);
    g.initializer
        .push(floats("gamma", &[4, 1, 1], &[1.0, f32::INFINITY, 1.0, 1.0]));
    g.node[1] = node("Relu", "/act/Relu", &["s"], "y");
    g.node
        .insert(1, node("Mul", "/scale/Mul", &["gamma", "c"], "s"));
    let e = import(&m).unwrap_err();
    assert!(
        matches!(&e, OnnxError::NonFinite { name, .. } if name == "stem.weight"),
        "{e}"
    );
}

#[test]
fn input_shape_errors_name_the_input_flag() {
    // Symbolic spatial sizes.
    let mut m = model();
    graph(&mut m).input[0] = value("x", &["N", "3", "H", "W"]);
    // No per-sample sizes at all.
    let mut bare = model();
    graph(&mut bare).input[0] = value("x", &["N"]);
    for m in [&m, &bare] {
        let text = import(m).unwrap_err().to_string();
        assert!(
            text.contains("--input") && text.contains("ImportOptions::input_shape"),
            "{text}"
        );
    }
    // A given shape of the wrong rank, or with a zero size.
    for shape in [vec![3, 8], vec![3, 0, 8]] {
        let options = ImportOptions {
            input_shape: Some(shape.clone()),
            ..Default::default()
        };
        let text = fair_onnx::import_with(&model().write_to_bytes().unwrap(), &options)
            .unwrap_err()
            .to_string();
        assert!(text.contains("--input"), "{shape:?}: {text}");
    }
}

/// The base model with one `ConstantOfShape` per `(size, int64)` in `fills`, named `/fill<k>`,
/// filling `size` zeros: int64 when `int64` is set (16 bytes an element in memory), else
/// float32 (4 bytes).
fn with_fills(fills: &[(i64, bool)]) -> ModelProto {
    let mut m = model();
    let g = graph(&mut m);
    for (k, &(size, int64)) in fills.iter().enumerate() {
        g.initializer.push(int64s(&format!("size{k}"), &[size]));
        let mut fill = node(
            "ConstantOfShape",
            &format!("/fill{k}"),
            &[&format!("size{k}")],
            &format!("f{k}"),
        );
        if int64 {
            fill.attribute.push(AttributeProto {
                name: "value".into(),
                type_: EnumOrUnknown::new(AttributeType::TENSOR),
                t: MessageField::some(int64s("", &[0])),
                ..Default::default()
            });
        }
        g.node.insert(k, fill);
    }
    m
}

/// Asserts that `e` is the budget error at node `node` (`op_type`).
fn assert_budget_error(e: &OnnxError, node: &str, op_type: &str) {
    assert!(
        matches!(e, OnnxError::Node { node: at, op_type: op, .. } if at == node && op == op_type),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("budget") && text.contains("MAX_FOLDED_BYTES"),
        "{text}"
    );
}

#[test]
fn folded_constants_share_one_budget_counted_in_bytes() {
    assert_eq!(fair_onnx::MAX_FOLDED_BYTES, 1 << 30);
    // 2^26 float zeros (256 MiB) fit; as many int64 zeros take 16 bytes each in memory
    // (1 GiB), more than the budget, and are refused before they are built.
    assert!(import(&with_fills(&[(1 << 26, false)])).is_ok());
    let e = import(&with_fills(&[(1 << 26, true)])).unwrap_err();
    assert_budget_error(&e, "/fill0", "ConstantOfShape");
    // Together: 256 MiB of floats, then 3·2^24 int64 (768 MiB) pass the budget at the
    // second, though they are only 1.75 · 2^26 elements.
    let e = import(&with_fills(&[(1 << 26, false), (3 << 24, true)])).unwrap_err();
    assert_budget_error(&e, "/fill1", "ConstantOfShape");
    // One constant is still bounded at 2^26 elements, whatever its bytes.
    let e = import(&with_fills(&[((1 << 26) + 1, false)])).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Node { node, .. } if node == "/fill0")
            && e.to_string().contains("too large to fold"),
        "{e}"
    );
}

#[test]
fn external_data_files_lists_the_files_a_model_reads() {
    let dir = tempfile::tempdir().unwrap();
    // Inline weights: nothing.
    let plain = write_model(dir.path(), &model());
    assert_eq!(
        fair_onnx::external_data_files(&plain).unwrap(),
        Vec::<std::path::PathBuf>::new()
    );
    // Both initializers in one file, and a Constant's value in another (in a subdirectory).
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let mut data = le_bytes(&[0.1; 108]);
    data.extend(le_bytes(&[0.5; 4]));
    std::fs::write(dir.path().join("w.bin"), &data).unwrap();
    std::fs::write(dir.path().join("sub/c.bin"), le_bytes(&[1.0])).unwrap();
    let mut m = model();
    let g = graph(&mut m);
    make_external(
        &mut g.initializer[0],
        &[("location", "w.bin"), ("offset", "0"), ("length", "432")],
    );
    make_external(
        &mut g.initializer[1],
        &[("location", "./w.bin"), ("offset", "432"), ("length", "16")],
    );
    let mut c = floats("one", &[], &[]);
    make_external(&mut c, &[("location", "sub/c.bin")]);
    let mut constant = node("Constant", "/one", &[], "one");
    constant.attribute.push(AttributeProto {
        name: "value".into(),
        type_: EnumOrUnknown::new(AttributeType::TENSOR),
        t: MessageField::some(c),
        ..Default::default()
    });
    g.node.insert(0, constant);
    let path = write_model(dir.path(), &m);
    let real = dir.path().canonicalize().unwrap();
    assert_eq!(
        fair_onnx::external_data_files(&path).unwrap(),
        [real.join("sub/c.bin"), real.join("w.bin")]
    );
    // The model imports from those files.
    let imported = fair_onnx::import_file(&path).unwrap();
    assert_eq!(
        imported.tensors[1].data,
        fair_onnx::TensorData::F32(vec![0.5; 4])
    );
    // A location outside the directory is the same error import gives.
    make_external(
        &mut graph(&mut m).initializer[1],
        &[("location", "../w.bin")],
    );
    let path = write_model(dir.path(), &m);
    let e = fair_onnx::external_data_files(&path).unwrap_err();
    assert!(
        matches!(e, OnnxError::Fs(_)) && e.to_string().contains("'../w.bin'"),
        "{e}"
    );
}

/// A `Cast` node to `to`.
fn cast_to(name: &str, input: &str, output: &str, to: DataType) -> NodeProto {
    let mut n = node("Cast", name, &[input], output);
    n.attribute.push(AttributeProto {
        name: "to".into(),
        type_: EnumOrUnknown::new(AttributeType::INT),
        i: to as i64,
        ..Default::default()
    });
    n
}

#[test]
fn passed_through_constants_share_their_data_and_copies_are_bounded() {
    // An initializer of 2^26 + 1 floats, more than any folded constant may hold, in a sparse
    // external data file.
    let dir = tempfile::tempdir().unwrap();
    let n = (1i64 << 26) + 1;
    let file = std::fs::File::create(dir.path().join("big.bin")).unwrap();
    file.set_len(4 * n as u64).unwrap();
    let mut base = model();
    let g = graph(&mut base);
    let mut big = floats("big", &[n], &[]);
    make_external(&mut big, &[("location", "big.bin")]);
    g.initializer.push(big);
    g.initializer.push(int64s("flat", &[n]));
    g.initializer.push(int64s("axes", &[0]));
    let with = |nodes: Vec<NodeProto>| {
        let mut m = base.clone();
        for (k, nd) in nodes.into_iter().enumerate() {
            graph(&mut m).node.insert(k, nd);
        }
        fair_onnx::import_file(&write_model(dir.path(), &m))
    };
    // Identity (three times), Reshape, Unsqueeze, Squeeze, Flatten and a Cast to float only
    // rename or reshape it: they share its data, copy nothing and are not bounded like
    // copies (each Identity used to copy it, and the copies passed the folded budget).
    with(vec![
        node("Identity", "/id0", &["big"], "i0"),
        node("Identity", "/id1", &["i0"], "i1"),
        node("Identity", "/id2", &["i1"], "i2"),
        node("Reshape", "/reshape", &["i2", "flat"], "r"),
        node("Unsqueeze", "/unsqueeze", &["r", "axes"], "u"),
        node("Squeeze", "/squeeze", &["u", "axes"], "q"),
        node("Flatten", "/flatten", &["q"], "fl"),
        cast_to("/cast", "fl", "cf", DataType::FLOAT),
    ])
    .unwrap();
    // A fold that builds new data is bounded at 2^26 elements and refused, naming the node,
    // before it is built: a Cast to integers, a Transpose.
    for copy in [
        cast_to("/copy", "big", "cp", DataType::INT64),
        node("Transpose", "/copy", &["big"], "cp"),
    ] {
        let op = copy.op_type.clone();
        let e = with(vec![node("Identity", "/id", &["big"], "i"), copy]).unwrap_err();
        assert!(
            matches!(&e, OnnxError::Node { node, op_type, .. } if node == "/copy" && *op_type == op)
                && e.to_string().contains("too large to fold"),
            "{op}: {e}"
        );
    }
}

#[test]
fn integer_initializers_are_paid_for_from_the_budget() {
    // 2^25 + 2^24 int64 values take 768 MiB in memory (16 bytes each), then a float fill of
    // 2^26 (256 MiB) passes the budget: refused before it is built, naming the node. The
    // integer tensor is an external file (sparse), so the test holds no copy of it.
    let dir = tempfile::tempdir().unwrap();
    let n = 3i64 << 24;
    std::fs::File::create(dir.path().join("ints.bin"))
        .unwrap()
        .set_len(8 * n as u64)
        .unwrap();
    let mut m = with_fills(&[(1 << 26, false)]);
    let g = graph(&mut m);
    let mut ints = int64s("ints", &[]);
    ints.dims = vec![n];
    ints.int64_data.clear();
    make_external(&mut ints, &[("location", "ints.bin")]);
    g.initializer.push(ints);
    g.node.insert(0, node("Identity", "/ints", &["ints"], "i"));
    let e = fair_onnx::import_file(&write_model(dir.path(), &m)).unwrap_err();
    assert_budget_error(&e, "/fill0", "ConstantOfShape");
    // An integer initializer of more than 2^26 elements is refused when it is read.
    let mut m = model();
    let g = graph(&mut m);
    g.initializer.push(TensorProto {
        name: "many".into(),
        dims: vec![(1 << 26) + 1],
        data_type: DataType::UINT8 as i32,
        raw_data: vec![0; (1 << 26) + 1],
        ..Default::default()
    });
    g.node.insert(0, node("Identity", "/many", &["many"], "i"));
    let e = import(&m).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Initializer { name, detail } if name == "many" && detail.contains("too large to fold")),
        "{e}"
    );
}

/// A `key = value` entry.
fn entry(key: &str, value: &str) -> onnx_protobuf::StringStringEntryProto {
    onnx_protobuf::StringStringEntryProto {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

#[test]
fn a_key_given_twice_is_refused_naming_it() {
    // A node attribute twice (the ONNX checker: "Attribute 'pads' appeared multiple
    // times"); the first copy used to win silently.
    let mut m = model();
    graph(&mut m).node[0]
        .attribute
        .push(ints_attr("pads", &[0, 0, 0, 0]));
    let e = import(&m).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Attribute { node, attribute, .. } if node == "/stem/Conv" && attribute == "pads")
            && e.to_string().contains("twice"),
        "{e}"
    );
    // A metadata key twice (the ONNX checker: "duplicate keys in metadata_props").
    let mut m = model();
    m.metadata_props
        .push(entry("fair_pruner.mean", "[0.5, 0.5, 0.5]"));
    m.metadata_props
        .push(entry("fair_pruner.mean", "[0.1, 0.1, 0.1]"));
    let e = import(&m).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Model { .. }) && e.to_string().contains("'fair_pruner.mean' twice"),
        "{e}"
    );
    // A node's metadata key twice (the dynamo exporter's `namespace` names layers).
    let mut m = model();
    for v in ["a/stem: Conv2d/conv", "b/other: Conv2d/conv"] {
        graph(&mut m).node[0]
            .metadata_props
            .push(entry("namespace", v));
    }
    let e = import(&m).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Node { node, .. } if node == "/stem/Conv")
            && e.to_string().contains("'namespace' twice"),
        "{e}"
    );
    // The default domain imported twice with different versions ('' and 'ai.onnx' are the
    // same domain); twice with the same version is harmless.
    let mut m = model();
    m.opset_import.push(OperatorSetIdProto {
        domain: "ai.onnx".into(),
        version: 11,
        ..Default::default()
    });
    let e = import(&m).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Model { .. })
            && e.to_string().contains("version 17 and as version 11"),
        "{e}"
    );
    m.opset_import[1].version = 17;
    assert!(import(&m).is_ok());
}

#[test]
fn an_external_data_key_given_twice_is_refused_naming_the_tensor() {
    // onnx.load takes the last `location` or `offset`, a first-match reader the first: the
    // bytes read would depend on the reader.
    let dir = tempfile::tempdir().unwrap();
    let mut data = le_bytes(&[0.5; 4]);
    data.extend(le_bytes(&[7.0; 4]));
    std::fs::write(dir.path().join("a.bin"), &data).unwrap();
    std::fs::write(dir.path().join("b.bin"), &data).unwrap();
    for (key, entries) in [
        (
            "location",
            vec![
                ("location", "a.bin"),
                ("location", "b.bin"),
                ("length", "16"),
            ],
        ),
        (
            "offset",
            vec![
                ("location", "a.bin"),
                ("offset", "0"),
                ("offset", "16"),
                ("length", "16"),
            ],
        ),
    ] {
        let mut m = model();
        make_external(&mut graph(&mut m).initializer[1], &entries);
        let path = write_model(dir.path(), &m);
        let e = fair_onnx::import_file(&path).unwrap_err();
        assert!(
            matches!(&e, OnnxError::Initializer { name, detail } if name == "stem.bias" && detail.contains(&format!("'{key}' twice"))),
            "{e}"
        );
        // The output guard's list of data files refuses it too.
        let e = fair_onnx::external_data_files(&path).unwrap_err();
        assert!(e.to_string().contains(&format!("'{key}' twice")), "{e}");
    }
    // In a Constant's value: the node and the attribute are named.
    let mut c = floats("one", &[], &[]);
    make_external(
        &mut c,
        &[("location", "a.bin"), ("length", "4"), ("length", "8")],
    );
    let mut constant = node("Constant", "/one", &[], "one");
    constant.attribute.push(AttributeProto {
        name: "value".into(),
        type_: EnumOrUnknown::new(AttributeType::TENSOR),
        t: MessageField::some(c),
        ..Default::default()
    });
    let mut m = model();
    graph(&mut m).node.insert(0, constant);
    let e = fair_onnx::import_file(&write_model(dir.path(), &m)).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Attribute { node, attribute, .. } if node == "/one" && attribute == "value")
            && e.to_string().contains("'length' twice"),
        "{e}"
    );
}

#[test]
fn external_tensors_that_share_bytes_are_refused() {
    // The weight takes bytes 0..432 of w.bin and the bias claims 416..432 again: together
    // they read 448 bytes of a 432-byte file. Tensors sharing bytes would let one small file
    // be decoded many times over.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.bin"), le_bytes(&[0.1; 108])).unwrap();
    let mut m = model();
    let g = graph(&mut m);
    make_external(
        &mut g.initializer[0],
        &[("location", "w.bin"), ("length", "432")],
    );
    make_external(
        &mut g.initializer[1],
        &[("location", "w.bin"), ("offset", "416"), ("length", "16")],
    );
    let e = fair_onnx::import_file(&write_model(dir.path(), &m)).unwrap_err();
    assert!(
        matches!(&e, OnnxError::Initializer { name, detail } if name == "stem.bias" && detail.contains("448 bytes of this 432-byte file")),
        "{e}"
    );
    // Apart, they import.
    std::fs::write(dir.path().join("w.bin"), le_bytes(&[0.1; 112])).unwrap();
    make_external(
        &mut graph(&mut m).initializer[1],
        &[("location", "w.bin"), ("offset", "432"), ("length", "16")],
    );
    assert!(fair_onnx::import_file(&write_model(dir.path(), &m)).is_ok());
}

/// A token model as fair-pruner's zoo builds it (`token_mlp`): patch conv, tokens, a pre-LN
/// GELU MLP block with its residual, the mean over the tokens and a head.
fn token_model() -> Graph {
    let mut b = GraphBuilder::new("tokens", "input", vec![3, 8, 12]);
    b.conv("patch_embed", "input", 8, 4, 4, 0, true).unwrap();
    b.add("tokens", fair_ir::Tokens {}.into(), &["patch_embed"])
        .unwrap();
    b.add("norm", fair_ir::LayerNorm::new(8).into(), &["tokens"])
        .unwrap();
    b.linear("fc1", "norm", 16, true).unwrap();
    b.add("act", fair_ir::Gelu::default().into(), &["fc1"])
        .unwrap();
    b.linear("fc2", "act", 8, false).unwrap();
    b.add_all("add", &["fc2", "tokens"]).unwrap();
    b.add("pool", fair_ir::TokenMean {}.into(), &["add"])
        .unwrap();
    b.linear("head", "pool", 5, true).unwrap();
    b.finish().unwrap()
}

#[test]
fn token_models_export_and_read_back() {
    let g = token_model();
    assert_eq!(g.shape("tokens").unwrap(), &[6, 8]);
    let t = tensors_for(&g);
    let bytes = fair_onnx::export(&g, &t, &ExportOptions { opset: 20 }).unwrap();
    // Written with the token layouts: Reshape/Transpose, Reshape → Gemm → Reshape, ReduceMean.
    let m = ModelProto::parse_from_bytes(&bytes).unwrap();
    let ops: Vec<&str> = m.graph.node.iter().map(|n| n.op_type.as_str()).collect();
    for op in ["Transpose", "Gemm", "LayerNormalization", "ReduceMean"] {
        assert!(ops.contains(&op), "{op} missing from {ops:?}");
    }
    let back = fair_onnx::import(&bytes).unwrap();
    assert_eq!(back.graph, g);
    assert_eq!(back.tensors, t);
}

#[test]
fn unsupported_token_layouts_are_errors_naming_the_node() {
    let g = token_model();
    let t = tensors_for(&g);
    let bytes = fair_onnx::export(&g, &t, &ExportOptions { opset: 17 }).unwrap();
    let base = ModelProto::parse_from_bytes(&bytes).unwrap();
    // The mean over the tokens keeping the token axis ([N, 1, F]) is not a token_mean.
    let mut m = base.clone();
    let g = m.graph.as_mut().unwrap();
    let pool = g
        .node
        .iter_mut()
        .find(|n| n.op_type == "ReduceMean")
        .unwrap();
    let keep = pool
        .attribute
        .iter_mut()
        .find(|a| a.name == "keepdims")
        .unwrap();
    keep.i = 1;
    let e = import(&m).unwrap_err().to_string();
    assert!(e.contains("pool") && e.contains("keepdims"), "{e}");
    // Any other transpose of an image's flattened pixels is not `tokens`.
    let mut m = base.clone();
    let g = m.graph.as_mut().unwrap();
    let tr = g
        .node
        .iter_mut()
        .find(|n| n.op_type == "Transpose")
        .unwrap();
    tr.attribute[0].ints = vec![1, 0, 2];
    let e = import(&m).unwrap_err().to_string();
    assert!(
        e.contains("'tokens'") && e.contains("[1, 0, 2]") && e.contains("tokens (perm [0, 2, 1])"),
        "{e}"
    );
}

/// A transformer block as the zoo's `tiny_vit` builds it: patch conv, tokens, pre-LN
/// multi-head attention (q, k, v, 2 heads of 4, output projection) with its residual, the
/// mean over the tokens and a head.
fn attention_model() -> Graph {
    let mut b = GraphBuilder::new("attn", "input", vec![3, 8, 12]);
    b.conv("patch_embed", "input", 8, 4, 4, 0, true).unwrap();
    b.add("tokens", fair_ir::Tokens {}.into(), &["patch_embed"])
        .unwrap();
    b.add("norm", fair_ir::LayerNorm::new(8).into(), &["tokens"])
        .unwrap();
    for l in ["q", "k", "v"] {
        b.linear(l, "norm", 8, true).unwrap();
    }
    b.add(
        "attend",
        fair_ir::Attention::new(4).into(),
        &["q", "k", "v"],
    )
    .unwrap();
    b.linear("proj", "attend", 8, true).unwrap();
    b.add_all("add", &["proj", "tokens"]).unwrap();
    b.add("pool", fair_ir::TokenMean {}.into(), &["add"])
        .unwrap();
    b.linear("head", "pool", 5, true).unwrap();
    b.finish().unwrap()
}

#[test]
fn attention_exports_decomposed_and_reads_back_as_one_node() {
    let g = attention_model();
    let t = tensors_for(&g);
    // (The layer norm needs opset 17; the attention alone is written at 14 too: the
    // example of every op.)
    for opset in [17, 20, 23] {
        let bytes = fair_onnx::export(&g, &t, &ExportOptions { opset }).unwrap();
        let m = ModelProto::parse_from_bytes(&bytes).unwrap();
        let ops: Vec<&str> = m
            .graph
            .node
            .iter()
            .filter(|n| n.name.starts_with("attend"))
            .map(|n| n.op_type.as_str())
            .collect();
        assert_eq!(
            ops,
            [
                "Reshape",
                "Transpose",
                "Reshape",
                "Transpose",
                "Reshape",
                "Transpose",
                "MatMul",
                "Mul",
                "Softmax",
                "MatMul",
                "Transpose",
                "Reshape"
            ],
            "opset {opset}"
        );
        let back = fair_onnx::import(&bytes).unwrap();
        assert_eq!(back.graph, g, "opset {opset}");
        assert_eq!(back.tensors, t, "opset {opset}");
    }
}

#[test]
fn attention_patterns_that_differ_are_errors_naming_the_node() {
    let g = attention_model();
    let bytes = fair_onnx::export(&g, &tensors_for(&g), &ExportOptions { opset: 17 }).unwrap();
    let base = ModelProto::parse_from_bytes(&bytes).unwrap();
    let node = |m: &mut ModelProto, name: &str| -> usize {
        m.graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    };
    // Dividing by √head_dim (PyTorch's spelling) is the same attention.
    let mut m = base.clone();
    let gp = m.graph.as_mut().unwrap();
    let i = gp
        .node
        .iter()
        .position(|n| n.name == "attend.scaled")
        .unwrap();
    gp.node[i].op_type = "Div".into();
    let scale = gp
        .initializer
        .iter_mut()
        .find(|t| t.name == "attend.scale")
        .unwrap();
    scale.float_data = vec![2.0];
    scale.raw_data.clear();
    assert_eq!(import(&m).unwrap().graph, g);
    // Another scale than 1/√head_dim.
    let mut m = base.clone();
    let gp = m.graph.as_mut().unwrap();
    let scale = gp
        .initializer
        .iter_mut()
        .find(|t| t.name == "attend.scale")
        .unwrap();
    scale.float_data = vec![0.25];
    scale.raw_data.clear();
    // Another scale than 1/√head_dim is kept by the attention node (MaxViT's 1/√E).
    let back = import(&m).unwrap().graph;
    let scales: Vec<Option<f64>> = (back.nodes().iter())
        .filter_map(|n| match &n.op {
            Op::Attention(a) => Some(a.scale),
            _ => None,
        })
        .collect();
    assert_eq!(scales, [Some(0.25)]);
    // A softmax over the queries' axis.
    let mut m = base.clone();
    let i = node(&mut m, "attend.softmax");
    m.graph.as_mut().unwrap().node[i].attribute[0].i = 2;
    let e = import(&m).unwrap_err().to_string();
    assert!(
        e.contains("'attend.softmax'") && e.contains("last axis"),
        "{e}"
    );
    // The keys not transposed: q · k of [N, H, T, d] each.
    let mut m = base.clone();
    let i = node(&mut m, "attend.k_t");
    m.graph.as_mut().unwrap().node[i].attribute[0].ints = vec![0, 2, 1, 3];
    let e = import(&m).unwrap_err().to_string();
    assert!(
        e.contains("'attend.scores'") && e.contains("k's transposed heads"),
        "{e}"
    );
    // A softmax on anything else.
    let mut m = base.clone();
    let gp = m.graph.as_mut().unwrap();
    let i = gp
        .node
        .iter()
        .position(|n| n.name == "attend.softmax")
        .unwrap();
    gp.node[i].input[0] = "tokens".into();
    let e = import(&m).unwrap_err().to_string();
    assert!(
        e.contains("'attend.softmax'")
            && e.contains("Softmax is supported only over the scaled scores"),
        "{e}"
    );
    // The context not transposed back before the final reshape.
    let mut m = base.clone();
    let gp = m.graph.as_mut().unwrap();
    let i = gp.node.iter().position(|n| n.name == "attend").unwrap();
    let ctx = gp
        .node
        .iter()
        .find(|n| n.name == "attend.context")
        .unwrap()
        .output[0]
        .clone();
    gp.node[i].input[0] = ctx;
    let e = import(&m).unwrap_err().to_string();
    assert!(
        e.contains("'attend'") && e.contains("perm [0, 2, 1, 3]"),
        "{e}"
    );
    // Wrong perms on q and v: the error says the Reshape before was read as heads.
    let heads_of = |l: &str| {
        format!(
            "the heads of '{l}' (a Reshape of its tokens [N, 6, 8] to [N, T, H, d] with d = 4, read as the heads of multi-head attention)"
        )
    };
    for l in ["q", "v"] {
        let mut m = base.clone();
        let i = node(&mut m, &format!("attend.{l}_t"));
        m.graph.as_mut().unwrap().node[i].attribute[0].ints = vec![0, 1, 2, 3];
        let e = import(&m).unwrap_err().to_string();
        assert!(
            e.contains(&format!("'attend.{l}_t'"))
                && e.contains(&format!("its input 'attend.{l}_heads' is {}", heads_of(l)))
                && e.contains("found perm [0, 1, 2, 3]"),
            "{e}"
        );
    }
    // v transposed as the keys are.
    let mut m = base.clone();
    let i = node(&mut m, "attend.v_t");
    m.graph.as_mut().unwrap().node[i].attribute[0].ints = vec![0, 2, 3, 1];
    let e = import(&m).unwrap_err().to_string();
    assert!(
        e.contains("'attend.context'")
            && e.contains(&format!(
                "here it multiplies the softmax weights of 'q' and 'k' by {}, transposed to [N, H, d, T] (the keys' layout, perm [0, 2, 3, 1])",
                heads_of("v")
            )),
        "{e}"
    );
    // The heads read by another op than a Transpose.
    let mut m = base.clone();
    let i = node(&mut m, "attend.q_t");
    let n = &mut m.graph.as_mut().unwrap().node[i];
    n.op_type = "Relu".into();
    n.attribute.clear();
    let e = import(&m).unwrap_err().to_string();
    assert!(
        e.contains("'attend.q_t'")
            && e.contains(&format!(
                "input 0 ('attend.q_heads') is a step of multi-head attention ({})",
                heads_of("q")
            )),
        "{e}"
    );
}

/// torchvision's ViT (`tv_vit_*` fixtures) with one step of its `nn.MultiheadAttention`
/// pattern changed: `edit` changes the file; the error names the node.
fn vit_with(name: &str, edit: impl Fn(&mut GraphProto) -> String) -> (String, String) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/{name}.onnx"));
    let mut m = ModelProto::parse_from_bytes(&std::fs::read(path).unwrap()).unwrap();
    let node = edit(m.graph.as_mut().unwrap());
    let e = fair_onnx::import(&m.write_to_bytes().unwrap())
        .unwrap_err()
        .to_string();
    (node, e)
}

#[test]
fn multihead_attention_steps_outside_the_pattern_are_errors_naming_the_node() {
    for name in ["tv_vit_ts17", "tv_vit_dyn18"] {
        // The transpose of the fused q, k, v to [3, T, N, 1, E] with another permutation.
        let (node, e) = vit_with(name, |g| {
            let n = g
                .node
                .iter_mut()
                .find(|n| {
                    n.op_type == "Transpose"
                        && n.attribute.iter().any(|a| a.ints == [3, 1, 2, 0, 4])
                })
                .unwrap();
            n.attribute[0].ints = vec![3, 2, 1, 0, 4];
            n.name.clone()
        });
        assert!(
            e.contains(&format!("'{node}'"))
                && e.contains("fused q, k, v")
                && e.contains("torch.nn.MultiheadAttention"),
            "{name}: {e}"
        );
        // The out_proj's output rows reshaped back to something other than [T, N, E].
        let (node, e) = vit_with(name, |g| {
            let gemm = g.node.iter().position(|n| n.op_type == "Gemm").unwrap();
            let out = g.node[gemm].output[0].clone();
            let reshape = g
                .node
                .iter_mut()
                .find(|n| n.op_type == "Reshape" && n.input[0] == out)
                .unwrap();
            reshape.input[1] = "bad_shape".into();
            let name = reshape.name.clone();
            g.initializer.push(TensorProto {
                name: "bad_shape".into(),
                dims: vec![2],
                data_type: DataType::INT64 as i32,
                int64_data: vec![34, 32],
                ..Default::default()
            });
            name
        });
        assert!(
            e.contains(&format!("'{node}'")) && e.contains("expected a Reshape to [17, N, 32]"),
            "{name}: {e}"
        );
    }
    // A constant put before the tokens that is not one token.
    let (node, e) = vit_with("tv_vit_dyn18", |g| {
        let cat = g.node.iter().find(|n| n.op_type == "Concat").unwrap();
        let (name, cls) = (cat.name.clone(), cat.input[0].clone());
        let t = g.initializer.iter_mut().find(|t| t.name == cls).unwrap();
        t.dims = vec![2, 2, 16];
        name
    });
    assert!(
        e.contains(&format!("'{node}'")) && e.contains("class token"),
        "{e}"
    );
}

/// The graph of the `tv_vit_*` fixture `name`.
fn fixture_graph(name: &str) -> GraphProto {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/{name}.onnx"));
    let m = ModelProto::parse_from_bytes(&std::fs::read(path).unwrap()).unwrap();
    m.graph.unwrap()
}

/// The `tv_vit_*` fixture `name` with `edit` applied, imported.
fn vit_import(
    name: &str,
    edit: impl Fn(&mut GraphProto),
) -> Result<fair_onnx::Imported, OnnxError> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/{name}.onnx"));
    let mut m = ModelProto::parse_from_bytes(&std::fs::read(path).unwrap()).unwrap();
    edit(m.graph.as_mut().unwrap());
    fair_onnx::import(&m.write_to_bytes().unwrap())
}

/// The class-token `Concat` of a ViT fixture: its name and constant input.
fn class_concat(g: &GraphProto) -> (String, String) {
    let cat = g
        .node
        .iter()
        .find(|n| n.op_type == "Concat" && n.input.len() == 2)
        .unwrap();
    (cat.name.clone(), cat.input[0].clone())
}

#[test]
fn a_constant_expanded_over_the_dynamic_batch_is_read_only_by_broadcasting_readers() {
    for name in ["tv_vit_ts17_dynbatch", "tv_vit_dyn18_dynbatch"] {
        // As exported: the class-token Concat reads it.
        vit_import(name, |_| {}).unwrap();
        let expanded = |g: &GraphProto| {
            let e = g.node.iter().find(|n| n.op_type == "Expand").unwrap();
            e.output[0].clone()
        };
        // An Identity between the Expand and the Concat: refused, naming the Identity.
        let e = vit_import(name, |g| {
            let out = expanded(g);
            for n in &mut g.node {
                for i in &mut n.input {
                    if *i == out {
                        *i = "copied".into();
                    }
                }
            }
            let at = g.node.iter().position(|n| n.op_type == "Expand").unwrap() + 1;
            g.node.insert(
                at,
                NodeProto {
                    name: "copy_token".into(),
                    op_type: "Identity".into(),
                    input: vec![out],
                    output: vec!["copied".into()],
                    ..Default::default()
                },
            );
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("'copy_token'") && e.contains("expanded over the dynamic batch"),
            "{name}: {e}"
        );
        // A Shape of it (ONNX gives [N, 1, F], the folded value is [1, 1, F]): refused.
        let e = vit_import(name, |g| {
            let out = expanded(g);
            g.node.push(NodeProto {
                name: "token_shape".into(),
                op_type: "Shape".into(),
                input: vec![out],
                output: vec!["token_shape_out".into()],
                ..Default::default()
            });
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("'token_shape'") && e.contains("expanded over the dynamic batch"),
            "{name}: {e}"
        );
        // The Concat on axis 0 (the batch axis), or with the tokens first: refused, naming
        // the Concat.
        let (cat, _) = class_concat(&fixture_graph(name));
        let e = vit_import(name, |g| {
            let n = g.node.iter_mut().find(|n| n.name == cat).unwrap();
            n.input.swap(0, 1);
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!("'{cat}'")) && e.contains("in that order"),
            "{name}: {e}"
        );
        let e = vit_import(name, |g| {
            let n = g.node.iter_mut().find(|n| n.name == cat).unwrap();
            n.attribute.iter_mut().find(|a| a.name == "axis").unwrap().i = 0;
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(&format!("'{cat}'")) && e.contains("expanded over the dynamic batch"),
            "{name}: {e}"
        );
    }
}

#[test]
fn the_class_token_constant_must_be_one_token_or_the_fixed_batch_of_equal_copies() {
    // tv_vit_dyn18 (batch 2) stores the class token expanded to the batch: [2, 1, 32].
    let floats = |t: &TensorProto| -> Vec<f32> {
        if t.raw_data.is_empty() {
            t.float_data.clone()
        } else {
            t.raw_data
                .chunks(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        }
    };
    let set = |t: &mut TensorProto, dims: Vec<i64>, v: Vec<f32>| {
        t.dims = dims;
        t.raw_data.clear();
        t.float_data = v;
    };
    let with = |dims: Vec<i64>, change_row_1: bool| {
        vit_import("tv_vit_dyn18", |g| {
            let (_, cls) = class_concat(g);
            let t = g.initializer.iter_mut().find(|t| t.name == cls).unwrap();
            assert_eq!(t.dims, [2, 1, 32]);
            let mut v = floats(t);
            if change_row_1 {
                v[32 + 3] += 1.0;
            }
            let count: i64 = dims.iter().product();
            v.truncate(count as usize);
            set(t, dims.clone(), v);
        })
    };
    let (cat, _) = class_concat(&fixture_graph("tv_vit_dyn18"));
    with(vec![2, 1, 32], false).unwrap();
    // Rows that differ: an error naming the Concat and the row.
    let e = with(vec![2, 1, 32], true).unwrap_err().to_string();
    assert!(
        e.contains(&format!("'{cat}'"))
            && e.contains("sample 1 of [2, 1, 32] differs from sample 0"),
        "{e}"
    );
    // One token for a fixed batch of 2, or a token without the batch or token axis: ONNX
    // rejects the Concat, and so does the importer.
    for dims in [vec![1, 1, 32], vec![1, 32], vec![32]] {
        let e = with(dims.clone(), false).unwrap_err().to_string();
        assert!(
            e.contains(&format!("'{cat}'"))
                && e.contains("class token")
                && e.contains("[2, k, 32]"),
            "{dims:?}: {e}"
        );
    }
}

#[test]
fn multihead_attention_rows_are_not_reshaped_with_a_copied_batch() {
    // The rows [T·N, E] have E at axis 1: a `0` there copies E, not the batch.
    for name in ["tv_vit_ts17", "tv_vit_dyn18", "tv_vit_dyn18_dynbatch"] {
        let e = vit_import(name, |g| {
            let gemm = g.node.iter().position(|n| n.op_type == "Gemm").unwrap();
            let out = g.node[gemm].output[0].clone();
            let reshape = g
                .node
                .iter_mut()
                .find(|n| n.op_type == "Reshape" && n.input[0] == out)
                .unwrap();
            reshape.input[1] = "copy_shape".into();
            g.initializer.push(int64s("copy_shape", &[17, 0, 32]));
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("expected a Reshape to [17, N, 32], found [17, 0, 32]"),
            "{name}: {e}"
        );
    }
}

#[test]
fn the_fused_in_proj_is_split_once_and_read_only_by_its_split() {
    for name in ["tv_vit_ts17", "tv_vit_dyn18"] {
        // The note names the split, not a dropped node.
        let im = vit_import(name, |_| {}).unwrap();
        assert!(
            im.notes
                .iter()
                .any(|n| n.starts_with("fused in_proj '") && n.ends_with("' split into q, k, v")),
            "{name}: {:?}",
            im.notes
        );
        assert!(
            !im.notes.iter().any(|n| n.contains("does not depend on")),
            "{name}: {:?}",
            im.notes
        );
        // A second Gather of q: refused, naming it.
        let e = vit_import(name, |g| {
            let at = g
                .node
                .iter()
                .position(|n| {
                    n.op_type == "Gather"
                        && g.node
                            .iter()
                            .any(|m| m.op_type == "Squeeze" && m.output[0] == n.input[0])
                })
                .unwrap();
            let mut dup = g.node[at].clone();
            dup.name = "second_q".into();
            dup.output = vec!["second_q_out".into()];
            g.node.insert(at + 1, dup);
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("'second_q'") && e.contains("a second time"),
            "{name}: {e}"
        );
        // Another reader of the fused projection: refused, naming the Reshape that splits it.
        let e = vit_import(name, |g| {
            let r = g
                .node
                .iter()
                .find(|n| {
                    n.op_type == "Reshape"
                        && g.node
                            .iter()
                            .any(|m| m.op_type == "Unsqueeze" && m.input[0] == n.output[0])
                })
                .unwrap();
            let fused = r.input[0].clone();
            g.node.push(NodeProto {
                name: "peek".into(),
                op_type: "Identity".into(),
                input: vec![fused],
                output: vec!["peek_out".into()],
                ..Default::default()
            });
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("is also read by 'peek'") && e.contains("fused q, k, v"),
            "{name}: {e}"
        );
        // A reader of the fused projection transposed back to batch-first (the same IR
        // value), before the Reshape: still refused, naming the reader.
        let e = vit_import(name, |g| {
            let at = g
                .node
                .iter()
                .position(|n| {
                    n.op_type == "Reshape"
                        && g.node
                            .iter()
                            .any(|m| m.op_type == "Unsqueeze" && m.input[0] == n.output[0])
                })
                .unwrap();
            let fused = g.node[at].input[0].clone();
            let mut back = node("Transpose", "back", &[&fused], "fused_back");
            back.attribute.push(ints_attr("perm", &[1, 0, 2]));
            g.node
                .insert(at, node("Relu", "peek", &["fused_back"], "peek_out"));
            g.node.insert(at, back);
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("is also read by 'peek'") && e.contains("fused q, k, v"),
            "{name}: {e}"
        );
    }
}

/// tv_vit_dyn18 with its class-token select `Gather` taking indices `[0]` (keeping the
/// token axis, `[N, 1, F]`) and `reader` (a Reshape or Flatten) after it.
fn vit_token_kept(
    reader: NodeProto,
    extra: Option<TensorProto>,
) -> Result<fair_onnx::Imported, OnnxError> {
    vit_import("tv_vit_dyn18", |g| {
        let at = g
            .node
            .iter()
            .position(|n| {
                n.op_type == "Gather" && n.attribute.iter().any(|a| a.name == "axis" && a.i == 1)
            })
            .unwrap();
        let out = g.node[at].output[0].clone();
        g.node[at].input[1] = "token_index".into();
        g.node[at].output[0] = "kept".into();
        let mut r = reader.clone();
        r.input[0] = "kept".into();
        r.output = vec![out];
        g.node.insert(at + 1, r);
        g.initializer.push(int64s("token_index", &[0]));
        g.initializer.extend(extra.clone());
    })
}

#[test]
fn one_kept_token_is_reshaped_or_flattened_to_features() {
    let reshape = |shape: &[i64]| {
        (
            NodeProto {
                name: "to_features".into(),
                op_type: "Reshape".into(),
                input: vec![String::new(), "features_shape".into()],
                ..Default::default()
            },
            Some(int64s("features_shape", shape)),
        )
    };
    for shape in [&[2, 32][..], &[0, -1], &[-1, 32]] {
        let (r, t) = reshape(shape);
        let im = vit_token_kept(r, t).unwrap_or_else(|e| panic!("{shape:?}: {e}"));
        assert!(
            im.graph
                .nodes()
                .iter()
                .any(|n| matches!(n.op, Op::TokenSelect(_))),
            "{shape:?}"
        );
    }
    // [0, 0] copies the kept token axis (1): [N, 1], not [N, F].
    let (r, t) = reshape(&[0, 0]);
    let e = vit_token_kept(r, t).unwrap_err().to_string();
    assert!(
        e.contains("'to_features'") && e.contains("must be reshaped to [N, 32]"),
        "{e}"
    );
    // Flatten (axis 1) completes the select too.
    let flatten = NodeProto {
        name: "flat_token".into(),
        op_type: "Flatten".into(),
        input: vec![String::new()],
        attribute: vec![AttributeProto {
            name: "axis".into(),
            type_: EnumOrUnknown::new(AttributeType::INT),
            i: 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    let im = vit_token_kept(flatten, None).unwrap();
    assert!(
        im.graph
            .nodes()
            .iter()
            .any(|n| matches!(n.op, Op::TokenSelect(_)))
    );
}

#[test]
fn an_add_of_tokens_reads_a_constant_expanded_over_the_dynamic_batch() {
    for name in ["tv_vit_ts17_dynbatch", "tv_vit_dyn18_dynbatch"] {
        // The position embedding [1, T, F] expanded with the class token's target
        // [N, 1, 1] before the Add: one sample's value, which the Add broadcasts.
        let im = vit_import(name, |g| {
            let target = g.node.iter().find(|n| n.op_type == "Expand").unwrap().input[1].clone();
            let add = g
                .node
                .iter()
                .position(|n| {
                    n.op_type == "Add"
                        && n.input.iter().any(|i| {
                            g.initializer
                                .iter()
                                .any(|t| t.name == *i && t.dims.len() == 3 && t.dims[1] > 1)
                        })
                })
                .unwrap();
            let k = g.node[add]
                .input
                .iter()
                .position(|i| g.initializer.iter().any(|t| t.name == *i))
                .unwrap();
            let pos = std::mem::replace(&mut g.node[add].input[k], "pos_expanded".into());
            g.node.insert(
                add,
                NodeProto {
                    name: "expand_pos".into(),
                    op_type: "Expand".into(),
                    input: vec![pos, target],
                    output: vec!["pos_expanded".into()],
                    ..Default::default()
                },
            );
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            im.graph
                .nodes()
                .iter()
                .any(|n| matches!(n.op, Op::PositionEmbedding(_))),
            "{name}"
        );
        // An Add of two constants reads it as no broadcasting reader: refused.
        let e = vit_import(name, |g| {
            let out = g
                .node
                .iter()
                .find(|n| n.op_type == "Expand")
                .unwrap()
                .output[0]
                .clone();
            g.node.push(NodeProto {
                name: "add_consts".into(),
                op_type: "Add".into(),
                input: vec![out.clone(), out],
                output: vec!["add_consts_out".into()],
                ..Default::default()
            });
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("'add_consts'") && e.contains("expanded over the dynamic batch"),
            "{name}: {e}"
        );
    }
}

#[test]
fn the_fixed_batch_hint_is_given_only_for_a_dynamic_batch() {
    // TinyPairs: `x.reshape(x.shape[0] // 2, -1)`; with the input's batch made fixed the
    // division still reads the batch symbol, but exporting with a fixed batch is no advice.
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/refused/tiny_pairs_ts17.onnx");
    let mut m = ModelProto::parse_from_bytes(&std::fs::read(p).unwrap()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let Some(type_proto::Value::TensorType(t)) = &mut g.input[0].type_.as_mut().unwrap().value
    else {
        panic!("input type");
    };
    t.shape.as_mut().unwrap().dim[0] = dim("4");
    let e = fair_onnx::import(&m.write_to_bytes().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'/Div'") && e.contains("Div of batch and 2") && !e.contains("fixed batch"),
        "{e}"
    );
}

#[test]
fn the_in_proj_output_before_its_bias_is_read_only_by_the_add() {
    for name in ["tv_vit_ts17", "tv_vit_dyn18"] {
        // Another reader of the fused in_proj's MatMul (sequence-first tokens) would see the
        // bias its Add gives it: refused at the Add, naming it.
        let e = vit_import(name, |g| {
            let mm = g
                .node
                .iter()
                .find(|n| {
                    n.op_type == "MatMul"
                        && g.node.iter().any(|m| {
                            m.op_type == "Add"
                                && m.input.contains(&n.output[0])
                                && m.input.iter().any(|i| i.ends_with("in_proj_bias"))
                        })
                })
                .unwrap();
            let out = mm.output[0].clone();
            g.node.push(NodeProto {
                name: "pre_bias_reader".into(),
                op_type: "Identity".into(),
                input: vec![out],
                output: vec!["pre_bias_out".into()],
                ..Default::default()
            });
        })
        .unwrap_err()
        .to_string();
        let g = fixture_graph(name);
        let bias_add = |m: &&NodeProto| {
            m.op_type == "Add" && m.input.iter().any(|i| i.ends_with("in_proj_bias"))
        };
        let add = &g.node.iter().find(bias_add).unwrap().name;
        assert!(
            e.contains(&format!("'{add}'")) && e.contains("nothing else reads"),
            "{name}: {e}"
        );
    }
}

#[test]
fn a_sequence_first_reshape_outside_the_pattern_lists_the_targets_that_fit() {
    // In tv_vit_dyn18 (batch 2), the Reshape of q (`from_gather`) or of the fused q, k, v
    // given `target`.
    let with = |from_gather: bool, target: &[i64]| {
        vit_import("tv_vit_dyn18", |g| {
            let produced_by = |name: &str, op: &str| {
                g.node
                    .iter()
                    .any(|m| m.op_type == op && m.output[0] == name)
            };
            let read_by =
                |name: &str, op: &str| g.node.iter().any(|m| m.op_type == op && m.input[0] == name);
            let at = (g.node.iter())
                .position(|n| {
                    n.op_type == "Reshape"
                        && if from_gather {
                            // q: a Gather of the packed [3, T, N, E].
                            g.node.iter().any(|m| {
                                m.op_type == "Gather"
                                    && m.output[0] == n.input[0]
                                    && produced_by(&m.input[0], "Squeeze")
                            })
                        } else {
                            read_by(&n.output[0], "Unsqueeze")
                        }
                })
                .unwrap();
            let r = &mut g.node[at];
            r.input[1] = "odd_shape".into();
            g.initializer.push(int64s("odd_shape", target));
        })
        .unwrap_err()
        .to_string()
    };
    // The fused q, k, v [17, N, 96]: both alternatives, each in brackets.
    let e = with(false, &[17, 2, 4, 24]);
    assert!(
        e.contains("expected a Reshape to [17, N, 3, 32] (the fused q, k, v) or [17, N·H, d] (the heads, 96 = H·d), found [17, 2, 4, 24]"),
        "{e}"
    );
    // q [17, N, 32]: 32 is not 3·E, so only the heads.
    let e = with(true, &[17, 5, 7]);
    assert!(
        e.contains("expected a Reshape to [17, N·H, d] (the heads, 32 = H·d), found [17, 5, 7]"),
        "{e}"
    );
}

/// The token model with its first tokens-to-rows target `[-1, 8]` computed as TorchScript
/// writes `x.reshape(B * T, F)`: `[Shape(norm)[0] · rows_per_sample, 8]`.
fn token_model_with_counted_rows(rows_per_sample: i64) -> ModelProto {
    let g = token_model();
    let t = tensors_for(&g);
    let bytes = fair_onnx::export(&g, &t, &ExportOptions { opset: 17 }).unwrap();
    let mut m = ModelProto::parse_from_bytes(&bytes).unwrap();
    let g = graph(&mut m);
    g.initializer.push(TensorProto {
        name: "zero".into(),
        data_type: DataType::INT64 as i32,
        int64_data: vec![0],
        ..Default::default()
    });
    g.initializer.push(TensorProto {
        name: "per_sample".into(),
        data_type: DataType::INT64 as i32,
        int64_data: vec![rows_per_sample],
        ..Default::default()
    });
    g.initializer.push(int64s("axes", &[0]));
    g.initializer.push(int64s("features", &[8]));
    let int_attr = |name: &str, i: i64| AttributeProto {
        name: name.into(),
        type_: EnumOrUnknown::new(AttributeType::INT),
        i,
        ..Default::default()
    };
    let mut gather = node("Gather", "/Gather", &["s", "zero"], "b");
    gather.attribute.push(int_attr("axis", 0));
    let mut concat = node("Concat", "/Concat", &["bt1", "features"], "rows_target");
    concat.attribute.push(int_attr("axis", 0));
    let at = g.node.iter().position(|n| n.name == "fc1.to_rows").unwrap();
    let steps = [
        node("Shape", "/Shape", &["norm"], "s"),
        gather,
        node("Mul", "/Mul", &["b", "per_sample"], "bt"),
        node("Unsqueeze", "/Unsqueeze", &["bt", "axes"], "bt1"),
        concat,
    ];
    for (k, n) in steps.into_iter().enumerate() {
        g.node.insert(at + k, n);
    }
    let rows = &mut g.node[at + 5];
    assert_eq!(rows.name, "fc1.to_rows");
    rows.input[1] = "rows_target".into();
    m
}

#[test]
fn tokens_to_rows_counted_from_a_dynamic_batch_import_as_rows() {
    // [T·batch, F] with T = 6 tokens: the same rows as [-1, F].
    let m = token_model_with_counted_rows(6);
    let back = import(&m).unwrap();
    assert_eq!(back.graph, token_model());
    // 5·batch rows of 8 are not the 6 tokens of each sample: refused, naming the node.
    let e = import(&token_model_with_counted_rows(5))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("fc1.to_rows") && e.contains("[N, 6, 8] is reshaped to [5·batch, 8]"),
        "{e}"
    );
}

#[test]
fn timm_attention_steps_outside_the_fused_qkv_pattern_are_errors_naming_the_node() {
    for name in ["timm_vit_ts17", "timm_vit_dyn18"] {
        // As exported, it imports.
        vit_import(name, |_| {}).unwrap();
        // The permutation of the fused q, k, v [N, T, 3, H, d] other than [2, 0, 3, 1, 4].
        let (node, e) = vit_with(name, |g| {
            let n = g
                .node
                .iter_mut()
                .find(|n| {
                    n.op_type == "Transpose"
                        && n.attribute.iter().any(|a| a.ints == [2, 0, 3, 1, 4])
                })
                .unwrap();
            n.attribute[0].ints = vec![2, 0, 1, 3, 4];
            n.name.clone()
        });
        assert!(
            e.contains(&format!("'{node}'"))
                && e.contains("which only a Transpose [2, 0, 3, 1, 4] may read")
                && e.contains("timm's Attention")
                && e.contains("found perm [2, 0, 1, 3, 4]"),
            "{name}: {e}"
        );
    }
    // TorchScript's unbind: a Split on axis 0 into three; here on axis 1.
    let (node, e) = vit_with("timm_vit_ts17", |g| {
        let n = g.node.iter_mut().find(|n| n.op_type == "Split").unwrap();
        n.attribute.iter_mut().find(|a| a.name == "axis").unwrap().i = 1;
        n.name.clone()
    });
    assert!(
        e.contains(&format!("'{node}'"))
            && e.contains("expected a Split on axis 0 into three parts of 1"),
        "{e}"
    );
    // The dynamo exporter's unbind: three Slices [i, i+1) on axis 0; here the first one
    // takes [0, 2) (q and k together).
    let (node, e) = vit_with("timm_vit_dyn18", |g| {
        let perm = g
            .node
            .iter()
            .find(|n| n.op_type == "Transpose" && n.attribute[0].ints == [2, 0, 3, 1, 4])
            .unwrap()
            .output[0]
            .clone();
        let slice = g
            .node
            .iter()
            .find(|n| n.op_type == "Slice" && n.input[0] == perm)
            .unwrap();
        let (name, ends) = (slice.name.clone(), slice.input[2].clone());
        let new = format!("{ends}_two");
        g.initializer.push(TensorProto {
            name: new.clone(),
            dims: vec![1],
            data_type: DataType::INT64 as i32,
            int64_data: vec![2],
            ..Default::default()
        });
        let slice = g.node.iter_mut().find(|n| n.name == name).unwrap();
        slice.input[2] = new;
        name
    });
    assert!(
        e.contains(&format!("'{node}'"))
            && e.contains("expected a Slice [i, i+1) with step 1 on axis 0"),
        "{e}"
    );
    // The same part (q) taken twice: the second Slice also takes [0, 1).
    let (node, e) = vit_with("timm_vit_dyn18", |g| {
        let perm = g
            .node
            .iter()
            .find(|n| n.op_type == "Transpose" && n.attribute[0].ints == [2, 0, 3, 1, 4])
            .unwrap()
            .output[0]
            .clone();
        let slices: Vec<usize> = (0..g.node.len())
            .filter(|&i| g.node[i].op_type == "Slice" && g.node[i].input[0] == perm)
            .collect();
        let first = g.node[slices[0]].input.clone();
        g.node[slices[1]].input = first;
        // The Squeeze of the second part takes q a second time.
        let out = g.node[slices[1]].output[0].clone();
        g.node
            .iter()
            .find(|n| n.op_type == "Squeeze" && n.input[0] == out)
            .unwrap()
            .name
            .clone()
    });
    assert!(
        e.contains(&format!("'{node}'"))
            && e.contains("the q of the fused q, k, v")
            && e.contains("taken a second time"),
        "{e}"
    );
    // DeiT's two heads averaged: a Div of their sum by anything but one float is refused.
    let (node, e) = vit_with("timm_deit_dyn18", |g| {
        let out = g.output[0].name.clone();
        let div = g.node.iter().find(|n| n.output[0] == out).unwrap();
        assert_eq!(div.op_type, "Div");
        let (name, c) = (div.name.clone(), div.input[1].clone());
        let t = g.initializer.iter_mut().find(|t| t.name == c).unwrap();
        *t = floats(&c, &[2], &[2.0, 3.0]);
        name
    });
    assert!(
        e.contains(&format!("'{node}'"))
            && e.contains("the average of a distilled model's two heads")
            && e.contains("one non-zero float"),
        "{e}"
    );
}

#[test]
fn a_layer_scale_on_tokens_that_is_not_one_per_feature_is_an_error_naming_the_node() {
    for name in ["timm_vit_ls_avg_ts17", "timm_vit_ls_avg_dyn18"] {
        // As exported, timm's LayerScale (`x * gamma`, gamma [32]) folds into the layer
        // before it.
        vit_import(name, |_| {}).unwrap();
        // A gamma of one value per token instead: [16, 1] broadcasts, but is no per-feature
        // scale.
        let (node, e) = vit_with(name, |g| {
            let mul = g
                .node
                .iter()
                .find(|n| n.op_type == "Mul" && n.input[1].ends_with("ls1.gamma"))
                .unwrap();
            let (node, gamma) = (mul.name.clone(), mul.input[1].clone());
            let t = g.initializer.iter_mut().find(|t| t.name == gamma).unwrap();
            *t = floats(&gamma, &[16, 1], &[0.5; 16]);
            node
        });
        assert!(
            e.contains(&format!("'{node}'"))
                && e.contains("multiplying [N, 16, 32] by a constant of shape [16, 1]")
                && e.contains("[32] on tokens [N, T, 32]"),
            "{name}: {e}"
        );
    }
}

/// timm_vit_dyn18's graph `g` with each `Slice` [i, i+1) on axis 0 + `Squeeze` 0 of the
/// permuted fused q, k, v replaced by one `Gather` on `axis` of index `index(i)` (another
/// spelling of `unbind(0)` when the index is i and the axis 0).
fn unbind_by_gather(g: &mut GraphProto, index: impl Fn(i64) -> i64, axis: i64) {
    let perms: Vec<String> = g
        .node
        .iter()
        .filter(|n| n.op_type == "Transpose" && n.attribute[0].ints == [2, 0, 3, 1, 4])
        .map(|n| n.output[0].clone())
        .collect();
    assert_eq!(perms.len(), 2);
    let mut k = 0;
    for perm in perms {
        for i in 0..3 {
            // The first Slice left (the ones before it are Gathers now).
            let s = g
                .node
                .iter()
                .position(|n| n.op_type == "Slice" && n.input[0] == perm)
                .unwrap();
            let out = g.node[s].output[0].clone();
            let sq = g
                .node
                .iter()
                .position(|n| n.op_type == "Squeeze" && n.input[0] == out)
                .unwrap();
            let index_name = format!("gather_index_{k}");
            k += 1;
            g.initializer.push(TensorProto {
                name: index_name.clone(),
                dims: vec![],
                data_type: DataType::INT64 as i32,
                int64_data: vec![index(i)],
                ..Default::default()
            });
            let axis = AttributeProto {
                name: "axis".into(),
                type_: EnumOrUnknown::new(AttributeType::INT),
                i: axis,
                ..Default::default()
            };
            g.node[s] = NodeProto {
                name: format!("unbind_gather_{k}"),
                op_type: "Gather".into(),
                input: vec![perm.clone(), index_name],
                output: vec![g.node[sq].output[0].clone()],
                attribute: vec![axis],
                ..Default::default()
            };
            g.node.remove(sq);
        }
    }
}

#[test]
fn timm_qkv_unbound_by_gather_reads_as_the_same_graph_as_by_slice_and_squeeze() {
    let gathered = vit_import("timm_vit_dyn18", |g| unbind_by_gather(g, |i| i, 0)).unwrap();
    let sliced = vit_import("timm_vit_dyn18", |_| {}).unwrap();
    assert_eq!(gathered.graph.nodes(), sliced.graph.nodes());
    assert!(
        gathered
            .graph
            .nodes()
            .iter()
            .any(|n| n.name == "blocks.1.attn.v_proj")
    );
    assert_eq!(gathered.tensors, sliced.tensors);
    // Axis -5 of the permuted [3, N, H, T, d] is axis 0: the same graph.
    let negative = vit_import("timm_vit_dyn18", |g| unbind_by_gather(g, |i| i, -5)).unwrap();
    assert_eq!(negative.graph.nodes(), sliced.graph.nodes());
    // An index other than 0, 1, 2, or another axis: refused, naming the Gather.
    for (index, axis) in [(3, 0), (-1, 0), (0, 1), (0, -4)] {
        let e = vit_import("timm_vit_dyn18", |g| {
            unbind_by_gather(g, |i| if i == 0 { index } else { i }, axis)
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("'unbind_gather_1'")
                && e.contains("expected a Gather of index 0, 1 or 2 (q, k, v) on axis 0"),
            "index {index}, axis {axis}: {e}"
        );
    }
}

/// In timm_vit_dyn18's graph `g`: the position of the first `Slice` of the permuted fused
/// q, k, v (q's), and of the `Squeeze` that reads it.
fn first_unbind_slice(g: &GraphProto) -> (usize, usize) {
    let perm = g
        .node
        .iter()
        .find(|n| n.op_type == "Transpose" && n.attribute[0].ints == [2, 0, 3, 1, 4])
        .unwrap()
        .output[0]
        .clone();
    let s = (g.node.iter())
        .position(|n| n.op_type == "Slice" && n.input[0] == perm)
        .unwrap();
    let out = &g.node[s].output[0];
    let sq = (g.node.iter())
        .position(|n| n.op_type == "Squeeze" && &n.input[0] == out)
        .unwrap();
    (s, sq)
}

#[test]
fn timm_qkv_unbind_steps_outside_the_pattern_are_errors_naming_the_node() {
    // q's Slice [0, 1) with step 2, or on axis 1 (axes given as input 3, steps as 4).
    for (axes, steps, found) in [
        (0, 2, "axes Some([0]), steps Some([2])"),
        (1, 1, "axes Some([1]), steps Some([1])"),
    ] {
        let (node, e) = vit_with("timm_vit_dyn18", |g| {
            let (s, _) = first_unbind_slice(g);
            g.initializer.push(int64s("odd_axes", &[axes]));
            g.initializer.push(int64s("odd_steps", &[steps]));
            let slice = &mut g.node[s];
            slice.input.truncate(3);
            slice.input.extend(["odd_axes".into(), "odd_steps".into()]);
            slice.name.clone()
        });
        assert!(
            e.contains(&format!("'{node}'"))
                && e.contains("expected a Slice [i, i+1) with step 1 on axis 0")
                && e.contains(found),
            "{e}"
        );
    }
    // q's Squeeze of axis 1 instead of 0: refused, naming it.
    let (node, e) = vit_with("timm_vit_dyn18", |g| {
        let (_, sq) = first_unbind_slice(g);
        g.initializer.push(int64s("axis_one", &[1]));
        g.node[sq].input[1] = "axis_one".into();
        g.node[sq].name.clone()
    });
    assert!(
        e.contains(&format!("'{node}'"))
            && e.contains("the q of the fused q, k, v")
            && e.contains("which only a Squeeze of axis 0 may read"),
        "{e}"
    );
    // Squeeze -5 is Squeeze 0 of [1, N, H, T, d], and a Split on axis -5 is on axis 0: both
    // read as written with 0.
    let plain = vit_import("timm_vit_dyn18", |_| {}).unwrap();
    let negative = vit_import("timm_vit_dyn18", |g| {
        let (_, sq) = first_unbind_slice(g);
        g.initializer.push(int64s("axis_minus_five", &[-5]));
        g.node[sq].input[1] = "axis_minus_five".into();
    })
    .unwrap();
    assert_eq!(negative.graph.nodes(), plain.graph.nodes());
    let plain = vit_import("timm_vit_ts17", |_| {}).unwrap();
    let negative = vit_import("timm_vit_ts17", |g| {
        for n in g.node.iter_mut().filter(|n| n.op_type == "Split") {
            n.attribute.iter_mut().find(|a| a.name == "axis").unwrap().i = -5;
        }
    })
    .unwrap();
    assert_eq!(negative.graph.nodes(), plain.graph.nodes());
}

/// In a timm fixture's graph `g`: the position of the first `Reshape` of the fused qkv
/// (the one the `Transpose` [2, 0, 3, 1, 4] reads).
fn qkv_reshape(g: &GraphProto) -> usize {
    let perm_input = &g
        .node
        .iter()
        .find(|n| n.op_type == "Transpose" && n.attribute[0].ints == [2, 0, 3, 1, 4])
        .unwrap()
        .input[0];
    (g.node.iter())
        .position(|n| n.op_type == "Reshape" && &n.output[0] == perm_input)
        .unwrap()
}

#[test]
fn the_fused_qkv_is_read_only_by_its_reshape_and_must_be_a_linear_layer() {
    for name in ["timm_vit_ts17", "timm_vit_dyn18"] {
        // Another reader of the fused qkv: refused at the Reshape, naming the reader.
        let (who, e) = vit_with(name, |g| {
            let at = qkv_reshape(g);
            let fused = g.node[at].input[0].clone();
            g.node.push(node("Relu", "peek", &[&fused], "peek_out"));
            g.node[at].name.clone()
        });
        assert!(
            e.contains(&format!("'{who}'"))
                && e.contains("is also read by 'peek'")
                && e.contains("timm's Attention"),
            "{name}: {e}"
        );
        // The same with the Reshape reading the fused qkv through an `Identity` (an alias
        // of the same value) and the other reader after it.
        let (who, e) = vit_with(name, |g| {
            let at = qkv_reshape(g);
            let fused = g.node[at].input[0].clone();
            g.node[at].input[0] = "fused_alias".into();
            let reshape = g.node[at].name.clone();
            g.node
                .insert(at, node("Identity", "alias", &[&fused], "fused_alias"));
            g.node.push(node("Relu", "peek", &[&fused], "peek_out"));
            reshape
        });
        assert!(
            e.contains(&format!("'{who}'"))
                && e.contains("is also read by 'peek'")
                && e.contains("timm's Attention"),
            "{name}: {e}"
        );
        // The tokens reshaped to [N, T, 3, H, d] come from a Relu of the fused qkv, not from
        // the linear layer: refused, naming the Reshape.
        let (who, e) = vit_with(name, |g| {
            let at = qkv_reshape(g);
            let fused = g.node[at].input[0].clone();
            g.node[at].input[0] = "not_linear".into();
            let reshape = g.node[at].name.clone();
            g.node
                .insert(at, node("Relu", "relu_qkv", &[&fused], "not_linear"));
            reshape
        });
        assert!(
            e.contains(&format!("'{who}'"))
                && e.contains("must be the output of the fused qkv linear layer"),
            "{name}: {e}"
        );
    }
}

#[test]
fn timm_qk_norm_is_refused_naming_the_node() {
    // timm's `qk_norm=True`: a LayerNormalization of q's heads [N, H, T, 8] (as the
    // dynamo exporter writes it) before q is scaled.
    let (who, e) = vit_with("timm_vit_dyn18", |g| {
        let (_, sq) = first_unbind_slice(g);
        let q = g.node[sq].output[0].clone();
        let reader = (g.node.iter())
            .position(|n| n.op_type == "Mul" && n.input[0] == q)
            .unwrap();
        g.node[reader].input[0] = "q_normed".into();
        g.initializer.push(floats("q_norm.weight", &[8], &[1.0; 8]));
        g.initializer.push(floats("q_norm.bias", &[8], &[0.0; 8]));
        let mut ln = node(
            "LayerNormalization",
            "q_norm",
            &[&q, "q_norm.weight", "q_norm.bias"],
            "q_normed",
        );
        ln.attribute.push(AttributeProto {
            name: "axis".into(),
            type_: EnumOrUnknown::new(AttributeType::INT),
            i: -1,
            ..Default::default()
        });
        g.node.insert(sq + 1, ln);
        "q_norm".to_owned()
    });
    assert!(
        e.contains(&format!("'{who}'"))
            && e.contains("LayerNormalization is supported over the features of tokens"),
        "{e}"
    );
}

#[test]
fn deits_head_average_folds_only_into_heads_read_by_nothing_else() {
    // The divisor [1, 1] keeps the sum's shape [N, 10]: it folds as the scalar does.
    let plain = vit_import("timm_deit_dyn18", |_| {}).unwrap();
    let with_divisor = |dims: &'static [i64]| {
        vit_import("timm_deit_dyn18", move |g| {
            let out = g.output[0].name.clone();
            let div = g.node.iter().find(|n| n.output[0] == out).unwrap();
            let c = div.input[1].clone();
            let t = g.initializer.iter_mut().find(|t| t.name == c).unwrap();
            *t = floats(&c, dims, &[2.0]);
        })
    };
    let kept = with_divisor(&[1, 1]).unwrap();
    assert_eq!(kept.graph.nodes(), plain.graph.nodes());
    assert_eq!(kept.tensors, plain.tensors);
    // [1, 1, 1] would broadcast the sum to [1, N, 10]: refused, naming the Div.
    let e = with_divisor(&[1, 1, 1]).unwrap_err().to_string();
    assert!(
        e.contains("'node_div'")
            && e.contains("of rank at most 2")
            && e.contains("found shape [1, 1, 1]"),
        "{e}"
    );
    // A Relu reading the head's output: the folding would change what it reads; refused,
    // naming the Div and the head.
    let (who, e) = vit_with("timm_deit_dyn18", |g| {
        let out = g.output[0].name.clone();
        let div = g.node.iter().find(|n| n.output[0] == out).unwrap();
        let name = div.name.clone();
        let sum = div.input[0].clone();
        let add = g.node.iter().find(|n| n.output[0] == sum).unwrap();
        let head = g.node.iter().find(|n| n.output[0] == add.input[0]).unwrap();
        assert!(head.input.iter().any(|i| i == "head.weight"));
        let head_out = head.output[0].clone();
        g.node.push(node("Relu", "peek", &[&head_out], "peek_out"));
        name
    });
    assert!(
        e.contains(&format!("'{who}'"))
            && e.contains("the average of a distilled model's two heads")
            && e.contains("'head' is read elsewhere"),
        "{e}"
    );
}

#[test]
fn a_gather_of_the_packed_in_proj_on_a_negative_axis_is_on_axis_0() {
    for name in ["tv_vit_ts17", "tv_vit_dyn18"] {
        let plain = vit_import(name, |_| {}).unwrap();
        // The packed q, k, v are [3, T, N, E]: axis -4 is axis 0.
        let negative = vit_import(name, |g| {
            let packed: Vec<String> = (g.node.iter())
                .filter(|n| n.op_type == "Squeeze")
                .map(|n| n.output[0].clone())
                .collect();
            let mut k = 0;
            for n in g.node.iter_mut() {
                if n.op_type == "Gather" && packed.contains(&n.input[0]) {
                    n.attribute.retain(|a| a.name != "axis");
                    n.attribute.push(AttributeProto {
                        name: "axis".into(),
                        type_: EnumOrUnknown::new(AttributeType::INT),
                        i: -4,
                        ..Default::default()
                    });
                    k += 1;
                }
            }
            assert_eq!(k, 6, "{name}");
        })
        .unwrap();
        assert_eq!(negative.graph.nodes(), plain.graph.nodes(), "{name}");
    }
}

#[test]
fn the_second_constant_token_is_named_after_its_parameter() {
    let tokens = |im: &fair_onnx::Imported| -> Vec<String> {
        (im.graph.nodes().iter())
            .filter(|n| matches!(n.op, Op::ClassToken(_)))
            .map(|n| n.name.clone())
            .collect()
    };
    // DeiT's distillation token, as TorchScript writes it (`Expand` of `dist_token`) and
    // as dynamo does (the `expand_1` folded for the fixed batch: named by its role).
    for name in ["timm_deit_ts17", "timm_deit_dyn18"] {
        let im = vit_import(name, |_| {}).unwrap();
        assert_eq!(tokens(&im)[0], "dist_token", "{name}");
    }
    // A register token: named after its parameter.
    let im = vit_import("timm_deit_ts17", |g| {
        for t in g.initializer.iter_mut().filter(|t| t.name == "dist_token") {
            t.name = "reg_token".into();
        }
        for n in g.node.iter_mut() {
            for i in n.input.iter_mut().filter(|i| *i == "dist_token") {
                *i = "reg_token".into();
            }
        }
    })
    .unwrap();
    assert_eq!(tokens(&im)[0], "reg_token");
}

#[test]
fn constant_tokens_before_the_tokens_become_class_tokens_in_order() {
    // tv_vit_ts17_dynbatch with its class token replaced by a constant of two tokens
    // [1, 2, 32] (rows 0.25 and -0.5 everywhere) and its first patch dropped by a Slice of
    // the token axis (`x[:, 1:]`, a `token_range`), so that 17 tokens still reach the
    // position embedding: [reg 0, reg 1, patches 1..16].
    let imported = vit_import("tv_vit_ts17_dynbatch", |g| {
        let (cat, _) = class_concat(g);
        let mut reg = TensorProto::new();
        reg.name = "reg_token".into();
        reg.dims = vec![1, 2, 32];
        reg.data_type = DataType::FLOAT as i32;
        reg.float_data = [vec![0.25; 32], vec![-0.5; 32]].concat();
        g.initializer.push(reg);
        let at = g.node.iter().position(|n| n.name == cat).unwrap();
        let patches = g.node[at].input[1].clone();
        for (name, v) in [("starts", 1), ("ends", i64::MAX), ("axes", 1)] {
            let mut t = TensorProto::new();
            t.name = format!("drop_first.{name}");
            t.dims = vec![1];
            t.data_type = DataType::INT64 as i32;
            t.int64_data = vec![v];
            g.initializer.push(t);
        }
        let mut slice = NodeProto::new();
        slice.name = "drop_first".into();
        slice.op_type = "Slice".into();
        slice.input = vec![
            patches,
            "drop_first.starts".into(),
            "drop_first.ends".into(),
            "drop_first.axes".into(),
        ];
        slice.output = vec!["drop_first_out".into()];
        let n = &mut g.node[at];
        n.input = vec!["reg_token".into(), "drop_first_out".into()];
        g.node.insert(at, slice);
    })
    .unwrap();
    let g = &imported.graph;
    let range = g.node("drop_first").unwrap();
    assert!(
        matches!(
            range.op,
            Op::TokenRange(fair_ir::TokenRange { start: 1, end: 16 })
        ),
        "{:?}",
        range.op
    );
    assert_eq!(g.shape("drop_first").unwrap(), [15, 32]);
    let tokens: Vec<&Node> = (g.nodes().iter())
        .filter(|n| matches!(n.op, Op::ClassToken(_)))
        .collect();
    // Emitted from the last token to the first, each reading the one before.
    let names: Vec<&str> = tokens.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["reg_token_1", "reg_token_0"]);
    assert_eq!(tokens[0].inputs, ["drop_first"]);
    assert_eq!(tokens[1].inputs, ["reg_token_1"]);
    let weight = |node: &str| match &(imported.tensors.iter())
        .find(|t| t.name == format!("{node}.weight"))
        .unwrap_or_else(|| panic!("no weight of {node}"))
        .data
    {
        fair_onnx::TensorData::F32(v) => v.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(weight("reg_token_0"), vec![0.25; 32]);
    assert_eq!(weight("reg_token_1"), vec![-0.5; 32]);
    assert_eq!(g.shape("reg_token_0").unwrap(), [17, 32]);
}

/// A concat of tokens `[N, T, F]` reads back as `concat` only along the features (axis 2,
/// what the exporter writes); along the tokens (axis 1) it is refused, not read as a
/// concatenation of features.
#[test]
fn a_concat_of_tokens_imports_only_along_the_features() {
    let mut b = GraphBuilder::new("g", "input", vec![6, 4]);
    b.add("cat", fair_ir::Concat {}.into(), &["input", "input"])
        .unwrap();
    let g = b.finish().unwrap();
    assert_eq!(g.shape("cat").unwrap(), [6, 8]);
    let bytes = fair_onnx::export(&g, &[], &ExportOptions::default()).unwrap();
    assert_eq!(fair_onnx::import(&bytes).unwrap().graph, g);
    let mut m = ModelProto::parse_from_bytes(&bytes).unwrap();
    let cat = graph(&mut m)
        .node
        .iter_mut()
        .find(|n| n.op_type == "Concat")
        .unwrap();
    let axis = cat.attribute.iter_mut().find(|a| a.name == "axis").unwrap();
    assert_eq!(axis.i, 2);
    axis.i = 1;
    let e = import(&m).unwrap_err().to_string();
    assert!(e.contains("along their features"), "{e}");
}
