//! The commands behind the CLI: each takes parsed arguments, does its job,
//! and returns the process exit code. `main` only dispatches and prints.
// The commands are where output to the terminal belongs.
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod cancel;
pub mod check;
pub mod docs;
pub mod dry_run;
pub mod emulator;
pub mod prune;
pub mod retry;
pub mod status;
pub mod upload;
mod upload_report;

use std::future::Future;

use crate::cli::{Cli, Command};
use crate::config::{Config, ConfigError};
use crate::exit;
use crate::telemetry::{self, StderrWriter};

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers the process still stops on a signal, by
        // the default action; wait forever here.
        _ => std::future::pending().await,
    }
}

/// Runs the command; the error, if any, is printed by `main`.
pub async fn dispatch(
    cli: Cli,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<u8> {
    match cli.command {
        Command::Completions(args) => docs::completions(args.shell),
        Command::Manpages(args) => docs::manpages(&args.dir),
        Command::Upload(args) => {
            let config = Config::load(&args.config.config)?;
            upload::run(args, config, shutdown).await
        }
        Command::Status(args) => status::run(&quiet_config(&args.config.config)?, &args).await,
        Command::Retry(args) => retry::run(&quiet_config(&args.config.config)?, &args.ids).await,
        Command::Cancel(args) => cancel::run(&quiet_config(&args.config.config)?, &args.ids).await,
        Command::Prune(args) => prune::run(&quiet_config(&args.config.config)?, &args).await,
        Command::Check(args) => {
            telemetry::init(
                crate::config::LogFormat::Text,
                "warn",
                StderrWriter::default(),
            );
            check::run(&args.config.config, args.online).await
        }
        Command::Emulator(args) => {
            telemetry::init(
                crate::config::LogFormat::Text,
                "info",
                StderrWriter::default(),
            );
            emulator::run(args, shutdown).await
        }
        Command::Run(args) => {
            // Every problem `run` would meet, in one report (exit 2).
            let config = Config::load_for_run(&args.config.config)?;
            telemetry::init(
                config.telemetry.log_format,
                &config.telemetry.log_level,
                StderrWriter::default(),
            );
            crate::daemon::run(config, shutdown).await?;
            Ok(exit::SUCCESS)
        }
    }
}

/// The configuration for a command that reports on the store: logs in the
/// configured format, warnings and errors only (its output is its answer).
fn quiet_config(file: &std::path::Path) -> Result<Config, ConfigError> {
    let config = Config::load(file)?;
    telemetry::init(config.telemetry.log_format, "warn", StderrWriter::default());
    Ok(config)
}

/// The exit code for an error that reached `main`.
pub fn exit_code_for(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| {
        e.downcast_ref::<ConfigError>().is_some()
            || e.downcast_ref::<UsageError>().is_some()
            // A schema this binary does not run on: newer (an older binary
            // left running in an upgrade), or older than a read-only command
            // may use (`run` migrates it).
            || matches!(
                e.downcast_ref::<crate::store::StoreError>(),
                Some(
                    crate::store::StoreError::SchemaTooNew { .. }
                        | crate::store::StoreError::SchemaTooOld { .. }
                )
            )
    }) {
        exit::USAGE
    } else {
        exit::LOCAL_ERROR
    }
}

/// A command used wrongly (a missing file, a directory given as a file).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
