//! Model surgery: applies a prune plan to a model's weights and exports the smaller model so
//! plain PyTorch can run it.
//!
//! The pure analysis — dependency groups, plans, group rules, the narrowed graph and the
//! slicing indices — lives in [`fair_analysis`] (no libtorch). This crate does the tensor
//! half: [`apply`] slices every parameter along the axes its op's contract names
//! (`fair_ir::ParamSpec::out_axis` / `in_axis`), and [`export`] writes the weights
//! (safetensors), the IR (TOML) and a standalone PyTorch module generated from each op's
//! contract, with `finetune.py` (torchrun-ready PyTorch DDP fine-tuning, see
//! [`FinetuneSpec`]).
//!
//! ```
//! use fair_analysis::{Plan, ResolveOptions};
//! let graph = fair_zoo::build("resnet20", &[3, 32, 32], 10)?;
//! let model = fair_runtime::Model::new(graph, tch::Device::Cpu, 0)?;
//! // Remove channels 0 and 5 of the first stage (the stem and every block output of stage 1
//! // are coupled by the residual adds, so the plan names them all).
//! let stage1: Vec<String> = fair_analysis::analyze(model.graph(), &[])?.groups().iter()
//!     .find(|g| g.layers.contains(&"conv1".to_string())).unwrap().layers.clone();
//! let mut plan = Plan::new();
//! for layer in &stage1 { plan = plan.remove(layer, [0, 5]); }
//! let pruned = fair_surgery::apply(&model, &plan, &ResolveOptions::default())?;
//! assert_eq!(pruned.model.graph().units("conv1"), Some(14));
//! let (before, after) = pruned.report.params;
//! assert!(after < before);
//!
//! let dir = tempfile::tempdir()?;
//! fair_surgery::export(&pruned.model, dir.path())?;
//! for file in ["model.safetensors", "model.toml", "model.py", "model.onnx", "finetune.py"] {
//!     assert!(dir.path().join(file).is_file(), "{file} is missing");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod apply;
mod error;
mod export;
mod finetune;

pub use apply::{ApplyReport, Pruned, apply, apply_resolution};
pub use error::SurgeryError;
pub use export::{
    export, export_with, input_normalization, onnx_bytes, onnx_tensors, pytorch_module,
    with_input_normalization,
};
pub use finetune::{
    FINETUNE_FORMAT, FINETUNE_PY, FinetuneSpec, ScriptAugment, ScriptData, ScriptTrain,
    ScriptTransform, Teacher, write_finetune,
};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
