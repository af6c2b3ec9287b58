//! One integration-test binary: every test runs the real `riskflow` binary over generated files
//! and checks the store against oracles that are not our code (SQLite's window functions, a plain
//! sequential loop) or against other runs of itself (worker counts, reruns). The Kafka, PostgreSQL
//! and AWS tests use the services `scripts/test.sh` starts (tansu, PostgreSQL 15, moto).

mod common;

mod accounting;
mod aws;
mod backfill;
mod cluster;
mod determinism;
mod hostile;
mod kafka;
mod operate;
mod oracle;
mod postgres;
mod reader;
mod versions;
