//! The kernels of `channel_shuffle`, `slice` and `layer_norm2d` against their definitions,
//! written out element by element (PyTorch's `ChannelShuffle`, `x[:, start:end]` and
//! torchvision's ConvNeXt `LayerNorm2d`).

use fair_ir::{ChannelShuffle, Graph, Input, LayerNorm2d, Node, Op, Slice};
use fair_runtime::{Mode, Model};
use tch::{Device, Kind, Tensor};

/// `input → op` on `[c, h, w]`, run on a random batch of 2: (input, output, model).
fn run(op: Op, shape: [usize; 3], seed: u64) -> (Tensor, Tensor, Model) {
    let g = Graph::new(
        "one",
        vec![
            Node {
                name: "input".into(),
                inputs: vec![],
                op: Input::new(shape.to_vec()).into(),
            },
            Node {
                name: "op".into(),
                inputs: vec!["input".into()],
                op,
            },
        ],
    )
    .unwrap();
    let m = Model::new(g, Device::Cpu, seed).unwrap();
    tch::manual_seed(seed as i64);
    let [c, h, w] = shape.map(|d| d as i64);
    let x = Tensor::randn([2, c, h, w], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
    let y = tch::no_grad(|| m.forward(&x, Mode::Eval)).unwrap();
    (x, y, m)
}

#[test]
fn channel_shuffle_moves_channel_j_from_j_mod_g_times_c_over_g_plus_j_over_g() {
    for (c, groups) in [(12usize, 3usize), (16, 2), (6, 1), (8, 8)] {
        let (x, y, _) = run(ChannelShuffle { groups }.into(), [c, 3, 4], 1);
        assert_eq!(y.size(), x.size());
        for j in 0..c {
            let from = (j % groups) * (c / groups) + j / groups;
            assert!(
                y.select(1, j as i64).equal(&x.select(1, from as i64)),
                "C = {c}, groups = {groups}: output {j} is not input {from}"
            );
        }
    }
}

#[test]
fn slice_takes_the_channel_range_of_images_and_features() {
    let (x, y, _) = run(Slice { start: 3, end: 7 }.into(), [8, 2, 5], 2);
    assert_eq!(y.size(), [2, 4, 2, 5]);
    assert!(y.equal(&x.narrow(1, 3, 4)));
    // On features (after a flatten): the first input is [C·H·W].
    let g = Graph::from_toml_str(
        r#"
        name = "features"
        [[nodes]]
        name = "input"
        op = { type = "input", shape = [2, 3, 3] }
        [[nodes]]
        name = "flatten"
        op = { type = "flatten" }
        [[nodes]]
        name = "tail"
        op = { type = "slice", start = 10, end = 18 }
        "#,
    )
    .unwrap();
    let m = Model::new(g, Device::Cpu, 0).unwrap();
    let x = Tensor::randn([2, 2, 3, 3], (Kind::Float, Device::Cpu));
    let y = tch::no_grad(|| m.forward(&x, Mode::Eval)).unwrap();
    assert!(y.equal(&x.flatten(1, -1).narrow(1, 10, 8)));
}

#[test]
fn layer_norm2d_normalises_each_pixel_over_its_channels() {
    for affine in [true, false] {
        let op = LayerNorm2d {
            eps: 1e-6,
            affine,
            ..LayerNorm2d::new(6)
        };
        let (x, y, m) = run(op.into(), [6, 3, 5], 3);
        let (x64, y64) = (x.to_kind(Kind::Double), y.to_kind(Kind::Double));
        let want = Tensor::zeros_like(&x64);
        // Per (n, h, w): mean and biased variance over the 6 channels, by hand.
        for n in 0..2 {
            for h in 0..3 {
                for w in 0..5 {
                    let v: Vec<f64> = (0..6).map(|c| x64.double_value(&[n, c, h, w])).collect();
                    let mean = v.iter().sum::<f64>() / 6.0;
                    let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 6.0;
                    for (c, a) in v.iter().enumerate() {
                        let _ = want
                            .get(n)
                            .get(c as i64)
                            .get(h)
                            .get(w)
                            .fill_((a - mean) / (var + 1e-6).sqrt());
                    }
                }
            }
        }
        if affine {
            // Random weights and biases so a wrong axis would show.
            let wt = Tensor::randn([6], (Kind::Float, Device::Cpu));
            let bs = Tensor::randn([6], (Kind::Float, Device::Cpu));
            tch::no_grad(|| {
                m.tensor("op.weight").unwrap().shallow_clone().copy_(&wt);
                m.tensor("op.bias").unwrap().shallow_clone().copy_(&bs);
            });
            let y2 = tch::no_grad(|| m.forward(&x, Mode::Eval)).unwrap();
            let want2 = &want * wt.to_kind(Kind::Double).view([1, 6, 1, 1])
                + bs.to_kind(Kind::Double).view([1, 6, 1, 1]);
            let d = (y2.to_kind(Kind::Double) - want2)
                .abs()
                .max()
                .double_value(&[]);
            eprintln!("layer_norm2d (random affine): max |Δ| = {d:.2e}");
            assert!(d < 1e-5, "{d}");
            // A fresh one is the plain normalisation (weight 1, bias 0).
            let d = (&y64 - &want).abs().max().double_value(&[]);
            assert!(d < 1e-5, "{d}");
        } else {
            assert!(m.named_tensors().is_empty());
            let d = (&y64 - &want).abs().max().double_value(&[]);
            eprintln!("layer_norm2d (no affine): max |Δ| = {d:.2e}");
            assert!(d < 1e-5, "{d}");
        }
        // Train mode computes the same (no running statistics).
        let t = tch::no_grad(|| m.forward(&x, Mode::Train)).unwrap();
        let e = tch::no_grad(|| m.forward(&x, Mode::Eval)).unwrap();
        assert!(t.equal(&e));
    }
}
