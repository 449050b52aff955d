//! The [`Store`] interface's filing steps of finished daemon jobs, each
//! with its SQLite and PostgreSQL arm.
//!
//! The daemon alone files. A filer that holds the job (fleet mode, where
//! instances take turns on finished jobs too) passes its [`Hold`]: the
//! write is then this store's hold's, and in PostgreSQL fenced by its lease,
//! so a filer whose lease was taken over is refused
//! ([`StoreError::LeaseLost`](crate::store::StoreError::LeaseLost)) rather
//! than filing the job beside its new holder.

use std::path::Path;

use super::{Backend, Hold, Store};
use crate::job::{FilingState, JobId};
use crate::store::error::Result;

impl Store {
    /// Checks `hold`, when given, for job `id`.
    fn check_some(&self, id: JobId, hold: Option<&Hold>) -> Result<()> {
        hold.map_or(Ok(()), |h| self.check(id, h))
    }

    /// Records where a finished job's file goes, before anything moves.
    /// Planning twice keeps the first plan.
    pub async fn plan_filing(
        &self,
        id: JobId,
        hold: Option<&Hold>,
        dest: Option<&Path>,
    ) -> Result<()> {
        self.check_some(id, hold)?;
        match &self.backend {
            Backend::Sqlite(b) => {
                let dest = dest.map(Path::to_path_buf);
                b.call(
                    || format!("job {id}: planning its filing"),
                    move |db| db.plan_filing(id, dest.as_deref()),
                )
                .await
            }
            Backend::Postgres(b) => {
                let fence = hold.map(Hold::fence).transpose()?;
                b.ctx(
                    || format!("job {id}: planning its filing"),
                    b.plan_filing(id, fence, dest),
                )
                .await
            }
        }
    }

    /// The planned filing is carried out (`done`) or does not apply (`skipped`).
    pub async fn finish_filing(
        &self,
        id: JobId,
        hold: Option<&Hold>,
        state: FilingState,
    ) -> Result<()> {
        self.check_some(id, hold)?;
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(
                    || format!("job {id}: recording its filing"),
                    move |db| db.finish_filing(id, state),
                )
                .await
            }
            Backend::Postgres(b) => {
                let fence = hold.map(Hold::fence).transpose()?;
                b.ctx(
                    || format!("job {id}: recording its filing"),
                    b.finish_filing(id, fence, state),
                )
                .await
            }
        }
    }

    /// Filing failed this time; it is retried.
    pub async fn note_filing_error(
        &self,
        id: JobId,
        hold: Option<&Hold>,
        error: &str,
    ) -> Result<()> {
        self.check_some(id, hold)?;
        match &self.backend {
            Backend::Sqlite(b) => {
                let error = error.to_string();
                b.call(
                    || format!("job {id}: recording a filing error"),
                    move |db| db.note_filing_error(id, &error),
                )
                .await
            }
            Backend::Postgres(b) => {
                let fence = hold.map(Hold::fence).transpose()?;
                b.ctx(
                    || format!("job {id}: recording a filing error"),
                    b.note_filing_error(id, fence, error),
                )
                .await
            }
        }
    }
}
