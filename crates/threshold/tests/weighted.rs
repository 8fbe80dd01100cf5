//! Weighted ToD curves (MAC-aware counts): counts, candidate tolerances and target searches
//! work on them unchanged.

use fair_threshold::{
    CountOptions, ThresholdError, TodCurve, alpha_for_target, candidate_alphas, counts_at,
};
use proptest::prelude::*;

fn layer() -> impl Strategy<Value = (Vec<f64>, Vec<f64>, f64)> {
    (
        proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0), 1..80),
        // Weights from 1/20 to 20, log-uniform.
        -3.0f64..3.0,
    )
        .prop_map(|(s, lw)| {
            let (u, r) = s.into_iter().unzip();
            (u, r, lw.exp())
        })
}

proptest! {
    /// Per layer, the weighted curve's count at α is the unweighted curve's count at
    /// α^(1/w), options applied alike.
    #[test]
    fn weighted_counts_are_counts_at_a_scaled_alpha(
        layers in proptest::collection::vec(layer(), 1..6),
        alpha in 0.0f64..=1.0,
        min_keep in 1usize..4,
        round_to in 1usize..5,
    ) {
        let options = CountOptions { min_keep, round_to };
        let plain: Vec<TodCurve> = layers
            .iter()
            .map(|(u, r, _)| TodCurve::new("l", u, r).unwrap())
            .collect();
        let weighted: Vec<TodCurve> = plain
            .iter()
            .zip(&layers)
            .map(|(c, (_, _, w))| c.weighted(*w).unwrap())
            .collect();
        let got = counts_at(&weighted, alpha, options).unwrap();
        for ((c, (_, _, w)), k) in plain.iter().zip(&layers).zip(&got) {
            let scaled = alpha.powf(1.0 / w);
            let want = counts_at(std::slice::from_ref(c), scaled, options).unwrap()[0];
            // Exactly at a threshold, x^w ≤ α and x ≤ α^(1/w) can round differently.
            let near = c.tod().iter().any(|t| (t - scaled).abs() <= 1e-9);
            prop_assert!(*k == want || near, "w = {}, α^(1/w) = {}: {} vs {}", w, scaled, k, want);
        }
        // Candidate tolerances stay in [0, 1] and every one is a valid α.
        let alphas = candidate_alphas(&weighted);
        prop_assert!(alphas.iter().all(|a| (0.0..=1.0).contains(a)));
        for a in alphas {
            prop_assert!(counts_at(&weighted, a, options).is_ok());
        }
    }
}

#[test]
fn a_target_search_over_weighted_curves_finds_the_smallest_alpha() {
    let u: Vec<f64> = (0..60).map(|i| ((i * 37) % 60) as f64).collect();
    let r: Vec<f64> = (0..60).map(|i| ((i * 11) % 60) as f64).collect();
    // Weighted values stay in [0, 1]: the search stays within α ≤ 1.
    let curves = [
        TodCurve::new("a", &u, &r).unwrap().weighted(0.4).unwrap(),
        TodCurve::new("b", &r, &u).unwrap().weighted(3.0).unwrap(),
    ];
    assert!(
        curves
            .iter()
            .all(|c| c.tod().iter().all(|t| (0.0..=1.0).contains(t)))
    );
    let frac = |c: &[usize]| Ok::<f64, String>(c.iter().sum::<usize>() as f64 / 120.0);
    let t = alpha_for_target(&curves, CountOptions::default(), 0.4, frac).unwrap();
    assert!(t.achieved >= 0.4 && t.setting <= 1.0);
    for &a in candidate_alphas(&curves).iter().filter(|&&a| a < t.setting) {
        let c = counts_at(&curves, a, CountOptions::default()).unwrap();
        assert!(
            frac(&c).unwrap() < 0.4,
            "α = {a} already reaches the target"
        );
    }
    // The heavier layer gives up more units at the found α.
    assert!(t.counts[1] > t.counts[0], "{:?}", t.counts);
}

#[test]
fn weights_never_make_a_reduction_unreachable() {
    let u: Vec<f64> = (0..50).map(|i| ((i * 7) % 50) as f64).collect();
    let r: Vec<f64> = (0..50).map(|i| ((i * 13) % 50) as f64).collect();
    let plain = TodCurve::new("a", &u, &r).unwrap();
    for w in [1e-9, 0.01, 0.5, 1.0, 4.0] {
        let c = plain.weighted(w).unwrap();
        assert_eq!(
            c.count_at(1.0).unwrap(),
            plain.count_at(1.0).unwrap(),
            "w = {w}"
        );
        assert_eq!(
            c.count_at(0.0).unwrap(),
            plain.count_at(0.0).unwrap(),
            "w = {w}"
        );
    }
}

#[test]
fn bad_weights_are_typed_errors() {
    let c = TodCurve::new("fc1", &[0.1, 0.5], &[1.0, 2.0]).unwrap();
    for w in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = c.weighted(w).unwrap_err();
        assert!(matches!(e, ThresholdError::Weight { .. }), "{w}: {e}");
        assert!(e.to_string().contains("fc1"), "{e}");
    }
    assert_eq!(c.weighted(1.0).unwrap(), c, "weight 1 is the identity");
}
