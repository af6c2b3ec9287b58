//! The catalog inside a PostgreSQL or Redshift store: the same `feature_versions` table as the
//! embedded one, next to the feature tables it describes.

use super::{Catalog, CatalogError};
use crate::plan::FeatureSetVersion;
use postgres::error::SqlState;
use postgres::{Client, NoTls};

/// The `feature_versions` table of a PostgreSQL or Redshift database.
pub struct ServerCatalog {
    client: Client,
}

impl ServerCatalog {
    /// Connects and creates the table if needed; `text` is the dialect's text type.
    pub fn connect(url: &str, text: &str) -> Result<ServerCatalog, CatalogError> {
        let mut client = Client::connect(url, NoTls)?;
        let created = client.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS feature_versions (
                table_name {text} NOT NULL, version INTEGER NOT NULL, applies_from {text} NOT NULL,
                features {text} NOT NULL, content_hash {text} NOT NULL,
                registered_by {text} NOT NULL, registered_at {text} NOT NULL,
                PRIMARY KEY (table_name, version))"
        ));
        match created {
            // Another connection (a cluster's other process) created it at the same moment:
            // PostgreSQL's IF NOT EXISTS does not cover that race.
            Err(e)
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION)
                    || e.code() == Some(&SqlState::DUPLICATE_TABLE) => {}
            other => other?,
        }
        Ok(ServerCatalog { client })
    }
}

impl Catalog for ServerCatalog {
    fn versions(&mut self, table: &str) -> Result<Vec<FeatureSetVersion>, CatalogError> {
        let rows = self.client.query(
            "SELECT version, applies_from, features, content_hash, registered_by, registered_at
             FROM feature_versions WHERE table_name = $1 ORDER BY version",
            &[&table],
        )?;
        rows.iter()
            .map(|r| {
                let id = r.get::<_, i32>(0) as u32;
                super::stored_version(table, id, r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))
            })
            .collect()
    }

    fn insert(&mut self, table: &str, version: &FeatureSetVersion) -> Result<(), CatalogError> {
        // Redshift does not enforce keys: take a lock so two registrations cannot both insert.
        let mut tx = self.client.transaction()?;
        tx.batch_execute("LOCK feature_versions")?;
        let taken = tx
            .query_opt(
                "SELECT 1 FROM feature_versions WHERE table_name = $1 AND version = $2",
                &[&table, &(version.id as i32)],
            )?
            .is_some();
        if taken {
            return Err(CatalogError::Conflict {
                table: table.to_owned(),
                id: version.id,
            });
        }
        let features = serde_json::to_string(&version.features).expect("definitions serialize");
        let inserted = tx.execute(
            "INSERT INTO feature_versions VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &table,
                &(version.id as i32),
                &version.applies_from.to_string(),
                &features,
                &version.content_hash(),
                &version.registered_by,
                &version.registered_at,
            ],
        );
        match inserted {
            Ok(_) => Ok(tx.commit()?),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Err(CatalogError::Conflict {
                    table: table.to_owned(),
                    id: version.id,
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}
