//! [`Hold`]: the proof that this process holds a job, which every write for
//! a job being driven carries. SQLite's proof is the per-job lock file;
//! PostgreSQL's is a lease with a fencing token, which can be lost (taken
//! over after the holder failed to renew it), so a hold also says when its
//! holder must stop sending for the job ([`Hold::stopped`], [`Hold::is_live`]).

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::error::{Result, StoreError};
use super::lock::JobLock;
use super::pg::jobs::Fence;
use super::pg::Lease;
use crate::job::JobId;

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
    LockFile(JobLock),
    Lease(Lease),
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
            Proof::LockFile(lock) => lock.finished(),
            Proof::Lease(_) => {}
        }
    }

    /// `cancel`, or the moment this hold stops being good (a lease taken
    /// over, not renewed in time, or the job finished elsewhere): the token
    /// a job's run stops sending on.
    pub fn stopped(&self, cancel: &CancellationToken) -> CancellationToken {
        let token = cancel.child_token();
        if let Proof::Lease(lease) = &self.0.proof {
            let (lost, t) = (lease.stopped().clone(), token.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = lost.cancelled() => t.cancel(),
                    _ = t.cancelled() => {}
                }
            });
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
