//! What `riskflow run` does around the engine: read a dataflow definition (`dataflows/*.toml`),
//! register its feature set in the catalog, open the source and the store, run, and report.

use crate::catalog::{Catalog, CatalogError, GlueUrl, MemoryCatalog};
use crate::checkpoint::PartPosition;
use crate::dataflow::{self, Cluster, EngineOptions, Job, PlanSlot, RunError, RunReport};
use crate::kafka::{partition_count, KafkaError, KafkaSource, OutflowSink, StreamOptions};
use crate::plan::{FeaturePlan, FeatureSetFile, PlanError};
use crate::record::{TextField, YearRange, BASE_COLUMNS};
use crate::sink::{AdoptingSink, FeatureRow, Sink, SinkError, StoreUrl};
use crate::source::{Chunking, FileSource, Source, SourceError};
use serde::Deserialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A dataflow definition file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataflowSpec {
    /// Short name, used in logs and summaries.
    pub name: String,
    /// Application years this dataflow takes from the input (`2007`, `2008-2009`, `2008-`).
    pub years: String,
    /// The feature-set file (relative to this file), which also names the table.
    pub feature_set: PathBuf,
}

/// The dataflows `riskflow run` runs when none is named, in order.
pub const DEFAULT_DATAFLOWS: [&str; 2] = ["dataflows/task1.toml", "dataflows/features.toml"];

/// Built-in copies of the shipped dataflows and feature sets, used when the working directory
/// has no `dataflows/` folder (e.g. an installed binary).
const BUILTIN_FILES: [(&str, &str); 4] = [
    (
        "dataflows/task1.toml",
        include_str!("../dataflows/task1.toml"),
    ),
    (
        "dataflows/features.toml",
        include_str!("../dataflows/features.toml"),
    ),
    (
        "config/feature_sets/risk_score_ma50.toml",
        include_str!("../config/feature_sets/risk_score_ma50.toml"),
    ),
    (
        "config/feature_sets/loan_features.toml",
        include_str!("../config/feature_sets/loan_features.toml"),
    ),
];

/// Errors of a job, each naming what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cannot read dataflow {path}")]
    Read {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("dataflow {path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("backfill: {0}")]
    Backfill(String),
    #[error("process 0 of the cluster has not prepared the store: {0}")]
    Waiting(String),
}

/// A dataflow definition with its feature set loaded.
#[derive(Clone, Debug)]
pub struct LoadedDataflow {
    pub name: String,
    pub years: YearRange,
    pub feature_set: FeatureSetFile,
    /// A backfill: every row of `years` gets this version (see [`LoadedDataflow::backfill`]).
    pub pinned: Option<u32>,
}

impl LoadedDataflow {
    /// Loads a dataflow file, falling back to the built-in copy of a shipped one.
    pub fn load(path: &Path) -> Result<LoadedDataflow, JobError> {
        let text = read_or_builtin(path)?;
        let spec: DataflowSpec = toml::from_str(&text).map_err(|e| JobError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let years = spec.years.parse().map_err(|message| JobError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        let set_path = path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&spec.feature_set);
        let set_text = read_or_builtin(&set_path)?;
        let feature_set = FeatureSetFile::parse(&set_path, &set_text)?;
        Ok(LoadedDataflow {
            name: spec.name,
            years,
            feature_set,
            pinned: None,
        })
    }

    /// The backfill of `version` over `years`: every row of those years is computed under that
    /// version, its windows starting where the replay starts, and stored beside the versions
    /// already there. It keeps a checkpoint of its own, so a rerun is a no-op.
    pub fn backfill(&self, version: u32, years: YearRange) -> LoadedDataflow {
        LoadedDataflow {
            name: format!("backfill v{version} of {}", self.name),
            years,
            feature_set: self.feature_set.clone(),
            pinned: Some(version),
        }
    }

    /// The checkpoint identity of this dataflow over a source: a backfill's is its own.
    fn identity(&self, source: String) -> String {
        match self.pinned {
            Some(version) => format!("backfill v{version}: {source}"),
            None => source,
        }
    }
}

fn read_or_builtin(path: &Path) -> Result<String, JobError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let wanted = normalize(path);
            BUILTIN_FILES
                .iter()
                .find(|(name, _)| Path::new(name) == wanted)
                .map(|(_, text)| text.to_string())
                .ok_or(JobError::Read {
                    path: path.to_owned(),
                    error,
                })
        }
        Err(error) => Err(JobError::Read {
            path: path.to_owned(),
            error,
        }),
    }
}

/// `dataflows/../config/x.toml` → `config/x.toml`, lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Where a run reads and writes, and how.
#[derive(Clone, Debug)]
pub struct RunTarget {
    pub input: PathBuf,
    pub store: StoreUrl,
    /// Keep the versions in Glue rather than in the store's own catalog.
    pub catalog: Option<GlueUrl>,
    pub engine: EngineOptions,
    pub chunking: Chunking,
}

/// Registers a dataflow's versions in the catalog (Glue, or the store's own) and opens the
/// store (not yet prepared, so that it can be wrapped first). `source` is the input's identity,
/// under which the store keeps the run's checkpoint.
fn open_store(
    dataflow: &LoadedDataflow,
    store: &StoreUrl,
    glue: Option<&GlueUrl>,
    source: String,
) -> Result<(Job, Box<dyn Sink>), JobError> {
    let table = &dataflow.feature_set.table;
    let mut catalog: Box<dyn Catalog> = match (store, glue) {
        (StoreUrl::Csv(_), None) => Box::new(MemoryCatalog::default()),
        _ => crate::catalog::open(store, glue)?,
    };
    let plan = catalog.register_all(table, &dataflow.feature_set.versions)?;
    if let Some(version) = dataflow
        .pinned
        .filter(|&v| v as usize >= plan.versions.len())
    {
        return Err(JobError::Backfill(format!(
            "`{table}` has no version {version} (registered: 0 to {})",
            plan.versions.len() - 1
        )));
    }
    let sink = store.open(table)?;
    let job = Job {
        years: dataflow.years,
        plan,
        source,
        resume: None,
        pinned: dataflow.pinned,
    };
    Ok((job, sink))
}

/// Prepares the store for the job's plan and reads where the job resumes.
///
/// A backfill that has not started yet is refused when its version already has rows in its
/// years: it stores beside other versions, never over its own.
fn prepare(job: &mut Job, sink: &mut dyn Sink, history_rows: usize) -> Result<(), JobError> {
    sink.prepare(&job.plan)?;
    read_resume(job, sink, history_rows)?;
    if let (Some(version), None) = (job.pinned, &job.resume) {
        let (first, last) = job.years.dates();
        let stored = sink.stored_rows(version, first, last)?;
        if stored > 0 {
            return Err(JobError::Backfill(format!(
                "version {version} of `{}` already has {stored} rows dated {first} to {last}; a backfill stores beside the other versions, never over its own (choose years without them)",
                job.plan.table
            )));
        }
    }
    Ok(())
}

/// Reads where the job resumes: the store's last checkpoint for this source, unless it lacks the
/// window of a definition registered since (then the job starts over from the first row, which
/// recomputes that feature exactly; rows already stored are kept as they are). A resumed job
/// also gets the recent scores a stream keeps for live versions.
fn read_resume(job: &mut Job, sink: &mut dyn Sink, history_rows: usize) -> Result<(), JobError> {
    job.resume = sink.resume(&job.source, &job.plan)?;
    if let Some(resume) = job.resume.as_mut().filter(|_| history_rows > 0) {
        resume.history = sink.recent_scores(history_rows)?;
    }
    if let Some(resume) = &job.resume {
        if let Err(missing) = resume.checkpoint.windows(&job.plan.definitions()) {
            tracing::warn!(table = job.plan.table.as_str(), definition = %missing,
                "The store's checkpoint has no window for this definition: starting from the first row.");
            job.resume = None;
        } else {
            tracing::info!(table = job.plan.table.as_str(), source = job.source.as_str(),
                epoch = resume.checkpoint.epoch, position = ?resume.checkpoint.position,
                "Resuming after the store's last checkpoint.");
        }
    }
    Ok(())
}

/// How long a cluster process other than 0 waits for process 0 to register the versions and
/// prepare the store.
const LEADER_WAIT: Duration = Duration::from_secs(120);

/// On a cluster process other than 0: waits until process 0 has registered the dataflow's
/// versions and prepared the store, then reads the plan (to prepare its sink). The run itself
/// takes process 0's plan and checkpoint, which worker 0 sends to every worker
/// ([`dataflow::run`]).
///
/// On a shared store (a server) it also returns the sink this process writes its rows with;
/// a file store is written by process 0 alone.
fn follow_leader(
    dataflow: &LoadedDataflow,
    store: &StoreUrl,
    glue: Option<&GlueUrl>,
    source: String,
) -> Result<(Job, Option<Box<dyn Sink>>), JobError> {
    let table = &dataflow.feature_set.table;
    let attempt = || -> Result<(Job, Option<Box<dyn Sink>>), JobError> {
        // A CSV export keeps no catalog: its versions are those of the dataflow's file, as on
        // process 0.
        let versions = match (store, glue) {
            (StoreUrl::Csv(_), None) => {
                MemoryCatalog::default()
                    .register_all(table, &dataflow.feature_set.versions)?
                    .versions
            }
            _ => crate::catalog::open(store, glue)?.versions(table)?,
        };
        for version in &dataflow.feature_set.versions {
            if crate::catalog::plan_registration(table, &versions, version)?.is_some() {
                return Err(JobError::Waiting(format!(
                    "version {} of `{table}` is not registered yet",
                    version.id
                )));
            }
        }
        let job = Job {
            years: dataflow.years,
            plan: crate::plan::FeaturePlan::new(table, versions)?,
            source: source.clone(),
            resume: None,
            pinned: dataflow.pinned,
        };
        if !store.is_shared() {
            return Ok((job, None));
        }
        let mut rows: Box<dyn Sink> = Box::new(AdoptingSink(store.open(table)?));
        rows.prepare(&job.plan)
            .map_err(|e| JobError::Waiting(e.to_string()))?;
        Ok((job, Some(rows)))
    };
    let deadline = std::time::Instant::now() + LEADER_WAIT;
    loop {
        match attempt() {
            Ok(followed) => return Ok(followed),
            Err(error) if std::time::Instant::now() < deadline => {
                tracing::debug!(table = table.as_str(), %error, "Waiting for process 0 to prepare the store.");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(error) => return Err(error),
        }
    }
}

/// Where a run resumes in its source: the checkpoint's position of `part`.
fn resume_at(job: &Job, part: i32) -> Option<PartPosition> {
    job.resume
        .as_ref()
        .and_then(|r| r.checkpoint.position.get(&part).copied())
}

/// The engine options of a job writing `store`: on a shared store (a server), every worker of
/// every process writes the rows routed to it.
fn engine_for(engine: &EngineOptions, store: &StoreUrl) -> EngineOptions {
    EngineOptions {
        every_worker_writes: store.is_shared(),
        ..engine.clone()
    }
}

/// This process's store connections, one per worker that writes: `first` (the first worker's;
/// `None` when this process writes nothing), then, when every worker writes, one for each other
/// worker of the process, taking on the prepared plan without DDL. `wrap` adds to each what
/// `first` has (a stream's outflow topic).
fn worker_sinks(
    first: Option<Box<dyn Sink>>,
    store: &StoreUrl,
    plan: &FeaturePlan,
    engine: &EngineOptions,
    wrap: impl Fn(Box<dyn Sink>) -> Result<Box<dyn Sink>, JobError>,
) -> Result<Vec<Box<dyn Sink>>, JobError> {
    let Some(first) = first else {
        return Ok(Vec::new());
    };
    let mut sinks = vec![first];
    if engine.every_worker_writes {
        for _ in 1..engine.workers.max(1) {
            let mut sink = wrap(Box::new(AdoptingSink(store.open(&plan.table)?)))?;
            sink.prepare(plan)?;
            sinks.push(sink);
        }
    }
    Ok(sinks)
}

/// Runs one dataflow: registers its versions, prepares the store, streams the input through.
/// In a cluster, process 0 does all three (its worker 0 reads the file and writes the
/// checkpoints); the other processes parse, compute and, on a shared store, write their rows.
pub fn run_dataflow(dataflow: &LoadedDataflow, target: &RunTarget) -> Result<RunReport, JobError> {
    let identity = dataflow.identity(file_identity(&target.input, dataflow));
    let engine = engine_for(&target.engine, &target.store);
    tracing::info!(dataflow = dataflow.name.as_str(), table = dataflow.feature_set.table.as_str(), years = %dataflow.years,
        input = %target.input.display(), store = %target.store, workers = engine.workers, cluster = ?engine.cluster, "Running dataflow.");
    if !Cluster::leads(engine.cluster.as_ref()) {
        let (job, rows) =
            follow_leader(dataflow, &target.store, target.catalog.as_ref(), identity)?;
        let sinks = worker_sinks(rows, &target.store, &job.plan, &engine, Ok)?;
        return Ok(dataflow::run(
            &job,
            Box::new(|_, _, _| Ok(None)),
            sinks,
            engine,
        )?);
    }
    let (mut job, mut sink) =
        open_store(dataflow, &target.store, target.catalog.as_ref(), identity)?;
    prepare(&mut job, &mut *sink, engine.history_rows)?;
    let source = FileSource::open(&target.input, target.chunking, resume_at(&job, 0))?;
    let sinks = worker_sinks(Some(sink), &target.store, &job.plan, &engine, Ok)?;
    Ok(dataflow::run(
        &job,
        dataflow::single_source(Box::new(source)),
        sinks,
        engine,
    )?)
}

/// A file's identity for checkpoints: its absolute path and size, and the dataflow's years, so
/// that another file (or the same path rewritten) never resumes from this one's position.
fn file_identity(path: &Path, dataflow: &LoadedDataflow) -> String {
    if let Some(url) = path.to_str().filter(|p| p.starts_with("s3://")) {
        return format!("{url} (years {})", dataflow.years);
    }
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    format!(
        "file:{} ({size} bytes, years {})",
        absolute.display(),
        dataflow.years
    )
}

/// Where a stream reads and writes, and how.
#[derive(Clone, Debug)]
pub struct StreamTarget {
    pub stream: StreamOptions,
    pub store: StoreUrl,
    /// Keep the versions in Glue rather than in the store's own catalog.
    pub catalog: Option<GlueUrl>,
    /// Also publish stored rows to this topic (Kafka Connect JSON).
    pub outflow_topic: Option<String>,
    /// How often to look for newly registered versions (live versions); `None`: never.
    pub catalog_poll: Option<Duration>,
    pub engine: EngineOptions,
}

/// How often a stream looks for its topic before the producer has created it.
const TOPIC_WAIT: Duration = Duration::from_millis(200);

/// Runs one dataflow over the inflow topic: each worker reads its partitions; the run ends on
/// the producer's final marker (`until_complete`) or when `engine.stop` is raised.
pub fn stream_dataflow(
    dataflow: &LoadedDataflow,
    target: &StreamTarget,
) -> Result<RunReport, JobError> {
    let options = &target.stream;
    let identity = dataflow.identity(format!(
        "kafka:{} (years {})",
        options.topic, dataflow.years
    ));
    let leads = Cluster::leads(target.engine.cluster.as_ref());
    let (job, sink) = if leads {
        let (mut job, mut sink) =
            open_store(dataflow, &target.store, target.catalog.as_ref(), identity)?;
        if let Some(topic) = &target.outflow_topic {
            sink = Box::new(OutflowSink::new(
                sink,
                &options.brokers,
                topic,
                &dataflow.feature_set.table,
            )?);
        }
        prepare(&mut job, &mut *sink, target.engine.history_rows)?;
        (job, Some(sink))
    } else {
        let (job, rows) =
            follow_leader(dataflow, &target.store, target.catalog.as_ref(), identity)?;
        let rows = match (&target.outflow_topic, rows) {
            (Some(topic), Some(sink)) => {
                let mut outflow =
                    OutflowSink::new(sink, &options.brokers, topic, &dataflow.feature_set.table)?;
                outflow.prepare(&job.plan)?;
                Some(Box::new(outflow) as Box<dyn Sink>)
            }
            (_, rows) => rows,
        };
        (job, rows)
    };
    let stopped = || {
        target
            .engine
            .stop
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
    };
    let partitions = loop {
        if let Some(count) = partition_count(&options.brokers, &options.topic)? {
            break count;
        }
        if stopped() {
            return Ok(RunReport {
                stopped_early: true,
                ..RunReport::default()
            });
        }
        tracing::info!(
            topic = options.topic.as_str(),
            "Waiting for the topic to be created."
        );
        std::thread::sleep(TOPIC_WAIT);
    };
    tracing::info!(dataflow = dataflow.name.as_str(), table = dataflow.feature_set.table.as_str(), years = %dataflow.years,
        topic = options.topic.as_str(), partitions, store = %target.store, workers = target.engine.workers, "Streaming dataflow.");
    let stream = options.clone();
    let sources: dataflow::SourceFactory = Box::new(move |index, workers, from| {
        KafkaSource::open(&stream, partitions, from, index, workers)
            .map(|source| source.map(|s| Box::new(s) as Box<dyn Source>))
            .map_err(|e| SourceError::Kafka(e.to_string()))
    });
    let mut engine = engine_for(&target.engine, &target.store);
    let outflow = |sink: Box<dyn Sink>| -> Result<Box<dyn Sink>, JobError> {
        Ok(match &target.outflow_topic {
            Some(topic) => Box::new(OutflowSink::new(
                sink,
                &options.brokers,
                topic,
                &dataflow.feature_set.table,
            )?),
            None => sink,
        })
    };
    let sinks = worker_sinks(sink, &target.store, &job.plan, &engine, outflow)?;
    let has_catalog = target.catalog.is_some() || !matches!(target.store, StoreUrl::Csv(_));
    // The catalog watcher runs where worker 0 is: it feeds the plan input of that worker.
    let watcher = match target.catalog_poll.filter(|_| has_catalog && leads) {
        Some(poll) => {
            let slot = Arc::new(PlanSlot::default());
            engine.live_plans = Some(Arc::clone(&slot));
            let done = Arc::new(AtomicBool::new(false));
            let watched = CatalogSource {
                store: target.store.clone(),
                glue: target.catalog.clone(),
                evolve_store_first: engine.every_worker_writes,
            };
            let thread = watch_catalog(watched, job.plan.clone(), poll, slot, Arc::clone(&done));
            Some((thread, done))
        }
        None => None,
    };
    let report = dataflow::run(&job, sources, sinks, engine);
    if let Some((thread, done)) = watcher {
        done.store(true, Ordering::Relaxed);
        let _ = thread.join();
    }
    Ok(report?)
}

/// Where the catalog watcher reads versions: Glue, or the store's own catalog.
struct CatalogSource {
    store: StoreUrl,
    glue: Option<GlueUrl>,
    /// Add a newer plan's columns and views to the store before offering the plan: where every
    /// worker writes, the other workers' writers take it on without DDL and may write rows under
    /// it before worker 0 writes that epoch.
    evolve_store_first: bool,
}

/// Looks at the catalog every `poll` until `done`, and offers each newer plan of the table (the
/// versions running, and more) to the engine. A catalog that cannot be read is retried at the
/// next poll; the stream goes on meanwhile.
fn watch_catalog(
    source: CatalogSource,
    running: FeaturePlan,
    poll: Duration,
    slot: Arc<PlanSlot>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let table = running.table.clone();
    let (store, evolve_store_first) = (source.store.clone(), source.evolve_store_first);
    let evolve_store = move |plan: &FeaturePlan| -> Result<(), SinkError> {
        if evolve_store_first {
            store.open(&plan.table)?.prepare(plan)?;
        }
        Ok(())
    };
    let look = move |catalog: &mut Option<Box<dyn Catalog>>, running: &FeaturePlan| {
        let catalog = match catalog {
            Some(catalog) => catalog,
            None => catalog.insert(crate::catalog::open(&source.store, source.glue.as_ref())?),
        };
        let versions = catalog.versions(&running.table)?;
        if versions.len() <= running.versions.len() {
            return Ok(None);
        }
        Ok::<_, CatalogError>(Some(FeaturePlan::new(&running.table, versions)?))
    };

    std::thread::Builder::new()
        .name("riskflow-catalog".into())
        .spawn(move || {
            let mut running = running;
            let mut catalog = None;
            while !sleep_unless(&done, poll) {
                match look(&mut catalog, &running) {
                    Ok(None) => {}
                    Ok(Some(newer)) if newer.versions.starts_with(&running.versions) => {
                        if let Err(error) = evolve_store(&newer) {
                            tracing::warn!(table = table.as_str(), error = %error,
                                "Cannot add the new version's columns to the store; trying again at the next poll.");
                            continue;
                        }
                        let version = newer.versions.last().expect("a version");
                        tracing::info!(table = table.as_str(), version = version.id, applies_from = %version.applies_from,
                            "A new feature-set version was registered: the stream takes it on without a restart.");
                        slot.offer(newer.clone());
                        running = newer;
                    }
                    Ok(Some(_)) => tracing::error!(table = table.as_str(),
                        "The catalog's versions no longer begin with those this stream runs; ignoring them (restart the stream)."),
                    Err(error) => {
                        tracing::warn!(table = table.as_str(), error = %error,
                            "Cannot read the catalog; looking again at the next poll.");
                        catalog = None;
                    }
                }
            }
        })
        .expect("spawn the catalog watcher")
}

/// Sleeps `period` in short steps; returns early (true) once `done` is raised.
fn sleep_unless(done: &AtomicBool, period: Duration) -> bool {
    let until = std::time::Instant::now() + period;
    loop {
        if done.load(Ordering::Relaxed) {
            return true;
        }
        let now = std::time::Instant::now();
        if now >= until {
            return false;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// A human summary of a run, with the first rows of each version like the original snapshots.
pub fn summarize(dataflow: &LoadedDataflow, report: &RunReport) -> String {
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let mut out = String::new();
    let per_version: Vec<String> = report
        .stored
        .iter()
        .map(|(v, n)| format!("v{v}: {n}"))
        .collect();
    writeln!(
        out,
        "{} → {} (years {}): read {} records in {:.2} s ({:.0} records/s); stored {} ({}), filtered {}, dead-lettered {}",
        dataflow.name,
        dataflow.feature_set.table,
        dataflow.years,
        report.records_read,
        secs,
        report.records_read as f64 / secs,
        report.stored_total(),
        if per_version.is_empty() { "none".to_owned() } else { per_version.join(", ") },
        report.filtered,
        report.dead_lettered,
    )
    .expect("string");
    for (version, rows) in &report.first_rows {
        let Some(v) = dataflow
            .feature_set
            .versions
            .iter()
            .find(|v| v.id == *version)
        else {
            continue;
        };
        writeln!(out, "\nfirst rows of version {version}:").expect("string");
        let mut header: Vec<&str> = BASE_COLUMNS.to_vec();
        header.extend(v.features.keys().map(String::as_str));
        header.extend(["_row", "_version"]);
        let body: Vec<Vec<String>> = rows.iter().map(display_row).collect();
        out.push_str(&markdown_table(&header, &body));
    }
    out
}

fn display_row(row: &FeatureRow) -> Vec<String> {
    let loan = row.row();
    let number = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.1}"));
    let mut cells = vec![
        number(loan.amount_requested),
        loan.application_date.to_string(),
        loan.text(TextField::LoanTitle).replace('\n', " "),
        loan.risk_score.map_or(String::new(), |x| format!("{x}")),
        loan.text(TextField::DebtToIncomeRatio).to_owned(),
        loan.text(TextField::ZipCode).to_owned(),
        loan.text(TextField::State).to_owned(),
        loan.text(TextField::EmploymentLength).to_owned(),
        loan.text(TextField::PolicyCode).to_owned(),
    ];
    cells.extend(row.values.iter().map(|v| {
        v.map_or(String::new(), |x| {
            format!("{}", (x * 100.0).round() / 100.0)
        })
    }));
    cells.push(loan.row.to_string());
    cells.push(row.version.to_string());
    cells
}

fn markdown_table(header: &[&str], body: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            body.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(header.to_vec());
    out.push_str(&format!(
        "|{}|\n",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    ));
    for row in body {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}
