//! Command-line interface: one subcommand per job; every flag can also come from a
//! `RISKFLOW_*` environment variable, and connection settings from a profile file
//! ([`crate::profile`]).

use crate::catalog::GlueUrl;
use crate::dataflow::{Cluster, EngineOptions, RunReport};
use crate::gen::{generate, GenOptions};
use crate::job::{
    run_dataflow, stream_dataflow, summarize, LoadedDataflow, RunTarget, StreamTarget,
    DEFAULT_DATAFLOWS,
};
use crate::kafka::{produce, MessageFormat, ProduceOptions, StreamOptions};
use crate::record::{Date, YearRange};
use crate::sink::{S3Staging, StoreUrl};
use crate::source::Chunking;
use crate::{metrics, plot, status};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "riskflow",
    version,
    about = "Versioned rolling features over loan applications, on timely dataflow."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (e.g. `info`, `riskflow=debug`).
    #[arg(long, global = true, env = "RISKFLOW_LOG", default_value = "warn")]
    pub log: String,
    /// A profile of settings (store, brokers, topic, workers, …; see config/local.toml) that the
    /// environment and flags override.
    #[arg(long, global = true, env = "RISKFLOW_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log lines as readable text or as JSON objects (one per line, fields flattened).
    #[arg(long, global = true, env = "RISKFLOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written (to stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run dataflows over a file into a store (default: both shipped dataflows, a generated
    /// 2007-2013 sample, ./riskflow.db).
    Run(RunArgs),
    /// Generate a deterministic file in the rejected-loans layout.
    Gen(GenArgs),
    /// Replay chosen years of a file onto a Kafka topic as a live stream.
    Produce(ProduceArgs),
    /// Consume a Kafka topic's partitions into the versioned feature store, live.
    Stream(StreamArgs),
    /// Show what a store holds and where each dataflow stands (and, given the brokers, the lag
    /// behind each partition).
    Status(StatusArgs),
    /// Draw a table's daily means (risk_score and each feature definition) as a PNG, with the
    /// version boundaries marked.
    Plot(PlotArgs),
    /// List, show, compare, register and validate feature-set versions in a store's catalog.
    Catalog(CatalogArgs),
    /// Compute one version over past years (from a file or a topic) and store it beside the
    /// versions already there.
    Backfill(BackfillArgs),
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Dataflow definition whose table to backfill (default: dataflows/features.toml).
    pub dataflow: Option<PathBuf>,
    /// The version to compute (it must be registered).
    #[arg(long)]
    pub version: u32,
    /// Application years to compute it over, e.g. 2008-2011; its windows start at the first
    /// row of these years.
    #[arg(long)]
    pub years: YearRange,
    /// Replay this file (or s3://bucket/key)…
    #[arg(long, env = "RISKFLOW_INPUT")]
    pub input: Option<PathBuf>,
    /// …or this Kafka cluster's topic, from its start to the producer's final marker.
    #[arg(long, env = "RISKFLOW_BROKERS")]
    pub brokers: Option<String>,
    /// The topic to replay.
    #[arg(long, env = "RISKFLOW_TOPIC", default_value = "inflow")]
    pub topic: String,
    /// How the topic's rows are encoded.
    #[arg(long, value_enum, default_value_t = MessageFormat::Riskflow)]
    pub format: MessageFormat,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Worker threads.
    #[arg(short = 'w', long, env = "RISKFLOW_WORKERS", default_value_t = 1, value_parser = at_least_one::<usize>)]
    pub workers: usize,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Records per epoch (file input).
    #[arg(long, env = "RISKFLOW_EPOCH_ROWS", default_value_t = Chunking::EPOCH_ROWS, value_parser = at_least_one::<u64>)]
    pub epoch_rows: u64,
    /// Print only the one-line summary.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// The store whose catalog to use: sqlite:PATH, postgres://… or redshift://….
    #[arg(long, env = "RISKFLOW_STORE", default_value = "sqlite:riskflow.db")]
    pub store: StoreUrl,
    /// Keep feature-set versions in AWS Glue (glue://DATABASE[/TABLE]) instead of the store's own
    /// catalog.
    #[arg(long, env = "RISKFLOW_CATALOG")]
    pub catalog: Option<GlueUrl>,
    /// The feature table (list, show, diff).
    #[arg(long, default_value = "loan_features")]
    pub table: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub action: CatalogAction,
}

#[derive(Debug, Subcommand)]
pub enum CatalogAction {
    /// Every registered version of the table.
    List,
    /// One version in full.
    Show { version: u32 },
    /// Per feature: added, definition changed (old → new), or unchanged.
    Diff { from: u32, to: u32 },
    /// Register the versions of a feature-set file (checked against the evolution rules first).
    Register { file: PathBuf },
    /// Check a feature-set file against the catalog's versions without writing anything.
    Validate { file: PathBuf },
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The store: sqlite:PATH, postgres://USER@HOST:PORT/DB or redshift://USER@HOST:PORT/DB.
    #[arg(long, env = "RISKFLOW_STORE", default_value = "sqlite:riskflow.db")]
    pub store: StoreUrl,
    /// The PNG to write.
    #[arg(long)]
    pub out: PathBuf,
    /// The feature table.
    #[arg(long, default_value = "loan_features")]
    pub table: String,
    /// First application date (YYYY-MM-DD).
    #[arg(long, value_parser = parse_date)]
    pub from: Option<Date>,
    /// Last application date (YYYY-MM-DD).
    #[arg(long, value_parser = parse_date)]
    pub to: Option<Date>,
    /// Only this version's rows.
    #[arg(long)]
    pub version: Option<u32>,
}

/// A count that has to be at least one: workers, processes, partitions, rows per epoch, ….
fn at_least_one<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
    T::Err: std::fmt::Display,
{
    let value: T = text.parse().map_err(|e| format!("{e}"))?;
    if value < T::from(1) {
        return Err("must be at least 1".to_owned());
    }
    Ok(value)
}

fn parse_date(text: &str) -> Result<Date, String> {
    Date::parse(text).ok_or_else(|| format!("`{text}` is not a date (YYYY-MM-DD)"))
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The store: sqlite:PATH, postgres://USER@HOST:PORT/DB or redshift://USER@HOST:PORT/DB.
    #[arg(long, env = "RISKFLOW_STORE", default_value = "sqlite:riskflow.db")]
    pub store: StoreUrl,
    /// Kafka bootstrap servers: also show each streamed partition's end and lag.
    #[arg(long, env = "RISKFLOW_BROKERS")]
    pub brokers: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Where a job stores its rows and keeps its versions.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Where to store: sqlite:PATH, csv:PATH, postgres://USER@HOST:PORT/DB or redshift://USER@HOST:PORT/DB.
    #[arg(long, env = "RISKFLOW_STORE", default_value = "sqlite:riskflow.db")]
    store: StoreUrl,
    /// Keep feature-set versions in AWS Glue (glue://DATABASE[/TABLE]) instead of the store's own
    /// catalog.
    #[arg(long, env = "RISKFLOW_CATALOG")]
    pub catalog: Option<GlueUrl>,
    /// Redshift only: stage each epoch as a gzip CSV object under s3://BUCKET/PREFIX and load it
    /// with COPY … FROM 's3://…' (instead of multi-row INSERTs).
    #[arg(long, env = "RISKFLOW_S3_STAGING")]
    pub s3_staging: Option<String>,
    /// The IAM role Redshift assumes to read the staged objects (default: the access keys of the
    /// AWS credential chain riskflow uploads with).
    #[arg(long, env = "RISKFLOW_S3_STAGING_ROLE", requires = "s3_staging")]
    pub s3_staging_role: Option<String>,
}

impl StoreArgs {
    /// The store, with its S3 staging when one is given.
    fn store(&self) -> anyhow::Result<StoreUrl> {
        let staging = self
            .s3_staging
            .as_deref()
            .map(|url| S3Staging::parse(url, self.s3_staging_role.clone()))
            .transpose()
            .map_err(anyhow::Error::msg)?;
        self.store
            .clone()
            .with_s3_staging(staging)
            .map_err(anyhow::Error::msg)
    }
}

/// Cluster mode: several processes (on one host or several) as one timely computation.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Processes in the cluster, each with `-w` workers (1: this process runs alone).
    #[arg(short = 'n', long, env = "RISKFLOW_PROCESSES", default_value_t = 1, value_parser = at_least_one::<usize>)]
    pub processes: usize,
    /// This process's index in the cluster, 0 to N-1 (process 0 writes the checkpoints; on a
    /// PostgreSQL/Redshift store every worker of every process writes its share of the rows,
    /// else process 0 all of them).
    #[arg(short = 'p', long, env = "RISKFLOW_PROCESS", default_value_t = 0)]
    pub process: usize,
    /// The cluster's addresses: one `host:port` line per process, process 0 first.
    #[arg(long, env = "RISKFLOW_HOSTFILE")]
    pub hostfile: Option<PathBuf>,
}

impl ClusterArgs {
    fn cluster(&self) -> anyhow::Result<Option<Cluster>> {
        if self.processes <= 1 {
            anyhow::ensure!(
                self.process == 0,
                "-p {} needs -n greater than 1",
                self.process
            );
            return Ok(None);
        }
        let path = self
            .hostfile
            .as_ref()
            .context("cluster mode (-n > 1) needs --hostfile with one host:port per process")?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read hostfile {}", path.display()))?;
        Cluster::from_hostfile(&text, self.processes, self.process)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("hostfile {}: {e}", path.display()))
    }
}

#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, HOST:PORT[,HOST:PORT…].
    #[arg(long, env = "RISKFLOW_BROKERS")]
    pub brokers: String,
    /// The inflow topic.
    #[arg(long, env = "RISKFLOW_TOPIC", default_value = "inflow")]
    pub topic: String,
    /// How rows are encoded: riskflow (CSV record, `_row` as the key) or json-array (the original
    /// producer's format; arrival order, not reproducible).
    #[arg(long, value_enum, default_value_t = MessageFormat::Riskflow)]
    pub format: MessageFormat,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Input CSV, plain or gzip.
    #[arg(long, env = "RISKFLOW_INPUT")]
    pub input: PathBuf,
    /// Application years to replay, e.g. 2008-2009 or 2008-.
    #[arg(long, default_value = "2008-")]
    pub years: YearRange,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 3, value_parser = at_least_one::<i32>)]
    pub partitions: i32,
    /// Rows per second (default: as fast as the broker takes them).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Longest time between progress markers, in milliseconds.
    #[arg(long, default_value_t = 50, value_parser = at_least_one::<u64>)]
    pub marker_interval_ms: u64,
    /// Most rows between progress markers (the largest epoch a consumer sees).
    #[arg(long, default_value_t = 65_536, value_parser = at_least_one::<u64>)]
    pub marker_rows: u64,
}

#[derive(Debug, Args)]
pub struct StreamArgs {
    /// Dataflow definition (default: dataflows/features.toml).
    pub dataflow: Option<PathBuf>,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group the offsets are committed under (default: riskflow-<table>).
    #[arg(long, env = "RISKFLOW_GROUP")]
    pub group: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Worker threads; worker i (of all processes) reads the partitions p with p % workers == i.
    #[arg(short = 'w', long, env = "RISKFLOW_WORKERS", default_value_t = 1, value_parser = at_least_one::<usize>)]
    pub workers: usize,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Stop after the producer's final marker instead of waiting for more.
    #[arg(long)]
    pub until_complete: bool,
    /// Also publish every stored row to this topic as Kafka Connect JSON.
    #[arg(long, env = "RISKFLOW_OUTFLOW_TOPIC")]
    pub outflow_topic: Option<String>,
    /// How often to look in the catalog for newly registered versions, which the stream then
    /// takes on without a restart (0: never).
    #[arg(long, env = "RISKFLOW_CATALOG_POLL_MS", default_value_t = 2_000)]
    pub catalog_poll_ms: u64,
    /// Recent scores kept so that a feature registered live starts from history: `sma(N)` is
    /// exact for N up to this, `ema(N)` within 1e-9 for N up to about a tenth of it.
    #[arg(long, env = "RISKFLOW_HISTORY_ROWS", default_value_t = 1_000_000)]
    pub history_rows: usize,
    /// Serve Prometheus metrics on this address (GET /metrics).
    #[arg(long, env = "RISKFLOW_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Print only the one-line summary.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Dataflow definitions to run, in order (default: dataflows/task1.toml dataflows/features.toml).
    pub dataflows: Vec<PathBuf>,
    /// Input CSV, plain or gzip: a path or s3://bucket/key (default: data/sample_2007_2013.csv,
    /// generated on first use).
    #[arg(long, env = "RISKFLOW_INPUT")]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Worker threads.
    #[arg(short = 'w', long, env = "RISKFLOW_WORKERS", default_value_t = 1, value_parser = at_least_one::<usize>)]
    pub workers: usize,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Records per epoch: the unit of ordering and of store transactions.
    #[arg(long, env = "RISKFLOW_EPOCH_ROWS", default_value_t = Chunking::EPOCH_ROWS, value_parser = at_least_one::<u64>)]
    pub epoch_rows: u64,
    /// Serve Prometheus metrics on this address (GET /metrics) while the run lasts.
    #[arg(long, env = "RISKFLOW_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// Print only the one-line summary per dataflow.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct GenArgs {
    /// Number of data records.
    #[arg(long, default_value_t = 100_000)]
    pub rows: u64,
    /// Application years, e.g. 2007-2018.
    #[arg(long, default_value = "2007-2018")]
    pub years: YearRange,
    /// Seed of the generator: the same seed gives the same file.
    #[arg(long, default_value_t = 2007)]
    pub seed: u64,
    /// Output file; gzip when it ends in .gz.
    #[arg(long)]
    pub out: PathBuf,
    /// Add malformed records (about 1%) and multi-line titles.
    #[arg(long)]
    pub quirks: bool,
    /// End lines with CRLF.
    #[arg(long)]
    pub crlf: bool,
    /// Start the file with a UTF-8 byte-order mark.
    #[arg(long)]
    pub bom: bool,
}

/// The sample used when `run` gets no `--input`.
const SAMPLE_PATH: &str = "data/sample_2007_2013.csv";

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run_command(args),
        Command::Gen(args) => gen_command(args),
        Command::Produce(args) => produce_command(args),
        Command::Stream(args) => stream_command(args),
        Command::Status(args) => status_command(args),
        Command::Plot(args) => plot_command(args),
        Command::Catalog(args) => catalog_command(args),
        Command::Backfill(args) => backfill_command(args),
    }
}

/// Starts the metrics endpoint when an address is given.
fn serve_metrics(addr: Option<&str>) -> anyhow::Result<()> {
    if let Some(addr) = addr {
        let bound =
            metrics::serve(addr).with_context(|| format!("cannot serve metrics on {addr}"))?;
        tracing::info!(address = %bound, "Serving Prometheus metrics on /metrics.");
    }
    Ok(())
}

fn catalog_command(args: CatalogArgs) -> anyhow::Result<()> {
    use crate::catalog::commands;
    if let (StoreUrl::Sqlite(path), None) = (&args.store, &args.catalog) {
        let writes = matches!(args.action, CatalogAction::Register { .. });
        anyhow::ensure!(writes || path.exists(), "no store at {}", path.display());
    }
    let mut catalog = crate::catalog::open(&args.store, args.catalog.as_ref())?;
    let table = args.table.as_str();
    let find = |versions: &[crate::plan::FeatureSetVersion], id: u32| {
        versions
            .iter()
            .find(|v| v.id == id)
            .cloned()
            .with_context(|| match &args.catalog {
                Some(glue) => format!("`{table}` has no version {id} in {glue}"),
                None => format!("`{table}` has no version {id} in {}", args.store),
            })
    };
    let load = |file: &Path| -> anyhow::Result<crate::plan::FeatureSetFile> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        Ok(crate::plan::FeatureSetFile::parse(file, &text)?)
    };
    let print = |json: serde_json::Value, text: String| {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&json).expect("JSON"));
        } else {
            print!("{text}");
        }
    };
    match &args.action {
        CatalogAction::List => {
            let versions = catalog.versions(table)?;
            let views: Vec<commands::VersionView> = versions.iter().map(Into::into).collect();
            print(
                serde_json::to_value(views)?,
                commands::render_list(table, &versions),
            );
        }
        CatalogAction::Show { version } => {
            let v = find(&catalog.versions(table)?, *version)?;
            let view = commands::VersionView::from(&v);
            print(
                serde_json::to_value(view)?,
                commands::render_show(table, &v),
            );
        }
        CatalogAction::Diff { from, to } => {
            let versions = catalog.versions(table)?;
            let (old, new) = (find(&versions, *from)?, find(&versions, *to)?);
            let changes = commands::diff(&old, &new);
            let json: Vec<serde_json::Value> = changes
                .iter()
                .map(|(feature, change)| {
                    let mut value = serde_json::to_value(change).expect("JSON");
                    value["feature"] = feature.clone().into();
                    value
                })
                .collect();
            print(
                json.into(),
                commands::render_diff(table, &old, &new, &changes),
            );
        }
        CatalogAction::Register { file } | CatalogAction::Validate { file } => {
            let file_set = load(file)?;
            let outcomes = match &args.action {
                CatalogAction::Register { .. } => commands::register(&mut *catalog, &file_set)?,
                _ => commands::validate(&mut *catalog, &file_set)?,
            };
            let text: String = outcomes
                .iter()
                .map(|o| format!("{} version {}: {}\n", file_set.table, o.version, o.outcome))
                .collect();
            print(serde_json::to_value(&outcomes)?, text);
        }
    }
    Ok(())
}

fn plot_command(args: PlotArgs) -> anyhow::Result<()> {
    let options = plot::PlotOptions {
        table: args.table,
        from: args.from,
        to: args.to,
        version: args.version,
    };
    let summary = plot::plot(&args.store, &options, &args.out)?;
    let series: Vec<String> = summary
        .series
        .iter()
        .map(|(label, points)| format!("{label} ({points} days)"))
        .collect();
    println!(
        "wrote {} — {} days: {}",
        args.out.display(),
        summary.days,
        series.join(", ")
    );
    Ok(())
}

fn status_command(args: StatusArgs) -> anyhow::Result<()> {
    let statuses = status::read(&args.store, args.brokers.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&statuses)?);
    } else {
        print!("{}", status::render(&statuses));
    }
    Ok(())
}

fn produce_command(args: ProduceArgs) -> anyhow::Result<()> {
    let options = ProduceOptions {
        input: args.input,
        years: args.years,
        brokers: args.kafka.brokers,
        topic: args.kafka.topic,
        partitions: args.partitions,
        rate: args.rate,
        format: args.kafka.format,
        marker_interval: Duration::from_millis(args.marker_interval_ms),
        marker_rows: args.marker_rows,
        progress: std::io::stderr().is_terminal(),
    };
    let report = produce(&options)?;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "produced {} rows to {} ({} partitions) in {secs:.2} s ({:.0} rows/s); {} epochs; skipped {} rows of other years",
        report.sent,
        options.topic,
        report.partitions,
        report.sent as f64 / secs,
        report.epochs,
        report.skipped
    );
    Ok(())
}

fn stream_command(args: StreamArgs) -> anyhow::Result<()> {
    serve_metrics(args.metrics_addr.as_deref())?;
    let path = args
        .dataflow
        .unwrap_or_else(|| PathBuf::from("dataflows/features.toml"));
    let dataflow = LoadedDataflow::load(&path)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // A second signal while stopping ends the process at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let group = args
        .group
        .unwrap_or_else(|| format!("riskflow-{}", dataflow.feature_set.table));
    let target = StreamTarget {
        stream: StreamOptions {
            brokers: args.kafka.brokers,
            topic: args.kafka.topic,
            group,
            format: args.kafka.format,
            until_complete: args.until_complete,
            delays: Arc::default(),
        },
        store: args.store.store()?,
        catalog: args.store.catalog,
        outflow_topic: args.outflow_topic,
        catalog_poll: (args.catalog_poll_ms > 0)
            .then(|| Duration::from_millis(args.catalog_poll_ms)),
        engine: EngineOptions {
            workers: args.workers,
            progress: std::io::stderr().is_terminal(),
            stop: Some(stop),
            history_rows: args.history_rows,
            cluster: args.cluster.cluster()?,
            ..EngineOptions::default()
        },
    };
    let report = stream_dataflow(&dataflow, &target)
        .with_context(|| format!("dataflow {}", path.display()))?;
    print_summary(
        &dataflow,
        &report,
        args.quiet,
        target.engine.cluster.as_ref(),
        target.store.is_shared(),
    );
    let delays = &target.stream.delays;
    if let (Some(p50), Some(p99)) = (delays.quantile(0.5), delays.quantile(0.99)) {
        println!(
            "delay from produce to durable store over {} rows: median {p50} ms, p99 {p99} ms, max {} ms",
            delays.count(),
            delays.quantile(1.0).unwrap_or(p99)
        );
    }
    if report.stopped_early {
        println!("stopped on a signal: every epoch the stream had closed is stored and its offsets committed");
    }
    Ok(())
}

fn backfill_command(args: BackfillArgs) -> anyhow::Result<()> {
    let path = args
        .dataflow
        .unwrap_or_else(|| PathBuf::from("dataflows/features.toml"));
    let dataflow = LoadedDataflow::load(&path)?.backfill(args.version, args.years);
    let engine = EngineOptions {
        workers: args.workers,
        progress: std::io::stderr().is_terminal(),
        cluster: args.cluster.cluster()?,
        ..EngineOptions::default()
    };
    let cluster = engine.cluster.clone();
    let store = args.store.store()?;
    let shared = store.is_shared();
    let report = match (args.input, args.brokers) {
        (Some(input), _) => run_dataflow(
            &dataflow,
            &RunTarget {
                input,
                store: store.clone(),
                catalog: args.store.catalog,
                engine,
                chunking: Chunking::with_epoch_rows(args.epoch_rows),
            },
        ),
        (None, Some(brokers)) => stream_dataflow(
            &dataflow,
            &StreamTarget {
                stream: StreamOptions {
                    brokers,
                    topic: args.topic,
                    group: format!(
                        "riskflow-backfill-{}-v{}",
                        dataflow.feature_set.table, args.version
                    ),
                    format: args.format,
                    until_complete: true,
                    delays: Arc::default(),
                },
                store,
                catalog: args.store.catalog,
                outflow_topic: None,
                catalog_poll: None,
                engine,
            },
        ),
        (None, None) => {
            anyhow::bail!("backfill needs --input FILE or --brokers HOST:PORT (with --topic)")
        }
    }
    .with_context(|| format!("{} ({})", dataflow.name, path.display()))?;
    print_summary(&dataflow, &report, args.quiet, cluster.as_ref(), shared);
    Ok(())
}

fn run_command(args: RunArgs) -> anyhow::Result<()> {
    serve_metrics(args.metrics_addr.as_deref())?;
    let input = match args.input {
        Some(input) => input,
        None => ensure_sample(Path::new(SAMPLE_PATH))?,
    };
    let paths: Vec<PathBuf> = if args.dataflows.is_empty() {
        DEFAULT_DATAFLOWS.iter().map(PathBuf::from).collect()
    } else {
        args.dataflows
    };
    let store = args.store.store()?;
    if let StoreUrl::Csv(path) = &store {
        if paths.len() > 1 && !path.is_dir() {
            anyhow::bail!(
                "{} dataflows would overwrite one CSV file: give an existing directory (csv:DIR) to get one <table>.csv per dataflow, or name one dataflow",
                paths.len()
            );
        }
    }
    let target = RunTarget {
        input,
        store,
        catalog: args.store.catalog,
        engine: EngineOptions {
            workers: args.workers,
            progress: std::io::stderr().is_terminal(),
            cluster: args.cluster.cluster()?,
            ..EngineOptions::default()
        },
        chunking: Chunking::with_epoch_rows(args.epoch_rows),
    };
    for path in &paths {
        let dataflow = LoadedDataflow::load(path)?;
        let report = run_dataflow(&dataflow, &target)
            .with_context(|| format!("dataflow {}", path.display()))?;
        print_summary(
            &dataflow,
            &report,
            args.quiet,
            target.engine.cluster.as_ref(),
            target.store.is_shared(),
        );
    }
    if let (StoreUrl::Sqlite(path), true) = (
        &target.store,
        Cluster::leads(target.engine.cluster.as_ref()),
    ) {
        println!(
            "stored in {} — try: sqlite3 {} 'select * from loan_features_v1 limit 5'",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

/// Prints a run's summary: in full, or only its first line with `quiet`. In a cluster it says
/// which share the counts are: each process reports the records it read and, on a `shared`
/// store (where every process writes its own rows), the rows it stored.
fn print_summary(
    dataflow: &LoadedDataflow,
    report: &RunReport,
    quiet: bool,
    cluster: Option<&Cluster>,
    shared: bool,
) {
    if let Some(cluster) = cluster {
        let (process, processes) = (cluster.process, cluster.addresses.len());
        if process != 0 {
            let stored = if shared {
                format!("stored {} rows", report.stored_total())
            } else {
                "process 0 stores every row".to_owned()
            };
            println!(
                "{} → {}: process {process} of {processes} parsed {} records and {stored} in {:.2} s; process 0 writes the checkpoints and reports the rest",
                dataflow.name,
                dataflow.feature_set.table,
                report.records_read,
                report.elapsed.as_secs_f64()
            );
            return;
        }
        let stored = if shared {
            "rows stored: this process's share too; dead letters: the whole cluster's"
        } else {
            "rows stored and dead letters: the whole cluster's"
        };
        println!(
            "process 0 of {processes} (records read and filtered: this process's share; {stored})"
        );
    }
    let summary = summarize(dataflow, report);
    if quiet {
        println!("{}", summary.lines().next().unwrap_or_default());
    } else {
        println!("{summary}");
    }
}

/// Generates the default sample once; later runs reuse it.
fn ensure_sample(path: &Path) -> anyhow::Result<PathBuf> {
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        eprintln!(
            "generating the 2007-2013 sample input {} (first run only)",
            path.display()
        );
        let options = GenOptions {
            rows: 200_000,
            first_year: 2007,
            last_year: 2013,
            seed: 2007,
            quirks: true,
            crlf: false,
            bom: false,
        };
        let partial = path.with_extension("csv.partial");
        generate(&options, &partial).with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, path)
            .with_context(|| format!("renaming to {}", path.display()))?;
    }
    Ok(path.to_owned())
}

fn gen_command(args: GenArgs) -> anyhow::Result<()> {
    if args.years.first == 0 || args.years.last == u32::MAX {
        anyhow::bail!("--years needs both ends, e.g. 2007-2018");
    }
    let options = GenOptions {
        rows: args.rows,
        first_year: args.years.first,
        last_year: args.years.last,
        seed: args.seed,
        quirks: args.quirks,
        crlf: args.crlf,
        bom: args.bom,
    };
    let summary =
        generate(&options, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    let years: Vec<String> = summary
        .per_year
        .iter()
        .map(|(y, n)| format!("{y}: {n}"))
        .collect();
    println!(
        "wrote {} records ({} malformed on purpose) to {} — {}",
        summary.rows,
        summary.malformed,
        args.out.display(),
        years.join(", ")
    );
    Ok(())
}
