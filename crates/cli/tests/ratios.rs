//! `fair-pruner ratios` on score files written here (no scoring, so no libtorch work):
//! MAC-aware counts (`--mac-weight`) and the summed group rule (`--rule summed`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use fair_analysis::{CriterionRecord, LayerScores, Provenance, SCORE_FILE_FORMAT, ScoreFile};

mod common;
use common::{run, stderr};

/// Writes a score file for a zoo model with seeded pseudo-random U, R and group L1 (the
/// default preset's ranking).
fn score_file(dir: &Path, model: &str, input: &[usize], seed: u64) -> String {
    write_scores(
        &dir.join(format!("{model}.json")),
        model,
        input,
        seed,
        &["u", "r", "group-l1"],
        None,
    )
}

/// Writes a score file at `path` for a zoo model with seeded pseudo-random scores of
/// `criteria`, recording `preset`.
fn write_scores(
    path: &Path,
    model: &str,
    input: &[usize],
    seed: u64,
    criteria: &[&str],
    preset: Option<&str>,
) -> String {
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
            for c in criteria {
                scores.insert(c.to_string(), (0..units).map(|_| next()).collect());
            }
            LayerScores {
                layer: l.to_string(),
                units,
                scores,
                bounds: Default::default(),
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
            criteria: criteria
                .iter()
                .map(|c| (c.to_string(), record.clone()))
                .collect(),
            preset: preset.map(str::to_owned),
        },
        graph: graph.to_spec(),
        layers,
    };
    file.save(path).unwrap();
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

#[test]
fn an_unknown_criterion_is_named_and_the_known_ones_listed() {
    let dir = tempfile::tempdir().unwrap();
    let s = score_file(dir.path(), "vgg11_bn_cifar", &[3, 32, 32], 2);
    for flag in ["--remove-by", "--protect-by", "--rank-by"] {
        let o = run(&["ratios", "--scores", &s, "--alpha", "0.3", flag, "zzz"]);
        assert!(!o.status.success(), "{flag}");
        let e = stderr(&o);
        assert!(
            e.contains("unknown criterion 'zzz'") && e.contains(flag),
            "{flag}: {e}"
        );
        // The known criteria are listed, and nobody is told to score `zzz`.
        for known in ["u", "r", "l1", "group-l1"] {
            assert!(
                e.contains(&format!(" {known},")) || e.contains(&format!(" {known})")),
                "{known}: {e}"
            );
        }
        assert!(!e.contains("--criteria"), "{flag}: {e}");
    }
    // Uniform counts check only their ranking criterion.
    let o = run(&[
        "ratios",
        "--scores",
        &s,
        "--target-macs",
        "0.3",
        "--uniform",
        "--rank-by",
        "zzz",
    ]);
    assert!(
        stderr(&o).contains("unknown criterion 'zzz'"),
        "{}",
        stderr(&o)
    );
    // A known criterion the file lacks keeps the hint to score it.
    let o = run(&[
        "ratios",
        "--scores",
        &s,
        "--alpha",
        "0.3",
        "--rank-by",
        "l1",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("no 'l1' scores") && e.contains("--criteria") && !e.contains("unknown"),
        "{e}"
    );
}

#[test]
fn uniform_counts_need_only_their_ranking_criterion() {
    let dir = tempfile::tempdir().unwrap();
    let s = write_scores(
        &dir.path().join("l1-only.json"),
        "vgg11_bn_cifar",
        &[3, 32, 32],
        4,
        &["l1"],
        None,
    );
    let base = [
        "ratios",
        "--scores",
        &s,
        "--target-macs",
        "0.3",
        "--uniform",
    ];
    let v = json(&run(&[&base[..], &["--rank-by", "l1", "--json"]].concat()));
    let removed =
        1.0 - v["macs"]["after"].as_f64().unwrap() / v["macs"]["before"].as_f64().unwrap();
    assert!(removed >= 0.3, "{v}");
    assert!(v.get("ratio").is_some(), "{v}");
    // The table too.
    let o = run(&[&base[..], &["--rank-by", "l1"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("uniform ratio"));
    // ToD counts still need U and R, and say so.
    let o = run(&[
        "ratios",
        "--scores",
        &s,
        "--target-macs",
        "0.3",
        "--rank-by",
        "l1",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("no 'u' scores") && e.contains("--criteria"),
        "{e}"
    );
}

#[test]
fn a_file_scored_with_one_criterion_counts_by_it_and_says_so() {
    // `score --criteria l1` then `ratios --target-macs 0.3 --write-plan` with nothing else:
    // ToD removes, protects and ranks by l1, with a note; the plan applies.
    let dir = tempfile::tempdir().unwrap();
    let s = write_scores(
        &dir.path().join("l1-only.json"),
        "vgg11_bn_cifar",
        &[3, 32, 32],
        4,
        &["l1"],
        None,
    );
    let plan = dir.path().join("plan.json");
    let p = plan.to_str().unwrap();
    let o = run(&[
        "ratios",
        "--scores",
        &s,
        "--target-macs",
        "0.3",
        "--write-plan",
        p,
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("holds only `l1`") && e.contains("--criteria u,r,group-l1"),
        "{e}"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let removed =
        1.0 - v["macs"]["after"].as_f64().unwrap() / v["macs"]["before"].as_f64().unwrap();
    assert!((0.3..0.35).contains(&removed), "{removed}: {v}");
    // The JSON says what the counts read, and why.
    assert_eq!(
        v["signals"],
        serde_json::json!({"remove_by": "l1", "protect_by": "l1", "rank_by": "l1"})
    );
    assert!(
        v["notes"][0].as_str().unwrap().contains("holds only `l1`"),
        "{v}"
    );
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    let units: usize = written["remove"]
        .as_object()
        .unwrap()
        .values()
        .map(|u| u.as_array().unwrap().len())
        .sum();
    assert!(units > 0, "{written}");
    // Signals given: no fallback, the missing criterion is named as before.
    let o = run(&[
        "ratios",
        "--scores",
        &s,
        "--target-macs",
        "0.3",
        "--protect-by",
        "r",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(!e.contains("holds only"), "{e}");
    assert!(
        e.contains("no 'u' scores") || e.contains("no 'r' scores"),
        "{e}"
    );
}

#[test]
fn ratios_follows_the_recorded_preset_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let model = ("vgg11_bn_cifar", &[3, 32, 32][..]);
    let criteria = ["u", "r", "group-l1"];
    let write = |name: &str, preset| {
        write_scores(
            &dir.path().join(name),
            model.0,
            model.1,
            6,
            &criteria,
            preset,
        )
    };
    let (paper, plain) = (
        write("paper.json", Some("paper")),
        write("plain.json", None),
    );
    let counts = |args: &[&str]| {
        let o = run(&[&["ratios", "--target-macs", "0.4", "--json"], args].concat());
        // The preset line goes to stderr; stdout stays JSON.
        (json(&o), stderr(&o))
    };
    let (recorded, e) = counts(&["--scores", &paper]);
    assert!(
        e.contains(&format!(
            "preset: paper (recorded in {paper}; --preset overrides)"
        )),
        "{e}"
    );
    assert_eq!(recorded["preset"], "paper");
    let (explicit, e) = counts(&["--scores", &plain, "--preset", "paper"]);
    assert!(e.contains("preset: paper (--preset)"), "{e}");
    assert_eq!(recorded["layers"], explicit["layers"]);
    assert_eq!(recorded["rule"], "package");
    // The two presets count differently on these scores, so following the record matters.
    let (default, e) = counts(&["--scores", &plain]);
    assert!(
        e.contains("preset: fair-pruner (default; the score file records none)"),
        "{e}"
    );
    assert_eq!(default["preset"], "fair-pruner");
    assert_ne!(default["layers"], recorded["layers"]);
    // --preset overrides the record.
    let (overridden, e) = counts(&["--scores", &paper, "--preset", "fair-pruner"]);
    assert!(e.contains("preset: fair-pruner (--preset)"), "{e}");
    assert_eq!(overridden["layers"], default["layers"]);
    // A preset this version does not know is refused, listing the known ones.
    let unknown = write("custom.json", Some("custom"));
    let o = run(&["ratios", "--scores", &unknown, "--alpha", "0.3"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("'custom'")
            && e.contains("paper")
            && e.contains("fair-pruner")
            && e.contains("--preset"),
        "{e}"
    );
    let o = run(&[
        "ratios", "--scores", &unknown, "--alpha", "0.3", "--preset", "paper",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn the_rank_by_u_hint_is_true() {
    // Scores without the fair-pruner preset's ranking (group L1).
    let dir = tempfile::tempdir().unwrap();
    let s = write_scores(
        &dir.path().join("ur.json"),
        "vgg11_bn_cifar",
        &[3, 32, 32],
        8,
        &["u", "r"],
        None,
    );
    let o = run(&["ratios", "--scores", &s, "--target-macs", "0.4"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--rank-by u") && e.contains("--preset paper"),
        "{e}"
    );
    // What it says: --rank-by u ranks by U with the fair-pruner preset's counts (not the
    // paper's), and --preset paper gives the paper's counts and U ranking.
    let get = |args: &[&str]| {
        json(&run(&[
            &["ratios", "--scores", &s, "--target-macs", "0.4", "--json"],
            args,
        ]
        .concat()))
    };
    let by_u = get(&["--rank-by", "u"]);
    assert_eq!(by_u["preset"], "fair-pruner");
    assert_eq!(by_u["rule"], "summed");
    let paper = get(&["--preset", "paper"]);
    assert_eq!(paper["rule"], "package");
    assert_eq!(
        paper["layers"],
        get(&["--preset", "paper", "--rank-by", "u"])["layers"]
    );
    // A file recording the paper preset needs no hint at all.
    let recorded = write_scores(
        &dir.path().join("ur-paper.json"),
        "vgg11_bn_cifar",
        &[3, 32, 32],
        8,
        &["u", "r"],
        Some("paper"),
    );
    let v = json(&run(&[
        "ratios",
        "--scores",
        &recorded,
        "--target-macs",
        "0.4",
        "--json",
    ]));
    assert_eq!(v["layers"], paper["layers"]);
}

/// `ratios --json` reads back as a `fair_analysis::RatiosReport` (unknown keys are refused),
/// and writing that back gives the printed JSON: every field is typed, none is lost.
#[test]
fn ratios_json_reads_back_as_the_typed_report() {
    let dir = tempfile::tempdir().unwrap();
    let s = score_file(dir.path(), "resnet20", &[3, 16, 16], 5);
    let base = ["ratios", "--scores", s.as_str()];
    for extra in [
        &["--alpha", "0.2", "--preset", "paper"][..],
        &["--target-macs", "0.4"],
        &[
            "--target-params",
            "0.3",
            "--mac-weight",
            "0.5",
            "--mac-cost",
            "shared",
        ],
        &["--target-macs", "0.5", "--uniform"],
    ] {
        let printed = json(&run(&[&base[..], extra, &["--json"]].concat()));
        let report: fair_analysis::RatiosReport = serde_json::from_value(printed.clone())
            .unwrap_or_else(|e| panic!("{extra:?}: {e}\n{printed}"));
        assert_eq!(report.schema_version, fair_analysis::RATIOS_SCHEMA_VERSION);
        // The stem, 18 block convolutions and 2 projection shortcuts.
        assert_eq!(report.layers.len(), 21, "{extra:?}");
        assert_eq!(
            (report.alpha.is_some(), report.ratio.is_some()),
            (!extra.contains(&"--uniform"), extra.contains(&"--uniform")),
            "{extra:?}"
        );
        assert_eq!(serde_json::to_value(&report).unwrap(), printed, "{extra:?}");
    }
}

/// A latency setting without a latency target: `ratios` times no pruned models, so the
/// error advises `--target-latency` only (`--latency-on` without it is refused too).
#[test]
fn a_latency_setting_without_a_latency_target_advises_target_latency_only() {
    for (flag, value) in [
        ("--latency-batch", "4"),
        ("--latency-threads", "2"),
        ("--latency-python", "python3"),
    ] {
        let o = run(&[
            "ratios",
            "--scores",
            "absent.json",
            "--target-macs",
            "0.5",
            flag,
            value,
        ]);
        assert!(!o.status.success());
        let e = stderr(&o);
        assert!(
            e.contains(&format!(
                "{flag}: applies to a latency target only: give --target-latency too"
            )) && !e.contains("--latency-on"),
            "{e}"
        );
    }
}
