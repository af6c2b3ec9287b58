//! Kafka: `riskflow produce` replays a file onto a real broker (tansu, started by
//! `scripts/test.sh`) and `riskflow stream` consumes it; the store must equal the batch run of
//! the same file, whatever the partition and worker counts, and stopping must never store an
//! epoch computed from part of its rows.

use crate::common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The broker `scripts/test.sh` started; a test that cannot reach one fails, never skips.
pub fn brokers() -> String {
    std::env::var("RISKFLOW_TEST_BROKERS").expect(
        "RISKFLOW_TEST_BROKERS is not set: run the suite with scripts/test.sh, which starts a \
         Kafka-compatible broker (scripts/kafka.sh) for it",
    )
}

/// A topic name no other test (or earlier run against the same broker) uses.
pub fn fresh_topic(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

pub fn produce_args(input: &Path, topic: &str, partitions: u32, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "produce",
        "--input",
        input.to_str().unwrap(),
        "--brokers",
        &brokers(),
        "--topic",
        topic,
        "--partitions",
        &partitions.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

pub fn produce(input: &Path, topic: &str, partitions: u32, extra: &[&str]) -> String {
    let args = produce_args(input, topic, partitions, extra);
    riskflow_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn stream_args(topic: &str, db: &Path, workers: u32, extra: &[&str]) -> Vec<String> {
    stream_args_to(topic, &sqlite_store(db), workers, extra)
}

/// Arguments of a quiet `riskflow stream` of `topic` into `store`.
pub fn stream_args_to(topic: &str, store: &str, workers: u32, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "stream",
        "--brokers",
        &brokers(),
        "--topic",
        topic,
        "--store",
        store,
        "-w",
        &workers.to_string(),
        "-q",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Rows stored so far (0 while the table does not exist yet).
pub fn stored(db: &Path) -> i64 {
    if !db.exists() {
        return 0;
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("SELECT count(*) FROM loan_features", [], |r| r.get(0))
        .unwrap_or(0)
}

/// The batch run of `dataflows/features.toml` over `input`.
fn batch_run(input: &Path, db: &Path) -> String {
    run_features(input, &sqlite_store(db))
}

/// Fails at the first row where `actual`'s feature tables differ from `expected`'s.
pub fn assert_tables_equal(expected: &Path, actual: &Path, what: &str) {
    for (table, (a, b)) in ["loan_features", "dead_letter", "feature_stats"]
        .iter()
        .zip(feature_tables(expected).iter().zip(&feature_tables(actual)))
    {
        assert_eq!(a.len(), b.len(), "{what}: {table} rows");
        if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
            panic!(
                "{what}: {table} differs at row {i}:\n expected {:?}\n actual   {:?}",
                a[i], b[i]
            );
        }
    }
}

/// The tables a stream and a batch run must agree on.
pub fn feature_tables(db: &Path) -> Vec<Vec<Vec<rusqlite::types::Value>>> {
    vec![
        table_rows(db, "loan_features", "_row, _version"),
        table_rows(db, "dead_letter", "source_table, _row"),
        table_rows(
            db,
            "feature_stats",
            "table_name, _version, application_date, column_name",
        ),
    ]
}

#[test]
fn streamed_store_equals_the_batch_run_for_any_partitions_and_workers() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 40_000, "2007-2013", &["--quirks"]);
    let batch_db = dir.path().join("batch.db");
    batch_run(&input, &batch_db);
    let expected = feature_tables(&batch_db);
    assert!(expected[0].len() > 35_000 && !expected[1].is_empty());

    for (partitions, workers) in [(1, 1), (3, 2), (8, 4)] {
        let topic = fresh_topic("equal");
        let produced = produce(&input, &topic, partitions, &["--years", "2008-"]);
        let db = dir.path().join(format!("p{partitions}w{workers}.db"));
        let summary = riskflow_ok(
            &stream_args(&topic, &db, workers, &["--until-complete"])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        let actual = feature_tables(&db);
        for (table, (a, b)) in ["loan_features", "dead_letter", "feature_stats"]
            .iter()
            .zip(expected.iter().zip(&actual))
        {
            assert_eq!(a.len(), b.len(), "{table} rows, ({partitions}, {workers})");
            if let Some(i) = (0..a.len()).find(|&i| a[i] != b[i]) {
                panic!(
                    "{table} differs at row {i} for ({partitions} partitions, {workers} workers):\n batch  {:?}\n stream {:?}",
                    a[i], b[i]
                );
            }
        }
        // Everything sent is accounted for: stored + filtered + dead-lettered.
        let sent: u64 = produced.split_whitespace().nth(1).unwrap().parse().unwrap();
        let (read, stored, filtered, dead) = summary_counts(summary.lines().next().unwrap());
        assert_eq!(read, sent, "{summary}");
        assert_eq!(read, stored + filtered + dead, "{summary}");
        assert!(
            dead > 0,
            "the quirky input's malformed rows reach dead_letter"
        );
    }

    // The version boundaries fall mid-stream, at their dates.
    let db = dir.path().join("p8w4.db");
    let bounds = rows(
        &db,
        "SELECT _version, min(application_date), max(application_date), count(ma100) \
         FROM loan_features GROUP BY _version ORDER BY _version",
    );
    use rusqlite::types::Value::{Integer, Text};
    assert_eq!(bounds.len(), 3, "{bounds:?}");
    assert_eq!(bounds[0][0], Integer(0));
    assert!(matches!(&bounds[0][2], Text(d) if d.as_str() < "2009-01-01"));
    assert_eq!(bounds[0][3], Integer(0), "version 0 has no ma100");
    assert!(matches!(&bounds[1][1], Text(d) if d.as_str() >= "2009-01-01"));
    assert!(matches!(&bounds[1][2], Text(d) if d.as_str() < "2012-01-01"));
    assert!(matches!(&bounds[2][1], Text(d) if d.as_str() >= "2012-01-01"));
}

#[test]
fn idle_partitions_do_not_stall_the_stream_and_sigint_drains() {
    let dir = tempfile::tempdir().unwrap();
    // Three rows over eight partitions: five partitions never get a row, only markers.
    let input = generate(dir.path(), "in.csv", 3, "2008-2008", &[]);
    let topic = fresh_topic("idle");
    let db = dir.path().join("idle.db");
    let stream = spawn_riskflow(&stream_args(&topic, &db, 3, &[]));
    // One row per second: the first row's epoch must close long before the replay ends.
    let mut producer = spawn_riskflow(&produce_args(&input, &topic, 8, &["--rate", "1"]));
    wait_until(
        "the first row to be stored",
        Duration::from_secs(30),
        || stored(&db) >= 1,
    );
    assert!(
        producer.try_wait().unwrap().is_none(),
        "the first row was stored only after the replay ended"
    );
    let (ok, out, err) = finish(producer);
    assert!(ok, "produce failed: {out}\n{err}");
    wait_until("all three rows", Duration::from_secs(30), || {
        stored(&db) == 3
    });
    interrupt(&stream);
    let (ok, out, err) = finish(stream);
    assert!(ok, "stream did not exit cleanly on SIGINT: {out}\n{err}");
    assert!(out.contains("stopped on a signal"), "{out}");
}

#[test]
fn a_stream_stopped_mid_replay_stores_a_gapless_prefix_and_a_restart_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 30_000, "2008-2012", &["--quirks"]);
    let batch_db = dir.path().join("batch.db");
    batch_run(&input, &batch_db);
    let expected = table_rows(&batch_db, "loan_features", "_row, _version");

    let topic = fresh_topic("stop");
    let db = dir.path().join("stop.db");
    let stream = spawn_riskflow(&stream_args(&topic, &db, 2, &[]));
    let producer = spawn_riskflow(&produce_args(&input, &topic, 3, &["--rate", "10000"]));
    wait_until("some rows", Duration::from_secs(30), || stored(&db) > 2_000);
    interrupt(&stream);
    let (ok, out, err) = finish(stream);
    assert!(ok, "stream did not exit cleanly on SIGINT: {out}\n{err}");
    let partial = table_rows(&db, "loan_features", "_row, _version");
    assert!(
        !partial.is_empty() && partial.len() < expected.len(),
        "stopped mid-replay: {} of {} rows",
        partial.len(),
        expected.len()
    );
    // Whole epochs only: the stored rows are exactly the batch's first rows, values included.
    assert_eq!(partial[..], expected[..partial.len()]);

    let (ok, out, err) = finish(producer);
    assert!(ok, "produce failed: {out}\n{err}");
    let args = stream_args(&topic, &db, 2, &["--until-complete"]);
    riskflow_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        table_rows(&db, "loan_features", "_row, _version"),
        expected,
        "the restarted stream completes the store exactly once"
    );
}

#[test]
fn a_row_travels_with_its_number_as_the_key_and_the_older_header_layout_still_streams() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 6_000, "2008-2010", &["--quirks"]);
    // Record 101 becomes one over the reader's 1 MiB limit: it travels as its head with a header.
    let text = std::fs::read(&input).unwrap();
    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    let oversized = format!(
        "1000.0,2008-01-05,\"{}\",600.0,10%,100xx,NY,1 year,0.0\n",
        "x".repeat(3 << 20)
    );
    let full_length = oversized.len() - 1; // without its newline
    let edited = [
        &lines[..101].concat(),
        oversized.as_bytes(),
        &lines[101..].concat(),
    ]
    .concat();
    std::fs::write(&input, edited).unwrap();
    let batch_db = dir.path().join("batch.db");
    batch_run(&input, &batch_db);
    let topic = fresh_topic("keyed");
    produce(&input, &topic, 2, &[]);

    // Every row message: the key is its `_row` in decimal, on partition (_row - 1) % 2, in
    // increasing order there; the value is the record as it is in the file; no header.
    let messages = read_replay(&topic);
    let text = std::fs::read(&input).unwrap();
    let after_header = &text[text.iter().position(|&b| b == b'\n').unwrap() + 1..];
    let mut last = [0u64; 2];
    let mut rows = 0;
    for m in messages.iter().filter(|m| !m.is_marker()) {
        let row: u64 = std::str::from_utf8(m.key.as_deref().expect("a row has a key"))
            .unwrap()
            .parse()
            .expect("the key is a decimal row number");
        assert_eq!((row - 1) % 2, m.partition as u64);
        assert!(
            row > last[m.partition as usize],
            "rows in order on a partition"
        );
        last[m.partition as usize] = row;
        if row == 101 {
            let length_header = full_length.to_string().into_bytes();
            assert_eq!(m.headers, [("_oversized".to_owned(), length_header)]);
            assert_eq!(m.value[..], oversized.as_bytes()[..64 * 1024]);
        } else {
            assert!(
                m.headers.is_empty(),
                "row {row} has no header: {:?}",
                m.headers
            );
        }
        if row == 1 {
            assert!(
                after_header.starts_with(&m.value),
                "row 1 is the file's first record"
            );
        }
        rows += 1;
    }
    assert_eq!(rows, 6_001);
    // The stream dead-letters the oversized record as the batch run does, keeping less of it
    // (what the message carried); everything else is the same.
    assert_eq!(take_oversized_dead_letter(&batch_db, full_length), 1 << 20);
    let db = dir.path().join("keyed.db");
    let args = stream_args(&topic, &db, 2, &["--until-complete"]);
    riskflow_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(take_oversized_dead_letter(&db, full_length), 64 * 1024);
    assert_tables_equal(&batch_db, &db, "a topic with an oversized record");

    // The same replay as riskflow wrote it before the row number moved to the key (a header
    // `_row`, no key) streams into the same store as the batch run.
    let legacy = fresh_topic("legacy");
    riskflow::kafka::ensure_topic(&brokers(), &legacy, 2).unwrap();
    let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    for m in &messages {
        let mut headers = rdkafka::message::OwnedHeaders::new();
        for (key, value) in &m.headers {
            headers = headers.insert(rdkafka::message::Header {
                key,
                value: Some(value),
            });
        }
        if let Some(row) = m.key.as_deref().filter(|_| !m.is_marker()) {
            headers = headers.insert(rdkafka::message::Header {
                key: "_row",
                value: Some(row),
            });
        }
        let record = rdkafka::producer::BaseRecord::<(), [u8]>::to(&legacy)
            .partition(m.partition)
            .payload(&m.value[..])
            .headers(headers);
        producer.send(record).map_err(|(e, _)| e).unwrap();
        producer.poll(Duration::ZERO);
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).unwrap();
    let db = dir.path().join("legacy.db");
    let args = stream_args(&legacy, &db, 2, &["--until-complete"]);
    riskflow_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(take_oversized_dead_letter(&db, full_length), 64 * 1024);
    assert_tables_equal(&batch_db, &db, "a topic in the older header layout");
}

/// Checks that row 101 is dead-lettered as an oversized record of `full_length` bytes, deletes
/// that dead letter, and returns how many of its bytes were kept.
fn take_oversized_dead_letter(db: &Path, full_length: usize) -> usize {
    let conn = rusqlite::Connection::open(db).unwrap();
    let (reason, detail, kept): (String, String, usize) = conn
        .query_row(
            "SELECT reason, detail, length(raw) FROM dead_letter WHERE _row = 101",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(reason, "oversized_record");
    assert!(detail.contains(&full_length.to_string()), "{detail}");
    conn.execute("DELETE FROM dead_letter WHERE _row = 101", [])
        .unwrap();
    kept
}

/// One message of a replay, as read back.
struct Replayed {
    partition: i32,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

impl Replayed {
    fn is_marker(&self) -> bool {
        self.headers.iter().any(|(k, _)| k == "_marker")
    }
}

/// Every message of a finished replay on `topic` (until each partition's final marker), in
/// order per partition.
fn read_replay(topic: &str) -> Vec<Replayed> {
    use rdkafka::message::Headers;
    let (consumer, partitions) = read_from_the_beginning(topic);
    let mut out = Vec::new();
    let mut complete = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while complete < partitions {
        assert!(
            Instant::now() < deadline,
            "the replay's final markers arrive"
        );
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message.unwrap();
        let headers = message.headers().map_or_else(Vec::new, |h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        });
        let replayed = Replayed {
            partition: message.partition(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().unwrap_or_default().to_vec(),
            headers,
        };
        if replayed.is_marker() {
            let marker: serde_json::Value = serde_json::from_slice(&replayed.value).unwrap();
            if marker["complete"] == serde_json::Value::Bool(true) {
                complete += 1;
            }
        }
        out.push(replayed);
    }
    out
}

#[test]
fn messages_in_the_original_json_format_are_consumed_and_stored() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 8_000, "2008-2010", &["--quirks"]);
    let batch_db = dir.path().join("batch.db");
    batch_run(&input, &batch_db);
    let topic = fresh_topic("json");
    produce(&input, &topic, 3, &["--format", "json-array"]);
    // The messages are JSON arrays of the nine fields, with no row number.
    let first = consume(&topic, 1).remove(0);
    let fields: Vec<serde_json::Value> = serde_json::from_slice(&first).expect("a JSON array");
    assert_eq!(fields.len(), 9);

    let db = dir.path().join("json.db");
    let args = stream_args(
        &topic,
        &db,
        2,
        &["--until-complete", "--format", "json-array"],
    );
    riskflow_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // Arrival order is not file order, so compare what was stored, not the windows.
    let content = |db: &Path| {
        rows(
            db,
            "SELECT amount_requested, application_date, loan_title, risk_score, state \
             FROM loan_features ORDER BY 1, 2, 3, 4, 5",
        )
    };
    assert_eq!(content(&db), content(&batch_db));
    assert_eq!(
        count(&db, "SELECT count(*) FROM dead_letter"),
        count(&batch_db, "SELECT count(*) FROM dead_letter")
    );
    assert_eq!(
        count(
            &db,
            "SELECT max(_row) FROM (SELECT _row FROM loan_features UNION ALL SELECT _row FROM dead_letter)"
        ),
        count(&db, "SELECT (SELECT count(*) FROM loan_features) + (SELECT count(*) FROM dead_letter)"),
        "rows are numbered without gaps in arrival order"
    );
}

#[test]
fn the_outflow_topic_carries_every_stored_row_as_kafka_connect_json() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 5_000, "2008-2012", &[]);
    let topic = fresh_topic("in");
    let outflow = fresh_topic("out");
    produce(&input, &topic, 2, &[]);
    let db = dir.path().join("out.db");
    let args = stream_args(
        &topic,
        &db,
        2,
        &["--until-complete", "--outflow-topic", &outflow],
    );
    riskflow_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stored = count(&db, "SELECT count(*) FROM loan_features") as usize;
    let messages = consume(&outflow, stored);
    assert_eq!(messages.len(), stored);
    let mut versions_seen = std::collections::BTreeSet::new();
    for message in &messages {
        let value: serde_json::Value = serde_json::from_slice(message).unwrap();
        let payload = &value["payload"];
        let version = payload["_version"].as_u64().unwrap();
        versions_seen.insert(version);
        let fields: Vec<&str> = value["schema"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields.contains(&"ma100"), version >= 1, "{fields:?}");
        let row = payload["_row"].as_i64().unwrap();
        let ma50 = count(
            &db,
            &format!("SELECT count(*) FROM loan_features WHERE _row = {row} AND _version = {version} AND ma50 IS {}", payload["ma50"]),
        );
        assert_eq!(ma50, 1, "outflow row {row} matches the store: {payload}");
    }
    assert_eq!(versions_seen.into_iter().collect::<Vec<_>>(), vec![0, 1, 2]);
}

/// A consumer of every partition of `topic`, from the beginning; and the partition count.
fn read_from_the_beginning(topic: &str) -> (BaseConsumer, i32) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", "riskflow-tests")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    (consumer, partitions)
}

/// Reads `at_least` messages from every partition of `topic` (failing after 30 s).
fn consume(topic: &str, at_least: usize) -> Vec<Vec<u8>> {
    let (consumer, _) = read_from_the_beginning(topic);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < at_least && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.unwrap();
            if message.headers().is_none() {
                out.push(message.payload().unwrap_or_default().to_vec());
            }
        }
    }
    out
}

/// `GET /metrics` from `addr`: each sample line as (name with labels, value).
fn scrape(addr: &str) -> Vec<(String, f64)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("the metrics endpoint answers");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: riskflow\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            (name.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn metric_sum(samples: &[(String, f64)], prefix: &str) -> f64 {
    samples
        .iter()
        .filter(|(name, _)| name.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn the_metrics_endpoint_reports_what_the_stream_stored() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 6_000, "2008-2012", &["--quirks"]);
    let topic = fresh_topic("metrics");
    let produced = produce(&input, &topic, 2, &["--marker-rows", "1000"]);
    let sent: f64 = produced.split_whitespace().nth(1).unwrap().parse().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let db = dir.path().join("m.db");
    let stream = spawn_riskflow(&stream_args(&topic, &db, 2, &["--metrics-addr", &addr]));
    // Every record is read and committed: stored or dead-lettered (none filtered: 2008-).
    let committed =
        || stored(&db) + count_or_zero(&db, "SELECT count(*) FROM dead_letter") == sent as i64;
    wait_until("the whole topic", Duration::from_secs(60), committed);
    // Each worker commits its partitions' offsets once it sees the store's commit, a step later:
    // the lag reaches 0 just after the rows are in the store, not at the same instant.
    let lag = |partition: u32| {
        format!("riskflow_kafka_lag{{topic=\"{topic}\",partition=\"{partition}\"}}")
    };
    let mut samples = Vec::new();
    wait_until(
        "every partition's lag to be 0",
        Duration::from_secs(30),
        || {
            samples = scrape(&addr);
            (0..2).all(|partition| metric(&samples, &lag(partition)) == Some(0.0))
        },
    );
    interrupt(&stream);
    let (ok, out, err) = finish(stream);
    assert!(ok, "{out}\n{err}");

    let get =
        |name: &str| metric(&samples, name).unwrap_or_else(|| panic!("no {name} in {samples:?}"));
    assert_eq!(
        get("riskflow_records_read_total{table=\"loan_features\"}"),
        sent
    );
    assert_eq!(
        metric_sum(
            &samples,
            "riskflow_rows_stored_total{table=\"loan_features\""
        ),
        stored(&db) as f64
    );
    for version in 0..3 {
        let name =
            format!("riskflow_rows_stored_total{{table=\"loan_features\",version=\"{version}\"}}");
        let sql = format!("SELECT count(*) FROM loan_features WHERE _version = {version}");
        assert_eq!(get(&name), count(&db, &sql) as f64, "version {version}");
    }
    assert_eq!(
        metric_sum(
            &samples,
            "riskflow_dead_letters_total{table=\"loan_features\""
        ),
        count(&db, "SELECT count(*) FROM dead_letter") as f64
    );
    assert!(get("riskflow_store_commit_seconds_count{table=\"loan_features\"}") > 0.0);
    // Markers every 1,000 rows: epochs 0..=5 at least.
    assert!(get("riskflow_durable_epoch{table=\"loan_features\"}") >= 5.0);
    for partition in 0..2 {
        let labels = format!("{{topic=\"{topic}\",partition=\"{partition}\"}}");
        assert!(get(&format!("riskflow_kafka_committed_offset{labels}")) > 0.0);
        assert_eq!(get(&lag(partition)), 0.0, "partition {partition}");
    }
}

/// The value of the sample named `name`, if scraped.
fn metric(samples: &[(String, f64)], name: &str) -> Option<f64> {
    samples.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

/// A count, or 0 while the table does not exist yet.
fn count_or_zero(db: &Path, sql: &str) -> i64 {
    if !db.exists() {
        return 0;
    }
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

/// 12,000 rows of 2008 (long enough, at a producer rate of 4,000 rows/s, to register versions
/// while a stream is still in them), then 20,000 rows of 2009-2013.
pub fn live_versions_input(dir: &Path) -> std::path::PathBuf {
    let early = generate(dir, "early.csv", 12_000, "2008-2008", &[]);
    let late = generate(dir, "late.csv", 20_000, "2009-2013", &["--seed", "9"]);
    let input = dir.join("live.csv");
    let late_text = std::fs::read_to_string(&late).unwrap();
    let late_rows = late_text.split_once('\n').unwrap().1;
    std::fs::write(&input, std::fs::read_to_string(&early).unwrap() + late_rows).unwrap();
    input
}

#[test]
fn versions_registered_while_a_stream_runs_apply_from_their_dates_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // 2008 first, long enough (at the producer's rate) to register versions 1 and 2 while the
    // stream is still in it; then 2009-2013.
    let input = live_versions_input(dir.path());

    // The stream starts with version 0 only.
    let version_0 = "table = \"loan_features\"\n[[versions]]\nid = 0\napplies_from = \"2007-01-01\"\nfeatures = { ma50 = \"sma(50)\" }\n";
    let dataflow = write_dataflow(dir.path(), "live", "2008-", version_0);
    let db = dir.path().join("live.db");
    let topic = fresh_topic("live");
    let stream = spawn_riskflow(&stream_args(
        &topic,
        &db,
        2,
        &[
            dataflow.to_str().unwrap(),
            "--until-complete",
            "--catalog-poll-ms",
            "100",
        ],
    ));
    let producer = spawn_riskflow(&produce_args(&input, &topic, 3, &["--rate", "4000"]));
    wait_until(
        "the stream to store its first rows",
        Duration::from_secs(60),
        || stored(&db) > 0,
    );
    register_default_plan(&db);
    let newest = rows(&db, "SELECT max(application_date) FROM loan_features");
    assert!(
        matches!(&newest[0][0], rusqlite::types::Value::Text(d) if d.as_str() < "2009"),
        "the producer outran the registration ({newest:?}): the test cannot check live versions"
    );
    let (produced, _, producer_err) = finish(producer);
    assert!(produced, "{producer_err}");
    let (ok, _, stream_err) = finish(stream);
    assert!(ok, "{stream_err}");

    // The store equals the batch run under the full plan: ma100 was added as a column and
    // versions 1 and 2 applied from their dates.
    let batch_db = dir.path().join("batch.db");
    batch_run(&input, &batch_db);
    assert_tables_equal(&batch_db, &db, "live versions");
    let versions = rows(
        &db,
        "SELECT DISTINCT _version FROM loan_features ORDER BY 1",
    );
    assert_eq!(versions.len(), 3, "{versions:?}");
    assert_eq!(
        count(&db, "SELECT count(*) FROM loan_features_v2"),
        count(&db, "SELECT count(*) FROM loan_features WHERE _version = 2")
    );
}
