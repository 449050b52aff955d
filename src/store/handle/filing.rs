//! The [`Store`] interface's filing steps of finished daemon jobs, each
//! with its SQLite and PostgreSQL arm.

use std::path::Path;

use super::{Backend, Store};
use crate::job::{FilingState, JobId};
use crate::store::error::Result;

impl Store {
    // Filing of finished daemon jobs (the daemon alone files; no hold).

    /// Records where a finished job's file goes, before anything moves.
    /// Planning twice keeps the first plan.
    pub async fn plan_filing(&self, id: JobId, dest: Option<&Path>) -> Result<()> {
        let dest = dest.map(Path::to_path_buf);
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("job {id}: planning its filing"), move |db| {
                    db.plan_filing(id, dest.as_deref())
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    format!("job {id}: planning its filing"),
                    b.plan_filing(id, dest.as_deref()),
                )
                .await
            }
        }
    }

    /// The planned filing is carried out (`done`) or does not apply (`skipped`).
    pub async fn finish_filing(&self, id: JobId, state: FilingState) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("job {id}: recording its filing"), move |db| {
                    db.finish_filing(id, state)
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    format!("job {id}: recording its filing"),
                    b.finish_filing(id, state),
                )
                .await
            }
        }
    }

    /// Filing failed this time; it is retried.
    pub async fn note_filing_error(&self, id: JobId, error: &str) -> Result<()> {
        let error = error.to_string();
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("job {id}: recording a filing error"), move |db| {
                    db.note_filing_error(id, &error)
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    format!("job {id}: recording a filing error"),
                    b.note_filing_error(id, &error),
                )
                .await
            }
        }
    }
}
