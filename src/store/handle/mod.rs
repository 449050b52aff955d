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
//!
//! Reads are in `reads`, filing in `filing`, operators' changes and dedupe
//! in `manage`: further `impl Store` blocks, one concern a file.

mod filing;
mod manage;
mod reads;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::error::{Result, StoreError};
pub use super::hold::Hold;
use super::hold::{HoldInner, LockFileProof, Proof};
use super::lock::lock_job;
use super::open::SqliteStore;
use super::pg::{FleetOptions, Lease, PgBackend};
use crate::escaped::Escaped;
use crate::job::{ChunkAck, Failure, HashCheckpoint, Job, JobId, NewJob, SessionRecord};

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
    /// database file and `doing` (what was being done), once: only then is
    /// its text made.
    async fn call<R, F>(&self, doing: impl FnOnce() -> String, f: F) -> Result<R>
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
                doing: doing(),
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
    /// in `state.dir`; migrated (`run`, `upload`).
    pub async fn from_config(config: &crate::config::Config) -> anyhow::Result<Store> {
        let Some(opts) = fleet_options(config)? else {
            return Ok(Store::open(config.state.dir.clone()).await?);
        };
        Ok(Store::connect(opts).await?)
    }

    /// The store `config` names, as it is: never created nor migrated
    /// (`check`, `status`, `--dry-run`). `None` while there is no database
    /// yet (SQLite: no file; PostgreSQL: never migrated), so no jobs. SQLite
    /// is opened read-only; in both a schema other than this binary's is an
    /// error naming both versions.
    pub async fn from_config_without_migrating(
        config: &crate::config::Config,
    ) -> anyhow::Result<Option<Store>> {
        let Some(opts) = fleet_options(config)? else {
            return Ok(Store::open_read_only(config.state.dir.clone()).await?);
        };
        match PgBackend::connect_without_migrating(opts).await {
            Ok(b) => Ok(Some(Store {
                backend: Backend::Postgres(b),
            })),
            Err(StoreError::SchemaTooOld { found: 0, .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
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
                b.call(
                    || "reading the schema version".into(),
                    |db| {
                        Ok(db
                            .conn
                            .query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?)
                    },
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(|| "reading the schema version".into(), b.schema_version())
                    .await
            }
        }
    }

    /// Refuses a write for job `id` whose `hold` is not this store's hold on it.
    pub(super) fn check(&self, id: JobId, hold: &Hold) -> Result<()> {
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
                    proof: Proof::LockFile(LockFileProof::new(lock, self.clone())),
                })))
            }
            Backend::Postgres(b) => {
                let lease: Lease = b.ctx(|| format!("taking job {id}"), b.take(id)).await?;
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

    // A job's life.

    /// A new job, `queued`.
    pub async fn admit(&self, new: &NewJob) -> Result<JobId> {
        match &self.backend {
            Backend::Sqlite(b) => {
                let owned = new.clone();
                b.call(
                    || format!("adding a job for {}", Escaped::path(&new.path)),
                    move |db| db.admit(&owned),
                )
                .await
            }
            Backend::Postgres(b) => {
                let doing = || format!("adding a job for {}", Escaped::path(&new.path));
                b.ctx(doing, b.admit(new, None))
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
                let doing = || format!("adding a job for {}", Escaped::path(&new.path));
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
        match &self.backend {
            Backend::Sqlite(b) => {
                let (session, model_id) = (session.clone(), model_id.to_string());
                b.call(
                    || format!("job {id}: recording a new session"),
                    move |db| db.start_session(id, &session, &model_id),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    || format!("job {id}: recording a new session"),
                    b.start_session(id, hold.fence()?, session, model_id),
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
        match &self.backend {
            Backend::Sqlite(b) => {
                let (sid, ack, cp) = (session_id.to_string(), ack.clone(), checkpoint.cloned());
                let index = ack.index;
                b.call(
                    || format!("job {id}: recording chunk {index}"),
                    move |db| db.ack_chunk(id, &sid, &ack, cp.as_ref()),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    || format!("job {id}: recording chunk {}", ack.index),
                    b.ack_chunk(id, hold.fence()?, session_id, ack, checkpoint),
                )
                .await
            }
        }
    }

    /// Every chunk is acknowledged: the file's sha256, and `completing`.
    pub async fn begin_complete(&self, id: JobId, hold: &Hold, sha256: &str) -> Result<()> {
        self.check(id, hold)?;
        match &self.backend {
            Backend::Sqlite(b) => {
                let sha256 = sha256.to_string();
                b.call(
                    || format!("job {id}: recording completion"),
                    move |db| db.begin_complete(id, &sha256),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    || format!("job {id}: recording completion"),
                    b.begin_complete(id, hold.fence()?, sha256),
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
        match &self.backend {
            Backend::Sqlite(b) => {
                let (dock, model) = (dock_status_id.to_string(), model_id.map(str::to_string));
                b.call(
                    || format!("job {id}: recording the import"),
                    move |db| db.set_importing(id, &dock, model.as_deref()),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    || format!("job {id}: recording the import"),
                    b.set_importing(id, hold.fence()?, dock_status_id, model_id),
                )
                .await
            }
        }
    }

    /// The job is imported (`succeeded`); `model_id`, when given, replaces the
    /// one recorded.
    pub async fn succeed(&self, id: JobId, hold: &Hold, model_id: Option<&str>) -> Result<()> {
        self.check(id, hold)?;
        match &self.backend {
            Backend::Sqlite(b) => {
                let model = model_id.map(str::to_string);
                b.call(
                    || format!("job {id}: recording success"),
                    move |db| db.succeed(id, model.as_deref()),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    || format!("job {id}: recording success"),
                    b.succeed(id, hold.fence()?, model_id),
                )
                .await
            }
        }
    }

    /// The job failed for good (`failed`), for the reason in `failure`.
    pub async fn fail(&self, id: JobId, hold: &Hold, failure: &Failure) -> Result<()> {
        self.check(id, hold)?;
        match &self.backend {
            Backend::Sqlite(b) => {
                let failure = failure.clone();
                b.call(
                    || format!("job {id}: recording the failure"),
                    move |db| db.fail(id, &failure),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    || format!("job {id}: recording the failure"),
                    b.fail(id, hold.fence()?, failure),
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
        match &self.backend {
            Backend::Sqlite(b) => {
                let error = error.to_string();
                b.call(
                    || format!("job {id}: recording an error"),
                    move |db| db.note_error(id, &error, next_retry_at),
                )
                .await
            }
            Backend::Postgres(b) => {
                b.ctx(
                    || format!("job {id}: recording an error"),
                    b.note_error(id, hold.fence()?, error, next_retry_at),
                )
                .await
            }
        }
    }
}

/// Fleet mode's options from `config`; `None` for SQLite.
fn fleet_options(config: &crate::config::Config) -> anyhow::Result<Option<FleetOptions>> {
    let Some(url) = &config.state.url else {
        return Ok(None);
    };
    Ok(Some(FleetOptions {
        url: url.clone(),
        password: config.load_db_password()?,
        instance: config.fleet.instance.clone(),
        lease: config.fleet.lease,
    }))
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
            Backend::Sqlite(b) => b.call(|| "a test's own query".into(), f).await,
            Backend::Postgres(_) => panic!("not a SQLite store"),
        }
    }
}
