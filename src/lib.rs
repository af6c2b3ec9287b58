//! riskflow: versioned rolling features (SMA, EMA) over the LendingClub rejected-loans stream,
//! computed by one timely/differential dataflow graph and stored — exactly once, with a
//! checkpoint per epoch — in an embedded SQLite file, PostgreSQL or Redshift, or a CSV export.
//!
//! Start at [`dataflow`] for the graph; [`job`] for what `riskflow run` does around it.

pub mod aws;
pub mod catalog;
pub mod checkpoint;
pub mod cli;
pub mod dataflow;
pub mod features;
pub mod gen;
pub mod job;
pub mod kafka;
pub mod metrics;
pub mod parse;
pub mod plan;
pub mod plot;
pub mod profile;
pub mod record;
pub mod sink;
pub mod source;
pub mod status;
pub mod swar;
pub mod time;
