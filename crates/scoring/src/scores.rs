//! Stored scores with their provenance, so a later run can reuse them (re-thresholding never
//! recomputes scores) and can tell when they no longer fit.

use std::collections::BTreeMap;
use std::path::Path;

use fair_ir::{Graph, GraphSpec};
use fair_runtime::Model;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ScoringError, torch};
use crate::r_score::RScoreSettings;
use crate::u_score::UScoreSettings;

/// Where scores came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// fair-pruner version that wrote the file.
    pub fair_pruner_version: String,
    /// The model's name.
    pub model: String,
    /// SHA-256 of the model's graph and weights ([`model_digest`]).
    pub model_digest: String,
    /// Where the calibration data came from.
    pub data: String,
    /// SHA-256 of the calibration data.
    pub data_digest: String,
    /// Number of calibration samples.
    pub samples: usize,
    /// U-Score settings.
    pub u_settings: UScoreSettings,
    /// R-Score settings.
    pub r_settings: RScoreSettings,
    /// Where units are read for the U-Score.
    pub analysis_point: crate::AnalysisPoint,
    /// Notes raised while scoring (e.g. classes with few samples).
    pub notes: Vec<String>,
    /// Wall-clock seconds per criterion.
    pub seconds: BTreeMap<String, f64>,
}

/// Scores of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerScores {
    /// The layer.
    pub layer: String,
    /// Its analysis node.
    pub analysis: String,
    /// Units.
    pub units: usize,
    /// Scores by criterion name (`u`, `r`, `l1`, ...), one per unit.
    pub scores: BTreeMap<String, Vec<f64>>,
}

/// A score file: provenance, the graph (so thresholds and targets need nothing else) and the
/// scores of every prunable layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreFile {
    /// Where the scores came from.
    pub provenance: Provenance,
    /// The scored model's graph.
    pub graph: GraphSpec,
    /// Per-layer scores, in graph order.
    pub layers: Vec<LayerScores>,
}

impl ScoreFile {
    /// Writes the file as JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<(), ScoringError> {
        let text = serde_json::to_string(self).map_err(|e| ScoringError::ScoreFile {
            path: path.to_owned(),
            detail: format!("cannot serialise: {e}"),
        })?;
        fair_ir::write_atomic(path, text.as_bytes()).map_err(|e| ScoringError::ScoreFile {
            path: path.to_owned(),
            detail: e.to_string(),
        })
    }

    /// Reads and checks a score file: the graph must be valid and every layer's score
    /// vectors must have one entry per unit.
    pub fn load(path: &Path) -> Result<Self, ScoringError> {
        let bad = |detail: String| ScoringError::ScoreFile {
            path: path.to_owned(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let file: ScoreFile =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a score file: {e}")))?;
        let graph = file.graph()?;
        for l in &file.layers {
            let units = graph.units(&l.layer).ok_or_else(|| {
                bad(format!(
                    "layer '{}' is not a conv2d or linear layer of the stored graph",
                    l.layer
                ))
            })?;
            for (name, v) in &l.scores {
                if v.len() != units {
                    return Err(bad(format!(
                        "layer '{}': {} has {} scores, but the layer has {units} units",
                        l.layer,
                        name,
                        v.len()
                    )));
                }
            }
        }
        Ok(file)
    }

    /// The stored graph, validated.
    pub fn graph(&self) -> Result<Graph, ScoringError> {
        Ok(self
            .graph
            .clone()
            .into_graph()
            .map_err(fair_runtime::RuntimeError::from)?)
    }

    /// The scores of `criterion` for every layer, or `None` if it was not computed.
    pub fn criterion(&self, criterion: &str) -> Option<Vec<&[f64]>> {
        self.layers
            .iter()
            .map(|l| l.scores.get(criterion).map(Vec::as_slice))
            .collect()
    }
}

/// SHA-256 over the model's graph (TOML) and every parameter and buffer (names, shapes,
/// bytes), hex-encoded.
pub fn model_digest(model: &Model) -> Result<String, ScoringError> {
    let mut h = Sha256::new();
    let toml = model
        .graph()
        .to_toml_string()
        .map_err(fair_runtime::RuntimeError::from)?;
    h.update(toml.as_bytes());
    for (name, t) in model.named_tensors() {
        let t = t.detach().to_device(tch::Device::Cpu).contiguous();
        let n = t.numel();
        let mut bytes = vec![0u8; n * t.kind().elt_size_in_bytes()];
        torch(t.f_copy_data_u8(&mut bytes, n), || {
            format!("hashing '{name}'")
        })?;
        h.update(name.as_bytes());
        h.update(format!("{:?}", t.size()).as_bytes());
        h.update(&bytes);
    }
    Ok(hex::encode(h.finalize()))
}
