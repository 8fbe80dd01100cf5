//! Issue 25: stored scores extend with one more criterion without re-scoring the rest, through
//! `ScoreFile::merge`, which refuses files that do not describe the same scoring run.

use std::collections::BTreeMap;

use fair_analysis::{
    CriterionRecord, LayerScores, Provenance, SCORE_FILE_FORMAT, ScoreFile, graph_digest,
};
use fair_ir::Graph;

fn graph(width: usize) -> Graph {
    Graph::from_toml_str(&format!(
        r#"
        name = "g"
        [[nodes]]
        name = "input"
        op = {{ type = "input", shape = [3] }}
        [[nodes]]
        name = "fc1"
        op = {{ type = "linear", in_features = 3, out_features = {width} }}
        [[nodes]]
        name = "fc2"
        op = {{ type = "linear", in_features = {width}, out_features = 2 }}
        "#
    ))
    .unwrap()
}

/// A file of `graph(width)` holding `criterion` with `scores`, scored on `data` (a digest
/// character and a sample count) or without data.
fn file(
    width: usize,
    criterion: &str,
    settings: serde_json::Value,
    scores: Vec<f64>,
    data: Option<(char, usize)>,
) -> ScoreFile {
    let g = graph(width);
    let mut criteria = BTreeMap::new();
    criteria.insert(
        criterion.to_owned(),
        CriterionRecord {
            settings,
            seconds: 1.0,
            notes: vec![format!("{criterion} note")],
        },
    );
    let (data_name, data_digest, samples) = match data {
        Some((c, n)) => (format!("draw {c}"), c.to_string().repeat(64), n),
        None => (String::new(), String::new(), 0),
    };
    ScoreFile {
        format: SCORE_FILE_FORMAT,
        provenance: Provenance {
            fair_pruner_version: "test".into(),
            model: "g".into(),
            model_digest: format!("{:0<64}", width),
            graph_digest: graph_digest(&g),
            data: data_name,
            data_digest,
            samples,
            criteria,
            preset: Some("fair-pruner".into()),
        },
        graph: g.to_spec(),
        layers: vec![LayerScores {
            layer: "fc1".into(),
            units: width,
            scores: [(criterion.to_owned(), scores)].into(),
            bounds: Default::default(),
        }],
    }
}

fn json() -> serde_json::Value {
    serde_json::json!({})
}

#[test]
fn a_criterion_scored_later_joins_the_stored_ones() {
    let mut stored = file(3, "u", json(), vec![0.1, 0.2, 0.3], Some(('a', 30)));
    let before = stored.clone();
    stored
        .merge(file(3, "r", json(), vec![3.0, 2.0, 1.0], Some(('a', 30))))
        .unwrap();
    assert_eq!(stored.criteria(), ["r", "u"]);
    assert_eq!(stored.layers[0].scores["u"], vec![0.1, 0.2, 0.3]);
    assert_eq!(stored.layers[0].scores["r"], vec![3.0, 2.0, 1.0]);
    assert_eq!(stored.provenance.criteria["r"].notes, ["r note"]);
    // The rest of the provenance is the stored file's.
    assert_eq!(stored.provenance.data_digest, before.provenance.data_digest);
    assert_eq!(stored.provenance.preset, before.provenance.preset);
    // The merged file is a valid score file that round-trips.
    let path = std::path::Path::new("merged.json");
    let text = stored.to_json_string(path).unwrap();
    assert_eq!(ScoreFile::from_json_str(&text, path).unwrap(), stored);
}

#[test]
fn a_data_free_file_merges_with_one_scored_on_data_which_keeps_its_data() {
    let mut l1 = file(3, "l1", json(), vec![1.0, 2.0, 3.0], None);
    l1.merge(file(3, "u", json(), vec![0.1, 0.2, 0.3], Some(('b', 20))))
        .unwrap();
    assert_eq!(l1.provenance.data_digest, "b".repeat(64));
    assert_eq!(l1.provenance.samples, 20);
    assert_eq!(l1.criteria(), ["l1", "u"]);
    let mut u = file(3, "u", json(), vec![0.1, 0.2, 0.3], Some(('b', 20)));
    u.merge(file(3, "l1", json(), vec![1.0, 2.0, 3.0], None))
        .unwrap();
    assert_eq!(u.provenance.data_digest, "b".repeat(64));
}

#[test]
fn a_stale_criterion_is_removed_then_replaced() {
    let mut stored = file(3, "u", json(), vec![0.1, 0.2, 0.3], Some(('a', 30)));
    stored
        .merge(file(3, "r", json(), vec![3.0, 2.0, 1.0], Some(('a', 30))))
        .unwrap();
    let newer = file(
        3,
        "u",
        serde_json::json!({"projections": 9}),
        vec![0.3, 0.2, 0.1],
        Some(('a', 30)),
    );
    assert!(stored.clone().merge(newer.clone()).is_err());
    assert!(stored.remove_criterion("u"));
    assert!(!stored.remove_criterion("u"));
    assert_eq!(stored.criteria(), ["r"]);
    assert!(!stored.layers[0].scores.contains_key("u"));
    stored.merge(newer.clone()).unwrap();
    assert_eq!(stored.layers[0].scores["u"], vec![0.3, 0.2, 0.1]);
    assert_eq!(
        stored.provenance.criteria["u"].settings,
        newer.provenance.criteria["u"].settings
    );
}

#[test]
fn an_identical_criterion_in_both_is_kept_once() {
    let mut a = file(3, "u", json(), vec![0.1, 0.2, 0.3], Some(('a', 30)));
    let same = a.clone();
    a.merge(same.clone()).unwrap();
    assert_eq!(a, same);
}

#[test]
fn files_of_different_runs_are_refused_and_leave_the_file_unchanged() {
    let stored = file(3, "u", json(), vec![0.1, 0.2, 0.3], Some(('a', 30)));
    let cases = [
        (
            file(4, "r", json(), vec![1.0; 4], Some(('a', 30))),
            "different models",
        ),
        (
            file(3, "r", json(), vec![1.0; 3], Some(('c', 30))),
            "different calibration data",
        ),
        (
            file(3, "r", json(), vec![1.0; 3], Some(('a', 31))),
            "different calibration data",
        ),
        (
            file(
                3,
                "u",
                serde_json::json!({"projections": 64}),
                vec![0.1, 0.2, 0.3],
                Some(('a', 30)),
            ),
            "'u' is in both files with different settings",
        ),
        (
            file(3, "u", json(), vec![0.1, 0.2, 0.4], Some(('a', 30))),
            "'u' is in both files with different scores",
        ),
    ];
    for (other, expected) in cases {
        let mut merged = stored.clone();
        let e = merged.merge(other).unwrap_err().to_string();
        assert!(e.contains(expected), "expected '{expected}' in: {e}");
        assert_eq!(merged, stored, "a refused merge changed the file");
    }
    // Same model digest, other widths: the layer lists differ.
    let mut other = file(4, "r", json(), vec![1.0; 4], Some(('a', 30)));
    other.provenance.model_digest = stored.provenance.model_digest.clone();
    other.provenance.graph_digest = stored.provenance.graph_digest.clone();
    let mut merged = stored.clone();
    let e = merged.merge(other).unwrap_err().to_string();
    assert!(e.contains("merged"), "{e}");
    // An invalid file is refused by its validation, naming which side.
    let mut bad = file(3, "r", json(), vec![f64::NAN, 1.0, 1.0], Some(('a', 30)));
    bad.provenance.samples = 30;
    let e = stored.clone().merge(bad).unwrap_err().to_string();
    assert!(e.contains("the file merged:"), "{e}");
}
