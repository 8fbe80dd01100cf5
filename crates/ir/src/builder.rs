//! [`GraphBuilder`]: builds a graph node by node, checking shapes as it goes.

use std::collections::HashMap;

use crate::error::IrError;
use crate::graph::{Graph, Node};
use crate::op::{Op, Pair, ShapeProblem};

/// Builds a [`Graph`] one node at a time. Each `add` checks the node's attributes and input
/// shapes immediately, so an error names the node that caused it. Convenience methods infer
/// channel counts from the input's shape.
///
/// ```
/// use fair_ir::GraphBuilder;
/// let mut b = GraphBuilder::new("tiny", "input", vec![1, 28, 28]);
/// let x = b.conv("conv", "input", 8, 3, 1, 1, true)?;
/// let x = b.relu("relu", &x)?;
/// let x = b.flatten("flatten", &x)?;
/// b.linear("fc", &x, 10, true)?;
/// let g = b.finish()?;
/// assert_eq!(g.param_count(), 8 * 9 + 8 + 8 * 28 * 28 * 10 + 10);
/// # Ok::<(), fair_ir::IrError>(())
/// ```
#[derive(Debug, Clone)]
pub struct GraphBuilder {
    name: String,
    nodes: Vec<Node>,
    shapes: HashMap<String, Vec<usize>>,
}

impl GraphBuilder {
    /// Starts a graph with one input node of the given per-sample shape.
    pub fn new(name: impl Into<String>, input: &str, shape: Vec<usize>) -> Self {
        let mut shapes = HashMap::new();
        shapes.insert(input.to_owned(), shape.clone());
        GraphBuilder {
            name: name.into(),
            nodes: vec![Node {
                name: input.to_owned(),
                inputs: Vec::new(),
                op: Op::Input { shape },
            }],
            shapes,
        }
    }

    /// Adds a node reading `inputs`; returns its name.
    pub fn add(&mut self, name: &str, op: Op, inputs: &[&str]) -> Result<String, IrError> {
        if self.shapes.contains_key(name) {
            return Err(IrError::DuplicateName {
                name: name.to_owned(),
            });
        }
        op.check_attributes().map_err(|detail| IrError::Attribute {
            node: name.to_owned(),
            detail,
        })?;
        let mut ins = Vec::with_capacity(inputs.len());
        for &i in inputs {
            let shape = self.shapes.get(i).ok_or_else(|| IrError::UnknownInput {
                node: name.to_owned(),
                input: i.to_owned(),
            })?;
            ins.push((i, shape.as_slice()));
        }
        let shape = op.infer(&ins).map_err(|p| match p {
            ShapeProblem::Arity { expected, found } => IrError::Arity {
                node: name.to_owned(),
                op: op.type_name(),
                expected,
                found,
            },
            ShapeProblem::Detail(detail) => IrError::Shape {
                node: name.to_owned(),
                detail,
            },
        })?;
        self.shapes.insert(name.to_owned(), shape);
        self.nodes.push(Node {
            name: name.to_owned(),
            inputs: inputs.iter().map(|s| (*s).to_owned()).collect(),
            op,
        });
        Ok(name.to_owned())
    }

    /// Output shape of an added node.
    pub fn shape(&self, name: &str) -> Result<&[usize], IrError> {
        self.shapes
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| IrError::NoSuchNode {
                name: name.to_owned(),
            })
    }

    fn channels(&self, name: &str) -> Result<usize, IrError> {
        Ok(self.shape(name)?[0])
    }

    /// Square-kernel convolution with dilation 1 and groups 1, reading `input`'s channels.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        name: &str,
        input: &str,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
    ) -> Result<String, IrError> {
        let op = Op::Conv2d {
            in_channels: self.channels(input)?,
            out_channels,
            kernel_size: Pair::square(kernel),
            stride: Pair::square(stride),
            padding: Pair::square(padding),
            dilation: Pair::square(1),
            groups: 1,
            bias,
        };
        self.add(name, op, &[input])
    }

    /// BatchNorm2d over `input`'s channels (PyTorch defaults).
    pub fn bn2d(&mut self, name: &str, input: &str) -> Result<String, IrError> {
        let op = Op::BatchNorm2d {
            num_features: self.channels(input)?,
            eps: 1e-5,
            momentum: 0.1,
        };
        self.add(name, op, &[input])
    }

    /// ReLU.
    pub fn relu(&mut self, name: &str, input: &str) -> Result<String, IrError> {
        self.add(name, Op::Relu, &[input])
    }

    /// Square max pooling.
    pub fn max_pool(
        &mut self,
        name: &str,
        input: &str,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<String, IrError> {
        let op = Op::MaxPool2d {
            kernel_size: Pair::square(kernel),
            stride: Some(Pair::square(stride)),
            padding: Pair::square(padding),
            ceil_mode: false,
        };
        self.add(name, op, &[input])
    }

    /// Square average pooling (no padding).
    pub fn avg_pool(
        &mut self,
        name: &str,
        input: &str,
        kernel: usize,
        stride: usize,
    ) -> Result<String, IrError> {
        let op = Op::AvgPool2d {
            kernel_size: Pair::square(kernel),
            stride: Some(Pair::square(stride)),
            padding: Pair::square(0),
            ceil_mode: false,
            count_include_pad: true,
        };
        self.add(name, op, &[input])
    }

    /// Adaptive average pooling to `h × w`.
    pub fn adaptive_avg_pool(
        &mut self,
        name: &str,
        input: &str,
        h: usize,
        w: usize,
    ) -> Result<String, IrError> {
        let op = Op::AdaptiveAvgPool2d {
            output_size: Pair(h, w),
        };
        self.add(name, op, &[input])
    }

    /// Flatten to a feature vector.
    pub fn flatten(&mut self, name: &str, input: &str) -> Result<String, IrError> {
        self.add(name, Op::Flatten, &[input])
    }

    /// Linear layer reading `input`'s features.
    pub fn linear(
        &mut self,
        name: &str,
        input: &str,
        out_features: usize,
        bias: bool,
    ) -> Result<String, IrError> {
        let in_features = match self.shape(input)? {
            [f] => *f,
            s => {
                return Err(IrError::Shape {
                    node: name.to_owned(),
                    detail: format!(
                        "a linear layer needs a feature vector, but '{input}' has shape {s:?}"
                    ),
                });
            }
        };
        let op = Op::Linear {
            in_features,
            out_features,
            bias,
        };
        self.add(name, op, &[input])
    }

    /// Dropout with probability `p`.
    pub fn dropout(&mut self, name: &str, input: &str, p: f64) -> Result<String, IrError> {
        self.add(name, Op::Dropout { p }, &[input])
    }

    /// Element-wise sum.
    pub fn add_all(&mut self, name: &str, inputs: &[&str]) -> Result<String, IrError> {
        self.add(name, Op::Add, inputs)
    }

    /// Channel concatenation.
    pub fn concat(&mut self, name: &str, inputs: &[&str]) -> Result<String, IrError> {
        self.add(name, Op::Concat, inputs)
    }

    /// Validates the whole graph and returns it.
    pub fn finish(self) -> Result<Graph, IrError> {
        Graph::new(self.name, self.nodes)
    }
}
