//! U- and R-Scores against independent computations on small zoo models.

use fair_runtime::{Mode, Model};
use fair_scoring::{
    AnalysisPoint, Calibration, ConvDistance, MAX_PROJECTIONS, Progress, RMode, RScoreSettings,
    UScoreSettings, prunable_layers, r_scores, u_scores,
};
use tch::{Device, Kind, Tensor};

/// `n_per_class` samples of each class, drawn from N(0, 1) by a generator of this call's own
/// (libtorch's global one is reseeded by other tests running at the same time, e.g. inside
/// `r_scores`, which made the data depend on the tests' timing).
fn data(n_per_class: i64, classes: i64, shape: &[i64], seed: i64) -> Calibration {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed as u64);
    let mut dims = vec![n_per_class * classes];
    dims.extend_from_slice(shape);
    let labels = Tensor::arange(classes, (Kind::Int64, Device::Cpu)).repeat_interleave_self_int(
        n_per_class,
        0,
        None,
    );
    // Class-dependent shift so units separate the classes.
    let mut view = vec![-1i64];
    view.extend(shape.iter().map(|_| 1));
    let numel: i64 = dims.iter().product();
    let values: Vec<f32> = (0..numel)
        .map(|_| {
            let v: f64 = StandardNormal.sample(&mut rng);
            v as f32
        })
        .collect();
    let x = Tensor::from_slice(&values).reshape(dims.as_slice())
        + labels.to_kind(Kind::Float).view(view.as_slice()) * 0.5;
    Calibration::new(x, &labels, "synthetic").unwrap()
}

fn mlp() -> Model {
    let g = fair_zoo::mlp(vec![1, 6, 6], &[10, 7], 3).unwrap();
    Model::new(g, Device::Cpu, 1).unwrap()
}

/// The finite difference of the summed batch losses (batches of `batch`, eval mode) when
/// the weight row and bias of `unit` of `layer` are scaled by 1 ± ε: |Σ_b d/dε L_b(θ_j·(1+ε))|
/// at ε = 0, which the R-Score of the unit must equal. The model is left as it was.
fn finite_difference_r(
    model: &Model,
    cal: &Calibration,
    batch: usize,
    layer: &str,
    unit: i64,
) -> f64 {
    let loss_sum = || -> f64 {
        cal.batches(batch)
            .map(|(x, y)| {
                let logits = model.forward(&x, Mode::Eval).unwrap().to_kind(Kind::Double);
                logits.cross_entropy_for_logits(&y).double_value(&[])
            })
            .sum()
    };
    let scale = |f: f64| {
        tch::no_grad(|| {
            for suffix in ["weight", "bias"] {
                let mut row = model
                    .tensor(&format!("{layer}.{suffix}"))
                    .unwrap()
                    .get(unit);
                let _ = row.g_mul_scalar_(f);
            }
        })
    };
    // f32 forward passes: ε large enough that rounding stays far below the O(ε²) truncation.
    let eps = 1e-2;
    scale(1.0 + eps);
    let up = loss_sum();
    scale(1.0 / (1.0 + eps) * (1.0 - eps));
    let down = loss_sum();
    scale(1.0 / (1.0 - eps));
    ((up - down) / (2.0 * eps)).abs()
}

#[test]
fn r_score_equals_the_finite_difference_of_the_loss() {
    // Eval mode makes the loss deterministic.
    let model = mlp();
    let cal = data(8, 3, &[1, 6, 6], 0);
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    let settings = RScoreSettings {
        mode: RMode::Eval,
        batch_size: 10,
        seed: 0,
        max_memory: None,
    };
    let (r, _) = r_scores(&model, &layers, &cal, &settings, Progress::QUIET).unwrap();
    for (l, layer) in layers.iter().enumerate() {
        // The three units with the largest scores: a finite difference of f32 losses
        // resolves them well (smaller ones drown in the losses' rounding).
        let mut order: Vec<usize> = (0..r[l].len()).collect();
        order.sort_by(|&a, &b| r[l][b].total_cmp(&r[l][a]));
        for unit in order[..3].iter().map(|&u| u as i64) {
            let fd = finite_difference_r(&model, &cal, 10, &layer.name, unit);
            let ours = r[l][unit as usize];
            assert!(
                (ours - fd).abs() <= 2e-3 * fd.max(1e-6),
                "{} unit {unit}: R = {ours}, finite difference {fd}",
                layer.name
            );
        }
    }
}

#[test]
fn linear_u_score_equals_exact_w1_of_the_tapped_outputs() {
    let model = mlp();
    let cal = data(9, 3, &[1, 6, 6], 1);
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    let s = UScoreSettings {
        samples_per_class: 9,
        ..Default::default()
    };
    let (u, notes) = u_scores(&model, &layers, &cal, &s, Progress::QUIET).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    // Independent path: tap each class's outputs and use the SciPy-checked 1-D W1.
    for (l, layer) in layers.iter().enumerate() {
        let per_class: Vec<Tensor> = cal
            .class_indices()
            .values()
            .map(|idx| {
                let out = tch::no_grad(|| {
                    model.forward_with_taps(&cal.select(idx), Mode::Eval, &[&layer.name])
                })
                .unwrap();
                out.taps[&layer.name].to_kind(Kind::Double)
            })
            .collect();
        for (unit, &score) in u[l].iter().enumerate() {
            let col = |t: &Tensor| Vec::<f64>::try_from(t.select(1, unit as i64)).unwrap();
            let mut best = 0.0f64;
            for a in 0..3 {
                for b in a + 1..3 {
                    best = best.max(
                        fair_stats::wasserstein_1d(&col(&per_class[a]), &col(&per_class[b]))
                            .unwrap(),
                    );
                }
            }
            assert!(
                (score - best).abs() <= 1e-5 * best.max(1e-6),
                "{} unit {unit}",
                layer.name
            );
        }
    }
}

#[test]
fn a_dead_unit_scores_zero_on_both_signals() {
    let model = mlp();
    tch::no_grad(|| {
        for suffix in ["weight", "bias"] {
            let _ = model
                .tensor(&format!("layers.0.{suffix}"))
                .unwrap()
                .get(4)
                .zero_();
        }
    });
    let cal = data(8, 3, &[1, 6, 6], 2);
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    let (u, _) = u_scores(
        &model,
        &layers,
        &cal,
        &UScoreSettings::default(),
        Progress::QUIET,
    )
    .unwrap();
    let (r, _) = r_scores(
        &model,
        &layers,
        &cal,
        &RScoreSettings::default(),
        Progress::QUIET,
    )
    .unwrap();
    assert_eq!(u[0][4], 0.0, "a constant output separates no classes");
    assert_eq!(
        r[0][4], 0.0,
        "zero parameters contribute nothing to θ·∂L/∂θ"
    );
    assert!(u[0].iter().filter(|v| **v > 0.0).count() >= 9);
}

#[test]
fn conv_u_scores_are_seeded_and_finite_in_both_variants() {
    let g = fair_zoo::build("resnet20", &[3, 8, 8], 4).unwrap();
    let model = Model::new(g, Device::Cpu, 0).unwrap();
    let cal = data(6, 4, &[3, 8, 8], 3);
    let layers = prunable_layers(model.graph(), AnalysisPoint::AfterActivation);
    let s = UScoreSettings {
        conv: ConvDistance::Sliced,
        projections: 16,
        ..Default::default()
    };
    let (a, _) = u_scores(&model, &layers, &cal, &s, Progress::QUIET).unwrap();
    let (b, _) = u_scores(&model, &layers, &cal, &s, Progress::QUIET).unwrap();
    assert_eq!(a, b, "same seed, same scores");
    let (c, _) = u_scores(
        &model,
        &layers,
        &cal,
        &UScoreSettings {
            seed: 9,
            ..s.clone()
        },
        Progress::QUIET,
    )
    .unwrap();
    assert_ne!(a, c, "another seed draws other directions");
    let pooled = UScoreSettings {
        conv: ConvDistance::Pooled,
        ..s
    };
    let (p, _) = u_scores(&model, &layers, &cal, &pooled, Progress::QUIET).unwrap();
    assert_eq!(p.len(), layers.len());
    assert!(
        a.iter()
            .flatten()
            .chain(p.iter().flatten())
            .all(|v| v.is_finite() && *v >= 0.0)
    );
}

#[test]
fn bad_data_gets_clear_errors() {
    let model = mlp();
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    // One class only.
    let one = Calibration::new(
        Tensor::randn([4, 1, 6, 6], (Kind::Float, Device::Cpu)),
        &Tensor::zeros([4], (Kind::Int64, Device::Cpu)),
        "x",
    )
    .unwrap();
    let e = u_scores(
        &model,
        &layers,
        &one,
        &UScoreSettings::default(),
        Progress::QUIET,
    )
    .unwrap_err();
    assert!(e.to_string().contains("1 class(es)"), "{e}");
    // A class with fewer samples than asked for is used, with a note.
    let labels = Tensor::from_slice(&[0i64, 0, 0, 1, 1, 2, 2, 2]);
    let few = Calibration::new(
        Tensor::randn([8, 1, 6, 6], (Kind::Float, Device::Cpu)),
        &labels,
        "x",
    )
    .unwrap();
    let s = UScoreSettings {
        samples_per_class: 3,
        ..Default::default()
    };
    let (_, notes) = u_scores(&model, &layers, &few, &s, Progress::QUIET).unwrap();
    // The classes differ in size, so the bounded pair search says it computed every pair.
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes[0].contains("class 1 has 2 calibration sample(s)"),
        "{notes:?}"
    );
    assert!(
        notes[1].contains("computed every class pair") && notes[1].contains("differ in size"),
        "{notes:?}"
    );
    let all = UScoreSettings {
        pair_search: fair_scoring::PairSearch::All,
        ..s
    };
    let (_, notes) = u_scores(&model, &layers, &few, &all, Progress::QUIET).unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    // NaN inputs, mismatched labels, negative labels.
    let x = Tensor::randn([2, 1, 6, 6], (Kind::Float, Device::Cpu));
    let _ = x.get(1).fill_(f64::NAN);
    let e = Calibration::new(x, &Tensor::from_slice(&[0i64, 1]), "x").unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");
    let e = Calibration::new(
        Tensor::zeros([3, 2], (Kind::Float, Device::Cpu)),
        &Tensor::from_slice(&[0i64, 1]),
        "x",
    )
    .unwrap_err();
    assert!(e.to_string().contains("one entry per input (3)"), "{e}");
    let e = Calibration::new(
        Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)),
        &Tensor::from_slice(&[0i64, -1]),
        "x",
    )
    .unwrap_err();
    assert!(e.to_string().contains("label of sample 1 is -1"), "{e}");
    // Settings.
    let e = u_scores(
        &model,
        &layers,
        &few,
        &UScoreSettings {
            max_classes: 1,
            ..Default::default()
        },
        Progress::QUIET,
    )
    .unwrap_err();
    assert!(e.to_string().contains("max-classes"), "{e}");
    // Issue 29: projections that would overflow the memory estimate or allocate terabytes of
    // directions are refused by name, never an overflow panic or an abort.
    for projections in [MAX_PROJECTIONS + 1, usize::MAX] {
        let e = u_scores(
            &model,
            &layers,
            &few,
            &UScoreSettings {
                projections,
                ..Default::default()
            },
            Progress::QUIET,
        )
        .unwrap_err();
        assert!(e.to_string().contains("projections"), "{e}");
    }
    // The memory estimate saturates instead of overflowing.
    let huge = fair_scoring::memory::layer_memory(
        model.graph(),
        &layers,
        &vec![usize::MAX; layers.len()],
        &[usize::MAX, 3],
        256,
    );
    assert!(huge.is_ok_and(|m| m.iter().all(|l| l.per_unit == u64::MAX)));
}

/// The memory planner's inputs for `layers` of `model` scored on `cal` with `p` projections
/// per conv layer, `samples` per class and forward batches of 4: each layer's memory, the fixed bytes (parameters
/// and calibration data in f32) and the bytes of every layer's summaries together.
fn planner_inputs(
    model: &Model,
    layers: &[fair_scoring::PrunableLayer],
    cal: &Calibration,
    p: usize,
    samples: &[usize],
) -> (Vec<fair_scoring::memory::LayerMemory>, u64, u64) {
    let graph = model.graph();
    let projections: Vec<usize> = layers.iter().map(|l| if l.conv { p } else { 1 }).collect();
    let mem = fair_scoring::memory::layer_memory(graph, layers, &projections, samples, 4).unwrap();
    let fixed = 4 * (graph.param_count() as u64 + cal.len() as u64 * cal.sample_numel() as u64);
    let held = layers
        .iter()
        .zip(&mem)
        .map(|(l, m)| m.per_unit * l.units as u64)
        .sum();
    (mem, fixed, held)
}

/// A budget that holds a third of the U-Score's summaries next to everything else, for
/// `per_class` samples of every class, `p` projections of conv layers and forward batches of
/// `batch_size` (consecutive classes packed into one).
fn tight_budget(
    model: &Model,
    layers: &[fair_scoring::PrunableLayer],
    cal: &Calibration,
    p: usize,
    per_class: usize,
    batch_size: usize,
) -> u64 {
    use fair_scoring::memory::{budget_for, largest_pack, layer_memory, plan};
    let graph = model.graph();
    let samples = vec![per_class; cal.class_indices().len()];
    let (_, fixed, held) = planner_inputs(model, layers, cal, p, &samples);
    let projections: Vec<usize> = layers.iter().map(|l| if l.conv { p } else { 1 }).collect();
    let mem = layer_memory(graph, layers, &projections, &samples, batch_size).unwrap();
    let batch = largest_pack(&samples, batch_size).min(batch_size);
    let one = plan(graph, layers, &mem, batch, fixed, None).unwrap();
    let want = fixed + (one.unbounded - held) + held / 3;
    // Plans leave shares of the bound to libtorch's runtime and the allocator's free blocks.
    budget_for(want)
}

/// A U-Score under a memory budget runs each class's forward pass once, spilling the
/// summaries that do not fit to an unnamed temporary file (none is left) and computing the
/// distances in several passes (splitting layers by units where needed); where no file can
/// be made, it runs several passes that each re-run the forward passes. Both give the scores
/// of one pass, bit for bit.
#[test]
fn bounded_memory_u_scores_equal_the_single_pass() {
    use fair_scoring::memory::{budget_for, forward_once, plan, usable};
    use fair_scoring::{ByteSize, u_scores_measured};
    let bits = |s: &[Vec<f64>]| -> Vec<Vec<u64>> {
        s.iter()
            .map(|l| l.iter().map(|v| v.to_bits()).collect())
            .collect()
    };
    let mut any_split = false;
    for (zoo, point, input) in [
        ("resnet20", AnalysisPoint::AfterActivation, [3i64, 8, 8]),
        ("vgg11_bn_cifar", AnalysisPoint::LayerOutput, [3, 32, 32]),
    ] {
        let shape: Vec<usize> = input.iter().map(|&d| d as usize).collect();
        let g = fair_zoo::build(zoo, &shape, 5).unwrap();
        let model = Model::new(g, Device::Cpu, 0).unwrap();
        fair_testkit::randomise_batchnorm(&model, 1);
        let cal = data(6, 5, &input, 3);
        let layers = prunable_layers(model.graph(), point);
        let s = UScoreSettings {
            projections: 8,
            batch_size: 4,
            samples_per_class: 6,
            ..Default::default()
        };
        let (one, notes) = u_scores(&model, &layers, &cal, &s, Progress::QUIET).unwrap();
        assert!(notes.is_empty(), "{notes:?}");

        // Room for a third of the summaries next to the fixed part and the passes' overhead.
        let graph = model.graph();
        let (mem, fixed, held) = planner_inputs(&model, &layers, &cal, 8, &[6; 5]);
        let all = plan(graph, &layers, &mem, 4, fixed, None).unwrap();
        assert_eq!(all.chunks.len(), 1);
        let budget = budget_for(fixed + (all.unbounded - held) + held / 3);
        let split = plan(graph, &layers, &mem, 4, fixed, Some(budget)).unwrap();
        assert!(
            split.chunks.len() >= 2,
            "{zoo}: {} passes",
            split.chunks.len()
        );
        let split_layers = (0..layers.len())
            .filter(|&l| {
                split
                    .chunks
                    .iter()
                    .filter(|c| c.slices.iter().any(|sl| sl.layer == l))
                    .count()
                    > 1
            })
            .count();
        any_split |= split_layers > 0;
        assert!(
            split.peak() <= budget - fixed,
            "{zoo}: a pass exceeds the budget"
        );
        // Every unit of every layer is scored exactly once.
        let mut seen: Vec<Vec<u32>> = layers.iter().map(|l| vec![0; l.units]).collect();
        for c in &split.chunks {
            for sl in &c.slices {
                for u in sl.units.clone() {
                    seen[sl.layer][u] += 1;
                }
            }
        }
        assert!(seen.iter().flatten().all(|&n| n == 1), "{zoo}: {seen:?}");

        // Each class's forward pass runs once: what does not fit goes to a temporary file
        // in `spill_dir` (unnamed: none is left) and the distances run in passes.
        let once = forward_once(graph, &layers, &mem, 4, fixed, Some(budget)).unwrap();
        assert_eq!(once.forwards.len(), 1, "{zoo}: {:?}", once.forwards);
        assert!(
            !once.resident.is_empty() && !once.spilled.is_empty(),
            "{zoo}: {once:?}"
        );
        assert!(once.peak() <= usable(budget) - fixed);
        let mut seen: Vec<Vec<u32>> = layers.iter().map(|l| vec![0; l.units]).collect();
        let mut spilled = 0;
        for (sl, resident) in once.resident.iter().map(|sl| (sl, true)).chain(
            once.spilled
                .iter()
                .flat_map(|c| &c.slices)
                .map(|sl| (sl, false)),
        ) {
            for u in sl.units.clone() {
                seen[sl.layer][u] += 1;
            }
            if !resident {
                spilled += mem[sl.layer].per_unit * sl.units.len() as u64;
            }
        }
        assert!(seen.iter().flatten().all(|&n| n == 1), "{zoo}: {seen:?}");
        assert_eq!(once.spill_bytes, spilled);
        let dir = tempfile::tempdir().unwrap();
        let bounded = UScoreSettings {
            max_memory: Some(ByteSize(budget)),
            spill_dir: Some(fair_scoring::SpillDir::At(dir.path().to_path_buf())),
            ..s.clone()
        };
        let run =
            u_scores_measured(&model, &layers, &cal, &bounded, Progress::QUIET, None).unwrap();
        assert!(
            bits(&run.scores) == bits(&one),
            "{zoo}: the bounded scores differ"
        );
        assert_eq!((run.passes, run.forwards), (1, 5), "{zoo}");
        assert_eq!(run.profile.forward_again, 0.0);
        assert_eq!(run.spilled, once.spill_bytes);
        assert!(run.spilled > 0);
        assert!(
            run.notes.iter().any(|n| n.contains("passes")
                && n.contains("`max-memory`")
                && n.contains("forward pass ran once")),
            "{zoo}: {:?}",
            run.notes
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{zoo}: the spill file was left behind"
        );

        // Where no temporary file can be made, every pass re-runs the forward passes, with
        // the same scores.
        let nowhere = UScoreSettings {
            spill_dir: Some(fair_scoring::SpillDir::At(dir.path().join("missing"))),
            ..bounded.clone()
        };
        let run =
            u_scores_measured(&model, &layers, &cal, &nowhere, Progress::QUIET, None).unwrap();
        assert!(
            bits(&run.scores) == bits(&one),
            "{zoo}: the scores of repeated passes differ"
        );
        assert_eq!(run.passes, split.chunks.len(), "{zoo}");
        assert_eq!(run.forwards, 5 * split.chunks.len(), "{zoo}");
        assert_eq!(run.spilled, 0);
        assert!(
            run.notes
                .iter()
                .any(|n| n.contains("could not be kept in a temporary file")),
            "{zoo}: {:?}",
            run.notes
        );
        assert!(
            run.notes
                .iter()
                .any(|n| n.contains("passes") && n.contains("`max-memory`")),
            "{zoo}: {:?}",
            run.notes
        );

        // `spill-dir none` asks for the repeated passes: the same scores, and a note that
        // says it was asked for.
        let never = UScoreSettings {
            spill_dir: Some(fair_scoring::SpillDir::Never),
            ..bounded.clone()
        };
        let run = u_scores_measured(&model, &layers, &cal, &never, Progress::QUIET, None).unwrap();
        assert!(bits(&run.scores) == bits(&one), "{zoo}: spill-dir none");
        assert_eq!((run.passes, run.spilled), (split.chunks.len(), 0), "{zoo}");
        assert!(
            run.notes.iter().any(|n| n.contains("`spill-dir` is none")),
            "{zoo}: {:?}",
            run.notes
        );

        // A budget that cannot hold one unit of the first layer names it.
        let tiny = UScoreSettings {
            max_memory: Some(ByteSize(budget_for(fixed + 1) + 1)),
            ..s
        };
        let e = u_scores(&model, &layers, &cal, &tiny, Progress::QUIET)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("max-memory: ") && e.contains(&layers[0].name) && !e.contains("--"),
            "{e}"
        );
    }
    assert!(any_split, "no layer was split by units");
}

/// With summaries much larger than the forward passes' memory, the spilled summaries are
/// read back in several passes, some starting in the middle of a layer's blocks: the scores
/// are those of one pass, bit for bit, from one forward pass per class.
#[test]
fn spilled_summaries_read_back_in_several_passes_give_the_single_pass_scores() {
    use fair_scoring::memory::{budget_for, forward_once, plan};
    use fair_scoring::{ByteSize, u_scores_measured};
    let g = fair_zoo::build("resnet20", &[3, 8, 8], 5).unwrap();
    let model = Model::new(g, Device::Cpu, 0).unwrap();
    fair_testkit::randomise_batchnorm(&model, 1);
    let cal = data(6, 5, &[3, 8, 8], 3);
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    let s = UScoreSettings {
        projections: 64,
        batch_size: 4,
        samples_per_class: 6,
        ..Default::default()
    };
    let (one, _) = u_scores(&model, &layers, &cal, &s, Progress::QUIET).unwrap();
    let graph = model.graph();
    let (mem, fixed, held) = planner_inputs(&model, &layers, &cal, 64, &[6; 5]);
    let all = plan(graph, &layers, &mem, 4, fixed, None).unwrap();
    // Room for the forward passes and a sixth of the summaries.
    let budget = budget_for(fixed + (all.unbounded - held) + held / 6);
    let once = forward_once(graph, &layers, &mem, 4, fixed, Some(budget)).unwrap();
    assert_eq!(once.forwards.len(), 1, "{once:?}");
    assert!(once.spilled.len() >= 2, "{once:?}");
    let resident_end = |l: usize| {
        once.resident
            .iter()
            .find(|s| s.layer == l)
            .map_or(0, |s| s.units.end)
    };
    assert!(
        once.spilled
            .iter()
            .flat_map(|c| &c.slices)
            .any(|s| s.units.start > resident_end(s.layer)),
        "{once:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bounded = UScoreSettings {
        max_memory: Some(ByteSize(budget)),
        spill_dir: Some(fair_scoring::SpillDir::At(dir.path().to_path_buf())),
        ..s
    };
    let run = u_scores_measured(&model, &layers, &cal, &bounded, Progress::QUIET, None).unwrap();
    let bits = |s: &[Vec<f64>]| -> Vec<u64> { s.iter().flatten().map(|v| v.to_bits()).collect() };
    assert!(bits(&run.scores) == bits(&one), "the spilled scores differ");
    assert_eq!((run.passes, run.forwards), (1, 5));
    assert_eq!(run.spilled, once.spill_bytes);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// With one class short, the spilled blocks have different lengths per class: read back,
/// they give the single-pass scores bit for bit, from one forward pass per class.
#[test]
fn spilled_summaries_of_unequal_classes_give_the_single_pass_scores() {
    use fair_scoring::memory::{budget_for, forward_once, plan};
    use fair_scoring::{ByteSize, u_scores_measured};
    let g = fair_zoo::build("resnet20", &[3, 8, 8], 5).unwrap();
    let model = Model::new(g, Device::Cpu, 0).unwrap();
    fair_testkit::randomise_batchnorm(&model, 1);
    // The labels run in class order: the last class keeps 4 of its 6 samples.
    let full = data(6, 5, &[3, 8, 8], 4);
    let (x, y) = full.tensors();
    let cal = Calibration::new(x.narrow(0, 0, 28), &y.narrow(0, 0, 28), "short").unwrap();
    let samples = [6, 6, 6, 6, 4];
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    let s = UScoreSettings {
        projections: 16,
        batch_size: 4,
        samples_per_class: 6,
        ..Default::default()
    };
    let (one, _) = u_scores(&model, &layers, &cal, &s, Progress::QUIET).unwrap();
    let graph = model.graph();
    let (mem, fixed, held) = planner_inputs(&model, &layers, &cal, 16, &samples);
    let all = plan(graph, &layers, &mem, 4, fixed, None).unwrap();
    // Room for the forward passes and a quarter of the summaries.
    let budget = budget_for(fixed + (all.unbounded - held) + held / 4);
    let once = forward_once(graph, &layers, &mem, 4, fixed, Some(budget)).unwrap();
    assert_eq!(once.forwards.len(), 1, "{once:?}");
    assert!(once.spill_bytes > 0, "{once:?}");
    let dir = tempfile::tempdir().unwrap();
    let bounded = UScoreSettings {
        max_memory: Some(ByteSize(budget)),
        spill_dir: Some(fair_scoring::SpillDir::At(dir.path().to_path_buf())),
        ..s
    };
    let run = u_scores_measured(&model, &layers, &cal, &bounded, Progress::QUIET, None).unwrap();
    let bits = |s: &[Vec<f64>]| -> Vec<u64> { s.iter().flatten().map(|v| v.to_bits()).collect() };
    assert!(bits(&run.scores) == bits(&one), "the spilled scores differ");
    assert_eq!((run.passes, run.forwards), (1, 5));
    // Every spilled unit's summaries of all classes: 4 bytes a value, 28 samples.
    let units: u64 = once
        .spilled
        .iter()
        .flat_map(|c| &c.slices)
        .map(|sl| (sl.units.len() * if layers[sl.layer].conv { 16 } else { 1 }) as u64)
        .sum();
    assert_eq!(run.spilled, 4 * 28 * units);
    assert!(
        run.notes
            .iter()
            .any(|n| n.contains("forward pass ran once")),
        "{:?}",
        run.notes
    );
}

/// Where one class's taps of all layers do not fit together, the layers are grouped into
/// several forward passes per class (each re-run up to its group's last layer) and the
/// summaries still spilled: the scores are those of one pass, bit for bit.
#[test]
fn forward_groups_when_the_taps_do_not_fit_give_the_single_pass_scores() {
    use fair_scoring::memory::{budget_for, forward_once, plan};
    use fair_scoring::{ByteSize, u_scores_measured};
    let g = fair_zoo::build("vgg11_bn_cifar", &[3, 32, 32], 3).unwrap();
    let model = Model::new(g, Device::Cpu, 0).unwrap();
    fair_testkit::randomise_batchnorm(&model, 1);
    let cal = data(4, 3, &[3, 32, 32], 2);
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    let s = UScoreSettings {
        projections: 4,
        batch_size: 4,
        samples_per_class: 4,
        ..Default::default()
    };
    let (one, _) = u_scores(&model, &layers, &cal, &s, Progress::QUIET).unwrap();
    let graph = model.graph();
    let (mem, fixed, _) = planner_inputs(&model, &layers, &cal, 4, &[4; 3]);
    // The smallest room (in steps of 1/64) that plan() accepts while the taps need groups.
    let (budget, once) = (1..=256u64)
        .map(|i| {
            let room = fixed / 64 * i;
            budget_for(fixed + room)
        })
        .filter(|&b| plan(graph, &layers, &mem, 4, fixed, Some(b)).is_ok())
        .find_map(|b| {
            forward_once(graph, &layers, &mem, 4, fixed, Some(b))
                .filter(|o| o.forwards.len() >= 2)
                .map(|o| (b, o))
        })
        .expect("a bound that needs forward groups");
    let dir = tempfile::tempdir().unwrap();
    let bounded = UScoreSettings {
        max_memory: Some(ByteSize(budget)),
        spill_dir: Some(fair_scoring::SpillDir::At(dir.path().to_path_buf())),
        ..s
    };
    let run = u_scores_measured(&model, &layers, &cal, &bounded, Progress::QUIET, None).unwrap();
    let bits = |s: &[Vec<f64>]| -> Vec<u64> { s.iter().flatten().map(|v| v.to_bits()).collect() };
    assert!(bits(&run.scores) == bits(&one), "the grouped scores differ");
    assert_eq!(run.passes, once.forwards.len());
    assert_eq!(run.forwards, 3 * once.forwards.len());
    assert!(run.profile.forward_again > 0.0);
    assert!(
        run.notes
            .iter()
            .any(|n| n.contains(&format!("ran {} times", once.forwards.len()))),
        "{:?}",
        run.notes
    );
    // The note says what does not fit: the summaries where some were spilled, else the taps.
    let said = if run.spilled > 0 {
        "summaries do not fit"
    } else {
        "taps of all layers do not fit"
    };
    assert!(
        run.notes
            .iter()
            .any(|n| n.contains(said) && n.ends_with("of one pass, bit for bit")),
        "{:?}",
        run.notes
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// The device engine (here run on the CPU) computes the host engine's scores, in f32:
/// agreement to 1e-5 relative on a sliced ResNet and on pooled and linear layers; unequal
/// class sizes fall back to the host with a note.
#[test]
fn device_engine_matches_the_host_engine() {
    use fair_scoring::{ByteSize, Engine};
    let g = fair_zoo::build("vgg11_bn_cifar", &[3, 32, 32], 4).unwrap();
    let vgg = Model::new(g, Device::Cpu, 0).unwrap();
    fair_testkit::randomise_batchnorm(&vgg, 2);
    let g = fair_zoo::build("resnet20", &[3, 8, 8], 4).unwrap();
    let resnet = Model::new(g, Device::Cpu, 0).unwrap();
    for (model, input, conv) in [
        (&resnet, [3i64, 8, 8], ConvDistance::Sliced),
        (&vgg, [3, 32, 32], ConvDistance::Pooled),
    ] {
        let cal = data(6, 4, &input, 5);
        let layers = prunable_layers(model.graph(), AnalysisPoint::AfterActivation);
        let host = UScoreSettings {
            conv,
            projections: 16,
            samples_per_class: 6,
            engine: Engine::Host,
            ..Default::default()
        };
        let device = UScoreSettings {
            engine: Engine::Device,
            ..host.clone()
        };
        let (h, _) = u_scores(model, &layers, &cal, &host, Progress::QUIET).unwrap();
        let (d, notes) = u_scores(model, &layers, &cal, &device, Progress::QUIET).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        let worst = h
            .iter()
            .flatten()
            .zip(d.iter().flatten())
            .map(|(a, b)| (a - b).abs() / a.abs().max(1e-12))
            .fold(0.0f64, f64::max);
        assert!(
            worst < 1e-5,
            "{}: relative difference {worst:e}",
            model.graph().name()
        );
        assert!(h.iter().flatten().any(|&v| v > 0.0));

        // Split into passes, with summaries spilled, the device engine gives its own
        // one-pass scores.
        let p = if conv == ConvDistance::Sliced { 16 } else { 1 };
        let dir = tempfile::tempdir().unwrap();
        let bounded = UScoreSettings {
            max_memory: Some(ByteSize(tight_budget(model, &layers, &cal, p, 6, 256))),
            spill_dir: Some(fair_scoring::SpillDir::At(dir.path().to_path_buf())),
            ..device.clone()
        };
        // Libtorch's f32 reductions may round differently on the narrower tensors of a
        // pass (the host engine is bit-identical; see the test above).
        let run =
            fair_scoring::u_scores_measured(model, &layers, &cal, &bounded, Progress::QUIET, None)
                .unwrap();
        let (b, notes) = (run.scores, run.notes);
        assert!(run.spilled > 0, "{}: nothing spilled", model.graph().name());
        assert_eq!(run.passes, 1, "{}", model.graph().name());
        let worst = b
            .iter()
            .flatten()
            .zip(d.iter().flatten())
            .map(|(a, b)| (a - b).abs() / a.abs().max(1e-12))
            .fold(0.0f64, f64::max);
        assert!(worst < 1e-6, "{}: {worst:e}", model.graph().name());
        assert!(
            notes
                .iter()
                .any(|n| n.contains("passes") && n.ends_with("device engine's f32 rounding")),
            "{notes:?}"
        );
    }
    // Unequal class sizes: the host computes them, and a note says so.
    let mut cal = data(6, 4, &[3, 8, 8], 5);
    let (x, y) = cal.tensors();
    cal = Calibration::new(x.narrow(0, 0, 23), &y.narrow(0, 0, 23), "short").unwrap();
    let layers = prunable_layers(resnet.graph(), AnalysisPoint::LayerOutput);
    let s = UScoreSettings {
        projections: 4,
        samples_per_class: 6,
        engine: Engine::Device,
        ..Default::default()
    };
    let (_, notes) = u_scores(&resnet, &layers, &cal, &s, Progress::QUIET).unwrap();
    assert!(notes.iter().any(|n| n.contains("on the host")), "{notes:?}");
}

/// The bounded pair search gives the all-pairs scores bit for bit: on a sliced ResNet, on
/// pooled conv channels and on linear units, with more classes than pairs are cheap for,
/// and with unequal class sizes (where it evaluates all pairs).
#[test]
fn bounded_pair_search_gives_the_all_pairs_scores() {
    use fair_scoring::{Engine, PairSearch};
    let g = fair_zoo::build("resnet20", &[3, 8, 8], 4).unwrap();
    let resnet = Model::new(g, Device::Cpu, 0).unwrap();
    fair_testkit::randomise_batchnorm(&resnet, 3);
    let bits = |s: &[Vec<f64>]| -> Vec<u64> { s.iter().flatten().map(|v| v.to_bits()).collect() };
    let full = data(5, 14, &[3, 8, 8], 9);
    let (x, y) = full.tensors();
    let short = Calibration::new(x.narrow(0, 0, 67), &y.narrow(0, 0, 67), "short").unwrap();
    for (cal, conv) in [
        (&full, ConvDistance::Sliced),
        (&full, ConvDistance::Pooled),
        (&short, ConvDistance::Sliced),
    ] {
        let all = UScoreSettings {
            conv,
            projections: 12,
            samples_per_class: 5,
            max_classes: 14,
            engine: Engine::Host,
            pair_search: PairSearch::All,
            ..Default::default()
        };
        let bounded = UScoreSettings {
            pair_search: PairSearch::Bounded,
            ..all.clone()
        };
        for point in [AnalysisPoint::LayerOutput, AnalysisPoint::AfterActivation] {
            let layers = prunable_layers(resnet.graph(), point);
            let (a, notes_a) = u_scores(&resnet, &layers, cal, &all, Progress::QUIET).unwrap();
            let (b, notes_b) = u_scores(&resnet, &layers, cal, &bounded, Progress::QUIET).unwrap();
            assert_eq!(bits(&a), bits(&b), "{conv:?} {point:?}");
            // Besides the notes of `all`, the bounded search says when it computed every
            // pair (classes of unequal sizes).
            let fallback = |n: &&String| n.contains("bounded class-pair search");
            assert!(!notes_a.iter().any(|n| fallback(&n)), "{notes_a:?}");
            let kept: Vec<&String> = notes_b.iter().filter(|n| !fallback(n)).collect();
            assert_eq!(notes_a.iter().collect::<Vec<_>>(), kept);
            assert!(a.iter().flatten().any(|&v| v > 0.0));
        }
    }
    assert_eq!(PairSearch::default(), PairSearch::Bounded);
    assert_eq!("all".parse::<PairSearch>(), Ok(PairSearch::All));
    assert_eq!(PairSearch::Bounded.to_string(), "bounded");
}

/// Timing of the host engine's U-Score with all pairs and with the bounded search, on
/// resnet20 (8×8 inputs, random weights) and class-structured synthetic data: each class
/// is a random pattern (N(0, 0.5²) per input value) plus N(0, 1) noise per sample. Prints
/// one line per configuration; the scores must be identical. Run with
/// `cargo test --release -p fair-scoring --test scoring -- --ignored --nocapture pair_search_timing`.
#[test]
#[ignore = "a timing run (seconds to minutes), not a check"]
fn pair_search_timing() {
    use fair_scoring::{Engine, PairSearch};
    // One libtorch thread: its idle threads spin, which inflates the CPU time.
    tch::set_num_threads(1);
    let g = fair_zoo::build("resnet20", &[3, 8, 8], 100).unwrap();
    let model = Model::new(g, Device::Cpu, 0).unwrap();
    fair_testkit::randomise_batchnorm(&model, 1);
    let layers = prunable_layers(model.graph(), AnalysisPoint::AfterActivation);
    for (classes, n) in [(100i64, 8i64), (100, 32)] {
        tch::manual_seed(classes * 1000 + n);
        let patterns = Tensor::randn([classes, 3, 8, 8], (Kind::Float, Device::Cpu)) * 0.5;
        let labels = Tensor::arange(classes, (Kind::Int64, Device::Cpu))
            .repeat_interleave_self_int(n, 0, None);
        let x = patterns.index_select(0, &labels)
            + Tensor::randn([classes * n, 3, 8, 8], (Kind::Float, Device::Cpu));
        let cal = Calibration::new(x, &labels, "patterns").unwrap();
        // CPU seconds of the process (Linux; robust to other processes on the cores).
        let cpu = || -> f64 {
            let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
            let after = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
            let f: Vec<f64> = after
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0.0))
                .collect();
            f.get(11)
                .zip(f.get(12))
                .map_or(0.0, |(u, s)| (u + s) / 100.0)
        };
        let mut times = Vec::new();
        let mut cpus = Vec::new();
        let mut scores = Vec::new();
        for search in [PairSearch::All, PairSearch::Bounded] {
            let s = UScoreSettings {
                samples_per_class: n as usize,
                max_classes: classes as usize,
                engine: Engine::Host,
                pair_search: search,
                ..Default::default()
            };
            let (t, c) = (std::time::Instant::now(), cpu());
            let (u, _) = u_scores(&model, &layers, &cal, &s, Progress::QUIET).unwrap();
            times.push(t.elapsed().as_secs_f64());
            cpus.push(cpu() - c);
            scores.push(
                u.into_iter()
                    .flatten()
                    .map(f64::to_bits)
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(scores[0], scores[1], "{classes} × {n}");
        println!(
            "resnet20 8×8, {classes} classes × {n}, {} units, P = 128: all {:.2} s ({:.2} s CPU), \
             bounded {:.2} s ({:.2} s CPU): {:.1}× ({:.1}× CPU)",
            layers.iter().map(|l| l.units).sum::<usize>(),
            times[0],
            cpus[0],
            times[1],
            cpus[1],
            times[0] / times[1],
            cpus[0] / cpus[1].max(0.01)
        );
    }
}

/// The R-Score's memory estimate, computed by hand for a small MLP (input 1×6×6, hidden 10
/// and 7, 3 classes): nodes input 36, flatten 36, layers.0 10, layers.1 10, layers.2 7,
/// layers.3 7, layers.4 3 numbers per sample; 471 parameters; 24 samples of 36 numbers.
#[test]
fn r_score_memory_estimate_by_hand() {
    use fair_scoring::RScoreMemory;
    let model = mlp();
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    assert_eq!(model.graph().param_count(), 471);
    let m = RScoreMemory::of(model.graph(), &layers, 24, 36).unwrap();
    // A = 4·(36+36+10+10+7+7+3) + 4·3 (log-softmax) = 448; G = 4·(10+7) = 68;
    // B = 2·4·72 (widest cut: input and flatten) = 576; D = 24·10 = 240.
    assert_eq!(m.per_sample, 448 + 68 + 576 + 240);
    // 2·4·471 (parameters and transient gradients) + 4·24·36 (inputs) + 8·24 (labels).
    assert_eq!(m.fixed, 3768 + 3456 + 192);
    assert_eq!(m.peak(3), 7416 + 3 * 1332);
    // 20000 − 2000 (runtime share) − 7416 = 10584 = 7.9 samples.
    assert_eq!(m.batch(10, Some(20_000)), Some(7));
    assert_eq!(m.batch(5, Some(20_000)), Some(5));
    assert_eq!(m.batch(10, None), Some(10));
    // 9000 − 900 − 7416 = 684 < 1332: not one sample; 8000 − 800 < 7416: not the data.
    assert_eq!(m.batch(10, Some(9_000)), None);
    assert_eq!(m.batch(10, Some(8_000)), None);
}

/// Under a memory bound the R-Score runs each batch in pieces, each piece's loss divided by
/// the batch's size: the same scores as whole batches up to float rounding, with a note; a
/// bound that holds no sample is an error naming `max-memory` and the model. The rounding
/// is that of the f64 sums' order and, on CPUs where libtorch's f32 kernels round a sample
/// differently with the batch it runs in (as the U-Score's packed forward passes show), of
/// the activations: bit-identical on the MLP on an AVX2 machine, 2e-8 of the largest score
/// on an AVX-512 one; tested at 1e-6.
#[test]
fn bounded_memory_r_scores_equal_whole_batches() {
    use fair_scoring::{ByteSize, RScoreMemory};
    let model = mlp();
    let cal = data(8, 3, &[1, 6, 6], 0);
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    let memory = RScoreMemory::of(model.graph(), &layers, cal.len(), cal.sample_numel()).unwrap();
    for mode in [RMode::Eval, RMode::Train] {
        let whole = RScoreSettings {
            mode,
            batch_size: 10,
            ..Default::default()
        };
        let (one, notes) = r_scores(&model, &layers, &cal, &whole, Progress::QUIET).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        // The batches of 10, 10 and 4 run in pieces of 7 + 3, 7 + 3 and 4.
        let bounded = RScoreSettings {
            max_memory: Some(ByteSize(20_000)),
            ..whole.clone()
        };
        assert_eq!(memory.batch(10, Some(20_000)), Some(7));
        let (pieces, notes) = r_scores(&model, &layers, &cal, &bounded, Progress::QUIET).unwrap();
        assert!(
            notes.len() == 1
                && notes[0].contains("pieces of 7")
                && notes[0].contains("`max-memory`")
                && notes[0].contains("up to float rounding"),
            "{notes:?}"
        );
        let scale = one.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
        for (a, b) in one.iter().flatten().zip(pieces.iter().flatten()) {
            assert!((a - b).abs() <= 1e-6 * scale, "{mode:?}: {a} vs {b}");
        }
        assert_ne!(one, vec![vec![0.0; 10], vec![0.0; 7]]);

        let tiny = RScoreSettings {
            max_memory: Some(ByteSize(9_000)),
            ..whole
        };
        let e = r_scores(&model, &layers, &cal, &tiny, Progress::QUIET)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("max-memory: ") && e.contains("'mlp'") && !e.contains("--"),
            "{e}"
        );
    }

    // In training mode with BatchNorm, the pieces' batch statistics differ: the note says so.
    let g = fair_zoo::build("vgg_compact", &[1, 16, 16], 3).unwrap();
    let vgg = Model::new(g, Device::Cpu, 0).unwrap();
    let cal = data(4, 3, &[1, 16, 16], 1);
    let layers = prunable_layers(vgg.graph(), AnalysisPoint::LayerOutput);
    let memory = RScoreMemory::of(vgg.graph(), &layers, cal.len(), cal.sample_numel()).unwrap();
    let budget = (memory.peak(2) + memory.per_sample / 2) * 10 / 9 + 10;
    assert_eq!(memory.batch(8, Some(budget)), Some(2));
    let s = RScoreSettings {
        batch_size: 8,
        max_memory: Some(ByteSize(budget)),
        ..Default::default()
    };
    let (_, notes) = r_scores(&vgg, &layers, &cal, &s, Progress::QUIET).unwrap();
    assert!(
        notes.len() == 1 && notes[0].contains("pieces of 2") && notes[0].contains("BatchNorm"),
        "{notes:?}"
    );
    // In eval mode the convolutions' pieces give the whole batches' scores.
    fair_testkit::randomise_batchnorm(&vgg, 2);
    let whole = RScoreSettings {
        mode: RMode::Eval,
        max_memory: None,
        ..s.clone()
    };
    let (one, _) = r_scores(&vgg, &layers, &cal, &whole, Progress::QUIET).unwrap();
    let (pieces, notes) = r_scores(
        &vgg,
        &layers,
        &cal,
        &RScoreSettings {
            mode: RMode::Eval,
            ..s
        },
        Progress::QUIET,
    )
    .unwrap();
    assert!(notes[0].contains("up to float rounding"), "{notes:?}");
    // Up to the batch-dependent f32 rounding of the convolutions (see above).
    let scale = one.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    for (a, b) in one.iter().flatten().zip(pieces.iter().flatten()) {
        assert!((a - b).abs() <= 1e-5 * scale, "{a} vs {b}");
    }
}

/// Calibration data whose class `k` has `sizes[k]` samples (from [`data`], class-shifted).
fn unequal_data(sizes: &[usize], shape: &[i64], seed: i64) -> Calibration {
    let most = *sizes.iter().max().unwrap() as i64;
    let full = data(most, sizes.len() as i64, shape, seed);
    let (x, y) = full.tensors();
    let keep: Vec<i64> = sizes
        .iter()
        .enumerate()
        .flat_map(|(k, &n)| (0..n as i64).map(move |i| k as i64 * most + i))
        .collect();
    let keep = Tensor::from_slice(&keep);
    Calibration::new(
        x.index_select(0, &keep),
        &y.index_select(0, &keep),
        "unequal",
    )
    .unwrap()
}

/// Compares two U-Score runs' scores: they agree to f32 rounding of the activations (within
/// 1e-5 of each layer's largest score; a class's rows taken from the wrong place in a pack
/// would differ entirely). Prints how many differ in some bit and by how much.
fn assert_close(what: &str, reference: &[Vec<f64>], scores: &[Vec<f64>]) {
    let (mut differ, mut worst, mut worst_of_layer) = (0, 0.0f64, 0.0f64);
    for (l, (x, y)) in reference.iter().zip(scores).enumerate() {
        let scale = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (u, (a, b)) in x.iter().zip(y).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "{what}, layer {l} unit {u}: {a} vs {b}"
            );
            differ += usize::from(a.to_bits() != b.to_bits());
            worst = worst.max((a - b).abs());
            worst_of_layer = worst_of_layer.max((a - b).abs() / scale);
        }
    }
    let all = reference.iter().flatten().count();
    eprintln!(
        "{what}: {differ} of {all} scores differ in some bit, by at most {worst:e} \
         ({worst_of_layer:e} of the layer's largest score)"
    );
}

/// Consecutive classes share forward batches (whole classes, up to `batch_size` samples; a
/// class larger than a batch runs alone in several). libtorch's CPU kernels round a sample's
/// activations differently in the last bits with the batch it runs in, so the scores are
/// compared to f32 rounding: on classes of unequal sizes that do not divide the batch, with
/// those of forwarding every sample alone (batch size 1, where nothing is packed), and on
/// classes of equal sizes with the per-class path (a batch the size of a class, where
/// nothing is packed either: each class's samples are one batch, as they were before
/// classes were packed). The batches run are those of the packing.
#[test]
fn packed_forward_passes_give_the_scores_of_one_sample_at_a_time() {
    use fair_scoring::u_scores_measured;
    // Packs at batch size 3: [2, 1], [5] (2 batches), [3], [1, 1], [4] (2 batches): 7
    // batches; at 8: [2, 1, 5], [3, 1, 1], [4]: 3; at 64: all 17 samples in one.
    let sizes = [2, 1, 5, 3, 1, 1, 4];
    let cases: [(&str, AnalysisPoint, &[i64]); 3] = [
        ("resnet20", AnalysisPoint::AfterActivation, &[3, 8, 8]),
        ("vgg11_bn_cifar", AnalysisPoint::LayerOutput, &[3, 32, 32]),
        ("mlp", AnalysisPoint::LayerOutput, &[1, 8, 8]),
    ];
    for (zoo, point, input) in cases {
        let shape: Vec<usize> = input.iter().map(|&d| d as usize).collect();
        let g = fair_zoo::build(zoo, &shape, sizes.len()).unwrap();
        let model = Model::new(g, Device::Cpu, 0).unwrap();
        fair_testkit::randomise_batchnorm(&model, 1);
        let layers = prunable_layers(model.graph(), point);
        let run = |cal: &Calibration, batch_size: usize| {
            let s = UScoreSettings {
                projections: 8,
                batch_size,
                samples_per_class: 5,
                ..Default::default()
            };
            u_scores_measured(&model, &layers, cal, &s, Progress::QUIET, None).unwrap()
        };
        let cal = unequal_data(&sizes, input, 5);
        let alone = run(&cal, 1);
        assert_eq!((alone.forwards, alone.batches), (7, 17), "{zoo}");
        assert!(
            alone.scores.iter().flatten().all(|v| v.is_finite()),
            "{zoo}"
        );
        for (batch_size, batches) in [(3, 7), (8, 3), (64, 1)] {
            let packed = run(&cal, batch_size);
            assert_eq!(
                (packed.forwards, packed.batches),
                (7, batches),
                "{zoo} at batch size {batch_size}"
            );
            let what = format!("{zoo}, unequal classes, batch size {batch_size} against 1");
            assert_close(&what, &alone.scores, &packed.scores);
        }
        // Equal classes of 5: at batch size 5 each class is its own batch (the per-class
        // path), at 64 all 7 share one.
        let cal = data(5, sizes.len() as i64, input, 6);
        let per_class = run(&cal, 5);
        let packed = run(&cal, 64);
        assert_eq!((per_class.batches, packed.batches), (7, 1), "{zoo}");
        let what = format!("{zoo}, classes of 5, packed against per class");
        assert_close(&what, &per_class.scores, &packed.scores);
    }
}

/// A memory bound that holds one class's forward pass but not several classes' together:
/// each class runs alone (as before classes were packed), with a note and the narrowed
/// packs recorded, and the scores are those of an unbounded run whose batch size makes
/// every class its own batch, bit for bit.
#[test]
fn a_bound_too_small_for_packed_classes_runs_each_class_alone() {
    use fair_scoring::{ByteSize, u_scores_measured};
    let g = fair_zoo::build("vgg11_bn_cifar", &[3, 32, 32], 5).unwrap();
    let model = Model::new(g, Device::Cpu, 0).unwrap();
    fair_testkit::randomise_batchnorm(&model, 1);
    let cal = data(4, 5, &[3, 32, 32], 7);
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    let s = UScoreSettings {
        projections: 4,
        batch_size: 64,
        samples_per_class: 4,
        ..Default::default()
    };
    let packed = u_scores_measured(&model, &layers, &cal, &s, Progress::QUIET, None).unwrap();
    assert_eq!((packed.forwards, packed.batches), (5, 1));
    // Batches of 4: every class (4 samples) its own batch, as each class alone runs.
    let alone = UScoreSettings {
        batch_size: 4,
        ..s.clone()
    };
    let free = u_scores_measured(&model, &layers, &cal, &alone, Progress::QUIET, None).unwrap();
    assert_eq!((free.forwards, free.batches), (5, 5));
    assert!(free.narrowed_packs.is_empty());
    // A fixed room, found once with `memory::plan` over budgets in steps of 1/64 of the
    // model's and data's bytes (the smallest bound that planned each class alone was
    // 46,436,467 bytes when plans left a tenth of it; packs of 8, 16 or 20 samples did not
    // fit it): the room 46,500,000 bytes left then, as a bound of today's plans.
    const ROOM: u64 = 46_500_000 - 46_500_000 / 10;
    let bound = fair_scoring::memory::budget_for(ROOM);
    let dir = tempfile::tempdir().unwrap();
    let bounded = UScoreSettings {
        max_memory: Some(ByteSize(bound)),
        spill_dir: Some(fair_scoring::SpillDir::At(dir.path().to_path_buf())),
        ..s
    };
    let run = u_scores_measured(&model, &layers, &cal, &bounded, Progress::QUIET, None).unwrap();
    assert_eq!(
        (run.forwards, run.batches),
        (5 * run.passes, 5 * run.passes)
    );
    assert!(
        run.notes
            .iter()
            .any(|n| n.contains("each class ran its own forward pass")),
        "{:?}",
        run.notes
    );
    let narrowed: Vec<(String, usize)> = layers.iter().map(|l| (l.name.clone(), 0)).collect();
    assert_eq!(run.narrowed_packs, narrowed);
    let bits = |s: &[Vec<f64>]| -> Vec<u64> { s.iter().flatten().map(|v| v.to_bits()).collect() };
    assert!(
        bits(&run.scores) == bits(&free.scores),
        "each class alone under the bound differs from batches of one class"
    );

    // With the BatchNorm drift each layer runs in its own pass on a second copy of the
    // parameters (the bound raised by their bytes and the runtime's share): the note names
    // the layers whose packs the bound narrowed, as the record does.
    let params = 4 * model.graph().param_count() as u64;
    let drifting = UScoreSettings {
        bn_drift: Some(fair_scoring::BnDrift { batch_size: 20 }),
        max_memory: Some(ByteSize(fair_scoring::memory::budget_for(ROOM + params))),
        ..bounded.clone()
    };
    let run = u_scores_measured(&model, &layers, &cal, &drifting, Progress::QUIET, None).unwrap();
    assert!(!run.narrowed_packs.is_empty(), "{:?}", run.notes);
    for (layer, _) in &run.narrowed_packs {
        assert!(
            run.notes
                .iter()
                .any(|n| n.contains("forward passes of layer") && n.contains(&format!("'{layer}'"))),
            "{layer}: {:?}",
            run.notes
        );
    }
    // The score file records the narrowed packs: the bound is no setting, so without the
    // record an unbounded run (same settings) would reuse these scores.
    let criteria: Vec<Box<dyn fair_scoring::Criterion>> =
        vec![Box::new(fair_scoring::UScore(bounded.clone()))];
    let file = fair_scoring::score(&model, Some(&cal), &criteria, Progress::QUIET).unwrap();
    let recorded = &file.provenance.criteria["u"].settings;
    assert_eq!(recorded["narrowed_packs"][layers[0].name.as_str()], 0);
    let unbounded: Vec<Box<dyn fair_scoring::Criterion>> =
        vec![Box::new(fair_scoring::UScore(UScoreSettings {
            max_memory: None,
            ..bounded
        }))];
    let model_digest = fair_scoring::model_digest(&model).unwrap();
    let data_digest = cal.digest().unwrap();
    assert!(!fair_scoring::reusable(
        &file,
        &model_digest,
        &data_digest,
        &unbounded
    ));
    // Packs the bound left alone are not recorded: such scores are reused.
    let free_file = fair_scoring::score(&model, Some(&cal), &unbounded, Progress::QUIET).unwrap();
    assert!(
        free_file.provenance.criteria["u"]
            .settings
            .get("narrowed_packs")
            .is_none()
    );
    assert!(fair_scoring::reusable(
        &free_file,
        &model_digest,
        &data_digest,
        &unbounded
    ));
}

#[test]
fn non_finite_activations_name_the_layer_and_class() {
    // Weights are checked when a model is loaded; activations can still turn NaN or
    // infinite, or overflow, inside the network. Each is refused naming the first layer
    // whose output holds such values and the class, whether the class's samples ran as one
    // batch or several.
    let cal = data(4, 3, &[1, 6, 6], 2);
    // (tensor of the second layer, value, whether that layer's own output is non-finite
    // for every input: a NaN weight or an infinite bias is; a huge weight overflows there
    // or in a later layer, depending on the data).
    let cases = [
        ("weight", f64::NAN, true),
        ("bias", f64::INFINITY, true),
        ("weight", 1e38, false),
    ];
    for (tensor, value, exact) in cases {
        for batch_size in [64, 3] {
            let model = mlp();
            let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
            let second = &layers[1];
            tch::no_grad(|| {
                let mut w = model
                    .tensor(&format!("{}.{tensor}", second.name))
                    .unwrap()
                    .shallow_clone();
                let _ = w.fill_(value);
            });
            let settings = UScoreSettings {
                batch_size,
                ..UScoreSettings::default()
            };
            let e = u_scores(&model, &layers, &cal, &settings, Progress::QUIET)
                .unwrap_err()
                .to_string();
            let what = format!("{tensor} {value} {batch_size}: {e}");
            assert!(e.contains("NaN or infinite values for class"), "{what}");
            assert!(
                !e.contains(&format!("layer '{}'", layers[0].name)),
                "{what}"
            );
            if exact {
                assert!(
                    e.contains("for class 0") && e.contains(&format!("layer '{}'", second.name)),
                    "{what}"
                );
            }
        }
    }
}

/// A class in the middle of a packed forward batch whose activations overflow is named,
/// with the first layer whose output holds them, however the classes are packed (all in one
/// batch, or one class at a time in several).
#[test]
fn non_finite_activations_of_one_packed_class_name_that_class() {
    let cal = data(4, 3, &[1, 6, 6], 2);
    let (x, y) = cal.tensors();
    let model = mlp();
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    // With the first layer's weights scaled by 1e30, its outputs are finite for inputs of
    // about 1 and overflow for class 1's, scaled by 1e10.
    tch::no_grad(|| {
        let mut w = model
            .tensor(&format!("{}.weight", layers[0].name))
            .unwrap()
            .shallow_clone();
        let _ = w.g_mul_scalar_(1e30);
    });
    let is_one = y.eq(1).view([-1, 1, 1, 1]);
    let cal = Calibration::new((&x * 1e10).where_self(&is_one, &x), &y, "overflow").unwrap();
    // One pack of 12; packs [0, 1] and [2] (class 1 last in its pack); each class alone.
    for batch_size in [64, 8, 3] {
        let settings = UScoreSettings {
            batch_size,
            ..UScoreSettings::default()
        };
        let e = u_scores(&model, &layers, &cal, &settings, Progress::QUIET)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("NaN or infinite values for class 1")
                && e.contains(&format!("layer '{}'", layers[0].name)),
            "batch size {batch_size}: {e}"
        );
    }
}

/// Where an earlier class's taps turn infinite at a later layer and a later class's at an
/// earlier layer, the error names the earlier class and its layer, as checking one class at
/// a time would, packed or not.
#[test]
fn non_finite_activations_name_the_first_class_before_the_first_layer() {
    let cal = data(4, 3, &[1, 6, 6], 2);
    let (x, y) = cal.tensors();
    let model = mlp();
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    assert!(layers.len() >= 2);
    // The first layer's weights scaled by 1e10 and the second's by 1e30: inputs of about 1
    // give the first layer's outputs about 1e10 (finite) and the second's about 1e40
    // (infinite in f32); class 1's inputs, scaled by 1e30, overflow the first layer already.
    tch::no_grad(|| {
        for (layer, by) in [(&layers[0], 1e10), (&layers[1], 1e30)] {
            let mut w = model
                .tensor(&format!("{}.weight", layer.name))
                .unwrap()
                .shallow_clone();
            let _ = w.g_mul_scalar_(by);
        }
    });
    let is_one = y.eq(1).view([-1, 1, 1, 1]);
    let cal = Calibration::new((&x * 1e30).where_self(&is_one, &x), &y, "overflow").unwrap();
    // As set up: class 0 finite at the first layer, not at the second; class 1 not at the
    // first.
    let finite_at = |class: i64, layer: &str| {
        let idx = &cal.class_indices()[&class];
        let out = tch::no_grad(|| model.forward_with_taps(&cal.select(idx), Mode::Eval, &[layer]))
            .unwrap();
        out.taps[layer].isfinite().all().int64_value(&[]) == 1
    };
    assert!(finite_at(0, &layers[0].name) && !finite_at(0, &layers[1].name));
    assert!(!finite_at(1, &layers[0].name));
    for batch_size in [64, 8, 3] {
        let settings = UScoreSettings {
            batch_size,
            ..UScoreSettings::default()
        };
        let e = u_scores(&model, &layers, &cal, &settings, Progress::QUIET)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("NaN or infinite values for class 0")
                && e.contains(&format!("layer '{}'", layers[1].name)),
            "batch size {batch_size}: {e}"
        );
    }
}

/// The zoo's token MLP on 1×8×8 (4 tokens of 32 features, 64 hidden neurons), 3 classes.
fn token_mlp() -> Model {
    let g = fair_zoo::build("token_mlp", &[1, 8, 8], 3).unwrap();
    Model::new(g, Device::Cpu, 2).unwrap()
}

#[test]
fn token_layer_u_score_is_the_exact_w1_of_the_token_pooled_outputs() {
    let model = token_mlp();
    let cal = data(9, 3, &[1, 8, 8], 4);
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    let (u, _) = u_scores(
        &model,
        &layers,
        &cal,
        &UScoreSettings {
            samples_per_class: 9,
            ..Default::default()
        },
        Progress::QUIET,
    )
    .unwrap();
    let mut checked = 0;
    for (l, layer) in layers.iter().enumerate() {
        if model.graph().shape(&layer.name).unwrap().len() != 2 {
            continue; // the patch embedding
        }
        // Independent path: each class's tapped [n, T, units], averaged over the tokens.
        let per_class: Vec<Tensor> = cal
            .class_indices()
            .values()
            .map(|idx| {
                let out = tch::no_grad(|| {
                    model.forward_with_taps(&cal.select(idx), Mode::Eval, &[&layer.name])
                })
                .unwrap();
                out.taps[&layer.name]
                    .to_kind(Kind::Double)
                    .mean_dim(1, false, Kind::Double)
            })
            .collect();
        assert_eq!(
            u[l].len(),
            per_class[0].size()[1] as usize,
            "{}",
            layer.name
        );
        for (unit, &score) in u[l].iter().enumerate() {
            let col = |t: &Tensor| Vec::<f64>::try_from(t.select(1, unit as i64)).unwrap();
            let mut best = 0.0f64;
            for a in 0..3 {
                for b in a + 1..3 {
                    best = best.max(
                        fair_stats::wasserstein_1d(&col(&per_class[a]), &col(&per_class[b]))
                            .unwrap(),
                    );
                }
            }
            assert!(
                (score - best).abs() <= 1e-4 * best.max(1e-6),
                "{} unit {unit}: {score} vs {best}",
                layer.name
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 4, "fc1 and fc2 of both blocks");
}

#[test]
fn token_layer_r_score_equals_the_finite_difference_of_the_loss() {
    // Scaling row j of a token linear layer scales unit j of every token.
    let model = token_mlp();
    let cal = data(8, 3, &[1, 8, 8], 5);
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    let settings = RScoreSettings {
        mode: RMode::Eval,
        batch_size: 12,
        seed: 0,
        max_memory: None,
    };
    let (r, _) = r_scores(&model, &layers, &cal, &settings, Progress::QUIET).unwrap();
    let l = layers
        .iter()
        .position(|l| l.name == "blocks.0.fc1")
        .unwrap();
    assert_eq!(r[l].len(), 64);
    // The three units with the largest scores: a finite difference of f32 losses resolves
    // them well (smaller ones drown in the losses' rounding).
    let mut order: Vec<usize> = (0..64).collect();
    order.sort_by(|&a, &b| r[l][b].total_cmp(&r[l][a]));
    for unit in order[..3].iter().map(|&u| u as i64) {
        let fd = finite_difference_r(&model, &cal, 12, "blocks.0.fc1", unit);
        let ours = r[l][unit as usize];
        assert!(
            (ours - fd).abs() <= 2e-3 * fd.max(1e-6),
            "unit {unit}: R = {ours}, finite difference {fd}"
        );
    }
}

/// The zoo's tiny ViT on 1×8×8 (16 tokens of 32 features, 2 blocks of 4 heads of 8), 3
/// classes, with non-zero biases.
fn tiny_vit() -> Model {
    let g = fair_zoo::build("tiny_vit", &[1, 8, 8], 3).unwrap();
    let m = Model::new(g, Device::Cpu, 4).unwrap();
    tch::manual_seed(4);
    tch::no_grad(|| {
        for (n, mut t) in m.named_tensors() {
            if n.ends_with(".bias") {
                t.copy_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.1));
            }
        }
    });
    m
}

#[test]
fn head_u_score_is_the_sliced_w1_of_the_token_pooled_head_outputs() {
    let model = tiny_vit();
    let cal = data(9, 3, &[1, 8, 8], 6);
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    let settings = UScoreSettings {
        samples_per_class: 9,
        projections: 16,
        ..Default::default()
    };
    let (u, _) = u_scores(&model, &layers, &cal, &settings, Progress::QUIET).unwrap();
    let mut checked = 0;
    for b in 0..2 {
        let attend = format!("blocks.{b}.attn.attend");
        let members: Vec<usize> = ["q", "k", "v"]
            .iter()
            .map(|l| {
                let name = format!("blocks.{b}.attn.{l}");
                layers.iter().position(|x| x.name == name).unwrap()
            })
            .collect();
        for &l in &members {
            let h = layers[l].heads.as_ref().unwrap();
            assert_eq!((h.attention.as_str(), h.head_dim), (attend.as_str(), 8));
            assert_eq!(layers[l].analysis, attend);
        }
        // The directions of the first of q, k, v (inputs of the method, not expected values).
        let dirs = fair_scoring::u_directions(&settings, members[0], 8);
        let dirs = Tensor::from_slice(dirs.as_slice().unwrap())
            .reshape([8, 16])
            .to_kind(Kind::Double);
        // Independent path: each class's attention output [n, T, 32] averaged over the
        // tokens, head h's channels 8h..8h+8 projected on the directions: [n, 16].
        let per_class: Vec<Tensor> = cal
            .class_indices()
            .values()
            .map(|idx| {
                let out = tch::no_grad(|| {
                    model.forward_with_taps(&cal.select(idx), Mode::Eval, &[&attend])
                })
                .unwrap();
                out.taps[&attend]
                    .to_kind(Kind::Double)
                    .mean_dim(1, false, Kind::Double)
            })
            .collect();
        for head in 0..4i64 {
            let proj = |t: &Tensor| t.narrow(1, head * 8, 8).matmul(&dirs);
            // Sliced W1 between two classes of equal size: the mean over the directions of
            // the mean |difference| of the sorted projections.
            let w1 = |a: &Tensor, b: &Tensor| -> f64 {
                (0..16)
                    .map(|p| {
                        let mut x = Vec::<f64>::try_from(a.select(1, p)).unwrap();
                        let mut y = Vec::<f64>::try_from(b.select(1, p)).unwrap();
                        x.sort_by(f64::total_cmp);
                        y.sort_by(f64::total_cmp);
                        x.iter().zip(&y).map(|(s, t)| (s - t).abs()).sum::<f64>() / x.len() as f64
                    })
                    .sum::<f64>()
                    / 16.0
            };
            let mut best = 0.0f64;
            for a in 0..3 {
                for c in a + 1..3 {
                    best = best.max(w1(&proj(&per_class[a]), &proj(&per_class[c])));
                }
            }
            assert!(best > 0.0);
            // Every channel of the head, in q, k and v, carries the head's score.
            for &l in &members {
                assert_eq!(u[l].len(), 32);
                let first = head as usize * 8;
                for (c, &score) in u[l].iter().enumerate().skip(first).take(8) {
                    assert!(
                        (score - best).abs() <= 1e-4 * best,
                        "{} channel {c} (head {head}): {score} vs {best}",
                        layers[l].name
                    );
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 8, "4 heads in each of 2 blocks");
    // q, k and v of an attention carry the same scores, bit for bit.
    for b in 0..2 {
        let [q, k, v] = ["q", "k", "v"].map(|l| {
            let name = format!("blocks.{b}.attn.{l}");
            layers.iter().position(|x| x.name == name).unwrap()
        });
        assert_eq!(u[k], u[q], "block {b}");
        assert_eq!(u[v], u[q], "block {b}");
    }
}

/// Scales every parameter of head `head` (8 channels) of block `block` by `f`: q, k and v
/// rows and biases, and the output projection's columns.
fn scale_head(model: &Model, block: usize, head: i64, f: f64) {
    tch::no_grad(|| {
        let p = format!("blocks.{block}.attn");
        for l in ["q", "k", "v"] {
            for suffix in ["weight", "bias"] {
                let mut rows =
                    model
                        .tensor(&format!("{p}.{l}.{suffix}"))
                        .unwrap()
                        .narrow(0, head * 8, 8);
                let _ = rows.g_mul_scalar_(f);
            }
        }
        let mut cols = model
            .tensor(&format!("{p}.proj.weight"))
            .unwrap()
            .narrow(1, head * 8, 8);
        let _ = cols.g_mul_scalar_(f);
    })
}

#[test]
fn head_r_score_equals_the_finite_difference_of_the_loss_under_all_its_parameters() {
    let model = tiny_vit();
    let cal = data(8, 3, &[1, 8, 8], 7);
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    let settings = RScoreSettings {
        mode: RMode::Eval,
        batch_size: 12,
        seed: 0,
        max_memory: None,
    };
    let (r, _) = r_scores(&model, &layers, &cal, &settings, Progress::QUIET).unwrap();
    let loss_sum = || -> f64 {
        cal.batches(12)
            .map(|(x, y)| {
                let logits = model.forward(&x, Mode::Eval).unwrap().to_kind(Kind::Double);
                logits.cross_entropy_for_logits(&y).double_value(&[])
            })
            .sum()
    };
    let index = |name: &str| layers.iter().position(|l| l.name == name).unwrap();
    // Every head's score, from q (k and v carry the same on every channel of the head).
    let mut heads: Vec<(usize, i64, f64)> = Vec::new();
    for b in 0..2 {
        let [q, k, v] = ["q", "k", "v"].map(|l| index(&format!("blocks.{b}.attn.{l}")));
        for h in 0..4i64 {
            let c = h as usize * 8;
            for ch in c..c + 8 {
                assert_eq!(r[k][ch], r[q][c], "block {b} head {h}");
                assert_eq!(r[v][ch], r[q][c], "block {b} head {h}");
                assert_eq!(r[q][ch], r[q][c], "block {b} head {h}");
            }
            heads.push((b, h, r[q][c]));
        }
    }
    // The three largest: a central finite difference of f32 losses resolves them.
    heads.sort_by(|a, b| b.2.total_cmp(&a.2));
    for &(b, h, ours) in &heads[..3] {
        let eps = 1e-2;
        scale_head(&model, b, h, 1.0 + eps);
        let up = loss_sum();
        scale_head(&model, b, h, (1.0 - eps) / (1.0 + eps));
        let down = loss_sum();
        scale_head(&model, b, h, 1.0 / (1.0 - eps));
        let fd = ((up - down) / (2.0 * eps)).abs();
        assert!(
            (ours - fd).abs() <= 2e-3 * fd.max(1e-6),
            "block {b} head {h}: R = {ours}, finite difference {fd}"
        );
    }
}

/// A patch embedding (16 channels) behind which a BatchNorm moves with the drift, its
/// tokens [16, 16], one attention of 4 heads of 4 (q, k, v, proj), the mean over the tokens
/// and a head of 3 classes.
fn bn_attention() -> Model {
    let mut b = fair_ir::GraphBuilder::new("bn_attention", "input", vec![1, 8, 8]);
    b.conv("patch_embed", "input", 16, 2, 2, 0, true).unwrap();
    b.bn2d("bn", "patch_embed").unwrap();
    b.add("tokens", fair_ir::Tokens {}.into(), &["bn"]).unwrap();
    for l in ["q", "k", "v"] {
        b.linear(l, "tokens", 16, true).unwrap();
    }
    b.add(
        "attend",
        fair_ir::Attention::new(4).into(),
        &["q", "k", "v"],
    )
    .unwrap();
    b.linear("proj", "attend", 16, true).unwrap();
    b.add("pool", fair_ir::TokenMean {}.into(), &["proj"])
        .unwrap();
    b.linear("head", "pool", 3, true).unwrap();
    Model::new(b.finish().unwrap(), Device::Cpu, 5).unwrap()
}

#[test]
fn head_u_scores_of_q_k_and_v_are_equal_with_the_batch_norm_drift() {
    let model = bn_attention();
    let cal = data(8, 3, &[1, 8, 8], 8);
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    let index = |name: &str| layers.iter().position(|l| l.name == name).unwrap();
    let [q, k, v] = ["q", "k", "v"].map(index);
    assert!(layers[q].heads.is_some(), "q, k and v are read as heads");
    let drift = UScoreSettings {
        samples_per_class: 8,
        projections: 8,
        bn_drift: Some(fair_scoring::BnDrift { batch_size: 4 }),
        ..Default::default()
    };
    let (u, _) = u_scores(&model, &layers, &cal, &drift, Progress::QUIET).unwrap();
    assert_eq!(u[q].len(), 16);
    assert!(u[q].iter().all(|&s| s > 0.0));
    assert_eq!(u[k], u[q], "k's head scores are q's");
    assert_eq!(u[v], u[q], "v's head scores are q's");
    // The drift is applied: without it the heads' scores differ.
    let plain = UScoreSettings {
        bn_drift: None,
        ..drift.clone()
    };
    let (u0, _) = u_scores(&model, &layers, &cal, &plain, Progress::QUIET).unwrap();
    assert_ne!(u0[q], u[q], "the drift moves the heads' scores");
}

#[test]
fn r_score_memory_of_attention_grows_with_tokens_per_head_channel() {
    // The tiny ViT on 1×8×8 with patch 2: T = 16 tokens of 32, 2 blocks; 4 heads of 8
    // against 1 head of 32. Only the attention's [heads, T, T] weights differ: autograd
    // keeps them and one more of their size (the scores), 2 · heads · T² numbers of 4 B per
    // block.
    let of = |heads: usize| {
        let g = fair_zoo::tiny_vit([1, 8, 8], 2, 32, heads, 64, 2, 3).unwrap();
        let layers = prunable_layers(&g, AnalysisPoint::LayerOutput);
        fair_scoring::RScoreMemory::of(&g, &layers, 10, 64).unwrap()
    };
    let (four, one) = (of(4), of(1));
    assert_eq!(four.fixed, one.fixed);
    assert_eq!(
        four.per_sample - one.per_sample,
        2 * 4 * 2 * (4 - 1) * 16 * 16
    );
}

/// Bounded runs whose packs hold several classes of unequal size (batch sizes 12 and 64
/// over classes of 6, 6, 6, 6 and 4 samples) keep the unbounded run's packs and its scores
/// at the same batch size, bit for bit: with the summaries that do not fit spilled to a
/// file, and with the passes re-running the forward passes (`spill-dir` none).
#[test]
fn bounded_runs_of_packed_unequal_classes_equal_the_unbounded_run() {
    use fair_scoring::memory::{budget_for, largest_pack, layer_memory, plan};
    use fair_scoring::{ByteSize, SpillDir, u_scores_measured};
    // Many projections: summaries large next to the packs' taps, so some bound runs the
    // packs in no more passes than each class alone.
    const P: usize = 32;
    let g = fair_zoo::build("resnet20", &[3, 8, 8], 5).unwrap();
    let model = Model::new(g, Device::Cpu, 0).unwrap();
    fair_testkit::randomise_batchnorm(&model, 1);
    // The labels run in class order: the last class keeps 4 of its 6 samples.
    let full = data(6, 5, &[3, 8, 8], 4);
    let (x, y) = full.tensors();
    let cal = Calibration::new(x.narrow(0, 0, 28), &y.narrow(0, 0, 28), "short").unwrap();
    let samples = [6, 6, 6, 6, 4];
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    let graph = model.graph();
    let (_, fixed, held) = planner_inputs(&model, &layers, &cal, P, &samples);
    let projections: Vec<usize> = layers.iter().map(|l| if l.conv { P } else { 1 }).collect();
    let bits = |s: &[Vec<f64>]| -> Vec<u64> { s.iter().flatten().map(|v| v.to_bits()).collect() };
    // Packs [6, 6], [6, 6], [4] in three batches; all 28 samples in one.
    for (batch_size, batches) in [(12, 3), (64, 1)] {
        let s = UScoreSettings {
            projections: P,
            batch_size,
            samples_per_class: 6,
            ..Default::default()
        };
        let free = u_scores_measured(&model, &layers, &cal, &s, Progress::QUIET, None).unwrap();
        assert_eq!((free.forwards, free.batches), (5, batches));
        assert!(free.narrowed_packs.is_empty());
        // Room for a share of the summaries next to the fixed part and the passes' overhead:
        // the first share (in hundredths) where the packs take several passes, but no more than
        // each class alone (else the bound narrows the packs, as tested apart).
        let mem = layer_memory(graph, &layers, &projections, &samples, batch_size).unwrap();
        let batch = largest_pack(&samples, batch_size).min(batch_size);
        let one = plan(graph, &layers, &mem, batch, fixed, None).unwrap();
        let alone = layer_memory(graph, &layers, &projections, &samples, 0).unwrap();
        let passes = |mem: &[fair_scoring::memory::LayerMemory], batch: usize, budget: u64| {
            plan(graph, &layers, mem, batch, fixed, Some(budget))
                .map_or(usize::MAX, |p| p.chunks.len())
        };
        let budget = (1..100)
            .map(|hundredths| budget_for(fixed + (one.unbounded - held) + held / 100 * hundredths))
            .find(|&b| {
                let packed = passes(&mem, batch, b);
                (2..usize::MAX).contains(&packed) && packed <= passes(&alone, batch.min(6), b)
            })
            .expect("a budget with several passes of the packs");
        let dir = tempfile::tempdir().unwrap();
        for spill in [SpillDir::At(dir.path().to_path_buf()), SpillDir::Never] {
            let bounded = UScoreSettings {
                max_memory: Some(ByteSize(budget)),
                spill_dir: Some(spill.clone()),
                ..s.clone()
            };
            let run =
                u_scores_measured(&model, &layers, &cal, &bounded, Progress::QUIET, None).unwrap();
            let what = format!("batch size {batch_size}, {spill:?}");
            assert!(
                bits(&run.scores) == bits(&free.scores),
                "{what}: the scores differ"
            );
            assert!(run.narrowed_packs.is_empty(), "{what}: {:?}", run.notes);
            assert_eq!(
                (run.forwards, run.batches),
                (5 * run.passes, batches * run.passes),
                "{what}"
            );
            if spill == SpillDir::Never {
                assert!(run.passes > 1, "{what}: {} passes", run.passes);
            } else {
                assert!(
                    run.spilled > 0 && run.passes == 1,
                    "{what}: {:?}",
                    run.notes
                );
            }
        }
    }
}

/// A patch embedding (16 channels on a 4×4 grid), shifted 2×2 windows (`window_partition`),
/// q, k, v of 2 heads of 8 with cosine scores, a relative position bias and a logit scale
/// per head (Swin V2's windowed attention), the projection, `window_merge`, the mean over the
/// tokens and a head of 3 classes; the per-head parameters drawn at random.
fn tiny_windowed() -> Model {
    use fair_ir::{AttnWindows, Pair, WindowMerge, WindowPartition};
    let (grid, window, shift) = (Pair(4, 4), Pair(2, 2), Pair(1, 1));
    let mut b = fair_ir::GraphBuilder::new("tiny_windowed", "input", vec![1, 8, 8]);
    b.conv("patch_embed", "input", 16, 2, 2, 0, true).unwrap();
    b.add("tokens", fair_ir::Tokens {}.into(), &["patch_embed"])
        .unwrap();
    let part = WindowPartition {
        grid,
        window,
        shift,
    };
    b.add("part", part.into(), &["tokens"]).unwrap();
    for l in ["q", "k", "v"] {
        b.linear(l, "part", 16, true).unwrap();
    }
    let attention = fair_ir::Attention {
        head_dim: 8,
        heads: Some(2),
        windows: Some(AttnWindows {
            grid,
            window,
            shift,
            bias: true,
        }),
        cosine: true,
        scale: None,
    };
    b.add("attend", attention.into(), &["q", "k", "v"]).unwrap();
    b.linear("proj", "attend", 16, true).unwrap();
    let merge = WindowMerge {
        grid,
        window,
        shift,
    };
    b.add("merge", merge.into(), &["proj"]).unwrap();
    b.add("pool", fair_ir::TokenMean {}.into(), &["merge"])
        .unwrap();
    b.linear("head", "pool", 3, true).unwrap();
    let m = Model::new(b.finish().unwrap(), Device::Cpu, 6).unwrap();
    tch::manual_seed(6);
    tch::no_grad(|| {
        for (n, mut t) in m.named_tensors() {
            if n.ends_with(".bias") {
                t.copy_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.5));
            } else if n.ends_with("relative_position_bias") {
                t.copy_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 2.0));
            } else if n.ends_with("logit_scale") {
                t.copy_(&(Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.3 + 2.5));
            }
        }
    });
    m
}

#[test]
fn a_windowed_head_r_score_includes_its_relative_position_bias_and_logit_scale() {
    let model = tiny_windowed();
    let cal = data(8, 3, &[1, 8, 8], 9);
    let layers = prunable_layers(model.graph(), AnalysisPoint::LayerOutput);
    let settings = RScoreSettings {
        mode: RMode::Eval,
        batch_size: 12,
        seed: 0,
        max_memory: None,
    };
    let (r, _) = r_scores(&model, &layers, &cal, &settings, Progress::QUIET).unwrap();
    let q = layers.iter().position(|l| l.name == "q").unwrap();
    let loss_sum = || -> f64 {
        cal.batches(12)
            .map(|(x, y)| {
                let logits = model.forward(&x, Mode::Eval).unwrap().to_kind(Kind::Double);
                logits.cross_entropy_for_logits(&y).double_value(&[])
            })
            .sum()
    };
    // All of head h's parameters scaled by f: q, k, v rows, the projection's columns, and
    // the head's slices of the bias and the logit scale; or only the latter (`own`).
    let scale = |h: i64, f: f64, own: bool| {
        tch::no_grad(|| {
            let t = |n: &str| model.tensor(n).unwrap().shallow_clone();
            let mut parts = vec![
                t("attend.relative_position_bias").narrow(0, h, 1),
                t("attend.logit_scale").narrow(0, h, 1),
            ];
            if !own {
                for l in ["q", "k", "v"] {
                    for s in ["weight", "bias"] {
                        parts.push(t(&format!("{l}.{s}")).narrow(0, h * 8, 8));
                    }
                }
                parts.push(t("proj.weight").narrow(1, h * 8, 8));
            }
            for mut p in parts {
                let _ = p.g_mul_scalar_(f);
            }
        })
    };
    let fd = |h: i64, own: bool| {
        let eps = 1e-3;
        scale(h, 1.0 + eps, own);
        let up = loss_sum();
        scale(h, (1.0 - eps) / (1.0 + eps), own);
        let down = loss_sum();
        scale(h, 1.0 / (1.0 - eps), own);
        (up - down) / (2.0 * eps)
    };
    // The terms of q, k, v and the output's columns alone, from autograd on the layers'
    // outputs (Euler's theorem, as the R-Score of a linear layer's units).
    let outputs_only = |h: i64| -> f64 {
        let names = ["q", "k", "v", "attend"];
        cal.batches(12)
            .map(|(x, y)| {
                let out = model.forward_with_taps(&x, Mode::Eval, &names).unwrap();
                let loss = out.output.log_softmax(-1, Kind::Float).nll_loss(&y);
                let taps: Vec<&Tensor> = names.iter().map(|n| &out.taps[*n]).collect();
                let g = Tensor::run_backward(&[&loss], &taps, false, false);
                taps.iter()
                    .zip(&g)
                    .map(|(t, g)| {
                        (t.detach().to_kind(Kind::Double) * g.to_kind(Kind::Double))
                            .narrow(2, h * 8, 8)
                            .sum(Kind::Double)
                            .double_value(&[])
                    })
                    .sum::<f64>()
            })
            .sum()
    };
    let own_terms = |h: i64| -> f64 {
        let params = ["attend.relative_position_bias", "attend.logit_scale"]
            .map(|n| model.tensor(n).unwrap().shallow_clone());
        for p in &params {
            let _ = p.set_requires_grad(true);
        }
        let total = cal
            .batches(12)
            .map(|(x, y)| {
                let out = model.forward(&x, Mode::Eval).unwrap();
                let loss = out.log_softmax(-1, Kind::Float).nll_loss(&y);
                let refs: Vec<&Tensor> = params.iter().collect();
                let g = Tensor::run_backward(&[&loss], &refs, false, false);
                params
                    .iter()
                    .zip(&g)
                    .map(|(p, g)| {
                        (p.detach().to_kind(Kind::Double) * g.to_kind(Kind::Double))
                            .narrow(0, h, 1)
                            .sum(Kind::Double)
                            .double_value(&[])
                    })
                    .sum::<f64>()
            })
            .sum();
        for p in &params {
            let _ = p.set_requires_grad(false);
        }
        total
    };
    for h in 0..2i64 {
        let ours = r[q][h as usize * 8];
        let all = fd(h, false).abs();
        assert!(
            (ours - all).abs() <= 2e-3 * all.max(1e-6),
            "head {h}: R = {ours}, finite difference {all}"
        );
        // The bias's and logit scale's own term, θ·∂L/∂θ of head h's slices by autograd
        // (and by finite difference, to its precision): R is the outputs' terms plus it.
        let (own, outputs) = (own_terms(h), outputs_only(h));
        let own_fd = fd(h, true);
        assert!(
            (own - own_fd).abs() <= 0.5 * own.abs() && own.abs() > 2e-5,
            "head {h}: own term {own} by autograd, {own_fd} by finite difference"
        );
        assert!(
            (ours - (outputs + own).abs()).abs() <= 1e-6 * ours,
            "head {h}: R = {ours}, outputs' terms {outputs}, bias and logit scale {own}"
        );
        assert!(
            (ours - outputs.abs()).abs() >= 0.5 * own.abs(),
            "head {h}: R = {ours} ignores the bias and logit scale ({own})"
        );
    }
}

/// The certified pair search (16-bit summaries, every pair in integers): every unit's exact
/// maximum (the all-pairs score) lies within its computed gap of the certified score, the
/// gaps are small against the scores, a pair check on sampled units agrees, and so do the
/// runs under a memory bound (codes spilled to the temporary file, and repeated passes);
/// classes of unequal sizes fall back to the exact bounded search with a note.
#[test]
fn certified_pair_search_bounds_the_all_pairs_scores() {
    use fair_scoring::memory::{budget_for, plan};
    use fair_scoring::{ByteSize, Engine, PairCheck, PairSearch, SpillDir, u_scores_measured};
    let g = fair_zoo::build("resnet20", &[3, 8, 8], 5).unwrap();
    let model = Model::new(g, Device::Cpu, 0).unwrap();
    fair_testkit::randomise_batchnorm(&model, 2);
    // 30 classes of 4 in forward batches of 8: the quantizers are fitted on a pilot of
    // every sample, run in pieces of 8.
    let cal = data(4, 30, &[3, 8, 8], 11);
    let layers = prunable_layers(model.graph(), AnalysisPoint::AfterActivation);
    let all = UScoreSettings {
        projections: 8,
        batch_size: 8,
        samples_per_class: 4,
        max_classes: 30,
        engine: Engine::Host,
        pair_search: PairSearch::All,
        ..Default::default()
    };
    let certified = UScoreSettings {
        pair_search: PairSearch::Certified,
        ..all.clone()
    };
    let (exact, _) = u_scores(&model, &layers, &cal, &all, Progress::QUIET).unwrap();
    let within = |run: &fair_scoring::UScoreRun, what: &str| {
        assert_eq!(run.gaps.len(), layers.len(), "{what}");
        for ((e, (c, g)), l) in exact
            .iter()
            .zip(run.scores.iter().zip(&run.gaps))
            .zip(&layers)
        {
            let top = e.iter().cloned().fold(0.0f64, f64::max);
            assert!(top > 0.0, "{what}: {}", l.name);
            for (u, ((e, c), g)) in e.iter().zip(c).zip(g).enumerate() {
                assert!(
                    (e - c).abs() <= *g,
                    "{what}: {} unit {u}: exact {e}, certified {c} ± {g}",
                    l.name
                );
                // Small against the layer's scores: 16-bit codes of a fitted range.
                assert!(
                    *g <= 2e-2 * top,
                    "{what}: {} unit {u}: gap {g} of {top}",
                    l.name
                );
            }
        }
    };
    let check = PairCheck {
        units_per_layer: 3,
        seed: 5,
    };
    let run = u_scores_measured(
        &model,
        &layers,
        &cal,
        &certified,
        Progress::QUIET,
        Some(check),
    )
    .unwrap();
    within(&run, "unbounded");
    assert!(run.scores.iter().flatten().any(|&v| v > 0.0));
    // Every pair compared (30 · 29 / 2 per unit).
    let units: usize = layers.iter().map(|l| l.units).sum();
    assert_eq!(run.pairs.total, 435 * units as u64);
    assert_eq!(run.pairs.evaluated, run.pairs.total);
    let checked: usize = run.check.iter().map(|c| c.checked).sum();
    assert_eq!(checked, 3 * layers.len());
    assert_eq!(run.check.iter().map(|c| c.mismatches).sum::<usize>(), 0);
    assert!(
        run.notes
            .iter()
            .any(|n| n.contains("certified class-pair search")),
        "{:?}",
        run.notes
    );
    // The exact searches report no gaps.
    let bounded = u_scores_measured(&model, &layers, &cal, &all, Progress::QUIET, None).unwrap();
    assert!(bounded.gaps.is_empty());

    // Under a memory bound with room for a third of the f32 summaries: the codes that do
    // not fit are spilled (each class's forward pass once), or, without a spill file, the
    // passes re-run the forward passes; the scores stay within their gaps.
    let (mem, fixed, held) = planner_inputs(&model, &layers, &cal, 8, &[4; 30]);
    let one = plan(model.graph(), &layers, &mem, 8, fixed, None).unwrap();
    let budget = budget_for(fixed + (one.unbounded - held) + held / 3);
    let dir = tempfile::tempdir().unwrap();
    let spilled = UScoreSettings {
        max_memory: Some(ByteSize(budget)),
        spill_dir: Some(SpillDir::At(dir.path().to_path_buf())),
        ..certified.clone()
    };
    let run = u_scores_measured(&model, &layers, &cal, &spilled, Progress::QUIET, None).unwrap();
    within(&run, "spilled");
    assert!(run.spilled > 0, "nothing spilled");
    assert_eq!(run.passes, 1);
    let repeated = UScoreSettings {
        spill_dir: Some(SpillDir::Never),
        ..spilled
    };
    let run = u_scores_measured(&model, &layers, &cal, &repeated, Progress::QUIET, None).unwrap();
    within(&run, "repeated passes");
    assert!(run.passes > 1, "one pass");

    // Attention heads: each head's score and bound go to its channels.
    let vit = Model::new(
        fair_zoo::build("tiny_vit", &[3, 8, 8], 5).unwrap(),
        Device::Cpu,
        0,
    )
    .unwrap();
    let heads = prunable_layers(vit.graph(), AnalysisPoint::LayerOutput);
    assert!(heads.iter().any(|l| l.heads.is_some()));
    let vit_cal = data(4, 5, &[3, 8, 8], 4);
    let few = |p| UScoreSettings {
        max_classes: 5,
        pair_search: p,
        ..all.clone()
    };
    let (e, _) = u_scores(
        &vit,
        &heads,
        &vit_cal,
        &few(PairSearch::All),
        Progress::QUIET,
    )
    .unwrap();
    let run = u_scores_measured(
        &vit,
        &heads,
        &vit_cal,
        &few(PairSearch::Certified),
        Progress::QUIET,
        None,
    )
    .unwrap();
    for ((l, e), (c, g)) in heads.iter().zip(&e).zip(run.scores.iter().zip(&run.gaps)) {
        assert_eq!((c.len(), g.len()), (l.units, l.units), "{}", l.name);
        for ((e, c), g) in e.iter().zip(c).zip(g) {
            assert!((e - c).abs() <= *g, "{}: {e} against {c} ± {g}", l.name);
        }
    }

    // Unequal class sizes: the bounded search, exact, with a note.
    let (x, y) = cal.tensors();
    let short = Calibration::new(x.narrow(0, 0, 58), &y.narrow(0, 0, 58), "short").unwrap();
    let (a, _) = u_scores(&model, &layers, &short, &all, Progress::QUIET).unwrap();
    let run =
        u_scores_measured(&model, &layers, &short, &certified, Progress::QUIET, None).unwrap();
    assert!(run.gaps.is_empty());
    assert_eq!(a, run.scores);
    assert!(
        run.notes
            .iter()
            .any(|n| n.contains("certified class-pair search needs classes of equal size")),
        "{:?}",
        run.notes
    );
}
