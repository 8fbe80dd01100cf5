//! `cargo xtask bench`: benchmarks reported as ratios against a baseline measured in the same
//! run on the same machine (never asserted as wall-clock in tests).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{Setup, cargo, workspace_root};

struct Options {
    threads: usize,
    classes: usize,
    per_class: usize,
}

fn parse(args: &[&str]) -> Result<Options> {
    let mut o = Options {
        threads: 2,
        classes: 10,
        per_class: 32,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .parse::<usize>()
            .with_context(|| format!("{flag} needs a positive integer"))?;
        match *flag {
            "--threads" => o.threads = value,
            "--classes" => o.classes = value,
            "--per-class" => o.per_class = value,
            other => {
                bail!("unknown bench option {other} (expected --threads, --classes, --per-class)")
            }
        }
    }
    Ok(o)
}

pub(crate) fn run(setup: &Setup, args: &[&str]) -> Result<()> {
    match args.first() {
        Some(&"scoring") => scoring(setup, &parse(&args[1..])?),
        Some(&"compare") => crate::compare::run(setup, &crate::compare::parse(&args[1..])?),
        _ => bail!(
            "usage: cargo xtask bench scoring [--threads N --classes K --per-class N]\n       cargo xtask bench compare [--alphas A,B --nets vgg,resnet --train-epochs N --finetune-epochs N --per-class N --threads N --no-docs --tables-only]"
        ),
    }
}

fn json(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn scoring(setup: &Setup, o: &Options) -> Result<()> {
    let python = setup
        .python
        .as_ref()
        .context("the scoring benchmark needs the reference Python (network-pruner)")?;
    let root = workspace_root();
    let out = root.join("target/bench/scoring");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    cargo(&["build", "--release", "--quiet", "-p", "fair-cli"])?;

    eprintln!(
        "bench scoring: CIFAR VGG16-BN, {} classes × {} samples, P = 128, {} threads",
        o.classes, o.per_class, o.threads
    );
    eprintln!("  reference: network-pruner 2.16 get_metrics (this takes minutes) …");
    let status = Command::new(python)
        .arg(root.join("xtask/bench/scoring_reference.py"))
        .arg(&out)
        .args([o.threads, o.classes, o.per_class].map(|v| v.to_string()))
        .status()
        .context("cannot run the reference script")?;
    if !status.success() {
        bail!("the reference script failed ({status})");
    }
    let reference = json(&out.join("reference.json"))?;
    let theirs = reference["seconds"]
        .as_f64()
        .context("reference.json has no seconds")?;

    eprintln!("  fair-pruner score …");
    let bin = root.join("target/release/fair-pruner");
    let start = Instant::now();
    let output = Command::new(&bin)
        .args([
            "score",
            "--model",
            "vgg16_bn_cifar",
            "--input",
            "3x32x32",
            "--classes",
        ])
        .arg(o.classes.to_string())
        .arg("--weights")
        .arg(out.join("weights.safetensors"))
        .arg("--data")
        .arg(out.join("calibration.safetensors"))
        .arg("--out")
        .arg(out.join("scores.json"))
        .args([
            "--criteria",
            "u,r",
            "--batch-size",
            "64",
            "--quiet",
            "--threads",
        ])
        .arg(o.threads.to_string())
        .arg("--samples-per-class")
        .arg(o.per_class.to_string())
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    let process = start.elapsed().as_secs_f64();
    if !output.status.success() {
        bail!(
            "fair-pruner score failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    print!("{}", String::from_utf8_lossy(&output.stdout));
    let scores = json(&out.join("scores.json"))?;
    let seconds = &scores["provenance"]["seconds"];
    let (u, r) = (
        seconds["u"].as_f64().unwrap_or(f64::NAN),
        seconds["r"].as_f64().unwrap_or(f64::NAN),
    );
    let ours = u + r;
    println!();
    println!("| scorer | U+R scoring time | |");
    println!("| --- | --- | --- |");
    println!("| network-pruner 2.16 `get_metrics` | {theirs:.2} s | baseline |");
    println!(
        "| fair-pruner `score --criteria u,r` | {ours:.2} s (U {u:.2} s, R {r:.2} s; whole process {process:.2} s) | {:.1}× faster ({:.1}× counting the whole process) |",
        theirs / ours,
        theirs / process
    );
    let summary = serde_json::json!({
        "model": "vgg16_bn_cifar", "classes": o.classes, "per_class": o.per_class, "threads": o.threads,
        "reference_seconds": theirs, "ours_seconds": ours, "ours_u_seconds": u, "ours_r_seconds": r,
        "ours_process_seconds": process, "ratio": theirs / ours,
    });
    std::fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!("\nwritten to {}", out.join("summary.json").display());
    Ok(())
}
