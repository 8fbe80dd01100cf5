//! The runtime on its own: shapes, taps, modes, seeding and weight files.

use std::path::Path;

use fair_runtime::{Mode, Model, RuntimeError, parse_device, write_safetensors};
use tch::{Device, Kind, Tensor};

fn model(name: &str, input: [usize; 3], seed: u64) -> Model {
    Model::new(
        fair_zoo::build(name, &input, 10).unwrap(),
        Device::Cpu,
        seed,
    )
    .unwrap()
}

fn batch(n: i64, input: [usize; 3], seed: i64) -> Tensor {
    tch::manual_seed(seed);
    let [c, h, w] = input.map(|d| d as i64);
    Tensor::randn([n, c, h, w], (Kind::Float, Device::Cpu))
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.equal(b)
}

#[test]
fn libtorch_shapes_equal_ir_shape_inference_for_every_node() {
    // Small inputs keep this fast; every family and block type is covered.
    let cases: [(&str, [usize; 3]); 10] = [
        ("vgg11_bn", [3, 32, 32]),
        ("vgg16_cifar", [3, 32, 32]),
        ("alexnet", [3, 64, 64]),
        ("resnet50", [3, 32, 32]),
        ("resnet20", [1, 28, 28]),
        ("densenet121", [3, 32, 32]),
        ("densenet40", [3, 32, 32]),
        ("mlp", [1, 28, 28]),
        ("token_mlp", [1, 28, 28]),
        ("tiny_vit", [1, 28, 28]),
    ];
    for (name, input) in cases {
        let m = model(name, input, 0);
        let taps: Vec<String> = m.graph().nodes().iter().map(|n| n.name.clone()).collect();
        let out =
            tch::no_grad(|| m.forward_with_taps(&batch(2, input, 1), Mode::Eval, &taps)).unwrap();
        for (i, node) in m.graph().nodes().iter().enumerate() {
            let mut want = vec![2i64];
            want.extend(m.graph().shape_at(i).iter().map(|&d| d as i64));
            assert_eq!(
                out.taps[&node.name].size(),
                want,
                "{name}: node {}",
                node.name
            );
        }
        assert!(
            same(&out.output, &out.taps[&m.graph().output().name]),
            "{name}"
        );
    }
}

#[test]
fn same_seed_same_parameters_different_seed_different() {
    let a = model("resnet20", [3, 32, 32], 5);
    let b = model("resnet20", [3, 32, 32], 5);
    let c = model("resnet20", [3, 32, 32], 6);
    let name = "layer2.0.conv1.weight";
    assert!(same(a.tensor(name).unwrap(), b.tensor(name).unwrap()));
    assert!(!same(a.tensor(name).unwrap(), c.tensor(name).unwrap()));
    // Kaiming normal, fan-out: std = sqrt(2 / (32·3·3)) ≈ 0.0833.
    let std = a.tensor(name).unwrap().std(true).double_value(&[]);
    assert!(
        (std / (2.0f64 / 288.0).sqrt() - 1.0).abs() < 0.05,
        "std {std}"
    );
    // BatchNorm starts as the identity transform.
    assert!(same(
        a.tensor("bn1.weight").unwrap(),
        &Tensor::ones([16], (Kind::Float, Device::Cpu))
    ));
}

#[test]
fn modes_treat_batchnorm_statistics_as_documented() {
    let m = model("resnet20", [3, 32, 32], 0);
    let x = batch(8, [3, 32, 32], 2);
    let mean = || m.tensor("bn1.running_mean").unwrap().copy();
    let steps = || {
        m.tensor("bn1.num_batches_tracked")
            .unwrap()
            .int64_value(&[])
    };
    let before = mean();

    let e1 = tch::no_grad(|| m.forward(&x, Mode::Eval)).unwrap();
    let e2 = tch::no_grad(|| m.forward(&x, Mode::Eval)).unwrap();
    assert!(same(&e1, &e2), "eval is deterministic");

    let f = tch::no_grad(|| m.forward(&x, Mode::TrainFrozenStats)).unwrap();
    assert!(
        same(&before, &mean()) && steps() == 0,
        "frozen-stats training leaves BN untouched"
    );
    assert!(
        !same(&f, &e1),
        "batch statistics differ from running statistics"
    );

    let t = tch::no_grad(|| m.forward(&x, Mode::Train)).unwrap();
    assert!(
        same(&f, &t),
        "both training modes normalise with batch statistics"
    );
    assert!(
        !same(&before, &mean()),
        "training updates running statistics"
    );
    assert_eq!(steps(), 1, "and counts the batch, as PyTorch does");
}

#[test]
fn gradients_reach_every_trainable_parameter() {
    let m = model("densenet40", [3, 32, 32], 0);
    let x = batch(4, [3, 32, 32], 3);
    let labels = Tensor::from_slice(&[0i64, 1, 2, 3]);
    let loss = m
        .forward(&x, Mode::TrainFrozenStats)
        .unwrap()
        .cross_entropy_for_logits(&labels);
    loss.backward();
    for v in m.var_store().trainable_variables() {
        assert!(v.grad().defined(), "every trainable tensor gets a gradient");
    }
    assert_eq!(
        m.var_store()
            .trainable_variables()
            .iter()
            .map(|t| t.numel())
            .sum::<usize>(),
        m.graph().param_count()
    );
}

#[test]
fn weights_round_trip_through_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let a = model("vgg11_bn_cifar", [3, 32, 32], 1);
    a.save_weights(&path).unwrap();
    let b = Model::from_safetensors(a.graph().clone(), &path, Device::Cpu).unwrap();
    let x = batch(3, [3, 32, 32], 4);
    let ya = tch::no_grad(|| a.forward(&x, Mode::Eval)).unwrap();
    let yb = tch::no_grad(|| b.forward(&x, Mode::Eval)).unwrap();
    assert!(same(&ya, &yb));
}

#[test]
fn a_deep_copy_computes_the_same_and_shares_nothing() {
    let a = model("resnet20", [3, 32, 32], 1);
    fair_testkit::randomise_batchnorm(&a, 6);
    let x = batch(2, [3, 32, 32], 5);
    let ya = tch::no_grad(|| a.forward(&x, Mode::Eval)).unwrap();
    let b = a.deep_copy().unwrap();
    assert_eq!(b.graph(), a.graph());
    assert!(same(
        &ya,
        &tch::no_grad(|| b.forward(&x, Mode::Eval)).unwrap()
    ));
    assert_eq!(
        b.tensor("bn1.num_batches_tracked")
            .unwrap()
            .int64_value(&[]),
        a.tensor("bn1.num_batches_tracked")
            .unwrap()
            .int64_value(&[])
    );
    // A training-mode pass moves the copy's BatchNorm statistics and a zeroed weight
    // changes its output; the original computes as before.
    let _ = tch::no_grad(|| b.forward(&x, Mode::Train)).unwrap();
    tch::no_grad(|| {
        let _ = b.tensor("conv1.weight").unwrap().shallow_clone().fill_(0.0);
    });
    let yb = tch::no_grad(|| b.forward(&x, Mode::Eval)).unwrap();
    assert!(!same(&ya, &yb), "the copy changed");
    let still = tch::no_grad(|| a.forward(&x, Mode::Eval)).unwrap();
    assert!(
        same(&ya, &still),
        "the copy shares storage with the original"
    );
}

#[test]
fn a_model_from_tensors_owns_copies_of_them() {
    let a = model("resnet20", [3, 32, 32], 1);
    fair_testkit::randomise_batchnorm(&a, 5);
    let x = batch(2, [3, 32, 32], 4);
    let ya = tch::no_grad(|| a.forward(&x, Mode::Eval)).unwrap();
    // Given in double precision and without one BatchNorm counter.
    let mut tensors: Vec<(String, Tensor)> = a
        .named_tensors()
        .into_iter()
        .map(|(n, t)| {
            let t = if t.is_floating_point() {
                t.to_kind(Kind::Double)
            } else {
                t.copy()
            };
            (n, t)
        })
        .collect();
    tensors.retain(|(n, _)| n != "bn1.num_batches_tracked");
    let given: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    let b = Model::from_tensors(a.graph().clone(), given, Device::Cpu).unwrap();
    let yb = tch::no_grad(|| b.forward(&x, Mode::Eval)).unwrap();
    assert!(same(&ya, &yb), "the same parameters give the same output");
    assert_eq!(b.tensor("conv1.weight").unwrap().kind(), Kind::Float);
    assert_eq!(
        b.tensor("bn1.num_batches_tracked")
            .unwrap()
            .int64_value(&[]),
        0
    );
    // Changing the given tensors leaves the model alone, and the other way round.
    tch::no_grad(|| {
        for (_, t) in &tensors {
            let _ = t.shallow_clone().fill_(0.0);
        }
    });
    let again = tch::no_grad(|| b.forward(&x, Mode::Eval)).unwrap();
    assert!(
        same(&yb, &again),
        "the model shares storage with the given tensors"
    );
    let f32_given = a.named_tensors();
    let c = Model::from_tensors(a.graph().clone(), f32_given, Device::Cpu).unwrap();
    tch::no_grad(|| {
        let _ = c.tensor("conv1.weight").unwrap().shallow_clone().fill_(0.0);
    });
    let still = tch::no_grad(|| a.forward(&x, Mode::Eval)).unwrap();
    assert!(
        same(&ya, &still),
        "the model shares storage with the given tensors"
    );
}

#[test]
fn mismatched_weights_are_reported_by_name_and_nothing_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let mut m = model("resnet20", [3, 32, 32], 0);
    let mut tensors = m.named_tensors();
    tensors.retain(|(n, _)| n != "fc.bias");
    tensors.push((
        "extra.weight".into(),
        Tensor::zeros([2], (Kind::Float, Device::Cpu)),
    ));
    for (n, t) in tensors.iter_mut() {
        if n == "conv1.weight" {
            *t = Tensor::zeros([16, 3, 5, 5], (Kind::Float, Device::Cpu));
        } else if n == "layer1.0.conv1.weight" {
            *t = t.zeros_like();
        }
    }
    write_safetensors(&path, &tensors).unwrap();
    let before = m.tensor("layer1.0.conv1.weight").unwrap().copy();
    let err = m.load_weights(&path).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, RuntimeError::WeightsMismatch { ref problems, .. } if problems.len() == 3),
        "{text}"
    );
    assert!(
        text.contains("missing tensor 'fc.bias' (expected shape [10])"),
        "{text}"
    );
    assert!(text.contains("unexpected tensor 'extra.weight'"), "{text}");
    assert!(
        text.contains("'conv1.weight' has shape [16, 3, 5, 5], expected [16, 3, 3, 3]"),
        "{text}"
    );
    assert!(
        text.contains("bad.safetensors") && text.contains("nothing was loaded"),
        "{text}"
    );
    assert!(
        same(&before, m.tensor("layer1.0.conv1.weight").unwrap()),
        "no tensor was half-loaded"
    );
}

#[test]
fn corrupt_files_and_bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    let m = model("mlp", [1, 28, 28], 0);
    m.save_weights(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let mut m2 = model("mlp", [1, 28, 28], 1);
    let e = m2.load_weights(&cut).unwrap_err().to_string();
    assert!(
        e.contains("cut.safetensors") && e.starts_with("cannot read safetensors file"),
        "{e}"
    );
    let e = m2
        .load_weights(Path::new("/nonexistent/w.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/w.safetensors"), "{e}");

    let e = m
        .forward(&batch(2, [3, 28, 28], 0), Mode::Eval)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "the input has shape [2, 3, 28, 28], but the graph 'mlp' expects [batch, 1, 28, 28]"
    );
    let e = m
        .forward_with_taps(&batch(2, [1, 28, 28], 0), Mode::Eval, &["layers.9"])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "the graph 'mlp' has no node named 'layers.9'"
    );
}

#[test]
fn devices_parse_and_missing_cuda_is_an_error() {
    assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
    assert!(
        parse_device("tpu")
            .unwrap_err()
            .to_string()
            .contains("expected cpu, cuda or cuda:N")
    );
    if !tch::Cuda::is_available() {
        let e = parse_device("cuda").unwrap_err().to_string();
        assert!(e.contains("0 CUDA device"), "{e}");
    }
}

#[test]
fn a_libtorch_failure_names_the_node() {
    // Integer inputs of the right shape pass the shape check and fail inside libtorch's
    // convolution: the error must say which node, not only libtorch's message.
    let graph = fair_zoo::build("resnet20", &[3, 8, 8], 10).unwrap();
    let model = fair_runtime::Model::new(graph, tch::Device::Cpu, 0).unwrap();
    let x = tch::Tensor::ones([2, 3, 8, 8], (tch::Kind::Int64, tch::Device::Cpu));
    let e = model
        .forward(&x, fair_runtime::Mode::Eval)
        .unwrap_err()
        .to_string();
    assert!(e.contains("node 'conv1' (conv2d)"), "{e}");
    // libtorch's message, without the C++ backtrace it appends: one line.
    assert!(e.contains("expected scalar type"), "{e}");
    assert!(
        !e.contains("frame #") && !e.contains("Exception raised from") && !e.contains('\n'),
        "{e}"
    );
}

#[test]
fn a_failed_allocation_inside_libtorch_is_one_line_naming_the_node() {
    // A 1×1 convolution of 64 channels padded by 60000 on each side: its padded input,
    // its im2col buffer and its output are each 64 × 120002 × 120002 f32 (3.7 TB), which the
    // kernel refuses to allocate at once unless it is told to grant any allocation
    // (`vm.overcommit_memory = 1`, where the convolution would then fill memory: the test is
    // skipped there).
    let overcommit = std::fs::read_to_string("/proc/sys/vm/overcommit_memory");
    if overcommit.is_ok_and(|mode| mode.trim() == "1") {
        eprintln!("skipped: vm.overcommit_memory = 1 grants any allocation");
        return;
    }
    let mut b = fair_ir::GraphBuilder::new("padded", "input", vec![64, 2, 2]);
    let conv = fair_ir::Conv2d {
        padding: fair_ir::Pair(60_000, 60_000),
        ..fair_ir::Conv2d::new(64, 64, 1)
    };
    b.add("c", conv.into(), &["input"]).unwrap();
    let graph = b.finish().unwrap();
    let model = Model::new(graph, Device::Cpu, 0).unwrap();
    let x = Tensor::ones([1, 64, 2, 2], (Kind::Float, Device::Cpu));
    let e = tch::no_grad(|| model.forward(&x, Mode::Eval))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("node 'c' (conv2d): "), "{e}");
    assert!(e.contains("allocate"), "{e}");
    assert!(
        !e.contains("frame #") && !e.contains("Exception raised from") && !e.contains('\n'),
        "{e}"
    );
}

#[test]
fn every_op_has_a_kernel_that_matches_its_inferred_shape() {
    // The kernel dispatch is generated from the IR's op list (an op without a kernel does
    // not compile); this walks every op of the IR (fair_ir::examples covers
    // Op::TYPE_NAMES) and checks each kernel runs and agrees with shape inference.
    for (op, inputs) in fair_ir::examples() {
        let name = op.type_name();
        if inputs.is_empty() {
            continue; // the input op itself
        }
        let node = |n: &str, ins: &[&str], op: fair_ir::Op| fair_ir::Node {
            name: n.into(),
            inputs: ins.iter().map(|s| s.to_string()).collect(),
            op,
        };
        // The network input is the largest operand; a smaller one (a broadcast gate
        // [C, 1, 1]) is pooled down from it.
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
        // Each operand is its own node, so multi-input ops read distinct tensors.
        let operands: Vec<String> = (0..inputs.len()).map(|k| format!("x{k}")).collect();
        for (k, o) in operands.iter().enumerate() {
            let op = match (inputs[k].as_slice(), base.as_slice()) {
                (s, b) if s == b => fair_ir::Op::Relu(fair_ir::Relu {}),
                ([c, h, w], [bc, ..]) if c == bc => {
                    fair_ir::Op::AdaptiveAvgPool2d(fair_ir::AdaptiveAvgPool2d {
                        output_size: fair_ir::Pair(*h, *w),
                    })
                }
                (s, b) => panic!("{name}: operand {s:?} cannot be made from input {b:?}"),
            };
            nodes.push(node(o, &["input"], op));
        }
        let refs: Vec<&str> = operands.iter().map(String::as_str).collect();
        nodes.push(node("op", &refs, op.clone()));
        let graph = fair_ir::Graph::new(name, nodes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected: Vec<i64> = std::iter::once(2)
            .chain(graph.shape("op").unwrap().iter().map(|&d| d as i64))
            .collect();
        let model = Model::new(graph, Device::Cpu, 0).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut shape = vec![2i64];
        shape.extend(base.iter().map(|&d| d as i64));
        let x = Tensor::randn(&shape, (Kind::Float, Device::Cpu));
        for mode in [Mode::Eval, Mode::Train] {
            let y = model
                .forward(&x, mode)
                .unwrap_or_else(|e| panic!("{name} ({mode:?}): {e}"));
            assert_eq!(y.size(), expected, "{name} ({mode:?})");
        }
    }
}

#[test]
fn a_missing_num_batches_tracked_is_accepted_but_other_missing_buffers_are_not() {
    // PyTorch's BatchNorm `load_state_dict` accepts a state dict without
    // `num_batches_tracked` (older checkpoints, many converters) and keeps the module's
    // counter, 0 for a new module; every other missing tensor stays an error.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no_counters.safetensors");
    let a = model("resnet20", [3, 32, 32], 1);
    fair_testkit::randomise_batchnorm(&a, 5);
    let mut tensors = a.named_tensors();
    let before = tensors.len();
    tensors.retain(|(n, _)| !n.ends_with(".num_batches_tracked"));
    assert!(tensors.len() < before, "resnet20 has BatchNorm counters");
    write_safetensors(&path, &tensors).unwrap();

    let b = Model::from_safetensors(a.graph().clone(), &path, Device::Cpu).unwrap();
    let x = batch(2, [3, 32, 32], 4);
    let ya = tch::no_grad(|| a.forward(&x, Mode::Eval)).unwrap();
    let yb = tch::no_grad(|| b.forward(&x, Mode::Eval)).unwrap();
    assert!(same(&ya, &yb), "every other tensor was loaded");
    let counter = b.tensor("bn1.num_batches_tracked").unwrap();
    assert_eq!(counter.kind(), Kind::Int64);
    assert_eq!(counter.int64_value(&[]), 0);

    // An existing model keeps its counter, as a PyTorch module does.
    let mut c = model("resnet20", [3, 32, 32], 2);
    tch::no_grad(|| {
        let mut n = c.tensor("bn1.num_batches_tracked").unwrap().shallow_clone();
        let _ = n.fill_(7);
    });
    c.load_weights(&path).unwrap();
    assert_eq!(
        c.tensor("bn1.num_batches_tracked")
            .unwrap()
            .int64_value(&[]),
        7
    );

    // A missing running mean is still an error naming it.
    tensors.retain(|(n, _)| n != "bn1.running_mean");
    write_safetensors(&path, &tensors).unwrap();
    let e = Model::from_safetensors(a.graph().clone(), &path, Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("missing tensor 'bn1.running_mean' (expected shape [16])"),
        "{e}"
    );
    assert!(!e.contains("num_batches_tracked"), "{e}");
}

/// The graph `input → op` for one single-input op and its input shape.
fn single(op: fair_ir::Op, input: &[usize]) -> fair_ir::Graph {
    let node = |n: &str, ins: &[&str], op: fair_ir::Op| fair_ir::Node {
        name: n.into(),
        inputs: ins.iter().map(|s| s.to_string()).collect(),
        op,
    };
    let nodes = vec![
        node("input", &[], fair_ir::Input::new(input.to_vec()).into()),
        node("op", &["input"], op),
    ];
    fair_ir::Graph::new("single", nodes).unwrap()
}

/// `v` shaped to broadcast along axis `axis` of a tensor of `rank` dimensions.
fn along(v: &Tensor, axis: usize, rank: usize) -> Tensor {
    let mut shape = vec![1i64; rank];
    shape[axis] = -1;
    v.view(shape.as_slice())
}

/// The axis of a batched tensor that holds its units: one past the per-sample unit axis
/// (`fair_ir::unit_axis`: channels of an image, the last axis of tokens).
fn unit_dim(y: &Tensor) -> usize {
    let sample: Vec<usize> = y.size()[1..].iter().map(|&d| d as usize).collect();
    1 + fair_ir::unit_axis(&sample)
}

#[test]
fn the_import_rewrite_answers_hold_for_every_kernel() {
    // What the ONNX importer rewrites through the contract (fair_ir::Contract::with_bias,
    // folds_output_scale, self_gated) computes the same as the pattern it replaces, with
    // the runtime's kernels: a layer with a bias is the layer without plus the bias; a layer
    // with its tensors scaled along their units is the layer's output scaled; a self-gated
    // form is x times the gate of x.
    let close = |a: &Tensor, b: &Tensor| a.size() == b.size() && a.allclose(b, 1e-5, 1e-5, false);
    let (mut biases, mut scales, mut gates) = (0, 0, 0);
    for (op, inputs) in fair_ir::examples() {
        let name = op.type_name();
        let [input] = inputs.as_slice() else {
            continue;
        };
        let mut shape = vec![3i64];
        shape.extend(input.iter().map(|&d| d as i64));
        tch::manual_seed(7);
        let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
        let run = |m: &Model| tch::no_grad(|| m.forward(&x, Mode::Eval)).unwrap();
        let c = op.contract();
        if let (Some(with), Some(without)) = (c.with_bias(true), c.with_bias(false)) {
            let m0 = Model::new(single(without, input), Device::Cpu, 1).unwrap();
            let y0 = run(&m0);
            let ax = unit_dim(&y0);
            let units = y0.size()[ax];
            let bias = Tensor::randn([units], (Kind::Float, Device::Cpu));
            let mut tensors = m0.named_tensors();
            tensors.push(("op.bias".into(), bias.shallow_clone()));
            let m1 = Model::from_tensors(single(with, input), tensors, Device::Cpu)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let want = &y0 + along(&bias, ax, y0.dim());
            assert!(close(&run(&m1), &want), "{name}: with_bias");
            biases += 1;
        }
        if c.folds_output_scale() {
            let m = Model::new(single(op.clone(), input), Device::Cpu, 2).unwrap();
            let y = run(&m);
            let ax = unit_dim(&y);
            let gamma = Tensor::rand([y.size()[ax]], (Kind::Float, Device::Cpu)) + 0.5;
            let specs = op.params("op");
            let tensors: Vec<(String, Tensor)> = m
                .named_tensors()
                .into_iter()
                .map(|(n, t)| {
                    let axis = specs.iter().find(|p| p.name == n).and_then(|p| p.out_axis);
                    let t = match axis {
                        Some(a) => &t * along(&gamma, a, t.dim()),
                        None => t,
                    };
                    (n, t)
                })
                .collect();
            let scaled = Model::from_tensors(single(op.clone(), input), tensors, Device::Cpu)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let want = &y * along(&gamma, ax, y.dim());
            assert!(close(&run(&scaled), &want), "{name}: folds_output_scale");
            scales += 1;
        }
        if let Some(form) = c.self_gated() {
            let gate = run(&Model::new(single(op.clone(), input), Device::Cpu, 0).unwrap());
            let fused = run(&Model::new(single(form, input), Device::Cpu, 0).unwrap());
            assert!(close(&fused, &(&x * gate)), "{name}: self_gated");
            gates += 1;
        }
    }
    // Conv, grouped conv and linear take a bias and a scale; sigmoid has a self-gated form.
    assert!(
        biases >= 3 && scales >= 3 && gates >= 1,
        "{biases} {scales} {gates}"
    );
}
