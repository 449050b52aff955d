//! Opening the SQLite database: private files, pragmas, migrations, and the
//! ownership repair for a database opened by root.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;

use super::error::{Result, StoreError};

/// The SQLite backend: owns the connection. Its methods are blocking; the
/// async [`Store`](super::Store) runs them on the blocking pool.
pub struct SqliteStore {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
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

impl SqliteStore {
    /// Opens (creating if needed) `dir/modelferry.db`: the folder 0700 and the
    /// file 0600 when they are created here.
    pub fn open(dir: &Path) -> Result<SqliteStore> {
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
        let mut store = SqliteStore {
            conn,
            path: path.clone(),
        };
        // A SQLite error names the file once, through `open_err`; others
        // (a newer schema) already say what they are.
        store.migrate().map_err(|e| match e {
            StoreError::Sqlite(e) => open_err(format!("migration failed: {e}")),
            other => other,
        })?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `dir/modelferry.db` for reading only (`upload --dry-run`):
    /// `None` if there is no database; nothing is created, migrated or
    /// written. A schema other than this modelferry's is an error.
    pub fn open_read_only(dir: &Path) -> Result<Option<SqliteStore>> {
        let path = dir.join("modelferry.db");
        let open_err = |detail: String| StoreError::Open {
            path: path.clone(),
            detail,
        };
        match path.try_exists() {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(e) => return Err(open_err(e.to_string())),
        }
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(&path, flags).map_err(|e| open_err(e.to_string()))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| open_err(e.to_string()))?;
        conn.execute_batch("PRAGMA query_only = ON;")
            .map_err(|e| open_err(e.to_string()))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| open_err(e.to_string()))?;
        let known = super::migrations::MIGRATIONS.len() as i64;
        let (db, found) = (path.display().to_string(), version);
        if version > known {
            return Err(StoreError::SchemaTooNew { db, found, known });
        }
        if version < known {
            return Err(StoreError::SchemaTooOld { db, found, known });
        }
        Ok(Some(SqliteStore { conn, path }))
    }
}
