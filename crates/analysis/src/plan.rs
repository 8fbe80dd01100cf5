//! Prune plans, and how a group of coupled layers turns its members' requests into one
//! decision.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::AnalysisError;
use crate::strict;

/// What to remove: for each prunable layer, the indices of the units to remove. Layers not
/// listed keep every unit.
///
/// As JSON: `{"remove": {"layer": [unit, ...]}}`, optionally with the digests of the model
/// the plan was made for (`graph_digest`, `model_digest`, each 64 lowercase hexadecimal
/// digits), which `apply` checks. Unknown keys, a key given twice (a layer twice in
/// `remove`) and a unit listed twice for one layer are errors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// SHA-256 of the graph the plan was made for ([`crate::graph_digest`]), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_digest: Option<String>,
    /// SHA-256 of the graph and weights the plan was made for (the score file's model
    /// digest), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_digest: Option<String>,
    /// Unit indices to remove, per layer.
    pub remove: BTreeMap<String, Vec<usize>>,
}

impl Plan {
    /// The empty plan.
    pub fn new() -> Self {
        Plan::default()
    }

    /// Adds units to remove from `layer`.
    pub fn remove(mut self, layer: &str, units: impl IntoIterator<Item = usize>) -> Self {
        self.remove
            .entry(layer.to_owned())
            .or_default()
            .extend(units);
        self
    }

    /// Whether the plan removes nothing.
    pub fn is_empty(&self) -> bool {
        self.remove.values().all(Vec::is_empty)
    }

    /// Parses a plan from JSON text; `source` names it in errors. Refused: unknown keys, a
    /// key given twice in any object (a layer twice in `remove`), a unit listed twice for a
    /// layer, and digests that are not 64 lowercase hexadecimal digits.
    pub fn from_json_str(text: &str, source: &str) -> Result<Self, AnalysisError> {
        let error = |detail: String| AnalysisError::PlanFile {
            path: source.to_owned(),
            detail,
        };
        let value = strict::parse(text, &|path, key| {
            if path == "remove" {
                format!(
                    "layer {} is given twice in \"remove\"; give each layer once, with all the units to remove in one list",
                    strict::quoted(key)
                )
            } else {
                strict::duplicate_key(path, key)
            }
        })
        .map_err(|e| error(e.to_string()))?;
        let plan: Plan = serde_json::from_value(value).map_err(|e| {
            error(format!(
                "expected {{\"remove\": {{\"layer\": [unit, ...]}}}} (optionally with \"graph_digest\" and \"model_digest\"): {e}"
            ))
        })?;
        for (field, digest) in [
            ("graph_digest", &plan.graph_digest),
            ("model_digest", &plan.model_digest),
        ] {
            if let Some(d) = digest {
                strict::check_digest(field, d).map_err(error)?;
            }
        }
        for (layer, units) in &plan.remove {
            let mut seen = BTreeSet::new();
            if let Some(unit) = units.iter().find(|&&u| !seen.insert(u)) {
                return Err(error(format!(
                    "layer {} lists unit {unit} twice; list each unit to remove once",
                    strict::quoted(layer)
                )));
            }
        }
        Ok(plan)
    }

    /// Reads a plan from a JSON file (a regular file of at most 1 GiB).
    pub fn load(path: &Path) -> Result<Self, AnalysisError> {
        let text = fair_fs::read_string_bounded(path, crate::MAX_TEXT_FILE, "a plan file")?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Writes the plan as pretty JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<(), AnalysisError> {
        fair_fs::write_atomic(path, self.to_json_string().as_bytes())?;
        Ok(())
    }

    /// The plan as the JSON text [`Plan::save`] writes (e.g. for a checked output,
    /// `fair_fs::OutputFile::write`).
    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(self).expect("plans serialise")
    }
}

/// How the members of a coupled group (layers whose outputs meet at a residual add) settle on
/// one set of units. Members the plan does not mention ask to remove nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum GroupRule {
    /// Remove only the units every member asks to remove (never removes a unit some member
    /// keeps).
    Intersection,
    /// The authors' package rule (the default of this type, of `apply` and of the `paper`
    /// preset): keep as many units as the member that keeps the most; keep the intersection
    /// of the members' kept sets (lowest indices first), or, if that is too small, the lowest
    /// indices of their union.
    #[default]
    Package,
    /// Every member must ask for exactly the same units; anything else is an error. (When
    /// fair-pruner builds the plan itself, it makes the members agree: see
    /// [`crate::Selector`].)
    Strict,
    /// Rank each coupled group as one, as Torch-Pruning does (a fair-pruner extension): U, R
    /// and the ranking summed over its members, each divided by its mean |score|, before ToD;
    /// one curve, one count and one removal set per group.
    ///
    /// The sums are formed by [`crate::Selector`] (normalising by the mean |score| makes
    /// layers of different scale weigh alike; a layer alone in its group is unchanged), so
    /// its members ask for identical units; resolving a plan, members must agree, as under
    /// `Strict`. Not in the paper or the authors' package.
    Summed,
}

impl GroupRule {
    /// The rule's name as written on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            GroupRule::Intersection => "intersection",
            GroupRule::Package => "package",
            GroupRule::Strict => "strict",
            GroupRule::Summed => "summed",
        }
    }
}

/// The units a group removes, given each member's request.
pub(crate) fn resolve(
    rule: GroupRule,
    units: usize,
    layers: &[String],
    requests: &[BTreeSet<usize>],
) -> Result<BTreeSet<usize>, AnalysisError> {
    let all: BTreeSet<usize> = (0..units).collect();
    Ok(match rule {
        GroupRule::Intersection => requests.iter().skip(1).fold(requests[0].clone(), |acc, r| {
            acc.intersection(r).copied().collect()
        }),
        // Under `Summed` the selector gives every member the same scores, hence the same
        // request; a hand-written plan must agree as under `Strict`.
        GroupRule::Strict | GroupRule::Summed => {
            if requests.iter().any(|r| r != &requests[0]) {
                return Err(AnalysisError::Disagreement {
                    layers: layers.to_vec(),
                });
            }
            requests[0].clone()
        }
        GroupRule::Package => {
            let kept: Vec<BTreeSet<usize>> = requests
                .iter()
                .map(|r| all.difference(r).copied().collect())
                .collect();
            let count = kept.iter().map(BTreeSet::len).max().unwrap_or(units);
            let inter = kept.iter().skip(1).fold(kept[0].clone(), |acc, k| {
                acc.intersection(k).copied().collect::<BTreeSet<_>>()
            });
            let chosen: BTreeSet<usize> = if inter.len() >= count {
                inter.into_iter().take(count).collect()
            } else {
                let union: BTreeSet<usize> = kept.iter().flatten().copied().collect();
                union.into_iter().take(count).collect()
            };
            all.difference(&chosen).copied().collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[usize]) -> BTreeSet<usize> {
        v.iter().copied().collect()
    }

    #[test]
    fn rules_resolve_as_documented() {
        let layers = vec!["a".to_owned(), "b".to_owned()];
        let req = [set(&[0, 1, 2]), set(&[1, 2, 5])];
        assert_eq!(
            resolve(GroupRule::Intersection, 8, &layers, &req).unwrap(),
            set(&[1, 2])
        );
        // Package: kept a = {3..7} (5), kept b = {0,3,4,6,7} (5) → count 5; intersection
        // {3,4,6,7} has 4 < 5 → lowest 5 of the union {0,3,4,5,6,7} = {0,3,4,5,6}.
        assert_eq!(
            resolve(GroupRule::Package, 8, &layers, &req).unwrap(),
            set(&[1, 2, 7])
        );
        let e = resolve(GroupRule::Strict, 8, &layers, &req).unwrap_err();
        // The hint names the setting (the CLI prints its flag), not a flag.
        let text = e.to_string();
        assert!(text.contains("layers a, b are coupled"), "{text}");
        assert!(
            text.contains("package or intersection `rule`") && !text.contains("--"),
            "{text}"
        );
        let same = [set(&[3]), set(&[3])];
        assert_eq!(
            resolve(GroupRule::Strict, 8, &layers, &same).unwrap(),
            set(&[3])
        );
        assert_eq!(
            resolve(GroupRule::Summed, 8, &layers, &same).unwrap(),
            set(&[3])
        );
        assert!(resolve(GroupRule::Summed, 8, &layers, &req).is_err());
    }

    #[test]
    fn rule_names_match_serde_names() {
        for rule in [
            GroupRule::Intersection,
            GroupRule::Package,
            GroupRule::Strict,
            GroupRule::Summed,
        ] {
            let json = serde_json::to_string(&rule).unwrap();
            assert_eq!(json, format!("\"{}\"", rule.name()));
            assert_eq!(serde_json::from_str::<GroupRule>(&json).unwrap(), rule);
        }
    }

    #[test]
    fn plans_reject_unknown_keys_and_keep_digests() {
        let digest = "ab".repeat(32);
        let p = Plan::from_json_str(
            &format!(r#"{{"remove": {{"c1": [0, 2]}}, "model_digest": "{digest}"}}"#),
            "p.json",
        )
        .unwrap();
        assert_eq!(p.remove["c1"], vec![0, 2]);
        assert_eq!(p.model_digest.as_deref(), Some(digest.as_str()));
        let e = Plan::from_json_str(r#"{"remove": {}, "remvoe": {}}"#, "p.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("remvoe") && e.contains("p.json"), "{e}");
    }
}
