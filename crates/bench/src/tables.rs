//! The comparison's tables, from stored results (`target/bench/compare/<net>/result.json`):
//! Markdown per network, the parameter-count cross-check, and the block of `docs/results.md`
//! between the `bench compare` markers. Pure: no libtorch work.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{read_json, write_json};

/// The markers around the generated block of `docs/results.md`.
pub const BEGIN: &str = "<!-- bench compare: begin -->";
/// See [`BEGIN`].
pub const END: &str = "<!-- bench compare: end -->";

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
pub fn params_checks(net: &Value) -> (usize, usize) {
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
pub fn markdown(net: &Value) -> Result<String> {
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

/// Reads every network's latest `dir/<key>/result.json` (in `keys` order, skipping networks
/// never measured), writes `dir/summary.json` and returns its path and the Markdown of all
/// networks. The tables hold every network measured so far, so the networks can be run one at
/// a time.
pub fn rebuild(dir: &Path, keys: &[&str]) -> Result<(PathBuf, String)> {
    let nets: Vec<Value> = keys
        .iter()
        .filter_map(|k| read_json(&dir.join(k).join("result.json")).ok())
        .collect();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let out = dir.join("summary.json");
    write_json(&out, &json!({ "nets": nets }))?;
    let mut md = String::new();
    for n in &nets {
        md += &markdown(n)?;
        md += "\n";
    }
    Ok((out, md))
}

/// The markers around a generated block of a Markdown file, and the command that writes it
/// (named in the block's first line).
#[derive(Debug, Clone, Copy)]
pub struct Markers<'a> {
    /// The line that opens the block.
    pub begin: &'a str,
    /// The line that closes the block.
    pub end: &'a str,
    /// The command that writes the block, e.g. `cargo xtask bench compare`.
    pub tool: &'a str,
}

/// The markers of `cargo xtask bench compare`'s block.
pub const COMPARE: Markers<'static> = Markers {
    begin: BEGIN,
    end: END,
    tool: "cargo xtask bench compare",
};

/// `text` with the block between `markers` replaced by `md` (markers kept); an error when
/// either marker is missing or they are out of order.
pub fn splice(text: &str, md: &str, markers: Markers) -> Result<String> {
    let Markers { begin, end, tool } = markers;
    let (Some(b), Some(e)) = (text.find(begin), text.find(end)) else {
        bail!("no {begin} … {end} markers");
    };
    if e < b {
        bail!("{end} comes before {begin}");
    }
    Ok(format!(
        "{}{begin}\n<!-- Written by `{tool}`; edit the text outside the markers. -->\n\n{md}{}",
        &text[..b],
        &text[e..]
    ))
}

/// Replaces the generated block of the Markdown file `docs` by `md`, atomically.
pub fn write_docs(docs: &Path, md: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(docs).with_context(|| format!("cannot read {}", docs.display()))?;
    let new = splice(&text, md, COMPARE).with_context(|| docs.display().to_string())?;
    fair_fs::write_atomic(docs, new.as_bytes())?;
    Ok(())
}

/// Replaces the block between `markers` of the Markdown file `docs` by `md`, atomically.
pub fn write_block(docs: &Path, md: &str, markers: Markers) -> Result<()> {
    let text =
        std::fs::read_to_string(docs).with_context(|| format!("cannot read {}", docs.display()))?;
    let new = splice(&text, md, markers).with_context(|| docs.display().to_string())?;
    fair_fs::write_atomic(docs, new.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Value {
        json!({
            "title": "toy", "train_epochs": 1, "finetune_epochs": 1, "finetune_fraction": 0.5, "per_class": 8, "threads": 2,
            "minutes": 0.5,
            "unpruned": {"params": 2000.0, "macs": 3.0e6, "top1": 0.9},
            "results": [
                {"alpha": 0.1, "method": "FAIR", "method_key": "fair", "params": 1500.0, "macs": 2.0e6, "one_shot": 0.8, "finetuned": 0.88, "scoring_seconds": 0.25},
                {"alpha": 0.1, "method": "uniform", "method_key": "uniform-l1", "params": 1400.0, "macs": 2.0e6, "one_shot": 0.7, "finetuned": 0.86, "scoring_seconds": 0.0, "reused": true}
            ],
            "counts": {
                "package_layers": ["conv1", "fc1"],
                "ours": {"0.1000": [{"layer": "conv1", "units": 8, "count": 2}, {"layer": "fc1", "units": 16, "count": 5}]},
                "package": {"0.1000": {"counts": [3, 5]}}
            }
        })
    }

    #[test]
    fn tables_show_every_row_and_counts_side_by_side() {
        let net = toy();
        let md = markdown(&net).unwrap();
        assert!(
            md.starts_with(
                "#### toy\n\nTrained 1 epochs: 2.0 K params, 3.00 M MACs, test top-1 90.00%."
            ),
            "{md}"
        );
        assert!(md.contains("over 50% of the training split"), "{md}");
        assert!(
            md.contains("took 0.5 min (1 of 2 pruned models reused"),
            "{md}"
        );
        assert!(
            md.contains("| 0.1 | FAIR | 1.5 K | 2.00 M | 80.00% | 88.00% | 0.25 s |"),
            "{md}"
        );
        assert!(
            md.contains("| 0.1 | uniform | 1.4 K | 2.00 M | 70.00% | 86.00% | ≈ 0 |"),
            "{md}"
        );
        assert!(
            md.contains("| layer | units | α = 0.1000 |\n| --- | ---: | ---: |\n"),
            "{md}"
        );
        assert!(
            md.contains("| conv1 | 8 | 2 / 3 |") && md.contains("| fc1 | 16 | 5 / 5 |"),
            "{md}"
        );
        // No reference rows: no cross-check line.
        assert!(!md.contains("Cross-check"), "{md}");
        let mut swapped = net.clone();
        swapped["counts"]["package_layers"] = json!(["fc1", "conv1"]);
        assert!(markdown(&swapped).is_err(), "layer orders must agree");
        let mut empty = net;
        empty["results"] = json!(null);
        assert!(markdown(&empty).is_err(), "results are required");
    }

    #[test]
    fn missing_figures_show_as_dashes() {
        let mut net = toy();
        net["results"][0]["one_shot"] = json!(null);
        net["unpruned"]["params"] = json!(null);
        let md = markdown(&net).unwrap();
        assert!(
            md.contains("| 0.1 | FAIR | 1.5 K | 2.00 M | — | 88.00% |"),
            "{md}"
        );
        assert!(md.contains("Trained 1 epochs: — params"), "{md}");
    }

    /// A net with two α, each with a package and a Torch-Pruning row; the references'
    /// parameter counts as given.
    fn checked(package: [f64; 2], torch_pruning: [f64; 2]) -> Value {
        let mut net = toy();
        net["macs_targets"] = json!([0.25, 0.5]);
        net["results"] = json!([
            {"alpha": 0.1, "method_key": "fair", "params": 999.0},
            {"alpha": 0.1, "method_key": "package", "params": 1500.0},
            {"alpha": 0.1, "method_key": "torch-pruning", "params": 1600.0},
            {"alpha": 0.3, "method_key": "package", "params": 900.0},
            {"alpha": 0.3, "method_key": "torch-pruning", "params": 1000.0},
        ]);
        net["counts"]["package"] = json!({
            "0.1000": {"params": package[0]}, "0.3000": {"params": package[1]}
        });
        net["torch_pruning"] = json!({"targets": {
            "0.2500": {"params": torch_pruning[0]}, "0.5000": {"params": torch_pruning[1]}
        }});
        net
    }

    #[test]
    fn the_cross_check_pairs_each_reference_row_with_its_own_count() {
        assert_eq!(
            params_checks(&checked([1500.0, 900.0], [1600.0, 1000.0])),
            (4, 4)
        );
        // Torch-Pruning's target is that of the row's α (second α → second target).
        assert_eq!(
            params_checks(&checked([1500.0, 900.0], [1000.0, 1600.0])),
            (2, 4)
        );
        assert_eq!(
            params_checks(&checked([1500.0, 901.0], [1600.0, 1000.0])),
            (3, 4)
        );
        // A reference figure that is missing never counts as equal.
        let mut net = checked([1500.0, 900.0], [1600.0, 1000.0]);
        net["counts"]["package"]["0.3000"] = json!({});
        assert_eq!(params_checks(&net), (3, 4));
        // No target for a Torch-Pruning row: not compared.
        net["macs_targets"] = json!([0.25]);
        assert_eq!(params_checks(&net), (2, 3));
        let md = markdown(&checked([1500.0, 900.0], [1600.0, 1.0])).unwrap();
        assert!(md.contains("plans in 3 of 4 cases."), "{md}");
    }

    #[test]
    fn splice_replaces_only_the_block_between_the_markers() {
        let text = format!("intro\n{BEGIN}\nold table\n{END}\nafter\n");
        let new = splice(&text, "new table\n", COMPARE).unwrap();
        assert_eq!(
            new,
            format!(
                "intro\n{BEGIN}\n<!-- Written by `cargo xtask bench compare`; edit the text outside the markers. -->\n\nnew table\n{END}\nafter\n"
            )
        );
        assert_eq!(
            splice(&new, "new table\n", COMPARE).unwrap(),
            new,
            "idempotent"
        );
        assert!(splice("no markers", "x", COMPARE).is_err());
        assert!(splice(&format!("{END}\n{BEGIN}\n"), "x", COMPARE).is_err());
        assert!(splice(&format!("{BEGIN}\n"), "x", COMPARE).is_err());
    }

    #[test]
    fn rebuild_reads_stored_results_in_net_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut second = toy();
        second["title"] = json!("second");
        for (key, net) in [("b", second), ("a", toy())] {
            std::fs::create_dir_all(dir.path().join(key)).unwrap();
            write_json(&dir.path().join(key).join("result.json"), &net).unwrap();
        }
        let (summary, md) = rebuild(dir.path(), &["a", "missing", "b"]).unwrap();
        let nets = read_json(&summary).unwrap()["nets"].clone();
        assert_eq!(nets.as_array().map(Vec::len), Some(2));
        assert_eq!(nets[1]["title"], json!("second"));
        let (a, b) = (
            md.find("#### toy").unwrap(),
            md.find("#### second").unwrap(),
        );
        assert!(a < b, "{md}");
        let docs = dir.path().join("results.md");
        std::fs::write(&docs, format!("# R\n{BEGIN}\n{END}\n")).unwrap();
        write_docs(&docs, &md).unwrap();
        let written = std::fs::read_to_string(&docs).unwrap();
        assert!(written.contains("#### second") && written.ends_with(&format!("{END}\n")));
        // Nothing stored yet: an empty summary and no tables.
        let (_, md) = rebuild(&dir.path().join("none"), &["a"]).unwrap();
        assert!(md.is_empty());
    }
}
