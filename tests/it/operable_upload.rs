//! `modelferry upload` in a pipeline: `--timeout`, `--json`, `--quiet`,
//! output without a terminal, `-c` from the environment, and a cancel of a
//! running upload.

use std::time::{Duration, Instant};

use modelferry_emulator::{EmulatorOptions, FaultRates};
use serde_json::Value;

use crate::support::*;

/// The one JSON object stdout must hold.
pub fn one_object(r: &Run) -> serde_json::Map<String, Value> {
    let v: Value = serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {:?}", r.stdout));
    match v {
        Value::Object(m) => m,
        other => panic!("stdout is not a JSON object: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_while_the_platform_is_down_exits_6_and_the_same_command_resumes() {
    let env = Env::start(quick()).await;
    env.emu.set_faults(FaultRates {
        fail_rate: 1.0,
        ..FaultRates::default()
    });
    let file = env.path("m.tar");
    let sha = make_tar(&file, 300_000, 1);
    let started = Instant::now();
    let r = env.upload(&file, &["--timeout", "2s", "--json"]).await;
    assert_eq!(r.code, 6, "{}", r.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "gave up in time"
    );
    assert!(r.stderr.contains("--timeout"), "{}", r.stderr);
    let out = one_object(&r);
    let keys: Vec<&str> = out.keys().map(String::as_str).collect();
    assert_eq!(keys, ["error", "exit_code", "job_id", "path", "state"]);
    assert_eq!(out["exit_code"], 6);
    assert_eq!(out["job_id"], 1);
    assert_eq!(out["state"], "queued");
    assert_eq!(out["path"], file.to_str().unwrap());
    assert!(
        out["error"].as_str().unwrap().contains("gave up"),
        "{out:?}"
    );
    let jobs = env.status_json().await;
    assert_eq!((jobs.len(), jobs[0]["state"].as_str()), (1, Some("queued")));

    // The platform is back: the same command resumes the same job.
    env.emu.set_faults(FaultRates::default());
    let r = env
        .upload(&file, &["--timeout", "60s", "--no-progress"])
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let jobs = env.status_json().await;
    assert_eq!(jobs.len(), 1, "the same job");
    assert_eq!(jobs[0]["state"], "succeeded");
    assert_eq!(
        env.report().sessions[0].assembled_sha256.as_deref(),
        Some(sha.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_in_the_middle_keeps_the_session_for_the_next_run() {
    let env = Env::with(slow(100), one_chunk_at_a_time()).await;
    let file = env.path("m.tar");
    make_tar(&file, 2 * 1024 * 1024, 2);
    let r = env.upload(&file, &["--timeout", "1500ms", "--quiet"]).await;
    assert_eq!(r.code, 6, "{}", r.stderr);
    let jobs = env.status_json().await;
    assert_eq!(jobs[0]["state"], "uploading");
    let done = jobs[0]["chunks_done"].as_u64().unwrap();
    assert!(done > 0 && done < 32, "some chunks, not all: {done}");
    let r = env.upload(&file, &["--no-progress"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(env.report().sessions.len(), 1, "the same session resumed");
    assert_eq!(env.status_json().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_prints_the_receipt_the_error_receipt_or_nothing_on_exit_2() {
    let env = Env::start(quick()).await;
    let file = env.path("good.tar");
    let sha = make_tar(&file, 200_000, 3);
    let r = env.upload(&file, &["--json"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let receipt = one_object(&r);
    for key in [
        "file",
        "job_id",
        "model_id",
        "dock_status_id",
        "session_id",
        "size",
        "sha256",
        "chunks",
        "status",
        "started_at",
        "finished_at",
        "path",
    ] {
        assert!(receipt.contains_key(key), "{key} in {receipt:?}");
    }
    assert_eq!(receipt["sha256"], sha.as_str());
    assert_eq!(receipt["status"], "SUCCESS");
    assert_eq!(receipt["path"], file.to_str().unwrap());
    // Already imported: the same receipt, nothing sent.
    let again = env.upload(&file, &["--json"]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(one_object(&again)["model_id"], receipt["model_id"]);
    assert_eq!(env.report().sessions.len(), 1);

    // Pre-flight refuses the archive: the error receipt, with job id and path.
    let bad = env.path("bad.tar");
    std::fs::write(&bad, vec![0x5au8; 100_000]).unwrap();
    let r = env.upload(&bad, &["--json"]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    let err = one_object(&r);
    for key in [
        "error",
        "stage",
        "http_status",
        "platform_message",
        "model_id",
        "job_id",
        "path",
    ] {
        assert!(err.contains_key(key), "{key} in {err:?}");
    }
    assert_eq!(err["stage"], "preflight");

    // Usage: stdout empty, the message on stderr.
    let r = env.upload(&env.path("missing.tar"), &["--json"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.stdout, "");
    assert!(r.stderr.contains("missing.tar"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_terminal_each_state_change_is_one_line_and_quiet_is_quiet() {
    let env = Env::start(quick()).await;
    let file = env.path("lines.tar");
    make_tar(&file, 300_000, 4);
    let r = env.upload(&file, &[]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A line per state change, never two. (A state that lasts less than
    // a scheduling slice may be seen only as the next one: at most one.)
    let mut seen = 0;
    for state in ["uploading", "completing", "importing", "succeeded"] {
        let n = r
            .stderr
            .lines()
            .filter(|l| l.contains(&format!(": {state}")))
            .count();
        assert!(n <= 1, "one line for {state}:\n{}", r.stderr);
        seen += n;
        if state == "succeeded" {
            assert_eq!(n, 1, "{}", r.stderr);
        }
    }
    assert!(seen >= 3, "{}", r.stderr);
    // No log line repeats what a progress line says.
    assert!(
        !r.stderr.contains("all chunks acknowledged"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("import succeeded"), "{}", r.stderr);
    // Once the chunks are done the rate stays the chunk phase's: every line
    // after `uploading` ends the same. There are always two such lines:
    // `succeeded` (checked above) and, as at most one state is missed,
    // `completing` or `importing`.
    let rates: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| {
            [": completing", ": importing", ": succeeded"]
                .iter()
                .any(|s| l.contains(s))
        })
        .filter_map(|l| l.rsplit(", ").next())
        .collect();
    assert!(rates.len() >= 2, "{}", r.stderr);
    assert!(
        rates.iter().all(|rate| *rate == rates[0]),
        "{rates:?} in:\n{}",
        r.stderr
    );

    let other = env.path("quiet.tar");
    make_tar(&other, 300_000, 5);
    let r = env.upload(&other, &["--quiet"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stderr, "", "nothing but warnings and errors");
    assert!(r.stdout.trim().len() > 3, "the model id: {}", r.stdout);

    let third = env.path("noprogress.tar");
    make_tar(&third, 300_000, 6);
    let r = env.upload(&third, &["--no-progress"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("% "), "no progress lines: {}", r.stderr);
    assert!(!r.stderr.contains(": uploading"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_json_logs_stderr_holds_nothing_but_json() {
    let env = Env::start(quick()).await;
    let file = env.path("j.tar");
    make_tar(&file, 300_000, 7);
    let mut cmd = env.upload_cmd(&file, &[]);
    cmd.env("MODELFERRY__TELEMETRY__LOG_FORMAT", "json");
    let r = run(cmd).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert!(lines.len() >= 4, "progress events: {}", r.stderr);
    for line in lines {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    // A failure too: its message is a JSON event.
    let mut cmd = env.upload_cmd(&env.path("gone.tar"), &[]);
    cmd.env("MODELFERRY__TELEMETRY__LOG_FORMAT", "json");
    let r = run(cmd).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    for line in r.stderr.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(v["level"], "ERROR", "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_comes_from_modelferry_config_when_c_is_not_given() {
    let env = Env::start(quick()).await;
    let file = env.path("env.tar");
    make_tar(&file, 100_000, 8);
    let mut cmd = env.command(&["upload", file.to_str().unwrap(), "--quiet"]);
    cmd.env("MODELFERRY_CONFIG", &env.config);
    let r = run(cmd).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut cmd = env.command(&["status", "--json"]);
    cmd.env("MODELFERRY_CONFIG", &env.config);
    let r = run(cmd).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("env.tar"), "{}", r.stdout);
    // Without either, the default path is named.
    let mut cmd = env.command(&["status"]);
    cmd.env_remove("MODELFERRY_CONFIG");
    let r = run(cmd).await;
    if !std::path::Path::new("/etc/modelferry/modelferry.toml").exists() {
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(
            r.stderr.contains("/etc/modelferry/modelferry.toml"),
            "{}",
            r.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_upload_stops_it_and_a_rerun_starts_a_new_job() {
    let env = Env::with(slow(150), one_chunk_at_a_time()).await;
    let file = env.path("long.tar");
    let sha = make_tar(&file, LONG_TAR, 9);
    let upload = Proc::spawn(env.upload_cmd(&file, &["--json"]));
    let cancelled_at = cancel_mid_upload(&env).await;
    let up = upload.finish().await;
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(5),
        "the upload stopped within 5 s: {:?}",
        cancelled_at.elapsed()
    );
    assert_eq!(up.code, 1, "{}", up.stderr);
    assert!(up.stderr.contains("cancelled"), "{}", up.stderr);
    let receipt = one_object(&up);
    assert_eq!(receipt["stage"], "cancelled");
    assert_eq!(receipt["job_id"], 1);
    let sent = env.report().requests;
    assert!(sent.chunk < 21, "stopped mid-way: {sent:?}");
    assert_eq!(sent.complete, 0);

    let jobs = env.status_json().await;
    assert_eq!(jobs[0]["state"], "cancelled");
    // Cancelling it again, or an unknown job: exit 2.
    assert_eq!(cli(&env, "cancel", &["1"]).await.code, 2);
    let r = cli(&env, "cancel", &["42"]).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("job 42"), "{}", r.stderr);

    // The same upload again: a new job, imported.
    let r = env.upload(&file, &["--quiet"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let jobs = env.status_json().await;
    assert_eq!(jobs.len(), 2);
    assert_eq!(
        (jobs[0]["id"].as_i64(), jobs[0]["state"].as_str()),
        (Some(2), Some("succeeded"))
    );
    let report = env.report();
    let done: Vec<_> = report.sessions.iter().filter(|s| s.completed).collect();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].assembled_sha256.as_deref(), Some(sha.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_importing_job_cannot_be_cancelled() {
    let env = Env::start(EmulatorOptions {
        import_polls: 100_000,
        ..EmulatorOptions::default()
    })
    .await;
    let file = env.path("importing.tar");
    make_tar(&file, 100_000, 10);
    let upload = Proc::spawn(env.upload_cmd(&file, &["--quiet"]));
    wait_until(Duration::from_secs(60), "the import under way", || {
        env.report().requests.dock_status >= 1
    })
    .await;
    let r = cli(&env, "cancel", &["1"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("importing"), "{}", r.stderr);
    assert_eq!(env.status_json().await[0]["state"], "importing");
    upload.sigterm();
    let up = upload.finish().await;
    assert_eq!(up.code, 130, "{}", up.stderr);
}
