//! The client's reading of the platform's request and answer bodies.
//!
//! Answers are read leniently, as platform-api.md asks: unknown fields are
//! ignored, `chunkNumber` may be a string or a number, and the dock status id
//! may be spelled `dock-statusId`, `dockstatusId` or `dockStatusId`.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

/// Body of "start an import session".
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StartRequest {
    pub file_context: String,
    pub total_chunks: u64,
    pub file_extension: String,
    pub file_name: String,
    pub file_size: u64,
    pub is_adapter: bool,
}

/// What the platform said when it opened a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub session_id: String,
    /// `None` when `expirationDate` is absent or unreadable.
    pub expires_at: Option<SystemTime>,
    pub model_id: Option<String>,
}

/// Where an import stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportStatus {
    InProgress,
    Success,
    Failed,
}

/// What the platform said to `complete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteInfo {
    pub dock_status_id: String,
    pub model_id: Option<String>,
    pub status: ImportStatus,
}

/// What dock status said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockStatus {
    pub status: ImportStatus,
    pub model_id: Option<String>,
    /// The platform's message for a failed import, when it gave one.
    pub message: Option<String>,
}

fn string_field(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
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

fn object(body: &[u8]) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err("not a JSON object".into())
    }
}

pub fn parse_start(body: &[u8]) -> Result<SessionInfo, String> {
    let v = object(body)?;
    let session_id = string_field(&v, "sessionId").ok_or("no \"sessionId\" field")?;
    let expires_at = v
        .get("expirationDate")
        .and_then(Value::as_str)
        .and_then(|s| humantime::parse_rfc3339_weak(s.trim().trim_end_matches('Z')).ok());
    Ok(SessionInfo {
        session_id,
        expires_at,
        model_id: string_field(&v, "modelId"),
    })
}

/// Checks a chunk answer. Any 2xx acknowledges the chunk; a body that names a
/// different chunk or session is not an acknowledgement of this one.
pub fn check_chunk_answer(body: &[u8], chunk: u64, session_id: &str) -> Result<(), String> {
    let Ok(v) = object(body) else {
        return Ok(());
    };
    if let Some(n) = string_field(&v, "chunkNumber") {
        if n.parse::<u64>().ok() != Some(chunk) {
            return Err(format!("answer names chunk {n:?}, not {chunk}"));
        }
    }
    if let Some(s) = string_field(&v, "sessionId") {
        if s != session_id {
            return Err("answer names another session".into());
        }
    }
    Ok(())
}

pub fn parse_complete(body: &[u8]) -> Result<CompleteInfo, String> {
    let v = object(body)?;
    let dock_status_id = ["dock-statusId", "dockstatusId", "dockStatusId"]
        .iter()
        .find_map(|k| string_field(&v, k))
        .ok_or("no dock status id (dock-statusId, dockstatusId or dockStatusId)")?;
    let status = parse_status(&v).unwrap_or(ImportStatus::InProgress);
    Ok(CompleteInfo {
        dock_status_id,
        model_id: string_field(&v, "modelId"),
        status,
    })
}

pub fn parse_dock_status(body: &[u8]) -> Result<DockStatus, String> {
    let v = object(body)?;
    let status = parse_status(&v)?;
    let message = ["message", "error", "errorMessage"]
        .iter()
        .find_map(|k| match v.get(*k)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Object(o) => o.get("message").and_then(Value::as_str).map(str::to_string),
            _ => None,
        });
    Ok(DockStatus {
        status,
        model_id: string_field(&v, "modelId"),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_answer_of_the_sample() {
        let s = parse_start(
            br#"{"sessionId":"d-8","expirationDate":"2025-02-05T11:58:03.638Z","modelId":"cm-9","extra":1}"#,
        )
        .unwrap();
        assert_eq!(s.session_id, "d-8");
        assert_eq!(s.model_id.as_deref(), Some("cm-9"));
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
        assert!(check_chunk_answer(br#"{"sessionId":"t"}"#, 3, "s").is_err());
    }

    #[test]
    fn dock_status_id_in_three_spellings() {
        for key in ["dock-statusId", "dockstatusId", "dockStatusId"] {
            let body = format!(
                r#"{{"{key}":"ds-1","modelId":"cm-2","action":"EXPORT","status":"IN_PROGRESS"}}"#
            );
            let c = parse_complete(body.as_bytes()).unwrap();
            assert_eq!(c.dock_status_id, "ds-1");
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
        assert_eq!(d.message.as_deref(), Some("bad archive"));
        let d = parse_dock_status(br#"{"_id":"ds","status":"QUEUED","toolId":"t"}"#).unwrap();
        assert_eq!(d.status, ImportStatus::InProgress);
        assert!(parse_dock_status(br#"{"_id":"ds"}"#).is_err());
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
