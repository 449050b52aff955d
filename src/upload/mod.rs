//! The upload engine: drives one job from `queued` to `succeeded` or `failed`.
//!
//! [`Engine::run_job`] reads the job from the store and carries it forward one
//! step at a time: start a session, upload the chunks not yet acknowledged,
//! complete, poll dock status. Every step's result is committed to the store
//! before the next step depends on it, so the job can be resumed from the
//! store alone after a crash at any point. Chunks are read once with
//! positioned reads, the whole file hashed on a thread of its own from the
//! same buffers ([`pipeline`]), and up to `parallel_chunks` are in flight
//! through the process's `upload.max_rate`. A session the measured rate
//! cannot fill in time is warned about, and the job fails after the second
//! one lost that way ([`pace`]) rather than sending the file forever.
//!
//! A queued job is first checked (`checks`: pre-flight, dedupe); a gzip
//! archive's stream is checked as the pipeline reads it.
//!
//! Around the engine: [`admit`] decides whether a file becomes a new job or
//! resumes one, and [`setup`] builds the platform client from the
//! configuration; `upload` and the daemon share both.

pub mod admit;
mod backoff;
mod checks;
pub mod dedupe;
mod hash;
mod import;
mod pace;
mod pipeline;
mod plan;
mod session;
pub mod setup;

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
use crate::job::{ChunkChecksum, Failure, Job, JobId, Stage};
use crate::metrics::Metrics;
use crate::platform::{ErrorKind, Op, PlatformClient, PlatformError};
use crate::source::SourceError;
use crate::store::{Hold, Store, StoreError};

/// How a run of a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The platform imported the file (or it was a duplicate of one it had).
    Succeeded {
        /// The platform's model id, if known.
        model_id: Option<String>,
        /// The dock status id that reported SUCCESS, if there was one.
        dock_status_id: Option<String>,
    },
    /// The job failed for good; the error, as recorded.
    Failed(String),
    /// The platform rejected the API key; the job is kept as it was.
    AuthRejected(String),
    /// Stopped on request; the job resumes from the store.
    Interrupted,
    /// Another modelferry process is running this job right now.
    Busy,
    /// `modelferry cancel` stopped the job; it is `cancelled` in the store.
    Cancelled,
}

/// What a watcher of a running job sees.
#[derive(Debug, Clone)]
pub struct JobProgress {
    /// Where the job is.
    pub state: JobState,
    /// Chunks acknowledged in the current session.
    pub chunks_done: u64,
    /// Chunks the file is cut into (0 until planned).
    pub chunks_total: u64,
    /// Bytes of the chunks acknowledged.
    pub bytes_done: u64,
    /// The file's size.
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
    /// A file read or chunk upload task panicked or was cancelled.
    #[error("{0}")]
    Task(String),
    #[error("the session is about to expire")]
    SessionExpiring,
    /// Pre-flight rejected the archive (before a session, or in its stream).
    #[error("pre-flight rejected the archive: {0}")]
    Preflight(crate::preflight::Rejection),
    #[error("interrupted")]
    Cancelled,
}

impl From<tokio::task::JoinError> for StepError {
    fn from(e: tokio::task::JoinError) -> Self {
        StepError::Task(format!("file read task: {e}"))
    }
}

/// A local failure that stopped a run of a job; the job stays resumable.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file read or chunk upload task of the job panicked or was cancelled.
    #[error("job task did not finish: {0}")]
    Task(String),
}

/// Runs jobs against one platform with one store.
#[derive(Clone)]
pub struct Engine {
    store: Store,
    platform: PlatformClient,
    settings: Arc<UploadConfig>,
    metrics: Arc<Metrics>,
}

/// Everything a step of one job needs; cheap to clone into chunk tasks.
#[derive(Clone)]
pub(crate) struct JobCtx {
    pub id: JobId,
    /// This process's hold on the job: every write for it carries it.
    pub hold: Hold,
    pub store: Store,
    pub platform: PlatformClient,
    pub settings: Arc<UploadConfig>,
    pub metrics: Arc<Metrics>,
    pub cancel: CancellationToken,
    pub progress: Arc<watch::Sender<JobProgress>>,
    /// The upload rate measured over the latest session of this run.
    pub pace: Arc<pace::Pace>,
    /// The file's hash, when dedupe computed it in this run.
    pub hashed: hash::RunHash,
}

/// Reads failures of the source file retried before the job fails.
const READ_RETRIES: u32 = 3;
/// Sessions lost in a row before any chunk was acknowledged in them, from
/// which on the job is held: the error shown in `status`, the next session
/// only after a backoff. Two: one loss can be bad luck, two in a row of
/// sessions that never took a chunk are a pattern.
const HOLD_AFTER_LOST: u32 = 2;

impl Engine {
    /// An engine that runs jobs in `store` against `platform`.
    pub fn new(
        store: Store,
        platform: PlatformClient,
        settings: UploadConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.max_rate.set(platform.max_rate() as i64);
        Engine {
            store,
            platform,
            settings: Arc::new(settings),
            metrics,
        }
    }

    /// The platform client the engine uses.
    pub fn platform(&self) -> &PlatformClient {
        &self.platform
    }

    /// Carries job `id` as far as it goes: to a final state, a rejected key,
    /// or `cancel`. In-flight chunk requests are let finish when `cancel`
    /// fires; the caller bounds that with its grace period. When the hold
    /// ends instead (`modelferry cancel` from another process, the job
    /// finished elsewhere, a lease lost) the job's work is dropped at once,
    /// requests in flight included, so nothing more is sent for it.
    #[instrument(skip_all, fields(job_id = id, file = tracing::field::Empty))]
    pub async fn run_job(
        &self,
        id: JobId,
        cancel: CancellationToken,
        progress: Arc<watch::Sender<JobProgress>>,
    ) -> Result<Outcome, EngineError> {
        let hold = match self.store.hold(id).await {
            Ok(hold) => hold,
            Err(StoreError::Busy(_)) => {
                warn!("another modelferry process is running this job; leaving it to that one");
                return Ok(Outcome::Busy);
            }
            Err(e) => return Err(e.into()),
        };
        let hold_ended = hold.stopped(&CancellationToken::new());
        let ctx = JobCtx {
            id,
            hold,
            store: self.store.clone(),
            platform: self.platform.clone(),
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
            cancel,
            progress,
            pace: Arc::default(),
            hashed: hash::RunHash::default(),
        };
        let (outcome, ended) = tokio::select! {
            r = self.drive(&ctx) => (r, false),
            _ = hold_ended.cancelled() => (Ok(Outcome::Interrupted), true),
        };
        // Its watcher ends with the run.
        hold_ended.cancel();
        // The job's state says how a stopped run ended: cancelled when
        // `cancel` did it (seen by the hold, or as a write the store
        // refused because of it). The hold also ends on this run's own
        // last write (succeeded, failed), when it is seen before the run
        // returns: only this holder writes those (under its lock, or as the
        // instance its lease names), so the job says how it ended; a job
        // another instance took over and finished is not this run's.
        let outcome = match outcome {
            Ok(Outcome::Succeeded { .. } | Outcome::Cancelled) => outcome,
            other => match self.store.job(id).await {
                Ok(job) if job.state == JobState::Cancelled => Ok(Outcome::Cancelled),
                Ok(job) if ended && job.instance.as_deref() == self.store.instance() => {
                    ctx.show(&job);
                    Ok(outcome_of(job))
                }
                _ => other,
            },
        };
        if matches!(outcome, Ok(Outcome::Cancelled)) {
            ctx.progress.send_modify(|p| p.state = JobState::Cancelled);
        }
        if matches!(
            outcome,
            Ok(Outcome::Succeeded { .. } | Outcome::Failed(_) | Outcome::Cancelled)
        ) {
            ctx.hold.finished();
        }
        let JobCtx { hold, store, .. } = ctx;
        store.release(hold).await;
        outcome
    }

    async fn drive(&self, ctx: &JobCtx) -> Result<Outcome, EngineError> {
        let id = ctx.id;
        let mut read_failures = 0;
        let mut named = false;
        // Sessions replaced in a row: a platform that loses every new
        // session must not be asked for new ones in a tight loop.
        let mut replaced = Backoff::new(ctx.settings.retry_initial, ctx.settings.retry_max);
        // Of those, how many were lost before any chunk was acknowledged.
        let mut lost_unused = 0;
        // Sessions that expired when the measured rate said the file could
        // not be sent within one: the second fails the job.
        let mut too_short = 0;
        loop {
            let job = ctx.store.job(id).await?;
            if !named {
                tracing::Span::current().record(
                    "file",
                    tracing::field::display(Escaped::str(&job.file_name)),
                );
                named = true;
            }
            ctx.show(&job);
            let result = match job.state {
                JobState::Succeeded | JobState::Failed | JobState::Cancelled => {
                    return Ok(outcome_of(job))
                }
                JobState::Queued => ctx.queued(&job).await,
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
                    let acked = ctx.store.job(id).await?.chunks_done;
                    lost_unused = if acked == 0 { lost_unused + 1 } else { 0 };
                    if let Some(short) = ctx.too_short(&job) {
                        too_short += 1;
                        if too_short >= 2 {
                            let msg = short.failure(ctx.platform.max_rate());
                            return Ok(ctx.fail(Failure::new(Stage::Upload, msg)).await?);
                        }
                        warn!(error = %err, "the session ended before the file was sent: {}; starting over once more", short.describe());
                    }
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
    async fn settle_outcome(&self, err: StepError) -> Result<Outcome, EngineError> {
        let failure = match err {
            StepError::Cancelled => return Ok(Outcome::Interrupted),
            // Fleet mode: another instance has the job now; this one stops.
            StepError::Store(e @ StoreError::LeaseLost { .. }) => {
                warn!(error = %e, "the job was taken over; leaving it to its new holder");
                return Ok(Outcome::Busy);
            }
            StepError::Store(e) => return Err(e.into()),
            StepError::Task(e) => return Err(EngineError::Task(e)),
            StepError::Platform(e) if e.kind == ErrorKind::Auth => {
                let msg = format!("API key rejected by the platform: {e}");
                warn!(error = %e, "the platform rejected the API key; the file stays where it is");
                self.store
                    .note_error(self.id, &self.hold, &msg, None)
                    .await?;
                self.progress.send_modify(|p| p.note = Some(msg.clone()));
                return Ok(Outcome::AuthRejected(msg));
            }
            StepError::Platform(e) => Failure {
                error: e.to_string(),
                stage: stage_of(e.op),
                http_status: e.status,
                platform_message: e.platform_message.clone().map(String::from),
            },
            StepError::Source(e) => Failure::new(Stage::Read, e.to_string()),
            StepError::SessionExpiring => Failure::new(Stage::Upload, "the session expired"),
            StepError::Preflight(r) => Failure::new(
                Stage::Preflight,
                format!("pre-flight rejected the archive: {r}"),
            ),
        };
        Ok(self.fail(failure).await?)
    }

    async fn fail(&self, failure: Failure) -> Result<Outcome, StoreError> {
        warn!(error = %failure.error, stage = %failure.stage, "job failed");
        self.store.fail(self.id, &self.hold, &failure).await?;
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
        let at = SystemTime::now() + delay;
        self.store
            .note_error(self.id, &self.hold, error, Some(at))
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
            // The hold is checked by the clock too: a process resumed after
            // a pause past its lease must not send before the renewal task
            // has run and noticed.
            if self.cancel.is_cancelled() || !self.hold.is_live() {
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
        let acked: HashMap<u64, ChunkChecksum> = self
            .store
            .acked_chunks(self.id)
            .await?
            .into_iter()
            .map(|a| (a.index, a.checksum))
            .collect();
        let sha256 = pipeline::upload_chunks(self, job, &session, acked).await?;
        self.store
            .begin_complete(self.id, &self.hold, &sha256)
            .await?;
        info!("all chunks acknowledged; completing the import");
        Ok(())
    }
}

/// How a run that stopped at `job` ended: its final state's outcome, or
/// interrupted while it is active.
fn outcome_of(job: Job) -> Outcome {
    match job.state {
        JobState::Succeeded => Outcome::Succeeded {
            model_id: job.model_id,
            dock_status_id: job.dock_status_id,
        },
        JobState::Failed => Outcome::Failed(job.error.unwrap_or_default()),
        JobState::Cancelled => Outcome::Cancelled,
        _ => Outcome::Interrupted,
    }
}

/// The job stage a failed platform call belongs to, as receipts name it.
fn stage_of(op: Op) -> Stage {
    match op {
        Op::StartSession => Stage::Start,
        Op::UploadChunk(_) => Stage::Upload,
        Op::Complete => Stage::Complete,
        Op::DockStatus => Stage::Import,
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
