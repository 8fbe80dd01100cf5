//! `fair-bench onnx-coverage`: which torchvision classification models fair-pruner imports
//! from ONNX, runs exactly and prunes end to end.
//!
//! For every model of `torchvision.models` (random weights, BatchNorm statistics randomised,
//! exported in eval mode by `xtask/bench/onnx_coverage_reference.py`, ONNX Runtime's output
//! on one seeded input kept as the reference):
//!
//! 1. **imported**: `fair_onnx::import_file` reads it into the IR;
//! 2. **outputs equal ONNX Runtime**: fair-pruner's forward pass on the same input, largest
//!    difference relative to the output's scale, at most [`TOLERANCE`];
//! 3. **prunable groups**: `fair_analysis::analyze` (which protects the output layer);
//!    grouped convolutions are held fixed, or with `--grouped-convs within-groups` pruned
//!    within their groups (`fair_analysis::GroupedConvs`; the docs table is not written);
//! 4. **random plan verified**: a seeded random quarter of every prunable group's units is
//!    removed. The units are first made provably dead (every weight column that reads them
//!    zeroed), so the pruned model must give the dead model's outputs (to [`TOLERANCE`]);
//!    then the pruned model is written to ONNX by `fair_onnx::export`, `onnx.checker` must
//!    accept it and ONNX Runtime must give fair-pruner's outputs (to [`TOLERANCE`]).
//!
//! Writes `target/bench/onnx-coverage/summary.json` and the table in `docs/onnx.md`.
//! Exports go to `$FAIR_PRUNER_CACHE/onnx-coverage` (default
//! `~/.cache/fair-pruner/onnx-coverage`); each `.onnx` is deleted once checked unless
//! `--keep-exports` (all of torchvision takes ~15 GB).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use fair_analysis::{GroupRule, GroupedConvs, Plan, ResolveOptions};
use fair_runtime::{Mode, Model};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use tch::{Device, Tensor};

use crate::tables::{Markers, write_block};
use crate::{read_json, reference_python, workspace_root, write_json};

/// Largest accepted difference, relative to the output's largest magnitude.
pub const TOLERANCE: f64 = 1e-4;

/// Share of every prunable group's units the random plan removes.
const REMOVE: f64 = 0.25;

/// Markers of the block in `docs/onnx.md`.
pub const MARKERS: Markers<'static> = Markers {
    begin: "<!-- bench onnx-coverage: begin -->",
    end: "<!-- bench onnx-coverage: end -->",
    tool: "cargo xtask bench onnx-coverage",
};

/// Which `torch.onnx.export` exporter writes the models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Exporter {
    /// The TorchScript-based exporter (`dynamo=False`), opset 17.
    Ts,
    /// The `torch.export`-based exporter (`dynamo=True`), opset 18.
    Dynamo,
}

impl Exporter {
    fn name(self) -> &'static str {
        match self {
            Exporter::Ts => "ts",
            Exporter::Dynamo => "dynamo",
        }
    }
}

/// How grouped convolutions (not depthwise) are analysed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Grouped {
    /// Held fixed (`GroupedConvs::Fixed`; the table in docs/onnx.md is for this mode).
    Fixed,
    /// Pruned within their groups, the group count kept (`GroupedConvs::WithinGroups`, what
    /// `score`, `ratios`, `apply` and `prune` do by default).
    WithinGroups,
}

impl Grouped {
    fn name(self) -> &'static str {
        match self {
            Grouped::Fixed => "fixed",
            Grouped::WithinGroups => "within-groups",
        }
    }

    fn analysis(self) -> GroupedConvs {
        match self {
            Grouped::Fixed => GroupedConvs::Fixed,
            Grouped::WithinGroups => GroupedConvs::WithinGroups,
        }
    }
}

/// Options of `fair-bench onnx-coverage`.
#[derive(Debug, Args)]
pub struct Options {
    /// Models to check, comma-separated [default: every classification model of
    /// torchvision.models that import may read (CNNs and `vit_*`); the other transformers
    /// are listed, not exported, unless named here].
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    pub models: Vec<String>,
    /// The exporter.
    #[arg(long, value_enum, default_value_t = Exporter::Ts)]
    pub exporter: Exporter,
    /// Input height and width of the exports.
    #[arg(long, default_value_t = 224, value_parser = crate::positive)]
    pub size: usize,
    /// Seed of the random plans.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// libtorch threads.
    #[arg(long, default_value_t = 2, value_parser = crate::positive)]
    pub threads: usize,
    /// The reference Python (torch, torchvision, onnx, onnxruntime) [default: $FAIR_PRUNER_PYTHON].
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Where exports are cached [default: $FAIR_PRUNER_CACHE/onnx-coverage].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Keep every export in the cache (all of torchvision is ~15 GB); by default each
    /// model's .onnx is deleted once checked and only its small results are kept.
    #[arg(long)]
    pub keep_exports: bool,
    /// Do not write the table into docs/onnx.md.
    #[arg(long)]
    pub no_docs: bool,
    /// How grouped convolutions are analysed for the prunable groups and the random plan;
    /// the table in docs/onnx.md is written for `fixed` only.
    #[arg(long, value_enum, default_value_t = Grouped::Fixed)]
    pub grouped_convs: Grouped,
}

/// Runs `fair-bench onnx-coverage`.
pub fn run(o: &Options) -> Result<()> {
    let python = reference_python(o.python.as_deref(), "the ONNX coverage benchmark")?;
    let script = workspace_root().join("xtask/bench/onnx_coverage_reference.py");
    tch::set_num_threads(o.threads as i32);
    let cache = match &o.cache {
        Some(c) => c.clone(),
        None => cache_dir()?.join("onnx-coverage"),
    };
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("cannot create {}", cache.display()))?;
    let listed = python_json(&python, &script, &["list"])?;
    let all: Vec<(String, String, bool)> = listed
        .as_array()
        .context("the model list is not a JSON array")?
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or_default().to_owned(),
                m["family"].as_str().unwrap_or_default().to_owned(),
                m["cnn"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    for name in &o.models {
        if !all.iter().any(|(n, _, _)| n == name) {
            bail!("--models: torchvision has no classification model '{name}'");
        }
    }
    let out_dir = workspace_root().join("target/bench/onnx-coverage");
    std::fs::create_dir_all(&out_dir)?;
    // A run of some models updates their rows of an earlier run with the same settings.
    let summary_path = out_dir.join("summary.json");
    let earlier: BTreeMap<String, Value> = match read_json(&summary_path) {
        Ok(s)
            if !o.models.is_empty()
                && s["exporter"] == json!(o.exporter.name())
                && s["size"] == json!(o.size)
                && s.get("grouped_convs")
                    .map_or(o.grouped_convs == Grouped::Fixed, |g| {
                        g == &json!(o.grouped_convs.name())
                    }) =>
        {
            s["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| Some((r["name"].as_str()?.to_owned(), r.clone())))
                .collect()
        }
        _ => BTreeMap::new(),
    };
    let mut rows = Vec::new();
    // Models run in the order given (e.g. small ones first), the table lists torchvision's;
    // the rows kept from an earlier run come first, so an interrupted run loses none.
    let mut order: Vec<&(String, String, bool)> = all.iter().collect();
    order.sort_by_key(|(n, _, _)| o.models.iter().position(|m| m == n).map_or(0, |p| p + 1));
    for (name, family, cnn) in order {
        let chosen = if o.models.is_empty() {
            tried_by_default(name, *cnn)
        } else {
            o.models.contains(name)
        };
        if !chosen {
            if let Some(r) = earlier.get(name) {
                rows.push(r.clone());
            } else if let Some(why) = skip_reason(name, *cnn, !o.models.is_empty()) {
                rows.push(json!({"name": name, "family": family, "cnn": cnn, "skipped": why}));
            }
            continue;
        }
        let started = Instant::now();
        let dir = cache.join(format!("{name}-{}-{}", o.exporter.name(), o.size));
        let mut row = check_model(&python, &script, name, &dir, o)
            .unwrap_or_else(|e| json!({"error": format!("{e:#}")}));
        if !o.keep_exports {
            remove_export(&dir);
        }
        row["name"] = json!(name);
        row["family"] = json!(family);
        row["cnn"] = json!(cnn);
        row["seconds"] = json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
        eprintln!("{}", summary_line(&row));
        rows.push(row);
        // Written after every model: an interrupted run keeps what it measured.
        let so_far = json!({"exporter": o.exporter.name(), "size": o.size,
            "grouped_convs": o.grouped_convs.name(), "tolerance": TOLERANCE, "rows": rows});
        write_json(&summary_path, &so_far)?;
    }
    rows.sort_by_key(|r| all.iter().position(|(n, _, _)| r["name"] == json!(n)));
    let summary = json!({
        "exporter": o.exporter.name(),
        "size": o.size,
        "grouped_convs": o.grouped_convs.name(),
        "tolerance": TOLERANCE,
        "rows": rows,
    });
    write_json(&summary_path, &summary)?;
    let md = markdown(&summary);
    print!("{md}");
    // The table in the docs covers every model: a partial run updates it only once the
    // summary holds a row for each.
    let complete = all
        .iter()
        .all(|(n, _, _)| rows.iter().any(|r| r["name"] == json!(n)));
    if !o.no_docs && complete && o.grouped_convs == Grouped::Fixed {
        write_block(&workspace_root().join("docs/onnx.md"), &md, MARKERS)?;
    }
    Ok(())
}

/// Whether a run without `--models` checks the model: every CNN and every transformer
/// torchvision has whose blocks import reads: the plain vision transformers (`vit_*`: class
/// token, position embedding, `nn.MultiheadAttention`), the Swin Transformers (`swin_*`, V1
/// and V2: shifted windows, relative position bias, patch merging) and MaxViT (`maxvit_*`:
/// MBConv blocks, block and grid attention on windows of the image). Another transformer
/// would be listed as not supported.
fn tried_by_default(name: &str, cnn: bool) -> bool {
    cnn || ["vit_", "swin_", "maxvit_"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// The note of a model that a run does not check: a model checked by default that
/// `--models` leaves out is "not selected" (only transformers are listed so; a CNN left out
/// has no row); a transformer import does not read is "not supported yet".
fn skip_reason(name: &str, cnn: bool, models_given: bool) -> Option<&'static str> {
    if tried_by_default(name, cnn) {
        return (models_given && !cnn).then_some(NOT_SELECTED);
    }
    Some("not supported yet")
}

/// The note of a model checked by default but left out by `--models`.
const NOT_SELECTED: &str = "not selected (--models)";

/// Deletes an export but its small results (`meta.json`, `io.safetensors`): `model.onnx` and
/// any external data files the exporter wrote beside it (models over 2 GB).
fn remove_export(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        if name != "meta.json" && name != "io.safetensors" && entry.path().is_file() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn cache_dir() -> Result<PathBuf> {
    if let Some(c) = std::env::var_os("FAIR_PRUNER_CACHE") {
        return Ok(PathBuf::from(c));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(x).join("fair-pruner"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --cache DIR")?;
    Ok(PathBuf::from(home).join(".cache/fair-pruner"))
}

fn python_json(python: &Path, script: &Path, args: &[&str]) -> Result<Value> {
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed: {}",
            script.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("");
    serde_json::from_str(last)
        .with_context(|| format!("{} {}: no JSON in its output", script.display(), args[0]))
}

/// One model's row: export (cached), import, compare, analyse, prune and verify.
fn check_model(python: &Path, script: &Path, name: &str, dir: &Path, o: &Options) -> Result<Value> {
    let meta_path = dir.join("meta.json");
    if !meta_path.exists() || !dir.join("model.onnx").exists() {
        remove_export(dir);
        let size = o.size.to_string();
        let dir_text = dir.display().to_string();
        python_json(
            python,
            script,
            &[
                "export",
                name,
                &dir_text,
                "--exporter",
                o.exporter.name(),
                "--size",
                &size,
            ],
        )?;
    }
    let meta = read_json(&meta_path)?;
    let mut row = json!({"torch_params": meta["params"], "torch_vs_ort": meta["torch_vs_ort"]});
    if let Some(e) = meta["error"].as_str() {
        row["export_error"] = json!(e);
        return Ok(row);
    }
    let imported = match fair_onnx::import_file(&dir.join("model.onnx")) {
        Ok(i) => i,
        Err(e) => {
            row["import_error"] = json!(e.to_string());
            return Ok(row);
        }
    };
    row["imported"] = json!(true);
    row["nodes"] = json!(imported.graph.nodes().len());
    row["params"] = json!(imported.graph.param_count());
    row["macs"] = json!(imported.graph.macs());
    let model = fair_pipeline::onnx_model(imported, Device::Cpu)?;
    let io: BTreeMap<String, Tensor> =
        fair_runtime::read_safetensors(&dir.join("io.safetensors"), Device::Cpu)?
            .into_iter()
            .collect();
    let x = io.get("input").context("io.safetensors has no 'input'")?;
    let reference = io.get("output").context("io.safetensors has no 'output'")?;
    let ours = eval(&model, x)?;
    let diff = relative_diff(&ours, reference)?;
    row["max_rel_diff"] = json!(diff);
    row["outputs_equal"] = json!(diff <= TOLERANCE);

    // The output layer is protected by the analysis itself.
    let groups = match fair_analysis::analyze_with(model.graph(), &[], o.grouped_convs.analysis()) {
        Ok(g) => g,
        Err(e) => {
            row["plan_error"] = json!(format!("dependency analysis: {e}"));
            return Ok(row);
        }
    };
    let prunable: Vec<usize> = (0..groups.groups().len())
        .filter(|&g| groups.groups()[g].is_prunable())
        .collect();
    row["groups"] = json!(prunable.len());
    if prunable.is_empty() {
        row["plan_error"] = json!("no prunable group");
        return Ok(row);
    }
    match verify_random_plan(python, script, &model, &groups, &prunable, dir, o) {
        Ok(v) => {
            for (k, val) in v.as_object().into_iter().flatten() {
                row[k] = val.clone();
            }
        }
        Err(e) => row["plan_error"] = json!(format!("{e:#}")),
    }
    Ok(row)
}

fn eval(model: &Model, x: &Tensor) -> Result<Tensor> {
    Ok(tch::no_grad(|| model.forward(x, Mode::Eval))?)
}

/// Largest |a − b| relative to b's largest magnitude; an error when b is all zero (a model
/// whose output is zero whatever its input, e.g. ViT's zero-initialised head, compares
/// nothing).
fn relative_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.size() != b.size() {
        bail!(
            "output shape {:?} but the reference's is {:?}",
            a.size(),
            b.size()
        );
    }
    let d = (a - b).abs().max().double_value(&[]);
    let scale = b.abs().max().double_value(&[]);
    if scale == 0.0 {
        bail!("the reference output is all zero: nothing would be compared");
    }
    Ok(d / scale)
}

/// Removes a seeded random quarter of every prunable group (the same units from each of its
/// coupled layers), checks against the dead-unit model and ONNX Runtime.
fn verify_random_plan(
    python: &Path,
    script: &Path,
    model: &Model,
    groups: &fair_analysis::ChannelGroups,
    prunable: &[usize],
    dir: &Path,
    o: &Options,
) -> Result<Value> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed);
    let mut plan = Plan::new();
    let mut chosen: Vec<(usize, BTreeSet<usize>)> = Vec::new();
    for &g in prunable {
        let group = &groups.groups()[g];
        let k = ((group.units as f64) * REMOVE).floor() as usize;
        if k == 0 || k >= group.units {
            continue;
        }
        let mut units: Vec<usize> = (0..group.units).collect();
        units.shuffle(&mut rng);
        let units: BTreeSet<usize> = units.into_iter().take(k).collect();
        for layer in &group.layers {
            plan = plan.remove(layer, units.iter().copied());
        }
        chosen.push((g, units));
    }
    // The dead-unit model: every weight column that reads a removed unit is zero.
    let dead = Model::from_tensors(
        model.graph().clone(),
        model
            .named_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect(),
        Device::Cpu,
    )?;
    tch::no_grad(|| -> Result<()> {
        for (g, units) in &chosen {
            for (node, cols) in groups.reading_columns(model.graph(), *g, units) {
                let mut w = dead.tensor(&format!("{node}.weight"))?.shallow_clone();
                let _ = w.f_index_fill_(1, &Tensor::from_slice(&cols), 0.0)?;
            }
        }
        Ok(())
    })?;
    let pruned = fair_surgery::apply(
        &dead,
        &plan,
        &ResolveOptions {
            rule: GroupRule::Strict,
            protected: Vec::new(),
            grouped: o.grouped_convs.analysis(),
        },
    )?;
    let io: BTreeMap<String, Tensor> =
        fair_runtime::read_safetensors(&dir.join("io.safetensors"), Device::Cpu)?
            .into_iter()
            .collect();
    let x = &io["input"];
    let dead_out = eval(&dead, x)?;
    let pruned_out = eval(&pruned.model, x)?;
    let dead_diff = relative_diff(&pruned_out, &dead_out)?;
    let (p0, p1) = pruned.report.params;
    let m0 = model.graph().macs();
    let m1 = pruned.model.graph().macs();
    let mut v = json!({
        "plan_groups": chosen.len(),
        "params_after": p1,
        "params_removed": 1.0 - p1 as f64 / p0 as f64,
        "macs_removed": 1.0 - m1 as f64 / m0 as f64,
        "dead_rel_diff": dead_diff,
    });
    // The pruned model through fair-onnx's writer and ONNX Runtime.
    let bytes = fair_surgery::onnx_bytes(&pruned.model, &fair_onnx::ExportOptions::default())?;
    let work = workspace_root().join("target/bench/onnx-coverage/work");
    std::fs::create_dir_all(&work)?;
    let onnx_path = work.join("pruned.onnx");
    let io_path = work.join("pruned-io.safetensors");
    fair_fs::write_atomic(&onnx_path, &bytes)?;
    fair_runtime::write_safetensors(
        &io_path,
        &[
            ("input".into(), x.shallow_clone()),
            ("output".into(), pruned_out),
        ],
    )?;
    let checked = python_json(
        python,
        script,
        &[
            "check",
            &onnx_path.display().to_string(),
            &io_path.display().to_string(),
        ],
    )?;
    v["onnx_checker"] = checked["checker"].clone();
    v["ort_rel_diff"] = checked["max_rel_diff"].clone();
    if let Some(e) = checked["error"].as_str() {
        v["plan_error"] = json!(e);
    }
    let ort_ok = checked["max_rel_diff"]
        .as_f64()
        .is_some_and(|d| d <= TOLERANCE);
    v["plan_verified"] = json!(
        dead_diff <= TOLERANCE && ort_ok && checked["checker"].as_bool() == Some(true) && m1 < m0
    );
    Ok(v)
}

fn mark(v: &Value) -> &'static str {
    match v.as_bool() {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "–",
    }
}

fn summary_line(row: &Value) -> String {
    format!(
        "{:<22} imported {:<6} outputs {:<6} groups {:<5} plan {:<6} {}",
        row["name"].as_str().unwrap_or(""),
        mark(&row["imported"]),
        mark(&row["outputs_equal"]),
        row["groups"],
        mark(&row["plan_verified"]),
        first_error(row).unwrap_or_default()
    )
}

fn first_error(row: &Value) -> Option<String> {
    [
        "skipped",
        "export_error",
        "import_error",
        "error",
        "plan_error",
    ]
    .iter()
    .find_map(|k| row[*k].as_str())
    .map(|e| e.chars().take(160).collect::<String>().replace('|', "\\|"))
}

/// The coverage table and its totals, as Markdown.
pub fn markdown(summary: &Value) -> String {
    let empty = Vec::new();
    let rows = summary["rows"].as_array().unwrap_or(&empty);
    let cnns: Vec<&Value> = rows
        .iter()
        .filter(|r| r["cnn"].as_bool() == Some(true))
        .collect();
    let full = |r: &&&Value| {
        r["imported"].as_bool() == Some(true)
            && r["outputs_equal"].as_bool() == Some(true)
            && r["plan_verified"].as_bool() == Some(true)
    };
    let done = cnns.iter().filter(full).count();
    let imported = cnns
        .iter()
        .filter(|r| {
            r["imported"].as_bool() == Some(true) && r["outputs_equal"].as_bool() == Some(true)
        })
        .count();
    // Transformers that were checked (the `vit_*`) and those listed as not supported.
    let checked: Vec<&Value> = rows
        .iter()
        .filter(|r| r["cnn"].as_bool() != Some(true) && r["skipped"].is_null())
        .collect();
    let checked_done = checked.iter().filter(full).count();
    let mut md = format!(
        "Exporter: `{}`, input 3×{s}×{s}, tolerance {:e} of the output scale. \
         **{done} of {} CNN classification models** import with outputs equal to ONNX Runtime \
         and prune end to end ({imported} import with equal outputs); ",
        summary["exporter"].as_str().unwrap_or("?"),
        summary["tolerance"].as_f64().unwrap_or(TOLERANCE),
        cnns.len(),
        s = summary["size"],
    );
    if !checked.is_empty() {
        md.push_str(&format!(
            "so do {checked_done} of {} vision transformers checked; ",
            checked.len()
        ));
    }
    let not_selected = rows
        .iter()
        .filter(|r| r["skipped"].as_str() == Some(NOT_SELECTED))
        .count();
    md.push_str(&format!(
        "{} transformers are not supported yet",
        rows.len() - cnns.len() - checked.len() - not_selected
    ));
    if not_selected > 0 {
        md.push_str(&format!("; {not_selected} not selected by `--models`"));
    }
    md.push_str(".\n\n");
    md.push_str(
        "| model | imported | outputs = ORT (max rel. diff) | prunable groups | random plan verified (MACs removed) | note |\n\
         |---|---|---|---|---|---|\n",
    );
    for r in rows {
        let diff = r["max_rel_diff"]
            .as_f64()
            .map(|d| format!("{} ({d:.1e})", mark(&r["outputs_equal"])))
            .unwrap_or_else(|| "–".into());
        let plan = match r["macs_removed"].as_f64() {
            Some(m) => format!("{} ({:.0}%)", mark(&r["plan_verified"]), 100.0 * m),
            None => mark(&r["plan_verified"]).to_owned(),
        };
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r["name"].as_str().unwrap_or(""),
            mark(&r["imported"]),
            diff,
            r["groups"]
                .as_u64()
                .map(|g| g.to_string())
                .unwrap_or_else(|| "–".into()),
            plan,
            first_error(r).unwrap_or_default(),
        ));
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_counts_only_cnns_that_pass_every_check() {
        let summary = json!({
            "exporter": "ts", "size": 224, "tolerance": 1e-4,
            "rows": [
                {"name": "a", "cnn": true, "imported": true, "outputs_equal": true, "max_rel_diff": 1e-6,
                 "groups": 3, "plan_verified": true, "macs_removed": 0.4},
                {"name": "b", "cnn": true, "imported": true, "outputs_equal": true, "max_rel_diff": 2e-6,
                 "groups": 0, "plan_error": "no prunable group"},
                {"name": "c", "cnn": true, "import_error": "node 'x' (Foo): unsupported | op"},
                {"name": "swin", "cnn": false, "skipped": "transformer"},
                {"name": "vit", "cnn": false, "imported": true, "outputs_equal": true, "max_rel_diff": 1e-6,
                 "groups": 24, "plan_verified": true, "macs_removed": 0.2},
            ]
        });
        let md = markdown(&summary);
        assert!(md.contains("**1 of 3 CNN classification models**"), "{md}");
        assert!(
            md.contains("(2 import with equal outputs); so do 1 of 1 vision transformers checked; 1 transformers are not supported yet"),
            "{md}"
        );
        assert!(
            md.contains("| a | yes | yes (1.0e-6) | 3 | yes (40%) |"),
            "{md}"
        );
        assert!(md.contains("unsupported \\| op"), "pipes are escaped: {md}");
    }

    #[test]
    fn a_default_run_checks_cnns_and_plain_vision_transformers() {
        // torchvision's transformer classifiers, as the reference script lists them (not
        // CNNs): the plain ViTs, the Swin Transformers and MaxViT are checked; another family
        // would be listed as not supported.
        for vit in ["vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14"] {
            assert!(tried_by_default(vit, false), "{vit}");
        }
        for swin in [
            "swin_t",
            "swin_s",
            "swin_b",
            "swin_v2_t",
            "swin_v2_s",
            "swin_v2_b",
        ] {
            assert!(tried_by_default(swin, false), "{swin}");
        }
        assert!(tried_by_default("maxvit_t", false));
        assert!(!tried_by_default("deit_tiny", false));
        assert!(tried_by_default("resnet18", true));
    }

    #[test]
    fn models_not_checked_are_listed_with_what_is_missing_or_as_not_selected() {
        for given in [false, true] {
            let why = skip_reason("deit_tiny", false, given).unwrap();
            assert_eq!(why, "not supported yet");
        }
        // A Swin or MaxViT left out by an explicit --models is supported, just not selected.
        for t in ["swin_v2_b", "maxvit_t"] {
            assert_eq!(skip_reason(t, false, true), Some("not selected (--models)"));
            assert_eq!(skip_reason(t, false, false), None);
        }
        // A vit_* left out by an explicit --models is supported, just not selected; a CNN
        // left out has no row; a default run lists neither.
        assert_eq!(
            skip_reason("vit_l_16", false, true),
            Some("not selected (--models)")
        );
        assert_eq!(skip_reason("resnet18", true, true), None);
        assert_eq!(skip_reason("vit_l_16", false, false), None);
        assert_eq!(skip_reason("resnet18", true, false), None);
        // The totals count the not selected apart from the not supported.
        let summary = json!({
            "exporter": "ts", "size": 224, "tolerance": 1e-4,
            "rows": [
                {"name": "a", "cnn": true, "imported": true, "outputs_equal": true, "max_rel_diff": 1e-6,
                 "groups": 3, "plan_verified": true, "macs_removed": 0.4},
                {"name": "deit_tiny", "cnn": false, "skipped": skip_reason("deit_tiny", false, true)},
                {"name": "vit_l_16", "cnn": false, "skipped": skip_reason("vit_l_16", false, true)},
                {"name": "vit_l_32", "cnn": false, "skipped": skip_reason("vit_l_32", false, true)},
            ]
        });
        let md = markdown(&summary);
        assert!(
            md.contains("1 transformers are not supported yet; 2 not selected by `--models`."),
            "{md}"
        );
        assert!(
            md.contains("| vit_l_16 | – | – | – | – | not selected (--models) |"),
            "{md}"
        );
    }

    #[test]
    fn relative_differences_are_scaled_by_the_reference() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        let b = Tensor::from_slice(&[1.0f32, 2.0, 4.0]);
        assert!((relative_diff(&a, &b).unwrap() - 0.25).abs() < 1e-12);
        assert!(relative_diff(&a, &Tensor::from_slice(&[1.0f32])).is_err());
        let zero = Tensor::from_slice(&[0.0f32, 0.0, 0.0]);
        let e = relative_diff(&zero, &zero).unwrap_err().to_string();
        assert!(e.contains("all zero"), "{e}");
    }
}
