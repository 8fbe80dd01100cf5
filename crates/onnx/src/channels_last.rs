//! Channels-last regions and the ops exporters write around them (ConvNeXt's blocks).
//!
//! A `Transpose` with perm `[0, 2, 3, 1]` of an image starts a channels-last region: the
//! value is the same IR tensor, marked [`Value::ChannelsLast`]. Per-pixel ops on the last
//! axis read it and are rewritten as their channels-first IR equivalents, whose outputs stay
//! marked, until `Transpose` `[0, 3, 1, 2]` ends the region:
//!
//! - `LayerNormalization` over the last axis → `layer_norm2d` (in `import.rs`);
//! - `MatMul` by a constant `[Cin, Cout]` → a 1×1 `conv2d` (weight `[Cout, Cin, 1, 1]`), and
//!   `Add` of a `[Cout]` constant → its bias;
//! - element-wise ops (activations, `Add`/`Mul` of two marked tensors) → the same IR op;
//! - `Mul` by a constant `[C]` → a layer scale (below).
//!
//! Anything else reading a marked tensor is an error naming the node.
//!
//! Also here, for any layout: GELU written as its `Erf` formula (as exporters do below opset
//! 20) becomes `gelu`, and a layer scale — `Mul` by a constant `[C, 1, 1]` (`[C]` channels-last
//! or on features) — is folded into the conv or linear layer that produces the other operand
//! when nothing else reads that layer (exact: the weight's and bias's rows times γ).
//! And the dynamo exporter's identity `as_strided` (after a global average pooling):
//! `Reshape` of the fixed-size batch to [-1], then `Gather` of indices 0, 1, 2, ... shaped
//! as the tensor was, is the tensor itself.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use fair_ir::{Add, Conv2d, Gelu, Pair, ParamKind};
use onnx_protobuf::{GraphProto, TensorProto};

use super::{Importer, Value, dims_text};
use crate::OnnxError;
use crate::TensorData;
use crate::fold::{self, Const, Data};
use crate::names::{is_clean, scope_path};
use crate::proto::{NodeRef, decode_tensor};

/// The ONNX nodes of GELU formulas: `x · 0.5 · (1 + erf(x / √2))`.
#[derive(Debug, Default)]
pub(super) struct GeluFormulas {
    /// Node index of each formula's last node → the name of its input `x`.
    pub last: HashMap<usize, String>,
    /// Node indices of the formulas' other nodes (read only inside the formula).
    pub inner: HashSet<usize>,
}

/// Finds the GELU formulas of `graph`: `Div(x, √2)` or `Mul(x, 1/√2)`, `Erf`, `Add` 1, and
/// two `Mul`s by `x` and by 0.5 in either order (or `Mul(x, 0.5)` times the sum), operands in
/// any order. Each intermediate value must have one reader.
pub(super) fn gelu_formulas(graph: &GraphProto) -> GeluFormulas {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for o in &n.output {
            producer.insert(o.as_str(), i);
        }
        for inp in &n.input {
            readers.entry(inp.as_str()).or_default().push(i);
        }
    }
    for o in &graph.output {
        readers.entry(o.name.as_str()).or_default().push(usize::MAX);
    }
    let inits: HashMap<&str, _> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    // A one-element float tensor's value (larger tensors are not decoded).
    let one = |t: &TensorProto| -> Option<Const> {
        let single = t.dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d)) == Some(1);
        single.then(|| decode_tensor(t, None, &mut fold::Budget::default()).ok())?
    };
    let scalar = |name: &str| -> Option<f32> {
        let c = if let Some(t) = inits.get(name) {
            one(t)?
        } else {
            let n = &graph.node[*producer.get(name)?];
            if n.op_type != "Constant" {
                return None;
            }
            let a = n.attribute.iter().find(|a| a.name == "value")?;
            one(a.t.as_ref()?)?
        };
        match &*c.data {
            Data::F32(v) if v.len() == 1 => Some(v[0]),
            _ => None,
        }
    };
    let near = |v: Option<f32>, want: f64| v.is_some_and(|v| (f64::from(v) - want).abs() < 1e-6);
    let op = |i: usize| graph.node[i].op_type.as_str();
    // The one node reading `value` and, for a binary node, its other operand.
    let sole = |value: &str| -> Option<usize> {
        match readers.get(value).map(Vec::as_slice) {
            Some([r]) if *r != usize::MAX => Some(*r),
            _ => None,
        }
    };
    let other = |i: usize, value: &str| -> Option<String> {
        match graph.node[i].input.as_slice() {
            [a, b] if a == value => Some(b.clone()),
            [a, b] if b == value => Some(a.clone()),
            _ => None,
        }
    };
    let mut found = GeluFormulas::default();
    for (e, n) in graph.node.iter().enumerate() {
        if n.op_type != "Erf" || n.input.len() != 1 || n.output.len() != 1 {
            continue;
        }
        let Some(&d) = producer.get(n.input[0].as_str()) else {
            continue;
        };
        let dn = &graph.node[d];
        let [a0, a1] = dn.input.as_slice() else {
            continue;
        };
        let x = match op(d) {
            "Div" if near(scalar(a1), std::f64::consts::SQRT_2) => a0.clone(),
            "Mul" if near(scalar(a1), std::f64::consts::FRAC_1_SQRT_2) => a0.clone(),
            "Mul" if near(scalar(a0), std::f64::consts::FRAC_1_SQRT_2) => a1.clone(),
            _ => continue,
        };
        if sole(&dn.output[0]) != Some(e) {
            continue;
        }
        // erf + 1
        let Some(a) = sole(&n.output[0]).filter(|&a| op(a) == "Add") else {
            continue;
        };
        if !near(other(a, &n.output[0]).and_then(|c| scalar(&c)), 1.0) {
            continue;
        }
        let plus = &graph.node[a].output[0];
        let Some(m1) = sole(plus).filter(|&m| op(m) == "Mul") else {
            continue;
        };
        let Some(p) = other(m1, plus) else { continue };
        let is_half = |name: &str| near(scalar(name), 0.5);
        let m1_out = &graph.node[m1].output[0];
        let mut inner = vec![d, e, a];
        let last = if p == x || is_half(&p) {
            // (1 + erf) · x, then · 0.5; or (1 + erf) · 0.5, then · x.
            let want_half = p == x;
            let Some(m2) = sole(m1_out).filter(|&m| op(m) == "Mul") else {
                continue;
            };
            let Some(q) = other(m2, m1_out) else { continue };
            if !(if want_half { is_half(&q) } else { q == x }) {
                continue;
            }
            inner.push(m1);
            m2
        } else {
            // (x · 0.5) · (1 + erf).
            let Some(&h) = producer.get(p.as_str()) else {
                continue;
            };
            if op(h) != "Mul" || sole(&p) != Some(m1) || other(h, &x).is_none_or(|c| !is_half(&c)) {
                continue;
            }
            inner.push(h);
            m1
        };
        found.inner.extend(inner);
        found.last.insert(last, x);
    }
    found
}

/// The module path in the dynamo exporter's `namespace` metadata (`…/features.1.0.block.3:
/// torch.nn.modules.linear.Linear/linear: aten.linear.default` → `features.1.0.block.3`).
fn module_path(n: &NodeRef) -> Option<String> {
    let ns = n
        .node
        .metadata_props
        .iter()
        .find(|p| p.key == "namespace")?;
    let parts: Vec<&str> = ns.value.split('/').collect();
    let module = parts.len().checked_sub(2).map(|k| parts[k])?;
    let path = module.split(':').next()?.trim();
    is_clean(path).then(|| path.to_owned())
}

/// `CL(x)` → `Act(x)`, other values unchanged.
fn first_layout(inputs: &[Option<Value>]) -> Vec<Option<Value>> {
    inputs
        .iter()
        .map(|v| match v {
            Some(Value::ChannelsLast(x)) => Some(Value::Act(x.clone())),
            other => other.clone(),
        })
        .collect()
}

fn last_layout(v: Value) -> Value {
    match v {
        Value::Act(x) => Value::ChannelsLast(x),
        other => other,
    }
}

/// A constant's dims without leading ones.
fn squeezed(c: &Const) -> &[usize] {
    let k = c.dims.iter().take_while(|&&d| d == 1).count();
    &c.dims[k..]
}

impl Importer<'_> {
    /// The last node of a GELU formula: `gelu` of its input `x`.
    pub(super) fn gelu_formula(&mut self, n: &NodeRef, x: &str) -> Result<Value, OnnxError> {
        let v = self.value(n, x)?;
        let cl = matches!(v, Value::ChannelsLast(_));
        let inputs = first_layout(&[Some(v)]);
        let op = Gelu {
            approximate: "none".into(),
        };
        let (x, _) = self.act(n, &inputs, 0)?;
        // TorchScript scopes name the GELU module (`/block.4/Mul_1` → `block.4`), not a Mul.
        let hint = Some(&n.node.name)
            .filter(|name| name.contains('/'))
            .and_then(|name| scope_path(name, "Gelu"))
            .unwrap_or_else(|| self.hint(n, None));
        let y = self.emit(n, hint, op.into(), vec![x], vec![])?;
        self.notes.push(format!(
            "the GELU formula (Erf) ending at '{}' became gelu",
            n.id
        ));
        Ok(if cl { last_layout(y) } else { y })
    }

    /// An ONNX node with a channels-last input (other than `Transpose` and
    /// `LayerNormalization`, which `import.rs` handles).
    pub(super) fn channels_last(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Result<Value, OnnxError> {
        let cl = |k: usize| matches!(inputs.get(k), Some(Some(Value::ChannelsLast(_))));
        let konst = |k: usize| matches!(inputs.get(k), Some(Some(Value::Const(_))));
        match n.op() {
            "MatMul" if cl(0) && konst(1) => {
                n.only(&[])?;
                let Some(Some(Value::ChannelsLast(x))) = inputs.first() else {
                    unreachable!()
                };
                let x = x.clone();
                let b = self.konst(n, inputs, 1)?;
                let c = self.shapes[&x][0];
                let [cin, cout] = b.dims[..] else {
                    return Err(n.err(format!(
                        "a MatMul of a channels-last image is imported as a 1×1 convolution and needs a [{c}, C_out] matrix, found {:?}",
                        b.dims
                    )));
                };
                if cin != c {
                    return Err(n.err(format!(
                        "the matrix {:?} does not match the image's {c} channels",
                        b.dims
                    )));
                }
                let mut w = fold::transpose(&b, None).map_err(|d| n.err(d))?;
                w.dims = vec![cout, cin, 1, 1];
                let op = Conv2d {
                    in_channels: cin,
                    out_channels: cout,
                    kernel_size: Pair(1, 1),
                    stride: Pair(1, 1),
                    padding: Pair(0, 0),
                    dilation: Pair(1, 1),
                    groups: 1,
                    bias: false,
                };
                // The dynamo exporter names nodes `node_MatMul_1` and the transposed weight
                // `val_4`; its `namespace` metadata holds the Linear module's path.
                let hint = module_path(n)
                    .filter(|_| n.node.name.starts_with("node_"))
                    .unwrap_or_else(|| self.hint(n, Some(1)));
                let y = self.emit(n, hint, op.into(), vec![x], vec![(ParamKind::Weight, Rc::new(w))])?;
                Ok(last_layout(y))
            }
            "Add" | "Mul" if cl(0) != cl(1) && (konst(0) || konst(1)) => {
                n.only(&[])?;
                let k = usize::from(konst(1));
                let Some(Some(Value::ChannelsLast(x))) = inputs.get(1 - k) else {
                    unreachable!()
                };
                let x = x.clone();
                let c = self.konst(n, inputs, k)?;
                let units = self.shapes[&x][0];
                let flat = match squeezed(&c) {
                    [u] if *u == units => c.dims.len() <= 4,
                    [] => n.op() == "Mul",
                    _ => false,
                };
                if !flat {
                    return Err(n.err(format!(
                        "a constant of shape {:?} does not act per channel on a channels-last image of {units} channels (expected [{units}])",
                        c.dims
                    )));
                }
                let Data::F32(v) = &*c.data else {
                    return Err(n.err("the constant must be float32"));
                };
                let y = if n.op() == "Add" {
                    let bias = c.view(vec![units, 1, 1]);
                    self.fold_bias(n, &n.node.input[1 - k], x, &bias)?
                } else {
                    self.fold_scale(n, &n.node.input[1 - k], &x, v)?
                };
                Ok(last_layout(y))
            }
            "Add" | "Sum" | "Mul" if inputs.iter().all(|v| matches!(v, Some(Value::ChannelsLast(_)))) => {
                let ins = first_layout(inputs);
                let names: Vec<String> = (0..ins.len())
                    .map(|k| self.act(n, &ins, k).map(|a| a.0))
                    .collect::<Result<_, _>>()?;
                if names.len() == 1 {
                    return Ok(last_layout(Value::Act(names[0].clone())));
                }
                if n.op() == "Mul" {
                    return Ok(last_layout(self.product(n, names)?));
                }
                let hint = self.hint(n, None);
                Ok(last_layout(self.emit(n, hint, Add {}.into(), names, vec![])?))
            }
            "Relu" | "Sigmoid" | "HardSigmoid" | "HardSwish" | "Gelu" | "Clip" | "Identity"
            | "Dropout"
                if cl(0) =>
            {
                let ins = first_layout(inputs);
                Ok(last_layout(self.map(n, &ins)?))
            }
            op => Err(n.err(format!(
                "{op} reads a channels-last tensor (after Transpose [0, 2, 3, 1]); inside such a region fair-pruner rewrites only per-pixel ops on the last axis — LayerNormalization, MatMul by a constant [C_in, C_out] (+ Add of a [C_out] bias), element-wise activations, Add/Mul of two channels-last tensors, Mul by a [C] constant — and the Transpose [0, 3, 1, 2] back"
            ))),
        }
    }

    /// `Mul` of a computed tensor by a constant (channels-first or features): a layer scale.
    pub(super) fn scale_mul(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Result<Value, OnnxError> {
        n.only(&[])?;
        let k = usize::from(matches!(inputs.get(1), Some(Some(Value::Const(_)))));
        let value = n.node.input.get(1 - k).cloned().unwrap_or_default();
        let (x, s) = self.act(n, inputs, 1 - k)?;
        let c = self.konst(n, inputs, k)?;
        let units = s.first().copied().unwrap_or(1);
        // Tokens [N, T, F] are scaled per feature (timm's LayerScale): [F], [1, F] or
        // [1, 1, F].
        let tokens = (s.len() == 2).then(|| s[1]);
        let ok = match squeezed(&c) {
            [] => true,
            [u, 1, 1] => *u == units && s.len() == 3 && c.dims.len() <= 4,
            [u] if tokens.is_some() => Some(*u) == tokens && c.dims.len() <= 3,
            [u] => *u == units && s.len() == 1 && c.dims.len() <= 2,
            _ => false,
        };
        let Data::F32(v) = &*c.data else {
            return Err(n.err("multiplying by an integer constant is not supported"));
        };
        if !ok {
            let want = match tokens {
                Some(f) => format!("[{f}] on tokens [N, T, {f}]"),
                None => format!("[{units}, 1, 1] on images, [{units}] on features"),
            };
            return Err(n.err(format!(
                "multiplying [N, {}] by a constant of shape {:?} is not supported: only per-channel scales ({want}) that fold into the conv or linear layer before them are",
                dims_text(&s),
                c.dims
            )));
        }
        self.fold_scale(n, &value, &x, v)
    }

    /// Folds the per-channel scale `gamma` (one value per channel, or one for all) into IR
    /// node `layer` (an op whose output scale folds into its tensors,
    /// [`fair_ir::Contract::folds_output_scale`]: a conv2d or linear layer), which ONNX value
    /// `value` holds and nothing but `n` reads.
    fn fold_scale(
        &mut self,
        n: &NodeRef,
        value: &str,
        layer: &str,
        gamma: &[f32],
    ) -> Result<Value, OnnxError> {
        let refuse = |why: String| {
            n.err(format!(
                "multiplying '{value}' by a constant (a layer scale) is supported only when it folds into the conv or linear layer that produces it: {why}"
            ))
        };
        let pos = self.nodes.iter().position(|m| m.name == layer);
        // The layer's contract says whether a scale of its output folds into its tensors:
        // each is scaled along its units' axis.
        let Some(op) = pos
            .map(|p| &self.nodes[p].op)
            .filter(|op| op.contract().folds_output_scale())
        else {
            return Err(refuse(format!("'{layer}' is not a conv2d or linear layer")));
        };
        let scaled: Vec<(String, usize)> = op
            .params(layer)
            .into_iter()
            .filter_map(|p| Some((p.name, p.out_axis?)))
            .collect();
        let units = op
            .params(layer)
            .iter()
            .find_map(|p| Some(p.shape[p.out_axis?]));
        let units = units.unwrap_or(1);
        if gamma.len() != units && gamma.len() != 1 {
            return Err(refuse(format!(
                "{} scales for {units} channels",
                gamma.len()
            )));
        }
        // Nothing else may read the layer: not an IR node, and no ONNX node other than `n`
        // and the pass-throughs (bias Add, Transpose) whose outputs are the layer again.
        let aliases: HashSet<&str> = self
            .values
            .iter()
            .filter(|(_, v)| matches!(v, Value::Act(a) | Value::ChannelsLast(a) if a == layer))
            .map(|(k, _)| k.as_str())
            .collect();
        let used_in_ir = self
            .nodes
            .iter()
            .any(|m| m.inputs.iter().any(|i| i == layer));
        let other_reader = self.graph.node.iter().find(|m| {
            !std::ptr::eq(*m, n.node)
                && m.input.iter().any(|i| aliases.contains(i.as_str()))
                && !m
                    .output
                    .first()
                    .is_some_and(|o| aliases.contains(o.as_str()))
        });
        let is_output = self
            .graph
            .output
            .iter()
            .any(|o| aliases.contains(o.name.as_str()));
        if used_in_ir || is_output || other_reader.is_some() {
            let who = other_reader
                .map(|m| {
                    format!(
                        "'{}'",
                        if m.name.is_empty() {
                            &m.op_type
                        } else {
                            &m.name
                        }
                    )
                })
                .unwrap_or_else(|| "another node".into());
            return Err(refuse(format!("{who} also reads '{layer}'")));
        }
        // Element i of a tensor lies in unit (i / inner) % units along `axis`, where inner is
        // the product of the dimensions after it.
        let scale = |t: &mut crate::Tensor, axis: usize| {
            let inner: usize = t.shape.get(axis + 1..).unwrap_or(&[]).iter().product();
            if let TensorData::F32(d) = &mut t.data {
                for (k, chunk) in d.chunks_mut(inner.max(1)).enumerate() {
                    let g = gamma[(k % units).min(gamma.len() - 1)];
                    chunk.iter_mut().for_each(|w| *w *= g);
                }
            }
        };
        for (name, axis) in scaled {
            if let Some(t) = self.tensors.get_mut(&name) {
                scale(t, axis);
            }
        }
        self.notes.push(format!(
            "the constant scale multiplied by '{}' was folded into the weights of '{layer}'",
            n.id
        ));
        Ok(Value::Act(layer.to_owned()))
    }

    /// `Gather` of a batch flattened by `Reshape` [-1] ([`Value::Flat`]): supported when the
    /// indices are 0, 1, 2, ... in the tensor's own shape (an identity `as_strided`).
    pub(super) fn as_strided(
        &mut self,
        n: &NodeRef,
        inputs: &[Option<Value>],
    ) -> Result<Value, OnnxError> {
        n.only(&["axis"])?;
        let Some(Some(Value::Flat(x))) = inputs.first() else {
            return Err(n.err(
                "Gather of a computed tensor is supported only as the identity copy after Reshape [-1] (the dynamo exporter's as_strided)",
            ));
        };
        let x = x.clone();
        let idx = self.konst(n, inputs, 1)?;
        let ints = idx.ints().map_err(|e| n.err(e))?;
        let s = &self.shapes[&x];
        let identity = n.int_or("axis", 0)? == 0
            && idx.dims.len() == s.len() + 1
            && self.batch == Some(idx.dims[0])
            && idx.dims[1..] == s[..]
            && ints.iter().enumerate().all(|(k, &v)| v == k as i64);
        if !identity {
            return Err(n.err(format!(
                "only an identity as_strided is supported: Gather of indices 0, 1, 2, ... shaped [N, {}] from the flattened batch; found indices of shape {:?}",
                dims_text(s),
                idx.dims
            )));
        }
        Ok(Value::Act(x))
    }
}
