//! The platform client: the only code that talks HTTP to the platform.
//!
//! It makes the four calls of platform-api.md with the `x-api-key` header,
//! reads answers leniently ([`wire`]), and classifies every failure
//! ([`PlatformError`]) so callers can decide: retry, new session, pause on a
//! rejected key, or fail the job. Redirects are never followed, so the key
//! cannot travel to another host. A `Retry-After` seen by any call slows
//! every call made through the same client. Nothing the platform says
//! reaches the caller unsanitised: ids are checked and text is cleaned by
//! [`sanitize`], the one place that knows how.

mod error;
pub mod sanitize;
pub mod stats;
pub mod throttle;
pub mod wire;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::multipart::{Form, Part};
use reqwest::{Body, StatusCode, Url};
use tokio::time::Instant;

pub use error::{ErrorKind, Op, PlatformError};
pub use sanitize::{IdKind, PlatformId, PlatformText};
pub use stats::PlatformStats;
pub use wire::{CompleteInfo, DockStatus, ImportStatus, SessionInfo, StartRequest};

use sanitize::Sanitizer;
use wire::WireError;

use crate::secret::Secret;

/// Largest answer body read; the platform's answers are small JSON.
const MAX_ANSWER: usize = 256 * 1024;

/// How to reach the platform.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The platform's address (scheme, host, optional path prefix).
    pub base_url: Url,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one whole request.
    pub request_timeout: Duration,
}

/// The platform client. Cheap to clone; clones share the connection pool,
/// the key and the `Retry-After` pause.
#[derive(Clone)]
pub struct PlatformClient {
    http: reqwest::Client,
    base: Url,
    key: Arc<RwLock<Secret>>,
    /// Calls wait until this instant (set by `Retry-After`).
    not_before: Arc<Mutex<Option<Instant>>>,
    /// Every call's duration and outcome go here (metrics, `/readyz`).
    stats: Arc<PlatformStats>,
    /// `upload.max_rate`, shared by every chunk body sent through clones.
    rate: throttle::RateLimit,
}

impl PlatformClient {
    /// A client for `settings`, sending `key`.
    pub fn new(settings: &ClientSettings, key: Secret) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("modelferry/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(PlatformClient {
            http,
            base: settings.base_url.clone(),
            key: Arc::new(RwLock::new(key)),
            not_before: Arc::new(Mutex::new(None)),
            stats: Arc::default(),
            rate: throttle::RateLimit::default(),
        })
    }

    /// Reports every call to `stats` (the daemon's metrics) from now on.
    pub fn with_stats(mut self, stats: Arc<PlatformStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Limits every chunk upload made through this client and its clones
    /// together to `bytes_per_sec` (0: no limit); applies at once, also to
    /// bodies being sent.
    pub fn set_max_rate(&self, bytes_per_sec: u64) {
        self.rate.set_rate(bytes_per_sec);
    }

    /// The upload rate limit in bytes per second; 0 = none.
    pub fn max_rate(&self) -> u64 {
        self.rate.rate()
    }

    /// Replaces the API key (SIGHUP re-reads it).
    pub fn set_key(&self, key: Secret) {
        *self.key.write().unwrap_or_else(|p| p.into_inner()) = key;
        self.stats.key_replaced();
    }

    fn key(&self) -> Secret {
        self.key.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The URL of `segments` under the base URL. Each segment is
    /// percent-encoded (`/` too); `.` and `..` would be dropped, so ids are
    /// checked ([`Sanitizer::id`]) before they get here.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // The base URL was validated to have a host, so it can have segments.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Time left of a `Retry-After` pause any call received.
    pub fn paused_for(&self) -> Option<Duration> {
        let until = (*self.not_before.lock().unwrap_or_else(|p| p.into_inner()))?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    fn pause_until(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut nb = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
        if nb.is_none_or(|cur| cur < until) {
            *nb = Some(until);
        }
    }

    /// Waits out a `Retry-After` pause, then gives the key for the call: read
    /// after the pause, so a key replaced meanwhile is the one sent.
    async fn ready(&self) -> Secret {
        if let Some(wait) = self.paused_for() {
            tokio::time::sleep(wait).await;
        }
        self.key()
    }

    /// Sends a request with `key` and returns the body of a 2xx answer, or
    /// the error; its duration (not counting a `Retry-After` pause, waited
    /// out in [`Self::ready`]) and outcome go to the stats.
    async fn send(
        &self,
        op: Op,
        req: reqwest::RequestBuilder,
        key: &Secret,
    ) -> Result<(u16, Bytes), PlatformError> {
        let started = Instant::now();
        let result = self.exchange(op, req, key).await;
        let outcome = result.as_ref().map(|_| ());
        self.stats.record(op, started.elapsed(), outcome);
        result
    }

    /// [`Self::send`] without the stats: the exchange itself, whose error
    /// excerpts are sanitised against `key`.
    async fn exchange(
        &self,
        op: Op,
        req: reqwest::RequestBuilder,
        key: &Secret,
    ) -> Result<(u16, Bytes), PlatformError> {
        let mut headers = HeaderMap::new();
        let mut value = HeaderValue::from_str(key.expose()).map_err(|_| PlatformError {
            op,
            kind: ErrorKind::Auth,
            status: None,
            retry_after: None,
            message: "the API key has characters a header cannot carry".into(),
            platform_message: None,
        })?;
        value.set_sensitive(true);
        headers.insert("x-api-key", value);
        let resp = req
            .headers(headers)
            .send()
            .await
            .map_err(|e| PlatformError::transport(op, &e))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(error::parse_retry_after);
        let body = read_limited(resp)
            .await
            .map_err(|e| PlatformError::transport(op, &e))?;
        if status.is_success() {
            return Ok((status.as_u16(), body));
        }
        if let Some(d) = retry_after {
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                self.pause_until(d);
            }
        }
        Err(PlatformError::from_status(
            op,
            status.as_u16(),
            retry_after,
            &body,
            &Sanitizer::new(key),
        ))
    }

    /// Starts an import session.
    pub async fn start_session(&self, req: &StartRequest) -> Result<SessionInfo, PlatformError> {
        let op = Op::StartSession;
        let key = self.ready().await;
        let url = self.url(&["api", "public", "files", "session", "start"]);
        let (status, body) = self.send(op, self.http.post(url).json(req), &key).await?;
        wire::parse_start(&body, &Sanitizer::new(&key))
            .map_err(|e| unusable(op, status, e, &body, &key))
    }

    /// Checks an id stored from an earlier answer, once, before the calls
    /// that take it checked ([`Self::upload_chunk`]); `op` is the call it is
    /// for, which a refusal names.
    pub fn check_id(&self, op: Op, kind: IdKind, raw: &str) -> Result<PlatformId, PlatformError> {
        checked(op, &Sanitizer::new(&self.key()), kind, raw)
    }

    /// Uploads one chunk (0-based) as `multipart/form-data` into session
    /// `session_id`, checked once for all its chunks ([`Self::check_id`]).
    pub async fn upload_chunk(
        &self,
        session_id: &PlatformId,
        chunk: u64,
        file_name: &str,
        data: Bytes,
    ) -> Result<(), PlatformError> {
        let op = Op::UploadChunk(chunk);
        let key = self.ready().await;
        let san = Sanitizer::new(&key);
        let len = data.len() as u64;
        // Streamed in slices through the process's rate limit (whole when
        // there is none), so the limit holds inside each request.
        let body = Body::wrap_stream(self.rate.stream(data));
        let part = Part::stream_with_length(body, len)
            .file_name(file_name.to_string())
            .mime_str("application/octet-stream")
            .map_err(|e| PlatformError::transport(op, &e))?;
        // chunkNumber first: servers that stream the form (multer and the
        // like) then know the chunk before the file part arrives.
        let form = Form::new()
            .text("chunkNumber", chunk.to_string())
            .part("file", part);
        let url = self.url(&["api", "public", "files", "session", session_id.as_str()]);
        let (status, body) = self
            .send(op, self.http.post(url).multipart(form), &key)
            .await?;
        wire::check_chunk_answer(&body, chunk, session_id, &san)
            .map_err(|e| unusable(op, status, e, &body, &key))
    }

    /// Completes the import of a session whose chunks are all uploaded.
    pub async fn complete(&self, session_id: &str) -> Result<CompleteInfo, PlatformError> {
        let op = Op::Complete;
        let key = self.ready().await;
        let san = Sanitizer::new(&key);
        let session_id = checked(op, &san, IdKind::Session, session_id)?;
        let url = self.url(&[
            "api",
            "public",
            "files",
            "session",
            session_id.as_str(),
            "complete",
        ]);
        let (status, body) = self
            .send(op, self.http.post(url).header("content-length", "0"), &key)
            .await?;
        wire::parse_complete(&body, &san).map_err(|e| unusable(op, status, e, &body, &key))
    }

    /// Reads where an import stands.
    pub async fn dock_status(&self, dock_status_id: &str) -> Result<DockStatus, PlatformError> {
        let op = Op::DockStatus;
        let key = self.ready().await;
        let san = Sanitizer::new(&key);
        let dock_status_id = checked(op, &san, IdKind::DockStatus, dock_status_id)?;
        let url = self.url(&["api", "public", "dock-status", dock_status_id.as_str()]);
        let (status, body) = self.send(op, self.http.get(url), &key).await?;
        wire::parse_dock_status(&body, &san).map_err(|e| unusable(op, status, e, &body, &key))
    }
}

/// Checks an id given to a call: one stored before ids were checked, or
/// from an older version, must not reach a URL unchecked either.
fn checked(op: Op, san: &Sanitizer, kind: IdKind, id: &str) -> Result<PlatformId, PlatformError> {
    san.id(kind, id)
        .map_err(|bad| PlatformError::bad_id(op, None, &bad))
}

/// The error for a 2xx answer that could not be used.
fn unusable(op: Op, status: u16, e: WireError, body: &[u8], key: &Secret) -> PlatformError {
    match e {
        WireError::Malformed(detail) => {
            PlatformError::malformed(op, status, &detail, Sanitizer::new(key).excerpt(body))
        }
        WireError::BadId(bad) => PlatformError::bad_id(op, Some(status), &bad),
    }
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Bytes, reqwest::Error> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = MAX_ANSWER.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Ok(Bytes::from(buf))
}

/// The `fileExtension` for a file name: compound tar extensions whole
/// (`tar.gz`), otherwise the last one; `tar` when the name has none.
pub fn file_extension(file_name: &str) -> String {
    let lower = file_name.to_ascii_lowercase();
    for compound in ["tar.gz", "tar.bz2", "tar.xz", "tar.zst"] {
        if lower.ends_with(&format!(".{compound}")) {
            return compound.to_string();
        }
    }
    match file_name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.is_empty() => ext.to_string(),
        _ => "tar".to_string(),
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod naming_tests {
    use super::*;

    #[test]
    fn extensions() {
        assert_eq!(file_extension("m.tar"), "tar");
        assert_eq!(file_extension("m.v2.TAR.GZ"), "tar.gz");
        assert_eq!(file_extension("m.tgz"), "tgz");
        assert_eq!(file_extension("model"), "tar");
        assert_eq!(file_extension(".hidden"), "tar");
    }

    #[test]
    fn urls_keep_a_path_prefix_and_escape_ids() {
        let c = PlatformClient::new(
            &ClientSettings {
                base_url: Url::parse("https://h.example/prefix/").unwrap(),
                connect_timeout: Duration::from_secs(1),
                request_timeout: Duration::from_secs(1),
            },
            Secret::new("k"),
        )
        .unwrap();
        assert_eq!(
            c.url(&["api", "public", "files", "session", "a/b"])
                .as_str(),
            "https://h.example/prefix/api/public/files/session/a%2Fb"
        );
    }
}
