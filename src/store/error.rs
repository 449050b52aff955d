//! What can go wrong in the store, typed where a caller must branch.

use std::path::PathBuf;

use crate::job::{FilingState, JobId, JobState};

/// A store operation that failed; each names the database or the job.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or prepared.
    #[error("state database {path}: {detail}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A SQLite error, with the database file and what was being done. The
    /// SQLite text is part of this message and deliberately not `source()`:
    /// printing the chain (`{:#}`) would repeat it.
    #[error("state database {path}: {doing}: {error}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        doing: String,
        /// SQLite's error.
        error: rusqlite::Error,
    },
    /// A PostgreSQL error, with the database (its URL, which never carries
    /// the password) and what was being done.
    #[error("state database {db}: {doing}: {detail}")]
    Postgres {
        /// The database's URL (without a password).
        db: String,
        /// What was being done.
        doing: String,
        /// PostgreSQL's error, as text.
        detail: String,
    },
    /// A PostgreSQL error not yet given its context.
    #[error("state database: {0}")]
    Pg(String),
    /// Fleet mode: the write came from a holder whose lease another
    /// instance has taken over (it stopped renewing in time); refused.
    #[error("job {job}: this instance ({instance}) no longer holds its lease (another instance took the job over); the write is refused")]
    LeaseLost {
        /// The job written.
        job: JobId,
        /// This instance's name.
        instance: String,
    },
    /// The database was migrated by a newer modelferry.
    #[error("state database {db}: schema version {found} is newer than this modelferry knows ({known}); upgrade modelferry")]
    SchemaTooNew {
        /// The database.
        db: String,
        /// The database's schema version.
        found: i64,
        /// The newest schema version this modelferry knows.
        known: i64,
    },
    /// A command that never migrates (`check`, `status` in fleet mode,
    /// `--dry-run`) found the schema older than this modelferry's.
    #[error("state database {db}: schema version {found} is older than this modelferry's ({known}); `modelferry run` or `upload` migrates it")]
    SchemaTooOld {
        /// The database.
        db: String,
        /// The database's schema version (0: never migrated).
        found: i64,
        /// The schema version this modelferry knows.
        known: i64,
    },
    /// A SQLite error not yet given its context; the [`Store`](super::Store)
    /// interface turns it into [`StoreError::Database`].
    #[error("state database: {0}")]
    Sqlite(rusqlite::Error),
    /// The job is not in a state from which the rules allow `to`.
    #[error("job {job}: cannot go from {from} to {to}")]
    InvalidTransition {
        /// The job.
        job: JobId,
        /// Its state now.
        from: JobState,
        /// The state asked for.
        to: JobState,
    },
    /// A note for a job being driven (a retry, a rejected key) found it no
    /// longer active: cancelled or finished meanwhile, whose reason stays.
    #[error("job {job}: it is {state}, no longer active; the note is refused")]
    NotActive {
        /// The job.
        job: JobId,
        /// Its state now.
        state: JobState,
    },
    /// The job's filing is not at a step from which the rules allow `to`,
    /// or the job is not finished.
    #[error("job {job} ({state}): filing cannot go from {} to {to}", from.map_or("not planned", |f| f.as_str()))]
    InvalidFiling {
        /// The job.
        job: JobId,
        /// The job's state.
        state: JobState,
        /// Its filing state now (`None`: not planned).
        from: Option<FilingState>,
        /// The filing state asked for.
        to: FilingState,
    },
    /// No job has this id.
    #[error("job {0} is not in the state database")]
    NotFound(JobId),
    /// A write for a session the job has since replaced.
    #[error("job {job}: session {session} is no longer the job's session")]
    StaleSession {
        /// The job.
        job: JobId,
        /// The session the write was for.
        session: String,
    },
    /// A write for a job came with a hold that is not this store's hold on
    /// that job: a bug in the caller, or (in a shared backend) a lost lease.
    #[error("job {job}: written without holding it (the hold given is for job {held} of {store})")]
    NotHeld {
        /// The job written.
        job: JobId,
        /// The job the hold is for.
        held: JobId,
        /// The store the hold is from.
        store: String,
    },
    /// A stored value that cannot be read back.
    #[error("state database: job {job}: {detail}")]
    Corrupt {
        /// The job whose row it is.
        job: JobId,
        /// What is wrong with it.
        detail: String,
    },
    /// The store's own call on the blocking pool panicked or was cancelled.
    #[error("state database call did not finish: {0}")]
    Call(String),
    /// Another modelferry process holds the job.
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
        /// The lock file.
        path: PathBuf,
        /// The I/O error on the lock file.
        error: std::io::Error,
    },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sqlite(e)
    }
}

/// The result of a store operation.
pub type Result<T> = std::result::Result<T, StoreError>;
