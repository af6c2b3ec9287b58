//! Helpers shared by the integration tests.

use rusqlite::types::Value;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A path inside the repository.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs the binary; returns its output whatever the exit status.
pub fn riskflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_riskflow"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the riskflow binary runs")
}

/// Runs the binary and returns its stdout, failing the test with stderr if it fails.
pub fn riskflow_ok(args: &[&str]) -> String {
    let out = riskflow(args);
    assert!(
        out.status.success(),
        "riskflow {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs `dataflows/features.toml` over `input` into `store`; returns the one-line summary.
pub fn run_features(input: &Path, store: &str) -> String {
    riskflow_ok(&[
        "run",
        "dataflows/features.toml",
        "--input",
        input.to_str().unwrap(),
        "--store",
        store,
        "-q",
    ])
}

/// Generates a file with `riskflow gen` and returns its path.
pub fn generate(dir: &Path, name: &str, rows: u64, years: &str, extra: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let rows = rows.to_string();
    let mut args = vec![
        "gen",
        "--rows",
        &rows,
        "--years",
        years,
        "--out",
        path.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    riskflow_ok(&args);
    path
}

/// Writes a dataflow file and its feature set; returns the dataflow's path.
pub fn write_dataflow(dir: &Path, name: &str, years: &str, feature_set_toml: &str) -> PathBuf {
    std::fs::write(dir.join(format!("{name}_set.toml")), feature_set_toml).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!("name = \"{name}\"\nyears = \"{years}\"\nfeature_set = \"{name}_set.toml\"\n"),
    )
    .unwrap();
    path
}

pub fn sqlite_store(path: &Path) -> String {
    format!("sqlite:{}", path.display())
}

/// All rows of a query, as SQLite values.
pub fn rows(db: &Path, sql: &str) -> Vec<Vec<Value>> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A single integer from a query.
pub fn count(db: &Path, sql: &str) -> i64 {
    let conn = Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Column names of a table or view.
pub fn columns(db: &Path, table: &str) -> Vec<String> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The numbers of a run summary line: (read, stored, filtered, dead-lettered).
pub fn summary_counts(line: &str) -> (u64, u64, u64, u64) {
    let after = |key: &str| -> u64 {
        let start = line
            .find(key)
            .unwrap_or_else(|| panic!("`{key}` in {line}"))
            + key.len();
        line[start..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (
        after("read "),
        after("stored "),
        after("filtered "),
        after("dead-lettered "),
    )
}

pub fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Real(x) => Some(*x),
        Value::Integer(i) => Some(*i as f64),
        Value::Null => None,
        other => panic!("not a number: {other:?}"),
    }
}

/// A table's rows in `order`, without the wall-clock column `_modified_ts`.
pub fn table_rows(db: &Path, table: &str, order: &str) -> Vec<Vec<Value>> {
    let cols: Vec<String> = columns(db, table)
        .into_iter()
        .filter(|c| c != "_modified_ts")
        .collect();
    rows(
        db,
        &format!("SELECT {} FROM {table} ORDER BY {order}", cols.join(", ")),
    )
}

/// A child process that a failing test does not leave behind: dropped before it was waited
/// for (a panic on the way), it is killed.
pub struct Running(Option<Child>);

impl Running {
    pub fn new(child: Child) -> Running {
        Running(Some(child))
    }

    /// The child, no longer killed on drop.
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("present until taken")
    }
}

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("present until taken")
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("present until taken")
    }
}

impl From<Running> for Child {
    fn from(running: Running) -> Child {
        running.into_inner()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the riskflow binary with `args` (from the repository root), capturing its output.
pub fn spawn_riskflow(args: &[String]) -> Running {
    Running::new(
        Command::new(env!("CARGO_BIN_EXE_riskflow"))
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the riskflow binary starts"),
    )
}

/// Waits for a child to exit; returns (success, stdout, stderr).
pub fn finish(child: impl Into<Child>) -> (bool, String, String) {
    let out = child.into().wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `done` every 20 ms; fails after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A 2-worker `run` of the features dataflow with small epochs (many commits to resume from),
/// for [`kill_and_restart`].
pub fn restartable_run_args(input: &Path, store: &str) -> Vec<String> {
    [
        "run",
        "dataflows/features.toml",
        "--input",
        input.to_str().unwrap(),
        "--store",
        store,
        "-w",
        "2",
        "--epoch-rows",
        "2048",
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Kills `args`' process with SIGKILL at `kills` random moments, restarting it each time, then
/// lets it run to the end. Each kill comes a random time of at most `max_delay_ms` after the
/// run's first new commit, or sooner, once the run has committed `max_epochs` epochs beyond
/// where it started: that bound, not the machine's speed, keeps work for every kill to land in.
/// Returns how many kills hit a running process.
pub fn kill_and_restart(
    args: &[String],
    kills: usize,
    max_delay_ms: u64,
    max_epochs: i64,
    mut progressed: impl FnMut() -> i64,
) -> usize {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mut random_ms = |low: u64, high: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        low + (seed >> 33) % (high - low)
    };
    let mut hits = 0;
    for _ in 0..kills {
        let before = progressed();
        let mut child = spawn_riskflow(args);
        // Wait for the run to commit something new, then kill it at a random moment after.
        let deadline = Instant::now() + Duration::from_secs(60);
        while progressed() == before && child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "no progress after a restart");
            std::thread::sleep(Duration::from_millis(10));
        }
        let kill_at = Instant::now() + Duration::from_millis(random_ms(0, max_delay_ms));
        while Instant::now() < kill_at && progressed() < before + max_epochs {
            std::thread::sleep(Duration::from_millis(1));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            hits += 1;
        }
        let _ = child.wait();
    }
    let (ok, out, err) = finish(spawn_riskflow(args));
    assert!(ok, "the last restart failed: {out}\n{err}");
    hits
}

/// The highest epoch committed to a SQLite store (-1 before the first).
pub fn committed_epoch(db: &Path) -> i64 {
    if !db.exists() {
        return -1;
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT max(epoch) FROM dataflow_checkpoints", [], |r| {
        r.get::<_, Option<i64>>(0)
    })
    .ok()
    .flatten()
    .unwrap_or(-1)
}

/// Registers the shipped feature set (versions 0-2) in a SQLite store's catalog.
pub fn register_default_plan(db: &Path) {
    riskflow_ok(&[
        "catalog",
        "--store",
        &sqlite_store(db),
        "register",
        "config/feature_sets/loan_features.toml",
    ]);
}
