//! Prune plans and how a group of coupled layers turns its members' requests into one
//! decision.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::SurgeryError;

/// What to remove: for each prunable layer, the indices of the units to remove. Layers not
/// listed keep every unit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
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

    /// Reads a plan from JSON (`{"remove": {"layer": [units...]}}`).
    pub fn load(path: &Path) -> Result<Self, SurgeryError> {
        let bad = |detail: String| SurgeryError::PlanFile {
            path: path.display().to_string(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        serde_json::from_str(&text).map_err(|e| {
            bad(format!(
                "expected {{\"remove\": {{\"layer\": [unit, ...]}}}}: {e}"
            ))
        })
    }
}

/// How the members of a coupled group (layers whose outputs meet at a residual add) settle on
/// one set of units. Members the plan does not mention ask to remove nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupRule {
    /// Remove only the units every member asks to remove (never removes a unit some member
    /// keeps).
    Intersection,
    /// The authors' package rule (the default): keep as many units as the member that keeps
    /// the most; keep the intersection of the members' kept sets (lowest indices first), or,
    /// if that is too small, the lowest indices of their union. Measured better than
    /// `Intersection` one-shot at equal size (docs/results.md).
    #[default]
    Package,
    /// Every member must ask for exactly the same units; anything else is an error.
    Strict,
}

/// The units a group removes, given each member's request.
pub(crate) fn resolve(
    rule: GroupRule,
    units: usize,
    layers: &[String],
    requests: &[BTreeSet<usize>],
) -> Result<BTreeSet<usize>, SurgeryError> {
    let all: BTreeSet<usize> = (0..units).collect();
    Ok(match rule {
        GroupRule::Intersection => requests.iter().skip(1).fold(requests[0].clone(), |acc, r| {
            acc.intersection(r).copied().collect()
        }),
        GroupRule::Strict => {
            if requests.iter().any(|r| r != &requests[0]) {
                return Err(SurgeryError::Disagreement {
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
        assert!(resolve(GroupRule::Strict, 8, &layers, &req).is_err());
        let same = [set(&[3]), set(&[3])];
        assert_eq!(
            resolve(GroupRule::Strict, 8, &layers, &same).unwrap(),
            set(&[3])
        );
    }
}
