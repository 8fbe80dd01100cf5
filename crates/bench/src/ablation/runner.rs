//! The runner: one network and seed ([`run_seed`]) trained, carved, calibrated, scored,
//! planned by every method and measured, as a [`SeedResult`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use fair_analysis::{
    Goal, Method as Counts, Plan, Resolution, ResolveOptions, ScoreFile, Selector,
};
use fair_data::{ImageSource, Source, Transform};
use fair_pipeline::stages::{self, AfterSurgery, OnData};
use fair_pipeline::{DrawSettings, RunConfig};
use fair_runtime::Model;
use fair_scoring::{Progress, Registry, ScoringSettings};
use fair_train::{BnRecalibration, Distillation, Reconstruction, TrainSettings};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::experiment::{
    Method, Options, R_BATCH, RECALIBRATION, VAL_SEED, Variant, scoring_label, target_key,
};
use super::results::{
    Figures, Measured, Outcome, ReconstructionFigures, ReconstructionSettings, Row, RowLatency,
    SeedResult, Settings, Top1, Tuned, Unpruned,
};
use crate::compare::{EVAL_BATCH, Net, SUBSET_SEED, check_digests, create_dir, run_python};
use crate::{read_as, write_json};

/// The validation carve-out: per class (ascending id), a permutation drawn from `seed`; its
/// first `per_class` images are the validation split, the rest the training part. Both lists
/// ascending. An error when a class has no image left for training.
pub fn carve_indices(
    labels: &[i64],
    per_class: usize,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let mut by_class: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut val, mut rest) = (Vec::new(), Vec::new());
    for (class, mut idx) in by_class {
        if idx.len() <= per_class {
            bail!(
                "class {class} has {} training images: a validation split of {per_class} per class leaves none to train on (lower --val-per-class)",
                idx.len()
            );
        }
        idx.shuffle(&mut rng);
        val.extend_from_slice(&idx[..per_class]);
        rest.extend_from_slice(&idx[per_class..]);
    }
    val.sort_unstable();
    rest.sort_unstable();
    Ok((val, rest))
}

fn subset(source: &Source, name: String, indices: &[usize]) -> Result<Source> {
    Ok(match source {
        Source::Memory(d) => Source::Memory(d.subset(name, indices)),
        Source::Folder(f) => Source::Folder(f.subset(name, indices)?),
    })
}

/// `train` split into (validation, training part) by [`carve_indices`].
pub fn carve(train: &Source, per_class: usize, seed: u64) -> Result<(Source, Source)> {
    let (val, rest) = carve_indices(train.labels(), per_class, seed)?;
    let base = train.name().to_owned();
    Ok((
        subset(train, format!("{base} (validation)"), &val)?,
        subset(train, format!("{base} (minus validation)"), &rest)?,
    ))
}

/// Top-1 on the validation split and the test split. Not `stages::evaluate`, which refuses
/// a model whose test loss is not finite: the ablation records the top-1 of every plan.
fn top1(model: &Model, val: &Source, test: &Source, t: &Transform) -> Result<Top1> {
    let v = fair_train::evaluate(model, val, t, EVAL_BATCH)?.top1;
    let te = fair_train::evaluate(model, test, t, EVAL_BATCH)?.top1;
    Ok(Top1 { val: v, test: te })
}

/// `trained.json`'s settings: what the trained model of a seed depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TrainedSettings {
    config: String,
    epochs: usize,
    seed: u64,
    val_per_class: usize,
    val_seed: u64,
}

/// `trained.json`: the trained model's settings and its top-1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TrainedStamp {
    settings: TrainedSettings,
    top1: Top1,
}

/// The fine-tuning settings a plan's figures depend on (in [`RunKey`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FinetuneKey {
    lr: f64,
    seed: u64,
    batch_size: usize,
}

/// What a plan's stored figures depend on (`bench.json`'s `key`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunKey {
    /// The trained model.
    trained: TrainedStamp,
    /// The plan.
    plan: Plan,
    /// Fraction of the training part each fine-tune sees.
    finetune_fraction: f64,
    /// The fine-tuning's learning rate, seed and batch size.
    finetune: FinetuneKey,
    /// The fine-tuning settings (epochs set per budget).
    train_settings: TrainSettings,
    /// The training and the evaluation transform.
    transforms: [Transform; 2],
    /// The BatchNorm recalibration.
    recalibration: BnRecalibration,
    /// The reader reconstruction, if any (`null`).
    reconstruction: Option<Reconstruction>,
}

/// `bench.json`: a plan's figures and what they depend on. A file whose key does not read
/// (written for another format) is a key that differs: the plan is measured afresh.
#[derive(Serialize, Deserialize)]
struct StoredRun {
    key: RunKey,
    figures: Figures,
}

/// What every plan of one network and seed is measured with.
struct Seeded<'a> {
    dir: PathBuf,
    model: Model,
    model_digest: String,
    /// The trained model (`trained.json`).
    trained: TrainedStamp,
    finetune: Source,
    finetune_fraction: f64,
    val: &'a Source,
    test: &'a Source,
    train_transform: Transform,
    eval_transform: Transform,
    /// Fine-tuning settings (epochs set per budget).
    finetune_settings: TrainSettings,
    recalibration: BnRecalibration,
    /// Reader reconstruction before the recalibration (`--reconstruct`).
    reconstruction: Option<Reconstruction>,
    /// Distillation from the unpruned model, fine-tuned as an extra column per budget.
    distill: Option<Distillation>,
}

impl Seeded<'_> {
    /// One plan measured: one-shot, after BatchNorm recalibration (preceded by reader
    /// reconstruction with `--reconstruct`), and fine-tuned from the recalibrated model for
    /// every budget. Reuses the figures of an identical earlier run (same trained model, plan,
    /// fine-tuning set, reconstruction and recalibration) budget by budget.
    fn evaluate_plan(&self, plan_path: &Path, name: &str, budgets: &[usize]) -> Result<Figures> {
        let name = match self.reconstruction {
            Some(_) => format!("{name}-reconstructed"),
            None => name.to_owned(),
        };
        let out = self.dir.join("runs").join(name);
        create_dir(&out)?;
        let plan = Plan::load(plan_path)?;
        let key = RunKey {
            trained: self.trained.clone(),
            plan: plan.clone(),
            finetune_fraction: self.finetune_fraction,
            finetune: FinetuneKey {
                lr: self.finetune_settings.lr,
                seed: self.finetune_settings.seed,
                batch_size: self.finetune_settings.batch_size,
            },
            train_settings: self.finetune_settings.clone(),
            transforms: [self.train_transform.clone(), self.eval_transform.clone()],
            recalibration: self.recalibration.clone(),
            reconstruction: self.reconstruction.clone(),
        };
        let stored = out.join("bench.json");
        let start = out.join("start.safetensors");
        let mut reused = 0;
        let resolve = || Resolution::new(self.model.graph(), &plan, &ResolveOptions::default());
        let mut figures = match read_as::<StoredRun>(&stored) {
            Ok(s) if s.key == key && start.exists() => s.figures,
            _ => {
                check_digests(&plan, plan_path, &self.model, &self.model_digest)?;
                let resolution = resolve()?;
                let model = stages::apply(&self.model, &resolution)?;
                let (params, macs) = (model.graph().param_count(), model.graph().macs());
                let one_shot = top1(&model, self.val, self.test, &self.eval_transform)?;
                // The pipeline's steps after surgery, in its order: reconstruction (with
                // `--reconstruct`), then the BatchNorm recalibration.
                let steps = AfterSurgery {
                    reconstruction: self.reconstruction.clone().map(|settings| OnData {
                        settings,
                        train: &self.finetune,
                        transform: self.eval_transform.clone(),
                    }),
                    recalibration: Some(OnData {
                        settings: self.recalibration.clone(),
                        train: &self.finetune,
                        transform: self.eval_transform.clone(),
                    }),
                };
                let done = stages::after_surgery(&self.model, &model, &resolution, &steps, None)?;
                // Stored as before: the reconstruction's layers, samples and time, and the
                // recalibration's `fair_train::RecalibrationReport`.
                let reconstruction = done.reconstruction.map(|r| ReconstructionFigures {
                    layers: r
                        .layers
                        .into_iter()
                        .map(|l| fair_train::LayerFit {
                            layer: l.layer,
                            inputs: l.inputs,
                            error_before: l.error_before,
                            error_after: l.error_after,
                            skipped: l.skipped,
                        })
                        .collect(),
                    samples: r.samples,
                    seconds: Some(r.seconds),
                    settings: None,
                });
                let recalibration = done.recalibration.map(|r| fair_train::RecalibrationReport {
                    layers: r.layers,
                    batches: r.batches,
                    samples: r.samples,
                });
                let recalibrated = top1(&model, self.val, self.test, &self.eval_transform)?;
                model.save_weights(&start)?;
                let figures = Figures {
                    params,
                    macs,
                    one_shot,
                    recalibrated,
                    recalibration,
                    reconstruction,
                    finetuned: BTreeMap::new(),
                    distilled: BTreeMap::new(),
                    reused_budgets: None,
                };
                write_json(
                    &stored,
                    &StoredRun {
                        key: key.clone(),
                        figures: figures.clone(),
                    },
                )?;
                figures
            }
        };
        let mut graph = None;
        let mut jobs: Vec<(usize, Option<&Distillation>)> = Vec::new();
        for &epochs in budgets {
            jobs.push((epochs, None));
            if let Some(d) = &self.distill {
                jobs.push((epochs, Some(d)));
            }
        }
        for (epochs, distill) in jobs {
            let b = epochs.to_string();
            let done = match distill {
                None => figures.finetuned.contains_key(&b),
                Some(d) => figures
                    .distilled
                    .get(&d.weight.to_string())
                    .is_some_and(|f| f.contains_key(&b)),
            };
            if done {
                reused += 1;
                continue;
            }
            let graph = match &graph {
                Some(g) => g,
                None => graph.insert(stages::apply(&self.model, &resolve()?)?.graph().clone()),
            };
            let mut model = Model::from_safetensors(graph.clone(), &start, tch::Device::Cpu)?;
            let settings = TrainSettings {
                epochs,
                ..self.finetune_settings.clone()
            };
            let t = Instant::now();
            // `stages::finetune` evaluates with the training transform's evaluation form,
            // which is `eval_transform`.
            stages::finetune(
                &mut model,
                distill.map(|d| (&self.model, d)),
                &self.finetune,
                &self.train_transform,
                &settings,
                None,
            )?;
            let r = top1(&model, self.val, self.test, &self.eval_transform)?;
            let r = Tuned {
                val: r.val,
                test: r.test,
                seconds: Some(t.elapsed().as_secs_f64()),
            };
            match distill {
                None => figures.finetuned.insert(b, r),
                Some(d) => figures
                    .distilled
                    .entry(d.weight.to_string())
                    .or_default()
                    .insert(b, r),
            };
            write_json(
                &stored,
                &StoredRun {
                    key: key.clone(),
                    figures: figures.clone(),
                },
            )?;
        }
        figures.reused_budgets = Some(reused);
        Ok(figures)
    }
}

/// Trains the network for `seed` on the training part (reused when trained with the same
/// settings); returns the stamp (settings and unpruned top-1 on validation and test).
#[allow(clippy::too_many_arguments)]
fn trained(
    net: &Net,
    dir: &Path,
    config: &RunConfig,
    (train, val, test): (&Source, &Source, &Source),
    eval_transform: &Transform,
    epochs: usize,
    seed: u64,
    val_per_class: usize,
) -> Result<TrainedStamp> {
    let weights = dir.join("model.safetensors");
    let stamp = dir.join("trained.json");
    let want = TrainedSettings {
        config: net.config.to_owned(),
        epochs,
        seed,
        val_per_class,
        val_seed: VAL_SEED.wrapping_add(seed),
    };
    let previous = read_as::<TrainedStamp>(&stamp).ok();
    if !weights.exists() || previous.as_ref().map(|t| &t.settings) != Some(&want) {
        eprintln!("  [{} seed {seed}] training {epochs} epochs …", net.key);
        let mut model = Model::new(
            config.graph()?,
            tch::Device::Cpu,
            config.model.seed.wrapping_add(seed),
        )?;
        let base = config.train.clone().unwrap_or_default();
        let settings = TrainSettings {
            epochs,
            seed: base.seed.wrapping_add(seed),
            ..base
        };
        // Training the unpruned network is no pipeline stage.
        fair_train::train(
            &mut model,
            train,
            None,
            &config.transform,
            eval_transform,
            &settings,
            false,
        )?;
        model.save_weights(&weights)?;
        let top1 = top1(&model, val, test, eval_transform)?;
        write_json(
            &stamp,
            &TrainedStamp {
                settings: want,
                top1,
            },
        )?;
    }
    read_as(&stamp)
}

/// The score files a run needs: one per distinct scoring setting of the selected FAIR
/// variants, plus the paper's (with L1, for the uniform baseline).
fn score_all(
    model: &Model,
    calibration: &fair_scoring::Calibration,
    methods: &[Method],
    draw: &DrawSettings,
    dir: &Path,
) -> Result<BTreeMap<String, ScoreFile>> {
    let paper = Variant::of(&[]).scoring();
    let mut wanted = vec![paper];
    for m in methods {
        if let Some(s) = m.suspects() {
            let scoring = Variant::of(s).scoring();
            if !wanted.contains(&scoring) {
                wanted.push(scoring);
            }
        }
    }
    let mut files = BTreeMap::new();
    for scoring in wanted {
        let mut s = ScoringSettings::paper(R_BATCH);
        s.u.analysis_point = scoring.0;
        s.r.mode = scoring.1;
        if !scoring.2 {
            s.u.bn_drift = None;
            s.u.w1 = fair_scoring::Wasserstein::Exact;
        }
        s.u.samples_per_class = draw.per_class;
        s.u.max_classes = draw.max_classes;
        (s.u.seed, s.r.seed, s.seed) = (draw.seed, draw.seed, draw.seed);
        let label = scoring_label(scoring);
        let names = ["u", "r", "l1", "group-l1"].map(String::from);
        let file = stages::score(
            model,
            Some(calibration),
            &Registry::default(),
            &names,
            &s,
            None,
            Progress::QUIET,
        )
        .with_context(|| format!("scoring ({label})"))?
        .scores;
        file.save(&dir.join(format!("scores-{label}.json")))?;
        files.insert(label, file);
    }
    Ok(files)
}

/// A digest of a text (to notice that a reference script changed; not for security).
fn text_digest(text: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// `plans/tp-<kind>.stamp.json`: what the Torch-Pruning script's plans depend on.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct TpStamp {
    /// The trained model's digest.
    model: String,
    /// The calibration draw: samples per class, classes, seed.
    draw: (usize, usize, u64),
    /// The script's [`text_digest`].
    script: String,
}

/// `plans/tp-<kind>.json`, written by `xtask/bench/ablation_reference.py`: the fields read
/// here (others ignored).
#[derive(Debug, Deserialize)]
pub(super) struct TpSummary {
    /// By target ([`target_key`]): the script's free-form record of it (`ratio`, `macs`,
    /// `params`, `macs_removed`, or `error`), a `Value` as the external script writes it; it
    /// is stored verbatim in the rows ([`Measured::reference`]).
    #[serde(default)]
    pub(super) targets: BTreeMap<String, serde_json::Value>,
}

impl TpSummary {
    /// The script's error at `key`, if it failed there.
    pub(super) fn error(&self, key: &str) -> Option<&str> {
        self.targets.get(key)?.get("error")?.as_str()
    }
}

/// Checks the model fair-pruner built from a Torch-Pruning plan against Torch-Pruning's own
/// pruned model, where the script recorded its matrix-product MACs (`matmul_macs`, written
/// for models with attention, whose q/k/v channels it converts to heads): the parameters and
/// those MACs must be equal, else the plan was not read back faithfully.
fn check_reference(params: usize, macs: u64, reference: Option<&serde_json::Value>) -> Result<()> {
    let Some(r) = reference else { return Ok(()) };
    let Some(theirs) = r.get("matmul_macs").and_then(|v| v.as_u64()) else {
        return Ok(());
    };
    let their_params = r.get("params").and_then(|v| v.as_u64());
    anyhow::ensure!(
        theirs == macs && their_params == Some(params as u64),
        "the plan read back from Torch-Pruning's model gives {params} parameters and {macs} \
         MACs, Torch-Pruning's own model {} and {theirs}",
        their_params.map_or("(no count)".to_owned(), |p| p.to_string())
    );
    Ok(())
}

/// One network and seed: train, carve, calibrate, score, plan, measure.
pub fn run_seed(
    net: &Net,
    seed: u64,
    root: &Path,
    python: Option<&Path>,
    o: &Options,
) -> Result<SeedResult> {
    let start = Instant::now();
    let dir = root
        .join("target/bench/ablation")
        .join(net.key)
        .join(format!("seed-{seed}"));
    create_dir(&dir)?;
    let config = RunConfig::load(&root.join(net.config))?;
    let graph = config.graph()?;
    let input = fair_pipeline::image_input(&graph)?;
    config.transform.check_input(input, 1)?;
    let (full_train, test, _) = config.data(input)?;
    let (val, train) = carve(&full_train, o.val_per_class, VAL_SEED.wrapping_add(seed))?;
    drop(full_train);
    let eval_transform = config.transform.for_evaluation();

    // 1. The trained model of this seed.
    let stamp = trained(
        net,
        &dir,
        &config,
        (&train, &val, &test),
        &eval_transform,
        o.train_epochs,
        seed,
        o.val_per_class,
    )?;
    let model = Model::from_safetensors(graph, &dir.join("model.safetensors"), tch::Device::Cpu)?;
    let f = o.finetune_fraction.unwrap_or(net.finetune_fraction);
    let (part, _) =
        train.split_stratified(SUBSET_SEED, |n| ((f * n as f64).round() as usize).max(1));
    let finetune = part.with_name(format!("{} ({:.0}%)", train.name(), 100.0 * f));
    let base = config.train.clone().unwrap_or(TrainSettings {
        epochs: 3,
        lr: net.finetune_lr,
        ..Default::default()
    });
    let unpruned_top1 = stamp.top1;
    let bench = Seeded {
        dir: dir.clone(),
        model_digest: fair_scoring::model_digest(&model)?,
        model,
        trained: stamp,
        finetune,
        finetune_fraction: f,
        val: &val,
        test: &test,
        train_transform: config.transform.clone(),
        eval_transform,
        finetune_settings: TrainSettings {
            lr: net.finetune_lr,
            seed: base.seed.wrapping_add(seed),
            ..base
        },
        recalibration: BnRecalibration {
            seed: SUBSET_SEED.wrapping_add(seed),
            ..RECALIBRATION
        },
        reconstruction: o.reconstruct.then(|| Reconstruction {
            seed: SUBSET_SEED.wrapping_add(seed),
            ..Reconstruction::default()
        }),
        distill: o.distill.map(|weight| Distillation {
            weight,
            ..Distillation::default()
        }),
    };

    // 2. The unpruned export (for Torch-Pruning), calibration samples, scores.
    let unpruned = dir.join("unpruned");
    {
        let staged = fair_fs::StagedDir::new(&unpruned)?;
        fair_surgery::export(&bench.model, staged.path())?;
        staged.commit()?;
    }
    let (params0, macs0) = (
        bench.model.graph().param_count(),
        bench.model.graph().macs(),
    );
    let d = DrawSettings::default();
    let draw = DrawSettings {
        per_class: o.per_class,
        max_classes: config.prune.max_classes.unwrap_or(d.max_classes),
        seed: config.prune.seed.unwrap_or(d.seed).wrapping_add(seed),
    };
    let (calibration, calibration_path) =
        crate::compare::draw_calibration(&bench.model, train, &config.transform, &draw, &dir)?;
    eprintln!("  [{} seed {seed}] scoring …", net.key);
    let scores = score_all(&bench.model, &calibration, &o.methods()?, &draw, &dir)?;

    // 3. Plans at every target: ours from the scores, Torch-Pruning's from the script; or,
    // with `--latency-target`, fair-latency's and every other method's at its latency.
    let cx = PlanContext {
        net: net.key,
        seed,
        root,
        python,
        model: &bench.model,
        model_digest: &bench.model_digest,
        scores: &scores,
        unpruned: &unpruned,
        calibration: &calibration_path,
        draw: &draw,
        plans: dir.join("plans"),
        threads: o.threads,
    };
    create_dir(&cx.plans)?;
    let methods = o.methods()?;
    let mut rows = match o.latency_target {
        None => mac_plans(&cx, &methods, &o.macs)?,
        Some(target) => super::latency::plans(&cx, &methods, target, o)?,
    };

    // 4. Every plan through the same surgery, recalibration, evaluation and fine-tuning.
    rows.sort_by(|a, b| a.target.total_cmp(&b.target).then(a.method.cmp(&b.method)));
    let total = rows.len();
    let mut results = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        let PlannedRow {
            target: t,
            method: m,
            plan,
            name,
            reference,
            latency,
        } = row;
        eprintln!(
            "  [{} seed {seed}] {}/{total}: {} at {:.0}% of {} …",
            net.key,
            i + 1,
            m.key(),
            100.0 * t,
            if o.latency_target.is_some() {
                "latency"
            } else {
                "MACs"
            }
        );
        let measured = plan
            .and_then(|p| bench.evaluate_plan(&p, &name, &o.finetune_epochs))
            .and_then(|figures| {
                check_reference(figures.params, figures.macs, reference.as_ref())?;
                Ok(figures)
            });
        let outcome = match measured {
            Ok(mut figures) => {
                if let (Some(settings), Some(r)) =
                    (&bench.reconstruction, figures.reconstruction.as_mut())
                {
                    r.settings = Some(ReconstructionSettings::from(settings));
                }
                Outcome::Measured(Box::new(Measured {
                    macs_removed: 1.0 - figures.macs as f64 / macs0 as f64,
                    figures,
                    reference,
                    latency,
                }))
            }
            Err(e) => {
                eprintln!("    failed: {e:#}");
                Outcome::Failed {
                    error: format!("{e:#}"),
                }
            }
        };
        results.push(Row {
            target: t,
            method: m.key().to_owned(),
            reconstructed: Some(bench.reconstruction.is_some()),
            outcome,
        });
    }
    Ok(SeedResult {
        net: net.key.to_owned(),
        title: net.title.to_owned(),
        seed,
        settings: Settings {
            train_epochs: o.train_epochs,
            val_per_class: o.val_per_class,
            finetune_fraction: f,
            per_class: o.per_class,
            recalibration: bench.recalibration.clone(),
            reconstruction: None,
            latency: o.latency(),
        },
        threads: o.threads,
        unpruned: Unpruned {
            params: params0,
            macs: macs0,
            top1: unpruned_top1,
        },
        results,
        minutes: start.elapsed().as_secs_f64() / 60.0,
    })
}

/// What every method's plans are made from: the seed's trained model, scores and
/// calibration draw, the unpruned export (for Torch-Pruning) and where plans go.
pub(super) struct PlanContext<'a> {
    pub(super) net: &'a str,
    pub(super) seed: u64,
    pub(super) root: &'a Path,
    pub(super) python: Option<&'a Path>,
    pub(super) model: &'a Model,
    pub(super) model_digest: &'a str,
    /// Score files by scoring label ([`score_all`]).
    pub(super) scores: &'a BTreeMap<String, ScoreFile>,
    /// fair-pruner's export of the unpruned model.
    pub(super) unpruned: &'a Path,
    /// The calibration samples' file.
    pub(super) calibration: &'a Path,
    pub(super) draw: &'a DrawSettings,
    /// `plans/` of the seed.
    pub(super) plans: PathBuf,
    /// libtorch threads (Torch-Pruning's too).
    pub(super) threads: usize,
}

/// One row to measure: a method's plan at a target (or why there is none), the name its
/// figures are stored under (`runs/<name>`), Torch-Pruning's own record of it, and, at equal
/// latency, how it was matched.
pub(super) struct PlannedRow {
    pub(super) target: f64,
    pub(super) method: Method,
    pub(super) plan: Result<PathBuf>,
    pub(super) name: String,
    pub(super) reference: Option<serde_json::Value>,
    pub(super) latency: Option<RowLatency>,
}

impl PlanContext<'_> {
    /// The selector and counts of one of our methods (ToD selectors: U removes, R protects,
    /// as `Selector::from_scores` made them; a variant's counts pick ToD or uniform counts);
    /// `None` for Torch-Pruning's.
    pub(super) fn selector(&self, m: Method) -> Option<Result<(Selector, Counts)>> {
        let paper = scoring_label(Variant::of(&[]).scoring());
        let made = match (m.suspects(), m) {
            (Some(s), _) => {
                let v = Variant::of(s);
                let file = &self.scores[&scoring_label(v.scoring())];
                stages::selector(file, Counts::Tod, "u", "r", v.rank, v.select_options())
                    .map(|s| (s, v.counts))
            }
            (None, Method::UniformL1) => {
                let file = &self.scores[&paper];
                stages::selector(file, Counts::Tod, "u", "r", "l1", Default::default())
                    .map(|s| (s, Counts::Uniform))
            }
            _ => return None,
        };
        Some(made.with_context(|| format!("{}: selector", m.key())))
    }

    /// Runs `xtask/bench/ablation_reference.py` for Torch-Pruning's `kind` at `targets`
    /// (MACs fractions) into `out` and reads its summary (`out/tp-<kind>.json`); its plans
    /// are `out/tp-<kind>-<target>.json`.
    pub(super) fn torch_pruning(
        &self,
        kind: &str,
        out: &Path,
        targets: &[f64],
    ) -> Result<TpSummary> {
        let python = self
            .python
            .context("Torch-Pruning methods need the reference Python")?;
        let mut cmd = Command::new(python);
        cmd.env("BENCH_THREADS", self.threads.to_string())
            .arg(self.root.join("xtask/bench/ablation_reference.py"))
            .arg(kind)
            .arg(self.unpruned)
            .arg(self.calibration)
            .arg(out)
            .args(targets.iter().map(|&t| target_key(t)));
        run_python(cmd, &format!("Torch-Pruning {kind}"))?;
        read_as::<TpSummary>(&out.join(format!("tp-{kind}.json")))
    }
}

/// Step 3 at MACs targets: ours from the scores, Torch-Pruning's from its script (stored
/// plans reused while the model, draw and script are unchanged).
fn mac_plans(cx: &PlanContext, methods: &[Method], targets: &[f64]) -> Result<Vec<PlannedRow>> {
    let (net, seed, plans) = (cx.net, cx.seed, &cx.plans);
    let mut rows = Vec::new();
    let row = |t: f64, m: Method, plan: Result<PathBuf>, reference: Option<serde_json::Value>| {
        PlannedRow {
            target: t,
            method: m,
            plan,
            name: format!("{}-{}", m.key(), target_key(t)),
            reference,
            latency: None,
        }
    };
    for &m in methods {
        let Some(selector) = cx.selector(m) else {
            continue;
        };
        let selector = selector?;
        for &t in targets {
            let path = plans.join(format!("{}-{}.json", m.key(), target_key(t)));
            let made = stages::select(&selector.0, Goal::Macs(t), selector.1)
                .map_err(anyhow::Error::from)
                .and_then(|s| Ok(s.plan().save(&path)?))
                .map(|_| path);
            rows.push(row(t, m, made, None));
        }
    }
    for &m in methods {
        // Torch-Pruning's plans come from its own script; they go through the same
        // `stages::apply` and `stages::after_surgery` as ours (`evaluate_plan`).
        let Some(kind) = m.torch_pruning() else {
            continue;
        };
        let script = cx.root.join("xtask/bench/ablation_reference.py");
        // The script's plans depend on the trained model, the calibration draw and the script
        // itself: with all three unchanged and every target in its last summary, the stored
        // plans are reused.
        let stamp = TpStamp {
            model: cx.model_digest.to_owned(),
            draw: (cx.draw.per_class, cx.draw.max_classes, cx.draw.seed),
            script: text_digest(&std::fs::read_to_string(&script).unwrap_or_default()),
        };
        let stamp_path = plans.join(format!("tp-{kind}.stamp.json"));
        let summary_path = plans.join(format!("tp-{kind}.json"));
        let stored = read_as::<TpStamp>(&stamp_path).is_ok_and(|s| s == stamp)
            && read_as::<TpSummary>(&summary_path).is_ok_and(|summary| {
                targets.iter().all(|&t| {
                    let key = target_key(t);
                    summary.targets.get(&key).is_some_and(|v| !v.is_null())
                        && (summary.error(&key).is_some()
                            || plans.join(format!("tp-{kind}-{key}.json")).exists())
                })
            });
        let ran = if stored {
            eprintln!("  [{net} seed {seed}] Torch-Pruning ({kind}): stored plans");
            read_as::<TpSummary>(&summary_path)
        } else {
            eprintln!("  [{net} seed {seed}] Torch-Pruning ({kind}) …");
            cx.torch_pruning(kind, plans, targets).and_then(|summary| {
                write_json(&stamp_path, &stamp)?;
                Ok(summary)
            })
        };
        match ran {
            Ok(summary) => {
                for &t in targets {
                    let key = target_key(t);
                    let path = plans.join(format!("tp-{kind}-{key}.json"));
                    let made = match summary.error(&key) {
                        Some(e) => Err(anyhow::anyhow!("Torch-Pruning {kind}: {e}")),
                        None => Ok(path),
                    };
                    rows.push(row(t, m, made, summary.targets.get(&key).cloned()));
                }
            }
            Err(e) => {
                eprintln!("  [{net} seed {seed}] {}: {e:#}", m.key());
                for &t in targets {
                    rows.push(row(t, m, Err(anyhow::anyhow!("{e:#}")), None));
                }
            }
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_run_key_has_the_fields_it_had_and_reads_back() {
        let key = RunKey {
            trained: TrainedStamp {
                settings: TrainedSettings {
                    config: "configs/fashion-vgg.toml".into(),
                    epochs: 2,
                    seed: 1,
                    val_per_class: 500,
                    val_seed: VAL_SEED + 1,
                },
                top1: Top1 {
                    val: 0.9,
                    test: 0.89,
                },
            },
            plan: Plan::new(),
            finetune_fraction: 0.1,
            finetune: FinetuneKey {
                lr: 0.01,
                seed: 3,
                batch_size: 128,
            },
            train_settings: TrainSettings::default(),
            transforms: [
                Transform {
                    mean: vec![0.286],
                    std: vec![0.353],
                    ..Default::default()
                },
                Transform::default(),
            ],
            recalibration: RECALIBRATION,
            reconstruction: Some(Reconstruction::default()),
        };
        let json = serde_json::to_value(&key).unwrap();
        let fields: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        // The fields of the key the `Value` code wrote (in its sorted order).
        assert_eq!(
            fields,
            [
                "finetune",
                "finetune_fraction",
                "plan",
                "recalibration",
                "reconstruction",
                "train_settings",
                "trained",
                "transforms"
            ]
        );
        assert_eq!(
            json["finetune"],
            serde_json::json!({"lr": 0.01, "seed": 3, "batch_size": 128})
        );
        assert_eq!(json["trained"]["settings"]["val_seed"], VAL_SEED + 1);
        // Through the file's text (f32 means included) it reads back equal.
        let text = serde_json::to_string_pretty(&json).unwrap();
        assert_eq!(serde_json::from_str::<RunKey>(&text).unwrap(), key);
    }

    #[test]
    fn torch_pruning_models_with_attention_must_match_the_applied_plan() {
        let r = serde_json::json!({"params": 9617, "macs": 9999, "matmul_macs": 151360});
        assert!(check_reference(9617, 151_360, Some(&r)).is_ok());
        let err = check_reference(9617, 151_361, Some(&r)).unwrap_err();
        assert!(format!("{err}").contains("151361 MACs"), "{err}");
        assert!(check_reference(9616, 151_360, Some(&r)).is_err());
        // Without `matmul_macs` (models without attention) or a reference: nothing to check.
        let plain = serde_json::json!({"params": 1, "macs": 2});
        assert!(check_reference(5, 7, Some(&plain)).is_ok());
        assert!(check_reference(5, 7, None).is_ok());
    }

    #[test]
    fn the_validation_carve_out_is_disjoint_and_stratified() {
        // Classes 0, 1, 2 interleaved (7 images each), then 8 more of class 2.
        let labels: Vec<i64> = (0..29).map(|i| if i < 21 { i % 3 } else { 2 }).collect();
        let (val, rest) = carve_indices(&labels, 3, 7).unwrap();
        let mut all: Vec<usize> = val.iter().chain(&rest).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..labels.len()).collect::<Vec<_>>(), "a partition");
        for c in 0..3 {
            assert_eq!(
                val.iter().filter(|&&i| labels[i] == c).count(),
                3,
                "class {c}"
            );
        }
        assert!(val.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(carve_indices(&labels, 3, 7).unwrap().0, val, "seeded");
        assert_ne!(
            carve_indices(&labels, 3, 8).unwrap().0,
            val,
            "the seed matters"
        );
        assert!(carve_indices(&labels, 7, 0).is_err(), "class 0 has only 7");

        // Through a Source: the validation images are not in the training part.
        let pixels: Vec<u8> = (0..labels.len()).map(|i| i as u8).collect();
        let classes = vec!["a".into(), "b".into(), "c".into()];
        let d = fair_data::Dataset::new("toy", [1, 1, 1], pixels, labels, classes).unwrap();
        let (v, r) = carve(&Source::Memory(d), 3, 7).unwrap();
        let (Source::Memory(v), Source::Memory(r)) = (v, r) else {
            panic!("in memory")
        };
        assert_eq!((v.len(), r.len()), (9, 20));
        assert_eq!(v.labels.iter().filter(|&&l| l == 2).count(), 3);
        assert!(v.pixels.iter().all(|p| !r.pixels.contains(p)));
    }
}
