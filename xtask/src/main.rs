//! `cargo xtask`: project automation for fair-pruner.
//!
//! - `cargo xtask setup`  — provision libtorch 2.11.0 (and the Python reference environment
//!   used by cross-check tests) and wire this checkout so plain `cargo build` / `cargo test`
//!   work and built binaries find libtorch at run time.
//! - `cargo xtask test [ARGS]` — setup, then `cargo test --workspace --no-fail-fast [ARGS] --
//!   --include-ignored` (tests needing the reference Python or npm are `#[ignore]`d so that a
//!   bare `cargo test -p <pure crate>` passes), the library examples, and the pipeline
//!   README's config example against `fair-pruner prune` (one training epoch).
//! - `cargo xtask demo` — setup, then the built-in demo (the README's main job).
//! - `cargo xtask bench scoring` — our scoring against the authors' package, same run.
//! - `cargo xtask bench compare` — FAIR-Pruner against the authors' package, uniform L1
//!   (ours and Torch-Pruning) and ToD + L1, same fine-tuning budget; tables in docs/results.md.
//! - `cargo xtask bench onnx-coverage` — every torchvision classification model through
//!   ONNX: import, outputs against ONNX Runtime, prunable groups, a verified random plan;
//!   table in docs/onnx.md.
//! - `cargo xtask bench ablation` — FAIR-Pruner variants against uniform and Torch-Pruning
//!   baselines at equal MACs over seeds; table in docs/results.md, charts in docs/.
//! - `cargo xtask bench latency` — `fair-pruner prune --target-latency 0.5` on libtorch CPU
//!   and ONNX Runtime CPU against `--target-macs` at equal MACs (the release CLI, built
//!   first, run as a user runs it); target/bench/latency/.
//! - `cargo xtask bench python` — the Python package: one prune job through the CLI and
//!   through `fp.prune` (ratio), `fp.score` against the authors' package; target/bench/python/.
//!
//! Provisioning: `LIBTORCH` is used when set. Otherwise a Python virtual environment with
//! `torch==2.11.0` from the Python package index (its wheel carries libtorch) is created in a
//! per-user cache outside the checkout — `$FAIR_PRUNER_CACHE`, else
//! `$XDG_CACHE_HOME/fair-pruner`, else `~/.cache/fair-pruner` — and reused by every checkout
//! and CI run. The same environment holds torchvision, SciPy, safetensors, the authors'
//! `network-pruner` package, Torch-Pruning, and onnx / onnxruntime / onnxscript for the
//! cross-check tests (`FAIR_PRUNER_PYTHON` overrides which Python they use). The wiring is
//! written to `.cargo/libtorch.toml` (git-ignored), which `.cargo/config.toml` includes.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

mod bench;

/// The libtorch version tch 0.24 is built against.
const TORCH_VERSION: &str = "2.11.0";

/// What the reference Python environment holds. Changing this list re-runs pip once.
const REQUIREMENTS: &[&str] = &[
    "torch==2.11.0",
    "torchvision==0.26.0",
    "numpy",
    "scipy",
    "safetensors",
    "network-pruner==2.16",
    "torch-pruning==1.6.1",
    // ONNX cross-checks: the checker, ONNX Runtime as the reference executor, and onnxscript
    // for torch.onnx.export(dynamo=True). Tests only: the product reads and writes ONNX in Rust.
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
    "onnxscript==0.7.2",
    // timm's ViT and DeiT classes, exported in configurations no fixture has
    // (crates/cli/tests/variants.rs; the fixtures themselves are checked in).
    "timm==1.0.15",
];

const HELP: &str = "\
cargo xtask — fair-pruner project automation

USAGE:
    cargo xtask setup          provision libtorch + the Python reference env, wire the build
    cargo xtask test [ARGS]    setup, then `cargo test --workspace [ARGS] -- --include-ignored`
                               (tests that need the reference Python or npm included) and
                               the library examples (prune_resnet, the APoZ criterion), then
                               the Python wheel's pytest suite (crates/python/tests; maturin
                               and pytest are installed into the reference env on first use)
    cargo xtask demo           setup, then the built-in demo (the README's main job): Fashion-MNIST,
                               train, score, prune at several α, fine-tune, summary table
    cargo xtask bench scoring  [--threads N --classes K --per-class N]
                               time fair-pruner's U+R scoring against the authors' get_metrics
                               on CIFAR VGG16-BN (same model, samples and machine), print the ratio
    cargo xtask bench compare  [--alphas 0.05,0.2,0.4,0.6 --nets vgg,resnet --train-epochs 3
                                --finetune-epochs 1 --per-class 32 --threads 2 --no-docs
                                --tables-only (rebuild the tables from stored results)]
                               FAIR-Pruner vs network-pruner 2.16, uniform L1 (ours and
                               Torch-Pruning) and ToD + L1 on Fashion-MNIST, same fine-tune
                               budget; writes the tables into docs/results.md (~30 min
                               on 2 cores after training, which the first run adds)
    cargo xtask bench ablation [--nets vgg,resnet,vit --seeds 0,1,2 --macs 0.3,0.5,0.7
                                --finetune-epochs 1,5 --methods fair-paper,... --val-per-class 500
                                --train-epochs 3 --finetune-fraction F --per-class 32 --threads 2
                                --distill W --reconstruct --latency-target F --latency-on RT
                                --latency-batch N --latency-threads N --latency-tolerance F
                                --no-docs --tables-only]
                               FAIR-Pruner variants (fair-paper and one change each) vs uniform L1
                               (ours, Torch-Pruning) and Torch-Pruning global Taylor / group norm
                               / isomorphic (heads and MLP neurons on the ViT, `--nets vit`)
                               at equal MACs, mean ± std over seeds: one-shot, + BN recalibration,
                               fine-tuned with and without distillation (validation and test);
                               --reconstruct refits every method's readers first (rows kept apart);
                               runs over subsets of methods add up; table in docs/results.md and
                               docs/ablation-<net>.svg (hours on 2 cores at the defaults);
                               --latency-target F compares at equal measured latency instead:
                               fair-latency (the default at a latency target) and each other
                               method at the MACs target whose latency matches, all timed
                               together (own result files, table and charts)
                               All run the fair-bench crate (crates/bench) through the
                               libraries: cargo run --release -p fair-bench -- <bench> --help
    cargo xtask bench onnx-coverage [--models resnet18,... --exporter ts|dynamo --size 224 --no-docs]
                               every classification model of torchvision.models through ONNX:
                               imported, outputs equal to ONNX Runtime (1e-4), prunable groups,
                               a random plan verified (dead units, onnx.checker, ONNX Runtime
                               on the pruned export); table in docs/onnx.md (exports cached)
    cargo xtask bench scale-classes [--rows 100x32,1000x8,1000x32 --size 224 --noise 1
                                --all-pairs-units 8|all --max-memory 8GiB --threads 2]
                               ResNet-50's U-Score (random weights) on synthetic data with
                               class structure (pattern per class + noise, in memory): bounded
                               class-pair search against all pairs (estimated from N units per
                               layer, checked bit for bit), time profile, one forward pass,
                               peak RSS, issue 26's goals; target/bench/scale-classes/
    cargo xtask bench latency  [--full --models resnet20,... --runtimes libtorch-cpu,onnxruntime-cpu,pytorch-cpu
                                --target 0.5 --threads 1 --classes 4 --per-class 4 --out DIR]
                               builds the release CLI, then per model x runtime x batch:
                               `fair-pruner prune --target-latency 0.5` and `--target-macs` at
                               the MACs it removed; achieved latency against the target (median
                               [IQR]), MACs removed, latency gain / MAC cut, issue 27's goals;
                               quick set: zoo ResNet-20 and VGG-16-BN at 32x32, batch 1 (a few
                               minutes); --full: ResNet-50 224² (batch 1, 32), ResNet-56,
                               VGG-16-BN and MobileNetV2 from ONNX (hours); target/bench/latency/
    cargo xtask bench python   [--repeats 5 --threads 2 --classes 10 --per-class 32 --no-reference]
                               the Python package (release wheel in a new venv): the same prune
                               job (resnet18, 32×32) through the CLI and through fp.prune,
                               interleaved, median ratio Python/CLI; fp.score against the
                               authors' get_metrics (as bench scoring); Markdown on stdout and
                               in target/bench/python/
    cargo xtask gpu-check      [--models vgg16_bn_cifar,resnet50 --classes K --per-class N
                                --batch N --no-cpu --pairs-row 100x8 --pairs-size 64]
                               score (U+R), surgery, a fine-tuning step and latency on CUDA and
                               on the CPU, same run; prints CUDA / CPU times and the ratio, and
                               a class-pair row (device engine vs host bounded search, CUDA only)
                               (CUDA figures 'pending' without a GPU). On a machine without
                               Rust, run a copied target/release/fair-bench gpu-check instead

ENVIRONMENT:
    LIBTORCH            use this libtorch 2.11.0 directory instead of the cached wheel
    FAIR_PRUNER_CACHE   cache directory (default: $XDG_CACHE_HOME/fair-pruner or ~/.cache/fair-pruner)
    FAIR_PRUNER_PYTHON  Python with torch, torchvision, scipy, safetensors, onnx, onnxruntime for cross-checks
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup().map(|s| s.print()),
        Some("test") => setup().and_then(|s| test(&s, &rest(&args))),
        Some("demo") => setup().and_then(|_| demo()),
        Some("bench") => setup().and_then(|s| bench::run(&s, &rest(&args))),
        Some("gpu-check") => setup().and_then(|_| {
            let mut a = vec![
                "run",
                "--release",
                "--quiet",
                "-p",
                "fair-bench",
                "--",
                "gpu-check",
            ];
            a.extend(rest(&args));
            cargo(&a)
        }),
        Some("-h" | "--help" | "help") | None => {
            print!("{HELP}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown xtask command '{other}'\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn rest(args: &[String]) -> Vec<&str> {
    args.iter().skip(1).map(String::as_str).collect()
}

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_owned()
}

/// Runs cargo in the workspace root, failing when it fails.
pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The whole test suite: every test of the workspace, including those marked `#[ignore]`
/// because they need the reference Python or the npm registry (setup provides both), then
/// the library examples, run as a user would, and the Python wheel's pytest suite.
fn test(setup: &Setup, extra: &[&str]) -> Result<()> {
    let (cargo_args, test_args) = match extra.iter().position(|a| *a == "--") {
        Some(i) => (&extra[..i], &extra[i + 1..]),
        None => (extra, &[][..]),
    };
    cargo(
        &[
            &["test", "--workspace", "--no-fail-fast"],
            cargo_args,
            &["--", "--include-ignored"],
            test_args,
        ]
        .concat(),
    )?;
    let out = workspace_root().join("target/examples");
    for (package, example, dir) in [
        ("fair-pipeline", Some("prune_resnet"), "resnet20-pruned"),
        ("fair-example-apoz", None, "vgg11-apoz"),
    ] {
        let dir = out.join(dir).display().to_string();
        let mut args = vec!["run", "--quiet", "-p", package];
        if let Some(e) = example {
            args.extend(["--example", e]);
        }
        args.extend(["--", dir.as_str()]);
        cargo(&args)?;
    }
    readme_config_example(&out.join("from-config"))?;
    python_wheel_tests(setup)
}

/// The Python package's pytest suite (`crates/python/tests`): builds the wheel with maturin,
/// installs it into a throwaway venv on the cached torch and prunes through `fair_pruner`.
/// maturin and pytest are installed into the reference environment on first use; when they
/// cannot be installed (no package index), the suite is skipped with a message saying so.
fn python_wheel_tests(setup: &Setup) -> Result<()> {
    let Some(python) = &setup.python else {
        eprintln!("xtask: skipping the Python wheel tests: no reference Python");
        return Ok(());
    };
    let has = |what: &str| {
        Command::new(python)
            .args(["-c", &format!("import {what}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has("maturin, pytest") {
        eprintln!(
            "xtask: installing maturin and pytest into {}",
            python.display()
        );
        let installed = Command::new(python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .args(["maturin>=1.9,<2", "pytest"])
            .status()
            .is_ok_and(|s| s.success());
        if !installed || !has("maturin, pytest") {
            eprintln!(
                "xtask: skipping the Python wheel tests (crates/python/tests): maturin and pytest \
                 could not be installed into {} (pip needs the Python package index)",
                python.display()
            );
            return Ok(());
        }
    }
    let status = Command::new(python)
        .args(["-m", "pytest", "-q", "crates/python/tests"])
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot run {} -m pytest", python.display()))?;
    if !status.success() {
        bail!("the Python wheel tests (crates/python/tests) failed ({status})");
    }
    Ok(())
}

/// The pipeline README's "From a config" example (`crates/pipeline/examples/from_config.rs`,
/// kept equal to the README by `xtask/tests/docs.rs`) makes the run `fair-pruner prune` makes:
/// `configs/fashion-vgg.toml` trained for one epoch, then the CLI and the example on the same
/// config, weights and α sweep. Their reports must agree on everything but timings (the
/// files each wrote included), and the exported plans and weights must be the same bytes.
fn readme_config_example(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = "configs/fashion-vgg.toml";
    let path = |name: &str| dir.join(name).display().to_string();
    let (weights, cli, library) = (path("model.safetensors"), path("cli"), path("library"));
    let cli_run = |args: &[&str]| {
        cargo(
            &[
                &[
                    "run",
                    "--quiet",
                    "-p",
                    "fair-cli",
                    "--bin",
                    "fair-pruner",
                    "--",
                ],
                args,
            ]
            .concat(),
        )
    };
    cli_run(&[
        "train", "--config", config, "--epochs", "1", "--out", &weights, "-q",
    ])?;
    cli_run(&[
        "prune",
        "--config",
        config,
        "--weights",
        &weights,
        "--alpha-sweep",
        "0.05,0.2,0.4",
        "--out",
        &cli,
        "-q",
    ])?;
    cargo(&[
        "run",
        "--quiet",
        "-p",
        "fair-pipeline",
        "--example",
        "from_config",
        "--",
        config,
        &weights,
        &library,
    ])?;
    let report = |dir: &str| -> Result<serde_json::Value> {
        let file = Path::new(dir).join("report.json");
        let text =
            fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let mut value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", file.display()))?;
        strip_run_specific(&mut value);
        Ok(value)
    };
    let (a, b) = (report(&cli)?, report(&library)?);
    if a != b {
        bail!(
            "the README's config example and `fair-pruner prune` disagree:\n  CLI:     {a}\n  library: {b}"
        );
    }
    let labels: Vec<String> = a["results"]
        .as_array()
        .context("report.json has no results")?
        .iter()
        .map(|r| r["label"].as_str().unwrap_or_default().to_owned())
        .collect();
    if labels != ["alpha-0.05", "alpha-0.2", "alpha-0.4"] {
        bail!("expected the three goals of the README's sweep, got {labels:?}");
    }
    for label in &labels {
        for file in ["plan.json", "model.safetensors"] {
            let read = |root: &str| {
                let f = Path::new(root).join(label).join(file);
                fs::read(&f).with_context(|| format!("cannot read {}", f.display()))
            };
            if read(&cli)? != read(&library)? {
                bail!("{label}/{file} differs between the CLI's and the README example's output");
            }
        }
    }
    eprintln!("the pipeline README's config example gives the CLI's report and files");
    Ok(())
}

/// Drops what differs between two runs of the same job: timings and latency measurements.
/// (The output paths in `export` and `files` are relative to each output directory, so they
/// are compared: a run that skips a file differs.)
fn strip_run_specific(value: &mut serde_json::Value) {
    const RUN_SPECIFIC: [&str; 3] = ["seconds", "threshold_ms", "latency"];
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| !RUN_SPECIFIC.contains(&k.as_str()));
            map.values_mut().for_each(strip_run_specific);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_run_specific),
        _ => {}
    }
}

/// The built-in demo: Fashion-MNIST → train a compact VGG → `fair-pruner prune` (score once,
/// re-threshold at several α, one-shot and fine-tuned accuracy, latency, exports, report).
fn demo() -> Result<()> {
    let root = workspace_root();
    cargo(&["build", "--release", "--quiet", "-p", "fair-cli"])?;
    let bin = root.join("target/release/fair-pruner");
    let dir = root.join("target/demo");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = root.join("configs/fashion-vgg.toml").display().to_string();
    let weights = dir.join("model.safetensors").display().to_string();
    let run = |args: &[&str]| -> Result<()> {
        eprintln!("$ fair-pruner {}", args.join(" "));
        let status = Command::new(&bin)
            .args(args)
            .current_dir(&root)
            .status()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        if !status.success() {
            bail!("fair-pruner {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    run(&[
        "train", "--config", &config, "--epochs", "3", "--out", &weights,
    ])?;
    // The demo owns target/demo/pruned. An output written before fair-pruner marked its
    // directories (`.fair-pruner-output`) would be refused as foreign; it is the demo's own.
    let pruned = dir.join("pruned");
    if pruned.is_dir() && !pruned.join(".fair-pruner-output").exists() {
        fs::remove_dir_all(&pruned)
            .with_context(|| format!("cannot remove the old demo output {}", pruned.display()))?;
    }
    run(&[
        "prune",
        "--config",
        &config,
        "--weights",
        &weights,
        "--alpha-sweep",
        "0.05,0.2,0.4",
        "--finetune-epochs",
        "1",
        "--out",
        &pruned.display().to_string(),
    ])
}

/// Where libtorch and the reference Python are.
pub(crate) struct Setup {
    libtorch: PathBuf,
    pub(crate) python: Option<PathBuf>,
}

impl Setup {
    fn print(&self) {
        println!("libtorch: {}", self.libtorch.display());
        match &self.python {
            Some(p) => println!("python (cross-checks): {}", p.display()),
            None => println!("python (cross-checks): none"),
        }
        println!(
            "wiring: {} (plain `cargo build` / `cargo test` now work here)",
            workspace_root().join(".cargo/libtorch.toml").display()
        );
    }
}

fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = env::var_os("FAIR_PRUNER_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("fair-pruner"));
    }
    let home = env::var_os("HOME").context(
        "neither FAIR_PRUNER_CACHE, XDG_CACHE_HOME nor HOME is set: cannot choose a cache directory",
    )?;
    Ok(PathBuf::from(home).join(".cache/fair-pruner"))
}

/// A variable the user set, ignoring the value our own wiring injects: cargo passes the
/// `[env]` of `.cargo/libtorch.toml` to `cargo xtask` itself, and a stale wiring (say, after
/// the cache was deleted) must not stop setup from repairing it.
fn user_env(name: &str) -> Option<String> {
    let value = env::var(name).ok()?;
    let wiring =
        fs::read_to_string(workspace_root().join(".cargo/libtorch.toml")).unwrap_or_default();
    let injected = wiring.lines().any(|line| {
        line.split_once('=').is_some_and(|(k, v)| {
            k.trim() == name && v.trim().trim_matches('"').replace("\\\\", "\\") == value
        })
    });
    (!injected).then_some(value)
}

fn setup() -> Result<Setup> {
    let python = match user_env("FAIR_PRUNER_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None => Some(reference_env()?),
    };
    let libtorch = match user_env("LIBTORCH") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            check_libtorch(&dir).context("LIBTORCH is set but does not hold libtorch")?;
            dir
        }
        None => {
            let py = python.as_ref().expect("set above");
            let out = Command::new(py)
                .args([
                    "-c",
                    "import os, torch; print(os.path.dirname(torch.__file__))",
                ])
                .output()
                .with_context(|| format!("cannot run {}", py.display()))?;
            if !out.status.success() {
                bail!(
                    "{} cannot import torch: {}\nSet LIBTORCH, or unset FAIR_PRUNER_PYTHON to use the cached environment.",
                    py.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            let dir = PathBuf::from(String::from_utf8(out.stdout)?.trim());
            check_libtorch(&dir)?;
            dir
        }
    };
    write_wiring(&libtorch, python.as_deref())?;
    Ok(Setup { libtorch, python })
}

fn check_libtorch(dir: &Path) -> Result<()> {
    let lib = dir.join("lib");
    let has_lib = ["libtorch_cpu.so", "libtorch_cpu.dylib", "torch_cpu.dll"]
        .iter()
        .any(|f| lib.join(f).exists());
    if !has_lib || !dir.join("include").is_dir() {
        bail!(
            "{} has no lib/libtorch_cpu.* and include/: expected a libtorch {TORCH_VERSION} directory",
            dir.display()
        );
    }
    if let Ok(v) = fs::read_to_string(dir.join("build-version.txt"))
        .or_else(|_| fs::read_to_string(dir.join("version.py")))
        && !v.contains(TORCH_VERSION)
    {
        eprintln!(
            "warning: {} does not look like libtorch {TORCH_VERSION} (tch 0.24 needs exactly that version)",
            dir.display()
        );
    }
    Ok(())
}

/// Creates (once) the cached virtual environment with torch and the cross-check packages.
fn reference_env() -> Result<PathBuf> {
    let venv = cache_dir()?.join(format!("torch-{TORCH_VERSION}"));
    let python = venv.join("bin/python");
    let marker = venv.join(".fair-pruner-requirements");
    let wanted = REQUIREMENTS.join("\n");
    if python.exists() && fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    let python3 = find_python3()?;
    if !python.exists() {
        eprintln!(
            "xtask: creating the reference environment {} (once per machine)",
            venv.display()
        );
        fs::create_dir_all(venv.parent().expect("cache dir"))
            .with_context(|| format!("cannot create {}", venv.display()))?;
        let status = Command::new(&python3)
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .with_context(|| format!("cannot run {}", python3.display()))?;
        if !status.success() || !python.exists() {
            bail!(
                "`{} -m venv {}` failed: install Python's venv module (Debian: apt-get install python3-venv), \
                 or set LIBTORCH to a libtorch {TORCH_VERSION} directory and FAIR_PRUNER_PYTHON to a Python with torch",
                python3.display(),
                venv.display()
            );
        }
    }
    eprintln!(
        "xtask: installing {} into {} (torch's wheel carries libtorch; ~4.6 GB, a few minutes, once)",
        REQUIREMENTS.join(" "),
        venv.display()
    );
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .args(REQUIREMENTS)
        .status()
        .with_context(|| format!("cannot run {} -m pip", python.display()))?;
    if !status.success() {
        bail!(
            "pip could not install {} into {}: see pip's output above (it needs the Python package index), \
             or set LIBTORCH and FAIR_PRUNER_PYTHON to an existing installation",
            REQUIREMENTS.join(" "),
            venv.display()
        );
    }
    fs::write(&marker, &wanted).with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(python)
}

fn find_python3() -> Result<PathBuf> {
    for candidate in ["python3", "python"] {
        if let Ok(out) = Command::new(candidate)
            .args(["-c", "import sys, venv; print(sys.executable) if sys.version_info >= (3, 10) else sys.exit(1)"])
            .output()
            && out.status.success()
        {
            return Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()));
        }
    }
    bail!(
        "python3 (3.10 or newer, with the venv module and pip) was not found. fair-pruner provisions \
         libtorch {TORCH_VERSION} from the torch wheel on the Python package index and needs it: install \
         python3 (Debian: apt-get install python3 python3-venv python3-pip), or set LIBTORCH to a libtorch \
         {TORCH_VERSION} directory"
    )
}

/// Writes `.cargo/libtorch.toml`: LIBTORCH for torch-sys' build script, an rpath so binaries
/// (doctests included) find libtorch at run time, and the Python for cross-checks. Rewritten only on change.
fn write_wiring(libtorch: &Path, python: Option<&Path>) -> Result<()> {
    let lib = libtorch.join("lib");
    let toml_str = |p: &Path| format!("{:?}", p.display().to_string());
    let mut text = format!(
        "# Written by `cargo xtask setup` for this machine; not committed.\n\
         [env]\n\
         LIBTORCH = {}\n",
        toml_str(libtorch)
    );
    if let Some(py) = python {
        text += &format!("FAIR_PRUNER_PYTHON = {}\n", toml_str(py));
    }
    let rpath = format!("[\"-C\", \"link-arg=-Wl,-rpath,{}\"]", lib.display());
    text += &format!("\n[build]\nrustflags = {rpath}\nrustdocflags = {rpath}\n");
    let path = workspace_root().join(".cargo/libtorch.toml");
    if fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        let tmp = path.with_extension("toml.tmp");
        fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
