//! The attention kernel against an independent computation: per head, libtorch's own
//! `scaled_dot_product_attention` (math implementation) on the head's channels, and a
//! plain loop over one query for the softmax.

use fair_ir::{Attention, GraphBuilder};
use fair_runtime::{Mode, Model};
use tch::{Device, Kind, Tensor};

#[test]
fn attention_is_per_head_softmax_of_q_k_over_root_d_times_v() {
    // Input tokens read by q, k, v linears so the three inputs differ.
    let (t, e, d) = (6i64, 12i64, 4i64);
    let mut b = GraphBuilder::new("attn", "input", vec![t as usize, e as usize]);
    for l in ["q", "k", "v"] {
        b.linear(l, "input", e as usize, true).unwrap();
    }
    b.add("attn", Attention::new(d as usize).into(), &["q", "k", "v"])
        .unwrap();
    let g = b.finish().unwrap();
    let m = Model::new(g, Device::Cpu, 3).unwrap();
    tch::manual_seed(3);
    let x = Tensor::randn([2, t, e], (Kind::Float, Device::Cpu)) * 2.0;
    let taps = ["q", "k", "v", "attn"];
    let out = tch::no_grad(|| m.forward_with_taps(&x, Mode::Eval, &taps)).unwrap();
    let tap = |name: &str| out.taps[name].shallow_clone();
    let (q, k, v, y) = (tap("q"), tap("k"), tap("v"), tap("attn"));
    assert_eq!(y.size(), [2, t, e]);
    for h in 0..e / d {
        let part = |x: &Tensor| x.narrow(2, h * d, d);
        let want = Tensor::scaled_dot_product_attention(
            &part(&q),
            &part(&k),
            &part(&v),
            None::<Tensor>,
            0.0,
            false,
            None,
            false,
        );
        let got = part(&y);
        let diff = (&got - &want).abs().max().double_value(&[]);
        assert!(diff <= 1e-5, "head {h}: max |Δ| = {diff}");
    }
    // One output value written out: sample 1, token 2, channel 5 (head 1).
    let (n, i, c, h) = (1, 2, 5, 1);
    let dot = |a: i64, b: i64| -> f64 {
        (0..d)
            .map(|j| q.double_value(&[a, i, h * d + j]) * k.double_value(&[a, b, h * d + j]))
            .sum::<f64>()
            / (d as f64).sqrt()
    };
    let logits: Vec<f64> = (0..t).map(|b| dot(n, b)).collect();
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
    let want: f64 = (0..t)
        .map(|b| (logits[b as usize] - max).exp() / z * v.double_value(&[n, b, c]))
        .sum();
    let got = y.double_value(&[n, i, c]);
    assert!((got - want).abs() <= 1e-5, "{got} vs {want}");
}
