//! Property tests for plan and score files: random or mutated JSON is an error, never a
//! panic, and every structural defect of a score file is caught by validation.

use std::path::Path;

use fair_analysis::{Plan, ScoreFile};
use proptest::prelude::*;

mod common;

/// A valid score file for ResNet-20 with criteria u and r.
fn valid() -> ScoreFile {
    common::score_file(&["u", "r"])
}

fn parse(text: &str) -> Result<ScoreFile, String> {
    ScoreFile::from_json_str(text, Path::new("s.json")).map_err(|e| e.to_string())
}

#[test]
fn every_structural_defect_is_an_error_naming_it() {
    let good = valid();
    assert!(parse(&serde_json::to_string(&good).unwrap()).is_ok());
    let mut cases: Vec<(&str, ScoreFile)> = Vec::new();
    let mut f = good.clone();
    f.layers.push(f.layers[0].clone());
    cases.push(("more than once", f));
    let mut f = good.clone();
    f.layers.remove(3);
    cases.push(("has no scores", f));
    let mut f = good.clone();
    let mut out = f.layers[0].clone();
    out.layer = "fc".into();
    out.units = 10;
    f.layers.push(out);
    cases.push(("output layer", f));
    let mut f = good.clone();
    f.layers.swap(0, 1);
    cases.push(("graph order", f));
    let mut f = good.clone();
    f.layers[2].scores.get_mut("u").unwrap().pop();
    cases.push(("units", f));
    let mut f = good.clone();
    f.layers[2].scores.remove("r");
    cases.push(("no 'r' scores", f));
    let mut f = good.clone();
    f.provenance.graph_digest = "x".into();
    cases.push(("digest", f));
    let mut f = good.clone();
    f.layers[1].scores.get_mut("u").unwrap()[0] = f64::INFINITY;
    cases.push(("is inf", f));
    for (needle, f) in cases {
        // Validation catches it before (or instead of) serialisation.
        let e = f.validate().unwrap_err();
        assert!(e.contains(needle), "{needle}: {e}");
        if let Ok(text) = serde_json::to_string(&f) {
            let e = parse(&text).unwrap_err();
            assert!(e.contains("s.json"), "{e}");
        }
    }
    // An older file, and something that is not a score file at all.
    let e = parse("{\"provenance\": {}, \"layers\": []}").unwrap_err();
    assert!(e.contains("format"), "{e}");
    let e = parse("{\"format\": 1}").unwrap_err();
    assert!(e.contains("format 1 is not supported"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_text_is_never_a_panic(text in ".{0,300}") {
        let _ = parse(&text);
        let _ = Plan::from_json_str(&text, "p.json");
    }

    #[test]
    fn random_plans_parse_or_fail_cleanly(
        layers in prop::collection::btree_map("[a-z0-9.]{1,12}", prop::collection::vec(prop_oneof![0u64..8, any::<u64>()], 0..5), 0..4),
        extra in prop::option::of("[a-z_]{1,8}"),
    ) {
        let mut v = serde_json::json!({"remove": layers});
        if let Some(k) = &extra {
            v[k.as_str()] = serde_json::json!(1);
        }
        let r = Plan::from_json_str(&v.to_string(), "p.json");
        // A unit listed twice for one layer is refused.
        let repeated = layers.values().any(|units| {
            units.iter().collect::<std::collections::BTreeSet<_>>().len() < units.len()
        });
        let overflow = layers.values().flatten().any(|&u| u > usize::MAX as u64);
        match extra.as_deref() {
            None if repeated => prop_assert!(r.is_err(), "a repeated unit accepted"),
            None => prop_assert!(r.is_ok() || overflow),
            // The extra key replaced "remove" itself.
            Some("remove") => {}
            Some(_) => prop_assert!(r.is_err(), "unknown key accepted"),
        }
        // Resolving any parsed plan against a real graph is an error or a resolution.
        if let Ok(p) = r {
            let g = fair_zoo::build("resnet20", &[3, 16, 16], 10).unwrap();
            let _ = fair_analysis::Resolution::new(&g, &p, &Default::default());
        }
    }

    #[test]
    fn mutated_score_files_never_panic(at in 0usize..100_000, byte in any::<u8>()) {
        let mut bytes = serde_json::to_vec(&valid()).unwrap();
        let i = at % bytes.len();
        bytes[i] = byte;
        if let Ok(text) = String::from_utf8(bytes) {
            let _ = parse(&text);
        }
    }
}

#[test]
fn oversized_and_special_plan_and_score_files_are_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    // A sparse file just over the 1 GiB limit: costs no disk and is never read.
    let huge = dir.path().join("huge.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len((1 << 30) + 1)
        .unwrap();
    let e = fair_analysis::Plan::load(&huge).unwrap_err().to_string();
    assert!(e.contains("huge.json") && e.contains("limit"), "{e}");
    let e = ScoreFile::load(&huge).unwrap_err().to_string();
    assert!(e.contains("huge.json") && e.contains("limit"), "{e}");
    for load in [
        |p: &Path| fair_analysis::Plan::load(p).map(|_| ()),
        |p: &Path| ScoreFile::load(p).map(|_| ()),
    ] {
        let e = load(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(
            e.contains("/dev/zero") && e.contains("character device"),
            "{e}"
        );
    }
}

#[test]
fn notes_and_timings_read_every_criterion() {
    let mut f = valid();
    let u = f.provenance.criteria.get_mut("u").unwrap();
    u.seconds = 1.254;
    u.notes = vec!["class 3 has 2 samples".into()];
    f.provenance.criteria.get_mut("r").unwrap().notes = vec!["r note".into()];
    assert_eq!(f.timing(), "r 0.00 s, u 1.25 s");
    assert_eq!(f.notes(), ["r note", "class 3 has 2 samples"]);
}
