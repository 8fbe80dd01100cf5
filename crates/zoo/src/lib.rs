//! Model zoo: builders that return a [`fair_ir::Graph`] for the networks of the FAIR-Pruner
//! paper — VGG-11/13/16/19 (with and without BatchNorm, ImageNet head or the compact CIFAR
//! head), AlexNet, ResNet-18/34/50, CIFAR ResNet-20/56/110, DenseNet-121, CIFAR DenseNet-40
//! (k = 12), plain MLPs, a toy vision transformer without attention (`token_mlp`: patch
//! embedding, tokens, pre-LN MLP blocks) and small ones with multi-head attention
//! (`tiny_vit`, and `vit_fashion`: 4×4-pixel patches, a position embedding, 4 blocks,
//! 4 heads). Input channels, input size and number of classes are parameters.
//!
//! Where torchvision has the model, node names equal torchvision's module paths, so parameter
//! names equal its state-dict keys and parameter counts match it exactly.
//!
//! ```
//! let g = fair_zoo::build("resnet50", &[3, 224, 224], 1000)?;
//! assert_eq!(g.param_count(), 25_557_032);
//! let cifar = fair_zoo::build("vgg16_bn_cifar", &[3, 32, 32], 10)?;
//! assert_eq!(cifar.param_count(), 14_990_922);
//! # Ok::<(), fair_zoo::ZooError>(())
//! ```

mod densenet;
mod mlp;
mod resnet;
mod tiny_vit;
mod token_mlp;
mod vgg;

use fair_ir::{Graph, IrError};

pub use densenet::{densenet_cifar, densenet121};
pub use mlp::mlp;
pub use resnet::{resnet, resnet_cifar};
pub use tiny_vit::{tiny_vit, vit_with_positions};
pub use token_mlp::token_mlp;
pub use vgg::{alexnet, vgg, vgg_cifar, vgg_compact};

/// Errors from [`build`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZooError {
    /// The name is not in the zoo.
    #[error("unknown model '{name}'; known models: {}", known())]
    UnknownModel {
        /// The name asked for.
        name: String,
    },
    /// The input shape is not `[C, H, W]` or the class count is zero.
    #[error("model '{model}': {detail}")]
    BadArguments {
        /// The model.
        model: String,
        /// What is wrong.
        detail: String,
    },
    /// The graph could not be built (usually: the input is too small for the network).
    #[error("model '{model}' cannot be built for input {input:?}: {source}")]
    Graph {
        /// The model.
        model: String,
        /// The input shape asked for.
        input: Vec<usize>,
        /// The IR error, naming the node.
        #[source]
        source: IrError,
    },
}

fn known() -> String {
    MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

/// A zoo entry: its name, what it is, and the input/classes it is usually built with.
#[derive(Debug, Clone, Copy)]
pub struct ModelInfo {
    /// Name accepted by [`build`].
    pub name: &'static str,
    /// One line of description.
    pub description: &'static str,
    /// Usual input shape `[C, H, W]`.
    pub default_input: [usize; 3],
    /// Usual number of classes.
    pub default_classes: usize,
}

const IMAGENET: [usize; 3] = [3, 224, 224];
const CIFAR: [usize; 3] = [3, 32, 32];
const FASHION: [usize; 3] = [1, 28, 28];

macro_rules! entry {
    ($name:expr, $desc:expr, $input:expr, $classes:expr) => {
        ModelInfo {
            name: $name,
            description: $desc,
            default_input: $input,
            default_classes: $classes,
        }
    };
}

/// Every model [`build`] knows.
pub const MODELS: &[ModelInfo] = &[
    entry!("vgg11", "VGG-11 (torchvision)", IMAGENET, 1000),
    entry!(
        "vgg11_bn",
        "VGG-11 with BatchNorm (torchvision)",
        IMAGENET,
        1000
    ),
    entry!("vgg13", "VGG-13 (torchvision)", IMAGENET, 1000),
    entry!(
        "vgg13_bn",
        "VGG-13 with BatchNorm (torchvision)",
        IMAGENET,
        1000
    ),
    entry!("vgg16", "VGG-16 (torchvision)", IMAGENET, 1000),
    entry!(
        "vgg16_bn",
        "VGG-16 with BatchNorm (torchvision)",
        IMAGENET,
        1000
    ),
    entry!("vgg19", "VGG-19 (torchvision)", IMAGENET, 1000),
    entry!(
        "vgg19_bn",
        "VGG-19 with BatchNorm (torchvision)",
        IMAGENET,
        1000
    ),
    entry!(
        "vgg11_cifar",
        "VGG-11, compact 512→512→classes head",
        CIFAR,
        10
    ),
    entry!(
        "vgg11_bn_cifar",
        "VGG-11-BN, compact 512→512→classes head",
        CIFAR,
        10
    ),
    entry!(
        "vgg13_cifar",
        "VGG-13, compact 512→512→classes head",
        CIFAR,
        10
    ),
    entry!(
        "vgg13_bn_cifar",
        "VGG-13-BN, compact 512→512→classes head",
        CIFAR,
        10
    ),
    entry!(
        "vgg16_cifar",
        "VGG-16, compact 512→512→classes head",
        CIFAR,
        10
    ),
    entry!(
        "vgg16_bn_cifar",
        "VGG-16-BN, compact 512→512→classes head",
        CIFAR,
        10
    ),
    entry!(
        "vgg19_cifar",
        "VGG-19, compact 512→512→classes head",
        CIFAR,
        10
    ),
    entry!(
        "vgg19_bn_cifar",
        "VGG-19-BN, compact 512→512→classes head",
        CIFAR,
        10
    ),
    entry!("alexnet", "AlexNet (torchvision)", IMAGENET, 1000),
    entry!(
        "resnet18",
        "ResNet-18, basic blocks (torchvision)",
        IMAGENET,
        1000
    ),
    entry!(
        "resnet34",
        "ResNet-34, basic blocks (torchvision)",
        IMAGENET,
        1000
    ),
    entry!(
        "resnet50",
        "ResNet-50, bottleneck blocks (torchvision)",
        IMAGENET,
        1000
    ),
    entry!(
        "resnet20",
        "CIFAR ResNet-20 (3 stages × 3 basic blocks)",
        CIFAR,
        10
    ),
    entry!(
        "resnet56",
        "CIFAR ResNet-56 (3 stages × 9 basic blocks)",
        CIFAR,
        10
    ),
    entry!(
        "resnet110",
        "CIFAR ResNet-110 (3 stages × 18 basic blocks)",
        CIFAR,
        10
    ),
    entry!("densenet121", "DenseNet-121 (torchvision)", IMAGENET, 1000),
    entry!("densenet40", "CIFAR DenseNet-40, growth rate 12", CIFAR, 10),
    entry!(
        "mlp",
        "MLP with hidden layers 512-256 and ReLU",
        FASHION,
        10
    ),
    entry!(
        "vgg_compact",
        "compact VGG-style net (16-16-M-32-32-M-64-M, BN, 128-unit head)",
        FASHION,
        10
    ),
    entry!(
        "token_mlp",
        "ViT-style token MLP: 4×4 patches to 32 features, 2 pre-LN GELU MLP blocks of 64 hidden neurons, token mean, linear head",
        FASHION,
        10
    ),
    entry!(
        "tiny_vit",
        "small ViT: a 4×4 grid of patches (7×7 at 28×28) to 16 tokens of 32 features, 2 pre-LN blocks of 4-head attention and a 64-neuron GELU MLP, token mean, linear head",
        FASHION,
        10
    ),
    entry!(
        "vit_fashion",
        "small ViT: 4×4-pixel patches (49 tokens at 28×28) of 48 features with a learned position embedding, 4 pre-LN blocks of 4-head attention (head_dim 12) and a 96-neuron GELU MLP, token mean, linear head",
        FASHION,
        10
    ),
];

/// Looks up a zoo entry by name.
pub fn info(name: &str) -> Option<&'static ModelInfo> {
    MODELS.iter().find(|m| m.name == name)
}

/// Builds the zoo model `name` for per-sample input shape `input` (`[C, H, W]`) and
/// `classes` outputs.
pub fn build(name: &str, input: &[usize], classes: usize) -> Result<Graph, ZooError> {
    let bad = |detail: String| ZooError::BadArguments {
        model: name.to_owned(),
        detail,
    };
    if info(name).is_none() {
        return Err(ZooError::UnknownModel {
            name: name.to_owned(),
        });
    }
    let &[c, h, w] = input else {
        return Err(bad(format!(
            "expected an input shape [C, H, W], found {input:?}"
        )));
    };
    if classes == 0 {
        return Err(bad("the number of classes must be at least 1".into()));
    }
    let input3 = [c, h, w];
    let built = match name {
        "alexnet" => alexnet(input3, classes),
        "resnet18" => resnet(18, input3, classes),
        "resnet34" => resnet(34, input3, classes),
        "resnet50" => resnet(50, input3, classes),
        "resnet20" => resnet_cifar(20, input3, classes),
        "resnet56" => resnet_cifar(56, input3, classes),
        "resnet110" => resnet_cifar(110, input3, classes),
        "densenet121" => densenet121(input3, classes),
        "densenet40" => densenet_cifar(40, 12, input3, classes),
        "mlp" => mlp(input3.to_vec(), &[512, 256], classes),
        "vgg_compact" => vgg_compact(input3, classes),
        "token_mlp" => token_mlp(input3, 4, 32, 64, 2, classes),
        // Square patches of p = min(H, W)/4 pixels (at least 1), stride p: ⌊H/p⌋·⌊W/p⌋
        // tokens. A 4×4 grid (16 tokens) on square inputs whose side is a multiple of 4 or
        // at least 16; more on others (8×16: 4·8 = 32; 11×11: 5·5 = 25).
        "tiny_vit" => tiny_vit(input3, (h.min(w) / 4).max(1), 32, 4, 64, 2, classes),
        // Patches of 4×4 pixels whatever the input size: ⌊H/4⌋·⌊W/4⌋ tokens (49 at 28×28).
        "vit_fashion" => vit_with_positions(input3, 4, 48, 4, 96, 4, classes),
        _ => {
            let (base, cifar) = match name.strip_suffix("_cifar") {
                Some(b) => (b, true),
                None => (name, false),
            };
            let (depth, bn) = match base.strip_suffix("_bn") {
                Some(d) => (d, true),
                None => (base, false),
            };
            let depth: usize = depth
                .strip_prefix("vgg")
                .and_then(|d| d.parse().ok())
                .expect("every remaining zoo name is a VGG");
            if cifar {
                vgg_cifar(depth, bn, input3, classes)
            } else {
                vgg(depth, bn, input3, classes)
            }
        }
    };
    built.map_err(|source| ZooError::Graph {
        model: name.to_owned(),
        input: input.to_vec(),
        source,
    })
}

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
