//! `fair-bench compare`: FAIR-Pruner against the authors' package, uniform L1 pruning (ours
//! and Torch-Pruning's) and ToD counts with L1 ranking, on Fashion-MNIST with a VGG-style and
//! a ResNet-style network.
//!
//! Every method only decides *which units to remove* (a plan); fair-pruner then applies each
//! plan with the same surgery, evaluates it one-shot, fine-tunes it with the same budget and
//! evaluates it again, so the methods differ in nothing else. The baselines get the MACs that
//! FAIR reached at each α. Results go to `target/bench/compare/summary.json` and the table in
//! `docs/results.md` (between the `bench compare` markers).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use fair_analysis::{
    Goal, Method as Counts, Plan, Resolution, ResolveOptions, ScoreFile, SelectOptions, Selection,
    Selector, graph_digest,
};
use fair_data::{ImageSource, Source, Transform};
use fair_fs::StagedDir;
use fair_pipeline::stages;
use fair_pipeline::{DrawSettings, RunConfig};
use fair_runtime::Model;
use fair_scoring::{Progress, Registry};
use fair_train::TrainSettings;
use serde_json::{Value, json};

use crate::scoring::scoring_settings;
use crate::{positive, read_json, reference_python, tables, workspace_root, write_json};

/// Seed of the fine-tuning subsets: `fair-pruner`'s `--train-fraction` seed, so every run
/// (and every method) sees the same images.
pub(crate) const SUBSET_SEED: u64 = 20260102;

/// Batch size of the evaluations (as `fair-pruner eval`).
pub(crate) const EVAL_BATCH: usize = 512;

/// Learning rate of every fine-tune.
pub(crate) const FINETUNE_LR: f64 = 0.01;

/// One network of the comparison.
pub struct Net {
    /// Short name (`--nets`, directory under `target/bench/compare`).
    pub key: &'static str,
    /// Title of its table.
    pub title: &'static str,
    /// Its run configuration, relative to the workspace root.
    pub config: &'static str,
    /// The zoo model the configuration names.
    pub zoo: &'static str,
    /// Fraction of the training split each fine-tune sees (stratified, the same images for
    /// every method): ResNet-20 trains ~8× slower than the compact VGG on this machine.
    pub finetune_fraction: f64,
    /// Learning rate of every fine-tune in `bench ablation` (with the config's optimizer).
    pub finetune_lr: f64,
    /// The fine-tuning's optimizer and rate, as the ablation's tables state them.
    pub finetune_recipe: &'static str,
}

/// The networks, in table order.
pub const NETS: [Net; 3] = [
    Net {
        key: "vgg",
        title: "VGG-style (vgg_compact, BN)",
        config: "configs/fashion-vgg.toml",
        zoo: "vgg_compact",
        finetune_fraction: 1.0,
        finetune_lr: FINETUNE_LR,
        finetune_recipe: "SGD lr 0.01",
    },
    Net {
        key: "resnet",
        title: "ResNet-style (CIFAR ResNet-20, option-B shortcuts)",
        config: "configs/fashion-resnet.toml",
        zoo: "resnet20",
        finetune_fraction: 0.25,
        finetune_lr: FINETUNE_LR,
        finetune_recipe: "SGD lr 0.01",
    },
    // Only `bench ablation` measures it (issue 24, item 7): its Torch-Pruning baselines prune
    // attention heads, which `bench compare`'s reference script does not.
    Net {
        key: "vit",
        title: "ViT (vit_fashion: 4 blocks, 4 heads, patch 4)",
        config: "configs/fashion-vit.toml",
        zoo: "vit_fashion",
        // An epoch of the ViT costs ~10× the compact VGG's on this machine's 2 cores.
        finetune_fraction: 0.1,
        // The config trains with AdamW at 2e-3; fine-tunes at a fifth of it, as the CNNs
        // (trained with SGD at 0.05, fine-tuned at 0.01).
        finetune_lr: 4e-4,
        finetune_recipe: "AdamW lr 0.0004",
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

/// Settings of a comparison run.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct Options {
    /// Tolerances α of FAIR (the baselines get FAIR's MACs at each), comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = alpha, default_values_t = [0.05, 0.2, 0.4, 0.6])]
    pub alphas: Vec<f64>,
    /// Networks to measure, comma-separated (the tables keep the others' latest results).
    #[arg(long, value_delimiter = ',', value_parser = ["vgg", "resnet"], default_values = ["vgg", "resnet"])]
    pub nets: Vec<String>,
    /// Training epochs of each network (a trained model is reused while this is unchanged).
    #[arg(long, default_value_t = 3, value_parser = positive)]
    pub train_epochs: usize,
    /// Fine-tuning epochs of every pruned model.
    #[arg(long, default_value_t = 1, value_parser = positive)]
    pub finetune_epochs: usize,
    /// Calibration samples per class.
    #[arg(long, default_value_t = 32, value_parser = positive)]
    pub per_class: usize,
    /// libtorch CPU threads (ours and the references').
    #[arg(long, default_value_t = 2, value_parser = positive)]
    pub threads: usize,
    /// Do not write the tables into docs/results.md.
    #[arg(long)]
    pub no_docs: bool,
    /// Measure nothing: rebuild the summary and tables from stored results.
    #[arg(long)]
    pub tables_only: bool,
    /// The reference Python (network-pruner 2.16, Torch-Pruning 1.6.1) [default: $FAIR_PRUNER_PYTHON].
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
}

fn alpha(text: &str) -> Result<f64, String> {
    let a: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected numbers like 0.05,0.2, found {text}"))?;
    Goal::Alpha(a).check().map_err(|e| e.to_string())?;
    Ok(a)
}

/// Creates `dir` and its parents.
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))
}

/// What every plan of one network is measured with.
struct Bench<'a> {
    net: &'a Net,
    dir: PathBuf,
    /// The trained, unpruned model.
    model: Model,
    /// Its model digest (plans made for other weights are refused).
    model_digest: String,
    /// The fine-tuning subset of the training split.
    finetune: Source,
    test: Source,
    train_transform: Transform,
    eval_transform: Transform,
    finetune_settings: TrainSettings,
    finetune_epochs: usize,
}

impl Bench<'_> {
    /// Applies `plan` to the trained model (`stages::apply`) and exports it to `out`
    /// (weights, IR, PyTorch module and the size report as `report.json`), replacing the
    /// directory as a whole.
    fn apply(&self, plan: &Plan, out: &Path) -> Result<Model> {
        let staged = StagedDir::new(out)?;
        let resolution = Resolution::new(self.model.graph(), plan, &ResolveOptions::default())?;
        let pruned = stages::apply(&self.model, &resolution)?;
        // Not `stages::export`, which adds `finetune.py`/`finetune.json` and `plan.json` in a
        // directory taken as given: the comparison keeps its model files, staged.
        fair_surgery::export(&pruned, staged.path())?;
        fair_fs::write_atomic(
            &staged.path().join("report.json"),
            serde_json::to_string_pretty(&resolution.report())?.as_bytes(),
        )?;
        staged.commit()?;
        Ok(pruned)
    }

    /// One plan evaluated: applied, one-shot accuracy, fine-tuned accuracy. Reuses the
    /// figures of an identical earlier run (same trained model, plan and budget).
    fn evaluate_plan(&self, plan_path: &Path, name: &str) -> Result<Value> {
        let out = self.dir.join("models").join(name);
        let plan = Plan::load(plan_path)?;
        let key = json!({
            "trained": read_json(&self.dir.join("trained.json"))?,
            "plan": serde_json::to_value(&plan)?,
            "finetune_epochs": self.finetune_epochs,
            "finetune_fraction": self.net.finetune_fraction,
        });
        let stored = out.join("bench.json");
        if let Ok(v) = read_json(&stored)
            && v["key"] == key
        {
            let mut figures = v["figures"].clone();
            figures["reused"] = json!(true);
            return Ok(figures);
        }
        check_digests(&plan, plan_path, &self.model, &self.model_digest)?;
        // The pipeline's stages, without the steps after surgery (none in this
        // comparison): apply, evaluate, fine-tune (its evaluation transform is the training
        // transform's, `eval_transform`), evaluate.
        let mut model = self.apply(&plan, &out)?;
        let (params, macs) = (model.graph().param_count(), model.graph().macs());
        let one_shot = stages::evaluate(&model, &self.test, &self.eval_transform)?.top1;
        stages::finetune(
            &mut model,
            None,
            &self.finetune,
            &self.train_transform,
            &self.finetune_settings,
            None,
        )?;
        model.save_weights(&out.join("finetuned.safetensors"))?;
        let tuned = stages::evaluate(&model, &self.test, &self.eval_transform)?.top1;
        let figures =
            json!({"params": params, "macs": macs, "one_shot": one_shot, "finetuned": tuned});
        write_json(&stored, &json!({"key": key, "figures": figures}))?;
        Ok(figures)
    }
}

/// Refuses a plan made for another architecture or other weights than `model` (whose model
/// digest is `model_digest`), as `fair-pruner apply` does; plans written by the references
/// carry no digests.
pub(crate) fn check_digests(
    plan: &Plan,
    path: &Path,
    model: &Model,
    model_digest: &str,
) -> Result<()> {
    if let Some(d) = &plan.graph_digest
        && *d != graph_digest(model.graph())
    {
        bail!(
            "the plan {} was made for another architecture (its graph digest differs from the model's)",
            path.display()
        );
    }
    if let Some(d) = &plan.model_digest
        && d != model_digest
    {
        bail!(
            "the plan {} was made for other weights (its model digest differs from the trained model's)",
            path.display()
        );
    }
    Ok(())
}

/// A MACs or parameters target for the uniform baseline: just below `reduction` (so the
/// smallest uniform ratio reaching FAIR's figure is found), rounded as the command line
/// would pass it; `None` when FAIR removed nothing (the baseline then removes nothing too).
fn uniform_target(reduction: f64) -> Option<f64> {
    let t: f64 = format!("{:.6}", (reduction - 1e-6).max(0.0))
        .parse()
        .expect("a formatted number parses");
    (t > 0.0).then_some(t)
}

/// The uniform-L1 plan reaching `target` (MACs or parameters), or the empty plan.
fn uniform_plan(selector: &Selector, target: Option<Goal>) -> Result<Plan> {
    Ok(match target {
        Some(goal) => stages::select(selector, goal, Counts::Uniform)?.plan(),
        None => Plan::new(),
    })
}

/// Per-layer ToD counts of a selection, for the counts table.
fn counts(selector: &Selector, selection: &Selection) -> Value {
    let graph = selector.graph();
    selector
        .layers()
        .iter()
        .zip(&selection.counts)
        .map(|(l, &k)| json!({"layer": l, "units": graph.units(l).unwrap_or(0), "count": k}))
        .collect()
}

/// Runs a reference script; its output becomes the error when it fails.
pub(crate) fn run_python(mut cmd: Command, what: &str) -> Result<()> {
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

/// Trains the network (reused when trained with the same epochs) and returns its test top-1.
fn trained(
    net: &Net,
    dir: &Path,
    config: &RunConfig,
    data: (&Source, &Source),
    eval_transform: &Transform,
    epochs: usize,
) -> Result<f64> {
    let weights = dir.join("model.safetensors");
    let stamp = dir.join("trained.json");
    let want = json!({"config": net.config, "epochs": epochs});
    let previous = read_json(&stamp).ok();
    if !weights.exists() || previous.as_ref().map(|t| &t["settings"]) != Some(&want) {
        eprintln!("  [{}] training {epochs} epochs …", net.key);
        // Training the unpruned network is no pipeline stage.
        let mut model = Model::new(config.graph()?, tch::Device::Cpu, config.model.seed)?;
        let settings = TrainSettings {
            epochs,
            ..config.train.clone().unwrap_or_default()
        };
        fair_train::train(
            &mut model,
            data.0,
            None,
            &config.transform,
            eval_transform,
            &settings,
            false,
        )?;
        model.save_weights(&weights)?;
        let top1 = stages::evaluate(&model, data.1, eval_transform)?.top1;
        write_json(&stamp, &json!({"settings": want, "top1": top1}))?;
    }
    Ok(read_json(&stamp)?["top1"].as_f64().unwrap_or(f64::NAN))
}

fn run_net(net: &Net, root: &Path, python: &Path, o: &Options) -> Result<Value> {
    let dir = root.join("target/bench/compare").join(net.key);
    create_dir(&dir)?;
    let script = root.join("xtask/bench/compare_reference.py");
    let threads = o.threads.to_string();

    let config = RunConfig::load(&root.join(net.config))?;
    let graph = config.graph()?;
    let input = fair_pipeline::image_input(&graph)?;
    config.transform.check_input(input, 1)?;
    let (train, test, _) = config.data(input)?;
    let eval_transform = config.transform.for_evaluation();

    // 1. One trained model (reused when trained with the same epochs).
    let base_top1 = trained(
        net,
        &dir,
        &config,
        (&train, &test),
        &eval_transform,
        o.train_epochs,
    )?;
    let model = Model::from_safetensors(graph, &dir.join("model.safetensors"), tch::Device::Cpu)?;
    let f = net.finetune_fraction;
    let (part, _) =
        train.split_stratified(SUBSET_SEED, |n| ((f * n as f64).round() as usize).max(1));
    let finetune = part.with_name(format!("{} ({:.0}%)", train.name(), 100.0 * f));
    let bench = Bench {
        net,
        dir: dir.clone(),
        model_digest: fair_scoring::model_digest(&model)?,
        model,
        finetune,
        test,
        train_transform: config.transform.clone(),
        eval_transform,
        finetune_settings: TrainSettings {
            epochs: o.finetune_epochs,
            lr: FINETUNE_LR,
            ..config.train.clone().unwrap_or(TrainSettings {
                epochs: 3,
                lr: FINETUNE_LR,
                ..Default::default()
            })
        },
        finetune_epochs: o.finetune_epochs,
    };

    // 2. The unpruned export (for the Python references), the calibration samples, scores.
    let unpruned = dir.join("unpruned");
    let graph0 = bench.apply(&Plan::new(), &unpruned)?.graph().clone();
    let (params0, macs0) = (graph0.param_count(), graph0.macs());
    let d = DrawSettings::default();
    let draw = DrawSettings {
        per_class: o.per_class,
        max_classes: config.prune.max_classes.unwrap_or(d.max_classes),
        seed: config.prune.seed.unwrap_or(d.seed),
    };
    let (calibration, calibration_path) =
        crate::compare::draw_calibration(&bench.model, train, &config.transform, &draw, &dir)?;
    eprintln!("  [{}] scoring (U, R, L1) …", net.key);
    let scores = dir.join("scores.json");
    let file: ScoreFile = stages::score(
        &bench.model,
        Some(&calibration),
        &Registry::default(),
        &["u", "r", "l1"].map(String::from),
        &scoring_settings(o.per_class),
        None,
        Progress::QUIET,
    )?
    .scores;
    file.save(&scores)?;
    let sec = |k: &str| file.provenance.criteria.get(k).map_or(0.0, |c| c.seconds);

    // 3. Plans: FAIR, ToD + L1 and uniform L1 (ours) from the stored scores.
    let plans = dir.join("plans");
    create_dir(&plans)?;
    // ToD selectors (U removes, R protects), ranking by U or by L1; the uniform baselines
    // select uniform counts from the L1 one.
    let tod = |rank_by| -> Result<Selector> {
        let options = SelectOptions::default();
        Ok(stages::selector(
            &file,
            Counts::Tod,
            "u",
            "r",
            rank_by,
            options,
        )?)
    };
    let (by_u, by_l1) = (tod("u")?, tod("l1")?);
    let mut rows = Vec::new();
    let mut targets = Vec::new();
    let mut ours_counts = serde_json::Map::new();
    for &alpha in &o.alphas {
        let key = format!("{alpha:.4}");
        let goal = Goal::Alpha(key.parse()?);
        let fair = stages::select(&by_u, goal, Counts::Tod)?;
        let fair_path = plans.join(format!("fair-{key}.json"));
        fair.plan().save(&fair_path)?;
        let size = fair.resolution.report();
        let target = 1.0 - size.macs.1 as f64 / macs0 as f64;
        let params_target = 1.0 - size.params.1 as f64 / params0 as f64;
        ours_counts.insert(key.clone(), counts(&by_u, &fair));
        let tod_l1 = plans.join(format!("tod-l1-{key}.json"));
        stages::select(&by_l1, goal, Counts::Tod)?
            .plan()
            .save(&tod_l1)?;
        let uniform = plans.join(format!("uniform-l1-{key}.json"));
        uniform_plan(&by_l1, uniform_target(target).map(Goal::Macs))?.save(&uniform)?;
        // The same baseline at FAIR's parameter count instead of its MACs.
        let uniform_params = plans.join(format!("uniform-l1-params-{key}.json"));
        uniform_plan(&by_l1, uniform_target(params_target).map(Goal::Params))?
            .save(&uniform_params)?;
        rows.push((alpha, Method::Fair, fair_path, sec("u") + sec("r")));
        rows.push((
            alpha,
            Method::TodL1,
            tod_l1,
            sec("u") + sec("r") + sec("l1"),
        ));
        rows.push((alpha, Method::UniformL1, uniform, sec("l1")));
        rows.push((alpha, Method::UniformL1Params, uniform_params, sec("l1")));
        targets.push(target);
    }

    // 4. The authors' package at the same α, Torch-Pruning at the same MACs: their plans come
    // from the reference scripts (no scoring or selection stage of ours); they go through the
    // same `stages::apply`, `stages::evaluate` and `stages::finetune` below.
    eprintln!(
        "  [{}] network-pruner 2.16 get_metrics (minutes) …",
        net.key
    );
    let mut cmd = Command::new(python);
    cmd.env("BENCH_THREADS", &threads)
        .arg(&script)
        .arg("package")
        .arg(&unpruned)
        .arg(&calibration_path)
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
        let mut r = bench
            .evaluate_plan(plan, &name)
            .with_context(|| format!("{} at α = {alpha}", method.title()))?;
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

/// Runs the comparison (or, with `--tables-only`, only rebuilds its tables).
pub fn run(o: &Options) -> Result<()> {
    let start = Instant::now();
    let root = workspace_root();
    let dir = root.join("target/bench/compare");
    if !o.tables_only {
        let python = reference_python(
            o.python.as_deref(),
            "the comparison (network-pruner, torch-pruning)",
        )?;
        tch::set_num_threads(i32::try_from(o.threads).context("--threads is too large")?);
        for net in NETS.iter().filter(|n| o.nets.iter().any(|k| k == n.key)) {
            eprintln!("bench compare: {}", net.title);
            let net_start = Instant::now();
            let mut result = run_net(net, &root, &python, o)
                .with_context(|| format!("bench compare: {}", net.title))?;
            result["minutes"] = json!(net_start.elapsed().as_secs_f64() / 60.0);
            write_json(&dir.join(net.key).join("result.json"), &result)?;
        }
    }
    let minutes = start.elapsed().as_secs_f64() / 60.0;
    let keys: Vec<&str> = NETS.iter().map(|n| n.key).collect();
    let (summary, md) = tables::rebuild(&dir, &keys)?;
    println!("{md}");
    println!(
        "summary: {} (this run: {minutes:.1} min)",
        summary.display()
    );
    if !o.no_docs {
        let docs = root.join("docs/results.md");
        tables::write_docs(&docs, &md)?;
        println!("tables written to {}", docs.display());
    }
    Ok(())
}

/// Draws the calibration samples of a bench run (`draw` from the training split, which is
/// then dropped) and writes them to `dir/calibration.safetensors` for the reference scripts
/// (the authors' package, Torch-Pruning), which score the same samples.
pub(crate) fn draw_calibration(
    model: &Model,
    train: Source,
    transform: &Transform,
    draw: &DrawSettings,
    dir: &Path,
) -> Result<(fair_scoring::Calibration, PathBuf)> {
    let (calibration, _) = draw.draw(model.graph(), &train, transform)?;
    drop(train);
    let path = dir.join("calibration.safetensors");
    let (x, y) = calibration.tensors();
    fair_runtime::write_safetensors(&path, &[("inputs".into(), x), ("labels".into(), y)])?;
    Ok((calibration, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_sort_in_table_order_with_distinct_keys() {
        let mut all = [
            Method::TodL1,
            Method::UniformL1Params,
            Method::TorchPruning,
            Method::UniformL1,
            Method::Package,
            Method::Fair,
        ];
        all.sort();
        assert_eq!(all[0], Method::Fair);
        assert_eq!(all[5], Method::TodL1);
        let keys: std::collections::BTreeSet<&str> = all.iter().map(|m| m.key()).collect();
        assert_eq!(keys.len(), all.len());
    }

    #[test]
    fn uniform_targets_sit_just_below_fair_and_vanish_at_zero() {
        assert_eq!(uniform_target(0.5), Some(0.499999));
        assert_eq!(uniform_target(0.1234567), Some(0.123456));
        assert_eq!(uniform_target(0.0), None);
        assert_eq!(uniform_target(5e-7), None);
    }

    #[test]
    fn nets_name_their_configs() {
        let root = workspace_root();
        for net in &NETS {
            let config = RunConfig::load(&root.join(net.config)).unwrap();
            assert_eq!(config.model.zoo.as_deref(), Some(net.zoo), "{}", net.key);
            assert!(net.finetune_fraction > 0.0 && net.finetune_fraction <= 1.0);
        }
    }

    #[test]
    fn plans_of_other_models_are_refused() {
        let graph = fair_zoo::build("vgg_compact", &[1, 28, 28], 10).unwrap();
        let model = Model::new(graph, tch::Device::Cpu, 0).unwrap();
        let digest = fair_scoring::model_digest(&model).unwrap();
        let path = Path::new("p.json");
        let mut plan = Plan::new();
        assert!(
            check_digests(&plan, path, &model, &digest).is_ok(),
            "no digests"
        );
        plan.graph_digest = Some(graph_digest(model.graph()));
        plan.model_digest = Some(digest.clone());
        assert!(check_digests(&plan, path, &model, &digest).is_ok());
        plan.model_digest = Some("0".repeat(64));
        let e = check_digests(&plan, path, &model, &digest).unwrap_err();
        assert!(e.to_string().contains("other weights"), "{e}");
        plan.model_digest = None;
        plan.graph_digest = Some("0".repeat(64));
        let e = check_digests(&plan, path, &model, &digest).unwrap_err();
        assert!(e.to_string().contains("another architecture"), "{e}");
    }

    #[test]
    fn the_stages_measure_a_plan_as_the_direct_calls_did() {
        // A toy model and split; a plan from L1 scores at half the MACs.
        tch::set_num_threads(1);
        let graph = fair_zoo::build("vgg_compact", &[1, 8, 8], 2).unwrap();
        let model = Model::new(graph, tch::Device::Cpu, 3).unwrap();
        let n = 48;
        let pixels = (0..n * 64)
            .map(|i| ((i * 37 + (i / 64) * 11) % 251) as u8)
            .collect();
        let labels = (0..n as i64).map(|i| i % 2).collect();
        let classes = vec!["a".into(), "b".into()];
        let data = fair_data::Dataset::new("toy", [1, 8, 8], pixels, labels, classes).unwrap();
        let data = Source::Memory(data);
        let train_transform = Transform {
            mean: vec![0.5],
            std: vec![0.25],
            ..Default::default()
        };
        let eval_transform = train_transform.for_evaluation();
        let settings = TrainSettings {
            epochs: 1,
            batch_size: 16,
            lr: FINETUNE_LR,
            ..Default::default()
        };
        let names = ["l1".to_owned(), "l2".to_owned()];
        let scores = stages::score(
            &model,
            None,
            &Registry::default(),
            &names,
            &fair_scoring::ScoringSettings::default(),
            None,
            Progress::QUIET,
        )
        .unwrap()
        .scores;
        let selector = stages::selector(
            &scores,
            Counts::Tod,
            "l1",
            "l2",
            "l1",
            SelectOptions::default(),
        )
        .unwrap();
        let plan = stages::select(&selector, Goal::Macs(0.5), Counts::Tod)
            .unwrap()
            .plan();

        // What `evaluate_plan` called before: surgery, evaluation and training directly.
        let mut before = fair_surgery::apply(&model, &plan, &ResolveOptions::default())
            .unwrap()
            .model;
        let one_shot_before = fair_train::evaluate(&before, &data, &eval_transform, EVAL_BATCH)
            .unwrap()
            .top1;
        fair_train::train(
            &mut before,
            &data,
            None,
            &train_transform,
            &eval_transform,
            &settings,
            false,
        )
        .unwrap();
        let tuned_before = fair_train::evaluate(&before, &data, &eval_transform, EVAL_BATCH)
            .unwrap()
            .top1;

        // The stages, as `Bench::apply` and `evaluate_plan` call them now.
        let resolution = Resolution::new(model.graph(), &plan, &ResolveOptions::default()).unwrap();
        let mut after = stages::apply(&model, &resolution).unwrap();
        let one_shot = stages::evaluate(&after, &data, &eval_transform)
            .unwrap()
            .top1;
        stages::finetune(&mut after, None, &data, &train_transform, &settings, None).unwrap();
        let tuned = stages::evaluate(&after, &data, &eval_transform)
            .unwrap()
            .top1;

        assert!(after.graph().macs() < model.graph().macs());
        assert_eq!((one_shot, tuned), (one_shot_before, tuned_before));
        for (name, t) in before.named_tensors() {
            assert!(t.equal(after.tensor(&name).unwrap()), "{name}");
        }
        let untrained = stages::apply(&model, &resolution).unwrap();
        assert!(
            untrained
                .named_tensors()
                .into_iter()
                .any(|(name, t)| !t.equal(after.tensor(&name).unwrap())),
            "the fine-tuning ran"
        );
        // The size report written next to the model is the resolution's.
        let direct = fair_surgery::apply(&model, &plan, &ResolveOptions::default()).unwrap();
        assert_eq!(resolution.report(), direct.report);
    }

    /// A selector over `vgg_compact` with made-up scores: U and R rise with the unit index
    /// (the low-U units are not the high-R ones until past half the layer), L1 falls.
    fn selector() -> Selector {
        let graph = fair_zoo::build("vgg_compact", &[1, 28, 28], 10).unwrap();
        let layers: Vec<String> = graph
            .prunable_layers()
            .iter()
            .map(|l| l.to_string())
            .collect();
        let u: Vec<Vec<f64>> = layers
            .iter()
            .map(|l| (0..graph.units(l).unwrap()).map(|i| i as f64).collect())
            .collect();
        let l1: Vec<Vec<f64>> = u.iter().map(|v| v.iter().map(|x| -x).collect()).collect();
        fn refs(v: &[Vec<f64>]) -> Vec<&[f64]> {
            v.iter().map(Vec::as_slice).collect()
        }
        Selector::new(
            graph.clone(),
            layers,
            &refs(&u),
            &refs(&u),
            &refs(&l1),
            SelectOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn counts_list_every_scored_layer_with_its_units() {
        let s = selector();
        let selection = s.select(Goal::Alpha(0.3), Counts::Tod).unwrap();
        let c = counts(&s, &selection);
        let rows = c.as_array().unwrap();
        assert_eq!(rows.len(), s.layers().len());
        for ((row, layer), &k) in rows.iter().zip(s.layers()).zip(&selection.counts) {
            assert_eq!(row["layer"], json!(layer));
            assert_eq!(row["units"], json!(s.graph().units(layer).unwrap()));
            assert_eq!(row["count"], json!(k));
        }
        assert!(
            selection.counts.iter().any(|&k| k > 0),
            "α = 0.3 removes units"
        );
    }

    #[test]
    fn uniform_plans_reach_the_target_or_remove_nothing() {
        let s = selector();
        assert!(uniform_plan(&s, None).unwrap().is_empty());
        let plan = uniform_plan(&s, Some(Goal::Macs(0.3))).unwrap();
        assert!(!plan.is_empty());
        assert!(plan.graph_digest.is_some(), "our plans carry digests");
        let selection = s.select(Goal::Macs(0.3), Counts::Uniform).unwrap();
        assert!(selection.reduction().1 >= 0.3);
        assert_eq!(selection.plan(), plan);
    }
}
