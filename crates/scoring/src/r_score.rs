//! R-Score: first-order Taylor estimate of the loss change when a unit is removed,
//! |Σ over batches Σ over the unit's parameters θ·∂L/∂θ|.

use fair_ir::Graph;
use fair_runtime::{Mode, Model};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::calibration::Calibration;
use crate::error::{ScoringError, torch};
use crate::layers::{Heads, PrunableLayer, attention_leaders};
use crate::memory::{ByteSize, RUNTIME_SHARE, forward_peaks};
use crate::progress::Progress;

/// Which forward mode the R-Score's passes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum RMode {
    /// Training mode as in the authors' package (BatchNorm batch statistics, dropout active)
    /// but without touching BatchNorm's running statistics.
    #[default]
    Train,
    /// Eval mode (running statistics, no dropout).
    Eval,
}

/// Settings of the R-Score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RScoreSettings {
    /// Forward mode (default training-mode BatchNorm).
    pub mode: RMode,
    /// Batch size over the calibration samples, in their order (default 64).
    pub batch_size: usize,
    /// Seed for dropout during the passes.
    pub seed: u64,
    /// Bound on the memory of the R-Score, including the model's parameters and the
    /// calibration inputs (default: none). When a forward + backward pass over
    /// [`RScoreSettings::batch_size`] samples would not fit ([`RScoreMemory`]), each batch
    /// is run in pieces of the largest size that fits, its loss still the mean over the
    /// whole batch, with a note. In eval mode, and in training mode on a model without
    /// BatchNorm or dropout, the scores are those of whole batches up to float rounding;
    /// in training mode BatchNorm's batch statistics (and dropout's draws) are those of the
    /// pieces. Not part of the scores' provenance.
    #[serde(skip)]
    pub max_memory: Option<ByteSize>,
}

impl Default for RScoreSettings {
    fn default() -> Self {
        RScoreSettings {
            mode: RMode::Train,
            batch_size: 64,
            seed: 0,
            max_memory: None,
        }
    }
}

/// What the R-Score holds, in bytes, for a pass over `b` samples: `fixed + b · per_sample`
/// (an upper bound; [`RScoreMemory::of`] lists what is counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RScoreMemory {
    /// Independent of the batch: the parameters `4 · params`, as much again for parameter
    /// gradients a backward kernel may form transiently (none is kept), and the calibration
    /// set `4 · N · C·H·W + 8 · N` (inputs and labels).
    pub fixed: u64,
    /// Per sample of a pass: the activations a forward + backward keeps (see
    /// [`RScoreMemory::of`]).
    pub per_sample: u64,
}

impl RScoreMemory {
    /// The estimate for `model`'s graph, the scored `layers` and `samples` calibration
    /// samples of `sample_numel` numbers each. Per sample of a pass, counted in bytes:
    /// - `A = 4 · Σ_i a_i`: every node's output, input included (a_i numbers per sample),
    ///   as autograd may save each for the backward; plus `8 · a_i` for a max-pool's int64
    ///   indices, `4 · a_i` for a dropout mask or a layer norm's or hard-sigmoid's own
    ///   temporary, `4 · (3 + 2·T/head_dim) · a_i` for an attention (its copies of q, kᵀ and
    ///   v and its `[heads, T, T]` weights, see `fair_ir::Contract::saved_for_backward`), and
    ///   `4 · a_out` for the log-softmax of the loss;
    /// - `G = 4 · Σ_l a_l`: the gradients with respect to the scored layers' outputs (and the
    ///   outputs of the attentions whose heads are scored), all
    ///   held until the scores are read;
    /// - `B = 2 · 4 · max_i live_i`: the gradients in flight during the backward, bounded by
    ///   twice the forward's widest cut (the `F` term of the U-Score's estimate, see
    ///   [`crate::memory`]);
    /// - `D = 3 · 8 · max_l a_l`: one layer's output and gradient in f64 and their product.
    ///
    /// `per_sample = A + G + B + D`.
    pub fn of(
        graph: &Graph,
        layers: &[PrunableLayer],
        samples: usize,
        sample_numel: usize,
    ) -> Result<RScoreMemory, ScoringError> {
        const F32: u64 = 4;
        let numel = |i: usize| graph.shape_at(i).iter().product::<usize>() as u64;
        let mut saved = 0u64;
        for (i, node) in graph.nodes().iter().enumerate() {
            let extra = node.op.saved_for_backward(graph.shape_at(i));
            saved = saved.saturating_add(F32.saturating_mul(numel(i).saturating_add(extra)));
        }
        let out = numel(graph.nodes().len() - 1);
        saved = saved.saturating_add(F32 * out);
        let mut taps = 0u64;
        let mut widest_tap = 0u64;
        for layer in layers {
            let at = graph
                .position(&layer.name)
                .map_err(fair_runtime::RuntimeError::from)?;
            taps = taps.saturating_add(numel(at));
            widest_tap = widest_tap.max(numel(at));
        }
        // The outputs of attentions whose heads are units are tapped too, once each.
        for h in attention_outputs(layers) {
            let at = graph
                .position(&h.attention)
                .map_err(fair_runtime::RuntimeError::from)?;
            taps = taps.saturating_add(numel(at));
            widest_tap = widest_tap.max(numel(at));
        }
        let live = forward_peaks(graph).last().copied().unwrap_or(0);
        let per_sample = saved
            .saturating_add(F32.saturating_mul(taps))
            .saturating_add((2 * F32).saturating_mul(live))
            .saturating_add((3 * 8u64).saturating_mul(widest_tap));
        let n = samples as u64;
        let fixed = (2 * F32)
            .saturating_mul(graph.param_count() as u64)
            .saturating_add(F32.saturating_mul(n).saturating_mul(sample_numel as u64))
            .saturating_add(8u64.saturating_mul(n));
        Ok(RScoreMemory { fixed, per_sample })
    }

    /// The estimated peak of a pass over `batch` samples: `fixed + batch · per_sample`.
    pub fn peak(&self, batch: usize) -> u64 {
        self.fixed
            .saturating_add(self.per_sample.saturating_mul(batch as u64))
    }

    /// The largest batch at most `requested` whose [`RScoreMemory::peak`] fits `budget`
    /// bytes less a [`RUNTIME_SHARE`]th for libtorch's runtime (`None`: `requested`), or
    /// `None` when not even one sample fits.
    pub fn batch(&self, requested: usize, budget: Option<u64>) -> Option<usize> {
        let Some(budget) = budget else {
            return Some(requested);
        };
        let room = (budget - budget / RUNTIME_SHARE).checked_sub(self.fixed)?;
        let fit = room / self.per_sample.max(1);
        (fit > 0).then(|| requested.min(usize::try_from(fit).unwrap_or(usize::MAX)))
    }
}

/// R-Scores of every layer, from one forward and one backward pass per calibration batch
/// (cross-entropy loss, mean over the batch).
///
/// A unit's output y_j is linear and homogeneous in its own weights and bias, so
/// Σ_{θ ∈ unit j} θ·∂L/∂θ = Σ over samples and positions of y_j·∂L/∂y_j (Euler's theorem).
/// The backward pass therefore only computes gradients with respect to the prunable layers'
/// outputs (no weight gradients are formed or stored; except the small per-head tensors of
/// an attention whose heads are scored, a windowed attention's relative position bias and a
/// cosine attention's logit scale, whose θ·∂L/∂θ per head joins the head's R-Score), and
/// every layer's R-Score is read from the same pass. The model's parameters, running statistics and gradients are left
/// as they were.
///
/// With [`RScoreSettings::max_memory`], a batch whose pass would not fit
/// ([`RScoreMemory`]) runs in pieces of the largest size that fits, each piece's loss
/// summed and divided by the whole batch's size, so the batch still contributes the
/// gradient of its mean loss; the notes returned say so. A bound that does not hold one
/// sample is an error naming `max-memory` and the model.
pub fn r_scores(
    model: &Model,
    layers: &[PrunableLayer],
    data: &Calibration,
    settings: &RScoreSettings,
    progress: Progress,
) -> Result<(Vec<Vec<f64>>, Vec<String>), ScoringError> {
    if settings.batch_size == 0 {
        return Err(ScoringError::Setting {
            name: "batch-size",
            detail: "must be at least 1".into(),
        });
    }
    let mode = match settings.mode {
        RMode::Train => Mode::TrainFrozenStats,
        RMode::Eval => Mode::Eval,
    };
    let graph = model.graph();
    let memory = RScoreMemory::of(graph, layers, data.len(), data.sample_numel())?;
    let requested = settings.batch_size.min(data.len()).max(1);
    let budget = settings.max_memory.map(|b| b.0);
    let piece = memory
        .batch(requested, budget)
        .ok_or_else(|| ScoringError::Setting {
            name: "max-memory",
            detail: format!(
                "{} is too small for the R-Score of the model '{}': a forward and backward \
                 pass over one sample needs about {} next to the model and calibration data \
                 ({}) and libtorch's runtime (1/{RUNTIME_SHARE} of the bound); raise \
                 `max-memory`",
                ByteSize(budget.unwrap_or(0)),
                graph.name(),
                ByteSize(memory.per_sample),
                ByteSize(memory.fixed),
            ),
        })?;
    let mut notes = Vec::new();
    if piece < requested {
        let batch_dependent = mode == Mode::TrainFrozenStats
            && graph.nodes().iter().any(|n| n.op.scoring().batch_dependent);
        notes.push(format!(
            "the R-Score ran each batch of {requested} in pieces of {piece} to stay within the \
             memory bound (`max-memory`) {} (estimated peak {}; a whole batch would need about \
             {}); each piece's loss is divided by the batch's size, so {}",
            ByteSize(budget.unwrap_or(0)),
            ByteSize(memory.peak(piece)),
            ByteSize(memory.peak(requested)),
            if batch_dependent {
                "the gradients are those of the batch's mean loss, but in training mode \
                 BatchNorm's batch statistics and dropout's draws are those of the pieces: \
                 the scores differ from whole batches'"
            } else {
                "the scores are those of whole batches up to float rounding"
            }
        ));
    }

    tch::manual_seed(settings.seed as i64);
    let device = model.device();
    // Every scored layer's output, then the output of each attention whose heads are units
    // (its term is the output projection's columns', see `heads_of`).
    let mut names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
    names.extend(attention_outputs(layers).map(|h| h.attention.as_str()));
    let params = head_params(model, layers);
    let mut sums: Vec<Tensor> = names
        .iter()
        .map(|n| {
            let units = fair_ir::unit_count(graph.shape(n).expect("validated"));
            Tensor::zeros([units as i64], (Kind::Double, device))
        })
        .chain(
            params
                .iter()
                .map(|p| Tensor::zeros([p.spec.shape[p.axis] as i64], (Kind::Double, device))),
        )
        .collect();
    let batches = data.len().div_ceil(settings.batch_size);
    let bar = progress.bar(batches, "R-Score: forward + backward");
    for (b, (x, y)) in data.batches(settings.batch_size).enumerate() {
        let len = x.size()[0];
        if len as usize <= piece {
            let c = contributions(model, &names, &params, mode, &x, &y, None, b)?;
            for (sum, c) in sums.iter_mut().zip(c) {
                *sum += c;
            }
        } else {
            // The batch's contributions, summed over its pieces before joining the total. The
            // pieces have near-equal sizes (at most `piece`), so none is a lone sample whose
            // BatchNorm statistics in training mode would be degenerate.
            let count = (len as usize).div_ceil(piece);
            let sizes = near_equal_sizes(len as usize, count);
            let mut batch: Option<Vec<Tensor>> = None;
            for (xs, ys) in x
                .split_with_sizes(&sizes, 0)
                .into_iter()
                .zip(y.split_with_sizes(&sizes, 0))
            {
                let c = contributions(model, &names, &params, mode, &xs, &ys, Some(len), b)?;
                batch = Some(match batch {
                    None => c,
                    Some(acc) => acc.into_iter().zip(c).map(|(a, c)| a + c).collect(),
                });
            }
            for (sum, c) in sums.iter_mut().zip(batch.into_iter().flatten()) {
                *sum += c;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let sums = heads_of(layers, &names, &params, sums)?;
    let scores = sums
        .into_iter()
        .zip(layers)
        .map(|(s, layer)| {
            Ok(torch(
                Vec::<f64>::try_from(s.abs().to_device(tch::Device::Cpu)),
                || format!("reading R-Scores of '{}'", layer.name),
            )?)
        })
        .collect::<Result<Vec<_>, ScoringError>>()?;
    Ok((scores, notes))
}

/// A parameter with one slice per head (`fair_ir::ParamSpec::head_axis`: a windowed
/// attention's relative position bias, a cosine attention's logit scale) of an attention
/// whose heads are scored: its Taylor term θ·∂L/∂θ, summed per head, joins the head's
/// R-Score.
struct HeadParam {
    /// The attention node.
    attention: String,
    /// The parameter.
    spec: fair_ir::ParamSpec,
    /// Its axis of heads.
    axis: usize,
    /// The tensor (shares the model's storage).
    tensor: Tensor,
}

/// The per-head parameters of the attentions whose heads are scored.
fn head_params(model: &Model, layers: &[PrunableLayer]) -> Vec<HeadParam> {
    let graph = model.graph();
    attention_outputs(layers)
        .filter_map(|h| graph.node(&h.attention).ok())
        .flat_map(|node| {
            node.op.params(&node.name).into_iter().filter_map(|spec| {
                let axis = spec.head_axis?;
                let tensor = model.tensor(&spec.name).ok()?.shallow_clone();
                Some(HeadParam {
                    attention: node.name.clone(),
                    spec,
                    axis,
                    tensor,
                })
            })
        })
        .collect()
}

/// Makes autograd track the per-head parameters for one pass, and stops it again when
/// dropped (also on an error), so the model is left as it was.
struct Tracked<'p>(&'p [HeadParam]);

impl<'p> Tracked<'p> {
    fn new(params: &'p [HeadParam]) -> Self {
        for p in params {
            let _ = p.tensor.set_requires_grad(true);
        }
        Tracked(params)
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        for p in self.0 {
            let _ = p.tensor.set_requires_grad(false);
        }
    }
}

/// The heads of each attention whose heads are scored, once per attention (from the first
/// of its layers, [`attention_leaders`]), in the order of those first layers.
fn attention_outputs(layers: &[PrunableLayer]) -> impl Iterator<Item = &Heads> {
    let leaders = attention_leaders(layers);
    layers
        .iter()
        .enumerate()
        .filter(move |&(i, _)| leaders[i] == i)
        .filter_map(|(_, l)| l.heads.as_ref())
}

/// The signed sums of the layers read as heads turned into head sums: for an attention with
/// heads of d channels, q, k and v its layers and a its output, head h's sum is
/// Σ_{c ∈ h} (Σ q_c·∂L/∂q_c + Σ k_c·∂L/∂k_c + Σ v_c·∂L/∂v_c + Σ a_c·∂L/∂a_c), the Taylor
/// term of all the head's parameters (q, k and v rows and biases by Euler's theorem; the
/// output projection's columns c ∈ h, whose term is a_c·∂L/∂a_c summed when the projection
/// is a's reader), given to each of the head's channels of q, k and v. `sums` holds a sum per
/// name of `names` (the layers, then the attentions); the layers' come back.
fn heads_of(
    layers: &[PrunableLayer],
    names: &[&str],
    params: &[HeadParam],
    mut sums: Vec<Tensor>,
) -> Result<Vec<Tensor>, ScoringError> {
    let mut out: Vec<Option<Tensor>> = layers.iter().map(|_| None).collect();
    let leaders = attention_leaders(layers);
    for (i, layer) in layers.iter().enumerate() {
        let Some(h) = &layer.heads else { continue };
        if leaders[i] != i {
            continue;
        }
        let members: Vec<usize> = (i..layers.len()).filter(|&j| leaders[j] == i).collect();
        let a = names
            .iter()
            .position(|n| *n == h.attention)
            .expect("tapped above");
        let ctx = || format!("R-Score of the heads of '{}'", h.attention);
        let mut total = sums[a].shallow_clone();
        for &j in &members {
            total = torch(total.f_add(&sums[j]), ctx)?;
        }
        let d = h.head_dim as i64;
        let mut heads = torch(
            total
                .f_reshape([-1, d])
                .and_then(|t| t.f_sum_dim_intlist(1, false, Kind::Double)),
            ctx,
        )?;
        // The attention's own per-head parameters (bias, logit scale), summed per head.
        for (k, p) in params.iter().enumerate() {
            if p.attention == h.attention {
                heads = torch(heads.f_add(&sums[names.len() + k]), ctx)?;
            }
        }
        let per_head = torch(
            heads
                .f_unsqueeze(1)
                .and_then(|t| t.f_expand([-1, d], false))
                .and_then(|t| t.f_reshape([-1])),
            ctx,
        )?;
        for &j in &members {
            out[j] = Some(per_head.copy());
        }
    }
    sums.truncate(layers.len());
    Ok(sums
        .into_iter()
        .zip(out)
        .map(|(s, o)| o.unwrap_or(s))
        .collect())
}

/// One forward and backward pass over `x` (labels `y`) of calibration batch `b`: for every
/// node of `names`, Σ y·∂L/∂y of its output per unit, in f64, then for every per-head
/// parameter of `params`, Σ θ·∂L/∂θ per head. `L` is the mean cross-entropy over `x`, or
/// with `of = Some(n)` the sum over `x` divided by `n` (a piece of a batch of `n` samples).
#[allow(clippy::too_many_arguments)]
fn contributions(
    model: &Model,
    names: &[&str],
    params: &[HeadParam],
    mode: Mode,
    x: &Tensor,
    y: &Tensor,
    of: Option<i64>,
    b: usize,
) -> Result<Vec<Tensor>, ScoringError> {
    let device = model.device();
    let _tracked = Tracked::new(params);
    let out = model.forward_with_taps(&x.to_device(device), mode, names)?;
    let loss = torch(
        out.output.f_log_softmax(-1, Kind::Float).and_then(|l| {
            let y = y.to_device(device);
            match of {
                None => l.f_nll_loss::<Tensor>(&y, None, tch::Reduction::Mean, -100),
                Some(n) => l
                    .f_nll_loss::<Tensor>(&y, None, tch::Reduction::Sum, -100)
                    .and_then(|s| s.f_div_scalar(n)),
            }
        }),
        || format!("cross-entropy of batch {b}"),
    )?;
    let value = loss.double_value(&[]);
    if !value.is_finite() {
        return Err(ScoringError::NonFinite(format!(
            "the loss of calibration batch {b} is {value}"
        )));
    }
    let mut outputs: Vec<&Tensor> = names.iter().map(|n| &out.taps[*n]).collect();
    outputs.extend(params.iter().map(|p| &p.tensor));
    let grads = torch(
        Tensor::f_run_backward(&[&loss], &outputs, false, false),
        || format!("backward of batch {b}"),
    )?;
    let (grads, param_grads) = grads.split_at(names.len());
    let per_head = params.iter().zip(param_grads).map(|(p, g)| {
        // Σ θ·∂L/∂θ over every axis but the heads'.
        let dims: Vec<i64> = (0..p.tensor.dim() as i64)
            .filter(|&d| d != p.axis as i64)
            .collect();
        tch::no_grad(|| {
            let terms = p.tensor.detach().to_kind(Kind::Double) * g.to_kind(Kind::Double);
            // (An empty list of axes would sum over all of them: a `[heads]` tensor is
            // already per head.)
            if dims.is_empty() {
                return Ok(terms);
            }
            torch(
                terms.f_sum_dim_intlist(dims.as_slice(), false, Kind::Double),
                || format!("R-Score of the heads' '{}'", p.spec.name),
            )
        })
    });
    let per_head: Vec<Tensor> = per_head.collect::<Result<_, _>>()?;
    tch::no_grad(|| {
        names
            .iter()
            .zip(outputs.iter().zip(grads))
            .map(|(name, (yv, g))| {
                // Sum y·∂L/∂y over every axis but the unit axis (1 past the per-sample one:
                // channels of an image, the last axis of tokens).
                let sample: Vec<usize> = yv.size()[1..].iter().map(|&d| d as usize).collect();
                let units = 1 + fair_ir::unit_axis(&sample) as i64;
                let dims: Vec<i64> = (0..yv.dim() as i64).filter(|&d| d != units).collect();
                Ok(torch(
                    (yv.detach().to_kind(Kind::Double) * g.to_kind(Kind::Double))
                        .f_sum_dim_intlist(dims.as_slice(), false, Kind::Double),
                    || format!("R-Score of layer '{name}'"),
                )?)
            })
            .chain(per_head.into_iter().map(Ok))
            .collect()
    })
}

/// `count` sizes that sum to `len` and differ by at most one (larger first).
fn near_equal_sizes(len: usize, count: usize) -> Vec<i64> {
    let (base, extra) = (len / count, len % count);
    (0..count)
        .map(|i| (base + usize::from(i < extra)) as i64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::near_equal_sizes;

    #[test]
    fn pieces_have_near_equal_sizes_and_no_lone_sample() {
        // 64 samples in pieces of at most 9: 8 pieces of 8, not 7 × 9 + 1.
        assert_eq!(near_equal_sizes(64, 64usize.div_ceil(9)), vec![8; 8]);
        assert_eq!(near_equal_sizes(10, 3), vec![4, 3, 3]);
        assert_eq!(near_equal_sizes(5, 5), vec![1; 5]);
        for len in 1..50usize {
            for piece in 1..=len {
                let sizes = near_equal_sizes(len, len.div_ceil(piece));
                assert_eq!(sizes.iter().sum::<i64>(), len as i64);
                assert!(
                    sizes.iter().all(|&s| s >= 1 && s <= piece as i64),
                    "{len} {piece}"
                );
                let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(hi - lo <= 1);
            }
        }
    }
}
