//! PostgreSQL and Redshift stores: each epoch goes into a staging table and from there into the
//! target, in one transaction with its dead letters, stats and checkpoint.
//!
//! * **postgres** (`postgres://…`): binary `COPY … FROM STDIN` into a temporary staging table,
//!   then `INSERT … SELECT` of the rows the target lacks (idempotent on `(_row, _version)`).
//! * **redshift** (`redshift://…`, spoken over the PostgreSQL protocol): only what Redshift
//!   accepts — multi-row `INSERT` into staging (no `COPY FROM STDIN`), delete-insert from staging
//!   instead of `ON CONFLICT`, one column per `ALTER TABLE ADD COLUMN`, keys declared but never
//!   relied on, `VARCHAR(65535)` for text and hex text for raw bytes (Redshift has no `BYTEA`).
//!
//! Both dialects evolve the table as versions add features (`ALTER TABLE ADD COLUMN`, tolerant
//! of a column that already exists), say in `COMMENT ON COLUMN` which definition a column holds
//! since which version, and keep the views `<table>_v<N>` and `<table>_latest`.
//!
//! When the server goes away mid-run, an epoch's write is retried with backoff on a new
//! connection (the log says so) until it returns; the write is idempotent, so a commit whose
//! acknowledgement was lost is simply repeated. Other errors stop the run, naming the table.

use super::postgres_copy::CopyRows;
use super::s3_staging::{CsvRow, S3Staging, StagedCsv, Uploader};
use super::{
    checkpoint_json, parse_checkpoint, stat_base, value_at_column, EpochBatch, Sink, SinkError,
    StoredStat,
};
use crate::checkpoint::{Checkpoint, Resume};
use crate::features::{ColumnType, FeatureDef};
use crate::plan::FeaturePlan;
use crate::record::{Date, RowRef, TextField, BASE_COLUMNS};
use postgres::error::SqlState;
use postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use postgres::{Client, NoTls, Transaction};
use smallvec::SmallVec;
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime};

/// Which SQL the store speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Redshift,
}

/// Rows per multi-row `INSERT` (Redshift dialect), well under the protocol's 65,535 parameters.
/// Against PostgreSQL, 1,000,000 rows with `-w 2`: 250 rows per statement ran at 92–108k rows/s,
/// 100 at 94k, 1000 at 79–93k, 4000 at 68–70k. The server is the bound, and its profile is
/// mostly per-value executor set-up, which seems to cost more per value in larger statements.
const ROWS_PER_INSERT: usize = 250;

/// How long an epoch's write keeps retrying while the server is unreachable.
const RETRY_FOR: Duration = Duration::from_secs(600);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl Dialect {
    /// The type of a text column.
    pub fn text(self) -> &'static str {
        match self {
            Dialect::Postgres => "TEXT",
            Dialect::Redshift => "VARCHAR(65535)",
        }
    }

    fn bytes(self) -> &'static str {
        match self {
            Dialect::Postgres => "BYTEA",
            Dialect::Redshift => "VARCHAR(65535)",
        }
    }
}

/// SQL type of a feature column, and the name `information_schema` reports for it.
fn feature_type(column_type: ColumnType) -> (&'static str, &'static str) {
    match column_type {
        ColumnType::Double => ("DOUBLE PRECISION", "double precision"),
        ColumnType::Real => ("REAL", "real"),
    }
}

/// Writes one table's rows into PostgreSQL or Redshift.
pub struct PostgresSink {
    config: postgres::Config,
    /// The URL without its password, for messages.
    shown: String,
    dialect: Dialect,
    table: String,
    client: Option<Client>,
    /// Feature columns of the table, in column order.
    columns: Vec<(String, FeatureDef)>,
    value_at_column: Vec<Vec<Option<usize>>>,
    statements: Statements,
    /// Redshift through S3: where each epoch's rows are staged for `COPY`.
    staging: Option<Uploader>,
}

impl PostgresSink {
    /// Connects (without touching any table yet); `staging` loads Redshift's epochs through S3.
    pub fn connect(
        url: &str,
        dialect: Dialect,
        table: &str,
        staging: Option<&S3Staging>,
    ) -> Result<PostgresSink, SinkError> {
        let config: postgres::Config = url.parse().map_err(|error| SinkError::Postgres {
            store: shown_url(url),
            action: "parse the store URL".into(),
            error,
        })?;
        let mut sink = PostgresSink {
            config,
            shown: shown_url(url),
            dialect,
            table: table.to_owned(),
            client: None,
            columns: Vec::new(),
            value_at_column: Vec::new(),
            statements: Statements::new(),
            staging: staging
                .map(|staging| {
                    Uploader::connect(staging).map_err(|error| SinkError::Staging {
                        staging: staging.to_string(),
                        error,
                    })
                })
                .transpose()?,
        };
        sink.client = Some(sink.open_client().map_err(sink.error("connect"))?);
        Ok(sink)
    }

    fn open_client(&self) -> Result<Client, postgres::Error> {
        self.config.connect(NoTls)
    }

    fn error(&self, action: impl Into<String>) -> impl FnOnce(postgres::Error) -> SinkError {
        failed_on(&self.shown, &action.into())
    }

    fn client(&mut self) -> Result<&mut Client, SinkError> {
        if self.client.is_none() {
            let client = self.open_client().map_err(self.error("reconnect"))?;
            self.client = Some(client);
            self.create_staging()?;
        }
        Ok(self.client.as_mut().expect("connected"))
    }

    /// Column list of the feature table, with their SQL types.
    fn table_columns(&self) -> Vec<(String, String)> {
        let text = self.dialect.text();
        let base_types = [
            "DOUBLE PRECISION",
            "DATE NOT NULL",
            text,
            "DOUBLE PRECISION",
            text,
            text,
            text,
            text,
            text,
        ];
        let mut columns: Vec<(String, String)> = BASE_COLUMNS
            .iter()
            .zip(base_types)
            .map(|(n, t)| (n.to_string(), t.to_owned()))
            .collect();
        for (name, def) in &self.columns {
            columns.push((name.clone(), feature_type(def.column_type).0.to_owned()));
        }
        columns.push(("_row".into(), "BIGINT NOT NULL".into()));
        columns.push(("_version".into(), "INTEGER NOT NULL".into()));
        columns.push(("_modified_ts".into(), "TIMESTAMPTZ NOT NULL".into()));
        columns
    }

    fn column_names(&self) -> String {
        self.table_columns()
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn shared_tables(&self) -> String {
        let (text, bytes) = (self.dialect.text(), self.dialect.bytes());
        format!(
            "CREATE TABLE IF NOT EXISTS dead_letter (
                source_table {text} NOT NULL, _row BIGINT NOT NULL, reason {text} NOT NULL,
                detail {text} NOT NULL, raw {bytes} NOT NULL, _modified_ts TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (source_table, _row));
             CREATE TABLE IF NOT EXISTS feature_stats (
                table_name {text} NOT NULL, _version INTEGER NOT NULL, application_date DATE NOT NULL,
                column_name {text} NOT NULL, rows BIGINT NOT NULL, nulls BIGINT NOT NULL,
                mean DOUBLE PRECISION, sum_micros BIGINT NOT NULL,
                PRIMARY KEY (table_name, _version, application_date, column_name));
             CREATE TABLE IF NOT EXISTS dataflow_checkpoints (
                table_name {text} NOT NULL, source {text} NOT NULL, epoch BIGINT NOT NULL,
                position {text} NOT NULL, windows {text} NOT NULL, _modified_ts TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (table_name, source));"
        )
    }

    /// Creates or evolves the table, its comments and views, and the shared tables.
    fn evolve_schema(&mut self, plan: &FeaturePlan) -> Result<(), SinkError> {
        let table = self.table.clone();
        let first: Vec<(String, FeatureDef)> = plan.versions[0]
            .features
            .iter()
            .map(|(n, d)| (n.clone(), *d))
            .collect();
        let all = std::mem::replace(&mut self.columns, first);
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {table} ({}, PRIMARY KEY (_row, _version))",
            self.table_columns()
                .iter()
                .map(|(n, t)| format!("{n} {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.columns = all;
        let mut statements = vec![create, self.shared_tables()];
        let shown = self.shown.clone();
        let existing: Vec<(String, String)> = {
            let client = self.client()?;
            client
                .batch_execute(&statements.join(";\n"))
                .map_err(|error| SinkError::Postgres {
                    store: shown.clone(),
                    action: format!("create table {table}"),
                    error,
                })?;
            statements.clear();
            client
                .query(
                    "SELECT column_name, data_type FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1",
                    &[&table],
                )
                .map_err(|error| SinkError::Postgres {
                    store: shown.clone(),
                    action: format!("read the columns of {table}"),
                    error,
                })?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()
        };
        for (name, def) in &self.columns.clone() {
            let (sql_type, reported) = feature_type(def.column_type);
            match existing.iter().find(|(n, _)| n == name) {
                Some((_, found)) if found == reported => {}
                Some((_, found)) => {
                    return Err(SinkError::ColumnType {
                        path: self.shown.clone().into(),
                        table: table.clone(),
                        column: name.clone(),
                        found: found.clone(),
                        expected: reported.to_owned(),
                    })
                }
                None => {
                    tracing::info!(table, column = name.as_str(), definition = %def, "Adding feature column.");
                    let add = format!("ALTER TABLE {table} ADD COLUMN {name} {sql_type}");
                    match self.client()?.batch_execute(&add) {
                        Ok(()) => {}
                        // Someone else added it meanwhile: fine, its type is checked next run.
                        Err(e) if e.code() == Some(&SqlState::DUPLICATE_COLUMN) => {}
                        Err(e) => return Err(self.error(format!("add column {table}.{name}"))(e)),
                    }
                }
            }
        }
        for (name, _) in &self.columns {
            statements.push(format!(
                "COMMENT ON COLUMN {table}.{name} IS {}",
                quote(&plan.column_comment(name))
            ));
        }
        let base = BASE_COLUMNS.join(", ");
        for version in &plan.versions {
            let features: String = version.features.keys().map(|n| format!("{n}, ")).collect();
            statements.push(format!("DROP VIEW IF EXISTS {table}_v{}", version.id));
            statements.push(format!(
                "CREATE VIEW {table}_v{id} AS SELECT {base}, {features}_row, _version, _modified_ts
                 FROM {table} WHERE _version = {id}",
                id = version.id
            ));
        }
        let all_features: String = self.columns.iter().map(|(n, _)| format!("{n}, ")).collect();
        statements.push(format!("DROP VIEW IF EXISTS {table}_latest"));
        statements.push(format!(
            "CREATE VIEW {table}_latest AS SELECT {base}, {all_features}_row, _version, _modified_ts
             FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY _row ORDER BY _version DESC) AS newest
                   FROM {table}) AS ranked
             WHERE newest = 1"
        ));
        let script = statements.join(";\n");
        let dialect = self.dialect;
        let client = self.client()?;
        let result = match dialect {
            // Redshift runs DDL statement by statement.
            Dialect::Redshift => statements.iter().try_for_each(|s| client.batch_execute(s)),
            Dialect::Postgres => client
                .transaction()
                .and_then(|mut tx| tx.batch_execute(&script).and_then(|()| tx.commit())),
        };
        result.map_err(self.error(format!("create the comments and views of {table}")))
    }

    /// `CREATE TEMP TABLE` of the staging table (temporary, so every connection has its own).
    fn staging_ddl(&self) -> String {
        let columns = self
            .table_columns()
            .iter()
            .map(|(n, t)| format!("{n} {t}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("CREATE TEMP TABLE {}_staging ({columns})", self.table)
    }

    /// PostgreSQL: one staging table per session, emptied by every commit (a truncation, which
    /// leaves nothing behind). Redshift has no `ON COMMIT` and its `TRUNCATE` commits, so there
    /// each epoch creates and drops its own (emptying by `DELETE` would leave dead rows that
    /// every later epoch scans again).
    fn create_staging(&mut self) -> Result<(), SinkError> {
        if self.dialect == Dialect::Redshift {
            return Ok(());
        }
        let sql = format!(
            "DROP TABLE IF EXISTS {table}_staging; {ddl} ON COMMIT DELETE ROWS",
            table = self.table,
            ddl = self.staging_ddl()
        );
        let client = self.client.as_mut().expect("connected");
        client
            .batch_execute(&sql)
            .map_err(self.error(format!("create {}_staging", self.table)))
    }

    /// Writes an epoch in one transaction; an error is retried by the caller when it is about the
    /// connection, not the data.
    fn try_write(
        &mut self,
        batch: &EpochBatch,
        staged: Option<&str>,
    ) -> Result<(), postgres::Error> {
        let now = SystemTime::now();
        let table = self.table.clone();
        let names = self.column_names();
        let dialect = self.dialect;
        let value_at_column = self.value_at_column.clone();
        let feature_types = self
            .columns
            .iter()
            .map(|(_, def)| def.column_type)
            .collect();
        let staging_ddl = self.staging_ddl();
        let statements = &mut self.statements;
        let client = self.client.as_mut().expect("connected");
        let mut tx = client.transaction()?;
        match dialect {
            Dialect::Postgres => {
                let sink = tx.copy_in(&format!(
                    "COPY {table}_staging ({names}) FROM STDIN (FORMAT binary)"
                ))?;
                let mut copy = CopyRows::new(sink, feature_types, now);
                for row in batch.rows() {
                    copy.write(row, &value_at_column)
                        .map_err(connection_error)?;
                }
                copy.finish().map_err(connection_error)?.finish()?;
                // An epoch's rows are new to the table unless its first commit's acknowledgement
                // was lost or another source stored the same records: try them all at once, and
                // only on a key conflict take back that attempt and insert the rows the table
                // lacks (an anti-join over the epoch's `_row` range costs about a tenth more).
                let mut attempt = tx.savepoint("new_rows")?;
                match attempt.batch_execute(&format!(
                    "INSERT INTO {table} ({names}) SELECT {names} FROM {table}_staging"
                )) {
                    Ok(()) => attempt.commit()?,
                    Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                        attempt.rollback()?;
                        let (first, last) = batch.row_range().unwrap_or((0, 0));
                        tx.batch_execute(&format!(
                            "INSERT INTO {table} ({names}) SELECT {names} FROM {table}_staging AS s
                             WHERE NOT EXISTS (SELECT 1 FROM {table} AS t
                                WHERE t._row BETWEEN {first} AND {last}
                                  AND t._row = s._row AND t._version = s._version)"
                        ))?;
                    }
                    Err(error) => return Err(error),
                }
            }
            Dialect::Redshift => {
                tx.batch_execute(&staging_ddl)?;
                match (staged, &self.staging) {
                    (Some(key), Some(uploader)) => {
                        tx.batch_execute(&uploader.copy_sql(
                            &format!("{table}_staging"),
                            &names,
                            key,
                        ))?;
                    }
                    _ => {
                        let rows: Vec<RowValues> = batch
                            .rows()
                            .map(|row| RowValues::of(row, &value_at_column, now))
                            .collect();
                        for chunk in rows.chunks(ROWS_PER_INSERT) {
                            let into = format!("{table}_staging ({names})");
                            insert_values(&mut tx, statements, &into, chunk, "")?;
                        }
                    }
                }
                // The epoch's rows are a range of `_row`: saying so lets the delete use the
                // key (PostgreSQL) or the sort key's zone maps (Redshift) instead of a scan.
                let (first, last) = batch.row_range().unwrap_or((0, 0));
                tx.batch_execute(&format!(
                    "DELETE FROM {table} USING {table}_staging AS s
                     WHERE {table}._row BETWEEN {first} AND {last}
                       AND {table}._row = s._row AND {table}._version = s._version;
                     INSERT INTO {table} ({names}) SELECT {names} FROM {table}_staging;
                     DROP TABLE {table}_staging"
                ))?;
            }
        }
        write_dead_letters(&mut tx, statements, dialect, &table, batch, now)?;
        write_stats(&mut tx, statements, dialect, &table, batch)?;
        if let Some(checkpoint) = &batch.checkpoint {
            write_checkpoint(&mut tx, statements, dialect, &table, checkpoint, now)?;
        }
        tx.commit()
    }

    /// Uploads the epoch's rows for Redshift's `COPY` (with `--s3-staging`); returns the
    /// object's key.
    fn stage(&self, batch: &EpochBatch) -> Result<Option<String>, SinkError> {
        let Some(uploader) = self.staging.as_ref().filter(|_| batch.row_count() > 0) else {
            return Ok(None);
        };
        let failed = |error: String| SinkError::Staging {
            staging: uploader.location().to_string(),
            error,
        };
        let modified = crate::time::rfc3339_micros(crate::time::now_nanos());
        let real: Vec<bool> = self
            .columns
            .iter()
            .map(|(_, def)| def.column_type == ColumnType::Real)
            .collect();
        let mut csv = StagedCsv::default();
        let mut features: Vec<(Option<f64>, bool)> = Vec::with_capacity(real.len());
        for (row, version, values) in batch.rows() {
            features.clear();
            features.extend(
                self.value_at_column[version as usize]
                    .iter()
                    .zip(&real)
                    .map(|(at, &real)| (at.and_then(|i| values[i]), real)),
            );
            csv.push(&CsvRow {
                row,
                version,
                features: &features,
                modified: &modified,
            })
            .map_err(|e| failed(e.to_string()))?;
        }
        let body = csv.finish().map_err(|e| failed(e.to_string()))?;
        uploader
            .put(&self.table, batch.epoch, body)
            .map(Some)
            .map_err(failed)
    }
}

impl Sink for PostgresSink {
    fn prepare(&mut self, plan: &FeaturePlan) -> Result<(), SinkError> {
        self.columns = plan.columns();
        self.value_at_column = value_at_column(plan, &self.columns);
        self.evolve_schema(plan)?;
        self.create_staging()
    }

    fn adopt(&mut self, plan: &FeaturePlan) -> Result<(), SinkError> {
        let table = self.table.clone();
        let existing: Vec<String> = self
            .client()?
            .query(
                "SELECT column_name FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1",
                &[&table],
            )
            .map_err(self.error(format!("read the columns of {table}")))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let columns = plan.columns();
        if let Some((missing, _)) = columns.iter().find(|(n, _)| !existing.contains(n)) {
            return Err(SinkError::Evolve {
                store: self.shown.clone(),
                version: plan.versions.len() as u32 - 1,
                why: format!("table {table} has no column {missing} yet"),
            });
        }
        self.columns = columns;
        self.value_at_column = value_at_column(plan, &self.columns);
        self.create_staging()
    }

    fn resume(&mut self, source: &str, plan: &FeaturePlan) -> Result<Option<Resume>, SinkError> {
        let table = self.table.clone();
        let shown = self.shown.clone();
        let dialect = self.dialect;
        // `self.error` would borrow the sink the transaction holds.
        let failed = |action: &str| failed_on(&shown, action);
        let mut tx = self
            .client()?
            .transaction()
            .map_err(failed("read the last checkpoint"))?;
        // A run that went away may have sent its last COMMIT just before: the server completes
        // that transaction afterwards, holding this table's lock (every epoch writes its
        // checkpoint) until it has. Taking the lock first means reading after it, never a
        // checkpoint that a late commit then replaces. The checkpoint and the totals are read
        // in this one transaction, so they belong together.
        tx.batch_execute(match dialect {
            Dialect::Postgres => "LOCK TABLE dataflow_checkpoints IN SHARE MODE",
            Dialect::Redshift => "LOCK dataflow_checkpoints",
        })
        .map_err(failed("lock dataflow_checkpoints"))?;
        let found = tx
            .query_opt(
                "SELECT epoch, position, windows FROM dataflow_checkpoints
                 WHERE table_name = $1 AND source = $2",
                &[&table, &source],
            )
            .map_err(failed("read the last checkpoint"))?;
        let Some(found) = found else {
            tx.commit().map_err(failed("read the last checkpoint"))?;
            return Ok(None);
        };
        let unusable = |why| SinkError::Checkpoint {
            store: shown.clone(),
            table: table.clone(),
            why,
        };
        let epoch: i64 = found.get(0);
        let checkpoint =
            parse_checkpoint(source, epoch as u64, found.get(1), found.get(2)).map_err(unusable)?;
        let stored = tx
            .query(
                "SELECT _version, to_char(application_date, 'YYYY-MM-DD'), column_name, rows, nulls, sum_micros
                 FROM feature_stats WHERE table_name = $1",
                &[&table],
            )
            .map_err(failed("read feature_stats"))?
            .iter()
            .map(|r| StoredStat {
                version: r.get::<_, i32>(0) as u32,
                day: r.get(1),
                column: r.get(2),
                rows: r.get(3),
                nulls: r.get(4),
                sum_micros: r.get::<_, i64>(5).into(),
            })
            .collect();
        tx.commit().map_err(failed("read feature_stats"))?;
        let stats = stat_base(plan, stored).map_err(unusable)?;
        Ok(Some(Resume {
            checkpoint,
            stats,
            history: Vec::new(),
        }))
    }

    fn write_epoch(&mut self, batch: &EpochBatch) -> Result<(), SinkError> {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let staged = self.stage(batch)?;
        loop {
            let error = match self.client() {
                Ok(_) => match self.try_write(batch, staged.as_deref()) {
                    Ok(()) => {
                        if let (Some(key), Some(uploader)) = (&staged, &self.staging) {
                            uploader.delete(key);
                        }
                        return Ok(());
                    }
                    Err(error) => {
                        let reconnect = is_retriable(&error);
                        if reconnect {
                            self.client = None;
                            self.statements.clear();
                        }
                        (error_chain(&error), reconnect, Some(error))
                    }
                },
                Err(error) => (error_chain(&error), true, None),
            };
            let (message, retriable, source) = error;
            if !retriable || started.elapsed() > RETRY_FOR {
                if let (Some(key), Some(uploader)) = (&staged, &self.staging) {
                    uploader.delete(key);
                }
                return Err(match source {
                    Some(error) => self
                        .error(format!("write epoch {} into {}", batch.epoch, self.table))(
                        error
                    ),
                    None => SinkError::Outage {
                        store: self.shown.clone(),
                        after: started.elapsed(),
                        error: message,
                    },
                });
            }
            tracing::warn!(
                store = self.shown.as_str(),
                table = self.table.as_str(),
                epoch = batch.epoch,
                retry_in_ms = backoff.as_millis() as u64,
                error = message.as_str(),
                "The store is unreachable; retrying the epoch."
            );
            crate::metrics::global().store_retry(&self.table);
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn stored_rows(&mut self, version: u32, first: Date, last: Date) -> Result<u64, SinkError> {
        let sql = format!(
            "SELECT count(*) FROM {} WHERE _version = $1 AND application_date BETWEEN $2::text::date AND $3::text::date",
            self.table
        );
        let store = self.shown.clone();
        let client = self.client()?;
        client
            .query_one(
                &sql,
                &[&(version as i32), &first.to_string(), &last.to_string()],
            )
            .map(|row| row.get::<_, i64>(0) as u64)
            .map_err(|error| SinkError::Postgres {
                store,
                action: "count stored rows".into(),
                error,
            })
    }

    fn recent_scores(&mut self, rows: usize) -> Result<Vec<Option<f64>>, SinkError> {
        let sql = format!(
            "SELECT _row, risk_score FROM {} ORDER BY _row DESC, _version DESC",
            self.table
        );
        let store = self.shown.clone();
        let client = self.client()?;
        let mut read = || -> Result<Vec<Option<f64>>, postgres::Error> {
            // Through a portal, a chunk at a time: the table may be far longer than the history.
            let mut tx = client.transaction()?;
            let portal = tx.bind(sql.as_str(), &[])?;
            let mut newest_first: Vec<(i64, Option<f64>)> = Vec::new();
            let mut distinct = 0;
            while distinct <= rows {
                let chunk = tx.query_portal(&portal, 65_536)?;
                if chunk.is_empty() {
                    break;
                }
                for row in &chunk {
                    let row_number: i64 = row.get(0);
                    if newest_first.last().map(|(r, _)| *r) != Some(row_number) {
                        distinct += 1;
                    }
                    newest_first.push((row_number, row.get(1)));
                }
            }
            Ok(super::oldest_first(newest_first.into_iter(), rows))
        };
        read().map_err(|error| SinkError::Postgres {
            store,
            action: "read the recent scores".into(),
            error,
        })
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

fn write_dead_letters(
    tx: &mut Transaction<'_>,
    statements: &mut Statements,
    dialect: Dialect,
    table: &str,
    batch: &EpochBatch,
    now: SystemTime,
) -> Result<(), postgres::Error> {
    if batch.dead_letters.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<Box<dyn ToSql + Sync>>> = batch
        .dead_letters
        .iter()
        .map(|d| {
            let raw: Box<dyn ToSql + Sync> = match dialect {
                Dialect::Postgres => Box::new(d.raw.clone()),
                Dialect::Redshift => Box::new(hex(&d.raw, 32_767)),
            };
            vec![
                Box::new(table.to_owned()) as Box<dyn ToSql + Sync>,
                Box::new(d.row as i64),
                Box::new(d.reason.code().to_owned()),
                Box::new(d.detail.clone()),
                raw,
                Box::new(now),
            ]
        })
        .collect();
    upsert(
        tx,
        statements,
        dialect,
        "dead_letter",
        &["source_table", "_row"],
        &[],
        &rows,
    )
}

fn write_stats(
    tx: &mut Transaction<'_>,
    statements: &mut Statements,
    dialect: Dialect,
    table: &str,
    batch: &EpochBatch,
) -> Result<(), postgres::Error> {
    if batch.stats.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<Box<dyn ToSql + Sync>>> = batch
        .stats
        .iter()
        .map(|s| {
            vec![
                Box::new(table.to_owned()) as Box<dyn ToSql + Sync>,
                Box::new(s.version as i32),
                Box::new(PgDate(s.day)),
                Box::new(s.column.clone()),
                Box::new(s.rows),
                Box::new(s.nulls),
                Box::new(s.mean),
                // A day's sum of scores is far below i64's range.
                Box::new(i64::try_from(s.sum_micros).unwrap_or(i64::MAX)),
            ]
        })
        .collect();
    let keys = ["table_name", "_version", "application_date", "column_name"];
    let totals = ["rows", "nulls", "mean", "sum_micros"];
    upsert(
        tx,
        statements,
        dialect,
        "feature_stats",
        &keys,
        &totals,
        &rows,
    )
}

/// Turns a PostgreSQL error while doing `action` on the store shown as `store` into a sink error.
fn failed_on(store: &str, action: &str) -> impl FnOnce(postgres::Error) -> SinkError + use<> {
    let (store, action) = (store.to_owned(), action.to_owned());
    move |error| SinkError::Postgres {
        store,
        action,
        error,
    }
}

/// An error with its causes: `connect: connection refused`.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// Errors worth a new connection and another try: the connection broke or the server is
/// shutting down, starting up, or out of connections; a serialization failure or deadlock.
fn is_retriable(error: &postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        None => error.as_db_error().is_none(), // I/O: refused, reset, timed out
        Some(code) => {
            code.code().starts_with("08")
                || [
                    SqlState::ADMIN_SHUTDOWN,
                    SqlState::CRASH_SHUTDOWN,
                    SqlState::CANNOT_CONNECT_NOW,
                    SqlState::TOO_MANY_CONNECTIONS,
                    SqlState::T_R_SERIALIZATION_FAILURE,
                    SqlState::T_R_DEADLOCK_DETECTED,
                ]
                .contains(code)
        }
    }
}

/// The connection's error inside an `io::Error` from a `COPY`'s writer, which wraps no other kind.
fn connection_error(error: std::io::Error) -> postgres::Error {
    match error
        .into_inner()
        .map(|inner| inner.downcast::<postgres::Error>())
    {
        Some(Ok(error)) => *error,
        _ => unreachable!("a COPY writer's errors are its connection's"),
    }
}

/// A SQL string literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Hex of at most `limit` bytes of `bytes` (Redshift keeps raw bytes as text).
fn hex(bytes: &[u8], limit: usize) -> String {
    let mut out = String::with_capacity(bytes.len().min(limit) * 2);
    for b in bytes.iter().take(limit) {
        write!(out, "{b:02x}").expect("string");
    }
    out
}

/// The URL with its password hidden.
pub(super) fn shown_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Inserts rows of parameters with one multi-row `INSERT … VALUES … {suffix}`.
fn insert_values<P: AsParams>(
    tx: &mut Transaction<'_>,
    statements: &mut Statements,
    into: &str,
    rows: &[P],
    suffix: &str,
) -> Result<(), postgres::Error> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let width = first.params().len();
    let shape = StatementShape {
        into: into.to_owned(),
        rows: rows.len(),
        suffix: suffix.to_owned(),
    };
    let statement = match statements.get(&shape) {
        Some(statement) => statement.clone(),
        None => {
            let mut sql = format!("INSERT INTO {into} VALUES ");
            for r in 0..rows.len() {
                sql.push_str(if r == 0 { "(" } else { ", (" });
                for c in 0..width {
                    if c > 0 {
                        sql.push_str(", ");
                    }
                    write!(sql, "${}", r * width + c + 1).expect("string");
                }
                sql.push(')');
            }
            sql.push(' ');
            sql.push_str(suffix);
            let statement = tx.prepare(&sql)?;
            statements.insert(shape, statement.clone());
            statement
        }
    };
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(rows.len() * width);
    for row in rows {
        params.extend(row.params());
    }
    tx.execute(&statement, &params).map(|_| ())
}

/// Statements prepared on the current connection, by their shape (multi-row inserts are long to
/// write out and to parse; each shape is prepared once per connection).
type Statements = std::collections::HashMap<StatementShape, postgres::Statement>;

/// A multi-row `INSERT INTO {into} VALUES … {suffix}` of `rows` rows.
#[derive(Debug, PartialEq, Eq, Hash)]
struct StatementShape {
    into: String,
    rows: usize,
    suffix: String,
}

/// Inserts rows into `table`: a row whose key is already there has its `replace` columns
/// replaced, or is left as it is when `replace` is empty. `ON CONFLICT` in PostgreSQL; in
/// Redshift, through a temporary table and delete-insert.
fn upsert(
    tx: &mut Transaction<'_>,
    statements: &mut Statements,
    dialect: Dialect,
    table: &str,
    keys: &[&str],
    replace: &[&str],
    rows: &[Vec<Box<dyn ToSql + Sync>>],
) -> Result<(), postgres::Error> {
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        match dialect {
            Dialect::Postgres => {
                let on_conflict = if replace.is_empty() {
                    format!("ON CONFLICT ({}) DO NOTHING", keys.join(", "))
                } else {
                    let set: Vec<String> = replace
                        .iter()
                        .map(|c| format!("{c} = EXCLUDED.{c}"))
                        .collect();
                    format!(
                        "ON CONFLICT ({}) DO UPDATE SET {}",
                        keys.join(", "),
                        set.join(", ")
                    )
                };
                insert_values(tx, statements, table, chunk, &on_conflict)?;
            }
            Dialect::Redshift => {
                tx.batch_execute(&format!(
                    "CREATE TEMP TABLE {table}_incoming (LIKE {table})"
                ))?;
                insert_values(tx, statements, &format!("{table}_incoming"), chunk, "")?;
                let same_key = |a: &str, b: &str| {
                    keys.iter()
                        .map(|k| format!("{a}.{k} = {b}.{k}"))
                        .collect::<Vec<_>>()
                        .join(" AND ")
                };
                let make_room = if replace.is_empty() {
                    // Keep what is there: drop the incoming rows the table already has.
                    format!(
                        "DELETE FROM {table}_incoming USING {table} AS t WHERE {}",
                        same_key(&format!("{table}_incoming"), "t")
                    )
                } else {
                    format!(
                        "DELETE FROM {table} USING {table}_incoming AS i WHERE {}",
                        same_key(table, "i")
                    )
                };
                tx.batch_execute(&format!(
                    "{make_room};
                     INSERT INTO {table} SELECT * FROM {table}_incoming;
                     DROP TABLE {table}_incoming"
                ))?;
            }
        }
    }
    Ok(())
}

/// Commits the checkpoint with the epoch.
fn write_checkpoint(
    tx: &mut Transaction<'_>,
    statements: &mut Statements,
    dialect: Dialect,
    table: &str,
    checkpoint: &Checkpoint,
    now: SystemTime,
) -> Result<(), postgres::Error> {
    let (position, windows) = checkpoint_json(checkpoint);
    let row: Vec<Box<dyn ToSql + Sync>> = vec![
        Box::new(table.to_owned()),
        Box::new(checkpoint.source.clone()),
        Box::new(checkpoint.epoch as i64),
        Box::new(position),
        Box::new(windows),
        Box::new(now),
    ];
    upsert(
        tx,
        statements,
        dialect,
        "dataflow_checkpoints",
        &["table_name", "source"],
        &["epoch", "position", "windows", "_modified_ts"],
        &[row],
    )
}

/// One row's parameters: inline, so binding a row allocates nothing.
type Params<'a> = SmallVec<[&'a (dyn ToSql + Sync); 16]>;

/// Rows that can be bound as one tuple of parameters.
trait AsParams {
    fn params(&self) -> Params<'_>;
}

impl AsParams for Vec<Box<dyn ToSql + Sync>> {
    fn params(&self) -> Params<'_> {
        self.iter().map(|b| b.as_ref()).collect()
    }
}

/// A feature table row's parameters, borrowing its text.
struct RowValues<'a> {
    amount: Option<f64>,
    date: PgDate,
    texts: [&'a str; 6],
    score: Option<f64>,
    features: SmallVec<[FeatureValue; 4]>,
    row: i64,
    version: i32,
    now: SystemTime,
}

impl<'a> RowValues<'a> {
    fn of(
        (loan, version, values): (RowRef<'a>, u32, &[Option<f64>]),
        value_at_column: &[Vec<Option<usize>>],
        now: SystemTime,
    ) -> RowValues<'a> {
        RowValues {
            amount: loan.amount_requested,
            date: PgDate(loan.application_date),
            texts: [
                loan.text(TextField::LoanTitle),
                loan.text(TextField::DebtToIncomeRatio),
                loan.text(TextField::ZipCode),
                loan.text(TextField::State),
                loan.text(TextField::EmploymentLength),
                loan.text(TextField::PolicyCode),
            ],
            score: loan.risk_score,
            features: value_at_column[version as usize]
                .iter()
                .map(|at| FeatureValue(at.and_then(|i| values[i])))
                .collect(),
            row: loan.row as i64,
            version: version as i32,
            now,
        }
    }
}

impl AsParams for RowValues<'_> {
    fn params(&self) -> Params<'_> {
        let mut params = Params::new();
        params.push(&self.amount);
        params.push(&self.date);
        params.push(&self.texts[0]);
        params.push(&self.score);
        for text in &self.texts[1..] {
            params.push(text);
        }
        for feature in &self.features {
            params.push(feature);
        }
        params.push(&self.row);
        params.push(&self.version);
        params.push(&self.now);
        params
    }
}

/// A date in PostgreSQL's binary form.
#[derive(Debug)]
struct PgDate(Date);

impl ToSql for PgDate {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0.days_since_2000().to_be_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::DATE
    }

    to_sql_checked!();
}

/// A feature value for a `DOUBLE PRECISION` or `REAL` column.
#[derive(Debug)]
struct FeatureValue(Option<f64>);

impl ToSql for FeatureValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match (self.0, ty) {
            (None, _) => Ok(IsNull::Yes),
            (Some(v), &Type::FLOAT4) => (v as f32).to_sql(ty, out),
            (Some(v), _) => v.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::FLOAT4 || *ty == Type::FLOAT8
    }

    to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_and_urls_without_one_stay_as_they_are() {
        assert_eq!(
            shown_url("postgres://ann:s3cr@t@db.example:5432/features"),
            "postgres://ann:***@db.example:5432/features"
        );
        assert_eq!(
            shown_url("postgres://ann@127.0.0.1:5432/db"),
            "postgres://ann@127.0.0.1:5432/db"
        );
    }

    #[test]
    fn dates_count_days_from_2000_as_postgres_does() {
        let day = |s: &str| Date::parse(s).unwrap().days_since_2000();
        assert_eq!(day("2000-01-01"), 0);
        assert_eq!(day("2000-03-01"), 60);
        assert_eq!(day("1999-12-31"), -1);
        assert_eq!(day("2007-05-26"), 2702);
        assert_eq!(day("2018-12-31"), 6939);
    }

    #[test]
    fn raw_bytes_become_bounded_hex() {
        assert_eq!(hex(b"\x00\xffab", 3), "00ff61");
    }
}
