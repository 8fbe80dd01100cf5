//! A valid score file to start the file-format tests from.

use std::collections::BTreeMap;

use fair_analysis::{
    CriterionRecord, LayerScores, Provenance, SCORE_FILE_FORMAT, ScoreFile, graph_digest,
};

/// A valid score file for ResNet-20 (3×16×16 inputs) holding `criteria`: unit i scores i
/// under the first, n − i under the second, (i · 7) mod n under any further one.
pub fn score_file(criteria: &[&str]) -> ScoreFile {
    let graph = fair_zoo::build("resnet20", &[3, 16, 16], 10).unwrap();
    let layers = graph
        .prunable_layers()
        .iter()
        .map(|l| {
            let n = graph.units(l).unwrap();
            let scores = criteria
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    let v = (0..n)
                        .map(|i| match k {
                            0 => i as f64,
                            1 => (n - i) as f64,
                            _ => ((i * 7) % n) as f64,
                        })
                        .collect();
                    (c.to_string(), v)
                })
                .collect();
            LayerScores {
                layer: l.to_string(),
                units: n,
                scores,
                bounds: Default::default(),
            }
        })
        .collect();
    let record = || CriterionRecord {
        settings: serde_json::json!({}),
        seconds: 0.0,
        notes: vec![],
    };
    ScoreFile {
        format: SCORE_FILE_FORMAT,
        provenance: Provenance {
            fair_pruner_version: "test".into(),
            model: graph.name().into(),
            model_digest: "0".repeat(64),
            graph_digest: graph_digest(&graph),
            data: String::new(),
            data_digest: String::new(),
            samples: 0,
            criteria: criteria
                .iter()
                .map(|c| (c.to_string(), record()))
                .collect::<BTreeMap<_, _>>(),
            preset: None,
        },
        graph: graph.to_spec(),
        layers,
    }
}
