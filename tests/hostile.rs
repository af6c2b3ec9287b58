//! Hostile input: property tests feed the whole engine (reader, parser, windows, store) arbitrary
//! bytes and arbitrary CSV-ish records. It must not panic or hang, and every record must be
//! accounted for: read = stored + filtered + dead-lettered, and for CSV-ish records, read = the
//! number of records written.

use proptest::prelude::*;
use riskflow::dataflow::EngineOptions;
use riskflow::job::{run_dataflow, LoadedDataflow, RunTarget};
use riskflow::record::HEADER;
use riskflow::sink::StoreUrl;
use riskflow::source::Chunking;
use std::path::Path;

/// Runs the features dataflow over `body` (after the header) with `workers`; returns
/// (read, stored, filtered, dead-lettered).
fn run_over(body: &[u8], workers: usize, epoch_rows: u64) -> (u64, u64, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    let mut file = HEADER.as_bytes().to_vec();
    file.push(b'\n');
    file.extend_from_slice(body);
    std::fs::write(&input, file).unwrap();
    let dataflow = LoadedDataflow::load(Path::new("dataflows/features.toml")).unwrap();
    let target = RunTarget {
        input,
        store: StoreUrl::Csv(dir.path().join("out.csv")),
        catalog: None,
        engine: EngineOptions {
            workers,
            ..EngineOptions::default()
        },
        chunking: Chunking::with_epoch_rows(epoch_rows),
    };
    let report = run_dataflow(&dataflow, &target).expect("hostile input never stops the run");
    (
        report.records_read,
        report.stored_total(),
        report.filtered,
        report.dead_lettered,
    )
}

/// A field as a CSV writer would write it: quoted when it holds a comma, quote or line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Field values that are sometimes right for their column and often not.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,5}(\\.[0-9])?",
        "20(0[7-9]|1[0-8])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])",
        "[a-zA-Zé€ ,\"\n.%-]{0,24}",
        Just(String::new()),
        any::<String>(),
    ]
}

/// A record of mostly nine fields, sometimes fewer or more.
fn record() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::collection::vec(field(), 9..=9),
        1 => proptest::collection::vec(field(), 2..14),
    ]
    .prop_map(|fields| {
        fields
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_all_accounted_for(
        body in proptest::collection::vec(any::<u8>(), 0..3000),
        workers in 1usize..3,
    ) {
        let (read, stored, filtered, dead) = run_over(&body, workers, 64);
        prop_assert_eq!(read, stored + filtered + dead);
    }

    #[test]
    fn csv_ish_records_are_all_read_and_accounted_for(
        records in proptest::collection::vec(record(), 0..200),
        workers in 1usize..3,
        crlf in any::<bool>(),
    ) {
        let newline = if crlf { "\r\n" } else { "\n" };
        let body: String = records.iter().map(|r| format!("{r}{newline}")).collect();
        let (read, stored, filtered, dead) = run_over(body.as_bytes(), workers, 16);
        prop_assert_eq!(read, records.len() as u64);
        prop_assert_eq!(read, stored + filtered + dead);
    }
}
