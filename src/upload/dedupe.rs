//! Dedupe: is this file's content already imported?
//!
//! Keyed on (size, sha256, `file_context`, `is_adapter`) over succeeded
//! jobs. The store is asked by size first; only when an imported file of
//! exactly this size exists is the file read for its sha256, so the common
//! case (a new size) costs one indexed query. That read's hash state is kept
//! ([`Lookup::hashed`]): the upload that follows resumes from it instead of
//! hashing the file a second time. Used by the engine before a queued job's
//! first session and by `upload --dry-run` (read-only store).

use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::ResumableSha256;
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

/// What the dedupe look-up found.
#[derive(Clone)]
pub struct Lookup {
    /// The import of the same bytes, if there is one.
    pub duplicate: Option<Duplicate>,
    /// The whole file's hash, not finalized, when the look-up read the file
    /// for it: an upload resumes from it rather than hash the file again.
    pub hashed: Option<ResumableSha256>,
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
    let found = look_up(store, path, identity, file_context, is_adapter, cancel).await?;
    Ok(found.duplicate)
}

/// [`find_duplicate`], keeping the file's hash when it was computed.
pub async fn look_up(
    store: &Store,
    path: &Path,
    identity: &FileIdentity,
    file_context: &str,
    is_adapter: bool,
    cancel: &CancellationToken,
) -> Result<Lookup, DedupeError> {
    let size = identity.size;
    if size == 0
        || !store
            .imported_size_exists(size, file_context, is_adapter)
            .await?
    {
        return Ok(Lookup {
            duplicate: None,
            hashed: None,
        });
    }
    let (p, id, c) = (path.to_path_buf(), *identity, cancel.clone());
    let hashed = tokio::task::spawn_blocking(move || hash_of(&p, &id, &c))
        .await
        .map_err(|_| DedupeError::Cancelled)??;
    let sha256 = hashed.clone().finalize_hex();
    let original = store
        .find_imported(size, &sha256, file_context, is_adapter)
        .await?;
    Ok(Lookup {
        duplicate: original.map(|original| Duplicate { sha256, original }),
        hashed: Some(hashed),
    })
}

/// The hash of the whole file, read in order; stops when `cancel` fires.
fn hash_of(
    path: &Path,
    identity: &FileIdentity,
    cancel: &CancellationToken,
) -> Result<ResumableSha256, DedupeError> {
    let src = SourceFile::open(path, identity)?;
    let mut hash = ResumableSha256::new();
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
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::job::{NewJob, SessionRecord};

    fn new_job(path: &Path, identity: FileIdentity) -> NewJob {
        NewJob {
            path: path.to_path_buf(),
            identity,
            file_context: "model".into(),
            is_adapter: false,
            chunk_size: 1024,
            watch_dir: None,
        }
    }

    /// A succeeded import of `size` bytes whose sha256 is `sha256`.
    async fn imported(store: &Store, size: u64, sha256: &str) {
        let identity = FileIdentity {
            dev: 1,
            ino: 2,
            size,
            mtime_ns: 3,
        };
        let id = store
            .admit(&new_job(Path::new("/drop/orig.tar"), identity))
            .await
            .unwrap();
        let hold = store.hold(id).await.unwrap();
        let session = SessionRecord {
            session_id: "s".into(),
            started_at: SystemTime::now(),
            expires_at: None,
        };
        store
            .start_session(id, &hold, &session, "cm")
            .await
            .unwrap();
        store.begin_complete(id, &hold, sha256).await.unwrap();
        store.set_importing(id, &hold, "ds", None).await.unwrap();
        store.succeed(id, &hold, None).await.unwrap();
        store.release(hold).await;
    }

    #[tokio::test]
    async fn a_file_read_for_its_hash_keeps_the_hash_for_the_upload() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("state")).await.unwrap();
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let path = dir.path().join("m.tar");
        std::fs::write(&path, &data).unwrap();
        let identity = FileIdentity::of_path(&path).unwrap();
        let want = hex::encode(Sha256::digest(&data));
        let never = CancellationToken::new();
        let look = |store: Store| {
            let (path, never) = (path.clone(), never.clone());
            async move {
                look_up(&store, &path, &identity, "model", false, &never)
                    .await
                    .unwrap()
            }
        };

        // No import of this size: the file is not read.
        let found = look(store.clone()).await;
        assert!(found.duplicate.is_none() && found.hashed.is_none());

        // Same size, other bytes: read once, and the hash kept.
        imported(&store, data.len() as u64, "0123").await;
        let found = look(store.clone()).await;
        assert!(found.duplicate.is_none());
        let hashed = found.hashed.expect("the hash is kept");
        assert_eq!(hashed.len(), data.len() as u64, "one pass over the file");
        assert_eq!(hashed.finalize_hex(), want);

        // The same bytes: a duplicate, with the same hash.
        imported(&store, data.len() as u64, &want).await;
        let found = look(store.clone()).await;
        assert_eq!(found.duplicate.unwrap().sha256, want);
        assert_eq!(found.hashed.unwrap().finalize_hex(), want);
    }
}
