//! What the emulator received, as tests and benchmarks read it: a snapshot
//! taken under the sessions lock, plain data, serialisable so a separate
//! process can fetch it from `GET /_emulator/report`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::wire::{ImportStatus, StartRequest};

/// Everything the emulator has received since it started (sessions loaded
/// from a `data_dir` included; global counters restart at zero).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Sessions in the order they were started.
    pub sessions: Vec<SessionReport>,
    /// Requests per platform endpoint, faulted and rejected ones included.
    pub requests: EndpointCounts,
    /// Faults injected, per kind.
    pub faults: FaultCounts,
    /// Requests answered 401 for a missing or wrong `x-api-key`.
    pub auth_rejections: u64,
}

impl Report {
    /// The session with this id.
    pub fn session(&self, session_id: &str) -> Option<&SessionReport> {
        self.sessions.iter().find(|s| s.session_id == session_id)
    }

    /// Every session started for this `fileName`, oldest first.
    pub fn sessions_for_file(&self, file_name: &str) -> Vec<&SessionReport> {
        self.sessions
            .iter()
            .filter(|s| s.start.file_name == file_name)
            .collect()
    }

    /// The session whose import has this dock status id.
    pub fn session_for_dock_status(&self, dock_status_id: &str) -> Option<&SessionReport> {
        self.sessions
            .iter()
            .find(|s| s.dock_status_id.as_deref() == Some(dock_status_id))
    }

    /// Chunk POSTs stored over all sessions (duplicates and lost acks included).
    pub fn chunk_posts_stored(&self) -> u64 {
        self.sessions.iter().map(|s| s.chunk_posts_stored).sum()
    }
}

/// One import session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionReport {
    /// The `sessionId` answered at start.
    pub session_id: String,
    /// The `modelId` answered at start.
    pub model_id: String,
    /// The start request's fields exactly as received.
    pub start: StartRequest,
    /// RFC 3339 UTC with milliseconds, as the platform spells dates.
    pub started_at: String,
    /// The `expirationDate` answered at start (moved to the moment of
    /// `expire_sessions()` if that came first).
    pub expires_at: String,
    /// True once the expiration date has passed or `expire_sessions()` ran.
    pub expired: bool,
    /// Chunks held, by 0-based number.
    pub chunks: BTreeMap<u64, ChunkReport>,
    /// Chunk POSTs whose bytes were stored (lost acks included).
    pub chunk_posts_stored: u64,
    /// Stores of a chunk number already held.
    pub duplicates: u64,
    /// True once a complete call was accepted.
    pub completed: bool,
    /// Complete calls that reached this session, refused ones included.
    pub complete_calls: u64,
    /// The `dockStatusId` answered by the accepted complete call.
    pub dock_status_id: Option<String>,
    /// Dock-status GETs answered for this import.
    pub dock_status_polls: u64,
    /// Size of the assembled archive; `None` before assembly ends and in
    /// discard mode.
    pub assembled_size: Option<u64>,
    /// sha256 (hex) of the assembled archive; `None` as `assembled_size`.
    pub assembled_sha256: Option<String>,
    /// The import's own state: `None` before complete, IN_PROGRESS while
    /// assembling, then SUCCESS or FAILED (dock status may still answer
    /// IN_PROGRESS for `import_polls` more polls).
    pub status: Option<ImportStatus>,
    /// Why the import FAILED.
    pub message: Option<String>,
}

impl SessionReport {
    /// Sum of the sizes of the chunks held.
    pub fn bytes_held(&self) -> u64 {
        self.chunks.values().map(|c| c.size).sum()
    }
}

/// One chunk number as held now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkReport {
    /// Size of the last copy received.
    pub size: u64,
    /// sha256 (hex) of the last copy received.
    pub sha256: String,
    /// Copies stored under this number.
    pub times_received: u64,
}

/// Requests per platform endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointCounts {
    /// `POST /api/public/files/session/start`.
    pub start: u64,
    /// `POST /api/public/files/session/{id}` (chunk uploads).
    pub chunk: u64,
    /// `POST /api/public/files/session/{id}/complete`.
    pub complete: u64,
    /// `GET /api/public/dock-status/{id}`.
    pub dock_status: u64,
}

/// Faults injected, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultCounts {
    /// 500 answers.
    pub fail: u64,
    /// Chunks stored then answered 502.
    pub lost_ack: u64,
    /// Connections dropped mid-body.
    pub reset: u64,
    /// 429 answers.
    pub rate_limit: u64,
}
