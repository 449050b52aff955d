//! Dedupe in SQLite: imported files found by size, then by sha256, and a
//! queued job settled as a duplicate of one.
//!
//! "Imported" means a `succeeded` job with a sha256, of the same
//! `file_context` and `is_adapter`; these columns (with `model_id`,
//! `dock_status_id` and the job id) are what pruning keeps, so a re-drop
//! is recognised after a prune too.

use std::time::SystemTime;

use rusqlite::{params, OptionalExtension};

use super::error::{Result, StoreError};
use super::open::SqliteStore;
use super::rows::to_ms;
use crate::job::{Job, JobId, JobState};

impl SqliteStore {
    /// Whether a file of exactly `size` bytes was imported with this kind.
    pub fn imported_size_exists(
        &self,
        size: u64,
        file_context: &str,
        is_adapter: bool,
    ) -> Result<bool> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM jobs j WHERE j.size = ?1 AND j.sha256 IS NOT NULL \
             AND j.state = ?2 AND j.file_context = ?3 AND j.is_adapter = ?4)",
        )?;
        Ok(stmt.query_row(
            params![
                size as i64,
                JobState::Succeeded.as_str(),
                file_context,
                is_adapter
            ],
            |r| r.get(0),
        )?)
    }

    /// The import of these bytes with this kind: the newest job that
    /// imported them itself, else the newest duplicate of them.
    pub fn find_imported(
        &self,
        size: u64,
        sha256: &str,
        file_context: &str,
        is_adapter: bool,
    ) -> Result<Option<Job>> {
        Ok(self
            .select(
                "WHERE j.size = ?1 AND j.sha256 = ?2 AND j.state = ?3 AND j.file_context = ?4 \
                 AND j.is_adapter = ?5 ORDER BY (j.duplicate_of IS NOT NULL), j.id DESC LIMIT 1",
                params![
                    size as i64,
                    sha256,
                    JobState::Succeeded.as_str(),
                    file_context,
                    is_adapter
                ],
            )?
            .pop())
    }

    /// Settles queued job `id` as a duplicate of `original` (its bytes,
    /// `sha256`, were imported there): `succeeded`, with the original's
    /// model and dock status ids, nothing sent.
    pub fn succeed_duplicate(&mut self, id: JobId, sha256: &str, original: &Job) -> Result<()> {
        // The rules allow this step from `queued` alone.
        let (from, to) = (JobState::Queued, JobState::Succeeded);
        debug_assert!(from.can_become(to));
        let of = original.duplicate_of.unwrap_or(original.id);
        let now = to_ms(SystemTime::now());
        let changed = self.conn.execute(
            "UPDATE jobs SET state = ?3, updated_at = ?4, started_at = COALESCE(started_at, ?4), \
             finished_at = ?4, sha256 = ?5, duplicate_of = ?6, model_id = ?7, dock_status_id = ?8, \
             error = NULL, error_stage = NULL, next_retry_at = NULL \
             WHERE id = ?1 AND state = ?2",
            params![
                id,
                from.as_str(),
                to.as_str(),
                now,
                sha256,
                of,
                original.model_id,
                original.dock_status_id
            ],
        )?;
        if changed == 0 {
            let current: Option<String> = self
                .conn
                .query_row("SELECT state FROM jobs WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            return Err(match current {
                None => StoreError::NotFound(id),
                Some(s) => StoreError::InvalidTransition {
                    job: id,
                    from: s.parse().map_err(|e| StoreError::Corrupt {
                        job: id,
                        detail: format!("{e}"),
                    })?,
                    to,
                },
            });
        }
        Ok(())
    }
}
