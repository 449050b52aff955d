//! [`Hold`]: the proof that this process holds a job, which every write for
//! a job being driven carries. SQLite's proof is the per-job lock file;
//! PostgreSQL's is a lease with a fencing token, which can be lost (taken
//! over after the holder failed to renew it), so a hold also says when its
//! holder must stop sending for the job ([`Hold::stopped`], [`Hold::is_live`]).
//!
//! A hold also notices the job leaving its active states under it (a
//! `modelferry cancel` from another process, which only writes the state):
//! a lease's renewal reads the state every ≤ 2 s anyway; a lock file's hold
//! reads it every [`POLL`] while someone waits on [`Hold::stopped`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::error::{Result, StoreError};
use super::handle::Store;
use super::lock::JobLock;
use super::pg::jobs::Fence;
use super::pg::Lease;
use crate::job::{JobId, JobState};

/// How often a lock-file hold reads its job's state while watched: well
/// within the 2 s in which a cancel must be noticed, and one cheap read per
/// running job.
pub const POLL: Duration = Duration::from_millis(500);

/// Proof that this process holds a job: required by every write for a job
/// being driven. Clones are the same hold; the job is released when the
/// last clone is dropped (or the process ends).
#[derive(Clone, Debug)]
pub struct Hold(pub(super) Arc<HoldInner>);

#[derive(Debug)]
pub(super) struct HoldInner {
    pub(super) job: JobId,
    /// The database the hold is on: a hold is only good for its own store.
    pub(super) store: PathBuf,
    pub(super) proof: Proof,
}

#[derive(Debug)]
pub(super) enum Proof {
    LockFile(LockFileProof),
    Lease(Lease),
}

/// SQLite's proof: the per-job lock file, and the store its job's state is
/// read from while the hold is watched.
pub(super) struct LockFileProof {
    lock: JobLock,
    store: Store,
    /// Cancelled when the hold goes: its state watchers end.
    released: CancellationToken,
}

impl LockFileProof {
    pub(super) fn new(lock: JobLock, store: Store) -> Self {
        LockFileProof {
            lock,
            store,
            released: CancellationToken::new(),
        }
    }
}

impl std::fmt::Debug for LockFileProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LockFileProof").field(&self.lock).finish()
    }
}

impl Drop for LockFileProof {
    fn drop(&mut self) {
        self.released.cancel();
    }
}

impl Hold {
    /// The job held.
    pub fn job(&self) -> JobId {
        self.0.job
    }

    /// The job reached a final state: nothing will hold it again, so the
    /// backend may forget the hold entirely on release (the lock file goes).
    pub fn finished(&self) {
        match &self.0.proof {
            Proof::LockFile(p) => p.lock.finished(),
            Proof::Lease(_) => {}
        }
    }

    /// `cancel`, or the moment this hold stops being good: the job left
    /// its active states elsewhere (cancelled, finished by another
    /// instance), or a lease was taken over or not renewed in time. A job
    /// held when already finished (to file it) has no active state to
    /// leave. The token a job's run stops sending on.
    pub fn stopped(&self, cancel: &CancellationToken) -> CancellationToken {
        let token = cancel.child_token();
        match &self.0.proof {
            Proof::Lease(lease) => {
                // The renewal task reads the state and fires this.
                let (lost, t) = (lease.stopped().clone(), token.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = lost.cancelled() => t.cancel(),
                        _ = t.cancelled() => {}
                    }
                });
            }
            Proof::LockFile(p) => {
                let watch = watch_state(
                    p.store.clone(),
                    self.0.job,
                    p.released.clone(),
                    token.clone(),
                );
                tokio::spawn(watch);
            }
        }
        token
    }

    /// Whether the hold still surely holds, by the local clock alone (a
    /// lock file always does); checked before each request for the job.
    pub fn is_live(&self) -> bool {
        match &self.0.proof {
            Proof::LockFile(_) => true,
            Proof::Lease(lease) => lease.is_live(),
        }
    }

    /// Test hook: the renewal task stops, as in a process frozen or cut
    /// off from the database, while the hold itself stays.
    #[cfg(test)]
    pub(crate) fn stop_renewing(&self) {
        if let Proof::Lease(lease) = &self.0.proof {
            lease.stop_renewing();
        }
    }

    /// The lease's fence, for a PostgreSQL write.
    pub(super) fn fence(&self) -> Result<Fence<'_>> {
        match &self.0.proof {
            Proof::Lease(lease) => Ok(lease.fence()),
            Proof::LockFile(_) => Err(StoreError::NotHeld {
                job: self.0.job,
                held: self.0.job,
                store: self.0.store.display().to_string(),
            }),
        }
    }
}

/// Reads job `id`'s state every [`POLL`] until the hold is `released` or
/// `stop` fires; fires `stop` once the job, seen active, is no longer.
async fn watch_state(
    store: Store,
    id: JobId,
    released: CancellationToken,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_active = false;
    loop {
        tokio::select! {
            _ = released.cancelled() => return,
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match store.job_state(id).await {
            Ok(state) if JobState::ACTIVE.contains(&state) => was_active = true,
            Ok(state) if was_active => {
                info!(job_id = id, %state, "the job left its active states elsewhere; stopping its requests");
                stop.cancel();
                return;
            }
            // Finished before it was watched: nothing to leave.
            Ok(_) => return,
            Err(StoreError::NotFound(_)) => return,
            // A passing read error: the next tick reads again.
            Err(e) => debug!(job_id = id, error = %e, "cannot read the job's state"),
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::job::NewJob;

    async fn store_with_a_job() -> (tempfile::TempDir, Store, JobId) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_path_buf()).await.unwrap();
        let id = store
            .admit(&NewJob::for_test("/drop/m.tar", 10))
            .await
            .unwrap();
        (dir, store, id)
    }

    #[tokio::test]
    async fn a_lock_file_hold_stops_within_two_seconds_of_a_cancel() {
        let (_dir, store, id) = store_with_a_job().await;
        let hold = store.hold(id).await.unwrap();
        let stopped = hold.stopped(&CancellationToken::new());
        tokio::time::sleep(POLL * 2).await;
        assert!(!stopped.is_cancelled());
        store.cancel(id, "test").await.unwrap();
        tokio::time::timeout(Duration::from_secs(2), stopped.cancelled())
            .await
            .expect("noticed within 2 s");
        store.release(hold).await;
    }

    #[tokio::test]
    async fn a_hold_on_a_finished_job_has_no_active_state_to_leave() {
        let (_dir, store, id) = store_with_a_job().await;
        store.cancel(id, "test").await.unwrap();
        let hold = store.hold(id).await.unwrap();
        let stopped = hold.stopped(&CancellationToken::new());
        tokio::time::sleep(POLL * 3).await;
        assert!(!stopped.is_cancelled());
        store.release(hold).await;
    }
}
