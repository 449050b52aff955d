//! `modelferry retry`: run a failed or cancelled job again.
//!
//! A daemon job's tarball goes back from `failed_dir` into its drop folder
//! (under a free name: nothing there is overwritten) and its error receipt
//! is removed; the daemon then sees the file and imports it as a new job.
//! A job made by `upload` has no folder to go back to: this says to run the
//! same `upload` again (exit 0: nothing is wrong, there is just nothing to
//! move). Unknown ids and jobs in other states: a message and exit 2.

use std::path::{Path, PathBuf};

use super::status::open_existing;
use crate::config::Config;
use crate::escaped::Escaped;
use crate::exit;
use crate::filing;
use crate::job::{FilingState, Job, JobId, JobState};
use crate::store::StoreError;

/// Runs `modelferry retry`, returning the exit status.
pub async fn run(config: &Config, ids: &[JobId]) -> anyhow::Result<u8> {
    let store = open_existing(config).await?;
    let mut code = exit::SUCCESS;
    for &id in ids {
        let job = match &store {
            None => None,
            Some(store) => match store.job(id).await {
                Ok(job) if !job.pruned => Some(job),
                Ok(_) | Err(StoreError::NotFound(_)) => None,
                Err(e) => return Err(e.into()),
            },
        };
        let Some(job) = job else {
            eprintln!("job {id}: not in the state database (never made, or pruned)");
            code = exit::USAGE;
            continue;
        };
        match retry(&job).await {
            Ok(msg) => println!("job {id}: {msg}"),
            Err(msg) => {
                eprintln!("job {id}: {msg}");
                code = exit::USAGE;
            }
        }
    }
    Ok(code)
}

/// What retrying `job` did, or why it cannot be retried.
async fn retry(job: &Job) -> Result<String, String> {
    if !matches!(job.state, JobState::Failed | JobState::Cancelled) {
        return Err(format!(
            "cannot be retried: it is {}; only failed and cancelled jobs can be",
            job.state
        ));
    }
    let Some(drop_dir) = job.watch_dir.clone() else {
        return Ok(format!(
            "made by `modelferry upload`: run the same upload again (modelferry upload {}) and it starts a new job",
            Escaped::path(&job.path)
        ));
    };
    let filed = match &job.filing {
        Some(f) if f.state == FilingState::Done => f.dest.clone(),
        Some(f) if f.state == FilingState::Skipped => {
            return Err("nothing to retry: its file changed during the upload and the new version is a job of its own".into());
        }
        _ => {
            return Err(
                "not filed yet: the daemon files it in failed_dir first (is `modelferry run` running?); retry it once it is there"
                    .into(),
            );
        }
    };
    let Some(filed) = filed else {
        return Err(
            "its filed location is not recorded; put the file back into the drop folder by hand"
                .into(),
        );
    };
    let name = job.file_name.clone();
    tokio::task::spawn_blocking(move || send_back(&filed, &drop_dir, &name))
        .await
        .map_err(|e| format!("moving the file back did not finish: {e}"))?
}

/// Moves `filed` back into `drop_dir` under a free name, then removes its
/// error receipt (the move first: a receipt without its file is harmless).
fn send_back(filed: &Path, drop_dir: &Path, name: &str) -> Result<String, String> {
    match std::fs::symlink_metadata(filed) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(format!("{} is not a regular file", Escaped::path(filed))),
        Err(e) => {
            return Err(format!(
                "{} is not there ({e}): retried already, or moved away; put the file back into {} by hand to import it again",
                Escaped::path(filed),
                Escaped::path(drop_dir)
            ))
        }
    }
    let to: PathBuf = filing::free_destination(drop_dir, name).map_err(|e| e.to_string())?;
    filing::move_file(filed, &to).map_err(|e| e.to_string())?;
    let receipt = filing::error_path(filed);
    let note = match filing::remove_file(&receipt) {
        Ok(()) => String::new(),
        Err(e) => format!(" (its error receipt stays: {e})"),
    };
    Ok(format!(
        "{} moved back to {}; the daemon imports it as a new job{note}",
        Escaped::path(filed),
        Escaped::path(&to)
    ))
}
