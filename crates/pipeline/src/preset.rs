//! Named starting configurations (`--preset`): every setting that decides *which* units go,
//! chosen as a whole. Individual flags and config keys still override any part of one.

use fair_analysis::{GroupRule, MacCost, SelectOptions};
use fair_scoring::{RMode, ScoringSettings, Wasserstein};
use fair_train::{BnRecalibration, Reconstruction};
use serde::{Deserialize, Serialize};

/// A named configuration of the scoring, the counts and the steps after surgery.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Preset {
    /// The authors' package `network-pruner` 2.16 as exactly as fair-pruner reproduces it:
    /// U read where its hook reads (after an in-place ReLU that directly follows the layer)
    /// with the BatchNorm drift of its training-mode R passes, its quantile-grid W1, R in
    /// training mode, the package's group rule, counts blind to MACs, no BatchNorm
    /// recalibration. See docs/algorithm.md, "Presets".
    Paper,
    /// fair-pruner's default: the paper preset with the changes that raised accuracy on a
    /// validation split carved from the training data (docs/results.md, "Ablation"): R in
    /// eval mode, MAC-aware counts (γ = 1, each layer's cost measured per fraction of the
    /// layer, [`MacCost::Fraction`]), no BatchNorm drift, coupled (residual) layers
    /// ranked by their summed scores ([`GroupRule::Summed`]), targets met exactly
    /// (`exact_target`), each layer's ToD count of units chosen by lowest group L1
    /// (`group-l1`, Torch-Pruning's group magnitude) rather than lowest U, and BatchNorm
    /// recalibration after surgery (32 batches).
    #[default]
    FairPruner,
}

/// What a [`Preset`] sets.
#[derive(Debug, Clone, PartialEq)]
pub struct PresetSettings {
    /// Scoring settings (U and R); the calibration draw (samples per class, classes, seed)
    /// and the memory bound are left at their defaults for the caller to set.
    pub scoring: ScoringSettings,
    /// How coupled layers settle on one set of units.
    pub rule: GroupRule,
    /// Exponent γ of the MAC-aware counts (0: counts blind to MACs, as the paper).
    pub mac_weight: f64,
    /// What the MAC weight measures each layer's cost by.
    pub mac_cost: MacCost,
    /// Whether a MACs or parameters target blends two ToD solutions to land on the target
    /// ([`fair_analysis::SelectOptions::exact_target`]) rather than taking the first α past it.
    pub exact_target: bool,
    /// The criterion that orders the units each layer removes; `None`: the remove-by one
    /// (U, as the paper).
    pub rank_by: Option<&'static str>,
    /// BatchNorm recalibration after surgery, if any.
    pub recalibration: Option<BnRecalibration>,
    /// Reader reconstruction after surgery (before the recalibration), if any.
    pub reconstruction: Option<Reconstruction>,
}

impl Preset {
    /// Every preset, in `--help` order.
    pub const ALL: [Preset; 2] = [Preset::FairPruner, Preset::Paper];

    /// The preset's name on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Paper => "paper",
            Preset::FairPruner => "fair-pruner",
        }
    }

    /// The settings of this preset. `batch_size` is the R-Score's batch size (the paper
    /// preset also moves BatchNorm statistics in batches of this size, as the package's
    /// calibration loader does).
    pub fn settings(self, batch_size: usize) -> PresetSettings {
        match self {
            Preset::Paper => PresetSettings {
                scoring: ScoringSettings::paper(batch_size),
                rule: GroupRule::Package,
                mac_weight: 0.0,
                mac_cost: MacCost::Unit,
                exact_target: false,
                rank_by: None,
                recalibration: None,
                reconstruction: None,
            },
            Preset::FairPruner => {
                // The paper's scoring without the drift (one pass, exact W1), R in eval mode,
                // MAC-aware counts (γ = 1, costs per fraction of a layer), residual groups
                // ranked by their summed scores.
                let mut scoring = ScoringSettings::paper(batch_size);
                scoring.u.bn_drift = None;
                scoring.u.w1 = Wasserstein::Exact;
                scoring.r.mode = RMode::Eval;
                PresetSettings {
                    scoring,
                    rule: GroupRule::Summed,
                    mac_weight: 1.0,
                    mac_cost: MacCost::Fraction,
                    exact_target: true,
                    rank_by: Some("group-l1"),
                    recalibration: Some(BnRecalibration::default()),
                    reconstruction: Some(Reconstruction::default()),
                }
            }
        }
    }
}

impl Preset {
    /// The selection options of this preset: its group rule, MAC weight and cost and exact
    /// targets, with the default counting, no protected layers and grouped convolutions
    /// pruned within their groups ([`crate::GROUPED_CONVS`]). What the CLI, the
    /// [`crate::Pruner`] and a hand-built [`fair_analysis::Selector`] start from.
    ///
    /// ```
    /// use fair_pipeline::{GroupRule, Preset};
    /// let o = Preset::Paper.select_options();
    /// assert_eq!((o.rule, o.mac_weight, o.exact_target), (GroupRule::Package, 0.0, false));
    /// ```
    pub fn select_options(self) -> SelectOptions {
        let p = self.settings(fair_scoring::ScoringSettings::default().r.batch_size);
        SelectOptions {
            rule: p.rule,
            mac_weight: p.mac_weight,
            mac_cost: p.mac_cost,
            exact_target: p.exact_target,
            grouped: crate::settings::GROUPED_CONVS,
            ..SelectOptions::default()
        }
    }

    /// The criterion that orders the units each layer removes: `rank_by` when given; else
    /// the removal signal when one is given (`remove_by`); else this preset's ranking
    /// (`group-l1` for `fair-pruner`); else the default removal signal (`u`).
    ///
    /// ```
    /// use fair_pipeline::Preset;
    /// assert_eq!(Preset::FairPruner.rank_by(None, None), "group-l1");
    /// assert_eq!(Preset::FairPruner.rank_by(None, Some("l1")), "l1");
    /// assert_eq!(Preset::Paper.rank_by(None, None), "u");
    /// assert_eq!(Preset::Paper.rank_by(Some("l2"), Some("l1")), "l2");
    /// ```
    pub fn rank_by(self, rank_by: Option<&str>, remove_by: Option<&str>) -> String {
        rank_by
            .or(remove_by)
            .or(self.settings(1).rank_by)
            .unwrap_or(crate::settings::DEFAULT_REMOVE_BY)
            .to_owned()
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_is_the_package() {
        use fair_scoring::AnalysisPoint;
        let p = Preset::Paper.settings(32);
        assert_eq!(p.scoring.u.analysis_point, AnalysisPoint::Package);
        assert_eq!(
            p.scoring.u.bn_drift,
            Some(fair_scoring::BnDrift { batch_size: 32 })
        );
        assert_eq!(p.scoring.r.batch_size, 32);
        assert_eq!(p.scoring.r.mode, RMode::Train);
        assert_eq!(p.rule, GroupRule::Package);
        assert_eq!(p.mac_weight, 0.0);
        assert_eq!(p.mac_cost, MacCost::Unit);
        assert!(!p.exact_target);
        assert_eq!(p.rank_by, None);
        assert!(p.recalibration.is_none());
        assert!(p.reconstruction.is_none());
    }

    #[test]
    fn fair_pruner_changes_what_the_ablation_measured() {
        use fair_scoring::AnalysisPoint;
        let p = Preset::FairPruner.settings(32);
        assert_eq!(p.scoring.u.analysis_point, AnalysisPoint::Package);
        assert_eq!(p.scoring.u.bn_drift, None);
        assert_eq!(p.scoring.u.w1, Wasserstein::Exact);
        assert_eq!(p.scoring.r.mode, RMode::Eval);
        assert_eq!(p.rule, GroupRule::Summed);
        assert_eq!(p.mac_weight, 1.0);
        assert_eq!(p.mac_cost, MacCost::Fraction);
        assert!(p.exact_target);
        assert_eq!(p.rank_by, Some("group-l1"));
        assert_eq!(p.recalibration.map(|r| r.batches), Some(32));
        assert_eq!(
            p.reconstruction,
            Some(fair_train::Reconstruction::default())
        );
        assert_eq!(Preset::default(), Preset::FairPruner);
    }

    #[test]
    fn names_round_trip_through_serde() {
        for p in Preset::ALL {
            let text = serde_json::to_string(&p).unwrap();
            assert_eq!(text, format!("\"{}\"", p.name()));
            assert_eq!(serde_json::from_str::<Preset>(&text).unwrap(), p);
        }
    }
}
