//! A scoring criterion added to fair-pruner without touching any of its crates: **APoZ**
//! (Hu et al., 2016), the average percentage of zeros of each unit's output after its
//! activation over the calibration data. A unit that is almost always zero does little, so
//! the score is the fraction of *non-zero* outputs, `1 − APoZ` (low = remove), which fits
//! Tolerance of Difference's remove-by side.
//!
//! ```
//! use fair_runtime::{Mode, Model};
//! use fair_scoring::{Calibration, Progress, Registry, ScoringSettings};
//! use tch::{Device, Kind, Tensor};
//!
//! let mut registry = Registry::default();
//! fair_example_apoz::register(&mut registry);
//! // Now "apoz" works everywhere a criterion name does, e.g.
//! // Pruner::new(&model).registry(registry).remove_by("apoz").protect_by("r")...
//! let model = Model::new(fair_zoo::build("vgg_compact", &[1, 8, 8], 2)?, Device::Cpu, 0)?;
//! let x = Tensor::randn([8, 1, 8, 8], (Kind::Float, Device::Cpu));
//! let y = Tensor::arange(8, (Kind::Int64, Device::Cpu)).remainder(2);
//! let data = Calibration::new(x.shallow_clone(), &y, "random images")?;
//! let criteria = registry.create_all(&["apoz"], &ScoringSettings::default())?;
//! let scores = fair_scoring::score(&model, Some(&data), &criteria, Progress::QUIET)?;
//!
//! // features.0 (16 channels) is followed by BatchNorm features.1 and ReLU features.2: its
//! // score is the fraction of positive ReLU outputs per channel.
//! let first = &scores.layers[0];
//! assert_eq!((first.layer.as_str(), first.scores["apoz"].len()), ("features.0", 16));
//! let relu = tch::no_grad(|| model.forward_with_taps(&x, Mode::Eval, &["features.2"]))?.taps["features.2"]
//!     .shallow_clone();
//! let expected = Vec::<f64>::try_from(relu.gt(0.0).to_kind(Kind::Double).mean_dim([0i64, 2, 3].as_slice(), false, Kind::Double))?;
//! for (got, want) in first.scores["apoz"].iter().zip(&expected) {
//!     assert!((got - want).abs() < 1e-9, "{got} vs {want}");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use fair_runtime::Mode;
use fair_scoring::{
    AnalysisPoint, Context, Criterion, Registry, Scored, ScoringError, prunable_layers,
};
use tch::Kind;

/// The APoZ criterion: per unit, the fraction of non-zero outputs after the BatchNorm and
/// activation that follow the layer, over every calibration sample and position.
#[derive(Debug, Clone, Copy)]
pub struct Apoz {
    /// Forward batch size.
    pub batch_size: usize,
}

impl Criterion for Apoz {
    fn name(&self) -> &str {
        "apoz"
    }

    fn settings(&self) -> serde_json::Value {
        serde_json::json!({ "batch_size": self.batch_size, "analysis_point": "after-activation" })
    }

    fn needs_data(&self) -> bool {
        true
    }

    fn score(&self, ctx: &Context) -> Result<Scored, ScoringError> {
        let data = ctx
            .data
            .ok_or_else(|| ScoringError::NeedsData("apoz".into()))?;
        let layers = prunable_layers(ctx.model.graph(), AnalysisPoint::AfterActivation);
        let taps: Vec<&str> = layers.iter().map(|l| l.analysis.as_str()).collect();
        let mut nonzero: Vec<Vec<f64>> = layers.iter().map(|l| vec![0.0; l.units]).collect();
        let mut counted = vec![0.0f64; layers.len()];
        for (x, _) in data.batches(self.batch_size.max(1)) {
            let out = tch::no_grad(|| {
                ctx.model
                    .forward_with_taps(&x.to_device(ctx.model.device()), Mode::Eval, &taps)
            })?;
            for (i, layer) in layers.iter().enumerate() {
                let t = &out.taps[&layer.analysis];
                // Every axis but the unit axis (1).
                let dims: Vec<i64> = (0..t.dim() as i64).filter(|&d| d != 1).collect();
                let per_unit = t.gt(0.0).to_kind(Kind::Double).sum_dim_intlist(
                    dims.as_slice(),
                    false,
                    Kind::Double,
                );
                let values = Vec::<f64>::try_from(per_unit.to_device(tch::Device::Cpu))
                    .map_err(|e| ScoringError::NonFinite(format!("reading APoZ: {e}")))?;
                for (n, v) in nonzero[i].iter_mut().zip(values) {
                    *n += v;
                }
                counted[i] += (t.numel() / layer.units) as f64;
            }
        }
        let scores = nonzero
            .into_iter()
            .zip(counted)
            .map(|(v, n)| v.into_iter().map(|x| x / n).collect())
            .collect();
        Ok(Scored {
            scores,
            ..Scored::default()
        })
    }
}

/// Registers `apoz` (batch size from the R-Score settings) in `registry`.
pub fn register(registry: &mut Registry) {
    registry.register(
        "apoz",
        "fraction of non-zero outputs after the activation (1 − APoZ; needs calibration data)",
        |settings| {
            Box::new(Apoz {
                batch_size: settings.r.batch_size,
            })
        },
    );
}
