//! What can go wrong in the store, typed where a caller must branch.

use std::path::PathBuf;

use crate::job::{FilingState, JobId, JobState};

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
    /// A PostgreSQL error, with the database (its URL, which never carries
    /// the password) and what was being done.
    #[error("state database {db}: {doing}: {detail}")]
    Postgres {
        db: String,
        doing: String,
        detail: String,
    },
    /// A PostgreSQL error not yet given its context.
    #[error("state database: {0}")]
    Pg(String),
    /// Fleet mode: the write came from a holder whose lease another
    /// instance has taken over (it stopped renewing in time); refused.
    #[error("job {job}: this instance ({instance}) no longer holds its lease (another instance took the job over); the write is refused")]
    LeaseLost { job: JobId, instance: String },
    /// The database was migrated by a newer modelferry.
    #[error("state database {db}: schema version {found} is newer than this modelferry knows ({known}); upgrade modelferry")]
    SchemaTooNew { db: String, found: i64, known: i64 },
    /// A SQLite error not yet given its context; the [`Store`](super::Store)
    /// interface turns it into [`StoreError::Database`].
    #[error("state database: {0}")]
    Sqlite(rusqlite::Error),
    /// The job is not in a state from which the rules allow `to`.
    #[error("job {job}: cannot go from {from} to {to}")]
    InvalidTransition {
        job: JobId,
        from: JobState,
        to: JobState,
    },
    /// The job's filing is not at a step from which the rules allow `to`,
    /// or the job is not finished.
    #[error("job {job} ({state}): filing cannot go from {} to {to}", from.map_or("not planned", |f| f.as_str()))]
    InvalidFiling {
        job: JobId,
        state: JobState,
        from: Option<FilingState>,
        to: FilingState,
    },
    #[error("job {0} is not in the state database")]
    NotFound(JobId),
    #[error("job {job}: session {session} is no longer the job's session")]
    StaleSession { job: JobId, session: String },
    /// A write for a job came with a hold that is not this store's hold on
    /// that job: a bug in the caller, or (in a shared backend) a lost lease.
    #[error("job {job}: written without holding it (the hold given is for job {held} of {store})")]
    NotHeld {
        job: JobId,
        held: JobId,
        store: String,
    },
    #[error("state database: job {job}: {detail}")]
    Corrupt { job: JobId, detail: String },
    /// The store's own call on the blocking pool panicked or was cancelled.
    #[error("state database call did not finish: {0}")]
    Call(String),
    #[error("job {0} is being run by another modelferry process")]
    Busy(JobId),
    /// Paths are stored and shown as text: a path that is not UTF-8 would
    /// be stored altered and never found again.
    #[error("{}: the path is not valid UTF-8", crate::escaped::Escaped::path(.0))]
    NotUtf8(PathBuf),
    /// The io error is part of the message, not `source()`, so the chain
    /// printed with `{:#}` says it once.
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

pub type Result<T> = std::result::Result<T, StoreError>;
