//! Training, evaluation and fine-tuning for fair-pruner models.
//!
//! SGD with momentum and weight decay (or AdamW, [`Optimizer`]), a cosine or step
//! learning-rate schedule, seeded shuffling and augmentation, top-1 accuracy and loss,
//! progress bars (epoch, batch, throughput, ETA) and atomic safetensors checkpoints. The same
//! seed and thread count give the same result. After pruning, [`reconstruct_readers`] refits the layers that lost input
//! channels to the unpruned model's outputs, [`recalibrate_batch_norm`] re-estimates
//! BatchNorm running statistics and [`train_with_teacher`] fine-tunes with distillation from
//! the unpruned model.
//!
//! A compact VGG trained for one epoch on a small synthetic dataset (the left or the right
//! half of each 8×8 image is bright); with Fashion-MNIST it is
//! `fair_data::load_builtin(Builtin::FashionMnist, &cache_dir())?` and
//! `fair_zoo::build("vgg_compact", &[1, 28, 28], 10)?` (as `configs/fashion-vgg.toml`).
//!
//! ```
//! use fair_data::{Dataset, Transform};
//! use fair_train::{TrainSettings, evaluate, train};
//! let (n, classes) = (64, vec!["left".to_string(), "right".to_string()]);
//! let labels: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
//! let pixels = (0..n * 64)
//!     .map(|i| if (i % 8 < 4) == (labels[i / 64] == 0) { 220 } else { 30 })
//!     .collect();
//! let data = Dataset::new("toy/train", [1, 8, 8], pixels, labels, classes)?;
//! let graph = fair_zoo::build("vgg_compact", &[1, 8, 8], 2)?;
//! let mut model = fair_runtime::Model::new(graph, tch::Device::Cpu, 0)?;
//! let t = Transform { mean: vec![0.5], std: vec![0.25], augment: None, ..Default::default() };
//! let settings = TrainSettings { epochs: 1, batch_size: 16, ..TrainSettings::default() };
//! let epochs = train(&mut model, &data, Some(&data), &t, &t, &settings, false)?;
//! assert_eq!(epochs.len(), 1);
//! let top1 = evaluate(&model, &data, &t, 256)?.top1;
//! assert!((0.0..=1.0).contains(&top1));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Instant;

use fair_data::{DataError, ImageSource, Loader, Transform};
use fair_runtime::{Mode, Model, RuntimeError};
use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tch::nn::OptimizerConfig;

mod distill;
mod recalibrate;
mod reconstruct;

pub use distill::{Distillation, distillation_loss};
pub use recalibrate::{BnRecalibration, RecalibrationReport, recalibrate_batch_norm};
pub use reconstruct::{LayerFit, Reconstruction, ReconstructionReport, reconstruct_readers};

/// Errors of training and evaluation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A setting is out of range.
    #[error("invalid training setting {}: {detail}", spelled(.name))]
    Setting {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The loss became NaN or infinite.
    #[error(
        "the training loss became {value} at epoch {epoch}, batch {batch}: lower the learning rate"
    )]
    Diverged {
        /// Epoch (1-based).
        epoch: usize,
        /// Batch within the epoch.
        batch: usize,
        /// The loss.
        value: f64,
    },
    /// A statistic or value came out NaN or infinite.
    #[error("BatchNorm layer '{layer}': {detail}")]
    NonFinite {
        /// The layer.
        layer: String,
        /// What is not finite, and the likely cause.
        detail: String,
    },
    /// The distillation teacher does not fit the model being trained.
    #[error("distillation teacher: {0}")]
    Teacher(String),
    /// Data problems.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Runtime problems.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// libtorch failed (its message without the C++ backtrace).
    #[error("libtorch: {0}")]
    Torch(tch::TchError),
}

impl From<tch::TchError> for TrainError {
    fn from(e: tch::TchError) -> Self {
        TrainError::Torch(fair_runtime::without_backtrace(e))
    }
}

/// A training setting as the user writes it: the setting's name in backticks with `-` for
/// `_` (`` `distill-weight` ``, which a caller such as the CLI can respell as its flag) and
/// its config key.
fn spelled(name: &str) -> String {
    match name {
        "epochs" | "batch_size" | "lr" | "seed" => {
            format!("`{}` ([train] {name})", name.replace('_', "-"))
        }
        "data" => "data".to_owned(),
        "distill_weight" | "distill_temperature" => {
            format!("`{}` ([prune] {name})", name.replace('_', "-"))
        }
        "batches" => "batches (`bn-recalibrate`, [prune] bn_recalibrate)".to_owned(),
        "reconstruct_batches" => "batches (`reconstruct`, [prune] reconstruct)".to_owned(),
        other => format!("[train] {other}"),
    }
}

/// The most epochs a run may ask for: far more than any schedule needs, and few enough that
/// the per-epoch records stay small.
pub const MAX_EPOCHS: usize = 100_000;

/// Learning-rate schedule over the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", deny_unknown_fields)]
pub enum Schedule {
    /// Cosine decay from the base rate to 0 over all steps.
    Cosine,
    /// Multiply the rate by `gamma` every `every` epochs.
    Step {
        /// Epochs between decays.
        every: usize,
        /// Factor.
        gamma: f64,
    },
    /// A constant rate.
    Constant,
}

/// Training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// Passes over the training data.
    pub epochs: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Schedule.
    pub schedule: Schedule,
    /// Seed for shuffling, augmentation and dropout.
    pub seed: u64,
    /// The optimizer (`optimizer = "adamw"` in a config's `[train]`) [default: SGD].
    #[serde(default, skip_serializing_if = "Optimizer::is_sgd")]
    pub optimizer: Optimizer,
}

/// The optimizer of a training or fine-tuning run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// SGD with `momentum` and L2 `weight_decay` (added to the gradient).
    #[default]
    Sgd,
    /// AdamW (β₁ = 0.9, β₂ = 0.999, ε = 1e-8, as exported `finetune.py` builds
    /// `torch.optim.AdamW`) with decoupled `weight_decay`, which multiplies the weights by
    /// 1 − lr·weight_decay each step (so lr·weight_decay must be below 1); `momentum` is unused.
    /// Small vision transformers train far better with it than with SGD.
    Adamw,
}

impl Optimizer {
    /// Whether this is SGD (the default, left out when settings are written).
    pub fn is_sgd(&self) -> bool {
        *self == Optimizer::Sgd
    }
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            epochs: 10,
            batch_size: 128,
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            schedule: Schedule::Cosine,
            seed: 0,
            optimizer: Optimizer::Sgd,
        }
    }
}

impl TrainSettings {
    /// Checks every setting (epochs, batch size, learning rate, momentum, decay, schedule).
    pub fn check(&self) -> Result<(), TrainError> {
        let bad = |name, detail: String| Err(TrainError::Setting { name, detail });
        if !(1..=MAX_EPOCHS).contains(&self.epochs) {
            return bad(
                "epochs",
                format!("must be in 1..={MAX_EPOCHS}, found {}", self.epochs),
            );
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        // The optimiser holds its rates in float32 (libtorch): larger values cannot be used.
        let f32_max = f64::from(f32::MAX);
        if !(self.lr > 0.0 && self.lr <= f32_max) {
            return bad(
                "lr",
                format!(
                    "must be a positive number of at most {f32_max:e} (float32), found {}",
                    self.lr
                ),
            );
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(
                "momentum",
                format!("must be in [0, 1), found {}", self.momentum),
            );
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay <= f32_max) {
            return bad(
                "weight_decay",
                format!(
                    "must be a number ≥ 0 and at most {f32_max:e} (float32), found {}",
                    self.weight_decay
                ),
            );
        }
        if let Schedule::Step { every, gamma } = self.schedule
            && (every == 0 || gamma.is_nan() || gamma <= 0.0)
        {
            return bad("schedule", "step needs every ≥ 1 and gamma > 0".into());
        }
        // AdamW multiplies every weight by 1 − lr·weight_decay each step: at lr·wd ≥ 1 that
        // zeroes or flips the weights.
        if self.optimizer == Optimizer::Adamw && self.lr * self.weight_decay >= 1.0 {
            return bad(
                "weight_decay",
                format!(
                    "with optimizer = \"adamw\", lr × weight_decay must be below 1 (the \
                     decoupled decay multiplies the weights by 1 − lr × weight_decay each \
                     step), found lr {} × weight_decay {} = {}",
                    self.lr,
                    self.weight_decay,
                    self.lr * self.weight_decay
                ),
            );
        }
        Ok(())
    }

    fn lr_at(&self, epoch: usize, step: usize, steps_per_epoch: usize) -> f64 {
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Step { every, gamma } => self.lr * gamma.powi((epoch / every) as i32),
            Schedule::Cosine => {
                let total = (self.epochs * steps_per_epoch) as f64;
                let t = (epoch * steps_per_epoch + step) as f64;
                0.5 * self.lr * (1.0 + (std::f64::consts::PI * t / total).cos())
            }
        }
    }
}

/// Figures of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EpochReport {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training top-1 (on the augmented batches).
    pub train_top1: f64,
    /// Test evaluation, if a test split was given.
    pub test: Option<Evaluation>,
    /// Wall-clock seconds of the training pass.
    pub seconds: f64,
    /// Training samples per second.
    pub samples_per_second: f64,
}

/// Top-1 accuracy and mean loss over a dataset.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Evaluation {
    /// Fraction correct.
    pub top1: f64,
    /// Mean cross-entropy.
    pub loss: f64,
}

/// A training run, as `fair-pruner train --json` (and `finetune --json`) prints it. Its JSON
/// Schema is `docs/train-schema.json` (checked by a test).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainReport {
    /// Where the weights were written.
    pub out: std::path::PathBuf,
    /// Wall-clock seconds of the whole run (training and evaluation).
    pub seconds: f64,
    /// One entry per epoch, as [`train`] returns them.
    pub epochs: Vec<EpochReport>,
    /// Training samples per second over all epochs (training passes only).
    pub samples_per_second: f64,
}

impl TrainReport {
    /// The report of a run that wrote `out` after `seconds`, with the `epochs` [`train`]
    /// returned. The throughput is the samples of every training pass over their seconds.
    pub fn new(out: &std::path::Path, seconds: f64, epochs: Vec<EpochReport>) -> Self {
        let samples: f64 = epochs
            .iter()
            .map(|r| r.samples_per_second * r.seconds)
            .sum();
        let train_seconds: f64 = epochs.iter().map(|r| r.seconds).sum();
        TrainReport {
            out: out.to_owned(),
            seconds,
            samples_per_second: samples / train_seconds,
            epochs,
        }
    }
}

/// An evaluation on a named split, as `fair-pruner eval --json` prints it. Its JSON Schema
/// is `docs/eval-schema.json` (checked by a test).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalReport {
    /// The split's name (e.g. `cifar10/test`).
    pub split: String,
    /// How many images it holds.
    pub images: usize,
    /// Fraction correct.
    pub top1: f64,
    /// Mean cross-entropy.
    pub loss: f64,
}

impl EvalReport {
    /// The report of `evaluation` on `data`.
    pub fn new(data: &dyn ImageSource, evaluation: &Evaluation) -> Self {
        EvalReport {
            split: data.name().to_owned(),
            images: data.len(),
            top1: evaluation.top1,
            loss: evaluation.loss,
        }
    }
}

pub(crate) fn input_shape(model: &Model) -> [usize; 3] {
    match model.graph().shape_at(0) {
        &[c, h, w] => [c, h, w],
        other => [other[0], 1, 1],
    }
}

fn bar(show: bool, len: usize, msg: String) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len as u64);
    b.set_style(
        ProgressStyle::with_template(
            "{msg:<18} [{bar:30}] {pos}/{len} batches {per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    b.set_message(msg);
    b
}

/// Batches built ahead of the one in use (see [`Loader::prefetch`]).
pub(crate) const PREFETCH: usize = 2;

/// Evaluates `model` (eval mode) on all of `data` (an in-memory [`fair_data::Dataset`] or a
/// streamed [`fair_data::ImageFolder`]; the next batches are built while one is evaluated).
pub fn evaluate(
    model: &Model,
    data: &dyn ImageSource,
    transform: &Transform,
    batch_size: usize,
) -> Result<Evaluation, TrainError> {
    let loader = Loader {
        source: data,
        transform,
        input: input_shape(model),
        train: false,
    };
    let device = model.device();
    if data.is_empty() {
        // An accuracy over no images would be NaN, and look like broken weights.
        return Err(TrainError::Data(DataError::Invalid(format!(
            "'{}' holds no images to evaluate",
            data.name()
        ))));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let idx: Vec<usize> = (0..data.len()).collect();
    let (mut correct, mut loss_sum) = (0i64, 0.0f64);
    std::thread::scope(|s| -> Result<(), TrainError> {
        for batch in loader.prefetch(s, &idx, batch_size.max(1), PREFETCH, &mut rng) {
            let (x, y) = batch?;
            let (x, y) = (x.to_device(device), y.to_device(device));
            let logits = tch::no_grad(|| model.forward(&x, Mode::Eval))?;
            loss_sum += logits
                .f_cross_entropy_loss::<tch::Tensor>(&y, None, tch::Reduction::Sum, -100, 0.0)?
                .double_value(&[]);
            correct += logits
                .argmax(-1, false)
                .eq_tensor(&y)
                .sum(tch::Kind::Int64)
                .int64_value(&[]);
        }
        Ok(())
    })?;
    Ok(Evaluation {
        top1: correct as f64 / data.len() as f64,
        loss: loss_sum / data.len() as f64,
    })
}

/// Trains `model` in place on `train` (shuffled each epoch with the seed, augmented by
/// `train_transform`) with the cross-entropy loss, evaluating on `test` after every epoch
/// when given. Batches are built on a background thread while the previous one trains, with
/// the same seeded random stream as building them in turn, so the result does not depend on
/// the prefetching. The same as [`train_with_teacher`] without a teacher.
pub fn train(
    model: &mut Model,
    train: &dyn ImageSource,
    test: Option<&dyn ImageSource>,
    train_transform: &Transform,
    eval_transform: &Transform,
    settings: &TrainSettings,
    progress: bool,
) -> Result<Vec<EpochReport>, TrainError> {
    train_with_teacher(
        model,
        None,
        train,
        test,
        train_transform,
        eval_transform,
        settings,
        progress,
    )
}

/// [`train`], optionally distilling from `teacher`: with `Some((teacher, d))` the loss of
/// every batch is [`distillation_loss`] — (1 − w)·CE + w·T²·KL(softmax(teacher/T) ‖
/// softmax(student/T)) — where the teacher sees the same (augmented) batch in eval mode,
/// without gradients, and is never changed. The reported training loss is that combined
/// loss. The teacher must take the same input shape and give as many classes as `model`;
/// it may live on another device. Without a teacher this is exactly [`train`].
#[allow(clippy::too_many_arguments)]
pub fn train_with_teacher(
    model: &mut Model,
    teacher: Option<(&Model, &Distillation)>,
    train: &dyn ImageSource,
    test: Option<&dyn ImageSource>,
    train_transform: &Transform,
    eval_transform: &Transform,
    settings: &TrainSettings,
    progress: bool,
) -> Result<Vec<EpochReport>, TrainError> {
    settings.check()?;
    for split in std::iter::once(train).chain(test) {
        if split.is_empty() {
            return Err(TrainError::Data(DataError::Invalid(format!(
                "'{}' holds no images: nothing to train on or measure",
                split.name()
            ))));
        }
    }
    if let Some((t, d)) = teacher {
        d.check()?;
        check_teacher(model, t)?;
    }
    if train.is_empty() {
        return Err(TrainError::Setting {
            name: "data",
            detail: format!("the training split '{}' is empty", train.name()),
        });
    }
    let input = input_shape(model);
    let device = model.device();
    tch::manual_seed(settings.seed as i64);
    let mut rng = rand::rngs::StdRng::seed_from_u64(settings.seed);
    let mut opt = match settings.optimizer {
        Optimizer::Sgd => tch::nn::Sgd {
            momentum: settings.momentum,
            dampening: 0.0,
            wd: settings.weight_decay,
            nesterov: false,
        }
        .build(model.var_store(), settings.lr)?,
        Optimizer::Adamw => tch::nn::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            wd: settings.weight_decay,
            eps: 1e-8,
            amsgrad: false,
        }
        .build(model.var_store(), settings.lr)?,
    };
    let steps = train.len().div_ceil(settings.batch_size);
    let mut reports = Vec::with_capacity(settings.epochs);
    for epoch in 0..settings.epochs {
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let b = bar(
            progress,
            steps,
            format!("epoch {}/{}", epoch + 1, settings.epochs),
        );
        let start = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0i64, 0usize);
        let loader = Loader {
            source: train,
            transform: train_transform,
            input,
            train: true,
        };
        let rng = &mut rng;
        let order = &order;
        std::thread::scope(|s| -> Result<(), TrainError> {
            let batches = loader.prefetch(s, order, settings.batch_size, PREFETCH, rng);
            for (step, batch) in batches.enumerate() {
                opt.set_lr(settings.lr_at(epoch, step, steps));
                let (x, y) = batch?;
                let n = y.size()[0] as usize;
                let (x, y) = (x.to_device(device), y.to_device(device));
                let logits = model.forward(&x, Mode::Train)?;
                let loss = match teacher {
                    None => logits.f_cross_entropy_loss::<tch::Tensor>(
                        &y,
                        None,
                        tch::Reduction::Mean,
                        -100,
                        0.0,
                    )?,
                    Some((t, d)) => {
                        let t_logits =
                            tch::no_grad(|| t.forward(&x.to_device(t.device()), Mode::Eval))?
                                .to_device(device);
                        distillation_loss(&logits, &t_logits, &y, d)?
                    }
                };
                let value = loss.double_value(&[]);
                if !value.is_finite() {
                    return Err(TrainError::Diverged {
                        epoch: epoch + 1,
                        batch: step,
                        value,
                    });
                }
                opt.backward_step(&loss);
                loss_sum += value * n as f64;
                correct += tch::no_grad(|| {
                    logits
                        .argmax(-1, false)
                        .eq_tensor(&y)
                        .sum(tch::Kind::Int64)
                        .int64_value(&[])
                });
                seen += n;
                b.inc(1);
            }
            Ok(())
        })?;
        b.finish_and_clear();
        let seconds = start.elapsed().as_secs_f64();
        let test_eval = match test {
            Some(t) => Some(evaluate(model, t, eval_transform, 512)?),
            None => None,
        };
        let r = EpochReport {
            epoch: epoch + 1,
            train_loss: loss_sum / seen as f64,
            train_top1: correct as f64 / seen as f64,
            test: test_eval,
            seconds,
            samples_per_second: seen as f64 / seconds,
        };
        tracing::info!(
            epoch = r.epoch,
            loss = r.train_loss,
            train_top1 = r.train_top1,
            test_top1 = r.test.map(|t| t.top1),
            samples_per_second = r.samples_per_second,
            "epoch done"
        );
        if progress {
            eprintln!(
                "epoch {:>3}/{}: loss {:.4}, train top-1 {:.2}%{}, {:.0} samples/s, {:.1} s",
                r.epoch,
                settings.epochs,
                r.train_loss,
                100.0 * r.train_top1,
                r.test
                    .map(|t| format!(", test top-1 {:.2}% (loss {:.4})", 100.0 * t.top1, t.loss))
                    .unwrap_or_default(),
                r.samples_per_second,
                r.seconds
            );
        }
        reports.push(r);
    }
    Ok(reports)
}

/// Refuses a teacher whose input shape or class count differs from the student's.
fn check_teacher(model: &Model, teacher: &Model) -> Result<(), TrainError> {
    let (s, t) = (model.graph(), teacher.graph());
    if s.shape_at(0) != t.shape_at(0) {
        return Err(TrainError::Teacher(format!(
            "'{}' takes inputs {:?} but the model '{}' takes {:?}",
            t.name(),
            t.shape_at(0),
            s.name(),
            s.shape_at(0)
        )));
    }
    let out = |g: &fair_ir::Graph| g.shape_at(g.nodes().len() - 1).to_vec();
    if out(s) != out(t) {
        return Err(TrainError::Teacher(format!(
            "'{}' outputs {:?} but the model '{}' outputs {:?}: the class counts must match",
            t.name(),
            out(t),
            s.name(),
            out(s)
        )));
    }
    Ok(())
}

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
