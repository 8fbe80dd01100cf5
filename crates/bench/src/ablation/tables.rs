//! The ablation's table (Markdown) and charts (SVG) of one network's [`Summary`].

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use plotters::prelude::*;

use super::experiment::Method;
use super::results::{Stat, Summary};

/// A row's method as the tables and charts name it: the method's key, `+ recon` when its
/// readers were reconstructed (`--reconstruct`).
pub fn row_label(method: Option<&Method>, reconstructed: bool) -> String {
    let key = method.map_or("?", |m| m.key());
    if reconstructed {
        format!("{key} + recon")
    } else {
        key.to_owned()
    }
}

/// A percentage cell: `90.12 ± 0.34` (the std omitted for one seed; `(n = k)` added when
/// fewer seeds than the table's `n` have the figure).
fn cell(stat: Option<&Stat>, n: usize, scale: f64) -> String {
    let Some(stat) = stat else {
        return "—".into();
    };
    let mut s = format!("{:.2}", scale * stat.mean);
    if let Some(std) = stat.std {
        write!(s, " ± {:.2}", scale * std).expect("writing to a String");
    }
    let k = stat.n;
    if k != n {
        write!(s, " (n = {k})").expect("writing to a String");
    }
    s
}

/// The Markdown of one network's summary (see [`super::stats::aggregate`]).
pub fn markdown(net: &Summary) -> Result<String> {
    let mut s = String::new();
    let n = net.n;
    let seeds: Vec<String> = net.seeds.iter().map(|v| v.to_string()).collect();
    let st = &net.settings;
    let u = &net.unpruned;
    let budgets = &net.budgets;
    writeln!(
        s,
        "#### {}\n\nn = {n} seeds ({}); every figure is the mean ± sample std over them (top-1 in %). Unpruned: {:.1} K params, {:.2} M MACs, validation top-1 {}, test top-1 {}. Trained {} epochs on the training split minus {} validation images per class; calibration {} samples per class from the training part; BatchNorm recalibration {} batches of {}; fine-tuning {} cosine over {:.0}% of the training part, each budget from the recalibrated model. {} CPU threads, {:.1} min in all (summed over the runs whose rows add up).\n",
        net.title,
        seeds.join(", "),
        u.params as f64 / 1e3,
        u.macs as f64 / 1e6,
        cell(u.val.as_ref(), n, 100.0),
        cell(u.test.as_ref(), n, 100.0),
        st.train_epochs,
        st.val_per_class,
        st.per_class,
        st.recalibration.batches,
        st.recalibration.batch_size,
        crate::compare::NETS
            .iter()
            .find(|n| n.key == net.net)
            .map_or("SGD lr 0.01", |n| n.finetune_recipe),
        100.0 * st.finetune_fraction,
        net.threads,
        net.minutes,
    )?;
    if let Some(rec) = &net.reconstruction {
        writeln!(
            s,
            "`+ recon` rows: the readers of removed units refitted by least squares against the unpruned model ({} batches of {} from the fine-tuning set, `fair_train::reconstruct_readers`) before the BatchNorm recalibration; their `+ BN recal` column is after both.\n",
            rec.batches, rec.batch_size
        )?;
    }
    let latency = st.latency.as_ref();
    if let Some(l) = latency {
        writeln!(
            s,
            "Equal latency: `fair-latency` prunes to the latency target on {} (batch {}, {} thread(s)), its candidates timed until the measured reduction is within {:.0}% (relative) of the target; every other method is pruned at the MACs target whose measured reduction is within {:.0}% (relative) of fair-latency's, found by timing candidates; then every pruned model of a seed is timed in one interleaved session against the unpruned model, which gives the latency column (median of the per-round reductions).\n",
            l.runtime,
            l.batch,
            l.threads,
            100.0 * l.fair_tolerance,
            100.0 * l.tolerance
        )?;
    }
    write!(
        s,
        "| {} | method | MACs removed |{} one-shot | + BN recal |",
        if latency.is_some() {
            "latency target"
        } else {
            "MACs target"
        },
        if latency.is_some() {
            " latency removed |"
        } else {
            ""
        }
    )?;
    // Distilled columns: "<budget>@<weight>".
    let distilled: Vec<(String, String)> = net
        .distilled
        .iter()
        .filter_map(|c| c.split_once('@'))
        .map(|(b, w)| (b.to_owned(), w.to_owned()))
        .collect();
    for b in budgets {
        write!(s, " FT {b} ep (val) | FT {b} ep (test) |")?;
    }
    for (b, w) in &distilled {
        write!(s, " FT {b} ep + KD {w} (val) | FT {b} ep + KD {w} (test) |")?;
    }
    writeln!(s)?;
    writeln!(
        s,
        "| ---: | --- | ---: |{} ---: | ---: |{}",
        if latency.is_some() { " ---: |" } else { "" },
        " ---: | ---: |".repeat(budgets.len() + distilled.len())
    )?;
    let rows = &net.rows;
    for r in rows {
        let m = |name: &str| cell(r.metrics.get(name), n, 100.0);
        write!(
            s,
            "| {:.0}% | {} | {} |{} {} | {} |",
            100.0 * r.target,
            r.method,
            m("macs_removed"),
            if latency.is_some() {
                format!(" {} |", m("latency_removed"))
            } else {
                String::new()
            },
            m("one_shot"),
            m("recalibrated"),
        )?;
        for b in budgets {
            write!(
                s,
                " {} | {} |",
                m(&format!("val@{b}")),
                m(&format!("test@{b}"))
            )?;
        }
        for (b, w) in &distilled {
            write!(
                s,
                " {} | {} |",
                m(&format!("kd-val@{b}@{w}")),
                m(&format!("kd-test@{b}@{w}"))
            )?;
        }
        writeln!(s)?;
    }
    let failed: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            Some(format!(
                "{} at {:.0}% ({})",
                r.method,
                100.0 * r.target,
                r.errors.first()?
            ))
        })
        .collect();
    if !failed.is_empty() {
        writeln!(s, "\nFailed (no figure): {}.", failed.join("; "))?;
    }
    if latency.is_some() {
        // Seeds where a row's final measurement was flagged noisy, or its search ended
        // outside the tolerance (the figures are kept, and said).
        for (metric, what) in [
            ("latency_noisy", "Final latency measurement flagged noisy"),
            ("latency_missed", "Search ended outside its tolerance"),
            ("latency_table_noisy", "Latency table flagged noisy"),
        ] {
            let flagged: Vec<String> = rows
                .iter()
                .filter_map(|r| {
                    let st = r.metrics.get(metric)?;
                    let k = (st.mean * st.n as f64).round() as usize;
                    (k > 0).then(|| format!("{} ({k} of {})", r.method, st.n))
                })
                .collect();
            if !flagged.is_empty() {
                writeln!(s, "\n{what}: {}.", flagged.join(", "))?;
            }
        }
    }
    let best: Vec<String> = net
        .best
        .iter()
        .map(|b| {
            format!(
                "{:.0}% / {} ep → {} ({:.2})",
                100.0 * b.target,
                b.budget,
                b.method,
                100.0 * b.val
            )
        })
        .collect();
    if !best.is_empty() {
        writeln!(
            s,
            "\nBest mean **validation** top-1 ({} target / fine-tuning budget → method): {}.",
            if latency.is_some() { "latency" } else { "MACs" },
            best.join("; ")
        )?;
    }
    let (equal, compared) = (net.cross_check.equal, net.cross_check.compared);
    if compared > 0 {
        writeln!(
            s,
            "\nCross-check: Torch-Pruning's own pruned models have the parameter counts of fair-pruner's surgery applying their plans in {equal} of {compared} cases."
        )?;
    }
    Ok(s)
}

/// Series colours (Okabe–Ito, then three more), one per method.
const PALETTE: [RGBColor; 10] = [
    RGBColor(0, 0, 0),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 158, 115),
    RGBColor(240, 228, 66),
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(204, 121, 167),
    RGBColor(120, 120, 120),
    RGBColor(140, 80, 20),
];

/// A point of the chart: (MACs removed, mean top-1, its std), in %.
type ChartPoint = (f64, f64, f64);

/// The chart of one network's summary: test top-1 after the largest budget against the
/// MACs removed, one line per method, error bars = std over seeds.
pub fn chart_svg(net: &Summary) -> Result<String> {
    let err = |e: &dyn std::fmt::Debug| anyhow::anyhow!("drawing the ablation chart: {e:?}");
    let budget = *net.budgets.iter().max().context("no fine-tuning budget")?;
    let metric = format!("test@{budget}");
    let rows = &net.rows;
    // (label, colour index, dashed, points): a method's `+ recon` line is dashed, in its
    // method's colour.
    let mut series: Vec<(String, usize, bool, Vec<ChartPoint>)> = Vec::new();
    let mut colours: Vec<&Method> = Vec::new();
    for (m, recon) in Method::ALL.iter().flat_map(|m| [(m, false), (m, true)]) {
        let label = row_label(Some(m), recon);
        let mut points: Vec<ChartPoint> = rows
            .iter()
            .filter(|r| r.method == label)
            .filter_map(|r| {
                let x = r.metrics.get("macs_removed")?.mean;
                let y = r.metrics.get(&metric)?;
                Some((100.0 * x, 100.0 * y.mean, 100.0 * y.std.unwrap_or(0.0)))
            })
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        if !points.is_empty() {
            let colour = match colours.iter().position(|&c| c == m) {
                Some(i) => i,
                None => {
                    colours.push(m);
                    colours.len() - 1
                }
            };
            series.push((label, colour, recon, points));
        }
    }
    let all = series.iter().flat_map(|s| &s.3);
    let (x0, x1) = all
        .clone()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = all.fold((f64::MAX, f64::MIN), |(a, b), p| {
        (a.min(p.1 - p.2), b.max(p.1 + p.2))
    });
    if series.is_empty() {
        bail!("no figures after {budget} epochs to chart");
    }
    let pad_x = ((x1 - x0) * 0.08).max(2.0);
    // Room right of the data for the legend (about a quarter of the plot's width), so it
    // never hides a line.
    let legend_x = (x1 - x0 + 2.0 * pad_x) * 0.4;
    let pad_y = ((y1 - y0) * 0.1).max(0.5);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!(
                    "{}: test top-1 after {budget} fine-tuning epoch(s), mean ± std over {} seed(s)",
                    net.net, net.n
                ),
                ("sans-serif", 15),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(
                (x0 - pad_x)..(x1 + pad_x + legend_x),
                (y0 - pad_y)..(y1 + pad_y * 2.0),
            )
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("MACs removed (%)")
            .y_desc("test top-1 (%)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .draw()
            .map_err(|e| err(&e))?;
        for (label, colour, dashed, points) in &series {
            let c = PALETTE[colour % PALETTE.len()];
            let line = points.iter().map(|p| (p.0, p.1));
            let drawn = if *dashed {
                chart.draw_series(DashedLineSeries::new(line, 6, 4, c.stroke_width(2)))
            } else {
                chart.draw_series(LineSeries::new(line, c.stroke_width(2)))
            };
            let dashed = *dashed;
            drawn
                .map_err(|e| err(&e))?
                .label(label.clone())
                .legend(move |(x, y)| {
                    // Two segments, with a gap between them for a dashed line.
                    let (end, start) = if dashed { (6, 10) } else { (8, 8) };
                    let style = c.stroke_width(2);
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (end, 0)], style)
                        + PathElement::new(vec![(start, 0), (16, 0)], style)
                });
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|p| Circle::new((p.0, p.1), 3, c.filled())),
                )
                .map_err(|e| err(&e))?;
            chart
                .draw_series(points.iter().filter(|p| p.2 > 0.0).map(|p| {
                    PathElement::new(vec![(p.0, p.1 - p.2), (p.0, p.1 + p.2)], c.stroke_width(1))
                }))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(svg)
}
