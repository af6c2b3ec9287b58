//! Backfill: a version computed over past years (from a file and from Kafka) and stored beside
//! the versions already there, equal to a fresh run of that version alone, with correct
//! `feature_stats`; the other versions untouched, and a rerun a no-op.

use crate::common::*;
use crate::kafka::{brokers, fresh_topic, produce};
use std::path::Path;

const VERSIONS_0_1: &str = "table = \"loan_features\"
[[versions]]
id = 0
applies_from = \"2007-01-01\"
features = { ma50 = \"sma(50)\" }
[[versions]]
id = 1
applies_from = \"2009-01-01\"
features = { ma50 = \"sma(50)\", ma100 = \"sma(100)\" }
";

/// Version 2's features as the only version, from the first day of the replay.
const VERSION_2_ALONE: &str = "table = \"loan_features\"
[[versions]]
id = 0
applies_from = \"2008-01-01\"
features = { ma50 = \"ema(50)\", ma100 = \"sma(100)\" }
";

fn backfill(db: &Path, source: &[&str]) -> std::process::Output {
    let store = sqlite_store(db);
    let mut args = vec![
        "backfill",
        "--version",
        "2",
        "--years",
        "2008-2011",
        "--store",
        &store,
        "-w",
        "2",
        "-q",
    ];
    args.extend_from_slice(source);
    riskflow(&args)
}

fn versions_0_1(db: &Path) -> Vec<Vec<rusqlite::types::Value>> {
    rows(db, "SELECT _row, _version, ma50, ma100, risk_score FROM loan_features WHERE _version < 2 ORDER BY _row, _version")
}

fn version_2(db: &Path) -> Vec<Vec<rusqlite::types::Value>> {
    rows(db, "SELECT _row, application_date, risk_score, ma50, ma100 FROM loan_features_v2 ORDER BY _row")
}

#[test]
fn a_backfilled_version_equals_a_fresh_run_of_it_and_leaves_the_others_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 40_000, "2008-2013", &["--quirks"]);
    let input_arg = input.to_str().unwrap();

    // A store holding versions 0 and 1 (what the stream stored), then version 2 registered.
    let with_0_1 = write_dataflow(dir.path(), "v01", "2008-", VERSIONS_0_1);
    let db = dir.path().join("store.db");
    let run = |db: &Path| {
        riskflow_ok(&[
            "run",
            with_0_1.to_str().unwrap(),
            "--input",
            input_arg,
            "--store",
            &sqlite_store(db),
            "-q",
        ])
    };
    run(&db);
    let before = versions_0_1(&db);
    register_default_plan(&db);

    let out = backfill(&db, &["--input", input_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(before == versions_0_1(&db), "versions 0 and 1 changed");

    // The oracle: version 2's features as the only version, over the same years.
    let alone = write_dataflow(dir.path(), "v2", "2008-2011", VERSION_2_ALONE);
    let fresh = dir.path().join("fresh.db");
    riskflow_ok(&[
        "run",
        alone.to_str().unwrap(),
        "--input",
        input_arg,
        "--store",
        &sqlite_store(&fresh),
        "-q",
    ]);
    let expected = rows(
        &fresh,
        "SELECT _row, application_date, risk_score, ma50, ma100 FROM loan_features ORDER BY _row",
    );
    let backfilled = version_2(&db);
    assert!(backfilled.len() > 5_000, "{} rows", backfilled.len());
    assert!(
        expected == backfilled,
        "the backfilled version 2 differs from a fresh run of it"
    );
    let dates = rows(
        &db,
        "SELECT min(application_date), max(application_date) FROM loan_features_v2",
    );
    assert_eq!(
        (
            text(&dates[0][0]).as_str() >= "2008",
            text(&dates[0][1]).as_str() < "2012"
        ),
        (true, true)
    );

    // feature_stats for version 2 equal SQL's own count over the stored rows.
    let stats = rows(&db, "SELECT application_date, rows, nulls FROM feature_stats WHERE table_name = 'loan_features' AND _version = 2 AND column_name = 'risk_score' ORDER BY 1");
    let counted = rows(&db, "SELECT application_date, count(*), count(*) - count(risk_score) FROM loan_features WHERE _version = 2 GROUP BY 1 ORDER BY 1");
    assert!(
        !stats.is_empty() && stats == counted,
        "feature_stats of version 2"
    );

    // A second backfill changes nothing.
    let tables = ["loan_features", "feature_stats", "dead_letter"];
    let snapshot = |db: &Path| -> Vec<_> {
        tables
            .iter()
            .map(|t| table_rows(db, t, "1, 2, 3"))
            .collect()
    };
    let first = snapshot(&db);
    let again = backfill(&db, &["--input", input_arg]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert!(
        first == snapshot(&db),
        "a second backfill changed the store"
    );

    // A backfill over years where its version already has rows is refused, saying why.
    let store = sqlite_store(&db);
    let refused = riskflow(&[
        "backfill",
        "--version",
        "1",
        "--years",
        "2010",
        "--input",
        input_arg,
        "--store",
        &store,
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("version 1 of `loan_features` already has"),
        "{stderr}"
    );

    // From Kafka: the same version 2 rows as from the file.
    let topic = fresh_topic("backfill");
    produce(&input, &topic, 3, &[]);
    let from_kafka = dir.path().join("kafka.db");
    run(&from_kafka);
    register_default_plan(&from_kafka);
    let out = backfill(&from_kafka, &["--brokers", &brokers(), "--topic", &topic]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        version_2(&from_kafka) == backfilled,
        "the Kafka backfill differs from the file's"
    );
}

fn text(v: &rusqlite::types::Value) -> String {
    match v {
        rusqlite::types::Value::Text(t) => t.clone(),
        other => panic!("{other:?}"),
    }
}
