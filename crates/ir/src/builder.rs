//! [`GraphBuilder`]: builds a graph node by node, checking shapes as it goes.

use std::collections::HashMap;

use crate::error::IrError;
use crate::graph::{Graph, Node};
use crate::op::{
    AdaptiveAvgPool2d, Add, AvgPool2d, BatchNorm2d, Concat, Conv2d, Dropout, Flatten, Input,
    Linear, MaxPool2d, Op, Pair, Relu,
};

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
                op: Input::new(shape).into(),
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
        let shape = op.infer(&ins).map_err(|p| {
            crate::graph::shape_error(
                &Node {
                    name: name.to_owned(),
                    inputs: Vec::new(),
                    op: op.clone(),
                },
                p,
            )
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
        let op = Conv2d {
            stride: Pair::square(stride),
            padding: Pair::square(padding),
            bias,
            ..Conv2d::new(self.channels(input)?, out_channels, kernel)
        };
        self.add(name, op.into(), &[input])
    }

    /// BatchNorm2d over `input`'s channels (PyTorch defaults).
    pub fn bn2d(&mut self, name: &str, input: &str) -> Result<String, IrError> {
        let op = BatchNorm2d::new(self.channels(input)?);
        self.add(name, op.into(), &[input])
    }

    /// ReLU.
    pub fn relu(&mut self, name: &str, input: &str) -> Result<String, IrError> {
        self.add(name, Relu {}.into(), &[input])
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
        let op = MaxPool2d {
            stride: Some(Pair::square(stride)),
            padding: Pair::square(padding),
            ..MaxPool2d::new(kernel)
        };
        self.add(name, op.into(), &[input])
    }

    /// Square average pooling (no padding).
    pub fn avg_pool(
        &mut self,
        name: &str,
        input: &str,
        kernel: usize,
        stride: usize,
    ) -> Result<String, IrError> {
        let op = AvgPool2d {
            stride: Some(Pair::square(stride)),
            ..AvgPool2d::new(kernel)
        };
        self.add(name, op.into(), &[input])
    }

    /// Adaptive average pooling to `h × w`.
    pub fn adaptive_avg_pool(
        &mut self,
        name: &str,
        input: &str,
        h: usize,
        w: usize,
    ) -> Result<String, IrError> {
        let op = AdaptiveAvgPool2d {
            output_size: Pair(h, w),
        };
        self.add(name, op.into(), &[input])
    }

    /// Flatten to a feature vector.
    pub fn flatten(&mut self, name: &str, input: &str) -> Result<String, IrError> {
        self.add(name, Flatten {}.into(), &[input])
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
            [f] | [_, f] => *f,
            s => {
                return Err(IrError::Shape {
                    node: name.to_owned(),
                    detail: format!(
                        "a linear layer needs a feature vector or tokens, but '{input}' has shape {s:?}"
                    ),
                });
            }
        };
        let op = Linear {
            bias,
            ..Linear::new(in_features, out_features)
        };
        self.add(name, op.into(), &[input])
    }

    /// Dropout with probability `p`.
    pub fn dropout(&mut self, name: &str, input: &str, p: f64) -> Result<String, IrError> {
        self.add(name, Dropout { p }.into(), &[input])
    }

    /// Element-wise sum.
    pub fn add_all(&mut self, name: &str, inputs: &[&str]) -> Result<String, IrError> {
        self.add(name, Add {}.into(), inputs)
    }

    /// Channel concatenation.
    pub fn concat(&mut self, name: &str, inputs: &[&str]) -> Result<String, IrError> {
        self.add(name, Concat {}.into(), inputs)
    }

    /// Validates the whole graph and returns it.
    pub fn finish(self) -> Result<Graph, IrError> {
        Graph::new(self.name, self.nodes)
    }
}
