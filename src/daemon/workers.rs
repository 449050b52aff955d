//! The tasks that run the daemon's jobs.
//!
//! [`Workers`] owns one tokio task per running job and promises a bounded
//! stop: [`Workers::drain`] waits for the tasks (which were told to stop
//! taking new chunks) at most the grace period, then aborts the rest and
//! waits until they are gone. An aborted job loses nothing: every step it
//! finished is in the store and it resumes on the next start.

use std::future::Future;
use std::time::Duration;

use tokio::task::{JoinError, JoinSet};
use tracing::{debug, warn};

use crate::job::JobId;
use crate::upload::EngineError;
use crate::upload::Outcome;

/// What one job's task returns.
pub type Finished = (JobId, Result<Outcome, EngineError>);

#[derive(Default)]
pub struct Workers {
    tasks: JoinSet<Finished>,
}

impl Workers {
    /// Runs job `id` to `run`'s end on its own task.
    pub fn spawn(
        &mut self,
        id: JobId,
        run: impl Future<Output = Result<Outcome, EngineError>> + Send + 'static,
    ) {
        self.tasks.spawn(async move { (id, run.await) });
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The next task to end; `None` when there are none.
    pub async fn next(&mut self) -> Option<Result<Finished, JoinError>> {
        self.tasks.join_next().await
    }

    /// Waits up to `grace` for every task, then aborts the rest. Returns
    /// whether all ended on their own.
    pub async fn drain(&mut self, grace: Duration) -> bool {
        let drained = tokio::time::timeout(grace, async {
            while let Some(done) = self.tasks.join_next().await {
                if let Ok((id, Ok(outcome))) = done {
                    debug!(job_id = id, ?outcome, "job stopped");
                }
            }
        })
        .await;
        if drained.is_ok() {
            return true;
        }
        warn!(
            ?grace,
            "requests still in flight after the grace period; they resume on restart"
        );
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn after(d: Duration) -> Result<Outcome, EngineError> {
        tokio::time::sleep(d).await;
        Ok(Outcome::Interrupted)
    }

    #[tokio::test(start_paused = true)]
    async fn hands_back_each_finished_job_once() {
        let mut w = Workers::default();
        assert!(w.next().await.is_none());
        w.spawn(1, after(Duration::from_secs(2)));
        w.spawn(2, after(Duration::from_secs(1)));
        let (id, outcome) = w.next().await.unwrap().unwrap();
        assert_eq!((id, outcome.unwrap()), (2, Outcome::Interrupted));
        assert_eq!(w.next().await.unwrap().unwrap().0, 1);
        assert!(w.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_jobs_that_stop_within_the_grace_period() {
        let mut w = Workers::default();
        w.spawn(1, after(Duration::from_secs(4)));
        let start = tokio::time::Instant::now();
        assert!(w.drain(Duration::from_secs(5)).await);
        assert_eq!(start.elapsed(), Duration::from_secs(4));
        assert!(w.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn drain_aborts_what_is_left_after_the_grace_period() {
        let mut w = Workers::default();
        w.spawn(1, after(Duration::from_secs(1)));
        w.spawn(2, std::future::pending());
        let start = tokio::time::Instant::now();
        assert!(!w.drain(Duration::from_secs(5)).await);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert!(w.is_empty());
    }
}
