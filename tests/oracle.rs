//! Features equal oracles that are not our code: SQLite's window functions for SMA, a plain
//! sequential loop for EMA.

use crate::common::*;

/// EMA by the formula of DESIGN §3, written as plainly as possible.
fn sequential_ema(scores: &[Option<f64>], span: f64) -> Vec<Option<f64>> {
    let alpha = 2.0 / (span + 1.0);
    let mut e: Option<f64> = None;
    let mut out = Vec::new();
    for s in scores {
        if let Some(x) = s {
            e = Some(match e {
                None => *x,
                Some(prev) => prev + alpha * (x - prev),
            });
        }
        out.push(e);
    }
    out
}

fn assert_relative(got: Option<f64>, want: Option<f64>, what: &str) {
    match (got, want) {
        (Some(g), Some(w)) => {
            let scale = w.abs().max(1e-300);
            assert!(((g - w) / scale).abs() <= 1e-9, "{what}: {g} vs {w}");
        }
        (g, w) => assert_eq!(g, w, "{what}"),
    }
}

#[test]
fn sma_and_ema_equal_sql_windows_and_a_sequential_loop_over_120k_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(
        dir.path(),
        "in.csv",
        120_000,
        "2007-2018",
        &["--quirks", "--seed", "11"],
    );
    let dataflow = write_dataflow(
        dir.path(),
        "oracle",
        "2007-2018",
        r#"table = "oracle_features"
[[versions]]
id = 0
applies_from = "2007-01-01"
features = { ma50 = "sma(50)", ma100 = "sma(100)", ma3 = "sma(3)", ema50 = "ema(50)", ema7 = "ema(7)" }
"#,
    );
    let db = dir.path().join("o.db");
    riskflow_ok(&[
        "run",
        dataflow.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--store",
        &sqlite_store(&db),
        "-w",
        "2",
        "--epoch-rows",
        "8192",
    ]);

    let table = rows(
        &db,
        "SELECT risk_score, ma50, AVG(risk_score) OVER (ORDER BY _row ROWS BETWEEN 49 PRECEDING AND CURRENT ROW),
                ma100, AVG(risk_score) OVER (ORDER BY _row ROWS BETWEEN 99 PRECEDING AND CURRENT ROW),
                ma3, AVG(risk_score) OVER (ORDER BY _row ROWS BETWEEN 2 PRECEDING AND CURRENT ROW),
                ema50, ema7, _row
         FROM oracle_features ORDER BY _row",
    );
    assert!(table.len() > 118_000, "{} rows", table.len());
    let scores: Vec<Option<f64>> = table.iter().map(|r| as_f64(&r[0])).collect();
    let nulls = scores.iter().filter(|s| s.is_none()).count();
    assert!(nulls > 1000, "the input must have null scores ({nulls})");
    for r in &table {
        // Whole-number scores: SMA equals SQL exactly.
        assert_eq!(as_f64(&r[1]), as_f64(&r[2]), "ma50 at _row {:?}", r[9]);
        assert_eq!(as_f64(&r[3]), as_f64(&r[4]), "ma100 at _row {:?}", r[9]);
        assert_eq!(as_f64(&r[5]), as_f64(&r[6]), "ma3 at _row {:?}", r[9]);
    }
    for (column, span) in [(7, 50.0), (8, 7.0)] {
        let want = sequential_ema(&scores, span);
        for (r, w) in table.iter().zip(want) {
            assert_relative(
                as_f64(&r[column]),
                w,
                &format!("ema({span}) at _row {:?}", r[9]),
            );
        }
    }
}

#[test]
fn the_default_plan_matches_the_oracles_across_its_versions() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv.gz", 150_000, "2007-2013", &["--quirks"]);
    let db = dir.path().join("d.db");
    riskflow_ok(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--store",
        &sqlite_store(&db),
        "-w",
        "2",
    ]);

    // The stream of `loan_features` is every stored row, in _row order, from its first row.
    let table = rows(
        &db,
        "SELECT _version, risk_score, ma50, ma100,
                AVG(risk_score) OVER (ORDER BY _row ROWS BETWEEN 49 PRECEDING AND CURRENT ROW),
                AVG(risk_score) OVER (ORDER BY _row ROWS BETWEEN 99 PRECEDING AND CURRENT ROW), _row
         FROM loan_features ORDER BY _row",
    );
    let scores: Vec<Option<f64>> = table.iter().map(|r| as_f64(&r[1])).collect();
    let ema = sequential_ema(&scores, 50.0);
    let mut seen = [0usize; 3];
    for (r, ema50) in table.iter().zip(ema) {
        let version = as_f64(&r[0]).unwrap() as usize;
        seen[version] += 1;
        match version {
            0 => {
                assert_eq!(as_f64(&r[2]), as_f64(&r[4]), "v0 ma50 at {:?}", r[6]);
                assert_eq!(as_f64(&r[3]), None, "v0 has no ma100");
            }
            1 => {
                assert_eq!(as_f64(&r[2]), as_f64(&r[4]), "v1 ma50 at {:?}", r[6]);
                assert_eq!(as_f64(&r[3]), as_f64(&r[5]), "v1 ma100 at {:?}", r[6]);
            }
            _ => {
                assert_relative(
                    as_f64(&r[2]),
                    ema50,
                    &format!("v2 ma50 (EMA) at {:?}", r[6]),
                );
                assert_eq!(as_f64(&r[3]), as_f64(&r[5]), "v2 ma100 at {:?}", r[6]);
            }
        }
    }
    assert!(
        seen.iter().all(|&n| n > 100),
        "every version has rows: {seen:?}"
    );

    // Task 1: 2007 only, its own window.
    let task1 = rows(
        &db,
        "SELECT riskscorema50, AVG(risk_score) OVER (ORDER BY _row ROWS BETWEEN 49 PRECEDING AND CURRENT ROW), application_date
         FROM risk_score_ma50 ORDER BY _row",
    );
    assert!(task1.len() > 100);
    for r in &task1 {
        assert_eq!(as_f64(&r[0]), as_f64(&r[1]));
        assert!(matches!(&r[2], rusqlite::types::Value::Text(d) if d.starts_with("2007-")));
    }
}

#[test]
fn keyed_features_equal_sql_partitioned_windows_and_a_loop_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(
        dir.path(),
        "in.csv",
        110_000,
        "2007-2018",
        &["--quirks", "--seed", "5"],
    );
    let dataflow = write_dataflow(
        dir.path(),
        "keyed",
        "2007-2018",
        r#"table = "keyed_features"
[[versions]]
id = 0
applies_from = "2007-01-01"
features = { ma50 = "sma(50)", ma50_by_state = "sma(50) by state", ema50_by_state = "ema(50) by state", ma20_by_zip = "sma(20) by zip_code" }
"#,
    );
    let run = |db: &std::path::Path, workers: &str| {
        riskflow_ok(&[
            "run",
            dataflow.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--store",
            &sqlite_store(db),
            "-w",
            workers,
            "--epoch-rows",
            "8192",
            "-q",
        ])
    };
    let db = dir.path().join("k.db");
    run(&db, "1");
    let got = rows(
        &db,
        "SELECT _row, state, risk_score, ma50, ma50_by_state, ema50_by_state, ma20_by_zip,
                AVG(risk_score) OVER (ORDER BY _row ROWS BETWEEN 49 PRECEDING AND CURRENT ROW),
                AVG(risk_score) OVER (PARTITION BY state ORDER BY _row ROWS BETWEEN 49 PRECEDING AND CURRENT ROW),
                AVG(risk_score) OVER (PARTITION BY zip_code ORDER BY _row ROWS BETWEEN 19 PRECEDING AND CURRENT ROW)
         FROM keyed_features ORDER BY _row",
    );
    assert!(got.len() >= 100_000, "{} rows", got.len());
    // EMA per state by a plain loop over each state's rows in _row order.
    let mut per_state: std::collections::HashMap<String, Vec<(usize, Option<f64>)>> =
        std::collections::HashMap::new();
    for (i, r) in got.iter().enumerate() {
        let state = match &r[1] {
            rusqlite::types::Value::Text(s) => s.clone(),
            rusqlite::types::Value::Null => String::new(),
            other => panic!("{other:?}"),
        };
        per_state.entry(state).or_default().push((i, as_f64(&r[2])));
    }
    assert!(per_state.len() >= 10, "{} states", per_state.len());
    let mut ema = vec![None; got.len()];
    for rows_of_state in per_state.values() {
        let scores: Vec<Option<f64>> = rows_of_state.iter().map(|(_, s)| *s).collect();
        for ((i, _), e) in rows_of_state.iter().zip(sequential_ema(&scores, 50.0)) {
            ema[*i] = e;
        }
    }
    for (i, r) in got.iter().enumerate() {
        let at = format!("_row {:?}", r[0]);
        assert_relative(as_f64(&r[3]), as_f64(&r[7]), &format!("ma50 at {at}"));
        assert_relative(
            as_f64(&r[4]),
            as_f64(&r[8]),
            &format!("ma50_by_state at {at}"),
        );
        assert_relative(
            as_f64(&r[6]),
            as_f64(&r[9]),
            &format!("ma20_by_zip at {at}"),
        );
        assert_relative(as_f64(&r[5]), ema[i], &format!("ema50_by_state at {at}"));
    }
    // Worker counts change nothing: each key's rows meet on the worker that owns the key.
    let db2 = dir.path().join("k2.db");
    run(&db2, "3");
    assert!(
        table_rows(&db, "keyed_features", "_row") == table_rows(&db2, "keyed_features", "_row"),
        "-w 3 differs from -w 1"
    );
    // Nor do kills: every restart gives each worker the saved windows of the keys it owns.
    let db3 = dir.path().join("k3.db");
    let args: Vec<String> = [
        "run",
        dataflow.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--store",
        &sqlite_store(&db3),
        "-w",
        "3",
        "--epoch-rows",
        "2048",
        "-q",
    ]
    .map(String::from)
    .to_vec();
    let hits = kill_and_restart(&args, 5, 100, 8, || committed_epoch(&db3));
    assert!(hits >= 4, "only {hits} kills hit a running process");
    assert!(
        table_rows(&db, "keyed_features", "_row") == table_rows(&db3, "keyed_features", "_row"),
        "the killed and restarted -w 3 run differs from -w 1"
    );
}
