//! The job store: where jobs and their progress are kept.
//!
//! [`Store`] is the one interface: async methods named for the domain's
//! operations ([`crate::job`] owns the types and the rules), behind which sits
//! a [`Backend`]: SQLite by default (`modelferry.db`: WAL,
//! `synchronous=FULL`, foreign keys, busy timeout, migrated on open), or
//! PostgreSQL shared by a fleet of instances (`pg/`: leases with fencing). Each change is one
//! transaction guarded by the job's current state (or filing step) as the
//! job module's rules allow; a change that finds the job elsewhere is an
//! error, never a silent no-op. Writes for a job being driven require the
//! [`Hold`] on it.
//!
//! Files: `handle` (the interface), `hold` (proofs of holding), `open` (opening, pragmas,
//! ownership), `migrations`, `rows` (row mapping by column name), `jobs`
//! (admission, transitions, acknowledgements), `filing`, `manage` (listing,
//! cancel, prune), `dedupe` (imported files by size and sha256), `lock` (the
//! per-job lock file), `error`.

mod dedupe;
mod error;
mod filing;
mod handle;
mod hold;
mod jobs;
mod lock;
mod manage;
mod migrations;
mod open;
mod pg;
mod rows;

pub use error::StoreError;
pub use handle::{Backend, Hold, SqliteBackend, Store};
pub use manage::JobQuery;
/// SQLite's migrations in order, for tests that build an older schema.
#[doc(hidden)]
pub use migrations::MIGRATIONS;
pub use pg::{FleetOptions, PgBackend, SCHEMA_VERSION as PG_SCHEMA_VERSION};

#[cfg(test)]
mod tests;

/// The synchronous SQLite store, for tests elsewhere in the crate that need
/// a [`Job`](crate::job::Job) as the store makes it, outside a runtime.
#[cfg(test)]
pub(crate) use open::SqliteStore;
