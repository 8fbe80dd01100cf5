//! Latency targets (`Goal::Latency`) on a latency table: the table's JSON round trip, the
//! counts a latency target picks against a MACs target, and the unreachable target's error.

use std::sync::Arc;

use fair_analysis::{
    AnalysisError, Goal, LatencyGroup, LatencyKey, LatencyModel, LatencyPoint, LatencyTable,
    MacCost, Method, SelectOptions, Selector, WeighBy,
};
use fair_ir::Graph;

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

/// flatten (64 features) → layers.0 (64→128) → ReLU → layers.2 (128→64) → ReLU →
/// layers.4 (64→10, the output).
fn mlp() -> Graph {
    fair_zoo::mlp(vec![1, 8, 8], &[128, 64], 10).unwrap()
}

fn selector(graph: &Graph) -> Selector {
    selector_with(graph, SelectOptions::default())
}

/// [`selector`] with `options`.
fn selector_with(graph: &Graph, options: SelectOptions) -> Selector {
    let mut rng = Lcg(7);
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
    let u_ref: Vec<&[f64]> = u.iter().map(Vec::as_slice).collect();
    let r_ref: Vec<&[f64]> = r.iter().map(Vec::as_slice).collect();
    Selector::new(graph.clone(), layers, &u_ref, &r_ref, &u_ref, options).unwrap()
}

fn key() -> LatencyKey {
    LatencyKey {
        model_digest: "sha256:test".into(),
        runtime: "synthetic".into(),
        runtime_version: String::new(),
        threads: 1,
        batch: 1,
    }
}

fn point(width: usize, seconds: f64) -> LatencyPoint {
    LatencyPoint { width, seconds }
}

/// A table in which narrowing layers.0 saves nothing and narrowing layers.2 saves up to
/// 0.8 s of the 1 s, linearly from 64 channels (1 s) down to 8 (0.2 s): unlike its MACs,
/// which fall with either layer.
fn table() -> LatencyTable {
    LatencyTable::new(
        key(),
        1.0,
        vec![
            LatencyGroup {
                layers: vec!["layers.0".into()],
                width: 128,
                points: vec![point(8, 1.0), point(64, 1.0), point(128, 1.0)],
                step: None,
                probes: Vec::new(),
            },
            LatencyGroup {
                layers: vec!["layers.2".into()],
                width: 64,
                points: vec![point(8, 0.2), point(32, 0.6), point(64, 1.0)],
                step: None,
                probes: Vec::new(),
            },
        ],
    )
    .unwrap()
}

/// The table's prediction by hand: only layers.2's width matters; 1 s at 64, linear down to
/// 0.2 s at 8 (0.6 s at 32), flat below 8.
fn by_hand(width2: usize) -> f64 {
    let w = width2.max(8) as f64;
    if w >= 32.0 {
        0.6 + (w - 32.0) / 32.0 * 0.4
    } else {
        0.2 + (w - 8.0) / 24.0 * 0.4
    }
}

#[test]
fn a_table_round_trips_through_its_json_file() {
    let t = LatencyTable {
        noisy: true,
        ..table()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latency.json");
    t.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    // Written as version 2 (steps and probes), and a version 1 file still loads.
    assert!(
        text.contains("\"format\": \"fair-pruner-latency-table/2\""),
        "{text}"
    );
    let v1 = text.replace("fair-pruner-latency-table/2", "fair-pruner-latency-table/1");
    let back = LatencyTable::from_json(&v1).unwrap();
    assert_eq!(back.format, "fair-pruner-latency-table/1");
    assert_eq!(back.groups, t.groups);
    assert!(text.contains("\"runtime\": \"synthetic\""), "{text}");
    let back = LatencyTable::load(&path).unwrap();
    assert_eq!(back, t);
    assert!(back.noisy);
    assert_eq!(back.groups[1].points[1], point(32, 0.6));
    // A table missing a key, or of another format, is refused with the file named.
    std::fs::write(
        &path,
        text.replace("fair-pruner-latency-table/2", "other/9"),
    )
    .unwrap();
    let e = LatencyTable::load(&path).unwrap_err().to_string();
    assert!(e.contains("latency.json") && e.contains("other/9"), "{e}");
}

#[test]
fn the_table_interpolates_and_adds_group_changes() {
    let t = table();
    assert_eq!(t.full_seconds(), 1.0);
    assert!((t.cost("layers.2", 48).unwrap() - (0.8 - 1.0)).abs() < 1e-12);
    assert!((t.cost("layers.2", 20).unwrap() - (0.4 - 1.0)).abs() < 1e-12);
    assert_eq!(t.cost("layers.0", 30).unwrap(), 0.0);
    let e = t.cost("layers.4", 5).unwrap_err().to_string();
    assert!(e.contains("layers.4"), "{e}");
    // The graph check: a width that is not the model's is refused.
    let graph = mlp();
    t.check_graph(&graph).unwrap();
    let mut wrong = t.clone();
    wrong.groups[0].width = 100;
    wrong.groups[0].points[2].width = 100;
    let e = wrong.check_graph(&graph).unwrap_err().to_string();
    assert!(e.contains("'layers.0' has 128"), "{e}");
}

#[test]
fn a_latency_target_picks_other_counts_than_a_macs_target_and_meets_the_table() {
    let graph = mlp();
    let s = selector(&graph).with_latency(Arc::new(table())).unwrap();
    let target = 0.3;
    let by_latency = s.select(Goal::Latency(target), Method::Tod).unwrap();
    let by_macs = s.select(Goal::Macs(target), Method::Tod).unwrap();
    assert_ne!(by_latency.counts, by_macs.counts);
    let w = by_latency.widths();
    let achieved = 1.0 - by_hand(w["layers.2"]);
    assert!(achieved >= target, "latency removed {achieved} < {target}");
    let predicted = s.predicted_latency(&by_latency).unwrap().unwrap();
    assert!((predicted - by_hand(w["layers.2"])).abs() < 1e-12);
    // The MACs target at the same fraction lands elsewhere on the table.
    let mac_latency = by_hand(by_macs.widths()["layers.2"]);
    assert!(
        (1.0 - mac_latency - achieved).abs() > 1e-9,
        "latency {achieved} under both goals"
    );
    // Uniform counts meet a latency target too.
    let uniform = s.select(Goal::Latency(target), Method::Uniform).unwrap();
    assert!(1.0 - by_hand(uniform.widths()["layers.2"]) >= target);
    assert_eq!(Goal::Latency(0.5).label(), "latency-0.5");
    assert_eq!(Goal::Latency(0.5).flag(), "target-latency");
}

#[test]
fn an_unreachable_latency_target_states_the_reachable_range() {
    let graph = mlp();
    let s = selector(&graph).with_latency(Arc::new(table())).unwrap();
    // The most ToD removes (α = 1), predicted by hand from the table.
    let most = s.select(Goal::Alpha(1.0), Method::Tod).unwrap();
    let best = 1.0 - by_hand(most.widths()["layers.2"]);
    assert!(best < 0.85, "{best}");
    let e = s.select(Goal::Latency(0.85), Method::Tod).unwrap_err();
    match &e {
        AnalysisError::LatencyUnreachable {
            target,
            best: got,
            full_seconds,
        } => {
            assert_eq!(*target, 0.85);
            assert!((got - best).abs() < 1e-9, "{got} vs {best}");
            assert_eq!(*full_seconds, 1.0);
        }
        other => panic!("expected LatencyUnreachable, got {other:?}"),
    }
    let text = e.to_string();
    let range = format!("reachable range is 0% to {:.1}%", best * 100.0);
    assert!(text.contains("85.0%") && text.contains(&range), "{text}");
    assert!(text.contains("1000.000 ms"), "{text}");
}

#[test]
fn a_latency_target_needs_a_table_covering_every_prunable_group() {
    let graph = mlp();
    let e = selector(&graph)
        .select(Goal::Latency(0.3), Method::Tod)
        .unwrap_err()
        .to_string();
    assert!(e.contains("latency model"), "{e}");
    let mut partial = table();
    partial.groups.remove(0);
    let e = selector(&graph)
        .with_latency(Arc::new(partial))
        .unwrap_err()
        .to_string();
    assert!(e.contains("layers.0") && e.contains("no figures"), "{e}");
    assert!(Goal::Latency(1.0).check().is_err());
}

#[test]
fn the_probed_widths_sit_just_below_a_multiple_of_sixteen() {
    use fair_analysis::step_probes;
    assert_eq!(step_probes(96), Some((96, vec![88, 92, 94, 95])));
    assert_eq!(step_probes(100), Some((96, vec![88, 92, 94, 95])));
    assert_eq!(step_probes(24), Some((16, vec![8, 12, 14, 15])));
    assert_eq!(step_probes(12), Some((8, vec![4, 6, 7])));
    assert_eq!(step_probes(3), Some((2, vec![1])));
    assert_eq!(step_probes(1), None);
}

/// An interval with no spread.
fn exact(s: f64) -> (f64, f64) {
    (s, s)
}

#[test]
fn the_fast_step_is_the_largest_step_whose_off_widths_are_measurably_slower() {
    use fair_analysis::fast_step;
    let probes = |s: [f64; 4]| -> Vec<(usize, (f64, f64))> {
        [88, 92, 94, 95].into_iter().zip(s.map(exact)).collect()
    };
    let reference = exact(1.0);
    // Every probe slower than 96: none is a multiple of 16.
    assert_eq!(fast_step(96, reference, &probes([1.2, 1.2, 1.2, 1.2])), 16);
    // 88 (a multiple of 8) is faster, the others slower.
    assert_eq!(fast_step(96, reference, &probes([0.9, 1.2, 1.2, 1.2])), 8);
    assert_eq!(fast_step(96, reference, &probes([0.9, 0.95, 1.2, 1.2])), 4);
    assert_eq!(fast_step(96, reference, &probes([0.9, 0.95, 0.97, 1.2])), 2);
    // Narrower is faster everywhere (a linear runtime), or no faster (a flat one): 1.
    assert_eq!(
        fast_step(96, reference, &probes([0.9, 0.95, 0.97, 0.99])),
        1
    );
    assert_eq!(fast_step(96, reference, &probes([1.0, 1.0, 1.0, 1.0])), 1);
    // 94 not slower: not a step of 4 or more; 95 (odd) still is: 2.
    assert_eq!(fast_step(96, reference, &probes([0.9, 1.2, 0.97, 1.2])), 2);
    // The odd width 95 not slower: 1, whatever the others.
    assert_eq!(fast_step(96, reference, &probes([1.2, 1.2, 1.2, 0.99])), 1);
    // With noise: the same step-8 runtime whose penalty (+0.03 s) is inside the spread
    // (reference 0.98..1.02, probes 1.01..1.05) decides nothing; a penalty above the
    // spread (probes 1.05..1.09) is measured.
    let noisy = |lo: f64, hi: f64| -> Vec<(usize, (f64, f64))> {
        vec![
            (88, (0.88, 0.92)),
            (92, (lo, hi)),
            (94, (lo, hi)),
            (95, (lo, hi)),
        ]
    };
    assert_eq!(fast_step(96, (0.98, 1.02), &noisy(1.01, 1.05)), 1);
    assert_eq!(fast_step(96, (0.98, 1.02), &noisy(1.05, 1.09)), 8);
    // A reference of 8 channels: steps above 8 are not tried.
    let small = [(4, exact(1.2)), (6, exact(1.2)), (7, exact(1.2))];
    assert_eq!(fast_step(8, reference, &small), 8);
}

/// A group of layers.2 (64 channels): 0.2 s at width 1, then 0.3 s at 8, 0.4 s at 16, 0.6 s
/// at 32, 1.0 s at 64.
fn stepped(step: Option<usize>, probes: &[(usize, f64)]) -> LatencyGroup {
    LatencyGroup {
        layers: vec!["layers.2".into()],
        width: 64,
        points: [(1, 0.2), (8, 0.3), (16, 0.4), (32, 0.6), (64, 1.0)]
            .into_iter()
            .map(|(w, s)| point(w, s))
            .collect(),
        step,
        probes: probes.iter().map(|&(w, s)| point(w, s)).collect(),
    }
}

#[test]
fn a_width_off_the_fast_step_reads_the_figure_of_the_next_multiple_above() {
    let g = stepped(Some(16), &[]);
    assert_eq!(g.fast_step(), 16);
    // 20 interpolates to 0.45 s between 16 and 32, but runs as 32 does: 0.6 s.
    assert_eq!(g.seconds_at(20), 0.6);
    assert_eq!(g.seconds_at(17), 0.6);
    assert_eq!(g.seconds_at(48), 0.8);
    assert_eq!(g.seconds_at(60), 1.0);
    assert_eq!(g.seconds_at(8), 0.4);
    assert_eq!(g.seconds_at(1), 0.4);
    assert_eq!(g.fast_width(33), 48);
    assert_eq!(g.fast_width(63), 64);
    // Without a step: linear between the points, as before.
    let plain = stepped(None, &[]);
    assert_eq!(plain.fast_step(), 1);
    assert_eq!(plain.seconds_at(20), 0.45);
    assert_eq!(plain.seconds_at(1), 0.2);
    // No step recorded but probes below 64: derived from them (exact figures).
    let probed = stepped(None, &[(56, 0.9), (60, 1.3), (62, 1.3), (63, 1.3)]);
    assert_eq!(probed.fast_step(), 8);
    assert_eq!(probed.seconds_at(20), 0.5);
    let linear = stepped(None, &[(56, 0.9), (60, 0.95), (62, 0.97), (63, 0.99)]);
    assert_eq!(linear.fast_step(), 1);
    // A recorded step wins over the probes.
    assert_eq!(
        stepped(Some(2), &[(56, 0.9), (60, 1.3), (62, 1.3), (63, 1.3)]).fast_step(),
        2
    );
}

#[test]
fn a_table_without_steps_still_loads_and_a_table_with_them_round_trips() {
    // A table file as written before fast steps were measured: no step, no probes.
    let old = r#"{"format": "fair-pruner-latency-table/1",
        "key": {"model_digest": "", "runtime": "my-phone", "threads": 1, "batch": 1},
        "full_seconds": 1.0,
        "groups": [{"layers": ["layers.2"], "width": 64,
                    "points": [{"width": 8, "seconds": 0.3}, {"width": 64, "seconds": 1.0}]}]}"#;
    let t = LatencyTable::from_json(old).unwrap();
    assert_eq!(t.groups[0].step, None);
    assert!(t.groups[0].probes.is_empty());
    assert_eq!(t.step("layers.2"), 1);
    // Written without the new fields.
    let text = t.to_json_string();
    assert!(!text.contains("step") && !text.contains("probes"), "{text}");
    // With them: written and read back; the model reports the step.
    let t = LatencyTable::new(
        key(),
        1.0,
        vec![stepped(
            Some(8),
            &[(56, 0.9), (60, 1.3), (62, 1.3), (63, 1.3)],
        )],
    )
    .unwrap();
    let text = t.to_json_string();
    assert!(
        text.contains("\"step\": 8") && text.contains("\"probes\""),
        "{text}"
    );
    let back = LatencyTable::from_json(&text).unwrap();
    assert_eq!(back, t);
    assert_eq!(back.step("layers.2"), 8);
    assert_eq!(back.step("layers.0"), 1);
    // A probe at the full width, or a step of 0, is refused.
    let e = LatencyTable::new(key(), 1.0, vec![stepped(None, &[(64, 1.3)])])
        .unwrap_err()
        .to_string();
    assert!(e.contains("probe"), "{e}");
    let e = LatencyTable::new(key(), 1.0, vec![stepped(Some(0), &[])])
        .unwrap_err()
        .to_string();
    assert!(e.contains("step must be"), "{e}");
    // The probe's range is named as the widths it may have.
    let e = LatencyTable::new(key(), 1.0, vec![stepped(None, &[(64, 1.3)])])
        .unwrap_err()
        .to_string();
    assert!(e.contains("from 1 to 63"), "{e}");
}

#[test]
fn a_step_or_probes_a_table_cannot_mean_are_refused_naming_the_group() {
    let refused = |g: LatencyGroup| {
        LatencyTable::new(key(), 1.0, vec![g])
            .unwrap_err()
            .to_string()
    };
    // A step that is not 1, 2, 4, 8 or 16.
    for step in [3, 12, 32] {
        let e = refused(stepped(Some(step), &[]));
        assert!(
            e.contains("layers.2") && e.contains(&format!("found {step}")),
            "{e}"
        );
    }
    // A step larger than the width: a group of 8 channels with a step of 16.
    let narrow = LatencyGroup {
        width: 8,
        points: vec![point(1, 0.5), point(8, 1.0)],
        ..stepped(Some(16), &[])
    };
    let e = refused(narrow);
    assert!(
        e.contains("layers.2") && e.contains("step 16") && e.contains("width 8"),
        "{e}"
    );
    // Probes without a step whose widest is not one below an even width: the expected
    // probes of a 64-channel group are named.
    let e = refused(stepped(None, &[(56, 0.9), (60, 1.3), (62, 1.3)]));
    assert!(
        e.contains("layers.2") && e.contains("62") && e.contains("56, 60, 62, 63 below 64"),
        "{e}"
    );
    // With a step they are only a record: accepted; and the steps that mean something are.
    LatencyTable::new(
        key(),
        1.0,
        vec![stepped(Some(8), &[(56, 0.9), (60, 1.3), (62, 1.3)])],
    )
    .unwrap();
    for step in [1, 2, 4, 8, 16] {
        LatencyTable::new(key(), 1.0, vec![stepped(Some(step), &[])]).unwrap();
    }
}

/// [`table`] with fast steps: layers.0 (128 channels) saves up to 0.3 s linearly (0.7 s at
/// width 8) in steps of `step0`, and layers.2 (64) is [`table`]'s in steps of `step2`.
fn table_with_steps(step0: Option<usize>, step2: Option<usize>) -> LatencyTable {
    LatencyTable::new(
        key(),
        1.0,
        vec![
            LatencyGroup {
                layers: vec!["layers.0".into()],
                width: 128,
                points: vec![point(8, 0.7), point(128, 1.0)],
                step: step0,
                probes: Vec::new(),
            },
            LatencyGroup {
                layers: vec!["layers.2".into()],
                width: 64,
                points: vec![point(8, 0.2), point(32, 0.6), point(64, 1.0)],
                step: step2,
                probes: Vec::new(),
            },
        ],
    )
    .unwrap()
}

/// The table's prediction by hand for [`table_with_steps`] at widths on the steps: the
/// fraction `layers.0` leaves times the one `layers.2` leaves (the full latency is 1).
fn by_hand_both(width0: usize, width2: usize) -> f64 {
    let w0 = width0.max(8) as f64;
    let saved0 = 0.3 * (128.0 - w0) / 120.0;
    (1.0 - saved0) * by_hand(width2)
}

fn on_step(width: usize, step: usize, full: usize) -> bool {
    width.is_multiple_of(step) || width == full
}

#[test]
fn a_latency_target_keeps_widths_on_the_fast_steps_and_meets_the_table() {
    let graph = mlp();
    let plain = selector(&graph)
        .with_latency(Arc::new(table_with_steps(None, None)))
        .unwrap();
    let stepped = selector(&graph)
        .with_latency(Arc::new(table_with_steps(Some(16), Some(8))))
        .unwrap();
    let mut off_step_without = 0;
    for target in [0.1, 0.2, 0.3, 0.4, 0.5] {
        for method in [Method::Tod, Method::Uniform] {
            let w = plain
                .select(Goal::Latency(target), method)
                .unwrap()
                .widths();
            if !(on_step(w["layers.0"], 16, 128) && on_step(w["layers.2"], 8, 64)) {
                off_step_without += 1;
            }
            let sel = stepped.select(Goal::Latency(target), method).unwrap();
            let w = sel.widths();
            let (w0, w2) = (w["layers.0"], w["layers.2"]);
            assert!(
                on_step(w0, 16, 128),
                "{target} {method:?}: layers.0 at {w0}"
            );
            assert!(on_step(w2, 8, 64), "{target} {method:?}: layers.2 at {w2}");
            let removed = 1.0 - by_hand_both(w0, w2);
            assert!(
                removed >= target - 1e-12,
                "{target} {method:?}: {removed} removed at {w0}, {w2}"
            );
            // The prediction is the table's figure at those widths.
            let predicted = stepped.predicted_latency(&sel).unwrap().unwrap();
            assert!((predicted - by_hand_both(w0, w2)).abs() < 1e-12);
            // The counts asked for are on the steps too (one layer per group here).
            assert_eq!(128 - sel.counts[0], w0);
            assert_eq!(64 - sel.counts[1], w2);
        }
    }
    assert!(
        off_step_without > 0,
        "the scores give off-step widths without steps, or the test shows nothing"
    );
    // An α or a MACs target ignores the steps.
    let a = stepped.select(Goal::Alpha(0.3), Method::Tod).unwrap();
    let b = plain.select(Goal::Alpha(0.3), Method::Tod).unwrap();
    assert_eq!(a.counts, b.counts);
    let a = stepped.select(Goal::Macs(0.3), Method::Tod).unwrap();
    let b = plain.select(Goal::Macs(0.3), Method::Tod).unwrap();
    assert_eq!(a.counts, b.counts);
    let w = a.widths();
    assert!(
        !(on_step(w["layers.0"], 16, 128) && on_step(w["layers.2"], 8, 64)),
        "the MACs target lands on the steps anyway, or the test shows nothing: {w:?}"
    );
}

#[test]
fn round_to_and_the_fast_step_combine_into_their_least_common_multiple() {
    let graph = mlp();
    let base = selector(&graph);
    let layers = base.layers().to_vec();
    // The same scores as `selector` (same seed), with round_to `round_to`.
    let with_round_to = |round_to: usize| {
        let options = SelectOptions {
            counting: fair_threshold::CountOptions {
                min_keep: 1,
                round_to,
            },
            ..base.options().clone()
        };
        let mut rng = Lcg(7);
        let mut make = || -> Vec<Vec<f64>> {
            layers
                .iter()
                .map(|l| (0..graph.units(l).unwrap()).map(|_| rng.next()).collect())
                .collect()
        };
        let (u, r) = (make(), make());
        let u_ref: Vec<&[f64]> = u.iter().map(Vec::as_slice).collect();
        let r_ref: Vec<&[f64]> = r.iter().map(Vec::as_slice).collect();
        Selector::new(
            graph.clone(),
            layers.clone(),
            &u_ref,
            &r_ref,
            &u_ref,
            options,
        )
        .unwrap()
        .with_latency(Arc::new(table_with_steps(Some(16), Some(8))))
        .unwrap()
    };
    let s = with_round_to(3);
    let steps_only = with_round_to(1);
    let (mut below_full, mut on_step_not_lcm) = (0, 0);
    for target in [0.1, 0.2, 0.3, 0.4] {
        let w = s
            .select(Goal::Latency(target), Method::Tod)
            .unwrap()
            .widths();
        let (w0, w2) = (w["layers.0"], w["layers.2"]);
        // lcm(3, 16) = 48, lcm(3, 8) = 24.
        assert!(on_step(w0, 48, 128), "{target}: layers.0 at {w0}");
        assert!(on_step(w2, 24, 64), "{target}: layers.2 at {w2}");
        assert!(1.0 - by_hand_both(w0, w2) >= target - 1e-12);
        below_full += usize::from(w0 < 128) + usize::from(w2 < 64);
        // Without round_to: on the steps, and here and there not on the lcm.
        let w = steps_only
            .select(Goal::Latency(target), Method::Tod)
            .unwrap()
            .widths();
        let (w0, w2) = (w["layers.0"], w["layers.2"]);
        assert!(on_step(w0, 16, 128) && on_step(w2, 8, 64), "{w0}, {w2}");
        on_step_not_lcm += usize::from(!on_step(w0, 48, 128)) + usize::from(!on_step(w2, 24, 64));
    }
    assert!(below_full > 0, "every width full: the lcm is not tested");
    assert!(
        on_step_not_lcm > 0,
        "the steps alone already give multiples of the lcm: round_to is not tested"
    );
}

#[test]
fn the_intersection_rule_is_snapped_to_the_step_too() {
    use fair_analysis::GroupRule;
    let graph = fair_zoo::build("resnet20", &[3, 16, 16], 10).unwrap();
    let layers: Vec<String> = graph
        .prunable_layers()
        .iter()
        .map(|l| l.to_string())
        .collect();
    let mut rng = Lcg(11);
    let mut make = || -> Vec<Vec<f64>> {
        layers
            .iter()
            .map(|l| (0..graph.units(l).unwrap()).map(|_| rng.next()).collect())
            .collect()
    };
    let (u, r) = (make(), make());
    let u_ref: Vec<&[f64]> = u.iter().map(Vec::as_slice).collect();
    let r_ref: Vec<&[f64]> = r.iter().map(Vec::as_slice).collect();
    let groups = fair_analysis::analyze(&graph, &[]).unwrap();
    let prunable: Vec<_> = groups
        .groups()
        .iter()
        .filter(|g| g.is_prunable() && g.units >= 2)
        .collect();
    // Every group saves up to its share of half the latency, linearly.
    let share = 0.5 / prunable.len() as f64;
    let table = |step: Option<usize>| {
        LatencyTable::new(
            key(),
            1.0,
            prunable
                .iter()
                .map(|g| LatencyGroup {
                    layers: g.layers.clone(),
                    width: g.channels(),
                    points: vec![point(1, 1.0 - share), point(g.channels(), 1.0)],
                    step,
                    probes: Vec::new(),
                })
                .collect(),
        )
        .unwrap()
    };
    let sel = |rule: GroupRule, step: Option<usize>, round_to: usize| {
        let options = SelectOptions {
            rule,
            counting: fair_threshold::CountOptions {
                min_keep: 1,
                round_to,
            },
            ..SelectOptions::default()
        };
        Selector::new(
            graph.clone(),
            layers.clone(),
            &u_ref,
            &r_ref,
            &u_ref,
            options,
        )
        .unwrap()
        .with_latency(Arc::new(table(step)))
        .unwrap()
    };
    // Coupled groups (more than one layer) whose width is off `step` (all widths when
    // `all`).
    let off = |s: &Selector, step: usize, all: bool| -> usize {
        let w = s.select(Goal::Latency(0.2), Method::Tod).unwrap().widths();
        prunable
            .iter()
            .filter(|g| all || g.layers.len() > 1)
            .filter(|g| !on_step(w[&g.layers[0]], step, g.channels()))
            .count()
    };
    for rule in [GroupRule::Intersection, GroupRule::Package] {
        assert!(
            off(&sel(rule, None, 1), 8, false) > 0,
            "{rule:?}: no coupled group to snap without a step"
        );
        let s = sel(rule, Some(8), 1);
        assert_eq!(off(&s, 8, true), 0, "{rule:?}");
        let got = s.select(Goal::Latency(0.2), Method::Tod).unwrap();
        let predicted = s.predicted_latency(&got).unwrap().unwrap();
        assert!(1.0 - predicted >= 0.2 - 1e-12, "{rule:?}: {predicted}");
    }
    // A table without steps leaves the intersection as it was, round_to or not: a coupled
    // group may keep a number of units that is not a multiple of round_to (only a step
    // would snap it).
    assert!(
        off(&sel(GroupRule::Intersection, None, 3), 3, false) > 0,
        "a table without steps snapped the intersection to round_to"
    );
    let with_step_1 = sel(GroupRule::Intersection, Some(1), 3);
    let without = sel(GroupRule::Intersection, None, 3);
    assert_eq!(
        with_step_1
            .select(Goal::Latency(0.2), Method::Tod)
            .unwrap()
            .widths(),
        without
            .select(Goal::Latency(0.2), Method::Tod)
            .unwrap()
            .widths()
    );
}

/// A test net with a grouped convolution of 3 groups: `a` (3 → 48) feeds `b`
/// (48 → 48, 3 groups), then pooling and a classifier: pruned within groups, a unit is 3
/// channels (channel j of every group).
const GROUPED3: &str = r#"
name = "grouped3"
[[nodes]]
name = "input"
op = { type = "input", shape = [3, 8, 8] }
[[nodes]]
name = "a"
op = { type = "conv2d", in_channels = 3, out_channels = 48, kernel_size = 3, padding = 1, bias = false }
[[nodes]]
name = "a.relu"
op = { type = "relu" }
[[nodes]]
name = "b"
op = { type = "conv2d", in_channels = 48, out_channels = 48, kernel_size = 3, padding = 1, groups = 3, bias = false }
[[nodes]]
name = "b.relu"
op = { type = "relu" }
[[nodes]]
name = "pool"
op = { type = "adaptive_avg_pool2d", output_size = 1 }
[[nodes]]
name = "flatten"
op = { type = "flatten" }
[[nodes]]
name = "fc"
op = { type = "linear", in_features = 48, out_features = 10 }
"#;

#[test]
fn a_fast_step_of_8_channels_keeps_units_of_3_channels_in_multiples_of_8() {
    use fair_analysis::{GroupedConvs, analyze_with, scored_layers};
    let graph = Graph::from_toml_str(GROUPED3).unwrap();
    let groups = analyze_with(&graph, &[], GroupedConvs::WithinGroups).unwrap();
    let prunable: Vec<_> = groups
        .groups()
        .iter()
        .filter(|g| g.is_prunable() && g.units >= 2)
        .collect();
    assert!(!prunable.is_empty());
    for g in &prunable {
        assert_eq!(
            (g.units, g.map.channels_per_unit()),
            (16, 3),
            "{:?}",
            g.layers
        );
    }
    let layers: Vec<String> = scored_layers(&graph, GroupedConvs::WithinGroups)
        .into_iter()
        .map(str::to_owned)
        .collect();
    let mut rng = Lcg(5);
    let mut make = || -> Vec<Vec<f64>> {
        layers
            .iter()
            .map(|l| (0..graph.units(l).unwrap()).map(|_| rng.next()).collect())
            .collect()
    };
    let (u, r) = (make(), make());
    let u_ref: Vec<&[f64]> = u.iter().map(Vec::as_slice).collect();
    let r_ref: Vec<&[f64]> = r.iter().map(Vec::as_slice).collect();
    // Each group narrowed alone to 3 channels leaves `left` of the latency; all of them
    // together leave 0.2 (the prediction multiplies).
    let left = 0.2f64.powf(1.0 / prunable.len() as f64);
    let s = |step: Option<usize>| {
        let table = LatencyTable::new(
            key(),
            1.0,
            prunable
                .iter()
                .map(|g| LatencyGroup {
                    layers: g.layers.clone(),
                    width: g.channels(),
                    points: vec![point(3, left), point(g.channels(), 1.0)],
                    step,
                    probes: Vec::new(),
                })
                .collect(),
        )
        .unwrap();
        let options = SelectOptions {
            grouped: GroupedConvs::WithinGroups,
            ..SelectOptions::default()
        };
        Selector::new(
            graph.clone(),
            layers.clone(),
            &u_ref,
            &r_ref,
            &u_ref,
            options,
        )
        .unwrap()
        .with_latency(Arc::new(table))
        .unwrap()
    };
    let (stepped, plain) = (s(Some(8)), s(None));
    let (mut narrowed, mut off_without) = (0, 0);
    for target in [0.1, 0.2, 0.3, 0.4] {
        let w = stepped
            .select(Goal::Latency(target), Method::Tod)
            .unwrap()
            .widths();
        for g in &prunable {
            // 8 units of 3 channels (24, the first multiple of 8 and 3) or all 16 (48).
            let width = w[&g.layers[0]];
            assert!(
                width == 24 || width == 48,
                "{target}: {:?} at {width}",
                g.layers
            );
            narrowed += usize::from(width == 24);
        }
        let w = plain
            .select(Goal::Latency(target), Method::Tod)
            .unwrap()
            .widths();
        off_without += prunable
            .iter()
            .filter(|g| !matches!(w[&g.layers[0]], 24 | 48))
            .count();
    }
    assert!(narrowed > 0, "no group narrowed: the step is not tested");
    assert!(
        off_without > 0,
        "the widths are 24 or 48 without a step too"
    );
}

/// The selector of [`selector`] with MAC-aware counts (γ = 1, `cost`), weighing by `by`
/// once a latency model is attached.
fn weighted_selector(graph: &Graph, cost: MacCost, by: WeighBy) -> Selector {
    selector_with(
        graph,
        SelectOptions {
            mac_weight: 1.0,
            mac_cost: cost,
            weigh_by: by,
            ..SelectOptions::default()
        },
    )
}

#[test]
fn under_a_latency_model_the_weights_count_the_latency_each_layer_saves() {
    let graph = mlp();
    let before = weighted_selector(&graph, MacCost::Unit, WeighBy::Latency);
    let layers = before.layers().to_vec();
    let i0 = layers.iter().position(|l| l == "layers.0").unwrap();
    let i2 = layers.iter().position(|l| l == "layers.2").unwrap();
    // Before a latency model: MAC weights. layers.0 saves 64 MACs of its own and 64 of
    // layers.2 per unit, layers.2 its 128 and 10 of the output layer's.
    assert_eq!(before.unit_macs()[i0], 128);
    assert_eq!(before.unit_macs()[i2], 138);
    assert!((before.weights()[i0] - 128.0 / 138.0).abs() < 1e-12);
    assert!(before.latency_costs().is_none() && before.weighed_by().is_none());

    // With the table: layers.0 saves nothing at half its width (64 channels: 1 s as at
    // 128), layers.2 saves 0.4 s over its upper 32 channels (0.6 s at 32): 0.0125 s a unit.
    let s = before.with_latency(Arc::new(table())).unwrap();
    assert_eq!(s.weighed_by(), Some(WeighBy::Latency));
    let costs = s.latency_costs().unwrap();
    assert_eq!(costs[i0], f64::MIN_POSITIVE);
    assert!((costs[i2] - 0.4 / 32.0).abs() < 1e-15, "{costs:?}");
    assert_eq!(s.weights()[i2], 1.0);
    assert_eq!(s.weights()[i0], 1e-9);
    // Per fraction of a layer: the same saving times the layer's 64 units.
    let f = weighted_selector(&graph, MacCost::Fraction, WeighBy::Latency)
        .with_latency(Arc::new(table()))
        .unwrap();
    assert!((f.latency_costs().unwrap()[i2] - 0.4 / 32.0 * 64.0).abs() < 1e-12);

    // The counts: weighed by latency, the layer whose narrowing saves nothing gives up only
    // the units whose ToD is 0 (those it gives up at α = 0), while weighed by MACs it gives
    // up more.
    let target = Goal::Latency(0.3);
    let free = s.select(Goal::Alpha(0.0), Method::Tod).unwrap().widths()["layers.0"];
    let on_latency = s.select(target, Method::Tod).unwrap();
    let on_macs = weighted_selector(&graph, MacCost::Unit, WeighBy::Macs)
        .with_latency(Arc::new(table()))
        .unwrap();
    assert!(on_macs.latency_costs().is_none());
    assert_eq!(on_macs.weighed_by(), Some(WeighBy::Macs));
    assert!((on_macs.weights()[i0] - 128.0 / 138.0).abs() < 1e-12);
    let on_macs = on_macs.select(target, Method::Tod).unwrap();
    let (w_lat, w_mac) = (on_latency.widths(), on_macs.widths());
    assert_eq!(w_lat["layers.0"], free, "{w_lat:?}");
    assert!(w_mac["layers.0"] < free, "{w_mac:?}");
    // Both meet the target on the table, which only layers.2's width moves.
    for w in [&w_lat, &w_mac] {
        assert!(1.0 - by_hand(w["layers.2"]) >= 0.3 - 1e-12, "{w:?}");
    }
    // The latency-weighted counts remove fewer MACs for the same latency.
    assert!(on_latency.reduction().1 < on_macs.reduction().1);
}
