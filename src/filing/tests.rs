#![allow(clippy::print_stderr)] // says why a test was skipped
use std::os::unix::fs::PermissionsExt;

use super::names::split_extension;
use super::*;

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn receipt(job_id: i64) -> SuccessReceipt {
    SuccessReceipt {
        model_id: "m-1".into(),
        dock_status_id: "d-1".into(),
        session_id: "s-1".into(),
        size: 10,
        sha256: "ab".repeat(32),
        chunks: 1,
        status: "SUCCESS".into(),
        started_at: "2025-01-01T00:00:00.000Z".into(),
        finished_at: "2025-01-01T00:01:00.000Z".into(),
        file: "m.tar".into(),
        job_id,
        duplicate_of: None,
    }
}

#[test]
fn atomic_write_replaces_and_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = receipt_path(&dir.path().join("m.tar"));
    write_json_atomic(&path, &receipt(1)).expect("first write");
    write_json_atomic(&path, &receipt(2)).expect("second write");
    let back: SuccessReceipt =
        serde_json::from_slice(&fs::read(&path).expect("read")).expect("parse");
    assert_eq!(back, receipt(2));
    assert_eq!(names_in(dir.path()), ["m.tar.receipt.json"]);
}

#[test]
fn receipts_use_the_documented_keys() {
    let json = serde_json::to_value(receipt(7)).expect("encode");
    for key in [
        "model_id",
        "dock_status_id",
        "session_id",
        "size",
        "sha256",
        "chunks",
        "status",
        "started_at",
        "finished_at",
    ] {
        assert!(json.get(key).is_some(), "{key}");
    }
    let error = ErrorReceipt {
        error: "rejected".into(),
        stage: "import".into(),
        http_status: Some(400),
        platform_message: None,
        model_id: None,
        file: "m.tar".into(),
        job_id: 7,
        failed_at: "2025-01-01T00:00:00.000Z".into(),
    };
    let json = serde_json::to_value(&error).expect("encode");
    for key in [
        "error",
        "stage",
        "http_status",
        "platform_message",
        "model_id",
    ] {
        assert!(json.get(key).is_some(), "{key}");
    }
}

#[test]
fn atomic_write_error_names_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent").join("m.tar.receipt.json");
    let e = write_json_atomic(&path, &receipt(1)).expect_err("no folder");
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}

#[test]
fn extension_chains() {
    for (name, stem, ext) in [
        ("m.tar.gz", "m", ".tar.gz"),
        ("m.TAR.zst", "m", ".TAR.zst"),
        ("m.tgz", "m", ".tgz"),
        ("m.tar", "m", ".tar"),
        ("llama-3.1-8b.tar.gz", "llama-3.1-8b", ".tar.gz"),
        ("model.v2.tgz", "model.v2", ".tgz"),
        ("model", "model", ""),
        ("model.", "model.", ""),
        (".tar", ".tar", ""),
        (".tar.gz", ".tar", ".gz"),
    ] {
        assert_eq!(split_extension(name), (stem, ext), "{name}");
    }
}

#[test]
fn free_destination_adds_a_suffix_before_the_extension_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let free = |name| free_destination(d, name).expect("free name");
    assert_eq!(free("m.tar.gz"), d.join("m.tar.gz"));
    fs::write(d.join("m.tar.gz"), b"x").expect("write");
    assert_eq!(free("m.tar.gz"), d.join("m-1.tar.gz"));
    // A receipt or error receipt alone takes the name too.
    fs::write(d.join("m-1.tar.gz.receipt.json"), b"{}").expect("write");
    fs::write(d.join("m-2.tar.gz.error.json"), b"{}").expect("write");
    assert_eq!(free("m.tar.gz"), d.join("m-3.tar.gz"));
    fs::write(d.join("n.tgz.receipt.json"), b"{}").expect("write");
    assert_eq!(free("n.tgz"), d.join("n-1.tgz"));
    std::os::unix::fs::symlink(d.join("nowhere"), d.join("dangling.tar")).expect("symlink");
    assert_eq!(free("dangling.tar"), d.join("dangling-1.tar"));
    fs::write(d.join("plain"), b"x").expect("write");
    assert_eq!(free("plain"), d.join("plain-1"));
    for bad in ["", ".", "..", "a/b.tar"] {
        let e = free_destination(d, bad).expect_err(bad);
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}

#[test]
fn moves_within_a_filesystem_and_creates_the_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("m.tar");
    fs::write(&src, b"model").expect("write");
    let dst = dir.path().join("done").join("m.tar");
    move_file(&src, &dst).expect("move");
    assert!(!src.exists());
    assert_eq!(fs::read(&dst).expect("read"), b"model");
    // Repeating it after a crash finds it done.
    move_file(&src, &dst).expect("repeat");
    assert_eq!(fs::read(&dst).expect("read"), b"model");
}

#[test]
fn moving_nothing_to_nowhere_is_an_error_naming_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
    let e = move_file(&src, &dst).expect_err("nothing to move");
    assert_eq!(e.kind(), io::ErrorKind::NotFound);
    let m = e.to_string();
    assert!(m.contains("a.tar") && m.contains("b.tar"), "{m}");
}

#[test]
fn never_overwrites_another_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("m.tar");
    let dst = dir.path().join("done.tar");
    fs::write(&src, b"ours").expect("write");
    fs::write(&dst, b"theirs").expect("write");
    let e = move_file(&src, &dst).expect_err("refuses");
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert!(e.to_string().contains(&dst.display().to_string()), "{e}");
    assert_eq!(fs::read(&src).expect("read"), b"ours");
    assert_eq!(fs::read(&dst).expect("read"), b"theirs");
    // Same size, different modification time: still someone else's.
    let f = File::options().write(true).open(&dst).expect("open");
    f.set_len(4).expect("truncate");
    drop(f);
    assert!(move_file(&src, &dst).is_err());
    assert_eq!(fs::read(&src).expect("read"), b"ours");
}

#[test]
fn finishes_a_move_interrupted_between_link_and_unlink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("m.tar");
    let dst = dir.path().join("done").join("m.tar");
    fs::write(&src, b"model").expect("write");
    fs::create_dir(dir.path().join("done")).expect("mkdir");
    fs::hard_link(&src, &dst).expect("link");
    move_file(&src, &dst).expect("finish");
    assert!(!src.exists());
    assert_eq!(fs::read(&dst).expect("read"), b"model");
}

#[test]
fn copy_path_moves_and_keeps_mode_and_mtime() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("m.tar");
    fs::write(&src, vec![5u8; 100_000]).expect("write");
    fs::set_permissions(&src, fs::Permissions::from_mode(0o640)).expect("chmod");
    let meta = fs::symlink_metadata(&src).expect("stat");
    let dst = dir.path().join("out").join("m.tar");
    fs::create_dir(dir.path().join("out")).expect("mkdir");
    // A leftover of a copy that crashed earlier is replaced.
    fs::write(copy_temp_path(&dst), b"stale").expect("write");
    copy_across(&src, &meta, &dst, "test move").expect("copy");
    assert!(!src.exists());
    let copied = fs::symlink_metadata(&dst).expect("stat");
    assert_eq!(copied.len(), 100_000);
    assert_eq!(copied.mode() & 0o777, 0o640);
    assert_eq!(copied.modified().ok(), meta.modified().ok());
    assert_eq!(names_in(&dir.path().join("out")), ["m.tar"]);
}

#[test]
fn finishes_a_copy_interrupted_before_removing_the_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("m.tar");
    fs::write(&src, b"model").expect("write");
    let meta = fs::symlink_metadata(&src).expect("stat");
    let dst = dir.path().join("m-copy.tar");
    // What copy_across leaves when it crashes just before removing src.
    fs::write(&dst, b"model").expect("write");
    let f = File::options().write(true).open(&dst).expect("open");
    f.set_modified(meta.modified().expect("mtime"))
        .expect("set mtime");
    drop(f);
    move_file(&src, &dst).expect("finish");
    assert!(!src.exists());
    assert_eq!(fs::read(&dst).expect("read"), b"model");
}

#[test]
fn moves_across_filesystems_when_dev_shm_is_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Ok(other) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no /dev/shm");
        return;
    };
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).ok();
    if dev(dir.path()) == dev(other.path()) {
        eprintln!("skipped: /dev/shm is the same filesystem as the temp folder");
        return;
    }
    let src = dir.path().join("m.tar.gz");
    fs::write(&src, b"across").expect("write");
    let dst = other.path().join("done").join("m.tar.gz");
    move_file(&src, &dst).expect("move");
    assert!(!src.exists());
    assert_eq!(fs::read(&dst).expect("read"), b"across");
    assert_eq!(names_in(&other.path().join("done")), ["m.tar.gz"]);
    move_file(&src, &dst).expect("repeat is done");
}

#[test]
fn remove_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.tar");
    fs::write(&path, b"x").expect("write");
    remove_file(&path).expect("remove");
    remove_file(&path).expect("already gone");
    assert!(!path.exists());
}

#[test]
fn suffix_paths() {
    let dest = Path::new("/done/m.tar.gz");
    assert_eq!(receipt_path(dest), Path::new("/done/m.tar.gz.receipt.json"));
    assert_eq!(error_path(dest), Path::new("/done/m.tar.gz.error.json"));
}

/// A name of exactly `len` bytes ending in `.tar.gz`, with two-byte
/// characters so that a cut has to respect UTF-8 boundaries.
fn long_name(tag: &str, len: usize) -> String {
    let ext = ".tar.gz";
    let mut s = format!("{tag}-");
    while s.len() + ext.len() < len {
        s.push(if len - s.len() - ext.len() >= 2 {
            'ü'
        } else {
            'x'
        });
    }
    s.push_str(ext);
    assert_eq!(s.len(), len);
    s
}

const LONG: [usize; 3] = [231, 243, 255];

fn name_of(p: &Path) -> String {
    p.file_name()
        .expect("a name")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn derived_names_are_left_alone_when_they_fit() {
    let d = Derive {
        prefix: ".",
        infix: "-2",
        suffix: ".tmp",
    };
    assert_eq!(derived_name("m.tar.gz", &d), ".m-2.tar.gz.tmp");
    let fits = long_name("a", NAME_MAX - ".receipt.json".len());
    assert_eq!(
        name_of(&receipt_path(&Path::new("/d").join(&fits))),
        format!("{fits}.receipt.json")
    );
}

#[test]
fn long_derived_names_are_shortened_recognisably_and_uniquely() {
    for len in LONG {
        let a = long_name("a", len);
        let b = long_name("b", len);
        // Same start and length, different last character before the extension.
        let mut stem = a.strip_suffix(".tar.gz").expect("ext").chars();
        stem.next_back();
        let a2 = format!("{}y.tar.gz", stem.as_str());
        for d in [
            Derive {
                suffix: ".receipt.json",
                ..Derive::default()
            },
            Derive {
                infix: "-100000",
                ..Derive::default()
            },
            Derive {
                prefix: ".",
                suffix: ".0123abcd.tmp",
                ..Derive::default()
            },
        ] {
            let name = derived_name(&a, &d);
            assert!(name.len() <= NAME_MAX, "{len}: {} bytes", name.len());
            assert!(name.starts_with(&format!("{}a-üü", d.prefix)), "{name}");
            assert!(
                name.ends_with(&format!("{}.tar.gz{}", d.infix, d.suffix)),
                "{name}"
            );
            assert_eq!(name, derived_name(&a, &d), "the same every time");
            assert_ne!(name, derived_name(&b, &d));
            assert_ne!(name, derived_name(&a2, &d), "unique despite the cut");
        }
    }
}

#[test]
fn an_extension_too_long_to_keep_is_cut_with_the_rest() {
    let name = format!("m.{}", "e".repeat(250));
    let d = Derive {
        suffix: ".receipt.json",
        ..Derive::default()
    };
    let derived = derived_name(&name, &d);
    assert!(derived.len() <= NAME_MAX, "{}", derived.len());
    assert!(derived.starts_with("m.eee") && derived.ends_with(".receipt.json"));
}

#[test]
fn receipts_of_long_names_are_written_beside_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    for len in LONG {
        let dest = dir.path().join(long_name("r", len));
        fs::write(&dest, b"model").expect("a name of NAME_MAX bytes is fine");
        let receipt_at = receipt_path(&dest);
        let error_at = error_path(&dest);
        assert_ne!(receipt_at, error_at);
        for p in [&receipt_at, &error_at] {
            assert!(name_of(p).len() <= NAME_MAX, "{len}");
            assert_eq!(p.parent(), dest.parent());
        }
        let mut r = receipt(len as i64);
        r.file = name_of(&dest);
        write_json_atomic(&receipt_at, &r).unwrap_or_else(|e| panic!("{len}: {e}"));
        let back: SuccessReceipt =
            serde_json::from_slice(&fs::read(&receipt_at).expect("read")).expect("parse");
        assert_eq!(
            back.file,
            name_of(&dest),
            "the receipt keeps the whole name"
        );
        assert!(name_of(&receipt_at).ends_with(".tar.gz.receipt.json"));
    }
    // Only the models and their receipts: no temporary file left over.
    assert_eq!(names_in(dir.path()).len(), 2 * LONG.len());
    assert!(names_in(dir.path()).iter().all(|n| !n.starts_with('.')));
}

#[test]
fn free_destination_finds_numbered_names_for_long_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    for len in LONG {
        let name = long_name("n", len);
        assert_eq!(free_destination(d, &name).expect("free"), d.join(&name));
        fs::write(d.join(&name), b"x").expect("write");
        let first = free_destination(d, &name).expect("a -1 name");
        assert!(name_of(&first).len() <= NAME_MAX);
        assert!(
            name_of(&first).ends_with("-1.tar.gz"),
            "{}",
            first.display()
        );
        fs::write(&first, b"x").expect("the -1 name can be created");
        let second = free_destination(d, &name).expect("a -2 name");
        assert!(
            name_of(&second).ends_with("-2.tar.gz"),
            "{}",
            second.display()
        );
        assert_ne!(first, second);
        // The receipt of a numbered name fits too.
        write_json_atomic(&receipt_path(&second), &receipt(1)).expect("receipt");
    }
}

#[test]
fn long_names_are_copied_across_and_moved() {
    let dir = tempfile::tempdir().expect("tempdir");
    for len in LONG {
        let name = long_name("c", len);
        let src = dir.path().join(&name);
        fs::write(&src, b"model").expect("write");
        let meta = fs::symlink_metadata(&src).expect("stat");
        let out = dir.path().join(format!("out{len}"));
        fs::create_dir(&out).expect("mkdir");
        let dst = out.join(&name);
        assert!(name_of(&copy_temp_path(&dst)).len() <= NAME_MAX);
        copy_across(&src, &meta, &dst, "test move").unwrap_or_else(|e| panic!("{len}: {e}"));
        assert_eq!(names_in(&out), std::slice::from_ref(&name));
        move_file(&dst, &dir.path().join(&name)).expect("move back");
        assert_eq!(fs::read(&src).expect("read"), b"model");
    }
}

#[test]
fn a_fifo_in_place_of_the_source_is_not_copied_and_does_not_block() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("m.tar");
    fs::write(&src, b"model").expect("write");
    let meta = fs::symlink_metadata(&src).expect("stat");
    fs::remove_file(&src).expect("remove");
    crate::source::tests::mkfifo(&src);
    let dst = dir.path().join("out.tar");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(copy_across(&src, &meta, &dst, "test move"));
    });
    let e = rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("returns without blocking")
        .expect_err("refused");
    assert!(e.to_string().contains("not a regular file"), "{e}");
    assert_eq!(names_in(dir.path()), ["m.tar"]);
}
