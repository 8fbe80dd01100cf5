//! Calibration sampling: n samples per class from the training split, seeded.

use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::dataset::Dataset;

/// A calibration draw: the chosen training indices (ascending by class, then index) and notes
/// about classes with fewer samples than asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalibrationDraw {
    /// Indices into the training split.
    pub indices: Vec<usize>,
    /// Classes included.
    pub classes: Vec<i64>,
    /// One note per class that had fewer than the requested samples.
    pub short: Vec<String>,
}

/// Draws `per_class` samples of each class (all of a class with fewer, reported), from at
/// most `max_classes` classes chosen with `seed`. Pass the **training** split: calibration
/// must never see test data.
pub fn calibration_sample(
    train: &Dataset,
    per_class: usize,
    max_classes: usize,
    seed: u64,
) -> CalibrationDraw {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let by_class = train.class_indices();
    let mut classes: Vec<i64> = by_class.keys().copied().collect();
    if classes.len() > max_classes {
        classes.shuffle(&mut rng);
        classes.truncate(max_classes);
        classes.sort_unstable();
    }
    let mut indices = Vec::new();
    let mut short = Vec::new();
    for &c in &classes {
        let mut idx = by_class[&c].clone();
        if idx.len() < per_class {
            short.push(format!(
                "class {c} ({}) has {} training sample(s), fewer than the {per_class} asked for",
                train.classes[c as usize],
                idx.len()
            ));
        }
        idx.shuffle(&mut rng);
        idx.truncate(per_class);
        idx.sort_unstable();
        indices.extend(idx);
    }
    CalibrationDraw {
        indices,
        classes,
        short,
    }
}
