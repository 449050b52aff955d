//! `modelferry status`: the jobs in the state database, as a table or JSON.

use std::time::SystemTime;

use anyhow::Context;
use indicatif::HumanBytes;
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::config::Config;
use crate::escaped::Escaped;
use crate::exit;
use crate::job::Job;
use crate::shown::{rate_limit, rfc3339};
use crate::store::{JobQuery, Store};

/// One job as `status --json` prints it.
#[derive(Debug, Serialize)]
pub struct JobView {
    /// The job's id.
    pub id: i64,
    /// The source file.
    pub path: String,
    /// The file's name, as sent to the platform.
    pub file_name: String,
    /// The job's state (`queued`, `uploading`, ...).
    pub state: String,
    /// Chunks acknowledged (all of them once the upload is complete).
    pub chunks_done: u64,
    /// Chunks the file is cut into.
    pub chunks_total: u64,
    /// Bytes of the chunks acknowledged.
    pub bytes_done: u64,
    /// The file's size.
    pub bytes_total: u64,
    /// The current import session, if any.
    pub session_id: Option<String>,
    /// When that session expires (RFC 3339), if the platform said.
    pub session_expires_at: Option<String>,
    /// The platform's model id for the import.
    pub model_id: Option<String>,
    /// The dock status id polled after `complete`.
    pub dock_status_id: Option<String>,
    /// Lowercase hex SHA-256 of the whole file, once known.
    pub sha256: Option<String>,
    /// The reason the job failed, or a passing problem while it moves.
    pub error: Option<String>,
    /// The step that failed.
    pub error_stage: Option<String>,
    /// The platform's HTTP status with the failure, if it answered.
    pub http_status: Option<u16>,
    /// The platform's message with the failure, if it gave one.
    pub platform_message: Option<String>,
    /// Passing problems noted so far (retries, a rejected key).
    pub attempts: u32,
    /// When the next retry is due (RFC 3339).
    pub next_retry_at: Option<String>,
    /// The platform's `fileContext` for the import.
    pub file_context: String,
    /// Whether the import is an adapter.
    pub is_adapter: bool,
    /// When the job was made (RFC 3339, as every time here).
    pub created_at: String,
    /// When the job last changed.
    pub updated_at: String,
    /// When its first session started.
    pub started_at: Option<String>,
    /// When it finished.
    pub finished_at: Option<String>,
    /// Daemon jobs: `pending`, `done` or `skipped` once finished.
    pub filing: Option<String>,
    /// Where the file (or, for `delete`/`keep`, its receipt) is filed.
    pub filed_to: Option<String>,
    /// The last filing error, while filing keeps failing.
    pub filing_error: Option<String>,
    /// A duplicate (dedupe): the job that imported the same bytes.
    pub duplicate_of: Option<i64>,
    /// Fleet mode: `Some`, holding the instance that holds the job (or
    /// held it last), `null` for a job never held. Left out with SQLite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<Option<String>>,
}

impl JobView {
    /// The job as `status` shows it; `fleet`: the store is the fleet's
    /// (every job then has an `instance`, `null` until one holds it).
    pub fn of(j: &Job, fleet: bool) -> Self {
        let done = j.state == crate::job::JobState::Succeeded
            || matches!(
                j.state,
                crate::job::JobState::Completing | crate::job::JobState::Importing
            );
        JobView {
            id: j.id,
            path: j.path.display().to_string(),
            file_name: j.file_name.clone(),
            state: j.state.to_string(),
            chunks_done: if done { j.chunks_total } else { j.chunks_done },
            chunks_total: j.chunks_total,
            bytes_done: if done { j.size() } else { j.bytes_done },
            bytes_total: j.size(),
            session_id: j.session.as_ref().map(|s| s.session_id.clone()),
            session_expires_at: j.session.as_ref().and_then(|s| s.expires_at).map(rfc3339),
            model_id: j.model_id().map(str::to_string),
            dock_status_id: j.dock_status_id.clone(),
            sha256: j.sha256.clone(),
            error: j.error.clone(),
            error_stage: j.error_stage.map(|s| s.as_str().to_string()),
            http_status: j.http_status,
            platform_message: j.platform_message.clone(),
            attempts: j.attempts,
            next_retry_at: j.next_retry_at.map(rfc3339),
            file_context: j.file_context.clone(),
            is_adapter: j.is_adapter,
            created_at: rfc3339(j.created_at),
            updated_at: rfc3339(j.updated_at),
            started_at: j.started_at.map(rfc3339),
            finished_at: j.finished_at.map(rfc3339),
            filing: j.filing.as_ref().map(|f| f.state.as_str().to_string()),
            filed_to: j
                .filing
                .as_ref()
                .and_then(|f| f.dest.as_ref())
                .map(|d| d.display().to_string()),
            filing_error: j.filing_error.clone(),
            duplicate_of: j.duplicate_of,
            instance: fleet.then(|| j.instance.clone()),
        }
    }
}

/// Opens the state database if it exists: a missing state folder or
/// database means no jobs yet. Anything else that stops the look (no
/// permission on the folder, a file where a folder should be) is an error:
/// "no jobs" would hide it.
pub async fn open_existing(config: &Config) -> anyhow::Result<Option<Store>> {
    if config.state.url.is_some() {
        // Fleet mode: the shared database holds every instance's jobs.
        // Never migrated here: a read (or an operator's change) writes
        // nothing else to the shared database.
        return Store::from_config_without_migrating(config).await;
    }
    let db = config.database_path();
    let exists = db
        .try_exists()
        .with_context(|| format!("cannot open the state database {}", Escaped::path(&db)))?;
    if !exists {
        return Ok(None);
    }
    Ok(Some(Store::open(config.state.dir.clone()).await?))
}

/// Runs `modelferry status`, returning the exit status.
pub async fn run(config: &Config, args: &StatusArgs) -> anyhow::Result<u8> {
    let db = config.database_path();
    let store = open_existing(config).await?;
    let exists = store.is_some();
    let query = JobQuery {
        ids: args.ids.clone(),
        states: args.states.clone(),
        since: args.since.map(|d| {
            SystemTime::now()
                .checked_sub(d)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        }),
        limit: args.limit,
    };
    let jobs = match &store {
        Some(store) => store.list(&query).await?,
        None => Vec::new(),
    };
    // Like `ls` with a name that is not there: what exists is shown, the
    // rest is named on stderr, exit 2.
    let missing: Vec<i64> = args
        .ids
        .iter()
        .filter(|id| !jobs.iter().any(|j| j.id == **id))
        .copied()
        .collect();
    let code = if missing.is_empty() {
        exit::SUCCESS
    } else {
        for id in &missing {
            eprintln!("job {id}: not in the state database (never made, or pruned)");
        }
        exit::USAGE
    };
    let json = args.json;
    let fleet = store.as_ref().is_some_and(|s| s.instance().is_some());
    let views: Vec<JobView> = jobs.iter().map(|j| JobView::of(j, fleet)).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(code);
    }
    if !exists {
        match &config.state.url {
            // The URL carries no password (refused when the config is read).
            Some(url) => println!(
                "no jobs yet: the fleet database {url} has no schema (the first `run` makes it)"
            ),
            None => println!("no jobs yet: {} does not exist", Escaped::path(&db)),
        }
        return Ok(code);
    }
    if let (true, Some(store)) = (views.is_empty(), &store) {
        // The store's own name: the fleet's database, or the SQLite file.
        println!("no matching jobs in {}", Escaped::path(store.path()));
        return Ok(code);
    }
    let mut counts: Vec<String> = Vec::new();
    for st in crate::job::JobState::ALL {
        let n = views.iter().filter(|v| v.state == st.as_str()).count();
        if n > 0 {
            counts.push(format!("{n} {st}"));
        }
    }
    let noun = if views.len() == 1 { "job" } else { "jobs" };
    println!("{} {noun}: {}", views.len(), counts.join(", "));
    println!(
        "upload rate limit (upload.max_rate): {}",
        rate_limit(config.upload.max_rate)
    );
    println!(
        "{:>5}  {:<10}  {:>13}  {:>23}  {:<40}  FILE",
        "ID", "STATE", "CHUNKS", "BYTES", "MODEL ID"
    );
    for v in &views {
        println!(
            "{:>5}  {:<10}  {:>13}  {:>23}  {:<40}  {}",
            v.id,
            v.state,
            format!("{}/{}", v.chunks_done, v.chunks_total),
            format!("{}/{}", HumanBytes(v.bytes_done), HumanBytes(v.bytes_total)),
            v.model_id.as_deref().unwrap_or("-"),
            Escaped::str(&v.path)
        );
        if let Some(of) = v.duplicate_of {
            println!("{:>7}duplicate of job {of}: not uploaded again", "");
        }
        if let Some(ds) = &v.dock_status_id {
            println!("{:>7}dock status: {}", "", Escaped::str(ds));
        }
        if let Some(Some(i)) = &v.instance {
            println!("{:>7}instance: {}", "", Escaped::str(i));
        }
        if let Some(e) = &v.filing_error {
            println!("{:>7}{}", "", Escaped::str(e));
        }
        if let Some(e) = &v.error {
            // Text lines: an error may quote a file name (JSON escapes its own).
            let e = Escaped::str(e);
            match &v.next_retry_at {
                Some(at) => println!("{:>7}error: {e} (next try {at})", ""),
                None => println!("{:>7}error: {e}", ""),
            }
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::job::NewJob;

    use crate::store::SqliteStore;

    /// A job as the store makes it: queued, never held.
    fn queued_job() -> Job {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        let new = NewJob {
            chunk_size: 1,
            watch_dir: Some(PathBuf::from("/drop")),
            ..NewJob::for_test("/drop/m.tar", 1)
        };
        let id = store.admit(&new).unwrap();
        store.job(id).unwrap()
    }

    #[test]
    fn fleet_jobs_always_carry_an_instance_and_sqlite_ones_never() {
        let mut job = queued_job();
        assert_eq!(job.instance, None);
        let fleet = serde_json::to_value(JobView::of(&job, true)).unwrap();
        assert_eq!(fleet.get("instance"), Some(&serde_json::Value::Null));
        let sqlite = serde_json::to_value(JobView::of(&job, false)).unwrap();
        assert_eq!(sqlite.get("instance"), None, "{sqlite}");
        job.instance = Some("host-a".into());
        let held = serde_json::to_value(JobView::of(&job, true)).unwrap();
        assert_eq!(held["instance"], "host-a");
    }
}
