//! `POST /api/public/files/session/{sessionId}`: one chunk as a multipart
//! form (`file` part + `chunkNumber` text, in either order). The file part is
//! streamed: hashed piece by piece and, outside discard mode, written to a
//! temporary file that is renamed to `chunk-<n>` only once the whole form was
//! read and the session still takes chunks. Also where the chunk-only faults
//! (reset, lost ack) happen.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{ConnectInfo, Multipart, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::conn::ConnKill;
use super::persist::{session_dir, UPLOAD_TMP_PREFIX};
use super::state::{bump, Emulator, Endpoint};
use super::wire::{ApiError, ChunkAnswer};

/// Longest `chunkNumber` text taken (u64::MAX has 20 digits).
const MAX_NUMBER_TEXT: usize = 32;

pub(crate) async fn upload(
    State(emu): State<Arc<Emulator>>,
    ConnectInfo(conn): ConnectInfo<ConnKill>,
    UrlPath(session_id): UrlPath<String>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    upload_inner(emu, conn, session_id, headers, multipart)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn upload_inner(
    emu: Arc<Emulator>,
    conn: ConnKill,
    session_id: String,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    emu.gate(Endpoint::Chunk, &headers).await?;
    let (reset, lost_ack) = emu.roll_chunk_faults();
    let total = emu.accepting(&session_id)?;
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad_request(format!(
            "body must be multipart/form-data: {}",
            e.body_text()
        ))
    })?;
    if reset {
        // Take a bite of the body so the client is mid-send, then cut the
        // connection: the client gets no answer and nothing is stored.
        if let Ok(Some(mut field)) = multipart.next_field().await {
            let _ = field.chunk().await;
        }
        conn.kill();
        bump(&emu.counters.reset);
        tracing::debug!(session_id, "emulator: injected connection reset");
        return Err(ApiError::internal("connection reset by the emulator"));
    }

    let form = read_form(&emu, &session_id, &mut multipart).await?;
    let file = form
        .file
        .ok_or_else(|| ApiError::bad_request("file part is required"))?;
    let text = form
        .chunk_number
        .ok_or_else(|| ApiError::bad_request("chunkNumber is required"))?;
    let n = parse_chunk_number(&text, total)?;

    let Received { size, sha256, tmp } = file;
    let tmp_path = tmp.as_ref().map(|t| t.path.clone());
    let sid = session_id.clone();
    emu.blocking(move |e| e.commit_chunk(&sid, n, size, sha256, tmp_path.as_deref()))
        .await?;
    if let Some(t) = tmp {
        t.disarm();
    }
    tracing::debug!(session_id, chunk = n, size, "emulator: chunk stored");

    if lost_ack {
        bump(&emu.counters.lost_ack);
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad gateway (the emulator stored the chunk and lost the answer)",
        ));
    }
    Ok(Json(ChunkAnswer {
        chunk_number: n.to_string(),
        session_id,
    })
    .into_response())
}

/// The form's two fields as read.
#[derive(Default)]
struct Form {
    chunk_number: Option<String>,
    file: Option<Received>,
}

/// A file part read through.
struct Received {
    size: u64,
    sha256: String,
    /// Where its bytes are; `None` in discard mode.
    tmp: Option<TempChunk>,
}

async fn read_form(emu: &Emulator, session_id: &str, mp: &mut Multipart) -> Result<Form, ApiError> {
    let mut form = Form::default();
    while let Some(mut field) = mp.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("file") => {
                if form.file.is_some() {
                    return Err(ApiError::bad_request("more than one file part"));
                }
                if field.file_name().is_none() {
                    return Err(ApiError::bad_request(
                        "file must be a file part (with a filename), not a text field",
                    ));
                }
                form.file = Some(receive_file(emu, session_id, &mut field).await?);
            }
            Some("chunkNumber") => {
                if form.chunk_number.is_some() {
                    return Err(ApiError::bad_request("more than one chunkNumber field"));
                }
                form.chunk_number = Some(read_text(&mut field).await?);
            }
            // Unknown fields are skipped, as unknown JSON fields are.
            _ => while field.chunk().await.map_err(multipart_error)?.is_some() {},
        }
    }
    Ok(form)
}

/// Streams a file part: counts, hashes and (outside discard mode) writes it.
async fn receive_file(
    emu: &Emulator,
    session_id: &str,
    field: &mut Field<'_>,
) -> Result<Received, ApiError> {
    let mut tmp = match &emu.data_dir {
        Some(dir) => Some(TempChunk::create(dir, session_id).await?),
        None => None,
    };
    let mut hasher = emu.opts.hash_chunks.then(Sha256::new);
    let mut size = 0u64;
    while let Some(bytes) = field.chunk().await.map_err(multipart_error)? {
        size += bytes.len() as u64;
        if size > emu.opts.max_chunk_size {
            return Err(too_large(emu.opts.max_chunk_size));
        }
        if let Some(h) = &mut hasher {
            h.update(&bytes);
        }
        if let Some(t) = &mut tmp {
            t.file.write_all(&bytes).await.map_err(write_error)?;
        }
    }
    if size == 0 {
        return Err(ApiError::bad_request("file part is empty"));
    }
    if let Some(t) = &mut tmp {
        // tokio's File writes in the background: flush waits for the last write.
        t.file.flush().await.map_err(write_error)?;
    }
    Ok(Received {
        size,
        sha256: hasher
            .map(|h| hex::encode(h.finalize()))
            .unwrap_or_default(),
        tmp,
    })
}

async fn read_text(field: &mut Field<'_>) -> Result<String, ApiError> {
    let mut text = Vec::new();
    while let Some(bytes) = field.chunk().await.map_err(multipart_error)? {
        text.extend_from_slice(&bytes);
        if text.len() > MAX_NUMBER_TEXT {
            return Err(ApiError::bad_request("chunkNumber is too long"));
        }
    }
    String::from_utf8(text).map_err(|_| ApiError::bad_request("chunkNumber is not UTF-8 text"))
}

/// `chunkNumber` is 0-based decimal text below the session's `totalChunks`.
fn parse_chunk_number(text: &str, total: u64) -> Result<u64, ApiError> {
    let n = (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse::<u64>().ok())
        .flatten()
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "chunkNumber must be a decimal integer, got {text:?}"
            ))
        })?;
    if n >= total {
        return Err(ApiError::bad_request(format!(
            "chunkNumber {n} is out of range: chunks are numbered from 0 and the session has totalChunks {total}"
        )));
    }
    Ok(n)
}

fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
    } else {
        ApiError::bad_request(format!("malformed multipart body: {}", e.body_text()))
    }
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("chunk larger than the maximum chunk size of {max} bytes"),
    )
}

fn write_error(e: std::io::Error) -> ApiError {
    ApiError::internal(format!("emulator cannot write the chunk: {e}"))
}

/// A chunk being received; the file is removed unless it was committed.
struct TempChunk {
    path: PathBuf,
    file: tokio::fs::File,
    armed: bool,
}

impl TempChunk {
    async fn create(data_dir: &Path, session_id: &str) -> Result<Self, ApiError> {
        let name = format!("{UPLOAD_TMP_PREFIX}{:016x}.tmp", fastrand::u64(..));
        let path = session_dir(data_dir, session_id).join(name);
        let file = tokio::fs::File::create(&path).await.map_err(write_error)?;
        Ok(Self {
            path,
            file,
            armed: true,
        })
    }

    /// The file was renamed into place: nothing to clean up.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for TempChunk {
    fn drop(&mut self) {
        if self.armed {
            // One unlink on the runtime thread: cheap, and Drop cannot await.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_numbers_are_zero_based_decimal() {
        assert_eq!(parse_chunk_number("0", 1).unwrap(), 0);
        assert_eq!(parse_chunk_number("41", 42).unwrap(), 41);
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1.0",
            "0x1",
            "99999999999999999999999",
        ] {
            let e = parse_chunk_number(bad, 10).unwrap_err();
            assert!(e.message.contains("chunkNumber"), "{bad}: {}", e.message);
        }
        let e = parse_chunk_number("3", 3).unwrap_err();
        assert!(e.message.contains("out of range"), "{}", e.message);
    }
}
