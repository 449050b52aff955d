//! A hostile platform: answers that echo the API key, carry newlines and
//! ANSI escapes, or hand out ids that cannot be used in a URL. A small
//! scripted server on 127.0.0.1:0 plays the platform; the emulator is not
//! used because it never misbehaves this way.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use modelferry::emulator::EmulatorOptions;

use crate::support::*;

/// One scripted answer: status, content type, body.
#[derive(Clone)]
struct Answer(u16, &'static str, String);

impl Answer {
    fn json(v: serde_json::Value) -> Answer {
        Answer(200, "application/json", v.to_string())
    }
}

/// The answers of the four endpoints.
#[derive(Clone)]
struct Script {
    start: Answer,
    chunk: Answer,
    complete: Answer,
    dock: Answer,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            start: Answer::json(serde_json::json!({"sessionId": "s-1", "modelId": "cm-1"})),
            chunk: Answer::json(serde_json::json!({"sessionId": "s-1"})),
            complete: Answer::json(
                serde_json::json!({"dock-statusId": "ds-1", "status": "IN_PROGRESS"}),
            ),
            dock: Answer::json(serde_json::json!({"_id": "ds-1", "status": "SUCCESS"})),
        }
    }
}

/// The scripted platform; `hits` lists "METHOD path" of every request.
struct Hostile {
    addr: SocketAddr,
    hits: Arc<Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Hostile {
    async fn start(script: Script) -> Hostile {
        let hits = Arc::new(Mutex::new(Vec::new()));
        let h2 = hits.clone();
        let app = Router::new().fallback(any(
            move |method: axum::http::Method, uri: Uri, _body: Bytes| {
                let hits = h2.clone();
                let script = script.clone();
                async move {
                    let path = uri.path().to_string();
                    hits.lock().unwrap().push(format!("{method} {path}"));
                    let a = if path.ends_with("/files/session/start") {
                        script.start
                    } else if path.contains("/dock-status/") {
                        script.dock
                    } else if path.ends_with("/complete") {
                        script.complete
                    } else {
                        script.chunk
                    };
                    let status = StatusCode::from_u16(a.0).unwrap();
                    let r: Response = (status, [("content-type", a.1)], a.2).into_response();
                    r
                }
            },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Hostile { addr, hits, server }
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }

    /// Points `env`'s config at this server instead of the emulator.
    fn take_over(&self, env: &Env) {
        let toml = std::fs::read_to_string(&env.config).unwrap();
        let toml = toml.replace(
            env.emu.base_url().trim_end_matches('/'),
            &format!("http://{}", self.addr),
        );
        assert!(toml.contains(&self.addr.to_string()), "{toml}");
        std::fs::write(&env.config, toml).unwrap();
    }
}

/// Text with the key, a newline and ANSI colour codes, as a careless
/// platform or proxy would echo it.
fn hostile_text() -> String {
    format!("request with key {API_KEY} refused\n\x1b[31mERROR\x1b[0m injected line")
}

fn contains_key(bytes: &[u8]) -> bool {
    bytes
        .windows(API_KEY.len())
        .any(|w| w == API_KEY.as_bytes())
}

/// The key is in none of the database files. The database itself must be
/// there (else the check would pass on nothing); its WAL and shared-memory
/// files only while they exist.
fn db_is_clean(env: &Env) {
    let db = env.db_path();
    let bytes = std::fs::read(&db).unwrap_or_else(|e| panic!("{}: {e}", db.display()));
    assert!(!contains_key(&bytes), "the key is in modelferry.db");
    for f in ["modelferry.db-wal", "modelferry.db-shm"] {
        if let Ok(bytes) = std::fs::read(db.with_file_name(f)) {
            assert!(!contains_key(&bytes), "the key is in {f}");
        }
    }
}

/// `status --json` shows no key and no control characters.
async fn status_is_clean(env: &Env) -> Vec<serde_json::Value> {
    let jobs = env.status_json().await;
    let shown = serde_json::to_string(&jobs).unwrap();
    assert!(!shown.contains(API_KEY), "{shown}");
    for j in &jobs {
        for k in ["error", "platform_message"] {
            if let Some(s) = j[k].as_str() {
                assert!(!s.chars().any(char::is_control), "{k}: {s:?}");
            }
        }
    }
    jobs
}

fn no_escapes(what: &str, text: &str) {
    assert!(
        !text.contains('\x1b'),
        "{what} carries an ANSI escape: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_message_with_the_key_reaches_no_log_status_database_or_receipt() {
    let host = Hostile::start(Script {
        dock: Answer::json(serde_json::json!({
            "_id": "ds-1", "status": "FAILED", "errorMessage": hostile_text(),
        })),
        ..Script::default()
    })
    .await;
    let env = Env::daemon_env(
        EmulatorOptions::default(),
        Settings {
            extra: "[telemetry]\nlog_level = \"trace\"\n".into(),
            ..Settings::default()
        },
        "",
    )
    .await;
    host.take_over(&env);
    let daemon = env.daemon();
    make_tar(&env.drop_dir().join("m.tar"), 100_000, 3);
    let receipt = env.failed_dir().join("m.tar.error.json");
    wait_until(Duration::from_secs(60), "the error receipt", || {
        receipt.exists()
    })
    .await;
    daemon.sigterm();
    // `finish` asserts the key is in neither stdout nor stderr.
    let r = daemon.finish().await;
    no_escapes("the log", &r.stderr);
    assert!(r.stderr.contains("injected line"), "{}", r.stderr);

    let bytes = std::fs::read(&receipt).unwrap();
    assert!(!contains_key(&bytes), "the key is in the error receipt");
    let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let pm = v["platform_message"].as_str().expect("kept the message");
    assert!(
        pm.contains("[redacted]") && pm.contains("injected line"),
        "{pm}"
    );
    assert!(!pm.chars().any(char::is_control), "{pm:?}");
    assert!(!v["error"].as_str().unwrap().chars().any(char::is_control));

    let jobs = status_is_clean(&env).await;
    assert_eq!(jobs[0]["state"], "failed");
    db_is_clean(&env);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_html_page_with_the_key_is_kept_only_redacted() {
    let page = format!(
        "<html><body><h1>Sign in</h1><p>{}</p></body></html>",
        hostile_text()
    );
    let host = Hostile::start(Script {
        start: Answer(200, "text/html", page),
        ..Script::default()
    })
    .await;
    let env = Env::start(EmulatorOptions::default()).await;
    host.take_over(&env);
    let file = env.path("m.tar");
    make_tar(&file, 100_000, 4);
    // A garbled answer is retried without end; stop once it was recorded.
    let upload = Proc::spawn(env.upload_cmd(&file, &["--no-progress"]));
    let deadline = Instant::now() + Duration::from_secs(60);
    let err = loop {
        let jobs = status_is_clean(&env).await;
        if let Some(e) = jobs.first().and_then(|j| j["error"].as_str()) {
            break e.to_string();
        }
        assert!(Instant::now() < deadline, "no retry was recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    upload.sigterm();
    let r = upload.finish().await;
    no_escapes("the log", &r.stderr);
    assert!(r.stderr.contains("[redacted]"), "{}", r.stderr);
    assert!(err.contains("unexpected answer"), "{err}");
    db_is_clean(&env);
}

/// Runs `upload` against a platform answering `script`; the job must fail
/// (exit 1) without a chunk sent, naming `what` and showing the id tamed.
async fn refuses(script: Script, what: &str, chunks_expected: usize) {
    let host = Hostile::start(script).await;
    let env = Env::start(EmulatorOptions::default()).await;
    host.take_over(&env);
    let file = env.path("m.tar");
    make_tar(&file, 10_000, 5);
    let mut cmd = env.upload_cmd(&file, &["--no-progress"]);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what}: the upload did not end (retried forever?)"))
        .unwrap();
    let r = Run::from(out);
    assert!(!r.all().contains(API_KEY), "{what}: {}", r.all());
    assert_eq!(r.code, 1, "{what}: {}", r.stderr);
    assert!(r.stderr.contains(what), "{what}: {}", r.stderr);
    no_escapes(what, &r.stderr);
    assert!(
        !r.stderr.contains(&"x".repeat(300)),
        "{what}: the id is shortened"
    );
    let chunks = host
        .hits()
        .iter()
        .filter(|h| h.starts_with("POST") && !h.ends_with("/start") && !h.ends_with("/complete"))
        .count();
    assert_eq!(chunks, chunks_expected, "{what}: {:?}", host.hits());
    assert!(
        !host.hits()[1..]
            .iter()
            .any(|h| h.ends_with("/session/start")),
        "{what}: nothing but the start goes to /session/start: {:?}",
        host.hits()
    );
    let jobs = status_is_clean(&env).await;
    assert_eq!(jobs[0]["state"], "failed", "{what}");
    db_is_clean(&env);
}

fn start_with(session: &str) -> Script {
    Script {
        start: Answer::json(serde_json::json!({"sessionId": session, "modelId": "cm-1"})),
        ..Script::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_session_ids_fail_the_job_before_any_chunk() {
    let long = "x".repeat(100_000);
    for id in [
        "..",
        ".",
        "start",
        "START",
        "s-1\n\x1b[2J",
        long.as_str(),
        API_KEY,
    ] {
        refuses(start_with(id), "unusable session id", 0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_model_and_dock_status_ids_fail_the_job() {
    refuses(
        Script {
            start: Answer::json(serde_json::json!({"sessionId": "s-1", "modelId": "cm\x1b[1m"})),
            ..Script::default()
        },
        "unusable model id",
        0,
    )
    .await;
    refuses(
        Script {
            complete: Answer::json(
                serde_json::json!({"dock-statusId": "..", "status": "IN_PROGRESS"}),
            ),
            ..Script::default()
        },
        "unusable dock status id",
        1,
    )
    .await;
}

/// An echoed session id is only compared with the one sent: a garbled one
/// names another session, an answer garbled on the way, retried like any
/// other (it used to fail the job as an unusable id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbled_session_id_echo_is_a_retried_garbled_answer() {
    let host = Hostile::start(Script {
        chunk: Answer::json(serde_json::json!({"sessionId": "s-1\r\nX-Injected: 1"})),
        ..Script::default()
    })
    .await;
    let env = Env::start(EmulatorOptions::default()).await;
    host.take_over(&env);
    let file = env.path("m.tar");
    make_tar(&file, 10_000, 5);
    let upload = Proc::spawn(env.upload_cmd(&file, &["--no-progress"]));
    let deadline = Instant::now() + Duration::from_secs(60);
    let err = loop {
        let jobs = status_is_clean(&env).await;
        if let Some(e) = jobs.first().and_then(|j| j["error"].as_str()) {
            assert_eq!(jobs[0]["state"], "uploading", "{e}");
            break e.to_string();
        }
        assert!(Instant::now() < deadline, "no retry was recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    upload.sigterm();
    let r = upload.finish().await;
    no_escapes("the log", &r.stderr);
    assert!(!r.stderr.contains("X-Injected: 1\r"), "{}", r.stderr);
    assert!(err.contains("another session"), "{err}");
    db_is_clean(&env);
}
