//! The state database: the one owner of the SQLite connection.
//!
//! [`Store`] opens `modelferry.db` (WAL, `synchronous=FULL`, foreign keys,
//! busy timeout), migrates it, and offers one method and one transaction per
//! state change. Each change is guarded by the job's current state (rules in
//! [`crate::job`]); a change that finds the job elsewhere is an error, never
//! a silent no-op. [`StoreHandle`] runs those calls on the blocking pool so
//! the async runtime never waits on the disk.

mod migrations;

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use crate::job::JobState;
use crate::source::FileIdentity;

pub type JobId = i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    /// A SQLite error, with the database file and what was being done. The
    /// SQLite text is part of this message and deliberately not `source()`:
    /// printing the chain (`{:#}`) would repeat it.
    #[error("state database {path}: {doing}: {error}")]
    Database {
        path: PathBuf,
        doing: String,
        error: rusqlite::Error,
    },
    /// A SQLite error not yet given its context; every public [`Store`]
    /// method turns it into [`StoreError::Database`].
    #[error("state database: {0}")]
    Sqlite(rusqlite::Error),
    #[error("job {job}: cannot go from {from} to {to}")]
    InvalidTransition {
        job: JobId,
        from: JobState,
        to: JobState,
    },
    #[error("job {0} is not in the state database")]
    NotFound(JobId),
    #[error("job {job}: session {session} is no longer the job's session")]
    StaleSession { job: JobId, session: String },
    #[error("state database: job {job}: {detail}")]
    Corrupt { job: JobId, detail: String },
    #[error("state database task failed: {0}")]
    Task(String),
    #[error("job {0} is being run by another modelferry process")]
    Busy(JobId),
    #[error("job lock {path}: {error}")]
    Lock {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

type Result<T> = std::result::Result<T, StoreError>;

/// What a new job is made of.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub path: PathBuf,
    pub identity: FileIdentity,
    pub file_context: String,
    pub is_adapter: bool,
    pub chunk_size: u64,
    pub watch_dir: Option<PathBuf>,
}

/// A job as stored.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: JobId,
    pub path: PathBuf,
    pub file_name: String,
    pub identity: FileIdentity,
    pub file_context: String,
    pub is_adapter: bool,
    pub chunk_size: u64,
    pub chunks_total: u64,
    pub state: JobState,
    pub session: Option<SessionRecord>,
    pub sessions_started: u32,
    pub model_id: Option<String>,
    pub dock_status_id: Option<String>,
    pub sha256: Option<String>,
    pub hash_checkpoint: Option<HashCheckpoint>,
    pub error: Option<String>,
    pub error_stage: Option<String>,
    pub http_status: Option<u16>,
    pub platform_message: Option<String>,
    pub attempts: u32,
    pub next_retry_at: Option<SystemTime>,
    pub watch_dir: Option<PathBuf>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    /// Chunks acknowledged in the current session.
    pub chunks_done: u64,
    /// Bytes of those chunks.
    pub bytes_done: u64,
    /// Where a daemon job's file and receipt go, once decided.
    pub filing: Option<Filing>,
    /// The last filing error, while filing keeps failing.
    pub filing_error: Option<String>,
}

/// Filing of a finished daemon job: planned, then done (or skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilingState {
    Pending,
    Done,
    Skipped,
}

impl FilingState {
    pub fn as_str(self) -> &'static str {
        match self {
            FilingState::Pending => "pending",
            FilingState::Done => "done",
            FilingState::Skipped => "skipped",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            FilingState::Pending,
            FilingState::Done,
            FilingState::Skipped,
        ]
        .into_iter()
        .find(|f| f.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filing {
    pub state: FilingState,
    /// The file's (or, for `delete`/`keep`, the receipt's) recorded destination.
    pub dest: Option<PathBuf>,
    pub filed_at: Option<SystemTime>,
}

impl Job {
    pub fn size(&self) -> u64 {
        self.identity.size
    }
}

/// The import session a job is uploading into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub session_id: String,
    pub started_at: SystemTime,
    /// `None` when the platform's `expirationDate` could not be read.
    pub expires_at: Option<SystemTime>,
}

/// One chunk the platform acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkAck {
    pub index: u64,
    pub size: u64,
    pub sha256: String,
}

/// The whole-file hash after the first `chunks` chunks, so a resumed job
/// does not have to read the acknowledged part of the file again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashCheckpoint {
    pub chunks: u64,
    pub state: Vec<u8>,
}

/// Why a job failed, as its error receipt and `status` show it.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    pub error: String,
    pub stage: String,
    pub http_status: Option<u16>,
    pub platform_message: Option<String>,
}

/// The job store. Owns the connection; see the module docs.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

const JOB_COLUMNS: &str = "j.id, j.path, j.file_name, j.dev, j.ino, j.size, j.mtime_ns, \
    j.file_context, j.is_adapter, j.chunk_size, j.chunks_total, j.state, j.session_id, \
    j.session_started_at, j.session_expires_at, j.sessions_started, j.model_id, \
    j.dock_status_id, j.sha256, j.hashed_chunks, j.hash_state, j.error, j.error_stage, \
    j.http_status, j.platform_message, j.attempts, j.next_retry_at, j.watch_dir, \
    j.created_at, j.updated_at, j.started_at, j.finished_at, \
    (SELECT COUNT(*) FROM chunks c WHERE c.job_id = j.id), \
    (SELECT COALESCE(SUM(c.size), 0) FROM chunks c WHERE c.job_id = j.id), \
    j.filing, j.filing_dest, j.filing_error, j.filed_at";

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<(Job, String)> {
    let state_text: String = row.get(11)?;
    let session_id: Option<String> = row.get(12)?;
    let session = session_id.map(|session_id| SessionRecord {
        session_id,
        started_at: from_ms(row.get::<_, Option<i64>>(13).ok().flatten().unwrap_or(0)),
        expires_at: row.get::<_, Option<i64>>(14).ok().flatten().map(from_ms),
    });
    let hashed: i64 = row.get(19)?;
    let hash_state: Option<Vec<u8>> = row.get(20)?;
    let job = Job {
        id: row.get(0)?,
        path: PathBuf::from(row.get::<_, String>(1)?),
        file_name: row.get(2)?,
        identity: FileIdentity {
            dev: row.get::<_, i64>(3)? as u64,
            ino: row.get::<_, i64>(4)? as u64,
            size: row.get::<_, i64>(5)? as u64,
            mtime_ns: row.get(6)?,
        },
        file_context: row.get(7)?,
        is_adapter: row.get(8)?,
        chunk_size: row.get::<_, i64>(9)? as u64,
        chunks_total: row.get::<_, i64>(10)? as u64,
        // Parsed by the caller, which can name the job in the error.
        state: JobState::Queued,
        session,
        sessions_started: row.get::<_, i64>(15)? as u32,
        model_id: row.get(16)?,
        dock_status_id: row.get(17)?,
        sha256: row.get(18)?,
        hash_checkpoint: hash_state.map(|state| HashCheckpoint {
            chunks: hashed as u64,
            state,
        }),
        error: row.get(21)?,
        error_stage: row.get(22)?,
        http_status: row.get::<_, Option<i64>>(23)?.map(|s| s as u16),
        platform_message: row.get(24)?,
        attempts: row.get::<_, i64>(25)? as u32,
        next_retry_at: row.get::<_, Option<i64>>(26)?.map(from_ms),
        watch_dir: row.get::<_, Option<String>>(27)?.map(PathBuf::from),
        created_at: from_ms(row.get(28)?),
        updated_at: from_ms(row.get(29)?),
        started_at: row.get::<_, Option<i64>>(30)?.map(from_ms),
        finished_at: row.get::<_, Option<i64>>(31)?.map(from_ms),
        chunks_done: row.get::<_, i64>(32)? as u64,
        bytes_done: row.get::<_, i64>(33)? as u64,
        filing: row
            .get::<_, Option<String>>(34)?
            .and_then(|f| FilingState::parse(&f))
            .map(|state| Filing {
                state,
                dest: None,
                filed_at: None,
            }),
        filing_error: row.get(36)?,
    };
    let mut job = job;
    if let Some(f) = job.filing.as_mut() {
        f.dest = row.get::<_, Option<String>>(35)?.map(PathBuf::from);
        f.filed_at = row.get::<_, Option<i64>>(37)?.map(from_ms);
    }
    Ok((job, state_text))
}

fn finish_job((mut job, state): (Job, String)) -> Result<Job> {
    job.state = state
        .parse()
        .map_err(|e: crate::job::UnknownState| StoreError::Corrupt {
            job: job.id,
            detail: e.to_string(),
        })?;
    Ok(job)
}

/// When root opens a service user's database (`modelferry status` by an
/// operator), SQLite creates the -wal and -shm files owned by root, and the
/// service could no longer write. Give them the database file's owner.
fn keep_owner(db: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(db) else {
        return;
    };
    for suffix in ["-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let side = PathBuf::from(name);
        if let Ok(m) = std::fs::metadata(&side) {
            if m.uid() != meta.uid() || m.gid() != meta.gid() {
                // Only root can change it, and only root can cause it.
                let _ = std::os::unix::fs::chown(&side, Some(meta.uid()), Some(meta.gid()));
            }
        }
    }
}

impl Store {
    /// Opens (creating if needed) `dir/modelferry.db`: the folder 0700 and the
    /// file 0600 when they are created here.
    pub fn open(dir: &Path) -> Result<Store> {
        let path = dir.join("modelferry.db");
        let open_err = |detail: String| StoreError::Open {
            path: path.clone(),
            detail,
        };
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| open_err(format!("cannot create folder {}: {e}", dir.display())))?;
        }
        // Create the file ourselves so it never exists with wider permissions;
        // SQLite gives -wal and -shm the same mode as the database file.
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| open_err(e.to_string()))?;
        let conn = Connection::open(&path).map_err(|e| open_err(e.to_string()))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| open_err(e.to_string()))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| open_err(e.to_string()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(format!(
                "cannot use WAL mode (got {mode}); keep the state folder on a local disk"
            )));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(|e| open_err(e.to_string()))?;
        keep_owner(&path);
        let mut store = Store {
            conn,
            path: path.clone(),
        };
        store.migrate().map_err(|e| match e {
            StoreError::Sqlite(e) => open_err(format!("migration failed: {e}")),
            other => other,
        })?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives a SQLite error its context: this database file, and what was
    /// being done. Other errors pass unchanged.
    fn context<'a, E: Into<StoreError>>(
        &'a self,
        doing: impl FnOnce() -> String + 'a,
    ) -> impl FnOnce(E) -> StoreError + 'a {
        move |e| match e.into() {
            StoreError::Sqlite(error) => StoreError::Database {
                path: self.path.clone(),
                doing: doing(),
                error,
            },
            other => other,
        }
    }

    fn migrate(&mut self) -> Result<()> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = migrations::MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::Open {
                path: self.path.clone(),
                detail: format!(
                    "schema version {version} is newer than this modelferry knows ({known}); upgrade modelferry"
                ),
            });
        }
        for m in &migrations::MIGRATIONS[version as usize..] {
            tx.execute_batch(m)?;
        }
        tx.pragma_update(None, "user_version", known)?;
        tx.commit()?;
        Ok(())
    }

    pub fn insert_job(&mut self, new: &NewJob) -> Result<JobId> {
        self.insert_job_tx(new)
            .map_err(self.context(|| format!("adding a job for {}", new.path.display())))
    }

    fn insert_job_tx(&mut self, new: &NewJob) -> Result<JobId> {
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'queued', ?11, ?12, ?12)",
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
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs j WHERE j.id = ?1");
        let row = self
            .conn
            .query_row(&sql, [id], job_from_row)
            .optional()
            .map_err(self.context(|| format!("reading job {id}")))?
            .ok_or(StoreError::NotFound(id))?;
        finish_job(row)
    }

    fn select(&self, filter: &str, args: impl rusqlite::Params) -> Result<Vec<Job>> {
        self.select_rows(filter, args)
            .map_err(self.context(|| "reading jobs".into()))
    }

    fn select_rows(&self, filter: &str, args: impl rusqlite::Params) -> Result<Vec<Job>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs j {filter}");
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(args, job_from_row)?;
        let mut jobs = Vec::new();
        for row in rows {
            jobs.push(finish_job(row?)?);
        }
        Ok(jobs)
    }

    /// Every job, oldest first.
    pub fn jobs(&self) -> Result<Vec<Job>> {
        self.select("ORDER BY j.id", [])
    }

    /// Jobs not yet succeeded or failed, oldest first.
    pub fn unfinished(&self) -> Result<Vec<Job>> {
        self.select(
            "WHERE j.state NOT IN ('succeeded', 'failed') ORDER BY j.id",
            [],
        )
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
        self.acked_rows(id)
            .map_err(self.context(|| format!("reading job {id}'s chunks")))
    }

    fn acked_rows(&self, id: JobId) -> Result<Vec<ChunkAck>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT idx, size, sha256 FROM chunks WHERE job_id = ?1 ORDER BY idx",
        )?;
        let rows = stmt.query_map([id], |r| {
            Ok(ChunkAck {
                index: r.get::<_, i64>(0)? as u64,
                size: r.get::<_, i64>(1)? as u64,
                sha256: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
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
        self.transition_tx(id, to, set, args, extra)
            .map_err(self.context(|| format!("moving job {id} to {to}")))
    }

    fn transition_tx(
        &mut self,
        id: JobId,
        to: JobState,
        set: &str,
        args: &[&dyn rusqlite::ToSql],
        extra: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<()>,
    ) -> Result<()> {
        let from: Vec<&str> = JobState::ALL
            .into_iter()
            .filter(|s| s.can_become(to))
            .map(|s| s.as_str())
            .collect();
        let from_list = from
            .iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE jobs SET state = '{to}', updated_at = ?1{sep}{set} \
             WHERE id = ?{n} AND state IN ({from_list})",
            sep = if set.is_empty() { "" } else { ", " },
            n = args.len() + 2,
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
                    from: s.parse().unwrap_or(JobState::Failed),
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
        self.ack_chunk_tx(id, session_id, ack, checkpoint)
            .map_err(self.context(|| format!("recording chunk {} of job {id}", ack.index)))
    }

    fn ack_chunk_tx(
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
                 WHERE id = ?1 AND state = 'uploading' AND session_id = ?2",
            )?
            .execute(params![id, session_id, now, hashed, state])?;
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
        tx.prepare_cached(
            "INSERT INTO chunks (job_id, idx, size, sha256, acked_at) VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (job_id, idx) DO UPDATE SET size = ?3, sha256 = ?4, acked_at = ?5",
        )?
        .execute(params![
            id,
            ack.index as i64,
            ack.size as i64,
            ack.sha256,
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
                &failure.stage,
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
        let changed = self.conn.execute(
            "UPDATE jobs SET error = ?2, next_retry_at = ?3, attempts = attempts + 1, updated_at = ?4 \
             WHERE id = ?1",
            params![id, error, next_retry_at.map(to_ms), to_ms(SystemTime::now())],
        ).map_err(self.context(|| format!("recording job {id}'s error")))?;
        if changed == 0 {
            return Err(StoreError::NotFound(id));
        }
        Ok(())
    }

    /// Unfinished jobs for a file at `path` (whatever its identity).
    pub fn unfinished_for_path(&self, path: &Path) -> Result<Vec<Job>> {
        self.select(
            "WHERE j.path = ?1 AND j.state NOT IN ('succeeded', 'failed') ORDER BY j.id",
            [path.to_string_lossy()],
        )
    }

    /// Finished daemon jobs whose filing is not done: never planned, or
    /// planned and not yet carried out.
    pub fn unfiled(&self) -> Result<Vec<Job>> {
        self.select(
            "WHERE j.state IN ('succeeded', 'failed') AND j.watch_dir IS NOT NULL \
             AND (j.filing IS NULL OR j.filing = 'pending') ORDER BY j.id",
            [],
        )
    }

    /// Jobs per state.
    pub fn count_by_state(&self) -> Result<Vec<(JobState, u64)>> {
        self.count_rows()
            .map_err(self.context(|| "counting jobs by state".into()))
    }

    fn count_rows(&self) -> Result<Vec<(JobState, u64)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, COUNT(*) FROM jobs GROUP BY state")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (state, n) = row?;
            if let Ok(st) = state.parse() {
                out.push((st, n as u64));
            }
        }
        Ok(out)
    }

    /// Records where a finished job's file goes, before anything moves.
    /// Planning twice keeps the first plan.
    pub fn plan_filing(&mut self, id: JobId, dest: Option<&Path>) -> Result<()> {
        let changed = self
            .conn
            .execute(
                "UPDATE jobs SET filing = 'pending', filing_dest = ?2 \
             WHERE id = ?1 AND state IN ('succeeded', 'failed') AND filing IS NULL",
                params![id, dest.map(|d| d.to_string_lossy().into_owned())],
            )
            .map_err(self.context(|| format!("recording where job {id} is filed")))?;
        if changed == 0 {
            let job = self.job(id)?;
            if job.filing.is_none() {
                return Err(StoreError::InvalidTransition {
                    job: id,
                    from: job.state,
                    to: job.state,
                });
            }
        }
        Ok(())
    }

    /// The job's file and receipt are in place (or filing does not apply).
    pub fn finish_filing(&mut self, id: JobId, state: FilingState) -> Result<()> {
        let changed = self
            .conn
            .execute(
                "UPDATE jobs SET filing = ?2, filing_error = NULL, filed_at = ?3 \
             WHERE id = ?1 AND state IN ('succeeded', 'failed')",
                params![id, state.as_str(), to_ms(SystemTime::now())],
            )
            .map_err(self.context(|| format!("recording that job {id} is filed")))?;
        if changed == 0 {
            return Err(StoreError::NotFound(id));
        }
        Ok(())
    }

    /// Filing failed this time (permissions, full disk); it is retried.
    pub fn note_filing_error(&mut self, id: JobId, error: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE jobs SET filing_error = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, error, to_ms(SystemTime::now())],
            )
            .map_err(self.context(|| format!("recording job {id}'s filing error")))?;
        Ok(())
    }

    /// Takes the job for this process: two processes (the daemon and an
    /// `upload`, or two `upload`s) must never drive one job at once. The
    /// hold ends when the returned lock is dropped, or the process dies.
    pub fn lock_job(&self, id: JobId) -> Result<JobLock> {
        let dir = self.path.with_file_name("locks");
        let path = dir.join(format!("job-{id}.lock"));
        let err = |error| StoreError::Lock {
            path: path.clone(),
            error,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(err)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(err)?;
        match file.try_lock() {
            Ok(()) => Ok(JobLock {
                file,
                path,
                remove: false,
            }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Busy(id)),
            Err(std::fs::TryLockError::Error(e)) => Err(err(e)),
        }
    }
}

/// A job held by this process (see [`Store::lock_job`]).
pub struct JobLock {
    file: std::fs::File,
    path: PathBuf,
    remove: bool,
}

impl JobLock {
    /// The job is finished for good: its lock file can go when released.
    pub fn finished(&mut self) {
        self.remove = true;
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        if self.remove {
            // Removed while still held, so no other process can be
            // holding this inode; a finished job is never run again.
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}

/// A [`Store`] shared by async tasks; each call runs on the blocking pool.
#[derive(Clone)]
pub struct StoreHandle {
    inner: Arc<Mutex<Store>>,
    path: Arc<PathBuf>,
}

impl StoreHandle {
    pub fn new(store: Store) -> Self {
        let path = Arc::new(store.path().to_path_buf());
        StoreHandle {
            inner: Arc::new(Mutex::new(store)),
            path,
        }
    }

    pub async fn open(dir: PathBuf) -> Result<Self> {
        let store = tokio::task::spawn_blocking(move || Store::open(&dir))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))??;
        Ok(Self::new(store))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the store on a blocking thread.
    pub async fn call<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut Store) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection usable:
            // every change is one transaction, rolled back if unfinished.
            let mut store = inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut store)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

#[cfg(test)]
mod tests;
