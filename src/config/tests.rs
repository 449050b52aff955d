//! Unit tests of configuration loading and validation.

use super::*;

fn load_str(toml: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    std::fs::write(&path, toml).unwrap();
    Config::load(&path)
}

fn message(toml: &str) -> String {
    load_str(toml).unwrap_err().to_string()
}

#[test]
fn defaults_suit_production() {
    let c = load_str("[platform]\nbase_url = \"https://p.example.ai\"\n").unwrap();
    assert_eq!(c.upload.chunk_size, 8 << 20);
    assert_eq!(c.upload.parallel_chunks, 4);
    assert_eq!(c.upload.parallel_files, 1);
    assert_eq!(c.state.dir, PathBuf::from("/var/lib/modelferry"));
    assert_eq!(c.state.retain, Some(Duration::from_secs(90 * 24 * 3600)));
    assert_eq!(c.daemon.shutdown_grace, Duration::from_secs(10));
    assert!(c.watch.is_empty());
}

#[test]
fn sizes_and_durations_are_human_strings() {
    let c = load_str(
        "[upload]\nchunk_size = \"512KiB\"\nretry_max = \"2m\"\n[[watch]]\ndir = \"/d\"\ndone_dir = \"/o\"\nfailed_dir = \"/f\"\nstable_for = \"500ms\"\n",
    )
    .unwrap();
    assert_eq!(c.upload.chunk_size, 512 * 1024);
    assert_eq!(c.upload.retry_max, Duration::from_secs(120));
    assert_eq!(c.watch[0].stable_for, Duration::from_millis(500));
    let c = load_str("[upload]\nchunk_size = 65536\n").unwrap();
    assert_eq!(c.upload.chunk_size, 65536);
}

#[test]
fn unknown_key_is_named_with_the_file() {
    let m = message("[upload]\nchunk_sise = \"8MiB\"\n");
    assert!(m.contains("chunk_sise"), "{m}");
    assert!(m.contains("m.toml"), "{m}");
}

#[test]
fn wrong_type_is_named() {
    let m = message("[upload]\nparallel_chunks = \"four\"\n");
    assert!(m.contains("parallel_chunks"), "{m}");
}

#[test]
fn bad_values_are_all_reported_at_once() {
    let m = message(
        "[upload]\nchunk_size = \"8 furlongs\"\nparallel_chunks = 0\n[[watch]]\ndir = \"/d\"\nstable_for = \"soon\"\nafter_success = \"shred\"\n",
    );
    for key in [
        "upload.chunk_size",
        "upload.parallel_chunks",
        "watch[0].stable_for",
        "watch[0].after_success",
        "watch[0].done_dir",
    ] {
        assert!(m.contains(key), "{key} missing in: {m}");
    }
    assert_eq!(m.lines().count(), 1, "one line: {m}");
}

#[test]
fn http_only_to_loopback() {
    let m = message("[platform]\nbase_url = \"http://platform.example.ai\"\n");
    assert!(
        m.contains("platform.base_url") && m.contains("https"),
        "{m}"
    );
    for ok in [
        "http://127.0.0.1:8080",
        "http://localhost:1",
        "http://[::1]:9",
        "https://x.example.ai/prefix",
    ] {
        load_str(&format!("[platform]\nbase_url = \"{ok}\"\n")).unwrap();
    }
}

#[test]
fn missing_file_names_it() {
    let m = Config::load(Path::new("/nonexistent/modelferry.toml"))
        .unwrap_err()
        .to_string();
    assert!(m.contains("/nonexistent/modelferry.toml"), "{m}");
}

#[test]
fn shipped_configs_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in [
        "config/modelferry.toml",
        "config/local.toml",
        "config/emulator.toml",
    ] {
        let c = Config::load(&root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(c.platform.base_url.is_some() || c.platform.emulate, "{f}");
    }
}

#[test]
fn key_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "kg-abc\n").unwrap();
    let mut c = load_str("").unwrap();
    c.platform.api_key_file = Some(key);
    // The environment may carry a key in a developer's shell; only check
    // the file path when it does not.
    if std::env::var_os(API_KEY_ENV).is_none()
        && std::env::var_os("CREDENTIALS_DIRECTORY").is_none()
    {
        assert_eq!(c.load_api_key().unwrap().expose(), "kg-abc");
    }
    c.platform.api_key_file = Some(dir.path().join("absent"));
    if std::env::var_os(API_KEY_ENV).is_none()
        && std::env::var_os("CREDENTIALS_DIRECTORY").is_none()
    {
        let m = c.load_api_key().unwrap_err().to_string();
        assert!(m.contains("absent") && m.contains("api_key_file"), "{m}");
    }
}

/// Loads `toml` with `env` as the environment, checked as `run` checks it.
fn read_with_env(
    toml: &str,
    env: &[(&str, &str)],
) -> (tempfile::TempDir, Result<Config, ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    std::fs::write(&path, toml).unwrap();
    let env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let r = read(&path, Some(env)).and_then(|l| l.finish(true));
    (dir, r)
}

#[test]
fn unknown_keys_type_errors_and_bad_values_come_in_one_report() {
    let (_d, r) = read_with_env(
        "[upload]\nchunk_sise = \"8MiB\"\nparallel_chunks = \"four\"\nretry_max = 5\n\
         [platform]\nemulate = \"yes\"\nrequest_timeout = \"soon\"\n\
         [telemetri]\nlog_level = \"info\"\n\
         [[watch]]\ndir = \"/nonexistent/drop\"\ndone_dir = \"/d\"\nfailed_dir = \"/f\"\ncolour = 1\n",
        &[],
    );
    let m = r.unwrap_err().to_string();
    for part in [
        "m.toml",
        "upload.chunk_sise: unknown key",
        "upload.parallel_chunks: expected a whole number, found the string \"four\"",
        "upload.retry_max: expected a string, found the number 5",
        "platform.emulate: expected true or false",
        "platform.request_timeout: \"soon\" is not a duration",
        "telemetri: unknown key",
        "watch[0].colour: unknown key",
        "watch[0].dir: /nonexistent/drop is not an existing folder",
    ] {
        assert!(m.contains(part), "{part:?} missing in: {m}");
    }
    assert_eq!(m.lines().count(), 1, "one line: {m}");
}

#[test]
fn environment_overrides_arrive_as_strings_and_convert_per_key() {
    let (_d, r) = read_with_env(
        "[[watch]]\ndir = \"/tmp\"\ndone_dir = \"/srv/done\"\nfailed_dir = \"/srv/failed\"\n",
        &[
            ("MODELFERRY__UPLOAD__PARALLEL_CHUNKS", "8"),
            ("MODELFERRY__UPLOAD__CHUNK_SIZE", "65536"),
            ("MODELFERRY__STATE__DIR", "/srv/8"),
            ("MODELFERRY__PLATFORM__EMULATE", "true"),
            ("MODELFERRY__UPLOAD__RETRY_MAX", "2m"),
        ],
    );
    let c = r.unwrap();
    assert_eq!(c.upload.parallel_chunks, 8);
    assert_eq!(c.upload.chunk_size, 65536);
    assert_eq!(c.state.dir, PathBuf::from("/srv/8"));
    assert!(c.platform.emulate);
    assert_eq!(c.upload.retry_max, Duration::from_secs(120));

    let (_d, r) = read_with_env(
        "",
        &[
            ("MODELFERRY__UPLOAD__PARALLEL_CHUNKS", "eight"),
            ("MODELFERRY__UPLOAD__CHUNK_SISE", "1"),
        ],
    );
    let m = r.unwrap_err().to_string();
    assert!(
        m.contains("upload.parallel_chunks (from MODELFERRY__UPLOAD__PARALLEL_CHUNKS): expected a whole number"),
        "{m}"
    );
    assert!(
        m.contains("upload.chunk_sise (from MODELFERRY__UPLOAD__CHUNK_SISE): unknown key"),
        "{m}"
    );
}

#[test]
fn zero_timeouts_and_inverted_backoff_are_refused() {
    let m = message(
        "[platform]\nrequest_timeout = \"0s\"\nconnect_timeout = \"0s\"\n\
         [upload]\nretry_initial = \"2s\"\nretry_max = \"1s\"\npoll_interval = \"5s\"\npoll_interval_max = \"1s\"\n",
    );
    for part in [
        "platform.request_timeout: must be more than 0",
        "platform.connect_timeout: must be more than 0",
        "upload.retry_max: 1s is less than upload.retry_initial (2s)",
        "upload.poll_interval_max: 1s is less than upload.poll_interval (5s)",
    ] {
        assert!(m.contains(part), "{part:?} missing in: {m}");
    }
    load_str("[upload]\nretry_initial = \"1s\"\nretry_max = \"1s\"\n").unwrap();
}

#[test]
fn log_level_must_let_lines_through() {
    for ok in [
        "info",
        "WARN",
        "off",
        "modelferry=debug",
        "info,modelferry=trace",
        "warn,[upload]=debug",
    ] {
        validate::check_log_level(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "infoo",
        "",
        " ",
        "modelferry",
        "info,debugg",
        "modelferry=loud",
    ] {
        assert!(validate::check_log_level(bad).is_err(), "{bad:?} accepted");
    }
    let m = message("[telemetry]\nlog_level = \"infoo\"\n");
    assert!(
        m.contains("telemetry.log_level") && m.contains("\"infoo\" is not a level"),
        "{m}"
    );
}

#[test]
fn overlapping_folders_are_refused_for_run() {
    let dir = tempfile::tempdir().unwrap();
    let drop = dir.path().join("drop");
    std::fs::create_dir(&drop).unwrap();
    let path = dir.path().join("m.toml");
    let d = drop.display();
    std::fs::write(
        &path,
        format!("[[watch]]\ndir = \"{d}\"\ndone_dir = \"{d}\"\nfailed_dir = \"{d}/failed\"\n"),
    )
    .unwrap();
    // Other commands do not use the folders.
    Config::load(&path).unwrap();
    let m = Config::load_for_run(&path).unwrap_err().to_string();
    assert!(
        m.contains("watch[0].done_dir is the same folder as watch[0].dir"),
        "{m}"
    );
    assert!(
        m.contains("watch[0].failed_dir (") && m.contains("m.toml"),
        "{m}"
    );
}

#[test]
fn retain_is_a_duration_or_zero_for_never() {
    let c = load_str("[state]\nretain = \"12h\"\n").unwrap();
    assert_eq!(c.state.retain, Some(Duration::from_secs(12 * 3600)));
    let c = load_str("[state]\nretain = \"0\"\n").unwrap();
    assert_eq!(c.state.retain, None);
    let m = message("[state]\nretain = \"forever\"\n");
    assert!(m.contains("state.retain"), "{m}");
}

#[test]
fn preflight_and_dedupe_are_on_by_default_and_can_be_turned_off() {
    let c = load_str("").unwrap();
    assert!(c.upload.preflight && c.upload.dedupe);
    let c = load_str("[upload]\npreflight = false\ndedupe = false\n").unwrap();
    assert!(!c.upload.preflight && !c.upload.dedupe);
    let m = message("[upload]\ndedupe = \"sometimes\"\n");
    assert!(m.contains("upload.dedupe"), "{m}");
}

#[test]
fn max_rate_takes_human_sizes_and_refuses_a_rate_too_low_for_the_request_timeout() {
    assert_eq!(load_str("").unwrap().upload.max_rate, 0);
    // And the first dock-status poll comes soon by default.
    let d = load_str("").unwrap().upload;
    assert_eq!(d.poll_interval, std::time::Duration::from_millis(250));
    let c = load_str("[upload]\nmax_rate = \"40MiB\"\n").unwrap();
    assert_eq!(c.upload.max_rate, 40 << 20);
    assert_eq!(
        load_str("[upload]\nmax_rate = \"0\"\n")
            .unwrap()
            .upload
            .max_rate,
        0
    );
    // 4 chunks of 8 MiB at 64 KiB/s: 512 s, past the 300 s request timeout.
    let m = message("[upload]\nmax_rate = \"64KiB\"\n");
    for part in [
        "upload.max_rate: 65536 bytes per second",
        "parallel_chunks (4)",
        "platform.request_timeout (5m)",
    ] {
        assert!(m.contains(part), "{part:?} missing in: {m}");
    }
    // Fine with a longer timeout, or smaller chunks.
    load_str("[platform]\nrequest_timeout = \"10m\"\n[upload]\nmax_rate = \"64KiB\"\n").unwrap();
    load_str("[upload]\nmax_rate = \"64KiB\"\nchunk_size = \"1MiB\"\n").unwrap();
    let m = message("[upload]\nmax_rate = \"fast\"\n");
    assert!(m.contains("upload.max_rate: \"fast\" is not a size"), "{m}");
}

#[test]
fn fleet_mode_takes_a_url_without_a_password() {
    let c = load_str(
        "[state]\nurl = \"postgresql://modelferry@db.internal/fleet\"\npassword_file = \"/etc/modelferry/db-password\"\n[fleet]\ninstance = \"host-a\"\nlease = \"10s\"\n",
    )
    .unwrap();
    assert_eq!(c.state.url.unwrap().host_str(), Some("db.internal"));
    assert_eq!(c.fleet.instance, "host-a");
    assert_eq!(c.fleet.lease, Duration::from_secs(10));
    let c = load_str("[state]\nurl = \"postgresql://m@127.0.0.1/f\"\n").unwrap();
    assert_eq!(c.fleet.lease, Duration::from_secs(30));
    assert!(!c.fleet.instance.is_empty(), "defaults to the host name");

    // A password in the URL is refused, and never repeated.
    for url in [
        "postgresql://modelferry:hunter2-secret@db.internal/fleet",
        "postgresql://modelferry@db.internal/fleet?password=hunter2-secret",
    ] {
        let m = message(&format!("[state]\nurl = \"{url}\"\n"));
        assert!(
            m.contains("state.url") && m.contains("must not carry a password"),
            "{m}"
        );
        assert!(!m.contains("hunter2"), "{m}");
    }
    let m = message("[state]\nurl = \"mysql://m@db/f\"\n");
    assert!(
        m.contains("state.url") && m.contains("postgresql://"),
        "{m}"
    );
    // The section is what is misplaced, whichever keys it has.
    for fleet in ["instance = \"a\"", "lease = \"10s\""] {
        let m = message(&format!("[fleet]\n{fleet}\n"));
        assert!(m.contains("[fleet]: applies only with state.url"), "{m}");
        assert!(!m.contains("fleet.instance"), "{m}");
    }
    let m = message("[state]\nurl = \"postgresql://m@h/f\"\n[fleet]\nlease = \"100ms\"\n");
    assert!(
        m.contains("fleet.lease") && m.contains("at least 1s"),
        "{m}"
    );
}

#[test]
fn the_database_password_is_read_from_its_file_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("db-password");
    std::fs::write(&pw, "s3cret-db-pass\n").unwrap();
    let c = load_str(&format!(
        "[state]\nurl = \"postgresql://m@h/f\"\npassword_file = \"{}\"\n",
        pw.display()
    ))
    .unwrap();
    assert_eq!(
        c.load_db_password().unwrap().unwrap().expose(),
        "s3cret-db-pass"
    );
    std::fs::write(&pw, vec![b'p'; 10_000]).unwrap();
    let m = c.load_db_password().unwrap_err().to_string();
    assert!(
        m.contains("database password file") && m.contains("state.password_file"),
        "{m}"
    );
    assert!(!m.contains("ppp"), "{m}");
    let none = load_str("[state]\nurl = \"postgresql://m@h/f\"\n").unwrap();
    assert!(none.load_db_password().unwrap().is_none());
}
