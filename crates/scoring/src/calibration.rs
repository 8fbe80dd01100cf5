//! Calibration data: labelled samples the scorers run through the model.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use crate::error::{ScoringError, torch};

/// Labelled calibration samples, kept on the CPU in the order given. The R-Score walks them
/// in this order in batches; the U-Score groups them by class.
#[derive(Debug)]
pub struct Calibration {
    inputs: Tensor,
    labels: Vec<i64>,
    description: String,
}

impl Calibration {
    /// Wraps `inputs` (`[N, ...]`, float) and `labels` (`[N]`, integer class ids ≥ 0).
    /// `description` says where the data came from (kept in score provenance).
    pub fn new(
        inputs: Tensor,
        labels: &Tensor,
        description: impl Into<String>,
    ) -> Result<Self, ScoringError> {
        let bad = |detail: String| ScoringError::Data { path: None, detail };
        if !inputs.is_floating_point() {
            return Err(bad(format!(
                "inputs must be floating point, found {:?}",
                inputs.kind()
            )));
        }
        let size = labels.size();
        let n = inputs.size().first().copied().unwrap_or(0);
        if size.len() != 1 || size[0] != n {
            return Err(bad(format!(
                "labels must be a vector with one entry per input ({n}), found shape {size:?}"
            )));
        }
        if n == 0 {
            return Err(bad("there are no samples".into()));
        }
        if !matches!(
            labels.kind(),
            Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
        ) {
            return Err(bad(format!(
                "labels must be integers, found {:?}",
                labels.kind()
            )));
        }
        let labels: Vec<i64> = Vec::try_from(labels.to_kind(Kind::Int64).to_device(Device::Cpu))
            .map_err(|e| bad(format!("cannot read labels: {e}")))?;
        if let Some(i) = labels.iter().position(|&l| l < 0) {
            return Err(bad(format!(
                "label of sample {i} is {}, expected a class id ≥ 0",
                labels[i]
            )));
        }
        let inputs = inputs.to_device(Device::Cpu).to_kind(Kind::Float);
        let finite = inputs.isfinite().all().int64_value(&[]) == 1;
        if !finite {
            return Err(bad("inputs hold NaN or infinite values".into()));
        }
        Ok(Calibration {
            inputs,
            labels,
            description: description.into(),
        })
    }

    /// Reads a safetensors file with an `inputs` tensor (`[N, ...]`, float) and a `labels`
    /// tensor (`[N]`, integer).
    pub fn from_safetensors(path: &Path) -> Result<Self, ScoringError> {
        let tensors = fair_runtime::read_safetensors(path, Device::Cpu)?;
        let get = |name: &str| {
            tensors
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.shallow_clone())
                .ok_or_else(|| ScoringError::Data {
                    path: Some(path.to_owned()),
                    detail: format!(
                        "no tensor named '{name}' (expected 'inputs' [N, ...] and 'labels' [N]; found {})",
                        tensors.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                })
        };
        let inputs = get("inputs")?;
        let labels = get("labels")?;
        Self::new(inputs, &labels, path.display().to_string()).map_err(|e| match e {
            ScoringError::Data { detail, .. } => ScoringError::Data {
                path: Some(path.to_owned()),
                detail,
            },
            other => other,
        })
    }

    /// The inputs and labels (`[N, ...]` float, `[N]` int64), sharing storage.
    pub fn tensors(&self) -> (Tensor, Tensor) {
        (
            self.inputs.shallow_clone(),
            Tensor::from_slice(&self.labels),
        )
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples (never true for a constructed set).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Where the data came from.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The per-sample input shape.
    pub fn sample_shape(&self) -> Vec<i64> {
        self.inputs.size()[1..].to_vec()
    }

    /// Numbers per sample (the product of [`Calibration::sample_shape`]).
    pub fn sample_numel(&self) -> usize {
        self.inputs.size()[1..].iter().product::<i64>() as usize
    }

    /// Sample indices per class id, ascending.
    pub fn class_indices(&self) -> BTreeMap<i64, Vec<usize>> {
        let mut m: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (i, &l) in self.labels.iter().enumerate() {
            m.entry(l).or_default().push(i);
        }
        m
    }

    /// The samples at `indices`, as one tensor.
    pub fn select(&self, indices: &[usize]) -> Tensor {
        let idx: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        self.inputs.index_select(0, &Tensor::from_slice(&idx))
    }

    /// Consecutive batches (inputs, labels) of at most `batch_size` samples, in order.
    pub fn batches(&self, batch_size: usize) -> impl Iterator<Item = (Tensor, Tensor)> + '_ {
        let n = self.len();
        (0..n).step_by(batch_size.max(1)).map(move |start| {
            let len = batch_size.min(n - start);
            let x = self.inputs.narrow(0, start as i64, len as i64);
            let y = Tensor::from_slice(&self.labels[start..start + len]);
            (x, y)
        })
    }

    /// SHA-256 of the inputs' bytes and the labels, hex-encoded (score provenance).
    pub fn digest(&self) -> Result<String, ScoringError> {
        let mut h = Sha256::new();
        let flat = self.inputs.contiguous().view([-1]);
        let mut bytes = vec![0u8; flat.numel() * 4];
        torch(flat.f_copy_data_u8(&mut bytes, flat.numel()), || {
            "hashing calibration inputs".into()
        })?;
        h.update(format!("{:?}", self.inputs.size()).as_bytes());
        h.update(&bytes);
        for l in &self.labels {
            h.update(l.to_le_bytes());
        }
        Ok(hex::encode(h.finalize()))
    }

    /// Chooses the classes and samples the U-Score compares: every class with samples, or
    /// `max_classes` of them chosen with `seed`; per class up to `per_class` samples (chosen
    /// with `seed` when there are more), by [`fair_stats::stratified_sample`]. Returns
    /// (class, sample indices) ascending by class, and a note for every class with fewer
    /// than `per_class` samples (one note for all of them when there are many:
    /// [`fair_stats::StratifiedDraw::short_notes`]).
    pub fn class_samples(
        &self,
        max_classes: usize,
        per_class: usize,
        seed: u64,
    ) -> (Vec<(i64, Vec<usize>)>, Vec<String>) {
        let draw = fair_stats::stratified_sample(&self.labels, per_class, max_classes, seed);
        let notes = draw
            .short_notes(per_class, |c| c.to_string(), "calibration")
            .into_iter()
            .map(|n| format!("{n}; each class is compared with the samples it has"))
            .collect();
        (draw.classes, notes)
    }

    /// Checks the data fits a model with `classes` outputs and per-sample input `shape`:
    /// every label must be a class id below `classes`.
    pub fn check_fits(&self, shape: &[usize], classes: usize) -> Result<(), ScoringError> {
        let want: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        if self.sample_shape() != want {
            return Err(ScoringError::Data {
                path: None,
                detail: format!(
                    "the inputs have per-sample shape {:?}, but the model expects {want:?}",
                    self.sample_shape()
                ),
            });
        }
        if let Some(i) = self.labels.iter().position(|&l| l as u64 >= classes as u64) {
            return Err(ScoringError::Data {
                path: None,
                detail: format!(
                    "label of sample {i} is {}, but the model has {classes} outputs (class ids 0..{})",
                    self.labels[i],
                    classes.saturating_sub(1)
                ),
            });
        }
        Ok(())
    }
}
