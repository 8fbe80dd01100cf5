//! `fair-pruner score`, and the selection options `ratios` and `prune` share.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use fair_analysis::{GroupRule, MacCost, Method, ScoreFile, SelectOptions};
use fair_pipeline::{Preset, PruneSection, RawSettings};
use fair_scoring::{Calibration, Progress, Registry};

use crate::args::{ComputeArgs, DrawArgs, ModelArgs, ScoringArgs, cli_error};

/// Arguments of `fair-pruner score`.
#[derive(Debug, Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Trained weights (safetensors with PyTorch state-dict names); required unless --graph
    /// is an ONNX model, which carries its own.
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Calibration data: a safetensors file with `inputs` [N, C, H, W] (float) and `labels`
    /// [N] (integer), e.g. written by `fair-pruner calib`.
    #[arg(long, value_name = "FILE")]
    calibration: Option<PathBuf>,
    /// Where to write the scores (JSON with provenance).
    #[arg(long, value_name = "FILE", default_value = "scores.json")]
    out: PathBuf,
    #[command(flatten)]
    scoring: ScoringArgs,
    #[command(flatten)]
    draw: DrawArgs,
    #[command(flatten)]
    compute: ComputeArgs,
    /// Print the score file's provenance and timings as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

/// How counts and units are chosen (ratios and prune).
#[derive(Debug, Args)]
pub struct SelectArgs {
    /// ToD's removal signal: units with low scores are proposed for removal [default: u; a
    /// score file with one criterion only, and none of --remove-by, --protect-by, --rank-by
    /// given, counts by that criterion alone, with a note].
    #[arg(long, value_name = "CRITERION")]
    pub remove_by: Option<String>,
    /// ToD's protection signal: units with high scores are protected [default: r].
    #[arg(long, value_name = "CRITERION")]
    pub protect_by: Option<String>,
    /// Which criterion orders the units each layer removes (lowest first), e.g. `u` for the
    /// paper's "ToD counts + U ranking" [default: the --remove-by criterion when one is given;
    /// else from the preset: `group-l1` (Torch-Pruning's group L1, which ranked best after
    /// fine-tuning) for `fair-pruner`, `u` for `paper`].
    #[arg(long, value_name = "CRITERION")]
    pub rank_by: Option<String>,
    /// How layers coupled by residual adds settle on one set of units: `summed` ranks a
    /// group by its members' summed (mean-normalised) U, R and ranking before ToD, as
    /// Torch-Pruning ranks groups [default: from the preset: `summed` for `fair-pruner`,
    /// `package` for `paper`].
    #[arg(long, value_enum)]
    pub rule: Option<GroupRule>,
    /// MAC-aware counts (a fair-pruner extension; 0 = off, the paper): each layer removes the
    /// largest m with ToD(m) ≤ α^(1/w), w = (c / c_max)^γ, where c is the layer's MAC cost
    /// (see --mac-cost; per unit, the MACs one of its units costs with everything coupled to
    /// it) and c_max the largest over the layers. So
    /// layers whose units cost many MACs (convolutions) keep α and cheap ones (fully connected
    /// layers) give up fewer units; no layer's tolerance exceeds α [default: from the preset].
    #[arg(
        long,
        value_name = "GAMMA",
        allow_negative_numbers = true,
        conflicts_with = "uniform"
    )]
    pub mac_weight: Option<f64>,
    /// What --mac-weight measures a layer's MAC cost c by (see docs/algorithm.md, "MAC-aware
    /// counts") [default: from the preset: `fraction` for `fair-pruner`; unused by `paper`,
    /// whose γ is 0].
    #[arg(long, value_enum, value_name = "COST", conflicts_with = "uniform")]
    pub mac_cost: Option<MacCost>,
    /// Under --target-latency, what --mac-weight's cost c counts: `latency`, the latency the
    /// table says a layer's units save (per unit, shared or per fraction as --mac-cost says),
    /// so layers whose narrowing saves the most time give up the most units; or `macs`, as
    /// for every other goal (see docs/algorithm.md, "Latency-weighted counts")
    /// [default: latency].
    #[arg(long, value_enum, value_name = "COST", conflicts_with = "uniform")]
    pub weigh_by: Option<fair_analysis::WeighBy>,
    /// With --macs or --params: land on the target instead of taking the first α past it.
    /// ToD counts change only at some tolerances, where many layers gain units at once (a
    /// 30 % target can give 36 %); with this on, each layer's count is blended between its
    /// ToD counts at that α and at the tolerance below, the least blend that reaches the
    /// target (a fair-pruner extension). `--exact-target false` takes the first α past the
    /// target [default: from the preset: true for `fair-pruner`, false for `paper`].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true", conflicts_with = "uniform")]
    pub exact_target: Option<bool>,
    /// Every layer keeps at least this many units [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub min_keep: Option<u64>,
    /// Round kept units up to a multiple of this, e.g. 8 for faster kernels [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub round_to: Option<u64>,
    /// Baseline instead of ToD counts: remove the same fraction of every layer, the smallest
    /// that reaches the target (with --rank-by l1: uniform L1 pruning).
    #[arg(long, conflicts_with = "alpha")]
    pub uniform: bool,
    /// Layers never to prune (comma-separated), besides the output layer.
    #[arg(long, value_delimiter = ',', value_name = "LAYER,...")]
    pub protect: Vec<String>,
}

impl SelectArgs {
    /// Puts the flags given into `raw` (the settings the library resolves).
    pub fn fill(&self, raw: &mut RawSettings) {
        let p = &mut raw.prune;
        p.remove_by = self.remove_by.clone();
        p.protect_by = self.protect_by.clone();
        p.rank_by = self.rank_by.clone();
        p.rule = self.rule;
        p.mac_weight = self.mac_weight;
        p.mac_cost = self.mac_cost;
        p.weigh_by = self.weigh_by;
        p.exact_target = self.exact_target;
        p.min_keep = self.min_keep.map(|v| v as usize);
        p.round_to = self.round_to.map(|v| v as usize);
        raw.protect = self.protect.clone();
        raw.uniform = self.uniform;
    }

    /// The flags over `section`, with `preset`.
    fn raw(&self, section: &PruneSection, preset: Preset) -> RawSettings {
        let mut flags = RawSettings::default();
        self.fill(&mut flags);
        flags.prune.preset = Some(preset);
        RawSettings {
            prune: section.clone(),
            ..Default::default()
        }
        .overridden_by(&flags)
    }

    /// ToD's signals and the ranking after the config, the preset and the defaults, for
    /// counting from the scores of `file`: each in the file or a known criterion, or the
    /// file's one criterion where it holds one only ([`RawSettings::signals_for`]); an
    /// unknown one is an error naming its flag.
    pub fn criteria(
        &self,
        section: &PruneSection,
        preset: Preset,
        file: &ScoreFile,
    ) -> Result<fair_pipeline::Signals> {
        self.raw(section, preset)
            .signals_for(file, &Registry::default())
            .map_err(|e| cli_error(e.into()))
    }

    /// The selection options after the config and `preset`
    /// ([`RawSettings::select_options`]). A MAC weight that is not a finite number ≥ 0 is an
    /// error naming the flag.
    pub fn options(&self, section: &PruneSection, preset: Preset) -> Result<SelectOptions> {
        self.raw(section, preset)
            .select_options()
            .map_err(|e| cli_error(e.into()))
    }

    /// ToD or uniform.
    pub fn method(&self) -> Method {
        if self.uniform {
            Method::Uniform
        } else {
            Method::Tod
        }
    }
}

/// Runs `score`.
pub fn score(args: &ScoreArgs) -> Result<()> {
    // Cheap checks first: the output must not be an input.
    let mut guard = fair_pipeline::output_guard();
    if let Some(w) = &args.weights {
        guard.input("--weights", w);
    }
    if let Some(c) = &args.calibration {
        guard.input("--calibration", c);
    }
    if let Some(g) = &args.model.graph {
        fair_pipeline::guard_model_file(&mut guard, "--graph", g);
    }
    let out = guard.file("--out", &args.out)?;
    let mut raw = RawSettings::default();
    args.draw.fill(&mut raw);
    args.scoring.fill(&mut raw);
    let settings = raw.scoring();
    let registry = Registry::default();
    let names = raw
        .checked_criteria(&registry)
        .map_err(|e| cli_error(e.into()))?;
    let criteria = registry.create_all(&names, &settings)?;

    let device = args.compute.apply()?;
    let model = args.model.load_model(args.weights.as_deref(), device)?;
    fair_pipeline::check_memory_bound(model.graph(), raw.given_max_memory())
        .map_err(|e| cli_error(e.into()))?;
    let data = match &args.calibration {
        Some(p) => Some(Calibration::from_safetensors(p)?),
        None => None,
    };
    let file = fair_scoring::score(
        &model,
        data.as_ref(),
        &criteria,
        Progress {
            enabled: !args.quiet,
        },
    )
    .map(|mut file| {
        // So that `ratios` counts with the preset the scores were computed under.
        file.provenance.preset = Some(raw.preset().name().to_owned());
        file
    })
    .map_err(|e| cli_error(e.into()))
    .with_context(|| match &args.calibration {
        Some(p) => format!("scoring with the calibration data {}", p.display()),
        None => "scoring".to_owned(),
    })?;
    out.write(file.to_json_string(&args.out)?.as_bytes())?;
    crate::notes::print(&file.notes());
    if args.json {
        let peak_mib = peak_rss_kib().map(|k| k as f64 / 1024.0);
        return crate::print_json(&fair_analysis::ScoreReport::new(&file, &args.out, peak_mib));
    }
    println!(
        "scored {} layers of '{}' ({}) → {}",
        file.layers.len(),
        model.graph().name(),
        file.timing(),
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
