//! Model surgery: turns a prune plan into a smaller graph and smaller weights, keeping
//! coupled channels (residual adds, concatenations) consistent.
//!
//! Status: skeleton. It lists the prunable layers of a graph; dependency groups and plan
//! application come with the surgery work.
//!
//! ```
//! let g = fair_zoo::build("vgg11_cifar", &[3, 32, 32], 10)?;
//! let layers = fair_surgery::prunable_layers(&g);
//! assert_eq!(layers.len(), 9); // 8 convs + the hidden linear; the output layer is never pruned
//! # Ok::<(), fair_zoo::ZooError>(())
//! ```

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

#[cfg(test)]
mod tests {
    #[test]
    fn output_layer_is_excluded() {
        let g = fair_zoo::build("mlp", &[1, 28, 28], 10).unwrap();
        assert_eq!(super::prunable_layers(&g), ["layers.0", "layers.2"]);
        let r = fair_zoo::build("resnet20", &[3, 32, 32], 10).unwrap();
        let layers = super::prunable_layers(&r);
        assert_eq!(
            layers.len(),
            1 + 18 + 2,
            "stem, 18 block convs, 2 projections"
        );
        assert!(!layers.contains(&"fc".to_owned()));
    }
}
