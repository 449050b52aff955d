//! Driving the filing of finished daemon jobs.
//!
//! [`Filer`] owns when filing happens: right after a job finishes, for every
//! unfiled job at startup, and again every `min(rescan_interval, 30 s)` for
//! jobs whose filing failed (permissions, a full disk). It promises that a
//! failure is recorded on the job (`filing_error`, shown by `status`) and
//! retried, never lost, and that a job is filed once: what to do and where is
//! decided by [`settle`](super::settle) and recorded in the store before
//! anything moves. The done and failed folders are made at startup
//! ([`create_filing_dirs`]), so a misconfigured one stops the start, not the
//! first filing. All filesystem work runs on tokio's blocking pool.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;
use tracing::{info, warn};

use super::settle;
use crate::config::{Config, WatchConfig};
use crate::escaped::Escaped;
use crate::job::{FilingState, Job, JobId};
use crate::store::{Hold, Store, StoreError};

/// Longest wait before failed filings are tried again.
const MAX_RETRY_EVERY: Duration = Duration::from_secs(30);

pub struct Filer {
    store: Store,
    watches: Vec<WatchConfig>,
    retry_every: Duration,
    next_retry: Instant,
    /// Fleet mode: how long a job's own instance has to file it.
    lease: Duration,
}

impl Filer {
    pub fn new(store: Store, watches: Vec<WatchConfig>, rescan_interval: Duration) -> Self {
        Filer {
            store,
            watches,
            retry_every: rescan_interval.min(MAX_RETRY_EVERY),
            next_retry: Instant::now(),
            lease: Duration::from_secs(30),
        }
    }

    /// Fleet mode: the lease, the time a job's own instance has to file it.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The drop folder a daemon job came from, if it is still configured.
    pub fn watch_for(&self, job: &Job) -> Option<&WatchConfig> {
        let dir = job.watch_dir.as_ref()?;
        self.watches.iter().find(|w| &w.dir == dir)
    }

    /// Files a finished job; a failure is recorded and retried later. In
    /// fleet mode the filer holds the job while filing it, so one instance
    /// files it; an instance files another's job only once that one had a
    /// lease's time to do it.
    pub async fn file(&self, job: Job) -> anyhow::Result<()> {
        if self.watch_for(&job).is_none() {
            return Ok(());
        }
        let Some(me) = self.store.instance() else {
            return self.file_job(job, None).await;
        };
        if job.instance.as_deref() != Some(me) && !self.orphaned(&job) {
            return Ok(());
        }
        let hold = match self.store.hold(job.id).await {
            Ok(hold) => hold,
            Err(StoreError::Busy(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        // Read again under the hold: another instance may have filed it.
        let result = match self.store.job(job.id).await {
            Ok(job) => self.file_job(job, Some(&hold)).await,
            Err(e) => Err(e.into()),
        };
        self.store.release(hold).await;
        match result {
            // Taken over mid-filing: its new holder files it.
            Err(e) if matches!(e.downcast_ref(), Some(StoreError::LeaseLost { .. })) => {
                warn!(job_id = job.id, error = %e, "lost the job while filing it; its new holder files it");
                Ok(())
            }
            other => other,
        }
    }

    /// Fleet mode: a job finished over a lease ago and still not filed (its
    /// instance stopped before filing it).
    fn orphaned(&self, job: &Job) -> bool {
        let since = job.finished_at.unwrap_or(job.updated_at);
        std::time::SystemTime::now()
            .duration_since(since)
            .is_ok_and(|d| d > self.lease)
    }

    /// Files `job`; `hold`: the filer's hold on it (fleet mode), which
    /// every filing write carries.
    async fn file_job(&self, job: Job, hold: Option<&Hold>) -> anyhow::Result<()> {
        let Some(watch) = self.watch_for(&job).cloned() else {
            return Ok(());
        };
        let id = job.id;
        let result: Result<Option<PathBuf>, String> = match &job.filing {
            Some(f) if f.state != FilingState::Pending => return Ok(()),
            Some(f) => Ok(f.dest.clone()),
            None => {
                let (j, w) = (job.clone(), watch.clone());
                // `plan` looks at the file (lstat).
                match tokio::task::spawn_blocking(move || settle::plan(&j, &w)).await? {
                    settle::Plan::Skip => {
                        self.store.plan_filing(id, hold, None).await?;
                        let skipped = FilingState::Skipped;
                        self.store.finish_filing(id, hold, skipped).await?;
                        info!(
                            job_id = id,
                            "file changed during its upload; it starts over as a new job"
                        );
                        return Ok(());
                    }
                    settle::Plan::Into(dir) => {
                        let j = job.clone();
                        match tokio::task::spawn_blocking(move || settle::choose(&j, &dir)).await? {
                            Ok(dest) => {
                                self.store.plan_filing(id, hold, Some(&dest)).await?;
                                Ok(Some(dest))
                            }
                            Err(e) => Err(e.to_string()),
                        }
                    }
                }
            }
        };
        let outcome = match result {
            Ok(Some(dest)) => {
                // Nothing moves once the lease may be another's: its new
                // holder files the job.
                if hold.is_some_and(|h| !h.is_live()) {
                    return Err(StoreError::LeaseLost {
                        job: id,
                        instance: self.store.instance().unwrap_or_default().to_string(),
                    }
                    .into());
                }
                let j = job.clone();
                let d = dest.clone();
                tokio::task::spawn_blocking(move || settle::execute(&j, &watch, &d))
                    .await?
                    .map(|st| (st, dest))
                    .map_err(|e| e.to_string())
            }
            Ok(None) => Ok((FilingState::Skipped, job.path.clone())),
            Err(e) => Err(e),
        };
        match outcome {
            Ok((state, dest)) => {
                self.store.finish_filing(id, hold, state).await?;
                info!(job_id = id, state = %job.state, to = %Escaped::path(&dest), "filed");
            }
            Err(e) => {
                warn!(job_id = id, error = %e, "cannot file the finished job; will retry");
                let m = format!("filing: {e}");
                self.store.note_filing_error(id, hold, &m).await?;
            }
        }
        Ok(())
    }

    /// Files every finished job whose filing is not done, except those
    /// `busy` says are still being driven (a cancelled job whose task has
    /// not ended yet).
    pub async fn retry_filings(&mut self, busy: &dyn Fn(JobId) -> bool) -> anyhow::Result<()> {
        let jobs = self.store.unfiled().await?;
        for job in jobs {
            if busy(job.id) {
                continue;
            }
            self.file(job).await?;
        }
        self.next_retry = Instant::now() + self.retry_every;
        Ok(())
    }

    /// [`Filer::retry_filings`] when its period has passed.
    pub async fn retry_if_due(
        &mut self,
        now: Instant,
        busy: &dyn Fn(JobId) -> bool,
    ) -> anyhow::Result<()> {
        if now >= self.next_retry {
            self.retry_filings(busy).await?;
        }
        Ok(())
    }
}

/// Makes every drop folder's done and failed folders.
pub fn create_filing_dirs(config: &Config) -> anyhow::Result<()> {
    for w in &config.watch {
        for dir in [&w.done_dir, &w.failed_dir] {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "cannot create {} (from {})",
                    dir.display(),
                    config.source.display()
                )
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AfterSuccess;
    use crate::job::{Failure, NewJob, Stage};
    use crate::source::FileIdentity;

    struct Fixture {
        _dir: tempfile::TempDir,
        drop: PathBuf,
        watch: WatchConfig,
        store: Store,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let drop = dir.path().join("drop");
        std::fs::create_dir(&drop).unwrap();
        let watch = WatchConfig {
            dir: drop.clone(),
            done_dir: drop.join("done"),
            failed_dir: drop.join("failed"),
            file_context: "model".into(),
            is_adapter: false,
            include: Vec::new(),
            stable_for: Duration::from_secs(1),
            after_success: AfterSuccess::Move,
            poll_only: false,
        };
        let store = Store::open(dir.path().join("state")).await.unwrap();
        Fixture {
            _dir: dir,
            drop,
            watch,
            store,
        }
    }

    /// A job for a file in the drop folder, failed at `stage`.
    async fn failed_job(f: &Fixture, name: &str, stage: Stage) -> JobId {
        let path = f.drop.join(name);
        std::fs::write(&path, b"tar").unwrap();
        let new = NewJob {
            identity: FileIdentity::of_path(&path).unwrap(),
            path,
            file_context: "model".into(),
            is_adapter: false,
            chunk_size: 1024,
            watch_dir: Some(f.drop.clone()),
        };
        let id = f.store.admit(&new).await.unwrap();
        let hold = f.store.hold(id).await.unwrap();
        let failure = Failure::new(stage, "boom");
        f.store.fail(id, &hold, &failure).await.unwrap();
        hold.finished();
        f.store.release(hold).await;
        id
    }

    async fn job(f: &Fixture, id: JobId) -> Job {
        f.store.job(id).await.unwrap()
    }

    fn filer(f: &Fixture) -> Filer {
        Filer::new(
            f.store.clone(),
            vec![f.watch.clone()],
            Duration::from_secs(60),
        )
    }

    #[tokio::test]
    async fn a_failed_job_goes_to_failed_with_its_receipt_once() {
        let f = fixture().await;
        let id = failed_job(&f, "m.tar", Stage::Import).await;
        let filer = filer(&f);
        filer.file(job(&f, id).await).await.unwrap();
        let failed = &f.watch.failed_dir;
        assert!(failed.join("m.tar").exists());
        assert!(!f.drop.join("m.tar").exists());
        let receipt = std::fs::read_to_string(crate::filing::error_path(&failed.join("m.tar")));
        assert!(receipt.unwrap().contains("boom"));
        let filed = job(&f, id).await;
        assert_eq!(filed.filing.as_ref().unwrap().state, FilingState::Done);
        // Filing a filed job again changes nothing.
        std::fs::write(f.drop.join("m.tar"), b"a new file").unwrap();
        filer.file(filed).await.unwrap();
        assert!(f.drop.join("m.tar").exists());
        assert_eq!(std::fs::read_dir(failed).unwrap().count(), 2);
    }

    #[tokio::test]
    async fn a_file_changed_under_its_upload_is_left_for_its_new_job() {
        let f = fixture().await;
        let id = failed_job(&f, "m.tar", Stage::Read).await;
        std::fs::write(f.drop.join("m.tar"), b"rewritten, longer").unwrap();
        filer(&f).file(job(&f, id).await).await.unwrap();
        assert!(f.drop.join("m.tar").exists());
        assert!(!f.watch.failed_dir.join("m.tar").exists());
        let filed = job(&f, id).await;
        assert_eq!(filed.filing.unwrap().state, FilingState::Skipped);
    }

    #[tokio::test]
    async fn a_job_from_a_folder_no_longer_configured_is_left_alone() {
        let f = fixture().await;
        let id = failed_job(&f, "m.tar", Stage::Import).await;
        let filer = Filer::new(f.store.clone(), Vec::new(), Duration::from_secs(60));
        filer.file(job(&f, id).await).await.unwrap();
        assert!(f.drop.join("m.tar").exists());
        assert!(job(&f, id).await.filing.is_none());
    }

    #[tokio::test]
    async fn a_failed_filing_is_recorded_and_retried_when_due() {
        let mut f = fixture().await;
        let id = failed_job(&f, "m.tar", Stage::Import).await;
        // The failed folder cannot be made while a file holds its parent's name.
        let blocker = f.drop.join("blocker");
        std::fs::write(&blocker, b"").unwrap();
        f.watch.failed_dir = blocker.join("failed");
        let mut filer = filer(&f);
        filer.retry_filings(&|_| false).await.unwrap();
        let noted = job(&f, id).await;
        assert!(
            noted
                .filing_error
                .as_deref()
                .unwrap_or("")
                .starts_with("filing: "),
            "{:?}",
            noted.filing_error
        );
        assert!(noted.filing.is_none());
        std::fs::remove_file(&blocker).unwrap();
        // Not due yet: nothing happens.
        filer
            .retry_if_due(Instant::now(), &|_| false)
            .await
            .unwrap();
        assert!(f.drop.join("m.tar").exists());
        filer
            .retry_if_due(Instant::now() + MAX_RETRY_EVERY, &|_| false)
            .await
            .unwrap();
        assert!(f.watch.failed_dir.join("m.tar").exists());
        let filed = job(&f, id).await;
        assert_eq!(filed.filing.unwrap().state, FilingState::Done);
        assert_eq!(filed.filing_error, None);
    }

    #[tokio::test]
    async fn failed_filings_are_retried_at_least_every_30_seconds() {
        let f = fixture().await;
        let slow = Filer::new(f.store.clone(), Vec::new(), Duration::from_secs(600));
        assert_eq!(slow.retry_every, MAX_RETRY_EVERY);
        let quick = Filer::new(f.store.clone(), Vec::new(), Duration::from_secs(2));
        assert_eq!(quick.retry_every, Duration::from_secs(2));
    }
}
