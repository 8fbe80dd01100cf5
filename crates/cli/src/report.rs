//! `report.md` with SVG charts for `fair-pruner prune`: kept units per layer (before vs after),
//! each layer's ToD curve with the chosen counts, and accuracy against MACs over an α sweep.
//! Everything is drawn from the figures `prune` also writes to `report.json`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use fair_threshold::TodCurve;
use plotters::prelude::*;
use serde_json::Value;

use crate::table::human;

/// One pruned model of the run.
pub struct Outcome<'a> {
    /// Its entry in `report.json`'s `results`.
    pub result: &'a Value,
    /// ToD counts per curve (units each layer asked to remove, before residual alignment).
    pub counts: &'a [usize],
}

/// Series colours (colour-blind safe, Okabe–Ito).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(240, 228, 66),
];
const GREY: RGBColor = RGBColor(150, 150, 150);

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn label(result: &Value) -> String {
    format!("α = {:.4}", result["alpha"].as_f64().unwrap_or(f64::NAN))
}

fn chart_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart failed: {e:?}")
}

/// Kept units per layer: the unpruned width and, per result, the width after pruning.
pub fn kept_units_svg(outcomes: &[Outcome]) -> Result<String> {
    let layers = outcomes[0].result["layers"]
        .as_array()
        .context("report result without layers")?;
    let names: Vec<String> = layers
        .iter()
        .map(|l| l["layer"].as_str().unwrap_or("?").to_owned())
        .collect();
    let units: Vec<f64> = layers
        .iter()
        .map(|l| l["units"].as_f64().unwrap_or(0.0))
        .collect();
    let max = units.iter().copied().fold(1.0, f64::max);
    let series = outcomes.len() + 1;
    let width = (140 + names.len() * (12 * series + 14)).clamp(480, 2400) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Kept units per layer", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(110)
            .y_label_area_size(56)
            // Head room above the tallest bar for the legend.
            .build_cartesian_2d(
                0.0..names.len() as f64,
                0.0..max * (1.1 + 0.12 * series as f64),
            )
            .map_err(chart_error)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("units")
            .draw()
            .map_err(chart_error)?;
        // Layer names under their bars, turned a quarter.
        let style = ("sans-serif", 11)
            .into_font()
            .transform(FontTransform::Rotate90)
            .color(&BLACK);
        for (i, name) in names.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            root.draw(&Text::new(name.clone(), (x + 5, y + 6), style.clone()))
                .map_err(chart_error)?;
        }
        let bar = 0.8 / series as f64;
        let bars = |values: Vec<f64>, s: usize, c: RGBColor| {
            values
                .into_iter()
                .enumerate()
                .map(move |(i, v)| {
                    let x0 = i as f64 + 0.1 + s as f64 * bar;
                    Rectangle::new([(x0, 0.0), (x0 + bar * 0.92, v)], c.filled())
                })
                .collect::<Vec<_>>()
        };
        chart
            .draw_series(bars(units.clone(), 0, GREY))
            .map_err(chart_error)?
            .label("unpruned")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], GREY.filled()));
        for (k, o) in outcomes.iter().enumerate() {
            let kept: Vec<f64> = o.result["layers"]
                .as_array()
                .map(|ls| {
                    ls.iter()
                        .map(|l| l["keep"].as_f64().unwrap_or(0.0))
                        .collect()
                })
                .unwrap_or_default();
            let c = colour(k);
            chart
                .draw_series(bars(kept, k + 1, c))
                .map_err(chart_error)?
                .label(label(o.result))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(chart_error)?;
        root.present().map_err(chart_error)?;
    }
    Ok(svg)
}

/// One small panel per layer: ToD(m) against the fraction m/n of units removed, the α of
/// each result as a dashed line and the count it chose as a dot.
pub fn tod_curves_svg(curves: &[TodCurve], outcomes: &[Outcome]) -> Result<String> {
    let cols = curves.len().clamp(1, 4);
    let rows = curves.len().div_ceil(cols).max(1);
    let (pw, ph) = (280u32, 210u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (pw * cols as u32, ph * rows as u32 + 40))
            .into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let (title, body) = root.split_vertically(40);
        title
            .titled(
                "ToD curves: ToD(m) against the fraction m/n removed; dashed: α, dot: chosen count",
                ("sans-serif", 15),
            )
            .map_err(chart_error)?;
        let panels = body.split_evenly((rows, cols));
        for (layer_index, (curve, panel)) in curves.iter().zip(panels.iter()).enumerate() {
            let n = curve.units() as f64;
            let mut chart = ChartBuilder::on(panel)
                .caption(
                    format!("{} ({} units)", curve.layer(), curve.units()),
                    ("sans-serif", 12),
                )
                .margin(6)
                .x_label_area_size(22)
                .y_label_area_size(30)
                .build_cartesian_2d(0.0..1.0, 0.0..1.05)
                .map_err(chart_error)?;
            chart
                .configure_mesh()
                .x_labels(5)
                .y_labels(5)
                .label_style(("sans-serif", 10))
                .draw()
                .map_err(chart_error)?;
            chart
                .draw_series(LineSeries::new(
                    curve
                        .tod()
                        .iter()
                        .enumerate()
                        .map(|(i, &t)| ((i + 1) as f64 / n, t)),
                    BLACK.stroke_width(1),
                ))
                .map_err(chart_error)?;
            for (k, o) in outcomes.iter().enumerate() {
                let c = colour(k);
                let alpha = o.result["alpha"].as_f64().unwrap_or(f64::NAN);
                chart
                    .draw_series(DashedLineSeries::new(
                        [(0.0, alpha), (1.0, alpha)],
                        4,
                        3,
                        c.stroke_width(1),
                    ))
                    .map_err(chart_error)?;
                let m = o.counts.get(layer_index).copied().unwrap_or(0);
                let y = if m == 0 { 0.0 } else { curve.tod()[m - 1] };
                chart
                    .draw_series(std::iter::once(Circle::new(
                        (m as f64 / n, y),
                        4,
                        c.filled(),
                    )))
                    .map_err(chart_error)?;
            }
        }
        root.present().map_err(chart_error)?;
    }
    Ok(svg)
}

/// Top-1 accuracy against MACs: the unpruned model, one-shot and (when fine-tuned) the
/// fine-tuned accuracy of every result.
pub fn accuracy_svg(report: &Value) -> Result<String> {
    let before = &report["before"];
    let results = report["results"].as_array().context("no results")?;
    let mm = |v: &Value| v.as_f64().unwrap_or(0.0) / 1e6;
    let pct = |v: &Value| 100.0 * v.as_f64().unwrap_or(0.0);
    let one_shot: Vec<(f64, f64)> = results
        .iter()
        .map(|r| (mm(&r["after"]["macs"]), pct(&r["one_shot"]["top1"])))
        .collect();
    let tuned: Vec<(f64, f64)> = results
        .iter()
        .filter(|r| r["finetune_epochs"].as_u64().unwrap_or(0) > 0)
        .map(|r| (mm(&r["after"]["macs"]), pct(&r["after"]["top1"])))
        .collect();
    let unpruned = (mm(&before["macs"]), pct(&before["top1"]));
    let all = one_shot.iter().chain(&tuned).chain([&unpruned]);
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(_, a) in all {
        lo = lo.min(a);
        hi = hi.max(a);
    }
    let lo = (lo - 5.0).max(0.0);
    let hi = (hi + 3.0).min(100.0);
    let xmax = unpruned.0 * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (640, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Top-1 accuracy against MACs", ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..xmax, lo..hi)
            .map_err(chart_error)?;
        chart
            .configure_mesh()
            .x_desc("MACs (millions)")
            .y_desc("test top-1 (%)")
            .draw()
            .map_err(chart_error)?;
        let sorted = |mut v: Vec<(f64, f64)>| {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            v
        };
        let (c1, c2) = (colour(0), colour(1));
        chart
            .draw_series(LineSeries::new(
                sorted(one_shot.clone()),
                c1.stroke_width(2),
            ))
            .map_err(chart_error)?
            .label("one-shot")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], c1.stroke_width(2)));
        chart
            .draw_series(one_shot.iter().map(|&p| Circle::new(p, 4, c1.filled())))
            .map_err(chart_error)?;
        if !tuned.is_empty() {
            chart
                .draw_series(LineSeries::new(sorted(tuned.clone()), c2.stroke_width(2)))
                .map_err(chart_error)?
                .label("fine-tuned")
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], c2.stroke_width(2)));
            chart
                .draw_series(tuned.iter().map(|&p| Circle::new(p, 4, c2.filled())))
                .map_err(chart_error)?;
        }
        chart
            .draw_series(std::iter::once(Cross::new(
                unpruned,
                6,
                BLACK.stroke_width(2),
            )))
            .map_err(chart_error)?
            .label("unpruned")
            .legend(|(x, y)| Cross::new((x + 7, y), 5, BLACK.stroke_width(2)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(chart_error)?;
        root.present().map_err(chart_error)?;
    }
    Ok(svg)
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("—".to_owned(), |x| format!("{:.2}%", 100.0 * x))
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or("—".to_owned(), |x| format!("{x:.2}"))
}

fn size(v: &Value) -> String {
    v.as_u64().map_or("—".to_owned(), human)
}

/// Column headers of [`summary_rows`].
pub const SUMMARY_HEADERS: [&str; 7] = [
    "model",
    "params",
    "MACs",
    "one-shot top-1",
    "fine-tuned top-1",
    "CPU ms (batch 1)",
    "CPU ms (batch 64)",
];

/// One row per model of `report` (the content of `report.json`), the unpruned one first:
/// the table `prune` prints and `report.md` shows.
pub fn summary_rows(report: &Value) -> Vec<Vec<String>> {
    let before = &report["before"];
    let mut rows = vec![vec![
        "unpruned".to_owned(),
        size(&before["params"]),
        size(&before["macs"]),
        pct(&before["top1"]),
        String::new(),
        ms(&before["latency_ms"]["batch1"]),
        ms(&before["latency_ms"]["batch64"]),
    ]];
    for r in report["results"].as_array().into_iter().flatten() {
        let epochs = r["finetune_epochs"].as_u64().unwrap_or(0);
        let unit = if epochs == 1 { "epoch" } else { "epochs" };
        rows.push(vec![
            label(r),
            size(&r["after"]["params"]),
            size(&r["after"]["macs"]),
            pct(&r["one_shot"]["top1"]),
            if epochs > 0 {
                format!("{} ({epochs} {unit})", pct(&r["after"]["top1"]))
            } else {
                "—".to_owned()
            },
            ms(&r["after"]["latency_ms"]["batch1"]),
            ms(&r["after"]["latency_ms"]["batch64"]),
        ]);
    }
    rows
}

/// Writes `report.md` and its SVG charts into `dir` (each file atomically). `report` is the
/// content of `report.json`; `outcomes` pairs its results with their ToD counts.
pub fn write(dir: &Path, report: &Value, curves: &[TodCurve], outcomes: &[Outcome]) -> Result<()> {
    let mut md = String::new();
    let results = report["results"].as_array().context("no results")?;
    writeln!(md, "# fair-pruner prune report\n")?;
    writeln!(
        md,
        "Model `{}` (weights `{}`) on {}; seed {}; residual rule {}; min keep {}, round to {}. fair-pruner {}, libtorch {}.\n",
        report["model"].as_str().unwrap_or("?"),
        report["weights"].as_str().unwrap_or("?"),
        report["data"].as_str().unwrap_or("?"),
        report["seed"],
        report["rule"].as_str().unwrap_or("?"),
        report["min_keep"],
        report["round_to"],
        report["fair_pruner_version"].as_str().unwrap_or("?"),
        report["libtorch"].as_str().unwrap_or("?"),
    )?;
    let seconds = report["scoring_seconds"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k} {:.2} s", v.as_f64().unwrap_or(0.0)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    writeln!(
        md,
        "Calibration: {} samples, {}. Scores computed once ({}){}; every α below is a re-threshold of the stored scores.\n",
        report["calibration"]["samples"],
        report["calibration"]["description"].as_str().unwrap_or("?"),
        seconds,
        if report["scores_reused"].as_bool() == Some(true) {
            ", reused from an earlier run with the same model, data and settings"
        } else {
            ""
        }
    )?;
    writeln!(md, "| {} | thresholding ms |", SUMMARY_HEADERS.join(" | "))?;
    writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )?;
    let threshold_ms = std::iter::once(String::new()).chain(
        results
            .iter()
            .map(|r| format!("{:.2}", r["threshold_ms"].as_f64().unwrap_or(f64::NAN))),
    );
    for (row, t) in summary_rows(report).iter().zip(threshold_ms) {
        writeln!(md, "| {} | {t} |", row.join(" | "))?;
    }
    writeln!(
        md,
        "\nLatency: median of 5–50 timed forward passes (about a second's worth) after 3 warm-ups, eval mode, on this machine's CPU.\n"
    )?;
    let mut charts: Vec<(&str, String)> = Vec::new();
    if results.len() > 1 {
        writeln!(
            md,
            "## Accuracy against MACs\n\n![accuracy against MACs](accuracy-vs-macs.svg)\n"
        )?;
        charts.push(("accuracy-vs-macs.svg", accuracy_svg(report)?));
    }
    writeln!(
        md,
        "## Kept units per layer\n\n![kept units per layer](kept-units.svg)\n"
    )?;
    charts.push(("kept-units.svg", kept_units_svg(outcomes)?));
    write!(md, "| layer | units |")?;
    for r in results {
        write!(md, " kept at {} |", label(r))?;
    }
    writeln!(md)?;
    writeln!(md, "| --- | ---: |{}", " ---: |".repeat(results.len()))?;
    if let Some(layers) = results.first().and_then(|r| r["layers"].as_array()) {
        for (i, l) in layers.iter().enumerate() {
            write!(
                md,
                "| {} | {} |",
                l["layer"].as_str().unwrap_or("?"),
                l["units"]
            )?;
            for r in results {
                write!(md, " {} |", r["layers"][i]["keep"])?;
            }
            writeln!(md)?;
        }
    }
    writeln!(
        md,
        "\nLayers coupled by residual additions keep the same units, so their kept counts can exceed what their own ToD curve asked for.\n"
    )?;
    writeln!(
        md,
        "## ToD curves\n\nFor each layer, ToD(m) = |Rm(m) ∩ Pm(m)| / m, where Rm(m) are the m units with the lowest U-Score and Pm(m) the m with the highest R-Score. At tolerance α the layer removes the largest m ≤ ⌊0.99·n⌋ with ToD(m) ≤ α.\n\n![ToD curves](tod-curves.svg)"
    )?;
    charts.push(("tod-curves.svg", tod_curves_svg(curves, outcomes)?));
    for (name, svg) in &charts {
        fair_ir::write_atomic(&dir.join(name), svg.as_bytes())?;
    }
    fair_ir::write_atomic(&dir.join("report.md"), md.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> (Value, Vec<TodCurve>, Vec<Vec<usize>>) {
        let curves = vec![
            TodCurve::new("conv1", &[0.1, 0.5, 0.2, 0.9], &[9.0, 1.0, 0.5, 2.0]).unwrap(),
            TodCurve::new("fc1", &[0.3, 0.1, 0.2], &[0.1, 0.2, 0.3]).unwrap(),
        ];
        let result = |alpha: f64, keep: [u64; 2], macs: u64, top1: f64| {
            json!({"alpha": alpha, "threshold_ms": 0.2, "finetune_epochs": 1,
                "one_shot": {"top1": top1 - 0.1}, "after": {"params": 10, "macs": macs, "top1": top1,
                "latency_ms": {"batch1": 0.1, "batch64": 1.0}},
                "layers": [{"layer": "conv1", "units": 4, "keep": keep[0]}, {"layer": "fc1", "units": 3, "keep": keep[1]}]})
        };
        let report = json!({"model": "toy", "weights": "w", "data": "d", "seed": 0, "rule": "Package",
            "min_keep": 1, "round_to": 1, "fair_pruner_version": "0", "libtorch": "2.11.0",
            "calibration": {"samples": 8, "description": "toy"}, "scoring_seconds": {"u": 0.5},
            "before": {"params": 20, "macs": 2_000_000, "top1": 0.9, "latency_ms": {"batch1": 0.2, "batch64": 2.0}},
            "results": [result(0.5, [2, 3], 1_500_000, 0.85), result(0.9, [1, 1], 1_000_000, 0.8)]});
        (report, curves, vec![vec![2, 0], vec![3, 2]])
    }

    #[test]
    fn report_names_every_result_and_layer_and_links_its_charts() {
        let (report, curves, counts) = sample();
        let results = report["results"].as_array().unwrap();
        let outcomes: Vec<Outcome> = results
            .iter()
            .zip(&counts)
            .map(|(r, c)| Outcome {
                result: r,
                counts: c,
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &report, &curves, &outcomes).unwrap();
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        for needle in [
            "α = 0.5000",
            "α = 0.9000",
            "| conv1 | 4 | 2 | 1 |",
            "| fc1 | 3 | 3 | 1 |",
            "85.00% (1 epoch)",
            "(accuracy-vs-macs.svg)",
            "(kept-units.svg)",
            "(tod-curves.svg)",
        ] {
            assert!(md.contains(needle), "report.md lacks {needle:?}:\n{md}");
        }
        for svg in ["accuracy-vs-macs.svg", "kept-units.svg", "tod-curves.svg"] {
            let text = std::fs::read_to_string(dir.path().join(svg)).unwrap();
            assert!(
                text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
                "{svg}"
            );
        }
        // One panel per layer, titled with the layer and its width.
        let tod = std::fs::read_to_string(dir.path().join("tod-curves.svg")).unwrap();
        assert!(tod.contains("conv1 (4 units)") && tod.contains("fc1 (3 units)"));
        // Bars: one per layer for the unpruned model and for each result, in series colours,
        // with heights proportional to the units (legend swatches are 10 px high).
        let kept = kept_units_svg(&outcomes).unwrap();
        assert!(kept.contains("unpruned") && kept.contains("α = 0.9000"));
        let heights = |fill: &str| -> Vec<f64> {
            kept.split("<rect")
                .filter(|r| r.contains(&format!("fill=\"{fill}\"")))
                .map(|r| {
                    let h = r.split("height=\"").nth(1).unwrap();
                    h[..h.find('"').unwrap()].parse::<f64>().unwrap()
                })
                .filter(|&h| h != 10.0)
                .collect()
        };
        let unit = heights("#969696")[0] / 4.0;
        let units =
            |fill: &str| -> Vec<f64> { heights(fill).iter().map(|h| (h / unit).round()).collect() };
        assert_eq!(units("#969696"), vec![4.0, 3.0]);
        assert_eq!(units("#0072B2"), vec![2.0, 3.0]);
        assert_eq!(units("#E69F00"), vec![1.0, 1.0]);
    }

    #[test]
    fn a_single_result_has_no_accuracy_chart() {
        let (mut report, curves, counts) = sample();
        report["results"].as_array_mut().unwrap().truncate(1);
        let results = report["results"].as_array().unwrap();
        let outcomes = vec![Outcome {
            result: &results[0],
            counts: &counts[0],
        }];
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &report, &curves, &outcomes).unwrap();
        let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(!md.contains("accuracy-vs-macs") && md.contains("kept-units.svg"));
        assert!(!dir.path().join("accuracy-vs-macs.svg").exists());
    }
}
