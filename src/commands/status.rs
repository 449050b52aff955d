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
use crate::store::{JobQuery, Store};

/// One job as `status --json` prints it.
#[derive(Debug, Serialize)]
pub struct JobView {
    pub id: i64,
    pub path: String,
    pub file_name: String,
    pub state: String,
    pub chunks_done: u64,
    pub chunks_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub session_id: Option<String>,
    pub session_expires_at: Option<String>,
    pub model_id: Option<String>,
    pub dock_status_id: Option<String>,
    pub sha256: Option<String>,
    pub error: Option<String>,
    pub error_stage: Option<String>,
    pub http_status: Option<u16>,
    pub platform_message: Option<String>,
    pub attempts: u32,
    pub next_retry_at: Option<String>,
    pub file_context: String,
    pub is_adapter: bool,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Daemon jobs: `pending`, `done` or `skipped` once finished.
    pub filing: Option<String>,
    pub filed_to: Option<String>,
    pub filing_error: Option<String>,
    /// A duplicate (dedupe): the job that imported the same bytes.
    pub duplicate_of: Option<i64>,
    /// Fleet mode: the instance holding the job (or that held it last).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// `upload.max_rate` as `status` shows it: `"40.00 MiB/s"` or `"none"`.
pub fn rate_limit(rate: u64) -> String {
    if rate == 0 {
        "none".into()
    } else {
        format!("{}/s", HumanBytes(rate))
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl From<&Job> for JobView {
    fn from(j: &Job) -> Self {
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
            model_id: j.model_id.clone().filter(|m| !m.is_empty()),
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
            instance: j.instance.clone(),
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
        return Ok(Some(Store::from_config(config).await?));
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
    let views: Vec<JobView> = jobs.iter().map(JobView::from).collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(code);
    }
    if !exists {
        println!("no jobs yet: {} does not exist", Escaped::path(&db));
        return Ok(code);
    }
    if views.is_empty() {
        println!("no matching jobs in {}", Escaped::path(&db));
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
        if let Some(i) = &v.instance {
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
