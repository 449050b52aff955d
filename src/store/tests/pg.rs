//! The PostgreSQL backend against a real, throwaway cluster: the lease SQL
//! (take, renew, fence, take over), admission by two instances at once,
//! migrations, and the password kept out of every message.

use std::sync::Arc;

use super::*;
use crate::job::FilingState;
use crate::secret::Secret;
use modelferry_pg_cluster::{Cluster, PASSWORD};

fn opts(url: &url::Url, instance: &str, lease: Duration) -> FleetOptions {
    FleetOptions {
        url: url.clone(),
        password: Some(Secret::new(PASSWORD)),
        instance: instance.into(),
        lease,
    }
}

async fn fleet(c: &Cluster, n: usize, lease: Duration) -> (url::Url, Vec<Store>) {
    let url = c.database();
    let mut stores = Vec::new();
    for i in 0..n {
        let name = format!("host-{}", (b'a' + i as u8) as char);
        stores.push(Store::connect(opts(&url, &name, lease)).await.unwrap());
    }
    (url, stores)
}

#[tokio::test]
async fn a_lease_fences_a_holder_whose_job_was_taken_over() {
    let Some(c) = Cluster::start("a_lease_fences_a_holder_whose_job_was_taken_over") else {
        return;
    };
    let lease = Duration::from_secs(1);
    let (_, s) = fleet(&c, 2, lease).await;
    let (a, b) = (&s[0], &s[1]);
    let id = a
        .admit(&new_job_at("/drop/m.tar", 4096, Some(Path::new("/drop"))))
        .await
        .unwrap();
    let held = a.hold(id).await.unwrap();
    assert!(held.is_live());
    assert!(matches!(b.hold(id).await, Err(StoreError::Busy(j)) if j == id));
    assert!(
        matches!(a.hold(id).await, Err(StoreError::Busy(_))),
        "one holder, even of one instance"
    );
    a.start_session(id, &held, &session("s1"), "m")
        .await
        .unwrap();
    a.ack_chunk(id, &held, "s1", &ack(0), None).await.unwrap();
    let job = b.job(id).await.unwrap();
    assert_eq!(job.instance.as_deref(), Some("host-a"));
    assert_eq!(job.identity.dev, 0, "fleet mode keeps no device number");

    // The holder stops renewing (its renewal is as good as a frozen
    // process's): the lease runs out and the other instance takes over.
    let stale = held.clone();
    let stopped = held.stopped(&tokio_util::sync::CancellationToken::new());
    held.stop_renewing();
    let taken = take_over(b, id).await;
    assert!(!stale.is_live(), "the old holder knows by its own clock");
    // The new holder resumes the same session with the chunk acknowledged.
    let job = b.job(id).await.unwrap();
    assert_eq!(job.instance.as_deref(), Some("host-b"));
    assert_eq!(job.session.unwrap().session_id, "s1");
    assert_eq!(b.acked_chunks(id).await.unwrap(), vec![ack(0)]);

    // Every write of the stale holder is refused and changes nothing.
    let before = b.job(id).await.unwrap();
    let lost = |r: Result<(), StoreError>| match r {
        Err(StoreError::LeaseLost { job, instance }) => {
            assert_eq!((job, instance.as_str()), (id, "host-a"))
        }
        other => panic!("a stale write was not refused: {other:?}"),
    };
    lost(a.ack_chunk(id, &stale, "s1", &ack(1), None).await);
    lost(a.begin_complete(id, &stale, "x").await);
    lost(a.start_session(id, &stale, &session("s2"), "m").await);
    lost(a.fail(id, &stale, &Failure::new(Stage::Upload, "x")).await);
    lost(a.note_error(id, &stale, "x", None).await);
    lost(a.succeed_duplicate(id, &stale, "x", &before).await);
    let mut after = b.job(id).await.unwrap();
    after.updated_at = before.updated_at;
    assert_eq!(after, before, "a refused write changed the job");
    b.ack_chunk(id, &taken, "s1", &ack(1), None).await.unwrap();
    b.begin_complete(id, &taken, "abc").await.unwrap();
    drop(stopped);
    b.release(taken).await;
    // Released: taken at once by anyone.
    a.release(a.hold(id).await.unwrap()).await;
}

#[tokio::test]
async fn a_stale_hold_of_the_same_instance_is_fenced_by_its_token() {
    let Some(c) = Cluster::start("a_stale_hold_of_the_same_instance") else {
        return;
    };
    let (_, s) = fleet(&c, 1, Duration::from_secs(1)).await;
    let s = &s[0];
    let id = s.admit(&new_job_at("/u/a.tar", 4096, None)).await.unwrap();
    let stale = s.hold(id).await.unwrap();
    stale.stop_renewing();
    // The same instance takes the job again once the lease ran out (a
    // restarted task): the old hold's token is no longer the job's.
    let taken = take_over(s, id).await;
    let original = s.job(id).await.unwrap();
    assert!(matches!(
        s.succeed_duplicate(id, &stale, "abc", &original).await,
        Err(StoreError::LeaseLost { job, .. }) if job == id
    ));
    assert_eq!(s.job(id).await.unwrap().state, JobState::Queued);
    s.release(taken).await;
    s.release(stale).await;
}

#[tokio::test]
async fn renewal_keeps_a_lease_and_sees_a_job_finished_elsewhere() {
    let Some(c) = Cluster::start("renewal_keeps_a_lease_and_sees_a_job_finished_elsewhere") else {
        return;
    };
    let lease = Duration::from_secs(1);
    let (url, s) = fleet(&c, 2, lease).await;
    let id = s[0]
        .admit(&new_job_at("/drop/m.tar", 4096, None))
        .await
        .unwrap();
    let held = s[0].hold(id).await.unwrap();
    let stopped = held.stopped(&tokio_util::sync::CancellationToken::new());
    // Three leases long: renewals keep it.
    tokio::time::sleep(lease * 3).await;
    assert!(held.is_live() && !stopped.is_cancelled());
    assert!(matches!(s[1].hold(id).await, Err(StoreError::Busy(_))));
    // Finished behind the holder's back (as `cancel` would): it stops
    // within 2 s.
    c.sql_in(
        &url,
        &format!("UPDATE jobs SET state = 'failed' WHERE id = {id}"),
    );
    tokio::time::timeout(Duration::from_secs(3), stopped.cancelled())
        .await
        .expect("the holder saw the job finished elsewhere within 2 s");
    s[0].release(held).await;
}

/// `b` takes job `id` once `a`'s lease on it ran out.
async fn take_over(b: &Store, id: JobId) -> Hold {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match b.hold(id).await {
            Ok(h) => return h,
            Err(StoreError::Busy(_)) => {
                assert!(std::time::Instant::now() < deadline, "never taken over");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn a_hold_on_a_finished_job_keeps_its_lease() {
    let Some(c) = Cluster::start("a_hold_on_a_finished_job_keeps_its_lease") else {
        return;
    };
    let lease = Duration::from_secs(1);
    let (_, s) = fleet(&c, 2, lease).await;
    let id = s[0]
        .admit(&new_job_at("/drop/m.tar", 4096, Some(Path::new("/drop"))))
        .await
        .unwrap();
    drive_to(&s[0], id, JobState::Failed).await;
    // The filer's hold: a long filing outlasts many renewals.
    let held = s[0].hold(id).await.unwrap();
    let stopped = held.stopped(&tokio_util::sync::CancellationToken::new());
    tokio::time::sleep(lease * 2).await;
    assert!(held.is_live() && !stopped.is_cancelled());
    assert!(matches!(s[1].hold(id).await, Err(StoreError::Busy(_))));
    s[0].plan_filing(id, Some(&held), None).await.unwrap();
    s[0].finish_filing(id, Some(&held), FilingState::Skipped)
        .await
        .unwrap();
    s[0].release(held).await;
}

#[tokio::test]
async fn a_stale_filer_is_refused_after_a_takeover() {
    let Some(c) = Cluster::start("a_stale_filer_is_refused_after_a_takeover") else {
        return;
    };
    let lease = Duration::from_secs(1);
    let (_, s) = fleet(&c, 2, lease).await;
    let (a, b) = (&s[0], &s[1]);
    let id = a
        .admit(&new_job_at("/drop/m.tar", 4096, Some(Path::new("/drop"))))
        .await
        .unwrap();
    drive_to(a, id, JobState::Failed).await;
    let stale = a.hold(id).await.unwrap();
    a.plan_filing(id, Some(&stale), Some(Path::new("/failed/m.tar")))
        .await
        .unwrap();
    // The filer freezes mid-filing; its lease runs out and `b` takes over.
    stale.stop_renewing();
    let taken = take_over(b, id).await;
    assert!(!stale.is_live());
    let before = b.job(id).await.unwrap();
    let lost = |r: Result<(), StoreError>| match r {
        Err(StoreError::LeaseLost { job, instance }) => {
            assert_eq!((job, instance.as_str()), (id, "host-a"))
        }
        other => panic!("a stale filing write was not refused: {other:?}"),
    };
    lost(a.finish_filing(id, Some(&stale), FilingState::Done).await);
    lost(a.note_filing_error(id, Some(&stale), "filing: x").await);
    lost(a.plan_filing(id, Some(&stale), None).await);
    assert_eq!(
        b.job(id).await.unwrap(),
        before,
        "a refused write changed the job"
    );
    // Its new holder files it.
    b.finish_filing(id, Some(&taken), FilingState::Done)
        .await
        .unwrap();
    assert_eq!(
        b.job(id).await.unwrap().filing.unwrap().state,
        FilingState::Done
    );
    b.release(taken).await;
    a.release(stale).await;
}

#[tokio::test]
async fn two_instances_admitting_one_file_at_once_make_one_job() {
    let Some(c) = Cluster::start("two_instances_admitting_one_file_at_once_make_one_job") else {
        return;
    };
    let (_, s) = fleet(&c, 2, Duration::from_secs(30)).await;
    let s = Arc::new(s);
    for round in 0..5 {
        let file = new_job_at(
            &format!("/drop/{round}.tar"),
            4096,
            Some(Path::new("/drop")),
        );
        let (f1, f2) = (file.clone(), file.clone());
        let (s1, s2) = (s.clone(), s.clone());
        let (r1, r2) = tokio::join!(
            async move { s1[0].admit_unless_newer(&f1, None).await.unwrap() },
            async move { s2[1].admit_unless_newer(&f2, None).await.unwrap() },
        );
        let made: Vec<JobId> = [&r1, &r2]
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(made.len(), 1, "round {round}: {r1:?} / {r2:?}");
        let other = [r1, r2].into_iter().find_map(|r| r.err()).unwrap();
        assert_eq!(other.id, made[0]);
    }
    assert_eq!(s[0].list(&JobQuery::default()).await.unwrap().len(), 5);
    // The same file elsewhere (another watch folder) is another file.
    let elsewhere = new_job_at("/other/0.tar", 4096, Some(Path::new("/other")));
    assert!(s[0]
        .admit_unless_newer(&elsewhere, None)
        .await
        .unwrap()
        .is_ok());
}

#[tokio::test]
async fn migrations_run_once_and_a_newer_schema_is_refused() {
    let Some(c) = Cluster::start("migrations_run_once_and_a_newer_schema_is_refused") else {
        return;
    };
    let url = c.database();
    let lease = Duration::from_secs(30);
    // Instances starting together: one migrates, the others find it done.
    let starts = (0..4).map(|i| Store::connect(opts(&url, &format!("i{i}"), lease)));
    for r in futures_util::future::join_all(starts).await {
        let store = r.unwrap();
        assert_eq!(
            store.schema_version().await.unwrap(),
            crate::store::PG_SCHEMA_VERSION
        );
    }
    c.sql_in(&url, "UPDATE modelferry_schema SET version = 99");
    let err = Store::connect(opts(&url, "old", lease))
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade modelferry"), "{err}");
}

#[tokio::test]
async fn only_run_and_upload_migrate_and_a_current_schema_is_not_written() {
    let Some(c) = Cluster::start("only_run_and_upload_migrate") else {
        return;
    };
    let url = c.database();
    let lease = Duration::from_secs(30);
    // Never migrated: no schema, no jobs, and nothing is created.
    let reader = PgBackend::connect_without_migrating(opts(&url, "r", lease)).await;
    assert!(
        matches!(reader, Err(StoreError::SchemaTooOld { found: 0, .. })),
        "{:?}",
        reader.err()
    );
    let tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'";
    assert_eq!(c.sql_in(&url, tables).trim(), "0");

    Store::connect(opts(&url, "a", lease)).await.unwrap();
    // The row's transaction id moves with any write to it.
    let xmin = "SELECT xmin::text FROM modelferry_schema";
    let written = c.sql_in(&url, xmin);
    Store::connect(opts(&url, "b", lease)).await.unwrap();
    PgBackend::connect_without_migrating(opts(&url, "r", lease))
        .await
        .unwrap();
    assert_eq!(
        c.sql_in(&url, xmin),
        written,
        "a current schema was written"
    );

    // An older schema: named with both versions, and left as it is.
    c.sql_in(&url, "UPDATE modelferry_schema SET version = 1");
    let err = PgBackend::connect_without_migrating(opts(&url, "r", lease))
        .await
        .expect_err("refused");
    let known = crate::store::PG_SCHEMA_VERSION;
    assert!(
        matches!(err, StoreError::SchemaTooOld { found: 1, known: k, .. } if k == known),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!(
            "schema version 1 is older than this modelferry's ({known})"
        )),
        "{err}"
    );
    assert_eq!(
        c.sql_in(&url, "SELECT version FROM modelferry_schema")
            .trim(),
        "1"
    );
    c.sql_in(
        &url,
        &format!("UPDATE modelferry_schema SET version = {known}"),
    );
    // Newer: refused the same way with or without migrating.
    c.sql_in(&url, "UPDATE modelferry_schema SET version = 99");
    assert!(matches!(
        PgBackend::connect_without_migrating(opts(&url, "r", lease)).await,
        Err(StoreError::SchemaTooNew { found: 99, .. })
    ));
}

#[tokio::test]
async fn the_password_never_appears_in_an_error() {
    let Some(c) = Cluster::start("the_password_never_appears_in_an_error") else {
        return;
    };
    let url = c.database();
    let mut wrong = opts(&url, "a", Duration::from_secs(30));
    wrong.password = Some(Secret::new(format!("{PASSWORD}-wrong")));
    let err = Store::connect(wrong)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(err.contains("127.0.0.1"), "names the database: {err}");
    assert!(!err.contains(PASSWORD), "{err}");
    let store = Store::connect(opts(&url, "a", Duration::from_secs(30)))
        .await
        .unwrap();
    let err = store.job(12345).await.unwrap_err().to_string();
    assert!(!err.contains(PASSWORD), "{err}");
    assert!(!store.path().display().to_string().contains(PASSWORD));
}

#[tokio::test]
async fn a_job_goes_its_whole_way_in_postgresql() {
    let Some(c) = Cluster::start("a_job_goes_its_whole_way_in_postgresql") else {
        return;
    };
    let (_, s) = fleet(&c, 1, Duration::from_secs(30)).await;
    let s = &s[0];
    for state in JobState::ALL {
        let id = s
            .admit(&new_job_at("/drop/w.tar", 4096, Some(Path::new("/drop"))))
            .await
            .unwrap();
        drive_to(s, id, state).await;
    }
    let cp = HashCheckpoint {
        chunks: 2,
        state: vec![1, 2, 3],
    };
    let id = s
        .admit(&new_job_at("/drop/x.tar", 4096, None))
        .await
        .unwrap();
    let h = s.hold(id).await.unwrap();
    s.start_session(id, &h, &session("s"), "m").await.unwrap();
    s.ack_chunk(id, &h, "s", &ack(1), Some(&cp)).await.unwrap();
    s.ack_chunk(id, &h, "s", &ack(0), None).await.unwrap();
    // Acknowledged again (a resent chunk): the newer record stands.
    let again = ChunkAck {
        checksum: ChunkChecksum::Sha256("ab".into()),
        ..ack(0)
    };
    s.ack_chunk(id, &h, "s", &again, None).await.unwrap();
    assert_eq!(s.acked_chunks(id).await.unwrap(), vec![again, ack(1)]);
    assert!(matches!(
        s.ack_chunk(id, &h, "old", &ack(2), None).await,
        Err(StoreError::StaleSession { .. })
    ));
    let job = s.job(id).await.unwrap();
    assert_eq!((job.chunks_done, job.bytes_done), (2, 2048));
    assert_eq!(job.hash_checkpoint, Some(cp));
    assert!(matches!(
        s.begin_complete(id + 1000, &h, "x").await,
        Err(StoreError::NotHeld { .. })
    ));
    s.release(h).await;
    assert_eq!(
        s.list(&JobQuery::default()).await.unwrap().len(),
        JobState::ALL.len() + 1
    );
    let unfiled = s.unfiled().await.unwrap();
    assert_eq!(
        unfiled.len(),
        JobState::FINISHED.len(),
        "the finished daemon jobs"
    );
    let done = unfiled[0].id;
    s.plan_filing(done, None, Some(Path::new("/done/w.tar")))
        .await
        .unwrap();
    s.finish_filing(done, None, FilingState::Done)
        .await
        .unwrap();
    assert_eq!(
        s.unfiled().await.unwrap().len(),
        JobState::FINISHED.len() - 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_list_prune_and_dedupe_work_in_postgresql() {
    let Some(c) = Cluster::start("cancel_list_prune_and_dedupe_work_in_postgresql") else {
        return;
    };
    let (_, s) = fleet(&c, 1, Duration::from_secs(30)).await;
    let s = &s[0];
    // A job imported (with its sha256), one cancelled, one importing.
    let done = s.admit(&new_job_at("/u/a.tar", 4096, None)).await.unwrap();
    drive_to(s, done, JobState::Succeeded).await;
    let gone = s.admit(&new_job_at("/u/b.tar", 4096, None)).await.unwrap();
    s.cancel(gone, "stop").await.unwrap();
    assert_eq!(s.job_state(gone).await.unwrap(), JobState::Cancelled);
    let busy = s.admit(&new_job_at("/u/c.tar", 4096, None)).await.unwrap();
    drive_to(s, busy, JobState::Importing).await;
    assert!(matches!(
        s.cancel(busy, "stop").await,
        Err(StoreError::InvalidTransition { .. })
    ));

    let all = s.list(&JobQuery::default()).await.unwrap();
    assert_eq!(
        all.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![busy, gone, done],
        "newest first"
    );
    let q = JobQuery {
        states: vec![JobState::Cancelled],
        ..JobQuery::default()
    };
    assert_eq!(s.list(&q).await.unwrap()[0].id, gone);
    let q = JobQuery {
        ids: vec![done],
        limit: Some(1),
        ..JobQuery::default()
    };
    assert_eq!(s.list(&q).await.unwrap()[0].id, done);

    // Dedupe finds the import by size, then sha256, also once pruned.
    let sha = s.job(done).await.unwrap().sha256.unwrap();
    assert!(s.imported_size_exists(4096, "model", false).await.unwrap());
    assert!(!s.imported_size_exists(4097, "model", false).await.unwrap());
    let far = SystemTime::now() + Duration::from_secs(60);
    assert_eq!(s.prune(far).await.unwrap(), 2, "the finished jobs");
    assert_eq!(s.list(&JobQuery::default()).await.unwrap().len(), 1);
    let original = s
        .find_imported(4096, &sha, "model", false)
        .await
        .unwrap()
        .expect("still found after prune");
    assert_eq!(original.id, done);
    let copy = s.admit(&new_job_at("/u/d.tar", 4096, None)).await.unwrap();
    let h = s.hold(copy).await.unwrap();
    s.succeed_duplicate(copy, &h, &sha, &original)
        .await
        .unwrap();
    s.release(h).await;
    // A note after a cancel leaves the cancel's reason.
    let late = s.admit(&new_job_at("/u/e.tar", 4096, None)).await.unwrap();
    let h = s.hold(late).await.unwrap();
    s.cancel(late, "stop").await.unwrap();
    assert!(matches!(
        s.note_error(late, &h, "retrying", None).await,
        Err(StoreError::NotActive {
            state: JobState::Cancelled,
            ..
        })
    ));
    assert_eq!(s.job(late).await.unwrap().error.as_deref(), Some("stop"));
    s.release(h).await;
    let dup = s.job(copy).await.unwrap();
    assert_eq!(
        (dup.state, dup.duplicate_of),
        (JobState::Succeeded, Some(done))
    );
}
