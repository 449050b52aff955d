//! The end of a job's life on the platform: `complete`, then polling the
//! platform's dock status until it says SUCCESS or FAILED. The first poll
//! comes after `upload.poll_interval` (short: a small import is often done
//! at once), then the interval doubles up to `poll_interval_max`.

use std::time::SystemTime;

use tracing::info;

use super::{JobCtx, StepError};
use crate::job::{Failure, Job, Stage};
use crate::platform::ImportStatus;
use crate::store::StoreError;

impl JobCtx {
    pub(super) async fn complete(&self, job: &Job) -> Result<(), StepError> {
        let session = job.session.clone().ok_or_else(|| StoreError::Corrupt {
            job: job.id,
            detail: "completing without a session".into(),
        })?;
        let info = self
            .retry(|| self.platform.complete(&session.session_id))
            .await?;
        self.store
            .set_importing(
                self.id,
                &self.hold,
                info.dock_status_id.as_str(),
                info.model_id.as_ref().map(|m| m.as_str()),
            )
            .await?;
        info!(dock_status_id = %info.dock_status_id, status = ?info.status, "import completed; the platform is importing");
        Ok(())
    }

    pub(super) async fn poll_import(&self, job: &Job) -> Result<(), StepError> {
        let dock_id = job
            .dock_status_id
            .clone()
            .ok_or_else(|| StoreError::Corrupt {
                job: job.id,
                detail: "importing without a dock status id".into(),
            })?;
        // The first poll after `poll_interval` (short: a small import is
        // often done at once), then doubling up to `poll_interval_max`.
        let mut interval = self.settings.poll_interval;
        loop {
            self.sleep(interval).await?;
            interval = (interval * 2).min(self.settings.poll_interval_max.max(interval));
            let st = self.retry(|| self.platform.dock_status(&dock_id)).await?;
            match st.status {
                ImportStatus::InProgress => {}
                ImportStatus::Success => {
                    self.store
                        .succeed(
                            self.id,
                            &self.hold,
                            st.model_id.as_ref().map(|m| m.as_str()),
                        )
                        .await?;
                    if let Some(started) = job.started_at {
                        let secs = SystemTime::now()
                            .duration_since(started)
                            .unwrap_or_default()
                            .as_secs_f64();
                        self.metrics.import_duration.observe(secs);
                    }
                    info!(dock_status_id = %dock_id, "import succeeded");
                    return Ok(());
                }
                ImportStatus::Failed => {
                    let message = st.message.clone().map(String::from);
                    let error = match &message {
                        Some(m) => format!("the platform reports the import FAILED: {m}"),
                        None => "the platform reports the import FAILED".to_string(),
                    };
                    self.fail(Failure {
                        error,
                        stage: Stage::Import,
                        http_status: None,
                        platform_message: message,
                    })
                    .await?;
                    return Ok(());
                }
            }
        }
    }
}
