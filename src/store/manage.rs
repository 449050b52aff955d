//! Operators' operations on jobs in SQLite: listing with filters, cancelling
//! a job another process may be driving, and pruning finished jobs.
//!
//! Pruning keeps a job's row with what recognises its file again (identity,
//! size, sha256, import kind, model and dock status ids, state and filing
//! step) so admission and dedupe still find it; its chunk rows and the rest
//! of its details go, and listings leave it out.

use std::time::SystemTime;

use rusqlite::{params_from_iter, OptionalExtension, TransactionBehavior};

use super::error::{Result, StoreError};
use super::open::SqliteStore;
use super::rows::{sql_list, state_in, to_ms};
use crate::job::{FilingState, Job, JobId, JobState, Stage};

/// Which jobs a listing shows. Empty lists mean "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobQuery {
    /// Only these jobs.
    pub ids: Vec<JobId>,
    /// Only jobs in these states.
    pub states: Vec<JobState>,
    /// Only jobs changed at or after this instant.
    pub since: Option<SystemTime>,
    /// At most this many jobs, newest first.
    pub limit: Option<usize>,
}

/// The details a pruned job no longer keeps. Everything else stays: what
/// recognises the file (identity, size, sha256, `file_context`,
/// `is_adapter`, model id, dock status id, job id), its state and filing
/// step (admission decides from them), and its timestamps.
pub(super) const PRUNED_DETAILS: &str = "session_id = NULL, session_started_at = NULL, \
     session_expires_at = NULL, hashed_chunks = 0, hash_state = NULL, error = NULL, \
     error_stage = NULL, http_status = NULL, platform_message = NULL, next_retry_at = NULL, \
     filing_dest = NULL, filing_error = NULL";

impl SqliteStore {
    /// The jobs `q` selects that are not pruned, newest first.
    pub fn list(&self, q: &JobQuery) -> Result<Vec<Job>> {
        let mut filter = vec!["j.pruned = 0".to_string()];
        let mut args: Vec<i64> = Vec::new();
        if !q.ids.is_empty() {
            let marks: Vec<String> = q
                .ids
                .iter()
                .map(|id| {
                    args.push(*id);
                    format!("?{}", args.len())
                })
                .collect();
            filter.push(format!("j.id IN ({})", marks.join(", ")));
        }
        if !q.states.is_empty() {
            filter.push(state_in(&q.states));
        }
        if let Some(since) = q.since {
            args.push(to_ms(since));
            filter.push(format!("j.updated_at >= ?{}", args.len()));
        }
        let mut sql = format!("WHERE {} ORDER BY j.id DESC", filter.join(" AND "));
        if let Some(limit) = q.limit {
            sql.push_str(&format!(" LIMIT {}", limit.min(i64::MAX as usize)));
        }
        self.select(&sql, params_from_iter(args))
    }

    /// The job's state alone (cheap: polled while a job is driven).
    pub fn job_state(&self, id: JobId) -> Result<JobState> {
        let state: Option<String> = self
            .conn
            .prepare_cached("SELECT state FROM jobs WHERE id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?;
        let state = state.ok_or(StoreError::NotFound(id))?;
        state.parse().map_err(|e| StoreError::Corrupt {
            job: id,
            detail: format!("{e}"),
        })
    }

    /// Moves the job to `cancelled` whoever drives it: the driving process
    /// notices from the store and stops. Guarded by the state rules.
    pub fn cancel(&mut self, id: JobId, reason: &str) -> Result<()> {
        let now = to_ms(SystemTime::now());
        let stage = Stage::Cancelled.as_str();
        let sql = format!(
            "UPDATE jobs AS j SET state = ?1, updated_at = ?2, finished_at = ?2, error = ?3, \
             error_stage = ?4, http_status = NULL, platform_message = NULL, next_retry_at = NULL \
             WHERE j.id = ?5 AND j.pruned = 0 AND {}",
            state_in(&cancellable())
        );
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            &sql,
            rusqlite::params![JobState::Cancelled.as_str(), now, reason, stage, id],
        )?;
        if changed == 0 {
            drop(tx);
            let from = self.job_state(id)?;
            return Err(StoreError::InvalidTransition {
                job: id,
                from,
                to: JobState::Cancelled,
            });
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets the details of finished jobs that finished before `cutoff`
    /// (see the module docs). A daemon job is pruned only once filed, since
    /// filing needs its details. Returns how many jobs were pruned.
    pub fn prune(&mut self, cutoff: SystemTime) -> Result<u64> {
        let which = prunable("?1");
        let cutoff = to_ms(cutoff);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            &format!("DELETE FROM chunks WHERE job_id IN (SELECT j.id FROM jobs j WHERE {which})"),
            [cutoff],
        )?;
        let pruned = tx.execute(
            &format!("UPDATE jobs AS j SET pruned = 1, {PRUNED_DETAILS} WHERE {which}"),
            [cutoff],
        )?;
        tx.commit()?;
        Ok(pruned as u64)
    }
}

/// Which jobs `prune` forgets, for both backends: finished (and, from a
/// drop folder, filed) before the cutoff, bound as `cutoff` (`?1`, `$1`).
pub(super) fn prunable(cutoff: &str) -> String {
    format!(
        "NOT j.pruned AND {finished} AND COALESCE(j.finished_at, j.updated_at) < {cutoff} \
         AND (j.watch_dir IS NULL OR j.filing IN ({filed}))",
        finished = state_in(&JobState::FINISHED),
        filed = sql_list(FilingState::FINAL.map(FilingState::as_str)),
    )
}

/// The states `cancel` takes a job from, as the job rules say.
pub(super) fn cancellable() -> Vec<JobState> {
    JobState::ALL
        .into_iter()
        .filter(|s| s.can_become(JobState::Cancelled))
        .collect()
}
