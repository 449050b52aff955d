//! SIGHUP re-reads `upload.max_rate` from the configuration file (the rest
//! of the file takes a restart). An unreadable or invalid file keeps the
//! rate in force.

use std::path::Path;

use tracing::{error, info};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::platform::PlatformClient;
use crate::shown::rate_limit;

/// Re-reads `upload.max_rate` from `file` and applies it to every upload
/// through `platform` at once (bodies being sent included).
pub async fn max_rate(file: &Path, platform: &PlatformClient, metrics: &Metrics) {
    let path = file.to_path_buf();
    let read = tokio::task::spawn_blocking(move || Config::load(&path)).await;
    match read {
        Ok(Ok(config)) => {
            let rate = config.upload.max_rate;
            if rate != platform.max_rate() {
                platform.set_max_rate(rate);
                metrics.max_rate.set(rate as i64);
                info!(
                    max_rate = rate,
                    "SIGHUP: upload.max_rate is now {}",
                    rate_limit(rate)
                );
            }
        }
        Ok(Err(e)) => {
            error!(error = %e, "SIGHUP: cannot re-read upload.max_rate; keeping {}", rate_limit(platform.max_rate()))
        }
        Err(e) => error!(error = %e, "SIGHUP: reading the configuration failed"),
    }
}
