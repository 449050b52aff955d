//! The HTTP surface: the platform's four endpoints (`platform-api.md`) and the
//! unauthenticated `/_emulator/*` admin endpoints a separate process uses to
//! read the report and steer the emulator. Every answer is JSON.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::options::FaultRates;
use super::state::{Emulator, Endpoint};
use super::wire::{ApiError, StartRequest};
use super::{assemble, chunk};

/// Room for the multipart framing around a chunk of `max_chunk_size` bytes.
const MULTIPART_SLACK: u64 = 64 * 1024;

pub(crate) fn router(emu: Arc<Emulator>) -> Router {
    // axum caps bodies at 2 MB by default; a chunk may be up to
    // max_chunk_size, which the chunk handler enforces itself (413).
    let chunk_limit = usize::try_from(emu.opts.max_chunk_size.saturating_add(MULTIPART_SLACK))
        .unwrap_or(usize::MAX);
    Router::new()
        .route("/api/public/files/session/start", post(start))
        .route(
            "/api/public/files/session/{session_id}",
            post(chunk::upload).layer(DefaultBodyLimit::max(chunk_limit)),
        )
        .route(
            "/api/public/files/session/{session_id}/complete",
            post(complete),
        )
        .route("/api/public/dock-status/{dock_status_id}", get(dock_status))
        .route("/_emulator/report", get(report))
        .route("/_emulator/expire-sessions", post(expire_sessions))
        .route("/_emulator/api-key", post(set_api_key))
        .route("/_emulator/faults", get(faults).post(set_faults))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .with_state(emu)
}

fn respond<T: IntoResponse>(r: Result<T, ApiError>) -> Response {
    match r {
        Ok(ok) => ok.into_response(),
        Err(err) => err.into_response(),
    }
}

async fn start(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            emu.gate(Endpoint::Start, &headers).await?;
            if !is_json(&headers) {
                return Err(ApiError::bad_request(
                    "Content-Type must be application/json",
                ));
            }
            let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
            let request = StartRequest::parse(&body)?;
            let answer = emu.blocking(move |e| e.create_session(request)).await?;
            Ok(Json(answer))
        }
        .await,
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

async fn complete(
    State(emu): State<Arc<Emulator>>,
    Path(session_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    respond(
        async {
            emu.gate(Endpoint::Complete, &headers).await?;
            let sid = session_id.clone();
            let (answer, assemble_now) = emu.blocking(move |e| e.complete(&sid)).await?;
            if assemble_now {
                assemble::spawn(&emu, session_id);
            }
            Ok(Json(answer))
        }
        .await,
    )
}

async fn dock_status(
    State(emu): State<Arc<Emulator>>,
    Path(dock_status_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    respond(
        async {
            emu.gate(Endpoint::DockStatus, &headers).await?;
            let answer = emu
                .blocking(move |e| e.dock_status(&dock_status_id))
                .await?;
            Ok(Json(answer))
        }
        .await,
    )
}

async fn report(State(emu): State<Arc<Emulator>>) -> Response {
    Json(emu.report()).into_response()
}

async fn expire_sessions(State(emu): State<Arc<Emulator>>) -> Response {
    respond(
        emu.blocking(|e| Ok(Json(json!({ "expired": e.expire_all() }))))
            .await,
    )
}

#[derive(Deserialize)]
struct ApiKeyBody {
    api_key: Option<String>,
}

async fn set_api_key(
    State(emu): State<Arc<Emulator>>,
    body: Result<Json<ApiKeyBody>, JsonRejection>,
) -> Response {
    respond((|| {
        let Json(body) = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        if body.api_key.as_deref() == Some("") {
            return Err(ApiError::bad_request(
                "api_key must be a non-empty string or null",
            ));
        }
        let any_key = body.api_key.is_none();
        emu.set_api_key(body.api_key);
        // The key itself is never echoed or logged.
        Ok(Json(json!({ "any_key": any_key })))
    })())
}

async fn faults(State(emu): State<Arc<Emulator>>) -> Response {
    Json(emu.fault_rates()).into_response()
}

async fn set_faults(
    State(emu): State<Arc<Emulator>>,
    body: Result<Json<FaultRates>, JsonRejection>,
) -> Response {
    respond((|| {
        let Json(rates) = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        emu.set_faults(rates);
        Ok(Json(emu.fault_rates()))
    })())
}
