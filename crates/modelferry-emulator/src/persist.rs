//! The emulator's disk layout, so a restart on the same `data_dir` keeps its
//! sessions:
//!
//! ```text
//! <data_dir>/sessions/<sessionId>/session.json   metadata, rewritten (temp + rename) on start,
//!                                                 complete, expiry and import progress
//! <data_dir>/sessions/<sessionId>/chunks.jsonl   one line appended per stored chunk
//! <data_dir>/sessions/<sessionId>/chunk-<n>      the last copy of chunk n
//! <data_dir>/models/<modelId>.tar                the assembled archive
//! ```
//!
//! A stored chunk costs one rename and one short append, never a rewrite of
//! a file that grows with the number of chunks. All functions here block;
//! callers run them on blocking threads.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::report::ChunkReport;
use super::wire::{ImportStatus, StartRequest};

const META: &str = "session.json";
const JOURNAL: &str = "chunks.jsonl";
/// Prefix of in-flight chunk uploads; leftovers are removed on load.
pub(crate) const UPLOAD_TMP_PREFIX: &str = ".upload-";

/// What `session.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionMeta {
    /// Start order, so reports list sessions oldest first across restarts.
    pub seq: u64,
    pub session_id: String,
    pub model_id: String,
    pub start: StartRequest,
    pub started_at_ms: u64,
    pub expires_at_ms: u64,
    /// Set by `expire_sessions()`.
    pub expired: bool,
    pub complete_calls: u64,
    pub import: Option<ImportRecord>,
}

/// An accepted complete call and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImportRecord {
    pub dock_status_id: String,
    /// Dock-status answers given (persisted only when it reveals the outcome).
    pub polls: u64,
    /// True once a dock-status answer carried the final status.
    pub revealed: bool,
    /// `None` while assembling.
    pub outcome: Option<Outcome>,
}

/// How an import ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub status: ImportStatus,
    pub message: Option<String>,
    pub assembled_size: Option<u64>,
    pub assembled_sha256: Option<String>,
}

/// One line of `chunks.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
struct ChunkLine {
    n: u64,
    size: u64,
    sha256: String,
}

/// A session as read back from disk.
pub(crate) struct LoadedSession {
    pub meta: SessionMeta,
    pub chunks: BTreeMap<u64, ChunkReport>,
    pub stored_posts: u64,
    pub duplicates: u64,
}

pub(crate) fn session_dir(data_dir: &Path, session_id: &str) -> PathBuf {
    data_dir.join("sessions").join(session_id)
}

pub(crate) fn chunk_path(data_dir: &Path, session_id: &str, n: u64) -> PathBuf {
    session_dir(data_dir, session_id).join(format!("chunk-{n}"))
}

pub(crate) fn model_path(data_dir: &Path, model_id: &str) -> PathBuf {
    data_dir.join("models").join(format!("{model_id}.tar"))
}

/// Writes `session.json` atomically (temp + rename), creating the directory.
pub(crate) fn write_meta(data_dir: &Path, meta: &SessionMeta) -> io::Result<()> {
    let dir = session_dir(data_dir, &meta.session_id);
    fs::create_dir_all(&dir)?;
    let bytes = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
    let tmp = dir.join(format!("{META}.tmp"));
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, dir.join(META))
}

/// Appends one stored chunk to the session's journal in a single write, so a
/// crash leaves at worst a torn last line (skipped on load).
pub(crate) fn append_chunk(
    data_dir: &Path,
    session_id: &str,
    n: u64,
    c: &ChunkReport,
) -> io::Result<()> {
    let line = ChunkLine {
        n,
        size: c.size,
        sha256: c.sha256.clone(),
    };
    let mut bytes = serde_json::to_vec(&line).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(session_dir(data_dir, session_id).join(JOURNAL))?;
    f.write_all(&bytes)
}

/// Reads every session under `<data_dir>/sessions`. A directory without a
/// readable `session.json` is skipped with a warning; leftover partial
/// uploads are removed.
pub(crate) fn load_all(data_dir: &Path) -> io::Result<Vec<LoadedSession>> {
    let root = data_dir.join("sessions");
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut sessions = Vec::new();
    for entry in entries {
        let dir = entry?.path();
        if !dir.is_dir() {
            continue;
        }
        match load_one(&dir) {
            Ok(s) => sessions.push(s),
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err, "emulator: skipping unreadable session");
            }
        }
    }
    sessions.sort_by_key(|s| s.meta.seq);
    Ok(sessions)
}

fn load_one(dir: &Path) -> io::Result<LoadedSession> {
    let meta: SessionMeta =
        serde_json::from_slice(&fs::read(dir.join(META))?).map_err(io::Error::other)?;
    let mut loaded = LoadedSession {
        meta,
        chunks: BTreeMap::new(),
        stored_posts: 0,
        duplicates: 0,
    };
    match fs::File::open(dir.join(JOURNAL)) {
        Ok(f) => {
            for line in BufReader::new(f).lines() {
                let line = line?;
                // A torn last line from a crash mid-append: that chunk was
                // never acknowledged, so forgetting it is what the client expects.
                let Ok(c) = serde_json::from_str::<ChunkLine>(&line) else {
                    continue;
                };
                loaded.stored_posts += 1;
                let entry = loaded.chunks.entry(c.n).or_insert(ChunkReport {
                    size: 0,
                    sha256: String::new(),
                    times_received: 0,
                });
                if entry.times_received > 0 {
                    loaded.duplicates += 1;
                }
                entry.times_received += 1;
                entry.size = c.size;
                entry.sha256 = c.sha256;
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(UPLOAD_TMP_PREFIX)
        {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(loaded)
}
