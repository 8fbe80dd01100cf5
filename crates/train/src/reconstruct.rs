//! Reader reconstruction: after surgery, refitting the weights of every convolution and linear
//! layer that lost input channels so that its output on training data matches the unpruned
//! model's, by least squares (a fair-pruner extension; the idea of He et al., "Channel
//! Pruning for Accelerating Very Deep Neural Networks", 2017, applied to the readers of the
//! removed units).

use fair_analysis::Resolution;
use fair_data::{ImageSource, Loader, Transform};
use fair_ir::{AfterSurgery, Window};
use fair_runtime::{Mode, Model};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::recalibrate::draw_order;
use crate::{PREFETCH, TrainError, input_shape};

/// How [`reconstruct_readers`] draws its data and regularises its fits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reconstruction {
    /// Batches of training data each layer is fitted on (at least 1).
    pub batches: usize,
    /// Samples per batch (at least 1; at most the size of the data).
    pub batch_size: usize,
    /// Ridge strength towards the surgery's sliced weights, relative to the mean diagonal of
    /// the layer's input Gram matrix (≥ 0; 0 is plain least squares).
    pub ridge: f64,
    /// Layers whose fit has more unknowns per output channel than this (input channels ×
    /// kernel area, + 1 for a bias) are left as the surgery sliced them: their Gram matrix
    /// would be too large to hold (at least 1).
    pub max_inputs: usize,
    /// Seed of the random order the batches are drawn in.
    pub seed: u64,
}

impl Default for Reconstruction {
    /// 8 batches of 128 samples, ridge 1e-3, at most 8192 unknowns per output channel,
    /// seed 0.
    fn default() -> Self {
        Reconstruction {
            batches: 8,
            batch_size: 128,
            ridge: 1e-3,
            max_inputs: 8192,
            seed: 0,
        }
    }
}

impl Reconstruction {
    /// Checks that `batches`, `batch_size` and `max_inputs` are at least 1 and `ridge` is a
    /// finite number ≥ 0.
    pub fn check(&self) -> Result<(), TrainError> {
        for (name, value) in [
            ("reconstruct_batches", self.batches),
            ("batch_size", self.batch_size),
            ("max_inputs", self.max_inputs),
        ] {
            if value == 0 {
                return Err(TrainError::Setting {
                    name,
                    detail: "reader reconstruction needs at least 1".into(),
                });
            }
        }
        if !(self.ridge.is_finite() && self.ridge >= 0.0) {
            return Err(TrainError::Setting {
                name: "ridge",
                detail: format!(
                    "the reconstruction ridge must be a finite number ≥ 0, got {}",
                    self.ridge
                ),
            });
        }
        if self
            .batches
            .checked_mul(self.batch_size)
            .is_none_or(|n| n > crate::recalibrate::MAX_SAMPLES)
        {
            return Err(TrainError::Setting {
                name: "reconstruct_batches",
                detail: format!(
                    "{} batches of {} samples is more than reader reconstruction draws \
                     ({} samples at most; a few thousand are plenty)",
                    self.batches,
                    self.batch_size,
                    crate::recalibrate::MAX_SAMPLES
                ),
            });
        }
        Ok(())
    }
}

/// One refitted (or skipped) layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerFit {
    /// The layer.
    pub layer: String,
    /// Unknowns per output channel (input channels × kernel area, + 1 for a bias).
    pub inputs: usize,
    /// Squared error of the layer's output against the unpruned model's on the drawn data,
    /// relative to the squared norm of the unpruned output, with the surgery's weights
    /// (`None` for a skipped layer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_before: Option<f64>,
    /// The same with the refitted weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_after: Option<f64>,
    /// Why the layer was left as it was, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// What [`reconstruct_readers`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconstructionReport {
    /// Every layer that lost input channels, in graph order.
    pub layers: Vec<LayerFit>,
    /// Samples each layer was fitted on.
    pub samples: usize,
}

/// Each batch is fitted in pieces of whole samples of at most this many rows (positions ×
/// samples) × unknowns, which bounds the memory of the unfolded inputs and the rows each f32
/// product sums over.
const PIECE_ELEMENTS: i64 = 1 << 22;

/// Refits, in graph order, every convolution (groups = 1) and linear layer of `pruned` that
/// lost input channels in `resolution` (made for `original`'s graph; `pruned` is what
/// `fair_surgery::apply_resolution` made of it). Each layer's weights and bias become the
/// least-squares solution of
///
/// ```text
/// min_W ‖Y − A·W‖² + λ·s·‖W − W₀‖²
/// ```
///
/// with A the layer's input in `pruned` (for a convolution, its unfolded patches; a column
/// of ones for the bias), Y the layer's output in `original` on the same samples (only the
/// output channels the layer keeps), W₀ the surgery's sliced weights, λ = `settings.ridge`
/// and s the mean diagonal of AᵀA. Both models run in eval mode. Because layers are refitted
/// in order and each one's input comes from the already refitted layers before it, a layer
/// also corrects what the layers before it could not. The fit never raises the layer's
/// error on the drawn data above the surgery's (W₀ is a candidate of the minimisation).
///
/// BatchNorm statistics are left as they are; run [`crate::recalibrate_batch_norm`]
/// afterwards. Images are transformed with augmentation off. Nothing is changed when a
/// fit fails: errors are a setting out of range, empty data, a graph that does not match the
/// resolution, and a solution that is NaN or infinite ([`TrainError::NonFinite`], naming the
/// layer).
pub fn reconstruct_readers(
    original: &Model,
    pruned: &Model,
    resolution: &Resolution,
    data: &dyn ImageSource,
    transform: &Transform,
    settings: &Reconstruction,
) -> Result<ReconstructionReport, TrainError> {
    let mut written = Vec::new();
    let result = fit_in_order(
        original,
        pruned,
        resolution,
        data,
        transform,
        settings,
        &mut written,
    );
    if result.is_err() {
        // Put back every layer refitted before the failure.
        tch::no_grad(|| -> Result<(), TrainError> {
            for (name, old) in written.iter().rev() {
                pruned.tensor(name)?.shallow_clone().f_copy_(old)?;
            }
            Ok(())
        })?;
    }
    result
}

/// [`reconstruct_readers`] without the clean-up: `written` receives a copy of every tensor
/// before it is overwritten.
fn fit_in_order(
    original: &Model,
    pruned: &Model,
    resolution: &Resolution,
    data: &dyn ImageSource,
    transform: &Transform,
    settings: &Reconstruction,
    written: &mut Vec<(String, Tensor)>,
) -> Result<ReconstructionReport, TrainError> {
    settings.check()?;
    if pruned.graph() != resolution.pruned_graph() {
        return Err(TrainError::Setting {
            name: "pruned",
            detail: format!(
                "reader reconstruction: the pruned model's graph '{}' is not the one the \
                 resolution made",
                pruned.graph().name()
            ),
        });
    }
    let before = original.graph();
    // (node, its input, its refit (window, groups, bias), kept outputs, unknowns)
    let mut layers = Vec::new();
    for (position, node) in before.nodes().iter().enumerate() {
        let slice = resolution.node_slice(position);
        if slice.input.is_none() {
            continue;
        }
        let AfterSurgery::Refit(refit) = node.op.after_surgery() else {
            continue;
        };
        let bias = refit.bias;
        let after = pruned
            .graph()
            .node(&node.name)
            .map_err(|_| TrainError::Setting {
                name: "pruned",
                detail: format!("the pruned model has no layer '{}'", node.name),
            })?;
        let unknowns = match after.op.after_surgery() {
            AfterSurgery::Refit(r) => r.weight_inputs,
            AfterSurgery::Nothing | AfterSurgery::Recalibrate => 0,
        } + usize::from(bias);
        layers.push((
            node.name.clone(),
            node.inputs[0].clone(),
            (refit.window, refit.groups),
            bias,
            slice.output,
            unknowns,
        ));
    }
    if layers.is_empty() {
        return Ok(ReconstructionReport {
            layers: Vec::new(),
            samples: 0,
        });
    }
    let (order, batch_size) = draw_order(
        data,
        settings.batches,
        settings.batch_size,
        settings.seed,
        "reader reconstruction",
    )?;
    let eval_t = transform.for_evaluation();
    let loader = Loader {
        source: data,
        transform: &eval_t,
        input: input_shape(pruned),
        train: false,
    };
    let device = pruned.device();
    let mut fits = Vec::with_capacity(layers.len());
    for (name, input, (window, groups), bias, kept, unknowns) in layers {
        let skip = match groups {
            g if g != 1 => Some(format!(
                "a grouped convolution (groups = {g}) is not refitted"
            )),
            _ if unknowns > settings.max_inputs => Some(format!(
                "{unknowns} unknowns per output channel exceed max_inputs = {}",
                settings.max_inputs
            )),
            _ => None,
        };
        // Skipped before anything of the size of its fit (the Gram matrix) is allocated.
        if let Some(reason) = skip {
            fits.push((
                LayerFit {
                    layer: name,
                    inputs: unknowns,
                    error_before: None,
                    error_after: None,
                    skipped: Some(reason),
                },
                None,
            ));
            continue;
        }
        let weight = pruned.tensor(&format!("{name}.weight"))?.shallow_clone();
        let out_channels = weight.size()[0];
        // W₀ as [unknowns, out]: the weight's rows flattened, the bias as the last row.
        let mut w0 = weight.f_reshape([out_channels, -1])?.f_transpose(0, 1)?;
        if bias {
            let b = pruned.tensor(&format!("{name}.bias"))?;
            w0 = Tensor::f_cat(&[w0, b.f_reshape([1, out_channels])?], 0)?;
        }
        let w0 = w0.f_to_kind(Kind::Double)?;
        let n = w0.size()[0];
        let mut gram = Tensor::f_zeros([n, n], (Kind::Double, device))?;
        let mut cross = Tensor::f_zeros([n, out_channels], (Kind::Double, device))?;
        let mut target_sq = 0.0f64;
        let mut batch_rng = rand::SeedableRng::seed_from_u64(settings.seed);
        let batch_rng: &mut rand::rngs::StdRng = &mut batch_rng;
        std::thread::scope(|s| -> Result<(), TrainError> {
            for batch in loader.prefetch(s, &order, batch_size, PREFETCH, batch_rng) {
                let (x, _) = batch?;
                let x = x.to_device(device);
                tch::no_grad(|| -> Result<(), TrainError> {
                    let a = pruned.taps(&x, Mode::Eval, &[input.as_str()])?[&input].shallow_clone();
                    let mut y =
                        original.taps(&x, Mode::Eval, &[name.as_str()])?[&name].shallow_clone();
                    // The units' axis of the batched output: channels of an image, the
                    // last axis of tokens (fair_ir::unit_axis, one past it).
                    let dims = y.size();
                    let sample: Vec<usize> = dims[1..].iter().map(|&d| d as usize).collect();
                    let unit_dim = 1 + fair_ir::unit_axis(&sample);
                    if let Some(k) = &kept {
                        let idx = Tensor::from_slice(k).to_device(device);
                        y = y.f_index_select(unit_dim as i64, &idx)?;
                    }
                    // Rows per sample: the output positions of a convolution, the tokens
                    // of a linear layer on tokens, 1 for a linear layer on features.
                    // Pieces of whole samples keep every unfolded matrix under
                    // PIECE_ELEMENTS (the unfolding of a whole batch of large images would
                    // not fit in memory).
                    let samples = a.size()[0];
                    let per_sample: i64 = dims
                        .iter()
                        .enumerate()
                        .filter(|&(d, _)| d != 0 && d != unit_dim)
                        .map(|(_, &n)| n)
                        .product::<i64>()
                        .max(1);
                    let step = (PIECE_ELEMENTS / (per_sample * n).max(1)).max(1);
                    let mut start = 0;
                    while start < samples {
                        let len = step.min(samples - start);
                        let (a, y) = rows(
                            &a.f_narrow(0, start, len)?,
                            &y.f_narrow(0, start, len)?,
                            window.as_ref(),
                            bias,
                        )?;
                        // Products of one piece in the tensors' precision, sums over
                        // pieces and batches in f64.
                        let at = a.f_transpose(0, 1)?;
                        gram = gram.f_add(&at.f_matmul(&a)?.f_to_kind(Kind::Double)?)?;
                        cross = cross.f_add(&at.f_matmul(&y)?.f_to_kind(Kind::Double)?)?;
                        target_sq += y.f_square()?.f_sum(Kind::Double)?.double_value(&[]);
                        start += len;
                    }
                    Ok(())
                })?;
            }
            Ok(())
        })?;
        // ‖Y − A·W‖² = ‖Y‖² − 2·tr(Wᵀ·AᵀY) + tr(Wᵀ·AᵀA·W)
        let error = |w: &Tensor| -> Result<f64, TrainError> {
            let fit = w.f_mul(&cross)?.f_sum(Kind::Double)?.double_value(&[]);
            let quad = w
                .f_mul(&gram.f_matmul(w)?)?
                .f_sum(Kind::Double)?
                .double_value(&[]);
            Ok(((target_sq - 2.0 * fit + quad) / target_sq.max(f64::MIN_POSITIVE)).max(0.0))
        };
        let scale = gram
            .f_diagonal(0, 0, 1)?
            .f_mean(Kind::Double)?
            .double_value(&[]);
        let lambda = settings.ridge * scale.max(f64::MIN_POSITIVE);
        let eye = Tensor::f_eye(n, (Kind::Double, device))?;
        let lhs = gram.f_add(&eye.f_mul_scalar(lambda)?)?;
        let rhs = cross.f_add(&w0.f_mul_scalar(lambda)?)?;
        let w = Tensor::f_linalg_solve(&lhs, &rhs, true)?;
        if w.f_isfinite()?.f_all()?.int64_value(&[]) == 0 {
            return Err(TrainError::NonFinite {
                layer: name,
                detail: "its least-squares reconstruction is NaN or infinite (its input or the \
                         unpruned output holds NaN, or the ridge is 0 and the fit is singular)"
                    .into(),
            });
        }
        let (error_before, error_after) = (error(&w0)?, error(&w)?);
        // Keep the surgery's weights if round-off made the fit no better.
        let w = (error_after <= error_before).then_some(w);
        fits.push((
            LayerFit {
                layer: name,
                inputs: unknowns,
                error_before: Some(error_before),
                error_after: Some(error_after.min(error_before)),
                skipped: None,
            },
            w,
        ));
        // Later layers read this one's refitted output.
        if let Some((fit, Some(w))) = fits.last() {
            write_fit(pruned, &fit.layer, w, bias, written)?;
        }
    }
    Ok(ReconstructionReport {
        layers: fits.into_iter().map(|(f, _)| f).collect(),
        samples: order.len(),
    })
}

/// The regression rows of one batch: the layer's input `a` as `[rows, unknowns]` (unfolded
/// patches for a sliding window (convolution), a ones column for a bias) and the target `y` as `[rows, out]`.
fn rows(
    a: &Tensor,
    y: &Tensor,
    window: Option<&Window>,
    bias: bool,
) -> Result<(Tensor, Tensor), TrainError> {
    let batch = a.size()[0];
    let (a, y) = match window {
        Some(c) => {
            let k = [c.kernel.0 as i64, c.kernel.1 as i64];
            let d = [c.dilation.0 as i64, c.dilation.1 as i64];
            let p = [c.padding.0 as i64, c.padding.1 as i64];
            let s = [c.stride.0 as i64, c.stride.1 as i64];
            // [N, C·kh·kw, L] → [N·L, C·kh·kw]
            let cols = a.f_im2col(k, d, p, s)?;
            let unknowns = cols.size()[1];
            let cols = cols.f_transpose(1, 2)?.f_reshape([-1, unknowns])?;
            // [N, O, H, W] → [N·L, O]
            let out = y.size()[1];
            let y = y
                .f_reshape([batch, out, -1])?
                .f_transpose(1, 2)?
                .f_reshape([-1, out])?;
            (cols, y)
        }
        // A linear layer: one row per sample, or per token of tokens [N, T, F] (the units
        // on the last axis).
        None => {
            let last = |t: &Tensor| t.size().last().copied().unwrap_or(1);
            (a.f_reshape([-1, last(a)])?, y.f_reshape([-1, last(y)])?)
        }
    };
    let a = if bias {
        let ones = Tensor::f_ones([a.size()[0], 1], (a.kind(), a.device()))?;
        Tensor::f_cat(&[a, ones], 1)?
    } else {
        a
    };
    Ok((a, y))
}

/// Writes a fit `w` (`[unknowns, out]`, the bias as the last row) into the layer's tensors.
fn write_fit(
    model: &Model,
    layer: &str,
    w: &Tensor,
    bias: bool,
    written: &mut Vec<(String, Tensor)>,
) -> Result<(), TrainError> {
    let weight = model.tensor(&format!("{layer}.weight"))?.shallow_clone();
    let shape = weight.size();
    let rows = w.size()[0] - i64::from(bias);
    let kind = weight.kind();
    tch::no_grad(|| -> Result<(), TrainError> {
        let new_w = w
            .f_narrow(0, 0, rows)?
            .f_transpose(0, 1)?
            .f_reshape(shape.as_slice())?
            .f_to_kind(kind)?;
        written.push((format!("{layer}.weight"), weight.f_detach_copy()?));
        weight.shallow_clone().f_copy_(&new_w)?;
        if bias {
            let b = model.tensor(&format!("{layer}.bias"))?.shallow_clone();
            let new_b = w.f_narrow(0, rows, 1)?.f_reshape([-1])?.f_to_kind(kind)?;
            written.push((format!("{layer}.bias"), b.f_detach_copy()?));
            b.shallow_clone().f_copy_(&new_b)?;
        }
        Ok(())
    })
}
