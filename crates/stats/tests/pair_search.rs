//! The bounded pair search returns the all-pairs maximum bit for bit, on random and
//! adversarial data, and falls back to all pairs where its bounds do not apply.

use fair_stats::{
    PairFallback, PairMax, PairSearch, W1, max_pair_distance, sliced_from_sorted, wasserstein_1d,
};
use ndarray::{Array2, ArrayView2};
use proptest::prelude::*;

/// Sorts every row ascending (the summaries the U-Score holds).
fn sorted(mut m: Array2<f32>) -> Array2<f32> {
    for mut row in m.rows_mut() {
        let mut v = row.to_vec();
        v.sort_by(f32::total_cmp);
        row.assign(&ndarray::Array1::from(v));
    }
    m
}

fn views(classes: &[Array2<f32>]) -> Vec<ArrayView2<'_, f32>> {
    classes.iter().map(|c| c.view()).collect()
}

/// Both searches; asserts they agree bit for bit and with an independent loop.
fn both(classes: &[Array2<f32>], method: W1) -> (PairMax, PairMax) {
    let v = views(classes);
    let all = max_pair_distance(&v, method, PairSearch::All);
    let bounded = max_pair_distance(&v, method, PairSearch::Bounded);
    // The all-pairs definition, written out.
    let mut want = 0.0f64;
    for a in 0..v.len() {
        for b in a + 1..v.len() {
            want = want.max(sliced_from_sorted(v[a], v[b], method));
        }
    }
    assert_eq!(all.value.to_bits(), want.to_bits(), "all pairs");
    assert_eq!(
        bounded.value.to_bits(),
        all.value.to_bits(),
        "bounded {} vs all {} ({bounded:?})",
        bounded.value,
        all.value
    );
    let k = v.len() as u64;
    assert_eq!(all.pairs_total, k * k.saturating_sub(1) / 2);
    assert_eq!(all.pairs_evaluated, all.pairs_total);
    assert!(bounded.pairs_evaluated <= bounded.pairs_total);
    (all, bounded)
}

/// How a generated unit is bent to be hard on the bounds.
#[derive(Debug, Clone, Copy)]
enum Twist {
    None,
    /// Values from {0, 1, 2}: many equal distances.
    Ties,
    /// Every class the same.
    Identical,
    /// One class far away.
    Outlier,
    /// Same means, different spreads: the mean-difference bound is 0 while the distances are
    /// not, and the quantile functions cross.
    Crossing,
    /// Values near f32's largest.
    Huge,
    /// Subnormal values.
    Tiny,
    /// Every class the same but one value of one class moved by one ulp.
    OneUlp,
    /// Rows centred on 0 and scaled by 0, 0.5, 1 or 1.5 per class: no mean differences to
    /// find the farthest pair by, and flat classes against which the block bounds are tight.
    Centred,
}

fn twist() -> impl Strategy<Value = Twist> {
    prop_oneof![
        Just(Twist::None),
        Just(Twist::Ties),
        Just(Twist::Identical),
        Just(Twist::Outlier),
        Just(Twist::Crossing),
        Just(Twist::Huge),
        Just(Twist::Tiny),
        Just(Twist::OneUlp),
        Just(Twist::Centred),
    ]
}

/// K classes of `[P, n]`, sorted rows, from a flat pool of uniform values. P reaches past
/// 16 rows (so the early exit's row groups and suffix bounds are used) and n includes 16, 20
/// and 32 (blocks of 4 values).
fn unit() -> impl Strategy<Value = (Vec<Array2<f32>>, Twist)> {
    let n = prop_oneof![1usize..18, Just(16usize), Just(20), Just(32)];
    (2usize..24, 1usize..40, n, twist()).prop_flat_map(|(k, p, n, tw)| {
        (
            proptest::collection::vec(-100.0f32..100.0, k * p * n),
            Just((k, p, n, tw)),
        )
            .prop_map(|(pool, (k, p, n, tw))| {
                let classes = (0..k)
                    .map(|c| {
                        let m = Array2::from_shape_fn((p, n), |(r, i)| {
                            let x = pool[(c * p + r) * n + i];
                            match tw {
                                Twist::None => x,
                                Twist::Ties => (x.abs() as u32 % 3) as f32,
                                Twist::Identical | Twist::OneUlp => pool[r * n + i],
                                Twist::Outlier => x + if c == k / 2 { 5e3 } else { 0.0 },
                                Twist::Crossing => {
                                    let s = (c + 1) as f32;
                                    let q = i as f32 - (n as f32 - 1.0) / 2.0;
                                    (r as f32) + s * q * if c % 2 == 0 { 1.0 } else { -1.0 }
                                }
                                Twist::Huge => x * 3e36,
                                Twist::Tiny => x * 1e-41,
                                Twist::Centred => {
                                    let row = &pool[(c * p + r) * n..(c * p + r + 1) * n];
                                    let mean = row.iter().sum::<f32>() / n as f32;
                                    (x - mean) * (c % 4) as f32 * 0.5
                                }
                            }
                        });
                        let mut m = sorted(m);
                        if matches!(tw, Twist::OneUlp) && c == k - 1 {
                            let v = m[[0, 0]];
                            m[[0, 0]] = f32::from_bits(v.to_bits() + 1);
                            m = sorted(m);
                        }
                        m
                    })
                    .collect();
                (classes, tw)
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn bounded_equals_all_bit_for_bit((classes, _tw) in unit()) {
        both(&classes, W1::Exact);
        // With equal sizes the package's quantile grid is the same function.
        both(&classes, W1::QuantileGrid);
    }

    #[test]
    fn unequal_sizes_fall_back_to_all_pairs(
        (classes, _tw) in unit(),
        extra in 1usize..4,
    ) {
        let mut classes = classes;
        let (p, n) = classes[0].dim();
        classes[0] = sorted(Array2::from_shape_fn((p, n + extra), |(r, i)| (r * 7 + i) as f32));
        for method in [W1::Exact, W1::QuantileGrid] {
            let (_, bounded) = both(&classes, method);
            prop_assert_eq!(bounded.fallback, Some(PairFallback::UnequalShapes));
            prop_assert_eq!(bounded.pairs_evaluated, bounded.pairs_total);
        }
    }
}

/// The values agree with an independent computation: the mean of SciPy-checked 1-D
/// distances over rows, for the pair a hand count says is the farthest.
#[test]
fn the_value_is_the_farthest_pair_distance() {
    // Class c: row r holds c·10 + r + {0, 1, 2}: pair (0, 3) differs by 30 everywhere.
    let classes: Vec<Array2<f32>> = (0..4)
        .map(|c| Array2::from_shape_fn((3, 3), |(r, i)| (c * 10 + r + i) as f32))
        .collect();
    let (_, bounded) = both(&classes, W1::Exact);
    let row =
        |c: usize, r: usize| -> Vec<f64> { (0..3).map(|i| (c * 10 + r + i) as f64).collect() };
    let want: f64 = (0..3)
        .map(|r| wasserstein_1d(&row(0, r), &row(3, r)).unwrap())
        .sum::<f64>()
        / 3.0;
    assert_eq!(want, 30.0);
    assert_eq!(bounded.value, 30.0);
}

/// On classes spread along a line, the bounds rule out most pairs.
#[test]
fn separated_classes_skip_most_pairs() {
    let k = 60;
    let classes: Vec<Array2<f32>> = (0..k)
        .map(|c| {
            sorted(Array2::from_shape_fn((16, 8), |(r, i)| {
                let wobble = ((c * 31 + r * 7 + i * 3) % 11) as f32 * 0.1;
                // Classes at 0, 1, 4, 9, ...: a few far ones.
                (c * c) as f32 + wobble + r as f32
            }))
        })
        .collect();
    let (all, bounded) = both(&classes, W1::Exact);
    assert_eq!(bounded.fallback, None);
    assert!(
        bounded.pairs_evaluated * 20 < all.pairs_total,
        "evaluated {} of {}",
        bounded.pairs_evaluated,
        all.pairs_total
    );
    assert!(bounded.pairs_bounded < all.pairs_total, "{bounded:?}");
}

#[test]
fn non_finite_values_fall_back_to_all_pairs() {
    let mut classes: Vec<Array2<f32>> = (0..4)
        .map(|c| Array2::from_shape_fn((2, 3), |(r, i)| (c + r + i) as f32))
        .collect();
    classes[2][[1, 1]] = f32::INFINITY;
    let v = views(&classes);
    let all = max_pair_distance(&v, W1::Exact, PairSearch::All);
    let bounded = max_pair_distance(&v, W1::Exact, PairSearch::Bounded);
    assert_eq!(bounded.value.to_bits(), all.value.to_bits());
    assert_eq!(bounded.fallback, Some(PairFallback::NonFinite));
    assert_eq!(all.fallback, None);
}

#[test]
fn strided_views_give_the_same_maximum() {
    // Transposed storage: the rows of each view are not contiguous.
    let classes: Vec<Array2<f32>> = (0..20)
        .map(|c| {
            sorted(Array2::from_shape_fn((5, 6), |(r, i)| {
                ((c * 13 + r * 5 + i * 17) % 23) as f32 + i as f32
            }))
        })
        .collect();
    let transposed: Vec<Array2<f32>> = classes
        .iter()
        .map(|c| c.t().as_standard_layout().into_owned())
        .collect();
    let strided: Vec<ArrayView2<f32>> = transposed.iter().map(|t| t.t()).collect();
    assert!(strided[0].as_slice().is_none());
    let want = max_pair_distance(&views(&classes), W1::Exact, PairSearch::All);
    for search in PairSearch::VARIANTS {
        let got = max_pair_distance(&strided, W1::Exact, search);
        assert_eq!(got.value.to_bits(), want.value.to_bits(), "{search}");
    }
}

#[test]
fn fewer_than_two_classes_give_zero() {
    let one = [Array2::from_elem((2, 2), 1.0f32)];
    for search in PairSearch::VARIANTS {
        let r = max_pair_distance(&views(&one), W1::Exact, search);
        assert_eq!((r.value, r.pairs_total, r.pairs_evaluated), (0.0, 0, 0));
        let r = max_pair_distance(&[], W1::Exact, search);
        assert_eq!(r.pairs_total, 0);
    }
}

#[test]
fn names_parse_and_display() {
    for (search, name) in PairSearch::VARIANTS.into_iter().zip(PairSearch::NAMES) {
        assert_eq!(search.to_string(), name);
        assert_eq!(name.parse::<PairSearch>(), Ok(search));
    }
    assert_eq!(PairSearch::default(), PairSearch::Bounded);
    let e = "certified".parse::<PairSearch>().unwrap_err().to_string();
    assert!(
        e.contains("certified") && e.contains("'all' or 'bounded'"),
        "{e}"
    );
}

/// Class-structured units as the U-Score meets them: per class a random pattern in an 8×8
/// map, samples = pattern + noise, clipped at zero, projected on 32 directions and sorted.
/// Both searches agree bit for bit, and the bounded one computes few pairs in full.
#[test]
fn class_structured_units_agree_and_skip_most_pairs() {
    use fair_stats::{project_sorted, random_directions};
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    for (seed, n, sep) in [
        (1u64, 8usize, 0.5f64),
        (2, 32, 0.5),
        (3, 8, 2.0),
        (4, 5, 1.0),
    ] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dirs = random_directions(64, 32, seed);
        let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
        let classes: Vec<Array2<f32>> = (0..120)
            .map(|_| {
                let pattern: Vec<f64> = (0..64).map(|_| sep * normal()).collect();
                let x = Array2::from_shape_fn((n, 64), |(_, j)| {
                    (pattern[j] + normal()).max(0.0) as f32
                });
                project_sorted(x.view(), dirs.view())
            })
            .collect();
        let (all, bounded) = both(&classes, W1::Exact);
        assert_eq!(all.pairs_total, 7140);
        assert!(
            bounded.pairs_evaluated * 100 < all.pairs_total,
            "seed {seed}: {bounded:?}"
        );
    }
}
