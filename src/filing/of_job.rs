//! Receipts made from a finished job, as the daemon files them and
//! `upload --json` prints them.

use super::{ErrorReceipt, SuccessReceipt};
use crate::job::Job;
use crate::shown::rfc3339;

impl SuccessReceipt {
    /// The receipt of a succeeded job.
    pub fn of(job: &Job) -> Self {
        SuccessReceipt {
            model_id: job.model_id.clone().unwrap_or_default(),
            dock_status_id: job.dock_status_id.clone().unwrap_or_default(),
            session_id: job
                .session
                .as_ref()
                .map(|s| s.session_id.clone())
                .unwrap_or_default(),
            size: job.size(),
            sha256: job.sha256.clone().unwrap_or_default(),
            // A duplicate sent nothing.
            chunks: match job.duplicate_of {
                Some(_) => 0,
                None => job.chunks_total,
            },
            status: "SUCCESS".into(),
            started_at: rfc3339(job.started_at.unwrap_or(job.created_at)),
            finished_at: rfc3339(job.finished_at.unwrap_or(job.updated_at)),
            file: job.file_name.clone(),
            job_id: job.id,
            duplicate_of: job.duplicate_of,
        }
    }
}

impl ErrorReceipt {
    /// The error receipt of a failed or cancelled job.
    pub fn of(job: &Job) -> Self {
        ErrorReceipt {
            error: job.error.clone().unwrap_or_default(),
            stage: job
                .error_stage
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            http_status: job.http_status,
            platform_message: job.platform_message.clone(),
            model_id: job.model_id().map(str::to_string),
            file: job.file_name.clone(),
            job_id: job.id,
            failed_at: rfc3339(job.finished_at.unwrap_or(job.updated_at)),
        }
    }
}
