//! Scoring a model with several criteria into a [`ScoreFile`] with provenance.

use std::collections::BTreeMap;
use std::time::Instant;

use fair_analysis::{
    CriterionRecord, LayerScores, Provenance, SCORE_FILE_FORMAT, ScoreFile, graph_digest,
};
use fair_runtime::Model;
use sha2::{Digest, Sha256};

use crate::calibration::Calibration;
use crate::criteria::{Context, Criterion};
use crate::error::{ScoringError, torch};
use crate::layers::{AnalysisPoint, prunable_layers};
use crate::progress::Progress;

/// Scores every prunable layer of `model` with every criterion and wraps the scores with
/// provenance (model and data digests, each criterion's settings, time and notes).
///
/// Everything that can be checked cheaply is checked before any criterion runs: criterion
/// names are unique, data-driven criteria have data, and the data fits the model (input
/// shape, labels below the number of outputs). A NaN or infinite score is an error naming
/// the criterion, layer and unit. The model is left unchanged.
pub fn score(
    model: &Model,
    data: Option<&Calibration>,
    criteria: &[Box<dyn Criterion>],
    progress: Progress,
) -> Result<ScoreFile, ScoringError> {
    let graph = model.graph();
    let layers = prunable_layers(graph, AnalysisPoint::LayerOutput);
    if layers.is_empty() {
        return Err(ScoringError::Setting {
            name: "model",
            detail: format!(
                "the model '{}' has no prunable layer (conv2d or linear other than the output)",
                graph.name()
            ),
        });
    }
    let mut names = std::collections::HashSet::new();
    for c in criteria {
        if !names.insert(c.name().to_owned()) {
            return Err(ScoringError::Setting {
                name: "criteria",
                detail: format!("'{}' is listed twice", c.name()),
            });
        }
        if c.needs_data() && data.is_none() {
            return Err(ScoringError::NeedsData(c.name().to_owned()));
        }
    }
    if criteria.is_empty() {
        return Err(ScoringError::Setting {
            name: "criteria",
            detail: "no criterion to compute".into(),
        });
    }
    if let Some(d) = data {
        let classes = graph.shape_at(graph.nodes().len() - 1)[0];
        d.check_fits(graph.shape_at(0), classes)?;
    }
    let ctx = Context {
        model,
        layers: &layers,
        data,
        progress,
    };
    let mut per_layer: Vec<BTreeMap<String, Vec<f64>>> = vec![BTreeMap::new(); layers.len()];
    let mut bounds: Vec<BTreeMap<String, Vec<f64>>> = vec![BTreeMap::new(); layers.len()];
    let mut records = BTreeMap::new();
    for c in criteria {
        let start = Instant::now();
        let scored = c.score(&ctx)?;
        let seconds = start.elapsed().as_secs_f64();
        if scored.scores.len() != layers.len() {
            return Err(ScoringError::Setting {
                name: "criteria",
                detail: format!(
                    "criterion '{}' returned {} layers of scores for {} layers",
                    c.name(),
                    scored.scores.len(),
                    layers.len()
                ),
            });
        }
        for (layer, s) in layers.iter().zip(&scored.scores) {
            if s.len() != layer.units {
                return Err(ScoringError::Setting {
                    name: "criteria",
                    detail: format!(
                        "criterion '{}' returned {} scores for the {} units of '{}'",
                        c.name(),
                        s.len(),
                        layer.units,
                        layer.name
                    ),
                });
            }
            if let Some(unit) = s.iter().position(|v| !v.is_finite()) {
                return Err(ScoringError::BadScore {
                    criterion: c.name().to_owned(),
                    layer: layer.name.clone(),
                    unit,
                    value: s[unit],
                    hint: " (the model's weights or activations hold NaN or infinite values; check the weights file)".into(),
                });
            }
        }
        for (slot, s) in per_layer.iter_mut().zip(scored.scores) {
            slot.insert(c.name().to_owned(), s);
        }
        if let Some(b) = scored.bounds {
            for ((slot, b), layer) in bounds.iter_mut().zip(b).zip(&layers) {
                if let Some(unit) = b.iter().position(|v| !v.is_finite() || *v < 0.0) {
                    return Err(ScoringError::BadScore {
                        criterion: format!("{} (its bound)", c.name()),
                        layer: layer.name.clone(),
                        unit,
                        value: b[unit],
                        hint: " (a summary held a value that is not finite: check the \
                               weights and the calibration data)"
                            .into(),
                    });
                }
                if b.len() != layer.units {
                    return Err(ScoringError::Setting {
                        name: "criteria",
                        detail: format!(
                            "criterion '{}' returned {} bounds for the {} units of '{}'",
                            c.name(),
                            b.len(),
                            layer.units,
                            layer.name
                        ),
                    });
                }
                slot.insert(c.name().to_owned(), b);
            }
        }
        records.insert(
            c.name().to_owned(),
            CriterionRecord {
                settings: scored.recorded_settings.unwrap_or_else(|| c.settings()),
                seconds,
                notes: scored.notes,
            },
        );
    }
    let file = ScoreFile {
        format: SCORE_FILE_FORMAT,
        provenance: Provenance {
            fair_pruner_version: env!("CARGO_PKG_VERSION").to_owned(),
            model: graph.name().to_owned(),
            model_digest: model_digest(model)?,
            graph_digest: graph_digest(graph),
            data: data.map(|d| d.description().to_owned()).unwrap_or_default(),
            data_digest: match data {
                Some(d) => d.digest()?,
                None => String::new(),
            },
            samples: data.map_or(0, Calibration::len),
            criteria: records,
            preset: None,
        },
        graph: graph.to_spec(),
        layers: layers
            .iter()
            .zip(per_layer.into_iter().zip(bounds))
            .map(|(l, (scores, bounds))| LayerScores {
                layer: l.name.clone(),
                units: l.units,
                scores,
                bounds,
            })
            .collect(),
    };
    Ok(file)
}

/// Whether `file` holds scores of every criterion in `criteria`, computed with the same
/// settings for the same model (`model_digest`) and calibration data (`data_digest`): then
/// they can be reused instead of recomputed.
pub fn reusable(
    file: &ScoreFile,
    model_digest: &str,
    data_digest: &str,
    criteria: &[Box<dyn Criterion>],
) -> bool {
    let p = &file.provenance;
    p.model_digest == model_digest
        && (p.data_digest == data_digest || criteria.iter().all(|c| !c.needs_data()))
        && criteria.iter().all(|c| {
            p.criteria
                .get(c.name())
                .is_some_and(|r| r.settings == c.settings())
        })
}

/// SHA-256 over the model's graph (TOML) and every parameter and buffer (names, shapes,
/// bytes), hex-encoded.
pub fn model_digest(model: &Model) -> Result<String, ScoringError> {
    let mut h = Sha256::new();
    h.update(graph_digest(model.graph()).as_bytes());
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
