//! Filing a finished daemon job: where its tarball and receipt go.
//!
//! Filing is a recorded step. The destination is chosen and committed to the
//! store first, then the file is moved (or deleted, or kept) and the receipt
//! written, then the step is marked done; after a crash the same recorded
//! destination is used again, so nothing is filed twice or overwritten. Only
//! the file the job imported is ever moved: if the name in the drop folder now
//! holds another file (rewritten, replaced), that file is left for its own job.

use std::path::{Path, PathBuf};

use crate::config::{AfterSuccess, WatchConfig};
use crate::filing::{self, ErrorReceipt, SuccessReceipt};
use crate::job::{FilingState, Job, JobState, Stage};
use crate::source::FileIdentity;

/// What filing a job should do, decided from the job alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Put things under `dir` (done_dir or failed_dir).
    Into(PathBuf),
    /// Nothing to file: the job's file was rewritten and is a new job now.
    Skip,
}

/// Where a finished job is filed.
pub fn plan(job: &Job, watch: &WatchConfig) -> Plan {
    match job.state {
        JobState::Succeeded => Plan::Into(watch.done_dir.clone()),
        // A file that changed under its upload starts over as a new job;
        // the failed job leaves it where it is.
        JobState::Failed if job.error_stage == Some(Stage::Read) && changed(job) => Plan::Skip,
        _ => Plan::Into(watch.failed_dir.clone()),
    }
}

/// Whether the job's path now holds another regular file: a new version
/// the watcher takes as a new job. Anything else there (a FIFO, a folder, a
/// link) will never be a job, so the failure is filed with its receipt.
fn changed(job: &Job) -> bool {
    match std::fs::symlink_metadata(&job.path) {
        Ok(meta) => meta.file_type().is_file() && !job.identity.matches(&FileIdentity::of(&meta)),
        Err(_) => false,
    }
}

/// Whether the file at the job's path is the file the job imported.
fn still_ours(job: &Job) -> bool {
    FileIdentity::of_path(&job.path).is_ok_and(|id| job.identity.matches(&id))
}

/// Picks a free destination for the job's file in `dir`.
pub fn choose(job: &Job, dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .map_err(|e| std::io::Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
    filing::free_destination(dir, &job.file_name)
}

/// Carries out filing to the recorded `dest`; safe to repeat after a crash.
pub fn execute(job: &Job, watch: &WatchConfig, dest: &Path) -> std::io::Result<FilingState> {
    match job.state {
        JobState::Succeeded => {
            let receipt = SuccessReceipt::of(job);
            match watch.after_success {
                AfterSuccess::Move => {
                    if still_ours(job) {
                        filing::move_file(&job.path, dest)?;
                    }
                    filing::write_json_atomic(&filing::receipt_path(dest), &receipt)?;
                }
                AfterSuccess::Delete => {
                    // Receipt first: a crash in between leaves file and
                    // receipt, and the retry deletes the file.
                    filing::write_json_atomic(&filing::receipt_path(dest), &receipt)?;
                    if still_ours(job) {
                        filing::remove_file(&job.path)?;
                    }
                }
                AfterSuccess::Keep => {
                    filing::write_json_atomic(&filing::receipt_path(dest), &receipt)?;
                }
            }
        }
        // A cancelled job is filed as a failed one, its receipt's stage
        // saying `cancelled`.
        JobState::Failed | JobState::Cancelled => {
            let receipt = ErrorReceipt::of(job);
            if still_ours(job) {
                filing::move_file(&job.path, dest)?;
            }
            filing::write_json_atomic(&filing::error_path(dest), &receipt)?;
        }
        other => {
            return Err(std::io::Error::other(format!(
                "job {} is {other}, not finished; nothing to file",
                job.id
            )))
        }
    }
    Ok(FilingState::Done)
}
