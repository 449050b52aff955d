//! How `modelferry upload` ends: the message on stderr, what stdout holds
//! (the model id, or with `--json` exactly one JSON object), and the exit
//! code, for each way the command can end.
//!
//! With `--json`: exit 0 prints the receipt (plus `path`), exit 1 the error
//! receipt (plus `path`), exits 3, 4, 5, 6 and 130 print `job_id`, `path`,
//! `state`, `error` and `exit_code`; exit 2 prints nothing on stdout. With
//! `telemetry.log_format = "json"` the messages on stderr are log events, so
//! stderr holds nothing but JSON.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use super::UsageError;
use crate::config::{Config, ConfigError};
use crate::escaped::Escaped;
use crate::exit;
use crate::filing::{ErrorReceipt, SuccessReceipt};
use crate::job::{Job, JobId};
use crate::store::Store;
use crate::telemetry;
use crate::upload::Outcome;

/// How the work of the command ended.
#[derive(Debug)]
pub enum Ending {
    /// The file was imported before (nothing sent).
    AlreadyImported,
    /// The job ran to this outcome.
    Ran(Outcome),
    /// `--timeout` ran out first.
    TimedOut(Duration),
}

/// Where the command's messages go.
pub struct Say {
    pub quiet: bool,
    /// Log events instead of plain lines on stderr.
    pub json_logs: bool,
    /// `--json`: one JSON object on stdout.
    pub json_out: bool,
}

impl Say {
    /// A note on how things go; none with `--quiet`.
    pub fn info(&self, msg: &str) {
        if self.quiet {
            return;
        }
        if self.json_logs {
            tracing::info!("{msg}");
        } else {
            telemetry::eprint_at(tracing::Level::INFO, msg);
        }
    }

    /// Why the command did not succeed; always shown.
    pub fn error(&self, msg: &str) {
        if self.json_logs {
            tracing::error!("{msg}");
        } else {
            telemetry::eprint_at(tracing::Level::ERROR, msg);
        }
    }

    fn stdout(&self, value: Value) {
        if self.json_out {
            println!("{value}");
        }
    }
}

/// The object printed on exits 3, 4, 5, 6 and 130.
fn short_report(job: Option<&Job>, path: &Path, error: &str, code: u8) -> Value {
    json!({
        "job_id": job.map(|j| j.id),
        "path": path.display().to_string(),
        "state": job.map(|j| j.state.as_str()),
        "error": error,
        "exit_code": code,
    })
}

/// A receipt as a JSON object with `path` added.
fn with_path(receipt: impl serde::Serialize, path: &Path) -> Value {
    let mut v = serde_json::to_value(receipt).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut v {
        map.insert("path".into(), Value::String(path.display().to_string()));
    }
    v
}

/// Prints what the ending calls for and returns the exit code. An error of
/// usage or configuration comes back as the error (stdout stays empty and
/// `main` prints it), unless logs are JSON, where it is logged here.
pub async fn finish(
    config: &Config,
    say: &Say,
    path: &Path,
    job_id: Option<JobId>,
    ended: anyhow::Result<Ending>,
    note: Option<String>,
) -> anyhow::Result<u8> {
    let shown = Escaped::path(path);
    let ended = match ended {
        Ok(ended) => ended,
        Err(e) => {
            let usage = e.chain().any(|c| {
                c.downcast_ref::<UsageError>().is_some()
                    || c.downcast_ref::<ConfigError>().is_some()
            });
            let code = if usage {
                exit::USAGE
            } else {
                exit::LOCAL_ERROR
            };
            if !usage {
                let job = match job_id {
                    Some(id) => read_job(config, id).await,
                    None => None,
                };
                say.stdout(short_report(job.as_ref(), path, &format!("{e:#}"), code));
            }
            if say.json_logs {
                say.error(&format!("{e:#}"));
                return Ok(code);
            }
            return Err(e);
        }
    };
    let job = match job_id {
        Some(id) => read_job(config, id).await,
        None => None,
    };
    let id = job_id.map_or("-".to_string(), |i| i.to_string());
    let code = match ended {
        Ending::AlreadyImported | Ending::Ran(Outcome::Succeeded { .. }) => {
            let Some(job) = job else {
                say.error(&format!(
                    "{shown}: job {id} is not in the state database any more"
                ));
                return Ok(exit::LOCAL_ERROR);
            };
            if matches!(ended, Ending::AlreadyImported) {
                say.info(&format!(
                    "{shown}: already imported (job {}); not uploading again (--force imports it again)",
                    job.id
                ));
            } else if let Some(original) = job.duplicate_of {
                say.info(&format!(
                    "{shown}: already imported by job {original} (same size and sha256); not uploaded again (job {}; --force imports it again)",
                    job.id
                ));
            } else {
                say.info(&format!("{shown}: imported (job {})", job.id));
            }
            if say.json_out {
                say.stdout(with_path(SuccessReceipt::of(&job), path));
            } else {
                println!("{}", job.model_id.as_deref().unwrap_or_default());
            }
            exit::SUCCESS
        }
        Ending::Ran(Outcome::Failed(error)) => {
            // Pre-flight rejected it: nothing was imported, nothing failed there.
            let what = match job.as_ref().and_then(|j| j.error_stage) {
                Some(crate::job::Stage::Preflight) => "not imported",
                _ => "import failed",
            };
            say.error(&format!(
                "{shown}: {what} (job {id}): {}",
                Escaped::str(&error)
            ));
            if let Some(job) = &job {
                say.stdout(with_path(ErrorReceipt::of(job), path));
            }
            exit::IMPORT_FAILED
        }
        Ending::Ran(Outcome::Cancelled) => {
            say.error(&format!(
                "{shown}: job {id} was cancelled (modelferry cancel); nothing more was sent. Running the same command again starts a new job."
            ));
            if let Some(job) = &job {
                say.stdout(with_path(ErrorReceipt::of(job), path));
            }
            exit::IMPORT_FAILED
        }
        Ending::Ran(Outcome::AuthRejected(msg)) => {
            say.error(&format!(
                "{shown}: {}. Nothing was failed or deleted; fix the key and run the same command again to resume job {id}.",
                Escaped::str(&msg)
            ));
            say.stdout(short_report(job.as_ref(), path, &msg, exit::KEY_REJECTED));
            exit::KEY_REJECTED
        }
        Ending::Ran(Outcome::Busy) => {
            let msg = format!("job {id} is being run by another modelferry process (the daemon, or another `upload`); not touching it");
            say.error(&format!("{shown}: {msg}"));
            say.stdout(short_report(job.as_ref(), path, &msg, exit::BUSY));
            exit::BUSY
        }
        Ending::Ran(Outcome::Interrupted) => {
            let progress = job
                .as_ref()
                .map(|j| {
                    format!(
                        " ({}/{} chunks acknowledged)",
                        j.chunks_done, j.chunks_total
                    )
                })
                .unwrap_or_default();
            say.error(&format!(
                "{shown}: interrupted; run the same command again to resume job {id}{progress}"
            ));
            say.stdout(short_report(
                job.as_ref(),
                path,
                "interrupted",
                exit::INTERRUPTED,
            ));
            exit::INTERRUPTED
        }
        Ending::TimedOut(limit) => {
            let mut msg = format!(
                "gave up after {} (--timeout)",
                humantime::format_duration(limit)
            );
            if let Some(n) = &note {
                msg.push_str(&format!("; last problem: {n}"));
            }
            let state = job
                .as_ref()
                .map(|j| {
                    format!(
                        "; job {} is kept as it is ({}): run the same command again to resume it",
                        j.id, j.state
                    )
                })
                .unwrap_or_default();
            say.error(&format!("{shown}: {}{state}", Escaped::str(&msg)));
            say.stdout(short_report(job.as_ref(), path, &msg, exit::GAVE_UP));
            exit::GAVE_UP
        }
    };
    Ok(code)
}

async fn read_job(config: &Config, id: JobId) -> Option<Job> {
    let store = Store::from_config_without_migrating(config).await.ok()??;
    store.job(id).await.ok()
}
