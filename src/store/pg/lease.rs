//! Leases: how an instance holds a job in fleet mode.
//!
//! Taking a job sets its `instance`, bumps its `lease_token` (the fencing
//! token every later write of this holder carries) and sets
//! `lease_expires_at` on the database's clock; only a job whose lease is
//! unset or expired can be taken, and rows another instance is taking at
//! that moment are skipped (`FOR UPDATE SKIP LOCKED`), never waited for.
//!
//! A renewal task per held job extends the lease every `min(lease / 3, 2 s)`
//! and reads the job's state while at it, so a job cancelled or finished by
//! another instance is noticed within 2 s. The holder stops sending (its
//! [`Lease::stopped`] token is cancelled) when the lease is taken over, the
//! job leaves its active states while held (a hold taken on a finished job,
//! the filer's, keeps renewing: its job never was active), or renewals have
//! failed until a third of the lease is left; [`Lease::is_live`] says the same from the
//! local monotonic clock alone, so a process resumed after a pause (SIGSTOP,
//! a VM freeze) stops before its first request, before any renewal ran.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::jobs::Fence;
use super::{pg_error, PgBackend};
use crate::job::{JobId, JobState};
use crate::store::error::{Result, StoreError};

/// The longest wait between two looks at a held job: `cancel` from
/// another instance reaches the holder within this.
const MAX_RENEW_EVERY: Duration = Duration::from_secs(2);

/// This instance's lease on a job.
#[derive(Debug)]
pub(crate) struct Lease {
    job: JobId,
    instance: Arc<str>,
    token: i64,
    /// The local instant before which the lease surely holds.
    valid_until: Arc<Mutex<Instant>>,
    /// Stop sending for the job.
    stopped: CancellationToken,
    /// Stops the renewal task.
    done: CancellationToken,
    backend: PgBackend,
    released: AtomicBool,
}

impl std::fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgBackend({})", self.0.db.display())
    }
}

impl PgBackend {
    /// Lead time: the holder stops sending once less than this is left of
    /// a lease it could not renew.
    fn margin(&self) -> Duration {
        self.0.lease / 3
    }

    /// Takes job `id` for this instance; [`StoreError::Busy`] while another
    /// holder's lease runs.
    pub(crate) async fn take(&self, id: JobId) -> Result<Lease> {
        let started = Instant::now();
        let conn = self.0.pool.get().await?;
        let secs = self.0.lease.as_secs_f64();
        let row = conn
            .query_opt(
                "UPDATE jobs SET instance = $2, lease_token = lease_token + 1, \
                 lease_expires_at = now() + make_interval(secs => $3) \
                 WHERE id = (SELECT id FROM jobs WHERE id = $1 \
                   AND (lease_expires_at IS NULL OR lease_expires_at <= now()) \
                   FOR UPDATE SKIP LOCKED) \
                 RETURNING lease_token, state",
                &[&id, &&*self.0.instance, &secs],
            )
            .await
            .map_err(pg_error)?;
        let Some(row) = row else {
            let exists = conn
                .query_opt("SELECT 1 FROM jobs WHERE id = $1", &[&id])
                .await
                .map_err(pg_error)?;
            return Err(match exists {
                Some(_) => StoreError::Busy(id),
                None => StoreError::NotFound(id),
            });
        };
        let active = JobState::ACTIVE.contains(&parse_state(id, row.get(1))?);
        let lease = Lease {
            job: id,
            instance: self.0.instance.clone(),
            token: row.get(0),
            valid_until: Arc::new(Mutex::new(started + self.0.lease)),
            stopped: CancellationToken::new(),
            done: CancellationToken::new(),
            backend: self.clone(),
            released: AtomicBool::new(false),
        };
        tokio::spawn(renew(
            self.clone(),
            id,
            lease.token,
            active,
            lease.valid_until.clone(),
            lease.stopped.clone(),
            lease.done.clone(),
        ));
        Ok(lease)
    }

    /// Extends the lease; the job's state, or `None` when the lease is
    /// another's now.
    async fn extend(&self, id: JobId, token: i64) -> Result<Option<JobState>> {
        let conn = self.0.pool.get().await?;
        let secs = self.0.lease.as_secs_f64();
        let row = conn
            .query_opt(
                "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $4) \
                 WHERE id = $1 AND instance = $2 AND lease_token = $3 RETURNING state",
                &[&id, &&*self.0.instance, &token, &secs],
            )
            .await
            .map_err(pg_error)?;
        match row {
            None => Ok(None),
            Some(r) => parse_state(id, r.get(0)).map(Some),
        }
    }

    /// Gives the lease up, so another instance need not wait for it to run out.
    async fn give_up(&self, id: JobId, token: i64) -> Result<()> {
        let conn = self.0.pool.get().await?;
        conn.execute(
            "UPDATE jobs SET lease_expires_at = NULL \
             WHERE id = $1 AND instance = $2 AND lease_token = $3",
            &[&id, &&*self.0.instance, &token],
        )
        .await
        .map_err(pg_error)?;
        Ok(())
    }
}

fn parse_state(id: JobId, state: String) -> Result<JobState> {
    state.parse().map_err(|e| StoreError::Corrupt {
        job: id,
        detail: format!("{e}"),
    })
}

/// The renewal task of one held job, until the hold is released. `active`:
/// the job was in an active state when taken; the holder stops when it
/// leaves them, never merely for being finished (the filer holds finished
/// jobs, and its lease must outlast a long filing).
async fn renew(
    backend: PgBackend,
    id: JobId,
    token: i64,
    mut active: bool,
    valid_until: Arc<Mutex<Instant>>,
    stopped: CancellationToken,
    done: CancellationToken,
) {
    let lease = backend.0.lease;
    let every = (lease / 3).min(MAX_RENEW_EVERY);
    let margin = backend.margin();
    let until = |v: &Arc<Mutex<Instant>>| *v.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let started = Instant::now();
        let left = until(&valid_until).saturating_duration_since(started);
        let stop = |why: &str| {
            warn!(job_id = id, "{why}; stopping its upload");
            stopped.cancel();
        };
        if left <= margin {
            return stop("the lease on this job could not be renewed in time");
        }
        match tokio::time::timeout(left - margin, backend.extend(id, token)).await {
            Ok(Ok(Some(state))) => {
                *valid_until.lock().unwrap_or_else(|p| p.into_inner()) = started + lease;
                let now_active = JobState::ACTIVE.contains(&state);
                if active && !now_active {
                    info!(job_id = id, %state, "the job was finished elsewhere");
                    stopped.cancel();
                    return;
                }
                active = now_active;
            }
            Ok(Ok(None)) => {
                return stop("another instance took over the lease on this job");
            }
            Ok(Err(e)) => warn!(job_id = id, error = %e, "cannot renew the lease on this job"),
            Err(_) => {} // Out of time: the check above stops it.
        }
    }
}

impl Lease {
    pub(crate) fn fence(&self) -> Fence<'_> {
        Fence {
            instance: &self.instance,
            token: self.token,
        }
    }

    /// Cancelled once this holder must stop sending for the job.
    pub(crate) fn stopped(&self) -> &CancellationToken {
        &self.stopped
    }

    /// Whether the lease still surely holds, by the local clock alone.
    pub(crate) fn is_live(&self) -> bool {
        if self.stopped.is_cancelled() {
            return false;
        }
        let until = *self.valid_until.lock().unwrap_or_else(|p| p.into_inner());
        Instant::now() + self.backend.margin() < until
    }

    #[cfg(test)]
    pub(crate) fn stop_renewing(&self) {
        self.done.cancel();
    }

    /// Ends renewals and gives the lease up.
    pub(crate) async fn release(&self) {
        self.done.cancel();
        if !self.released.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.backend.give_up(self.job, self.token).await {
                // It runs out on its own after the lease.
                warn!(job_id = self.job, error = %e, "cannot give up the lease on this job");
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.done.cancel();
        if !*self.released.get_mut() {
            // Dropped without `release` (a task aborted): give it up in the
            // background if a runtime is still there; else it runs out.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (b, id, token) = (self.backend.clone(), self.job, self.token);
                rt.spawn(async move { b.give_up(id, token).await });
            }
        }
    }
}
