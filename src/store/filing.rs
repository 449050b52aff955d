//! Filing of finished daemon jobs in SQLite, guarded by the filing rules of
//! [`crate::job::filing`] as job transitions are by the job rules.

use std::path::Path;
use std::time::SystemTime;

use rusqlite::params;

use super::error::{Result, StoreError};
use super::open::SqliteStore;
use super::rows::{sql_list, state_in, to_ms};
use crate::job::{FilingState, Job, JobId, JobState};

/// `(j.filing IS NULL OR j.filing IN (...))`: the filing steps in `from`
/// (`None`: not planned).
pub(super) fn filing_in(from: impl IntoIterator<Item = Option<FilingState>>) -> String {
    let from: Vec<Option<FilingState>> = from.into_iter().collect();
    let mut parts = Vec::new();
    if from.contains(&None) {
        parts.push("j.filing IS NULL".to_string());
    }
    let named: Vec<&str> = from.iter().flatten().map(|f| f.as_str()).collect();
    if !named.is_empty() {
        parts.push(format!("j.filing IN ({})", sql_list(named)));
    }
    if parts.is_empty() {
        return "FALSE".into();
    }
    format!("({})", parts.join(" OR "))
}

impl SqliteStore {
    /// Moves a finished job's filing to `to`, guarded by the filing rules;
    /// `set` adds columns (`col = ?N` from `?3` on). Returns the job as it
    /// was when the rules refused.
    fn filing_step(
        &mut self,
        id: JobId,
        to: FilingState,
        set: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<std::result::Result<(), Job>> {
        let sql = format!(
            "UPDATE jobs AS j SET filing = ?1{sep}{set} \
             WHERE j.id = ?2 AND {finished} AND {from}",
            sep = if set.is_empty() { "" } else { ", " },
            finished = state_in(&JobState::FINISHED),
            from = filing_in(FilingState::sources(to)),
        );
        let to_text = to.as_str();
        let mut all: Vec<&dyn rusqlite::ToSql> = vec![&to_text, &id];
        all.extend_from_slice(args);
        if self.conn.execute(&sql, all.as_slice())? == 0 {
            return Ok(Err(self.job(id)?));
        }
        Ok(Ok(()))
    }

    /// Records where a finished job's file goes, before anything moves.
    /// Planning twice keeps the first plan.
    pub fn plan_filing(&mut self, id: JobId, dest: Option<&Path>) -> Result<()> {
        let dest = dest.map(|d| d.to_string_lossy().into_owned());
        match self.filing_step(id, FilingState::Pending, "filing_dest = ?3", &[&dest])? {
            Ok(()) => Ok(()),
            Err(job) if job.filing.is_some() => Ok(()),
            Err(job) => Err(refused(&job, FilingState::Pending)),
        }
    }

    /// The job's file and receipt are in place (`done`), or filing does not
    /// apply (`skipped`).
    pub fn finish_filing(&mut self, id: JobId, state: FilingState) -> Result<()> {
        let now = to_ms(SystemTime::now());
        match self.filing_step(id, state, "filing_error = NULL, filed_at = ?3", &[&now])? {
            Ok(()) => Ok(()),
            Err(job) => Err(refused(&job, state)),
        }
    }

    /// Filing failed this time (permissions, full disk); it is retried.
    pub fn note_filing_error(&mut self, id: JobId, error: &str) -> Result<()> {
        let changed = self.conn.execute(
            "UPDATE jobs SET filing_error = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, error, to_ms(SystemTime::now())],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound(id));
        }
        Ok(())
    }

    /// Finished daemon jobs whose filing is not final: never planned, or
    /// planned and not yet carried out.
    pub fn unfiled(&self) -> Result<Vec<Job>> {
        self.select(&unfiled_filter(), [])
    }
}

/// The filter (and order) of [`SqliteStore::unfiled`], for both backends:
/// finished daemon jobs whose filing is not planned or still open.
pub(super) fn unfiled_filter() -> String {
    let open = std::iter::once(None).chain(FilingState::OPEN.into_iter().map(Some));
    format!(
        "WHERE {} AND j.watch_dir IS NOT NULL AND {} ORDER BY j.id",
        state_in(&JobState::FINISHED),
        filing_in(open),
    )
}

pub(super) fn refused(job: &Job, to: FilingState) -> StoreError {
    StoreError::InvalidFiling {
        job: job.id,
        state: job.state,
        from: job.filing.as_ref().map(|f| f.state),
        to,
    }
}

#[cfg(test)]
pub(super) fn guard_for(to: FilingState) -> String {
    filing_in(FilingState::sources(to))
}
