use super::*;

#[tokio::test]
async fn a_job_is_held_by_one_holder_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let id = new_job(&s, 10).await;
    let held = s.hold(id).await.unwrap();
    assert_eq!(held.job(), id);
    assert!(matches!(s.hold(id).await, Err(StoreError::Busy(j)) if j == id));
    // A second handle on the same database is another holder too.
    let s2 = open(tmp.path()).await;
    assert!(matches!(s2.hold(id).await, Err(StoreError::Busy(j)) if j == id));
    let other = new_job(&s, 10).await;
    s.release(s.hold(other).await.unwrap()).await;
    // Clones are the same hold: the job stays held until the last goes.
    let clone = held.clone();
    held.finished();
    s.release(held).await;
    assert!(matches!(s.hold(id).await, Err(StoreError::Busy(_))));
    s.release(clone).await;
    assert!(!tmp
        .path()
        .join("locks")
        .join(format!("job-{id}.lock"))
        .exists());
    s.release(s.hold(id).await.unwrap()).await;
}

#[tokio::test]
async fn a_write_with_a_hold_for_another_job_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let a = new_job(&s, 4096).await;
    let b = new_job(&s, 4096).await;
    let hold_a = s.hold(a).await.unwrap();
    let hold_b = s.hold(b).await.unwrap();
    s.start_session(b, &hold_b, &session("sb"), "m")
        .await
        .unwrap();
    let before = s.job(b).await.unwrap();

    let refused = |r: Result<(), StoreError>| match r {
        Err(StoreError::NotHeld { job, held, .. }) => assert_eq!((job, held), (b, a)),
        other => panic!("a write for job {b} with the hold on {a}: {other:?}"),
    };
    refused(s.start_session(b, &hold_a, &session("x"), "m").await);
    refused(s.ack_chunk(b, &hold_a, "sb", &ack(0), None).await);
    refused(s.begin_complete(b, &hold_a, "x").await);
    refused(s.set_importing(b, &hold_a, "d", None).await);
    refused(s.succeed(b, &hold_a, None).await);
    refused(s.fail(b, &hold_a, &Failure::new(Stage::Upload, "x")).await);
    refused(s.note_error(b, &hold_a, "x", None).await);
    assert_eq!(
        s.job(b).await.unwrap(),
        before,
        "a refused write changed the job"
    );
    // The right hold still works.
    s.ack_chunk(b, &hold_b, "sb", &ack(0), None).await.unwrap();
}

#[tokio::test]
async fn a_hold_on_another_database_is_refused() {
    let (t1, t2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (s1, s2) = (open(t1.path()).await, open(t2.path()).await);
    let (id1, id2) = (new_job(&s1, 10).await, new_job(&s2, 10).await);
    assert_eq!(id1, id2, "the same id in two databases");
    let foreign = s2.hold(id2).await.unwrap();
    assert!(matches!(
        s1.fail(id1, &foreign, &Failure::new(Stage::Read, "x"))
            .await,
        Err(StoreError::NotHeld { .. })
    ));
    assert_eq!(s1.job(id1).await.unwrap().state, JobState::Queued);
}
