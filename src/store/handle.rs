//! The store's one interface: [`Store`], whose async methods are the
//! domain's operations (admit, hold, transition, acknowledge, file, list).
//!
//! Callers never see SQL or a connection, so a second backend (PostgreSQL
//! for a fleet) can stand beside SQLite without touching the engine, the
//! daemon or the commands. Backends are an enum ([`Backend`]) rather than a
//! trait: native `async fn` in traits are not object safe, so a trait would
//! mean either boxed futures on every call or a type parameter threaded
//! through the engine, daemon and commands; an enum is one concrete,
//! cloneable type, and a new backend is a new arm in each method.
//!
//! Every write for a job being driven takes a [`Hold`]: the proof, from
//! [`Store::hold`], that this process holds the job. SQLite's proof is the
//! per-job lock file; a write whose hold is not this store's hold on that
//! job is refused ([`StoreError::NotHeld`]). PostgreSQL's proof is a lease
//! (see `pg/lease.rs`): its writes carry the lease's fencing token, and a
//! writer whose lease was taken over is refused ([`StoreError::LeaseLost`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::error::{Result, StoreError};
pub use super::hold::Hold;
use super::hold::{HoldInner, Proof};
use super::lock::lock_job;
use super::manage::JobQuery;
use super::open::SqliteStore;
use super::pg::{FleetOptions, Lease, PgBackend};
use crate::escaped::Escaped;
use crate::job::{
    ChunkAck, Failure, FilingState, HashCheckpoint, Job, JobId, JobState, NewJob, SessionRecord,
};
use crate::source::FileIdentity;

/// The job store, shared by async tasks (cheap to clone).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

/// Where jobs are kept.
#[derive(Clone)]
pub enum Backend {
    /// SQLite on a local disk (see [`SqliteBackend`]).
    Sqlite(SqliteBackend),
    /// PostgreSQL shared by a fleet of instances (see [`PgBackend`]).
    Postgres(PgBackend),
}

/// The SQLite database of one state folder. Its calls block (disk, fsync),
/// so each runs on the blocking pool, one at a time.
#[derive(Clone)]
pub struct SqliteBackend {
    db: Arc<Mutex<SqliteStore>>,
    path: Arc<PathBuf>,
}

impl SqliteBackend {
    /// Runs `f` on the blocking pool; a SQLite error comes back naming the
    /// database file and `doing` (what was being done), once.
    async fn call<R, F>(&self, doing: impl Into<String>, f: F) -> Result<R>
    where
        F: FnOnce(&mut SqliteStore) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection usable:
            // every change is one transaction, rolled back if unfinished.
            let mut db = db.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut db)
        })
        .await
        .map_err(|e| StoreError::Call(e.to_string()))?;
        result.map_err(|e| match e {
            StoreError::Sqlite(error) => StoreError::Database {
                path: self.path.to_path_buf(),
                doing: doing.into(),
                error,
            },
            other => other,
        })
    }
}

impl Store {
    /// Opens (creating if needed) the SQLite database in `dir`.
    pub async fn open(dir: PathBuf) -> Result<Store> {
        let db = tokio::task::spawn_blocking(move || SqliteStore::open(&dir))
            .await
            .map_err(|e| StoreError::Call(e.to_string()))??;
        let path = Arc::new(db.path().to_path_buf());
        Ok(Store {
            backend: Backend::Sqlite(SqliteBackend {
                db: Arc::new(Mutex::new(db)),
                path,
            }),
        })
    }

    /// Opens the SQLite database in `dir` for reading only: `None` when
    /// there is none. Nothing is created or written (`upload --dry-run`).
    pub async fn open_read_only(dir: PathBuf) -> Result<Option<Store>> {
        let db = tokio::task::spawn_blocking(move || SqliteStore::open_read_only(&dir))
            .await
            .map_err(|e| StoreError::Call(e.to_string()))??;
        Ok(db.map(|db| {
            let path = Arc::new(db.path().to_path_buf());
            Store {
                backend: Backend::Sqlite(SqliteBackend {
                    db: Arc::new(Mutex::new(db)),
                    path,
                }),
            }
        }))
    }

    /// Connects to the fleet's PostgreSQL database (migrating it).
    pub async fn connect(opts: FleetOptions) -> Result<Store> {
        Ok(Store {
            backend: Backend::Postgres(PgBackend::connect(opts).await?),
        })
    }

    /// The store `config` names: PostgreSQL with `state.url`, else SQLite
    /// in `state.dir`.
    pub async fn from_config(config: &crate::config::Config) -> anyhow::Result<Store> {
        let Some(url) = &config.state.url else {
            return Ok(Store::open(config.state.dir.clone()).await?);
        };
        let opts = FleetOptions {
            url: url.clone(),
            password: config.load_db_password()?,
            instance: config.fleet.instance.clone(),
            lease: config.fleet.lease,
        };
        Ok(Store::connect(opts).await?)
    }

    /// Where the jobs are, for messages.
    pub fn path(&self) -> &Path {
        match &self.backend {
            Backend::Sqlite(b) => &b.path,
            Backend::Postgres(b) => b.path(),
        }
    }

    /// Fleet mode: this instance's name (`None` for SQLite).
    pub fn instance(&self) -> Option<&str> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            Backend::Postgres(b) => Some(b.instance()),
        }
    }

    /// The schema version of the database.
    pub async fn schema_version(&self) -> Result<i64> {
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call("reading the schema version", |db| {
                    Ok(db
                        .conn
                        .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?)
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx("reading the schema version", b.schema_version())
                    .await
            }
        }
    }

    /// Refuses a write for job `id` whose `hold` is not this store's hold on it.
    fn check(&self, id: JobId, hold: &Hold) -> Result<()> {
        if hold.0.job == id && hold.0.store == self.path() {
            return Ok(());
        }
        Err(StoreError::NotHeld {
            job: id,
            held: hold.0.job,
            store: hold.0.store.display().to_string(),
        })
    }

    // Holding a job.

    /// Takes job `id` for this process; [`StoreError::Busy`] when another
    /// process (the daemon, another `upload`) holds it now.
    pub async fn hold(&self, id: JobId) -> Result<Hold> {
        match &self.backend {
            Backend::Sqlite(b) => {
                let path = b.path.clone();
                let lock = tokio::task::spawn_blocking(move || lock_job(&path, id))
                    .await
                    .map_err(|e| StoreError::Call(e.to_string()))??;
                Ok(Hold(Arc::new(HoldInner {
                    job: id,
                    store: b.path.to_path_buf(),
                    proof: Proof::LockFile(lock),
                })))
            }
            Backend::Postgres(b) => {
                let lease: Lease = b.ctx(format!("taking job {id}"), b.take(id)).await?;
                Ok(Hold(Arc::new(HoldInner {
                    job: id,
                    store: b.path().to_path_buf(),
                    proof: Proof::Lease(lease),
                })))
            }
        }
    }

    /// Lets go of this clone of `hold`, off the async threads (releasing a
    /// finished job's lock file touches the disk; a lease is given up in
    /// the database when the last clone goes).
    pub async fn release(&self, hold: Hold) {
        if let Some(inner) = Arc::into_inner(hold.0) {
            if let Proof::Lease(lease) = &inner.proof {
                lease.release().await;
            }
            let _ = tokio::task::spawn_blocking(move || drop(inner)).await;
        }
    }

    // Reads.

    pub async fn job(&self, id: JobId) -> Result<Job> {
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("reading job {id}"), move |db| db.job(id))
                    .await
            }
            Backend::Postgres(b) => b.ctx(format!("reading job {id}"), b.job(id)).await,
        }
    }

    /// The jobs `query` selects, pruned ones left out, newest first.
    pub async fn list(&self, query: &JobQuery) -> Result<Vec<Job>> {
        let query = query.clone();
        match &self.backend {
            Backend::Sqlite(b) => b.call("reading jobs", move |db| db.list(&query)).await,
            Backend::Postgres(b) => b.ctx("reading jobs", b.list(&query)).await,
        }
    }

    /// Job `id`'s state alone; cheap enough to poll while driving it.
    pub async fn job_state(&self, id: JobId) -> Result<JobState> {
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("reading job {id}'s state"), move |db| {
                    db.job_state(id)
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(format!("reading job {id}'s state"), b.job_state(id))
                    .await
            }
        }
    }

    /// Every job not pruned, oldest first.
    pub async fn jobs(&self) -> Result<Vec<Job>> {
        match &self.backend {
            Backend::Sqlite(b) => b.call("reading jobs", |db| db.jobs()).await,
            Backend::Postgres(b) => b.ctx("reading jobs", b.jobs()).await,
        }
    }

    /// Jobs in an [active](JobState::ACTIVE) state, oldest first.
    pub async fn unfinished(&self) -> Result<Vec<Job>> {
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call("reading unfinished jobs", |db| db.unfinished())
                    .await
            }
            Backend::Postgres(b) => b.ctx("reading unfinished jobs", b.unfinished()).await,
        }
    }

    /// Unfinished jobs nobody holds now, oldest first: in fleet mode those
    /// whose lease is unset or has run out (their holder died or stopped);
    /// SQLite does not know without trying the lock, so every unfinished one.
    pub async fn takeable(&self) -> Result<Vec<Job>> {
        match &self.backend {
            Backend::Sqlite(_) => self.unfinished().await,
            Backend::Postgres(b) => b.ctx("reading jobs to take over", b.takeable()).await,
        }
    }

    /// Unfinished jobs for a file at `path` (whatever its identity).
    pub async fn unfinished_for_path(&self, path: &Path) -> Result<Vec<Job>> {
        let path = path.to_path_buf();
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(
                    format!("reading jobs for {}", Escaped::path(&path)),
                    move |db| db.unfinished_for_path(&path),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    format!("reading jobs for {}", Escaped::path(&path)),
                    b.unfinished_for_path(&path),
                )
                .await
            }
        }
    }

    /// The newest job for this file identity and import kind. SQLite knows
    /// a file by (device, inode, size, mtime) wherever it is; fleet mode by
    /// its path, inode, size and mtime (device numbers differ per host).
    pub async fn find_by_identity(
        &self,
        path: &Path,
        identity: &FileIdentity,
        file_context: &str,
        is_adapter: bool,
    ) -> Result<Option<Job>> {
        let (path, identity, ctx) = (path.to_path_buf(), *identity, file_context.to_string());
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call("looking up a file's jobs", move |db| {
                    db.find_by_identity(&identity, &ctx, is_adapter)
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    "looking up a file's jobs",
                    b.find_by_identity(&path, &identity, &ctx, is_adapter),
                )
                .await
            }
        }
    }

    /// Jobs per state.
    pub async fn count_by_state(&self) -> Result<Vec<(JobState, u64)>> {
        match &self.backend {
            Backend::Sqlite(b) => b.call("counting jobs", |db| db.count_by_state()).await,
            Backend::Postgres(b) => b.ctx("counting jobs", b.count_by_state()).await,
        }
    }

    /// Chunks acknowledged in the job's current session.
    pub async fn acked_chunks(&self, id: JobId) -> Result<Vec<ChunkAck>> {
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("reading job {id}'s chunks"), move |db| {
                    db.acked_chunks(id)
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(format!("reading job {id}'s chunks"), b.acked_chunks(id))
                    .await
            }
        }
    }

    /// Finished daemon jobs whose filing is not final.
    pub async fn unfiled(&self) -> Result<Vec<Job>> {
        match &self.backend {
            Backend::Sqlite(b) => b.call("reading jobs to file", |db| db.unfiled()).await,
            Backend::Postgres(b) => b.ctx("reading jobs to file", b.unfiled()).await,
        }
    }

    // A job's life.

    /// A new job, `queued`.
    pub async fn admit(&self, new: &NewJob) -> Result<JobId> {
        let new = new.clone();
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(
                    format!("adding a job for {}", Escaped::path(&new.path)),
                    move |db| db.admit(&new),
                )
                .await
            }
            Backend::Postgres(b) => {
                let doing = format!("adding a job for {}", Escaped::path(&new.path));
                b.ctx(doing, b.admit(&new, None))
                    .await?
                    .map_err(|j| StoreError::Corrupt {
                        job: j.id,
                        detail: "an unconditional admission was refused".into(),
                    })
            }
        }
    }

    /// A new job, `queued`, unless the newest job for its identity is no
    /// longer `seen` (what the caller looked up before deciding): then that
    /// newer job. In fleet mode instances that see one new file at once
    /// take turns here, so it becomes one job. SQLite's daemon is the one
    /// process admitting drop-folder files, so there it always admits.
    pub async fn admit_unless_newer(
        &self,
        new: &NewJob,
        seen: Option<JobId>,
    ) -> Result<std::result::Result<JobId, Job>> {
        match &self.backend {
            Backend::Sqlite(_) => self.admit(new).await.map(Ok),
            Backend::Postgres(b) => {
                let doing = format!("adding a job for {}", Escaped::path(&new.path));
                b.ctx(doing, b.admit(new, Some(seen))).await
            }
        }
    }

    /// A new session for the job (`uploading`); the old session's chunk
    /// acknowledgements are dropped with it.
    pub async fn start_session(
        &self,
        id: JobId,
        hold: &Hold,
        session: &SessionRecord,
        model_id: &str,
    ) -> Result<()> {
        self.check(id, hold)?;
        let (session, model_id) = (session.clone(), model_id.to_string());
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("job {id}: recording a new session"), move |db| {
                    db.start_session(id, &session, &model_id)
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    format!("job {id}: recording a new session"),
                    b.start_session(id, hold.fence()?, &session, &model_id),
                )
                .await
            }
        }
    }

    /// The platform acknowledged a chunk of `session_id`; the hash
    /// checkpoint moves forward when `checkpoint` is newer.
    pub async fn ack_chunk(
        &self,
        id: JobId,
        hold: &Hold,
        session_id: &str,
        ack: &ChunkAck,
        checkpoint: Option<&HashCheckpoint>,
    ) -> Result<()> {
        self.check(id, hold)?;
        let (sid, ack, cp) = (session_id.to_string(), ack.clone(), checkpoint.cloned());
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(
                    format!("job {id}: recording chunk {}", ack.index),
                    move |db| db.ack_chunk(id, &sid, &ack, cp.as_ref()),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    format!("job {id}: recording chunk {}", ack.index),
                    b.ack_chunk(id, hold.fence()?, &sid, &ack, cp.as_ref()),
                )
                .await
            }
        }
    }

    /// Every chunk is acknowledged: the file's sha256, and `completing`.
    pub async fn begin_complete(&self, id: JobId, hold: &Hold, sha256: &str) -> Result<()> {
        self.check(id, hold)?;
        let sha256 = sha256.to_string();
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("job {id}: recording completion"), move |db| {
                    db.begin_complete(id, &sha256)
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    format!("job {id}: recording completion"),
                    b.begin_complete(id, hold.fence()?, &sha256),
                )
                .await
            }
        }
    }

    /// The platform took `complete`: where to poll, and `importing`.
    pub async fn set_importing(
        &self,
        id: JobId,
        hold: &Hold,
        dock_status_id: &str,
        model_id: Option<&str>,
    ) -> Result<()> {
        self.check(id, hold)?;
        let (dock, model) = (dock_status_id.to_string(), model_id.map(str::to_string));
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("job {id}: recording the import"), move |db| {
                    db.set_importing(id, &dock, model.as_deref())
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    format!("job {id}: recording the import"),
                    b.set_importing(id, hold.fence()?, &dock, model.as_deref()),
                )
                .await
            }
        }
    }

    pub async fn succeed(&self, id: JobId, hold: &Hold, model_id: Option<&str>) -> Result<()> {
        self.check(id, hold)?;
        let model = model_id.map(str::to_string);
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("job {id}: recording success"), move |db| {
                    db.succeed(id, model.as_deref())
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    format!("job {id}: recording success"),
                    b.succeed(id, hold.fence()?, model.as_deref()),
                )
                .await
            }
        }
    }

    pub async fn fail(&self, id: JobId, hold: &Hold, failure: &Failure) -> Result<()> {
        self.check(id, hold)?;
        let failure = failure.clone();
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("job {id}: recording the failure"), move |db| {
                    db.fail(id, &failure)
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    format!("job {id}: recording the failure"),
                    b.fail(id, hold.fence()?, &failure),
                )
                .await
            }
        }
    }

    /// A passing problem (a retry, a rejected key) for `status`; the job's
    /// state stays.
    pub async fn note_error(
        &self,
        id: JobId,
        hold: &Hold,
        error: &str,
        next_retry_at: Option<SystemTime>,
    ) -> Result<()> {
        self.check(id, hold)?;
        let error = error.to_string();
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("job {id}: recording an error"), move |db| {
                    db.note_error(id, &error, next_retry_at)
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    format!("job {id}: recording an error"),
                    b.note_error(id, hold.fence()?, &error, next_retry_at),
                )
                .await
            }
        }
    }

    // Operators' changes (no hold: another process may be driving the job).

    /// Moves a `queued`, `uploading` or `completing` job to `cancelled`
    /// (error stage `cancelled`, `reason` as its error). The process driving
    /// it, if any, notices from the store and stops; others refuse
    /// ([`StoreError::InvalidTransition`]).
    pub async fn cancel(&self, id: JobId, reason: &str) -> Result<()> {
        let reason = reason.to_string();
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("job {id}: cancelling it"), move |db| {
                    db.cancel(id, &reason)
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(format!("job {id}: cancelling it"), b.cancel(id, &reason))
                    .await
            }
        }
    }

    /// Forgets the details of jobs finished (and filed) before `cutoff`,
    /// keeping what recognises their files; returns how many.
    pub async fn prune(&self, cutoff: SystemTime) -> Result<u64> {
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call("pruning finished jobs", move |db| db.prune(cutoff))
                    .await
            }
            Backend::Postgres(b) => b.ctx("pruning finished jobs", b.prune(cutoff)).await,
        }
    }

    // Dedupe (imported files by size, then sha256).

    /// Whether a file of exactly `size` bytes was imported with this
    /// `file_context` and `is_adapter`: only then is a sha256 pass worth it.
    pub async fn imported_size_exists(
        &self,
        size: u64,
        file_context: &str,
        is_adapter: bool,
    ) -> Result<bool> {
        let ctx = file_context.to_string();
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call("looking up imported files by size", move |db| {
                    db.imported_size_exists(size, &ctx, is_adapter)
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    "looking up imported files by size",
                    b.imported_size_exists(size, &ctx, is_adapter),
                )
                .await
            }
        }
    }

    /// The succeeded job that imported these bytes with this kind, if any.
    pub async fn find_imported(
        &self,
        size: u64,
        sha256: &str,
        file_context: &str,
        is_adapter: bool,
    ) -> Result<Option<Job>> {
        let (sha, ctx) = (sha256.to_string(), file_context.to_string());
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call("looking up imported files by sha256", move |db| {
                    db.find_imported(size, &sha, &ctx, is_adapter)
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    "looking up imported files by sha256",
                    b.find_imported(size, &sha, &ctx, is_adapter),
                )
                .await
            }
        }
    }

    /// A queued job whose bytes (`sha256`) `original` imported already:
    /// `succeeded` as its duplicate, nothing sent.
    pub async fn succeed_duplicate(
        &self,
        id: JobId,
        hold: &Hold,
        sha256: &str,
        original: &Job,
    ) -> Result<()> {
        self.check(id, hold)?;
        let (sha, original) = (sha256.to_string(), original.clone());
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("job {id}: recording a duplicate"), move |db| {
                    db.succeed_duplicate(id, &sha, &original)
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    format!("job {id}: recording a duplicate"),
                    b.succeed_duplicate(id, hold.fence()?, &sha, &original),
                )
                .await
            }
        }
    }

    // Filing of finished daemon jobs (the daemon alone files; no hold).

    /// Records where a finished job's file goes, before anything moves.
    /// Planning twice keeps the first plan.
    pub async fn plan_filing(&self, id: JobId, dest: Option<&Path>) -> Result<()> {
        let dest = dest.map(Path::to_path_buf);
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("job {id}: planning its filing"), move |db| {
                    db.plan_filing(id, dest.as_deref())
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    format!("job {id}: planning its filing"),
                    b.plan_filing(id, dest.as_deref()),
                )
                .await
            }
        }
    }

    /// The planned filing is carried out (`done`) or does not apply (`skipped`).
    pub async fn finish_filing(&self, id: JobId, state: FilingState) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("job {id}: recording its filing"), move |db| {
                    db.finish_filing(id, state)
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    format!("job {id}: recording its filing"),
                    b.finish_filing(id, state),
                )
                .await
            }
        }
    }

    /// Filing failed this time; it is retried.
    pub async fn note_filing_error(&self, id: JobId, error: &str) -> Result<()> {
        let error = error.to_string();
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("job {id}: recording a filing error"), move |db| {
                    db.note_filing_error(id, &error)
                })
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    format!("job {id}: recording a filing error"),
                    b.note_filing_error(id, &error),
                )
                .await
            }
        }
    }
}

#[cfg(test)]
impl Store {
    /// Runs `f` on the SQLite backend directly (tests of the SQL itself).
    pub(super) async fn with_sqlite<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&mut SqliteStore) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        match &self.backend {
            Backend::Sqlite(b) => b.call("a test's own query", f).await,
            Backend::Postgres(_) => panic!("not a SQLite store"),
        }
    }
}
