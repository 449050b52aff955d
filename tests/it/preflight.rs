//! Pre-flight, dedupe and `upload --dry-run` end to end: the corpus of bad
//! archives is made here (never committed), each refused by `upload` as a
//! failed job (stage `preflight`) with no session, and by `--dry-run` with
//! exit 1 and nothing written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::corpus::*;
use crate::support::*;

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; n];
    rng.fill(&mut v);
    v
}

fn weights() -> Vec<u8> {
    random(20_000, 1)
}

fn write(env: &Env, name: &str, bytes: &[u8]) -> PathBuf {
    let p = env.path(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// `upload --dry-run --json`: the exit code and the plan.
async fn dry_run(env: &Env, file: &Path, more: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["--dry-run", "--json"];
    args.extend_from_slice(more);
    let r = env.upload(file, &args).await;
    let plan = serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("one JSON object on stdout ({e}): {}", r.all()));
    (r.code, plan)
}

/// `file` is refused by `--dry-run` (exit 1, nothing written) and by
/// `upload` (a failed job, stage `preflight`, exit 1, no session), each
/// naming `member` (when given) and a reason containing `why`.
async fn refused(name: &str, bytes: &[u8], member: Option<&str>, why: &str) {
    let env = Env::start(quick()).await;
    let file = write(&env, name, bytes);

    let (code, plan) = dry_run(&env, &file, &[]).await;
    assert_eq!(code, 1, "{plan}");
    assert_eq!(plan["preflight"]["ok"], false, "{plan}");
    assert_eq!(plan["would_upload"], false, "{plan}");
    assert!(
        plan["reason"].is_null(),
        "flattened under preflight: {plan}"
    );
    let reason = plan["preflight"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(why), "{plan}");
    if let Some(m) = member {
        assert_eq!(plan["preflight"]["member"], m, "{plan}");
    }
    assert!(
        !env.path("state").exists(),
        "a dry run creates no state folder"
    );

    let r = env.upload(&file, &["--no-progress"]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("pre-flight rejected"), "{}", r.stderr);
    assert!(r.stderr.contains(why), "{}", r.stderr);
    if let Some(m) = member {
        assert!(r.stderr.contains(m), "names the member: {}", r.stderr);
    }
    assert!(
        env.report().sessions.is_empty(),
        "nothing reached the platform"
    );
    let jobs = env.status_json().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["state"], "failed");
    assert_eq!(jobs[0]["error_stage"], "preflight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_tar_is_refused() {
    let mut a = archive(&[(b"model/w.bin", b'0', &weights(), b"")]);
    a.truncate(8192);
    refused("cut.tar", &a, Some("model/w.bin"), "truncated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tar_with_a_bad_header_checksum_is_refused() {
    let w = weights();
    let mut a = archive(&[(b"a.bin", b'0', &w, b""), (b"b.bin", b'0', &w, b"")]);
    let second = 512 + w.len().div_ceil(512) * 512;
    a[second + 2] ^= 0x20;
    refused("bad-sum.tar", &a, None, "bad checksum").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_leaving_the_archive_is_refused() {
    let a = archive(&[(b"../../etc/evil", b'0', &weights(), b"")]);
    refused("dotdot.tar", &a, Some("../../etc/evil"), "\"..\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_member_is_refused() {
    let a = archive(&[(b"/etc/cron.d/evil", b'0', &weights(), b"")]);
    refused("absolute.tar", &a, Some("/etc/cron.d/evil"), "absolute").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_member_is_refused() {
    let a = archive(&[
        (b"model/w.bin", b'0', &weights(), b""),
        (b"model/sda", b'4', b"", b""),
    ]);
    refused("device.tar", &a, Some("model/sda"), "block device").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_escaping_the_archive_is_refused() {
    let a = archive(&[
        (b"model/w.bin", b'0', &weights(), b""),
        (b"model/key", b'2', b"", b"../../root/.ssh/id_rsa"),
    ]);
    refused("link.tar", &a, Some("model/key"), "outside the archive").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_archive_is_refused() {
    refused("nothing.tar", &archive(&[]), None, "no regular file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_named_tar_are_refused() {
    refused("noise.tar", &random(100_000, 7), None, "not a tar archive").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_with_a_flipped_byte_is_refused() {
    let mut gz = gzip(&archive(&[(b"model/w.bin", b'0', &weights(), b"")]));
    let at = gz.len() / 2;
    gz[at] ^= 0x01;
    refused("flipped.tar.gz", &gz, None, "gzip stream is corrupt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_gzip_is_refused() {
    let gz = gzip(&archive(&[(b"model/w.bin", b'0', &weights(), b"")]));
    refused("cut.tgz", &gz[..gz.len() - 50], None, "truncated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_pax_and_gnu_names_pass_and_are_imported() {
    let env = Env::start(quick()).await;
    let long = format!("model/{}/weights.bin", "x".repeat(180));
    // GNU: the builder writes a long-name record.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5000);
    h.set_mode(0o644);
    b.append_data(&mut h, &long, &random(5000, 2)[..]).unwrap();
    let gnu = write(&env, "gnu-long.tar", &b.into_inner().unwrap());
    // PAX: a path record before a short ustar header.
    let rec = pax_record("path", long.as_bytes());
    let mut pax = header(b"PaxHeaders/w", b'x', rec.len() as u64, b"").to_vec();
    pax.extend_from_slice(&rec);
    pad(&mut pax);
    pax.extend_from_slice(&archive(&[(b"short", b'0', &random(5000, 3), b"")]));
    let pax = write(&env, "pax-long.tar", &pax);
    for file in [gnu, pax] {
        let (code, plan) = dry_run(&env, &file, &[]).await;
        assert_eq!(code, 0, "{plan}");
        assert_eq!(plan["preflight"]["regular_files"], 1, "{plan}");
        let r = env.upload(&file, &["--no-progress"]).await;
        assert_eq!(r.code, 0, "{}", r.all());
    }
    assert_eq!(env.report().sessions.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_32_gib_tar_passes_a_dry_run_without_being_read() {
    let env = Env::start(quick()).await;
    let file = env.path("huge.tar");
    let size: u64 = 32 << 30;
    let mut h = tar::Header::new_gnu();
    h.set_path("model/weights.bin").unwrap();
    h.set_size(size - 512 - 1024);
    h.set_mode(0o644);
    h.set_cksum();
    let f = std::fs::File::create(&file).unwrap();
    f.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(h.as_bytes(), 0).unwrap();
    let (code, plan) = dry_run(&env, &file, &[]).await;
    assert_eq!(code, 0, "{plan}");
    assert_eq!(plan["format"], "tar");
    assert_eq!(plan["size"], size);
    assert_eq!(plan["chunk_size"], 64 * 1024);
    assert_eq!(plan["chunks"], size / (64 * 1024));
    assert_eq!(plan["sessions_needed"], 1);
    assert_eq!(plan["would_upload"], true);
    assert_eq!(plan["already_imported"], false);
    assert!(env.report().sessions.is_empty());
    assert!(!env.path("state").exists(), "nothing written");
}

/// A gzip archive bigger than the quick check's first MiB: incompressible
/// data, so its bytes past that MiB are stored as they are.
fn big_gzip(seed: u64) -> Vec<u8> {
    gzip(&archive(&[(
        b"model/w.bin",
        b'0',
        &random(3 << 20, seed),
        b"",
    )]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_corrupt_past_its_start_is_stopped_before_complete() {
    let env = Env::start(quick()).await;
    let mut gz = big_gzip(11);
    let n = gz.len();
    gz[n - 4096] ^= 0x01;
    let file = write(&env, "late.tar.gz", &gz);
    let r = env.upload(&file, &["--no-progress"]).await;
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stderr.contains("gzip stream is corrupt"), "{}", r.stderr);
    let report = env.report();
    assert_eq!(report.sessions.len(), 1, "the upload had started");
    assert!(!report.sessions[0].completed, "never completed");
    let jobs = env.status_json().await;
    assert_eq!(jobs[0]["state"], "failed");
    assert_eq!(jobs[0]["error_stage"], "preflight");
    // The dry run inflates it whole and finds it before anything is sent.
    let (code, plan) = dry_run(&env, &file, &[]).await;
    assert_eq!(code, 1, "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_gzip_upload_is_verified_from_the_local_file() {
    let env = Env::start(slow(15)).await;
    let gz = big_gzip(12);
    let file = write(&env, "resumed.tgz", &gz);
    let sha = sha256_file(&file);
    let total = (gz.len() as u64).div_ceil(64 * 1024);
    let p = Proc::spawn(env.upload_cmd(&file, &["--no-progress"]));
    wait_until(Duration::from_secs(60), "some chunks", || {
        env.report().chunk_posts_stored() >= total / 2
    })
    .await;
    p.kill9().await;
    let sent = env.report().chunk_posts_stored();
    assert!(sent < total, "interrupted");
    let r = env.upload(&file, &["--no-progress"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let report = env.report();
    assert_eq!(report.sessions.len(), 1, "the same session");
    assert!(
        report.chunk_posts_stored() < sent + total,
        "the part already sent was not sent again"
    );
    assert_eq!(
        report.sessions[0].assembled_sha256.as_deref(),
        Some(sha.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_an_imported_file_is_a_duplicate_unless_forced_or_off() {
    let env = Env::start(quick()).await;
    let first = env.path("first.tar");
    make_tar(&first, 150_000, 21);
    let r = env.upload(&first, &["--no-progress"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let model = r.stdout.trim().to_string();

    // Same bytes, another name and inode.
    let copy = env.path("copy.tar");
    std::fs::copy(&first, &copy).unwrap();
    let jobs_before = env.status_json().await.len();
    let (code, plan) = dry_run(&env, &copy, &[]).await;
    assert_eq!(code, 0, "{plan}");
    assert_eq!(plan["already_imported"], true, "{plan}");
    assert_eq!(plan["duplicate_of"], 1, "{plan}");
    assert_eq!(plan["model_id"], model.as_str(), "{plan}");
    assert_eq!(plan["sessions_needed"], 0, "{plan}");
    assert_eq!(
        env.status_json().await.len(),
        jobs_before,
        "dry run wrote nothing"
    );

    let r = env.upload(&copy, &["--no-progress"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.stdout.trim(), model, "the existing model id");
    assert!(
        r.stderr.contains("already imported by job 1"),
        "{}",
        r.stderr
    );
    assert_eq!(env.report().sessions.len(), 1, "not uploaded again");
    let jobs = env.status_json().await;
    let dup = jobs.iter().find(|j| j["file_name"] == "copy.tar").unwrap();
    assert_eq!(dup["state"], "succeeded");
    assert_eq!(dup["duplicate_of"], 1);
    assert_eq!(dup["model_id"], model.as_str());

    // Another kind is not the same import.
    let other = env.path("adapter.tar");
    std::fs::copy(&first, &other).unwrap();
    let r = env.upload(&other, &["--no-progress", "--adapter"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(env.report().sessions.len(), 2);

    let forced = env.path("forced.tar");
    std::fs::copy(&first, &forced).unwrap();
    let r = env.upload(&forced, &["--no-progress", "--force"]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(env.report().sessions.len(), 3, "--force uploads");

    let off = env.path("off.tar");
    std::fs::copy(&first, &off).unwrap();
    let mut cmd = env.upload_cmd(&off, &["--no-progress"]);
    cmd.env("MODELFERRY__UPLOAD__DEDUPE", "false");
    let r = run(cmd).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(env.report().sessions.len(), 4, "dedupe = false uploads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_files_rejected_archives_and_duplicates_with_receipts() {
    let env = Env::daemon_env(quick(), Settings::default(), "").await;
    let d = env.daemon();
    let staged = env.path("good.tar");
    let sha = make_tar(&staged, 120_000, 31);
    let twin = env.path("twin.tar");
    std::fs::copy(&staged, &twin).unwrap();
    std::fs::rename(&staged, env.drop_dir().join("good.tar")).unwrap();
    let evil = write(
        &env,
        "evil.tar",
        &archive(&[(b"../outside", b'0', &weights(), b"")]),
    );
    std::fs::rename(&evil, env.drop_dir().join("evil.tar")).unwrap();
    let (done, failed) = (env.done_dir(), env.failed_dir());
    wait_until(Duration::from_secs(60), "both filed", || {
        done.join("good.tar.receipt.json").exists() && failed.join("evil.tar.error.json").exists()
    })
    .await;
    let err = read_json(&failed.join("evil.tar.error.json"));
    assert_eq!(err["stage"], "preflight", "{err}");
    let msg = err["error"].as_str().unwrap();
    assert!(
        msg.contains("../outside") && msg.contains("\"..\""),
        "{msg}"
    );
    assert!(failed.join("evil.tar").exists());
    assert!(env.report().sessions_for_file("evil.tar").is_empty());

    // The same bytes again, under another name: filed as a duplicate.
    std::fs::rename(&twin, env.drop_dir().join("twin.tar")).unwrap();
    wait_until(Duration::from_secs(60), "the twin filed", || {
        done.join("twin.tar.receipt.json").exists()
    })
    .await;
    let out = {
        d.sigterm();
        d.finish().await
    };
    assert_eq!(out.code, 0, "{}", out.stderr);
    let good = read_json(&done.join("good.tar.receipt.json"));
    let twin = read_json(&done.join("twin.tar.receipt.json"));
    assert!(good.get("duplicate_of").is_none(), "{good}");
    assert_eq!(twin["duplicate_of"], good["job_id"], "{twin}");
    assert_eq!(twin["model_id"], good["model_id"], "{twin}");
    assert_eq!(twin["sha256"], sha.as_str(), "{twin}");
    assert!(env.report().sessions_for_file("twin.tar").is_empty());
    assert_eq!(env.report().sessions.len(), 1);
}
