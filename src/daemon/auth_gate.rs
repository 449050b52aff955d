//! The pause of all uploads while the platform rejects the API key.
//!
//! [`AuthGate`] owns the pause only; whether the key is rejected, as
//! `/readyz` and the `api_key_rejected` gauge tell it, is what the platform
//! client last saw ([`PlatformStats`](crate::metrics::PlatformStats)). It
//! promises: a rejection pauses
//! every upload (no job starts; files stay in their drop folders) for the
//! retry period, after which the key is tried again; SIGHUP ([`reload_key`])
//! re-reads the key and lifts the pause at once; a job that reaches a final
//! answer shows the key works and lifts it too. A rejection of a request made
//! before the last key reload says nothing about the new key: it does not
//! pause, and its job is simply queued again.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info};

use crate::config::Config;
use crate::platform::PlatformClient;

/// What a rejected key means for the job that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The request predates the last key reload: queue the job again now.
    Stale,
    /// Uploads are paused until the key is tried again.
    Paused,
}

pub struct AuthGate {
    paused_until: Option<Instant>,
    /// When SIGHUP last replaced the key.
    key_reloaded_at: Option<Instant>,
    /// How long a rejection pauses uploads.
    wait: Duration,
}

impl AuthGate {
    /// A gate that pauses for `retry_max` (at least a second).
    pub fn new(retry_max: Duration) -> Self {
        AuthGate {
            paused_until: None,
            key_reloaded_at: None,
            wait: retry_max.max(Duration::from_secs(1)),
        }
    }

    /// Whether jobs must not start now.
    pub fn is_paused(&self) -> bool {
        self.paused_until.is_some()
    }

    /// The platform rejected the key for a job whose run began at `started`
    /// (`None`: unknown, taken as before any reload).
    pub fn rejected(&mut self, started: Option<Instant>, message: &str) -> Rejection {
        if self
            .key_reloaded_at
            .is_some_and(|k| started.is_none_or(|s| k >= s))
        {
            return Rejection::Stale;
        }
        if self.paused_until.is_none() {
            error!(
                error = %message,
                retry_in = ?self.wait,
                "the platform rejected the API key: all uploads are paused and every file stays in its drop folder; fix the key (SIGHUP re-reads it)"
            );
        }
        self.paused_until = Some(Instant::now() + self.wait);
        Rejection::Paused
    }

    /// A job reached a final answer, so the key was taken.
    pub fn accepted(&mut self) {
        self.paused_until = None;
    }

    /// A new key is in place: uploads resume now.
    pub fn key_reloaded(&mut self) {
        self.paused_until = None;
        self.key_reloaded_at = Some(Instant::now());
    }

    /// Ends a pause whose period is over.
    pub fn tick(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|t| t <= now) {
            info!("trying the API key again");
            self.paused_until = None;
        }
    }
}

/// SIGHUP: re-reads the key (on the blocking pool: it may read a file) and
/// gives it to `platform`; an unreadable key keeps the old one.
pub async fn reload_key(gate: &mut AuthGate, config: Arc<Config>, platform: &PlatformClient) {
    let read = tokio::task::spawn_blocking(move || config.load_api_key()).await;
    match read {
        Ok(Ok(key)) => {
            platform.set_key(key);
            gate.key_reloaded();
            info!("SIGHUP: API key re-read; uploads resume");
        }
        Ok(Err(e)) => error!(error = %e, "SIGHUP: cannot re-read the API key; keeping the old one"),
        Err(e) => error!(error = %e, "SIGHUP: reading the API key failed; keeping the old one"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    fn gate() -> AuthGate {
        AuthGate::new(WAIT)
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejection_pauses_for_the_retry_period_then_tries_again() {
        let mut g = gate();
        assert!(!g.is_paused());
        let started = Instant::now();
        assert_eq!(g.rejected(Some(started), "401"), Rejection::Paused);
        assert!(g.is_paused());
        tokio::time::advance(WAIT - Duration::from_millis(1)).await;
        g.tick(Instant::now());
        assert!(g.is_paused());
        tokio::time::advance(Duration::from_millis(1)).await;
        g.tick(Instant::now());
        assert!(!g.is_paused());
        g.accepted();
        assert!(!g.is_paused());
    }

    #[tokio::test(start_paused = true)]
    async fn another_rejection_while_paused_extends_the_pause() {
        let mut g = gate();
        g.rejected(Some(Instant::now()), "401");
        tokio::time::advance(WAIT / 2).await;
        g.rejected(Some(Instant::now()), "401");
        tokio::time::advance(WAIT / 2).await;
        g.tick(Instant::now());
        assert!(g.is_paused());
        tokio::time::advance(WAIT / 2).await;
        g.tick(Instant::now());
        assert!(!g.is_paused());
    }

    #[test]
    fn the_retry_period_is_at_least_a_second() {
        let g = AuthGate::new(Duration::from_millis(200));
        assert_eq!(g.wait, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reloaded_key_lifts_the_pause_at_once() {
        let mut g = gate();
        g.rejected(Some(Instant::now()), "401");
        g.key_reloaded();
        assert!(!g.is_paused());
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejection_of_a_request_made_before_the_reload_does_not_pause() {
        let mut g = gate();
        let before = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        g.key_reloaded();
        // Started before the reload, or at the same instant, or unknown.
        assert_eq!(g.rejected(Some(before), "401"), Rejection::Stale);
        assert_eq!(g.rejected(Some(Instant::now()), "401"), Rejection::Stale);
        assert_eq!(g.rejected(None, "401"), Rejection::Stale);
        assert!(!g.is_paused());
        // A request with the new key that is rejected does pause.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(g.rejected(Some(Instant::now()), "401"), Rejection::Paused);
        assert!(g.is_paused());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_reload_an_unknown_start_pauses() {
        let mut g = gate();
        assert_eq!(g.rejected(None, "401"), Rejection::Paused);
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_answer_lifts_the_pause() {
        let mut g = gate();
        g.rejected(Some(Instant::now()), "401");
        g.accepted();
        assert!(!g.is_paused());
    }
}
