//! `modelferry prune`: forget finished jobs older than a duration.
//!
//! What recognises a file already imported stays in the database (see
//! [`Store::prune`](crate::store::Store::prune)), so neither a re-run of
//! `upload` nor a re-drop imports it again; `status` no longer lists them.

use std::time::SystemTime;

use super::status::open_existing;
use super::UsageError;
use crate::cli::PruneArgs;
use crate::config::{parse_retain, Config};
use crate::exit;

/// Runs `modelferry prune`, returning the exit status.
pub async fn run(config: &Config, args: &PruneArgs) -> anyhow::Result<u8> {
    let (older_than, from) = match &args.older_than {
        Some(text) => (
            parse_retain(text).map_err(|e| UsageError(format!("--older-than: {e}")))?,
            "--older-than",
        ),
        None => (config.state.retain, "state.retain"),
    };
    let Some(older_than) = older_than else {
        println!("nothing pruned: {from} is \"0\" (never prune)");
        return Ok(exit::SUCCESS);
    };
    let Some(store) = open_existing(config).await? else {
        println!("nothing to prune: no jobs yet");
        return Ok(exit::SUCCESS);
    };
    let cutoff = SystemTime::now()
        .checked_sub(older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let n = store.prune(cutoff).await?;
    let noun = if n == 1 { "job" } else { "jobs" };
    println!(
        "pruned {n} finished {noun} older than {} ({from})",
        human(older_than)
    );
    Ok(exit::SUCCESS)
}

/// `90d` rather than humantime's months and days.
fn human(d: std::time::Duration) -> String {
    const DAY: u64 = 24 * 3600;
    let secs = d.as_secs();
    if secs >= DAY && secs.is_multiple_of(DAY) && d.subsec_nanos() == 0 {
        format!("{}d", secs / DAY)
    } else {
        humantime::format_duration(d).to_string()
    }
}
