//! The configuration as the binary reads it: every problem in one report,
//! overlapping folders refused, key files read with care, and `status` and
//! store errors that say what went wrong where.

use std::path::Path;
use std::time::Duration;

use modelferry::emulator::EmulatorOptions;
use tokio::process::Command;

use crate::support::*;

/// A command that must end quickly (a refused start); a daemon that starts
/// instead is killed when the deadline passes, and the test fails.
async fn run_briefly(cmd: Command) -> Run {
    tokio::time::timeout(Duration::from_secs(20), run(cmd))
        .await
        .expect("the command ends by itself within 20 s (a refused start)")
}

fn write_config(dir: &Path, toml: &str) -> String {
    let path = dir.join("modelferry.toml");
    std::fs::write(&path, toml).unwrap();
    path.to_str().unwrap().to_string()
}

fn binary(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("MODELFERRY_API_KEY", API_KEY)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// The one error line, checked to name the config file and every `part`.
fn assert_refused(r: &Run, config: &str, parts: &[&str]) {
    assert_eq!(r.code, 2, "exit 2, got {}: {}", r.code, r.all());
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {}", r.stderr);
    assert!(lines[0].contains(config), "names {config}: {}", lines[0]);
    for part in parts {
        assert!(lines[0].contains(part), "{part:?} missing in: {}", lines[0]);
    }
}

#[tokio::test]
async fn run_refuses_done_and_failed_folders_in_the_drop_folder() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().display();
    std::fs::create_dir(t.path().join("drop")).unwrap();
    let cfg = write_config(
        t.path(),
        &format!(
            "[platform]\nemulate = true\n[state]\ndir = \"{d}/state\"\n\
             [[watch]]\ndir = \"{d}/drop\"\ndone_dir = \"{d}/drop\"\nfailed_dir = \"{d}/drop/failed\"\n"
        ),
    );
    let r = run_briefly(binary(&["run", "-c", &cfg])).await;
    assert_refused(
        &r,
        &cfg,
        &[
            "watch[0].done_dir is the same folder as watch[0].dir",
            "watch[0].failed_dir (",
            "is inside watch[0].dir",
        ],
    );
}

#[tokio::test]
async fn run_refuses_a_drop_folder_watched_twice_or_inside_a_filing_folder() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().display();
    for sub in ["drop", "failed/incoming"] {
        std::fs::create_dir_all(t.path().join(sub)).unwrap();
    }
    // The same folder through a symbolic link is still the same folder.
    std::os::unix::fs::symlink(t.path().join("drop"), t.path().join("alias")).unwrap();
    let cfg = write_config(
        t.path(),
        &format!(
            "[platform]\nemulate = true\n[state]\ndir = \"{d}/state\"\n\
             [[watch]]\ndir = \"{d}/drop\"\ndone_dir = \"{d}/done\"\nfailed_dir = \"{d}/failed\"\n\
             [[watch]]\ndir = \"{d}/alias\"\ndone_dir = \"{d}/done\"\nfailed_dir = \"{d}/failed2\"\n\
             [[watch]]\ndir = \"{d}/failed/incoming\"\ndone_dir = \"{d}/done\"\nfailed_dir = \"{d}/failed2\"\n"
        ),
    );
    let r = run_briefly(binary(&["run", "-c", &cfg])).await;
    assert_refused(
        &r,
        &cfg,
        &[
            "watch[0].dir and watch[1].dir are the same folder",
            "watch[2].dir (",
            "is inside watch[0].failed_dir",
        ],
    );
}

#[tokio::test]
async fn every_config_problem_is_reported_at_once() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().display();
    let cfg = write_config(
        t.path(),
        &format!(
            "[platform]\nemulate = true\nconect_timeout = \"5s\"\n[state]\ndir = \"{d}/state\"\n\
             [upload]\nparallel_chunks = \"four\"\nretry_initial = \"soon\"\n\
             [[watch]]\ndir = \"{d}/missing\"\ndone_dir = \"{d}/done\"\nfailed_dir = \"{d}/failed\"\n"
        ),
    );
    let r = run_briefly(binary(&["run", "-c", &cfg])).await;
    assert_refused(
        &r,
        &cfg,
        &[
            "platform.conect_timeout: unknown key",
            "upload.parallel_chunks: expected a whole number, found the string \"four\"",
            "upload.retry_initial: \"soon\" is not a duration",
            "watch[0].dir:",
            "missing is not an existing folder",
        ],
    );
}

#[tokio::test]
async fn environment_overrides_are_strings_each_key_converts() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().display();
    let cfg = write_config(
        t.path(),
        &format!("[platform]\nemulate = true\n[state]\ndir = \"{d}/state\"\n"),
    );
    let mut ok = binary(&["status", "-c", &cfg]);
    ok.env("MODELFERRY__UPLOAD__PARALLEL_CHUNKS", "8")
        .env("MODELFERRY__UPLOAD__CHUNK_SIZE", "65536")
        .env("MODELFERRY__PLATFORM__EMULATE", "true");
    let r = run_briefly(ok).await;
    assert_eq!(r.code, 0, "{}", r.all());

    let mut bad = binary(&["status", "-c", &cfg]);
    bad.env("MODELFERRY__UPLOAD__PARALLEL_CHUNKS", "eight")
        .env("MODELFERRY__UPLOAD__RETRY_MAXX", "1s");
    let r = run_briefly(bad).await;
    assert_refused(
        &r,
        &cfg,
        &[
            "upload.parallel_chunks (from MODELFERRY__UPLOAD__PARALLEL_CHUNKS): expected a whole number",
            "upload.retry_maxx (from MODELFERRY__UPLOAD__RETRY_MAXX): unknown key",
        ],
    );
}

#[tokio::test]
async fn timeouts_backoff_and_log_level_that_cannot_work_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().display();
    let cfg = write_config(
        t.path(),
        &format!(
            "[platform]\nemulate = true\nrequest_timeout = \"0s\"\n[state]\ndir = \"{d}/state\"\n\
             [upload]\nretry_initial = \"5s\"\nretry_max = \"1s\"\n\
             [telemetry]\nlog_level = \"infoo\"\n"
        ),
    );
    let r = run_briefly(binary(&["status", "-c", &cfg])).await;
    assert_refused(
        &r,
        &cfg,
        &[
            "platform.request_timeout: must be more than 0",
            "upload.retry_max: 1s is less than upload.retry_initial (5s)",
            "telemetry.log_level: \"infoo\" is not a level",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_file_must_be_a_small_regular_file() {
    let env = Env::start(EmulatorOptions::default()).await;
    let file = env.path("m.tar");
    make_tar(&file, 10_000, 3);
    let text = std::fs::read_to_string(&env.config).unwrap();
    let cfg = env.config.to_str().unwrap().to_string();
    let with_key_file = |p: &Path| {
        let t = text.replacen(
            "[platform]\n",
            &format!("[platform]\napi_key_file = \"{}\"\n", p.display()),
            1,
        );
        std::fs::write(&env.config, t).unwrap();
    };
    let upload = |credentials: Option<&Path>| {
        let mut cmd = env.upload_cmd(&file, &[]);
        cmd.env_remove("MODELFERRY_API_KEY");
        if let Some(dir) = credentials {
            cmd.env("CREDENTIALS_DIRECTORY", dir);
        }
        cmd
    };

    let big = env.path("big-key");
    std::fs::write(&big, vec![b'k'; 1 << 20]).unwrap();
    with_key_file(&big);
    let r = run_briefly(upload(None)).await;
    assert_refused(&r, "big-key", &["larger than 4096 bytes", &cfg]);

    // A FIFO would block a plain read for ever.
    let fifo = env.path("fifo-key");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    assert!(made.unwrap().success(), "mkfifo");
    with_key_file(&fifo);
    let r = run_briefly(upload(None)).await;
    assert_refused(&r, "fifo-key", &["not a regular file"]);

    with_key_file(Path::new("/dev/zero"));
    let r = run_briefly(upload(None)).await;
    assert_refused(
        &r,
        "/dev/zero",
        &["not a regular file", "platform.api_key_file"],
    );

    // The systemd credential is read the same way.
    let creds = env.path("credentials");
    std::fs::create_dir(&creds).unwrap();
    std::os::unix::fs::symlink("/dev/zero", creds.join("api-key")).unwrap();
    let r = run_briefly(upload(Some(&creds))).await;
    assert_refused(
        &r,
        "api-key",
        &["not a regular file", "systemd credential \"api-key\""],
    );
    assert!(env.report().sessions.is_empty(), "nothing was uploaded");
}

#[tokio::test]
async fn status_reports_a_state_folder_it_cannot_open() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().display();
    // A missing state folder is "no jobs yet", not an error.
    let cfg = write_config(
        t.path(),
        &format!("[platform]\nemulate = true\n[state]\ndir = \"{d}/state\"\n"),
    );
    let r = run_briefly(binary(&["status", "-c", &cfg])).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("no jobs yet"), "{}", r.stdout);

    // A regular file where a folder should be is an error.
    std::fs::write(t.path().join("file"), "").unwrap();
    let cfg = write_config(
        t.path(),
        &format!("[platform]\nemulate = true\n[state]\ndir = \"{d}/file/state\"\n"),
    );
    for json in [false, true] {
        let mut args = vec!["status", "-c", cfg.as_str()];
        if json {
            args.push("--json");
        }
        let r = run_briefly(binary(&args)).await;
        assert_eq!(r.code, 4, "exit 4: {}", r.all());
        assert!(
            r.stderr.contains(&format!("{d}/file/state/modelferry.db"))
                && r.stderr.contains("Not a directory"),
            "{}",
            r.stderr
        );
        assert!(r.stdout.is_empty(), "{}", r.stdout);
    }
}

/// As a user who cannot enter the state folder (root runs the tests, so the
/// binary runs as `nobody` for this).
#[tokio::test]
async fn status_by_a_user_without_access_to_the_state_folder_fails() {
    let runuser = Path::new("/usr/sbin/runuser");
    // Only root can switch users.
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !root || !runuser.exists() {
        eprintln!("skipped: needs root and runuser to run as another user");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = t.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("modelferry.db"), "").unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let cfg = write_config(
        t.path(),
        &format!(
            "[platform]\nemulate = true\n[state]\ndir = \"{}\"\n",
            state.display()
        ),
    );
    let mut cmd = Command::new(runuser);
    cmd.args(["-u", "nobody", "--", BIN, "status", "-c", &cfg])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let r = run_briefly(cmd).await;
    assert_eq!(r.code, 4, "exit 4: {}", r.all());
    assert!(
        r.stderr
            .contains(&state.join("modelferry.db").display().to_string())
            && r.stderr.contains("Permission denied"),
        "{}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_is_named_once_with_what_was_being_done() {
    let env = Env::start(quick()).await;
    let file = env.path("m.tar");
    make_tar(&file, 300_000, 4);
    let r = env.upload(&file, &[]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    // Keep the header page (the database still opens) and damage the rest,
    // where the jobs live.
    let db = env.db_path();
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8192, "more than two pages");
    for b in &mut bytes[4096..] {
        *b = 0xA5;
    }
    std::fs::write(&db, bytes).unwrap();

    let cfg = env.config.to_str().unwrap().to_string();
    let r = run_briefly(env.command(&["status", "-c", &cfg])).await;
    assert_eq!(r.code, 4, "exit 4: {}", r.all());
    let db = db.display().to_string();
    assert_eq!(
        r.stderr.matches(&db).count(),
        1,
        "names {db} once: {}",
        r.stderr
    );
    assert!(r.stderr.contains("reading jobs"), "{}", r.stderr);
    assert_eq!(
        r.stderr.matches("malformed").count(),
        1,
        "the SQLite text once: {}",
        r.stderr
    );
}
