//! The optional outflow topic: every stored row, after its epoch is committed to the store, is
//! published in Kafka Connect's JSON envelope (`{"schema": …, "payload": …}`), with the schema
//! of the row's version, so a Kafka Connect JDBC sink can keep a table of its own — the way the
//! original design fed Redshift.
//!
//! Delivery is at least once: an epoch is published after the store commits it, and the
//! messages are flushed before the next epoch is taken.

use super::{base_config, ensure_topic, Deliveries, KafkaError};
use crate::plan::FeaturePlan;
use crate::record::TextField;
use crate::sink::{EpochBatch, Sink, SinkError};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{json, Map, Value};
use std::time::Duration;

/// How long an epoch's messages may take to be acknowledged.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// A sink that writes to `inner` and then publishes the same rows to a topic.
pub struct OutflowSink {
    inner: Box<dyn Sink>,
    producer: BaseProducer<Deliveries>,
    topic: String,
    brokers: String,
    table: String,
    /// Per version: the Connect schema, and its feature names in the version's order.
    versions: Vec<(Value, Vec<String>)>,
}

impl OutflowSink {
    /// Wraps `inner`; creates the topic when missing.
    pub fn new(
        inner: Box<dyn Sink>,
        brokers: &str,
        topic: &str,
        table: &str,
    ) -> Result<OutflowSink, KafkaError> {
        ensure_topic(brokers, topic, 1)?;
        let producer = base_config(brokers)
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .create_with_context(Deliveries::default())
            .map_err(KafkaError::client("creating the outflow producer", brokers))?;
        Ok(OutflowSink {
            inner,
            producer,
            topic: topic.to_owned(),
            brokers: brokers.to_owned(),
            table: table.to_owned(),
            versions: Vec::new(),
        })
    }

    fn error(&self, what: String) -> SinkError {
        SinkError::Outflow(format!(
            "{what} (topic {}, brokers {})",
            self.topic, self.brokers
        ))
    }
}

/// The Connect schema of a version's rows.
fn connect_schema(table: &str, version: u32, features: &[String]) -> Value {
    let field = |name: &str, kind: &str, optional: bool| json!({"field": name, "type": kind, "optional": optional});
    let mut fields = vec![
        field("amount_requested", "double", true),
        field("application_date", "string", false),
        field("loan_title", "string", false),
        field("risk_score", "double", true),
        field("debt_to_income_ratio", "string", false),
        field("zip_code", "string", false),
        field("state", "string", false),
        field("employment_length", "string", false),
        field("policy_code", "string", false),
    ];
    fields.extend(features.iter().map(|name| field(name, "double", true)));
    fields.extend([
        field("_row", "int64", false),
        field("_version", "int32", false),
        field("_modified_ts", "int64", false),
    ]);
    json!({
        "type": "struct",
        "name": format!("{table}_v{version}"),
        "optional": false,
        "fields": fields,
    })
}

impl OutflowSink {
    /// The Connect schema and feature names of each version of `plan`.
    fn learn(&mut self, plan: &FeaturePlan) {
        self.versions = plan
            .versions
            .iter()
            .map(|v| {
                let names: Vec<String> = v.features.keys().cloned().collect();
                (connect_schema(&self.table, v.id, &names), names)
            })
            .collect();
    }
}

impl Sink for OutflowSink {
    fn prepare(&mut self, plan: &FeaturePlan) -> Result<(), SinkError> {
        self.inner.prepare(plan)?;
        self.learn(plan);
        Ok(())
    }

    fn evolve(&mut self, plan: &FeaturePlan) -> Result<(), SinkError> {
        self.inner.evolve(plan)?;
        self.learn(plan);
        Ok(())
    }

    fn write_epoch(&mut self, batch: &EpochBatch) -> Result<(), SinkError> {
        self.inner.write_epoch(batch)?;
        let modified = crate::time::now_nanos();
        let mut date = [0u8; 10];
        for (row, version, values) in batch.rows() {
            let (schema, names) = &self.versions[version as usize];
            let mut payload = Map::new();
            payload.insert("amount_requested".into(), json!(row.amount_requested));
            payload.insert(
                "application_date".into(),
                json!(row.application_date.write_iso(&mut date)),
            );
            payload.insert("loan_title".into(), json!(row.text(TextField::LoanTitle)));
            payload.insert("risk_score".into(), json!(row.risk_score));
            for (name, field) in [
                ("debt_to_income_ratio", TextField::DebtToIncomeRatio),
                ("zip_code", TextField::ZipCode),
                ("state", TextField::State),
                ("employment_length", TextField::EmploymentLength),
                ("policy_code", TextField::PolicyCode),
            ] {
                payload.insert(name.into(), json!(row.text(field)));
            }
            for (name, value) in names.iter().zip(values) {
                payload.insert(name.clone(), json!(value));
            }
            payload.insert("_row".into(), json!(row.row));
            payload.insert("_version".into(), json!(version));
            payload.insert("_modified_ts".into(), json!(modified));
            let message = serde_json::to_vec(&json!({"schema": schema, "payload": payload}))
                .expect("JSON values serialize");
            let key = row.row.to_string();
            let mut record = BaseRecord::to(&self.topic).key(&key).payload(&message);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        self.producer.poll(Duration::from_millis(5));
                    }
                    Err((error, _)) => return Err(self.error(format!("publishing: {error}"))),
                }
            }
        }
        self.producer
            .flush(FLUSH_TIMEOUT)
            .map_err(|e| self.error(format!("flushing epoch {}: {e}", batch.epoch)))?;
        self.producer
            .context()
            .check(&self.topic)
            .map_err(|e| self.error(e.to_string()))
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.inner.finish()
    }
}
