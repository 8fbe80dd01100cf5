//! `report.md` with SVG charts: kept units per layer (before vs after), each layer's ToD
//! curve with the chosen counts, and accuracy against MACs. Everything is drawn from the
//! typed [`PruneReport`], which is also written as `report.json`.

use std::fmt::Write as _;
use std::path::Path;

use fair_analysis::Method;
use fair_threshold::TodCurve;
use plotters::prelude::*;

use crate::error::PipelineError;
use crate::latency::Latency;
use crate::report::{Accuracy, PruneReport, PruneResult};

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

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `4089184256` → `4.09 G`.
pub fn human(n: u64) -> String {
    let x = n as f64;
    match x {
        x if x >= 1e9 => format!("{:.2} G", x / 1e9),
        x if x >= 1e6 => format!("{:.2} M", x / 1e6),
        x if x >= 1e3 => format!("{:.2} K", x / 1e3),
        _ => n.to_string(),
    }
}

/// A result's display name: its goal, and the α a target found.
pub fn result_name(r: &PruneResult) -> String {
    match r.goal {
        fair_analysis::Goal::Alpha(a) => format!("α = {a}"),
        _ => format!("{} (α = {:.4})", r.goal, r.setting),
    }
}

fn chart_error<E: std::fmt::Debug>(chart: &str) -> impl Fn(E) -> PipelineError + '_ {
    move |e| PipelineError::Chart {
        chart: chart.to_owned(),
        detail: format!("{e:?}"),
    }
}

/// Kept units per layer: the unpruned width and, per result, the width after pruning.
pub fn kept_units_svg(report: &PruneReport) -> Result<String, PipelineError> {
    let err = chart_error("kept-units.svg");
    let Some(first) = report.results.first() else {
        return Err(PipelineError::invalid("goal", "the report has no results"));
    };
    let names: Vec<&str> = first.layers.iter().map(|l| l.layer.as_str()).collect();
    let units: Vec<f64> = first.layers.iter().map(|l| l.units as f64).collect();
    let max = units.iter().copied().fold(1.0, f64::max);
    let series = report.results.len() + 1;
    let width = (140 + names.len() * (12 * series + 14)).clamp(480, 2400) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
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
            .map_err(&err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("units")
            .draw()
            .map_err(&err)?;
        // Layer names under their bars, turned a quarter.
        let style = ("sans-serif", 11)
            .into_font()
            .transform(FontTransform::Rotate90)
            .color(&BLACK);
        for (i, name) in names.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            root.draw(&Text::new(name.to_string(), (x + 5, y + 6), style.clone()))
                .map_err(&err)?;
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
            .map_err(&err)?
            .label("unpruned")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], GREY.filled()));
        for (k, r) in report.results.iter().enumerate() {
            let kept: Vec<f64> = r.layers.iter().map(|l| l.keep as f64).collect();
            let c = colour(k);
            chart
                .draw_series(bars(kept, k + 1, c))
                .map_err(&err)?
                .label(result_name(r))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], c.filled()));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// One small panel per layer: ToD(m) against the fraction m/n of units removed, the α of
/// each result as a dashed line and the count it chose as a dot.
pub fn tod_curves_svg(report: &PruneReport, curves: &[TodCurve]) -> Result<String, PipelineError> {
    let err = chart_error("tod-curves.svg");
    let cols = curves.len().clamp(1, 4);
    let rows = curves.len().div_ceil(cols).max(1);
    let (pw, ph) = (280u32, 210u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (pw * cols as u32, ph * rows as u32 + 40))
            .into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let (title, body) = root.split_vertically(40);
        title
            .titled(
                "ToD curves: ToD(m) against the fraction m/n removed; dashed: α, dot: chosen count",
                ("sans-serif", 15),
            )
            .map_err(&err)?;
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
                .map_err(&err)?;
            chart
                .configure_mesh()
                .x_labels(5)
                .y_labels(5)
                .label_style(("sans-serif", 10))
                .draw()
                .map_err(&err)?;
            chart
                .draw_series(LineSeries::new(
                    curve
                        .tod()
                        .iter()
                        .enumerate()
                        .map(|(i, &t)| ((i + 1) as f64 / n, t)),
                    BLACK.stroke_width(1),
                ))
                .map_err(&err)?;
            for (k, r) in report.results.iter().enumerate() {
                let c = colour(k);
                if report.selection.method == Method::Tod {
                    chart
                        .draw_series(DashedLineSeries::new(
                            [(0.0, r.setting), (1.0, r.setting)],
                            4,
                            3,
                            c.stroke_width(1),
                        ))
                        .map_err(&err)?;
                }
                let m = r.layers.get(layer_index).map_or(0, |l| l.requested);
                let y = if m == 0 { 0.0 } else { curve.tod()[m - 1] };
                chart
                    .draw_series(std::iter::once(Circle::new(
                        (m as f64 / n, y),
                        4,
                        c.filled(),
                    )))
                    .map_err(&err)?;
            }
        }
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

/// Top-1 accuracy against MACs: the unpruned model, one-shot and (when fine-tuned) the
/// fine-tuned accuracy of every result. `None` when nothing was evaluated.
pub fn accuracy_svg(report: &PruneReport) -> Result<Option<String>, PipelineError> {
    let err = chart_error("accuracy-vs-macs.svg");
    let Some(base) = report.before.accuracy else {
        return Ok(None);
    };
    let mm = |m: u64| m as f64 / 1e6;
    let pct = |a: Accuracy| 100.0 * a.top1;
    let one_shot: Vec<(f64, f64)> = report
        .results
        .iter()
        .filter_map(|r| Some((mm(r.after.macs), pct(r.one_shot?))))
        .collect();
    let tuned: Vec<(f64, f64)> = report
        .results
        .iter()
        .filter(|r| r.finetune_epochs > 0)
        .filter_map(|r| Some((mm(r.after.macs), pct(r.after.accuracy?))))
        .collect();
    let unpruned = (mm(report.before.macs), pct(base));
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
        root.fill(&WHITE).map_err(&err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Top-1 accuracy against MACs", ("sans-serif", 18))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..xmax, lo..hi)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .x_desc("MACs (millions)")
            .y_desc("test top-1 (%)")
            .draw()
            .map_err(&err)?;
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
            .map_err(&err)?
            .label("one-shot")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], c1.stroke_width(2)));
        chart
            .draw_series(one_shot.iter().map(|&p| Circle::new(p, 4, c1.filled())))
            .map_err(&err)?;
        if !tuned.is_empty() {
            chart
                .draw_series(LineSeries::new(sorted(tuned.clone()), c2.stroke_width(2)))
                .map_err(&err)?
                .label("fine-tuned")
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 14, y)], c2.stroke_width(2)));
            chart
                .draw_series(tuned.iter().map(|&p| Circle::new(p, 4, c2.filled())))
                .map_err(&err)?;
        }
        chart
            .draw_series(std::iter::once(Cross::new(
                unpruned,
                6,
                BLACK.stroke_width(2),
            )))
            .map_err(&err)?
            .label("unpruned")
            .legend(|(x, y)| Cross::new((x + 7, y), 5, BLACK.stroke_width(2)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(&err)?;
        root.present().map_err(&err)?;
    }
    Ok(Some(svg))
}

fn pct(a: Option<Accuracy>) -> String {
    a.map_or("—".to_owned(), |a| format!("{:.2}%", 100.0 * a.top1))
}

fn latency_cell(l: Option<&Latency>) -> String {
    l.map_or("—".to_owned(), |l| {
        format!(
            "{:.2} [{:.2}–{:.2}]{}",
            l.ms.median,
            l.ms.q1,
            l.ms.q3,
            if l.noisy { " (noisy)" } else { "" }
        )
    })
}

fn speedup_cell(l: Option<&Latency>) -> String {
    l.and_then(|l| l.speedup).map_or("—".to_owned(), |s| {
        format!("{:.2}× [{:.2}–{:.2}]", s.median, s.q1, s.q3)
    })
}

/// The batch sizes timed in `report`.
fn batches(report: &PruneReport) -> Vec<usize> {
    report.before.latency.iter().map(|l| l.batch).collect()
}

/// Column headers of [`summary_rows`] for `report`.
pub fn summary_headers(report: &PruneReport) -> Vec<String> {
    let mut h: Vec<String> = [
        "model",
        "params",
        "MACs",
        "one-shot top-1",
        "fine-tuned top-1",
    ]
    .map(str::to_owned)
    .to_vec();
    for b in batches(report) {
        h.push(format!("CPU ms, batch {b} (median [IQR])"));
        h.push(format!("speed-up, batch {b}"));
    }
    h
}

/// One row per model of `report`, the unpruned one first: the table `prune` prints and
/// `report.md` shows.
pub fn summary_rows(report: &PruneReport) -> Vec<Vec<String>> {
    let b = batches(report);
    let lat = |ls: &[Latency], batch: usize| -> [String; 2] {
        let l = ls.iter().find(|l| l.batch == batch);
        [latency_cell(l), speedup_cell(l)]
    };
    let mut first = vec![
        "unpruned".to_owned(),
        human(report.before.params as u64),
        human(report.before.macs),
        pct(report.before.accuracy),
        String::new(),
    ];
    for &batch in &b {
        first.extend(lat(&report.before.latency, batch));
    }
    let mut rows = vec![first];
    for r in &report.results {
        let unit = if r.finetune_epochs == 1 {
            "epoch"
        } else {
            "epochs"
        };
        let mut row = vec![
            result_name(r),
            human(r.after.params as u64),
            human(r.after.macs),
            pct(r.one_shot),
            if r.finetune_epochs > 0 {
                let engine = match &r.torchrun {
                    Some(t) => format!(", torchrun ×{}", t.world_size),
                    None => String::new(),
                };
                format!(
                    "{} ({} {unit}{engine})",
                    pct(r.after.accuracy),
                    r.finetune_epochs
                )
            } else {
                "—".to_owned()
            },
        ];
        for &batch in &b {
            row.extend(lat(&r.after.latency, batch));
        }
        rows.push(row);
    }
    rows
}

/// A measured latency against the MAC cut `mac_cut`, as [`latency_target_lines`] prints
/// it: `<removed> removed (<before> ms → <after> ms, speed-up <median>× [<q1>–<q3>]) for a
/// <cut>× MAC cut: latency gain / MAC cut <gain>`, and whether it was noisy.
fn measured_text(m: &crate::MeasuredLatency, mac_cut: f64) -> String {
    format!(
        "{:.1}% removed ({:.3} ms → {:.3} ms, speed-up {:.2}× [{:.2}–{:.2}]) for a {:.2}× MAC cut: latency gain / MAC cut {:.2}{}",
        m.removed * 100.0,
        m.before_ms.median,
        m.after_ms.median,
        m.speedup.median,
        m.speedup.q1,
        m.speedup.q3,
        mac_cut,
        m.gain_per_mac_cut,
        if m.noisy {
            " (noisy: do not trust)"
        } else {
            ""
        }
    )
}

/// One line per latency target ([`crate::LatencyTargetResult`]): the target, the table's
/// prediction, and the measured latency removed (median \[IQR\] of the speed-up) with the
/// latency-gain / MAC-cut ratio, and whether that final measurement is within the
/// tolerance; then one line per round of the measured correction and a `warning:` line
/// when the target was not met within the rounds, or was met there but not by the final
/// measurement. For other goals timed
/// on `latency-on` ([`crate::RuntimeLatency`]), one line each: the measured latency removed
/// with the latency-gain / MAC-cut ratio. Empty without either.
pub fn latency_target_lines(report: &PruneReport) -> Vec<String> {
    let with_version = |runtime: &str, version: Option<&str>| match version {
        Some(v) => format!("{runtime} {v}"),
        None => runtime.to_owned(),
    };
    report
        .results
        .iter()
        .filter_map(|r| {
            if let Some(l) = &r.runtime_latency {
                let m = &l.measured;
                return Some(vec![format!(
                    "latency of {} measured on {} (batch {}, {} thread{}): {}",
                    r.label,
                    with_version(&m.runtime, m.runtime_version.as_deref()),
                    l.batch,
                    l.threads,
                    if l.threads == 1 { "" } else { "s" },
                    measured_text(m, l.mac_cut)
                )]);
            }
            r.latency_target.as_ref().map(|t| target_lines(&r.label, t))
        })
        .flatten()
        .collect()
}

/// The lines of one latency target, the result labelled `label` (see
/// [`latency_target_lines`]).
fn target_lines(label: &str, t: &crate::LatencyTargetResult) -> Vec<String> {
    let with_version = |runtime: &str, version: Option<&str>| match version {
        Some(v) => format!("{runtime} {v}"),
        None => runtime.to_owned(),
    };
    let pct = |f: f64| format!("{:.1}%", f * 100.0);
    // The round measured closest to the target: the candidate exported.
    let closest = t
        .rounds
        .iter()
        .map(|r| r.removed.median)
        .min_by(|a, b| (a - t.target).abs().total_cmp(&(b - t.target).abs()));
    let mut line = format!(
        "latency target {}: remove {} of latency; the {} table ({}, batch {}, {} thread{}{}) predicts {} removed",
        label,
        pct(t.target),
        t.table,
        with_version(&t.runtime, t.runtime_version.as_deref()),
        t.batch,
        t.threads,
        if t.threads == 1 { "" } else { "s" },
        if t.table_noisy { ", noisy" } else { "" },
        pct(t.predicted)
    );
    match &t.measured {
        Some(m) => line.push_str(&format!(
            "; measured on {}: {}{}",
            with_version(&m.runtime, m.runtime_version.as_deref()),
            measured_text(m, t.mac_cut),
            match (t.measured_met, t.tolerance) {
                (Some(true), Some(tol)) => format!(", within {:.0}% of the target", tol * 100.0),
                (Some(false), Some(tol)) => format!(", outside {:.0}% of the target", tol * 100.0),
                _ => String::new(),
            }
        )),
        None => line.push_str(&format!(
            " for a {:.2}× MAC cut; latency not measured",
            t.mac_cut
        )),
    }
    let mut lines = vec![line];
    for (i, r) in t.rounds.iter().enumerate() {
        lines.push(format!(
            "  round {}: table target {}, predicted {}, measured {} [{}–{}]{}{}",
            i + 1,
            pct(r.table_target),
            pct(r.predicted),
            pct(r.removed.median),
            pct(r.removed.q1),
            pct(r.removed.q3),
            if r.noisy {
                " (noisy: do not trust)"
            } else {
                ""
            },
            if r.reused {
                " (the widths of an earlier round: not timed again)"
            } else {
                ""
            }
        ));
    }
    if let (Some(false), Some(tol)) = (t.met, t.tolerance) {
        lines.push(format!(
            "warning: latency target {} not met: after {} round{} the closest candidate measured {} removed, outside {:.0}% of the target {}; it is the one exported",
            label,
            t.rounds.len(),
            if t.rounds.len() == 1 { "" } else { "s" },
            pct(closest.unwrap_or(0.0)),
            tol * 100.0,
            pct(t.target)
        ));
    }
    if let (Some(true), Some(false), Some(tol), Some(m)) =
        (t.met, t.measured_met, t.tolerance, &t.measured)
    {
        lines.push(format!(
            "warning: latency target {}: the final measurement removed {}, outside {:.0}% of the target {}, though the exported candidate measured {} in its correction round: timings on this machine vary from one measurement to the next by more than the tolerance; time again on an idle machine",
            label,
            pct(m.removed),
            tol * 100.0,
            pct(t.target),
            pct(closest.unwrap_or(m.removed)),
        ));
    }
    lines
}

/// Writes `report.md` and its SVG charts into `dir` (each file atomically).
pub fn write(dir: &Path, report: &PruneReport, curves: &[TodCurve]) -> Result<(), PipelineError> {
    let mut md = String::new();
    let s = &report.selection;
    let _ = writeln!(md, "# fair-pruner prune report\n");
    let _ = writeln!(
        md,
        "Model `{}` (weights `{}`){}; seed {}; {} counts from remove-by `{}` / protect-by `{}`, units ranked by `{}`; residual rule {}; min keep {}, round to {}. fair-pruner {}, libtorch {}.\n",
        report.model,
        report.weights.as_deref().unwrap_or("—"),
        report
            .data
            .as_deref()
            .map(|d| format!(" on {d}"))
            .unwrap_or_default(),
        report.seed,
        match s.method {
            Method::Tod => "ToD",
            Method::Uniform => "uniform",
        },
        s.remove_by,
        s.protect_by,
        s.rank_by,
        s.rule.name(),
        s.min_keep,
        s.round_to,
        report.fair_pruner_version,
        report.libtorch,
    );
    let seconds = report
        .scoring
        .criteria
        .iter()
        .map(|(k, c)| format!("{k} {:.2} s", c.seconds))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        md,
        "Calibration: {}. Scores computed once ({seconds}){}; every result below is a re-threshold of the stored scores.\n",
        report
            .calibration
            .as_ref()
            .map_or("none".to_owned(), |c| format!(
                "{} samples, {}",
                c.samples, c.description
            )),
        if report.scoring.reused {
            ", reused from an earlier run with the same model, data and settings".to_owned()
        } else if !report.scoring.partly_reused.is_empty() {
            format!(
                "; {} reused from an earlier run with the same model, data and settings",
                report.scoring.partly_reused.join(", ")
            )
        } else {
            String::new()
        }
    );
    let headers = summary_headers(report);
    let _ = writeln!(md, "| {} | thresholding ms |", headers.join(" | "));
    let _ = writeln!(md, "| --- |{} ---: |", " ---: |".repeat(headers.len() - 1));
    let threshold_ms = std::iter::once(String::new()).chain(
        report
            .results
            .iter()
            .map(|r| format!("{:.2}", r.threshold_ms)),
    );
    for (row, t) in summary_rows(report).iter().zip(threshold_ms) {
        let _ = writeln!(md, "| {} | {t} |", row.join(" | "));
    }
    if !report.before.latency.is_empty() {
        let _ = writeln!(
            md,
            "\nLatency: eval-mode forward passes on this machine's CPU, all models timed in the same rounds (rotating order) after warm-up; median [first–third quartile] in ms; the speed-up over the unpruned model is taken round by round. \"noisy\" marks a spread wider than a quarter of the median: do not trust those figures.\n"
        );
    }
    let targets = latency_target_lines(report);
    if !targets.is_empty() {
        let _ = writeln!(md, "\n{}\n", targets.join("\n\n"));
    }
    let mut charts: Vec<(&str, String)> = Vec::new();
    if report.results.len() > 1
        && let Some(svg) = accuracy_svg(report)?
    {
        let _ = writeln!(
            md,
            "## Accuracy against MACs\n\n![accuracy against MACs](accuracy-vs-macs.svg)\n"
        );
        charts.push(("accuracy-vs-macs.svg", svg));
    }
    let _ = writeln!(
        md,
        "## Kept units per layer\n\n![kept units per layer](kept-units.svg)\n"
    );
    charts.push(("kept-units.svg", kept_units_svg(report)?));
    let _ = write!(md, "| layer | units |");
    for r in &report.results {
        let _ = write!(md, " kept at {} |", result_name(r));
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "| --- | ---: |{}",
        " ---: |".repeat(report.results.len())
    );
    if let Some(first) = report.results.first() {
        for (i, l) in first.layers.iter().enumerate() {
            let _ = write!(md, "| {} | {} |", l.layer, counted(l.units, l));
            for r in &report.results {
                let _ = write!(md, " {} |", counted(r.layers[i].keep, &r.layers[i]));
            }
            let _ = writeln!(md);
        }
    }
    let _ = writeln!(
        md,
        "\nLayers coupled by residual additions keep the same units (settled by the `{}` rule), so their kept counts can differ from what their own curve asked for. The kept counts are the exported models' widths.\n",
        s.rule.name()
    );
    let _ = writeln!(
        md,
        "## ToD curves\n\nFor each layer, ToD(m) = |Rm(m) ∩ Pm(m)| / m, where Rm(m) are the m units with the lowest `{}` score and Pm(m) the m with the highest `{}` score. At tolerance α the layer removes the largest m ≤ ⌊0.99·n⌋ with ToD(m) ≤ α.\n\n![ToD curves](tod-curves.svg)",
        s.remove_by, s.protect_by
    );
    if s.mac_weight > 0.0 {
        let _ = writeln!(
            md,
            "\nMAC-aware counts (γ = {}): each curve is drawn as ToD(m)^w, w = (MACs of one of the layer's units / the costliest layer's)^γ ≤ 1, so a layer removes the largest m with ToD(m)^w ≤ α (docs/algorithm.md, \"MAC-aware counts\").",
            s.mac_weight
        );
    }
    charts.push(("tod-curves.svg", tod_curves_svg(report, curves)?));
    for (name, svg) in &charts {
        fair_fs::write_atomic(&dir.join(name), svg.as_bytes())?;
    }
    fair_fs::write_atomic(&dir.join("report.md"), md.as_bytes())?;
    Ok(())
}

/// `channels` of layer `l` as report.md writes them: with the units they make where a unit
/// is several channels: `32 (4 heads of 8)` for attention heads, `64 (16 × 4 groups)` for a
/// grouped convolution's within-group channels (16 in each of 4 groups).
fn counted(channels: usize, l: &crate::report::LayerResult) -> String {
    let grouped = fair_analysis::UnitMap::Blocks { blocks: 1 }.unit_name();
    match (l.unit_channels, &l.unit_name) {
        (Some(per), Some(name)) if per > 0 && name == grouped => {
            format!("{channels} ({} × {per} groups)", channels / per)
        }
        (Some(per), Some(name)) if per > 0 => {
            format!("{channels} ({} {name}s of {per})", channels / per)
        }
        _ => channels.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_md_counts_heads_and_groups() {
        let layer = |map: Option<fair_analysis::UnitMap>| crate::report::LayerResult {
            layer: "l".into(),
            units: 64,
            requested: 0,
            keep: 48,
            unit_channels: map.map(|m| m.channels_per_unit()),
            unit_name: map.map(|m| m.unit_name().to_owned()),
        };
        let heads = layer(Some(fair_analysis::UnitMap::Chunks { size: 8 }));
        assert_eq!(counted(64, &heads), "64 (8 heads of 8)");
        assert_eq!(counted(48, &heads), "48 (6 heads of 8)");
        let groups = layer(Some(fair_analysis::UnitMap::Blocks { blocks: 4 }));
        assert_eq!(counted(64, &groups), "64 (16 × 4 groups)");
        assert_eq!(counted(48, &groups), "48 (12 × 4 groups)");
        assert_eq!(counted(64, &layer(None)), "64");
    }

    /// A latency target of 50% with one correction round measured at `round` removed and a
    /// final measurement at `last` removed, judged as the pruner judges them (5%).
    fn target(round: f64, last: f64) -> crate::LatencyTargetResult {
        let spread = |v: f64| crate::Spread {
            median: v,
            q1: v,
            q3: v,
        };
        crate::LatencyTargetResult {
            target: 0.5,
            runtime: "libtorch-cpu".into(),
            runtime_version: None,
            batch: 1,
            threads: 2,
            table: "measured".into(),
            table_file: "latency-libtorch-cpu-b1-t2.json".into(),
            table_noisy: false,
            predicted: 0.55,
            mac_cut: 3.0,
            measured: Some(crate::MeasuredLatency {
                runtime: "libtorch-cpu".into(),
                runtime_version: None,
                before_ms: spread(10.0),
                after_ms: spread(10.0 * (1.0 - last)),
                speedup: spread(1.0 / (1.0 - last)),
                removed: last,
                gain_per_mac_cut: 1.0 / (1.0 - last) / 3.0,
                noisy: false,
            }),
            rounds: vec![crate::LatencyRound {
                table_target: 0.5,
                predicted: 0.5,
                removed: spread(round),
                speedup: spread(1.0 / (1.0 - round)),
                noisy: false,
                reused: false,
            }],
            tolerance: Some(0.05),
            met: Some(crate::within(0.5, round, 0.05)),
            measured_met: Some(crate::within(0.5, last, 0.05)),
        }
    }

    #[test]
    fn a_final_measurement_outside_the_tolerance_is_said_even_after_a_met_round() {
        let lines = target_lines("latency-0.5", &target(0.478, 0.419));
        assert!(lines[0].contains("41.9% removed"), "{lines:?}");
        assert!(
            lines[0].ends_with(", outside 5% of the target"),
            "{lines:?}"
        );
        let warning = lines.last().unwrap();
        assert!(
            warning.starts_with("warning: latency target latency-0.5: the final measurement removed 41.9%, outside 5% of the target 50.0%, though the exported candidate measured 47.8% in its correction round"),
            "{lines:?}"
        );
        // Within the tolerance at the end: said so, no warning.
        let lines = target_lines("latency-0.5", &target(0.478, 0.49));
        assert!(lines[0].ends_with(", within 5% of the target"), "{lines:?}");
        assert!(lines.iter().all(|l| !l.starts_with("warning")), "{lines:?}");
        // Not met in its rounds: the rounds' warning only.
        let lines = target_lines("latency-0.5", &target(0.40, 0.41));
        let warnings: Vec<_> = lines.iter().filter(|l| l.starts_with("warning")).collect();
        assert_eq!(warnings.len(), 1, "{lines:?}");
        assert!(
            warnings[0].contains("not met: after 1 round the closest candidate measured 40.0%")
        );
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(25_557_032), "25,557,032");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(human(4_089_184_256), "4.09 G");
        assert_eq!(human(853_018), "853.02 K");
    }
}
