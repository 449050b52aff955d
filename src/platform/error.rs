//! How a failed platform call is classified, and what of the answer is kept.

use std::fmt;
use std::time::{Duration, SystemTime};

/// Which call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    StartSession,
    UploadChunk(u64),
    Complete,
    DockStatus,
}

impl Op {
    /// Whether the URL names a session, so 404/410 mean "the session is gone".
    fn is_session_url(self) -> bool {
        matches!(self, Op::UploadChunk(_) | Op::Complete)
    }

    /// The job stage this call belongs to, as error receipts name it.
    pub fn stage(self) -> &'static str {
        match self {
            Op::StartSession => "start",
            Op::UploadChunk(_) => "upload",
            Op::Complete => "complete",
            Op::DockStatus => "import",
        }
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
    /// Any other answer: the request itself is wrong; the job fails.
    Fatal,
}

/// A platform call that did not succeed. Never carries the API key.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op}: {message}")]
pub struct PlatformError {
    pub op: Op,
    pub kind: ErrorKind,
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    /// What went wrong, with a short excerpt of the platform's answer.
    pub message: String,
    /// The platform's own message, when its answer carried one.
    pub platform_message: Option<String>,
}

impl PlatformError {
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    pub(crate) fn transport(op: Op, err: &reqwest::Error) -> Self {
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

    pub(crate) fn malformed(op: Op, status: u16, detail: &str, body: &[u8]) -> Self {
        PlatformError {
            op,
            kind: ErrorKind::Transient,
            status: Some(status),
            retry_after: None,
            message: format!(
                "unexpected answer (HTTP {status}): {detail}; body: {}",
                excerpt(body)
            ),
            platform_message: None,
        }
    }

    /// Classifies a non-2xx answer by the table in platform-api.md.
    pub(crate) fn from_status(
        op: Op,
        status: u16,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> Self {
        let platform_message = platform_message(body);
        let said = platform_message
            .clone()
            .unwrap_or_else(|| excerpt(body))
            .to_string();
        let expired = said.to_ascii_lowercase().contains("expired");
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

    /// Replaces any occurrence of `key` (a platform echoing the key back).
    pub(crate) fn redact(mut self, key: &str) -> Self {
        if !key.is_empty() {
            self.message = self.message.replace(key, "[redacted]");
            self.platform_message = self.platform_message.map(|m| m.replace(key, "[redacted]"));
        }
        self
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

const EXCERPT_CHARS: usize = 200;

/// A short single-line excerpt of an answer body, whatever its shape.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    let mut in_tag = false;
    let mut last_space = true;
    for ch in text.chars() {
        match ch {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            _ if in_tag => {}
            c if c.is_whitespace() || c.is_control() => {
                if !last_space {
                    out.push(' ');
                    last_space = true;
                }
            }
            c => {
                out.push(c);
                last_space = false;
            }
        }
        if out.chars().count() >= EXCERPT_CHARS {
            out.push('…');
            break;
        }
    }
    out.trim().to_string()
}

/// The platform's message from an error body shaped `{"error": ...}`,
/// `{"message": ...}` or `{"errors": [{"msg": ...}]}`.
pub(crate) fn platform_message(body: &[u8]) -> Option<String> {
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
    Some(excerpt(m.as_bytes()))
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

    #[test]
    fn classifies_by_the_table() {
        let k = |op, s| PlatformError::from_status(op, s, None, b"").kind;
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
        let e = PlatformError::from_status(
            Op::UploadChunk(1),
            400,
            None,
            br#"{"message":"Session has expired"}"#,
        );
        assert_eq!(e.kind, SessionGone);
        let e = PlatformError::from_status(
            Op::StartSession,
            400,
            None,
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
        let e = PlatformError::from_status(
            Op::Complete,
            502,
            None,
            b"<html><body><h1>502 Bad Gateway</h1>\n\n<p>nginx</p></body></html>",
        );
        assert!(e.message.contains("502 Bad Gateway nginx"), "{}", e.message);
        let long = "x".repeat(5000);
        assert!(excerpt(long.as_bytes()).chars().count() <= EXCERPT_CHARS + 1);
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
    fn redacts_an_echoed_key() {
        let e = PlatformError::from_status(
            Op::StartSession,
            401,
            None,
            br#"{"message":"bad key kg-123"}"#,
        )
        .redact("kg-123");
        assert!(!e.to_string().contains("kg-123"));
        assert!(!e.platform_message.unwrap().contains("kg-123"));
    }
}
