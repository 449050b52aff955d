//! What a queued job goes through before its first session: pre-flight
//! (`upload.preflight`) and dedupe (`upload.dedupe`).
//!
//! A rejected archive fails the job (stage `preflight`) before anything
//! reaches the platform; a duplicate of an imported file succeeds at once as
//! that import's duplicate (a file dedupe had to hash is not hashed again
//! by its upload). Only a job still `queued` is checked: once a
//! session is started the job is committed to its upload (a gzip archive's
//! stream is then checked by the pipeline as it is read).

use tracing::info;

use super::dedupe::{look_up, DedupeError};
use super::{ChunkPlan, JobCtx, StepError};
use crate::job::{HashCheckpoint, Job};
use crate::preflight::{check_file, Depth, PreflightError};

impl From<PreflightError> for StepError {
    fn from(e: PreflightError) -> Self {
        match e {
            PreflightError::Rejected(r) => StepError::Preflight(r),
            PreflightError::Source(e) => StepError::Source(e),
            PreflightError::Stopped => StepError::Cancelled,
        }
    }
}

impl From<DedupeError> for StepError {
    fn from(e: DedupeError) -> Self {
        match e {
            DedupeError::Store(e) => StepError::Store(e),
            DedupeError::Source(e) => StepError::Source(e),
            DedupeError::Cancelled => StepError::Cancelled,
        }
    }
}

impl JobCtx {
    /// A queued job: pre-flight, dedupe, then its first session.
    pub(super) async fn queued(&self, job: &Job) -> Result<(), StepError> {
        // An empty file is refused by the session step, with its own message.
        if job.size() > 0 && self.settings.preflight {
            let (path, identity, cancel) = (job.path.clone(), job.identity, self.cancel.clone());
            let (format, summary) = tokio::task::spawn_blocking(move || {
                check_file(&path, &identity, Depth::Quick, &|| cancel.is_cancelled())
            })
            .await??;
            info!(?format, members = summary.members, "pre-flight passed");
        }
        if job.size() > 0 && self.settings.dedupe {
            let found = look_up(
                &self.store,
                &job.path,
                &job.identity,
                &job.file_context,
                job.is_adapter,
                &self.cancel,
            )
            .await?;
            // The file was read for its hash: the upload resumes from it
            // instead of hashing every byte a second time.
            if let Some(h) = &found.hashed {
                let chunks = ChunkPlan::new(job.size(), job.chunk_size).chunks();
                self.hashed.set(HashCheckpoint {
                    chunks,
                    state: h.save(),
                });
            }
            if let Some(dup) = found.duplicate {
                self.store
                    .succeed_duplicate(self.id, &self.hold, &dup.sha256, &dup.original)
                    .await?;
                info!(
                    duplicate_of = dup.original.duplicate_of.unwrap_or(dup.original.id),
                    model_id = dup.original.model_id.as_deref().unwrap_or(""),
                    "already imported (same size and sha256); not uploading"
                );
                return Ok(());
            }
        }
        self.start_session(job).await
    }
}
