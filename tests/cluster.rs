//! Cluster mode: several `riskflow` processes on loopback as one timely computation. The store
//! must equal the one-process, one-worker run; a process that dies takes the others down
//! promptly, and restarting the whole cluster completes the run exactly once.

use crate::common::*;
use crate::kafka::{assert_tables_equal, brokers, fresh_topic, produce, stored};
use std::path::Path;
use std::time::{Duration, Instant};

/// A hostfile with `processes` free loopback ports.
pub fn hostfile(dir: &Path, processes: usize) -> String {
    let ports: Vec<String> = (0..processes)
        .map(|_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("127.0.0.1:{}", listener.local_addr().unwrap().port())
        })
        .collect();
    let path = dir.join(format!("hosts-{}", ports[0].replace(':', "-")));
    std::fs::write(&path, ports.join("\n") + "\n").unwrap();
    path.to_str().unwrap().to_owned()
}

/// Starts every process of a cluster running `args` (`-n`, `-p`, `--hostfile` added).
pub fn start_cluster(args: &[String], processes: usize, hosts: &str) -> Vec<Running> {
    (0..processes)
        .map(|p| {
            let mut all = args.to_vec();
            all.extend(
                [
                    "-n",
                    &processes.to_string(),
                    "-p",
                    &p.to_string(),
                    "--hostfile",
                    hosts,
                ]
                .map(String::from),
            );
            spawn_riskflow(&all)
        })
        .collect()
}

/// Waits for every process; fails with their stderr if one fails. Returns their outputs.
pub fn finish_cluster(children: Vec<Running>) -> Vec<String> {
    children
        .into_iter()
        .enumerate()
        .map(|(p, child)| {
            let (ok, stdout, stderr) = finish(child);
            assert!(ok, "process {p} failed: {stderr}");
            stdout
        })
        .collect()
}

fn run_args(input: &Path, db: &Path, workers: u32) -> Vec<String> {
    cluster_run_args(input, &sqlite_store(db), workers)
}

/// A `run` of the features dataflow into `store` with small epochs (many commits).
pub fn cluster_run_args(input: &Path, store: &str, workers: u32) -> Vec<String> {
    [
        "run",
        "dataflows/features.toml",
        "--input",
        input.to_str().unwrap(),
        "--store",
        store,
        "-w",
        &workers.to_string(),
        "--epoch-rows",
        "4096",
        "-q",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn two_processes_of_two_workers_store_what_one_worker_stores() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 40_000, "2007-2013", &["--quirks"]);
    let single = dir.path().join("single.db");
    run_features(&input, &sqlite_store(&single));

    // From a file.
    let db = dir.path().join("file.db");
    let hosts = hostfile(dir.path(), 2);
    finish_cluster(start_cluster(&run_args(&input, &db, 2), 2, &hosts));
    assert_tables_equal(&single, &db, "file, 2 processes × 2 workers");

    // Into a CSV export (no catalog of its own): byte for byte the one-process file.
    let csv_args = |out: &Path, workers: &str| -> Vec<String> {
        [
            "run",
            "dataflows/features.toml",
            "--input",
            input.to_str().unwrap(),
            "--store",
            &format!("csv:{}", out.display()),
            "-w",
            workers,
            "-q",
        ]
        .map(String::from)
        .to_vec()
    };
    let (one, two) = (dir.path().join("one.csv"), dir.path().join("two.csv"));
    let args = csv_args(&one, "1");
    riskflow_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let hosts = hostfile(dir.path(), 2);
    finish_cluster(start_cluster(&csv_args(&two, "2"), 2, &hosts));
    assert!(
        std::fs::read(&one).unwrap() == std::fs::read(&two).unwrap(),
        "the cluster's CSV differs from the one-process CSV"
    );

    // From Kafka: the four workers of both processes share the topic's partitions.
    let topic = fresh_topic("cluster");
    produce(&input, &topic, 5, &["--years", "2008-"]);
    let db = dir.path().join("kafka.db");
    let args: Vec<String> = [
        "stream",
        "--brokers",
        &brokers(),
        "--topic",
        &topic,
        "--store",
        &sqlite_store(&db),
        "-w",
        "2",
        "--until-complete",
        "-q",
    ]
    .map(String::from)
    .to_vec();
    let hosts = hostfile(dir.path(), 2);
    finish_cluster(start_cluster(&args, 2, &hosts));
    assert_tables_equal(&single, &db, "Kafka, 2 processes × 2 workers");
}

#[test]
fn a_dead_process_stops_the_others_and_a_restarted_cluster_completes_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 400_000, "2007-2013", &[]);
    let single = dir.path().join("single.db");
    run_features(&input, &sqlite_store(&single));

    let db = dir.path().join("cluster.db");
    let hosts = hostfile(dir.path(), 2);
    let mut cluster = start_cluster(&run_args(&input, &db, 1), 2, &hosts);
    wait_until("the cluster to store rows", Duration::from_secs(60), || {
        stored(&db) > 0
    });
    cluster[1].kill().unwrap();
    let killed_at = Instant::now();
    let survivor = cluster.remove(0);
    let (ok, _, stderr) = finish(survivor);
    assert!(!ok, "process 0 exited successfully after its peer died");
    assert!(
        killed_at.elapsed() < Duration::from_secs(15),
        "process 0 took {:?} to stop",
        killed_at.elapsed()
    );
    assert!(
        stderr.contains("a process of the cluster went away"),
        "{stderr}"
    );
    let _ = finish(cluster.remove(0));
    let partial = stored(&db);
    assert!(partial > 0, "something was committed before the kill");

    // Restart the whole cluster: it resumes from the last committed epoch.
    let hosts = hostfile(dir.path(), 2);
    finish_cluster(start_cluster(&run_args(&input, &db, 1), 2, &hosts));
    assert_tables_equal(&single, &db, "restarted cluster");
    assert_eq!(
        count(&db, "SELECT count(*) FROM (SELECT _row, _version FROM loan_features GROUP BY 1, 2 HAVING count(*) > 1)"),
        0
    );
}

#[test]
fn processes_started_with_different_settings_refuse_to_form_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 2_000, "2007-2013", &[]);
    let hosts = hostfile(dir.path(), 2);
    let process = |p: &str, workers: u32| {
        let mut args = cluster_run_args(&input, &sqlite_store(&dir.path().join("x.db")), workers);
        args.extend(["-n", "2", "-p", p, "--hostfile", &hosts].map(String::from));
        spawn_riskflow(&args)
    };
    let (zero, one) = (process("0", 1), process("1", 2));
    for (p, child) in [zero, one].into_iter().enumerate() {
        let (ok, _, stderr) = finish(child);
        assert!(!ok, "process {p} ran in a cluster of mismatched processes");
        assert!(
            stderr.contains("every process of a cluster needs the same -n and -w"),
            "process {p}: {stderr}"
        );
    }
}

#[test]
fn only_process_0_creates_a_csv_export() {
    let dir = tempfile::tempdir().unwrap();
    let input = generate(dir.path(), "in.csv", 5_000, "2007-2013", &[]);
    let hosts = hostfile(dir.path(), 2);
    let (mine, elsewhere) = (dir.path().join("p0.csv"), dir.path().join("p1.csv"));
    let children = [&mine, &elsewhere]
        .into_iter()
        .enumerate()
        .map(|(p, out)| {
            let mut args = cluster_run_args(&input, &format!("csv:{}", out.display()), 1);
            args.extend(["-n", "2", "-p", &p.to_string(), "--hostfile", &hosts].map(String::from));
            spawn_riskflow(&args)
        })
        .collect();
    finish_cluster(children);
    assert!(std::fs::metadata(&mine).unwrap().len() > 0);
    assert!(
        !elsewhere.exists(),
        "process 1 created the CSV export at its own path"
    );
}
