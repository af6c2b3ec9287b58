//! Operating riskflow: `status` reports the store's own counts; logs can be JSON lines.

use crate::common::*;
use serde_json::Value as Json;

fn status_json(args: &[&str]) -> Json {
    let mut all = vec!["status", "--json"];
    all.extend(args);
    serde_json::from_str(&riskflow_ok(&all)).expect("status --json prints JSON")
}

fn table<'a>(status: &'a Json, name: &str) -> &'a Json {
    status
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

#[test]
fn status_reports_the_counts_a_run_stored() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 20_000, "2007-2013", &["--quirks"]);
    let db = dir.path().join("s.db");
    let store = sqlite_store(&db);
    riskflow_ok(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--store",
        &store,
        "-q",
    ]);
    let status = status_json(&["--store", &store]);

    let features = table(&status, "loan_features");
    assert_eq!(features["catalog_version"], 2);
    for r in rows(
        &db,
        "SELECT _version, count(*) FROM loan_features GROUP BY 1",
    ) {
        let (rusqlite::types::Value::Integer(v), rusqlite::types::Value::Integer(n)) =
            (&r[0], &r[1])
        else {
            panic!("{r:?}")
        };
        assert_eq!(features["rows"][v.to_string()], *n, "version {v}");
    }
    let dead = count(
        &db,
        "SELECT count(*) FROM dead_letter WHERE source_table = 'loan_features'",
    );
    let reported: i64 = features["dead_letters"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_i64().unwrap())
        .sum();
    assert!(dead > 0);
    assert_eq!(reported, dead);
    let checkpoint = &features["checkpoints"][0];
    assert_eq!(checkpoint["last_row"], 20_000, "the whole file was read");
    assert!(checkpoint["source"].as_str().unwrap().starts_with("file:"));
    assert_eq!(table(&status, "risk_score_ma50")["catalog_version"], 0);

    let text = riskflow_ok(&["status", "--store", &store]);
    assert!(
        text.contains("loan_features  (catalog version 2)"),
        "{text}"
    );
    assert!(text.contains("last row 20000"), "{text}");
}

#[test]
fn logs_can_be_json_lines_with_their_fields() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 2_000, "2008-2012", &[]);
    let out = riskflow(&[
        "--log",
        "info",
        "--log-format",
        "json",
        "run",
        "dataflows/features.toml",
        "--input",
        input.to_str().unwrap(),
        "--store",
        &sqlite_store(&dir.path().join("l.db")),
        "-q",
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<Json> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let running = lines
        .iter()
        .find(|l| l["message"] == "Running dataflow.")
        .expect("the run is logged");
    assert_eq!(running["level"], "INFO");
    assert_eq!(running["table"], "loan_features");
    assert_eq!(running["workers"], 1);
}
