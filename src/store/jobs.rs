//! Jobs in SQLite: admission, reads, and every state change, each one
//! transaction guarded by the job module's rules.

use std::path::Path;
use std::time::SystemTime;

use rusqlite::{params, OptionalExtension, Params, TransactionBehavior};

use super::error::{Result, StoreError};
use super::open::SqliteStore;
use super::rows::{ack_from_row, job_from_row, state_in, to_ms, JOB_SELECT};
use crate::job::{
    ChunkAck, ChunkChecksum, Failure, HashCheckpoint, Job, JobId, JobState, NewJob, SessionRecord,
};
use crate::source::FileIdentity;

impl SqliteStore {
    pub fn admit(&mut self, new: &NewJob) -> Result<JobId> {
        // Paths are stored and shown as text: one that is not UTF-8 would be
        // stored altered and never found again.
        for p in std::iter::once(&new.path).chain(&new.watch_dir) {
            if p.to_str().is_none() {
                return Err(StoreError::NotUtf8(p.clone()));
            }
        }
        let now = to_ms(SystemTime::now());
        let chunks_total = new.identity.size.div_ceil(new.chunk_size);
        let file_name = new
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO jobs (path, file_name, dev, ino, size, mtime_ns, file_context, \
             is_adapter, chunk_size, chunks_total, state, watch_dir, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)",
            params![
                new.path.to_string_lossy(),
                file_name,
                new.identity.dev as i64,
                new.identity.ino as i64,
                new.identity.size as i64,
                new.identity.mtime_ns,
                new.file_context,
                new.is_adapter,
                new.chunk_size as i64,
                chunks_total as i64,
                JobState::Queued.as_str(),
                new.watch_dir
                    .as_ref()
                    .map(|p| p.to_string_lossy().into_owned()),
                now,
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(id)
    }

    pub fn job(&self, id: JobId) -> Result<Job> {
        self.select("WHERE j.id = ?1", [id])?
            .pop()
            .ok_or(StoreError::NotFound(id))
    }

    pub(super) fn select(&self, filter: &str, args: impl Params) -> Result<Vec<Job>> {
        let sql = format!("SELECT {} FROM jobs j {filter}", *JOB_SELECT);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(args)?;
        let mut jobs = Vec::new();
        while let Some(row) = rows.next()? {
            jobs.push(job_from_row(row)?);
        }
        Ok(jobs)
    }

    /// Jobs in an [active](JobState::ACTIVE) state, oldest first.
    pub fn unfinished(&self) -> Result<Vec<Job>> {
        let filter = format!("WHERE {} ORDER BY j.id", state_in(&JobState::ACTIVE));
        self.select(&filter, [])
    }

    /// Unfinished jobs for a file at `path` (whatever its identity).
    pub fn unfinished_for_path(&self, path: &Path) -> Result<Vec<Job>> {
        let filter = format!(
            "WHERE j.path = ?1 AND {} ORDER BY j.id",
            state_in(&JobState::ACTIVE)
        );
        self.select(&filter, [path.to_string_lossy()])
    }

    /// The newest job for this file identity and import kind.
    pub fn find_by_identity(
        &self,
        identity: &FileIdentity,
        file_context: &str,
        is_adapter: bool,
    ) -> Result<Option<Job>> {
        Ok(self
            .select(
                "WHERE j.dev = ?1 AND j.ino = ?2 AND j.size = ?3 AND j.mtime_ns = ?4 \
                 AND j.file_context = ?5 AND j.is_adapter = ?6 ORDER BY j.id DESC LIMIT 1",
                params![
                    identity.dev as i64,
                    identity.ino as i64,
                    identity.size as i64,
                    identity.mtime_ns,
                    file_context,
                    is_adapter
                ],
            )?
            .pop())
    }

    /// Chunks acknowledged in the job's current session.
    pub fn acked_chunks(&self, id: JobId) -> Result<Vec<ChunkAck>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT idx, size, sha256, xxh3 FROM chunks WHERE job_id = ?1 ORDER BY idx",
        )?;
        let rows = stmt.query_and_then([id], |r| ack_from_row(r))?;
        rows.collect()
    }

    /// Moves the job to `to` in a transaction of its own, guarded by the
    /// transition rules; `set` adds columns (`col = ?N` from `?2` on).
    fn transition(
        &mut self,
        id: JobId,
        to: JobState,
        set: &str,
        args: &[&dyn rusqlite::ToSql],
        extra: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<()>,
    ) -> Result<()> {
        let from: Vec<JobState> = JobState::ALL
            .into_iter()
            .filter(|s| s.can_become(to))
            .collect();
        let sql = format!(
            "UPDATE jobs AS j SET state = '{to}', updated_at = ?1{sep}{set} \
             WHERE j.id = ?{n} AND {guard}",
            sep = if set.is_empty() { "" } else { ", " },
            n = args.len() + 2,
            guard = state_in(&from),
        );
        let now = to_ms(SystemTime::now());
        let mut all: Vec<&dyn rusqlite::ToSql> = vec![&now];
        all.extend_from_slice(args);
        all.push(&id);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let changed = tx.execute(&sql, all.as_slice())?;
        if changed == 0 {
            let current: Option<String> = tx
                .query_row("SELECT state FROM jobs WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            return match current {
                None => Err(StoreError::NotFound(id)),
                Some(s) => Err(StoreError::InvalidTransition {
                    job: id,
                    from: s.parse().map_err(|e| StoreError::Corrupt {
                        job: id,
                        detail: format!("{e}"),
                    })?,
                    to,
                }),
            };
        }
        extra(&tx)?;
        tx.commit()?;
        Ok(())
    }

    /// A new session for the job: earlier chunk acknowledgements belong to
    /// the old session and are dropped in the same transaction.
    pub fn start_session(
        &mut self,
        id: JobId,
        session: &SessionRecord,
        model_id: &str,
    ) -> Result<()> {
        let started = to_ms(session.started_at);
        let expires = session.expires_at.map(to_ms);
        self.transition(
            id,
            JobState::Uploading,
            "session_id = ?2, session_started_at = ?3, session_expires_at = ?4, \
             model_id = ?5, sessions_started = sessions_started + 1, \
             started_at = COALESCE(started_at, ?3), dock_status_id = NULL, \
             error = NULL, error_stage = NULL, http_status = NULL, platform_message = NULL, \
             next_retry_at = NULL",
            &[&session.session_id, &started, &expires, &model_id],
            |tx| {
                tx.execute("DELETE FROM chunks WHERE job_id = ?1", [id])?;
                Ok(())
            },
        )
    }

    /// Records that the platform acknowledged a chunk of `session_id`, and
    /// moves the job's hash checkpoint forward when `checkpoint` is newer.
    pub fn ack_chunk(
        &mut self,
        id: JobId,
        session_id: &str,
        ack: &ChunkAck,
        checkpoint: Option<&HashCheckpoint>,
    ) -> Result<()> {
        let now = to_ms(SystemTime::now());
        let (hashed, state) = match checkpoint {
            Some(cp) => (cp.chunks as i64, Some(cp.state.as_slice())),
            None => (0, None),
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // One statement guards the session and moves the hash checkpoint
        // forward (never back: acknowledgements arrive out of order).
        let changed = tx
            .prepare_cached(
                "UPDATE jobs SET updated_at = ?3, error = NULL, next_retry_at = NULL, \
                 hash_state = CASE WHEN ?4 > hashed_chunks THEN ?5 ELSE hash_state END, \
                 hashed_chunks = MAX(hashed_chunks, ?4) \
                 WHERE id = ?1 AND state = ?6 AND session_id = ?2",
            )?
            .execute(params![
                id,
                session_id,
                now,
                hashed,
                state,
                JobState::Uploading.as_str()
            ])?;
        if changed == 0 {
            let exists: Option<i64> = tx
                .query_row("SELECT id FROM jobs WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            return Err(match exists {
                None => StoreError::NotFound(id),
                Some(_) => StoreError::StaleSession {
                    job: id,
                    session: session_id.to_string(),
                },
            });
        }
        let (sha256, xxh3) = match &ack.checksum {
            ChunkChecksum::Sha256(h) => (Some(h.as_str()), None),
            // SQLite integers are signed: the bits are kept as they are.
            ChunkChecksum::Xxh3(h) => (None, Some(*h as i64)),
        };
        tx.prepare_cached(
            "INSERT INTO chunks (job_id, idx, size, sha256, xxh3, acked_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (job_id, idx) DO UPDATE SET size = ?3, sha256 = ?4, xxh3 = ?5, acked_at = ?6",
        )?
        .execute(params![
            id,
            ack.index as i64,
            ack.size as i64,
            sha256,
            xxh3,
            now
        ])?;
        tx.commit()?;
        Ok(())
    }

    /// Every chunk is acknowledged: record the file's sha256 and move to
    /// `completing`.
    pub fn begin_complete(&mut self, id: JobId, sha256: &str) -> Result<()> {
        self.transition(id, JobState::Completing, "sha256 = ?2", &[&sha256], |_| {
            Ok(())
        })
    }

    /// The platform took `complete`: remember where to poll.
    pub fn set_importing(
        &mut self,
        id: JobId,
        dock_status_id: &str,
        model_id: Option<&str>,
    ) -> Result<()> {
        self.transition(
            id,
            JobState::Importing,
            "dock_status_id = ?2, model_id = COALESCE(?3, model_id), error = NULL, next_retry_at = NULL",
            &[&dock_status_id, &model_id],
            |_| Ok(()),
        )
    }

    pub fn succeed(&mut self, id: JobId, model_id: Option<&str>) -> Result<()> {
        let now = to_ms(SystemTime::now());
        self.transition(
            id,
            JobState::Succeeded,
            "finished_at = ?2, model_id = COALESCE(?3, model_id), error = NULL, \
             next_retry_at = NULL",
            &[&now, &model_id],
            |_| Ok(()),
        )
    }

    pub fn fail(&mut self, id: JobId, failure: &Failure) -> Result<()> {
        let now = to_ms(SystemTime::now());
        let status = failure.http_status.map(i64::from);
        self.transition(
            id,
            JobState::Failed,
            "finished_at = ?2, error = ?3, error_stage = ?4, http_status = ?5, \
             platform_message = ?6, next_retry_at = NULL",
            &[
                &now,
                &failure.error,
                &failure.stage.as_str(),
                &status,
                &failure.platform_message,
            ],
            |_| Ok(()),
        )
    }

    /// Shows a passing problem (a retry, a rejected key) in `status`
    /// without changing the job's state.
    pub fn note_error(
        &mut self,
        id: JobId,
        error: &str,
        next_retry_at: Option<SystemTime>,
    ) -> Result<()> {
        // Only while the job is active: a note landing after a cancel (or
        // any finish) must not overwrite the reason it ended.
        let sql = format!(
            "UPDATE jobs AS j SET error = ?2, next_retry_at = ?3, attempts = attempts + 1, \
             updated_at = ?4 WHERE j.id = ?1 AND {}",
            state_in(&JobState::ACTIVE)
        );
        let changed = self.conn.execute(
            &sql,
            params![
                id,
                error,
                next_retry_at.map(to_ms),
                to_ms(SystemTime::now())
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::NotActive {
                job: id,
                state: self.job_state(id)?,
            });
        }
        Ok(())
    }
}
