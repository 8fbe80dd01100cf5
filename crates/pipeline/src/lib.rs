//! The fair-pruner pipeline as a library: what `fair-pruner prune` does, as one builder.
//!
//! Data flows one way, through the stage functions of [`stages`], which [`Pruner::run`]
//! composes and which also run one by one: model + calibration data → scores
//! ([`stages::score`]: once; reused, whole or in part, when they fit) → per-layer counts at
//! every goal (an α, or a MACs/parameters target, never re-scoring) and a plan resolved over
//! coupled layers ([`stages::selector`], [`stages::select`]) → surgery ([`stages::apply`])
//! → reader reconstruction, then BatchNorm recalibration ([`stages::after_surgery`]) →
//! evaluation and optional fine-tuning ([`stages::evaluate`], [`stages::finetune`]) →
//! interleaved latency ([`measure`]) → export ([`stages::export`]) and a typed
//! [`PruneReport`] (`report.json`, whose JSON Schema is `docs/report-schema.json`,
//! versioned by [`REPORT_SCHEMA_VERSION`]) with `report.md` and SVG charts.
//!
//! ```no_run
//! use fair_pipeline::{Goal, GroupRule, Pruner};
//! use fair_runtime::Model;
//! use fair_scoring::Calibration;
//! use tch::{Device, Kind, Tensor};
//!
//! let graph = fair_zoo::build("resnet20", &[3, 32, 32], 10)?;
//! let model = Model::new(graph, Device::Cpu, 0)?;
//! let x = Tensor::randn([320, 3, 32, 32], (Kind::Float, Device::Cpu));
//! let y = Tensor::arange(320, (Kind::Int64, Device::Cpu)).remainder(10);
//! let calibration = Calibration::new(x, &y, "random images")?;
//! let outcome = Pruner::new(&model)
//!     // No training split: the preset's steps after surgery are turned off, explicitly.
//!     .no_reconstruction()
//!     .no_recalibration()
//!     .calibration(&calibration)
//!     .goal(Goal::Macs(0.5))
//!     .rule(GroupRule::Intersection)
//!     .out("resnet20-pruned")
//!     .run()?;
//! assert!(outcome.report.results[0].achieved.macs >= 0.5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`RunConfig`] reads the same TOML configs as the CLI (`configs/`), with the data sources
//! and calibration draw. [`RawSettings`] (a config's `[prune]` and explicit overrides) and
//! the preset resolve to one [`PruneSettings`]; [`ConfigRun::load`] loads a config's model,
//! data and calibration samples, and [`Pruner::from_config`] makes of it the run
//! `fair-pruner prune --config` makes.

pub mod charts;
mod config;
mod error;
mod guard;
mod latency;
mod latency_correct;
mod latency_table;
mod onnx;
mod preset;
mod pruner;
mod report;
mod settings;
pub mod stages;
mod timing;
mod torchrun;

pub use config::{
    DATA_SOURCES, DataSection, DataSource, DrawSettings, FINETUNE_EPOCHS, MAX_PIXELS_SETTING,
    ModelSection, OutputSection, PruneSection, RunConfig, UnknownDataSource, image_input,
    model_normalization, with_normalization,
};
pub use error::{
    MAX_LINE_CHARS, PipelineError, cli_text, error_text, flag_text, flags_in, printable,
};
pub use fair_analysis::{Goal, GroupRule, Method};
pub use fair_fs::OutputGuard;
pub use fair_threshold::CountOptions;
pub use fair_train::{BnRecalibration, Distillation, Reconstruction};
pub use guard::{guard_model_file, output_guard};
pub use latency::{Latency, LatencyOptions, Spread, measure};
pub use latency_correct::{
    Corrected, CorrectionOptions, DEFAULT_LATENCY_SETTLE, DEFAULT_LATENCY_TOLERANCE,
    correct_latency, within,
};
pub use latency_table::{
    LatencyRuntime, LatencySettings, TableSource, TimedWidths, grid, measure_table,
    measure_table_on, monotone, step_of, table_for, table_options, widths_to_time,
};
pub use onnx::{ImportReport, import_onnx, is_onnx, load_graph, load_graph_with, onnx_model};
pub use preset::{Preset, PresetSettings};
pub use pruner::{LIBTORCH_VERSION, PruneOutcome, Pruner};
pub use report::{
    Accuracy, AfterSurgerySteps, CalibrationInfo, CriterionInfo, DistillationInfo, LatencyRound,
    LatencyTargetResult, LayerResult, MeasuredLatency, ModelFigures, PruneReport, PruneResult,
    REPORT_SCHEMA_VERSION, RecalibrationInfo, ReconstructedLayer, ReconstructionInfo, Reduction,
    RuntimeLatency, ScoringInfo, SelectionSettings, StepStatus, TorchrunRun, report_schema,
};
pub use settings::{
    ConfigRun, DEFAULT_CRITERIA, DEFAULT_FINETUNE_LR, DEFAULT_OUT, DEFAULT_PROTECT_BY,
    DEFAULT_REMOVE_BY, GROUPED_CONVS, LoadedModel, PruneSettings, RawSettings, Signals,
    check_classes, check_memory_bound, check_weights, load_model, output_classes,
};
pub use timing::{HelperTimeouts, LatencyTimer, PASS_PER_FIRST_RUN, default_python};
pub use torchrun::{DATA_DIR, Distill, PYTHON_ENV, TEACHER_DIR, Torchrun, TorchrunData};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Data shared by the unit tests of the pipeline's modules.
#[cfg(test)]
mod test_data {
    use fair_data::Dataset;

    /// `n` 8×8 grey images of two classes (alternating labels), deterministic pixels.
    pub(crate) fn toy(n: usize) -> Dataset {
        let labels: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
        let pixels = (0..n * 64)
            .map(|i| ((i * 37 + (i / 64) * 11) % 251) as u8)
            .collect();
        Dataset::new(
            "toy/train",
            [1, 8, 8],
            pixels,
            labels,
            vec!["a".into(), "b".into()],
        )
        .unwrap()
    }
}
