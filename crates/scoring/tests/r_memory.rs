//! The R-Score's memory estimate bounds what a pass really takes. Alone in its test binary,
//! so the process's peak resident memory is this test's.

use fair_runtime::Model;
use fair_scoring::{
    AnalysisPoint, Calibration, Progress, RScoreMemory, RScoreSettings, prunable_layers, r_scores,
};
use tch::{Device, Kind, Tensor};

#[test]
fn r_score_memory_estimate_bounds_the_measured_growth() {
    let Some(_) = fair_testkit::peak_rss() else {
        eprintln!("no VmHWM on this system: skipped");
        return;
    };
    // Every allocation of 64 KiB or more gets its own mapping, returned when freed, so the
    // peak resident memory follows the live tensors rather than the allocator's reuse of
    // freed memory (the slack the bound's runtime share is for).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a glibc tuning parameter; nothing else runs yet.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 10);
    }
    let g = fair_zoo::build("vgg11_bn_cifar", &[3, 32, 32], 10).unwrap();
    let model = Model::new(g, Device::Cpu, 0).unwrap();
    tch::manual_seed(0);
    let x = Tensor::randn([128, 3, 32, 32], (Kind::Float, Device::Cpu));
    let y = Tensor::arange(128, (Kind::Int64, Device::Cpu)).remainder(10);
    let cal = Calibration::new(x, &y, "synthetic").unwrap();
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    let memory = RScoreMemory::of(model.graph(), &layers, cal.len(), cal.sample_numel()).unwrap();
    // Warm libtorch up (kernels, thread pools) with passes of one sample.
    let one = RScoreSettings {
        batch_size: 1,
        ..Default::default()
    };
    let small = Calibration::new(
        cal.select(&[0, 1]),
        &Tensor::from_slice(&[0i64, 1]),
        "warm-up",
    )
    .unwrap();
    r_scores(&model, &layers, &small, &one, Progress::QUIET).unwrap();

    let batch = 64;
    let before = fair_testkit::peak_rss().unwrap();
    let s = RScoreSettings {
        batch_size: batch,
        ..Default::default()
    };
    let (scores, _) = r_scores(&model, &layers, &cal, &s, Progress::QUIET).unwrap();
    assert_eq!(scores.len(), layers.len());
    let grown = fair_testkit::peak_rss().unwrap().saturating_sub(before);
    // What was not held before the pass: the per-sample part and the transient parameter
    // gradients (the parameters and the calibration set were already resident).
    let estimate = memory.peak(batch) - memory.fixed + 4 * model.graph().param_count() as u64;
    eprintln!(
        "peak grew by {:.1} MiB; estimated per-batch part {:.1} MiB",
        grown as f64 / (1 << 20) as f64,
        estimate as f64 / (1 << 20) as f64
    );
    assert!(grown > 0, "the pass took no memory?");
    assert!(
        grown <= estimate,
        "measured growth {grown} B exceeds the estimate {estimate} B"
    );
}
