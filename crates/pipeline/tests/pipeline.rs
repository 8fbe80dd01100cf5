//! The pipeline through the library: goals met under every rule, the report agrees with the
//! exported models, the output directory holds exactly what the report lists, scores are
//! reused, and the report's schema is the documented one.

use std::path::Path;

use fair_pipeline::{Goal, GroupRule, PruneReport, Pruner, REPORT_SCHEMA_VERSION};
use fair_runtime::Model;
use fair_scoring::{Calibration, ScoringSettings};
use tch::{Device, Kind, Tensor};

fn model(name: &str, input: [usize; 3]) -> Model {
    Model::new(fair_zoo::build(name, &input, 4).unwrap(), Device::Cpu, 3).unwrap()
}

fn calibration(input: [usize; 3]) -> Calibration {
    tch::manual_seed(11);
    let [c, h, w] = input.map(|d| d as i64);
    let x = Tensor::randn([24, c, h, w], (Kind::Float, Device::Cpu));
    let y = Tensor::arange(24, (Kind::Int64, Device::Cpu)).remainder(4);
    Calibration::new(x, &y, "random").unwrap()
}

/// Cheap scoring settings for tests.
fn quick() -> ScoringSettings {
    let mut s = ScoringSettings::default();
    s.u.projections = 8;
    s
}

fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                walk(root, &r, out);
            } else {
                out.push(r.to_string_lossy().into_owned());
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, Path::new(""), &mut v);
    v.retain(|f| f != ".fair-pruner-output");
    v.sort();
    v
}

#[test]
fn targets_are_met_and_the_report_matches_every_export() {
    let input = [3, 16, 16];
    let cal = calibration(input);
    for name in ["resnet20", "densenet40"] {
        let m = model(name, input);
        for rule in [
            GroupRule::Package,
            GroupRule::Intersection,
            GroupRule::Strict,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("out");
            // No training split: the preset's steps after surgery are turned off, explicitly.
            let outcome = Pruner::new(&m)
                .no_reconstruction()
                .no_recalibration()
                .calibration(&cal)
                .scoring(quick())
                .goals([Goal::Macs(0.5), Goal::Params(0.4), Goal::Alpha(0.3)])
                .rule(rule)
                .out(&out)
                .run()
                .unwrap_or_else(|e| panic!("{name} {rule:?}: {e}"));
            let report = &outcome.report;
            assert_eq!(report.results.len(), 3);
            assert!(report.results[0].achieved.macs >= 0.5, "{name} {rule:?}");
            assert!(report.results[1].achieved.params >= 0.4, "{name} {rule:?}");
            for (r, pruned) in report.results.iter().zip(&outcome.models) {
                let export = out.join(r.export.as_ref().unwrap());
                let g = fair_ir::Graph::load(&export.join("model.toml")).unwrap();
                assert_eq!(&g, pruned.graph());
                assert_eq!(r.after.macs, g.macs());
                assert_eq!(r.after.params, g.param_count());
                for l in &r.layers {
                    assert_eq!(
                        g.units(&l.layer),
                        Some(l.keep),
                        "{name} {rule:?} {}",
                        l.layer
                    );
                }
                // The exported weights load into the exported graph.
                Model::from_safetensors(g, &export.join("model.safetensors"), Device::Cpu).unwrap();
            }
            // report.json is the report, and it lists exactly the directory's files.
            let text = std::fs::read_to_string(out.join("report.json")).unwrap();
            let read: PruneReport = serde_json::from_str(&text).unwrap();
            assert_eq!(&read, report);
            assert_eq!(read.schema_version, REPORT_SCHEMA_VERSION);
            assert_eq!(read.files, files_under(&out));
        }
    }
}

#[test]
fn stored_scores_are_reused_only_when_they_fit() {
    let input = [3, 16, 16];
    let (m, cal) = (model("resnet20", input), calibration(input));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = |settings: ScoringSettings, goal: Goal| {
        Pruner::new(&m)
            .no_reconstruction()
            .no_recalibration()
            .calibration(&cal)
            .scoring(settings)
            .goal(goal)
            .out(&out)
            .run()
            .unwrap()
            .report
    };
    let first = run(quick(), Goal::Alpha(0.2));
    assert!(!first.scoring.reused);
    let second = run(quick(), Goal::Alpha(0.4));
    assert!(second.scoring.reused, "same model, data and settings");
    assert_eq!(second.scoring.criteria, first.scoring.criteria);
    // The earlier export is gone: the directory was replaced as a whole.
    assert!(!out.join("alpha-0.2").exists() && out.join("alpha-0.4").is_dir());
    // Other U settings: the U-Score is computed again, the rest is reused and merged.
    let mut other = quick();
    other.u.projections = 9;
    let third = run(other, Goal::Alpha(0.4));
    assert!(!third.scoring.reused, "other settings");
    let mut kept: Vec<&String> = first
        .scoring
        .criteria
        .keys()
        .filter(|k| *k != "u")
        .collect();
    kept.sort();
    assert!(!kept.is_empty());
    let mut partly: Vec<&String> = third.scoring.partly_reused.iter().collect();
    partly.sort();
    assert_eq!(partly, kept);
    assert_eq!(third.scoring.criteria["u"].settings["projections"], 9);
    for k in kept {
        assert_eq!(
            third.scoring.criteria[k], first.scoring.criteria[k],
            "'{k}' was reused as stored"
        );
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("reused from an earlier run"), "{md}");
}

#[test]
fn bad_settings_fail_before_any_work() {
    let input = [3, 16, 16];
    let (m, cal) = (model("resnet20", input), calibration(input));
    let dir = tempfile::tempdir().unwrap();
    let err = |p: Pruner| {
        p.no_reconstruction()
            .no_recalibration()
            .run()
            .err()
            .expect("refused")
            .to_string()
    };
    let e = err(Pruner::new(&m).calibration(&cal).goal(Goal::Alpha(1.5)));
    assert!(e.starts_with("alpha:") && e.contains("[0, 1]"), "{e}");
    let e = err(Pruner::new(&m).calibration(&cal));
    assert!(e.contains("no pruning goal"), "{e}");
    let e = err(Pruner::new(&m).goal(Goal::Alpha(0.3)));
    assert!(e.contains("calibration"), "{e}");
    let e = err(Pruner::new(&m)
        .calibration(&cal)
        .goal(Goal::Macs(0.5))
        .goal(Goal::Macs(0.5)));
    assert!(e.contains("twice"), "{e}");
    let e = err(Pruner::new(&m)
        .calibration(&cal)
        .goal(Goal::Alpha(0.3))
        .remove_by("apoz"));
    assert!(e.contains("unknown criterion 'apoz'"), "{e}");
    // Labels beyond the model's outputs: refused up front, naming the sample.
    tch::manual_seed(1);
    let x = Tensor::randn([8, 3, 16, 16], (Kind::Float, Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 2, 3, 0, 1, 2, 7]);
    let bad = Calibration::new(x, &y, "bad labels").unwrap();
    let e = err(Pruner::new(&m).calibration(&bad).goal(Goal::Alpha(0.3)));
    assert!(e.contains("sample 7") && e.contains("4 outputs"), "{e}");
    // An output directory the user owns is never replaced.
    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    let e = err(Pruner::new(&m)
        .calibration(&cal)
        .goal(Goal::Alpha(0.3))
        .out(&mine));
    assert!(e.contains("did not write"), "{e}");
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep me"
    );
    // Nor a directory that holds an input.
    let w = dir.path().join("w.safetensors");
    m.save_weights(&w).unwrap();
    let e = err(Pruner::new(&m)
        .calibration(&cal)
        .goal(Goal::Alpha(0.3))
        .input("`weights`", &w)
        .out(dir.path()));
    assert!(
        e.contains("`out` is a directory that holds the input `weights`"),
        "{e}"
    );
}

#[test]
fn the_report_schema_is_the_documented_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/report-schema.json");
    let now = fair_pipeline::report_schema();
    if std::env::var_os("FAIR_PRUNER_BLESS").is_some() {
        std::fs::write(&path, &now).unwrap();
    }
    let documented = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        documented == now,
        "docs/report-schema.json is not the schema of PruneReport: if the change is intended, \
         bump REPORT_SCHEMA_VERSION when it breaks readers and run this test with FAIR_PRUNER_BLESS=1"
    );
    let v: serde_json::Value = serde_json::from_str(&now).unwrap();
    assert_eq!(v["title"], "PruneReport");
    assert!(v["properties"]["schema_version"].is_object());
}

/// The other commands' `--json` outputs have their JSON Schemas in `docs/<command>-schema.json`
/// too, generated from their types; a change to a type that changes its schema fails here.
#[test]
fn the_json_output_schemas_are_the_documented_ones() {
    fn pretty<T: schemars::JsonSchema>() -> String {
        serde_json::to_string_pretty(&schemars::schema_for!(T)).unwrap() + "\n"
    }
    let schemas = [
        (
            "import",
            "ImportReport",
            pretty::<fair_pipeline::ImportReport>(),
        ),
        (
            "score",
            "ScoreReport",
            pretty::<fair_analysis::ScoreReport>(),
        ),
        (
            "apply",
            "ApplyReport",
            pretty::<fair_surgery::ApplyReport>(),
        ),
        ("train", "TrainReport", pretty::<fair_train::TrainReport>()),
        ("eval", "EvalReport", pretty::<fair_train::EvalReport>()),
    ];
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let bless = std::env::var_os("FAIR_PRUNER_BLESS").is_some();
    let mut stale = Vec::new();
    for (command, title, now) in &schemas {
        let path = docs.join(format!("{command}-schema.json"));
        if bless {
            std::fs::write(&path, now).unwrap();
        }
        if std::fs::read_to_string(&path).unwrap_or_default() != *now {
            stale.push(format!("docs/{command}-schema.json ({title})"));
        }
        let v: serde_json::Value = serde_json::from_str(now).unwrap();
        assert_eq!(v["title"], *title);
        assert_eq!(
            v["additionalProperties"], false,
            "{title} refuses unknown keys"
        );
    }
    assert!(
        stale.is_empty(),
        "{} are not the schemas of their types: if the change is intended, run this test with \
         FAIR_PRUNER_BLESS=1",
        stale.join(", ")
    );
}

#[test]
fn the_ranking_follows_the_preset_unless_a_removal_signal_is_chosen() {
    let input = [3, 16, 16];
    let (m, cal) = (model("resnet20", input), calibration(input));
    let selection = |p: Pruner| {
        p.no_reconstruction()
            .no_recalibration()
            .calibration(&cal)
            .scoring(quick())
            .goal(Goal::Macs(0.3))
            .run()
            .unwrap()
            .report
            .selection
    };
    let default = selection(Pruner::new(&m));
    assert_eq!(default.rank_by, "group-l1");
    assert!(default.exact_target);
    assert_eq!(default.mac_cost, fair_analysis::MacCost::Fraction);
    let paper = selection(Pruner::new(&m).preset(fair_pipeline::Preset::Paper));
    assert_eq!(paper.rank_by, "u");
    assert!(!paper.exact_target);
    assert_eq!(paper.mac_cost, fair_analysis::MacCost::Unit);
    assert_eq!(selection(Pruner::new(&m).remove_by("l1")).rank_by, "l1");
    let chosen = Pruner::new(&m)
        .remove_by("l1")
        .rank_by("u")
        .exact_target(false)
        .mac_cost(fair_analysis::MacCost::Shared);
    let chosen = selection(chosen);
    assert_eq!((chosen.rank_by.as_str(), chosen.exact_target), ("u", false));
    assert_eq!(chosen.mac_cost, fair_analysis::MacCost::Shared);
}
