//! Plain multilayer perceptrons.

use fair_ir::{Graph, GraphBuilder, IrError};

/// An MLP: `flatten`, then for each hidden width a Linear (`layers.{2i}`) and a ReLU
/// (`layers.{2i+1}`), then the output Linear — the numbering of a PyTorch
/// `nn.Sequential` named `layers`.
pub fn mlp(input: Vec<usize>, hidden: &[usize], classes: usize) -> Result<Graph, IrError> {
    let mut b = GraphBuilder::new("mlp", "input", input);
    let mut x = b.flatten("flatten", "input")?;
    for (i, &width) in hidden.iter().enumerate() {
        x = b.linear(&format!("layers.{}", 2 * i), &x, width, true)?;
        x = b.relu(&format!("layers.{}", 2 * i + 1), &x)?;
    }
    b.linear(&format!("layers.{}", 2 * hidden.len()), &x, classes, true)?;
    b.finish()
}
