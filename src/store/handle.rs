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
//! job is refused ([`StoreError::NotHeld`]). A networked backend would make
//! the hold a lease and refuse a writer whose lease was taken over.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::error::{Result, StoreError};
use super::lock::{lock_job, JobLock};
use super::manage::JobQuery;
use super::open::SqliteStore;
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

/// Proof that this process holds a job: required by every write for a job
/// being driven. Clones are the same hold; the job is released when the
/// last clone is dropped (or the process ends).
#[derive(Clone, Debug)]
pub struct Hold(Arc<HoldInner>);

#[derive(Debug)]
struct HoldInner {
    job: JobId,
    /// The database the hold is on: a hold is only good for its own store.
    store: PathBuf,
    proof: Proof,
}

#[derive(Debug)]
enum Proof {
    LockFile(JobLock),
}

impl Hold {
    pub fn job(&self) -> JobId {
        self.0.job
    }

    /// The job reached a final state: nothing will hold it again, so the
    /// backend may forget the hold entirely on release (the lock file goes).
    pub fn finished(&self) {
        match &self.0.proof {
            Proof::LockFile(lock) => lock.finished(),
        }
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

    /// Where the jobs are, for messages.
    pub fn path(&self) -> &Path {
        match &self.backend {
            Backend::Sqlite(b) => &b.path,
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
        }
    }

    /// Lets go of this clone of `hold`, off the async threads (releasing a
    /// finished job's lock file touches the disk).
    pub async fn release(&self, hold: Hold) {
        let _ = tokio::task::spawn_blocking(move || drop(hold)).await;
    }

    // Reads.

    pub async fn job(&self, id: JobId) -> Result<Job> {
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call(format!("reading job {id}"), move |db| db.job(id))
                    .await
            }
        }
    }

    /// The jobs `query` selects, pruned ones left out, newest first.
    pub async fn list(&self, query: &JobQuery) -> Result<Vec<Job>> {
        let query = query.clone();
        match &self.backend {
            Backend::Sqlite(b) => b.call("reading jobs", move |db| db.list(&query)).await,
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
        }
    }

    /// Every job not pruned, oldest first.
    pub async fn jobs(&self) -> Result<Vec<Job>> {
        match &self.backend {
            Backend::Sqlite(b) => b.call("reading jobs", |db| db.jobs()).await,
        }
    }

    /// Jobs in an [active](JobState::ACTIVE) state, oldest first.
    pub async fn unfinished(&self) -> Result<Vec<Job>> {
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call("reading unfinished jobs", |db| db.unfinished())
                    .await
            }
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
        }
    }

    /// The newest job for this file identity and import kind.
    pub async fn find_by_identity(
        &self,
        identity: &FileIdentity,
        file_context: &str,
        is_adapter: bool,
    ) -> Result<Option<Job>> {
        let (identity, ctx) = (*identity, file_context.to_string());
        match &self.backend {
            Backend::Sqlite(b) => {
                b.call("looking up a file's jobs", move |db| {
                    db.find_by_identity(&identity, &ctx, is_adapter)
                })
                .await
            }
        }
    }

    /// Jobs per state.
    pub async fn count_by_state(&self) -> Result<Vec<(JobState, u64)>> {
        match &self.backend {
            Backend::Sqlite(b) => b.call("counting jobs", |db| db.count_by_state()).await,
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
        }
    }

    /// Finished daemon jobs whose filing is not final.
    pub async fn unfiled(&self) -> Result<Vec<Job>> {
        match &self.backend {
            Backend::Sqlite(b) => b.call("reading jobs to file", |db| db.unfiled()).await,
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
        }
    }
}
