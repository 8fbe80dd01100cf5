//! `fair-pruner ratios` on score files written here (no scoring, so no libtorch work):
//! MAC-aware counts (`--mac-weight`) and the summed group rule (`--rule summed`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use fair_analysis::{CriterionRecord, LayerScores, Provenance, SCORE_FILE_FORMAT, ScoreFile};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fair-pruner"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes a score file for a zoo model with seeded pseudo-random U, R and group L1 (the
/// default preset's ranking).
fn score_file(dir: &Path, model: &str, input: &[usize], seed: u64) -> String {
    let graph = fair_zoo::build(model, input, 10).unwrap();
    let mut state = seed;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let layers = graph
        .prunable_layers()
        .iter()
        .map(|l| {
            let units = graph.units(l).unwrap();
            let mut scores = BTreeMap::new();
            for c in ["u", "r", "group-l1"] {
                scores.insert(c.to_owned(), (0..units).map(|_| next()).collect());
            }
            LayerScores {
                layer: l.to_string(),
                units,
                scores,
            }
        })
        .collect();
    let record = CriterionRecord {
        settings: serde_json::json!({}),
        seconds: 0.0,
        notes: Vec::new(),
    };
    let file = ScoreFile {
        format: SCORE_FILE_FORMAT,
        provenance: Provenance {
            fair_pruner_version: "test".into(),
            model: model.into(),
            model_digest: "0".repeat(64),
            graph_digest: fair_analysis::graph_digest(&graph),
            data: String::new(),
            data_digest: String::new(),
            samples: 0,
            criteria: [
                ("u".to_owned(), record.clone()),
                ("r".to_owned(), record.clone()),
                ("group-l1".to_owned(), record),
            ]
            .into(),
        },
        graph: graph.to_spec(),
        layers,
    };
    let path = dir.join(format!("{model}.json"));
    file.save(&path).unwrap();
    path.to_str().unwrap().to_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn mac_weight_shows_weights_and_moves_units_from_the_classifier() {
    let dir = tempfile::tempdir().unwrap();
    let s = score_file(dir.path(), "vgg11_bn_cifar", &[3, 32, 32], 3);
    let base = ["ratios", "--scores", &s, "--target-macs", "0.5", "--json"];
    let plain = json(&run(&[&base[..], &["--mac-weight", "0"]].concat()));
    assert!(plain.get("mac_weight").is_none());
    assert!(plain["layers"][0].get("weight").is_none());

    let aware = json(&run(&[
        &base[..],
        &["--mac-weight", "1", "--mac-cost", "unit"],
    ]
    .concat()));
    assert_eq!(aware["mac_weight"], 1.0);
    assert_eq!(aware["mac_cost"], "unit");
    // The default preset counts with γ = 1 and costs per fraction of a layer; the paper
    // preset with γ = 0.
    let fraction = json(&run(&[
        &base[..],
        &["--mac-weight", "1", "--mac-cost", "fraction"],
    ]
    .concat()));
    let default = json(&run(&base));
    assert_eq!(default["layers"], fraction["layers"]);
    assert_eq!(default["mac_cost"], "fraction");
    let paper = json(&run(&[&base[..], &["--preset", "paper"]].concat()));
    assert_eq!(paper["layers"], plain["layers"]);
    let layers = aware["layers"].as_array().unwrap();
    let costs: Vec<f64> = layers
        .iter()
        .map(|l| l["unit_macs"].as_f64().unwrap())
        .collect();
    // Per unit: w = c / the largest c. Per fraction (no residual groups here): w = c·n / the
    // largest c·n, n the layer's units.
    let max = costs.iter().fold(0.0f64, |m, c| m.max(*c));
    for (l, c) in layers.iter().zip(&costs) {
        let w = l["weight"].as_f64().unwrap();
        assert!((w - c / max).abs() < 1e-9 * w, "{l}");
    }
    let per_fraction: Vec<f64> = layers
        .iter()
        .zip(&costs)
        .map(|(l, c)| c * l["units"].as_f64().unwrap())
        .collect();
    let max = per_fraction.iter().fold(0.0f64, |m, c| m.max(*c));
    for (l, c) in fraction["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&per_fraction)
    {
        let w = l["weight"].as_f64().unwrap();
        assert!((w - c / max).abs() < 1e-9 * w, "{l}");
    }
    let macs_removed = |v: &serde_json::Value| {
        1.0 - v["macs"]["after"].as_f64().unwrap() / v["macs"]["before"].as_f64().unwrap()
    };
    assert!(macs_removed(&aware) >= 0.5);
    // The classifier's hidden linear layers have the cheapest units: they keep at least as
    // many with γ = 1 as without, and fewer parameters go for the same MACs.
    let keep = |v: &serde_json::Value, name: &str| {
        v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["layer"] == name)
            .unwrap()["keep"]
            .as_u64()
            .unwrap()
    };
    let cheapest = layers
        .iter()
        .min_by(|a, b| {
            a["weight"]
                .as_f64()
                .partial_cmp(&b["weight"].as_f64())
                .unwrap()
        })
        .unwrap()["layer"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        keep(&aware, &cheapest) > keep(&plain, &cheapest),
        "{cheapest}: the weights must reach the counts"
    );

    // The table gets a weight column and names γ.
    let o = run(&[
        "ratios",
        "--scores",
        &s,
        "--target-macs",
        "0.5",
        "--mac-weight",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("MAC weight γ = 1"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("weight") && l.contains("keep")),
        "{text}"
    );

    // γ = 0 is the paper: the same result as without the flag.
    let zero = json(&run(&[&base[..], &["--mac-weight", "0"]].concat()));
    assert_eq!(zero["layers"], plain["layers"]);
    assert_eq!(zero["alpha"], plain["alpha"]);
}

#[test]
fn bad_mac_weights_are_refused_with_the_flag_named() {
    let dir = tempfile::tempdir().unwrap();
    let s = score_file(dir.path(), "vgg11_bn_cifar", &[3, 32, 32], 1);
    for bad in ["-1", "nan", "inf"] {
        let o = run(&[
            "ratios",
            "--scores",
            &s,
            "--alpha",
            "0.2",
            "--mac-weight",
            bad,
        ]);
        assert!(!o.status.success(), "{bad}");
        assert!(
            stderr(&o).contains("--mac-weight") && stderr(&o).contains("≥ 0"),
            "{bad}: {}",
            stderr(&o)
        );
    }
    let o = run(&[
        "ratios",
        "--scores",
        &s,
        "--target-macs",
        "0.3",
        "--uniform",
        "--mac-weight",
        "1",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--mac-weight"), "{}", stderr(&o));
    // An unknown cost measure is refused with the flag and the known ones named.
    let o = run(&[
        "ratios",
        "--scores",
        &s,
        "--target-macs",
        "0.3",
        "--mac-cost",
        "per-channel",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--mac-cost") && e.contains("unit") && e.contains("fraction"),
        "{e}"
    );
}

#[test]
fn the_summed_rule_gives_every_group_member_the_same_units() {
    let dir = tempfile::tempdir().unwrap();
    let s = score_file(dir.path(), "resnet20", &[3, 16, 16], 5);
    let plan = dir.path().join("plan.json");
    let v = json(&run(&[
        "ratios",
        "--scores",
        &s,
        "--alpha",
        "0.3",
        "--rule",
        "summed",
        "--json",
        "--write-plan",
        plan.to_str().unwrap(),
    ]));
    assert_eq!(v["rule"], "summed");
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    let remove = &plan["remove"];
    let requested = |name: &str| {
        v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["layer"] == name)
            .unwrap()["requested"]
            .as_u64()
            .unwrap()
    };
    // The stem and every stage-1 block output form one group: one count, one set.
    let stem = &remove["conv1"];
    assert!(stem.as_array().is_some_and(|a| !a.is_empty()), "{plan}");
    for i in 0..3 {
        let l = format!("layer1.{i}.conv2");
        assert_eq!(&remove[&l], stem, "{l}");
        assert_eq!(requested(&l), requested("conv1"), "{l}");
    }
    let o = run(&[
        "ratios", "--scores", &s, "--alpha", "0.3", "--rule", "summed",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("(summed rule"));
}
