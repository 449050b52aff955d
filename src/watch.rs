//! Drop folders: noticing files, deciding when each is whole, handing it on.
//!
//! The [`Watcher`] owns what modelferry knows about every configured drop
//! folder: which names count (the ignore rules of [`is_candidate_name`];
//! regular files directly in the folder, never through a symbolic link), the
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
use crate::source::FileIdentity;

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
    pub path: PathBuf,
    pub identity: FileIdentity,
    /// Index into the watches the [`Watcher`] was made with.
    pub watch: usize,
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

/// What is known about one name.
#[derive(Debug)]
struct Seen {
    identity: FileIdentity,
    /// When this identity was first seen (monotonic).
    since: Instant,
    sent: bool,
}

/// A regular file as one `lstat` found it.
struct Observed {
    name: String,
    identity: FileIdentity,
    mtime: SystemTime,
}

impl Observed {
    fn new(name: String, meta: &std::fs::Metadata) -> Self {
        Observed {
            name,
            identity: FileIdentity::of(meta),
            // Linux always reports a modification time; the epoch only
            // orders such a file first.
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        }
    }
}

/// One drop folder.
struct Folder {
    index: usize,
    dir: PathBuf,
    include: Vec<glob::Pattern>,
    stable_for: Duration,
    poll_only: bool,
    rescan_interval: Duration,
    poll_interval: Duration,
    files: HashMap<String, Seen>,
    /// Names in `files` not sent yet: the only ones re-stat'ed every tick.
    pending: HashSet<String>,
    next_full: Instant,
    /// The notify watcher and the (dev, ino) of the folder it watches.
    events: Option<(RecommendedWatcher, (u64, u64))>,
    /// The last problem warned about, so a lasting one is warned about once.
    read_trouble: Option<String>,
    watch_trouble: Option<String>,
}

impl Folder {
    fn new(index: usize, w: WatchConfig, rescan_interval: Duration, now: Instant) -> Self {
        Folder {
            index,
            poll_interval: poll_period(w.stable_for, rescan_interval),
            dir: w.dir,
            include: w.include,
            stable_for: w.stable_for,
            poll_only: w.poll_only,
            rescan_interval,
            files: HashMap::new(),
            pending: HashSet::new(),
            next_full: now,
            events: None,
            read_trouble: None,
            watch_trouble: None,
        }
    }

    /// A folder without working file events is polled.
    fn full_period(&self) -> Duration {
        if self.events.is_some() {
            self.rescan_interval
        } else {
            self.poll_interval
        }
    }

    fn rescan(
        &mut self,
        events: &mpsc::Sender<(usize, String)>,
        shared: &Arc<Shared>,
        out: &mut Vec<Candidate>,
    ) {
        // Watch before listing, so a file created in between is not missed.
        if !self.poll_only {
            self.ensure_events(events, shared);
        }
        let started = Instant::now();
        let listing = match self.list() {
            Ok(listing) => listing,
            Err(e) => {
                // Whatever is tracked stays: settling files are forgotten by
                // their own re-stat if they are really gone.
                let problem = e.to_string();
                if self.read_trouble.as_ref() != Some(&problem) {
                    warn!(folder = %self.dir.display(), error = %problem,
                        "cannot read drop folder; retrying at the next rescan");
                    self.read_trouble = Some(problem);
                }
                return;
            }
        };
        let finished = Instant::now();
        trace!(folder = %self.dir.display(), files = listing.files.len(), "rescanned drop folder");
        if self.read_trouble.take().is_some() {
            info!(folder = %self.dir.display(), "drop folder is readable again");
        }
        if listing.complete {
            let present = &listing.names;
            self.files.retain(|name, _| present.contains(name));
            self.pending.retain(|name| present.contains(name));
        }
        for observed in listing.files {
            out.extend(self.apply(observed, started, finished));
        }
    }

    fn list(&self) -> io::Result<Listing> {
        let mut listing = Listing {
            files: Vec::new(),
            names: HashSet::new(),
            complete: true,
        };
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    warn!(folder = %self.dir.display(), error = %e, "listing drop folder failed part way");
                    listing.complete = false;
                    break;
                }
            };
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                debug!(folder = %self.dir.display(), name = ?file_name, "ignored: name is not UTF-8");
                continue;
            };
            if !is_candidate_name(name, &self.include) {
                continue;
            }
            listing.names.insert(name.to_owned());
            // `DirEntry::metadata` does not follow symbolic links.
            match entry.metadata() {
                Ok(meta) if meta.file_type().is_file() => {
                    listing.files.push(Observed::new(name.to_owned(), &meta));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    listing.names.remove(name);
                }
                Err(e) => {
                    warn!(file = %entry.path().display(), error = %e, "cannot stat file in drop folder");
                }
            }
        }
        Ok(listing)
    }

    /// Re-stats the settling names and those events mentioned.
    fn restat(&mut self, touched: HashSet<String>, out: &mut Vec<Candidate>) {
        let mut names: Vec<String> = self.pending.iter().cloned().collect();
        names.extend(touched.into_iter().filter(|n| !self.pending.contains(n)));
        let started = Instant::now();
        let mut found = Vec::new();
        for name in names {
            let path = self.dir.join(&name);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_file() => found.push(Observed::new(name, &meta)),
                Ok(_) => self.forget(&name, "not a regular file"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.forget(&name, "gone"),
                Err(e) => {
                    // The next full rescan finds it again if it is still there.
                    warn!(file = %path.display(), error = %e, "cannot stat file in drop folder");
                    self.forget(&name, "cannot stat");
                }
            }
        }
        let finished = Instant::now();
        for observed in found {
            out.extend(self.apply(observed, started, finished));
        }
    }

    fn forget(&mut self, name: &str, why: &str) {
        if self.files.remove(name).is_some() {
            self.pending.remove(name);
            debug!(folder = %self.dir.display(), file = name, why, "forgetting file");
        }
    }

    /// Records what a batch of `lstat`s between `started` and `finished`
    /// found for one name. A new identity counts from `finished` and a known
    /// one is checked against `started`, so stability is never overstated.
    fn apply(&mut self, o: Observed, started: Instant, finished: Instant) -> Option<Candidate> {
        match self.files.get_mut(&o.name) {
            Some(seen) if seen.identity == o.identity => {
                if seen.sent || started.saturating_duration_since(seen.since) < self.stable_for {
                    return None;
                }
                seen.sent = true;
                self.pending.remove(&o.name);
                debug!(folder = %self.dir.display(), file = %o.name, size = o.identity.size,
                    "file is stable; taking it");
                Some(Candidate {
                    path: self.dir.join(&o.name),
                    identity: o.identity,
                    watch: self.index,
                    mtime: o.mtime,
                })
            }
            previous => {
                debug!(folder = %self.dir.display(), file = %o.name, size = o.identity.size,
                    changed = previous.is_some(), "waiting for file to be stable");
                self.files.insert(
                    o.name.clone(),
                    Seen {
                        identity: o.identity,
                        since: finished,
                        sent: false,
                    },
                );
                self.pending.insert(o.name);
                None
            }
        }
    }

    /// Makes sure file events come from the folder now at `dir` (it may
    /// have been removed and made again since the watcher was set up).
    fn ensure_events(&mut self, events: &mpsc::Sender<(usize, String)>, shared: &Arc<Shared>) {
        let id = match std::fs::metadata(&self.dir) {
            Ok(meta) => {
                use std::os::unix::fs::MetadataExt;
                (meta.dev(), meta.ino())
            }
            Err(_) => {
                // The listing reports it; events resume once it is back.
                self.events = None;
                return;
            }
        };
        if matches!(&self.events, Some((_, current)) if *current == id) {
            return;
        }
        self.events = None;
        match self.watch_events(events.clone(), shared.clone()) {
            Ok(watcher) => {
                self.events = Some((watcher, id));
                if self.watch_trouble.take().is_some() {
                    info!(folder = %self.dir.display(), "watching drop folder for file events again");
                }
            }
            Err(e) => {
                let problem = e.to_string();
                if self.watch_trouble.as_ref() != Some(&problem) {
                    warn!(folder = %self.dir.display(), error = %problem,
                        poll = ?self.poll_interval,
                        "cannot watch drop folder for file events; polling it instead");
                    self.watch_trouble = Some(problem);
                }
            }
        }
    }

    fn watch_events(
        &self,
        events: mpsc::Sender<(usize, String)>,
        shared: Arc<Shared>,
    ) -> notify::Result<RecommendedWatcher> {
        let index = self.index;
        let include = self.include.clone();
        // notify reports paths under the folder as it was given, made absolute.
        let root = if self.dir.is_absolute() {
            self.dir.clone()
        } else {
            std::env::current_dir()?.join(&self.dir)
        };
        let mut watcher = notify::recommended_watcher(move |res| {
            forward(res, index, &root, &include, &events, &shared);
        })?;
        watcher.watch(&self.dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    }
}

struct Listing {
    files: Vec<Observed>,
    /// Every candidate name present, regular file or not.
    names: HashSet<String>,
    /// Whether the whole folder was listed (only then are absent names forgotten).
    complete: bool,
}

/// Runs on notify's thread: passes candidate names on without ever blocking
/// it; when that is not possible, asks for a rescan instead.
fn forward(
    res: notify::Result<notify::Event>,
    index: usize,
    root: &Path,
    include: &[glob::Pattern],
    events: &mpsc::Sender<(usize, String)>,
    shared: &Shared,
) {
    let event = match res {
        Ok(event) => event,
        Err(e) => {
            warn!(folder = %root.display(), error = %e, "file events failed; rescanning the folder");
            shared.mark_dirty(index);
            return;
        }
    };
    if event.need_rescan() {
        debug!(folder = %root.display(), "file events were lost; rescanning the folder");
        shared.mark_dirty(index);
        return;
    }
    // Opening or reading a file (our own uploads do) changes nothing.
    if matches!(
        event.kind,
        EventKind::Access(AccessKind::Open(_) | AccessKind::Close(AccessMode::Read))
    ) {
        return;
    }
    for path in &event.paths {
        if path.parent() == Some(root) {
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !is_candidate_name(name, include) {
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(_)) =
                events.try_send((index, name.to_owned()))
            {
                shared.mark_dirty(index);
            }
        } else if path == root
            && matches!(
                event.kind,
                EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
            )
        {
            // The folder itself was removed or moved away.
            shared.mark_dirty(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::time::timeout;

    /// Long enough that a busy test machine does not end a file's settling
    /// early; short enough to keep the tests quick.
    const STABLE: Duration = Duration::from_millis(400);
    /// Bound on every wait for something that should happen.
    const PATIENCE: Duration = Duration::from_secs(20);

    fn patterns() -> Vec<glob::Pattern> {
        ["*.tar", "*.tar.gz", "*.tgz"]
            .iter()
            .map(|p| glob::Pattern::new(p).expect("valid pattern"))
            .collect()
    }

    fn watch_config(dir: &Path, stable_for: Duration, poll_only: bool) -> WatchConfig {
        WatchConfig {
            dir: dir.to_path_buf(),
            done_dir: dir.join("done"),
            failed_dir: dir.join("failed"),
            file_context: "model".into(),
            is_adapter: false,
            include: patterns(),
            stable_for,
            after_success: crate::config::AfterSuccess::Move,
            poll_only,
        }
    }

    struct Running {
        rx: mpsc::Receiver<Candidate>,
        _stop: tokio_util::sync::DropGuard,
    }

    fn start(watches: Vec<WatchConfig>, rescan: Duration) -> Running {
        let (tx, rx) = mpsc::channel(64);
        let cancel = CancellationToken::new();
        tokio::spawn(Watcher::new(watches, rescan).run(tx, cancel.clone()));
        Running {
            rx,
            _stop: cancel.drop_guard(),
        }
    }

    impl Running {
        async fn next(&mut self) -> Candidate {
            match timeout(PATIENCE, self.rx.recv()).await {
                Ok(Some(c)) => c,
                Ok(None) => panic!("watcher stopped"),
                Err(_) => panic!("no candidate within {PATIENCE:?}"),
            }
        }

        /// Whatever arrives within `window` (to check that nothing more does).
        async fn extra(&mut self, window: Duration) -> Option<Candidate> {
            timeout(window, self.rx.recv()).await.ok().flatten()
        }
    }

    fn identity(path: &Path) -> FileIdentity {
        FileIdentity::of_path(path).expect("stat test file")
    }

    #[test]
    fn candidate_names() {
        let include = patterns();
        for (name, expected) in [
            ("model.tar", true),
            ("model.tar.gz", true),
            ("model.tgz", true),
            ("llama-3.1-8b.tar.gz", true),
            ("model.zip", false),
            ("notes.txt", false),
            ("model.TAR", false),
            (".model.tar", false),
            (".model.tar.Ab12Cd", false),
            ("model.tar.part", false),
            ("model.tar.partial", false),
            ("model.tar.tmp", false),
            ("model.tar.TMP", false),
            ("model.tar.crdownload", false),
            ("", false),
        ] {
            assert_eq!(is_candidate_name(name, &include), expected, "{name:?}");
        }
        let everything = [glob::Pattern::new("*").expect("valid pattern")];
        assert!(is_candidate_name("anything", &everything));
        assert!(!is_candidate_name("x.part", &everything));
    }

    #[test]
    fn stability_counts_from_first_sight_of_an_identity() {
        let dir = Path::new("/drop");
        let mut folder = Folder::new(
            3,
            watch_config(dir, Duration::from_secs(10), true),
            Duration::from_secs(30),
            Instant::now(),
        );
        let id = |size| FileIdentity {
            dev: 1,
            ino: 2,
            size,
            mtime_ns: size as i64,
        };
        let seen = |size| Observed {
            name: "a.tar".into(),
            identity: id(size),
            mtime: SystemTime::UNIX_EPOCH,
        };
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        assert_eq!(folder.apply(seen(1), at(0), at(0)), None);
        assert_eq!(
            folder.apply(seen(2), at(9), at(9)),
            None,
            "grew: starts over"
        );
        assert_eq!(folder.apply(seen(2), at(18), at(18)), None, "9s unchanged");
        let c = folder
            .apply(seen(2), at(19), at(19))
            .expect("10s unchanged");
        assert_eq!((c.path, c.identity, c.watch), (dir.join("a.tar"), id(2), 3));
        assert_eq!(folder.apply(seen(2), at(40), at(40)), None, "sent once");
        assert!(folder.pending.is_empty());
        assert_eq!(folder.apply(seen(3), at(41), at(41)), None, "rewritten");
        assert!(
            folder.apply(seen(3), at(51), at(51)).is_some(),
            "sent again"
        );
    }

    #[test]
    fn events_become_names_or_rescans_without_blocking() {
        let shared = Shared {
            dirty: vec![AtomicBool::new(false), AtomicBool::new(false)],
            wake: Notify::new(),
        };
        let root = Path::new("/drop");
        let include = patterns();
        let (tx, mut rx) = mpsc::channel(1);
        let event = |kind, path: &str| Ok(notify::Event::new(kind).add_path(PathBuf::from(path)));
        let dirty = |shared: &Shared| shared.dirty[1].swap(false, Ordering::AcqRel);
        let create = EventKind::Create(notify::event::CreateKind::File);
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));

        forward(event(open, "/drop/a.tar"), 1, root, &include, &tx, &shared);
        for ignored in [
            "/drop/.a.tar.XyZ",
            "/drop/a.tar.part",
            "/drop/sub/a.tar",
            "/else/a.tar",
        ] {
            forward(event(create, ignored), 1, root, &include, &tx, &shared);
        }
        assert!(rx.try_recv().is_err() && !dirty(&shared));
        forward(
            event(create, "/drop/a.tar"),
            1,
            root,
            &include,
            &tx,
            &shared,
        );
        assert!(!dirty(&shared));
        // The queue is full: a rescan instead of a lost name.
        forward(
            event(create, "/drop/b.tar"),
            1,
            root,
            &include,
            &tx,
            &shared,
        );
        assert!(dirty(&shared));
        assert_eq!(rx.try_recv().ok(), Some((1, "a.tar".to_string())));
        // Lost events, a failed watcher, the folder itself removed.
        let overflow = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        forward(Ok(overflow), 1, root, &include, &tx, &shared);
        assert!(dirty(&shared));
        forward(
            Err(notify::Error::generic("boom")),
            1,
            root,
            &include,
            &tx,
            &shared,
        );
        assert!(dirty(&shared));
        let removed = EventKind::Remove(notify::event::RemoveKind::Folder);
        forward(event(removed, "/drop"), 1, root, &include, &tx, &shared);
        assert!(dirty(&shared));
        // Our own listing opens the folder; that is no reason to rescan.
        forward(event(open, "/drop"), 1, root, &include, &tx, &shared);
        assert!(!dirty(&shared) && !shared.dirty[0].load(Ordering::Acquire));
    }

    #[test]
    fn rescan_handle_marks_every_folder() {
        let dir = Path::new("/drop");
        let cfg = || watch_config(dir, STABLE, false);
        let watcher = Watcher::new(vec![cfg(), cfg()], STABLE);
        watcher.rescan_handle().clone().rescan();
        assert!(watcher
            .shared
            .dirty
            .iter()
            .all(|f| f.load(Ordering::Acquire)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slowly_written_file_is_sent_once_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = start(
            vec![watch_config(dir.path(), STABLE, false)],
            Duration::from_secs(30),
        );
        let path = dir.path().join("slow.tar");
        let mut f = std::fs::File::create(&path).expect("create");
        for _ in 0..8 {
            f.write_all(&[7u8; 4096]).expect("write");
            tokio::time::sleep(STABLE / 8).await;
        }
        drop(f);
        let c = w.next().await;
        assert_eq!(c.path, path);
        assert_eq!(c.identity, identity(&path));
        assert_eq!(c.identity.size, 8 * 4096);
        assert_eq!(w.extra(STABLE * 3).await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn renamed_into_place_is_sent_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = start(
            vec![watch_config(dir.path(), STABLE, false)],
            Duration::from_secs(30),
        );
        let tmp = dir.path().join(".x.tar.tmp");
        let mut f = std::fs::File::create(&tmp).expect("create");
        for _ in 0..4 {
            f.write_all(&[1u8; 1000]).expect("write");
            tokio::time::sleep(STABLE / 4).await;
        }
        drop(f);
        let path = dir.path().join("x.tar");
        std::fs::rename(&tmp, &path).expect("rename");
        let c = w.next().await;
        assert_eq!(
            (c.path.as_path(), c.identity),
            (path.as_path(), identity(&path))
        );
        assert_eq!(w.extra(STABLE * 3).await, None);
    }

    /// Makes everything that must be ignored, in `dir`, then `sentinel`.
    fn ignored_then(dir: &Path, outside: &Path, tag: &str, sentinel: &str) {
        for name in [
            format!(".hidden{tag}.tar"),
            format!("a{tag}.tar.part"),
            format!("b{tag}.tar.partial"),
            format!("c{tag}.tar.tmp"),
            format!("d{tag}.tar.crdownload"),
            format!(".e{tag}.tar.Ab12Cd"),
            format!("notes{tag}.txt"),
        ] {
            std::fs::write(dir.join(name), b"data").expect("write");
        }
        let target = outside.join(format!("real{tag}.tar"));
        std::fs::write(&target, b"data").expect("write");
        std::os::unix::fs::symlink(&target, dir.join(format!("link{tag}.tar"))).expect("symlink");
        let sub = dir.join(format!("sub{tag}.tar"));
        std::fs::create_dir(&sub).expect("mkdir");
        std::fs::write(sub.join("inner.tar"), b"data").expect("write");
        let _socket = std::os::unix::net::UnixListener::bind(dir.join(format!("sock{tag}.tar")))
            .expect("bind socket");
        std::fs::write(dir.join(sentinel), b"data").expect("write");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ignored_names_and_non_files_are_never_sent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        // Found by the startup scan...
        ignored_then(dir.path(), outside.path(), "1", "z1.tar");
        let mut w = start(
            vec![watch_config(dir.path(), STABLE, false)],
            Duration::from_secs(30),
        );
        // Anything made before the sentinel settles no later than it and,
        // being older, would be sent before it.
        assert_eq!(w.next().await.path, dir.path().join("z1.tar"));
        // ...and by file events.
        ignored_then(dir.path(), outside.path(), "2", "z2.tar");
        assert_eq!(w.next().await.path, dir.path().join("z2.tar"));
        assert_eq!(w.extra(STABLE).await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rewritten_or_replaced_file_is_sent_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = start(
            vec![watch_config(dir.path(), STABLE, false)],
            Duration::from_secs(30),
        );
        let path = dir.path().join("a.tar");
        std::fs::write(&path, b"first").expect("write");
        let first = w.next().await;
        assert_eq!(first.identity, identity(&path));
        std::fs::write(&path, b"second, longer").expect("rewrite");
        let second = w.next().await;
        assert_eq!(
            (second.path.as_path(), second.identity),
            (path.as_path(), identity(&path))
        );
        let tmp = dir.path().join(".a.tar.XyZ123");
        std::fs::write(&tmp, b"third").expect("write");
        std::fs::rename(&tmp, &path).expect("replace");
        let third = w.next().await;
        assert_eq!(third.identity, identity(&path));
        assert_ne!(third.identity.ino, first.identity.ino);
        assert_eq!(w.extra(STABLE * 2).await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_present_at_startup_are_sent_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = SystemTime::now() - Duration::from_secs(3600);
        for (name, age_s) in [("b.tar", 300), ("a.tar", 100), ("c.tgz", 200)] {
            let f = std::fs::File::create(dir.path().join(name)).expect("create");
            f.set_modified(base - Duration::from_secs(age_s))
                .expect("set mtime");
        }
        let mut w = start(
            vec![watch_config(dir.path(), STABLE, false)],
            Duration::from_secs(30),
        );
        let mut order = Vec::new();
        for _ in 0..3 {
            let c = w.next().await;
            order.push(
                c.path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(String::from),
            );
        }
        let names: Vec<_> = order.into_iter().flatten().collect();
        assert_eq!(names, ["b.tar", "c.tgz", "a.tar"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn poll_only_folder_is_polled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = start(
            vec![watch_config(dir.path(), Duration::from_millis(200), true)],
            Duration::from_secs(3600),
        );
        // Let the startup scan go by first, so polling must find the file.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let path = dir.path().join("p.tar.gz");
        std::fs::write(&path, b"polled").expect("write");
        let c = w.next().await;
        assert_eq!(
            (c.path.as_path(), c.identity),
            (path.as_path(), identity(&path))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_folder_is_retried_until_it_appears() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("later");
        let mut w = start(
            vec![watch_config(&dir, Duration::from_millis(100), false)],
            Duration::from_secs(3600),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("m.tar"), b"m").expect("write");
        assert_eq!(w.next().await.path, dir.join("m.tar"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_thousand_files_at_once_are_each_sent_once() {
        const N: usize = 2000;
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = start(
            vec![watch_config(dir.path(), Duration::from_millis(300), false)],
            Duration::from_secs(3600),
        );
        for i in 0..N {
            std::fs::write(dir.path().join(format!("m{i:04}.tar")), i.to_string()).expect("write");
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = HashSet::new();
        while seen.len() < N {
            let left = deadline.saturating_duration_since(Instant::now());
            let c = timeout(left, w.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {N} sent in time", seen.len()))
                .expect("watcher running");
            assert!(
                seen.insert(c.path.clone()),
                "{} sent twice",
                c.path.display()
            );
        }
        assert_eq!(w.extra(Duration::from_secs(1)).await, None);
    }

    #[tokio::test]
    async fn run_returns_when_the_receiver_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, rx) = mpsc::channel(1);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(
            Watcher::new(vec![watch_config(dir.path(), STABLE, false)], STABLE).run(tx, cancel),
        );
        drop(rx);
        timeout(PATIENCE, task)
            .await
            .expect("returned in time")
            .expect("no panic");
    }
}
