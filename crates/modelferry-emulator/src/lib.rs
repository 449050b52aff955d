//! The platform emulator: an HTTP server that imitates the Agent Platform's
//! four model-import endpoints as `platform-api.md` describes them, with
//! fault injection, so tests and benchmarks have an oracle to upload to.
//!
//! It owns its own reading of the wire contract ([`wire`]) and shares no
//! types with the platform client: where one of them misreads the contract,
//! the other catches it. What it received is available as a [`Report`], from
//! the [`EmulatorHandle`] or as JSON at `GET /_emulator/report`.
//!
//! Promises:
//! - Every request is handled in this order: latency, then the API key, then
//!   faults, then the endpoint's own validation.
//! - A chunk is counted as stored only once its bytes are in place (or, in
//!   discard mode, hashed); a reset connection stores nothing, a lost ack
//!   stores the chunk and answers 502.
//! - With a `data_dir`, sessions survive a restart on the same directory.
//! - The API key is never logged.
//!
//! Admin endpoints (no auth; the emulator listens only where it is told):
//! `GET /_emulator/report`, `POST /_emulator/expire-sessions`,
//! `POST /_emulator/api-key` (`{"api_key": "..." | null}`),
//! `GET`/`POST /_emulator/faults` (a [`FaultRates`] object).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod assemble;
mod chunk;
mod conn;
mod options;
mod persist;
mod report;
mod routes;
mod sessions;
mod state;
mod wire;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use conn::{ConnKill, KillableListener};
use state::Emulator;

pub use options::{EmulatorOptions, FaultRates};
pub use report::{ChunkReport, EndpointCounts, FaultCounts, Report, SessionReport};
pub use wire::{ImportStatus, StartRequest};

/// How long `shutdown()` lets in-flight requests finish before cutting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running emulator. Dropping it stops the server (in the background);
/// [`EmulatorHandle::shutdown`] stops it and waits.
pub struct EmulatorHandle {
    addr: SocketAddr,
    emu: Arc<Emulator>,
    cancel: CancellationToken,
    server: Option<JoinHandle<()>>,
}

impl EmulatorHandle {
    /// The address the server is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`; a wildcard bind address is replaced by loopback so
    /// the URL can be connected to.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// Where sessions and models are kept; `None` in discard mode.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.emu.data_dir.clone()
    }

    /// A snapshot of what was received so far.
    pub fn report(&self) -> Report {
        self.emu.report()
    }

    /// Changes the accepted key: `None` accepts any non-empty key.
    pub fn set_api_key(&self, key: Option<String>) {
        self.emu.set_api_key(key);
    }

    /// Changes the fault rates (each clamped into `0.0..=1.0`).
    pub fn set_faults(&self, f: FaultRates) {
        self.emu.set_faults(f);
    }

    /// Makes every session not yet completed expired now: chunk uploads and
    /// complete calls on it answer 410. Writes the changed session files
    /// (small) on the calling thread.
    pub fn expire_sessions(&self) {
        self.emu.expire_all();
    }

    /// Stops accepting connections, lets in-flight requests finish (up to a
    /// few seconds), waits for background imports, then removes the private
    /// data directory if there is one.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(mut server) = self.server.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                .await
                .is_err()
            {
                tracing::warn!(
                    "emulator: requests still running after the grace period; cutting them"
                );
                server.abort();
                let _ = server.await;
            }
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts an emulator on `listen` (e.g. `127.0.0.1:0`) and returns once it
/// accepts connections. Sessions found in `opts.data_dir` are loaded.
pub async fn start(listen: SocketAddr, opts: EmulatorOptions) -> io::Result<EmulatorHandle> {
    opts.validate()?;
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    // Discard mode writes nothing, so it needs no directory at all.
    let (data_dir, private_dir) = match (&opts.data_dir, opts.discard) {
        (_, true) => (None, None),
        (Some(dir), false) => (Some(dir.clone()), None),
        (None, false) => {
            let tmp = tempfile::Builder::new()
                .prefix("modelferry-emulator-")
                .tempdir()?;
            (Some(tmp.path().to_path_buf()), Some(tmp))
        }
    };
    if let Some(dir) = &data_dir {
        tokio::fs::create_dir_all(dir.join("sessions")).await?;
    }
    let emu = Arc::new(Emulator::new(opts, data_dir));
    let loader = Arc::clone(&emu);
    let resume = tokio::task::spawn_blocking(move || loader.load())
        .await
        .map_err(io::Error::other)??;
    for session_id in resume {
        assemble::spawn(&emu, session_id);
    }

    let cancel = CancellationToken::new();
    let app = routes::router(Arc::clone(&emu));
    let server = tokio::spawn({
        let emu = Arc::clone(&emu);
        let cancel = cancel.clone();
        async move {
            let service = app.into_make_service_with_connect_info::<ConnKill>();
            let served = axum::serve(KillableListener::new(listener), service)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await;
            if let Err(err) = served {
                tracing::error!(error = %err, "emulator: server stopped with an error");
            }
            emu.tracker.close();
            emu.tracker.wait().await;
            // Removed only now: assemblies write into it until the line above.
            drop(private_dir);
        }
    });
    tracing::debug!(%addr, "emulator started");
    Ok(EmulatorHandle {
        addr,
        emu,
        cancel,
        server: Some(server),
    })
}

/// For the CLI: starts the emulator, logs and prints
/// `emulator listening on http://ADDR`, serves until `shutdown` resolves,
/// then stops gracefully.
pub async fn serve_until(
    listen: SocketAddr,
    opts: EmulatorOptions,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let handle = start(listen, opts)
        .await
        .with_context(|| format!("cannot start the emulator on {listen}"))?;
    let url = handle.base_url();
    tracing::info!(%url, "emulator listening on {url}");
    // The address on stdout is how scripts and tests learn the port.
    #[allow(clippy::print_stdout)]
    {
        println!("emulator listening on {url}");
    }
    shutdown.await;
    tracing::info!("emulator stopping");
    handle.shutdown().await;
    Ok(())
}
