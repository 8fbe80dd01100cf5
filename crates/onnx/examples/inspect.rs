//! Imports ONNX files and prints what fair-pruner sees: node count, parameters, MACs, output
//! shape and the importer's notes (or the error).
//!
//! `cargo run -p fair-onnx --example inspect -- model.onnx [more.onnx ...] [--shape 3x224x224]
//! [--export DIR]` (`--export` writes each imported model back as `DIR/<name>.fair.onnx`;
//! `INSPECT_NODES=1` lists the nodes).

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut options = fair_onnx::ImportOptions::default();
    if let Some(i) = args.iter().position(|a| a == "--shape") {
        let shape = args.get(i + 1).map(|s| fair_ir::parse_shape(s));
        match shape {
            Some(Ok(s)) => options.input_shape = Some(s),
            _ => {
                eprintln!("--shape needs a shape such as 3x224x224");
                std::process::exit(2);
            }
        }
        args.drain(i..i + 2);
    }
    let mut export_dir = None;
    if let Some(i) = args.iter().position(|a| a == "--export") {
        export_dir = args.get(i + 1).map(std::path::PathBuf::from);
        args.drain(i..(i + 2).min(args.len()));
    }
    let mut failed = false;
    for path in &args {
        match fair_onnx::import_file_with(std::path::Path::new(path), &options) {
            Ok(m) => {
                let g = &m.graph;
                let mut ops: Vec<&str> = g.nodes().iter().map(|n| n.op.type_name()).collect();
                ops.sort_unstable();
                ops.dedup();
                println!(
                    "{path}: {} nodes, {} params, {} MACs, output {:?}, ops {}",
                    g.nodes().len(),
                    g.param_count(),
                    g.macs(),
                    g.shape_at(g.nodes().len() - 1),
                    ops.join(",")
                );
                if std::env::var_os("INSPECT_NODES").is_some() {
                    for n in g.nodes() {
                        println!(
                            "  {} = {}({})",
                            n.name,
                            n.op.type_name(),
                            n.inputs.join(", ")
                        );
                    }
                }
                if let Some(dir) = &export_dir {
                    let stem = std::path::Path::new(path).file_stem().unwrap_or_default();
                    let out = dir.join(format!("{}.fair.onnx", stem.to_string_lossy()));
                    let written =
                        fair_onnx::export(g, &m.tensors, &fair_onnx::ExportOptions::default())
                            .map_err(|e| e.to_string())
                            .and_then(|b| {
                                fair_fs::write_atomic(&out, &b).map_err(|e| e.to_string())
                            });
                    if let Err(e) = written {
                        failed = true;
                        println!("  export ERROR {e}");
                    }
                }
                for note in &m.notes {
                    println!("  note: {note}");
                }
            }
            Err(e) => {
                failed = true;
                println!("{path}: ERROR {e}");
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
