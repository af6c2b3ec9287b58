//! What the benchmarks share: generated input, the shipped feature plan, and the dataflow run
//! without a store that the scaling benchmarks time.

#[allow(dead_code)] // not every benchmark runs the dataflow
pub mod run;

use riskflow::gen::{write_records, GenOptions};
use riskflow::plan::{FeaturePlan, FeatureSetFile};
use std::path::Path;

/// A generated file's bytes (header first): `rows` records dated `first_year`–2018, with quirks
/// (malformed records, multi-line titles).
pub fn generated(rows: u64, first_year: u32, seed: u64) -> Vec<u8> {
    let options = GenOptions {
        rows,
        first_year,
        last_year: 2018,
        seed,
        quirks: true,
        crlf: false,
        bom: false,
    };
    let mut bytes = Vec::new();
    write_records(&options, &mut bytes).expect("writing to memory cannot fail");
    bytes
}

/// The versioned plan of `config/feature_sets/loan_features.toml` (Tasks 2–4).
#[allow(dead_code)] // not every benchmark uses it
pub fn loan_features_plan() -> FeaturePlan {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/feature_sets/loan_features.toml");
    let text = std::fs::read_to_string(&path).expect("the shipped feature set");
    let file = FeatureSetFile::parse(&path, &text).expect("the shipped feature set parses");
    FeaturePlan::new(&file.table, file.versions).expect("the shipped feature set is valid")
}
