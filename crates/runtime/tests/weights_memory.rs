//! What loading a weights file costs in memory. Alone in its test binary (and the tests in
//! it one at a time), so the process's peak memory (Linux `VmHWM`) shows what loading
//! allocated.
//!
//! The files are sparse (`File::set_len`): a few hundred bytes on disk, a data section of
//! gigabytes as declared by the header.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use fair_runtime::{Model, RuntimeError};
use fair_testkit::status_bytes;
use tch::{Device, Kind, Tensor};

/// The tests measure the whole process's peak memory: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The process's peak resident memory from now on is measured from the value returned:
/// the peak is reset to the current resident memory where Linux allows it, else the old
/// peak is returned (which can only understate a rise).
fn reset_peak() -> Option<u64> {
    if std::fs::write("/proc/self/clear_refs", "5").is_ok() {
        status_bytes("VmRSS:")
    } else {
        status_bytes("VmHWM:")
    }
}

/// A sparse safetensors file: the header for `tensors` (name, dtype, shape; packed in this
/// order), then `data` at the start of the data section, then zeros up to the declared
/// end. Returns the declared size of the data section.
fn sparse_file(path: &Path, tensors: &[(&str, &str, Vec<u64>)], data: &[u8]) -> u64 {
    let mut offset = 0u64;
    let mut entries = Vec::new();
    for (name, dtype, shape) in tensors {
        let size = match *dtype {
            "F32" => 4,
            "I64" => 8,
            other => panic!("dtype {other}"),
        };
        let n = shape.iter().product::<u64>() * size;
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        entries.push(format!(
            r#""{name}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{offset},{}]}}"#,
            dims.join(","),
            offset + n
        ));
        offset += n;
    }
    let header = format!("{{{}}}", entries.join(","));
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(header.as_bytes()).unwrap();
    f.write_all(data).unwrap();
    f.set_len(8 + header.len() as u64 + offset).unwrap();
    offset
}

/// (name, dtype, shape) of every parameter of `graph`, as a state dict stores them.
fn params_of(graph: &fair_ir::Graph) -> Vec<(String, &'static str, Vec<u64>)> {
    graph
        .params()
        .into_iter()
        .map(|p| {
            let dtype = if p.kind == fair_ir::ParamKind::NumBatchesTracked {
                "I64"
            } else {
                "F32"
            };
            (p.name, dtype, p.shape.iter().map(|&d| d as u64).collect())
        })
        .collect()
}

#[test]
fn a_file_declaring_a_huge_extra_tensor_is_refused_from_its_header() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.safetensors");
    let graph = fair_zoo::build("resnet20", &[3, 32, 32], 10).unwrap();
    let params = params_of(&graph);
    // Every tensor of the model (zeros), then 4 GiB of junk: [2^30] f32.
    let mut tensors: Vec<(&str, &str, Vec<u64>)> = params
        .iter()
        .map(|(n, d, s)| (n.as_str(), *d, s.clone()))
        .collect();
    const JUNK: u64 = 1 << 30;
    tensors.push(("junk", "F32", vec![JUNK]));
    let declared = sparse_file(&path, &tensors, &[]);
    assert!(declared > 4 * JUNK, "{declared}");

    let check = |e: RuntimeError, took: std::time::Duration| {
        let text = e.to_string();
        assert!(
            matches!(&e, RuntimeError::WeightsMismatch { problems, .. } if problems.len() == 1),
            "{text}"
        );
        assert!(
            text.contains("unexpected tensor 'junk' (shape [1073741824])")
                && text.contains("junk.safetensors")
                && text.contains("nothing was loaded"),
            "{text}"
        );
        // Reading (and checking) 4 GiB takes far longer than reading a header.
        assert!(took.as_secs_f64() < 2.0, "took {took:?}");
    };

    let before = reset_peak();
    let start = Instant::now();
    let e = Model::from_safetensors(graph.clone(), &path, Device::Cpu).unwrap_err();
    let took = start.elapsed();
    check(e, took);
    if let (Some(before), Some(after)) = (before, status_bytes("VmHWM:")) {
        // Reading the data section would have raised the peak by 4 GiB or more.
        let rise = after.saturating_sub(before);
        assert!(rise < 128 << 20, "peak memory rose by {} MiB", rise >> 20);
        eprintln!(
            "refused in {took:?}; peak memory rose by {} KiB for {} MiB declared",
            rise >> 10,
            declared >> 20
        );
    }

    // The same through an existing model, which keeps its weights.
    let mut m = Model::new(graph, Device::Cpu, 3).unwrap();
    let kept = m.tensor("conv1.weight").unwrap().copy();
    let before = reset_peak();
    let start = Instant::now();
    let e = m.load_weights(&path).unwrap_err();
    check(e, start.elapsed());
    if let (Some(before), Some(after)) = (before, status_bytes("VmHWM:")) {
        let rise = after.saturating_sub(before);
        assert!(rise < 128 << 20, "peak memory rose by {} MiB", rise >> 20);
    }
    assert!(kept.equal(m.tensor("conv1.weight").unwrap()));
}

#[test]
fn a_fitting_file_is_loaded_with_at_most_one_extra_copy_of_its_data() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide.safetensors");
    // One linear layer of 4096 × 16384 f32 weights: 256 MiB of parameters.
    let mut b = fair_ir::GraphBuilder::new("wide", "input", vec![4096]);
    b.linear("fc", "input", 16384, true).unwrap();
    let graph = b.finish().unwrap();
    let param_bytes = graph.param_count() as u64 * 4;
    assert!(param_bytes >= 256 << 20);
    // The bias first (its values written), then the weight (sparse zeros).
    let bias: Vec<f32> = (0..16384).map(|i| i as f32).collect();
    let data: Vec<u8> = bias.iter().flat_map(|v| v.to_le_bytes()).collect();
    let tensors = [
        ("fc.bias", "F32", vec![16384]),
        ("fc.weight", "F32", vec![16384, 4096]),
    ];
    assert_eq!(sparse_file(&path, &tensors, &data), param_bytes);

    let before = reset_peak();
    let m = Model::from_safetensors(graph, &path, Device::Cpu).unwrap();
    let after = status_bytes("VmHWM:");
    assert!(
        m.tensor("fc.bias")
            .unwrap()
            .equal(&Tensor::arange(16384, (Kind::Float, Device::Cpu)))
    );
    let weight = m.tensor("fc.weight").unwrap();
    assert_eq!(weight.size(), [16384, 4096]);
    assert_eq!(weight.abs().sum(Kind::Float).double_value(&[]), 0.0);
    if let (Some(before), Some(after)) = (before, after) {
        // The model's own parameters (256 MiB) are needed; a second copy of them (the file
        // read whole, or staged tensors copied into a freshly initialised model) is not.
        let rise = after.saturating_sub(before);
        assert!(
            rise < param_bytes + param_bytes / 2,
            "peak memory rose by {} MiB for {} MiB of parameters",
            rise >> 20,
            param_bytes >> 20
        );
        eprintln!(
            "peak memory rose by {} MiB for {} MiB of parameters",
            rise >> 20,
            param_bytes >> 20
        );
    }
}
