//! The client's reading of the platform's request and answer bodies.
//!
//! Answers are read leniently, as platform-api.md asks: unknown fields are
//! ignored, `chunkNumber` may be a string or a number, and the dock status id
//! may be spelled `dock-statusId`, `dockstatusId` or `dockStatusId`. Every
//! id and message leaves here checked or sanitised ([`Sanitizer`]); an id
//! that cannot be used is a [`WireError::BadId`], not a garbled answer.

use std::borrow::Cow;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

use super::sanitize::{BadId, IdKind, PlatformId, PlatformText, Sanitizer};

/// Why an answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Not the expected shape (our wording, quoting only sanitised text):
    /// perhaps a proxy's page; worth asking again.
    Malformed(String),
    /// The answer carried an id that cannot be used; asking again does not help.
    BadId(BadId),
}

impl From<&str> for WireError {
    fn from(s: &str) -> Self {
        WireError::Malformed(s.to_string())
    }
}

impl From<BadId> for WireError {
    fn from(b: BadId) -> Self {
        WireError::BadId(b)
    }
}

/// Body of "start an import session".
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StartRequest {
    /// `fileContext`: `"model"` for model imports.
    pub file_context: String,
    /// `totalChunks`: chunks the file is split into.
    pub total_chunks: u64,
    /// `fileExtension`, e.g. `"tar"`.
    pub file_extension: String,
    /// `fileName`: the base name only.
    pub file_name: String,
    /// `fileSize`, in bytes.
    pub file_size: u64,
    /// `isAdapter`: an adapter (e.g. LoRA) rather than a full model.
    pub is_adapter: bool,
}

/// What the platform said when it opened a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// `sessionId`.
    pub session_id: PlatformId,
    /// `None` when `expirationDate` is absent or unreadable.
    pub expires_at: Option<SystemTime>,
    /// `modelId`, when the platform gave one.
    pub model_id: Option<PlatformId>,
}

/// Where an import stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportStatus {
    /// `IN_PROGRESS`, or any state not named here: keep polling.
    InProgress,
    /// `SUCCESS`: imported.
    Success,
    /// `FAILED`: the import failed.
    Failed,
}

/// What the platform said to `complete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteInfo {
    /// The dock status id to poll.
    pub dock_status_id: PlatformId,
    /// `modelId`, when the platform gave one.
    pub model_id: Option<PlatformId>,
    /// Where the import stands (`IN_PROGRESS` when the answer does not say).
    pub status: ImportStatus,
}

/// What dock status said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockStatus {
    /// Where the import stands.
    pub status: ImportStatus,
    /// `modelId`, when the platform gave one.
    pub model_id: Option<PlatformId>,
    /// The platform's message for a failed import, when it gave one.
    pub message: Option<PlatformText>,
}

fn string_field(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An id field, checked. Not trimmed: an id with surrounding whitespace is
/// not the id without it, and guessing which one the platform means could
/// address someone else's session.
fn id_field(
    v: &Value,
    key: &str,
    kind: IdKind,
    san: &Sanitizer,
) -> Result<Option<PlatformId>, BadId> {
    raw_id(v, key).map(|raw| san.id(kind, &raw)).transpose()
}

/// An id field as it came, unchecked: only to compare with an id we sent.
fn raw_id<'v>(v: &'v Value, key: &str) -> Option<Cow<'v, str>> {
    match v.get(key)? {
        Value::String(s) if !s.is_empty() => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

fn parse_status(v: &Value) -> Result<ImportStatus, String> {
    match v.get("status").and_then(Value::as_str) {
        Some(s) if s.eq_ignore_ascii_case("SUCCESS") => Ok(ImportStatus::Success),
        Some(s) if s.eq_ignore_ascii_case("FAILED") => Ok(ImportStatus::Failed),
        // IN_PROGRESS, and any state the documents do not name (QUEUED, ...):
        // keep polling.
        Some(_) => Ok(ImportStatus::InProgress),
        None => Err("no \"status\" field".into()),
    }
}

fn object(body: &[u8]) -> Result<Value, WireError> {
    // serde_json's messages name a position, never the input.
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| WireError::Malformed(format!("not JSON ({e})")))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err("not a JSON object".into())
    }
}

/// Reads the answer to "start an import session".
pub fn parse_start(body: &[u8], san: &Sanitizer) -> Result<SessionInfo, WireError> {
    let v = object(body)?;
    let session_id =
        id_field(&v, "sessionId", IdKind::Session, san)?.ok_or("no \"sessionId\" field")?;
    let expires_at = v
        .get("expirationDate")
        .and_then(Value::as_str)
        .and_then(|s| humantime::parse_rfc3339_weak(s.trim().trim_end_matches('Z')).ok());
    Ok(SessionInfo {
        session_id,
        expires_at,
        model_id: id_field(&v, "modelId", IdKind::Model, san)?,
    })
}

/// Checks a chunk answer. Any 2xx acknowledges the chunk; a body that names a
/// different chunk or session is not an acknowledgement of this one (a
/// malformed answer: retried).
pub fn check_chunk_answer(
    body: &[u8],
    chunk: u64,
    session_id: &PlatformId,
    san: &Sanitizer,
) -> Result<(), WireError> {
    let Ok(v) = object(body) else {
        return Ok(());
    };
    if let Some(n) = string_field(&v, "chunkNumber") {
        if n.parse::<u64>().ok() != Some(chunk) {
            return Err(WireError::Malformed(format!(
                "answer names chunk \"{}\", not {chunk}",
                san.short(&n)
            )));
        }
    }
    // Compared as it came: any echo but the id sent, usable as an id or
    // not, is an answer garbled on the way, not an acknowledgement.
    if raw_id(&v, "sessionId").is_some_and(|s| s != session_id.as_str()) {
        return Err("answer names another session".into());
    }
    Ok(())
}

/// Reads the answer to "complete".
pub fn parse_complete(body: &[u8], san: &Sanitizer) -> Result<CompleteInfo, WireError> {
    let v = object(body)?;
    let mut dock_status_id = None;
    for key in ["dock-statusId", "dockstatusId", "dockStatusId"] {
        dock_status_id = id_field(&v, key, IdKind::DockStatus, san)?;
        if dock_status_id.is_some() {
            break;
        }
    }
    let dock_status_id =
        dock_status_id.ok_or("no dock status id (dock-statusId, dockstatusId or dockStatusId)")?;
    let status = parse_status(&v).unwrap_or(ImportStatus::InProgress);
    Ok(CompleteInfo {
        dock_status_id,
        model_id: id_field(&v, "modelId", IdKind::Model, san)?,
        status,
    })
}

/// Reads a dock status answer.
pub fn parse_dock_status(body: &[u8], san: &Sanitizer) -> Result<DockStatus, WireError> {
    let v = object(body)?;
    let status = parse_status(&v).map_err(WireError::Malformed)?;
    let message = ["message", "error", "errorMessage"].iter().find_map(|k| {
        let raw = match v.get(*k)? {
            Value::String(s) => s.as_str(),
            Value::Object(o) => o.get("message")?.as_str()?,
            _ => return None,
        };
        Some(san.text(raw)).filter(|m| !m.is_empty())
    });
    Ok(DockStatus {
        status,
        model_id: id_field(&v, "modelId", IdKind::Model, san)?,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    const KEY: &str = "kg-wire-test-key";

    fn san<T>(f: impl FnOnce(&Sanitizer) -> T) -> T {
        let key = Secret::new(KEY);
        f(&Sanitizer::new(&key))
    }

    fn parse_start(body: &[u8]) -> Result<SessionInfo, WireError> {
        san(|s| super::parse_start(body, s))
    }

    fn parse_complete(body: &[u8]) -> Result<CompleteInfo, WireError> {
        san(|s| super::parse_complete(body, s))
    }

    fn parse_dock_status(body: &[u8]) -> Result<DockStatus, WireError> {
        san(|s| super::parse_dock_status(body, s))
    }

    fn check_chunk_answer(body: &[u8], chunk: u64, session: &str) -> Result<(), WireError> {
        san(|s| {
            let id = s.id(IdKind::Session, session).unwrap();
            super::check_chunk_answer(body, chunk, &id, s)
        })
    }

    #[test]
    fn start_answer_of_the_sample() {
        let s = parse_start(
            br#"{"sessionId":"d-8","expirationDate":"2025-02-05T11:58:03.638Z","modelId":"cm-9","extra":1}"#,
        )
        .unwrap();
        assert_eq!(s.session_id.as_str(), "d-8");
        assert_eq!(s.model_id.as_ref().map(PlatformId::as_str), Some("cm-9"));
        let exp = s.expires_at.unwrap();
        assert_eq!(
            humantime::format_rfc3339_millis(exp).to_string(),
            "2025-02-05T11:58:03.638Z"
        );
        let s = parse_start(br#"{"sessionId":"x","expirationDate":"whenever"}"#).unwrap();
        assert_eq!(s.expires_at, None);
        assert!(parse_start(br#"{"session":"x"}"#).is_err());
        assert!(parse_start(b"<html>").is_err());
    }

    #[test]
    fn chunk_number_as_string_or_number() {
        check_chunk_answer(br#"{"chunkNumber":"3","sessionId":"s"}"#, 3, "s").unwrap();
        check_chunk_answer(br#"{"chunkNumber":3,"sessionId":"s"}"#, 3, "s").unwrap();
        check_chunk_answer(b"OK", 3, "s").unwrap();
        assert!(check_chunk_answer(br#"{"chunkNumber":"4"}"#, 3, "s").is_err());
        let malformed = |r| matches!(r, Err(WireError::Malformed(_)));
        assert!(malformed(check_chunk_answer(
            br#"{"sessionId":"t"}"#,
            3,
            "s"
        )));
        assert!(malformed(check_chunk_answer(
            br#"{"sessionId":"s "}"#,
            3,
            "s"
        )));
        // An id echoed as a number is the same id.
        check_chunk_answer(br#"{"sessionId":17}"#, 3, "17").unwrap();
        assert!(malformed(check_chunk_answer(
            br#"{"sessionId":18}"#,
            3,
            "17"
        )));
    }

    #[test]
    fn dock_status_id_in_three_spellings() {
        for key in ["dock-statusId", "dockstatusId", "dockStatusId"] {
            let body = format!(
                r#"{{"{key}":"ds-1","modelId":"cm-2","action":"EXPORT","status":"IN_PROGRESS"}}"#
            );
            let c = parse_complete(body.as_bytes()).unwrap();
            assert_eq!(c.dock_status_id.as_str(), "ds-1");
            assert_eq!(c.status, ImportStatus::InProgress);
        }
        assert!(parse_complete(br#"{"status":"SUCCESS"}"#).is_err());
    }

    #[test]
    fn dock_status_keeps_a_failure_message() {
        let d =
            parse_dock_status(br#"{"_id":"ds","status":"FAILED","errorMessage":"bad archive"}"#)
                .unwrap();
        assert_eq!(d.status, ImportStatus::Failed);
        assert_eq!(
            d.message.as_ref().map(PlatformText::as_str),
            Some("bad archive")
        );
        let d = parse_dock_status(br#"{"_id":"ds","status":"QUEUED","toolId":"t"}"#).unwrap();
        assert_eq!(d.status, ImportStatus::InProgress);
        assert!(parse_dock_status(br#"{"_id":"ds"}"#).is_err());
    }

    #[test]
    fn a_failure_message_is_sanitised() {
        let body = serde_json::json!({
            "status": "FAILED", "message": " ", "errorMessage": format!("bad {KEY}\n\u{1b}[1mx"),
        });
        let d = parse_dock_status(body.to_string().as_bytes()).unwrap();
        assert_eq!(d.message.unwrap().as_str(), "bad [redacted] x");
    }

    #[test]
    fn unusable_ids_are_refused_not_garbled() {
        let bad = |r: Result<(), WireError>| match r {
            Err(WireError::BadId(b)) => b.kind,
            other => panic!("{other:?}"),
        };
        let start = |v: serde_json::Value| parse_start(v.to_string().as_bytes()).map(drop);
        for id in ["..", "start", "s\n1", " s1", KEY] {
            assert_eq!(
                bad(start(serde_json::json!({"sessionId": id}))),
                IdKind::Session,
                "{id:?}"
            );
        }
        assert_eq!(
            bad(start(
                serde_json::json!({"sessionId": "s", "modelId": "m\u{1b}"})
            )),
            IdKind::Model
        );
        assert_eq!(
            bad(parse_complete(br#"{"dockStatusId":".."}"#).map(drop)),
            IdKind::DockStatus
        );
        assert_eq!(
            bad(parse_dock_status(br#"{"status":"SUCCESS","modelId":"a/b"}"#).map(drop)),
            IdKind::Model
        );
        // An echoed session id is only compared with the one sent: an
        // unusable one names another session, a garbled answer (retried).
        assert!(matches!(
            check_chunk_answer(br#"{"sessionId":"s\r\nX: 1"}"#, 0, "s"),
            Err(WireError::Malformed(_))
        ));
        // A missing or empty id is a garbled answer, as before.
        assert!(matches!(
            parse_start(br#"{"sessionId":""}"#),
            Err(WireError::Malformed(_))
        ));
        let e = check_chunk_answer(format!(r#"{{"chunkNumber":"{KEY}"}}"#).as_bytes(), 0, "s");
        assert!(!format!("{e:?}").contains(KEY), "{e:?}");
    }

    #[test]
    fn start_request_uses_the_documented_names() {
        let r = StartRequest {
            file_context: "model".into(),
            total_chunks: 2,
            file_extension: "tar".into(),
            file_name: "m.tar".into(),
            file_size: 10,
            is_adapter: false,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"fileContext":"model","totalChunks":2,"fileExtension":"tar","fileName":"m.tar","fileSize":10,"isAdapter":false})
        );
    }
}
