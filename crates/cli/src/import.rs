//! `fair-pruner import`: an ONNX model turned into fair-pruner's IR and safetensors weights.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use fair_onnx::ImportOptions;

use fair_pipeline::charts::thousands;

/// Arguments of `fair-pruner import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The ONNX model, e.g. written by `torch.onnx.export(model.eval(), x, "model.onnx")`
    /// (either exporter, opset 17 or newer).
    #[arg(value_name = "MODEL.onnx")]
    model: PathBuf,
    /// Output directory: model.toml (the IR) and model.safetensors (the weights, PyTorch
    /// state-dict names). Replaced as a whole; it may not hold the input.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Per-sample input shape CxHxW, overriding the file's (needed when the file leaves the
    /// image size symbolic).
    #[arg(long, value_name = "CxHxW")]
    input: Option<String>,
    /// The model's name [default: the file's recorded name, else the file name].
    #[arg(long)]
    name: Option<String>,
    /// Record the input normalisation the model expects: per-channel mean after scaling
    /// pixels to [0, 1], e.g. 0.485,0.456,0.406 (ImageNet). `eval`, `calib`, `score` and
    /// `prune` use it when no --mean/--std or config gives one, and exports carry it.
    #[arg(long, value_delimiter = ',', value_name = "M,...", requires = "std")]
    mean: Vec<f64>,
    /// Record the per-channel standard deviation, e.g. 0.229,0.224,0.225 (with --mean).
    #[arg(long, value_delimiter = ',', value_name = "S,...", requires = "mean")]
    std: Vec<f64>,
    /// Accept NaN or infinite weights (refused by default, naming the tensor).
    #[arg(long)]
    allow_non_finite: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `import`.
pub fn import(args: &ImportArgs) -> Result<()> {
    if !fair_pipeline::is_onnx(&args.model) {
        bail!(
            "{} is not an ONNX model (expected a .onnx file, e.g. from torch.onnx.export)",
            args.model.display()
        );
    }
    let mut guard = fair_pipeline::output_guard();
    fair_pipeline::guard_model_file(&mut guard, "MODEL.onnx", &args.model);
    let out = guard.dir("--out", &args.out)?;
    let options = ImportOptions {
        input_shape: args
            .input
            .as_deref()
            .map(fair_ir::parse_shape)
            .transpose()
            .map_err(anyhow::Error::msg)
            .context("--input")?,
        name: args.name.clone(),
        base_dir: None,
        allow_non_finite: args.allow_non_finite,
    };
    let mut imported = fair_pipeline::import_onnx(&args.model, &options)?;
    if !args.mean.is_empty() {
        imported.graph = fair_pipeline::with_normalization(&imported.graph, &args.mean, &args.std)
            .context("--mean/--std")?;
    }
    let staged = out.stage()?;
    imported.graph.save(&staged.path().join("model.toml"))?;
    fair_onnx::write_safetensors(&staged.path().join("model.safetensors"), &imported.tensors)?;
    let files = staged.commit()?;
    let report = fair_pipeline::ImportReport::new(&imported, &args.out, files);
    if args.json {
        return crate::print_json(&report);
    }
    let g = &imported.graph;
    crate::notes::print(&imported.notes);
    println!(
        "imported '{}': {} nodes, {} parameters, {} MACs, {} prunable layers, input {:?}",
        g.name(),
        g.nodes().len(),
        thousands(g.param_count() as u64),
        thousands(g.macs()),
        g.prunable_layers().len(),
        g.shape_at(0)
    );
    if !report.normalization_recorded {
        eprintln!(
            "warning: no input normalisation recorded: give --mean and --std here, or to each \
             command that feeds data (or [transform] mean / std in a config)"
        );
    }
    println!("wrote {} ({})", args.out.display(), report.files.join(", "));
    Ok(())
}
