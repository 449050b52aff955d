//! The chunk pipeline of one session: read each chunk once, hand it to the
//! upload and to the file hasher, upload up to `parallel_chunks` at once.
//!
//! Reads happen on the blocking pool and may overlap; each computes the
//! chunk's XXH3 (cheap: it only tells a later resume the bytes did not
//! change). The same buffer goes to the upload and to the hasher thread
//! ([`FileHasher`]), which hashes the whole file in file order off the send
//! path: one SHA-256 pass per byte. [`FileHasher`]'s in-order loop is the
//! single point where chunk bytes are seen in file order: it also offers
//! them to pre-flight's [`StreamVerifier`] for a gzip archive, whose verdict
//! is awaited before the job may complete.
//!
//! Buffers come from a pool of `parallel_chunks + 2` (plus
//! [`StreamVerifier::HOLDS`] for a gzip archive: buffers the verifier may
//! keep), taken in chunk order and given back when the upload, the hash and
//! the verifier are done with them, so memory stays near that many chunk
//! sizes, `parallel_chunks` uploads stay in flight, and the chunk the hasher
//! waits for always has its buffer. Chunks the platform already
//! acknowledged are not sent again; those the saved hash state does not
//! cover are read once more to finish the file's hash, and must match the
//! checksum recorded with their acknowledgement (XXH3, or SHA-256 for
//! chunks acknowledged before the upgrade).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinSet};
use tracing::{debug, Instrument};

use super::hash::{resume_hash, FileHasher, InOrder};
use super::{ChunkPlan, JobCtx, StepError};
use crate::job::{ChunkAck, ChunkChecksum, Job, SessionRecord};
use crate::platform::{IdKind, Op, PlatformId};
use crate::preflight::StreamVerifier;
use crate::source::{SourceError, SourceFile};
use crate::store::StoreError;

/// Chunk buffers, reused, at most `limit` out at once: memory stays bounded
/// whatever the allocator keeps, and no chunk pays for fresh zeroed pages.
#[derive(Clone)]
struct BufferPool {
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    limit: Arc<Semaphore>,
}

impl BufferPool {
    fn new(limit: usize) -> Self {
        BufferPool {
            free: Arc::default(),
            limit: Arc::new(Semaphore::new(limit)),
        }
    }

    /// A right to one buffer; waits while `limit` are out.
    async fn reserve(&self) -> OwnedSemaphorePermit {
        self.limit
            .clone()
            .acquire_owned()
            .await
            .expect("the pool's semaphore is never closed")
    }

    fn take(&self, len: usize, permit: OwnedSemaphorePermit) -> Pooled {
        let mut buf = self
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        // Every byte is overwritten by the read; only a first use zeroes.
        buf.resize(len, 0);
        Pooled {
            buf,
            pool: self.clone(),
            _permit: permit,
        }
    }
}

/// A pooled buffer behind a `Bytes`: back to the pool when the last clone
/// of the `Bytes` (the request body's and the hasher's included) is dropped.
struct Pooled {
    buf: Vec<u8>,
    pool: BufferPool,
    _permit: OwnedSemaphorePermit,
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
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(buf);
    }
}

/// What a chunk is read for.
enum Purpose {
    /// Not acknowledged: upload it.
    Upload,
    /// Acknowledged with this checksum; read again only for the file hash.
    Verify(ChunkChecksum),
}

/// Reads chunk `index` into a pooled buffer; its checksum (XXH3 for an
/// upload, the acknowledgement's kind for a verification).
fn read_chunk(
    buf: Pooled,
    src: &SourceFile,
    plan: ChunkPlan,
    index: u64,
    purpose: &Purpose,
) -> Result<(Bytes, ChunkChecksum), SourceError> {
    let (offset, _) = plan.range(index);
    let mut buf = buf;
    src.read_exact_at(&mut buf.buf, offset)?;
    let sum = match purpose {
        Purpose::Upload => ChunkChecksum::xxh3(&buf.buf),
        Purpose::Verify(want) => want.same_kind_of(&buf.buf),
    };
    Ok((Bytes::from_owner(buf), sum))
}

fn joined(r: Result<Result<(), StepError>, JoinError>) -> Result<(), StepError> {
    r.map_err(|e| StepError::Task(format!("chunk task: {e}")))?
}

/// What every chunk task of one run shares.
struct Run {
    ctx: JobCtx,
    job_path: std::path::PathBuf,
    src: Arc<SourceFile>,
    plan: ChunkPlan,
    session: SessionRecord,
    /// The session's id, checked once for all its chunks.
    session_id: PlatformId,
    file_name: Arc<str>,
    hasher: FileHasher,
    /// Uploads in flight at once: `parallel_chunks`.
    uploads: Semaphore,
    /// Bytes acknowledged in this run, and since when: the session's pace.
    started: Instant,
}

/// Uploads every chunk of `job` not in `acked` into `session`; returns the
/// whole file's sha256 once all are acknowledged.
pub(super) async fn upload_chunks(
    ctx: &JobCtx,
    job: &Job,
    session: &SessionRecord,
    acked: HashMap<u64, ChunkChecksum>,
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
    // The id is stored from the platform's answer: checked once here, not
    // again for every chunk.
    let first = (0..total).find(|i| !acked.contains_key(i)).unwrap_or(0);
    let session_id =
        ctx.platform
            .check_id(Op::UploadChunk(first), IdKind::Session, &session.session_id)?;
    let path = job.path.clone();
    let identity = job.identity;
    let src =
        Arc::new(tokio::task::spawn_blocking(move || SourceFile::open(&path, &identity)).await??);

    // Pre-flight of a gzip archive's whole stream: the hasher thread offers
    // it the chunks in file order; its verdict is awaited before `complete`.
    let verifier = match ctx.settings.preflight {
        true => StreamVerifier::start(src.clone(), &job.file_name, job.size()).await?,
        false => None,
    };
    let in_order = verifier.as_ref().map(|v| {
        let offers = v.offers();
        Box::new(move |index: u64, data: &Bytes| offers.offer(plan.range(index).0, data.clone()))
            as InOrder
    });

    let (hasher, hashed_through) = resume_hash(job, ctx.hashed.get(), total);

    let done_bytes: u64 = acked.keys().map(|&i| plan.range(i).1 as u64).sum();
    ctx.progress.send_modify(|p| {
        p.chunks_done = acked.len() as u64;
        p.bytes_done = done_bytes;
    });
    ctx.pace.begin();

    let parallel = ctx.settings.parallel_chunks.max(1);
    let run = Arc::new(Run {
        ctx: ctx.clone(),
        job_path: job.path.clone(),
        src: src.clone(),
        plan,
        session: session.clone(),
        session_id,
        file_name: part_name(&job.file_name).into(),
        hasher: FileHasher::start(hasher, hashed_through, in_order)
            .map_err(|e| StepError::Task(format!("cannot start the file hash thread: {e}")))?,
        uploads: Semaphore::new(parallel),
        started: Instant::now(),
    });
    // One buffer per upload in flight, one being read, one the hasher may
    // still be finishing, and those the stream verifier may keep: without
    // them a slow inflate would take buffers from the uploads.
    let kept = verifier.as_ref().map_or(0, |_| StreamVerifier::HOLDS);
    let pool = BufferPool::new(parallel + 2 + kept);
    let mut tasks: JoinSet<Result<(), StepError>> = JoinSet::new();
    let mut cancelled = false;
    let mut first_err = None;

    for index in 0..total {
        if ctx.cancel.is_cancelled() {
            cancelled = true;
            break;
        }
        // A corrupt stream: nothing more is worth sending (the verdict
        // comes from `finish` below).
        if verifier.as_ref().is_some_and(StreamVerifier::stopped) {
            break;
        }
        let purpose = match acked.get(&index) {
            None => Purpose::Upload,
            Some(_) if index < hashed_through => continue,
            Some(sum) => Purpose::Verify(sum.clone()),
        };
        if matches!(purpose, Purpose::Upload) && ctx.session_expiring(session) {
            first_err = Some(StepError::SessionExpiring);
            break;
        }
        // Taken in chunk order: the chunk the hasher needs next always
        // holds a buffer already.
        let permit = loop {
            tokio::select! {
                p = pool.reserve() => break Some(p),
                Some(r) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = joined(r) {
                        first_err = Some(e);
                        break None;
                    }
                }
            }
        };
        let Some(permit) = permit else { break };
        while let Some(r) = tasks.try_join_next() {
            if let Err(e) = joined(r) {
                first_err.get_or_insert(e);
            }
        }
        if first_err.is_some() {
            break;
        }
        let buf = pool.take(plan.range(index).1, permit);
        let advance = index >= hashed_through;
        let span = tracing::debug_span!("chunk", index);
        tasks.spawn(chunk_task(run.clone(), index, buf, purpose, advance).instrument(span));
    }

    // Let chunks already on the wire finish, even when stopping: each one
    // acknowledged now is one fewer to send after the restart.
    if first_err.is_some() {
        tasks.abort_all();
    }
    while let Some(r) = tasks.join_next().await {
        match joined(r) {
            Ok(()) => {}
            Err(StepError::Cancelled) => cancelled = true,
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                    tasks.abort_all();
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
    let run = Arc::into_inner(run)
        .ok_or_else(|| StepError::Task("chunk tasks outlived the run".into()))?;
    let hasher = run.hasher;
    let (hash, unchanged) =
        tokio::task::spawn_blocking(move || (hasher.finish(), src.check_unchanged())).await?;
    unchanged?;
    // Nothing is completed before the whole stream is known good.
    if let Some(v) = verifier {
        v.finish().await?;
    }
    Ok(hash.map_err(StepError::Task)?.finalize_hex())
}

/// One chunk: read it, give it to the hasher, then upload it (or check it
/// against its acknowledgement).
async fn chunk_task(
    run: Arc<Run>,
    index: u64,
    buf: Pooled,
    purpose: Purpose,
    advance: bool,
) -> Result<(), StepError> {
    let r = run.clone();
    let (data, sum, purpose) = tokio::task::spawn_blocking(move || {
        read_chunk(buf, &r.src, r.plan, index, &purpose).map(|(d, s)| (d, s, purpose))
    })
    .await??;
    if advance {
        run.hasher.feed(index, data.clone());
    }
    match purpose {
        Purpose::Verify(want) => {
            if sum != want {
                return Err(SourceError::ChunkChanged {
                    path: run.job_path.clone(),
                    index,
                }
                .into());
            }
            Ok(())
        }
        Purpose::Upload => {
            let _slot = run
                .uploads
                .acquire()
                .await
                .map_err(|e| StepError::Task(e.to_string()))?;
            if run.ctx.cancel.is_cancelled() {
                return Err(StepError::Cancelled);
            }
            if run.ctx.session_expiring(&run.session) {
                return Err(StepError::SessionExpiring);
            }
            upload_one(&run, index, data, sum).await
        }
    }
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
    run: &Run,
    index: u64,
    data: Bytes,
    checksum: ChunkChecksum,
) -> Result<(), StepError> {
    let ctx = &run.ctx;
    let size = data.len() as u64;
    ctx.retry(|| {
        ctx.platform
            .upload_chunk(&run.session_id, index, &run.file_name, data.clone())
    })
    .await?;
    drop(data);
    let ack = ChunkAck {
        index,
        size,
        checksum,
    };
    // The file hash as far as the hasher got in order: it may cover chunks
    // not acknowledged yet, which a resume re-reads for upload only.
    let checkpoint = run.hasher.checkpoint();
    ctx.store
        .ack_chunk(
            ctx.id,
            &ctx.hold,
            run.session_id.as_str(),
            &ack,
            checkpoint.as_ref(),
        )
        .await?;
    ctx.pace.acked(size, run.started.elapsed());
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
