//! The emulator's own reading of the wire contract (`platform-api.md`): the
//! start request's validation, the answer bodies and the JSON error answer.
//! Written apart from the client's wire types on purpose: where one of them
//! misreads the contract, the other catches it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// An answer other than 200: a status and a `{"message": ...}` body.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (injected 429s).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn expired() -> Self {
        Self::new(StatusCode::GONE, "session expired")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "message": self.message }))).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// `fileContext` values the platform documents.
const FILE_CONTEXTS: [&str; 2] = ["model", "dataset"];

/// The start request's fields as received and validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    /// `fileContext`: `model` or `dataset`.
    pub file_context: String,
    /// `totalChunks`: at least 1, at most `fileSize`.
    pub total_chunks: u64,
    /// `fileExtension`, e.g. `tar`.
    pub file_extension: String,
    /// `fileName`: a base name.
    pub file_name: String,
    /// `fileSize` in bytes.
    pub file_size: u64,
    /// `isAdapter`, if sent.
    pub is_adapter: Option<bool>,
}

impl StartRequest {
    /// Validates a start body field by field. Unknown fields are ignored; every
    /// problem is reported at once, each naming its field.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(ApiError::bad_request("request body must be a JSON object"));
        };
        let mut problems = Vec::new();
        let file_context = string_field(&obj, "fileContext", &mut problems).and_then(|c| {
            if FILE_CONTEXTS.contains(&c.as_str()) {
                Some(c)
            } else {
                problems.push(format!(
                    "fileContext must be \"model\" or \"dataset\", got {c:?}"
                ));
                None
            }
        });
        let total_chunks = positive_int_field(&obj, "totalChunks", &mut problems);
        let file_extension = string_field(&obj, "fileExtension", &mut problems);
        let file_name = string_field(&obj, "fileName", &mut problems).and_then(|n| {
            match base_name_problem(&n) {
                Some(p) => {
                    problems.push(format!("fileName {p}"));
                    None
                }
                None => Some(n),
            }
        });
        let file_size = positive_int_field(&obj, "fileSize", &mut problems);
        let is_adapter = match obj.get("isAdapter") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                problems.push(format!("isAdapter must be a boolean, got {}", kind(other)));
                None
            }
        };
        if let (Some(total), Some(size)) = (total_chunks, file_size) {
            // Every chunk carries at least one byte, so more chunks than bytes
            // could never complete.
            if total > size {
                problems.push(format!(
                    "totalChunks ({total}) must not exceed fileSize ({size})"
                ));
            }
        }
        match (
            file_context,
            total_chunks,
            file_extension,
            file_name,
            file_size,
        ) {
            (
                Some(file_context),
                Some(total_chunks),
                Some(file_extension),
                Some(file_name),
                Some(file_size),
            ) if problems.is_empty() => Ok(Self {
                file_context,
                total_chunks,
                file_extension,
                file_name,
                file_size,
                is_adapter,
            }),
            _ => Err(ApiError::bad_request(problems.join("; "))),
        }
    }
}

/// A required, non-empty string field.
fn string_field(
    obj: &Map<String, Value>,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    match obj.get(name) {
        None | Some(Value::Null) => problems.push(format!("{name} is required")),
        Some(Value::String(s)) if s.is_empty() => {
            problems.push(format!("{name} must not be empty"))
        }
        Some(Value::String(s)) => return Some(s.clone()),
        Some(other) => problems.push(format!("{name} must be a string, got {}", kind(other))),
    }
    None
}

/// A required integer field of at least 1 (`1.0` and `"1"` are refused: the
/// contract says integer).
fn positive_int_field(
    obj: &Map<String, Value>,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<u64> {
    match obj.get(name) {
        None | Some(Value::Null) => problems.push(format!("{name} is required")),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if v >= 1 => return Some(v),
            _ => problems.push(format!("{name} must be an integer >= 1, got {n}")),
        },
        Some(other) => problems.push(format!("{name} must be an integer, got {}", kind(other))),
    }
    None
}

/// Why `name` is not a plain base name, if it is not.
fn base_name_problem(name: &str) -> Option<&'static str> {
    if name == "." || name == ".." {
        Some("must be a file name, not \".\" or \"..\"")
    } else if name.contains(['/', '\\']) {
        Some("must be a base name without '/' or '\\'")
    } else if name.contains('\0') {
        Some("must not contain NUL")
    } else {
        None
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Answer of the start endpoint.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StartAnswer {
    pub session_id: String,
    pub expiration_date: String,
    pub model_id: String,
}

/// Answer of a chunk upload; `chunkNumber` is a string as in the doc's sample.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ChunkAnswer {
    pub chunk_number: String,
    pub session_id: String,
}

/// Answer of the complete endpoint, keys spelled as in the doc's sample.
#[derive(Debug, Serialize)]
pub(crate) struct CompleteAnswer {
    #[serde(rename = "dock-statusId")]
    pub dock_status_id: String,
    #[serde(rename = "modelId")]
    pub model_id: String,
    #[serde(rename = "jobType")]
    pub job_type: &'static str,
    pub action: &'static str,
    pub status: ImportStatus,
}

/// Answer of the dock-status endpoint.
#[derive(Debug, Serialize)]
pub(crate) struct DockStatusAnswer {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(rename = "jobType")]
    pub job_type: &'static str,
    pub action: &'static str,
    pub status: ImportStatus,
    #[serde(rename = "modelId")]
    pub model_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

pub(crate) const JOB_TYPE: &str = "MODELS";
pub(crate) const ACTION: &str = "IMPORT";

/// The status of an import, spelled as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ImportStatus {
    /// `IN_PROGRESS`: still assembling (or polls left before the answer).
    InProgress,
    /// `SUCCESS`: the model was imported.
    Success,
    /// `FAILED`: the assembled archive was not importable.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<StartRequest, String> {
        StartRequest::parse(v.to_string().as_bytes()).map_err(|e| e.message)
    }

    fn good() -> Value {
        json!({"fileContext": "model", "totalChunks": 2, "fileExtension": "tar",
               "fileName": "m.tar", "fileSize": 10, "isAdapter": true, "extra": 1})
    }

    #[test]
    fn accepts_a_valid_body_and_ignores_unknown_fields() {
        let r = parse(good()).unwrap();
        assert_eq!(r.total_chunks, 2);
        assert_eq!(r.is_adapter, Some(true));
        let mut v = good();
        v.as_object_mut().unwrap().remove("isAdapter");
        assert_eq!(parse(v).unwrap().is_adapter, None);
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: [(&str, Value, &str); 12] = [
            ("fileContext", json!("weights"), "fileContext"),
            ("fileContext", json!(3), "fileContext"),
            ("totalChunks", json!(0), "totalChunks"),
            ("totalChunks", json!(1.5), "totalChunks"),
            ("totalChunks", json!("2"), "totalChunks"),
            ("fileExtension", json!(""), "fileExtension"),
            ("fileName", json!("a/b.tar"), "fileName"),
            ("fileName", json!(".."), "fileName"),
            ("fileName", json!("a\\b"), "fileName"),
            ("fileSize", json!(-1), "fileSize"),
            ("isAdapter", json!("yes"), "isAdapter"),
            ("totalChunks", json!(11), "totalChunks"),
        ];
        for (field, value, named) in cases {
            let mut v = good();
            v[field] = value.clone();
            let msg = parse(v).unwrap_err();
            assert!(msg.contains(named), "{field}={value}: {msg}");
        }
        for field in [
            "fileContext",
            "totalChunks",
            "fileExtension",
            "fileName",
            "fileSize",
        ] {
            let mut v = good();
            v.as_object_mut().unwrap().remove(field);
            let msg = parse(v).unwrap_err();
            assert!(msg.contains(field) && msg.contains("required"), "{msg}");
        }
        assert!(parse(json!([1])).unwrap_err().contains("object"));
        assert!(StartRequest::parse(b"{").is_err());
    }

    #[test]
    fn status_spelling_matches_the_wire() {
        let s = serde_json::to_string(&ImportStatus::InProgress).unwrap();
        assert_eq!(s, "\"IN_PROGRESS\"");
    }
}
