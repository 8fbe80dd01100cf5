//! IR → ONNX.
//!
//! One ONNX node per IR node (a few ops take two or more: `silu` is `Sigmoid` + `Mul`, `gelu`
//! below opset 20 is its `Erf` or `Tanh` formula). ONNX node names are the IR node names, the
//! values they compute carry the same names (the input is `input`, the output `output`), and
//! weights are initializers named as the IR's parameters — so [`crate::import`] gives the
//! same graph back.

use std::collections::{HashMap, HashSet};

use fair_ir::{Graph, Node, Op, ParamKind};
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
    if options.opset < 17
        && let Some(n) = graph
            .nodes()
            .iter()
            .find(|n| matches!(n.op, Op::LayerNorm2d(_)))
    {
        return Err(OnnxError::Model {
            detail: format!(
                "'{}' (layer_norm2d) needs ONNX's LayerNormalization, which exists from opset 17 on; \
                 export at opset 17 or newer",
                n.name
            ),
        });
    }
    let mut w = Writer::new(graph, tensors, options.opset);
    for node in graph.nodes() {
        w.node(node)?;
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
    if let Op::Input(i) = &input.op {
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

enum A<'a> {
    Int(&'a str, i64),
    Ints(&'a str, Vec<i64>),
    Float(&'a str, f32),
    Str(&'a str, &'a str),
}

fn attr(a: A) -> AttributeProto {
    let mut p = AttributeProto::default();
    match a {
        A::Int(n, v) => {
            p.name = n.to_owned();
            p.type_ = EnumOrUnknown::new(AttributeType::INT);
            p.i = v;
        }
        A::Ints(n, v) => {
            p.name = n.to_owned();
            p.type_ = EnumOrUnknown::new(AttributeType::INTS);
            p.ints = v;
        }
        A::Float(n, v) => {
            p.name = n.to_owned();
            p.type_ = EnumOrUnknown::new(AttributeType::FLOAT);
            p.f = v;
        }
        A::Str(n, v) => {
            p.name = n.to_owned();
            p.type_ = EnumOrUnknown::new(AttributeType::STRING);
            p.s = v.as_bytes().to_vec();
        }
    }
    p
}

struct Writer<'g> {
    graph: &'g Graph,
    tensors: HashMap<&'g str, &'g Tensor>,
    opset: i64,
    /// IR node name → the ONNX value it computes.
    values: HashMap<String, String>,
    taken: HashSet<String>,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
}

impl<'g> Writer<'g> {
    fn new(graph: &'g Graph, tensors: &'g [Tensor], opset: i64) -> Self {
        let mut taken: HashSet<String> = tensors.iter().map(|t| t.name.clone()).collect();
        taken.insert("input".into());
        taken.insert("output".into());
        let mut values = HashMap::new();
        let last = graph.output().name.clone();
        for n in graph.nodes() {
            let v = if matches!(n.op, Op::Input(_)) {
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
            graph,
            tensors: tensors.iter().map(|t| (t.name.as_str(), t)).collect(),
            opset,
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

    fn emit(&mut self, op: &str, name: &str, inputs: Vec<String>, output: String, attrs: Vec<A>) {
        self.nodes.push(NodeProto {
            op_type: op.to_owned(),
            name: name.to_owned(),
            input: inputs,
            output: vec![output],
            attribute: attrs.into_iter().map(attr).collect(),
            ..Default::default()
        });
    }

    /// A scalar float initializer.
    fn scalar(&mut self, base: String, v: f32) -> String {
        let name = self.fresh(base);
        self.inits.push(float_tensor(&name, &[], &[v]));
        name
    }

    /// The `m × n` matrix of adaptive average pooling from `n` to `m` positions (its
    /// transpose, `n × m`, when `transposed`), as a float initializer.
    fn pooling_matrix(&mut self, base: String, n: usize, m: usize, transposed: bool) -> String {
        let mut p = vec![0.0f32; m * n];
        for i in 0..m {
            let (start, end) = (i * n / m, ((i + 1) * n).div_ceil(m));
            for j in start..end {
                let at = if transposed { j * m + i } else { i * n + j };
                p[at] = 1.0 / (end - start) as f32;
            }
        }
        let name = self.fresh(base);
        let dims = if transposed { [n, m] } else { [m, n] };
        self.inits.push(float_tensor(&name, &dims, &p));
        name
    }

    /// An int64 vector initializer.
    fn ints(&mut self, base: String, v: &[i64]) -> String {
        let name = self.fresh(base);
        self.inits.push(TensorProto {
            name: name.clone(),
            dims: vec![v.len() as i64],
            data_type: DataType::INT64 as i32,
            raw_data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
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

    fn node(&mut self, node: &Node) -> Result<(), OnnxError> {
        let out = self.values[&node.name].clone();
        let ins: Vec<String> = node.inputs.iter().map(|i| self.values[i].clone()).collect();
        let x = || ins[0].clone();
        let name = node.name.as_str();
        let err = |detail: String| OnnxError::Export {
            node: node.name.clone(),
            op: node.op.type_name().to_owned(),
            detail,
        };
        let pair = |p: fair_ir::Pair| vec![p.0 as i64, p.1 as i64];
        let pads = |p: fair_ir::Pair| vec![p.0 as i64, p.1 as i64, p.0 as i64, p.1 as i64];
        match &node.op {
            Op::Input(_) => {}
            Op::Conv2d(c) => {
                let mut inputs = vec![x()];
                inputs.extend(self.params(node));
                let attrs = vec![
                    A::Ints("kernel_shape", pair(c.kernel_size)),
                    A::Ints("strides", pair(c.stride)),
                    A::Ints("pads", pads(c.padding)),
                    A::Ints("dilations", pair(c.dilation)),
                    A::Int("group", c.groups as i64),
                ];
                self.emit("Conv", name, inputs, out, attrs);
            }
            Op::BatchNorm2d(_) | Op::BatchNorm1d(_) => {
                let (eps, momentum) = match &node.op {
                    Op::BatchNorm2d(b) => (b.eps, b.momentum),
                    Op::BatchNorm1d(b) => (b.eps, b.momentum),
                    _ => (1e-5, 0.1),
                };
                let mut inputs = vec![x()];
                inputs.extend(self.params(node));
                let attrs = vec![
                    A::Float("epsilon", eps as f32),
                    A::Float("momentum", (1.0 - momentum) as f32),
                ];
                self.emit("BatchNormalization", name, inputs, out, attrs);
            }
            Op::Relu(_) => self.emit("Relu", name, ins, out, vec![]),
            Op::Sigmoid(_) => self.emit("Sigmoid", name, ins, out, vec![]),
            Op::HardSwish(_) => self.emit("HardSwish", name, ins, out, vec![]),
            Op::HardSigmoid(h) => {
                let attrs = vec![
                    A::Float("alpha", h.alpha as f32),
                    A::Float("beta", h.beta as f32),
                ];
                self.emit("HardSigmoid", name, ins, out, attrs);
            }
            Op::Clip(c) => {
                let lo = self.scalar(format!("{name}.min"), c.min as f32);
                let hi = self.scalar(format!("{name}.max"), c.max as f32);
                self.emit("Clip", name, vec![x(), lo, hi], out, vec![]);
            }
            Op::Silu(_) => {
                let s = self.fresh(format!("{out}.sigmoid"));
                self.emit(
                    "Sigmoid",
                    &format!("{name}.sigmoid"),
                    ins.clone(),
                    s.clone(),
                    vec![],
                );
                self.emit("Mul", name, vec![x(), s], out, vec![]);
            }
            Op::Gelu(g) => self.gelu(name, x(), out, &g.approximate),
            Op::MaxPool2d(p) => {
                let attrs = vec![
                    A::Ints("kernel_shape", pair(p.kernel_size)),
                    A::Ints("strides", pair(p.stride.unwrap_or(p.kernel_size))),
                    A::Ints("pads", pads(p.padding)),
                    A::Int("ceil_mode", i64::from(p.ceil_mode)),
                ];
                self.emit("MaxPool", name, ins, out, attrs);
            }
            Op::AvgPool2d(p) => {
                let attrs = vec![
                    A::Ints("kernel_shape", pair(p.kernel_size)),
                    A::Ints("strides", pair(p.stride.unwrap_or(p.kernel_size))),
                    A::Ints("pads", pads(p.padding)),
                    A::Int("ceil_mode", i64::from(p.ceil_mode)),
                    A::Int("count_include_pad", i64::from(p.count_include_pad)),
                ];
                self.emit("AveragePool", name, ins, out, attrs);
            }
            Op::AdaptiveAvgPool2d(p) => {
                if p.output_size == fair_ir::Pair(1, 1) {
                    self.emit("GlobalAveragePool", name, ins, out, vec![]);
                } else {
                    let s = self.graph.shape(&node.inputs[0]).unwrap_or(&[]);
                    let (h, w) = match s {
                        [_, h, w] => (*h, *w),
                        _ => (0, 0),
                    };
                    let (oh, ow) = (p.output_size.0, p.output_size.1);
                    if h == 0 || w == 0 {
                        return Err(err(format!(
                            "adaptive average pooling needs an image input [C, H, W], found {s:?}"
                        )));
                    }
                    if h.is_multiple_of(oh) && w.is_multiple_of(ow) {
                        let k = vec![(h / oh) as i64, (w / ow) as i64];
                        let attrs = vec![A::Ints("kernel_shape", k.clone()), A::Ints("strides", k)];
                        self.emit("AveragePool", name, ins, out, attrs);
                    } else {
                        // Any other sizes (e.g. AlexNet's 1×1 → 6×6 on small inputs): adaptive
                        // average pooling is linear and separable, Y = P_h · X · P_wᵀ with
                        // P[i, j] = 1 / |bin i| for input j in PyTorch's bin i =
                        // [⌊i·n/m⌋, ⌈(i+1)·n/m⌉). Two MatMuls with constant matrices.
                        let p_w = self.pooling_matrix(format!("{name}.pool_w"), w, ow, true);
                        let p_h = self.pooling_matrix(format!("{name}.pool_h"), h, oh, false);
                        let rows = self.fresh(format!("{name}.rows"));
                        self.emit(
                            "MatMul",
                            &format!("{name}/w"),
                            vec![x(), p_w],
                            rows.clone(),
                            vec![],
                        );
                        self.emit("MatMul", name, vec![p_h, rows], out, vec![]);
                    }
                }
            }
            Op::Flatten(_) => self.emit("Flatten", name, ins, out, vec![A::Int("axis", 1)]),
            Op::Linear(_) => {
                let mut inputs = vec![x()];
                inputs.extend(self.params(node));
                self.emit("Gemm", name, inputs, out, vec![A::Int("transB", 1)]);
            }
            Op::Dropout(_) => self.emit("Identity", name, ins, out, vec![]),
            Op::Add(_) => {
                let op = if ins.len() == 2 { "Add" } else { "Sum" };
                self.emit(op, name, ins, out, vec![]);
            }
            Op::Mul(_) => self.emit("Mul", name, ins, out, vec![]),
            Op::Concat(_) => self.emit("Concat", name, ins, out, vec![A::Int("axis", 1)]),
            Op::Slice(sl) => {
                let starts = self.ints(format!("{name}.starts"), &[sl.start as i64]);
                let ends = self.ints(format!("{name}.ends"), &[sl.end as i64]);
                let axes = self.ints(format!("{name}.axes"), &[1]);
                self.emit("Slice", name, vec![x(), starts, ends, axes], out, vec![]);
            }
            Op::ChannelShuffle(cs) => {
                // [N, C, H, W] → [N, g, C/g, H, W] → swap axes 1, 2 → [N, C, H, W].
                let s = self.graph.shape(&node.inputs[0]).unwrap_or(&[]);
                let [c, h, w] = s[..] else {
                    return Err(err(format!("expected an image input, found {s:?}")));
                };
                let g = cs.groups.max(1);
                let (c, h, w, g) = (c as i64, h as i64, w as i64, g as i64);
                let grouped = self.ints(format!("{name}.grouped"), &[0, g, c / g, h, w]);
                let flat = self.ints(format!("{name}.shape"), &[0, c, h, w]);
                let (a, b) = (
                    self.fresh(format!("{out}.grouped")),
                    self.fresh(format!("{out}.transposed")),
                );
                self.emit(
                    "Reshape",
                    &format!("{name}.group"),
                    vec![x(), grouped],
                    a.clone(),
                    vec![],
                );
                let perm = vec![A::Ints("perm", vec![0, 2, 1, 3, 4])];
                self.emit(
                    "Transpose",
                    &format!("{name}.transpose"),
                    vec![a],
                    b.clone(),
                    perm,
                );
                self.emit("Reshape", name, vec![b, flat], out, vec![]);
            }
            Op::LayerNorm2d(ln) => {
                // Channels-last, LayerNormalization over the channels, channels-first again.
                let (a, b) = (
                    self.fresh(format!("{out}.nhwc")),
                    self.fresh(format!("{out}.normed")),
                );
                let mut inputs = vec![a.clone()];
                if ln.affine {
                    inputs.extend(self.params(node));
                } else {
                    let ones = vec![1.0; ln.num_features];
                    let scale = self.fresh(format!("{name}.ones"));
                    self.inits
                        .push(float_tensor(&scale, &[ln.num_features], &ones));
                    inputs.push(scale);
                }
                let to_last = vec![A::Ints("perm", vec![0, 2, 3, 1])];
                self.emit("Transpose", &format!("{name}.to_nhwc"), ins, a, to_last);
                let attrs = vec![A::Int("axis", -1), A::Float("epsilon", ln.eps as f32)];
                self.emit("LayerNormalization", name, inputs, b.clone(), attrs);
                let to_first = vec![A::Ints("perm", vec![0, 3, 1, 2])];
                self.emit(
                    "Transpose",
                    &format!("{name}.to_nchw"),
                    vec![b],
                    out,
                    to_first,
                );
            }
            other => {
                return Err(err(format!(
                    "the op '{}' has no ONNX export yet",
                    other.type_name()
                )));
            }
        }
        Ok(())
    }

    /// GELU: ONNX's `Gelu` from opset 20, else its formula with `Erf` (exact) or `Tanh`.
    fn gelu(&mut self, name: &str, x: String, out: String, approximate: &str) {
        if self.opset >= 20 {
            self.emit(
                "Gelu",
                name,
                vec![x],
                out,
                vec![A::Str("approximate", approximate)],
            );
            return;
        }
        let mut step = 0;
        let mut tmp = |w: &mut Self| {
            step += 1;
            w.fresh(format!("{out}.{step}"))
        };
        let sub = |k: &str| format!("{name}.{k}");
        let inner = if approximate == "tanh" {
            // tanh(√(2/π) · (x + 0.044715 · x³))
            let (sq, cube, scaled, sum, arg, th) = (
                tmp(self),
                tmp(self),
                tmp(self),
                tmp(self),
                tmp(self),
                tmp(self),
            );
            let c = self.scalar(sub("coef"), 0.044715);
            let k = self.scalar(sub("scale"), (2.0f64 / std::f64::consts::PI).sqrt() as f32);
            self.emit(
                "Mul",
                &sub("square"),
                vec![x.clone(), x.clone()],
                sq.clone(),
                vec![],
            );
            self.emit(
                "Mul",
                &sub("cube"),
                vec![sq, x.clone()],
                cube.clone(),
                vec![],
            );
            self.emit(
                "Mul",
                &sub("scale_cube"),
                vec![cube, c],
                scaled.clone(),
                vec![],
            );
            self.emit(
                "Add",
                &sub("inner"),
                vec![x.clone(), scaled],
                sum.clone(),
                vec![],
            );
            self.emit("Mul", &sub("arg"), vec![sum, k], arg.clone(), vec![]);
            self.emit("Tanh", &sub("tanh"), vec![arg], th.clone(), vec![]);
            th
        } else {
            // erf(x / √2)
            let (arg, e) = (tmp(self), tmp(self));
            let r = self.scalar(sub("sqrt2"), std::f32::consts::SQRT_2);
            self.emit("Div", &sub("div"), vec![x.clone(), r], arg.clone(), vec![]);
            self.emit("Erf", &sub("erf"), vec![arg], e.clone(), vec![]);
            e
        };
        let (plus, prod) = (tmp(self), tmp(self));
        let one = self.scalar(sub("one"), 1.0);
        let half = self.scalar(sub("half"), 0.5);
        self.emit(
            "Add",
            &sub("plus_one"),
            vec![inner, one],
            plus.clone(),
            vec![],
        );
        self.emit("Mul", &sub("times_x"), vec![x, plus], prod.clone(), vec![]);
        self.emit("Mul", name, vec![prod, half], out, vec![]);
    }
}
