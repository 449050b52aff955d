//! The output contract of `upload` (and `--dry-run`) on the ways it ends
//! badly, and `status`/`check` details: one exit code on stdout and in the
//! process, nothing but JSON where JSON is asked for.

use crate::support::*;

/// A state database migrated by a newer modelferry than this one.
fn newer_schema(env: &Env) {
    std::fs::create_dir_all(env.db_path().parent().unwrap()).unwrap();
    let db = rusqlite::Connection::open(env.db_path()).unwrap();
    db.execute_batch("PRAGMA user_version = 999;").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_json_on_a_newer_schema_exits_2_with_stdout_empty() {
    let env = Env::start(quick()).await;
    newer_schema(&env);
    let file = env.path("m.tar");
    make_tar(&file, 100_000, 1);
    let r = env.upload(&file, &["--json"]).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert_eq!(r.stdout, "", "exit 2 prints nothing on stdout");
    assert!(r.stderr.contains("newer"), "{}", r.stderr);
    assert!(env.report().sessions.is_empty(), "nothing was sent");
}

/// A state database at this binary's schema whose `jobs` table is gone:
/// it opens, and the first look-up fails (a local error, exit 4).
async fn broken_database(env: &Env) {
    let first = env.path("first.tar");
    make_tar(&first, 50_000, 2);
    let r = env.upload(&first, &[]).await;
    assert_eq!(r.code, 0, "{}", r.all());
    let db = rusqlite::Connection::open(env.db_path()).unwrap();
    db.execute_batch("ALTER TABLE jobs RENAME TO jobs_gone;")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_json_on_a_local_error_prints_the_short_report() {
    let env = Env::start(quick()).await;
    broken_database(&env).await;
    let file = env.path("m.tar");
    make_tar(&file, 100_000, 1);

    let r = env.upload(&file, &["--dry-run", "--json"]).await;
    assert_eq!(r.code, 4, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("one JSON object on stdout: {e}: {}", r.stdout));
    assert_eq!(v["exit_code"], 4, "{v}");
    assert_eq!(v["path"], file.to_str().unwrap(), "{v}");
    assert!(v["job_id"].is_null() && v["state"].is_null(), "{v}");
    assert!(v["error"].as_str().unwrap().contains("jobs"), "{v}");
    assert_eq!(r.stdout.trim().lines().count(), 1, "{}", r.stdout);

    // With JSON logs, stderr holds nothing but JSON.
    let mut cmd = env.upload_cmd(&file, &["--dry-run", "--json"]);
    cmd.env("MODELFERRY__TELEMETRY__LOG_FORMAT", "json");
    let r = run(cmd).await;
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(!r.stderr.trim().is_empty(), "the error is logged");
    for line in r.stderr.lines() {
        let e: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
        assert!(e.is_object(), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_in_fleet_mode_names_the_fleet_database() {
    let Some(cluster) = modelferry_pg_cluster::Cluster::start("status_names_fleet_db") else {
        return;
    };
    let env = Env::start(quick()).await;
    let password_file = cluster.password_file(env.dir.path());
    // A new database on each call: this test's one.
    let db = cluster.database();
    let cfg = env.config.to_str().unwrap().to_string();
    let mut cmd = env.command(&["status", "-c", &cfg]);
    cmd.env("MODELFERRY__STATE__URL", db.as_str())
        .env("MODELFERRY__STATE__PASSWORD_FILE", &password_file);
    let r = run(cmd).await;
    assert_eq!(r.code, 0, "{}", r.all());
    // A read-only command makes no schema: the fleet's database is named.
    assert!(
        r.stdout
            .starts_with("no jobs yet: the fleet database postgresql://"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("modelferry.db"), "{}", r.stdout);

    // Once `run` (here: the library, as `run` does) made the schema, an empty
    // listing names the fleet's database too.
    let opts = modelferry::store::FleetOptions {
        url: db.clone(),
        password: Some(modelferry::secret::Secret::new(
            modelferry_pg_cluster::PASSWORD,
        )),
        instance: "test-setup".into(),
        lease: std::time::Duration::from_secs(30),
    };
    drop(modelferry::store::Store::connect(opts).await.unwrap());
    let mut cmd = env.command(&["status", "-c", &cfg]);
    cmd.env("MODELFERRY__STATE__URL", db.as_str())
        .env("MODELFERRY__STATE__PASSWORD_FILE", &password_file);
    let r = run(cmd).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.starts_with("no matching jobs in "), "{}", r.stdout);
    assert!(!r.stdout.contains("modelferry.db"), "{}", r.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_context_is_a_usage_error_with_or_without_dry_run() {
    let env = Env::start(quick()).await;
    let file = env.path("m.tar");
    make_tar(&file, 50_000, 3);
    for more in [&["--json"][..], &["--dry-run", "--json"][..]] {
        let mut args = vec!["--context", "  "];
        args.extend_from_slice(more);
        let r = env.upload(&file, &args).await;
        assert_eq!(r.code, 2, "{more:?}: {}", r.all());
        assert_eq!(r.stdout, "", "{more:?}");
        assert!(
            r.stderr.contains("--context must not be empty"),
            "{}",
            r.stderr
        );
        // With JSON logs, the usage error is a log event too.
        let mut cmd = env.upload_cmd(&file, &args);
        cmd.env("MODELFERRY__TELEMETRY__LOG_FORMAT", "json");
        let r = run(cmd).await;
        assert_eq!(r.code, 2, "{more:?}: {}", r.all());
        assert_eq!(r.stdout, "", "{more:?}");
        for line in r.stderr.lines() {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "{more:?}: stderr line is not JSON: {line}"
            );
        }
    }
    assert!(env.report().sessions.is_empty(), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_no_limit_without_a_max_rate() {
    let env = Env::start(quick()).await;
    let file = env.path("m.tar");
    make_tar(&file, 50_000, 4);
    assert_eq!(env.upload(&file, &["--quiet"]).await.code, 0);
    let cfg = env.config.to_str().unwrap().to_string();
    let r = run(env.command(&["status", "-c", &cfg])).await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("upload rate limit (upload.max_rate): no limit\n"),
        "{}",
        r.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_tries_the_fleet_database_even_with_other_problems() {
    let env = Env::start(quick()).await;
    let cfg = env.config.to_str().unwrap().to_string();
    let mut cmd = env.command(&["check", "-c", &cfg]);
    // Another problem, and a database nothing listens for.
    cmd.env("MODELFERRY__UPLOAD__PARALLEL_CHUNKS", "four").env(
        "MODELFERRY__STATE__URL",
        "postgresql://modelferry@127.0.0.1:1/fleet",
    );
    let r = run(cmd).await;
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("upload.parallel_chunks"), "{}", r.stderr);
    assert!(r.stderr.contains("database:"), "{}", r.stderr);
}
