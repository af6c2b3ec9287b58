//! Versions: stamping by date, per-version views, add-only evolution, idempotent reruns, and
//! clear errors.

use crate::common::*;
use rusqlite::types::Value;

fn names(extra: &[&str]) -> Vec<String> {
    riskflow::record::BASE_COLUMNS
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::Text(t) => t.clone(),
        other => panic!("{other:?}"),
    }
}

/// The shipped feature set plus `extra` (TOML of more versions).
fn plan_with(extra: &str) -> String {
    std::fs::read_to_string(repo("config/feature_sets/loan_features.toml")).unwrap() + extra
}

#[test]
fn versions_are_stamped_at_the_2009_and_2012_boundaries_and_views_show_their_columns() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 50_000, "2007-2013", &[]);
    let db = dir.path().join("v.db");
    riskflow_ok(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--store",
        &sqlite_store(&db),
    ]);
    let ranges = rows(&db, "SELECT _version, MIN(application_date), MAX(application_date) FROM loan_features GROUP BY 1 ORDER BY 1");
    let ranges: Vec<(String, String)> = ranges.iter().map(|r| (text(&r[1]), text(&r[2]))).collect();
    assert_eq!(ranges.len(), 3);
    assert_eq!(
        (ranges[0].0.as_str(), ranges[0].1.as_str()),
        ("2008-01-01", "2008-12-31")
    );
    assert_eq!(
        (ranges[1].0.as_str(), ranges[1].1.as_str()),
        ("2009-01-01", "2011-12-31")
    );
    assert_eq!(
        (ranges[2].0.as_str(), ranges[2].1.as_str()),
        ("2012-01-01", "2013-12-31")
    );

    assert_eq!(
        columns(&db, "loan_features_v0"),
        names(&["ma50", "_row", "_version", "_modified_ts"])
    );
    assert_eq!(
        columns(&db, "loan_features_v1"),
        names(&["ma50", "ma100", "_row", "_version", "_modified_ts"])
    );
    assert_eq!(
        columns(&db, "loan_features_v2"),
        names(&["ma50", "ma100", "_row", "_version", "_modified_ts"])
    );
    assert_eq!(
        columns(&db, "loan_features_latest"),
        names(&["ma50", "ma100", "_row", "_version", "_modified_ts"])
    );
    // ma100 arrived with version 1: added by ALTER TABLE after the bookkeeping columns.
    assert_eq!(
        columns(&db, "loan_features"),
        names(&["ma50", "_row", "_version", "_modified_ts", "ma100"])
    );
    assert_eq!(
        columns(&db, "risk_score_ma50_v0"),
        names(&["riskscorema50", "_row", "_version", "_modified_ts"])
    );
    for v in 0..3 {
        let in_view = count(&db, &format!("SELECT COUNT(*) FROM loan_features_v{v}"));
        let in_table = count(
            &db,
            &format!("SELECT COUNT(*) FROM loan_features WHERE _version = {v}"),
        );
        assert_eq!(in_view, in_table);
        assert!(in_view > 100);
    }
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM feature_versions WHERE table_name = 'loan_features'"
        ),
        3
    );
}

#[test]
fn a_new_version_adds_its_column_and_views_to_an_existing_store() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 20_000, "2007-2013", &[]);
    let db = dir.path().join("e.db");
    let store = sqlite_store(&db);
    let only_v0 = "table = \"loan_features\"\n[[versions]]\nid = 0\napplies_from = \"2007-01-01\"\nfeatures = { ma50 = \"sma(50)\" }\n";
    let flow = write_dataflow(dir.path(), "v0", "2008-", only_v0);
    riskflow_ok(&[
        "run",
        flow.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--store",
        &store,
    ]);
    assert_eq!(
        columns(&db, "loan_features"),
        names(&["ma50", "_row", "_version", "_modified_ts"])
    );
    let v0_rows = rows(&db, "SELECT * FROM loan_features ORDER BY _row");

    let with_v3 = plan_with("\n[[versions]]\nid = 3\napplies_from = \"2013-06-01\"\nfeatures = { ma50 = \"ema(50)\", ma100 = \"sma(100)\", ma200 = \"sma(200)\" }\n");
    let flow = write_dataflow(dir.path(), "v3", "2008-", &with_v3);
    let out = riskflow_ok(&[
        "run",
        flow.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--store",
        &store,
        "-q",
    ]);
    assert!(out.contains("v3: "), "{out}");
    assert_eq!(
        columns(&db, "loan_features_v3"),
        names(&["ma50", "ma100", "ma200", "_row", "_version", "_modified_ts"])
    );
    // Rows stored under version 0 before the evolution are untouched; the other versions are
    // stored beside them.
    let before: Vec<Vec<Value>> = rows(
        &db,
        "SELECT * FROM loan_features WHERE _version = 0 ORDER BY _row",
    )
    .into_iter()
    .map(|mut r| {
        r.truncate(13);
        r
    })
    .collect();
    assert!(before == v0_rows, "rows of version 0 changed");
    assert!(count(&db, "SELECT COUNT(*) FROM loan_features WHERE _version = 3") > 100);
}

#[test]
fn evolution_errors_are_refused_with_the_rule_and_leave_the_store_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 10_000, "2007-2013", &[]);
    let db = dir.path().join("r.db");
    let store = sqlite_store(&db);
    riskflow_ok(&["run", "--input", input.to_str().unwrap(), "--store", &store]);
    let before = (
        rows(&db, "SELECT * FROM loan_features ORDER BY _row, _version"),
        rows(&db, "SELECT * FROM feature_versions"),
        columns(&db, "loan_features"),
    );

    let cases = [
        ("drop", plan_with("\n[[versions]]\nid = 3\napplies_from = \"2014-01-01\"\nfeatures = { ma50 = \"ema(50)\" }\n"), "drops feature `ma100`"),
        ("retype", plan_with("\n[[versions]]\nid = 3\napplies_from = \"2014-01-01\"\nfeatures = { ma50 = \"ema(50) as real\", ma100 = \"sma(100)\" }\n"), "changes the type of `ma50` from double to real"),
        ("rewrite", plan_with("").replace("ma50 = \"ema(50)\"", "ma50 = \"sma(20)\""), "already registered with different content"),
        ("early", plan_with("\n[[versions]]\nid = 3\napplies_from = \"2010-01-01\"\nfeatures = { ma50 = \"ema(50)\", ma100 = \"sma(100)\" }\n"), "must apply from later dates"),
    ];
    for (name, plan, message) in cases {
        let flow = write_dataflow(dir.path(), name, "2008-", &plan);
        let out = riskflow(&[
            "run",
            flow.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--store",
            &store,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(stderr.contains(message), "{name}: {stderr}");
    }
    let after = (
        rows(&db, "SELECT * FROM loan_features ORDER BY _row, _version"),
        rows(&db, "SELECT * FROM feature_versions"),
        columns(&db, "loan_features"),
    );
    assert!(before == after, "a refused evolution changed the store");
}

#[test]
fn rerunning_the_same_input_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 20_000, "2007-2013", &["--quirks"]);
    let db = dir.path().join("i.db");
    let args = [
        "run",
        "--input",
        input.to_str().unwrap(),
        "--store",
        &sqlite_store(&db),
        "-w",
        "2",
    ];
    riskflow_ok(&args);
    let snapshot = |db: &std::path::Path| {
        [
            "loan_features",
            "risk_score_ma50",
            "dead_letter",
            "feature_stats",
            "feature_versions",
        ]
        .map(|t| rows(db, &format!("SELECT * FROM {t} ORDER BY 1, 2, 3, 4")))
    };
    let first = snapshot(&db);
    riskflow_ok(&args);
    assert!(
        first == snapshot(&db),
        "a rerun changed the store (including _modified_ts and registration times)"
    );
}

#[test]
fn a_wrong_header_is_an_error_that_names_the_expected_one() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.csv");
    std::fs::write(&input, "amount,date,title\n1,2008-01-01,x\n").unwrap();
    let out = riskflow(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--store",
        &sqlite_store(&dir.path().join("h.db")),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("does not have the rejected-loans header"),
        "{stderr}"
    );
    assert!(
        stderr.contains("expected: Amount Requested,Application Date,Loan Title,Risk_Score"),
        "{stderr}"
    );
    assert!(stderr.contains("found:    amount,date,title"), "{stderr}");
}

#[test]
fn the_generator_is_deterministic_and_gzip_reads_like_plain() {
    let dir = tempfile::tempdir().unwrap();
    let a = generate(
        dir.path(),
        "a.csv",
        5_000,
        "2007-2009",
        &["--quirks", "--seed", "5"],
    );
    let b = generate(
        dir.path(),
        "b.csv",
        5_000,
        "2007-2009",
        &["--quirks", "--seed", "5"],
    );
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let gz = generate(
        dir.path(),
        "c.csv.gz",
        5_000,
        "2007-2009",
        &["--quirks", "--seed", "5"],
    );
    let flow = repo("dataflows/features.toml");
    let (plain_out, gz_out) = (dir.path().join("p.csv"), dir.path().join("g.csv"));
    riskflow_ok(&[
        "run",
        flow.to_str().unwrap(),
        "--input",
        a.to_str().unwrap(),
        "--store",
        &format!("csv:{}", plain_out.display()),
    ]);
    riskflow_ok(&[
        "run",
        flow.to_str().unwrap(),
        "--input",
        gz.to_str().unwrap(),
        "--store",
        &format!("csv:{}", gz_out.display()),
    ]);
    assert_eq!(
        std::fs::read(plain_out).unwrap(),
        std::fs::read(gz_out).unwrap()
    );
}

#[test]
fn the_catalog_command_lists_shows_diffs_validates_and_registers() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 2_000, "2008-2012", &[]);
    let db = dir.path().join("c.db");
    let store = sqlite_store(&db);
    run_features(&input, &store);
    let catalog = |args: &[&str]| {
        let mut all = vec!["catalog", "--store", &store];
        all.extend(args);
        riskflow(&all)
    };
    let stdout = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    let list: serde_json::Value =
        serde_json::from_str(&stdout(catalog(&["--json", "list"]))).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert_eq!(list[1]["features"]["ma100"], "sma(100)");
    assert!(stdout(catalog(&["show", "2"])).contains("ema(50)"));
    let diff = stdout(catalog(&["diff", "1", "2"]));
    assert!(
        diff.contains("ma50         changed    sma(50) → ema(50)"),
        "{diff}"
    );
    assert!(diff.contains("ma100        unchanged  sma(100)"), "{diff}");

    let plan = std::fs::read_to_string(repo("config/feature_sets/loan_features.toml")).unwrap();
    let with = |extra: &str| {
        let path = dir.path().join("plan.toml");
        std::fs::write(&path, format!("{plan}\n{extra}")).unwrap();
        path
    };
    let dropping = with(
        "[[versions]]\nid = 3\napplies_from = \"2014-01-01\"\nfeatures = { ma50 = \"ema(50)\" }\n",
    );
    let refused = catalog(&["validate", dropping.to_str().unwrap()]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("drops feature `ma100`"), "{stderr}");

    let adding = with("[[versions]]\nid = 3\napplies_from = \"2014-01-01\"\nfeatures = { ma50 = \"ema(50)\", ma100 = \"sma(100)\", ma20 = \"sma(20)\" }\n");
    let validated = stdout(catalog(&["validate", adding.to_str().unwrap()]));
    assert!(
        validated.contains("version 3: would register"),
        "{validated}"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM feature_versions WHERE table_name = 'loan_features'"
        ),
        3,
        "validate writes nothing"
    );
    let registered = stdout(catalog(&["register", adding.to_str().unwrap()]));
    assert!(registered.contains("version 3: registered"), "{registered}");
    assert!(
        registered.contains("version 2: already registered"),
        "{registered}"
    );
    let diff = stdout(catalog(&["diff", "2", "3"]));
    assert!(diff.contains("ma20         added      sma(20)"), "{diff}");
}
