//! Run configurations: every shipped config parses and fits the zoo; `[prune]` sections.

use fair_pipeline::{Goal, GroupRule, RunConfig};

#[test]
fn every_shipped_config_parses_and_fits_the_zoo() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let c = RunConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let g = c
            .graph()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let channels = g.shape_at(0)[0];
        c.transform
            .check(channels)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            c.data.source.is_some(),
            "{}: no data source",
            path.display()
        );
        assert!(
            c.train.is_some() && c.output.weights.is_some(),
            "{}",
            path.display()
        );
        if let Some(goals) = c
            .prune
            .goals()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        {
            for g in goals {
                let ok = match g {
                    Goal::Alpha(a) => (0.0..=1.0).contains(&a),
                    Goal::Macs(f) | Goal::Params(f) => (0.0..1.0).contains(&f),
                };
                assert!(ok, "{}: goal {g:?} out of range", path.display());
            }
        }
        let expected_classes = match c.data.source.as_deref() {
            Some("cifar10" | "fashion-mnist" | "mnist") => Some(10),
            Some("cifar100") => Some(100),
            _ => None,
        };
        if let Some(k) = expected_classes {
            assert_eq!(
                g.shape_at(g.nodes().len() - 1),
                &[k],
                "{}: the model's outputs do not match the data's classes",
                path.display()
            );
        }
        names.push((
            path.file_name().unwrap().to_string_lossy().into_owned(),
            c,
            g,
        ));
    }
    assert!(names.len() >= 6, "configs/ holds the shipped configs");
    // The configs for users with their own data: the zoo model the file name promises,
    // at its usual input, with its parameter count from torchvision or the original papers.
    let expect = [
        // VGG-16-BN with the 512→512 head; ResNet-56 and DenseNet-40 are checked
        // against their papers in fair-zoo's tests.
        (
            "cifar10-vgg16-bn.toml",
            "vgg16_bn_cifar",
            "cifar10",
            Some(14_990_922),
        ),
        ("cifar10-resnet56.toml", "resnet56", "cifar10", None),
        ("cifar10-densenet40.toml", "densenet40", "cifar10", None),
        (
            "imagenet-resnet50.toml",
            "resnet50",
            "folder",
            Some(25_557_032),
        ),
    ];
    for (file, zoo, source, params) in expect {
        let (_, c, g) = names
            .iter()
            .find(|(n, _, _)| n == file)
            .unwrap_or_else(|| panic!("configs/{file} is missing"));
        assert_eq!(c.model.zoo.as_deref(), Some(zoo), "{file}");
        assert_eq!(c.data.source.as_deref(), Some(source), "{file}");
        assert_eq!(
            g.shape_at(0),
            &fair_zoo::info(zoo).unwrap().default_input[..],
            "{file}"
        );
        let path = c.data.path.as_ref().expect("a data path placeholder");
        assert!(
            path.starts_with("/path/to"),
            "{file}: the data path is a documented placeholder"
        );
        assert!(
            c.prune.goals().unwrap().is_some(),
            "{file}: holds a pruning goal"
        );
        if let Some(p) = params {
            assert_eq!(g.param_count() as u64, p, "{file}");
        }
    }
}

#[test]
fn prune_section_takes_one_goal_and_known_rules() {
    let parse = |text: &str| toml::from_str::<RunConfig>(text).map_err(|e| e.to_string());
    let c = parse("[prune]\nalpha_sweep = [0.1, 0.3]\nrule = \"intersection\"\n").unwrap();
    assert_eq!(
        c.prune.goals().unwrap(),
        Some(vec![Goal::Alpha(0.1), Goal::Alpha(0.3)])
    );
    assert_eq!(c.prune.rule, Some(GroupRule::Intersection));
    let two = parse("[prune]\nalpha = 0.1\ntarget_macs = 0.5\n").unwrap();
    let e = two.prune.goals().unwrap_err().to_string();
    assert!(e.contains("alpha and target_macs"), "{e}");
    let e = parse("[prune]\nrule = \"loose\"\n").unwrap_err();
    assert!(e.contains("loose") && e.contains("package"), "{e}");
    assert_eq!(parse("").unwrap().prune.goals().unwrap(), None);
}

#[test]
fn unknown_config_keys_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "[train]\nepochs = 1\nbatch_size = 2\nlr = 0.1\nmomentum = 0.9\nweight_decay = 0.0\nschedule = { kind = \"cosine\" }\nseed = 0\nlearning_rate = 3\n").unwrap();
    let e = RunConfig::load(&p).unwrap_err().to_string();
    assert!(e.contains("learning_rate"), "{e}");
}
