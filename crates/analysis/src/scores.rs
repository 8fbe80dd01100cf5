//! Score files: per-unit scores of every prunable layer with their provenance, so a later run
//! can reuse them (re-thresholding never recomputes scores) and can tell when they no longer
//! fit. The format is plain JSON, versioned by [`SCORE_FILE_FORMAT`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fair_ir::{Graph, GraphSpec};
use serde::{Deserialize, Serialize};

use crate::error::AnalysisError;
use crate::strict;

/// The score-file format this version writes and reads. Version 1 (fair-pruner before the
/// open-core release) had fixed `u_settings`/`r_settings`; version 2 records settings per
/// criterion.
pub const SCORE_FILE_FORMAT: u32 = 2;

/// What one criterion recorded while scoring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CriterionRecord {
    /// The criterion's settings, as it reports them (a JSON object; compared for reuse).
    pub settings: serde_json::Value,
    /// Wall-clock seconds it took.
    pub seconds: f64,
    /// Notes it raised (e.g. classes with few samples).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Where scores came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// fair-pruner version that wrote the file.
    pub fair_pruner_version: String,
    /// The model's name.
    pub model: String,
    /// SHA-256 of the model's graph and weights (64 lowercase hexadecimal digits).
    pub model_digest: String,
    /// SHA-256 of the model's graph alone ([`graph_digest`]).
    pub graph_digest: String,
    /// Where the calibration data came from (empty without data).
    pub data: String,
    /// SHA-256 of the calibration data (64 lowercase hexadecimal digits), or empty without
    /// data (then `samples` is 0).
    pub data_digest: String,
    /// Number of calibration samples.
    pub samples: usize,
    /// Every criterion computed, by name.
    pub criteria: BTreeMap<String, CriterionRecord>,
    /// The preset the scores were computed under (`paper`, `fair-pruner`), by its
    /// command-line name, if the writer recorded one: `fair-pruner ratios` then counts with
    /// it unless `--preset` says otherwise. Absent from files written before it existed;
    /// when present, 1 to 64 characters of `a-z`, `0-9` and `-`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
}

/// Scores of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerScores {
    /// The layer.
    pub layer: String,
    /// Its units.
    pub units: usize,
    /// Scores by criterion name (`u`, `r`, `l1`, ...), one per unit.
    pub scores: BTreeMap<String, Vec<f64>>,
    /// For approximate scores, by criterion name, one per unit: a computed bound on how far
    /// the score can lie from the exact one (the U-Score's `pair-search certified`). Absent
    /// for exact scores (and omitted from the file when there are none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bounds: BTreeMap<String, Vec<f64>>,
}

/// A score file: provenance, the graph (so thresholds and targets need nothing else) and the
/// scores of every prunable layer, in graph order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreFile {
    /// The format version ([`SCORE_FILE_FORMAT`]).
    pub format: u32,
    /// Where the scores came from.
    pub provenance: Provenance,
    /// The scored model's graph.
    pub graph: GraphSpec,
    /// Per-layer scores, one entry per prunable layer, in graph order.
    pub layers: Vec<LayerScores>,
}

/// A score file written, as `fair-pruner score --json` prints it: where it went, how many
/// layers it scores, its provenance, and the process's peak memory. Its JSON Schema is
/// `docs/score-schema.json` (checked by a test).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScoreReport {
    /// Where the score file was written.
    pub out: PathBuf,
    /// How many layers it scores.
    pub layers: usize,
    /// Where the scores came from ([`ScoreFile::provenance`]).
    pub provenance: Provenance,
    /// The scoring process's peak resident memory in MiB, where known (else `null`).
    pub peak_rss_mib: Option<f64>,
}

impl ScoreReport {
    /// The report of `file`, written to `out` by a process whose peak resident memory was
    /// `peak_rss_mib` MiB (`None` where unknown).
    pub fn new(file: &ScoreFile, out: &Path, peak_rss_mib: Option<f64>) -> Self {
        ScoreReport {
            out: out.to_owned(),
            layers: file.layers.len(),
            provenance: file.provenance.clone(),
            peak_rss_mib,
        }
    }
}

/// SHA-256 of a graph's canonical TOML form, hex-encoded: identifies the architecture
/// (weights not included).
pub fn graph_digest(graph: &Graph) -> String {
    use sha2::{Digest, Sha256};
    let toml = graph
        .to_toml_string()
        .expect("a validated graph serialises");
    hex::encode(Sha256::digest(toml.as_bytes()))
}

impl ScoreFile {
    /// Every criterion's notes, in criterion order.
    pub fn notes(&self) -> Vec<&str> {
        self.provenance
            .criteria
            .values()
            .flat_map(|r| r.notes.iter().map(String::as_str))
            .collect()
    }

    /// How long each criterion took, e.g. `l1 0.00 s, u 1.25 s`.
    pub fn timing(&self) -> String {
        self.provenance
            .criteria
            .iter()
            .map(|(k, v)| format!("{k} {:.2} s", v.seconds))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Writes the file as JSON, atomically, after [`ScoreFile::validate`].
    pub fn save(&self, path: &Path) -> Result<(), AnalysisError> {
        fair_fs::write_atomic(path, self.to_json_string(path)?.as_bytes())?;
        Ok(())
    }

    /// The validated file as the JSON text [`ScoreFile::save`] writes; `path` names it in
    /// errors.
    pub fn to_json_string(&self, path: &Path) -> Result<String, AnalysisError> {
        self.validate().map_err(|detail| score_file(path, detail))?;
        serde_json::to_string(self).map_err(|e| score_file(path, format!("cannot serialise: {e}")))
    }

    /// Parses and validates a score file from JSON text; `source` names it in errors. Any
    /// object holding a key twice (a criterion twice in a layer's `scores`, a field twice in
    /// `provenance`, ...) is refused, as is everything [`ScoreFile::validate`] refuses.
    pub fn from_json_str(text: &str, source: &Path) -> Result<Self, AnalysisError> {
        let probe = strict::parse(text, &|path, key| {
            if path.ends_with(".scores") {
                format!(
                    "the criterion {} is given twice in {}; give each criterion's scores once",
                    strict::quoted(key),
                    strict::cut(path)
                )
            } else {
                strict::duplicate_key(path, key)
            }
        })
        .map_err(|e| score_file(source, e.to_string()))?;
        match probe.get("format").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(SCORE_FILE_FORMAT) => {}
            Some(v) => {
                return Err(score_file(
                    source,
                    format!(
                        "format {v} is not supported (this fair-pruner reads format {SCORE_FILE_FORMAT}); re-run `fair-pruner score`"
                    ),
                ));
            }
            None => {
                return Err(score_file(
                    source,
                    format!(
                        "no \"format\" field: it is not a score file, or one written by an older fair-pruner (format 1); re-run `fair-pruner score` to get format {SCORE_FILE_FORMAT}"
                    ),
                ));
            }
        }
        let file: ScoreFile = serde_json::from_value(probe)
            .map_err(|e| score_file(source, format!("not a score file: {e}")))?;
        file.validate()
            .map_err(|detail| score_file(source, detail))?;
        Ok(file)
    }

    /// Removes a criterion's record and scores (before stale scores are replaced by
    /// [`ScoreFile::merge`]); whether it was there.
    pub fn remove_criterion(&mut self, criterion: &str) -> bool {
        let had = self.provenance.criteria.remove(criterion).is_some();
        for layer in &mut self.layers {
            layer.scores.remove(criterion);
            layer.bounds.remove(criterion);
        }
        had
    }

    /// Adds `other`'s criteria to this file, so one more criterion extends stored scores
    /// without re-scoring the rest. Both files are validated first, and they must describe
    /// the same scoring run:
    ///
    /// - the same model (model and graph digests) and the same prunable layers and widths;
    /// - the same calibration data (digest and sample count) — except that a file scored
    ///   without data (empty digest, only data-free criteria) merges with any, and the
    ///   merged file records the data of the one that had it;
    /// - a criterion present in both must have the same settings and the same scores (it is
    ///   then kept once); anything else is an error naming the criterion.
    ///
    /// The preset and the writer's version stay this file's. On error, `self` is unchanged.
    ///
    /// ```
    /// use fair_analysis::ScoreFile;
    /// # let graph = fair_ir::Graph::from_toml_str(r#"
    /// # name = "g"
    /// # [[nodes]]
    /// # name = "input"
    /// # op = { type = "input", shape = [3] }
    /// # [[nodes]]
    /// # name = "fc1"
    /// # op = { type = "linear", in_features = 3, out_features = 2 }
    /// # [[nodes]]
    /// # name = "fc2"
    /// # op = { type = "linear", in_features = 2, out_features = 2 }
    /// # "#)?;
    /// # let file = |criterion: &str, score: f64| -> ScoreFile {
    /// #     let mut criteria = std::collections::BTreeMap::new();
    /// #     criteria.insert(criterion.to_owned(), fair_analysis::CriterionRecord {
    /// #         settings: serde_json::json!({}), seconds: 0.0, notes: vec![] });
    /// #     ScoreFile {
    /// #         format: fair_analysis::SCORE_FILE_FORMAT,
    /// #         provenance: fair_analysis::Provenance {
    /// #             fair_pruner_version: "0".into(), model: "g".into(),
    /// #             model_digest: "a".repeat(64), graph_digest: fair_analysis::graph_digest(&graph),
    /// #             data: String::new(), data_digest: String::new(), samples: 0, criteria, preset: None },
    /// #         graph: graph.to_spec(),
    /// #         layers: vec![fair_analysis::LayerScores { layer: "fc1".into(), units: 2,
    /// #             scores: [(criterion.to_owned(), vec![score, 1.0])].into(),
    /// #             bounds: Default::default() }],
    /// #     }
    /// # };
    /// // Two files of one model, one with `l1` and one with `l2`.
    /// let mut scores: ScoreFile = file("l1", 0.5);
    /// scores.merge(file("l2", 0.25))?;
    /// assert_eq!(scores.criteria(), ["l1", "l2"]);
    /// // The same criterion with other scores is a conflict.
    /// assert!(scores.merge(file("l1", 0.75)).unwrap_err().to_string().contains("'l1'"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn merge(&mut self, other: ScoreFile) -> Result<(), AnalysisError> {
        let fail = |detail: String| AnalysisError::ScoreFile {
            path: PathBuf::from("(merge)"),
            detail,
        };
        self.validate()
            .map_err(|d| fail(format!("the file merged into: {d}")))?;
        other
            .validate()
            .map_err(|d| fail(format!("the file merged: {d}")))?;
        let (a, b) = (&self.provenance, &other.provenance);
        if a.model_digest != b.model_digest || a.graph_digest != b.graph_digest {
            return Err(fail(format!(
                "the files score different models (model digests {}… and {}…)",
                &a.model_digest[..12],
                &b.model_digest[..12]
            )));
        }
        let widths = |f: &ScoreFile| -> Vec<(String, usize)> {
            f.layers
                .iter()
                .map(|l| (l.layer.clone(), l.units))
                .collect()
        };
        if widths(self) != widths(&other) {
            return Err(fail(
                "the files list different prunable layers or widths".to_owned(),
            ));
        }
        let data_free = |p: &Provenance| p.data_digest.is_empty();
        if !data_free(a)
            && !data_free(b)
            && (a.data_digest != b.data_digest || a.samples != b.samples)
        {
            return Err(fail(format!(
                "the files were scored on different calibration data ({} samples of '{}' and \
                 {} samples of '{}'); score every criterion on the same draw",
                a.samples, a.data, b.samples, b.data
            )));
        }
        for (name, record) in &b.criteria {
            if let Some(mine) = a.criteria.get(name) {
                let same_scores = self.layers.iter().zip(&other.layers).all(|(x, y)| {
                    x.scores
                        .get(name)
                        .map(|v| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>())
                        == y.scores
                            .get(name)
                            .map(|v| v.iter().map(|f| f.to_bits()).collect())
                });
                if mine.settings != record.settings || !same_scores {
                    return Err(fail(format!(
                        "the criterion '{name}' is in both files with different {}; keep one \
                         (re-score it, or merge a file without it)",
                        if mine.settings != record.settings {
                            "settings"
                        } else {
                            "scores"
                        }
                    )));
                }
            }
        }
        let ScoreFile {
            provenance: b,
            layers,
            ..
        } = other;
        if data_free(&self.provenance) && !data_free(&b) {
            self.provenance.data = b.data;
            self.provenance.data_digest = b.data_digest;
            self.provenance.samples = b.samples;
        }
        for (name, record) in b.criteria {
            self.provenance.criteria.entry(name).or_insert(record);
        }
        for (mine, theirs) in self.layers.iter_mut().zip(layers) {
            for (name, values) in theirs.scores {
                mine.scores.entry(name).or_insert(values);
            }
            for (name, values) in theirs.bounds {
                mine.bounds.entry(name).or_insert(values);
            }
        }
        Ok(())
    }

    /// Reads and validates a score file (a regular file of at most 1 GiB).
    pub fn load(path: &Path) -> Result<Self, AnalysisError> {
        let text = fair_fs::read_string_bounded(path, crate::MAX_TEXT_FILE, "a score file")?;
        Self::from_json_str(&text, path)
    }

    /// Checks the file is consistent: digests of 64 lowercase hexadecimal digits (the data
    /// digest may be empty when no data was used, with 0 samples); a preset name, if any, of
    /// `a-z`, `0-9` and `-`; a valid graph whose digest matches the recorded one; exactly one
    /// entry per prunable layer of the graph, in graph order (no duplicates, none missing, not
    /// the output layer); every criterion recorded in the provenance present for every layer
    /// with one finite score per unit.
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.provenance;
        strict::check_digest("model_digest", &p.model_digest)?;
        strict::check_digest("graph_digest", &p.graph_digest)?;
        if p.data_digest.is_empty() {
            if p.samples != 0 {
                return Err(format!(
                    "\"data_digest\" is empty (no calibration data) but \"samples\" is {}: a file scored on data records the data's SHA-256 digest",
                    p.samples
                ));
            }
        } else {
            strict::check_digest("data_digest", &p.data_digest)
                .map_err(|e| format!("{e}; it is empty only when no calibration data was used"))?;
        }
        if let Some(preset) = &p.preset {
            let ok = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-';
            if preset.is_empty() || preset.len() > 64 || !preset.bytes().all(ok) {
                return Err(format!(
                    "\"preset\" must be a preset's name (1 to 64 characters of a-z, 0-9 and -, e.g. \"paper\"), found {}",
                    strict::quoted(preset)
                ));
            }
        }
        let graph = self.graph().map_err(|e| e.to_string())?;
        let digest = graph_digest(&graph);
        if digest != self.provenance.graph_digest {
            return Err(format!(
                "the stored graph does not match its recorded digest (recorded {}, computed {digest}): the file was edited or assembled from different runs",
                self.provenance.graph_digest
            ));
        }
        // Files list the prunable layers and the grouped convolutions (pruned within their
        // groups); files written before grouped convolutions were scored list the prunable
        // layers only.
        let prunable = graph.prunable_layers();
        let expected = if self
            .layers
            .iter()
            .all(|l| prunable.contains(&l.layer.as_str()))
        {
            prunable
        } else {
            crate::groups::scored_layers(&graph, crate::GroupedConvs::WithinGroups)
        };
        let mut seen = std::collections::HashSet::new();
        for l in &self.layers {
            if !seen.insert(l.layer.as_str()) {
                return Err(format!("layer '{}' appears more than once", l.layer));
            }
            if !expected.contains(&l.layer.as_str()) {
                return Err(if l.layer == graph.output().name {
                    format!(
                        "layer '{}' is the model's output layer, which is never pruned or scored",
                        l.layer
                    )
                } else {
                    format!(
                        "layer '{}' is not a prunable layer of the stored graph",
                        l.layer
                    )
                });
            }
        }
        if let Some(missing) = expected.iter().find(|l| !seen.contains(*l)) {
            return Err(format!("prunable layer '{missing}' has no scores"));
        }
        let order: Vec<&str> = self.layers.iter().map(|l| l.layer.as_str()).collect();
        if order != expected {
            return Err("layers are not in graph order".into());
        }
        if self.provenance.criteria.is_empty() {
            return Err("no criteria recorded".into());
        }
        for l in &self.layers {
            let units = graph.units(&l.layer).expect("prunable");
            if l.units != units {
                return Err(format!(
                    "layer '{}' records {} units, but the stored graph gives it {units}",
                    l.layer, l.units
                ));
            }
            for name in self.provenance.criteria.keys() {
                let v = l
                    .scores
                    .get(name)
                    .ok_or_else(|| format!("layer '{}' has no '{name}' scores", l.layer))?;
                if v.len() != units {
                    return Err(format!(
                        "layer '{}': {name} has {} scores, but the layer has {units} units",
                        l.layer,
                        v.len()
                    ));
                }
                if let Some(u) = v.iter().position(|x| !x.is_finite()) {
                    return Err(format!(
                        "layer '{}': the {name} score of unit {u} is {}",
                        l.layer, v[u]
                    ));
                }
            }
            if let Some(extra) = l
                .scores
                .keys()
                .find(|k| !self.provenance.criteria.contains_key(*k))
            {
                return Err(format!(
                    "layer '{}' has '{extra}' scores that the provenance does not record",
                    l.layer
                ));
            }
            for (name, b) in &l.bounds {
                if !l.scores.contains_key(name) {
                    return Err(format!(
                        "layer '{}' has '{name}' bounds but no '{name}' scores",
                        l.layer
                    ));
                }
                if b.len() != units {
                    return Err(format!(
                        "layer '{}': {name} has {} bounds, but the layer has {units} units",
                        l.layer,
                        b.len()
                    ));
                }
                if let Some(u) = b.iter().position(|x| !x.is_finite() || *x < 0.0) {
                    return Err(format!(
                        "layer '{}': the {name} bound of unit {u} is {} (expected a finite \
                         number ≥ 0)",
                        l.layer, b[u]
                    ));
                }
            }
        }
        Ok(())
    }

    /// The stored graph, validated.
    pub fn graph(&self) -> Result<Graph, AnalysisError> {
        Ok(self.graph.clone().into_graph()?)
    }

    /// Names of the criteria in the file.
    pub fn criteria(&self) -> Vec<&str> {
        self.provenance
            .criteria
            .keys()
            .map(String::as_str)
            .collect()
    }

    /// The scores of `criterion` for every layer, or `None` if it was not computed.
    pub fn criterion(&self, criterion: &str) -> Option<Vec<&[f64]>> {
        self.layers
            .iter()
            .map(|l| l.scores.get(criterion).map(Vec::as_slice))
            .collect()
    }

    /// The scores of `criterion`, or an error listing the criteria the file has.
    pub fn require(&self, criterion: &str, path: &Path) -> Result<Vec<&[f64]>, AnalysisError> {
        self.criterion(criterion).ok_or_else(|| {
            score_file(
                path,
                format!(
                    "it has no '{criterion}' scores (it has: {}); score them with `fair-pruner score --criteria ...`",
                    self.criteria().join(", ")
                ),
            )
        })
    }
}

fn score_file(path: &Path, detail: String) -> AnalysisError {
    AnalysisError::ScoreFile {
        path: PathBuf::from(path),
        detail,
    }
}
