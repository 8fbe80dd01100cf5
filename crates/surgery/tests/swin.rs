//! Swin Transformer from IR ops against torchvision: `window_partition` → q, k, v →
//! `attention { windows, bias, cosine }` → proj → `window_merge` (torchvision's
//! `SwinTransformerBlock` and `SwinTransformerBlockV2`), and four `grid_stride` views → concat
//! → layer norm / linear (`PatchMerging`, `PatchMergingV2`), with torchvision's weights, run
//! by fair-pruner's runtime; then the exported `model.py` in PyTorch and `model.onnx` in ONNX
//! Runtime against the runtime. And pruning a head of a windowed attention slices its
//! relative position bias and logit scale by heads.

use std::path::Path;
use std::process::Command;

use fair_analysis::{Plan, ResolveOptions};
use fair_ir::{
    Add, Attention, AttnWindows, Concat, Gelu, Graph, GraphBuilder, GridStride, LayerNorm, Linear,
    Pair, Tokens, WindowMerge, WindowPartition,
};
use fair_runtime::{Mode, Model, read_safetensors, write_safetensors};
use fair_surgery::{apply, export, onnx_bytes};
use tch::{Device, Kind, Tensor};

const DIM: usize = 16;
const HEADS: usize = 2;
const WINDOW: Pair = Pair(4, 4);
const SHIFT: Pair = Pair(2, 2);

/// The cases of `swin_reference.py`: (case, kind, H, W).
const CASES: [(&str, &str, usize, usize); 8] = [
    ("v1_8", "v1", 8, 8),
    ("v1_10", "v1", 10, 10),
    ("v2_8", "v2", 8, 8),
    ("v2_10", "v2", 10, 10),
    ("merge_v1_8", "merge_v1", 8, 8),
    ("merge_v1_7", "merge_v1", 7, 7),
    ("merge_v2_8", "merge_v2", 8, 8),
    ("merge_v2_7", "merge_v2", 7, 7),
];

/// A Swin block on an `h × w` grid of `DIM` channels: V1 pre-norm
/// (`x + attn(norm1(x))`, `x + mlp(norm2(x))`), V2 post-norm (`x + norm1(attn(x))`,
/// `x + norm2(mlp(x))`, cosine attention).
fn block(v2: bool, h: usize, w: usize) -> Graph {
    let mut b = GraphBuilder::new("swin_block", "input", vec![DIM, h, w]);
    let add = |b: &mut GraphBuilder, name: &str, op: fair_ir::Op, ins: &[&str]| {
        b.add(name, op, ins).unwrap()
    };
    add(&mut b, "tokens", Tokens {}.into(), &["input"]);
    let attn_in = if v2 {
        "tokens"
    } else {
        add(&mut b, "norm1", LayerNorm::new(DIM).into(), &["tokens"]);
        "norm1"
    };
    let grid = Pair(h, w);
    let part = WindowPartition {
        grid,
        window: WINDOW,
        shift: SHIFT,
    };
    let padded = part.padded_grid();
    add(&mut b, "attn.partition", part.into(), &[attn_in]);
    for p in ["q", "k", "v"] {
        let name = format!("attn.{p}");
        add(
            &mut b,
            &name,
            Linear::new(DIM, DIM).into(),
            &["attn.partition"],
        );
    }
    let attention = Attention {
        heads: Some(HEADS),
        windows: Some(AttnWindows {
            grid: padded,
            window: WINDOW,
            shift: SHIFT,
            bias: true,
        }),
        cosine: v2,
        ..Attention::new(DIM / HEADS)
    };
    add(
        &mut b,
        "attn.attn",
        attention.into(),
        &["attn.q", "attn.k", "attn.v"],
    );
    add(
        &mut b,
        "attn.proj",
        Linear::new(DIM, DIM).into(),
        &["attn.attn"],
    );
    let merge = WindowMerge {
        grid,
        window: WINDOW,
        shift: SHIFT,
    };
    add(&mut b, "attn.merge", merge.into(), &["attn.proj"]);
    let branch = if v2 {
        add(&mut b, "norm1", LayerNorm::new(DIM).into(), &["attn.merge"]);
        "norm1"
    } else {
        "attn.merge"
    };
    add(&mut b, "add1", Add {}.into(), &["tokens", branch]);
    let mlp_in = if v2 {
        "add1"
    } else {
        add(&mut b, "norm2", LayerNorm::new(DIM).into(), &["add1"]);
        "norm2"
    };
    add(
        &mut b,
        "mlp.fc1",
        Linear::new(DIM, 4 * DIM).into(),
        &[mlp_in],
    );
    add(&mut b, "mlp.gelu", Gelu::default().into(), &["mlp.fc1"]);
    add(
        &mut b,
        "mlp.fc2",
        Linear::new(4 * DIM, DIM).into(),
        &["mlp.gelu"],
    );
    let branch = if v2 {
        add(&mut b, "norm2", LayerNorm::new(DIM).into(), &["mlp.fc2"]);
        "norm2"
    } else {
        "mlp.fc2"
    };
    add(&mut b, "add2", Add {}.into(), &["add1", branch]);
    b.finish().unwrap()
}

/// Patch merging on an `h × w` grid: four strides, concat, then V1 layer norm (4C) and
/// reduction (4C → 2C, no bias), V2 reduction then layer norm (2C).
fn patch_merging(v2: bool, h: usize, w: usize) -> Graph {
    let mut b = GraphBuilder::new("patch_merging", "input", vec![DIM, h, w]);
    b.add("tokens", Tokens {}.into(), &["input"]).unwrap();
    let offsets = [Pair(0, 0), Pair(1, 0), Pair(0, 1), Pair(1, 1)];
    let mut parts = Vec::new();
    for (k, offset) in offsets.into_iter().enumerate() {
        let op = GridStride {
            grid: Pair(h, w),
            offset,
            stride: Pair(2, 2),
        };
        parts.push(b.add(&format!("x{k}"), op.into(), &["tokens"]).unwrap());
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    b.add("cat", Concat {}.into(), &refs).unwrap();
    let reduction = Linear {
        bias: false,
        ..Linear::new(4 * DIM, 2 * DIM)
    };
    if v2 {
        b.add("reduction", reduction.into(), &["cat"]).unwrap();
        b.add("norm", LayerNorm::new(2 * DIM).into(), &["reduction"])
            .unwrap();
    } else {
        b.add("norm", LayerNorm::new(4 * DIM).into(), &["cat"])
            .unwrap();
        b.add("reduction", reduction.into(), &["norm"]).unwrap();
    }
    b.finish().unwrap()
}

fn graph(kind: &str, h: usize, w: usize) -> Graph {
    match kind {
        "v1" => block(false, h, w),
        "v2" => block(true, h, w),
        "merge_v1" => patch_merging(false, h, w),
        "merge_v2" => patch_merging(true, h, w),
        _ => unreachable!("{kind}"),
    }
}

fn run_python(py: &Path, command: &str, dir: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/swin_reference.py");
    let out = Command::new(py)
        .arg(script)
        .arg(command)
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "swin_reference.py {command} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs the reference Python with torchvision and onnxruntime (cargo xtask test runs it)"]
fn swin_blocks_and_patch_merging_match_torchvision_and_their_exports() {
    let Some(py) = fair_testkit::reference_python("the Swin Transformer cross-check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    run_python(&py, "make", dir.path());
    for (case, kind, h, w) in CASES {
        let mut tensors =
            read_safetensors(&dir.path().join(format!("{case}.safetensors")), Device::Cpu).unwrap();
        let take = |tensors: &mut Vec<(String, Tensor)>, name: &str| {
            let i = tensors.iter().position(|(n, _)| n == name).unwrap();
            tensors.remove(i).1
        };
        let x = take(&mut tensors, "x");
        let want = take(&mut tensors, "y");
        let model = Model::from_tensors(graph(kind, h, w), tensors, Device::Cpu)
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let y = tch::no_grad(|| model.forward(&x, Mode::Eval)).unwrap();
        let diff = fair_testkit::max_abs_diff(&y, &want);
        eprintln!("{case}: runtime vs torchvision max |diff| = {diff:.3e}");
        assert!(diff <= 1e-5, "{case}: runtime vs torchvision {diff}");
        export(&model, &dir.path().join(case)).unwrap();
        // Opset 20 too: its ReduceL2 (cosine scores) reads its axes as an input.
        let bytes = onnx_bytes(&model, &fair_onnx::ExportOptions { opset: 20 }).unwrap();
        std::fs::write(dir.path().join(case).join("model_opset20.onnx"), bytes).unwrap();
        write_safetensors(
            &dir.path().join(format!("{case}.runtime.safetensors")),
            &[("x".into(), x), ("y".into(), y)],
        )
        .unwrap();
    }
    let line = run_python(&py, "check", dir.path());
    let v: serde_json::Value = serde_json::from_str(line.trim().lines().last().unwrap()).unwrap();
    for (case, ..) in CASES {
        for what in ["pytorch", "onnx", "onnx_opset20"] {
            let diff = v[case][what].as_f64().unwrap();
            eprintln!("{case}: exported {what} vs runtime max |diff| = {diff:.3e}");
            assert!(diff <= 1e-5, "{case}: {what} {diff}");
        }
    }
}

/// Removing head 1 of a V2 block's windowed attention keeps head 0's relative position bias
/// `[1, N, N]` and logit scale `[1]`, the q, k, v rows 0..8 and the projection's columns 0..8.
#[test]
fn pruning_a_head_slices_its_bias_and_logit_scale() {
    let model = Model::new(block(true, 8, 8), Device::Cpu, 3).unwrap();
    // Distinct values per head, so a wrong slice shows.
    let bias = Tensor::arange(2 * 16 * 16, (Kind::Float, Device::Cpu)).reshape([2, 16, 16]);
    let scale = Tensor::from_slice(&[0.5f32, 2.5]);
    let mut tensors = model.named_tensors();
    for (name, t) in &mut tensors {
        if name == "attn.attn.relative_position_bias" {
            *t = bias.shallow_clone();
        } else if name == "attn.attn.logit_scale" {
            *t = scale.shallow_clone();
        }
    }
    let model = Model::from_tensors(model.graph().clone(), tensors, Device::Cpu).unwrap();
    let before = model.tensor("attn.q.weight").unwrap().detach().copy();
    let proj = model.tensor("attn.proj.weight").unwrap().detach().copy();
    // Head 0 goes, so keeping the first heads' slices would be wrong.
    let plan = Plan::new()
        .remove("attn.q", [0])
        .remove("attn.k", [0])
        .remove("attn.v", [0]);
    let pruned = apply(&model, &plan, &ResolveOptions::default()).unwrap();
    let m = &pruned.model;
    let b = m.tensor("attn.attn.relative_position_bias").unwrap();
    assert_eq!(b.size(), [1, 16, 16]);
    assert!(b.equal(&bias.narrow(0, 1, 1)));
    let s = m.tensor("attn.attn.logit_scale").unwrap();
    assert_eq!(Vec::<f32>::try_from(s).unwrap(), [2.5]);
    assert!(
        m.tensor("attn.q.weight")
            .unwrap()
            .equal(&before.narrow(0, 8, 8))
    );
    assert!(
        m.tensor("attn.proj.weight")
            .unwrap()
            .equal(&proj.narrow(1, 8, 8))
    );
    let attn = m.graph().node("attn.attn").unwrap();
    let fair_ir::Op::Attention(a) = &attn.op else {
        panic!("{:?}", attn.op)
    };
    assert_eq!(a.heads, Some(1));
    // The pruned model runs (its attention has one head of 8 channels).
    let x = Tensor::randn([2, DIM as i64, 8, 8], (Kind::Float, Device::Cpu));
    let y = tch::no_grad(|| m.forward(&x, Mode::Eval)).unwrap();
    assert_eq!(y.size(), [2, 64, DIM as i64]);
    // Head 1's score is its bias and scale slices too (group magnitude reads them).
    let groups = fair_analysis::analyze(model.graph(), &[]).unwrap();
    let g = groups.group_of("attn.q").unwrap();
    let slices = groups.unit_slices(model.graph(), g);
    let rpb = slices
        .iter()
        .find(|s| s.param == "attn.attn.relative_position_bias")
        .expect("the bias is a slice of the heads");
    assert_eq!(
        (rpb.axis, rpb.positions.clone()),
        (0, vec![vec![0], vec![1]])
    );
    assert!(
        slices.iter().any(|s| s.param == "attn.attn.logit_scale"),
        "{slices:?}"
    );
}
