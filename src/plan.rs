//! Feature-set versions and the add-only evolution rules (DESIGN §4).
//!
//! A version is immutable: an id, the date from which it applies (by `application_date`), its
//! features (name → definition, in column order), a content hash, and who registered it when.
//! A [`FeaturePlan`] is the ordered list of a table's versions; it answers which version is in
//! force at a date and which distinct definitions the window operator must compute.

use crate::features::FeatureDef;
use crate::record::{Date, BASE_COLUMNS};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// One immutable feature-set version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSetVersion {
    pub id: u32,
    #[serde(with = "date_text")]
    pub applies_from: Date,
    /// Feature name → definition, in the order their columns were introduced.
    pub features: IndexMap<String, FeatureDef>,
    /// Who registered it (filled in by the catalog when empty).
    #[serde(default)]
    pub registered_by: String,
    /// When it was registered, RFC 3339 (filled in by the catalog).
    #[serde(default)]
    pub registered_at: String,
}

impl FeatureSetVersion {
    /// SHA-256 over the version's meaning (id, date and definitions), not over who registered it.
    pub fn content_hash(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(format!("id={};applies_from={}", self.id, self.applies_from));
        for (name, def) in &self.features {
            hasher.update(format!(";{name}={def}"));
        }
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// `applies_from` is written as `YYYY-MM-DD` in files and catalogs.
mod date_text {
    use crate::record::Date;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(date: &Date, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(date)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A feature-set file in `config/feature_sets/`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSetFile {
    /// The table the versions belong to.
    pub table: String,
    pub versions: Vec<FeatureSetVersion>,
}

impl FeatureSetFile {
    /// Parses and validates the text of a feature-set file read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<FeatureSetFile, PlanError> {
        let file: FeatureSetFile = toml::from_str(text).map_err(|error| PlanError::Parse {
            path: path.to_owned(),
            message: error.to_string(),
        })?;
        FeaturePlan::new(&file.table, file.versions.clone())?;
        Ok(file)
    }
}

/// Why a plan or a new version is refused.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("feature set {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("table `{table}` has no feature-set version")]
    Empty { table: String },
    #[error("version {id} of `{table}` must have id {expected}: ids start at 0 and go up by one")]
    NonConsecutive {
        table: String,
        id: u32,
        expected: u32,
    },
    #[error("version {id} of `{table}` applies from {date}, not after version {previous} ({previous_date}): versions must apply from later dates")]
    DateNotAfter {
        table: String,
        id: u32,
        date: Date,
        previous: u32,
        previous_date: Date,
    },
    #[error("version {id} of `{table}` drops feature `{feature}`: evolution is add-only, a column is never dropped")]
    DropsFeature {
        table: String,
        id: u32,
        feature: String,
    },
    #[error("version {id} of `{table}` changes the type of `{feature}` from {from} to {to}: a column's type never changes")]
    ChangesType {
        table: String,
        id: u32,
        feature: String,
        from: &'static str,
        to: &'static str,
    },
    #[error("feature name `{feature}` in version {id} of `{table}` is not allowed: {why}")]
    BadName {
        table: String,
        id: u32,
        feature: String,
        why: &'static str,
    },
}

/// The versions of one table, validated against the evolution rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeaturePlan {
    pub table: String,
    pub versions: Vec<FeatureSetVersion>,
}

impl FeaturePlan {
    pub fn new(table: &str, versions: Vec<FeatureSetVersion>) -> Result<FeaturePlan, PlanError> {
        if versions.is_empty() {
            return Err(PlanError::Empty {
                table: table.to_owned(),
            });
        }
        for (i, version) in versions.iter().enumerate() {
            let previous = i.checked_sub(1).map(|p| &versions[p]);
            check_evolution(table, previous, version)?;
        }
        Ok(FeaturePlan {
            table: table.to_owned(),
            versions,
        })
    }

    /// The version in force at `date`: the last one whose `applies_from` is not after it.
    pub fn version_at(&self, date: Date) -> Option<&FeatureSetVersion> {
        self.versions.iter().rev().find(|v| v.applies_from <= date)
    }

    /// Every feature column the table has, in the order versions introduced them.
    pub fn columns(&self) -> Vec<(String, FeatureDef)> {
        let mut columns: IndexMap<String, FeatureDef> = IndexMap::new();
        for version in &self.versions {
            for (name, def) in &version.features {
                columns.entry(name.clone()).or_insert(*def);
            }
        }
        columns.into_iter().collect()
    }

    /// The distinct definitions any version uses: what the window operator computes per row.
    pub fn definitions(&self) -> Vec<FeatureDef> {
        let mut defs: Vec<FeatureDef> = Vec::new();
        for def in self.versions.iter().flat_map(|v| v.features.values()) {
            if !defs.contains(def) {
                defs.push(*def);
            }
        }
        defs
    }

    /// For each version, the index into [`Self::definitions`] of each of its features.
    pub fn definition_slots(&self) -> Vec<Vec<usize>> {
        let defs = self.definitions();
        self.versions
            .iter()
            .map(|v| {
                v.features
                    .values()
                    .map(|d| defs.iter().position(|x| x == d).expect("listed"))
                    .collect()
            })
            .collect()
    }

    /// The comment on a feature column: its definition in each version that has it, e.g.
    /// `riskflow feature: ema(50) since version 2 (sma(50) in versions 0-1; ema(50) in version 2)`.
    pub fn column_comment(&self, name: &str) -> String {
        let mut parts: Vec<(String, Vec<u32>)> = Vec::new();
        for version in &self.versions {
            if let Some(def) = version.features.get(name) {
                let def = def.to_string();
                match parts.last_mut() {
                    Some((d, ids)) if *d == def => ids.push(version.id),
                    _ => parts.push((def, vec![version.id])),
                }
            }
        }
        let spans: Vec<String> = parts
            .iter()
            .map(|(def, ids)| match ids.as_slice() {
                [one] => format!("{def} in version {one}"),
                [first, .., last] => format!("{def} in versions {first}-{last}"),
                [] => unreachable!("a part has a version"),
            })
            .collect();
        let since = parts
            .last()
            .map(|(def, ids)| format!("riskflow feature: {def} since version {}", ids[0]))
            .unwrap_or_default();
        format!("{since} ({})", spans.join("; "))
    }
}

/// Checks that `next` may follow `previous` (or start a table when `previous` is `None`).
pub fn check_evolution(
    table: &str,
    previous: Option<&FeatureSetVersion>,
    next: &FeatureSetVersion,
) -> Result<(), PlanError> {
    let expected = previous.map_or(0, |p| p.id + 1);
    if next.id != expected {
        return Err(PlanError::NonConsecutive {
            table: table.to_owned(),
            id: next.id,
            expected,
        });
    }
    for name in next.features.keys() {
        check_name(table, next.id, name)?;
    }
    let Some(previous) = previous else {
        return Ok(());
    };
    if next.applies_from <= previous.applies_from {
        return Err(PlanError::DateNotAfter {
            table: table.to_owned(),
            id: next.id,
            date: next.applies_from,
            previous: previous.id,
            previous_date: previous.applies_from,
        });
    }
    for (name, old) in &previous.features {
        match next.features.get(name) {
            None => {
                return Err(PlanError::DropsFeature {
                    table: table.to_owned(),
                    id: next.id,
                    feature: name.clone(),
                })
            }
            Some(new) if new.column_type != old.column_type => {
                return Err(PlanError::ChangesType {
                    table: table.to_owned(),
                    id: next.id,
                    feature: name.clone(),
                    from: old.column_type.name(),
                    to: new.column_type.name(),
                })
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn check_name(table: &str, id: u32, name: &str) -> Result<(), PlanError> {
    let bad = |why| PlanError::BadName {
        table: table.to_owned(),
        id,
        feature: name.to_owned(),
        why,
    };
    let mut chars = name.chars();
    let starts_well = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !starts_well
        || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        || name.len() > 63
    {
        return Err(bad(
            "use lower-case letters, digits and `_`, starting with a letter (at most 63)",
        ));
    }
    if name.starts_with('_') {
        return Err(bad(
            "names starting with `_` are reserved for bookkeeping columns",
        ));
    }
    if BASE_COLUMNS.contains(&name) {
        return Err(bad("it is a source column"));
    }
    Ok(())
}

/// A version from text, for unit tests: `version(1, "2009-01-01", &[("ma50", "sma(50)")])`.
#[cfg(test)]
pub(crate) fn version(id: u32, date: &str, features: &[(&str, &str)]) -> FeatureSetVersion {
    FeatureSetVersion {
        id,
        applies_from: date.parse().unwrap(),
        features: features
            .iter()
            .map(|(n, d)| (n.to_string(), d.parse().unwrap()))
            .collect(),
        registered_by: String::new(),
        registered_at: String::new(),
    }
}

/// The shipped plan of DESIGN §4 (table `loan_features`), for unit tests.
#[cfg(test)]
pub(crate) fn default_plan() -> FeaturePlan {
    FeaturePlan::new(
        "loan_features",
        vec![
            version(0, "2007-01-01", &[("ma50", "sma(50)")]),
            version(
                1,
                "2009-01-01",
                &[("ma50", "sma(50)"), ("ma100", "sma(100)")],
            ),
            version(
                2,
                "2012-01-01",
                &[("ma50", "ema(50)"), ("ma100", "sma(100)")],
            ),
        ],
    )
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_comments_give_each_definition_with_its_versions() {
        let plan = default_plan();
        assert_eq!(
            plan.column_comment("ma50"),
            "riskflow feature: ema(50) since version 2 (sma(50) in versions 0-1; ema(50) in version 2)"
        );
        assert_eq!(
            plan.column_comment("ma100"),
            "riskflow feature: sma(100) since version 1 (sma(100) in versions 1-2)"
        );
    }

    #[test]
    fn the_version_in_force_follows_the_dates() {
        let plan = default_plan();
        let at = |d: &str| plan.version_at(d.parse().unwrap()).map(|v| v.id);
        assert_eq!(at("2006-12-31"), None);
        assert_eq!(at("2008-12-31"), Some(0));
        assert_eq!(at("2009-01-01"), Some(1));
        assert_eq!(at("2011-12-31"), Some(1));
        assert_eq!(at("2012-01-01"), Some(2));
    }

    #[test]
    fn columns_are_added_once_and_definitions_are_distinct() {
        let plan = default_plan();
        let names: Vec<_> = plan.columns().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["ma50", "ma100"]);
        let defs: Vec<_> = plan.definitions().iter().map(|d| d.to_string()).collect();
        assert_eq!(defs, ["sma(50)", "sma(100)", "ema(50)"]);
        assert_eq!(plan.definition_slots(), [vec![0], vec![0, 1], vec![2, 1]]);
    }

    #[test]
    fn evolution_is_add_only() {
        let plan = default_plan();
        let v2 = &plan.versions[2];
        let drop = version(3, "2013-01-01", &[("ma50", "ema(50)")]);
        let err = check_evolution("t", Some(v2), &drop)
            .unwrap_err()
            .to_string();
        assert!(err.contains("drops feature `ma100`"), "{err}");
        let retype = version(
            3,
            "2013-01-01",
            &[("ma50", "ema(50) as real"), ("ma100", "sma(100)")],
        );
        let err = check_evolution("t", Some(v2), &retype)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("changes the type of `ma50` from double to real"),
            "{err}"
        );
        let early = version(
            3,
            "2010-01-01",
            &[("ma50", "ema(50)"), ("ma100", "sma(100)")],
        );
        assert!(matches!(
            check_evolution("t", Some(v2), &early),
            Err(PlanError::DateNotAfter { .. })
        ));
        let gap = version(
            5,
            "2013-01-01",
            &[("ma50", "ema(50)"), ("ma100", "sma(100)")],
        );
        assert!(matches!(
            check_evolution("t", Some(v2), &gap),
            Err(PlanError::NonConsecutive { .. })
        ));
        let bad = version(
            3,
            "2013-01-01",
            &[
                ("ma50", "ema(50)"),
                ("ma100", "sma(100)"),
                ("State", "sma(5)"),
            ],
        );
        assert!(matches!(
            check_evolution("t", Some(v2), &bad),
            Err(PlanError::BadName { .. })
        ));
    }

    #[test]
    fn the_hash_covers_meaning_not_registration() {
        let a = version(1, "2009-01-01", &[("ma50", "sma(50)")]);
        let mut b = a.clone();
        b.registered_by = "someone".into();
        assert_eq!(a.content_hash(), b.content_hash());
        let c = version(1, "2009-01-01", &[("ma50", "ema(50)")]);
        assert_ne!(a.content_hash(), c.content_hash());
    }
}
