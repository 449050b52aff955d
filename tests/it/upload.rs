//! `modelferry upload` end to end, against the emulator.

use std::time::Duration;

use modelferry_emulator::{EmulatorOptions, ImportStatus};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_a_file_with_identical_content_and_exact_start_fields() {
    let env = Env::start(quick()).await;
    let file = env.path("example_model22.tar");
    let sha = make_tar(&file, 1_000_000, 1);
    let size = std::fs::metadata(&file).unwrap().len();

    let r = env.upload(&file, &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);

    let report = env.report();
    assert_eq!(report.sessions.len(), 1);
    let s = &report.sessions[0];
    assert_eq!(r.stdout.trim(), s.model_id, "prints the model id");
    assert_eq!(s.start.file_context, "model");
    assert_eq!(s.start.file_name, "example_model22.tar");
    assert_eq!(s.start.file_extension, "tar");
    assert_eq!(s.start.file_size, size);
    assert_eq!(s.start.total_chunks, size.div_ceil(64 * 1024));
    assert_eq!(s.start.is_adapter, Some(false));
    assert_eq!(s.chunks.len() as u64, s.start.total_chunks);
    assert!(
        s.chunks.values().all(|c| c.times_received == 1),
        "no chunk sent twice"
    );
    assert_eq!(s.duplicates, 0);
    assert_eq!(s.assembled_sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(s.status, Some(ImportStatus::Success));

    let jobs = env.status_json().await;
    assert_eq!(jobs.len(), 1);
    let j = &jobs[0];
    assert_eq!(j["state"], "succeeded");
    assert_eq!(j["model_id"], s.model_id.as_str());
    assert_eq!(j["session_id"], s.session_id.as_str());
    assert_eq!(
        j["dock_status_id"],
        s.dock_status_id.clone().unwrap().as_str()
    );
    assert_eq!(j["chunks_done"], j["chunks_total"]);
    assert_eq!(j["bytes_total"], size);
    assert_eq!(j["sha256"], sha.as_str());
    for key in ["id", "path", "error"] {
        assert!(j.get(key).is_some(), "status --json has {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_already_imported_is_not_uploaded_again_unless_forced() {
    let env = Env::start(quick()).await;
    let file = env.path("m.tar");
    make_tar(&file, 200_000, 2);
    let first = env.upload(&file, &[]).await;
    assert_eq!(first.code, 0, "{}", first.stderr);

    let again = env.upload(&file, &[]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.stdout.trim(), first.stdout.trim(), "same model id");
    assert!(
        again.stderr.contains("already imported"),
        "{}",
        again.stderr
    );
    assert_eq!(env.report().sessions.len(), 1, "no new session");

    let forced = env.upload(&file, &["--force"]).await;
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert_eq!(env.report().sessions.len(), 2);
    assert_ne!(forced.stdout.trim(), first.stdout.trim());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_the_same_session_after_two_sigkills() {
    let env = Env::start(slow(15)).await;
    let file = env.path("big.tar");
    let sha = make_tar(&file, 6 * 1024 * 1024, 3);
    let total = std::fs::metadata(&file).unwrap().len().div_ceil(64 * 1024);

    for stop_after in [10u64, 40] {
        let child = Proc::spawn(env.upload_cmd(&file, &["--no-progress"]));
        wait_until(Duration::from_secs(60), "chunks to arrive", || {
            env.report().chunk_posts_stored() >= stop_after
        })
        .await;
        child.kill9().await;
    }
    let before = env.report().chunk_posts_stored();
    assert!(
        before < total,
        "the upload was really interrupted ({before} of {total})"
    );

    let r = env.upload(&file, &["--no-progress"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("resuming job"), "{}", r.stderr);

    let report = env.report();
    assert_eq!(report.sessions.len(), 1, "one session across both kills");
    let s = &report.sessions[0];
    assert!(
        s.duplicates <= 2 * 4,
        "re-sent chunks at most parallel_chunks per kill, got {}",
        s.duplicates
    );
    assert_eq!(s.assembled_sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(s.status, Some(ImportStatus::Success));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn succeeds_through_lost_acks_resets_rate_limits_and_server_errors() {
    let env = Env::start(EmulatorOptions {
        fail_rate: 0.15,
        lost_ack_rate: 0.15,
        reset_rate: 0.1,
        rate_limit_rate: 0.1,
        retry_after: Duration::from_secs(0),
        ..quick()
    })
    .await;
    let file = env.path("flaky.tar");
    let sha = make_tar(&file, 2 * 1024 * 1024, 4);
    let r = env.upload(&file, &["--no-progress"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report = env.report();
    assert!(
        report.faults.fail > 0 && report.faults.lost_ack > 0,
        "faults were injected: {:?}",
        report.faults
    );
    assert!(
        report.faults.reset > 0 && report.faults.rate_limit > 0,
        "faults were injected: {:?}",
        report.faults
    );
    assert_eq!(report.sessions.len(), 1);
    let s = &report.sessions[0];
    assert_eq!(s.assembled_sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(s.status, Some(ImportStatus::Success));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_a_new_session_when_the_old_one_expired_while_down() {
    let env = Env::start(slow(15)).await;
    let file = env.path("late.tar");
    let sha = make_tar(&file, 3 * 1024 * 1024, 5);
    let child = Proc::spawn(env.upload_cmd(&file, &["--no-progress"]));
    wait_until(Duration::from_secs(60), "some chunks", || {
        env.report().chunk_posts_stored() >= 8
    })
    .await;
    child.kill9().await;
    env.emu.expire_sessions();

    let r = env.upload(&file, &["--no-progress"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report = env.report();
    assert_eq!(
        report.sessions.len(),
        2,
        "a new session replaced the expired one"
    );
    let new = report
        .sessions
        .iter()
        .find(|s| s.completed)
        .expect("a completed session");
    assert_eq!(
        new.chunks.len() as u64,
        new.start.total_chunks,
        "every chunk sent again"
    );
    assert_eq!(new.assembled_sha256.as_deref(), Some(sha.as_str()));
    let jobs = env.status_json().await;
    assert_eq!(jobs[0]["session_id"], new.session_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_fails_nothing_and_the_same_command_resumes_later() {
    let env = Env::start(EmulatorOptions {
        api_key: Some("the-right-key".into()),
        ..quick()
    })
    .await;
    let file = env.path("keyed.tar");
    let sha = make_tar(&file, 300_000, 6);
    let r = env.upload(&file, &["--no-progress"]).await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("API key rejected"), "{}", r.stderr);
    assert!(file.exists(), "the file stays where it is");
    let jobs = env.status_json().await;
    assert_ne!(jobs[0]["state"], "failed");
    assert!(jobs[0]["error"]
        .as_str()
        .unwrap()
        .contains("API key rejected"));
    assert!(env.report().auth_rejections > 0);

    env.emu.set_api_key(Some(API_KEY.into()));
    let r = env.upload(&file, &["--no-progress"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        env.report().sessions[0].assembled_sha256.as_deref(),
        Some(sha.as_str())
    );
    assert_eq!(env.status_json().await.len(), 1, "the same job resumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_archive_exits_1_with_the_platforms_message() {
    let env = Env::start(quick()).await;
    let file = env.path("broken.tar");
    std::fs::write(&file, vec![0x5au8; 150_000]).unwrap();
    // Pre-flight would refuse it before the platform sees it; this is about
    // the platform's own verdict.
    let mut cmd = env.upload_cmd(&file, &["--no-progress"]);
    cmd.env("MODELFERRY__UPLOAD__PREFLIGHT", "false");
    let r = run(cmd).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let jobs = env.status_json().await;
    assert_eq!(jobs[0]["state"], "failed");
    let msg = env.report().sessions[0]
        .message
        .clone()
        .expect("the emulator says why");
    assert!(
        r.stderr.contains(&msg),
        "stderr carries the platform's message {msg:?}: {}",
        r.stderr
    );
    assert_eq!(jobs[0]["platform_message"], msg.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_file_is_not_uploaded() {
    let env = Env::start(quick()).await;
    let file = env.path("empty.tar");
    std::fs::write(&file, b"").unwrap();
    let r = env.upload(&file, &["--no-progress"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("empty"), "{}", r.stderr);
    assert!(env.report().sessions.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_exit_2_naming_the_key_and_file() {
    let env = Env::start(quick()).await;
    let file = env.path("m.tar");
    make_tar(&file, 10_000, 7);
    let cases = [
        ("[upload]\nchunk_sise = \"8MiB\"\n", "upload.chunk_sise"),
        (
            "[upload]\nparallel_chunks = \"four\"\n",
            "upload.parallel_chunks",
        ),
        (
            "[platform]\nbase_url = \"http://platform.example.ai\"\n",
            "platform.base_url",
        ),
        (
            "[upload]\nchunk_size = \"8 furlongs\"\n",
            "upload.chunk_size",
        ),
    ];
    for (toml, key) in cases {
        let cfg = env.path("bad.toml");
        std::fs::write(&cfg, toml).unwrap();
        let r = run(env.command(&[
            "upload",
            "-c",
            cfg.to_str().unwrap(),
            file.to_str().unwrap(),
        ]))
        .await;
        assert_eq!(r.code, 2, "{toml}: {}", r.stderr);
        assert!(r.stderr.contains(key), "{key} named: {}", r.stderr);
        assert!(r.stderr.contains("bad.toml"), "file named: {}", r.stderr);
        assert_eq!(r.stderr.trim().lines().count(), 1, "one line: {}", r.stderr);
    }
    let missing = run(env.command(&["status", "-c", "/nonexistent/m.toml"])).await;
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("/nonexistent/m.toml"));

    let mut no_key = env.upload_cmd(&file, &[]);
    no_key.env_remove("MODELFERRY_API_KEY");
    let r = run(no_key).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("MODELFERRY_API_KEY"), "{}", r.stderr);

    let r = env.upload(&env.path("absent.tar"), &[]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("absent.tar"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_appears_in_no_output_and_not_in_the_database() {
    let env = Env::with(
        EmulatorOptions {
            fail_rate: 0.2,
            ..quick()
        },
        Settings {
            extra: "[telemetry]\nlog_level = \"trace\"\n".into(),
            ..Settings::default()
        },
    )
    .await;
    let file = env.path("secret.tar");
    make_tar(&file, 300_000, 8);
    // `run` asserts the key is absent from stdout and stderr of every run.
    let r = env.upload(&file, &["--no-progress"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("DEBUG") || r.stderr.contains("TRACE"),
        "verbose logs were on"
    );
    env.emu.set_api_key(Some("another-key".into()));
    let r = env.upload(&file, &["--force", "--no-progress"]).await;
    assert_eq!(r.code, 3);
    env.status_json().await;
    for f in ["modelferry.db", "modelferry.db-wal", "modelferry.db-shm"] {
        let p = env.db_path().with_file_name(f);
        if let Ok(bytes) = std::fs::read(&p) {
            assert!(
                !bytes
                    .windows(API_KEY.len())
                    .any(|w| w == API_KEY.as_bytes()),
                "the key is in {f}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_command_serves_the_api() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = tokio::process::Command::new(BIN)
        .args(["emulator", "--listen", &addr, "--import-polls", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/_emulator/report");
    let mut ok = false;
    for _ in 0..500 {
        if let Ok(r) = client.get(&url).send().await {
            ok = r.status().is_success();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the emulator answered");
    let r = client
        .post(format!("http://{addr}/api/public/files/session/start"))
        .header("x-api-key", "k")
        .json(&serde_json::json!({"fileContext":"model","totalChunks":1,"fileExtension":"tar","fileName":"a.tar","fileSize":1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_upload_of_the_same_file_leaves_the_running_one_alone() {
    let env = Env::start(slow(20)).await;
    let file = env.path("twice.tar");
    let sha = make_tar(&file, 2 * 1024 * 1024, 9);
    let first = Proc::spawn(env.upload_cmd(&file, &["--no-progress"]));
    wait_until(
        Duration::from_secs(60),
        "the first upload under way",
        || env.report().chunk_posts_stored() >= 2,
    )
    .await;
    let second = env.upload(&file, &["--no-progress"]).await;
    assert_eq!(second.code, 5, "{}", second.stderr);
    assert!(
        second.stderr.contains("another modelferry process"),
        "{}",
        second.stderr
    );
    let first = first.finish().await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let report = env.report();
    assert_eq!(report.sessions.len(), 1);
    assert_eq!(
        report.sessions[0].duplicates, 0,
        "the second process sent nothing"
    );
    assert_eq!(
        report.sessions[0].assembled_sha256.as_deref(),
        Some(sha.as_str())
    );
}
