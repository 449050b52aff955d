//! Operators' operations and dedupe in PostgreSQL, as in SQLite
//! (`store/manage.rs`, `store/dedupe.rs`): listing with filters, cancelling
//! a job another instance may be driving (its holder sees the state when it
//! renews its lease), pruning, and imported files found by size and sha256.

use std::time::SystemTime;

use tokio_postgres::types::ToSql;

use super::jobs::refusal;
use super::{pg_error, PgBackend};
use crate::job::{Job, JobId, JobState, Stage};
use crate::store::error::{Result, StoreError};
use crate::store::manage::{cancellable, prunable, JobQuery, PRUNED_DETAILS};
use crate::store::rows::{state_in, to_ms};

impl PgBackend {
    /// The jobs `q` selects that are not pruned, newest first.
    pub(crate) async fn list(&self, q: &JobQuery) -> Result<Vec<Job>> {
        let mut filter = vec!["NOT j.pruned".to_string()];
        let since = q.since.map(to_ms);
        let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if !q.ids.is_empty() {
            args.push(&q.ids);
            filter.push(format!("j.id = ANY(${})", args.len()));
        }
        if !q.states.is_empty() {
            filter.push(state_in(&q.states));
        }
        if let Some(since) = &since {
            args.push(since);
            filter.push(format!("j.updated_at >= ${}", args.len()));
        }
        let mut sql = format!("WHERE {} ORDER BY j.id DESC", filter.join(" AND "));
        if let Some(limit) = q.limit {
            sql.push_str(&format!(" LIMIT {}", limit.min(i64::MAX as usize)));
        }
        self.select(&sql, &args).await
    }

    /// The job's state alone (polled often: prepared once per connection).
    pub(crate) async fn job_state(&self, id: JobId) -> Result<JobState> {
        let mut conn = self.0.pool.get().await?;
        let statement = conn
            .prepared("SELECT state FROM jobs WHERE id = $1")
            .await?;
        let row = conn
            .query_opt(&statement, &[&id])
            .await
            .map_err(pg_error)?
            .ok_or(StoreError::NotFound(id))?;
        let state: String = row.get("state");
        state.parse().map_err(|e| StoreError::Corrupt {
            job: id,
            detail: format!("{e}"),
        })
    }

    /// Moves the job to `cancelled` whoever holds it: its holder sees the
    /// state when it next renews the lease, and stops.
    pub(crate) async fn cancel(&self, id: JobId, reason: &str) -> Result<()> {
        let now = to_ms(SystemTime::now());
        let sql = format!(
            "UPDATE jobs AS j SET state = $1, updated_at = $2, finished_at = $2, error = $3, \
             error_stage = $4, http_status = NULL, platform_message = NULL, next_retry_at = NULL \
             WHERE j.id = $5 AND NOT j.pruned AND {}",
            state_in(&cancellable())
        );
        let conn = self.0.pool.get().await?;
        let changed = conn
            .execute(
                &sql,
                &[
                    &JobState::Cancelled.as_str(),
                    &now,
                    &reason,
                    &Stage::Cancelled.as_str(),
                    &id,
                ],
            )
            .await
            .map_err(pg_error)?;
        if changed == 0 {
            drop(conn);
            return Err(StoreError::InvalidTransition {
                job: id,
                from: self.job_state(id).await?,
                to: JobState::Cancelled,
            });
        }
        Ok(())
    }

    /// Forgets the details of finished (and filed) jobs that finished
    /// before `cutoff`; how many.
    pub(crate) async fn prune(&self, cutoff: SystemTime) -> Result<u64> {
        let which = prunable("$1");
        let cutoff = to_ms(cutoff);
        let mut conn = self.0.pool.get().await?;
        let tx = conn.transaction().await.map_err(pg_error)?;
        tx.execute(
            &format!("DELETE FROM chunks WHERE job_id IN (SELECT j.id FROM jobs j WHERE {which})"),
            &[&cutoff],
        )
        .await
        .map_err(pg_error)?;
        let pruned = tx
            .execute(
                &format!("UPDATE jobs AS j SET pruned = TRUE, {PRUNED_DETAILS} WHERE {which}"),
                &[&cutoff],
            )
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(pruned)
    }

    /// Whether a file of exactly `size` bytes was imported with this kind.
    pub(crate) async fn imported_size_exists(
        &self,
        size: u64,
        file_context: &str,
        is_adapter: bool,
    ) -> Result<bool> {
        let conn = self.0.pool.get().await?;
        let row = conn
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM jobs j WHERE j.size = $1 AND j.sha256 IS NOT NULL \
                 AND j.state = $2 AND j.file_context = $3 AND j.is_adapter = $4) AS found",
                &[
                    &(size as i64),
                    &JobState::Succeeded.as_str(),
                    &file_context,
                    &is_adapter,
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(row.get("found"))
    }

    /// The import of these bytes with this kind: the newest job that
    /// imported them itself, else the newest duplicate of them.
    pub(crate) async fn find_imported(
        &self,
        size: u64,
        sha256: &str,
        file_context: &str,
        is_adapter: bool,
    ) -> Result<Option<Job>> {
        Ok(self
            .select(
                "WHERE j.size = $1 AND j.sha256 = $2 AND j.state = $3 AND j.file_context = $4 \
                 AND j.is_adapter = $5 ORDER BY (j.duplicate_of IS NOT NULL), j.id DESC LIMIT 1",
                &[
                    &(size as i64),
                    &sha256,
                    &JobState::Succeeded.as_str(),
                    &file_context,
                    &is_adapter,
                ],
            )
            .await?
            .pop())
    }

    /// Settles queued job `id`, held under `fence`, as a duplicate of
    /// `original`: `succeeded`, nothing sent.
    pub(crate) async fn succeed_duplicate(
        &self,
        id: JobId,
        fence: super::jobs::Fence<'_>,
        sha256: &str,
        original: &Job,
    ) -> Result<()> {
        let (from, to) = (JobState::Queued, JobState::Succeeded);
        debug_assert!(from.can_become(to));
        let of = original.duplicate_of.unwrap_or(original.id);
        let now = to_ms(SystemTime::now());
        let conn = self.0.pool.get().await?;
        let changed = conn
            .execute(
                "UPDATE jobs SET state = $3, updated_at = $4, started_at = COALESCE(started_at, $4), \
                 finished_at = $4, sha256 = $5, duplicate_of = $6, model_id = $7, dock_status_id = $8, \
                 error = NULL, error_stage = NULL, next_retry_at = NULL \
                 WHERE id = $1 AND state = $2 AND instance = $9 AND lease_token = $10",
                &[
                    &id,
                    &from.as_str(),
                    &to.as_str(),
                    &now,
                    &sha256,
                    &of,
                    &original.model_id,
                    &original.dock_status_id,
                    &fence.instance,
                    &fence.token,
                ],
            )
            .await
            .map_err(pg_error)?;
        if changed == 0 {
            return Err(refusal(&*conn, id, fence, Some(to)).await);
        }
        Ok(())
    }
}
