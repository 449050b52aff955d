//! One drop folder: what is known about each name in it, listing and
//! re-stat'ing, and the notify watcher that reports changes.

use super::*;

/// What is known about one name.
#[derive(Debug)]
pub(super) struct Seen {
    identity: FileIdentity,
    /// The inode's change time: see [`Observed::placed`].
    placed: (i64, i64),
    /// When this identity was first seen (monotonic).
    since: Instant,
    sent: bool,
}

/// A regular file as one `lstat` found it.
pub(super) struct Observed {
    pub(super) name: String,
    pub(super) identity: FileIdentity,
    pub(super) mtime: SystemTime,
    /// The inode's change time (seconds, nanoseconds). A file moved out and
    /// back (a failed tarball put back, by hand or by `modelferry retry`)
    /// keeps its identity but not this, so it counts as a new arrival even
    /// when the watcher never saw it gone.
    pub(super) placed: (i64, i64),
}

impl Observed {
    fn new(name: String, meta: &std::fs::Metadata) -> Self {
        Observed {
            name,
            identity: FileIdentity::of(meta),
            // Linux always reports a modification time; the epoch only
            // orders such a file first.
            mtime: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            placed: {
                use std::os::unix::fs::MetadataExt;
                (meta.ctime(), meta.ctime_nsec())
            },
        }
    }
}

/// One drop folder.
pub(super) struct Folder {
    pub(super) index: usize,
    dir: PathBuf,
    include: Vec<glob::Pattern>,
    stable_for: Duration,
    poll_only: bool,
    rescan_interval: Duration,
    poll_interval: Duration,
    files: HashMap<String, Seen>,
    /// Names in `files` not sent yet: the only ones re-stat'ed every tick.
    pub(super) pending: HashSet<String>,
    /// Files whose names are not UTF-8, already warned about: never
    /// imported (paths are stored and shown as text), warned about once
    /// while they stay.
    not_utf8: HashSet<OsString>,
    pub(super) next_full: Instant,
    /// The notify watcher and the (dev, ino) of the folder it watches.
    events: Option<(RecommendedWatcher, (u64, u64))>,
    /// The last problem warned about, so a lasting one is warned about once.
    read_trouble: Option<String>,
    watch_trouble: Option<String>,
}

impl Folder {
    pub(super) fn new(
        index: usize,
        w: WatchConfig,
        rescan_interval: Duration,
        now: Instant,
    ) -> Self {
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
            not_utf8: HashSet::new(),
            next_full: now,
            events: None,
            read_trouble: None,
            watch_trouble: None,
        }
    }

    /// A folder without working file events is polled.
    pub(super) fn full_period(&self) -> Duration {
        if self.events.is_some() {
            self.rescan_interval
        } else {
            self.poll_interval
        }
    }

    pub(super) fn rescan(
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
                    warn!(folder = %Escaped::path(&self.dir), error = %problem,
                        "cannot read drop folder; retrying at the next rescan");
                    self.read_trouble = Some(problem);
                }
                return;
            }
        };
        let finished = Instant::now();
        trace!(folder = %Escaped::path(&self.dir), files = listing.files.len(), "rescanned drop folder");
        if self.read_trouble.take().is_some() {
            info!(folder = %Escaped::path(&self.dir), "drop folder is readable again");
        }
        if listing.complete {
            let present = &listing.names;
            self.files.retain(|name, _| present.contains(name));
            self.pending.retain(|name| present.contains(name));
            self.not_utf8.retain(|name| listing.not_utf8.contains(name));
        }
        for name in listing.not_utf8 {
            if !self.not_utf8.contains(&name) {
                warn!(folder = %Escaped::path(&self.dir), file = %Escaped::path(Path::new(&name)),
                    "ignored: the file name is not valid UTF-8; rename the file to import it");
                self.not_utf8.insert(name);
            }
        }
        for observed in listing.files {
            out.extend(self.apply(observed, started, finished));
        }
    }

    fn list(&self) -> io::Result<Listing> {
        let mut listing = Listing {
            files: Vec::new(),
            names: HashSet::new(),
            not_utf8: HashSet::new(),
            complete: true,
        };
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    warn!(folder = %Escaped::path(&self.dir), error = %e, "listing drop folder failed part way");
                    listing.complete = false;
                    break;
                }
            };
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                // Judged by the same rules, so only a file that would have
                // been taken is warned about.
                let is_file = entry.file_type().is_ok_and(|t| t.is_file());
                if is_file && is_candidate_name(&file_name.to_string_lossy(), &self.include) {
                    listing.not_utf8.insert(file_name);
                }
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
                    warn!(file = %Escaped::path(&entry.path()), error = %e, "cannot stat file in drop folder");
                }
            }
        }
        Ok(listing)
    }

    /// Re-stats the settling names and those events mentioned.
    pub(super) fn restat(&mut self, touched: HashSet<String>, out: &mut Vec<Candidate>) {
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
                    warn!(file = %Escaped::path(&path), error = %e, "cannot stat file in drop folder");
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
            debug!(folder = %Escaped::path(&self.dir), file = %Escaped::str(name), why, "forgetting file");
        }
    }

    /// Records what a batch of `lstat`s between `started` and `finished`
    /// found for one name. A new identity counts from `finished` and a known
    /// one is checked against `started`, so stability is never overstated.
    pub(super) fn apply(
        &mut self,
        o: Observed,
        started: Instant,
        finished: Instant,
    ) -> Option<Candidate> {
        match self.files.get_mut(&o.name) {
            Some(seen) if seen.identity == o.identity && seen.placed == o.placed => {
                if seen.sent || started.saturating_duration_since(seen.since) < self.stable_for {
                    return None;
                }
                seen.sent = true;
                self.pending.remove(&o.name);
                debug!(folder = %Escaped::path(&self.dir), file = %Escaped::str(&o.name), size = o.identity.size,
                    "file is stable; taking it");
                Some(Candidate {
                    path: self.dir.join(&o.name),
                    identity: o.identity,
                    watch: self.index,
                    mtime: o.mtime,
                })
            }
            previous => {
                debug!(folder = %Escaped::path(&self.dir), file = %Escaped::str(&o.name), size = o.identity.size,
                    changed = previous.is_some(), "waiting for file to be stable");
                self.files.insert(
                    o.name.clone(),
                    Seen {
                        identity: o.identity,
                        placed: o.placed,
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
                    info!(folder = %Escaped::path(&self.dir), "watching drop folder for file events again");
                }
            }
            Err(e) => {
                let problem = e.to_string();
                if self.watch_trouble.as_ref() != Some(&problem) {
                    warn!(folder = %Escaped::path(&self.dir), error = %problem,
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

pub(super) struct Listing {
    files: Vec<Observed>,
    /// Every candidate name present, regular file or not.
    names: HashSet<String>,
    /// Regular files that would be candidates but for a name that is not UTF-8.
    not_utf8: HashSet<OsString>,
    /// Whether the whole folder was listed (only then are absent names forgotten).
    complete: bool,
}

/// Runs on notify's thread: passes candidate names on without ever blocking
/// it; when that is not possible, asks for a rescan instead.
pub(super) fn forward(
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
            warn!(folder = %Escaped::path(root), error = %e, "file events failed; rescanning the folder");
            shared.mark_dirty(index);
            return;
        }
    };
    if event.need_rescan() {
        debug!(folder = %Escaped::path(root), "file events were lost; rescanning the folder");
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
