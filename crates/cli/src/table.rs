//! Plain-text tables for the terminal.

use fair_ir::Graph;
use fair_pipeline::charts::{human, thousands};

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
