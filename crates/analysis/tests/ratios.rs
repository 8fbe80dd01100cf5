//! `RatiosReport`: the typed counts and widths of `fair-pruner ratios --json`, and its
//! documented schema.

use std::path::Path;
use std::time::Duration;

use fair_analysis::{
    Goal, GroupRule, MacCost, Method, RATIOS_SCHEMA_VERSION, RatiosReport, SelectOptions, Selector,
};
use fair_ir::{Graph, GraphBuilder};

/// conv a (8 units) → conv b (6 units) → fc: two prunable layers, no coupling.
fn graph() -> Graph {
    let mut b = GraphBuilder::new("two-convs", "input", vec![3, 8, 8]);
    let x = b.conv("a", "input", 8, 3, 1, 1, false).unwrap();
    let x = b.relu("relu_a", &x).unwrap();
    let x = b.conv("b", &x, 6, 3, 1, 1, false).unwrap();
    let x = b.flatten("flatten", &x).unwrap();
    b.linear("fc", &x, 10, false).unwrap();
    b.finish().unwrap()
}

fn refs(v: &[Vec<f64>]) -> Vec<&[f64]> {
    v.iter().map(Vec::as_slice).collect()
}

/// Unit i of each layer scores i under U, n − i under R.
fn selector(options: SelectOptions) -> Selector {
    let g = graph();
    let layers = vec!["a".to_string(), "b".to_string()];
    let u: Vec<Vec<f64>> = [8, 6].map(|n| (0..n).map(|i| i as f64).collect()).into();
    let r: Vec<Vec<f64>> = [8, 6]
        .map(|n| (0..n).map(|i| (n - i) as f64).collect())
        .into();
    Selector::new(g, layers, &refs(&u), &refs(&r), &refs(&u), options).unwrap()
}

#[test]
fn uniform_counts_report_the_ratio_and_the_widths() {
    let s = selector(SelectOptions {
        rule: GroupRule::Intersection,
        ..Default::default()
    });
    let selection = s.select(Goal::Params(0.3), Method::Uniform).unwrap();
    let report = RatiosReport::new(&s, &selection, "paper", Duration::from_millis(5));
    assert_eq!(report.schema_version, RATIOS_SCHEMA_VERSION);
    assert_eq!(report.ratio, Some(selection.setting));
    assert_eq!(report.alpha, None);
    assert_eq!(report.preset, "paper");
    assert_eq!(report.rule, GroupRule::Intersection);
    assert_eq!(report.milliseconds, 5.0);
    // γ = 0 and no exact target: none of the optional fields.
    assert_eq!(
        (report.mac_weight, report.mac_cost, report.exact_target),
        (None, None, None)
    );
    let names: Vec<&str> = report.layers.iter().map(|l| l.layer.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    for (l, units) in report.layers.iter().zip([8, 6]) {
        assert_eq!(l.units, units);
        assert_eq!(l.keep + l.remove, units);
        assert_eq!(l.remove, l.requested, "no coupling: {l:?}");
        assert_eq!((l.unit_macs, l.weight), (None, None));
    }
    // Parameters: a 3·8·9, b 8·6·9, fc 6·64·10.
    assert_eq!(report.params.before, 216 + 432 + 3840);
    let (ka, kb) = (report.layers[0].keep, report.layers[1].keep);
    assert_eq!(
        report.params.after,
        (27 * ka + 9 * ka * kb + 640 * kb) as u64
    );
    assert!(report.params.after as f64 <= 0.7 * report.params.before as f64);
    assert_eq!(report.macs.before, 64 * (216 + 432) + 3840);
    // Optional fields are left out of the JSON, and it reads back.
    let v = serde_json::to_value(&report).unwrap();
    for absent in ["alpha", "mac_weight", "mac_cost", "exact_target"] {
        assert!(v.get(absent).is_none(), "{absent}: {v}");
    }
    assert!(v["layers"][0].get("weight").is_none());
    assert_eq!(v["params"]["before"], 4488);
    assert_eq!(v["rule"], "intersection");
    assert_eq!(serde_json::from_value::<RatiosReport>(v).unwrap(), report);
}

#[test]
fn mac_weighted_counts_at_an_exact_target_report_their_costs() {
    let s = selector(SelectOptions {
        rule: GroupRule::Intersection,
        mac_weight: 1.0,
        mac_cost: MacCost::Unit,
        exact_target: true,
        ..Default::default()
    });
    let selection = s.select(Goal::Macs(0.4), Method::Tod).unwrap();
    let report = RatiosReport::new(&s, &selection, "fair-pruner", Duration::ZERO);
    assert_eq!(report.alpha, Some(selection.setting));
    assert_eq!(report.ratio, None);
    assert_eq!(report.mac_weight, Some(1.0));
    assert_eq!(report.mac_cost, Some(MacCost::Unit));
    assert_eq!(report.exact_target, Some(true));
    // One unit of a saves its own 3·9·64 MACs and b's 6·9·64; one of b its 8·9·64 and fc's
    // 64·10.
    let costs: Vec<Option<u64>> = report.layers.iter().map(|l| l.unit_macs).collect();
    assert_eq!(costs, [Some(1728 + 3456), Some(4608 + 640)]);
    assert!(report.layers.iter().all(|l| l.weight.is_some()));
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(v["mac_cost"], "unit");
    assert_eq!(v["exact_target"], true);
    assert!(v.get("ratio").is_none());
    assert_eq!(serde_json::from_value::<RatiosReport>(v).unwrap(), report);

    // An α is no target: no exact_target then.
    let at_alpha = s.select(Goal::Alpha(0.2), Method::Tod).unwrap();
    let report = RatiosReport::new(&s, &at_alpha, "fair-pruner", Duration::ZERO);
    assert_eq!(report.exact_target, None);
    assert_eq!(report.alpha, Some(0.2));
}

#[test]
fn unknown_keys_are_refused() {
    let s = selector(SelectOptions::default());
    let selection = s.select(Goal::Alpha(0.1), Method::Tod).unwrap();
    let mut v =
        serde_json::to_value(RatiosReport::new(&s, &selection, "paper", Duration::ZERO)).unwrap();
    v["layers"][0]["extra"] = 1.into();
    assert!(serde_json::from_value::<RatiosReport>(v).is_err());
}

#[test]
fn the_ratios_schema_is_the_documented_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ratios-schema.json");
    let now = fair_analysis::ratios_schema();
    if std::env::var_os("FAIR_PRUNER_BLESS").is_some() {
        std::fs::write(&path, &now).unwrap();
    }
    let documented = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        documented == now,
        "docs/ratios-schema.json is not the schema of RatiosReport: if the change is intended, \
         bump RATIOS_SCHEMA_VERSION when it breaks readers and run this test with FAIR_PRUNER_BLESS=1"
    );
    let v: serde_json::Value = serde_json::from_str(&now).unwrap();
    assert_eq!(v["title"], "RatiosReport");
    assert!(v["properties"]["schema_version"].is_object());
    assert!(v["properties"]["layers"].is_object());
}
