//! The catalog of feature-set versions. The embedded catalog (the `feature_versions` table of
//! the store: SQLite, PostgreSQL or Redshift) is the default; AWS Glue is the production one
//! (`--catalog glue://…`); the in-memory one serves stores that have no tables of their own (the
//! CSV export). All apply the same evolution rules (`crate::plan`).

pub mod commands;
mod embedded;
mod glue;
mod server;

pub use embedded::SqliteCatalog;
pub use glue::{GlueCatalog, GlueUrl};
pub use server::ServerCatalog;

use crate::plan::{check_evolution, FeaturePlan, FeatureSetVersion, PlanError};
use std::collections::HashMap;

/// What registering a version did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// The version was new and is now registered.
    Registered,
    /// An identical version was already registered.
    AlreadyRegistered,
}

/// Errors of a catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Evolution(#[from] PlanError),
    #[error("version {id} of `{table}` is already registered with different content (hash {registered}, new {new}): versions are immutable, register the change as version {next}")]
    Immutable {
        table: String,
        id: u32,
        registered: String,
        new: String,
        next: u32,
    },
    #[error(
        "version {id} of `{table}` was registered by someone else meanwhile; reload and retry"
    )]
    Conflict { table: String, id: u32 },
    #[error("catalog storage failed")]
    Storage(#[from] rusqlite::Error),
    #[error("catalog database failed")]
    Server(#[from] postgres::Error),
    #[error("{0} keeps no catalog (a CSV export registers its versions for one run only)")]
    NoCatalog(String),
    #[error("AWS Glue: {0}")]
    Glue(String),
    #[error("catalog entry for `{table}` version {id} is corrupt: {why}")]
    Corrupt { table: String, id: u32, why: String },
}

impl CatalogError {
    /// Whether retrying can help: only a lost race (after reloading) or a storage hiccup.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            CatalogError::Conflict { .. } | CatalogError::Storage(_) | CatalogError::Server(_)
        )
    }
}

/// A place where feature-set versions are registered and read back.
pub trait Catalog {
    /// The registered versions of `table`, oldest first.
    fn versions(&mut self, table: &str) -> Result<Vec<FeatureSetVersion>, CatalogError>;

    /// Stores a version that [`plan_registration`] accepted. Fails with
    /// [`CatalogError::Conflict`] if another writer registered the same id first.
    fn insert(&mut self, table: &str, version: &FeatureSetVersion) -> Result<(), CatalogError>;

    /// Registers `version` after checking it against what is registered; registering an identical
    /// version again is a no-op.
    fn register(
        &mut self,
        table: &str,
        version: &FeatureSetVersion,
    ) -> Result<Registration, CatalogError> {
        let existing = self.versions(table)?;
        match plan_registration(table, &existing, version)? {
            None => Ok(Registration::AlreadyRegistered),
            Some(stamped) => {
                self.insert(table, &stamped)?;
                Ok(Registration::Registered)
            }
        }
    }

    /// Registers every version of a feature-set file (in order) and returns the table's plan as
    /// the catalog now holds it.
    fn register_all(
        &mut self,
        table: &str,
        versions: &[FeatureSetVersion],
    ) -> Result<FeaturePlan, CatalogError> {
        for version in versions {
            let outcome = self.register(table, version)?;
            tracing::debug!(
                table,
                version = version.id,
                ?outcome,
                "Feature-set version registration."
            );
        }
        Ok(FeaturePlan::new(table, self.versions(table)?)?)
    }
}

/// Decides what registering `version` means given the `existing` versions: `None` when an
/// identical one is registered, or the version to insert (stamped with who and when).
pub fn plan_registration(
    table: &str,
    existing: &[FeatureSetVersion],
    version: &FeatureSetVersion,
) -> Result<Option<FeatureSetVersion>, CatalogError> {
    if let Some(registered) = existing.iter().find(|v| v.id == version.id) {
        let (registered_hash, new) = (registered.content_hash(), version.content_hash());
        if registered_hash == new {
            return Ok(None);
        }
        return Err(CatalogError::Immutable {
            table: table.to_owned(),
            id: version.id,
            registered: registered_hash,
            new,
            next: existing.len() as u32,
        });
    }
    check_evolution(table, existing.last(), version)?;
    let mut stamped = version.clone();
    if stamped.registered_by.is_empty() {
        stamped.registered_by = std::env::var("USER").unwrap_or_else(|_| "riskflow".to_owned());
    }
    if stamped.registered_at.is_empty() {
        stamped.registered_at = crate::time::now_rfc3339();
    }
    Ok(Some(stamped))
}

/// The catalog named by `--catalog` (Glue), or else the one the store keeps: the embedded one
/// in a SQLite file, or the same table in a PostgreSQL/Redshift database. A CSV export has none.
pub fn open(
    store: &crate::sink::StoreUrl,
    glue: Option<&GlueUrl>,
) -> Result<Box<dyn Catalog>, CatalogError> {
    use crate::sink::StoreUrl;
    if let Some(url) = glue {
        return Ok(Box::new(GlueCatalog::open(url)?));
    }
    Ok(match store {
        StoreUrl::Sqlite(path) => Box::new(SqliteCatalog::open(path)?),
        StoreUrl::Server { url, dialect, .. } => {
            Box::new(ServerCatalog::connect(url, dialect.text())?)
        }
        StoreUrl::Csv(_) => return Err(CatalogError::NoCatalog(store.to_string())),
    })
}

/// A version as a catalog table holds it, checked against its stored hash.
fn stored_version(
    table: &str,
    id: u32,
    applies_from: String,
    features: String,
    hash: String,
    registered_by: String,
    registered_at: String,
) -> Result<FeatureSetVersion, CatalogError> {
    let corrupt = |why: String| CatalogError::Corrupt {
        table: table.to_owned(),
        id,
        why,
    };
    let version = FeatureSetVersion {
        id,
        applies_from: applies_from.parse().map_err(corrupt)?,
        features: serde_json::from_str(&features).map_err(|e| corrupt(e.to_string()))?,
        registered_by,
        registered_at,
    };
    if version.content_hash() != hash {
        return Err(corrupt(format!(
            "stored hash {hash} does not match its content"
        )));
    }
    Ok(version)
}

/// A catalog that lives as long as the process: for stores without tables of their own.
#[derive(Default)]
pub struct MemoryCatalog {
    tables: HashMap<String, Vec<FeatureSetVersion>>,
}

impl Catalog for MemoryCatalog {
    fn versions(&mut self, table: &str) -> Result<Vec<FeatureSetVersion>, CatalogError> {
        Ok(self.tables.get(table).cloned().unwrap_or_default())
    }

    fn insert(&mut self, table: &str, version: &FeatureSetVersion) -> Result<(), CatalogError> {
        let versions = self.tables.entry(table.to_owned()).or_default();
        if versions.iter().any(|v| v.id == version.id) {
            return Err(CatalogError::Conflict {
                table: table.to_owned(),
                id: version.id,
            });
        }
        versions.push(version.clone());
        Ok(())
    }
}
