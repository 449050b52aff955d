//! What the daemon tells about itself while it runs.
//!
//! [`StatusReport`] owns the systemd STATUS line ("2 uploading, 5 queued,
//! 310 MB/s", every [`STATUS_EVERY`]) and the periodic progress line of each
//! running job (every [`PROGRESS_LOG_EVERY`]). It promises a rate measured
//! over the time since the previous STATUS line on a monotonic clock, and
//! never blocks: it reads only the queue and the metrics counter.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use super::queue::Queue;
use crate::escaped::Escaped;
use crate::job::JobState;

/// How often the STATUS line is refreshed (and the job gauges with it).
pub const STATUS_EVERY: Duration = Duration::from_secs(5);
/// How often each running job's progress is logged.
pub const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(30);

/// The states a running job shows in the STATUS line, in this order.
const SHOWN: [JobState; 3] = [
    JobState::Uploading,
    JobState::Completing,
    JobState::Importing,
];

pub struct StatusReport {
    last_status: Instant,
    last_bytes: u64,
    last_progress_log: Instant,
}

impl StatusReport {
    pub fn new(now: Instant) -> Self {
        StatusReport {
            last_status: now,
            last_bytes: 0,
            last_progress_log: now,
        }
    }

    /// The STATUS line when one is due, with the upload rate since the last
    /// one; `bytes_uploaded` is the running total.
    pub fn status_line(
        &mut self,
        now: Instant,
        bytes_uploaded: u64,
        queue: &Queue,
        paused: bool,
    ) -> Option<String> {
        let since = now.saturating_duration_since(self.last_status);
        if since < STATUS_EVERY {
            return None;
        }
        let secs = since.as_secs_f64().max(0.001);
        let rate = bytes_uploaded.saturating_sub(self.last_bytes) as f64 / secs;
        self.last_status = now;
        self.last_bytes = bytes_uploaded;
        let mut by_state: HashMap<JobState, usize> = HashMap::new();
        for (_, r) in queue.running() {
            *by_state.entry(r.progress.borrow().state).or_default() += 1;
        }
        let mut parts: Vec<String> = SHOWN
            .iter()
            .filter_map(|s| by_state.get(s).map(|n| format!("{n} {s}")))
            .collect();
        parts.push(format!("{} queued", queue.waiting()));
        if paused {
            parts.push("API key rejected, paused".into());
        }
        parts.push(format!("{}/s", indicatif::HumanBytes(rate as u64)));
        Some(parts.join(", "))
    }

    /// Logs each running job's progress when due; returns how many lines.
    pub fn log_progress(&mut self, now: Instant, queue: &Queue) -> usize {
        if now.saturating_duration_since(self.last_progress_log) < PROGRESS_LOG_EVERY {
            return 0;
        }
        self.last_progress_log = now;
        let mut lines = 0;
        for (id, r) in queue.running() {
            let p = r.progress.borrow().clone();
            info!(job_id = id, file = %Escaped::str(&r.name), state = %p.state, chunks_done = p.chunks_done, chunks_total = p.chunks_total, bytes_done = p.bytes_done, bytes_total = p.bytes_total, "progress");
            lines += 1;
        }
        lines
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::job::NewJob;

    use crate::store::SqliteStore;

    /// A queue with running jobs in `running` states and `waiting` more.
    fn queue(running: &[JobState], waiting: usize) -> Queue {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let mut q = Queue::new(running.len());
        for i in 0..running.len() + waiting {
            let mut new = NewJob {
                chunk_size: 1,
                ..NewJob::for_test(format!("/drop/{i}.tar"), 1)
            };
            (new.identity.ino, new.identity.mtime_ns) = (i as u64, i as i64);
            let id = store.admit(&new).unwrap();
            q.enqueue(&store.job(id).unwrap());
        }
        for state in running {
            let start = q.start_next().unwrap();
            start.progress.send_modify(|p| p.state = *state);
            // The queue keeps its receiver; the sender may go.
        }
        q
    }

    #[tokio::test(start_paused = true)]
    async fn counts_running_jobs_by_state_then_queued_then_rate() {
        use JobState::*;
        let q = queue(&[Uploading, Importing, Uploading, Queued], 5);
        let mut r = StatusReport::new(Instant::now());
        tokio::time::advance(STATUS_EVERY).await;
        let line = r.status_line(Instant::now(), 5 * 1000 * 1000, &q, false);
        assert_eq!(
            line.as_deref(),
            Some("2 uploading, 1 importing, 5 queued, 976.56 KiB/s")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn says_when_uploads_are_paused_for_the_key() {
        let q = queue(&[], 1);
        let mut r = StatusReport::new(Instant::now());
        tokio::time::advance(STATUS_EVERY).await;
        let line = r.status_line(Instant::now(), 0, &q, true).unwrap();
        assert_eq!(line, "1 queued, API key rejected, paused, 0 B/s");
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_is_over_the_time_since_the_previous_line() {
        let q = queue(&[], 0);
        let mut r = StatusReport::new(Instant::now());
        tokio::time::advance(STATUS_EVERY - Duration::from_millis(1)).await;
        assert_eq!(r.status_line(Instant::now(), 1024, &q, false), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        let first = r.status_line(Instant::now(), 10 * 1024 * 5, &q, false);
        assert_eq!(first.as_deref(), Some("0 queued, 10.00 KiB/s"));
        tokio::time::advance(STATUS_EVERY * 2).await;
        let second = r.status_line(Instant::now(), 10 * 1024 * 5 + 20 * 1024 * 10, &q, false);
        assert_eq!(second.as_deref(), Some("0 queued, 20.00 KiB/s"));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_is_logged_for_each_running_job_every_30_seconds() {
        let q = queue(&[JobState::Uploading, JobState::Completing], 3);
        let mut r = StatusReport::new(Instant::now());
        tokio::time::advance(PROGRESS_LOG_EVERY - Duration::from_secs(1)).await;
        assert_eq!(r.log_progress(Instant::now(), &q), 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(r.log_progress(Instant::now(), &q), 2);
        assert_eq!(r.log_progress(Instant::now(), &q), 0);
    }
}
