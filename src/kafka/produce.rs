//! `riskflow produce`: replays chosen years of a file onto the inflow topic as a live stream.
//!
//! One pass over the file: each record of the chosen years (and each record whose year cannot be
//! read, so that the consumer dead-letters it) becomes one message, gathered in an [`Outbox`]
//! and handed to librdkafka's batching queue a source chunk at a time, never flushed one by one.
//! Every `marker_interval` or `marker_rows` rows a marker goes to every partition (see the module
//! docs of [`crate::kafka`]), after the outbox is handed over. librdkafka's idempotent producer
//! keeps each partition in the order we hand it messages, so a marker never overtakes the rows
//! it closes.

use super::outbox::{Outbox, QUEUE_KBYTES, QUEUE_MESSAGES};
use super::{
    base_config, ensure_topic, partition_sizes, Deliveries, KafkaError, Marker, MessageFormat,
    MARKER_HEADER, OVERSIZED_HEADER, OVERSIZED_HEAD_BYTES,
};
use crate::parse::{split_fields, RecordParser};
use crate::record::YearRange;
use crate::source::{Chunking, FileSource, Poll, Rejection, Source};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to replay, where, and how fast.
#[derive(Clone, Debug)]
pub struct ProduceOptions {
    pub input: PathBuf,
    pub years: YearRange,
    pub brokers: String,
    pub topic: String,
    /// Partitions of the topic when it is created (an existing topic keeps its own).
    pub partitions: i32,
    /// Rows per second; `None` sends as fast as the broker takes them.
    pub rate: Option<u64>,
    pub format: MessageFormat,
    /// Longest time between markers while rows flow.
    pub marker_interval: Duration,
    /// Most rows between markers (bounds the consumer's epochs).
    pub marker_rows: u64,
    /// Show a progress bar (else a line every few seconds).
    pub progress: bool,
}

/// What a replay did.
#[derive(Clone, Debug, Default)]
pub struct ProduceReport {
    /// Records sent (rows of the chosen years and unreadable records).
    pub sent: u64,
    /// Readable records of other years, not sent.
    pub skipped: u64,
    /// Epochs closed by markers (the last one completes the replay).
    pub epochs: u64,
    pub partitions: i32,
    pub elapsed: Duration,
}

/// How long to wait for outstanding messages at the end.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Replays `options.input` onto the topic.
pub fn produce(options: &ProduceOptions) -> Result<ProduceReport, anyhow::Error> {
    let started = Instant::now();
    let partitions = ensure_topic(&options.brokers, &options.topic, options.partitions)?;
    let held: i64 = partition_sizes(&options.brokers, &options.topic, partitions)?
        .iter()
        .sum();
    if held > 0 {
        anyhow::bail!(
            "topic {} already holds {held} messages: replay onto a new topic (or delete this one), \
             since a second replay would repeat rows and restart the epochs",
            options.topic
        );
    }
    let producer: BaseProducer<Deliveries> = base_config(&options.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", QUEUE_MESSAGES.to_string())
        .set("queue.buffering.max.kbytes", QUEUE_KBYTES.to_string())
        .set("message.timeout.ms", "120000")
        .create_with_context(Deliveries::default())
        .map_err(KafkaError::client(
            "creating the producer",
            &options.brokers,
        ))?;
    let mut source = FileSource::open(&options.input, Chunking::with_epoch_rows(u64::MAX), None)?;
    let mut replay = Replay {
        producer: &producer,
        outbox: Outbox::open(&producer, &options.topic, partitions)?,
        options,
        partitions,
        epoch: 0,
        sent: 0,
        since_marker: 0,
        last_marker: Instant::now(),
        next_row: 1,
        started: Instant::now(),
    };
    let bar = progress_bar(options.progress);
    let mut last_line = Instant::now();
    let mut parser = RecordParser::default();
    let mut skipped = 0u64;
    loop {
        let chunk = match source.poll()? {
            Poll::Ready(chunk) => chunk,
            Poll::Pending => {
                replay.tick()?;
                std::thread::park_timeout(Duration::from_millis(1));
                continue;
            }
            Poll::Finished => break,
        };
        for (row, raw, rejection) in chunk.records() {
            let date = match rejection {
                Some(_) => None,
                None => parser.application_date(raw),
            };
            if date.is_some_and(|d| !options.years.contains(d.year())) {
                skipped += 1;
                continue;
            }
            let oversized = match rejection {
                Some(Rejection::Oversized { full_length }) => Some(*full_length),
                _ => None,
            };
            replay.send_row(row, raw, oversized)?;
        }
        replay.outbox.flush()?;
        if let Some(bar) = &bar {
            bar.set_position(replay.sent);
        } else if last_line.elapsed() > Duration::from_secs(5) {
            last_line = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "produce: {} rows sent in {secs:.0} s ({:.0} rows/s)",
                replay.sent,
                replay.sent as f64 / secs
            );
        }
    }
    replay.marker(true)?;
    producer.flush(FLUSH_TIMEOUT).map_err(KafkaError::client(
        "flushing the producer",
        &options.brokers,
    ))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    producer.context().check(&options.topic)?;
    Ok(ProduceReport {
        sent: replay.sent,
        skipped,
        epochs: replay.epoch,
        partitions,
        elapsed: started.elapsed(),
    })
}

/// The state of one replay: where the rows and epochs are.
struct Replay<'a> {
    producer: &'a BaseProducer<Deliveries>,
    /// Rows not yet handed to librdkafka; handed over before anything is sent around it.
    outbox: Outbox<'a>,
    options: &'a ProduceOptions,
    partitions: i32,
    /// The epoch the next row belongs to.
    epoch: u64,
    sent: u64,
    since_marker: u64,
    last_marker: Instant,
    /// One past the last row sent.
    next_row: u64,
    started: Instant,
}

impl Replay<'_> {
    fn send_row(&mut self, row: u64, raw: &[u8], oversized: Option<u64>) -> Result<(), KafkaError> {
        self.pace()?;
        let partition = ((row - 1) % self.partitions as u64) as i32;
        let mut digits = itoa::Buffer::new();
        let row_key = digits.format(row).as_bytes();
        match (self.options.format, oversized) {
            // The row number is the key: unlike a header, it costs librdkafka no allocation of
            // its own (a header list was most of the per-message work).
            (MessageFormat::Riskflow, None) => self.outbox.push(partition, row_key, raw)?,
            (MessageFormat::Riskflow, Some(full_length)) => {
                // Rare, and with a header, which the outbox does not carry: sent on its own,
                // after the rows queued before it.
                self.outbox.flush()?;
                let mut length_digits = itoa::Buffer::new();
                let headers = OwnedHeaders::new().insert(Header {
                    key: OVERSIZED_HEADER,
                    value: Some(length_digits.format(full_length)),
                });
                let head = &raw[..raw.len().min(OVERSIZED_HEAD_BYTES)];
                let record = BaseRecord::to(&self.options.topic)
                    .partition(partition)
                    .key(row_key)
                    .payload(head)
                    .headers(headers);
                self.send(record)?;
            }
            (MessageFormat::JsonArray, _) => {
                // As the original producer: the fields as a JSON array, a random key.
                let json = match split_fields(raw) {
                    Some(fields) if oversized.is_none() => {
                        serde_json::to_vec(&fields).expect("strings serialize")
                    }
                    _ => raw[..raw.len().min(OVERSIZED_HEAD_BYTES)].to_vec(),
                };
                let key = format!("{:016x}", crate::gen::mix(row));
                self.outbox.push(partition, key.as_bytes(), &json)?;
            }
        }
        self.sent += 1;
        self.since_marker += 1;
        self.next_row = row + 1;
        if self.since_marker >= self.options.marker_rows {
            self.marker(false)?;
        } else if self.sent.is_multiple_of(1024) {
            self.tick()?;
        }
        Ok(())
    }

    /// Serves delivery reports and writes a marker when one is due by time.
    fn tick(&mut self) -> Result<(), KafkaError> {
        self.producer.poll(Duration::ZERO);
        if self.since_marker > 0 && self.last_marker.elapsed() >= self.options.marker_interval {
            self.marker(false)?;
        }
        Ok(())
    }

    /// Closes the current epoch on every partition (after the rows of the outbox).
    fn marker(&mut self, complete: bool) -> Result<(), KafkaError> {
        self.outbox.flush()?;
        let marker = Marker {
            epoch: self.epoch,
            next_row: self.next_row,
            rows: self.sent,
            complete,
        };
        let value = serde_json::to_vec(&marker).expect("a marker serializes");
        for partition in 0..self.partitions {
            let headers = OwnedHeaders::new().insert(Header {
                key: MARKER_HEADER,
                value: Some(b"1"),
            });
            let record = BaseRecord::<(), [u8]>::to(&self.options.topic)
                .partition(partition)
                .payload(&value[..])
                .headers(headers);
            self.send(record)?;
        }
        self.epoch += 1;
        self.since_marker = 0;
        self.last_marker = Instant::now();
        Ok(())
    }

    /// Hands one record to librdkafka, waiting while its queue is full.
    fn send<K: rdkafka::message::ToBytes + ?Sized>(
        &self,
        mut record: BaseRecord<'_, K, [u8]>,
    ) -> Result<(), KafkaError> {
        let bytes = record.payload.map_or(0, <[u8]>::len)
            + record.key.map_or(0, |key| key.to_bytes().len());
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.producer.context().handed(bytes);
                    return Ok(());
                }
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((error, _)) => {
                    return Err(KafkaError::client(
                        format!("sending to {}", self.options.topic),
                        &self.options.brokers,
                    )(error))
                }
            }
        }
    }

    /// Sleeps as needed to hold `--rate`, in slices short enough to keep markers on time.
    fn pace(&mut self) -> Result<(), KafkaError> {
        let Some(rate) = self.options.rate else {
            return Ok(());
        };
        let due = Duration::from_secs_f64(self.sent as f64 / rate.max(1) as f64);
        loop {
            let now = self.started.elapsed();
            if due <= now {
                return Ok(());
            }
            // The rows read so far leave now, not after the pause (the delay is measured from
            // the message's timestamp, set when librdkafka takes it).
            self.outbox.flush()?;
            self.tick()?;
            std::thread::sleep((due - now).min(self.options.marker_interval / 2));
        }
    }
}

fn progress_bar(show: bool) -> Option<indicatif::ProgressBar> {
    show.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {human_pos} rows sent ({per_sec})")
                .expect("valid template"),
        );
        bar
    })
}
