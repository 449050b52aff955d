//! Configuration: the TOML file plus `MODELFERRY__SECTION__KEY` environment
//! overrides, validated into the typed [`Config`] the program runs on.
//!
//! This is the only module that reads the environment (the overrides, the API
//! key from `MODELFERRY_API_KEY`, systemd's `$CREDENTIALS_DIRECTORY`). Every
//! problem (unknown keys, wrong types, bad values and, for `run`, the
//! folders) is collected and reported at once, each naming its key, in one
//! [`ConfigError`] that names the file; `main` maps it to exit status 2.
//!
//! `raw` reads the merged values key by key, `validate` turns each section
//! into its typed form, `folders` checks the `[[watch]]` folders for `run`,
//! and `key` finds the API key.
// The one module that reads the environment.
#![allow(clippy::disallowed_methods)]

mod check;
mod folders;
mod key;
mod raw;
mod validate;

pub use validate::parse_retain;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where `-c` points when it is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/modelferry/modelferry.toml";
/// Environment variable that carries the API key.
pub const API_KEY_ENV: &str = "MODELFERRY_API_KEY";
/// Name of the systemd credential (`LoadCredential=api-key:...`).
pub const API_KEY_CREDENTIAL: &str = "api-key";
/// Name of the systemd credential holding the fleet database's password.
pub const DB_PASSWORD_CREDENTIAL: &str = "db-password";

/// A configuration that cannot be used; always names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file has problems (TOML syntax, unknown keys, wrong types, bad
    /// values, unusable folders).
    #[error("config {file}: {}", problems.join("; "))]
    Invalid {
        /// The configuration file.
        file: PathBuf,
        /// Every problem found, each naming its key.
        problems: Vec<String>,
    },
    /// The file cannot be reached (missing, or not permitted).
    #[error("config {file}: cannot read it: {detail}")]
    Unreadable {
        /// The configuration file.
        file: PathBuf,
        /// Why it cannot be reached.
        detail: String,
    },
    /// No API key in the environment, the systemd credential or
    /// `platform.api_key_file`.
    #[error("no API key: set {API_KEY_ENV}, platform.api_key_file in {file}, or the systemd credential \"{API_KEY_CREDENTIAL}\"")]
    MissingApiKey {
        /// The configuration file.
        file: PathBuf,
    },
    /// The API key file could not be used. `origin` says where the path
    /// came from (the key and the file, or the systemd credential).
    #[error("API key file {path} ({origin}): {detail}")]
    ApiKeyFile {
        /// The key file.
        path: PathBuf,
        /// Where the path came from.
        origin: String,
        /// What is wrong with it (never its contents).
        detail: String,
    },
    /// The database password file: named, never quoted.
    #[error("database password file {path} ({origin}): {detail}")]
    PasswordFile {
        /// The password file.
        path: PathBuf,
        /// Where the path came from.
        origin: String,
        /// What is wrong with it (never its contents).
        detail: String,
    },
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages).
    pub source: PathBuf,
    /// `[platform]`.
    pub platform: PlatformConfig,
    /// `[state]`.
    pub state: StateConfig,
    /// `[fleet]`: used only with `state.url`.
    pub fleet: FleetConfig,
    /// `[upload]`.
    pub upload: UploadConfig,
    /// `[daemon]`.
    pub daemon: DaemonConfig,
    /// `[telemetry]`.
    pub telemetry: TelemetryConfig,
    /// `[[watch]]`: the drop folders (needed by `run` only).
    pub watch: Vec<WatchConfig>,
}

/// `[platform]`: where the platform is and how to reach it.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// `None` only when the file gives none; commands that talk to the
    /// platform ask [`Config::base_url`], which reports it.
    pub base_url: Option<reqwest::Url>,
    /// `platform.api_key_file`: the file holding the API key, when the
    /// environment and the systemd credential give none.
    pub api_key_file: Option<PathBuf>,
    /// Run the built-in emulator instead of talking to a real platform.
    pub emulate: bool,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one whole request (a chunk upload included).
    pub request_timeout: Duration,
}

/// `[state]`: where jobs are kept.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// The directory holding `modelferry.db` (SQLite; a local disk).
    pub dir: PathBuf,
    /// Finished jobs older than this are pruned (by the daemon daily, and by
    /// `modelferry prune`'s default); `None` (`"0"`): never.
    pub retain: Option<Duration>,
    /// Fleet mode: the PostgreSQL database every instance shares. Carries
    /// no password (refused at validation).
    pub url: Option<url::Url>,
    /// Fleet mode: the file holding the database password.
    pub password_file: Option<PathBuf>,
}

/// `[fleet]`: this instance among several sharing one database.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The name this instance holds jobs under (default: the host name).
    pub instance: String,
    /// A job whose holder stops renewing for this long is taken over.
    pub lease: Duration,
}

/// `[upload]`: how files are sent.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// Bytes in each chunk.
    pub chunk_size: u64,
    /// Chunks of one file in flight at once.
    pub parallel_chunks: usize,
    /// Imports at once.
    pub parallel_files: usize,
    /// First backoff delay after a transient error.
    pub retry_initial: Duration,
    /// Longest backoff delay (the exponential backoff stops growing here).
    pub retry_max: Duration,
    /// First dock-status poll after `complete`, and the starting poll interval.
    pub poll_interval: Duration,
    /// Longest interval between dock-status polls (the interval doubles up to it).
    pub poll_interval_max: Duration,
    /// A session this close to its `expirationDate` is treated as expired.
    pub session_margin: Duration,
    /// Check the archive's structure before a session starts (and a gzip
    /// archive's stream as it is uploaded).
    pub preflight: bool,
    /// Never upload bytes already imported with the same kind.
    pub dedupe: bool,
    /// Bytes per second for all uploads of the process together; 0 = no limit.
    pub max_rate: u64,
}

/// `[daemon]`: the drop-folder daemon.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// On SIGTERM/SIGINT, how long requests in flight get to finish.
    pub shutdown_grace: Duration,
    /// Interval between full rescans of every drop folder.
    pub rescan_interval: Duration,
}

/// How log lines are written (`telemetry.log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[telemetry]`: logging, metrics and health endpoints.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// Text or JSON log lines, to stderr.
    pub log_format: LogFormat,
    /// The tracing filter (`"info"`, `"info,modelferry=debug"`, ...).
    pub log_level: String,
    /// Where Prometheus metrics, `/healthz` and `/readyz` are served; `None`: off.
    pub metrics_listen: Option<SocketAddr>,
    /// How long the platform may be unreachable before `/readyz` says 503.
    pub unready_after: Duration,
}

/// What happens to a tarball after it is imported (`after_success`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSuccess {
    /// Move it to `done_dir`.
    Move,
    /// Delete it.
    Delete,
    /// Leave it where it is.
    Keep,
}

/// One `[[watch]]` drop folder and what is done with the files found there.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The drop folder.
    pub dir: PathBuf,
    /// Where imported files are moved (with `after_success = "move"`).
    pub done_dir: PathBuf,
    /// Where files that failed are moved.
    pub failed_dir: PathBuf,
    /// The platform's `fileContext` for imports from this folder.
    pub file_context: String,
    /// Whether imports from this folder are adapters (`isAdapter`).
    pub is_adapter: bool,
    /// Only file names matching one of these are taken.
    pub include: Vec<glob::Pattern>,
    /// A file is taken once its size and mtime have not changed for this long.
    pub stable_for: Duration,
    /// What to do with a file after it is imported.
    pub after_success: AfterSuccess,
    /// Poll the folder only; for file systems where file events never arrive.
    pub poll_only: bool,
}

/// Whether the user asked for no colour (`NO_COLOR` set and not empty,
/// <https://no-color.org>). Read here, the one module that reads the
/// environment; callers pass the answer down.
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

impl Config {
    /// Reads `path`, applies `MODELFERRY__SECTION__KEY` overrides, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        read(path, None)?.finish(false)
    }

    /// As [`Config::load`], and also checks what `run` needs beyond the
    /// rest: at least one `[[watch]]`, drop folders that exist, and folders
    /// that do not overlap; every problem reported together.
    pub fn load_for_run(path: &Path) -> Result<Config, ConfigError> {
        read(path, None)?.finish(true)
    }

    /// The platform's base URL, or the error a command that needs it reports.
    pub fn base_url(&self) -> Result<reqwest::Url, ConfigError> {
        self.platform.base_url.clone().ok_or_else(|| {
            invalid(
                &self.source,
                vec!["platform.base_url: missing (or set platform.emulate = true)".into()],
            )
        })
    }

    /// Path of the state database.
    pub fn database_path(&self) -> PathBuf {
        self.state.dir.join("modelferry.db")
    }
}

/// A configuration as read, with its problems not yet reported.
struct Loaded {
    config: Config,
    problems: Vec<String>,
    /// `[[watch]]` entries in the file, valid or not.
    watch_given: usize,
}

impl Loaded {
    fn finish(mut self, for_run: bool) -> Result<Config, ConfigError> {
        if for_run {
            let more = folders::run_problems(&self.config.watch, self.watch_given);
            self.problems.extend(more);
        }
        if self.problems.is_empty() {
            Ok(self.config)
        } else {
            Err(invalid(&self.config.source, self.problems))
        }
    }
}

/// Reads the file and the environment (`env`, or the process's when `None`)
/// into a configuration, defaults standing in for bad values.
fn read(path: &Path, env: Option<config::Map<String, String>>) -> Result<Loaded, ConfigError> {
    let file = path.to_path_buf();
    if let Err(e) = std::fs::metadata(path) {
        return Err(ConfigError::Unreadable {
            file,
            detail: e.to_string(),
        });
    }
    // Environment values stay strings: each key converts its own, so a
    // folder named "8" or "true" stays a folder name.
    let built = config::Config::builder()
        .add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        )
        .add_source(
            config::Environment::with_prefix("MODELFERRY")
                .prefix_separator("__")
                .separator("__")
                .source(env),
        )
        .build()
        .map_err(|e| invalid(&file, vec![clean_config_error(&e)]))?;
    let mut problems = Vec::new();
    let (config, watch_given) = validate::config(built.cache, &file, &mut problems);
    Ok(Loaded {
        config,
        problems,
        watch_given,
    })
}

fn invalid(file: &Path, problems: Vec<String>) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_path_buf(),
        problems,
    }
}

/// The config crate appends " in FILE" itself; the file is named once
/// already. A multi-line TOML parse error becomes one line.
fn clean_config_error(e: &config::ConfigError) -> String {
    let mut s = e.to_string();
    if let Some(i) = s.rfind(" in ") {
        if s[i + 4..].contains('/') || s[i + 4..].ends_with(".toml") {
            s.truncate(i);
        }
    }
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
