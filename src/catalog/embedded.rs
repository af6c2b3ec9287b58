//! The embedded catalog: the `feature_versions` table inside the SQLite store.

use super::{Catalog, CatalogError};
use crate::plan::FeatureSetVersion;
use rusqlite::{params, Connection, ErrorCode};
use std::path::Path;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS feature_versions (
    table_name    TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    applies_from  TEXT    NOT NULL,
    features      TEXT    NOT NULL, -- JSON object: feature name -> definition, in column order
    content_hash  TEXT    NOT NULL,
    registered_by TEXT    NOT NULL,
    registered_at TEXT    NOT NULL,
    PRIMARY KEY (table_name, version)
)";

/// The `feature_versions` table of a SQLite file.
pub struct SqliteCatalog {
    conn: Connection,
}

impl SqliteCatalog {
    pub fn open(path: &Path) -> Result<SqliteCatalog, CatalogError> {
        let conn = crate::sink::open_sqlite_store(path)?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteCatalog { conn })
    }
}

impl Catalog for SqliteCatalog {
    fn versions(&mut self, table: &str) -> Result<Vec<FeatureSetVersion>, CatalogError> {
        let mut stmt = self.conn.prepare(
            "SELECT version, applies_from, features, content_hash, registered_by, registered_at
             FROM feature_versions WHERE table_name = ?1 ORDER BY version",
        )?;
        let rows = stmt.query_map([table], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?;
        let mut versions = Vec::new();
        for row in rows {
            let (id, applies_from, features, hash, registered_by, registered_at) = row?;
            versions.push(super::stored_version(
                table,
                id,
                applies_from,
                features,
                hash,
                registered_by,
                registered_at,
            )?);
        }
        Ok(versions)
    }

    fn insert(&mut self, table: &str, version: &FeatureSetVersion) -> Result<(), CatalogError> {
        let features = serde_json::to_string(&version.features).expect("definitions serialize");
        let inserted = self.conn.execute(
            "INSERT INTO feature_versions VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                table,
                version.id,
                version.applies_from.to_string(),
                features,
                version.content_hash(),
                version.registered_by,
                version.registered_at
            ],
        );
        match inserted {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::ConstraintViolation =>
            {
                Err(CatalogError::Conflict {
                    table: table.to_owned(),
                    id: version.id,
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}
