//! AWS against a real S3 and Glue API (moto, started by `scripts/test.sh`): S3 input stores
//! exactly what the same local file stores; the Glue catalog keeps one table version per
//! feature-set version, and of two racing registrations exactly one wins.

use crate::common::*;
use std::process::{Command, Output};

/// The moto server `scripts/test.sh` started; a test that cannot reach one fails, never skips.
pub fn moto() -> String {
    std::env::var("RISKFLOW_TEST_MOTO").expect(
        "RISKFLOW_TEST_MOTO is not set: run the suite with scripts/test.sh, which starts moto \
         (scripts/moto.sh) for it",
    )
}

pub const AWS_ENV: [(&str, &str); 4] = [
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_REGION", "us-east-1"),
    ("AWS_DEFAULT_REGION", "us-east-1"),
];

/// Runs riskflow with the Glue and S3 endpoints pointed at moto.
pub fn riskflow_glue(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_riskflow"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .envs(AWS_ENV)
        .env("AWS_ENDPOINT_URL_GLUE", moto())
        .env("AWS_ENDPOINT_URL_S3", moto());
    command
}

pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "riskflow failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A Python snippet run against moto with boto3 (the AWS SDK that is not ours); `args` follow
/// the endpoint as sys.argv[2:].
pub fn boto3(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!("import boto3, json, sys\n{script}"))
        .arg(moto())
        .args(args)
        .envs(AWS_ENV)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_run_over_an_s3_object_equals_the_run_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv.gz", 30_000, "2007-2013", &["--quirks"]);
    let bucket = format!("loans-{}", std::process::id());
    boto3(
        "s3 = boto3.client('s3', endpoint_url=sys.argv[1])\n\
         s3.create_bucket(Bucket=sys.argv[2])\n\
         s3.upload_file(sys.argv[3], sys.argv[2], 'rejected/in.csv.gz')",
        &[&bucket, input.to_str().unwrap()],
    );

    let local = dir.path().join("local.db");
    riskflow_ok(&[
        "run",
        "--input",
        input.to_str().unwrap(),
        "--store",
        &sqlite_store(&local),
        "-q",
    ]);
    let remote = dir.path().join("s3.db");
    let url = format!("s3://{bucket}/rejected/in.csv.gz");
    let run = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_riskflow"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "run",
                "--input",
                url,
                "--store",
                &sqlite_store(&remote),
                "-q",
                "-w",
                "2",
            ])
            .envs(AWS_ENV)
            .env("AWS_ENDPOINT_URL_S3", moto())
            .output()
            .unwrap()
    };
    let out = run(&url);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (table, order) in [
        ("loan_features", "_row, _version"),
        ("risk_score_ma50", "_row, _version"),
        ("dead_letter", "source_table, _row"),
        (
            "feature_stats",
            "table_name, _version, application_date, column_name",
        ),
    ] {
        assert!(
            table_rows(&local, table, order) == table_rows(&remote, table, order),
            "{table} differs between the file and the S3 object"
        );
    }
    // A missing key is a clear error naming it.
    let missing = run(&format!("s3://{bucket}/nope.csv"));
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("nope.csv"), "{stderr}");
}

#[test]
fn the_glue_catalog_keeps_one_table_version_per_feature_set_version() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("features{}", std::process::id());
    let catalog = format!("glue://{database}");
    // A run registers the default plan in Glue (not in the store) and stores the same rows as a
    // run on the embedded catalog.
    let input = generate(dir.path(), "in.csv", 20_000, "2007-2013", &[]);
    let glue_db = dir.path().join("glue.db");
    ok(riskflow_glue(&[
        "run",
        "dataflows/features.toml",
        "--input",
        input.to_str().unwrap(),
        "--store",
        &sqlite_store(&glue_db),
        "--catalog",
        &catalog,
        "-q",
    ])
    .output()
    .unwrap());
    let embedded_db = dir.path().join("embedded.db");
    run_features(&input, &sqlite_store(&embedded_db));
    assert!(
        table_rows(&glue_db, "loan_features", "_row, _version")
            == table_rows(&embedded_db, "loan_features", "_row, _version"),
        "the Glue-catalogued run stored other rows"
    );
    assert_eq!(
        count(
            &glue_db,
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'feature_versions'"
        ),
        0,
        "with a Glue catalog the store keeps no catalog of its own"
    );

    // list / show / diff read Glue.
    let catalog_cmd = |args: &[&str]| {
        let mut all = vec!["catalog", "--catalog", catalog.as_str()];
        all.extend_from_slice(args);
        ok(riskflow_glue(&all).output().unwrap())
    };
    let list: serde_json::Value = serde_json::from_str(&catalog_cmd(&["--json", "list"])).unwrap();
    let ids: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [0, 1, 2]);
    let show = catalog_cmd(&["show", "2"]);
    assert!(
        show.contains("ema(50)") && show.contains("2012-01-01"),
        "{show}"
    );
    let diff = catalog_cmd(&["diff", "1", "2"]);
    assert!(
        diff.lines()
            .any(|l| l.contains("ma50") && l.contains("sma(50) → ema(50)")),
        "{diff}"
    );
    assert!(
        diff.lines()
            .any(|l| l.contains("ma100") && l.contains("unchanged")),
        "{diff}"
    );

    // Glue's own history: one table version per feature-set version, with the columns and
    // comments of that version.
    let history = boto3(
        "glue = boto3.client('glue', endpoint_url=sys.argv[1])\n\
         pages = glue.get_paginator('get_table_versions').paginate(DatabaseName=sys.argv[2], TableName='loan_features')\n\
         out = []\n\
         for page in pages:\n\
         \x20   for v in page['TableVersions']:\n\
         \x20       t = v['Table']\n\
         \x20       out.append({'glue': int(v['VersionId']), 'version': t['Parameters']['riskflow.version'],\n\
         \x20           'features': json.loads(t['Parameters']['riskflow.features']),\n\
         \x20           'comments': {c['Name']: c.get('Comment', '') for c in t['StorageDescriptor']['Columns'] if c['Name'].startswith('ma')}})\n\
         print(json.dumps(sorted(out, key=lambda v: v['glue'])))",
        &[&database],
    );
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 3, "{history:?}");
    let versions: Vec<&str> = history
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["0", "1", "2"]);
    let columns = |i: usize| -> Vec<String> {
        let mut names: Vec<String> = history[i]["comments"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    };
    assert_eq!(columns(0), ["ma50"]);
    assert_eq!(columns(1), ["ma100", "ma50"]);
    assert_eq!(columns(2), ["ma100", "ma50"]);
    assert_eq!(history[2]["features"]["ma50"], "ema(50)");
    assert_eq!(
        history[2]["comments"]["ma50"],
        "riskflow feature: ema(50) since version 2 (sma(50) in versions 0-1; ema(50) in version 2)"
    );
    assert!(history[1]["comments"]["ma100"]
        .as_str()
        .unwrap()
        .contains("sma(100) since version 1"));

    // Registering the same file again changes nothing in Glue.
    let again = catalog_cmd(&["register", "config/feature_sets/loan_features.toml"]);
    assert_eq!(again.matches("already registered").count(), 3, "{again}");
}

#[test]
fn of_two_racing_glue_registrations_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let version = |id: u32, features: &str| {
        format!(
            "[[versions]]\nid = {id}\napplies_from = \"{}-01-01\"\nfeatures = {{ {features} }}\n",
            2007 + 2 * id
        )
    };
    let base = version(0, "ma50 = \"sma(50)\"");
    let mut files = Vec::new();
    for (name, feature) in [("a", "ma100 = \"sma(100)\""), ("b", "ma200 = \"sma(200)\"")] {
        let path = dir.path().join(format!("{name}.toml"));
        let text = format!(
            "table = \"loan_features\"\n{base}{}",
            version(1, &format!("ma50 = \"sma(50)\", {feature}"))
        );
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    for round in 0..4 {
        let catalog = format!("glue://race{}r{round}", std::process::id());
        let register = |file: &std::path::Path| {
            riskflow_glue(&[
                "catalog",
                "--catalog",
                &catalog,
                "register",
                file.to_str().unwrap(),
            ])
        };
        // Version 0 first, then both version-1 registrations at once.
        let v0 = dir.path().join("v0.toml");
        std::fs::write(&v0, format!("table = \"loan_features\"\n{base}")).unwrap();
        ok(register(&v0).output().unwrap());
        let racers: Vec<_> = files
            .iter()
            .map(|f| {
                register(f)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outcomes: Vec<(bool, String, String)> = racers.into_iter().map(finish).collect();
        let winners: Vec<usize> = (0..2).filter(|&i| outcomes[i].0).collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        eprintln!(
            "round {round}: loser said {}",
            outcomes[1 - winners[0]].2.trim()
        );
        let loser = &outcomes[1 - winners[0]];
        assert!(
            loser.2.contains("registered by someone else")
                || loser
                    .2
                    .contains("already registered with different content"),
            "round {round}: the loser's error is not clear: {}",
            loser.2
        );
        // The catalog holds the winner's version 1.
        let listed = ok(
            riskflow_glue(&["catalog", "--catalog", &catalog, "show", "1"])
                .output()
                .unwrap(),
        );
        let winner_feature = if winners[0] == 0 { "ma100" } else { "ma200" };
        let loser_feature = if winners[0] == 0 { "ma200" } else { "ma100" };
        assert!(
            listed.contains(winner_feature) && !listed.contains(loser_feature),
            "round {round}: {listed}"
        );
    }
}
