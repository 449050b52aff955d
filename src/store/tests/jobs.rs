use std::os::unix::fs::PermissionsExt;

use super::*;

#[tokio::test]
async fn creates_private_folder_and_file_and_migrates_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    drop(open(&dir).await);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("modelferry.db")), 0o600);
    // Opening again runs no migration twice and keeps data.
    let s = open(&dir).await;
    let id = new_job(&s, 10).await;
    drop(s);
    let s = open(&dir).await;
    assert_eq!(s.job(id).await.unwrap().state, JobState::Queued);
    let v: i64 = s
        .with_sqlite(|db| Ok(db.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(v, migrations::MIGRATIONS.len() as i64);
}

#[tokio::test]
async fn refuses_a_newer_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    s.with_sqlite(|db| Ok(db.conn.pragma_update(None, "user_version", 999)?))
        .await
        .unwrap();
    drop(s);
    let err = Store::open(tmp.path().to_path_buf()).await.err().unwrap();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
        "as in fleet mode: {err}"
    );
    let e = err.to_string();
    assert!(e.contains("newer") && e.contains("modelferry.db"), "{e}");
    // Read as it is: the same refusal.
    let err = Store::open_read_only(tmp.path().to_path_buf())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_job_walks_the_whole_way() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let id = new_job(&s, 2500).await;
    let h = s.hold(id).await.unwrap();
    let j = s.job(id).await.unwrap();
    assert_eq!(j.chunks_total, 3);
    s.start_session(id, &h, &session("s1"), "cm-1")
        .await
        .unwrap();
    s.ack_chunk(id, &h, "s1", &ack(0), None).await.unwrap();
    s.ack_chunk(id, &h, "s1", &ack(2), None).await.unwrap();
    let j = s.job(id).await.unwrap();
    assert_eq!(
        (j.state, j.chunks_done, j.bytes_done),
        (JobState::Uploading, 2, 2048)
    );
    // A new session drops the old session's acknowledgements.
    s.start_session(id, &h, &session("s2"), "cm-2")
        .await
        .unwrap();
    assert!(s.acked_chunks(id).await.unwrap().is_empty());
    assert_eq!(s.job(id).await.unwrap().sessions_started, 2);
    // An acknowledgement for the old session is refused.
    assert!(matches!(
        s.ack_chunk(id, &h, "s1", &ack(1), None).await,
        Err(StoreError::StaleSession { .. })
    ));
    for i in 0..3 {
        s.ack_chunk(id, &h, "s2", &ack(i), None).await.unwrap();
    }
    s.begin_complete(id, &h, "abc").await.unwrap();
    s.set_importing(id, &h, "ds-1", Some("cm-2")).await.unwrap();
    s.succeed(id, &h, None).await.unwrap();
    let j = s.job(id).await.unwrap();
    assert_eq!(j.state, JobState::Succeeded);
    assert_eq!(j.dock_status_id.as_deref(), Some("ds-1"));
    assert_eq!(j.model_id.as_deref(), Some("cm-2"));
    assert_eq!(j.sha256.as_deref(), Some("abc"));
    assert!(j.finished_at.is_some());
}

#[tokio::test]
async fn wrong_transitions_are_errors_not_no_ops() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let id = new_job(&s, 10).await;
    let h = s.hold(id).await.unwrap();
    assert!(matches!(
        s.begin_complete(id, &h, "x").await,
        Err(StoreError::InvalidTransition {
            from: JobState::Queued,
            to: JobState::Completing,
            ..
        })
    ));
    s.fail(id, &h, &Failure::new(Stage::Read, "boom"))
        .await
        .unwrap();
    let j = s.job(id).await.unwrap();
    assert_eq!(
        (j.error.as_deref(), j.error_stage),
        (Some("boom"), Some(Stage::Read))
    );
    assert!(matches!(
        s.start_session(id, &h, &session("s"), "m").await,
        Err(StoreError::InvalidTransition {
            from: JobState::Failed,
            ..
        })
    ));
    let other = s.hold(999).await.unwrap();
    assert!(matches!(
        s.succeed(999, &other, None).await,
        Err(StoreError::NotFound(999))
    ));
}

#[tokio::test]
async fn a_note_after_a_cancel_is_refused_and_the_reason_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let id = new_job(&s, 10).await;
    let h = s.hold(id).await.unwrap();
    s.start_session(id, &h, &session("s"), "m").await.unwrap();
    s.note_error(id, &h, "timed out", None).await.unwrap();
    s.cancel(id, "cancelled by the operator").await.unwrap();
    // The engine's retry note lands after the cancel.
    let late = SystemTime::now() + Duration::from_secs(5);
    assert!(matches!(
        s.note_error(id, &h, "timed out again", Some(late)).await,
        Err(StoreError::NotActive {
            state: JobState::Cancelled,
            ..
        })
    ));
    let j = s.job(id).await.unwrap();
    assert_eq!(j.error.as_deref(), Some("cancelled by the operator"));
    assert_eq!((j.attempts, j.next_retry_at), (1, None));
    let other = s.hold(999).await.unwrap();
    assert!(matches!(
        s.note_error(999, &other, "x", None).await,
        Err(StoreError::NotFound(999))
    ));
}

#[tokio::test]
async fn every_transition_the_rules_allow_is_taken_and_no_other() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    for from in JobState::ALL {
        for to in JobState::ALL {
            let id = new_job(&s, 10).await;
            drive_to(&s, id, from).await;
            let h = s.hold(id).await.unwrap();
            let r = match to {
                JobState::Queued => continue, // no operation leads to queued
                JobState::Uploading => s.start_session(id, &h, &session("n"), "m").await,
                JobState::Completing => s.begin_complete(id, &h, "x").await,
                JobState::Importing => s.set_importing(id, &h, "d", None).await,
                JobState::Succeeded => s.succeed(id, &h, None).await,
                JobState::Failed => s.fail(id, &h, &Failure::new(Stage::Upload, "x")).await,
                JobState::Cancelled => s.cancel(id, "x").await,
            };
            let now = s.job(id).await.unwrap().state;
            if from.can_become(to) {
                assert!(r.is_ok(), "{from} -> {to}: {r:?}");
                assert_eq!(now, to, "{from} -> {to}");
            } else {
                assert!(
                    matches!(r, Err(StoreError::InvalidTransition { from: f, to: t, .. }) if f == from && t == to),
                    "{from} -> {to}: {r:?}"
                );
                assert_eq!(now, from, "{from} -> {to} changed the job");
            }
        }
    }
}

#[tokio::test]
async fn hash_checkpoint_only_moves_forward() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let id = new_job(&s, 4096).await;
    let h = s.hold(id).await.unwrap();
    s.start_session(id, &h, &session("s"), "m").await.unwrap();
    let cp = |n: u64| HashCheckpoint {
        chunks: n,
        state: vec![n as u8; 40],
    };
    s.ack_chunk(id, &h, "s", &ack(2), Some(&cp(3)))
        .await
        .unwrap();
    s.ack_chunk(id, &h, "s", &ack(0), Some(&cp(1)))
        .await
        .unwrap();
    s.ack_chunk(id, &h, "s", &ack(1), None).await.unwrap();
    assert_eq!(s.job(id).await.unwrap().hash_checkpoint, Some(cp(3)));
    assert_eq!(s.acked_chunks(id).await.unwrap().len(), 3);
    let gone = s.hold(999).await.unwrap();
    assert!(matches!(
        s.ack_chunk(999, &gone, "s", &ack(0), None).await,
        Err(StoreError::NotFound(999))
    ));
}

#[tokio::test]
async fn finds_the_newest_job_by_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let a = new_job(&s, 10).await;
    let b = new_job(&s, 10).await;
    let ident = s.job(a).await.unwrap().identity;
    assert_eq!(
        s.find_by_identity(Path::new("/drop/m.tar"), &ident, "model", false)
            .await
            .unwrap()
            .unwrap()
            .id,
        b
    );
    assert!(s
        .find_by_identity(Path::new("/drop/m.tar"), &ident, "model", true)
        .await
        .unwrap()
        .is_none());
    let other = FileIdentity { size: 11, ..ident };
    assert!(s
        .find_by_identity(Path::new("/drop/m.tar"), &other, "model", false)
        .await
        .unwrap()
        .is_none());
    assert_eq!(s.takeable().await.unwrap().len(), 2);
}

#[tokio::test]
async fn unfinished_is_every_active_state_as_the_job_module_lists_them() {
    // The IN-list is built from the job module, not written into SQL.
    let guard = crate::store::rows::state_in(&JobState::ACTIVE);
    for st in JobState::ALL {
        assert_eq!(
            guard.contains(&format!("'{st}'")),
            !st.is_terminal(),
            "{st} in {guard}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let mut want = Vec::new();
    for st in JobState::ALL {
        let id = s
            .admit(&new_job_at("/drop/same.tar", 10, None))
            .await
            .unwrap();
        drive_to(&s, id, st).await;
        if JobState::ACTIVE.contains(&st) {
            want.push((id, st));
        }
    }
    // SQLite: every unfinished job is takeable (the lock tells the rest).
    let got: Vec<_> = s
        .takeable()
        .await
        .unwrap()
        .iter()
        .map(|j| (j.id, j.state))
        .collect();
    assert_eq!(got, want);
    let by_path: Vec<_> = s
        .unfinished_for_path(Path::new("/drop/same.tar"))
        .await
        .unwrap()
        .iter()
        .map(|j| (j.id, j.state))
        .collect();
    assert_eq!(by_path, want);
}

#[tokio::test]
async fn root_opening_a_service_database_leaves_its_files_to_the_service_user() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    drop(open(tmp.path()).await);
    let db = tmp.path().join("modelferry.db");
    if std::os::unix::fs::chown(&db, Some(65534), Some(65534)).is_err() {
        #[allow(clippy::print_stderr)] // says why the test was skipped
        {
            eprintln!("not root: cannot give the database to another user; skipping");
        }
        return;
    }
    let s = open(tmp.path()).await;
    for side in ["modelferry.db-wal", "modelferry.db-shm"] {
        let m = std::fs::metadata(tmp.path().join(side)).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534), "{side}");
    }
    drop(s);
}

#[tokio::test]
async fn refuses_a_path_that_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let bad = PathBuf::from(std::ffi::OsStr::from_bytes(b"/drop/bad\xff.tar"));
    let err = s
        .admit(&NewJob {
            path: bad,
            ..NewJob::for_test("/drop/unused.tar", 10)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotUtf8(_)), "{err}");
    assert_eq!(
        err.to_string(),
        r"/drop/bad\xff.tar: the path is not valid UTF-8"
    );
    assert!(s.list(&JobQuery::default()).await.unwrap().is_empty());
}
