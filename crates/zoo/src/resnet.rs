//! ResNets: torchvision's ImageNet family and the CIFAR family of He et al.

use fair_ir::{Graph, GraphBuilder, IrError};

/// A basic block (two 3×3 convs) named like torchvision's `BasicBlock`; returns its output.
fn basic_block(
    b: &mut GraphBuilder,
    p: &str,
    input: &str,
    planes: usize,
    stride: usize,
) -> Result<String, IrError> {
    let x = b.conv(&format!("{p}.conv1"), input, planes, 3, stride, 1, false)?;
    let x = b.bn2d(&format!("{p}.bn1"), &x)?;
    let x = b.relu(&format!("{p}.relu1"), &x)?;
    let x = b.conv(&format!("{p}.conv2"), &x, planes, 3, 1, 1, false)?;
    let x = b.bn2d(&format!("{p}.bn2"), &x)?;
    let identity = shortcut(b, p, input, planes, stride)?;
    let x = b.add_all(&format!("{p}.add"), &[&x, &identity])?;
    b.relu(&format!("{p}.relu2"), &x)
}

/// A bottleneck block (1×1, 3×3 with the stride, 1×1 ×4) like torchvision's `Bottleneck`.
fn bottleneck(
    b: &mut GraphBuilder,
    p: &str,
    input: &str,
    planes: usize,
    stride: usize,
) -> Result<String, IrError> {
    let x = b.conv(&format!("{p}.conv1"), input, planes, 1, 1, 0, false)?;
    let x = b.bn2d(&format!("{p}.bn1"), &x)?;
    let x = b.relu(&format!("{p}.relu1"), &x)?;
    let x = b.conv(&format!("{p}.conv2"), &x, planes, 3, stride, 1, false)?;
    let x = b.bn2d(&format!("{p}.bn2"), &x)?;
    let x = b.relu(&format!("{p}.relu2"), &x)?;
    let x = b.conv(&format!("{p}.conv3"), &x, planes * 4, 1, 1, 0, false)?;
    let x = b.bn2d(&format!("{p}.bn3"), &x)?;
    let identity = shortcut(b, p, input, planes * 4, stride)?;
    let x = b.add_all(&format!("{p}.add"), &[&x, &identity])?;
    b.relu(&format!("{p}.relu3"), &x)
}

/// The identity, or a 1×1 conv + BN projection (`downsample.0/1`) when the shape changes.
fn shortcut(
    b: &mut GraphBuilder,
    p: &str,
    input: &str,
    out_channels: usize,
    stride: usize,
) -> Result<String, IrError> {
    if stride == 1 && b.shape(input)?[0] == out_channels {
        return Ok(input.to_owned());
    }
    let x = b.conv(
        &format!("{p}.downsample.0"),
        input,
        out_channels,
        1,
        stride,
        0,
        false,
    )?;
    b.bn2d(&format!("{p}.downsample.1"), &x)
}

/// torchvision's ResNet-18, -34 (basic blocks) or -50 (bottlenecks).
pub fn resnet(depth: usize, input: [usize; 3], classes: usize) -> Result<Graph, IrError> {
    let (blocks, bottle): (&[usize], bool) = match depth {
        18 => (&[2, 2, 2, 2], false),
        34 => (&[3, 4, 6, 3], false),
        50 => (&[3, 4, 6, 3], true),
        _ => panic!("ImageNet ResNet depth must be 18, 34 or 50, got {depth}"),
    };
    let mut b = GraphBuilder::new(format!("resnet{depth}"), "input", input.to_vec());
    let x = b.conv("conv1", "input", 64, 7, 2, 3, false)?;
    let x = b.bn2d("bn1", &x)?;
    let x = b.relu("relu", &x)?;
    let mut x = b.max_pool("maxpool", &x, 3, 2, 1)?;
    for (stage, &n) in blocks.iter().enumerate() {
        let planes = 64 << stage;
        for i in 0..n {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let p = format!("layer{}.{i}", stage + 1);
            x = if bottle {
                bottleneck(&mut b, &p, &x, planes, stride)?
            } else {
                basic_block(&mut b, &p, &x, planes, stride)?
            };
        }
    }
    let x = b.adaptive_avg_pool("avgpool", &x, 1, 1)?;
    let x = b.flatten("flatten", &x)?;
    b.linear("fc", &x, classes, true)?;
    b.finish()
}

/// The CIFAR ResNet of He et al. (depth = 6n + 2: 20, 32, 44, 56, 110, ...): a 3×3 stem with
/// 16 channels, three stages of n basic blocks with 16, 32 and 64 channels, global average
/// pooling and `fc`. Where a stage changes shape the shortcut is a 1×1 conv + BN projection
/// (option B of the paper; option A's zero-padding shortcut is not an IR op). Names follow
/// torchvision's ResNet.
pub fn resnet_cifar(depth: usize, input: [usize; 3], classes: usize) -> Result<Graph, IrError> {
    assert!(
        depth >= 8 && (depth - 2).is_multiple_of(6),
        "CIFAR ResNet depth must be 6n + 2, got {depth}"
    );
    let n = (depth - 2) / 6;
    let mut b = GraphBuilder::new(format!("resnet{depth}"), "input", input.to_vec());
    let x = b.conv("conv1", "input", 16, 3, 1, 1, false)?;
    let x = b.bn2d("bn1", &x)?;
    let mut x = b.relu("relu", &x)?;
    for stage in 0..3 {
        for i in 0..n {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            let p = format!("layer{}.{i}", stage + 1);
            x = basic_block(&mut b, &p, &x, 16 << stage, stride)?;
        }
    }
    let x = b.adaptive_avg_pool("avgpool", &x, 1, 1)?;
    let x = b.flatten("flatten", &x)?;
    b.linear("fc", &x, classes, true)?;
    b.finish()
}
