//! Drop folders: noticing files, deciding when each is whole, handing it on.
//!
//! The [`Watcher`] owns what modelferry knows about every configured drop
//! folder: which names count (the ignore rules of [`is_candidate_name`];
//! regular files directly in the folder, never through a symbolic link, whose
//! names are UTF-8: others are warned about once and never sent), the
//! identity each file was last seen with and since when, and which identities
//! have already been handed on. It promises to send a [`Candidate`] once per
//! identity, after that identity has been seen unchanged for the folder's
//! `stable_for` on a monotonic clock.
//!
//! File events (inotify, through `notify`) only mean "look at this name
//! soon"; what counts is always a fresh `lstat`. Full rescans at startup,
//! every `rescan_interval`, on request and after any sign that events were
//! lost (queue overflow, watcher error) make a missed event cost latency,
//! never a file. All filesystem work runs on tokio's blocking pool.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, Notify};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use crate::config::WatchConfig;
use crate::escaped::Escaped;
use crate::source::FileIdentity;

mod folder;
use folder::Folder;

/// Names that belong to a transfer still in progress (browsers, curl, rsync
/// `--partial`, editors and copy tools writing to a temporary name).
const PARTIAL_SUFFIXES: [&str; 4] = [".part", ".partial", ".tmp", ".crdownload"];
/// Longest wait between re-stats of files still settling.
const MAX_TICK: Duration = Duration::from_millis(250);
/// Shortest wait between re-stats, however short `stable_for` is.
const MIN_TICK: Duration = Duration::from_millis(20);
/// Shortest interval between full rescans of a polled folder.
const MIN_POLL: Duration = Duration::from_millis(200);
/// File events waiting for the scanner; beyond this a folder is rescanned.
const EVENT_QUEUE: usize = 4096;
/// Distinct names remembered from events between two steps, per folder;
/// beyond this the folder is rescanned instead.
const MAX_TOUCHED: usize = 65_536;

/// A file that has been stable for its folder's `stable_for` and should be imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The file.
    pub path: PathBuf,
    /// Its identity when it was found stable.
    pub identity: FileIdentity,
    /// Index into the watches the [`Watcher`] was made with.
    pub watch: usize,
    /// Its modification time (candidates are taken oldest first).
    pub mtime: SystemTime,
}

/// Whether a name in a drop folder is considered at all (before stat).
pub fn is_candidate_name(name: &str, include: &[glob::Pattern]) -> bool {
    // A leading dot covers hidden files and rsync's `.name.XXXXXX` temporaries.
    if name.is_empty() || name.starts_with('.') {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    if PARTIAL_SUFFIXES.iter().any(|s| lower.ends_with(s)) {
        return false;
    }
    include.iter().any(|p| p.matches(name))
}

/// What the running watcher and its handles share.
#[derive(Debug)]
struct Shared {
    /// Per folder: a full rescan is due at the next step (events were lost,
    /// the folder itself went away, or someone asked).
    dirty: Vec<AtomicBool>,
    /// Wakes the watcher for a step now rather than at the next tick.
    wake: Notify,
}

impl Shared {
    fn mark_dirty(&self, folder: usize) {
        if let Some(flag) = self.dirty.get(folder) {
            flag.store(true, Ordering::Release);
        }
    }
}

/// Makes the running [`Watcher`] rescan every folder now.
#[derive(Debug, Clone)]
pub struct RescanHandle {
    shared: Arc<Shared>,
}

impl RescanHandle {
    /// Marks every folder for a rescan and wakes the watcher.
    pub fn rescan(&self) {
        for flag in &self.shared.dirty {
            flag.store(true, Ordering::Release);
        }
        self.shared.wake.notify_one();
    }
}

/// Watches the drop folders; see the module docs.
#[derive(Debug)]
pub struct Watcher {
    watches: Vec<WatchConfig>,
    rescan_interval: Duration,
    shared: Arc<Shared>,
}

impl Watcher {
    /// A watcher of `watches`, rescanning each fully every `rescan_interval`.
    pub fn new(watches: Vec<WatchConfig>, rescan_interval: Duration) -> Self {
        let shared = Arc::new(Shared {
            dirty: watches.iter().map(|_| AtomicBool::new(false)).collect(),
            wake: Notify::new(),
        });
        Watcher {
            watches,
            rescan_interval,
            shared,
        }
    }

    /// A handle that makes the running watcher do a full rescan now (e.g.
    /// after the daemon finished a job). A rescan finds new, changed and
    /// removed files; it never sends an identity that was already sent.
    pub fn rescan_handle(&self) -> RescanHandle {
        RescanHandle {
            shared: self.shared.clone(),
        }
    }

    /// Watches until `cancel`; sends each stable file once per identity (the
    /// same path with a new identity — rewritten, replaced — is sent again
    /// once stable again). Returns when cancelled or when `tx` is closed.
    pub async fn run(self, tx: mpsc::Sender<Candidate>, cancel: CancellationToken) {
        let Watcher {
            watches,
            rescan_interval,
            shared,
        } = self;
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let mut inbox = Inbox {
            rx: event_rx,
            touched: vec![HashSet::new(); watches.len()],
            shared: shared.clone(),
        };
        let mut tick = tokio::time::interval(tick_period(&watches));
        // After a long step, carry on at the normal pace rather than in a burst.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut scanner = Scanner::new(watches, rescan_interval, shared.clone(), event_tx);
        loop {
            let wait = async {
                tokio::select! {
                    _ = tick.tick() => true,
                    () = shared.wake.notified() => true,
                    () = tx.closed() => false,
                }
            };
            if drive(wait, &cancel, &mut inbox).await != Some(true) {
                return;
            }
            let touched = inbox.take();
            let step = tokio::task::spawn_blocking(move || {
                let ready = scanner.step(touched);
                (scanner, ready)
            });
            let (back, ready) = match drive(step, &cancel, &mut inbox).await {
                Some(Ok(done)) => done,
                Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Cancelled, or the runtime is shutting down.
                _ => return,
            };
            scanner = back;
            for candidate in ready {
                match drive(tx.reserve(), &cancel, &mut inbox).await {
                    Some(Ok(permit)) => permit.send(candidate),
                    _ => return,
                }
            }
        }
    }
}

/// How often files still settling are re-stat'ed.
fn tick_period(watches: &[WatchConfig]) -> Duration {
    watches
        .iter()
        .map(|w| w.stable_for / 4)
        .fold(MAX_TICK, Duration::min)
        .max(MIN_TICK)
}

/// How often a folder without file events is rescanned.
fn poll_period(stable_for: Duration, rescan_interval: Duration) -> Duration {
    rescan_interval.min((stable_for / 2).max(MIN_POLL))
}

/// Runs `fut` to completion unless `cancel` fires first, collecting file
/// events meanwhile so notify's queue keeps draining.
async fn drive<F: Future>(
    fut: F,
    cancel: &CancellationToken,
    inbox: &mut Inbox,
) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return None,
            out = &mut fut => return Some(out),
            Some((folder, name)) = inbox.rx.recv() => inbox.note(folder, name),
        }
    }
}

/// Names file events mentioned since the last step, deduplicated.
struct Inbox {
    rx: mpsc::Receiver<(usize, String)>,
    touched: Vec<HashSet<String>>,
    shared: Arc<Shared>,
}

impl Inbox {
    fn note(&mut self, folder: usize, name: String) {
        let Some(names) = self.touched.get_mut(folder) else {
            return;
        };
        if names.len() >= MAX_TOUCHED {
            self.shared.mark_dirty(folder);
        } else {
            names.insert(name);
        }
    }

    fn take(&mut self) -> Vec<HashSet<String>> {
        let fresh = vec![HashSet::new(); self.touched.len()];
        std::mem::replace(&mut self.touched, fresh)
    }
}

/// The folders' state; every method does blocking filesystem work.
struct Scanner {
    folders: Vec<Folder>,
    shared: Arc<Shared>,
    events: mpsc::Sender<(usize, String)>,
}

impl Scanner {
    fn new(
        watches: Vec<WatchConfig>,
        rescan_interval: Duration,
        shared: Arc<Shared>,
        events: mpsc::Sender<(usize, String)>,
    ) -> Self {
        let now = Instant::now();
        let folders = watches
            .into_iter()
            .enumerate()
            .map(|(index, w)| Folder::new(index, w, rescan_interval, now))
            .collect();
        Scanner {
            folders,
            shared,
            events,
        }
    }

    /// One pass: a full rescan of folders that are due one, a re-stat of
    /// settling and touched names elsewhere. Returns what became stable,
    /// oldest modification time first.
    fn step(&mut self, touched: Vec<HashSet<String>>) -> Vec<Candidate> {
        let mut ready = Vec::new();
        for (folder, names) in self.folders.iter_mut().zip(touched) {
            let forced = self
                .shared
                .dirty
                .get(folder.index)
                .is_some_and(|flag| flag.swap(false, Ordering::AcqRel));
            if forced || Instant::now() >= folder.next_full {
                folder.rescan(&self.events, &self.shared, &mut ready);
                folder.next_full = Instant::now() + folder.full_period();
            } else {
                folder.restat(names, &mut ready);
            }
        }
        ready.sort_by(|a, b| a.mtime.cmp(&b.mtime).then_with(|| a.path.cmp(&b.path)));
        ready
    }
}

#[cfg(test)]
mod tests;
