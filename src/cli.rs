//! The command line: `run`, `validate`, `demo`, `broker`, `schema`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::backfill::{BackfillOptions, ProgressMode};
use crate::telemetry::logging::LogFormat;

/// Streamgate: YAML pipelines from Kafka through DataFusion SQL to Kafka, at least once.
#[derive(Debug, Parser)]
#[command(
    name = "streamgate",
    version,
    about,
    after_help = "\
Examples:
  streamgate demo                              fraud pipeline on an embedded broker, nothing to install
  streamgate validate pipelines/*.yaml         check pipelines (add --offline to skip broker checks)
  KAFKA_BOOTSTRAP_SERVERS=kafka:9092 streamgate run pipelines/fraud-scoring.yaml
  streamgate broker --topic transactions:8     an embedded Kafka-protocol broker for local work
  streamgate generate --rate 2000              synthetic transactions into a Kafka topic
  streamgate schema > pipeline.schema.json     JSON Schema of the pipeline format for editors

The admin port (--admin-addr) serves /metrics, /healthz, /readyz, /pipelines and the gateway's
admin API (/admin/pipelines with pause and resume, /admin/audit, the status page at /), with the
API keys or JWT of --admin-auth (or of the --gateway file). Without keys it listens on loopback
only, and refuses pause and resume."
)]
pub struct Cli {
    /// Log format on standard error.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "STREAMGATE_LOG_FORMAT"
    )]
    pub log_format: LogFormatArg,
    /// Log level or filter (`info`, `debug`, `streamgate=debug,rdkafka=warn`); RUST_LOG wins.
    #[arg(
        long,
        global = true,
        default_value = "info",
        env = "STREAMGATE_LOG_LEVEL"
    )]
    pub log_level: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run pipelines until SIGINT/SIGTERM, then drain in-flight records and commit.
    ///
    /// A second signal exits at once (uncommitted records are redelivered next time).
    Run {
        /// Pipeline files.
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
        /// The admin port: its address, keys and public routes.
        #[command(flatten)]
        admin: AdminPortArgs,
        /// Also serve the inference gateway of this gateway file (as `streamgate serve`), with
        /// the pipelines in its admin API (`/admin/pipelines`: status, pause, resume) and on
        /// its status page; weight changes and rollbacks apply to the pipelines' models too.
        #[arg(long)]
        gateway: Option<PathBuf>,
        /// Listen address of the gateway, overriding the gateway file's `listen`.
        #[arg(long, requires = "gateway")]
        gateway_listen: Option<SocketAddr>,
    },
    /// Check pipeline files: every problem, with its location; exits 1 if any.
    ///
    /// Checks syntax, fields, environment variables, record schemas, the SQL against the
    /// schema (wrong column names), inference steps against the SQL output and in-process
    /// models, output filters and key columns, and (unless --offline) that the brokers answer,
    /// the source topics exist and served models (OIP v2 metadata) accept what is sent.
    Validate {
        /// Pipeline files.
        #[arg(required = true)]
        pipelines: Vec<PathBuf>,
        /// Skip connecting to brokers and model servers.
        #[arg(long)]
        offline: bool,
    },
    /// Run the fraud-scoring demo on an embedded Kafka broker, with synthetic transactions.
    ///
    /// Nothing to install: the broker, the transaction generator (1% malformed by default),
    /// the `pipelines/fraud-scoring.yaml` pipeline (scored by the shipped ONNX model) and the admin server all run in this process.
    /// Prints a live summary each second.
    Demo {
        /// Transactions per second (0 = as fast as possible).
        #[arg(long, default_value_t = 5000)]
        rate: u64,
        /// Stop after this many transactions are processed.
        #[arg(long)]
        records: Option<u64>,
        /// Stop after this long (`30s`, `5m`).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Share of malformed transactions (0..1).
        #[arg(long, default_value_t = 0.01)]
        malformed: f64,
        /// Partitions of the input topic.
        #[arg(long, default_value_t = 8)]
        partitions: i32,
        /// The admin port: its address, keys and public routes.
        #[command(flatten)]
        admin: AdminPortArgs,
    },
    /// Run an embedded Kafka-protocol broker (librdkafka's mock cluster) until interrupted.
    ///
    /// Prints `bootstrap.servers=HOST:PORT` on standard output once ready. It keeps only a
    /// few MB per partition (like a tiny retention): for tests and local work, not production.
    Broker {
        /// Topics to create, as `name:partitions` (repeatable).
        #[arg(long = "topic", value_parser = parse_topic)]
        topics: Vec<(String, i32)>,
    },
    /// Produce synthetic card transactions (JSON, ~300 bytes, 12 fields) to a Kafka topic.
    ///
    /// For load tests and for trying pipelines against a real cluster.
    Generate {
        /// Bootstrap brokers.
        #[arg(
            long,
            env = "KAFKA_BOOTSTRAP_SERVERS",
            default_value = "localhost:9092"
        )]
        bootstrap_servers: String,
        /// Target topic.
        #[arg(long, default_value = "transactions")]
        topic: String,
        /// Transactions per second (0 = as fast as possible).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Stop after this many (default: run until interrupted).
        #[arg(long)]
        records: Option<u64>,
        /// Share of malformed transactions (0..1).
        #[arg(long, default_value_t = 0.01)]
        malformed: f64,
    },
    /// Run a pipeline's SQL, inference and routing over Parquet files instead of the stream.
    ///
    /// Writes one Parquet dataset per output under OUTPUT/<output-name>/ (zstd, the
    /// pipeline's output schema, one file per unit of row groups) and failed rows with their
    /// error to OUTPUT/_dead_letter/. Progress is saved in OUTPUT/_progress.json after each
    /// unit: after a crash, run again with --resume to continue without losing or repeating
    /// rows. Unreadable, empty or mismatched files are reported and skipped. Exits 1 when any
    /// file, unit or row failed.
    #[command(after_help = "\
Examples:
  streamgate generate-parquet --output data --files 8 --rows 1000000
  streamgate backfill pipelines/fraud-scoring.yaml --input 'data/*.parquet' --output scored
  streamgate backfill pipelines/fraud-scoring.yaml --input 'data/*.parquet' --output scored --resume")]
    Backfill {
        /// Pipeline file.
        pipeline: PathBuf,
        /// What to read, where to write, and how.
        #[command(flatten)]
        options: BackfillArgs,
    },
    /// Write synthetic card transactions (the demo's schema) as Parquet files, for backfills.
    GenerateParquet {
        /// Output directory.
        #[arg(long)]
        output: PathBuf,
        /// Number of files.
        #[arg(long, default_value_t = 1)]
        files: usize,
        /// Transactions per file.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Rows per row group.
        #[arg(long, default_value_t = 131_072)]
        row_group_rows: usize,
        /// Random seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Serve the inference gateway: OIP v2 REST and OpenAI-compatible routes in front of the
    /// models of a gateway file, with API keys.
    ///
    /// The gateway file names the listener, the models (or a shared `model_registry`) and the
    /// API keys (SHA-256 hashes with scopes `infer:<model>`, `infer:*`, `admin:read`,
    /// `admin:write`). Only `GET /v2/health/live` is public. Prints `url=http://HOST:PORT`
    /// once listening. Example: `streamgate serve --config gateway.yaml`.
    Serve {
        /// Gateway file.
        #[arg(long, default_value = "gateway.yaml", env = "STREAMGATE_GATEWAY")]
        config: PathBuf,
        /// Listen address, overriding the file's `listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Print the hex SHA-256 of an API key, for a gateway file's `auth.api_keys[].sha256`.
    ///
    /// The key is read from standard input so it stays out of shell history.
    HashKey,
    /// Print the JSON Schema of the pipeline format.
    Schema,
    /// Serve a mock model on loopback: Open Inference Protocol v2, OpenAI chat and
    /// embeddings, TF Serving predict and a custom JSON `/score`, all on one port.
    ///
    /// Answers are deterministic (a row's score is the sum of its inputs), for trying
    /// pipelines and benchmarks without a real model server. Prints `url=http://HOST:PORT`
    /// once ready.
    MockModel {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: SocketAddr,
        /// Name of the output tensor.
        #[arg(long, default_value = "score")]
        output_name: String,
        /// Delay before each answer (`2ms`).
        #[arg(long, value_parser = humantime::parse_duration)]
        latency: Option<Duration>,
        /// Share of requests answered with 503 (0..1).
        #[arg(long, default_value_t = 0.0)]
        error_rate: f64,
    },
}

/// The admin port of `run` and `demo`: the gateway's admin routes, policies and keys.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminPortArgs {
    /// Address of the admin port: metrics, health, pipeline states and the admin API.
    ///
    /// Without keys (--admin-auth, or `auth` in the --gateway file) it must be a loopback
    /// address: anywhere else `run` refuses to start.
    #[arg(long, default_value = "127.0.0.1:9898", env = "STREAMGATE_ADMIN_ADDR")]
    pub admin_addr: SocketAddr,
    /// Keys of the admin port: a YAML file with an `auth` section as in a gateway file
    /// (`api_keys` with SHA-256 hashes and scopes, and/or `jwt`); a gateway file works, only its
    /// `auth` and `audit_log` are read.
    ///
    /// `admin:read` reads the admin API, pipelines and metrics; pause and resume need
    /// `admin:write`. With --gateway, the gateway file's `auth` is used instead.
    #[arg(long, env = "STREAMGATE_ADMIN_AUTH", value_name = "FILE")]
    pub admin_auth: Option<PathBuf>,
    /// Admin routes that answer without a key when the port has keys, comma-separated:
    /// `health` (/healthz, /readyz), `metrics` (/metrics), or `none`.
    ///
    /// Default: `health`, plus `metrics` when --admin-addr is a loopback address. Metrics
    /// name pipelines, topics, models and replica addresses, so off loopback a scraper sends
    /// an `admin:read` key unless `metrics` is listed. Without keys (loopback only) every
    /// reading route is open and changes are refused.
    #[arg(
        long,
        env = "STREAMGATE_ADMIN_PUBLIC",
        value_enum,
        value_delimiter = ',',
        value_name = "ROUTES"
    )]
    pub admin_public: Option<Vec<AdminPublic>>,
}

/// Admin routes that can be opened to callers without a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AdminPublic {
    /// `/healthz` and `/readyz`.
    Health,
    /// `/metrics`.
    Metrics,
    /// Nothing: every route needs a key.
    None,
}

/// `--admin-public none` given with other routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("--admin-public: `none` cannot be combined with other routes")]
pub struct AdminPublicConflict;

impl AdminPortArgs {
    /// The admin port's public routes, as given or by default for its address.
    pub fn access(&self) -> Result<crate::gateway::AdminAccess, AdminPublicConflict> {
        let Some(public) = &self.admin_public else {
            return Ok(crate::gateway::AdminAccess::default_for(self.admin_addr));
        };
        if public.contains(&AdminPublic::None) && public.len() > 1 {
            return Err(AdminPublicConflict);
        }
        Ok(crate::gateway::AdminAccess {
            public_health: public.contains(&AdminPublic::Health),
            public_metrics: public.contains(&AdminPublic::Metrics),
        })
    }
}

/// A `--topic name:partitions` whose partitions are not 1..=1000.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("partitions must be 1..=1000 in {0:?}")]
pub struct TopicArgError(pub String);

fn parse_topic(s: &str) -> Result<(String, i32), TopicArgError> {
    match s.split_once(':') {
        None => Ok((s.to_string(), 1)),
        Some((name, n)) => n
            .parse::<i32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .map(|n| (name.to_string(), n))
            .ok_or_else(|| TopicArgError(s.to_string())),
    }
}

/// `streamgate backfill`'s flags (the library's options are [`BackfillOptions`]).
#[derive(Debug, Clone, clap::Args)]
pub struct BackfillArgs {
    /// Parquet files or glob patterns (quote them), repeatable.
    #[arg(long = "input", required = true)]
    pub inputs: Vec<String>,
    /// Output directory (Parquet datasets and the progress file).
    #[arg(long)]
    pub output: PathBuf,
    /// Continue a previous backfill into OUTPUT.
    #[arg(long)]
    pub resume: bool,
    /// Send results to the pipeline's own sinks (Kafka, files) instead of Parquet files
    /// (progress still lives in OUTPUT).
    #[arg(long)]
    pub to_sinks: bool,
    /// Units (row-group ranges) processed at once.
    #[arg(long, default_value_t = 2)]
    pub files_in_parallel: usize,
    /// Requests in flight per model version, so a backfill cannot starve real-time pipelines
    /// sharing the model's endpoints.
    #[arg(long, default_value_t = 8)]
    pub model_concurrency: usize,
    /// Rows per batch read from Parquet.
    #[arg(long, default_value_t = 8192)]
    pub batch_rows: usize,
    /// Most rows per unit (whole row groups): the unit of resumption and of output files.
    #[arg(long, default_value_t = 1_000_000)]
    pub unit_rows: u64,
    /// Progress display.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
}

impl From<BackfillArgs> for BackfillOptions {
    fn from(a: BackfillArgs) -> Self {
        BackfillOptions {
            inputs: a.inputs,
            output: a.output,
            resume: a.resume,
            to_sinks: a.to_sinks,
            files_in_parallel: a.files_in_parallel,
            model_concurrency: a.model_concurrency,
            batch_rows: a.batch_rows,
            unit_rows: a.unit_rows,
            progress: a.progress.into(),
        }
    }
}

/// How backfill progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressArg {
    /// A bar on a terminal, log lines otherwise.
    Auto,
    /// Always the bar (on standard error).
    Bar,
    /// Always log lines.
    Log,
    /// Nothing until the summary.
    Off,
}

impl From<ProgressArg> for ProgressMode {
    fn from(p: ProgressArg) -> Self {
        match p {
            ProgressArg::Auto => ProgressMode::Auto,
            ProgressArg::Bar => ProgressMode::Bar,
            ProgressArg::Log => ProgressMode::Log,
            ProgressArg::Off => ProgressMode::Off,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(f: LogFormatArg) -> Self {
        match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}
