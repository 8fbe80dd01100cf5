//! Pruned models against PyTorch: the exported standalone module in plain PyTorch, and
//! Torch-Pruning (`torch-pruning` 1.6) applying the same unit indices.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use fair_analysis::{GroupRule, GroupedConvs, Plan, ResolveOptions, analyze, analyze_with};
use fair_runtime::{Mode, Model, read_safetensors, write_safetensors};
use fair_surgery::{apply, export};
use tch::{Device, Kind, Tensor};

fn python() -> Option<PathBuf> {
    fair_testkit::reference_python("the PyTorch / Torch-Pruning cross-checks")
}

fn run(py: &Path, command: &str, dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pytorch_reference.py");
    let out = Command::new(py)
        .arg(script)
        .arg(command)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pytorch_reference.py {command} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(dir: &Path, file: &str) -> Tensor {
    read_safetensors(&dir.join(file), Device::Cpu)
        .unwrap()
        .remove(0)
        .1
}

fn setup(name: &str, shape: [usize; 3]) -> (Model, Tensor) {
    let m = Model::new(common::build(name, shape), Device::Cpu, 11).unwrap();
    fair_testkit::randomise_batchnorm(&m, 4);
    let [c, h, w] = shape.map(|d| d as i64);
    (m, Tensor::randn([2, c, h, w], (Kind::Float, Device::Cpu)))
}

/// The trainable parameters of Torch-Pruning's pruned model.
fn tp_params(dir: &Path) -> usize {
    let text = std::fs::read_to_string(dir.join("tp_params.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["params"].as_u64().unwrap() as usize
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    fair_testkit::max_abs_diff(a, b)
}

#[test]
#[ignore = "needs the reference Python with torch-pruning 1.6.1 (cargo xtask test runs it)"]
fn pruned_models_match_torch_pruning_and_run_in_plain_pytorch() {
    let Some(py) = python() else { return };
    for (name, shape) in common::MODELS {
        let (m, x) = setup(name, shape);
        let (plan, chosen) = common::random_plan(&m, 1, 5);
        let groups = analyze(m.graph(), &[]).unwrap();
        let pruned = apply(
            &m,
            &plan,
            &ResolveOptions {
                rule: GroupRule::Strict,
                ..Default::default()
            },
        )
        .unwrap();
        let ours = tch::no_grad(|| pruned.model.forward(&x, Mode::Eval)).unwrap();

        // Torch-Pruning on the unpruned model, same indices.
        let dir = tempfile::tempdir().unwrap();
        export(&m, dir.path()).unwrap();
        write_safetensors(
            &dir.path().join("input.safetensors"),
            &[("input".into(), x.shallow_clone())],
        )
        .unwrap();
        let groups: Vec<serde_json::Value> = chosen
            .iter()
            .map(|(g, units)| serde_json::json!([groups.groups()[*g].layers[0], units]))
            .collect();
        std::fs::write(
            dir.path().join("plan.json"),
            serde_json::json!({ "groups": groups }).to_string(),
        )
        .unwrap();
        run(&py, "torch-pruning", dir.path());
        // Random weights with random BatchNorm statistics give outputs up to ~1e3 on the
        // deep models, so the tolerance is 1e-4 relative to the output scale (at least 1).
        let scale = ours.abs().max().double_value(&[]).max(1.0);
        let tp_params = tp_params(dir.path());
        eprintln!(
            "{name}: parameters {} → {} (Torch-Pruning: {tp_params})",
            pruned.report.params.0, pruned.report.params.1
        );
        assert_eq!(
            pruned.report.params.1, tp_params,
            "{name}: parameter counts"
        );
        let d = max_diff(&ours, &read(dir.path(), "tp_output.safetensors"));
        eprintln!(
            "{name}: fair-pruner vs Torch-Pruning, max |Δ| = {d:.2e} (outputs up to {scale:.2e})"
        );
        assert!(
            d <= 1e-4 * scale,
            "{name}: fair-pruner and Torch-Pruning differ by {d}"
        );

        // The exported pruned model in plain PyTorch.
        let out = tempfile::tempdir().unwrap();
        export(&pruned.model, out.path()).unwrap();
        write_safetensors(
            &out.path().join("input.safetensors"),
            &[("input".into(), x.shallow_clone())],
        )
        .unwrap();
        run(&py, "export", out.path());
        let d = max_diff(&ours, &read(out.path(), "torch_output.safetensors"));
        eprintln!("{name}: exported module in PyTorch, max |Δ| = {d:.2e}");
        assert!(
            d <= 1e-4 * scale,
            "{name}: exported model differs in PyTorch by {d}"
        );
        let reread = fair_ir::Graph::load(&out.path().join("model.toml")).unwrap();
        assert_eq!(&reread, pruned.model.graph());
    }
}

fn eval(m: &Model, x: &Tensor) -> Tensor {
    tch::no_grad(|| m.forward(x, Mode::Eval)).unwrap()
}

/// Exports `m`, runs `x` through the export in plain PyTorch and returns PyTorch's output.
fn in_pytorch(py: &Path, m: &Model, x: &Tensor, dir: &Path) -> Tensor {
    export(m, dir).unwrap();
    write_safetensors(
        &dir.join("input.safetensors"),
        &[("input".into(), x.shallow_clone())],
    )
    .unwrap();
    run(py, "export", dir);
    read(dir, "torch_output.safetensors")
}

#[test]
#[ignore = "needs the reference Python with torch-pruning 1.6 (cargo xtask test runs it)"]
fn mobile_ops_match_pytorch_and_torch_pruning_through_depthwise_convs_and_se_gates() {
    use rand::{Rng, SeedableRng, seq::SliceRandom};
    let Some(py) = python() else { return };
    let (m, x) = setup("mobile_se", [3, 16, 16]);
    // Non-zero biases too, so a wrongly sliced bias would show.
    tch::no_grad(|| {
        for (n, mut t) in m.named_tensors() {
            if n.ends_with(".bias") && t.dim() == 1 {
                t.copy_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.1));
            }
        }
    });
    let ours = eval(&m, &x);

    // 1. Our kernels against PyTorch's modules: the unpruned export.
    let before = tempfile::tempdir().unwrap();
    let theirs = in_pytorch(&py, &m, &x, before.path());
    let source = std::fs::read_to_string(before.path().join("model.py")).unwrap();
    for spelling in [
        "nn.Hardswish()",
        "nn.ReLU6()",
        "nn.SiLU()",
        "nn.Hardsigmoid()",
        "torch.clamp(t27 * 0.2 + 0.5, 0.0, 1.0)",
        "t28 * t23  # b2.se.mul",
        "nn.GELU(approximate=\"tanh\")",
        "nn.GELU(approximate=\"none\")",
        "nn.Hardtanh(-1.0, 2.0)",
        "nn.Sigmoid()",
        "groups=16",
    ] {
        assert!(
            source.contains(spelling),
            "model.py lacks {spelling}:\n{source}"
        );
    }
    let scale = ours.abs().max().double_value(&[]);
    let d = max_diff(&ours, &theirs);
    eprintln!("mobile_se: fair-pruner vs PyTorch, max |Δ| = {d:.2e} (outputs up to {scale:.2e})");
    assert!(scale > 0.1 && d <= 1e-5, "unpruned: max |Δ| = {d}");

    // 2. An empty plan is bit-exact, here and in PyTorch.
    let empty = apply(&m, &fair_analysis::Plan::new(), &ResolveOptions::default()).unwrap();
    assert!(eval(&empty.model, &x).equal(&ours));
    let dir = tempfile::tempdir().unwrap();
    assert!(in_pytorch(&py, &empty.model, &x, dir.path()).equal(&theirs));

    // 3. Random units of every prunable group: through the depthwise convs, across both SE
    //    gates (one multiplied gate-first) and the residual add.
    let groups = analyze(m.graph(), &[]).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let mut plan = fair_analysis::Plan::new();
    let mut chosen = Vec::new();
    for group in groups.groups() {
        if !group.is_prunable() {
            continue;
        }
        let mut all: Vec<usize> = (0..group.units).collect();
        all.shuffle(&mut rng);
        let k = rng.gen_range(1..group.units);
        let removed: Vec<usize> = all[..k].to_vec();
        for layer in &group.layers {
            plan = plan.remove(layer, removed.iter().copied());
        }
        chosen.push(serde_json::json!([group.layers[0], removed]));
    }
    let names: Vec<&str> = chosen.iter().map(|c| c[0].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["stem", "b1.expand", "b1.se.fc1", "b2.conv", "b2.se.fc1"],
        "the groups of the test network"
    );
    let pruned = apply(
        &m,
        &plan,
        &ResolveOptions {
            rule: GroupRule::Strict,
            ..Default::default()
        },
    )
    .unwrap();
    let fair_ir::Op::Conv2d(dw) = &pruned.model.graph().node("b1.dw").unwrap().op else {
        panic!("conv")
    };
    assert!(dw.groups < 16 && dw.is_depthwise(), "{dw:?}");
    let small = eval(&pruned.model, &x);
    let dir = tempfile::tempdir().unwrap();
    let d = max_diff(&small, &in_pytorch(&py, &pruned.model, &x, dir.path()));
    eprintln!("mobile_se pruned: exported module in PyTorch, max |Δ| = {d:.2e}");
    assert!(d <= 1e-5, "pruned export: max |Δ| = {d}");

    // 4. Torch-Pruning with the same indices on the unpruned export.
    std::fs::write(
        before.path().join("plan.json"),
        serde_json::json!({ "groups": chosen }).to_string(),
    )
    .unwrap();
    run(&py, "torch-pruning", before.path());
    let tp = tp_params(before.path());
    eprintln!(
        "mobile_se: parameters {} → {} (Torch-Pruning: {tp})",
        pruned.report.params.0, pruned.report.params.1
    );
    assert_eq!(pruned.report.params.1, tp);
    let d = max_diff(&small, &read(before.path(), "tp_output.safetensors"));
    eprintln!("mobile_se pruned: fair-pruner vs Torch-Pruning, max |Δ| = {d:.2e}");
    assert!(d <= 1e-5, "Torch-Pruning: max |Δ| = {d}");
}

#[test]
#[ignore = "needs the reference Python with torch (cargo xtask test runs it)"]
fn every_op_kernel_matches_its_exported_pytorch_module() {
    // Each op of fair_ir::examples() alone (reading identity nodes, or a pooled gate for a
    // broadcast mul), on inputs spread wide enough to reach every clip and saturation.
    let Some(py) = python() else { return };
    let root = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    for (i, (op, inputs)) in fair_ir::examples().into_iter().enumerate() {
        if inputs.is_empty() {
            continue; // the input op itself
        }
        let name = op.type_name();
        let node = |n: &str, ins: &[&str], op: fair_ir::Op| fair_ir::Node {
            name: n.into(),
            inputs: ins.iter().map(|s| s.to_string()).collect(),
            op,
        };
        let base = inputs
            .iter()
            .max_by_key(|s| s.iter().product::<usize>())
            .unwrap()
            .clone();
        let mut nodes = vec![node(
            "input",
            &[],
            fair_ir::Op::Input(fair_ir::Input::new(base.clone())),
        )];
        let operands: Vec<String> = (0..inputs.len()).map(|k| format!("x{k}")).collect();
        for (k, o) in operands.iter().enumerate() {
            let op = match (inputs[k].as_slice(), base.as_slice()) {
                (s, b) if s == b => fair_ir::Op::Dropout(fair_ir::Dropout { p: 0.0 }),
                ([_, h, w], _) => fair_ir::Op::AdaptiveAvgPool2d(fair_ir::AdaptiveAvgPool2d {
                    output_size: fair_ir::Pair(*h, *w),
                }),
                (s, b) => panic!("{name}: operand {s:?} cannot be made from input {b:?}"),
            };
            nodes.push(node(o, &["input"], op));
        }
        let refs: Vec<&str> = operands.iter().map(String::as_str).collect();
        nodes.push(node("op", &refs, op.clone()));
        let graph = fair_ir::Graph::new(name, nodes).unwrap();
        let m = Model::new(graph, Device::Cpu, i as u64).unwrap();
        fair_testkit::randomise_batchnorm(&m, 2);
        let mut shape = vec![3i64];
        shape.extend(base.iter().map(|&d| d as i64));
        let x = Tensor::randn(&shape, (Kind::Float, Device::Cpu)) * 4.0;
        let dir = root.path().join(format!("{i:02}"));
        export(&m, &dir).unwrap();
        write_safetensors(
            &dir.join("input.safetensors"),
            &[("input".into(), x.shallow_clone())],
        )
        .unwrap();
        cases.push((format!("{name} #{i}"), eval(&m, &x), dir));
    }
    run(&py, "export-each", root.path());
    let mut worst = 0.0f64;
    for (name, ours, dir) in cases {
        let theirs = read(&dir, "torch_output.safetensors");
        let scale = ours.abs().max().double_value(&[]).max(1.0);
        let d = max_diff(&ours, &theirs);
        eprintln!("{name}: max |Δ| = {d:.2e} (outputs up to {scale:.2e})");
        assert!(d <= 1e-5 * scale, "{name}: max |Δ| = {d}");
        worst = worst.max(d / scale);
    }
    eprintln!("every op: worst max |Δ| / scale = {worst:.2e}");
}

#[test]
#[ignore = "needs the reference Python with torch, torchvision and torch-pruning 1.6 (cargo xtask test runs it)"]
fn shuffle_and_layer_norm_ops_match_pytorch_torchvision_and_torch_pruning() {
    use rand::{Rng, SeedableRng, seq::SliceRandom};
    let Some(py) = python() else { return };
    let (m, x) = setup("shuffle_ln", [3, 16, 16]);
    // Non-zero biases and layer-norm weights, so a wrongly sliced tensor would show.
    tch::no_grad(|| {
        for (n, mut t) in m.named_tensors() {
            if t.dim() == 1 && (n.ends_with(".bias") || n.starts_with("block.norm")) {
                let noise = Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.1;
                t.copy_(&(noise + &t));
            }
        }
    });
    let ours = eval(&m, &x);

    // 1. Our kernels against the exported model.py in PyTorch, and against torchvision's own
    //    LayerNorm2d and channel_shuffle swapped into it.
    let before = tempfile::tempdir().unwrap();
    let theirs = in_pytorch(&py, &m, &x, before.path());
    let source = std::fs::read_to_string(before.path().join("model.py")).unwrap();
    for spelling in [
        "class LayerNorm2d(nn.LayerNorm):",
        "LayerNorm2d(16, eps=1e-6, elementwise_affine=True)",
        "nn.ChannelShuffle(2)",
        "t3[:, 0:8]  # split.0",
        "t3[:, 8:16]  # split.1",
        "torch.cat([t4, t13], 1)  # cat",
    ] {
        assert!(
            source.contains(spelling),
            "model.py lacks {spelling}:\n{source}"
        );
    }
    assert_eq!(source.matches("class LayerNorm2d").count(), 1);
    let scale = ours.abs().max().double_value(&[]);
    let d = max_diff(&ours, &theirs);
    eprintln!("shuffle_ln: fair-pruner vs PyTorch, max |Δ| = {d:.2e} (outputs up to {scale:.2e})");
    assert!(scale > 0.1 && d <= 1e-5, "unpruned: max |Δ| = {d}");
    run(&py, "torchvision-ops", before.path());
    let d = max_diff(&ours, &read(before.path(), "tv_output.safetensors"));
    eprintln!(
        "shuffle_ln: fair-pruner vs torchvision's LayerNorm2d and channel_shuffle, max |Δ| = {d:.2e}"
    );
    assert!(d <= 1e-5, "torchvision ops: max |Δ| = {d}");

    // 2. An empty plan is bit-exact, here and in PyTorch.
    let empty = apply(&m, &fair_analysis::Plan::new(), &ResolveOptions::default()).unwrap();
    assert!(eval(&empty.model, &x).equal(&ours));
    let dir = tempfile::tempdir().unwrap();
    assert!(in_pytorch(&py, &empty.model, &x, dir.path()).equal(&theirs));

    // 3. Random units of every prunable group: the branch's inner conv (through its
    //    depthwise conv) and the ConvNeXt MLP expansion; the split, shuffle and layer-norm
    //    stream is fixed.
    let groups = analyze(m.graph(), &[]).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    let mut plan = fair_analysis::Plan::new();
    let mut chosen = Vec::new();
    for group in groups.groups() {
        if !group.is_prunable() {
            continue;
        }
        let mut all: Vec<usize> = (0..group.units).collect();
        all.shuffle(&mut rng);
        let k = rng.gen_range(1..group.units);
        let removed: Vec<usize> = all[..k].to_vec();
        for layer in &group.layers {
            plan = plan.remove(layer, removed.iter().copied());
        }
        chosen.push(serde_json::json!([group.layers[0], removed]));
    }
    let names: Vec<&str> = chosen.iter().map(|c| c[0].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["branch2.0", "block.pw1"],
        "the groups of the test network"
    );
    let pruned = apply(
        &m,
        &plan,
        &ResolveOptions {
            rule: GroupRule::Strict,
            ..Default::default()
        },
    )
    .unwrap();
    for fixed in ["split.0", "split.1", "shuffle", "block.norm"] {
        assert_eq!(
            pruned.model.graph().node(fixed).unwrap().op,
            m.graph().node(fixed).unwrap().op,
            "{fixed}"
        );
    }
    let small = eval(&pruned.model, &x);
    let dir = tempfile::tempdir().unwrap();
    let d = max_diff(&small, &in_pytorch(&py, &pruned.model, &x, dir.path()));
    eprintln!("shuffle_ln pruned: exported module in PyTorch, max |Δ| = {d:.2e}");
    assert!(d <= 1e-5, "pruned export: max |Δ| = {d}");

    // 4. Torch-Pruning with the same indices on the unpruned export.
    std::fs::write(
        before.path().join("plan.json"),
        serde_json::json!({ "groups": chosen }).to_string(),
    )
    .unwrap();
    run(&py, "torch-pruning", before.path());
    let tp = tp_params(before.path());
    eprintln!(
        "shuffle_ln: parameters {} → {} (Torch-Pruning: {tp})",
        pruned.report.params.0, pruned.report.params.1
    );
    assert_eq!(pruned.report.params.1, tp);
    let d = max_diff(&small, &read(before.path(), "tp_output.safetensors"));
    eprintln!("shuffle_ln pruned: fair-pruner vs Torch-Pruning, max |Δ| = {d:.2e}");
    assert!(d <= 1e-5, "Torch-Pruning: max |Δ| = {d}");
}

/// An op named like a block whose layers were registered before it (ONNX import names a
/// functional `relu` inside module `block` just `block`, after `block.fc1`): the exported
/// module keeps every layer, loads the weights and computes the same output.
#[test]
#[ignore = "needs the reference Python (cargo xtask test runs it)"]
fn an_op_named_like_the_block_of_earlier_layers_keeps_them_in_pytorch() {
    let Some(py) = python() else { return };
    let mut b = fair_ir::GraphBuilder::new("nested", "input", vec![3, 8, 8]);
    let x = b.conv("block.fc1", "input", 4, 3, 1, 1, true).unwrap();
    let x = b.relu("block", &x).unwrap();
    let x = b.conv("block.fc2", &x, 5, 3, 1, 1, true).unwrap();
    let x = b.adaptive_avg_pool("pool", &x, 1, 1).unwrap();
    let x = b.flatten("flatten", &x).unwrap();
    b.linear("fc", &x, 2, true).unwrap();
    let m = Model::new(b.finish().unwrap(), Device::Cpu, 3).unwrap();
    let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
    let dir = tempfile::tempdir().unwrap();
    let torch = in_pytorch(&py, &m, &x, dir.path());
    let ours = eval(&m, &x);
    assert!(max_diff(&torch, &ours) < 1e-5, "{torch} vs {ours}");
}

/// Names from an untrusted model file (quotes, backslashes, newlines followed by code,
/// non-ASCII letters, a combining accent, an emoji) stay names in `model.py`: the export loads
/// and runs in plain PyTorch, matches fair-pruner's output, and the code in the names never
/// runs.
#[test]
#[ignore = "needs the reference Python (cargo xtask test runs it)"]
fn hostile_names_stay_names_in_the_exported_module() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let code = |at: &str| {
        format!(
            "\n        import os; os.mkdir({:?})\n        #",
            marker.join(at).display().to_string()
        )
    };
    let graph_name = format!("net\"\"\"{}\"\"\"", code("doc"));
    let conv = "bloc\u{e9}.c\u{301}onv\u{1f600}";
    let act = format!("act{}", code("comment"));
    let quoted = "q\"uo\\te";
    let mut b = fair_ir::GraphBuilder::new(&graph_name, "input", vec![3, 8, 8]);
    let x = b.conv(conv, "input", 4, 3, 1, 1, true).unwrap();
    let x = b.relu(&act, &x).unwrap();
    let x = b.conv(quoted, &x, 5, 3, 1, 1, true).unwrap();
    let x = b.adaptive_avg_pool("pool", &x, 1, 1).unwrap();
    let x = b.flatten("flatten", &x).unwrap();
    b.linear("fc", &x, 2, true).unwrap();
    let m = Model::new(b.finish().unwrap(), Device::Cpu, 5).unwrap();
    let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
    let out = dir.path().join("export");
    let torch = in_pytorch(&py, &m, &x, &out);
    let ours = eval(&m, &x);
    assert!(max_diff(&torch, &ours) < 1e-5, "{torch} vs {ours}");
    assert!(!marker.exists(), "code in a node or graph name ran");
    let src = std::fs::read_to_string(out.join("model.py")).unwrap();
    assert!(src.is_ascii());
}

/// Grouped convolutions pruned within their groups: Torch-Pruning removing the same channels
/// (unit j of a group-mapped space is channel j of every group) gives the same model, and the
/// exported module runs in plain PyTorch with the narrowed `groups` convs.
#[test]
#[ignore = "needs the reference Python with torch-pruning 1.6.1 (cargo xtask test runs it)"]
fn grouped_convs_pruned_within_groups_match_torch_pruning_and_run_in_pytorch() {
    let Some(py) = python() else { return };
    let shape = [3, 8, 8];
    let (m, x) = setup("resnext_block", shape);
    let groups = analyze_with(m.graph(), &[], GroupedConvs::WithinGroups).unwrap();
    for seed in 0..3 {
        let (plan, chosen) = common::random_plan_in(&groups, seed, 4);
        let options = ResolveOptions {
            rule: GroupRule::Strict,
            grouped: GroupedConvs::WithinGroups,
            ..Default::default()
        };
        let pruned = apply(&m, &plan, &options).unwrap();
        let ours = tch::no_grad(|| pruned.model.forward(&x, Mode::Eval)).unwrap();
        let scale = ours.abs().max().double_value(&[]).max(1.0);

        // Torch-Pruning on the unpruned model, given every channel of the removed units.
        let dir = tempfile::tempdir().unwrap();
        export(&m, dir.path()).unwrap();
        write_safetensors(
            &dir.path().join("input.safetensors"),
            &[("input".into(), x.shallow_clone())],
        )
        .unwrap();
        let tp_groups: Vec<serde_json::Value> = chosen
            .iter()
            .map(|(g, units)| {
                let group = &groups.groups()[*g];
                let mut channels: Vec<usize> = units
                    .iter()
                    .flat_map(|&u| group.map.channels(u, group.channels()))
                    .collect();
                channels.sort_unstable();
                serde_json::json!([group.layers[0], channels])
            })
            .collect();
        std::fs::write(
            dir.path().join("plan.json"),
            serde_json::json!({ "groups": tp_groups }).to_string(),
        )
        .unwrap();
        run(&py, "torch-pruning", dir.path());
        assert_eq!(
            pruned.report.params.1,
            tp_params(dir.path()),
            "seed {seed}: parameter counts"
        );
        let d = max_diff(&ours, &read(dir.path(), "tp_output.safetensors"));
        assert!(
            d <= 1e-4 * scale,
            "seed {seed}: Torch-Pruning differs by {d}"
        );

        let out = tempfile::tempdir().unwrap();
        let torch = in_pytorch(&py, &pruned.model, &x, out.path());
        assert_eq!(torch.size(), [2, 10]);
        let d = max_diff(&ours, &torch);
        assert!(
            d <= 1e-4 * scale,
            "seed {seed}: exported model differs by {d}"
        );
    }
}

#[test]
#[ignore = "needs the reference Python with torch (cargo xtask test runs it)"]
fn tiny_vit_with_heads_removed_runs_in_plain_pytorch() {
    // The attention is exported as torch's scaled_dot_product_attention on
    // [N, heads, T, head_dim]; before and after removing heads, plain PyTorch computes our
    // outputs.
    let Some(py) = python() else { return };
    let (m, x) = setup("tiny_vit", [1, 28, 28]);
    let before = tempfile::tempdir().unwrap();
    let theirs = in_pytorch(&py, &m, &x, before.path());
    let source = std::fs::read_to_string(before.path().join("model.py")).unwrap();
    assert!(source.contains("scaled_dot_product_attention"), "{source}");
    let d = max_diff(&eval(&m, &x), &theirs);
    eprintln!("tiny_vit: exported module in PyTorch, max |Δ| = {d:.2e}");
    assert!(d <= 1e-5, "unpruned: max |Δ| = {d}");
    let plan = ["q", "k", "v"].into_iter().fold(Plan::new(), |p, l| {
        p.remove(&format!("blocks.0.attn.{l}"), [0, 2])
            .remove(&format!("blocks.1.attn.{l}"), [3])
    });
    let pruned = apply(&m, &plan, &ResolveOptions::default()).unwrap();
    let after = tempfile::tempdir().unwrap();
    let theirs = in_pytorch(&py, &pruned.model, &x, after.path());
    let d = max_diff(&eval(&pruned.model, &x), &theirs);
    eprintln!("tiny_vit pruned: exported module in PyTorch, max |Δ| = {d:.2e}");
    assert!(d <= 1e-5, "pruned: max |Δ| = {d}");
    // The ONNX export (attention decomposed: Reshape, Transpose, MatMul, Mul, Softmax,
    // MatMul, Transpose, Reshape) passes onnx.checker and ONNX Runtime computes our outputs,
    // before and after; it reads back as the same graph and tensors.
    for (what, model, dir) in [
        ("unpruned", &m, before.path()),
        ("pruned", &pruned.model, after.path()),
    ] {
        run(&py, "onnxruntime", dir);
        let d = max_diff(&eval(model, &x), &read(dir, "ort_output.safetensors"));
        eprintln!("tiny_vit {what}: ONNX Runtime on model.onnx, max |Δ| = {d:.2e}");
        assert!(d <= 1e-5, "{what}: ONNX Runtime max |Δ| = {d}");
        let back = fair_onnx::import_file(&dir.join("model.onnx")).unwrap();
        assert_eq!(&back.graph.nodes(), &model.graph().nodes(), "{what}");
    }
}
