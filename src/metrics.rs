//! Prometheus metrics and the `/healthz` endpoint.
//!
//! [`Metrics`] holds the counters the engine and the daemon update (cheap
//! atomics, always on); [`serve`] exposes them on `telemetry.metrics_listen`
//! when that is set.

use std::net::SocketAddr;
use std::sync::Arc;

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
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::job::JobState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

pub struct Metrics {
    registry: Registry,
    pub bytes_uploaded: Counter,
    pub chunks_uploaded: Counter,
    pub retries: Family<ReasonLabel, Counter>,
    pub jobs: Family<StateLabel, Gauge>,
    pub import_duration: Histogram,
    pub api_key_rejected: Gauge,
    /// `upload.max_rate` in force (0: no limit).
    pub max_rate: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("modelferry");
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
        registry.register(
            "retries",
            "Platform calls retried, by reason",
            retries.clone(),
        );
        let jobs = Family::<StateLabel, Gauge>::default();
        registry.register("jobs", "Jobs in the state database, by state", jobs.clone());
        // 1 s to about 9 hours.
        let import_duration = Histogram::new(exponential_buckets(1.0, 2.0, 16));
        registry.register(
            "import_duration_seconds",
            "From the first session start to SUCCESS",
            import_duration.clone(),
        );
        let api_key_rejected = Gauge::default();
        registry.register(
            "api_key_rejected",
            "1 while the platform rejects the API key",
            api_key_rejected.clone(),
        );
        let max_rate = Gauge::default();
        registry.register(
            "upload_max_rate_bytes_per_second",
            "The upload.max_rate in force for all uploads together; 0 = no limit",
            max_rate.clone(),
        );
        Metrics {
            registry,
            max_rate,
            bytes_uploaded,
            chunks_uploaded,
            retries,
            jobs,
            import_duration,
            api_key_rejected,
        }
    }

    pub fn retry(&self, reason: &str) {
        self.retries
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn set_jobs(&self, counts: &[(JobState, u64)]) {
        for st in JobState::ALL {
            let n = counts.iter().find(|(s, _)| *s == st).map_or(0, |(_, n)| *n);
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

async fn metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

async fn healthz() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

/// Serves `/metrics` and `/healthz` on `addr` until `cancel`.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .with_state(metrics);
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
        m.set_jobs(&[(JobState::Queued, 3)]);
        m.import_duration.observe(4.0);
        let text = m.encode();
        for needle in [
            "modelferry_uploaded_bytes_total 10",
            "modelferry_retries_total{reason=\"server_error\"} 1",
            "modelferry_jobs{state=\"queued\"} 3",
            "modelferry_jobs{state=\"failed\"} 0",
            "modelferry_import_duration_seconds_count 1",
            "modelferry_upload_max_rate_bytes_per_second 0",
        ] {
            assert!(text.contains(needle), "{needle} in:\n{text}");
        }
    }
}
