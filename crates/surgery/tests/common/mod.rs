//! Helpers shared by this crate's integration tests.

use std::collections::BTreeSet;

use fair_analysis::{ChannelGroups, Plan, analyze};
use fair_ir::Graph;
use fair_runtime::Model;
use rand::{Rng, SeedableRng, seq::SliceRandom};

/// The models the surgery must handle, at small input sizes (VGG-16-BN with the CIFAR head);
/// `mobile_se` is [`MOBILE_SE`], `shuffle_ln` is [`SHUFFLE_LN`], the others come from the zoo
/// (see [`build`]).
#[allow(dead_code)] // each test file uses a different subset of these helpers
pub const MODELS: [(&str, [usize; 3]); 8] = [
    ("mobile_se", [3, 16, 16]),
    ("shuffle_ln", [3, 16, 16]),
    ("vgg16_bn_cifar", [3, 32, 32]),
    ("alexnet", [3, 64, 64]),
    ("resnet56", [3, 32, 32]),
    ("resnet50", [3, 32, 32]),
    ("densenet40", [3, 32, 32]),
    ("densenet121", [3, 32, 32]),
];

/// A MobileNetV3/EfficientNet-like test network with every activation, depthwise
/// convolutions and squeeze-and-excitation gates (broadcast `mul`), 10 classes.
pub const MOBILE_SE: &str = include_str!("mobile_se.toml");

/// A ShuffleNetV2 unit (channel split into two `slice`s, a depthwise branch, `concat`,
/// `channel_shuffle`) followed by a ConvNeXt block (depthwise 7x7 conv, `layer_norm2d`, 1x1
/// MLP with GELU, residual add), 10 classes.
pub const SHUFFLE_LN: &str = include_str!("shuffle_ln.toml");

/// A ResNeXt-like bottleneck (1×1 conv, 3×3 conv with 4 groups, 1×1 conv, residual add) and
/// a 3×3 projection with 2 groups that reads the residual stream, 10 classes, input
/// `[3, 8, 8]`. Not in [`MODELS`]: its grouped convs hold everything fixed by default.
#[allow(dead_code)]
pub const RESNEXT_BLOCK: &str = include_str!("resnext_block.toml");

/// The graph of a model in [`MODELS`] or `resnext_block` (10 classes).
pub fn build(name: &str, shape: [usize; 3]) -> Graph {
    let text = match name {
        "mobile_se" => Some(MOBILE_SE),
        "shuffle_ln" => Some(SHUFFLE_LN),
        "resnext_block" => Some(RESNEXT_BLOCK),
        _ => None,
    };
    if let Some(text) = text {
        let g = Graph::from_toml_str(text).unwrap();
        assert_eq!(g.shape("input").unwrap(), shape.as_slice());
        g
    } else {
        fair_zoo::build(name, &shape, 10).unwrap()
    }
}

/// Removals in between 1 and `max_groups` random prunable groups (seeded): for each, the
/// group index and a random non-empty proper subset of its units; and the plan that names
/// every member layer of those groups with the same units.
pub fn random_plan(
    m: &Model,
    seed: u64,
    max_groups: usize,
) -> (Plan, Vec<(usize, BTreeSet<usize>)>) {
    random_plan_in(&analyze(m.graph(), &[]).unwrap(), seed, max_groups)
}

/// As [`random_plan`], over groups already analysed (e.g. with grouped convs pruned within
/// their groups).
pub fn random_plan_in(
    groups: &ChannelGroups,
    seed: u64,
    max_groups: usize,
) -> (Plan, Vec<(usize, BTreeSet<usize>)>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut candidates: Vec<usize> = (0..groups.groups().len())
        .filter(|&g| groups.groups()[g].fixed.is_none() && !groups.groups()[g].layers.is_empty())
        .collect();
    candidates.shuffle(&mut rng);
    let take = rng.gen_range(1..=candidates.len().min(max_groups));
    let mut plan = Plan::new();
    let mut chosen = Vec::new();
    for &g in &candidates[..take] {
        let units = groups.groups()[g].units;
        let k = rng.gen_range(1..units.max(2)).min(units - 1);
        let mut all: Vec<usize> = (0..units).collect();
        all.shuffle(&mut rng);
        let removed: BTreeSet<usize> = all[..k].iter().copied().collect();
        for layer in &groups.groups()[g].layers {
            plan = plan.remove(layer, removed.iter().copied());
        }
        chosen.push((g, removed));
    }
    (plan, chosen)
}
