//! The `fair-pruner` binary, run as a user would.

mod common;
use common::{run, stderr, stdout};

#[test]
fn info_prints_nodes_and_torchvision_totals() {
    let o = run(&[
        "info",
        "--model",
        "resnet50",
        "--input",
        "3x224x224",
        "--classes",
        "1000",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("25,557,032 parameters (25.56 M)"), "{text}");
    assert!(text.contains("MACs (4.09 G)"), "{text}");
    let conv1 = text.lines().find(|l| l.starts_with("conv1 ")).unwrap();
    let cells: Vec<&str> = conv1.split_whitespace().collect();
    assert_eq!(
        cells,
        ["conv1", "conv2d", "64x112x112", "9,408", "118,013,952"]
    );
}

#[test]
fn info_defaults_to_the_models_usual_size() {
    let o = run(&["info", "--model", "vgg16_bn_cifar"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("14,990,922 parameters"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn written_graph_reads_back_with_the_same_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d40.toml");
    let f = file.to_str().unwrap();
    let a = run(&["info", "--model", "densenet40", "--write-graph", f]);
    assert!(a.status.success(), "{}", stderr(&a));
    let b = run(&["info", "--graph", f]);
    assert!(b.status.success(), "{}", stderr(&b));
    assert_eq!(stdout(&a), stdout(&b));
    let j = run(&["info", "--graph", f, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    let sum: u64 = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["params"].as_u64().unwrap())
        .sum();
    assert_eq!(v["params"].as_u64().unwrap(), sum);
    assert_eq!(v["name"], "densenet40");
}

/// `info --json` reads back as a `fair_ir::InfoReport` (unknown keys are refused), the one
/// the library makes from the same graph, and writing that back gives the printed JSON.
#[test]
fn info_json_is_the_typed_report() {
    let o = run(&[
        "info", "--model", "resnet20", "--input", "3x16x16", "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let report: fair_ir::InfoReport = serde_json::from_value(printed.clone()).unwrap();
    let graph = fair_zoo::build("resnet20", &[3, 16, 16], 10).unwrap();
    assert_eq!(report, fair_ir::InfoReport::new(&graph));
    assert_eq!(report.schema_version, fair_ir::INFO_SCHEMA_VERSION);
    assert_eq!(report.params, 272_474);
    assert_eq!(serde_json::to_value(&report).unwrap(), printed);
}

#[test]
fn errors_are_clear() {
    let o = run(&["info", "--model", "resnet99"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unknown model 'resnet99'; known models:"),
        "{}",
        stderr(&o)
    );

    let o = run(&["info", "--model", "resnet20", "--input", "3x0x32"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--input") && stderr(&o).contains("3x224x224"),
        "{}",
        stderr(&o)
    );

    let o = run(&["info", "--model", "vgg16_cifar", "--input", "1x28x28"]);
    assert!(
        stderr(&o).contains("features.30") && stderr(&o).contains("too small"),
        "{}",
        stderr(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "name = \"x\"\n[[nodes]]\nname = \"input\"\nop = { type = \"input\", shape = [3, 4, 4] }\n[[nodes]]\nname = \"c\"\nop = { type = \"conv2d\", in_channels = 1, out_channels = 2, kernel_size = 3 }\n").unwrap();
    let o = run(&["info", "--graph", bad.to_str().unwrap()]);
    let e = stderr(&o);
    assert!(
        e.contains("bad.toml") && e.contains("node 'c'") && e.contains("in_channels is 1"),
        "{e}"
    );

    let o = run(&["info"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--model") && stderr(&o).contains("--graph"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn help_explains_every_command() {
    let o = run(&["--help"]);
    let text = stdout(&o);
    assert!(text.contains("info") && text.contains("models"), "{text}");
    let o = run(&["info", "--help"]);
    let text = stdout(&o);
    for flag in [
        "--model",
        "--input",
        "--classes",
        "--graph",
        "--json",
        "--write-graph",
    ] {
        assert!(text.contains(flag), "info --help lacks {flag}:\n{text}");
    }
    let o = run(&["models"]);
    assert!(stdout(&o).contains("densenet121") && stdout(&o).contains("3x224x224"));
}

/// A small model, its weights and calibration data on disk.
fn scoring_fixture(dir: &std::path::Path) -> (String, String) {
    use tch::{Device, Kind, Tensor};
    let graph = fair_zoo::build("vgg11_bn_cifar", &[1, 32, 32], 3).unwrap();
    let model = fair_runtime::Model::new(graph, Device::Cpu, 0).unwrap();
    let weights = dir.join("w.safetensors");
    model.save_weights(&weights).unwrap();
    tch::manual_seed(0);
    let labels =
        Tensor::arange(3, (Kind::Int64, Device::Cpu)).repeat_interleave_self_int(4, 0, None);
    let inputs = Tensor::randn([12, 1, 32, 32], (Kind::Float, Device::Cpu));
    let data = dir.join("cal.safetensors");
    fair_runtime::write_safetensors(
        &data,
        &[("inputs".into(), inputs), ("labels".into(), labels)],
    )
    .unwrap();
    (
        weights.to_str().unwrap().to_owned(),
        data.to_str().unwrap().to_owned(),
    )
}

#[test]
fn score_then_ratios_from_stored_scores() {
    let dir = tempfile::tempdir().unwrap();
    let (w, d) = scoring_fixture(dir.path());
    let scores = dir.path().join("s.json");
    let s = scores.to_str().unwrap();
    let o = run(&[
        "score",
        "--model",
        "vgg11_bn_cifar",
        "--input",
        "1x32x32",
        "--classes",
        "3",
        "--weights",
        &w,
        "--calibration",
        &d,
        "--out",
        s,
        "--samples-per-class",
        "4",
        "--projections",
        "8",
        "--batch-size",
        "6",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("scored 9 layers of 'vgg11_bn_cifar'"),
        "{}",
        stdout(&o)
    );
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&scores).unwrap()).unwrap();
    assert_eq!(file["layers"].as_array().unwrap().len(), 9);
    assert_eq!(
        file["layers"][0]["scores"]["u"].as_array().unwrap().len(),
        64
    );
    assert_eq!(file["provenance"]["samples"], 12);
    assert_eq!(
        file["provenance"]["model_digest"].as_str().unwrap().len(),
        64
    );
    // The default criteria include the default preset's ranking (group-l1) ...
    assert_eq!(
        file["layers"][0]["scores"]["group-l1"]
            .as_array()
            .unwrap()
            .len(),
        64
    );
    // ... and a score file without it says how to go on.
    let mut old = file.clone();
    for l in old["layers"].as_array_mut().unwrap() {
        l["scores"].as_object_mut().unwrap().remove("group-l1");
    }
    old["provenance"]["criteria"]
        .as_object_mut()
        .unwrap()
        .remove("group-l1");
    let old_path = dir.path().join("old.json");
    std::fs::write(&old_path, old.to_string()).unwrap();
    let old_s = old_path.to_str().unwrap();
    let o = run(&["ratios", "--scores", old_s, "--alpha", "0.2"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--rank-by u") && stderr(&o).contains("no 'group-l1' scores"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "ratios",
        "--scores",
        old_s,
        "--alpha",
        "0.2",
        "--rank-by",
        "u",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = run(&["ratios", "--scores", s, "--alpha", "0.2", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 9);
    for l in layers {
        assert!(l["keep"].as_u64().unwrap() >= 1);
        assert_eq!(
            l["keep"].as_u64().unwrap() + l["remove"].as_u64().unwrap(),
            l["units"].as_u64().unwrap()
        );
    }

    let o = run(&["ratios", "--scores", s, "--target-macs", "0.4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let line = text.lines().find(|l| l.starts_with("parameters")).unwrap();
    let macs_removed: f64 = line
        .rsplit("MACs")
        .next()
        .unwrap()
        .split('(')
        .nth(1)
        .unwrap()
        .split('%')
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(macs_removed >= 40.0, "{line}");
    assert!(text.contains("computed from stored scores in"), "{text}");

    // FAIR plan (U ranking) and "ToD counts + L1 ranking" remove the same number of units.
    let (pu, pl) = (dir.path().join("pu.json"), dir.path().join("pl.json"));
    for (plan, by) in [(&pu, "u"), (&pl, "l1")] {
        let o = run(&[
            "ratios",
            "--scores",
            s,
            "--alpha",
            "0.2",
            "--write-plan",
            plan.to_str().unwrap(),
            "--rank-by",
            by,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let read = |p: &std::path::Path| {
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).unwrap()).unwrap()
    };
    let (a, b) = (read(&pu), read(&pl));
    for (layer, units) in a["remove"].as_object().unwrap() {
        assert_eq!(
            units.as_array().unwrap().len(),
            b["remove"][layer].as_array().unwrap().len(),
            "{layer}"
        );
    }
    let o = run(&[
        "ratios",
        "--scores",
        s,
        "--alpha",
        "0.2",
        "--write-plan",
        pu.to_str().unwrap(),
        "--rank-by",
        "bn",
    ]);
    assert!(stderr(&o).contains("no 'bn' scores"), "{}", stderr(&o));

    // The uniform baseline: the same ⌊r·n⌋ from every layer, the smallest r reaching 30 %.
    let o = run(&[
        "ratios",
        "--scores",
        s,
        "--uniform",
        "--target-params",
        "0.3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = v["ratio"].as_f64().unwrap();
    for l in v["layers"].as_array().unwrap() {
        let n = l["units"].as_f64().unwrap();
        assert_eq!(l["requested"].as_f64().unwrap(), (r * n).floor(), "{l}");
    }
    let (before, after) = (
        v["params"]["before"].as_f64().unwrap(),
        v["params"]["after"].as_f64().unwrap(),
    );
    assert!(1.0 - after / before >= 0.3, "{after} of {before}");
    let o = run(&["ratios", "--scores", s, "--uniform", "--alpha", "0.2"]);
    assert!(!o.status.success());

    let o = run(&["ratios", "--scores", s, "--alpha", "1.5"]);
    assert!(
        stderr(&o).contains("α must be in [0, 1], found 1.5"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn score_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (w, d) = scoring_fixture(dir.path());
    let out = dir.path().join("s.json");
    let o = run(&[
        "score",
        "--model",
        "vgg11_bn_cifar",
        "--weights",
        &w,
        "--calibration",
        &d,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("w.safetensors") && stderr(&o).contains("expected [64, 3, 3, 3]"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "score",
        "--model",
        "vgg11_bn_cifar",
        "--input",
        "1x32x32",
        "--classes",
        "3",
        "--weights",
        &w,
        "--criteria",
        "u",
    ]);
    assert!(
        stderr(&o).contains("the u criterion needs calibration data"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "score",
        "--model",
        "vgg11_bn_cifar",
        "--input",
        "1x32x32",
        "--classes",
        "3",
        "--weights",
        &w,
        "--calibration",
        &w,
    ]);
    assert!(
        stderr(&o).contains("no tensor named 'inputs'"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists(), "nothing is written on failure");
}

/// `fair-pruner score --criteria u` on the [`scoring_fixture`] in `dir` (4 samples per class,
/// 8 projections) with the `extra` flags, writing `dir/out`: the run and the score file, if
/// one was written.
fn score_u(
    dir: &std::path::Path,
    fixture: &(String, String),
    extra: &[&str],
    out: &str,
) -> (std::process::Output, Option<serde_json::Value>) {
    let out = dir.join(out);
    let mut args = vec![
        "score",
        "--model",
        "vgg11_bn_cifar",
        "--input",
        "1x32x32",
        "--classes",
        "3",
        "--weights",
        &fixture.0,
        "--calibration",
        &fixture.1,
        "--samples-per-class",
        "4",
        "--projections",
        "8",
        "--criteria",
        "u",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    let o = run(&args);
    let json = std::fs::read(&out)
        .ok()
        .map(|b| serde_json::from_slice::<serde_json::Value>(&b).unwrap());
    (o, json)
}

/// The U-Scores of a score file, layer by layer.
fn u_scores(v: &serde_json::Value) -> Vec<serde_json::Value> {
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["scores"]["u"].clone())
        .collect()
}

/// `--max-memory`: a bound that needs several passes gives the scores of one pass
/// (`none`), and one too small for a single unit is an error naming the flag and the layer.
#[test]
fn score_max_memory_splits_passes_with_identical_scores() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = scoring_fixture(dir.path());
    let score = |max: &str, out: &str| score_u(dir.path(), &fixture, &["--max-memory", max], out);
    let (o, one) = score("none", "one.json");
    assert!(o.status.success(), "{}", stderr(&o));
    let one = one.unwrap();
    // The model (~37 MB of parameters for 9.2 M) plus a few MiB (plans leave a tenth of the
    // bound to libtorch and a twentieth to the allocator's free blocks): several passes of
    // distances, the 12 samples still one forward pack. Found by sweeping the bound when
    // plans left a tenth only (57MiB ran one pass, 55MiB narrowed the packs); 62174389 bytes
    // leave today the room 56MiB left then (as `fair_scoring::memory::budget_for` says).
    const SPLIT: &str = "62174389";
    assert_eq!(
        fair_scoring::memory::budget_for((56u64 << 20) - (56u64 << 20) / 10).to_string(),
        SPLIT
    );
    let (o, split) = score(SPLIT, "split.json");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("passes"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("packs"), "{}", stderr(&o));
    let split = split.unwrap();
    assert!(
        split["provenance"]["criteria"]["u"]["settings"]
            .get("narrowed_packs")
            .is_none()
    );
    assert_eq!(u_scores(&one), u_scores(&split));
    // `--spill-dir`: the summaries that do not fit go to an unnamed file there (nothing is
    // left behind); `none` re-runs the forward passes, with a note; the scores are the same.
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    let spill_arg = spill.to_str().unwrap();
    let (o, at) = score_u(
        dir.path(),
        &fixture,
        &["--max-memory", SPLIT, "--spill-dir", spill_arg],
        "at.json",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("temporary file in '{spill_arg}'")),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_dir(&spill).unwrap().count(), 0);
    assert_eq!(u_scores(&one), u_scores(&at.unwrap()));
    // 48851305 bytes (the room 44MiB left when plans left a tenth only) cannot hold the
    // classes' forward pack: each class runs alone, with a note and
    // the narrowed packs recorded, and the scores are those of an unbounded run whose batch
    // size (4) makes every class (4 samples) its own batch, bit for bit, with the summaries
    // spilled or the forward passes re-run (`--spill-dir none`).
    let (o, alone) = score_u(dir.path(), &fixture, &["--batch-size", "4"], "alone.json");
    assert!(o.status.success(), "{}", stderr(&o));
    let alone = alone.unwrap();
    for (spill_dir, out) in [(None, "fallback.json"), (Some("none"), "never.json")] {
        let mut extra = vec!["--max-memory", "48851305"];
        extra.extend(spill_dir.iter().flat_map(|d| ["--spill-dir", d]));
        let (o, bounded) = score_u(dir.path(), &fixture, &extra, out);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("each class ran its own forward pass"),
            "{}",
            stderr(&o)
        );
        if spill_dir.is_some() {
            assert!(stderr(&o).contains("spill-dir` is none"), "{}", stderr(&o));
        }
        let bounded = bounded.unwrap();
        assert_eq!(
            bounded["provenance"]["criteria"]["u"]["settings"]["narrowed_packs"]["features.0"],
            0
        );
        assert_eq!(u_scores(&alone), u_scores(&bounded), "{out}");
    }
    let (o, empty) = score_u(dir.path(), &fixture, &["--spill-dir", ""], "empty.json");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--spill-dir"), "{}", stderr(&o));
    assert!(empty.is_none());
    // The room 41MiB left when plans left a tenth only: too small for one unit of the first
    // layer, though it holds the parameters.
    let (o, none) = score("45520535", "tiny.json");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--max-memory") && stderr(&o).contains("features.0"),
        "{}",
        stderr(&o)
    );
    assert!(none.is_none(), "nothing is written on failure");
}

/// `--pair-search`: the bounded class-pair search (the default) writes the U-Scores that
/// every pair gives, bit for bit; an unknown search is a usage error listing the three;
/// `certified` writes scores within their stored bounds of the exact ones.
#[test]
fn score_pair_search_bounded_equals_all() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = scoring_fixture(dir.path());
    let (o, all) = score_u(dir.path(), &fixture, &["--pair-search", "all"], "all.json");
    assert!(o.status.success(), "{}", stderr(&o));
    let (o, default) = score_u(dir.path(), &fixture, &[], "default.json");
    assert!(o.status.success(), "{}", stderr(&o));
    let (all, default) = (u_scores(&all.unwrap()), u_scores(&default.unwrap()));
    assert!(
        all.iter()
            .flat_map(|l| l.as_array().unwrap())
            .any(|v| v.as_f64().unwrap() > 0.0)
    );
    assert_eq!(all, default);
    let (o, none) = score_u(dir.path(), &fixture, &["--pair-search", "some"], "bad.json");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("bounded") && stderr(&o).contains("all"),
        "{}",
        stderr(&o)
    );
    assert!(none.is_none());
    assert!(stderr(&o).contains("certified"), "{}", stderr(&o));

    // `certified`: approximate scores, each within its stored bound of the exact one; the
    // file records the search in the U-Score's settings and says so in a note.
    let (o, certified) = score_u(
        dir.path(),
        &fixture,
        &["--pair-search", "certified"],
        "certified.json",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let certified = certified.unwrap();
    let u = &certified["provenance"]["criteria"]["u"];
    assert_eq!(u["settings"]["pair_search"], "certified", "{u}");
    assert!(
        u["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("certified class-pair search")),
        "{u}"
    );
    let layers = certified["layers"].as_array().unwrap();
    for (layer, exact) in layers.iter().zip(&all) {
        let scores = layer["scores"]["u"].as_array().unwrap();
        let bounds = layer["bounds"]["u"].as_array().unwrap();
        let exact = exact.as_array().unwrap();
        assert_eq!(bounds.len(), scores.len());
        for ((c, b), e) in scores.iter().zip(bounds).zip(exact) {
            let (c, b, e) = (
                c.as_f64().unwrap(),
                b.as_f64().unwrap(),
                e.as_f64().unwrap(),
            );
            assert!(
                (c - e).abs() <= b,
                "{}: {c} ± {b} against {e}",
                layer["layer"]
            );
        }
    }
    // Exact scores carry no bounds.
    let (_, exact_file) = score_u(dir.path(), &fixture, &[], "default2.json");
    assert!(exact_file.unwrap()["layers"][0].get("bounds").is_none());
}

#[test]
fn apply_exports_a_smaller_model_that_info_reads() {
    use tch::Device;
    let dir = tempfile::tempdir().unwrap();
    let graph = fair_zoo::build("resnet20", &[3, 32, 32], 10).unwrap();
    let model = fair_runtime::Model::new(graph, Device::Cpu, 0).unwrap();
    let weights = dir.path().join("w.safetensors");
    model.save_weights(&weights).unwrap();
    let plan = dir.path().join("plan.json");
    std::fs::write(
        &plan,
        r#"{"remove": {"layer1.0.conv1": [0, 1, 2], "layer3.2.conv1": [5]}}"#,
    )
    .unwrap();
    let out = dir.path().join("pruned");
    let o = run(&[
        "apply",
        "--model",
        "resnet20",
        "--weights",
        weights.to_str().unwrap(),
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("layer1.0.conv1") && text.contains("16 → 13"),
        "{text}"
    );
    for f in ["model.safetensors", "model.toml", "model.py", "report.json"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let o = run(&["info", "--graph", out.join("model.toml").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stdout(&o)
        .lines()
        .find(|l| l.starts_with("layer1.0.conv1 "))
        .unwrap()
        .to_owned();
    assert!(line.contains("13x32x32"), "{line}");
    // Weights in the export match the pruned graph exactly.
    let g = fair_ir::Graph::load(&out.join("model.toml")).unwrap();
    fair_runtime::Model::from_safetensors(g, &out.join("model.safetensors"), Device::Cpu).unwrap();

    std::fs::write(&plan, r#"{"remove": {"fc": [0]}}"#).unwrap();
    let o = run(&[
        "apply",
        "--model",
        "resnet20",
        "--weights",
        weights.to_str().unwrap(),
        "--plan",
        plan.to_str().unwrap(),
        "--out",
        dir.path().join("x").to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("cannot prune 'fc': it is the output layer"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn ratios_align_residual_groups_for_targets() {
    use tch::{Device, Kind, Tensor};
    let dir = tempfile::tempdir().unwrap();
    let graph = fair_zoo::build("resnet20", &[1, 16, 16], 3).unwrap();
    let model = fair_runtime::Model::new(graph, Device::Cpu, 0).unwrap();
    let weights = dir.path().join("w.safetensors");
    model.save_weights(&weights).unwrap();
    tch::manual_seed(1);
    let labels =
        Tensor::arange(3, (Kind::Int64, Device::Cpu)).repeat_interleave_self_int(4, 0, None);
    let data = dir.path().join("cal.safetensors");
    fair_runtime::write_safetensors(
        &data,
        &[
            (
                "inputs".into(),
                Tensor::randn([12, 1, 16, 16], (Kind::Float, Device::Cpu)),
            ),
            ("labels".into(), labels),
        ],
    )
    .unwrap();
    let scores = dir.path().join("s.json");
    let o = run(&[
        "score",
        "--model",
        "resnet20",
        "--input",
        "1x16x16",
        "--classes",
        "3",
        "--weights",
        weights.to_str().unwrap(),
        "--calibration",
        data.to_str().unwrap(),
        "--out",
        scores.to_str().unwrap(),
        "--projections",
        "8",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "ratios",
        "--scores",
        scores.to_str().unwrap(),
        "--target-params",
        "0.3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let keep = |layer: &str| {
        v["layers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["layer"] == layer)
            .unwrap()["keep"]
            .as_u64()
            .unwrap()
    };
    // The stem and every stage-1 block output are coupled by the residual adds.
    let stem = keep("conv1");
    for i in 0..3 {
        assert_eq!(keep(&format!("layer1.{i}.conv2")), stem);
    }
    let after = v["params"]["after"].as_f64().unwrap();
    let before = v["params"]["before"].as_f64().unwrap();
    assert!(1.0 - after / before >= 0.3, "{after} of {before}");
}

/// Writes the toy IDX dataset into `dir/data` (no file inside a data directory may be
/// written), trains an MLP on it with `fair-pruner train` for `epochs` into `dir`, and returns
/// the shared model/data flags and the weights path.
fn trained_idx_toy(dir: &std::path::Path, epochs: &str) -> (Vec<String>, std::path::PathBuf) {
    let w = dir.join("m.safetensors");
    let (common, o) = common::train_idx_toy(dir, "mlp", epochs, &w);
    assert!(stdout(&o).contains("test top-1"), "{}", stdout(&o));
    (common, w)
}

#[test]
fn train_eval_and_calib_on_an_idx_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let (common, w) = trained_idx_toy(dir.path(), "3");
    let with = |cmd: &str, extra: &[&str]| {
        let mut args = vec![cmd];
        args.extend(common.iter().map(String::as_str));
        args.extend_from_slice(extra);
        run(&args)
    };
    let o = with("eval", &["--weights", w.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("t10k-images-idx3-ubyte: top-1 100.00%"),
        "{}",
        stdout(&o)
    );
    let cal = dir.path().join("cal.safetensors");
    let o = with(
        "calib",
        &[
            "--weights",
            w.to_str().unwrap(),
            "--per-class",
            "5",
            "--out",
            cal.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let t = fair_runtime::read_safetensors(&cal, tch::Device::Cpu).unwrap();
    let shapes: Vec<(String, Vec<i64>)> = t.iter().map(|(n, x)| (n.clone(), x.size())).collect();
    assert_eq!(
        shapes,
        vec![
            ("inputs".into(), vec![10, 1, 8, 8]),
            ("labels".into(), vec![10])
        ]
    );
    // --train-fraction keeps a stratified part of the training split: 16 of each class's 32.
    let o = with(
        "calib",
        &[
            "--weights",
            w.to_str().unwrap(),
            "--per-class",
            "100",
            "--train-fraction",
            "0.5",
            "--out",
            cal.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("32 calibration samples"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("has 16 training sample(s)"),
        "{}",
        stderr(&o)
    );
    let o = with(
        "calib",
        &["--weights", w.to_str().unwrap(), "--train-fraction", "1.5"],
    );
    assert!(
        stderr(&o).contains("--train-fraction must be in (0, 1]"),
        "{}",
        stderr(&o)
    );
    // Never overwrite the input weights.
    let o = with(
        "finetune",
        &[
            "--weights",
            w.to_str().unwrap(),
            "--out",
            w.to_str().unwrap(),
        ],
    );
    assert!(
        stderr(&o).contains("refusing to write") && stderr(&o).contains("--weights"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn prune_scores_once_sweeps_alpha_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (common, w) = trained_idx_toy(dir.path(), "2");
    let out = dir.path().join("pruned");
    let mut args: Vec<&str> = vec!["prune"];
    args.extend(common.iter().map(String::as_str));
    args.extend([
        "--weights",
        w.to_str().unwrap(),
        "--alpha-sweep",
        "0.1,0.6",
        "--per-class",
        "8",
        "--finetune-epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let o = run(&[&args[..], &["-q"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("unpruned") && stdout(&o).contains("α = 0.6"),
        "{}",
        stdout(&o)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let params = |r: &serde_json::Value| r["after"]["params"].as_u64().unwrap();
    assert!(
        params(&results[1]) <= params(&results[0]),
        "a larger α removes at least as much"
    );
    assert!(params(&results[0]) <= report["before"]["params"].as_u64().unwrap());
    for r in results {
        let dir = out.join(r["export"].as_str().unwrap());
        assert!(dir.join("model.py").exists() && dir.join("model.safetensors").exists());
        assert!(r["threshold_ms"].as_f64().unwrap() >= 0.0);
    }
    // report.md: the table of every model and the three charts.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in ["| unpruned |", "| α = 0.1 |", "| α = 0.6 |"] {
        assert!(md.contains(needle), "report.md lacks {needle}:\n{md}");
    }
    for svg in ["kept-units.svg", "tod-curves.svg", "accuracy-vs-macs.svg"] {
        assert!(md.contains(&format!("({svg})")), "{md}");
        let text = std::fs::read_to_string(out.join(svg)).unwrap();
        assert!(text.starts_with("<svg"), "{svg}");
    }
    // A second run with the same model, data and settings reuses the stored scores; kept
    // units can be rounded to a multiple.
    let o = run(&[&args[..], &["--round-to", "4"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("reusing"), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    for r in report["results"].as_array().unwrap() {
        for l in r["layers"].as_array().unwrap() {
            let (keep, units) = (l["keep"].as_u64().unwrap(), l["units"].as_u64().unwrap());
            assert!(keep % 4 == 0 || keep == units, "{l}");
        }
    }
}

#[test]
fn prune_runs_from_a_config_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, w) = trained_idx_toy(dir.path(), "2");
    let out = dir.path().join("from-config");
    let config = dir.path().join("prune.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nzoo = \"mlp\"\ninput = [1, 8, 8]\nclasses = 2\n\n[data]\nsource = \"idx\"\npath = {:?}\n\n\
             [prune]\nalpha = 0.3\nper_class = 8\nround_to = 4\nmac_cost = \"shared\"\nout = {:?}\n",
            dir.path().join("data").display().to_string(),
            out.display().to_string()
        ),
    )
    .unwrap();
    let o = run(&[
        "prune",
        "--config",
        config.to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["selection"]["round_to"], 4);
    assert_eq!(report["selection"]["mac_cost"], "shared");
    assert_eq!(report["calibration"]["samples"], 16);
    assert_eq!(report["results"][0]["setting"], 0.3);
    assert!(out.join("report.md").exists() && out.join("alpha-0.3").is_dir());
    // A flag replaces the config's goal; a config without any goal is an error saying how.
    let o = run(&[
        "prune",
        "--config",
        config.to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
        "--alpha",
        "0.7",
        "--mac-cost",
        "unit",
        "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("alpha-0.7").is_dir());
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["selection"]["mac_cost"], "unit");
    assert!(
        !out.join("alpha-0.3").exists(),
        "the directory is replaced as a whole: no stale result of the earlier run"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("alpha = 0.3\n", "")).unwrap();
    let o = run(&[
        "prune",
        "--config",
        config.to_str().unwrap(),
        "--weights",
        w.to_str().unwrap(),
        "-q",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no pruning goal") && stderr(&o).contains("--alpha"),
        "{}",
        stderr(&o)
    );
}
