//! Dedupe: is this file's content already imported?
//!
//! Keyed on (size, sha256, `file_context`, `is_adapter`) over succeeded
//! jobs. The store is asked by size first; only when an imported file of
//! exactly this size exists is the file read for its sha256, so the common
//! case (a new size) costs one indexed query. Used by the engine before a
//! queued job's first session and by `upload --dry-run` (read-only store).

use std::path::Path;

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::job::Job;
use crate::source::{FileIdentity, SourceError, SourceFile};
use crate::store::{Store, StoreError};

/// Bytes read at a time for the sha256 pass.
const READ: usize = 1 << 20;

/// A file whose bytes were imported already.
#[derive(Debug, Clone)]
pub struct Duplicate {
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    /// The succeeded job that imported them.
    pub original: Job,
}

/// Why the dedupe look-up could not answer.
#[derive(Debug, thiserror::Error)]
pub enum DedupeError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Stopped on request.
    #[error("interrupted")]
    Cancelled,
}

/// The import of the bytes at `path` (which must still have `identity`)
/// with this kind, if there is one.
pub async fn find_duplicate(
    store: &Store,
    path: &Path,
    identity: &FileIdentity,
    file_context: &str,
    is_adapter: bool,
    cancel: &CancellationToken,
) -> Result<Option<Duplicate>, DedupeError> {
    let size = identity.size;
    if size == 0
        || !store
            .imported_size_exists(size, file_context, is_adapter)
            .await?
    {
        return Ok(None);
    }
    let (p, id, c) = (path.to_path_buf(), *identity, cancel.clone());
    let sha256 = tokio::task::spawn_blocking(move || sha256_of(&p, &id, &c))
        .await
        .map_err(|_| DedupeError::Cancelled)??;
    let original = store
        .find_imported(size, &sha256, file_context, is_adapter)
        .await?;
    Ok(original.map(|original| Duplicate { sha256, original }))
}

/// The sha256 of the whole file, read in order; stops when `cancel` fires.
fn sha256_of(
    path: &Path,
    identity: &FileIdentity,
    cancel: &CancellationToken,
) -> Result<String, DedupeError> {
    let src = SourceFile::open(path, identity)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; READ.min(identity.size as usize)];
    let mut at = 0u64;
    while at < identity.size {
        if cancel.is_cancelled() {
            return Err(DedupeError::Cancelled);
        }
        let n = (identity.size - at).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], at)?;
        hash.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hex::encode(hash.finalize()))
}
