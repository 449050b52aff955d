//! How a failed platform call is classified, and what of the answer is kept.
//!
//! What is kept of an answer is only ever [`PlatformText`] (see
//! [`super::sanitize`]); the rest of a message is our own wording, which is
//! never redacted or rewritten.

use std::fmt;
use std::time::{Duration, SystemTime};

use super::sanitize::{BadId, PlatformText, Sanitizer};

/// Which call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Starting an import session.
    StartSession,
    /// Uploading the chunk with this index.
    UploadChunk(u64),
    /// Completing the import.
    Complete,
    /// Reading an import's dock status.
    DockStatus,
}

impl Op {
    /// Whether the URL names a session, so 404/410 mean "the session is gone".
    fn is_session_url(self) -> bool {
        matches!(self, Op::UploadChunk(_) | Op::Complete)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::StartSession => f.write_str("start session"),
            Op::UploadChunk(n) => write!(f, "upload chunk {n}"),
            Op::Complete => f.write_str("complete import"),
            Op::DockStatus => f.write_str("get dock status"),
        }
    }
}

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Network trouble, timeouts, 408, 429, 5xx, a garbled answer: retry.
    Transient,
    /// 401/403: the API key was rejected; keep every file, try later.
    Auth,
    /// 404/410 (or 400 "expired") on a session URL: start a new session.
    SessionGone,
    /// 413: the chunk is larger than the platform takes.
    TooLarge,
    /// Any other answer, or an id the platform gave that cannot be used:
    /// the job fails.
    Fatal,
}

/// A platform call that did not succeed. Never carries the API key.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op}: {message}")]
pub struct PlatformError {
    /// The call that failed.
    pub op: Op,
    /// What the caller should do about it.
    pub kind: ErrorKind,
    /// The HTTP status, when the platform answered.
    pub status: Option<u16>,
    /// How long the platform asked to wait (`Retry-After`), if it did.
    pub retry_after: Option<Duration>,
    /// What went wrong in our words, with a sanitised excerpt of the
    /// platform's answer.
    pub message: String,
    /// The platform's own message, when its answer carried one.
    pub platform_message: Option<PlatformText>,
}

impl PlatformError {
    /// Whether the call may simply be retried ([`ErrorKind::Transient`]).
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    pub(crate) fn transport(op: Op, err: &reqwest::Error) -> Self {
        if err.is_builder() {
            // The request could not even be built: sending it again builds
            // the same request.
            return PlatformError {
                op,
                kind: ErrorKind::Fatal,
                status: None,
                retry_after: None,
                message: format!("cannot build the request: {}", error_chain(err)),
                platform_message: None,
            };
        }
        let what = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "could not connect"
        } else {
            "connection failed"
        };
        PlatformError {
            op,
            kind: ErrorKind::Transient,
            status: None,
            retry_after: None,
            message: format!("{what}: {}", error_chain(err)),
            platform_message: None,
        }
    }

    /// A 2xx answer that is not what the call expects. `detail` is our
    /// wording (it may quote [`PlatformText`]).
    pub(crate) fn malformed(op: Op, status: u16, detail: &str, excerpt: PlatformText) -> Self {
        PlatformError {
            op,
            kind: ErrorKind::Transient,
            status: Some(status),
            retry_after: None,
            message: format!("unexpected answer (HTTP {status}): {detail}; body: {excerpt}"),
            platform_message: None,
        }
    }

    /// The platform gave an id (or one stored from its earlier answer) that
    /// cannot be used: asking again would not make it usable.
    pub(crate) fn bad_id(op: Op, status: Option<u16>, bad: &BadId) -> Self {
        PlatformError {
            op,
            kind: ErrorKind::Fatal,
            status,
            retry_after: None,
            message: format!("the platform returned an {bad}"),
            platform_message: None,
        }
    }

    /// Classifies a non-2xx answer by the table in platform-api.md.
    pub(crate) fn from_status(
        op: Op,
        status: u16,
        retry_after: Option<Duration>,
        body: &[u8],
        san: &Sanitizer,
    ) -> Self {
        // Classified on the raw answer: sanitising must not change the kind.
        let raw_message = platform_message(body);
        let expired = raw_message
            .as_deref()
            .map_or_else(|| String::from_utf8_lossy(body), Into::into)
            .to_ascii_lowercase()
            .contains("expired");
        let platform_message = raw_message.map(|m| san.text(&m));
        let said = platform_message
            .clone()
            .unwrap_or_else(|| san.excerpt(body));
        let (kind, what) = match status {
            401 | 403 => (ErrorKind::Auth, "the API key was rejected"),
            404 | 410 if op.is_session_url() => (ErrorKind::SessionGone, "the session is gone"),
            400 if op.is_session_url() && expired => (ErrorKind::SessionGone, "the session expired"),
            408 | 429 => (ErrorKind::Transient, "the platform asks to retry"),
            500..=599 => (ErrorKind::Transient, "the platform had trouble"),
            413 => (
                ErrorKind::TooLarge,
                "the chunk is larger than the platform takes; lower upload.chunk_size",
            ),
            300..=399 => (
                ErrorKind::Fatal,
                "the platform answered with a redirect, which is not followed (the API key must not travel elsewhere); check platform.base_url",
            ),
            404 if op == Op::StartSession => (
                ErrorKind::Fatal,
                "the import API was not found; check platform.base_url",
            ),
            _ => (ErrorKind::Fatal, "the platform refused the request"),
        };
        let message = if said.is_empty() {
            format!("HTTP {status}: {what}")
        } else {
            format!("HTTP {status}: {what}: {said}")
        };
        PlatformError {
            op,
            kind,
            status: Some(status),
            retry_after,
            message,
            platform_message,
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let t = e.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = e.source();
    }
    s
}

/// The platform's message, raw, from an error body shaped `{"error": ...}`,
/// `{"message": ...}` or `{"errors": [{"msg": ...}]}`.
fn platform_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    fn text(v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            serde_json::Value::Object(o) => ["message", "msg", "error"]
                .iter()
                .find_map(|k| o.get(*k).and_then(text)),
            _ => None,
        }
    }
    let m = ["message", "error", "errorMessage"]
        .iter()
        .find_map(|k| v.get(*k).and_then(text))
        .or_else(|| {
            v.get("errors")?
                .as_array()?
                .iter()
                .filter_map(text)
                .reduce(|a, b| format!("{a}; {b}"))
        })?;
    Some(m)
}

/// `Retry-After` as seconds or an HTTP date; capped so a wild value cannot
/// park the daemon for days.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    const CAP: Duration = Duration::from_secs(3600);
    let v = value.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(v).ok()?;
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(d.min(CAP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn from_status(op: Op, status: u16, body: &[u8]) -> PlatformError {
        let key = Secret::new("kg-123456789");
        PlatformError::from_status(op, status, None, body, &Sanitizer::new(&key))
    }

    #[test]
    fn classifies_by_the_table() {
        let k = |op, s| from_status(op, s, b"").kind;
        use ErrorKind::*;
        for s in [408, 429, 500, 502, 503, 504] {
            assert_eq!(k(Op::UploadChunk(0), s), Transient, "{s}");
        }
        assert_eq!(k(Op::StartSession, 401), Auth);
        assert_eq!(k(Op::Complete, 403), Auth);
        assert_eq!(k(Op::UploadChunk(3), 404), SessionGone);
        assert_eq!(k(Op::Complete, 410), SessionGone);
        assert_eq!(k(Op::StartSession, 404), Fatal);
        assert_eq!(k(Op::DockStatus, 404), Fatal);
        assert_eq!(k(Op::UploadChunk(0), 413), TooLarge);
        assert_eq!(k(Op::UploadChunk(0), 400), Fatal);
        assert_eq!(k(Op::UploadChunk(0), 302), Fatal);
        let e = from_status(
            Op::UploadChunk(1),
            400,
            br#"{"message":"Session has expired"}"#,
        );
        assert_eq!(e.kind, SessionGone);
        let e = from_status(
            Op::StartSession,
            400,
            br#"{"message":"Session has expired"}"#,
        );
        assert_eq!(e.kind, Fatal);
    }

    #[test]
    fn keeps_the_platforms_message_in_any_shape() {
        assert_eq!(
            platform_message(br#"{"error":"bad tar"}"#).as_deref(),
            Some("bad tar")
        );
        assert_eq!(
            platform_message(br#"{"message":"nope"}"#).as_deref(),
            Some("nope")
        );
        assert_eq!(
            platform_message(br#"{"errors":[{"msg":"a"},{"msg":"b"}]}"#).as_deref(),
            Some("a; b")
        );
        assert_eq!(
            platform_message(br#"{"error":{"message":"deep"}}"#).as_deref(),
            Some("deep")
        );
        assert_eq!(platform_message(b"<html>oops</html>"), None);
        let e = from_status(
            Op::Complete,
            502,
            b"<html><body><h1>502 Bad Gateway</h1>\n\n<p>nginx</p></body></html>",
        );
        assert!(e.message.contains("502 Bad Gateway nginx"), "{}", e.message);
    }

    #[test]
    fn retry_after_seconds_or_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("999999"), Some(Duration::from_secs(3600)));
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let d = parse_retry_after(&soon).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn redacts_an_echoed_key_only_in_what_the_platform_said() {
        let e = from_status(
            Op::StartSession,
            401,
            b"{\"message\":\"bad key kg-123456789\\n\\u001b[31m!\"}",
        );
        assert!(!e.to_string().contains("kg-123456789"), "{e}");
        let pm = e.platform_message.unwrap();
        assert_eq!(pm.as_str(), "bad key [redacted] !");
        assert_eq!(
            e.message,
            "HTTP 401: the API key was rejected: bad key [redacted] !"
        );
    }

    #[test]
    fn a_short_key_leaves_our_wording_alone() {
        let key = Secret::new("k");
        let e = PlatformError::from_status(
            Op::StartSession,
            401,
            None,
            br#"{"message":"unknown key k"}"#,
            &Sanitizer::new(&key),
        );
        assert_eq!(
            e.message,
            "HTTP 401: the API key was rejected: unknown key [redacted]"
        );
    }
}
