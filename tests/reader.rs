//! The reader agrees with an independent CSV implementation: Python's `csv` module.

use crate::common::*;
use rusqlite::types::Value;
use std::collections::HashMap;
use std::process::Command;

/// Python's reading of the file: record number → fields (records with invalid UTF-8 decoded
/// lossily; those are dead letters on our side anyway).
fn python_records(path: &std::path::Path) -> HashMap<i64, Vec<String>> {
    let script = r#"
import csv, json, sys
with open(sys.argv[1], newline='', encoding='utf-8-sig', errors='replace') as f:
    reader = csv.reader(f)
    next(reader)
    for number, record in enumerate(reader, start=1):
        print(json.dumps([number, record]))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (number, fields): (i64, Vec<String>) = serde_json::from_str(line).unwrap();
            (number, fields)
        })
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::Text(t) => t.clone(),
        Value::Real(x) => format!("{x:?}"),
        Value::Null => String::new(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn records_and_fields_match_pythons_csv_module() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(
        dir.path(),
        "in.csv",
        30_000,
        "2007-2013",
        &["--quirks", "--crlf", "--bom", "--seed", "9"],
    );
    let db = dir.path().join("r.db");
    riskflow_ok(&[
        "run",
        repo("dataflows/features.toml").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--store",
        &sqlite_store(&db),
    ]);
    let python = python_records(&input);
    assert_eq!(python.len(), 30_000, "both count the same records");

    let stored = rows(
        &db,
        "SELECT _row, application_date, loan_title, risk_score, debt_to_income_ratio, zip_code, state, employment_length, policy_code, amount_requested FROM loan_features",
    );
    assert!(stored.len() > 29_000);
    for r in &stored {
        let Value::Integer(number) = r[0] else {
            panic!()
        };
        let fields = &python[&number];
        assert_eq!(fields.len(), 9, "_row {number}");
        assert_eq!(text(&r[1]), fields[1], "date at _row {number}");
        assert_eq!(text(&r[2]), fields[2], "title at _row {number}");
        assert_eq!(
            as_f64(&r[3]),
            (!fields[3].is_empty()).then(|| fields[3].parse::<f64>().unwrap()),
            "score at _row {number}"
        );
        for (column, field) in [(4, 4), (5, 5), (6, 6), (7, 7), (8, 8)] {
            assert_eq!(
                text(&r[column]),
                fields[field],
                "column {column} at _row {number}"
            );
        }
        assert_eq!(
            as_f64(&r[9]),
            Some(fields[0].parse::<f64>().unwrap()),
            "amount at _row {number}"
        );
    }
    for r in rows(&db, "SELECT _row FROM dead_letter WHERE reason = 'field_count' AND source_table = 'loan_features'") {
        let Value::Integer(number) = r[0] else { panic!() };
        assert_ne!(python[&number].len(), 9, "_row {number} has 9 fields for Python");
    }
}

/// The CSV export, read back by Python's `csv` module, holds what the SQLite store holds: every
/// text exactly (quoted where it must be), every number to the last bit.
#[test]
fn the_csv_export_reads_back_as_the_sqlite_store_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(
        dir.path(),
        "in.csv",
        30_000,
        "2007-2013",
        &["--quirks", "--crlf", "--seed", "4"],
    );
    let (db, export) = (dir.path().join("s.db"), dir.path().join("e.csv"));
    run_features(&input, &sqlite_store(&db));
    run_features(&input, &format!("csv:{}", export.display()));
    let exported = python_records(&export);
    let stored = rows(
        &db,
        "SELECT amount_requested, application_date, loan_title, risk_score, debt_to_income_ratio, zip_code, state, employment_length, policy_code, ma50, ma100, _row, _version FROM loan_features ORDER BY _row, _version",
    );
    assert!(stored.len() > 29_000);
    assert_eq!(exported.len(), stored.len());
    let quoted_titles = stored
        .iter()
        .filter(|r| matches!(&r[2], Value::Text(t) if t.contains([',', '"', '\n'])))
        .count();
    assert!(quoted_titles > 100, "{quoted_titles} titles need quotes");
    for (line, row) in stored.iter().enumerate() {
        let fields = &exported[&(line as i64 + 1)];
        assert_eq!(fields.len(), row.len(), "line {}", line + 1);
        for (value, field) in row.iter().zip(fields) {
            let same = match value {
                Value::Text(t) => t == field,
                Value::Null => field.is_empty(),
                Value::Real(x) => field.parse::<f64>().ok() == Some(*x),
                Value::Integer(n) => field.parse::<i64>().ok() == Some(*n),
                Value::Blob(_) => false,
            };
            assert!(
                same,
                "line {}: {value:?} stored, {field:?} exported",
                line + 1
            );
        }
    }
}
