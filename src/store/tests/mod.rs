//! Tests of the store through its one interface, [`Store`], and of the SQL
//! it is built from.

mod dedupe;
mod filing;
mod hold;
mod jobs;
mod manage;
mod pg;
mod rows;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::*;
use crate::job::{
    ChunkAck, ChunkChecksum, Failure, HashCheckpoint, JobId, JobState, NewJob, SessionRecord, Stage,
};
use crate::source::FileIdentity;

async fn open(dir: &Path) -> Store {
    Store::open(dir.to_path_buf()).await.unwrap()
}

fn new_job_at(path: &str, size: u64, watch_dir: Option<&Path>) -> NewJob {
    NewJob {
        watch_dir: watch_dir.map(Path::to_path_buf),
        ..NewJob::for_test(path, size)
    }
}

async fn new_job(store: &Store, size: u64) -> JobId {
    store
        .admit(&new_job_at("/drop/m.tar", size, None))
        .await
        .unwrap()
}

fn session(id: &str) -> SessionRecord {
    SessionRecord {
        session_id: id.into(),
        started_at: SystemTime::now(),
        expires_at: Some(SystemTime::now() + Duration::from_secs(600)),
    }
}

fn ack(i: u64) -> ChunkAck {
    ChunkAck {
        index: i,
        size: 1024,
        checksum: ChunkChecksum::Xxh3(i),
    }
}

/// Takes job `id` to `state` the way the engine would, then releases it.
async fn drive_to(store: &Store, id: JobId, state: JobState) {
    let hold = store.hold(id).await.unwrap();
    let path: &[JobState] = match state {
        JobState::Queued => &[],
        JobState::Uploading => &[JobState::Uploading],
        JobState::Completing => &[JobState::Uploading, JobState::Completing],
        JobState::Importing => &[
            JobState::Uploading,
            JobState::Completing,
            JobState::Importing,
        ],
        JobState::Succeeded => &[
            JobState::Uploading,
            JobState::Completing,
            JobState::Importing,
            JobState::Succeeded,
        ],
        JobState::Failed => &[JobState::Failed],
        JobState::Cancelled => &[JobState::Cancelled],
    };
    for step in path {
        match step {
            JobState::Uploading => store
                .start_session(id, &hold, &session("s"), "cm")
                .await
                .unwrap(),
            JobState::Completing => store.begin_complete(id, &hold, "abc").await.unwrap(),
            JobState::Importing => store.set_importing(id, &hold, "ds", None).await.unwrap(),
            JobState::Succeeded => store.succeed(id, &hold, None).await.unwrap(),
            JobState::Failed => store
                .fail(id, &hold, &Failure::new(Stage::Read, "boom"))
                .await
                .unwrap(),
            JobState::Cancelled => store.cancel(id, "cancelled").await.unwrap(),
            JobState::Queued => unreachable!("no step leads back to queued"),
        }
    }
    store.release(hold).await;
    assert_eq!(store.job(id).await.unwrap().state, state);
}
