//! Command-line interface: one subcommand per job; every flag can also come from a
//! `RISKFLOW_*` environment variable.

use crate::dataflow::EngineOptions;
use crate::gen::{generate, GenOptions};
use crate::job::{run_dataflow, summarize, LoadedDataflow, RunTarget, DEFAULT_DATAFLOWS};
use crate::record::YearRange;
use crate::sink::StoreUrl;
use crate::source::Chunking;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run dataflows over a file into a store (default: both shipped dataflows, a generated
    /// 2007-2013 sample, ./riskflow.db).
    Run(RunArgs),
    /// Generate a deterministic file in the rejected-loans layout.
    Gen(GenArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Dataflow definitions to run, in order (default: dataflows/task1.toml dataflows/features.toml).
    pub dataflows: Vec<PathBuf>,
    /// Input CSV, plain or gzip (default: data/sample_2007_2013.csv, generated on first use).
    #[arg(long, env = "RISKFLOW_INPUT")]
    pub input: Option<PathBuf>,
    /// Where to store: sqlite:PATH or csv:PATH.
    #[arg(long, env = "RISKFLOW_STORE", default_value = "sqlite:riskflow.db")]
    pub store: StoreUrl,
    /// Worker threads.
    #[arg(short = 'w', long, env = "RISKFLOW_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Records per epoch: the unit of ordering and of store transactions.
    #[arg(long, env = "RISKFLOW_EPOCH_ROWS", default_value_t = 16_384)]
    pub epoch_rows: u64,
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
    }
}

fn run_command(args: RunArgs) -> anyhow::Result<()> {
    let input = match args.input {
        Some(input) => input,
        None => ensure_sample(Path::new(SAMPLE_PATH))?,
    };
    let paths: Vec<PathBuf> = if args.dataflows.is_empty() {
        DEFAULT_DATAFLOWS.iter().map(PathBuf::from).collect()
    } else {
        args.dataflows
    };
    if let StoreUrl::Csv(path) = &args.store {
        if paths.len() > 1 && !path.is_dir() {
            anyhow::bail!(
                "{} dataflows would overwrite one CSV file: give an existing directory (csv:DIR) to get one <table>.csv per dataflow, or name one dataflow",
                paths.len()
            );
        }
    }
    let target = RunTarget {
        input,
        store: args.store,
        engine: EngineOptions {
            workers: args.workers.max(1),
            progress: std::io::stderr().is_terminal(),
            ..EngineOptions::default()
        },
        chunking: Chunking::with_epoch_rows(args.epoch_rows),
    };
    for path in &paths {
        let dataflow = LoadedDataflow::load(path)?;
        let report = run_dataflow(&dataflow, &target)
            .with_context(|| format!("dataflow {}", path.display()))?;
        let summary = summarize(&dataflow, &report);
        if args.quiet {
            println!("{}", summary.lines().next().unwrap_or_default());
        } else {
            println!("{summary}");
        }
    }
    if let StoreUrl::Sqlite(path) = &target.store {
        println!(
            "stored in {} — try: sqlite3 {} 'select * from loan_features_v1 limit 5'",
            path.display(),
            path.display()
        );
    }
    Ok(())
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
