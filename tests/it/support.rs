//! Shared test support: an emulator on 127.0.0.1:0 in this process, a
//! scratch folder with a config pointing at it, and the real binary.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use modelferry_emulator::{EmulatorHandle, EmulatorOptions, Report};
use sha2::{Digest, Sha256};
use tokio::process::{Child, Command};

pub const API_KEY: &str = "kg-test-0f3a9c1e-7b2d-4e8f-secret-key";
pub const BIN: &str = env!("CARGO_BIN_EXE_modelferry");

/// An emulator that finishes an import on its first dock-status poll.
pub fn quick() -> EmulatorOptions {
    EmulatorOptions {
        import_polls: 1,
        ..EmulatorOptions::default()
    }
}

/// As [`quick`], with `ms` of latency on every request.
pub fn slow(ms: u64) -> EmulatorOptions {
    EmulatorOptions {
        latency: Duration::from_millis(ms),
        ..quick()
    }
}

/// One chunk in flight at a time: with [`slow`], an upload that is still
/// under way when a test acts on it.
pub fn one_chunk_at_a_time() -> Settings {
    Settings {
        parallel_chunks: 1,
        ..Settings::default()
    }
}

/// The size of a file whose upload can be cancelled mid-way: 48 chunks of
/// the default 64 KiB, one at a time, with `slow(150)` about 7 s.
pub const LONG_TAR: usize = 3 * 1024 * 1024;

/// Waits until job 1 has chunks stored, then `modelferry cancel 1`, which
/// must succeed; the instant just before the cancel was asked for.
pub async fn cancel_mid_upload(env: &Env) -> Instant {
    wait_until(Duration::from_secs(60), "chunks under way", || {
        env.report().chunk_posts_stored() >= 2
    })
    .await;
    let at = Instant::now();
    let r = cli(env, "cancel", &["1"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("cancelled"), "{}", r.stdout);
    at
}

/// Runs `modelferry CMD -c CONFIG ARGS...`.
pub async fn cli(env: &Env, cmd: &str, args: &[&str]) -> Run {
    let cfg = env.config.to_str().unwrap().to_string();
    let mut all = vec![cmd, "-c", cfg.as_str()];
    all.extend_from_slice(args);
    run(env.command(&all)).await
}

/// A JSON file (a receipt), parsed; a panic naming the file otherwise.
pub fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A loopback port nothing listens on (bound, then let go).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Settings serving metrics on `port` (loopback); `more` goes into the
/// `[telemetry]` section.
pub fn metrics_settings(port: u16, more: &str) -> Settings {
    Settings {
        extra: format!("[telemetry]\nmetrics_listen = \"127.0.0.1:{port}\"\n{more}\n"),
        ..Settings::default()
    }
}

/// `GET http://127.0.0.1:PORT/PATH` within 5 s: status and body, or `None`
/// when nothing answered.
pub async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// Polls `path` until it answers with `status`, within `limit`; the body.
pub async fn wait_for_status(port: u16, path: &str, status: u16, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Some((s, body)) = get(port, path).await {
            if s == status {
                return body;
            }
        }
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {path} to answer {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `/metrics` until it contains `want`, within 30 s; the exposition.
pub async fn wait_for_metric(port: u16, want: &str) -> String {
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Some((200, text)) = get(port, "/metrics").await {
            if text.contains(want) {
                return text;
            }
            last = Some(text);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {want:?} in /metrics: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub emu: EmulatorHandle,
    pub config: PathBuf,
}

pub struct Settings {
    pub chunk_size: u64,
    pub parallel_chunks: usize,
    pub parallel_files: usize,
    pub extra: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            chunk_size: 64 * 1024,
            parallel_chunks: 4,
            parallel_files: 1,
            extra: String::new(),
        }
    }
}

impl Env {
    pub async fn start(opts: EmulatorOptions) -> Env {
        Self::with(opts, Settings::default()).await
    }

    /// An env with drop folders, for the daemon; `extra` goes into the
    /// config after them (more sections).
    pub async fn daemon_env(opts: EmulatorOptions, mut s: Settings, watch_extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let w = watch_section(dir.path(), watch_extra);
        s.extra = format!(
            "[daemon]\nrescan_interval = \"1s\"\nshutdown_grace = \"5s\"\n{}\n{w}",
            s.extra
        );
        Self::in_dir(dir, opts, s).await
    }

    pub async fn with(opts: EmulatorOptions, s: Settings) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let s = Settings {
            extra: format!("[daemon]\nshutdown_grace = \"5s\"\n{}", s.extra),
            ..s
        };
        Self::in_dir(dir, opts, s).await
    }

    async fn in_dir(dir: tempfile::TempDir, opts: EmulatorOptions, s: Settings) -> Env {
        let emu = modelferry_emulator::start("127.0.0.1:0".parse().unwrap(), opts)
            .await
            .expect("emulator starts");
        let config = dir.path().join("modelferry.toml");
        let toml = format!(
            r#"
[platform]
base_url = "{base}"
connect_timeout = "2s"
request_timeout = "30s"

[state]
dir = "{state}"

[upload]
chunk_size = {cs}
parallel_chunks = {pc}
parallel_files = {pf}
retry_initial = "10ms"
retry_max = "200ms"
poll_interval = "20ms"
poll_interval_max = "100ms"

{extra}
"#,
            base = emu.base_url(),
            state = dir.path().join("state").display(),
            cs = s.chunk_size,
            pc = s.parallel_chunks,
            pf = s.parallel_files,
            extra = s.extra,
        );
        std::fs::write(&config, toml).unwrap();
        Env { dir, emu, config }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("state").join("modelferry.db")
    }

    /// The binary with the key in its environment.
    pub fn command(&self, args: &[&str]) -> Command {
        self.program(BIN, args)
    }

    /// Any program, with the key in its environment and output piped.
    pub fn program(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("MODELFERRY_API_KEY", API_KEY)
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    pub fn upload_cmd(&self, file: &Path, more: &[&str]) -> Command {
        let cfg = self.config.to_str().unwrap().to_string();
        let f = file.to_str().unwrap().to_string();
        let mut args = vec!["upload", "-c", cfg.as_str(), f.as_str()];
        args.extend_from_slice(more);
        self.command(&args)
    }

    pub async fn upload(&self, file: &Path, more: &[&str]) -> Run {
        run(self.upload_cmd(file, more)).await
    }

    pub async fn status_json(&self) -> Vec<serde_json::Value> {
        let cfg = self.config.to_str().unwrap().to_string();
        let r = run(self.command(&["status", "-c", &cfg, "--json"])).await;
        assert_eq!(r.code, 0, "status failed: {}", r.stderr);
        serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}: {}", r.stdout))
    }

    pub fn report(&self) -> Report {
        self.emu.report()
    }

    pub fn drop_dir(&self) -> PathBuf {
        self.dir.path().join("drop")
    }

    pub fn done_dir(&self) -> PathBuf {
        self.dir.path().join("done")
    }

    pub fn failed_dir(&self) -> PathBuf {
        self.dir.path().join("failed")
    }

    /// `modelferry run` on this env's config, output captured.
    pub fn daemon(&self) -> Proc {
        let cfg = self.config.to_str().unwrap().to_string();
        Proc::spawn(self.command(&["run", "-c", &cfg]))
    }

    /// Names in a folder, sorted.
    pub fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// A `[[watch]]` section for the env's drop, done and failed folders.
pub fn watch_section(dir: &Path, extra: &str) -> String {
    for sub in ["drop", "done", "failed"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    format!(
        r#"
[[watch]]
dir = "{d}/drop"
done_dir = "{d}/done"
failed_dir = "{d}/failed"
stable_for = "300ms"
{extra}
"#,
        d = dir.display()
    )
}

/// A running child whose output is drained while it runs, so a chatty
/// process never blocks on a full pipe.
pub struct Proc {
    child: Child,
    readers: Vec<tokio::task::JoinHandle<String>>,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd.spawn().expect("child starts");
        let mut readers = Vec::new();
        fn drain<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
            r: R,
        ) -> tokio::task::JoinHandle<String> {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut r = r;
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf).await;
                String::from_utf8_lossy(&buf).into_owned()
            })
        }
        readers.push(drain(child.stdout.take().expect("stdout piped")));
        readers.push(drain(child.stderr.take().expect("stderr piped")));
        Proc { child, readers }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("child is running")
    }

    /// SIGTERM, the way systemd stops the service.
    #[allow(unsafe_code)] // std can only SIGKILL a child.
    pub fn sigterm(&self) {
        let pid = self.child.id().expect("child is running") as libc::pid_t;
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM sent");
    }

    /// SIGKILL, the way a crash or an OOM kill ends the process.
    pub async fn kill9(mut self) -> Run {
        self.child.start_kill().expect("SIGKILL sent");
        let r = self.finish().await;
        assert_ne!(r.code, 0, "killed");
        r
    }

    /// Waits for the child to end and collects its output.
    pub async fn finish(mut self) -> Run {
        let status = tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .expect("child finishes within 120 s")
            .expect("wait");
        let mut out = Vec::new();
        for r in self.readers {
            out.push(r.await.unwrap_or_default());
        }
        let r = Run {
            code: status.code().unwrap_or(-1),
            stdout: out[0].clone(),
            stderr: out[1].clone(),
        };
        assert!(
            !r.all().contains(API_KEY),
            "the API key appeared in the output"
        );
        r
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs a command to its end, within a bounded time.
pub async fn run(mut cmd: Command) -> Run {
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("command finishes within 120 s")
        .expect("command starts");
    let r = Run::from(out);
    assert!(
        !r.all().contains(API_KEY),
        "the API key appeared in the output:\n{}",
        r.all()
    );
    r
}

/// Polls `cond` every 10 ms until it holds or `limit` passes.
pub async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A valid tar archive of about `size` bytes with pseudo-random content.
pub fn make_tar(path: &Path, size: usize, seed: u64) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0u8; size.saturating_sub(2048).max(1)];
    rng.fill(&mut data);
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "model/weights.bin", data.as_slice())
        .unwrap();
    let bytes = b.into_inner().unwrap();
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&bytes).unwrap();
    f.sync_all().unwrap();
    sha256_file(path)
}

pub fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

pub fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}
