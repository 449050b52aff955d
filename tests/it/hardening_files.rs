//! Drop-folder files that are not what they were: a FIFO swapped in for a
//! queued file, and names so long that a derived name would not fit.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::support::*;

/// How long a whole scenario may take before the test calls it stalled.
const DEADLINE: Duration = Duration::from_secs(90);

// std has no mkfifo; the test must make real FIFOs.
#[allow(unsafe_code)]
fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a NUL-terminated path that lives for the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// Replaces `path` with a FIFO the way an attacker or a confused tool would:
/// made beside it, then renamed over it.
fn swap_in_fifo(env: &Env, path: &Path) {
    let staged = env.path(&format!("{}.fifo", file_name(path)));
    mkfifo(&staged);
    std::fs::rename(&staged, path).unwrap();
}

/// Makes tarballs `names` in staging, oldest first (their modification
/// times set one second apart so the queue order is certain), then moves
/// them into the drop folder together. Returns their paths and sha256s.
fn drop_in_order(env: &Env, names: &[&str], size: usize) -> Vec<(PathBuf, String)> {
    let base = SystemTime::now() - Duration::from_secs(60);
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let staged = env.path(name);
        let sha = make_tar(&staged, size, 100 + i as u64);
        let f = std::fs::File::options().write(true).open(&staged).unwrap();
        f.set_modified(base + Duration::from_secs(i as u64))
            .unwrap();
        drop(f);
        out.push((env.drop_dir().join(name), sha));
    }
    for (i, name) in names.iter().enumerate() {
        std::fs::rename(env.path(name), &out[i].0).unwrap();
    }
    out
}

/// Polls `status --json` until `cond` holds for the jobs, or the deadline.
async fn wait_for_jobs(
    env: &Env,
    what: &str,
    cond: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let jobs = env.status_json().await;
        if cond(&jobs) {
            return jobs;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out waiting for {what}: {jobs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three 4 MiB files dropped in order under a running daemon, once `a`
/// holds the only slot (30 ms a request, one chunk at a time: busy for
/// seconds) and `b` and `c` are queued jobs behind it. The env, the files
/// (path, sha256) and the daemon.
async fn a_uploading_b_and_c_queued() -> (Env, Vec<(PathBuf, String)>, Proc) {
    let env = Env::daemon_env(slow(30), one_chunk_at_a_time(), "").await;
    let files = drop_in_order(&env, &["a.tar", "b.tar", "c.tar"], 4 * 1024 * 1024);
    let (a, b, c) = (&files[0].0, &files[1].0, &files[2].0);
    let d = env.daemon();
    wait_for_jobs(&env, "a uploading, b and c queued", |jobs| {
        state_of(jobs, a).as_deref() == Some("uploading")
            && state_of(jobs, b).as_deref() == Some("queued")
            && state_of(jobs, c).as_deref() == Some("queued")
    })
    .await;
    (env, files, d)
}

fn job_for<'a>(jobs: &'a [serde_json::Value], path: &Path) -> Option<&'a serde_json::Value> {
    let p = path.display().to_string();
    jobs.iter().find(|j| j["path"] == p.as_str())
}

fn state_of(jobs: &[serde_json::Value], path: &Path) -> Option<String> {
    job_for(jobs, path).map(|j| j["state"].as_str().unwrap_or_default().to_string())
}

fn assert_failed_not_regular(jobs: &[serde_json::Value], path: &Path) {
    let job = job_for(jobs, path).expect("the job is listed");
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["error"].as_str().unwrap_or_default();
    assert!(error.contains("not a regular file"), "{job}");
    assert!(error.contains(&file_name(path)), "names the file: {job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_swapped_in_for_a_queued_file_fails_that_job_and_the_queue_moves_on() {
    let (env, files, d) = a_uploading_b_and_c_queued().await;
    let (a, b, c) = (&files[0].0, &files[1].0, &files[2].0);
    swap_in_fifo(&env, b);

    let jobs = wait_for_jobs(&env, "every job finished", |jobs| {
        [a, b, c]
            .iter()
            .all(|p| matches!(state_of(jobs, p).as_deref(), Some("succeeded" | "failed")))
    })
    .await;
    assert_failed_not_regular(&jobs, b);
    assert_eq!(state_of(&jobs, a).as_deref(), Some("succeeded"));
    assert_eq!(state_of(&jobs, c).as_deref(), Some("succeeded"));
    wait_until(DEADLINE, "c and b filed", || {
        env.done_dir().join("c.tar.receipt.json").exists()
            && env.failed_dir().join("b.tar.error.json").exists()
    })
    .await;
    let out = {
        d.sigterm();
        d.finish().await
    };
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(sha256_file(&env.done_dir().join("c.tar")), files[2].1);
    let err = read_json(&env.failed_dir().join("b.tar.error.json"));
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("not a regular file"),
        "{err}"
    );
    // The FIFO is not the file the job was made for: it stays where it is.
    let left = std::fs::symlink_metadata(b).expect("the FIFO is still there");
    use std::os::unix::fs::FileTypeExt;
    assert!(left.file_type().is_fifo());
    assert!(!env.failed_dir().join("b.tar").exists());
    assert!(env.report().sessions_for_file("b.tar").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifos_found_at_restart_fail_their_jobs_instead_of_stalling_recovery() {
    let (env, files, d) = a_uploading_b_and_c_queued().await;
    let (a, b, c) = (&files[0].0, &files[1].0, &files[2].0);
    d.kill9().await;
    // While the daemon is down: the job under way and a queued one both
    // find a FIFO at their path.
    swap_in_fifo(&env, a);
    swap_in_fifo(&env, b);

    let d = env.daemon();
    let jobs = wait_for_jobs(&env, "every job finished after the restart", |jobs| {
        [a, b, c]
            .iter()
            .all(|p| matches!(state_of(jobs, p).as_deref(), Some("succeeded" | "failed")))
    })
    .await;
    assert_failed_not_regular(&jobs, a);
    assert_failed_not_regular(&jobs, b);
    assert_eq!(state_of(&jobs, c).as_deref(), Some("succeeded"));
    wait_until(DEADLINE, "c filed", || {
        env.done_dir().join("c.tar.receipt.json").exists()
    })
    .await;
    d.sigterm();
    let out = d.finish().await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(sha256_file(&env.done_dir().join("c.tar")), files[2].1);
}

/// A name of exactly `len` bytes ending in `.tar`, with multi-byte
/// characters so a cut must respect UTF-8 boundaries.
fn long_name(tag: &str, len: usize) -> String {
    let mut s = format!("{tag}-");
    while s.len() + ".tar".len() < len {
        s.push(if (len - s.len() - ".tar".len()) >= 3 {
            'é'
        } else {
            'x'
        });
    }
    s.push_str(".tar");
    assert_eq!(s.len(), len);
    s
}

/// The receipts (`suffix`) in `dir`, read, whose `file` is `name`.
fn receipts_for(dir: &Path, suffix: &str, name: &str) -> Vec<(String, serde_json::Value)> {
    Env::names(dir)
        .into_iter()
        .filter(|n| n.ends_with(suffix))
        .map(|n| {
            let v = read_json(&dir.join(&n));
            (n, v)
        })
        .filter(|(_, v)| v["file"] == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_of_255_bytes_are_imported_and_filed_with_shortened_receipt_names() {
    let env = Env::daemon_env(slow(0), Settings::default(), "").await;
    let ok = long_name("ok", 255);
    let taken = long_name("taken", 255);
    let empty = long_name("empty", 255);
    // The same name is already in done_dir: the new one needs a `-N` name.
    std::fs::write(env.done_dir().join(&taken), b"someone else's").unwrap();
    let ok_sha = make_tar(&env.path("ok.tar"), 100_000, 1);
    let taken_sha = make_tar(&env.path("taken.tar"), 100_000, 2);
    std::fs::rename(env.path("ok.tar"), env.drop_dir().join(&ok)).unwrap();
    std::fs::rename(env.path("taken.tar"), env.drop_dir().join(&taken)).unwrap();
    std::fs::write(env.drop_dir().join(&empty), b"").unwrap();

    let d = env.daemon();
    let (done, failed) = (env.done_dir(), env.failed_dir());
    wait_until(DEADLINE, "all three filed", || {
        receipts_for(&done, ".receipt.json", &ok).len() == 1
            && receipts_for(&done, ".receipt.json", &taken).len() == 1
            && receipts_for(&failed, ".error.json", &empty).len() == 1
    })
    .await;
    d.sigterm();
    let out = d.finish().await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    assert!(
        Env::names(&env.drop_dir()).is_empty(),
        "nothing left behind"
    );
    assert_eq!(sha256_file(&done.join(&ok)), ok_sha);
    let (receipt_name, receipt) = receipts_for(&done, ".receipt.json", &ok).remove(0);
    assert!(receipt_name.len() <= 255, "{receipt_name}");
    assert_eq!(receipt["sha256"], ok_sha.as_str());
    // Recognisable: the start of the name and the extension chain are kept.
    assert!(receipt_name.starts_with("ok-éé"), "{receipt_name}");
    assert!(
        receipt_name.ends_with(".tar.receipt.json"),
        "{receipt_name}"
    );

    // Someone else's file of the same name is untouched; ours is beside it
    // under a shortened `-1` name, and its receipt under that name's.
    assert_eq!(std::fs::read(done.join(&taken)).unwrap(), b"someone else's");
    let (receipt_name, receipt) = receipts_for(&done, ".receipt.json", &taken).remove(0);
    assert!(receipt_name.len() <= 255, "{receipt_name}");
    assert_eq!(receipt["sha256"], taken_sha.as_str());
    let tarball = Env::names(&done)
        .into_iter()
        .find(|n| n.starts_with("taken-") && n.ends_with("-1.tar"))
        .unwrap_or_else(|| panic!("a -1 name in {:?}", Env::names(&done)));
    assert!(
        tarball.len() <= 255 && tarball.ends_with("-1.tar"),
        "{tarball}"
    );
    assert_eq!(sha256_file(&done.join(&tarball)), taken_sha);

    assert!(
        failed.join(&empty).exists(),
        "the empty file is in failed_dir"
    );
    let (name, err) = receipts_for(&failed, ".error.json", &empty).remove(0);
    assert!(
        name.len() <= 255 && name.ends_with(".tar.error.json"),
        "{name}"
    );
    assert!(err["error"].as_str().unwrap().contains("empty"), "{err}");

    // No temporary file was left anywhere.
    for dir in [&done, &failed] {
        let names = Env::names(dir);
        assert!(
            names.iter().all(|n| !n.starts_with('.')),
            "leftovers in {}: {names:?}",
            dir.display()
        );
    }
    let jobs = env.status_json().await;
    assert!(
        jobs.iter().all(|j| j["filing_error"].is_null()),
        "{jobs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_of_a_255_byte_name_succeeds() {
    let env = Env::start(slow(0)).await;
    let name = long_name("fg", 255);
    let path = env.path(&name);
    let sha = make_tar(&path, 100_000, 3);
    let r = env.upload(&path, &[]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let report = env.report();
    let sessions = report.sessions_for_file(&name);
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].assembled_sha256.as_deref(), Some(sha.as_str()));
}
