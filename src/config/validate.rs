//! From the merged, untyped values to the typed [`Config`]: one function per
//! section, each converting its keys through [`Table`] and checking what a
//! single key cannot show (ranges, one key against another). Every problem is
//! recorded and validation goes on with a default in place of a bad value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use config::Value;

use super::raw::{Problems, Root, Table};
use super::{
    AfterSuccess, Config, DaemonConfig, FleetConfig, LogFormat, PlatformConfig, StateConfig,
    TelemetryConfig, UploadConfig, WatchConfig,
};

const MIN_CHUNK: u64 = 1024;
/// `state.retain` when not given: 90 days.
const DEFAULT_RETAIN: Duration = Duration::from_secs(90 * 24 * 3600);

/// A retention period: a duration such as `"90d"`, or `"0"` for never
/// pruning. Also what `prune --older-than` takes.
pub fn parse_retain(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(None);
    }
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Ok(None),
        Ok(d) => Ok(Some(d)),
        Err(e) => Err(format!(
            "{text:?} is not a duration ({e}; use e.g. \"90d\", \"12h\", or \"0\" for never)"
        )),
    }
}
const MAX_CHUNK: u64 = 1 << 30;
/// Levels a `telemetry.log_level` directive may name.
const LEVELS: &str = "off, error, warn, info, debug, trace";

/// The configuration in `root`, with defaults where values are bad, and the
/// number of `[[watch]]` entries given (valid or not).
pub(super) fn config(root: Value, file: &Path, problems: &mut Problems) -> (Config, usize) {
    let mut root = Root::new(root, problems);
    let platform = platform(root.section("platform", problems));
    let state = state(root.section("state", problems));
    let fleet = fleet(root.section("fleet", problems), state.url.is_some());
    let mut upload_t = root.section("upload", problems);
    let upload = upload(&mut upload_t, platform.request_timeout);
    upload_t.finish();
    let daemon = daemon(root.section("daemon", problems));
    let telemetry = telemetry(root.section("telemetry", problems));
    let entries = root.list("watch", problems);
    let given = entries.len();
    let watch = entries
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| watch(Table::new(&format!("watch[{i}]"), Some(v), problems)))
        .collect();
    root.finish(problems);
    let config = Config {
        source: file.to_path_buf(),
        platform,
        state,
        fleet,
        upload,
        daemon,
        telemetry,
        watch,
    };
    (config, given)
}

fn platform(mut t: Table) -> PlatformConfig {
    let base_url = t
        .string("base_url")
        .and_then(|text| match reqwest::Url::parse(text.trim()) {
            Err(e) => {
                t.problem("base_url", format!("{text:?} is not a URL ({e})"));
                None
            }
            Ok(url) => {
                if let Err(p) = check_base_url(&url) {
                    t.problem("base_url", p);
                }
                Some(url)
            }
        });
    let platform = PlatformConfig {
        base_url,
        api_key_file: t.path("api_key_file").map(absolute),
        emulate: t.bool("emulate", false),
        connect_timeout: t.duration("connect_timeout", Duration::from_secs(10)),
        request_timeout: t.duration("request_timeout", Duration::from_secs(300)),
    };
    // A zero timeout fails every request, and a timed-out request is retried
    // without limit: the daemon would spin and never import anything.
    for (key, d) in [
        ("connect_timeout", platform.connect_timeout),
        ("request_timeout", platform.request_timeout),
    ] {
        if d.is_zero() {
            t.problem(key, "must be more than 0");
        }
    }
    t.finish();
    platform
}

fn state(mut t: Table) -> StateConfig {
    let dir = t
        .path("dir")
        .unwrap_or_else(|| PathBuf::from("/var/lib/modelferry"));
    let retain = match t.string("retain") {
        None => Some(DEFAULT_RETAIN),
        Some(text) => parse_retain(&text).unwrap_or_else(|e| {
            t.problem("retain", e);
            Some(DEFAULT_RETAIN)
        }),
    };
    let url = t
        .string("url")
        .and_then(|text| match url::Url::parse(text.trim()) {
            Err(e) => {
                // The text may hold a password: never repeat it.
                t.problem("url", format!("not a URL ({e})"));
                None
            }
            Ok(url) => match check_database_url(&url) {
                Ok(()) => Some(url),
                Err(p) => {
                    t.problem("url", p);
                    None
                }
            },
        });
    let password_file = t.path("password_file").map(absolute);
    t.finish();
    // Jobs record paths; relative ones would change meaning with the working
    // directory of the next start.
    StateConfig {
        dir: absolute(dir),
        retain,
        url,
        password_file,
    }
}

/// A PostgreSQL URL without a password (it would sit in a world-readable
/// file); the error never repeats the URL, which may hold one.
fn check_database_url(url: &url::Url) -> Result<(), String> {
    if !matches!(url.scheme(), "postgresql" | "postgres") {
        return Err(format!(
            "scheme {:?} is not postgresql:// (fleet mode needs PostgreSQL)",
            url.scheme()
        ));
    }
    if url.password().is_some() {
        return Err("must not carry a password; put it in state.password_file or the systemd credential \"db-password\"".into());
    }
    if url
        .query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("password"))
    {
        return Err("must not carry a password (the password parameter); put it in state.password_file or the systemd credential \"db-password\"".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(())
}

fn fleet(mut t: Table, shared: bool) -> FleetConfig {
    if !shared && !t.is_empty() {
        t.section_problem("applies only with state.url (fleet mode)");
    }
    let instance = t.string("instance").map(|s| s.trim().to_string());
    let lease = t.duration("lease", Duration::from_secs(30));
    if let Some(name) = &instance {
        if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
            t.problem(
                "instance",
                "must be 1 to 64 characters, none of them control characters",
            );
        }
    }
    // Renewed every lease / 3 with a database round trip: below a second
    // the renewals would be most of the traffic.
    if lease < Duration::from_secs(1) {
        t.problem("lease", "must be at least 1s");
    }
    t.finish();
    FleetConfig {
        instance: instance.unwrap_or_else(host_name),
        lease,
    }
}

/// The host name, the default instance name.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "modelferry".to_string())
}

fn upload(t: &mut Table, request_timeout: Duration) -> UploadConfig {
    let chunk_size = t.size("chunk_size", 8 << 20);
    if !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk_size) {
        t.problem(
            "chunk_size",
            format!("{chunk_size} bytes is out of range (1KiB to 1GiB)"),
        );
    }
    let upload = UploadConfig {
        chunk_size,
        parallel_chunks: t.count("parallel_chunks", 4, 64),
        parallel_files: t.count("parallel_files", 1, 64),
        retry_initial: t.duration("retry_initial", Duration::from_secs(1)),
        retry_max: t.duration("retry_max", Duration::from_secs(60)),
        poll_interval: t.duration("poll_interval", Duration::from_millis(250)),
        poll_interval_max: t.duration("poll_interval_max", Duration::from_secs(30)),
        session_margin: t.duration("session_margin", Duration::from_secs(60)),
        preflight: t.bool("preflight", true),
        dedupe: t.bool("dedupe", true),
        max_rate: t.size("max_rate", 0),
    };
    for (key, d) in [
        ("retry_initial", upload.retry_initial),
        ("poll_interval", upload.poll_interval),
    ] {
        if d.is_zero() {
            t.problem(key, "must be more than 0");
        }
    }
    // A ceiling below the start cannot hold (the backoff would quietly
    // raise it to the start): the operator meant something else.
    for (max, max_d, start, start_d) in [
        (
            "retry_max",
            upload.retry_max,
            "retry_initial",
            upload.retry_initial,
        ),
        (
            "poll_interval_max",
            upload.poll_interval_max,
            "poll_interval",
            upload.poll_interval,
        ),
    ] {
        if max_d < start_d {
            let start = t.key(start);
            t.problem(
                max,
                format!(
                    "{} is less than {start} ({})",
                    humantime::format_duration(max_d),
                    humantime::format_duration(start_d)
                ),
            );
        }
    }
    if let Some(p) = rate_problem(&upload, request_timeout) {
        t.problem("max_rate", p);
    }
    upload
}

/// A `max_rate` so low that `parallel_chunks` chunks, sharing it, cannot
/// be sent within `platform.request_timeout`: every chunk request would
/// time out and be retried forever.
fn rate_problem(u: &UploadConfig, request_timeout: Duration) -> Option<String> {
    if u.max_rate == 0 {
        return None;
    }
    let bytes = u.chunk_size as f64 * u.parallel_chunks as f64;
    let needed = bytes / u.max_rate as f64;
    (needed > request_timeout.as_secs_f64()).then(|| {
        format!(
            "{} bytes per second sends parallel_chunks ({}) chunks of chunk_size ({} bytes) in {}, longer than platform.request_timeout ({}): every chunk request would time out; raise max_rate or request_timeout, or lower chunk_size or parallel_chunks",
            u.max_rate,
            u.parallel_chunks,
            u.chunk_size,
            humantime::format_duration(Duration::from_secs(needed.ceil() as u64)),
            humantime::format_duration(request_timeout)
        )
    })
}

fn daemon(mut t: Table) -> DaemonConfig {
    let daemon = DaemonConfig {
        shutdown_grace: t.duration("shutdown_grace", Duration::from_secs(10)),
        rescan_interval: t.duration("rescan_interval", Duration::from_secs(30)),
    };
    if daemon.rescan_interval.is_zero() {
        t.problem("rescan_interval", "must be more than 0");
    }
    t.finish();
    daemon
}

fn telemetry(mut t: Table) -> TelemetryConfig {
    let log_format = match t.string("log_format").as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            t.problem(
                "log_format",
                format!("{other:?} is not one of \"text\", \"json\""),
            );
            LogFormat::Text
        }
    };
    let log_level = t.string("log_level").unwrap_or_else(|| "info".into());
    if let Err(p) = check_log_level(&log_level) {
        t.problem("log_level", p);
    }
    let metrics_listen = match t.string("metrics_listen") {
        None => None,
        Some(s) if s.trim().is_empty() => None,
        Some(s) => match s.trim().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(e) => {
                t.problem(
                    "metrics_listen",
                    format!("{s:?} is not an address like \"127.0.0.1:9464\" ({e})"),
                );
                None
            }
        },
    };
    let unready_after = t.duration("unready_after", Duration::from_secs(120));
    if unready_after.is_zero() {
        t.problem("unready_after", "must be more than 0");
    }
    t.finish();
    TelemetryConfig {
        log_format,
        log_level,
        metrics_listen,
        unready_after,
    }
}

/// One `[[watch]]` entry; `None` when a folder is missing (reported).
fn watch(mut t: Table) -> Option<WatchConfig> {
    let dir = folder(&mut t, "dir");
    let done_dir = folder(&mut t, "done_dir");
    let failed_dir = folder(&mut t, "failed_dir");
    let file_context = t.string("file_context").unwrap_or_else(|| "model".into());
    if file_context.trim().is_empty() {
        t.problem("file_context", "must not be empty");
    }
    let mut include = Vec::new();
    let patterns = t
        .strings("include")
        .unwrap_or_else(|| vec!["*.tar".into(), "*.tar.gz".into(), "*.tgz".into()]);
    for p in patterns {
        match glob::Pattern::new(&p) {
            Ok(pat) => include.push(pat),
            Err(e) => t.problem("include", format!("{p:?} is not a pattern ({e})")),
        }
    }
    let after_success = match t.string("after_success").as_deref().unwrap_or("move") {
        "move" => AfterSuccess::Move,
        "delete" => AfterSuccess::Delete,
        "keep" => AfterSuccess::Keep,
        other => {
            t.problem(
                "after_success",
                format!("{other:?} is not one of \"move\", \"delete\", \"keep\""),
            );
            AfterSuccess::Move
        }
    };
    let is_adapter = t.bool("is_adapter", false);
    let stable_for = t.duration("stable_for", Duration::from_secs(10));
    let poll_only = t.bool("poll_only", false);
    t.finish();
    Some(WatchConfig {
        dir: dir?,
        done_dir: done_dir?,
        failed_dir: failed_dir?,
        file_context,
        is_adapter,
        include,
        stable_for,
        after_success,
        poll_only,
    })
}

/// A required folder of a `[[watch]]` entry, made absolute.
fn folder(t: &mut Table, key: &'static str) -> Option<PathBuf> {
    let p = t.path(key);
    if p.is_none() {
        t.problem(key, "missing");
    }
    p.map(absolute)
}

/// `p` made absolute against the working directory (lexically: no symlink
/// is resolved, so a drop folder behind a link keeps its name).
fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

/// A tracing filter that lets something through. tracing reads a bare word
/// that is not a level as a target (`"infoo"` keeps only events of a target
/// named `infoo`: every line disappears), so a bare word must be a level;
/// a target takes `target=level`.
pub(super) fn check_log_level(filter: &str) -> Result<(), String> {
    let usage = "use a level or e.g. \"info,modelferry=debug\"";
    if filter.trim().is_empty() {
        return Err(format!("must not be empty ({usage})"));
    }
    for directive in filter.split(',').map(str::trim) {
        if directive.is_empty() || directive.contains('=') || directive.starts_with('[') {
            continue;
        }
        if directive
            .parse::<tracing::level_filters::LevelFilter>()
            .is_err()
        {
            return Err(format!(
                "{directive:?} is not a level ({LEVELS}) (for a target, write {directive}=LEVEL)"
            ));
        }
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(filter)
        .map(|_| ())
        .map_err(|e| format!("{filter:?} is not a log filter ({e}; {usage})"))
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
