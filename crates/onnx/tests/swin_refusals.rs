//! Swin Transformer exports edited so that a step leaves torchvision's pattern: each is an
//! error naming the node and what was expected, never a different model (`swin.rs`). The
//! edits are made on the fixture `tv_swin_dyn18` (see `fixtures/make_fixtures.py`).

use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{Message, ModelProto, NodeProto, TensorProto};

/// The fixture, decoded.
fn swin() -> ModelProto {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tv_swin_dyn18.onnx");
    ModelProto::parse_from_bytes(&std::fs::read(path).unwrap()).unwrap()
}

/// The import's error on `m` (it must fail).
fn refused(m: &ModelProto) -> String {
    let bytes = m.write_to_bytes().unwrap();
    match fair_onnx::import(&bytes) {
        Ok(_) => panic!("the edited model imported"),
        Err(e) => e.to_string(),
    }
}

/// Adds an initializer `name` of int64 `values` (shape `[len]`) or floats of `dims`.
fn int64s(m: &mut ModelProto, name: &str, values: &[i64]) {
    let t = TensorProto {
        name: name.to_owned(),
        dims: vec![values.len() as i64],
        data_type: DataType::INT64 as i32,
        int64_data: values.to_vec(),
        ..Default::default()
    };
    m.graph.mut_or_insert_default().initializer.push(t);
}

/// The index of the node producing `value`.
fn producer(m: &ModelProto, value: &str) -> Option<usize> {
    m.graph
        .node
        .iter()
        .position(|n| n.output.iter().any(|o| o == value))
}

/// The nodes of op type `op`, in graph order.
fn nodes<'m>(m: &'m ModelProto, op: &str) -> Vec<&'m NodeProto> {
    m.graph.node.iter().filter(|n| n.op_type == op).collect()
}

#[test]
fn the_unedited_fixture_imports() {
    assert!(fair_onnx::import(&swin().write_to_bytes().unwrap()).is_ok());
}

#[test]
fn padding_at_the_top_is_refused() {
    let mut m = swin();
    let pad = m
        .graph
        .node
        .iter()
        .position(|n| n.op_type == "Pad")
        .unwrap();
    // [N, H, W, C] padded by one row at the top instead of the bottom.
    int64s(&mut m, "top_pads", &[0, 1, 0, 0, 0, 0, 1, 0]);
    m.graph.mut_or_insert_default().node[pad].input[1] = "top_pads".into();
    let e = refused(&m);
    assert!(e.contains("(Pad)") && e.contains("bottom and right"), "{e}");
}

#[test]
fn a_concat_of_slices_that_is_no_cyclic_shift_is_refused() {
    let mut m = swin();
    // The first Concat of two Slices of one map on axis 1 (the roll): x[a:] then x[:a];
    // swapped, it is the map itself cut and glued in place, which torch.roll never writes.
    let i = m
        .graph
        .node
        .iter()
        .position(|n| {
            n.op_type == "Concat"
                && n.input.len() == 2
                && n.input.iter().all(|v| {
                    producer(&swin(), v).is_some_and(|p| swin().graph.node[p].op_type == "Slice")
                })
        })
        .expect("the roll's Concat");
    m.graph.mut_or_insert_default().node[i].input.swap(0, 1);
    let e = refused(&m);
    assert!(e.contains("cyclic shift"), "{e}");
}

#[test]
fn a_mask_that_is_not_the_shifted_window_mask_is_refused() {
    let mut m = swin();
    // The mask is added between the Reshape [N, nW, H, N, N] and the Reshape back before the
    // Softmax: replace it by zeros of its shape [1, nW, 1, N, N] (4 windows of 16 tokens).
    let softmax: Vec<String> = nodes(&m, "Softmax")
        .iter()
        .map(|n| n.input[0].clone())
        .collect();
    let add = softmax
        .iter()
        .filter_map(|v| producer(&m, v))
        .filter(|&p| m.graph.node[p].op_type == "Reshape")
        .filter_map(|p| producer(&m, &m.graph.node[p].input[0]))
        .find(|&p| m.graph.node[p].op_type == "Add")
        .expect("the mask's Add");
    let zeros = TensorProto {
        name: "zero_mask".into(),
        dims: vec![1, 4, 1, 16, 16],
        data_type: DataType::FLOAT as i32,
        float_data: vec![0.0; 4 * 16 * 16],
        ..Default::default()
    };
    let g = m.graph.mut_or_insert_default();
    g.initializer.push(zeros);
    g.node[add].input[1] = "zero_mask".into();
    let e = refused(&m);
    assert!(e.contains("must be the shifted-window mask"), "{e}");
}

#[test]
fn a_grid_read_by_an_op_over_another_axis_is_refused() {
    let mut m = swin();
    // The head's input after the last layer norm: ReduceMean over the rows (axis 1) of the
    // grid [N, H, W, C] instead of the permute and pooling would average H only.
    let t = m
        .graph
        .node
        .iter()
        .position(|n| {
            n.op_type == "Transpose"
                && n.attribute
                    .iter()
                    .any(|a| a.name == "perm" && a.ints == [0, 3, 1, 2])
        })
        .expect("the permute before the pooling");
    int64s(&mut m, "rows", &[1]);
    let g = m.graph.mut_or_insert_default();
    let node = &mut g.node[t];
    node.op_type = "ReduceMean".into();
    node.attribute.clear();
    node.input.push("rows".into());
    let e = refused(&m);
    assert!(
        e.contains("(ReduceMean)") && e.contains("only ops on each token"),
        "{e}"
    );
}
