//! The kernels of the token ops against their definitions, written out element by element:
//! `tokens` (`x.flatten(2).transpose(1, 2)`), `token_mean` (`x.mean(1)`), `layer_norm`
//! over the last axis (`torch.nn.LayerNorm(F)`), a linear layer on every token, and
//! torchvision's ViT token ops: `class_token` (`torch.cat([cls.expand(n, -1, -1), x], 1)`),
//! `position_embedding` (`x + pos`), `token_select` (`x[:, i]`) and `token_range`
//! (`x[:, start:end]`).

use fair_ir::{
    ClassToken, Graph, Input, LayerNorm, Linear, Node, Op, PositionEmbedding, TokenMean,
    TokenRange, TokenSelect, Tokens,
};
use fair_runtime::{Mode, Model};
use tch::{Device, Kind, Tensor};

/// `input → op` on `shape`, run on a random batch of 2: (input, output, model).
fn run(op: Op, shape: &[usize], seed: u64) -> (Tensor, Tensor, Model) {
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
    let mut dims = vec![2i64];
    dims.extend(shape.iter().map(|&d| d as i64));
    let x = Tensor::randn(dims.as_slice(), (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
    let y = tch::no_grad(|| m.forward(&x, Mode::Eval)).unwrap();
    (x, y, m)
}

#[test]
fn tokens_put_pixel_h_w_at_token_h_times_w_plus_w() {
    let (x, y, _) = run(Tokens {}.into(), &[5, 3, 4], 1);
    assert_eq!(y.size(), [2, 12, 5]);
    for n in 0..2 {
        for c in 0..5 {
            for h in 0..3 {
                for w in 0..4 {
                    assert_eq!(
                        y.double_value(&[n, h * 4 + w, c]),
                        x.double_value(&[n, c, h, w]),
                        "n {n} c {c} h {h} w {w}"
                    );
                }
            }
        }
    }
}

#[test]
fn token_mean_averages_each_feature_over_the_tokens() {
    let (x, y, _) = run(TokenMean {}.into(), &[4, 3], 2);
    assert_eq!(y.size(), [2, 3]);
    for n in 0..2 {
        for f in 0..3 {
            let mean = (0..4).map(|t| x.double_value(&[n, t, f])).sum::<f64>() / 4.0;
            assert!((y.double_value(&[n, f]) - mean).abs() < 1e-5);
        }
    }
}

#[test]
fn layer_norm_normalises_each_token_over_its_features() {
    let (x, _, m) = run(LayerNorm::new(6).into(), &[3, 6], 3);
    // Random weights and biases so a wrong axis would show.
    let wt = Tensor::randn([6], (Kind::Float, Device::Cpu));
    let bs = Tensor::randn([6], (Kind::Float, Device::Cpu));
    tch::no_grad(|| {
        m.tensor("op.weight").unwrap().shallow_clone().copy_(&wt);
        m.tensor("op.bias").unwrap().shallow_clone().copy_(&bs);
    });
    let y = tch::no_grad(|| m.forward(&x, Mode::Eval)).unwrap();
    for n in 0..2 {
        for t in 0..3 {
            let v: Vec<f64> = (0..6).map(|f| x.double_value(&[n, t, f])).collect();
            let mean = v.iter().sum::<f64>() / 6.0;
            let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 6.0;
            for (f, a) in v.iter().enumerate() {
                let want = (a - mean) / (var + 1e-5).sqrt() * wt.double_value(&[f as i64])
                    + bs.double_value(&[f as i64]);
                let got = y.double_value(&[n, t, f as i64]);
                assert!(
                    (got - want).abs() < 1e-5,
                    "n {n} t {t} f {f}: {got} vs {want}"
                );
            }
        }
    }
    // Without affine tensors, on features [F].
    let op = LayerNorm {
        affine: false,
        ..LayerNorm::new(4)
    };
    let (x, y, m) = run(op.into(), &[4], 4);
    assert!(m.named_tensors().is_empty());
    for n in 0..2 {
        let v: Vec<f64> = (0..4).map(|f| x.double_value(&[n, f])).collect();
        let mean = v.iter().sum::<f64>() / 4.0;
        let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 4.0;
        for (f, a) in v.iter().enumerate() {
            let want = (a - mean) / (var + 1e-5).sqrt();
            assert!((y.double_value(&[n, f as i64]) - want).abs() < 1e-5);
        }
    }
}

#[test]
fn a_linear_layer_on_tokens_maps_every_token_alone() {
    let (x, y, m) = run(Linear::new(3, 2).into(), &[4, 3], 5);
    assert_eq!(y.size(), [2, 4, 2]);
    let w = m.tensor("op.weight").unwrap();
    let b = m.tensor("op.bias").unwrap();
    for n in 0..2 {
        for t in 0..4 {
            for h in 0..2 {
                let want = b.double_value(&[h])
                    + (0..3)
                        .map(|f| w.double_value(&[h, f]) * x.double_value(&[n, t, f]))
                        .sum::<f64>();
                assert!((y.double_value(&[n, t, h]) - want).abs() < 1e-5);
            }
        }
    }
}

/// Sets the node's weight to random values (its default is zeros), and runs again.
fn with_random_weight(x: &Tensor, m: &Model, shape: &[i64]) -> (Tensor, Tensor) {
    let w = Tensor::randn(shape, (Kind::Float, Device::Cpu));
    tch::no_grad(|| m.tensor("op.weight").unwrap().shallow_clone().copy_(&w));
    (w, tch::no_grad(|| m.forward(x, Mode::Eval)).unwrap())
}

#[test]
fn class_token_puts_its_weight_first_in_every_sample() {
    let (x, _, m) = run(ClassToken { features: 3 }.into(), &[4, 3], 4);
    let (w, y) = with_random_weight(&x, &m, &[3]);
    assert_eq!(y.size(), [2, 5, 3]);
    for n in 0..2 {
        for f in 0..3 {
            assert_eq!(y.double_value(&[n, 0, f]), w.double_value(&[f]));
            for t in 0..4 {
                assert_eq!(y.double_value(&[n, t + 1, f]), x.double_value(&[n, t, f]));
            }
        }
    }
}

#[test]
fn position_embedding_adds_its_weight_to_every_sample() {
    let op = PositionEmbedding {
        tokens: 4,
        features: 3,
    };
    let (x, _, m) = run(op.into(), &[4, 3], 5);
    let (w, y) = with_random_weight(&x, &m, &[4, 3]);
    assert_eq!(y.size(), [2, 4, 3]);
    for n in 0..2 {
        for t in 0..4 {
            for f in 0..3 {
                let want = x.double_value(&[n, t, f]) + w.double_value(&[t, f]);
                assert!((y.double_value(&[n, t, f]) - want).abs() < 1e-6);
            }
        }
    }
}

#[test]
fn token_select_takes_one_token_of_every_sample() {
    for index in [0, 2] {
        let (x, y, _) = run(TokenSelect { index }.into(), &[4, 3], 6);
        assert_eq!(y.size(), [2, 3]);
        for n in 0..2 {
            for f in 0..3 {
                assert_eq!(
                    y.double_value(&[n, f]),
                    x.double_value(&[n, index as i64, f])
                );
            }
        }
    }
}

#[test]
fn token_range_keeps_tokens_start_to_end_of_every_sample() {
    for (start, end) in [(1, 4), (0, 2), (3, 4)] {
        let (x, y, _) = run(TokenRange { start, end }.into(), &[4, 3], 7);
        assert_eq!(y.size(), [2, (end - start) as i64, 3]);
        for n in 0..2 {
            for t in start..end {
                for f in 0..3 {
                    assert_eq!(
                        y.double_value(&[n, (t - start) as i64, f]),
                        x.double_value(&[n, t as i64, f])
                    );
                }
            }
        }
    }
}
