//! The per-job lock file: how the SQLite backend knows a job is held.
//!
//! `locks/job-N.lock` beside the database, locked with `flock`: the daemon
//! and an `upload` (or two `upload`s) on one state folder never drive a job
//! at once, and a process that dies releases its jobs with its file
//! descriptors.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::{Result, StoreError};
use crate::job::JobId;

/// A job locked by this process; unlocked when dropped.
#[derive(Debug)]
pub(super) struct JobLock {
    file: File,
    path: PathBuf,
    remove: AtomicBool,
}

/// Locks job `id` of the database at `db`, or `Busy` if another holds it.
pub(super) fn lock_job(db: &Path, id: JobId) -> Result<JobLock> {
    let dir = db.with_file_name("locks");
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
            remove: AtomicBool::new(false),
        }),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Busy(id)),
        Err(std::fs::TryLockError::Error(e)) => Err(err(e)),
    }
}

impl JobLock {
    /// The job is finished for good: its lock file can go when released.
    pub(super) fn finished(&self) {
        self.remove.store(true, Ordering::Relaxed);
    }
}

impl Drop for JobLock {
    fn drop(&mut self) {
        if *self.remove.get_mut() {
            // Removed while still held, so no other process can be
            // holding this inode; a finished job is never run again.
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}
