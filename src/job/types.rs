//! A job and the values recorded with it as it moves.

use std::path::PathBuf;
use std::time::SystemTime;

use super::{Filing, JobState, Stage};
use crate::source::FileIdentity;

pub type JobId = i64;

/// What a new job is made of.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub path: PathBuf,
    pub identity: FileIdentity,
    pub file_context: String,
    pub is_adapter: bool,
    pub chunk_size: u64,
    pub watch_dir: Option<PathBuf>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub path: PathBuf,
    pub file_name: String,
    pub identity: FileIdentity,
    pub file_context: String,
    pub is_adapter: bool,
    pub chunk_size: u64,
    pub chunks_total: u64,
    pub state: JobState,
    pub session: Option<SessionRecord>,
    pub sessions_started: u32,
    pub model_id: Option<String>,
    pub dock_status_id: Option<String>,
    pub sha256: Option<String>,
    pub hash_checkpoint: Option<HashCheckpoint>,
    pub error: Option<String>,
    pub error_stage: Option<Stage>,
    pub http_status: Option<u16>,
    pub platform_message: Option<String>,
    pub attempts: u32,
    pub next_retry_at: Option<SystemTime>,
    pub watch_dir: Option<PathBuf>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    /// Chunks acknowledged in the current session.
    pub chunks_done: u64,
    /// Bytes of those chunks.
    pub bytes_done: u64,
    /// Where a daemon job's file and receipt go, once decided.
    pub filing: Option<Filing>,
    /// The last filing error, while filing keeps failing.
    pub filing_error: Option<String>,
    /// Forgotten by `modelferry prune`: only what recognises the file again
    /// (identity, size, sha256, import kind, model and dock status ids) is
    /// kept; `status` no longer lists it.
    pub pruned: bool,
    /// A duplicate (dedupe): the earlier job that imported the same bytes.
    pub duplicate_of: Option<JobId>,
    /// Fleet mode: the instance holding the job (or that held it last).
    pub instance: Option<String>,
}

impl Job {
    pub fn size(&self) -> u64 {
        self.identity.size
    }
}

/// The import session a job is uploading into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub session_id: String,
    pub started_at: SystemTime,
    /// `None` when the platform's `expirationDate` could not be read.
    pub expires_at: Option<SystemTime>,
}

/// One chunk the platform acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkAck {
    pub index: u64,
    pub size: u64,
    /// What a resume re-reading the chunk checks it against.
    pub checksum: ChunkChecksum,
}

/// The checksum recorded with an acknowledged chunk, to tell on resume
/// whether the bytes still are the ones sent. Only a changed file is caught
/// with it (the whole-file sha256 is the integrity check), so a fast
/// non-cryptographic hash does; jobs acknowledged before the upgrade keep
/// the sha256 they were recorded with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkChecksum {
    /// XXH3-64 of the chunk's bytes.
    Xxh3(u64),
    /// Lowercase hex SHA-256 of the chunk's bytes (rows from before XXH3).
    Sha256(String),
}

impl ChunkChecksum {
    /// The checksum of `data` of the same kind as `self`.
    pub fn same_kind_of(&self, data: &[u8]) -> ChunkChecksum {
        match self {
            ChunkChecksum::Xxh3(_) => ChunkChecksum::xxh3(data),
            ChunkChecksum::Sha256(_) => {
                use sha2::Digest;
                ChunkChecksum::Sha256(hex::encode(sha2::Sha256::digest(data)))
            }
        }
    }

    pub fn xxh3(data: &[u8]) -> ChunkChecksum {
        ChunkChecksum::Xxh3(xxhash_rust::xxh3::xxh3_64(data))
    }
}

/// The whole-file hash after the first `chunks` chunks, so a resumed job
/// does not have to read the acknowledged part of the file again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashCheckpoint {
    pub chunks: u64,
    pub state: Vec<u8>,
}

/// Why a job failed, as its error receipt and `status` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub error: String,
    pub stage: Stage,
    pub http_status: Option<u16>,
    pub platform_message: Option<String>,
}

impl Failure {
    /// A failure without an answer from the platform.
    pub fn new(stage: Stage, error: impl Into<String>) -> Self {
        Failure {
            error: error.into(),
            stage,
            http_status: None,
            platform_message: None,
        }
    }
}
