//! Every input record is stored, filtered by year, or dead-lettered with its raw bytes.

use crate::common::*;
use rusqlite::types::Value;

#[test]
fn every_record_is_accounted_for_on_a_file_with_every_quirk() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(
        dir.path(),
        "in.csv.gz",
        80_000,
        "2007-2013",
        &["--quirks", "--crlf", "--bom", "--seed", "3"],
    );
    let db = dir.path().join("a.db");
    let out = riskflow_ok(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--store",
        &sqlite_store(&db),
        "-w",
        "2",
        "-q",
    ]);
    let lines: Vec<&str> = out.lines().filter(|l| l.contains(" records in ")).collect();
    assert_eq!(lines.len(), 2, "{out}");
    for (line, table) in lines.iter().zip(["risk_score_ma50", "loan_features"]) {
        let (read, stored, filtered, dead) = summary_counts(line);
        assert_eq!(read, 80_000, "{line}");
        assert_eq!(read, stored + filtered + dead, "{line}");
        assert_eq!(
            stored as i64,
            count(&db, &format!("SELECT COUNT(*) FROM {table}")),
            "{line}"
        );
        let dead_rows = count(
            &db,
            &format!("SELECT COUNT(*) FROM dead_letter WHERE source_table = '{table}'"),
        );
        assert_eq!(dead as i64, dead_rows, "{line}");
    }

    // Each kind of bad record is dead-lettered with its reason and exact bytes.
    let reasons: Vec<String> = rows(&db, "SELECT DISTINCT reason FROM dead_letter ORDER BY 1")
        .into_iter()
        .map(|r| match &r[0] {
            Value::Text(t) => t.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "bad_amount_requested",
            "bad_application_date",
            "bad_risk_score",
            "field_count",
            "invalid_utf8"
        ]
    );
    let raw = rows(
        &db,
        "SELECT raw, detail FROM dead_letter WHERE reason = 'invalid_utf8' LIMIT 1",
    );
    let Value::Blob(bytes) = &raw[0][0] else {
        panic!("raw is a blob")
    };
    assert!(
        std::str::from_utf8(bytes).is_err() && bytes.contains(&0xe9),
        "raw bytes kept as read"
    );
    assert!(
        bytes.ends_with(b"\r"),
        "the record's bytes as read, CR included"
    );

    // Multi-line titles, quoted commas, doubled quotes and non-ASCII text survive intact.
    for title in [
        "Two lines,\nsecond \"line\"",
        "Cars, bikes and more",
        "The \"best\" loan ever",
        "家族のための融資",
        "27\" monitor for work",
    ] {
        let n = {
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.query_row(
                "SELECT COUNT(*) FROM loan_features WHERE loan_title = ?1",
                [title],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
        };
        assert!(n > 0, "title {title:?} not stored");
    }
    // Empty scores are NULL, not 0; zero scores are 0.
    assert!(
        count(
            &db,
            "SELECT COUNT(*) FROM loan_features WHERE risk_score IS NULL"
        ) > 1000
    );
    assert!(
        count(
            &db,
            "SELECT COUNT(*) FROM loan_features WHERE risk_score = 0"
        ) > 500
    );
}

#[test]
fn feature_stats_agree_with_the_stored_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 30_000, "2007-2013", &["--quirks"]);
    let db = dir.path().join("s.db");
    riskflow_ok(&[
        "run",
        repo("dataflows/features.toml").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--store",
        &sqlite_store(&db),
        "--epoch-rows",
        "2048",
    ]);
    let mismatches = count(
        &db,
        "WITH truth AS (
            SELECT _version, application_date, 'risk_score' AS column_name, COUNT(*) AS rows,
                   SUM(risk_score IS NULL) AS nulls, AVG(risk_score) AS mean
            FROM loan_features GROUP BY 1, 2
            UNION ALL
            SELECT _version, application_date, 'ma50', COUNT(*), SUM(ma50 IS NULL), AVG(ma50)
            FROM loan_features GROUP BY 1, 2)
         SELECT COUNT(*) FROM truth t LEFT JOIN feature_stats s
           ON s.table_name = 'loan_features' AND s._version = t._version
          AND s.application_date = t.application_date AND s.column_name = t.column_name
         WHERE s.rows IS NOT t.rows OR s.nulls IS NOT t.nulls
            OR ABS(COALESCE(s.mean, -1) - COALESCE(t.mean, -1)) > 1e-6 * ABS(COALESCE(t.mean, 1))",
    );
    assert_eq!(mismatches, 0);
    assert!(
        count(
            &db,
            "SELECT COUNT(*) FROM feature_stats WHERE column_name = 'ma100'"
        ) > 100
    );
}

#[test]
fn a_10_mb_title_is_dead_lettered_and_later_rows_keep_their_positions() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("huge.csv");
    let mut bytes = format!(
        "{}\n1000.0,2008-01-02,small,700.0,10%,100xx,NY,1 year,0.0\n",
        riskflow::record::HEADER
    )
    .into_bytes();
    bytes.extend_from_slice(b"2000.0,2008-01-03,\"");
    for _ in 0..200_000 {
        bytes.extend_from_slice(b"forty-nine bytes of title, \"\"quoted\"\"\nand more ");
    }
    bytes.extend_from_slice(b"\",650.0,5%,200xx,CA,2 years,0.0\n3000.0,2008-01-04,after,600.0,7%,300xx,TX,3 years,0.0\n");
    std::fs::write(&input, &bytes).unwrap();
    let db = dir.path().join("h.db");
    let flow = repo("dataflows/features.toml");
    let out = riskflow_ok(&[
        "run",
        flow.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--store",
        &sqlite_store(&db),
        "-q",
    ]);
    assert_eq!(
        summary_counts(out.lines().next().unwrap()),
        (3, 2, 0, 1),
        "{out}"
    );
    let dead = rows(
        &db,
        "SELECT _row, reason, length(raw), detail FROM dead_letter",
    );
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0][0], Value::Integer(2));
    assert_eq!(dead[0][1], Value::Text("oversized_record".into()));
    assert_eq!(
        dead[0][2],
        Value::Integer(riskflow::source::MAX_RECORD_BYTES as i64)
    );
    let stored = rows(
        &db,
        "SELECT _row, loan_title, ma50 FROM loan_features ORDER BY _row",
    );
    assert_eq!(
        stored[1],
        vec![
            Value::Integer(3),
            Value::Text("after".into()),
            Value::Real(650.0)
        ]
    );
}
