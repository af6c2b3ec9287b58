//! One integration-test binary: every test runs the real `riskflow` binary over generated files
//! and checks the store against oracles that are not our code (SQLite's window functions, a plain
//! sequential loop) or against other runs of itself (worker counts, reruns). The Kafka tests use
//! the broker `scripts/test.sh` starts.

mod common;

mod accounting;
mod determinism;
mod hostile;
mod kafka;
mod operate;
mod oracle;
mod postgres;
mod reader;
mod versions;
