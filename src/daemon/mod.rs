//! The drop-folder daemon: recovery, scheduling, filing, shutdown.
//!
//! [`run`] resumes every unfinished job and finishes every unfinished filing
//! found in the store, tells systemd it is ready, then takes stable files
//! from the [`Watcher`](crate::watch::Watcher), oldest first, and runs at
//! most `parallel_files` jobs at once through the upload [`Engine`]. A
//! rejected API key pauses all uploads (files stay where they are) and is
//! tried again periodically or on SIGHUP, which re-reads the key. On
//! shutdown, jobs stop taking new chunks, in-flight requests get
//! `shutdown_grace`, and everything left is resumable from the store.

mod settle;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{AfterSuccess, Config, WatchConfig};
use crate::job::JobState;
use crate::metrics::{ImportResult, Metrics};
use crate::store::{FilingState, Job, JobId, NewJob, StoreError, StoreHandle};
use crate::systemd;
use crate::upload::{Engine, JobProgress, Outcome};
use crate::watch::{Candidate, Watcher};

/// Scheduler housekeeping period (watchdog, pauses, delayed retries).
const TICK: Duration = Duration::from_millis(500);
/// How often the STATUS line and progress lines are refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(30);

struct Running {
    cancel: CancellationToken,
    started: Instant,
    progress: watch::Receiver<JobProgress>,
    name: String,
}

/// Queue order: jobs already under way first, then the oldest file.
type QueueKey = (u8, i64, JobId);

struct Scheduler {
    config: Config,
    store: StoreHandle,
    engine: Engine,
    metrics: Arc<Metrics>,
    queue: BTreeSet<QueueKey>,
    queued: HashMap<JobId, QueueKey>,
    names: HashMap<JobId, String>,
    running: HashMap<JobId, Running>,
    workers: JoinSet<(JobId, Result<Outcome, StoreError>)>,
    /// Jobs to queue again at an instant (after a local error).
    delayed: Vec<(Instant, JobId)>,
    auth_paused_until: Option<Instant>,
    /// When SIGHUP last replaced the key: a rejection of a request made
    /// before then says nothing about the new key.
    key_reloaded_at: Option<Instant>,
    next_filing_retry: Instant,
    last_status: Instant,
    last_progress_log: Instant,
    last_bytes: u64,
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    config.validate_for_run()?;
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
    let store = StoreHandle::open(config.state.dir.clone()).await?;
    let metrics = Arc::new(Metrics::new());
    let (platform, emulator) = crate::commands::platform_setup(&config).await?;
    let platform = platform.with_stats(metrics.platform.clone());
    let engine = Engine::new(
        store.clone(),
        platform,
        config.upload.clone(),
        metrics.clone(),
    );
    let root = CancellationToken::new();
    if let Some(addr) = config.telemetry.metrics_listen {
        let unready_after = config.telemetry.unready_after;
        let bound = crate::metrics::serve(addr, metrics.clone(), unready_after, root.child_token())
            .await
            .with_context(|| format!("telemetry.metrics_listen: cannot listen on {addr}"))?;
        info!(address = %bound, "serving /metrics, /healthz and /readyz");
        if !bound.ip().is_loopback() {
            warn!(address = %bound, "metrics are served beyond loopback without authentication");
        }
    }

    let mut sched = Scheduler {
        config: config.clone(),
        store,
        engine,
        metrics,
        queue: BTreeSet::new(),
        queued: HashMap::new(),
        names: HashMap::new(),
        running: HashMap::new(),
        workers: JoinSet::new(),
        delayed: Vec::new(),
        auth_paused_until: None,
        key_reloaded_at: None,
        next_filing_retry: Instant::now(),
        last_status: Instant::now(),
        last_progress_log: Instant::now(),
        last_bytes: 0,
    };
    sched.recover().await?;
    systemd::ready();

    let watcher = Watcher::new(config.watch.clone(), config.daemon.rescan_interval);
    let (tx, rx) = mpsc::channel(4096);
    let watch_task = tokio::spawn(watcher.run(tx, root.child_token()));

    let result = sched.run(rx, shutdown).await;
    root.cancel();
    let _ = watch_task.await;
    if let Some(emu) = emulator {
        emu.shutdown().await;
    }
    result
}

fn queue_key(job: &Job) -> QueueKey {
    let started = u8::from(job.state == JobState::Queued);
    (started, job.identity.mtime_ns, job.id)
}

impl Scheduler {
    fn watch_for(&self, job: &Job) -> Option<&WatchConfig> {
        let dir = job.watch_dir.as_ref()?;
        self.config.watch.iter().find(|w| &w.dir == dir)
    }

    fn enqueue(&mut self, job: &Job) {
        if self.running.contains_key(&job.id) || self.queued.contains_key(&job.id) {
            return;
        }
        let key = queue_key(job);
        self.queue.insert(key);
        self.queued.insert(job.id, key);
        self.names.insert(job.id, job.file_name.clone());
    }

    /// Unfinished jobs go back into the queue; unfinished filings are done.
    async fn recover(&mut self) -> anyhow::Result<()> {
        let unfinished = self.store.call(|s| s.unfinished()).await?;
        let mut resumed = 0;
        for job in &unfinished {
            if job.watch_dir.is_none() {
                // A foreground `upload` job: that command resumes it.
                continue;
            }
            if self.watch_for(job).is_none() {
                warn!(job_id = job.id, path = %job.path.display(), "job's drop folder is no longer configured; leaving it");
                continue;
            }
            self.enqueue(job);
            resumed += 1;
        }
        self.retry_filings().await?;
        self.refresh_gauges().await;
        info!(resumed, "recovery done");
        Ok(())
    }

    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Candidate>,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let watchdog = systemd::watchdog_interval();
        let mut last_ping = Instant::now();
        loop {
            self.dispatch();
            tokio::select! {
                _ = &mut shutdown => break,
                c = rx.recv() => match c {
                    Some(c) => self.on_candidate(c).await?,
                    None => {
                        warn!("the folder watcher stopped");
                        break;
                    }
                },
                Some(done) = self.workers.join_next(), if !self.workers.is_empty() => {
                    match done {
                        Ok((id, result)) => self.on_finished(id, result).await?,
                        Err(e) => error!(error = %e, "a job task failed"),
                    }
                }
                _ = async { hup.as_mut().expect("guarded by the condition").recv().await }, if hup.is_some() => {
                    self.reload_key();
                }
                _ = tick.tick() => self.housekeeping().await?,
            }
            if let Some(every) = watchdog {
                if last_ping.elapsed() >= every {
                    systemd::watchdog();
                    last_ping = Instant::now();
                }
            }
        }
        self.shutdown().await;
        Ok(())
    }

    async fn shutdown(&mut self) {
        systemd::stopping();
        info!(
            running = self.running.len(),
            "stopping: letting requests in flight finish"
        );
        for r in self.running.values() {
            r.cancel.cancel();
        }
        let grace = self.config.daemon.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            while let Some(done) = self.workers.join_next().await {
                if let Ok((id, Ok(outcome))) = done {
                    debug!(job_id = id, ?outcome, "job stopped");
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!(
                ?grace,
                "requests still in flight after the grace period; they resume on restart"
            );
            self.workers.abort_all();
            while self.workers.join_next().await.is_some() {}
        }
        info!("stopped; unfinished jobs resume on the next start");
    }

    fn reload_key(&mut self) {
        match self.config.load_api_key() {
            Ok(key) => {
                self.engine.platform().set_key(key);
                self.auth_paused_until = None;
                self.key_reloaded_at = Some(Instant::now());
                self.metrics.api_key_rejected.set(0);
                info!("SIGHUP: API key re-read; uploads resume");
            }
            Err(e) => error!(error = %e, "SIGHUP: cannot re-read the API key; keeping the old one"),
        }
    }

    /// A stable file in a drop folder: a new job, unless its identity is known.
    async fn on_candidate(&mut self, c: Candidate) -> anyhow::Result<()> {
        let Some(w) = self.config.watch.get(c.watch).cloned() else {
            return Ok(());
        };
        let identity = c.identity;
        let (ctx, adapter) = (w.file_context.clone(), w.is_adapter);
        let known = self
            .store
            .call(move |s| s.find_by_identity(&identity, &ctx, adapter))
            .await?;
        if let Some(job) = known {
            // Seen again after its import (moved back, or copied with its
            // identity); a file kept in place after success is not a new drop.
            if job.state == JobState::Succeeded && w.after_success != AfterSuccess::Keep {
                self.metrics.import_finished(ImportResult::Duplicate);
            }
            debug!(job_id = job.id, path = %c.path.display(), state = %job.state, "file already known");
            return Ok(());
        }
        // A queued job for an earlier version of this file never started:
        // the new version replaces it.
        let path = c.path.clone();
        let older = self
            .store
            .call(move |s| s.unfinished_for_path(&path))
            .await?;
        for old in older {
            if old.state == JobState::Queued && !self.running.contains_key(&old.id) {
                if let Some(key) = self.queued.remove(&old.id) {
                    self.queue.remove(&key);
                }
                self.names.remove(&old.id);
                let f = crate::store::Failure {
                    error: "superseded: the file changed before its upload started; the new version is a new job".into(),
                    stage: "read".into(),
                    ..Default::default()
                };
                let id = old.id;
                self.store.call(move |s| s.fail(id, &f)).await?;
            }
        }
        let new = NewJob {
            path: c.path.clone(),
            identity: c.identity,
            file_context: w.file_context.clone(),
            is_adapter: w.is_adapter,
            chunk_size: self.config.upload.chunk_size,
            watch_dir: Some(w.dir.clone()),
        };
        let id = self.store.call(move |s| s.insert_job(&new)).await?;
        info!(job_id = id, path = %c.path.display(), size = c.identity.size, "new file queued");
        let job = self.store.call(move |s| s.job(id)).await?;
        self.enqueue(&job);
        Ok(())
    }

    /// Starts queued jobs while there is room and the key is not rejected.
    fn dispatch(&mut self) {
        if self.auth_paused_until.is_some() {
            return;
        }
        while self.running.len() < self.config.upload.parallel_files {
            let Some(key) = self.queue.pop_first() else {
                return;
            };
            let id = key.2;
            self.queued.remove(&id);
            self.start(id);
        }
    }

    fn start(&mut self, id: JobId) {
        let cancel = CancellationToken::new();
        let (tx, rx) = watch::channel(JobProgress::queued(0));
        let engine = self.engine.clone();
        let token = cancel.clone();
        // run_job opens the job's span (job_id, file).
        self.workers.spawn(async move {
            let result = engine.run_job(id, token, Arc::new(tx)).await;
            (id, result)
        });
        let name = self.names.remove(&id).unwrap_or_default();
        self.running.insert(
            id,
            Running {
                cancel,
                started: Instant::now(),
                progress: rx,
                name,
            },
        );
    }

    async fn on_finished(
        &mut self,
        id: JobId,
        result: Result<Outcome, StoreError>,
    ) -> anyhow::Result<()> {
        let started = self.running.remove(&id).map(|r| r.started);
        match result {
            Err(e) => {
                error!(job_id = id, error = %e, "job stopped on a local error; trying again in a minute");
                self.delayed
                    .push((Instant::now() + Duration::from_secs(60), id));
            }
            Ok(Outcome::Busy) => {
                // Another process (a foreground `upload`) has it; look again later.
                self.delayed
                    .push((Instant::now() + Duration::from_secs(30), id));
            }
            Ok(Outcome::Interrupted) => {
                let job = self.store.call(move |s| s.job(id)).await?;
                if !job.state.is_terminal() {
                    self.enqueue(&job);
                }
            }
            Ok(Outcome::AuthRejected(_))
                if self
                    .key_reloaded_at
                    .is_some_and(|k| started.is_none_or(|s| k >= s)) =>
            {
                // Rejected with the key SIGHUP has since replaced: try the new one.
                let job = self.store.call(move |s| s.job(id)).await?;
                self.enqueue(&job);
            }
            Ok(Outcome::AuthRejected(msg)) => {
                let wait = self.config.upload.retry_max.max(Duration::from_secs(1));
                if self.auth_paused_until.is_none() {
                    error!(
                        error = %msg,
                        retry_in = ?wait,
                        "the platform rejected the API key: all uploads are paused and every file stays in its drop folder; fix the key (SIGHUP re-reads it)"
                    );
                }
                self.auth_paused_until = Some(Instant::now() + wait);
                self.metrics.api_key_rejected.set(1);
                let job = self.store.call(move |s| s.job(id)).await?;
                self.enqueue(&job);
                // Jobs still running will meet the same answer; let them.
            }
            Ok(done @ (Outcome::Succeeded { .. } | Outcome::Failed(_))) => {
                self.metrics.import_finished(match done {
                    Outcome::Succeeded { .. } => ImportResult::Succeeded,
                    _ => ImportResult::Failed,
                });
                if self.auth_paused_until.take().is_some() {
                    self.metrics.api_key_rejected.set(0);
                }
                let job = self.store.call(move |s| s.job(id)).await?;
                self.file(job).await?;
                self.refresh_gauges().await;
            }
        }
        Ok(())
    }

    /// Files a finished job; a failure is recorded and retried later.
    async fn file(&mut self, job: Job) -> anyhow::Result<()> {
        let Some(watch) = self.watch_for(&job).cloned() else {
            return Ok(());
        };
        let id = job.id;
        let result: Result<Option<std::path::PathBuf>, String> = match &job.filing {
            Some(f) if f.state != FilingState::Pending => return Ok(()),
            Some(f) => Ok(f.dest.clone()),
            None => match settle::plan(&job, &watch) {
                settle::Plan::Skip => {
                    self.store.call(move |s| s.plan_filing(id, None)).await?;
                    self.store
                        .call(move |s| s.finish_filing(id, FilingState::Skipped))
                        .await?;
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
                            let d = dest.clone();
                            self.store
                                .call(move |s| s.plan_filing(id, Some(&d)))
                                .await?;
                            Ok(Some(dest))
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        };
        let outcome = match result {
            Ok(Some(dest)) => {
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
                self.store.call(move |s| s.finish_filing(id, state)).await?;
                info!(job_id = id, state = %job.state, to = %dest.display(), "filed");
            }
            Err(e) => {
                warn!(job_id = id, error = %e, "cannot file the finished job; will retry");
                let m = format!("filing: {e}");
                self.store
                    .call(move |s| s.note_filing_error(id, &m))
                    .await?;
            }
        }
        Ok(())
    }

    async fn retry_filings(&mut self) -> anyhow::Result<()> {
        let jobs = self.store.call(|s| s.unfiled()).await?;
        for job in jobs {
            self.file(job).await?;
        }
        self.next_filing_retry = Instant::now()
            + self
                .config
                .daemon
                .rescan_interval
                .min(Duration::from_secs(30));
        Ok(())
    }

    /// The jobs gauge from the jobs held now: waiting ones as `queued`,
    /// running ones by their step.
    async fn refresh_gauges(&self) {
        let waiting = self.queue.len() + self.delayed.len();
        let running = self.running.values().map(|r| r.progress.borrow().state);
        self.metrics
            .set_live_jobs(std::iter::repeat_n(JobState::Queued, waiting).chain(running));
    }

    async fn housekeeping(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        if self.auth_paused_until.is_some_and(|t| t <= now) {
            info!("trying the API key again");
            self.auth_paused_until = None;
        }
        let due: Vec<JobId> = self
            .delayed
            .iter()
            .filter(|(t, _)| *t <= now)
            .map(|(_, id)| *id)
            .collect();
        self.delayed.retain(|(t, _)| *t > now);
        for id in due {
            let job = self.store.call(move |s| s.job(id)).await?;
            if !job.state.is_terminal() {
                self.enqueue(&job);
            }
        }
        if now >= self.next_filing_retry {
            self.retry_filings().await?;
        }
        if self.last_status.elapsed() >= STATUS_EVERY {
            self.status_line();
            self.refresh_gauges().await;
        }
        if self.last_progress_log.elapsed() >= PROGRESS_LOG_EVERY {
            self.last_progress_log = now;
            for (id, r) in &self.running {
                let p = r.progress.borrow().clone();
                info!(job_id = id, file = %r.name, state = %p.state, chunks_done = p.chunks_done, chunks_total = p.chunks_total, bytes_done = p.bytes_done, bytes_total = p.bytes_total, "progress");
            }
        }
        Ok(())
    }

    /// "2 uploading, 5 queued, 310 MB/s" for systemd's STATUS.
    fn status_line(&mut self) {
        let secs = self.last_status.elapsed().as_secs_f64().max(0.001);
        self.last_status = Instant::now();
        let bytes = self.metrics.bytes_uploaded.get();
        let rate = (bytes.saturating_sub(self.last_bytes)) as f64 / secs;
        self.last_bytes = bytes;
        let mut by_state: HashMap<JobState, usize> = HashMap::new();
        for r in self.running.values() {
            *by_state.entry(r.progress.borrow().state).or_default() += 1;
        }
        let mut parts: Vec<String> = [
            JobState::Uploading,
            JobState::Completing,
            JobState::Importing,
        ]
        .iter()
        .filter_map(|s| by_state.get(s).map(|n| format!("{n} {s}")))
        .collect();
        parts.push(format!("{} queued", self.queue.len()));
        if self.auth_paused_until.is_some() {
            parts.push("API key rejected, paused".into());
        }
        parts.push(format!("{}/s", indicatif::HumanBytes(rate as u64)));
        systemd::status(&parts.join(", "));
    }
}
