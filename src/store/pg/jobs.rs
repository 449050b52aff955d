//! Jobs in PostgreSQL: admission, reads, and every state change, each
//! guarded by the job module's rules as in SQLite, and, for a held job, by
//! its lease (`instance` and `lease_token`).

use std::path::Path;
use std::time::SystemTime;

use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;

use super::{job_of, job_select, pg_error, PgBackend};
use crate::job::{
    ChunkAck, ChunkChecksum, Failure, HashCheckpoint, Job, JobId, JobState, NewJob, SessionRecord,
};
use crate::source::FileIdentity;
use crate::store::error::{Result, StoreError};
use crate::store::filing::unfiled_filter;
use crate::store::rows::{ack_from_row, state_in, to_ms};

/// A write's proof of the lease: the holder's instance and fencing token.
#[derive(Clone, Copy)]
pub(crate) struct Fence<'a> {
    pub instance: &'a str,
    pub token: i64,
}

pub(super) type Args<'a> = Vec<&'a (dyn ToSql + Sync)>;

/// The identity filter of fleet mode: the path (watch folder and name),
/// inode, size and mtime, never the device number, which differs per host
/// on a network file system. `$1`..`$6`.
const IDENTITY: &str = "j.path = $1 AND j.ino = $2 AND j.size = $3 AND j.mtime_ns = $4 \
     AND j.file_context = $5 AND j.is_adapter = $6";

impl PgBackend {
    pub(super) async fn select(
        &self,
        filter: &str,
        args: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Job>> {
        let conn = self.0.pool.get().await?;
        select_on(&*conn, filter, args).await
    }

    pub(crate) async fn job(&self, id: JobId) -> Result<Job> {
        self.select("WHERE j.id = $1", &[&id])
            .await?
            .pop()
            .ok_or(StoreError::NotFound(id))
    }

    pub(crate) async fn takeable(&self) -> Result<Vec<Job>> {
        let filter = format!(
            "WHERE {} AND (j.lease_expires_at IS NULL OR j.lease_expires_at <= now()) ORDER BY j.id",
            state_in(&JobState::ACTIVE)
        );
        self.select(&filter, &[]).await
    }

    pub(crate) async fn unfinished_for_path(&self, path: &Path) -> Result<Vec<Job>> {
        let filter = format!(
            "WHERE j.path = $1 AND {} ORDER BY j.id",
            state_in(&JobState::ACTIVE)
        );
        let path = text(path)?;
        self.select(&filter, &[&path]).await
    }

    pub(crate) async fn find_by_identity(
        &self,
        path: &Path,
        identity: &FileIdentity,
        file_context: &str,
        is_adapter: bool,
    ) -> Result<Option<Job>> {
        let conn = self.0.pool.get().await?;
        newest(&*conn, path, identity, file_context, is_adapter).await
    }

    pub(crate) async fn acked_chunks(&self, id: JobId) -> Result<Vec<ChunkAck>> {
        let conn = self.0.pool.get().await?;
        let rows = conn
            .query(
                "SELECT idx, size, sha256, xxh3 FROM chunks WHERE job_id = $1 ORDER BY idx",
                &[&id],
            )
            .await
            .map_err(pg_error)?;
        rows.iter().map(ack_from_row).collect()
    }

    pub(crate) async fn unfiled(&self) -> Result<Vec<Job>> {
        self.select(&unfiled_filter(), &[]).await
    }

    /// A new job, unless the newest job for its identity is no longer
    /// `seen` (another instance admitted the file meanwhile): then that
    /// job. Instances admitting one file at once take turns on an advisory
    /// lock keyed on the path, so the file becomes one job.
    pub(crate) async fn admit(
        &self,
        new: &NewJob,
        seen: Option<Option<JobId>>,
    ) -> Result<std::result::Result<JobId, Job>> {
        let path = text(&new.path)?;
        let watch_dir = new.watch_dir.as_deref().map(text).transpose()?;
        let mut conn = self.0.pool.get().await?;
        let tx = conn.transaction().await.map_err(pg_error)?;
        if let Some(seen) = seen {
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                &[&path],
            )
            .await
            .map_err(pg_error)?;
            let known = newest(
                &tx,
                &new.path,
                &new.identity,
                &new.file_context,
                new.is_adapter,
            )
            .await?;
            if let Some(job) = known.filter(|j| Some(j.id) != seen) {
                return Ok(Err(job));
            }
        }
        let now = to_ms(SystemTime::now());
        let chunks_total = new.identity.size.div_ceil(new.chunk_size) as i64;
        let file_name = new
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let row = tx
            .query_one(
                "INSERT INTO jobs (path, file_name, dev, ino, size, mtime_ns, file_context, \
                 is_adapter, chunk_size, chunks_total, state, watch_dir, created_at, updated_at) \
                 VALUES ($1, $2, 0, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) RETURNING id",
                &[
                    &path,
                    &file_name,
                    &(new.identity.ino as i64),
                    &(new.identity.size as i64),
                    &new.identity.mtime_ns,
                    &new.file_context,
                    &new.is_adapter,
                    &(new.chunk_size as i64),
                    &chunks_total,
                    &JobState::Queued.as_str(),
                    &watch_dir,
                    &now,
                ],
            )
            .await
            .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(Ok(row.get(0)))
    }

    /// Moves held job `id` to `to`, guarded by the transition rules and the
    /// lease; `set` adds columns (`col = $N` from `$2` on); `then` runs in
    /// the same transaction.
    async fn transition(
        &self,
        id: JobId,
        fence: Fence<'_>,
        to: JobState,
        set: &str,
        args: &[&(dyn ToSql + Sync)],
        then: Option<&str>,
    ) -> Result<()> {
        let from: Vec<JobState> = JobState::ALL
            .into_iter()
            .filter(|s| s.can_become(to))
            .collect();
        let n = args.len() + 2;
        let sql = format!(
            "UPDATE jobs AS j SET state = '{to}', updated_at = $1{sep}{set} \
             WHERE j.id = ${n} AND j.instance = ${} AND j.lease_token = ${} AND {guard}",
            n + 1,
            n + 2,
            sep = if set.is_empty() { "" } else { ", " },
            guard = state_in(&from),
        );
        let now = to_ms(SystemTime::now());
        let mut all: Args = vec![&now];
        all.extend_from_slice(args);
        all.push(&id);
        all.push(&fence.instance);
        all.push(&fence.token);
        let mut conn = self.0.pool.get().await?;
        let tx = conn.transaction().await.map_err(pg_error)?;
        if tx.execute(&sql, &all).await.map_err(pg_error)? == 0 {
            return Err(refusal(&tx, id, fence, Some(to)).await);
        }
        if let Some(then) = then {
            tx.execute(then, &[&id]).await.map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)
    }

    pub(crate) async fn start_session(
        &self,
        id: JobId,
        fence: Fence<'_>,
        session: &SessionRecord,
        model_id: &str,
    ) -> Result<()> {
        let started = to_ms(session.started_at);
        let expires = session.expires_at.map(to_ms);
        self.transition(
            id,
            fence,
            JobState::Uploading,
            "session_id = $2, session_started_at = $3, session_expires_at = $4, \
             model_id = $5, sessions_started = sessions_started + 1, \
             started_at = COALESCE(started_at, $3), dock_status_id = NULL, \
             error = NULL, error_stage = NULL, http_status = NULL, platform_message = NULL, \
             next_retry_at = NULL",
            &[&session.session_id, &started, &expires, &model_id],
            Some("DELETE FROM chunks WHERE job_id = $1"),
        )
        .await
    }

    /// One statement, prepared once per connection, and no explicit
    /// transaction: the job's row and the chunk's change together or not at
    /// all. As in SQLite the session and (here) the lease guard the write,
    /// and the hash checkpoint only moves forward; the chunk is written only
    /// when the job's row was (zero rows: refused, and why is looked up).
    pub(crate) async fn ack_chunk(
        &self,
        id: JobId,
        fence: Fence<'_>,
        session_id: &str,
        ack: &ChunkAck,
        checkpoint: Option<&HashCheckpoint>,
    ) -> Result<()> {
        const ACK: &str = "WITH j AS (\
             UPDATE jobs SET updated_at = $3, error = NULL, next_retry_at = NULL, \
             hash_state = CASE WHEN $4 > hashed_chunks THEN $5 ELSE hash_state END, \
             hashed_chunks = GREATEST(hashed_chunks, $4) \
             WHERE id = $1 AND state = $6 AND session_id = $2 \
             AND instance = $7 AND lease_token = $8 RETURNING id) \
             INSERT INTO chunks (job_id, idx, size, sha256, xxh3, acked_at) \
             SELECT j.id, $9::BIGINT, $10::BIGINT, $11::TEXT, $12::BIGINT, $3 FROM j \
             ON CONFLICT (job_id, idx) DO UPDATE SET size = EXCLUDED.size, \
             sha256 = EXCLUDED.sha256, xxh3 = EXCLUDED.xxh3, acked_at = EXCLUDED.acked_at";
        let now = to_ms(SystemTime::now());
        let (hashed, state) = match checkpoint {
            Some(cp) => (cp.chunks as i64, Some(cp.state.as_slice())),
            None => (0, None),
        };
        let (sha256, xxh3) = match &ack.checksum {
            ChunkChecksum::Sha256(h) => (Some(h.as_str()), None),
            // Stored as the same 64 bits, signed (BIGINT).
            ChunkChecksum::Xxh3(h) => (None, Some(*h as i64)),
        };
        let mut conn = self.0.pool.get().await?;
        let statement = conn.prepared(ACK).await?;
        let changed = conn
            .execute(
                &statement,
                &[
                    &id,
                    &session_id,
                    &now,
                    &hashed,
                    &state,
                    &JobState::Uploading.as_str(),
                    &fence.instance,
                    &fence.token,
                    &(ack.index as i64),
                    &(ack.size as i64),
                    &sha256,
                    &xxh3,
                ],
            )
            .await
            .map_err(pg_error)?;
        if changed == 0 {
            return Err(match refusal(&*conn, id, fence, None).await {
                StoreError::StaleSession { .. } => StoreError::StaleSession {
                    job: id,
                    session: session_id.to_string(),
                },
                other => other,
            });
        }
        Ok(())
    }

    pub(crate) async fn begin_complete(
        &self,
        id: JobId,
        fence: Fence<'_>,
        sha256: &str,
    ) -> Result<()> {
        self.transition(
            id,
            fence,
            JobState::Completing,
            "sha256 = $2",
            &[&sha256],
            None,
        )
        .await
    }

    pub(crate) async fn set_importing(
        &self,
        id: JobId,
        fence: Fence<'_>,
        dock_status_id: &str,
        model_id: Option<&str>,
    ) -> Result<()> {
        self.transition(
            id,
            fence,
            JobState::Importing,
            "dock_status_id = $2, model_id = COALESCE($3, model_id), error = NULL, next_retry_at = NULL",
            &[&dock_status_id, &model_id],
            None,
        )
        .await
    }

    pub(crate) async fn succeed(
        &self,
        id: JobId,
        fence: Fence<'_>,
        model_id: Option<&str>,
    ) -> Result<()> {
        let now = to_ms(SystemTime::now());
        self.transition(
            id,
            fence,
            JobState::Succeeded,
            "finished_at = $2, model_id = COALESCE($3, model_id), error = NULL, \
             next_retry_at = NULL",
            &[&now, &model_id],
            None,
        )
        .await
    }

    pub(crate) async fn fail(&self, id: JobId, fence: Fence<'_>, failure: &Failure) -> Result<()> {
        let now = to_ms(SystemTime::now());
        let status = failure.http_status.map(i64::from);
        self.transition(
            id,
            fence,
            JobState::Failed,
            "finished_at = $2, error = $3, error_stage = $4, http_status = $5, \
             platform_message = $6, next_retry_at = NULL",
            &[
                &now,
                &failure.error,
                &failure.stage.as_str(),
                &status,
                &failure.platform_message,
            ],
            None,
        )
        .await
    }

    pub(crate) async fn note_error(
        &self,
        id: JobId,
        fence: Fence<'_>,
        error: &str,
        next_retry_at: Option<SystemTime>,
    ) -> Result<()> {
        // Only while the job is active: a note landing after a cancel (or
        // any finish) must not overwrite the reason it ended.
        let sql = format!(
            "UPDATE jobs AS j SET error = $2, next_retry_at = $3, attempts = attempts + 1, \
             updated_at = $4 WHERE j.id = $1 AND j.instance = $5 AND j.lease_token = $6 AND {}",
            state_in(&JobState::ACTIVE)
        );
        let conn = self.0.pool.get().await?;
        let changed = conn
            .execute(
                &sql,
                &[
                    &id,
                    &error,
                    &next_retry_at.map(to_ms),
                    &to_ms(SystemTime::now()),
                    &fence.instance,
                    &fence.token,
                ],
            )
            .await
            .map_err(pg_error)?;
        if changed == 0 {
            let row = fenced_row(&*conn, id, fence).await?;
            return Err(StoreError::NotActive {
                job: id,
                state: row_state(id, &row)?,
            });
        }
        Ok(())
    }
}

pub(super) async fn select_on(
    c: &impl GenericClient,
    filter: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Job>> {
    let sql = format!("SELECT {} FROM jobs j {filter}", job_select());
    let rows = c.query(&sql, args).await.map_err(pg_error)?;
    rows.iter().map(job_of).collect()
}

/// The newest job for the file at `path` with `identity` (fleet mode's
/// identity: see [`IDENTITY`]).
async fn newest(
    c: &impl GenericClient,
    path: &Path,
    identity: &FileIdentity,
    file_context: &str,
    is_adapter: bool,
) -> Result<Option<Job>> {
    let path = text(path)?;
    let filter = format!("WHERE {IDENTITY} ORDER BY j.id DESC LIMIT 1");
    Ok(select_on(
        c,
        &filter,
        &[
            &path,
            &(identity.ino as i64),
            &(identity.size as i64),
            &identity.mtime_ns,
            &file_context,
            &is_adapter,
        ],
    )
    .await?
    .pop())
}

/// Why a guarded write for held job `id` changed nothing: the job is gone,
/// its lease is another's, or (with `to`) the rules refuse the move.
pub(super) async fn refusal(
    c: &impl GenericClient,
    id: JobId,
    fence: Fence<'_>,
    to: Option<JobState>,
) -> StoreError {
    let row = match fenced_row(c, id, fence).await {
        Ok(row) => row,
        Err(e) => return e,
    };
    match (to, row_state(id, &row)) {
        (Some(to), Ok(from)) => StoreError::InvalidTransition { job: id, from, to },
        (_, Err(e)) => e,
        (None, Ok(_)) => StoreError::StaleSession {
            job: id,
            session: String::new(),
        },
    }
}

/// The `state` column of job `id`'s row.
fn row_state(id: JobId, row: &tokio_postgres::Row) -> Result<JobState> {
    let state: String = row.get("state");
    state
        .parse()
        .map_err(|e: crate::job::UnknownState| StoreError::Corrupt {
            job: id,
            detail: e.to_string(),
        })
}

/// Job `id`'s row (`state`), or why a write fenced by `fence` cannot be
/// this holder's: the job is gone ([`StoreError::NotFound`]) or its lease
/// is another's ([`StoreError::LeaseLost`]).
pub(super) async fn fenced_row(
    c: &impl GenericClient,
    id: JobId,
    fence: Fence<'_>,
) -> Result<tokio_postgres::Row> {
    let row = c
        .query_opt(
            "SELECT state, instance, lease_token FROM jobs WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(pg_error)?
        .ok_or(StoreError::NotFound(id))?;
    let instance: Option<String> = row.get("instance");
    let token: i64 = row.get("lease_token");
    if instance.as_deref() != Some(fence.instance) || token != fence.token {
        return Err(StoreError::LeaseLost {
            job: id,
            instance: fence.instance.to_string(),
        });
    }
    Ok(row)
}

/// Paths are stored and shown as text: one that is not UTF-8 would be
/// stored altered and never found again.
pub(super) fn text(p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| StoreError::NotUtf8(p.to_path_buf()))
}
