use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use super::*;

fn new_job(store: &mut Store, size: u64) -> JobId {
    store
        .insert_job(&NewJob {
            path: PathBuf::from("/drop/m.tar"),
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
        })
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
        sha256: format!("{i:064x}"),
    }
}

#[test]
fn creates_private_folder_and_file_and_migrates_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    drop(Store::open(&dir).unwrap());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("modelferry.db")), 0o600);
    // Opening again runs no migration twice and keeps data.
    let mut s = Store::open(&dir).unwrap();
    let id = new_job(&mut s, 10);
    drop(s);
    let s = Store::open(&dir).unwrap();
    assert_eq!(s.job(id).unwrap().state, JobState::Queued);
    let v: i64 = s
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, migrations::MIGRATIONS.len() as i64);
}

#[test]
fn refuses_a_newer_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(tmp.path()).unwrap();
    s.conn.pragma_update(None, "user_version", 999).unwrap();
    drop(s);
    let e = Store::open(tmp.path()).err().unwrap().to_string();
    assert!(e.contains("newer") && e.contains("modelferry.db"), "{e}");
}

#[test]
fn a_job_walks_the_whole_way() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Store::open(tmp.path()).unwrap();
    let id = new_job(&mut s, 2500);
    let j = s.job(id).unwrap();
    assert_eq!(j.chunks_total, 3);
    s.start_session(id, &session("s1"), "cm-1").unwrap();
    s.ack_chunk(id, "s1", &ack(0), None).unwrap();
    s.ack_chunk(id, "s1", &ack(2), None).unwrap();
    let j = s.job(id).unwrap();
    assert_eq!(
        (j.state, j.chunks_done, j.bytes_done),
        (JobState::Uploading, 2, 2048)
    );
    // A new session drops the old session's acknowledgements.
    s.start_session(id, &session("s2"), "cm-2").unwrap();
    assert!(s.acked_chunks(id).unwrap().is_empty());
    assert_eq!(s.job(id).unwrap().sessions_started, 2);
    // An acknowledgement for the old session is refused.
    assert!(matches!(
        s.ack_chunk(id, "s1", &ack(1), None),
        Err(StoreError::StaleSession { .. })
    ));
    for i in 0..3 {
        s.ack_chunk(id, "s2", &ack(i), None).unwrap();
    }
    s.begin_complete(id, "abc").unwrap();
    s.set_importing(id, "ds-1", Some("cm-2")).unwrap();
    s.succeed(id, None).unwrap();
    let j = s.job(id).unwrap();
    assert_eq!(j.state, JobState::Succeeded);
    assert_eq!(j.dock_status_id.as_deref(), Some("ds-1"));
    assert_eq!(j.model_id.as_deref(), Some("cm-2"));
    assert_eq!(j.sha256.as_deref(), Some("abc"));
    assert!(j.finished_at.is_some());
}

#[test]
fn wrong_transitions_are_errors_not_no_ops() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Store::open(tmp.path()).unwrap();
    let id = new_job(&mut s, 10);
    assert!(matches!(
        s.begin_complete(id, "x"),
        Err(StoreError::InvalidTransition {
            from: JobState::Queued,
            to: JobState::Completing,
            ..
        })
    ));
    s.fail(
        id,
        &Failure {
            error: "boom".into(),
            stage: "read".into(),
            ..Failure::default()
        },
    )
    .unwrap();
    assert!(matches!(
        s.start_session(id, &session("s"), "m"),
        Err(StoreError::InvalidTransition {
            from: JobState::Failed,
            ..
        })
    ));
    assert!(matches!(
        s.succeed(999, None),
        Err(StoreError::NotFound(999))
    ));
}

#[test]
fn hash_checkpoint_only_moves_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Store::open(tmp.path()).unwrap();
    let id = new_job(&mut s, 4096);
    s.start_session(id, &session("s"), "m").unwrap();
    let cp = |n: u64| HashCheckpoint {
        chunks: n,
        state: vec![n as u8; 40],
    };
    s.ack_chunk(id, "s", &ack(2), Some(&cp(3))).unwrap();
    s.ack_chunk(id, "s", &ack(0), Some(&cp(1))).unwrap();
    s.ack_chunk(id, "s", &ack(1), None).unwrap();
    assert_eq!(s.job(id).unwrap().hash_checkpoint, Some(cp(3)));
    assert_eq!(s.acked_chunks(id).unwrap().len(), 3);
    assert!(matches!(
        s.ack_chunk(999, "s", &ack(0), None),
        Err(StoreError::NotFound(999))
    ));
}

#[test]
fn finds_the_newest_job_by_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Store::open(tmp.path()).unwrap();
    let a = new_job(&mut s, 10);
    let b = new_job(&mut s, 10);
    let ident = s.job(a).unwrap().identity;
    assert_eq!(
        s.find_by_identity(&ident, "model", false)
            .unwrap()
            .unwrap()
            .id,
        b
    );
    assert!(s.find_by_identity(&ident, "model", true).unwrap().is_none());
    let other = FileIdentity { size: 11, ..ident };
    assert!(s
        .find_by_identity(&other, "model", false)
        .unwrap()
        .is_none());
    assert_eq!(s.unfinished().unwrap().len(), 2);
}

#[test]
fn a_job_is_held_by_one_holder_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Store::open(tmp.path()).unwrap();
    let id = new_job(&mut s, 10);
    let mut held = s.lock_job(id).unwrap();
    assert!(matches!(s.lock_job(id), Err(StoreError::Busy(j)) if j == id));
    let other = new_job(&mut s, 10);
    drop(s.lock_job(other).unwrap());
    held.finished();
    drop(held);
    assert!(!tmp
        .path()
        .join("locks")
        .join(format!("job-{id}.lock"))
        .exists());
    drop(s.lock_job(id).unwrap());
}

#[test]
fn root_opening_a_service_database_leaves_its_files_to_the_service_user() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    drop(Store::open(tmp.path()).unwrap());
    let db = tmp.path().join("modelferry.db");
    if std::os::unix::fs::chown(&db, Some(65534), Some(65534)).is_err() {
        eprintln!("not root: cannot give the database to another user; skipping");
        return;
    }
    let s = Store::open(tmp.path()).unwrap();
    for side in ["modelferry.db-wal", "modelferry.db-shm"] {
        let m = std::fs::metadata(tmp.path().join(side)).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534), "{side}");
    }
    drop(s);
}

#[test]
fn refuses_a_path_that_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(dir.path()).unwrap();
    let bad = PathBuf::from(std::ffi::OsStr::from_bytes(b"/drop/bad\xff.tar"));
    let err = s
        .insert_job(&NewJob {
            path: bad,
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
        .unwrap_err();
    assert!(matches!(err, StoreError::NotUtf8(_)), "{err}");
    assert_eq!(
        err.to_string(),
        r"/drop/bad\xff.tar: the path is not valid UTF-8"
    );
    assert!(s.jobs().unwrap().is_empty());
}
