//! Noticing `modelferry cancel` while a job is driven.
//!
//! `cancel` runs in another process and only writes the job's state. The
//! process driving the job polls that state every [`POLL`] while it runs
//! ([`watch_for_cancel`]); once it reads `cancelled`, the returned token
//! fires and the engine drops the job's work, requests in flight included,
//! so nothing more is sent for it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::job::{JobId, JobState};
use crate::store::{Store, StoreError};

/// How often a driven job's state is read: well within the 2 s in which a
/// cancel must be noticed, and one cheap read per running job.
pub const POLL: Duration = Duration::from_millis(500);

/// A token that fires once job `id` is `cancelled` in the store. The
/// watcher stops when the returned guard is dropped.
pub fn watch_for_cancel(store: Store, id: JobId) -> (CancellationToken, CancelWatch) {
    let fired = CancellationToken::new();
    let stop = CancellationToken::new();
    let (f, s) = (fired.clone(), stop.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = s.cancelled() => return,
                _ = tick.tick() => {}
            }
            match store.job_state(id).await {
                Ok(JobState::Cancelled) => {
                    info!(job_id = id, "the job was cancelled; stopping its requests");
                    f.cancel();
                    return;
                }
                Ok(_) => {}
                // A passing read error: the next tick reads again.
                Err(StoreError::NotFound(_)) => return,
                Err(e) => debug!(job_id = id, error = %e, "cannot read the job's state"),
            }
        }
    });
    (fired, CancelWatch(stop))
}

/// Stops the watcher of [`watch_for_cancel`] when dropped.
pub struct CancelWatch(CancellationToken);

impl Drop for CancelWatch {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::job::NewJob;
    use crate::source::FileIdentity;

    #[tokio::test]
    async fn fires_within_two_seconds_of_a_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_path_buf()).await.unwrap();
        let id = store
            .admit(&NewJob {
                path: PathBuf::from("/drop/m.tar"),
                identity: FileIdentity {
                    dev: 1,
                    ino: 2,
                    size: 10,
                    mtime_ns: 3,
                },
                file_context: "model".into(),
                is_adapter: false,
                chunk_size: 1024,
                watch_dir: None,
            })
            .await
            .unwrap();
        let (fired, _guard) = watch_for_cancel(store.clone(), id);
        tokio::time::sleep(POLL * 2).await;
        assert!(!fired.is_cancelled());
        store.cancel(id, "test").await.unwrap();
        tokio::time::timeout(Duration::from_secs(2), fired.cancelled())
            .await
            .expect("noticed within 2 s");
    }
}
