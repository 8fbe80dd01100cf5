//! Latency targets (`--target-latency`) on the trained toy MLP (1x8x8 → 512 → 256 → 2): a
//! given table (`--latency-table`), a measured and then cached one (`--latency-on
//! libtorch-cpu`, and `onnxruntime-cpu` where a Python with onnxruntime is found), and the errors of unreachable targets, missing runtimes and latency
//! flags without a latency target.

use std::path::Path;

mod common;
use common::{run, stderr, stdout};

/// A table for the toy MLP in which narrowing layers.0 (512) saves nothing and narrowing
/// layers.2 (256) saves up to 8 of the 10 ms linearly down to 8 channels (2 ms).
fn write_table(path: &Path, digest: &str) {
    let table = serde_json::json!({
        "format": "fair-pruner-latency-table/1",
        "key": {"model_digest": digest, "runtime": "my-device", "threads": 1, "batch": 1},
        "full_seconds": 0.010,
        "groups": [
            {"layers": ["layers.0"], "width": 512,
             "points": [{"width": 8, "seconds": 0.010}, {"width": 512, "seconds": 0.010}]},
            {"layers": ["layers.2"], "width": 256,
             "points": [{"width": 8, "seconds": 0.002}, {"width": 256, "seconds": 0.010}]}
        ]
    });
    std::fs::write(path, serde_json::to_string_pretty(&table).unwrap()).unwrap();
}

/// The table's prediction by hand for layers.2 at `width`: 2 ms at 8 (and below), 10 ms at
/// 256, linear between.
fn by_hand_ms(width: u64) -> f64 {
    let w = width.max(8) as f64;
    2.0 + (w - 8.0) / 248.0 * 8.0
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap()
}

fn keep(result: &serde_json::Value, layer: &str) -> u64 {
    result["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["layer"] == layer)
        .unwrap()["keep"]
        .as_u64()
        .unwrap()
}

/// `prune` of the toy model (`flags`, weights `w`) to the latency `target` on the given
/// `table`, into `out`.
fn on_table_args(
    flags: &[String],
    w: &Path,
    target: &str,
    table: &Path,
    out: &Path,
) -> Vec<String> {
    let mut args: Vec<String> = vec!["prune".into()];
    args.extend(flags.iter().cloned());
    for a in [
        "--weights",
        w.to_str().unwrap(),
        "--per-class",
        "8",
        "--target-latency",
        target,
        "--latency-table",
        table.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "-q",
    ] {
        args.push(a.to_owned());
    }
    args
}

#[test]
fn a_latency_target_prunes_on_a_given_table_and_reports_the_measured_latency() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("m.safetensors");
    let (flags, _) = common::train_idx_toy(dir.path(), "mlp", "2", &w);
    let table = dir.path().join("table.json");
    write_table(&table, "");
    let out = dir.path().join("pruned");
    let owned = on_table_args(&flags, &w, "0.5", &table, &out);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("latency target latency-0.5: remove 50.0% of latency"),
        "{}",
        stdout(&o)
    );
    let v = report(&out);
    let r = &v["results"][0];
    assert_eq!(r["label"], "latency-0.5");
    assert_eq!(r["goal"]["kind"], "latency");
    let t = &r["latency_target"];
    assert_eq!(t["target"], 0.5);
    assert_eq!(t["table"], "given");
    assert_eq!(t["runtime"], "my-device");
    // A table of another device is not corrected on this machine's measurements.
    assert!(t.get("rounds").is_none() && t.get("met").is_none(), "{t}");
    // The prediction is the table's at the exported widths, and meets the target.
    let predicted = 1.0 - by_hand_ms(keep(r, "layers.2")) / 10.0;
    let got = t["predicted"].as_f64().unwrap();
    assert!((got - predicted).abs() < 1e-9, "{got} vs {predicted}");
    assert!(got >= 0.5, "{got}");
    let macs = |m: &serde_json::Value| m["macs"].as_f64().unwrap();
    let mac_cut = macs(&v["before"]) / macs(&r["after"]);
    assert!((t["mac_cut"].as_f64().unwrap() - mac_cut).abs() < 1e-9 * mac_cut);
    // Measured interleaved against the unpruned model at the table's batch and threads.
    let m = &t["measured"];
    assert_eq!(m["runtime"], "libtorch-cpu");
    let speedup = m["speedup"]["median"].as_f64().unwrap();
    assert!(speedup > 0.0);
    assert!((m["removed"].as_f64().unwrap() - (1.0 - 1.0 / speedup)).abs() < 1e-9);
    assert!((m["gain_per_mac_cut"].as_f64().unwrap() - speedup / mac_cut).abs() < 1e-9);
    assert!(m["before_ms"]["median"].as_f64().unwrap() > 0.0);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("latency gain / MAC cut"), "{md}");
    // The default preset's MAC weights counted the latency each layer saves on the table.
    assert_eq!(v["selection"]["weigh_by"], "latency");

    // `ratios` meets the same target on the same table from the stored scores.
    let scores = out.join("scores.json");
    let ratios_on_table = |extra: &[&str]| {
        let mut a = vec![
            "ratios",
            "--scores",
            scores.to_str().unwrap(),
            "--target-latency",
            "0.5",
            "--latency-table",
            table.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        run(&a)
    };
    let o = ratios_on_table(&["--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rv: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let l = &rv["latency"];
    assert_eq!(l["table"], "given");
    assert_eq!(l["before_ms"], 10.0);
    let after = by_hand_ms(keep(&rv, "layers.2"));
    assert!(
        (l["after_ms"].as_f64().unwrap() - after).abs() < 1e-9,
        "{l}"
    );
    assert!(l["removed"].as_f64().unwrap() >= 0.5, "{l}");
    assert_eq!(rv["weigh_by"], "latency");
    let o = ratios_on_table(&[]);
    assert!(
        stdout(&o).contains("on the given table (my-device, batch 1, 1 threads)")
            && stdout(&o).contains("(costs: latency saved per fraction of a layer)"),
        "{}",
        stdout(&o)
    );
    // `--weigh-by macs` keeps MAC costs on the same table: recorded as such, and the layer
    // the table says saves nothing (layers.0) loses units it keeps under latency weights.
    let o = ratios_on_table(&["--weigh-by", "macs", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mv: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(mv["weigh_by"], "macs");
    assert!(mv["latency"]["removed"].as_f64().unwrap() >= 0.5);
    assert!(
        keep(&mv, "layers.0") < keep(&rv, "layers.0"),
        "{} vs {}",
        keep(&mv, "layers.0"),
        keep(&rv, "layers.0")
    );

    // The same table cannot reach 90%: the error states the range.
    let mut high = args.clone();
    let i = high.iter().position(|a| *a == "0.5").unwrap();
    high[i] = "0.9";
    let o = run(&high);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("a latency reduction of 90.0% cannot be reached")
            && e.contains("reachable range is 0% to"),
        "{e}"
    );
    // The output directory must not hold the given table (it is replaced as a whole).
    let inside = out.join("table.json");
    std::fs::copy(&table, &inside).unwrap();
    let mut args_inside = args.clone();
    let i = args_inside
        .iter()
        .position(|a| *a == table.to_str().unwrap())
        .unwrap();
    args_inside[i] = inside.to_str().unwrap();
    let o = run(&args_inside);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("refusing to write"), "{e}");
    assert!(inside.is_file(), "the given table was removed");
    std::fs::remove_file(&inside).unwrap();
    // A table measured for another model is refused.
    write_table(&table, "sha256:another");
    let o = run(&args);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--latency-table") && e.contains("sha256:another"),
        "{e}"
    );
    // The same table named by a config file: the error names the config key, not the flag.
    let data = dir.path().join("data");
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nzoo = \"mlp\"\ninput = [1, 8, 8]\nclasses = 2\nweights = {w:?}\n\n\
             [data]\nsource = \"idx\"\npath = {data:?}\n\n\
             [prune]\ntarget_latency = 0.5\nper_class = 8\nlatency_table = {table:?}\nout = {out:?}\n"
        ),
    )
    .unwrap();
    let o = run(&["prune", "--config", config.to_str().unwrap(), "-q"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "[prune] latency_table: '{}' was measured for the model sha256:another",
            table.display()
        )) && !e.contains("--latency-table"),
        "{e}"
    );
    // A runtime chosen with --latency-on must be the given table's.
    write_table(&table, "");
    let mut on = args.clone();
    on.extend(["--latency-on", "libtorch-cpu"]);
    let o = run(&on);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "--latency-on: libtorch-cpu was given but the table '{}' (--latency-table) was measured on my-device",
            table.display()
        )),
        "{e}"
    );
}

#[test]
fn a_target_beyond_a_table_of_this_runtime_is_measured_not_refused() {
    // The table of `write_table`, as if measured on libtorch CPU here: it predicts at most
    // 80% removed (layers.2 at 8 channels or fewer), so `ratios` refuses 90%, while `prune`,
    // which times its candidates on libtorch CPU, builds the one at the most the table
    // reaches and measures it instead of refusing.
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("m.safetensors");
    let (flags, _) = common::train_idx_toy(dir.path(), "mlp", "2", &w);
    let table = dir.path().join("table.json");
    write_table(&table, "");
    let mut t: serde_json::Value = serde_json::from_slice(&std::fs::read(&table).unwrap()).unwrap();
    t["key"]["runtime"] = "libtorch-cpu".into();
    std::fs::write(&table, serde_json::to_string(&t).unwrap()).unwrap();
    let out = dir.path().join("pruned");
    let args = on_table_args(&flags, &w, "0.9", &table, &out);
    let o = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let v = report(&out);
    let rounds = v["results"][0]["latency_target"]["rounds"]
        .as_array()
        .unwrap_or_else(|| panic!("no correction rounds: {v}"))
        .clone();
    assert!(!rounds.is_empty());
    let first = rounds[0]["table_target"].as_f64().unwrap();
    assert!(first > 0.0 && first <= 0.8 + 1e-9, "{first}");
    for r in &rounds {
        assert!(r["table_target"].as_f64().unwrap() <= first + 1e-12, "{r}");
    }
    assert!(
        stdout(&o).contains("round 1: table target"),
        "{}",
        stdout(&o)
    );

    let scores = out.join("scores.json");
    let o = run(&[
        "ratios",
        "--scores",
        scores.to_str().unwrap(),
        "--target-latency",
        "0.9",
        "--latency-table",
        table.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("a latency reduction of 90.0% cannot be reached"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_latency_table_is_measured_on_libtorch_cpu_then_reused() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("m.safetensors");
    let (flags, _) = common::train_idx_toy(dir.path(), "mlp", "1", &w);
    let out = dir.path().join("pruned");
    let mut args: Vec<&str> = vec!["prune"];
    args.extend(flags.iter().map(String::as_str));
    args.extend([
        "--weights",
        w.to_str().unwrap(),
        "--per-class",
        "8",
        "--target-latency",
        "0.2",
        "--latency-on",
        "libtorch-cpu",
        "--latency-threads",
        "1",
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]);
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let name = "latency-libtorch-cpu-b1-t1.json";
    let t = &report(&out)["results"][0]["latency_target"];
    assert_eq!(t["table"], "measured");
    assert_eq!(t["table_file"], name);
    assert_eq!(
        (t["batch"].as_u64(), t["threads"].as_u64()),
        (Some(1), Some(1))
    );
    // The measured correction: the first candidate is selected at the target itself, each
    // round is reported, and the exported model is one of the rounds' candidates.
    let rounds = t["rounds"]
        .as_array()
        .expect("rounds of the measured correction");
    assert!((1..=4).contains(&rounds.len()), "{t}");
    assert_eq!(rounds[0]["table_target"], 0.2);
    assert_eq!(t["tolerance"], 0.05);
    let met = t["met"].as_bool().expect("met");
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    for r in rounds {
        assert!(f(&r["predicted"]) >= f(&r["table_target"]) - 1e-9, "{r}");
        let s = f(&r["speedup"]["median"]);
        assert!(
            (f(&r["removed"]["median"]) - (1.0 - 1.0 / s)).abs() < 1e-9,
            "{r}"
        );
    }
    let predicted = f(&t["predicted"]);
    let kept = rounds
        .iter()
        .find(|r| (f(&r["predicted"]) - predicted).abs() < 1e-12)
        .expect("the exported model is a round's candidate");
    let closest = rounds
        .iter()
        .map(|r| (f(&r["removed"]["median"]) - 0.2).abs())
        .fold(f64::INFINITY, f64::min);
    assert!(
        (f(&kept["removed"]["median"]) - 0.2).abs() <= closest + 1e-12
            || rounds
                .iter()
                .filter(|r| r["predicted"] == kept["predicted"])
                .count()
                > 1,
        "the kept candidate is the closest: {t}"
    );
    assert_eq!(
        met,
        (f(&kept["removed"]["median"]) - 0.2).abs() <= 0.05 * 0.2 + 1e-12
    );
    let out_text = stdout(&o);
    assert!(
        out_text.contains("  round 1: table target 20.0%, predicted"),
        "{out_text}"
    );
    assert_eq!(
        out_text.contains("warning: latency target latency-0.2 not met"),
        !met,
        "{out_text}"
    );
    let table: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(name)).unwrap()).unwrap();
    assert_eq!(table["key"]["runtime"], "libtorch-cpu");
    let layers: Vec<&str> = table["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["layers"][0].as_str().unwrap())
        .collect();
    assert_eq!(layers, ["layers.0", "layers.2"]);
    // A second run with the same key reuses the table, unless the first measurement was
    // flagged noisy (on a loaded machine, e.g. beside the other tests of this binary): a
    // noisy table is measured again rather than trusted.
    let noisy = table["noisy"].as_bool().expect("the table's noisy flag");
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        report(&out)["results"][0]["latency_target"]["table"],
        if noisy { "measured" } else { "cached" },
        "noisy first table: {noisy}"
    );
    // `ratios` writes the table it measures next to the score file, through the output
    // guard: a score file that has the cache's name is not overwritten.
    let scores_dir = dir.path().join("scores");
    std::fs::create_dir(&scores_dir).unwrap();
    let scores = scores_dir.join(name);
    std::fs::copy(out.join("scores.json"), &scores).unwrap();
    let before = std::fs::read(&scores).unwrap();
    let o = run(&[
        "ratios",
        "--scores",
        scores.to_str().unwrap(),
        "--target-latency",
        "0.2",
        "--latency-threads",
        "1",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("the latency table file is the same file as the input --scores"),
        "{e}"
    );
    assert!(
        !e.contains("latency table on"),
        "refused before measuring: {e}"
    );
    assert_eq!(
        std::fs::read(&scores).unwrap(),
        before,
        "the score file was overwritten"
    );
    // Under another name, the measured table is written next to it.
    let scores = scores_dir.join("scores.json");
    std::fs::rename(scores_dir.join(name), &scores).unwrap();
    let o = run(&[
        "ratios",
        "--scores",
        scores.to_str().unwrap(),
        "--target-latency",
        "0.2",
        "--latency-threads",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("latency table on libtorch-cpu (batch 1, 1 threads)"),
        "{}",
        stderr(&o)
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scores_dir.join(name)).unwrap()).unwrap();
    assert_eq!(written["key"]["runtime"], "libtorch-cpu");
}

/// Whether the interpreter fair-pruner would use (`FAIR_PRUNER_PYTHON`, else `python3`) can
/// import `modules` (comma-separated, as `import` takes them); says the test is skipped, and
/// what to install (`pip`), when not.
fn python_imports(modules: &str, pip: &str) -> bool {
    let python = std::env::var("FAIR_PRUNER_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = std::process::Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIPPED: '{python}' cannot import {modules} (set FAIR_PRUNER_PYTHON to a python \
             with `pip install {pip}` to run this test)"
        );
    }
    ok
}

/// Whether the interpreter can import onnxruntime and numpy (see [`python_imports`]).
fn onnxruntime_importable() -> bool {
    python_imports("onnxruntime, numpy", "onnxruntime numpy")
}

/// `prune` of the toy model trained with `flags` and weights `w` at a 20% latency target on
/// `runtime` (table and timing with 1 thread), into `out`, quietly.
fn latency_target_args(
    flags: &[String],
    w: &std::path::Path,
    runtime: &str,
    out: &std::path::Path,
) -> Vec<String> {
    let mut args: Vec<String> = vec!["prune".into()];
    args.extend(flags.iter().cloned());
    for a in [
        "--weights",
        w.to_str().unwrap(),
        "--per-class",
        "8",
        "--target-latency",
        "0.2",
        "--latency-on",
        runtime,
        "--latency-threads",
        "1",
        "--out",
        out.to_str().unwrap(),
        "-q",
    ] {
        args.push(a.to_owned());
    }
    args
}

#[test]
fn a_latency_target_is_measured_and_corrected_on_onnxruntime_cpu() {
    if !onnxruntime_importable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("m.safetensors");
    let (flags, _) = common::train_idx_toy(dir.path(), "mlp", "1", &w);
    let out = dir.path().join("pruned");
    let owned = latency_target_args(&flags, &w, "onnxruntime-cpu", &out);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let name = "latency-onnxruntime-cpu-b1-t1.json";
    let t = &report(&out)["results"][0]["latency_target"];
    assert_eq!(t["runtime"], "onnxruntime-cpu");
    assert_eq!(t["table"], "measured");
    assert_eq!(t["table_file"], name);
    // The candidates and the export are timed on ONNX Runtime too.
    let rounds = t["rounds"]
        .as_array()
        .expect("rounds of the measured correction");
    assert!((1..=4).contains(&rounds.len()), "{t}");
    assert_eq!(rounds[0]["table_target"], 0.2);
    let measured = &t["measured"];
    assert_eq!(measured["runtime"], "onnxruntime-cpu", "{t}");
    assert!(
        measured["before_ms"]["median"].as_f64().unwrap() > 0.0,
        "{t}"
    );
    let table: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(name)).unwrap()).unwrap();
    assert_eq!(table["key"]["runtime"], "onnxruntime-cpu");
    assert_eq!(table["key"]["threads"], 1);
    // The onnxruntime version: in the table's key, the report and its printed line.
    let python = std::env::var("FAIR_PRUNER_PYTHON").unwrap_or_else(|_| "python3".into());
    let version = std::process::Command::new(&python)
        .args(["-c", "import onnxruntime; print(onnxruntime.__version__)"])
        .output()
        .unwrap()
        .stdout;
    let version = String::from_utf8(version).unwrap().trim().to_owned();
    assert!(!version.is_empty());
    assert_eq!(table["key"]["runtime_version"], version.as_str());
    assert_eq!(t["runtime_version"], version.as_str(), "{t}");
    assert_eq!(measured["runtime_version"], version.as_str(), "{t}");
    let printed = stdout(&o);
    assert!(
        printed.contains(&format!("measured on onnxruntime-cpu {version}:")),
        "{printed}"
    );
    assert!(table["full_seconds"].as_f64().unwrap() > 0.0);
    // A second run with the same key reuses the table, unless it was flagged noisy.
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let source = &report(&out)["results"][0]["latency_target"]["table"];
    if table["noisy"] == false {
        assert_eq!(source, "cached");
    }
}

/// Whether the interpreter can import torch and safetensors (see [`python_imports`]).
fn torch_importable() -> bool {
    python_imports("torch, safetensors", "torch safetensors")
}

/// `--latency-on pytorch-cpu`: the table, the correction's candidates and the export are
/// timed as the exported `model.py` in eager PyTorch, and the export's figure is judged
/// against the tolerance.
#[test]
fn a_latency_target_is_measured_and_corrected_on_pytorch_cpu() {
    if !torch_importable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("m.safetensors");
    let (flags, _) = common::train_idx_toy(dir.path(), "mlp", "1", &w);
    let out = dir.path().join("pruned");
    let owned = latency_target_args(&flags, &w, "pytorch-cpu", &out);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = &report(&out)["results"][0]["latency_target"];
    assert_eq!(t["runtime"], "pytorch-cpu");
    assert_eq!(t["table_file"], "latency-pytorch-cpu-b1-t1.json");
    let rounds = t["rounds"].as_array().expect("rounds of the correction");
    assert!((1..=4).contains(&rounds.len()), "{t}");
    let measured = &t["measured"];
    assert_eq!(measured["runtime"], "pytorch-cpu", "{t}");
    let python = std::env::var("FAIR_PRUNER_PYTHON").unwrap_or_else(|_| "python3".into());
    let version = std::process::Command::new(&python)
        .args(["-c", "import torch; print(torch.__version__)"])
        .output()
        .unwrap()
        .stdout;
    let version = String::from_utf8(version).unwrap().trim().to_owned();
    assert_eq!(t["runtime_version"], version.as_str(), "{t}");
    // The final measurement is judged: within the tolerance, or not, as its number says.
    let removed = measured["removed"].as_f64().unwrap();
    assert_eq!(
        t["measured_met"].as_bool(),
        Some((removed - 0.2).abs() <= 0.05 * 0.2),
        "{t}"
    );
    let printed = stdout(&o);
    assert!(
        printed.contains(&format!("measured on pytorch-cpu {version}:")),
        "{printed}"
    );
}

#[test]
fn latency_flags_are_checked_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    fair_testkit::write_idx_toy(&data);
    let flags = common::toy_flags("mlp", &data);
    // Never read: the settings are refused first.
    let w = dir.path().join("absent.safetensors");
    let with = |extra: &[&str]| {
        let mut args: Vec<&str> = vec!["prune", "--weights", w.to_str().unwrap()];
        args.extend(flags.iter().map(String::as_str));
        args.extend_from_slice(extra);
        run(&args)
    };
    // Without a CUDA device, `cuda` is refused before anything is read, naming what is
    // missing and what to choose.
    let cuda = tch::Cuda::is_available();
    let o = with(&["--target-latency", "0.5", "--latency-on", "cuda"]);
    assert!(!o.status.success());
    if !cuda {
        let e = stderr(&o);
        assert!(
            e.contains("--latency-on: cuda: libtorch sees no CUDA device here")
                && e.contains("libtorch-cpu, onnxruntime-cpu or pytorch-cpu (--latency-on)")
                && !e.contains("absent.safetensors"),
            "{e}"
        );
    }
    let o = with(&[
        "--target-latency",
        "0.5",
        "--latency-on",
        "onnxruntime-cpu",
        "--latency-python",
        "/nonexistent/fair-pruner/python3",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(
            "--latency-on: onnxruntime-cpu: cannot run the Python interpreter '/nonexistent/fair-pruner/python3'"
        ) && e.contains("pip install onnxruntime numpy")
            && e.contains("--latency-python"),
        "{e}"
    );
    // A given table measured on ONNX Runtime: its runtime is checked at the start too,
    // with the given interpreter, though `--latency-on` is not given.
    let table = dir.path().join("ort.json");
    std::fs::write(
        &table,
        serde_json::json!({
            "format": "fair-pruner-latency-table/1",
            "key": {"model_digest": "", "runtime": "onnxruntime-cpu", "threads": 1, "batch": 1},
            "full_seconds": 0.010,
            "groups": []
        })
        .to_string(),
    )
    .unwrap();
    let o = with(&[
        "--target-latency",
        "0.5",
        "--latency-table",
        table.to_str().unwrap(),
        "--latency-python",
        "/nonexistent/fair-pruner/python3",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(
            "--latency-on: onnxruntime-cpu: cannot run the Python interpreter '/nonexistent/fair-pruner/python3'"
        ) && !e.contains("absent.safetensors"),
        "{e}"
    );
    let o = with(&["--target-macs", "0.5", "--latency-batch", "4"]);
    assert!(
        stderr(&o).contains("--latency-batch: applies to a latency target only"),
        "{}",
        stderr(&o)
    );
    let o = with(&["--target-latency", "1.5"]);
    assert!(stderr(&o).contains("--target-latency:"), "{}", stderr(&o));
    let o = with(&["--target-latency", "0.5", "--target-macs", "0.5"]);
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    let o = with(&["--target-latency", "0.5", "--latency-tolerance", "0"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--latency-tolerance: must be a fraction between 0 and 1"),
        "{}",
        stderr(&o)
    );
    let o = run(&[
        "ratios",
        "--scores",
        "absent.json",
        "--target-latency",
        "0.5",
        "--latency-tolerance",
        "0.1",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--latency-tolerance applies to `prune` only"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_onnxruntime_probe_imports_nothing_from_the_current_directory() {
    // Needs a Python 3 only: without onnxruntime the probe fails, but must not have
    // imported the current directory's modules either.
    let python = std::env::var("FAIR_PRUNER_PYTHON").unwrap_or_else(|_| "python3".into());
    if !std::process::Command::new(&python)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("SKIPPED: no Python interpreter '{python}'");
        return;
    }
    let with_onnxruntime = onnxruntime_importable();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    fair_testkit::write_idx_toy(&data);
    let flags = common::toy_flags("mlp", &data);
    // A numpy.py and an onnxruntime package in the directory the user runs from: a probe
    // that imported them would leave the marker file and fail.
    let cwd = dir.path().join("cwd");
    std::fs::create_dir_all(cwd.join("onnxruntime")).unwrap();
    let marker = dir.path().join("imported-from-cwd");
    let code = format!(
        "open({:?}, 'w').write('x')\nraise SystemExit(9)\n",
        marker.display().to_string()
    );
    std::fs::write(cwd.join("numpy.py"), &code).unwrap();
    std::fs::write(cwd.join("onnxruntime").join("__init__.py"), &code).unwrap();
    let w = dir.path().join("absent.safetensors");
    let mut args: Vec<&str> = vec!["prune", "--weights", w.to_str().unwrap()];
    args.extend(flags.iter().map(String::as_str));
    args.extend(["--target-latency", "0.5", "--latency-on", "onnxruntime-cpu"]);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_fair-pruner"))
        .args(&args)
        .current_dir(&cwd)
        .env_remove("PYTHONPATH")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    if with_onnxruntime {
        // The probe passed: the run goes on to the (absent) weights.
        assert!(!e.contains("onnxruntime-cpu"), "{e}");
        assert!(e.contains("absent.safetensors"), "{e}");
    } else {
        // The probe failed on the interpreter's own missing packages, not on the
        // directory's modules (which exit with status 9).
        assert!(
            e.contains("onnxruntime-cpu: the Python interpreter")
                && e.contains("pip install onnxruntime numpy"),
            "{e}"
        );
        assert!(!e.contains("exit status: 9"), "{e}");
    }
    assert!(
        !marker.exists(),
        "the probe imported the current directory's numpy.py"
    );
}

#[test]
fn a_model_onnx_runtime_cannot_run_is_refused_before_scoring() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("m.safetensors");
    let (flags, _) = common::train_idx_toy(dir.path(), "mlp", "1", &w);
    // A stand-in for ONNX Runtime that cannot load a model alone (the check before
    // scoring loads the full model alone; table sets load two or more).
    let fake = dir.path().join("fake-python");
    write_fake_python(
        &fake,
        r#"echo '{"onnxruntime": "9.9.9"}'
while read -r line; do
  case "$line" in
    *'"models":["m0.onnx"]'*) echo '{"error": "NOT_IMPLEMENTED: no kernel for Gemm", "model": 0}' ;;
    *'"op":"load"'*) n=$(echo "$line" | grep -o '\.onnx' | wc -l); echo "{\"loaded\": $n}" ;;
    *) echo '{"ms": [1.0]}' ;;
  esac
done"#,
    );
    let out = dir.path().join("pruned");
    let o = prune_on_fake_helper(&flags, &w, &fake, &out, &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(
            "timing on onnxruntime-cpu failed: ONNX Runtime cannot load or run the full model \
             (NOT_IMPLEMENTED: no kernel for Gemm); measure on libtorch CPU instead (--latency-on libtorch-cpu)"
        ),
        "{e}"
    );
    // Refused before scoring: no scores, and no latency table (measured after scoring).
    assert!(!out.join("scores.json").exists());
    assert!(!out.join("latency-onnxruntime-cpu-b1-t1.json").exists());
}

/// `prune` of the toy model trained with `flags` and weights `w` at a 20% latency target on
/// onnxruntime-cpu, timed by the stand-in interpreter `fake`, into `out`, with `env` set.
fn prune_on_fake_helper(
    flags: &[String],
    w: &Path,
    fake: &Path,
    out: &Path,
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut args: Vec<&str> = vec!["prune"];
    args.extend(flags.iter().map(String::as_str));
    args.extend([
        "--weights",
        w.to_str().unwrap(),
        "--per-class",
        "8",
        "--target-latency",
        "0.2",
        "--latency-on",
        "onnxruntime-cpu",
        "--latency-python",
        fake.to_str().unwrap(),
        "--latency-threads",
        "1",
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]);
    common::run_env(&args, env)
}

/// Writes an executable shell script `body` standing for a Python interpreter at `path`.
fn write_fake_python(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_helper_that_dies_between_requests_is_an_error_naming_its_exit() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("m.safetensors");
    let (flags, _) = common::train_idx_toy(dir.path(), "mlp", "1", &w);
    // A stand-in for ONNX Runtime that passes the check of the full model alone, then, at
    // the first set of a table (two models or more), closes its stdin, answers the load and
    // exits with status 7 a moment later: fair-pruner's next request is written to a pipe
    // nobody reads (EPIPE, and a SIGPIPE that must not kill fair-pruner).
    let fake = dir.path().join("fake-python");
    write_fake_python(
        &fake,
        r#"echo '{"onnxruntime": "9.9.9"}'
while read -r line; do
  case "$line" in
    *'"models":["m0.onnx"]'*) echo '{"loaded": 1}' ;;
    *'"op":"load"'*) exec 0<&-; echo 'dying' >&2
       n=$(echo "$line" | grep -o '\.onnx' | wc -l); echo "{\"loaded\": $n}"
       sleep 1; exit 7 ;;
    *) echo '{"ms": [1.0]}' ;;
  esac
done"#,
    );
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = dir.path().join("pruned");
    let o = prune_on_fake_helper(
        &flags,
        &w,
        &fake,
        &out,
        &[("TMPDIR", tmp.to_str().unwrap())],
    );
    let e = stderr(&o);
    // The tool's error, not a death by SIGPIPE (no status, signal 13, or 141 from a shell).
    assert!(
        matches!(o.status.code(), Some(1 | 2)),
        "status {:?}: {e}",
        o.status
    );
    assert!(
        e.contains("timing on onnxruntime-cpu failed: the timing helper run by")
            && e.contains("exited (exit status: 7)"),
        "{e}"
    );
    assert!(e.contains("dying"), "the helper's stderr is shown: {e}");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .filter_map(|d| d.ok())
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("fair-pruner-onnxruntime-"))
        .collect();
    assert!(left.is_empty(), "helper directories left: {left:?}");
}

#[test]
fn the_correction_rounds_and_the_final_measurement_share_one_helper() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("m.safetensors");
    let (flags, _) = common::train_idx_toy(dir.path(), "mlp", "1", &w);
    // A stand-in for ONNX Runtime that times the first model of a set at 4 ms and the others
    // at 1 ms (so every candidate removes 75%, no candidate meets the target and the
    // correction runs all its rounds), and logs each start and each load
    // (the number of models and the files) into `log`.
    let log = dir.path().join("log");
    let fake = dir.path().join("fake-python");
    write_fake_python(
        &fake,
        &format!(
            r#"log='{}'
echo start >> "$log"
echo '{{"onnxruntime": "9.9.9"}}'
while read -r line; do
  case "$line" in
    *'"op":"load"'*) n=$(echo "$line" | grep -o '\.onnx' | wc -l)
       echo "load $n $(echo "$line" | grep -o 'm[0-9]*\.onnx' | tr '\n' ' ')" >> "$log"
       echo "{{\"loaded\": $n}}" ;;
    *'"model":0,'*) echo '{{"ms": [4.0]}}' ;;
    *) echo '{{"ms": [1.0]}}' ;;
  esac
done"#,
            log.display()
        ),
    );
    let out = dir.path().join("pruned");
    let o = prune_on_fake_helper(&flags, &w, &fake, &out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = &report(&out)["results"][0]["latency_target"];
    let rounds = t["rounds"].as_array().expect("rounds").len();
    assert!(rounds >= 2, "{t}");
    // A round whose candidate has the widths of an earlier one is not timed again.
    let timed = t["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["reused"] != true)
        .count();
    // Per start of the helper, its loads. The table's sets hold the full model and several
    // widths; the correction's and the final measurement's, the full model and one model.
    let log = std::fs::read_to_string(&log).unwrap();
    let starts: Vec<Vec<&str>> = log
        .split("start\n")
        .skip(1)
        .map(|s| s.lines().collect())
        .collect();
    let pairs: Vec<&Vec<&str>> = starts
        .iter()
        .filter(|loads| loads.iter().any(|l| l.starts_with("load 2 ")))
        .collect();
    assert_eq!(pairs.len(), 1, "one helper for the correction: {log}");
    // Every timed round and the final measurement, the unpruned model exported once (m0).
    assert_eq!(pairs[0].len(), timed + 1, "{log}");
    for (k, l) in pairs[0].iter().enumerate() {
        assert_eq!(*l, format!("load 2 m0.onnx m{}.onnx ", k + 1), "{log}");
    }
}

/// `prune` of the toy model trained with `flags` and weights `w` at a 50% MAC target, its
/// export timed on `runtime` (`--latency-on`, no latency target) at batch 2 with 1 thread,
/// `extra` flags added, into `out`.
fn prune_macs_timed_on(
    flags: &[String],
    w: &Path,
    runtime: &str,
    extra: &[&str],
    out: &Path,
) -> std::process::Output {
    let mut args: Vec<&str> = vec!["prune"];
    args.extend(flags.iter().map(String::as_str));
    args.extend([
        "--weights",
        w.to_str().unwrap(),
        "--per-class",
        "8",
        "--target-macs",
        "0.5",
        "--latency-on",
        runtime,
        "--latency-batch",
        "2",
        "--latency-threads",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    args.extend_from_slice(extra);
    run(&args)
}

/// The MAC cut of the first result of `report`: the unpruned model's MACs over the pruned
/// model's.
fn mac_cut(report: &serde_json::Value) -> f64 {
    let macs = |m: &serde_json::Value| m["macs"].as_f64().unwrap();
    macs(&report["before"]) / macs(&report["results"][0]["after"])
}

#[test]
fn a_mac_target_is_timed_on_onnxruntime_cpu_with_latency_on() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("m.safetensors");
    let (flags, _) = common::train_idx_toy(dir.path(), "mlp", "1", &w);
    // A stand-in for ONNX Runtime that times the first model of a set (the unpruned one) at
    // 4 ms and the others at 1 ms, and logs each load (the number of models and the files).
    let log = dir.path().join("log");
    let fake = dir.path().join("fake-python");
    write_fake_python(
        &fake,
        &format!(
            r#"log='{}'
echo '{{"onnxruntime": "9.9.9"}}'
while read -r line; do
  case "$line" in
    *'"op":"load"'*) n=$(echo "$line" | grep -o '\.onnx' | wc -l)
       echo "load $n $(echo "$line" | grep -o 'm[0-9]*\.onnx' | tr '\n' ' ')" >> "$log"
       echo "{{\"loaded\": $n}}" ;;
    *'"model":0,'*) echo '{{"ms": [4.0]}}' ;;
    *) echo '{{"ms": [1.0]}}' ;;
  esac
done"#,
            log.display()
        ),
    );
    let out = dir.path().join("pruned");
    let o = prune_macs_timed_on(
        &flags,
        &w,
        "onnxruntime-cpu",
        &["--latency-python", fake.to_str().unwrap()],
        &out,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v = report(&out);
    let r = &v["results"][0];
    assert_eq!(r["label"], "macs-0.5");
    assert!(r.get("latency_target").is_none(), "{r}");
    let l = &r["runtime_latency"];
    assert_eq!(
        (l["batch"].as_u64(), l["threads"].as_u64()),
        (Some(2), Some(1))
    );
    let cut = mac_cut(&v);
    assert!(
        (l["mac_cut"].as_f64().unwrap() - cut).abs() < 1e-9 * cut,
        "{l}"
    );
    // The stand-in's answers: 4 ms before, 1 ms after, a 4× speed-up removing 75%.
    let m = &l["measured"];
    assert_eq!(m["runtime"], "onnxruntime-cpu");
    assert_eq!(m["runtime_version"], "9.9.9");
    for (field, ms) in [("before_ms", 4.0), ("after_ms", 1.0), ("speedup", 4.0)] {
        for q in ["median", "q1", "q3"] {
            assert_eq!(m[field][q].as_f64(), Some(ms), "{field}.{q}: {m}");
        }
    }
    assert_eq!(m["removed"].as_f64(), Some(0.75));
    assert!((m["gain_per_mac_cut"].as_f64().unwrap() - 4.0 / cut).abs() < 1e-9);
    assert_eq!(m["noisy"], false);
    // Printed, and in report.md.
    let line = format!(
        "latency of macs-0.5 measured on onnxruntime-cpu 9.9.9 (batch 2, 1 thread): 75.0% removed (4.000 ms → 1.000 ms, speed-up 4.00× [4.00–4.00]) for a {cut:.2}× MAC cut"
    );
    assert!(stdout(&o).contains(&line), "{}", stdout(&o));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains(&line), "{md}");
    // No table: the model was checked alone (before scoring), then the export timed with
    // the unpruned one.
    let log = std::fs::read_to_string(&log).unwrap();
    let loads: Vec<&str> = log.lines().collect();
    assert_eq!(loads.first().copied(), Some("load 1 m0.onnx "), "{log}");
    assert_eq!(
        loads.last().copied(),
        Some("load 2 m0.onnx m1.onnx "),
        "{log}"
    );
    assert!(
        loads
            .iter()
            .all(|l| l.starts_with("load 1 ") || l.starts_with("load 2 ")),
        "{log}"
    );
    let files = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert!(
        !files.iter().any(|f| f.starts_with("latency-")),
        "{files:?}"
    );

    // An α sweep: every export timed in one set with the unpruned model, on one helper
    // (the check of the model alone, then one load of all of them).
    let log = dir.path().join("log");
    std::fs::remove_file(&log).unwrap();
    let out = dir.path().join("swept");
    let mut args: Vec<&str> = vec!["prune"];
    args.extend(flags.iter().map(String::as_str));
    args.extend([
        "--weights",
        w.to_str().unwrap(),
        "--per-class",
        "8",
        "--alpha-sweep",
        "0.2,0.5,0.8",
        "--latency-on",
        "onnxruntime-cpu",
        "--latency-python",
        fake.to_str().unwrap(),
        "--latency-batch",
        "2",
        "--latency-threads",
        "1",
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]);
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let log = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["load 1 m0.onnx ", "load 4 m0.onnx m1.onnx m2.onnx m3.onnx "],
        "{log}"
    );
    let v = report(&out);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3, "{v}");
    for r in results {
        let l = &r["runtime_latency"];
        assert_eq!(l["measured"]["runtime"], "onnxruntime-cpu", "{r}");
        assert_eq!(
            l["measured"]["speedup"]["median"].as_f64(),
            Some(4.0),
            "{r}"
        );
        let cut = v["before"]["macs"].as_f64().unwrap() / r["after"]["macs"].as_f64().unwrap();
        assert!(
            (l["mac_cut"].as_f64().unwrap() - cut).abs() < 1e-9 * cut,
            "{r}"
        );
    }
}

#[test]
fn a_mac_target_is_timed_on_libtorch_cpu_with_latency_on() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("m.safetensors");
    let (flags, _) = common::train_idx_toy(dir.path(), "mlp", "1", &w);
    let out = dir.path().join("pruned");
    let o = prune_macs_timed_on(&flags, &w, "libtorch-cpu", &["-q"], &out);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = report(&out);
    let l = &v["results"][0]["runtime_latency"];
    assert_eq!(
        (l["batch"].as_u64(), l["threads"].as_u64()),
        (Some(2), Some(1))
    );
    let m = &l["measured"];
    assert_eq!(m["runtime"], "libtorch-cpu");
    assert!(m.get("runtime_version").is_none(), "{m}");
    let speedup = m["speedup"]["median"].as_f64().unwrap();
    assert!(speedup > 0.0, "{m}");
    assert!(m["before_ms"]["median"].as_f64().unwrap() > 0.0, "{m}");
    assert!(m["after_ms"]["median"].as_f64().unwrap() > 0.0, "{m}");
    assert!((m["removed"].as_f64().unwrap() - (1.0 - 1.0 / speedup)).abs() < 1e-9);
    // The MAC cut: the unpruned model's MACs over the pruned one's, as the report counts.
    let cut = mac_cut(&v);
    assert!(cut > 1.0, "{v}");
    assert!(
        (l["mac_cut"].as_f64().unwrap() - cut).abs() < 1e-9 * cut,
        "{l}"
    );
    assert!((m["gain_per_mac_cut"].as_f64().unwrap() * cut - speedup).abs() < 1e-9 * speedup);
    assert!(m["noisy"].is_boolean(), "{m}");

    // --no-latency turns off the timing --latency-on asks for: refused.
    let o = prune_macs_timed_on(&flags, &w, "libtorch-cpu", &["-q", "--no-latency"], &out);
    assert!(!o.status.success());
    assert!(
        stderr(&o)
            .contains("--no-latency: cannot be used with --latency-on without --target-latency"),
        "{}",
        stderr(&o)
    );

    // From a config file, [prune] latency_on cannot be unset by a flag: --no-latency wins,
    // with a note, and nothing is timed.
    let data = dir.path().join("data");
    let config = dir.path().join("run.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nzoo = \"mlp\"\ninput = [1, 8, 8]\nclasses = 2\nweights = {w:?}\n\n\
             [data]\nsource = \"idx\"\npath = {data:?}\n\n\
             [prune]\ntarget_macs = 0.5\nper_class = 8\nlatency_on = \"libtorch-cpu\"\n\
             latency_batch = 2\nout = {out:?}\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let o = run(&["prune", "--config", config, "-q", "--no-latency"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("note: no latency measurement (no-latency): the pruned models are not timed on libtorch-cpu ([prune] latency_on)"),
        "{}",
        stderr(&o)
    );
    let v = report(&out);
    assert!(v["results"][0]["runtime_latency"].is_null(), "{v}");
    assert!(
        v["before"]["latency"]
            .as_array()
            .is_none_or(|l| l.is_empty()),
        "{v}"
    );
    // Without --no-latency the config's latency_on times the export.
    let o = run(&["prune", "--config", config, "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = report(&out);
    let l = &v["results"][0]["runtime_latency"];
    assert_eq!(l["batch"].as_u64(), Some(2), "{l}");
    assert_eq!(l["measured"]["runtime"], "libtorch-cpu", "{l}");
    // A latency key of a latency target given by the config with latency_on: the error
    // names the key, not a flag.
    let config = dir.path().join("tolerance.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nzoo = \"mlp\"\ninput = [1, 8, 8]\nclasses = 2\nweights = {w:?}\n\n\
             [data]\nsource = \"idx\"\npath = {data:?}\n\n\
             [prune]\ntarget_macs = 0.5\nlatency_on = \"libtorch-cpu\"\nlatency_tolerance = 0.1\n"
        ),
    )
    .unwrap();
    let o = run(&["prune", "--config", config.to_str().unwrap(), "-q"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("[prune] latency_tolerance: applies to a latency target only")
            && !e.contains("--latency-tolerance"),
        "{e}"
    );
}

#[test]
fn latency_on_without_a_latency_target_is_checked_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    fair_testkit::write_idx_toy(&data);
    let flags = common::toy_flags("mlp", &data);
    // Never read: the settings are refused first.
    let w = dir.path().join("absent.safetensors");
    let with = |extra: &[&str]| {
        let mut args: Vec<&str> = vec!["prune", "--weights", w.to_str().unwrap()];
        args.extend(flags.iter().map(String::as_str));
        args.extend_from_slice(extra);
        run(&args)
    };
    let o = with(&[
        "--target-macs",
        "0.5",
        "--latency-on",
        "onnxruntime-cpu",
        "--latency-python",
        "/nonexistent/fair-pruner/python3",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(
            "--latency-on: onnxruntime-cpu: cannot run the Python interpreter '/nonexistent/fair-pruner/python3'"
        ) && !e.contains("absent.safetensors"),
        "{e}"
    );
    let o = with(&["--alpha", "0.2", "--latency-on", "cuda"]);
    assert!(!o.status.success());
    if !tch::Cuda::is_available() {
        assert!(stderr(&o).contains("--latency-on: cuda:"), "{}", stderr(&o));
    }
    let o = with(&[
        "--target-macs",
        "0.5",
        "--latency-on",
        "libtorch-cpu",
        "--latency-tolerance",
        "0.1",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(
            "--latency-tolerance: applies to a latency target only: give --target-latency too"
        ),
        "{}",
        stderr(&o)
    );
    // `ratios` builds no model to time.
    let o = run(&[
        "ratios",
        "--scores",
        "absent.json",
        "--target-macs",
        "0.5",
        "--latency-on",
        "libtorch-cpu",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--latency-on without --target-latency applies to `prune` only"),
        "{}",
        stderr(&o)
    );
}
