//! `fair-pruner score` and `fair-pruner ratios`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use fair_ir::Graph;
use fair_runtime::Model;
use fair_scoring::{
    AnalysisPoint, BnScale, Calibration, ConvDistance, L1Norm, L2Norm, LayerScores, Progress,
    Provenance, RMode, RScoreSettings, RandomScore, ScoreFile, Scorer, UScoreSettings, Wasserstein,
};
use fair_threshold::{CountOptions, TodCurve};

use crate::ModelArgs;
use crate::table::{human, render, thousands};

/// Criteria `score` can compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Criterion {
    /// U-Score: Wasserstein utilisation across classes (needs --data).
    U,
    /// R-Score: first-order Taylor reconstruction (needs --data).
    R,
    /// L1 norm of each unit's weights.
    L1,
    /// L2 norm of each unit's weights.
    L2,
    /// |γ| of the BatchNorm after the layer.
    Bn,
    /// Seeded random scores (a control).
    Random,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConvKind {
    /// Sliced W1 over random directions of the H·W channel map.
    Sliced,
    /// Exact 1-D W1 of the spatially averaged channel.
    Pooled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum W1Kind {
    /// Exact (SciPy's wasserstein_distance).
    Exact,
    /// The authors' package quantile-grid approximation.
    QuantileGrid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Analysis {
    /// The layer's own output (the authors' package default).
    LayerOutput,
    /// After the BatchNorm/ReLU that directly follow the layer.
    AfterActivation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RModeArg {
    /// Training-mode BatchNorm (batch statistics), running statistics untouched.
    Train,
    /// Eval mode.
    Eval,
}

/// Arguments of `fair-pruner score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Trained weights (safetensors with PyTorch state-dict names).
    #[arg(long, value_name = "FILE")]
    weights: PathBuf,
    /// Calibration data: a safetensors file with `inputs` [N, C, H, W] (float) and `labels` [N] (integer).
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// Where to write the scores (JSON with provenance).
    #[arg(long, value_name = "FILE", default_value = "scores.json")]
    out: PathBuf,
    /// Criteria to compute, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "u,r,l1")]
    criteria: Vec<Criterion>,
    /// Samples per class for the U-Score.
    #[arg(long, default_value_t = 32)]
    samples_per_class: usize,
    /// Compare at most this many classes (chosen with --seed).
    #[arg(long, default_value_t = 100)]
    max_classes: usize,
    /// How conv channels are compared.
    #[arg(long, value_enum, default_value = "sliced")]
    conv_distance: ConvKind,
    /// Random directions for the sliced distance.
    #[arg(long, default_value_t = 128)]
    projections: usize,
    /// 1-D Wasserstein variant for unequal sample sizes.
    #[arg(long, value_enum, default_value = "exact")]
    w1: W1Kind,
    /// Where units are read for the U-Score.
    #[arg(long, value_enum, default_value = "layer-output")]
    analysis: Analysis,
    /// Forward mode of the R-Score passes.
    #[arg(long, value_enum, default_value = "train")]
    r_mode: RModeArg,
    /// Batch size of the R-Score passes (calibration samples in file order).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Seed for sampling, directions, dropout and the random criterion.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// libtorch CPU threads [default: libtorch's choice].
    #[arg(long)]
    threads: Option<i32>,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

/// Arguments of `fair-pruner ratios`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("how").required(true).args(["alpha", "target_macs", "target_params"])))]
pub struct RatiosArgs {
    /// Scores written by `fair-pruner score`.
    #[arg(long, value_name = "FILE", default_value = "scores.json")]
    scores: PathBuf,
    /// Tolerance of Difference α in [0, 1]: larger removes more.
    #[arg(long)]
    alpha: Option<f64>,
    /// Find the smallest α that removes at least this fraction of MACs (e.g. 0.5).
    #[arg(long, value_name = "FRACTION")]
    target_macs: Option<f64>,
    /// Find the smallest α that removes at least this fraction of parameters.
    #[arg(long, value_name = "FRACTION")]
    target_params: Option<f64>,
    /// Every layer keeps at least this many units.
    #[arg(long, default_value_t = 1)]
    min_keep: usize,
    /// Round kept units up to a multiple of this.
    #[arg(long, default_value_t = 1)]
    round_to: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the FAIR plan for `fair-pruner apply`: in every layer, its ToD count of
    /// lowest-U units (coupled layers then settle by apply's --rule; `package` is the
    /// authors' rule).
    #[arg(long, value_name = "FILE")]
    write_plan: Option<PathBuf>,
    /// Which stored criterion orders the units removed by --write-plan: `u` (FAIR-Pruner) or
    /// any other in the score file (e.g. `l1` for "ToD counts + L1 ranking"; lowest first).
    #[arg(long, default_value = "u", requires = "write_plan")]
    rank_by: String,
    /// Baseline instead of ToD counts: remove the same fraction of every layer, the smallest
    /// that reaches --target-macs or --target-params (with --rank-by l1: uniform L1 pruning).
    #[arg(long, conflicts_with = "alpha")]
    uniform: bool,
}

pub fn score(args: &ScoreArgs) -> Result<()> {
    if let Some(t) = args.threads {
        tch::set_num_threads(t);
    }
    let device = fair_runtime::parse_device(&args.device)?;
    let graph = args.model.load()?;
    let model = Model::from_safetensors(graph, &args.weights, device)
        .with_context(|| format!("cannot load the weights {}", args.weights.display()))?;
    let data = match &args.data {
        Some(p) => Some(Calibration::from_safetensors(p)?),
        None => None,
    };
    if let Some(d) = &data {
        let want: Vec<i64> = model
            .graph()
            .shape_at(0)
            .iter()
            .map(|&v| v as i64)
            .collect();
        if d.sample_shape() != want {
            bail!(
                "the calibration inputs in {} have per-sample shape {:?}, but the model expects {:?}",
                args.data.as_ref().expect("data given").display(),
                d.sample_shape(),
                want
            );
        }
    }
    let point = match args.analysis {
        Analysis::LayerOutput => AnalysisPoint::LayerOutput,
        Analysis::AfterActivation => AnalysisPoint::AfterActivation,
    };
    let layers = fair_scoring::prunable_layers(model.graph(), point);
    if layers.is_empty() {
        bail!(
            "the model '{}' has no prunable layer (conv2d or linear other than the output)",
            model.graph().name()
        );
    }
    let u_settings = UScoreSettings {
        conv: match args.conv_distance {
            ConvKind::Sliced => ConvDistance::Sliced {
                projections: args.projections,
            },
            ConvKind::Pooled => ConvDistance::Pooled,
        },
        w1: match args.w1 {
            W1Kind::Exact => Wasserstein::Exact,
            W1Kind::QuantileGrid => Wasserstein::QuantileGrid,
        },
        max_classes: args.max_classes,
        samples_per_class: args.samples_per_class,
        batch_size: 256,
        seed: args.seed,
    };
    let r_settings = RScoreSettings {
        mode: match args.r_mode {
            RModeArg::Train => RMode::Train,
            RModeArg::Eval => RMode::Eval,
        },
        batch_size: args.batch_size,
        seed: args.seed,
    };
    let progress = Progress {
        enabled: !args.quiet,
    };
    let file = compute_scores(
        &model,
        data.as_ref(),
        &args.criteria,
        point,
        u_settings,
        r_settings,
        args.seed,
        progress,
    )?;
    let (notes, seconds) = (&file.provenance.notes, &file.provenance.seconds);
    file.save(&args.out)?;
    for n in notes {
        eprintln!("note: {n}");
    }
    let timing: Vec<String> = seconds
        .iter()
        .map(|(k, v)| format!("{k} {v:.2} s"))
        .collect();
    println!(
        "scored {} layers of '{}' ({}) → {}",
        layers.len(),
        model.graph().name(),
        timing.join(", "),
        args.out.display()
    );
    if let Some(kib) = peak_rss_kib() {
        println!("peak memory (resident): {:.1} MiB", kib as f64 / 1024.0);
    }
    Ok(())
}

/// The process's peak resident set size (Linux `VmHWM`), if known.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Computes `criteria` for every prunable layer of `model` and wraps them with provenance.
#[allow(clippy::too_many_arguments)]
pub fn compute_scores(
    model: &Model,
    data: Option<&Calibration>,
    criteria: &[Criterion],
    point: AnalysisPoint,
    u_settings: UScoreSettings,
    r_settings: RScoreSettings,
    seed: u64,
    progress: Progress,
) -> Result<ScoreFile> {
    let layers = fair_scoring::prunable_layers(model.graph(), point);
    let ctx = fair_scoring::Context {
        model,
        layers: &layers,
        data,
        progress,
    };
    let mut per_layer: Vec<BTreeMap<String, Vec<f64>>> = vec![BTreeMap::new(); layers.len()];
    let mut seconds = BTreeMap::new();
    let mut notes = Vec::new();
    for c in criteria {
        let start = Instant::now();
        let (name, scores) = match c {
            Criterion::U => {
                let data = data.context("the U-Score needs --data")?;
                let (s, n) = fair_scoring::u_scores(model, &layers, data, &u_settings, progress)?;
                notes.extend(n);
                ("u", s)
            }
            Criterion::R => ("r", fair_scoring::RScore(r_settings.clone()).score(&ctx)?),
            Criterion::L1 => ("l1", L1Norm.score(&ctx)?),
            Criterion::L2 => ("l2", L2Norm.score(&ctx)?),
            Criterion::Bn => ("bn", BnScale.score(&ctx)?),
            Criterion::Random => ("random", RandomScore { seed }.score(&ctx)?),
        };
        seconds.insert(name.to_owned(), start.elapsed().as_secs_f64());
        for (slot, s) in per_layer.iter_mut().zip(scores) {
            slot.insert(name.to_owned(), s);
        }
    }
    let file = ScoreFile {
        provenance: Provenance {
            fair_pruner_version: env!("CARGO_PKG_VERSION").to_owned(),
            model: model.graph().name().to_owned(),
            model_digest: fair_scoring::model_digest(model)?,
            data: data.map(|d| d.description().to_owned()).unwrap_or_default(),
            data_digest: match data {
                Some(d) => d.digest()?,
                None => String::new(),
            },
            samples: data.map_or(0, Calibration::len),
            u_settings,
            r_settings,
            analysis_point: point,
            notes,
            seconds,
        },
        graph: model.graph().to_spec(),
        layers: layers
            .iter()
            .zip(per_layer)
            .map(|(l, scores)| LayerScores {
                layer: l.name.clone(),
                analysis: l.analysis.clone(),
                units: l.units,
                scores,
            })
            .collect(),
    };
    Ok(file)
}

pub fn ratios(args: &RatiosArgs) -> Result<()> {
    let start = Instant::now();
    let file = ScoreFile::load(&args.scores)?;
    let t = Thresholder::new(&file, &args.scores)?;
    let (graph, curves) = (&t.graph, &t.curves);
    let options = CountOptions {
        min_keep: args.min_keep,
        round_to: args.round_to.max(1),
    };
    let (params0, macs0) = (graph.param_count() as f64, graph.macs() as f64);
    let goal = match (args.alpha, args.target_macs, args.target_params) {
        (Some(a), _, _) => Goal::Alpha(a),
        (None, Some(f), _) => Goal::Macs(f),
        (None, None, Some(f)) => Goal::Params(f),
        (None, None, None) => unreachable!("clap requires one of them"),
    };
    let (setting, counts) = if args.uniform {
        t.solve_uniform(goal, options)?
    } else {
        t.solve(goal, options)?
    };
    let what = if args.uniform { "ratio" } else { "alpha" };
    let kept = t.kept(&counts);
    let pruned = graph.with_units(&kept);
    let elapsed = start.elapsed();
    if let Some(path) = &args.write_plan {
        let plan = t
            .plan(&file, &counts, &args.rank_by)
            .with_context(|| args.scores.display().to_string())?;
        fair_ir::write_atomic(path, serde_json::to_string_pretty(&plan)?.as_bytes())?;
        eprintln!("plan written to {}", path.display());
    }
    if args.json {
        let layers: Vec<_> = curves
            .iter()
            .zip(&counts)
            .map(|(c, &k)| {
                let keep = kept[c.layer()];
                serde_json::json!({"layer": c.layer(), "units": c.units(), "tod_count": k, "remove": c.units() - keep, "keep": keep})
            })
            .collect();
        let mut out = serde_json::json!({what: setting, "layers": layers, "milliseconds": elapsed.as_secs_f64() * 1e3});
        if let Ok(g) = &pruned {
            out["params"] = serde_json::json!({"before": params0, "after": g.param_count()});
            out["macs"] = serde_json::json!({"before": macs0, "after": g.macs()});
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = curves
        .iter()
        .zip(&counts)
        .map(|(c, &k)| {
            let kept = c.units() - k;
            vec![
                c.layer().to_owned(),
                c.units().to_string(),
                k.to_string(),
                kept.to_string(),
                format!("{:.1}%", 100.0 * kept as f64 / c.units() as f64),
            ]
        })
        .collect();
    if args.uniform {
        println!("uniform ratio = {setting}\n");
    } else {
        println!("α = {setting}\n");
    }
    print!(
        "{}",
        render(
            &["layer", "units", "remove", "keep", "kept %"],
            &rows,
            &[1, 2, 3, 4]
        )
    );
    match pruned {
        Ok(g) => println!(
            "\nparameters {} → {} ({:.1}% removed); MACs {} → {} ({:.1}% removed)",
            human(params0 as u64),
            human(g.param_count() as u64),
            100.0 * (1.0 - g.param_count() as f64 / params0),
            human(macs0 as u64),
            human(g.macs()),
            100.0 * (1.0 - g.macs() as f64 / macs0)
        ),
        Err(e) => println!("\n(totals not shown: {e})"),
    }
    println!(
        "computed from stored scores in {:.2} ms ({} layers, {} units)",
        elapsed.as_secs_f64() * 1e3,
        curves.len(),
        thousands(curves.iter().map(|c| c.units() as u64).sum())
    );
    Ok(())
}

/// What decides the per-layer counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// A tolerance α.
    Alpha(f64),
    /// Remove at least this fraction of MACs.
    Macs(f64),
    /// Remove at least this fraction of parameters.
    Params(f64),
}

/// ToD curves of a score file with the graph's residual groups: counts at an α or a target,
/// the aligned kept widths and plans — all from stored scores.
pub struct Thresholder {
    /// The scored graph.
    pub graph: Graph,
    /// One ToD curve per scored layer.
    pub curves: Vec<TodCurve>,
    groups: fair_surgery::ChannelGroups,
}

impl Thresholder {
    /// Builds the curves from the U- and R-Scores of `file` (read from `path`).
    pub fn new(file: &ScoreFile, path: &std::path::Path) -> Result<Self> {
        let (u, r) = match (file.criterion("u"), file.criterion("r")) {
            (Some(u), Some(r)) => (u, r),
            _ => bail!(
                "{} has no U- and R-Scores (criteria: {}); run `fair-pruner score` with --criteria including u,r",
                path.display(),
                file.layers
                    .first()
                    .map(|l| l.scores.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            ),
        };
        let curves = file
            .layers
            .iter()
            .zip(u.iter().zip(&r))
            .map(|(l, (u, r))| TodCurve::new(&l.layer, u, r))
            .collect::<Result<Vec<_>, _>>()?;
        let graph = file.graph()?;
        let groups = fair_surgery::analyze(&graph, &[])?;
        Ok(Thresholder {
            graph,
            curves,
            groups,
        })
    }

    /// Kept units per layer for `counts` (units to remove per curve). Layers coupled by
    /// residual adds keep the same units: each keeps as many as the member of its group that
    /// keeps the most (the authors' package rule, as `apply --rule package`).
    pub fn kept(&self, counts: &[usize]) -> HashMap<String, usize> {
        let mut kept: HashMap<String, usize> = self
            .curves
            .iter()
            .zip(counts)
            .map(|(c, &k)| (c.layer().to_owned(), c.units() - k))
            .collect();
        for g in self.groups.groups().iter().filter(|g| g.layers.len() > 1) {
            if let Some(most) = g.layers.iter().filter_map(|l| kept.get(l)).copied().max() {
                for l in &g.layers {
                    if let Some(k) = kept.get_mut(l) {
                        *k = most;
                    }
                }
            }
        }
        kept
    }

    /// (α, counts) for a goal; targets search α over the stored curves.
    pub fn solve(&self, goal: Goal, options: CountOptions) -> Result<(f64, Vec<usize>)> {
        let (target, macs) = match goal {
            Goal::Alpha(a) => return Ok((a, fair_threshold::counts_at(&self.curves, a, options)?)),
            Goal::Macs(f) => (f, true),
            Goal::Params(f) => (f, false),
        };
        let res = fair_threshold::alpha_for_target(&self.curves, options, target, |counts| {
            self.reduction(counts, macs)
        })?;
        Ok((res.setting, res.counts))
    }

    /// The uniform baseline for a target: (ratio, counts) removing the same fraction of
    /// every layer, the smallest ratio that reaches the goal. An α is not a uniform goal.
    pub fn solve_uniform(&self, goal: Goal, options: CountOptions) -> Result<(f64, Vec<usize>)> {
        let (target, macs) = match goal {
            Goal::Alpha(_) => {
                bail!("uniform pruning has no α: give --target-macs or --target-params")
            }
            Goal::Macs(f) => (f, true),
            Goal::Params(f) => (f, false),
        };
        let units: Vec<usize> = self.curves.iter().map(TodCurve::units).collect();
        let res = fair_threshold::uniform_for_target(&units, options, target, |counts| {
            self.reduction(counts, macs)
        })?;
        Ok((res.setting, res.counts))
    }

    /// The fraction of MACs (or parameters) that removing `counts` takes away.
    fn reduction(&self, counts: &[usize], macs: bool) -> Result<f64, String> {
        let g = self
            .graph
            .with_units(&self.kept(counts))
            .map_err(|e| e.to_string())?;
        Ok(if macs {
            1.0 - g.macs() as f64 / self.graph.macs() as f64
        } else {
            1.0 - g.param_count() as f64 / self.graph.param_count() as f64
        })
    }

    /// The plan removing, in every layer, its count of lowest-scoring units by `rank_by`
    /// (`u` for FAIR-Pruner, or any other criterion stored in `file`).
    pub fn plan(
        &self,
        file: &ScoreFile,
        counts: &[usize],
        rank_by: &str,
    ) -> Result<fair_surgery::Plan> {
        let ranking = file
            .criterion(rank_by)
            .with_context(|| format!("no '{rank_by}' scores to rank by"))?;
        let mut plan = fair_surgery::Plan::new();
        for ((c, &k), rank) in self.curves.iter().zip(counts).zip(&ranking) {
            if k > 0 {
                plan = plan.remove(c.layer(), fair_threshold::lowest(rank, k));
            }
        }
        Ok(plan)
    }
}
