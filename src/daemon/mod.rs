//! The drop-folder daemon: one loop over small parts.
//!
//! [`run`] resumes every unfinished job and finishes every unfinished filing
//! found in the store, tells systemd it is ready, then takes stable files
//! from the [`Watcher`](crate::watch::Watcher), admits each as a job
//! ([`admit`](crate::upload::admit)), and runs at most `parallel_files` jobs
//! at once through the upload [`Engine`]. A rejected API key pauses all
//! uploads (files stay where they are) and is tried again periodically or on
//! SIGHUP, which re-reads the key. On shutdown, jobs stop taking new chunks,
//! in-flight requests get `shutdown_grace`, and everything left is resumable
//! from the store.
//!
//! The loop here only routes events; each concern lives in its own file:
//! - `queue`: the jobs in hand (waiting, running, delayed) and dispatch order;
//! - `auth_gate`: the pause while the key is rejected, and SIGHUP;
//! - `reload`: what else SIGHUP re-reads (`upload.max_rate`);
//! - `fleet`: in fleet mode, jobs no instance holds that this one can take;
//! - `filing_step`: when finished jobs are filed, and retries;
//! - `settle`: what filing one job does, on disk;
//! - `status_line`: the systemd STATUS line and progress lines;
//! - `workers`: the tasks that run jobs, and their bounded stop.
//!
//! Nothing here blocks a runtime thread: store calls and file work go to the
//! blocking pool.

mod auth_gate;
mod filing_step;
mod fleet;
mod queue;
mod reload;
mod settle;
mod status_line;
mod workers;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use self::auth_gate::{AuthGate, Rejection};
use self::filing_step::Filer;
use self::queue::Queue;
use self::status_line::StatusReport;
use self::workers::Workers;
use crate::config::{AfterSuccess, Config};
use crate::escaped::Escaped;
use crate::job::{Job, JobId, JobState, NewJob};
use crate::metrics::{ImportResult, Metrics};
use crate::store::{Store, StoreError};
use crate::systemd;
use crate::upload::admit::{admit, why_settled, Admission, Policy, Rerun};
use crate::upload::setup::platform_setup;
use crate::upload::EngineError;
use crate::upload::{Engine, Outcome};
use crate::watch::{Candidate, Watcher};

/// Housekeeping period (watchdog, pauses, delayed retries, status).
const TICK: Duration = Duration::from_millis(500);
/// Wait before a job stopped by a local error (disk, database) runs again.
const LOCAL_ERROR_RETRY: Duration = Duration::from_secs(60);
/// Wait before looking again at a job another process is running.
const BUSY_RETRY: Duration = Duration::from_secs(30);
/// How often finished jobs older than `state.retain` are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Runs the daemon until `shutdown` resolves. `config` comes from
/// [`Config::load_for_run`], which has checked what the daemon needs.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let c = config.clone();
    tokio::task::spawn_blocking(move || filing_step::create_filing_dirs(&c)).await??;
    let store = Store::from_config(&config).await?;
    if let Some(instance) = store.instance() {
        info!(instance, database = %store.path().display(), lease = ?config.fleet.lease, "fleet mode");
    }
    let metrics = Arc::new(Metrics::new());
    let (platform, emulator) = platform_setup(&config).await?;
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

    let mut daemon = Daemon {
        adopter: fleet::Adopter::new(&store, config.fleet.lease),
        queue: Queue::new(config.upload.parallel_files),
        workers: Workers::default(),
        gate: AuthGate::new(config.upload.retry_max),
        filer: Filer::new(
            store.clone(),
            config.watch.clone(),
            config.daemon.rescan_interval,
        )
        .with_lease(config.fleet.lease),
        report: StatusReport::new(Instant::now()),
        next_prune: Instant::now(),
        config: config.clone(),
        store,
        engine,
        metrics,
    };
    daemon.recover().await?;
    systemd::ready();

    let watcher = Watcher::new(config.watch.clone(), config.daemon.rescan_interval);
    let (tx, rx) = mpsc::channel(4096);
    let watch_task = tokio::spawn(watcher.run(tx, root.child_token()));

    let result = daemon.run(rx, shutdown).await;
    root.cancel();
    let _ = watch_task.await;
    if let Some(emu) = emulator {
        emu.shutdown().await;
    }
    result
}

struct Daemon {
    config: Arc<Config>,
    store: Store,
    engine: Engine,
    metrics: Arc<Metrics>,
    queue: Queue,
    workers: Workers,
    gate: AuthGate,
    filer: Filer,
    report: StatusReport,
    /// When finished jobs are pruned next (at the start, then daily).
    next_prune: Instant,
    /// Fleet mode only.
    adopter: Option<fleet::Adopter>,
}

impl Daemon {
    /// Unfinished jobs go back into the queue; unfinished filings are done.
    async fn recover(&mut self) -> anyhow::Result<()> {
        let resumed = if self.adopter.is_some() {
            // Fleet mode: what the adopter takes on (jobs another instance
            // holds stay with it); its next look is a period away.
            self.adopt(Instant::now()).await?
        } else {
            let mut resumed = 0;
            for job in &self.store.takeable().await? {
                if job.watch_dir.is_none() {
                    // A foreground `upload` job: that command resumes it.
                    continue;
                }
                if self.filer.watch_for(job).is_none() {
                    warn!(job_id = job.id, path = %Escaped::path(&job.path), "job's drop folder is no longer configured; leaving it");
                    continue;
                }
                self.queue.enqueue(job);
                resumed += 1;
            }
            resumed
        };
        self.filer.retry_filings(&|_| false).await?;
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
                Some(done) = self.workers.next(), if !self.workers.is_empty() => {
                    match done {
                        Ok((id, result)) => self.on_finished(id, result).await?,
                        Err(e) => error!(error = %e, "a job task failed"),
                    }
                }
                _ = async { hup.as_mut().expect("guarded by the condition").recv().await }, if hup.is_some() => {
                    auth_gate::reload_key(&mut self.gate, self.config.clone(), self.engine.platform()).await;
                    reload::max_rate(&self.config.source, self.engine.platform(), &self.metrics).await;
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
            running = self.queue.running_count(),
            "stopping: letting requests in flight finish"
        );
        for (_, r) in self.queue.running() {
            r.cancel.cancel();
        }
        self.workers.drain(self.config.daemon.shutdown_grace).await;
        info!("stopped; unfinished jobs resume on the next start");
    }

    /// A stable file in a drop folder: a new job, unless its identity is known.
    async fn on_candidate(&mut self, c: Candidate) -> anyhow::Result<()> {
        let Some(w) = self.config.watch.get(c.watch) else {
            return Ok(());
        };
        let file = NewJob {
            path: c.path.clone(),
            identity: c.identity,
            file_context: w.file_context.clone(),
            is_adapter: w.is_adapter,
            chunk_size: self.config.upload.chunk_size,
            watch_dir: Some(w.dir.clone()),
        };
        let queue = &self.queue;
        let running = |id| queue.is_running(id);
        let policy = Policy {
            rerun: Rerun::Refiled,
            supersede_unless_running: Some(&running),
        };
        match admit(&self.store, file, policy).await? {
            Admission::Settled(job) => {
                // Seen again after its import (moved back, or copied with its
                // identity); a file kept in place after success is not a new drop.
                if job.state == JobState::Succeeded && w.after_success != AfterSuccess::Keep {
                    self.metrics.import_finished(ImportResult::Duplicate);
                }
                info!(job_id = job.id, path = %Escaped::path(&c.path), why = %why_settled(&job), "file not imported");
            }
            Admission::Resume(job) => {
                debug!(job_id = job.id, path = %Escaped::path(&c.path), state = %job.state, "file already known");
            }
            Admission::New { job, superseded } => {
                for id in superseded {
                    self.queue.remove_waiting(id);
                }
                info!(job_id = job.id, path = %Escaped::path(&c.path), size = c.identity.size, "new file queued");
                self.queue.enqueue(&job);
            }
        }
        Ok(())
    }

    /// Starts queued jobs while there is room and the key is not rejected.
    fn dispatch(&mut self) {
        if self.gate.is_paused() {
            return;
        }
        while let Some(start) = self.queue.start_next() {
            let engine = self.engine.clone();
            // run_job opens the job's span (job_id, file).
            self.workers.spawn(start.id, async move {
                engine.run_job(start.id, start.cancel, start.progress).await
            });
        }
    }

    async fn on_finished(
        &mut self,
        id: JobId,
        result: Result<Outcome, EngineError>,
    ) -> anyhow::Result<()> {
        let started = self.queue.finished(id);
        match result {
            Err(e) => {
                error!(job_id = id, error = %e, "job stopped on a local error; trying again in a minute");
                self.queue.delay(id, Instant::now() + LOCAL_ERROR_RETRY);
            }
            Ok(Outcome::Busy) => {
                // Another process (a foreground `upload`, another instance)
                // has it; look again later: in fleet mode within a lease,
                // so a holder that died is replaced soon after its lease.
                let wait = match self.store.instance() {
                    Some(_) => BUSY_RETRY.min(self.config.fleet.lease),
                    None => BUSY_RETRY,
                };
                self.queue.delay(id, Instant::now() + wait);
            }
            Ok(Outcome::Interrupted) => self.requeue_unfinished(id).await?,
            Ok(Outcome::AuthRejected(msg)) => {
                match self.gate.rejected(started, &msg) {
                    Rejection::Stale => {
                        debug!(
                            job_id = id,
                            "rejected with the key SIGHUP replaced; trying the new one"
                        );
                    }
                    // Jobs still running will meet the same answer; let them.
                    Rejection::Paused => {}
                }
                let job = self.job(id).await?;
                self.queue.enqueue(&job);
            }
            Ok(done @ (Outcome::Succeeded { .. } | Outcome::Failed(_))) => {
                self.metrics.import_finished(match done {
                    Outcome::Succeeded { .. } => ImportResult::Succeeded,
                    _ => ImportResult::Failed,
                });
                self.gate.accepted();
                let job = self.job(id).await?;
                self.filer.file(job).await?;
                self.refresh_gauges().await;
            }
            Ok(Outcome::Cancelled) => {
                self.metrics.import_finished(ImportResult::Cancelled);
                info!(job_id = id, "job cancelled; filing it to failed_dir");
                let job = self.job(id).await?;
                self.filer.file(job).await?;
                self.refresh_gauges().await;
            }
        }
        Ok(())
    }

    async fn job(&self, id: JobId) -> Result<Job, StoreError> {
        self.store.job(id).await
    }

    /// Queues job `id` again unless it has finished meanwhile.
    async fn requeue_unfinished(&mut self, id: JobId) -> anyhow::Result<()> {
        let job = self.job(id).await?;
        if !job.state.is_terminal() {
            self.queue.enqueue(&job);
        }
        Ok(())
    }

    /// Fleet mode: queues the jobs the adopter takes on, if it is time to
    /// look; how many. Jobs in hand already, and jobs of folders (or of a
    /// foreground `upload`) this instance does not watch, are left.
    async fn adopt(&mut self, now: Instant) -> Result<usize, StoreError> {
        let Some(adopter) = &mut self.adopter else {
            return Ok(0);
        };
        let (queue, filer) = (&self.queue, &self.filer);
        let known = |j: &Job| queue.contains(j.id) || filer.watch_for(j).is_none();
        let jobs = adopter.due(now, &self.store, known).await?;
        for job in &jobs {
            debug!(job_id = job.id, holder = ?job.instance, "taking on a job no instance holds");
            self.queue.enqueue(job);
        }
        Ok(jobs.len())
    }

    /// The jobs gauge from the jobs held now: waiting ones as `queued`,
    /// running ones by their step.
    async fn refresh_gauges(&self) {
        self.metrics.set_live_jobs(self.queue.states());
    }

    /// Prunes finished jobs older than `state.retain`, once a day.
    async fn prune_if_due(&mut self, now: Instant) {
        if now < self.next_prune {
            return;
        }
        self.next_prune = now + PRUNE_EVERY;
        let Some(retain) = self.config.state.retain else {
            return;
        };
        let cutoff = std::time::SystemTime::now()
            .checked_sub(retain)
            .unwrap_or(std::time::UNIX_EPOCH);
        match self.store.prune(cutoff).await {
            Ok(0) => debug!("no finished jobs to prune"),
            Ok(n) => {
                info!(pruned = n, retain = %humantime::format_duration(retain), "pruned finished jobs")
            }
            Err(e) => warn!(error = %e, "cannot prune finished jobs; trying again tomorrow"),
        }
    }

    async fn housekeeping(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        self.gate.tick(now);
        for id in self.queue.due(now) {
            self.requeue_unfinished(id).await?;
        }
        if let Err(e) = self.adopt(now).await {
            warn!(error = %e, "cannot look for jobs to take over");
        }
        // A job running here is filed when its task ends, not under it.
        let queue = &self.queue;
        self.filer
            .retry_if_due(now, &|id| queue.is_running(id))
            .await?;
        self.prune_if_due(now).await;
        let bytes = self.metrics.bytes_uploaded.get();
        let paused = self.gate.is_paused();
        if let Some(line) = self.report.status_line(now, bytes, &self.queue, paused) {
            systemd::status(&line);
            self.refresh_gauges().await;
        }
        self.report.log_progress(now, &self.queue);
        Ok(())
    }
}
