//! Distillation in the built-in fine-tuning: the loss is the documented formula, weight 0 is
//! plain training, weight 1 pulls the student towards the teacher, and bad teachers are
//! refused.

use fair_data::{Dataset, Transform};
use fair_runtime::{Mode, Model};
use fair_train::{
    Distillation, Schedule, TrainError, TrainSettings, distillation_loss, train, train_with_teacher,
};
use tch::{Device, Kind, Tensor};

/// Two classes of 6×6 grey images (bright top vs bright bottom), with noise.
fn data(n: usize, seed: u64) -> Dataset {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut pixels = Vec::new();
    for i in 0..n {
        for y in 0..6 {
            for _ in 0..6 {
                let base: i32 = if (y < 3) == (i % 2 == 0) { 180 } else { 60 };
                pixels.push((base + rng.gen_range(-50..50)).clamp(0, 255) as u8);
            }
        }
    }
    let labels = (0..n as i64).map(|i| i % 2).collect();
    Dataset::new(
        "synthetic",
        [1, 6, 6],
        pixels,
        labels,
        vec!["top".into(), "bottom".into()],
    )
    .unwrap()
}

fn mlp(hidden: usize, classes: usize, seed: u64) -> Model {
    let g = fair_zoo::mlp(vec![1, 6, 6], &[hidden], classes).unwrap();
    Model::new(g, Device::Cpu, seed).unwrap()
}

fn t() -> Transform {
    Transform {
        mean: vec![0.5],
        std: vec![0.25],
        augment: Some(fair_data::Augment {
            crop_padding: 1,
            flip: true,
        }),
        ..Default::default()
    }
}

fn settings() -> TrainSettings {
    TrainSettings {
        epochs: 3,
        batch_size: 16,
        lr: 0.05,
        schedule: Schedule::Cosine,
        ..Default::default()
    }
}

#[test]
fn the_loss_is_the_documented_formula() {
    let s = [[1.0, -0.5, 2.0], [0.3, 0.1, -1.2]];
    let te = [[0.2, 1.5, -0.7], [2.2, -0.4, 0.0]];
    let y = [2i64, 0];
    let (temp, w) = (3.0, 0.7);
    // By hand, in f64.
    let log_softmax = |v: &[f64; 3], t: f64| -> Vec<f64> {
        let z: Vec<f64> = v.iter().map(|x| x / t).collect();
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        z.iter().map(|x| x - lse).collect()
    };
    let mut ce = 0.0;
    let mut kl = 0.0;
    for b in 0..2 {
        ce -= log_softmax(&s[b], 1.0)[y[b] as usize];
        let (ls, lt) = (log_softmax(&s[b], temp), log_softmax(&te[b], temp));
        kl += (0..3).map(|k| lt[k].exp() * (lt[k] - ls[k])).sum::<f64>();
    }
    let want = (1.0 - w) * ce / 2.0 + w * temp * temp * kl / 2.0;

    let tensor = |v: [[f64; 3]; 2]| {
        Tensor::from_slice(&v.concat())
            .reshape([2, 3])
            .to_kind(Kind::Float)
    };
    let d = Distillation {
        temperature: temp,
        weight: w,
    };
    let got = distillation_loss(&tensor(s), &tensor(te), &Tensor::from_slice(&y), &d)
        .unwrap()
        .double_value(&[]);
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    // Weight 0 is the cross-entropy; a teacher equal to the student adds nothing.
    let zero = Distillation { weight: 0.0, ..d };
    let got = distillation_loss(&tensor(s), &tensor(te), &Tensor::from_slice(&y), &zero)
        .unwrap()
        .double_value(&[]);
    assert!((got - ce / 2.0).abs() < 1e-6, "{got}");
    let one = Distillation { weight: 1.0, ..d };
    let same = distillation_loss(&tensor(s), &tensor(s), &Tensor::from_slice(&y), &one)
        .unwrap()
        .double_value(&[]);
    assert!(same.abs() < 1e-6, "{same}");
}

#[test]
fn weight_zero_trains_exactly_as_without_a_teacher() {
    tch::set_num_threads(1);
    let tr = data(96, 1);
    let teacher = mlp(32, 2, 9);
    let mut plain = mlp(16, 2, 0);
    let r1 = train(&mut plain, &tr, None, &t(), &t(), &settings(), false).unwrap();
    let mut distilled = mlp(16, 2, 0);
    let d = Distillation {
        temperature: 4.0,
        weight: 0.0,
    };
    let r2 = train_with_teacher(
        &mut distilled,
        Some((&teacher, &d)),
        &tr,
        None,
        &t(),
        &t(),
        &settings(),
        false,
    )
    .unwrap();
    for (name, p) in plain.named_tensors() {
        assert!(p.equal(distilled.tensor(&name).unwrap()), "{name} differs");
    }
    let losses = |r: &[fair_train::EpochReport]| r.iter().map(|e| e.train_loss).collect::<Vec<_>>();
    assert_eq!(losses(&r1), losses(&r2));
}

/// Mean KL(teacher ‖ student) over the data, at temperature 1.
fn gap(student: &Model, teacher: &Model, x: &Tensor) -> f64 {
    tch::no_grad(|| {
        let ls = student
            .forward(x, Mode::Eval)
            .unwrap()
            .log_softmax(-1, Kind::Float);
        let lt = teacher
            .forward(x, Mode::Eval)
            .unwrap()
            .log_softmax(-1, Kind::Float);
        (lt.exp() * (&lt - ls))
            .sum_dim_intlist(-1, false, Kind::Float)
            .mean(Kind::Float)
            .double_value(&[])
    })
}

#[test]
fn weight_one_moves_the_student_towards_the_teacher() {
    tch::set_num_threads(1);
    let tr = data(128, 2);
    // A teacher with its own (random, label-blind) opinion: only distillation can teach it.
    let teacher = mlp(32, 2, 5);
    let teacher_before: Vec<Tensor> = teacher
        .named_tensors()
        .into_iter()
        .map(|(_, t)| t.copy())
        .collect();
    let plain_t = Transform {
        augment: None,
        ..t()
    };
    let idx: Vec<usize> = (0..tr.len()).collect();
    let x = {
        use fair_data::ImageSource;
        use rand::SeedableRng;
        tr.batch(
            &plain_t,
            &idx,
            [1, 6, 6],
            false,
            &mut rand::rngs::StdRng::seed_from_u64(0),
        )
        .unwrap()
        .0
    };
    let d = Distillation {
        temperature: 1.0,
        weight: 1.0,
    };
    let s = TrainSettings {
        epochs: 6,
        ..settings()
    };
    let mut student = mlp(16, 2, 0);
    let start = gap(&student, &teacher, &x);
    train_with_teacher(
        &mut student,
        Some((&teacher, &d)),
        &tr,
        None,
        &plain_t,
        &plain_t,
        &s,
        false,
    )
    .unwrap();
    let distilled = gap(&student, &teacher, &x);
    let mut ce_only = mlp(16, 2, 0);
    train(&mut ce_only, &tr, None, &plain_t, &plain_t, &s, false).unwrap();
    let trained = gap(&ce_only, &teacher, &x);
    assert!(
        distilled < 0.3 * start && distilled < 0.3 * trained,
        "KL to the teacher: {start} at the start, {distilled} distilled, {trained} with CE only"
    );
    for ((name, t), before) in teacher.named_tensors().into_iter().zip(&teacher_before) {
        assert!(t.equal(before), "the teacher's {name} changed");
    }
}

#[test]
fn bad_teachers_and_settings_are_refused() {
    let tr = data(16, 3);
    let mut m = mlp(8, 2, 0);
    let d = Distillation::default();
    let run = |m: &mut Model, teacher: &Model, d: &Distillation| {
        train_with_teacher(
            m,
            Some((teacher, d)),
            &tr,
            None,
            &t(),
            &t(),
            &settings(),
            false,
        )
        .unwrap_err()
    };
    let e = run(&mut m, &mlp(8, 3, 0), &d);
    assert!(
        matches!(e, TrainError::Teacher(_)) && e.to_string().contains("class"),
        "{e}"
    );
    let other_input = Model::new(
        fair_zoo::mlp(vec![1, 7, 7], &[8], 2).unwrap(),
        Device::Cpu,
        0,
    )
    .unwrap();
    let e = run(&mut m, &other_input, &d);
    assert!(
        matches!(e, TrainError::Teacher(_)) && e.to_string().contains("[1, 7, 7]"),
        "{e}"
    );
    let ok = mlp(8, 2, 1);
    for (bad, name) in [
        (
            Distillation {
                temperature: 0.0,
                ..d
            },
            "distill_temperature",
        ),
        (
            Distillation {
                temperature: f64::INFINITY,
                ..d
            },
            "distill_temperature",
        ),
        (Distillation { weight: 1.5, ..d }, "distill_weight"),
        (Distillation { weight: -0.1, ..d }, "distill_weight"),
    ] {
        let e = run(&mut m, &ok, &bad);
        assert!(
            matches!(e, TrainError::Setting { name: n, .. } if n == name),
            "{e}"
        );
        // Named by the setting (the CLI respells it as its flag), not by a flag.
        assert!(e.to_string().contains("`distill-"), "{e}");
        assert!(!e.to_string().contains("--"), "{e}");
    }
}
