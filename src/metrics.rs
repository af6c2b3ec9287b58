//! Prometheus metrics: one registry per process ([`global`]), updated by the engine, the stores
//! and the Kafka source, and served as text on `--metrics-addr HOST:PORT` (`GET /metrics`).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `riskflow_records_read_total` | counter | table |
//! | `riskflow_records_filtered_total` | counter | table |
//! | `riskflow_rows_stored_total` | counter | table, version |
//! | `riskflow_dead_letters_total` | counter | table, reason |
//! | `riskflow_durable_epoch` | gauge | table |
//! | `riskflow_store_commit_seconds` | histogram | table |
//! | `riskflow_store_retries_total` | counter | table |
//! | `riskflow_kafka_committed_offset` | gauge | topic, partition |
//! | `riskflow_kafka_lag` | gauge | topic, partition |

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Upper bounds of the commit latency buckets, in seconds.
const COMMIT_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// A latency histogram: counts per bucket (not cumulative), sum and count.
#[derive(Clone, Debug, Default)]
struct Histogram {
    buckets: [u64; COMMIT_BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Registry {
    read: BTreeMap<String, u64>,
    filtered: BTreeMap<String, u64>,
    stored: BTreeMap<(String, u32), u64>,
    dead: BTreeMap<(String, String), u64>,
    durable_epoch: BTreeMap<String, u64>,
    commits: BTreeMap<String, Histogram>,
    retries: BTreeMap<String, u64>,
    /// `(topic, partition)` → (committed offset, lag).
    partitions: BTreeMap<(String, i32), (i64, Option<i64>)>,
}

/// The process's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    registry: Mutex<Registry>,
}

/// The registry every part of the process reports to.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

impl Metrics {
    fn with(&self, update: impl FnOnce(&mut Registry)) {
        if let Ok(mut registry) = self.registry.lock() {
            update(&mut registry);
        }
    }

    pub fn read(&self, table: &str, read: u64, filtered: u64) {
        self.with(|r| {
            *r.read.entry(table.to_owned()).or_default() += read;
            *r.filtered.entry(table.to_owned()).or_default() += filtered;
        });
    }

    pub fn stored(&self, table: &str, version: u32, rows: u64) {
        self.with(|r| *r.stored.entry((table.to_owned(), version)).or_default() += rows);
    }

    pub fn dead_lettered(&self, table: &str, reason: &str) {
        self.with(|r| {
            *r.dead
                .entry((table.to_owned(), reason.to_owned()))
                .or_default() += 1
        });
    }

    /// An epoch was committed: it took `latency`, and epochs up to `epoch` are durable.
    pub fn committed(&self, table: &str, epoch: u64, latency: Duration) {
        self.with(|r| {
            let durable = r.durable_epoch.entry(table.to_owned()).or_default();
            *durable = (*durable).max(epoch);
            let h = r.commits.entry(table.to_owned()).or_default();
            let secs = latency.as_secs_f64();
            if let Some(i) = COMMIT_BUCKETS.iter().position(|b| secs <= *b) {
                h.buckets[i] += 1;
            }
            h.sum += secs;
            h.count += 1;
        });
    }

    pub fn store_retry(&self, table: &str) {
        self.with(|r| *r.retries.entry(table.to_owned()).or_default() += 1);
    }

    /// A partition's offsets were committed; `lag` is how far its end is ahead, if known.
    pub fn partition(&self, topic: &str, partition: i32, offset: i64, lag: Option<i64>) {
        self.with(|r| {
            r.partitions
                .insert((topic.to_owned(), partition), (offset, lag));
        });
    }

    /// The Prometheus text exposition of everything recorded so far.
    pub fn render(&self) -> String {
        let r = match self.registry.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str| {
            writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}").expect("string");
        };
        family(
            "riskflow_records_read_total",
            "counter",
            "Records read from the source.",
        );
        family(
            "riskflow_records_filtered_total",
            "counter",
            "Records outside the dataflow's years.",
        );
        family(
            "riskflow_rows_stored_total",
            "counter",
            "Rows committed to the store.",
        );
        family(
            "riskflow_dead_letters_total",
            "counter",
            "Records dead-lettered, by reason.",
        );
        family(
            "riskflow_durable_epoch",
            "gauge",
            "The last epoch the store committed.",
        );
        family(
            "riskflow_store_commit_seconds",
            "histogram",
            "Time to commit one epoch.",
        );
        family(
            "riskflow_store_retries_total",
            "counter",
            "Epoch writes retried after an outage.",
        );
        family(
            "riskflow_kafka_committed_offset",
            "gauge",
            "Next offset to read, as committed.",
        );
        family(
            "riskflow_kafka_lag",
            "gauge",
            "Messages between the committed offset and the partition's end.",
        );
        let mut line = |name: &str, labels: &str, value: String| {
            writeln!(out, "{name}{{{labels}}} {value}").expect("string");
        };
        for (table, n) in &r.read {
            line(
                "riskflow_records_read_total",
                &format!("table=\"{table}\""),
                n.to_string(),
            );
        }
        for (table, n) in &r.filtered {
            line(
                "riskflow_records_filtered_total",
                &format!("table=\"{table}\""),
                n.to_string(),
            );
        }
        for ((table, version), n) in &r.stored {
            let labels = format!("table=\"{table}\",version=\"{version}\"");
            line("riskflow_rows_stored_total", &labels, n.to_string());
        }
        for ((table, reason), n) in &r.dead {
            let labels = format!("table=\"{table}\",reason=\"{reason}\"");
            line("riskflow_dead_letters_total", &labels, n.to_string());
        }
        for (table, epoch) in &r.durable_epoch {
            line(
                "riskflow_durable_epoch",
                &format!("table=\"{table}\""),
                epoch.to_string(),
            );
        }
        for (table, h) in &r.commits {
            let mut cumulative = 0;
            for (bound, n) in COMMIT_BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let labels = format!("table=\"{table}\",le=\"{bound}\"");
                line(
                    "riskflow_store_commit_seconds_bucket",
                    &labels,
                    cumulative.to_string(),
                );
            }
            let labels = format!("table=\"{table}\",le=\"+Inf\"");
            line(
                "riskflow_store_commit_seconds_bucket",
                &labels,
                h.count.to_string(),
            );
            let labels = format!("table=\"{table}\"");
            line(
                "riskflow_store_commit_seconds_sum",
                &labels,
                h.sum.to_string(),
            );
            line(
                "riskflow_store_commit_seconds_count",
                &labels,
                h.count.to_string(),
            );
        }
        for (table, n) in &r.retries {
            line(
                "riskflow_store_retries_total",
                &format!("table=\"{table}\""),
                n.to_string(),
            );
        }
        for ((topic, partition), (offset, lag)) in &r.partitions {
            let labels = format!("topic=\"{topic}\",partition=\"{partition}\"");
            line(
                "riskflow_kafka_committed_offset",
                &labels,
                offset.to_string(),
            );
            if let Some(lag) = lag {
                line("riskflow_kafka_lag", &labels, lag.to_string());
            }
        }
        out
    }
}

/// Serves [`global`]'s metrics on `addr` from a background thread: `GET /metrics` (any path
/// works) answers the text exposition. Returns the bound address.
pub fn serve(addr: &str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new()
        .name("riskflow-metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(&stream);
                // Read the request head; the body (there is none for GET) is ignored.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let body = global().render();
                let mut stream = &stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })?;
    Ok(bound)
}
