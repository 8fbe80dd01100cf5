//! Graphs of named nodes: validation, topological order, shapes, counts and (de)serialisation.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::IrError;
use crate::op::{Channels, Op, ParamSpec, Role, ShapeProblem};

/// One node: a name (unique; parameter names derive from it), the names of the nodes it
/// reads, and its op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Unique name, e.g. `features.0` or `layer1.0.conv1` (torchvision's module path where
    /// torchvision has the model).
    pub name: String,
    /// Names of the nodes this node reads, in order. In a hand-written file an empty or
    /// missing list means "the node listed just before this one".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// What the node computes.
    pub op: Op,
}

/// The serialised form of a graph: a name and a list of nodes in any order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphSpec {
    /// The model's name.
    pub name: String,
    /// The nodes.
    pub nodes: Vec<Node>,
}

/// A validated network graph: unique names, known inputs, no cycle, exactly one input and one
/// output node, valid attributes and consistent shapes. Nodes are stored in topological order
/// and every node's output shape is known.
///
/// A `Graph` is immutable; transformations (such as pruning) build a new one.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    name: String,
    nodes: Vec<Node>,
    shapes: Vec<Vec<usize>>,
    index: HashMap<String, usize>,
    params: usize,
    macs: u64,
}

/// One row of [`Graph::summary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeSummary {
    /// Node name.
    pub name: String,
    /// Op type name.
    pub op: &'static str,
    /// Output shape (without batch dimension).
    pub shape: Vec<usize>,
    /// Trainable parameters.
    pub params: usize,
    /// Multiply-accumulates per sample.
    pub macs: u64,
}

impl Graph {
    /// Validates `nodes` and builds a graph. Nodes may come in any order; empty `inputs`
    /// are *not* filled in here (see [`GraphSpec`] parsing for that convenience).
    pub fn new(name: impl Into<String>, nodes: Vec<Node>) -> Result<Self, IrError> {
        let name = name.into();
        let mut position: HashMap<&str, usize> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            if position.insert(n.name.as_str(), i).is_some() {
                return Err(IrError::DuplicateName {
                    name: n.name.clone(),
                });
            }
        }
        for n in &nodes {
            n.op.check_attributes()
                .map_err(|detail| IrError::Attribute {
                    node: n.name.clone(),
                    detail,
                })?;
            for input in &n.inputs {
                if !position.contains_key(input.as_str()) {
                    return Err(IrError::UnknownInput {
                        node: n.name.clone(),
                        input: input.clone(),
                    });
                }
            }
        }
        let inputs: Vec<String> = nodes
            .iter()
            .filter(|n| n.op.role() == Role::Input)
            .map(|n| n.name.clone())
            .collect();
        if inputs.len() != 1 {
            return Err(IrError::InputCount {
                found: inputs.len(),
                nodes: inputs,
            });
        }

        // Kahn's algorithm taking the earliest-listed ready node first, so a list that is
        // already in topological order keeps its order (and state-dict order follows it).
        let mut pending: Vec<usize> = nodes.iter().map(|n| n.inputs.len()).collect();
        let mut readers: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            for input in &n.inputs {
                readers[position[input.as_str()]].push(i);
            }
        }
        let mut ready: BinaryHeap<Reverse<usize>> = (0..nodes.len())
            .filter(|&i| pending[i] == 0)
            .map(Reverse)
            .collect();
        let mut order = Vec::with_capacity(nodes.len());
        while let Some(Reverse(i)) = ready.pop() {
            order.push(i);
            for &r in &readers[i] {
                pending[r] -= 1;
                if pending[r] == 0 {
                    ready.push(Reverse(r));
                }
            }
        }
        if order.len() != nodes.len() {
            let placed: HashSet<usize> = order.iter().copied().collect();
            return Err(IrError::Cycle {
                nodes: (0..nodes.len())
                    .filter(|i| !placed.contains(i))
                    .map(|i| nodes[i].name.clone())
                    .collect(),
            });
        }
        let outputs: Vec<String> = (0..nodes.len())
            .filter(|&i| readers[i].is_empty())
            .map(|i| nodes[i].name.clone())
            .collect();
        if outputs.len() != 1 {
            return Err(IrError::OutputCount { nodes: outputs });
        }

        let mut slots: Vec<Option<Node>> = nodes.into_iter().map(Some).collect();
        let sorted: Vec<Node> = order
            .iter()
            .map(|&i| slots[i].take().expect("each node placed once"))
            .collect();
        let index: HashMap<String, usize> = sorted
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(sorted.len());
        let (mut params, mut macs) = (0usize, 0u64);
        for n in &sorted {
            let ins: Vec<(&str, &[usize])> = n
                .inputs
                .iter()
                .map(|i| (i.as_str(), shapes[index[i]].as_slice()))
                .collect();
            let shape = n.op.infer(&ins).map_err(|p| shape_error(n, p))?;
            let too_large = |what: &str| IrError::Shape {
                node: n.name.clone(),
                detail: format!("the model's {what} overflow a 64-bit count (sizes too large)"),
            };
            params = params
                .checked_add(n.op.param_count())
                .filter(|&p| p < usize::MAX)
                .ok_or_else(|| too_large("parameters"))?;
            macs =
                n.op.contract()
                    .macs(&shape)
                    .and_then(|m| macs.checked_add(m))
                    .filter(|&m| m < u64::MAX)
                    .ok_or_else(|| too_large("multiply-accumulates"))?;
            shapes.push(shape);
        }
        Ok(Graph {
            name,
            nodes: sorted,
            shapes,
            index,
            params,
            macs,
        })
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Nodes in topological order (every node after the nodes it reads).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&Node, IrError> {
        self.position(name).map(|i| &self.nodes[i])
    }

    /// Position of `name` in [`Graph::nodes`].
    pub fn position(&self, name: &str) -> Result<usize, IrError> {
        self.index
            .get(name)
            .copied()
            .ok_or_else(|| IrError::NoSuchNode {
                name: name.to_owned(),
            })
    }

    /// Output shape of the node at `position` (without batch dimension).
    pub fn shape_at(&self, position: usize) -> &[usize] {
        &self.shapes[position]
    }

    /// Output shape of the node called `name`.
    pub fn shape(&self, name: &str) -> Result<&[usize], IrError> {
        self.position(name).map(|i| self.shape_at(i))
    }

    /// The axis of the node called `name`'s per-sample output that holds its units (channels
    /// of `[C, H, W]` and features of `[F]`: 0; features of tokens `[T, F]`: 1), as
    /// [`crate::unit_axis`] says for its shape.
    pub fn unit_axis(&self, name: &str) -> Result<usize, IrError> {
        self.shape(name).map(crate::unit_axis)
    }

    /// The input node (exactly one exists).
    pub fn input(&self) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.op.role() == Role::Input)
            .expect("validated graphs have one input")
    }

    /// The output node: the one node that no other node reads (always last in topological
    /// order).
    pub fn output(&self) -> &Node {
        self.nodes.last().expect("validated graphs are non-empty")
    }

    /// All parameter tensors, in node order, with PyTorch state-dict names.
    pub fn params(&self) -> Vec<ParamSpec> {
        self.nodes
            .iter()
            .flat_map(|n| n.op.params(&n.name))
            .collect()
    }

    /// Total trainable parameters (checked for overflow when the graph was built).
    pub fn param_count(&self) -> usize {
        self.params
    }

    /// Total multiply-accumulates per sample (convolutions and linear layers; checked for
    /// overflow when the graph was built).
    pub fn macs(&self) -> u64 {
        self.macs
    }

    /// One row per node: name, op, output shape, parameters, MACs.
    pub fn summary(&self) -> Vec<NodeSummary> {
        self.nodes
            .iter()
            .zip(&self.shapes)
            .map(|(n, s)| NodeSummary {
                name: n.name.clone(),
                op: n.op.type_name(),
                shape: s.clone(),
                params: n.op.param_count(),
                macs: n.op.macs(s),
            })
            .collect()
    }

    /// Nodes that read the node called `name`, in topological order.
    pub fn readers(&self, name: &str) -> Vec<&Node> {
        self.nodes
            .iter()
            .filter(|n| n.inputs.iter().any(|i| i == name))
            .collect()
    }

    /// Names of the layers that create units and read their input densely ([`Op::is_prunable`]):
    /// every dense Conv2d and Linear except the network's output layer, in topological order.
    /// Grouped convolutions are not listed here; `fair_analysis::scored_layers` adds them when
    /// they are pruned within their groups.
    pub fn prunable_layers(&self) -> Vec<&str> {
        let output = self.output().name.as_str();
        self.nodes
            .iter()
            .filter(|n| n.op.is_prunable() && n.name != output)
            .map(|n| n.name.as_str())
            .collect()
    }

    /// The number of units (output channels or features) of a node whose op creates units
    /// (see [`Op::units`]), or `None` for other ops and unknown names.
    pub fn units(&self, name: &str) -> Option<usize> {
        self.node(name).ok()?.op.units()
    }

    /// The same network with some unit-creating layers (dense, or grouped convolutions whose
    /// group count still divides the kept width) narrowed to `kept` units; every reader's
    /// channel or feature count follows (next convs, BatchNorms, linear layers after a
    /// flatten, concatenations), each op by its [`Contract::narrowed`] rule. Only shapes
    /// change — this is the cost model behind target pruning and the IR half of model
    /// surgery. Coupling ops (a residual `add`, a gating `mul`) must receive equal channel
    /// counts, so coupled layers must keep the same number of units; otherwise the error
    /// names the add or mul.
    ///
    /// [`Contract::narrowed`]: crate::Contract::narrowed
    pub fn with_units(&self, kept: &HashMap<String, usize>) -> Result<Graph, IrError> {
        for (name, &k) in kept {
            let units = self.units(name).ok_or_else(|| IrError::Attribute {
                node: name.clone(),
                detail: "only conv2d and linear layers (layers that create units) can be narrowed"
                    .into(),
            })?;
            if k == 0 || k > units {
                return Err(IrError::Attribute {
                    node: name.clone(),
                    detail: format!("cannot keep {k} of its {units} units (keep 1..={units})"),
                });
            }
        }
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(self.nodes.len());
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let ins: Vec<&[usize]> = node
                .inputs
                .iter()
                .map(|n| shapes[self.index[n]].as_slice())
                .collect();
            let op = node
                .op
                .contract()
                .narrowed(&ins, kept.get(&node.name).copied())
                .map_err(|detail| IrError::Attribute {
                    node: node.name.clone(),
                    detail,
                })?;
            let named: Vec<(&str, &[usize])> = node
                .inputs
                .iter()
                .map(String::as_str)
                .zip(ins.iter().copied())
                .collect();
            let shape = op.infer(&named).map_err(|p| match shape_error(node, p) {
                IrError::Shape { node: n, detail } => {
                    let hint = match node.op.channels() {
                        Channels::Couple => format!(
                            " (the layers feeding a {} are coupled: they must keep the same units)",
                            node.op.type_name()
                        ),
                        Channels::Heads { head_dim } => format!(
                            " (the layers feeding an {} are coupled in whole heads of {head_dim}: \
                             q, k and v must keep the same heads)",
                            node.op.type_name()
                        ),
                        _ => String::new(),
                    };
                    IrError::Shape {
                        node: n,
                        detail: format!("{detail}{hint}"),
                    }
                }
                other => other,
            })?;
            shapes.push(shape);
            nodes.push(Node {
                name: node.name.clone(),
                inputs: node.inputs.clone(),
                op,
            });
        }
        Graph::new(self.name.clone(), nodes)
    }

    /// The serialisable form (nodes in topological order, inputs explicit).
    pub fn to_spec(&self) -> GraphSpec {
        GraphSpec {
            name: self.name.clone(),
            nodes: self.nodes.clone(),
        }
    }

    /// Parses a TOML graph (see the crate docs for the format).
    pub fn from_toml_str(text: &str) -> Result<Self, IrError> {
        let spec: GraphSpec = toml::from_str(text).map_err(|e| IrError::Parse {
            path: None,
            message: e.to_string(),
        })?;
        spec.into_graph()
    }

    /// Parses a JSON graph (same structure as TOML).
    pub fn from_json_str(text: &str) -> Result<Self, IrError> {
        let spec: GraphSpec = serde_json::from_str(text).map_err(|e| IrError::Parse {
            path: None,
            message: e.to_string(),
        })?;
        spec.into_graph()
    }

    /// Writes the graph as TOML.
    pub fn to_toml_string(&self) -> Result<String, IrError> {
        toml::to_string(&self.to_spec()).map_err(|e| IrError::Serialize(e.to_string()))
    }

    /// Writes the graph as pretty JSON.
    pub fn to_json_string(&self) -> Result<String, IrError> {
        serde_json::to_string_pretty(&self.to_spec()).map_err(|e| IrError::Serialize(e.to_string()))
    }

    /// Reads a graph from a `.toml` or `.json` file (by extension; anything else is read as
    /// TOML). Errors name the file.
    pub fn load(path: &Path) -> Result<Self, IrError> {
        let text = match fair_fs::read_string_bounded(path, MAX_GRAPH_FILE, "a graph file") {
            Ok(t) => t,
            Err(fair_fs::FsError::TooLarge { size, .. }) => {
                return Err(IrError::Parse {
                    path: Some(path.to_owned()),
                    message: format!(
                        "{size} bytes is more than a graph file may have ({MAX_GRAPH_FILE})"
                    ),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let parsed = if is_json(path) {
            Self::from_json_str(&text)
        } else {
            Self::from_toml_str(&text)
        };
        parsed.map_err(|e| match e {
            IrError::Parse { message, .. } => IrError::Parse {
                path: Some(path.to_owned()),
                message,
            },
            other => IrError::Parse {
                path: Some(path.to_owned()),
                message: other.to_string(),
            },
        })
    }

    /// Writes the graph to a `.toml` or `.json` file, atomically (temporary file + rename).
    pub fn save(&self, path: &Path) -> Result<(), IrError> {
        Ok(fair_fs::write_atomic(
            path,
            self.to_string_for(path)?.as_bytes(),
        )?)
    }

    /// The text [`Graph::save`] writes to `path`: JSON for a `.json` file, else TOML.
    pub fn to_string_for(&self, path: &Path) -> Result<String, IrError> {
        if is_json(path) {
            self.to_json_string()
        } else {
            self.to_toml_string()
        }
    }
}

impl GraphSpec {
    /// Fills implicit inputs (a non-input node without `inputs` reads the node listed before
    /// it) and validates.
    pub fn into_graph(mut self) -> Result<Graph, IrError> {
        for i in 0..self.nodes.len() {
            if self.nodes[i].inputs.is_empty() && self.nodes[i].op.role() != Role::Input {
                if i == 0 {
                    return Err(IrError::Arity {
                        node: self.nodes[i].name.clone(),
                        op: self.nodes[i].op.type_name(),
                        expected: "explicit inputs (it is listed first, so there is no previous node to read)".into(),
                        found: 0,
                    });
                }
                let previous = self.nodes[i - 1].name.clone();
                self.nodes[i].inputs.push(previous);
            }
        }
        Graph::new(self.name, self.nodes)
    }
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// The largest graph file read: 256 MiB.
const MAX_GRAPH_FILE: u64 = 256 << 20;

/// The error for a failed shape inference at `node`.
pub(crate) fn shape_error(node: &Node, p: ShapeProblem) -> IrError {
    match p {
        ShapeProblem::Arity { expected, found } => IrError::Arity {
            node: node.name.clone(),
            op: node.op.type_name(),
            expected,
            found,
        },
        ShapeProblem::Detail(detail) => IrError::Shape {
            node: node.name.clone(),
            detail,
        },
    }
}
