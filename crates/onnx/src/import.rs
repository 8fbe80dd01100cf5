//! ONNX → IR.
//!
//! Nodes are read in file order (ONNX requires topological order). Each value the graph
//! computes is either a constant (initializers, `Constant` nodes and everything folded from
//! them, see [`crate::fold`]) or the output of an IR node. A node whose inputs are all
//! constants is evaluated; any other node is mapped to IR nodes, its weights taken from
//! constant inputs. Channels-last regions, GELU's `Erf` formula and layer scales are read by
//! the `channels_last` submodule. Afterwards `Mul(x, Sigmoid(x))` pairs become `silu`, nodes
//! that do not lead to the output are dropped, and the graph is validated by
//! [`fair_ir::Graph::new`].

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use fair_ir::{
    AdaptiveAvgPool2d, Add, AvgPool2d, BatchNorm1d, BatchNorm2d, Clip, Concat, Conv2d, Flatten,
    Gelu, Graph, HardSigmoid, HardSwish, Input, LayerNorm, Linear, MaxPool2d, Mul, Node, Op, Pair,
    ParamKind, Relu, Role, Sigmoid, TokenMean, Tokens,
};
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::type_proto::Value as TypeValue;
use onnx_protobuf::{GraphProto, Message, ModelProto, TensorProto};

use crate::fold::{self, Const, Data, Int};
use crate::names::{clean, is_clean, is_numbered, scope_path};
use crate::proto::{External, NodeRef, decode_tensor, dtype_name, external_location_of};
use crate::{Imported, META_MEAN, META_NAME, META_STD, OnnxError, Tensor, TensorData};

/// Channels-last regions (ConvNeXt), GELU's Erf formula and layer scales.
#[path = "channels_last.rs"]
mod channels_last;

/// Multi-head attention's decomposed pattern, read as one `attention` node.
#[path = "attention.rs"]
mod attention;

/// torch.nn.MultiheadAttention (sequence-first, fused in_proj) and the class token,
/// position embedding and class-token select of torchvision's VisionTransformer.
#[path = "mha.rs"]
mod mha;

/// timm's attention (one fused qkv linear layer on batch-first tokens), split into q, k, v.
#[path = "timm.rs"]
mod timm;

/// torchvision's Swin Transformer: feature maps as grids of tokens, shifted windows.
#[path = "swin.rs"]
mod swin;

/// torchvision's MaxViT: block and grid attention on windows of an image.
#[path = "maxvit.rs"]
mod maxvit;

/// Every ONNX op type the importer reads (default domain). `Cast`, `CastLike`,
/// `ConstantOfShape`, `Div`, `Expand`, `Sub`, `Equal`, `Pow`, `Where`, `Not`, `Range`,
/// `ScatterND`, `GatherND`, `Exp`, `Neg` and `Abs` are evaluated on constants and on shapes
/// computed from the batch size only, as is every foldable op (`MatMul`, `Relu`, `Sigmoid`
/// and `Clip` included) whose inputs are all constant: Swin's shifted-window mask and
/// relative position bias are such computations, and `Expand` of a float constant over the
/// batch is a class token's `expand(N, -1, -1)`. `Slice` and `Split` of computed tensors take channel ranges,
/// `Reshape` + `Transpose` + `Reshape` is a channel shuffle, `Transpose` to channels-last and
/// back delimits a region of per-pixel ops read channels-first (`LayerNormalization` is a
/// LayerNorm2d, `MatMul` a 1×1 conv), and `Mul` by a constant is a layer scale folded into
/// the layer before it. On tokens `[N, T, F]`: `Reshape` `[N, C, H·W]` + `Transpose`
/// [0, 2, 1] of an image is `tokens`, `Reshape` `[N·T, F]` → `Gemm` → `Reshape` and `MatMul`
/// are linear layers, `LayerNormalization` over the last axis is `layer_norm`, `ReduceMean`
/// over axis 1 is `token_mean`, `Concat` on axis 1 of a constant token and the tokens is
/// `class_token` (one per token of constants `[1, k, F]`), `Add` of a constant `[T, F]` is
/// `position_embedding`, `Gather` of one token on axis 1 is `token_select`, and `Slice` on
/// axis 1 is `token_range`. Inside `torch.nn.MultiheadAttention` (see `mha.rs`),
/// `Transpose` [1, 0, 2], `Unsqueeze` 0, `Squeeze` 3 and `Gather` 0, 1, 2 (the q, k, v split
/// of the fused in_proj) are read as steps of its pattern. Inside timm's attention (see
/// `timm.rs`), so are `Reshape` [N, T, 3, H, d], `Transpose` [2, 0, 3, 1, 4],
/// `Split`/`Slice`/`Gather` on axis 0 and `Squeeze` 0 (the q, k, v split of the fused qkv).
/// A `Div` by a constant of the sum of two linear layers (DeiT's averaged heads) is folded
/// into both layers. Elsewhere `Gather` on computed tensors is read only as the identity
/// `as_strided` after `Reshape` [-1], and `Unsqueeze` only on constants. `Erf` is read only
/// inside GELU's formula (not listed: alone it is an unsupported op).
pub const IMPORT_OPS: &[&str] = &[
    "Abs",
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "CastLike",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Div",
    "Dropout",
    "Einsum",
    "Equal",
    "Exp",
    "Expand",
    "Flatten",
    "Gather",
    "GatherND",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LayerNormalization",
    "MatMul",
    "MaxPool",
    "Mod",
    "Mul",
    "Neg",
    "Not",
    "Pad",
    "Pow",
    "Range",
    "ReduceL2",
    "ReduceMean",
    "Relu",
    "Reshape",
    "ScatterND",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Where",
];

/// Ops evaluated when all their inputs are constants.
const FOLDABLE: &[&str] = &[
    "Abs",
    "Add",
    "Cast",
    "CastLike",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Div",
    "Equal",
    "Exp",
    "Expand",
    "Flatten",
    "Gather",
    "GatherND",
    "Identity",
    "MatMul",
    "Mod",
    "Mul",
    "Neg",
    "Not",
    "Pow",
    "Range",
    "Relu",
    "Reshape",
    "ScatterND",
    "Shape",
    "Sigmoid",
    "Slice",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Transpose",
    "Unsqueeze",
    "Where",
];

/// The largest ONNX model file read, in bytes: 2 GiB − 1, protobuf's limit for one message
/// (larger models keep their weights in external data files, which are read tensor by
/// tensor). A larger file is refused from its size before it is read.
pub const MAX_MODEL_BYTES: u64 = i32::MAX as u64;

/// The most bytes one import may allocate beyond the decoded message and the float tensors
/// the file and its external data store (1 GiB): all constants folded from the graph's shape
/// computations, integer tensors (which take 16 bytes an element in memory, whatever their
/// ONNX type), and the layers' parameters beyond the float tensors read from the files (a
/// tensor shared by several layers is copied for each, as are biases broadcast from one
/// value). See the crate documentation for the whole bound. Each folded constant is also
/// bounded at 2^26 elements and rank 64, and each charge is made before the memory is
/// allocated. Shape computations need a few kilobytes; the budget leaves room for models
/// that share tensors between layers, while a small file of many large `ConstantOfShape` or
/// `Expand` nodes, or of one tensor read by thousands of layers, cannot make the importer
/// allocate gigabytes. The error names the node that would pass the budget.
pub const MAX_FOLDED_BYTES: usize = 1 << 30;

/// Options for [`import_with`]. Build it with `..Default::default()` so that new options
/// keep their defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportOptions {
    /// The per-sample input shape (`[C, H, W]` or `[F]`), overriding the file's. Needed when
    /// the file leaves spatial sizes symbolic; the batch dimension is never given. (The
    /// CLI's `--input CxHxW`.)
    pub input_shape: Option<Vec<usize>>,
    /// The graph's name, overriding the file's (`fair_pruner.name` metadata, else the ONNX
    /// graph name).
    pub name: Option<String>,
    /// The directory that holds external tensor data (`model.onnx.data`); [`import_file`]
    /// sets it to the model's directory. Every external data file must lie inside it.
    pub base_dir: Option<PathBuf>,
    /// Import weights that hold NaN or infinite values. By default such a tensor is an
    /// error naming it ([`OnnxError::NonFinite`]): scores, pruning and fine-tuning of a
    /// model with non-finite weights are meaningless.
    pub allow_non_finite: bool,
}

/// Reads an ONNX model from bytes. See [`import_with`].
pub fn import(bytes: &[u8]) -> Result<Imported, OnnxError> {
    import_with(bytes, &ImportOptions::default())
}

/// Reads an ONNX model file; external data (`*.onnx.data`) is read from the same directory,
/// and the graph is named after the file unless the file names it.
///
/// The file must be a regular file of at most [`MAX_MODEL_BYTES`] (a FIFO, a device or a
/// directory is refused by name without being read), and every external data file must
/// resolve inside the model's directory (see [`external_data_files`]).
pub fn import_file(path: &Path) -> Result<Imported, OnnxError> {
    import_file_with(path, &ImportOptions::default())
}

/// [`import_file`] with options (an unset `base_dir` becomes the model's directory).
pub fn import_file_with(path: &Path, options: &ImportOptions) -> Result<Imported, OnnxError> {
    let model = read_model(path)?;
    let mut options = options.clone();
    if options.base_dir.is_none() {
        options.base_dir = Some(model_dir(path));
    }
    if options.name.is_none() && meta(&model, META_NAME).is_none() {
        options.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    }
    Importer::run(&model, &options, Some(path))
}

/// Reads an ONNX model from bytes with options.
pub fn import_with(bytes: &[u8], options: &ImportOptions) -> Result<Imported, OnnxError> {
    Importer::run(&decode(bytes)?, options, None)
}

/// The external data files that the ONNX model file `path` reads (`model.onnx.data`), each
/// once, sorted: the `location` of every tensor stored as external data (initializers,
/// sparse initializers, and tensor attributes such as `Constant` values, in subgraphs too),
/// resolved inside the model's directory the way import resolves them. Empty for a model
/// that keeps its weights inline.
///
/// For an output guard: a command that writes files must not overwrite any of these. A
/// location that leads outside the model's directory, or names no regular file there, is an
/// error (the same error import gives).
pub fn external_data_files(path: &Path) -> Result<Vec<PathBuf>, OnnxError> {
    let model = read_model(path)?;
    let mut tensors = Vec::new();
    if let Some(g) = model.graph.as_ref() {
        graph_tensors(g, &mut tensors);
    }
    let dir = model_dir(path);
    let mut files = Vec::new();
    for t in tensors {
        let Some(location) = external_location_of(t) else {
            continue;
        };
        let location = location.map_err(|detail| OnnxError::Initializer {
            name: t.name.clone(),
            detail,
        })?;
        files.push(fair_fs::resolve_inside(&dir, location, path)?);
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// Every tensor of `g`: initializers, sparse initializers' values and indices, and node
/// attributes, in subgraphs too.
fn graph_tensors<'g>(g: &'g GraphProto, out: &mut Vec<&'g TensorProto>) {
    out.extend(&g.initializer);
    for s in &g.sparse_initializer {
        out.extend(s.values.as_ref());
        out.extend(s.indices.as_ref());
    }
    for n in &g.node {
        for a in &n.attribute {
            out.extend(a.t.as_ref());
            out.extend(&a.tensors);
            out.extend(a.sparse_tensor.as_ref().and_then(|s| s.values.as_ref()));
            out.extend(a.sparse_tensor.as_ref().and_then(|s| s.indices.as_ref()));
            for s in &a.sparse_tensors {
                out.extend(s.values.as_ref());
                out.extend(s.indices.as_ref());
            }
            if let Some(sub) = a.g.as_ref() {
                graph_tensors(sub, out);
            }
            for sub in &a.graphs {
                graph_tensors(sub, out);
            }
        }
    }
}

/// Reads and decodes the model file `path`: a regular file of at most [`MAX_MODEL_BYTES`].
fn read_model(path: &Path) -> Result<ModelProto, OnnxError> {
    let bytes = fair_fs::read_bounded(path, MAX_MODEL_BYTES, "an ONNX model file")?;
    decode(&bytes)
}

/// The directory of the model file `path` (`.` for a bare file name).
/// The directory external data is read from: the one that really holds the model file (a
/// model reached through a symbolic link reads its data next to the link's target, never
/// next to the link).
fn model_dir(path: &Path) -> PathBuf {
    let real = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    real.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned()
}

/// Decodes a model, after checking that its protobuf structure does not decode to far more
/// memory than its size ([`crate::wire::check`]).
fn decode(bytes: &[u8]) -> Result<ModelProto, OnnxError> {
    crate::wire::check(bytes).map_err(model_err)?;
    ModelProto::parse_from_bytes(bytes).map_err(|e| OnnxError::Decode {
        detail: e.to_string(),
    })
}

fn meta<'m>(model: &'m ModelProto, key: &str) -> Option<&'m str> {
    model
        .metadata_props
        .iter()
        .find(|p| p.key == key)
        .map(|p| p.value.as_str())
}

/// How to give the input shape, for both audiences: the CLI's flag and the Rust option.
const INPUT_HINT: &str = "give the per-sample input shape with --input, e.g. --input 3x224x224 for [C, H, W] or --input 784 for [F] (ImportOptions::input_shape in Rust)";

fn model_err(detail: impl Into<String>) -> OnnxError {
    OnnxError::Model {
        detail: detail.into(),
    }
}

/// A float32 attribute as the f64 with the same shortest decimal form (`0.1f32` → `0.1`), so
/// values survive an export/import round trip unchanged.
pub(crate) fn f32_to_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// A value the graph computes.
#[derive(Debug, Clone)]
enum Value {
    /// The output of the IR node of that name.
    Act(String),
    /// A constant.
    Const(Rc<Const>),
    /// The IR node's output viewed as `[N, g, C/g, H, W]` (transposed: `[N, C/g, g, H, W]`):
    /// a channel shuffle in progress.
    Grouped {
        x: String,
        groups: usize,
        transposed: bool,
    },
    /// The IR node's output in channels-last layout: inside a `Transpose` [0, 2, 3, 1] …
    /// [0, 3, 1, 2] region, whose per-pixel ops [`channels_last`] rewrites channels-first.
    ChannelsLast(String),
    /// The IR node's output for the whole (fixed-size) batch flattened to one axis: the
    /// first half of the dynamo exporter's `as_strided` (`Reshape` [-1] → `Gather`).
    Flat(String),
    /// The IR node's image output `[N, C, H, W]` reshaped to `[N, C, H·W]`: the first half
    /// of `tokens` (`x.flatten(2)`), which a `Transpose` [0, 2, 1] completes.
    Pixels(String),
    /// The IR node's tokens `[N, T, F]` reshaped to rows `[N·T, F]` (fair-pruner's export of
    /// a token linear layer as `Reshape` → `Gemm` → `Reshape`); a `Gemm` on them is the
    /// token linear layer, and a `Reshape` to `[N, T, F']` gives tokens back.
    Rows(String),
    /// The IR node's tokens `[N, T, E]` reshaped to heads `[N, T, E/d, d]`: the first step
    /// of multi-head attention (see `attention.rs`).
    Heads { x: String, d: usize },
    /// Heads transposed to `[N, H, T, d]`, or to `[N, H, d, T]` for the keys (`keys`),
    /// times `scale` (PyTorch's export scales q and kᵀ by √(1/√d) each).
    HeadsFirst {
        x: String,
        d: usize,
        keys: bool,
        scale: f64,
    },
    /// Unscaled heads with the batch and head axes merged, `[N·H, T, d]` (`[N·H, d, T]` for
    /// the keys): the dynamo exporter's way to transpose k.
    MergedHeads { x: String, d: usize, keys: bool },
    /// `q kᵀ` of the heads of `q` and `k`, times `scale`.
    Scores {
        q: String,
        k: String,
        d: usize,
        scale: f64,
    },
    /// The softmax of the scores scaled by `1/√d`.
    Weights { q: String, k: String, d: usize },
    /// The weights times v's heads, `[N, H, T, d]` (`[N, T, H, d]` once `transposed`).
    Context {
        q: String,
        k: String,
        v: String,
        d: usize,
        transposed: bool,
    },
    /// A step of `torch.nn.MultiheadAttention`'s sequence-first layout (see `mha.rs`).
    Mha(mha::Mha),
    /// A step of the split of timm's fused q, k, v (see `timm.rs`).
    Qkv(timm::Qkv),
    /// A pending step of Swin's feature maps and windowed attention (see `swin.rs`).
    Swin(swin::Swin),
    /// Token `index` of the IR node's tokens with the token axis kept, `[N, 1, F]`: a
    /// `Reshape` or `Flatten` to `[N, F]` completes it (a `token_select`).
    Token { x: String, index: usize },
    /// A float constant expanded over the dynamic batch (a class token's
    /// `expand(N, -1, -1)`), folded with a batch of 1: one sample's value, `[1, …]` where
    /// ONNX has `[N, …]`. Only readers that broadcast it may read it: a class-token `Concat`
    /// and an `Add` of a computed tensor.
    PerSample(Rc<Const>),
}

struct Importer<'m> {
    graph: &'m GraphProto,
    /// The directory of external data files and the model file named in errors (the
    /// directory itself for a model given as bytes).
    external: Option<(PathBuf, PathBuf)>,
    /// What this import has allocated beyond the file's float tensors (bounded by
    /// [`MAX_FOLDED_BYTES`]).
    budget: fold::Budget,
    opset: i64,
    inits: HashMap<&'m str, &'m TensorProto>,
    values: HashMap<String, Value>,
    /// How many node inputs (and graph outputs) read each ONNX value.
    readers: HashMap<&'m str, usize>,
    nodes: Vec<Node>,
    shapes: HashMap<String, Vec<usize>>,
    tensors: HashMap<String, Tensor>,
    names: HashSet<String>,
    batch: Option<usize>,
    notes: Vec<String>,
    /// Constants that are initializers forwarded by `Identity` (TorchScript shares equal
    /// tensors this way): stored parameters, not computed values.
    stored: HashSet<String>,
    /// Nodes whose computed all-zero bias was dropped.
    dropped_biases: Vec<String>,
    /// ONNX values that held a layer's output before an `Add` folded a bias into that layer:
    /// reading one afterwards would see the bias, so it is an error.
    pre_bias: HashMap<String, String>,
    /// The nodes of GELU's Erf formula, read as one `gelu`.
    gelu: channels_last::GeluFormulas,
    /// The IR nodes made from an ONNX `Mul` of two computed tensors: where one factor is a
    /// gate applied to the other, [`Importer::fuse_gates`] fuses them.
    products: HashSet<String>,
    /// Fused q, k, v projections of `torch.nn.MultiheadAttention`, by IR node: the module
    /// path their q, k and v layers are named after.
    mha_modules: HashMap<String, String>,
    /// The parts (q 0, k 1, v 2) already split off each fused q, k, v projection, by IR
    /// node: a second `Gather` of the same part is an error.
    mha_split: HashSet<(String, usize)>,
    /// The q layers split off timm's fused q, k, v (see `timm.rs`), by IR node: the name
    /// of the `attention` node that reads them (`<module>.attend`).
    attend_names: HashMap<String, String>,
    /// IR token nodes whose ONNX tensors are grids `[N, H, W, C]` or windows
    /// `[N·nW, wh·ww, C]` (see `swin.rs`).
    layouts: HashMap<String, swin::Layout>,
    /// The `tokens` node made from each channels-last image read as a grid.
    grid_of_image: HashMap<String, String>,
    /// What a windowed attention's scores had besides the plain pattern, by q's IR node.
    attn_extra: HashMap<String, swin::Extra>,
}

impl<'m> Importer<'m> {
    /// Imports `model`; `source` is the file it was read from, if any.
    fn run(
        model: &'m ModelProto,
        options: &ImportOptions,
        source: Option<&Path>,
    ) -> Result<Imported, OnnxError> {
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| model_err("the ONNX model has no graph"))?;
        check_unique_keys(model, graph)?;
        let opset = model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version)
            .ok_or_else(|| model_err("the ONNX model imports no opset of the default domain"))?;
        if opset < 11 {
            return Err(model_err(format!(
                "opset {opset} is older than 11, which fair-pruner reads; re-export with opset_version=17 or newer"
            )));
        }
        check_unique_names(graph)?;
        let mut readers: HashMap<&str, usize> = HashMap::new();
        for n in &graph.node {
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                *readers.entry(i.as_str()).or_default() += 1;
            }
        }
        for o in &graph.output {
            *readers.entry(o.name.as_str()).or_default() += 1;
        }
        let mut im = Importer {
            graph,
            external: options.base_dir.as_ref().map(|dir| {
                let model = source.map_or_else(|| dir.clone(), Path::to_owned);
                (dir.clone(), model)
            }),
            budget: fold::Budget::default(),
            opset,
            inits: graph
                .initializer
                .iter()
                .map(|t| (t.name.as_str(), t))
                .collect(),
            values: HashMap::new(),
            readers,
            nodes: Vec::new(),
            shapes: HashMap::new(),
            tensors: HashMap::new(),
            names: HashSet::new(),
            batch: None,
            notes: Vec::new(),
            stored: HashSet::new(),
            dropped_biases: Vec::new(),
            pre_bias: HashMap::new(),
            gelu: channels_last::gelu_formulas(graph),
            products: HashSet::new(),
            mha_modules: HashMap::new(),
            mha_split: HashSet::new(),
            attend_names: HashMap::new(),
            layouts: HashMap::new(),
            grid_of_image: HashMap::new(),
            attn_extra: HashMap::new(),
        };
        im.input(model, options)?;
        for (i, node) in graph.node.iter().enumerate() {
            im.node(&NodeRef::new(node, i), i)?;
        }
        if !im.dropped_biases.is_empty() {
            im.notes.push(format!(
                "{} all-zero bias(es) that the graph computes rather than stores were dropped (nodes {})",
                im.dropped_biases.len(),
                im.dropped_biases.join(", ")
            ));
        }
        let mut output = im.output()?;
        im.fuse_gates(&mut output);
        im.prune(&output);
        let name = options
            .name
            .clone()
            .or_else(|| meta(model, META_NAME).map(str::to_owned))
            .or_else(|| Some(graph.name.clone()).filter(|n| !n.is_empty()))
            .unwrap_or_else(|| "onnx-model".to_owned());
        let ir =
            Graph::new(name, std::mem::take(&mut im.nodes)).map_err(|source| OnnxError::Ir {
                context: "the imported graph is not a valid fair-pruner graph".to_owned(),
                source,
            })?;
        im.check_output_shape(&ir)?;
        let mut tensors = Vec::new();
        for spec in ir.params() {
            let t = im
                .tensors
                .remove(&spec.name)
                .ok_or_else(|| OnnxError::MissingTensor {
                    name: spec.name.clone(),
                })?;
            if t.shape != spec.shape {
                return Err(OnnxError::TensorShape {
                    name: spec.name,
                    expected: spec.shape,
                    found: t.shape,
                });
            }
            t.check()?;
            if !options.allow_non_finite {
                check_finite(&t)?;
            }
            tensors.push(t);
        }
        Ok(Imported {
            graph: ir,
            tensors,
            notes: im.notes,
        })
    }

    /// The IR input node, from the one graph input that is not an initializer.
    fn input(&mut self, model: &ModelProto, options: &ImportOptions) -> Result<(), OnnxError> {
        let inputs: Vec<_> = self
            .graph
            .input
            .iter()
            .filter(|i| !self.inits.contains_key(i.name.as_str()))
            .collect();
        let [input] = inputs.as_slice() else {
            return Err(model_err(format!(
                "fair-pruner imports models with exactly one input, this one has {}: {}",
                inputs.len(),
                inputs
                    .iter()
                    .map(|i| format!("'{}'", i.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        let Some(TypeValue::TensorType(tt)) = input.type_.as_ref().and_then(|t| t.value.as_ref())
        else {
            return Err(model_err(format!(
                "the input '{}' is not a tensor",
                input.name
            )));
        };
        if tt.elem_type != DataType::FLOAT as i32 {
            return Err(model_err(format!(
                "the input '{}' has data type {}; fair-pruner imports float32 models",
                input.name,
                dtype_name(tt.elem_type)
            )));
        }
        use onnx_protobuf::tensor_shape_proto::dimension::Value as Dim;
        let dims: Vec<Option<&Dim>> = tt
            .shape
            .as_ref()
            .map(|s| s.dim.iter().map(|d| d.value.as_ref()).collect())
            .unwrap_or_default();
        if let Some(Some(Dim::DimValue(b))) = dims.first() {
            self.batch = usize::try_from(*b).ok().filter(|&b| b > 0);
        }
        let from_file: Result<Vec<usize>, String> = dims
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, d)| match d {
                Some(Dim::DimValue(v)) if *v > 0 => Ok(*v as usize),
                Some(Dim::DimParam(p)) => Err(format!("axis {i} is symbolic ('{p}')")),
                _ => Err(format!("axis {i} has no size")),
            })
            .collect();
        let shape = match (&options.input_shape, from_file) {
            (Some(s), Ok(f)) if *s != f => {
                self.notes.push(format!(
                    "the input shape {s:?} was given; the file declares {f:?}"
                ));
                s.clone()
            }
            (Some(s), _) => s.clone(),
            (None, Ok(f)) if !f.is_empty() => f,
            (None, Ok(_)) => {
                return Err(model_err(format!(
                    "the input '{}' has no per-sample shape (expected [N, C, H, W] or [N, F]); {INPUT_HINT}",
                    input.name
                )));
            }
            (None, Err(e)) => {
                return Err(model_err(format!(
                    "the input '{}' has no fixed per-sample shape: {e}; {INPUT_HINT}",
                    input.name
                )));
            }
        };
        if !dims.is_empty() && dims.len() != shape.len() + 1 {
            return Err(model_err(format!(
                "the input '{}' has rank {}, but the shape {shape:?} plus a batch dimension has rank {}; {INPUT_HINT}",
                input.name,
                dims.len(),
                shape.len() + 1
            )));
        }
        let parse = |key: &str| -> Result<Option<Vec<f64>>, OnnxError> {
            meta(model, key)
                .map(|v| {
                    serde_json::from_str::<Vec<f64>>(v).map_err(|e| {
                        model_err(format!(
                            "metadata '{key}' must be a JSON array of numbers, found '{v}': {e}"
                        ))
                    })
                })
                .transpose()
        };
        let mut op = Input::new(shape.clone());
        fair_ir::Contract::check(&op).map_err(|detail| {
            model_err(format!(
                "the input '{}': {detail}; {INPUT_HINT}",
                input.name
            ))
        })?;
        op.mean = parse(META_MEAN)?;
        op.std = parse(META_STD)?;
        let name = "input".to_owned();
        fair_ir::Contract::check(&op)
            .map_err(|detail| model_err(format!("the input '{}': {detail}", input.name)))?;
        self.names.insert(name.clone());
        self.shapes.insert(name.clone(), shape);
        self.nodes.push(Node {
            name: name.clone(),
            inputs: Vec::new(),
            op: op.into(),
        });
        self.values.insert(input.name.clone(), Value::Act(name));
        Ok(())
    }

    /// The IR node the graph's one output comes from.
    fn output(&self) -> Result<String, OnnxError> {
        let [out] = self.graph.output.as_slice() else {
            return Err(model_err(format!(
                "fair-pruner imports models with exactly one output, this one has {}: {}",
                self.graph.output.len(),
                self.graph
                    .output
                    .iter()
                    .map(|o| format!("'{}'", o.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        match self.values.get(&out.name) {
            Some(Value::Act(n)) => Ok(n.clone()),
            Some(Value::Const(_)) => Err(model_err(format!(
                "the output '{}' is a constant; it does not depend on the input",
                out.name
            ))),
            Some(_) => Err(model_err(format!(
                "the output '{}' is a transposed or regrouped tensor; fair-pruner imports [N, C, H, W] or [N, F] outputs",
                out.name
            ))),
            None => Err(model_err(format!(
                "the output '{}' is not computed by any node",
                out.name
            ))),
        }
    }

    /// Errors when the file declares a fixed output shape that differs from the IR's.
    fn check_output_shape(&self, ir: &Graph) -> Result<(), OnnxError> {
        use onnx_protobuf::tensor_shape_proto::dimension::Value as Dim;
        let Some(out) = self.graph.output.first() else {
            return Ok(());
        };
        let Some(TypeValue::TensorType(tt)) = out.type_.as_ref().and_then(|t| t.value.as_ref())
        else {
            return Ok(());
        };
        let Some(shape) = tt.shape.as_ref() else {
            return Ok(());
        };
        let declared: Option<Vec<usize>> = shape
            .dim
            .iter()
            .skip(1)
            .map(|d| match d.value {
                Some(Dim::DimValue(v)) => usize::try_from(v).ok(),
                _ => None,
            })
            .collect();
        let ours = ir.shape_at(ir.nodes().len() - 1);
        match declared {
            Some(d) if !shape.dim.is_empty() && d != ours => Err(model_err(format!(
                "the file declares the output '{}' as [N, {}] per batch, but the imported graph computes {ours:?} per sample",
                out.name,
                d.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
            _ => Ok(()),
        }
    }

    /// The value named `name`: computed earlier, or an initializer (decoded on first use).
    fn value(&mut self, n: &NodeRef, name: &str) -> Result<Value, OnnxError> {
        if let Some(layer) = self.pre_bias.get(name) {
            return Err(n.err(format!(
                "reads '{name}', the output of '{layer}' before an Add that was read as its bias; \
                 a layer whose output is also used without the added constant is not supported"
            )));
        }
        if let Some(v) = self.values.get(name) {
            return Ok(v.clone());
        }
        let Some(t) = self.inits.get(name) else {
            return Err(OnnxError::MissingInput {
                node: n.id.clone(),
                op_type: n.op().to_owned(),
                input: name.to_owned(),
            });
        };
        let c =
            decode_tensor(t, external_at(&self.external), &mut self.budget).map_err(|detail| {
                OnnxError::Initializer {
                    name: name.to_owned(),
                    detail,
                }
            })?;
        let v = Value::Const(Rc::new(c));
        self.values.insert(name.to_owned(), v.clone());
        Ok(v)
    }

    fn node(&mut self, n: &NodeRef<'m>, index: usize) -> Result<(), OnnxError> {
        let node = n.node;
        if self.gelu.inner.contains(&index) {
            return Ok(());
        }
        if let Some(x) = self.gelu.last.get(&index).cloned() {
            let v = self.gelu_formula(n, &x)?;
            self.values.insert(node.output[0].clone(), v);
            return Ok(());
        }
        if !(node.domain.is_empty() || node.domain == "ai.onnx") || !IMPORT_OPS.contains(&n.op()) {
            return Err(OnnxError::UnsupportedOp {
                node: n.id.clone(),
                op_type: node.op_type.clone(),
                domain: node.domain.clone(),
                supported: IMPORT_OPS.to_vec(),
            });
        }
        if node.output.is_empty() {
            return Err(n.err("the node has no outputs"));
        }
        if n.op() == "Split" {
            return self.split(n);
        }
        let mut inputs = Vec::with_capacity(node.input.len());
        for name in &node.input {
            inputs.push(if name.is_empty() {
                None
            } else {
                Some(self.value(n, name)?)
            });
        }
        self.per_sample_readers(n, &mut inputs)?;
        // CastLike reads only the data type of its second input (float for computed tensors).
        let all_const = inputs.iter().enumerate().all(|(k, v)| {
            matches!(v, None | Some(Value::Const(_))) || (n.op() == "CastLike" && k == 1)
        });
        let out = if all_const && n.op() == "Identity" {
            // The same constant under another name: shared, not copied.
            match inputs.first() {
                Some(Some(v)) => v.clone(),
                _ => return Err(n.err("input 0 is missing")),
            }
        } else if all_const && FOLDABLE.contains(&n.op()) {
            let consts: Vec<Option<Rc<Const>>> = inputs
                .iter()
                .map(|v| match v {
                    Some(Value::Const(c)) => Some(c.clone()),
                    _ => None,
                })
                .collect();
            let folded = Rc::new(self.fold(n, &consts)?);
            if n.op() == "Expand" && per_sample_expand(&consts) {
                Value::PerSample(folded)
            } else {
                Value::Const(folded)
            }
        } else {
            self.map(n, &inputs)?
        };
        for (k, extra) in node.output.iter().enumerate().skip(1) {
            if !extra.is_empty() && self.readers.get(extra.as_str()).copied().unwrap_or(0) > 0 {
                return Err(n.err(format!(
                    "output {k} ('{extra}') is used, but fair-pruner imports only the first output of {}",
                    n.op()
                )));
            }
        }
        if n.op() == "Identity"
            && let Some(src) = node.input.first()
            && (self.inits.contains_key(src.as_str()) || self.stored.contains(src))
        {
            self.stored.insert(node.output[0].clone());
        }
        self.values.insert(node.output[0].clone(), out);
        Ok(())
    }

    /// Checks the readers of [`Value::PerSample`] constants: a `Concat` (the class token,
    /// see `mha.rs`) keeps it; an `Add` of a computed tensor broadcasts it, so it reads it
    /// as a constant; any other reader is an error naming the node.
    fn per_sample_readers(
        &self,
        n: &NodeRef,
        inputs: &mut [Option<Value>],
    ) -> Result<(), OnnxError> {
        let Some(k) = inputs
            .iter()
            .position(|v| matches!(v, Some(Value::PerSample(_))))
        else {
            return Ok(());
        };
        let computed = inputs.iter().any(|v| matches!(v, Some(Value::Act(_))));
        match n.op() {
            "Concat" if computed => Ok(()),
            "Add" if computed => {
                for v in inputs.iter_mut() {
                    if let Some(Value::PerSample(c)) = v {
                        *v = Some(Value::Const(c.clone()));
                    }
                }
                Ok(())
            }
            _ => Err(n.err(format!(
                "input {k} ('{}') is a float constant expanded over the dynamic batch (a class token's expand(N, -1, -1)), which is imported as one sample's value; only a Concat with tokens (the class token) or an Add of a computed tensor may read it",
                n.node.input[k]
            ))),
        }
    }

    // ---- constant folding ----

    /// Evaluates `n` on constant inputs. Every new constant is paid for from the budget
    /// before it is built; ops that only change the dimensions share their input's data.
    fn fold(&mut self, n: &NodeRef, inputs: &[Option<Rc<Const>>]) -> Result<Const, OnnxError> {
        let get = |k: usize| -> Result<&Const, OnnxError> {
            inputs
                .get(k)
                .and_then(|c| c.as_deref())
                .ok_or_else(|| n.err(format!("input {k} is missing")))
        };
        let opt = |k: usize| inputs.get(k).and_then(|c| c.as_deref());
        // A value that depends on a dynamic batch size: a fixed batch would make it known.
        let dynamic = self.batch.is_none();
        let hint = move |d: String| {
            if dynamic && d.contains(fold::BATCH_UNKNOWN) {
                format!("{d}; export with a fixed batch size")
            } else {
                d
            }
        };
        // Shapes, axes, starts and ends: short lists of known integers.
        let list = |k: usize| -> Result<Option<Vec<i64>>, OnnxError> {
            opt(k)
                .map(|c| {
                    c.short_ints()
                        .map_err(|e| n.err(hint(format!("input {k}: {e}"))))
                })
                .transpose()
        };
        let e = |d: String| n.err(hint(d));
        let budget = &mut self.budget;
        Ok(match n.op() {
            "Constant" => self.constant(n)?,
            "Cast" => {
                let to = n.int("to")?.ok_or_else(|| n.attr_err("to", "missing"))?;
                fold::cast(get(0)?, to as i32, budget).map_err(e)?
            }
            "CastLike" => {
                let float = match inputs.get(1).and_then(|c| c.as_deref()) {
                    Some(like) => matches!(*like.data, Data::F32(_)),
                    None => true,
                };
                let to = if float {
                    DataType::FLOAT
                } else {
                    DataType::INT64
                };
                fold::cast(get(0)?, to as i32, budget).map_err(e)?
            }
            "Expand" => {
                let c = get(0)?;
                let target = get(1)?;
                // A float constant expanded over the batch (a class token's
                // `expand(n, -1, -1)`, n the batch size) is the same for every sample: it is
                // expanded with a batch of 1.
                let shape = match (&*c.data, &*target.data) {
                    (Data::F32(_), Data::Int(v))
                        if v.first() == Some(&Int::BATCH) && v.len() <= fold::MAX_RANK =>
                    {
                        let mut one = vec![Int::N(1)];
                        one.extend_from_slice(&v[1..]);
                        Const::ints_of(target.dims.clone(), one)
                            .short_ints()
                            .map_err(e)?
                    }
                    _ => list(1)?.ok_or_else(|| n.err("input 1 is missing"))?,
                };
                fold::expand(c, &shape, budget).map_err(e)?
            }
            "Equal" => fold::equal(get(0)?, get(1)?, budget).map_err(e)?,
            "Where" => fold::where_(get(0)?, get(1)?, get(2)?, budget).map_err(e)?,
            "Shape" => {
                let c = get(0)?;
                budget.take(&[c.dims.len()], fold::INT_BYTES).map_err(e)?;
                shape_slice(n, c.dims.iter().map(|&d| Int::N(d as i64)).collect())?
            }
            "ConstantOfShape" => {
                let dims: Vec<usize> = list(0)?
                    .ok_or_else(|| n.err("input 0 is missing"))?
                    .into_iter()
                    .map(|d| usize::try_from(d).map_err(|_| n.err(format!("negative size {d}"))))
                    .collect::<Result<_, _>>()?;
                let value = match n.tensor("value")? {
                    Some(t)
                        if t.dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d)) == Some(1) =>
                    {
                        decode_tensor(t, None, &mut fold::Budget::default())
                            .map_err(|d| n.attr_err("value", d))?
                    }
                    Some(_) => return Err(n.attr_err("value", "expected a one-element tensor")),
                    None => Const::f32(vec![1], vec![0.0]),
                };
                let count = budget.take(&dims, value.data.elem_bytes()).map_err(e)?;
                match &*value.data {
                    Data::F32(v) if v.len() == 1 => Const::f32(dims, vec![v[0]; count]),
                    Data::Int(v) if v.len() == 1 => Const::ints_of(dims, vec![v[0]; count]),
                    _ => return Err(n.attr_err("value", "expected a one-element tensor")),
                }
            }
            "Gather" => fold::gather(get(0)?, get(1)?, n.int_or("axis", 0)?, budget).map_err(e)?,
            "Unsqueeze" => {
                let axes = match list(1)? {
                    Some(a) => a,
                    None => n
                        .ints("axes")?
                        .ok_or_else(|| n.attr_err("axes", "missing"))?,
                };
                fold::unsqueeze(get(0)?, &axes, budget).map_err(e)?
            }
            "Squeeze" => {
                let axes = match list(1)? {
                    Some(a) => Some(a),
                    None => n.ints("axes")?,
                };
                fold::squeeze(get(0)?, axes.as_deref(), budget).map_err(e)?
            }
            "Concat" => {
                let all: Vec<&Const> = inputs.iter().flatten().map(|c| c.as_ref()).collect();
                let ax = n
                    .int("axis")?
                    .ok_or_else(|| n.attr_err("axis", "missing"))?;
                fold::concat(&all, ax, budget).map_err(e)?
            }
            "Slice" => {
                let (starts, ends, axes, steps) = if self.opset >= 10 && inputs.len() > 1 {
                    (
                        list(1)?.ok_or_else(|| n.err("missing starts"))?,
                        list(2)?.ok_or_else(|| n.err("missing ends"))?,
                        list(3)?,
                        list(4)?,
                    )
                } else {
                    (
                        n.ints("starts")?.unwrap_or_default(),
                        n.ints("ends")?.unwrap_or_default(),
                        n.ints("axes")?,
                        None,
                    )
                };
                let (axes, steps) = (axes.as_deref(), steps.as_deref());
                fold::slice(get(0)?, &starts, &ends, axes, steps, budget).map_err(e)?
            }
            "Reshape" => {
                let c = get(0)?;
                let shape = list(1)?.ok_or_else(|| n.err("input 1 is missing"))?;
                let allowzero = n.int_or("allowzero", 0)? != 0;
                let dims = fold::reshape_dims(&c.dims, &shape, allowzero).map_err(e)?;
                budget.take_view(&dims).map_err(e)?;
                c.view(dims)
            }
            "Flatten" => {
                let c = get(0)?;
                let a = n.int_or("axis", 1)?;
                let a = if a < 0 { a + c.dims.len() as i64 } else { a };
                let a = usize::try_from(a)
                    .ok()
                    .filter(|&a| a <= c.dims.len())
                    .ok_or_else(|| n.attr_err("axis", "out of range"))?;
                let dims = vec![c.dims[..a].iter().product(), c.dims[a..].iter().product()];
                budget.take_view(&dims).map_err(e)?;
                c.view(dims)
            }
            "Transpose" => {
                let c = get(0)?;
                budget.take(&c.dims, c.data.elem_bytes()).map_err(e)?;
                fold::transpose(c, n.ints("perm")?.as_deref()).map_err(e)?
            }
            op @ ("Add" | "Sub" | "Mul" | "Div" | "Mod" | "Pow") => {
                if op == "Mod" && n.int_or("fmod", 0)? != 0 {
                    return Err(n.attr_err("fmod", "only the integer Mod (fmod = 0) is evaluated"));
                }
                fold::binary(op, get(0)?, get(1)?, budget).map_err(e)?
            }
            "Sqrt" => {
                // The scale of PyTorch's attention export: √ of a float constant.
                let c = get(0)?;
                let Data::F32(v) = &*c.data else {
                    return Err(n.err("Sqrt of integers cannot be evaluated"));
                };
                budget.take(&c.dims, fold::F32_BYTES).map_err(e)?;
                Const::f32(c.dims.clone(), v.iter().map(|x| x.sqrt()).collect())
            }
            "Not" => fold::not(get(0)?, budget).map_err(e)?,
            "Range" => fold::range(get(0)?, get(1)?, get(2)?, budget).map_err(e)?,
            "ScatterND" => {
                if let Some(r) = n.string("reduction")?
                    && r != "none"
                {
                    return Err(
                        n.attr_err("reduction", format!("'{r}' is not evaluated (only 'none')"))
                    );
                }
                fold::scatter_nd(get(0)?, get(1)?, get(2)?, budget).map_err(e)?
            }
            "GatherND" => {
                if n.int_or("batch_dims", 0)? != 0 {
                    return Err(n.attr_err("batch_dims", "only 0 is evaluated"));
                }
                fold::gather_nd(get(0)?, get(1)?, budget).map_err(e)?
            }
            op @ ("Relu" | "Sigmoid" | "Exp" | "Neg" | "Abs") => {
                fold::unary(op, get(0)?, budget).map_err(e)?
            }
            "Clip" => {
                let (lo, hi) = if self.opset >= 11 {
                    (opt(1).cloned(), opt(2).cloned())
                } else {
                    (
                        n.float("min")?.map(|v| Const::f32(vec![], vec![v])),
                        n.float("max")?.map(|v| Const::f32(vec![], vec![v])),
                    )
                };
                fold::clip(get(0)?, lo.as_ref(), hi.as_ref(), budget).map_err(e)?
            }
            "MatMul" => fold::matmul(get(0)?, get(1)?, budget).map_err(e)?,
            other => return Err(n.err(format!("{other} cannot be evaluated on constants"))),
        })
    }

    /// The value of a `Constant` node: float data is the model's own (like an initializer),
    /// integer data is paid for from the budget.
    fn constant(&mut self, n: &NodeRef) -> Result<Const, OnnxError> {
        if let Some(t) = n.tensor("value")? {
            return decode_tensor(t, external_at(&self.external), &mut self.budget)
                .map_err(|d| n.attr_err("value", d));
        }
        let e = |d: String| n.err(d);
        if let Some(v) = n.float("value_float")? {
            self.budget.store(fold::F32_BYTES);
            return Ok(Const::f32(vec![], vec![v]));
        }
        if let Some(v) = n.floats("value_floats")? {
            self.budget.store(v.len() * fold::F32_BYTES);
            return Ok(Const::f32(vec![v.len()], v));
        }
        if let Some(v) = n.int("value_int")? {
            self.budget.take(&[], fold::INT_BYTES).map_err(e)?;
            return Ok(Const::i64(vec![], [v]));
        }
        if let Some(v) = n.ints("value_ints")? {
            self.budget.take(&[v.len()], fold::INT_BYTES).map_err(e)?;
            return Ok(Const::i64(vec![v.len()], v));
        }
        Err(n.err(
            "expected a 'value', 'value_float(s)' or 'value_int(s)' attribute (sparse and string constants are not supported)",
        ))
    }

    // ---- mapping to IR ----

    fn map(&mut self, n: &NodeRef, inputs: &[Option<Value>]) -> Result<Value, OnnxError> {
        if let Some(out) = self.swin(n, inputs) {
            return out;
        }
        let channels_last = inputs
            .iter()
            .any(|v| matches!(v, Some(Value::ChannelsLast(_))));
        if channels_last && !matches!(n.op(), "Transpose" | "LayerNormalization") {
            return self.channels_last(n, inputs);
        }
        match n.op() {
            "Identity" | "Dropout" => {
                n.only(&["seed", "ratio", "is_test"])?;
                let (x, _) = self.act(n, inputs, 0)?;
                Ok(Value::Act(x))
            }
            "Shape" if self.attention_shape(inputs).is_some() => {
                let v = self.attention_shape(inputs).expect("checked");
                Ok(Value::Const(Rc::new(shape_slice(n, v)?)))
            }
            "Shape" if self.mha_shape(inputs).is_some() => {
                let v = self.mha_shape(inputs).expect("checked");
                Ok(Value::Const(Rc::new(shape_slice(n, v)?)))
            }
            "Shape" => {
                let (_, s) = self.act(n, inputs, 0)?;
                let mut v = vec![Int::BATCH];
                v.extend(s.iter().map(|&d| Int::N(d as i64)));
                Ok(Value::Const(Rc::new(shape_slice(n, v)?)))
            }
            "Conv" => self.conv(n, inputs),
            "BatchNormalization" => self.batch_norm(n, inputs),
            "Relu" => {
                n.only(&[])?;
                self.unary(n, inputs, Relu {}.into())
            }
            "Sigmoid" => {
                n.only(&[])?;
                self.unary(n, inputs, Sigmoid {}.into())
            }
            "Tanh" => {
                n.only(&[])?;
                self.unary(n, inputs, fair_ir::Tanh {}.into())
            }
            "HardSwish" => {
                n.only(&[])?;
                self.unary(n, inputs, HardSwish {}.into())
            }
            "HardSigmoid" => {
                n.only(&["alpha", "beta"])?;
                let alpha = n.float("alpha")?.unwrap_or(0.2);
                // PyTorch's 1/6, which float32 cannot hold, is read back exactly.
                let sixth = 1.0 / 6.0;
                let op = HardSigmoid {
                    alpha: if alpha == sixth as f32 { sixth } else { f32_to_f64(alpha) },
                    beta: f32_to_f64(n.float("beta")?.unwrap_or(0.5)),
                };
                self.unary(n, inputs, op.into())
            }
            "Gelu" => {
                n.only(&["approximate"])?;
                let approximate = n.string("approximate")?.unwrap_or_else(|| "none".into());
                self.unary(n, inputs, Gelu { approximate }.into())
            }
            "Clip" => self.clip(n, inputs),
            "MaxPool" | "AveragePool" => self.pool(n, inputs),
            "GlobalAveragePool" => {
                n.only(&[])?;
                let (x, s) = self.act(n, inputs, 0)?;
                image(n, &s)?;
                let op = AdaptiveAvgPool2d {
                    output_size: Pair(1, 1),
                };
                let hint = self.hint(n, None);
                self.emit(n, hint, op.into(), vec![x], vec![])
            }
            "ReduceMean" => self.reduce_mean(n, inputs),
            "Flatten" => {
                n.only(&["axis"])?;
                if let Some(Some(Value::Token { x, index })) = inputs.first()
                    && n.int_or("axis", 1)? == 1
                {
                    return self.select_token(n, x.clone(), *index);
                }
                let (x, s) = self.act(n, inputs, 0)?;
                let axis = fold::axis(n.int_or("axis", 1)?, s.len() + 1)
                    .map_err(|d| n.attr_err("axis", d))?;
                if axis != 1 {
                    return Err(n.attr_err(
                        "axis",
                        format!("only axis 1 (keep the batch dimension) is supported, found {axis}"),
                    ));
                }
                self.flatten(n, x, &s)
            }
            "Reshape" => self.reshape(n, inputs),
            "Transpose" => self.transpose(n, inputs),
            "LayerNormalization" => self.layer_norm(n, inputs),
            "Slice" => self
                .qkv_slice(n, inputs)
                .unwrap_or_else(|| self.slice(n, inputs)),
            "Unsqueeze" => self
                .mha_squeeze(n, inputs, true)
                .unwrap_or_else(|| self.act(n, inputs, 0).and_then(|_| Err(n.err(
                    "Unsqueeze is supported on computed tensors only inside torch.nn.MultiheadAttention's split of its fused q, k, v",
                )))),
            "Squeeze" => {
                if let Some(v) = self.mha_squeeze(n, inputs, false) {
                    return v;
                }
                if let Some(v) = self.qkv_squeeze(n, inputs) {
                    return v;
                }
                let (x, s) = self.act(n, inputs, 0)?;
                let axes = match inputs.get(1).cloned().flatten() {
                    Some(_) => Some(self.konst(n, inputs, 1)?.ints().map_err(|e| n.err(e))?),
                    None => n.ints("axes")?,
                };
                let full: Vec<usize> = std::iter::once(1).chain(s.iter().copied()).collect();
                let mut axes: Vec<usize> = match axes {
                    Some(a) => a
                        .iter()
                        .map(|&a| fold::axis(a, full.len()))
                        .collect::<Result<_, _>>()
                        .map_err(|d| n.err(d))?,
                    None => (1..full.len()).filter(|&i| full[i] == 1).collect(),
                };
                axes.sort_unstable();
                if s.len() == 3 && s[1] == 1 && s[2] == 1 && axes == [2, 3] {
                    self.flatten(n, x, &s)
                } else {
                    Err(n.err(format!(
                        "only squeezing [N, C, 1, 1] to [N, C] (a flatten) is supported; here the input is [N, {}] and the axes {axes:?}",
                        dims_text(&s)
                    )))
                }
            }
            "Gemm" => self.gemm(n, inputs),
            "MatMul" => {
                n.only(&[])?;
                if let Some(v) = self.attention_matmul(n, inputs) {
                    return v;
                }
                // A linear layer on sequence-first tokens (MultiheadAttention's in_proj)
                // stays sequence-first.
                let seq_first = matches!(inputs.first(), Some(Some(Value::Mha(mha::Mha::SeqFirst(_)))));
                let (x, s) = match inputs.first() {
                    Some(Some(Value::Mha(mha::Mha::SeqFirst(x)))) => {
                        (x.clone(), self.shapes[x].clone())
                    }
                    _ => self.act(n, inputs, 0)?,
                };
                let b = self.konst(n, inputs, 1)?;
                // Feature vectors [N, F] or tokens [N, T, F] (a linear layer on each token).
                let (&[features] | &[_, features]) = s.as_slice() else {
                    return Err(n.err(format!(
                        "MatMul is imported as a linear layer on feature vectors [N, F] or tokens [N, T, F]; its input is [N, {}]",
                        dims_text(&s)
                    )));
                };
                let w = fold::transpose(&b, None).map_err(|d| n.err(d))?;
                Ok(match self.linear(n, x, features, w, None, 1)? {
                    Value::Act(y) if seq_first => Value::Mha(mha::Mha::SeqFirst(y)),
                    other => other,
                })
            }
            "Add" => self.add(n, inputs),
            "Sum" => {
                let mut names = Vec::new();
                for k in 0..inputs.len() {
                    names.push(self.act(n, inputs, k)?.0);
                }
                if names.len() == 1 {
                    return Ok(Value::Act(names.remove(0)));
                }
                let hint = self.hint(n, None);
                self.emit(n, hint, Add {}.into(), names, vec![])
            }
            "Mul" => match self.attention_scale(n, inputs, false) {
                Some(v) => v,
                None => self.mul(n, inputs),
            },
            "Div"
                if inputs
                    .iter()
                    .any(|v| matches!(v, Some(Value::Scores { .. } | Value::HeadsFirst { .. }))) =>
            {
                n.only(&[])?;
                self.attention_scale(n, inputs, true)
                    .unwrap_or_else(|| Err(n.err("expected the attention scores")))
            }
            "Div" if matches!(inputs.first(), Some(Some(Value::Act(_)))) => {
                n.only(&[])?;
                self.averaged_heads(n, inputs)
                    .unwrap_or_else(|| Err(computed_input_err(n, "Div")))
            }
            "Softmax" => self.attention_softmax(n, inputs),
            "Gather" => {
                if let Some(v) = self.mha_gather(n, inputs) {
                    return v;
                }
                if let Some(v) = self.qkv_gather(n, inputs) {
                    return v;
                }
                if let Some(v) = self.token_select(n, inputs) {
                    return v;
                }
                self.as_strided(n, inputs)
            }
            "Concat" => {
                n.only(&["axis"])?;
                if let Some(v) = self.class_token(n, inputs) {
                    return v;
                }
                let mut names = Vec::new();
                let mut rank = 0;
                for k in 0..inputs.len() {
                    let (x, s) = self.act(n, inputs, k)?;
                    rank = s.len() + 1;
                    names.push(x);
                }
                let ax = n
                    .int("axis")?
                    .ok_or_else(|| n.attr_err("axis", "missing"))?;
                // The unit axis: channels (1) of images, features (2) of tokens [N, T, F]
                // (IR `concat` of tokens joins their features).
                let unit = if rank == 3 { 2 } else { 1 };
                if fold::axis(ax, rank).map_err(|d| n.attr_err("axis", d))? != unit {
                    return Err(n.attr_err(
                        "axis",
                        if rank == 3 {
                            format!("only concatenation of tokens [N, T, F] along their features (axis 2 or -1) is supported, found {ax}")
                        } else {
                            format!("only concatenation along the channel axis (1) is supported, found {ax}")
                        },
                    ));
                }
                if names.len() == 1 {
                    return Ok(Value::Act(names.remove(0)));
                }
                let hint = self.hint(n, None);
                self.emit(n, hint, Concat {}.into(), names, vec![])
            }
            other => Err(computed_input_err(n, other)),
        }
    }

    /// Input `k`, which must be computed from the network input: its IR node and shape.
    fn act(
        &self,
        n: &NodeRef,
        inputs: &[Option<Value>],
        k: usize,
    ) -> Result<(String, Vec<usize>), OnnxError> {
        match inputs.get(k) {
            Some(Some(Value::Act(name))) => Ok((name.clone(), self.shapes[name].clone())),
            Some(Some(Value::Const(_) | Value::PerSample(_))) => Err(n.err(format!(
                "input {k} ('{}') is a constant, but fair-pruner expects a tensor computed from the network input there",
                n.node.input[k]
            ))),
            Some(Some(
                Value::Grouped { .. }
                | Value::ChannelsLast(_)
                | Value::Flat(_)
                | Value::Pixels(_)
                | Value::Rows(_),
            )) => Err(n.err(format!(
                "input {k} ('{}') is a transposed or regrouped tensor, which only a channel shuffle, the per-pixel ops of a channels-last region, or the steps of a token layout (Reshape [N, C, H·W] → Transpose [0, 2, 1]; Reshape [N·T, F] → Gemm → Reshape [N, T, F]) may read",
                n.node.input[k]
            ))),
            Some(Some(
                v @ (Value::Heads { .. }
                | Value::HeadsFirst { .. }
                | Value::MergedHeads { .. }
                | Value::Scores { .. }
                | Value::Weights { .. }
                | Value::Context { .. }),
            )) => Err(n.err(format!(
                "input {k} ('{}') is a step of multi-head attention ({}), which only the next step of the pattern may read: Reshape [N, T, H, d] → Transpose → MatMul(q, kᵀ) → Mul by 1/√d → Softmax → MatMul by v → Transpose [0, 2, 1, 3] → Reshape [N, T, E]",
                n.node.input[k],
                self.attention_step(v)
            ))),
            Some(Some(v @ Value::Mha(_))) => Err(self.mha_err(n, v)),
            Some(Some(Value::Qkv(q))) => Err(self.qkv_err(n, q)),
            Some(Some(Value::Swin(s))) => Err(self.swin_err(n, k, s)),
            Some(Some(Value::Token { .. })) => Err(n.err(format!(
                "input {k} ('{}') is one token with the token axis kept [N, 1, F], which only a Reshape or Flatten to [N, F] may read",
                n.node.input[k]
            ))),
            None | Some(None) => Err(n.err(format!("input {k} is missing"))),
        }
    }

    /// Input `k`, which must be a constant (an initializer or folded from them).
    fn konst(
        &self,
        n: &NodeRef,
        inputs: &[Option<Value>],
        k: usize,
    ) -> Result<Rc<Const>, OnnxError> {
        match inputs.get(k) {
            Some(Some(Value::Const(c))) => Ok(c.clone()),
            Some(Some(_)) => Err(n.err(format!(
                "input {k} ('{}') is computed from the network input, but fair-pruner needs a constant (initializer) there",
                n.node.input[k]
            ))),
            None | Some(None) => Err(n.err(format!("input {k} is missing"))),
        }
    }

    fn opt_konst(
        &self,
        n: &NodeRef,
        inputs: &[Option<Value>],
        k: usize,
    ) -> Result<Option<Rc<Const>>, OnnxError> {
        match inputs.get(k) {
            None | Some(None) => Ok(None),
            Some(_) => self.konst(n, inputs, k).map(Some),
        }
    }

    /// `None` for a bias that is all zeros and computed by the graph rather than stored (the
    /// unoptimised dynamo exporter builds a zero bias for bias-free convolutions): a stored
    /// bias is a parameter even when it is zero, a computed zero is not.
    fn computed_zero_bias(&mut self, n: &NodeRef, b: Option<Rc<Const>>) -> Option<Rc<Const>> {
        let name = n.node.input.get(2)?;
        let zero = matches!(&*b.as_deref()?.data, Data::F32(v) if v.iter().all(|&x| x == 0.0));
        if zero && !self.stored.contains(name.as_str()) && !self.inits.contains_key(name.as_str()) {
            self.dropped_biases.push(n.id.clone());
            return None;
        }
        b
    }

    /// An element-wise op of one input (its attributes already checked by the caller).
    fn unary(&mut self, n: &NodeRef, inputs: &[Option<Value>], op: Op) -> Result<Value, OnnxError> {
        let (x, _) = self.act(n, inputs, 0)?;
        let hint = self.hint(n, None);
        self.emit(n, hint, op, vec![x], vec![])
    }

    fn conv(&mut self, n: &NodeRef, inputs: &[Option<Value>]) -> Result<Value, OnnxError> {
        n.only(&[
            "auto_pad",
            "dilations",
            "group",
            "kernel_shape",
            "pads",
            "strides",
        ])?;
        let (x, s) = self.act(n, inputs, 0)?;
        let w = self.konst(n, inputs, 1)?;
        let b = self.computed_zero_bias(n, self.opt_konst(n, inputs, 2)?);
        let (c, h, wd) = image(n, &s)?;
        let [m, _, kh, kw] = w.dims[..] else {
            return Err(n.err(format!(
                "only 2-D convolutions are supported: the weight must be [M, C/group, kH, kW], found {:?}",
                w.dims
            )));
        };
        let kernel = Pair(kh, kw);
        if let Some(ks) = n.ints("kernel_shape")?
            && ks != [kh as i64, kw as i64]
        {
            return Err(n.attr_err(
                "kernel_shape",
                format!("{ks:?} disagrees with the weight's shape {:?}", w.dims),
            ));
        }
        let stride = pair(n, "strides", 1, 1)?;
        let dilation = pair(n, "dilations", 1, 1)?;
        let padding = pads(n, (h, wd), kernel, stride, dilation)?;
        let groups = usize::try_from(n.int_or("group", 1)?)
            .ok()
            .filter(|&g| g > 0)
            .ok_or_else(|| n.attr_err("group", "must be positive"))?;
        let op = Conv2d {
            in_channels: c,
            out_channels: m,
            kernel_size: kernel,
            stride,
            padding,
            dilation,
            groups,
            bias: b.is_some(),
        };
        let mut params = vec![(ParamKind::Weight, w)];
        params.extend(b.map(|b| (ParamKind::Bias, b)));
        let hint = self.hint(n, Some(1));
        self.emit(n, hint, op.into(), vec![x], params)
    }

    fn batch_norm(&mut self, n: &NodeRef, inputs: &[Option<Value>]) -> Result<Value, OnnxError> {
        n.only(&["epsilon", "momentum", "training_mode", "spatial"])?;
        let (x, s) = self.act(n, inputs, 0)?;
        let scale = self.konst(n, inputs, 1)?;
        let bias = self.konst(n, inputs, 2)?;
        let mean = self.konst(n, inputs, 3)?;
        let var = self.konst(n, inputs, 4)?;
        let eps = f32_to_f64(n.float("epsilon")?.unwrap_or(1e-5));
        let m = f32_to_f64(n.float("momentum")?.unwrap_or(0.9));
        let momentum = f32_to_f64((1.0 - m) as f32);
        if n.int_or("training_mode", 0)? != 0 {
            self.notes.push(format!(
                "BatchNormalization '{}' was exported in training mode; it is imported as inference-mode BatchNorm with its running statistics",
                n.id
            ));
        }
        let op: Op = match s.len() {
            3 => BatchNorm2d {
                num_features: s[0],
                eps,
                momentum,
            }
            .into(),
            1 => BatchNorm1d {
                num_features: s[0],
                eps,
                momentum,
            }
            .into(),
            _ => {
                return Err(n.err(format!(
                    "BatchNorm is supported on images [N, C, H, W] and features [N, F]; the input is [N, {}]",
                    dims_text(&s)
                )));
            }
        };
        let params = vec![
            (ParamKind::Weight, scale),
            (ParamKind::Bias, bias),
            (ParamKind::RunningMean, mean),
            (ParamKind::RunningVar, var),
        ];
        let hint = self.hint(n, Some(1));
        self.emit(n, hint, op, vec![x], params)
    }

    fn clip(&mut self, n: &NodeRef, inputs: &[Option<Value>]) -> Result<Value, OnnxError> {
        let bound = |c: Option<Rc<Const>>, what: &str| -> Result<Option<f64>, OnnxError> {
            c.map(|c| {
                c.scalar_f32()
                    .map(f32_to_f64)
                    .map_err(|d| n.err(format!("{what}: {d}")))
            })
            .transpose()
        };
        let (min, max) = if inputs.len() > 1 {
            n.only(&[])?;
            (
                bound(self.opt_konst(n, inputs, 1)?, "min")?,
                bound(self.opt_konst(n, inputs, 2)?, "max")?,
            )
        } else {
            n.only(&["min", "max"])?;
            (
                n.float("min")?.map(f32_to_f64),
                n.float("max")?.map(f32_to_f64),
            )
        };
        let op: Op = match (min, max) {
            (Some(0.0), None) => Relu {}.into(),
            (Some(min), Some(max)) => Clip { min, max }.into(),
            _ => {
                return Err(n.err(format!(
                    "only clips with both bounds (e.g. ReLU6: min 0, max 6) or with min 0 alone (ReLU) are supported; found min {min:?}, max {max:?}"
                )));
            }
        };
        let (x, _) = self.act(n, inputs, 0)?;
        let hint = self.hint(n, None);
        self.emit(n, hint, op, vec![x], vec![])
    }

    fn pool(&mut self, n: &NodeRef, inputs: &[Option<Value>]) -> Result<Value, OnnxError> {
        let max = n.op() == "MaxPool";
        n.only(&[
            "auto_pad",
            "ceil_mode",
            "count_include_pad",
            "dilations",
            "kernel_shape",
            "pads",
            "storage_order",
            "strides",
        ])?;
        let (x, s) = self.act(n, inputs, 0)?;
        let (_, h, w) = image(n, &s)?;
        let ks = n
            .ints("kernel_shape")?
            .ok_or_else(|| n.attr_err("kernel_shape", "missing"))?;
        let kernel = match ks[..] {
            [a, b] if a > 0 && b > 0 => Pair(a as usize, b as usize),
            _ => {
                return Err(n.attr_err(
                    "kernel_shape",
                    format!("expected two positive sizes, found {ks:?}"),
                ));
            }
        };
        let stride = pair(n, "strides", 1, 1)?;
        if pair(n, "dilations", 1, 1)? != Pair(1, 1) {
            return Err(n.attr_err("dilations", "dilated pooling is not supported"));
        }
        if n.int_or("storage_order", 0)? != 0 {
            return Err(n.attr_err("storage_order", "only row-major (0) is supported"));
        }
        let padding = pads(n, (h, w), kernel, stride, Pair(1, 1))?;
        let ceil_mode = n.int_or("ceil_mode", 0)? != 0;
        let stride = (stride != kernel).then_some(stride);
        let op: Op = if max {
            if n.has("count_include_pad") {
                return Err(n.attr_err("count_include_pad", "is not a MaxPool attribute"));
            }
            MaxPool2d {
                kernel_size: kernel,
                stride,
                padding,
                ceil_mode,
            }
            .into()
        } else {
            AvgPool2d {
                kernel_size: kernel,
                stride,
                padding,
                ceil_mode,
                count_include_pad: n.int_or("count_include_pad", 0)? != 0,
            }
            .into()
        };
        let hint = self.hint(n, None);
        self.emit(n, hint, op, vec![x], vec![])
    }

    fn reduce_mean(&mut self, n: &NodeRef, inputs: &[Option<Value>]) -> Result<Value, OnnxError> {
        n.only(&["axes", "keepdims", "noop_with_empty_axes"])?;
        let (x, s) = self.act(n, inputs, 0)?;
        let axes = match inputs.get(1).cloned().flatten() {
            Some(_) => Some(self.konst(n, inputs, 1)?.ints().map_err(|e| n.err(e))?),
            None => n.ints("axes")?,
        };
        let mut axes: Vec<usize> = match axes {
            Some(a) => a
                .iter()
                .map(|&a| fold::axis(a, s.len() + 1))
                .collect::<Result<_, _>>()
                .map_err(|d| n.err(d))?,
            None => (0..=s.len()).collect(),
        };
        axes.sort_unstable();
        axes.dedup();
        // The mean over the tokens of [N, T, F]: `token_mean`.
        if s.len() == 2 && axes == [1] {
            if n.int_or("keepdims", 1)? != 0 {
                return Err(n.attr_err(
                    "keepdims",
                    "the mean over the tokens of [N, T, F] is supported without keeping the token axis (keepdims = 0)",
                ));
            }
            let hint = self.hint(n, None);
            return self.emit(n, hint, TokenMean {}.into(), vec![x], vec![]);
        }
        if s.len() != 3 || axes != [2, 3] {
            return Err(n.err(format!(
                "ReduceMean is supported over the spatial axes [2, 3] of an image (global average pooling) and over the tokens (axis 1) of [N, T, F]; here over {axes:?} of [N, {}]",
                dims_text(&s)
            )));
        }
        let op = AdaptiveAvgPool2d {
            output_size: Pair(1, 1),
        };
        let hint = self.hint(n, None);
        let pooled = self.emit(n, hint.clone(), op.into(), vec![x], vec![])?;
        if n.int_or("keepdims", 1)? != 0 {
            return Ok(pooled);
        }
        let Value::Act(p) = pooled else {
            return Ok(pooled);
        };
        self.emit(
            n,
            format!("{hint}_flatten"),
            Flatten {}.into(),
            vec![p],
            vec![],
        )
    }

    fn flatten(&mut self, n: &NodeRef, x: String, s: &[usize]) -> Result<Value, OnnxError> {
        if s.len() == 1 {
            return Ok(Value::Act(x));
        }
        if s.len() != 3 {
            return Err(n.err(format!(
                "flattening is supported for images [N, C, H, W]; the input is [N, {}]",
                dims_text(s)
            )));
        }
        let hint = self.hint(n, None);
        self.emit(n, hint, Flatten {}.into(), vec![x], vec![])
    }

    fn reshape(&mut self, n: &NodeRef, inputs: &[Option<Value>]) -> Result<Value, OnnxError> {
        n.only(&["allowzero"])?;
        let target = self.konst(n, inputs, 1)?;
        let Data::Int(t) = &*target.data else {
            return Err(n.err("the target shape must be int64"));
        };
        let allowzero = n.int_or("allowzero", 0)? != 0;
        // The second half of a channel shuffle: [N, C/g, g, H, W] back to [N, C, H, W].
        if let Some(Some(Value::Grouped {
            x,
            groups,
            transposed: true,
        })) = inputs.first()
        {
            let s = self.shapes[x].clone();
            let grouped = [s[0] / groups, *groups, s[1], s[2]];
            if self.resolve(t, &grouped, allowzero).as_deref() == Some(&s) {
                let op = fair_ir::ChannelShuffle { groups: *groups };
                let hint = self.hint(n, None);
                return self.emit(n, hint, op.into(), vec![x.clone()], vec![]);
            }
            return Err(n.err(format!(
                "a channel shuffle must reshape back to [N, {}], found [{}]",
                dims_text(&s),
                describe(t)
            )));
        }
        // Rows of tokens back to tokens: [N·T, F] to [N, T, F].
        if let Some(Some(Value::Rows(x))) = inputs.first() {
            let s = self.shapes[x].clone();
            if self.resolve(t, &s, allowzero).as_deref() == Some(&s) {
                return Ok(Value::Act(x.clone()));
            }
            return Err(n.err(format!(
                "rows of tokens [N·T, F] must be reshaped back to tokens [N, {}], found [{}]",
                dims_text(&s),
                describe(t)
            )));
        }
        // One token with the token axis kept, [N, 1, F], to [N, F].
        if let Some(Some(Value::Token { x, index })) = inputs.first() {
            let f = vec![self.shapes[x][1]];
            // Resolved against the token's own shape [1, F]: a copied `0` at axis 1 is 1.
            if self.resolve(t, &[1, f[0]], allowzero).as_deref() == Some(&f) {
                return self.select_token(n, x.clone(), *index);
            }
            return Err(n.err(format!(
                "one token [N, 1, {}] must be reshaped to [N, {}], found [{}]",
                dims_text(&f),
                dims_text(&f),
                describe(t)
            )));
        }
        if let Some(Some(v)) = inputs.first()
            && let Some(out) = self.mha_reshape(n, &v.clone(), t, allowzero)
        {
            return out;
        }
        if let Some(Some(v)) = inputs.first()
            && let Some(out) = self.qkv_reshape(n, v, t, allowzero)
        {
            return out;
        }
        if let Some(Some(v)) = inputs.first()
            && let Some(out) = self.attention_reshape(n, &v.clone(), t, allowzero)
        {
            return out;
        }
        let (x, s) = self.act(n, inputs, 0)?;
        // Tokens to rows: [N, T, F] to [N·T, F], for a Gemm on each token.
        if let ([Int::N(-1), Int::N(f)], [_, features]) = (t.as_slice(), s.as_slice())
            && *f > 0
            && *f as usize == *features
        {
            return Ok(Value::Rows(x));
        }
        // The whole batch to one axis: only as the first half of an `as_strided` copy.
        if matches!(t.as_slice(), [Int::N(-1)]) && self.batch.is_some() {
            return Ok(Value::Flat(x));
        }
        let per_sample: usize = s.iter().product();
        let out = self.resolve(t, &s, allowzero);
        match out.as_deref() {
            Some(o) if o == s => Ok(Value::Act(x)),
            Some([f]) if *f == per_sample => self.flatten(n, x, &s),
            // The first half of `tokens`: [N, C, H, W] to [N, C, H·W].
            Some([c, hw]) if s.len() == 3 && *c == s[0] && *hw == s[1] * s[2] => {
                Ok(Value::Pixels(x))
            }
            // The first half of a channel shuffle: [N, C, H, W] to [N, g, C/g, H, W].
            Some([g, cg, h, w]) if s.len() == 3 && g * cg == s[0] && [*h, *w] == s[1..] => {
                Ok(Value::Grouped {
                    x,
                    groups: *g,
                    transposed: false,
                })
            }
            // Tokens to rows with the rows counted: [T·N, F] (TorchScript's
            // `x.reshape(B*T, F)` with a dynamic batch folds to `T·batch`).
            _ if matches!((t.as_slice(), s.as_slice()),
                ([r, Int::N(f)], [tokens, features])
                    if *f as usize == *features && self.batch_times(*r, *tokens as i64)) =>
            {
                Ok(Value::Rows(x))
            }
            _ => Err(n.err(format!(
                "only reshapes that flatten [N, C, H, W] to [N, C·H·W], keep the shape, group channels for a channel shuffle, flatten an image's pixels [N, C, H·W] (before a Transpose [0, 2, 1] to tokens) or turn tokens [N, T, F] to rows [N·T, F] and back (around a Gemm), or split tokens [N, T, E] into heads [N, T, H, d] and back (multi-head attention) are supported; here [N, {}] is reshaped to [{}]",
                dims_text(&s),
                describe(t)
            ))),
        }
    }

    /// Whether `t` is the batch axis of a `Reshape` target: the batch symbol, -1 (inferred),
    /// the file's fixed batch size, or a copied dimension `0` when the input's axis at the
    /// same position is the batch (`zero_copies_batch`; not with `allowzero`).
    pub(super) fn batch_dim(&self, t: Int, allowzero: bool, zero_copies_batch: bool) -> bool {
        match t {
            Int::Batch(k) => k == 1,
            Int::N(0) => zero_copies_batch && !allowzero,
            Int::N(-1) => true,
            Int::N(k) => self.batch.is_some_and(|b| k == b as i64),
        }
    }

    /// The per-sample shape `Reshape` gives a tensor of per-sample shape `s` for target `t`
    /// (`None` when the target does not keep the batch dimension first or does not fit).
    fn resolve(&self, t: &[Int], s: &[usize], allowzero: bool) -> Option<Vec<usize>> {
        self.resolve_rows(t, s, allowzero, 1)
    }

    /// [`Importer::resolve`] for a tensor whose ONNX batch axis holds `k` rows per sample
    /// (windows, see `swin.rs`), each of shape `s`.
    pub(super) fn resolve_rows(
        &self,
        t: &[Int],
        s: &[usize],
        allowzero: bool,
        k: usize,
    ) -> Option<Vec<usize>> {
        let per_sample: usize = s.iter().product();
        let (first, rest) = t.split_first()?;
        let batch = if k == 1 {
            self.batch_dim(*first, allowzero, true)
        } else {
            (*first == Int::N(0) && !allowzero) || self.batch_times(*first, k as i64)
        };
        if !batch {
            return None;
        }
        let mut out = Vec::new();
        let mut infer = None;
        for (i, v) in rest.iter().enumerate() {
            match v {
                Int::N(-1) if infer.is_none() && *first != Int::N(-1) => {
                    infer = Some(i);
                    out.push(1);
                }
                Int::N(0) if !allowzero => out.push(*s.get(i)?),
                Int::N(k) if *k > 0 => out.push(usize::try_from(*k).ok()?),
                _ => return None,
            }
        }
        let known = out.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        if let Some(i) = infer {
            if known == 0 || !per_sample.is_multiple_of(known) {
                return None;
            }
            out[i] = per_sample / known;
        } else if known != per_sample {
            return None;
        }
        Some(out)
    }

    /// `Transpose` of computed tensors: to and from channels-last around a
    /// LayerNormalization, and the middle step of a channel shuffle.
    fn transpose(&mut self, n: &NodeRef, inputs: &[Option<Value>]) -> Result<Value, OnnxError> {
        n.only(&["perm"])?;
        let perm = n.ints("perm")?.unwrap_or_default();
        if let Some(Some(v)) = inputs.first()
            && let Some(out) = self.attention_transpose(v, &perm)
        {
            return Ok(out);
        }
        if let Some(Some(v)) = inputs.first()
            && let Some(out) = self.mha_transpose(n, v, &perm)
        {
            return out;
        }
        if let Some(Some(v)) = inputs.first()
            && let Some(out) = self.qkv_transpose(n, v, &perm)
        {
            return out;
        }
        match (inputs.first().cloned().flatten(), perm.as_slice()) {
            (Some(Value::Act(x)), [0, 2, 3, 1]) if self.shapes[&x].len() == 3 => {
                Ok(Value::ChannelsLast(x))
            }
            (Some(Value::ChannelsLast(x)), [0, 3, 1, 2]) => Ok(Value::Act(x)),
            // An image's flattened pixels [N, C, H·W] to tokens [N, H·W, C].
            (Some(Value::Pixels(x)), [0, 2, 1]) => {
                let hint = self.hint(n, None);
                self.emit(n, hint, Tokens {}.into(), vec![x], vec![])
            }
            (
                Some(Value::Grouped {
                    x,
                    groups,
                    transposed,
                }),
                [0, 2, 1, 3, 4],
            ) => Ok(Value::Grouped {
                x,
                groups,
                transposed: !transposed,
            }),
            (Some(v @ (Value::Heads { .. } | Value::HeadsFirst { .. })), _) => Err(n.err(format!(
                "its input '{}' is {}: heads are transposed to [N, H, T, d] (perm [0, 2, 1, 3], q and v) or [N, H, d, T] (perm [0, 2, 3, 1], k; or [0, 1, 3, 2] after [0, 2, 1, 3]); found perm {perm:?}",
                n.node.input[0],
                self.attention_step(&v)
            ))),
            _ => Err(n.err(format!(
                "transposing computed tensors is supported only to channels-last and back around a LayerNormalization, for channel shuffles, from an image's flattened pixels [N, C, H·W] to tokens (perm [0, 2, 1]), and for the heads of multi-head attention ([0, 2, 1, 3], [0, 2, 3, 1], [0, 1, 3, 2]); found perm {perm:?}"
            ))),
        }
    }

    /// `LayerNormalization` over the channels of a channels-last image (ConvNeXt's
    /// LayerNorm2d), or over the features of tokens `[N, T, F]` or feature vectors `[N, F]`
    /// (`layer_norm`). A scale of ones without a bias is a LayerNorm without affine
    /// parameters.
    fn layer_norm(&mut self, n: &NodeRef, inputs: &[Option<Value>]) -> Result<Value, OnnxError> {
        n.only(&["axis", "epsilon", "stash_type"])?;
        let (x, channels_last) = match inputs.first() {
            Some(Some(Value::ChannelsLast(x))) => (x.clone(), true),
            Some(Some(Value::Act(x))) if (1..=2).contains(&self.shapes[x].len()) => {
                (x.clone(), false)
            }
            _ => {
                return Err(n.err(
                    "LayerNormalization is supported over the features of tokens [N, T, F] or feature vectors [N, F], and over the channels of an image in channels-last layout (Transpose [0, 2, 3, 1] before, [0, 3, 1, 2] after)",
                ));
            }
        };
        let s = self.shapes[&x].clone();
        // The last ONNX axis (a Swin grid [N, H, W, C] has four, see `swin.rs`).
        let last = if channels_last {
            3
        } else {
            self.onnx_rank(&x) as i64 - 1
        };
        let axis = n.int_or("axis", -1)?;
        if axis != -1 && axis != last {
            return Err(n.attr_err(
                "axis",
                format!("only the last axis (-1) is supported, found {axis}"),
            ));
        }
        let c = if channels_last { s[0] } else { s[s.len() - 1] };
        let scale = self.konst(n, inputs, 1)?;
        let bias = self.opt_konst(n, inputs, 2)?;
        let ones = matches!(&*scale.data, Data::F32(v) if v.iter().all(|&s| s == 1.0));
        let affine = !(ones && bias.is_none());
        let eps = f32_to_f64(n.float("epsilon")?.unwrap_or(1e-5));
        let op: Op = if channels_last {
            fair_ir::LayerNorm2d {
                num_features: c,
                eps,
                affine,
            }
            .into()
        } else {
            LayerNorm {
                num_features: c,
                eps,
                affine,
            }
            .into()
        };
        let mut params = Vec::new();
        if affine {
            // Zeros as many as the stored scale holds (the parameter check names a scale
            // that does not fit).
            let zeros = || Rc::new(Const::f32(scale.dims.clone(), vec![0.0; scale.len()]));
            let bias = bias.unwrap_or_else(zeros);
            params.push((ParamKind::Weight, scale));
            params.push((ParamKind::Bias, bias));
        }
        let hint = self.hint(n, Some(1));
        match self.emit(n, hint, op, vec![x], params)? {
            Value::Act(y) if channels_last => Ok(Value::ChannelsLast(y)),
            other => Ok(other),
        }
    }

    /// `Slice` of computed tensors along axis 1, step 1: a range of channels (or features),
    /// or of tokens `[N, T, F]` (`token_range`).
    fn slice(&mut self, n: &NodeRef, inputs: &[Option<Value>]) -> Result<Value, OnnxError> {
        n.only(&[])?;
        let (x, s) = self.act(n, inputs, 0)?;
        let ints = |k: usize| -> Result<Option<Vec<i64>>, OnnxError> {
            self.opt_konst(n, inputs, k)?
                .map(|c| c.ints().map_err(|e| n.err(e)))
                .transpose()
        };
        let starts = ints(1)?.ok_or_else(|| n.err("missing starts"))?;
        let ends = ints(2)?.ok_or_else(|| n.err("missing ends"))?;
        let axes = ints(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = ints(4)?.unwrap_or_else(|| vec![1; starts.len()]);
        let axis = match axes[..] {
            [a] => fold::axis(a, s.len() + 1).map_err(|d| n.err(d))?,
            _ => usize::MAX,
        };
        if axis != 1 || starts.len() != 1 || ends.len() != 1 || steps != [1] {
            return Err(n.err(format!(
                "slicing computed tensors is supported along axis 1 (the channels of [N, C, H, W] or [N, F], the tokens of [N, T, F]) with step 1; found axes {axes:?}, steps {steps:?}"
            )));
        }
        let c = s[0] as i64;
        let fix = |v: i64| (if v < 0 { v.saturating_add(c) } else { v }).clamp(0, c) as usize;
        let (start, end) = (fix(starts[0]), fix(ends[0]));
        let hint = self.hint(n, None);
        // Axis 1 of tokens [N, T, F] is the token axis: a run of tokens (`x[:, 1:]`).
        let op = if s.len() == 2 {
            if start >= end {
                return Err(n.err(format!(
                    "the slice keeps no token of the {c} tokens of '{x}' ({}..{} on axis 1)",
                    starts[0], ends[0]
                )));
            }
            fair_ir::TokenRange { start, end }.into()
        } else {
            fair_ir::Slice { start, end }.into()
        };
        self.emit(n, hint, op, vec![x], vec![])
    }

    /// `Split` of computed tensors along the channels: one `slice` per output.
    fn split(&mut self, n: &NodeRef<'m>) -> Result<(), OnnxError> {
        n.only(&["axis", "split", "num_outputs"])?;
        let node = n.node;
        let mut inputs = Vec::new();
        for name in &node.input {
            inputs.push(if name.is_empty() {
                None
            } else {
                Some(self.value(n, name)?)
            });
        }
        if let Some(done) = self.qkv_split(n, &inputs) {
            return done;
        }
        if let Some(done) = self.maxvit_split(n, &inputs) {
            return done;
        }
        let (x, s) = self.act(n, &inputs, 0)?;
        if fold::axis(n.int_or("axis", 0)?, s.len() + 1).map_err(|d| n.attr_err("axis", d))? != 1 {
            return Err(n.attr_err(
                "axis",
                "only splits along the channel axis (1) are supported",
            ));
        }
        let parts = node.output.len();
        let non_negative = |v: Vec<i64>| -> Result<Vec<usize>, OnnxError> {
            v.iter()
                .map(|&x| usize::try_from(x))
                .collect::<Result<_, _>>()
                .map_err(|_| n.err(format!("split sizes {v:?} must not be negative")))
        };
        let sizes: Vec<usize> = match (self.opt_konst(n, &inputs, 1)?, n.ints("split")?) {
            (Some(c), _) => non_negative(c.ints().map_err(|e| n.err(e))?)?,
            (None, Some(v)) => non_negative(v)?,
            (None, None) => {
                let chunk = s[0].div_ceil(parts.max(1));
                (0..parts)
                    .map(|i| chunk.min(s[0].saturating_sub(i * chunk)))
                    .collect()
            }
        };
        let total = sizes.iter().try_fold(0usize, |a, &b| a.checked_add(b));
        if sizes.len() != parts || total != Some(s[0]) {
            return Err(n.err(format!(
                "split sizes {sizes:?} do not divide {} channels into {parts} outputs",
                s[0]
            )));
        }
        let base = self.hint(n, None);
        let mut start = 0;
        for (k, size) in sizes.into_iter().enumerate() {
            let op = fair_ir::Slice {
                start,
                end: start + size,
            };
            start += size;
            let v = self.emit(n, format!("{base}_{k}"), op.into(), vec![x.clone()], vec![])?;
            self.values.insert(node.output[k].clone(), v);
        }
        Ok(())
    }

    fn gemm(&mut self, n: &NodeRef, inputs: &[Option<Value>]) -> Result<Value, OnnxError> {
        n.only(&["alpha", "beta", "transA", "transB"])?;
        if n.int_or("transA", 0)? != 0 {
            return Err(n.attr_err("transA", "only transA = 0 is supported"));
        }
        if n.float("alpha")?.unwrap_or(1.0) != 1.0 {
            return Err(n.attr_err("alpha", "only alpha = 1 is supported"));
        }
        let c = self.computed_zero_bias(n, self.opt_konst(n, inputs, 2)?);
        if c.is_some() && n.float("beta")?.unwrap_or(1.0) != 1.0 {
            return Err(n.attr_err("beta", "only beta = 1 is supported"));
        }
        // Rows [N·T, F] of tokens: a linear layer on each token, its output rows again.
        let (rows, seq) = match inputs.first() {
            Some(Some(Value::Rows(x))) => (Some(x.clone()), false),
            Some(Some(Value::Mha(mha::Mha::SeqRows(x)))) => (Some(x.clone()), true),
            _ => (None, false),
        };
        let (x, s) = match &rows {
            Some(x) => (x.clone(), self.shapes[x].clone()),
            None => self.act(n, inputs, 0)?,
        };
        let features = match (&rows, s.as_slice()) {
            (None, &[f]) | (Some(_), &[_, f]) => f,
            _ => {
                return Err(n.err(format!(
                    "Gemm is imported as a linear layer on feature vectors [N, F]; its input is [N, {}]",
                    dims_text(&s)
                )));
            }
        };
        let b = self.konst(n, inputs, 1)?;
        let w = if n.int_or("transB", 0)? != 0 {
            b
        } else {
            Rc::new(fold::transpose(&b, None).map_err(|d| n.err(d))?)
        };
        let y = self.linear(n, x, features, w, c, 1)?;
        Ok(match (rows, y) {
            (Some(_), Value::Act(y)) if seq => Value::Mha(mha::Mha::SeqRows(y)),
            (Some(_), Value::Act(y)) => Value::Rows(y),
            (_, y) => y,
        })
    }

    /// A linear layer with weight `w` ([out, in]) and an optional bias broadcast to [out].
    fn linear(
        &mut self,
        n: &NodeRef,
        x: String,
        features: usize,
        w: impl Into<Rc<Const>>,
        bias: Option<Rc<Const>>,
        weight_input: usize,
    ) -> Result<Value, OnnxError> {
        let w: Rc<Const> = w.into();
        let [out, inf] = w.dims[..] else {
            return Err(n.err(format!(
                "the weight must be a matrix, found shape {:?}",
                w.dims
            )));
        };
        if inf != features {
            return Err(n.err(format!(
                "the weight {:?} does not match the input's {features} features",
                w.dims
            )));
        }
        let bias = match bias {
            None => None,
            Some(b) => Some(Rc::new(bias_vector(n, &b, out)?)),
        };
        let op = Linear {
            in_features: features,
            out_features: out,
            bias: bias.is_some(),
        };
        let mut params = vec![(ParamKind::Weight, w)];
        params.extend(bias.map(|b| (ParamKind::Bias, b)));
        let hint = self.hint(n, Some(weight_input));
        self.emit(n, hint, op.into(), vec![x], params)
    }

    fn add(&mut self, n: &NodeRef, inputs: &[Option<Value>]) -> Result<Value, OnnxError> {
        n.only(&[])?;
        match (
            inputs.first().cloned().flatten(),
            inputs.get(1).cloned().flatten(),
        ) {
            (Some(Value::Act(a)), Some(Value::Act(b))) => {
                let hint = self.hint(n, None);
                self.emit(n, hint, Add {}.into(), vec![a, b], vec![])
            }
            (Some(Value::Act(a)), Some(Value::Const(c)))
            | (Some(Value::Const(c)), Some(Value::Act(a))) => {
                let k = usize::from(matches!(inputs[0], Some(Value::Const(_))));
                if let Some(v) = self.position_embedding(n, &a, &n.node.input[1 - k], &c) {
                    return v;
                }
                self.fold_bias(n, &n.node.input[k], a, &c)
            }
            // The bias of a linear layer on sequence-first tokens (the fused in_proj).
            (Some(Value::Mha(mha::Mha::SeqFirst(a))), Some(Value::Const(c)))
            | (Some(Value::Const(c)), Some(Value::Mha(mha::Mha::SeqFirst(a)))) => {
                let k = usize::from(matches!(inputs[0], Some(Value::Const(_))));
                let bias = n.node.input[1 - k].clone();
                match self.fold_bias(n, &n.node.input[k], a, &c)? {
                    Value::Act(y) => {
                        self.note_in_proj(&y, &bias);
                        Ok(Value::Mha(mha::Mha::SeqFirst(y)))
                    }
                    other => Ok(other),
                }
            }
            _ => Err(n.err("expected two inputs")),
        }
    }

    /// `Add(layer(x), constant)` where the layer can take a bias it lacks
    /// ([`fair_ir::Contract::with_bias`]: a bias-free conv or linear layer) and is read only
    /// by this Add: the constant becomes the layer's bias.
    fn fold_bias(
        &mut self,
        n: &NodeRef,
        value: &str,
        layer: String,
        c: &Const,
    ) -> Result<Value, OnnxError> {
        // Read by this Add only: through this value, and by no IR node emitted so far.
        let only_reader = self.readers.get(value).copied() == Some(1)
            && !self.nodes.iter().any(|m| m.inputs.contains(&layer));
        let pos = self.nodes.iter().position(|m| m.name == layer);
        // The layer's contract says whether it takes a bias; one it already has is refused.
        let biased = pos.and_then(|p| {
            let op = &self.nodes[p].op;
            op.contract().with_bias(true).filter(|b| b != op)
        });
        let bias_spec = biased.as_ref().and_then(|b| {
            b.params(&layer)
                .into_iter()
                .find(|q| q.kind == ParamKind::Bias)
        });
        let (Some(p), Some(biased), Some(spec), true) = (pos, biased, bias_spec, only_reader)
        else {
            return Err(n.err(
                "adding a constant is supported only as the bias of the bias-free Conv, Gemm or MatMul that produces the other input (and nothing else reads)",
            ));
        };
        // One value per unit along the output's unit axis ([`fair_ir::unit_axis`]: the first
        // of images and features, the last of tokens), broadcast over the others (`[u, 1, 1]`
        // on images, `[u]` on features, `[u]` or `[1, u]` on tokens), with or without a batch
        // axis of 1.
        let units = spec.numel();
        let shape = &self.shapes[&layer];
        let rank = shape.len();
        let ok_dims = if fair_ir::unit_axis(shape) + 1 == rank && rank > 1 {
            // Units last: broadcasting aligns the trailing axes.
            c.dims.len() <= rank + 1
                && c.dims.last() == Some(&units)
                && c.dims[..c.dims.len() - 1].iter().all(|&d| d == 1)
        } else {
            let dims = c.dims.strip_prefix(&[1]).filter(|d| d.len() == rank);
            let dims = dims.unwrap_or(&c.dims);
            dims.len() == rank && dims.first() == Some(&units) && dims[1..].iter().all(|&d| d == 1)
        };
        if !ok_dims {
            return Err(n.err(format!(
                "the constant of shape {:?} is not a bias for '{layer}' with {units} units",
                c.dims
            )));
        }
        let Data::F32(v) = &*c.data else {
            return Err(n.err("the bias must be float32"));
        };
        self.nodes[p].op = biased;
        // Later readers of the layer's pre-bias output (under any alias) would now see the
        // bias: `value` refuses them.
        for (k, v) in &self.values {
            let reads = match v {
                Value::Act(l)
                | Value::Rows(l)
                | Value::Token { x: l, .. }
                | Value::Mha(mha::Mha::SeqFirst(l) | mha::Mha::SeqRows(l)) => Some(l),
                _ => None,
            };
            if reads == Some(&layer) {
                self.pre_bias.insert(k.clone(), layer.clone());
            }
        }
        self.weight(n, &spec.name, v.len() * fold::F32_BYTES)?;
        let bias = Tensor::f32(&spec.name, spec.shape, v.clone());
        self.tensors.insert(spec.name, bias);
        self.notes.push(format!(
            "the constant added by '{}' became the bias of '{layer}'",
            n.id
        ));
        Ok(Value::Act(layer))
    }

    fn mul(&mut self, n: &NodeRef, inputs: &[Option<Value>]) -> Result<Value, OnnxError> {
        if inputs.iter().any(|v| matches!(v, Some(Value::Const(_)))) {
            return self.scale_mul(n, inputs);
        }
        n.only(&[])?;
        let (a, sa) = self.act(n, inputs, 0).map_err(|_| {
            n.err("multiplying by a constant is not supported; only element-wise products of two computed tensors (squeeze-excitation gates, SiLU) are")
        })?;
        let (b, sb) = self.act(n, inputs, 1).map_err(|_| {
            n.err("multiplying by a constant is not supported; only element-wise products of two computed tensors (squeeze-excitation gates, SiLU) are")
        })?;
        let big_first = sa.iter().product::<usize>() >= sb.iter().product::<usize>();
        let ins = if big_first { vec![a, b] } else { vec![b, a] };
        self.product(n, ins)
    }

    /// Emits the element-wise product of `ins` for ONNX `Mul` node `n`, recorded for
    /// [`Importer::fuse_gates`].
    fn product(&mut self, n: &NodeRef, ins: Vec<String>) -> Result<Value, OnnxError> {
        let hint = self.hint(n, None);
        let v = self.emit(n, hint, Mul {}.into(), ins, vec![])?;
        if let Value::Act(name) = &v {
            self.products.insert(name.clone());
        }
        Ok(v)
    }

    /// Adds an IR node for ONNX node `n`: checks the op and infers its shape, checks each
    /// weight against the op's parameter spec, and records the tensors under the IR's names.
    fn emit(
        &mut self,
        n: &NodeRef,
        hint: String,
        op: Op,
        inputs: Vec<String>,
        params: Vec<(ParamKind, Rc<Const>)>,
    ) -> Result<Value, OnnxError> {
        let name = self.unique(hint);
        let contract = op.contract();
        let ir = |detail: String| {
            n.err(format!(
                "as IR node '{name}' ({}): {detail}",
                op.type_name()
            ))
        };
        contract.check().map_err(ir)?;
        let arity = contract.arity();
        if inputs.len() < arity.min || inputs.len() > arity.max {
            return Err(ir(format!(
                "takes {}..={} inputs, found {}",
                arity.min,
                arity.max,
                inputs.len()
            )));
        }
        let shapes: Vec<(&str, &[usize])> = inputs
            .iter()
            .map(|i| (i.as_str(), self.shapes[i].as_slice()))
            .collect();
        let shape = contract.infer(&shapes).map_err(ir)?;
        let mut params = params;
        for spec in op.params(&name) {
            let t = match params.iter().position(|(k, _)| *k == spec.kind) {
                Some(i) => {
                    let (_, c) = params.swap_remove(i);
                    if c.dims != spec.shape {
                        return Err(n.err(format!(
                            "the {} has shape {:?}, but IR node '{name}' ({}) needs {:?}",
                            spec.kind.suffix(),
                            c.dims,
                            op.type_name(),
                            spec.shape
                        )));
                    }
                    // Paid for before a shared tensor is copied.
                    self.weight(n, &spec.name, c.len() * fold::F32_BYTES)?;
                    let Some(v) = owned_floats(c) else {
                        return Err(n.err(format!(
                            "the {} for '{}' must be float32, found integers",
                            spec.kind.suffix(),
                            spec.name
                        )));
                    };
                    Tensor::f32(&spec.name, spec.shape.clone(), v)
                }
                None if spec.kind == ParamKind::NumBatchesTracked => {
                    self.weight(n, &spec.name, size_of::<i64>())?;
                    Tensor {
                        name: spec.name.clone(),
                        shape: spec.shape.clone(),
                        data: TensorData::I64(vec![0]),
                    }
                }
                None => return Err(n.err(format!("no tensor for '{}'", spec.name))),
            };
            self.tensors.insert(spec.name.clone(), t);
        }
        // A per-token op keeps its input's grid or window layout (see `swin.rs`); inputs of
        // the same tokens in different layouts (or one without) would not line up in ONNX.
        if let [t, _] = shape[..] {
            let laid: Vec<Option<swin::Layout>> = (inputs.iter())
                .filter(|i| matches!(self.shapes[*i][..], [ti, _] if ti == t))
                .map(|i| self.layouts.get(i).copied())
                .collect();
            if laid.windows(2).any(|w| w[0] != w[1]) {
                return Err(ir(
                    "its token inputs are laid out differently in the ONNX file (a Swin grid, windows, or plain tokens)"
                        .to_owned(),
                ));
            }
            if let Some(Some(l)) = laid.first() {
                self.layouts.insert(name.clone(), *l);
            }
        }
        self.shapes.insert(name.clone(), shape);
        self.nodes.push(Node {
            name: name.clone(),
            inputs,
            op,
        });
        Ok(Value::Act(name))
    }

    /// Records a parameter of `bytes` in the budget, before it is built: the parameters may
    /// pass the float tensors the file stores only by what the budget leaves (a tensor
    /// shared by several layers is copied for each).
    fn weight(&mut self, n: &NodeRef, name: &str, bytes: usize) -> Result<(), OnnxError> {
        self.budget
            .weight(bytes)
            .map_err(|d| n.err(format!("parameter '{name}': {d}")))
    }

    /// A unique IR name from `hint` (`hint`, `hint_1`, `hint_2`, ...).
    fn unique(&mut self, hint: String) -> String {
        let mut name = hint.clone();
        let mut k = 1;
        while self.names.contains(&name) {
            name = format!("{hint}_{k}");
            k += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// A PyTorch-like name for the IR node of `n`: the module path of its weight
    /// (`layer1.0.conv1.weight` → `layer1.0.conv1`), else the module path in a TorchScript
    /// scope name (`/layer1/layer1.0/conv1/Conv` → `layer1.0.conv1`), else the node's or its
    /// output's name, cleaned.
    fn hint(&self, n: &NodeRef, weight_input: Option<usize>) -> String {
        let node = n.node;
        if let Some(k) = weight_input
            && let Some(w) = node.input.get(k)
            && let Some(module) = w.strip_suffix(".weight")
            && self.inits.contains_key(w.as_str())
            && is_clean(module)
        {
            return module.to_owned();
        }
        if node.name.contains('/')
            && let Some(path) = scope_path(&node.name, &node.op_type)
        {
            return path;
        }
        let generated = node.name.starts_with("node_") || is_numbered(&node.name, 'n');
        if !node.name.is_empty() && !generated && is_clean(&node.name) {
            return node.name.clone();
        }
        if is_clean(&node.output[0]) && !node.output[0].chars().all(|c| c.is_ascii_digit()) {
            return node.output[0].clone();
        }
        let cleaned = clean(node.name.strip_prefix("node_").unwrap_or(&node.name));
        if !cleaned.is_empty() {
            return cleaned;
        }
        node.op_type.to_ascii_lowercase()
    }

    /// Replaces `Mul(x, g(x))`, where `g` is a gate with a self-gated form
    /// ([`fair_ir::Contract::self_gated`]: `Sigmoid` gives `silu`) and nothing else reads it
    /// (the graph's output counts as a reader), by that form.
    fn fuse_gates(&mut self, output: &mut String) {
        let mut readers: HashMap<String, usize> = HashMap::new();
        *readers.entry(output.clone()).or_default() += 1;
        for m in &self.nodes {
            for i in &m.inputs {
                *readers.entry(i.clone()).or_default() += 1;
            }
        }
        let mut remove = HashSet::new();
        let mut renamed: HashMap<String, String> = HashMap::new();
        let mut fused = 0;
        for i in 0..self.nodes.len() {
            if !self.products.contains(&self.nodes[i].name) {
                continue;
            }
            let ins = self.nodes[i].inputs.clone();
            for (x, s) in [(0, 1), (1, 0)] {
                let sig = self.nodes.iter().position(|m| m.name == ins[s]);
                let form = sig.map(|p| &self.nodes[p]).and_then(|m| {
                    let gates_x = m.inputs == [ins[x].clone()] && readers.get(&m.name) == Some(&1);
                    m.op.contract().self_gated().filter(|_| gates_x)
                });
                if let (Some(form), Some(p)) = (form, sig) {
                    remove.insert(p);
                    // TorchScript puts both in the SiLU module's scope: keep the module's name.
                    if self.nodes[i].name.strip_suffix(".mul") == Some(ins[s].as_str()) {
                        let old = std::mem::replace(&mut self.nodes[i].name, ins[s].clone());
                        renamed.insert(old, ins[s].clone());
                    }
                    self.nodes[i].op = form;
                    self.nodes[i].inputs = vec![ins[x].clone()];
                    fused += 1;
                    break;
                }
            }
        }
        let mut k = 0;
        self.nodes.retain(|_| {
            k += 1;
            !remove.contains(&(k - 1))
        });
        for m in &mut self.nodes {
            for i in &mut m.inputs {
                if let Some(new) = renamed.get(i) {
                    i.clone_from(new);
                }
            }
        }
        if let Some(new) = renamed.get(output.as_str()) {
            output.clone_from(new);
        }
        if fused > 0 {
            self.notes
                .push(format!("{fused} Mul(x, Sigmoid(x)) pair(s) became silu"));
        }
    }

    /// Drops the nodes that the output does not depend on (the input node stays).
    fn prune(&mut self, output: &str) {
        let by_name: HashMap<&str, &Node> =
            self.nodes.iter().map(|m| (m.name.as_str(), m)).collect();
        let mut keep: HashSet<String> = HashSet::new();
        let mut stack = vec![output.to_owned()];
        while let Some(name) = stack.pop() {
            if keep.insert(name.clone())
                && let Some(m) = by_name.get(name.as_str())
            {
                stack.extend(m.inputs.iter().cloned());
            }
        }
        let before = self.nodes.len();
        self.nodes
            .retain(|m| keep.contains(&m.name) || m.op.role() == Role::Input);
        let mut dropped = before - self.nodes.len();
        // The fused q, k, v projections that were split into their parts.
        let mut split: Vec<&str> = self
            .mha_split
            .iter()
            .map(|(f, _)| f.as_str())
            .filter(|f| !keep.contains(*f))
            .collect();
        split.sort_unstable();
        split.dedup();
        for f in split {
            dropped = dropped.saturating_sub(1);
            self.notes
                .push(format!("fused in_proj '{f}' split into q, k, v"));
        }
        if dropped > 0 {
            self.notes.push(format!(
                "{dropped} node(s) that the output does not depend on were dropped"
            ));
        }
    }
}

/// Errors when two values of `graph` have the same name: two initializers, two graph inputs,
/// two node outputs, or a node output named like an initializer or a graph input (ONNX
/// graphs are in SSA form; otherwise one of the values would silently win). A graph input
/// that has an initializer of its name is allowed: the initializer is its default value.
fn check_unique_names<'g>(graph: &'g GraphProto) -> Result<(), OnnxError> {
    let mut holders: HashMap<&'g str, String> = HashMap::new();
    let mut claim = |name: &'g str, holder: String| -> Result<(), OnnxError> {
        if name.is_empty() {
            return Ok(());
        }
        if let Some(first) = holders.get(name) {
            return Err(OnnxError::DuplicateName {
                name: name.to_owned(),
                first: first.clone(),
                second: holder,
            });
        }
        holders.insert(name, holder);
        Ok(())
    };
    for (k, t) in graph.initializer.iter().enumerate() {
        claim(&t.name, format!("initializer #{k}"))?;
    }
    let inits: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut defaulted = HashSet::new();
    for (k, i) in graph.input.iter().enumerate() {
        let name = i.name.as_str();
        if !(inits.contains(name) && defaulted.insert(name)) {
            claim(name, format!("graph input #{k}"))?;
        }
    }
    for (k, n) in graph.node.iter().enumerate() {
        let node = NodeRef::new(n, k);
        for o in &n.output {
            claim(
                o,
                format!("an output of node '{}' ({})", node.id, n.op_type),
            )?;
        }
    }
    Ok(())
}

/// Where external tensor data is read from: the importer's `external` directory and model.
fn external_at(external: &Option<(PathBuf, PathBuf)>) -> Option<External<'_>> {
    external
        .as_ref()
        .map(|(dir, model)| External { dir, model })
}

/// The float data of `c` (`None` for integers), moved out when nothing else holds it (a
/// transposed weight), else copied (an initializer, which later nodes may still read).
fn owned_floats(c: Rc<Const>) -> Option<Vec<f32>> {
    let data = Rc::try_unwrap(c).map_or_else(|c| Rc::clone(&c.data), |c| c.data);
    match Rc::unwrap_or_clone(data) {
        Data::F32(v) => Some(v),
        Data::Int(_) => None,
    }
}

/// Errors when a key that ONNX allows once appears twice: a domain of `opset_import` with
/// two versions, a key of the model's or a node's `metadata_props`, a node's attribute, a
/// key of a tensor's `external_data`. Readers resolve such a file differently (the ONNX
/// checker refuses duplicate attributes and metadata keys, `onnx.load` takes the last
/// `external_data` entry, a first-match reader the first), so reading either copy would
/// silently ignore the other.
fn check_unique_keys(model: &ModelProto, graph: &GraphProto) -> Result<(), OnnxError> {
    let twice = |what: &str, key: &str| {
        format!(
            "{what} give the key '{key}' twice; ONNX allows each key once, and reading either copy would silently ignore the other"
        )
    };
    let mut versions: HashMap<&str, i64> = HashMap::new();
    for o in &model.opset_import {
        let domain = if o.domain == "ai.onnx" {
            ""
        } else {
            o.domain.as_str()
        };
        match versions.insert(domain, o.version) {
            Some(v) if v != o.version => {
                return Err(model_err(format!(
                    "opset_import gives the domain '{}' twice, as version {v} and as version {}; ONNX imports each domain once",
                    if domain.is_empty() { "ai.onnx" } else { domain },
                    o.version
                )));
            }
            _ => {}
        }
    }
    if let Some(key) = repeated(model.metadata_props.iter().map(|p| p.key.as_str())) {
        return Err(model_err(twice("the model's metadata_props", key)));
    }
    let external = |t: &TensorProto| match external_location_of(t) {
        Some(Err(detail)) => Err(detail),
        _ => Ok(()),
    };
    for t in &graph.initializer {
        external(t).map_err(|detail| OnnxError::Initializer {
            name: t.name.clone(),
            detail,
        })?;
    }
    for (k, node) in graph.node.iter().enumerate() {
        let n = NodeRef::new(node, k);
        if let Some(name) = repeated(node.attribute.iter().map(|a| a.name.as_str())) {
            return Err(n.attr_err(
                name,
                "given twice; ONNX allows each attribute once (the ONNX checker refuses the model), and reading either copy would silently ignore the other",
            ));
        }
        if let Some(key) = repeated(node.metadata_props.iter().map(|p| p.key.as_str())) {
            return Err(n.err(twice("its metadata_props", key)));
        }
        for a in &node.attribute {
            for t in a.t.iter().chain(&a.tensors) {
                external(t).map_err(|d| n.attr_err(&a.name, d))?;
            }
        }
    }
    Ok(())
}

/// The first item of `items` that appeared before.
fn repeated<'a>(items: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = HashSet::new();
    items.into_iter().find(|&k| !seen.insert(k))
}

/// Errors when the float tensor `t` holds NaN or infinite values, counting them.
fn check_finite(t: &Tensor) -> Result<(), OnnxError> {
    let TensorData::F32(v) = &t.data else {
        return Ok(());
    };
    let nan = v.iter().filter(|x| x.is_nan()).count();
    let infinite = v.iter().filter(|x| x.is_infinite()).count();
    if nan + infinite == 0 {
        return Ok(());
    }
    Err(OnnxError::NonFinite {
        name: t.name.clone(),
        nan,
        infinite,
        total: v.len(),
    })
}

/// `Shape`'s optional `start`/`end` attributes applied to the full shape `v`.
/// Whether the inputs of an `Expand` are a float constant and a target whose first entry
/// is the batch symbol: folded with a batch of 1 ([`Value::PerSample`]).
fn per_sample_expand(inputs: &[Option<Rc<Const>>]) -> bool {
    match (inputs.first(), inputs.get(1)) {
        (Some(Some(c)), Some(Some(t))) => {
            matches!(*c.data, Data::F32(_))
                && matches!(&*t.data, Data::Int(v) if v.first() == Some(&Int::BATCH))
        }
        _ => false,
    }
}

fn shape_slice(n: &NodeRef, v: Vec<Int>) -> Result<Const, OnnxError> {
    let r = v.len() as i64;
    let fix = |x: i64| (if x < 0 { x + r } else { x }).clamp(0, r) as usize;
    let start = fix(n.int_or("start", 0)?);
    let end = fix(n.int_or("end", r)?);
    let v: Vec<Int> = if start < end {
        v[start..end].to_vec()
    } else {
        Vec::new()
    };
    Ok(Const::ints_of(vec![v.len()], v))
}

/// A per-sample image shape `[C, H, W]`, or an error.
fn image(n: &NodeRef, s: &[usize]) -> Result<(usize, usize, usize), OnnxError> {
    match s {
        [c, h, w] => Ok((*c, *h, *w)),
        _ => Err(n.err(format!(
            "expected an image [N, C, H, W], found [N, {}]",
            dims_text(s)
        ))),
    }
}

/// A reshape target as text (`batch` for the symbolic batch size).
fn describe(t: &[Int]) -> String {
    t.iter()
        .map(|&v| fold::int_text(v))
        .collect::<Vec<_>>()
        .join(", ")
}

fn dims_text(s: &[usize]) -> String {
    s.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A two-value attribute (`strides`, `dilations`), each at least `min`.
fn pair(n: &NodeRef, name: &str, default: usize, min: i64) -> Result<Pair, OnnxError> {
    match n.ints(name)? {
        None => Ok(Pair(default, default)),
        Some(v) => match v[..] {
            [a, b] if a >= min && b >= min => Ok(Pair(a as usize, b as usize)),
            _ => Err(n.attr_err(
                name,
                format!("expected two values of at least {min}, found {v:?}"),
            )),
        },
    }
}

/// Symmetric padding from `pads` or `auto_pad`; asymmetric padding is an error.
fn pads(n: &NodeRef, (h, w): (usize, usize), k: Pair, s: Pair, d: Pair) -> Result<Pair, OnnxError> {
    let auto = n.string("auto_pad")?.unwrap_or_else(|| "NOTSET".into());
    let (top, left, bottom, right) = match auto.as_str() {
        "NOTSET" => match n.ints("pads")? {
            None => (0, 0, 0, 0),
            Some(p) => match p[..] {
                [a, b, c, e] if a >= 0 && b >= 0 && c >= 0 && e >= 0 => {
                    (a as usize, b as usize, c as usize, e as usize)
                }
                _ => {
                    return Err(n.attr_err(
                        "pads",
                        format!("expected four non-negative values [top, left, bottom, right], found {p:?}"),
                    ));
                }
            },
        },
        "VALID" => (0, 0, 0, 0),
        "SAME_UPPER" | "SAME_LOWER" => {
            let same = |len: usize, k: usize, s: usize, d: usize| -> usize {
                let out = len.div_ceil(s);
                let span = d.saturating_mul(k.saturating_sub(1)).saturating_add(1);
                ((out.saturating_sub(1))
                    .saturating_mul(s)
                    .saturating_add(span))
                .saturating_sub(len)
            };
            let (th, tw) = (same(h, k.0, s.0, d.0), same(w, k.1, s.1, d.1));
            let upper = auto == "SAME_UPPER";
            let split = |t: usize| {
                if upper {
                    (t / 2, t - t / 2)
                } else {
                    (t - t / 2, t / 2)
                }
            };
            let ((a, c), (b, e)) = (split(th), split(tw));
            (a, b, c, e)
        }
        other => {
            return Err(n.attr_err(
                "auto_pad",
                format!("expected NOTSET, VALID, SAME_UPPER or SAME_LOWER, found '{other}'"),
            ));
        }
    };
    if top != bottom || left != right {
        return Err(n.attr_err(
            "pads",
            format!(
                "asymmetric padding (top {top}, left {left}, bottom {bottom}, right {right}) is not supported yet: the IR pads both sides equally"
            ),
        ));
    }
    Ok(Pair(top, left))
}

/// A bias constant of shape `[out]` or `[1, out]` (or one value broadcast) as `[out]`.
fn bias_vector(n: &NodeRef, b: &Const, out: usize) -> Result<Const, OnnxError> {
    let Data::F32(v) = &*b.data else {
        return Err(n.err("the bias must be float32"));
    };
    let ok = matches!(b.dims[..], [u] | [1, u] if u == out);
    if ok {
        Ok(b.view(vec![out]))
    } else if v.len() == 1 {
        Ok(Const::f32(vec![out], vec![v[0]; out]))
    } else {
        Err(n.err(format!(
            "the bias has shape {:?}; expected [{out}] or [1, {out}]",
            b.dims
        )))
    }
}

/// The error for node `n` (of op `op`, read only on constants and shape computations)
/// reading a tensor computed from the input.
fn computed_input_err(n: &NodeRef, op: &str) -> OnnxError {
    n.err(format!(
        "{op} is supported only on constants and shape computations, but here it reads a tensor computed from the input{}",
        match op {
            "Transpose" | "Gather" | "Slice" => " (channel shuffles and channel splits are not supported yet)",
            "Pad" => " (and at the bottom and right of a Swin feature map [N, H, W, C] with zeros, before its window partition or patch merging)",
            "ReduceL2" => " (and in Swin V2's F.normalize of the q and k heads of windowed attention)",
            _ => "",
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_attributes_keep_their_decimal_form() {
        assert_eq!(f32_to_f64(0.1), 0.1);
        assert_eq!(f32_to_f64(1e-5), 1e-5);
        assert_eq!(f32_to_f64((1.0 - f32_to_f64(0.9)) as f32), 0.1);
    }
}
