use super::folder::{forward, Observed};
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
        placed: (7, 0),
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
    // Moved out and back between two looks: the same identity, placed anew.
    let back = Observed {
        placed: (8, 0),
        ..seen(3)
    };
    assert_eq!(
        folder.apply(back, at(52), at(52)),
        None,
        "back: settles again"
    );
    let back = Observed {
        placed: (8, 0),
        ..seen(3)
    };
    assert!(folder.apply(back, at(62), at(62)).is_some(), "and is sent");
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
