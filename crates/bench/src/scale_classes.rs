//! `fair-bench scale-classes`: the U-Score of ResNet-50 (random weights, fixed seed) at
//! hundreds to a thousand classes (issue 26), with the bounded class-pair search and with
//! every pair; wall time, the U-Score's own time profile, one forward pass over the
//! calibration set for comparison, peak resident memory and the share of pairs computed in
//! full, against the goals.
//!
//! The calibration data is synthetic and has class structure, generated in memory: class k
//! has its own pattern image `P_k` (every value N(0, 1), seeded), and each of its samples is
//! `P_k + σ·ε` with ε N(0, 1) per value, σ = `--noise` (relative to the pattern's standard
//! deviation of 1). With σ = 1 (the default) a sample lies about `σ·√D` from its pattern
//! and patterns lie about `√(2D)` apart (D values per image), so every sample is nearest to
//! its own pattern, while a unit of the network sees classes that overlap.
//!
//! All pairs are estimated unless `--all-pairs-units all`: in the bounded run, on N units of
//! each layer drawn with the seed, the maximum over every pair is computed on the same
//! summaries, timed, and compared bit for bit with the bounded score
//! ([`fair_scoring::PairCheck`]); the all-pairs row scales each layer's time by its units
//! over N and takes the rest of the profile from the bounded run. A mismatch is an error.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use fair_runtime::{Mode, Model};
use fair_scoring::{
    ByteSize, Calibration, Engine, PairCheck, PairSearch, Progress, TimeProfile, UScoreRun,
    UScoreSettings, prunable_layers, u_scores_measured,
};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::scoring::scoring_settings;
use crate::{peak_rss_kib, positive, reset_peak_rss, workspace_root};

/// A row of the benchmark: classes × samples per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Size {
    /// Classes (of the model and of the data).
    pub classes: usize,
    /// Calibration samples per class.
    pub per_class: usize,
}

pub(crate) fn size(text: &str) -> Result<Size, String> {
    let (k, n) = text
        .trim()
        .split_once(['x', '×'])
        .ok_or_else(|| format!("expected CLASSESxSAMPLES (e.g. 100x32), found {text}"))?;
    let (classes, per_class) = (positive(k)?, positive(n)?);
    if classes < 2 {
        return Err(format!(
            "the U-Score compares classes: needs at least 2, found {text}"
        ));
    }
    Ok(Size { classes, per_class })
}

/// How the all-pairs row is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllPairs {
    /// Estimated from this many units per layer, checked in the bounded run.
    Units(usize),
    /// A second U-Score run with every pair (every unit compared).
    Full,
}

fn all_pairs(text: &str) -> Result<AllPairs, String> {
    if text.trim() == "all" {
        Ok(AllPairs::Full)
    } else {
        positive(text).map(AllPairs::Units)
    }
}

/// Settings of the scale-classes benchmark.
#[derive(Debug, Clone, Args)]
#[command(
    args_override_self = true,
    after_help = "Synthetic data with class structure, generated in memory (no files): class k \
    has its own pattern image P_k, every value N(0, 1) (seeded); each sample is \
    P_k + NOISE · N(0, 1) per value. With NOISE = 1 a sample lies about √D from its pattern \
    and patterns about √(2D) apart (D values per image). The calibration set is held in \
    memory: 4 · classes · samples · 3 · SIZE² bytes (1000 × 32 at 224²: 19 GB)."
)]
pub struct Options {
    /// Rows, comma-separated CLASSESxSAMPLES.
    #[arg(long, value_delimiter = ',', value_parser = size, default_value = "100x32,1000x8,1000x32")]
    pub rows: Vec<Size>,
    /// Image side (inputs 3 × SIZE × SIZE).
    #[arg(long, default_value_t = 224, value_parser = positive)]
    pub size: usize,
    /// Zoo model.
    #[arg(long, default_value = "resnet50")]
    pub model: String,
    /// Within-class noise σ relative to the patterns' standard deviation (1).
    #[arg(long, default_value_t = 1.0, value_parser = noise)]
    pub noise: f64,
    /// All pairs from N units per layer (timed, scaled by the unit count, compared bit for
    /// bit with the bounded scores), or `all` for a full second run.
    #[arg(long, default_value = "8", value_parser = all_pairs)]
    pub all_pairs_units: AllPairs,
    /// The row's search: `bounded` (exact, the default) or `certified` (16-bit summaries,
    /// every pair in integers, a computed bound per unit; its check tests that the exact
    /// maximum of each checked unit lies within that unit's bound).
    #[arg(long, default_value = "bounded", value_parser = search)]
    pub pair_search: PairSearch,
    /// Memory bound of the U-Score (e.g. 8GiB) [default: as `fair-pruner score`, 80% of the
    /// available memory].
    #[arg(long)]
    pub max_memory: Option<ByteSize>,
    /// Seed of the weights, the patterns, the noise and the checked units.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// libtorch CPU threads.
    #[arg(long, default_value_t = 2, value_parser = positive)]
    pub threads: usize,
    /// Where results.json and table.md go [default: target/bench/scale-classes].
    #[arg(long, value_name = "DIR")]
    pub out: Option<std::path::PathBuf>,
}

fn search(text: &str) -> Result<PairSearch, String> {
    match text.trim().parse::<PairSearch>() {
        Ok(PairSearch::All) => Err("the all-pairs row comes with every row: choose `bounded` \
                                    or `certified`"
            .into()),
        Ok(p) => Ok(p),
        Err(e) => Err(e.to_string()),
    }
}

fn noise(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a finite number ≥ 0, found {text}")),
    }
}

/// The synthetic calibration set of `s` at 3 × `side`²: `(patterns [K, 3, side, side],
/// calibration)`, sample i of class i / n.
pub(crate) fn synthetic(
    s: Size,
    side: usize,
    noise: f64,
    seed: u64,
) -> Result<(Tensor, Calibration)> {
    tch::manual_seed(seed as i64);
    let side = side as i64;
    let (k, n) = (s.classes as i64, s.per_class as i64);
    let patterns = Tensor::randn([k, 3, side, side], (Kind::Float, Device::Cpu));
    let mut images = patterns.repeat_interleave_self_int(n, 0, None);
    let _ = images.g_add_(&(Tensor::randn_like(&images) * noise));
    let labels =
        Tensor::arange(k, (Kind::Int64, Device::Cpu)).repeat_interleave_self_int(n, 0, None);
    let description = format!(
        "synthetic: {k} class patterns N(0, 1) + {noise} · N(0, 1), {n} per class, 3×{side}², seed {seed}"
    );
    Ok((patterns, Calibration::new(images, &labels, description)?))
}

/// One measured (or estimated) row.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Measured {
    size: Size,
    /// `bounded` or `all`.
    search: String,
    /// Derived from sampled units (all pairs), not run.
    estimated: bool,
    /// The whole U-Score, seconds.
    u_seconds: f64,
    /// Its forward passes (first and repeated by later memory passes).
    forward_seconds: f64,
    /// The part of `forward_seconds` repeated by later memory passes.
    forward_repeated_seconds: f64,
    /// Memory passes of the U-Score.
    passes: usize,
    projections_seconds: f64,
    sorting_seconds: f64,
    pairs_seconds: f64,
    /// `certified`: fitting the quantizers and coding the summaries.
    coding_seconds: f64,
    /// Writes to and reads from the spill file.
    spill_seconds: f64,
    other_seconds: f64,
    /// One plain forward pass over the calibration set (eval mode, same batch size).
    one_forward_seconds: f64,
    peak_rss_mib: Option<f64>,
    pairs_total: u64,
    pairs_evaluated: u64,
    /// Units whose score was compared with all pairs, and how many differed (bounded: in
    /// any bit; certified: by more than the unit's computed bound).
    units_checked: usize,
    units_total: usize,
    mismatches: usize,
    /// Certified search: the largest computed bound over the units, and the largest bound
    /// relative to its unit's score (`None` for the exact searches).
    largest_gap: Option<f64>,
    largest_relative_gap: Option<f64>,
    /// 1-minute load average (`/proc/loadavg`) before the row's run; `None` where unreadable.
    load_before: Option<f64>,
    /// 1-minute load average after the row's run.
    load_after: Option<f64>,
}

/// The 1-minute load average of the machine (`/proc/loadavg`), `None` where unreadable.
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// The verdict on one of the goals.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Judged and met.
    Met,
    /// Judged and missed.
    Missed,
    /// Not judged, for the reason given (another image size, a loaded machine).
    NotEvaluated(String),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Met => f.write_str("met"),
            Self::Missed => f.write_str("missed"),
            Self::NotEvaluated(why) => write!(f, "not evaluated ({why})"),
        }
    }
}

/// The image side the goals are stated for.
const GOAL_SIDE: usize = 224;

impl Measured {
    fn without_forward(&self) -> f64 {
        self.u_seconds - self.forward_seconds
    }

    fn fraction(&self) -> f64 {
        self.pairs_evaluated as f64 / self.pairs_total as f64
    }

    /// The larger of the load averages before and after the row, where read.
    fn load(&self) -> Option<f64> {
        match (self.load_before, self.load_after) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// The goals that apply to this row, with their verdicts. The goals are stated
    /// for 224² images on free CPU cores: at another image `side`, or where the load average
    /// exceeded `threads`, every goal is [`Verdict::NotEvaluated`].
    fn goals(&self, side: usize, threads: usize) -> Vec<(String, Verdict)> {
        let not_evaluated = if side != GOAL_SIDE {
            Some(format!("size {side} ≠ {GOAL_SIDE}"))
        } else {
            self.load()
                .filter(|&l| l > threads as f64)
                .map(|l| format!("machine loaded: load {l:.2}"))
        };
        let verdict = |met: bool| match &not_evaluated {
            Some(why) => Verdict::NotEvaluated(why.clone()),
            None if met => Verdict::Met,
            None => Verdict::Missed,
        };
        let mut g = Vec::new();
        let minutes = |m: f64| (format!("≤ {m} min"), verdict(self.u_seconds <= m * 60.0));
        match (self.size.classes, self.size.per_class) {
            (100, 32) => g.push(minutes(10.0)),
            (1000, 8) => g.push(minutes(30.0)),
            _ => {}
        }
        g.push((
            "U without forward ≤ 1 forward".into(),
            verdict(self.without_forward() <= self.one_forward_seconds),
        ));
        g
    }
}

fn from_run(
    size: Size,
    search: PairSearch,
    run: &UScoreRun,
    one_forward: f64,
    peak: Option<f64>,
    load: (Option<f64>, Option<f64>),
) -> Measured {
    let p = &run.profile;
    Measured {
        size,
        search: search.to_string(),
        estimated: false,
        u_seconds: p.total,
        forward_seconds: p.forward + p.forward_again,
        forward_repeated_seconds: p.forward_again,
        passes: run.passes,
        projections_seconds: p.projections,
        sorting_seconds: p.sorting,
        pairs_seconds: p.pairs,
        coding_seconds: p.coding,
        spill_seconds: p.spill,
        other_seconds: p.other(),
        one_forward_seconds: one_forward,
        peak_rss_mib: peak,
        pairs_total: run.pairs.total,
        pairs_evaluated: run.pairs.evaluated,
        units_checked: run.check.iter().map(|c| c.checked).sum(),
        units_total: run.scores.iter().map(Vec::len).sum(),
        mismatches: run.check.iter().map(|c| c.mismatches).sum(),
        largest_gap: (!run.gaps.is_empty())
            .then(|| run.gaps.iter().flatten().fold(0.0f64, |m, &g| m.max(g))),
        largest_relative_gap: (!run.gaps.is_empty()).then(|| {
            run.gaps
                .iter()
                .flatten()
                .zip(run.scores.iter().flatten())
                .filter(|(_, s)| **s > 0.0)
                .fold(0.0f64, |m, (g, s)| m.max(g / s))
        }),
        load_before: load.0,
        load_after: load.1,
    }
}

/// The all-pairs row estimated from the bounded run's check: its pair time scaled per
/// layer, the rest of its profile as measured.
fn estimated_all(bounded: &Measured, run: &UScoreRun) -> Measured {
    let pairs: f64 = run
        .check
        .iter()
        .map(|c| c.all_pairs_seconds_estimate())
        .sum();
    Measured {
        search: PairSearch::All.to_string(),
        estimated: true,
        u_seconds: bounded.u_seconds - bounded.pairs_seconds + pairs,
        pairs_seconds: pairs,
        peak_rss_mib: None,
        pairs_evaluated: bounded.pairs_total,
        largest_gap: None,
        largest_relative_gap: None,
        ..bounded.clone()
    }
}

/// The U-Score settings of a row: `fair-pruner score --criteria u --samples-per-class n`
/// with every class compared, the given search, memory bound and engine.
pub(crate) fn settings(
    s: Size,
    search: PairSearch,
    max_memory: Option<ByteSize>,
    engine: Engine,
) -> UScoreSettings {
    let mut u = scoring_settings(s.per_class).u;
    u.max_classes = s.classes;
    u.pair_search = search;
    u.max_memory = max_memory.or_else(fair_scoring::default_max_memory);
    u.engine = engine;
    u
}

/// Seconds of one eval-mode forward pass over `data` in batches of `batch`.
pub(crate) fn one_forward(model: &Model, data: &Calibration, batch: usize) -> Result<f64> {
    let device = model.device();
    // The allocator as the U-Score runs its forward passes (freed blocks reused).
    let _reuse = fair_runtime::ReuseFreedBlocks::new();
    let clock = Instant::now();
    for (x, _) in data.batches(batch) {
        let y = tch::no_grad(|| model.forward(&x.to_device(device), Mode::Eval))?;
        if let Device::Cuda(i) = device {
            drop(y);
            tch::Cuda::synchronize(i as i64);
        }
    }
    Ok(clock.elapsed().as_secs_f64())
}

/// The U-Score of `model` on `data` with `u`, peak resident memory measured from here
/// (MiB; `None` where the peak cannot be reset or read).
pub(crate) fn measure(
    model: &Model,
    data: &Calibration,
    u: &UScoreSettings,
    check: Option<PairCheck>,
) -> Result<(UScoreRun, Option<f64>)> {
    let reset = reset_peak_rss();
    let layers = prunable_layers(model.graph(), u.analysis_point);
    let run = u_scores_measured(model, &layers, data, u, Progress::QUIET, check)?;
    let peak = peak_rss_kib().filter(|_| reset).map(|k| k as f64 / 1024.0);
    Ok((run, peak))
}

/// Runs the rows of `o`: per row of `o.rows`, the bounded run and the all-pairs run (or its
/// estimate), each with the load average before and after it.
pub(crate) fn rows(o: &Options) -> Result<Vec<Measured>> {
    let mut out = Vec::new();
    for &s in &o.rows {
        eprintln!(
            "scale-classes: {} at 3×{}², {} classes × {} samples …",
            o.model, o.size, s.classes, s.per_class
        );
        let (_, data) = synthetic(s, o.size, o.noise, o.seed)?;
        let load_before = load_average();
        let graph = fair_zoo::build(&o.model, &[3, o.size, o.size], s.classes)?;
        let model = Model::new(graph, Device::Cpu, o.seed)?;
        let bounded = settings(s, o.pair_search, o.max_memory, Engine::Host);
        let forward = one_forward(&model, &data, bounded.batch_size)?;
        let check = match o.all_pairs_units {
            AllPairs::Units(n) => Some(PairCheck {
                units_per_layer: n,
                seed: o.seed,
            }),
            AllPairs::Full => None,
        };
        let (run, peak) = measure(&model, &data, &bounded, check)?;
        let load_bounded = load_average();
        let b = from_run(
            s,
            o.pair_search,
            &run,
            forward,
            peak,
            (load_before, load_bounded),
        );
        eprintln!(
            "  {}: {:.1} s (load {})",
            o.pair_search,
            b.u_seconds,
            loads(&b)
        );
        let a = match o.all_pairs_units {
            AllPairs::Units(_) => estimated_all(&b, &run),
            AllPairs::Full => {
                let all = settings(s, PairSearch::All, o.max_memory, Engine::Host);
                let (full, peak) = measure(&model, &data, &all, None)?;
                let load = (load_bounded, load_average());
                let mut a = from_run(s, PairSearch::All, &full, forward, peak, load);
                let (checked, bad) = compare(&run.scores, &full.scores, &run.gaps);
                a.units_checked = checked;
                a.mismatches = bad;
                a
            }
        };
        eprintln!(
            "  all: {:.1} s{}",
            a.u_seconds,
            if a.estimated { " (estimated)" } else { "" }
        );
        out.push(b);
        out.push(a);
    }
    Ok(out)
}

/// Units compared and those whose scores differ: in any bit, or with certified `gaps` (one
/// per unit of `a`, empty for an exact search) by more than the unit's gap.
fn compare(a: &[Vec<f64>], b: &[Vec<f64>], gaps: &[Vec<f64>]) -> (usize, usize) {
    let mut n = 0;
    let mut bad = 0;
    for (l, (x, y)) in a.iter().zip(b).enumerate() {
        for (u, (p, q)) in x.iter().zip(y).enumerate() {
            n += 1;
            bad += usize::from(match gaps.get(l) {
                Some(g) => (p - q).abs() > g[u],
                None => p.to_bits() != q.to_bits(),
            });
        }
    }
    (n, bad)
}

/// The load averages of a row, `before → after` (`?` where unreadable).
fn loads(m: &Measured) -> String {
    let one = |l: Option<f64>| l.map_or("?".to_string(), |l| format!("{l:.2}"));
    format!("{} → {}", one(m.load_before), one(m.load_after))
}

/// The goals' cell of a row: `goal: verdict`, separated by `; `.
fn goals_cell(m: &Measured, side: usize, threads: usize) -> String {
    m.goals(side, threads)
        .into_iter()
        .map(|(g, v)| format!("{g}: {v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn mib(m: Option<f64>) -> String {
    m.map_or("as bounded (same summaries)".into(), |m| {
        format!("{:.2} GiB", m / 1024.0)
    })
}

/// The Markdown table of `rows` measured at 3 × `side`² with `threads` libtorch threads.
pub(crate) fn table(rows: &[Measured], side: usize, threads: usize) -> String {
    let mut t = format!(
        "Image size 3×{side}²; {threads} libtorch thread(s); seconds of wall time; \"U w/o \
         forward\" is the U-Score without its forward passes; \"1 forward\" is one plain \
         forward pass over the calibration set; \"load\" is the 1-minute load average before \
         → after the run. Goals of issue 26 (2 free CPU cores, 224²): judged only at 224² and \
         where the load stayed at most the thread count.\n\n\
         | classes × samples | pair search | U-Score | forward (of it repeated; passes) | \
         projections | sorting | pairs | coding | spill I/O | other | U w/o forward | 1 forward | \
         peak RSS | pairs evaluated | units checked (mismatches) | load | goals |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- \
         | --- | --- |\n"
    );
    for r in rows {
        let est = if r.estimated { " (estimated)" } else { "" };
        let mut checked = if r.units_checked == 0 {
            "–".to_string()
        } else {
            format!(
                "{} of {} ({})",
                r.units_checked, r.units_total, r.mismatches
            )
        };
        if let (Some(g), Some(rel)) = (r.largest_gap, r.largest_relative_gap) {
            let _ = write!(
                checked,
                "; largest bound {g:.2e} (≤ {:.3}% of its score)",
                100.0 * rel
            );
        }
        let _ = writeln!(
            t,
            "| {} × {} | `{}`{est} | {:.1}{est} | {:.1} ({:.1}; {}) | {:.1} | {:.1} | \
             {:.1}{est} | {:.1} | {:.1} | {:.1} | {:.1}{est} | {:.1} | {} | {:.4}% of {} | \
             {checked} | {} | {} |",
            r.size.classes,
            r.size.per_class,
            r.search,
            r.u_seconds,
            r.forward_seconds,
            r.forward_repeated_seconds,
            r.passes,
            r.projections_seconds,
            r.sorting_seconds,
            r.pairs_seconds,
            r.coding_seconds,
            r.spill_seconds,
            r.other_seconds,
            r.without_forward(),
            r.one_forward_seconds,
            mib(r.peak_rss_mib),
            100.0 * r.fraction(),
            r.pairs_total,
            loads(r),
            goals_cell(r, side, threads),
        );
    }
    t
}

/// Runs the benchmark.
pub fn run(o: &Options) -> Result<()> {
    tch::set_num_threads(i32::try_from(o.threads).context("--threads is too large")?);
    let measured = rows(o)?;
    let table = table(&measured, o.size, o.threads);
    println!("{table}");
    let out = o
        .out
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/bench/scale-classes"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    crate::write_json(
        &out.join("results.json"),
        &serde_json::json!({
            "model": o.model, "size": o.size, "noise": o.noise, "seed": o.seed,
            "threads": o.threads, "command": command, "rows": measured,
            "goals": measured.iter().map(|m| goals_cell(m, o.size, o.threads)).collect::<Vec<_>>(),
        }),
    )?;
    fair_fs::write_atomic(&out.join("table.md"), table.as_bytes())?;
    println!("written to {}", out.display());
    let bad: usize = measured.iter().map(|m| m.mismatches).sum();
    if bad > 0 {
        bail!(
            "{bad} unit(s) scored differently by the {} search and by all pairs",
            o.pair_search
        );
    }
    Ok(())
}

/// Reused by `gpu-check`: the bounded U-Score of `model` on `data` on the host and with the
/// device engine, `(host, device, largest relative difference)`; an error where the two
/// runs' layers or unit counts differ or a score is not finite
/// ([`largest_relative_difference`]).
pub(crate) fn host_and_device(
    model: &Model,
    data: &Calibration,
    s: Size,
) -> Result<(TimeProfile, TimeProfile, f64)> {
    let host = settings(s, PairSearch::Bounded, None, Engine::Host);
    let device = settings(s, PairSearch::Bounded, None, Engine::Device);
    let (h, _) = measure(model, data, &host, None)?;
    let (d, _) = measure(model, data, &device, None)?;
    let named = |u: &UScoreSettings, scores: Vec<Vec<f64>>| -> Vec<(String, Vec<f64>)> {
        prunable_layers(model.graph(), u.analysis_point)
            .into_iter()
            .map(|l| l.name)
            .zip(scores)
            .collect()
    };
    // Each run returns one score vector per layer listed; a count that differs is an error.
    for (u, run, who) in [(&host, &h, "host"), (&device, &d, "device")] {
        let layers = prunable_layers(model.graph(), u.analysis_point).len();
        if run.scores.len() != layers {
            bail!(
                "the {who} engine returned scores for {} layer(s), {layers} listed",
                run.scores.len()
            );
        }
    }
    let worst = largest_relative_difference(&named(&host, h.scores), &named(&device, d.scores))?;
    Ok((h.profile, d.profile, worst))
}

/// The largest relative difference `|h − d| / |h|` between the host's scores `host` and the
/// device's `device` (per layer: name, one score per unit). An error where the layers'
/// names or unit counts differ (naming the layer) or where a score or a ratio is not finite:
/// a missing or NaN score fails the comparison rather than being skipped.
pub(crate) fn largest_relative_difference(
    host: &[(String, Vec<f64>)],
    device: &[(String, Vec<f64>)],
) -> Result<f64> {
    for i in 0..host.len().max(device.len()) {
        match (host.get(i), device.get(i)) {
            (Some((h, _)), None) => bail!("layer {h}: scored by the host, not by the device"),
            (None, Some((d, _))) => bail!("layer {d}: scored by the device, not by the host"),
            (Some((h, x)), Some((d, y))) => {
                if h != d {
                    bail!("layer {i}: {h} on the host, {d} on the device");
                }
                if x.len() != y.len() {
                    bail!(
                        "layer {h}: {} score(s) on the host, {} on the device",
                        x.len(),
                        y.len()
                    );
                }
            }
            (None, None) => unreachable!("i < the longer length"),
        }
    }
    let mut worst = 0.0f64;
    for ((name, x), (_, y)) in host.iter().zip(device) {
        for (unit, (&p, &q)) in x.iter().zip(y).enumerate() {
            let ratio = (p - q).abs() / p.abs().max(f64::MIN_POSITIVE);
            if !(p.is_finite() && q.is_finite() && ratio.is_finite()) {
                bail!(
                    "layer {name}, unit {unit}: host score {p}, device score {q} \
                     (relative difference {ratio}): not finite"
                );
            }
            worst = worst.max(ratio);
        }
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_all_pairs_parse() {
        assert_eq!(
            size("100x32").unwrap(),
            Size {
                classes: 100,
                per_class: 32
            }
        );
        assert_eq!(size(" 1000×8").unwrap().classes, 1000);
        assert!(size("1x8").is_err());
        assert!(size("100").is_err());
        assert!(size("100x0").is_err());
        assert_eq!(all_pairs("all").unwrap(), AllPairs::Full);
        assert_eq!(all_pairs("16").unwrap(), AllPairs::Units(16));
        assert!(all_pairs("0").is_err());
        assert!(noise("-1").is_err());
    }

    #[test]
    fn the_synthetic_data_has_class_structure() {
        let s = Size {
            classes: 10,
            per_class: 4,
        };
        let (patterns, data) = synthetic(s, 16, 1.0, 3).unwrap();
        let (x, y) = data.tensors();
        assert_eq!(x.size(), [40, 3, 16, 16]);
        let x = x.view([40, -1]);
        let p = patterns.view([10, -1]);
        let d = 768.0f64;
        // Smallest distance between two patterns, largest distance of a sample from its own.
        let between = Tensor::cdist(&p, &p, 2.0, None::<i64>)
            + Tensor::eye(10, (Kind::Float, Device::Cpu)) * 1e9;
        let between = between.min().double_value(&[]);
        let own = (&x - p.index_select(0, &y)).norm().double_value(&[]);
        let own_largest = (&x - p.index_select(0, &y))
            .square()
            .sum_dim_intlist(1, false, Kind::Float)
            .sqrt()
            .max()
            .double_value(&[]);
        assert!(between > own_largest, "{between} vs {own_largest}");
        // Near √(2D) between patterns, √D within a class (σ = 1).
        assert!((between / (2.0 * d).sqrt() - 1.0).abs() < 0.2, "{between}");
        assert!((own / (40.0 * d).sqrt() - 1.0).abs() < 0.05, "{own}");
        // Every sample is nearest to its own class's pattern.
        let nearest = Tensor::cdist(&x, &p, 2.0, None::<i64>).argmin(1, false);
        assert_eq!(
            Vec::<i64>::try_from(nearest).unwrap(),
            Vec::<i64>::try_from(&y).unwrap()
        );
        // Labels in blocks of n.
        let labels = Vec::<i64>::try_from(&y).unwrap();
        assert_eq!(&labels[..5], &[0, 0, 0, 0, 1]);
    }

    #[test]
    fn a_tiny_run_checks_every_unit_and_tables_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let o = Options {
            rows: vec![size("10x4").unwrap(), size("12x3").unwrap()],
            size: 16,
            model: "resnet20".into(),
            noise: 1.0,
            // More than any layer's units: every unit is checked.
            all_pairs_units: AllPairs::Units(1 << 20),
            pair_search: PairSearch::Bounded,
            max_memory: Some(ByteSize(1 << 30)),
            seed: 1,
            threads: 1,
            out: Some(dir.path().to_owned()),
        };
        // The certified row: every unit checked, each exact maximum within its bound.
        let certified = rows(&Options {
            rows: vec![size("10x4").unwrap()],
            pair_search: PairSearch::Certified,
            out: None,
            ..o.clone()
        })
        .unwrap();
        assert_eq!(certified[0].search, "certified");
        assert!(certified[0].units_checked > 0);
        assert_eq!(certified[0].mismatches, 0);
        assert!(certified[0].largest_relative_gap.is_some_and(|g| g < 1e-2));
        assert_eq!(certified[0].pairs_evaluated, certified[0].pairs_total);
        assert!(table(&certified, 16, 1).contains("largest bound"));
        let rows = rows(&o).unwrap();
        assert_eq!(rows.len(), 4);
        let units = fair_scoring::prunable_layers(
            &fair_zoo::build("resnet20", &[3, 16, 16], 10).unwrap(),
            fair_scoring::AnalysisPoint::LayerOutput,
        )
        .iter()
        .map(|l| l.units)
        .sum::<usize>();
        for r in &rows {
            assert_eq!((r.units_checked, r.units_total), (units, units), "{r:?}");
            assert_eq!(r.mismatches, 0, "{r:?}");
            // 1 GiB holds a ResNet-20 at 16² in one pass.
            assert_eq!(r.passes, 1, "{r:?}");
        }
        assert_eq!(rows[0].pairs_total, units as u64 * 45);
        assert_eq!(rows[2].pairs_total, units as u64 * 66);
        assert!(rows[0].pairs_evaluated <= rows[0].pairs_total);
        assert_eq!(rows[1].pairs_evaluated, rows[1].pairs_total);
        assert!(rows[1].estimated && !rows[0].estimated);
        let t = table(&rows, 16, 1);
        let lines: Vec<&str> = t.lines().filter(|l| l.starts_with("| 1")).collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert!(lines[0].starts_with("| 10 × 4 | `bounded` |"), "{t}");
        assert!(
            lines[1].starts_with("| 10 × 4 | `all` (estimated) |"),
            "{t}"
        );
        assert!(
            lines[3].starts_with("| 12 × 3 | `all` (estimated) |"),
            "{t}"
        );
        assert!(lines[1].contains("as bounded (same summaries)"), "{t}");
        assert!(
            lines[0].contains("U without forward ≤ 1 forward: not evaluated (size 16 ≠ 224) |"),
            "{t}"
        );

        // The full all-pairs run compares every unit's score with the bounded one.
        let full = Options {
            rows: vec![size("10x4").unwrap()],
            all_pairs_units: AllPairs::Full,
            ..o
        };
        run(&full).unwrap();
        let json = crate::read_json(&dir.path().join("results.json")).unwrap();
        let all = &json["rows"][1];
        assert_eq!(all["search"], "all");
        assert_eq!(all["estimated"], false);
        assert_eq!(all["units_checked"], units);
        assert_eq!(all["mismatches"], 0);
        assert_eq!(all["pairs_evaluated"], all["pairs_total"]);
        // The load average is recorded before and after each run (Linux has /proc/loadavg).
        for r in json["rows"].as_array().unwrap() {
            assert!(r["load_before"].as_f64().is_some_and(|l| l >= 0.0), "{r}");
            assert!(r["load_after"].as_f64().is_some_and(|l| l >= 0.0), "{r}");
        }
        assert_eq!(json["rows"][0]["load_after"], all["load_before"]);
        assert_eq!(
            json["goals"][0],
            "U without forward ≤ 1 forward: not evaluated (size 16 ≠ 224)"
        );
        let md = std::fs::read_to_string(dir.path().join("table.md")).unwrap();
        assert!(md.contains("| 10 × 4 | `all` |"), "{md}");
    }

    /// A hand-made bounded row of `classes × per_class`: U-Score 500 s, of it 300 s of
    /// forward passes, one forward pass 150 s; load 0.5 → 1.5.
    fn hand_made(classes: usize, per_class: usize) -> Measured {
        Measured {
            size: Size { classes, per_class },
            search: "bounded".into(),
            estimated: false,
            u_seconds: 500.0,
            forward_seconds: 300.0,
            forward_repeated_seconds: 100.0,
            passes: 2,
            projections_seconds: 0.0,
            sorting_seconds: 0.0,
            pairs_seconds: 0.0,
            coding_seconds: 0.0,
            spill_seconds: 0.0,
            other_seconds: 0.0,
            one_forward_seconds: 150.0,
            peak_rss_mib: Some(2048.0),
            pairs_total: 10,
            pairs_evaluated: 1,
            units_checked: 0,
            units_total: 5,
            mismatches: 0,
            largest_gap: None,
            largest_relative_gap: None,
            load_before: Some(0.5),
            load_after: Some(1.5),
        }
    }

    fn goal(text: &str, v: Verdict) -> (String, Verdict) {
        (text.to_string(), v)
    }

    #[test]
    fn goals_are_judged_at_224_on_an_unloaded_machine_only() {
        // 224², load 1.5 ≤ 2 threads: 500 s ≤ 10 min met; 500 − 300 = 200 s > 150 s missed.
        let r = hand_made(100, 32);
        assert_eq!(
            r.goals(224, 2),
            vec![
                goal("≤ 10 min", Verdict::Met),
                goal("U without forward ≤ 1 forward", Verdict::Missed)
            ]
        );
        // Over the time goal (601 s > 600 s), under the forward goal (601 − 500 = 101 ≤ 150).
        let slow = Measured {
            u_seconds: 601.0,
            forward_seconds: 500.0,
            ..r.clone()
        };
        assert_eq!(
            slow.goals(224, 2),
            vec![
                goal("≤ 10 min", Verdict::Missed),
                goal("U without forward ≤ 1 forward", Verdict::Met)
            ]
        );
        // 1000 × 8: ≤ 30 min; 1900 s > 1800 s.
        let large = Measured {
            u_seconds: 1900.0,
            ..hand_made(1000, 8)
        };
        assert_eq!(large.goals(224, 2)[0], goal("≤ 30 min", Verdict::Missed));
        let quick = Measured {
            u_seconds: 1700.0,
            ..hand_made(1000, 8)
        };
        assert_eq!(quick.goals(224, 2)[0], goal("≤ 30 min", Verdict::Met));
        // No time goal for 1000 × 32.
        assert_eq!(hand_made(1000, 32).goals(224, 2).len(), 1);

        // Another image size: nothing is judged, whatever the times.
        let small = Verdict::NotEvaluated("size 64 ≠ 224".into());
        assert_eq!(
            r.goals(64, 2),
            vec![
                goal("≤ 10 min", small.clone()),
                goal("U without forward ≤ 1 forward", small.clone())
            ]
        );
        assert_eq!(slow.goals(64, 2)[0], goal("≤ 10 min", small));
        // A load average (the larger of before and after) above the thread count.
        let loaded = Verdict::NotEvaluated("machine loaded: load 1.50".into());
        assert_eq!(r.goals(224, 1)[0], goal("≤ 10 min", loaded.clone()));
        let before = Measured {
            load_before: Some(3.0),
            load_after: Some(0.25),
            ..r.clone()
        };
        assert_eq!(
            before.goals(224, 2)[1],
            goal(
                "U without forward ≤ 1 forward",
                Verdict::NotEvaluated("machine loaded: load 3.00".into())
            )
        );
        // A load equal to the thread count is not over it.
        let full = Measured {
            load_after: Some(2.0),
            ..r.clone()
        };
        assert_eq!(full.goals(224, 2)[0].1, Verdict::Met);
        assert_eq!(
            Verdict::NotEvaluated("size 64 ≠ 224".into()).to_string(),
            "not evaluated (size 64 ≠ 224)"
        );
    }

    #[test]
    fn the_table_shows_loads_and_verdicts() {
        let other = hand_made(1000, 32);
        let t = table(std::slice::from_ref(&other), 64, 2);
        assert!(
            t.contains("| 1000 × 32 | `bounded` | 500.0 | 300.0 (100.0; 2) |"),
            "{t}"
        );
        assert!(
            t.contains(
                "| 2.00 GiB | 10.0000% of 10 | – | 0.50 → 1.50 | \
                 U without forward ≤ 1 forward: not evaluated (size 64 ≠ 224) |"
            ),
            "{t}"
        );
        let unread = Measured {
            load_before: None,
            ..hand_made(100, 32)
        };
        let t = table(&[unread], 224, 2);
        assert!(
            t.contains("| ? → 1.50 | ≤ 10 min: met; U without forward ≤ 1 forward: missed |"),
            "{t}"
        );
    }

    fn layer(name: &str, scores: &[f64]) -> (String, Vec<f64>) {
        (name.to_string(), scores.to_vec())
    }

    #[test]
    fn the_host_device_comparison_fails_on_nan_and_missing_scores() {
        let host = [layer("conv1", &[1.0, 2.0]), layer("conv2", &[4.0])];
        // |2 − 2.5| / 2 = 0.25 is the largest (|4 − 3.5| / 4 = 0.125, 0 for conv1's first).
        let device = [layer("conv1", &[1.0, 2.5]), layer("conv2", &[3.5])];
        assert_eq!(largest_relative_difference(&host, &device).unwrap(), 0.25);
        // A NaN on either side is a failure, not skipped by max.
        let nan = [layer("conv1", &[1.0, f64::NAN]), layer("conv2", &[4.0])];
        let e = largest_relative_difference(&host, &nan)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("layer conv1, unit 1") && e.contains("NaN"),
            "{e}"
        );
        let e = largest_relative_difference(&nan, &host)
            .unwrap_err()
            .to_string();
        assert!(e.contains("layer conv1, unit 1"), "{e}");
        let inf = [
            layer("conv1", &[1.0, 2.0]),
            layer("conv2", &[f64::INFINITY]),
        ];
        let e = largest_relative_difference(&host, &inf)
            .unwrap_err()
            .to_string();
        assert!(e.contains("layer conv2, unit 0"), "{e}");
        // Finite scores whose ratio overflows (f64::MAX over a host score of 0) fail too.
        let zero = [layer("conv1", &[0.0, 2.0]), layer("conv2", &[4.0])];
        let huge = [layer("conv1", &[f64::MAX, 2.0]), layer("conv2", &[4.0])];
        let e = largest_relative_difference(&zero, &huge)
            .unwrap_err()
            .to_string();
        assert!(e.contains("layer conv1, unit 0"), "{e}");
        // A shorter layer is named, not truncated away.
        let short = [layer("conv1", &[1.0]), layer("conv2", &[4.0])];
        let e = largest_relative_difference(&host, &short)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "layer conv1: 2 score(s) on the host, 1 on the device");
        // A missing layer and a renamed one.
        let e = largest_relative_difference(&host, &host[..1])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "layer conv2: scored by the host, not by the device");
        let renamed = [layer("conv1", &[1.0, 2.0]), layer("fc", &[4.0])];
        let e = largest_relative_difference(&host, &renamed)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "layer 1: conv2 on the host, fc on the device");
    }
}
