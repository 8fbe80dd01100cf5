//! Reliability, run as a user would: inputs are never overwritten, output directories are
//! completely old or completely new whatever moment a run is killed, bad input fails fast
//! with a clear message, and nothing panics. Each test is a row of docs/reliability.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{run, run_env, stderr};

/// Runs the binary with `args`, killing it and failing the test if it runs longer than
/// `seconds` (a hang must fail the test, not block it).
fn run_within(seconds: u64, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fair-pruner"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let start = std::time::Instant::now();
    while child.try_wait().expect("waits").is_none() {
        if start.elapsed().as_secs() >= seconds {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "{args:?} ran for more than {seconds} s (killed):\n{}",
                stderr(&o)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Runs `cmd` on the zoo MLP at 1x8x8 with 2 classes (the toy's model) with `extra` flags.
fn mlp(cmd: &str, extra: &[&str]) -> Output {
    let mut args = vec![cmd, "--model", "mlp", "--input", "1x8x8", "--classes", "2"];
    args.extend_from_slice(extra);
    run(&args)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Fails unless `o` failed cleanly: exit status 1 (not a panic's 101 or a signal) and an
/// `error:` line containing every needle.
fn fails_with(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected a clean failure, got {:?}:\n{e}",
        o.status
    );
    assert!(!e.contains("panicked"), "{e}");
    assert!(
        !e.contains('\u{1b}'),
        "no colour codes when stderr is not a terminal: {e:?}"
    );
    for n in needles {
        assert!(e.contains(n), "stderr lacks {n:?}:\n{e}");
    }
}

/// Two classes of 8×8 images as IDX files, and a model trained on them by `train`.
struct Toy {
    dir: tempfile::TempDir,
    common: Vec<String>,
    weights: PathBuf,
}

fn toy(model: &str) -> Toy {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("m.safetensors");
    let (common, _) = common::train_idx_toy(dir.path(), model, "1", &weights);
    Toy {
        dir,
        common,
        weights,
    }
}

impl Toy {
    fn run(&self, cmd: &str, extra: &[&str]) -> Output {
        self.run_env(cmd, extra, &[])
    }
    fn run_env(&self, cmd: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let mut args = vec![cmd];
        args.extend(self.common.iter().map(String::as_str));
        args.extend_from_slice(extra);
        run_env(&args, env)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Every file under `dir` (relative path → bytes), marker included.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(root.join(rel)) else {
            return;
        };
        for e in entries {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                walk(root, &r, out);
            } else {
                out.insert(
                    r.to_string_lossy().into_owned(),
                    std::fs::read(root.join(&r)).unwrap(),
                );
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(dir, Path::new(""), &mut m);
    m
}

fn sha(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

#[test]
fn no_command_writes_over_its_inputs_in_any_spelling() {
    let t = toy("mlp");
    let w = s(&t.weights).to_owned();
    let before = std::fs::read(&t.weights).unwrap();
    let dotted = t.dir.path().join("data/../m.safetensors");
    let link = t.path("link.safetensors");
    std::os::unix::fs::symlink(&t.weights, &link).unwrap();
    let hard = t.path("hard.safetensors");
    std::fs::hard_link(&t.weights, &hard).unwrap();
    let cwd_spelling = format!("./{}", t.weights.file_name().unwrap().to_str().unwrap());
    for out in [
        w.clone(),
        s(&dotted).to_owned(),
        s(&link).to_owned(),
        s(&hard).to_owned(),
    ] {
        for cmd in ["finetune", "calib"] {
            let o = t.run(cmd, &["--weights", &w, "--out", &out, "-q"]);
            fails_with(&o, &["refusing to write", "--weights"]);
        }
        let o = mlp(
            "score",
            &["--weights", &w, "--criteria", "l1", "--out", &out],
        );
        fails_with(&o, &["refusing to write", "--weights"]);
    }
    // `./m.safetensors` from inside the directory.
    let o = Command::new(env!("CARGO_BIN_EXE_fair-pruner"))
        .current_dir(t.dir.path())
        .args([
            "score",
            "--model",
            "mlp",
            "--input",
            "1x8x8",
            "--classes",
            "2",
        ])
        .args([
            "--weights",
            "m.safetensors",
            "--criteria",
            "l1",
            "--out",
            &cwd_spelling,
        ])
        .output()
        .unwrap();
    fails_with(&o, &["refusing to write"]);
    for cmd in ["finetune", "calib"] {
        let mut args = vec![cmd];
        args.extend(t.common.iter().map(String::as_str));
        args.extend(["--weights", "m.safetensors", "--out", &cwd_spelling, "-q"]);
        let o = Command::new(env!("CARGO_BIN_EXE_fair-pruner"))
            .current_dir(t.dir.path())
            .args(&args)
            .output()
            .unwrap();
        fails_with(&o, &["refusing to write", "--weights"]);
    }
    // Single-file outputs of the analysis commands.
    let graph = t.path("g.toml");
    let o = mlp("info", &["--write-graph", s(&graph)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let graph_before = std::fs::read(&graph).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_fair-pruner"))
        .current_dir(t.dir.path())
        .args(["info", "--graph", s(&graph), "--write-graph", "./g.toml"])
        .output()
        .unwrap();
    fails_with(&o, &["refusing to write", "--graph"]);
    assert_eq!(std::fs::read(&graph).unwrap(), graph_before);
    let scores = t.path("scores.json");
    let o = mlp(
        "score",
        &["--weights", &w, "--criteria", "l1", "--out", s(&scores)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let scores_before = std::fs::read(&scores).unwrap();
    let o = run(&[
        "ratios",
        "--scores",
        s(&scores),
        "--remove-by",
        "l1",
        "--protect-by",
        "l1",
        "--alpha",
        "0.3",
        "--write-plan",
        s(&t.dir.path().join("data/../scores.json")),
    ]);
    fails_with(&o, &["refusing to write", "--scores"]);
    assert_eq!(std::fs::read(&scores).unwrap(), scores_before);
    // apply and prune into the directory that holds the model.
    let plan = t.path("plan.json");
    std::fs::write(&plan, r#"{"remove": {"layers.0": [0]}}"#).unwrap();
    let o = mlp(
        "apply",
        &[
            "--weights",
            &w,
            "--plan",
            s(&plan),
            "--out",
            s(t.dir.path()),
        ],
    );
    fails_with(&o, &["refusing to write", "holds the input"]);
    let o = t.run(
        "prune",
        &[
            "--weights",
            &w,
            "--alpha",
            "0.3",
            "--out",
            s(t.dir.path()),
            "-q",
        ],
    );
    fails_with(&o, &["refusing to write", "--weights"]);
    assert_eq!(
        std::fs::read(&t.weights).unwrap(),
        before,
        "the weights are untouched"
    );
}

#[test]
fn a_run_killed_at_any_write_leaves_the_old_or_the_new_directory() {
    let t = toy("mlp");
    let w = s(&t.weights).to_owned();
    let out = t.path("pruned");
    let prune = |alpha: &str, env: &[(&str, &str)]| {
        t.run_env(
            "prune",
            &[
                "--weights",
                &w,
                "--alpha",
                alpha,
                "--per-class",
                "8",
                "--no-latency",
                "--out",
                s(&out),
                "-q",
            ],
            env,
        )
    };
    assert!(prune("0.2", &[]).status.success());
    let old = snapshot(&out);
    assert!(old.contains_key("alpha-0.2/model.safetensors"));
    let mut new = None;
    for n in 1..60 {
        let o = prune("0.5", &[("FAIR_PRUNER_FAIL_AT_WRITE", &n.to_string())]);
        let now = snapshot(&out);
        if o.status.success() {
            new = Some((n, now));
            break;
        }
        assert_eq!(o.status.code(), Some(86), "run {n}: {}", stderr(&o));
        assert_eq!(
            now, old,
            "killed at write {n}: the directory must still be the old one"
        );
    }
    let (steps, new) = new.expect("the run succeeds once no write fails");
    assert!(steps > 5, "the kills covered every write ({steps} steps)");
    assert!(
        new.contains_key("alpha-0.5/model.safetensors")
            && !new.keys().any(|k| k.starts_with("alpha-0.2"))
    );
    // The report lists exactly what the directory holds.
    let report: serde_json::Value = serde_json::from_slice(&new["report.json"]).unwrap();
    let mut listed: Vec<String> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect();
    listed.push(".fair-pruner-output".into());
    listed.sort();
    assert_eq!(listed, new.keys().cloned().collect::<Vec<_>>());
    // The successful run removed what the killed runs left behind.
    let leftovers: Vec<_> = std::fs::read_dir(t.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".pruned."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The same for apply.
    let plan = t.path("plan.json");
    std::fs::write(&plan, r#"{"remove": {"layers.0": [0, 1]}}"#).unwrap();
    let dest = t.path("applied");
    let apply = |env: &[(&str, &str)]| {
        run_env(
            &[
                "apply",
                "--model",
                "mlp",
                "--input",
                "1x8x8",
                "--classes",
                "2",
                "--weights",
                &w,
                "--plan",
                s(&plan),
                "--out",
                s(&dest),
            ],
            env,
        )
    };
    assert!(apply(&[]).status.success());
    let old = snapshot(&dest);
    std::fs::write(&plan, r#"{"remove": {"layers.0": [3, 4, 5]}}"#).unwrap();
    for n in 1..20 {
        let o = apply(&[("FAIR_PRUNER_FAIL_AT_WRITE", &n.to_string())]);
        let now = snapshot(&dest);
        if o.status.success() {
            assert_ne!(
                sha(&now["model.safetensors"]),
                sha(&old["model.safetensors"])
            );
            return;
        }
        assert_eq!(o.status.code(), Some(86), "run {n}: {}", stderr(&o));
        assert_eq!(now, old, "apply killed at write {n}");
    }
    panic!("apply never succeeded");
}

#[test]
fn wrong_numbers_never_leave_with_exit_0() {
    let t = toy("mlp");
    let w = s(&t.weights).to_owned();
    // Weights holding NaN/Inf: every command that loads them refuses, naming the tensor.
    let bad = t.path("nan.safetensors");
    let mut tensors = fair_runtime::read_safetensors(&t.weights, tch::Device::Cpu).unwrap();
    let (name, x) = tensors
        .iter_mut()
        .find(|(n, _)| n == "layers.0.weight")
        .unwrap();
    let _ = x.get(0).get(0).fill_(f64::NAN);
    let name = name.clone();
    fair_runtime::write_safetensors(&bad, &tensors).unwrap();
    let o = t.run("eval", &["--weights", s(&bad)]);
    fails_with(&o, &["non-finite", &name]);
    let o = mlp(
        "score",
        &[
            "--weights",
            s(&bad),
            "--criteria",
            "l1,l2",
            "--out",
            s(&t.path("s.json")),
        ],
    );
    fails_with(&o, &["non-finite", &name]);
    assert!(!t.path("s.json").exists());
    let inf = t.path("inf.safetensors");
    let mut tensors = fair_runtime::read_safetensors(&t.weights, tch::Device::Cpu).unwrap();
    let (inf_name, x) = tensors
        .iter_mut()
        .find(|(n, _)| n == "layers.2.bias")
        .unwrap();
    let _ = x.get(3).fill_(f64::NEG_INFINITY);
    let inf_name = inf_name.clone();
    fair_runtime::write_safetensors(&inf, &tensors).unwrap();
    for cmd in ["eval", "calib", "finetune"] {
        let out = t.path(&format!("inf-{cmd}.safetensors"));
        let mut extra = vec!["--weights", s(&inf), "-q"];
        if cmd != "eval" {
            extra.extend(["--out", s(&out)]);
        }
        let o = t.run(cmd, &extra);
        fails_with(&o, &["non-finite", &inf_name]);
        assert!(!out.exists());
    }

    // A plan made for another model is refused (unless --force); unknown keys too.
    let scores = t.path("scores.json");
    let o = mlp(
        "score",
        &["--weights", &w, "--criteria", "l1,l2", "--out", s(&scores)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let plan = t.path("plan.json");
    let o = run(&[
        "ratios",
        "--scores",
        s(&scores),
        "--remove-by",
        "l1",
        "--protect-by",
        "l2",
        "--alpha",
        "0.5",
        "--write-plan",
        s(&plan),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let other = t.path("other.safetensors");
    fair_runtime::Model::new(
        fair_zoo::build("mlp", &[1, 8, 8], 2).unwrap(),
        tch::Device::Cpu,
        99,
    )
    .unwrap()
    .save_weights(&other)
    .unwrap();
    let apply = |weights: &str, extra: &[&str]| {
        let mut a = vec![
            "apply",
            "--model",
            "mlp",
            "--input",
            "1x8x8",
            "--classes",
            "2",
            "--weights",
            weights,
            "--plan",
            s(&plan),
        ];
        let out = t.path(&format!("out-{}", extra.len()));
        a.extend(["--out", s(&out)]);
        a.extend_from_slice(extra);
        run(&a)
    };
    fails_with(&apply(s(&other), &[]), &["other weights", "--force"]);
    assert!(apply(s(&other), &["--force"]).status.success());
    assert!(apply(&w, &[]).status.success());
    // Another architecture with the same parameter shapes (a ReLU turned into a dropout):
    // the weights load, the plan's graph digest does not match.
    let graph = t.path("g.toml");
    let o = mlp("info", &["--write-graph", s(&graph)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&graph).unwrap();
    assert!(text.contains("type = \"relu\""), "{text}");
    std::fs::write(
        &graph,
        text.replacen("type = \"relu\"", "type = \"dropout\"", 1),
    )
    .unwrap();
    let other_arch = |extra: &[&str]| {
        let mut a = vec![
            "apply",
            "--graph",
            s(&graph),
            "--weights",
            &w,
            "--plan",
            s(&plan),
        ];
        let out = t.path(&format!("arch-{}", extra.len()));
        a.extend(["--out", s(&out)]);
        a.extend_from_slice(extra);
        run(&a)
    };
    fails_with(&other_arch(&[]), &["another architecture", "--force"]);
    assert!(!t.path("arch-0").exists());
    assert!(other_arch(&["--force"]).status.success());
    std::fs::write(&plan, r#"{"remove": {"layers.0": [0]}, "remvoe": {}}"#).unwrap();
    fails_with(&apply(&w, &["--force"]), &["remvoe", "plan.json"]);

    // Targets of 0 or 1 remove nothing or everything: refused.
    for bad in ["0", "1", "-0.1", "1.5"] {
        let o = run(&[
            "ratios",
            "--scores",
            s(&scores),
            "--remove-by",
            "l1",
            "--protect-by",
            "l2",
            "--target-macs",
            bad,
        ]);
        fails_with(&o, &["fraction in (0, 1)"]);
    }
    // A score file edited by hand (a duplicated layer) is refused.
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&scores).unwrap()).unwrap();
    let first = v["layers"][0].clone();
    v["layers"].as_array_mut().unwrap().push(first);
    std::fs::write(&scores, v.to_string()).unwrap();
    let o = run(&[
        "ratios",
        "--scores",
        s(&scores),
        "--remove-by",
        "l1",
        "--protect-by",
        "l2",
        "--alpha",
        "0.3",
    ]);
    fails_with(&o, &["more than once", "scores.json"]);
}

#[test]
fn bad_values_fail_fast_with_the_flag_named() {
    let t = toy("mlp");
    let w = s(&t.weights).to_owned();
    let out = t.path("p");
    let quick = |extra: &[&str]| {
        let start = std::time::Instant::now();
        let mut a = vec!["--weights", w.as_str(), "--out", s(&out), "-q"];
        a.extend_from_slice(extra);
        (t.run("prune", &a), start.elapsed())
    };
    for (extra, needles) in [
        (&["--alpha", "1.5"][..], &["--alpha", "[0, 1]"][..]),
        (&["--alpha", "-0.1"], &["--alpha", "-0.1"]),
        (
            &["--alpha", "0.2", "--finetune-lr=-1"],
            &["--finetune-lr", "-1"],
        ),
        (&["--alpha-sweep", "0.2,0.2"], &["--alpha-sweep", "twice"]),
        // Issue 29: equal after parsing is the same goal.
        (&["--alpha-sweep", "0,-0"], &["--alpha-sweep", "twice"]),
        (
            &["--alpha", "0.2", "--criteria", "u,nope"],
            &["--criteria: unknown criterion 'nope'"],
        ),
        // Issue 25: the library names the signal, the CLI its flag.
        (
            &["--alpha", "0.2", "--remove-by", "nope"],
            &["--remove-by: unknown criterion 'nope' (known: "],
        ),
    ] {
        let (o, took) = quick(extra);
        fails_with(&o, needles);
        assert!(took.as_secs_f64() < 30.0, "{extra:?} took {took:?}");
        assert!(!out.exists(), "{extra:?} wrote output");
    }
    // No weights: the library names the setting, the CLI its flags.
    let o = t.run("prune", &["--alpha", "0.2", "--out", s(&out), "-q"]);
    fails_with(
        &o,
        &[
            "--weights: pruning needs trained weights: --weights FILE",
            "(--graph model.onnx",
        ],
    );
    assert!(!out.exists());
    // clap-level: zero threads, a negative epoch count.
    let o = t.run("eval", &["--weights", &w, "--threads", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--threads"), "{}", stderr(&o));
    // Training refuses a bad --out before it trains.
    let start = std::time::Instant::now();
    let o = t.run("train", &["--epochs", "50", "--out", s(t.dir.path())]);
    fails_with(&o, &["--out"]);
    assert!(start.elapsed().as_secs_f64() < 20.0);
    // Labels beyond the model's outputs in a calibration file: refused before scoring.
    let cal = t.path("cal.safetensors");
    let x = tch::Tensor::zeros([4, 1, 8, 8], (tch::Kind::Float, tch::Device::Cpu));
    let y = tch::Tensor::from_slice(&[0i64, 1, 5, 1]);
    fair_runtime::write_safetensors(&cal, &[("inputs".into(), x), ("labels".into(), y)]).unwrap();
    let o = t.run(
        "prune",
        &[
            "--weights",
            &w,
            "--alpha",
            "0.3",
            "--calibration",
            s(&cal),
            "--out",
            s(&out),
            "-q",
        ],
    );
    fails_with(&o, &["sample 2", "2 outputs"]);
    assert!(
        !stderr(&o).contains("libtorch") && stderr(&o).lines().count() < 5,
        "{}",
        stderr(&o)
    );
}

#[test]
fn no_input_makes_it_panic_hang_or_abort() {
    let dir = tempfile::tempdir().unwrap();
    // Huge sizes in a graph: a clear error, not SIGABRT.
    let huge = dir.path().join("huge.toml");
    std::fs::write(&huge, "name = \"x\"\n[[nodes]]\nname = \"input\"\nop = { type = \"input\", shape = [3, 8, 8] }\n[[nodes]]\nname = \"fc\"\nop = { type = \"flatten\" }\n[[nodes]]\nname = \"l\"\nop = { type = \"linear\", in_features = 192, out_features = 1000000000 }\n").unwrap();
    let o = run(&["info", "--graph", s(&huge)]);
    assert!(o.status.success(), "info only counts: {}", stderr(&o));
    let w = dir.path().join("w.safetensors");
    std::fs::write(&w, b"").unwrap();
    let o = run(&[
        "apply",
        "--graph",
        s(&huge),
        "--weights",
        s(&w),
        "--plan",
        s(&w),
        "--out",
        s(&dir.path().join("o")),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = run(&[
        "score",
        "--graph",
        s(&huge),
        "--weights",
        s(&w),
        "--criteria",
        "l1",
        "--out",
        s(&dir.path().join("s.json")),
    ]);
    fails_with(&o, &["memory"]);
    // Devices and directories as input files: refused at once.
    for input in ["/dev/zero", "/dev/null", s(dir.path())] {
        let start = std::time::Instant::now();
        let o = mlp(
            "score",
            &[
                "--weights",
                input,
                "--criteria",
                "l1",
                "--out",
                s(&dir.path().join("s.json")),
            ],
        );
        assert_eq!(o.status.code(), Some(1), "{input}: {}", stderr(&o));
        assert!(start.elapsed().as_secs_f64() < 20.0, "{input}");
        let o = run(&["info", "--graph", input]);
        assert_eq!(o.status.code(), Some(1), "{input}: {}", stderr(&o));
        let o = run(&["ratios", "--scores", input, "--alpha", "0.1"]);
        assert_eq!(o.status.code(), Some(1), "{input}: {}", stderr(&o));
    }
    // A closed pipe: no panic message.
    let mut child = Command::new(env!("CARGO_BIN_EXE_fair-pruner"))
        .args(["info", "--model", "densenet121"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

#[test]
fn error_messages_say_each_thing_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.safetensors");
    let o = mlp(
        "score",
        &[
            "--weights",
            s(&missing),
            "--criteria",
            "l1",
            "--out",
            s(&dir.path().join("s.json")),
        ],
    );
    fails_with(&o, &["missing.safetensors"]);
    let e = stderr(&o);
    assert_eq!(e.matches("os error 2").count(), 1, "{e}");
    assert_eq!(
        e.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{e}"
    );
    // A truncated weights file: the safetensors problem in words.
    let cut = dir.path().join("cut.safetensors");
    let mut bytes = 100u64.to_le_bytes().to_vec();
    bytes.extend(b"{\"a\":");
    std::fs::write(&cut, bytes).unwrap();
    let o = mlp(
        "score",
        &[
            "--weights",
            s(&cut),
            "--criteria",
            "l1",
            "--out",
            s(&dir.path().join("s.json")),
        ],
    );
    fails_with(&o, &["cut.safetensors", "header length"]);
}

#[test]
fn json_output_on_every_reporting_command() {
    let t = toy("mlp");
    let w = s(&t.weights).to_owned();
    let json = |o: &Output| -> serde_json::Value {
        assert!(o.status.success(), "{}", stderr(o));
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
    };
    // Each reads back as its library type (unknown keys are refused), which writes the same
    // JSON again.
    fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(v: &serde_json::Value) -> T {
        let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"));
        assert_eq!(&serde_json::to_value(&t).unwrap(), v);
        t
    }
    let v = json(&t.run("eval", &["--weights", &w, "--json"]));
    assert!(v["top1"].as_f64().unwrap() > 0.5);
    let e: fair_train::EvalReport = typed(&v);
    assert_eq!(e.split, v["split"]);
    let trained = t.path("t.safetensors");
    let v = json(&t.run("train", &["--epochs", "1", "--out", s(&trained), "--json"]));
    let r: fair_train::TrainReport = typed(&v);
    assert_eq!((r.epochs.len(), r.out), (1, trained));
    let scores = t.path("s.json");
    let v = json(&mlp(
        "score",
        &[
            "--weights",
            &w,
            "--criteria",
            "l1,l2",
            "--out",
            s(&scores),
            "--json",
        ],
    ));
    assert_eq!(v["layers"], 2);
    let r: fair_analysis::ScoreReport = typed(&v);
    assert_eq!(r.provenance.criteria.len(), 2);
    let plan = t.path("plan.json");
    std::fs::write(&plan, r#"{"remove": {"layers.0": [0]}}"#).unwrap();
    let v = json(&mlp(
        "apply",
        &[
            "--weights",
            &w,
            "--plan",
            s(&plan),
            "--out",
            s(&t.path("a")),
            "--json",
        ],
    ));
    assert!(
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "model.py")
    );
    let r: fair_surgery::ApplyReport = typed(&v);
    assert_eq!(r.report.layers[0].layer, "layers.0");
    assert_eq!(r.report.layers[0].units, (512, 511));
    let v = json(&t.run(
        "prune",
        &[
            "--weights",
            &w,
            "--alpha",
            "0.3",
            "--per-class",
            "8",
            "--out",
            s(&t.path("p")),
            "--json",
        ],
    ));
    assert_eq!(v["schema_version"], fair_pipeline::REPORT_SCHEMA_VERSION);
    let lat = &v["results"][0]["after"]["latency"][0];
    assert!(lat["ms"]["q1"].as_f64().unwrap() <= lat["ms"]["median"].as_f64().unwrap());
    assert!(lat["speedup"]["median"].as_f64().unwrap() > 0.0);
}

/// Issue 29: output paths are judged where the kernel resolves them (a directory that does
/// not exist yet, then `..`, then a symbolic link), dataset files and the dataset cache are
/// inputs, and no command replaces a symbolic link or a directory it did not write.
#[test]
fn outputs_are_judged_where_the_kernel_resolves_them() {
    let t = toy("mlp");
    let w = s(&t.weights).to_owned();
    let d = t.dir.path();
    let before = std::fs::read(&t.weights).unwrap();
    // `link` leads back to the directory that holds the weights, the config and the data.
    std::os::unix::fs::symlink(d, t.path("link")).unwrap();
    let cfg = t.path("run.toml");
    std::fs::write(&cfg, "[prune]\nalpha = 0.3\n").unwrap();
    let cfg_before = std::fs::read(&cfg).unwrap();
    let data = t.path("data");
    let data_before = snapshot(&data);
    let through = |rest: &str| s(&d.join("missing/../link").join(rest)).to_owned();
    // Single files: the weights and the config, spelled through a missing directory.
    for cmd in ["calib", "train", "finetune"] {
        let o = t.run(
            cmd,
            &["--weights", &w, "--out", &through("m.safetensors"), "-q"],
        );
        fails_with(&o, &["refusing to write", "--weights"]);
        let o = t.run(
            cmd,
            &[
                "--weights",
                &w,
                "--config",
                s(&cfg),
                "--out",
                &through("run.toml"),
                "-q",
            ],
        );
        fails_with(&o, &["refusing to write", "--config"]);
        // Files inside --data-path are inputs too, however spelled.
        for out in [
            s(&data.join("train-images-idx3-ubyte")).to_owned(),
            through("data/train-labels-idx1-ubyte"),
            through("data/new.safetensors"),
        ] {
            let o = t.run(cmd, &["--weights", &w, "--out", &out, "-q"]);
            fails_with(&o, &["refusing to write", "--data-path"]);
        }
    }
    let o = mlp(
        "score",
        &[
            "--weights",
            &w,
            "--criteria",
            "l1",
            "--out",
            &through("m.safetensors"),
        ],
    );
    fails_with(&o, &["refusing to write", "--weights"]);
    // The dataset cache is an input of every command that writes.
    let cache = t.path("cache");
    let cache_s = s(&cache).to_owned();
    let in_cache = format!("{cache_s}/data/x");
    let env = [("FAIR_PRUNER_CACHE", cache_s.as_str())];
    let o = t.run_env("calib", &["--weights", &w, "--out", &in_cache, "-q"], &env);
    fails_with(&o, &["refusing to write", "dataset cache"]);
    let scores = t.path("l1.json");
    let o = mlp(
        "score",
        &["--weights", &w, "--criteria", "l1", "--out", s(&scores)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let plan_file = t.path("p.json");
    std::fs::write(&plan_file, r#"{"remove": {"layers.0": [0]}}"#).unwrap();
    let zoo = ["--model", "mlp", "--input", "1x8x8", "--classes", "2"];
    for args in [
        [
            &["score"][..],
            &zoo,
            &["--weights", &w, "--criteria", "l1", "--out", &in_cache],
        ]
        .concat(),
        [&["info"][..], &zoo, &["--write-graph", &in_cache]].concat(),
        vec![
            "ratios",
            "--scores",
            s(&scores),
            "--uniform",
            "--rank-by",
            "l1",
            "--target-macs",
            "0.3",
            "--write-plan",
            &in_cache,
        ],
        [
            &["apply"][..],
            &zoo,
            &["--weights", &w, "--plan", s(&plan_file), "--out", &in_cache],
        ]
        .concat(),
    ] {
        let o = run_env(&args, &env);
        fails_with(&o, &["refusing to write", "dataset cache"]);
    }
    // Directories: never the one that holds the inputs, however spelled.
    let plan = t.path("plan.json");
    std::fs::write(&plan, r#"{"remove": {"layers.0": [0]}}"#).unwrap();
    let o = mlp(
        "apply",
        &["--weights", &w, "--plan", s(&plan), "--out", &through("")],
    );
    fails_with(&o, &["refusing to write", "holds the input"]);
    let o = t.run(
        "prune",
        &[
            "--weights",
            &w,
            "--alpha",
            "0.3",
            "--out",
            &through("."),
            "-q",
        ],
    );
    fails_with(&o, &["refusing to write", "--weights"]);
    let o = t.run(
        "prune",
        &[
            "--weights",
            &w,
            "--alpha",
            "0.3",
            "--out",
            &through("data"),
            "-q",
        ],
    );
    fails_with(&o, &["refusing to write", "--data-path"]);
    // A user's non-empty directory, reached through the same spelling.
    let mine = t.path("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("thesis.tex"), b"!").unwrap();
    let o = mlp(
        "apply",
        &[
            "--weights",
            &w,
            "--plan",
            s(&plan),
            "--out",
            &through("mine"),
        ],
    );
    fails_with(&o, &["refusing to write", "did not write"]);
    assert_eq!(std::fs::read(mine.join("thesis.tex")).unwrap(), b"!");
    // Symbolic links the user made are never replaced, even when they lead nowhere harmful.
    let target = t.path("elsewhere.json");
    std::fs::write(&target, b"mine").unwrap();
    let flink = t.path("flink.json");
    std::os::unix::fs::symlink(&target, &flink).unwrap();
    let o = mlp(
        "score",
        &["--weights", &w, "--criteria", "l1", "--out", s(&flink)],
    );
    fails_with(&o, &["refusing to write", "symbolic link"]);
    assert_eq!(std::fs::read(&target).unwrap(), b"mine");
    std::fs::create_dir(t.path("outdir")).unwrap();
    let dlink = t.path("dlink");
    std::os::unix::fs::symlink(t.path("outdir"), &dlink).unwrap();
    let o = mlp(
        "apply",
        &["--weights", &w, "--plan", s(&plan), "--out", s(&dlink)],
    );
    fails_with(&o, &["refusing to write", "symbolic link"]);
    assert!(std::fs::symlink_metadata(&dlink).unwrap().is_symlink());
    // A file a user put into fair-pruner's own output keeps it from being replaced.
    let out = t.path("pruned");
    let o = mlp(
        "apply",
        &["--weights", &w, "--plan", s(&plan), "--out", s(&out)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    let o = mlp(
        "apply",
        &["--weights", &w, "--plan", s(&plan), "--out", s(&out)],
    );
    fails_with(&o, &["refusing to write", "notes.txt", "did not write"]);
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
    // The same spelling leading to a new place works, and writes where the kernel puts it.
    let o = mlp(
        "score",
        &[
            "--weights",
            &w,
            "--criteria",
            "l1",
            "--out",
            &through("runs/s.json"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(t.path("runs/s.json").is_file());
    // Nothing read was changed, and no refused run created a directory.
    assert_eq!(std::fs::read(&t.weights).unwrap(), before);
    assert_eq!(std::fs::read(&cfg).unwrap(), cfg_before);
    assert_eq!(snapshot(&data), data_before);
    assert!(!t.path("missing").exists());
    assert!(!cache.exists());
}

/// Issue 29: cheap limits fail before any data is loaded, runaway thread counts are capped
/// with a note, and an ONNX `--graph` supplies its weights wherever `--help` says so.
#[test]
fn cheap_limits_come_first_and_onnx_graphs_carry_their_weights() {
    let t = toy("mlp");
    let w = s(&t.weights).to_owned();
    // Corrupt data: a run that loaded it would fail on it, not on --max-memory.
    let bad_data = t.path("bad-data");
    std::fs::create_dir(&bad_data).unwrap();
    for f in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte"] {
        std::fs::write(bad_data.join(f), b"not idx").unwrap();
    }
    let o = mlp(
        "prune",
        &[
            "--data",
            "idx",
            "--data-path",
            s(&bad_data),
            "--weights",
            &w,
            "--alpha",
            "0.3",
            "--max-memory",
            "1B",
            "--out",
            s(&t.path("p")),
            "-q",
        ],
    );
    fails_with(&o, &["max-memory", "before loading any data"]);
    let o = mlp(
        "score",
        &[
            "--weights",
            &w,
            "--criteria",
            "u",
            "--max-memory",
            "1B",
            "--calibration",
            "/dev/zero",
            "--out",
            s(&t.path("s.json")),
        ],
    );
    fails_with(&o, &["max-memory", "model's parameters"]);
    // --threads beyond the machine's cores: capped, with a note.
    let o = t.run("eval", &["--weights", &w, "--threads", "100000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--threads 100000 is more than the"),
        "{}",
        stderr(&o)
    );
    // An exported ONNX model evaluates and fine-tunes without --weights.
    let plan = t.path("plan.json");
    std::fs::write(&plan, r#"{"remove": {"layers.0": [0]}}"#).unwrap();
    let out = t.path("applied");
    let o = mlp(
        "apply",
        &["--weights", &w, "--plan", s(&plan), "--out", s(&out)],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let onnx = out.join("model.onnx");
    let data = t.path("data");
    let idx = |cmd: &str, extra: &[&str]| {
        let mut args = vec![
            cmd,
            "--graph",
            s(&onnx),
            "--classes",
            "2",
            "--data",
            "idx",
            "--data-path",
            s(&data),
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let o = idx("eval", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("top-1"));
    let tuned = t.path("tuned.safetensors");
    let o = idx(
        "finetune",
        &[
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--out",
            s(&tuned),
            "-q",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(tuned.is_file());
    // An IR graph still needs its weights, and says so.
    let o = run(&[
        "eval",
        "--graph",
        s(&out.join("model.toml")),
        "--classes",
        "2",
        "--data",
        "idx",
        "--data-path",
        s(&data),
    ]);
    fails_with(&o, &["--weights", "ONNX"]);
}

/// Issue 29: a hostile ImageFolder (a link loop, a link into another class, a FIFO named
/// like an image) and an allocation-sizing setting far beyond the input end in a clear error
/// or a reported skip, never a hang, a wrong label or an abort.
#[test]
fn hostile_folders_and_settings_fail_cleanly_or_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("folder");
    for split in ["train", "test"] {
        for (c, v) in [("a", 30u8), ("b", 220u8)] {
            let d = root.join(split).join(c);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..4 {
                image::GrayImage::from_pixel(8, 8, image::Luma([v + i]))
                    .save(d.join(format!("{i}.png")))
                    .unwrap();
            }
        }
    }
    std::os::unix::fs::symlink("..", root.join("train/a/loop")).unwrap();
    std::os::unix::fs::symlink("../b", root.join("train/a/bs")).unwrap();
    let weights = dir.path().join("m.safetensors");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "--model",
            "mlp",
            "--input",
            "1x8x8",
            "--classes",
            "2",
            "--data",
            "folder",
            "--data-path",
            s(&root),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--out",
            s(&weights),
        ];
        args.extend_from_slice(extra);
        run_within(60, &args)
    };
    let o = train(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("note:") && e.contains("loop") && e.contains("bs"),
        "{e}"
    );
    // The 8 real training images, not those reached again through the links.
    assert!(e.contains("(8 train / 8 test images)"), "{e}");
    // A FIFO named like an image: refused by name, without blocking.
    let status = Command::new("mkfifo")
        .arg(root.join("train/b/pipe.png"))
        .status()
        .unwrap();
    assert!(status.success());
    let o = train(&[]);
    fails_with(&o, &["pipe.png", "FIFO"]);
    std::fs::remove_file(root.join("train/b/pipe.png")).unwrap();
    // A crop padding that would make libtorch allocate terabytes: refused before loading.
    let cfg = dir.path().join("pad.toml");
    std::fs::write(&cfg, "[transform]\naugment = { crop_padding = 100000 }\n").unwrap();
    let o = train(&["--config", s(&cfg)]);
    fails_with(&o, &["crop_padding = 100000", "0..=8"]);
}

/// Issue 29: a bind mount is one more spelling of a data directory (containers mount data
/// twice): an output through it is judged by the directories' identity, not their path.
/// Needs `unshare -m` and `mount` (root in a private mount namespace); skipped where the
/// machine does not allow it.
#[test]
fn a_bind_mount_of_the_data_directory_is_still_the_data_directory() {
    let t = toy("mlp");
    let d = t.dir.path();
    let bind = t.path("bind");
    std::fs::create_dir(&bind).unwrap();
    let data = t.path("data");
    let before = snapshot(&data);
    let probe = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!("mount --bind {} {}", s(&data), s(&bind)))
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: this machine does not allow `unshare -m` + `mount --bind`");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_fair-pruner");
    let common = t.common.join(" ");
    let script = format!(
        "mount --bind {data} {bind} && cd {dir} && \
         {bin} calib {common} --weights {w} --out {bind}/train-images-idx3-ubyte -q; echo rc=$?; \
         {bin} calib {common} --weights {w} --out {bind}/new.safetensors -q; echo rc=$?",
        data = s(&data),
        bind = s(&bind),
        dir = s(d),
        w = s(&t.weights),
    );
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = stderr(&o);
    assert_eq!(out.matches("rc=1").count(), 2, "{out}\n{err}");
    assert_eq!(err.matches("lies inside --data-path").count(), 2, "{err}");
    assert_eq!(snapshot(&data), before, "the data changed");
}

/// Issue 29, second probe: values that used to abort or panic are refused by name, and an
/// error quoting a hostile file never sends escape sequences to the terminal.
#[test]
fn runaway_values_and_hostile_text_fail_cleanly() {
    let t = toy("mlp");
    let w = s(&t.weights).to_owned();
    let out = s(&t.path("o.safetensors")).to_owned();
    for (extra, needles) in [
        (&["--epochs", "4294967296"][..], &["--epochs", "100000"][..]),
        (&["--epochs", "1", "--lr", "1e39"], &["--lr", "float32"]),
    ] {
        let o = t.run("train", &[&["--out", &out, "-q"][..], extra].concat());
        fails_with(&o, needles);
    }
    let o = t.run(
        "prune",
        &[
            "--weights",
            &w,
            "--alpha",
            "0.2",
            "--finetune-epochs",
            "1",
            "--finetune-lr",
            "1e39",
            "--out",
            s(&t.path("p")),
            "-q",
        ],
    );
    fails_with(&o, &["--finetune-lr", "float32"]);
    let calib = t.path("c.safetensors");
    let o = t.run("calib", &["--weights", &w, "--out", s(&calib), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = mlp(
        "score",
        &[
            "--weights",
            &w,
            "--calibration",
            s(&calib),
            "--criteria",
            "u",
            "--projections",
            "18446744073709551615",
            "--out",
            s(&t.path("s.json")),
        ],
    );
    fails_with(&o, &["projections", "at most"]);
    // A config whose value holds terminal escapes: quoted escaped (fails_with also checks that
    // stderr holds no ESC byte).
    let cfg = t.path("esc.toml");
    std::fs::write(&cfg, "[model]\nzoo = \"mlp\u{1b}[2J\u{1b}[31mPWNED\"\n").unwrap();
    let o = run(&["train", "--config", s(&cfg), "--out", &out]);
    fails_with(&o, &["esc.toml", "\\u{1b}"]);
}
