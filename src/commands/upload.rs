//! `modelferry upload`: import one file in the foreground.
//!
//! Uses the same state database as the daemon: a file with the same identity
//! resumes its unfinished job (same session), and a file already imported is
//! answered from the database without uploading (unless `--force`). With
//! `--timeout` the whole command is bounded: when it runs out, the work in
//! hand (requests in flight included) is dropped and the job stays as the
//! store has it, resumable (exit 6). What is printed, and the exit code for
//! each ending, is [`upload_report`](super::upload_report)'s.

use std::future::Future;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::upload_report::{Ending, Say};
use super::UsageError;
use crate::cli::UploadArgs;
use crate::config::{Config, LogFormat};
use crate::escaped::Escaped;
use crate::job::{JobId, NewJob};
use crate::progress::{self, Display};
use crate::source::FileIdentity;
use crate::store::Store;
use crate::telemetry::{self, StderrWriter};
use crate::upload::admit::{admit, Admission, Policy, Rerun};
use crate::upload::setup::platform_setup;
use crate::upload::{Engine, JobProgress, Outcome};

/// How often a progress line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// Runs `modelferry upload` until done or `shutdown`, returning the exit status.
pub async fn run(
    args: UploadArgs,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<u8> {
    let json_logs = config.telemetry.log_format == LogFormat::Json;
    let show_progress = !args.no_progress && !args.quiet;
    let on_terminal = std::io::stderr().is_terminal();
    let say = Say {
        quiet: args.quiet,
        json_logs,
        json_out: args.json,
    };

    let checked = look_at(&args.path).and_then(|found| Ok((found, file_context(&args.context)?)));
    let ((path, identity), context) = match checked {
        Ok(checked) => checked,
        // Usage: stdout stays empty, `main` prints the message (exit 2).
        Err(e) => {
            init_logs(&config, &args, None, show_progress);
            let e = anyhow::Error::from(e);
            return super::upload_report::finish(&say, &args.path, None, Err(e), None).await;
        }
    };
    if args.dry_run {
        // Nothing is sent and nothing written: the checked plan is the answer.
        init_logs(&config, &args, None, false);
        let req = super::dry_run::Request {
            path: &path,
            identity,
            file_context: context,
            is_adapter: args.adapter,
            force: args.force,
        };
        return super::dry_run::run(req, &config, &say, shutdown).await;
    }
    let name = path
        .file_name()
        .map(|n| Escaped::path(n.as_ref()).to_string())
        .unwrap_or_default();
    let display = if !show_progress {
        None
    } else if on_terminal && !json_logs {
        Some(Display::Bar(progress::terminal_bar(&name, identity.size)))
    } else if json_logs {
        Some(Display::Events)
    } else {
        Some(Display::Lines)
    };
    let bar = match &display {
        Some(Display::Bar(bar)) => Some(bar.clone()),
        _ => None,
    };
    init_logs(&config, &args, bar, show_progress);

    let (tx, rx) = watch::channel(JobProgress::queued(identity.size));
    let tx = Arc::new(tx);
    let follower = display.map(|d| tokio::spawn(progress::follow(rx, name, d, LINE_EVERY)));
    let known = Arc::new(Mutex::new(Known::default()));

    let work = drive(
        &args,
        &config,
        &path,
        identity,
        context,
        tx.clone(),
        known.clone(),
        &say,
        shutdown,
    );
    let ended = match args.timeout {
        None => work.await,
        Some(limit) => match tokio::time::timeout(limit, work).await {
            Ok(ended) => ended,
            // The work in hand is dropped: requests in flight end with it,
            // and the job stays as the store has it.
            Err(_) => Ok(Ending::TimedOut(limit)),
        },
    };
    let note = tx.borrow().note.clone();
    drop(tx);
    if let Some(f) = follower {
        let _ = tokio::time::timeout(Duration::from_secs(1), f).await;
    }
    let known = std::mem::take(&mut *known.lock().unwrap_or_else(|p| p.into_inner()));
    let held = known.store.zip(known.job_id);
    let held = held.as_ref().map(|(store, id)| (store, *id));
    super::upload_report::finish(&say, &path, held, ended, note).await
}

/// What `drive` has in hand, kept outside it so that a timeout (which
/// drops `drive`) can still name the job and read it back.
#[derive(Default)]
struct Known {
    /// The store the job is in, once open.
    store: Option<Store>,
    /// The job, once admitted.
    job_id: Option<JobId>,
}

/// Sets up logging: `--quiet` keeps warnings and errors only, and while
/// progress is shown the engine's own notes on state changes are left out
/// (the progress line says it once).
fn init_logs(
    config: &Config,
    args: &UploadArgs,
    bar: Option<indicatif::ProgressBar>,
    show_progress: bool,
) {
    let level = if args.quiet {
        "warn".to_string()
    } else if show_progress {
        format!("{},modelferry::upload=warn", config.telemetry.log_level)
    } else {
        config.telemetry.log_level.clone()
    };
    let writer = bar.map(StderrWriter::around).unwrap_or_default();
    telemetry::init(config.telemetry.log_format, &level, writer);
}

/// `--context` as the platform gets it: trimmed, not empty.
fn file_context(given: &str) -> Result<String, UsageError> {
    let context = given.trim();
    if context.is_empty() {
        return Err(UsageError("--context must not be empty".into()));
    }
    Ok(context.to_string())
}

/// The file to import, checked: absolute, UTF-8, a regular file, no link.
fn look_at(given: &Path) -> Result<(PathBuf, FileIdentity), UsageError> {
    let path = std::path::absolute(given)
        .map_err(|e| UsageError(format!("{}: {e}", Escaped::path(given))))?;
    // Refused before any job exists: the store keeps paths as text, and a
    // lossy copy would name a file that is not there.
    if path.to_str().is_none() {
        return Err(UsageError(format!(
            "{}: the file name is not valid UTF-8; modelferry keeps paths as text, so rename the file to import it",
            Escaped::path(&path)
        )));
    }
    let meta = std::fs::symlink_metadata(&path)
        .map_err(|e| UsageError(format!("{}: {e}", Escaped::path(&path))))?;
    if meta.file_type().is_symlink() {
        return Err(UsageError(format!(
            "{}: is a symbolic link; modelferry never follows links (give the target's path)",
            Escaped::path(&path)
        )));
    }
    if !meta.is_file() {
        return Err(UsageError(format!(
            "{}: not a regular file",
            Escaped::path(&path)
        )));
    }
    Ok((path, FileIdentity::of(&meta)))
}

/// Admits the file and runs its job to an ending. The store and the job's
/// id go into `known` as soon as there are, so the ending (a timeout
/// included) reads the job from this store, not a second one.
#[allow(clippy::too_many_arguments)]
async fn drive(
    args: &UploadArgs,
    config: &Config,
    path: &Path,
    identity: FileIdentity,
    file_context: String,
    tx: Arc<watch::Sender<JobProgress>>,
    known: Arc<Mutex<Known>>,
    say: &Say,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Ending> {
    let (platform, emulator) = platform_setup(config).await?;
    let store = Store::from_config(config).await?;
    known.lock().unwrap_or_else(|p| p.into_inner()).store = Some(store.clone());

    let file = NewJob {
        path: path.to_path_buf(),
        identity,
        file_context,
        is_adapter: args.adapter,
        chunk_size: config.upload.chunk_size,
        watch_dir: None,
    };
    let policy = Policy {
        rerun: if args.force {
            Rerun::Finished
        } else {
            Rerun::Failed
        },
        supersede_unless_running: None,
    };
    let job_id = match admit(&store, file, policy).await? {
        Admission::Settled(job) => {
            known.lock().unwrap_or_else(|p| p.into_inner()).job_id = Some(job.id);
            return Ok(Ending::AlreadyImported);
        }
        Admission::Resume(job) => {
            say.info(&format!(
                "{}: resuming job {} ({}, {}/{} chunks acknowledged)",
                Escaped::path(path),
                job.id,
                job.state,
                job.chunks_done,
                job.chunks_total
            ));
            job.id
        }
        Admission::New { job, .. } => job.id,
    };
    known.lock().unwrap_or_else(|p| p.into_inner()).job_id = Some(job_id);

    let metrics = Arc::new(crate::metrics::Metrics::new());
    let mut settings = config.upload.clone();
    // --force imports again: the same bytes imported before do not stop it.
    settings.dedupe &= !args.force;
    let engine = Engine::new(store.clone(), platform, settings, metrics);
    let cancel = CancellationToken::new();
    let run = engine.run_job(job_id, cancel.clone(), tx);
    tokio::pin!(run);
    tokio::pin!(shutdown);
    let outcome = tokio::select! {
        r = &mut run => r?,
        _ = &mut shutdown => {
            say.info("stopping: letting chunks in flight finish");
            cancel.cancel();
            match tokio::time::timeout(config.daemon.shutdown_grace, &mut run).await {
                Ok(r) => r?,
                Err(_) => Outcome::Interrupted,
            }
        }
    };
    if let Some(emu) = emulator {
        emu.shutdown().await;
    }
    Ok(Ending::Ran(outcome))
}
