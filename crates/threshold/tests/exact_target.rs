//! `alpha_for_target_exact`: counts that land on a target between two ToD solutions.

use fair_threshold::{
    CountOptions, TodCurve, alpha_for_target, alpha_for_target_exact, candidate_alphas, counts_at,
};
use proptest::prelude::*;

/// A toy cost model: each layer's units cost a different amount (layer i: i + 1 per unit).
fn cost(units: &[usize]) -> impl Fn(&[usize]) -> Result<f64, String> + '_ {
    move |counts: &[usize]| {
        let total: usize = units.iter().enumerate().map(|(i, n)| (i + 1) * n).sum();
        let removed: usize = counts.iter().enumerate().map(|(i, c)| (i + 1) * c).sum();
        Ok(removed as f64 / total as f64)
    }
}

fn layer() -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
    // Few distinct values: many layers change their counts at the same α, as ToD's fractions
    // do on real layers.
    proptest::collection::vec((0u8..4, 0u8..4), 4..40)
        .prop_map(|s| s.into_iter().map(|(u, r)| (u as f64, r as f64)).unzip())
}

proptest! {
    /// The blended counts reach the target, remove no more than the plain search's, lie
    /// between the ToD counts at the α found and the candidate below it, and one blend step
    /// less falls short.
    #[test]
    fn exact_counts_reach_the_target_between_two_tod_solutions(
        layers in proptest::collection::vec(layer(), 1..6),
        target in 0.05f64..0.6,
    ) {
        let curves: Vec<TodCurve> = layers
            .iter()
            .map(|(u, r)| TodCurve::new("l", u, r).unwrap())
            .collect();
        let units: Vec<usize> = curves.iter().map(TodCurve::units).collect();
        let options = CountOptions::default();
        let Ok(plain) = alpha_for_target(&curves, options, target, cost(&units)) else {
            // Unreachable targets fail alike.
            prop_assert!(alpha_for_target_exact(&curves, options, target, cost(&units)).is_err());
            return Ok(());
        };
        let exact = alpha_for_target_exact(&curves, options, target, cost(&units)).unwrap();
        prop_assert_eq!(exact.setting, plain.setting);
        prop_assert!(exact.achieved >= target, "{} < {}", exact.achieved, target);
        prop_assert!(exact.achieved <= plain.achieved);
        prop_assert_eq!(cost(&units)(&exact.counts).unwrap(), exact.achieved);
        let alphas = candidate_alphas(&curves);
        let below = alphas.iter().rposition(|&a| a < plain.setting);
        let lo = match below {
            Some(b) => counts_at(&curves, alphas[b], options).unwrap(),
            None => units.iter().map(|&n| options.apply(n, 0)).collect(),
        };
        for ((l, e), h) in lo.iter().zip(&exact.counts).zip(&plain.counts) {
            prop_assert!(l <= e && e <= h, "{} ≤ {} ≤ {} fails", l, e, h);
        }
        // Minimal: one blend step (1/1000) less falls short of the target.
        if exact.counts != plain.counts || exact.achieved < plain.achieved {
            let step = (0..=1000usize)
                .find(|&s| {
                    let c: Vec<usize> = lo
                        .iter()
                        .zip(&plain.counts)
                        .map(|(&l, &h)| l + (h - l) * s / 1000)
                        .collect();
                    c == exact.counts
                })
                .expect("the exact counts are a blend step");
            if step > 0 {
                let fewer: Vec<usize> = lo
                    .iter()
                    .zip(&plain.counts)
                    .map(|(&l, &h)| l + (h - l) * (step - 1) / 1000)
                    .collect();
                prop_assert!(cost(&units)(&fewer).unwrap() < target);
            }
        }
    }
}

#[test]
fn jumps_past_the_target_are_cut_back_to_within_one_unit_per_layer() {
    // Deterministic small-valued curves (a linear congruential generator): count the cases
    // where the plain search overshoots by more than 5 points.
    let mut state = 12345u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % 4) as f64
    };
    let mut overshoots = 0;
    for _ in 0..200 {
        let curves: Vec<TodCurve> = (0..3)
            .map(|_| {
                let u: Vec<f64> = (0..30).map(|_| next()).collect();
                let r: Vec<f64> = (0..30).map(|_| next()).collect();
                TodCurve::new("l", &u, &r).unwrap()
            })
            .collect();
        let units = [30, 30, 30];
        let options = CountOptions::default();
        let Ok(plain) = alpha_for_target(&curves, options, 0.3, cost(&units)) else {
            continue;
        };
        let exact = alpha_for_target_exact(&curves, options, 0.3, cost(&units)).unwrap();
        if plain.achieved > 0.35 {
            overshoots += 1;
            // One unit more per layer than needed at most: (1 + 2 + 3) / 180 of the cost.
            assert!(
                exact.achieved >= 0.3 && exact.achieved <= 0.3 + 6.0 / 180.0,
                "plain {} → exact {}",
                plain.achieved,
                exact.achieved
            );
        }
    }
    assert!(
        overshoots > 0,
        "no case overshoots: the test checks nothing"
    );
}
