//! The [`Store`] interface's operators' operations (cancel, prune) and
//! dedupe lookups, each with its SQLite and PostgreSQL arm.

use std::time::SystemTime;

use super::{Backend, Hold, Store};
use crate::job::{Job, JobId};
use crate::store::error::Result;

impl Store {
    // Operators' changes (no hold: another process may be driving the job).

    /// Moves a `queued`, `uploading` or `completing` job to `cancelled`
    /// (error stage `cancelled`, `reason` as its error). The process driving
    /// it, if any, notices from the store and stops; others refuse
    /// ([`StoreError::InvalidTransition`]).
    pub async fn cancel(&self, id: JobId, reason: &str) -> Result<()> {
        let reason = reason.to_string();
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(
                    || format!("job {id}: cancelling it"),
                    move |db| db.cancel(id, &reason),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(|| format!("job {id}: cancelling it"), b.cancel(id, &reason))
                    .await
            }
        }
    }

    /// Forgets the details of jobs finished (and filed) before `cutoff`,
    /// keeping what recognises their files; returns how many.
    pub async fn prune(&self, cutoff: SystemTime) -> Result<u64> {
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(
                    || "pruning finished jobs".into(),
                    move |db| db.prune(cutoff),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(|| "pruning finished jobs".into(), b.prune(cutoff))
                    .await
            }
        }
    }

    // Dedupe (imported files by size, then sha256).

    /// Whether a file of exactly `size` bytes was imported with this
    /// `file_context` and `is_adapter`: only then is a sha256 pass worth it.
    pub async fn imported_size_exists(
        &self,
        size: u64,
        file_context: &str,
        is_adapter: bool,
    ) -> Result<bool> {
        let ctx = file_context.to_string();
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(
                    || "looking up imported files by size".into(),
                    move |db| db.imported_size_exists(size, &ctx, is_adapter),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    || "looking up imported files by size".into(),
                    b.imported_size_exists(size, &ctx, is_adapter),
                )
                .await
            }
        }
    }

    /// The succeeded job that imported these bytes with this kind, if any.
    pub async fn find_imported(
        &self,
        size: u64,
        sha256: &str,
        file_context: &str,
        is_adapter: bool,
    ) -> Result<Option<Job>> {
        let (sha, ctx) = (sha256.to_string(), file_context.to_string());
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(
                    || "looking up imported files by sha256".into(),
                    move |db| db.find_imported(size, &sha, &ctx, is_adapter),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    || "looking up imported files by sha256".into(),
                    b.find_imported(size, &sha, &ctx, is_adapter),
                )
                .await
            }
        }
    }

    /// A queued job whose bytes (`sha256`) `original` imported already:
    /// `succeeded` as its duplicate, nothing sent.
    pub async fn succeed_duplicate(
        &self,
        id: JobId,
        hold: &Hold,
        sha256: &str,
        original: &Job,
    ) -> Result<()> {
        self.check(id, hold)?;
        let (sha, original) = (sha256.to_string(), original.clone());
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(
                    || format!("job {id}: recording a duplicate"),
                    move |db| db.succeed_duplicate(id, &sha, &original),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    || format!("job {id}: recording a duplicate"),
                    b.succeed_duplicate(id, hold.fence()?, &sha, &original),
                )
                .await
            }
        }
    }
}
