//! Results never depend on the number of workers, nor on a run being killed and restarted.

use crate::common::*;

/// Every stored table, without the wall-clock column.
fn snapshot(db: &std::path::Path) -> Vec<Vec<Vec<rusqlite::types::Value>>> {
    let strip = |table: &str, order: &str| table_rows(db, table, order);
    vec![
        strip("loan_features", "_row, _version"),
        strip("risk_score_ma50", "_row, _version"),
        strip("dead_letter", "source_table, _row"),
        strip(
            "feature_stats",
            "table_name, _version, application_date, column_name",
        ),
        strip("feature_versions", "table_name, version")
            .into_iter()
            .map(|mut r| {
                r.truncate(5); // who and when registered differ between runs
                r
            })
            .collect(),
    ]
}

#[test]
fn stored_tables_are_identical_for_1_2_and_4_workers() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 60_000, "2007-2013", &["--quirks"]);
    let mut snapshots = Vec::new();
    for workers in ["1", "2", "4"] {
        let db = dir.path().join(format!("w{workers}.db"));
        riskflow_ok(&[
            "run",
            "--input",
            input.to_str().unwrap(),
            "--store",
            &sqlite_store(&db),
            "-w",
            workers,
            "--epoch-rows",
            "4096",
        ]);
        snapshots.push(snapshot(&db));
    }
    assert!(snapshots[0][0].len() > 50_000);
    assert!(!snapshots[0][2].is_empty() && !snapshots[0][3].is_empty());
    for (other, workers) in snapshots[1..].iter().zip(["2", "4"]) {
        for (table, (a, b)) in snapshots[0].iter().zip(other).enumerate() {
            assert_eq!(
                a.len(),
                b.len(),
                "table {table}: row counts differ between -w 1 and -w {workers}"
            );
            if let Some((x, y)) = a.iter().zip(b).find(|(x, y)| x != y) {
                panic!("table {table} differs between -w 1 and -w {workers}:\n{x:?}\n{y:?}");
            }
        }
    }
}

#[test]
fn the_csv_export_is_byte_identical_for_any_worker_count_and_epoch_size() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(
        dir.path(),
        "in.csv.gz",
        40_000,
        "2007-2013",
        &["--quirks", "--crlf"],
    );
    let flow = repo("dataflows/features.toml");
    let mut outputs = Vec::new();
    for (workers, epoch) in [("1", "65536"), ("2", "4096"), ("3", "1000")] {
        let out = dir.path().join(format!("w{workers}.csv"));
        let store = format!("csv:{}", out.display());
        riskflow_ok(&[
            "run",
            flow.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--store",
            &store,
            "-w",
            workers,
            "--epoch-rows",
            epoch,
        ]);
        let dead =
            std::fs::read(dir.path().join(format!("w{workers}.csv.dead_letter.csv"))).unwrap();
        outputs.push((std::fs::read(&out).unwrap(), dead));
    }
    let lines = outputs[0].0.iter().filter(|&&b| b == b'\n').count();
    assert!(lines > 39_000, "{lines} lines");
    assert!(
        outputs[0] == outputs[1] && outputs[0] == outputs[2],
        "CSV output depends on workers or epochs"
    );
}

#[test]
fn several_dataflows_into_one_csv_file_are_refused_and_a_directory_gets_one_file_per_table() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 5_000, "2007-2009", &[]);
    let file = format!("csv:{}", dir.path().join("one.csv").display());
    let out = riskflow(&["run", "--input", input.to_str().unwrap(), "--store", &file]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give an existing directory"));
    let folder = dir.path().join("export");
    std::fs::create_dir(&folder).unwrap();
    riskflow_ok(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--store",
        &format!("csv:{}", folder.display()),
    ]);
    for table in ["risk_score_ma50", "loan_features"] {
        let text = std::fs::read_to_string(folder.join(format!("{table}.csv"))).unwrap();
        assert!(text.lines().count() > 100, "{table}");
        assert!(folder.join(format!("{table}.csv.dead_letter.csv")).exists());
    }
}

#[test]
fn a_run_into_sqlite_killed_at_random_moments_resumes_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 300_000, "2008-2013", &["--quirks"]);
    let reference = dir.path().join("reference.db");
    run_features(&input, &sqlite_store(&reference));

    let db = dir.path().join("killed.db");
    let args = restartable_run_args(&input, &sqlite_store(&db));
    let hits = kill_and_restart(&args, 6, 100, 15, || committed_epoch(&db));
    assert!(hits >= 5, "only {hits} kills hit a running process");
    for (table, order) in [
        ("loan_features", "_row, _version"),
        ("dead_letter", "source_table, _row"),
        (
            "feature_stats",
            "table_name, _version, application_date, column_name",
        ),
    ] {
        let (expected, actual) = (
            table_rows(&reference, table, order),
            table_rows(&db, table, order),
        );
        assert_eq!(expected.len(), actual.len(), "{table} rows");
        if let Some(i) = (0..expected.len()).find(|&i| expected[i] != actual[i]) {
            panic!(
                "{table} differs at row {i}: {:?} vs {:?}",
                expected[i], actual[i]
            );
        }
    }
}
