//! The whole-file SHA-256: a hash whose state can be saved and restored
//! ([`ResumableSha256`]), and the thread that computes it off the send path
//! ([`FileHasher`]).
//!
//! The pipeline reads each chunk once; the same buffer goes to the upload
//! and to the hasher thread, which puts chunks back in file order (reads
//! overlap and finish in any order) and hashes them, one SHA-256 pass per
//! byte. After each chunk it publishes the hash state as a checkpoint, which
//! is saved with the next acknowledgement, so a resumed job continues
//! hashing where it stopped instead of reading the part of the file that is
//! already uploaded. A checkpoint only ever covers chunks hashed in order.
//! Dedupe's pass over a file whose size matches an import is one too
//! ([`RunHash`]): its upload then hashes nothing again ([`resume_hash`]).
//! `sha2` does not expose its state, so [`ResumableSha256`] keeps the eight
//! state words itself and lets `sha2::compress256` (which uses the CPU's SHA
//! instructions where present) do the work.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use sha2::digest::generic_array::GenericArray;
use sha2::digest::typenum::U64;

use crate::job::{HashCheckpoint, Job};

type Block = GenericArray<u8, U64>;

/// Blocks per compress256 call (4 KiB: the batch stays in L1).
const BATCH: usize = 64;

const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// A SHA-256 whose state can be saved and restored (see the module docs).
#[derive(Clone)]
pub struct ResumableSha256 {
    state: [u32; 8],
    /// Bytes already compressed into `state` (a multiple of 64).
    compressed: u64,
    pending: Vec<u8>,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl ResumableSha256 {
    /// A hash of nothing yet.
    pub fn new() -> Self {
        ResumableSha256 {
            state: H0,
            compressed: 0,
            pending: Vec::with_capacity(64),
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.compressed + self.pending.len() as u64
    }

    /// Whether nothing has been hashed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hashes `data` next.
    pub fn update(&mut self, mut data: &[u8]) {
        if !self.pending.is_empty() {
            let take = (64 - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < 64 {
                return;
            }
            let block = Block::clone_from_slice(&self.pending);
            sha2::compress256(&mut self.state, std::slice::from_ref(&block));
            self.compressed += 64;
            self.pending.clear();
        }
        let whole = data.len() / 64 * 64;
        // Many blocks per call: compress256 sets up the SHA unit on every
        // call, which for one block at a time cost about a tenth of the
        // hash. `clone_from_slice` went byte by byte and cost more than the
        // hash; a `copy_from_slice` per block into a batch is a memcpy.
        let mut batch = [Block::default(); BATCH];
        for group in data[..whole].chunks(64 * BATCH) {
            let n = group.len() / 64;
            for (b, src) in batch.iter_mut().zip(group.chunks_exact(64)) {
                b.as_mut_slice().copy_from_slice(src);
            }
            sha2::compress256(&mut self.state, &batch[..n]);
        }
        self.compressed += whole as u64;
        self.pending.extend_from_slice(&data[whole..]);
    }

    /// The digest, as lowercase hex.
    pub fn finalize_hex(mut self) -> String {
        let bits = self.len().wrapping_mul(8);
        let mut tail = std::mem::take(&mut self.pending);
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&bits.to_be_bytes());
        let blocks: Vec<Block> = tail.chunks_exact(64).map(Block::clone_from_slice).collect();
        sha2::compress256(&mut self.state, &blocks);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        hex::encode(out)
    }

    /// The state as bytes: 32 bytes of state words, 8 of length, then the
    /// pending (not yet compressed) bytes.
    pub fn save(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(40 + self.pending.len());
        for w in self.state {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out.extend_from_slice(&self.compressed.to_be_bytes());
        out.extend_from_slice(&self.pending);
        out
    }

    /// Restores a state made by [`save`](Self::save); `None` if it is not one.
    pub fn restore(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < 40 || bytes.len() >= 40 + 64 {
            return None;
        }
        let mut state = [0u32; 8];
        for (s, b) in state.iter_mut().zip(bytes[..32].chunks_exact(4)) {
            *s = u32::from_be_bytes(b.try_into().ok()?);
        }
        let compressed = u64::from_be_bytes(bytes[32..40].try_into().ok()?);
        if compressed % 64 != 0 {
            return None;
        }
        Some(ResumableSha256 {
            state,
            compressed,
            pending: bytes[40..].to_vec(),
        })
    }
}

/// Where the file hash resumes: the furthest sound one of the job's saved
/// checkpoint and `this_run`'s (dedupe's pass over the whole file), or the
/// start. Chunks below the returned index are not hashed again.
pub(super) fn resume_hash(
    job: &Job,
    this_run: Option<HashCheckpoint>,
    total: u64,
) -> (ResumableSha256, u64) {
    [job.hash_checkpoint.as_ref(), this_run.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|cp| {
            let h = ResumableSha256::restore(&cp.state)?;
            let covered = (cp.chunks * job.chunk_size).min(job.size());
            (cp.chunks <= total && h.len() == covered).then_some((h, cp.chunks))
        })
        .max_by_key(|(_, chunks)| *chunks)
        .unwrap_or_else(|| (ResumableSha256::new(), 0))
}

/// A whole-file hash one step of a run left for a later one (dedupe's pass,
/// for the upload), in memory: the first acknowledgement of the upload
/// saves it as the job's checkpoint.
#[derive(Clone, Default)]
pub(crate) struct RunHash(Arc<Mutex<Option<HashCheckpoint>>>);

impl RunHash {
    pub(super) fn set(&self, cp: HashCheckpoint) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(cp);
    }

    pub(super) fn get(&self) -> Option<HashCheckpoint> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What else sees each chunk in file order, on the hasher thread: it must
/// not wait long (it holds up the hash).
pub(super) type InOrder = Box<dyn FnMut(u64, &Bytes) + Send>;

/// The hasher thread of one pipeline run. Chunks are given in any order
/// with [`FileHasher::feed`]; they are hashed in file order.
pub(super) struct FileHasher {
    tx: Option<mpsc::Sender<(u64, Bytes)>>,
    latest: Arc<Mutex<Option<HashCheckpoint>>>,
    thread: Option<JoinHandle<ResumableSha256>>,
}

impl FileHasher {
    /// Starts the thread with `hasher` having hashed chunks `0..next`,
    /// which is the first checkpoint (saved again, it changes nothing);
    /// `in_order`, if given, is shown each chunk (its index and bytes) right
    /// after it is hashed, in file order (pre-flight's stream verifier).
    /// The channel is not bounded here: every chunk sent holds one of the
    /// pipeline's pooled buffers, and those are bounded.
    pub(super) fn start(
        hasher: ResumableSha256,
        next: u64,
        in_order: Option<InOrder>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<(u64, Bytes)>();
        let first = (next > 0).then(|| HashCheckpoint {
            chunks: next,
            state: hasher.save(),
        });
        let latest = Arc::new(Mutex::new(first));
        let out = latest.clone();
        let thread = std::thread::Builder::new()
            .name("modelferry-sha256".into())
            .spawn(move || hash_in_order(rx, hasher, next, &out, in_order))?;
        Ok(FileHasher {
            tx: Some(tx),
            latest,
            thread: Some(thread),
        })
    }

    /// Hands chunk `index` to the thread. A chunk below the one the thread
    /// expects next must not be given (it is hashed already).
    pub(super) fn feed(&self, index: u64, data: Bytes) {
        if let Some(tx) = &self.tx {
            // The thread only stops when the sender is dropped (or it
            // panicked, which `finish` reports).
            let _ = tx.send((index, data));
        }
    }

    /// The newest checkpoint: the state after every chunk hashed so far.
    pub(super) fn checkpoint(&self) -> Option<HashCheckpoint> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits for every chunk given to be hashed; the state after them.
    /// Blocking: call it on the blocking pool.
    pub(super) fn finish(mut self) -> Result<ResumableSha256, String> {
        drop(self.tx.take());
        let thread = self.thread.take().ok_or("hasher already finished")?;
        thread
            .join()
            .map_err(|_| "the file hash thread panicked".to_string())
    }
}

impl Drop for FileHasher {
    fn drop(&mut self) {
        // Stopping early (an error, a cancel): the thread hashes what it
        // holds (at most the pipeline's few buffers) and ends on its own.
        drop(self.tx.take());
    }
}

/// The hasher thread: chunks arrive in any order and are hashed in file
/// order. This is the one place where every chunk the pipeline reads is
/// seen in file order: anything else that must see the file's bytes in
/// order (a stream verifier) belongs next to `hasher.update` here.
fn hash_in_order(
    rx: mpsc::Receiver<(u64, Bytes)>,
    mut hasher: ResumableSha256,
    mut next: u64,
    latest: &Mutex<Option<HashCheckpoint>>,
    mut in_order: Option<InOrder>,
) -> ResumableSha256 {
    let mut waiting: BTreeMap<u64, Bytes> = BTreeMap::new();
    for (index, data) in rx {
        waiting.insert(index, data);
        let mut advanced = false;
        while let Some(data) = waiting.remove(&next) {
            hasher.update(&data);
            if let Some(f) = in_order.as_mut() {
                f(next, &data);
            }
            // The buffer goes back to the pool as soon as both the hash and
            // the upload are done with it.
            drop(data);
            next += 1;
            advanced = true;
        }
        if advanced {
            let cp = HashCheckpoint {
                chunks: next,
                state: hasher.save(),
            };
            *latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(cp);
        }
    }
    hasher
}

#[cfg(test)]
mod tests {

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::job::NewJob;

    use crate::store::Store;
    use crate::upload::ChunkPlan;

    /// A job of `size` bytes in chunks of 1000, as the store makes it.
    async fn job(size: u64) -> (tempfile::TempDir, Job) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_path_buf()).await.unwrap();
        let new = NewJob {
            chunk_size: 1000,
            ..NewJob::for_test("/drop/m.tar", size)
        };
        let id = store.admit(&new).await.unwrap();
        (dir, store.job(id).await.unwrap())
    }

    fn hashed(data: &[u8]) -> ResumableSha256 {
        let mut h = ResumableSha256::new();
        h.update(data);
        h
    }

    /// Bytes the pipeline hashes when it resumes the hash at chunk `from`.
    fn bytes_hashed(plan: ChunkPlan, from: u64) -> u64 {
        (from..plan.chunks()).map(|i| plan.range(i).1 as u64).sum()
    }

    #[tokio::test]
    async fn a_file_dedupe_hashed_is_not_hashed_again() {
        let data: Vec<u8> = (0..10_500u32).map(|i| (i * 13) as u8).collect();
        let (_dir, mut job) = job(data.len() as u64).await;
        let plan = ChunkPlan::new(job.size(), job.chunk_size);
        let total = plan.chunks();
        let whole = HashCheckpoint {
            chunks: total,
            state: hashed(&data).save(),
        };

        // Nothing saved, nothing from dedupe: every byte is hashed.
        let (_, from) = resume_hash(&job, None, total);
        assert_eq!(bytes_hashed(plan, from), data.len() as u64);

        // Dedupe's pass: no byte is hashed again, and the hash is the file's.
        let (h, from) = resume_hash(&job, Some(whole.clone()), total);
        assert_eq!((from, bytes_hashed(plan, from)), (total, 0));
        assert_eq!(h.finalize_hex(), hex::encode(Sha256::digest(&data)));

        // The furthest sound checkpoint wins, whichever holds it.
        job.hash_checkpoint = Some(HashCheckpoint {
            chunks: 2,
            state: hashed(&data[..2000]).save(),
        });
        assert_eq!(resume_hash(&job, Some(whole.clone()), total).1, total);
        assert_eq!(resume_hash(&job, None, total).1, 2);
        // One that does not cover what it says is ignored.
        let short = HashCheckpoint {
            chunks: total,
            state: hashed(&data[..3000]).save(),
        };
        assert_eq!(resume_hash(&job, Some(short), total).1, 2);
    }

    #[test]
    fn the_thread_hashes_chunks_given_out_of_order_in_file_order() {
        let d = data(10 * 1000 + 7);
        let want = hex::encode(Sha256::digest(&d));
        let chunks: Vec<Bytes> = d.chunks(1000).map(Bytes::copy_from_slice).collect();
        // Chunks 0 and 1 hashed before; the rest arrive shuffled.
        let mut first = ResumableSha256::new();
        first.update(&d[..2000]);
        let h = FileHasher::start(first, 2, None).unwrap();
        let mut order: Vec<u64> = (2..chunks.len() as u64).collect();
        order.reverse();
        order.swap(0, 3);
        for i in order {
            h.feed(i, chunks[i as usize].clone());
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while h.checkpoint().map(|c| c.chunks) != Some(chunks.len() as u64) {
            assert!(std::time::Instant::now() < deadline, "no final checkpoint");
            std::thread::yield_now();
        }
        let cp = h.checkpoint().unwrap();
        assert_eq!(
            ResumableSha256::restore(&cp.state).unwrap().len(),
            d.len() as u64
        );
        assert_eq!(h.finish().unwrap().finalize_hex(), want);
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn equals_sha2_for_any_length_and_split() {
        for n in [
            0usize,
            1,
            55,
            56,
            63,
            64,
            65,
            119,
            128,
            1000,
            65 * 1024 + 3,
            200_000,
        ] {
            let d = data(n);
            let want = hex::encode(Sha256::digest(&d));
            for split in [0, 1, n / 3, n.saturating_sub(1), n] {
                let split = split.min(n);
                let mut h = ResumableSha256::new();
                h.update(&d[..split]);
                h.update(&d[split..]);
                assert_eq!(h.len(), n as u64);
                assert_eq!(h.finalize_hex(), want, "n={n} split={split}");
            }
        }
    }

    #[test]
    fn save_and_restore_continue_the_same_hash() {
        let d = data(100_003);
        let want = hex::encode(Sha256::digest(&d));
        for split in [0usize, 64, 1000, 4097, 100_000] {
            let mut h = ResumableSha256::new();
            h.update(&d[..split]);
            let mut r = ResumableSha256::restore(&h.save()).unwrap();
            r.update(&d[split..]);
            assert_eq!(r.finalize_hex(), want, "split={split}");
        }
        assert!(ResumableSha256::restore(b"short").is_none());
    }
}
