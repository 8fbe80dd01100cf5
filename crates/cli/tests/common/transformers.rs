//! Helpers shared by the transformer tests (`vit.rs`, `timm_vit.rs`, `swin.rs`,
//! `variants.rs`): the ONNX fixtures and their facts, evaluation, the prunable groups, a
//! seeded random plan over heads and neurons checked against the dead-unit model.

use std::path::{Path, PathBuf};

use fair_analysis::{ResolveOptions, UnitMap, analyze};
use fair_runtime::{Mode, Model};
use tch::{Device, Tensor};

/// The path of fixture `name` (`crates/onnx/tests/fixtures/<name>.onnx`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../onnx/tests/fixtures/{name}.onnx"))
}

/// What the fixture generator recorded for fixture `name` (its `.json` next to the file:
/// the sample input, ONNX Runtime's output on it, …).
pub fn facts(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture(name).with_extension("json")).unwrap()).unwrap()
}

/// Fixture `name` imported (default options) as a runnable model on the CPU.
pub fn load(name: &str) -> Model {
    let imported =
        fair_pipeline::import_onnx(&fixture(name), &fair_onnx::ImportOptions::default()).unwrap();
    fair_pipeline::onnx_model(imported, Device::Cpu).unwrap()
}

/// The numbers under `key` of a JSON object (e.g. a fixture's facts).
pub fn floats(v: &serde_json::Value, key: &str) -> Vec<f32> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no '{key}'"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// `m`'s output on `x` in eval mode, without gradients.
pub fn eval(m: &Model, x: &Tensor) -> Tensor {
    tch::no_grad(|| m.forward(x, Mode::Eval)).unwrap()
}

/// The largest absolute value in `t`.
pub fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

/// The prunable groups as (first layer, units, unit map, layers), sorted by layer.
pub fn prunable(m: &Model) -> Vec<(String, usize, UnitMap, Vec<String>)> {
    let groups = analyze(m.graph(), &[]).unwrap();
    let mut v: Vec<_> = groups
        .groups()
        .iter()
        .filter(|g| g.is_prunable())
        .map(|g| (g.layers[0].clone(), g.units, g.map, g.layers.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// A xorshift generator: the same draws on every platform.
pub struct Rng(pub u64);

impl Rng {
    /// A value below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    /// `k` distinct values below `n`, sorted.
    pub fn pick(&mut self, k: usize, n: usize) -> Vec<usize> {
        let mut v = Vec::new();
        while v.len() < k {
            let x = self.below(n);
            if !v.contains(&x) {
                v.push(x);
            }
        }
        v.sort_unstable();
        v
    }
}

/// A plan drawn with `rng` over `m`'s prunable groups (per group 1 to H − 1 of H heads, or
/// 1 to 40 neurons) applied by surgery gives, on `x`, the dead-unit model: `m` with the removed
/// heads' rows of q, k and v and the removed neurons' rows of the MLP's first linear
/// (weights and biases) zeroed, so a removed head attends to zero values and a removed
/// neuron is GELU(0) = 0. Also checks that the dead units change the output, that every
/// layer keeps the expected width, that attention keeps `head_dim`, and that MACs drop.
/// `name` labels the failures.
pub fn random_plan_gives_the_dead_unit_model(
    name: &str,
    m: &Model,
    x: &Tensor,
    rng: &mut Rng,
    head_dim: usize,
) {
    let mut remove = serde_json::Map::new();
    let mut dead_rows: Vec<(String, Vec<i64>)> = Vec::new();
    let mut kept: Vec<(String, usize)> = Vec::new();
    for (_, units, map, layers) in &prunable(m) {
        // Keep at least one unit: 1 to units − 1 heads, or up to 40 neurons.
        let most = match map {
            UnitMap::Chunks { .. } => units - 1,
            _ => 40.min(units - 1),
        };
        let k = 1 + rng.below(most);
        let units_out = rng.pick(k, *units);
        let size = match map {
            UnitMap::Chunks { size } => *size,
            _ => 1,
        };
        let rows: Vec<i64> = units_out
            .iter()
            .flat_map(|&u| (u * size) as i64..((u + 1) * size) as i64)
            .collect();
        for l in layers {
            remove.insert(l.clone(), serde_json::json!(units_out));
            dead_rows.push((l.clone(), rows.clone()));
            kept.push((l.clone(), (units - k) * size));
        }
    }
    let plan = fair_analysis::Plan::from_json_str(
        &serde_json::json!({ "remove": remove }).to_string(),
        "plan.json",
    )
    .unwrap();
    let dead = m.deep_copy().unwrap();
    tch::no_grad(|| {
        for (layer, rows) in &dead_rows {
            for p in ["weight", "bias"] {
                let mut t = dead
                    .tensor(&format!("{layer}.{p}"))
                    .unwrap()
                    .shallow_clone();
                let _ = t.index_fill_(0, &Tensor::from_slice(rows), 0.0);
            }
        }
    });
    let (orig, a) = (eval(m, x), eval(&dead, x));
    assert!(
        max_abs(&(&orig - &a)) > 1e-3,
        "{name}: the dead units must matter"
    );
    let pruned = fair_surgery::apply(&dead, &plan, &ResolveOptions::default()).unwrap();
    let g = pruned.model.graph();
    for (layer, width) in &kept {
        assert_eq!(g.units(layer), Some(*width), "{name}: {layer}");
    }
    for n in g.nodes() {
        if let fair_ir::Op::Attention(at) = &n.op {
            assert_eq!(at.head_dim, head_dim, "{name}: the head dimension is kept");
        }
    }
    assert!(g.macs() < m.graph().macs(), "{name}");
    let b = eval(&pruned.model, x);
    let d = max_abs(&(&a - &b));
    eprintln!("{name}: max |pruned - dead-unit model| = {d:e}");
    assert!(d <= 1e-5, "{name}: max |Δ| = {d}");
}

/// Fixture `name`, exported with a dynamic batch axis, computes what ONNX Runtime computed
/// on it at batch sizes 1 and 3 (the facts' `sample_input_b{b}` and `ort_output_b{b}`), to
/// 1e-4 of the output's scale; `input` is one sample's shape, `classes` the outputs.
pub fn computes_as_onnx_runtime_at_batches_1_and_3(name: &str, input: &[i64], classes: i64) {
    let f = facts(name);
    assert_eq!(f["dynamic_batch"], serde_json::json!(true), "{name}");
    let m = load(name);
    for b in [1i64, 3] {
        let mut shape = vec![b];
        shape.extend_from_slice(input);
        let x = Tensor::from_slice(&floats(&f, &format!("sample_input_b{b}"))).reshape(&shape);
        let want =
            Tensor::from_slice(&floats(&f, &format!("ort_output_b{b}"))).reshape([b, classes]);
        let got = eval(&m, &x);
        assert_eq!(got.size(), [b, classes], "{name}");
        let d = max_abs(&(&got - &want));
        eprintln!("{name} at batch {b}: max |ours - ONNX Runtime| = {d:e}");
        assert!(
            d <= 1e-4 * max_abs(&want),
            "{name} at batch {b}: max |Δ| = {d} of scale {}",
            max_abs(&want)
        );
    }
}
