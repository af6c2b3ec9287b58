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

#[test]
fn settings_come_from_the_profile_then_the_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 200, "2008-2009", &[]);
    let store = |name: &str| sqlite_store(&dir.path().join(format!("{name}.db")));
    let profile = dir.path().join("profile.toml");
    std::fs::write(
        &profile,
        format!("store = \"{}\"\nworkers = 2\n", store("file")),
    )
    .unwrap();
    let run = |env_store: Option<String>, flag_store: Option<String>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_riskflow"));
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("RISKFLOW_STORE")
            .args([
                "--config",
                profile.to_str().unwrap(),
                "run",
                "dataflows/features.toml",
            ])
            .args(["--input", input.to_str().unwrap(), "-q"]);
        if let Some(store) = env_store {
            command.env("RISKFLOW_STORE", store);
        }
        if let Some(store) = flag_store {
            command.args(["--store", &store]);
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let exists = |name: &str| dir.path().join(format!("{name}.db")).exists();

    run(None, None);
    assert!(exists("file"), "the profile's store is used");
    run(Some(store("env")), None);
    assert!(exists("env"), "the environment overrides the profile");
    run(Some(store("env2")), Some(store("flag")));
    assert!(exists("flag") && !exists("env2"), "a flag overrides both");

    std::fs::write(&profile, "store = \"sqlite:x.db\"\nbrokerz = \"h:1\"\n").unwrap();
    let out = riskflow(&["--config", profile.to_str().unwrap(), "status"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("brokerz"),
        "the unknown key is named: {stderr}"
    );

    // The catalog comes from the profile too (checked without AWS: a malformed URL is refused).
    std::fs::write(&profile, "catalog = \"glue:/nope\"\n").unwrap();
    let out = riskflow(&["--config", profile.to_str().unwrap(), "catalog", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("`glue:/nope` is not a Glue catalog"),
        "{stderr}"
    );
}

#[test]
fn passwords_are_never_printed() {
    // An unreachable server with a password in its URL: the error names the store, not the secret.
    let out = riskflow(&[
        "status",
        "--store",
        "postgres://ann:hunter2@127.0.0.1:1/riskflow",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ann:***@127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn plot_draws_a_png_with_every_series_and_refuses_an_empty_range() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 20_000, "2008-2013", &[]);
    let db = dir.path().join("p.db");
    let store = sqlite_store(&db);
    run_features(&input, &store);
    let out = dir.path().join("chart.png");
    let summary = riskflow_ok(&["plot", "--store", &store, "--out", out.to_str().unwrap()]);
    for series in [
        "risk_score (daily mean)",
        "ma50 = sma(50)",
        "ma100 = sma(100)",
        "ma50 = ema(50)",
    ] {
        assert!(summary.contains(series), "{summary}");
    }
    let decoder = png::Decoder::new(std::fs::File::open(&out).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), (1200, 620));
    let size = std::fs::metadata(&out).unwrap().len();
    assert!((10_000..2_000_000).contains(&size), "{size} bytes");
    // Each series' colour is on the picture (the palette of src/plot.rs, in series order).
    let has = |rgb: [u8; 3]| pixels.chunks(3).any(|p| p == rgb);
    for rgb in [
        [170, 170, 170],
        [31, 119, 180],
        [214, 39, 40],
        [44, 160, 44],
    ] {
        assert!(has(rgb), "no {rgb:?} pixels");
    }

    let empty = riskflow(&[
        "plot",
        "--store",
        &store,
        "--out",
        dir.path().join("none.png").to_str().unwrap(),
        "--from",
        "2030-01-01",
    ]);
    assert!(!empty.status.success());
    let stderr = String::from_utf8_lossy(&empty.stderr);
    assert!(stderr.contains("nothing to plot"), "{stderr}");
    assert!(!dir.path().join("none.png").exists(), "no empty picture");
}

#[test]
fn counts_of_zero_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 50, "2008-2008", &[]);
    let store = sqlite_store(&dir.path().join("out.db"));
    let run = [
        "run",
        "dataflows/features.toml",
        "--input",
        input.to_str().unwrap(),
        "--store",
        &store,
    ];
    let refused = |args: &[&str], flag: &str| {
        let out = riskflow(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && stderr.contains(&format!("invalid value '0' for '{flag}"))
                && stderr.contains("must be at least 1"),
            "{args:?}: {stderr}"
        );
    };
    refused(&[&run[..], &["-w", "0"]].concat(), "--workers");
    refused(&[&run[..], &["-n", "0"]].concat(), "--processes");
    refused(&[&run[..], &["--epoch-rows", "0"]].concat(), "--epoch-rows");
    let produce = [
        "produce",
        "--brokers",
        "127.0.0.1:1",
        "--input",
        input.to_str().unwrap(),
    ];
    refused(
        &[&produce[..], &["--partitions", "0"]].concat(),
        "--partitions",
    );
    refused(
        &[&produce[..], &["--marker-rows", "0"]].concat(),
        "--marker-rows",
    );
    refused(
        &[&produce[..], &["--marker-interval-ms", "0"]].concat(),
        "--marker-interval-ms",
    );
    // A profile's value goes through the same check.
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, "workers = 0\n").unwrap();
    refused(
        &[&["--config", profile.to_str().unwrap()][..], &run[..]].concat(),
        "--workers",
    );
    assert!(!dir.path().join("out.db").exists(), "nothing ran");
}
