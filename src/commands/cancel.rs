//! `modelferry cancel`: stop jobs the platform does not have yet.
//!
//! Only the job's state changes here (`cancelled`, error stage
//! `cancelled`); the process driving the job (the daemon or an `upload`)
//! reads that within a second or two and drops its requests. A job already
//! `importing` is the platform's: it cannot be cancelled.

use super::status::open_existing;
use crate::config::Config;
use crate::exit;
use crate::job::{JobId, JobState};
use crate::store::StoreError;

/// The error a cancelled job carries (its receipt's and `status`'s).
pub const REASON: &str = "cancelled by `modelferry cancel`";

/// Runs `modelferry cancel`, returning the exit status.
pub async fn run(config: &Config, ids: &[JobId]) -> anyhow::Result<u8> {
    let store = open_existing(config).await?;
    let mut code = exit::SUCCESS;
    for &id in ids {
        let Some(store) = &store else {
            eprintln!("job {id}: not in the state database (no jobs yet)");
            code = exit::USAGE;
            continue;
        };
        match store.cancel(id, REASON).await {
            Ok(()) => {
                let job = store.job(id).await?;
                let then = if job.watch_dir.is_some() {
                    "the daemon stops sending within seconds and files it in failed_dir"
                } else {
                    "the `upload` running it stops within seconds; running that upload again starts a new job"
                };
                println!("job {id}: cancelled; {then}");
            }
            Err(StoreError::NotFound(_)) => {
                eprintln!("job {id}: not in the state database");
                code = exit::USAGE;
            }
            Err(StoreError::InvalidTransition {
                from: JobState::Importing,
                ..
            }) => {
                eprintln!("job {id}: cannot be cancelled: it is importing, so the platform has the file already; it ends on its own (succeeded or failed)");
                code = exit::USAGE;
            }
            Err(StoreError::InvalidTransition { from, .. }) => {
                eprintln!("job {id}: cannot be cancelled: it is {from} already; only queued, uploading and completing jobs can be");
                code = exit::USAGE;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(code)
}
