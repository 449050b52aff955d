//! The upload engine: drives one job from `queued` to `succeeded` or `failed`.
//!
//! [`Engine::run_job`] reads the job from the store and carries it forward one
//! step at a time: start a session, upload the chunks not yet acknowledged,
//! complete, poll dock status. Every step's result is committed to the store
//! before the next step depends on it, so the job can be resumed from the
//! store alone after a crash at any point. Chunks are read with positioned
//! reads, hashed (chunk and whole file) in the same pass, and up to
//! `parallel_chunks` are in flight, with buffers reused from a small pool.

mod backoff;
mod hash;
mod pipeline;
mod plan;
mod session;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

pub use backoff::Backoff;
pub use hash::ResumableSha256;
pub use plan::ChunkPlan;

use crate::config::UploadConfig;
use crate::escaped::Escaped;
use crate::job::JobState;
use crate::metrics::Metrics;
use crate::platform::{ErrorKind, ImportStatus, PlatformClient, PlatformError};
use crate::source::SourceError;
use crate::store::{Failure, Job, JobId, StoreError, StoreHandle};

/// How a run of a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded {
        model_id: Option<String>,
        dock_status_id: Option<String>,
    },
    Failed(String),
    /// The platform rejected the API key; the job is kept as it was.
    AuthRejected(String),
    /// Stopped on request; the job resumes from the store.
    Interrupted,
    /// Another modelferry process is running this job right now.
    Busy,
}

/// What a watcher of a running job sees.
#[derive(Debug, Clone)]
pub struct JobProgress {
    pub state: JobState,
    pub chunks_done: u64,
    pub chunks_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// The latest passing problem (a retry), if any.
    pub note: Option<String>,
}

impl JobProgress {
    /// A job not started yet, of a file of `bytes_total` bytes.
    pub fn queued(bytes_total: u64) -> Self {
        JobProgress {
            state: JobState::Queued,
            chunks_done: 0,
            chunks_total: 0,
            bytes_done: 0,
            bytes_total,
            note: None,
        }
    }
}

/// Why a step stopped early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the session is about to expire")]
    SessionExpiring,
    #[error("interrupted")]
    Cancelled,
}

/// Runs jobs against one platform with one store.
#[derive(Clone)]
pub struct Engine {
    store: StoreHandle,
    platform: PlatformClient,
    settings: Arc<UploadConfig>,
    metrics: Arc<Metrics>,
}

/// Everything a step of one job needs; cheap to clone into chunk tasks.
#[derive(Clone)]
pub(crate) struct JobCtx {
    pub id: JobId,
    pub store: StoreHandle,
    pub platform: PlatformClient,
    pub settings: Arc<UploadConfig>,
    pub metrics: Arc<Metrics>,
    pub cancel: CancellationToken,
    pub progress: Arc<watch::Sender<JobProgress>>,
}

/// Reads failures of the source file retried before the job fails.
const READ_RETRIES: u32 = 3;
/// Sessions lost in a row before any chunk was acknowledged in them, from
/// which on the job is held: the error shown in `status`, the next session
/// only after a backoff. Two: one loss can be bad luck, two in a row of
/// sessions that never took a chunk are a pattern.
const HOLD_AFTER_LOST: u32 = 2;

impl Engine {
    pub fn new(
        store: StoreHandle,
        platform: PlatformClient,
        settings: UploadConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Engine {
            store,
            platform,
            settings: Arc::new(settings),
            metrics,
        }
    }

    pub fn platform(&self) -> &PlatformClient {
        &self.platform
    }

    /// Carries job `id` as far as it goes: to a final state, a rejected key,
    /// or `cancel`. In-flight chunk requests are let finish when cancelled;
    /// the caller bounds that with its grace period.
    #[instrument(skip_all, fields(job_id = id, file = tracing::field::Empty))]
    pub async fn run_job(
        &self,
        id: JobId,
        cancel: CancellationToken,
        progress: Arc<watch::Sender<JobProgress>>,
    ) -> Result<Outcome, StoreError> {
        let ctx = JobCtx {
            id,
            store: self.store.clone(),
            platform: self.platform.clone(),
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
            cancel,
            progress,
        };
        let lock = self
            .store
            .call(move |s| match s.lock_job(id) {
                Ok(l) => Ok(Some(l)),
                Err(StoreError::Busy(_)) => Ok(None),
                Err(e) => Err(e),
            })
            .await?;
        let Some(mut lock) = lock else {
            warn!("another modelferry process is running this job; leaving it to that one");
            return Ok(Outcome::Busy);
        };
        let outcome = self.drive(&ctx).await;
        if matches!(outcome, Ok(Outcome::Succeeded { .. } | Outcome::Failed(_))) {
            lock.finished();
        }
        // Released on a blocking thread: removing the lock file touches the disk.
        let _ = tokio::task::spawn_blocking(move || drop(lock)).await;
        outcome
    }

    async fn drive(&self, ctx: &JobCtx) -> Result<Outcome, StoreError> {
        let id = ctx.id;
        let mut read_failures = 0;
        let mut named = false;
        // Sessions replaced in a row: a platform that loses every new
        // session must not be asked for new ones in a tight loop.
        let mut replaced = Backoff::new(ctx.settings.retry_initial, ctx.settings.retry_max);
        // Of those, how many were lost before any chunk was acknowledged.
        let mut lost_unused = 0;
        loop {
            let job = ctx.store.call(move |s| s.job(id)).await?;
            if !named {
                tracing::Span::current().record(
                    "file",
                    tracing::field::display(Escaped::str(&job.file_name)),
                );
                named = true;
            }
            ctx.show(&job);
            let result = match job.state {
                JobState::Succeeded => {
                    return Ok(Outcome::Succeeded {
                        model_id: job.model_id,
                        dock_status_id: job.dock_status_id,
                    })
                }
                JobState::Failed => return Ok(Outcome::Failed(job.error.unwrap_or_default())),
                JobState::Queued => ctx.start_session(&job).await,
                JobState::Uploading => ctx.upload_all(&job).await,
                JobState::Completing => ctx.complete(&job).await,
                JobState::Importing => ctx.poll_import(&job).await,
            };
            let err = match result {
                Ok(()) => {
                    read_failures = 0;
                    if job.state != JobState::Queued {
                        replaced.reset();
                        lost_unused = 0;
                    }
                    continue;
                }
                Err(e) => e,
            };
            // A session that is gone or about to expire is replaced, and the
            // upload starts again from chunk 0.
            let err = match err {
                StepError::SessionExpiring
                | StepError::Platform(PlatformError {
                    kind: ErrorKind::SessionGone,
                    ..
                }) => {
                    let acked = ctx.store.call(move |s| s.job(id)).await?.chunks_done;
                    lost_unused = if acked == 0 { lost_unused + 1 } else { 0 };
                    if replaced.attempts() == 0 {
                        replaced.next_delay(None);
                        warn!(error = %err, "starting a new session from chunk 0");
                    } else {
                        let delay = replaced.next_delay(None);
                        if lost_unused >= HOLD_AFTER_LOST {
                            // Held: the reason shows in `status` while it waits.
                            let e = format!("{lost_unused} sessions in a row were lost before the platform acknowledged a chunk (last: {err})");
                            warn!(error = %e, retry_in = ?delay, "sessions keep being lost; waiting before the next one");
                            ctx.note(&e, delay).await?;
                        } else {
                            warn!(error = %err, retry_in = ?delay, "the new session was lost as well; waiting before the next one");
                        }
                        if ctx.sleep(delay).await.is_err() {
                            return Ok(Outcome::Interrupted);
                        }
                    }
                    match ctx.start_session(&job).await {
                        Ok(()) => continue,
                        Err(e) => e,
                    }
                }
                other => other,
            };
            match err {
                StepError::Source(SourceError::Io { .. }) if read_failures < READ_RETRIES => {
                    read_failures += 1;
                    let e = err.to_string();
                    let delay = ctx.settings.retry_initial * read_failures;
                    warn!(error = %e, retry_in = ?delay, "cannot read the file; retrying");
                    ctx.note(&e, delay).await?;
                    if ctx.sleep(delay).await.is_err() {
                        return Ok(Outcome::Interrupted);
                    }
                }
                other => return ctx.settle_outcome(other).await,
            }
        }
    }
}

impl JobCtx {
    /// Turns a step's final error into the job's outcome, failing the job in
    /// the store when the error is not one to wait out.
    async fn settle_outcome(&self, err: StepError) -> Result<Outcome, StoreError> {
        let failure = match err {
            StepError::Cancelled => return Ok(Outcome::Interrupted),
            StepError::Store(e) => return Err(e),
            StepError::Platform(e) if e.kind == ErrorKind::Auth => {
                let msg = format!("API key rejected by the platform: {e}");
                warn!(error = %e, "the platform rejected the API key; the file stays where it is");
                let m = msg.clone();
                let id = self.id;
                self.store.call(move |s| s.note_error(id, &m, None)).await?;
                self.progress.send_modify(|p| p.note = Some(msg.clone()));
                return Ok(Outcome::AuthRejected(msg));
            }
            StepError::Platform(e) => Failure {
                error: e.to_string(),
                stage: e.op.stage().to_string(),
                http_status: e.status,
                platform_message: e.platform_message.clone(),
            },
            StepError::Source(e) => Failure {
                error: e.to_string(),
                stage: "read".into(),
                ..Failure::default()
            },
            StepError::SessionExpiring => Failure {
                error: "the session expired".into(),
                stage: "upload".into(),
                ..Failure::default()
            },
        };
        self.fail(failure).await
    }

    async fn fail(&self, failure: Failure) -> Result<Outcome, StoreError> {
        warn!(error = %failure.error, stage = %failure.stage, "job failed");
        let id = self.id;
        let f = failure.clone();
        self.store.call(move |s| s.fail(id, &f)).await?;
        self.progress.send_modify(|p| p.state = JobState::Failed);
        Ok(Outcome::Failed(failure.error))
    }

    fn show(&self, job: &Job) {
        self.progress.send_modify(|p| {
            p.state = job.state;
            p.chunks_total = job.chunks_total;
            p.bytes_total = job.size();
            p.chunks_done = job.chunks_done;
            p.bytes_done = if job.state == JobState::Uploading || job.state == JobState::Queued {
                job.bytes_done
            } else {
                job.size()
            };
        });
    }

    async fn note(&self, error: &str, delay: Duration) -> Result<(), StoreError> {
        let id = self.id;
        let e = error.to_string();
        let at = SystemTime::now() + delay;
        self.store
            .call(move |s| s.note_error(id, &e, Some(at)))
            .await?;
        let note = format!(
            "{error} (retry in {})",
            humantime::format_duration(round(delay))
        );
        self.progress.send_modify(|p| p.note = Some(note));
        Ok(())
    }

    async fn sleep(&self, d: Duration) -> Result<(), StepError> {
        tokio::select! {
            _ = tokio::time::sleep(d) => Ok(()),
            _ = self.cancel.cancelled() => Err(StepError::Cancelled),
        }
    }

    /// Calls `f` until it succeeds or fails for a reason other than a
    /// transient one, waiting with backoff in between. No retry limit: an
    /// outage of hours does not fail a file.
    pub(crate) async fn retry<T, F, Fut>(&self, mut f: F) -> Result<T, StepError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, PlatformError>>,
    {
        let mut backoff = Backoff::new(self.settings.retry_initial, self.settings.retry_max);
        loop {
            if self.cancel.is_cancelled() {
                return Err(StepError::Cancelled);
            }
            match f().await {
                Ok(v) => {
                    if backoff.attempts() > 0 {
                        self.progress.send_modify(|p| p.note = None);
                    }
                    return Ok(v);
                }
                Err(e) if e.is_transient() => {
                    let delay = backoff.next_delay(e.retry_after);
                    warn!(error = %e, attempt = backoff.attempts(), retry_in = ?delay, "transient platform error; retrying");
                    self.metrics.retry(retry_reason(&e));
                    self.note(&e.to_string(), delay).await?;
                    self.sleep(delay).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn upload_all(&self, job: &Job) -> Result<(), StepError> {
        let session = job.session.clone().ok_or_else(|| StoreError::Corrupt {
            job: job.id,
            detail: "uploading without a session".into(),
        })?;
        if self.session_expiring(&session) {
            return Err(StepError::SessionExpiring);
        }
        let id = self.id;
        let acked: HashMap<u64, String> = self
            .store
            .call(move |s| s.acked_chunks(id))
            .await?
            .into_iter()
            .map(|a| (a.index, a.sha256))
            .collect();
        let sha256 = pipeline::upload_chunks(self, job, &session, acked).await?;
        let id = self.id;
        self.store
            .call(move |s| s.begin_complete(id, &sha256))
            .await?;
        info!("all chunks acknowledged; completing the import");
        Ok(())
    }

    async fn complete(&self, job: &Job) -> Result<(), StepError> {
        let session = job.session.clone().ok_or_else(|| StoreError::Corrupt {
            job: job.id,
            detail: "completing without a session".into(),
        })?;
        let info = self
            .retry(|| self.platform.complete(&session.session_id))
            .await?;
        let id = self.id;
        let dock = info.dock_status_id.clone();
        let model = info.model_id.clone();
        self.store
            .call(move |s| s.set_importing(id, &dock, model.as_deref()))
            .await?;
        info!(dock_status_id = %info.dock_status_id, status = ?info.status, "import completed; the platform is importing");
        Ok(())
    }

    async fn poll_import(&self, job: &Job) -> Result<(), StepError> {
        let dock_id = job
            .dock_status_id
            .clone()
            .ok_or_else(|| StoreError::Corrupt {
                job: job.id,
                detail: "importing without a dock status id".into(),
            })?;
        let mut interval = self.settings.poll_interval;
        loop {
            let st = self.retry(|| self.platform.dock_status(&dock_id)).await?;
            let id = self.id;
            match st.status {
                ImportStatus::InProgress => {
                    self.sleep(interval).await?;
                    interval = (interval * 2).min(self.settings.poll_interval_max.max(interval));
                }
                ImportStatus::Success => {
                    let model = st.model_id.clone();
                    self.store
                        .call(move |s| s.succeed(id, model.as_deref()))
                        .await?;
                    if let Some(started) = job.started_at {
                        let secs = SystemTime::now()
                            .duration_since(started)
                            .unwrap_or_default()
                            .as_secs_f64();
                        self.metrics.import_duration.observe(secs);
                    }
                    info!(dock_status_id = %dock_id, "import succeeded");
                    return Ok(());
                }
                ImportStatus::Failed => {
                    let message = st.message.clone();
                    let error = match &message {
                        Some(m) => format!("the platform reports the import FAILED: {m}"),
                        None => "the platform reports the import FAILED".to_string(),
                    };
                    self.fail(Failure {
                        error,
                        stage: "import".into(),
                        http_status: None,
                        platform_message: message,
                    })
                    .await?;
                    return Ok(());
                }
            }
        }
    }
}

/// The `reason` label of the retries metric.
fn retry_reason(e: &PlatformError) -> &'static str {
    match e.status {
        None => "network",
        Some(408) => "timeout",
        Some(429) => "rate_limited",
        Some(s) if s >= 500 => "server_error",
        Some(_) => "malformed_answer",
    }
}

fn round(d: Duration) -> Duration {
    if d >= Duration::from_secs(1) {
        Duration::from_secs(d.as_secs())
    } else {
        Duration::from_millis(d.as_millis() as u64)
    }
}
