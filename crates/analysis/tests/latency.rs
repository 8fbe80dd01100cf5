//! Latency targets (`Goal::Latency`) on a latency table: the table's JSON round trip, the
//! counts a latency target picks against a MACs target, and the unreachable target's error.

use std::sync::Arc;

use fair_analysis::{
    AnalysisError, Goal, LatencyGroup, LatencyKey, LatencyModel, LatencyPoint, LatencyTable,
    Method, SelectOptions, Selector,
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
    Selector::new(
        graph.clone(),
        layers,
        &u_ref,
        &r_ref,
        &u_ref,
        SelectOptions::default(),
    )
    .unwrap()
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
            },
            LatencyGroup {
                layers: vec!["layers.2".into()],
                width: 64,
                points: vec![point(8, 0.2), point(32, 0.6), point(64, 1.0)],
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
    assert!(
        text.contains("\"format\": \"fair-pruner-latency-table/1\""),
        "{text}"
    );
    assert!(text.contains("\"runtime\": \"synthetic\""), "{text}");
    let back = LatencyTable::load(&path).unwrap();
    assert_eq!(back, t);
    assert!(back.noisy);
    assert_eq!(back.groups[1].points[1], point(32, 0.6));
    // A table missing a key, or of another format, is refused with the file named.
    std::fs::write(
        &path,
        text.replace("fair-pruner-latency-table/1", "other/9"),
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
