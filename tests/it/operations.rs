//! What operators get beside the daemon: completions, man pages, a long
//! `--version`, log priorities in the journal, `/readyz`, metrics present
//! from zero, and a dashboard that only uses metrics that are served.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use modelferry_emulator::EmulatorOptions;

use crate::support::*;

async fn bin(args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    run(cmd).await
}

#[tokio::test]
async fn completions_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F _modelferry"),
        ("zsh", "#compdef modelferry"),
        ("fish", "complete -c modelferry"),
    ] {
        let r = bin(&["completions", shell]).await;
        assert_eq!(r.code, 0, "{shell}: {}", r.stderr);
        assert!(
            r.stdout.contains(marker),
            "{shell}: {marker} in {}",
            r.stdout
        );
        for command in ["run", "upload", "status", "completions"] {
            assert!(r.stdout.contains(command), "{shell} completes {command}");
        }
    }
    let r = bin(&["completions", "tcsh"]).await;
    assert_eq!(r.code, 2, "an unknown shell is a usage error");
    assert!(r.stdout.is_empty());
}

#[tokio::test]
async fn long_version_names_the_commit_and_the_target() {
    let r = bin(&["--version"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(concat!("modelferry ", env!("CARGO_PKG_VERSION")))
    );
    let commit = lines
        .iter()
        .find_map(|l| l.strip_prefix("commit: "))
        .unwrap_or_else(|| panic!("a commit line in {}", r.stdout));
    assert!(
        commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()),
        "commit {commit:?}"
    );
    let target = lines
        .iter()
        .find_map(|l| l.strip_prefix("target: "))
        .unwrap_or_else(|| panic!("a target line in {}", r.stdout));
    assert!(target.contains("-linux"), "target {target:?}");
    // -V stays one line, for scripts.
    let short = bin(&["-V"]).await;
    assert_eq!(short.stdout.lines().count(), 1, "{}", short.stdout);
}

#[tokio::test]
async fn man_pages_for_the_binary_and_each_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man");
    let r = bin(&["manpages", out.to_str().unwrap()]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    for page in [
        "modelferry.1",
        "modelferry-run.1",
        "modelferry-upload.1",
        "modelferry-completions.1",
    ] {
        let text =
            std::fs::read_to_string(out.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH modelferry"), "{page} is a man page");
    }
    assert!(
        !out.join("modelferry-manpages.1").exists(),
        "the hidden command gets no page"
    );
}

/// A config where the log lines of an `upload` include a warning (the
/// built-in emulator) and info lines (the import's steps).
fn emulated(env: &Env) -> PathBuf {
    let cfg = std::fs::read_to_string(&env.config).unwrap().replacen(
        "[platform]\n",
        "[platform]\nemulate = true\n",
        1,
    );
    let path = env.path("emulated.toml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// Runs `upload` with stderr in a file and `JOURNAL_STREAM` set to
/// `stream(stderr file)`; returns the exit code and what it logged.
async fn upload_logging_to_file(env: &Env, stream: impl Fn(&Path) -> String) -> (i32, String) {
    let cfg = emulated(env);
    let file = env.path("m.tar");
    make_tar(&file, 100_000, 7);
    let log = env.path("stderr.log");
    let sink = std::fs::File::create(&log).unwrap();
    let mut cmd = env.command(&[
        "upload",
        "-c",
        cfg.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    cmd.env("JOURNAL_STREAM", stream(&log)).stderr(sink);
    let code = exit_code(cmd).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(API_KEY));
    (code, text)
}

/// Runs `cmd` to its end, within a bounded time, keeping the stdio it was
/// given (`output()` would pipe stderr).
async fn exit_code(mut cmd: tokio::process::Command) -> i32 {
    let mut child = cmd.spawn().expect("command starts");
    tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .expect("command finishes within 120 s")
        .expect("wait")
        .code()
        .unwrap_or(-1)
}

fn dev_ino(p: &Path) -> String {
    let m = std::fs::metadata(p).unwrap();
    format!("{}:{}", m.dev(), m.ino())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_syslog_priorities_when_stderr_is_the_journal_stream() {
    let env = Env::start(quick()).await;
    let (code, log) = upload_logging_to_file(&env, dev_ino).await;
    assert_eq!(code, 0, "{log}");
    let warn = log
        .lines()
        .find(|l| l.contains("built-in emulator"))
        .unwrap_or_else(|| panic!("the emulator warning in {log}"));
    assert!(warn.starts_with("<4>"), "warning at priority 4: {warn}");
    // `upload`'s own progress lines (not log events) carry a priority too.
    let info = log
        .lines()
        .find(|l| l.contains("m.tar: succeeded"))
        .unwrap_or_else(|| panic!("the success line in {log}"));
    assert!(info.starts_with("<6>"), "info at priority 6: {info}");
    for line in log.lines() {
        assert!(line.starts_with('<'), "every line has a priority: {line}");
    }
    assert!(!log.contains('\u{1b}'), "no colours in the journal");

    // A fatal error in the journal is at error priority.
    let sink = std::fs::File::create(env.path("err.log")).unwrap();
    let mut cmd = env.command(&["upload", "-c", "/nonexistent/modelferry.toml", "x.tar"]);
    cmd.env("JOURNAL_STREAM", dev_ino(&env.path("err.log")))
        .stderr(sink);
    assert_eq!(exit_code(cmd).await, 2);
    let err = std::fs::read_to_string(env.path("err.log")).unwrap();
    assert!(err.starts_with("<3>modelferry: error:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_stay_plain_when_journal_stream_names_another_file() {
    // As in an `upload` started by a service with its stderr redirected:
    // JOURNAL_STREAM is inherited but names the service's stream, not ours.
    let env = Env::start(quick()).await;
    let other = env.config.clone();
    let (code, log) = upload_logging_to_file(&env, |_| dev_ino(&other)).await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("m.tar: succeeded"), "{log}");
    for line in log.lines() {
        assert!(!line.starts_with('<'), "no priority prefix: {line}");
    }
}

/// Every `modelferry_*` name the dashboard mentions.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/grafana/modelferry.json");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).expect("the dashboard is JSON");
    fn strings<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::String(s) => out.push(s),
            serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(&json, &mut all);
    let mut names = BTreeSet::new();
    for s in all {
        let mut rest = s;
        while let Some(i) = rest.find("modelferry_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

/// The series names in an exposition (`name{...} v` or `name v`).
fn served(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_present_from_zero_ready_with_the_platform_up_and_the_dashboard_served() {
    let port = free_port();
    let env = Env::daemon_env(quick(), metrics_settings(port, ""), "").await;
    let d = env.daemon();
    let zero = wait_for_status(port, "/metrics", 200, Duration::from_secs(30)).await;
    let mut needles = vec![
        "modelferry_uploaded_bytes_total 0".to_string(),
        "modelferry_last_success_timestamp_seconds 0".to_string(),
        "modelferry_api_key_rejected 0".to_string(),
        "modelferry_build_info{version=\"".to_string(),
    ];
    for reason in [
        "network",
        "timeout",
        "rate_limited",
        "server_error",
        "malformed_answer",
    ] {
        needles.push(format!("modelferry_retries_total{{reason=\"{reason}\"}} 0"));
    }
    for result in ["succeeded", "failed", "cancelled", "duplicate"] {
        needles.push(format!("modelferry_imports_total{{result=\"{result}\"}} 0"));
    }
    for call in ["start", "chunk", "complete", "dock_status"] {
        needles.push(format!(
            "modelferry_request_duration_seconds_count{{call=\"{call}\"}} 0"
        ));
    }
    for state in ["queued", "uploading", "completing", "importing"] {
        needles.push(format!("modelferry_jobs{{state=\"{state}\"}} 0"));
    }
    for n in &needles {
        assert!(zero.contains(n.as_str()), "{n} from the start in:\n{zero}");
    }
    let names = served(&zero);
    for m in dashboard_metrics() {
        assert!(names.contains(&m), "the dashboard's {m} is served");
    }
    for m in [
        "modelferry_uploaded_bytes_total",
        "modelferry_jobs",
        "modelferry_imports_total",
        "modelferry_retries_total",
        "modelferry_api_key_rejected",
    ] {
        assert!(dashboard_metrics().contains(m), "the dashboard shows {m}");
    }
    assert_eq!(get(port, "/readyz").await.map(|r| r.0), Some(200));

    let staged = env.path("m.tar");
    make_tar(&staged, 200_000, 3);
    std::fs::rename(&staged, env.drop_dir().join("m.tar")).unwrap();
    wait_until(Duration::from_secs(30), "filed", || {
        env.done_dir().join("m.tar.receipt.json").exists()
    })
    .await;
    let (status, body) = get(port, "/readyz").await.expect("readyz answers");
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let after = wait_for_status(port, "/metrics", 200, Duration::from_secs(5)).await;
    assert!(
        after.contains("modelferry_imports_total{result=\"succeeded\"} 1"),
        "{after}"
    );
    assert!(
        !after.contains("modelferry_request_duration_seconds_count{call=\"start\"} 0"),
        "the start call was timed:\n{after}"
    );
    assert!(
        !after.contains("modelferry_last_success_timestamp_seconds 0\n"),
        "{after}"
    );
    d.sigterm();
    d.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_the_platform_rejects_the_key() {
    let port = free_port();
    let opts = EmulatorOptions {
        api_key: Some("another-key".into()),
        ..quick()
    };
    let env = Env::daemon_env(opts, metrics_settings(port, ""), "").await;
    let d = env.daemon();
    wait_for_status(port, "/readyz", 200, Duration::from_secs(30)).await;
    let staged = env.path("m.tar");
    make_tar(&staged, 50_000, 4);
    std::fs::rename(&staged, env.drop_dir().join("m.tar")).unwrap();
    let body = wait_for_status(port, "/readyz", 503, Duration::from_secs(30)).await;
    assert!(body.contains("rejects the API key"), "{body}");
    assert_eq!(
        get(port, "/healthz").await.map(|r| r.0),
        Some(200),
        "still alive"
    );
    d.sigterm();
    d.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_once_the_platform_is_unreachable_past_unready_after() {
    let port = free_port();
    let env = Env::daemon_env(
        quick(),
        metrics_settings(port, "unready_after = \"1s\""),
        "",
    )
    .await;
    // Nothing listens there: every call fails to connect.
    let cfg = std::fs::read_to_string(&env.config).unwrap().replace(
        &env.emu.base_url(),
        &format!("http://127.0.0.1:{}", free_port()),
    );
    std::fs::write(&env.config, cfg).unwrap();
    let d = env.daemon();
    wait_for_status(port, "/readyz", 200, Duration::from_secs(30)).await;
    let staged = env.path("m.tar");
    make_tar(&staged, 50_000, 5);
    std::fs::rename(&staged, env.drop_dir().join("m.tar")).unwrap();
    let body = wait_for_status(port, "/readyz", 503, Duration::from_secs(30)).await;
    assert!(body.contains("unreachable"), "{body}");
    let m = wait_for_status(port, "/metrics", 200, Duration::from_secs(5)).await;
    assert!(
        !m.contains("modelferry_retries_total{reason=\"network\"} 0"),
        "connection failures counted as retries:\n{m}"
    );
    d.sigterm();
    d.finish().await;
}
