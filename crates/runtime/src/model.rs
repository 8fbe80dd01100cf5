//! [`Model`]: an IR graph with its parameters on a device, and its forward pass.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use fair_ir::{Graph, Init, ParamKind, ParamSpec};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal, Uniform};
use tch::{Device, Kind, Tensor, nn};

use crate::error::{RuntimeError, tch_context as torch};
use crate::tensors::{TensorFile, check_finite, write_safetensors};

/// How a forward pass treats BatchNorm and Dropout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Inference: BatchNorm uses running statistics, Dropout is the identity.
    Eval,
    /// Training, as PyTorch's `model.train()`: BatchNorm normalises with batch statistics and
    /// updates its running statistics; Dropout drops.
    Train,
    /// Training behaviour without side effects: BatchNorm normalises with batch statistics
    /// but leaves running statistics (and `num_batches_tracked`) untouched; Dropout drops.
    /// Scoring uses this so it never changes the model.
    TrainFrozenStats,
}

/// The result of [`Model::forward_with_taps`].
#[derive(Debug)]
pub struct Forward {
    /// The graph output, `[batch, ...]`.
    pub output: Tensor,
    /// The output of every tapped node, by node name.
    pub taps: HashMap<String, Tensor>,
}

/// An executable model: a validated [`Graph`] and its parameters, held in a tch
/// [`nn::VarStore`] under their PyTorch state-dict names (trainable tensors are the
/// store's trainable variables, so tch optimisers work on it directly).
pub struct Model {
    graph: Graph,
    vs: nn::VarStore,
    params: HashMap<String, Tensor>,
    /// For each node position, the last position that reads it (`usize::MAX` for the output).
    last_use: Vec<usize>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("graph", &self.graph.name())
            .field("device", &self.vs.device())
            .field("tensors", &self.params.len())
            .finish()
    }
}

/// Parses `cpu`, `cuda` or `cuda:N`, checking that CUDA is there when asked for.
pub fn parse_device(text: &str) -> Result<Device, RuntimeError> {
    let device = match text.trim() {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Device::Cuda(n),
            None => {
                return Err(RuntimeError::Device(format!(
                    "unknown device '{text}': expected cpu, cuda or cuda:N"
                )));
            }
        },
    };
    if let Device::Cuda(n) = device {
        let count = tch::Cuda::device_count() as usize;
        if n >= count {
            return Err(RuntimeError::Device(format!(
                "device '{text}' asked for, but libtorch sees {count} CUDA device(s)"
            )));
        }
    }
    Ok(device)
}

fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

/// Fan-in and fan-out of a weight tensor, as PyTorch's `_calculate_fan_in_and_fan_out`.
fn fans(shape: &[usize]) -> (f64, f64) {
    let receptive: usize = shape[2..].iter().product();
    ((shape[1] * receptive) as f64, (shape[0] * receptive) as f64)
}

impl Model {
    /// Creates the parameters of `graph` on `device`, initialised from `seed`
    /// (torchvision's ResNet rule, applied to every family): conv weights Kaiming-normal
    /// (fan-out, ReLU gain), conv biases zero; linear weights and biases uniform in
    /// ±1/√fan-in (PyTorch's default); BatchNorm scale 1, shift 0, running mean 0, running
    /// variance 1. The same seed gives the same parameters.
    pub fn new(graph: Graph, device: Device, seed: u64) -> Result<Self, RuntimeError> {
        check_memory(&graph)?;
        // A private generator (not libtorch's global one): the same seed gives the same
        // parameters on every device and whatever other threads draw meanwhile.
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        Self::build(graph, device, |spec| {
            let n = spec.numel();
            let values: Vec<f32> = match spec.init {
                Init::KaimingNormalFanOut => {
                    let std = (2.0 / fans(&spec.shape).1).sqrt();
                    let normal = Normal::new(0.0, std).expect("positive std");
                    (0..n).map(|_| normal.sample(&mut rng) as f32).collect()
                }
                Init::UniformFanIn { fan_in } => {
                    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
                    let uniform = Uniform::new(-bound, bound);
                    (0..n).map(|_| uniform.sample(&mut rng) as f32).collect()
                }
                Init::Ones => vec![1.0; n],
                Init::Zeros => vec![0.0; n],
                Init::Constant { value } => vec![value as f32; n],
            };
            let t = Tensor::from_slice(&values).reshape(dims(&spec.shape));
            Ok(t.to_kind(kind_of(spec.kind)))
        })
    }

    /// A model of `graph` on `device` whose parameters are made by `init` (on any device;
    /// moved to `device`), in the graph's order.
    fn build(
        graph: Graph,
        device: Device,
        mut init: impl FnMut(&ParamSpec) -> Result<Tensor, RuntimeError>,
    ) -> Result<Self, RuntimeError> {
        let vs = nn::VarStore::new(device);
        let mut params = HashMap::new();
        for node in graph.nodes() {
            for spec in node.op.params(&node.name) {
                let t = init(&spec)?;
                let t = torch(t.f_to_device(device), || {
                    format!("moving '{}' to {device:?}", spec.name)
                })?;
                let t = register(&vs, &spec.name, t, spec.kind.is_trainable());
                params.insert(spec.name, t);
            }
        }
        let last_use = last_uses(&graph);
        Ok(Model {
            graph,
            vs,
            params,
            last_use,
        })
    }

    /// A model of `graph` with its weights read from a safetensors file (strict as
    /// [`Model::load_weights`]; a missing `num_batches_tracked` is 0).
    ///
    /// The file's header is read first and its tensors' names, dtypes and shapes compared
    /// with the graph's, so a file that does not fit (an extra tensor of any declared size
    /// included) is refused after reading only its header. The tensors are then read into
    /// their final place: loading costs the model's memory plus a few MiB of buffer (and a
    /// transient copy of a tensor stored in another float precision).
    pub fn from_safetensors(
        graph: Graph,
        path: &Path,
        device: Device,
    ) -> Result<Self, RuntimeError> {
        check_memory(&graph)?;
        let file = TensorFile::open(path)?;
        check_fit(&graph, &file.declared(), path)?;
        let loaded = file.read(device)?;
        check_finite(&loaded, path)?;
        let mut loaded: HashMap<String, Tensor> = loaded.into_iter().collect();
        Self::build(graph, device, |spec| {
            let kind = kind_of(spec.kind);
            match loaded.remove(&spec.name) {
                Some(t) => torch(t.f_to_kind(kind), || format!("loading '{}'", spec.name)),
                // Only `num_batches_tracked` may be missing (see `check_fit`).
                None => Ok(Tensor::zeros(dims(&spec.shape), (kind, Device::Cpu))),
            }
        })
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// The variable store (for optimisers).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// The parameter or buffer called `name` (shares storage with the model).
    pub fn tensor(&self, name: &str) -> Result<&Tensor, RuntimeError> {
        self.params.get(name).ok_or_else(|| RuntimeError::NoSuch {
            graph: self.graph.name().to_owned(),
            what: "parameter",
            name: name.to_owned(),
        })
    }

    /// All parameters and buffers in state-dict order, with their names.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.graph
            .params()
            .into_iter()
            .map(|p| {
                let t = self.params[&p.name].shallow_clone();
                (p.name, t)
            })
            .collect()
    }

    /// A model of the same graph on the same device whose parameters and buffers are copies
    /// of this one's: changing either leaves the other as it was (a dead-unit reference,
    /// BatchNorm statistics that may move on a copy).
    pub fn deep_copy(&self) -> Result<Model, RuntimeError> {
        let tensors = self
            .named_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.detach()))
            .collect();
        Model::from_tensors(self.graph.clone(), tensors, self.device())
    }

    /// Loads every parameter and buffer from a safetensors file with state-dict names.
    /// Strict: a missing, unexpected or wrong-shaped tensor is an error that lists every
    /// such problem by name with expected and found shapes, and nothing is loaded. The one
    /// exception is BatchNorm's `num_batches_tracked`, which may be missing (as PyTorch's
    /// `load_state_dict` allows): it then keeps its current value, 0 for a new model. Float
    /// tensors of any precision are converted to f32. Weights holding NaN or infinite values
    /// are an error listing every such tensor.
    ///
    /// The file's header is read and compared with the graph first, so a file that does not
    /// fit is refused after reading only its header; the tensors are then read once into
    /// staging tensors (one copy of the weights besides the model's own), checked, and
    /// copied in.
    pub fn load_weights(&mut self, path: &Path) -> Result<(), RuntimeError> {
        let file = TensorFile::open(path)?;
        check_fit(&self.graph, &file.declared(), path)?;
        let loaded = file.read(self.device())?;
        check_finite(&loaded, path)?;
        self.copy_in(&loaded)
    }

    /// A model of `graph` whose parameters and buffers are copies of `tensors` (state-dict
    /// names; strict as [`Model::load_weights`]; a missing `num_batches_tracked` is 0). The
    /// model owns its copies: changing it leaves `tensors` as they were. Each tensor is
    /// copied once, straight into the model's dtype and device.
    pub fn from_tensors(
        graph: Graph,
        tensors: Vec<(String, Tensor)>,
        device: Device,
    ) -> Result<Self, RuntimeError> {
        check_memory(&graph)?;
        let found: Vec<(&str, Kind, Vec<usize>)> = tensors
            .iter()
            .map(|(n, t)| {
                let shape = t.size().iter().map(|&d| d as usize).collect();
                (n.as_str(), t.kind(), shape)
            })
            .collect();
        check_fit(&graph, &found, Path::new("<tensors in memory>"))?;
        let mut given: HashMap<String, Tensor> = tensors.into_iter().collect();
        Self::build(graph, device, |spec| {
            let kind = kind_of(spec.kind);
            let shape = dims(&spec.shape);
            match given.remove(&spec.name) {
                Some(t) => tch::no_grad(|| {
                    let mut own = Tensor::empty(shape.as_slice(), (kind, device));
                    torch(own.f_copy_(&t), || format!("loading '{}'", spec.name))?;
                    Ok(own)
                }),
                // Only `num_batches_tracked` may be missing (see `check_fit`).
                None => Ok(Tensor::zeros(shape.as_slice(), (kind, device))),
            }
        })
    }

    /// Copies `loaded` (checked by [`check_fit`]) into the parameters.
    fn copy_in(&mut self, loaded: &[(String, Tensor)]) -> Result<(), RuntimeError> {
        tch::no_grad(|| {
            for (name, t) in loaded {
                let mut dst = self.params[name].shallow_clone();
                let src = t.to_kind(dst.kind());
                torch(dst.f_copy_(&src), || format!("loading '{name}'"))?;
            }
            Ok(())
        })
    }

    /// Saves every parameter and buffer to a safetensors file (atomically), with PyTorch
    /// state-dict names, so `model.load_state_dict(safetensors.torch.load_file(path))` works.
    pub fn save_weights(&self, path: &Path) -> Result<(), RuntimeError> {
        write_safetensors(path, &self.named_tensors())
    }

    /// The bytes of the safetensors file [`Model::save_weights`] writes (for a checked
    /// output, `fair_fs::OutputFile::write`); `path` names the file in errors.
    pub fn weights_bytes(&self, path: &Path) -> Result<Vec<u8>, RuntimeError> {
        crate::tensors::safetensors_bytes(path, &self.named_tensors())
    }

    /// Runs the graph on a batch `x` of shape `[batch, ...input shape]`.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor, RuntimeError> {
        Ok(self.forward_with_taps::<&str>(x, mode, &[])?.output)
    }

    /// Runs the graph once and also returns the outputs of the named nodes (`taps`). Tensors
    /// no later node reads are freed as soon as possible, so memory stays bounded by the
    /// widest cut of the graph plus the taps.
    pub fn forward_with_taps<S: AsRef<str>>(
        &self,
        x: &Tensor,
        mode: Mode,
        taps: &[S],
    ) -> Result<Forward, RuntimeError> {
        let (output, taps) = self.run(x, mode, taps, false)?;
        Ok(Forward {
            output: output.expect("a full pass ends at the output node"),
            taps,
        })
    }

    /// The outputs of the named nodes only: the pass stops after the last of them, so nodes
    /// after it are never computed (the bounded-memory U-Score re-runs the graph once per
    /// chunk of layers). The tapped values are exactly those of a full
    /// [`Model::forward_with_taps`].
    pub fn taps<S: AsRef<str>>(
        &self,
        x: &Tensor,
        mode: Mode,
        taps: &[S],
    ) -> Result<HashMap<String, Tensor>, RuntimeError> {
        Ok(self.run(x, mode, taps, true)?.1)
    }

    /// Runs the graph, keeping the tapped outputs; with `stop_early`, stops after the last
    /// tapped node and returns no output.
    fn run<S: AsRef<str>>(
        &self,
        x: &Tensor,
        mode: Mode,
        taps: &[S],
        stop_early: bool,
    ) -> Result<(Option<Tensor>, HashMap<String, Tensor>), RuntimeError> {
        let graph = &self.graph;
        let mut tapped = vec![false; graph.nodes().len()];
        for t in taps {
            let i = graph
                .position(t.as_ref())
                .map_err(|_| RuntimeError::NoSuch {
                    graph: graph.name().to_owned(),
                    what: "node",
                    name: t.as_ref().to_owned(),
                })?;
            tapped[i] = true;
        }
        let expected = graph.shape_at(0);
        let size = x.size();
        if size.len() != expected.len() + 1 || size[1..] != dims(expected)[..] {
            return Err(RuntimeError::InputShape {
                graph: graph.name().to_owned(),
                expected: expected.to_vec(),
                found: size,
            });
        }
        let end = match tapped.iter().rposition(|&t| t) {
            Some(last) if stop_early => last + 1,
            _ => graph.nodes().len(),
        };
        let mut values: Vec<Option<Tensor>> = Vec::with_capacity(end);
        let mut out = HashMap::new();
        for (i, node) in graph.nodes().iter().enumerate().take(end) {
            let inputs: Vec<&Tensor> = node
                .inputs
                .iter()
                .map(|name| {
                    values[graph.position(name).expect("validated")]
                        .as_ref()
                        .expect("inputs are freed only after their last reader")
                })
                .collect();
            let y = torch(self.run_node(node, &inputs, x, mode), || {
                format!("node '{}' ({})", node.name, node.op.type_name())
            })?;
            if tapped[i] {
                out.insert(node.name.clone(), y.shallow_clone());
            }
            values.push(Some(y));
            for name in &node.inputs {
                let j = graph.position(name).expect("validated");
                if self.last_use[j] == i {
                    values[j] = None;
                }
            }
        }
        if end < graph.nodes().len() {
            return Ok((None, out));
        }
        let output = values
            .pop()
            .flatten()
            .expect("the output node is last and never freed");
        Ok((Some(output), out))
    }

    /// Computes one node with its op's kernel ([`crate::kernel`]).
    fn run_node(
        &self,
        node: &fair_ir::Node,
        inputs: &[&Tensor],
        x: &Tensor,
        mode: Mode,
    ) -> Result<Tensor, tch::TchError> {
        let Some(kernel) = crate::kernel::kernel(&node.op) else {
            return Err(tch::TchError::Kind(format!(
                "the runtime has no kernel for op '{}'",
                node.op.type_name()
            )));
        };
        kernel.forward(&crate::kernel::Step {
            name: &node.name,
            inputs,
            x,
            mode,
            params: &self.params,
        })
    }
}

/// The libtorch kind a parameter is held in: `num_batches_tracked` is an integer counter,
/// everything else f32.
fn kind_of(kind: ParamKind) -> Kind {
    if kind == ParamKind::NumBatchesTracked {
        Kind::Int64
    } else {
        Kind::Float
    }
}

/// Whether a kind is a floating-point one.
fn is_float(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double
    )
}

/// Checks tensors `found` (name, kind, shape; from a file's header or in memory) against
/// the parameters of `graph`: every missing (except `num_batches_tracked`, as PyTorch's
/// `load_state_dict` allows), unexpected, wrong-shaped or wrong-dtype (float for integer or
/// the reverse) tensor is listed in one [`RuntimeError::WeightsMismatch`] naming `path`.
fn check_fit(
    graph: &Graph,
    found: &[(&str, Kind, Vec<usize>)],
    path: &Path,
) -> Result<(), RuntimeError> {
    let specs = graph.params();
    let expected: HashMap<&str, &ParamSpec> = specs.iter().map(|p| (p.name.as_str(), p)).collect();
    let mut problems = Vec::new();
    let names: HashSet<&str> = found.iter().map(|(n, _, _)| *n).collect();
    for p in &specs {
        // BatchNorm's step counter is optional, as in PyTorch's `load_state_dict` (state
        // dicts from before PyTorch 0.4.1, and many converters, lack it): a missing one
        // keeps its current value, 0 for a new model. It only matters for BatchNorm
        // with `momentum = None`, which the IR does not express.
        if p.kind == ParamKind::NumBatchesTracked {
            continue;
        }
        if !names.contains(p.name.as_str()) {
            problems.push(format!(
                "missing tensor '{}' (expected shape {:?})",
                p.name, p.shape
            ));
        }
    }
    for (name, kind, shape) in found {
        match expected.get(name) {
            None => problems.push(format!("unexpected tensor '{name}' (shape {shape:?})")),
            Some(p) if p.shape != *shape => problems.push(format!(
                "tensor '{name}' has shape {shape:?}, expected {:?}",
                p.shape
            )),
            Some(p) => {
                let want = kind_of(p.kind);
                if is_float(*kind) != is_float(want) {
                    problems.push(format!(
                        "tensor '{name}' has dtype {kind:?}, expected {want:?}"
                    ));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RuntimeError::WeightsMismatch {
            path: path.to_owned(),
            graph: graph.name().to_owned(),
            problems,
        })
    }
}

/// Adds `t` to the var store under a dotted state-dict name (tch paths are dot-separated).
fn register(vs: &nn::VarStore, name: &str, t: Tensor, trainable: bool) -> Tensor {
    let mut path = vs.root();
    let mut parts: Vec<&str> = name.split('.').collect();
    let last = parts.pop().expect("names are non-empty");
    for part in parts {
        path = path.sub(part);
    }
    path.add(last, t, trainable)
}

fn last_uses(graph: &Graph) -> Vec<usize> {
    let mut last = vec![usize::MAX; graph.nodes().len()];
    let output = graph.nodes().len() - 1;
    for (i, node) in graph.nodes().iter().enumerate() {
        for name in &node.inputs {
            let j = graph.position(name).expect("validated");
            if j != output {
                last[j] = i;
            }
        }
    }
    last
}

/// Refuses graphs whose parameters cannot fit in memory before allocating them (libtorch
/// aborts the process on a failed allocation): the total must stay below the machine's
/// available memory (`MemAvailable` on Linux; 1 TiB where unknown).
fn check_memory(graph: &Graph) -> Result<(), RuntimeError> {
    let bytes: u128 = graph.params().iter().map(|p| p.numel() as u128 * 4).sum();
    let available = available_memory().unwrap_or(1 << 40) as u128;
    if bytes > available {
        return Err(RuntimeError::TooLarge {
            graph: graph.name().to_owned(),
            bytes,
            available,
        });
    }
    Ok(())
}

/// The machine's available memory in bytes (Linux `MemAvailable`), if known.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
