//! The schema, as an append-only list of migrations.
//!
//! `PRAGMA user_version` holds how many have been applied. Never edit or
//! reorder an entry that has shipped: add a new one.
//!
//! Hand-written rather than `rusqlite_migration`: the runner is the twenty
//! lines of [`SqliteStore::migrate`] (tested: applied twice, a newer schema
//! refused with an error naming the database), while that crate pins
//! `rusqlite`'s minor version, so every `rusqlite` upgrade would wait on it.

use rusqlite::TransactionBehavior;

use super::error::{Result, StoreError};
use super::open::SqliteStore;

/// The migrations in order; `PRAGMA user_version` counts those applied.
pub const MIGRATIONS: &[&str] = &[
    // 1: jobs and their acknowledged chunks.
    r#"
    CREATE TABLE jobs (
        id                 INTEGER PRIMARY KEY,
        path               TEXT    NOT NULL,
        file_name          TEXT    NOT NULL,
        dev                INTEGER NOT NULL,
        ino                INTEGER NOT NULL,
        size               INTEGER NOT NULL,
        mtime_ns           INTEGER NOT NULL,
        file_context       TEXT    NOT NULL,
        is_adapter         INTEGER NOT NULL,
        chunk_size         INTEGER NOT NULL,
        chunks_total       INTEGER NOT NULL,
        state              TEXT    NOT NULL,
        session_id         TEXT,
        session_started_at INTEGER,
        session_expires_at INTEGER,
        sessions_started   INTEGER NOT NULL DEFAULT 0,
        model_id           TEXT,
        dock_status_id     TEXT,
        sha256             TEXT,
        hashed_chunks      INTEGER NOT NULL DEFAULT 0,
        hash_state         BLOB,
        error              TEXT,
        error_stage        TEXT,
        http_status        INTEGER,
        platform_message   TEXT,
        attempts           INTEGER NOT NULL DEFAULT 0,
        next_retry_at      INTEGER,
        watch_dir          TEXT,
        created_at         INTEGER NOT NULL,
        updated_at         INTEGER NOT NULL,
        started_at         INTEGER,
        finished_at        INTEGER
    );
    CREATE INDEX jobs_identity ON jobs (dev, ino, size, mtime_ns);
    CREATE INDEX jobs_state ON jobs (state);
    CREATE TABLE chunks (
        job_id   INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        idx      INTEGER NOT NULL,
        size     INTEGER NOT NULL,
        sha256   TEXT    NOT NULL,
        acked_at INTEGER NOT NULL,
        PRIMARY KEY (job_id, idx)
    ) WITHOUT ROWID;
    "#,
    // 2: filing of daemon jobs (receipts, moves) as a recorded step.
    r#"
    ALTER TABLE jobs ADD COLUMN filing       TEXT;
    ALTER TABLE jobs ADD COLUMN filing_dest  TEXT;
    ALTER TABLE jobs ADD COLUMN filing_error TEXT;
    ALTER TABLE jobs ADD COLUMN filed_at     INTEGER;
    CREATE INDEX jobs_path ON jobs (path);
    "#,
    // 3: pruned jobs: kept only to recognise a file already imported.
    r#"
    ALTER TABLE jobs ADD COLUMN pruned INTEGER NOT NULL DEFAULT 0;
    "#,
    // 4: dedupe: a duplicate names the job that imported its bytes, and
    // imported files are found by size (then sha256) without a scan.
    r#"
    ALTER TABLE jobs ADD COLUMN duplicate_of INTEGER;
    CREATE INDEX jobs_size ON jobs (size, sha256);
    "#,
    // 5: chunks record an XXH3-64 checksum instead of a SHA-256 (the
    // whole-file hash is the integrity check; a chunk's checksum only tells
    // a resume the bytes did not change). Rows acknowledged before keep
    // their sha256 and are verified with it, so their jobs stay resumable.
    // SQLite cannot drop NOT NULL in place: the table is rebuilt.
    r#"
    CREATE TABLE chunks_v3 (
        job_id   INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        idx      INTEGER NOT NULL,
        size     INTEGER NOT NULL,
        sha256   TEXT,
        xxh3     INTEGER,
        acked_at INTEGER NOT NULL,
        PRIMARY KEY (job_id, idx),
        CHECK (sha256 IS NOT NULL OR xxh3 IS NOT NULL)
    ) WITHOUT ROWID;
    INSERT INTO chunks_v3 (job_id, idx, size, sha256, xxh3, acked_at)
        SELECT job_id, idx, size, sha256, NULL, acked_at FROM chunks;
    DROP TABLE chunks;
    ALTER TABLE chunks_v3 RENAME TO chunks;
    "#,
];

impl SqliteStore {
    /// Applies the migrations not applied yet, in one exclusive transaction.
    /// A current schema is only read: nothing is written.
    pub(super) fn migrate(&mut self) -> Result<()> {
        let known = MIGRATIONS.len() as i64;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version == known {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Exclusive)?;
        // Again in the transaction: another process may have migrated meanwhile.
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > known {
            return Err(StoreError::SchemaTooNew {
                db: self.path.display().to_string(),
                found: version,
                known,
            });
        }
        if version == known {
            return Ok(());
        }
        for m in &MIGRATIONS[version as usize..] {
            tx.execute_batch(m)?;
        }
        tx.pragma_update(None, "user_version", known)?;
        tx.commit()?;
        Ok(())
    }
}
