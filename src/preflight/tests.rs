//! Pre-flight's corpus: archives made here (`corpus`), byte by byte where a
//! writer would refuse to make them, each checked as a `.tar` (seeking walk) and,
//! gzip-compressed, as a `.tar.gz` (stream walk).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::corpus::*;
use super::*;
use crate::source::{FileIdentity, SourceFile};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn check(path: &Path) -> Result<(Format, Summary), PreflightError> {
    let id = FileIdentity::of_path(path).unwrap();
    check_file(path, &id, Depth::Full, &|| false)
}

/// Checks `bytes` as a tar and, gzip-compressed, as a tar.gz: both verdicts.
fn both(bytes: &[u8]) -> [Result<Summary, Rejection>; 2] {
    let dir = tempfile::tempdir().unwrap();
    let tar = write(dir.path(), "m.tar", bytes);
    let tgz = write(dir.path(), "m.tar.gz", &gzip(bytes));
    [tar, tgz].map(|p| match check(&p) {
        Ok((_, s)) => Ok(s),
        Err(PreflightError::Rejected(r)) => Err(r),
        Err(e) => panic!("{}: {e}", p.display()),
    })
}

/// Both ways reject `bytes`, naming `member` (if given) and a reason
/// containing `why`.
fn rejected(bytes: &[u8], member: Option<&str>, why: &str) {
    for (how, verdict) in ["tar", "tar.gz"].iter().zip(both(bytes)) {
        let r = verdict.expect_err(how);
        assert_eq!(r.member.as_deref(), member, "{how}: {r}");
        assert!(r.reason.contains(why), "{how}: {r}");
    }
}

fn accepted(bytes: &[u8]) -> Summary {
    let [a, b] = both(bytes);
    let (a, b) = (a.expect("tar"), b.expect("tar.gz"));
    assert_eq!((a.members, a.regular_files), (b.members, b.regular_files));
    a
}

const DATA: &[u8] = b"weights";

#[test]
fn a_plain_archive_passes_and_is_counted() {
    let s = accepted(&archive(&[
        (b"model/", b'5', b"", b""),
        (b"model/w.bin", b'0', DATA, b""),
        (b"model/cfg.json", b'0', b"{}", b""),
        (b"model/latest", b'2', b"", b"w.bin"),
        (b"model/again", b'1', b"", b"model/w.bin"),
    ]));
    assert_eq!((s.members, s.regular_files), (5, 2));
}

#[test]
fn a_truncated_archive_is_rejected_naming_the_member() {
    let mut a = archive(&[(b"w.bin", b'0', &[7u8; 3000], b"")]);
    a.truncate(512 + 1000);
    rejected(&a, Some("w.bin"), "truncated");
}

#[test]
fn a_missing_end_of_archive_marker_is_truncation() {
    let mut a = archive(&[(b"w.bin", b'0', DATA, b"")]);
    a.truncate(1024);
    rejected(&a, Some("w.bin"), "end-of-archive marker");
}

#[test]
fn a_bad_header_checksum_is_rejected() {
    let mut a = archive(&[(b"a.bin", b'0', DATA, b""), (b"b.bin", b'0', DATA, b"")]);
    a[1024 + 3] ^= 0x01;
    rejected(&a, None, "bad checksum");
    let [tar, _] = both(&a);
    assert!(tar.unwrap_err().reason.contains("after member \"a.bin\""));
}

#[test]
fn parent_and_absolute_paths_are_rejected() {
    rejected(
        &archive(&[(b"../evil.bin", b'0', DATA, b"")]),
        Some("../evil.bin"),
        "\"..\"",
    );
    rejected(
        &archive(&[(b"a/../../evil", b'0', DATA, b"")]),
        Some("a/../../evil"),
        "\"..\"",
    );
    rejected(
        &archive(&[(b"/etc/cron.d/x", b'0', DATA, b"")]),
        Some("/etc/cron.d/x"),
        "absolute",
    );
}

#[test]
fn devices_and_fifos_are_rejected() {
    for (kind, why) in [
        (b'3', "character device"),
        (b'4', "block device"),
        (b'6', "FIFO"),
    ] {
        let a = archive(&[(b"ok.bin", b'0', DATA, b""), (b"dev/x", kind, b"", b"")]);
        rejected(&a, Some("dev/x"), why);
    }
}

#[test]
fn links_pointing_outside_the_archive_are_rejected() {
    for target in [&b"../../etc/passwd"[..], b"/etc/passwd", b"../../x"] {
        let a = archive(&[(b"ok.bin", b'0', DATA, b""), (b"a/l", b'2', b"", target)]);
        rejected(&a, Some("a/l"), "outside the archive");
    }
    let a = archive(&[(b"ok.bin", b'0', DATA, b""), (b"h", b'1', b"", b"../x")]);
    rejected(&a, Some("h"), "hard link");
    // Up and back down, staying inside, is fine.
    accepted(&archive(&[
        (b"a/b/w", b'0', DATA, b""),
        (b"a/b/l", b'2', b"", b"../b/./w"),
    ]));
}

#[test]
fn an_archive_without_a_regular_file_is_rejected() {
    rejected(&archive(&[]), None, "no regular file");
    rejected(
        &archive(&[(b"d/", b'5', b"", b"")]),
        None,
        "no regular file",
    );
}

#[test]
fn random_bytes_are_not_a_tar() {
    let mut rng = fastrand::Rng::with_seed(3);
    let mut junk = vec![0u8; 10_000];
    rng.fill(&mut junk);
    rejected(&junk, None, "not a tar archive");
    rejected(b"0123456789", None, "not a tar archive");
}

#[test]
fn gnu_and_pax_long_names_are_read_and_checked() {
    let long = format!("model/{}/weights.bin", "d".repeat(200));
    let mut b = ::tar::Builder::new(Vec::new());
    let mut h = ::tar::Header::new_gnu();
    h.set_size(DATA.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, &long, DATA).unwrap();
    let gnu = b.into_inner().unwrap();
    assert_eq!(gnu[156], b'L', "the builder wrote a GNU long name");
    assert_eq!(accepted(&gnu).members, 1);

    // GNU long names and PAX paths are the names that are checked.
    let evil = format!("{}/../../../evil", "d".repeat(200));
    let mut a = Vec::new();
    a.extend_from_slice(&header(b"././@LongLink", b'L', evil.len() as u64 + 1, b""));
    a.extend_from_slice(evil.as_bytes());
    a.push(0);
    pad(&mut a);
    a.extend_from_slice(&archive(&[(b"innocent", b'0', DATA, b"")]));
    rejected(&a, Some(&evil), "\"..\"");

    let pax = |path: &str| {
        let rec = pax_record("path", path.as_bytes());
        let mut a = header(b"PaxHeaders/x", b'x', rec.len() as u64, b"").to_vec();
        a.extend_from_slice(&rec);
        pad(&mut a);
        a.extend_from_slice(&archive(&[(b"short", b'0', DATA, b"")]));
        a
    };
    assert_eq!(accepted(&pax(&long)).regular_files, 1);
    rejected(&pax("/abs/path"), Some("/abs/path"), "absolute");
}

#[test]
fn a_pax_size_overrides_the_header_size() {
    let rec = pax_record("size", b"3000");
    let mut a = header(b"PaxHeaders/big", b'x', rec.len() as u64, b"").to_vec();
    a.extend_from_slice(&rec);
    pad(&mut a);
    // The header says 0 bytes; the 3000 bytes of data are skipped as data.
    a.extend_from_slice(&header(b"big.bin", b'0', 0, b""));
    a.extend_from_slice(&[0x55; 3000]);
    pad(&mut a);
    a.extend_from_slice(&[0u8; 1024]);
    assert_eq!(accepted(&a).regular_files, 1);
}

/// Bytes this thread has read through read(2)-family calls, and how many
/// calls: the kernel's per-thread count, so nothing another test does in
/// parallel is counted.
fn reads_by_this_thread() -> (u64, u64) {
    let io = std::fs::read_to_string("/proc/thread-self/io").expect("/proc/thread-self/io");
    let field = |name: &str| -> u64 {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {io}"))
    };
    (field("rchar:"), field("syscr:"))
}

#[test]
fn a_sparse_32_gib_tar_is_checked_without_reading_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.tar");
    let size: u64 = 32 << 30;
    let data = size - 512 - 1024;
    let mut h = ::tar::Header::new_gnu();
    h.set_path("model/weights.bin").unwrap();
    h.set_size(data);
    h.set_mode(0o644);
    h.set_cksum();
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(h.as_bytes(), 0).unwrap();
    let before = reads_by_this_thread();
    let (format, s) = check(&p).unwrap();
    let (bytes, calls) = reads_by_this_thread();
    let (bytes, calls) = (bytes - before.0, calls - before.1);
    assert_eq!(format, Format::Tar);
    assert_eq!((s.members, s.regular_files), (1, 1));
    // The magic, the header and the end-of-archive marker (and this
    // thread's read of its own counters): a few KiB, never the data.
    assert!(
        bytes <= 8 * 1024 && calls <= 16,
        "read {bytes} bytes in {calls} calls"
    );
    // One byte short: the member's data runs past the end.
    f.set_len(size - 1024 - 1).unwrap();
    let e = check(&p).unwrap_err().to_string();
    assert!(e.contains("weights.bin") && e.contains("truncated"), "{e}");
}

#[test]
fn a_gzip_with_a_flipped_byte_or_cut_short_is_rejected() {
    // Low-entropy random bytes: real Huffman blocks, and no run where a
    // flipped distance would still copy the same bytes.
    let mut rng = fastrand::Rng::with_seed(4);
    let data: Vec<u8> = (0..200_000).map(|_| rng.u8(..16)).collect();
    let a = archive(&[(b"w.bin", b'0', &data, b"")]);
    let gz = gzip(&a);
    let dir = tempfile::tempdir().unwrap();
    for at in [gz.len() / 2, gz.len() - 6] {
        let mut bad = gz.clone();
        bad[at] ^= 0x40;
        let p = write(dir.path(), "flipped.tar.gz", &bad);
        let e = check(&p).unwrap_err().to_string();
        assert!(
            e.contains("corrupt") || e.contains("truncated"),
            "byte {at}: {e}"
        );
    }
    let p = write(dir.path(), "cut.tgz", &gz[..gz.len() - 100]);
    let e = check(&p).unwrap_err().to_string();
    assert!(e.contains("truncated"), "{e}");
    let p = write(dir.path(), "plain.tar.gz", &a);
    let e = check(&p).unwrap_err().to_string();
    assert!(e.contains("not a gzip file"), "{e}");
    let p = write(dir.path(), "gz-named.tar", &gz);
    let e = check(&p).unwrap_err().to_string();
    assert!(e.contains("gzip-compressed"), "{e}");
}

#[test]
fn a_multi_member_gzip_is_one_stream() {
    let a = archive(&[(b"w.bin", b'0', &[1u8; 5000], b"")]);
    let (first, second) = a.split_at(1024);
    let mut gz = gzip(first);
    gz.extend_from_slice(&gzip(second));
    let dir = tempfile::tempdir().unwrap();
    let (format, s) = check(&write(dir.path(), "m.tgz", &gz)).unwrap();
    assert_eq!(format, Format::Gzip);
    assert_eq!((s.regular_files, s.gzip_members), (1, Some(2)));
}

#[test]
fn the_quick_check_reads_only_the_start_of_a_gzip() {
    let mut rng = fastrand::Rng::with_seed(5);
    let mut data = vec![0u8; 4 << 20];
    rng.fill(&mut data);
    let mut gz = gzip(&archive(&[(b"w.bin", b'0', &data, b"")]));
    let n = gz.len();
    gz[n - 3] ^= 1;
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.tar.gz", &gz);
    let id = FileIdentity::of_path(&p).unwrap();
    let (_, s) = check_file(&p, &id, Depth::Quick, &|| false).unwrap();
    assert!(s.partial);
    assert!(check_file(&p, &id, Depth::Full, &|| false).is_err());
}

/// Offers `gz` to a [`StreamVerifier`] in chunks of `chunk` as the upload
/// pipeline does, skipping the chunks in `skip` (acknowledged before a
/// restart) and offering `changed` bytes instead of the file's for chunk 0
/// (the first offer, which the empty queue always takes): the verifier
/// reads the rest from the file itself.
async fn stream_with(
    gz: &[u8],
    chunk: usize,
    skip: &[usize],
    changed: Option<&[u8]>,
) -> Result<Summary, PreflightError> {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.tar.gz", gz);
    let id = FileIdentity::of_path(&p).unwrap();
    let src = Arc::new(SourceFile::open(&p, &id).unwrap());
    let v = StreamVerifier::start(src, "m.tar.gz", gz.len() as u64)
        .await?
        .expect("a gzip archive is verified");
    let offers = v.offers();
    for (i, c) in gz.chunks(chunk).enumerate() {
        if !skip.contains(&i) {
            let c = if i == 0 { changed.unwrap_or(c) } else { c };
            offers.offer((i * chunk) as u64, Bytes::copy_from_slice(c));
        }
    }
    v.finish().await
}

async fn stream(gz: &[u8], chunk: usize, skip: &[usize]) -> Result<Summary, PreflightError> {
    stream_with(gz, chunk, skip, None).await
}

#[tokio::test]
async fn the_stream_verifier_checks_the_bytes_offered() {
    let mut rng = fastrand::Rng::with_seed(9);
    let mut data = vec![0u8; 300_000];
    rng.fill(&mut data);
    let gz = gzip(&archive(&[(b"w.bin", b'0', &data, b"")]));
    let chunk = 64 * 1024;
    let mut first = gz[..chunk].to_vec();
    first[chunk / 2] ^= 0x10;
    let e = stream_with(&gz, chunk, &[], Some(&first))
        .await
        .unwrap_err();
    assert!(matches!(e, PreflightError::Rejected(_)), "{e}");
}

/// A buffer that counts how many of its kind are alive.
struct Counted(Vec<u8>, Arc<AtomicUsize>);

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.1.fetch_sub(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_stream_verifier_keeps_at_most_holds_buffers() {
    let mut rng = fastrand::Rng::with_seed(11);
    let data: Vec<u8> = (0..4 << 20).map(|_| b"acgt"[rng.usize(..4)]).collect();
    let gz = gzip(&archive(&[(b"w.bin", b'0', &data, b"")]));
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.tar.gz", &gz);
    let id = FileIdentity::of_path(&p).unwrap();
    let src = Arc::new(SourceFile::open(&p, &id).unwrap());
    let v = StreamVerifier::start(src, "m.tar.gz", gz.len() as u64)
        .await
        .unwrap()
        .unwrap();
    let offers = v.offers();
    let alive = Arc::new(AtomicUsize::new(0));
    let mut most = 0;
    // A long first chunk keeps the verifier inflating while small ones
    // are offered behind it: the queue fills.
    let first = gz.len() / 2;
    let ranges = std::iter::once((0, first)).chain(
        (first..gz.len())
            .step_by(512)
            .map(|o| (o, (o + 512).min(gz.len()))),
    );
    for (start, end) in ranges {
        alive.fetch_add(1, Ordering::SeqCst);
        let buf = Bytes::from_owner(Counted(gz[start..end].to_vec(), alive.clone()));
        offers.offer(start as u64, buf);
        most = most.max(alive.load(Ordering::SeqCst));
        // Paced, as chunks arrive: the verifier gets to take the first.
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
    assert!(most <= StreamVerifier::HOLDS, "{most} buffers kept");
    assert_eq!(v.finish().await.unwrap().regular_files, 1);
    assert_eq!(alive.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_stream_verifier_catches_up_on_chunks_it_was_not_fed() {
    let mut rng = fastrand::Rng::with_seed(9);
    let mut data = vec![0u8; 300_000];
    rng.fill(&mut data);
    let gz = gzip(&archive(&[(b"w.bin", b'0', &data, b"")]));
    let chunk = 64 * 1024;
    let last = gz.len() / chunk;
    for skip in [vec![], vec![0, 1], vec![2], vec![last]] {
        let s = stream(&gz, chunk, &skip).await.unwrap();
        assert_eq!(s.regular_files, 1, "skipping {skip:?}");
    }
    let mut bad = gz.clone();
    bad[gz.len() / 2] ^= 0x10;
    let e = stream(&bad, chunk, &[0]).await.unwrap_err();
    assert!(matches!(e, PreflightError::Rejected(_)), "{e}");
}

#[tokio::test]
async fn a_tar_needs_no_stream_verifier() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.tar", &archive(&[(b"w", b'0', DATA, b"")]));
    let id = FileIdentity::of_path(&p).unwrap();
    let src = Arc::new(SourceFile::open(&p, &id).unwrap());
    assert!(StreamVerifier::start(src, "m.tar", id.size)
        .await
        .unwrap()
        .is_none());
}

#[test]
fn a_special_file_is_refused_before_any_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("fifo.tar");
    crate::source::tests::mkfifo(&p);
    let id = FileIdentity::of_path(&p).unwrap();
    let e = check_file(&p, &id, Depth::Full, &|| false).unwrap_err();
    assert!(matches!(e, PreflightError::Source(_)), "{e}");
}
