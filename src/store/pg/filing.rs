//! Filing of finished daemon jobs in PostgreSQL, guarded by the filing
//! rules as in SQLite. The daemon's filer holds the job while it files it,
//! so one instance files each job: given its lease's fence, a write is
//! refused ([`StoreError::LeaseLost`]) once another instance took the job.

use std::path::Path;
use std::time::SystemTime;

use tokio_postgres::types::ToSql;

use super::jobs::{fenced_row, text, Args, Fence};
use super::{pg_error, PgBackend};
use crate::job::{FilingState, Job, JobId, JobState};
use crate::store::error::{Result, StoreError};
use crate::store::filing::{filing_in, refused};
use crate::store::rows::{state_in, to_ms};

/// ` AND j.instance = $a AND j.lease_token = $b` for a fenced write whose
/// arguments so far are `args` (the fence's two pushed onto them), else "".
fn fence_guard<'a>(fence: Option<&'a Fence<'a>>, args: &mut Args<'a>) -> String {
    let Some(fence) = fence else {
        return String::new();
    };
    let n = args.len();
    args.push(&fence.instance);
    args.push(&fence.token);
    format!(
        " AND j.instance = ${} AND j.lease_token = ${}",
        n + 1,
        n + 2
    )
}

impl PgBackend {
    /// Moves a finished job's filing to `to`; the job as it was when refused.
    async fn filing_step(
        &self,
        id: JobId,
        fence: Option<Fence<'_>>,
        to: FilingState,
        set: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<std::result::Result<(), Job>> {
        let to_text = to.as_str();
        let mut all: Args = vec![&to_text, &id];
        all.extend_from_slice(args);
        let fenced = fence_guard(fence.as_ref(), &mut all);
        let sql = format!(
            "UPDATE jobs AS j SET filing = $1{sep}{set} \
             WHERE j.id = $2 AND {finished} AND {from}{fenced}",
            sep = if set.is_empty() { "" } else { ", " },
            finished = state_in(&JobState::FINISHED),
            from = filing_in(FilingState::sources(to)),
        );
        let conn = self.0.pool.get().await?;
        if conn.execute(&sql, &all).await.map_err(pg_error)? == 0 {
            if let Some(fence) = fence {
                fenced_row(&*conn, id, fence).await?;
            }
            drop(conn);
            return Ok(Err(self.job(id).await?));
        }
        Ok(Ok(()))
    }

    pub(crate) async fn plan_filing(
        &self,
        id: JobId,
        fence: Option<Fence<'_>>,
        dest: Option<&Path>,
    ) -> Result<()> {
        let dest = dest.map(text).transpose()?;
        match self
            .filing_step(
                id,
                fence,
                FilingState::Pending,
                "filing_dest = $3",
                &[&dest],
            )
            .await?
        {
            Ok(()) => Ok(()),
            Err(job) if job.filing.is_some() => Ok(()),
            Err(job) => Err(refused(&job, FilingState::Pending)),
        }
    }

    pub(crate) async fn finish_filing(
        &self,
        id: JobId,
        fence: Option<Fence<'_>>,
        state: FilingState,
    ) -> Result<()> {
        let now = to_ms(SystemTime::now());
        match self
            .filing_step(
                id,
                fence,
                state,
                "filing_error = NULL, filed_at = $3",
                &[&now],
            )
            .await?
        {
            Ok(()) => Ok(()),
            Err(job) => Err(refused(&job, state)),
        }
    }

    pub(crate) async fn note_filing_error(
        &self,
        id: JobId,
        fence: Option<Fence<'_>>,
        error: &str,
    ) -> Result<()> {
        let now = to_ms(SystemTime::now());
        let mut all: Args = vec![&id, &error, &now];
        let fenced = fence_guard(fence.as_ref(), &mut all);
        let sql = format!(
            "UPDATE jobs AS j SET filing_error = $2, updated_at = $3 WHERE j.id = $1{fenced}"
        );
        let conn = self.0.pool.get().await?;
        if conn.execute(&sql, &all).await.map_err(pg_error)? == 0 {
            return Err(match fence {
                Some(fence) => fenced_row(&*conn, id, fence).await.err(),
                None => None,
            }
            .unwrap_or(StoreError::NotFound(id)));
        }
        Ok(())
    }
}
