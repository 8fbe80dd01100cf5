//! BatchNorm recalibration: the running statistics become the average of the per-batch
//! moments of every BatchNorm's input, nothing else changes, and it matches PyTorch's
//! `reset_running_stats()` + `momentum = None`.

use std::collections::HashMap;

use fair_data::{Dataset, ImageSource, Transform};
use fair_ir::{BatchNorm1d, GraphBuilder};
use fair_runtime::{Mode, Model};
use fair_train::{BnRecalibration, TrainError, recalibrate_batch_norm};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use tch::{Device, Kind, Tensor};

const INPUT: [usize; 3] = [3, 6, 6];

/// conv → bn (2d) → relu → flatten → fc → bn1 (1d) → relu → head.
fn net(seed: u64) -> Model {
    let mut b = GraphBuilder::new("bn-net", "input", INPUT.to_vec());
    b.conv("conv", "input", 4, 3, 1, 1, false).unwrap();
    b.bn2d("bn", "conv").unwrap();
    b.relu("relu", "bn").unwrap();
    b.flatten("flatten", "relu").unwrap();
    b.linear("fc", "flatten", 8, true).unwrap();
    b.add("bn1", BatchNorm1d::new(8).into(), &["fc"]).unwrap();
    b.relu("relu1", "bn1").unwrap();
    b.linear("head", "relu1", 2, true).unwrap();
    let m = Model::new(b.finish().unwrap(), Device::Cpu, seed).unwrap();
    // Non-trivial BatchNorm scales and shifts, so outputs depend on every statistic.
    tch::manual_seed(seed as i64);
    tch::no_grad(|| {
        for (name, mut t) in m.named_tensors() {
            if name.starts_with("bn") && (name.ends_with("weight") || name.ends_with("bias")) {
                t.copy_(&(Tensor::rand(t.size(), (Kind::Float, Device::Cpu)) + 0.5));
            }
        }
    });
    m
}

fn data(n: usize, seed: u64) -> Dataset {
    fair_testkit::noise_dataset(INPUT, n, seed)
}

fn transform() -> Transform {
    Transform {
        mean: vec![0.5],
        std: vec![0.25],
        // Recalibration must switch augmentation off.
        augment: Some(fair_data::Augment {
            crop_padding: 2,
            flip: true,
        }),
        ..Default::default()
    }
}

/// The batches recalibration draws (as documented): a permutation from the seed, in chunks.
fn batches(d: &Dataset, s: &BnRecalibration) -> Vec<Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(s.seed);
    let mut order: Vec<usize> = (0..d.len()).collect();
    order.shuffle(&mut rng);
    assert!(s.batches * s.batch_size <= d.len(), "one permutation");
    let plain = Transform {
        augment: None,
        ..transform()
    };
    order
        .chunks(s.batch_size)
        .take(s.batches)
        .map(|c| d.batch(&plain, c, INPUT, false, &mut rng).unwrap().0)
        .collect()
}

/// Every tensor of the model, copied.
fn snapshot(m: &Model) -> HashMap<String, Tensor> {
    m.named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect()
}

fn corrupt(m: &Model) {
    fair_testkit::randomise_batchnorm(m, 3);
    tch::no_grad(|| {
        for (name, mut t) in m.named_tensors() {
            if name.ends_with("running_mean") {
                let _ = t.g_add_scalar_(5.0);
            }
        }
    });
}

#[test]
fn running_stats_are_the_mean_of_the_batch_moments_and_nothing_else_changes() {
    tch::set_num_threads(1);
    let d = data(64, 1);
    let m = net(0);
    corrupt(&m);
    let before = snapshot(&m);
    let x_all = d
        .batch(
            &Transform {
                augment: None,
                ..transform()
            },
            &(0..64).collect::<Vec<_>>(),
            INPUT,
            false,
            &mut rand::rngs::StdRng::seed_from_u64(0),
        )
        .unwrap()
        .0;
    let out_before = tch::no_grad(|| m.forward(&x_all, Mode::Eval).unwrap());

    let s = BnRecalibration {
        batches: 4,
        batch_size: 16,
        seed: 7,
    };
    let report = recalibrate_batch_norm(&m, &d, &transform(), &s).unwrap();
    assert_eq!(
        (report.layers, report.batches, report.samples),
        (2, 4, 64),
        "{report:?}"
    );

    // The independent computation: the same batches, tapped, moments with plain tensor ops.
    let mut want: HashMap<&str, (Tensor, Tensor)> = HashMap::new();
    for x in batches(&d, &s) {
        let taps = tch::no_grad(|| {
            m.forward_with_taps(&x, Mode::TrainFrozenStats, &["conv", "fc"])
                .unwrap()
                .taps
        });
        for (bn, input, dims) in [("bn", "conv", &[0i64, 2, 3][..]), ("bn1", "fc", &[0][..])] {
            let t = &taps[input];
            let mean = t.mean_dim(dims, false, Kind::Float) / 4.0;
            let var = t.var_dim(dims, true, false) / 4.0;
            let e = want
                .entry(bn)
                .or_insert_with(|| (mean.zeros_like(), var.zeros_like()));
            *e = (&e.0 + mean, &e.1 + var);
        }
    }
    for (bn, (mean, var)) in &want {
        let got_mean = m.tensor(&format!("{bn}.running_mean")).unwrap();
        let got_var = m.tensor(&format!("{bn}.running_var")).unwrap();
        let dm = fair_testkit::max_abs_diff(got_mean, mean);
        let dv = fair_testkit::max_abs_diff(got_var, var);
        assert!(
            dm < 1e-5 && dv < 1e-5,
            "{bn}: mean off by {dm}, var by {dv}"
        );
        assert_eq!(
            m.tensor(&format!("{bn}.num_batches_tracked"))
                .unwrap()
                .int64_value(&[]),
            4
        );
    }
    // With equal batches covering the data once, the running mean is the data's mean.
    let taps = tch::no_grad(|| {
        m.forward_with_taps(&x_all, Mode::TrainFrozenStats, &["conv"])
            .unwrap()
            .taps
    });
    let all_mean = taps["conv"].mean_dim(&[0i64, 2, 3][..], false, Kind::Float);
    assert!(fair_testkit::max_abs_diff(m.tensor("bn.running_mean").unwrap(), &all_mean) < 1e-5);

    // Every other tensor is bit-identical; the statistics did change.
    for (name, t) in snapshot(&m) {
        let stat = name.ends_with("running_mean")
            || name.ends_with("running_var")
            || name.ends_with("num_batches_tracked");
        assert_eq!(t.equal(&before[&name]), !stat, "{name}");
    }
    let out_after = tch::no_grad(|| m.forward(&x_all, Mode::Eval).unwrap());
    assert!(fair_testkit::max_abs_diff(&out_before, &out_after) > 1e-3);

    // Deterministic: the same seed gives the same statistics.
    let m2 = net(0);
    corrupt(&m2);
    recalibrate_batch_norm(&m2, &d, &transform(), &s).unwrap();
    for name in ["bn.running_var", "bn1.running_mean"] {
        assert!(m.tensor(name).unwrap().equal(m2.tensor(name).unwrap()));
    }
}

#[test]
fn more_batches_than_the_data_holds_reuse_fresh_permutations() {
    tch::set_num_threads(1);
    let d = data(10, 2);
    let m = net(1);
    corrupt(&m);
    let s = BnRecalibration {
        batches: 7,
        batch_size: 64, // capped at the 10 samples
        seed: 0,
    };
    let r = recalibrate_batch_norm(&m, &d, &transform(), &s).unwrap();
    assert_eq!((r.layers, r.batches, r.samples), (2, 7, 70));
    // Every batch is the whole data set, so batch moments are those of the whole data.
    let plain = Transform {
        augment: None,
        ..transform()
    };
    let x_all = d
        .batch(
            &plain,
            &(0..10).collect::<Vec<_>>(),
            INPUT,
            false,
            &mut rand::rngs::StdRng::seed_from_u64(0),
        )
        .unwrap()
        .0;
    let taps = tch::no_grad(|| {
        m.forward_with_taps(&x_all, Mode::TrainFrozenStats, &["fc"])
            .unwrap()
            .taps
    });
    let var = taps["fc"].var_dim(&[0i64][..], true, false);
    assert!(fair_testkit::max_abs_diff(m.tensor("bn1.running_var").unwrap(), &var) < 1e-5);
}

#[test]
fn a_model_without_batchnorm_is_left_alone() {
    let g = fair_zoo::mlp(INPUT.to_vec(), &[8], 2).unwrap();
    let m = Model::new(g, Device::Cpu, 0).unwrap();
    let before = snapshot(&m);
    let r =
        recalibrate_batch_norm(&m, &data(8, 3), &transform(), &BnRecalibration::default()).unwrap();
    assert_eq!((r.layers, r.batches, r.samples), (0, 0, 0));
    for (name, t) in snapshot(&m) {
        assert!(t.equal(&before[&name]), "{name}");
    }
}

#[test]
fn bad_settings_empty_data_and_non_finite_statistics_are_errors() {
    let m = net(0);
    let d = data(16, 4);
    for (s, name) in [
        (
            BnRecalibration {
                batches: 0,
                ..Default::default()
            },
            "batches",
        ),
        (
            BnRecalibration {
                batch_size: 0,
                ..Default::default()
            },
            "batch_size",
        ),
    ] {
        let e = recalibrate_batch_norm(&m, &d, &transform(), &s).unwrap_err();
        assert!(
            matches!(e, TrainError::Setting { name: n, .. } if n == name),
            "{e}"
        );
    }
    let empty = Dataset::new("empty", INPUT, Vec::new(), Vec::new(), vec!["a".into()]).unwrap();
    let e =
        recalibrate_batch_norm(&m, &empty, &transform(), &BnRecalibration::default()).unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");

    // Infinite weights make the conv output non-finite: an error, and nothing is written.
    tch::no_grad(|| {
        let _ = m
            .tensor("conv.weight")
            .unwrap()
            .shallow_clone()
            .fill_(f64::INFINITY);
    });
    let before = snapshot(&m);
    let e = recalibrate_batch_norm(&m, &d, &transform(), &BnRecalibration::default()).unwrap_err();
    assert!(
        matches!(&e, TrainError::NonFinite { layer, .. } if layer == "bn"),
        "{e}"
    );
    assert!(e.to_string().contains("'bn'"), "{e}");
    for (name, t) in snapshot(&m) {
        assert!(t.equal(&before[&name]), "{name}");
    }
}

/// PyTorch's own recalibration (reset_running_stats, momentum=None, train-mode forwards over
/// the same batches) gives the same running statistics.
#[test]
#[ignore = "needs the reference Python with torch (cargo xtask test runs it)"]
fn matches_pytorch_cumulative_running_stats() {
    let Some(py) = fair_testkit::reference_python("the BatchNorm recalibration cross-check") else {
        return;
    };
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let d = data(96, 5);
    let m = net(2);
    corrupt(&m);
    let weights = dir.path().join("w.safetensors");
    m.save_weights(&weights).unwrap();
    let s = BnRecalibration {
        batches: 5,
        batch_size: 16,
        seed: 11,
    };
    let xs: Vec<(String, Tensor)> = batches(&d, &s)
        .into_iter()
        .enumerate()
        .map(|(i, x)| (format!("x{i}"), x))
        .collect();
    let batch_file = dir.path().join("batches.safetensors");
    fair_runtime::write_safetensors(&batch_file, &xs).unwrap();
    recalibrate_batch_norm(&m, &d, &transform(), &s).unwrap();

    let script = dir.path().join("recal.py");
    std::fs::write(
        &script,
        r#"
import sys, torch, torch.nn as nn
from safetensors.torch import load_file, save_file
class Net(nn.Module):
    def __init__(s):
        super().__init__()
        s.conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        s.bn = nn.BatchNorm2d(4)
        s.fc = nn.Linear(144, 8)
        s.bn1 = nn.BatchNorm1d(8)
        s.head = nn.Linear(8, 2)
    def forward(s, x):
        x = torch.relu(s.bn(s.conv(x))).flatten(1)
        return s.head(torch.relu(s.bn1(s.fc(x))))
torch.set_num_threads(1)
net = Net()
net.load_state_dict(load_file(sys.argv[1]))
for mod in net.modules():
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
        mod.reset_running_stats()
        mod.momentum = None
net.train()
xs = load_file(sys.argv[2])
with torch.no_grad():
    for i in range(len(xs)):
        net(xs[f"x{i}"])
save_file({k: v.contiguous() for k, v in net.state_dict().items()}, sys.argv[3])
"#,
    )
    .unwrap();
    let out_file = dir.path().join("torch.safetensors");
    let out = std::process::Command::new(&py)
        .arg(&script)
        .arg(&weights)
        .arg(&batch_file)
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "recal.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let torch: HashMap<String, Tensor> = fair_runtime::read_safetensors(&out_file, Device::Cpu)
        .unwrap()
        .into_iter()
        .collect();
    for bn in ["bn", "bn1"] {
        for stat in ["running_mean", "running_var"] {
            let name = format!("{bn}.{stat}");
            let diff = fair_testkit::max_abs_diff(m.tensor(&name).unwrap(), &torch[&name]);
            assert!(diff < 1e-5, "{name}: off by {diff}");
        }
        let name = format!("{bn}.num_batches_tracked");
        assert_eq!(
            m.tensor(&name).unwrap().int64_value(&[]),
            torch[&name].int64_value(&[])
        );
    }
}
