//! Configuration: the TOML file plus `MODELFERRY__SECTION__KEY` environment
//! overrides, validated into the typed [`Config`] the program runs on.
//!
//! This is the only module that reads the environment (the overrides, the API
//! key from `MODELFERRY_API_KEY`, systemd's `$CREDENTIALS_DIRECTORY`). Every
//! problem is collected and reported at once, each naming its key, in one
//! [`ConfigError`] that names the file; `main` maps it to exit status 2.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;

/// Where `-c` points when it is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/modelferry/modelferry.toml";
/// Environment variable that carries the API key.
pub const API_KEY_ENV: &str = "MODELFERRY_API_KEY";
/// Name of the systemd credential (`LoadCredential=api-key:...`).
pub const API_KEY_CREDENTIAL: &str = "api-key";

/// A configuration that cannot be used; always names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {file}: {}", problems.join("; "))]
    Invalid {
        file: PathBuf,
        problems: Vec<String>,
    },
    #[error("config {file}: cannot read it: {detail}")]
    Unreadable { file: PathBuf, detail: String },
    #[error("no API key: set {API_KEY_ENV}, platform.api_key_file in {file}, or the systemd credential \"{API_KEY_CREDENTIAL}\"")]
    MissingApiKey { file: PathBuf },
    #[error("API key file {path} (platform.api_key_file in {file}): {detail}")]
    ApiKeyFile {
        file: PathBuf,
        path: PathBuf,
        detail: String,
    },
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages).
    pub source: PathBuf,
    pub platform: PlatformConfig,
    pub state: StateConfig,
    pub upload: UploadConfig,
    pub daemon: DaemonConfig,
    pub telemetry: TelemetryConfig,
    pub watch: Vec<WatchConfig>,
}

#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// `None` only when the file gives none; commands that talk to the
    /// platform ask [`Config::base_url`], which reports it.
    pub base_url: Option<reqwest::Url>,
    pub api_key_file: Option<PathBuf>,
    /// Run the built-in emulator instead of talking to a real platform.
    pub emulate: bool,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    pub dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct UploadConfig {
    pub chunk_size: u64,
    pub parallel_chunks: usize,
    pub parallel_files: usize,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub poll_interval: Duration,
    pub poll_interval_max: Duration,
    /// A session this close to its `expirationDate` is treated as expired.
    pub session_margin: Duration,
}

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub shutdown_grace: Duration,
    pub rescan_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    pub log_level: String,
    pub metrics_listen: Option<SocketAddr>,
    /// How long the platform may be unreachable before `/readyz` says 503.
    pub unready_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterSuccess {
    Move,
    Delete,
    Keep,
}

#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub dir: PathBuf,
    pub done_dir: PathBuf,
    pub failed_dir: PathBuf,
    pub file_context: String,
    pub is_adapter: bool,
    pub include: Vec<glob::Pattern>,
    pub stable_for: Duration,
    pub after_success: AfterSuccess,
    pub poll_only: bool,
}

/// CLI-level overrides, applied after the file and the environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub log_format: Option<LogFormat>,
}

impl Config {
    /// Reads `path`, applies `MODELFERRY__SECTION__KEY` overrides, validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, &Overrides::default())
    }

    pub fn load_with(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = path.to_path_buf();
        if let Err(e) = std::fs::metadata(path) {
            return Err(ConfigError::Unreadable {
                file,
                detail: e.to_string(),
            });
        }
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
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| invalid(&file, vec![clean_config_error(&e)]))?;
        let raw: RawConfig = built
            .try_deserialize()
            .map_err(|e| invalid(&file, vec![clean_config_error(&e)]))?;
        let mut config = raw.validate(&file)?;
        if let Some(format) = overrides.log_format {
            config.telemetry.log_format = format;
        }
        Ok(config)
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

    /// Checks what `run` needs beyond the rest: at least one `[[watch]]`,
    /// and drop folders that exist.
    pub fn validate_for_run(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.watch.is_empty() {
            problems.push("watch: at least one [[watch]] folder is needed by `run`".to_string());
        }
        for (i, w) in self.watch.iter().enumerate() {
            if !w.dir.is_dir() {
                problems.push(format!(
                    "watch[{i}].dir: {} is not an existing folder",
                    w.dir.display()
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(invalid(&self.source, problems))
        }
    }

    /// Path of the state database.
    pub fn database_path(&self) -> PathBuf {
        self.state.dir.join("modelferry.db")
    }

    /// Finds the API key: `MODELFERRY_API_KEY`, else the systemd credential
    /// `api-key`, else `platform.api_key_file`.
    pub fn load_api_key(&self) -> Result<Secret, ConfigError> {
        if let Ok(v) = std::env::var(API_KEY_ENV) {
            let s = Secret::new(v);
            if !s.is_empty() {
                return Ok(s);
            }
        }
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let p = Path::new(&dir).join(API_KEY_CREDENTIAL);
            if p.exists() {
                return self.read_key_file(&p);
            }
        }
        if let Some(p) = &self.platform.api_key_file {
            return self.read_key_file(p);
        }
        Err(ConfigError::MissingApiKey {
            file: self.source.clone(),
        })
    }

    fn read_key_file(&self, path: &Path) -> Result<Secret, ConfigError> {
        let err = |detail: String| ConfigError::ApiKeyFile {
            file: self.source.clone(),
            path: path.to_path_buf(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o004 != 0 {
                tracing::warn!(path = %path.display(), "the API key file is readable by every user; chmod 600 it (or use LoadCredential=)");
            }
        }
        let s = Secret::new(text);
        if s.is_empty() {
            return Err(err("the file is empty".into()));
        }
        Ok(s)
    }
}

/// `p` made absolute against the working directory (lexically: no symlink
/// is resolved, so a drop folder behind a link keeps its name).
fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

fn invalid(file: &Path, problems: Vec<String>) -> ConfigError {
    ConfigError::Invalid {
        file: file.to_path_buf(),
        problems,
    }
}

/// The config crate appends " in FILE" itself; the file is named once already.
/// Also turns serde's "unknown field `x` ... for key `s`" into "s.x: unknown
/// key", and a multi-line TOML parse error into one line.
fn clean_config_error(e: &config::ConfigError) -> String {
    let mut s = e.to_string();
    if let Some(i) = s.rfind(" in ") {
        if s[i + 4..].contains('/') || s[i + 4..].ends_with(".toml") {
            s.truncate(i);
        }
    }
    if let Some(rest) = s.strip_prefix("unknown field `") {
        if let Some((field, tail)) = rest.split_once('`') {
            let section = tail
                .rsplit_once("for key `")
                .and_then(|(_, k)| k.split_once('`'))
                .map(|(k, _)| format!("{k}."))
                .unwrap_or_default();
            let expected = tail
                .split_once("expected ")
                .map(|(_, e)| e.rsplit_once(" for key").map_or(e, |(e, _)| e))
                .unwrap_or("");
            return format!("{section}{field}: unknown key (expected {expected})");
        }
    }
    s.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .collect::<Vec<_>>()
        .join(" ")
}

// ---- raw, as written -------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    platform: RawPlatform,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    upload: RawUpload,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    telemetry: RawTelemetry,
    #[serde(default)]
    watch: Vec<RawWatch>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlatform {
    base_url: Option<String>,
    api_key_file: Option<PathBuf>,
    emulate: Option<bool>,
    connect_timeout: Option<String>,
    request_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpload {
    chunk_size: Option<RawSize>,
    parallel_chunks: Option<i64>,
    parallel_files: Option<i64>,
    retry_initial: Option<String>,
    retry_max: Option<String>,
    poll_interval: Option<String>,
    poll_interval_max: Option<String>,
    session_margin: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    shutdown_grace: Option<String>,
    rescan_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    log_format: Option<String>,
    log_level: Option<String>,
    metrics_listen: Option<String>,
    unready_after: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWatch {
    dir: Option<PathBuf>,
    done_dir: Option<PathBuf>,
    failed_dir: Option<PathBuf>,
    file_context: Option<String>,
    is_adapter: Option<bool>,
    include: Option<Vec<String>>,
    stable_for: Option<String>,
    after_success: Option<String>,
    poll_only: Option<bool>,
}

/// Collects problems while values are validated one key at a time.
struct Checker {
    problems: Vec<String>,
}

impl Checker {
    fn duration(&mut self, key: &str, raw: &Option<String>, default: &str) -> Duration {
        let text = raw.as_deref().unwrap_or(default);
        match humantime::parse_duration(text.trim()) {
            Ok(d) => d,
            Err(e) => {
                self.problems.push(format!(
                    "{key}: {text:?} is not a duration ({e}; use e.g. \"10s\", \"500ms\", \"2m\")"
                ));
                // Any value keeps validation going; the error stops startup.
                humantime::parse_duration(default).unwrap_or_default()
            }
        }
    }

    fn size(&mut self, key: &str, raw: &Option<RawSize>, default: u64) -> u64 {
        match raw {
            None => default,
            Some(RawSize::Bytes(n)) => *n,
            Some(RawSize::Text(t)) => {
                match parse_size::Config::new().with_binary().parse_size(t.trim()) {
                    Ok(n) => n,
                    Err(e) => {
                        self.problems.push(format!(
                        "{key}: {t:?} is not a size ({e}; use bytes or e.g. \"8MiB\", \"512KiB\")"
                    ));
                        default
                    }
                }
            }
        }
    }

    fn count(&mut self, key: &str, raw: Option<i64>, default: usize, max: usize) -> usize {
        match raw {
            None => default,
            Some(n) if n >= 1 && (n as u64) <= max as u64 => n as usize,
            Some(n) => {
                self.problems
                    .push(format!("{key}: {n} is out of range (1 to {max})"));
                default
            }
        }
    }
}

const MIN_CHUNK: u64 = 1024;
const MAX_CHUNK: u64 = 1 << 30;

impl RawConfig {
    fn validate(self, file: &Path) -> Result<Config, ConfigError> {
        let mut c = Checker {
            problems: Vec::new(),
        };

        let emulate = self.platform.emulate.unwrap_or(false);
        let base_url = match &self.platform.base_url {
            None => None,
            Some(text) => match reqwest::Url::parse(text.trim()) {
                Err(e) => {
                    c.problems
                        .push(format!("platform.base_url: {text:?} is not a URL ({e})"));
                    None
                }
                Ok(url) => {
                    if let Err(p) = check_base_url(&url) {
                        c.problems.push(format!("platform.base_url: {p}"));
                    }
                    Some(url)
                }
            },
        };
        let platform = PlatformConfig {
            base_url,
            api_key_file: self.platform.api_key_file,
            emulate,
            connect_timeout: c.duration(
                "platform.connect_timeout",
                &self.platform.connect_timeout,
                "10s",
            ),
            request_timeout: c.duration(
                "platform.request_timeout",
                &self.platform.request_timeout,
                "5m",
            ),
        };

        let state = StateConfig {
            dir: self
                .state
                .dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/modelferry")),
        };

        let u = &self.upload;
        let chunk_size = c.size("upload.chunk_size", &u.chunk_size, 8 << 20);
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk_size) {
            c.problems.push(format!(
                "upload.chunk_size: {chunk_size} bytes is out of range (1KiB to 1GiB)"
            ));
        }
        let upload = UploadConfig {
            chunk_size,
            parallel_chunks: c.count("upload.parallel_chunks", u.parallel_chunks, 4, 64),
            parallel_files: c.count("upload.parallel_files", u.parallel_files, 1, 64),
            retry_initial: c.duration("upload.retry_initial", &u.retry_initial, "1s"),
            retry_max: c.duration("upload.retry_max", &u.retry_max, "60s"),
            poll_interval: c.duration("upload.poll_interval", &u.poll_interval, "2s"),
            poll_interval_max: c.duration("upload.poll_interval_max", &u.poll_interval_max, "30s"),
            session_margin: c.duration("upload.session_margin", &u.session_margin, "60s"),
        };
        if upload.retry_initial.is_zero() {
            c.problems
                .push("upload.retry_initial: must be more than 0".into());
        }
        if upload.poll_interval.is_zero() {
            c.problems
                .push("upload.poll_interval: must be more than 0".into());
        }

        let daemon = DaemonConfig {
            shutdown_grace: c.duration("daemon.shutdown_grace", &self.daemon.shutdown_grace, "10s"),
            rescan_interval: c.duration(
                "daemon.rescan_interval",
                &self.daemon.rescan_interval,
                "30s",
            ),
        };
        if daemon.rescan_interval.is_zero() {
            c.problems
                .push("daemon.rescan_interval: must be more than 0".into());
        }

        let t = &self.telemetry;
        let log_format = match t.log_format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                c.problems.push(format!(
                    "telemetry.log_format: {other:?} is not one of \"text\", \"json\""
                ));
                LogFormat::Text
            }
        };
        let metrics_listen = match &t.metrics_listen {
            None => None,
            Some(s) if s.trim().is_empty() => None,
            Some(s) => match s.trim().parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(e) => {
                    c.problems.push(format!(
                        "telemetry.metrics_listen: {s:?} is not an address like \"127.0.0.1:9464\" ({e})"
                    ));
                    None
                }
            },
        };
        let telemetry = TelemetryConfig {
            log_format,
            log_level: t.log_level.clone().unwrap_or_else(|| "info".into()),
            metrics_listen,
            unready_after: c.duration("telemetry.unready_after", &t.unready_after, "2m"),
        };

        let mut watch = Vec::new();
        for (i, w) in self.watch.into_iter().enumerate() {
            if let Some(wc) = validate_watch(&mut c, i, w) {
                watch.push(wc);
            }
        }

        if !c.problems.is_empty() {
            return Err(invalid(file, c.problems));
        }
        // Jobs record paths; relative ones would change meaning with the
        // working directory of the next start.
        let state = StateConfig {
            dir: absolute(state.dir),
        };
        let platform = PlatformConfig {
            api_key_file: platform.api_key_file.map(absolute),
            ..platform
        };
        let watch = watch
            .into_iter()
            .map(|w| WatchConfig {
                dir: absolute(w.dir),
                done_dir: absolute(w.done_dir),
                failed_dir: absolute(w.failed_dir),
                ..w
            })
            .collect();
        Ok(Config {
            source: file.to_path_buf(),
            platform,
            state,
            upload,
            daemon,
            telemetry,
            watch,
        })
    }
}

fn validate_watch(c: &mut Checker, i: usize, w: RawWatch) -> Option<WatchConfig> {
    let mut need = |key: &str, v: Option<PathBuf>| {
        if v.is_none() {
            c.problems.push(format!("watch[{i}].{key}: missing"));
        }
        v
    };
    let dir = need("dir", w.dir);
    let done_dir = need("done_dir", w.done_dir);
    let failed_dir = need("failed_dir", w.failed_dir);
    let mut include = Vec::new();
    for p in w
        .include
        .unwrap_or_else(|| vec!["*.tar".into(), "*.tar.gz".into(), "*.tgz".into()])
    {
        match glob::Pattern::new(&p) {
            Ok(pat) => include.push(pat),
            Err(e) => c
                .problems
                .push(format!("watch[{i}].include: {p:?} is not a pattern ({e})")),
        }
    }
    let after_success = match w.after_success.as_deref().unwrap_or("move") {
        "move" => AfterSuccess::Move,
        "delete" => AfterSuccess::Delete,
        "keep" => AfterSuccess::Keep,
        other => {
            c.problems.push(format!(
                "watch[{i}].after_success: {other:?} is not one of \"move\", \"delete\", \"keep\""
            ));
            AfterSuccess::Move
        }
    };
    let file_context = w.file_context.unwrap_or_else(|| "model".into());
    if file_context.trim().is_empty() {
        c.problems
            .push(format!("watch[{i}].file_context: must not be empty"));
    }
    let stable_for = c.duration(&format!("watch[{i}].stable_for"), &w.stable_for, "10s");
    Some(WatchConfig {
        dir: dir?,
        done_dir: done_dir?,
        failed_dir: failed_dir?,
        file_context,
        is_adapter: w.is_adapter.unwrap_or(false),
        include,
        stable_for,
        after_success,
        poll_only: w.poll_only.unwrap_or(false),
    })
}

/// https everywhere, except plain http to a loopback host (the emulator).
fn check_base_url(url: &reqwest::Url) -> Result<(), String> {
    match url.scheme() {
        "https" => {}
        "http" => {
            if !is_loopback_host(url) {
                return Err(format!(
                    "{url} uses http to a host that is not loopback; use https"
                ));
            }
        }
        other => return Err(format!("{url}: scheme {other:?} is not http(s)")),
    }
    if url.host_str().is_none() {
        return Err(format!("{url} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; use the API key".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{url} must not have a query or fragment"));
    }
    Ok(())
}

fn is_loopback_host(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        std::fs::write(&path, toml).unwrap();
        Config::load(&path)
    }

    fn message(toml: &str) -> String {
        load_str(toml).unwrap_err().to_string()
    }

    #[test]
    fn defaults_suit_production() {
        let c = load_str("[platform]\nbase_url = \"https://p.example.ai\"\n").unwrap();
        assert_eq!(c.upload.chunk_size, 8 << 20);
        assert_eq!(c.upload.parallel_chunks, 4);
        assert_eq!(c.upload.parallel_files, 1);
        assert_eq!(c.state.dir, PathBuf::from("/var/lib/modelferry"));
        assert_eq!(c.daemon.shutdown_grace, Duration::from_secs(10));
        assert!(c.watch.is_empty());
    }

    #[test]
    fn sizes_and_durations_are_human_strings() {
        let c = load_str(
            "[upload]\nchunk_size = \"512KiB\"\nretry_max = \"2m\"\n[[watch]]\ndir = \"/d\"\ndone_dir = \"/o\"\nfailed_dir = \"/f\"\nstable_for = \"500ms\"\n",
        )
        .unwrap();
        assert_eq!(c.upload.chunk_size, 512 * 1024);
        assert_eq!(c.upload.retry_max, Duration::from_secs(120));
        assert_eq!(c.watch[0].stable_for, Duration::from_millis(500));
        let c = load_str("[upload]\nchunk_size = 65536\n").unwrap();
        assert_eq!(c.upload.chunk_size, 65536);
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let m = message("[upload]\nchunk_sise = \"8MiB\"\n");
        assert!(m.contains("chunk_sise"), "{m}");
        assert!(m.contains("m.toml"), "{m}");
    }

    #[test]
    fn wrong_type_is_named() {
        let m = message("[upload]\nparallel_chunks = \"four\"\n");
        assert!(m.contains("parallel_chunks"), "{m}");
    }

    #[test]
    fn bad_values_are_all_reported_at_once() {
        let m = message(
            "[upload]\nchunk_size = \"8 furlongs\"\nparallel_chunks = 0\n[[watch]]\ndir = \"/d\"\nstable_for = \"soon\"\nafter_success = \"shred\"\n",
        );
        for key in [
            "upload.chunk_size",
            "upload.parallel_chunks",
            "watch[0].stable_for",
            "watch[0].after_success",
            "watch[0].done_dir",
        ] {
            assert!(m.contains(key), "{key} missing in: {m}");
        }
        assert_eq!(m.lines().count(), 1, "one line: {m}");
    }

    #[test]
    fn http_only_to_loopback() {
        let m = message("[platform]\nbase_url = \"http://platform.example.ai\"\n");
        assert!(
            m.contains("platform.base_url") && m.contains("https"),
            "{m}"
        );
        for ok in [
            "http://127.0.0.1:8080",
            "http://localhost:1",
            "http://[::1]:9",
            "https://x.example.ai/prefix",
        ] {
            load_str(&format!("[platform]\nbase_url = \"{ok}\"\n")).unwrap();
        }
    }

    #[test]
    fn missing_file_names_it() {
        let m = Config::load(Path::new("/nonexistent/modelferry.toml"))
            .unwrap_err()
            .to_string();
        assert!(m.contains("/nonexistent/modelferry.toml"), "{m}");
    }

    #[test]
    fn shipped_configs_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for f in [
            "config/modelferry.toml",
            "config/local.toml",
            "config/emulator.toml",
        ] {
            let c = Config::load(&root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(c.platform.base_url.is_some() || c.platform.emulate, "{f}");
        }
    }

    #[test]
    fn key_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "kg-abc\n").unwrap();
        let mut c = load_str("").unwrap();
        c.platform.api_key_file = Some(key);
        // The environment may carry a key in a developer's shell; only check
        // the file path when it does not.
        if std::env::var_os(API_KEY_ENV).is_none()
            && std::env::var_os("CREDENTIALS_DIRECTORY").is_none()
        {
            assert_eq!(c.load_api_key().unwrap().expose(), "kg-abc");
        }
        c.platform.api_key_file = Some(dir.path().join("absent"));
        if std::env::var_os(API_KEY_ENV).is_none()
            && std::env::var_os("CREDENTIALS_DIRECTORY").is_none()
        {
            let m = c.load_api_key().unwrap_err().to_string();
            assert!(m.contains("absent") && m.contains("api_key_file"), "{m}");
        }
    }
}
