//! `InfoReport`: the typed graph summary of `fair-pruner info --json`, and its documented
//! schema.

use std::path::Path;

use fair_ir::{GraphBuilder, INFO_SCHEMA_VERSION, InfoNode, InfoReport};

#[test]
fn the_report_lists_every_node_and_the_totals() {
    let mut b = GraphBuilder::new("tiny", "input", vec![2, 4, 4]);
    let x = b.conv("conv", "input", 3, 3, 1, 1, true).unwrap();
    let x = b.flatten("flatten", &x).unwrap();
    b.linear("fc", &x, 5, false).unwrap();
    let report = InfoReport::new(&b.finish().unwrap());
    let node = |name: &str, op: &str, shape: &[usize], params, macs| InfoNode {
        name: name.into(),
        op: op.into(),
        shape: shape.to_vec(),
        params,
        macs,
    };
    // conv: 3·2·3·3 weights + 3 biases, 3·2·9 MACs at each of 4·4 positions; fc: 48·5.
    assert_eq!(
        report,
        InfoReport {
            schema_version: INFO_SCHEMA_VERSION,
            name: "tiny".into(),
            nodes: vec![
                node("input", "input", &[2, 4, 4], 0, 0),
                node("conv", "conv2d", &[3, 4, 4], 57, 864),
                node("flatten", "flatten", &[48], 0, 0),
                node("fc", "linear", &[5], 240, 240),
            ],
            params: 297,
            macs: 1104,
        }
    );
    // It reads back, and unknown keys are refused.
    let text = serde_json::to_string(&report).unwrap();
    assert_eq!(serde_json::from_str::<InfoReport>(&text).unwrap(), report);
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["extra"] = 1.into();
    assert!(serde_json::from_value::<InfoReport>(v).is_err());
}

#[test]
fn the_info_schema_is_the_documented_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/info-schema.json");
    let now = fair_ir::info_schema();
    if std::env::var_os("FAIR_PRUNER_BLESS").is_some() {
        std::fs::write(&path, &now).unwrap();
    }
    let documented = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        documented == now,
        "docs/info-schema.json is not the schema of InfoReport: if the change is intended, \
         bump INFO_SCHEMA_VERSION when it breaks readers and run this test with FAIR_PRUNER_BLESS=1"
    );
    let v: serde_json::Value = serde_json::from_str(&now).unwrap();
    assert_eq!(v["title"], "InfoReport");
    assert!(v["properties"]["schema_version"].is_object());
    assert!(v["properties"]["nodes"].is_object());
}
