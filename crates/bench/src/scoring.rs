//! `fair-bench scoring`: fair-pruner's U+R scoring against the authors' `get_metrics`, the
//! ratio measured in the same run on the same machine (never asserted as wall-clock in tests).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use fair_pipeline::DrawSettings;
use fair_runtime::Model;
use fair_scoring::{Calibration, Progress, Registry, ScoringSettings};

use crate::{peak_rss_kib, positive, read_json, reference_python, workspace_root, write_json};

/// The zoo model both sides score.
const MODEL: &str = "vgg16_bn_cifar";

/// Settings of the scoring benchmark.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct Options {
    /// libtorch CPU threads (both sides).
    #[arg(long, default_value_t = 2, value_parser = positive)]
    pub threads: usize,
    /// Classes of the model and the calibration data.
    #[arg(long, default_value_t = 10, value_parser = classes)]
    pub classes: usize,
    /// Calibration samples per class.
    #[arg(long, default_value_t = 32, value_parser = positive)]
    pub per_class: usize,
    /// The reference Python (with network-pruner 2.16) [default: $FAIR_PRUNER_PYTHON].
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
}

fn classes(text: &str) -> Result<usize, String> {
    match positive(text)? {
        v if v >= 2 => Ok(v),
        v => Err(format!(
            "the U-Score compares classes: needs at least 2, found {v}"
        )),
    }
}

/// The scoring settings of `fair-pruner score --samples-per-class N` (every other setting at
/// its default: the calibration draw's classes cap and seed, P = 128 projections).
pub(crate) fn scoring_settings(per_class: usize) -> ScoringSettings {
    let draw = DrawSettings {
        per_class,
        ..DrawSettings::default()
    };
    let mut s = ScoringSettings::default();
    s.u.samples_per_class = draw.per_class;
    s.u.max_classes = draw.max_classes;
    s.u.seed = draw.seed;
    s.r.seed = draw.seed;
    s.seed = draw.seed;
    s
}

/// Our side: loads the reference's weights and samples from `out`, scores U and R, writes
/// `out/scores.json`. Returns (U seconds, R seconds, seconds of the whole call).
fn ours(out: &Path, o: &Options) -> Result<(f64, f64, f64)> {
    let start = Instant::now();
    let graph = fair_zoo::build(MODEL, &[3, 32, 32], o.classes)?;
    let model = Model::from_safetensors(graph, &out.join("weights.safetensors"), tch::Device::Cpu)?;
    let calibration = out.join("calibration.safetensors");
    let data = Calibration::from_safetensors(&calibration)?;
    let mut settings = scoring_settings(o.per_class);
    // R-Score batches of 64, as the reference's DataLoader.
    settings.r.batch_size = 64;
    let criteria = Registry::default().create_all(&["u", "r"], &settings)?;
    let file = fair_scoring::score(&model, Some(&data), &criteria, Progress::QUIET).with_context(
        || {
            format!(
                "scoring with the calibration data {}",
                calibration.display()
            )
        },
    )?;
    let scores = out.join("scores.json");
    file.save(&scores)?;
    let whole = start.elapsed().as_secs_f64();
    let seconds = |k: &str| {
        file.provenance
            .criteria
            .get(k)
            .map_or(f64::NAN, |r| r.seconds)
    };
    println!(
        "scored {} layers of '{}' ({}) → {}",
        file.layers.len(),
        model.graph().name(),
        file.timing(),
        scores.display()
    );
    if let Some(kib) = peak_rss_kib() {
        println!("peak memory (resident): {:.1} MiB", kib as f64 / 1024.0);
    }
    Ok((seconds("u"), seconds("r"), whole))
}

/// The comparison table printed at the end.
fn table(theirs: f64, u: f64, r: f64, whole: f64) -> String {
    let ours = u + r;
    format!(
        "| scorer | U+R scoring time | |\n\
         | --- | --- | --- |\n\
         | network-pruner 2.16 `get_metrics` | {theirs:.2} s | baseline |\n\
         | fair-pruner `fair_scoring::score` (u, r) | {ours:.2} s (U {u:.2} s, R {r:.2} s; with loading and saving {whole:.2} s) | {:.1}× faster ({:.1}× counting loading and saving) |\n",
        theirs / ours,
        theirs / whole
    )
}

/// Runs the scoring benchmark.
pub fn run(o: &Options) -> Result<()> {
    let python = reference_python(o.python.as_deref(), "the scoring benchmark")?;
    let root = workspace_root();
    let out = root.join("target/bench/scoring");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    tch::set_num_threads(i32::try_from(o.threads).context("--threads is too large")?);

    eprintln!(
        "bench scoring: CIFAR VGG16-BN, {} classes × {} samples, P = 128, {} threads",
        o.classes, o.per_class, o.threads
    );
    eprintln!("  reference: network-pruner 2.16 get_metrics (this takes minutes) …");
    let status = Command::new(&python)
        .arg(root.join("xtask/bench/scoring_reference.py"))
        .arg(&out)
        .args([o.threads, o.classes, o.per_class].map(|v| v.to_string()))
        .status()
        .with_context(|| format!("cannot run the reference script with {}", python.display()))?;
    if !status.success() {
        bail!("the reference script failed ({status})");
    }
    let reference = read_json(&out.join("reference.json"))?;
    let theirs = reference["seconds"]
        .as_f64()
        .context("reference.json has no seconds")?;

    eprintln!("  fair-pruner score (in-process, fair_scoring::score) …");
    let (u, r, whole) = ours(&out, o)?;
    let ours = u + r;
    println!();
    print!("{}", table(theirs, u, r, whole));
    let summary = serde_json::json!({
        "model": MODEL, "classes": o.classes, "per_class": o.per_class, "threads": o.threads,
        "reference_seconds": theirs, "ours_seconds": ours, "ours_u_seconds": u, "ours_r_seconds": r,
        "ours_process_seconds": whole, "ratio": theirs / ours,
    });
    let path = out.join("summary.json");
    write_json(&path, &summary)?;
    println!("\nwritten to {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_those_of_score_with_samples_per_class() {
        let s = scoring_settings(8);
        let d = ScoringSettings::default();
        assert_eq!(s.u.samples_per_class, 8);
        assert_eq!(s.u.max_classes, DrawSettings::default().max_classes);
        assert_eq!(s.u.projections, d.u.projections);
        assert_eq!(s.r, d.r);
    }

    #[test]
    fn the_table_shows_both_ratios() {
        let t = table(100.0, 3.0, 2.0, 8.0);
        assert!(t.contains("| network-pruner 2.16 `get_metrics` | 100.00 s | baseline |"));
        assert!(
            t.contains("5.00 s (U 3.00 s, R 2.00 s; with loading and saving 8.00 s) | 20.0× faster (12.5× counting loading and saving) |"),
            "{t}"
        );
    }
}
