//! The transfer engine end to end: resuming a job recorded before chunk
//! checksums became XXH3, `upload.max_rate`, and a session too short for
//! the link.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use modelferry::platform::{ClientSettings, PlatformClient, StartRequest};
use modelferry::secret::Secret;
use modelferry::source::FileIdentity;
use modelferry_emulator::{EmulatorOptions, ImportStatus};
use sha2::{Digest, Sha256};

use crate::support::*;

const CHUNK: u64 = 64 * 1024;

/// The schema as migrations 1 and 2 left it (chunks carry a sha256 only),
/// made by the store's own migrations.
fn schema_v2() -> String {
    format!(
        "{}\nPRAGMA user_version = 2;",
        modelferry::store::MIGRATIONS[..2].concat()
    )
}

/// An `upload` job of `file` interrupted before the upgrade: a session on
/// the emulator holding chunks `0..acked`, recorded in a database of the
/// old schema with each chunk's sha256 (`bad` gets a wrong one) and no
/// saved file hash, so a resume must read them again and verify them.
async fn interrupted_old_job(env: &Env, file: &std::path::Path, acked: u64, bad: Option<u64>) {
    let data = std::fs::read(file).unwrap();
    let size = data.len() as u64;
    let total = size.div_ceil(CHUNK);
    let client = PlatformClient::new(
        &ClientSettings {
            base_url: reqwest::Url::parse(&env.emu.base_url()).unwrap(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
        },
        Secret::new(API_KEY),
    )
    .unwrap();
    let name = file_name(file);
    let info = client
        .start_session(&StartRequest {
            file_context: "model".into(),
            total_chunks: total,
            file_extension: "tar".into(),
            file_name: name.clone(),
            file_size: size,
            is_adapter: false,
        })
        .await
        .unwrap();
    let sid = info.session_id.as_str().to_string();
    let chunk = |i: u64| &data[(i * CHUNK) as usize..((i + 1) * CHUNK).min(size) as usize];
    for i in 0..acked {
        client
            .upload_chunk(
                &info.session_id,
                i,
                &name,
                bytes::Bytes::copy_from_slice(chunk(i)),
            )
            .await
            .unwrap();
    }

    std::fs::create_dir_all(env.db_path().parent().unwrap()).unwrap();
    let db = rusqlite::Connection::open(env.db_path()).unwrap();
    db.execute_batch(&schema_v2()).unwrap();
    let id = FileIdentity::of_path(file).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let expires = info
        .expires_at
        .unwrap()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    db.execute(
        "INSERT INTO jobs (id, path, file_name, dev, ino, size, mtime_ns, file_context, is_adapter, \
         chunk_size, chunks_total, state, session_id, session_started_at, session_expires_at, \
         sessions_started, model_id, created_at, updated_at, started_at) \
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, 'model', 0, ?7, ?8, 'uploading', ?9, ?10, ?11, 1, ?12, ?10, ?10, ?10)",
        rusqlite::params![
            file.to_str().unwrap(),
            name,
            id.dev as i64,
            id.ino as i64,
            id.size as i64,
            id.mtime_ns,
            CHUNK as i64,
            total as i64,
            sid,
            now,
            expires,
            info.model_id.map(|m| m.to_string()).unwrap_or_default(),
        ],
    )
    .unwrap();
    for i in 0..acked {
        let mut sha = hex::encode(Sha256::digest(chunk(i)));
        if Some(i) == bad {
            sha = "0".repeat(64);
        }
        db.execute(
            "INSERT INTO chunks (job_id, idx, size, sha256, acked_at) VALUES (1, ?1, ?2, ?3, ?4)",
            rusqlite::params![i as i64, chunk(i).len() as i64, sha, now],
        )
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_interrupted_before_the_checksum_change_resumes() {
    let env = Env::start(quick()).await;
    let file = env.path("old.tar");
    let sha = make_tar(&file, 10 * CHUNK as usize + 1000, 11);
    interrupted_old_job(&env, &file, 4, None).await;

    let r = env.upload(&file, &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report = env.report();
    assert_eq!(report.sessions.len(), 1, "the same session goes on");
    let s = &report.sessions[0];
    assert!(
        s.chunks.values().all(|c| c.times_received == 1),
        "acknowledged chunks are not sent again"
    );
    assert_eq!(s.assembled_sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(s.status, Some(ImportStatus::Success));
    let jobs = env.status_json().await;
    assert_eq!(
        jobs[0]["sha256"],
        sha.as_str(),
        "the whole-file hash is complete"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_chunk_whose_sha256_no_longer_matches_stops_the_resume() {
    let env = Env::start(quick()).await;
    let file = env.path("old.tar");
    make_tar(&file, 6 * CHUNK as usize, 12);
    interrupted_old_job(&env, &file, 3, Some(1)).await;

    let r = env.upload(&file, &[]).await;
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("chunk 1"), "{}", r.stderr);
    assert!(env.report().sessions[0].completed.eq(&false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rate_holds_for_an_upload_and_status_shows_it() {
    let env = Env::start(quick()).await;
    let file = env.path("slow.tar");
    let sha = make_tar(&file, 3 << 20, 13);
    let mut cmd = env.upload_cmd(&file, &[]);
    cmd.env("MODELFERRY__UPLOAD__MAX_RATE", "1MiB");
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(60), run(cmd))
        .await
        .expect("the upload ends");
    let took = t0.elapsed().as_secs_f64();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        env.report().sessions[0].assembled_sha256.as_deref(),
        Some(sha.as_str())
    );
    // 3 MiB at 1 MiB/s: 3 s less one 64 KiB burst, plus the process's
    // start, the session and the import (well under a second here).
    assert!(took >= 2.9, "too fast for 1 MiB/s: {took:.2} s");
    assert!(took <= 3.0 * 1.05 + 1.5, "too slow: {took:.2} s");

    let cfg = env.config.to_str().unwrap().to_string();
    let mut status = env.command(&["status", "-c", &cfg]);
    status.env("MODELFERRY__UPLOAD__MAX_RATE", "40MiB");
    let s = run(status).await;
    assert_eq!(s.code, 0, "{}", s.stderr);
    assert!(
        s.stdout
            .contains("upload rate limit (upload.max_rate): 40.00 MiB/s"),
        "{}",
        s.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_too_short_for_the_link_fails_the_job_after_the_second_expiry() {
    let env = Env::start(EmulatorOptions {
        session_ttl: Duration::from_secs(2),
        ..quick()
    })
    .await;
    let file = env.path("big.tar");
    make_tar(&file, 6 << 20, 14);
    let mut cmd = env.upload_cmd(&file, &[]);
    cmd.env("MODELFERRY__UPLOAD__MAX_RATE", "1MiB");
    let r = tokio::time::timeout(Duration::from_secs(60), run(cmd))
        .await
        .expect("the upload ends instead of starting over forever");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("unlikely to last until the file is sent"),
        "the second session is warned about: {}",
        r.stderr
    );
    let jobs = env.status_json().await;
    let error = jobs[0]["error"].as_str().unwrap();
    for part in [
        "sessions are too short for this link",
        "/s",
        "a session lasts 2s",
        "upload.parallel_chunks",
        "upload.max_rate",
        "a faster link",
    ] {
        assert!(error.contains(part), "{part:?} in {error}");
    }
    assert_eq!(env.report().sessions.len(), 2, "no third session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(unsafe_code)] // std can only SIGKILL a child.
async fn sighup_rereads_max_rate_and_the_gauge_shows_it() {
    let port = free_port();
    let env = Env::daemon_env(quick(), metrics_settings(port, ""), "").await;
    let d = env.daemon();
    wait_for_metric(port, "modelferry_upload_max_rate_bytes_per_second 0").await;

    let config = std::fs::read_to_string(&env.config).unwrap();
    let config = config.replacen(
        "parallel_files = 1\n",
        "parallel_files = 1\nmax_rate = \"2MiB\"\n",
        1,
    );
    std::fs::write(&env.config, config).unwrap();
    // SAFETY: kill(2) with the daemon's pid and a valid signal number.
    let rc = unsafe { libc::kill(d.pid() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0);
    wait_for_metric(port, "modelferry_upload_max_rate_bytes_per_second 2097152").await;

    d.sigterm();
    let r = d.finish().await;
    assert!(
        r.stderr.contains("upload.max_rate is now 2.00 MiB/s"),
        "{}",
        r.stderr
    );
}
