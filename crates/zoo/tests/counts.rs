//! Parameter and MAC counts against published figures: torchvision's documented parameter
//! counts and the MAC figures of the pruning literature. (The PyTorch cross-check of names and
//! shapes against torchvision itself lives in the runtime crate's tests.)

use fair_zoo::build;

fn params(name: &str, input: [usize; 3], classes: usize) -> usize {
    build(name, &input, classes).unwrap().param_count()
}

fn macs(name: &str, input: [usize; 3], classes: usize) -> u64 {
    build(name, &input, classes).unwrap().macs()
}

const IMAGENET: [usize; 3] = [3, 224, 224];
const CIFAR: [usize; 3] = [3, 32, 32];
const FASHION_INPUT: [usize; 3] = [1, 28, 28];

#[test]
fn torchvision_parameter_counts() {
    // torchvision 0.26 model documentation ("num_params").
    let expected = [
        ("vgg11", 132_863_336),
        ("vgg11_bn", 132_868_840),
        ("vgg13", 133_047_848),
        ("vgg13_bn", 133_053_736),
        ("vgg16", 138_357_544),
        ("vgg16_bn", 138_365_992),
        ("vgg19", 143_667_240),
        ("vgg19_bn", 143_678_248),
        ("alexnet", 61_100_840),
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("densenet121", 7_978_856),
    ];
    for (name, count) in expected {
        assert_eq!(params(name, IMAGENET, 1000), count, "{name}");
    }
}

#[test]
fn cifar_parameter_counts() {
    assert_eq!(params("vgg16_bn_cifar", CIFAR, 10), 14_990_922);
    // He et al. report 0.27 M / 0.85 M / 1.7 M for ResNet-20/56/110 (option A shortcuts);
    // our option-B projections add 2 × (1×1 conv + BN) = 2,752 parameters.
    let r20 = params("resnet20", CIFAR, 10) as f64;
    let r56 = params("resnet56", CIFAR, 10) as f64;
    let r110 = params("resnet110", CIFAR, 10) as f64;
    assert!((r20 / 0.27e6 - 1.0).abs() < 0.03, "resnet20 {r20}");
    assert!((r56 / 0.85e6 - 1.0).abs() < 0.01, "resnet56 {r56}");
    assert!((r110 / 1.7e6 - 1.0).abs() < 0.03, "resnet110 {r110}");
    // Huang et al.: DenseNet (L = 40, k = 12) has 1.0 M parameters.
    let d40 = params("densenet40", CIFAR, 10) as f64;
    assert!((d40 / 1.0e6 - 1.0).abs() < 0.03, "densenet40 {d40}");
}

#[test]
fn published_mac_counts_within_one_percent() {
    let cases = [
        ("resnet50", IMAGENET, 1000, 4.1e9),
        ("vgg16", IMAGENET, 1000, 15.5e9),
        ("vgg16_bn_cifar", CIFAR, 10, 313.7e6),
        ("resnet56", CIFAR, 10, 125.5e6),
    ];
    for (name, input, classes, published) in cases {
        let m = macs(name, input, classes) as f64;
        assert!(
            (m / published - 1.0).abs() <= 0.01,
            "{name}: {m} MACs vs published {published}"
        );
    }
}

#[test]
fn hand_computed_cifar_vgg16_bn_macs() {
    // Sum over the 13 convs of H·W·Cout·Cin·9 at 32, 32, 16, 16, 8 (×3), 4 (×3), 2 (×3), plus
    // the 512·512 + 512·10 head.
    let conv: u64 = [
        (32, 3, 64),
        (32, 64, 64),
        (16, 64, 128),
        (16, 128, 128),
        (8, 128, 256),
        (8, 256, 256),
        (8, 256, 256),
        (4, 256, 512),
        (4, 512, 512),
        (4, 512, 512),
        (2, 512, 512),
        (2, 512, 512),
        (2, 512, 512),
    ]
    .iter()
    .map(|&(s, i, o)| s * s * i * o * 9)
    .sum();
    assert_eq!(
        macs("vgg16_bn_cifar", CIFAR, 10),
        conv + 512 * 512 + 512 * 10
    );
}

#[test]
fn every_zoo_model_builds_at_its_default_size() {
    for m in fair_zoo::MODELS {
        let g = build(m.name, &m.default_input, m.default_classes)
            .unwrap_or_else(|e| panic!("{}: {e}", m.name));
        assert_eq!(
            g.shape(&g.output().name).unwrap(),
            &[m.default_classes],
            "{}",
            m.name
        );
    }
}

#[test]
fn input_channels_size_and_classes_are_parameters() {
    let g = build("resnet20", &[1, 28, 28], 7).unwrap();
    assert_eq!(
        g.node("conv1").unwrap().op.params("conv1")[0].shape,
        vec![16, 1, 3, 3]
    );
    assert_eq!(g.shape("fc").unwrap(), &[7]);
    let v = build("vgg11_bn_cifar", &[3, 64, 64], 100).unwrap();
    assert_eq!(v.shape("features.28").unwrap(), &[512, 2, 2]);
    assert_eq!(v.shape("classifier.2").unwrap(), &[100]);
}

#[test]
fn too_small_input_names_the_node() {
    let err = build("vgg16_bn_cifar", &[1, 28, 28], 10)
        .unwrap_err()
        .to_string();
    assert!(err.contains("features.43"), "{err}");
    assert!(err.contains("too small"), "{err}");
    let err = build("resnet99", &CIFAR, 10).unwrap_err().to_string();
    assert!(
        err.contains("unknown model 'resnet99'") && err.contains("resnet56"),
        "{err}"
    );
}

#[test]
fn hand_computed_token_mlp_shapes_params_and_macs() {
    // 1×28×28, 4×4 patches: 7·7 = 49 tokens of 32 features; 2 blocks of 64 hidden neurons.
    let g = build("token_mlp", &FASHION_INPUT, 10).unwrap();
    assert_eq!(g.shape("patch_embed").unwrap(), &[32, 7, 7]);
    assert_eq!(g.shape("tokens").unwrap(), &[49, 32]);
    assert_eq!(g.shape("blocks.1.fc1").unwrap(), &[49, 64]);
    assert_eq!(g.shape("blocks.1.add").unwrap(), &[49, 32]);
    assert_eq!(g.shape("pool").unwrap(), &[32]);
    // Patch embedding 32·16 + 32; per block LN 2·32, fc1 64·32 + 64, fc2 32·64 + 32; head
    // 10·32 + 10.
    let block = 64 + (2048 + 64) + (2048 + 32);
    assert_eq!(g.param_count(), 544 + 2 * block + 330);
    // Conv 49·32·16; per block two token linears of 49·32·64; head 32·10.
    assert_eq!(g.macs(), 49 * 32 * 16 + 2 * 2 * 49 * 32 * 64 + 320);
}

#[test]
fn hand_computed_tiny_vit_shapes_params_and_macs() {
    // 1×28×28, 7×7 patches: 4·4 = 16 tokens of 32 features; 2 blocks of 4 heads of 8
    // channels and 64 hidden neurons.
    let g = build("tiny_vit", &FASHION_INPUT, 10).unwrap();
    assert_eq!(g.shape("patch_embed").unwrap(), &[32, 4, 4]);
    assert_eq!(g.shape("tokens").unwrap(), &[16, 32]);
    for l in ["q", "k", "v", "attend", "proj"] {
        assert_eq!(g.shape(&format!("blocks.1.attn.{l}")).unwrap(), &[16, 32]);
    }
    assert_eq!(
        g.node("blocks.0.attn.attend").unwrap().op,
        fair_ir::Attention::new(8).into()
    );
    assert_eq!(g.shape("blocks.1.mlp.fc1").unwrap(), &[16, 64]);
    assert_eq!(g.shape("blocks.1.add2").unwrap(), &[16, 32]);
    assert_eq!(g.shape("pool").unwrap(), &[32]);
    assert_eq!(g.shape("head").unwrap(), &[10]);
    // Patch embedding 32·49 + 32; per block 2 LNs 2·2·32, q/k/v/proj 4·(32·32 + 32), fc1
    // 64·32 + 64, fc2 32·64 + 32; final LN 2·32; head 10·32 + 10.
    let block = 128 + 4 * 1056 + (2048 + 64) + (2048 + 32);
    assert_eq!(g.param_count(), 1600 + 2 * block + 64 + 330);
    // Conv 16·32·49; per block four 16·32·32 projections, attention 2·16²·32, fc1 and fc2
    // 16·32·64 each; head 32·10.
    let block = 4 * 16 * 32 * 32 + 2 * 256 * 32 + 2 * 16 * 32 * 64;
    assert_eq!(g.macs(), 16 * 32 * 49 + 2 * block + 320);
    assert_eq!(
        g.prunable_layers().len(),
        1 + 2 * 6 // patch embedding; per block q, k, v, proj, fc1, fc2 (not the head)
    );
}

#[test]
fn tiny_vit_tokens_follow_the_patch_of_the_shorter_side() {
    // Square sides that are multiples of 4 or at least 16: a 4×4 grid, 16 tokens. Others:
    // ⌊H/p⌋·⌊W/p⌋ with p = min(H, W)/4.
    for (input, patch, tokens) in [
        ([1, 8, 8], 2, 16),
        ([3, 32, 32], 8, 16),
        ([1, 28, 28], 7, 16),
        ([1, 18, 18], 4, 16),
        ([1, 8, 16], 2, 4 * 8),
        ([1, 16, 8], 2, 8 * 4),
        ([1, 11, 11], 2, 5 * 5),
    ] {
        let g = build("tiny_vit", &input, 10).unwrap();
        assert_eq!(g.shape("tokens").unwrap(), &[tokens, 32], "{input:?}");
        assert_eq!(
            g.node("patch_embed").unwrap().op.params("p")[0].shape,
            vec![32, input[0], patch, patch]
        );
    }
}

#[test]
fn hand_computed_vit_fashion_shapes_params_and_macs() {
    // 1×28×28, 4×4-pixel patches: 7·7 = 49 tokens of 48 features; 4 blocks of 4 heads of 12
    // channels and 96 hidden neurons.
    let g = build("vit_fashion", &FASHION_INPUT, 10).unwrap();
    assert_eq!(g.shape("patch_embed").unwrap(), &[48, 7, 7]);
    assert_eq!(g.shape("tokens").unwrap(), &[49, 48]);
    assert_eq!(g.shape("pos_embed").unwrap(), &[49, 48]);
    assert_eq!(
        g.node("pos_embed").unwrap().op,
        fair_ir::PositionEmbedding {
            tokens: 49,
            features: 48
        }
        .into()
    );
    for l in ["q", "k", "v", "attend", "proj"] {
        assert_eq!(g.shape(&format!("blocks.3.attn.{l}")).unwrap(), &[49, 48]);
    }
    assert_eq!(
        g.node("blocks.2.attn.attend").unwrap().op,
        fair_ir::Attention::new(12).into()
    );
    assert_eq!(g.shape("blocks.3.mlp.fc1").unwrap(), &[49, 96]);
    assert_eq!(g.shape("blocks.3.add2").unwrap(), &[49, 48]);
    assert!(g.node("blocks.4.norm1").is_err(), "four blocks");
    assert_eq!(g.shape("pool").unwrap(), &[48]);
    assert_eq!(g.shape("head").unwrap(), &[10]);
    // Patch embedding 48·1·4·4 + 48 = 816; position embedding 49·48 = 2352; per block 2
    // LNs 2·2·48 = 192, q/k/v/proj 4·(48·48 + 48) = 9408, fc1 96·48 + 96 = 4704, fc2
    // 48·96 + 48 = 4656; final LN 96; head 10·48 + 10 = 490.
    assert_eq!(
        g.param_count(),
        816 + 2352 + 4 * (192 + 9408 + 4704 + 4656) + 96 + 490
    );
    assert_eq!(g.param_count(), 79_594);
    // Conv 49·48·16 = 37632; per block four 49·48·48 projections (451584), attention
    // 2·49²·48 (230496), fc1 and fc2 49·48·96 each (451584); head 48·10.
    assert_eq!(g.macs(), 37_632 + 4 * (451_584 + 230_496 + 451_584) + 480);
    assert_eq!(g.macs(), 4_572_768);
    assert_eq!(
        g.prunable_layers().len(),
        1 + 4 * 6 // patch embedding; per block q, k, v, proj, fc1, fc2 (not the head)
    );
    // 4×4-pixel patches at any input size: 32×32 gives 8·8 = 64 tokens.
    let g = build("vit_fashion", &[3, 32, 32], 10).unwrap();
    assert_eq!(g.shape("tokens").unwrap(), &[64, 48]);
    assert_eq!(g.shape("pos_embed").unwrap(), &[64, 48]);
}
