//! The `summed` group rule: one normalised score per coupled group, one curve, one count and
//! one removal set; layers alone in their group as under the package rule.

use std::collections::{BTreeSet, HashMap};

use fair_analysis::{Goal, GroupRule, Method, SelectOptions, Selector};
use fair_ir::Graph;
use fair_threshold::{CountOptions, TodCurve, lowest};

/// Seeded pseudo-random scores (u, r, rank) per prunable layer; each layer's scores are
/// scaled by 10^(i mod 4), so summing without normalising would let one member dominate.
fn scores(graph: &Graph, seed: u64) -> (Vec<String>, [Vec<Vec<f64>>; 3]) {
    let mut state = seed.wrapping_add(0x9e3779b97f4a7c15);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let layers: Vec<String> = graph
        .prunable_layers()
        .iter()
        .map(|l| l.to_string())
        .collect();
    let mut make = || -> Vec<Vec<f64>> {
        layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let scale = 10f64.powi((i % 4) as i32);
                (0..graph.units(l).unwrap())
                    .map(|_| next() * scale)
                    .collect()
            })
            .collect()
    };
    let (u, r, k) = (make(), make(), make());
    (layers, [u, r, k])
}

fn refs(v: &[Vec<f64>]) -> Vec<&[f64]> {
    v.iter().map(Vec::as_slice).collect()
}

fn selector(graph: &Graph, rule: GroupRule, s: &[Vec<Vec<f64>>; 3], layers: &[String]) -> Selector {
    Selector::new(
        graph.clone(),
        layers.to_vec(),
        &refs(&s[0]),
        &refs(&s[1]),
        &refs(&s[2]),
        SelectOptions {
            rule,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Σ over members of s / mean|s|, written out independently of the library.
fn normalised_sum(members: &[usize], s: &[Vec<f64>]) -> Vec<f64> {
    let n = s[members[0]].len();
    (0..n)
        .map(|j| {
            members
                .iter()
                .map(|&i| {
                    let mean = s[i].iter().map(|v| v.abs()).sum::<f64>() / n as f64;
                    s[i][j] / mean
                })
                .sum()
        })
        .collect()
}

fn removed(sel: &fair_analysis::Selection, layer: &str, units: usize) -> BTreeSet<usize> {
    let kept = sel.resolution.kept_units(layer).unwrap();
    (0..units).filter(|u| !kept.contains(u)).collect()
}

#[test]
fn summed_groups_remove_the_lowest_units_of_their_normalised_sums() {
    for (net, shape) in [("resnet20", [3, 16, 16]), ("resnet50", [3, 32, 32])] {
        let graph = fair_zoo::build(net, &shape, 10).unwrap();
        let groups = fair_analysis::analyze(&graph, &[]).unwrap();
        for seed in [1, 2] {
            let (layers, s) = scores(&graph, seed);
            let index: HashMap<&str, usize> = layers
                .iter()
                .enumerate()
                .map(|(i, l)| (l.as_str(), i))
                .collect();
            let summed = selector(&graph, GroupRule::Summed, &s, &layers);
            let package = selector(&graph, GroupRule::Package, &s, &layers);
            let mut coupled_seen = 0;
            for alpha in [0.1, 0.3, 0.6] {
                let a = summed.select(Goal::Alpha(alpha), Method::Tod).unwrap();
                let b = package.select(Goal::Alpha(alpha), Method::Tod).unwrap();
                let requests = summed.requests(&a.counts);
                for g in groups.groups().iter().filter(|g| g.is_prunable()) {
                    let what = format!("{net} seed {seed} α {alpha} {:?}", g.layers);
                    let members: Vec<usize> = g.layers.iter().map(|l| index[l.as_str()]).collect();
                    if members.len() == 1 {
                        // Alone: exactly the package rule's plan.
                        let l = &g.layers[0];
                        assert_eq!(removed(&a, l, g.units), removed(&b, l, g.units), "{what}");
                        continue;
                    }
                    coupled_seen += 1;
                    let [u, r, k] = [0, 1, 2].map(|c| normalised_sum(&members, &s[c]));
                    let curve = TodCurve::new("group", &u, &r).unwrap();
                    let count =
                        CountOptions::default().apply(g.units, curve.count_at(alpha).unwrap());
                    let want: BTreeSet<usize> = lowest(&k, count).into_iter().collect();
                    // Every member asks for the same set, which is what the group removes.
                    for l in &g.layers {
                        let asked: BTreeSet<usize> = requests
                            .remove
                            .get(l)
                            .map(|v| v.iter().copied().collect())
                            .unwrap_or_default();
                        assert_eq!(asked, want, "{what}: {l} asks");
                        assert_eq!(removed(&a, l, g.units), want, "{what}: {l} removes");
                    }
                }
            }
            assert!(coupled_seen > 0, "{net} has coupled groups");
        }
    }
}

#[test]
fn summed_counts_agree_within_a_group_and_targets_are_met() {
    let graph = fair_zoo::build("resnet20", &[3, 16, 16], 10).unwrap();
    let (layers, s) = scores(&graph, 9);
    let sel = selector(&graph, GroupRule::Summed, &s, &layers);
    let groups = fair_analysis::analyze(&graph, &[]).unwrap();
    for goal in [Goal::Macs(0.5), Goal::Params(0.4)] {
        let got = sel.select(goal, Method::Tod).unwrap();
        let (p, m) = got.reduction();
        assert!(match goal {
            Goal::Macs(t) => m >= t,
            Goal::Params(t) => p >= t,
            Goal::Alpha(_) | Goal::Latency(_) => unreachable!(),
        });
        for g in groups.groups().iter().filter(|g| g.layers.len() > 1) {
            let counts: BTreeSet<usize> = g
                .layers
                .iter()
                .map(|l| got.counts[layers.iter().position(|x| x == l).unwrap()])
                .collect();
            assert_eq!(counts.len(), 1, "{goal}: {:?} counts {counts:?}", g.layers);
        }
    }
    assert_eq!(GroupRule::Summed.name(), "summed");
}
