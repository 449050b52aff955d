//! Dedupe lookups and settling a duplicate; the read-only open.

use super::*;

/// A succeeded job of `size` bytes whose sha256 is "abc" (see `drive_to`).
async fn imported(store: &Store, size: u64, ctx: &str, adapter: bool) -> JobId {
    let mut new = new_job_at("/drop/orig.tar", size, None);
    new.file_context = ctx.into();
    new.is_adapter = adapter;
    new.identity.ino = size + u64::from(adapter) * 1000 + ctx.len() as u64 * 7;
    let id = store.admit(&new).await.unwrap();
    drive_to(store, id, JobState::Succeeded).await;
    id
}

#[tokio::test]
async fn imported_files_are_found_by_size_then_sha256_and_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    assert!(!s.imported_size_exists(10, "model", false).await.unwrap());
    let orig = imported(&s, 10, "model", false).await;
    imported(&s, 10, "dataset", false).await;
    imported(&s, 10, "model", true).await;
    // Unfinished and failed jobs are not imports.
    let failed = new_job(&s, 20).await;
    drive_to(&s, failed, JobState::Failed).await;
    assert!(s.imported_size_exists(10, "model", false).await.unwrap());
    assert!(!s.imported_size_exists(11, "model", false).await.unwrap());
    assert!(!s.imported_size_exists(20, "model", false).await.unwrap());
    let found = s.find_imported(10, "abc", "model", false).await.unwrap();
    assert_eq!(found.map(|j| j.id), Some(orig));
    assert!(s
        .find_imported(10, "abd", "model", false)
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_duplicate_succeeds_from_queued_naming_the_original() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let orig_id = imported(&s, 10, "model", false).await;
    let orig = s.job(orig_id).await.unwrap();
    let mut again = new_job_at("/drop/copy.tar", 10, None);
    again.identity.ino = 99;
    let id = s.admit(&again).await.unwrap();
    let hold = s.hold(id).await.unwrap();
    s.succeed_duplicate(id, &hold, "abc", &orig).await.unwrap();
    let dup = s.job(id).await.unwrap();
    assert_eq!(dup.state, JobState::Succeeded);
    assert_eq!(dup.duplicate_of, Some(orig_id));
    assert_eq!(dup.model_id, orig.model_id);
    assert_eq!(dup.sha256.as_deref(), Some("abc"));
    assert!(dup.finished_at.is_some() && dup.session.is_none());
    // Only from queued: a second time is an invalid transition.
    let e = s
        .succeed_duplicate(id, &hold, "abc", &orig)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::InvalidTransition { .. }), "{e}");
    // A duplicate of the duplicate names the original; the original is
    // preferred when both match.
    let found = s.find_imported(10, "abc", "model", false).await.unwrap();
    assert_eq!(found.map(|j| j.id), Some(orig_id));
    let mut third = new_job_at("/drop/third.tar", 10, None);
    third.identity.ino = 100;
    let id3 = s.admit(&third).await.unwrap();
    let hold3 = s.hold(id3).await.unwrap();
    s.succeed_duplicate(id3, &hold3, "abc", &dup).await.unwrap();
    assert_eq!(s.job(id3).await.unwrap().duplicate_of, Some(orig_id));
}

#[tokio::test]
async fn the_read_only_open_creates_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    assert!(Store::open_read_only(dir.clone()).await.unwrap().is_none());
    assert!(!dir.exists(), "no folder made");
    let s = open(&dir).await;
    let id = imported(&s, 10, "model", false).await;
    drop(s);
    let ro = Store::open_read_only(dir.clone()).await.unwrap().unwrap();
    assert_eq!(ro.job(id).await.unwrap().state, JobState::Succeeded);
    assert!(ro.imported_size_exists(10, "model", false).await.unwrap());
    let e = ro
        .admit(&new_job_at("/drop/x.tar", 1, None))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("readonly") || e.to_string().contains("read"),
        "{e}"
    );
}
