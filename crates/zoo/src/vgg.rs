//! VGG and AlexNet.

use fair_ir::{Graph, GraphBuilder, IrError};

/// Feature configuration: channel counts, `0` for a 2×2 max pool.
fn config(depth: usize) -> &'static [usize] {
    match depth {
        11 => &[64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0],
        13 => &[
            64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0,
        ],
        16 => &[
            64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
        ],
        19 => &[
            64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512,
            512, 0,
        ],
        _ => panic!("VGG depth must be 11, 13, 16 or 19, got {depth}"),
    }
}

/// The `features` stack (torchvision numbering: every conv, BN, ReLU and pool takes an index).
fn features(b: &mut GraphBuilder, depth: usize, bn: bool) -> Result<String, IrError> {
    let mut x = "input".to_owned();
    let mut i = 0;
    for &v in config(depth) {
        if v == 0 {
            x = b.max_pool(&format!("features.{i}"), &x, 2, 2, 0)?;
            i += 1;
        } else {
            x = b.conv(&format!("features.{i}"), &x, v, 3, 1, 1, true)?;
            i += 1;
            if bn {
                x = b.bn2d(&format!("features.{i}"), &x)?;
                i += 1;
            }
            x = b.relu(&format!("features.{i}"), &x)?;
            i += 1;
        }
    }
    Ok(x)
}

fn vgg_name(depth: usize, bn: bool) -> String {
    format!("vgg{depth}{}", if bn { "_bn" } else { "" })
}

/// torchvision's VGG (`vgg11` … `vgg19_bn`): features, 7×7 adaptive average pool and the
/// 4096-4096-classes classifier with dropout. `depth` is 11, 13, 16 or 19.
pub fn vgg(depth: usize, bn: bool, input: [usize; 3], classes: usize) -> Result<Graph, IrError> {
    let mut b = GraphBuilder::new(vgg_name(depth, bn), "input", input.to_vec());
    let x = features(&mut b, depth, bn)?;
    let x = b.adaptive_avg_pool("avgpool", &x, 7, 7)?;
    let x = b.flatten("flatten", &x)?;
    let x = b.linear("classifier.0", &x, 4096, true)?;
    let x = b.relu("classifier.1", &x)?;
    let x = b.dropout("classifier.2", &x, 0.5)?;
    let x = b.linear("classifier.3", &x, 4096, true)?;
    let x = b.relu("classifier.4", &x)?;
    let x = b.dropout("classifier.5", &x, 0.5)?;
    b.linear("classifier.6", &x, classes, true)?;
    b.finish()
}

/// The compact CIFAR VGG: torchvision's `features`, a global average pool (the identity at
/// 32×32, where the features end at 1×1) and a 512→512→classes head
/// (`classifier.0` Linear, `classifier.1` ReLU, `classifier.2` Linear).
pub fn vgg_cifar(
    depth: usize,
    bn: bool,
    input: [usize; 3],
    classes: usize,
) -> Result<Graph, IrError> {
    let mut b = GraphBuilder::new(
        format!("{}_cifar", vgg_name(depth, bn)),
        "input",
        input.to_vec(),
    );
    let x = features(&mut b, depth, bn)?;
    let x = b.adaptive_avg_pool("avgpool", &x, 1, 1)?;
    let x = b.flatten("flatten", &x)?;
    let x = b.linear("classifier.0", &x, 512, true)?;
    let x = b.relu("classifier.1", &x)?;
    b.linear("classifier.2", &x, classes, true)?;
    b.finish()
}

/// torchvision's AlexNet.
pub fn alexnet(input: [usize; 3], classes: usize) -> Result<Graph, IrError> {
    let mut b = GraphBuilder::new("alexnet", "input", input.to_vec());
    let x = b.conv("features.0", "input", 64, 11, 4, 2, true)?;
    let x = b.relu("features.1", &x)?;
    let x = b.max_pool("features.2", &x, 3, 2, 0)?;
    let x = b.conv("features.3", &x, 192, 5, 1, 2, true)?;
    let x = b.relu("features.4", &x)?;
    let x = b.max_pool("features.5", &x, 3, 2, 0)?;
    let x = b.conv("features.6", &x, 384, 3, 1, 1, true)?;
    let x = b.relu("features.7", &x)?;
    let x = b.conv("features.8", &x, 256, 3, 1, 1, true)?;
    let x = b.relu("features.9", &x)?;
    let x = b.conv("features.10", &x, 256, 3, 1, 1, true)?;
    let x = b.relu("features.11", &x)?;
    let x = b.max_pool("features.12", &x, 3, 2, 0)?;
    let x = b.adaptive_avg_pool("avgpool", &x, 6, 6)?;
    let x = b.flatten("flatten", &x)?;
    let x = b.dropout("classifier.0", &x, 0.5)?;
    let x = b.linear("classifier.1", &x, 4096, true)?;
    let x = b.relu("classifier.2", &x)?;
    let x = b.dropout("classifier.3", &x, 0.5)?;
    let x = b.linear("classifier.4", &x, 4096, true)?;
    let x = b.relu("classifier.5", &x)?;
    b.linear("classifier.6", &x, classes, true)?;
    b.finish()
}

/// A compact VGG-style network for small grey images (Fashion-MNIST, MNIST): conv 16-16,
/// pool, conv 32-32, pool, conv 64, pool (3×3 convs with BatchNorm and ReLU, torchvision
/// numbering in `features`), then `classifier.0` Linear → 128, `classifier.1` ReLU,
/// `classifier.2` Linear → classes. About 5.6 M MACs at 28×28.
pub fn vgg_compact(input: [usize; 3], classes: usize) -> Result<Graph, IrError> {
    let mut b = GraphBuilder::new("vgg_compact", "input", input.to_vec());
    let mut x = "input".to_owned();
    let mut i = 0;
    for v in [16, 16, 0, 32, 32, 0, 64, 0] {
        if v == 0 {
            x = b.max_pool(&format!("features.{i}"), &x, 2, 2, 0)?;
            i += 1;
        } else {
            x = b.conv(&format!("features.{i}"), &x, v, 3, 1, 1, true)?;
            x = b.bn2d(&format!("features.{}", i + 1), &x)?;
            x = b.relu(&format!("features.{}", i + 2), &x)?;
            i += 3;
        }
    }
    let x = b.flatten("flatten", &x)?;
    let x = b.linear("classifier.0", &x, 128, true)?;
    let x = b.relu("classifier.1", &x)?;
    b.linear("classifier.2", &x, classes, true)?;
    b.finish()
}
