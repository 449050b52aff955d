//! Managing jobs: `status` filters, `cancel` and `retry` of daemon jobs, a
//! failed file moved back by hand, `prune`, and `check`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// The daemon with its log in a file, so a test can wait for a line.
struct Daemon {
    child: tokio::process::Child,
    log: PathBuf,
}

impl Daemon {
    fn start(env: &Env) -> Daemon {
        Self::start_with(env, &[])
    }

    /// As `start`, with `vars` in the daemon's environment.
    fn start_with(env: &Env, vars: &[(&str, &str)]) -> Daemon {
        let log = env.path("daemon.log");
        let file = std::fs::File::create(&log).unwrap();
        let cfg = env.config.to_str().unwrap().to_string();
        let mut cmd = env.command(&["run", "-c", &cfg]);
        cmd.envs(vars.iter().copied());
        cmd.stdout(Stdio::null()).stderr(Stdio::from(file));
        Daemon {
            child: cmd.spawn().expect("daemon starts"),
            log,
        }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has `count` lines with `what`.
    async fn wait_log(&self, what: &str, count: usize) {
        let start = Instant::now();
        while self.text().matches(what).count() < count {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "timed out waiting for {count} x {what:?} in:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(mut self) -> String {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        let text = self.text();
        assert!(!text.contains(API_KEY), "the API key appeared in the log");
        text
    }
}

async fn status(env: &Env, args: &[&str]) -> (i32, Vec<Value>) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let r = cli(env, "status", &all).await;
    let jobs = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("status --json ({e}): {}{}", r.stdout, r.stderr));
    (r.code, jobs)
}

async fn wait_for(path: &Path) {
    wait_until(Duration::from_secs(60), &path.display().to_string(), || {
        path.exists()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_filters_by_id_state_time_and_count_newest_first() {
    let env = Env::start(quick()).await;
    for (name, seed) in [("a.tar", 1), ("b.tar", 2)] {
        let f = env.path(name);
        make_tar(&f, 100_000, seed);
        assert_eq!(env.upload(&f, &["--quiet"]).await.code, 0);
    }
    let bad = env.path("c.tar");
    std::fs::write(&bad, vec![7u8; 50_000]).unwrap();
    assert_eq!(env.upload(&bad, &["--quiet"]).await.code, 1);

    let (code, all) = status(&env, &[]).await;
    assert_eq!(code, 0);
    let ids: Vec<i64> = all.iter().map(|j| j["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, [3, 2, 1], "newest first");
    for key in [
        "id",
        "path",
        "state",
        "chunks_done",
        "chunks_total",
        "bytes_total",
        "session_id",
        "model_id",
        "dock_status_id",
        "error",
        "next_retry_at",
    ] {
        assert!(all[0].get(key).is_some(), "{key} in {}", all[0]);
    }
    let (_, failed) = status(&env, &["--state", "failed"]).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["id"], 3);
    let (_, two) = status(
        &env,
        &["--state", "failed", "--state", "succeeded", "--limit", "2"],
    )
    .await;
    assert_eq!(two.len(), 2);
    let (code, one) = status(&env, &["1"]).await;
    assert_eq!(code, 0);
    assert!(one.len() == 1 && one[0]["id"] == 1, "an array also for ids");
    let (_, recent) = status(&env, &["--since", "1h"]).await;
    assert_eq!(recent.len(), 3);
    // An unknown id: what exists is shown, the rest named, exit 2.
    let (code, some) = status(&env, &["2", "99"]).await;
    assert_eq!(code, 2);
    assert_eq!(some.len(), 1);
    let r = cli(&env, "status", &["--state", "done"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("cancelled"),
        "the states are listed: {}",
        r.stderr
    );
    let r = cli(&env, "status", &["--state", "failed"]).await;
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("c.tar") && !r.stdout.contains("a.tar"),
        "{}",
        r.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_daemon_job_files_it_and_retry_imports_it_as_a_new_job() {
    let env = Env::daemon_env(slow(150), one_chunk_at_a_time(), "").await;
    let daemon = Daemon::start(&env);
    let name = "long.tar";
    let sha = make_tar(&env.drop_dir().join(name), LONG_TAR, 3);
    let cancelled_at = cancel_mid_upload(&env).await;
    let receipt = env.failed_dir().join("long.tar.error.json");
    daemon.wait_log(" filed job_id=", 1).await;
    assert!(cancelled_at.elapsed() < Duration::from_secs(5));
    let r = read_json(&receipt);
    assert_eq!(r["stage"], "cancelled");
    assert_eq!(r["job_id"], 1);
    assert!(env.failed_dir().join(name).exists());
    assert!(!env.drop_dir().join(name).exists());
    // Filed after the job's work was dropped: nothing more is sent.
    let sent = env.report().requests;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert_eq!(env.report().requests, sent, "requests after the cancel");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sent.complete, 0);

    // Retry: back into the drop folder, the receipt gone, a new job.
    let r = cli(&env, "retry", &["1"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!receipt.exists(), "the error receipt is removed");
    let done = env.done_dir().join(name);
    wait_for(&done).await;
    let (_, jobs) = status(&env, &[]).await;
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        (jobs[0]["id"].as_i64(), jobs[0]["state"].as_str()),
        (Some(2), Some("succeeded"))
    );
    assert_eq!(jobs[1]["state"], "cancelled");
    let report = env.report();
    let completed: Vec<_> = report.sessions.iter().filter(|s| s.completed).collect();
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0].assembled_sha256.as_deref(), Some(sha.as_str()));
    // A succeeded job cannot be retried, nor an unknown one.
    let r = cli(&env, "retry", &["2"]).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("succeeded"), "{}", r.stderr);
    assert_eq!(cli(&env, "retry", &["77"]).await.code, 2);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_file_is_imported_again_when_retried_or_moved_back_by_hand() {
    let env = Env::daemon_env(quick(), Settings::default(), "").await;
    let daemon = Daemon::start(&env);
    let name = "bad.tar";
    std::fs::write(env.drop_dir().join(name), vec![0x5au8; 100_000]).unwrap();
    let receipt = env.failed_dir().join("bad.tar.error.json");
    // Filed (and recorded so), not only moved: then `retry` takes it.
    daemon.wait_log(" filed job_id=", 1).await;
    // Random bytes: pre-flight fails the job before any session, each time.
    let sessions = |env: &Env| env.report().sessions_for_file(name).len();
    assert_eq!(sessions(&env), 0);

    // `retry` of a daemon failure: moved back, imported as job 2.
    let r = cli(&env, "retry", &["1"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    daemon.wait_log(" filed job_id=", 2).await;
    assert_eq!(read_json(&receipt)["job_id"], 2);

    // Moved back by hand: job 3.
    std::fs::remove_file(&receipt).unwrap();
    std::fs::rename(env.failed_dir().join(name), env.drop_dir().join(name)).unwrap();
    daemon.wait_log(" filed job_id=", 3).await;
    assert_eq!(read_json(&receipt)["job_id"], 3);
    let (_, jobs) = status(&env, &[]).await;
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j["state"] == "failed"));
    assert_eq!(sessions(&env), 0);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_of_an_upload_job_says_to_run_the_upload_again() {
    let env = Env::start(quick()).await;
    let bad = env.path("bad.tar");
    std::fs::write(&bad, vec![1u8; 50_000]).unwrap();
    assert_eq!(env.upload(&bad, &["--quiet"]).await.code, 1);
    let r = cli(&env, "retry", &["1"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("run the same upload again"),
        "{}",
        r.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_prune_neither_a_rerun_nor_a_redrop_imports_the_file_again() {
    let env = Env::daemon_env(quick(), Settings::default(), "").await;
    // One by `upload`, one through the drop folder.
    let up = env.path("up.tar");
    make_tar(&up, 200_000, 5);
    assert_eq!(env.upload(&up, &["--quiet"]).await.code, 0);
    let daemon = Daemon::start(&env);
    let dropped = env.drop_dir().join("drop.tar");
    make_tar(&dropped, 200_000, 6);
    let done = env.done_dir().join("drop.tar");
    wait_for(&env.done_dir().join("drop.tar.receipt.json")).await;
    let sessions = env.report().sessions.len();
    assert_eq!(sessions, 2);

    // state.retain (90d) keeps them; --older-than forgets them.
    let r = cli(&env, "prune", &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("pruned 0"), "{}", r.stdout);
    let r = cli(&env, "prune", &["--older-than", "1ms"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("pruned 2"), "{}", r.stdout);
    let (_, jobs) = status(&env, &[]).await;
    assert!(jobs.is_empty(), "pruned jobs are not listed: {jobs:?}");
    let conn = rusqlite::Connection::open(env.db_path()).unwrap();
    let chunks: i64 = conn
        .query_row("SELECT COUNT(*) FROM chunks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(chunks, 0, "chunk rows go");
    let kept: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM jobs WHERE pruned = 1 AND sha256 IS NOT NULL AND model_id IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, 2, "what recognises the files stays");
    drop(conn);
    assert_eq!(cli(&env, "retry", &["1"]).await.code, 2, "pruned: unknown");

    // A re-run of the upload: already imported.
    let r = env.upload(&up, &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("already imported"), "{}", r.stderr);
    // A re-drop of the imported file: recognised, logged, not imported.
    std::fs::rename(&done, &dropped).unwrap();
    daemon.wait_log("file not imported", 1).await;
    let log = daemon.stop().await;
    assert!(log.contains("already imported as job 2"), "{log}");
    assert_eq!(env.report().sessions.len(), sessions, "nothing sent again");
    assert!(dropped.exists(), "the file is left where it is");
}

/// Rows in `chunks` for job `id`.
fn chunk_rows(env: &Env, id: i64) -> i64 {
    rusqlite::Connection::open(env.db_path())
        .unwrap()
        .query_row("SELECT COUNT(*) FROM chunks WHERE job_id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_prunes_finished_jobs_older_than_retain_when_it_starts() {
    let env = Env::daemon_env(quick(), Settings::default(), "").await;
    let up = env.path("up.tar");
    make_tar(&up, 200_000, 12);
    assert_eq!(env.upload(&up, &["--quiet"]).await.code, 0);
    assert!(chunk_rows(&env, 1) > 0, "the upload recorded its chunks");

    // The daemon prunes at its start (then daily); retain is 1 ms, so the
    // job just finished is already old enough.
    let daemon = Daemon::start_with(&env, &[("MODELFERRY__STATE__RETAIN", "1ms")]);
    daemon.wait_log("pruned finished jobs", 1).await;
    let (_, jobs) = status(&env, &[]).await;
    assert!(jobs.is_empty(), "pruned jobs are not listed: {jobs:?}");
    assert_eq!(chunk_rows(&env, 1), 0, "its chunk rows go");
    let log = daemon.stop().await;
    assert!(log.contains("pruned=1"), "{log}");

    // What recognises the file stays: a re-run is already imported.
    let r = env.upload(&up, &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("already imported"), "{}", r.stderr);
    assert_eq!(env.report().sessions.len(), 1, "nothing sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_still_finds_the_bytes_of_a_pruned_import() {
    let env = Env::start(quick()).await;
    let first = env.path("first.tar");
    make_tar(&first, 120_000, 11);
    assert_eq!(env.upload(&first, &["--quiet"]).await.code, 0);
    let r = cli(&env, "prune", &["--older-than", "1ms"]).await;
    assert!(r.stdout.contains("pruned 1"), "{}", r.stdout);
    // The same bytes under another name and inode: a duplicate of job 1.
    let copy = env.path("copy.tar");
    std::fs::copy(&first, &copy).unwrap();
    let r = env.upload(&copy, &["--json"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let receipt: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(receipt["duplicate_of"], 1, "{receipt}");
    assert_eq!(receipt["chunks"], 0, "{receipt}");
    assert_eq!(env.report().sessions.len(), 1, "nothing sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_zero_never_prunes() {
    let env = Env::start(quick()).await;
    // The generated config has its own [state]; retain comes from the environment.
    let f = env.path("m.tar");
    make_tar(&f, 50_000, 7);
    assert_eq!(env.upload(&f, &["--quiet"]).await.code, 0);
    let cfg = env.config.to_str().unwrap().to_string();
    let mut cmd = env.command(&["prune", "-c", &cfg]);
    cmd.env("MODELFERRY__STATE__RETAIN", "0");
    let r = run(cmd).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("never"), "{}", r.stdout);
    assert_eq!(status(&env, &[]).await.1.len(), 1);
    let r = cli(&env, "prune", &["--older-than", "soon"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--older-than"), "{}", r.stderr);
}
