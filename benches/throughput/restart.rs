//! Restart of an interrupted upload: the real binary uploads a file, is
//! killed with SIGKILL once half its chunks are stored, and is started
//! again; measured from that spawn until the emulator has stored a chunk
//! more than before.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::{Child, Command};

use crate::clients::API_KEY;
use crate::emulator::EmulatorProc;

pub struct RestartResult {
    pub to_first_chunk: Duration,
    pub chunks_total: u64,
    pub stored_at_kill: u64,
    pub sessions: usize,
    pub duplicates: u64,
    pub total_secs: f64,
}

/// Dock-status polls a measurement waits on: fast, so the import's end is
/// seen within 10 ms. Goes into `write_config`'s `extra` (the `[upload]`
/// section).
pub const FAST_POLLS: &str = "poll_interval = \"10ms\"\npoll_interval_max = \"100ms\"\n";

/// Writes a config for `bin` pointing at `emu`, state in `dir/state`;
/// `extra` follows the `[upload]` section's keys (more keys, then sections).
pub fn write_config(
    dir: &Path,
    url: &str,
    chunk_size: u64,
    extra: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join("modelferry.toml");
    let toml = format!(
        r#"[platform]
base_url = "{url}"

[state]
dir = "{state}"

[upload]
chunk_size = {chunk_size}
parallel_chunks = 4
{extra}"#,
        state = dir.join("state").display(),
    );
    std::fs::write(&path, toml)?;
    Ok(path)
}

/// `bin upload -c config file`, output to `log`; `max_rate` (bytes per
/// second, 0 = none) through the environment.
fn spawn_upload(
    bin: &Path,
    config: &Path,
    file: &Path,
    log: &Path,
    max_rate: u64,
) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    Ok(Command::new(bin)
        .env("MODELFERRY__UPLOAD__MAX_RATE", max_rate.to_string())
        .arg("upload")
        .arg("-c")
        .arg(config)
        .arg(file)
        .arg("--no-progress")
        .env("MODELFERRY_API_KEY", API_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out))
        .kill_on_drop(true)
        .spawn()?)
}

/// Polls the emulator every `every` until `done(chunks stored)` or `limit`.
async fn poll_until(
    emu: &EmulatorProc,
    child: &mut Child,
    every: Duration,
    limit: Duration,
    done: impl Fn(u64) -> bool,
) -> anyhow::Result<u64> {
    let deadline = Instant::now() + limit;
    loop {
        let n = emu.chunks_stored().await?;
        if done(n) {
            return Ok(n);
        }
        if let Some(status) = child.try_wait()? {
            bail!("modelferry upload exited ({status}) with {n} chunks stored");
        }
        if Instant::now() > deadline {
            bail!("waited {limit:?}; {n} chunks stored");
        }
        tokio::time::sleep(every).await;
    }
}

pub async fn measure(
    bin: &Path,
    emu: &EmulatorProc,
    file: &Path,
    chunk_size: u64,
    dir: &Path,
    settle: Duration,
) -> anyhow::Result<RestartResult> {
    let config = write_config(dir, &emu.url, chunk_size, FAST_POLLS)?;
    let size = std::fs::metadata(file)?.len();
    let total = size.div_ceil(chunk_size);
    let before = emu.chunks_stored().await?;

    // The first upload is held to about two seconds for the file, so on a
    // fast, quiet machine it is still under way when half is stored (the
    // kill must land mid-upload); the restart, which is measured, is not.
    let first_rate = (size / 2).max(1 << 20);
    let mut first = spawn_upload(bin, &config, file, &dir.join("upload-1.log"), first_rate)?;
    let half = before + total.div_ceil(2);
    poll_until(
        emu,
        &mut first,
        Duration::from_millis(2),
        Duration::from_secs(300),
        |n| n >= half,
    )
    .await
    .context("waiting for half the chunks of the first upload")?;
    first.start_kill()?;
    tokio::time::timeout(Duration::from_secs(10), first.wait())
        .await
        .context("the killed upload did not exit")??;

    // Requests that were complete when the client died may still be
    // committed: wait until the count stands still.
    let mut stored = emu.chunks_stored().await?;
    let settle_until = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let n = emu.chunks_stored().await?;
        if n == stored || Instant::now() > settle_until {
            break;
        }
        stored = n;
    }
    if stored - before >= total {
        bail!("the first upload stored every chunk before it was killed; use a bigger --size");
    }

    crate::measure::wait_quiet(settle).await;
    let t0 = Instant::now();
    let mut second = spawn_upload(bin, &config, file, &dir.join("upload-2.log"), 0)?;
    poll_until(
        emu,
        &mut second,
        Duration::from_millis(2),
        Duration::from_secs(60),
        |n| n > stored,
    )
    .await
    .context("waiting for the restarted upload's first chunk")?;
    let to_first_chunk = t0.elapsed();
    let status = tokio::time::timeout(Duration::from_secs(300), second.wait())
        .await
        .context("the restarted upload did not finish within 300 s")??;
    let total_secs = t0.elapsed().as_secs_f64();
    if !status.success() {
        bail!(
            "the restarted upload failed ({status}); see {}",
            dir.join("upload-2.log").display()
        );
    }

    let report = emu.report().await?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sessions = report.sessions_for_file(&name);
    let last = sessions.last().context("no session for the file")?;
    if last.chunks.len() as u64 != total || !last.completed {
        bail!(
            "after the restart the session holds {} of {total} chunks (completed: {})",
            last.chunks.len(),
            last.completed
        );
    }
    Ok(RestartResult {
        to_first_chunk,
        chunks_total: total,
        stored_at_kill: stored - before,
        sessions: sessions.len(),
        duplicates: sessions.iter().map(|s| s.duplicates).sum(),
        total_secs,
    })
}
