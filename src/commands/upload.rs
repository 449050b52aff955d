//! `modelferry upload`: import one file in the foreground.
//!
//! Uses the same state database as the daemon: a file with the same identity
//! resumes its unfinished job (same session), and a file already imported is
//! answered from the database without uploading (unless `--force`).

use std::future::Future;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::UsageError;
use crate::cli::UploadArgs;
use crate::config::Config;
use crate::escaped::Escaped;
use crate::exit;
use crate::job::NewJob;
use crate::progress;
use crate::source::FileIdentity;
use crate::store::Store;
use crate::telemetry::{self, StderrWriter};
use crate::upload::admit::{admit, Admission, Policy, Rerun};
use crate::upload::setup::platform_setup;
use crate::upload::{Engine, JobProgress, Outcome};

pub async fn run(
    args: UploadArgs,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<u8> {
    let show_bar = !args.no_progress && std::io::stderr().is_terminal();
    let bar = show_bar.then(progress::terminal_bar);
    let writer = bar.clone().map(StderrWriter::around).unwrap_or_default();
    telemetry::init(
        config.telemetry.log_format,
        &config.telemetry.log_level,
        writer,
    );

    let path = std::path::absolute(&args.path)
        .map_err(|e| UsageError(format!("{}: {e}", Escaped::path(&args.path))))?;
    // Refused before any job exists: the store keeps paths as text, and a
    // lossy copy would name a file that is not there.
    if path.to_str().is_none() {
        return Err(UsageError(format!(
            "{}: the file name is not valid UTF-8; modelferry keeps paths as text, so rename the file to import it",
            Escaped::path(&path)
        ))
        .into());
    }
    let meta = std::fs::symlink_metadata(&path)
        .map_err(|e| UsageError(format!("{}: {e}", Escaped::path(&path))))?;
    if meta.file_type().is_symlink() {
        return Err(UsageError(format!(
            "{}: is a symbolic link; modelferry never follows links (give the target's path)",
            Escaped::path(&path)
        ))
        .into());
    }
    if !meta.is_file() {
        return Err(UsageError(format!("{}: not a regular file", Escaped::path(&path))).into());
    }
    let identity = FileIdentity::of(&meta);
    let context = args.context.trim().to_string();
    if context.is_empty() {
        return Err(UsageError("--context must not be empty".into()).into());
    }

    let (platform, emulator) = platform_setup(&config).await?;
    let store = Store::from_config(&config).await?;

    let file = NewJob {
        path: path.clone(),
        identity,
        file_context: context,
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
            eprintln!(
                "{}: already imported (job {}); not uploading again (--force imports it again)",
                Escaped::path(&path),
                job.id
            );
            println!("{}", job.model_id.unwrap_or_default());
            return Ok(exit::SUCCESS);
        }
        Admission::Resume(job) => {
            eprintln!(
                "{}: resuming job {} ({}, {}/{} chunks acknowledged)",
                Escaped::path(&path),
                job.id,
                job.state,
                job.chunks_done,
                job.chunks_total
            );
            job.id
        }
        Admission::New { job, .. } => job.id,
    };

    let metrics = Arc::new(crate::metrics::Metrics::new());
    let engine = Engine::new(store.clone(), platform, config.upload.clone(), metrics);
    let (tx, rx) = watch::channel(JobProgress::queued(identity.size));
    let tx = Arc::new(tx);
    let name = path
        .file_name()
        .map(|n| Escaped::path(n.as_ref()).to_string())
        .unwrap_or_default();
    let follower = tokio::spawn(progress::follow(rx, name, bar, Duration::from_secs(5)));

    let cancel = CancellationToken::new();
    let run = engine.run_job(job_id, cancel.clone(), tx.clone());
    tokio::pin!(run);
    tokio::pin!(shutdown);
    let outcome = tokio::select! {
        r = &mut run => r?,
        _ = &mut shutdown => {
            info!("stopping: letting chunks in flight finish");
            cancel.cancel();
            match tokio::time::timeout(config.daemon.shutdown_grace, &mut run).await {
                Ok(r) => r?,
                Err(_) => Outcome::Interrupted,
            }
        }
    };
    drop(tx);
    // The engine's copy of the sender is dropped with the finished `run`.
    let _ = tokio::time::timeout(Duration::from_secs(1), follower).await;
    if let Some(emu) = emulator {
        emu.shutdown().await;
    }

    let job = store.job(job_id).await?;
    Ok(match outcome {
        Outcome::Succeeded { .. } => {
            eprintln!("{}: imported (job {})", Escaped::path(&path), job.id);
            println!("{}", job.model_id.unwrap_or_default());
            exit::SUCCESS
        }
        Outcome::Failed(error) => {
            eprintln!(
                "{}: import failed (job {}): {}",
                Escaped::path(&path),
                job.id,
                Escaped::str(&error)
            );
            exit::IMPORT_FAILED
        }
        Outcome::AuthRejected(msg) => {
            eprintln!(
                "{}: {}. Nothing was failed or deleted; fix the key and run the same command again to resume job {}.",
                Escaped::path(&path),
                Escaped::str(&msg),
                job.id
            );
            exit::KEY_REJECTED
        }
        Outcome::Busy => {
            eprintln!(
                "{}: job {} is being run by another modelferry process (the daemon, or another `upload`); not touching it",
                Escaped::path(&path),
                job.id
            );
            exit::BUSY
        }
        Outcome::Interrupted => {
            eprintln!(
                "{}: interrupted; run the same command again to resume job {} ({}/{} chunks acknowledged)",
                Escaped::path(&path),
                job.id,
                job.chunks_done,
                job.chunks_total
            );
            exit::INTERRUPTED
        }
    })
}
