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
    /// The exact counts reach the target, remove no more than the plain search's or the
    /// least blend step's, lie between the ToD counts at the α found and the candidate below
    /// it, and no layer can give back a unit and still reach the target.
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
        // Minimal: no layer (with the layers of the same curve and count, which give back
        // together) can give back one unit (options applied, not below `lo`) and still
        // reach the target.
        for (j, c) in curves.iter().enumerate() {
            let Some(fewer) = exact.counts[j].checked_sub(1) else { continue };
            let fewer = options.apply(c.units(), fewer);
            if fewer < exact.counts[j] && fewer >= lo[j] {
                let mut counts = exact.counts.clone();
                for k in 0..curves.len() {
                    if exact.counts[k] == exact.counts[j] && curves[k].same_curve(c) {
                        counts[k] = fewer;
                    }
                }
                prop_assert!(
                    cost(&units)(&counts).unwrap() < target,
                    "layer {} could give back a unit: {:?}", j, exact.counts
                );
            }
        }
        // And no more than the least blend step that reaches the target removes.
        let blended = (0..=1000usize)
            .map(|step| -> Vec<usize> {
                lo.iter()
                    .zip(&plain.counts)
                    .map(|(&l, &h)| l + (h - l) * step / 1000)
                    .collect()
            })
            .map(|c| cost(&units)(&c).unwrap())
            .find(|&r| r >= target)
            .expect("the plain counts reach the target");
        prop_assert!(exact.achieved <= blended, "{} > {}", exact.achieved, blended);
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

#[test]
fn coupled_layers_of_one_curve_give_back_together_and_large_steps_are_taken_back() {
    // Three layers: two coupled ones (one curve under two names, 4 units costing 30 each: a
    // transformer's q and k heads) and a fine one (60 units costing 1), on deterministic
    // small-valued curves. The cost model refuses unequal counts on the coupled pair, as a
    // summed group rule's resolution does.
    let mut state = 777u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) % 5) as f64
    };
    let total = 2.0 * 4.0 * 30.0 + 60.0;
    let cost = |c: &[usize]| -> Result<f64, String> {
        if c[0] != c[1] {
            return Err("q and k are coupled".into());
        }
        Ok((30.0 * (c[0] + c[1]) as f64 + c[2] as f64) / total)
    };
    let options = CountOptions::default();
    let units = [4, 4, 60];
    let mut taken_back = 0;
    for _ in 0..40 {
        let mut curve = |name: &str, n: usize| {
            let u: Vec<f64> = (0..n).map(|_| next()).collect();
            let r: Vec<f64> = (0..n).map(|_| next()).collect();
            (name.to_owned(), u, r)
        };
        let (_, cu, cr) = curve("q", 4);
        let (_, fu, fr) = curve("fine", 60);
        let q = TodCurve::new("q", &cu, &cr).unwrap();
        let k = TodCurve::new("k", &cu, &cr).unwrap();
        assert!(q.same_curve(&k) && q != k);
        let curves = [q, k, TodCurve::new("fine", &fu, &fr).unwrap()];
        for t in 1..60 {
            let target = f64::from(t) / 100.0;
            let Ok(plain) = alpha_for_target(&curves, options, target, cost) else {
                continue;
            };
            let exact = alpha_for_target_exact(&curves, options, target, cost).unwrap();
            assert_eq!(
                exact.counts[0], exact.counts[1],
                "{target}: {:?}",
                exact.counts
            );
            assert!(exact.achieved >= target && exact.achieved <= plain.achieved);
            // The least blend step that reaches the target (coupled layers blend alike).
            let alphas = candidate_alphas(&curves);
            let lo: Vec<usize> = match alphas.iter().rposition(|&a| a < plain.setting) {
                Some(b) => counts_at(&curves, alphas[b], options).unwrap(),
                None => units.iter().map(|&n| options.apply(n, 0)).collect(),
            };
            let blended = (0..=1000usize)
                .map(|step| -> Vec<usize> {
                    lo.iter()
                        .zip(&plain.counts)
                        .map(|(&l, &h)| l + (h - l) * step / 1000)
                        .collect()
                })
                .find_map(|c| cost(&c).ok().filter(|&r| r >= target))
                .unwrap();
            assert!(
                exact.achieved <= blended,
                "{target}: {} > {blended}",
                exact.achieved
            );
            if exact.achieved < blended {
                taken_back += 1;
            }
            // Nothing more can be given back: the fine layer alone, or both coupled layers.
            for give in [vec![2], vec![0, 1]] {
                let mut c = exact.counts.clone();
                if give.iter().any(|&j| c[j] == lo[j]) {
                    continue;
                }
                for &j in &give {
                    c[j] -= 1;
                }
                assert!(
                    cost(&c).unwrap() < target,
                    "{target}: {:?} → {c:?}",
                    exact.counts
                );
            }
        }
    }
    assert!(
        taken_back > 0,
        "no target where the blend overshot: the test checks nothing"
    );
}
