//! Plain-text tables for the terminal.

use fair_ir::Graph;

/// Renders rows under a header; columns listed in `right` are right-aligned.
pub fn render(header: &[&str], rows: &[Vec<String>], right: &[usize]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            let pad = w - cell.chars().count();
            if right.contains(&i) {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    out += &line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
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

/// The per-node table of `fair-pruner info`, with totals.
pub fn info_table(graph: &Graph) -> String {
    let rows: Vec<Vec<String>> = graph
        .summary()
        .into_iter()
        .map(|r| {
            vec![
                r.name,
                r.op.to_owned(),
                r.shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("x"),
                thousands(r.params as u64),
                thousands(r.macs),
            ]
        })
        .collect();
    let mut out = format!("model: {}\n\n", graph.name());
    out += &render(&["node", "op", "output", "params", "MACs"], &rows, &[3, 4]);
    let params = graph.param_count() as u64;
    let macs = graph.macs();
    out += &format!(
        "\ntotal: {} nodes, {} parameters ({}), {} MACs ({}) per sample\n",
        graph.nodes().len(),
        thousands(params),
        human(params),
        thousands(macs),
        human(macs)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(25_557_032), "25,557,032");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(human(4_089_184_256), "4.09 G");
        assert_eq!(human(853_018), "853.02 K");
    }

    #[test]
    fn aligns_columns() {
        let t = render(
            &["a", "n"],
            &[
                vec!["long".into(), "1".into()],
                vec!["x".into(), "100".into()],
            ],
            &[1],
        );
        assert_eq!(t, "a       n\n----  ---\nlong    1\nx     100\n");
    }
}
