//! The output contract of `upload` (and `--dry-run`) on the ways it ends
//! badly, and `status`/`check` details: one exit code on stdout and in the
//! process, nothing but JSON where JSON is asked for.

use modelferry_emulator::EmulatorOptions;

use crate::support::*;

fn quick() -> EmulatorOptions {
    EmulatorOptions {
        import_polls: 1,
        ..EmulatorOptions::default()
    }
}

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
