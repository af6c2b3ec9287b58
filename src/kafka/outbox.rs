//! The replay producer's outbox: rows gathered per partition and handed to librdkafka many per
//! call, with `rd_kafka_produce_batch`.
//!
//! rdkafka's `BaseProducer::send` costs, for every message, a C string of the topic name, a
//! lookup of the topic under a lock, librdkafka's variadic argument parsing and two clock
//! readings; `rd_kafka_produce_batch` does those once per call and copies the messages into the
//! partition's queue in the order given. The rows' timestamps are then the time of that call,
//! which is at most one outbox (a source chunk, or `MAX_MESSAGES` rows) after the row was read.
//!
//! librdkafka refuses a message when its queue is full, and a batch call goes on with the next
//! message after a refusal, which would reorder the partition. So the outbox first waits, serving
//! delivery reports, until the queue has room for everything it holds, counting messages as
//! librdkafka does and bytes as [`Deliveries`] does.

use super::{Deliveries, KafkaError};
use rdkafka::bindings as rdsys;
use rdkafka::producer::{BaseProducer, Producer};
use std::ffi::{c_int, c_void, CStr, CString};
use std::ops::Range;
use std::ptr::NonNull;
use std::time::Duration;

/// librdkafka's queue limits, as the producer is configured (`queue.buffering.max.messages`,
/// `queue.buffering.max.kbytes`).
pub const QUEUE_MESSAGES: usize = 1_000_000;
pub const QUEUE_KBYTES: usize = 1_048_576;

/// An outbox is handed over once it holds this many messages or bytes.
const MAX_MESSAGES: usize = 4096;
const MAX_BYTES: usize = 4 << 20;

/// Messages queued for the partitions of one topic, not yet handed to librdkafka.
pub struct Outbox<'p> {
    producer: &'p BaseProducer<Deliveries>,
    topic: NonNull<rdsys::rd_kafka_topic_t>,
    topic_name: String,
    /// Every queued key and payload, back to back.
    bytes: Vec<u8>,
    /// Per partition, the `(key, payload)` spans in `bytes` of its messages, in order.
    queued: Vec<Vec<(Range<usize>, Range<usize>)>>,
    count: usize,
    /// Scratch space for one partition's batch call.
    messages: Vec<rdsys::rd_kafka_message_t>,
}

impl<'p> Outbox<'p> {
    /// An empty outbox for `partitions` partitions of `topic`.
    pub fn open(
        producer: &'p BaseProducer<Deliveries>,
        topic: &str,
        partitions: i32,
    ) -> Result<Outbox<'p>, KafkaError> {
        let name = CString::new(topic)
            .map_err(|_| KafkaError::Other(format!("topic name {topic:?} holds a NUL byte")))?;
        // SAFETY: the client pointer is valid while `producer` lives, which outlives the outbox;
        // the name is NUL-terminated and copied by librdkafka. The handle is released in `drop`.
        let handle = unsafe {
            rdsys::rd_kafka_topic_new(
                producer.client().native_ptr(),
                name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        let topic_handle = NonNull::new(handle).ok_or_else(|| {
            KafkaError::Other(format!("librdkafka gave no handle for topic {topic}"))
        })?;
        Ok(Outbox {
            producer,
            topic: topic_handle,
            topic_name: topic.to_owned(),
            bytes: Vec::new(),
            queued: vec![Vec::new(); partitions.max(0) as usize],
            count: 0,
            messages: Vec::new(),
        })
    }

    /// Queues one message for `partition`; hands the outbox over when it is full.
    pub fn push(&mut self, partition: i32, key: &[u8], payload: &[u8]) -> Result<(), KafkaError> {
        let key_at = self.bytes.len()..self.bytes.len() + key.len();
        self.bytes.extend_from_slice(key);
        let payload_at = self.bytes.len()..self.bytes.len() + payload.len();
        self.bytes.extend_from_slice(payload);
        self.queued[partition as usize].push((key_at, payload_at));
        self.count += 1;
        if self.count >= MAX_MESSAGES || self.bytes.len() >= MAX_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands every queued message to librdkafka, each partition's in the order queued.
    pub fn flush(&mut self) -> Result<(), KafkaError> {
        if self.count == 0 {
            return Ok(());
        }
        self.wait_for_room();
        for (partition, queued) in self.queued.iter_mut().enumerate() {
            if queued.is_empty() {
                continue;
            }
            let base = self.bytes.as_ptr();
            self.messages.clear();
            self.messages.extend(queued.iter().map(|(key, payload)| {
                rdsys::rd_kafka_message_t {
                    err: rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                    rkt: std::ptr::null_mut(),
                    partition: partition as i32,
                    // SAFETY (of both `add`s): the spans lie within `bytes`.
                    payload: unsafe { base.add(payload.start) }
                        .cast_mut()
                        .cast::<c_void>(),
                    len: payload.len(),
                    key: unsafe { base.add(key.start) }.cast_mut().cast::<c_void>(),
                    key_len: key.len(),
                    offset: 0,
                    _private: std::ptr::null_mut(),
                }
            }));
            // SAFETY: the topic handle is live; the messages point into `bytes`, which is not
            // touched during the call, and librdkafka copies keys and (with F_COPY) payloads.
            let taken = unsafe {
                rdsys::rd_kafka_produce_batch(
                    self.topic.as_ptr(),
                    partition as i32,
                    rdsys::RD_KAFKA_MSG_F_COPY,
                    self.messages.as_mut_ptr(),
                    self.messages.len() as c_int,
                )
            };
            if taken as usize != self.messages.len() {
                return Err(self.refusal(partition));
            }
            queued.clear();
        }
        self.producer.context().handed(self.bytes.len());
        self.bytes.clear();
        self.count = 0;
        Ok(())
    }

    /// Serves delivery reports until librdkafka's queue can take the whole outbox.
    fn wait_for_room(&self) {
        loop {
            let messages = self.producer.in_flight_count().max(0) as usize + self.count;
            let bytes = self.producer.context().in_flight_bytes() + self.bytes.len();
            if messages <= QUEUE_MESSAGES && bytes <= QUEUE_KBYTES * 1024 {
                return;
            }
            self.producer.poll(Duration::from_millis(5));
        }
    }

    /// Why librdkafka refused part of `partition`'s batch (the replay cannot go on in order).
    fn refusal(&self, partition: usize) -> KafkaError {
        let first = self
            .messages
            .iter()
            .find(|m| m.err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
        let reason = first.map_or_else(
            || "no reason given".to_owned(),
            // SAFETY: librdkafka returns static NUL-terminated strings.
            |m| {
                unsafe { CStr::from_ptr(rdsys::rd_kafka_err2str(m.err)) }
                    .to_string_lossy()
                    .into_owned()
            },
        );
        KafkaError::Other(format!(
            "librdkafka refused messages for {}/{partition}: {reason}",
            self.topic_name
        ))
    }
}

impl Drop for Outbox<'_> {
    fn drop(&mut self) {
        // SAFETY: the handle came from `rd_kafka_topic_new` and is released once.
        unsafe { rdsys::rd_kafka_topic_destroy(self.topic.as_ptr()) };
    }
}
