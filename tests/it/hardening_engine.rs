//! Hardening of the upload engine and of what modelferry shows: sessions
//! that arrive already expired, file names that carry control characters,
//! and paths that are not UTF-8.

use std::time::{Duration, Instant};

use modelferry::emulator::EmulatorOptions;

use crate::support::*;

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
    // The last loss is the platform's 410 ("expired") or, as likely with a
    // 1 ms lifetime, the local clock's ("about to expire").
    assert!(error.contains("expire"), "the reason: {error}");
    proc.sigterm();
    let r = proc.finish().await;
    assert_eq!(r.code, 130, "{}", r.stderr);
    assert!(
        env.report().sessions.iter().all(|s| s.chunks.is_empty()),
        "no session took a chunk"
    );
}

/// Names that would forge a log line or drive the terminal if shown raw,
/// with the escaped form each must be shown in.
const HOSTILE: [(&str, &str); 2] = [
    ("new\nline.tar", r"new\nline.tar"),
    ("red\x1b[31m.tar", r"red\u{1b}[31m.tar"),
];

/// No raw newline or ESC from a hostile name, and its escaped form shown.
fn shown_escaped(output: &str, name: &str, escaped: &str) {
    assert!(!output.contains('\x1b'), "a raw ESC in:\n{output}");
    let raw_piece = name.split(['\n', '\x1b']).next_back().unwrap();
    for line in output.lines() {
        assert!(
            !line.starts_with(raw_piece),
            "a line begins with the rest of a name: {line:?}"
        );
    }
    assert!(!output.contains(name), "{name:?} shown raw:\n{output}");
    assert!(output.contains(escaped), "{escaped} not shown:\n{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_shows_names_with_control_characters_escaped() {
    let env = Env::start(quick()).await;
    for (i, (name, escaped)) in HOSTILE.into_iter().enumerate() {
        let file = env.path(name);
        make_tar(&file, 100_000, 50 + i as u64);
        let r = env.upload(&file, &[]).await;
        assert_eq!(r.code, 0, "{}", r.stderr);
        shown_escaped(&r.stderr, name, escaped);
        assert!(r.stderr.contains("imported"), "{}", r.stderr);
    }
    assert_eq!(env.report().sessions_for_file(HOSTILE[0].0).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_logs_names_with_control_characters_escaped() {
    let env = Env::daemon_env(quick(), Settings::default(), "").await;
    for (i, (name, _)) in HOSTILE.into_iter().enumerate() {
        make_tar(&env.drop_dir().join(name), 100_000, 60 + i as u64);
    }
    let daemon = env.daemon();
    let done = env.done_dir();
    wait_until(Duration::from_secs(30), "both files filed", || {
        HOSTILE.iter().all(|(name, _)| done.join(name).exists())
    })
    .await;
    daemon.sigterm();
    let r = daemon.finish().await;
    for (name, escaped) in HOSTILE {
        shown_escaped(&r.stderr, name, escaped);
        let queued = format!("path={}", env.drop_dir().join(escaped).display());
        assert!(r.stderr.contains(&queued), "{queued} in:\n{}", r.stderr);
        let filed = format!("to={}", done.join(escaped).display());
        assert!(r.stderr.contains(&filed), "{filed} in:\n{}", r.stderr);
    }
}

/// A file whose name is `bad\xff\xfe.tar` (not UTF-8).
fn bad_name(dir: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    dir.join(std::ffi::OsStr::from_bytes(b"bad\xff\xfe.tar"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_refuses_a_path_that_is_not_utf8_before_any_job_exists() {
    let env = Env::start(quick()).await;
    let file = bad_name(env.dir.path());
    make_tar(&file, 50_000, 70);
    let cfg = env.config.to_str().unwrap().to_owned();
    let mut cmd = env.command(&["upload", "-c", &cfg]);
    cmd.arg(&file);
    let r = run(cmd).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(r"bad\xff\xfe.tar") && r.stderr.contains("not valid UTF-8"),
        "{}",
        r.stderr
    );
    assert!(env.status_json().await.is_empty(), "no job recorded");
    assert!(env.report().sessions.is_empty(), "nothing sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_warns_once_about_a_name_that_is_not_utf8_and_imports_the_rest() {
    // Polled: every import below takes full rescans, which also list the
    // file with the bad name.
    let env = Env::daemon_env(quick(), Settings::default(), "poll_only = true").await;
    let drop = env.drop_dir();
    make_tar(&bad_name(&drop), 50_000, 71);
    make_tar(&drop.join("first.tar"), 50_000, 72);
    let daemon = env.daemon();
    let done = env.done_dir();
    wait_until(Duration::from_secs(30), "first.tar filed", || {
        done.join("first.tar").exists()
    })
    .await;
    make_tar(&drop.join("second.tar"), 50_000, 73);
    wait_until(Duration::from_secs(30), "second.tar filed", || {
        done.join("second.tar").exists()
    })
    .await;
    daemon.sigterm();
    let r = daemon.finish().await;
    let warnings: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("not valid UTF-8"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", r.stderr);
    assert!(warnings[0].contains(r"bad\xff\xfe.tar"), "{}", warnings[0]);
    let jobs = env.status_json().await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert!(bad_name(&drop).exists(), "left where it is");
}
