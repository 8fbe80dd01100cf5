//! Model surgery: turns a prune plan into a smaller graph and smaller weights, keeping
//! coupled channels consistent, and exports the result so plain PyTorch can run it.
//!
//! - [`analyze`] derives channel dependency groups from the IR, generically: residual adds
//!   couple the spaces that meet; concatenations place each producer's channels at an offset
//!   in every reader; BatchNorm, ReLU, pooling and dropout pass channels through; flatten maps
//!   channel c to its H·W features; depthwise convolutions follow their input.
//! - [`apply`] removes the units of a [`Plan`] (coupled layers settle by a [`GroupRule`]) and
//!   slices every tensor that reads them; the input model is never modified.
//! - [`export`] writes a directory with the weights (safetensors), the IR (TOML) and a
//!   standalone PyTorch module.
//!
//! ```no_run
//! use fair_surgery::{ApplyOptions, Plan};
//! let graph = fair_zoo::build("resnet56", &[3, 32, 32], 10)?;
//! let model = fair_runtime::Model::new(graph, tch::Device::Cpu, 0)?;
//! // Remove channels 0 and 5 of the first stage (the stem and every block output of stage 1
//! // are coupled by the residual adds, so the plan names them all).
//! let stage1: Vec<String> = fair_surgery::analyze(model.graph(), &[])?.groups().iter()
//!     .find(|g| g.layers.contains(&"conv1".to_string())).unwrap().layers.clone();
//! let mut plan = Plan::new();
//! for layer in &stage1 { plan = plan.remove(layer, [0, 5]); }
//! let pruned = fair_surgery::apply(&model, &plan, &ApplyOptions::default())?;
//! println!("{} → {} parameters", pruned.report.params.0, pruned.report.params.1);
//! fair_surgery::export(&pruned.model, std::path::Path::new("resnet56-pruned"))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod apply;
mod error;
mod export;
mod groups;
mod plan;

pub use apply::{ApplyOptions, LayerReport, Pruned, Report, apply, kept_units};
pub use error::SurgeryError;
pub use export::{export, pytorch_module};
pub use groups::{ChannelGroups, Group, analyze};
pub use plan::{GroupRule, Plan};

use fair_ir::Graph;

/// Names of the layers whose units may be pruned: every Conv2d and Linear except the
/// network's output layer, in topological order.
pub fn prunable_layers(graph: &Graph) -> Vec<String> {
    graph
        .prunable_layers()
        .into_iter()
        .map(str::to_owned)
        .collect()
}
