//! The commands behind the CLI: each takes parsed arguments, does its job,
//! and returns the process exit code. `main` only dispatches and prints.

pub mod docs;
pub mod emulator;
pub mod status;
pub mod upload;

use std::future::Future;

use anyhow::Context;
use modelferry_emulator::{EmulatorHandle, EmulatorOptions};

use crate::cli::{Cli, Command};
use crate::config::{Config, ConfigError};
use crate::exit;
use crate::platform::{ClientSettings, PlatformClient};
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
        Command::Status(args) => {
            let config = Config::load(&args.config.config)?;
            telemetry::init(config.telemetry.log_format, "warn", StderrWriter::default());
            status::run(&config, args.json).await
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
            let config = Config::load(&args.config.config)?;
            config.validate_for_run()?;
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

/// The platform client for `config`, with the API key it names. With
/// `platform.emulate = true`, the built-in emulator is started on a free
/// loopback port (its sessions kept under the state folder, so they survive a
/// restart) and the client points at it; the handle keeps it running.
pub async fn platform_setup(
    config: &Config,
) -> anyhow::Result<(PlatformClient, Option<EmulatorHandle>)> {
    let settings = |base_url| ClientSettings {
        base_url,
        connect_timeout: config.platform.connect_timeout,
        request_timeout: config.platform.request_timeout,
    };
    if !config.platform.emulate {
        let key = config.load_api_key()?;
        let client = PlatformClient::new(&settings(config.base_url()?), key)
            .context("cannot set up the HTTP client")?;
        return Ok((client, None));
    }
    let opts = EmulatorOptions {
        data_dir: Some(config.state.dir.join("emulator")),
        import_polls: 1,
        ..EmulatorOptions::default()
    };
    let handle = modelferry_emulator::start(([127, 0, 0, 1], 0).into(), opts)
        .await
        .context("platform.emulate: cannot start the built-in emulator")?;
    tracing::warn!(
        url = %handle.base_url(),
        "platform.emulate = true: uploads go to the built-in emulator; nothing reaches a real platform"
    );
    let key = config
        .load_api_key()
        .unwrap_or_else(|_| crate::secret::Secret::new("emulator"));
    let url = reqwest::Url::parse(&handle.base_url()).context("emulator address")?;
    let client =
        PlatformClient::new(&settings(url), key).context("cannot set up the HTTP client")?;
    Ok((client, Some(handle)))
}

/// The exit code for an error that reached `main`.
pub fn exit_code_for(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| {
        e.downcast_ref::<ConfigError>().is_some() || e.downcast_ref::<UsageError>().is_some()
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
