//! The [`Store`] interface's reads, each with its SQLite and PostgreSQL arm.

use std::path::Path;

use super::{Backend, Store};
use crate::escaped::Escaped;
use crate::job::{ChunkAck, Job, JobId, JobState};
use crate::source::FileIdentity;
use crate::store::error::Result;
use crate::store::manage::JobQuery;

impl Store {
    // Reads.

    /// The job with this id.
    pub async fn job(&self, id: JobId) -> Result<Job> {
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(|| format!("reading job {id}"), move |db| db.job(id))
                    .await
            }
            Backend::Postgres(b) => b.ctx(|| format!("reading job {id}"), b.job(id)).await,
        }
    }

    /// The jobs `query` selects, pruned ones left out, newest first.
    pub async fn list(&self, query: &JobQuery) -> Result<Vec<Job>> {
        let query = query.clone();
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(|| "reading jobs".into(), move |db| db.list(&query))
                    .await
            }
            Backend::Postgres(b) => b.ctx(|| "reading jobs".into(), b.list(&query)).await,
        }
    }

    /// Job `id`'s state alone; cheap enough to poll while driving it.
    pub async fn job_state(&self, id: JobId) -> Result<JobState> {
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(
                    || format!("reading job {id}'s state"),
                    move |db| db.job_state(id),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(|| format!("reading job {id}'s state"), b.job_state(id))
                    .await
            }
        }
    }

    /// Unfinished jobs nobody holds now, oldest first: in fleet mode those
    /// whose lease is unset or has run out (their holder died or stopped);
    /// SQLite does not know without trying the lock, so every job in an
    /// [active](JobState::ACTIVE) state.
    pub async fn takeable(&self) -> Result<Vec<Job>> {
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(|| "reading unfinished jobs".into(), |db| db.unfinished())
                    .await
            }
            Backend::Postgres(b) => {
                b.ctx(|| "reading jobs to take over".into(), b.takeable())
                    .await
            }
        }
    }

    /// Unfinished jobs for a file at `path` (whatever its identity).
    pub async fn unfinished_for_path(&self, path: &Path) -> Result<Vec<Job>> {
        match &self.backend {
            Backend::Sqlite(b) => {
                let owned = path.to_path_buf();
                b.call(
                    || format!("reading jobs for {}", Escaped::path(path)),
                    move |db| db.unfinished_for_path(&owned),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    || format!("reading jobs for {}", Escaped::path(path)),
                    b.unfinished_for_path(path),
                )
                .await
            }
        }
    }

    /// The newest job for this file identity and import kind. SQLite knows
    /// a file by (device, inode, size, mtime) wherever it is; fleet mode by
    /// its path, inode, size and mtime (device numbers differ per host).
    pub async fn find_by_identity(
        &self,
        path: &Path,
        identity: &FileIdentity,
        file_context: &str,
        is_adapter: bool,
    ) -> Result<Option<Job>> {
        let (path, identity, ctx) = (path.to_path_buf(), *identity, file_context.to_string());
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(
                    || "looking up a file's jobs".into(),
                    move |db| db.find_by_identity(&identity, &ctx, is_adapter),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    || "looking up a file's jobs".into(),
                    b.find_by_identity(&path, &identity, &ctx, is_adapter),
                )
                .await
            }
        }
    }

    /// Chunks acknowledged in the job's current session.
    pub async fn acked_chunks(&self, id: JobId) -> Result<Vec<ChunkAck>> {
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(
                    || format!("reading job {id}'s chunks"),
                    move |db| db.acked_chunks(id),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(|| format!("reading job {id}'s chunks"), b.acked_chunks(id))
                    .await
            }
        }
    }

    /// Finished daemon jobs whose filing is not final.
    pub async fn unfiled(&self) -> Result<Vec<Job>> {
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(|| "reading jobs to file".into(), |db| db.unfiled())
                    .await
            }
            Backend::Postgres(b) => b.ctx(|| "reading jobs to file".into(), b.unfiled()).await,
        }
    }
}
