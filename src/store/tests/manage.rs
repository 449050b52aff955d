use super::*;
use crate::store::JobQuery;

fn ids(jobs: &[crate::job::Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

#[tokio::test]
async fn lists_newest_first_filtered_by_id_state_time_and_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let a = new_job(&s, 10).await;
    let b = new_job(&s, 10).await;
    let c = new_job(&s, 10).await;
    drive_to(&s, b, JobState::Failed).await;
    drive_to(&s, c, JobState::Uploading).await;
    let all = s.list(&JobQuery::default()).await.unwrap();
    assert_eq!(ids(&all), [c, b, a]);
    let q = JobQuery {
        ids: vec![a, c, 999],
        ..JobQuery::default()
    };
    assert_eq!(ids(&s.list(&q).await.unwrap()), [c, a]);
    let q = JobQuery {
        states: vec![JobState::Failed, JobState::Queued],
        ..JobQuery::default()
    };
    assert_eq!(ids(&s.list(&q).await.unwrap()), [b, a]);
    let q = JobQuery {
        limit: Some(1),
        ..JobQuery::default()
    };
    assert_eq!(ids(&s.list(&q).await.unwrap()), [c]);
    let q = JobQuery {
        since: Some(SystemTime::now() + Duration::from_secs(60)),
        ..JobQuery::default()
    };
    assert!(s.list(&q).await.unwrap().is_empty());
    let q = JobQuery {
        since: Some(SystemTime::now() - Duration::from_secs(60)),
        ..JobQuery::default()
    };
    assert_eq!(s.list(&q).await.unwrap().len(), 3);
}

#[tokio::test]
async fn cancel_records_why_and_refuses_jobs_the_platform_has() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let id = new_job(&s, 10).await;
    drive_to(&s, id, JobState::Uploading).await;
    s.cancel(id, "cancelled by an operator").await.unwrap();
    let j = s.job(id).await.unwrap();
    assert_eq!(j.state, JobState::Cancelled);
    assert_eq!(j.error_stage, Some(Stage::Cancelled));
    assert_eq!(j.error.as_deref(), Some("cancelled by an operator"));
    assert!(j.finished_at.is_some());
    let importing = new_job(&s, 10).await;
    drive_to(&s, importing, JobState::Importing).await;
    let e = s.cancel(importing, "x").await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::InvalidTransition {
                from: JobState::Importing,
                to: JobState::Cancelled,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(matches!(
        s.cancel(999, "x").await,
        Err(StoreError::NotFound(999))
    ));
    assert_eq!(s.job_state(id).await.unwrap(), JobState::Cancelled);
}

#[tokio::test]
async fn prune_keeps_what_recognises_the_file_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let done = new_job(&s, 4096).await;
    let h = s.hold(done).await.unwrap();
    s.start_session(done, &h, &session("s"), "cm-1")
        .await
        .unwrap();
    s.ack_chunk(done, &h, "s", &ack(0), None).await.unwrap();
    s.begin_complete(done, &h, "feed").await.unwrap();
    s.set_importing(done, &h, "ds-1", None).await.unwrap();
    s.succeed(done, &h, Some("cm-1")).await.unwrap();
    s.release(h).await;
    let running = new_job(&s, 10).await;
    // A daemon job not filed yet keeps its details: filing needs them.
    let unfiled = s
        .admit(&new_job_at("/drop/u.tar", 10, Some(Path::new("/drop"))))
        .await
        .unwrap();
    drive_to(&s, unfiled, JobState::Failed).await;

    // Nothing finished before a cutoff in the past.
    assert_eq!(
        s.prune(SystemTime::now() - Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    let later = SystemTime::now() + Duration::from_secs(1);
    assert_eq!(s.prune(later).await.unwrap(), 1);
    let j = s.job(done).await.unwrap();
    assert!(j.pruned);
    assert_eq!(j.state, JobState::Succeeded);
    assert_eq!(j.sha256.as_deref(), Some("feed"));
    assert_eq!(j.model_id.as_deref(), Some("cm-1"));
    assert_eq!(j.dock_status_id.as_deref(), Some("ds-1"));
    assert_eq!(j.identity.size, 4096);
    assert_eq!(j.session, None);
    assert!(s.acked_chunks(done).await.unwrap().is_empty());
    // Gone from listings, still found by identity.
    let listed = ids(&s.list(&JobQuery::default()).await.unwrap());
    assert_eq!(listed, [unfiled, running], "newest first");
    let found = s
        .find_by_identity(&j.path, &j.identity, "model", false)
        .await
        .unwrap()
        .unwrap();
    assert!(found.id == unfiled || found.id == running || found.id == done);
    // Once filed, the daemon job is pruned too; a second prune finds nothing.
    s.plan_filing(unfiled, None, None).await.unwrap();
    s.finish_filing(unfiled, None, crate::job::FilingState::Skipped)
        .await
        .unwrap();
    assert_eq!(s.prune(later).await.unwrap(), 1);
    assert_eq!(s.prune(later).await.unwrap(), 0);
    assert_eq!(ids(&s.list(&JobQuery::default()).await.unwrap()), [running]);
    // A pruned job cannot be cancelled.
    assert!(s.cancel(done, "x").await.is_err());
}
