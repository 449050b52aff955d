//! Prometheus metrics, `/healthz` and `/readyz`.
//!
//! [`Metrics`] holds the counters the engine and the daemon update (cheap
//! atomics, always on); every series it knows of is present from the start
//! (counters at 0), so rates and alerts work before the first event.
//! [`PlatformStats`] is what the platform client saw (call durations,
//! whether the platform answers and accepts the key, the
//! `modelferry_api_key_rejected` gauge). [`serve`] exposes
//! both on `telemetry.metrics_listen` when that is set.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

pub use crate::platform::stats::{PlatformStats, Readiness, CALLS};

use crate::job::JobState;

/// The label of `modelferry_retries_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// One of [`RETRY_REASONS`].
    pub reason: String,
}

/// The label of `modelferry_jobs`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// A job state.
    pub state: String,
}

/// The label of `modelferry_imports_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// An [`ImportResult`]'s name.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

/// The `reason` of `modelferry_retries_total`: the engine's classification
/// of a transient error.
pub const RETRY_REASONS: [&str; 5] = [
    "network",
    "timeout",
    "rate_limited",
    "server_error",
    "malformed_answer",
];

/// How an import ended, for `modelferry_imports_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportResult {
    /// Imported.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Stopped by `modelferry cancel`.
    Cancelled,
    /// A dropped file that was already imported; not uploaded again.
    Duplicate,
}

impl ImportResult {
    /// Every result (each series exists from the start).
    pub const ALL: [ImportResult; 4] = [
        ImportResult::Succeeded,
        ImportResult::Failed,
        ImportResult::Cancelled,
        ImportResult::Duplicate,
    ];

    /// The result's name, as the `result` label gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportResult::Succeeded => "succeeded",
            ImportResult::Failed => "failed",
            ImportResult::Cancelled => "cancelled",
            ImportResult::Duplicate => "duplicate",
        }
    }
}

/// The counters the engine and the daemon update, in their registry.
pub struct Metrics {
    registry: Registry,
    /// `modelferry_uploaded_bytes_total`: chunk bytes the platform acknowledged.
    pub bytes_uploaded: Counter,
    /// `modelferry_uploaded_chunks_total`: chunks the platform acknowledged.
    pub chunks_uploaded: Counter,
    /// `modelferry_retries_total{reason}`: platform calls retried.
    pub retries: Family<ReasonLabel, Counter>,
    /// `modelferry_jobs{state}`: jobs the daemon holds, by state.
    pub jobs: Family<StateLabel, Gauge>,
    /// `modelferry_imports_total{result}`: imports ended.
    pub imports: Family<ResultLabel, Counter>,
    /// `modelferry_last_success_timestamp_seconds`: when an import last
    /// succeeded (Unix time; 0: not since start).
    pub last_success: Gauge<f64, AtomicU64>,
    /// `modelferry_import_duration_seconds`: from the first session start to
    /// SUCCESS.
    pub import_duration: Histogram,
    /// Shared with the platform client (`PlatformClient::with_stats`).
    pub platform: Arc<PlatformStats>,
    /// `upload.max_rate` in force (0: no limit).
    pub max_rate: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics, every series at its starting value.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("modelferry");
        registry.register(
            "build",
            "The running build (always 1)",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: env!("MODELFERRY_COMMIT"),
            }),
        );
        let bytes_uploaded = Counter::default();
        registry.register(
            "uploaded_bytes",
            "Chunk bytes the platform acknowledged",
            bytes_uploaded.clone(),
        );
        let chunks_uploaded = Counter::default();
        registry.register(
            "uploaded_chunks",
            "Chunks the platform acknowledged",
            chunks_uploaded.clone(),
        );
        let retries = Family::<ReasonLabel, Counter>::default();
        for reason in RETRY_REASONS {
            let _ = retries.get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            });
        }
        registry.register(
            "retries",
            "Platform calls retried, by reason",
            retries.clone(),
        );
        let jobs = Family::<StateLabel, Gauge>::default();
        registry.register(
            "jobs",
            "Jobs the daemon holds, by state: waiting for a slot (queued) or running",
            jobs.clone(),
        );
        let imports = Family::<ResultLabel, Counter>::default();
        for r in ImportResult::ALL {
            let _ = imports.get_or_create(&ResultLabel { result: r.as_str() });
        }
        registry.register("imports", "Imports ended, by result", imports.clone());
        let last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "When an import last succeeded (Unix time; 0: not since start)",
            last_success.clone(),
        );
        // 1 s to about 9 hours.
        let import_duration = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        registry.register(
            "import_duration_seconds",
            "From the first session start to SUCCESS",
            import_duration.clone(),
        );
        let max_rate = Gauge::default();
        registry.register(
            "upload_max_rate_bytes_per_second",
            "The upload.max_rate in force for all uploads together; 0 = no limit",
            max_rate.clone(),
        );
        let platform = Arc::new(PlatformStats::default());
        registry.register(
            "request_duration_seconds",
            "Platform calls, by call, from sending the request to the end of the answer",
            platform.request_duration(),
        );
        // What the platform client last saw, as /readyz tells it.
        registry.register(
            "api_key_rejected",
            "1 while the platform rejects the API key",
            platform.key_rejected(),
        );
        let m = Metrics {
            registry,
            max_rate,
            bytes_uploaded,
            chunks_uploaded,
            retries,
            jobs,
            imports,
            last_success,
            import_duration,
            platform,
        };
        m.set_live_jobs([]);
        m
    }

    /// Counts one retried platform call; `reason` is one of [`RETRY_REASONS`].
    pub fn retry(&self, reason: &str) {
        self.retries
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts an import that ended; a success also sets the last-success time.
    pub fn import_finished(&self, result: ImportResult) {
        self.imports
            .get_or_create(&ResultLabel {
                result: result.as_str(),
            })
            .inc();
        if result == ImportResult::Succeeded {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            self.last_success.set(now.as_secs_f64());
        }
    }

    /// The jobs gauge from the states of the jobs the daemon holds now
    /// (finished ones are in `imports_total`, not here).
    pub fn set_live_jobs(&self, states: impl IntoIterator<Item = JobState>) {
        let states: Vec<JobState> = states.into_iter().collect();
        for st in JobState::ALL.into_iter().filter(|s| !s.is_terminal()) {
            let n = states.iter().filter(|s| **s == st).count();
            self.jobs
                .get_or_create(&StateLabel {
                    state: st.to_string(),
                })
                .set(n as i64);
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What the HTTP handlers read.
#[derive(Clone)]
struct Served {
    metrics: Arc<Metrics>,
    unready_after: Duration,
}

async fn metrics(State(s): State<Served>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Liveness: the process answers.
async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Readiness: the platform answers and accepts the key.
async fn readyz(State(s): State<Served>) -> impl IntoResponse {
    match s.metrics.platform.readiness(s.unready_after) {
        Readiness::Ready => (StatusCode::OK, "ready\n".to_string()),
        Readiness::KeyRejected => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the platform rejects the API key\n".to_string(),
        ),
        Readiness::Unreachable(d) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the platform has been unreachable for {}\n",
                humantime::format_duration(Duration::from_secs(d.as_secs()))
            ),
        ),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until `cancel`.
/// `/readyz` says 503 once the platform has been unreachable for longer than
/// `unready_after`, and while it rejects the key.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    unready_after: Duration,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Served {
            metrics,
            unready_after,
        });
    tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_documented_metrics() {
        let m = Metrics::new();
        m.bytes_uploaded.inc_by(10);
        m.retry("server_error");
        m.set_live_jobs([JobState::Queued, JobState::Queued, JobState::Uploading]);
        m.import_duration.observe(4.0);
        m.import_finished(ImportResult::Succeeded);
        let text = m.encode();
        for needle in [
            "modelferry_uploaded_bytes_total 10",
            "modelferry_retries_total{reason=\"server_error\"} 1",
            "modelferry_jobs{state=\"queued\"} 2",
            "modelferry_jobs{state=\"uploading\"} 1",
            "modelferry_jobs{state=\"importing\"} 0",
            "modelferry_imports_total{result=\"succeeded\"} 1",
            "modelferry_import_duration_seconds_count 1",
            "modelferry_upload_max_rate_bytes_per_second 0",
        ] {
            assert!(text.contains(needle), "{needle} in:\n{text}");
        }
        assert!(!text.contains("modelferry_last_success_timestamp_seconds 0"));
        // Finished jobs are counted by imports_total, not held as a gauge.
        assert!(!text.contains("state=\"succeeded\""), "{text}");
    }

    #[test]
    fn every_series_is_present_from_zero() {
        let text = Metrics::new().encode();
        let mut needles = vec![
            "modelferry_uploaded_bytes_total 0".to_string(),
            "modelferry_uploaded_chunks_total 0".to_string(),
            "modelferry_last_success_timestamp_seconds 0".to_string(),
            "modelferry_api_key_rejected 0".to_string(),
            format!(
                "modelferry_build_info{{version=\"{}\",commit=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION"),
                env!("MODELFERRY_COMMIT")
            ),
        ];
        needles.extend(
            RETRY_REASONS
                .iter()
                .map(|r| format!("modelferry_retries_total{{reason=\"{r}\"}} 0")),
        );
        needles.extend(
            ImportResult::ALL
                .iter()
                .map(|r| format!("modelferry_imports_total{{result=\"{}\"}} 0", r.as_str())),
        );
        needles.extend(
            CALLS
                .iter()
                .map(|c| format!("modelferry_request_duration_seconds_count{{call=\"{c}\"}} 0")),
        );
        needles.extend(
            ["queued", "uploading", "completing", "importing"]
                .iter()
                .map(|s| format!("modelferry_jobs{{state=\"{s}\"}} 0")),
        );
        for needle in needles {
            assert!(text.contains(&needle), "{needle} in:\n{text}");
        }
    }
}
