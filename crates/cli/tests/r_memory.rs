//! Issue 26, item 4, as users meet it: `score --max-memory` bounds the R-Score too. A bound
//! that holds a few samples of a pass runs each batch in pieces, with a note in the score
//! file; one that holds none is an error naming `--max-memory` and the model.

mod common;
use common::{run, stderr};

#[test]
fn score_max_memory_bounds_the_r_score() {
    use tch::{Device, Kind, Tensor};
    let dir = tempfile::tempdir().unwrap();
    let graph = fair_zoo::build("vgg11_bn_cifar", &[1, 32, 32], 3).unwrap();
    let model = fair_runtime::Model::new(graph.clone(), Device::Cpu, 0).unwrap();
    let weights = dir.path().join("w.safetensors");
    model.save_weights(&weights).unwrap();
    tch::manual_seed(0);
    let labels =
        Tensor::arange(3, (Kind::Int64, Device::Cpu)).repeat_interleave_self_int(4, 0, None);
    let inputs = Tensor::randn([12, 1, 32, 32], (Kind::Float, Device::Cpu));
    let data = dir.path().join("cal.safetensors");
    fair_runtime::write_safetensors(
        &data,
        &[("inputs".into(), inputs), ("labels".into(), labels)],
    )
    .unwrap();
    let layers = fair_scoring::prunable_layers(&graph, fair_scoring::AnalysisPoint::LayerOutput);
    let memory = fair_scoring::RScoreMemory::of(&graph, &layers, 12, 32 * 32).unwrap();
    let (w, d) = (weights.to_str().unwrap(), data.to_str().unwrap());
    let score = |bound: u64| {
        let out = dir.path().join("scores.json");
        let bound = bound.to_string();
        let o = run(&[
            "score",
            "--model",
            "vgg11_bn_cifar",
            "--input",
            "1x32x32",
            "--classes",
            "3",
            "--weights",
            w,
            "--calibration",
            d,
            "--criteria",
            "r",
            "--batch-size",
            "12",
            "--max-memory",
            &bound,
            "--out",
            out.to_str().unwrap(),
        ]);
        (o, out)
    };
    // Room for 5 samples (the runtime's tenth of the bound aside): pieces of 5, 5 and 2.
    let five = (memory.peak(5) + memory.per_sample / 2) * 10 / 9;
    let (o, out) = score(five);
    assert!(o.status.success(), "{}", stderr(&o));
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
    let notes = file["provenance"]["criteria"]["r"]["notes"].to_string();
    assert!(
        notes.contains("batch of 12 in pieces of 5") && notes.contains("max-memory"),
        "{notes}"
    );
    // Not even one sample: the error names the flag and the model.
    let (o, _) = score(memory.peak(1) * 10 / 9 - memory.per_sample);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--max-memory") && e.contains("'vgg11_bn_cifar'") && e.contains("R-Score"),
        "{e}"
    );
}
