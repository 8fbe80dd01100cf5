//! fair-stats against SciPy and NumPy on fixtures made by `fixtures/make_fixtures.py`.

use fair_stats::{W1, quantile, sliced_wasserstein, wasserstein_1d, wasserstein_1d_quantile_grid};
use ndarray::Array2;
use serde_json::Value;

fn fixtures() -> Value {
    let text = include_str!("fixtures/fixtures.json");
    serde_json::from_str(text).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn matrix(v: &Value) -> Array2<f32> {
    let rows: Vec<Vec<f64>> = v.as_array().unwrap().iter().map(floats).collect();
    Array2::from_shape_fn((rows.len(), rows[0].len()), |(i, j)| rows[i][j] as f32)
}

fn close(ours: f64, theirs: f64, rel: f64) -> bool {
    (ours - theirs).abs() <= rel * theirs.abs().max(f64::MIN_POSITIVE)
}

#[test]
fn exact_w1_equals_scipy_to_1e_6_relative() {
    let f = fixtures();
    let cases = f["one_d"].as_array().unwrap();
    assert_eq!(cases.len(), 60);
    for (i, c) in cases.iter().enumerate() {
        let (a, b) = (floats(&c["a"]), floats(&c["b"]));
        let ours = wasserstein_1d(&a, &b).unwrap();
        let scipy = c["scipy_wasserstein"].as_f64().unwrap();
        assert!(
            close(ours, scipy, 1e-6),
            "case {i} (n={}, m={}): {ours} vs SciPy {scipy}",
            a.len(),
            b.len()
        );
    }
}

#[test]
fn quantiles_and_the_quantile_grid_variant_equal_numpy() {
    let f = fixtures();
    for (i, c) in f["one_d"].as_array().unwrap().iter().enumerate() {
        let a = floats(&c["a"]);
        for (q, want) in floats(&c["levels"])
            .into_iter()
            .zip(floats(&c["numpy_quantiles_a"]))
        {
            let got = quantile(&a, q).unwrap();
            assert!(
                (got - want).abs() <= 1e-9 * want.abs().max(1.0),
                "case {i} q={q}: {got} vs {want}"
            );
        }
        let mut sa = a.clone();
        let mut sb = floats(&c["b"]);
        sa.sort_by(f64::total_cmp);
        sb.sort_by(f64::total_cmp);
        let got = wasserstein_1d_quantile_grid(&sa, &sb);
        let want = c["quantile_grid"].as_f64().unwrap();
        assert!(
            close(got, want, 1e-9) || (got - want).abs() < 1e-12,
            "case {i}: {got} vs {want}"
        );
    }
}

#[test]
fn sliced_w1_equals_scipy_per_direction_mean() {
    let f = fixtures();
    for (i, c) in f["sliced"].as_array().unwrap().iter().enumerate() {
        let (x, y, dirs) = (matrix(&c["x"]), matrix(&c["y"]), matrix(&c["directions"]));
        let ours = sliced_wasserstein(x.view(), y.view(), dirs.view(), W1::Exact).unwrap();
        let want = c["scipy_sliced"].as_f64().unwrap();
        // Inputs were rounded to f32 here, so agreement is to f32 precision.
        assert!(close(ours, want, 1e-5), "case {i}: {ours} vs {want}");
    }
}
