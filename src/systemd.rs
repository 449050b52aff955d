//! The daemon's conversation with systemd (`Type=notify`): READY once
//! recovery is done, a STATUS line, WATCHDOG pings, STOPPING on shutdown.
//! Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Tells systemd the service is ready (`READY=1`).
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// Sets the status line `systemctl status` shows (`STATUS=`).
pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// Pets the watchdog (`WATCHDOG=1`).
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Tells systemd the service is stopping (`STOPPING=1`).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often to ping the watchdog: half of `WatchdogSec`, when it is set
/// for this process.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 2))
    } else {
        None
    }
}
