//! Fleet mode: which jobs this instance takes on besides the files it
//! admits itself.
//!
//! [`Adopter`] looks every `lease / 3` (at least 1 s, at most 10 s) for
//! unfinished jobs that no instance holds (queued by another instance, or
//! left by one that died or stopped renewing), and hands back those this
//! instance may drive: it watches the job's folder and sees the job's file
//! there with the job's identity (inode, size, mtime). A job it cannot see
//! waits for an instance that can. Taking the job is still the store's
//! ([`Store::hold`]): two instances that adopt one job never both drive it.

use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use crate::job::Job;
use crate::source::FileIdentity;
use crate::store::{Store, StoreError};

pub struct Adopter {
    every: Duration,
    next: Instant,
}

impl Adopter {
    /// An adopter for a fleet store, `None` for SQLite (one host).
    pub fn new(store: &Store, lease: Duration) -> Option<Adopter> {
        store.instance()?;
        Some(Adopter {
            every: (lease / 3).clamp(Duration::from_secs(1), Duration::from_secs(10)),
            next: Instant::now(),
        })
    }

    /// The jobs to take on now, if it is time to look; `known` says which
    /// are in hand already, `watched` which drop folders this instance has.
    pub async fn due(
        &mut self,
        now: Instant,
        store: &Store,
        known: impl Fn(&Job) -> bool,
    ) -> Result<Vec<Job>, StoreError> {
        if now < self.next {
            return Ok(Vec::new());
        }
        self.next = now + self.every;
        let candidates: Vec<Job> = store
            .takeable()
            .await?
            .into_iter()
            .filter(|j| !known(j))
            .collect();
        if candidates.is_empty() {
            return Ok(candidates);
        }
        let seen = tokio::task::spawn_blocking(move || {
            candidates
                .into_iter()
                .filter(sees_the_file)
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| StoreError::Call(e.to_string()))?;
        Ok(seen)
    }
}

/// Whether the job's file is here with the job's identity.
pub fn sees_the_file(job: &Job) -> bool {
    let here = FileIdentity::of_path(&job.path).is_ok_and(|id| job.identity.matches(&id));
    if !here {
        debug!(
            job_id = job.id,
            "the job's file is not here as it was; leaving the job to an instance that sees it"
        );
    }
    here
}
