//! Stores that receive the dataflow's output, one epoch at a time.
//!
//! A sink gets a [`FeaturePlan`] to create or evolve its tables, then one [`EpochBatch`] per
//! completed epoch, in epoch order, each written atomically. The embedded SQLite store and the CSV
//! export are always built; PostgreSQL and Redshift implement the same trait.

mod csv;
mod postgres;
mod postgres_copy;
mod s3_staging;
mod sqlite;
mod sqlite_insert;

pub use self::csv::{push_csv_field, CsvSink};
pub use self::postgres::{Dialect, PostgresSink};
pub use self::s3_staging::S3Staging;
pub use self::sqlite::{open_store as open_sqlite_store, SqliteSink};

use crate::checkpoint::{Checkpoint, Resume};
use crate::dataflow::{StatDelta, StatKey};
use crate::features::{FeatureDef, FeatureValues};
use crate::plan::FeaturePlan;
use crate::record::{merged_row_order, Date, DeadLetter, LoanBatch, LoanRow, RowRef};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A row with the features of the version in force at its date (an owned copy, for display).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureRow {
    pub loan: LoanRow,
    /// The row's text columns (`loan.spans` index into it).
    pub text: String,
    pub version: u32,
    /// The version's features, in the version's order; `None` is SQL NULL.
    pub values: FeatureValues,
}

/// Consecutive rows (in `_row` order) with their versions and feature values: the unit the
/// dataflow moves, so a row is moved once per batch rather than once per operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureBatch {
    pub batch: LoanBatch,
    /// The version in force at each row's date.
    pub versions: Vec<u32>,
    /// Each row's values of its version's features, in the version's order.
    pub values: Vec<FeatureValues>,
}

impl FeatureRow {
    pub fn row(&self) -> RowRef<'_> {
        RowRef {
            loan: &self.loan,
            buffer: &self.text,
        }
    }
}

impl FeatureBatch {
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// The rows with their version and values.
    pub fn iter(&self) -> impl Iterator<Item = (RowRef<'_>, u32, &[Option<f64>])> + '_ {
        self.batch
            .iter()
            .zip(&self.versions)
            .zip(&self.values)
            .map(|((row, v), values)| (row, *v, &values[..]))
    }
}

/// Totals of one column for one version and day (a row of `feature_stats`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatTotal {
    pub version: u32,
    pub day: Date,
    /// `risk_score` or a feature name.
    pub column: String,
    pub rows: i64,
    pub nulls: i64,
    pub mean: Option<f64>,
    /// The exact sum of the non-null values, in millionths (what a resumed run adds on to).
    pub sum_micros: i128,
}

/// A `feature_stats` row as a store read it back.
pub struct StoredStat {
    pub version: u32,
    pub day: String,
    pub column: String,
    pub rows: i64,
    pub nulls: i64,
    pub sum_micros: i128,
}

/// The stored totals as the deltas a resumed run starts from (see [`Sink::resume`]).
pub fn stat_base(
    plan: &FeaturePlan,
    stored: Vec<StoredStat>,
) -> Result<Vec<(StatKey, StatDelta)>, String> {
    stored
        .into_iter()
        .map(|s| {
            let version = plan.versions.get(s.version as usize).ok_or_else(|| {
                format!(
                    "feature_stats has version {}, which is not registered",
                    s.version
                )
            })?;
            let column = if s.column == "risk_score" {
                0
            } else {
                1 + version.features.get_index_of(&s.column).ok_or_else(|| {
                    format!(
                        "feature_stats has column `{}` for version {}, which does not define it",
                        s.column, s.version
                    )
                })?
            };
            let day = Date::parse(&s.day)
                .ok_or_else(|| format!("feature_stats has a day `{}` that is not a date", s.day))?;
            let delta = StatDelta {
                rows: s.rows,
                nulls: s.nulls,
                sum_micros: s.sum_micros,
            };
            Ok(((s.version, day, column as u16), delta))
        })
        .collect()
}

/// A checkpoint's position and window state as the JSON a store keeps.
pub fn checkpoint_json(checkpoint: &Checkpoint) -> (String, String) {
    (
        serde_json::to_string(&checkpoint.position).expect("positions serialize"),
        serde_json::to_string(&checkpoint.windows).expect("window states serialize"),
    )
}

/// A checkpoint read back from a store.
pub fn parse_checkpoint(
    source: &str,
    epoch: u64,
    position: &str,
    windows: &str,
) -> Result<Checkpoint, String> {
    Ok(Checkpoint {
        source: source.to_owned(),
        epoch,
        position: serde_json::from_str(position)
            .map_err(|e| format!("its position `{position}` is not valid: {e}"))?,
        windows: serde_json::from_str(windows)
            .map_err(|e| format!("its window state is not valid: {e}"))?,
    })
}

/// A row with its version and that version's feature values.
pub type StoredRow<'a> = (RowRef<'a>, u32, &'a [Option<f64>]);

/// Everything one epoch produced, in row order.
#[derive(Debug, Default)]
pub struct EpochBatch {
    pub epoch: u64,
    /// Batches in `_row` order.
    pub rows: Vec<FeatureBatch>,
    pub dead_letters: Vec<DeadLetter>,
    pub stats: Vec<StatTotal>,
    /// Where the run resumes after this epoch; committed with it.
    pub checkpoint: Option<Checkpoint>,
    /// A live version changed the plan at this epoch: the store evolves before writing it.
    pub evolve: Option<FeaturePlan>,
}

impl EpochBatch {
    /// All rows of the epoch with their version and values, in `_row` order.
    ///
    /// Batches from a file are runs that follow each other; batches from Kafka partitions
    /// interleave and are merged here, so that stores insert in key order (a B-tree appended
    /// to at its end, rather than split in the middle).
    pub fn rows(&self) -> Box<dyn Iterator<Item = StoredRow<'_>> + '_> {
        let Some(order) = merged_row_order(self.rows.iter().map(|b| &b.batch.rows[..])) else {
            return Box::new(self.rows.iter().flat_map(FeatureBatch::iter));
        };
        Box::new(order.into_iter().map(move |(b, i)| {
            let batch = &self.rows[b as usize];
            let i = i as usize;
            (
                RowRef {
                    loan: &batch.batch.rows[i],
                    buffer: &batch.batch.text,
                },
                batch.versions[i],
                &batch.values[i][..],
            )
        }))
    }

    /// Whether the epoch has no rows, dead letters or stats to write.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.dead_letters.is_empty() && self.stats.is_empty()
    }

    /// The least and greatest `_row` of the epoch's rows.
    pub fn row_range(&self) -> Option<(u64, u64)> {
        let first = self.rows.iter().filter_map(|b| b.batch.first_row()).min()?;
        let last = self
            .rows
            .iter()
            .filter_map(|b| b.batch.rows.last().map(|r| r.row))
            .max()?;
        Some((first, last))
    }

    pub fn row_count(&self) -> usize {
        self.rows.iter().map(FeatureBatch::len).sum()
    }
}

/// A destination for feature rows.
pub trait Sink: Send {
    /// Creates the tables and views the plan needs, adding columns for new features.
    fn prepare(&mut self, plan: &FeaturePlan) -> Result<(), SinkError>;
    /// Takes on a newer plan mid-run (a live version): new columns and views, then rows with the
    /// new version's features.
    fn evolve(&mut self, plan: &FeaturePlan) -> Result<(), SinkError> {
        self.prepare(plan)
    }
    /// Takes on a plan whose tables another process has prepared (cluster process 0, or the
    /// catalog watcher of a live version): no DDL; an error while the store lacks a column the
    /// plan needs.
    fn adopt(&mut self, plan: &FeaturePlan) -> Result<(), SinkError> {
        self.prepare(plan)
    }
    /// The checkpoint last committed for `source` (see [`crate::checkpoint`]) with the
    /// `feature_stats` totals committed with it; `None` when the store has none or cannot keep
    /// one (a CSV export starts over).
    fn resume(&mut self, _source: &str, _plan: &FeaturePlan) -> Result<Option<Resume>, SinkError> {
        Ok(None)
    }
    /// The scores of the last `rows` distinct rows stored, in `_row` order (rows stored under
    /// several versions count once); empty for a store that cannot read back.
    fn recent_scores(&mut self, _rows: usize) -> Result<Vec<Option<f64>>, SinkError> {
        Ok(Vec::new())
    }
    /// How many rows of `version` dated `first` to `last` the table holds (0 for a store that
    /// cannot read back).
    fn stored_rows(&mut self, _version: u32, _first: Date, _last: Date) -> Result<u64, SinkError> {
        Ok(0)
    }
    /// Writes one epoch atomically, with its checkpoint.
    fn write_epoch(&mut self, batch: &EpochBatch) -> Result<(), SinkError>;
    /// Flushes whatever is buffered; called once after the last epoch.
    fn finish(&mut self) -> Result<(), SinkError>;
}

/// A store as a cluster process other than 0 writes it: process 0 creates and evolves the
/// tables; this one takes plans on without DDL and writes its rows (no checkpoints).
pub struct AdoptingSink(pub Box<dyn Sink>);

impl Sink for AdoptingSink {
    fn prepare(&mut self, plan: &FeaturePlan) -> Result<(), SinkError> {
        self.0.adopt(plan)
    }
    fn write_epoch(&mut self, batch: &EpochBatch) -> Result<(), SinkError> {
        self.0.write_epoch(batch)
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        self.0.finish()
    }
}

/// The last `limit` distinct rows of `(_row, score)` pairs read newest first (a row stored under
/// several versions comes once per version, consecutively), as scores in `_row` order.
pub fn oldest_first(
    newest_first: impl Iterator<Item = (i64, Option<f64>)>,
    limit: usize,
) -> Vec<Option<f64>> {
    let mut scores = Vec::new();
    let mut last = None;
    for (row, score) in newest_first {
        if last == Some(row) {
            continue;
        }
        if scores.len() == limit {
            break;
        }
        last = Some(row);
        scores.push(score);
    }
    scores.reverse();
    scores
}

/// For each version of `plan`, for each of the table's feature `columns`: the index of the
/// row's value that goes there (rows carry only their version's features), or `None`.
pub fn value_at_column(
    plan: &FeaturePlan,
    columns: &[(String, FeatureDef)],
) -> Vec<Vec<Option<usize>>> {
    plan.versions
        .iter()
        .map(|v| {
            columns
                .iter()
                .map(|(name, _)| v.features.get_index_of(name))
                .collect()
        })
        .collect()
}

/// Where the output goes, parsed from `--store`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite:PATH` (or a bare path ending in `.db`/`.sqlite`).
    Sqlite(PathBuf),
    /// `csv:PATH`: features in PATH, dead letters in `PATH.dead_letter.csv`; when PATH is a
    /// directory, one `<table>.csv` per table in it.
    Csv(PathBuf),
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DB` (or `postgresql://`), or the same with
    /// `redshift://` for Redshift's dialect; kept as a `postgres://` URL. A Redshift store may
    /// load its epochs through S3 (`--s3-staging`).
    Server {
        url: String,
        dialect: Dialect,
        staging: Option<S3Staging>,
    },
}

impl std::str::FromStr for StoreUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("sqlite:") {
            Ok(StoreUrl::Sqlite(PathBuf::from(
                path.trim_start_matches("//"),
            )))
        } else if let Some(path) = s.strip_prefix("csv:") {
            Ok(StoreUrl::Csv(PathBuf::from(path.trim_start_matches("//"))))
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(StoreUrl::Server {
                url: s.to_owned(),
                dialect: Dialect::Postgres,
                staging: None,
            })
        } else if let Some(rest) = s.strip_prefix("redshift://") {
            Ok(StoreUrl::Server {
                url: format!("postgres://{rest}"),
                dialect: Dialect::Redshift,
                staging: None,
            })
        } else if s.ends_with(".db") || s.ends_with(".sqlite") {
            Ok(StoreUrl::Sqlite(PathBuf::from(s)))
        } else {
            Err(format!(
                "`{s}` is not a store: use sqlite:PATH, csv:PATH, postgres://USER@HOST:PORT/DB or redshift://USER@HOST:PORT/DB"
            ))
        }
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            StoreUrl::Csv(p) => write!(f, "csv:{}", p.display()),
            StoreUrl::Server { url, dialect, .. } => {
                let shown = self::postgres::shown_url(url);
                match dialect {
                    Dialect::Postgres => f.write_str(&shown),
                    Dialect::Redshift => write!(
                        f,
                        "redshift://{}",
                        shown.split_once("://").map_or("", |p| p.1)
                    ),
                }
            }
        }
    }
}

impl StoreUrl {
    /// Whether every process of a cluster, on any host, reaches the same store (a server), so
    /// that each can write its own rows.
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreUrl::Server { .. })
    }

    /// Whether the store keeps checkpoints a run resumes from (a CSV export starts over).
    pub fn keeps_checkpoints(&self) -> bool {
        !matches!(self, StoreUrl::Csv(_))
    }

    /// Loads a Redshift store's epochs through S3 (`COPY … FROM 's3://…'`); refused for any
    /// other store.
    pub fn with_s3_staging(self, staging: Option<S3Staging>) -> Result<StoreUrl, String> {
        match (self, staging) {
            (store, None) => Ok(store),
            (
                StoreUrl::Server {
                    url,
                    dialect: Dialect::Redshift,
                    ..
                },
                staging,
            ) => Ok(StoreUrl::Server {
                url,
                dialect: Dialect::Redshift,
                staging,
            }),
            (store, Some(_)) => Err(format!(
                "--s3-staging is Redshift's bulk path; {store} is not a redshift:// store"
            )),
        }
    }

    /// Opens a sink for `table`.
    pub fn open(&self, table: &str) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match self {
            StoreUrl::Sqlite(path) => Box::new(SqliteSink::open(path, table)?),
            StoreUrl::Csv(path) if path.is_dir() => {
                Box::new(CsvSink::create(&path.join(format!("{table}.csv")))?)
            }
            StoreUrl::Csv(path) => Box::new(CsvSink::create(path)?),
            StoreUrl::Server {
                url,
                dialect,
                staging,
            } => Box::new(PostgresSink::connect(
                url,
                *dialect,
                table,
                staging.as_ref(),
            )?),
        })
    }
}

/// Errors of a sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("SQLite store {path}: {action}")]
    Sqlite {
        path: PathBuf,
        action: String,
        #[source]
        error: rusqlite::Error,
    },
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("table `{table}` in {path} has column `{column}` of type {found}, but the plan needs {expected}")]
    ColumnType {
        path: PathBuf,
        table: String,
        column: String,
        found: String,
        expected: String,
    },
    #[error("outflow: {0}")]
    Outflow(String),
    #[error("store {store}: {action}")]
    Postgres {
        store: String,
        action: String,
        #[source]
        error: ::postgres::Error,
    },
    #[error("S3 staging {staging}: {error}")]
    Staging { staging: String, error: String },
    #[error("store {store} was unreachable for {after:?}; giving up: {error}")]
    Outage {
        store: String,
        after: std::time::Duration,
        error: String,
    },
    #[error("{store} cannot take on version {version}: {why}")]
    Evolve {
        store: String,
        version: u32,
        why: String,
    },
    #[error("the checkpoint of `{table}` in {store} cannot be used: {why}")]
    Checkpoint {
        store: String,
        table: String,
        why: String,
    },
}

impl SinkError {
    /// Whether retrying can help (a busy or locked database, a transient I/O error).
    pub fn is_retriable(&self) -> bool {
        match self {
            SinkError::Sqlite {
                error: rusqlite::Error::SqliteFailure(e, _),
                ..
            } => {
                matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                )
            }
            SinkError::Io { error, .. } => {
                matches!(
                    error.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut
                )
            }
            _ => false,
        }
    }

    fn sqlite(path: &Path, action: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> SinkError {
        let (path, action) = (path.to_owned(), action.into());
        move |error| SinkError::Sqlite {
            path,
            action,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn recent_scores_count_each_row_once_and_come_oldest_first() {
        // Row 9 is stored under two versions.
        let newest_first = [
            (9, Some(1.0)),
            (9, Some(1.0)),
            (7, None),
            (4, Some(3.0)),
            (2, Some(4.0)),
        ];
        assert_eq!(
            super::oldest_first(newest_first.into_iter(), 3),
            [Some(3.0), None, Some(1.0)]
        );
        assert_eq!(super::oldest_first(newest_first.into_iter(), 9).len(), 4);
    }
}
