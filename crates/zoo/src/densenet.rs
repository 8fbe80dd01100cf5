//! DenseNets: torchvision's DenseNet-121 and the CIFAR DenseNet of Huang et al.

use fair_ir::{Graph, GraphBuilder, IrError};

/// One dense block. Layer `l` reads the concatenation of the block input and the new features
/// of layers `1..l` (a `cat` node, as torchvision's `torch.cat(prev_features, 1)`); the block
/// output is the concatenation of all of them. With `bottleneck_width`, a layer is
/// BN-ReLU-Conv1×1(width)-BN-ReLU-Conv3×3(growth) (`norm1 relu1 conv1 norm2 relu2 conv2`),
/// otherwise BN-ReLU-Conv3×3(growth) (`norm1 relu1 conv1`).
fn dense_block(
    b: &mut GraphBuilder,
    p: &str,
    input: &str,
    layers: usize,
    growth: usize,
    bottleneck_width: Option<usize>,
) -> Result<String, IrError> {
    let mut features = vec![input.to_owned()];
    for l in 1..=layers {
        let q = format!("{p}.denselayer{l}");
        let x = if features.len() == 1 {
            features[0].clone()
        } else {
            let refs: Vec<&str> = features.iter().map(String::as_str).collect();
            b.concat(&format!("{q}.cat"), &refs)?
        };
        let x = b.bn2d(&format!("{q}.norm1"), &x)?;
        let x = b.relu(&format!("{q}.relu1"), &x)?;
        let new = match bottleneck_width {
            Some(width) => {
                let x = b.conv(&format!("{q}.conv1"), &x, width, 1, 1, 0, false)?;
                let x = b.bn2d(&format!("{q}.norm2"), &x)?;
                let x = b.relu(&format!("{q}.relu2"), &x)?;
                b.conv(&format!("{q}.conv2"), &x, growth, 3, 1, 1, false)?
            }
            None => b.conv(&format!("{q}.conv1"), &x, growth, 3, 1, 1, false)?,
        };
        features.push(new);
    }
    let refs: Vec<&str> = features.iter().map(String::as_str).collect();
    b.concat(&format!("{p}.cat"), &refs)
}

/// A transition: BN-ReLU-Conv1×1(`out`)-AvgPool2×2 (`norm relu conv pool`).
fn transition(b: &mut GraphBuilder, p: &str, input: &str, out: usize) -> Result<String, IrError> {
    let x = b.bn2d(&format!("{p}.norm"), input)?;
    let x = b.relu(&format!("{p}.relu"), &x)?;
    let x = b.conv(&format!("{p}.conv"), &x, out, 1, 1, 0, false)?;
    b.avg_pool(&format!("{p}.pool"), &x, 2, 2)
}

/// The head: final BN (`features.<norm>`), ReLU, global average pool, `classifier`.
fn head(b: &mut GraphBuilder, norm: &str, x: &str, classes: usize) -> Result<(), IrError> {
    let x = b.bn2d(&format!("features.{norm}"), x)?;
    let x = b.relu("relu", &x)?;
    let x = b.adaptive_avg_pool("avgpool", &x, 1, 1)?;
    let x = b.flatten("flatten", &x)?;
    b.linear("classifier", &x, classes, true)?;
    Ok(())
}

/// torchvision's DenseNet-121: growth 32, blocks (6, 12, 24, 16), bottleneck width 128,
/// 64 initial features, compression 0.5.
pub fn densenet121(input: [usize; 3], classes: usize) -> Result<Graph, IrError> {
    let growth = 32;
    let mut b = GraphBuilder::new("densenet121", "input", input.to_vec());
    let x = b.conv("features.conv0", "input", 64, 7, 2, 3, false)?;
    let x = b.bn2d("features.norm0", &x)?;
    let x = b.relu("features.relu0", &x)?;
    let mut x = b.max_pool("features.pool0", &x, 3, 2, 1)?;
    let blocks = [6, 12, 24, 16];
    for (i, &layers) in blocks.iter().enumerate() {
        let p = format!("features.denseblock{}", i + 1);
        x = dense_block(&mut b, &p, &x, layers, growth, Some(4 * growth))?;
        if i + 1 < blocks.len() {
            let c = b.shape(&x)?[0];
            x = transition(&mut b, &format!("features.transition{}", i + 1), &x, c / 2)?;
        }
    }
    head(&mut b, "norm5", &x, classes)?;
    b.finish()
}

/// The CIFAR DenseNet of Huang et al. without bottlenecks or compression (DenseNet-40 with
/// growth 12 is the paper's model): a 3×3 stem with 16 channels, three dense blocks of
/// (depth − 4) / 3 layers with transitions between them, global average pooling and
/// `classifier`. Names follow torchvision's DenseNet (`features.conv0`,
/// `features.denseblockN.denselayerM.norm1/conv1`, `features.transitionN.norm/conv`,
/// `features.norm_final`, `classifier`).
pub fn densenet_cifar(
    depth: usize,
    growth: usize,
    input: [usize; 3],
    classes: usize,
) -> Result<Graph, IrError> {
    assert!(
        depth >= 7 && (depth - 4).is_multiple_of(3),
        "CIFAR DenseNet depth must be 3n + 4, got {depth}"
    );
    let layers = (depth - 4) / 3;
    let mut b = GraphBuilder::new(format!("densenet{depth}"), "input", input.to_vec());
    let mut x = b.conv("features.conv0", "input", 16, 3, 1, 1, false)?;
    for i in 0..3 {
        let p = format!("features.denseblock{}", i + 1);
        x = dense_block(&mut b, &p, &x, layers, growth, None)?;
        if i < 2 {
            let c = b.shape(&x)?[0];
            x = transition(&mut b, &format!("features.transition{}", i + 1), &x, c)?;
        }
    }
    head(&mut b, "norm_final", &x, classes)?;
    b.finish()
}
