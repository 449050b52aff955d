//! The emulator's shared state: options, the accepted API key, fault rates,
//! request counters and the sessions table. Locks are `std` mutexes held for
//! short, await-free sections; disk work under the sessions lock happens only
//! on blocking threads (see [`Emulator::blocking`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode};
use tokio_util::task::TaskTracker;

use super::options::{roll, EmulatorOptions, FaultRates};
use super::persist::{LoadedSession, SessionMeta};
use super::report::{ChunkReport, EndpointCounts, FaultCounts, Report, SessionReport};
use super::wire::{ApiError, ImportStatus};

/// One emulator instance, shared by every handler through an `Arc`.
pub(crate) struct Emulator {
    pub opts: EmulatorOptions,
    /// Where sessions live on disk; `None` in discard mode (nothing on disk).
    pub data_dir: Option<PathBuf>,
    api_key: Mutex<Option<String>>,
    faults: Mutex<FaultRates>,
    pub counters: Counters,
    sessions: Mutex<Sessions>,
    /// Background assemblies; the server waits for them when it stops.
    pub tracker: TaskTracker,
}

/// The sessions table.
#[derive(Default)]
pub(crate) struct Sessions {
    pub by_id: HashMap<String, Session>,
    /// Dock status id -> session id.
    pub by_dock: HashMap<String, String>,
    pub next_seq: u64,
}

/// One session in memory: its persisted metadata plus the chunk table.
pub(crate) struct Session {
    pub meta: SessionMeta,
    pub chunks: BTreeMap<u64, ChunkReport>,
    pub stored_posts: u64,
    pub duplicates: u64,
}

impl Session {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.meta.expired || now_ms >= self.meta.expires_at_ms
    }

    /// The status a dock-status answer carries without counting a poll.
    pub fn visible_status(&self) -> ImportStatus {
        match &self.meta.import {
            Some(imp) if imp.revealed => imp
                .outcome
                .as_ref()
                .map_or(ImportStatus::InProgress, |o| o.status),
            _ => ImportStatus::InProgress,
        }
    }

    fn report(&self, now_ms: u64) -> SessionReport {
        let import = self.meta.import.as_ref();
        let outcome = import.and_then(|i| i.outcome.as_ref());
        SessionReport {
            session_id: self.meta.session_id.clone(),
            model_id: self.meta.model_id.clone(),
            start: self.meta.start.clone(),
            started_at: format_ms(self.meta.started_at_ms),
            expires_at: format_ms(self.meta.expires_at_ms),
            expired: self.is_expired(now_ms),
            chunks: self.chunks.clone(),
            chunk_posts_stored: self.stored_posts,
            duplicates: self.duplicates,
            completed: import.is_some(),
            complete_calls: self.meta.complete_calls,
            dock_status_id: import.map(|i| i.dock_status_id.clone()),
            dock_status_polls: import.map_or(0, |i| i.polls),
            assembled_size: outcome.and_then(|o| o.assembled_size),
            assembled_sha256: outcome.and_then(|o| o.assembled_sha256.clone()),
            status: import.map(|i| {
                i.outcome
                    .as_ref()
                    .map_or(ImportStatus::InProgress, |o| o.status)
            }),
            message: outcome.and_then(|o| o.message.clone()),
        }
    }
}

impl From<LoadedSession> for Session {
    fn from(l: LoadedSession) -> Self {
        Self {
            meta: l.meta,
            chunks: l.chunks,
            stored_posts: l.stored_posts,
            duplicates: l.duplicates,
        }
    }
}

/// The platform endpoints, for counting.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint {
    Start,
    Chunk,
    Complete,
    DockStatus,
}

/// Request and fault counters; atomics so counting never contends with the
/// sessions lock.
#[derive(Default)]
pub(crate) struct Counters {
    start: AtomicU64,
    chunk: AtomicU64,
    complete: AtomicU64,
    dock_status: AtomicU64,
    pub fail: AtomicU64,
    pub lost_ack: AtomicU64,
    pub reset: AtomicU64,
    pub rate_limit: AtomicU64,
    pub auth_rejections: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Emulator {
    pub fn new(opts: EmulatorOptions, data_dir: Option<PathBuf>) -> Self {
        Self {
            api_key: Mutex::new(opts.api_key.clone()),
            faults: Mutex::new(opts.fault_rates()),
            opts,
            data_dir,
            counters: Counters::default(),
            sessions: Mutex::new(Sessions::default()),
            tracker: TaskTracker::new(),
        }
    }

    /// The sessions table. A panic while it was held cannot leave it half
    /// updated in a way later requests would trip on, so poisoning is ignored.
    pub fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set_api_key(&self, key: Option<String>) {
        *self.api_key.lock().unwrap_or_else(PoisonError::into_inner) = key;
    }

    pub fn set_faults(&self, f: FaultRates) {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = f.clamped();
    }

    pub fn fault_rates(&self) -> FaultRates {
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Chunk-only faults for this request: (reset, lost ack).
    pub fn roll_chunk_faults(&self) -> (bool, bool) {
        let f = self.fault_rates();
        (roll(f.reset_rate), roll(f.lost_ack_rate))
    }

    /// What every platform request goes through first, in the contract's
    /// order: count it, wait the latency, check the key, then roll the
    /// endpoint-independent faults.
    pub async fn gate(&self, ep: Endpoint, headers: &HeaderMap) -> Result<(), ApiError> {
        bump(match ep {
            Endpoint::Start => &self.counters.start,
            Endpoint::Chunk => &self.counters.chunk,
            Endpoint::Complete => &self.counters.complete,
            Endpoint::DockStatus => &self.counters.dock_status,
        });
        if !self.opts.latency.is_zero() {
            tokio::time::sleep(self.opts.latency).await;
        }
        if !self.key_accepted(headers) {
            bump(&self.counters.auth_rejections);
            tracing::debug!(endpoint = ?ep, "emulator: rejected API key");
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid API key"));
        }
        let f = self.fault_rates();
        if roll(f.fail_rate) {
            bump(&self.counters.fail);
            return Err(ApiError::internal(
                "internal server error (injected by the emulator)",
            ));
        }
        if roll(f.rate_limit_rate) {
            bump(&self.counters.rate_limit);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests (injected by the emulator)",
            );
            e.retry_after = Some(whole_secs_up(self.opts.retry_after));
            return Err(e);
        }
        Ok(())
    }

    /// `x-api-key` (header names are case-insensitive; `HeaderMap` normalises
    /// them) must be non-empty and, when a key is configured, equal to it.
    fn key_accepted(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) else {
            return false;
        };
        if presented.is_empty() {
            return false;
        }
        match &*self.api_key.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(expected) => expected == presented,
            None => true,
        }
    }

    /// Runs `f` on a blocking thread when it may touch the disk, inline in
    /// discard mode (no disk, so no reason to pay for a thread hop).
    pub async fn blocking<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Emulator) -> Result<T, ApiError> + Send + 'static,
    {
        if self.data_dir.is_none() {
            return f(self);
        }
        let emu = Arc::clone(self);
        tokio::task::spawn_blocking(move || f(&emu))
            .await
            .map_err(|e| ApiError::internal(format!("emulator task failed: {e}")))?
    }

    /// A snapshot of what was received.
    pub fn report(&self) -> Report {
        let now = now_ms();
        let sessions = {
            let table = self.sessions();
            let mut list: Vec<&Session> = table.by_id.values().collect();
            list.sort_by_key(|s| s.meta.seq);
            list.into_iter().map(|s| s.report(now)).collect()
        };
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Report {
            sessions,
            requests: EndpointCounts {
                start: get(&c.start),
                chunk: get(&c.chunk),
                complete: get(&c.complete),
                dock_status: get(&c.dock_status),
            },
            faults: FaultCounts {
                fail: get(&c.fail),
                lost_ack: get(&c.lost_ack),
                reset: get(&c.reset),
                rate_limit: get(&c.rate_limit),
            },
            auth_rejections: get(&c.auth_rejections),
        }
    }
}

/// `Retry-After` carries whole seconds; round up so a client never comes back early.
fn whole_secs_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

pub(crate) fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// RFC 3339 UTC with milliseconds, e.g. `2025-02-05T11:58:03.638Z`.
pub(crate) fn format_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `<prefix>-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, random hex like the
/// platform's uuid-shaped ids.
pub(crate) fn new_id(prefix: &str) -> String {
    let h = format!("{:032x}", fastrand::u128(..));
    format!(
        "{prefix}-{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_have_millis_and_z() {
        assert_eq!(format_ms(1_738_756_683_638), "2025-02-05T11:58:03.638Z");
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(whole_secs_up(Duration::from_secs(1)), 1);
        assert_eq!(whole_secs_up(Duration::from_millis(1500)), 2);
        assert_eq!(whole_secs_up(Duration::ZERO), 0);
    }

    #[test]
    fn ids_are_uuid_shaped() {
        let id = new_id("sess");
        assert_eq!(id.len(), "sess-".len() + 36);
        assert!(id.starts_with("sess-"));
        assert_ne!(new_id("cm"), new_id("cm"));
    }
}
