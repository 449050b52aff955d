//! Command-line definitions (clap) only; validation happens in `config`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;
use crate::job::{JobId, JobState};

/// The environment variable `-c` defaults to (before the default path).
pub const CONFIG_ENV: &str = "MODELFERRY_CONFIG";

/// `--version`: the version, the commit it was built from and the target
/// (`-V` prints the version alone).
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("MODELFERRY_COMMIT"),
    "\ntarget: ",
    env!("MODELFERRY_TARGET"),
);

#[derive(Debug, Parser)]
#[command(
    name = "modelferry",
    version,
    long_version = LONG_VERSION,
    about = "Resumable bulk uploads of model tarballs into the Agent Platform",
    long_about = "modelferry imports model tarballs through the Agent Platform's chunked \
import-session API. Its state lives in SQLite, so a crash, reboot or outage costs at most \
the chunks in flight."
)]
/// The command line: one command and its arguments.
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: watch every configured drop folder and run jobs until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Import one file in the foreground; exit 0 on SUCCESS, 1 if the import failed.
    Upload(UploadArgs),
    /// List the jobs in the state database, newest first.
    Status(StatusArgs),
    /// Run a failed or cancelled job again.
    Retry(RetryArgs),
    /// Stop a queued, uploading or completing job.
    Cancel(CancelArgs),
    /// Forget finished jobs older than a duration (default: state.retain).
    Prune(PruneArgs),
    /// Check everything `run` needs and report every problem at once.
    Check(CheckArgs),
    /// Run a local emulator of the platform's four endpoints.
    Emulator(EmulatorArgs),
    /// Print a shell completion script on stdout (bash, zsh, fish).
    Completions(CompletionsArgs),
    /// Write man pages (modelferry.1 and one per command) into DIR; for packaging.
    #[command(hide = true)]
    Manpages(ManpagesArgs),
}

/// `modelferry completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to write the script for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// The shells completions are made for.
// Undocumented variants: a doc comment on one would become `--help` text,
// turning `[possible values: bash, zsh, fish]` into a list that says no more.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// `modelferry manpages` (hidden; for packaging).
#[derive(Debug, Args)]
pub struct ManpagesArgs {
    /// The folder to write the pages into (created if missing).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// `-c FILE`, shared by every command that reads the configuration.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file (TOML).
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        env = CONFIG_ENV,
        default_value = DEFAULT_CONFIG_PATH
    )]
    pub config: PathBuf,
}

/// `modelferry run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration file.
    #[command(flatten)]
    pub config: ConfigArg,
}

/// `modelferry upload`.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The configuration file.
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
    /// No progress bar or progress lines.
    #[arg(long)]
    pub no_progress: bool,
    /// Give up after DURATION (e.g. "30m"), whatever the phase: the job is
    /// kept as it is (running the same command again resumes it); exit 6.
    #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
    pub timeout: Option<Duration>,
    /// Print exactly one JSON object on stdout: the receipt on success, the
    /// error receipt on failure, else job id, path, state, error, exit code;
    /// with --dry-run, the plan.
    #[arg(long)]
    pub json: bool,
    /// No progress and no info messages on stderr; warnings and errors only.
    #[arg(long)]
    pub quiet: bool,
    /// Check the archive and print the plan (chunks, sessions, whether it is
    /// already imported); send nothing, write nothing. Exit 1 if pre-flight
    /// rejects it.
    #[arg(long)]
    pub dry_run: bool,
}

/// `modelferry status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The configuration file.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Only these jobs.
    #[arg(value_name = "ID")]
    pub ids: Vec<JobId>,
    /// Only jobs in this state (repeat for several).
    #[arg(long = "state", value_name = "STATE", value_parser = parse_state)]
    pub states: Vec<JobState>,
    /// Only jobs changed within DURATION (e.g. "1h", "2d").
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// At most N jobs (the newest).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `modelferry retry`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The configuration file.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Failed or cancelled jobs to run again.
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<JobId>,
}

/// `modelferry cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The configuration file.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Queued, uploading or completing jobs to stop.
    #[arg(value_name = "ID", required = true)]
    pub ids: Vec<JobId>,
}

/// `modelferry prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The configuration file.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Forget finished jobs older than this (default: state.retain; "0": none).
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
}

/// `modelferry check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration file.
    #[command(flatten)]
    pub config: ConfigArg,
    /// Also make one authenticated read of the platform: exit 3 if the key
    /// is rejected, 6 if the platform does not answer.
    #[arg(long)]
    pub online: bool,
}

fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

fn parse_state(s: &str) -> Result<JobState, String> {
    s.parse().map_err(|_| {
        let names: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        format!("{s:?} is not a job state ({})", names.join(", "))
    })
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

/// `modelferry emulator`.
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
