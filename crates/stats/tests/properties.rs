//! Metric properties of the distances, on random samples (proptest).

use fair_stats::{
    W1, overlap_curve, random_directions, sliced_wasserstein, stable_argsort, wasserstein_1d,
};
use ndarray::Array2;
use proptest::prelude::*;

fn sample() -> impl Strategy<Value = Vec<f64>> {
    proptest::collection::vec(-1e3f64..1e3, 1..40)
}

fn tol(scale: f64) -> f64 {
    1e-9 * (1.0 + scale)
}

proptest! {
    #[test]
    fn distance_to_itself_is_zero(x in sample()) {
        prop_assert!(wasserstein_1d(&x, &x).unwrap().abs() <= tol(0.0));
    }

    #[test]
    fn symmetric(x in sample(), y in sample()) {
        let d1 = wasserstein_1d(&x, &y).unwrap();
        let d2 = wasserstein_1d(&y, &x).unwrap();
        prop_assert!((d1 - d2).abs() <= tol(d1));
    }

    #[test]
    fn translation_moves_by_its_length(x in sample(), c in -100.0f64..100.0) {
        let y: Vec<f64> = x.iter().map(|v| v + c).collect();
        let d = wasserstein_1d(&x, &y).unwrap();
        prop_assert!((d - c.abs()).abs() <= 1e-9 * (1.0 + x.iter().fold(0.0f64, |m, v| m.max(v.abs()))));
    }

    #[test]
    fn triangle_inequality(x in sample(), y in sample(), z in sample()) {
        let xz = wasserstein_1d(&x, &z).unwrap();
        let xy = wasserstein_1d(&x, &y).unwrap();
        let yz = wasserstein_1d(&y, &z).unwrap();
        prop_assert!(xz <= xy + yz + tol(xz));
    }

    #[test]
    fn invariant_to_sample_order(x in sample(), y in sample(), seed in any::<u64>()) {
        let mut shuffled = x.clone();
        // Deterministic shuffle from the seed.
        let n = shuffled.len();
        let mut s = seed;
        for i in (1..n).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (s >> 33) as usize % (i + 1));
        }
        let d1 = wasserstein_1d(&x, &y).unwrap();
        let d2 = wasserstein_1d(&shuffled, &y).unwrap();
        prop_assert!((d1 - d2).abs() <= tol(d1));
    }

    #[test]
    fn sliced_distance_is_a_metric_on_examples(
        n in 1usize..20, m in 1usize..20, d in 1usize..6, seed in any::<u64>(), shift in -5.0f32..5.0,
    ) {
        let dirs = random_directions(d, 32, seed);
        let x = Array2::from_shape_fn((n, d), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
        let y = Array2::from_shape_fn((m, d), |(i, j)| ((i * 5 + j) % 7) as f32 + shift);
        let xx = sliced_wasserstein(x.view(), x.view(), dirs.view(), W1::Exact).unwrap();
        let xy = sliced_wasserstein(x.view(), y.view(), dirs.view(), W1::Exact).unwrap();
        let yx = sliced_wasserstein(y.view(), x.view(), dirs.view(), W1::Exact).unwrap();
        prop_assert!(xx.abs() < 1e-6);
        prop_assert!((xy - yx).abs() < 1e-6 * (1.0 + xy));
        // A translation by t along the first axis moves the projection on θ by t·θ₀.
        let t = 3.0f32;
        let mut moved = x.clone();
        moved.column_mut(0).mapv_inplace(|v| v + t);
        let want: f64 = dirs.row(0).iter().map(|th| f64::from((t * th).abs())).sum::<f64>() / 32.0;
        let got = sliced_wasserstein(x.view(), moved.view(), dirs.view(), W1::Exact).unwrap();
        prop_assert!((got - want).abs() < 1e-4, "{} vs {}", got, want);
    }

    #[test]
    fn overlap_curve_equals_set_intersection(x in proptest::collection::vec(-10.0f64..10.0, 1..30), y in proptest::collection::vec(-10.0f64..10.0, 30)) {
        let n = x.len();
        let y = &y[..n];
        let a = stable_argsort(&x);
        let mut b = stable_argsort(y);
        b.reverse();
        let curve = overlap_curve(&a, &b);
        for k in 1..=n {
            let direct = a[..k].iter().filter(|u| b[..k].contains(u)).count();
            prop_assert_eq!(curve[k - 1], direct);
        }
        prop_assert_eq!(curve[n - 1], n);
    }
}
