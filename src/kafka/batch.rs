//! Reading a partition's queue many messages per call.
//!
//! rdkafka's `PartitionQueue::poll` hands over one message per call through librdkafka's event
//! API, with an event, an `Arc`, clock readings and a poll-interval check for every message.
//! Reading the 2,000,000 messages of a pre-filled 4-partition topic on one thread cost
//! 1.45–1.75 µs of CPU per message that way, and 0.69–0.75 µs through
//! `rd_kafka_consume_batch_queue`, which moves every message already queued, up to a buffer's
//! worth, in one call. In a stream into SQLite that difference is CPU the store writer, the
//! stream's bound, waits for.
//!
//! The partition's `PartitionQueue` stays open beside the handle here: it stops the partition's
//! messages going to the consumer's own queue and carries the callback that wakes the worker.

use super::KafkaError;
use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::NonNull;
use std::sync::Arc;

/// Messages moved per call.
const BATCH: usize = 512;

/// A handle on one partition's fetch queue, read in batches.
pub struct BatchReader {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    messages: Vec<*mut rdsys::rd_kafka_message_t>,
    /// Keeps the client alive for as long as the queue handle.
    _consumer: Arc<BaseConsumer>,
}

// SAFETY: librdkafka's queue handles may be used from any thread; the reader is used by one
// worker at a time, and the message pointers it buffers are only live within `read`.
unsafe impl Send for BatchReader {}

impl BatchReader {
    /// A handle on the queue of `partition` (a partition of the consumer's assignment).
    pub fn open(consumer: &Arc<BaseConsumer>, topic: &str, partition: i32) -> Option<BatchReader> {
        let topic = CString::new(topic).ok()?;
        // SAFETY: the client pointer is valid while `consumer` lives (this reader keeps it);
        // the topic is NUL-terminated and outlives the call, which takes its own reference.
        let queue = unsafe {
            rdsys::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
            )
        };
        Some(BatchReader {
            queue: NonNull::new(queue)?,
            messages: vec![std::ptr::null_mut(); BATCH],
            _consumer: Arc::clone(consumer),
        })
    }

    /// Hands `take` the messages already queued, in order, at most `max` of them (and at most
    /// a batch); returns how many were read. A message that carries an error (the broker's or
    /// librdkafka's) is handed over as that error. `take`'s first error ends the read.
    pub fn read<E>(
        &mut self,
        max: usize,
        mut take: impl FnMut(Result<RawMessage<'_>, KafkaError>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let wanted = max.min(self.messages.len());
        if wanted == 0 {
            return Ok(0);
        }
        // SAFETY: the queue handle is valid until drop; librdkafka writes at most `wanted`
        // message pointers into the buffer, which holds `BATCH` ≥ `wanted`.
        let got = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                0,
                self.messages.as_mut_ptr(),
                wanted,
            )
        };
        let got = usize::try_from(got).unwrap_or(0);
        let mut outcome = Ok(got);
        for &message in &self.messages[..got] {
            if outcome.is_ok() {
                // SAFETY: librdkafka returned a valid message, destroyed only below.
                let message = unsafe { &*message };
                let handed =
                    if message.err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                        Ok(RawMessage { message })
                    } else {
                        Err(message_error(message))
                    };
                if let Err(error) = take(handed) {
                    outcome = Err(error);
                }
            }
            // SAFETY: each message returned is destroyed exactly once, after its last use.
            unsafe { rdsys::rd_kafka_message_destroy(message) };
        }
        outcome
    }
}

impl Drop for BatchReader {
    fn drop(&mut self) {
        // SAFETY: the handle came from `rd_kafka_queue_get_partition` and is released once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}

/// A message borrowed from librdkafka for the length of one `take`.
pub struct RawMessage<'a> {
    message: &'a rdsys::rd_kafka_message_t,
}

impl<'a> RawMessage<'a> {
    pub fn partition(&self) -> i32 {
        self.message.partition
    }

    pub fn offset(&self) -> i64 {
        self.message.offset
    }

    /// When the message was produced (ms since the Unix epoch), if the broker says.
    pub fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is valid for 'a; librdkafka only writes the type.
        let ms = unsafe { rdsys::rd_kafka_message_timestamp(self.message, &mut kind) };
        (kind != rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE).then_some(ms)
    }

    pub fn payload(&self) -> &'a [u8] {
        // SAFETY: librdkafka owns `len` bytes at `payload` until the message is destroyed.
        unsafe { bytes(self.message.payload, self.message.len) }
    }

    pub fn key(&self) -> Option<&'a [u8]> {
        // SAFETY: as for the payload.
        (!self.message.key.is_null())
            .then(|| unsafe { bytes(self.message.key, self.message.key_len) })
    }

    /// Calls `each` with every header's name and value, in order.
    pub fn for_each_header(&self, mut each: impl FnMut(&str, Option<&[u8]>)) {
        let mut headers = std::ptr::null_mut();
        // SAFETY: the message is valid for 'a; librdkafka parses its headers into a list it
        // owns with the message (`headers` is not freed here).
        let found = unsafe {
            rdsys::rd_kafka_message_headers(
                (self.message as *const rdsys::rd_kafka_message_t).cast_mut(),
                &mut headers,
            )
        };
        if found != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
            return;
        }
        for index in 0.. {
            let (mut name, mut value, mut size): (*const c_char, *const c_void, usize) =
                (std::ptr::null(), std::ptr::null(), 0);
            // SAFETY: `headers` is the message's list; librdkafka writes the three out-values.
            let present = unsafe {
                rdsys::rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut size)
            };
            if present != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                break;
            }
            // SAFETY: a header's name is a NUL-terminated string and its value `size` bytes
            // (or NULL), both owned by the list.
            let name = unsafe { CStr::from_ptr(name) }.to_str().unwrap_or_default();
            let value = (!value.is_null()).then(|| unsafe { bytes(value.cast_mut(), size) });
            each(name, value);
        }
    }
}

/// `len` bytes at `data` (none when it is NULL).
///
/// SAFETY: `data` is NULL or points to `len` bytes valid for `'a`.
unsafe fn bytes<'a>(data: *mut c_void, len: usize) -> &'a [u8] {
    if data.is_null() || len == 0 {
        &[]
    } else {
        std::slice::from_raw_parts(data.cast::<u8>(), len)
    }
}

/// The error a message carries, with librdkafka's words for it.
fn message_error(message: &rdsys::rd_kafka_message_t) -> KafkaError {
    // SAFETY: librdkafka returns static NUL-terminated strings.
    let text = unsafe { CStr::from_ptr(rdsys::rd_kafka_err2str(message.err)) };
    KafkaError::Other(format!(
        "reading partition {} at offset {}: {}",
        message.partition,
        message.offset,
        text.to_string_lossy()
    ))
}
