//! `modelferry upload --dry-run`: pre-flight and the plan, nothing sent.
//!
//! The whole archive is checked (a gzip one inflated to its end), then the
//! plan is worked out: chunks, chunk size, sessions needed, and whether the
//! file (its identity) or its bytes (dedupe) are already imported. The
//! state database is opened read-only, or not at all when there is none:
//! a dry run writes nothing anywhere and never talks to the platform.
//! Exit 0 if the file would be uploaded (or is already imported), 1 if
//! pre-flight rejects it.

use std::future::Future;
use std::path::Path;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::upload_report::{failed, short_report, Say};
use crate::config::Config;
use crate::escaped::Escaped;
use crate::exit;
use crate::job::{JobId, JobState};
use crate::preflight::{check_file, Depth, Format, PreflightError, Summary};
use crate::source::FileIdentity;
use crate::store::Store;
use crate::upload::admit::{decide, Decision, Rerun};
use crate::upload::dedupe::{find_duplicate, DedupeError};
use crate::upload::ChunkPlan;

/// The plan, as `--dry-run --json` prints it.
#[derive(Debug, Serialize)]
pub struct Plan {
    /// Always `true`: nothing was sent.
    pub dry_run: bool,
    /// The file, as given.
    pub path: String,
    /// The file's name, as it would be sent to the platform.
    pub file: String,
    /// The file's size in bytes.
    pub size: u64,
    /// The platform's `fileContext` the import would use.
    pub file_context: String,
    /// Whether the import would be an adapter.
    pub is_adapter: bool,
    /// The archive's format, when pre-flight accepted it.
    pub format: Option<Format>,
    /// What pre-flight found.
    pub preflight: Preflight,
    /// Bytes in each chunk (`upload.chunk_size`).
    pub chunk_size: u64,
    /// Chunks the file is cut into.
    pub chunks: u64,
    /// Chunks an upload would send (fewer when it resumes a job).
    pub chunks_to_send: u64,
    /// Import sessions the upload would start.
    pub sessions_needed: u64,
    /// The file is imported already: by its identity (`job_id`) or, with
    /// dedupe, by its bytes (`duplicate_of`).
    pub already_imported: bool,
    /// The job that imported this file already (by its identity).
    pub job_id: Option<JobId>,
    /// The job that imported the same bytes already (dedupe).
    pub duplicate_of: Option<JobId>,
    /// The platform's model id of the earlier import, if any.
    pub model_id: Option<String>,
    /// An unfinished job an upload would resume.
    pub resumes_job: Option<JobId>,
    /// Whether an upload would send anything.
    pub would_upload: bool,
    /// Why the state database was not consulted, when it was not.
    pub note: Option<String>,
}

/// Pre-flight's answer, as the plan shows it.
#[derive(Debug, Serialize)]
pub struct Preflight {
    /// Whether pre-flight accepted the archive.
    pub ok: bool,
    /// Why it did not, as one line.
    pub error: Option<String>,
    /// The member to blame, when one is.
    pub member: Option<String>,
    /// The reason alone, without the member.
    pub reason: Option<String>,
    /// What was found in an accepted archive.
    #[serde(flatten)]
    pub summary: Option<Summary>,
}

/// What to plan: a file and how it would be imported.
pub struct Request<'a> {
    /// The file.
    pub path: &'a Path,
    /// Its identity, as read when the command started.
    pub identity: FileIdentity,
    /// The platform's `fileContext` for the import.
    pub file_context: String,
    /// Whether the import is an adapter.
    pub is_adapter: bool,
    /// `--force`: plan to import again even a file already imported.
    pub force: bool,
}

/// Runs `modelferry upload --dry-run`, returning the exit status. It ends
/// as `upload` does (see [`upload_report`](super::upload_report)): on an
/// error or an interruption `--json` prints the short report, and with JSON
/// logs stderr holds nothing but log events.
pub(super) async fn run(
    req: Request<'_>,
    config: &Config,
    say: &Say,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<u8> {
    let cancel = CancellationToken::new();
    tokio::pin!(shutdown);
    let work = plan(&req, config, &cancel);
    tokio::pin!(work);
    let planned = tokio::select! {
        p = &mut work => p,
        _ = &mut shutdown => {
            cancel.cancel();
            Ok(None)
        }
    };
    let plan = match planned {
        Ok(Some(plan)) => plan,
        Ok(None) => {
            say.error(&format!("{}: dry run interrupted", Escaped::path(req.path)));
            say.stdout(short_report(
                None,
                req.path,
                "interrupted",
                exit::INTERRUPTED,
            ));
            return Ok(exit::INTERRUPTED);
        }
        Err(e) => return failed(say, req.path, None, e),
    };
    if say.json_out {
        println!("{}", serde_json::to_string(&plan)?);
    } else {
        print_text(&plan);
    }
    Ok(if plan.preflight.ok {
        exit::SUCCESS
    } else {
        exit::IMPORT_FAILED
    })
}

/// The plan; `None` when interrupted.
async fn plan(
    req: &Request<'_>,
    config: &Config,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<Plan>> {
    let size = req.identity.size;
    let (p, id, c) = (req.path.to_path_buf(), req.identity, cancel.clone());
    let checked =
        tokio::task::spawn_blocking(move || check_file(&p, &id, Depth::Full, &|| c.is_cancelled()))
            .await?;
    let (format, preflight) = match checked {
        Ok((format, summary)) => (
            Some(format),
            Preflight {
                ok: true,
                error: None,
                member: None,
                reason: None,
                summary: Some(summary),
            },
        ),
        Err(PreflightError::Rejected(r)) => (
            None,
            Preflight {
                ok: false,
                error: Some(format!("pre-flight rejected the archive: {r}")),
                member: r.member,
                reason: Some(r.reason),
                summary: None,
            },
        ),
        Err(PreflightError::Stopped) => return Ok(None),
        Err(PreflightError::Source(e)) => return Err(e.into()),
    };
    let chunks = ChunkPlan::new(size, config.upload.chunk_size).chunks();
    let mut plan = Plan {
        dry_run: true,
        path: req.path.display().to_string(),
        file: req
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size,
        file_context: req.file_context.clone(),
        is_adapter: req.is_adapter,
        format,
        preflight,
        chunk_size: config.upload.chunk_size,
        chunks,
        chunks_to_send: chunks,
        sessions_needed: 1,
        already_imported: false,
        job_id: None,
        duplicate_of: None,
        model_id: None,
        resumes_job: None,
        would_upload: false,
        note: None,
    };
    if plan.preflight.ok {
        // Fleet mode: the shared database knows what any instance imported.
        // Nothing is written: the database is read as it is, never migrated.
        let store = Store::from_config_without_migrating(config)
            .await
            .map_err(|e| format!("{e:#}"));
        match store {
            Ok(Some(store)) => {
                if !look_up(&store, req, config, cancel, &mut plan).await? {
                    return Ok(None);
                }
            }
            Ok(None) => {}
            Err(e) => plan.note = Some(format!("the state database was not consulted: {e}")),
        }
        plan.would_upload = !plan.already_imported;
    }
    if !plan.would_upload {
        plan.chunks_to_send = 0;
        plan.sessions_needed = 0;
    }
    Ok(Some(plan))
}

/// Fills in what the store knows; `false` when interrupted.
async fn look_up(
    store: &Store,
    req: &Request<'_>,
    config: &Config,
    cancel: &CancellationToken,
    plan: &mut Plan,
) -> anyhow::Result<bool> {
    let known = store
        .find_by_identity(req.path, &req.identity, &req.file_context, req.is_adapter)
        .await?;
    // The rule `upload` admits by (see commands/upload.rs).
    let rerun = if req.force {
        Rerun::Finished
    } else {
        Rerun::Failed
    };
    match (decide(known.as_ref(), rerun), known) {
        // Under these rules only a succeeded job is settled.
        (Decision::Settled, Some(job)) => {
            plan.already_imported = true;
            plan.job_id = Some(job.id);
            plan.duplicate_of = job.duplicate_of;
            plan.model_id = job.model_id.filter(|m| !m.is_empty());
            return Ok(true);
        }
        (Decision::Resume, Some(job)) => {
            plan.resumes_job = Some(job.id);
            if job.state != JobState::Queued {
                plan.chunks_to_send = job.chunks_total.saturating_sub(job.chunks_done);
                plan.sessions_needed = u64::from(job.session.is_none());
            }
            // A job under way is committed to its upload: dedupe no longer applies.
            if job.state != JobState::Queued {
                return Ok(true);
            }
        }
        _ => {}
    }
    if config.upload.dedupe && !req.force {
        let found = find_duplicate(
            store,
            req.path,
            &req.identity,
            &req.file_context,
            req.is_adapter,
            cancel,
        )
        .await;
        match found {
            Ok(Some(dup)) => {
                plan.already_imported = true;
                plan.duplicate_of = Some(dup.original.duplicate_of.unwrap_or(dup.original.id));
                plan.model_id = dup.original.model_id.filter(|m| !m.is_empty());
            }
            Ok(None) => {}
            Err(DedupeError::Cancelled) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

fn print_text(plan: &Plan) {
    let name = Escaped::str(&plan.path);
    match (&plan.preflight.error, &plan.preflight.summary) {
        (Some(e), _) => println!("{name}: {}", Escaped::str(e)),
        (None, Some(s)) => println!(
            "{name}: pre-flight passed ({} members, {} regular files)",
            s.members, s.regular_files
        ),
        (None, None) => {}
    }
    if !plan.preflight.ok {
        return;
    }
    println!(
        "plan: {} bytes in {} chunks of {} bytes; {} to send in {} new session(s)",
        plan.size, plan.chunks, plan.chunk_size, plan.chunks_to_send, plan.sessions_needed
    );
    if let Some(id) = plan.resumes_job {
        println!("resumes job {id}");
    }
    if plan.already_imported {
        let by = match (plan.job_id, plan.duplicate_of) {
            (Some(id), _) => format!("as job {id}"),
            (None, Some(of)) => format!("(same bytes as job {of})"),
            _ => String::new(),
        };
        println!(
            "already imported {by}; model id {}: nothing would be uploaded",
            plan.model_id.as_deref().unwrap_or("-")
        );
    }
    if let Some(note) = &plan.note {
        println!("note: {}", Escaped::str(note));
    }
}
