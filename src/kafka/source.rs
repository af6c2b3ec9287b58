//! The Kafka source: each timely worker reads its own partitions (`p % workers == index`) with
//! a consumer of its own, and turns markers into epochs (see [`crate::kafka`]).
//!
//! librdkafka wakes the worker when a message arrives (its queue's non-empty callback), so an
//! idle stream parks instead of spinning. Offsets are committed only for epochs the store has
//! made durable; auto-commit is off (the committed group offsets are for monitoring: where a
//! stream resumes is the store's checkpoint, committed with the rows, see [`crate::checkpoint`]).

use super::batch::{BatchReader, RawMessage};
use super::{
    base_config, KafkaError, Marker, MessageFormat, LEGACY_ROW_HEADER, MARKER_HEADER,
    OVERSIZED_HEADER, OVERSIZED_HEAD_BYTES, REQUEST_TIMEOUT,
};
use crate::checkpoint::{PartPosition, Position};
use crate::sink::push_csv_field;
use crate::source::{Poll, RawChunk, Rejection, Source, SourceError};
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, DefaultConsumerContext};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where and how to read the inflow topic.
#[derive(Clone, Debug)]
pub struct StreamOptions {
    pub brokers: String,
    pub topic: String,
    /// Consumer group the offsets are committed under.
    pub group: String,
    pub format: MessageFormat,
    /// Finish once every partition has seen the producer's final marker.
    pub until_complete: bool,
    /// Where the delay from produce to durable store is recorded, per row.
    pub delays: Arc<DelayHistogram>,
}

/// Delays from a message's timestamp (when it was produced) to the moment its epoch is durable
/// in the store, in whole milliseconds; shared by the workers of a stream. Only rows produced
/// after the stream received its first message count: older ones measure the backlog it found
/// when it connected, not the stream.
#[derive(Debug)]
pub struct DelayHistogram {
    /// `buckets[ms]`: rows with that delay; the last bucket holds everything longer.
    buckets: Vec<AtomicU64>,
}

impl Default for DelayHistogram {
    fn default() -> Self {
        DelayHistogram {
            buckets: (0..=DelayHistogram::MAX_MS)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

impl DelayHistogram {
    /// Delays of a minute or more share the last bucket.
    const MAX_MS: usize = 60_000;

    pub fn record(&self, delay_ms: i64) {
        let bucket = (delay_ms.max(0) as usize).min(Self::MAX_MS);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The delay (ms) at or under which a share `q` (0–1) of the rows were stored.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (ms, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(ms as u64);
            }
        }
        None
    }
}

impl StreamOptions {
    /// A source error that says which topic and brokers it concerns.
    fn error(&self, what: String) -> SourceError {
        SourceError::Kafka(format!(
            "{what} (topic {}, brokers {})",
            self.topic, self.brokers
        ))
    }
}

/// Messages taken from librdkafka per poll: enough to amortise, few enough to keep the worker
/// responsive.
const POLL_BUDGET: usize = 4096;

/// How many epochs past the frontier a partition is read (see `KafkaSource::fetch_partitions`).
const READ_AHEAD_EPOCHS: u64 = 2;

/// Longest a worker sleeps without a wake-up from librdkafka.
const IDLE_WAIT: Duration = Duration::from_millis(50);

/// Where one partition stands.
#[derive(Debug, Default)]
struct PartitionState {
    /// The epoch its next row belongs to.
    epoch: u64,
    /// The producer's final marker was seen.
    complete: bool,
    /// The last row seen, to drop a repeated message.
    last_row: u64,
    /// Where each epoch ended, for checkpoints and the group's offsets: `(epoch, next offset,
    /// last row)`, in order, until the epoch is durable.
    closes: VecDeque<(u64, i64, u64)>,
}

/// The produce timestamps (ms) of the rows of epochs not yet durable.
type PendingTimestamps = BTreeMap<u64, Vec<i64>>;

/// A message of the original producer's format, waiting to be numbered.
struct ArrivedRow {
    timestamp: i64,
    partition: i32,
    offset: i64,
    record: Result<Vec<u8>, (Vec<u8>, Rejection)>,
}

/// What one fetch took: rows by epoch and partition, or json-array messages to number.
#[derive(Default)]
struct Taken {
    chunks: BTreeMap<(u64, i32), RawChunk>,
    arrived: Vec<ArrivedRow>,
}

/// A partition split off the consumer's queue, and the handle its messages are read through.
struct PartitionReader {
    /// Keeps the partition off the consumer's queue and the worker's wake-up callback set.
    _queue: PartitionQueue<DefaultConsumerContext>,
    reader: BatchReader,
}

/// One worker's share of the inflow topic.
pub struct KafkaSource {
    consumer: Arc<BaseConsumer>,
    /// Each partition's own queue (rows with row numbers): read in the order that closes epochs
    /// soonest. Empty for json-array, whose partitions share the consumer's queue.
    queues: BTreeMap<i32, PartitionReader>,
    options: StreamOptions,
    partitions: BTreeMap<i32, PartitionState>,
    /// Chunks read but not yet handed out.
    ready: VecDeque<RawChunk>,
    rows_read: u64,
    /// `json-array` only: the next source position and the epoch of the next batch.
    next_row: u64,
    batch_epoch: u64,
    timestamps: PendingTimestamps,
    /// When the first message arrived (ms since the Unix epoch): rows produced before then were
    /// a backlog when the stream connected, and their delay is not the stream's.
    live_since_ms: Option<i64>,
}

impl KafkaSource {
    /// Opens worker `index`'s share of `partitions` partitions; `None` when it has none.
    /// Messages without row numbers (`json-array`) are all read by worker 0, which numbers them.
    /// Partitions in `from` (a checkpoint's position) resume there; the others start at their
    /// beginning.
    pub fn open(
        options: &StreamOptions,
        partitions: i32,
        from: &Position,
        index: usize,
        workers: usize,
    ) -> Result<Option<KafkaSource>, KafkaError> {
        let mine: Vec<i32> = match options.format {
            MessageFormat::Riskflow => (0..partitions)
                .filter(|p| *p as usize % workers == index)
                .collect(),
            MessageFormat::JsonArray if index == 0 => (0..partitions).collect(),
            MessageFormat::JsonArray => Vec::new(),
        };
        if mine.is_empty() {
            return Ok(None);
        }
        let mut consumer: BaseConsumer = base_config(&options.brokers)
            .set("group.id", &options.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "20")
            // librdkafka pauses a partition's fetching for this long once its local queue is
            // full (default 1 s): with a reader that drains the queue at once, that pause was
            // most of a pre-filled topic's streaming time.
            .set("fetch.queue.backoff.ms", "5")
            .set("max.partition.fetch.bytes", "4194304")
            // Each partition has a queue of its own (see `fetch_partitions`), and these bound
            // each one (librdkafka's defaults, 64 MB and 100,000 messages, held about 120 MB
            // more at the same speed).
            .set("queued.max.messages.kbytes", "8192")
            .set("queued.min.messages", "20000")
            .create()
            .map_err(KafkaError::client("creating a consumer", &options.brokers))?;
        let worker = std::thread::current();
        let wake = move || worker.unpark();
        consumer.set_nonempty_callback(wake.clone());
        let consumer = Arc::new(consumer);
        let mut assignment = TopicPartitionList::new();
        for &p in &mine {
            let offset = from
                .get(&p)
                .map_or(Offset::Beginning, |at| Offset::Offset(at.offset));
            assignment
                .add_partition_offset(&options.topic, p, offset)
                .map_err(KafkaError::client("assigning partitions", &options.brokers))?;
        }
        let resumed = |p: &i32| from.get(p).copied().unwrap_or_default();
        // With the partitions' leader known before `assign`, librdkafka looks their start
        // offsets up at once; otherwise it retries that lookup on a timer, which left every
        // new consumer idle for about 0.45 s after it had connected.
        consumer
            .fetch_metadata(Some(&options.topic), REQUEST_TIMEOUT)
            .map_err(KafkaError::client(
                format!("reading the metadata of {}", options.topic),
                &options.brokers,
            ))?;
        consumer
            .assign(&assignment)
            .map_err(KafkaError::client("assigning partitions", &options.brokers))?;
        // Split after `assign` (which undoes splits) and before the first poll (messages
        // already queued stay on the consumer's queue).
        let mut queues = BTreeMap::new();
        if options.format == MessageFormat::Riskflow {
            for &p in &mine {
                let mut queue = consumer
                    .split_partition_queue(&options.topic, p)
                    .ok_or_else(|| {
                        KafkaError::Other(format!(
                            "no queue for partition {p} of {}",
                            options.topic
                        ))
                    })?;
                queue.set_nonempty_callback(wake.clone());
                let reader = BatchReader::open(&consumer, &options.topic, p).ok_or_else(|| {
                    KafkaError::Other(format!("no queue for partition {p} of {}", options.topic))
                })?;
                queues.insert(
                    p,
                    PartitionReader {
                        _queue: queue,
                        reader,
                    },
                );
            }
        }
        tracing::info!(topic = options.topic.as_str(), partitions = ?mine, worker = index, "Reading partitions.");
        Ok(Some(KafkaSource {
            consumer,
            queues,
            options: options.clone(),
            partitions: mine
                .iter()
                .map(|p| {
                    let at = resumed(p);
                    let state = PartitionState {
                        epoch: at.epoch,
                        last_row: at.row,
                        ..PartitionState::default()
                    };
                    (*p, state)
                })
                .collect(),
            ready: VecDeque::new(),
            rows_read: 0,
            next_row: mine
                .iter()
                .map(|p| resumed(p).row)
                .max()
                .unwrap_or(0)
                .max(1),
            batch_epoch: mine.iter().map(|p| resumed(p).epoch).max().unwrap_or(0),
            timestamps: BTreeMap::new(),
            live_since_ms: None,
        }))
    }

    /// Takes what librdkafka has (up to the budget) into `ready`.
    fn fetch(&mut self) -> Result<(), SourceError> {
        let mut taken = Taken::default();
        // The consumer's own queue: errors and events, and every message of a json-array
        // stream (its partitions share the queue, to be merged by time).
        let consumer = Arc::clone(&self.consumer);
        for _ in 0..POLL_BUDGET {
            match consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(message)) => self.take(&Fields::of(&message), &mut taken)?,
                Some(Err(error)) => return Err(self.options.error(format!("reading: {error}"))),
            }
        }
        if !self.queues.is_empty() {
            let mut queues = std::mem::take(&mut self.queues);
            let read = self.fetch_partitions(&mut queues, &mut taken);
            self.queues = queues;
            read?;
        }
        self.ready.extend(taken.chunks.into_values());
        if !taken.arrived.is_empty() {
            self.number_arrivals(taken.arrived);
        }
        Ok(())
    }

    /// Reads the partitions' own queues, those holding the frontier back first, and none more
    /// than [`READ_AHEAD_EPOCHS`] past it: an epoch closes only when its slowest partition
    /// passes it, and a leading partition left unread fills its queue, so that librdkafka stops
    /// fetching it and fetches the lagging ones instead.
    fn fetch_partitions(
        &mut self,
        queues: &mut BTreeMap<i32, PartitionReader>,
        taken: &mut Taken,
    ) -> Result<(), SourceError> {
        let mut budget = POLL_BUDGET;
        loop {
            let frontier = self.partition_frontier();
            let limit = frontier.saturating_add(READ_AHEAD_EPOCHS);
            let mut order: Vec<(u64, i32)> = self
                .partitions
                .iter()
                .map(|(&p, state)| (state.epoch, p))
                .collect();
            order.sort_unstable();
            for (_, p) in order {
                let Some(queue) = queues.get_mut(&p) else {
                    continue;
                };
                while budget > 0 && self.partitions.get(&p).is_some_and(|s| s.epoch <= limit) {
                    let read = queue.reader.read(budget, |message| match message {
                        Ok(message) => self.take(&Fields::of_raw(&message), taken),
                        Err(error) => Err(self.options.error(format!("reading: {error}"))),
                    })?;
                    if read == 0 {
                        break;
                    }
                    budget -= read;
                }
            }
            // Once the frontier moved, partitions held back may be read on at once.
            if budget == 0 || self.partition_frontier() == frontier {
                return Ok(());
            }
        }
    }

    /// The least epoch of the partitions that still hold the input back (`u64::MAX` when none
    /// does).
    fn partition_frontier(&self) -> u64 {
        self.partitions
            .values()
            .filter(|p| !(p.complete && self.options.until_complete))
            .map(|p| p.epoch)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Takes one message: a marker moves its partition's epoch on; a row joins the chunk of its
    /// epoch and partition (or, json-array, waits to be numbered).
    fn take(&mut self, message: &Fields<'_>, taken: &mut Taken) -> Result<(), SourceError> {
        self.live_since_ms
            .get_or_insert_with(|| crate::time::now_nanos() / 1_000_000);
        let Some(state) = self.partitions.get_mut(&message.partition) else {
            return Ok(());
        };
        if message.marker {
            let marker: Marker = serde_json::from_slice(message.payload).map_err(|e| {
                self.options.error(format!(
                    "the marker at partition {} offset {} is not valid: {e}",
                    message.partition, message.offset
                ))
            })?;
            tracing::debug!(
                partition = message.partition,
                offset = message.offset,
                epoch = marker.epoch,
                complete = marker.complete,
                "Marker."
            );
            state.complete |= marker.complete;
            if self.options.format == MessageFormat::Riskflow {
                state.epoch = state.epoch.max(marker.epoch + 1);
                // A stream that stops after committing the final marker's epoch but before
                // exiting resumes *at* that marker, so that a restart with --until-complete
                // sees it again (it carries no rows) rather than wait for one forever.
                let resume_at = if marker.complete {
                    message.offset
                } else {
                    message.offset + 1
                };
                state
                    .closes
                    .push_back((marker.epoch, resume_at, state.last_row));
            }
            return Ok(());
        }
        self.rows_read += 1;
        match self.options.format {
            MessageFormat::Riskflow => {
                let Some(row) = message.row else {
                    return Err(self.options.error(format!(
                        "the message at partition {} offset {} has no row number (its key): \
                         if the topic holds the original producer's JSON arrays, stream it with --format json-array",
                        message.partition, message.offset
                    )));
                };
                if row <= state.last_row {
                    tracing::warn!(
                        row,
                        partition = message.partition,
                        "Skipping a repeated row."
                    );
                    return Ok(());
                }
                state.last_row = row;
                self.timestamps
                    .entry(state.epoch)
                    .or_default()
                    .push(message.timestamp);
                let chunk = taken
                    .chunks
                    .entry((state.epoch, message.partition))
                    .or_insert_with(|| RawChunk {
                        epoch: state.epoch,
                        ..RawChunk::default()
                    });
                match message.oversized {
                    Some(full_length) => chunk.push_rejected_at(
                        row,
                        message.payload,
                        Rejection::Oversized { full_length },
                    ),
                    None => chunk.push_at(row, message.payload),
                }
            }
            MessageFormat::JsonArray => taken.arrived.push(ArrivedRow {
                timestamp: message.timestamp,
                partition: message.partition,
                offset: message.offset,
                record: json_array_to_csv(message.payload),
            }),
        }
        Ok(())
    }

    /// `json-array`: numbers one poll's messages in offset-time order, as one epoch.
    fn number_arrivals(&mut self, mut arrived: Vec<ArrivedRow>) {
        arrived.sort_unstable_by_key(|a| (a.timestamp, a.partition, a.offset));
        let epoch = self.batch_epoch;
        let mut chunk = RawChunk {
            epoch,
            ..RawChunk::default()
        };
        let timestamps = self.timestamps.entry(epoch).or_default();
        for message in arrived {
            timestamps.push(message.timestamp);
            let row = self.next_row;
            self.next_row += 1;
            match &message.record {
                Ok(record) => chunk.push_at(row, record),
                Err((raw, why)) => chunk.push_rejected_at(row, raw, why.clone()),
            }
            let state = self
                .partitions
                .get_mut(&message.partition)
                .expect("an assigned partition");
            match state.closes.back_mut() {
                Some((e, offset, _)) if *e == epoch => *offset = (*offset).max(message.offset + 1),
                _ => state.closes.push_back((epoch, message.offset + 1, 0)),
            }
        }
        self.ready.push_back(chunk);
        self.batch_epoch += 1;
    }

    fn finished(&self) -> bool {
        self.options.until_complete && self.partitions.values().all(|p| p.complete)
    }

    /// The partition's end (high watermark) as librdkafka last saw it in a fetch response,
    /// without asking the broker; `None` before the first fetch.
    fn cached_end(&self, partition: i32) -> Option<i64> {
        let topic = std::ffi::CString::new(self.options.topic.as_str()).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client pointer is valid while `self.consumer` lives; the topic is a
        // NUL-terminated string that outlives the call; librdkafka only writes the two i64s.
        let error = unsafe {
            rdkafka::bindings::rd_kafka_get_watermark_offsets(
                self.consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
                &mut low,
                &mut high,
            )
        };
        (error == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
            .then_some(high)
    }

    /// Offsets of the epochs below `frontier`, taken off the partitions' lists.
    fn durable_offsets(&mut self, frontier: u64) -> TopicPartitionList {
        let mut offsets = TopicPartitionList::new();
        for (&p, state) in &mut self.partitions {
            let mut last = None;
            while state.closes.front().is_some_and(|(e, _, _)| *e < frontier) {
                last = state.closes.pop_front().map(|(_, o, _)| o);
            }
            if let Some(mut offset) = last {
                // The group's offset passes the final marker (the checkpoint resumes at it).
                if state.complete && state.closes.is_empty() {
                    offset += 1;
                }
                let _ =
                    offsets.add_partition_offset(&self.options.topic, p, Offset::Offset(offset));
            }
        }
        offsets
    }
}

impl Source for KafkaSource {
    fn poll(&mut self) -> Result<Poll, SourceError> {
        if self.ready.is_empty() {
            self.fetch()?;
        }
        match self.ready.pop_front() {
            Some(chunk) => Ok(Poll::Ready(chunk)),
            None if self.finished() => Ok(Poll::Finished),
            None => Ok(Poll::Pending),
        }
    }

    fn frontier(&self) -> u64 {
        let open = match self.options.format {
            MessageFormat::Riskflow => self.partition_frontier(),
            MessageFormat::JsonArray if self.finished() => u64::MAX,
            MessageFormat::JsonArray => self.batch_epoch,
        };
        self.ready.iter().map(|c| c.epoch).fold(open, u64::min)
    }

    /// Each partition resumes after the last epoch it closed below the frontier.
    fn position(&self) -> Option<Position> {
        let frontier = self.frontier();
        // json-array: the rows of chunks not yet handed out are numbered again on resume.
        let next_row = self.ready.front().map_or(self.next_row, |c| c.first_row);
        let position = self
            .partitions
            .iter()
            .filter_map(|(&p, state)| {
                let &(epoch, offset, last_row) =
                    state.closes.iter().rev().find(|(e, _, _)| *e < frontier)?;
                let at = match self.options.format {
                    MessageFormat::Riskflow => PartPosition {
                        epoch: epoch + 1,
                        offset,
                        row: last_row,
                    },
                    MessageFormat::JsonArray => PartPosition {
                        epoch: frontier.min(self.batch_epoch),
                        offset,
                        row: next_row,
                    },
                };
                Some((p, at))
            })
            .collect();
        Some(position)
    }

    fn durable(&mut self, frontier: u64) -> Result<(), SourceError> {
        let now_ms = crate::time::now_nanos() / 1_000_000;
        while let Some(entry) = self.timestamps.first_entry() {
            if *entry.key() >= frontier {
                break;
            }
            for produced in entry.remove() {
                if self.live_since_ms.is_some_and(|live| produced >= live) {
                    self.options.delays.record(now_ms - produced);
                }
            }
        }
        let offsets = self.durable_offsets(frontier);
        for element in offsets.elements() {
            if let Offset::Offset(offset) = element.offset() {
                let lag = self
                    .cached_end(element.partition())
                    .map(|high| (high - offset).max(0));
                crate::metrics::global().partition(
                    &self.options.topic,
                    element.partition(),
                    offset,
                    lag,
                );
            }
        }
        if offsets.count() > 0 {
            self.consumer
                .commit(&offsets, CommitMode::Async)
                .map_err(|e| self.options.error(format!("committing offsets: {e}")))?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), SourceError> {
        // The last durable() queued its commits; wait for them to land.
        self.consumer
            .commit_consumer_state(CommitMode::Sync)
            .or_else(|e| match e {
                rdkafka::error::KafkaError::ConsumerCommit(
                    rdkafka::types::RDKafkaErrorCode::NoOffset,
                ) => Ok(()),
                e => Err(e),
            })
            .map_err(|e| self.options.error(format!("committing offsets: {e}")))
    }

    fn idle_wait(&self) -> Duration {
        IDLE_WAIT
    }

    fn progress(&self) -> (u64, Option<u64>) {
        (self.rows_read, None)
    }
}

/// What the source needs of a message.
struct Fields<'a> {
    partition: i32,
    offset: i64,
    timestamp: i64,
    payload: &'a [u8],
    marker: bool,
    row: Option<u64>,
    oversized: Option<u64>,
}

impl<'a> Fields<'a> {
    /// A message of the consumer's own queue.
    fn of(message: &'a BorrowedMessage<'a>) -> Fields<'a> {
        let mut fields = Fields::new(
            message.partition(),
            message.offset(),
            message.timestamp().to_millis(),
            message.payload().unwrap_or_default(),
            message.key(),
        );
        if let Some(headers) = message.headers() {
            for header in headers.iter() {
                fields.header(header.key, header.value);
            }
        }
        fields
    }

    /// A message of a partition's own queue.
    fn of_raw(message: &RawMessage<'a>) -> Fields<'a> {
        let mut fields = Fields::new(
            message.partition(),
            message.offset(),
            message.timestamp_ms(),
            message.payload(),
            message.key(),
        );
        // Looking at the headers costs librdkafka an allocation per message even when there are
        // none, so only messages that can carry ours are looked at: those without a key (a
        // marker, or a row in the older layout) and those the size of an oversized record's head.
        if fields.row.is_none() || fields.payload.len() == OVERSIZED_HEAD_BYTES {
            message.for_each_header(|name, value| fields.header(name, value));
        }
        fields
    }

    fn new(
        partition: i32,
        offset: i64,
        timestamp: Option<i64>,
        payload: &'a [u8],
        key: Option<&[u8]>,
    ) -> Fields<'a> {
        Fields {
            partition,
            offset,
            timestamp: timestamp.unwrap_or(0),
            payload,
            marker: false,
            row: decimal(key),
            oversized: None,
        }
    }

    fn header(&mut self, name: &str, value: Option<&[u8]>) {
        match name {
            MARKER_HEADER => self.marker = true,
            // Where riskflow put the row number before it moved to the key.
            LEGACY_ROW_HEADER => self.row = self.row.or(decimal(value)),
            OVERSIZED_HEADER => self.oversized = decimal(value),
            _ => {}
        }
    }
}

/// A whole number written out in decimal.
fn decimal(value: Option<&[u8]>) -> Option<u64> {
    value
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Re-encodes the original producer's JSON array as a CSV record (strings as they are, numbers
/// in their JSON spelling, null as empty); anything else is rejected with the reason.
fn json_array_to_csv(payload: &[u8]) -> Result<Vec<u8>, (Vec<u8>, Rejection)> {
    let reject = |detail: String| (payload.to_vec(), Rejection::BadMessage { detail });
    let values: Vec<serde_json::Value> = serde_json::from_slice(payload)
        .map_err(|e| reject(format!("not a JSON array of fields: {e}")))?;
    let mut record = Vec::with_capacity(payload.len());
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            record.push(b',');
        }
        match value {
            serde_json::Value::Null => {}
            serde_json::Value::String(s) => push_csv_field(&mut record, s.as_bytes()),
            serde_json::Value::Number(n) => record.extend_from_slice(n.to_string().as_bytes()),
            serde_json::Value::Bool(b) => {
                record.extend_from_slice(if *b { b"true" } else { b"false" })
            }
            other => return Err(reject(format!("field {} is not a scalar: {other}", i + 1))),
        }
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_quantiles_are_nearest_rank() {
        let delays = DelayHistogram::default();
        assert_eq!(delays.quantile(0.5), None);
        for ms in 1..=100 {
            delays.record(ms);
        }
        delays.record(-5); // clocks a little apart: counted as 0
        delays.record(10_000_000); // counted in the last bucket
        assert_eq!(delays.count(), 102);
        assert_eq!(delays.quantile(0.5), Some(50));
        assert_eq!(delays.quantile(0.99), Some(100));
        assert_eq!(delays.quantile(0.0), Some(0));
        assert_eq!(delays.quantile(1.0), Some(60_000));
    }

    #[test]
    fn json_arrays_become_csv_records() {
        let record = json_array_to_csv(
            br#"[1000.0,"2007-05-26","Wedding, \"Covered\"",693.0,"10%","481xx","NM","4 years",null]"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(record).unwrap(),
            r#"1000.0,2007-05-26,"Wedding, ""Covered""",693.0,10%,481xx,NM,4 years,"#
        );
        let (raw, why) = json_array_to_csv(b"{not json").unwrap_err();
        assert!(matches!(
            json_array_to_csv(br#"[1, [2]]"#),
            Err((_, Rejection::BadMessage { .. }))
        ));
        assert_eq!(raw, b"{not json");
        assert!(matches!(why, Rejection::BadMessage { .. }));
    }
}
