//! [`StreamVerifier`]: the check of a gzip archive's whole stream while the
//! upload reads it.
//!
//! The upload pipeline's hasher thread sees the chunks in file order and
//! offers each one's bytes through [`StreamVerifier::offers`], never
//! waiting: inflating runs on a blocking task of its own behind a queue of
//! [`QUEUED`] chunks, and a chunk offered while the queue is full is
//! dropped, so a slow inflate never holds the upload back. Chunks the
//! verifier did not get (dropped, or acknowledged before a restart and not
//! read) leave a gap, which it fills by reading that part of the local file
//! itself: catching up costs a local read, never the network. It keeps at
//! most [`StreamVerifier::HOLDS`] offered buffers at once, which the
//! pipeline's buffer pool makes room for. [`StreamVerifier::finish`] reads
//! whatever is left and gives the verdict; the pipeline calls it before the
//! job may `complete`.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::gzip::GzipStream;
use super::{feed_range, Format, PreflightError, Summary};
use crate::source::SourceFile;

/// Chunks queued for the verifier at most.
const QUEUED: usize = 2;

enum Msg {
    Data(u64, Bytes),
    /// Every chunk was offered: catch up to the end and judge.
    End,
}

/// See [`StreamVerifier::offers`].
#[derive(Clone)]
pub struct Offers(mpsc::Sender<Msg>);

impl Offers {
    /// The bytes of the file at `offset`; offsets must not decrease.
    pub fn offer(&self, offset: u64, data: Bytes) {
        let _ = self.0.try_send(Msg::Data(offset, data));
    }
}

/// Verifies a gzip archive's stream as its chunks are read for upload.
pub struct StreamVerifier {
    tx: mpsc::Sender<Msg>,
    task: JoinHandle<Result<Option<Summary>, PreflightError>>,
}

impl StreamVerifier {
    /// Offered buffers the verifier keeps at most at once: those queued,
    /// and the one being inflated.
    pub const HOLDS: usize = QUEUED + 1;

    /// A verifier for `src` (named `name`, `size` bytes) if it is a gzip
    /// archive; `None` for a tar, whose check needs no stream.
    pub async fn start(
        src: Arc<SourceFile>,
        name: &str,
        size: u64,
    ) -> Result<Option<StreamVerifier>, PreflightError> {
        let (s, n) = (src.clone(), name.to_string());
        let format = tokio::task::spawn_blocking(move || Format::detect(&s, &n, size))
            .await
            .map_err(|_| PreflightError::Stopped)??;
        if format != Format::Gzip {
            return Ok(None);
        }
        let (tx, rx) = mpsc::channel(QUEUED);
        let task = tokio::task::spawn_blocking(move || verify(&src, size, rx));
        Ok(Some(StreamVerifier { tx, task }))
    }

    /// A handle that offers chunks without waiting, for a thread that sees
    /// them in file order (the pipeline's hasher). A chunk offered while the
    /// verifier is busy is dropped: the verifier reads what it missed from
    /// the file, so the upload never waits for the inflate.
    pub fn offers(&self) -> Offers {
        Offers(self.tx.clone())
    }

    /// Whether the verifier has stopped on its own: it found a problem,
    /// which [`StreamVerifier::finish`] gives.
    pub fn stopped(&self) -> bool {
        self.task.is_finished()
    }

    /// Checks the rest of the file (what it did not get) and gives the
    /// verdict.
    pub async fn finish(mut self) -> Result<Summary, PreflightError> {
        let _ = self.tx.send(Msg::End).await;
        self.verdict().await
    }

    async fn verdict(&mut self) -> Result<Summary, PreflightError> {
        match (&mut self.task).await {
            Ok(Ok(Some(summary))) => Ok(summary),
            Ok(Ok(None)) => Err(PreflightError::Stopped),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PreflightError::Stopped),
        }
    }
}

/// The verifier's task: inflate what arrives, fill gaps from the file.
/// `None` when the pipeline went away without [`Msg::End`] (stopped).
fn verify(
    src: &SourceFile,
    size: u64,
    mut rx: mpsc::Receiver<Msg>,
) -> Result<Option<Summary>, PreflightError> {
    let mut gz = GzipStream::default();
    let never = || false;
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(offset, data) => {
                let at = gz.position();
                if offset > at {
                    feed_range(src, &mut gz, at, offset, &never)?;
                }
                // A chunk offered twice (it cannot happen today) is skipped.
                let skip = (gz.position() - offset).min(data.len() as u64) as usize;
                gz.push(&data[skip..])?;
            }
            Msg::End => {
                let at = gz.position();
                feed_range(src, &mut gz, at, size, &never)?;
                return Ok(Some(gz.finish()?));
            }
        }
    }
    Ok(None)
}
