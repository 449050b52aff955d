//! Startup with many finished jobs: a state database with `jobs` succeeded
//! jobs made through the library's `Store` API, then the real binary timed
//! from spawn: `upload` of a file already imported (answered from the
//! database), `status --json`, and `run` until it sends READY=1 to
//! `$NOTIFY_SOCKET` (when `run` is not available, that line says why).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use tokio::net::UnixDatagram;
use tokio::process::Command;

use modelferry::job::{
    ChunkAck, ChunkChecksum, FilingState, HashCheckpoint, NewJob, SessionRecord,
};
use modelferry::source::FileIdentity;
use modelferry::store::Store;

use crate::clients::API_KEY;
use crate::emulator::EmulatorProc;
use crate::restart::{write_config, FAST_POLLS};

/// Timed runs of each command (after one untimed warm-up).
const RUNS: usize = 3;

pub struct StartupResult {
    pub populate_secs: f64,
    pub db_bytes: u64,
    pub upload: Timing,
    pub status: Timing,
    /// Spawn to READY=1, or why it could not be measured.
    pub ready: Result<Timing, String>,
}

/// Median and slowest of the timed runs.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub median: Duration,
    pub max: Duration,
}

impl Timing {
    fn of(mut runs: Vec<Duration>) -> Timing {
        runs.sort();
        Timing {
            median: runs[runs.len() / 2],
            max: runs[runs.len() - 1],
        }
    }
}

/// Fills `dir/modelferry.db` with `jobs` succeeded jobs of `job_chunks`
/// chunks each: daemon jobs (filed) with made-up identities, and last the
/// job of `imported`, a real file, as `upload` leaves it.
async fn populate(
    dir: &Path,
    jobs: u64,
    job_chunks: u64,
    chunk_size: u64,
    watch_dir: &Path,
    imported: &Path,
) -> anyhow::Result<()> {
    let store = Store::open(dir.to_path_buf()).await?;
    let now = SystemTime::now();
    let real = FileIdentity::of_path(imported)?;
    for i in 0..jobs {
        let last = i + 1 == jobs;
        let new = if last {
            NewJob {
                path: imported.to_path_buf(),
                identity: real,
                file_context: "model".into(),
                is_adapter: false,
                chunk_size,
                watch_dir: None,
            }
        } else {
            NewJob {
                path: watch_dir.join(format!("model-{i:05}.tar")),
                identity: FileIdentity {
                    dev: 1,
                    ino: 1_000_000 + i,
                    size: job_chunks * chunk_size,
                    mtime_ns: 1_700_000_000_000_000_000 + i as i64,
                },
                file_context: "model".into(),
                is_adapter: false,
                chunk_size,
                watch_dir: Some(watch_dir.to_path_buf()),
            }
        };
        let size = new.identity.size;
        let id = store.admit(&new).await?;
        let hold = store.hold(id).await?;
        let session = SessionRecord {
            session_id: format!("bench-session-{i:05}"),
            started_at: now,
            expires_at: Some(now + Duration::from_secs(600)),
        };
        store
            .start_session(id, &hold, &session, &format!("cm-bench-{i:05}"))
            .await?;
        let chunks = size.div_ceil(chunk_size);
        for idx in 0..chunks {
            let ack = ChunkAck {
                index: idx,
                size: chunk_size.min(size - idx * chunk_size),
                checksum: ChunkChecksum::Xxh3(i * 100_000 + idx),
            };
            let checkpoint = HashCheckpoint {
                chunks: idx + 1,
                state: vec![0x5a; 40],
            };
            store
                .ack_chunk(id, &hold, &session.session_id, &ack, Some(&checkpoint))
                .await?;
        }
        store
            .begin_complete(id, &hold, &format!("{:064x}", i))
            .await?;
        store
            .set_importing(id, &hold, &format!("ds-bench-{i:05}"), None)
            .await?;
        store.succeed(id, &hold, None).await?;
        hold.finished();
        store.release(hold).await;
        if !last {
            let dest = watch_dir.join("done").join(format!("model-{i:05}.tar"));
            store.plan_filing(id, None, Some(&dest)).await?;
            store.finish_filing(id, None, FilingState::Done).await?;
        }
    }
    Ok(())
}

fn command(bin: &Path, args: &[&str], config: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg(args[0])
        .arg("-c")
        .arg(config)
        .args(&args[1..])
        .env("MODELFERRY_API_KEY", API_KEY)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// Runs `bin args` to its end `RUNS + 1` times; times the last `RUNS`;
/// `check` sees the output of each.
async fn time_command(
    bin: &Path,
    args: &[&str],
    config: &Path,
    check: impl Fn(&std::process::Output) -> anyhow::Result<()>,
) -> anyhow::Result<Timing> {
    let mut runs = Vec::new();
    for run in 0..=RUNS {
        let t0 = Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(120),
            command(bin, args, config).output(),
        )
        .await
        .with_context(|| format!("modelferry {} took over 120 s", args.join(" ")))??;
        let took = t0.elapsed();
        check(&out).with_context(|| {
            format!(
                "modelferry {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
        if run > 0 {
            runs.push(took);
        }
    }
    Ok(Timing::of(runs))
}

/// Spawn of `run` to READY=1, `RUNS + 1` times (the first untimed); each
/// daemon is stopped with SIGTERM after READY.
async fn time_ready(
    bin: &Path,
    config: &Path,
    dir: &Path,
) -> anyhow::Result<Result<Timing, String>> {
    let mut runs = Vec::new();
    for run in 0..=RUNS {
        match ready_once(bin, config, dir, run).await? {
            Ok(d) if run > 0 => runs.push(d),
            Ok(_) => {}
            Err(why) => return Ok(Err(why)),
        }
    }
    Ok(Ok(Timing::of(runs)))
}

async fn ready_once(
    bin: &Path,
    config: &Path,
    dir: &Path,
    run: usize,
) -> anyhow::Result<Result<Duration, String>> {
    let sock_path = dir.join(format!("notify-{run}.sock"));
    let sock = UnixDatagram::bind(&sock_path)?;
    let log = dir.join(format!("run-{run}.log"));
    let out = std::fs::File::create(&log)?;
    let mut cmd = command(bin, &["run"], config);
    cmd.env("NOTIFY_SOCKET", &sock_path)
        .stdout(Stdio::from(out.try_clone()?))
        .stderr(Stdio::from(out));
    let t0 = Instant::now();
    let mut child = cmd.spawn()?;
    let limit = Duration::from_secs(60);
    let mut buf = vec![0u8; 4096];
    let outcome = loop {
        tokio::select! {
            r = sock.recv(&mut buf) => {
                let n = r?;
                let msg = String::from_utf8_lossy(&buf[..n]);
                if msg.lines().any(|l| l == "READY=1") {
                    break Ok(t0.elapsed());
                }
            }
            status = child.wait() => {
                let status = status?;
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                break Err(format!("`run` exited ({status}) before READY=1: {}", last.trim()));
            }
            _ = tokio::time::sleep_until((t0 + limit).into()) => {
                break Err(format!("`run` sent no READY=1 within {limit:?}"));
            }
        }
    };
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on the pid of our own child, which has not been
        // waited for yet (id() is Some), with a valid signal number.
        #[allow(unsafe_code)] // std can only SIGKILL a child.
        let _ = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        if tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .is_err()
        {
            child.start_kill()?;
            child.wait().await?;
            bail!(
                "`run` did not stop within 20 s of SIGTERM; see {}",
                log.display()
            );
        }
    }
    let _ = std::fs::remove_file(&sock_path);
    Ok(outcome)
}

pub async fn measure(
    bin: &Path,
    emu: &EmulatorProc,
    dir: &Path,
    jobs: u64,
    job_chunks: u64,
    chunk_size: u64,
) -> anyhow::Result<StartupResult> {
    for sub in ["drop", "done", "failed"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let imported = dir.join("already-imported.tar");
    std::fs::write(&imported, vec![7u8; 1 << 20])?;
    // Populated on tmpfs when there is one (each transaction of the Store is
    // fsynced; this is setup, not what is measured), then copied to disk.
    let scratch = match Path::new("/dev/shm").is_dir() {
        true => tempfile::Builder::new()
            .prefix("modelferry-bench-db-")
            .tempdir_in("/dev/shm")?,
        false => tempfile::Builder::new()
            .prefix("populate-")
            .tempdir_in(dir)?,
    };
    let t0 = Instant::now();
    let (sdir, wdir, imp) = (
        scratch.path().to_path_buf(),
        dir.join("drop"),
        imported.clone(),
    );
    populate(&sdir, jobs, job_chunks, chunk_size, &wdir, &imp).await?;
    let populate_secs = t0.elapsed().as_secs_f64();
    let state = dir.join("state");
    std::fs::DirBuilder::new().recursive(true).create(&state)?;
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    for name in ["modelferry.db", "modelferry.db-wal"] {
        let from = scratch.path().join(name);
        if from.exists() {
            std::fs::copy(&from, state.join(name))?;
        }
    }
    let db_bytes = std::fs::metadata(state.join("modelferry.db"))?.len();
    drop(scratch);

    let watch = format!(
        "{FAST_POLLS}\n[[watch]]\ndir = \"{d}/drop\"\ndone_dir = \"{d}/done\"\nfailed_dir = \"{d}/failed\"\n",
        d = dir.display()
    );
    let config = write_config(dir, &emu.url, chunk_size, &watch)?;
    let sessions_before = emu.report().await?.sessions.len();

    let want_model = format!("cm-bench-{:05}", jobs - 1);
    let imported_arg = imported.to_string_lossy().into_owned();
    let upload = time_command(
        bin,
        &["upload", &imported_arg, "--no-progress"],
        &config,
        |out| {
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() || stdout.trim() != want_model {
                bail!(
                    "exit {}, printed {:?}, want {want_model:?}",
                    out.status,
                    stdout.trim()
                );
            }
            Ok(())
        },
    )
    .await?;
    if emu.report().await?.sessions.len() != sessions_before {
        bail!(
            "`upload` of an imported file started a session instead of answering from the database"
        );
    }
    let status = time_command(bin, &["status", "--json"], &config, |out| {
        if !out.status.success() {
            bail!("exit {}", out.status);
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let n = v.as_array().map(Vec::len).unwrap_or(0) as u64;
        if n != jobs {
            bail!("listed {n} jobs, want {jobs}");
        }
        Ok(())
    })
    .await?;
    let ready = time_ready(bin, &config, dir).await?;
    Ok(StartupResult {
        populate_secs,
        db_bytes,
        upload,
        status,
        ready,
    })
}
