//! Sessions of a job: starting one (after checking the file is still the
//! job's, and warning when the link is unlikely to fill it in time), and
//! judging by the local clock whether one is about to expire or was too
//! short for the link. A
//! session already expired by our clock when it arrives is used anyway: the
//! clocks disagree, and the platform's 404/410 decides when it ends.

use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::pace::{judge, TooShort};
use super::{JobCtx, StepError};
use crate::job::{Job, SessionRecord};
use crate::platform::StartRequest;
use crate::source::SourceError;

impl JobCtx {
    pub(super) async fn start_session(&self, job: &Job) -> Result<(), StepError> {
        if job.size() == 0 {
            return Err(StepError::Source(SourceError::Empty {
                path: job.path.clone(),
            }));
        }
        // The file must still be the one the job was made for before a new
        // session is spent on it.
        let path = job.path.clone();
        let identity = job.identity;
        tokio::task::spawn_blocking(move || {
            crate::source::SourceFile::open(&path, &identity).map(drop)
        })
        .await??;
        let req = StartRequest {
            file_context: job.file_context.clone(),
            total_chunks: job.chunks_total,
            file_extension: crate::platform::file_extension(&job.file_name),
            file_name: job.file_name.clone(),
            file_size: job.size(),
            is_adapter: job.is_adapter,
        };
        let info = self.retry(|| self.platform.start_session(&req)).await?;
        let now = SystemTime::now();
        let expires_at = match info.expires_at {
            // Expired by our clock on arrival: the clocks disagree (or the
            // platform does). Judging it by our clock would replace every new
            // session at once, so it is used with no local expiry and the
            // platform's 404/410 decides when it ends.
            Some(expires) if expires <= now => {
                warn!(
                    session_id = %info.session_id,
                    expiration_date = %humantime::format_rfc3339_millis(expires),
                    local_time = %humantime::format_rfc3339_millis(now),
                    "the new session's expirationDate is already past by the local clock: clock skew between this host and the platform? Using the session anyway; the platform decides when it ends"
                );
                None
            }
            other => other,
        };
        let record = SessionRecord {
            session_id: info.session_id.to_string(),
            started_at: now,
            expires_at,
        };
        let model_id = info
            .model_id
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        self.store
            .start_session(self.id, &self.hold, &record, &model_id)
            .await?;
        info!(session_id = %info.session_id, model_id = %model_id, chunks = job.chunks_total, "import session started");
        if let Some(short) = self.short_for(job.size(), &record) {
            warn!(session_id = %info.session_id, "this session is unlikely to last until the file is sent: {}", short.describe());
        }
        Ok(())
    }

    /// The best rate to expect: the one measured over the last session,
    /// and no more than `upload.max_rate`.
    fn expected_rate(&self) -> Option<f64> {
        let limit = self.platform.max_rate();
        let limit = (limit > 0).then_some(limit as f64);
        match (self.pace.rate(), limit) {
            (Some(r), Some(l)) => Some(r.min(l)),
            (r, l) => r.or(l),
        }
    }

    /// Whether `session` is too short to send `size` bytes at the rate
    /// expected.
    fn short_for(&self, size: u64, session: &SessionRecord) -> Option<TooShort> {
        let lifetime = session
            .expires_at?
            .duration_since(session.started_at)
            .ok()?;
        judge(
            size,
            self.expected_rate()?,
            lifetime,
            self.settings.session_margin,
        )
    }

    /// For a session of `job` that just ended before its last chunk: was it
    /// too short for the rate measured over it? Only a measurement counts
    /// here: a limit alone does not say the link was that slow.
    pub(super) fn too_short(&self, job: &Job) -> Option<TooShort> {
        self.pace.rate()?;
        self.short_for(job.size(), job.session.as_ref()?)
    }

    /// Whether the session is within the safety margin of its expiry. The
    /// margin never exceeds a quarter of the session's lifetime, so a
    /// platform with short sessions still gets used.
    pub(crate) fn session_expiring(&self, session: &SessionRecord) -> bool {
        let Some(expires) = session.expires_at else {
            return false;
        };
        let lifetime = expires
            .duration_since(session.started_at)
            .unwrap_or(Duration::ZERO);
        let margin = self.settings.session_margin.min(lifetime / 4);
        SystemTime::now() + margin >= expires
    }
}
