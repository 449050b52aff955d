//! The three clients, each run in a child process of its own (`--row`):
//!
//! - **wire**: the practical ceiling. N workers take chunk numbers in turn,
//!   read the chunk with a positioned read and POST it over a shared
//!   connection pool; the same form as modelferry's client (`chunkNumber`,
//!   then the `file` part as application/octet-stream), no hashing, no
//!   state, no retries.
//! - **naive**: what the platform's curl sample does in a shell loop: one
//!   chunk at a time, read into memory, a new client and so a new connection
//!   per chunk.
//! - **modelferry**: `upload::Engine::run_job` with a real state database
//!   (WAL, synchronous=FULL) in a temporary folder, hashing, retries on.
//!
//! Each prints one [`RowResult`] as JSON on stdout.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use reqwest::multipart::{Form, Part};
use reqwest::Body;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use modelferry::config::UploadConfig;
use modelferry::job::{JobState, NewJob};
use modelferry::metrics::Metrics;
use modelferry::platform::{ClientSettings, PlatformClient};
use modelferry::secret::Secret;
use modelferry::source::FileIdentity;
use modelferry::store::Store;
use modelferry::upload::{Engine, JobProgress, Outcome};

use crate::measure::{peak_rss_kib, Mark, RowResult};
use crate::opts::{Opts, RowKind};

/// Any key works with the emulator's default options.
pub const API_KEY: &str = "modelferry-bench";

/// Entry point of a `--row` child: runs the row, prints its JSON line.
pub fn child_main(kind: RowKind, opts: &Opts) -> anyhow::Result<()> {
    let url = opts.url.clone().context("--row needs --url")?;
    let file = opts.file.clone().context("--row needs --file")?;
    let row = Row {
        url: url.trim_end_matches('/').to_string(),
        file,
        chunk_size: opts.chunk_size,
        workers: opts.workers.max(1),
        max_rate: opts.row_max_rate,
        dir: opts.dir.clone().unwrap_or_else(std::env::temp_dir),
    };
    // The same runtime as the modelferry binary's.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        match kind {
            RowKind::Wire => wire(&row).await,
            RowKind::Naive => naive(&row).await,
            RowKind::Modelferry => modelferry(&row).await,
        }
    })?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

struct Row {
    url: String,
    file: PathBuf,
    chunk_size: u64,
    workers: usize,
    /// upload.max_rate of the modelferry client; 0 = none.
    max_rate: u64,
    /// Where modelferry's state folder goes.
    dir: PathBuf,
}

impl Row {
    fn file_name(&self) -> String {
        self.file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bench.tar".into())
    }

    fn size(&self) -> anyhow::Result<u64> {
        Ok(std::fs::metadata(&self.file)
            .with_context(|| self.file.display().to_string())?
            .len())
    }

    fn chunk_url(&self, session_id: &str) -> String {
        format!("{}/api/public/files/session/{session_id}", self.url)
    }
}

/// Starts an import session with a plain JSON POST; returns its id.
async fn start_session(http: &reqwest::Client, row: &Row, size: u64) -> anyhow::Result<String> {
    let body = serde_json::json!({
        "fileContext": "model",
        "totalChunks": size.div_ceil(row.chunk_size),
        "fileExtension": "tar",
        "fileName": row.file_name(),
        "fileSize": size,
    });
    start_session_at(http, &row.url, &body).await
}

/// Starts an import session at `url` with the start request `body`.
pub(crate) async fn start_session_at(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> anyhow::Result<String> {
    let resp = http
        .post(format!("{url}/api/public/files/session/start"))
        .header("x-api-key", API_KEY)
        .json(body)
        .send()
        .await?;
    let status = resp.status();
    let answer: serde_json::Value = resp.json().await?;
    answer["sessionId"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("session start answered {status}: {answer}"))
}

/// POSTs one chunk as the form modelferry's client sends.
pub(crate) async fn post_chunk(
    http: &reqwest::Client,
    url: &str,
    index: u64,
    file_name: &str,
    data: Bytes,
) -> anyhow::Result<()> {
    let len = data.len() as u64;
    let part = Part::stream_with_length(Body::from(data), len)
        .file_name(file_name.to_string())
        .mime_str("application/octet-stream")?;
    let form = Form::new()
        .text("chunkNumber", index.to_string())
        .part("file", part);
    let resp = http
        .post(url)
        .header("x-api-key", API_KEY)
        .multipart(form)
        .send()
        .await
        .with_context(|| format!("chunk {index}"))?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        bail!(
            "chunk {index}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

pub(crate) fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

async fn wire(row: &Row) -> anyhow::Result<RowResult> {
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let size = row.size()?;
    let total = size.div_ceil(row.chunk_size);
    let session_id = start_session(&http, row, size).await?;
    let url: Arc<str> = row.chunk_url(&session_id).into();
    let name: Arc<str> = row.file_name().into();
    let file = Arc::new(File::open(&row.file)?);
    let next = Arc::new(AtomicU64::new(0));
    let chunk_size = row.chunk_size;

    let start = Mark::now();
    let mut workers = JoinSet::new();
    for _ in 0..row.workers {
        let (http, url, name, file, next) = (
            http.clone(),
            url.clone(),
            name.clone(),
            file.clone(),
            next.clone(),
        );
        workers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    return anyhow::Ok(());
                }
                let offset = index * chunk_size;
                let len = chunk_size.min(size - offset) as usize;
                let f = file.clone();
                let buf = tokio::task::spawn_blocking(move || read_at(&f, offset, len)).await??;
                post_chunk(&http, &url, index, &name, Bytes::from(buf)).await?;
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r??;
    }
    let window = start.until(&Mark::now());
    Ok(RowResult::chunks_only(size, window, session_id, total))
}

async fn naive(row: &Row) -> anyhow::Result<RowResult> {
    let size = row.size()?;
    let total = size.div_ceil(row.chunk_size);
    let session_id = start_session(&reqwest::Client::new(), row, size).await?;
    let url = row.chunk_url(&session_id);
    let name = row.file_name();
    let file = File::open(&row.file)?;

    let start = Mark::now();
    for index in 0..total {
        let offset = index * row.chunk_size;
        let len = row.chunk_size.min(size - offset) as usize;
        let buf = read_at(&file, offset, len)?;
        // A new client per chunk and no idle connections kept: every chunk
        // opens its own connection, as a curl per chunk does. Root
        // certificates are not loaded (plain http), so the row measures the
        // connections and the serial requests, not certificate parsing.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .tls_built_in_root_certs(false)
            .build()?;
        post_chunk(&http, &url, index, &name, Bytes::from(buf)).await?;
    }
    let window = start.until(&Mark::now());
    Ok(RowResult::chunks_only(size, window, session_id, total))
}

async fn modelferry(row: &Row) -> anyhow::Result<RowResult> {
    let state = tempfile::Builder::new()
        .prefix("row-state-")
        .tempdir_in(&row.dir)?;
    let store = Store::open(state.path().join("state")).await?;
    let identity = FileIdentity::of_path(&row.file)?;
    let new = NewJob {
        path: std::path::absolute(&row.file)?,
        identity,
        file_context: "model".into(),
        is_adapter: false,
        chunk_size: row.chunk_size,
        watch_dir: None,
    };
    let id = store.admit(&new).await?;
    let platform = PlatformClient::new(
        &ClientSettings {
            base_url: reqwest::Url::parse(&row.url)?,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(300),
        },
        Secret::new(API_KEY),
    )?;
    platform.set_max_rate(row.max_rate);
    // Defaults of the configuration, except polling: the emulator answers
    // SUCCESS at once, so a short interval keeps the import's tail short.
    let settings = UploadConfig {
        chunk_size: row.chunk_size,
        parallel_chunks: row.workers,
        parallel_files: 1,
        retry_initial: Duration::from_secs(1),
        retry_max: Duration::from_secs(60),
        poll_interval: Duration::from_millis(10),
        poll_interval_max: Duration::from_millis(100),
        session_margin: Duration::from_secs(60),
        preflight: true,
        dedupe: true,
        max_rate: row.max_rate,
    };
    let engine = Engine::new(store.clone(), platform, settings, Arc::new(Metrics::new()));
    let (tx, rx) = watch::channel(JobProgress::queued(identity.size));
    let window = tokio::spawn(upload_window(rx));

    let begin = Mark::now();
    let outcome = engine
        .run_job(id, CancellationToken::new(), Arc::new(tx))
        .await?;
    let end = Mark::now();
    let (total_secs, total_cpu_secs) = begin.until(&end);
    if !matches!(outcome, Outcome::Succeeded { .. }) {
        bail!("modelferry's upload did not succeed: {outcome:?}");
    }
    let (first, last) = tokio::time::timeout(Duration::from_secs(10), window)
        .await
        .context("the progress watcher did not end")??;
    let (first, last) = (
        first.context("never saw the job uploading")?,
        last.context("never saw the upload end")?,
    );
    let (secs, cpu_secs) = first.until(&last);
    let job = store.job(id).await?;
    Ok(RowResult {
        bytes: identity.size,
        secs,
        cpu_secs,
        peak_rss_kib: peak_rss_kib(),
        total_secs,
        total_cpu_secs,
        session_id: job.session.map(|s| s.session_id).unwrap_or_default(),
        chunks: job.chunks_total,
    })
}

/// The chunk phase of a job as its progress shows it: from the moment the
/// job is `uploading` (the session is started and committed) to the moment
/// it is past it (every chunk acknowledged and committed).
async fn upload_window(mut rx: watch::Receiver<JobProgress>) -> (Option<Mark>, Option<Mark>) {
    let (mut first, mut last) = (None, None);
    loop {
        let state = rx.borrow_and_update().state;
        if first.is_none() && state == JobState::Uploading {
            first = Some(Mark::now());
        }
        if first.is_some()
            && last.is_none()
            && !matches!(state, JobState::Queued | JobState::Uploading)
        {
            last = Some(Mark::now());
        }
        if rx.changed().await.is_err() {
            return (first, last);
        }
    }
}

/// What a row's child process gets beyond the defaults.
#[derive(Debug, Default, Clone)]
pub struct ChildLaunch {
    /// `taskset -c CPU`: pinned to this CPU list.
    pub cpu: Option<String>,
    /// upload.max_rate (modelferry rows); 0 = none.
    pub max_rate: u64,
}

/// Spawns this binary as a `--row` child and reads its result.
pub async fn run_child(
    kind: RowKind,
    url: &str,
    file: &Path,
    chunk_size: u64,
    workers: usize,
    dir: &Path,
    launch: &ChildLaunch,
) -> anyhow::Result<RowResult> {
    let exe = std::env::current_exe()?;
    let kind_name = match kind {
        RowKind::Wire => "wire",
        RowKind::Naive => "naive",
        RowKind::Modelferry => "modelferry",
    };
    let mut cmd = match &launch.cpu {
        Some(cpu) => {
            let mut c = tokio::process::Command::new("taskset");
            c.args(["-c", cpu]).arg(exe);
            c
        }
        None => tokio::process::Command::new(exe),
    };
    cmd.args(["--row", kind_name, "--url", url])
        .args(["--row-max-rate", &launch.max_rate.to_string()])
        .arg("--file")
        .arg(file)
        .args(["--chunk-size", &chunk_size.to_string()])
        .args(["--workers", &workers.to_string()])
        .arg("--dir")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    // Bounded: even the naive client moves more than 2 MB/s on loopback.
    let size = std::fs::metadata(file)?.len();
    let limit = Duration::from_secs(120 + size / 2_000_000);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .with_context(|| format!("{kind_name} row took longer than {limit:?}"))??;
    if !out.status.success() {
        bail!("{kind_name} row failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .last()
        .with_context(|| format!("{kind_name} row printed nothing"))?;
    serde_json::from_str(line).with_context(|| format!("{kind_name} row printed {line:?}"))
}
