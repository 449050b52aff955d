//! The daemon's jobs in hand: waiting, running, or delayed.
//!
//! [`Queue`] owns one entry per job the daemon has taken on and promises:
//! a job is in at most one of the three slots; waiting jobs start in
//! dispatch order (jobs already under way first, then the oldest file by
//! mtime, then the oldest job); at most `limit` run at once; a delayed job
//! comes back from [`Queue::due`] once its instant has passed. It does no I/O:
//! the caller spawns the job's task with what [`Queue::start_next`] returns
//! and re-reads delayed jobs from the store before queueing them again.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::job::JobState;
use crate::job::{Job, JobId};
use crate::upload::JobProgress;

/// Dispatch order: (0 if under way, else 1; file mtime; job id).
type Order = (u8, i64, JobId);

/// A running job as the daemon follows it.
pub struct Running {
    pub cancel: CancellationToken,
    pub started: Instant,
    pub progress: watch::Receiver<JobProgress>,
    pub name: String,
}

enum Slot {
    Waiting(Order),
    Running(Running),
    Delayed(Instant),
}

/// What the caller needs to run a job that [`Queue::start_next`] started.
pub struct Start {
    pub id: JobId,
    pub cancel: CancellationToken,
    pub progress: Arc<watch::Sender<JobProgress>>,
}

pub struct Queue {
    entries: HashMap<JobId, (String, Slot)>,
    /// The waiting entries, in dispatch order.
    order: BTreeSet<Order>,
    running: usize,
    limit: usize,
}

fn order(job: &Job) -> Order {
    let started = u8::from(job.state == JobState::Queued);
    (started, job.identity.mtime_ns, job.id)
}

impl Queue {
    /// A queue that runs at most `limit` jobs at once.
    pub fn new(limit: usize) -> Self {
        Queue {
            entries: HashMap::new(),
            order: BTreeSet::new(),
            running: 0,
            limit,
        }
    }

    /// Queues `job` unless it is waiting or running already; a delayed job
    /// waits again at once. Returns whether it was queued.
    pub fn enqueue(&mut self, job: &Job) -> bool {
        if let Some((_, Slot::Waiting(_) | Slot::Running(_))) = self.entries.get(&job.id) {
            return false;
        }
        let key = order(job);
        self.order.insert(key);
        self.entries
            .insert(job.id, (job.file_name.clone(), Slot::Waiting(key)));
        true
    }

    /// Drops a waiting job (superseded); running or delayed ones stay.
    pub fn remove_waiting(&mut self, id: JobId) {
        if let Some((_, Slot::Waiting(key))) = self.entries.get(&id) {
            self.order.remove(key);
            self.entries.remove(&id);
        }
    }

    /// Whether job `id` is in hand at all (waiting, running or delayed).
    pub fn contains(&self, id: JobId) -> bool {
        self.entries.contains_key(&id)
    }

    pub fn is_running(&self, id: JobId) -> bool {
        matches!(self.entries.get(&id), Some((_, Slot::Running(_))))
    }

    /// Takes the first waiting job if fewer than `limit` are running.
    pub fn start_next(&mut self) -> Option<Start> {
        if self.running >= self.limit {
            return None;
        }
        let (_, _, id) = self.order.pop_first()?;
        let cancel = CancellationToken::new();
        let (tx, rx) = watch::channel(JobProgress::queued(0));
        let entry = self
            .entries
            .get_mut(&id)
            .expect("every key in `order` has a waiting entry");
        entry.1 = Slot::Running(Running {
            cancel: cancel.clone(),
            started: Instant::now(),
            progress: rx,
            name: std::mem::take(&mut entry.0),
        });
        self.running += 1;
        Some(Start {
            id,
            cancel,
            progress: Arc::new(tx),
        })
    }

    /// A running job's task ended: its entry goes. Returns when it started.
    pub fn finished(&mut self, id: JobId) -> Option<Instant> {
        match self.entries.remove(&id) {
            Some((_, Slot::Running(r))) => {
                self.running -= 1;
                Some(r.started)
            }
            Some(other) => {
                self.entries.insert(id, other);
                None
            }
            None => None,
        }
    }

    /// Holds job `id` back until `until` (see [`Queue::due`]).
    pub fn delay(&mut self, id: JobId, until: Instant) {
        if self.entries.contains_key(&id) {
            return;
        }
        self.entries
            .insert(id, (String::new(), Slot::Delayed(until)));
    }

    /// Removes and returns the delayed jobs whose instant has come.
    pub fn due(&mut self, now: Instant) -> Vec<JobId> {
        let due: Vec<JobId> = self
            .entries
            .iter()
            .filter(|(_, (_, slot))| matches!(slot, Slot::Delayed(t) if *t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in &due {
            self.entries.remove(id);
        }
        due
    }

    pub fn waiting(&self) -> usize {
        self.order.len()
    }

    /// The running jobs, in no particular order.
    pub fn running(&self) -> impl Iterator<Item = (JobId, &Running)> {
        self.entries
            .iter()
            .filter_map(|(id, (_, slot))| match slot {
                Slot::Running(r) => Some((*id, r)),
                _ => None,
            })
    }

    pub fn running_count(&self) -> usize {
        self.running
    }

    /// The state of every job held, for the jobs gauge: waiting and delayed
    /// ones are `queued`, running ones at the step their progress reports.
    pub fn states(&self) -> impl Iterator<Item = JobState> + '_ {
        self.entries.values().map(|(_, slot)| match slot {
            Slot::Running(r) => r.progress.borrow().state,
            Slot::Waiting(_) | Slot::Delayed(_) => JobState::Queued,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::job::NewJob;

    use crate::store::SqliteStore;

    /// A job as the store makes it, with the fields the queue reads set.
    fn job(id: JobId, mtime_ns: i64, state: JobState) -> Job {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let mut new = NewJob {
            chunk_size: 1,
            watch_dir: Some(PathBuf::from("/drop")),
            ..NewJob::for_test(format!("/drop/{id}.tar"), 1)
        };
        new.identity.mtime_ns = mtime_ns;
        let stored = store.admit(&new).unwrap();
        let mut job = store.job(stored).unwrap();
        job.id = id;
        job.state = state;
        job
    }

    fn drain(q: &mut Queue) -> Vec<JobId> {
        std::iter::from_fn(|| q.start_next().map(|s| s.id)).collect()
    }

    #[test]
    fn jobs_under_way_start_first_then_the_oldest_file() {
        let mut q = Queue::new(10);
        q.enqueue(&job(1, 300, JobState::Queued));
        q.enqueue(&job(2, 100, JobState::Queued));
        q.enqueue(&job(3, 900, JobState::Uploading));
        q.enqueue(&job(4, 100, JobState::Queued));
        q.enqueue(&job(5, 50, JobState::Importing));
        assert_eq!(q.waiting(), 5);
        assert_eq!(drain(&mut q), vec![5, 3, 2, 4, 1]);
        assert_eq!(q.waiting(), 0);
        assert_eq!(q.running_count(), 5);
    }

    #[test]
    fn at_most_limit_jobs_run_and_a_finished_one_makes_room() {
        let mut q = Queue::new(2);
        for id in 1..=4 {
            q.enqueue(&job(id, id, JobState::Queued));
        }
        assert_eq!(drain(&mut q), vec![1, 2]);
        assert!(q.is_running(1) && !q.is_running(3));
        assert!(q.finished(1).is_some());
        assert_eq!(drain(&mut q), vec![3]);
        assert_eq!(q.running_count(), 2);
        let mut names: Vec<String> = q.running().map(|(_, r)| r.name.clone()).collect();
        names.sort();
        assert_eq!(names, ["2.tar", "3.tar"]);
    }

    #[test]
    fn a_job_waiting_or_running_is_not_queued_twice() {
        let mut q = Queue::new(1);
        assert!(q.enqueue(&job(1, 1, JobState::Queued)));
        assert!(!q.enqueue(&job(1, 1, JobState::Queued)));
        assert!(q.enqueue(&job(2, 2, JobState::Queued)));
        assert_eq!(drain(&mut q), vec![1]);
        assert!(!q.enqueue(&job(1, 1, JobState::Uploading)));
        assert_eq!(q.waiting(), 1);
        // Not running any more: it may be queued again.
        q.finished(1);
        assert!(q.enqueue(&job(1, 1, JobState::Uploading)));
        assert_eq!(drain(&mut q), vec![1]);
    }

    #[test]
    fn only_a_waiting_job_is_removed() {
        let mut q = Queue::new(1);
        q.enqueue(&job(1, 1, JobState::Queued));
        q.enqueue(&job(2, 2, JobState::Queued));
        assert_eq!(drain(&mut q), vec![1]);
        q.remove_waiting(1);
        q.remove_waiting(2);
        assert!(q.is_running(1));
        assert_eq!(q.waiting(), 0);
        q.finished(1);
        assert_eq!(drain(&mut q), Vec::<JobId>::new());
    }

    #[test]
    fn cancelling_through_start_reaches_the_running_entry() {
        let mut q = Queue::new(1);
        q.enqueue(&job(1, 1, JobState::Queued));
        let start = q.start_next().unwrap();
        start
            .progress
            .send_modify(|p| p.state = JobState::Uploading);
        for (_, r) in q.running() {
            r.cancel.cancel();
            assert_eq!(r.progress.borrow().state, JobState::Uploading);
        }
        assert!(start.cancel.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_job_comes_back_once_its_time_has_come() {
        let mut q = Queue::new(1);
        q.enqueue(&job(1, 1, JobState::Queued));
        q.start_next().unwrap();
        let started = q.finished(1).unwrap();
        assert_eq!(started, Instant::now());
        q.delay(1, Instant::now() + Duration::from_secs(30));
        assert!(q.due(Instant::now()).is_empty());
        assert_eq!(q.start_next().map(|s| s.id), None, "a delayed job waits");
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(q.due(Instant::now()).is_empty());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(q.due(Instant::now()), vec![1]);
        assert!(q.due(Instant::now()).is_empty(), "handed back once");
    }

    #[tokio::test(start_paused = true)]
    async fn queueing_a_delayed_job_makes_it_wait_at_once() {
        let mut q = Queue::new(1);
        q.delay(1, Instant::now() + Duration::from_secs(60));
        assert!(q.enqueue(&job(1, 1, JobState::Queued)));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(q.due(Instant::now()).is_empty());
        assert_eq!(drain(&mut q), vec![1]);
    }

    #[test]
    fn states_count_waiting_and_delayed_as_queued_and_running_by_progress() {
        let mut q = Queue::new(1);
        for (id, mtime) in [(1, 10), (2, 20), (3, 30)] {
            q.enqueue(&job(id, mtime, JobState::Queued));
        }
        let start = q.start_next().unwrap();
        start
            .progress
            .send_modify(|p| p.state = JobState::Uploading);
        q.delay(3, Instant::now() + Duration::from_secs(60));
        let mut states: Vec<_> = q.states().map(|s| s.as_str()).collect();
        states.sort();
        assert_eq!(states, vec!["queued", "queued", "uploading"]);
    }
}
