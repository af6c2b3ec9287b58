//! `riskflow catalog list | show V | diff V1 V2 | register FILE | validate FILE`: the feature-set
//! versions a store's catalog holds, as readable tables or JSON.

use super::{plan_registration, Catalog, CatalogError, Registration};
use crate::features::FeatureDef;
use crate::plan::{FeatureSetFile, FeatureSetVersion};
use serde::Serialize;
use std::fmt::Write as _;

/// One version as `list` and `show` print it.
#[derive(Clone, Debug, Serialize)]
pub struct VersionView {
    pub version: u32,
    pub applies_from: String,
    /// Feature name → definition, in column order.
    pub features: indexmap::IndexMap<String, String>,
    pub content_hash: String,
    pub registered_by: String,
    pub registered_at: String,
}

impl From<&FeatureSetVersion> for VersionView {
    fn from(v: &FeatureSetVersion) -> Self {
        VersionView {
            version: v.id,
            applies_from: v.applies_from.to_string(),
            features: v
                .features
                .iter()
                .map(|(n, d)| (n.clone(), d.to_string()))
                .collect(),
            content_hash: v.content_hash(),
            registered_by: v.registered_by.clone(),
            registered_at: v.registered_at.clone(),
        }
    }
}

/// How a feature differs between two versions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum FeatureChange {
    Added { definition: String },
    Removed { definition: String },
    Changed { from: String, to: String },
    Unchanged { definition: String },
}

/// Per feature (in the newer version's column order, then removed ones): what changed.
pub fn diff(old: &FeatureSetVersion, new: &FeatureSetVersion) -> Vec<(String, FeatureChange)> {
    let show = |d: &FeatureDef| d.to_string();
    let mut changes: Vec<(String, FeatureChange)> = new
        .features
        .iter()
        .map(|(name, def)| {
            let change = match old.features.get(name) {
                None => FeatureChange::Added {
                    definition: show(def),
                },
                Some(before) if before == def => FeatureChange::Unchanged {
                    definition: show(def),
                },
                Some(before) => FeatureChange::Changed {
                    from: show(before),
                    to: show(def),
                },
            };
            (name.clone(), change)
        })
        .collect();
    for (name, def) in &old.features {
        if !new.features.contains_key(name) {
            changes.push((
                name.clone(),
                FeatureChange::Removed {
                    definition: show(def),
                },
            ));
        }
    }
    changes
}

/// The versions of `table` as a table.
pub fn render_list(table: &str, versions: &[FeatureSetVersion]) -> String {
    let mut out = format!("{table}: {} version(s)\n", versions.len());
    let rows: Vec<[String; 5]> = versions
        .iter()
        .map(|v| {
            let features: Vec<String> = v
                .features
                .iter()
                .map(|(n, d)| format!("{n} = {d}"))
                .collect();
            [
                v.id.to_string(),
                v.applies_from.to_string(),
                features.join(", "),
                v.content_hash().chars().take(12).collect(),
                format!("{} {}", v.registered_by, v.registered_at),
            ]
        })
        .collect();
    let header = ["version", "applies from", "features", "hash", "registered"];
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut line = |cells: [&str; 5]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "  {}", padded.join("  ").trim_end()).expect("string");
    };
    line(header);
    for r in &rows {
        line([&r[0], &r[1], &r[2], &r[3], &r[4]]);
    }
    out
}

/// One version in full.
pub fn render_show(table: &str, v: &FeatureSetVersion) -> String {
    let mut out = format!(
        "{table} version {}\n  applies from   {}\n  content hash   {}\n  registered     by {} at {}\n  features\n",
        v.id,
        v.applies_from,
        v.content_hash(),
        v.registered_by,
        v.registered_at
    );
    for (name, def) in &v.features {
        writeln!(out, "    {name:<12} {def}").expect("string");
    }
    out
}

/// A diff as text.
pub fn render_diff(
    table: &str,
    old: &FeatureSetVersion,
    new: &FeatureSetVersion,
    changes: &[(String, FeatureChange)],
) -> String {
    let mut out = format!("{table}: version {} → version {}\n", old.id, new.id);
    for (name, change) in changes {
        let what = match change {
            FeatureChange::Added { definition } => format!("added      {definition}"),
            FeatureChange::Removed { definition } => format!("removed    {definition}"),
            FeatureChange::Changed { from, to } => format!("changed    {from} → {to}"),
            FeatureChange::Unchanged { definition } => format!("unchanged  {definition}"),
        };
        writeln!(out, "  {name:<12} {what}").expect("string");
    }
    out
}

/// What `register` or `validate` would do with each version of a file.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub version: u32,
    /// `registered`, `already registered`, or (validate) `would register`.
    pub outcome: String,
}

/// Checks every version of `file` against the catalog, in order, without writing anything;
/// fails with the first rule a version breaks.
pub fn validate(
    catalog: &mut dyn Catalog,
    file: &FeatureSetFile,
) -> Result<Vec<Outcome>, CatalogError> {
    let mut existing = catalog.versions(&file.table)?;
    let mut outcomes = Vec::new();
    for version in &file.versions {
        let outcome = match plan_registration(&file.table, &existing, version)? {
            None => "already registered",
            Some(stamped) => {
                existing.push(stamped);
                "would register"
            }
        };
        outcomes.push(Outcome {
            version: version.id,
            outcome: outcome.to_owned(),
        });
    }
    Ok(outcomes)
}

/// Registers every version of `file` in order (each is checked first; nothing after a refused
/// version is registered).
pub fn register(
    catalog: &mut dyn Catalog,
    file: &FeatureSetFile,
) -> Result<Vec<Outcome>, CatalogError> {
    validate(catalog, file)?;
    file.versions
        .iter()
        .map(|version| {
            let outcome = match catalog.register(&file.table, version)? {
                Registration::Registered => "registered",
                Registration::AlreadyRegistered => "already registered",
            };
            Ok(Outcome {
                version: version.id,
                outcome: outcome.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::version;

    #[test]
    fn diff_says_added_changed_and_unchanged_per_feature() {
        let v1 = version(
            1,
            "2009-01-01",
            &[("ma50", "sma(50)"), ("ma100", "sma(100)")],
        );
        let v2 = version(
            2,
            "2012-01-01",
            &[
                ("ma50", "ema(50)"),
                ("ma100", "sma(100)"),
                ("ma20", "sma(20)"),
            ],
        );
        assert_eq!(
            diff(&v1, &v2),
            vec![
                (
                    "ma50".to_owned(),
                    FeatureChange::Changed {
                        from: "sma(50)".into(),
                        to: "ema(50)".into()
                    }
                ),
                (
                    "ma100".to_owned(),
                    FeatureChange::Unchanged {
                        definition: "sma(100)".into()
                    }
                ),
                (
                    "ma20".to_owned(),
                    FeatureChange::Added {
                        definition: "sma(20)".into()
                    }
                ),
            ]
        );
        assert_eq!(
            diff(&v2, &v1).last().unwrap(),
            &(
                "ma20".to_owned(),
                FeatureChange::Removed {
                    definition: "sma(20)".into()
                }
            )
        );
    }
}
