//! Kafka: the replay producer (`riskflow produce`), the partition source the dataflow reads
//! (`riskflow stream`), and the optional outflow topic.
//!
//! # Messages on the inflow topic
//!
//! * **A row** (format `riskflow`, the default): the value is the CSV record exactly as it was in
//!   the file (no newline); the key holds its source position (`_row`) in decimal. Rows go to
//!   partition `(_row - 1) % partitions`, so every partition holds rows in increasing `_row` order.
//!   A record over the reader's size limit is sent as its first 64 KiB with the header
//!   `_oversized` (its full length), so that the consumer dead-letters it with that reason.
//!   (Topics written before the row number moved to the key carry it in a header `_row`; the
//!   consumer reads those too.)
//! * **A row in the original producer's format** (format `json-array`): the value is a JSON array
//!   of the nine fields, the key a random string, no `_row`. The consumer numbers such rows in
//!   the order it receives them, which is not reproducible.
//! * **A marker**: header `_marker`, value a JSON [`Marker`]. The producer writes one to every
//!   partition every so often (time or rows, whichever comes first). Marker `k` closes epoch `k`
//!   on its partition: every row of epoch `k` was written before it, every later row belongs to a
//!   later epoch. Rows between markers `k-1` and `k` belong to epoch `k`, on every partition — the
//!   producer is the one place that sees the global row order, so it draws the epoch lines, and a
//!   consumer can close an epoch on a partition that got no rows at all. The last markers have
//!   `complete: true`.
//!
//! Everything is readable with standard tools, e.g.
//! `kcat -C -b HOST:PORT -t inflow -f '%p %o %k %h %s\n'`.

mod batch;
mod outbox;
mod outflow;
mod produce;
mod source;

pub use outflow::OutflowSink;
pub use produce::{produce, ProduceOptions, ProduceReport};
pub use source::{DelayHistogram, KafkaSource, StreamOptions};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Message};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Header that held a row's source position before it moved to the message key.
pub const LEGACY_ROW_HEADER: &str = "_row";
/// Header marking a progress marker.
pub const MARKER_HEADER: &str = "_marker";
/// Header of a record cut to its head, holding its full length.
pub const OVERSIZED_HEADER: &str = "_oversized";
/// How much of an oversized record is sent (brokers refuse messages over about 1 MB).
pub const OVERSIZED_HEAD_BYTES: usize = 64 * 1024;

/// How long metadata and admin requests may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// How rows are encoded on the inflow topic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum MessageFormat {
    /// The CSV record with its `_row` as the key (reproducible order).
    #[default]
    Riskflow,
    /// The original producer's JSON array of the nine fields (arrival order).
    JsonArray,
}

/// A progress marker's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    /// The epoch this marker closes.
    pub epoch: u64,
    /// Every row below this source position has been written.
    pub next_row: u64,
    /// Rows written so far by this replay.
    pub rows: u64,
    /// The replay is complete: nothing follows on this partition.
    pub complete: bool,
}

/// Errors talking to Kafka, each naming what was being done.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka: {action} (brokers {brokers}): {error}")]
    Client {
        action: String,
        brokers: String,
        #[source]
        error: Box<rdkafka::error::KafkaError>,
    },
    #[error("kafka: {0}")]
    Other(String),
}

impl KafkaError {
    fn client(
        action: impl Into<String>,
        brokers: &str,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> KafkaError {
        let action = action.into();
        let brokers = brokers.to_owned();
        move |error| KafkaError::Client {
            action,
            brokers,
            error: Box::new(error),
        }
    }
}

/// Counts failed deliveries and keeps the first error; counts the bytes (keys and payloads)
/// handed to librdkafka and those it has settled, delivered or not.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    handed_bytes: AtomicU64,
    settled_bytes: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let message = match result {
            Ok(message) => message,
            Err((error, message)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().expect("delivery lock");
                first.get_or_insert_with(|| error.to_string());
                message
            }
        };
        let bytes = message.payload_len() + message.key().map_or(0, <[u8]>::len);
        self.settled_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

impl Deliveries {
    /// Notes `bytes` of keys and payloads handed to librdkafka.
    pub fn handed(&self, bytes: usize) {
        self.handed_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Bytes handed and not yet settled.
    pub fn in_flight_bytes(&self) -> usize {
        let handed = self.handed_bytes.load(Ordering::Relaxed);
        handed.saturating_sub(self.settled_bytes.load(Ordering::Relaxed)) as usize
    }

    /// Fails when any message was not delivered.
    pub fn check(&self, topic: &str) -> Result<(), KafkaError> {
        let failed = self.failed.swap(0, Ordering::Relaxed);
        if failed == 0 {
            return Ok(());
        }
        let first = self.first_error.lock().expect("delivery lock").take();
        Err(KafkaError::Other(format!(
            "{failed} messages were not delivered to {topic} (first error: {})",
            first.unwrap_or_default()
        )))
    }
}

/// The configuration every client of ours starts from.
fn base_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", "riskflow")
        .set("log_level", "4");
    config
}

/// Creates `topic` with `partitions` partitions unless it exists; returns its partition count.
pub fn ensure_topic(brokers: &str, topic: &str, partitions: i32) -> Result<i32, KafkaError> {
    if let Some(existing) = partition_count(brokers, topic)? {
        return Ok(existing);
    }
    let admin: AdminClient<DefaultClientContext> = base_config(brokers)
        .create()
        .map_err(KafkaError::client("creating an admin client", brokers))?;
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let results = futures_executor::block_on(admin.create_topics([&new_topic], &options)).map_err(
        KafkaError::client(format!("creating topic {topic}"), brokers),
    )?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::Other(format!(
                    "creating topic {name} on {brokers}: {code}"
                )))
            }
        }
    }
    // The topic's metadata can take a moment to appear.
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    loop {
        if let Some(count) = partition_count(brokers, topic)? {
            return Ok(count);
        }
        if std::time::Instant::now() > deadline {
            return Err(KafkaError::Other(format!(
                "topic {topic} was created on {brokers} but does not show in its metadata"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The number of partitions of `topic`, or `None` when it does not exist.
pub fn partition_count(brokers: &str, topic: &str) -> Result<Option<i32>, KafkaError> {
    let consumer: BaseConsumer = base_config(brokers)
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(KafkaError::client("creating a metadata client", brokers))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(KafkaError::client(
            format!("reading the metadata of {topic}"),
            brokers,
        ))?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

/// Messages held by each partition of `topic` (high watermark minus low).
pub fn partition_sizes(
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<i64>, KafkaError> {
    Ok(watermarks(brokers, topic, partitions)?
        .into_iter()
        .map(|(low, high)| high - low)
        .collect())
}

/// The end (high watermark) of each partition of `topic`; empty when the topic is missing.
pub fn partition_ends(brokers: &str, topic: &str) -> Result<BTreeMap<i32, i64>, KafkaError> {
    let partitions = partition_count(brokers, topic)?.unwrap_or(0);
    Ok(watermarks(brokers, topic, partitions)?
        .into_iter()
        .enumerate()
        .map(|(p, (_, high))| (p as i32, high))
        .collect())
}

/// `(low, high)` watermarks of partitions `0..partitions`.
fn watermarks(brokers: &str, topic: &str, partitions: i32) -> Result<Vec<(i64, i64)>, KafkaError> {
    let consumer: BaseConsumer = base_config(brokers)
        .create()
        .map_err(KafkaError::client("creating a metadata client", brokers))?;
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
                .map_err(KafkaError::client(
                    format!("reading the offsets of {topic}/{p}"),
                    brokers,
                ))
        })
        .collect()
}
