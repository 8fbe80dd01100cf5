//! `cargo xtask bench compare`: FAIR-Pruner against the authors' package, uniform L1 pruning
//! (ours and Torch-Pruning's) and ToD counts with L1 ranking, on Fashion-MNIST with a
//! VGG-style and a ResNet-style network.
//!
//! Every method only decides *which units to remove* (a plan); fair-pruner then applies each
//! plan with the same surgery, evaluates it one-shot, fine-tunes it with the same budget and
//! evaluates it again, so the methods differ in nothing else. The baselines get the MACs that
//! FAIR reached at each α. Results go to `target/bench/compare/summary.json` and the table in
//! `docs/results.md` (between the `bench compare` markers).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{Setup, cargo, workspace_root};

/// One network of the comparison.
struct Net {
    key: &'static str,
    title: &'static str,
    config: &'static str,
    zoo: &'static str,
    /// Fraction of the training split each fine-tune sees (stratified, the same images for
    /// every method): ResNet-20 trains ~8× slower than the compact VGG on this machine.
    finetune_fraction: f64,
}

const NETS: [Net; 2] = [
    Net {
        key: "vgg",
        title: "VGG-style (vgg_compact, BN)",
        config: "configs/fashion-vgg.toml",
        zoo: "vgg_compact",
        finetune_fraction: 1.0,
    },
    Net {
        key: "resnet",
        title: "ResNet-style (CIFAR ResNet-20, option-B shortcuts)",
        config: "configs/fashion-resnet.toml",
        zoo: "resnet20",
        finetune_fraction: 0.25,
    },
];

/// The methods compared, in table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Method {
    Fair,
    Package,
    UniformL1,
    TorchPruning,
    UniformL1Params,
    TodL1,
}

impl Method {
    fn key(self) -> &'static str {
        match self {
            Method::Fair => "fair",
            Method::Package => "package",
            Method::UniformL1 => "uniform-l1",
            Method::TorchPruning => "torch-pruning",
            Method::UniformL1Params => "uniform-l1-params",
            Method::TodL1 => "tod-l1",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Method::Fair => "FAIR (fair-pruner: U ranking, ToD counts)",
            Method::Package => "network-pruner 2.16 (authors' package)",
            Method::UniformL1 => "uniform L1 (fair-pruner)",
            Method::TorchPruning => "uniform L1 (Torch-Pruning 1.6.1)",
            Method::UniformL1Params => "uniform L1 (fair-pruner) at FAIR's parameter count",
            Method::TodL1 => "ToD counts + L1 ranking",
        }
    }
}

impl Net {
    /// The `--model/--input/--classes` flags naming this net (Fashion-MNIST's input).
    fn model_flags(&self) -> Vec<String> {
        strings(&["--model", self.zoo, "--input", "1x28x28", "--classes", "10"])
    }
}

/// Settings of a comparison run.
pub(crate) struct Options {
    pub alphas: Vec<f64>,
    pub train_epochs: usize,
    pub finetune_epochs: usize,
    pub per_class: usize,
    pub threads: usize,
    pub nets: Vec<String>,
    pub write_docs: bool,
    pub tables_only: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            alphas: vec![0.05, 0.2, 0.4, 0.6],
            train_epochs: 3,
            finetune_epochs: 1,
            per_class: 32,
            threads: 2,
            nets: vec!["vgg".into(), "resnet".into()],
            write_docs: true,
            tables_only: false,
        }
    }
}

pub(crate) fn parse(args: &[&str]) -> Result<Options> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if *flag == "--no-docs" {
            o.write_docs = false;
            continue;
        }
        if *flag == "--tables-only" {
            o.tables_only = true;
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let int = || -> Result<usize> {
            value
                .parse()
                .with_context(|| format!("{flag} needs a positive integer, found {value}"))
        };
        match *flag {
            "--alphas" => {
                o.alphas = value
                    .split(',')
                    .map(|a| a.trim().parse::<f64>())
                    .collect::<Result<_, _>>()
                    .with_context(|| {
                        format!("--alphas needs numbers like 0.05,0.2, found {value}")
                    })?
            }
            "--train-epochs" => o.train_epochs = int()?,
            "--finetune-epochs" => o.finetune_epochs = int()?,
            "--per-class" => o.per_class = int()?,
            "--threads" => o.threads = int()?,
            "--nets" => {
                o.nets = value.split(',').map(str::to_owned).collect();
                if let Some(n) = o.nets.iter().find(|n| !NETS.iter().any(|x| x.key == *n)) {
                    bail!("unknown net {n} (expected vgg, resnet)");
                }
            }
            other => bail!(
                "unknown option {other} (expected --alphas, --train-epochs, --finetune-epochs, --per-class, --threads, --nets, --no-docs, --tables-only)"
            ),
        }
    }
    Ok(o)
}

/// Runs the fair-pruner binary; returns stdout, failing with stderr when it fails.
fn fp(args: &[String]) -> Result<String> {
    let bin = workspace_root().join("target/release/fair-pruner");
    let out = Command::new(&bin)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "fair-pruner {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The first "top-1 X%" in `text`, as a fraction.
fn top1(text: &str) -> Result<f64> {
    let at = text
        .find("top-1 ")
        .with_context(|| format!("no top-1 in:\n{text}"))?;
    let rest = &text[at + 6..];
    let pct: f64 = rest[..rest.find('%').context("no %")?].trim().parse()?;
    Ok(pct / 100.0)
}

fn read_json(p: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))
}

/// Parameters and MACs of an IR file.
fn size(graph: &Path) -> Result<(u64, u64)> {
    let v: Value =
        serde_json::from_str(&fp(&strings(&["info", "--graph", &path(graph), "--json"]))?)?;
    Ok((
        v["params"].as_u64().context("info without params")?,
        v["macs"].as_u64().context("info without macs")?,
    ))
}

/// `fair-pruner apply` of `plan` to the net's `weights`, exported to `out`; returns the
/// pruned model's parameters and MACs.
fn apply(net: &Net, weights: &Path, plan: &Path, out: &Path) -> Result<(u64, u64)> {
    fp(&[
        strings(&["apply"]),
        net.model_flags(),
        strings(&[
            "--weights",
            &path(weights),
            "--plan",
            &path(plan),
            "--out",
            &path(out),
        ]),
    ]
    .concat())?;
    size(&out.join("model.toml"))
}

/// One plan evaluated: applied, one-shot accuracy, fine-tuned accuracy.
fn evaluate_plan(
    net: &Net,
    dir: &Path,
    weights: &Path,
    plan: &Path,
    name: &str,
    o: &Options,
) -> Result<Value> {
    let out = dir.join("models").join(name);
    // Reuse the figures of an identical earlier run: same trained model, plan and budget.
    let key = json!({
        "trained": read_json(&dir.join("trained.json"))?,
        "plan": read_json(plan)?,
        "finetune_epochs": o.finetune_epochs,
        "finetune_fraction": net.finetune_fraction,
    });
    let stored = out.join("bench.json");
    if let Ok(v) = read_json(&stored)
        && v["key"] == key
    {
        let mut figures = v["figures"].clone();
        figures["reused"] = json!(true);
        return Ok(figures);
    }
    let threads = o.threads.to_string();
    let (params, macs) = apply(net, weights, plan, &out)?;
    let graph = out.join("model.toml");
    let common = |cmd: &str| {
        strings(&[
            cmd,
            "--config",
            net.config,
            "--graph",
            &path(&graph),
            "--threads",
            &threads,
            "-q",
        ])
    };
    let mut eval = common("eval");
    eval.extend(strings(&[
        "--weights",
        &path(&out.join("model.safetensors")),
    ]));
    let one_shot = top1(&fp(&eval)?)?;
    let mut tune = common("finetune");
    tune.extend(strings(&[
        "--weights",
        &path(&out.join("model.safetensors")),
        "--epochs",
        &o.finetune_epochs.to_string(),
        "--lr",
        "0.01",
        "--out",
        &path(&out.join("finetuned.safetensors")),
        "--train-fraction",
        &net.finetune_fraction.to_string(),
    ]));
    let tuned = top1(&fp(&tune)?)?;
    let figures = json!({"params": params, "macs": macs, "one_shot": one_shot, "finetuned": tuned});
    std::fs::write(
        &stored,
        serde_json::to_string_pretty(&json!({"key": key, "figures": figures}))?,
    )?;
    Ok(figures)
}

fn run_net(net: &Net, setup: &Setup, o: &Options) -> Result<Value> {
    let root = workspace_root();
    let dir = root.join("target/bench/compare").join(net.key);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let python = setup
        .python
        .as_ref()
        .context("the comparison needs the reference Python (network-pruner, torch-pruning)")?;
    let script = root.join("xtask/bench/compare_reference.py");
    let threads = o.threads.to_string();

    // 1. One trained model (reused when trained with the same epochs).
    let weights = dir.join("model.safetensors");
    let stamp = dir.join("trained.json");
    let want = json!({"config": net.config, "epochs": o.train_epochs});
    let trained = read_json(&stamp).ok();
    if !weights.exists() || trained.as_ref().map(|t| &t["settings"]) != Some(&want) {
        eprintln!("  [{}] training {} epochs …", net.key, o.train_epochs);
        let text = fp(&strings(&[
            "train",
            "--config",
            net.config,
            "--epochs",
            &o.train_epochs.to_string(),
            "--threads",
            &threads,
            "--out",
            &path(&weights),
            "-q",
        ]))?;
        let stamp_value = json!({"settings": want, "top1": top1(&text)?});
        std::fs::write(&stamp, serde_json::to_string_pretty(&stamp_value)?)?;
    }
    let base_top1 = read_json(&stamp)?["top1"].as_f64().unwrap_or(f64::NAN);

    // 2. The unpruned export (for the Python references), the calibration samples, scores.
    let empty = dir.join("empty-plan.json");
    std::fs::write(&empty, "{\"remove\": {}}")?;
    let unpruned = dir.join("unpruned");
    let (params0, macs0) = apply(net, &weights, &empty, &unpruned)?;
    let calibration = dir.join("calibration.safetensors");
    fp(&strings(&[
        "calib",
        "--config",
        net.config,
        "--weights",
        &path(&weights),
        "--per-class",
        &o.per_class.to_string(),
        "--out",
        &path(&calibration),
        "-q",
    ]))?;
    eprintln!("  [{}] scoring (U, R, L1) …", net.key);
    let scores = dir.join("scores.json");
    fp(&[
        strings(&["score"]),
        net.model_flags(),
        strings(&[
            "--weights",
            &path(&weights),
            "--data",
            &path(&calibration),
            "--criteria",
            "u,r,l1",
            "--samples-per-class",
            &o.per_class.to_string(),
            "--threads",
            &threads,
            "--out",
            &path(&scores),
            "-q",
        ]),
    ]
    .concat())?;
    let seconds = read_json(&scores)?["provenance"]["seconds"].clone();
    let sec = |k: &str| seconds[k].as_f64().unwrap_or(0.0);

    // 3. Plans: FAIR, ToD + L1 and uniform L1 (ours) from the stored scores.
    let plans = dir.join("plans");
    std::fs::create_dir_all(&plans)?;
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    let mut ours_counts = serde_json::Map::new();
    for &alpha in &o.alphas {
        let key = format!("{alpha:.4}");
        let fair = plans.join(format!("fair-{key}.json"));
        let v: Value = serde_json::from_str(&fp(&strings(&[
            "ratios",
            "--scores",
            &path(&scores),
            "--alpha",
            &key,
            "--json",
            "--write-plan",
            &path(&fair),
        ]))?)?;
        let target =
            1.0 - v["macs"]["after"].as_f64().context("ratios without MACs")? / macs0 as f64;
        ours_counts.insert(
            key.clone(),
            v["layers"]
                .as_array()
                .context("ratios without layers")?
                .iter()
                .map(|l| json!({"layer": l["layer"], "units": l["units"], "count": l["tod_count"]}))
                .collect(),
        );
        let tod_l1 = plans.join(format!("tod-l1-{key}.json"));
        fp(&strings(&[
            "ratios",
            "--scores",
            &path(&scores),
            "--alpha",
            &key,
            "--write-plan",
            &path(&tod_l1),
            "--rank-by",
            "l1",
        ]))?;
        let uniform = plans.join(format!("uniform-l1-{key}.json"));
        // A target of exactly 0 needs no pruning; the uniform search wants a positive one.
        fp(&strings(&[
            "ratios",
            "--scores",
            &path(&scores),
            "--uniform",
            "--target-macs",
            &format!("{:.6}", (target - 1e-6).max(0.0)),
            "--write-plan",
            &path(&uniform),
            "--rank-by",
            "l1",
        ]))?;
        rows.push((alpha, Method::Fair, fair, sec("u") + sec("r")));
        rows.push((
            alpha,
            Method::TodL1,
            tod_l1,
            sec("u") + sec("r") + sec("l1"),
        ));
        // The same baseline at FAIR's parameter count instead of its MACs.
        let params_target = 1.0
            - v["params"]["after"]
                .as_f64()
                .context("ratios without parameters")?
                / params0 as f64;
        let uniform_params = plans.join(format!("uniform-l1-params-{key}.json"));
        fp(&strings(&[
            "ratios",
            "--scores",
            &path(&scores),
            "--uniform",
            "--target-params",
            &format!("{:.6}", (params_target - 1e-6).max(0.0)),
            "--write-plan",
            &path(&uniform_params),
            "--rank-by",
            "l1",
        ]))?;
        rows.push((alpha, Method::UniformL1, uniform, sec("l1")));
        rows.push((alpha, Method::UniformL1Params, uniform_params, sec("l1")));
        targets.push(target);
    }

    // 4. The authors' package at the same α, Torch-Pruning at the same MACs.
    eprintln!(
        "  [{}] network-pruner 2.16 get_metrics (minutes) …",
        net.key
    );
    let mut cmd = Command::new(python);
    cmd.env("BENCH_THREADS", &threads)
        .arg(&script)
        .arg("package")
        .arg(&unpruned)
        .arg(&calibration)
        .arg(&plans)
        .args(o.alphas.iter().map(|a| format!("{a:.4}")));
    run_python(cmd, "package")?;
    let package = read_json(&plans.join("package.json"))?;
    eprintln!("  [{}] Torch-Pruning MagnitudePruner …", net.key);
    let mut cmd = Command::new(python);
    cmd.env("BENCH_THREADS", &threads)
        .arg(&script)
        .arg("torch-pruning")
        .arg(&unpruned)
        .arg(&plans)
        .args(targets.iter().map(|t| format!("{t:.4}")));
    run_python(cmd, "torch-pruning")?;
    let tp = read_json(&plans.join("torch-pruning.json"))?;
    let package_seconds = package["seconds"].as_f64().unwrap_or(f64::NAN);
    for (&alpha, &target) in o.alphas.iter().zip(&targets) {
        rows.push((
            alpha,
            Method::Package,
            plans.join(format!("package-{alpha:.4}.json")),
            package_seconds,
        ));
        rows.push((
            alpha,
            Method::TorchPruning,
            plans.join(format!("torch-pruning-{target:.4}.json")),
            0.0,
        ));
    }

    // 5. Every plan through the same surgery, evaluation and fine-tuning, in table order.
    rows.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut results = Vec::new();
    for (i, (alpha, method, plan, seconds)) in rows.iter().enumerate() {
        eprintln!(
            "  [{}] {}/{}: {} at α = {alpha} …",
            net.key,
            i + 1,
            rows.len(),
            method.title()
        );
        let name = format!("{}-{alpha:.4}", method.key());
        let mut r = evaluate_plan(net, &dir, &weights, plan, &name, o)?;
        r["alpha"] = json!(alpha);
        r["method"] = json!(method.title());
        r["method_key"] = json!(method.key());
        r["scoring_seconds"] = json!(seconds);
        results.push(r);
    }
    Ok(json!({
        "net": net.key, "title": net.title, "zoo": net.zoo,
        "unpruned": {"params": params0, "macs": macs0, "top1": base_top1},
        "train_epochs": o.train_epochs, "finetune_epochs": o.finetune_epochs,
        "finetune_fraction": net.finetune_fraction,
        "per_class": o.per_class, "threads": o.threads,
        "macs_targets": targets, "results": results,
        "counts": {"ours": ours_counts, "package": package["alphas"], "package_layers": package["layers"]},
        "torch_pruning": tp,
    }))
}

fn run_python(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run the {what} reference"))?;
    if !out.status.success() {
        bail!(
            "the {what} reference failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("—".into(), |x| format!("{:.2}%", 100.0 * x))
}

fn k(v: &Value) -> String {
    v.as_f64()
        .map_or("—".into(), |x| format!("{:.1} K", x / 1e3))
}

fn m(v: &Value) -> String {
    v.as_f64()
        .map_or("—".into(), |x| format!("{:.2} M", x / 1e6))
}

/// How many of the references' own pruned models have exactly the parameter count of
/// fair-pruner's surgery applying their plans: (equal, compared).
fn params_checks(net: &Value) -> (usize, usize) {
    let targets = net["macs_targets"].as_array().cloned().unwrap_or_default();
    let alphas: Vec<f64> = net["results"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["alpha"].as_f64()).collect())
        .unwrap_or_default();
    let mut distinct: Vec<f64> = Vec::new();
    for a in alphas {
        if !distinct.contains(&a) {
            distinct.push(a);
        }
    }
    let (mut equal, mut total) = (0, 0);
    for r in net["results"].as_array().into_iter().flatten() {
        let alpha = r["alpha"].as_f64().unwrap_or(f64::NAN);
        let theirs = match r["method_key"].as_str() {
            Some("package") => &net["counts"]["package"][format!("{alpha:.4}")]["params"],
            Some("torch-pruning") => {
                let Some(t) = distinct
                    .iter()
                    .position(|&a| a == alpha)
                    .and_then(|i| targets.get(i))
                    .and_then(Value::as_f64)
                else {
                    continue;
                };
                &net["torch_pruning"]["targets"][format!("{t:.4}")]["params"]
            }
            _ => continue,
        };
        total += 1;
        if theirs.as_f64().is_some() && theirs.as_f64() == r["params"].as_f64() {
            equal += 1;
        }
    }
    (equal, total)
}

/// The Markdown tables of one network.
fn markdown(net: &Value) -> Result<String> {
    let mut s = String::new();
    let u = &net["unpruned"];
    writeln!(
        s,
        "#### {}\n\nTrained {} epochs: {} params, {} MACs, test top-1 {}. Fine-tuning budget for every pruned model: {} epoch(s) over {:.0}% of the training split (stratified, the same images for every method), SGD lr 0.01 cosine, same seed. Calibration: {} training samples per class. {} CPU threads; the run that wrote this table took {:.1} min ({} of {} pruned models reused from an earlier run with the same trained model, plan and budget).\n",
        net["title"].as_str().unwrap_or("?"),
        net["train_epochs"],
        k(&u["params"]),
        m(&u["macs"]),
        pct(&u["top1"]),
        net["finetune_epochs"],
        100.0 * net["finetune_fraction"].as_f64().unwrap_or(1.0),
        net["per_class"],
        net["threads"],
        net["minutes"].as_f64().unwrap_or(f64::NAN),
        net["results"].as_array().map_or(0, |rs| rs
            .iter()
            .filter(|r| r["reused"] == json!(true))
            .count()),
        net["results"].as_array().map_or(0, Vec::len),
    )?;
    writeln!(
        s,
        "| α | method | params | MACs | one-shot top-1 | fine-tuned top-1 | scoring time |"
    )?;
    writeln!(s, "| ---: | --- | ---: | ---: | ---: | ---: | ---: |")?;
    for r in net["results"].as_array().context("no results")? {
        let secs = r["scoring_seconds"].as_f64().unwrap_or(0.0);
        writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r["alpha"],
            r["method"].as_str().unwrap_or("?"),
            k(&r["params"]),
            m(&r["macs"]),
            pct(&r["one_shot"]),
            pct(&r["finetuned"]),
            if secs > 0.005 {
                format!("{secs:.2} s")
            } else {
                "≈ 0".into()
            },
        )?;
    }
    let (equal, total) = params_checks(net);
    if total > 0 {
        writeln!(
            s,
            "\nCross-check: the parameter counts of the references' own pruned models equal those of fair-pruner's surgery applying their plans in {equal} of {total} cases.",
        )?;
    }
    // Per-layer counts: ours and the package's, side by side.
    let layers = net["counts"]["package_layers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let alphas: Vec<String> = net["counts"]["ours"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    write!(
        s,
        "\nUnits each layer removes (ToD counts), fair-pruner / network-pruner:\n\n| layer | units |"
    )?;
    for a in &alphas {
        write!(s, " α = {a} |")?;
    }
    writeln!(s)?;
    writeln!(s, "| --- | ---: |{}", " ---: |".repeat(alphas.len()))?;
    for (i, layer) in layers.iter().enumerate() {
        let name = layer.as_str().unwrap_or("?");
        let ours = |a: &str| &net["counts"]["ours"][a][i];
        let units = ours(alphas.first().map(String::as_str).unwrap_or(""))["units"].clone();
        write!(s, "| {name} | {units} |")?;
        for a in &alphas {
            let o = ours(a);
            if o["layer"].as_str() != Some(name) {
                bail!(
                    "layer order differs between fair-pruner ({}) and the package ({name})",
                    o["layer"]
                );
            }
            write!(
                s,
                " {} / {} |",
                o["count"], net["counts"]["package"][a]["counts"][i]
            )?;
        }
        writeln!(s)?;
    }
    Ok(s)
}

pub(crate) fn run(setup: &Setup, o: &Options) -> Result<()> {
    cargo(&["build", "--release", "--quiet", "-p", "fair-cli"])?;
    let start = std::time::Instant::now();
    let dir = workspace_root().join("target/bench/compare");
    let selected = NETS
        .iter()
        .filter(|n| !o.tables_only && o.nets.iter().any(|k| k == n.key));
    for net in selected {
        eprintln!("bench compare: {}", net.title);
        let net_start = std::time::Instant::now();
        let mut result = run_net(net, setup, o)?;
        result["minutes"] = json!(net_start.elapsed().as_secs_f64() / 60.0);
        std::fs::write(
            dir.join(net.key).join("result.json"),
            serde_json::to_string_pretty(&result)?,
        )?;
    }
    let minutes = start.elapsed().as_secs_f64() / 60.0;
    // The tables hold every network measured so far (each net's latest run), so the nets
    // can be run one at a time.
    let nets: Vec<Value> = NETS
        .iter()
        .filter_map(|n| read_json(&dir.join(n.key).join("result.json")).ok())
        .collect();
    let summary = json!({"nets": nets});
    let out = dir.join("summary.json");
    std::fs::write(&out, serde_json::to_string_pretty(&summary)?)?;
    let mut md = String::new();
    for n in &nets {
        md += &markdown(n)?;
        md += "\n";
    }
    println!("{md}");
    println!("summary: {} (this run: {minutes:.1} min)", out.display());
    if o.write_docs {
        let docs: PathBuf = workspace_root().join("docs/results.md");
        let text = std::fs::read_to_string(&docs)
            .with_context(|| format!("cannot read {}", docs.display()))?;
        let (begin, end) = (
            "<!-- bench compare: begin -->",
            "<!-- bench compare: end -->",
        );
        let (Some(b), Some(e)) = (text.find(begin), text.find(end)) else {
            bail!("{} has no {begin} … {end} markers", docs.display());
        };
        let new = format!(
            "{}{begin}\n<!-- Written by `cargo xtask bench compare`; edit the text outside the markers. -->\n\n{md}{}",
            &text[..b],
            &text[e..]
        );
        let tmp = docs.with_extension("md.tmp");
        std::fs::write(&tmp, new)?;
        std::fs::rename(&tmp, &docs)?;
        println!("tables written to {}", docs.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_top1_from_command_output() {
        let v = top1("data/test: top-1 91.25%, loss 0.2 on 10000 images").unwrap();
        assert!((v - 0.9125).abs() < 1e-12);
        assert!(top1("no accuracy here").is_err());
    }

    #[test]
    fn tables_show_every_row_and_counts_side_by_side() {
        let net = json!({
            "title": "toy", "train_epochs": 1, "finetune_epochs": 1, "finetune_fraction": 0.5, "per_class": 8, "threads": 2,
            "minutes": 0.5,
            "unpruned": {"params": 2000.0, "macs": 3.0e6, "top1": 0.9},
            "results": [
                {"alpha": 0.1, "method": "FAIR", "params": 1500.0, "macs": 2.0e6, "one_shot": 0.8, "finetuned": 0.88, "scoring_seconds": 0.25},
                {"alpha": 0.1, "method": "uniform", "params": 1400.0, "macs": 2.0e6, "one_shot": 0.7, "finetuned": 0.86, "scoring_seconds": 0.0}
            ],
            "counts": {
                "package_layers": ["conv1", "fc1"],
                "ours": {"0.1000": [{"layer": "conv1", "units": 8, "count": 2}, {"layer": "fc1", "units": 16, "count": 5}]},
                "package": {"0.1000": {"counts": [3, 5]}}
            }
        });
        let md = markdown(&net).unwrap();
        assert!(
            md.contains("| 0.1 | FAIR | 1.5 K | 2.00 M | 80.00% | 88.00% | 0.25 s |"),
            "{md}"
        );
        assert!(
            md.contains("| 0.1 | uniform | 1.4 K | 2.00 M | 70.00% | 86.00% | ≈ 0 |"),
            "{md}"
        );
        assert!(
            md.contains("| conv1 | 8 | 2 / 3 |") && md.contains("| fc1 | 16 | 5 / 5 |"),
            "{md}"
        );
        let mut swapped = net.clone();
        swapped["counts"]["package_layers"] = json!(["fc1", "conv1"]);
        assert!(markdown(&swapped).is_err(), "layer orders must agree");
    }

    #[test]
    fn options_parse_and_reject_unknown_ones() {
        let o = parse(&["--alphas", "0.1,0.3", "--nets", "vgg", "--no-docs"]).unwrap();
        assert_eq!(o.alphas, vec![0.1, 0.3]);
        assert_eq!(o.nets, vec!["vgg".to_string()]);
        assert!(!o.write_docs);
        assert!(parse(&["--nets", "lenet"]).is_err());
        assert!(parse(&["--speed", "1"]).is_err());
    }
}
