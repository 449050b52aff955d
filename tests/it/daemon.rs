//! `modelferry run` end to end: drop folders, receipts, crashes, signals.

use std::time::Duration;

use modelferry_emulator::{EmulatorOptions, ImportStatus};

use crate::support::*;

/// Waits for the daemon to stop after SIGTERM and returns its output.
async fn stop(daemon: Proc) -> Run {
    daemon.sigterm();
    daemon.finish().await
}

/// Every file imported exactly once, with identical content.
fn imported_once(env: &Env, name: &str, sha: &str) {
    let report = env.report();
    let sessions = report.sessions_for_file(name);
    let completed: Vec<_> = sessions.iter().filter(|s| s.completed).collect();
    assert_eq!(completed.len(), 1, "{name} imported exactly once");
    assert_eq!(
        completed[0].assembled_sha256.as_deref(),
        Some(sha),
        "{name} content"
    );
    assert_eq!(completed[0].status, Some(ImportStatus::Success));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_folder_takes_only_finished_matching_files_and_files_them_with_receipts() {
    let env = Env::daemon_env(quick(), Settings::default(), "").await;
    let drop = env.drop_dir();
    // Files that must never be taken.
    make_tar(&drop.join(".hidden.tar"), 5000, 1);
    make_tar(&drop.join("upload.tar.part"), 5000, 2);
    make_tar(&drop.join("partial.tar.tmp"), 5000, 3);
    std::fs::write(drop.join("notes.txt"), "not a tarball").unwrap();
    let outside = env.path("outside.tar");
    make_tar(&outside, 5000, 4);
    std::os::unix::fs::symlink(&outside, drop.join("link.tar")).unwrap();
    std::fs::create_dir(drop.join("sub.tar")).unwrap();
    make_tar(&drop.join("sub.tar").join("inner.tar"), 5000, 5);

    let daemon = env.daemon();

    // tmp-then-rename, as rsync and careful writers do.
    let tmp = drop.join(".renamed.tar.XXXXXX");
    let renamed_sha = make_tar(&tmp, 300_000, 6);
    std::fs::rename(&tmp, drop.join("renamed.tar")).unwrap();
    // An empty file.
    std::fs::write(drop.join("empty.tar"), b"").unwrap();
    // A file written slowly in pieces, each gap shorter than stable_for.
    let staged = env.path("staged.tar");
    let slow_sha = make_tar(&staged, 400_000, 7);
    let bytes = std::fs::read(&staged).unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::File::create(drop.join("slow.tar")).unwrap();
        for piece in bytes.chunks(50_000) {
            f.write_all(piece).unwrap();
            f.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let done = env.done_dir();
    let failed = env.failed_dir();
    wait_until(Duration::from_secs(60), "files filed", || {
        done.join("slow.tar.receipt.json").exists()
            && done.join("renamed.tar.receipt.json").exists()
            && failed.join("empty.tar.error.json").exists()
    })
    .await;
    let out = stop(daemon).await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    assert_eq!(sha256_file(&done.join("slow.tar")), slow_sha);
    assert_eq!(sha256_file(&done.join("renamed.tar")), renamed_sha);
    imported_once(&env, "slow.tar", &slow_sha);
    imported_once(&env, "renamed.tar", &renamed_sha);

    let receipt = read_json(&done.join("slow.tar.receipt.json"));
    let s = &env.report().sessions_for_file("slow.tar")[0].clone();
    assert_eq!(receipt["model_id"], s.model_id.as_str());
    assert_eq!(receipt["session_id"], s.session_id.as_str());
    assert_eq!(
        receipt["dock_status_id"],
        s.dock_status_id.clone().unwrap().as_str()
    );
    assert_eq!(receipt["sha256"], slow_sha.as_str());
    assert_eq!(receipt["size"], bytes.len() as u64);
    assert_eq!(receipt["chunks"], s.start.total_chunks);
    assert_eq!(receipt["status"], "SUCCESS");
    for k in ["started_at", "finished_at"] {
        assert!(receipt[k].is_string(), "{k}");
    }

    assert!(
        failed.join("empty.tar").exists(),
        "the empty file went to failed_dir"
    );
    let err = read_json(&failed.join("empty.tar.error.json"));
    assert!(err["error"].as_str().unwrap().contains("empty"), "{err}");
    for k in ["stage", "http_status", "platform_message", "model_id"] {
        assert!(err.get(k).is_some(), "error receipt has {k}");
    }

    let left = Env::names(&drop);
    for name in [
        ".hidden.tar",
        "upload.tar.part",
        "partial.tar.tmp",
        "notes.txt",
        "link.tar",
        "sub.tar",
    ] {
        assert!(
            left.contains(&name.to_string()),
            "{name} left alone: {left:?}"
        );
        assert!(
            env.report().sessions_for_file(name).is_empty(),
            "{name} never uploaded"
        );
    }
    assert!(env.report().sessions_for_file("inner.tar").is_empty());
    assert!(env.report().sessions_for_file("empty.tar").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_files_survive_repeated_sigkills_and_are_imported_once_each() {
    let env = Env::daemon_env(
        slow(10),
        Settings {
            parallel_files: 3,
            ..Settings::default()
        },
        "",
    )
    .await;
    let mut shas = Vec::new();
    for (i, name) in ["a.tar", "b.tar", "c.tar"].iter().enumerate() {
        let staged = env.path(name);
        let sha = make_tar(&staged, 3 * 1024 * 1024, 10 + i as u64);
        std::fs::rename(&staged, env.drop_dir().join(name)).unwrap();
        shas.push((name.to_string(), sha));
    }
    let total: u64 = 3 * (3 * 1024 * 1024u64).div_ceil(64 * 1024);
    for stop_at in [15u64, 45, 90] {
        let d = env.daemon();
        wait_until(Duration::from_secs(60), "chunks to arrive", || {
            env.report().chunk_posts_stored() >= stop_at
        })
        .await;
        d.kill9().await;
    }
    assert!(
        env.report().chunk_posts_stored() < total,
        "really interrupted"
    );
    let d = env.daemon();
    let done = env.done_dir();
    wait_until(Duration::from_secs(90), "all three filed", || {
        shas.iter()
            .all(|(n, _)| done.join(format!("{n}.receipt.json")).exists())
    })
    .await;
    let out = stop(d).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    for (name, sha) in &shas {
        imported_once(&env, name, sha);
        assert_eq!(
            env.report().sessions_for_file(name).len(),
            1,
            "{name}: one session across kills"
        );
        assert_eq!(&sha256_file(&done.join(name)), sha);
    }
    assert_eq!(Env::names(&env.drop_dir()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_0_within_the_grace_period_and_the_session_resumes() {
    let env = Env::daemon_env(slow(20), Settings::default(), "").await;
    let staged = env.path("t.tar");
    let sha = make_tar(&staged, 4 * 1024 * 1024, 20);
    std::fs::rename(&staged, env.drop_dir().join("t.tar")).unwrap();
    let d = env.daemon();
    wait_until(Duration::from_secs(60), "upload under way", || {
        env.report().chunk_posts_stored() >= 5
    })
    .await;
    let started = std::time::Instant::now();
    let out = stop(d).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(5 + 3),
        "within the grace period"
    );
    let jobs = env.status_json().await;
    assert_eq!(jobs[0]["state"], "uploading");

    let d = env.daemon();
    wait_until(Duration::from_secs(60), "filed", || {
        env.done_dir().join("t.tar.receipt.json").exists()
    })
    .await;
    stop(d).await;
    assert_eq!(
        env.report().sessions_for_file("t.tar").len(),
        1,
        "same session resumed"
    );
    imported_once(&env, "t.tar", &sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_keeps_files_in_place_says_why_and_recovers() {
    let env = Env::daemon_env(
        EmulatorOptions {
            api_key: Some("the-right-key".into()),
            ..quick()
        },
        Settings::default(),
        "",
    )
    .await;
    let staged = env.path("k.tar");
    let sha = make_tar(&staged, 200_000, 30);
    std::fs::rename(&staged, env.drop_dir().join("k.tar")).unwrap();
    let d = env.daemon();
    wait_until(
        Duration::from_secs(30),
        "the platform to refuse the key",
        || env.report().auth_rejections >= 2,
    )
    .await;
    let jobs = env.status_json().await;
    assert!(
        jobs[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("API key rejected"),
        "status says why: {}",
        jobs[0]
    );
    assert_ne!(jobs[0]["state"], "failed");
    assert!(
        env.drop_dir().join("k.tar").exists(),
        "nothing left the drop folder"
    );
    assert!(Env::names(&env.failed_dir()).is_empty());

    env.emu.set_api_key(Some(API_KEY.into()));
    wait_until(Duration::from_secs(30), "uploads to resume", || {
        env.done_dir().join("k.tar.receipt.json").exists()
    })
    .await;
    let out = stop(d).await;
    assert!(
        out.stderr.contains("rejected the API key"),
        "the log says why: {}",
        out.stderr
    );
    imported_once(&env, "k.tar", &sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_files_dropped_at_once_are_each_imported_once() {
    let env = Env::daemon_env(
        quick(),
        Settings {
            parallel_files: 8,
            ..Settings::default()
        },
        "",
    )
    .await;
    const N: usize = 2000;
    let staging = env.path("staging");
    std::fs::create_dir(&staging).unwrap();
    // Distinct content per file: copies of one file would be duplicates
    // (dedupe), imported once.
    for i in 0..N {
        make_tar(
            &staging.join(format!("m{i:04}.tar")),
            3000,
            40_000 + i as u64,
        );
    }
    let d = env.daemon();
    // Moved in one burst while the daemon watches.
    for i in 0..N {
        let n = format!("m{i:04}.tar");
        std::fs::rename(staging.join(&n), env.drop_dir().join(&n)).unwrap();
    }
    let done = env.done_dir();
    wait_until(Duration::from_secs(300), "every file filed", || {
        std::fs::read_dir(&done).map(|r| r.count()).unwrap_or(0) >= 2 * N
    })
    .await;
    stop(d).await;
    let report = env.report();
    assert_eq!(report.sessions.len(), N, "one session per file");
    assert!(report
        .sessions
        .iter()
        .all(|s| s.completed && s.status == Some(ImportStatus::Success)));
    let mut names: Vec<&str> = report
        .sessions
        .iter()
        .map(|s| s.start.file_name.as_str())
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), N, "no file imported twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_name_in_done_is_never_overwritten() {
    let env = Env::daemon_env(quick(), Settings::default(), "").await;
    std::fs::write(env.done_dir().join("x.tar"), b"an older import").unwrap();
    std::fs::write(env.done_dir().join("x.tar.receipt.json"), b"{}").unwrap();
    let staged = env.path("x.tar");
    let sha = make_tar(&staged, 100_000, 50);
    std::fs::rename(&staged, env.drop_dir().join("x.tar")).unwrap();
    let d = env.daemon();
    wait_until(Duration::from_secs(30), "filed under another name", || {
        env.done_dir().join("x-1.tar.receipt.json").exists()
    })
    .await;
    stop(d).await;
    assert_eq!(
        std::fs::read(env.done_dir().join("x.tar")).unwrap(),
        b"an older import"
    );
    assert_eq!(
        std::fs::read(env.done_dir().join("x.tar.receipt.json")).unwrap(),
        b"{}"
    );
    assert_eq!(sha256_file(&env.done_dir().join("x-1.tar")), sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_vanishes_mid_upload_fails_with_a_clear_error() {
    let env = Env::daemon_env(slow(30), Settings::default(), "").await;
    let staged = env.path("v.tar");
    make_tar(&staged, 4 * 1024 * 1024, 60);
    std::fs::rename(&staged, env.drop_dir().join("v.tar")).unwrap();
    let d = env.daemon();
    wait_until(Duration::from_secs(60), "upload under way", || {
        env.report().chunk_posts_stored() >= 3
    })
    .await;
    std::fs::remove_file(env.drop_dir().join("v.tar")).unwrap();
    wait_until(Duration::from_secs(60), "the error receipt", || {
        env.failed_dir().join("v.tar.error.json").exists()
    })
    .await;
    stop(d).await;
    let jobs = env.status_json().await;
    assert_eq!(jobs[0]["state"], "failed");
    assert!(
        jobs[0]["error"].as_str().unwrap().contains("disappeared"),
        "{}",
        jobs[0]
    );
    assert!(
        env.report().sessions.iter().all(|s| !s.completed),
        "never completed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_mid_upload_starts_over_and_imports_the_new_content() {
    let env = Env::daemon_env(slow(30), Settings::default(), "").await;
    let staged = env.path("r.tar");
    make_tar(&staged, 4 * 1024 * 1024, 70);
    std::fs::rename(&staged, env.drop_dir().join("r.tar")).unwrap();
    let d = env.daemon();
    wait_until(Duration::from_secs(60), "upload under way", || {
        env.report().chunk_posts_stored() >= 3
    })
    .await;
    // Rewritten in place (same inode, new content and mtime).
    let new_sha = make_tar(&env.drop_dir().join("r.tar"), 2 * 1024 * 1024, 71);
    wait_until(Duration::from_secs(90), "the new version filed", || {
        env.done_dir().join("r.tar.receipt.json").exists()
    })
    .await;
    stop(d).await;
    assert_eq!(sha256_file(&env.done_dir().join("r.tar")), new_sha);
    let receipt = read_json(&env.done_dir().join("r.tar.receipt.json"));
    assert_eq!(receipt["sha256"], new_sha.as_str());
    imported_once(&env, "r.tar", &new_sha);
    let jobs = env.status_json().await;
    assert_eq!(jobs.len(), 2);
    // Newest first: the first version's job is the older one.
    assert_eq!(jobs[1]["state"], "failed");
    assert!(
        jobs[1]["error"].as_str().unwrap().contains("changed"),
        "{}",
        jobs[1]
    );
    assert!(
        Env::names(&env.failed_dir()).is_empty(),
        "nothing filed as failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_metrics_and_healthz_on_loopback() {
    let port = free_port();
    let env = Env::daemon_env(quick(), metrics_settings(port, "log_format = \"json\""), "").await;
    let staged = env.path("m.tar");
    make_tar(&staged, 200_000, 80);
    std::fs::rename(&staged, env.drop_dir().join("m.tar")).unwrap();
    let d = env.daemon();
    wait_until(Duration::from_secs(30), "filed", || {
        env.done_dir().join("m.tar.receipt.json").exists()
    })
    .await;
    assert_eq!(get(port, "/healthz").await.map(|r| r.0), Some(200));
    let (status, text) = get(port, "/metrics").await.expect("/metrics answers");
    assert_eq!(status, 200, "{text}");
    for needle in [
        "modelferry_uploaded_bytes_total",
        "modelferry_uploaded_chunks_total",
        "modelferry_imports_total{result=\"succeeded\"} 1",
        "modelferry_import_duration_seconds_count 1",
    ] {
        assert!(text.contains(needle), "{needle} in:\n{text}");
    }
    assert!(
        !text.contains("modelferry_uploaded_bytes_total 0\n"),
        "bytes were counted"
    );
    let out = stop(d).await;
    // JSON logs: every line parses, and the job's lines carry its span.
    let lines: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["span"]["job_id"].is_number()),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_emulator_serves_the_daemon_when_emulate_is_set() {
    // The env's own emulator stays unused: emulate = true starts another one.
    let env = Env::daemon_env(quick(), Settings::default(), "").await;
    let cfg = std::fs::read_to_string(&env.config).unwrap().replacen(
        "[platform]\n",
        "[platform]\nemulate = true\n",
        1,
    );
    std::fs::write(&env.config, cfg).unwrap();
    let staged = env.path("e.tar");
    let sha = make_tar(&staged, 200_000, 90);
    std::fs::rename(&staged, env.drop_dir().join("e.tar")).unwrap();
    let d = env.daemon();
    wait_until(Duration::from_secs(30), "filed", || {
        env.done_dir().join("e.tar.receipt.json").exists()
    })
    .await;
    let out = stop(d).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("nothing reaches a real platform"),
        "{}",
        out.stderr
    );
    assert!(
        env.report().sessions.is_empty(),
        "the external emulator got nothing"
    );
    assert_eq!(
        read_json(&env.done_dir().join("e.tar.receipt.json"))["sha256"],
        sha.as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_systemd_ready_status_watchdog_and_stopping() {
    let env = Env::daemon_env(quick(), Settings::default(), "").await;
    let sock_path = env.path("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&sock_path).unwrap();
    // systemd sets WATCHDOG_PID to the service's pid: exec keeps the
    // shell's pid for the daemon.
    let script = format!(
        "export WATCHDOG_PID=$$; exec '{BIN}' run -c '{}'",
        env.config.display()
    );
    let mut cmd = env.program("sh", &["-c", &script]);
    cmd.env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000");
    let d = Proc::spawn(cmd);
    let mut seen = Vec::<String>::new();
    let mut buf = vec![0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let want =
        |seen: &Vec<String>, k: &str| seen.iter().any(|m| m.lines().any(|l| l.starts_with(k)));
    while !(want(&seen, "READY=1") && want(&seen, "STATUS=") && want(&seen, "WATCHDOG=1")) {
        assert!(
            std::time::Instant::now() < deadline,
            "notifications so far: {seen:?}"
        );
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await
        {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let status = seen.iter().find(|m| m.starts_with("STATUS=")).unwrap();
    assert!(
        status.contains("queued") && status.contains("/s"),
        "{status}"
    );
    d.sigterm();
    let mut stopping = false;
    for _ in 0..40 {
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(250), sock.recv(&mut buf)).await
        {
            if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
                stopping = true;
                break;
            }
        }
    }
    assert!(stopping, "STOPPING=1 sent on shutdown");
    assert_eq!(d.finish().await.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_api_key_file() {
    let env = Env::daemon_env(
        EmulatorOptions {
            api_key: Some(API_KEY.into()),
            ..quick()
        },
        Settings::default(),
        "",
    )
    .await;
    let key_file = env.path("api-key");
    std::fs::write(&key_file, "an-old-revoked-key\n").unwrap();
    let cfg = std::fs::read_to_string(&env.config)
        .unwrap()
        .replacen(
            "[platform]\n",
            &format!("[platform]\napi_key_file = \"{}\"\n", key_file.display()),
            1,
        )
        // A long retry, so only SIGHUP can bring the upload back soon.
        .replace("retry_max = \"200ms\"", "retry_max = \"10m\"");
    std::fs::write(&env.config, cfg).unwrap();
    let staged = env.path("h.tar");
    let sha = make_tar(&staged, 100_000, 100);
    std::fs::rename(&staged, env.drop_dir().join("h.tar")).unwrap();
    let mut cmd = env.command(&["run", "-c", env.config.to_str().unwrap()]);
    cmd.env_remove("MODELFERRY_API_KEY");
    let d = Proc::spawn(cmd);
    wait_until(Duration::from_secs(30), "the key to be rejected", || {
        env.report().auth_rejections >= 1
    })
    .await;
    std::fs::write(&key_file, format!("{API_KEY}\n")).unwrap();
    // SAFETY: kill(2) with the daemon's pid and a valid signal number.
    #[allow(unsafe_code)] // std can only SIGKILL a child.
    let rc = unsafe { libc::kill(d.pid() as libc::pid_t, libc::SIGHUP) };
    assert_eq!(rc, 0);
    wait_until(Duration::from_secs(30), "the upload after SIGHUP", || {
        env.done_dir().join("h.tar.receipt.json").exists()
    })
    .await;
    let out = stop(d).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("API key re-read"), "{}", out.stderr);
    imported_once(&env, "h.tar", &sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_move_is_reported_and_retried_without_importing_again() {
    let env = Env::daemon_env(quick(), Settings::default(), "").await;
    let d = env.daemon();
    // The done folder is replaced by a plain file: filing cannot work.
    wait_until(Duration::from_secs(30), "the daemon to start", || {
        env.done_dir().exists()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::remove_dir(env.done_dir()).unwrap();
    std::fs::write(env.done_dir(), b"in the way").unwrap();
    let staged = env.path("f.tar");
    let sha = make_tar(&staged, 100_000, 110);
    std::fs::rename(&staged, env.drop_dir().join("f.tar")).unwrap();
    let mut shown = false;
    for _ in 0..300 {
        let jobs = env.status_json().await;
        if jobs
            .first()
            .is_some_and(|j| j["state"] == "succeeded" && j["filing_error"].is_string())
        {
            shown = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(shown, "status shows the filing error on a succeeded job");
    assert!(
        env.drop_dir().join("f.tar").exists(),
        "the file stays until it can be filed"
    );
    std::fs::remove_file(env.done_dir()).unwrap();
    std::fs::create_dir(env.done_dir()).unwrap();
    wait_until(Duration::from_secs(30), "the retried move", || {
        env.done_dir().join("f.tar.receipt.json").exists()
    })
    .await;
    stop(d).await;
    imported_once(&env, "f.tar", &sha);
    let jobs = env.status_json().await;
    assert_eq!(jobs[0]["filing"], "done");
    assert!(jobs[0]["filing_error"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_success_keep_leaves_the_file_and_never_imports_it_again() {
    let env = Env::daemon_env(quick(), Settings::default(), "after_success = \"keep\"\n").await;
    let staged = env.path("kept.tar");
    let sha = make_tar(&staged, 100_000, 120);
    std::fs::rename(&staged, env.drop_dir().join("kept.tar")).unwrap();
    let d = env.daemon();
    wait_until(Duration::from_secs(30), "the receipt", || {
        env.done_dir().join("kept.tar.receipt.json").exists()
    })
    .await;
    stop(d).await;
    assert!(env.drop_dir().join("kept.tar").exists(), "kept in place");
    assert!(!env.done_dir().join("kept.tar").exists());
    // A restart sees the file again and knows it. A second file dropped
    // after the restart shows the first one was looked at by then.
    let d = env.daemon();
    let staged = env.path("later.tar");
    make_tar(&staged, 50_000, 121);
    std::fs::rename(&staged, env.drop_dir().join("later.tar")).unwrap();
    wait_until(Duration::from_secs(30), "the later file", || {
        env.done_dir().join("later.tar.receipt.json").exists()
    })
    .await;
    stop(d).await;
    imported_once(&env, "kept.tar", &sha);
    assert_eq!(
        env.report().sessions.len(),
        2,
        "kept.tar was not imported again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_success_delete_removes_the_file_and_keeps_the_receipt() {
    let env = Env::daemon_env(quick(), Settings::default(), "after_success = \"delete\"\n").await;
    let staged = env.path("gone.tar");
    let sha = make_tar(&staged, 100_000, 130);
    std::fs::rename(&staged, env.drop_dir().join("gone.tar")).unwrap();
    let d = env.daemon();
    wait_until(
        Duration::from_secs(30),
        "the file deleted after its receipt",
        || {
            env.done_dir().join("gone.tar.receipt.json").exists()
                && !env.drop_dir().join("gone.tar").exists()
        },
    )
    .await;
    stop(d).await;
    assert!(!env.done_dir().join("gone.tar").exists());
    assert_eq!(
        read_json(&env.done_dir().join("gone.tar.receipt.json"))["sha256"],
        sha.as_str()
    );
    imported_once(&env, "gone.tar", &sha);
}
