//! A small vision transformer with multi-head attention.

use fair_ir::{
    Attention, Gelu, Graph, GraphBuilder, IrError, LayerNorm, PositionEmbedding, TokenMean, Tokens,
};

/// A patch embedding (a `patch`×`patch` convolution of stride `patch` to `dim` channels,
/// `patch_embed`), its pixels as tokens `[T, dim]` (`tokens`), `depth` pre-LN transformer
/// blocks and a head:
///
/// - attention: `x + attn.proj(attention(attn.q(n), attn.k(n), attn.v(n)))` with
///   `n = norm1(x)` and `heads` heads of `dim / heads` channels (`blocks.{i}.norm1`,
///   `.attn.q`, `.attn.k`, `.attn.v`, `.attn.attend`, `.attn.proj`, `.add1`);
/// - MLP: `x + mlp.fc2(gelu(mlp.fc1(norm2(x))))` with `hidden` neurons (`blocks.{i}.norm2`,
///   `.mlp.fc1`, `.mlp.act`, `.mlp.fc2`, `.add2`);
///
/// then a final layer norm (`norm`), the mean over the tokens (`pool`) and a linear `head`.
/// The prunable units are each block's attention heads (its q, k and v rows with the
/// output projection's input columns) and its MLP hidden neurons; the residual stream (the
/// patch embedding's channels, every projection back to `dim`) is held fixed by the layer
/// norms that read it.
pub fn tiny_vit(
    input: [usize; 3],
    patch: usize,
    dim: usize,
    heads: usize,
    hidden: usize,
    depth: usize,
    classes: usize,
) -> Result<Graph, IrError> {
    vit(
        "tiny_vit", input, patch, dim, heads, hidden, depth, classes, false,
    )
}

/// [`tiny_vit`] with a learned position embedding added to the tokens (`pos_embed`,
/// `[T, dim]`, initialised to zero, after `tokens`): without one the blocks and the token
/// mean see the patches as an unordered set. The position embedding is on the residual
/// stream, which stays fixed; the prunable units are [`tiny_vit`]'s.
pub fn vit_with_positions(
    input: [usize; 3],
    patch: usize,
    dim: usize,
    heads: usize,
    hidden: usize,
    depth: usize,
    classes: usize,
) -> Result<Graph, IrError> {
    vit(
        "vit_with_positions",
        input,
        patch,
        dim,
        heads,
        hidden,
        depth,
        classes,
        true,
    )
}

#[allow(clippy::too_many_arguments)]
fn vit(
    name: &str,
    input: [usize; 3],
    patch: usize,
    dim: usize,
    heads: usize,
    hidden: usize,
    depth: usize,
    classes: usize,
    positions: bool,
) -> Result<Graph, IrError> {
    let mut b = GraphBuilder::new(name, "input", input.to_vec());
    b.conv("patch_embed", "input", dim, patch, patch, 0, true)?;
    let mut x = b.add("tokens", Tokens {}.into(), &["patch_embed"])?;
    if positions {
        // The tokens of a stride-`patch` convolution without padding: ⌊H/p⌋·⌊W/p⌋ (the
        // convolution above refuses a patch of 0 or one larger than the input).
        let tokens = (input[1] / patch) * (input[2] / patch);
        x = b.add(
            "pos_embed",
            PositionEmbedding {
                tokens,
                features: dim,
            }
            .into(),
            &[&x],
        )?;
    }
    // Zero heads give head_dim 0, which the attention refuses naming the node.
    let head_dim = dim.checked_div(heads).unwrap_or(0);
    for i in 0..depth {
        let p = format!("blocks.{i}");
        let n = b.add(&format!("{p}.norm1"), LayerNorm::new(dim).into(), &[&x])?;
        let q = b.linear(&format!("{p}.attn.q"), &n, dim, true)?;
        let k = b.linear(&format!("{p}.attn.k"), &n, dim, true)?;
        let v = b.linear(&format!("{p}.attn.v"), &n, dim, true)?;
        let a = b.add(
            &format!("{p}.attn.attend"),
            Attention::new(head_dim).into(),
            &[&q, &k, &v],
        )?;
        let o = b.linear(&format!("{p}.attn.proj"), &a, dim, true)?;
        x = b.add_all(&format!("{p}.add1"), &[&o, &x])?;
        let n = b.add(&format!("{p}.norm2"), LayerNorm::new(dim).into(), &[&x])?;
        let h = b.linear(&format!("{p}.mlp.fc1"), &n, hidden, true)?;
        let a = b.add(&format!("{p}.mlp.act"), Gelu::default().into(), &[&h])?;
        let o = b.linear(&format!("{p}.mlp.fc2"), &a, dim, true)?;
        x = b.add_all(&format!("{p}.add2"), &[&o, &x])?;
    }
    let n = b.add("norm", LayerNorm::new(dim).into(), &[&x])?;
    b.add("pool", TokenMean {}.into(), &[&n])?;
    b.linear("head", "pool", classes, true)?;
    b.finish()
}
