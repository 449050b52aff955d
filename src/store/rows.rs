//! Rows to domain values and back: timestamps, the job `SELECT` list, and
//! reading a [`Job`] from a row by column name (never by position, so a
//! column added or reordered cannot shift every field after it). Both
//! backends read jobs through [`job_from_row`]: each row type says how it
//! reads a column ([`Columns`]), and the mapping to a [`Job`] is written once.

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::Row;

use super::error::{Result, StoreError};
use crate::job::{ChunkAck, ChunkChecksum, Filing, HashCheckpoint, Job, JobState, SessionRecord};
use crate::source::FileIdentity;

pub(super) fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(super) fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// `'a', 'b'` for an SQL `IN (...)`. Only for names of the job module's
/// enums, which are fixed words, never for input.
pub(super) fn sql_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `j.state IN (...)` for jobs in any of `states`.
pub(super) fn state_in(states: &[JobState]) -> String {
    format!(
        "j.state IN ({})",
        sql_list(states.iter().map(|s| s.as_str()))
    )
}

/// The columns of `jobs` that make up a [`Job`].
const JOB_COLUMNS: &[&str] = &[
    "id",
    "path",
    "file_name",
    "dev",
    "ino",
    "size",
    "mtime_ns",
    "file_context",
    "is_adapter",
    "chunk_size",
    "chunks_total",
    "state",
    "session_id",
    "session_started_at",
    "session_expires_at",
    "sessions_started",
    "model_id",
    "dock_status_id",
    "sha256",
    "hashed_chunks",
    "hash_state",
    "error",
    "error_stage",
    "http_status",
    "platform_message",
    "attempts",
    "next_retry_at",
    "watch_dir",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "filing",
    "filing_dest",
    "filing_error",
    "filed_at",
    "pruned",
    "duplicate_of",
];

/// The `SELECT` items for `jobs j`: each column under its own name, and
/// the current session's acknowledged chunks and bytes (as BIGINT, which
/// PostgreSQL's `SUM` is not).
pub(super) fn job_select_items() -> Vec<String> {
    let mut items: Vec<String> = JOB_COLUMNS
        .iter()
        .map(|c| format!("j.{c} AS {c}"))
        .collect();
    items.push(
        "(SELECT CAST(COUNT(*) AS BIGINT) FROM chunks c WHERE c.job_id = j.id) AS chunks_done"
            .into(),
    );
    items.push(
        "(SELECT CAST(COALESCE(SUM(c.size), 0) AS BIGINT) FROM chunks c WHERE c.job_id = j.id) AS bytes_done"
            .into(),
    );
    items
}

/// How a backend's row reads a column by name; errors come back as the
/// backend's own [`StoreError`] variant, given context by the caller.
pub(super) trait Columns {
    fn int(&self, c: &str) -> Result<i64>;
    fn opt_int(&self, c: &str) -> Result<Option<i64>>;
    fn text(&self, c: &str) -> Result<String>;
    fn opt_text(&self, c: &str) -> Result<Option<String>>;
    fn opt_bytes(&self, c: &str) -> Result<Option<Vec<u8>>>;
    fn flag(&self, c: &str) -> Result<bool>;
}

impl Columns for Row<'_> {
    fn int(&self, c: &str) -> Result<i64> {
        Ok(self.get(c)?)
    }
    fn opt_int(&self, c: &str) -> Result<Option<i64>> {
        Ok(self.get(c)?)
    }
    fn text(&self, c: &str) -> Result<String> {
        Ok(self.get(c)?)
    }
    fn opt_text(&self, c: &str) -> Result<Option<String>> {
        Ok(self.get(c)?)
    }
    fn opt_bytes(&self, c: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get(c)?)
    }
    fn flag(&self, c: &str) -> Result<bool> {
        Ok(self.get(c)?)
    }
}

/// The `SELECT` list for `jobs j` that [`job_from_row`] reads.
pub(super) static JOB_SELECT: LazyLock<String> = LazyLock::new(|| job_select_items().join(", "));

/// Reads a job from a row of [`JOB_SELECT`] (in any column order).
pub(super) fn job_from_row(row: &impl Columns) -> Result<Job> {
    let id = row.int("id")?;
    let corrupt = |detail: String| StoreError::Corrupt { job: id, detail };
    let session = row
        .opt_text("session_id")?
        .map(|session_id| -> Result<SessionRecord> {
            Ok(SessionRecord {
                session_id,
                started_at: from_ms(row.opt_int("session_started_at")?.unwrap_or(0)),
                expires_at: row.opt_int("session_expires_at")?.map(from_ms),
            })
        })
        .transpose()?;
    let filing = match row.opt_text("filing")? {
        None => None,
        Some(f) => Some(Filing {
            state: f.parse().map_err(|e| corrupt(format!("{e}")))?,
            dest: row.opt_text("filing_dest")?.map(PathBuf::from),
            filed_at: row.opt_int("filed_at")?.map(from_ms),
        }),
    };
    let hashed = row.int("hashed_chunks")?;
    Ok(Job {
        id,
        path: PathBuf::from(row.text("path")?),
        file_name: row.text("file_name")?,
        identity: FileIdentity {
            dev: row.int("dev")? as u64,
            ino: row.int("ino")? as u64,
            size: row.int("size")? as u64,
            mtime_ns: row.int("mtime_ns")?,
        },
        file_context: row.text("file_context")?,
        is_adapter: row.flag("is_adapter")?,
        chunk_size: row.int("chunk_size")? as u64,
        chunks_total: row.int("chunks_total")? as u64,
        state: row
            .text("state")?
            .parse()
            .map_err(|e| corrupt(format!("{e}")))?,
        session,
        sessions_started: row.int("sessions_started")? as u32,
        model_id: row.opt_text("model_id")?,
        dock_status_id: row.opt_text("dock_status_id")?,
        sha256: row.opt_text("sha256")?,
        hash_checkpoint: row.opt_bytes("hash_state")?.map(|state| HashCheckpoint {
            chunks: hashed as u64,
            state,
        }),
        error: row.opt_text("error")?,
        error_stage: row
            .opt_text("error_stage")?
            .map(|s| s.parse())
            .transpose()
            .map_err(|e| corrupt(format!("{e}")))?,
        http_status: row.opt_int("http_status")?.map(|s| s as u16),
        platform_message: row.opt_text("platform_message")?,
        attempts: row.int("attempts")? as u32,
        next_retry_at: row.opt_int("next_retry_at")?.map(from_ms),
        watch_dir: row.opt_text("watch_dir")?.map(PathBuf::from),
        created_at: from_ms(row.int("created_at")?),
        updated_at: from_ms(row.int("updated_at")?),
        started_at: row.opt_int("started_at")?.map(from_ms),
        finished_at: row.opt_int("finished_at")?.map(from_ms),
        chunks_done: row.int("chunks_done")? as u64,
        bytes_done: row.int("bytes_done")? as u64,
        filing,
        filing_error: row.opt_text("filing_error")?,
        pruned: row.flag("pruned")?,
        duplicate_of: row.opt_int("duplicate_of")?,
        instance: None,
    })
}

/// Reads a chunk acknowledgement from a row of `chunks`, of either backend.
pub(super) fn ack_from_row(row: &impl Columns) -> Result<ChunkAck> {
    // A row has one or the other (the table checks it): XXH3 from
    // migration 3 on, SHA-256 before; neither is an error, never "".
    let checksum = match row.opt_int("xxh3")? {
        Some(h) => ChunkChecksum::Xxh3(h as u64),
        None => ChunkChecksum::Sha256(row.text("sha256")?),
    };
    Ok(ChunkAck {
        index: row.int("idx")? as u64,
        size: row.int("size")? as u64,
        checksum,
    })
}

#[cfg(test)]
pub(super) fn job_columns() -> &'static [&'static str] {
    JOB_COLUMNS
}

#[cfg(test)]
pub(super) fn job_select_reversed() -> String {
    let mut items = job_select_items();
    items.reverse();
    items.join(", ")
}
