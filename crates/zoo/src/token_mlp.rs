//! A toy vision transformer without attention: the token MLP blocks of a ViT.

use fair_ir::{Gelu, Graph, GraphBuilder, IrError, LayerNorm, TokenMean, Tokens};

/// A patch embedding (a `patch`×`patch` convolution of stride `patch` to `dim` channels,
/// `patch_embed`), its pixels as tokens `[T, dim]` (`tokens`), `depth` pre-LN MLP blocks
/// `x + fc2(gelu(fc1(norm(x))))` with `hidden` neurons (`blocks.{i}.norm`, `.fc1`, `.act`,
/// `.fc2`, `.add`), the mean over the tokens (`pool`) and a linear `head`. The prunable units
/// are the patch embedding's channels (held fixed: they are the residual stream, read by
/// layer norms) and each block's hidden neurons.
pub fn token_mlp(
    input: [usize; 3],
    patch: usize,
    dim: usize,
    hidden: usize,
    depth: usize,
    classes: usize,
) -> Result<Graph, IrError> {
    let mut b = GraphBuilder::new("token_mlp", "input", input.to_vec());
    b.conv("patch_embed", "input", dim, patch, patch, 0, true)?;
    let mut x = b.add("tokens", Tokens {}.into(), &["patch_embed"])?;
    for i in 0..depth {
        let p = format!("blocks.{i}");
        let n = b.add(&format!("{p}.norm"), LayerNorm::new(dim).into(), &[&x])?;
        let h = b.linear(&format!("{p}.fc1"), &n, hidden, true)?;
        let a = b.add(&format!("{p}.act"), Gelu::default().into(), &[&h])?;
        let o = b.linear(&format!("{p}.fc2"), &a, dim, true)?;
        x = b.add_all(&format!("{p}.add"), &[&o, &x])?;
    }
    b.add("pool", TokenMean {}.into(), &[&x])?;
    b.linear("head", "pool", classes, true)?;
    b.finish()
}
