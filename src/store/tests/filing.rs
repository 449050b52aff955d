use crate::job::{Filing, FilingState};

use super::*;

/// A finished daemon job whose filing is at `step` (`None`: not planned).
async fn finished_at(s: &Store, state: JobState, step: Option<FilingState>) -> JobId {
    let id = s
        .admit(&new_job_at("/drop/f.tar", 10, Some(Path::new("/drop"))))
        .await
        .unwrap();
    drive_to(s, id, state).await;
    if let Some(step) = step {
        s.plan_filing(id, None, Some(Path::new("/done/f.tar")))
            .await
            .unwrap();
        if step != FilingState::Pending {
            s.finish_filing(id, None, step).await.unwrap();
        }
    }
    id
}

fn step_of(j: &crate::job::Job) -> Option<FilingState> {
    j.filing.as_ref().map(|f| f.state)
}

#[tokio::test]
async fn filing_follows_its_rules_over_every_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let froms = std::iter::once(None).chain(FilingState::ALL.into_iter().map(Some));
    for from in froms {
        for to in FilingState::ALL {
            let id = finished_at(&s, JobState::Succeeded, from).await;
            let r = match to {
                FilingState::Pending => s.plan_filing(id, None, Some(Path::new("/other"))).await,
                _ => s.finish_filing(id, None, to).await,
            };
            let after = s.job(id).await.unwrap();
            if FilingState::can_become(from, to) {
                assert!(r.is_ok(), "{from:?} -> {to}: {r:?}");
                assert_eq!(step_of(&after), Some(to), "{from:?} -> {to}");
            } else if to == FilingState::Pending {
                // Planning again keeps the first plan.
                assert!(r.is_ok(), "{from:?} -> {to}: {r:?}");
                assert_eq!(step_of(&after), from);
                assert_eq!(
                    after.filing.and_then(|f| f.dest),
                    Some(PathBuf::from("/done/f.tar"))
                );
            } else {
                assert!(
                    matches!(&r, Err(StoreError::InvalidFiling { job, from: f, to: t, .. })
                        if *job == id && *f == from && *t == to),
                    "{from:?} -> {to}: {r:?}"
                );
                assert_eq!(step_of(&after), from, "{from:?} -> {to} changed the job");
            }
        }
    }
}

#[tokio::test]
async fn filing_an_unfinished_job_is_a_filing_error() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let id = finished_at(&s, JobState::Uploading, None).await;
    let e = s.plan_filing(id, None, None).await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::InvalidFiling {
                state: JobState::Uploading,
                from: None,
                to: FilingState::Pending,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("filing"), "{e}");
    assert!(matches!(
        s.finish_filing(id, None, FilingState::Done).await,
        Err(StoreError::InvalidFiling { .. })
    ));
    assert!(matches!(
        s.plan_filing(999, None, None).await,
        Err(StoreError::NotFound(999))
    ));
}

#[tokio::test]
async fn a_filing_is_recorded_and_unfiled_jobs_are_the_unfinished_filings() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path()).await;
    let never = finished_at(&s, JobState::Failed, None).await;
    let pending = finished_at(&s, JobState::Succeeded, Some(FilingState::Pending)).await;
    finished_at(&s, JobState::Succeeded, Some(FilingState::Done)).await;
    finished_at(&s, JobState::Failed, Some(FilingState::Skipped)).await;
    finished_at(&s, JobState::Importing, None).await;
    s.admit(&new_job_at("/fg.tar", 10, None)).await.unwrap();
    let ids: Vec<JobId> = s.unfiled().await.unwrap().iter().map(|j| j.id).collect();
    assert_eq!(ids, [never, pending]);

    s.note_filing_error(pending, None, "filing: disk full")
        .await
        .unwrap();
    assert_eq!(
        s.job(pending).await.unwrap().filing_error.as_deref(),
        Some("filing: disk full")
    );
    s.finish_filing(pending, None, FilingState::Done)
        .await
        .unwrap();
    let j = s.job(pending).await.unwrap();
    assert_eq!(j.filing_error, None);
    let f: Filing = j.filing.unwrap();
    assert_eq!(
        (f.state, f.dest, f.filed_at.is_some()),
        (FilingState::Done, Some(PathBuf::from("/done/f.tar")), true)
    );
}

#[test]
fn the_filing_guard_is_built_from_the_rules() {
    assert_eq!(
        crate::store::filing::guard_for(FilingState::Pending),
        "(j.filing IS NULL)"
    );
    for to in [FilingState::Done, FilingState::Skipped] {
        assert_eq!(
            crate::store::filing::guard_for(to),
            "(j.filing IN ('pending'))"
        );
    }
}
