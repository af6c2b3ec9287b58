//! PostgreSQL and Redshift stores against a real PostgreSQL 15 (started by `scripts/test.sh`
//! through `scripts/postgres.sh`): both dialects equal PostgreSQL's own window functions and the
//! SQLite run; runs and streams killed with SIGKILL at random moments resume exactly once; a
//! database outage mid-stream loses nothing; schema evolution adds columns, comments and views.

use crate::aws::{boto3, moto, ok, riskflow_glue, AWS_ENV};
use crate::cluster::{cluster_run_args, finish_cluster, hostfile, start_cluster};
use crate::common::*;
use crate::kafka::{
    brokers, fresh_topic, live_versions_input, produce, produce_args, stream_args_to,
};
use postgres::types::Type;
use postgres::{Client, NoTls};
use rusqlite::types::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The server `scripts/test.sh` started; a test that cannot reach one fails, never skips.
fn server() -> String {
    std::env::var("RISKFLOW_TEST_POSTGRES").expect(
        "RISKFLOW_TEST_POSTGRES is not set: run the suite with scripts/test.sh, which starts a \
         throwaway PostgreSQL cluster (scripts/postgres.sh) for it",
    )
}

/// A new, empty database on `server` for one test; returns its URL.
fn fresh_database(server: &str, name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let db = format!("{name}_{}_{nanos}", std::process::id());
    let mut admin = Client::connect(server, NoTls).expect("the test server answers");
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .unwrap();
    let (base, _) = server.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

fn redshift(url: &str) -> String {
    url.replacen("postgres://", "redshift://", 1)
}

/// Rows of a query, as SQLite values so they compare with the SQLite store's.
fn pg_rows(url: &str, sql: &str) -> Vec<Vec<Value>> {
    let mut client = Client::connect(url, NoTls).unwrap();
    client
        .query(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    let ty = row.columns()[i].type_();
                    if *ty == Type::FLOAT8 {
                        row.get::<_, Option<f64>>(i)
                            .map_or(Value::Null, Value::Real)
                    } else if *ty == Type::INT8 {
                        row.get::<_, Option<i64>>(i)
                            .map_or(Value::Null, Value::Integer)
                    } else if *ty == Type::INT4 {
                        row.get::<_, Option<i32>>(i)
                            .map_or(Value::Null, |v| Value::Integer(v.into()))
                    } else if *ty == Type::TEXT || *ty == Type::VARCHAR {
                        row.get::<_, Option<String>>(i)
                            .map_or(Value::Null, Value::Text)
                    } else {
                        panic!("{sql}: cast column {i} ({ty}) to text")
                    }
                })
                .collect()
        })
        .collect()
}

fn pg_count(url: &str, sql: &str) -> i64 {
    match &pg_rows(url, sql)[0][0] {
        Value::Integer(n) => *n,
        other => panic!("{sql}: {other:?}"),
    }
}

const LOAN_FEATURES: &str = "SELECT amount_requested, application_date::text, loan_title, risk_score, \
     debt_to_income_ratio, zip_code, state, employment_length, policy_code, ma50, ma100, _row, _version \
     FROM loan_features ORDER BY _row, _version";
const LOAN_FEATURES_SQLITE: &str = "SELECT amount_requested, application_date, loan_title, risk_score, \
     debt_to_income_ratio, zip_code, state, employment_length, policy_code, ma50, ma100, _row, _version \
     FROM loan_features ORDER BY _row, _version";
const DEAD_LETTERS: &str =
    "SELECT source_table, _row, reason, detail FROM dead_letter ORDER BY source_table, _row";
const STATS: &str = "SELECT table_name, _version, application_date::text, column_name, rows, nulls, mean, sum_micros \
     FROM feature_stats ORDER BY 1, 2, 3, 4";
const STATS_SQLITE: &str =
    "SELECT table_name, _version, application_date, column_name, rows, nulls, mean, sum_micros \
     FROM feature_stats ORDER BY 1, 2, 3, 4";

/// The tables a resumed run must reproduce exactly.
fn store_tables(url: &str) -> [Vec<Vec<Value>>; 3] {
    [
        pg_rows(url, LOAN_FEATURES),
        pg_rows(url, DEAD_LETTERS),
        pg_rows(url, STATS),
    ]
}

/// The tables of an uninterrupted run of the features dataflow over `input`, in a fresh
/// database `name` of `server`: what a run that was disturbed must end with.
fn uninterrupted_run_tables(server: &str, input: &Path, name: &str) -> [Vec<Vec<Value>>; 3] {
    let reference = fresh_database(server, name);
    run_features(input, &reference);
    store_tables(&reference)
}

fn assert_same(what: &str, expected: &[Vec<Value>], actual: &[Vec<Value>]) {
    assert_eq!(expected.len(), actual.len(), "{what}: row counts");
    if let Some(i) = (0..expected.len()).find(|&i| expected[i] != actual[i]) {
        panic!(
            "{what} differs at row {i}:\n expected {:?}\n actual   {:?}",
            expected[i], actual[i]
        );
    }
}

/// Each table of `expected` equals the same table of `actual`, row for row.
fn assert_all_same(names: &[&str], expected: &[Vec<Vec<Value>>], actual: &[Vec<Vec<Value>>]) {
    for ((what, e), a) in names.iter().zip(expected).zip(actual) {
        assert_same(what, e, a);
    }
}

/// The store at `url` holds exactly the [`store_tables`] of `expected`.
fn assert_store_equals(expected: &[Vec<Vec<Value>>; 3], url: &str) {
    assert_all_same(
        &["loan_features", "dead_letter", "feature_stats"],
        expected,
        &store_tables(url),
    );
}

fn run_into(input: &Path, store: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "run",
        "--input",
        input.to_str().unwrap(),
        "--store",
        store,
        "-q",
    ];
    args.extend(extra);
    riskflow_ok(&args)
}

/// The scores of the last `rows` rows of `loan_features` as the store reads them back.
fn recent_scores(store: &str, rows: usize) -> Vec<Option<f64>> {
    let store: riskflow::sink::StoreUrl = store.parse().unwrap();
    store
        .open("loan_features")
        .unwrap()
        .recent_scores(rows)
        .unwrap()
}

#[test]
fn both_dialects_equal_postgres_window_functions_and_the_sqlite_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 30_000, "2007-2013", &["--quirks"]);
    let sqlite = dir.path().join("s.db");
    run_into(&input, &sqlite_store(&sqlite), &["-w", "2"]);
    let last_500: Vec<Option<f64>> = rows(
        &sqlite,
        "SELECT risk_score FROM (SELECT _row, risk_score FROM loan_features ORDER BY _row DESC LIMIT 500) ORDER BY _row",
    )
    .iter()
    .map(|r| as_f64(&r[0]))
    .collect();
    assert_eq!(recent_scores(&sqlite_store(&sqlite), 500), last_500);
    let server = server();
    for (dialect, url) in [
        ("postgres", fresh_database(&server, "dialect_pg")),
        ("redshift", fresh_database(&server, "dialect_rs")),
    ] {
        let store = if dialect == "redshift" {
            redshift(&url)
        } else {
            url.clone()
        };
        run_into(&input, &store, &["-w", "2", "--epoch-rows", "4096"]);

        // PostgreSQL's own window functions over the stored rows.
        let oracle = pg_rows(
            &url,
            "SELECT _row, _version, ma50, AVG(risk_score) OVER w50, ma100, AVG(risk_score) OVER w100
             FROM loan_features
             WINDOW w50 AS (ORDER BY _row ROWS BETWEEN 49 PRECEDING AND CURRENT ROW),
                    w100 AS (ORDER BY _row ROWS BETWEEN 99 PRECEDING AND CURRENT ROW)
             ORDER BY _row",
        );
        assert!(oracle.len() > 28_000, "{dialect}: {} rows", oracle.len());
        for r in &oracle {
            let version = &r[1];
            if *version != Value::Integer(2) {
                assert_eq!(r[2], r[3], "{dialect}: ma50 = sma(50) at {:?}", r[0]);
            }
            if *version != Value::Integer(0) {
                assert_eq!(r[4], r[5], "{dialect}: ma100 = sma(100) at {:?}", r[0]);
            }
        }
        let task1 = pg_rows(
            &url,
            "SELECT riskscorema50, AVG(risk_score) OVER (ORDER BY _row ROWS BETWEEN 49 PRECEDING AND CURRENT ROW)
             FROM risk_score_ma50 ORDER BY _row",
        );
        assert!(task1.len() > 50, "{dialect}: task 1 rows");
        assert!(
            task1.iter().all(|r| r[0] == r[1]),
            "{dialect}: riskscorema50"
        );

        // And the SQLite run's tables, value for value.
        assert_same(
            &format!("{dialect} loan_features"),
            &rows(&sqlite, LOAN_FEATURES_SQLITE),
            &pg_rows(&url, LOAN_FEATURES),
        );
        assert_same(
            &format!("{dialect} risk_score_ma50"),
            &rows(
                &sqlite,
                "SELECT _row, riskscorema50, risk_score FROM risk_score_ma50 ORDER BY _row",
            ),
            &pg_rows(
                &url,
                "SELECT _row, riskscorema50, risk_score FROM risk_score_ma50 ORDER BY _row",
            ),
        );
        assert_same(
            &format!("{dialect} dead_letter"),
            &rows(&sqlite, DEAD_LETTERS),
            &pg_rows(&url, DEAD_LETTERS),
        );
        assert_same(
            &format!("{dialect} feature_stats"),
            &rows(&sqlite, STATS_SQLITE),
            &pg_rows(&url, STATS),
        );
        // What a resumed stream refills its history with: the last stored rows' scores.
        assert_eq!(
            recent_scores(&store, 500),
            recent_scores(&sqlite_store(&sqlite), 500),
            "{dialect}: recent scores"
        );
        // A rerun finds the checkpoint at the end and changes nothing.
        let before = store_tables(&url);
        run_into(&input, &store, &[]);
        assert!(
            before == store_tables(&url),
            "{dialect}: a rerun changed the store"
        );
        // The same records from another file (another source, so no checkpoint to resume
        // from) are each stored once: every epoch meets the keys it brings.
        let copy = dir.path().join("same-records.csv");
        std::fs::copy(&input, &copy).unwrap();
        run_into(&copy, &store, &["-w", "2", "--epoch-rows", "4096"]);
        assert!(
            before == store_tables(&url),
            "{dialect}: the same records from another source changed the store"
        );
    }
}

#[test]
fn a_file_run_killed_at_random_moments_resumes_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // Sized, and the kills timed, so that they land while the run still has work: with a
    // writer per worker the whole run takes about two seconds here.
    let input = generate(dir.path(), "in.csv", 250_000, "2008-2013", &["--quirks"]);
    let server = server();
    let expected = uninterrupted_run_tables(&server, &input, "run_ref");

    let url = fresh_database(&server, "run_killed");
    let args = restartable_run_args(&input, &url);
    let hits = kill_and_restart(&args, 6, 150, 12, || pg_committed_epoch(&url));
    assert!(hits >= 5, "only {hits} kills hit a running process");
    assert_store_equals(&expected, &url);
}

/// The highest epoch committed to `url` (-1 before the first).
fn pg_committed_epoch(url: &str) -> i64 {
    let exists = pg_count(
        url,
        "SELECT count(*) FROM pg_tables WHERE tablename = 'dataflow_checkpoints'",
    );
    if exists == 0 {
        return -1;
    }
    pg_count(
        url,
        "SELECT coalesce(max(epoch), -1) FROM dataflow_checkpoints",
    )
}

#[test]
fn a_stream_killed_at_random_moments_resumes_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 120_000, "2008-2013", &["--quirks"]);
    let server = server();
    let expected = uninterrupted_run_tables(&server, &input, "stream_ref");

    let topic = fresh_topic("killed");
    // Small markers intervals make many epochs (about 60), so every restart has commits to
    // resume from, and six kills at most six epochs apart leave work for each to land in.
    produce(&input, &topic, 4, &["--marker-rows", "2000"]);
    let url = fresh_database(&server, "stream_killed");
    let args = stream_args_to(&topic, &url, 3, &["--until-complete"]);
    let hits = kill_and_restart(&args, 6, 400, 6, || pg_committed_epoch(&url));
    assert!(hits >= 5, "only {hits} kills hit a running stream");
    assert_store_equals(&expected, &url);
    assert_eq!(
        pg_count(
            &url,
            "SELECT count(*) FROM (SELECT DISTINCT _row, _version FROM loan_features) AS k"
        ),
        pg_count(&url, "SELECT count(*) FROM loan_features"),
        "no duplicate (_row, _version)"
    );

    // `status` reads the same store: rows per version, and every partition caught up.
    let status: serde_json::Value = serde_json::from_str(&riskflow_ok(&[
        "status",
        "--json",
        "--store",
        &url,
        "--brokers",
        &brokers(),
    ]))
    .unwrap();
    let features = &status[0];
    assert_eq!(features["table"], "loan_features");
    let stored: i64 = features["rows"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_i64().unwrap())
        .sum();
    assert_eq!(stored, pg_count(&url, "SELECT count(*) FROM loan_features"));
    let partitions = features["checkpoints"][0]["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 4, "{status}");
    assert!(
        partitions
            .iter()
            .all(|p| p["lag"] == 0 && p["end"].is_i64()),
        "{status}"
    );
}

/// A PostgreSQL cluster of the test's own, so that stopping it disturbs no other test.
struct OwnServer {
    dir: tempfile::TempDir,
    url: String,
}

impl OwnServer {
    fn start() -> OwnServer {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(repo("scripts/postgres.sh"))
            .arg("start")
            .arg(dir.path().join("pg"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/postgres.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        OwnServer { dir, url }
    }

    fn control(&self, action: &str) {
        let status = Command::new(repo("scripts/postgres.sh"))
            .arg(action)
            .arg(self.dir.path().join("pg"))
            .status()
            .unwrap();
        assert!(status.success(), "scripts/postgres.sh {action}");
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.control("stop");
    }
}

#[test]
fn a_database_outage_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 60_000, "2008-2013", &["--quirks"]);
    let own = OwnServer::start();
    let expected = uninterrupted_run_tables(&own.url, &input, "outage_ref");

    let topic = fresh_topic("outage");
    produce(&input, &topic, 3, &["--marker-rows", "1000"]);
    let url = fresh_database(&own.url, "outage");
    let stream = spawn_riskflow(&stream_args_to(&topic, &url, 2, &["--until-complete"]));
    wait_until("the first commits", Duration::from_secs(60), || {
        pg_committed_epoch(&url) >= 2
    });
    own.control("pause");
    std::thread::sleep(Duration::from_secs(3));
    own.control("resume");
    let (ok, out, err) = finish(stream);
    assert!(ok, "the stream failed: {out}\n{err}");
    assert!(
        err.contains("unreachable"),
        "the outage is in the log:\n{err}"
    );
    assert_store_equals(&expected, &url);
}

/// Columns of a table or view, in order.
fn pg_columns(url: &str, table: &str) -> Vec<String> {
    pg_rows(
        url,
        &format!(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = '{table}' ORDER BY ordinal_position"
        ),
    )
    .into_iter()
    .map(|r| match &r[0] {
        Value::Text(t) => t.clone(),
        other => panic!("{other:?}"),
    })
    .collect()
}

fn pg_comment(url: &str, table: &str, column: &str) -> String {
    match &pg_rows(
        url,
        &format!(
            "SELECT col_description('{table}'::regclass, ordinal_position::int)::text
             FROM information_schema.columns WHERE table_name = '{table}' AND column_name = '{column}'"
        ),
    )[0][0]
    {
        Value::Text(t) => t.clone(),
        other => panic!("no comment on {table}.{column}: {other:?}"),
    }
}

#[test]
fn evolution_adds_columns_comments_and_views_and_a_refusal_leaves_the_table_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 20_000, "2008-2013", &[]);
    let versions = [
        ("0", "2008-01-01", "ma50 = \"sma(50)\""),
        (
            "1",
            "2009-01-01",
            "ma50 = \"sma(50)\", ma100 = \"sma(100)\"",
        ),
        (
            "2",
            "2012-01-01",
            "ma50 = \"ema(50)\", ma100 = \"sma(100)\"",
        ),
    ];
    let plan = |upto: usize, extra: &str| {
        let mut toml = String::from("table = \"evolving\"\n");
        for (id, from, features) in &versions[..upto] {
            toml.push_str(&format!(
                "[[versions]]\nid = {id}\napplies_from = \"{from}\"\nfeatures = {{ {features} }}\n"
            ));
        }
        toml.push_str(extra);
        write_dataflow(dir.path(), &format!("evolve{upto}"), "2008-", &toml)
    };
    let server = server();
    for dialect in ["postgres", "redshift"] {
        let url = fresh_database(&server, &format!("evolve_{dialect}"));
        let store = if dialect == "redshift" {
            redshift(&url)
        } else {
            url.clone()
        };
        let run = |dataflow: &Path| {
            riskflow(&[
                "run",
                dataflow.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
                "--store",
                &store,
                "-q",
            ])
        };
        let base = "amount_requested application_date loan_title risk_score debt_to_income_ratio \
                    zip_code state employment_length policy_code";
        let with = |features: &str| {
            format!("{base} {features} _row _version _modified_ts")
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };

        assert!(run(&plan(1, "")).status.success());
        assert_eq!(pg_columns(&url, "evolving"), with("ma50"), "{dialect} v0");
        assert!(pg_comment(&url, "evolving", "ma50").contains("sma(50) since version 0"));

        assert!(run(&plan(2, "")).status.success());
        // ALTER TABLE ADD COLUMN appends; the views keep the documented order.
        let mut evolved = with("ma50");
        evolved.push("ma100".into());
        assert_eq!(pg_columns(&url, "evolving"), evolved, "{dialect} v1");
        assert!(pg_comment(&url, "evolving", "ma100").contains("sma(100) since version 1"));

        assert!(run(&plan(3, "")).status.success());
        assert_eq!(
            pg_columns(&url, "evolving"),
            evolved,
            "{dialect}: v2 redefines ma50 without DDL"
        );
        let comment = pg_comment(&url, "evolving", "ma50");
        assert!(
            comment.contains("ema(50) since version 2")
                && comment.contains("sma(50) in versions 0-1"),
            "{dialect}: {comment}"
        );
        assert_eq!(pg_columns(&url, "evolving_v0"), with("ma50"));
        assert_eq!(pg_columns(&url, "evolving_v1"), with("ma50 ma100"));
        assert_eq!(pg_columns(&url, "evolving_v2"), with("ma50 ma100"));
        assert_eq!(pg_columns(&url, "evolving_latest"), with("ma50 ma100"));
        let per_version = pg_rows(
            &url,
            "SELECT _version, count(*)::bigint FROM evolving GROUP BY 1 ORDER BY 1",
        );
        assert_eq!(per_version.len(), 3, "{dialect}: {per_version:?}");
        assert_eq!(
            pg_count(&url, "SELECT count(*) FROM evolving_latest"),
            pg_count(&url, "SELECT count(DISTINCT _row) FROM evolving")
        );

        // Dropping a feature is refused, and nothing changes.
        let before = (
            pg_columns(&url, "evolving"),
            pg_rows(
                &url,
                "SELECT _row, _version, ma50, ma100 FROM evolving ORDER BY 1, 2",
            ),
        );
        let refused = run(&plan(
            3,
            "[[versions]]\nid = 3\napplies_from = \"2013-01-01\"\nfeatures = { ma50 = \"ema(50)\" }\n",
        ));
        assert!(
            !refused.status.success(),
            "{dialect}: dropping ma100 was accepted"
        );
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("ma100"), "{dialect}: {stderr}");
        let after = (
            pg_columns(&url, "evolving"),
            pg_rows(
                &url,
                "SELECT _row, _version, ma50, ma100 FROM evolving ORDER BY 1, 2",
            ),
        );
        assert!(
            before == after,
            "{dialect}: a refused evolution changed the table"
        );
    }
}

/// The rows each process of a cluster says it stored (process 0's summary line, then the
/// others' "stored N rows").
fn stored_per_process(outputs: &[String]) -> Vec<u64> {
    outputs
        .iter()
        .map(|out| {
            let line = out
                .lines()
                .find(|l| l.contains(" stored "))
                .unwrap_or_else(|| panic!("no summary in {out}"));
            let after = &line[line.find(" stored ").unwrap() + " stored ".len()..];
            after
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect()
}

#[test]
fn every_process_of_a_cluster_writes_its_own_rows_into_a_shared_store() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 40_000, "2007-2013", &["--quirks"]);
    let sqlite = dir.path().join("single.db");
    run_features(&input, &sqlite_store(&sqlite));
    let expected_rows = rows(&sqlite, LOAN_FEATURES_SQLITE);
    let expected_stats = rows(&sqlite, STATS_SQLITE);
    let server = server();

    // From a file, 2 processes × 2 workers, in both dialects.
    for dialect in ["postgres", "redshift"] {
        let url = fresh_database(&server, &format!("cluster_{dialect}"));
        let store = if dialect == "redshift" {
            redshift(&url)
        } else {
            url.clone()
        };
        let hosts = hostfile(dir.path(), 2);
        let outputs = finish_cluster(start_cluster(
            &cluster_run_args(&input, &store, 2),
            2,
            &hosts,
        ));
        let what = format!("{dialect}, 2 processes × 2 workers");
        assert_same(&what, &expected_rows, &pg_rows(&url, LOAN_FEATURES));
        assert_same(&what, &expected_stats, &pg_rows(&url, STATS));
        let per_process = stored_per_process(&outputs);
        assert!(
            per_process.iter().all(|&n| n > 0),
            "{what}: every process writes rows: {per_process:?}\n{outputs:?}"
        );
        assert_eq!(
            per_process.iter().sum::<u64>() as usize,
            expected_rows.len(),
            "{what}: the processes' rows add up to the table"
        );
    }

    // From Kafka, with versions 1 and 2 registered while the cluster streams (in 2008, which
    // the producer's rate makes last a few seconds): process 0 adds `ma100` to the store before
    // any process writes a row that has it.
    let input = live_versions_input(dir.path());
    let sqlite = dir.path().join("live.db");
    run_features(&input, &sqlite_store(&sqlite));
    let version_0 = "table = \"loan_features\"\n[[versions]]\nid = 0\napplies_from = \"2007-01-01\"\nfeatures = { ma50 = \"sma(50)\" }\n";
    let dataflow = write_dataflow(dir.path(), "live", "2008-", version_0);
    let url = fresh_database(&server, "cluster_live");
    let topic = fresh_topic("cluster_live");
    let hosts = hostfile(dir.path(), 2);
    let cluster = start_cluster(
        &stream_args_to(
            &topic,
            &url,
            2,
            &[
                dataflow.to_str().unwrap(),
                "--until-complete",
                "--catalog-poll-ms",
                "100",
            ],
        ),
        2,
        &hosts,
    );
    let producer = spawn_riskflow(&produce_args(&input, &topic, 4, &["--rate", "4000"]));
    wait_until("the cluster to store rows", Duration::from_secs(60), || {
        pg_count(
            &url,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'loan_features'",
        ) > 0
            && pg_count(&url, "SELECT count(*) FROM loan_features") > 0
    });
    riskflow_ok(&[
        "catalog",
        "--store",
        &url,
        "register",
        "config/feature_sets/loan_features.toml",
    ]);
    let newest = pg_rows(
        &url,
        "SELECT max(application_date)::text FROM loan_features",
    );
    assert!(
        matches!(&newest[0][0], Value::Text(d) if d.as_str() < "2009"),
        "the producer outran the registration ({newest:?}): the test cannot check live versions"
    );
    let (produced, _, producer_err) = finish(producer);
    assert!(produced, "{producer_err}");
    let outputs = finish_cluster(cluster);
    assert_same(
        "Kafka, 2 processes × 2 workers, live versions",
        &rows(&sqlite, LOAN_FEATURES_SQLITE),
        &pg_rows(&url, LOAN_FEATURES),
    );
    assert!(
        stored_per_process(&outputs).iter().all(|&n| n > 0),
        "{outputs:?}"
    );
}

#[test]
fn a_cluster_on_a_shared_store_killed_mid_run_resumes_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 300_000, "2008-2013", &[]);
    let server = server();
    let expected = uninterrupted_run_tables(&server, &input, "cluster_kill_ref");

    let url = fresh_database(&server, "cluster_kill");
    let hosts = hostfile(dir.path(), 2);
    let mut cluster = start_cluster(&cluster_run_args(&input, &url, 1), 2, &hosts);
    wait_until("the cluster to commit", Duration::from_secs(60), || {
        pg_committed_epoch(&url) > 2
    });
    cluster[1].kill().unwrap();
    let (ok, _, stderr) = finish(cluster.remove(0));
    assert!(!ok, "process 0 exited successfully after its peer died");
    assert!(
        stderr.contains("a process of the cluster went away"),
        "{stderr}"
    );
    let _ = finish(cluster.remove(0));
    // Process 1 may have committed rows of epochs past the last checkpoint: the restart writes
    // them again, and the key keeps each once.
    let hosts = hostfile(dir.path(), 2);
    finish_cluster(start_cluster(&cluster_run_args(&input, &url, 1), 2, &hosts));
    assert_store_equals(&expected, &url);
}

/// Runs riskflow with `args` and kills it (SIGKILL) once the store at `url` holds a checkpoint
/// past `epoch`; returns the store's checkpoint epoch then.
fn kill_once_committed_past(args: &[String], url: &str, epoch: i64) -> i64 {
    let mut run = spawn_riskflow(args);
    wait_until("the run to commit", Duration::from_secs(60), || {
        pg_committed_epoch(url) > epoch
    });
    run.kill().unwrap();
    let _ = finish(run);
    pg_committed_epoch(url)
}

/// Each line of a child's stderr as it comes, and all of it once the child is gone.
fn log_lines(
    child: &mut Running,
) -> (
    std::sync::mpsc::Receiver<String>,
    std::thread::JoinHandle<String>,
) {
    let (lines, log) = std::sync::mpsc::channel();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
            let _ = lines.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    (log, reader)
}

/// A run that went away may have sent its last COMMIT just before: the server completes that
/// transaction afterwards. A run that starts meanwhile must read the checkpoint (and the totals
/// that go with it) only once that transaction is over, never a checkpoint it then replaces.
/// Here the test holds a transaction on `dataflow_checkpoints` while a run starts.
#[test]
fn a_run_reads_its_checkpoint_only_after_a_transaction_in_flight_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 100_000, "2008-2013", &["--quirks"]);
    let server = server();
    let expected = uninterrupted_run_tables(&server, &input, "fence_ref");

    let url = fresh_database(&server, "fence");
    let args = cluster_run_args(&input, &url, 1);
    kill_once_committed_past(&args, &url, 2);
    let mut holder = Client::connect(&url, NoTls).unwrap();
    let mut in_flight = holder.transaction().unwrap();
    in_flight
        .batch_execute("UPDATE dataflow_checkpoints SET _modified_ts = now()")
        .unwrap();
    let mut args = args;
    args.extend(["--log", "info"].map(String::from));
    let mut second = spawn_riskflow(&args);
    let (log, reader) = log_lines(&mut second);
    let held = std::time::Instant::now() + Duration::from_millis(1500);
    while let Some(left) = held.checked_duration_since(std::time::Instant::now()) {
        if let Ok(line) = log.recv_timeout(left) {
            assert!(
                !line.contains("Resuming after the store's last checkpoint"),
                "the run read the checkpoint while a transaction on it was in flight: {line}"
            );
        }
    }
    in_flight.commit().unwrap();
    while !log
        .recv_timeout(Duration::from_secs(60))
        .expect("the run resumes once the transaction is over")
        .contains("Resuming after the store's last checkpoint")
    {}
    let (ok, _, _) = finish(second);
    let stderr = reader.join().unwrap();
    assert!(ok, "{stderr}");
    assert_store_equals(&expected, &url);
}

/// The processes of a cluster start at different moments, and a commit can land in between
/// (the last transaction of a process that was just killed: the server completes it after the
/// process is gone). Here a run alone moves the store's checkpoint on after process 1 has read
/// the store and is connecting, and before process 0 starts: every process must resume from the
/// newer checkpoint. Keyed windows live on both processes, so windows restored from the older
/// checkpoint would give wrong values, not only wrong `feature_stats`.
#[test]
fn a_checkpoint_committed_while_a_cluster_starts_is_where_every_process_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 300_000, "2008-2013", &[]);
    let dataflow = write_dataflow(
        dir.path(),
        "agree",
        "2008-2013",
        r#"table = "keyed_features"
[[versions]]
id = 0
applies_from = "2008-01-01"
features = { ma50 = "sma(50)", ma50_by_state = "sma(50) by state", ema50_by_state = "ema(50) by state" }
"#,
    );
    let args = |store: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "run",
            dataflow.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--store",
            store,
            "-w",
            "1",
            "--epoch-rows",
            "4096",
            "-q",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    const KEYED: &str = "SELECT _row, _version, risk_score, ma50, ma50_by_state, ema50_by_state \
         FROM keyed_features ORDER BY _row, _version";
    let tables = |url: &str| [pg_rows(url, KEYED), pg_rows(url, STATS)];
    let server = server();
    let reference = fresh_database(&server, "cluster_agree_ref");
    assert!(finish(spawn_riskflow(&args(&reference, &[]))).0);
    let expected = tables(&reference);

    let url = fresh_database(&server, "cluster_agree");
    let alone = args(&url, &[]);
    let first = kill_once_committed_past(&alone, &url, 2);
    let hosts = hostfile(dir.path(), 2);
    let process = |p: &str| {
        spawn_riskflow(&args(
            &url,
            &["--log", "info", "-n", "2", "-p", p, "--hostfile", &hosts],
        ))
    };
    let mut process_1 = process("1");
    let (log, reader) = log_lines(&mut process_1);
    while !log
        .recv_timeout(Duration::from_secs(60))
        .expect("process 1 logs that it connects to the cluster")
        .contains("Connecting to the other processes of the cluster")
    {}
    let second = kill_once_committed_past(&alone, &url, first + 2);
    assert!(second > first);
    let (ok, _, stderr_0) = finish(process("0"));
    assert!(ok, "process 0: {stderr_0}");
    let (ok, _, _) = finish(process_1);
    let stderr_1 = reader.join().unwrap();
    assert!(ok, "process 1: {stderr_1}");
    assert_all_same(
        &["keyed_features", "feature_stats"],
        &expected,
        &tables(&url),
    );
}

/// Redshift's `COPY … FROM 's3://…'` in front of the test server (`scripts/redshift-copy-proxy.py`);
/// returns the proxy and its `redshift://` URL for `url`'s database. Loads are logged to `log`.
fn redshift_copy_proxy(url: &str, log: &Path) -> (Running, String) {
    let (scheme_user, rest) = url.split_once('@').unwrap();
    let (backend, db) = rest.split_once('/').unwrap();
    let mut proxy = Running::new(
        Command::new("python3")
            .arg("scripts/redshift-copy-proxy.py")
            .args(["--backend", backend, "--log", log.to_str().unwrap()])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .envs(AWS_ENV)
            .env("AWS_ENDPOINT_URL_S3", moto())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(proxy.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let proxied = format!("{scheme_user}@127.0.0.1:{}/{db}", port.trim());
    (proxy, redshift(&proxied))
}

#[test]
fn redshift_loads_each_epoch_from_s3_staging_with_copy() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 30_000, "2007-2013", &["--quirks"]);
    let sqlite = dir.path().join("s.db");
    run_into(&input, &sqlite_store(&sqlite), &["-w", "2"]);
    let bucket = format!("staging-{}", std::process::id());
    boto3(
        "boto3.client('s3', endpoint_url=sys.argv[1]).create_bucket(Bucket=sys.argv[2])",
        &[&bucket],
    );
    let url = fresh_database(&server(), "s3_staging");
    let log = dir.path().join("loads.log");
    let (proxy, store) = redshift_copy_proxy(&url, &log);
    let staging = format!("s3://{bucket}/epochs");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "--input",
            input.to_str().unwrap(),
            "--store",
            &store,
            "--s3-staging",
            &staging,
            "-w",
            "2",
            "--epoch-rows",
            "4096",
            "-q",
        ];
        args.extend(extra);
        riskflow_glue(&args).output().unwrap()
    };

    // A role that is not an ARN: Redshift refuses the COPY, and the run says so.
    let refused = run(&["--s3-staging-role", "not-a-role"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("IAM_ROLE"), "{stderr}");

    ok(run(&[]));
    let loads = std::fs::read_to_string(&log).unwrap();
    let loaded: Vec<&str> = loads.lines().collect();
    assert!(loaded.len() > 5, "epochs loaded through S3: {loads}");
    assert!(
        loaded
            .iter()
            .all(|l| l.contains(&format!("{bucket}/epochs/"))),
        "{loads}"
    );
    let stored: usize = loaded
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(
        stored as i64,
        pg_count(&url, "SELECT count(*) FROM loan_features")
            + pg_count(&url, "SELECT count(*) FROM risk_score_ma50"),
        "every stored row came through a staged object"
    );
    assert_same(
        "loan_features through S3",
        &rows(&sqlite, LOAN_FEATURES_SQLITE),
        &pg_rows(&url, LOAN_FEATURES),
    );
    assert_same(
        "risk_score_ma50 through S3",
        &rows(
            &sqlite,
            "SELECT _row, riskscorema50 FROM risk_score_ma50 ORDER BY _row",
        ),
        &pg_rows(
            &url,
            "SELECT _row, riskscorema50 FROM risk_score_ma50 ORDER BY _row",
        ),
    );
    // Committed epochs' objects are removed.
    let left = boto3(
        "print(boto3.client('s3', endpoint_url=sys.argv[1]).list_objects_v2(Bucket=sys.argv[2]).get('KeyCount'))",
        &[&bucket],
    );
    assert_eq!(left.trim(), "0", "staged objects left behind");
    // Not a Redshift store: refused.
    let wrong = riskflow(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--store",
        &url,
        "--s3-staging",
        &staging,
    ]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("not a redshift:// store"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    drop(proxy); // stops it
}
