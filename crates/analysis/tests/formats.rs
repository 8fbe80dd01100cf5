//! Strict formats: plans and score files refuse repeated keys, repeated units and malformed
//! digests, naming the file and what is wrong; goals equal after parsing share one label and
//! labels are short, distinct and portable file names; uniform counts need only the ranking.

use std::path::Path;

use fair_analysis::{Goal, Method, Plan, ScoreFile, SelectOptions, Selector};
use proptest::prelude::*;

mod common;

fn plan_error(text: &str) -> String {
    Plan::from_json_str(text, "plans/p.json")
        .unwrap_err()
        .to_string()
}

fn score_error(text: &str) -> String {
    ScoreFile::from_json_str(text, Path::new("runs/scores.json"))
        .unwrap_err()
        .to_string()
}

fn assert_all(e: &str, needles: &[&str]) {
    for n in needles {
        assert!(e.contains(n), "'{n}' is missing from: {e}");
    }
}

#[test]
fn a_plan_giving_a_layer_twice_is_refused() {
    let e = plan_error(r#"{"remove": {"conv1": [0, 1], "layer1.0.conv1": [2], "conv1": [3]}}"#);
    assert_all(
        &e,
        &["plans/p.json", "layer \"conv1\"", "twice", "\"remove\""],
    );
    // Any other key given twice as well, at any depth.
    let e = plan_error(r#"{"remove": {}, "remove": {"conv1": [0]}}"#);
    assert_all(&e, &["plans/p.json", "\"remove\"", "twice"]);
    let d = "0".repeat(64);
    let e = plan_error(&format!(
        r#"{{"graph_digest": "{d}", "remove": {{}}, "graph_digest": "{d}"}}"#
    ));
    assert_all(&e, &["\"graph_digest\"", "twice"]);
}

#[test]
fn a_plan_listing_a_unit_twice_is_refused() {
    let e = plan_error(r#"{"remove": {"conv1": [0, 4, 2, 4]}}"#);
    assert_all(&e, &["plans/p.json", "layer \"conv1\"", "unit 4", "twice"]);
    // Distinct units, in any order, are fine.
    let p = Plan::from_json_str(r#"{"remove": {"conv1": [4, 0, 2]}}"#, "p.json").unwrap();
    assert_eq!(p.remove["conv1"], [4, 0, 2]);
}

#[test]
fn plan_digests_must_be_64_hex_digits() {
    let good = "0123456789abcdef".repeat(4);
    for field in ["graph_digest", "model_digest"] {
        let ok = format!(r#"{{"remove": {{}}, "{field}": "{good}"}}"#);
        assert!(Plan::from_json_str(&ok, "p.json").is_ok(), "{field}");
        for bad in [
            "xyz".to_owned(),
            String::new(),
            good[1..].to_owned(),
            format!("{good}0"),
            good.to_uppercase(),
            format!("{}z", &good[1..]),
        ] {
            let e = plan_error(&format!(r#"{{"remove": {{}}, "{field}": "{bad}"}}"#));
            assert_all(&e, &["plans/p.json", field, "64", "hexadecimal"]);
            assert!(e.contains(&format!("\"{bad}\"")), "{e}");
        }
    }
    // Unknown keys stay errors.
    let e = plan_error(r#"{"remove": {}, "model_digets": "x"}"#);
    assert_all(&e, &["plans/p.json", "model_digets"]);
}

#[test]
fn plans_written_by_a_selection_read_back() {
    let file = common::score_file(&["u", "r"]);
    let s = Selector::from_scores(
        &file,
        Path::new("s.json"),
        "u",
        "r",
        "u",
        SelectOptions::default(),
    )
    .unwrap();
    let plan = s.select(Goal::Macs(0.3), Method::Tod).unwrap().plan();
    assert!(!plan.is_empty());
    let back = Plan::from_json_str(&plan.to_json_string(), "p.json").unwrap();
    assert_eq!(back, plan);
}

/// `text` with `insert` placed right after the first occurrence of `after`.
fn inject(text: &str, after: &str, insert: &str) -> String {
    let at = text.find(after).unwrap_or_else(|| panic!("no {after}")) + after.len();
    format!("{}{insert}{}", &text[..at], &text[at..])
}

#[test]
fn a_score_file_with_a_key_twice_is_refused() {
    let text = serde_json::to_string(&common::score_file(&["u", "r"])).unwrap();
    assert!(ScoreFile::from_json_str(&text, Path::new("s.json")).is_ok());
    // A criterion twice in a layer's scores (the first of the two would be lost).
    let e = score_error(&inject(&text, "\"scores\":{", "\"u\":[],"));
    assert_all(
        &e,
        &[
            "runs/scores.json",
            "criterion \"u\"",
            "twice",
            "layers[0].scores",
        ],
    );
    // A key twice in the provenance.
    let e = score_error(&inject(&text, "\"provenance\":{", "\"samples\":0,"));
    assert_all(
        &e,
        &["runs/scores.json", "\"samples\"", "twice", "provenance"],
    );
    // A criterion recorded twice.
    let e = score_error(&inject(
        &text,
        "\"criteria\":{",
        "\"r\":{\"settings\":{},\"seconds\":0},",
    ));
    assert_all(&e, &["\"r\"", "twice", "provenance.criteria"]);
    // And a key twice at the top level, or inside the stored graph.
    let e = score_error(&inject(&text, "{", "\"format\":2,"));
    assert_all(&e, &["\"format\"", "twice", "top level"]);
    let e = score_error(&inject(&text, "\"graph\":{", "\"name\":\"x\","));
    assert_all(&e, &["\"name\"", "twice", "graph"]);
}

#[test]
fn the_same_layer_twice_in_a_score_file_stays_refused() {
    let mut f = common::score_file(&["u", "r"]);
    f.layers.insert(1, f.layers[0].clone());
    let e = score_error(&serde_json::to_string(&f).unwrap());
    assert_all(&e, &["runs/scores.json", "more than once"]);
}

#[test]
fn score_file_digests_must_be_64_hex_digits() {
    let good = common::score_file(&["u", "r"]);
    type Field = fn(&mut ScoreFile) -> &mut String;
    let fields: [(&str, Field); 3] = [
        ("model_digest", |f| &mut f.provenance.model_digest),
        ("graph_digest", |f| &mut f.provenance.graph_digest),
        ("data_digest", |f| &mut f.provenance.data_digest),
    ];
    for (name, field) in fields {
        for bad in ["xyz".to_owned(), "0".repeat(63), "F".repeat(64)] {
            let mut f = good.clone();
            *field(&mut f) = bad.clone();
            f.provenance.samples = 10;
            let e = f.validate().unwrap_err();
            assert_all(&e, &[name, "64", "hexadecimal", &bad]);
            let e = score_error(&serde_json::to_string(&f).unwrap());
            assert_all(&e, &["runs/scores.json", name]);
            // Saving refuses it too.
            let dir = tempfile::tempdir().unwrap();
            assert!(f.save(&dir.path().join("s.json")).is_err());
        }
    }
    // The data digest is empty exactly when no data was used, as fair-scoring writes it
    // (64 hex digits otherwise).
    let mut f = good.clone();
    assert!(f.provenance.data_digest.is_empty() && f.provenance.samples == 0);
    assert!(f.validate().is_ok());
    f.provenance.samples = 64;
    let e = f.validate().unwrap_err();
    assert_all(&e, &["data_digest", "empty", "samples"]);
    f.provenance.data_digest = "9f".repeat(32);
    assert!(f.validate().is_ok());
}

#[test]
fn the_recorded_preset_is_optional_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    // Files without a preset (all files before it existed) load and save without one.
    let f = common::score_file(&["u", "r"]);
    f.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("preset"), "{text}");
    assert_eq!(ScoreFile::load(&path).unwrap().provenance.preset, None);
    let mut f = f;
    f.provenance.preset = Some("paper".into());
    f.save(&path).unwrap();
    assert_eq!(
        ScoreFile::load(&path).unwrap().provenance.preset.as_deref(),
        Some("paper")
    );
    for bad in ["", "Paper", "../x", "a b"] {
        f.provenance.preset = Some(bad.into());
        let e = f.validate().unwrap_err();
        assert!(e.contains("\"preset\""), "{bad:?}: {e}");
    }
}

#[test]
fn uniform_counts_need_only_the_ranking_criterion() {
    let file = common::score_file(&["l1"]);
    let path = Path::new("only-l1.json");
    let options = SelectOptions::default();
    // ToD needs U and R: the error names the file and the missing criterion.
    let e = Selector::from_scores(&file, path, "u", "r", "l1", options.clone())
        .unwrap_err()
        .to_string();
    assert_all(&e, &["only-l1.json", "'u'", "score"]);
    let s =
        Selector::from_scores_for(&file, path, Method::Uniform, "u", "r", "l1", options).unwrap();
    let sel = s.select(Goal::Macs(0.3), Method::Uniform).unwrap();
    assert!(sel.reduction().1 >= 0.3, "{:?}", sel.reduction());
    // The units removed are the lowest by l1 (the file's only criterion, so unit i scores
    // i): each layer removes its first units.
    for (layer, units) in &sel.plan().remove {
        let mut sorted = units.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..units.len()).collect::<Vec<_>>(),
            "{layer} removes the lowest-l1 units"
        );
    }
    // It selects uniform counts only.
    let e = s
        .select(Goal::Macs(0.3), Method::Tod)
        .unwrap_err()
        .to_string();
    assert!(e.contains("remove-by") && e.contains("uniform"), "{e}");
    assert!(s.curves().is_empty());
    // The ranking criterion itself is still required.
    let e = Selector::from_scores_for(
        &file,
        path,
        Method::Uniform,
        "u",
        "r",
        "group-l1",
        SelectOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert_all(&e, &["only-l1.json", "'group-l1'"]);
}

#[test]
fn uniform_counts_do_not_depend_on_the_tod_scores() {
    // The same ranking with or without U and R in the file: the same uniform plan.
    let with = common::score_file(&["l1", "u", "r"]);
    let without = common::score_file(&["l1"]);
    let plan = |f: &ScoreFile, method| {
        Selector::from_scores_for(
            f,
            Path::new("s.json"),
            method,
            "u",
            "r",
            "l1",
            SelectOptions::default(),
        )
        .unwrap()
        .select(Goal::Params(0.4), Method::Uniform)
        .unwrap()
        .plan()
    };
    assert_eq!(plan(&with, Method::Tod), plan(&without, Method::Uniform));
}

#[test]
fn zero_and_minus_zero_are_one_goal() {
    assert_eq!(Goal::Alpha(0.0).label(), Goal::Alpha(-0.0).label());
    assert_eq!(Goal::Alpha(-0.0).label(), "alpha-0");
    assert_eq!(Goal::Alpha(-0.0).to_string(), "α = 0");
    assert_eq!(Goal::Macs(-0.0).label(), "macs-0");
}

#[test]
fn tiny_values_get_short_distinct_labels() {
    assert_eq!(Goal::Alpha(1e-320).label(), "alpha-1e-320");
    assert_eq!(Goal::Alpha(1e-320).to_string(), "α = 1e-320");
    assert_ne!(Goal::Alpha(1e-320).label(), Goal::Alpha(2e-320).label());
    assert_eq!(Goal::Params(5e-324).label(), "params-5e-324");
    // Short decimals stay as written.
    assert_eq!(Goal::Alpha(0.05).label(), "alpha-0.05");
    assert_eq!(Goal::Macs(0.5).label(), "macs-0.5");
    assert_eq!(Goal::Alpha(1.0).label(), "alpha-1");
    // 0.1 + 0.2 is not 0.3, and says so.
    assert_eq!(Goal::Alpha(0.1 + 0.2).label(), "alpha-0.30000000000000004");
    assert_ne!(Goal::Alpha(0.1 + 0.2).label(), Goal::Alpha(0.3).label());
    // The longest labels fit the bound.
    assert!(Goal::Params(-2.2250738585072014e-308).label().len() <= Goal::LABEL_BYTES);
    const { assert!(Goal::LABEL_BYTES <= 40) };
}

/// Whether `label` is a portable file name: at most 40 bytes of `A-Za-z0-9._-`, not
/// starting with `.` or `-`.
fn portable(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 40
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        && !label.starts_with(['.', '-'])
}

/// Values in [0, 1]: uniform, every bit pattern (so tiny exponents), subnormals, and the
/// neighbours of a few decimals.
fn unit_interval() -> impl Strategy<Value = f64> {
    prop_oneof![
        0.0..=1.0f64,
        (0u64..=1.0f64.to_bits()).prop_map(f64::from_bits),
        (1u64..(1 << 52)).prop_map(f64::from_bits),
        (0usize..5, -3i64..=3).prop_map(|(i, step)| {
            let base: f64 = [0.1, 0.3, 0.05, 0.5, 1e-5][i];
            f64::from_bits((base.to_bits() as i64 + step) as u64)
        }),
        Just(0.1 + 0.2),
        Just(-0.0),
    ]
}

fn goals(v: f64) -> [Goal; 3] {
    [Goal::Alpha(v), Goal::Macs(v), Goal::Params(v)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn labels_are_bounded_portable_and_one_to_one(a in unit_interval(), b in unit_interval()) {
        for (ga, gb) in goals(a).into_iter().zip(goals(b)) {
            let (la, lb) = (ga.label(), gb.label());
            prop_assert!(la.len() <= Goal::LABEL_BYTES, "{}", la);
            prop_assert!(portable(&la), "{}", la);
            // Equal values (0 and -0 included) give one label, distinct values two.
            prop_assert_eq!(a == b, la == lb, "{:e} {:e}: {} {}", a, b, la, lb);
            // The label reads back as the goal's value.
            let value: f64 = la.split_once('-').unwrap().1.parse().unwrap();
            prop_assert!(value == a, "{} reads back as {:e}, not {:e}", la, value, a);
        }
        // Goals of different kinds never share a label.
        let [alpha, macs, params] = goals(a).map(|g| g.label());
        prop_assert!(alpha != macs && macs != params && alpha != params);
        // A value's neighbour gets another label, and so does its negation unless it is 0.
        let next = f64::from_bits((a + 0.0).to_bits() + 1);
        prop_assert_ne!(Goal::Alpha(a).label(), Goal::Alpha(next).label());
        prop_assert_eq!(Goal::Alpha(a).label() == Goal::Alpha(-a).label(), a == 0.0);
    }
}
