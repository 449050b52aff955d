//! The end-to-end row: the `upload` command from spawn to exit, against a
//! sequential client doing the same steps (start, one chunk at a time on a
//! new connection, complete, a dock-status poll every 0.2 s), against an
//! emulator with the WAN latency that answers SUCCESS on its second poll.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;

use crate::clients::{post_chunk, read_at, start_session_at, API_KEY};
use crate::emulator::EmulatorProc;
use crate::restart::write_config;

#[derive(Debug, Clone)]
pub struct E2eResult {
    pub upload_secs: f64,
    pub sequential_secs: f64,
}

impl E2eResult {
    /// How many times faster `upload` was.
    pub fn speedup(&self) -> f64 {
        self.sequential_secs / self.upload_secs
    }
}

/// Both runs on `file`, in `dir`.
pub async fn measure(
    bin: &Path,
    emu: &EmulatorProc,
    file: &Path,
    chunk_size: u64,
    dir: &Path,
) -> anyhow::Result<E2eResult> {
    // The default poll intervals: the sequential client polls every 0.2 s.
    let config = write_config(dir, &emu.url, chunk_size, "")?;
    let size = std::fs::metadata(file)?.len();
    let limit = Duration::from_secs(120 + size / 1_000_000);
    let t0 = Instant::now();
    let out = tokio::time::timeout(
        limit,
        tokio::process::Command::new(bin)
            .arg("upload")
            .arg("-c")
            .arg(&config)
            .arg(file)
            .arg("--no-progress")
            .env("MODELFERRY_API_KEY", API_KEY)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("`upload` took too long")??;
    let upload_secs = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "`upload` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let t0 = Instant::now();
    tokio::time::timeout(limit, sequential(&emu.url, file, chunk_size))
        .await
        .context("the sequential client took too long")??;
    Ok(E2eResult {
        upload_secs,
        sequential_secs: t0.elapsed().as_secs_f64(),
    })
}

/// Start, one chunk at a time on a new connection, complete, poll every
/// 0.2 s until SUCCESS.
async fn sequential(url: &str, file: &Path, chunk_size: u64) -> anyhow::Result<()> {
    let size = std::fs::metadata(file)?.len();
    let total = size.div_ceil(chunk_size);
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bench.tar".into());
    let http = reqwest::Client::new();
    let body = serde_json::json!({
        "fileContext": "model", "totalChunks": total, "fileExtension": "tar",
        "fileName": name, "fileSize": size,
    });
    let sid = start_session_at(&http, url, &body).await?;
    let chunk_url = format!("{url}/api/public/files/session/{sid}");
    let f = std::fs::File::open(file)?;
    for index in 0..total {
        let offset = index * chunk_size;
        let len = chunk_size.min(size - offset) as usize;
        let buf = read_at(&f, offset, len)?;
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .tls_built_in_root_certs(false)
            .build()?;
        post_chunk(&fresh, &chunk_url, index, &name, Bytes::from(buf)).await?;
    }
    let done: serde_json::Value = http
        .post(format!("{chunk_url}/complete"))
        .header("x-api-key", API_KEY)
        .header("content-length", "0")
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let dock = ["dock-statusId", "dockstatusId", "dockStatusId"]
        .iter()
        .find_map(|k| done[*k].as_str())
        .with_context(|| format!("no dock status id in {done}"))?
        .to_string();
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let st: serde_json::Value = http
            .get(format!("{url}/api/public/dock-status/{dock}"))
            .header("x-api-key", API_KEY)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        match st["status"].as_str() {
            Some("SUCCESS") => return Ok(()),
            Some("IN_PROGRESS") | None => {}
            Some(other) => bail!("the import ended {other}"),
        }
    }
    bail!("no SUCCESS after 600 polls")
}
