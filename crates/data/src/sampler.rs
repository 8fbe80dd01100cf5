//! Calibration sampling: n samples per class from the training split, seeded (the rule is
//! [`fair_stats::stratified_sample`], shared with the U-Score's class choice).

use crate::source::ImageSource;

/// A calibration draw: the chosen training indices (ascending by class, then index) and notes
/// about classes with fewer samples than asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalibrationDraw {
    /// Indices into the training split.
    pub indices: Vec<usize>,
    /// Classes included.
    pub classes: Vec<i64>,
    /// Notes about the classes that had fewer than the requested samples (one per class, or
    /// one for all of them when there are many: [`fair_stats::StratifiedDraw::short_notes`]).
    pub short: Vec<String>,
}

/// Draws `per_class` samples of each class (all of a class with fewer, reported), from at
/// most `max_classes` classes chosen with `seed`. Pass the **training** split: calibration
/// must never see test data. Only the labels are read (no image is opened).
pub fn calibration_sample<S: ImageSource + ?Sized>(
    train: &S,
    per_class: usize,
    max_classes: usize,
    seed: u64,
) -> CalibrationDraw {
    let draw = fair_stats::stratified_sample(train.labels(), per_class, max_classes, seed);
    let short = draw.short_notes(
        per_class,
        |c| {
            let name = train.classes().get(c as usize);
            name.map_or_else(|| c.to_string(), |name| format!("{c} ({name})"))
        },
        "training",
    );
    CalibrationDraw {
        classes: draw.classes.iter().map(|(c, _)| *c).collect(),
        indices: draw.classes.into_iter().flat_map(|(_, idx)| idx).collect(),
        short,
    }
}
