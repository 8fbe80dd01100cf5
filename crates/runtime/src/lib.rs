//! Executes fair-pruner IR graphs with libtorch (through `tch`).
//!
//! A [`Model`] pairs a validated [`fair_ir::Graph`] with its parameters on a device. It runs
//! forward passes in eval or training mode (including a training mode that leaves BatchNorm's
//! running statistics untouched, for scoring), records any set of named nodes ("taps") in one
//! pass, and loads and saves weights as safetensors under PyTorch state-dict names — so
//! weights move to and from torchvision models without a mapping table.
//! [`ReuseFreedBlocks`] keeps libtorch's freed blocks for the next batch during long runs of
//! forward passes (glibc would otherwise map and zero them afresh every batch).
//!
//! ```
//! use fair_runtime::{Model, Mode};
//! use tch::{Device, Kind, Tensor};
//!
//! let graph = fair_zoo::build("resnet20", &[3, 32, 32], 10)?;
//! let model = Model::new(graph.clone(), Device::Cpu, 0)?;
//! let x = Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu));
//! let out = tch::no_grad(|| model.forward_with_taps(&x, Mode::Eval, &["layer1.0.conv1", "layer3.2.relu2"]))?;
//! assert_eq!(out.output.size(), [8, 10]);
//! assert_eq!(out.taps["layer1.0.conv1"].size(), [8, 16, 32, 32]);
//!
//! // Weights round-trip through safetensors under PyTorch state-dict names.
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("resnet20.safetensors");
//! model.save_weights(&path)?;
//! let again = Model::from_safetensors(graph, &path, Device::Cpu)?;
//! let y = tch::no_grad(|| again.forward(&x, Mode::Eval))?;
//! assert!(y.allclose(&out.output, 1e-5, 1e-6, false));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod allocator;
mod error;
mod kernel;
mod model;
mod tensors;

pub use allocator::{AllocatorTuning, REUSE_UP_TO, ReuseFreedBlocks};
pub use error::{RuntimeError, tch_context, without_backtrace};
pub use model::{Forward, Mode, Model, available_memory, parse_device};
pub use tensors::{check_finite, read_safetensors, safetensors_bytes, write_safetensors};

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
