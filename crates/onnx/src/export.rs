//! IR → ONNX.
//!
//! Each op's contract says how it is written ([`fair_ir::Contract::onnx`], an
//! [`fair_ir::OnnxSpec`]: nodes, attributes, constants, which inputs and parameters they
//! read); this module only turns those answers into protobuf and names no op. Most ops are
//! one ONNX node (a few take two or more: `silu` is `Sigmoid` + `Mul`, `gelu` below opset 20
//! is its `Erf` or `Tanh` formula). ONNX node names are the IR node names, the
//! values they compute carry the same names (the input is `input`, the output `output`), and
//! weights are initializers named as the IR's parameters — so [`crate::import`] gives the
//! same graph back.

use std::collections::{HashMap, HashSet};

use fair_ir::{
    Graph, NameBase, Node, OnnxAttr, OnnxConst, OnnxContext, OnnxDecl, OnnxRef, OnnxSpec,
    ParamKind, Role,
};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{Dimension, dimension};
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};
use protobuf::{EnumOrUnknown, MessageField};

use crate::{META_MEAN, META_NAME, META_STD, OnnxError, Tensor, TensorData, check_tensors};

/// Options for [`export`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// The ONNX opset (default 17; at least 14, for `HardSwish`). From 20 on, `gelu` is
    /// written as ONNX's `Gelu` op instead of its formula.
    pub opset: i64,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { opset: 17 }
    }
}

/// Writes `graph` with `tensors` (exactly its parameters, see [`crate::check_tensors`]) as an
/// ONNX model: input `input` of shape `[batch, ...]` with a symbolic batch dimension, output
/// `output`, weights as float32 initializers named as the parameters (`num_batches_tracked`
/// is not written: ONNX's BatchNormalization has no use for it). The graph's name and the
/// input's mean and std (when recorded) go into `metadata_props` ([`crate::META_NAME`],
/// [`crate::META_MEAN`], [`crate::META_STD`]).
pub fn export(
    graph: &Graph,
    tensors: &[Tensor],
    options: &ExportOptions,
) -> Result<Vec<u8>, OnnxError> {
    if !(14..=23).contains(&options.opset) {
        return Err(OnnxError::Model {
            detail: format!(
                "cannot export at opset {}: fair-pruner writes opsets 14 to 23",
                options.opset
            ),
        });
    }
    check_tensors(graph, tensors)?;
    // Each node's spelling, from its contract; an op needing a newer opset is refused before
    // anything is written.
    let specs: Vec<Result<OnnxSpec, String>> = graph
        .nodes()
        .iter()
        .map(|n| {
            let inputs: Vec<&[usize]> = n
                .inputs
                .iter()
                .map(|i| graph.shape(i).unwrap_or(&[]))
                .collect();
            n.op.contract().onnx(&OnnxContext {
                opset: options.opset,
                inputs: &inputs,
            })
        })
        .collect();
    for (n, spec) in graph.nodes().iter().zip(&specs) {
        if let Ok(OnnxSpec {
            min_opset: Some((min, op_type)),
            ..
        }) = spec
            && options.opset < *min
        {
            return Err(OnnxError::Model {
                detail: format!(
                    "'{}' ({}) needs ONNX's {op_type}, which exists from opset {min} on; \
                     export at opset {min} or newer",
                    n.name,
                    n.op.type_name()
                ),
            });
        }
    }
    let mut w = Writer::new(graph, tensors);
    for (node, spec) in graph.nodes().iter().zip(specs) {
        let spec = spec.map_err(|detail| OnnxError::Export {
            node: node.name.clone(),
            op: node.op.type_name().to_owned(),
            detail,
        })?;
        w.node(node, spec);
    }
    if graph.nodes().len() == 1 {
        // The input is the output.
        w.emit(
            "Identity",
            "output",
            vec!["input".into()],
            "output".into(),
            vec![],
        );
    }
    let input = graph.input();
    let output = graph.output();
    let mut g = GraphProto {
        name: graph.name().to_owned(),
        node: std::mem::take(&mut w.nodes),
        initializer: std::mem::take(&mut w.inits),
        ..Default::default()
    };
    g.input
        .push(value_info("input", graph.shape(&input.name).unwrap_or(&[])));
    g.output.push(value_info(
        "output",
        graph.shape(&output.name).unwrap_or(&[]),
    ));
    let mut model = ModelProto {
        ir_version: match options.opset {
            ..=18 => 8,
            19..=20 => 9,
            21..=22 => 10,
            _ => 11,
        },
        producer_name: "fair-pruner".to_owned(),
        producer_version: env!("CARGO_PKG_VERSION").to_owned(),
        graph: MessageField::some(g),
        ..Default::default()
    };
    model.opset_import.push(OperatorSetIdProto {
        domain: String::new(),
        version: options.opset,
        ..Default::default()
    });
    let mut meta = |key: &str, value: String| {
        model.metadata_props.push(StringStringEntryProto {
            key: key.to_owned(),
            value,
            ..Default::default()
        })
    };
    meta(META_NAME, graph.name().to_owned());
    if let Some(i) = input.op.as_input() {
        let json = |v: &[f64]| serde_json::to_string(v).unwrap_or_default();
        if let Some(m) = &i.mean {
            meta(META_MEAN, json(m));
        }
        if let Some(s) = &i.std {
            meta(META_STD, json(s));
        }
    }
    model.write_to_bytes().map_err(|e| OnnxError::Model {
        detail: format!("cannot encode the ONNX model: {e}"),
    })
}

/// `[batch, shape...]` float32.
fn value_info(name: &str, shape: &[usize]) -> ValueInfoProto {
    let mut dims = vec![Dimension {
        value: Some(dimension::Value::DimParam("batch".to_owned())),
        ..Default::default()
    }];
    dims.extend(shape.iter().map(|&d| Dimension {
        value: Some(dimension::Value::DimValue(d as i64)),
        ..Default::default()
    }));
    let tensor = type_proto::Tensor {
        elem_type: DataType::FLOAT as i32,
        shape: MessageField::some(TensorShapeProto {
            dim: dims,
            ..Default::default()
        }),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.to_owned(),
        type_: MessageField::some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn float_tensor(name: &str, dims: &[usize], v: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_owned(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: DataType::FLOAT as i32,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An attribute as protobuf.
fn attr(name: &str, a: OnnxAttr) -> AttributeProto {
    let mut p = AttributeProto {
        name: name.to_owned(),
        ..Default::default()
    };
    match a {
        OnnxAttr::Int(v) => {
            p.type_ = EnumOrUnknown::new(AttributeType::INT);
            p.i = v;
        }
        OnnxAttr::Ints(v) => {
            p.type_ = EnumOrUnknown::new(AttributeType::INTS);
            p.ints = v;
        }
        OnnxAttr::Float(v) => {
            p.type_ = EnumOrUnknown::new(AttributeType::FLOAT);
            p.f = v;
        }
        OnnxAttr::Str(v) => {
            p.type_ = EnumOrUnknown::new(AttributeType::STRING);
            p.s = v.into_bytes();
        }
    }
    p
}

/// A 1-D int64 initializer.
fn int_tensor(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: name.to_owned(),
        dims: vec![v.len() as i64],
        data_type: DataType::INT64 as i32,
        raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

struct Writer<'g> {
    tensors: HashMap<&'g str, &'g Tensor>,
    /// IR node name → the ONNX value it computes.
    values: HashMap<String, String>,
    taken: HashSet<String>,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
}

impl<'g> Writer<'g> {
    fn new(graph: &'g Graph, tensors: &'g [Tensor]) -> Self {
        let mut taken: HashSet<String> = tensors.iter().map(|t| t.name.clone()).collect();
        taken.insert("input".into());
        taken.insert("output".into());
        let mut values = HashMap::new();
        let last = graph.output().name.clone();
        for n in graph.nodes() {
            let v = if n.op.role() == Role::Input {
                "input".to_owned()
            } else if n.name == last {
                "output".to_owned()
            } else {
                let mut v = n.name.clone();
                while taken.contains(&v) {
                    v.push('_');
                }
                taken.insert(v.clone());
                v
            };
            values.insert(n.name.clone(), v);
        }
        Writer {
            tensors: tensors.iter().map(|t| (t.name.as_str(), t)).collect(),
            values,
            taken,
            nodes: Vec::new(),
            inits: Vec::new(),
        }
    }

    /// A fresh value or initializer name based on `base`.
    fn fresh(&mut self, base: String) -> String {
        let mut v = base;
        while self.taken.contains(&v) {
            v.push('_');
        }
        self.taken.insert(v.clone());
        v
    }

    fn emit(
        &mut self,
        op: &str,
        name: &str,
        inputs: Vec<String>,
        output: String,
        attrs: Vec<(&str, OnnxAttr)>,
    ) {
        self.nodes.push(NodeProto {
            op_type: op.to_owned(),
            name: name.to_owned(),
            input: inputs,
            output: vec![output],
            attribute: attrs.into_iter().map(|(k, v)| attr(k, v)).collect(),
            ..Default::default()
        });
    }

    /// Writes the node's parameters (but `num_batches_tracked`) as initializers, in spec order.
    fn params(&mut self, node: &Node) -> Vec<String> {
        let mut names = Vec::new();
        for spec in node.op.params(&node.name) {
            if spec.kind == ParamKind::NumBatchesTracked {
                continue;
            }
            if let Some(t) = self.tensors.get(spec.name.as_str())
                && let TensorData::F32(v) = &t.data
            {
                self.inits.push(float_tensor(&spec.name, &t.shape, v));
            }
            names.push(spec.name);
        }
        names
    }

    /// Writes `node` as its contract's [`OnnxSpec`] says: declarations in order (fresh
    /// values, constants, parameters), then the nodes.
    fn node(&mut self, node: &Node, spec: OnnxSpec) {
        let out = self.values[&node.name].clone();
        let ins: Vec<String> = node.inputs.iter().map(|i| self.values[i].clone()).collect();
        let name = node.name.as_str();
        let mut decls: Vec<Vec<String>> = Vec::with_capacity(spec.decls.len());
        for d in spec.decls {
            decls.push(match d {
                OnnxDecl::Temp { base, suffix } => {
                    let base = match base {
                        NameBase::Value => &out,
                        NameBase::Node => name,
                    };
                    vec![self.fresh(format!("{base}{suffix}"))]
                }
                OnnxDecl::Const { suffix, value } => {
                    let n = self.fresh(format!("{name}{suffix}"));
                    self.inits.push(match value {
                        OnnxConst::F32 { dims, values } => float_tensor(&n, &dims, &values),
                        OnnxConst::I64(v) => int_tensor(&n, &v),
                    });
                    vec![n]
                }
                OnnxDecl::Params => self.params(node),
            });
        }
        for n in spec.nodes {
            let mut inputs = Vec::new();
            for r in n.inputs {
                match r {
                    OnnxRef::Input(i) => inputs.push(ins[i].clone()),
                    OnnxRef::Inputs => inputs.extend(ins.iter().cloned()),
                    OnnxRef::Decl(j) => inputs.extend(decls[j].iter().cloned()),
                    OnnxRef::Param(j, k) => inputs.push(decls[j][k].clone()),
                }
            }
            let output = match n.output {
                None => out.clone(),
                Some(j) => decls[j][0].clone(),
            };
            self.emit(
                n.op_type,
                &format!("{name}{}", n.name_suffix),
                inputs,
                output,
                n.attributes,
            );
        }
    }
}
