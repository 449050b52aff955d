//! Command-line definitions (clap) only; validation happens in `config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;

#[derive(Debug, Parser)]
#[command(
    name = "modelferry",
    version,
    about = "Resumable bulk uploads of model tarballs into the Agent Platform",
    long_about = "modelferry imports model tarballs through the Agent Platform's chunked \
import-session API. Its state lives in SQLite, so a crash, reboot or outage costs at most \
the chunks in flight."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: watch every configured drop folder and run jobs until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Import one file in the foreground; exit 0 on SUCCESS, 1 if the import failed.
    Upload(UploadArgs),
    /// List the jobs in the state database.
    Status(StatusArgs),
    /// Run a local emulator of the platform's four endpoints.
    Emulator(EmulatorArgs),
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file (TOML).
    #[arg(short = 'c', long = "config", value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The tarball to import.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Import it as an adapter model (e.g. LoRA) rather than a full model.
    #[arg(long)]
    pub adapter: bool,
    /// The platform's fileContext for this file.
    #[arg(long, value_name = "CTX", default_value = "model")]
    pub context: String,
    /// Import again even if this file was already imported.
    #[arg(long)]
    pub force: bool,
    /// Never draw a progress bar, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like \"50ms\" ({e})"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not between 0 and 1"))
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(s)
        .map_err(|e| format!("{s:?} is not a size like \"256MiB\" ({e})"))
}

#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// Address to listen on (loopback unless you mean otherwise).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Accept only this API key (default: any non-empty key). Also from MODELFERRY_EMULATOR_API_KEY.
    #[arg(long, env = "MODELFERRY_EMULATOR_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Keep sessions and chunks here (default: a temporary folder removed on exit).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Share of requests answered 500.
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    pub fail_rate: f64,
    /// Share of chunk uploads stored and then answered 502 (a lost acknowledgement).
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    pub lost_ack_rate: f64,
    /// Share of chunk uploads whose connection is dropped mid-body.
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    pub reset_rate: f64,
    /// Share of requests answered 429 with Retry-After.
    #[arg(long, default_value = "0", value_parser = parse_rate)]
    pub rate_limit_rate: f64,
    /// Retry-After sent with 429 answers.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub retry_after: Duration,
    /// Latency added to every request, e.g. 50ms.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub latency: Duration,
    /// How long a session accepts chunks.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub session_ttl: Duration,
    /// How far the emulator's clock runs behind: expirationDate answers this much too early (clock skew).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub clock_behind: Duration,
    /// IN_PROGRESS dock-status answers before the final one.
    #[arg(long, default_value_t = 2)]
    pub import_polls: u32,
    /// Count and hash chunks but keep nothing; report SUCCESS (for benchmarks).
    #[arg(long)]
    pub discard: bool,
    /// Chunks larger than this are answered 413.
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    pub max_chunk_size: u64,
    /// Do not hash received chunks (for benchmarks: the client's own CPU shows).
    #[arg(long)]
    pub no_hash: bool,
}
