//! Admitting a file: whether it becomes a new job, resumes its unfinished
//! job, or is already settled.
//!
//! `modelferry upload` and the daemon both admit files here, so one file gets
//! the same answer from either. The newest job for the file's identity
//! (device, inode, size, mtime) and import kind decides: an unfinished one is
//! resumed (same session); a finished one is imported again only as far as
//! the caller's [`Rerun`] rule allows. A new job may first supersede the
//! never-started jobs of earlier versions of the file at the same path.
//! Admission never runs a job: [`Engine::run_job`](super::Engine::run_job)
//! takes the job's lock, so two processes that admit the same file never
//! drive it at once.

use crate::escaped::Escaped;
use crate::job::{Failure, FilingState, Job, JobId, JobState, NewJob, Stage};
use crate::store::{Store, StoreError};

/// Which finished jobs are imported again as a new job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rerun {
    /// None: a known identity is never imported again.
    Never,
    /// A failed or cancelled job whose file was filed away and is back in
    /// the drop folder (moved back by hand, or by `modelferry retry`); never
    /// a succeeded one (the daemon; a rewritten file has a new identity).
    Refiled,
    /// A failed or cancelled job, not a succeeded one (`upload`).
    Failed,
    /// Any finished job (`upload --force`).
    Finished,
}

/// What admitting a file decided.
#[derive(Debug, Clone)]
pub enum Admission {
    /// The identity has a finished job that [`Rerun`] does not import again.
    Settled(Job),
    /// The identity has an unfinished job: it goes on from where it is.
    Resume(Job),
    /// A new, queued job.
    New {
        /// The job made.
        job: Job,
        /// Jobs of earlier versions of the file that never started, failed
        /// now as superseded.
        superseded: Vec<JobId>,
    },
}

/// What the newest job for a file's identity means for the file, before
/// anything is written: [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// That job is unfinished: it goes on from where it is.
    Resume,
    /// That job is finished and [`Rerun`] does not import it again.
    Settled,
    /// A new job: no job yet, or a finished one imported again.
    New,
}

/// What `known` (the newest job for the file's identity and import kind)
/// means under `rerun`. Pure: [`admit`] acts on it, `upload --dry-run`
/// reports it.
pub fn decide(known: Option<&Job>, rerun: Rerun) -> Decision {
    let Some(job) = known else {
        return Decision::New;
    };
    let again = match job.state {
        s if !s.is_terminal() => return Decision::Resume,
        JobState::Failed | JobState::Cancelled => match rerun {
            Rerun::Never => false,
            Rerun::Refiled => filed_away(job),
            Rerun::Failed | Rerun::Finished => true,
        },
        _ => rerun == Rerun::Finished,
    };
    if again {
        Decision::New
    } else {
        Decision::Settled
    }
}

/// How a file is admitted.
pub struct Policy<'a> {
    /// Which finished jobs of the same file are imported again.
    pub rerun: Rerun,
    /// When set, a queued job for an earlier version of the file at the same
    /// path is failed as superseded before the new job is made, unless this
    /// says the job is running (a running job fails on its own when it reads
    /// the changed file).
    pub supersede_unless_running: Option<&'a (dyn Fn(JobId) -> bool + Sync)>,
}

/// The error a superseded job is failed with.
pub const SUPERSEDED: &str =
    "superseded: the file changed before its upload started; the new version is a new job";

/// Whether a finished daemon job's file was moved out of its drop folder:
/// seen there again, it was put back on purpose.
fn filed_away(job: &Job) -> bool {
    job.filing
        .as_ref()
        .is_some_and(|f| f.state == FilingState::Done)
}

/// Why a [settled](Admission::Settled) file is not imported, for the log.
pub fn why_settled(job: &Job) -> String {
    match job.state {
        JobState::Succeeded => format!(
            "already imported as job {} (model id {}); the same file is never imported twice",
            job.id,
            Escaped::str(job.model_id.as_deref().unwrap_or("-"))
        ),
        state if job.watch_dir.is_none() => format!(
            "job {} of `modelferry upload` {state} with this file; run that upload again to retry it",
            job.id
        ),
        state => format!(
            "job {} {state} with this file and has not been filed to failed_dir yet; once filed, put the file back (or `modelferry retry {}`) to import it again",
            job.id, job.id
        ),
    }
}

/// Admits `file` under `policy`.
pub async fn admit(
    store: &Store,
    file: NewJob,
    policy: Policy<'_>,
) -> Result<Admission, StoreError> {
    let known = store
        .find_by_identity(
            &file.path,
            &file.identity,
            &file.file_context,
            file.is_adapter,
        )
        .await?;
    let seen = known.as_ref().map(|j| j.id);
    match (decide(known.as_ref(), policy.rerun), known) {
        (Decision::Resume, Some(job)) => return Ok(Admission::Resume(job)),
        (Decision::Settled, Some(job)) => return Ok(Admission::Settled(job)),
        _ => {}
    }
    let mut superseded = Vec::new();
    if let Some(running) = policy.supersede_unless_running {
        let older = store.unfinished_for_path(&file.path).await?;
        for old in older {
            // A job of this very file (admitted meanwhile by another
            // instance in fleet mode) is not an earlier version of it.
            let same_file = old.identity.matches(&file.identity)
                && old.file_context == file.file_context
                && old.is_adapter == file.is_adapter;
            if old.state == JobState::Queued && !running(old.id) && !same_file {
                // A process driving the job (an `upload`) keeps it.
                let hold = match store.hold(old.id).await {
                    Ok(hold) => hold,
                    Err(StoreError::Busy(_)) => continue,
                    Err(e) => return Err(e),
                };
                let failed = store
                    .fail(old.id, &hold, &Failure::new(Stage::Read, SUPERSEDED))
                    .await;
                hold.finished();
                store.release(hold).await;
                failed?;
                superseded.push(old.id);
            }
        }
    }
    let id = match store.admit_unless_newer(&file, seen).await? {
        Ok(id) => id,
        // Another instance admitted the file first: its job is the file's.
        Err(job) if job.state.is_terminal() => return Ok(Admission::Settled(job)),
        Err(job) => return Ok(Admission::Resume(job)),
    };
    let job = store.job(id).await?;
    Ok(Admission::New { job, superseded })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::job::SessionRecord;

    fn file(mtime_ns: i64) -> NewJob {
        let mut f = NewJob {
            watch_dir: Some(PathBuf::from("/drop")),
            ..NewJob::for_test("/drop/m.tar", 10)
        };
        f.identity.mtime_ns = mtime_ns;
        f
    }

    fn policy(rerun: Rerun) -> Policy<'static> {
        Policy {
            rerun,
            supersede_unless_running: None,
        }
    }

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_path_buf()).await.unwrap();
        (dir, store)
    }

    async fn new_id(store: &Store, f: NewJob, rerun: Rerun) -> JobId {
        match admit(store, f, policy(rerun)).await.unwrap() {
            Admission::New { job, superseded } => {
                assert!(superseded.is_empty());
                job.id
            }
            other => panic!("expected a new job, got {other:?}"),
        }
    }

    async fn finish(store: &Store, id: JobId, succeed: bool) {
        let hold = store.hold(id).await.unwrap();
        if succeed {
            let session = SessionRecord {
                session_id: "s".into(),
                started_at: SystemTime::now(),
                expires_at: Some(SystemTime::now() + Duration::from_secs(600)),
            };
            store.start_session(id, &hold, &session, "m").await.unwrap();
            store.begin_complete(id, &hold, "00").await.unwrap();
            store
                .set_importing(id, &hold, "d", Some("m"))
                .await
                .unwrap();
            store.succeed(id, &hold, Some("m")).await.unwrap();
        } else {
            let f = Failure::new(Stage::Upload, "refused");
            store.fail(id, &hold, &f).await.unwrap();
        }
        hold.finished();
        store.release(hold).await;
    }

    async fn admitted(store: &Store, rerun: Rerun) -> Admission {
        admit(store, file(1), policy(rerun)).await.unwrap()
    }

    #[tokio::test]
    async fn decide_covers_every_state_rerun_and_filing() {
        use crate::job::{Filing, FilingState};
        use Decision::*;
        let (_d, store) = store().await;
        let id = new_id(&store, file(1), Rerun::Never).await;
        let mut job = store.job(id).await.unwrap();
        let reruns = [Rerun::Never, Rerun::Refiled, Rerun::Failed, Rerun::Finished];
        for rerun in reruns {
            assert_eq!(decide(None, rerun), New, "{rerun:?}");
        }
        let filings = [
            None,
            Some(FilingState::Pending),
            Some(FilingState::Done),
            Some(FilingState::Skipped),
        ];
        for state in JobState::ALL {
            for filing in filings {
                for rerun in reruns {
                    job.state = state;
                    job.filing = filing.map(|state| Filing {
                        state,
                        dest: None,
                        filed_at: None,
                    });
                    let want = match (state, rerun) {
                        (s, _) if JobState::ACTIVE.contains(&s) => Resume,
                        (JobState::Succeeded, Rerun::Finished) => New,
                        (JobState::Succeeded, _) => Settled,
                        // Failed or cancelled.
                        (_, Rerun::Never) => Settled,
                        (_, Rerun::Refiled) if filing == Some(FilingState::Done) => New,
                        (_, Rerun::Refiled) => Settled,
                        (_, Rerun::Failed | Rerun::Finished) => New,
                    };
                    assert_eq!(
                        decide(Some(&job), rerun),
                        want,
                        "{state} {filing:?} {rerun:?}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn an_unknown_file_is_a_new_queued_job() {
        let (_d, store) = store().await;
        let id = new_id(&store, file(1), Rerun::Never).await;
        let job = store.job(id).await.unwrap();
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(job.watch_dir, Some(PathBuf::from("/drop")));
    }

    #[tokio::test]
    async fn an_unfinished_job_resumes_under_every_rule() {
        let (_d, store) = store().await;
        let id = new_id(&store, file(1), Rerun::Never).await;
        for rerun in [Rerun::Never, Rerun::Failed, Rerun::Finished] {
            match admitted(&store, rerun).await {
                Admission::Resume(job) => assert_eq!(job.id, id),
                other => panic!("{rerun:?}: expected resume, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_succeeded_job_is_imported_again_only_when_forced() {
        let (_d, store) = store().await;
        let id = new_id(&store, file(1), Rerun::Failed).await;
        finish(&store, id, true).await;
        for rerun in [Rerun::Never, Rerun::Failed] {
            match admitted(&store, rerun).await {
                Admission::Settled(job) => assert_eq!(job.id, id),
                other => panic!("{rerun:?}: expected settled, got {other:?}"),
            }
        }
        assert_ne!(new_id(&store, file(1), Rerun::Finished).await, id);
    }

    #[tokio::test]
    async fn a_failed_job_is_tried_again_except_by_the_daemon() {
        let (_d, store) = store().await;
        let id = new_id(&store, file(1), Rerun::Failed).await;
        finish(&store, id, false).await;
        assert!(matches!(
            admitted(&store, Rerun::Never).await,
            Admission::Settled(job) if job.id == id
        ));
        let again = new_id(&store, file(1), Rerun::Failed).await;
        assert_ne!(again, id);
        // The newest job for the identity decides from now on.
        assert!(matches!(
            admitted(&store, Rerun::Failed).await,
            Admission::Resume(job) if job.id == again
        ));
    }

    #[tokio::test]
    async fn a_failed_or_cancelled_daemon_job_is_imported_again_once_its_file_was_filed() {
        let (_d, store) = store().await;
        let failed = new_id(&store, file(1), Rerun::Refiled).await;
        finish(&store, failed, false).await;
        // Not filed yet: the file is still the failed job's.
        assert!(matches!(
            admitted(&store, Rerun::Refiled).await,
            Admission::Settled(job) if job.id == failed
        ));
        store
            .plan_filing(failed, None, Some(std::path::Path::new("/failed/m.tar")))
            .await
            .unwrap();
        store
            .finish_filing(failed, None, FilingState::Done)
            .await
            .unwrap();
        // Filed away and back: a new job.
        let again = new_id(&store, file(1), Rerun::Refiled).await;
        assert_ne!(again, failed);
        store.cancel(again, "cancelled").await.unwrap();
        assert!(matches!(
            admitted(&store, Rerun::Refiled).await,
            Admission::Settled(job) if job.id == again
        ));
        // A cancelled job is tried again by `upload` like a failed one.
        assert_ne!(new_id(&store, file(1), Rerun::Failed).await, again);
    }

    #[tokio::test]
    async fn a_succeeded_job_is_never_imported_again_by_the_daemon_even_once_filed() {
        let (_d, store) = store().await;
        let id = new_id(&store, file(1), Rerun::Refiled).await;
        finish(&store, id, true).await;
        store.plan_filing(id, None, None).await.unwrap();
        store
            .finish_filing(id, None, FilingState::Done)
            .await
            .unwrap();
        let settled = admitted(&store, Rerun::Refiled).await;
        assert!(matches!(&settled, Admission::Settled(job) if job.id == id));
        let Admission::Settled(job) = settled else {
            unreachable!()
        };
        assert!(why_settled(&job).contains("already imported"));
    }

    #[tokio::test]
    async fn a_new_version_supersedes_queued_jobs_that_are_not_running() {
        let (_d, store) = store().await;
        let idle = new_id(&store, file(1), Rerun::Never).await;
        let running = new_id(&store, file(2), Rerun::Never).await;
        let is_running = move |id: JobId| id == running;
        let admission = admit(
            &store,
            file(3),
            Policy {
                rerun: Rerun::Never,
                supersede_unless_running: Some(&is_running),
            },
        )
        .await
        .unwrap();
        let Admission::New { superseded, .. } = admission else {
            panic!("expected a new job, got {admission:?}");
        };
        assert_eq!(superseded, vec![idle]);
        let old = store.job(idle).await.unwrap();
        assert_eq!(old.state, JobState::Failed);
        assert_eq!(old.error.as_deref(), Some(SUPERSEDED));
        assert_eq!(old.error_stage, Some(Stage::Read));
        let kept = store.job(running).await.unwrap();
        assert_eq!(kept.state, JobState::Queued);
    }

    #[tokio::test]
    async fn without_superseding_earlier_versions_are_left_alone() {
        let (_d, store) = store().await;
        let first = new_id(&store, file(1), Rerun::Failed).await;
        new_id(&store, file(2), Rerun::Failed).await;
        let job = store.job(first).await.unwrap();
        assert_eq!(job.state, JobState::Queued);
    }
}
