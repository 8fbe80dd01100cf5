//! Measures the bounded pair search against all pairs, and the certified search of 16-bit
//! summaries ([`fair_stats::certified`]) against both, on synthetic units with class
//! structure, and prints a table (fraction of pairs evaluated, times, speed ratios, the
//! certified gap against the exact maximum, and the integer maximum over the codes computed
//! one pair per call against the tiled, dispatched kernel).
//!
//! Each unit is a channel whose map has `D` values (an 8×8 map: D = 64). Each class draws a
//! pattern, a random mean map with entries N(0, sep²); each sample is its class's pattern
//! plus N(0, 1) noise per value, clipped at zero (ReLU). Each sample's map is projected onto
//! P seeded random unit directions and every projection row sorted: a `[P, n]` summary per
//! class, as the U-Score's host engine holds them.
//!
//! ```text
//! cargo run --release -p fair-stats --example pair_search -- [K,n[,sep[,units]]] ...
//! ```
//! Default: 100,8 100,32 1000,8 1000,32 with sep 0.5, four units each for K = 100 and one
//! for K = 1000. Times are wall seconds and, in parentheses, this thread's CPU seconds
//! (robust to other processes on the cores).

use std::time::Instant;

use fair_stats::certified::{Quantizer, certified_max, l1_codes, max_l1_codes};
use fair_stats::{PairSearch, W1, max_pair_distance, project_sorted, random_directions};
use ndarray::Array2;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

const D: usize = 64;
const P: usize = 128;

fn unit(k: usize, n: usize, sep: f64, seed: u64) -> Vec<Array2<f32>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dirs = random_directions(D, P, seed ^ 0x5eed);
    let mut normal = || -> f64 { StandardNormal.sample(&mut rng) };
    (0..k)
        .map(|_| {
            let pattern: Vec<f64> = (0..D).map(|_| sep * normal()).collect();
            let x = Array2::from_shape_fn((n, D), |(_, j)| (pattern[j] + normal()).max(0.0) as f32);
            project_sorted(x.view(), dirs.view())
        })
        .collect()
}

/// CPU seconds of this thread (Linux, from /proc; 0 elsewhere): robust to other processes
/// sharing the cores, unlike wall time. Assumes 100 clock ticks per second.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return 0.0;
    };
    let after = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 of the line (utime, stime) are 11 and 12 after the name.
    (f[11] + f[12]) / 100.0
}

fn main() {
    let mut runs: Vec<(usize, usize, f64, usize)> = std::env::args()
        .skip(1)
        .map(|a| {
            let f: Vec<&str> = a.split(',').collect();
            (
                f[0].parse().expect("K"),
                f[1].parse().expect("n"),
                f.get(2).map_or(0.5, |s| s.parse().expect("sep")),
                f.get(3).map_or(1, |s| s.parse().expect("units")),
            )
        })
        .collect();
    if runs.is_empty() {
        runs = vec![
            (100, 8, 0.5, 4),
            (100, 32, 0.5, 4),
            (1000, 8, 0.5, 1),
            (1000, 32, 0.5, 1),
        ];
    }
    println!(
        "| K | n | sep | units | pairs/unit | evaluated | screened | row-bounded | all s (cpu) | bounded s (cpu) | speed-up (cpu) | certified s (cpu) | certified vs bounded (cpu) | largest gap / U | largest \\|certified − exact\\| / U | codes: pair by pair s (cpu) | codes: tiled s (cpu) | tiled vs pair by pair (cpu) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (k, n, sep, units) in runs {
        let (mut t_all, mut t_bounded) = (0.0, 0.0);
        let (mut c_all, mut c_bounded) = (0.0, 0.0);
        let (mut t_cert, mut c_cert, mut worst_gap, mut worst_err) = (0.0, 0.0, 0.0f64, 0.0f64);
        let (mut t_pair, mut c_pair, mut t_tile, mut c_tile) = (0.0, 0.0, 0.0, 0.0);
        let (mut total, mut evaluated, mut stopped, mut bounded) = (0u64, 0u64, 0u64, 0u64);
        for u in 0..units {
            let classes = unit(k, n, sep, 1000 * k as u64 + 10 * n as u64 + u as u64);
            let views: Vec<_> = classes.iter().map(|c| c.view()).collect();
            let (t, c) = (Instant::now(), cpu_seconds());
            let all = max_pair_distance(&views, W1::Exact, PairSearch::All);
            t_all += t.elapsed().as_secs_f64();
            c_all += cpu_seconds() - c;
            let (t, c) = (Instant::now(), cpu_seconds());
            let b = max_pair_distance(&views, W1::Exact, PairSearch::Bounded);
            t_bounded += t.elapsed().as_secs_f64();
            c_bounded += cpu_seconds() - c;
            assert_eq!(
                all.value.to_bits(),
                b.value.to_bits(),
                "K {k} n {n} unit {u}"
            );
            // Certified: fitted on the first 32 classes (as on a first pack), every class
            // quantized, every pair compared in integers.
            let (t, c) = (Instant::now(), cpu_seconds());
            let q = Quantizer::fit(&views[..views.len().min(32)]);
            let coded: Vec<_> = views.iter().map(|v| q.quantize(*v)).collect();
            let codes: Vec<&[i16]> = coded.iter().map(|(c, _)| c.as_slice()).collect();
            let errors: Vec<f64> = coded.iter().map(|(_, e)| *e).collect();
            let cert = certified_max(&q, &codes, &errors, P, n);
            t_cert += t.elapsed().as_secs_f64();
            c_cert += cpu_seconds() - c;
            assert!(
                (cert.value - all.value).abs() <= cert.gap,
                "K {k} n {n} unit {u}: certified {} ± {} against {}",
                cert.value,
                cert.gap,
                all.value
            );
            // The integer maximum alone: one pair per call (`l1_codes`, the baseline build)
            // against the tiled loop nest dispatched for this CPU (`max_l1_codes`).
            let (t, c) = (Instant::now(), cpu_seconds());
            let mut one_by_one = 0u64;
            for (a, ca) in codes.iter().enumerate() {
                for cb in &codes[a + 1..] {
                    one_by_one = one_by_one.max(l1_codes(ca, cb));
                }
            }
            t_pair += t.elapsed().as_secs_f64();
            c_pair += cpu_seconds() - c;
            let (t, c) = (Instant::now(), cpu_seconds());
            let tiled = max_l1_codes(&codes);
            t_tile += t.elapsed().as_secs_f64();
            c_tile += cpu_seconds() - c;
            assert_eq!(one_by_one, tiled, "K {k} n {n} unit {u}");
            worst_gap = worst_gap.max(cert.gap / all.value);
            worst_err = worst_err.max((cert.value - all.value).abs() / all.value);
            total += b.pairs_total;
            evaluated += b.pairs_evaluated;
            stopped += b.pairs_screened;
            bounded += b.pairs_bounded;
        }
        let f = |x: u64| format!("{:.4}%", 100.0 * x as f64 / total as f64);
        println!(
            "| {k} | {n} | {sep} | {units} | {} | {} | {} | {} | {t_all:.2} ({c_all:.2}) | {t_bounded:.2} ({c_bounded:.2}) | {:.1}× ({:.1}×) | {t_cert:.2} ({c_cert:.2}) | {:.1}× ({:.1}×) | {worst_gap:.2e} | {worst_err:.2e} | {t_pair:.3} ({c_pair:.3}) | {t_tile:.3} ({c_tile:.3}) | {:.1}× ({:.1}×) |",
            total / units as u64,
            f(evaluated),
            f(stopped),
            f(bounded),
            t_all / t_bounded,
            c_all / c_bounded.max(0.01),
            t_bounded / t_cert,
            c_bounded / c_cert.max(0.01),
            t_pair / t_tile,
            c_pair / c_tile.max(0.01)
        );
    }
}
