//! The PostgreSQL backend (fleet mode): one database shared by every
//! instance, with jobs held under leases.
//!
//! The schema mirrors SQLite's tables (same columns, same meanings, times
//! as milliseconds), plus the lease: `instance`, `lease_token` (a fencing
//! token, bumped on every take) and `lease_expires_at` (the database's
//! clock). Jobs are read through the same row mapping as SQLite's
//! ([`super::rows::job_from_row`]), so a column added to both is read once.
//! Every write for a held job is conditional on the lease it was given with
//! (`instance` and `lease_token`): a stale holder's writes change nothing and
//! come back as [`StoreError::LeaseLost`].
//!
//! tokio-postgres rather than sqlx: it is async to the core like the rest
//! of the program, builds quickly with few features, and needs no compile-
//! time database for its queries; its pool is the few lines of [`pool`].
//!
//! Files: `pool` (connections, TLS), `migrations`, `jobs` (admission,
//! reads, transitions), `filing`, `lease` (taking, renewing and releasing
//! a job).

mod filing;
pub(super) mod jobs;
mod lease;
mod manage;
mod migrations;
mod pool;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub(crate) use lease::Lease;
pub use migrations::SCHEMA_VERSION;

use self::pool::Pool;
use super::error::{Result, StoreError};
use super::rows::{job_from_row, job_select_items, Columns};
use crate::job::Job;
use crate::secret::Secret;

/// How to reach the fleet's database, and who this instance is.
#[derive(Clone)]
pub struct FleetOptions {
    /// `postgresql://user@host/db`; never with a password.
    pub url: url::Url,
    /// The database password; `None`: connect without one.
    pub password: Option<Secret>,
    /// The name this instance holds jobs under.
    pub instance: String,
    /// How long a lease lasts without renewal.
    pub lease: Duration,
}

/// The shared PostgreSQL database (cheap to clone).
#[derive(Clone)]
pub struct PgBackend(Arc<PgInner>);

struct PgInner {
    pool: Pool,
    /// The URL (no password), as messages and holds name the database.
    db: PathBuf,
    instance: Arc<str>,
    lease: Duration,
}

impl PgBackend {
    /// Connects, and migrates the schema under an advisory lock.
    pub async fn connect(opts: FleetOptions) -> Result<PgBackend> {
        let backend = PgBackend::new(opts)?;
        backend
            .ctx(|| "migrating the schema".into(), backend.migrate())
            .await?;
        Ok(backend)
    }

    /// Connects without migrating: nothing is written to check the schema,
    /// and a schema other than this binary's is an error naming both
    /// versions ([`StoreError::SchemaTooOld`], [`StoreError::SchemaTooNew`]).
    pub async fn connect_without_migrating(opts: FleetOptions) -> Result<PgBackend> {
        let backend = PgBackend::new(opts)?;
        backend
            .ctx(
                || "reading the schema version".into(),
                backend.check_schema(),
            )
            .await?;
        Ok(backend)
    }

    fn new(opts: FleetOptions) -> Result<PgBackend> {
        Ok(PgBackend(Arc::new(PgInner {
            pool: Pool::new(&opts)?,
            db: PathBuf::from(opts.url.as_str()),
            instance: opts.instance.into(),
            lease: opts.lease,
        })))
    }

    /// The database's URL (without a password), as messages and holds name it.
    pub fn path(&self) -> &Path {
        &self.0.db
    }

    /// The name this instance holds jobs under.
    pub fn instance(&self) -> &str {
        &self.0.instance
    }

    /// Runs `f`, giving a PostgreSQL error the database and `doing`, once:
    /// only then is its text made.
    pub(super) async fn ctx<R>(
        &self,
        doing: impl FnOnce() -> String,
        f: impl std::future::Future<Output = Result<R>>,
    ) -> Result<R> {
        f.await.map_err(|e| match e {
            StoreError::Pg(error) => StoreError::Postgres {
                db: self.0.db.display().to_string(),
                doing: doing(),
                detail: error,
            },
            other => other,
        })
    }
}

/// Turns a driver error into [`StoreError::Pg`], with the server's own
/// message where there is one (the driver's `Display` alone says only
/// "db error").
pub(super) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    let text = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    };
    StoreError::Pg(text)
}

/// `SELECT` list for a job: SQLite's, and the holding instance.
pub(super) fn job_select() -> &'static str {
    static SELECT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let mut items = job_select_items();
        items.push("j.instance AS instance".into());
        items.join(", ")
    });
    &SELECT
}

impl Columns for tokio_postgres::Row {
    fn int(&self, c: &str) -> Result<i64> {
        self.try_get(c).map_err(pg_error)
    }
    fn opt_int(&self, c: &str) -> Result<Option<i64>> {
        self.try_get(c).map_err(pg_error)
    }
    fn text(&self, c: &str) -> Result<String> {
        self.try_get(c).map_err(pg_error)
    }
    fn opt_text(&self, c: &str) -> Result<Option<String>> {
        self.try_get(c).map_err(pg_error)
    }
    fn opt_bytes(&self, c: &str) -> Result<Option<Vec<u8>>> {
        self.try_get(c).map_err(pg_error)
    }
    fn flag(&self, c: &str) -> Result<bool> {
        self.try_get(c).map_err(pg_error)
    }
}

/// A job from a row of [`job_select`].
pub(super) fn job_of(row: &tokio_postgres::Row) -> Result<Job> {
    let mut job = job_from_row(row)?;
    job.instance = row.opt_text("instance")?;
    Ok(job)
}
