//! `finetune.py` and `finetune.json`: every export carries a torchrun-ready PyTorch DDP
//! fine-tuning script and the settings it reads (data source, input transform, input shape,
//! classes, training defaults), so `torchrun --nproc_per_node N finetune.py` needs no flags
//! in the common case.
//!
//! The script is `assets/finetune.py` in this crate, included verbatim ([`FINETUNE_PY`]).
//! Relative paths in `finetune.json` are relative to the directory holding it.

use std::path::Path;

use fair_ir::Graph;
use serde::{Deserialize, Serialize};

use crate::error::SurgeryError;

/// The fine-tuning script written into every export as `finetune.py`.
pub const FINETUNE_PY: &str = include_str!("../assets/finetune.py");

/// The version of the `finetune.json` layout ([`FinetuneSpec::format`]).
pub const FINETUNE_FORMAT: u32 = 1;

/// What `finetune.json` holds: everything `finetune.py` needs besides the model files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneSpec {
    /// [`FINETUNE_FORMAT`] of the writer.
    pub format: u32,
    /// The model's name.
    pub model: String,
    /// The model's per-sample input shape (`[C, H, W]` for images).
    pub input: Vec<usize>,
    /// Number of classes (the output layer's width).
    pub classes: usize,
    /// Where the images come from; `None`: the script asks for `--data-source`.
    pub data: Option<ScriptData>,
    /// fair-pruner's input transform, recorded so the script feeds the model the same pixels.
    pub transform: ScriptTransform,
    /// Training defaults (each has a flag of the same name).
    pub train: ScriptTrain,
    /// Distillation from a teacher (e.g. the unpruned model), if any.
    pub teacher: Option<Teacher>,
}

/// A data source of `finetune.py`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ScriptData {
    /// Two files in fair-pruner's dataset format (`fair_data::Dataset::save`: `pixels` u8
    /// `[N, C, H, W]`, `labels` i64 `[N]`), e.g. the splits the pipeline writes.
    Fair {
        /// The training split.
        train: String,
        /// The test split.
        test: String,
    },
    /// The extracted CIFAR-10 binary directory (`cifar-10-batches-bin`).
    Cifar10 {
        /// The directory.
        path: String,
    },
    /// The extracted CIFAR-100 binary directory (`cifar-100-binary`; fine labels).
    Cifar100 {
        /// The directory.
        path: String,
    },
    /// A directory of IDX files (`train-images-idx3-ubyte[.gz]`, `t10k-...`).
    Idx {
        /// The directory.
        path: String,
    },
    /// ImageFolder trees (one sub-directory per class), read with torchvision as
    /// `fair_data::ImageFolder` reads them: evaluation resize of the shorter side to
    /// [`ScriptTransform::resize`] and centre crop; training the same, or with an
    /// [`ScriptTransform::augment`] RandomResizedCrop plus a flip when [`ScriptAugment::flip`].
    Folder {
        /// The training tree.
        train: String,
        /// The test (validation) tree.
        test: String,
    },
}

/// fair-pruner's input transform (`fair_data::Transform`), as the script reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptTransform {
    /// Per-channel mean after scaling to [0, 1] (one value, or one per channel).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation.
    pub std: Vec<f32>,
    /// Training-only augmentation (`None`: training uses the evaluation transform). Byte
    /// sources: zero padding + random crop, then flip; folder sources: RandomResizedCrop to
    /// the input size, then flip (`crop_padding` does not apply).
    pub augment: Option<ScriptAugment>,
    /// Folder sources: the shorter side is resized to this before the centre crop to the
    /// input size (default round(min(H, W)·256/224), torchvision's `Resize(256)` at 224).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<usize>,
}

/// Training-only augmentation: zero padding + random crop (byte sources) or
/// RandomResizedCrop (folder sources), horizontal flip.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptAugment {
    /// Byte sources: pad by this many pixels, then crop back at a random offset (0: no crop).
    pub crop_padding: usize,
    /// Flip horizontally with probability ½.
    pub flip: bool,
}

impl Default for ScriptTransform {
    fn default() -> Self {
        ScriptTransform {
            mean: vec![0.0],
            std: vec![1.0],
            augment: None,
            resize: None,
        }
    }
}

/// Training defaults of the script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptTrain {
    /// Epochs.
    pub epochs: usize,
    /// Global batch size (split over the processes).
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Label smoothing of the cross-entropy (0: none).
    pub label_smoothing: f64,
    /// Seed of shuffling and augmentation.
    pub seed: u64,
    /// The learning-rate schedule, per step: `{"kind": "cosine"}`, `{"kind": "constant"}` or
    /// `{"kind": "step", "every": EPOCHS, "gamma": FACTOR}` (fair-train's `Schedule`).
    pub schedule: serde_json::Value,
    /// The optimizer, fair-train's `Optimizer` in lower case: `"sgd"` (SGD with `momentum`
    /// and L2 `weight_decay`; the default, left out of `finetune.json`) or `"adamw"`
    /// (`torch.optim.AdamW` with β₁ = 0.9, β₂ = 0.999, ε = 1e-8 and decoupled `weight_decay`,
    /// as fair-train; `momentum` unused). The script refuses any other name.
    #[serde(default = "sgd", skip_serializing_if = "is_sgd")]
    pub optimizer: String,
}

/// `ScriptTrain::optimizer`'s default.
fn sgd() -> String {
    "sgd".into()
}

/// Whether `name` is the default optimizer (left out when written).
fn is_sgd(name: &String) -> bool {
    name == "sgd"
}

impl Default for ScriptTrain {
    /// fair-train's defaults.
    fn default() -> Self {
        ScriptTrain {
            epochs: 10,
            batch_size: 128,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            label_smoothing: 0.0,
            seed: 0,
            schedule: serde_json::json!({ "kind": "cosine" }),
            optimizer: sgd(),
        }
    }
}

/// Distillation settings: loss = (1 − weight)·CE + weight·T²·KL(teacher ‖ student) at
/// temperature T.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Teacher {
    /// Directory with the teacher's `model.py` and `model.safetensors`.
    pub path: String,
    /// Softmax temperature T.
    pub temperature: f64,
    /// Weight of the distillation term in [0, 1].
    pub weight: f64,
}

impl FinetuneSpec {
    /// The settings for `graph` with no data source, the identity transform and fair-train's
    /// defaults.
    pub fn for_graph(graph: &Graph) -> Self {
        let last = graph.nodes().len() - 1;
        let mut transform = ScriptTransform::default();
        if let (Some(mean), Some(std)) = crate::export::input_normalization(graph) {
            transform.mean = mean.iter().map(|&m| m as f32).collect();
            transform.std = std.iter().map(|&s| s as f32).collect();
        }
        FinetuneSpec {
            format: FINETUNE_FORMAT,
            model: graph.name().to_owned(),
            input: graph.shape_at(0).to_vec(),
            classes: graph.shape_at(last).first().copied().unwrap_or(0),
            data: None,
            transform,
            train: ScriptTrain::default(),
            teacher: None,
        }
    }
}

/// Writes `dir/finetune.py` and `dir/finetune.json` (from `spec`), each atomically.
pub fn write_finetune(dir: &Path, spec: &FinetuneSpec) -> Result<(), SurgeryError> {
    let json = serde_json::to_string_pretty(spec).expect("the spec serialises") + "\n";
    fair_fs::write_atomic(&dir.join("finetune.json"), json.as_bytes())?;
    fair_fs::write_atomic(&dir.join("finetune.py"), FINETUNE_PY.as_bytes())?;
    Ok(())
}
