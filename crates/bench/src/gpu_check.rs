//! `fair-bench gpu-check`: every step of a pruning run — scoring (U+R), surgery, a
//! fine-tuning step and latency — on CUDA and on the CPU, for CIFAR VGG16-BN and ResNet-50,
//! timed in the same run, a class-pair row (ResNet-50's U-Score on the synthetic data
//! of `scale-classes` with the device engine and with the host's bounded search, scores
//! compared), and a latency-table row (CIFAR VGG16-BN's table measured on CUDA, as
//! `--latency-on cuda` measures it). Without CUDA it runs the CPU side and says so, and skips
//! the CUDA-only rows.
//!
//! The device machines have no Rust toolchain: build here
//! (`cargo build --release -p fair-bench`), copy `target/release/fair-bench` there and run
//! `LD_LIBRARY_PATH=$(python -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
//! ./fair-bench gpu-check`.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use fair_analysis::{Goal, Method, SelectOptions};
use fair_pipeline::{
    LatencyOptions, LatencyRuntime, LatencyTimer, measure, measure_table_on, stages, table_options,
};
use fair_runtime::{Mode, Model};
use fair_scoring::{Calibration, Progress, Registry};
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor};

use crate::scoring::scoring_settings;
use crate::{positive, workspace_root, write_json};

/// Settings of the GPU check.
#[derive(Debug, Args)]
#[command(args_override_self = true)]
pub struct Options {
    /// Calibration classes (random images, labels 0..K).
    #[arg(long, default_value_t = 10, value_parser = positive)]
    pub classes: usize,
    /// Calibration samples per class.
    #[arg(long, default_value_t = 32, value_parser = positive)]
    pub per_class: usize,
    /// Batch size of the fine-tuning step and the larger latency batch.
    #[arg(long, default_value_t = 64, value_parser = positive)]
    pub batch: usize,
    /// Models to check, comma-separated (zoo names; input shape chosen per model).
    #[arg(long, value_delimiter = ',', default_value = "vgg16_bn_cifar,resnet50")]
    pub models: Vec<String>,
    /// Skip the CPU side (the CUDA figures alone).
    #[arg(long)]
    pub no_cpu: bool,
    /// libtorch CPU threads.
    #[arg(long, default_value_t = 2, value_parser = positive)]
    pub threads: usize,
    /// Classes × samples of the class-pair row (ResNet-50 on the synthetic data of
    /// `scale-classes`, CUDA only).
    #[arg(long, default_value = "100x8", value_parser = crate::scale_classes::size)]
    pub pairs_row: crate::scale_classes::Size,
    /// Image side of the class-pair row.
    #[arg(long, default_value_t = 64, value_parser = positive)]
    pub pairs_size: usize,
}

/// Seconds of each step on one device.
#[derive(Debug, Clone, Copy, Default)]
struct Steps {
    u: f64,
    r: f64,
    surgery: f64,
    train_step: f64,
    latency_ms: f64,
}

/// The input shape the check uses for a zoo model.
fn input_for(model: &str) -> [usize; 3] {
    if model.ends_with("_cifar") || model.starts_with("resnet20") || model.starts_with("resnet56") {
        [3, 32, 32]
    } else {
        [3, 224, 224]
    }
}

/// Waits for queued CUDA work, so the clock measures it.
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Runs every step of `name` on `device`.
fn steps(name: &str, device: Device, o: &Options) -> Result<Steps> {
    let input = input_for(name);
    let graph = fair_zoo::build(name, &input, o.classes)?;
    let model = Model::new(graph, device, 0)?;
    tch::manual_seed(0);
    let n = (o.classes * o.per_class) as i64;
    let [c, h, w] = input.map(|d| d as i64);
    let images = Tensor::randn([n, c, h, w], (Kind::Float, Device::Cpu));
    let labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(o.classes as i64);
    let calibration = Calibration::new(images, &labels, "random images")?;

    let settings = scoring_settings(o.per_class);
    let names = ["u", "r", "l1"].map(String::from);
    let file = stages::score(
        &model,
        Some(&calibration),
        &Registry::default(),
        &names,
        &settings,
        None,
        Progress::QUIET,
    )?
    .scores;
    let seconds = |k: &str| {
        file.provenance
            .criteria
            .get(k)
            .map_or(f64::NAN, |r| r.seconds)
    };

    let start = Instant::now();
    let selector = stages::selector(&file, Method::Tod, "u", "r", "u", SelectOptions::default())?;
    let selection = stages::select(&selector, Goal::Macs(0.5), Method::Tod)?;
    let pruned = stages::apply(&model, &selection.resolution)?;
    sync(device);
    let surgery = start.elapsed().as_secs_f64();

    // One SGD step of the pruned model (forward in train mode, loss, backward, update),
    // after an untimed warm-up step: a step timed alone, which `stages::finetune` (whole
    // epochs over a dataset) does not give.
    let mut opt = tch::nn::Sgd {
        momentum: 0.9,
        ..Default::default()
    }
    .build(pruned.var_store(), 0.01)?;
    let b = o.batch as i64;
    let x = Tensor::randn([b, c, h, w], (Kind::Float, device));
    let y = Tensor::arange(b, (Kind::Int64, device)).remainder(o.classes as i64);
    let mut step = || -> Result<f64> {
        let start = Instant::now();
        let logits = pruned.forward(&x, Mode::Train)?;
        let loss = logits.cross_entropy_for_logits(&y);
        opt.backward_step(&loss);
        sync(device);
        Ok(start.elapsed().as_secs_f64())
    };
    step()?;
    let train_step = step()?;

    let latency = measure(
        &[&pruned],
        &LatencyOptions {
            batch_sizes: vec![o.batch],
            min_rounds: 5,
            max_rounds: 20,
            budget_seconds: 2.0,
            ..LatencyOptions::default()
        },
    )?;
    let latency_ms = latency
        .first()
        .and_then(|l| l.first())
        .map_or(f64::NAN, |l| l.ms.median);
    Ok(Steps {
        u: seconds("u"),
        r: seconds("r"),
        surgery,
        train_step,
        latency_ms,
    })
}

/// The table row of one model.
fn row(name: &str, cuda: Option<Steps>, cpu: Option<Steps>) -> String {
    let cell = |f: fn(&Steps) -> f64, unit: &str| match (cuda, cpu) {
        (Some(g), Some(c)) => format!(
            "{:.3} {unit} / {:.3} {unit} ({:.1}×)",
            f(&g),
            f(&c),
            f(&c) / f(&g)
        ),
        (Some(g), None) => format!("{:.3} {unit} / –", f(&g)),
        (None, Some(c)) => format!("pending / {:.3} {unit}", f(&c)),
        (None, None) => "–".into(),
    };
    format!(
        "| {name} | {} | {} | {} | {} | {} |\n",
        cell(|s| s.u, "s"),
        cell(|s| s.r, "s"),
        cell(|s| s.surgery, "s"),
        cell(|s| s.train_step, "s"),
        cell(|s| s.latency_ms, "ms"),
    )
}

/// The class-pair row: ResNet-50's U-Score on CUDA with the host engine's bounded search
/// and with the device engine (which compares every pair on the device), on the synthetic
/// data of `scale-classes`; `None` without CUDA.
fn pairs_row(o: &Options) -> Result<Option<(String, serde_json::Value)>> {
    if !tch::Cuda::is_available() {
        eprintln!("gpu-check: class-pair row skipped (no CUDA device)");
        return Ok(None);
    }
    let s = o.pairs_row;
    eprintln!(
        "gpu-check: class pairs, resnet50 at 3×{}², {} × {} …",
        o.pairs_size, s.classes, s.per_class
    );
    let (_, data) = crate::scale_classes::synthetic(s, o.pairs_size, 1.0, 0)?;
    let graph = fair_zoo::build("resnet50", &[3, o.pairs_size, o.pairs_size], s.classes)?;
    let model = Model::new(graph, Device::Cuda(0), 0)?;
    let (host, device, worst) = crate::scale_classes::host_and_device(&model, &data, s)?;
    let line = format!(
        "\nclass pairs (resnet50, 3×{}², {} classes × {}): U-Score {:.2} s with the device \
         engine (every pair on CUDA; pairs {:.2} s) / {:.2} s with the host engine's bounded \
         search (pairs {:.2} s); largest relative difference of the scores {worst:.1e}\n",
        o.pairs_size, s.classes, s.per_class, device.total, device.pairs, host.total, host.pairs,
    );
    let json = serde_json::json!({"model": "resnet50", "size": o.pairs_size,
        "classes": s.classes, "per_class": s.per_class,
        "device_u_seconds": device.total, "device_pairs_seconds": device.pairs,
        "host_bounded_u_seconds": host.total, "host_bounded_pairs_seconds": host.pairs,
        "largest_relative_difference": worst});
    if worst > 1e-5 {
        anyhow::bail!(
            "the device engine's U-Scores differ from the host's by {worst:.1e} (relative), \
             more than the 1e-5 the device's f32 reductions allow"
        );
    }
    Ok(Some((line, json)))
}

/// The latency-table row: CIFAR VGG16-BN's latency table measured on CUDA at `--batch`
/// (what `prune --target-latency … --latency-on cuda` measures: models built on the CPU,
/// copied to the GPU and timed there, each pass synchronised); `None` without CUDA.
fn latency_table_row(o: &Options) -> Result<Option<(String, serde_json::Value)>> {
    if !tch::Cuda::is_available() {
        eprintln!("gpu-check: latency-table row skipped (no CUDA device)");
        return Ok(None);
    }
    let name = "vgg16_bn_cifar";
    eprintln!(
        "gpu-check: latency table of {name} on CUDA, batch {} …",
        o.batch
    );
    let graph = fair_zoo::build(name, &input_for(name), o.classes)?;
    let timer = LatencyTimer::new(LatencyRuntime::Cuda, "python3");
    let key = fair_analysis::LatencyKey {
        model_digest: String::new(),
        runtime: LatencyRuntime::Cuda.name().to_owned(),
        runtime_version: timer.runtime_version()?.unwrap_or_default(),
        threads: o.threads,
        batch: o.batch,
    };
    let start = Instant::now();
    let table = measure_table_on(
        &timer,
        &graph,
        fair_pipeline::GROUPED_CONVS,
        &[],
        key,
        &table_options(),
        &mut |_| {},
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let narrowest = table
        .groups
        .iter()
        .filter_map(|g| g.points.first().map(|p| p.seconds / table.full_seconds))
        .fold(f64::INFINITY, f64::min);
    let line = format!(
        "\nlatency table ({name} on {}, batch {}): {} groups measured in {seconds:.1} s; \
         full model {:.3} ms; the largest cut of one group alone leaves {:.0} % of it{}\n",
        table.key.runtime_version,
        o.batch,
        table.groups.len(),
        table.full_seconds * 1e3,
        narrowest * 100.0,
        if table.noisy { " (flagged noisy)" } else { "" },
    );
    let json = serde_json::json!({"model": name, "gpu": table.key.runtime_version,
        "batch": o.batch, "groups": table.groups.len(), "seconds": seconds,
        "full_ms": table.full_seconds * 1e3, "narrowest_fraction": narrowest,
        "noisy": table.noisy});
    Ok(Some((line, json)))
}

/// Runs the check.
pub fn run(o: &Options) -> Result<()> {
    tch::set_num_threads(i32::try_from(o.threads).context("--threads is too large")?);
    let cuda = tch::Cuda::is_available();
    if !cuda {
        eprintln!(
            "gpu-check: libtorch sees no CUDA device; the CUDA figures are pending, the CPU side runs"
        );
    }
    let mut table = String::from(
        "| model | U-Score | R-Score | surgery | fine-tuning step | latency (batch) |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut summary = Vec::new();
    for name in &o.models {
        eprintln!("gpu-check: {name} …");
        let g = if cuda {
            Some(steps(name, Device::Cuda(0), o).with_context(|| format!("{name} on CUDA"))?)
        } else {
            None
        };
        let c = if o.no_cpu {
            None
        } else {
            Some(steps(name, Device::Cpu, o).with_context(|| format!("{name} on the CPU"))?)
        };
        table.push_str(&row(name, g, c));
        let json = |s: Option<Steps>| {
            s.map(|s| {
                serde_json::json!({"u_seconds": s.u, "r_seconds": s.r, "surgery_seconds": s.surgery,
                    "train_step_seconds": s.train_step, "latency_ms": s.latency_ms})
            })
        };
        summary.push(serde_json::json!({"model": name, "input": input_for(name),
            "cuda": json(g), "cpu": json(c)}));
    }
    let pairs = pairs_row(o).context("the class-pair row on CUDA")?;
    let latency_table =
        latency_table_row(o).context("the latency-table row on CUDA (--latency-on cuda)")?;
    println!("cells: CUDA / CPU (CPU ÷ CUDA); batch {}\n", o.batch);
    print!("{table}");
    for (line, _) in pairs.iter().chain(&latency_table) {
        print!("{line}");
    }
    let out = workspace_root().join("target/bench/gpu-check");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let path = out.join("summary.json");
    write_json(
        &path,
        &serde_json::json!({"cuda": cuda, "classes": o.classes, "per_class": o.per_class,
            "batch": o.batch, "threads": o.threads, "models": summary,
            "class_pairs": pairs.map(|(_, j)| j),
            "latency_table": latency_table.map(|(_, j)| j)}),
    )?;
    println!("\nwritten to {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_show_pending_cuda_figures_and_ratios() {
        let s = Steps {
            u: 2.0,
            r: 1.0,
            surgery: 0.5,
            train_step: 0.25,
            latency_ms: 10.0,
        };
        let fast = Steps { u: 0.5, ..s };
        assert!(row("m", None, Some(s)).contains("pending / 2.000 s"));
        assert!(row("m", Some(fast), Some(s)).contains("0.500 s / 2.000 s (4.0×)"));
        assert_eq!(input_for("vgg16_bn_cifar"), [3, 32, 32]);
        assert_eq!(input_for("resnet50"), [3, 224, 224]);
    }
}
