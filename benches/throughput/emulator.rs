//! The emulator as a separate process (`modelferry emulator --discard`), so
//! its CPU is never counted in a client's row. Listens on a free loopback
//! port; killed when dropped.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use modelferry_emulator::Report;
use tokio::process::{Child, Command};

use crate::measure::proc_cpu_secs;

/// How an emulator process is started beyond the defaults.
#[derive(Debug, Default, Clone)]
pub struct Launch {
    /// `taskset -c CPU`: pinned to this CPU list.
    pub cpu: Option<String>,
    /// `--no-hash`: the emulator does not hash chunks.
    pub no_hash: bool,
    /// IN_PROGRESS dock-status answers before SUCCESS.
    pub import_polls: u32,
}

pub struct EmulatorProc {
    child: Child,
    pub url: String,
    log: std::path::PathBuf,
    http: reqwest::Client,
}

impl EmulatorProc {
    /// Starts `bin emulator --discard --import-polls 0` on a free loopback
    /// port with `latency`; returns once `/_emulator/report` answers. Its
    /// output goes to `log_dir/emulator-NAME.log`.
    pub async fn start(
        bin: &Path,
        latency: Duration,
        log_dir: &Path,
        name: &str,
    ) -> anyhow::Result<EmulatorProc> {
        Self::start_with(bin, latency, log_dir, name, &Launch::default()).await
    }

    /// As [`EmulatorProc::start`], with `launch`'s changes.
    pub async fn start_with(
        bin: &Path,
        latency: Duration,
        log_dir: &Path,
        name: &str,
        launch: &Launch,
    ) -> anyhow::Result<EmulatorProc> {
        let log = log_dir.join(format!("emulator-{name}.log"));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let mut last_err = None;
        // A port found free can be taken by someone else before the
        // emulator binds it: try a few.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let out = std::fs::File::create(&log)?;
            let mut cmd = match &launch.cpu {
                Some(cpu) => {
                    let mut c = Command::new("taskset");
                    c.args(["-c", cpu]).arg(bin);
                    c
                }
                None => Command::new(bin),
            };
            let polls = launch.import_polls.to_string();
            cmd.args(["emulator", "--discard", "--import-polls", &polls]);
            if launch.no_hash {
                cmd.arg("--no-hash");
            }
            let child = cmd
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--latency", &format!("{}ms", latency.as_millis())])
                .stdin(Stdio::null())
                .stdout(Stdio::from(out.try_clone()?))
                .stderr(Stdio::from(out))
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot run {}", bin.display()))?;
            let mut emu = EmulatorProc {
                child,
                url: format!("http://127.0.0.1:{port}"),
                log: log.clone(),
                http: http.clone(),
            };
            match emu.wait_ready(Duration::from_secs(15)).await {
                Ok(()) => return Ok(emu),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("emulator did not start")))
    }

    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "emulator exited ({status}) before answering; see {}",
                    self.log.display()
                );
            }
            if self.report().await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "emulator did not answer within {limit:?}; see {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the emulator received so far.
    pub async fn report(&self) -> anyhow::Result<Report> {
        let resp = self
            .http
            .get(format!("{}/_emulator/report", self.url))
            .send()
            .await?
            .error_for_status()?;
        Ok(resp.json().await?)
    }

    /// Chunk POSTs stored so far, over every session.
    pub async fn chunks_stored(&self) -> anyhow::Result<u64> {
        Ok(self.report().await?.chunk_posts_stored())
    }

    /// The emulator process's CPU seconds so far.
    pub fn cpu_secs(&self) -> Option<f64> {
        proc_cpu_secs(self.child.id()?)
    }

    /// Checks the session got every chunk, each once, `bytes` in all.
    pub async fn check_session(
        &self,
        session_id: &str,
        chunks: u64,
        bytes: u64,
    ) -> anyhow::Result<()> {
        let report = self.report().await?;
        let s = report
            .session(session_id)
            .with_context(|| format!("the emulator has no session {session_id}"))?;
        if s.chunks.len() as u64 != chunks || s.bytes_held() != bytes {
            bail!(
                "session {session_id}: the emulator holds {} chunks, {} bytes; expected {chunks}, {bytes}",
                s.chunks.len(),
                s.bytes_held()
            );
        }
        Ok(())
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}
