//! Helpers shared by the fair-onnx integration tests.

use fair_ir::Graph;
use fair_onnx::Tensor;

/// Deterministic tensors for every parameter of `g` (a sine ramp; the BatchNorm step
/// counter 3), so exports of the same graph are the same bytes.
pub fn tensors_for(g: &Graph) -> Vec<Tensor> {
    g.params()
        .iter()
        .map(|p| match p.kind {
            fair_ir::ParamKind::NumBatchesTracked => Tensor::i64(&p.name, p.shape.clone(), vec![3]),
            _ => Tensor::f32(
                &p.name,
                p.shape.clone(),
                (0..p.numel()).map(|i| (i as f32 * 0.37).sin()).collect(),
            ),
        })
        .collect()
}
