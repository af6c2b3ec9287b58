//! The embedded store: one SQLite file holding the feature table, its per-version views,
//! `dead_letter`, `feature_stats` and the catalog's `feature_versions`.

use super::sqlite_insert::{Binder, RowInsert};
use super::{
    checkpoint_json, parse_checkpoint, stat_base, value_at_column, EpochBatch, Sink, SinkError,
    StoredRow, StoredStat,
};
use crate::checkpoint::Resume;
use crate::features::ColumnType;
use crate::plan::FeaturePlan;
use crate::record::{Date, TextField, BASE_COLUMNS};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Rows per multi-row INSERT: fewer statement executions, well under SQLite's parameter limit.
const ROWS_PER_INSERT: usize = 64;

const BASE_TYPES: [&str; 9] = [
    "REAL",
    "TEXT NOT NULL",
    "TEXT",
    "REAL",
    "TEXT",
    "TEXT",
    "TEXT",
    "TEXT",
    "TEXT",
];

const SHARED_TABLES: &str = "
CREATE TABLE IF NOT EXISTS dead_letter (
    source_table TEXT    NOT NULL, -- the table the record was meant for
    _row         INTEGER NOT NULL, -- source position (1-based data record number)
    reason       TEXT    NOT NULL,
    detail       TEXT    NOT NULL,
    raw          BLOB    NOT NULL, -- the record's bytes as read
    _modified_ts INTEGER NOT NULL,
    PRIMARY KEY (source_table, _row)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS feature_stats (
    table_name       TEXT    NOT NULL,
    _version         INTEGER NOT NULL,
    application_date TEXT    NOT NULL,
    column_name      TEXT    NOT NULL, -- risk_score or a feature
    rows             INTEGER NOT NULL,
    nulls            INTEGER NOT NULL,
    mean             REAL,
    sum_micros       INTEGER NOT NULL, -- exact sum of the non-null values, in millionths
    PRIMARY KEY (table_name, _version, application_date, column_name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dataflow_checkpoints (
    table_name   TEXT    NOT NULL,
    source       TEXT    NOT NULL, -- the input's identity (file path and size, or topic)
    epoch        INTEGER NOT NULL, -- the last epoch committed
    position     TEXT    NOT NULL, -- JSON: per source part, where reading resumes
    windows      TEXT    NOT NULL, -- JSON: per definition, the window's state
    _modified_ts INTEGER NOT NULL,
    PRIMARY KEY (table_name, source)
) WITHOUT ROWID;
";

/// Declared SQLite type of a feature column; both have REAL affinity, the name records the
/// definition's type so a change can be detected.
fn declared_type(column_type: ColumnType) -> &'static str {
    match column_type {
        ColumnType::Double => "DOUBLE",
        ColumnType::Real => "REAL",
    }
}

/// Opens (creating if missing) a store file the way every connection to it should: 16 KiB pages
/// for a new file (bulk inserts into the keyed feature table split a quarter as many pages as
/// with the default 4 KiB), write-ahead log (readers go on while an epoch commits), `NORMAL`
/// sync (a crash of the process loses nothing committed) and a 16 MiB page cache.
///
/// Switching a file to the write-ahead log fails at once (no busy handler) while another
/// connection switches or reads it, as when the processes of a cluster open a new store
/// together; that step is retried for as long as the busy timeout.
pub fn open_store(path: &Path) -> rusqlite::Result<Connection> {
    const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.execute_batch("PRAGMA page_size = 16384;")?;
    let started = std::time::Instant::now();
    loop {
        match conn.execute_batch("PRAGMA journal_mode = WAL;") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && started.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            done => break done?,
        }
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -16384;")?;
    Ok(conn)
}

/// Writes one table's rows into a SQLite file.
pub struct SqliteSink {
    path: PathBuf,
    table: String,
    conn: Connection,
    /// Per version, per feature column of the table: which of the row's values goes there.
    value_at_column: Vec<Vec<Option<usize>>>,
    insert_many_sql: String,
    insert_one_sql: String,
    checkpointer: Checkpointer,
}

/// Copies the write-ahead log into the database file on a thread and connection of its own,
/// woken after each commit, so that the writer thread mostly only appends to the log. (SQLite's
/// automatic checkpoint, switched off on the writer's connection, would run inside the
/// committing thread: about a sixth of its time.)
///
/// A log is only started over from its beginning when a write finds every frame copied, which
/// a background copy never achieves while the writer keeps committing; so once the log passes
/// [`Self::RESTART_FRAMES`], the writer waits for the copy under way and copies the last few
/// frames itself, and its next write starts the log over.
struct Checkpointer {
    conn: Arc<Mutex<Connection>>,
    /// Frames in the log at the last checkpoint.
    log_frames: Arc<AtomicI64>,
    wake: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// 64 MiB of 16 KiB pages.
    const RESTART_FRAMES: i64 = 4096;

    fn start(path: &Path) -> rusqlite::Result<Checkpointer> {
        let conn = Arc::new(Mutex::new(open_store(path)?));
        let log_frames = Arc::new(AtomicI64::new(0));
        let (wake, woken) = sync_channel(1);
        let thread = {
            let (conn, log_frames) = (conn.clone(), log_frames.clone());
            std::thread::Builder::new()
                .name("riskflow-checkpoint".into())
                .spawn(move || {
                    while woken.recv().is_ok() {
                        Self::checkpoint(&conn, &log_frames);
                    }
                })
                .expect("a thread starts")
        };
        Ok(Checkpointer {
            conn,
            log_frames,
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    fn checkpoint(conn: &Mutex<Connection>, log_frames: &AtomicI64) {
        let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(1)) {
            Ok(frames) => log_frames.store(frames, Ordering::Relaxed),
            Err(error) => {
                tracing::warn!(%error, "A checkpoint failed; the next commit asks again.")
            }
        }
    }

    /// After a commit: copies the log in the background or, past the limit, now.
    fn committed(&self) {
        if self.log_frames.load(Ordering::Relaxed) > Self::RESTART_FRAMES {
            self.log_frames.store(0, Ordering::Relaxed);
            Self::checkpoint(&self.conn, &self.log_frames);
        } else if let Some(wake) = &self.wake {
            let _ = wake.try_send(()); // one already asked for and not begun covers this one
        }
    }

    /// Lets the thread finish its checkpoint and end.
    fn stop(&mut self) {
        self.wake.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl SqliteSink {
    pub fn open(path: &Path, table: &str) -> Result<SqliteSink, SinkError> {
        let conn = open_store(path).map_err(SinkError::sqlite(path, "open"))?;
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0;")
            .map_err(SinkError::sqlite(path, "configure"))?;
        let checkpointer =
            Checkpointer::start(path).map_err(SinkError::sqlite(path, "start checkpoints"))?;
        Ok(SqliteSink {
            path: path.to_owned(),
            table: table.to_owned(),
            conn,
            value_at_column: Vec::new(),
            insert_many_sql: String::new(),
            insert_one_sql: String::new(),
            checkpointer,
        })
    }

    fn evolve_schema(&self, tx: &Transaction<'_>, plan: &FeaturePlan) -> Result<(), SinkError> {
        let table = &self.table;
        let columns = plan.columns();
        let first = &plan.versions[0];
        let mut create = format!("CREATE TABLE IF NOT EXISTS {table} (");
        for (name, ty) in BASE_COLUMNS.iter().zip(BASE_TYPES) {
            write!(create, "{name} {ty}, ").expect("string");
        }
        for (name, def) in &first.features {
            write!(create, "{name} {}, ", declared_type(def.column_type)).expect("string");
        }
        create.push_str("_row INTEGER NOT NULL, _version INTEGER NOT NULL, _modified_ts INTEGER NOT NULL, PRIMARY KEY (_row, _version)) WITHOUT ROWID");
        tx.execute_batch(&create).map_err(SinkError::sqlite(
            &self.path,
            format!("create table {table}"),
        ))?;

        let existing: Vec<(String, String)> = tx
            .prepare(&format!(
                "SELECT name, type FROM pragma_table_info('{table}')"
            ))
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(SinkError::sqlite(
                &self.path,
                format!("read the columns of {table}"),
            ))?;
        for (name, def) in &columns {
            let want = declared_type(def.column_type);
            match existing.iter().find(|(n, _)| n == name) {
                Some((_, found)) if found.eq_ignore_ascii_case(want) => {}
                Some((_, found)) => {
                    return Err(SinkError::ColumnType {
                        path: self.path.clone(),
                        table: table.clone(),
                        column: name.clone(),
                        found: found.clone(),
                        expected: want.to_owned(),
                    })
                }
                None => {
                    tracing::info!(table, column = name.as_str(), definition = %def, "Adding feature column.");
                    tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {name} {want}"))
                        .map_err(SinkError::sqlite(
                            &self.path,
                            format!("add column {table}.{name}"),
                        ))?;
                }
            }
        }

        let base = BASE_COLUMNS.join(", ");
        for version in &plan.versions {
            let features: String = version.features.keys().map(|n| format!("{n}, ")).collect();
            tx.execute_batch(&format!(
                "DROP VIEW IF EXISTS {table}_v{id};
                 CREATE VIEW {table}_v{id} AS SELECT {base}, {features}_row, _version, _modified_ts
                 FROM {table} WHERE _version = {id};",
                id = version.id
            ))
            .map_err(SinkError::sqlite(
                &self.path,
                format!("create view {table}_v{}", version.id),
            ))?;
        }
        let all_features: String = columns.iter().map(|(n, _)| format!("{n}, ")).collect();
        tx.execute_batch(&format!(
            "DROP VIEW IF EXISTS {table}_latest;
             CREATE VIEW {table}_latest AS SELECT {base}, {all_features}_row, _version, _modified_ts
             FROM {table} AS t WHERE _version = (SELECT MAX(_version) FROM {table} WHERE _row = t._row);"
        ))
        .map_err(SinkError::sqlite(&self.path, format!("create view {table}_latest")))?;
        tx.execute_batch(SHARED_TABLES)
            .map_err(SinkError::sqlite(&self.path, "create shared tables"))?;
        Ok(())
    }

    fn insert_rows(
        &self,
        tx: &Transaction<'_>,
        epoch: &EpochBatch,
        now: i64,
    ) -> rusqlite::Result<()> {
        let mut many = RowInsert::prepare(tx, &self.insert_many_sql)?;
        let mut one = RowInsert::prepare(tx, &self.insert_one_sql)?;
        let mut rows = epoch.rows();
        loop {
            let group: Vec<StoredRow<'_>> = rows.by_ref().take(ROWS_PER_INSERT).collect();
            let mut dates = [[0u8; 10]; ROWS_PER_INSERT];
            for (date, (loan, _, _)) in dates.iter_mut().zip(&group) {
                loan.application_date.write_iso(date);
            }
            if group.len() == ROWS_PER_INSERT {
                many.execute(|b| {
                    for (row, date) in group.iter().zip(&dates) {
                        self.bind_row(b, row, date, now);
                    }
                })?;
            } else {
                for (row, date) in group.iter().zip(&dates) {
                    one.execute(|b| self.bind_row(b, row, date, now))?;
                }
                return Ok(());
            }
        }
    }

    /// Binds one row's values, in the INSERT's column order.
    fn bind_row<'v>(
        &self,
        b: &mut Binder<'_, 'v>,
        (loan, version, values): &StoredRow<'v>,
        iso_date: &'v [u8; 10],
        now: i64,
    ) {
        b.real(loan.amount_requested);
        b.text(iso_date);
        b.text(loan.text_bytes(TextField::LoanTitle));
        b.real(loan.risk_score);
        for field in TextField::AFTER_RISK_SCORE {
            b.text(loan.text_bytes(field));
        }
        for value_index in &self.value_at_column[*version as usize] {
            b.real(value_index.and_then(|v| values[v]));
        }
        b.integer(loan.row as i64);
        b.integer(i64::from(*version));
        b.integer(now);
    }
}

impl Sink for SqliteSink {
    fn prepare(&mut self, plan: &FeaturePlan) -> Result<(), SinkError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(SinkError::sqlite(&self.path, "begin"))?;
        self.evolve_schema(&tx, plan)?;
        tx.commit()
            .map_err(SinkError::sqlite(&self.path, "commit schema changes"))?;

        let columns = plan.columns();
        self.value_at_column = value_at_column(plan, &columns);
        let names: Vec<&str> = BASE_COLUMNS
            .iter()
            .copied()
            .chain(columns.iter().map(|(n, _)| n.as_str()))
            .chain(["_row", "_version", "_modified_ts"])
            .collect();
        let tuple = format!("({})", vec!["?"; names.len()].join(", "));
        let insert = |rows: usize| {
            let values = vec![tuple.as_str(); rows].join(", ");
            format!(
                "INSERT OR IGNORE INTO {} ({}) VALUES {values}",
                self.table,
                names.join(", ")
            )
        };
        self.insert_many_sql = insert(ROWS_PER_INSERT);
        self.insert_one_sql = insert(1);
        Ok(())
    }

    fn write_epoch(&mut self, batch: &EpochBatch) -> Result<(), SinkError> {
        let now = crate::time::now_nanos();
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(SinkError::sqlite(&self.path, "begin"))?;
        let action = |what: &str| format!("write epoch {} ({what})", batch.epoch);
        self.insert_rows(&tx, batch, now)
            .map_err(SinkError::sqlite(&self.path, action(&self.table)))?;
        {
            let mut dead = tx
                .prepare_cached("INSERT OR IGNORE INTO dead_letter VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
                .map_err(SinkError::sqlite(&self.path, action("dead_letter")))?;
            for d in &batch.dead_letters {
                dead.execute(params![
                    self.table,
                    d.row as i64,
                    d.reason.code(),
                    d.detail,
                    d.raw,
                    now
                ])
                .map_err(SinkError::sqlite(&self.path, action("dead_letter")))?;
            }
            let mut stats = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO feature_stats VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .map_err(SinkError::sqlite(&self.path, action("feature_stats")))?;
            for s in &batch.stats {
                stats
                    .execute(params![
                        self.table,
                        s.version,
                        s.day.to_string(),
                        s.column,
                        s.rows,
                        s.nulls,
                        s.mean,
                        i64::try_from(s.sum_micros).unwrap_or(i64::MAX) // a day holds far less
                    ])
                    .map_err(SinkError::sqlite(&self.path, action("feature_stats")))?;
            }
            if let Some(checkpoint) = &batch.checkpoint {
                let (position, windows) = checkpoint_json(checkpoint);
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO dataflow_checkpoints VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut stmt| {
                    stmt.execute(params![
                        self.table,
                        checkpoint.source,
                        checkpoint.epoch as i64,
                        position,
                        windows,
                        now
                    ])
                })
                .map_err(SinkError::sqlite(
                    &self.path,
                    action("dataflow_checkpoints"),
                ))?;
            }
        }
        tx.commit()
            .map_err(SinkError::sqlite(&self.path, action("commit")))?;
        self.checkpointer.committed();
        Ok(())
    }

    fn resume(&mut self, source: &str, plan: &FeaturePlan) -> Result<Option<Resume>, SinkError> {
        let read = SinkError::sqlite(&self.path, "read the last checkpoint");
        let found: Option<(i64, String, String)> = self
            .conn
            .query_row(
                "SELECT epoch, position, windows FROM dataflow_checkpoints
                 WHERE table_name = ?1 AND source = ?2",
                params![self.table, source],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(read)?;
        let Some((epoch, position, windows)) = found else {
            return Ok(None);
        };
        let checkpoint =
            parse_checkpoint(source, epoch as u64, &position, &windows).map_err(|why| {
                SinkError::Checkpoint {
                    store: self.path.display().to_string(),
                    table: self.table.clone(),
                    why,
                }
            })?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT _version, application_date, column_name, rows, nulls, sum_micros
                 FROM feature_stats WHERE table_name = ?1",
            )
            .map_err(SinkError::sqlite(&self.path, "read feature_stats"))?;
        let totals = stmt
            .query_map([&self.table], |r| {
                Ok(StoredStat {
                    version: r.get(0)?,
                    day: r.get(1)?,
                    column: r.get(2)?,
                    rows: r.get(3)?,
                    nulls: r.get(4)?,
                    sum_micros: r.get::<_, i64>(5)?.into(),
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(SinkError::sqlite(&self.path, "read feature_stats"))?;
        let stats = stat_base(plan, totals).map_err(|why| SinkError::Checkpoint {
            store: self.path.display().to_string(),
            table: self.table.clone(),
            why,
        })?;
        Ok(Some(Resume {
            checkpoint,
            stats,
            history: Vec::new(),
        }))
    }

    fn stored_rows(&mut self, version: u32, first: Date, last: Date) -> Result<u64, SinkError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT count(*) FROM {} WHERE _version = ?1 AND application_date BETWEEN ?2 AND ?3",
                    self.table
                ),
                params![version, first.to_string(), last.to_string()],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(SinkError::sqlite(&self.path, "count stored rows"))
    }

    fn recent_scores(&mut self, rows: usize) -> Result<Vec<Option<f64>>, SinkError> {
        let read = || SinkError::sqlite(&self.path, "read the recent scores");
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT _row, risk_score FROM {} ORDER BY _row DESC, _version DESC",
                self.table
            ))
            .map_err(read())?;
        let newest_first = stmt
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Option<f64>>(1)?))
            })
            .map_err(read())?;
        let mut failed = None;
        let scores = super::oldest_first(
            newest_first.map_while(|r| r.map_err(|e| failed = Some(e)).ok()),
            rows,
        );
        match failed {
            Some(error) => Err(read()(error)),
            None => Ok(scores),
        }
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.checkpointer.stop();
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(SinkError::sqlite(&self.path, "checkpoint"))
    }
}
