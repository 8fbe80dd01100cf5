//! What an op does after surgery ([`AfterSurgery`]) and what scorers need to know about it
//! ([`Scoring`]), as op-neutral data: the training and scoring crates read these answers and
//! name no op.

use super::Pair;

/// What an op needs after surgery has changed the network around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterSurgery {
    /// Nothing.
    Nothing,
    /// A layer whose weights can be refitted by least squares so that it reproduces the
    /// unpruned network's output (of its kept units) from its pruned input (reader
    /// reconstruction).
    Refit(Refit),
    /// A normalisation whose running statistics are re-estimated on data (BatchNorm
    /// recalibration).
    Recalibrate,
}

/// How a refittable layer maps its input to its output: a linear map of each row of
/// unknowns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refit {
    /// Unknowns per output unit from the weight (the bias adds one more).
    pub weight_inputs: usize,
    /// Whether it has a bias.
    pub bias: bool,
    /// For a sliding-window layer (convolution), the window: each output position is one
    /// regression row of unfolded patches. `None`: each sample is one row (linear).
    pub window: Option<Window>,
    /// Groups of a grouped layer (1 when dense); grouped layers are not refitted.
    pub groups: usize,
}

/// A sliding window's geometry (PyTorch's `unfold` arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Kernel size.
    pub kernel: Pair,
    /// Stride.
    pub stride: Pair,
    /// Zero padding on each side.
    pub padding: Pair,
    /// Dilation.
    pub dilation: Pair,
}

/// What scorers need to know about an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scoring {
    /// Taken as "the activation after a layer" by the `package` and `after_normalization`
    /// analysis points (today only ReLU: other activations are not taken).
    pub analysis_activation: bool,
    /// Tensors of its output's size that autograd keeps for the backward pass besides the
    /// output itself (the R-Score's memory estimate): e.g. max pooling's indices, dropout's
    /// mask. What the estimate reads is [`Contract::saved_for_backward`](super::Contract::saved_for_backward),
    /// which is this times the output's size unless the op says otherwise.
    pub saved_for_backward: u64,
    /// Whether its training-mode output depends on the rest of the batch or on randomness
    /// (BatchNorm's batch statistics, dropout): running a batch in pieces changes it.
    pub batch_dependent: bool,
}
