//! Hardening of the upload engine and of what modelferry shows: sessions
//! that arrive already expired, file names that carry control characters,
//! and paths that are not UTF-8.

use std::time::{Duration, Instant};

use modelferry::emulator::EmulatorOptions;

use crate::support::*;

fn quick() -> EmulatorOptions {
    EmulatorOptions {
        import_polls: 1,
        ..EmulatorOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_expired_on_arrival_is_used_and_clock_skew_is_reported() {
    // The platform's clock an hour behind: every expirationDate is 50
    // minutes in the past by our clock, yet sessions take chunks.
    let env = Env::start(EmulatorOptions {
        clock_behind: Duration::from_secs(3600),
        ..quick()
    })
    .await;
    let file = env.path("skewed.tar");
    let sha = make_tar(&file, 300_000, 41);

    let r = tokio::time::timeout(Duration::from_secs(30), env.upload(&file, &[]))
        .await
        .expect("the upload finishes instead of churning sessions");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report = env.report();
    assert!(
        report.sessions.len() <= 2,
        "{} sessions started",
        report.sessions.len()
    );
    let done = report
        .sessions
        .iter()
        .find(|s| s.completed)
        .expect("one completed");
    assert_eq!(done.assembled_sha256.as_deref(), Some(sha.as_str()));
    let warning = r
        .stderr
        .lines()
        .find(|l| l.contains("clock skew"))
        .unwrap_or_else(|| panic!("a clock skew warning:\n{}", r.stderr));
    assert!(
        warning.contains("expiration_date=") && warning.contains("local_time="),
        "both times shown: {warning}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_lost_before_any_chunk_hold_the_job_with_the_error_in_status() {
    // Sessions that end a millisecond after they start: none takes a chunk.
    let env = Env::start(EmulatorOptions {
        session_ttl: Duration::from_millis(1),
        ..quick()
    })
    .await;
    let file = env.path("doomed.tar");
    make_tar(&file, 300_000, 42);
    let proc = Proc::spawn(env.upload_cmd(&file, &["--no-progress"]));

    let deadline = Instant::now() + Duration::from_secs(30);
    let error = loop {
        let jobs = env.status_json().await;
        let e = jobs
            .first()
            .and_then(|j| j["error"].as_str())
            .unwrap_or_default()
            .to_owned();
        if e.contains("sessions in a row were lost") {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no held-job error in status: {jobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(error.contains("expired"), "the platform's reason: {error}");
    proc.sigterm();
    let r = proc.finish().await;
    assert_eq!(r.code, 130, "{}", r.stderr);
    assert!(
        env.report().sessions.iter().all(|s| s.chunks.is_empty()),
        "no session took a chunk"
    );
}
