//! How an op is written in ONNX, as op-neutral data ([`OnnxSpec`]): which ONNX nodes, with
//! which attributes, reading which inputs, parameters and constants. Each op's contract
//! answers [`super::Contract::onnx`]; `fair-onnx` turns the answer into protobuf without
//! naming any op, and this crate does not depend on ONNX's protobuf types.

/// What an op's ONNX spelling may depend on besides its attributes.
#[derive(Debug, Clone, Copy)]
pub struct OnnxContext<'a> {
    /// The opset being written (14 to 23).
    pub opset: i64,
    /// The shapes of the node's inputs (without the batch dimension), in order.
    pub inputs: &'a [&'a [usize]],
}

/// An ONNX attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum OnnxAttr {
    /// `INT`.
    Int(i64),
    /// `INTS`.
    Ints(Vec<i64>),
    /// `FLOAT`.
    Float(f32),
    /// `STRING`.
    Str(String),
}

/// A constant tensor an op writes as an initializer.
#[derive(Debug, Clone, PartialEq)]
pub enum OnnxConst {
    /// float32 with the given dimensions (empty for a scalar).
    F32 {
        /// Dimensions.
        dims: Vec<usize>,
        /// Values, row-major.
        values: Vec<f32>,
    },
    /// A 1-D int64 vector.
    I64(Vec<i64>),
}

/// Where the name of a fresh value starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameBase {
    /// The ONNX value the node computes (`output` for the graph's last node).
    Value,
    /// The IR node's name.
    Node,
}

/// One name-taking declaration of a spec, processed in order (the order decides the
/// initializers' order and which name gets a `_` suffix on a clash).
#[derive(Debug, Clone, PartialEq)]
pub enum OnnxDecl {
    /// An intermediate value, named `base + suffix` (made unique).
    Temp {
        /// What the name starts with.
        base: NameBase,
        /// Appended to the base, e.g. `.sigmoid`.
        suffix: String,
    },
    /// A constant initializer named `<node>` + `suffix` (made unique).
    Const {
        /// Appended to the node's name, e.g. `.min`.
        suffix: String,
        /// Its value.
        value: OnnxConst,
    },
    /// The node's parameters as initializers named as the parameters, in state-dict order,
    /// except `num_batches_tracked` (ONNX has no use for BatchNorm's step counter). As an
    /// input ([`OnnxRef::Decl`]) it stands for all of them, in that order.
    Params,
}

/// An input of an ONNX node of a spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnnxRef {
    /// The IR node's input `i`.
    Input(usize),
    /// Every input of the IR node, in order.
    Inputs,
    /// The value(s) of declaration `j` of [`OnnxSpec::decls`].
    Decl(usize),
    /// Value `k` (from 0, in state-dict order, `num_batches_tracked` left out) of the
    /// [`OnnxDecl::Params`] declaration `j`: one parameter of a node that reads its
    /// parameters in separate places (attention's relative position bias and logit scale).
    Param(usize, usize),
}

/// One ONNX node of a spec.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxNode {
    /// The ONNX op type (`Conv`, `Relu`, ...).
    pub op_type: &'static str,
    /// Appended to the IR node's name to name the ONNX node (empty: the node's own name).
    pub name_suffix: String,
    /// Its inputs, in order.
    pub inputs: Vec<OnnxRef>,
    /// `None`: it computes the IR node's value; `Some(j)`: the temp of declaration `j`.
    pub output: Option<usize>,
    /// Its attributes, in order.
    pub attributes: Vec<(&'static str, OnnxAttr)>,
}

/// How one IR node is written in ONNX: declarations, then nodes in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OnnxSpec {
    /// Fresh values, constants and parameters, in the order their names are taken.
    pub decls: Vec<OnnxDecl>,
    /// The nodes, in topological order; exactly one has `output: None` unless the op writes
    /// no node at all (the network input).
    pub nodes: Vec<OnnxNode>,
    /// The oldest opset that has every ONNX op used, with the op that needs it, when later
    /// than 14 (the oldest opset written).
    pub min_opset: Option<(i64, &'static str)>,
}

impl OnnxSpec {
    /// A spec with no nodes (the network input).
    pub fn nothing() -> Self {
        OnnxSpec::default()
    }

    /// One node `op_type` reading every input and writing the node's value.
    pub fn single(op_type: &'static str, attributes: Vec<(&'static str, OnnxAttr)>) -> Self {
        let mut s = OnnxSpec::default();
        s.node("", op_type, vec![OnnxRef::Inputs], None, attributes);
        s
    }

    /// One node `op_type` reading the first input then the node's parameters.
    pub fn with_params(op_type: &'static str, attributes: Vec<(&'static str, OnnxAttr)>) -> Self {
        let mut s = OnnxSpec::default();
        let p = s.params();
        s.node("", op_type, vec![OnnxRef::Input(0), p], None, attributes);
        s
    }

    /// Declares a fresh intermediate value.
    pub fn temp(&mut self, base: NameBase, suffix: &str) -> usize {
        self.decls.push(OnnxDecl::Temp {
            base,
            suffix: suffix.to_owned(),
        });
        self.decls.len() - 1
    }

    /// Declares a constant initializer; returns the reference to read it.
    pub fn constant(&mut self, suffix: &str, value: OnnxConst) -> OnnxRef {
        self.decls.push(OnnxDecl::Const {
            suffix: suffix.to_owned(),
            value,
        });
        OnnxRef::Decl(self.decls.len() - 1)
    }

    /// Declares a float32 scalar constant.
    pub fn scalar(&mut self, suffix: &str, v: f32) -> OnnxRef {
        self.constant(
            suffix,
            OnnxConst::F32 {
                dims: vec![],
                values: vec![v],
            },
        )
    }

    /// Declares the node's parameters; returns the reference that reads them all.
    pub fn params(&mut self) -> OnnxRef {
        self.decls.push(OnnxDecl::Params);
        OnnxRef::Decl(self.decls.len() - 1)
    }

    /// Adds a node.
    pub fn node(
        &mut self,
        name_suffix: &str,
        op_type: &'static str,
        inputs: Vec<OnnxRef>,
        output: Option<usize>,
        attributes: Vec<(&'static str, OnnxAttr)>,
    ) {
        self.nodes.push(OnnxNode {
            op_type,
            name_suffix: name_suffix.to_owned(),
            inputs,
            output,
            attributes,
        });
    }
}

/// `[h, w]` as ONNX ints.
pub(crate) fn ints_pair(p: super::Pair) -> OnnxAttr {
    OnnxAttr::Ints(vec![p.0 as i64, p.1 as i64])
}

/// Symmetric `pads` for a padding pair (`[top, left, bottom, right]`).
pub(crate) fn pads(p: super::Pair) -> OnnxAttr {
    OnnxAttr::Ints(vec![p.0 as i64, p.1 as i64, p.0 as i64, p.1 as i64])
}
