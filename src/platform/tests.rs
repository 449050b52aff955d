//! The client against a tiny scripted server on 127.0.0.1:0: headers sent,
//! redirects refused, `Retry-After` shared by every call, hostile answers
//! sanitised, unusable ids refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use axum::Router;

use super::*;

struct Seen {
    hits: AtomicUsize,
    key: Mutex<Option<String>>,
}

async fn serve(answer: fn() -> axum::response::Response) -> (PlatformClient, Arc<Seen>) {
    let seen = Arc::new(Seen {
        hits: AtomicUsize::new(0),
        key: Mutex::new(None),
    });
    let s2 = seen.clone();
    let app = Router::new().fallback(any(move |headers: HeaderMap| {
        let s = s2.clone();
        async move {
            s.hits.fetch_add(1, Ordering::SeqCst);
            *s.key.lock().unwrap() = headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            answer()
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = PlatformClient::new(
        &ClientSettings {
            base_url: Url::parse(&format!("http://{addr}/prefix")).unwrap(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        },
        Secret::new("kg-unit-test-key"),
    )
    .unwrap();
    (client, seen)
}

fn start_req() -> StartRequest {
    StartRequest {
        file_context: "model".into(),
        total_chunks: 1,
        file_extension: "tar".into(),
        file_name: "m.tar".into(),
        file_size: 1,
        is_adapter: false,
    }
}

#[tokio::test]
async fn sends_the_key_in_x_api_key() {
    let (c, seen) =
        serve(|| axum::Json(serde_json::json!({"sessionId": "s", "modelId": "m"})).into_response())
            .await;
    let s = c.start_session(&start_req()).await.unwrap();
    assert_eq!(s.session_id.as_str(), "s");
    assert_eq!(
        seen.key.lock().unwrap().as_deref(),
        Some("kg-unit-test-key")
    );
}

#[tokio::test]
async fn never_follows_a_redirect() {
    let (c, seen) = serve(|| {
        (
            StatusCode::FOUND,
            [("location", "http://127.0.0.2:9/elsewhere")],
            "",
        )
            .into_response()
    })
    .await;
    let e = c.complete("s").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Fatal);
    assert!(e.message.contains("redirect"), "{}", e.message);
    assert_eq!(seen.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn retry_after_on_429_pauses_every_call() {
    let (c, _) = serve(|| {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "3")],
            "slow down",
        )
            .into_response()
    })
    .await;
    let e = c.dock_status("ds").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
    let other = c.clone();
    let left = other.paused_for().expect("the pause is shared by clones");
    assert!(
        left > Duration::from_secs(2) && left <= Duration::from_secs(3),
        "{left:?}"
    );
}

#[tokio::test]
async fn a_garbled_answer_is_transient_and_keeps_an_excerpt() {
    let (c, _) = serve(|| {
        "<html><body>maintenance for kg-unit-test-key\n\x1b[31mnow</body></html>".into_response()
    })
    .await;
    let e = c.start_session(&start_req()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Transient);
    assert!(
        e.message.ends_with("body: maintenance for [redacted] now"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn a_session_id_naming_the_start_endpoint_is_fatal() {
    let (c, _) =
        serve(|| axum::Json(serde_json::json!({"sessionId": "start"})).into_response()).await;
    let e = c.start_session(&start_req()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Fatal);
    assert_eq!(e.status, Some(200));
    assert!(
        e.message.contains("unusable session id \"start\""),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn a_failed_import_message_is_sanitised() {
    let (c, _) = serve(|| {
        axum::Json(serde_json::json!({"status": "FAILED", "message": "key kg-unit-test-key\n\u{1b}[2Jgone"}))
            .into_response()
    })
    .await;
    let d = c.dock_status("ds-1").await.unwrap();
    assert_eq!(d.message.unwrap().as_str(), "key [redacted] gone");
}

#[tokio::test]
async fn unusable_ids_given_to_a_call_are_refused_before_sending() {
    let (c, seen) =
        serve(|| axum::Json(serde_json::json!({"status": "SUCCESS"})).into_response()).await;
    let huge = "x".repeat(100_000);
    let errors = [
        // A stored session id is checked once before its chunks are sent.
        c.check_id(Op::UploadChunk(0), IdKind::Session, "..")
            .unwrap_err(),
        c.complete("start").await.unwrap_err(),
        c.complete("s\n1").await.unwrap_err(),
        // Too long for a URL: once "builder error", retried as transient.
        c.dock_status(&huge).await.unwrap_err(),
    ];
    for e in errors {
        assert_eq!(e.kind, ErrorKind::Fatal, "{e}");
        assert!(e.message.contains("unusable"), "{e}");
        assert!(e.message.len() < 200, "the id is shortened: {e}");
        assert!(!e.message.chars().any(char::is_control), "{e:?}");
    }
    assert_eq!(seen.hits.load(Ordering::SeqCst), 0);
}
