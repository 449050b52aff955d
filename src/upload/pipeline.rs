//! The chunk pipeline of one session: read in order, upload in parallel.
//!
//! Chunks are read one after another (so the whole-file hash sees the bytes in
//! order) with positioned reads, each hashed on its own and into the file's
//! hash in the same pass. Up to `parallel_chunks` uploads run while the next
//! chunk is read, so memory stays near `(parallel_chunks + 2) × chunk_size`.
//! Chunks the platform already acknowledged are not sent again; those the
//! saved hash state does not cover are read once more to finish the file's
//! hash, and their sha256 must match what was acknowledged. A gzip archive's
//! chunks are also handed, in order, to pre-flight's [`StreamVerifier`],
//! whose verdict is awaited before the job may complete.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::task::{JoinError, JoinSet};
use tracing::{debug, Instrument};

use super::{ChunkPlan, JobCtx, ResumableSha256, StepError};
use crate::job::{ChunkAck, HashCheckpoint, Job, SessionRecord};
use crate::preflight::StreamVerifier;
use crate::source::{SourceError, SourceFile};
use crate::store::StoreError;

/// Hashing works through a chunk in slices this big, so the chunk's and the
/// file's hash read each slice while it is still in cache.
const HASH_SLICE: usize = 256 * 1024;

/// Chunk buffers, reused: at most `parallel_chunks` + 2 are alive at once,
/// so memory stays bounded whatever the allocator keeps, and no chunk pays
/// for fresh zeroed pages.
#[derive(Clone, Default)]
struct BufferPool(Arc<Mutex<Vec<Vec<u8>>>>);

impl BufferPool {
    fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        // Every byte is overwritten by the read; only a first use zeroes.
        buf.resize(len, 0);
        buf
    }
}

/// A pooled buffer behind a `Bytes`: back to the pool when the last clone
/// of the `Bytes` (the request body's included) is dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: BufferPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        self.pool
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(buf);
    }
}

struct ReadChunk {
    index: u64,
    data: Bytes,
    sha256: String,
    /// The file hash after this chunk, when this read advanced it.
    checkpoint: Option<HashCheckpoint>,
}

fn read_chunk(
    pool: &BufferPool,
    src: &SourceFile,
    plan: ChunkPlan,
    index: u64,
    hasher: &mut ResumableSha256,
    advance_file_hash: bool,
) -> Result<ReadChunk, SourceError> {
    let (offset, len) = plan.range(index);
    let mut buf = pool.take(len);
    src.read_exact_at(&mut buf, offset)?;
    let mut chunk_hash = Sha256::new();
    for slice in buf.chunks(HASH_SLICE) {
        chunk_hash.update(slice);
        if advance_file_hash {
            hasher.update(slice);
        }
    }
    Ok(ReadChunk {
        index,
        data: Bytes::from_owner(Pooled {
            buf,
            pool: pool.clone(),
        }),
        sha256: hex::encode(chunk_hash.finalize()),
        checkpoint: advance_file_hash.then(|| HashCheckpoint {
            chunks: index + 1,
            state: hasher.save(),
        }),
    })
}

fn joined(r: Result<Result<(), StepError>, JoinError>) -> Result<(), StepError> {
    r.map_err(|e| StepError::Task(format!("chunk task: {e}")))?
}

/// Uploads every chunk of `job` not in `acked` into `session`; returns the
/// whole file's sha256 once all are acknowledged.
pub(super) async fn upload_chunks(
    ctx: &JobCtx,
    job: &Job,
    session: &SessionRecord,
    acked: HashMap<u64, String>,
) -> Result<String, StepError> {
    let plan = ChunkPlan::new(job.size(), job.chunk_size);
    let total = plan.chunks();
    if total != job.chunks_total {
        return Err(StoreError::Corrupt {
            job: job.id,
            detail: format!(
                "chunk count {} does not match the plan's {total}",
                job.chunks_total
            ),
        }
        .into());
    }
    let path = job.path.clone();
    let identity = job.identity;
    let src =
        Arc::new(tokio::task::spawn_blocking(move || SourceFile::open(&path, &identity)).await??);

    // Resume the file hash where the saved state left it, if it is sound.
    let (mut hasher, hashed_through) = job
        .hash_checkpoint
        .as_ref()
        .and_then(|cp| {
            let h = ResumableSha256::restore(&cp.state)?;
            let covered = (cp.chunks * job.chunk_size).min(job.size());
            (cp.chunks <= total && h.len() == covered).then_some((h, cp.chunks))
        })
        .unwrap_or_else(|| (ResumableSha256::new(), 0));

    let done_bytes: u64 = acked.keys().map(|&i| plan.range(i).1 as u64).sum();
    ctx.progress.send_modify(|p| {
        p.chunks_done = acked.len() as u64;
        p.bytes_done = done_bytes;
    });

    // Pre-flight of a gzip archive's whole stream, fed each chunk read.
    let mut verifier = match ctx.settings.preflight {
        true => StreamVerifier::start(src.clone(), &job.file_name, job.size()).await?,
        false => None,
    };

    let session_id: Arc<str> = session.session_id.as_str().into();
    let file_name: Arc<str> = part_name(&job.file_name).into();
    let parallel = ctx.settings.parallel_chunks.max(1);
    let mut inflight: JoinSet<Result<(), StepError>> = JoinSet::new();
    let mut cancelled = false;
    let pool = BufferPool::default();

    for index in 0..total {
        if ctx.cancel.is_cancelled() {
            cancelled = true;
            break;
        }
        let upload = !acked.contains_key(&index);
        let advance = index >= hashed_through;
        if !upload && !advance {
            continue;
        }
        if upload && ctx.session_expiring(session) {
            return Err(StepError::SessionExpiring);
        }
        // Reading happens while earlier chunks are on the wire.
        let src2 = src.clone();
        let pool2 = pool.clone();
        let mut h = std::mem::take(&mut hasher);
        let (chunk, h) = tokio::task::spawn_blocking(move || {
            read_chunk(&pool2, &src2, plan, index, &mut h, advance).map(|c| (c, h))
        })
        .await??;
        hasher = h;
        if let Some(v) = verifier.as_mut() {
            v.feed(plan.range(index).0, chunk.data.clone()).await?;
        }

        if !upload {
            if acked.get(&index) != Some(&chunk.sha256) {
                return Err(SourceError::ChunkChanged {
                    path: job.path.clone(),
                    index,
                }
                .into());
            }
            continue;
        }
        while let Some(r) = inflight.try_join_next() {
            joined(r)?;
        }
        while inflight.len() >= parallel {
            if let Some(r) = inflight.join_next().await {
                joined(r)?;
            }
        }
        let span = tracing::debug_span!("chunk", index);
        inflight.spawn(
            upload_one(ctx.clone(), session_id.clone(), file_name.clone(), chunk).instrument(span),
        );
    }

    // Let chunks already on the wire finish, even when stopping: each one
    // acknowledged now is one fewer to send after the restart.
    let mut first_err = None;
    while let Some(r) = inflight.join_next().await {
        match joined(r) {
            Ok(()) => {}
            Err(StepError::Cancelled) => cancelled = true,
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                    inflight.abort_all();
                }
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if cancelled {
        return Err(StepError::Cancelled);
    }
    // Nothing is completed before the whole stream is known good.
    if let Some(v) = verifier {
        v.finish().await?;
    }
    let src2 = src.clone();
    tokio::task::spawn_blocking(move || src2.check_unchanged()).await??;
    Ok(hasher.finalize_hex())
}

/// The name the chunk's file part carries. It travels in a multipart
/// header, where a control character (a newline in the name) would break
/// the form; those become `_`. The start request's `fileName` (JSON) keeps
/// the name exactly.
fn part_name(file_name: &str) -> String {
    file_name
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect()
}

async fn upload_one(
    ctx: JobCtx,
    session_id: Arc<str>,
    file_name: Arc<str>,
    chunk: ReadChunk,
) -> Result<(), StepError> {
    let ReadChunk {
        index,
        data,
        sha256,
        checkpoint,
    } = chunk;
    let size = data.len() as u64;
    ctx.retry(|| {
        ctx.platform
            .upload_chunk(&session_id, index, &file_name, data.clone())
    })
    .await?;
    drop(data);
    let ack = ChunkAck {
        index,
        size,
        sha256,
    };
    ctx.store
        .ack_chunk(ctx.id, &ctx.hold, &session_id, &ack, checkpoint.as_ref())
        .await?;
    ctx.metrics.bytes_uploaded.inc_by(size);
    ctx.metrics.chunks_uploaded.inc();
    ctx.progress.send_modify(|p| {
        p.chunks_done += 1;
        p.bytes_done += size;
    });
    debug!(bytes = size, "chunk acknowledged");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn part_names_carry_no_control_characters() {
        assert_eq!(super::part_name("new\nline\r\x1b.tar"), "new_line__.tar");
        assert_eq!(super::part_name("modèle v2.tar"), "modèle v2.tar");
    }
}
