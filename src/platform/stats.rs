//! What the platform client has seen: how long each call took, whether the
//! platform answers, whether it accepts the key. The client feeds it after
//! every call ([`PlatformStats::record`]); `/readyz`, the
//! `modelferry_request_duration_seconds` histogram and the
//! `modelferry_api_key_rejected` gauge read it. The gauge is the one record
//! of whether the key is rejected: `/readyz` and `/metrics` cannot disagree.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use super::{ErrorKind, Op, PlatformError};

/// The label of `modelferry_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabel {
    /// One of [`CALLS`].
    pub call: &'static str,
}

/// The `call` label of each of the four platform calls.
pub const CALLS: [&str; 4] = ["start", "chunk", "complete", "dock_status"];

fn call_name(op: Op) -> &'static str {
    match op {
        Op::StartSession => CALLS[0],
        Op::UploadChunk(_) => CALLS[1],
        Op::Complete => CALLS[2],
        Op::DockStatus => CALLS[3],
    }
}

fn duration_histogram() -> Histogram {
    // 5 ms to about 3 minutes: a dock-status read to a large chunk on a slow link.
    Histogram::new(exponential_buckets(0.005, 2.0, 16))
}

/// `modelferry_request_duration_seconds`: one histogram per call.
pub type DurationFamily = Family<CallLabel, Histogram, fn() -> Histogram>;

/// Whether the daemon is fit to do its work, as `/readyz` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The platform answers and accepts the key.
    Ready,
    /// The platform's last word on the key was 401/403.
    KeyRejected,
    /// No answer (or only 5xx) from the platform for this long.
    Unreachable(Duration),
}

#[derive(Default)]
struct Seen {
    /// The first failure to reach the platform since it last answered.
    unreachable_since: Option<Instant>,
}

/// What the platform client has seen (see the module docs); shared.
pub struct PlatformStats {
    request_duration: DurationFamily,
    /// 1 while the platform's last word on the key was 401/403.
    key_rejected: Gauge,
    seen: Mutex<Seen>,
}

impl Default for PlatformStats {
    fn default() -> Self {
        let request_duration = DurationFamily::new_with_constructor(duration_histogram);
        // Every call present from the start, so a dashboard never shows a gap.
        for call in CALLS {
            let _ = request_duration.get_or_create(&CallLabel { call });
        }
        PlatformStats {
            request_duration,
            key_rejected: Gauge::default(),
            seen: Mutex::new(Seen::default()),
        }
    }
}

impl PlatformStats {
    /// The histogram family, for registering (clones share the data).
    pub fn request_duration(&self) -> DurationFamily {
        self.request_duration.clone()
    }

    /// `modelferry_api_key_rejected`, for registering (clones share the value).
    pub fn key_rejected(&self) -> Gauge {
        self.key_rejected.clone()
    }

    /// One call of `op` that took `took` and ended with `outcome`.
    pub fn record(&self, op: Op, took: Duration, outcome: Result<(), &PlatformError>) {
        self.request_duration
            .get_or_create(&CallLabel {
                call: call_name(op),
            })
            .observe(took.as_secs_f64());
        self.note(outcome, Instant::now());
    }

    fn note(&self, outcome: Result<(), &PlatformError>, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match outcome {
            Ok(()) => {
                self.key_rejected.set(0);
                seen.unreachable_since = None;
            }
            Err(e) => {
                if e.kind == ErrorKind::Auth {
                    self.key_rejected.set(1);
                }
                match e.status {
                    // A gateway's 5xx says the platform behind it is not there.
                    None | Some(500..) if e.kind != ErrorKind::Auth => {
                        seen.unreachable_since.get_or_insert(now);
                    }
                    None => {}
                    Some(_) => seen.unreachable_since = None,
                }
            }
        }
    }

    /// A new key (SIGHUP): the old one's rejection says nothing about it.
    pub fn key_replaced(&self) {
        self.key_rejected.set(0);
    }

    /// Whether the daemon is ready now, with `unready_after` as
    /// `telemetry.unready_after`.
    pub fn readiness(&self, unready_after: Duration) -> Readiness {
        self.readiness_at(Instant::now(), unready_after)
    }

    fn readiness_at(&self, now: Instant, unready_after: Duration) -> Readiness {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if self.key_rejected.get() != 0 {
            return Readiness::KeyRejected;
        }
        match seen.unreachable_since {
            Some(since) if now.saturating_duration_since(since) > unready_after => {
                Readiness::Unreachable(now.saturating_duration_since(since))
            }
            _ => Readiness::Ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: Option<u16>, kind: ErrorKind) -> PlatformError {
        PlatformError {
            op: Op::StartSession,
            kind,
            status,
            retry_after: None,
            message: String::new(),
            platform_message: None,
        }
    }

    const AFTER: Duration = Duration::from_secs(120);

    #[test]
    fn unreachable_only_after_unready_after_and_until_an_answer() {
        let s = PlatformStats::default();
        let t0 = Instant::now();
        s.note(Err(&err(None, ErrorKind::Transient)), t0);
        assert_eq!(s.readiness_at(t0 + AFTER, AFTER), Readiness::Ready);
        // Later failures do not restart the clock.
        s.note(
            Err(&err(Some(503), ErrorKind::Transient)),
            t0 + Duration::from_secs(100),
        );
        assert_eq!(
            s.readiness_at(t0 + Duration::from_secs(121), AFTER),
            Readiness::Unreachable(Duration::from_secs(121))
        );
        // A 429 is an answer: the platform is there.
        s.note(Err(&err(Some(429), ErrorKind::Transient)), t0);
        assert_eq!(
            s.readiness_at(t0 + Duration::from_secs(600), AFTER),
            Readiness::Ready
        );
    }

    #[test]
    fn a_rejected_key_is_unready_until_a_success_or_a_new_key() {
        let s = PlatformStats::default();
        let t0 = Instant::now();
        let gauge = s.key_rejected();
        assert_eq!(gauge.get(), 0);
        s.note(Err(&err(Some(401), ErrorKind::Auth)), t0);
        assert_eq!(s.readiness_at(t0, AFTER), Readiness::KeyRejected);
        assert_eq!(gauge.get(), 1);
        s.note(Err(&err(Some(503), ErrorKind::Transient)), t0);
        assert_eq!(s.readiness_at(t0, AFTER), Readiness::KeyRejected);
        assert_eq!(gauge.get(), 1);
        s.note(Ok(()), t0);
        assert_eq!(s.readiness_at(t0, AFTER), Readiness::Ready);
        assert_eq!(gauge.get(), 0);
        s.note(Err(&err(Some(403), ErrorKind::Auth)), t0);
        assert_eq!(gauge.get(), 1);
        s.key_replaced();
        assert_eq!(s.readiness_at(t0, AFTER), Readiness::Ready);
        assert_eq!(gauge.get(), 0);
    }
}
