//! The runtime half of each op's contract: a [`Kernel`] per op struct, and the dispatch from
//! [`Op`] to it, generated from the IR's op list ([`fair_ir::with_ops!`]). An op added to
//! the list without a kernel here fails to compile.

use std::collections::HashMap;

use fair_ir::{Op, Pair, ParamKind};
use tch::{TchError, Tensor};

use crate::Mode;

/// What a kernel sees of the node it computes.
pub(crate) struct Step<'a> {
    /// The node's name (its parameters are `<name>.<suffix>`).
    pub(crate) name: &'a str,
    /// Its inputs' values, in order.
    pub(crate) inputs: &'a [&'a Tensor],
    /// The network input (for the input op).
    pub(crate) x: &'a Tensor,
    /// Evaluation or training behaviour.
    pub(crate) mode: Mode,
    /// Every parameter of the model, by state-dict name.
    pub(crate) params: &'a HashMap<String, Tensor>,
}

impl Step<'_> {
    /// The node's parameter of `kind` (the graph's validation guarantees it exists).
    fn p(&self, kind: ParamKind) -> &Tensor {
        &self.params[&format!("{}.{}", self.name, kind.suffix())]
    }

    /// The node's parameter of `kind`, if it has one (an optional bias).
    fn opt_p(&self, kind: ParamKind) -> Option<&Tensor> {
        self.params.get(&format!("{}.{}", self.name, kind.suffix()))
    }

    /// Whether training behaviour applies (batch statistics, dropout).
    fn train(&self) -> bool {
        self.mode != Mode::Eval
    }

    /// The first input.
    fn x0(&self) -> &Tensor {
        self.inputs[0]
    }
}

/// How an op is computed with libtorch.
pub(crate) trait Kernel {
    /// The node's output for one batch.
    fn forward(&self, step: &Step) -> Result<Tensor, TchError>;
}

macro_rules! dispatch {
    ($($variant:ident($ty:ident),)*) => {
        /// The kernel of `op` (`None` only for an op this crate was not compiled with, which
        /// cannot happen: the match is generated from the op list).
        pub(crate) fn kernel(op: &Op) -> Option<&dyn Kernel> {
            match op {
                $( Op::$variant(o) => Some(o), )*
                _ => None,
            }
        }
    };
}

fair_ir::with_ops!(dispatch);

fn pair(p: Pair) -> [i64; 2] {
    [p.0 as i64, p.1 as i64]
}

impl Kernel for fair_ir::Input {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        Ok(s.x.shallow_clone())
    }
}

impl Kernel for fair_ir::Conv2d {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_conv2d(
            s.p(ParamKind::Weight),
            s.opt_p(ParamKind::Bias),
            pair(self.stride),
            pair(self.padding),
            pair(self.dilation),
            self.groups as i64,
        )
    }
}

/// BatchNorm (1-D or 2-D: libtorch's kernel takes either): running statistics in eval mode
/// and in [`Mode::Train`] (which updates them and counts the batch), batch statistics
/// without updates in [`Mode::TrainFrozenStats`].
fn batch_norm(s: &Step, eps: f64, momentum: f64) -> Result<Tensor, TchError> {
    let (mean, var) = match s.mode {
        Mode::TrainFrozenStats => (None, None),
        _ => (
            Some(s.p(ParamKind::RunningMean)),
            Some(s.p(ParamKind::RunningVar)),
        ),
    };
    if s.mode == Mode::Train {
        tch::no_grad(|| {
            let mut n = s.p(ParamKind::NumBatchesTracked).shallow_clone();
            n.f_add_scalar_(1).map(|_| ())
        })?;
    }
    s.x0().f_batch_norm(
        Some(s.p(ParamKind::Weight)),
        Some(s.p(ParamKind::Bias)),
        mean,
        var,
        s.train(),
        momentum,
        eps,
        true,
    )
}

impl Kernel for fair_ir::BatchNorm2d {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        batch_norm(s, self.eps, self.momentum)
    }
}

impl Kernel for fair_ir::BatchNorm1d {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        batch_norm(s, self.eps, self.momentum)
    }
}

impl Kernel for fair_ir::Relu {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_relu()
    }
}

impl Kernel for fair_ir::MaxPool2d {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_max_pool2d(
            pair(self.kernel_size),
            pair(self.stride.unwrap_or(self.kernel_size)),
            pair(self.padding),
            [1, 1],
            self.ceil_mode,
        )
    }
}

impl Kernel for fair_ir::AvgPool2d {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_avg_pool2d(
            pair(self.kernel_size),
            pair(self.stride.unwrap_or(self.kernel_size)),
            pair(self.padding),
            self.ceil_mode,
            self.count_include_pad,
            None,
        )
    }
}

impl Kernel for fair_ir::AdaptiveAvgPool2d {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_adaptive_avg_pool2d(pair(self.output_size))
    }
}

impl Kernel for fair_ir::Flatten {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_flatten(1, -1)
    }
}

impl Kernel for fair_ir::Linear {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0()
            .f_linear(s.p(ParamKind::Weight), s.opt_p(ParamKind::Bias))
    }
}

impl Kernel for fair_ir::Dropout {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_dropout(self.p, s.train())
    }
}

impl Kernel for fair_ir::Add {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        let mut sum = s.inputs[0].f_add(s.inputs[1])?;
        for t in &s.inputs[2..] {
            sum = sum.f_add(t)?;
        }
        Ok(sum)
    }
}

impl Kernel for fair_ir::Concat {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        // The unit axis of the batch: 1 of images [N, C, H, W], 2 of tokens [N, T, F].
        let axis = if s.x0().dim() == 3 { 2 } else { 1 };
        Tensor::f_cat(s.inputs, axis)
    }
}

impl Kernel for fair_ir::Clip {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_clamp(self.min, self.max)
    }
}

impl Kernel for fair_ir::Sigmoid {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_sigmoid()
    }
}

impl Kernel for fair_ir::WindowTranspose {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        // [N, B·S, F] → [N, B, S, F] → [N, S, B, F] → [N, S·B, F].
        let x = s.x0();
        let (b, n) = (self.blocks as i64, self.size as i64);
        x.f_unflatten(1, [b, n])?.f_transpose(1, 2)?.f_flatten(1, 2)
    }
}

impl Kernel for fair_ir::Tanh {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_tanh()
    }
}

impl Kernel for fair_ir::HardSigmoid {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        // PyTorch's Hardsigmoid (relu6(x + 3) / 6) when the attributes are its own, so the
        // exported `nn.Hardsigmoid()` computes the same floats; else the formula.
        if self.is_pytorch() {
            s.x0().f_hardsigmoid()
        } else {
            s.x0()
                .f_mul_scalar(self.alpha)?
                .f_add_scalar(self.beta)?
                .f_clamp(0.0, 1.0)
        }
    }
}

impl Kernel for fair_ir::HardSwish {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_hardswish()
    }
}

impl Kernel for fair_ir::Silu {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_silu()
    }
}

impl Kernel for fair_ir::Gelu {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_gelu(&self.approximate)
    }
}

impl Kernel for fair_ir::Mul {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.inputs[0].f_mul(s.inputs[1])
    }
}

impl Kernel for fair_ir::ChannelShuffle {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_channel_shuffle(self.groups as i64)
    }
}

impl Kernel for fair_ir::Slice {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0()
            .f_narrow(1, self.start as i64, (self.end - self.start) as i64)
    }
}

impl Kernel for fair_ir::LayerNorm2d {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        // As torchvision's LayerNorm2d: channels last, layer norm over C, channels first.
        s.x0()
            .f_permute([0, 2, 3, 1])?
            .f_layer_norm(
                [self.num_features as i64],
                s.opt_p(ParamKind::Weight),
                s.opt_p(ParamKind::Bias),
                self.eps,
                true,
            )?
            .f_permute([0, 3, 1, 2])
    }
}

impl Kernel for fair_ir::Tokens {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        // [N, C, H, W] → [N, C, H·W] → [N, H·W, C].
        s.x0().f_flatten(2, -1)?.f_transpose(1, 2)
    }
}

impl Kernel for fair_ir::TokensToImage {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        // [N, H·W, F] → [N, F, H·W] → [N, F, H, W].
        let fair_ir::Pair(h, w) = self.grid;
        s.x0()
            .f_transpose(1, 2)?
            .f_unflatten(2, [h as i64, w as i64])
    }
}

impl Kernel for fair_ir::TokenMean {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_mean_dim(1, false, None)
    }
}

impl Kernel for fair_ir::ClassToken {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        // The parameter [F] as token 0 of every sample: [N, 1, F] before [N, T, F].
        let x = s.x0();
        let n = x.size()[0];
        let token = s
            .p(ParamKind::Weight)
            .f_reshape([1, 1, -1])?
            .f_expand([n, 1, -1], false)?;
        Tensor::f_cat(&[&token, x], 1)
    }
}

impl Kernel for fair_ir::PositionEmbedding {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_add(s.p(ParamKind::Weight))
    }
}

impl Kernel for fair_ir::TokenSelect {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_select(1, self.index as i64)
    }
}

impl Kernel for fair_ir::TokenRange {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0()
            .f_narrow(1, self.start as i64, (self.end - self.start) as i64)
    }
}

impl Kernel for fair_ir::LayerNorm {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        s.x0().f_layer_norm(
            [self.num_features as i64],
            s.opt_p(ParamKind::Weight),
            s.opt_p(ParamKind::Bias),
            self.eps,
            true,
        )
    }
}

/// Attention within blocks of `N` tokens (windows, or all tokens) and/or with cosine scores:
/// q, k, v `[B, T, E]` → `[B, nW, heads, N, d]`; scores; + bias `[heads, N, N]`; + mask
/// `[nW, 1, N, N]`; softmax; times v; back to `[B, T, E]`.
fn block_attention(a: &fair_ir::Attention, s: &Step) -> Result<Tensor, TchError> {
    let d = a.head_dim as i64;
    let size = s.inputs[0].size();
    let (b, t, e) = (size[0], size[1], size[2]);
    let n = a.block(t as usize) as i64;
    let heads = |x: &Tensor| x.f_reshape([b, t / n, n, -1, d])?.f_transpose(2, 3);
    let (q, k, v) = (
        heads(s.inputs[0])?,
        heads(s.inputs[1])?,
        heads(s.inputs[2])?,
    );
    let param = |suffix: &str| &s.params[&format!("{}.{suffix}", s.name)];
    let mut scores = if a.cosine {
        // F.normalize: x / max(‖x‖₂, 1e-12) over the head's channels.
        let unit = |x: &Tensor| -> Result<Tensor, TchError> {
            let norm = x
                .f_norm_scalaropt_dim(2, [-1i64].as_slice(), true)?
                .f_clamp_min(1e-12)?;
            x.f_div(&norm)
        };
        let factor = param("logit_scale")
            .f_clamp_max(100f64.ln())?
            .f_exp()?
            .f_reshape([-1, 1, 1])?;
        unit(&q)?
            .f_matmul(&unit(&k)?.f_transpose(-2, -1)?)?
            .f_mul(&factor)?
    } else {
        q.f_matmul(&k.f_transpose(-2, -1)?)?
            .f_mul_scalar(a.scale())?
    };
    if a.has_bias() {
        scores = scores.f_add(param("relative_position_bias"))?;
    }
    if let Some(w) = &a.windows
        && let Some(mask) = w.mask()
    {
        let mask = Tensor::from_slice(&mask)
            .f_reshape([w.count() as i64, 1, n, n])?
            .to_device(scores.device())
            .to_kind(scores.kind());
        scores = scores.f_add(&mask)?;
    }
    scores
        .f_softmax(-1, None::<tch::Kind>)?
        .f_matmul(&v)?
        .f_transpose(2, 3)?
        .f_reshape([b, t, e])
}

impl Kernel for fair_ir::Attention {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        if !self.is_plain() {
            return block_attention(self, s);
        }
        // q, k, v [N, T, E] → [N, heads, T, d]; softmax(q kᵀ · d^-½) v; back to [N, T, E].
        let d = self.head_dim as i64;
        let heads = |x: &Tensor| -> Result<Tensor, TchError> {
            let n = x.size();
            x.f_reshape([n[0], n[1], -1, d])?.f_transpose(1, 2)
        };
        let (q, k, v) = (
            heads(s.inputs[0])?,
            heads(s.inputs[1])?,
            heads(s.inputs[2])?,
        );
        let weights = q
            .f_matmul(&k.f_transpose(-2, -1)?)?
            .f_mul_scalar(self.scale())?
            .f_softmax(-1, None::<tch::Kind>)?;
        let n = s.inputs[0].size();
        weights
            .f_matmul(&v)?
            .f_transpose(1, 2)?
            .f_reshape([n[0], n[1], n[2]])
    }
}

/// Gathers tokens of `[N, T, F]` by `source` (`None`: a zero token): the input with one zero
/// token appended when needed, then `index_select` on the token axis.
fn gather_tokens(x: &Tensor, source: &[Option<usize>]) -> Result<Tensor, TchError> {
    let t = x.size()[1];
    let index: Vec<i64> = source.iter().map(|s| s.map_or(t, |i| i as i64)).collect();
    let index = Tensor::from_slice(&index).to_device(x.device());
    if source.iter().any(Option::is_none) {
        x.f_constant_pad_nd([0, 0, 0, 1])?.f_index_select(1, &index)
    } else {
        x.f_index_select(1, &index)
    }
}

impl Kernel for fair_ir::WindowPartition {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        gather_tokens(s.x0(), &self.source_tokens())
    }
}

impl Kernel for fair_ir::WindowMerge {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        gather_tokens(s.x0(), &self.source_tokens())
    }
}

impl Kernel for fair_ir::GridStride {
    fn forward(&self, s: &Step) -> Result<Tensor, TchError> {
        gather_tokens(s.x0(), &self.source_tokens())
    }
}
