//! Stores that receive the dataflow's output, one epoch at a time.
//!
//! A sink gets a [`FeaturePlan`] to create or evolve its tables, then one [`EpochBatch`] per
//! completed epoch, in epoch order, each written atomically. The embedded SQLite store and the CSV
//! export are always built; PostgreSQL and Redshift implement the same trait.

mod csv;
mod sqlite;

pub use self::csv::{push_csv_field, CsvSink};
pub use self::sqlite::SqliteSink;

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

    pub fn row_count(&self) -> usize {
        self.rows.iter().map(FeatureBatch::len).sum()
    }
}

/// A destination for feature rows.
pub trait Sink: Send {
    /// Creates the tables and views the plan needs, adding columns for new features.
    fn prepare(&mut self, plan: &FeaturePlan) -> Result<(), SinkError>;
    /// Writes one epoch atomically.
    fn write_epoch(&mut self, batch: &EpochBatch) -> Result<(), SinkError>;
    /// Flushes whatever is buffered; called once after the last epoch.
    fn finish(&mut self) -> Result<(), SinkError>;
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
        } else if s.ends_with(".db") || s.ends_with(".sqlite") {
            Ok(StoreUrl::Sqlite(PathBuf::from(s)))
        } else {
            Err(format!("`{s}` is not a store: use sqlite:PATH or csv:PATH"))
        }
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            StoreUrl::Csv(p) => write!(f, "csv:{}", p.display()),
        }
    }
}

impl StoreUrl {
    /// Opens a sink for `table`.
    pub fn open(&self, table: &str) -> Result<Box<dyn Sink>, SinkError> {
        Ok(match self {
            StoreUrl::Sqlite(path) => Box::new(SqliteSink::open(path, table)?),
            StoreUrl::Csv(path) if path.is_dir() => {
                Box::new(CsvSink::create(&path.join(format!("{table}.csv")))?)
            }
            StoreUrl::Csv(path) => Box::new(CsvSink::create(path)?),
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
