//! The catalog on AWS Glue (`--catalog glue://DATABASE[/TABLE]`), as the original kept its
//! schema versions: one Glue table per feature table, one Glue table version per feature-set
//! version.
//!
//! Each version is written whole: the table's columns (base columns, every feature column with a
//! comment saying which definition it holds since which version, `_row`, `_version`,
//! `_modified_ts`) and, in the table `Parameters`, the version's id, the date it applies from, its
//! definitions (JSON), its content hash and who registered it when. Version 0 creates the table
//! (and the database when missing); later versions are `UpdateTable`s that archive the previous
//! one, so `GetTableVersions` is the history.
//!
//! Two registrations racing: each `UpdateTable` names the table version it read (`VersionId`),
//! so Glue refuses the second with a concurrent-modification error. Servers that do not check
//! `VersionId` (moto) are covered too: after writing, a registration reads the history back,
//! and the first Glue version that claims a feature-set id is that id's content. The later one
//! gets [`CatalogError::Conflict`]; its leftover Glue version is ignored when reading.

use super::{Catalog, CatalogError};
use crate::features::ColumnType;
use crate::plan::{FeaturePlan, FeatureSetVersion};
use crate::record::BASE_COLUMNS;
use aws_sdk_glue::error::DisplayErrorContext;
use aws_sdk_glue::types::{Column, DatabaseInput, StorageDescriptor, Table, TableInput};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// `glue://DATABASE[/TABLE]`: the Glue database, and optionally the one Glue table to use
/// (otherwise each feature table has a Glue table of the same name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlueUrl {
    pub database: String,
    pub table: Option<String>,
}

impl FromStr for GlueUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<GlueUrl, String> {
        let bad = || {
            format!("`{text}` is not a Glue catalog: use glue://DATABASE or glue://DATABASE/TABLE")
        };
        let rest = text.strip_prefix("glue://").ok_or_else(bad)?;
        let (database, table) = match rest.split_once('/') {
            Some((database, table)) => (database, Some(table)),
            None => (rest, None),
        };
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !name_ok(database) || table.is_some_and(|t| !name_ok(t)) {
            return Err(bad());
        }
        Ok(GlueUrl {
            database: database.to_owned(),
            table: table.map(str::to_owned),
        })
    }
}

impl fmt::Display for GlueUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "glue://{}", self.database)?;
        match &self.table {
            Some(table) => write!(f, "/{table}"),
            None => Ok(()),
        }
    }
}

/// Parameter keys of a riskflow table version.
const P_VERSION: &str = "riskflow.version";
const P_APPLIES_FROM: &str = "riskflow.applies_from";
const P_FEATURES: &str = "riskflow.features";
const P_HASH: &str = "riskflow.content_hash";
const P_BY: &str = "riskflow.registered_by";
const P_AT: &str = "riskflow.registered_at";
const P_TABLE: &str = "riskflow.table";

/// Glue types of the base columns, in [`BASE_COLUMNS`] order.
const BASE_TYPES: [&str; 9] = [
    "double", "date", "string", "double", "string", "string", "string", "string", "string",
];

/// A Glue database used as the catalog.
pub struct GlueCatalog {
    url: GlueUrl,
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_glue::Client,
}

impl GlueCatalog {
    pub fn open(url: &GlueUrl) -> Result<GlueCatalog, CatalogError> {
        let runtime = crate::aws::runtime().map_err(|e| glue_error("start a runtime", e))?;
        let config = runtime.block_on(crate::aws::config());
        Ok(GlueCatalog {
            url: url.clone(),
            runtime,
            client: aws_sdk_glue::Client::new(&config),
        })
    }

    /// The Glue table that keeps `table`'s versions.
    fn glue_table<'a>(&'a self, table: &'a str) -> Result<&'a str, CatalogError> {
        match &self.url.table {
            None => Ok(table),
            Some(glue) if glue == table => Ok(glue),
            Some(glue) => Err(CatalogError::Glue(format!(
                "{} keeps the versions of `{glue}`, not of `{table}` (use glue://{} for one Glue table per feature table)",
                self.url, self.url.database
            ))),
        }
    }

    /// The table as it is now, if it exists.
    fn current(&self, glue_table: &str) -> Result<Option<Table>, CatalogError> {
        let got = self.runtime.block_on(
            self.client
                .get_table()
                .database_name(&self.url.database)
                .name(glue_table)
                .send(),
        );
        match got {
            Ok(out) => Ok(out.table),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_entity_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(glue_error("read the table", e)),
        }
    }

    /// Every Glue version of the table, oldest first (all pages).
    fn table_versions(&self, glue_table: &str) -> Result<Vec<(u64, Table)>, CatalogError> {
        let pages = self.runtime.block_on(
            self.client
                .get_table_versions()
                .database_name(&self.url.database)
                .table_name(glue_table)
                .into_paginator()
                .send()
                .try_collect(),
        );
        let pages = match pages {
            Ok(pages) => pages,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_entity_not_found_exception()) =>
            {
                return Ok(Vec::new())
            }
            Err(e) => return Err(glue_error("read the table versions", e)),
        };
        let mut versions: Vec<(u64, Table)> = pages
            .into_iter()
            .flat_map(|page| page.table_versions.unwrap_or_default())
            .filter_map(|v| {
                let id = v.version_id.as_deref()?.parse().ok()?;
                Some((id, v.table?))
            })
            .collect();
        versions.sort_by_key(|(id, _)| *id);
        Ok(versions)
    }

    fn create_database(&self) -> Result<(), CatalogError> {
        let input = DatabaseInput::builder()
            .name(&self.url.database)
            .description("riskflow feature-set versions")
            .build()
            .map_err(|e| glue_error("describe the database", e))?;
        let created = self
            .runtime
            .block_on(self.client.create_database().database_input(input).send());
        match created {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_already_exists_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(glue_error("create the database", e)),
        }
    }
}

impl Catalog for GlueCatalog {
    fn versions(&mut self, table: &str) -> Result<Vec<FeatureSetVersion>, CatalogError> {
        let glue_table = self.glue_table(table)?;
        let mut versions: Vec<FeatureSetVersion> = Vec::new();
        for (glue_version, stored) in self.table_versions(glue_table)? {
            let Some(version) = riskflow_version(table, &stored)? else {
                continue; // a Glue version written by something else than riskflow
            };
            match versions.iter().find(|v| v.id == version.id) {
                None => versions.push(version),
                Some(first) if first.content_hash() != version.content_hash() => {
                    tracing::warn!(table, glue_version, id = version.id,
                        "Ignoring a Glue table version that claims a feature-set id registered before it (a registration that lost a race).");
                }
                Some(_) => {}
            }
        }
        versions.sort_by_key(|v| v.id);
        Ok(versions)
    }

    fn insert(&mut self, table: &str, version: &FeatureSetVersion) -> Result<(), CatalogError> {
        let glue_table = self.glue_table(table)?.to_owned();
        let conflict = || CatalogError::Conflict {
            table: table.to_owned(),
            id: version.id,
        };
        let mut history = self.versions(table)?;
        history.retain(|v| v.id < version.id);
        history.push(version.clone());
        let input = table_input(&glue_table, table, &history)?;
        match self.current(&glue_table)? {
            None if version.id == 0 => {
                self.create_database()?;
                let created = self.runtime.block_on(
                    self.client
                        .create_table()
                        .database_name(&self.url.database)
                        .table_input(input)
                        .send(),
                );
                match created {
                    Ok(_) => {}
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|e| e.is_already_exists_exception()) =>
                    {
                        return Err(conflict())
                    }
                    Err(e) => return Err(glue_error("create the table", e)),
                }
            }
            None => return Err(conflict()),
            Some(current) => {
                let current_id = current
                    .parameters()
                    .and_then(|p| p.get(P_VERSION))
                    .and_then(|v| v.parse::<u32>().ok());
                if current_id.is_none_or(|id| id + 1 != version.id) {
                    return Err(conflict());
                }
                let mut update = self
                    .client
                    .update_table()
                    .database_name(&self.url.database)
                    .table_input(input)
                    .skip_archive(false);
                if let Some(read) = current.version_id() {
                    update = update.version_id(read);
                }
                match self.runtime.block_on(update.send()) {
                    Ok(_) => {}
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|e| e.is_concurrent_modification_exception()) =>
                    {
                        return Err(conflict())
                    }
                    Err(e) => return Err(glue_error("update the table", e)),
                }
            }
        }
        // Read back: the first Glue version claiming this id must be ours.
        let stored = self.versions(table)?;
        match stored.iter().find(|v| v.id == version.id) {
            Some(v) if v.content_hash() == version.content_hash() => Ok(()),
            _ => Err(conflict()),
        }
    }
}

/// The Glue table (version) that describes the last version of `history`.
fn table_input(
    glue_table: &str,
    table: &str,
    history: &[FeatureSetVersion],
) -> Result<TableInput, CatalogError> {
    let plan = FeaturePlan::new(table, history.to_vec())?;
    let version = history.last().expect("a version to write");
    let column = |name: &str, kind: &str, comment: &str| {
        Column::builder()
            .name(name)
            .r#type(kind)
            .comment(comment)
            .build()
            .map_err(|e| glue_error("describe a column", e))
    };
    let mut columns = Vec::new();
    for (name, kind) in BASE_COLUMNS.iter().zip(BASE_TYPES) {
        columns.push(column(name, kind, "input column")?);
    }
    for (name, def) in &version.features {
        let kind = match def.column_type {
            ColumnType::Double => "double",
            ColumnType::Real => "float",
        };
        columns.push(column(name, kind, &plan.column_comment(name))?);
    }
    columns.push(column(
        "_row",
        "bigint",
        "source position: the record's number in its input",
    )?);
    columns.push(column(
        "_version",
        "int",
        "the feature-set version that produced the row",
    )?);
    columns.push(column(
        "_modified_ts",
        "timestamp",
        "when the row was stored",
    )?);
    let features = serde_json::to_string(&version.features).expect("definitions serialize");
    let parameters = HashMap::from([
        (P_TABLE.to_owned(), table.to_owned()),
        (P_VERSION.to_owned(), version.id.to_string()),
        (P_APPLIES_FROM.to_owned(), version.applies_from.to_string()),
        (P_FEATURES.to_owned(), features),
        (P_HASH.to_owned(), version.content_hash()),
        (P_BY.to_owned(), version.registered_by.clone()),
        (P_AT.to_owned(), version.registered_at.clone()),
        ("classification".to_owned(), "riskflow".to_owned()),
    ]);
    TableInput::builder()
        .name(glue_table)
        .description(format!(
            "riskflow feature table `{table}`, feature-set version {} (applies from {})",
            version.id, version.applies_from
        ))
        .table_type("EXTERNAL_TABLE")
        .storage_descriptor(
            StorageDescriptor::builder()
                .set_columns(Some(columns))
                .build(),
        )
        .set_parameters(Some(parameters))
        .build()
        .map_err(|e| glue_error("describe the table", e))
}

/// The feature-set version a Glue table version holds, if riskflow wrote it.
fn riskflow_version(
    table: &str,
    stored: &Table,
) -> Result<Option<FeatureSetVersion>, CatalogError> {
    let Some(params) = stored.parameters() else {
        return Ok(None);
    };
    let Some(id) = params.get(P_VERSION) else {
        return Ok(None);
    };
    let id: u32 = id.parse().map_err(|_| CatalogError::Corrupt {
        table: table.to_owned(),
        id: 0,
        why: format!("Glue parameter {P_VERSION} is `{id}`, not a version id"),
    })?;
    let get = |key: &str| -> Result<String, CatalogError> {
        params
            .get(key)
            .cloned()
            .ok_or_else(|| CatalogError::Corrupt {
                table: table.to_owned(),
                id,
                why: format!("Glue parameter {key} is missing"),
            })
    };
    super::stored_version(
        table,
        id,
        get(P_APPLIES_FROM)?,
        get(P_FEATURES)?,
        get(P_HASH)?,
        get(P_BY)?,
        get(P_AT)?,
    )
    .map(Some)
}

/// A Glue call that failed, with the service's own code and message.
fn glue_error(action: &str, error: impl std::error::Error) -> CatalogError {
    CatalogError::Glue(format!("cannot {action}: {}", DisplayErrorContext(&error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_database_and_maybe_a_table() {
        assert_eq!(
            "glue://features".parse(),
            Ok(GlueUrl {
                database: "features".into(),
                table: None
            })
        );
        let url: GlueUrl = "glue://features/loan_features".parse().unwrap();
        assert_eq!(url.table.as_deref(), Some("loan_features"));
        assert_eq!(url.to_string(), "glue://features/loan_features");
        assert!("glue://".parse::<GlueUrl>().is_err());
        assert!("glue://a/b/c".parse::<GlueUrl>().is_err());
        assert!("s3://a".parse::<GlueUrl>().is_err());
    }

    #[test]
    fn a_table_version_carries_the_columns_comments_and_definitions() {
        let plan = crate::plan::default_plan();
        let input = table_input("loan_features", "loan_features", &plan.versions).unwrap();
        let columns = input.storage_descriptor().unwrap().columns();
        let ma50 = columns.iter().find(|c| c.name() == "ma50").unwrap();
        assert_eq!(ma50.comment(), Some(plan.column_comment("ma50").as_str()));
        assert_eq!(columns.len(), BASE_COLUMNS.len() + 2 + 3);
        let params = input.parameters().unwrap();
        assert_eq!(params[P_VERSION], "2");
        assert_eq!(params[P_HASH], plan.versions[2].content_hash());
        let back = riskflow_version(
            "loan_features",
            &Table::builder()
                .name("loan_features")
                .set_parameters(Some(params.clone()))
                .build()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(back.as_ref(), Some(&plan.versions[2]));
    }
}
