//! Properties of ToD counts on random scores.

use fair_threshold::{CountOptions, TodCurve, counts_at};
use proptest::prelude::*;

proptest! {
    /// Counts never shrink as α grows, never exceed ⌊0.99·n⌋, and the options always leave at
    /// least `min_keep` units.
    #[test]
    fn counts_grow_with_alpha(
        scores in proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0), 1..120),
        alphas in proptest::collection::vec(0.0f64..=1.0, 2..8),
    ) {
        let (u, r): (Vec<f64>, Vec<f64>) = scores.into_iter().unzip();
        let n = u.len();
        let c = TodCurve::new("l", &u, &r).unwrap();
        let mut alphas = alphas;
        alphas.sort_by(f64::total_cmp);
        let mut last = 0;
        for &a in &alphas {
            let m = c.count_at(a).unwrap();
            prop_assert!(m >= last);
            prop_assert!(m <= (0.99 * n as f64).floor() as usize);
            if m > 0 {
                prop_assert!(c.tod()[m - 1] <= a);
            }
            last = m;
            let kept = n - counts_at(std::slice::from_ref(&c), a, CountOptions::default()).unwrap()[0];
            prop_assert!(kept >= 1);
        }
    }
}
