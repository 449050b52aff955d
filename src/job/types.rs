//! A job and the values recorded with it as it moves.

use std::path::PathBuf;
use std::time::SystemTime;

use super::{Filing, JobState, Stage};
use crate::source::FileIdentity;

/// A job's row id in the store.
pub type JobId = i64;

/// What a new job is made of.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The source file.
    pub path: PathBuf,
    /// The file's identity when the job was made.
    pub identity: FileIdentity,
    /// The platform's `fileContext` for the import.
    pub file_context: String,
    /// Whether the import is an adapter (`isAdapter`).
    pub is_adapter: bool,
    /// Bytes in each chunk, fixed for the job's life.
    pub chunk_size: u64,
    /// The drop folder the file came from; `None` for `modelferry upload`.
    pub watch_dir: Option<PathBuf>,
}

#[cfg(test)]
impl NewJob {
    /// A `model` job for `path` of `size` bytes (identity 1/2/3, chunks of
    /// 1 KiB, not from a drop folder): the tests' one way to make a job;
    /// change what a test needs with struct update syntax.
    pub(crate) fn for_test(path: impl Into<PathBuf>, size: u64) -> NewJob {
        NewJob {
            path: path.into(),
            identity: FileIdentity {
                dev: 1,
                ino: 2,
                size,
                mtime_ns: 3,
            },
            file_context: "model".into(),
            is_adapter: false,
            chunk_size: 1024,
            watch_dir: None,
        }
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// The source file.
    pub path: PathBuf,
    /// The file's name (the last part of `path`), as sent to the platform.
    pub file_name: String,
    /// The file's identity when the job was made.
    pub identity: FileIdentity,
    /// The platform's `fileContext` for the import.
    pub file_context: String,
    /// Whether the import is an adapter (`isAdapter`).
    pub is_adapter: bool,
    /// Bytes in each chunk, fixed for the job's life.
    pub chunk_size: u64,
    /// Chunks the file is cut into.
    pub chunks_total: u64,
    /// Where the job is in its life.
    pub state: JobState,
    /// The import session being uploaded into, if any.
    pub session: Option<SessionRecord>,
    /// Sessions started for the job so far (a replaced session counts again).
    pub sessions_started: u32,
    /// The platform's model id for the import, given when a session starts.
    pub model_id: Option<String>,
    /// The dock status id to poll once the import is completed.
    pub dock_status_id: Option<String>,
    /// Lowercase hex SHA-256 of the whole file, once known.
    pub sha256: Option<String>,
    /// The whole-file hash so far, so a resume need not read the file again.
    pub hash_checkpoint: Option<HashCheckpoint>,
    /// The last error: the reason a job failed, or a passing problem (a
    /// retry) while it is still moving.
    pub error: Option<String>,
    /// The step that failed.
    pub error_stage: Option<Stage>,
    /// The platform's HTTP status with the failure, if it answered.
    pub http_status: Option<u16>,
    /// The platform's message with the failure, if it gave one.
    pub platform_message: Option<String>,
    /// Passing problems noted so far (retries, a rejected key).
    pub attempts: u32,
    /// When the next retry after a passing problem is due.
    pub next_retry_at: Option<SystemTime>,
    /// The drop folder the file came from; `None` for `modelferry upload`.
    pub watch_dir: Option<PathBuf>,
    /// When the job was made.
    pub created_at: SystemTime,
    /// When the job last changed.
    pub updated_at: SystemTime,
    /// When its first session started.
    pub started_at: Option<SystemTime>,
    /// When it reached a finished state.
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
    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.identity.size
    }

    /// The platform's model id, once given (an empty one is none).
    pub fn model_id(&self) -> Option<&str> {
        self.model_id.as_deref().filter(|m| !m.is_empty())
    }
}

/// The import session a job is uploading into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The platform's session id.
    pub session_id: String,
    /// When the session started.
    pub started_at: SystemTime,
    /// `None` when the platform's `expirationDate` could not be read.
    pub expires_at: Option<SystemTime>,
}

/// One chunk the platform acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkAck {
    /// The chunk's index in the file, from 0.
    pub index: u64,
    /// The chunk's size in bytes.
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

    /// The XXH3-64 checksum of `data` (what new acknowledgements record).
    pub fn xxh3(data: &[u8]) -> ChunkChecksum {
        ChunkChecksum::Xxh3(xxhash_rust::xxh3::xxh3_64(data))
    }
}

/// The whole-file hash after the first `chunks` chunks, so a resumed job
/// does not have to read the acknowledged part of the file again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashCheckpoint {
    /// Chunks covered, from the first, in order.
    pub chunks: u64,
    /// The saved hash state (see `upload::hash`).
    pub state: Vec<u8>,
}

/// Why a job failed, as its error receipt and `status` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong, in words.
    pub error: String,
    /// The step that failed.
    pub stage: Stage,
    /// The platform's HTTP status, if it answered.
    pub http_status: Option<u16>,
    /// The platform's message, if it gave one.
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
