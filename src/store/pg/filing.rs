//! Filing of finished daemon jobs in PostgreSQL, guarded by the filing
//! rules as in SQLite. The daemon's filer holds the job while it files it,
//! so one instance files each job.

use std::path::Path;
use std::time::SystemTime;

use tokio_postgres::types::ToSql;

use super::jobs::{text, Args};
use super::{pg_error, PgBackend};
use crate::job::{FilingState, Job, JobId, JobState};
use crate::store::error::{Result, StoreError};
use crate::store::filing::{filing_in, refused};
use crate::store::rows::{state_in, to_ms};

impl PgBackend {
    /// Moves a finished job's filing to `to`; the job as it was when refused.
    async fn filing_step(
        &self,
        id: JobId,
        to: FilingState,
        set: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<std::result::Result<(), Job>> {
        let sql = format!(
            "UPDATE jobs AS j SET filing = $1{sep}{set} \
             WHERE j.id = $2 AND {finished} AND {from}",
            sep = if set.is_empty() { "" } else { ", " },
            finished = state_in(&JobState::FINISHED),
            from = filing_in(FilingState::sources(to)),
        );
        let to_text = to.as_str();
        let mut all: Args = vec![&to_text, &id];
        all.extend_from_slice(args);
        let conn = self.0.pool.get().await?;
        if conn.execute(&sql, &all).await.map_err(pg_error)? == 0 {
            drop(conn);
            return Ok(Err(self.job(id).await?));
        }
        Ok(Ok(()))
    }

    pub(crate) async fn plan_filing(&self, id: JobId, dest: Option<&Path>) -> Result<()> {
        let dest = dest.map(text).transpose()?;
        match self
            .filing_step(id, FilingState::Pending, "filing_dest = $3", &[&dest])
            .await?
        {
            Ok(()) => Ok(()),
            Err(job) if job.filing.is_some() => Ok(()),
            Err(job) => Err(refused(&job, FilingState::Pending)),
        }
    }

    pub(crate) async fn finish_filing(&self, id: JobId, state: FilingState) -> Result<()> {
        let now = to_ms(SystemTime::now());
        match self
            .filing_step(id, state, "filing_error = NULL, filed_at = $3", &[&now])
            .await?
        {
            Ok(()) => Ok(()),
            Err(job) => Err(refused(&job, state)),
        }
    }

    pub(crate) async fn note_filing_error(&self, id: JobId, error: &str) -> Result<()> {
        let conn = self.0.pool.get().await?;
        let changed = conn
            .execute(
                "UPDATE jobs SET filing_error = $2, updated_at = $3 WHERE id = $1",
                &[&id, &error, &to_ms(SystemTime::now())],
            )
            .await
            .map_err(pg_error)?;
        if changed == 0 {
            return Err(StoreError::NotFound(id));
        }
        Ok(())
    }
}
