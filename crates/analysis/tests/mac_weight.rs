//! MAC-aware ToD counts (`SelectOptions::mac_weight`): the per-unit MAC costs against a hand
//! computation, γ = 0 as the paper, and γ > 0 moving removals from cheap to costly layers.

use std::sync::Arc;

use fair_analysis::{
    AnalysisError, Goal, LatencyGroup, LatencyKey, LatencyPoint, LatencyTable, MacCost, Method,
    SelectOptions, Selector, WeighBy,
};
use fair_ir::{Graph, GraphBuilder};
use fair_threshold::{CountOptions, TodCurve, counts_at};

/// Seeded pseudo-random numbers in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Random (u, r) per prunable layer.
fn scores(graph: &Graph, seed: u64) -> (Vec<String>, Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let mut rng = Lcg(seed);
    let layers: Vec<String> = graph
        .prunable_layers()
        .iter()
        .map(|l| l.to_string())
        .collect();
    let mut make = || -> Vec<Vec<f64>> {
        layers
            .iter()
            .map(|l| (0..graph.units(l).unwrap()).map(|_| rng.next()).collect())
            .collect()
    };
    let (u, r) = (make(), make());
    (layers, u, r)
}

fn refs(v: &[Vec<f64>]) -> Vec<&[f64]> {
    v.iter().map(Vec::as_slice).collect()
}

fn selector(graph: &Graph, seed: u64, mac_weight: f64) -> Result<Selector, AnalysisError> {
    selector_with(
        graph,
        seed,
        SelectOptions {
            mac_weight,
            ..Default::default()
        },
    )
}

/// A selector over random (u, r) with U also as the ranking.
fn selector_with(
    graph: &Graph,
    seed: u64,
    options: SelectOptions,
) -> Result<Selector, AnalysisError> {
    let (layers, u, r) = scores(graph, seed);
    Selector::new(
        graph.clone(),
        layers,
        &refs(&u),
        &refs(&r),
        &refs(&u),
        options,
    )
}

/// conv1 (3→64, 16×16) → BN → ReLU → pool → conv2 (64→64, 8×8) → ReLU → pool → flatten (4×4)
/// → fc1 (1024→1024) → ReLU → fc2 (1024→10, the output). fc1 holds most parameters but a
/// minority of the MACs (as in VGG and AlexNet).
fn vgg_like() -> Graph {
    let mut b = GraphBuilder::new("vgg-like", "input", vec![3, 16, 16]);
    let x = b.conv("conv1", "input", 64, 3, 1, 1, true).unwrap();
    let x = b.bn2d("bn1", &x).unwrap();
    let x = b.relu("relu1", &x).unwrap();
    let x = b.max_pool("pool1", &x, 2, 2, 0).unwrap();
    let x = b.conv("conv2", &x, 64, 3, 1, 1, true).unwrap();
    let x = b.relu("relu2", &x).unwrap();
    let x = b.max_pool("pool2", &x, 2, 2, 0).unwrap();
    let x = b.flatten("flatten", &x).unwrap();
    let x = b.linear("fc1", &x, 1024, true).unwrap();
    let x = b.relu("relu3", &x).unwrap();
    b.linear("fc2", &x, 10, true).unwrap();
    b.finish().unwrap()
}

/// MACs of one output channel of a k×k conv with `c_in` inputs over an h×w output.
fn conv_per_out(c_in: u64, k: u64, h: u64, w: u64) -> u64 {
    c_in * k * k * h * w
}

/// MACs of one input channel of a k×k conv with `c_out` outputs over an h×w output.
fn conv_per_in(c_out: u64, k: u64, h: u64, w: u64) -> u64 {
    c_out * k * k * h * w
}

#[test]
fn unit_costs_match_a_hand_computation() {
    let graph = vgg_like();
    let sel = selector(&graph, 1, 1.0).unwrap();
    assert_eq!(sel.layers(), ["conv1", "conv2", "fc1"]);
    let want = [
        // Its own 16×16 map, plus one input channel of conv2 (64 outputs over 8×8).
        conv_per_out(3, 3, 16, 16) + conv_per_in(64, 3, 8, 8),
        // Its own 8×8 map, plus 4·4 input features of fc1 (1024 outputs each).
        conv_per_out(64, 3, 8, 8) + 4 * 4 * 1024,
        // One output of fc1 (1024 inputs), plus one input of fc2 (10 outputs).
        1024 + 10,
    ];
    assert_eq!(sel.unit_macs(), want);
    // Relative to the costliest layer's units: that layer keeps α, the others less.
    let max = *want.iter().max().unwrap() as f64;
    for (w, c) in sel.weights().iter().zip(want) {
        let expected = c as f64 / max;
        assert!((w - expected).abs() < 1e-12 * expected, "{w} vs {expected}");
    }
    // γ = 2 squares the ratios; γ = 0 leaves every weight at 1 (the costs are still there).
    let sq = selector(&graph, 1, 2.0).unwrap();
    for (w2, w1) in sq.weights().iter().zip(sel.weights()) {
        assert!((w2 - w1 * w1).abs() < 1e-12 * w2);
    }
    let off = selector(&graph, 1, 0.0).unwrap();
    assert_eq!(off.weights(), [1.0; 3]);
    assert_eq!(off.unit_macs(), want);
}

/// stem (3→8) and conv_b (8→8) meet at an add → conv_c (8→4, stride 2) → flatten → fc
/// (→10): {stem, conv_b} is one residual group, conv_a and conv_c lone layers.
fn residual() -> Graph {
    let mut b = GraphBuilder::new("res", "input", vec![3, 8, 8]);
    let stem = b.conv("stem", "input", 8, 3, 1, 1, false).unwrap();
    let a = b.conv("conv_a", &stem, 8, 3, 1, 1, false).unwrap();
    let bb = b.conv("conv_b", &a, 8, 3, 1, 1, false).unwrap();
    let s = b.add_all("add", &[&stem, &bb]).unwrap();
    let c = b.conv("conv_c", &s, 4, 3, 2, 1, false).unwrap();
    let f = b.flatten("flatten", &c).unwrap();
    b.linear("fc", &f, 10, true).unwrap();
    b.finish().unwrap()
}

#[test]
fn coupled_layers_share_the_cost_of_their_group() {
    // stem (3→8) and conv_b (8→8) meet at an add: one unit of their group removes a channel
    // of both, and the input channels of conv_a and conv_c that read it.
    let graph = residual();
    let sel = selector(&graph, 3, 1.0).unwrap();
    assert_eq!(sel.layers(), ["stem", "conv_a", "conv_b", "conv_c"]);
    let group = conv_per_out(3, 3, 8, 8)
        + conv_per_out(8, 3, 8, 8)
        + conv_per_in(8, 3, 8, 8)
        + conv_per_in(4, 3, 4, 4);
    let conv_a = conv_per_out(8, 3, 8, 8) + conv_per_in(8, 3, 8, 8);
    let conv_c = conv_per_out(8, 3, 4, 4) + 4 * 4 * 10;
    assert_eq!(sel.unit_macs(), [group, conv_a, group, conv_c]);
    assert_eq!(sel.weights()[0], sel.weights()[2]);

    // The other cost measures, by hand: `shared` splits the group's saving between its two
    // scored members; `fraction` multiplies the shared saving by the layer's width.
    let shared = [
        group as f64 / 2.0,
        conv_a as f64,
        group as f64 / 2.0,
        conv_c as f64,
    ];
    let widths = [8.0, 8.0, 8.0, 4.0];
    let fraction: Vec<f64> = shared.iter().zip(widths).map(|(c, n)| c * n).collect();
    for (cost, want) in [
        (
            MacCost::Unit,
            [group, conv_a, group, conv_c].map(|c| c as f64).to_vec(),
        ),
        (MacCost::Shared, shared.to_vec()),
        (MacCost::Fraction, fraction),
    ] {
        let options = SelectOptions {
            mac_weight: 1.0,
            mac_cost: cost,
            ..Default::default()
        };
        let sel = selector_with(&graph, 3, options).unwrap();
        // The MACs per unit do not depend on the measure; the weights are the costs
        // relative to the largest.
        assert_eq!(sel.unit_macs(), [group, conv_a, group, conv_c]);
        let max = want.iter().cloned().fold(0.0, f64::max);
        for ((w, c), l) in sel.weights().iter().zip(&want).zip(sel.layers()) {
            let expected = c / max;
            assert!(
                (w - expected).abs() < 1e-12 * expected,
                "{} cost: layer {l} weight {w}, expected {expected}",
                cost.name()
            );
        }
    }
}

#[test]
fn latency_costs_of_a_coupled_group_come_from_its_one_table_entry() {
    // The residual graph above. The table names the stem+conv_b group by its first member
    // only; each group's half width saves (of 1 s): the group 0.3 s over its upper 4
    // channels, conv_a 0.1 s over 4, conv_c 0.2 s over its upper 2.
    let graph = residual();
    let group = |layer: &str, width: usize, half_seconds: f64| LatencyGroup {
        layers: vec![layer.into()],
        width,
        points: vec![
            LatencyPoint {
                width: 1,
                seconds: half_seconds - 0.05,
            },
            LatencyPoint {
                width: width / 2,
                seconds: half_seconds,
            },
            LatencyPoint {
                width,
                seconds: 1.0,
            },
        ],
        step: None,
        probes: Vec::new(),
    };
    let key = LatencyKey {
        model_digest: String::new(),
        runtime: "hand".into(),
        runtime_version: String::new(),
        threads: 1,
        batch: 1,
    };
    let table = Arc::new(
        LatencyTable::new(
            key,
            1.0,
            vec![
                group("stem", 8, 0.7),
                group("conv_a", 8, 0.9),
                group("conv_c", 4, 0.8),
            ],
        )
        .unwrap(),
    );
    let per_unit = [0.3 / 4.0, 0.1 / 4.0, 0.3 / 4.0, 0.2 / 2.0];
    let members = [2.0, 1.0, 2.0, 1.0];
    let units = [8.0, 8.0, 8.0, 4.0];
    for cost in [MacCost::Unit, MacCost::Shared, MacCost::Fraction] {
        let want: Vec<f64> = (0..4)
            .map(|i| match cost {
                MacCost::Unit => per_unit[i],
                MacCost::Shared => per_unit[i] / members[i],
                MacCost::Fraction => per_unit[i] / members[i] * units[i],
            })
            .collect();
        let options = SelectOptions {
            mac_weight: 1.0,
            mac_cost: cost,
            weigh_by: WeighBy::Latency,
            ..Default::default()
        };
        let sel = selector_with(&graph, 3, options)
            .unwrap()
            .with_latency(table.clone())
            .unwrap();
        let got = sel.latency_costs().unwrap();
        let max = want.iter().cloned().fold(0.0, f64::max);
        for (i, l) in sel.layers().iter().enumerate() {
            assert!(
                (got[i] - want[i]).abs() < 1e-12,
                "{} cost: layer {l} latency cost {}, expected {}",
                cost.name(),
                got[i],
                want[i]
            );
            assert!((sel.weights()[i] - want[i] / max).abs() < 1e-12, "{l}");
        }
        // The coupled members are charged alike.
        assert_eq!(got[0], got[2]);
    }
}

#[test]
fn gamma_zero_reproduces_the_paper_counts_exactly() {
    for graph in [
        vgg_like(),
        fair_zoo::build("resnet20", &[3, 16, 16], 10).unwrap(),
    ] {
        let (_, u, r) = scores(&graph, 11);
        let sel = selector(&graph, 11, 0.0).unwrap();
        let plain: Vec<TodCurve> = sel
            .layers()
            .iter()
            .zip(u.iter().zip(&r))
            .map(|(l, (u, r))| TodCurve::new(l, u, r).unwrap())
            .collect();
        assert_eq!(sel.curves(), plain.as_slice());
        for a in [0.0, 0.05, 0.2, 0.5, 0.8, 1.0] {
            let s = sel.select(Goal::Alpha(a), Method::Tod).unwrap();
            assert_eq!(
                s.counts,
                counts_at(&plain, a, CountOptions::default()).unwrap()
            );
        }
    }
}

/// Scores whose ToD curve is close to m/n in every layer (so counts grow smoothly with α):
/// U_j = j, R_j = frac(j·φ + phase), an equidistributed order, so the top-m R units meet the
/// m lowest-U units in about m²/n places.
fn smooth_selector(graph: &Graph, phase: f64, mac_weight: f64) -> Selector {
    let layers: Vec<String> = graph
        .prunable_layers()
        .iter()
        .map(|l| l.to_string())
        .collect();
    let phi = (5f64.sqrt() - 1.0) / 2.0;
    let u: Vec<Vec<f64>> = layers
        .iter()
        .map(|l| (0..graph.units(l).unwrap()).map(|j| j as f64).collect())
        .collect();
    let r: Vec<Vec<f64>> = u
        .iter()
        .map(|v| v.iter().map(|j| (j * phi + phase).fract()).collect())
        .collect();
    Selector::new(
        graph.clone(),
        layers,
        &refs(&u),
        &refs(&r),
        &refs(&u),
        SelectOptions {
            mac_weight,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn gamma_one_moves_removals_from_the_fc_layer_to_the_convs() {
    let graph = vgg_like();
    for phase in [0.1, 0.4, 0.7] {
        for target in [0.4, 0.5, 0.6, 0.7] {
            let goal = Goal::Macs(target);
            let plain = smooth_selector(&graph, phase, 0.0)
                .select(goal, Method::Tod)
                .unwrap();
            let aware = smooth_selector(&graph, phase, 1.0)
                .select(goal, Method::Tod)
                .unwrap();
            let what = format!("phase {phase}, {goal}");
            assert!(aware.reduction().1 >= target, "{what}");
            let (p, a) = (plain.widths(), aware.widths());
            assert!(
                a["fc1"] > p["fc1"],
                "{what}: fc1 keeps {} vs {}",
                a["fc1"],
                p["fc1"]
            );
            // The convs (whose units cost ~40–50× more MACs than fc1's) give up more units
            // together; which of the two gives them up depends on where the target falls.
            let convs = |w: &fair_analysis::Widths| w["conv1"] + w["conv2"];
            assert!(
                convs(&a) < convs(&p),
                "{what}: the convs keep {} vs {} units",
                convs(&a),
                convs(&p)
            );
            // Fewer parameters go (fc1 holds most of them) for the same MACs.
            assert!(aware.reduction().0 < plain.reduction().0, "{what}");
        }
    }
}

#[test]
fn bad_mac_weights_are_refused() {
    let graph = vgg_like();
    for g in [-0.5, f64::NAN, f64::INFINITY] {
        let e = selector(&graph, 1, g).unwrap_err();
        assert!(
            matches!(
                e,
                AnalysisError::InvalidOption {
                    option: "mac_weight",
                    ..
                }
            ),
            "{g}: {e}"
        );
        assert!(e.to_string().contains("≥ 0"), "{e}");
    }
    // A huge γ cannot overflow (every weight is ≤ 1): the costliest layer keeps weight 1,
    // the others are floored at 1e-9 instead of reaching 0 (a curve cannot be divided by 0).
    let huge = selector(&graph, 1, 1e6).unwrap();
    assert_eq!(huge.weights(), [1e-9, 1.0, 1e-9]);
}
