//! `riskflow status`: what a store holds and where each dataflow stands, read from the store
//! itself — rows per version, dead letters by reason, the catalog's current version, the last
//! committed checkpoint — and, given the brokers, how far each partition's end is ahead of it.

use crate::checkpoint::Position;
use crate::kafka::{self, KafkaError};
use crate::sink::StoreUrl;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Where one dataflow (one feature table) stands.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TableStatus {
    pub table: String,
    /// The highest version registered in the catalog.
    pub catalog_version: Option<u32>,
    /// Stored rows per version.
    pub rows: BTreeMap<u32, i64>,
    /// Dead-lettered records per reason.
    pub dead_letters: BTreeMap<String, i64>,
    /// One per source the table was fed from.
    pub checkpoints: Vec<CheckpointStatus>,
}

/// The last checkpoint committed for one source.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CheckpointStatus {
    pub source: String,
    pub epoch: u64,
    /// The last `_row` the source had reached (a file: the row before the next one to read).
    pub last_row: u64,
    /// When it was committed, as the store wrote it.
    pub committed_at: String,
    pub partitions: Vec<PartitionStatus>,
}

/// A Kafka partition: where the checkpoint resumes, the partition's end, and the difference.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PartitionStatus {
    pub partition: i32,
    pub offset: i64,
    pub end: Option<i64>,
    pub lag: Option<i64>,
}

/// Errors of `status`.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot read {store}: {error}")]
    Store { store: String, error: String },
    #[error("only SQLite, PostgreSQL and Redshift stores can be read back; {0} cannot")]
    Unsupported(String),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// Rows of a query with every column as text (SQL `CAST(… AS TEXT)`), `$1`-style parameters:
/// what `status` and `plot` read a SQLite or PostgreSQL store through.
pub trait ReadSql {
    fn query(&mut self, sql: &str, args: &[&str]) -> Result<Vec<Vec<Option<String>>>, String>;
}

impl ReadSql for rusqlite::Connection {
    fn query(&mut self, sql: &str, args: &[&str]) -> Result<Vec<Vec<Option<String>>>, String> {
        let mut stmt = self.prepare(sql).map_err(|e| e.to_string())?;
        let width = stmt.column_count();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |row| {
                (0..width)
                    .map(|i| row.get::<_, Option<String>>(i))
                    .collect()
            })
            .map_err(|e| e.to_string())?;
        rows.collect::<Result<_, _>>().map_err(|e| e.to_string())
    }
}

impl ReadSql for postgres::Client {
    fn query(&mut self, sql: &str, args: &[&str]) -> Result<Vec<Vec<Option<String>>>, String> {
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = args
            .iter()
            .map(|a| a as &(dyn postgres::types::ToSql + Sync))
            .collect();
        let rows = postgres::Client::query(self, sql, &params).map_err(|e| e.to_string())?;
        Ok(rows
            .iter()
            .map(|row| (0..row.len()).map(|i| row.get(i)).collect())
            .collect())
    }
}

/// Reads the status of every table the store's catalog knows; with `brokers`, the lag of
/// Kafka checkpoints too.
pub fn read(store: &StoreUrl, brokers: Option<&str>) -> Result<Vec<TableStatus>, StatusError> {
    let failed = |error: String| StatusError::Store {
        store: store.to_string(),
        error,
    };
    let mut reader = open(store)?;
    let mut query = |sql: &str, args: &[&str]| reader.query(sql, args).map_err(&failed);
    let tables: Vec<String> = query(
        "SELECT DISTINCT table_name FROM feature_versions ORDER BY table_name",
        &[],
    )?
    .into_iter()
    .filter_map(|r| r[0].clone())
    .collect();
    let mut statuses = Vec::new();
    for table in tables {
        let number = |v: &Option<String>| v.as_deref().and_then(|s| s.parse::<i64>().ok());
        let catalog_version = query(
            "SELECT CAST(max(version) AS TEXT) FROM feature_versions WHERE table_name = $1",
            &[&table],
        )?
        .first()
        .and_then(|r| number(&r[0]))
        .map(|v| v as u32);
        let rows = query(
            &format!(
                "SELECT CAST(_version AS TEXT), CAST(count(*) AS TEXT) FROM {table} GROUP BY _version ORDER BY _version"
            ),
            &[],
        )
        .unwrap_or_default() // registered, never written
        .iter()
        .filter_map(|r| Some((number(&r[0])? as u32, number(&r[1])?)))
        .collect();
        let dead_letters = query(
            "SELECT reason, CAST(count(*) AS TEXT) FROM dead_letter WHERE source_table = $1 GROUP BY reason ORDER BY reason",
            &[&table],
        )
        .unwrap_or_default()
        .iter()
        .filter_map(|r| Some((r[0].clone()?, number(&r[1])?)))
        .collect();
        let mut checkpoints = Vec::new();
        for r in query(
            "SELECT source, CAST(epoch AS TEXT), position, CAST(_modified_ts AS TEXT)
             FROM dataflow_checkpoints WHERE table_name = $1 ORDER BY source",
            &[&table],
        )
        .unwrap_or_default()
        {
            let source = r[0].clone().unwrap_or_default();
            let position: Position = r[2]
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or_default();
            checkpoints.push(checkpoint_status(
                source,
                number(&r[1]).unwrap_or(0) as u64,
                &position,
                committed_at(r[3].as_deref().unwrap_or_default()),
                brokers,
            )?);
        }
        statuses.push(TableStatus {
            table,
            catalog_version,
            rows,
            dead_letters,
            checkpoints,
        });
    }
    Ok(statuses)
}

/// Opens a store for reading.
pub fn open(store: &StoreUrl) -> Result<Box<dyn ReadSql>, StatusError> {
    let failed = |error: String| StatusError::Store {
        store: store.to_string(),
        error,
    };
    Ok(match store {
        StoreUrl::Sqlite(path) => {
            if !path.exists() {
                return Err(failed("no such file".into()));
            }
            Box::new(rusqlite::Connection::open(path).map_err(|e| failed(e.to_string()))?)
        }
        StoreUrl::Server { url, .. } => Box::new(
            postgres::Client::connect(url, postgres::NoTls).map_err(|e| failed(e.to_string()))?,
        ),
        StoreUrl::Csv(_) => return Err(StatusError::Unsupported(store.to_string())),
    })
}

/// SQLite keeps nanoseconds since the Unix epoch; PostgreSQL a timestamp already.
fn committed_at(stored: &str) -> String {
    match stored.parse::<i64>() {
        Ok(nanos) => crate::time::rfc3339_from_nanos(nanos),
        Err(_) => stored.to_owned(),
    }
}

fn checkpoint_status(
    source: String,
    epoch: u64,
    position: &Position,
    committed_at: String,
    brokers: Option<&str>,
) -> Result<CheckpointStatus, StatusError> {
    let topic = source
        .strip_prefix("kafka:")
        .and_then(|rest| rest.split(" (").next())
        .map(str::to_owned);
    let last_row = match &topic {
        Some(_) => position.values().map(|p| p.row).max().unwrap_or(0),
        None => position
            .values()
            .map(|p| p.row.saturating_sub(1))
            .max()
            .unwrap_or(0),
    };
    let mut partitions = Vec::new();
    if let Some(topic) = &topic {
        let ends = match brokers {
            Some(brokers) => Some(kafka::partition_ends(brokers, topic)?),
            None => None,
        };
        for (&partition, at) in position {
            let end = ends.as_ref().and_then(|e| e.get(&partition).copied());
            partitions.push(PartitionStatus {
                partition,
                offset: at.offset,
                end,
                // A broker's high-water mark can trail what it acknowledged: never below 0.
                lag: end.map(|e| (e - at.offset).max(0)),
            });
        }
    }
    Ok(CheckpointStatus {
        source,
        epoch,
        last_row,
        committed_at,
        partitions,
    })
}

/// The status as readable text.
pub fn render(statuses: &[TableStatus]) -> String {
    let mut out = String::new();
    if statuses.is_empty() {
        out.push_str("no dataflow has run against this store yet\n");
    }
    for s in statuses {
        let version = s
            .catalog_version
            .map_or("none".to_owned(), |v| v.to_string());
        writeln!(out, "{}  (catalog version {version})", s.table).expect("string");
        let total: i64 = s.rows.values().sum();
        let per: Vec<String> = s.rows.iter().map(|(v, n)| format!("v{v} {n}")).collect();
        writeln!(out, "  rows          {total} ({})", per.join(", ")).expect("string");
        let dead: i64 = s.dead_letters.values().sum();
        let per: Vec<String> = s
            .dead_letters
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        writeln!(out, "  dead letters  {dead} ({})", per.join(", ")).expect("string");
        for c in &s.checkpoints {
            writeln!(
                out,
                "  checkpoint    epoch {}, last row {}, committed {}\n                {}",
                c.epoch, c.last_row, c.committed_at, c.source
            )
            .expect("string");
            for p in &c.partitions {
                let show = |v: Option<i64>| v.map_or("?".to_owned(), |v| v.to_string());
                writeln!(
                    out,
                    "    partition {:>3}  offset {:>10}  end {:>10}  lag {:>8}",
                    p.partition,
                    p.offset,
                    show(p.end),
                    show(p.lag)
                )
                .expect("string");
            }
        }
    }
    out
}
